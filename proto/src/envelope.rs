//! The signed envelope a report travels in: JSON bytes of the report (the payload), an ed25519
//! signature over them, and the id of the signing key. Decoding enforces the size limit and the
//! version before anything else; opening verifies the signature before the payload is parsed.
//!
//! Wire format (version 1), a JSON object:
//! `{"version":1,"key_id":"ed25519:BASE64(32 bytes)","payload":"BASE64(report JSON)","signature":"BASE64(64 bytes)"}`
//! with standard padded base64. The signature is ed25519 (strict verification) over
//! `SIGNING_CONTEXT ‖ payload bytes`; the context keeps a device key's report signatures from being
//! valid for anything else it may sign.

use base64::engine::general_purpose::STANDARD;
use base64::Engine as _;
use ed25519_dalek::{Signature, Signer as _, SigningKey, VerifyingKey};
use serde::{Deserialize, Serialize};

use crate::{KeyId, KeyIdError, Report, ReportError};

/// The only envelope version this crate writes and reads.
pub const ENVELOPE_VERSION: u32 = 1;

/// Largest encoded envelope (the HTTP body) a collector accepts and `seal` produces.
pub const MAX_ENVELOPE_BYTES: usize = 64 * 1024;

/// Prefixed to the payload bytes before signing (domain separation, bound to the version).
pub const SIGNING_CONTEXT: &[u8] = b"shoal-report-v1\0";

/// A report, signed. Fields are the wire format; unknown fields are ignored on decode.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SignedEnvelope {
    pub version: u32,
    /// `ed25519:` + base64 of the signer's 32-byte public key (see [`KeyId`]).
    pub key_id: String,
    /// Base64 of the report's JSON bytes: the exact bytes that were signed.
    pub payload: String,
    /// Base64 of the 64-byte ed25519 signature over `SIGNING_CONTEXT ‖ payload bytes`.
    pub signature: String,
}

