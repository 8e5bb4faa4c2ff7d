//! The enrollment check: a device proves it holds its identity key (a signature over its id and
//! the time) so the collector can tell it whether that key is the one pinned to its id, with no
//! side effect. Encoding, signing and verifying only; the HTTP headers are named here so both
//! sides agree.

use base64::engine::general_purpose::STANDARD;
use base64::Engine as _;
use ed25519_dalek::{Signature, Signer as _, SigningKey, Verifier as _};

use crate::key_id::{KeyId, KeyIdError};

/// Header carrying the device's key id (`ed25519:BASE64`).
pub const KEY_HEADER: &str = "x-shoal-key";
/// Header carrying the unix time the proof was made at.
pub const TIME_HEADER: &str = "x-shoal-time";
/// Header carrying base64 of the signature over [`EnrollmentProof::message`].
pub const SIGNATURE_HEADER: &str = "x-shoal-signature";
/// How far the proof's time may be from the collector's clock, in seconds either way.
pub const MAX_SKEW_SECS: u64 = 300;

/// Domain separation: a proof can never be mistaken for a signed report, or the other way.
const CONTEXT: &[u8] = b"shoal-enrollment-check-v1\0";

/// Why a proof is refused.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum ProofError {
    #[error("enrollment proof key: {0}")]
    BadKey(#[from] KeyIdError),
    #[error("enrollment proof time {time:?} is not a unix time in seconds")]
    BadTime { time: String },
    #[error("enrollment proof made at unix time {time}, more than {MAX_SKEW_SECS} s from the collector's clock ({now}); set the device's clock (NTP)")]
    Skewed { time: u64, now: u64 },
    #[error(
        "enrollment proof signature does not verify with key {key_id} for device {device_id:?}"
    )]
    BadSignature { key_id: KeyId, device_id: String },
}

/// A proof of key possession for `device_id`, as sent in the three headers.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EnrollmentProof {
    pub key_id: String,
    pub time: String,
    pub signature: String,
}

impl EnrollmentProof {
    /// Signs `device_id` and `time` with the device key.
    pub fn sign(key: &SigningKey, device_id: &str, time: u64) -> EnrollmentProof {
        let signature = key.sign(&Self::message(device_id, time));
        EnrollmentProof {
            key_id: KeyId::of(&key.verifying_key()).to_string(),
            time: time.to_string(),
            signature: STANDARD.encode(signature.to_bytes()),
        }
    }

    /// The signed bytes: context ‖ device id ‖ NUL ‖ decimal time.
    pub fn message(device_id: &str, time: u64) -> Vec<u8> {
        let mut message = CONTEXT.to_vec();
        message.extend_from_slice(device_id.as_bytes());
        message.push(0);
        message.extend_from_slice(time.to_string().as_bytes());
        message
    }

    /// Checks the proof for `device_id` at the collector's clock `now`; the key it proves.
    pub fn verify(&self, device_id: &str, now: u64) -> Result<KeyId, ProofError> {
        let (key_id, key) = KeyId::parse_with_key(&self.key_id)?;
        let time: u64 = self.time.trim().parse().map_err(|_| ProofError::BadTime {
            time: self.time.clone(),
        })?;
        if time.abs_diff(now) > MAX_SKEW_SECS {
            return Err(ProofError::Skewed { time, now });
        }
        let bad = || ProofError::BadSignature {
            key_id: key_id.clone(),
            device_id: device_id.to_owned(),
        };
        let bytes = STANDARD.decode(self.signature.trim()).map_err(|_| bad())?;
        let signature = Signature::from_slice(&bytes).map_err(|_| bad())?;
        key.verify(&Self::message(device_id, time), &signature)
            .map_err(|_| bad())?;
        Ok(key_id)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_proof_verifies_for_its_device_and_time_only() {
        let key = SigningKey::from_bytes(&[7; 32]);
        let proof = EnrollmentProof::sign(&key, "gw-1", 1_000_000);
        assert_eq!(
            proof.verify("gw-1", 1_000_100),
            Ok(KeyId::of(&key.verifying_key()))
        );
        assert!(matches!(
            proof.verify("gw-2", 1_000_000),
            Err(ProofError::BadSignature { .. })
        ));
        assert_eq!(
            proof.verify("gw-1", 1_000_301),
            Err(ProofError::Skewed {
                time: 1_000_000,
                now: 1_000_301
            })
        );
        let mut forged = proof.clone();
        forged.time = "1000001".into();
        assert!(matches!(
            forged.verify("gw-1", 1_000_000),
            Err(ProofError::BadSignature { .. })
        ));
    }
}
