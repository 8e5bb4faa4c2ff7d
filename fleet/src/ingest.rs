//! Decides whether a report is accepted: envelope checks (size, version, signature) and then the
//! enrollment, key pinning and sequence rules against the device's current state. Pure decisions:
//! no I/O; the store supplies the current state and applies the decision atomically.
//!
//! Dependencies run one way: `ingest` knows `record` (what an accepted report becomes) and no
//! store; the collector's store calls `decide` and records its `Decision`.

use shoal_proto::{EnvelopeError, KeyId, Report, SignedEnvelope, Unverified, MAX_ENVELOPE_BYTES};

use crate::record::{DeviceRecord, HistoryEntry, HISTORY_LIMIT};

/// Why a report was refused. Every variant is a client error: nothing was written.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Rejection {
    #[error("request body is over the limit of {limit} bytes")]
    OversizedBody { limit: usize },
    #[error("request body is not a signed envelope: {reason}")]
    MalformedEnvelope { reason: String },
    #[error(
        "envelope version {version} is not supported; this collector reads version {}",
        shoal_proto::ENVELOPE_VERSION
    )]
    UnsupportedVersion { version: u32 },
    #[error("signature does not verify with key {key_id}")]
    BadSignature { key_id: String },
    #[error("signed payload is not a report: {reason}")]
    MalformedReport { reason: String },
    #[error("signed report is invalid: {reason}")]
    InvalidReport { reason: String },
    #[error("key {key_id} is not registered for device {device_id}: pre-register it with `shoal-collector register` or send an enrollment token in the X-Shoal-Enroll header")]
    UnknownKey { key_id: String, device_id: String },
    #[error("enrollment token in X-Shoal-Enroll is not valid for this collector (device {device_id}, key {key_id})")]
    BadEnrollmentToken { key_id: String, device_id: String },
    #[error("key mismatch: {detail}")]
    KeyMismatch { detail: String },
    #[error("sequence {sequence} for device {device_id} is not after the last accepted sequence {last}: replayed or out of order")]
    ReplayedSequence {
        device_id: String,
        sequence: u64,
        last: u64,
    },
}

impl Rejection {
    /// Every reason code, for metrics that list zeros too.
    pub const REASON_CODES: [&'static str; 10] = [
        "oversized_body",
        "malformed_envelope",
        "unsupported_version",
        "bad_signature",
        "malformed_report",
        "invalid_report",
        "unknown_key",
        "bad_enrollment_token",
        "key_mismatch",
        "replayed_sequence",
    ];

    /// The stable, machine-readable reason (the API's `reason_code`, the metrics' `reason` label).
    pub fn reason_code(&self) -> &'static str {
        match self {
            Rejection::OversizedBody { .. } => "oversized_body",
            Rejection::MalformedEnvelope { .. } => "malformed_envelope",
            Rejection::UnsupportedVersion { .. } => "unsupported_version",
            Rejection::BadSignature { .. } => "bad_signature",
            Rejection::MalformedReport { .. } => "malformed_report",
            Rejection::InvalidReport { .. } => "invalid_report",
            Rejection::UnknownKey { .. } => "unknown_key",
            Rejection::BadEnrollmentToken { .. } => "bad_enrollment_token",
            Rejection::KeyMismatch { .. } => "key_mismatch",
            Rejection::ReplayedSequence { .. } => "replayed_sequence",
        }
    }
}

impl From<EnvelopeError> for Rejection {
    fn from(e: EnvelopeError) -> Rejection {
        match e {
            EnvelopeError::TooLarge { limit, .. } => Rejection::OversizedBody { limit },
            EnvelopeError::UnsupportedVersion { version } => {
                Rejection::UnsupportedVersion { version }
            }
            EnvelopeError::BadSignature { key_id } => Rejection::BadSignature {
                key_id: key_id.to_string(),
            },
            EnvelopeError::MalformedReport { reason } => Rejection::MalformedReport { reason },
            EnvelopeError::InvalidReport(e) => Rejection::InvalidReport {
                reason: e.to_string(),
            },
            e @ (EnvelopeError::Malformed { .. }
            | EnvelopeError::BadKeyId(_)
            | EnvelopeError::KeyIdMismatch { .. }) => Rejection::MalformedEnvelope {
                reason: e.to_string(),
            },
        }
    }
}

/// What the request said about enrollment (the `X-Shoal-Enroll` header).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Enrollment {
    /// No header.
    Absent,
    /// A token this collector accepts.
    Valid,
    /// A header whose token this collector does not accept.
    Invalid,
}

/// A report whose signature verified, with the key that signed it.
#[derive(Debug, Clone)]
pub struct Verified {
    pub key_id: KeyId,
    pub report: Report,
}

/// Checks the envelope in `body`: size, version, key id, signature, report validity.
pub fn verify(body: &[u8]) -> Result<Verified, Rejection> {
    let unverified = decode(body)?;
    let key_id = unverified.key_id().clone();
    let report = unverified.verify()?;
    Ok(Verified { key_id, report })
}

