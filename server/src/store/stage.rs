//! Stages one batch of writes for any store: each report and key change is decided by
//! `shoal-fleet`'s pure deciders against the stored state as left by the writes before it in the
//! same batch, and becomes a list of `Op`s plus the tally `Delta` that the store then records
//! atomically. The deciding and the in-batch ordering live here once, for sled and PostgreSQL
//! alike; a store only says how to read its state (`Stored`) and how to write the `Op`s.

use std::collections::HashMap;

use shoal_fleet::ingest::{self, Current, Enrollment, Verified};
use shoal_fleet::keys::{self, KeyChange, PinState};
use shoal_fleet::record::{DeviceRecord, HistoryEntry};
use shoal_fleet::tally::{Delta, Entry};

use super::{Accepted, IngestError, KeyChangeError, KeyChanged, Outcome, StoreError, Write};

/// The stored state a batch is decided against (before the batch).
pub trait Stored {
    /// The device's latest accepted state.
    fn record(&self, device_id: &str) -> Result<Option<DeviceRecord>, StoreError>;
    /// The key pinned to the device.
    fn pin(&self, device_id: &str) -> Result<Option<String>, StoreError>;
    /// The device the key is pinned to.
    fn owner(&self, key_id: &str) -> Result<Option<String>, StoreError>;
    /// The last sequence of a key the device was unpinned or re-keyed from.
    fn retired(&self, device_id: &str, key_id: &str) -> Result<Option<u64>, StoreError>;
}

/// One write a store records, in batch order (a later op on the same thing wins).
#[derive(Debug, Clone)]
pub enum Op {
    /// The device's latest state (its `last_seen` is the last-seen index entry).
    Record {
        device_id: String,
        record: DeviceRecord,
    },
    History {
        device_id: String,
        slot: u64,
        entry: HistoryEntry,
    },
    Evict {
        device_id: String,
        slot: u64,
    },
    /// The device's pin moves from `previous` to `pinned`: `previous` no longer speaks for the
    /// device, `pinned` (if any) does and for no other.
    Pin {
        device_id: String,
        previous: Option<String>,
        pinned: Option<String>,
    },
    /// The last sequence accepted from a key that lost its pin, kept as its floor.
    Retire {
        device_id: String,
        key_id: String,
        sequence: u64,
    },
}

/// A staged batch: what to write, what the counters move by, and the state as staged.
#[derive(Default)]
pub struct Staged {
    pub ops: Vec<Op>,
    pub delta: Delta,
    records: HashMap<String, DeviceRecord>,
    pins: HashMap<String, Option<String>>,
    owners: HashMap<String, Option<String>>,
    retired: HashMap<(String, String), u64>,
}

/// Decides every write in order; returns one outcome per write and what to record for the
/// accepted ones (nothing is written here).
pub fn stage(stored: &impl Stored, writes: Vec<Write>) -> (Vec<Outcome>, Staged) {
    let mut staged = Staged::default();
    let outcomes = writes
        .into_iter()
        .map(|write| match write {
            Write::Report {
                verified,
                enrollment,
                now,
            } => Outcome::Report(staged.report(stored, verified, enrollment, now)),
            Write::Key { device_id, change } => {
                Outcome::Key(staged.key(stored, &device_id, &change))
            }
        })
        .collect();
    (outcomes, staged)
}

impl Staged {
    fn pin(&self, stored: &impl Stored, device_id: &str) -> Result<Option<String>, StoreError> {
        match self.pins.get(device_id) {
            Some(k) => Ok(k.clone()),
            None => stored.pin(device_id),
        }
    }

    fn owner(&self, stored: &impl Stored, key_id: &str) -> Result<Option<String>, StoreError> {
        match self.owners.get(key_id) {
            Some(d) => Ok(d.clone()),
            None => stored.owner(key_id),
        }
    }

    fn record(
        &self,
        stored: &impl Stored,
        device_id: &str,
    ) -> Result<Option<DeviceRecord>, StoreError> {
        match self.records.get(device_id) {
            Some(r) => Ok(Some(r.clone())),
            None => stored.record(device_id),
        }
    }

