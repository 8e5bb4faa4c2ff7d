//! The collector's storage: the `Store` trait that the API and the writer use, and its two
//! implementations — `SledStore`, the embedded default (`--data DIR`, one process), and
//! `PgStore`, PostgreSQL (`--store postgres://...`, any number of replicas on one database).
//!
//! Both decide a batch the same way (`stage`, over `shoal-fleet`'s pure deciders) and record it
//! atomically: sled in one `apply_batch`, PostgreSQL in one transaction that locks the rows it
//! decides on. Dependencies run one way: `api` → `writer` → `store` → `shoal-fleet`.

pub mod migrate;
mod postgres;
mod sled;
pub mod stage;

use std::collections::BTreeMap;

use serde::Serialize;
use shoal_proto::{CommitId, HaltList, KeyId, Report, Status};

use shoal_fleet::ingest::{Enrollment, Rejection, Verified};
use shoal_fleet::keys::{KeyChange, KeyRefusal};
use shoal_fleet::rollout::{self, HaltRefusal};
pub use shoal_fleet::rollout::{CommitCounts, HaltChange, HaltState};
use shoal_fleet::tally::{Summary, Tally};

/// The records a store keeps (defined in `shoal_fleet::record`: the deciders build them).
pub use shoal_fleet::record::{DeviceRecord, HistoryEntry};

pub use self::postgres::{redact_url, ImportRows, Imported, Importer, PgStore, RowCounts};
pub use self::sled::SledStore;

/// What the collector needs from a store. Every method may block (disk or network): the writer
/// calls `write_batch` from its own thread, request handlers call reads.
pub trait Store: Send + Sync {
    /// Names the store for messages and logs ("sled store in DIR", "PostgreSQL store URL" with
    /// any password redacted).
    fn describe(&self) -> String;

    /// Checks each write against the store as left by the writes before it (in this batch or
    /// earlier) and records every accepted one atomically: all of them or none. Returns one
    /// outcome per write, in order. Durable only after `flush`.
    fn write_batch(&self, writes: Vec<Write>) -> Vec<Outcome>;

    /// Makes every write so far durable.
    fn flush(&self) -> Result<(), StoreError>;

    /// Pins `key_id` to `device_id` before the device's first report (operator pre-registration).
    /// Idempotent for the same pair; refuses to re-key a device or to share a key.
    fn register(&self, device_id: &str, key_id: &KeyId) -> Result<Registration, StoreError>;

    /// One device's latest state.
    fn device(&self, id: &str) -> Result<Option<DeviceRecord>, StoreError>;

    /// Up to `limit` devices in id order, starting after `after` (exclusive).
    fn devices_page(
        &self,
        after: Option<&str>,
        limit: usize,
    ) -> Result<Vec<(String, DeviceRecord)>, StoreError>;

    /// A device's kept history, newest first.
    fn history(&self, id: &str) -> Result<Vec<HistoryEntry>, StoreError>;

    /// The key pinned to a device (pre-registered or enrolled).
    fn pinned_key(&self, id: &str) -> Result<Option<String>, StoreError>;

    /// The device a key is pinned to.
    fn key_owner(&self, key_id: &str) -> Result<Option<String>, StoreError>;

    /// Fleet counts from the maintained counters: never a scan of the devices.
    fn summary(&self, now: u64, stale_after: u64) -> Result<Summary, StoreError>;

    /// The counters as stored: what consistency checks and tests compare with.
    fn persisted_tally(&self) -> Result<Tally, StoreError>;

    /// Whether the store answers reads (for /healthz).
    fn healthy(&self) -> bool;

    /// The halt list as stored: its serial, when it last changed, every commit's halt state.
    /// Consistent: the serial is the one of exactly these states.
    fn halts(&self) -> Result<StoredHalts, StoreError>;

    /// Only the halt list's serial: what replicas poll to learn of another's change.
    fn halts_serial(&self) -> Result<u64, StoreError>;

    /// Decides `change` for `commit` (`rollout::decide`) against its stored state and, if it
    /// changes anything, records the new state and bumps the list's serial atomically with it
    /// (PostgreSQL: one transaction holding the list's row lock, so two replicas never give two
    /// different lists one serial). Idempotent: an unchanged state keeps the serial.
    fn change_halt(
        &self,
        commit: &CommitId,
        change: &HaltChange,
        now: u64,
    ) -> Result<HaltChanged, HaltError>;

    /// Every commit's devices by wave and status, from the rollout counters (never a scan of
    /// the devices).
    fn rollouts(&self) -> Result<BTreeMap<String, CommitCounts>, StoreError>;

    /// Records how many devices are on each commit at `minute` (unix minutes) and forgets the
    /// samples before `forget_before`. Replicas may record the same minute: the first one stays.
    fn record_adoption(
        &self,
        minute: u64,
        samples: &[(String, u64)],
        forget_before: u64,
    ) -> Result<(), StoreError>;

