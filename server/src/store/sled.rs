//! The collector's embedded store (`--data DIR`, the default): the only module that opens sled.
//! Keeps each device's latest state, its bounded history, key pins and the fleet counters, and
//! records every accepted report and every operator key change queued with them (decided by
//! `stage`) as one atomic batch, so each is either fully recorded or not at all. One process at
//! a time (sled locks the directory); the counters live in memory and in the same batch.
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
//! | `count/rollout/{commit}/{status}/-` or `.../={wave}` | u64 BE: devices by report target, wave and status |
//! | `halt/{commit}` | `rollout::HaltState` JSON: halted (why, since) and the last resume |
//! | `meta/halts` | the halt list's serial and when it last changed, u64 BE each (16 bytes) |
//! | `adoption/{commit}/{minute: u64 BE}` | devices on the commit at that minute, u64 BE |
//! | `meta/schema` | `1` |
//!
//! Device ids never contain `/` (proto validates them), so the prefixes are unambiguous.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::{Mutex, RwLock};

use serde::Deserialize;
use shoal_proto::{CommitId, KeyId, Status};

use shoal_fleet::tally::{Counter, Entry, RolloutKey, Summary, Tally};

use super::stage::{self, Op, Stored};
use super::{
    check_device_id, registration, CommitCounts, DeviceRecord, HaltChange, HaltChanged, HaltError,
    HistoryEntry, Outcome, Registration, Store, StoreError, StoredHalts, Write,
};

const SCHEMA: &[u8] = b"1";

/// The embedded store. Reads may run concurrently; writes are serialized by `writer`, which is
/// what makes the read-check-write of an ingest race-free (sled batches are atomic, not isolated).
pub struct SledStore {
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
        Counter::Rollout(k) => format!("count/rollout/{}", k.encode()).into_bytes(),
    }
}
fn parse_counter(key: &[u8]) -> Option<Counter> {
    let key = std::str::from_utf8(key).ok()?;
    if key == "count/no-commit" {
        return Some(Counter::Commit(None));
    }
    if let Some(k) = key.strip_prefix("count/rollout/") {
        return RolloutKey::decode(k).map(Counter::Rollout);
    }
    if let Some(s) = key.strip_prefix("count/status/") {
        return Status::from_wire(s).map(Counter::Status);
    }
    key.strip_prefix("count/commit/")
        .map(|c| Counter::Commit(Some(c.to_owned())))
}
fn halt_key(commit: &CommitId) -> Vec<u8> {
    format!("halt/{commit}").into_bytes()
}
const HALTS_META: &[u8] = b"meta/halts";
fn adoption_prefix(commit: &str) -> Vec<u8> {
    format!("adoption/{commit}/").into_bytes()
}
fn u64_value(v: &[u8]) -> Option<u64> {
    Some(u64::from_be_bytes(v.try_into().ok()?))
}

fn entry(r: &DeviceRecord) -> Entry<'_> {
    Entry::of(&r.report, r.last_seen)
}

