//! The mirror's durable writes, in crash order: what a fetch brought is on disk before
//! `refs/shoal/fetched` moves to it, a pack stays marked unaccepted (its `.keep`) until `verify`
//! accepts the tip and is removed whole when it does not, and a damaged mirror is set aside whole
//! before a new one is built in its place. Writes nothing outside the mirror and its `.damaged`
//! sibling.
//!
//! gix 0.90 syncs nothing itself: a pack and its index are written to temp files and renamed
//! into place (gix-pack `bundle/write/mod.rs`, `persist` at lines 342 and 348; gix-tempfile
//! `forksafe.rs:192` → `tempfile`'s plain `rename`), loose objects likewise (gix-odb
//! `store_impls/loose/write.rs:167`), and refs through lock files renamed over the ref
//! (gix-lock `commit.rs:47`/`65`); no `fsync`, no `core.fsync` setting. On ext4 with delayed
//! allocation a renamed but unsynced file comes back empty after a power cut while the rename,
//! and a ref written after it, survive: a ref pointing into an empty pack.

use std::fs::File;
use std::io::Write;
use std::os::fd::AsRawFd;
use std::path::{Path, PathBuf};

use gix::ObjectId;

use super::FETCHED_REF;
use crate::paths::{self, PathError};

/// Flushes everything written on the mirror's file system (`syncfs(2)`): the pack, its index,
/// anything else gix wrote (a fresh mirror's HEAD and config, its directories), whatever their
/// names. One call instead of tracking each file gix touched, and only on a fetch that moves the
/// ref; a no-op sync never gets here.
pub fn sync_file_system(mirror: &Path) -> Result<(), PathError> {
    let dir = File::open(mirror).map_err(|e| PathError::new("open", mirror, e))?;
    // SAFETY: syncfs(2) takes a file descriptor and touches no memory of ours; `dir` is an open
    // descriptor for the whole call.
    let rc = unsafe { libc::syncfs(dir.as_raw_fd()) };
    if rc != 0 {
        return Err(PathError::new(
            "syncfs the file system of",
            mirror,
            std::io::Error::last_os_error(),
        ));
    }
    Ok(())
}

/// Points `refs/shoal/fetched` at `tip` as a loose ref, atomically and durably: the new content
/// goes to a temp file in the mirror's root (not under `refs/`, where a leftover would be read as
/// a ref), is fsynced, renamed over the ref, and the ref's directory is fsynced. Call only
/// after [`sync_file_system`]: the ref must never reach the disk before the objects it names.
pub fn record_tip(mirror: &Path, tip: ObjectId) -> Result<(), PathError> {
    let target = mirror.join(FETCHED_REF);
    let ref_dir = paths_parent(&target);
    // A `refs/shoal` this creates is made durable in `refs/` here, before the ref is written.
    paths::create_dir_all(&ref_dir)?;
    let tmp = mirror.join("shoal-fetched.tmp");
    let written = (|| {
        let mut file = File::create(&tmp).map_err(|e| PathError::new("create", &tmp, e))?;
        file.write_all(format!("{tip}\n").as_bytes())
            .map_err(|e| PathError::new("write", &tmp, e))?;
        file.sync_all()
            .map_err(|e| PathError::new("fsync", &tmp, e))?;
        std::fs::rename(&tmp, &target).map_err(|e| PathError::new("rename into place", &target, e))
    })();
    if written.is_err() {
        // Best effort: a leftover temp file is not a ref and is overwritten next time.
        let _ = std::fs::remove_file(&tmp);
    }
    written?;
    paths::sync_dir(&ref_dir)
}

/// The mirror's pack directory.
fn pack_dir(mirror: &Path) -> PathBuf {
    mirror.join("objects").join("pack")
}

