//! In-memory fleet counts (devices by status, by commit, by last-seen second), kept up to date one
//! report at a time so a summary over a million devices never scans them. Pure data: no I/O; the
//! store persists the counters it reports as changed.

use std::collections::{BTreeMap, HashMap};

use serde::Serialize;
use shoal_proto::Status;

/// The part of a device's state that the counts depend on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Entry<'a> {
    pub status: Status,
    pub commit: Option<&'a str>,
    pub last_seen: u64,
}

/// One persisted counter.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum Counter {
    Status(Status),
    /// `None`: devices that reported no commit.
    Commit(Option<String>),
}

/// Counts over every device the collector has accepted a report from.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Tally {
    by_status: [u64; Status::ALL.len()],
    by_commit: HashMap<Option<String>, u64>,
    /// last_seen (unix second) → number of devices last seen at that second.
    seen: BTreeMap<u64, u64>,
}

/// Device moves staged in one write batch, not yet applied to the tally.
#[derive(Debug, Default)]
pub struct Delta {
    status: [i64; Status::ALL.len()],
    commit: HashMap<Option<String>, i64>,
    moves: Vec<(Option<Owned>, Owned)>,
}

#[derive(Debug, Clone)]
struct Owned {
    status: Status,
    commit: Option<String>,
    last_seen: u64,
}

impl Owned {
    fn new(e: Entry<'_>) -> Owned {
        Owned {
            status: e.status,
            commit: e.commit.map(str::to_owned),
            last_seen: e.last_seen,
        }
    }

    fn entry(&self) -> Entry<'_> {
        Entry {
            status: self.status,
            commit: self.commit.as_deref(),
            last_seen: self.last_seen,
        }
    }
}

impl Delta {
    /// Stages moving one device from `old` (absent: a new device) to `new`.
    pub fn record(&mut self, old: Option<Entry<'_>>, new: Entry<'_>) {
        if let Some(o) = old {
            self.status[status_index(o.status)] -= 1;
            *self.commit.entry(o.commit.map(str::to_owned)).or_default() -= 1;
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
        status.chain(commit).collect()
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
    }

    fn remove(&mut self, old: Entry<'_>) {
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
        }
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
