//! Filesystem calls that name the path in every error, and the one durable-write primitive
//! (temp file in the target directory → fsync → rename → fsync directory) the agent uses.

use std::fs::{self, File};
use std::io::{self, Write};
use std::path::{Path, PathBuf};

/// An I/O error together with the path it happened on and what we were doing.
#[derive(Debug, thiserror::Error)]
#[error("could not {action} {}: {source}", path.display())]
pub struct PathError {
    pub action: &'static str,
    pub path: PathBuf,
    #[source]
    pub source: io::Error,
}

impl PathError {
    pub fn new(action: &'static str, path: &Path, source: io::Error) -> Self {
        PathError {
            action,
            path: path.to_owned(),
            source,
        }
    }

    pub fn is_not_found(&self) -> bool {
        self.source.kind() == io::ErrorKind::NotFound
    }
}

pub fn read(path: &Path) -> Result<Vec<u8>, PathError> {
    fs::read(path).map_err(|e| PathError::new("read", path, e))
}

pub fn read_to_string(path: &Path) -> Result<String, PathError> {
    fs::read_to_string(path).map_err(|e| PathError::new("read", path, e))
}

/// Like [`read_to_string`] but a missing file is `None`, not an error.
pub fn read_optional(path: &Path) -> Result<Option<String>, PathError> {
    match fs::read_to_string(path) {
        Ok(text) => Ok(Some(text)),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(PathError::new("read", path, e)),
    }
}

/// Creates `path` and any missing parents, durably: each directory created is made durable in
/// its parent (fsync of the parent) before the next one is created inside it. Without that, a
/// power cut can lose a new directory's entry (`generations/`, say) while a file written later in
/// an older directory (`current-generation`) survives and points into the lost one.
pub fn create_dir_all(path: &Path) -> Result<(), PathError> {
    if path.is_dir() {
        return Ok(());
    }
    let mut missing = Vec::new();
    let mut next = Some(path);
    while let Some(dir) = next {
        // Stop at anything that exists: a file there makes the create below fail, naming it.
        if dir.as_os_str().is_empty() || fs::symlink_metadata(dir).is_ok() {
            break;
        }
        missing.push(dir);
        next = dir.parent();
    }
    for dir in missing.into_iter().rev() {
        match fs::create_dir(dir) {
            Ok(()) => sync_dir(parent_dir(dir))?,
            // Another process made it meanwhile: it is its job to make it durable.
            Err(e) if e.kind() == io::ErrorKind::AlreadyExists && dir.is_dir() => {}
            Err(e) => return Err(PathError::new("create directory", dir, e)),
        }
    }
    Ok(())
}

/// Writes `contents` to `path` so that after a crash at any instant the path holds either the
/// old contents or the new, never a mix: the bytes go to a temp file in the same directory
/// (same filesystem, so the rename is atomic), the temp file is fsynced before the rename
/// (else the rename can reach the disk before the data), and the directory is fsynced after
/// (else the rename itself can be lost).
pub fn write_atomic(path: &Path, contents: &[u8]) -> Result<(), PathError> {
    write_atomic_with(path, contents, None)
}

/// [`write_atomic`], the file getting exactly `mode` (whatever the umask) before it is renamed
/// into place, so a reader never sees it with other permissions.
pub fn write_atomic_mode(path: &Path, contents: &[u8], mode: u32) -> Result<(), PathError> {
    write_atomic_with(path, contents, Some(mode))
}

fn write_atomic_with(path: &Path, contents: &[u8], mode: Option<u32>) -> Result<(), PathError> {
    let dir = parent_dir(path);
    let name = path
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    let tmp = dir.join(format!(".{name}.shoal-tmp.{}", std::process::id()));
    let result = (|| {
        let mut file = create_temp(&tmp).map_err(|e| PathError::new("create", &tmp, e))?;
        if let Some(mode) = mode {
            use std::os::unix::fs::PermissionsExt;
            file.set_permissions(fs::Permissions::from_mode(mode))
                .map_err(|e| PathError::new("set the mode of", &tmp, e))?;
        }
        file.write_all(contents)
            .map_err(|e| PathError::new("write", &tmp, e))?;
        file.sync_all()
            .map_err(|e| PathError::new("fsync", &tmp, e))?;
        fs::rename(&tmp, path).map_err(|e| PathError::new("rename into place", path, e))?;
        sync_dir(dir)
    })();
    if result.is_err() {
        // Best effort: a leftover temp file is harmless but untidy.
        let _ = fs::remove_file(&tmp);
    }
    result
}

