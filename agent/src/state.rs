//! The state directory: the one owner of its layout and of its lock; it never touches managed
//! paths. [`StateDir`] is the locked, writable directory; [`StateView`] reads it (as `status`
//! does while a sync runs) and has no method that writes, by type. Other modules get narrow
//! handles from a `StateDir`: [`ApplyArea`] (the apply journal, the blob store, the preexisting
//! record), [`MirrorDir`] (the fetch's bare mirror), the identity key (through `report`), and
//! [`DaemonLock`].
//!
//! Everything is a small fsynced, atomically renamed file, so a sync with nothing to do only
//! reads, and the agent's memory does not carry a database's caches between syncs:
//! `applied-commit` (the anti-rollback watermark: the commit, in environment mode a line with
//! the last accepted release, and once the repository has one, a line with the trusted policy), `current-generation`, `hold`,
//! `last-result.json`, `report-sequence`, `generations/N.json` (each generation's manifest),
//! `bad/<commit>` (why a commit was recorded as bad), `outbox/<sequence>.json` (sealed
//! reports waiting for the collector's acknowledgement), `enrolled` (the collector and device
//! key that collector has accepted reports from, so the enrollment token is no longer needed)
//! `services-journal.json` (the service plan a sync is carrying out, present only between
//! its first `systemctl` call and the commit point or the undo), `rollout-start` (branch mode's
//! wave timer), `halts.json` (the collector's signed halt list accepted last, as it came) and
//! `halts-refused` (why the collector's last list was ignored, until one is accepted).

use std::collections::BTreeMap;
use std::fs::File;
use std::path::{Path, PathBuf};

use gix::ObjectId;
use serde::{Deserialize, Serialize};

use shoal_proto::{CommitId, KeyId, Status};

use crate::paths::{self, PathError};
use crate::plan::Manifest;
use crate::services::{PlanRecord, ServicePlan, ServiceRecord};
use crate::verify::{PolicyRecord, Verified};
use shoal_core::release::{LastRelease, ReleaseName};

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
const DAEMON_LOCK_FILE: &str = "daemon.lock";
const IDENTITY_FILE: &str = "identity.key";
const APPLY_JOURNAL_FILE: &str = "journal.json";
const BLOBS_DIR: &str = "blobs";
const PREEXISTING_FILE: &str = "preexisting.json";
const SERVICES_JOURNAL_FILE: &str = "services-journal.json";
/// `COMMIT UNIX_SECONDS`: when this device first verified the commit it waits to apply (branch
/// mode's rollout start; a release's tagger time is the start in environment mode).
const ROLLOUT_START_FILE: &str = "rollout-start";
/// The collector's signed halt list this device accepted last, as it came (`SignedHalts` JSON):
/// opened again with the pinned key whenever it is used.
const HALTS_FILE: &str = "halts.json";
/// Why the last halt list the collector offered was ignored (a replay, another key, a bad
/// signature), for the next report; removed when a list is accepted.
const HALTS_REFUSED_FILE: &str = "halts-refused";
const SERVICES_JOURNAL_VERSION: u32 = 1;

#[derive(Debug, thiserror::Error)]
pub enum StateError {
    #[error("cannot use the state directory: {0}")]
    Io(#[from] PathError),
    #[error("another shoal-agent is using the state directory {} (it holds {}); wait for it to finish or stop it", dir.display(), dir.join(LOCK_FILE).display())]
    Locked { dir: PathBuf },
    #[error("another `shoal-agent run` is already running for {} (it holds {}); stop it first", dir.display(), dir.join(DAEMON_LOCK_FILE).display())]
    DaemonRunning { dir: PathBuf },
    #[error("{} is corrupt ({content:?} is not a commit id); refusing to guess the applied commit (anti-rollback fails closed): write the commit the device really runs into it", path.display())]
    CorruptWatermark { path: PathBuf, content: String },
    #[error("{} is corrupt: its release line {content:?} is not `release ENVIRONMENT N TAG TAGGER_TIME`; refusing to guess the last accepted release (anti-rollback fails closed): write the release the device really follows (`git cat-file tag` of its tag gives N and the tagger time), or remove the line to accept the next valid release whatever its number", path.display())]
    CorruptRelease { path: PathBuf, content: String },
    #[error("{} is corrupt: its policy line {content:?} is not `policy COMMIT BLOB`; refusing to guess which repository policy this device trusts (it fails closed like the commit): write the commit and blob of the .shoal/policy.toml the device really trusts (`git rev-parse COMMIT:.shoal/policy.toml`)", path.display())]
    CorruptPolicy { path: PathBuf, content: String },
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
    pub commit: CommitId,
    /// Unix seconds when it was applied.
    pub applied_at: u64,
    pub signer: String,
    /// The release that named the commit (environment mode), absent in branch mode.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub release: Option<shoal_proto::Release>,
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
    pub status: Status,
    pub commit: Option<CommitId>,
    pub message: Option<String>,
    pub at: u64,
    /// How long each step of the sync that produced this result took (absent in results
    /// written before timings were recorded).
    #[serde(default)]
    pub timings: shoal_proto::Timings,
    /// With status `pending`: the commit that waits, its wave and when the wave opens.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pending: Option<shoal_proto::Pending>,
    /// With status `halted`: who halted the commit and why.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub halted: Option<HaltRecord>,
    /// The commit this result is about (applied, tried, pending or halted) and the device's
    /// wave for it, as reports carry it (`Report.target`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub target: Option<shoal_proto::Target>,
}

/// Who halted a commit the device did not apply.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum HaltSource {
    /// A release tag with `Halt: true` (environment mode).
    Release,
    /// The collector's signed halt list.
    Collector,
}

