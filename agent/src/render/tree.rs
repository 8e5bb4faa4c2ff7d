//! The trees the agent renders from: the tree of a commit `verify` accepted ([`VerifiedTree`],
//! the only tree a sync renders and the only public `RepoTree` here), and, for previews, a commit
//! checked or not ([`CommitPreview`]) or a checkout ([`PreviewSource::Dir`]), which are not
//! `RepoTree`s outside this module. All hand out regular files only: a symlink anywhere along a
//! path is refused, so a source can never escape the repository.

use std::fs;
use std::io;
use std::path::PathBuf;

use gix::object::tree::EntryKind;

use crate::errors::error_chain;
use crate::verify::Verified;
use shoal_core::render::{check_repo_path, refuse_path, RepoTree, TreeError};

/// The tree of one commit in a git repository; public only as a [`VerifiedTree`].
pub(super) struct GitTree<'repo> {
    root: gix::Tree<'repo>,
}

impl<'repo> GitTree<'repo> {
    pub(super) fn at_commit(
        repo: &'repo gix::Repository,
        commit: gix::ObjectId,
    ) -> Result<Self, TreeError> {
        let tree = repo
            .find_commit(commit)
            .map_err(|e| error_chain(&e))
            .and_then(|c| c.tree().map_err(|e| error_chain(&e)))
            .map_err(|e| {
                TreeError::Other(format!("cannot read the tree of commit {commit}: {e}"))
            })?;
        Ok(GitTree { root: tree })
    }
}

/// The tree of a commit that passed the trust policy: what [`super::render`] takes, so a sync
/// cannot render (and so plan or apply) a commit `verify` did not accept. There is no other way
/// to build one than from a [`Verified`]:
///
/// ```compile_fail
/// // An unchecked commit id is not a `Verified`.
/// fn tree(repo: &gix::Repository, commit: gix::ObjectId) {
///     let _ = shoal_agent::render::VerifiedTree::new(repo, commit);
/// }
/// ```
///
/// (The same function with a `&Verified` compiles; `Verified` itself is built only by
/// `verify::verify_update`.)
///
/// ```
/// fn tree<'r>(
///     repo: &'r gix::Repository,
///     verified: &shoal_agent::verify::Verified,
/// ) -> Result<shoal_agent::render::VerifiedTree<'r>, shoal_agent::render::TreeError> {
///     shoal_agent::render::VerifiedTree::new(repo, verified)
/// }
/// ```
pub struct VerifiedTree<'repo>(GitTree<'repo>);

impl<'repo> VerifiedTree<'repo> {
    /// The tree of the verified commit in `repo` (the mirror `verify` read it from).
    pub fn new(repo: &'repo gix::Repository, verified: &Verified) -> Result<Self, TreeError> {
        GitTree::at_commit(repo, verified.commit()).map(VerifiedTree)
    }
}

impl RepoTree for VerifiedTree<'_> {
    fn read_file(&self, path: &str) -> Result<Vec<u8>, TreeError> {
        self.0.read_file(path)
    }
}

/// The tree of any commit, checked or not, for previews only (`shoal-agent render PATH --rev`,
/// a repository's CI): it goes into a [`PreviewSource`], never into `render`.
pub struct CommitPreview<'repo>(pub(super) GitTree<'repo>);

impl<'repo> CommitPreview<'repo> {
    pub fn at_commit(
        repo: &'repo gix::Repository,
        commit: gix::ObjectId,
    ) -> Result<Self, TreeError> {
        GitTree::at_commit(repo, commit).map(CommitPreview)
    }
}