    /// Decides one report against the state as staged so far, and stages its writes.
    fn report(
        &mut self,
        stored: &impl Stored,
        verified: Verified,
        enrollment: Enrollment,
        now: u64,
    ) -> Result<Accepted, IngestError> {
        let device_id = verified.report.device_id.clone();
        let key_id = verified.key_id.to_string();
        let record = self.record(stored, &device_id)?;
        let pinned_key = self.pin(stored, &device_id)?;
        let key_owner = if pinned_key.as_deref() == Some(key_id.as_str()) {
            // Pins are written in pairs: the device's pinned key is owned by the device.
            Some(device_id.clone())
        } else {
            self.owner(stored, &key_id)?
        };
        // Only a report from another key than the device's latest pays this read.
        let retired_sequence = match &record {
            Some(r) if r.key_id != key_id => {
                match self.retired.get(&(device_id.clone(), key_id.clone())) {
                    Some(n) => Some(*n),
                    None => stored.retired(&device_id, &key_id)?,
                }
            }
            _ => None,
        };
        let old = record.as_ref().map(|r| {
            (
                r.report.status,
                r.report.commit.clone(),
                r.last_seen,
                r.report.target.clone(),
            )
        });
        let current = Current {
            pinned_key,
            key_owner,
            record,
            retired_sequence,
        };
        let decision = ingest::decide(current, verified, enrollment, now)?;

        let (slot, entry) = decision.history;
        self.ops.push(Op::History {
            device_id: device_id.clone(),
            slot,
            entry,
        });
        if let Some(slot) = decision.evict {
            self.ops.push(Op::Evict {
                device_id: device_id.clone(),
                slot,
            });
        }
        if decision.enroll {
            self.ops.push(Op::Pin {
                device_id: device_id.clone(),
                previous: None,
                pinned: Some(key_id.clone()),
            });
            self.pins.insert(device_id.clone(), Some(key_id.clone()));
            self.owners.insert(key_id.clone(), Some(device_id.clone()));
        }
        let old_entry = old
            .as_ref()
            .map(|(status, commit, last_seen, target)| Entry {
                status: *status,
                commit: commit.as_deref(),
                last_seen: *last_seen,
                target: target
                    .as_ref()
                    .map(|t| (t.commit.as_str(), t.wave.as_deref())),
            });
        let new_entry = Entry::of(&decision.record.report, decision.record.last_seen);
        self.delta.record(old_entry, new_entry);
        let accepted = Accepted {
            device_id: device_id.clone(),
            sequence: decision.record.report.sequence,
            enrolled: decision.enroll,
            key_id,
        };
        self.ops.push(Op::Record {
            device_id: device_id.clone(),
            record: decision.record.clone(),
        });
        self.records.insert(device_id, decision.record);
        Ok(accepted)
    }

    /// Decides one operator key change against the state as staged so far, and stages its
    /// writes: the pin moved, the old key's last sequence kept as its floor. The device's record,
    /// history and the counters are not touched.
    fn key(
        &mut self,
        stored: &impl Stored,
        device_id: &str,
        change: &KeyChange,
    ) -> Result<KeyChanged, KeyChangeError> {
        let record = self.record(stored, device_id)?;
        let pinned_key = self.pin(stored, device_id)?;
        let key_owner = match change {
            KeyChange::Pin(key) => self.owner(stored, key.as_str())?,
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
        if let Some(previous) = &decision.previous {
            self.owners.insert(previous.clone(), None);
        }
        if let Some(key_id) = &decision.pinned {
            self.owners
                .insert(key_id.clone(), Some(device_id.to_owned()));
        }
        self.pins
            .insert(device_id.to_owned(), decision.pinned.clone());
        self.ops.push(Op::Pin {
            device_id: device_id.to_owned(),
            previous: decision.previous.clone(),
            pinned: decision.pinned.clone(),
        });
        if let Some((key_id, sequence)) = decision.retire {
            self.retired
                .insert((device_id.to_owned(), key_id.clone()), sequence);
            self.ops.push(Op::Retire {
                device_id: device_id.to_owned(),
                key_id,
                sequence,
            });
        }
        Ok(answer)
    }
}
