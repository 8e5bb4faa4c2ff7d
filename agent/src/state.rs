//! Durable agent state under `state_dir`. The only module that opens sled; it never touches
//! managed paths.
//!
//! Small state that every sync reads lives in fsynced, atomically renamed files, so a sync with
//! nothing to do reads them and writes nothing (sled writes to its files on every open):
//! `applied-commit` (the anti-rollback watermark), `current-generation`, `hold`,
//! `last-result.json`, and `generations/N.json` (each generation's manifest). sled is opened only
//! when something changes; it mirrors the generations and the watermark (the watermark is
//! cross-checked against it before every move, failing closed on disagreement) and holds the
//! commits recorded as bad.

use std::collections::BTreeMap;
use std::fs::File;
use std::path::{Path, PathBuf};

use gix::ObjectId;
use serde::{Deserialize, Serialize};

use crate::paths::{self, PathError};
use crate::plan::Manifest;
use crate::services::ServiceRecord;

const WATERMARK_FILE: &str = "applied-commit";
const CURRENT_FILE: &str = "current-generation";
const HOLD_FILE: &str = "hold";
const LAST_RESULT_FILE: &str = "last-result.json";
const SEQUENCE_FILE: &str = "report-sequence";
/// Report sequence numbers are reserved this many at a time, so most reports cost no write.
const SEQUENCE_BLOCK: u64 = 1000;
/// The outbox keeps at most this many reports; older ones are superseded by newer ones.
pub const OUTBOX_LIMIT: usize = 64;
const GENERATIONS_DIR: &str = "generations";
const MIRROR_DIR: &str = "mirror.git";
const DB_DIR: &str = "db";
const LOCK_FILE: &str = "lock";

// Keys of the `meta` tree.
const CURRENT: &[u8] = b"current";
const WATERMARK: &[u8] = b"watermark";

#[derive(Debug, thiserror::Error)]
pub enum StateError {
    #[error("cannot use the state directory: {0}")]
    Io(#[from] PathError),
    #[error("another shoal-agent is using the state directory {} (it holds {}); wait for it to finish or stop it", dir.display(), dir.join(LOCK_FILE).display())]
    Locked { dir: PathBuf },
    #[error("the state database {} failed: {message}", path.display())]
    Db { path: PathBuf, message: String },
    #[error("{} is corrupt ({content:?} is not a commit id); refusing to guess the applied commit (anti-rollback fails closed): restore it from the database value {db:?} if you trust it", path.display())]
    CorruptWatermark {
        path: PathBuf,
        content: String,
        db: Option<String>,
    },
    #[error("the anti-rollback watermark disagrees: {} says {file}, the database says {db}; refusing to sync (fail closed). Check which commit the device really runs, then write it to {}", path.display(), path.display())]
    WatermarkMismatch {
        path: PathBuf,
        file: String,
        db: String,
    },
    #[error(
        "generation {number} does not exist; `shoal-agent history` lists the generations kept"
    )]
    NoSuchGeneration { number: u64 },
    #[error("corrupt record for {what} in the state database: {message}")]
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

/// The agent's state directory, locked for this process.
pub struct State {
    dir: PathBuf,
    // Opened on first use: a sync that changes nothing never opens it.
    db: std::cell::OnceCell<Db>,
    // Held for the lifetime of `State`: one agent per state directory.
    _lock: File,
}

