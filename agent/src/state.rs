//! Durable agent state under `state_dir`: the anti-rollback watermark (the last applied commit)
//! kept in an fsynced, atomically renamed file. The only module that writes `state_dir` besides
//! the git mirror owned by `fetch`.

use std::path::{Path, PathBuf};

use gix::ObjectId;

use crate::paths::{self, PathError};

const APPLIED_FILE: &str = "applied-commit";
const MIRROR_DIR: &str = "mirror.git";

#[derive(Debug, thiserror::Error)]
pub enum StateError {
    #[error("cannot use the state directory: {0}")]
    Io(#[from] PathError),
    #[error("{} is corrupt ({content:?} is not a commit id); refusing to guess the applied commit (anti-rollback fails closed): restore it or run `shoal-agent rollback`", path.display())]
    CorruptWatermark { path: PathBuf, content: String },
}

/// The agent's state directory.
pub struct State {
    dir: PathBuf,
}

impl State {
    /// Opens (creating if needed) the state directory.
    pub fn open(dir: &Path) -> Result<Self, StateError> {
        paths::create_dir_all(dir)?;
        Ok(State {
            dir: dir.to_owned(),
        })
    }

    /// Opens the state directory only if it exists: for read-only commands like `status`.
    pub fn open_existing(dir: &Path) -> Option<Self> {
        dir.is_dir().then(|| State {
            dir: dir.to_owned(),
        })
    }

    pub fn mirror_dir(&self) -> PathBuf {
        self.dir.join(MIRROR_DIR)
    }

    /// The last commit this device accepted, or `None` before the first successful sync.
    pub fn applied_commit(&self) -> Result<Option<ObjectId>, StateError> {
        let path = self.dir.join(APPLIED_FILE);
        let Some(text) = paths::read_optional(&path)? else {
            return Ok(None);
        };
        let content = text.trim();
        ObjectId::from_hex(content.as_bytes())
            .map(Some)
            .map_err(|_| StateError::CorruptWatermark {
                path,
                content: content.to_owned(),
            })
    }

    /// Moves the watermark to `commit`. Durable when this returns.
    pub fn record_applied(&self, commit: ObjectId) -> Result<(), StateError> {
        let path = self.dir.join(APPLIED_FILE);
        paths::write_atomic(&path, format!("{commit}\n").as_bytes())?;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn watermark_round_trips_and_corruption_fails_closed() {
        let dir = tempfile::tempdir().unwrap();
        let state = State::open(dir.path()).unwrap();
        assert_eq!(state.applied_commit().unwrap(), None);
        let id = ObjectId::from_hex(b"0123456789abcdef0123456789abcdef01234567").unwrap();
        state.record_applied(id).unwrap();
        assert_eq!(state.applied_commit().unwrap(), Some(id));

        std::fs::write(dir.path().join(APPLIED_FILE), "garbage").unwrap();
        let err = state.applied_commit().unwrap_err().to_string();
        assert!(err.contains("\"garbage\" is not a commit id"), "{err}");
    }
}