/// What `shoal-agent render` previews: a checkout, or a commit.
pub enum PreviewSource<'a> {
    Dir(&'a std::path::Path),
    Commit(CommitPreview<'a>),
}

impl RepoTree for GitTree<'_> {
    fn read_file(&self, path: &str) -> Result<Vec<u8>, TreeError> {
        check_repo_path(path).map_err(|problem| refuse_path(path, problem))?;
        let repo = self.root.repo;
        let names: Vec<&str> = path.split('/').collect();
        let mut subtree: Option<gix::Tree<'_>> = None;
        for (i, name) in names.iter().enumerate() {
            let here = names[..=i].join("/");
            let unreadable = |e: &(dyn std::error::Error + 'static)| {
                TreeError::Other(format!(
                    "cannot read \"{here}\" from the repository: {}",
                    error_chain(e)
                ))
            };
            let current = subtree.as_ref().unwrap_or(&self.root);
            let (kind, id) = match current.find_entry(*name) {
                Some(entry) => (entry.kind(), entry.object_id()),
                None => return Err(TreeError::NotFound),
            };
            let last = i + 1 == names.len();
            match kind {
                EntryKind::Link => return Err(TreeError::Symlink { path: here }),
                EntryKind::Commit if last => {
                    return Err(TreeError::NotAFile {
                        what: "git submodule",
                    })
                }
                EntryKind::Commit => {
                    return Err(TreeError::Other(format!(
                        "\"{here}\" is a git submodule; Shoal reads only files committed in this repository"
                    )))
                }
                EntryKind::Tree if last => return Err(TreeError::NotAFile { what: "directory" }),
                EntryKind::Tree => {
                    subtree = Some(repo.find_tree(id).map_err(|e| unreadable(&e))?);
                }
                EntryKind::Blob | EntryKind::BlobExecutable if last => {
                    let mut blob = repo.find_blob(id).map_err(|e| unreadable(&e))?;
                    let mut data = blob.take_data();
                    // gix's buffer has room to spare (about 7.6 KiB for a 4 KiB file); a
                    // rendered state holds every file at once, so give the spare back.
                    data.shrink_to_fit();
                    return Ok(data);
                }
                // A file where the path needs a directory: nothing is at the full path.
                EntryKind::Blob | EntryKind::BlobExecutable => return Err(TreeError::NotFound),
            }
        }
        // `check_repo_path` refuses the empty path, so the loop runs at least once and every
        // last iteration returns.
        Err(TreeError::NotFound)
    }
}

/// A plain directory holding a checkout of the configuration repository.
pub(super) struct DirTree {
    root: PathBuf,
}

impl DirTree {
    pub(super) fn new(root: impl Into<PathBuf>) -> Self {
        DirTree { root: root.into() }
    }
}

impl RepoTree for DirTree {
    fn read_file(&self, path: &str) -> Result<Vec<u8>, TreeError> {
        check_repo_path(path).map_err(|problem| refuse_path(path, problem))?;
        let names: Vec<&str> = path.split('/').collect();
        let mut current = self.root.clone();
        for (i, name) in names.iter().enumerate() {
            current.push(name);
            let here = names[..=i].join("/");
            // symlink_metadata, not metadata: a symlink is refused, never followed.
            let meta = match fs::symlink_metadata(&current) {
                Ok(meta) => meta,
                Err(e)
                    if matches!(
                        e.kind(),
                        io::ErrorKind::NotFound | io::ErrorKind::NotADirectory
                    ) =>
                {
                    return Err(TreeError::NotFound)
                }
                Err(e) => {
                    return Err(TreeError::Other(format!(
                        "cannot inspect {}: {e}",
                        current.display()
                    )))
                }
            };
            let kind = meta.file_type();
            let last = i + 1 == names.len();
            if kind.is_symlink() {
                return Err(TreeError::Symlink { path: here });
            }
            if !last {
                if !kind.is_dir() {
                    return Err(TreeError::NotFound);
                }
                continue;
            }
            if kind.is_dir() {
                return Err(TreeError::NotAFile { what: "directory" });
            }
            if !kind.is_file() {
                return Err(TreeError::NotAFile {
                    what: "special file",
                });
            }
            // Between the check and the read the file could be swapped for a symlink; this
            // tree serves operators previewing their own checkout, not the device.
            return fs::read(&current)
                .map_err(|e| TreeError::Other(format!("cannot read {}: {e}", current.display())));
        }
        // Unreachable for the same reason as in `GitTree::read_file`.
        Err(TreeError::NotFound)
    }
}