struct Db {
    db: sled::Db,
    meta: sled::Tree,
    generations: sled::Tree,
    bad: sled::Tree,
    outbox: sled::Tree,
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
            db: std::cell::OnceCell::new(),
            _lock: lock,
        })
    }

    fn db(&self) -> Result<&Db, StateError> {
        if let Some(db) = self.db.get() {
            return Ok(db);
        }
        let db = open_db(&self.dir)?;
        let tree = |name: &str| {
            db.open_tree(name).map_err(|e| StateError::Db {
                path: self.dir.join(DB_DIR),
                message: e.to_string(),
            })
        };
        let opened = Db {
            meta: tree("meta")?,
            generations: tree("generations")?,
            bad: tree("bad")?,
            outbox: tree("outbox")?,
            db,
        };
        Ok(self.db.get_or_init(|| opened))
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
                db: None,
            })
    }

    /// Moves the watermark to `commit`, after checking that the file and the database agree on
    /// where it was (fail closed). File first, then the database, flushed: a crash between the
    /// two leaves them disagreeing, which the next move reports with both values.
    pub fn record_watermark(&self, commit: ObjectId) -> Result<(), StateError> {
        let path = self.dir.join(WATERMARK_FILE);
        let file = self.applied_commit()?.map(|id| id.to_string());
        let db = self.get_string(WATERMARK)?;
        if let (Some(file), Some(db)) = (&file, &db) {
            if file != db {
                return Err(StateError::WatermarkMismatch {
                    path,
                    file: file.clone(),
                    db: db.clone(),
                });
            }
        }
        if file.is_none() && db.is_some() {
            return Err(StateError::WatermarkMismatch {
                path,
                file: "nothing (the file is missing)".into(),
                db: db.unwrap_or_default(),
            });
        }
        let hex = commit.to_string();
        paths::write_atomic(&path, format!("{hex}\n").as_bytes())?;
        self.put(WATERMARK, hex.as_bytes())?;
        self.flush()
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
        let dir = self.dir.join(GENERATIONS_DIR);
        let entries = match std::fs::read_dir(&dir) {
            Ok(entries) => entries,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
            Err(e) => return Err(PathError::new("list", &dir, e).into()),
        };
        let mut numbers: Vec<u64> = entries
            .filter_map(|e| e.ok())
            .filter_map(|e| {
                let name = e.file_name();
                name.to_str()?.strip_suffix(".json")?.parse().ok()
            })
            .collect();
        numbers.sort_unstable();
        numbers.into_iter().map(|n| self.generation(n)).collect()
    }

    /// One more than the newest generation ever kept: numbers are never reused, because
    /// recovery tells N-1 from N by whether N is recorded.
    pub fn next_generation_number(&self) -> Result<u64, StateError> {
        let newest = self.generations()?.last().map_or(0, |g| g.number);
        let current = self.current_number()?.unwrap_or(0);
        Ok(newest.max(current) + 1)
    }

    /// Records `generation` as applied and current, durably: `generations/N.json`, then the
    /// database's copy, then `current-generation` (the commit point recovery looks at).
    pub fn commit_generation(&self, generation: &Generation) -> Result<(), StateError> {
        let json = serde_json::to_vec_pretty(generation).map_err(|e| StateError::Corrupt {
            what: format!("generation {}", generation.number),
            message: e.to_string(),
        })?;
        paths::create_dir_all(&self.dir.join(GENERATIONS_DIR))?;
        paths::write_atomic(&self.generation_path(generation.number), &json)?;
        let db = self.db()?;
        db.generations
            .insert(generation.number.to_be_bytes(), json)
            .map_err(|e| self.db_error(e))?;
        self.set_current(generation.number)
    }

    /// Makes generation `number` the current one (durable on return).
    pub fn set_current(&self, number: u64) -> Result<(), StateError> {
        self.put(CURRENT, &number.to_be_bytes())?;
        self.flush()?;
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
            self.db()?
                .generations
                .remove(n.to_be_bytes())
                .map_err(|e| self.db_error(e))?;
            let file = self.generation_path(*n);
            if let Err(e) = std::fs::remove_file(&file) {
                if e.kind() != std::io::ErrorKind::NotFound {
                    return Err(PathError::new("remove", &file, e).into());
                }
            }
        }
        if !doomed.is_empty() {
            self.flush()?;
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
            None => match std::fs::remove_file(&path) {
                Ok(()) => paths::sync_dir(&self.dir)?,
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
                Err(e) => return Err(PathError::new("remove", &path, e).into()),
            },
        }
        Ok(())
    }

    /// The reason `commit` was recorded as bad, if it was.
    pub fn bad_commit(&self, commit: &str) -> Result<Option<String>, StateError> {
        let value = self.db()?.bad.get(commit).map_err(|e| self.db_error(e))?;
        Ok(value.map(|v| String::from_utf8_lossy(&v).into_owned()))
    }

    pub fn mark_bad(&self, commit: &str, reason: &str) -> Result<(), StateError> {
        self.db()?
            .bad
            .insert(commit, reason.as_bytes())
            .map_err(|e| self.db_error(e))?;
        self.flush()
    }

    pub fn last_result(&self) -> Result<Option<SyncResult>, StateError> {
        let path = self.dir.join(LAST_RESULT_FILE);
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
        let outbox = self.outbox()?;
        outbox
            .insert(sequence.to_be_bytes(), envelope)
            .map_err(|e| self.db_error(e))?;
        while outbox.len() > OUTBOX_LIMIT {
            outbox.pop_min().map_err(|e| self.db_error(e))?;
        }
        self.flush()
    }

    /// The queued reports, oldest first.
    pub fn queued_reports(&self) -> Result<Vec<(u64, Vec<u8>)>, StateError> {
        self.outbox()?
            .iter()
            .map(|item| {
                let (key, value) = item.map_err(|e| self.db_error(e))?;
                let seq = <[u8; 8]>::try_from(key.as_ref())
                    .map(u64::from_be_bytes)
                    .unwrap_or(0);
                Ok((seq, value.to_vec()))
            })
            .collect()
    }

    /// Removes a delivered report (durable on return).
    pub fn ack_report(&self, sequence: u64) -> Result<(), StateError> {
        self.outbox()?
            .remove(sequence.to_be_bytes())
            .map_err(|e| self.db_error(e))?;
        self.flush()
    }

    fn outbox(&self) -> Result<&sled::Tree, StateError> {
        Ok(&self.db()?.outbox)
    }

    fn generation_path(&self, number: u64) -> PathBuf {
        self.dir
            .join(GENERATIONS_DIR)
            .join(format!("{number}.json"))
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

    fn put(&self, key: &[u8], value: &[u8]) -> Result<(), StateError> {
        self.db()?
            .meta
            .insert(key, value)
            .map_err(|e| self.db_error(e))?;
        Ok(())
    }

    fn get_string(&self, key: &[u8]) -> Result<Option<String>, StateError> {
        let value = self.db()?.meta.get(key).map_err(|e| self.db_error(e))?;
        Ok(value.map(|v| String::from_utf8_lossy(&v).into_owned()))
    }

    /// sled writes are durable only after `flush` (its background flush runs every 500 ms).
    fn flush(&self) -> Result<(), StateError> {
        self.db()?.db.flush().map_err(|e| self.db_error(e))?;
        Ok(())
    }

    fn db_error(&self, e: sled::Error) -> StateError {
        StateError::Db {
            path: self.dir.join(DB_DIR),
            message: e.to_string(),
        }
    }
}

