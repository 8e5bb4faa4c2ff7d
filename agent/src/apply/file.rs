//! The primitives that touch managed paths under the device's `root`, and the one way to reach
//! such a path: walked component by component from a directory handle on `root`, following no
//! symbolic link anywhere (`openat` with `O_NOFOLLOW`, which every kernel has; `openat2` is not
//! needed and devices run kernels older than 5.6). Every later call — look, hash, temp file,
//! fchown/fchmod/fsync, rename, unlink, mkdir — goes through the handle of the directory that
//! holds the path, so a directory swapped for a symbolic link after the walk cannot redirect a
//! write: the handle still names the directory that was checked. The agent's own state
//! directory is recognised by identity (device + inode), never by comparing strings.
//! Errors name the real path; the order of calls (and so crash safety) is the transaction's.

use std::ffi::{OsStr, OsString};
use std::fs::File;
use std::io::{self, Read, Write};
use std::os::fd::OwnedFd;
use std::os::unix::fs::PermissionsExt;
use std::path::{Component, Path, PathBuf};

use rustix::fs::{AtFlags, FileType, Mode, OFlags, Stat};
use ssh_key::sha2::{Digest, Sha256};

use super::error::Fault;
use crate::paths::PathError;
use crate::plan::{hex, DiskEntry, DiskFile, OtherKind};

/// A directory's identity: what a bind mount or a second name cannot disguise.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub(crate) struct DirId {
    dev: u64,
    ino: u64,
}

impl DirId {
    fn of(stat: &Stat) -> DirId {
        DirId {
            dev: stat.st_dev,
            ino: stat.st_ino,
        }
    }
}

/// The handle every managed path is resolved from.
pub(crate) struct DeviceRoot {
    fd: OwnedFd,
    path: PathBuf,
    state_dir: PathBuf,
    /// `None` while the state directory does not exist yet (nothing can be inside it then;
    /// apply creates it, and opens a new `DeviceRoot`, before its first managed write).
    state_id: Option<DirId>,
}

/// A directory beneath `root`, reached without following a symbolic link.
pub(crate) struct Dir {
    fd: OwnedFd,
    /// Where it is on the host (for messages and for nothing else).
    real: PathBuf,
}

/// A managed path whose parent directory is open: every primitive below works on this.
pub(crate) struct Located {
    dir: Dir,
    name: OsString,
    /// The device path (without `root`).
    pub path: PathBuf,
    /// Where it is on the host, for messages.
    pub real: PathBuf,
}

/// Where the walk to a path's parent ended.
pub(crate) enum Parent {
    Found(Located),
    /// These ancestors (device paths, parents first) do not exist.
    Missing(Vec<PathBuf>),
    /// This ancestor (device path) exists but is not a directory.
    NotADirectory(PathBuf),
}

const DIR_FLAGS: OFlags = OFlags::RDONLY
    .union(OFlags::DIRECTORY)
    .union(OFlags::NOFOLLOW)
    .union(OFlags::CLOEXEC);

impl DeviceRoot {
    /// Opens `root` (the configured root is trusted: it may itself be reached through a link)
    /// and takes the identity of `state_dir`.
    pub(crate) fn open(root: &Path, state_dir: &Path) -> Result<DeviceRoot, Fault> {
        let fd = rustix::fs::open(root, DIR_FLAGS.difference(OFlags::NOFOLLOW), Mode::empty())
            .map_err(|e| PathError::new("open the device root", root, e.into()))?;
        let state_id = match rustix::fs::stat(state_dir) {
            Ok(stat) => Some(DirId::of(&stat)),
            Err(rustix::io::Errno::NOENT) => None,
            Err(e) => {
                return Err(
                    PathError::new("inspect the state directory", state_dir, e.into()).into(),
                )
            }
        };
        Ok(DeviceRoot {
            fd,
            path: root.to_owned(),
            state_dir: state_dir.to_owned(),
            state_id,
        })
    }

    /// Where device path `path` is on the host; only for messages and for reading Shoal's own
    /// files, never for writing a managed path.
    pub(crate) fn real(&self, path: &Path) -> PathBuf {
        self.path.join(path.strip_prefix("/").unwrap_or(path))
    }

