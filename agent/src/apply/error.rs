//! Apply's errors: what went wrong at which path and what the operator should do, and — as a
//! separate layer — which generation the device was left at. Builds messages, does no I/O.

use std::io;
use std::path::{Path, PathBuf};

use crate::paths::PathError;
use crate::plan::OtherKind;

/// Why one step of a transaction could not be done. Says what and where and what to do; the
/// [`ApplyError`] around it says what state the device was left in.
#[derive(Debug, thiserror::Error)]
pub enum Fault {
    #[error("refusing to manage {}: not an absolute, normalized path (render should have rejected it; please report this as a bug)", path.display())]
    BadPath { path: PathBuf },
    #[error("refusing to manage {}: {} is a symbolic link ({}), and Shoal follows no symbolic link under the device root, where whoever owns a directory could point it anywhere; replace the link with a real directory (or stop declaring the path) and run sync again", path.display(), component.display(), real.display())]
    SymlinkInPath {
        path: PathBuf,
        /// The device path of the link.
        component: PathBuf,
        real: PathBuf,
    },
    #[error("refusing to manage {}: {} is the agent's own state directory {}; a configuration repository may not write the agent's state: declare the file elsewhere", path.display(), component.display(), state_dir.display())]
    InsideStateDir {
        path: PathBuf,
        /// The device path at which the walk reached the state directory.
        component: PathBuf,
        state_dir: PathBuf,
    },
    #[error("{} is a directory, but generation {to} declares a file at {}; remove the directory (or stop declaring the file) and run sync again", real.display(), path.display())]
    DirectoryInTheWay {
        path: PathBuf,
        real: PathBuf,
        to: u64,
    },
    #[error("{} is a {kind}, but generation {to} declares a regular file at {}; remove it (or stop declaring the file) and run sync again", real.display(), path.display())]
    NotAFile {
        path: PathBuf,
        real: PathBuf,
        kind: OtherKind,
        to: u64,
    },
    #[error("{} is not a directory, but generation {to} declares {} beneath it; remove it (or stop declaring the file) and run sync again", parent.display(), path.display())]
    ParentNotADirectory {
        path: PathBuf,
        parent: PathBuf,
        to: u64,
    },
    #[error("cannot write {}: {} is on a read-only filesystem; remount it read-write (or stop declaring the file) and run sync again", path.display(), dir.display())]
    ReadOnly { path: PathBuf, dir: PathBuf },
    #[error("no space left on device while writing {}; free space on the filesystem holding {} and run sync again", path.display(), dir.display())]
    NoSpace { path: PathBuf, dir: PathBuf },
    #[error("owner {user:?} of {} is not a user in {}; create the user (for example with a sysusers.d snippet) or declare a numeric uid, and run sync again", path.display(), list(sources))]
    UnknownUser {
        path: PathBuf,
        user: String,
        sources: Vec<PathBuf>,
    },
    #[error("group {group:?} of {} is not a group in {}; create the group (for example with a sysusers.d snippet) or declare a numeric gid, and run sync again", path.display(), list(sources))]
    UnknownGroup {
        path: PathBuf,
        group: String,
        sources: Vec<PathBuf>,
    },
    #[error("generation {to} needs {} for {}, but the blob store has lost it; that generation cannot be restored offline: sync from the repository instead", blob.display(), path.display())]
    MissingBlob {
        path: PathBuf,
        blob: PathBuf,
        to: u64,
    },
    #[error("the saved content {sha256} in {} is corrupt (it hashes to {actual}); that content cannot be restored offline: sync from the repository instead", place.display())]
    CorruptBlob {
        sha256: String,
        place: PathBuf,
        actual: String,
    },
    #[error("{} is unreadable ({reason}); refusing to guess which files existed before Shoal managed them: restore it from a backup, or delete it to make Shoal forget them", path.display())]
    CorruptState { path: PathBuf, reason: String },
    #[error("{} changed while Shoal was saving a copy of it; run sync again", path.display())]
    ChangedWhileSaving { path: PathBuf },
    #[error("the plan lists {} but the desired state does not declare it; plan again against this desired state (this is a bug in the caller)", path.display())]
    PlanMismatch { path: PathBuf },
    #[error(transparent)]
    Io(#[from] PathError),
}

/// The outcome of a failed apply, restore or recovery, always with the generation the device
/// is at (or the fact that it is between two, with the journal kept to finish the job).
#[derive(Debug, thiserror::Error)]
pub enum ApplyError {
    /// Nothing was changed, or everything changed was rolled back: the device is exactly at
    /// generation `from`.
    #[error("{fault}; the device was left at generation {from}")]
    Failed { fault: Box<Fault>, from: u64 },
    #[error("{fault}; rolling back to generation {from} failed too: {rollback}; {} is kept, and the next start of shoal-agent retries the rollback", journal.display())]
    RollbackFailed {
        fault: Box<Fault>,
        rollback: Box<Fault>,
        from: u64,
        journal: PathBuf,
    },
    #[error("could not roll the interrupted apply of generation {to} back to generation {from}: {fault}; {} is kept: fix this and start shoal-agent again to retry", journal.display())]
    RecoveryFailed {
        fault: Box<Fault>,
        from: u64,
        to: u64,
        journal: PathBuf,
    },
    #[error("{} records an unfinished apply (generation {from} → {to}); recover first (shoal-agent does this at start) and apply again", journal.display())]
    Unfinished {
        journal: PathBuf,
        from: u64,
        to: u64,
    },
    #[error("{} is unreadable ({reason}); refusing to guess which files to restore: compare the device with the generations in the state directory, fix it by hand, then delete the journal", journal.display())]
    CorruptJournal { journal: PathBuf, reason: String },
    #[error("cannot read the device's current state: {0}")]
    Observe(Box<Fault>),
    #[error("could not prune the blob store: {0}; the generations are intact, and the next prune retries")]
    Prune(Box<Fault>),
    #[error(
        "{0}; the generation is recorded, so the next start of shoal-agent removes the journal"
    )]
    JournalNotRemoved(PathError),
}

