//! The one way render reads a configuration repository: [`RepoTree`], regular files by
//! repository path, and the errors a tree answers with. Implementations live with their I/O (the
//! agent's git and directory trees); a tree refuses symlinks, so a source never escapes it.

/// Read access to the files of one configuration tree. `path` is relative to the repository
/// root, `/`-separated.
pub trait RepoTree {
    fn read_file(&self, path: &str) -> Result<Vec<u8>, TreeError>;
}

/// Why a path could not be read. Messages read after the path (`"files/motd": not found ...`).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TreeError {
    #[error("not found in the repository")]
    NotFound,
    /// `path` is the symlink itself: the whole requested path, or a directory along it.
    #[error("\"{path}\" is a symlink, and Shoal reads only regular files from the repository (symlink escape)")]
    Symlink { path: String },
    /// `what` says what it is instead: "directory", "git submodule", "special file".
    #[error("is a {what}, not a regular file")]
    NotAFile { what: &'static str },
    #[error("{0}")]
    Other(String),
}

/// The error for a path [`check_repo_path`](super::check_repo_path) refused.
pub fn refuse_path(path: &str, problem: String) -> TreeError {
    TreeError::Other(format!(
        "\"{path}\" {problem}; Shoal reads only paths inside the repository"
    ))
}
