//! The collector's side of rollouts: the signed halt list that goes into the answer to every
//! accepted report, sealed once per serial (never per report) and cached; operators' halts and
//! resumes and the automatic halt, each recorded by the store with the serial bumped; and a
//! watcher thread that polls the stored serial every `POLL` (so a replica learns of another's
//! change within that bound) and samples each rollout's adoption once a minute. Decides nothing
//! itself: `shoal_fleet::rollout` decides, the store records.

use std::collections::BTreeMap;
use std::sync::{Arc, RwLock, Weak};
use std::time::Duration;

use shoal_proto::{CommitId, HaltList, SignedHalts};

use shoal_fleet::rollout::{AutoHalt, CommitCounts, HaltChange};

use crate::collector_key::CollectorKey;
use crate::store::{HaltChanged, HaltError, Store, StoreError};
use crate::Clock;

/// How often the watcher reads the stored serial: the bound on how long a replica signs an
/// older list than another replica's change.
pub const POLL: Duration = Duration::from_secs(2);
/// Adoption samples are kept this many minutes (one a minute per commit being rolled out).
pub const ADOPTION_MINUTES: u64 = 24 * 60;

/// The list as sealed for one serial.
#[derive(Debug)]
pub struct Sealed {
    pub list: HaltList,
    pub signed: SignedHalts,
}

/// Everything rollouts need at run time (one per process, in `AppState`).
pub struct Rollouts {
    key: CollectorKey,
    auto: Option<AutoHalt>,
    store: Arc<dyn Store>,
    clock: Clock,
    sealed: RwLock<Arc<Sealed>>,
    /// Dropped with `Rollouts`: the watcher thread sees the channel close and ends.
    _stop: std::sync::mpsc::SyncSender<()>,
}

impl Rollouts {
    /// Seals the stored list and starts the watcher thread.
    pub fn start(
        key: CollectorKey,
        auto: Option<AutoHalt>,
        store: Arc<dyn Store>,
        clock: Clock,
    ) -> Result<Arc<Rollouts>, StoreError> {
        let list = store.halts()?.list();
        let signed = SignedHalts::seal(&key.signing, &list);
        let (stop, stopped) = std::sync::mpsc::sync_channel::<()>(0);
        let rollouts = Arc::new(Rollouts {
            key,
            auto,
            store,
            clock,
            sealed: RwLock::new(Arc::new(Sealed { list, signed })),
            _stop: stop,
        });
        let weak = Arc::downgrade(&rollouts);
        let spawned = std::thread::Builder::new()
            .name("shoal-rollouts".into())
            .spawn(move || watch(weak, stopped));
        if let Err(e) = spawned {
            return Err(StoreError::Database {
                store: rollouts.store.describe(),
                reason: format!("starting the rollouts watcher: {e}"),
            });
        }
        Ok(rollouts)
    }

    /// The collector's key.
    pub fn key(&self) -> &CollectorKey {
        &self.key
    }

    /// The automatic halt's threshold, if on.
    pub fn auto(&self) -> Option<AutoHalt> {
        self.auto
    }

    /// The list as sealed now: what an accepted report's answer carries.
    pub fn sealed(&self) -> Arc<Sealed> {
        self.sealed
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }

    /// Re-reads the list if its stored serial differs from the sealed one, and seals it (the
    /// only place that signs).
    pub fn refresh(&self) -> Result<(), StoreError> {
        let serial = self.store.halts_serial()?;
        if serial == self.sealed().list.serial {
            return Ok(());
        }
        let list = self.store.halts()?.list();
        let mut sealed = self.sealed.write().unwrap_or_else(|p| p.into_inner());
        // Another refresh may have sealed a newer one meanwhile: never go back.
        if list.serial > sealed.list.serial {
            let signed = SignedHalts::seal(&self.key.signing, &list);
            tracing::info!(
                serial = list.serial,
                halted = list.halted.len(),
                "halt list changed; sealed"
            );
            *sealed = Arc::new(Sealed { list, signed });
        }
        Ok(())
    }