/// Everything `verify` checks before the signature: size, version, key id, encodings. The
/// signature is then checked by `verify_all`, with others.
pub fn decode(body: &[u8]) -> Result<Unverified, Rejection> {
    if body.len() > MAX_ENVELOPE_BYTES {
        return Err(Rejection::OversizedBody {
            limit: MAX_ENVELOPE_BYTES,
        });
    }
    let envelope = SignedEnvelope::from_json(body)?;
    let (_, key) = envelope.signer()?;
    Ok(envelope.unverified(&key)?)
}

/// Checks many decoded envelopes' signatures in one batch (`shoal_proto::verify_all`: the same
/// verdicts as `verify`, at a fraction of the cost per signature) and opens their reports; one
/// result per envelope, in order.
pub fn verify_all(batch: Vec<Unverified>) -> Vec<Result<Verified, Rejection>> {
    let key_ids: Vec<KeyId> = batch.iter().map(|u| u.key_id().clone()).collect();
    shoal_proto::verify_all(batch)
        .into_iter()
        .zip(key_ids)
        .map(|(opened, key_id)| {
            Ok(Verified {
                key_id,
                report: opened?,
            })
        })
        .collect()
}

/// What the store knows about the device and key, read under the writer lock.
#[derive(Debug, Default)]
pub struct Current {
    /// The key pinned to the report's device id (pre-registered or enrolled).
    pub pinned_key: Option<String>,
    /// The device the report's key is pinned to, if any.
    pub key_owner: Option<String>,
    /// The device's latest accepted state.
    pub record: Option<DeviceRecord>,
    /// The last sequence accepted from the report's key for this device before that key lost its
    /// pin (unpin or re-key), if it ever did. Read only when the latest record is from another key.
    pub retired_sequence: Option<u64>,
}

/// What to write for an accepted report.
#[derive(Debug)]
pub struct Decision {
    /// Pin the key to the device (first contact with a valid enrollment token).
    pub enroll: bool,
    pub record: DeviceRecord,
    /// History slot number and entry to insert.
    pub history: (u64, HistoryEntry),
    /// History slot to drop (the oldest, once the limit is reached).
    pub evict: Option<u64>,
}

