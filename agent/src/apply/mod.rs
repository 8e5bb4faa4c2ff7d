//! Apply is the only module that writes managed paths (always under the device's `root`): it
//! moves the disk from one generation to another as a journaled transaction, keeps every
//! generation's contents in a blob store, and after a crash puts the device back at exactly one
//! generation. It must not decide *what* the files should be (render and plan do) nor record
//! generations (the state module does, between [`apply`] and [`journal_done`]).
//!
//! On disk, under `state_dir`:
//! - `blobs/`: write-once file contents, one pack file per transaction (0600, directory 0700).
//! - `journal.json`: present only while a transaction is unfinished; see [`Journal`].
//! - `preexisting.json`: the files that were at a path before Shoal took it over.
//!
//! The caller's side of the crash order:
//! ```text
//! recover(root, state_dir, |gen| recorded(gen))?;      // at start, before anything else
//! let applied = apply(&plan, &desired, root, state_dir, n - 1, n)?;
//! // health checks; on failure: undo(root, state_dir) and record the commit as bad
//! state.commit_generation(n);                          // the commit point
//! journal_done(area)?;
//! ```

mod accounts;
mod blobs;
mod error;
pub mod failpoint;
mod file;
mod journal;
mod preexisting;
#[cfg(test)]
mod tests;
mod transaction;

use std::collections::{BTreeMap, BTreeSet};
use std::fmt;
use std::path::{Path, PathBuf};

pub use error::{ApplyError, Fault};
pub use journal::{Before, Journal, JournalEntry};

use self::blobs::BlobStore;
use self::failpoint::fail_point;
use self::preexisting::Preexisting;
use self::transaction::{Change, Target, Transaction};
use crate::plan::{sha256_hex, Action, DiskEntry, DiskSnapshot, Manifest, Plan};
use crate::render::DesiredState;
use crate::state::ApplyArea;

/// What a successful [`apply`] or [`restore`] did. The journal stays until [`journal_done`].
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Applied {
    pub from: u64,
    pub to: u64,
    /// Files written (created or replaced), device paths.
    pub written: Vec<PathBuf>,
    /// Files removed.
    pub removed: Vec<PathBuf>,
    /// Files no longer declared that were put back as they were before Shoal managed them.
    pub restored: Vec<PathBuf>,
    /// Directories created (0755) for new files.
    pub created_dirs: Vec<PathBuf>,
}

/// What [`recover`] found and did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Recovery {
    /// Generation `to` was recorded: the transaction had finished; only the journal was left.
    Committed { from: u64, to: u64 },
    /// Generation `to` was not recorded: `restored` paths were put back to generation `from`.
    RolledBack { from: u64, to: u64, restored: usize },
}

impl fmt::Display for Recovery {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Recovery::Committed { from, to } => write!(
                f,
                "the apply of generation {to} (from {from}) had finished and was recorded; removed its journal"
            ),
            Recovery::RolledBack { from, to, restored } => write!(
                f,
                "the apply of generation {to} was interrupted; rolled {restored} path(s) back to generation {from}"
            ),
        }
    }
}

/// Looks at `paths` (device paths) under `root` without changing anything: what
/// [`crate::plan::plan`] compares against. Pass [`crate::plan::observed_paths`]. Walks each
/// path like apply does, so a symbolic link in a parent (say one a local user swapped in
/// since the last sync) is refused here, before anything is planned.
pub fn observe<P: AsRef<Path>>(
    root: &Path,
    area: ApplyArea<'_>,
    paths: impl IntoIterator<Item = P>,
) -> Result<DiskSnapshot, ApplyError> {
    let observe_fault = |fault: Fault| ApplyError::Observe(Box::new(fault));
    let mut snapshot = DiskSnapshot {
        accounts: accounts::load(root).map_err(|e| observe_fault(e.into()))?,
        ..Default::default()
    };
    let device = file::DeviceRoot::open(root, area.dir()).map_err(observe_fault)?;
    for path in paths {
        let path = path.as_ref();
        let entry = match device.locate(path).map_err(observe_fault)? {
            file::Parent::Found(located) => {
                let (entry, stamp) = located.observe().map_err(|e| observe_fault(e.into()))?;
                if let Some(stamp) = stamp {
                    snapshot.stamps.insert(path.to_owned(), stamp);
                }
                entry
            }
            // A parent that is missing or is a file: nothing is at the path itself.
            file::Parent::Missing(_) | file::Parent::NotADirectory(_) => DiskEntry::Missing,
        };
        snapshot.files.insert(path.to_owned(), entry);
    }
    Ok(snapshot)
}

