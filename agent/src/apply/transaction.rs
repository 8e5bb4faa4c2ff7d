//! The journaled transaction that moves managed paths from one generation to another, and its
//! rollback. Owns the order of every write and why that order is crash-safe; the primitives it
//! calls are in `file`, `blobs` and `journal`. Must not be bypassed: no other code writes a
//! managed path.

use std::borrow::Cow;
use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

use super::accounts;
use super::blobs::BlobStore;
use super::error::{ApplyError, Fault};
use super::failpoint::fail_point;
use super::file::{DeviceRoot, Dir, DirId, Flush, Located, Parent};
use super::journal::{Before, Journal, JournalEntry};
use super::preexisting::Preexisting;
use super::Applied;
use crate::plan::{DiskEntry, DiskFile, FileStamp, OtherKind};
use crate::state::ApplyArea;

/// What one path should become.
pub(crate) enum Target {
    /// A declared file: content by hash, metadata as declared (names resolved on the device).
    File {
        sha256: String,
        mode: u32,
        owner: String,
        group: String,
    },
    /// No longer declared: the file that was there before Shoal, if one was saved; else nothing.
    Unmanaged,
}

pub(crate) struct Change {
    /// Device path (without `root`).
    pub path: PathBuf,
    pub target: Target,
    /// Whether the generation we move away from declares the path. When it does not, a file
    /// already there is someone else's: it is saved as preexisting before being replaced.
    pub managed_before: bool,
}

pub(crate) struct Transaction<'a> {
    pub root: &'a Path,
    pub area: ApplyArea<'a>,
    pub from: u64,
    pub to: u64,
    pub changes: Vec<Change>,
    /// What observe saw at these paths (`Plan::stamps`): a file that still matches its stamp
    /// is not read again.
    pub stamps: &'a BTreeMap<PathBuf, FileStamp>,
    /// Content by hash that may not be in the blob store yet (a new generation's files); it is
    /// stored before anything refers to it. Everything else must already be in the store.
    pub contents: BTreeMap<String, &'a [u8]>,
}

/// One path that needs work, in journal order.
struct Step {
    path: PathBuf,
    /// `None`: remove the file.
    after: Option<DiskFile>,
    /// The file written is the one that was there before Shoal took the path over.
    restores_preexisting: bool,
}

struct Prepared {
    steps: Vec<Step>,
    journal: Journal,
    preexisting: Preexisting,
    preexisting_changed: bool,
}