    /// Walks from `root` to the directory holding `path` (absolute, normalized), one component
    /// at a time, refusing a symbolic link at any step and the state directory as any parent.
    pub(crate) fn locate(&self, path: &Path) -> Result<Parent, Fault> {
        let names = components(path)?;
        let (last, parents) = names.split_last().ok_or_else(|| Fault::BadPath {
            path: path.to_owned(),
        })?;
        let mut dir = Dir {
            fd: self
                .fd
                .try_clone()
                .map_err(|e| Fault::Io(PathError::new("open the device root", &self.path, e)))?,
            real: self.path.clone(),
        };
        self.check_not_state(&dir, path, Path::new("/"))?;
        let mut device = PathBuf::from("/");
        for (i, name) in parents.iter().enumerate() {
            device.push(name);
            let real = dir.real.join(name);
            match rustix::fs::openat(&dir.fd, *name, DIR_FLAGS, Mode::empty()) {
                Ok(fd) => {
                    dir = Dir { fd, real };
                    self.check_not_state(&dir, path, &device)?;
                }
                Err(rustix::io::Errno::NOENT) => {
                    let mut missing = vec![device.clone()];
                    for name in &parents[i + 1..] {
                        let next = missing[missing.len() - 1].join(name);
                        missing.push(next);
                    }
                    return Ok(Parent::Missing(missing));
                }
                // ELOOP: O_NOFOLLOW met a symbolic link; ENOTDIR: not a directory (or a link
                // to something, on some file systems): look at what it is to say which.
                Err(e @ (rustix::io::Errno::LOOP | rustix::io::Errno::NOTDIR)) => {
                    let stat = rustix::fs::statat(&dir.fd, *name, AtFlags::SYMLINK_NOFOLLOW)
                        .map_err(|_| PathError::new("open directory", &real, e.into()))?;
                    return match FileType::from_raw_mode(stat.st_mode) {
                        FileType::Symlink => Err(Fault::SymlinkInPath {
                            path: path.to_owned(),
                            component: device,
                            real,
                        }),
                        FileType::Directory => {
                            Err(PathError::new("open directory", &real, e.into()).into())
                        }
                        _ => Ok(Parent::NotADirectory(device)),
                    };
                }
                Err(e) => return Err(PathError::new("open directory", &real, e.into()).into()),
            }
        }
        Ok(Parent::Found(Located {
            real: dir.real.join(last),
            dir,
            name: last.to_os_string(),
            path: path.to_owned(),
        }))
    }

    /// The parent of `path`, which must exist (a directory the transaction created, or one
    /// that held a file a moment ago).
    pub(crate) fn locate_existing(&self, path: &Path) -> Result<Located, Fault> {
        match self.locate(path)? {
            Parent::Found(located) => Ok(located),
            Parent::Missing(missing) => Err(PathError::new(
                "open directory",
                &self.real(&missing[0]),
                io::ErrorKind::NotFound.into(),
            )
            .into()),
            Parent::NotADirectory(parent) => Err(PathError::new(
                "open directory",
                &self.real(&parent),
                io::Error::from_raw_os_error(libc::ENOTDIR),
            )
            .into()),
        }
    }

    fn check_not_state(&self, dir: &Dir, path: &Path, device: &Path) -> Result<(), Fault> {
        let stat = rustix::fs::fstat(&dir.fd)
            .map_err(|e| PathError::new("inspect", &dir.real, e.into()))?;
        if Some(DirId::of(&stat)) == self.state_id {
            return Err(Fault::InsideStateDir {
                path: path.to_owned(),
                component: device.to_owned(),
                state_dir: self.state_dir.clone(),
            });
        }
        Ok(())
    }
}

/// The names of an absolute, normalized device path.
fn components(path: &Path) -> Result<Vec<&OsStr>, Fault> {
    let mut components = path.components();
    if components.next() != Some(Component::RootDir) {
        return Err(Fault::BadPath {
            path: path.to_owned(),
        });
    }
    components
        .map(|c| match c {
            Component::Normal(name) => Ok(name),
            _ => Err(Fault::BadPath {
                path: path.to_owned(),
            }),
        })
        .collect()
}

impl Dir {
    pub(crate) fn id(&self) -> Result<DirId, PathError> {
        rustix::fs::fstat(&self.fd)
            .map(|stat| DirId::of(&stat))
            .map_err(|e| PathError::new("inspect", &self.real, e.into()))
    }

    /// Makes renames and unlinks in this directory durable.
    pub(crate) fn sync(&self) -> Result<(), PathError> {
        rustix::fs::fsync(&self.fd)
            .map_err(|e| PathError::new("fsync directory", &self.real, e.into()))
    }
}

