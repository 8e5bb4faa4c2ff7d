//! Durable agent state under `state_dir`; it never touches managed paths.
//!
//! Everything is a small fsynced, atomically renamed file, so a sync with nothing to do only
//! reads, and the agent's memory does not carry a database's caches between syncs:
//! `applied-commit` (the anti-rollback watermark), `current-generation`, `hold`,
//! `last-result.json`, `report-sequence`, `generations/N.json` (each generation's manifest),
//! `bad/<commit>` (why a commit was recorded as bad), `outbox/<sequence>.json` (sealed
//! reports waiting for the collector's acknowledgement), `enrolled` (the collector and device
//! key that collector has accepted reports from, so the enrollment token is no longer needed)
//! and `services-journal.json` (the service plan a sync is carrying out, present only between
//! its first `systemctl` call and the commit point or the undo).

use std::collections::BTreeMap;
use std::fs::File;
use std::path::{Path, PathBuf};

use gix::ObjectId;
use serde::{Deserialize, Serialize};

use crate::paths::{self, PathError};
use crate::plan::Manifest;
use crate::services::{PlanRecord, ServicePlan, ServiceRecord};

const WATERMARK_FILE: &str = "applied-commit";
const CURRENT_FILE: &str = "current-generation";
const HOLD_FILE: &str = "hold";
const LAST_RESULT_FILE: &str = "last-result.json";
const SEQUENCE_FILE: &str = "report-sequence";
const ENROLLED_FILE: &str = "enrolled";
/// Report sequence numbers are reserved this many at a time, so most reports cost no write.
const SEQUENCE_BLOCK: u64 = 1000;
/// The outbox keeps at most this many reports; older ones are superseded by newer ones.
pub const OUTBOX_LIMIT: usize = 64;
const GENERATIONS_DIR: &str = "generations";
const BAD_DIR: &str = "bad";
const OUTBOX_DIR: &str = "outbox";
const MIRROR_DIR: &str = "mirror.git";
const LOCK_FILE: &str = "lock";
const SERVICES_JOURNAL_FILE: &str = "services-journal.json";
const SERVICES_JOURNAL_VERSION: u32 = 1;

#[derive(Debug, thiserror::Error)]
pub enum StateError {
    #[error("cannot use the state directory: {0}")]
    Io(#[from] PathError),
    #[error("another shoal-agent is using the state directory {} (it holds {}); wait for it to finish or stop it", dir.display(), dir.join(LOCK_FILE).display())]
    Locked { dir: PathBuf },
    #[error("{} is corrupt ({content:?} is not a commit id); refusing to guess the applied commit (anti-rollback fails closed): write the commit the device really runs into it", path.display())]
    CorruptWatermark { path: PathBuf, content: String },
    #[error(
        "generation {number} does not exist; `shoal-agent history` lists the generations kept"
    )]
    NoSuchGeneration { number: u64 },
    #[error("corrupt state record {what}: {message}")]
    Corrupt { what: String, message: String },
}

/// One generation: the rendered desired state of one commit, as applied.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Generation {
    pub number: u64,
    pub commit: String,
    /// Unix seconds when it was applied.
    pub applied_at: u64,
    pub signer: String,
    pub manifest: Manifest,
    /// The services it declared, by unit (their unit files are in `manifest`). Absent from
    /// generations recorded before services were managed.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub services: BTreeMap<String, ServiceRecord>,
}

/// The service plan of an apply from generation `from` to `to`, kept while it runs so that
/// recovery after a crash can take the units back with the files (see `sync::recover`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ServicesJournal {
    pub version: u32,
    pub from: u64,
    pub to: u64,
    pub plan: PlanRecord,
}

impl ServicesJournal {
    pub fn plan(&self) -> ServicePlan {
        self.plan.clone().into()
    }
}