impl ApplyError {
    pub(crate) fn failed(fault: Fault, from: u64) -> Self {
        ApplyError::Failed {
            fault: Box::new(fault),
            from,
        }
    }

    /// The fault behind this error, when there is one.
    pub fn fault(&self) -> Option<&Fault> {
        match self {
            ApplyError::Failed { fault, .. }
            | ApplyError::RollbackFailed { fault, .. }
            | ApplyError::RecoveryFailed { fault, .. }
            | ApplyError::Observe(fault)
            | ApplyError::Prune(fault) => Some(fault),
            _ => None,
        }
    }
}

impl Fault {
    /// Turns an I/O error from writing or removing `path` (a device path; `err.path` is where
    /// it really happened) into the fault an operator can act on.
    pub(crate) fn classify(err: PathError, path: &Path, to: u64) -> Fault {
        let dir = || parent(&err.path).to_owned();
        match err.source.kind() {
            io::ErrorKind::StorageFull | io::ErrorKind::QuotaExceeded => Fault::NoSpace {
                path: path.to_owned(),
                dir: dir(),
            },
            io::ErrorKind::ReadOnlyFilesystem => Fault::ReadOnly {
                path: path.to_owned(),
                dir: dir(),
            },
            // rename(2) of a file onto a directory.
            io::ErrorKind::IsADirectory => Fault::DirectoryInTheWay {
                path: path.to_owned(),
                real: err.path,
                to,
            },
            _ => Fault::Io(err),
        }
    }

    /// Like [`Fault::classify`] for Shoal's own files under `state_dir` (blobs, journal):
    /// a full or read-only state directory gets the same operator advice as a managed path.
    pub(crate) fn about_state(self) -> Fault {
        match self {
            Fault::Io(err)
                if matches!(
                    err.source.kind(),
                    io::ErrorKind::StorageFull
                        | io::ErrorKind::QuotaExceeded
                        | io::ErrorKind::ReadOnlyFilesystem
                ) =>
            {
                let path = err.path.clone();
                Fault::classify(err, &path, 0)
            }
            fault => fault,
        }
    }

    /// Whether the device, not the commit, is at fault: a full or read-only file system, a
    /// permission or I/O error, a link a local user put in a managed path, a file changed
    /// under Shoal, damaged state. Such a failure is retried with backoff; only a failure the
    /// commit causes (a directory where it declares a file, an unknown owner, …) makes the
    /// commit bad.
    pub fn is_environmental(&self) -> bool {
        match self {
            Fault::NoSpace { .. }
            | Fault::ReadOnly { .. }
            | Fault::SymlinkInPath { .. }
            | Fault::ChangedWhileSaving { .. }
            | Fault::MissingBlob { .. }
            | Fault::CorruptBlob { .. }
            | Fault::CorruptState { .. } => true,
            // What a local user can plant at a declared path; a directory in the way is more
            // likely a mistake in the commit (a file declared where a `.d` directory is).
            Fault::NotAFile { kind, .. } => {
                matches!(kind, OtherKind::HardLinked | OtherKind::Symlink)
            }
            Fault::Io(err) => matches!(
                err.source.raw_os_error(),
                Some(
                    libc::EACCES
                        | libc::EPERM
                        | libc::EIO
                        | libc::ENOSPC
                        | libc::EDQUOT
                        | libc::EROFS
                )
            ),
            _ => false,
        }
    }

    pub(crate) fn is_no_space(&self) -> bool {
        matches!(self, Fault::NoSpace { .. })
    }
}

fn parent(path: &Path) -> &Path {
    match path.parent() {
        Some(p) if !p.as_os_str().is_empty() => p,
        _ => Path::new("/"),
    }
}

fn list(sources: &[PathBuf]) -> String {
    sources
        .iter()
        .map(|p| p.display().to_string())
        .collect::<Vec<_>>()
        .join(" or ")
}
