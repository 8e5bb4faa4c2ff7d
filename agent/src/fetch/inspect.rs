//! Finds damage in the mirror — what a power cut, a full disk or a hand edit leaves behind that
//! makes it unusable — and names it. Reads only; decides nothing about trust: a tip that is
//! readable here still has to pass `verify`, and a tip that is not a commit at all is left for
//! `verify` to refuse (that is the server's doing, not damage).

use std::collections::{HashSet, VecDeque};
use std::path::{Path, PathBuf};

use gix::odb::pack;
use gix::ObjectId;

use super::FETCHED_REF;
use crate::errors::error_chain;

/// What is wrong with a mirror: the reason it is rebuilt from scratch.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Damage {
    #[error("the repository {} cannot be opened (broken HEAD or config?): {message}", path.display())]
    Open { path: PathBuf, message: String },
    #[error("HEAD ({}) is unreadable: {message}", path.display())]
    Head { path: PathBuf, message: String },
    #[error("the ref {name} ({}) is unreadable: {message}", path.display())]
    Ref {
        path: PathBuf,
        name: &'static str,
        message: String,
    },
    #[error("the pack {} has no index {}", pack.display(), index.display())]
    IndexMissing { pack: PathBuf, index: PathBuf },
    #[error("the pack index {} has no pack {}", index.display(), pack.display())]
    PackMissing { index: PathBuf, pack: PathBuf },
    #[error("the pack file {} is damaged (empty or truncated?): {message}", path.display())]
    Pack { path: PathBuf, message: String },
    #[error("cannot read {what} {id}: {message}")]
    Object {
        id: ObjectId,
        what: &'static str,
        message: String,
    },
}

/// Cheap checks of a just-opened mirror at `dir`: HEAD resolves, `refs/shoal/fetched` (if
/// present) parses to an object id, and every pack has its index and agrees with it (object
/// count and the pack checksum the index records against the pack's own trailer: an empty or
/// truncated pack, as a power cut leaves it, has lost its trailer). Returns the recorded tip.
///
/// Costs a few `stat`s and `mmap`s per pack and no object decoding, so a no-op sync stays cheap.
pub fn repository(repo: &gix::Repository, dir: &Path) -> Result<Option<ObjectId>, Damage> {
    repo.head().map_err(|e| Damage::Head {
        path: dir.join("HEAD"),
        message: error_chain(&e),
    })?;
    let recorded = recorded_tip(repo, dir)?;
    packs(&dir.join("objects").join("pack"), repo.object_hash())?;
    Ok(recorded)
}

fn recorded_tip(repo: &gix::Repository, dir: &Path) -> Result<Option<ObjectId>, Damage> {
    let damaged = |message: String| Damage::Ref {
        path: dir.join(FETCHED_REF),
        name: FETCHED_REF,
        message,
    };
    let Some(reference) = repo
        .try_find_reference(FETCHED_REF)
        .map_err(|e| damaged(error_chain(&e)))?
    else {
        return Ok(None);
    };
    match reference.try_id() {
        Some(id) => Ok(Some(id.detach())),
        None => Err(damaged(format!(
            "it is a symbolic ref to {}, not an object id",
            reference.name().as_bstr()
        ))),
    }
}

/// Every `pack-*.pack` in `pack_dir` has its `.idx` and the two agree; and the other way round.
/// Other files (`.keep`, a temp file of an interrupted fetch) are not objects and are ignored.
fn packs(pack_dir: &Path, hash: gix::hash::Kind) -> Result<(), Damage> {
    let entries = match std::fs::read_dir(pack_dir) {
        Ok(entries) => entries,
        // A fresh mirror may have no pack directory yet.
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(()),
        Err(e) => {
            return Err(Damage::Pack {
                path: pack_dir.to_owned(),
                message: format!("cannot list the directory: {e}"),
            })
        }
    };
    for entry in entries {
        let path = entry
            .map_err(|e| Damage::Pack {
                path: pack_dir.to_owned(),
                message: format!("cannot list the directory: {e}"),
            })?
            .path();
        let is_pack_file = path
            .file_name()
            .and_then(|n| n.to_str())
            .is_some_and(|n| n.starts_with("pack-"));
        match path.extension().and_then(|e| e.to_str()) {
            Some("pack") if is_pack_file => {
                let index = path.with_extension("idx");
                if !index.exists() {
                    return Err(Damage::IndexMissing { pack: path, index });
                }
                pack_agrees_with_index(&path, &index, hash)?;
            }
            Some("idx") if is_pack_file => {
                let data = path.with_extension("pack");
                if !data.exists() {
                    return Err(Damage::PackMissing {
                        index: path,
                        pack: data,
                    });
                }
            }
            _ => {}
        }
    }
    Ok(())
}

