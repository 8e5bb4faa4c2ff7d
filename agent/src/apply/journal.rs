//! The apply journal `state_dir/journal.json`: written durably before the first managed write,
//! it lists every path the transaction will touch and what was there before, so recovery can
//! put each one back. Reading, writing and removing it; deciding when is the transaction's.

use std::ffi::OsString;
use std::io::Write;
use std::path::PathBuf;

use serde::{Deserialize, Serialize};

use super::error::{ApplyError, Fault};
use super::file::{Dir, Flush};
use crate::paths::{self, PathError};
use crate::plan::{is_sha256_hex, DiskFile};
use crate::state::ApplyArea;

const VERSION: u32 = 1;

/// One transaction from generation `from` to `to`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Journal {
    pub version: u32,
    pub from: u64,
    pub to: u64,
    /// In the order they are applied; rolled back in reverse.
    pub entries: Vec<JournalEntry>,
    /// Directories the transaction creates (device paths, parents first); rollback removes them
    /// (deepest first) if they are empty.
    pub created_dirs: Vec<PathBuf>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct JournalEntry {
    /// Device path (without the `root` prefix).
    pub path: PathBuf,
    pub before: Before,
}

/// What was at a path before the transaction; every file is in the blob store under its hash.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum Before {
    /// Nothing: rollback removes the file.
    Absent,
    /// A file of the previous generation (or a hand edit of one).
    Blob(DiskFile),
    /// A file that was there before Shoal managed the path (also kept in `preexisting.json`).
    Preexisting(DiskFile),
}

impl Journal {
    pub(crate) fn new(from: u64, to: u64) -> Self {
        Journal {
            version: VERSION,
            from,
            to,
            entries: Vec::new(),
            created_dirs: Vec::new(),
        }
    }

    /// The journal of an unfinished transaction, if there is one. A journal that cannot be
    /// understood is an error: guessing which files to restore could destroy data.
    pub(crate) fn read(area: ApplyArea<'_>) -> Result<Option<Journal>, ApplyError> {
        Journal::read_at(area.journal())
    }

    /// The journal at `journal`, if there is one (also for `status`, which has no lock).
    pub(crate) fn read_at(journal: PathBuf) -> Result<Option<Journal>, ApplyError> {
        let text = match paths::read_optional(&journal) {
            Ok(Some(text)) => text,
            Ok(None) => return Ok(None),
            Err(err) => {
                return Err(ApplyError::CorruptJournal {
                    journal,
                    reason: err.source.to_string(),
                })
            }
        };
        let corrupt = |reason: String| ApplyError::CorruptJournal {
            journal: journal.clone(),
            reason,
        };
        let parsed: Journal = serde_json::from_str(&text).map_err(|e| corrupt(e.to_string()))?;
        if parsed.version != VERSION {
            return Err(corrupt(format!(
                "version {} is not {VERSION}; was it written by a newer shoal-agent?",
                parsed.version
            )));
        }
        for entry in &parsed.entries {
            if let Before::Blob(file) | Before::Preexisting(file) = &entry.before {
                if !is_sha256_hex(&file.sha256) {
                    return Err(corrupt(format!(
                        "the entry for {} names blob {:?}",
                        entry.path.display(),
                        file.sha256
                    )));
                }
            }
        }
        Ok(Some(parsed))
    }

    /// Writes the journal to a temp file beside `journal.json` (the first half of the durable
    /// write); with [`Flush::Batch`] the caller's `syncfs` makes it durable, so the journal
    /// costs no flush of its own when blobs are flushed anyway. Not a journal until
    /// [`Staged::publish`]; a crash before leaves a temp file that `recover` sweeps.
    pub(crate) fn stage(
        &self,
        area: ApplyArea<'_>,
        dir: Dir,
        flush: Flush,
    ) -> Result<Staged, Fault> {
        let about_state = |e: PathError| Fault::Io(e).about_state();
        // Serializing plain data with string keys cannot fail; map it anyway rather than unwrap.
        let json = serde_json::to_vec_pretty(self).map_err(|e| Fault::CorruptState {
            path: area.journal(),
            reason: e.to_string(),
        })?;
        let temp = OsString::from(format!("{TEMP_PREFIX}{}", std::process::id()));
        dir.write_temp(
            &temp,
            |file, real| {
                file.write_all(&json)
                    .map_err(|e| PathError::new("write", real, e))
            },
            None,
            flush,
        )
        .map_err(about_state)?;
        Ok(Staged {
            dir,
            temp,
            name: area.journal_name(),
        })
    }

    /// Removes the journal durably; already gone is fine (and costs no disk write).
    pub(crate) fn remove(area: ApplyArea<'_>) -> Result<(), PathError> {
        if Journal::remove_lazily(area)? {
            paths::sync_dir(area.dir())?;
        }
        Ok(())
    }

    /// Removes the journal without making the removal durable; `true` if there was one. Only
    /// for a journal whose target generation is recorded: if a power cut brings it back,
    /// `recover` finds that generation recorded and only removes it again.
    pub(crate) fn remove_lazily(area: ApplyArea<'_>) -> Result<bool, PathError> {
        let journal = area.journal();
        match std::fs::remove_file(&journal) {
            Ok(()) => Ok(true),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(false),
            Err(e) => Err(PathError::new("remove", &journal, e)),
        }
    }
}

/// The prefix of the journal's temp files (`recover` sweeps them).
pub(crate) const TEMP_PREFIX: &str = ".journal.json.shoal-tmp.";

/// A journal in its temp file: [`Journal::stage`] wrote it, [`Staged::publish`] puts it in place.
pub(crate) struct Staged {
    dir: Dir,
    temp: OsString,
    /// The journal's name in the state directory.
    name: &'static str,
}

impl Staged {
    /// Renames the journal into place and fsyncs the state directory: from when this returns,
    /// a crash is undone by `recover`. Its content must be durable already ([`Flush::Each`],
    /// or the batch's `syncfs`).
    pub(crate) fn publish(self) -> Result<(), Fault> {
        let about_state = |e: PathError| Fault::Io(e).about_state();
        self.dir
            .publish(&self.temp, self.name.as_ref())
            .map_err(about_state)?;
        self.dir.sync().map_err(about_state)
    }
}
