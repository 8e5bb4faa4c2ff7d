//! The collector's signed list of halted commits, returned in the answer to every accepted report
//! (DESIGN.md, "Rollouts: waves, halt"). A device pins the collector's ed25519 key in
//! `[collector] key`; a halt only keeps devices that have not applied a commit from applying it,
//! so the worst a collector (or anyone holding its key) can do with a list is delay a rollout.
//!
//! Wire format (version 1), a JSON object, the `halts` field of the report answer:
//! `{"version":1,"key_id":"ed25519:BASE64(32 bytes)","payload":"BASE64(HaltList JSON)","signature":"BASE64(64 bytes)"}`
//! with standard padded base64. The signature is ed25519 (strict verification) over
//! `HALTS_SIGNING_CONTEXT ‖ payload bytes`, so no report signature (or any other use of the key)
//! can be passed off as a halt list.
//!
//! Replay: `serial` grows by one with every change of the list (a halt, a resume) and is kept by
//! the collector's store, so replicas over one database sign the same serial for the same list. A
//! device keeps the highest serial it accepted and ignores any list with a lower one: an old list
//! replayed to bring back a halted commit's absence (or a resumed commit's halt) changes nothing.

use base64::engine::general_purpose::STANDARD;
use base64::Engine as _;
use ed25519_dalek::{Signature, Signer as _, SigningKey, VerifyingKey};
use serde::{Deserialize, Serialize};

use crate::{CommitId, KeyId, KeyIdError};

/// The only halt-list version this crate writes and reads.
pub const HALTS_VERSION: u32 = 1;

/// Prefixed to the payload bytes before signing (domain separation from report envelopes).
pub const HALTS_SIGNING_CONTEXT: &[u8] = b"shoal-halts-v1\0";

/// Most commits one list may name; a longer list is refused as malformed (a device reads it
/// into memory on every sync).
pub const MAX_HALTED: usize = 1024;

/// What the collector signs: every commit halted now, and the list's serial.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct HaltList {
    /// Grows by one with every change of the list; devices ignore a lower one (replay).
    pub serial: u64,
    /// When the list was signed, seconds since the Unix epoch (shown to operators; replay is
    /// decided by `serial`, never by clocks).
    pub issued_at: u64,
    /// The halted commits, each with why and since when.
    pub halted: Vec<Halt>,
}

/// One halted commit.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Halt {
    pub commit: CommitId,
    /// Who or what halted it and why, for people: `operator: ...` or
    /// `automatic: 3 of 5 devices that tried it failed or rolled back (threshold 0.5)`.
    pub reason: String,
    /// Seconds since the Unix epoch.
    pub since: u64,
}

impl HaltList {
    /// True when `commit` is halted by this list.
    pub fn halts(&self, commit: &CommitId) -> bool {
        self.halted.iter().any(|h| &h.commit == commit)
    }

    /// The halt for `commit`, if any.
    pub fn halt_of(&self, commit: &CommitId) -> Option<&Halt> {
        self.halted.iter().find(|h| &h.commit == commit)
    }
}

/// A halt list, signed by the collector. Fields are the wire format; unknown fields are ignored.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SignedHalts {
    pub version: u32,
    /// `ed25519:` + base64 of the collector's 32-byte public key (see [`KeyId`]).
    pub key_id: String,
    /// Base64 of the list's JSON bytes: the exact bytes that were signed.
    pub payload: String,
    /// Base64 of the 64-byte ed25519 signature over `HALTS_SIGNING_CONTEXT ‖ payload bytes`.
    pub signature: String,
}

/// Why a signed halt list was not accepted. A device ignores such a list (it keeps the last one
/// it accepted) and says why in its next report.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum HaltsError {
    #[error(
        "halt list version {version} is not supported (this side speaks version {HALTS_VERSION})"
    )]
    UnsupportedVersion { version: u32 },
    #[error("halt list is signed by {signer}, not by the pinned collector key {pinned}")]
    OtherKey { signer: String, pinned: KeyId },
    #[error("halt list key id: {0}")]
    BadKeyId(#[from] KeyIdError),
    #[error("halt list signature does not verify with the pinned collector key {key_id}")]
    BadSignature { key_id: KeyId },
    #[error("halt list is not valid: {reason}")]
    Malformed { reason: String },
}

impl SignedHalts {
    /// Signs `list` with the collector's key.
    pub fn seal(key: &SigningKey, list: &HaltList) -> SignedHalts {
        // Invariant: numbers, strings and commit ids; serde_json cannot fail on them.
        let payload = serde_json::to_vec(list).expect("a HaltList always serializes to JSON");
        let signature = key.sign(&signed_message(&payload));
        SignedHalts {
            version: HALTS_VERSION,
            key_id: KeyId::of(&key.verifying_key()).to_string(),
            payload: STANDARD.encode(&payload),
            signature: STANDARD.encode(signature.to_bytes()),
        }
    }