/// Why the last sync did not apply a verified commit: it is halted.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct HaltRecord {
    pub commit: CommitId,
    pub source: HaltSource,
    /// Who: `release production/5 signed by ops`, or `the collector (ed25519:...)`.
    pub by: String,
    /// Why, as the halt says (the collector's reason; the release's `Halt: true`).
    pub reason: String,
}

/// The collector (its configured URL) and device key (`ed25519:...`) that collector acknowledged
/// a report from: the device is enrolled there with that key.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Enrolled {
    pub collector: String,
    pub key_id: KeyId,
}

/// The watermark file's records.
struct Watermark {
    commit: ObjectId,
    release: Option<LastRelease>,
    policy: Option<PolicyRecord>,
}

/// `policy COMMIT BLOB`, as `record_watermark` writes it.
fn parse_policy_line(line: &str) -> Option<PolicyRecord> {
    let fields: Vec<&str> = line.split(' ').collect();
    let ["policy", commit, blob] = fields[..] else {
        return None;
    };
    Some(PolicyRecord {
        commit: ObjectId::from_hex(commit.as_bytes()).ok()?,
        blob: ObjectId::from_hex(blob.as_bytes()).ok()?,
    })
}

/// `release ENVIRONMENT N TAG TAGGER_TIME`, as `record_watermark` writes it.
fn parse_release_line(line: &str) -> Option<LastRelease> {
    let fields: Vec<&str> = line.split(' ').collect();
    let ["release", environment, number, tag, tagger_time] = fields[..] else {
        return None;
    };
    let name = ReleaseName::parse(&format!("{environment}/{number}")).ok()?;
    ObjectId::from_hex(tag.as_bytes()).ok()?;
    Some(LastRelease {
        name,
        tag: tag.to_owned(),
        tagger_time: tagger_time.parse().ok()?,
    })
}

/// The state directory, read-only: every method reads, none writes (not even a lock file), so
/// `status` can look while a sync runs and on a device whose state directory does not exist yet.
/// Every record is a whole file replaced by rename, so each read sees one version of it.
///
/// Writing needs the lock, which only a [`StateDir`] holds:
///
/// ```compile_fail
/// fn release(view: &shoal_agent::state::StateView) {
///     view.set_hold(None).unwrap();
/// }
/// ```
///
/// ```
/// fn release(state: &shoal_agent::state::StateDir) {
///     state.set_hold(None).unwrap();
/// }
/// ```
pub struct StateView {
    dir: PathBuf,
}

/// The state directory, locked by this process (one agent per state directory: `lock`, flock),
/// and the only writer of its records. It reads like a [`StateView`] (`Deref`).
pub struct StateDir {
    view: StateView,
    _lock: File,
}

impl std::ops::Deref for StateDir {
    type Target = StateView;
    fn deref(&self) -> &StateView {
        &self.view
    }
}

impl StateDir {
    /// Opens (creating if needed) and locks the state directory.
    pub fn open(dir: &Path) -> Result<Self, StateError> {
        paths::create_dir_all(dir)?;
        let lock =
            paths::try_lock_exclusive(&dir.join(LOCK_FILE))?.ok_or_else(|| StateError::Locked {
                dir: dir.to_owned(),
            })?;
        Ok(StateDir {
            view: StateView {
                dir: dir.to_owned(),
            },
            _lock: lock,
        })
    }