/// Applies the enrollment, pinning and sequence rules. `now` is the collector's clock (unix s).
pub fn decide(
    current: Current,
    verified: Verified,
    enrollment: Enrollment,
    now: u64,
) -> Result<Decision, Rejection> {
    let Verified { key_id, report } = verified;
    let key_id = key_id.to_string();
    let device_id = report.device_id.clone();
    let enroll = match &current.pinned_key {
        Some(pinned) if *pinned == key_id => false,
        Some(pinned) => {
            return Err(Rejection::KeyMismatch {
                detail: format!(
                    "device {device_id} is pinned to key {pinned}, the report is signed by {key_id}; if the device's key really changed, an operator re-keys it (PUT /api/v1/devices/{device_id}/key) or unpins it (DELETE) so it can enroll again"
                ),
            })
        }
        None => {
            if let Some(owner) = current.key_owner.as_deref().filter(|o| *o != device_id) {
                return Err(Rejection::KeyMismatch {
                    detail: format!(
                        "key {key_id} is pinned to device {owner}, the report claims device {device_id}"
                    ),
                });
            }
            match enrollment {
                Enrollment::Valid => true,
                Enrollment::Invalid => {
                    return Err(Rejection::BadEnrollmentToken { key_id, device_id })
                }
                Enrollment::Absent => return Err(Rejection::UnknownKey { key_id, device_id }),
            }
        }
    };
    // Sequences are per key: a device that comes back with a new key (re-imaged, so its counter
    // restarted) is not refused as a replay of its old key's reports. Those cannot be replayed
    // anyway: the old key is no longer pinned, and if it is pinned again, its retired sequence
    // is its floor.
    let same_key_last = current
        .record
        .as_ref()
        .filter(|old| old.key_id == key_id)
        .map(|old| old.report.sequence);
    if let Some(last) = same_key_last.max(current.retired_sequence) {
        if report.sequence <= last {
            return Err(Rejection::ReplayedSequence {
                device_id,
                sequence: report.sequence,
                last,
            });
        }
    }
    let (first_seen, slot) = match &current.record {
        Some(old) => (old.first_seen, old.history_next),
        None => (now, 0),
    };
    let evict = slot.checked_sub(HISTORY_LIMIT);
    Ok(Decision {
        enroll,
        history: (
            slot,
            HistoryEntry {
                received_at: now,
                report: report.clone(),
            },
        ),
        evict,
        record: DeviceRecord {
            key_id,
            first_seen,
            last_seen: now,
            history_next: slot + 1,
            report,
        },
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use ed25519_dalek::SigningKey;
    use shoal_proto::Status;

    fn verified(seed: u8, device: &str, seq: u64) -> Verified {
        let key = SigningKey::from_bytes(&[seed; 32]);
        Verified {
            key_id: KeyId::of(&key.verifying_key()),
            report: Report::new(device, Status::Converged, seq),
        }
    }

    fn record_for(v: &Verified, history_next: u64) -> DeviceRecord {
        DeviceRecord {
            key_id: v.key_id.to_string(),
            first_seen: 5,
            last_seen: 6,
            history_next,
            report: v.report.clone(),
        }
    }

    #[test]
    fn unknown_key_needs_a_valid_token() {
        let v = verified(1, "gw-1", 1);
        let r = decide(Current::default(), v.clone(), Enrollment::Absent, 10);
        assert_eq!(r.unwrap_err().reason_code(), "unknown_key");
        let r = decide(Current::default(), v.clone(), Enrollment::Invalid, 10);
        assert_eq!(r.unwrap_err().reason_code(), "bad_enrollment_token");
        let d = decide(Current::default(), v, Enrollment::Valid, 10).unwrap();
        assert!(d.enroll);
        assert_eq!((d.record.first_seen, d.record.last_seen), (10, 10));
        assert_eq!(d.history.0, 0);
        assert_eq!(d.evict, None);
    }

    #[test]
    fn a_token_cannot_rekey_a_pinned_device_or_reuse_a_pinned_key() {
        let v = verified(1, "gw-1", 1);
        let other = verified(2, "gw-1", 1);
        let current = Current {
            pinned_key: Some(other.key_id.to_string()),
            ..Current::default()
        };
        let r = decide(current, v.clone(), Enrollment::Valid, 10);
        assert_eq!(r.unwrap_err().reason_code(), "key_mismatch");
        let current = Current {
            key_owner: Some("gw-2".into()),
            ..Current::default()
        };
        let r = decide(current, v, Enrollment::Valid, 10);
        assert_eq!(r.unwrap_err().reason_code(), "key_mismatch");
    }

    #[test]
    fn sequence_must_increase_and_history_is_bounded() {
        let v = verified(1, "gw-1", 7);
        let current = || Current {
            pinned_key: Some(v.key_id.to_string()),
            key_owner: Some("gw-1".into()),
            record: Some(record_for(&v, HISTORY_LIMIT + 3)),
            retired_sequence: None,
        };
        let r = decide(current(), v.clone(), Enrollment::Absent, 10).unwrap_err();
        assert_eq!(
            r,
            Rejection::ReplayedSequence {
                device_id: "gw-1".into(),
                sequence: 7,
                last: 7
            }
        );
        let d = decide(current(), verified(1, "gw-1", 8), Enrollment::Absent, 10).unwrap();
        assert!(!d.enroll);
        assert_eq!(d.record.first_seen, 5, "first_seen is kept");
        assert_eq!(d.history.0, HISTORY_LIMIT + 3);
        assert_eq!(d.evict, Some(3));
        assert_eq!(d.record.history_next, HISTORY_LIMIT + 4);
    }

    #[test]
    fn a_new_key_starts_its_own_sequence_and_a_retired_key_keeps_its_floor() {
        // gw-1 reported up to sequence 500 with key 1, then was re-keyed to key 2, whose
        // device restarted its counter.
        let old = verified(1, "gw-1", 500);
        let new = verified(2, "gw-1", 1);
        let current = || Current {
            pinned_key: Some(new.key_id.to_string()),
            key_owner: Some("gw-1".into()),
            record: Some(record_for(&old, 500)),
            retired_sequence: None,
        };
        let d = decide(current(), new.clone(), Enrollment::Absent, 10).unwrap();
        assert_eq!(d.record.key_id, new.key_id.to_string());
        assert_eq!(d.record.first_seen, 5, "the device's history goes on");
        assert_eq!(d.history.0, 500);

        // Key 1 pinned again later: its old reports are still replays.
        let again = || Current {
            pinned_key: Some(old.key_id.to_string()),
            key_owner: Some("gw-1".into()),
            record: Some(record_for(&new, 501)),
            retired_sequence: Some(500),
        };
        let r = decide(again(), verified(1, "gw-1", 500), Enrollment::Absent, 10);
        assert_eq!(r.unwrap_err().reason_code(), "replayed_sequence");
        decide(again(), verified(1, "gw-1", 501), Enrollment::Absent, 10).unwrap();
    }

    #[test]
    fn every_reason_code_is_listed() {
        let all = [
            Rejection::OversizedBody { limit: 1 },
            Rejection::MalformedEnvelope {
                reason: String::new(),
            },
            Rejection::UnsupportedVersion { version: 2 },
            Rejection::BadSignature {
                key_id: String::new(),
            },
            Rejection::MalformedReport {
                reason: String::new(),
            },
            Rejection::InvalidReport {
                reason: String::new(),
            },
            Rejection::UnknownKey {
                key_id: String::new(),
                device_id: String::new(),
            },
            Rejection::BadEnrollmentToken {
                key_id: String::new(),
                device_id: String::new(),
            },
            Rejection::KeyMismatch {
                detail: String::new(),
            },
            Rejection::ReplayedSequence {
                device_id: String::new(),
                sequence: 0,
                last: 0,
            },
        ];
        let codes: Vec<_> = all.iter().map(Rejection::reason_code).collect();
        assert_eq!(codes, Rejection::REASON_CODES);
    }
}
