//! The primitives that touch managed paths under the device's `root`, and the one way to reach
//! such a path: walked component by component from a directory handle on `root`, following no
//! symbolic link anywhere (`openat` with `O_NOFOLLOW`, which every kernel has; `openat2` is not
//! needed and devices run kernels older than 5.6). Every later call — look, hash, temp file,
//! fchown/fchmod/fsync, rename, unlink, mkdir — goes through the handle of the directory that
//! holds the path, so a directory swapped for a symbolic link after the walk cannot redirect a
//! write: the handle still names the directory that was checked. The agent's own state
//! directory is recognised by identity (device + inode), never by comparing strings.
//! The walk reuses the handle of a directory it already checked (a few per transaction step,
//! see [`DeviceRoot::locate`]), so files of one directory cost one walk, not one each.
//! [`Dir::write_temp`] + [`Dir::publish`] + [`Dir::sync`] is the one durable write, for managed
//! files and blobs alike. Errors name the real path; the order of calls (and so crash safety)
//! is the transaction's.

use std::cell::RefCell;
use std::collections::BTreeMap;
use std::ffi::{OsStr, OsString};
use std::fs::File;
use std::io::{self, Read, Write};
use std::os::fd::OwnedFd;
use std::os::unix::fs::PermissionsExt;
use std::path::{Component, Path, PathBuf};
use std::rc::Rc;
use std::time::{Duration, SystemTime};

use rustix::fs::{AtFlags, FileType, Mode, OFlags, Stat};
use ssh_key::sha2::{Digest, Sha256};

use super::error::Fault;
use crate::paths::PathError;
use crate::plan::{hex, DiskEntry, DiskFile, FileStamp, OtherKind};

/// A directory's identity: what a bind mount or a second name cannot disguise.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub(crate) struct DirId {
    dev: u64,
    ino: u64,
}

impl DirId {
    /// On the same file system.
    pub(crate) fn same_device(&self, other: &DirId) -> bool {
        self.dev == other.dev
    }

    fn of(stat: &Stat) -> DirId {
        DirId {
            dev: stat.st_dev,
            ino: stat.st_ino,
        }
    }
}

/// The handle every managed path is resolved from.
pub(crate) struct DeviceRoot {
    root: Dir,
    path: PathBuf,
    state_dir: PathBuf,
    /// `None` while the state directory does not exist yet (nothing can be inside it then;
    /// apply creates it, and opens a new `DeviceRoot`, before its first managed write).
    state_id: Option<DirId>,
    /// Directories this walk already opened and checked, by device path. Each step of a
    /// transaction opens its own `DeviceRoot`, so nothing checked in one step is trusted in
    /// the next (directories are created in between, and a link may be swapped in).
    walked: RefCell<BTreeMap<PathBuf, Dir>>,
}

/// A directory beneath `root`, reached without following a symbolic link (or the state
/// directory's blob store, opened by its configured path). Cloning shares the handle.
#[derive(Clone)]
pub(crate) struct Dir {
    fd: Rc<OwnedFd>,
    id: DirId,
    /// Where it is on the host (for messages and for nothing else).
    real: PathBuf,
}