impl Transaction<'_> {
    /// Runs the transaction. The crash order, and why each point leaves the less-bad state:
    ///
    /// 0. Look (read-only): resolve owners, find what is in the way, save every file about to
    ///    be overwritten or removed into the blob store (a file that still matches what
    ///    observe saw is not read again: `Located::inspect_knowing`). A crash here changes no
    ///    managed path.
    /// 1. Store the new generation's blobs, all of them (and step 0's copies) under temp
    ///    names, made durable by one `syncfs`, then renamed to their hashes and the blob
    ///    directory fsynced (`BlobStore::sync`); then record takeovers in `preexisting.json`.
    ///    Blobs are write-once and complete under their final name; the records are true
    ///    whatever happens next (see `preexisting`). Crash: temp files (swept by `recover`)
    ///    or unreferenced blobs, device untouched at N-1.
    /// 2. Put the journal in place durably (intent) BEFORE the first managed write: its
    ///    content was written in step 1 and made durable with the blobs (or fsynced when no
    ///    blob was new), so this is a rename and an fsync of the state directory. From here
    ///    on, a crash anywhere is undone by `recover`, which needs only the journal and the
    ///    blobs, both already on disk. Crash before the journal is in place: no managed write
    ///    has happened yet, so no journal is needed (its temp file is swept).
    /// 3. Side effects: create missing directories; then every new content into a temp file
    ///    beside its target (write → chown → chmod, no flush each); one `syncfs` per file
    ///    system written to, so every temp file's data and inode are on disk; then per path
    ///    rename (or unlink); then fsync every touched directory once. No rename happens before
    ///    the `syncfs`, so a name never points at unwritten data (what a per-file fsync would
    ///    ensure, at one flush per file). Each rename is atomic, so a path is always a whole
    ///    old or whole new file; the journal
    ///    lists every path, so recovery finds the mixed set and puts it back to N-1. The
    ///    directory fsyncs are batched because no intermediate state needs to be durable
    ///    (recovery undoes it), only the final one, before we return. On any error here the
    ///    transaction rolls itself back from the journal before returning.
    /// 4. Return. The caller records generation N (result) and then calls `journal_done`.
    ///    Crash before the record: recovery rolls back to N-1 (the apply is not trusted until
    ///    recorded, e.g. health not yet checked). Crash after the record, before the journal's
    ///    removal is durable: recovery sees `committed(N)` and only removes the journal.
    pub(crate) fn run(self) -> Result<Applied, ApplyError> {
        let from = self.from;
        if let Some(pending) = Journal::read(self.area)? {
            return Err(ApplyError::Unfinished {
                journal: self.area.journal(),
                from: pending.from,
                to: pending.to,
            });
        }
        let fail = |fault| ApplyError::failed(fault, from);

        // Steps 0 and 1; the journal's content is written now, beside the blobs, so that the
        // blobs' one syncfs makes it durable too (it is only put in place in step 2).
        let mut store = BlobStore::open(self.area).map_err(fail)?;
        let prepared = self.prepare(&mut store).map_err(fail)?;
        for (sha256, content) in &self.contents {
            store.put(sha256, content).map_err(fail)?;
        }
        let journal = match prepared.steps.is_empty() {
            true => None,
            false => {
                let dir = Dir::open_trusted(self.area.dir(), "open the state directory")
                    .map_err(|e| fail(Fault::Io(e).about_state()))?;
                // The blobs' syncfs covers the journal only on the same file system.
                let flush = match store.will_sync_filesystem_of(&dir) {
                    true => Flush::Batch,
                    false => Flush::Each,
                };
                let staged = prepared.journal.stage(self.area, dir, flush);
                Some(staged.map_err(fail)?)
            }
        };
        store.sync().map_err(fail)?;
        if prepared.preexisting_changed {
            prepared.preexisting.save(self.area).map_err(fail)?;
        }
        fail_point!("apply_after_blobs");
        let Some(journal) = journal else {
            return Ok(self.applied(&prepared));
        };

        // Step 2.
        journal.publish().map_err(fail)?;
        fail_point!("apply_after_journal");

        // Step 3, undone from the journal on any error.
        if let Err(fault) = self.execute(&store, &prepared) {
            return Err(match roll_back(self.root, self.area, &prepared.journal) {
                Ok(_) => ApplyError::failed(fault, from),
                Err(rollback) => ApplyError::RollbackFailed {
                    fault: Box::new(fault),
                    rollback: Box::new(rollback),
                    from,
                    journal: self.area.journal(),
                },
            });
        }

        // Step 4.
        Ok(self.applied(&prepared))
    }

    /// Step 0: decides the steps and the journal; writes only blobs of files about to be
    /// replaced (and of files taken over), which nothing refers to yet.
    fn prepare(&self, store: &mut BlobStore) -> Result<Prepared, Fault> {
        let device = DeviceRoot::open(self.root, self.area.dir())?;
        let accounts = accounts::load(self.root)?;
        let mut preexisting = Preexisting::load(self.area)?;
        let mut preexisting_changed = false;
        let mut journal = Journal::new(self.from, self.to);
        let mut steps = Vec::new();
        let mut created = BTreeSet::new();

        for change in &self.changes {
            let mut missing_parent = None;
            let path = &change.path;
            let real = device.real(path);
            let (located, found) = match device.locate(path)? {
                Parent::Found(located) => {
                    let found = located.inspect_knowing(self.stamps.get(path))?;
                    (Some(located), found)
                }
                parent => {
                    missing_parent = Some(parent);
                    (None, DiskEntry::Missing)
                }
            };
            let (after, restores_preexisting) = match &change.target {
                Target::File {
                    sha256,
                    mode,
                    owner,
                    group,
                } => {
                    let uid = accounts.uid(owner).ok_or_else(|| Fault::UnknownUser {
                        path: path.clone(),
                        user: owner.clone(),
                        sources: accounts::sources(self.root, "passwd"),
                    })?;
                    let gid = accounts.gid(group).ok_or_else(|| Fault::UnknownGroup {
                        path: path.clone(),
                        group: group.clone(),
                        sources: accounts::sources(self.root, "group"),
                    })?;
                    if !self.contents.contains_key(sha256) && !store.contains(sha256)? {
                        return Err(Fault::MissingBlob {
                            path: path.clone(),
                            blob: store.path(sha256)?,
                            to: self.to,
                        });
                    }
                    let after = DiskFile {
                        sha256: sha256.clone(),
                        mode: mode & 0o7777,
                        uid,
                        gid,
                    };
                    (Some(after), false)
                }
                Target::Unmanaged => {
                    let saved = preexisting.get(path).cloned();
                    if let Some(saved) = &saved {
                        if !store.contains(&saved.sha256)? {
                            return Err(Fault::MissingBlob {
                                path: path.clone(),
                                blob: store.path(&saved.sha256)?,
                                to: self.to,
                            });
                        }
                    }
                    let restores = saved.is_some();
                    (saved, restores)
                }
            };

            let found_file = match &found {
                DiskEntry::Missing => None,
                DiskEntry::File(file) => Some(file),
                DiskEntry::Other(kind) => {
                    if after.is_none() {
                        // Not a file Shoal wrote: someone replaced it, and it is theirs now.
                        tracing::warn!(path = %path.display(), %kind, "not removing: it is no longer the file Shoal managed");
                        continue;
                    }
                    return Err(in_the_way(path, real, *kind, self.to));
                }
            };
            if after.is_some() {
                match missing_parent.take() {
                    None => {}
                    Some(Parent::Missing(missing)) => {
                        for dir in missing {
                            if created.insert(dir.clone()) {
                                journal.created_dirs.push(dir);
                            }
                        }
                    }
                    // Only a walk that stopped early is kept in `missing_parent`.
                    Some(Parent::Found(_)) => {}
                    Some(Parent::NotADirectory(parent)) => {
                        return Err(Fault::ParentNotADirectory {
                            path: path.clone(),
                            parent: device.real(&parent),
                            to: self.to,
                        })
                    }
                }
            }

            // A takeover: the file there now is the one to restore when Shoal lets go of the
            // path (or nothing, when nothing is there).
            if !change.managed_before && after.is_some() {
                if let (Some(saved), Some(located)) = (found_file, &located) {
                    store.put_copy_of(&saved.sha256, located)?;
                }
                preexisting_changed |= preexisting.record(path, found_file);
            }

            if found_file == after.as_ref() {
                continue;
            }
            let before = match (found_file, &located) {
                (None, _) | (_, None) => Before::Absent,
                (Some(saved), Some(located)) => {
                    store.put_copy_of(&saved.sha256, located)?;
                    if change.managed_before {
                        Before::Blob(saved.clone())
                    } else {
                        Before::Preexisting(saved.clone())
                    }
                }
            };
            journal.entries.push(JournalEntry {
                path: path.clone(),
                before,
            });
            steps.push(Step {
                path: path.clone(),
                after,
                restores_preexisting,
            });
        }
        Ok(Prepared {
            steps,
            journal,
            preexisting,
            preexisting_changed,
        })
    }

    /// Step 3: the only code that writes managed paths forward. Each path is walked again
    /// from `root` (directories were created since step 0), and everything that writes goes
    /// through the handle of the directory that walk opened.
    fn execute(&self, store: &BlobStore, prepared: &Prepared) -> Result<(), Fault> {
        let device = DeviceRoot::open(self.root, self.area.dir())?;
        let mut touched = TouchedDirs::default();
        for dir in &prepared.journal.created_dirs {
            let located = device.locate_existing(dir)?;
            located
                .create_dir()
                .map_err(|e| Fault::classify(e, dir, self.to))?;
            touched.add(located.into_dir())?;
            fail_point!("apply_after_mkdir");
        }
        // Every new file's content first, in temp files beside their targets, without a
        // flush each: one `syncfs` per file system then makes them all durable, so that no
        // rename below can publish a name whose data is not on disk. The targets are not
        // touched yet; a failure here leaves only temp files, which the rollback removes.
        let mut staged = Vec::with_capacity(prepared.steps.len());
        for step in &prepared.steps {
            let fault = |e| Fault::classify(e, &step.path, self.to);
            let located = device.locate_existing(&step.path)?;
            fail_point!("apply_after_resolve");
            if let Some(want) = &step.after {
                let content = match self.contents.get(&want.sha256) {
                    Some(content) => Cow::Borrowed(*content),
                    None => Cow::Owned(store.read(&want.sha256)?),
                };
                located
                    .write_temp(&content, want, Flush::Batch)
                    .map_err(fault)?;
                fail_point!("apply_after_temp_write");
            }
            staged.push((step, located));
        }
        let mut synced: Vec<DirId> = Vec::new();
        for (_, located) in staged.iter().filter(|(step, _)| step.after.is_some()) {
            let id = located.dir().id();
            if !synced.iter().any(|s| s.same_device(&id)) {
                located
                    .dir()
                    .sync_filesystem()
                    .map_err(|e| Fault::classify(e, &located.path, self.to))?;
                synced.push(id);
            }
        }
        fail_point!("apply_after_files_syncfs");
        // Then each path at once: a rename of complete data, or a removal, through the handle
        // of the directory the walk above checked.
        for (step, located) in staged {
            let fault = |e| Fault::classify(e, &step.path, self.to);
            match &step.after {
                Some(_) => {
                    located.rename_into_place().map_err(fault)?;
                    fail_point!("apply_after_rename");
                }
                None => {
                    located.remove_if_present().map_err(fault)?;
                    fail_point!("apply_after_remove");
                }
            }
            touched.add(located.into_dir())?;
        }
        touched.sync()?;
        fail_point!("apply_after_dir_sync");
        Ok(())
    }

    fn applied(&self, prepared: &Prepared) -> Applied {
        let mut applied = Applied {
            from: self.from,
            to: self.to,
            written: Vec::new(),
            removed: Vec::new(),
            restored: Vec::new(),
            created_dirs: prepared.journal.created_dirs.clone(),
        };
        for step in &prepared.steps {
            let list = match (&step.after, step.restores_preexisting) {
                (None, _) => &mut applied.removed,
                (Some(_), false) => &mut applied.written,
                (Some(_), true) => &mut applied.restored,
            };
            list.push(step.path.clone());
        }
        applied
    }
}

