//! In-memory fleet counts (devices by status, by commit, by last-seen second, and by rollout:
//! target commit × wave × status), kept up to date one report at a time so neither a summary over
//! a million devices nor a rollout's progress ever scans them. Pure data: no I/O; the store
//! persists the counters it reports as changed.

use std::collections::{BTreeMap, HashMap};

use serde::Serialize;
use shoal_proto::Status;

/// The part of a device's state that the counts depend on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Entry<'a> {
    pub status: Status,
    pub commit: Option<&'a str>,
    pub last_seen: u64,
    /// The report's `target`: the commit it is about and the device's wave for it (rollouts).
    pub target: Option<(&'a str, Option<&'a str>)>,
}

impl<'a> Entry<'a> {
    /// The entry of a device whose latest report is `report`, last seen at `last_seen`.
    pub fn of(report: &'a shoal_proto::Report, last_seen: u64) -> Entry<'a> {
        Entry {
            status: report.status,
            commit: report.commit.as_deref(),
            last_seen,
            target: report
                .target
                .as_ref()
                .map(|t| (t.commit.as_str(), t.wave.as_deref())),
        }
    }
}

/// One rollout counter's key: devices whose report's target is `commit`, in `wave` (`None`: the
/// commit declares no waves), with `status`.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct RolloutKey {
    pub commit: String,
    pub wave: Option<String>,
    pub status: Status,
}

/// One persisted counter.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum Counter {
    Status(Status),
    /// `None`: devices that reported no commit.
    Commit(Option<String>),
    /// Devices by rollout (target commit, wave, status).
    Rollout(RolloutKey),
}

/// Counts over every device the collector has accepted a report from.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Tally {
    by_status: [u64; Status::ALL.len()],
    by_commit: HashMap<Option<String>, u64>,
    /// last_seen (unix second) → number of devices last seen at that second.
    seen: BTreeMap<u64, u64>,
    /// Devices by target commit, wave and status (zero counts left out).
    by_rollout: BTreeMap<RolloutKey, u64>,
}

/// Device moves staged in one write batch, not yet applied to the tally.
#[derive(Debug, Default)]
pub struct Delta {
    status: [i64; Status::ALL.len()],
    commit: HashMap<Option<String>, i64>,
    rollout: HashMap<RolloutKey, i64>,
    moves: Vec<(Option<Owned>, Owned)>,
}

#[derive(Debug, Clone)]
struct Owned {
    status: Status,
    commit: Option<String>,
    last_seen: u64,
    target: Option<(String, Option<String>)>,
}

impl Owned {
    fn new(e: Entry<'_>) -> Owned {
        Owned {
            status: e.status,
            commit: e.commit.map(str::to_owned),
            last_seen: e.last_seen,
            target: e.target.map(|(c, w)| (c.to_owned(), w.map(str::to_owned))),
        }
    }

    fn entry(&self) -> Entry<'_> {
        Entry {
            status: self.status,
            commit: self.commit.as_deref(),
            last_seen: self.last_seen,
            target: self
                .target
                .as_ref()
                .map(|(c, w)| (c.as_str(), w.as_deref())),
        }
    }
}

impl RolloutKey {
    /// The key as one string, `COMMIT/STATUS/-` (no wave) or `COMMIT/STATUS/=WAVE`: what the
    /// stores name the counter by. Commits are hex and statuses have no `/`, so the wave (any
    /// text) is everything after the second `/`.
    pub fn encode(&self) -> String {
        match &self.wave {
            None => format!("{}/{}/-", self.commit, self.status),
            Some(w) => format!("{}/{}/={w}", self.commit, self.status),
        }
    }

    /// The inverse of `encode`; `None` for anything else.
    pub fn decode(text: &str) -> Option<RolloutKey> {
        let (commit, rest) = text.split_once('/')?;
        let (status, wave) = rest.split_once('/')?;
        let wave = match wave {
            "-" => None,
            w => Some(w.strip_prefix('=')?.to_owned()),
        };
        Some(RolloutKey {
            commit: commit.to_owned(),
            wave,
            status: Status::from_wire(status)?,
        })
    }
}

/// The rollout counter an entry counts in, if its report has a target.
fn rollout_key(e: &Entry<'_>) -> Option<RolloutKey> {
    e.target.map(|(commit, wave)| RolloutKey {
        commit: commit.to_owned(),
        wave: wave.map(str::to_owned),
        status: e.status,
    })
}

