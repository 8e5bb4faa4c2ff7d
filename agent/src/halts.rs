//! Halts from the collector: decides whether the signed halt list in a report's answer is
//! accepted (signed by the key pinned in `[collector] key`, and a `serial` no lower than the
//! highest accepted so far) and which list is in force for a sync. A halt only keeps the device
//! from applying a commit it has not applied (`sync` decides that); this module never moves the
//! device, talks to the network or writes anything but the two halt records through `state`.
//!
//! Without `[collector] key` every list is ignored: a halt is trusted only from a pinned key.

use shoal_proto::{CommitId, Halt, HaltList, HaltsError, SignedHalts};

use crate::config::CollectorKey;
use crate::state::{StateDir, StateError, StateView};

/// Why an offered halt list was not accepted; the device keeps the list it accepted last.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum Refusal {
    /// Another collector's key, a bad signature, an unknown version, a malformed list.
    #[error(transparent)]
    Signature(#[from] HaltsError),
    /// The list is older than one already accepted: a replay, which could bring back a halted
    /// commit (or the halt of a resumed one).
    #[error("halt list serial {offered} is lower than serial {accepted}, the newest this device accepted: a replayed old list; keeping list {accepted}")]
    Replay { offered: u64, accepted: u64 },
    /// The answer's `halts` is not a signed halt list at all.
    #[error("the answer's `halts` is not a signed halt list: {0}")]
    NotAList(String),
}

/// An accepted list that does not verify any more (edited on disk): the sync fails closed
/// rather than forget a halt.
#[derive(Debug, thiserror::Error)]
pub enum InForceError {
    #[error(transparent)]
    State(#[from] StateError),
    #[error("the accepted halt list {} does not open with the pinned collector key: {source}; it was changed outside the agent: remove it (the next report brings the collector's current list)", path.display())]
    Damaged {
        path: std::path::PathBuf,
        #[source]
        source: HaltsError,
    },
}

/// Decides an offered list (pure): the list if its signature opens with `pinned` and its
/// serial is at least `accepted` (the serial of the list accepted last, if any).
pub fn decide(
    pinned: &CollectorKey,
    accepted: Option<u64>,
    offered: &SignedHalts,
) -> Result<HaltList, Refusal> {
    let list = offered.open(&pinned.key)?;
    match accepted {
        Some(accepted) if list.serial < accepted => Err(Refusal::Replay {
            offered: list.serial,
            accepted,
        }),
        _ => Ok(list),
    }
}

/// What [`receive`] did with an offered list.
#[derive(Debug, PartialEq, Eq)]
pub enum Received {
    /// Accepted; `changed` is false when it is the list already kept (nothing was written).
    Accepted { serial: u64, changed: bool },
    /// Ignored, and recorded for the next report.
    Refused(Refusal),
}

/// Takes the `halts` of a collector's answer to an accepted report (`None`: the answer had
/// none, which changes nothing). An accepted list replaces the kept one (durably) and clears a
/// recorded refusal; a refused one is logged and recorded for the next report. Each record is
/// written only when it changes, so a heartbeat's answer costs no write.
pub fn receive(
    state: &StateDir,
    pinned: &CollectorKey,
    offered: Result<SignedHalts, String>,
) -> Result<Received, StateError> {
    let kept = state.halts()?;
    // A kept list that no longer opens (damaged, or from a key pinned before) protects nothing
    // against replay: the next good list replaces it.
    let accepted = kept
        .as_ref()
        .and_then(|k| k.open(&pinned.key).ok())
        .map(|l| l.serial);
    let verdict = offered
        .map_err(Refusal::NotAList)
        .and_then(|signed| decide(pinned, accepted, &signed).map(|list| (signed, list)));
    match verdict {
        Ok((signed, list)) => {
            let changed = kept.as_ref() != Some(&signed);
            if changed {
                state.record_halts(&signed)?;
                tracing::info!(
                    serial = list.serial,
                    halted = list.halted.len(),
                    "accepted the collector's halt list"
                );
            }
            state.record_halts_refused(None)?;
            Ok(Received::Accepted {
                serial: list.serial,
                changed,
            })
        }
        Err(refusal) => {
            tracing::warn!(error = %refusal, collector_key = %pinned.id, "ignored the collector's halt list");
            state.record_halts_refused(Some(&refusal.to_string()))?;
            Ok(Received::Refused(refusal))
        }
    }
}

/// The halt list in force: the one accepted last, opened again with the pinned key. `None`
/// without `[collector] key` (halts are not trusted) or before any list was accepted; a list
/// signed by another key than the one pinned now (the pin changed) counts as none.
pub fn in_force(
    state: &StateView,
    pinned: Option<&CollectorKey>,
) -> Result<Option<HaltList>, InForceError> {
    let Some(pinned) = pinned else {
        return Ok(None);
    };
    let Some(kept) = state.halts()? else {
        return Ok(None);
    };
    match kept.open(&pinned.key) {
        Ok(list) => Ok(Some(list)),
        Err(HaltsError::OtherKey { .. }) => {
            tracing::info!(collector_key = %pinned.id, "the kept halt list is another collector's; it does not count");
            Ok(None)
        }
        Err(source) => Err(InForceError::Damaged {
            path: state.halts_path(),
            source,
        }),
    }
}

/// The halt of `commit` in `list`, if any.
pub fn halt_of<'a>(list: Option<&'a HaltList>, commit: &CommitId) -> Option<&'a Halt> {
    list?.halt_of(commit)
}