/// When a file written by [`Dir::write_temp`] reaches the disk.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Flush {
    /// fsync the temp file before it returns: durable on its own.
    Each,
    /// Not yet: the caller makes a whole batch durable with one [`Dir::sync_filesystem`]
    /// before publishing any of it, so a name never points at unwritten data.
    Batch,
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
        let root_dir = Dir::open_trusted(root, "open the device root")?;
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
            root: root_dir,
            path: root.to_owned(),
            state_dir: state_dir.to_owned(),
            state_id,
            walked: RefCell::new(BTreeMap::new()),
        })
    }

    /// Where device path `path` is on the host; only for messages and for reading Shoal's own
    /// files, never for writing a managed path.
    pub(crate) fn real(&self, path: &Path) -> PathBuf {
        self.path.join(path.strip_prefix("/").unwrap_or(path))
    }

    /// Walks from `root` to the directory holding `path` (absolute, normalized), one component
    /// at a time, refusing a symbolic link at any step and the state directory as any parent.
    /// The walk starts from the deepest ancestor this `DeviceRoot` already walked to and
    /// checked, so the files of one directory are reached with one walk; what it gives back
    /// is always a handle that was checked this way.
    pub(crate) fn locate(&self, path: &Path) -> Result<Parent, Fault> {
        let names = components(path)?;
        let (last, parents) = names.split_last().ok_or_else(|| Fault::BadPath {
            path: path.to_owned(),
        })?;
        self.check_not_state(&self.root, path, Path::new("/"))?;
        // The deepest directory already walked: `start` names are behind it.
        let mut device = PathBuf::from("/");
        let mut dir = self.root.clone();
        let mut start = 0;
        {
            let walked = self.walked.borrow();
            let mut probe = PathBuf::from("/");
            for (i, name) in parents.iter().enumerate() {
                probe.push(name);
                match walked.get(&probe) {
                    Some(known) => {
                        dir = known.clone();
                        device.clone_from(&probe);
                        start = i + 1;
                    }
                    None => break,
                }
            }
        }
        for (i, name) in parents.iter().enumerate().skip(start) {
            device.push(name);
            let real = dir.real.join(name);
            match rustix::fs::openat(&*dir.fd, *name, DIR_FLAGS, Mode::empty()) {
                Ok(fd) => {
                    dir = Dir::from_fd(fd, real)?;
                    self.check_not_state(&dir, path, &device)?;
                    self.remember(&device, &dir);
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
                    let stat = rustix::fs::statat(&*dir.fd, *name, AtFlags::SYMLINK_NOFOLLOW)
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

    /// Keeps a checked directory for the next walks; bounded, so a tree of thousands of
    /// directories cannot exhaust file descriptors (when full, it starts over).
    fn remember(&self, device: &Path, dir: &Dir) {
        const MAX_OPEN: usize = 64;
        let mut walked = self.walked.borrow_mut();
        if walked.len() >= MAX_OPEN {
            walked.clear();
        }
        walked.insert(device.to_owned(), dir.clone());
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
        if Some(dir.id) == self.state_id {
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
    /// Opens a directory the configuration names (the device root, the state directory's blob
    /// store): trusted, so it may itself be reached through a link.
    pub(crate) fn open_trusted(path: &Path, action: &'static str) -> Result<Dir, PathError> {
        let fd = rustix::fs::open(path, DIR_FLAGS.difference(OFlags::NOFOLLOW), Mode::empty())
            .map_err(|e| PathError::new(action, path, e.into()))?;
        Dir::from_fd(fd, path.to_owned())
    }

    fn from_fd(fd: OwnedFd, real: PathBuf) -> Result<Dir, PathError> {
        let stat =
            rustix::fs::fstat(&fd).map_err(|e| PathError::new("inspect", &real, e.into()))?;
        Ok(Dir {
            fd: Rc::new(fd),
            id: DirId::of(&stat),
            real,
        })
    }

    pub(crate) fn id(&self) -> DirId {
        self.id
    }

    /// Makes renames and unlinks in this directory durable.
    pub(crate) fn sync(&self) -> Result<(), PathError> {
        rustix::fs::fsync(&*self.fd)
            .map_err(|e| PathError::new("fsync directory", &self.real, e.into()))
    }

    /// Makes everything written on this directory's file system durable (`syncfs(2)`): one
    /// call for a batch written with [`Flush::Batch`]. It also flushes other writers' data on
    /// that file system.
    pub(crate) fn sync_filesystem(&self) -> Result<(), PathError> {
        rustix::fs::syncfs(&*self.fd)
            .map_err(|e| PathError::new("sync the file system of", &self.real, e.into()))
    }

    /// What `name` in this directory is, without following a link; `None` when nothing is.
    pub(crate) fn stat(&self, name: &OsStr) -> Result<Option<Stat>, PathError> {
        match rustix::fs::statat(&*self.fd, name, AtFlags::SYMLINK_NOFOLLOW) {
            Ok(stat) => Ok(Some(stat)),
            Err(rustix::io::Errno::NOENT) => Ok(None),
            Err(e) => Err(PathError::new("inspect", &self.real.join(name), e.into())),
        }
    }

    /// The durable write, first half, for managed files and blobs alike: creates `temp` in
    /// this directory (0600 and `O_EXCL`, so never through a link, and secrets are never
    /// readable by others even for an instant; a leftover of a crash is removed first), lets
    /// `fill` write it, gives it `meta`'s owner and mode when set (chown before chmod: chown
    /// clears the setuid and setgid bits), and with [`Flush::Each`] fsyncs it, so that
    /// [`Dir::publish`] then shows complete data and metadata at once. On error the temp file
    /// is removed (best effort; recovery sweeps it too).
    pub(crate) fn write_temp<E: From<PathError>>(
        &self,
        temp: &OsStr,
        fill: impl FnOnce(&mut File, &Path) -> Result<(), E>,
        meta: Option<&DiskFile>,
        flush: Flush,
    ) -> Result<(), E> {
        let real = self.real.join(temp);
        let result = (|| {
            let mut file = self.create_temp(temp)?;
            fill(&mut file, &real)?;
            if let Some(want) = meta {
                std::os::unix::fs::fchown(&file, Some(want.uid), Some(want.gid))
                    .map_err(|e| PathError::new("change owner of", &real, e))?;
                file.set_permissions(std::fs::Permissions::from_mode(want.mode & 0o7777))
                    .map_err(|e| PathError::new("set permissions of", &real, e))?;
            }
            if flush == Flush::Each {
                file.sync_all()
                    .map_err(|e| PathError::new("fsync", &real, e))?;
            }
            Ok(())
        })();
        if result.is_err() {
            let _ = unlink_if_present(self, temp, &real);
        }
        result
    }

    /// Creates `temp` in this directory for writing: 0600 and `O_EXCL` (never through a link;
    /// secrets never readable by others, even for an instant), a leftover of a crash removed
    /// first. Not flushed: the caller decides when it is durable.
    pub(crate) fn create_temp(&self, temp: &OsStr) -> Result<File, PathError> {
        let real = self.real.join(temp);
        unlink_if_present(self, temp, &real)?;
        let flags =
            OFlags::WRONLY | OFlags::CREATE | OFlags::EXCL | OFlags::NOFOLLOW | OFlags::CLOEXEC;
        let fd = rustix::fs::openat(&*self.fd, temp, flags, Mode::from_raw_mode(0o600))
            .map_err(|e| PathError::new("create", &real, e.into()))?;
        Ok(File::from(fd))
    }

    /// Opens `name` in this directory for reading, without following a link.
    pub(crate) fn open_read(&self, name: &OsStr) -> Result<File, PathError> {
        let fd = self
            .open_fd(name)
            .map_err(|e| PathError::new("read", &self.real.join(name), e.into()))?;
        Ok(File::from(fd))
    }

    /// `name` opened for reading: never through a link, and without blocking on a FIFO.
    fn open_fd(&self, name: &OsStr) -> rustix::io::Result<OwnedFd> {
        let flags = OFlags::RDONLY | OFlags::NOFOLLOW | OFlags::NONBLOCK | OFlags::CLOEXEC;
        rustix::fs::openat(&*self.fd, name, flags, Mode::empty())
    }

    /// The durable write, second half: atomically replaces whatever file is at `name` with
    /// `temp` (written by [`Dir::write_temp`]). Durable after [`Dir::sync`].
    pub(crate) fn publish(&self, temp: &OsStr, name: &OsStr) -> Result<(), PathError> {
        rustix::fs::renameat(&*self.fd, temp, &*self.fd, name)
            .map_err(|e| PathError::new("rename into place", &self.real.join(name), e.into()))
    }

    /// Removes `name` (never what a link points to); already gone is fine.
    pub(crate) fn remove(&self, name: &OsStr) -> Result<(), PathError> {
        unlink_if_present(self, name, &self.real.join(name))
    }
}

impl Located {
    pub(crate) fn into_dir(self) -> Dir {
        self.dir
    }

    /// The checked directory the path is in.
    pub(crate) fn dir(&self) -> &Dir {
        &self.dir
    }

    /// What is at the path (symbolic links not followed), hashing a regular file's content.
    pub(crate) fn inspect(&self) -> Result<DiskEntry, PathError> {
        self.inspect_knowing(None)
    }

    /// [`Located::inspect`], but the content is not read again when `known` (what observe saw
    /// there) still describes the file: same device, inode, size, mtime and ctime. Any write
    /// since moves the ctime, which no one can set by hand, and observe only keeps a stamp of a
    /// file whose ctime is older than its own look at it by more than the kernel's timestamp
    /// granularity (see [`Located::observe`]), so a change after the read cannot carry the same
    /// ctime. Mode and owner always come from this `stat`.
    pub(crate) fn inspect_knowing(
        &self,
        known: Option<&FileStamp>,
    ) -> Result<DiskEntry, PathError> {
        Ok(self.look(known, None)?.0)
    }

    /// What observe records: the entry, and for a regular file whose last change is old
    /// enough, the stamp that lets [`Located::inspect_knowing`] skip reading it again.
    pub(crate) fn observe(&self) -> Result<(DiskEntry, Option<FileStamp>), PathError> {
        // Taken before the stat: a change after this instant gets a ctime no earlier than
        // this minus one timer tick (file times come from the kernel's coarse clock).
        self.look(None, Some(SystemTime::now()))
    }

    fn look(
        &self,
        known: Option<&FileStamp>,
        observed_at: Option<SystemTime>,
    ) -> Result<(DiskEntry, Option<FileStamp>), PathError> {
        let Some(stat) = self.dir.stat(&self.name)? else {
            return Ok((DiskEntry::Missing, None));
        };
        if let Some(kind) = other_kind(&stat) {
            return Ok((DiskEntry::Other(kind), None));
        }
        let file = |sha256| DiskFile {
            sha256,
            mode: stat.st_mode & 0o7777,
            uid: stat.st_uid,
            gid: stat.st_gid,
        };
        if let Some(known) = known.filter(|known| stamp_matches(known, &stat)) {
            return Ok((DiskEntry::File(file(known.sha256.clone())), None));
        }
        let mut opened = self.open_file(&stat)?;
        let sha256 = hash(&mut opened, &self.real)?;
        let stamp = observed_at
            .filter(|at| settled(&stat, *at))
            .map(|_| stamp_of(&stat, &sha256));
        Ok((DiskEntry::File(file(sha256)), stamp))
    }

    /// Opens the regular file at the path for reading (to save a copy of it), checking it is
    /// still the file `inspect` saw: not a link, not another file renamed in meanwhile.
    pub(crate) fn open_read(&self) -> Result<File, Fault> {
        let changed = || Fault::ChangedWhileSaving {
            path: self.real.clone(),
        };
        let stat = self.dir.stat(&self.name)?.ok_or_else(changed)?;
        if other_kind(&stat).is_some() {
            return Err(changed());
        }
        Ok(self.open_file(&stat)?)
    }

    /// Opens what `stat` described without following a link and without blocking on a FIFO
    /// swapped in since, and checks that it is the same file.
    fn open_file(&self, stat: &Stat) -> Result<File, PathError> {
        let fd = self
            .dir
            .open_fd(&self.name)
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

    /// Writes `content` with its final owner and mode into the temp file beside the path and
    /// fsyncs it ([`Dir::write_temp`]), so the rename that follows publishes complete data
    /// and metadata at once.
    pub(crate) fn write_temp(
        &self,
        content: &[u8],
        want: &DiskFile,
        flush: Flush,
    ) -> Result<(), PathError> {
        self.dir.write_temp(
            &self.temp_name(),
            |file, temp| {
                file.write_all(content)
                    .map_err(|e| PathError::new("write", temp, e))
            },
            Some(want),
            flush,
        )
    }

    /// Atomically replaces whatever file is at the path with the prepared temp file.
    pub(crate) fn rename_into_place(&self) -> Result<(), PathError> {
        self.dir.publish(&self.temp_name(), &self.name)
    }

    /// Removes the temp file a crash may have left; already gone is fine.
    pub(crate) fn remove_temp(&self) -> Result<(), PathError> {
        self.dir.remove(&self.temp_name())
    }

    /// Removes the file at the path (the name only, never what a link points to); already
    /// gone is fine.
    pub(crate) fn remove_if_present(&self) -> Result<(), PathError> {
        self.dir.remove(&self.name)
    }

    /// Creates the path as one directory (0755); already there is fine, so recovery can
    /// repeat it.
    pub(crate) fn create_dir(&self) -> Result<(), PathError> {
        match rustix::fs::mkdirat(&*self.dir.fd, &self.name, Mode::from_raw_mode(0o755)) {
            Ok(()) | Err(rustix::io::Errno::EXIST) => {}
            Err(e) => return Err(PathError::new("create directory", &self.real, e.into())),
        }
        // Not left to the umask: 0755 is what the journal promises. Through a handle opened
        // without following links, so a link swapped in for the new directory is refused.
        let fd = rustix::fs::openat(&*self.dir.fd, &self.name, DIR_FLAGS, Mode::empty())
            .map_err(|e| PathError::new("open directory", &self.real, e.into()))?;
        rustix::fs::fchmod(&fd, Mode::from_raw_mode(0o755))
            .map_err(|e| PathError::new("set permissions of", &self.real, e.into()))
    }

    /// Removes the directory at the path if it is empty. `Ok(false)` when something else has
    /// put a file in it since: that is not ours to delete.
    pub(crate) fn remove_dir_if_empty(&self) -> Result<bool, PathError> {
        match rustix::fs::unlinkat(&*self.dir.fd, &self.name, AtFlags::REMOVEDIR) {
            Ok(()) | Err(rustix::io::Errno::NOENT) => Ok(true),
            Err(rustix::io::Errno::NOTEMPTY | rustix::io::Errno::EXIST) => Ok(false),
            Err(e) => Err(PathError::new("remove directory", &self.real, e.into())),
        }
    }
}

/// Looks first, so that nothing to remove on a read-only filesystem (where unlink fails with
/// EROFS even for a missing name) is not an error.
fn unlink_if_present(dir: &Dir, name: &OsStr, real: &Path) -> Result<(), PathError> {
    match rustix::fs::statat(&*dir.fd, name, AtFlags::SYMLINK_NOFOLLOW) {
        Err(rustix::io::Errno::NOENT) => return Ok(()),
        Err(e) => return Err(PathError::new("inspect", real, e.into())),
        Ok(_) => {}
    }
    match rustix::fs::unlinkat(&*dir.fd, name, AtFlags::empty()) {
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

/// More than the coarseness of file times (one timer tick: at most 10 ms, at HZ=100), with
/// room to spare.
const SETTLE: Duration = Duration::from_millis(20);

/// Whether a file last changed at its `ctime` was settled when observe looked at it at
/// `observed_at`: any later change then carries a later ctime.
fn settled(stat: &Stat, observed_at: SystemTime) -> bool {
    let (_, _, _, _, (secs, nanos)) = stamp_fields(stat);
    let (Ok(secs), Ok(nanos)) = (u64::try_from(secs), u32::try_from(nanos)) else {
        return false;
    };
    observed_at
        .duration_since(SystemTime::UNIX_EPOCH)
        .is_ok_and(|at| Duration::new(secs, nanos) + SETTLE < at)
}

fn stamp_of(stat: &Stat, sha256: &str) -> FileStamp {
    let (dev, ino, size, mtime, ctime) = stamp_fields(stat);
    FileStamp {
        sha256: sha256.to_owned(),
        dev,
        ino,
        size,
        mtime,
        ctime,
    }
}

fn stamp_matches(known: &FileStamp, stat: &Stat) -> bool {
    (known.dev, known.ino, known.size, known.mtime, known.ctime) == stamp_fields(stat)
}

type StampFields = (u64, u64, u64, (i64, i64), (i64, i64));

// The field types of `stat` differ between architectures (32-bit ARM among them): the casts
// are no-ops only on some.
#[allow(clippy::unnecessary_cast)]
fn stamp_fields(stat: &Stat) -> StampFields {
    (
        stat.st_dev as u64,
        stat.st_ino as u64,
        stat.st_size as u64,
        (stat.st_mtime as i64, stat.st_mtime_nsec as i64),
        (stat.st_ctime as i64, stat.st_ctime_nsec as i64),
    )
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