    /// What `fetch` may write: the bare mirror (and its `.damaged` sibling while rebuilding).
    pub fn mirror(&self) -> MirrorDir<'_> {
        MirrorDir {
            path: self.dir.join(MIRROR_DIR),
            _state: self,
        }
    }

    /// What `apply` may write: its journal, the blob store and the preexisting record.
    pub fn apply_area(&self) -> ApplyArea<'_> {
        ApplyArea { dir: &self.dir }
    }

    /// Moves the watermark to a commit `verify` accepted (durable on return): nothing else can
    /// move it. A corrupt watermark is not overwritten: reading it first fails closed. In
    /// environment mode the release the commit came with is kept beside it in the same file
    /// (one rename moves both); a branch-mode verdict keeps the release already recorded, so a
    /// device switched back to an environment does not forget how far it had come.
    pub fn record_watermark(&self, commit: &Verified) -> Result<(), StateError> {
        let previous = self.read_watermark()?.and_then(|w| w.release);
        let release = commit.release().map(|r| r.last()).or(previous);
        let mut text = format!("{}\n", commit.commit());
        if let Some(release) = release {
            text.push_str(&format!(
                "release {} {} {} {}\n",
                release.name.environment, release.name.number, release.tag, release.tagger_time
            ));
        }
        // The trusted policy moves in the same rename as the commit: a device can never hold a
        // commit without the policy that was in force for it.
        if let Some(policy) = commit.policy() {
            text.push_str(&format!("policy {} {}\n", policy.commit, policy.blob));
        }
        let path = self.dir.join(WATERMARK_FILE);
        paths::write_atomic(&path, text.as_bytes())?;
        Ok(())
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

    /// When this device first verified `commit` for its rollout, if that is the commit it
    /// recorded (a newer commit starts its own wave timer). An unreadable record counts as none:
    /// starting the timer again only delays the device, never hurries it.
    pub fn rollout_start(&self, commit: &CommitId) -> Result<Option<u64>, StateError> {
        let Some(text) = paths::read_optional(&self.dir.join(ROLLOUT_START_FILE))? else {
            return Ok(None);
        };
        let mut fields = text.split_whitespace();
        let (Some(recorded), Some(at)) = (fields.next(), fields.next()) else {
            return Ok(None);
        };
        Ok((recorded == commit.as_str())
            .then(|| at.parse().ok())
            .flatten())
    }

    /// Records that this device first verified `commit` at `at` (durable on return), so a
    /// restart does not restart its wave's timer.
    pub fn record_rollout_start(&self, commit: &CommitId, at: u64) -> Result<(), StateError> {
        let path = self.dir.join(ROLLOUT_START_FILE);
        paths::write_atomic(&path, format!("{} {at}\n", commit.as_str()).as_bytes())?;
        Ok(())
    }

    /// Keeps `halts` as the accepted halt list (durable on return), as the collector sent it.
    /// The caller (`halts::receive`) has checked its signature and serial.
    pub fn record_halts(&self, halts: &shoal_proto::SignedHalts) -> Result<(), StateError> {
        let json = serde_json::to_vec(halts).map_err(|e| StateError::Corrupt {
            what: "the halt list".into(),
            message: e.to_string(),
        })?;
        paths::write_atomic(&self.dir.join(HALTS_FILE), &json)?;
        Ok(())
    }

    /// Records why the collector's last halt list was ignored (durable on return), or forgets
    /// it (`None`). Writes only when it changes, so a heartbeat stays free.
    pub fn record_halts_refused(&self, why: Option<&str>) -> Result<(), StateError> {
        let path = self.dir.join(HALTS_REFUSED_FILE);
        if self.halts_refused()?.as_deref() == why {
            return Ok(());
        }
        match why {
            Some(why) => paths::write_atomic(&path, why.as_bytes())?,
            None => {
                if remove_if_present(&path)? {
                    paths::sync_dir(&self.dir)?;
                }
            }
        }
        Ok(())
    }

    /// Records `commit` as bad with `reason` (durable on return).
    pub fn mark_bad(&self, commit: &CommitId, reason: &str) -> Result<(), StateError> {
        paths::create_dir_all(&self.dir.join(BAD_DIR))?;
        paths::write_atomic(&self.bad_path(commit), reason.as_bytes())?;
        Ok(())
    }

    /// Records the outcome of a sync; returns whether it changed. Skips the write when only the
    /// time changed, so a no-op sync stays a no-op on disk.
    pub fn record_result(&self, result: &SyncResult) -> Result<bool, StateError> {
        if let Some(last) = self.last_result()? {
            let same = last.status == result.status
                && last.commit == result.commit
                && last.message == result.message
                && last.pending == result.pending
                && last.halted == result.halted
                && last.target == result.target;
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

    /// Removes a delivered report (durable on return).
    pub fn ack_report(&self, sequence: u64) -> Result<(), StateError> {
        if remove_if_present(&self.outbox_path(sequence))? {
            paths::sync_dir(&self.dir.join(OUTBOX_DIR))?;
        }
        Ok(())
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

    /// The service plan has finished (its generation recorded) or been undone.
    pub fn end_services(&self) -> Result<(), StateError> {
        if remove_if_present(&self.dir.join(SERVICES_JOURNAL_FILE))? {
            paths::sync_dir(&self.dir)?;
        }
        Ok(())
    }

    /// Writes a new identity key (durable on return). Its file is 0600 from the start, never
    /// readable by others, not even briefly.
    pub fn create_identity_key(&self, seed: &[u8; 32]) -> Result<(), StateError> {
        use std::io::Write as _;
        use std::os::unix::fs::OpenOptionsExt as _;
        let path = self.identity_path();
        let tmp = self.dir.join(".identity.key.tmp");
        let write = || -> std::io::Result<()> {
            let mut file = std::fs::OpenOptions::new()
                .write(true)
                .create(true)
                .truncate(true)
                .mode(0o600)
                .open(&tmp)?;
            file.write_all(seed)?;
            file.sync_all()?;
            std::fs::rename(&tmp, &path)
        };
        write().map_err(|e| PathError::new("write", &path, e))?;
        paths::sync_dir(&self.dir)?;
        Ok(())
    }
}

impl StateView {
    /// Opens the state directory to read, as `status` does, even while another process (a sync)
    /// holds it; the flag says whether one does. Creates nothing: a missing directory reads as a
    /// device that never synced.
    pub fn open(dir: &Path) -> Result<(Self, bool), StateError> {
        let lock = dir.join(LOCK_FILE);
        let busy = match File::open(&lock) {
            Ok(file) => match file.try_lock_shared() {
                Ok(()) => false,
                Err(std::fs::TryLockError::WouldBlock) => true,
                Err(std::fs::TryLockError::Error(e)) => {
                    return Err(PathError::new("lock", &lock, e).into())
                }
            },
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => false,
            Err(e) => return Err(PathError::new("open", &lock, e).into()),
        };
        Ok((
            StateView {
                dir: dir.to_owned(),
            },
            busy,
        ))
    }

    /// The directory, for messages.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// Where the fetch's mirror is, to read it (`status` shows its tip).
    pub fn mirror_path(&self) -> PathBuf {
        self.dir.join(MIRROR_DIR)
    }

    /// Where apply's journal is, to read it (`status` shows an unfinished apply).
    pub fn apply_journal_path(&self) -> PathBuf {
        self.dir.join(APPLY_JOURNAL_FILE)
    }

    /// Where the device identity key is kept.
    pub fn identity_path(&self) -> PathBuf {
        self.dir.join(IDENTITY_FILE)
    }

    /// The identity key's bytes, if there is one. Reads only.
    pub fn identity_key(&self) -> Result<Option<Vec<u8>>, StateError> {
        match paths::read(&self.identity_path()) {
            Ok(bytes) => Ok(Some(bytes)),
            Err(e) if e.is_not_found() => Ok(None),
            Err(e) => Err(e.into()),
        }
    }

    /// The newest commit this device ever applied (anti-rollback watermark). A corrupt file is
    /// an error, never "no watermark".
    pub fn applied_commit(&self) -> Result<Option<ObjectId>, StateError> {
        Ok(self.read_watermark()?.map(|w| w.commit))
    }

    /// The repository policy this device trusts (`.shoal/policy.toml`: the commit that brought
    /// it and its blob), kept with the watermark. A corrupt record is an error, never "none".
    pub fn applied_policy(&self) -> Result<Option<PolicyRecord>, StateError> {
        Ok(self.read_watermark()?.and_then(|w| w.policy))
    }

    /// The last release this device accepted (environment mode), kept with the watermark. A
    /// corrupt record is an error, never "no release".
    pub fn applied_release(&self) -> Result<Option<LastRelease>, StateError> {
        Ok(self.read_watermark()?.and_then(|w| w.release))
    }

    /// The watermark file: the commit on the first line, the release (if any) on the second.
    /// Anything else fails closed.
    fn read_watermark(&self) -> Result<Option<Watermark>, StateError> {
        let path = self.dir.join(WATERMARK_FILE);
        let Some(text) = paths::read_optional(&path)? else {
            return Ok(None);
        };
        let mut lines = text.trim().lines();
        let content = lines.next().unwrap_or("").trim();
        let commit =
            ObjectId::from_hex(content.as_bytes()).map_err(|_| StateError::CorruptWatermark {
                path: path.clone(),
                content: text.trim().to_owned(),
            })?;
        let mut watermark = Watermark {
            commit,
            release: None,
            policy: None,
        };
        // At most one `release` line then at most one `policy` line, in that order.
        for line in lines {
            let corrupt = || StateError::CorruptRelease {
                path: path.clone(),
                content: line.to_owned(),
            };
            if line.starts_with("policy ") {
                let corrupt = || StateError::CorruptPolicy {
                    path: path.clone(),
                    content: line.to_owned(),
                };
                if watermark.policy.is_some() {
                    return Err(corrupt());
                }
                watermark.policy = Some(parse_policy_line(line).ok_or_else(corrupt)?);
            } else if watermark.release.is_none() && watermark.policy.is_none() {
                watermark.release = Some(parse_release_line(line).ok_or_else(corrupt)?);
            } else {
                return Err(corrupt());
            }
        }
        Ok(Some(watermark))
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

    pub fn hold(&self) -> Result<Option<u64>, StateError> {
        self.read_number(HOLD_FILE)
    }

    /// The reason `commit` was recorded as bad, if it was. Reads only.
    pub fn bad_commit(&self, commit: &CommitId) -> Result<Option<String>, StateError> {
        Ok(paths::read_optional(&self.bad_path(commit))?)
    }

    /// `bad/<commit>`; a commit id is hex, so it names a file and nothing else.
    fn bad_path(&self, commit: &CommitId) -> PathBuf {
        self.dir.join(BAD_DIR).join(commit.as_str())
    }

    /// The halt list this device accepted last, as the collector signed it (not opened: that
    /// needs the pinned key, `halts::in_force`). One that does not parse is an error naming it.
    pub fn halts(&self) -> Result<Option<shoal_proto::SignedHalts>, StateError> {
        self.read_json(HALTS_FILE)
    }

    /// Where the accepted halt list is kept, for messages.
    pub fn halts_path(&self) -> PathBuf {
        self.dir.join(HALTS_FILE)
    }

    /// Why the collector's last halt list was ignored, if it was (until a list is accepted).
    pub fn halts_refused(&self) -> Result<Option<String>, StateError> {
        Ok(paths::read_optional(&self.dir.join(HALTS_REFUSED_FILE))?)
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

    /// Where this device is enrolled (`enrolled`), if anywhere. Reads only.
    pub fn enrolled(&self) -> Result<Option<Enrolled>, StateError> {
        self.read_json(ENROLLED_FILE)
    }

    /// The queued reports, oldest first. Reads only (an empty outbox costs one `readdir`).
    pub fn queued_reports(&self) -> Result<Vec<(u64, Vec<u8>)>, StateError> {
        self.queued_sequences()?
            .into_iter()
            .map(|sequence| Ok((sequence, paths::read(&self.outbox_path(sequence))?)))
            .collect()
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

/// The fetch's bare mirror `mirror.git`, handed out by a locked [`StateDir`].
pub struct MirrorDir<'a> {
    path: PathBuf,
    _state: &'a StateDir,
}

impl MirrorDir<'_> {
    pub fn path(&self) -> &Path {
        &self.path
    }
}

/// Apply's part of the state directory, handed out by a locked [`StateDir`]: `journal.json`,
/// `blobs/`, `preexisting.json`, and the directory itself (which apply refuses to manage and
/// sweeps of its own temp files).
#[derive(Clone, Copy)]
pub struct ApplyArea<'a> {
    dir: &'a Path,
}

impl<'a> ApplyArea<'a> {
    /// The area of the state directory `dir`, without its lock: for apply's unit tests only.
    #[cfg(test)]
    pub(crate) fn for_tests(dir: &'a Path) -> ApplyArea<'a> {
        ApplyArea { dir }
    }

    /// The state directory itself.
    pub fn dir(&self) -> &'a Path {
        self.dir
    }
    pub fn journal(&self) -> PathBuf {
        self.dir.join(APPLY_JOURNAL_FILE)
    }
    /// The journal's file name in [`ApplyArea::dir`].
    pub fn journal_name(&self) -> &'static str {
        APPLY_JOURNAL_FILE
    }
    pub fn blobs(&self) -> PathBuf {
        self.dir.join(BLOBS_DIR)
    }
    pub fn preexisting(&self) -> PathBuf {
        self.dir.join(PREEXISTING_FILE)
    }
}

/// `daemon.lock`, held by `shoal-agent run` for its whole life (its syncs, in child processes,
/// take the state directory's own lock one at a time).
pub struct DaemonLock {
    _file: File,
}

impl DaemonLock {
    /// Takes the daemon lock of the state directory `dir` (created if needed).
    pub fn acquire(dir: &Path) -> Result<DaemonLock, StateError> {
        paths::create_dir_all(dir)?;
        let file = paths::try_lock_exclusive(&dir.join(DAEMON_LOCK_FILE))?.ok_or_else(|| {
            StateError::DaemonRunning {
                dir: dir.to_owned(),
            }
        })?;
        Ok(DaemonLock { _file: file })
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
    use crate::verify::PolicyRecord;

    #[test]
    fn the_outbox_keeps_the_newest_reports_in_order_and_forgets_acked_ones() {
        let dir = tempfile::tempdir().unwrap();
        let state = StateDir::open(dir.path()).unwrap();
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
        let state = StateDir::open(dir.path()).unwrap();
        assert_eq!(state.queued_reports().unwrap().len(), OUTBOX_LIMIT - 1);
    }

    #[test]
    fn bad_commits_are_remembered_by_commit_id() {
        let dir = tempfile::tempdir().unwrap();
        let state = StateDir::open(dir.path()).unwrap();
        let commit = CommitId::parse("0123456789abcdef0123456789abcdef01234567").unwrap();
        assert_eq!(state.bad_commit(&commit).unwrap(), None);
        // Asking writes nothing.
        assert!(!dir.path().join(BAD_DIR).exists());
        state.mark_bad(&commit, "health gate failed").unwrap();
        assert_eq!(
            state.bad_commit(&commit).unwrap().as_deref(),
            Some("health gate failed")
        );
        // Only a `CommitId` names a record, and it is hex: "../applied-commit" cannot be one.
        assert!(dir.path().join(BAD_DIR).join(commit.as_str()).is_file());
    }

    #[test]
    fn status_can_read_while_a_sync_holds_the_directory() {
        let dir = tempfile::tempdir().unwrap();
        let syncing = StateDir::open(dir.path()).unwrap();
        syncing.set_hold(Some(3)).unwrap();
        assert!(matches!(
            StateDir::open(dir.path()),
            Err(StateError::Locked { .. })
        ));
        let (reader, busy) = StateView::open(dir.path()).unwrap();
        assert!(busy);
        assert_eq!(reader.hold().unwrap(), Some(3));
        drop(reader);
        drop(syncing);
        let (_reader, busy) = StateView::open(dir.path()).unwrap();
        assert!(!busy);
    }

    #[test]
    fn the_trusted_policy_moves_with_the_commit_and_a_corrupt_policy_line_fails_closed() {
        let dir = tempfile::tempdir().unwrap();
        let state = StateDir::open(dir.path()).unwrap();
        let commit = ObjectId::from_hex(b"0123456789abcdef0123456789abcdef01234567").unwrap();
        let blob = ObjectId::from_hex(b"89abcdef0123456789abcdef0123456789abcdef").unwrap();
        let policy = PolicyRecord { commit, blob };
        state
            .record_watermark(&Verified::for_tests(commit, "ops").with_policy_for_tests(policy))
            .unwrap();
        assert_eq!(state.applied_policy().unwrap(), Some(policy));
        assert_eq!(state.applied_commit().unwrap(), Some(commit));

        let path = dir.path().join(WATERMARK_FILE);
        for corrupt in [
            "policy nothex\n",
            "policy a b c\n",
            &format!("policy {commit} {blob}\npolicy {commit} {blob}\n"),
        ] {
            std::fs::write(&path, format!("{commit}\n{corrupt}")).unwrap();
            let err = state.applied_policy().unwrap_err().to_string();
            assert!(err.contains("is corrupt: its policy line"), "{err}");
            assert!(err.contains("fails closed"), "{err}");
            // The commit is not believed either: one corrupt line fails the whole file.
            assert!(state.applied_commit().is_err());
        }
    }

    #[test]
    fn a_corrupt_watermark_fails_closed_and_is_not_overwritten() {
        let dir = tempfile::tempdir().unwrap();
        let state = StateDir::open(dir.path()).unwrap();
        std::fs::write(dir.path().join(WATERMARK_FILE), "not a commit\n").unwrap();
        let commit = ObjectId::from_hex(b"0123456789abcdef0123456789abcdef01234567").unwrap();
        let err = state
            .record_watermark(&Verified::for_tests(commit, "ops"))
            .unwrap_err();
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

#[cfg(test)]
mod release_tests {
    use super::*;
    use crate::verify::AcceptedRelease;
    use shoal_core::signature::Signer;

    const COMMIT: &str = "0123456789abcdef0123456789abcdef01234567";
    const TAG: &str = "89abcdef0123456789abcdef0123456789abcdef";

    fn release(number: u64) -> AcceptedRelease {
        AcceptedRelease {
            name: ReleaseName {
                environment: "production".into(),
                number,
            },
            tag: ObjectId::from_hex(TAG.as_bytes()).unwrap(),
            tagger_time: 1_700_000_000,
            expires: 1_800_000_000,
            signer: Signer {
                principal: "bot".into(),
                fingerprint: String::new(),
            },
        }
    }

    #[test]
    fn the_release_is_kept_with_the_watermark_and_survives_a_branch_mode_verdict() {
        let dir = tempfile::tempdir().unwrap();
        let state = StateDir::open(dir.path()).unwrap();
        let commit = ObjectId::from_hex(COMMIT.as_bytes()).unwrap();
        state
            .record_watermark(&Verified::for_tests_with_release(
                commit,
                "ops",
                release(42),
            ))
            .unwrap();
        assert_eq!(
            std::fs::read_to_string(dir.path().join(WATERMARK_FILE)).unwrap(),
            format!("{COMMIT}\nrelease production 42 {TAG} 1700000000\n")
        );
        assert_eq!(state.applied_commit().unwrap(), Some(commit));
        assert_eq!(state.applied_release().unwrap(), Some(release(42).last()));
        // A device switched to branch mode keeps how far its environment had come.
        state
            .record_watermark(&Verified::for_tests(commit, "ops"))
            .unwrap();
        assert_eq!(state.applied_release().unwrap(), Some(release(42).last()));
    }

    #[test]
    fn a_corrupt_release_line_fails_closed_and_is_not_overwritten() {
        let dir = tempfile::tempdir().unwrap();
        let state = StateDir::open(dir.path()).unwrap();
        let path = dir.path().join(WATERMARK_FILE);
        for bad in [
            format!("{COMMIT}\nrelease production forty-two {TAG} 1\n"),
            format!("{COMMIT}\nrelease production 42 {TAG}\n"),
            format!("{COMMIT}\nrelease production 42 {TAG} 1\nmore\n"),
        ] {
            std::fs::write(&path, &bad).unwrap();
            let err = state.applied_commit().unwrap_err().to_string();
            assert!(err.contains("anti-rollback fails closed"), "{err}");
            assert!(state.applied_release().is_err());
            let commit = ObjectId::from_hex(COMMIT.as_bytes()).unwrap();
            assert!(state
                .record_watermark(&Verified::for_tests_with_release(
                    commit,
                    "ops",
                    release(43)
                ))
                .is_err());
            assert_eq!(std::fs::read_to_string(&path).unwrap(), bad);
        }
    }
}

#[cfg(test)]
mod view_tests {
    use super::*;

    #[test]
    fn a_view_of_a_missing_directory_creates_nothing_and_reads_empty() {
        let dir = tempfile::tempdir().unwrap();
        let missing = dir.path().join("state");
        let (view, busy) = StateView::open(&missing).unwrap();
        assert!(!busy);
        assert_eq!(view.current().unwrap(), None);
        assert_eq!(view.applied_commit().unwrap(), None);
        assert!(view.queued_reports().unwrap().is_empty());
        assert!(!missing.exists());
    }
}
