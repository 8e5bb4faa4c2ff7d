//! Plan decides what apply must do: the diff between the desired state, what the current
//! generation declared ([`Manifest`]) and what is on disk ([`DiskSnapshot`]), with drift marked.
//! It does no I/O (the snapshot is taken by `apply::observe`) and decides nothing about order
//! or durability, which belong to apply.

mod disk;
mod manifest;
#[cfg(test)]
mod tests;

use std::collections::{BTreeMap, BTreeSet};
use std::fmt;
use std::path::{Path, PathBuf};

use serde::Serialize;

pub use disk::{Accounts, DiskEntry, DiskFile, DiskSnapshot, FileStamp, OtherKind};
pub use manifest::{hex, is_sha256_hex, octal_mode, sha256_hex, Manifest, ManifestEntry};

use crate::render::{DesiredFile, DesiredState};

/// What one sync would do to the disk, and what it found changed by hand.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct Plan {
    /// One per path that needs a write or a removal, sorted by path.
    pub actions: Vec<Action>,
    /// Managed paths (declared by the current generation) whose disk state differs from it.
    pub drift: Vec<Drift>,
    /// The snapshot's stamps of the paths in `actions`, handed on so apply need not read
    /// again what observe read (it re-checks each with a `stat`).
    #[serde(skip)]
    pub stamps: BTreeMap<PathBuf, FileStamp>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(tag = "action", rename_all = "snake_case")]
pub enum Action {
    /// A path the current generation does not declare. If something is already there, a
    /// regular file is taken over (apply saves it so removal and rollback restore it); anything
    /// else is in the way and apply will refuse.
    Create {
        path: PathBuf,
        #[serde(with = "octal_mode")]
        mode: u32,
        owner: String,
        group: String,
        existing: Option<Existing>,
    },
    /// A declared path whose content or metadata on disk differs from the desired state.
    /// `from` values are what is on disk (or what the current generation declared, when the
    /// file is gone).
    Change {
        path: PathBuf,
        content: bool,
        mode: Option<ModeChange>,
        owner: Option<OwnerChange>,
    },
    /// Declared by the current generation, not any more.
    Remove { path: PathBuf },
}

impl Action {
    pub fn path(&self) -> &Path {
        match self {
            Action::Create { path, .. } | Action::Change { path, .. } | Action::Remove { path } => {
                path
            }
        }
    }
}

/// What a [`Action::Create`] finds at its path.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Existing {
    /// A regular file Shoal has not managed so far.
    UnmanagedFile,
    Directory,
    Symlink,
    Special,
    /// A regular file with more than one hard link.
    HardLinked,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct ModeChange {
    #[serde(with = "octal_mode")]
    pub from: u32,
    #[serde(with = "octal_mode")]
    pub to: u32,
}

/// Ownership as `user:group`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct OwnerChange {
    pub from: String,
    pub to: String,
}

/// A managed path changed by someone other than Shoal since the current generation was applied.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Drift {
    pub path: PathBuf,
    #[serde(flatten)]
    pub kind: DriftKind,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(tag = "drift", rename_all = "snake_case")]
pub enum DriftKind {
    Removed,
    /// Replaced by something that is not a regular file.
    Replaced {
        by: OtherKind,
    },
    /// Still a regular file, but its content, mode or owner is not what was declared.
    Edited {
        content: bool,
        mode: Option<ModeChange>,
        owner: Option<OwnerChange>,
    },
}

impl Plan {
    /// Nothing to write and nothing drifted: the disk already is the desired state. (Whether a
    /// new generation is recorded anyway, e.g. for a new commit, is the caller's decision.)
    pub fn is_empty(&self) -> bool {
        self.actions.is_empty() && self.drift.is_empty()
    }
}

/// Every path a plan over `desired` and `current` looks at: what `apply::observe` must snapshot.
pub fn observed_paths(desired: &DesiredState, current: &Manifest) -> BTreeSet<PathBuf> {
    desired
        .files
        .keys()
        .chain(current.files.keys())
        .cloned()
        .collect()
}

/// The plan that takes the disk from its current state to `desired`.
pub fn plan(desired: &DesiredState, current: &Manifest, disk: &DiskSnapshot) -> Plan {
    let drift = current
        .files
        .iter()
        .filter_map(|(path, declared)| drift_of(path, declared, disk))
        .collect();
    let mut actions = Vec::new();
    for path in observed_paths(desired, current) {
        let action = match (desired.files.get(&path), current.get(&path)) {
            (Some(want), None) => Some(create(path, want, disk)),
            (Some(want), Some(declared)) => change(path, want, declared, disk),
            (None, Some(_)) => Some(Action::Remove { path }),
            // Cannot happen: every observed path comes from one of the two maps.
            (None, None) => None,
        };
        actions.extend(action);
    }
    let stamps = actions
        .iter()
        .filter_map(|action: &Action| {
            let path = action.path();
            Some((path.to_owned(), disk.stamps.get(path)?.clone()))
        })
        .collect();
    Plan {
        actions,
        drift,
        stamps,
    }
}

fn create(path: PathBuf, want: &DesiredFile, disk: &DiskSnapshot) -> Action {
    let existing = match disk.entry(&path) {
        DiskEntry::Missing => None,
        DiskEntry::File(_) => Some(Existing::UnmanagedFile),
        DiskEntry::Other(OtherKind::Directory) => Some(Existing::Directory),
        DiskEntry::Other(OtherKind::Symlink) => Some(Existing::Symlink),
        DiskEntry::Other(OtherKind::Special) => Some(Existing::Special),
        DiskEntry::Other(OtherKind::HardLinked) => Some(Existing::HardLinked),
    };
    Action::Create {
        path,
        mode: want.mode,
        owner: want.owner.clone(),
        group: want.group.clone(),
        existing,
    }
}