/// What the last sync did, for `status` and reports.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SyncResult {
    /// One of the report statuses: converged, failed, rolled_back, held, refused, drifted.
    pub status: String,
    pub commit: Option<String>,
    pub message: Option<String>,
    pub at: u64,
    /// How long each step of the sync that produced this result took (absent in results
    /// written before timings were recorded).
    #[serde(default)]
    pub timings: shoal_proto::Timings,
}

/// The collector (its configured URL) and device key (`ed25519:...`) that collector acknowledged
/// a report from: the device is enrolled there with that key.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Enrolled {
    pub collector: String,
    pub key_id: String,
}

/// The agent's state directory, locked for this process (or, from [`State::open_to_read`],
/// possibly in use by another).
pub struct State {
    dir: PathBuf,
    _lock: Option<File>,
}

impl State {
    /// Opens (creating if needed) and locks the state directory.
    pub fn open(dir: &Path) -> Result<Self, StateError> {
        paths::create_dir_all(dir)?;
        let lock =
            paths::try_lock_exclusive(&dir.join(LOCK_FILE))?.ok_or_else(|| StateError::Locked {
                dir: dir.to_owned(),
            })?;
        Ok(State {
            dir: dir.to_owned(),
            _lock: Some(lock),
        })
    }

    /// Opens the state directory for reading only, as `status` does, even while another
    /// process (a sync) holds it; the flag says whether one does. Every record is a whole file
    /// replaced by rename, so each read sees one version of it, old or new. Nothing here may
    /// be written through the result: the callers only read.
    pub fn open_to_read(dir: &Path) -> Result<(Self, bool), StateError> {
        paths::create_dir_all(dir)?;
        let lock = paths::try_lock_exclusive(&dir.join(LOCK_FILE))?;
        let busy = lock.is_none();
        Ok((
            State {
                dir: dir.to_owned(),
                _lock: lock,
            },
            busy,
        ))
    }

    pub fn dir(&self) -> &Path {
        &self.dir
    }

    pub fn mirror_dir(&self) -> PathBuf {
        self.dir.join(MIRROR_DIR)
    }

