//! The content-addressed blob store `state_dir/blobs/<sha256>`: every generation's file contents
//! and every file Shoal saved before overwriting it, so any of them can be restored offline.
//! Blobs are write-once and fsynced before anything refers to them; nothing here touches
//! managed paths.

use std::fs::{self, File, OpenOptions};
use std::io::{self, Read, Write};
use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};

use ssh_key::sha2::{Digest, Sha256};

use super::error::Fault;
use super::file::Located;
use crate::paths::{self, PathError};
use crate::plan::{hex, is_sha256_hex, sha256_hex};

const BLOBS_DIR: &str = "blobs";
const TEMP_SUFFIX: &str = ".tmp";

pub(crate) struct BlobStore {
    dir: PathBuf,
    /// Whether a blob was added since the last [`BlobStore::sync`].
    unsynced: bool,
}

impl BlobStore {
    /// Opens the store, creating it if needed (mode 0700: blobs may hold secrets).
    pub(crate) fn open(state_dir: &Path) -> Result<Self, Fault> {
        let dir = state_dir.join(BLOBS_DIR);
        if !dir.is_dir() {
            paths::create_dir_all(&dir)?;
            fs::set_permissions(&dir, fs::Permissions::from_mode(0o700))
                .map_err(|e| PathError::new("set permissions of", &dir, e))?;
            paths::sync_dir(state_dir)?;
        }
        Ok(BlobStore {
            dir,
            unsynced: false,
        })
    }

    pub(crate) fn dir(&self) -> &Path {
        &self.dir
    }

    /// Where blob `sha256` lives. Hashes come from our own JSON files: anything that is not
    /// a hash is refused rather than joined into a path.
    pub(crate) fn path(&self, sha256: &str) -> Result<PathBuf, Fault> {
        if !is_sha256_hex(sha256) {
            return Err(Fault::CorruptState {
                path: self.dir.clone(),
                reason: format!("{sha256:?} is not a sha256 blob name"),
            });
        }
        Ok(self.dir.join(sha256))
    }

    pub(crate) fn contains(&self, sha256: &str) -> Result<bool, Fault> {
        Ok(self.path(sha256)?.is_file())
    }

    /// Stores `content` (whose hash the caller computed) unless it is already there.
    pub(crate) fn put(&mut self, sha256: &str, content: &[u8]) -> Result<(), Fault> {
        let path = self.path(sha256)?;
        if path.is_file() {
            return Ok(());
        }
        self.write_blob(&path, |file, temp| {
            file.write_all(content)
                .map_err(|e| PathError::new("write", temp, e))?;
            Ok(())
        })
    }

    /// Copies the file at `source` into the store, checking that it still hashes to `sha256`
    /// (it was hashed a moment ago; an edit in between must not go unnoticed).
    pub(crate) fn put_copy_of(&mut self, sha256: &str, located: &Located) -> Result<(), Fault> {
        let path = self.path(sha256)?;
        if path.is_file() {
            return Ok(());
        }
        let source = &located.real;
        self.write_blob(&path, |file, temp| {
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

    /// Makes every blob added so far durable (one directory fsync for the whole batch).
    pub(crate) fn sync(&mut self) -> Result<(), Fault> {
        if self.unsynced {
            paths::sync_dir(&self.dir)?;
            self.unsynced = false;
        }
        Ok(())
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

    /// temp file (0600) → fill → fsync → rename to its hash. A blob under its final name is
    /// therefore always complete; the directory fsync is batched in [`BlobStore::sync`], which
    /// runs before the journal (the first thing that refers to the blobs) is written.
    fn write_blob(
        &mut self,
        path: &Path,
        fill: impl FnOnce(&mut File, &Path) -> Result<(), Fault>,
    ) -> Result<(), Fault> {
        let name = path
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_default();
        let temp = self.dir.join(format!(".{name}{TEMP_SUFFIX}"));
        remove_if_present(&temp)?;
        let result = (|| -> Result<(), Fault> {
            let mut file = OpenOptions::new()
                .write(true)
                .create_new(true)
                .mode(0o600)
                .open(&temp)
                .map_err(|e| PathError::new("create", &temp, e))?;
            fill(&mut file, &temp)?;
            file.sync_all()
                .map_err(|e| PathError::new("fsync", &temp, e))?;
            fs::rename(&temp, path).map_err(|e| PathError::new("rename into place", path, e))?;
            Ok(())
        })();
        if result.is_err() {
            // Best effort: a leftover temp file is swept at the next start.
            let _ = fs::remove_file(&temp);
        }
        self.unsynced = true;
        result.map_err(Fault::about_state)
    }
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