/// Creates `tmp` as a new file, never through what is already there: `O_EXCL | O_NOFOLLOW`, so
/// a symbolic link planted at that name (by whoever can write the directory) is not followed
/// and no existing file is truncated. A leftover at the name (a crash, an earlier process with
/// the same pid, or a planted link) is unlinked — which removes the link, not what it points
/// to — and the creation tried once more.
fn create_temp(tmp: &Path) -> io::Result<File> {
    use std::os::unix::fs::OpenOptionsExt;
    let create = || {
        File::options()
            .write(true)
            .create_new(true)
            .custom_flags(libc::O_NOFOLLOW)
            .open(tmp)
    };
    match create() {
        Err(e) if e.kind() == io::ErrorKind::AlreadyExists => {
            fs::remove_file(tmp)?;
            create()
        }
        other => other,
    }
}

/// Takes an exclusive advisory lock (flock) on `path`, creating the file if needed. `None` when
/// another process holds it; the lock lasts as long as the returned file is open.
pub fn try_lock_exclusive(path: &Path) -> Result<Option<File>, PathError> {
    let file = File::options()
        .create(true)
        .truncate(false)
        .write(true)
        .open(path)
        .map_err(|e| PathError::new("open", path, e))?;
    match file.try_lock() {
        Ok(()) => Ok(Some(file)),
        Err(std::fs::TryLockError::WouldBlock) => Ok(None),
        Err(std::fs::TryLockError::Error(e)) => Err(PathError::new("lock", path, e)),
    }
}

/// Makes a rename or unlink inside `dir` durable.
pub fn sync_dir(dir: &Path) -> Result<(), PathError> {
    File::open(dir)
        .and_then(|d| d.sync_all())
        .map_err(|e| PathError::new("fsync directory", dir, e))
}

fn parent_dir(path: &Path) -> &Path {
    match path.parent() {
        Some(p) if !p.as_os_str().is_empty() => p,
        _ => Path::new("."),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn write_atomic_replaces_contents_and_leaves_no_temp_files() {
        let dir = tempfile::tempdir().unwrap();
        let target = dir.path().join("watermark");
        write_atomic(&target, b"one").unwrap();
        write_atomic(&target, b"two").unwrap();
        assert_eq!(read_to_string(&target).unwrap(), "two");
        let entries: Vec<_> = fs::read_dir(dir.path()).unwrap().collect();
        assert_eq!(entries.len(), 1, "only the target remains");
    }

    /// Whoever can write the directory may plant a link at the temp name (the pid is no
    /// secret): the write must go to a new file, never through the link, and what the link
    /// points to keeps its content and mode.
    #[test]
    fn write_atomic_never_writes_through_a_link_planted_at_its_temp_name() {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::tempdir().unwrap();
        let victim = dir.path().join("victim");
        fs::write(&victim, "the victim's secret\n").unwrap();
        fs::set_permissions(&victim, fs::Permissions::from_mode(0o600)).unwrap();
        let target = dir.path().join("shoal.prom");
        let planted = dir
            .path()
            .join(format!(".shoal.prom.shoal-tmp.{}", std::process::id()));
        std::os::unix::fs::symlink(&victim, &planted).unwrap();
        write_atomic_mode(&target, b"metrics\n", 0o644).unwrap();
        assert_eq!(read_to_string(&victim).unwrap(), "the victim's secret\n");
        assert_eq!(
            fs::metadata(&victim).unwrap().permissions().mode() & 0o777,
            0o600
        );
        assert_eq!(read_to_string(&target).unwrap(), "metrics\n");
        assert!(!fs::symlink_metadata(&target)
            .unwrap()
            .file_type()
            .is_symlink());
        assert!(fs::symlink_metadata(&planted).is_err(), "the link is gone");
    }

    #[test]
    fn create_dir_all_makes_every_missing_parent_and_accepts_an_existing_one() {
        let dir = tempfile::tempdir().unwrap();
        let deep = dir.path().join("state/generations/x");
        create_dir_all(&deep).unwrap();
        assert!(deep.is_dir());
        create_dir_all(&deep).unwrap();
        let file = dir.path().join("file");
        fs::write(&file, "").unwrap();
        let err = create_dir_all(&file.join("below")).unwrap_err();
        assert_eq!(err.path, file.join("below"));
    }

    #[test]
    fn errors_name_the_path() {
        let err = read(Path::new("/nonexistent/shoal/file")).unwrap_err();
        assert!(err.is_not_found());
        assert_eq!(
            err.to_string(),
            "could not read /nonexistent/shoal/file: No such file or directory (os error 2)"
        );
    }
}