    /// One commit's adoption samples, `(minute, devices)` in time order.
    fn adoption(&self, commit: &str) -> Result<Vec<(u64, u64)>, StoreError>;

    /// Checks one verified report and records it if accepted (see `write_batch`).
    fn ingest(
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
    fn ingest_batch(
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

    /// Applies one operator key change (see `write_batch`). Durable only after `flush`.
    fn change_key(&self, device_id: &str, change: KeyChange) -> Result<KeyChanged, KeyChangeError> {
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
}

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

/// The halt list as a store keeps it.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct StoredHalts {
    /// Grows by one with every change.
    pub serial: u64,
    /// When the last change was made (unix s): the signed list's `issued_at`, so every replica
    /// seals the very same bytes for one serial.
    pub changed_at: u64,
    pub states: BTreeMap<CommitId, HaltState>,
}

impl StoredHalts {
    /// The list to sign.
    pub fn list(&self) -> HaltList {
        HaltList {
            serial: self.serial,
            issued_at: self.changed_at,
            halted: rollout::halted(&self.states),
        }
    }

    /// How many commits are halted now.
    pub fn halted_count(&self) -> usize {
        self.states.values().filter(|s| s.halted.is_some()).count()
    }

    /// `rollout::decide` for `commit` against these states.
    fn decide(
        &self,
        commit: &CommitId,
        change: &HaltChange,
        now: u64,
    ) -> Result<Option<HaltState>, HaltRefusal> {
        let state = self.states.get(commit).cloned().unwrap_or_default();
        rollout::decide(&state, change, self.halted_count(), now)
    }
}

/// What a halt change did (the answer of `POST /api/v1/rollouts/{commit}/halt` and `/resume`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct HaltChanged {
    pub commit: CommitId,
    pub halted: bool,
    /// Why it is halted (when it is).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
    /// False when the commit was already in the asked-for state: nothing was written.
    pub changed: bool,
    /// The halt list's serial after the change.
    pub serial: u64,
}

impl HaltChanged {
    fn new(commit: &CommitId, state: &HaltState, changed: bool, serial: u64) -> HaltChanged {
        HaltChanged {
            commit: commit.clone(),
            halted: state.halted.is_some(),
            reason: state.halted.as_ref().map(|h| h.reason.clone()),
            changed,
            serial,
        }
    }
}

/// Why a halt change was not recorded.
#[derive(Debug, thiserror::Error)]
pub enum HaltError {
    #[error(transparent)]
    Refused(#[from] HaltRefusal),
    #[error(transparent)]
    Store(#[from] StoreError),
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
#[derive(Debug, Clone)]
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
        path: std::path::PathBuf,
        #[source]
        source: ::sled::Error,
    },
    #[error("store at {path}: writing failed: {reason}; check free space and the disk")]
    Write {
        path: std::path::PathBuf,
        reason: String,
    },
    #[error("store at {path}: record {key} is unreadable: {reason}")]
    Corrupt {
        path: std::path::PathBuf,
        key: String,
        reason: String,
    },
    #[error("store at {path} has schema {found:?}, this collector reads schema 1")]
    Schema {
        path: std::path::PathBuf,
        found: String,
    },
    /// `store` names the database with any password redacted.
    #[error("{store}: {reason}")]
    Database { store: String, reason: String },
    #[error("{store} has schema version {found}, newer than this collector's {known}: upgrade this collector (a newer one migrated the database), or point it at another database")]
    SchemaTooNew {
        store: String,
        found: i64,
        known: i64,
    },
    #[error("{store} is not empty ({found}): migrate copies only into an empty database; create a new one (CREATE DATABASE ... OWNER ...) and migrate into it")]
    NotEmpty { store: String, found: String },
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

/// Checks a pre-registration's device id.
fn check_device_id(device_id: &str) -> Result<(), StoreError> {
    Report::new(device_id, Status::Converged, 0)
        .validate()
        .map_err(|e| StoreError::BadDeviceId {
            device_id: device_id.to_owned(),
            reason: e.to_string(),
        })
}

/// The pre-registration rule, given the device's pin and the key's owner: `None` means write
/// the pair (a new registration).
fn registration(
    device_id: &str,
    key_id: &str,
    pinned: Option<String>,
    owner: Option<String>,
) -> Result<Option<Registration>, StoreError> {
    match (pinned, owner) {
        (Some(p), _) if p != key_id => Err(StoreError::DevicePinned {
            device_id: device_id.to_owned(),
            pinned: p,
        }),
        (_, Some(o)) if o != device_id => Err(StoreError::KeyPinned {
            key_id: key_id.to_owned(),
            device_id: o,
        }),
        (Some(_), Some(_)) => Ok(Some(Registration::AlreadyRegistered)),
        _ => Ok(None),
    }
}