    /// An operator's halt or resume of `commit`; the list is re-sealed before this returns, so
    /// the next answer carries it.
    pub fn change(
        &self,
        commit: &CommitId,
        halt: Option<String>,
    ) -> Result<HaltChanged, HaltError> {
        let change = match halt {
            Some(reason) => HaltChange::Halt { reason },
            None => HaltChange::Resume {
                failures: self.counts(commit.as_str())?.failures(),
            },
        };
        let done = self.store.change_halt(commit, &change, self.clock.now())?;
        self.refresh()?;
        Ok(done)
    }

    fn counts(&self, commit: &str) -> Result<CommitCounts, StoreError> {
        Ok(self.store.rollouts()?.remove(commit).unwrap_or_default())
    }

    /// After a stored batch: checks the automatic halt for each commit that devices of the batch
    /// tried (one read of the rollout counters per batch, only with the automatic halt on and
    /// only for batches with such reports; sled's is in memory).
    pub fn after_batch(&self, tried_commits: &[String]) {
        let Some(policy) = self.auto else { return };
        if tried_commits.is_empty() {
            return;
        }
        let mut all = match self.store.rollouts() {
            Ok(all) => all,
            Err(e) => {
                tracing::warn!(error = %e, "reading rollout counts for the automatic halt failed; will check again after the next failure");
                return;
            }
        };
        let mut changed = false;
        let sealed = self.sealed();
        for commit in tried_commits {
            // Targets are hex ids; only a full one can be halted.
            let Ok(id) = CommitId::parse(commit) else {
                continue;
            };
            let counts = all.remove(commit).unwrap_or_default();
            // The store's transaction only when the threshold is reached and the commit is not
            // halted already (as far as this process knows): the common batch writes nothing.
            if sealed.list.halts(&id)
                || shoal_fleet::rollout::auto_reason(&counts, &policy).is_none()
            {
                continue;
            }
            let change = HaltChange::Auto { counts, policy };
            match self.store.change_halt(&id, &change, self.clock.now()) {
                Ok(done) if done.changed => {
                    // Worth an operator's eye: no device that has not applied it will now.
                    changed = true;
                    tracing::warn!(commit = %id, reason = done.reason.as_deref().unwrap_or(""), serial = done.serial, "rollout halted automatically");
                }
                Ok(_) => {}
                Err(e) => {
                    tracing::warn!(commit = %id, error = %e, "the automatic halt failed; will check again after the next failure")
                }
            }
        }
        if changed {
            if let Err(e) = self.refresh() {
                tracing::warn!(error = %e, "re-sealing the halt list failed; the watcher will");
            }
        }
    }

    /// Records the devices on each commit being rolled out (every commit a report targets) at
    /// the current minute, and forgets samples older than `ADOPTION_MINUTES`.
    pub fn sample_adoption(&self) -> Result<(), StoreError> {
        let minute = self.clock.now() / 60;
        let rollouts = self.store.rollouts()?;
        let summary = self.store.summary(self.clock.now(), u64::MAX)?;
        let samples: Vec<(String, u64)> = rollouts
            .keys()
            .map(|c| (c.clone(), summary.by_commit.get(c).copied().unwrap_or(0)))
            .collect();
        self.store
            .record_adoption(minute, &samples, minute.saturating_sub(ADOPTION_MINUTES))
    }

    /// Every commit being rolled out, with its counts and halt (the views read this).
    pub fn view(&self) -> Result<BTreeMap<String, CommitCounts>, StoreError> {
        self.store.rollouts()
    }
}

/// The watcher: every `POLL`, picks up another replica's change to the halt list; once a minute,
/// samples adoption. Ends when its `Rollouts` is dropped.
fn watch(rollouts: Weak<Rollouts>, stopped: std::sync::mpsc::Receiver<()>) {
    let mut sampled_minute = None;
    loop {
        match stopped.recv_timeout(POLL) {
            Err(std::sync::mpsc::RecvTimeoutError::Timeout) => {}
            _ => return,
        }
        let Some(r) = rollouts.upgrade() else { return };
        if let Err(e) = r.refresh() {
            tracing::warn!(error = %e, "reading the halt list's serial failed; answers carry the last sealed list");
        }
        let minute = r.clock.now() / 60;
        if sampled_minute != Some(minute) {
            match r.sample_adoption() {
                Ok(()) => sampled_minute = Some(minute),
                Err(e) => tracing::warn!(error = %e, "sampling rollout adoption failed"),
            }
        }
    }
}