    /// Verifies the signature with the pinned key `pinned` (strict), then parses the list. The
    /// key id is compared first so a list from another collector is named as such.
    pub fn open(&self, pinned: &VerifyingKey) -> Result<HaltList, HaltsError> {
        if self.version != HALTS_VERSION {
            return Err(HaltsError::UnsupportedVersion {
                version: self.version,
            });
        }
        let pinned_id = KeyId::of(pinned);
        if self.key_id != pinned_id.as_str() {
            return Err(HaltsError::OtherKey {
                signer: self.key_id.clone(),
                pinned: pinned_id,
            });
        }
        let payload = STANDARD
            .decode(&self.payload)
            .map_err(|e| malformed(format!("payload is not base64: {e}")))?;
        let signature = STANDARD
            .decode(&self.signature)
            .map_err(|e| malformed(format!("signature is not base64: {e}")))?;
        let bad = || HaltsError::BadSignature {
            key_id: pinned_id.clone(),
        };
        let signature = Signature::from_slice(&signature).map_err(|_| bad())?;
        pinned
            .verify_strict(&signed_message(&payload), &signature)
            .map_err(|_| bad())?;
        let list: HaltList =
            serde_json::from_slice(&payload).map_err(|e| malformed(e.to_string()))?;
        if list.halted.len() > MAX_HALTED {
            return Err(malformed(format!(
                "it names {} commits, over the limit of {MAX_HALTED}",
                list.halted.len()
            )));
        }
        Ok(list)
    }
}

fn signed_message(payload: &[u8]) -> Vec<u8> {
    let mut msg = Vec::with_capacity(HALTS_SIGNING_CONTEXT.len() + payload.len());
    msg.extend_from_slice(HALTS_SIGNING_CONTEXT);
    msg.extend_from_slice(payload);
    msg
}

fn malformed(reason: String) -> HaltsError {
    HaltsError::Malformed { reason }
}

#[cfg(test)]
mod tests {
    use super::*;

    const COMMIT: &str = "0123456789abcdef0123456789abcdef01234567";

    fn key(seed: u8) -> SigningKey {
        SigningKey::from_bytes(&[seed; 32])
    }

    fn list(serial: u64) -> HaltList {
        HaltList {
            serial,
            issued_at: 1_790_000_000,
            halted: vec![Halt {
                commit: CommitId::parse(COMMIT).unwrap(),
                reason: "operator: wrong endpoint".into(),
                since: 1_789_999_000,
            }],
        }
    }

    #[test]
    fn a_sealed_list_opens_with_the_pinned_key() {
        let signed = SignedHalts::seal(&key(1), &list(7));
        let opened = signed.open(&key(1).verifying_key()).unwrap();
        assert_eq!(opened, list(7));
        assert!(opened.halts(&CommitId::parse(COMMIT).unwrap()));
        // Through JSON as on the wire.
        let wire: SignedHalts =
            serde_json::from_slice(&serde_json::to_vec(&signed).unwrap()).unwrap();
        assert_eq!(wire.open(&key(1).verifying_key()).unwrap(), list(7));
    }

    #[test]
    fn another_collectors_list_is_named_as_such() {
        let signed = SignedHalts::seal(&key(2), &list(7));
        let err = signed.open(&key(1).verifying_key()).unwrap_err();
        assert!(matches!(err, HaltsError::OtherKey { .. }), "{err}");
        assert!(err.to_string().contains("not by the pinned collector key"));
    }

    #[test]
    fn a_tampered_or_resigned_list_is_refused() {
        let mut signed = SignedHalts::seal(&key(1), &list(7));
        // The payload swapped for another list: the signature no longer covers it.
        signed.payload = STANDARD.encode(serde_json::to_vec(&list(8)).unwrap());
        let err = signed.open(&key(1).verifying_key()).unwrap_err();
        assert!(matches!(err, HaltsError::BadSignature { .. }), "{err}");
        // A report-envelope-style signature (no halts context) over the same payload.
        let mut signed = SignedHalts::seal(&key(1), &list(7));
        let payload = STANDARD.decode(&signed.payload).unwrap();
        signed.signature = STANDARD.encode(key(1).sign(&payload).to_bytes());
        assert!(matches!(
            signed.open(&key(1).verifying_key()),
            Err(HaltsError::BadSignature { .. })
        ));
        // Garbage and other versions.
        let mut signed = SignedHalts::seal(&key(1), &list(7));
        signed.signature = "!!".into();
        assert!(matches!(
            signed.open(&key(1).verifying_key()),
            Err(HaltsError::Malformed { .. })
        ));
        let mut signed = SignedHalts::seal(&key(1), &list(7));
        signed.version = 2;
        assert_eq!(
            signed.open(&key(1).verifying_key()),
            Err(HaltsError::UnsupportedVersion { version: 2 })
        );
    }

    #[test]
    fn an_overlong_list_is_refused() {
        let mut long = list(1);
        long.halted = vec![long.halted[0].clone(); MAX_HALTED + 1];
        let signed = SignedHalts::seal(&key(1), &long);
        let err = signed.open(&key(1).verifying_key()).unwrap_err();
        assert!(err.to_string().contains("over the limit of 1024"), "{err}");
    }
}
