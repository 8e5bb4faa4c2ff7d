//! Decides an operator's change to a device's key pin (unpin, or pin a new key: re-key) against
//! the device's current pin. Pure decisions: no I/O, no clock; the store supplies the current
//! state under the writer and applies the decision in the same atomic batch as reports.

use shoal_proto::KeyId;

/// What an operator asks for (`DELETE` / `PUT /api/v1/devices/{id}/key`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum KeyChange {
    /// Remove the pin: the next report with a valid enrollment token pins its key.
    Unpin,
    /// Pin this key to the device, replacing any other.
    Pin(KeyId),
}

impl KeyChange {
    /// The action's name in logs and metrics.
    pub fn action(&self) -> &'static str {
        match self {
            KeyChange::Unpin => "unpin",
            KeyChange::Pin(_) => "rekey",
        }
    }
}

/// What the store knows about the device (and the requested key), read under the writer lock.
#[derive(Debug, Default, Clone)]
pub struct PinState {
    /// The key pinned to the device now.
    pub pinned_key: Option<String>,
    /// With `Pin(key)`: the device that key is pinned to, if any.
    pub key_owner: Option<String>,
    /// The key and sequence of the device's latest accepted report (`None`: it never reported).
    pub last_report: Option<(String, u64)>,
}

/// What to write for an accepted change.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PinDecision {
    /// The key pinned before.
    pub previous: Option<String>,
    /// The key pinned after.
    pub pinned: Option<String>,
    /// The key losing its pin and the last sequence accepted from it: kept as that key's
    /// sequence floor for the device, so the key's old reports cannot be replayed if it is ever
    /// pinned to the device again (a new key starts its own sequence; see `ingest::decide`).
    pub retire: Option<(String, u64)>,
}

impl PinDecision {
    /// False when the device was already in the asked-for state (nothing is written).
    pub fn changed(&self) -> bool {
        self.previous != self.pinned
    }
}

/// Why a change was refused. Nothing was written.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum KeyRefusal {
    #[error("device {device_id:?} is unknown to this collector (no pinned key and no report): pre-register a key with `shoal-collector register`, or let the device enroll with a token")]
    UnknownDevice { device_id: String },
    #[error("key {key_id} is pinned to device {owner}, not to {device_id}; one key identifies one device: unpin or re-key {owner} first")]
    KeyInUse {
        key_id: String,
        device_id: String,
        owner: String,
    },
}

impl KeyRefusal {
    /// The API's `reason_code`.
    pub fn reason_code(&self) -> &'static str {
        match self {
            KeyRefusal::UnknownDevice { .. } => "not_found",
            KeyRefusal::KeyInUse { .. } => "key_in_use",
        }
    }
}

/// Applies the pinning rules to one change of `device_id`'s key.
pub fn decide(
    device_id: &str,
    state: PinState,
    change: &KeyChange,
) -> Result<PinDecision, KeyRefusal> {
    let PinState {
        pinned_key,
        key_owner,
        last_report,
    } = state;
    if pinned_key.is_none() && last_report.is_none() {
        return Err(KeyRefusal::UnknownDevice {
            device_id: device_id.to_owned(),
        });
    }
    let pinned = match change {
        KeyChange::Unpin => None,
        KeyChange::Pin(key) => {
            let key_id = key.as_str();
            if let Some(owner) = key_owner.filter(|o| o != device_id) {
                return Err(KeyRefusal::KeyInUse {
                    key_id: key_id.to_owned(),
                    device_id: device_id.to_owned(),
                    owner,
                });
            }
            Some(key_id.to_owned())
        }
    };
    let retire = match (&pinned_key, &last_report) {
        (Some(previous), Some((reported_with, sequence)))
            if pinned.as_ref() != Some(previous) && reported_with == previous =>
        {
            Some((previous.clone(), *sequence))
        }
        _ => None,
    };
    Ok(PinDecision {
        previous: pinned_key,
        pinned,
        retire,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use ed25519_dalek::SigningKey;

    fn key(seed: u8) -> KeyId {
        KeyId::of(&SigningKey::from_bytes(&[seed; 32]).verifying_key())
    }

    fn pinned_with_reports(k: &KeyId, sequence: u64) -> PinState {
        PinState {
            pinned_key: Some(k.to_string()),
            key_owner: None,
            last_report: Some((k.to_string(), sequence)),
        }
    }

    #[test]
    fn unpin_removes_the_pin_and_retires_the_key_at_its_last_sequence() {
        let a = key(1);
        let d = decide("gw-1", pinned_with_reports(&a, 42), &KeyChange::Unpin).unwrap();
        assert_eq!(
            d,
            PinDecision {
                previous: Some(a.to_string()),
                pinned: None,
                retire: Some((a.to_string(), 42)),
            }
        );
        assert!(d.changed());
    }

    #[test]
    fn unpinning_an_unpinned_device_changes_nothing() {
        let a = key(1);
        let state = PinState {
            last_report: Some((a.to_string(), 3)),
            ..PinState::default()
        };
        let d = decide("gw-1", state, &KeyChange::Unpin).unwrap();
        assert!(!d.changed());
        assert_eq!(d.retire, None);
    }

    #[test]
    fn rekey_pins_the_new_key_and_retires_the_old_one() {
        let (a, b) = (key(1), key(2));
        let d = decide(
            "gw-1",
            pinned_with_reports(&a, 7),
            &KeyChange::Pin(b.clone()),
        )
        .unwrap();
        assert_eq!(d.previous.as_deref(), Some(a.as_str()));
        assert_eq!(d.pinned.as_deref(), Some(b.as_str()));
        assert_eq!(d.retire, Some((a.to_string(), 7)));
        // The same key again: nothing to do.
        let mut state = pinned_with_reports(&a, 7);
        state.key_owner = Some("gw-1".into());
        let d = decide("gw-1", state, &KeyChange::Pin(a)).unwrap();
        assert!(!d.changed());
        assert_eq!(d.retire, None);
    }

    #[test]
    fn a_pre_registered_key_that_never_reported_has_no_sequence_to_retire() {
        let (a, b) = (key(1), key(2));
        let state = PinState {
            pinned_key: Some(a.to_string()),
            ..PinState::default()
        };
        let d = decide("gw-1", state, &KeyChange::Pin(b)).unwrap();
        assert!(d.changed());
        assert_eq!(d.retire, None);
    }

    #[test]
    fn refusals() {
        let (a, b) = (key(1), key(2));
        let r = decide("gw-9", PinState::default(), &KeyChange::Unpin).unwrap_err();
        assert_eq!(r.reason_code(), "not_found");
        let r = decide("gw-9", PinState::default(), &KeyChange::Pin(a.clone())).unwrap_err();
        assert_eq!(r.reason_code(), "not_found");
        let mut state = pinned_with_reports(&a, 1);
        state.key_owner = Some("gw-2".into());
        let r = decide("gw-1", state, &KeyChange::Pin(b)).unwrap_err();
        assert_eq!(r.reason_code(), "key_in_use");
        assert!(r.to_string().contains("pinned to device gw-2"), "{r}");
    }
}