impl Delta {
    /// Stages moving one device from `old` (absent: a new device) to `new`.
    pub fn record(&mut self, old: Option<Entry<'_>>, new: Entry<'_>) {
        if let Some(o) = old {
            self.status[status_index(o.status)] -= 1;
            *self.commit.entry(o.commit.map(str::to_owned)).or_default() -= 1;
            if let Some(k) = rollout_key(&o) {
                *self.rollout.entry(k).or_default() -= 1;
            }
        }
        if let Some(k) = rollout_key(&new) {
            *self.rollout.entry(k).or_default() += 1;
        }
        self.status[status_index(new.status)] += 1;
        *self
            .commit
            .entry(new.commit.map(str::to_owned))
            .or_default() += 1;
        self.moves.push((old.map(Owned::new), Owned::new(new)));
    }

    pub fn is_empty(&self) -> bool {
        self.moves.is_empty()
    }

    /// How much each counter moves (zeros left out): what a store whose counters are shared by
    /// several writers adds to them, instead of writing absolute values.
    pub fn changes(&self) -> Vec<(Counter, i64)> {
        let status = self
            .status
            .iter()
            .enumerate()
            .filter(|(_, d)| **d != 0)
            .map(|(i, d)| (Counter::Status(Status::ALL[i]), *d));
        let commit = self
            .commit
            .iter()
            .filter(|(_, d)| **d != 0)
            .map(|(c, d)| (Counter::Commit(c.clone()), *d));
        let rollout = self
            .rollout
            .iter()
            .filter(|(_, d)| **d != 0)
            .map(|(k, d)| (Counter::Rollout(k.clone()), *d));
        status.chain(commit).chain(rollout).collect()
    }

    /// How many devices each last-seen second gains or loses (zeros left out), in second order.
    pub fn seen_changes(&self) -> BTreeMap<u64, i64> {
        let mut out = BTreeMap::new();
        for (old, new) in &self.moves {
            if let Some(old) = old {
                *out.entry(old.last_seen).or_default() -= 1;
            }
            *out.entry(new.last_seen).or_default() += 1;
        }
        out.retain(|_, d| *d != 0);
        out
    }
}

/// The fleet summary as the API returns it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Summary {
    pub total: u64,
    pub by_status: BTreeMap<&'static str, u64>,
    pub by_commit: BTreeMap<String, u64>,
    pub no_commit: u64,
    pub stale: u64,
    pub stale_after_secs: u64,
    pub now: u64,
}

fn status_index(status: Status) -> usize {
    // Invariant: Status::ALL lists every variant.
    Status::ALL
        .iter()
        .position(|s| *s == status)
        .expect("Status::ALL lists every status")
}

impl Tally {
    /// Sets a persisted counter while loading (startup).
    pub fn load_counter(&mut self, counter: Counter, value: u64) {
        match counter {
            Counter::Status(s) => self.by_status[status_index(s)] = value,
            Counter::Commit(c) => {
                if value > 0 {
                    self.by_commit.insert(c, value);
                }
            }
            Counter::Rollout(k) => {
                if value > 0 {
                    self.by_rollout.insert(k, value);
                }
            }
        }
    }

    /// Records one device's last-seen time while loading (startup).
    pub fn load_seen(&mut self, last_seen: u64) {
        self.load_seen_count(last_seen, 1);
    }

    /// Records `devices` devices last seen at `last_seen` while loading (a store that keeps the
    /// last-seen index as counts per second).
    pub fn load_seen_count(&mut self, last_seen: u64, devices: u64) {
        if devices > 0 {
            *self.seen.entry(last_seen).or_default() += devices;
        }
    }

    /// The persisted counters that `delta` changes, with their values after it (written in the
    /// same atomic batch as the reports; only counters whose value changes are listed).
    pub fn counters_after(&self, delta: &Delta) -> Vec<(Counter, u64)> {
        let mut out = Vec::new();
        for (i, d) in delta.status.iter().enumerate() {
            if *d != 0 {
                let v = (self.by_status[i] as i64 + d).max(0) as u64;
                out.push((Counter::Status(Status::ALL[i]), v));
            }
        }
        for (commit, d) in &delta.commit {
            if *d != 0 {
                let v = (self.commit(commit.as_deref()) as i64 + d).max(0) as u64;
                out.push((Counter::Commit(commit.clone()), v));
            }
        }
        for (key, d) in &delta.rollout {
            if *d != 0 {
                let now = self.by_rollout.get(key).copied().unwrap_or(0);
                let v = (now as i64 + d).max(0) as u64;
                out.push((Counter::Rollout(key.clone()), v));
            }
        }
        out
    }