/// The `.keep` files in the pack directory: one per pack a fetch wrote that `verify` has not
/// accepted yet (gix writes it before the pack and its index are renamed into place, and never
/// removes it here: it removes it only when it writes a ref itself). An empty list when the
/// directory does not exist yet.
fn keep_files(pack_dir: &Path) -> Result<Vec<PathBuf>, PathError> {
    let entries = match std::fs::read_dir(pack_dir) {
        Ok(entries) => entries,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(e) => return Err(PathError::new("list", pack_dir, e)),
    };
    let mut keeps = Vec::new();
    for entry in entries {
        let path = entry
            .map_err(|e| PathError::new("list", pack_dir, e))?
            .path();
        let is_keep = path
            .file_name()
            .and_then(|n| n.to_str())
            .is_some_and(|n| n.starts_with("pack-") && n.ends_with(".keep"));
        if is_keep {
            keeps.push(path);
        }
    }
    Ok(keeps)
}

fn remove_if_present(path: &Path) -> Result<(), PathError> {
    match std::fs::remove_file(path) {
        Ok(()) => Ok(()),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
        Err(e) => Err(PathError::new("remove", path, e)),
    }
}

/// Removes every pack no accepted tip needs: each pack still marked by its `.keep` (the index
/// first, then the pack, the `.keep` last, so a crash half-way leaves the mark and the next call
/// finishes), and the temp files of a transfer that was killed (gix's `.tmp*` in the pack
/// directory). Returns the packs removed.
///
/// Called when the mirror is opened (what a crash between a fetch and `verify`'s verdict left)
/// and when `verify` refuses a tip or a fetch is stopped. Safe because only the agent holding
/// the state directory's lock fetches, and an accepted pack has lost its `.keep` before the ref
/// names it ([`release_packs`]). Writes nothing when there is nothing to remove.
pub fn remove_unaccepted(mirror: &Path) -> Result<Vec<PathBuf>, PathError> {
    let dir = pack_dir(mirror);
    let keeps = keep_files(&dir)?;
    for keep in &keeps {
        remove_if_present(&keep.with_extension("idx"))?;
        remove_if_present(&keep.with_extension("pack"))?;
        remove_if_present(keep)?;
    }
    if let Ok(entries) = std::fs::read_dir(&dir) {
        for entry in entries.flatten() {
            let is_temp = entry
                .file_name()
                .to_str()
                .is_some_and(|n| n.starts_with(".tmp"));
            if is_temp {
                remove_if_present(&entry.path())?;
            }
        }
    }
    Ok(keeps
        .into_iter()
        .map(|keep| keep.with_extension("pack"))
        .collect())
}

/// Marks every pack the fetch wrote as accepted: removes the `.keep` files and fsyncs the pack
/// directory, so that no crash can bring a `.keep` back once the ref names the pack (the next
/// open would take the pack for an unaccepted one and remove it). Call after
/// [`sync_file_system`] and before [`record_tip`]. Returns whether there was anything to do.
pub fn release_packs(mirror: &Path) -> Result<bool, PathError> {
    let dir = pack_dir(mirror);
    let keeps = keep_files(&dir)?;
    for keep in &keeps {
        remove_if_present(keep)?;
    }
    if !keeps.is_empty() {
        paths::sync_dir(&dir)?;
    }
    Ok(!keeps.is_empty())
}

/// Where a damaged mirror is moved before it is deleted.
pub fn aside_path(mirror: &Path) -> PathBuf {
    let mut name = mirror
        .file_name()
        .map(|n| n.to_os_string())
        .unwrap_or_else(|| "mirror.git".into());
    name.push(".damaged");
    mirror.with_file_name(name)
}

/// Removes the damaged mirror: first renamed aside (one atomic step, so a crash never leaves a
/// half-deleted directory at the mirror's path that could pass for a mirror), then deleted. The
/// next open finds no mirror and makes a new one; a crash before the deletion finishes leaves
/// only the `.damaged` directory, which [`remove_leftover`] clears.
pub fn set_aside(mirror: &Path) -> Result<(), PathError> {
    let aside = aside_path(mirror);
    remove_leftover(mirror)?;
    match std::fs::rename(mirror, &aside) {
        Ok(()) => {}
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(()),
        Err(e) => return Err(PathError::new("move aside the damaged mirror", mirror, e)),
    }
    remove_leftover(mirror)
}

