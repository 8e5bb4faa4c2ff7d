//! The public keys of the devices that report, decompressed once: a bounded cache from key id
//! (`ed25519:BASE64`) to the curve point the signature check needs, used to decode envelopes on
//! the request's worker. Decompressing a key is a field inversion (a few µs per report, the same
//! key every 60 s); the mapping is a pure function of the key id text, so a cached key is exactly
//! what parsing would give. Decides nothing: trust (pins) is the store's and `ingest::decide`'s.

use std::collections::HashMap;
use std::hash::BuildHasher as _;
use std::sync::Mutex;

use ed25519_dalek::VerifyingKey;
use shoal_fleet::ingest::Rejection;
use shoal_proto::{EnvelopeError, KeyId, SignedEnvelope, Unverified, MAX_ENVELOPE_BYTES};

/// Keys kept by default: a fleet of this many devices never decompresses a key twice. About
/// 280 bytes each (the id's text and the point), so about 18 MiB when full.
pub const DEFAULT_CAPACITY: usize = 1 << 16;
/// Independent locks, so the async workers rarely wait for each other.
const SHARDS: usize = 16;

/// The cache (shared by every request handler).
pub struct Signers {
    shards: [Mutex<HashMap<String, VerifyingKey>>; SHARDS],
    per_shard: usize,
    hasher: std::collections::hash_map::RandomState,
}

impl Default for Signers {
    fn default() -> Signers {
        Signers::with_capacity(DEFAULT_CAPACITY)
    }
}

impl Signers {
    /// A cache that holds about `capacity` keys (at least one per shard).
    pub fn with_capacity(capacity: usize) -> Signers {
        Signers {
            shards: std::array::from_fn(|_| Mutex::new(HashMap::new())),
            per_shard: capacity.div_ceil(SHARDS).max(1),
            hasher: Default::default(),
        }
    }

    /// The public key `key_id` names: from the cache, or parsed (and then kept if the id is in
    /// canonical form, the only form an envelope may carry).
    pub fn key(&self, key_id: &str) -> Result<VerifyingKey, shoal_proto::KeyIdError> {
        let shard = &self.shards[self.hasher.hash_one(key_id) as usize % SHARDS];
        // A poisoned shard only means a panic elsewhere mid-insert; the map is still valid.
        let lock = || shard.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(key) = lock().get(key_id) {
            return Ok(*key);
        }
        let (id, key) = KeyId::parse_with_key(key_id)?;
        if id.as_str() == key_id {
            let mut map = lock();
            if map.len() >= self.per_shard {
                // Full: drop any one key (a fleet larger than the cache decompresses some keys
                // again; none is ever wrong).
                if let Some(old) = map.keys().next().cloned() {
                    map.remove(&old);
                }
            }
            map.insert(id.as_str().to_owned(), key);
        }
        Ok(key)
    }

    /// Keys held now.
    pub fn len(&self) -> usize {
        self.shards
            .iter()
            .map(|s| s.lock().unwrap_or_else(|p| p.into_inner()).len())
            .sum()
    }

    /// Whether no key is held.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// `shoal_fleet::ingest::decode` with the signer's key from this cache: everything but the
    /// signature (size, version, key id, encodings); the signature is then checked in a batch.
    pub fn decode(&self, body: &[u8]) -> Result<Unverified, Rejection> {
        if body.len() > MAX_ENVELOPE_BYTES {
            return Err(Rejection::OversizedBody {
                limit: MAX_ENVELOPE_BYTES,
            });
        }
        let envelope = SignedEnvelope::from_json(body)?;
        let key = self
            .key(&envelope.key_id)
            .map_err(EnvelopeError::BadKeyId)?;
        Ok(envelope.unverified(&key)?)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use ed25519_dalek::SigningKey;
    use shoal_proto::{Report, Status};

    fn key(seed: u8) -> SigningKey {
        SigningKey::from_bytes(&[seed; 32])
    }

    #[test]
    fn a_cached_key_is_the_parsed_key_and_the_cache_stays_bounded() {
        let signers = Signers::with_capacity(SHARDS);
        for seed in 0..100u8 {
            let k = key(seed).verifying_key();
            let id = KeyId::of(&k);
            assert_eq!(signers.key(id.as_str()).unwrap(), k, "first look-up");
            assert_eq!(signers.key(id.as_str()).unwrap(), k, "cached");
            assert!(signers.len() <= SHARDS, "held {}", signers.len());
        }
        assert!(!signers.is_empty());
    }

    #[test]
    fn only_canonical_ids_are_kept_and_bad_ids_are_refused_with_the_parsers_error() {
        let signers = Signers::default();
        let k = key(1).verifying_key();
        let openssh = format!(
            "ssh-ed25519 {}",
            // An OpenSSH line names the same key; an envelope's key id must not be one.
            KeyId::of(&k).as_str().strip_prefix("ed25519:").unwrap()
        );
        let _ = signers.key(&openssh);
        assert!(signers.is_empty(), "a non-canonical id is not kept");
        let err = signers.key("ed25519:AAAA").unwrap_err();
        assert_eq!(
            err.to_string(),
            "key id \"ed25519:AAAA\" is not standard base64 of a 32-byte ed25519 public key"
        );
        assert!(signers.is_empty());
    }

    #[test]
    fn decode_gives_the_same_verdicts_as_ingest_decode() {
        let signers = Signers::default();
        let sealed =
            shoal_proto::SignedEnvelope::seal(&key(3), &Report::new("gw-1", Status::Converged, 1))
                .unwrap();
        let good = sealed.to_json();
        let mut other_key = sealed.clone();
        other_key.key_id = "ed25519:AAAA".into();
        let bodies = [
            good.clone(),
            good,
            other_key.to_json(),
            b"{\"version\":2}".to_vec(),
            b"not json".to_vec(),
            vec![b' '; MAX_ENVELOPE_BYTES + 1],
        ];
        for body in &bodies {
            let ours = signers.decode(body).map(|u| u.key_id().clone());
            let theirs = shoal_fleet::ingest::decode(body).map(|u| u.key_id().clone());
            assert_eq!(ours, theirs);
        }
        assert_eq!(signers.len(), 1);
    }
}