fn change(
    path: PathBuf,
    want: &DesiredFile,
    declared: &ManifestEntry,
    disk: &DiskSnapshot,
) -> Option<Action> {
    let wanted_owner = format!("{}:{}", want.owner, want.group);
    let (content, mode, owner) = match disk.entry(&path) {
        DiskEntry::File(found) => {
            let owner_differs = disk.accounts.uid(&want.owner) != Some(found.uid)
                || disk.accounts.gid(&want.group) != Some(found.gid);
            (
                found.sha256 != sha256_hex(&want.content),
                (found.mode != want.mode).then_some(ModeChange {
                    from: found.mode,
                    to: want.mode,
                }),
                owner_differs.then(|| OwnerChange {
                    from: disk.accounts.describe(found.uid, found.gid),
                    to: wanted_owner,
                }),
            )
        }
        // Gone or replaced: the content must be written again; metadata changes are
        // reported against what the current generation declared.
        DiskEntry::Missing | DiskEntry::Other(_) => {
            let declared_owner = format!("{}:{}", declared.owner, declared.group);
            (
                true,
                (declared.mode != want.mode).then_some(ModeChange {
                    from: declared.mode,
                    to: want.mode,
                }),
                (declared_owner != wanted_owner).then_some(OwnerChange {
                    from: declared_owner,
                    to: wanted_owner,
                }),
            )
        }
    };
    (content || mode.is_some() || owner.is_some()).then_some(Action::Change {
        path,
        content,
        mode,
        owner,
    })
}

fn drift_of(path: &Path, declared: &ManifestEntry, disk: &DiskSnapshot) -> Option<Drift> {
    let kind = match disk.entry(path) {
        DiskEntry::Missing => DriftKind::Removed,
        DiskEntry::Other(by) => DriftKind::Replaced { by: *by },
        DiskEntry::File(found) => {
            let content = found.sha256 != declared.sha256;
            let mode = (found.mode != declared.mode).then_some(ModeChange {
                from: declared.mode,
                to: found.mode,
            });
            // A name that no longer resolves cannot match any owner on disk: that is drift too.
            let owner_differs = disk.accounts.uid(&declared.owner) != Some(found.uid)
                || disk.accounts.gid(&declared.group) != Some(found.gid);
            let owner = owner_differs.then(|| OwnerChange {
                from: format!("{}:{}", declared.owner, declared.group),
                to: disk.accounts.describe(found.uid, found.gid),
            });
            if !content && mode.is_none() && owner.is_none() {
                return None;
            }
            DriftKind::Edited {
                content,
                mode,
                owner,
            }
        }
    };
    Some(Drift {
        path: path.to_owned(),
        kind,
    })
}

impl fmt::Display for Plan {
    /// One line per action, then one per drifted path; `nothing to do` when empty.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.is_empty() {
            return writeln!(f, "nothing to do");
        }
        for action in &self.actions {
            writeln!(f, "{action}")?;
        }
        for drift in &self.drift {
            writeln!(f, "{drift}")?;
        }
        Ok(())
    }
}

impl fmt::Display for Action {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Action::Create {
                path,
                mode,
                owner,
                group,
                existing,
            } => {
                write!(f, "create {} ({mode:04o} {owner}:{group})", path.display())?;
                match existing {
                    None => Ok(()),
                    Some(Existing::UnmanagedFile) => {
                        f.write_str(", taking over the file already there (saved for rollback)")
                    }
                    Some(Existing::Directory) => f.write_str(": a directory is in the way"),
                    Some(Existing::Symlink) => f.write_str(": a symbolic link is in the way"),
                    Some(Existing::Special) => f.write_str(": a special file is in the way"),
                    Some(Existing::HardLinked) => {
                        f.write_str(": a file with more than one hard link is in the way")
                    }
                }
            }
            Action::Change {
                path,
                content,
                mode,
                owner,
            } => {
                write!(f, "change {}: ", path.display())?;
                write_changes(f, *content, mode.as_ref(), owner.as_ref())
            }
            Action::Remove { path } => write!(f, "remove {}", path.display()),
        }
    }
}

impl fmt::Display for Drift {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let path = self.path.display();
        match &self.kind {
            DriftKind::Removed => write!(f, "drift: {path} removed by hand"),
            DriftKind::Replaced { by } => write!(f, "drift: {path} replaced by a {by} by hand"),
            DriftKind::Edited {
                content: true,
                mode: None,
                owner: None,
            } => write!(f, "drift: {path} edited by hand"),
            DriftKind::Edited {
                content,
                mode,
                owner,
            } => {
                write!(f, "drift: {path} edited by hand: ")?;
                write_changes(f, *content, mode.as_ref(), owner.as_ref())
            }
        }
    }
}

/// `content, mode 0600→0644, owner root:root→app:app`, leaving out what did not change.
fn write_changes(
    f: &mut fmt::Formatter<'_>,
    content: bool,
    mode: Option<&ModeChange>,
    owner: Option<&OwnerChange>,
) -> fmt::Result {
    let mut parts = Vec::new();
    if content {
        parts.push("content".to_owned());
    }
    if let Some(ModeChange { from, to }) = mode {
        parts.push(format!("mode {from:04o}→{to:04o}"));
    }
    if let Some(OwnerChange { from, to }) = owner {
        parts.push(format!("owner {from}→{to}"));
    }
    f.write_str(&parts.join(", "))
}