/// Applies `plan` (made from `desired` against generation `from_gen`) so the disk becomes
/// generation `to_gen`; the crash order is documented step by step in `transaction.rs`. On error
/// the device is left exactly at `from_gen` (or, if even the rollback failed, the journal is
/// kept for [`recover`]). On success the journal stays until the caller has recorded
/// `to_gen` and calls [`journal_done`].
pub fn apply(
    plan: &Plan,
    desired: &DesiredState,
    root: &Path,
    area: ApplyArea<'_>,
    from_gen: u64,
    to_gen: u64,
) -> Result<Applied, ApplyError> {
    let mismatch = |path: &Path| {
        ApplyError::failed(
            Fault::PlanMismatch {
                path: path.to_owned(),
            },
            from_gen,
        )
    };
    // Every declared file's content goes to the blob store, not only the changed ones: a file
    // the plan skips (the disk already matched) must still be restorable with this generation.
    let hashes: BTreeMap<&Path, String> = desired
        .files
        .iter()
        .map(|(path, file)| (path.as_path(), sha256_hex(&file.content)))
        .collect();
    let mut changes = Vec::with_capacity(plan.actions.len());
    for action in &plan.actions {
        let path = action.path();
        let change = match action {
            Action::Create { .. } | Action::Change { .. } => {
                let (Some(file), Some(sha256)) = (desired.files.get(path), hashes.get(path)) else {
                    return Err(mismatch(path));
                };
                Change {
                    path: path.to_owned(),
                    target: Target::File {
                        sha256: sha256.clone(),
                        mode: file.mode,
                        owner: file.owner.clone(),
                        group: file.group.clone(),
                    },
                    managed_before: matches!(action, Action::Change { .. }),
                }
            }
            Action::Remove { .. } => {
                if desired.files.contains_key(path) {
                    return Err(mismatch(path));
                }
                Change {
                    path: path.to_owned(),
                    target: Target::Unmanaged,
                    managed_before: true,
                }
            }
        };
        changes.push(change);
    }
    Transaction {
        root,
        area,
        from: from_gen,
        to: to_gen,
        changes,
        stamps: &plan.stamps,
        contents: desired
            .files
            .iter()
            .filter_map(|(path, file)| {
                Some((hashes.get(path.as_path())?.clone(), file.content.as_slice()))
            })
            .collect(),
    }
    .run()
}

/// Switches the disk from generation `from_gen` (declaring `from`) to generation `to_gen`
/// (declaring `to`) using only the blob store: `shoal-agent rollback --to N`. The same
/// journaled transaction as [`apply`] (and the same caller protocol: record, then
/// [`journal_done`]); it also repairs drift, since every path of `to` is compared with the
/// disk. `to` may be the empty manifest (before the first generation): files Shoal took over
/// come back as they were.
pub fn restore(
    from: &Manifest,
    to: &Manifest,
    root: &Path,
    area: ApplyArea<'_>,
    from_gen: u64,
    to_gen: u64,
) -> Result<Applied, ApplyError> {
    let mut changes: Vec<Change> = to
        .files
        .iter()
        .map(|(path, entry)| Change {
            path: path.clone(),
            target: Target::File {
                sha256: entry.sha256.clone(),
                mode: entry.mode,
                owner: entry.owner.clone(),
                group: entry.group.clone(),
            },
            managed_before: from.contains(path),
        })
        .collect();
    changes.extend(
        from.files
            .keys()
            .filter(|path| !to.contains(path))
            .map(|path| Change {
                path: path.clone(),
                target: Target::Unmanaged,
                managed_before: true,
            }),
    );
    changes.sort_by(|a, b| a.path.cmp(&b.path));
    Transaction {
        root,
        area,
        from: from_gen,
        to: to_gen,
        changes,
        stamps: &BTreeMap::new(),
        contents: BTreeMap::new(),
    }
    .run()
}