    /// Applies every move recorded in `delta` (after its batch is stored).
    pub fn apply_delta(&mut self, delta: &Delta) {
        for (old, new) in &delta.moves {
            self.apply(old.as_ref().map(Owned::entry), new.entry());
        }
    }

    /// Moves one device from `old` (absent: a new device) to `new`.
    pub fn apply(&mut self, old: Option<Entry<'_>>, new: Entry<'_>) {
        if let Some(old) = old {
            self.remove(old);
        }
        self.by_status[status_index(new.status)] += 1;
        *self
            .by_commit
            .entry(new.commit.map(str::to_owned))
            .or_default() += 1;
        *self.seen.entry(new.last_seen).or_default() += 1;
        if let Some(k) = rollout_key(&new) {
            *self.by_rollout.entry(k).or_default() += 1;
        }
    }

    fn remove(&mut self, old: Entry<'_>) {
        if let Some(k) = rollout_key(&old) {
            if let Some(n) = self.by_rollout.get_mut(&k) {
                *n = n.saturating_sub(1);
                if *n == 0 {
                    self.by_rollout.remove(&k);
                }
            }
        }
        let s = &mut self.by_status[status_index(old.status)];
        *s = s.saturating_sub(1);
        let key = old.commit.map(str::to_owned);
        if let Some(n) = self.by_commit.get_mut(&key) {
            *n = n.saturating_sub(1);
            if *n == 0 {
                self.by_commit.remove(&key);
            }
        }
        if let Some(n) = self.seen.get_mut(&old.last_seen) {
            *n = n.saturating_sub(1);
            if *n == 0 {
                self.seen.remove(&old.last_seen);
            }
        }
    }

    pub fn status(&self, status: Status) -> u64 {
        self.by_status[status_index(status)]
    }

    pub fn commit(&self, commit: Option<&str>) -> u64 {
        self.by_commit
            .get(&commit.map(str::to_owned))
            .copied()
            .unwrap_or(0)
    }

    /// Every non-zero rollout counter, in key order (commit, wave, status).
    pub fn rollouts(&self) -> &BTreeMap<RolloutKey, u64> {
        &self.by_rollout
    }

    pub fn total(&self) -> u64 {
        self.by_status.iter().sum()
    }

    /// Devices last seen more than `stale_after` seconds before `now`.
    pub fn stale(&self, now: u64, stale_after: u64) -> u64 {
        let cutoff = now.saturating_sub(stale_after);
        self.seen.range(..cutoff).map(|(_, n)| n).sum()
    }

    /// Devices tracked by the last-seen index (equals `total()` when consistent).
    pub fn seen_total(&self) -> u64 {
        self.seen.values().sum()
    }