impl SledStore {
    /// Opens (or creates) the store in `dir` and loads the counters. Fails if another process
    /// has it open (sled locks the directory).
    pub fn open(dir: &Path) -> Result<SledStore, StoreError> {
        let path = dir.to_path_buf();
        let db = sled::Config::new()
            .path(dir)
            .mode(sled::Mode::HighThroughput)
            .open()
            .map_err(|source| StoreError::Sled {
                path: path.clone(),
                source,
            })?;
        let store = SledStore {
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
        for (key, n) in tally.rollouts() {
            batch.insert(
                counter_key(&Counter::Rollout(key.clone())),
                &n.to_be_bytes(),
            );
        }
        self.db.apply_batch(batch).map_err(|e| self.sled_err(e))?;
        Ok(tally)
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

    fn get_u64(&self, key: &[u8]) -> Result<Option<u64>, StoreError> {
        match self.db.get(key).map_err(|e| self.sled_err(e))? {
            None => Ok(None),
            Some(v) => u64_value(&v)
                .map(Some)
                .ok_or_else(|| self.corrupt(key, "not 8 bytes")),
        }
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

    /// Every pinned key, in device id order: `(device id, key id)` (`migrate` copies them,
    /// including devices pre-registered that never reported).
    pub fn pins(&self) -> impl Iterator<Item = Result<(String, String), StoreError>> + '_ {
        self.db.scan_prefix(b"pin/").map(move |kv| {
            let (k, v) = kv.map_err(|e| self.sled_err(e))?;
            let id =
                String::from_utf8(k["pin/".len()..].to_vec()).map_err(|e| self.corrupt(&k, e))?;
            let key = String::from_utf8(v.to_vec()).map_err(|e| self.corrupt(&k, e))?;
            Ok((id, key))
        })
    }

    /// Whether the device has a record (it reported at least once).
    pub fn has_record(&self, id: &str) -> Result<bool, StoreError> {
        self.db
            .contains_key(device_key(id))
            .map_err(|e| self.sled_err(e))
    }

    /// Every kept history entry of every device: `(device id, slot, entry)`, in device id and
    /// slot order.
    pub fn all_history(
        &self,
    ) -> impl Iterator<Item = Result<(String, u64, HistoryEntry), StoreError>> + '_ {
        self.db.scan_prefix(b"history/").map(move |kv| {
            let (k, v) = kv.map_err(|e| self.sled_err(e))?;
            // `history/{id}/{slot: 8 bytes}`; device ids never contain `/`.
            let rest = &k["history/".len()..];
            let (id, slot) = match rest.len().checked_sub(9) {
                Some(at) if rest[at] == b'/' => (&rest[..at], &rest[at + 1..]),
                _ => return Err(self.corrupt(&k, "not history/ID/SLOT")),
            };
            let id = String::from_utf8(id.to_vec()).map_err(|e| self.corrupt(&k, e))?;
            let slot = u64_value(slot).ok_or_else(|| self.corrupt(&k, "slot is not 8 bytes"))?;
            let entry = serde_json::from_slice(&v).map_err(|e| self.corrupt(&k, e))?;
            Ok((id, slot, entry))
        })
    }

    /// Every retired key's last sequence: `(device id, key id, sequence)`.
    pub fn all_retired(
        &self,
    ) -> impl Iterator<Item = Result<(String, String, u64), StoreError>> + '_ {
        self.db.scan_prefix(b"retired/").map(move |kv| {
            let (k, v) = kv.map_err(|e| self.sled_err(e))?;
            // `retired/{id}/{key id}`: the device id ends at the first `/` (key ids may hold `/`).
            let rest =
                std::str::from_utf8(&k["retired/".len()..]).map_err(|e| self.corrupt(&k, e))?;
            let (id, key) = rest
                .split_once('/')
                .ok_or_else(|| self.corrupt(&k, "not retired/ID/KEY"))?;
            let sequence = u64_value(&v).ok_or_else(|| self.corrupt(&k, "not 8 bytes"))?;
            Ok((id.to_owned(), key.to_owned(), sequence))
        })
    }

    /// Adds one staged op to the sled batch (later ops on the same key win).
    fn batch_op(&self, batch: &mut sled::Batch, op: Op) -> Result<(), StoreError> {
        let encode = |key: &[u8], value: Result<Vec<u8>, serde_json::Error>| {
            value.map_err(|e| self.corrupt(key, format!("cannot encode: {e}")))
        };
        match op {
            Op::Record { device_id, record } => {
                let key = device_key(&device_id);
                let json = encode(&key, serde_json::to_vec(&record))?;
                batch.insert(key, json);
                batch.insert(seen_key(&device_id), &record.last_seen.to_be_bytes());
            }
            Op::History {
                device_id,
                slot,
                entry,
            } => {
                let key = history_key(&device_id, slot);
                let json = encode(&key, serde_json::to_vec(&entry))?;
                batch.insert(key, json);
            }
            Op::Evict { device_id, slot } => batch.remove(history_key(&device_id, slot)),
            Op::Pin {
                device_id,
                previous,
                pinned,
            } => {
                if let Some(previous) = previous {
                    batch.remove(key_owner_key(&previous));
                }
                match pinned {
                    Some(key_id) => {
                        batch.insert(pin_key(&device_id), key_id.as_bytes());
                        batch.insert(key_owner_key(&key_id), device_id.as_bytes());
                    }
                    None => batch.remove(pin_key(&device_id)),
                }
            }
            Op::Retire {
                device_id,
                key_id,
                sequence,
            } => batch.insert(retired_key(&device_id, &key_id), &sequence.to_be_bytes()),
        }
        Ok(())
    }
}