    /// The newest commit this device ever applied (anti-rollback watermark). A corrupt file is
    /// an error, never "no watermark".
    pub fn applied_commit(&self) -> Result<Option<ObjectId>, StateError> {
        let path = self.dir.join(WATERMARK_FILE);
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

    /// Moves the watermark to `commit` (durable on return). A corrupt watermark is not
    /// overwritten: reading it first fails closed.
    pub fn record_watermark(&self, commit: ObjectId) -> Result<(), StateError> {
        self.applied_commit()?;
        let path = self.dir.join(WATERMARK_FILE);
        paths::write_atomic(&path, format!("{commit}\n").as_bytes())?;
        Ok(())
    }

    pub fn current(&self) -> Result<Option<Generation>, StateError> {
        match self.current_number()? {
            Some(n) => self.generation(n).map(Some),
            None => Ok(None),
        }
    }

    pub fn current_number(&self) -> Result<Option<u64>, StateError> {
        self.read_number(CURRENT_FILE)
    }

    pub fn generation(&self, number: u64) -> Result<Generation, StateError> {
        let path = self.generation_path(number);
        let raw = match paths::read(&path) {
            Ok(raw) => raw,
            Err(e) if e.is_not_found() => return Err(StateError::NoSuchGeneration { number }),
            Err(e) => return Err(e.into()),
        };
        serde_json::from_slice(&raw).map_err(|e| StateError::Corrupt {
            what: path.display().to_string(),
            message: e.to_string(),
        })
    }

    /// All kept generations, oldest first.
    pub fn generations(&self) -> Result<Vec<Generation>, StateError> {
        numbered_json_files(&self.dir.join(GENERATIONS_DIR))?
            .into_iter()
            .map(|n| self.generation(n))
            .collect()
    }

    /// One more than the newest generation ever kept: numbers are never reused, because
    /// recovery tells N-1 from N by whether N is recorded.
    pub fn next_generation_number(&self) -> Result<u64, StateError> {
        let newest = self.generations()?.last().map_or(0, |g| g.number);
        let current = self.current_number()?.unwrap_or(0);
        Ok(newest.max(current) + 1)
    }

    /// Records `generation` as applied and current, durably: `generations/N.json`, then
    /// `current-generation` (the commit point recovery looks at).
    pub fn commit_generation(&self, generation: &Generation) -> Result<(), StateError> {
        let json = serde_json::to_vec_pretty(generation).map_err(|e| StateError::Corrupt {
            what: format!("generation {}", generation.number),
            message: e.to_string(),
        })?;
        paths::create_dir_all(&self.dir.join(GENERATIONS_DIR))?;
        paths::write_atomic(&self.generation_path(generation.number), &json)?;
        self.set_current(generation.number)
    }

    /// Makes generation `number` the current one (durable on return).
    pub fn set_current(&self, number: u64) -> Result<(), StateError> {
        paths::write_atomic(
            &self.dir.join(CURRENT_FILE),
            format!("{number}\n").as_bytes(),
        )?;
        Ok(())
    }

    /// Removes all but the newest `keep` generations (never the current one); returns the
    /// numbers removed.
    pub fn prune(&self, keep: usize) -> Result<Vec<u64>, StateError> {
        let current = self.current_number()?;
        let all: Vec<u64> = self.generations()?.iter().map(|g| g.number).collect();
        let excess = all.len().saturating_sub(keep);
        let doomed: Vec<u64> = all
            .into_iter()
            .filter(|n| Some(*n) != current)
            .take(excess)
            .collect();
        for n in &doomed {
            remove_if_present(&self.generation_path(*n))?;
        }
        if !doomed.is_empty() {
            paths::sync_dir(&self.dir.join(GENERATIONS_DIR))?;
        }
        Ok(doomed)
    }

    pub fn hold(&self) -> Result<Option<u64>, StateError> {
        self.read_number(HOLD_FILE)
    }

    pub fn set_hold(&self, number: Option<u64>) -> Result<(), StateError> {
        let path = self.dir.join(HOLD_FILE);
        match number {
            Some(n) => paths::write_atomic(&path, format!("{n}\n").as_bytes())?,
            None => {
                if remove_if_present(&path)? {
                    paths::sync_dir(&self.dir)?;
                }
            }
        }
        Ok(())
    }

    /// The reason `commit` was recorded as bad, if it was. Reads only.
    pub fn bad_commit(&self, commit: &str) -> Result<Option<String>, StateError> {
        Ok(paths::read_optional(&self.bad_path(commit)?)?)
    }

    /// Records `commit` as bad with `reason` (durable on return).
    pub fn mark_bad(&self, commit: &str, reason: &str) -> Result<(), StateError> {
        let path = self.bad_path(commit)?;
        paths::create_dir_all(&self.dir.join(BAD_DIR))?;
        paths::write_atomic(&path, reason.as_bytes())?;
        Ok(())
    }

    /// `bad/<commit>`; a commit id is hex, so it names a file and nothing else.
    fn bad_path(&self, commit: &str) -> Result<PathBuf, StateError> {
        if commit.is_empty() || !commit.bytes().all(|b| b.is_ascii_hexdigit()) {
            return Err(StateError::Corrupt {
                what: "a bad-commit record".into(),
                message: format!("{commit:?} is not a commit id"),
            });
        }
        Ok(self.dir.join(BAD_DIR).join(commit.to_ascii_lowercase()))
    }

    pub fn last_result(&self) -> Result<Option<SyncResult>, StateError> {
        self.read_json(LAST_RESULT_FILE)
    }

    /// The JSON record `file`, if there is one; one that does not parse is an error naming it.
    fn read_json<T: serde::de::DeserializeOwned>(
        &self,
        file: &str,
    ) -> Result<Option<T>, StateError> {
        let path = self.dir.join(file);
        let Some(text) = paths::read_optional(&path)? else {
            return Ok(None);
        };
        serde_json::from_str(&text)
            .map(Some)
            .map_err(|e| StateError::Corrupt {
                what: path.display().to_string(),
                message: e.to_string(),
            })
    }

    /// Records the outcome of a sync; returns whether it changed. Skips the write when only the
    /// time changed, so a no-op sync stays a no-op on disk.
    pub fn record_result(&self, result: &SyncResult) -> Result<bool, StateError> {
        if let Some(last) = self.last_result()? {
            let same = last.status == result.status
                && last.commit == result.commit
                && last.message == result.message;
            if same {
                return Ok(false);
            }
        }
        let json = serde_json::to_vec_pretty(result).map_err(|e| StateError::Corrupt {
            what: "last sync result".into(),
            message: e.to_string(),
        })?;
        paths::write_atomic(&self.dir.join(LAST_RESULT_FILE), &json)?;
        Ok(true)
    }

    /// Reserves a block of report sequence numbers, durably, and returns it. Numbers are never
    /// handed out twice, even across crashes: the block's end is on disk before any is used.
    pub fn reserve_sequences(&self) -> Result<std::ops::Range<u64>, StateError> {
        let path = self.dir.join(SEQUENCE_FILE);
        let reserved = self.reserved_sequences()?;
        let end = reserved + SEQUENCE_BLOCK;
        paths::write_atomic(&path, format!("{end}\n").as_bytes())?;
        Ok(reserved + 1..end + 1)
    }

    /// The last sequence number reserved by any process (0 if none): a reporter whose block
    /// does not end there has been overtaken by another process (a CLI `sync` or `rollback`
    /// beside the daemon) and must not send from its older block, which the collector would
    /// take for a replay. A read only, so a heartbeat still writes nothing.
    pub fn reserved_sequences(&self) -> Result<u64, StateError> {
        let path = self.dir.join(SEQUENCE_FILE);
        match paths::read_optional(&path)? {
            Some(text) => text.trim().parse::<u64>().map_err(|_| StateError::Corrupt {
                what: path.display().to_string(),
                message: format!("{:?} is not a sequence number", text.trim()),
            }),
            None => Ok(0),
        }
    }

    /// Queues a sealed report for delivery (durable on return), dropping the oldest beyond
    /// [`OUTBOX_LIMIT`]: each report is a full snapshot, so newer ones supersede older ones.
    pub fn enqueue_report(&self, sequence: u64, envelope: &[u8]) -> Result<(), StateError> {
        let dir = self.dir.join(OUTBOX_DIR);
        paths::create_dir_all(&dir)?;
        paths::write_atomic(&self.outbox_path(sequence), envelope)?;
        let queued = self.queued_sequences()?;
        let excess = queued.len().saturating_sub(OUTBOX_LIMIT);
        for old in &queued[..excess] {
            remove_if_present(&self.outbox_path(*old))?;
        }
        if excess > 0 {
            paths::sync_dir(&dir)?;
        }
        Ok(())
    }

    /// Where this device is enrolled (`enrolled`), if anywhere. Reads only.
    pub fn enrolled(&self) -> Result<Option<Enrolled>, StateError> {
        self.read_json(ENROLLED_FILE)
    }

    /// Records where this device is enrolled (durable on return), or forgets it (`None`).
    pub fn record_enrolled(&self, enrolled: Option<&Enrolled>) -> Result<(), StateError> {
        let path = self.dir.join(ENROLLED_FILE);
        match enrolled {
            Some(e) => {
                let json = serde_json::to_vec(e).map_err(|e| StateError::Corrupt {
                    what: "the enrollment record".into(),
                    message: e.to_string(),
                })?;
                paths::write_atomic(&path, &json)?;
            }
            None => {
                if remove_if_present(&path)? {
                    paths::sync_dir(&self.dir)?;
                }
            }
        }
        Ok(())
    }

    /// The queued reports, oldest first. Reads only (an empty outbox costs one `readdir`).
    pub fn queued_reports(&self) -> Result<Vec<(u64, Vec<u8>)>, StateError> {
        self.queued_sequences()?
            .into_iter()
            .map(|sequence| Ok((sequence, paths::read(&self.outbox_path(sequence))?)))
            .collect()
    }

    /// Removes a delivered report (durable on return).
    pub fn ack_report(&self, sequence: u64) -> Result<(), StateError> {
        if remove_if_present(&self.outbox_path(sequence))? {
            paths::sync_dir(&self.dir.join(OUTBOX_DIR))?;
        }
        Ok(())
    }

    /// The sequences in the outbox, ascending.
    fn queued_sequences(&self) -> Result<Vec<u64>, StateError> {
        numbered_json_files(&self.dir.join(OUTBOX_DIR))
    }

    fn outbox_path(&self, sequence: u64) -> PathBuf {
        // Zero-padded, so a listing sorts like the numbers.
        self.dir
            .join(OUTBOX_DIR)
            .join(format!("{sequence:020}.json"))
    }

    fn generation_path(&self, number: u64) -> PathBuf {
        self.dir
            .join(GENERATIONS_DIR)
            .join(format!("{number}.json"))
    }

    /// Records, durably, that `plan` (from generation `from` to `to`) is about to run: written
    /// after apply wrote the files and before the first `systemctl` call.
    pub fn begin_services(&self, from: u64, to: u64, plan: &ServicePlan) -> Result<(), StateError> {
        let journal = ServicesJournal {
            version: SERVICES_JOURNAL_VERSION,
            from,
            to,
            plan: plan.into(),
        };
        let json = serde_json::to_vec_pretty(&journal).map_err(|e| StateError::Corrupt {
            what: "services journal".into(),
            message: e.to_string(),
        })?;
        paths::write_atomic(&self.dir.join(SERVICES_JOURNAL_FILE), &json)?;
        Ok(())
    }

    /// The service plan that was running when the agent stopped, if one was. Unreadable is an
    /// error: guessing which units to take back could stop the wrong ones.
    pub fn pending_services(&self) -> Result<Option<ServicesJournal>, StateError> {
        let Some(journal) = self.read_json::<ServicesJournal>(SERVICES_JOURNAL_FILE)? else {
            return Ok(None);
        };
        if journal.version != SERVICES_JOURNAL_VERSION {
            return Err(StateError::Corrupt {
                what: self.dir.join(SERVICES_JOURNAL_FILE).display().to_string(),
                message: format!(
                    "version {} is not {SERVICES_JOURNAL_VERSION}",
                    journal.version
                ),
            });
        }
        Ok(Some(journal))
    }

    /// The service plan has finished (its generation recorded) or been undone.
    pub fn end_services(&self) -> Result<(), StateError> {
        if remove_if_present(&self.dir.join(SERVICES_JOURNAL_FILE))? {
            paths::sync_dir(&self.dir)?;
        }
        Ok(())
    }

    fn read_number(&self, file: &str) -> Result<Option<u64>, StateError> {
        let path = self.dir.join(file);
        let Some(text) = paths::read_optional(&path)? else {
            return Ok(None);
        };
        text.trim()
            .parse()
            .map(Some)
            .map_err(|_| StateError::Corrupt {
                what: path.display().to_string(),
                message: format!("{:?} is not a generation number", text.trim()),
            })
    }
}

/// The numbers N of the files `N.json` in `dir`, ascending (none if `dir` does not exist).
/// Other files, such as a temp file left by a crash mid-write, are not records and are skipped.
fn numbered_json_files(dir: &Path) -> Result<Vec<u64>, StateError> {
    let entries = match std::fs::read_dir(dir) {
        Ok(entries) => entries,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(e) => return Err(PathError::new("list", dir, e).into()),
    };
    let mut numbers: Vec<u64> = entries
        .filter_map(|e| e.ok())
        .filter_map(|e| e.file_name().to_str()?.strip_suffix(".json")?.parse().ok())
        .collect();
    numbers.sort_unstable();
    Ok(numbers)
}

/// Removes `path`; true if it was there.
fn remove_if_present(path: &Path) -> Result<bool, StateError> {
    match std::fs::remove_file(path) {
        Ok(()) => Ok(true),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(false),
        Err(e) => Err(PathError::new("remove", path, e).into()),
    }
}

pub fn unix_now() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_outbox_keeps_the_newest_reports_in_order_and_forgets_acked_ones() {
        let dir = tempfile::tempdir().unwrap();
        let state = State::open(dir.path()).unwrap();
        assert!(state.queued_reports().unwrap().is_empty());
        // 9 and 10 sort as numbers, not as text.
        for sequence in 1..=(OUTBOX_LIMIT as u64 + 10) {
            state
                .enqueue_report(sequence, format!("report {sequence}").as_bytes())
                .unwrap();
        }
        let queued = state.queued_reports().unwrap();
        assert_eq!(queued.len(), OUTBOX_LIMIT);
        assert_eq!(queued[0], (11, b"report 11".to_vec()));
        assert_eq!(queued.last().unwrap().0, OUTBOX_LIMIT as u64 + 10);
        state.ack_report(11).unwrap();
        state.ack_report(11).unwrap();
        assert_eq!(state.queued_reports().unwrap()[0].0, 12);
        // A temp file left by a crash mid-write is not a report.
        std::fs::write(
            dir.path()
                .join("outbox/.00000000000000000099.json.shoal-tmp.123"),
            "x",
        )
        .unwrap();
        assert_eq!(state.queued_reports().unwrap().len(), OUTBOX_LIMIT - 1);
        drop(state);
        let state = State::open(dir.path()).unwrap();
        assert_eq!(state.queued_reports().unwrap().len(), OUTBOX_LIMIT - 1);
    }