#[cfg(test)]
mod tests {
    use super::*;
    use ed25519_dalek::SigningKey;
    use shoal_proto::KeyId;

    const COMMIT: &str = "0123456789abcdef0123456789abcdef01234567";

    fn key(seed: u8) -> SigningKey {
        SigningKey::from_bytes(&[seed; 32])
    }

    fn pinned(seed: u8) -> CollectorKey {
        let key = key(seed).verifying_key();
        CollectorKey {
            id: KeyId::of(&key),
            key,
        }
    }

    fn list(serial: u64, halted: bool) -> SignedHalts {
        let halted = if halted {
            vec![Halt {
                commit: CommitId::parse(COMMIT).unwrap(),
                reason: "operator: wrong endpoint".into(),
                since: 1_790_000_000,
            }]
        } else {
            Vec::new()
        };
        SignedHalts::seal(
            &key(1),
            &HaltList {
                serial,
                issued_at: 1_790_000_000,
                halted,
            },
        )
    }

    #[test]
    fn a_list_is_accepted_once_and_a_lower_serial_is_a_replay_that_changes_nothing() {
        let dir = tempfile::tempdir().unwrap();
        let state = StateDir::open(dir.path()).unwrap();
        let commit = CommitId::parse(COMMIT).unwrap();
        assert_eq!(
            receive(&state, &pinned(1), Ok(list(5, true))).unwrap(),
            Received::Accepted {
                serial: 5,
                changed: true
            }
        );
        let kept = in_force(&state, Some(&pinned(1))).unwrap().unwrap();
        assert!(kept.halts(&commit));
        // The same list again (a heartbeat's answer) writes nothing.
        let before = std::fs::metadata(state.halts_path())
            .unwrap()
            .modified()
            .unwrap();
        assert_eq!(
            receive(&state, &pinned(1), Ok(list(5, true))).unwrap(),
            Received::Accepted {
                serial: 5,
                changed: false
            }
        );
        assert_eq!(
            std::fs::metadata(state.halts_path())
                .unwrap()
                .modified()
                .unwrap(),
            before
        );
        // An older list that would lift the halt: ignored, recorded for the next report.
        let replay = receive(&state, &pinned(1), Ok(list(4, false))).unwrap();
        assert_eq!(
            replay,
            Received::Refused(Refusal::Replay {
                offered: 4,
                accepted: 5
            })
        );
        assert!(in_force(&state, Some(&pinned(1)))
            .unwrap()
            .unwrap()
            .halts(&commit));
        assert_eq!(
            state.halts_refused().unwrap().as_deref(),
            Some("halt list serial 4 is lower than serial 5, the newest this device accepted: a replayed old list; keeping list 5")
        );
        // A newer list lifts it and clears the refusal.
        receive(&state, &pinned(1), Ok(list(6, false))).unwrap();
        assert!(!in_force(&state, Some(&pinned(1)))
            .unwrap()
            .unwrap()
            .halts(&commit));
        assert_eq!(state.halts_refused().unwrap(), None);
    }

    #[test]
    fn another_key_or_garbage_is_refused_and_without_a_pinned_key_nothing_is_in_force() {
        let dir = tempfile::tempdir().unwrap();
        let state = StateDir::open(dir.path()).unwrap();
        receive(&state, &pinned(1), Ok(list(5, true))).unwrap();
        let Received::Refused(refusal) = receive(&state, &pinned(2), Ok(list(9, false))).unwrap()
        else {
            panic!("another collector's list was accepted");
        };
        assert!(
            refusal
                .to_string()
                .contains("not by the pinned collector key"),
            "{refusal}"
        );
        let Received::Refused(refusal) =
            receive(&state, &pinned(1), Err("missing field `payload`".into())).unwrap()
        else {
            panic!("garbage was accepted");
        };
        assert_eq!(
            refusal.to_string(),
            "the answer's `halts` is not a signed halt list: missing field `payload`"
        );
        assert_eq!(
            in_force(&state, Some(&pinned(1))).unwrap().unwrap().serial,
            5
        );
        // Without a pinned key no list counts; under another pinned key the kept one is not in force.
        assert!(in_force(&state, None).unwrap().is_none());
        assert!(in_force(&state, Some(&pinned(2))).unwrap().is_none());
    }

    #[test]
    fn a_kept_list_edited_on_disk_fails_closed_until_the_next_good_list() {
        let dir = tempfile::tempdir().unwrap();
        let state = StateDir::open(dir.path()).unwrap();
        receive(&state, &pinned(1), Ok(list(5, true))).unwrap();
        let mut edited = list(5, true);
        edited.payload = list(7, false).payload;
        state.record_halts(&edited).unwrap();
        let err = in_force(&state, Some(&pinned(1))).unwrap_err().to_string();
        assert!(
            err.contains("does not open with the pinned collector key"),
            "{err}"
        );
        assert!(err.contains("remove it (the next report brings"), "{err}");
        // The next list from the collector replaces it, whatever its serial.
        receive(&state, &pinned(1), Ok(list(3, true))).unwrap();
        assert_eq!(
            in_force(&state, Some(&pinned(1))).unwrap().unwrap().serial,
            3
        );
    }
}
