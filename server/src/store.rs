//! The collector's embedded store: the only module that opens sled. Keeps each device's latest
//! state, its bounded history, key pins and the fleet counters, and applies every accepted report
//! and every operator key change queued with them as one atomic batch, so each is either fully
//! recorded or not at all.
//!
//! Dependencies run one way: `store` reads the state the pure deciders of `shoal-fleet` need
//! (`ingest::decide`, `keys::decide`), calls them, persists the `record` types they return and the
//! `tally` counters they move; that crate cannot know the store. The batch's input and output
//! (`Write`, `Outcome`) are defined here, and `writer` feeds them from its thread.
//!
//! Layout (one sled tree, so a single `apply_batch` is atomic across all of it):
//!
//! | key | value |
//! | --- | --- |
//! | `device/{id}` | `DeviceRecord` JSON |
//! | `history/{id}/{n: u64 BE}` | `HistoryEntry` JSON, slots `history_next - 100 ..` |
//! | `seen/{id}` | last_seen, u64 BE (rebuilds the last-seen index at startup without decoding records) |
//! | `pin/{id}` | key id pinned to the device |
//! | `key/{key id}` | device id the key is pinned to |
//! | `retired/{id}/{key id}` | last sequence accepted from a key the device was unpinned or re-keyed from, u64 BE |
//! | `count/status/{status}`, `count/commit/{hex}`, `count/no-commit` | u64 BE |
//! | `meta/schema` | `1` |
//!
//! Device ids never contain `/` (proto validates them), so the prefixes are unambiguous.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::{Mutex, RwLock};

use serde::{Deserialize, Serialize};
use shoal_proto::{KeyId, Report, Status};

use shoal_fleet::ingest::{self, Current, Enrollment, Rejection, Verified};
use shoal_fleet::keys::{self, KeyChange, KeyRefusal, PinState};
use shoal_fleet::tally::{Counter, Delta, Entry, Summary, Tally};

/// The records this store keeps (defined in `shoal_fleet::record`: the deciders build them).
pub use shoal_fleet::record::{DeviceRecord, HistoryEntry};

const SCHEMA: &[u8] = b"1";

/// What happened to an accepted report.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Accepted {
    pub device_id: String,
    pub sequence: u64,
    /// True when this report pinned the key (first contact with an enrollment token).
    pub enrolled: bool,
    /// The key that signed it (for the log; not part of the answer).
    #[serde(skip)]
    pub key_id: String,
}

/// What an operator's key change did (the answer of `DELETE`/`PUT /api/v1/devices/{id}/key`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct KeyChanged {
    pub device_id: String,
    /// The key pinned now (`None`: unpinned; the next report with an enrollment token pins one).
    pub key_id: Option<String>,
    pub previous_key_id: Option<String>,
    /// False when the device was already in the asked-for state: nothing was written.
    pub changed: bool,
}

/// One write for the writer thread: a verified report, or an operator's key change.
// Reports are nearly every write: boxing them to shrink the rare key change would cost an
// allocation per report on the ingest path.
#[allow(clippy::large_enum_variant)]
#[derive(Debug)]
pub enum Write {
    Report {
        verified: Verified,
        enrollment: Enrollment,
        now: u64,
    },
    Key {
        device_id: String,
        change: KeyChange,
    },
}

/// The result of one `Write`, of the same kind.
#[derive(Debug)]
pub enum Outcome {
    Report(Result<Accepted, IngestError>),
    Key(Result<KeyChanged, KeyChangeError>),
}

impl Outcome {
    pub fn is_ok(&self) -> bool {
        match self {
            Outcome::Report(r) => r.is_ok(),
            Outcome::Key(r) => r.is_ok(),
        }
    }

    /// Turns a success into `error()`: the batch it was in was not (durably) written.
    pub fn fail_if_ok(&mut self, error: impl FnOnce() -> StoreError) {
        match self {
            Outcome::Report(r @ Ok(_)) => *r = Err(IngestError::Store(error())),
            Outcome::Key(r @ Ok(_)) => *r = Err(KeyChangeError::Store(error())),
            _ => {}
        }
    }
}