impl Located {
    pub(crate) fn into_dir(self) -> Dir {
        self.dir
    }

    /// What is at the path (symbolic links not followed), hashing a regular file's content.
    pub(crate) fn inspect(&self) -> Result<DiskEntry, PathError> {
        let stat = match self.stat() {
            Ok(Some(stat)) => stat,
            Ok(None) => return Ok(DiskEntry::Missing),
            Err(e) => return Err(e),
        };
        if let Some(kind) = other_kind(&stat) {
            return Ok(DiskEntry::Other(kind));
        }
        let mut file = self.open_file(&stat)?;
        Ok(DiskEntry::File(DiskFile {
            sha256: hash(&mut file, &self.real)?,
            mode: stat.st_mode & 0o7777,
            uid: stat.st_uid,
            gid: stat.st_gid,
        }))
    }

    /// Opens the regular file at the path for reading (to save a copy of it), checking it is
    /// still the file `inspect` saw: not a link, not another file renamed in meanwhile.
    pub(crate) fn open_read(&self) -> Result<File, Fault> {
        let changed = || Fault::ChangedWhileSaving {
            path: self.real.clone(),
        };
        let stat = self.stat()?.ok_or_else(changed)?;
        if other_kind(&stat).is_some() {
            return Err(changed());
        }
        Ok(self.open_file(&stat)?)
    }

    fn stat(&self) -> Result<Option<Stat>, PathError> {
        match rustix::fs::statat(&self.dir.fd, &self.name, AtFlags::SYMLINK_NOFOLLOW) {
            Ok(stat) => Ok(Some(stat)),
            Err(rustix::io::Errno::NOENT) => Ok(None),
            Err(e) => Err(PathError::new("inspect", &self.real, e.into())),
        }
    }

    /// Opens what `stat` described without following a link and without blocking on a FIFO
    /// swapped in since, and checks that it is the same file.
    fn open_file(&self, stat: &Stat) -> Result<File, PathError> {
        let flags = OFlags::RDONLY | OFlags::NOFOLLOW | OFlags::NONBLOCK | OFlags::CLOEXEC;
        let fd = rustix::fs::openat(&self.dir.fd, &self.name, flags, Mode::empty())
            .map_err(|e| PathError::new("read", &self.real, e.into()))?;
        let opened =
            rustix::fs::fstat(&fd).map_err(|e| PathError::new("read", &self.real, e.into()))?;
        if (opened.st_dev, opened.st_ino) != (stat.st_dev, stat.st_ino) {
            return Err(PathError::new(
                "read",
                &self.real,
                io::Error::other("it was replaced while Shoal was reading it"),
            ));
        }
        Ok(File::from(fd))
    }

    fn temp_name(&self) -> OsString {
        let mut name = OsString::from(".");
        name.push(&self.name);
        name.push(".shoal-new");
        name
    }

    fn temp_real(&self) -> PathBuf {
        self.dir.real.join(self.temp_name())
    }

    /// Writes `content` with its final owner and mode into the temp file beside the path and
    /// fsyncs it, so the rename that follows publishes complete data and metadata at once. The
    /// temp file is created 0600 (`O_EXCL`, so never through a link), so secrets are never
    /// readable by others, even for an instant.
    pub(crate) fn write_temp(&self, content: &[u8], want: &DiskFile) -> Result<(), PathError> {
        let temp = self.temp_real();
        self.remove_temp()?;
        let result = (|| {
            let flags =
                OFlags::WRONLY | OFlags::CREATE | OFlags::EXCL | OFlags::NOFOLLOW | OFlags::CLOEXEC;
            let fd = rustix::fs::openat(
                &self.dir.fd,
                self.temp_name(),
                flags,
                Mode::from_raw_mode(0o600),
            )
            .map_err(|e| PathError::new("create", &temp, e.into()))?;
            let mut file = File::from(fd);
            file.write_all(content)
                .map_err(|e| PathError::new("write", &temp, e))?;
            // chown before chmod: chown clears the setuid and setgid bits.
            std::os::unix::fs::fchown(&file, Some(want.uid), Some(want.gid))
                .map_err(|e| PathError::new("change owner of", &temp, e))?;
            file.set_permissions(std::fs::Permissions::from_mode(want.mode & 0o7777))
                .map_err(|e| PathError::new("set permissions of", &temp, e))?;
            file.sync_all()
                .map_err(|e| PathError::new("fsync", &temp, e))
        })();
        if result.is_err() {
            // Best effort: recovery removes it too if this fails.
            let _ = self.remove_temp();
        }
        result
    }