/// Opens sled; if it reports corruption, moves it aside and rebuilds it from the files kept
/// beside it (generations/N.json, current-generation, applied-commit).
fn open_db(dir: &Path) -> Result<sled::Db, StateError> {
    let path = dir.join(DB_DIR);
    let db_error = |e: sled::Error| StateError::Db {
        path: path.clone(),
        message: e.to_string(),
    };
    match open_waiting_for_lock(&path) {
        Ok(db) => Ok(db),
        Err(sled::Error::Corruption { .. }) => {
            let aside = dir.join(format!("db.corrupt.{}", unix_now()));
            tracing::error!(db = %path.display(), aside = %aside.display(), "state database is corrupt; rebuilding it from generations on disk");
            std::fs::rename(&path, &aside).map_err(|e| PathError::new("move aside", &path, e))?;
            let db = sled::open(&path).map_err(db_error)?;
            rebuild(dir, &db)?;
            Ok(db)
        }
        Err(e) => Err(db_error(e)),
    }
}

/// How long to wait for sled's own file lock before failing.
const DB_LOCK_WAIT: std::time::Duration = std::time::Duration::from_secs(5);

/// `sled::open`, retried while another holder has its lock: a CLI `status` or `rollback`
/// reading the database for a moment beside the daemon, or, in the same process, the
/// background flusher of a handle that was just dropped (it lets go of the lock a little after
/// the drop). Both are over in milliseconds; only a lock held longer is an error.
fn open_waiting_for_lock(path: &Path) -> Result<sled::Db, sled::Error> {
    let deadline = std::time::Instant::now() + DB_LOCK_WAIT;
    loop {
        match sled::open(path) {
            // sled 0.34 reports a held lock as an `Other` I/O error with this text (the
            // flock's EWOULDBLOCK is only in the message).
            Err(sled::Error::Io(e))
                if e.to_string().contains("could not acquire lock")
                    && std::time::Instant::now() < deadline =>
            {
                std::thread::sleep(std::time::Duration::from_millis(10));
            }
            other => return other,
        }
    }
}

fn rebuild(dir: &Path, db: &sled::Db) -> Result<(), StateError> {
    let db_error = |e: sled::Error| StateError::Db {
        path: dir.join(DB_DIR),
        message: e.to_string(),
    };
    let generations = db.open_tree("generations").map_err(db_error)?;
    let meta = db.open_tree("meta").map_err(db_error)?;
    let gen_dir = dir.join(GENERATIONS_DIR);
    if let Ok(entries) = std::fs::read_dir(&gen_dir) {
        for entry in entries.flatten() {
            let raw = paths::read(&entry.path())?;
            if let Ok(g) = serde_json::from_slice::<Generation>(&raw) {
                generations
                    .insert(g.number.to_be_bytes(), raw)
                    .map_err(db_error)?;
            }
        }
    }
    if let Some(text) = paths::read_optional(&dir.join(CURRENT_FILE))? {
        if let Ok(n) = text.trim().parse::<u64>() {
            meta.insert(CURRENT, &n.to_be_bytes()).map_err(db_error)?;
        }
    }
    if let Some(text) = paths::read_optional(&dir.join(WATERMARK_FILE))? {
        meta.insert(WATERMARK, text.trim().as_bytes())
            .map_err(db_error)?;
    }
    db.flush().map_err(db_error)?;
    Ok(())
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

    /// The daemon's pattern: a sync's `State` (with the database open) is dropped and the
    /// reporter opens a new one at once, while sled's background work from the old handle may
    /// still hold the database's lock for a moment. Here a handle of the test's holds the lock
    /// for 300 ms: opening must wait for it rather than fail.
    #[test]
    fn opening_the_database_waits_for_a_lock_held_briefly() {
        let dir = tempfile::tempdir().unwrap();
        let lingering = sled::open(dir.path().join(DB_DIR)).unwrap();
        let release = std::thread::spawn(move || {
            std::thread::sleep(std::time::Duration::from_millis(300));
            drop(lingering);
        });
        let state = State::open(dir.path()).unwrap();
        state.enqueue_report(1, b"{}").unwrap();
        assert_eq!(state.queued_reports().unwrap().len(), 1);
        release.join().unwrap();
    }
}