/// Ends a transaction after the caller durably recorded its generation: removes the journal.
/// Already removed is fine. The removal is not fsynced here (the next write in the state
/// directory makes it durable): a journal a power cut brings back names a recorded
/// generation, which `recover` only removes again.
pub fn journal_done(area: ApplyArea<'_>) -> Result<(), ApplyError> {
    fail_point!("journal_done");
    Journal::remove_lazily(area)
        .map(drop)
        .map_err(ApplyError::JournalNotRemoved)
}

/// Run at every start, before any sync: resolves an unfinished transaction. If `committed`
/// says its target generation was recorded, the disk is already that generation and only the
/// journal is removed; otherwise every journaled path is put back, so the device is exactly at
/// the generation it came from. Idempotent: a crash during recovery is repaired by the next.
/// `Ok(None)`: there was nothing to recover.
pub fn recover(
    root: &Path,
    area: ApplyArea<'_>,
    committed: impl Fn(u64) -> bool,
) -> Result<Option<Recovery>, ApplyError> {
    sweep_temp_files(area);
    let Some(journal) = Journal::read(area)? else {
        return Ok(None);
    };
    if committed(journal.to) {
        Journal::remove(area).map_err(ApplyError::JournalNotRemoved)?;
        return Ok(Some(Recovery::Committed {
            from: journal.from,
            to: journal.to,
        }));
    }
    match transaction::roll_back(root, area, &journal) {
        Ok(restored) => {
            let recovery = Recovery::RolledBack {
                from: journal.from,
                to: journal.to,
                restored,
            };
            tracing::warn!(%recovery, "recovered");
            Ok(Some(recovery))
        }
        Err(fault) => Err(ApplyError::RecoveryFailed {
            fault: Box::new(fault),
            from: journal.from,
            to: journal.to,
            journal: area.journal(),
        }),
    }
}

/// Rolls back a finished but not yet recorded apply (e.g. its health check failed): the same
/// as [`recover`] with nothing committed.
pub fn undo(root: &Path, area: ApplyArea<'_>) -> Result<Option<Recovery>, ApplyError> {
    recover(root, area, |_| false)
}

/// The unfinished transaction, if any (for `status`).
pub fn pending(journal: &Path) -> Result<Option<Journal>, ApplyError> {
    Journal::read_at(journal.to_owned())
}

/// Deletes blobs no kept generation, saved pre-Shoal file or pending journal refers to; returns
/// how many. For the state module after it prunes generations beyond `keep_generations`.
pub fn prune_blobs(area: ApplyArea<'_>, keep: &[&Manifest]) -> Result<usize, ApplyError> {
    if let Some(pending) = Journal::read(area)? {
        return Err(ApplyError::Unfinished {
            journal: area.journal(),
            from: pending.from,
            to: pending.to,
        });
    }
    let fail = |fault| ApplyError::Prune(Box::new(fault));
    let preexisting = Preexisting::load(area).map_err(fail)?;
    let live: BTreeSet<&str> = keep
        .iter()
        .flat_map(|manifest| manifest.files.values().map(|e| e.sha256.as_str()))
        .chain(preexisting.hashes())
        .collect();
    let mut store = BlobStore::open(area).map_err(fail)?;
    store.prune(&live).map_err(fail)
}

/// Temp files a crash can leave in `state_dir` (`paths::write_atomic` of the journal and of
/// `preexisting.json`, half-written blobs). Untidy, never harmful: failures are only logged.
fn sweep_temp_files(area: ApplyArea<'_>) {
    if let Ok(entries) = std::fs::read_dir(area.dir()) {
        for entry in entries.flatten() {
            let name = entry.file_name();
            let name = name.to_string_lossy();
            let ours = [journal::TEMP_PREFIX, ".preexisting.json.shoal-tmp."]
                .iter()
                .any(|prefix| name.starts_with(prefix));
            if ours {
                if let Err(e) = std::fs::remove_file(entry.path()) {
                    tracing::warn!(path = %entry.path().display(), error = %e, "could not remove a leftover temp file");
                }
            }
        }
    }
    if area.blobs().is_dir() {
        if let Err(e) = BlobStore::sweep(area) {
            tracing::warn!(error = %e, "could not sweep the blob store");
        }
    }
}
