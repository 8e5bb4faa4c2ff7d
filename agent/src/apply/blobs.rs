//! The content-addressed blob store `state_dir/blobs/<sha256>`: every generation's file contents
//! and every file Shoal saved before overwriting it, so any of them can be restored offline.
//! Blobs are write-once and durable before anything refers to them: a transaction's new blobs
//! are written to temp names, made durable together by one `syncfs`, and only then renamed to
//! their hash ([`BlobStore::sync`]), so a blob under its final name is always complete. Nothing
//! here touches managed paths.

use std::collections::BTreeSet;
use std::ffi::{OsStr, OsString};
use std::fs;
use std::io::{self, Read, Write};
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};

use rustix::fs::FileType;
use ssh_key::sha2::{Digest, Sha256};

use super::error::Fault;
use super::failpoint::fail_point;
use super::file::{Dir, Flush, Located};
use crate::paths::{self, PathError};
use crate::plan::{hex, is_sha256_hex, sha256_hex};
use crate::state::ApplyArea;

const TEMP_SUFFIX: &str = ".tmp";

pub(crate) struct BlobStore {
    dir: PathBuf,
    handle: Dir,
    /// Blobs written under their temp name since the last [`BlobStore::sync`]: not durable,
    /// not published, but already counted as stored.
    pending: BTreeSet<String>,
}

impl BlobStore {
    /// Opens the store, creating it if needed (mode 0700: blobs may hold secrets).
    pub(crate) fn open(area: ApplyArea<'_>) -> Result<Self, Fault> {
        let dir = area.blobs();
        if !dir.is_dir() {
            paths::create_dir_all(&dir)?;
            fs::set_permissions(&dir, fs::Permissions::from_mode(0o700))
                .map_err(|e| PathError::new("set permissions of", &dir, e))?;
            paths::sync_dir(area.dir())?;
        }
        Ok(BlobStore {
            handle: Dir::open_trusted(&dir, "open the blob store")?,
            dir,
            pending: BTreeSet::new(),
        })
    }

    pub(crate) fn dir(&self) -> &Path {
        &self.dir
    }

    /// Where blob `sha256` lives. Hashes come from our own JSON files: anything that is not
    /// a hash is refused rather than joined into a path.
    pub(crate) fn path(&self, sha256: &str) -> Result<PathBuf, Fault> {
        self.check(sha256)?;
        Ok(self.dir.join(sha256))
    }

    fn check(&self, sha256: &str) -> Result<(), Fault> {
        if !is_sha256_hex(sha256) {
            return Err(Fault::CorruptState {
                path: self.dir.clone(),
                reason: format!("{sha256:?} is not a sha256 blob name"),
            });
        }
        Ok(())
    }

    /// Whether blob `sha256` is stored (or about to be, by the next [`BlobStore::sync`]).
    pub(crate) fn contains(&self, sha256: &str) -> Result<bool, Fault> {
        self.check(sha256)?;
        if self.pending.contains(sha256) {
            return Ok(true);
        }
        let stat = self.handle.stat(OsStr::new(sha256))?;
        Ok(stat.is_some_and(|stat| FileType::from_raw_mode(stat.st_mode) == FileType::RegularFile))
    }

    /// Stores `content` (whose hash the caller computed) unless it is already there.
    pub(crate) fn put(&mut self, sha256: &str, content: &[u8]) -> Result<(), Fault> {
        if self.contains(sha256)? {
            return Ok(());
        }
        self.write_blob(sha256, |file, temp| {
            file.write_all(content)
                .map_err(|e| PathError::new("write", temp, e))?;
            Ok(())
        })
    }

    /// Copies the file at `source` into the store, checking that it still hashes to `sha256`
    /// (it was hashed a moment ago; an edit in between must not go unnoticed).
    pub(crate) fn put_copy_of(&mut self, sha256: &str, located: &Located) -> Result<(), Fault> {
        if self.contains(sha256)? {
            return Ok(());
        }
        let source = &located.real;
        self.write_blob(sha256, |file, temp| {
            let mut input = located.open_read()?;
            let mut hasher = Sha256::new();
            let mut buf = vec![0; 64 * 1024];
            loop {
                let n = input
                    .read(&mut buf)
                    .map_err(|e| PathError::new("read", source, e))?;
                if n == 0 {
                    break;
                }
                hasher.update(&buf[..n]);
                file.write_all(&buf[..n])
                    .map_err(|e| PathError::new("write", temp, e))?;
            }
            if hex(&hasher.finalize()) != sha256 {
                return Err(Fault::ChangedWhileSaving {
                    path: source.clone(),
                });
            }
            Ok(())
        })
    }