impl Stored for SledStore {
    fn record(&self, device_id: &str) -> Result<Option<DeviceRecord>, StoreError> {
        self.get_json(&device_key(device_id))
    }
    fn pin(&self, device_id: &str) -> Result<Option<String>, StoreError> {
        self.get_string(&pin_key(device_id))
    }
    fn owner(&self, key_id: &str) -> Result<Option<String>, StoreError> {
        self.get_string(&key_owner_key(key_id))
    }
    fn retired(&self, device_id: &str, key_id: &str) -> Result<Option<u64>, StoreError> {
        self.get_u64(&retired_key(device_id, key_id))
    }
}

impl Store for SledStore {
    fn describe(&self) -> String {
        format!("sled store in {}", self.path.display())
    }

    /// Records the staged batch in ONE atomic sled batch (latest state, history, pins, counters).
    fn write_batch(&self, writes: Vec<Write>) -> Vec<Outcome> {
        let _writer = self.writer.lock().unwrap_or_else(|p| p.into_inner());
        let (mut results, staged) = stage::stage(self, writes);
        if staged.ops.is_empty() {
            return results;
        }
        let mut batch = sled::Batch::default();
        let mut encoded = Ok(());
        for op in staged.ops {
            encoded = encoded.and_then(|()| self.batch_op(&mut batch, op));
        }
        let counters = self
            .tally
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .counters_after(&staged.delta);
        for (counter, value) in &counters {
            batch.insert(counter_key(counter), &value.to_be_bytes());
        }
        let applied = encoded.and_then(|()| {
            self.db.apply_batch(batch).map_err(|e| StoreError::Write {
                path: self.path.clone(),
                reason: e.to_string(),
            })
        });
        match applied {
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

    /// Makes every write so far durable (fsync).
    fn flush(&self) -> Result<(), StoreError> {
        self.db.flush().map(|_| ()).map_err(|e| self.sled_err(e))
    }

    fn register(&self, device_id: &str, key_id: &KeyId) -> Result<Registration, StoreError> {
        check_device_id(device_id)?;
        let _writer = self.writer.lock().unwrap_or_else(|p| p.into_inner());
        let key_id = key_id.as_str();
        let pinned = self.get_string(&pin_key(device_id))?;
        let owner = self.get_string(&key_owner_key(key_id))?;
        if let Some(done) = registration(device_id, key_id, pinned, owner)? {
            return Ok(done);
        }
        let mut batch = sled::Batch::default();
        batch.insert(pin_key(device_id), key_id.as_bytes());
        batch.insert(key_owner_key(key_id), device_id.as_bytes());
        self.db.apply_batch(batch).map_err(|e| self.sled_err(e))?;
        self.flush()?;
        Ok(Registration::New)
    }

    fn device(&self, id: &str) -> Result<Option<DeviceRecord>, StoreError> {
        self.get_json(&device_key(id))
    }

    fn devices_page(
        &self,
        after: Option<&str>,
        limit: usize,
    ) -> Result<Vec<(String, DeviceRecord)>, StoreError> {
        self.devices(after).take(limit).collect()
    }

    fn history(&self, id: &str) -> Result<Vec<HistoryEntry>, StoreError> {
        let mut out = Vec::new();
        for kv in self.db.scan_prefix(history_prefix(id)).rev() {
            let (k, v) = kv.map_err(|e| self.sled_err(e))?;
            out.push(serde_json::from_slice(&v).map_err(|e| self.corrupt(&k, e))?);
        }
        Ok(out)
    }

    fn pinned_key(&self, id: &str) -> Result<Option<String>, StoreError> {
        self.get_string(&pin_key(id))
    }

    fn key_owner(&self, key_id: &str) -> Result<Option<String>, StoreError> {
        self.get_string(&key_owner_key(key_id))
    }

    /// From the in-memory tally: no scan, no read.
    fn summary(&self, now: u64, stale_after: u64) -> Result<Summary, StoreError> {
        Ok(self
            .tally
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .summary(now, stale_after))
    }

    /// The persisted counters as stored on disk: what start-up loads.
    fn persisted_tally(&self) -> Result<Tally, StoreError> {
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

    fn healthy(&self) -> bool {
        self.db.get(b"meta/schema").is_ok()
    }

    fn halts(&self) -> Result<StoredHalts, StoreError> {
        // Changes hold the writer lock: reading under it sees a serial and its states together.
        let _writer = self.writer.lock().unwrap_or_else(|p| p.into_inner());
        self.halts_unlocked()
    }

    fn halts_serial(&self) -> Result<u64, StoreError> {
        Ok(self.halts_meta()?.0)
    }

    fn change_halt(
        &self,
        commit: &CommitId,
        change: &HaltChange,
        now: u64,
    ) -> Result<HaltChanged, HaltError> {
        let _writer = self.writer.lock().unwrap_or_else(|p| p.into_inner());
        let halts = self.halts_unlocked()?;
        let Some(state) = halts.decide(commit, change, now)? else {
            let state = halts.states.get(commit).cloned().unwrap_or_default();
            return Ok(HaltChanged::new(commit, &state, false, halts.serial));
        };
        let serial = halts.serial + 1;
        let key = halt_key(commit);
        let json = serde_json::to_vec(&state).map_err(|e| self.corrupt(&key, e))?;
        let mut batch = sled::Batch::default();
        batch.insert(key, json);
        batch.insert(
            HALTS_META,
            [serial.to_be_bytes(), now.to_be_bytes()].concat(),
        );
        self.db.apply_batch(batch).map_err(|e| self.sled_err(e))?;
        self.flush()?;
        Ok(HaltChanged::new(commit, &state, true, serial))
    }

    /// From the in-memory tally: no scan of the devices.
    fn rollouts(&self) -> Result<BTreeMap<String, CommitCounts>, StoreError> {
        let tally = self.tally.read().unwrap_or_else(|p| p.into_inner());
        Ok(shoal_fleet::rollout::by_commit(tally.rollouts()))
    }

    fn record_adoption(
        &self,
        minute: u64,
        samples: &[(String, u64)],
        forget_before: u64,
    ) -> Result<(), StoreError> {
        let mut batch = sled::Batch::default();
        for kv in self.db.scan_prefix(b"adoption/") {
            let (k, _) = kv.map_err(|e| self.sled_err(e))?;
            let at = k.len().checked_sub(8).and_then(|i| u64_value(&k[i..]));
            if at.is_none_or(|m| m < forget_before) {
                batch.remove(k);
            }
        }
        for (commit, devices) in samples {
            let key = [adoption_prefix(commit), minute.to_be_bytes().to_vec()].concat();
            batch.insert(key, &devices.to_be_bytes());
        }
        self.db.apply_batch(batch).map_err(|e| self.sled_err(e))
    }

    fn adoption(&self, commit: &str) -> Result<Vec<(u64, u64)>, StoreError> {
        let mut out = Vec::new();
        for kv in self.db.scan_prefix(adoption_prefix(commit)) {
            let (k, v) = kv.map_err(|e| self.sled_err(e))?;
            let minute = u64_value(&k[k.len() - 8..])
                .ok_or_else(|| self.corrupt(&k, "minute is not 8 bytes"))?;
            let devices = u64_value(&v).ok_or_else(|| self.corrupt(&k, "not 8 bytes"))?;
            out.push((minute, devices));
        }
        Ok(out)
    }
}

impl SledStore {
    /// The halt list's serial and when it last changed.
    fn halts_meta(&self) -> Result<(u64, u64), StoreError> {
        match self.db.get(HALTS_META).map_err(|e| self.sled_err(e))? {
            None => Ok((0, 0)),
            Some(v) if v.len() == 16 => Ok((
                u64_value(&v[..8]).unwrap_or_default(),
                u64_value(&v[8..]).unwrap_or_default(),
            )),
            Some(_) => Err(self.corrupt(HALTS_META, "not 16 bytes")),
        }
    }

    fn halts_unlocked(&self) -> Result<StoredHalts, StoreError> {
        let (serial, changed_at) = self.halts_meta()?;
        let mut states = BTreeMap::new();
        for kv in self.db.scan_prefix(b"halt/") {
            let (k, v) = kv.map_err(|e| self.sled_err(e))?;
            let commit = std::str::from_utf8(&k[b"halt/".len()..])
                .ok()
                .and_then(|c| CommitId::parse(c).ok())
                .ok_or_else(|| self.corrupt(&k, "not a commit id"))?;
            let state = serde_json::from_slice(&v).map_err(|e| self.corrupt(&k, e))?;
            states.insert(commit, state);
        }
        Ok(StoredHalts {
            serial,
            changed_at,
            states,
        })
    }
}

impl Drop for SledStore {
    fn drop(&mut self) {
        if let Err(e) = self.db.flush() {
            tracing::error!(path = %self.path.display(), error = %e, "final flush of the store failed");
        }
    }
}