    /// Atomically replaces whatever file is at the path with the prepared temp file.
    pub(crate) fn rename_into_place(&self) -> Result<(), PathError> {
        rustix::fs::renameat(&self.dir.fd, self.temp_name(), &self.dir.fd, &self.name)
            .map_err(|e| PathError::new("rename into place", &self.real, e.into()))
    }

    /// Removes the temp file a crash may have left; already gone is fine.
    pub(crate) fn remove_temp(&self) -> Result<(), PathError> {
        unlink_if_present(&self.dir, &self.temp_name(), &self.temp_real())
    }

    /// Removes the file at the path (the name only, never what a link points to); already
    /// gone is fine.
    pub(crate) fn remove_if_present(&self) -> Result<(), PathError> {
        unlink_if_present(&self.dir, &self.name, &self.real)
    }

    /// Creates the path as one directory (0755); already there is fine, so recovery can
    /// repeat it.
    pub(crate) fn create_dir(&self) -> Result<(), PathError> {
        match rustix::fs::mkdirat(&self.dir.fd, &self.name, Mode::from_raw_mode(0o755)) {
            Ok(()) | Err(rustix::io::Errno::EXIST) => {}
            Err(e) => return Err(PathError::new("create directory", &self.real, e.into())),
        }
        // Not left to the umask: 0755 is what the journal promises. Through a handle opened
        // without following links, so a link swapped in for the new directory is refused.
        let fd = rustix::fs::openat(&self.dir.fd, &self.name, DIR_FLAGS, Mode::empty())
            .map_err(|e| PathError::new("open directory", &self.real, e.into()))?;
        rustix::fs::fchmod(&fd, Mode::from_raw_mode(0o755))
            .map_err(|e| PathError::new("set permissions of", &self.real, e.into()))
    }

    /// Removes the directory at the path if it is empty. `Ok(false)` when something else has
    /// put a file in it since: that is not ours to delete.
    pub(crate) fn remove_dir_if_empty(&self) -> Result<bool, PathError> {
        match rustix::fs::unlinkat(&self.dir.fd, &self.name, AtFlags::REMOVEDIR) {
            Ok(()) | Err(rustix::io::Errno::NOENT) => Ok(true),
            Err(rustix::io::Errno::NOTEMPTY | rustix::io::Errno::EXIST) => Ok(false),
            Err(e) => Err(PathError::new("remove directory", &self.real, e.into())),
        }
    }
}

/// Looks first, so that nothing to remove on a read-only filesystem (where unlink fails with
/// EROFS even for a missing name) is not an error.
fn unlink_if_present(dir: &Dir, name: &OsStr, real: &Path) -> Result<(), PathError> {
    match rustix::fs::statat(&dir.fd, name, AtFlags::SYMLINK_NOFOLLOW) {
        Err(rustix::io::Errno::NOENT) => return Ok(()),
        Err(e) => return Err(PathError::new("inspect", real, e.into())),
        Ok(_) => {}
    }
    match rustix::fs::unlinkat(&dir.fd, name, AtFlags::empty()) {
        Ok(()) | Err(rustix::io::Errno::NOENT) => Ok(()),
        Err(e) => Err(PathError::new("remove", real, e.into())),
    }
}

/// What a non-regular file is; `None` for a regular file Shoal may read and replace. A regular
/// file with more than one hard link is refused too: the other name may be anywhere on its file
/// system (another user can link a root-owned file into a directory they own), and Shoal will
/// not save, restore or account for a file it cannot see whole.
fn other_kind(stat: &Stat) -> Option<OtherKind> {
    match FileType::from_raw_mode(stat.st_mode) {
        FileType::RegularFile if stat.st_nlink > 1 => Some(OtherKind::HardLinked),
        FileType::RegularFile => None,
        FileType::Directory => Some(OtherKind::Directory),
        FileType::Symlink => Some(OtherKind::Symlink),
        _ => Some(OtherKind::Special),
    }
}

/// Streams the file through sha256 (bounded memory for large files).
fn hash(file: &mut File, real: &Path) -> Result<String, PathError> {
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
