//! Rollouts as the collector follows them: each commit's devices by wave and status (from the
//! tally's rollout counters), and the halt decisions — an operator's halt or resume, and the
//! automatic halt when too many of the devices that tried a commit failed. Pure: the store reads
//! a commit's `HaltState` and counts, calls `decide`, and records what it returns (with the halt
//! list's serial bumped in the same transaction).

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};
use shoal_proto::{CommitId, Status, MAX_HALTED};

use crate::tally::RolloutKey;

/// Longest reason an operator may give for a halt (it is signed into every answer).
pub const MAX_REASON: usize = 200;

/// One commit's devices: wave (`None`: the commit declares no waves) → status → devices.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct CommitCounts {
    pub waves: BTreeMap<Option<String>, BTreeMap<Status, u64>>,
}

impl CommitCounts {
    /// Devices in `status`, over every wave.
    pub fn with_status(&self, status: Status) -> u64 {
        self.waves.values().filter_map(|by| by.get(&status)).sum()
    }

    /// Every device whose report is about this commit.
    pub fn devices(&self) -> u64 {
        self.waves.values().flat_map(|by| by.values()).sum()
    }

    /// Devices that tried the commit: every device about it except those still waiting for
    /// their wave (`pending`) or held off by a halt (`halted`), which did not try it.
    pub fn tried(&self) -> u64 {
        self.devices() - self.with_status(Status::Pending) - self.with_status(Status::Halted)
    }

    /// Devices that tried it and failed: `failed` or `rolled_back`.
    pub fn failures(&self) -> u64 {
        self.with_status(Status::Failed) + self.with_status(Status::RolledBack)
    }
}

/// Groups rollout counters by commit.
pub fn by_commit<'a>(
    counters: impl IntoIterator<Item = (&'a RolloutKey, &'a u64)>,
) -> BTreeMap<String, CommitCounts> {
    let mut out: BTreeMap<String, CommitCounts> = BTreeMap::new();
    for (key, n) in counters {
        if *n == 0 {
            continue;
        }
        *out.entry(key.commit.clone())
            .or_default()
            .waves
            .entry(key.wave.clone())
            .or_default()
            .entry(key.status)
            .or_default() += n;
    }
    out
}

/// What the collector keeps about one commit's halt.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct HaltState {
    /// Halted now: why and since when (unix s).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub halted: Option<Halted>,
    /// The last resume: when, and how many failures the commit had then (an automatic halt
    /// comes back only when there are more).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub resumed: Option<Resumed>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Halted {
    pub reason: String,
    pub since: u64,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Resumed {
    pub at: u64,
    pub failures: u64,
}

/// The automatic halt's threshold (`serve --halt-failed-ratio R --halt-min-devices N`).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct AutoHalt {
    /// Halt when failures / tried reaches this share (0 < R ≤ 1).
    pub failed_ratio: f64,
    /// ... and at least this many devices tried the commit.
    pub min_devices: u64,
}

/// A change asked of one commit's halt.
#[derive(Debug, Clone, PartialEq)]
pub enum HaltChange {
    /// An operator halts it (`reason` as given, possibly empty).
    Halt { reason: String },
    /// An operator resumes it; `failures` is the commit's failure count now.
    Resume { failures: u64 },
    /// The automatic check after a batch with new failures for the commit.
    Auto {
        counts: CommitCounts,
        policy: AutoHalt,
    },
}

/// Why a halt change is refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum HaltRefusal {
    #[error("the reason is {len} characters; at most {MAX_REASON} are signed into the halt list")]
    ReasonTooLong { len: usize },
    #[error("{MAX_HALTED} commits are halted already, the most one signed list may name; resume some first")]
    TooMany,
}

/// Decides `change` against the commit's state; `halted_now` is how many commits are halted
/// (the list's length). `Ok(None)`: nothing changes (already so, or the automatic threshold is
/// not reached), so the list and its serial stay.
pub fn decide(
    state: &HaltState,
    change: &HaltChange,
    halted_now: usize,
    now: u64,
) -> Result<Option<HaltState>, HaltRefusal> {
    match change {
        HaltChange::Halt { reason } => {
            let len = reason.chars().count();
            if len > MAX_REASON {
                return Err(HaltRefusal::ReasonTooLong { len });
            }
            if state.halted.is_some() {
                return Ok(None);
            }
            if halted_now >= MAX_HALTED {
                return Err(HaltRefusal::TooMany);
            }
            let reason = if reason.trim().is_empty() {
                "operator".to_owned()
            } else {
                format!("operator: {}", reason.trim())
            };
            Ok(Some(HaltState {
                halted: Some(Halted { reason, since: now }),
                resumed: state.resumed.clone(),
            }))
        }
        HaltChange::Resume { failures } => {
            if state.halted.is_none() {
                return Ok(None);
            }
            Ok(Some(HaltState {
                halted: None,
                resumed: Some(Resumed {
                    at: now,
                    failures: *failures,
                }),
            }))
        }
        HaltChange::Auto { counts, policy } => {
            if state.halted.is_some() || halted_now >= MAX_HALTED {
                return Ok(None);
            }
            let Some(reason) = auto_reason(counts, policy) else {
                return Ok(None);
            };
            // A resume sticks until the commit fails again after it.
            if let Some(resumed) = &state.resumed {
                if counts.failures() <= resumed.failures {
                    return Ok(None);
                }
            }
            Ok(Some(HaltState {
                halted: Some(Halted { reason, since: now }),
                resumed: state.resumed.clone(),
            }))
        }
    }
}