/// Puts every journal entry back to its `before` state (last entry first), removes the
/// directories the transaction created, makes that durable, and only then removes the
/// journal. Idempotent: entries already back are skipped, so a crash in the middle is
/// repaired by running it again, which is why it may use non-atomic shortcuts (see
/// `restore_file`). Returns how many paths it had to put back.
pub(crate) fn roll_back(
    root: &Path,
    area: ApplyArea<'_>,
    journal: &Journal,
) -> Result<usize, Fault> {
    let store = BlobStore::open(area)?;
    let device = DeviceRoot::open(root, area.dir())?;
    let mut restored = 0;
    let mut touched = TouchedDirs::default();
    for entry in journal.entries.iter().rev() {
        let located = match device.locate(&entry.path)? {
            Parent::Found(located) => located,
            // The directory is gone (or is no directory): no file of ours is there.
            _ if entry.before == Before::Absent => continue,
            _ => device.locate_existing(&entry.path)?,
        };
        located.remove_temp()?;
        let found = located.inspect()?;
        let worked = match (&entry.before, &found) {
            (Before::Absent, DiskEntry::Missing) => false,
            (Before::Absent, DiskEntry::File(_)) => {
                located
                    .remove_if_present()
                    .map_err(|e| Fault::classify(e, &entry.path, journal.from))?;
                true
            }
            (Before::Absent, DiskEntry::Other(kind)) => {
                // Shoal only ever writes regular files: this is not ours to remove.
                tracing::warn!(path = %entry.path.display(), %kind, "left in place by rollback: Shoal did not create it");
                false
            }
            (Before::Blob(want) | Before::Preexisting(want), found) => {
                if *found == DiskEntry::File(want.clone()) {
                    false
                } else {
                    restore_file(&store, &located, want, journal.from)?;
                    true
                }
            }
        };
        if worked {
            restored += 1;
            touched.add(located.into_dir())?;
            fail_point!("recover_after_entry");
        }
    }
    for dir in journal.created_dirs.iter().rev() {
        let Parent::Found(located) = device.locate(dir)? else {
            continue;
        };
        if !located.remove_dir_if_empty()? {
            tracing::warn!(dir = %located.real.display(), "left in place by rollback: something else was put in it");
        }
        touched.add(located.into_dir())?;
    }
    touched.sync()?;
    fail_point!("recover_before_journal_removal");
    Journal::remove(area)?;
    Ok(restored)
}

