//! The primitives that touch managed paths under the device's `root`: look at a path, write a
//! file beside its target, rename it into place, remove it, create a directory. Each names the
//! real path in its errors; the order of calls (and so crash safety) is the transaction's.

use std::ffi::OsString;
use std::fs::{self, File, OpenOptions};
use std::io::{self, Read, Write};
use std::os::unix::fs::{FileTypeExt, MetadataExt, OpenOptionsExt, PermissionsExt};
use std::path::{Component, Path, PathBuf};

use ssh_key::sha2::{Digest, Sha256};

use super::error::Fault;
use crate::paths::PathError;
use crate::plan::{hex, DiskEntry, DiskFile, OtherKind};

/// Where device path `path` (absolute, normalized) is under `root`.
pub(crate) fn real_path(root: &Path, path: &Path) -> Result<PathBuf, Fault> {
    let mut components = path.components();
    let normal = components.next() == Some(Component::RootDir)
        && components.clone().next().is_some()
        && components.all(|c| matches!(c, Component::Normal(_)));
    if !normal {
        return Err(Fault::BadPath {
            path: path.to_owned(),
        });
    }
    // Proven invariant: `path` starts with the root directory (checked just above).
    let relative = path.strip_prefix("/").unwrap_or(path);
    Ok(root.join(relative))
}

/// What is at `real` (symbolic links not followed), hashing a regular file's content.
pub(crate) fn inspect(real: &Path) -> Result<DiskEntry, PathError> {
    let meta = match fs::symlink_metadata(real) {
        Ok(meta) => meta,
        // A parent that is missing or is a file: nothing is at the path itself.
        Err(e)
            if matches!(
                e.kind(),
                io::ErrorKind::NotFound | io::ErrorKind::NotADirectory
            ) =>
        {
            return Ok(DiskEntry::Missing)
        }
        Err(e) => return Err(PathError::new("inspect", real, e)),
    };
    let kind = meta.file_type();
    if kind.is_dir() {
        return Ok(DiskEntry::Other(OtherKind::Directory));
    }
    if kind.is_symlink() {
        return Ok(DiskEntry::Other(OtherKind::Symlink));
    }
    if kind.is_fifo() || kind.is_socket() || kind.is_block_device() || kind.is_char_device() {
        return Ok(DiskEntry::Other(OtherKind::Special));
    }
    Ok(DiskEntry::File(DiskFile {
        sha256: hash_file(real)?,
        mode: meta.mode() & 0o7777,
        uid: meta.uid(),
        gid: meta.gid(),
    }))
}

/// Streams the file through sha256 (bounded memory for large files).
fn hash_file(real: &Path) -> Result<String, PathError> {
    let mut file = File::open(real).map_err(|e| PathError::new("read", real, e))?;
    let mut hasher = Sha256::new();
    let mut buf = vec![0; 64 * 1024];
    loop {
        let n = file
            .read(&mut buf)
            .map_err(|e| PathError::new("read", real, e))?;
        if n == 0 {
            return Ok(hex(&hasher.finalize()));
        }
        hasher.update(&buf[..n]);
    }
}

/// The temp file beside `real` that [`write_temp`] fills. A fixed name (one agent runs at a
/// time, under the state lock) so that recovery can find and remove it after a crash.
pub(crate) fn temp_path(real: &Path) -> PathBuf {
    let mut name = OsString::from(".");
    name.push(real.file_name().unwrap_or_default());
    name.push(".shoal-new");
    real.with_file_name(name)
}

/// Writes `content` with its final owner and mode into the temp file beside `real` and fsyncs
/// it, so the rename that follows publishes complete data and metadata at once. The temp file
/// is created 0600, so secrets are never readable by others, even for an instant.
pub(crate) fn write_temp(
    real: &Path,
    content: &[u8],
    want: &DiskFile,
) -> Result<PathBuf, PathError> {
    let temp = temp_path(real);
    remove_if_present(&temp)?;
    let result = (|| {
        let mut file = OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o600)
            .open(&temp)
            .map_err(|e| PathError::new("create", &temp, e))?;
        file.write_all(content)
            .map_err(|e| PathError::new("write", &temp, e))?;
        // chown before chmod: chown clears the setuid and setgid bits.
        std::os::unix::fs::fchown(&file, Some(want.uid), Some(want.gid))
            .map_err(|e| PathError::new("change owner of", &temp, e))?;
        file.set_permissions(fs::Permissions::from_mode(want.mode & 0o7777))
            .map_err(|e| PathError::new("set permissions of", &temp, e))?;
        file.sync_all()
            .map_err(|e| PathError::new("fsync", &temp, e))
    })();
    match result {
        Ok(()) => Ok(temp),
        Err(err) => {
            // Best effort: recovery removes it too if this fails.
            let _ = fs::remove_file(&temp);
            Err(err)
        }
    }
}