/// Why an envelope was refused. Each variant maps to one rejection reason at the collector.
#[derive(Debug, thiserror::Error)]
pub enum EnvelopeError {
    #[error("envelope is {size} bytes, over the limit of {limit} bytes")]
    TooLarge { size: usize, limit: usize },
    #[error("envelope is not valid: {reason}")]
    Malformed { reason: String },
    #[error(
        "envelope version {version} is not supported (this side speaks version {ENVELOPE_VERSION})"
    )]
    UnsupportedVersion { version: u32 },
    #[error("envelope key id: {0}")]
    BadKeyId(#[from] KeyIdError),
    #[error("envelope names key {envelope} but is being opened with key {given}")]
    KeyIdMismatch { envelope: String, given: KeyId },
    #[error("signature does not verify with key {key_id}")]
    BadSignature { key_id: KeyId },
    #[error("signed payload is not a valid report: {reason}")]
    MalformedReport { reason: String },
    #[error("signed report is invalid: {0}")]
    InvalidReport(#[from] ReportError),
}

/// Only the version, so a newer envelope is refused as "unsupported", not as "malformed".
#[derive(Deserialize)]
struct VersionProbe {
    version: u32,
}

impl SignedEnvelope {
    /// Signs `report` with the device key. Fails only when the envelope would exceed
    /// [`MAX_ENVELOPE_BYTES`] (trim `report.errors` and seal again).
    pub fn seal(key: &SigningKey, report: &Report) -> Result<SignedEnvelope, EnvelopeError> {
        // Invariant: a Report is plain strings, numbers and string-keyed maps; serde_json cannot
        // fail on it.
        let payload = serde_json::to_vec(report).expect("a Report always serializes to JSON");
        let signature = key.sign(&signed_message(&payload));
        let envelope = SignedEnvelope {
            version: ENVELOPE_VERSION,
            key_id: KeyId::of(&key.verifying_key()).to_string(),
            payload: STANDARD.encode(&payload),
            signature: STANDARD.encode(signature.to_bytes()),
        };
        let size = envelope.to_json().len();
        if size > MAX_ENVELOPE_BYTES {
            return Err(EnvelopeError::TooLarge {
                size,
                limit: MAX_ENVELOPE_BYTES,
            });
        }
        Ok(envelope)
    }

    /// The bytes to send (the HTTP body).
    pub fn to_json(&self) -> Vec<u8> {
        // Invariant: four plain fields; serde_json cannot fail on them.
        serde_json::to_vec(self).expect("an envelope always serializes to JSON")
    }

    /// Decodes received bytes: size limit first, then the version, then the fields.
    pub fn from_json(bytes: &[u8]) -> Result<SignedEnvelope, EnvelopeError> {
        if bytes.len() > MAX_ENVELOPE_BYTES {
            return Err(EnvelopeError::TooLarge {
                size: bytes.len(),
                limit: MAX_ENVELOPE_BYTES,
            });
        }
        let probe: VersionProbe = serde_json::from_slice(bytes).map_err(malformed)?;
        if probe.version != ENVELOPE_VERSION {
            return Err(EnvelopeError::UnsupportedVersion {
                version: probe.version,
            });
        }
        serde_json::from_slice(bytes).map_err(malformed)
    }

    /// The key id the envelope claims, parsed (the key is self-describing, so this also gives the
    /// key to verify with; whether that key is *trusted* is the receiver's decision).
    pub fn key_id(&self) -> Result<KeyId, EnvelopeError> {
        Ok(KeyId::parse(&self.key_id)?)
    }

    /// The claimed key id and the public key it names, decoded once.
    pub fn signer(&self) -> Result<(KeyId, VerifyingKey), EnvelopeError> {
        Ok(KeyId::parse_with_key(&self.key_id)?)
    }

    /// Verifies the signature with `key` and only then parses and validates the report.
    pub fn open(&self, key: &VerifyingKey) -> Result<Report, EnvelopeError> {
        self.unverified(key)?.verify()
    }

    /// Everything but the signature check: the version, `key` against the envelope's key id,
    /// the payload and signature decoded. What `Unverified::verify` or `verify_all` then check.
    pub fn unverified(&self, key: &VerifyingKey) -> Result<Unverified, EnvelopeError> {
        if self.version != ENVELOPE_VERSION {
            return Err(EnvelopeError::UnsupportedVersion {
                version: self.version,
            });
        }
        let given = KeyId::of(key);
        // Key ids are canonical (`KeyId::of`), so comparing text is comparing keys.
        if self.key_id != given.as_str() {
            return Err(EnvelopeError::KeyIdMismatch {
                envelope: self.key_id.clone(),
                given,
            });
        }
        let payload = STANDARD
            .decode(&self.payload)
            .map_err(|e| EnvelopeError::Malformed {
                reason: format!("payload is not base64: {e}"),
            })?;
        let signature = STANDARD
            .decode(&self.signature)
            .map_err(|e| EnvelopeError::Malformed {
                reason: format!("signature is not base64: {e}"),
            })?;
        let signature =
            Signature::from_slice(&signature).map_err(|_| EnvelopeError::BadSignature {
                key_id: given.clone(),
            })?;
        Ok(Unverified {
            key_id: given,
            key: *key,
            message: signed_message(&payload),
            signature,
        })
    }
}

/// A decoded envelope whose signature is not checked yet. Its report can only be had through
/// `verify` (strict, one signature) or [`verify_all`] (a batch): nothing reads an unchecked
/// payload.
#[derive(Debug, Clone)]
pub struct Unverified {
    key_id: KeyId,
    key: VerifyingKey,
    /// `SIGNING_CONTEXT ‖ payload`: what was signed.
    message: Vec<u8>,
    signature: Signature,
}

impl Unverified {
    /// The key that claims to have signed it.
    pub fn key_id(&self) -> &KeyId {
        &self.key_id
    }

    /// Checks the signature strictly (`verify_strict`: no weak key, no small-order R, the
    /// cofactorless equation), then parses and validates the report.
    pub fn verify(self) -> Result<Report, EnvelopeError> {
        self.key
            .verify_strict(&self.message, &self.signature)
            .map_err(|_| EnvelopeError::BadSignature {
                key_id: self.key_id.clone(),
            })?;
        self.report()
    }

    /// The report, once the signature is checked (private: only the checks call it).
    fn report(self) -> Result<Report, EnvelopeError> {
        let payload = &self.message[SIGNING_CONTEXT.len()..];
        let report: Report =
            serde_json::from_slice(payload).map_err(|e| EnvelopeError::MalformedReport {
                reason: e.to_string(),
            })?;
        report.validate()?;
        Ok(report)
    }
}

/// Below this many signatures a batch is checked one by one (the batch's fixed cost and the
/// search for a bad one stop paying).
#[cfg(feature = "batch")]
const SMALLEST_BATCH: usize = 4;

/// Checks many envelopes' signatures at once (ed25519-dalek's batch verification, about a third
/// of the cost per signature of one-by-one checks at 32 or more) and opens each: one result per
/// envelope, in order, the same verdicts as `Unverified::verify` gives for every envelope an
/// honest or a dishonest sender can make of another's key. A batch that fails is split in halves
/// until the bad signatures are found, so one bad envelope costs its neighbours a few more batch
/// checks, not a strict check each; what is finally refused is refused by `verify_strict`, with
/// its error. Weak keys never enter a batch (checked strictly, so refused as before).
///
/// The one difference from `verify_strict`: batch verification uses the cofactorless equation
/// with random weights, which a signer could satisfy with a signature whose R or key has a
/// torsion component — with its own key only: it cannot forge for another key, and what it gets
/// accepted is a report of its own.
#[cfg(feature = "batch")]
pub fn verify_all(batch: Vec<Unverified>) -> Vec<Result<Report, EnvelopeError>> {
    let mut checked: Vec<Option<bool>> = batch
        .iter()
        .map(|u| u.key.is_weak().then_some(false))
        .collect();
    let candidates: Vec<usize> = (0..batch.len()).filter(|i| checked[*i].is_none()).collect();
    check_batch(&batch, &candidates, &mut checked);
    batch
        .into_iter()
        .zip(checked)
        .map(|(unverified, ok)| match ok {
            Some(true) => unverified.report(),
            // Refused by the batch or weak: the strict check says why (and agrees it is bad).
            _ => unverified.verify(),
        })
        .collect()
}

/// Marks `checked[i]` for every index in `which`: true when a batch holding it verified, false
/// when it is left to the strict check.
#[cfg(feature = "batch")]
fn check_batch(batch: &[Unverified], which: &[usize], checked: &mut [Option<bool>]) {
    if which.len() < SMALLEST_BATCH {
        for i in which {
            checked[*i] = Some(false);
        }
        return;
    }
    let messages: Vec<&[u8]> = which.iter().map(|i| batch[*i].message.as_slice()).collect();
    let signatures: Vec<Signature> = which.iter().map(|i| batch[*i].signature).collect();
    let keys: Vec<VerifyingKey> = which.iter().map(|i| batch[*i].key).collect();
    if ed25519_dalek::verify_batch(&messages, &signatures, &keys).is_ok() {
        for i in which {
            checked[*i] = Some(true);
        }
        return;
    }
    let (left, right) = which.split_at(which.len() / 2);
    check_batch(batch, left, checked);
    check_batch(batch, right, checked);
}

fn signed_message(payload: &[u8]) -> Vec<u8> {
    let mut msg = Vec::with_capacity(SIGNING_CONTEXT.len() + payload.len());
    msg.extend_from_slice(SIGNING_CONTEXT);
    msg.extend_from_slice(payload);
    msg
}

fn malformed(e: serde_json::Error) -> EnvelopeError {
    EnvelopeError::Malformed {
        reason: e.to_string(),
    }
}
