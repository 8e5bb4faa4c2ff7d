//! `state_dir/preexisting.json`: for each path Shoal took over, the file that was there before
//! (content in the blob store). Removing the path from the repository, or rolling back before
//! the generation that took it over, restores that file instead of deleting it.
//!
//! Every record is true whatever happens to the transaction that writes it: it is written only
//! for a path no generation manages at that moment, so the file it describes is by definition
//! the unmanaged one (or, when nothing is there, the record is dropped). Records are only
//! changed by a takeover, never by a removal, which is why it is safe to write them before the
//! journal, and why no rollback has to undo them.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use super::error::Fault;
use crate::paths;
use crate::plan::{is_sha256_hex, DiskFile};
use crate::state::ApplyArea;

const VERSION: u32 = 1;

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct Preexisting {
    version: u32,
    files: BTreeMap<PathBuf, DiskFile>,
}

impl Preexisting {
    pub(crate) fn load(area: ApplyArea<'_>) -> Result<Preexisting, Fault> {
        let path = area.preexisting();
        let Some(text) = paths::read_optional(&path)? else {
            return Ok(Preexisting {
                version: VERSION,
                files: BTreeMap::new(),
            });
        };
        let corrupt = |reason: String| Fault::CorruptState {
            path: path.clone(),
            reason,
        };
        let parsed: Preexisting =
            serde_json::from_str(&text).map_err(|e| corrupt(e.to_string()))?;
        if parsed.version != VERSION {
            return Err(corrupt(format!(
                "version {} is not {VERSION}",
                parsed.version
            )));
        }
        if let Some((file, _)) = parsed
            .files
            .iter()
            .find(|(_, saved)| !is_sha256_hex(&saved.sha256))
        {
            return Err(corrupt(format!(
                "the entry for {} names no blob",
                file.display()
            )));
        }
        Ok(parsed)
    }

    pub(crate) fn get(&self, path: &Path) -> Option<&DiskFile> {
        self.files.get(path)
    }

    pub(crate) fn hashes(&self) -> impl Iterator<Item = &str> {
        self.files.values().map(|saved| saved.sha256.as_str())
    }

    /// Records what is at `path` as Shoal takes it over: `saved`, or nothing. Returns whether
    /// anything changed.
    pub(crate) fn record(&mut self, path: &Path, saved: Option<&DiskFile>) -> bool {
        if self.files.get(path) == saved {
            return false;
        }
        match saved {
            Some(saved) => self.files.insert(path.to_owned(), saved.clone()),
            None => self.files.remove(path),
        };
        true
    }

    /// Durable when this returns.
    pub(crate) fn save(&self, area: ApplyArea<'_>) -> Result<(), Fault> {
        let path = area.preexisting();
        let json = serde_json::to_vec_pretty(self).map_err(|e| Fault::CorruptState {
            path: path.clone(),
            reason: e.to_string(),
        })?;
        paths::write_atomic(&path, &json).map_err(|e| Fault::Io(e).about_state())
    }
}