/// Atomically replaces whatever file is at `real` with the prepared temp file.
pub(crate) fn rename_into_place(temp: &Path, real: &Path) -> Result<(), PathError> {
    fs::rename(temp, real).map_err(|e| PathError::new("rename into place", real, e))
}

/// Removes the file at `real`; already gone (or its directory gone) is fine. Looks first, so
/// that nothing to remove on a read-only filesystem is not an error.
pub(crate) fn remove_if_present(real: &Path) -> Result<(), PathError> {
    match fs::symlink_metadata(real) {
        Err(e)
            if matches!(
                e.kind(),
                io::ErrorKind::NotFound | io::ErrorKind::NotADirectory
            ) =>
        {
            return Ok(())
        }
        _ => {}
    }
    match fs::remove_file(real) {
        Err(e) if e.kind() != io::ErrorKind::NotFound => Err(PathError::new("remove", real, e)),
        _ => Ok(()),
    }
}

/// Creates one directory (0755); already there is fine, so recovery can repeat it.
pub(crate) fn create_dir(real: &Path) -> Result<(), PathError> {
    match fs::create_dir(real) {
        Err(e) if e.kind() == io::ErrorKind::AlreadyExists => return Ok(()),
        Err(e) => return Err(PathError::new("create directory", real, e)),
        Ok(()) => {}
    }
    // Not left to the umask: 0755 is what the journal promises.
    fs::set_permissions(real, fs::Permissions::from_mode(0o755))
        .map_err(|e| PathError::new("set permissions of", real, e))
}

/// Removes a directory Shoal created if it is empty. `Ok(false)` when something else has put
/// a file in it since: that is not ours to delete.
pub(crate) fn remove_dir_if_empty(real: &Path) -> Result<bool, PathError> {
    match fs::remove_dir(real) {
        Ok(()) => Ok(true),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(true),
        Err(e) if e.kind() == io::ErrorKind::DirectoryNotEmpty => Ok(false),
        Err(e) => Err(PathError::new("remove directory", real, e)),
    }
}

/// What stands at each ancestor of `real` below `root`: the missing ones to create, parents
/// first, or the first one that exists but is not a directory.
pub(crate) fn missing_parents(root: &Path, real: &Path) -> Result<Vec<PathBuf>, Ancestor> {
    let mut missing = Vec::new();
    let mut dir = real.parent();
    while let Some(current) = dir {
        if current == root || !current.starts_with(root) {
            break;
        }
        // Follows symbolic links: a parent that links to a directory (e.g. /etc/ssl) is fine.
        match fs::metadata(current) {
            Ok(meta) if meta.is_dir() => break,
            Ok(_) => return Err(Ancestor::NotADirectory(current.to_owned())),
            Err(e) if e.kind() == io::ErrorKind::NotFound => missing.push(current.to_owned()),
            Err(e) if e.kind() == io::ErrorKind::NotADirectory => {}
            Err(e) => return Err(Ancestor::Io(PathError::new("inspect", current, e))),
        }
        dir = current.parent();
    }
    missing.reverse();
    Ok(missing)
}

pub(crate) enum Ancestor {
    NotADirectory(PathBuf),
    Io(PathError),
}

/// fsyncs a directory after renames or removals in it; a directory that is gone (removed by a
/// rollback) has nothing left to make durable.
pub(crate) fn sync_dir_if_present(dir: &Path) -> Result<(), PathError> {
    match crate::paths::sync_dir(dir) {
        Err(e) if e.is_not_found() => Ok(()),
        other => other,
    }
}