    #[test]
    fn bad_commits_are_remembered_and_only_commit_ids_name_files() {
        let dir = tempfile::tempdir().unwrap();
        let state = State::open(dir.path()).unwrap();
        let commit = "0123456789abcdef0123456789abcdef01234567";
        assert_eq!(state.bad_commit(commit).unwrap(), None);
        // Asking writes nothing.
        assert!(!dir.path().join(BAD_DIR).exists());
        state.mark_bad(commit, "health gate failed").unwrap();
        assert_eq!(
            state.bad_commit(commit).unwrap().as_deref(),
            Some("health gate failed")
        );
        for hostile in ["../applied-commit", "", "abc/def"] {
            assert!(state.mark_bad(hostile, "x").is_err(), "{hostile:?}");
        }
        assert!(dir.path().join("applied-commit").metadata().is_err());
    }

    #[test]
    fn status_can_read_while_a_sync_holds_the_directory() {
        let dir = tempfile::tempdir().unwrap();
        let syncing = State::open(dir.path()).unwrap();
        syncing.set_hold(Some(3)).unwrap();
        assert!(matches!(
            State::open(dir.path()),
            Err(StateError::Locked { .. })
        ));
        let (reader, busy) = State::open_to_read(dir.path()).unwrap();
        assert!(busy);
        assert_eq!(reader.hold().unwrap(), Some(3));
        drop(reader);
        drop(syncing);
        let (_reader, busy) = State::open_to_read(dir.path()).unwrap();
        assert!(!busy);
    }

    #[test]
    fn a_corrupt_watermark_fails_closed_and_is_not_overwritten() {
        let dir = tempfile::tempdir().unwrap();
        let state = State::open(dir.path()).unwrap();
        std::fs::write(dir.path().join(WATERMARK_FILE), "not a commit\n").unwrap();
        let commit = ObjectId::from_hex(b"0123456789abcdef0123456789abcdef01234567").unwrap();
        let err = state.record_watermark(commit).unwrap_err();
        assert!(
            err.to_string().contains("anti-rollback fails closed"),
            "{err}"
        );
        assert_eq!(
            std::fs::read_to_string(dir.path().join(WATERMARK_FILE)).unwrap(),
            "not a commit\n"
        );
    }
}