/// Result of a pre-registration.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Registration {
    New,
    AlreadyRegistered,
}

#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("store at {path}: {source}; check the directory's permissions and free space, or move it aside if sled reports corruption")]
    Sled {
        path: PathBuf,
        #[source]
        source: sled::Error,
    },
    #[error("store at {path}: writing failed: {reason}; check free space and the disk")]
    Write { path: PathBuf, reason: String },
    #[error("store at {path}: record {key} is unreadable: {reason}")]
    Corrupt {
        path: PathBuf,
        key: String,
        reason: String,
    },
    #[error("store at {path} has schema {found:?}, this collector reads schema 1")]
    Schema { path: PathBuf, found: String },
    #[error("device {device_id} is already pinned to key {pinned}; it cannot be registered with another key")]
    DevicePinned { device_id: String, pinned: String },
    #[error("key {key_id} is already pinned to device {device_id}; one key identifies one device")]
    KeyPinned { key_id: String, device_id: String },
    #[error("device id {device_id:?} is not valid: {reason}")]
    BadDeviceId { device_id: String, reason: String },
}

/// Why an ingest did not record the report.
#[derive(Debug, thiserror::Error)]
pub enum IngestError {
    #[error(transparent)]
    Rejected(#[from] Rejection),
    #[error(transparent)]
    Store(#[from] StoreError),
}

/// Why an operator's key change was not recorded.
#[derive(Debug, thiserror::Error)]
pub enum KeyChangeError {
    #[error(transparent)]
    Refused(#[from] KeyRefusal),
    #[error(transparent)]
    Store(#[from] StoreError),
}

/// Writes of one `write_batch` not yet applied, and what they change, so that later writes in
/// the same batch see earlier ones. `None` in `pins`/`owners`: removed in this batch.
#[derive(Default)]
struct Staged {
    batch: sled::Batch,
    /// Whether `batch` holds anything (sled's `Batch` cannot tell).
    dirty: bool,
    delta: Delta,
    records: HashMap<String, DeviceRecord>,
    pins: HashMap<String, Option<String>>,
    owners: HashMap<String, Option<String>>,
    retired: HashMap<Vec<u8>, u64>,
}

/// The collector's store. Reads may run concurrently; writes are serialized by `writer`, which is
/// what makes the read-check-write of an ingest race-free (sled batches are atomic, not isolated).
pub struct Store {
    db: sled::Db,
    path: PathBuf,
    writer: Mutex<()>,
    tally: RwLock<Tally>,
}

fn device_key(id: &str) -> Vec<u8> {
    [b"device/", id.as_bytes()].concat()
}
fn seen_key(id: &str) -> Vec<u8> {
    [b"seen/", id.as_bytes()].concat()
}
fn pin_key(id: &str) -> Vec<u8> {
    [b"pin/", id.as_bytes()].concat()
}
fn key_owner_key(key_id: &str) -> Vec<u8> {
    [b"key/", key_id.as_bytes()].concat()
}
fn retired_key(id: &str, key_id: &str) -> Vec<u8> {
    [b"retired/", id.as_bytes(), b"/", key_id.as_bytes()].concat()
}
fn history_prefix(id: &str) -> Vec<u8> {
    [b"history/", id.as_bytes(), b"/"].concat()
}
fn history_key(id: &str, slot: u64) -> Vec<u8> {
    [history_prefix(id), slot.to_be_bytes().to_vec()].concat()
}
fn counter_key(c: &Counter) -> Vec<u8> {
    match c {
        Counter::Status(s) => format!("count/status/{s}").into_bytes(),
        Counter::Commit(Some(c)) => format!("count/commit/{c}").into_bytes(),
        Counter::Commit(None) => b"count/no-commit".to_vec(),
    }
}
fn parse_counter(key: &[u8]) -> Option<Counter> {
    let key = std::str::from_utf8(key).ok()?;
    if key == "count/no-commit" {
        return Some(Counter::Commit(None));
    }
    if let Some(s) = key.strip_prefix("count/status/") {
        return Status::from_wire(s).map(Counter::Status);
    }
    key.strip_prefix("count/commit/")
        .map(|c| Counter::Commit(Some(c.to_owned())))
}
fn u64_value(v: &[u8]) -> Option<u64> {
    Some(u64::from_be_bytes(v.try_into().ok()?))
}

fn entry(r: &DeviceRecord) -> Entry<'_> {
    Entry {
        status: r.report.status,
        commit: r.report.commit.as_deref(),
        last_seen: r.last_seen,
    }
}

impl Store {
    /// Opens (or creates) the store in `dir` and loads the counters. Fails if another process
    /// has it open (sled locks the directory).
    pub fn open(dir: &Path) -> Result<Store, StoreError> {
        let path = dir.to_path_buf();
        let db = sled::Config::new()
            .path(dir)
            .mode(sled::Mode::HighThroughput)
            .open()
            .map_err(|source| StoreError::Sled {
                path: path.clone(),
                source,
            })?;
        let store = Store {
            db,
            path,
            writer: Mutex::new(()),
            tally: RwLock::new(Tally::default()),
        };
        store.check_schema()?;
        let tally = store.load_tally()?;
        *store.tally.write().unwrap_or_else(|p| p.into_inner()) = tally;
        Ok(store)
    }

    fn sled_err(&self, source: sled::Error) -> StoreError {
        StoreError::Sled {
            path: self.path.clone(),
            source,
        }
    }

    fn corrupt(&self, key: &[u8], reason: impl std::fmt::Display) -> StoreError {
        StoreError::Corrupt {
            path: self.path.clone(),
            key: String::from_utf8_lossy(key).into_owned(),
            reason: reason.to_string(),
        }
    }

    fn check_schema(&self) -> Result<(), StoreError> {
        match self.db.get(b"meta/schema").map_err(|e| self.sled_err(e))? {
            Some(v) if v.as_ref() == SCHEMA => Ok(()),
            Some(v) => Err(StoreError::Schema {
                path: self.path.clone(),
                found: String::from_utf8_lossy(&v).into_owned(),
            }),
            None => {
                self.db
                    .insert(b"meta/schema", SCHEMA)
                    .map_err(|e| self.sled_err(e))?;
                Ok(())
            }
        }
    }

    /// Loads the persisted counters and the last-seen index. If they disagree with each other
    /// (they are written in the same batch, so only a bug could cause it), recounts from the
    /// records and rewrites the counters.
    fn load_tally(&self) -> Result<Tally, StoreError> {
        let mut tally = self.persisted_tally()?;
        if tally.total() != tally.seen_total() {
            tracing::warn!(
                counted = tally.total(),
                indexed = tally.seen_total(),
                "fleet counters disagree with the device index; recounting from device records"
            );
            tally = self.recount()?;
        }
        Ok(tally)
    }

    /// Recomputes every counter from the device records and persists them.
    fn recount(&self) -> Result<Tally, StoreError> {
        let mut tally = Tally::default();
        let mut batch = sled::Batch::default();
        for kv in self.db.scan_prefix(b"count/") {
            let (k, _) = kv.map_err(|e| self.sled_err(e))?;
            batch.remove(k);
        }
        for item in self.devices(None) {
            let (id, record) = item?;
            tally.apply(None, entry(&record));
            batch.insert(seen_key(&id), &record.last_seen.to_be_bytes());
        }
        for s in Status::ALL {
            batch.insert(
                counter_key(&Counter::Status(s)),
                &tally.status(s).to_be_bytes(),
            );
        }
        let summary = tally.summary(0, 0);
        for (commit, n) in summary.by_commit {
            batch.insert(
                counter_key(&Counter::Commit(Some(commit))),
                &n.to_be_bytes(),
            );
        }
        batch.insert(
            counter_key(&Counter::Commit(None)),
            &summary.no_commit.to_be_bytes(),
        );
        self.db.apply_batch(batch).map_err(|e| self.sled_err(e))?;
        Ok(tally)
    }

    /// Makes every write so far durable (fsync).
    pub fn flush(&self) -> Result<(), StoreError> {
        self.db.flush().map(|_| ()).map_err(|e| self.sled_err(e))
    }

    /// Pins `key_id` to `device_id` before the device's first report (operator pre-registration).
    /// Idempotent for the same pair; refuses to re-key a device or to share a key.
    pub fn register(&self, device_id: &str, key_id: &KeyId) -> Result<Registration, StoreError> {
        Report::new(device_id, Status::Converged, 0)
            .validate()
            .map_err(|e| StoreError::BadDeviceId {
                device_id: device_id.to_owned(),
                reason: e.to_string(),
            })?;
        let _writer = self.writer.lock().unwrap_or_else(|p| p.into_inner());
        let key_id = key_id.as_str();
        let pinned = self.get_string(&pin_key(device_id))?;
        let owner = self.get_string(&key_owner_key(key_id))?;
        match (pinned, owner) {
            (Some(p), _) if p != key_id => Err(StoreError::DevicePinned {
                device_id: device_id.to_owned(),
                pinned: p,
            }),
            (_, Some(o)) if o != device_id => Err(StoreError::KeyPinned {
                key_id: key_id.to_owned(),
                device_id: o,
            }),
            (Some(_), Some(_)) => Ok(Registration::AlreadyRegistered),
            _ => {
                let mut batch = sled::Batch::default();
                batch.insert(pin_key(device_id), key_id.as_bytes());
                batch.insert(key_owner_key(key_id), device_id.as_bytes());
                self.db.apply_batch(batch).map_err(|e| self.sled_err(e))?;
                self.flush()?;
                Ok(Registration::New)
            }
        }
    }

    fn get_string(&self, key: &[u8]) -> Result<Option<String>, StoreError> {
        match self.db.get(key).map_err(|e| self.sled_err(e))? {
            None => Ok(None),
            Some(v) => String::from_utf8(v.to_vec())
                .map(Some)
                .map_err(|e| self.corrupt(key, e)),
        }
    }

    fn get_json<T: for<'de> Deserialize<'de>>(&self, key: &[u8]) -> Result<Option<T>, StoreError> {
        match self.db.get(key).map_err(|e| self.sled_err(e))? {
            None => Ok(None),
            Some(v) => serde_json::from_slice(&v)
                .map(Some)
                .map_err(|e| self.corrupt(key, e)),
        }
    }

    /// Checks one verified report and records it if accepted (see `write_batch`).
    pub fn ingest(
        &self,
        verified: Verified,
        enrollment: Enrollment,
        now: u64,
    ) -> Result<Accepted, IngestError> {
        self.ingest_batch(vec![(verified, enrollment, now)])
            .pop()
            .unwrap_or_else(|| unreachable!("one result per report"))
    }

    /// `write_batch` of reports only.
    pub fn ingest_batch(
        &self,
        reports: Vec<(Verified, Enrollment, u64)>,
    ) -> Vec<Result<Accepted, IngestError>> {
        let writes = reports
            .into_iter()
            .map(|(verified, enrollment, now)| Write::Report {
                verified,
                enrollment,
                now,
            })
            .collect();
        self.write_batch(writes)
            .into_iter()
            .map(|outcome| match outcome {
                Outcome::Report(r) => r,
                // write_batch answers each write with an outcome of its own kind.
                Outcome::Key(_) => unreachable!("a key outcome for a report"),
            })
            .collect()
    }

    /// Applies one operator key change (see `write_batch`). Not yet durable: `flush`.
    pub fn change_key(
        &self,
        device_id: &str,
        change: KeyChange,
    ) -> Result<KeyChanged, KeyChangeError> {
        let write = Write::Key {
            device_id: device_id.to_owned(),
            change,
        };
        match self.write_batch(vec![write]).pop() {
            Some(Outcome::Key(r)) => r,
            // write_batch answers each write with an outcome of its own kind.
            _ => unreachable!("one key outcome for one key change"),
        }
    }

    /// Checks each write against the store as left by the writes before it (in this batch or
    /// earlier): a report against its device's pinned key and last sequence, a key change against
    /// the device's pin. Records every accepted one — latest state, history, pins, counters — in
    /// ONE atomic sled batch: all of them or none. Returns one outcome per write, in order. Not
    /// yet durable: `flush` before acknowledging.
    pub fn write_batch(&self, writes: Vec<Write>) -> Vec<Outcome> {
        let _writer = self.writer.lock().unwrap_or_else(|p| p.into_inner());
        let mut staged = Staged::default();
        let mut results: Vec<Outcome> = writes
            .into_iter()
            .map(|write| match write {
                Write::Report {
                    verified,
                    enrollment,
                    now,
                } => Outcome::Report(self.stage(verified, enrollment, now, &mut staged)),
                Write::Key { device_id, change } => {
                    Outcome::Key(self.stage_key(&device_id, &change, &mut staged))
                }
            })
            .collect();
        if !staged.dirty {
            return results;
        }
        let counters = self
            .tally
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .counters_after(&staged.delta);
        for (counter, value) in &counters {
            staged
                .batch
                .insert(counter_key(counter), &value.to_be_bytes());
        }
        match self.db.apply_batch(staged.batch) {
            Ok(()) => {
                // Only after the batch is in: in-memory counts never show an unrecorded report.
                self.tally
                    .write()
                    .unwrap_or_else(|p| p.into_inner())
                    .apply_delta(&staged.delta);
            }
            Err(e) => {
                let reason = e.to_string();
                for r in &mut results {
                    r.fail_if_ok(|| StoreError::Write {
                        path: self.path.clone(),
                        reason: reason.clone(),
                    });
                }
            }
        }
        results
    }

    /// The key pinned to `device_id` as staged, else as stored.
    fn staged_pin(&self, device_id: &str, staged: &Staged) -> Result<Option<String>, StoreError> {
        match staged.pins.get(device_id) {
            Some(k) => Ok(k.clone()),
            None => self.get_string(&pin_key(device_id)),
        }
    }

    /// The device `key_id` is pinned to as staged, else as stored.
    fn staged_owner(&self, key_id: &str, staged: &Staged) -> Result<Option<String>, StoreError> {
        match staged.owners.get(key_id) {
            Some(d) => Ok(d.clone()),
            None => self.get_string(&key_owner_key(key_id)),
        }
    }

    /// The device's latest state as staged, else as stored.
    fn staged_record(
        &self,
        device_id: &str,
        staged: &Staged,
    ) -> Result<Option<DeviceRecord>, StoreError> {
        match staged.records.get(device_id) {
            Some(r) => Ok(Some(r.clone())),
            None => self.get_json(&device_key(device_id)),
        }
    }

    /// Decides one report against the store as modified by the writes staged before it, and
    /// stages its writes.
    fn stage(
        &self,
        verified: Verified,
        enrollment: Enrollment,
        now: u64,
        staged: &mut Staged,
    ) -> Result<Accepted, IngestError> {
        let device_id = verified.report.device_id.clone();
        let key_id = verified.key_id.to_string();
        let record = self.staged_record(&device_id, staged)?;
        let pinned_key = self.staged_pin(&device_id, staged)?;
        let key_owner = if pinned_key.as_deref() == Some(key_id.as_str()) {
            // Pins are written in pairs: the device's pinned key is owned by the device.
            Some(device_id.clone())
        } else {
            self.staged_owner(&key_id, staged)?
        };
        // Only a report from another key than the device's latest pays this read.
        let retired_sequence = match &record {
            Some(r) if r.key_id != key_id => {
                let key = retired_key(&device_id, &key_id);
                match staged.retired.get(&key) {
                    Some(n) => Some(*n),
                    None => self.get_u64(&key)?,
                }
            }
            _ => None,
        };
        let old = record
            .as_ref()
            .map(|r| (r.report.status, r.report.commit.clone(), r.last_seen));
        let current = Current {
            pinned_key,
            key_owner,
            record,
            retired_sequence,
        };
        let decision = ingest::decide(current, verified, enrollment, now)?;

        let encode = |key: Vec<u8>, value: Result<Vec<u8>, serde_json::Error>| {
            value.map_err(|e| self.corrupt(&key, format!("cannot encode: {e}")))
        };
        let (slot, history) = &decision.history;
        let record_json = encode(device_key(&device_id), serde_json::to_vec(&decision.record))?;
        let history_json = encode(history_key(&device_id, *slot), serde_json::to_vec(history))?;
        staged.dirty = true;
        let batch = &mut staged.batch;
        batch.insert(device_key(&device_id), record_json);
        batch.insert(history_key(&device_id, *slot), history_json);
        if let Some(evict) = decision.evict {
            batch.remove(history_key(&device_id, evict));
        }
        batch.insert(
            seen_key(&device_id),
            &decision.record.last_seen.to_be_bytes(),
        );
        if decision.enroll {
            batch.insert(pin_key(&device_id), key_id.as_bytes());
            batch.insert(key_owner_key(&key_id), device_id.as_bytes());
            staged.pins.insert(device_id.clone(), Some(key_id.clone()));
            staged
                .owners
                .insert(key_id.clone(), Some(device_id.clone()));
        }
        let old_entry = old.as_ref().map(|(status, commit, last_seen)| Entry {
            status: *status,
            commit: commit.as_deref(),
            last_seen: *last_seen,
        });
        staged.delta.record(old_entry, entry(&decision.record));
        let accepted = Accepted {
            device_id: device_id.clone(),
            sequence: decision.record.report.sequence,
            enrolled: decision.enroll,
            key_id,
        };
        staged.records.insert(device_id, decision.record);
        Ok(accepted)
    }

    /// Decides one operator key change against the store as modified by the writes staged before
    /// it, and stages its writes: the old pin pair (`pin/{id}`, `key/{key}`) removed, the new
    /// pair written, the old key's last sequence kept as its floor. The device's record, history
    /// and the counters are not touched.
    fn stage_key(
        &self,
        device_id: &str,
        change: &KeyChange,
        staged: &mut Staged,
    ) -> Result<KeyChanged, KeyChangeError> {
        let record = self.staged_record(device_id, staged)?;
        let pinned_key = self.staged_pin(device_id, staged)?;
        let key_owner = match change {
            KeyChange::Pin(key) => self.staged_owner(key.as_str(), staged)?,
            KeyChange::Unpin => None,
        };
        let state = PinState {
            pinned_key,
            key_owner,
            last_report: record.map(|r| (r.key_id, r.report.sequence)),
        };
        let decision = keys::decide(device_id, state, change)?;
        let answer = KeyChanged {
            device_id: device_id.to_owned(),
            key_id: decision.pinned.clone(),
            previous_key_id: decision.previous.clone(),
            changed: decision.changed(),
        };
        if !decision.changed() {
            return Ok(answer);
        }
        staged.dirty = true;
        let batch = &mut staged.batch;
        if let Some(previous) = &decision.previous {
            batch.remove(key_owner_key(previous));
            staged.owners.insert(previous.clone(), None);
        }
        match &decision.pinned {
            Some(key_id) => {
                batch.insert(pin_key(device_id), key_id.as_bytes());
                batch.insert(key_owner_key(key_id), device_id.as_bytes());
                staged
                    .owners
                    .insert(key_id.clone(), Some(device_id.to_owned()));
            }
            None => batch.remove(pin_key(device_id)),
        }
        staged
            .pins
            .insert(device_id.to_owned(), decision.pinned.clone());
        if let Some((key_id, sequence)) = &decision.retire {
            let key = retired_key(device_id, key_id);
            batch.insert(key.clone(), &sequence.to_be_bytes());
            staged.retired.insert(key, *sequence);
        }
        Ok(answer)
    }

    fn get_u64(&self, key: &[u8]) -> Result<Option<u64>, StoreError> {
        match self.db.get(key).map_err(|e| self.sled_err(e))? {
            None => Ok(None),
            Some(v) => u64_value(&v)
                .map(Some)
                .ok_or_else(|| self.corrupt(key, "not 8 bytes")),
        }
    }

    /// One device's latest state.
    pub fn device(&self, id: &str) -> Result<Option<DeviceRecord>, StoreError> {
        self.get_json(&device_key(id))
    }

    /// Devices in id order, starting after `after` (exclusive).
    pub fn devices(
        &self,
        after: Option<&str>,
    ) -> impl Iterator<Item = Result<(String, DeviceRecord), StoreError>> + '_ {
        let start = match after {
            // The smallest key greater than `device/{after}`.
            Some(a) => [device_key(a), vec![0]].concat(),
            None => b"device/".to_vec(),
        };
        self.db
            .range(start..)
            .take_while(|kv| kv.as_ref().map_or(true, |(k, _)| k.starts_with(b"device/")))
            .map(move |kv| {
                let (k, v) = kv.map_err(|e| self.sled_err(e))?;
                let id = String::from_utf8_lossy(&k["device/".len()..]).into_owned();
                let record = serde_json::from_slice(&v).map_err(|e| self.corrupt(&k, e))?;
                Ok((id, record))
            })
    }

    /// A device's kept history, newest first.
    pub fn history(&self, id: &str) -> Result<Vec<HistoryEntry>, StoreError> {
        let mut out = Vec::new();
        for kv in self.db.scan_prefix(history_prefix(id)).rev() {
            let (k, v) = kv.map_err(|e| self.sled_err(e))?;
            out.push(serde_json::from_slice(&v).map_err(|e| self.corrupt(&k, e))?);
        }
        Ok(out)
    }

    /// The key pinned to a device (pre-registered or enrolled).
    pub fn pinned_key(&self, id: &str) -> Result<Option<String>, StoreError> {
        self.get_string(&pin_key(id))
    }

    /// The device a key is pinned to.
    pub fn key_owner(&self, key_id: &str) -> Result<Option<String>, StoreError> {
        self.get_string(&key_owner_key(key_id))
    }

    /// Fleet counts from the in-memory tally: no scan.
    pub fn summary(&self, now: u64, stale_after: u64) -> Summary {
        self.tally
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .summary(now, stale_after)
    }

    /// The persisted counters as stored on disk: what start-up loads, and what consistency
    /// checks and tests compare with.
    pub fn persisted_tally(&self) -> Result<Tally, StoreError> {
        let mut tally = Tally::default();
        for kv in self.db.scan_prefix(b"count/") {
            let (k, v) = kv.map_err(|e| self.sled_err(e))?;
            let counter = parse_counter(&k).ok_or_else(|| self.corrupt(&k, "unknown counter"))?;
            let value = u64_value(&v).ok_or_else(|| self.corrupt(&k, "counter is not 8 bytes"))?;
            tally.load_counter(counter, value);
        }
        for kv in self.db.scan_prefix(b"seen/") {
            let (k, v) = kv.map_err(|e| self.sled_err(e))?;
            let seen = u64_value(&v).ok_or_else(|| self.corrupt(&k, "last_seen is not 8 bytes"))?;
            tally.load_seen(seen);
        }
        Ok(tally)
    }

    /// Whether the store answers reads (for /healthz).
    pub fn healthy(&self) -> bool {
        self.db.get(b"meta/schema").is_ok()
    }
}

impl Drop for Store {
    fn drop(&mut self) {
        if let Err(e) = self.db.flush() {
            tracing::error!(path = %self.path.display(), error = %e, "final flush of the store failed");
        }
    }
}