fn pack_agrees_with_index(data: &Path, index: &Path, hash: gix::hash::Kind) -> Result<(), Damage> {
    let damaged = |path: &Path, message: String| Damage::Pack {
        path: path.to_owned(),
        message,
    };
    // Both constructors check the file is long enough for its own header (and the index for
    // all the entries its fan-out table announces).
    let idx = pack::index::File::at(index, hash).map_err(|e| damaged(index, error_chain(&e)))?;
    let file = pack::data::File::at(data, hash).map_err(|e| damaged(data, error_chain(&e)))?;
    if idx.num_objects() != file.num_objects() {
        return Err(damaged(
            data,
            format!(
                "it holds {} objects, its index {} lists {}",
                file.num_objects(),
                index.display(),
                idx.num_objects()
            ),
        ));
    }
    if idx.pack_checksum() != file.checksum() {
        return Err(damaged(
            data,
            format!(
                "its trailing checksum {} is not the {} its index {} recorded",
                file.checksum(),
                idx.pack_checksum(),
                index.display()
            ),
        ));
    }
    Ok(())
}

/// The commit `tip` is readable, every object of its tree is present (trees decoded, blobs'
/// headers read), and when `applied` is given, so is every commit from `tip` down to it (the
/// history `verify` walks for anti-rollback and the range check), `applied` included with its
/// parents present. If `applied` is not an ancestor the walk covers the whole history, which must
/// be readable too; whether the tip may be trusted is then `verify`'s call.
///
/// A release tag (environment mode) is read and followed to its commit first.
///
/// Returns the number of commits read.
pub fn tip(
    repo: &gix::Repository,
    tip: ObjectId,
    applied: Option<ObjectId>,
) -> Result<usize, Damage> {
    let Some(tip) = peel_release(repo, tip)? else {
        return Ok(0);
    };
    let Some(commit) = read_commit(repo, tip, "the fetched tip commit")? else {
        // Not a commit, or a malformed one, as the server sent it: nothing here to heal;
        // `verify` refuses it by name.
        return Ok(0);
    };
    tree(repo, commit.tree, tip)?;
    match applied {
        Some(applied) => walk(repo, tip, commit.parents, Some(applied)),
        None => Ok(1),
    }
}

/// `id` itself when it is not a tag; the commit a tag points at when it is one (a release, in
/// environment mode); `None` when the tag points at something else or does not parse but is
/// exactly what the server sent: `verify` refuses such a release by name.
fn peel_release(repo: &gix::Repository, id: ObjectId) -> Result<Option<ObjectId>, Damage> {
    let what = "the fetched release tag";
    // An object that cannot be read is named by the caller, as the tip commit it expects.
    let Ok(object) = repo.find_object(id) else {
        return Ok(Some(id));
    };
    if object.kind != gix::object::Kind::Tag {
        return Ok(Some(id));
    }
    match gix::objs::TagRef::from_bytes(&object.data, repo.object_hash()) {
        Ok(tag) if tag.target_kind == gix::object::Kind::Commit => Ok(Some(tag.target())),
        _ => as_sent(repo, id, object.kind, &object.data, what).map(|()| None),
    }
}

struct CommitLinks {
    tree: ObjectId,
    parents: Vec<ObjectId>,
}

/// The commit's links, or `None` when there is nothing to follow: the object is not a commit,
/// or does not parse as one, but its bytes are exactly what its id names (see [`as_sent`]).
fn read_commit(
    repo: &gix::Repository,
    id: ObjectId,
    what: &'static str,
) -> Result<Option<CommitLinks>, Damage> {
    let damaged = |message: String| Damage::Object { id, what, message };
    let object = repo.find_object(id).map_err(|e| damaged(error_chain(&e)))?;
    if object.kind != gix::object::Kind::Commit {
        return as_sent(repo, id, object.kind, &object.data, what).map(|()| None);
    }
    let links = gix::objs::CommitRef::from_bytes(&object.data, repo.object_hash())
        .ok()
        .map(|commit| CommitLinks {
            tree: commit.tree(),
            parents: commit.parents().collect(),
        });
    match links {
        Some(links) => Ok(Some(links)),
        None => as_sent(repo, id, object.kind, &object.data, what).map(|()| None),
    }
}