    pub fn summary(&self, now: u64, stale_after: u64) -> Summary {
        Summary {
            total: self.total(),
            by_status: Status::ALL
                .iter()
                .map(|s| (s.as_str(), self.status(*s)))
                .collect(),
            by_commit: self
                .by_commit
                .iter()
                .filter_map(|(c, n)| Some((c.clone()?, *n)))
                .collect(),
            no_commit: self.commit(None),
            stale: self.stale(now, stale_after),
            stale_after_secs: stale_after,
            now,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn e(status: Status, commit: Option<&str>, last_seen: u64) -> Entry<'_> {
        Entry {
            status,
            commit,
            last_seen,
            target: None,
        }
    }

    #[test]
    fn rollout_counters_follow_the_target() {
        let mut t = Tally::default();
        let a = Entry {
            target: Some(("c1c1", Some("canary"))),
            ..e(Status::Pending, Some("b0b0"), 10)
        };
        t.apply(None, a);
        let b = Entry {
            target: Some(("c1c1", Some("canary"))),
            ..e(Status::Failed, Some("b0b0"), 11)
        };
        let mut delta = Delta::default();
        delta.record(Some(a), b);
        let key = |status| RolloutKey {
            commit: "c1c1".into(),
            wave: Some("canary".into()),
            status,
        };
        let mut after = t.counters_after(&delta);
        after.sort_by_key(|(c, _)| format!("{c:?}"));
        assert!(after.contains(&(Counter::Rollout(key(Status::Failed)), 1)));
        assert!(after.contains(&(Counter::Rollout(key(Status::Pending)), 0)));
        t.apply_delta(&delta);
        assert_eq!(
            t.rollouts().iter().collect::<Vec<_>>(),
            vec![(&key(Status::Failed), &1)]
        );
        for k in [
            key(Status::Failed),
            RolloutKey {
                wave: None,
                ..key(Status::Halted)
            },
        ] {
            assert_eq!(RolloutKey::decode(&k.encode()), Some(k));
        }
        let odd = RolloutKey {
            wave: Some("a/b =c".into()),
            ..key(Status::Converged)
        };
        assert_eq!(RolloutKey::decode(&odd.encode()), Some(odd));
        // Moving off the target (a report without one) leaves no rollout count behind.
        let mut delta = Delta::default();
        delta.record(Some(b), e(Status::Converged, Some("b0b0"), 12));
        t.apply_delta(&delta);
        assert!(t.rollouts().is_empty());
    }

    #[test]
    fn moving_a_device_moves_its_counts() {
        let mut t = Tally::default();
        t.apply(None, e(Status::Applying, Some("aa11"), 100));
        t.apply(None, e(Status::Converged, Some("aa11"), 100));
        let old = e(Status::Applying, Some("aa11"), 100);
        let new = e(Status::Failed, None, 400);
        let mut delta = Delta::default();
        delta.record(Some(old), new);
        let mut after = t.counters_after(&delta);
        after.sort_by_key(|(c, _)| format!("{c:?}"));
        assert_eq!(
            after,
            vec![
                (Counter::Commit(None), 1),
                (Counter::Commit(Some("aa11".into())), 1),
                (Counter::Status(Status::Applying), 0),
                (Counter::Status(Status::Failed), 1),
            ]
        );
        t.apply_delta(&delta);
        let s = t.summary(400, 180);
        assert_eq!(s.total, 2);
        assert_eq!(s.by_status["failed"], 1);
        assert_eq!(s.by_status["applying"], 0);
        assert_eq!(s.by_commit, BTreeMap::from([("aa11".to_owned(), 1)]));
        assert_eq!(s.no_commit, 1);
        assert_eq!(s.stale, 1, "the device last seen at 100 is stale at 400");
    }

    #[test]
    fn changes_are_the_moves_of_a_batch_netted_out() {
        let a = e(Status::Applying, Some("aa11"), 100);
        let b = e(Status::Converged, Some("aa11"), 160);
        let c = e(Status::Converged, None, 170);
        let mut delta = Delta::default();
        delta.record(None, a);
        delta.record(Some(a), b);
        delta.record(None, c);
        let mut changes = delta.changes();
        changes.sort_by_key(|(c, _)| format!("{c:?}"));
        assert_eq!(
            changes,
            vec![
                (Counter::Commit(None), 1),
                (Counter::Commit(Some("aa11".into())), 1),
                (Counter::Status(Status::Converged), 2),
            ]
        );
        assert_eq!(
            delta.seen_changes(),
            BTreeMap::from([(160, 1), (170, 1)]),
            "the second 100 gained and lost the same device"
        );
    }

    #[test]
    fn same_status_and_commit_change_no_counter() {
        let mut t = Tally::default();
        let a = e(Status::Converged, Some("bb22"), 10);
        t.apply(None, a);
        let mut delta = Delta::default();
        delta.record(Some(a), e(Status::Converged, Some("bb22"), 20));
        assert!(t.counters_after(&delta).is_empty());
        t.apply_delta(&delta);
        assert_eq!(t.stale(200, 180), 0, "last seen moved to 20");
    }

    #[test]
    fn a_batch_moving_one_device_twice_nets_out() {
        let mut t = Tally::default();
        let a = e(Status::Failed, Some("cc33"), 10);
        t.apply(None, a);
        let b = e(Status::Applying, Some("dd44"), 11);
        let c = e(Status::Failed, Some("cc33"), 12);
        let mut delta = Delta::default();
        delta.record(Some(a), b);
        delta.record(Some(b), c);
        assert!(t.counters_after(&delta).is_empty());
        t.apply_delta(&delta);
        assert_eq!(t.status(Status::Failed), 1);
        assert_eq!(t.commit(Some("dd44")), 0);
    }

    #[test]
    fn stale_is_strictly_older_than_the_threshold() {
        let mut t = Tally::default();
        for seen in [0, 99, 100, 101] {
            t.apply(None, e(Status::Held, None, seen));
        }
        assert_eq!(
            t.stale(280, 180),
            2,
            "0 and 99 are more than 180 s before 280"
        );
        assert_eq!(t.stale(10, 180), 0);
    }
}