/// Deletes a `.damaged` directory left by an earlier rebuild, if any.
pub fn remove_leftover(mirror: &Path) -> Result<(), PathError> {
    let aside = aside_path(mirror);
    match std::fs::remove_dir_all(&aside) {
        Ok(()) => Ok(()),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
        Err(e) => Err(PathError::new("remove", &aside, e)),
    }
}

fn paths_parent(path: &Path) -> PathBuf {
    path.parent().map(Path::to_path_buf).unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn record_tip_writes_a_loose_ref_gix_reads_and_leaves_no_temp_file() {
        let dir = tempfile::tempdir().unwrap();
        let mirror = dir.path().join("mirror.git");
        gix::init_bare(&mirror).unwrap();
        let id = ObjectId::from_hex(b"0123456789abcdef0123456789abcdef01234567").unwrap();
        sync_file_system(&mirror).unwrap();
        record_tip(&mirror, id).unwrap();
        assert_eq!(
            std::fs::read_to_string(mirror.join(FETCHED_REF)).unwrap(),
            format!("{id}\n")
        );
        assert!(!mirror.join("shoal-fetched.tmp").exists());
        let repo = gix::open(&mirror).unwrap();
        let found = repo.find_reference(FETCHED_REF).unwrap();
        assert_eq!(found.id().detach(), id);
    }

    #[test]
    fn unaccepted_packs_and_temp_files_go_accepted_packs_stay() {
        let dir = tempfile::tempdir().unwrap();
        let mirror = dir.path().join("mirror.git");
        let packs = mirror.join("objects/pack");
        // Nothing to do on a mirror without a pack directory.
        assert!(remove_unaccepted(&mirror).unwrap().is_empty());
        assert!(!release_packs(&mirror).unwrap());
        std::fs::create_dir_all(&packs).unwrap();
        for name in [
            "pack-a.pack",
            "pack-a.idx",
            "pack-b.pack",
            "pack-b.idx",
            "pack-b.keep",
        ] {
            std::fs::write(packs.join(name), b"x").unwrap();
        }
        // A fetch killed before gix renamed its pack: a `.keep` alone, and temp files.
        std::fs::write(packs.join("pack-c.keep"), b"").unwrap();
        std::fs::write(packs.join(".tmpAbC123"), b"partial").unwrap();
        let mut removed = remove_unaccepted(&mirror).unwrap();
        removed.sort();
        assert_eq!(
            removed,
            [packs.join("pack-b.pack"), packs.join("pack-c.pack")]
        );
        let mut left: Vec<String> = std::fs::read_dir(&packs)
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .collect();
        left.sort();
        assert_eq!(left, ["pack-a.idx", "pack-a.pack"]);

        std::fs::write(packs.join("pack-d.pack"), b"x").unwrap();
        std::fs::write(packs.join("pack-d.idx"), b"x").unwrap();
        std::fs::write(packs.join("pack-d.keep"), b"").unwrap();
        assert!(release_packs(&mirror).unwrap());
        assert!(!packs.join("pack-d.keep").exists());
        assert!(packs.join("pack-d.pack").exists());
        assert!(
            remove_unaccepted(&mirror).unwrap().is_empty(),
            "an accepted pack stays"
        );
        assert!(!release_packs(&mirror).unwrap());
    }

    #[test]
    fn set_aside_removes_the_mirror_and_a_leftover_from_before() {
        let dir = tempfile::tempdir().unwrap();
        let mirror = dir.path().join("mirror.git");
        std::fs::create_dir_all(mirror.join("objects/pack")).unwrap();
        std::fs::create_dir_all(aside_path(&mirror).join("refs")).unwrap();
        set_aside(&mirror).unwrap();
        assert!(!mirror.exists());
        assert!(!aside_path(&mirror).exists());
        // Nothing to set aside is not an error.
        set_aside(&mirror).unwrap();
        assert_eq!(
            aside_path(&mirror).file_name().unwrap(),
            "mirror.git.damaged"
        );
    }
}