    /// Reads a blob and checks its hash: a blob restored to a device must be the one named.
    pub(crate) fn read(&self, sha256: &str) -> Result<Vec<u8>, Fault> {
        let path = self.path(sha256)?;
        let content = paths::read(&path)?;
        let actual = sha256_hex(&content);
        if actual != sha256 {
            return Err(Fault::CorruptBlob { blob: path, actual });
        }
        Ok(content)
    }

    /// Whether the next [`BlobStore::sync`] runs a `syncfs` that also makes what was written
    /// in `dir` durable: blobs are waiting, and `dir` is on the blobs' file system.
    pub(crate) fn will_sync_filesystem_of(&self, dir: &Dir) -> bool {
        !self.pending.is_empty() && self.handle.id().same_device(&dir.id())
    }

    /// Makes every blob added since the last call durable, then publishes them: one `syncfs`
    /// for the whole batch (their data and inodes on disk), then each temp file renamed to its
    /// hash, then one fsync of the directory. It runs before the journal, the first thing that
    /// refers to them, is written. A crash before the renames leaves only temp files, which
    /// `recover` sweeps; after some of them, complete blobs nothing refers to yet.
    pub(crate) fn sync(&mut self) -> Result<(), Fault> {
        if self.pending.is_empty() {
            return Ok(());
        }
        self.handle
            .sync_filesystem()
            .map_err(|e| Fault::Io(e).about_state())?;
        fail_point!("apply_after_blobs_syncfs");
        for sha256 in std::mem::take(&mut self.pending) {
            self.handle
                .publish(&temp_name(&sha256), OsStr::new(&sha256))
                .map_err(|e| Fault::Io(e).about_state())?;
        }
        self.handle.sync().map_err(|e| Fault::Io(e).about_state())
    }

    /// Removes temp files left by a crash while storing a blob.
    pub(crate) fn sweep(&self) -> Result<(), Fault> {
        for name in names(&self.dir)? {
            if name.starts_with('.') && name.ends_with(TEMP_SUFFIX) {
                remove_if_present(&self.dir.join(name))?;
            }
        }
        Ok(())
    }

    /// Every blob's hash.
    pub(crate) fn hashes(&self) -> Result<Vec<String>, Fault> {
        Ok(names(&self.dir)?
            .into_iter()
            .filter(|name| is_sha256_hex(name))
            .collect())
    }

    pub(crate) fn remove(&self, sha256: &str) -> Result<(), Fault> {
        remove_if_present(&self.path(sha256)?)
    }

    /// The first half of the durable write ([`Dir::write_temp`]): temp file (0600), filled,
    /// not fsynced — [`BlobStore::sync`] makes the batch durable and publishes it.
    fn write_blob(
        &mut self,
        sha256: &str,
        fill: impl FnOnce(&mut fs::File, &Path) -> Result<(), Fault>,
    ) -> Result<(), Fault> {
        self.handle
            .write_temp(&temp_name(sha256), fill, None, Flush::Batch)
            .map_err(Fault::about_state)?;
        self.pending.insert(sha256.to_owned());
        Ok(())
    }
}

fn temp_name(sha256: &str) -> OsString {
    OsString::from(format!(".{sha256}{TEMP_SUFFIX}"))
}

fn names(dir: &Path) -> Result<Vec<String>, Fault> {
    let entries = fs::read_dir(dir).map_err(|e| PathError::new("list", dir, e))?;
    let mut names = Vec::new();
    for entry in entries {
        let entry = entry.map_err(|e| PathError::new("list", dir, e))?;
        names.push(entry.file_name().to_string_lossy().into_owned());
    }
    Ok(names)
}

fn remove_if_present(path: &Path) -> Result<(), Fault> {
    match fs::remove_file(path) {
        Err(e) if e.kind() != io::ErrorKind::NotFound => {
            Err(PathError::new("remove", path, e).into())
        }
        _ => Ok(()),
    }
}