/// The automatic halt's reason when `counts` reach the threshold, else `None`.
pub fn auto_reason(counts: &CommitCounts, policy: &AutoHalt) -> Option<String> {
    let (failures, tried) = (counts.failures(), counts.tried());
    if tried == 0 || tried < policy.min_devices {
        return None;
    }
    if (failures as f64) < policy.failed_ratio * tried as f64 {
        return None;
    }
    Some(format!(
        "automatic: {failures} of {tried} devices that tried it failed or rolled back (threshold {}, at least {} devices)",
        policy.failed_ratio, policy.min_devices
    ))
}

/// The halted commits of a set of states, in commit order (what the signed list names).
pub fn halted<'a>(
    states: impl IntoIterator<Item = (&'a CommitId, &'a HaltState)>,
) -> Vec<shoal_proto::Halt> {
    let mut out: Vec<shoal_proto::Halt> = states
        .into_iter()
        .filter_map(|(commit, s)| {
            let h = s.halted.as_ref()?;
            Some(shoal_proto::Halt {
                commit: commit.clone(),
                reason: h.reason.clone(),
                since: h.since,
            })
        })
        .collect();
    out.sort_by(|a, b| a.commit.cmp(&b.commit));
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn counts(pairs: &[(Status, u64)]) -> CommitCounts {
        let mut c = CommitCounts::default();
        let wave = c.waves.entry(Some("canary".into())).or_default();
        for (s, n) in pairs {
            wave.insert(*s, *n);
        }
        c
    }

    const POLICY: AutoHalt = AutoHalt {
        failed_ratio: 0.5,
        min_devices: 4,
    };

    fn auto(c: CommitCounts) -> HaltChange {
        HaltChange::Auto {
            counts: c,
            policy: POLICY,
        }
    }

    #[test]
    fn the_automatic_halt_needs_the_share_and_the_minimum() {
        let none = HaltState::default();
        // 2 of 4 tried failed: at the threshold, with the minimum.
        let at = counts(&[
            (Status::Converged, 2),
            (Status::Failed, 1),
            (Status::RolledBack, 1),
            (Status::Pending, 10),
        ]);
        let halted = decide(&none, &auto(at.clone()), 0, 50).unwrap().unwrap();
        let reason = &halted.halted.as_ref().unwrap().reason;
        assert!(reason.starts_with("automatic: 2 of 4 devices"), "{reason}");
        // Below the share.
        let below = counts(&[(Status::Converged, 3), (Status::Failed, 1)]);
        assert_eq!(decide(&none, &auto(below), 0, 50), Ok(None));
        // Below the minimum: 2 of 3 failed, pending and halted devices did not try.
        let few = counts(&[
            (Status::Converged, 1),
            (Status::Failed, 2),
            (Status::Pending, 5),
            (Status::Halted, 5),
        ]);
        assert_eq!(few.tried(), 3);
        assert_eq!(decide(&none, &auto(few), 0, 50), Ok(None));
        // Already halted: unchanged.
        assert_eq!(decide(&halted, &auto(at), 0, 60), Ok(None));
    }

    #[test]
    fn a_resume_sticks_until_new_failures() {
        let at = counts(&[(Status::Converged, 2), (Status::Failed, 2)]);
        let halted = decide(&HaltState::default(), &auto(at.clone()), 0, 50)
            .unwrap()
            .unwrap();
        let resumed = decide(&halted, &HaltChange::Resume { failures: 2 }, 1, 70)
            .unwrap()
            .unwrap();
        assert_eq!(resumed.halted, None);
        assert_eq!(
            decide(&resumed, &auto(at), 0, 80),
            Ok(None),
            "same failures"
        );
        let more = counts(&[(Status::Converged, 2), (Status::Failed, 3)]);
        let again = decide(&resumed, &auto(more), 0, 90).unwrap().unwrap();
        assert_eq!(again.halted.unwrap().since, 90);
    }

    #[test]
    fn operator_halts_are_idempotent_and_checked() {
        let none = HaltState::default();
        let h = HaltChange::Halt {
            reason: " wrong endpoint ".into(),
        };
        let halted = decide(&none, &h, 0, 5).unwrap().unwrap();
        assert_eq!(
            halted.halted.as_ref().unwrap().reason,
            "operator: wrong endpoint"
        );
        assert_eq!(decide(&halted, &h, 1, 6), Ok(None));
        assert_eq!(
            decide(&none, &HaltChange::Resume { failures: 0 }, 0, 6),
            Ok(None)
        );
        let long = HaltChange::Halt {
            reason: "x".repeat(MAX_REASON + 1),
        };
        assert_eq!(
            decide(&none, &long, 0, 5),
            Err(HaltRefusal::ReasonTooLong {
                len: MAX_REASON + 1
            })
        );
        assert_eq!(decide(&none, &h, MAX_HALTED, 5), Err(HaltRefusal::TooMany));
    }
}
