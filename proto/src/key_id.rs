//! Device key ids: the text form of an ed25519 public key, `ed25519:` + standard base64 of its 32
//! bytes. A key id is self-describing, so a verifier needs nothing else to check a signature.

use base64::engine::general_purpose::STANDARD;
use base64::Engine as _;
use ed25519_dalek::VerifyingKey;

const PREFIX: &str = "ed25519:";
const OPENSSH_TYPE: &str = "ssh-ed25519";

/// An ed25519 public key in the form `ed25519:BASE64` (canonical: parse → display is the identity).
/// Its serde form is that string, checked when read.
#[derive(
    Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, serde::Serialize, serde::Deserialize,
)]
#[serde(try_from = "String", into = "String")]
pub struct KeyId(String);

/// Why a string is not a usable key id.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum KeyIdError {
    #[error("key id {input:?} does not start with \"ed25519:\" (or \"ssh-ed25519 \" for an OpenSSH public key line)")]
    UnknownAlgorithm { input: String },
    #[error("key id {input:?} is not standard base64 of a 32-byte ed25519 public key")]
    BadEncoding { input: String },
    #[error("key id {input:?} is not a valid ed25519 public key (not a curve point)")]
    NotAKey { input: String },
}

impl KeyId {
    /// The key id of a public key.
    pub fn of(key: &VerifyingKey) -> KeyId {
        KeyId(format!("{PREFIX}{}", STANDARD.encode(key.as_bytes())))
    }

    /// Parses `ed25519:BASE64`, or an OpenSSH public key line `ssh-ed25519 AAAA... [comment]` (what
    /// `shoal-agent keygen` and `ssh-keygen` print), into the canonical key id.
    pub fn parse(input: &str) -> Result<KeyId, KeyIdError> {
        KeyId::parse_with_key(input).map(|(id, _)| id)
    }

    /// `parse`, also returning the public key (decoded once: decompressing a point is not free).
    pub fn parse_with_key(input: &str) -> Result<(KeyId, VerifyingKey), KeyIdError> {
        let input = input.trim();
        let key = if let Some(b64) = input.strip_prefix(PREFIX) {
            let bytes = decode_32(b64).ok_or_else(|| KeyIdError::BadEncoding {
                input: input.to_owned(),
            })?;
            VerifyingKey::from_bytes(&bytes).map_err(|_| KeyIdError::NotAKey {
                input: input.to_owned(),
            })?
        } else if let Some(rest) = input.strip_prefix(OPENSSH_TYPE) {
            parse_openssh_blob(rest, input)?
        } else {
            return Err(KeyIdError::UnknownAlgorithm {
                input: input.to_owned(),
            });
        };
        Ok((KeyId::of(&key), key))
    }

    /// The public key this id names.
    pub fn verifying_key(&self) -> Result<VerifyingKey, KeyIdError> {
        // `self.0` always came from `of` or `parse`, but re-deriving keeps one code path.
        let b64 = self.0.strip_prefix(PREFIX).unwrap_or_default();
        let bytes = decode_32(b64).ok_or_else(|| KeyIdError::BadEncoding {
            input: self.0.clone(),
        })?;
        VerifyingKey::from_bytes(&bytes).map_err(|_| KeyIdError::NotAKey {
            input: self.0.clone(),
        })
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl TryFrom<String> for KeyId {
    type Error = KeyIdError;
    fn try_from(value: String) -> Result<Self, Self::Error> {
        KeyId::parse(&value)
    }
}

impl From<KeyId> for String {
    fn from(id: KeyId) -> String {
        id.0
    }
}

impl std::fmt::Display for KeyId {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::str::FromStr for KeyId {
    type Err = KeyIdError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        KeyId::parse(s)
    }
}

fn decode_32(b64: &str) -> Option<[u8; 32]> {
    let bytes = STANDARD.decode(b64).ok()?;
    bytes.try_into().ok()
}

/// `ssh-ed25519 AAAA... comment`: the blob is `string "ssh-ed25519" ‖ string key` (RFC 4253 §6.6,
/// each string a u32 big-endian length then bytes).
fn parse_openssh_blob(rest: &str, input: &str) -> Result<VerifyingKey, KeyIdError> {
    let bad = || KeyIdError::BadEncoding {
        input: input.to_owned(),
    };
    if !rest.starts_with([' ', '\t']) {
        return Err(KeyIdError::UnknownAlgorithm {
            input: input.to_owned(),
        });
    }
    let b64 = rest.split_whitespace().next().ok_or_else(bad)?;
    let blob = STANDARD.decode(b64).map_err(|_| bad())?;
    let (kind, after) = ssh_string(&blob).ok_or_else(bad)?;
    if kind != OPENSSH_TYPE.as_bytes() {
        return Err(bad());
    }
    let (key, after) = ssh_string(after).ok_or_else(bad)?;
    if !after.is_empty() {
        return Err(bad());
    }
    let key: [u8; 32] = key.try_into().map_err(|_| bad())?;
    VerifyingKey::from_bytes(&key).map_err(|_| KeyIdError::NotAKey {
        input: input.to_owned(),
    })
}

fn ssh_string(buf: &[u8]) -> Option<(&[u8], &[u8])> {
    let len = u32::from_be_bytes(buf.get(..4)?.try_into().ok()?) as usize;
    let body = buf.get(4..4 + len)?;
    Some((body, &buf[4 + len..]))
}

#[cfg(test)]
mod tests {
    use super::*;
    use ed25519_dalek::SigningKey;

    fn key() -> VerifyingKey {
        SigningKey::from_bytes(&[7; 32]).verifying_key()
    }

    #[test]
    fn display_parse_round_trip() {
        let id = KeyId::of(&key());
        assert!(id.as_str().starts_with("ed25519:"));
        assert_eq!(id.as_str().len(), "ed25519:".len() + 44);
        assert_eq!(KeyId::parse(id.as_str()).unwrap(), id);
        assert_eq!(id.verifying_key().unwrap(), key());
    }

    #[test]
    fn openssh_line_gives_the_same_id() {
        let mut blob = Vec::new();
        for part in [OPENSSH_TYPE.as_bytes(), key().as_bytes().as_slice()] {
            blob.extend_from_slice(&(part.len() as u32).to_be_bytes());
            blob.extend_from_slice(part);
        }
        let line = format!("ssh-ed25519 {} device@gw-1\n", STANDARD.encode(&blob));
        assert_eq!(KeyId::parse(&line).unwrap(), KeyId::of(&key()));
    }

    #[test]
    fn rejects_other_algorithms_and_bad_lengths() {
        assert!(matches!(
            KeyId::parse("rsa:AAAA"),
            Err(KeyIdError::UnknownAlgorithm { .. })
        ));
        assert!(matches!(
            KeyId::parse("ssh-ed25519x AAAA"),
            Err(KeyIdError::UnknownAlgorithm { .. })
        ));
        assert!(matches!(
            KeyId::parse(&format!("ed25519:{}", STANDARD.encode([1u8; 31]))),
            Err(KeyIdError::BadEncoding { .. })
        ));
        assert!(matches!(
            KeyId::parse("ed25519:!!!"),
            Err(KeyIdError::BadEncoding { .. })
        ));
    }
}