/// The directories a transaction renamed or unlinked in, by identity, to fsync once each at the
/// end (no intermediate state needs to be durable: recovery undoes it). Bounded, so a
/// repository spread over thousands of directories cannot exhaust file descriptors: when full,
/// the batch so far is synced early.
#[derive(Default)]
struct TouchedDirs {
    dirs: BTreeMap<DirId, Dir>,
}

impl TouchedDirs {
    const MAX_OPEN: usize = 64;

    fn add(&mut self, dir: Dir) -> Result<(), Fault> {
        if self.dirs.len() >= Self::MAX_OPEN {
            self.sync()?;
        }
        self.dirs.insert(dir.id(), dir);
        Ok(())
    }

    fn sync(&mut self) -> Result<(), Fault> {
        for dir in std::mem::take(&mut self.dirs).into_values() {
            dir.sync()?;
        }
        Ok(())
    }
}

/// Writes a saved file back (atomically when there is room). On a full disk — often full
/// because of the apply being undone — the current file is removed first to make room: not
/// atomic, but this only runs while the journal still lists the path, so a crash in between
/// is repaired by the next recovery.
fn restore_file(
    store: &BlobStore,
    located: &Located,
    want: &DiskFile,
    generation: u64,
) -> Result<(), Fault> {
    let content = store.read(&want.sha256)?;
    let fault = |e| Fault::classify(e, &located.path, generation);
    match located
        .write_temp(&content, want, Flush::Each)
        .map_err(fault)
    {
        Ok(()) => {}
        Err(full) if full.is_no_space() => {
            located.remove_if_present().map_err(fault)?;
            located
                .write_temp(&content, want, Flush::Each)
                .map_err(fault)?;
        }
        Err(other) => return Err(other),
    }
    located.rename_into_place().map_err(fault)
}

fn in_the_way(path: &Path, real: PathBuf, kind: OtherKind, to: u64) -> Fault {
    match kind {
        OtherKind::Directory => Fault::DirectoryInTheWay {
            path: path.to_owned(),
            real,
            to,
        },
        kind => Fault::NotAFile {
            path: path.to_owned(),
            real,
            kind,
            to,
        },
    }
}