/// An object that reads but is not what the caller expected (another kind, or bytes that do
/// not parse) is damage only if its bytes do not hash to its id. If they do, it is exactly what
/// the server sent (a malformed commit a hostile server crafted, say): rebuilding the mirror
/// would fetch it again, so it is left for `verify` to refuse, or `render` to reject, by name.
fn as_sent(
    repo: &gix::Repository,
    id: ObjectId,
    kind: gix::object::Kind,
    data: &[u8],
    what: &'static str,
) -> Result<(), Damage> {
    match gix::objs::compute_hash(repo.object_hash(), kind, data) {
        Ok(hash) if hash == id => Ok(()),
        Ok(hash) => Err(Damage::Object {
            id,
            what,
            message: format!("its content hashes to {hash}, not to its id"),
        }),
        Err(e) => Err(Damage::Object {
            id,
            what,
            message: format!("cannot hash its content: {}", error_chain(&e)),
        }),
    }
}

/// Reads every commit from `tip` (whose parents are given) down through its history,
/// breadth first; with `stop`, not below that commit (whose parents must still be present).
fn walk(
    repo: &gix::Repository,
    tip: ObjectId,
    tip_parents: Vec<ObjectId>,
    stop: Option<ObjectId>,
) -> Result<usize, Damage> {
    if Some(tip) == stop {
        return parents_present(repo, &tip_parents).map(|()| 1);
    }
    let mut seen: HashSet<ObjectId> = tip_parents.iter().copied().collect();
    seen.insert(tip);
    let mut queue: VecDeque<ObjectId> = tip_parents.into();
    let mut read = 1;
    while let Some(id) = queue.pop_front() {
        let what = if Some(id) == stop {
            "the applied commit"
        } else {
            "a commit in the history of the tip"
        };
        // A parent the server sent as something other than a readable commit ends this branch
        // of the walk; `verify` refuses the history that leans on it.
        let Some(commit) = read_commit(repo, id, what)? else {
            continue;
        };
        read += 1;
        if Some(id) == stop {
            // `verify`'s merge-base may look one step below the applied commit.
            parents_present(repo, &commit.parents)?;
            continue;
        }
        for parent in commit.parents {
            if seen.insert(parent) {
                queue.push_back(parent);
            }
        }
    }
    Ok(read)
}

fn parents_present(repo: &gix::Repository, parents: &[ObjectId]) -> Result<(), Damage> {
    for &id in parents {
        repo.find_header(id).map_err(|e| Damage::Object {
            id,
            what: "the parent commit",
            message: error_chain(&e),
        })?;
    }
    Ok(())
}

/// Every tree under `root` decodes and every blob's header reads. Submodule entries point
/// outside the repository and are skipped.
fn tree(repo: &gix::Repository, root: ObjectId, commit: ObjectId) -> Result<(), Damage> {
    let mut stack = vec![root];
    while let Some(id) = stack.pop() {
        let damaged = |message: String| Damage::Object {
            id,
            what: "a tree of the fetched tip",
            message: format!("{message} (in the tree of commit {commit})"),
        };
        let object = repo.find_object(id).map_err(|e| damaged(error_chain(&e)))?;
        let decoded = match gix::objs::TreeRef::from_bytes(&object.data, repo.object_hash()) {
            Ok(tree) if object.kind == gix::object::Kind::Tree => tree,
            // Not a tree as sent: `render` rejects the commit; only a mismatch is damage.
            _ => {
                as_sent(
                    repo,
                    id,
                    object.kind,
                    &object.data,
                    "a tree of the fetched tip",
                )?;
                continue;
            }
        };
        for entry in decoded.entries {
            let oid = entry.oid.to_owned();
            if entry.mode.is_tree() {
                stack.push(oid);
            } else if entry.mode.is_blob_or_symlink() {
                repo.find_header(oid).map_err(|e| Damage::Object {
                    id: oid,
                    what: "a file of the fetched tip",
                    message: format!(
                        "{} (\"{}\" in the tree of commit {commit})",
                        error_chain(&e),
                        entry.filename
                    ),
                })?;
            }
        }
    }
    Ok(())
}

/// The whole history of `tip`, every commit read: run when gix fails half-way through a fetch,
/// to tell a damaged mirror (negotiation walks the local history) from a network failure.
pub fn history(repo: &gix::Repository, tip: ObjectId) -> Result<usize, Damage> {
    let Some(tip) = peel_release(repo, tip)? else {
        return Ok(0);
    };
    match read_commit(repo, tip, "the recorded tip commit")? {
        Some(commit) => walk(repo, tip, commit.parents, None),
        None => Ok(0),
    }
}
