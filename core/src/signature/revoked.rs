//! Revoked keys: parses the file git's `gpg.ssh.revocationFile` takes (an OpenSSH KRL made by
//! `ssh-keygen -k`, or a plain list of public keys) and answers whether a signing key is listed.
//! A listed key is refused whatever the trust root says. Does no I/O: the agent reads the file
//! and hands its bytes to [`RevokedKeys::from_bytes`].
//!
//! Like OpenSSH (`sshkey_check_revoked`), a file that starts with the KRL magic is a KRL, anything
//! else a list of keys. We fail closed where OpenSSH would too (a line that is not a key), and also
//! where it would not: a KRL section Shoal does not read (certificates, the KRL's own signature, a
//! section type from a newer OpenSSH) is an error, never skipped, so a revocation can never be
//! silently ignored.

use std::fmt;
use std::path::{Path, PathBuf};

use ssh_key::public::KeyData;
use ssh_key::{HashAlg, PublicKey};

/// `"SSHKRL\n\0"` (PROTOCOL.krl).
const KRL_MAGIC: &[u8; 8] = b"SSHKRL\n\0";
const KRL_FORMAT_VERSION: u32 = 1;

/// Why a revocation file cannot be used. Each variant names the file, and the line or byte
/// offset at fault.
#[derive(Debug, thiserror::Error)]
pub enum RevokedError {
    #[error("cannot read the revoked keys file {}: {reason}; every commit is refused until it can be read (or remove `[trust] revoked_keys`)", path.display())]
    Read { path: PathBuf, reason: String },
    #[error("{}:{line}: the revoked keys file is not valid UTF-8 (and does not start with the KRL magic `SSHKRL`); write one OpenSSH public key per line, or make a KRL with `ssh-keygen -k`", path.display())]
    NotUtf8 { path: PathBuf, line: usize },
    #[error("{}:{line}: not a public key ({reason}); each line needs `<key-type> <base64-key> [comment]`, as in a .pub file", path.display())]
    InvalidKey {
        path: PathBuf,
        line: usize,
        reason: String,
    },
    #[error("{}: the KRL is truncated or malformed at byte {offset} ({problem}); regenerate it with `ssh-keygen -k -f {}`", path.display(), path.display())]
    MalformedKrl {
        path: PathBuf,
        offset: usize,
        problem: &'static str,
    },
    #[error("{}: KRL format version {version} is not supported (only 1); regenerate it with `ssh-keygen -k`", path.display())]
    KrlVersion { path: PathBuf, version: u32 },
    #[error("{}: the KRL has a {name} section (type {section}, at byte {offset}) which Shoal does not read, so it refuses the whole file rather than ignore a revocation; revoke plain keys (`key:`), SHA256 (`hash:`) or SHA1 (`sha1:`) fingerprints only, and do not sign the KRL", path.display())]
    UnsupportedSection {
        path: PathBuf,
        section: u8,
        name: &'static str,
        offset: usize,
    },
}

/// Which entry of the file revokes a key, for messages.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RevokedBy {
    /// A public key on this line of a plain list.
    Line(usize),
    /// A KRL explicit-key section.
    KrlKey,
    /// A KRL SHA256-fingerprint section.
    KrlSha256,
    /// A KRL SHA1-fingerprint section.
    KrlSha1,
}

impl fmt::Display for RevokedBy {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            RevokedBy::Line(line) => write!(f, "line {line}"),
            RevokedBy::KrlKey => f.write_str("KRL, explicit key"),
            RevokedBy::KrlSha256 => f.write_str("KRL, SHA256 fingerprint"),
            RevokedBy::KrlSha1 => f.write_str("KRL, SHA1 fingerprint"),
        }
    }
}

/// A key found in the revocation file: where, and which entry.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Revocation {
    pub file: PathBuf,
    pub by: RevokedBy,
}

/// The parsed revocation file: key blobs and fingerprints that are never trusted.
#[derive(Debug, Clone, Default)]
pub struct RevokedKeys {
    origin: PathBuf,
    /// (SSH wire blob of the key, entry).
    keys: Vec<(Vec<u8>, RevokedBy)>,
    sha256: Vec<[u8; 32]>,
    sha1: Vec<[u8; 20]>,
}

impl RevokedKeys {
    /// Parses the bytes of the file at `path` (named in errors): a KRL if it starts with the KRL
    /// magic, else a list of public keys.
    pub fn from_bytes(bytes: &[u8], path: &Path) -> Result<Self, RevokedError> {
        let mut revoked = RevokedKeys {
            origin: path.to_owned(),
            ..RevokedKeys::default()
        };
        if bytes.starts_with(KRL_MAGIC) {
            revoked.parse_krl(bytes)?;
        } else {
            revoked.parse_list(bytes)?;
        }
        Ok(revoked)
    }

    /// The file the entries came from.
    pub fn origin(&self) -> &Path {
        &self.origin
    }

    /// How many keys and fingerprints the file lists.
    pub fn len(&self) -> usize {
        self.keys.len() + self.sha256.len() + self.sha1.len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Whether `key` is revoked, and by which entry.
    pub fn find(&self, key: &KeyData) -> Option<Revocation> {
        let blob = PublicKey::from(key.clone()).to_bytes().ok()?;
        let found = |by: RevokedBy| {
            Some(Revocation {
                file: self.origin.clone(),
                by,
            })
        };
        if let Some((_, by)) = self.keys.iter().find(|(k, _)| *k == blob) {
            return found(by.clone());
        }
        if !self.sha256.is_empty() {
            let fingerprint = key.fingerprint(HashAlg::Sha256);
            if self.sha256.iter().any(|h| h[..] == *fingerprint.as_bytes()) {
                return found(RevokedBy::KrlSha256);
            }
        }
        if !self.sha1.is_empty() {
            // A SHA-1 collision attack on the key blob is refused as if revoked: fail closed.
            match sha1dc::digest(&blob) {
                Ok(digest) if !self.sha1.iter().any(|h| digest == *h) => {}
                _ => return found(RevokedBy::KrlSha1),
            }
        }
        None
    }

    /// `sshkey_in_file`: blank lines and `#` comments are skipped, every other line must be a
    /// public key (any type OpenSSH knows; only ed25519 ones can ever sign for Shoal).
    fn parse_list(&mut self, bytes: &[u8]) -> Result<(), RevokedError> {
        for (index, line) in bytes.split(|&b| b == b'\n').enumerate() {
            let line_no = index + 1;
            let text = std::str::from_utf8(line).map_err(|_| RevokedError::NotUtf8 {
                path: self.origin.clone(),
                line: line_no,
            })?;
            let text = text.trim_matches([' ', '\t', '\r']);
            if text.is_empty() || text.starts_with('#') {
                continue;
            }
            let key = PublicKey::from_openssh(text).map_err(|e| RevokedError::InvalidKey {
                path: self.origin.clone(),
                line: line_no,
                reason: e.to_string(),
            })?;
            let blob = key.to_bytes().map_err(|e| RevokedError::InvalidKey {
                path: self.origin.clone(),
                line: line_no,
                reason: e.to_string(),
            })?;
            self.keys.push((blob, RevokedBy::Line(line_no)));
        }
        Ok(())
    }

    /// PROTOCOL.krl: a header, then `byte type, string data` sections.
    fn parse_krl(&mut self, bytes: &[u8]) -> Result<(), RevokedError> {
        let mut reader = Reader {
            bytes,
            at: KRL_MAGIC.len(),
            path: &self.origin,
        };
        let version = reader.u32("the format version")?;
        if version != KRL_FORMAT_VERSION {
            return Err(RevokedError::KrlVersion {
                path: self.origin.clone(),
                version,
            });
        }
        reader.u64("the KRL version")?;
        reader.u64("the generation date")?;
        reader.u64("the flags")?;
        reader.string("the reserved field")?;
        reader.string("the comment")?;
        while !reader.is_empty() {
            let offset = reader.at;
            let section = reader.byte("a section type")?;
            let data = reader.string("a section's data")?;
            let data_at = reader.at - data.len();
            let mut inner = Reader {
                bytes: &bytes[..reader.at],
                at: data_at,
                path: &self.origin,
            };
            match section {
                2 => {
                    while !inner.is_empty() {
                        let blob = inner.string("an explicit key")?;
                        self.keys.push((blob.to_vec(), RevokedBy::KrlKey));
                    }
                }
                3 => {
                    while !inner.is_empty() {
                        let hash = inner.string("a SHA1 fingerprint")?;
                        let hash = <[u8; 20]>::try_from(hash)
                            .map_err(|_| inner.malformed("a SHA1 fingerprint is not 20 bytes"))?;
                        self.sha1.push(hash);
                    }
                }
                5 => {
                    while !inner.is_empty() {
                        let hash = inner.string("a SHA256 fingerprint")?;
                        let hash = <[u8; 32]>::try_from(hash)
                            .map_err(|_| inner.malformed("a SHA256 fingerprint is not 32 bytes"))?;
                        self.sha256.push(hash);
                    }
                }
                other => {
                    let name = match other {
                        1 => "certificates",
                        4 => "signature",
                        _ => "unknown",
                    };
                    return Err(RevokedError::UnsupportedSection {
                        path: self.origin.clone(),
                        section: other,
                        name,
                        offset,
                    });
                }
            }
        }
        Ok(())
    }
}

/// SSH wire format over the KRL's bytes, with the offset for error messages.
struct Reader<'b> {
    bytes: &'b [u8],
    at: usize,
    path: &'b Path,
}

impl<'b> Reader<'b> {
    fn is_empty(&self) -> bool {
        self.at >= self.bytes.len()
    }

    fn malformed(&self, problem: &'static str) -> RevokedError {
        RevokedError::MalformedKrl {
            path: self.path.to_owned(),
            offset: self.at,
            problem,
        }
    }

    fn take(&mut self, len: usize, what: &'static str) -> Result<&'b [u8], RevokedError> {
        let end = self
            .at
            .checked_add(len)
            .filter(|&end| end <= self.bytes.len())
            .ok_or_else(|| self.malformed(what))?;
        let taken = &self.bytes[self.at..end];
        self.at = end;
        Ok(taken)
    }

    fn byte(&mut self, what: &'static str) -> Result<u8, RevokedError> {
        Ok(self.take(1, what)?[0])
    }

    fn u32(&mut self, what: &'static str) -> Result<u32, RevokedError> {
        let bytes = self.take(4, what)?;
        Ok(u32::from_be_bytes([bytes[0], bytes[1], bytes[2], bytes[3]]))
    }

    fn u64(&mut self, what: &'static str) -> Result<u64, RevokedError> {
        let bytes = self.take(8, what)?;
        let mut array = [0; 8];
        array.copy_from_slice(bytes);
        Ok(u64::from_be_bytes(array))
    }

    fn string(&mut self, what: &'static str) -> Result<&'b [u8], RevokedError> {
        let len = self.u32(what)?;
        let len = usize::try_from(len).map_err(|_| self.malformed(what))?;
        self.take(len, what)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const ALICE: &str =
        "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIBgqO+3I2d03iDv9TQDFHM7SLcu01mVRXsHh8aF7k2H9 alice";
    const BOB: &str =
        "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIKxN3aYPg1GdQ/rgz/o/fKMXUiy1cc63DjSr1yD6AcnG bob";

    fn key(line: &str) -> KeyData {
        PublicKey::from_openssh(line).unwrap().key_data().clone()
    }

    fn path() -> PathBuf {
        PathBuf::from("/etc/shoal/revoked_keys")
    }

    #[test]
    fn a_plain_list_revokes_its_keys_only() {
        let text = format!("# revoked 2026-12-01\n\n  {ALICE}\n");
        let revoked = RevokedKeys::from_bytes(text.as_bytes(), &path()).unwrap();
        assert_eq!(
            revoked.find(&key(ALICE)),
            Some(Revocation {
                file: path(),
                by: RevokedBy::Line(3)
            })
        );
        assert_eq!(revoked.find(&key(BOB)), None);
    }

    #[test]
    fn a_line_that_is_not_a_key_rejects_the_file() {
        let text = format!("{ALICE}\nssh-ed25519 AAAAnotbase64\n");
        let error = RevokedKeys::from_bytes(text.as_bytes(), &path())
            .unwrap_err()
            .to_string();
        assert!(
            error.starts_with("/etc/shoal/revoked_keys:2: not a public key ("),
            "{error}"
        );
        assert!(
            error.ends_with(
                "each line needs `<key-type> <base64-key> [comment]`, as in a .pub file"
            ),
            "{error}"
        );
    }

    /// A KRL by hand: header, then the given sections.
    fn krl(sections: &[(u8, Vec<u8>)]) -> Vec<u8> {
        let mut out = KRL_MAGIC.to_vec();
        out.extend(1u32.to_be_bytes());
        out.extend([0u8; 24]);
        out.extend(0u32.to_be_bytes());
        out.extend(0u32.to_be_bytes());
        for (kind, data) in sections {
            out.push(*kind);
            out.extend(u32::try_from(data.len()).unwrap().to_be_bytes());
            out.extend(data);
        }
        out
    }

    fn string(bytes: &[u8]) -> Vec<u8> {
        let mut out = u32::try_from(bytes.len()).unwrap().to_be_bytes().to_vec();
        out.extend(bytes);
        out
    }

    #[test]
    fn krl_sections_for_keys_and_fingerprints() {
        let blob = PublicKey::from_openssh(ALICE).unwrap().to_bytes().unwrap();
        let sha256 = key(BOB).fingerprint(HashAlg::Sha256);
        let explicit = krl(&[(2, string(&blob))]);
        let by_hash = krl(&[(5, string(sha256.as_bytes()))]);
        let bob_blob = PublicKey::from_openssh(BOB).unwrap().to_bytes().unwrap();
        let sha1: [u8; 20] = sha1dc::digest(&bob_blob).unwrap().into();
        let by_sha1 = krl(&[(3, string(&sha1))]);

        let revoked = RevokedKeys::from_bytes(&explicit, &path()).unwrap();
        assert_eq!(revoked.find(&key(ALICE)).unwrap().by, RevokedBy::KrlKey);
        assert_eq!(revoked.find(&key(BOB)), None);
        let revoked = RevokedKeys::from_bytes(&by_hash, &path()).unwrap();
        assert_eq!(revoked.find(&key(BOB)).unwrap().by, RevokedBy::KrlSha256);
        assert_eq!(revoked.find(&key(ALICE)), None);
        let revoked = RevokedKeys::from_bytes(&by_sha1, &path()).unwrap();
        assert_eq!(revoked.find(&key(BOB)).unwrap().by, RevokedBy::KrlSha1);
        assert_eq!(revoked.find(&key(ALICE)), None);
    }

    #[test]
    fn unsupported_krl_sections_are_refused_not_skipped() {
        for (section, name) in [(1, "certificates"), (4, "signature"), (9, "unknown")] {
            let error = RevokedKeys::from_bytes(&krl(&[(section, string(b"x"))]), &path())
                .unwrap_err()
                .to_string();
            assert_eq!(
                error,
                format!("/etc/shoal/revoked_keys: the KRL has a {name} section (type {section}, at byte 44) which Shoal does not read, so it refuses the whole file rather than ignore a revocation; revoke plain keys (`key:`), SHA256 (`hash:`) or SHA1 (`sha1:`) fingerprints only, and do not sign the KRL")
            );
        }
    }

    #[test]
    fn a_truncated_krl_names_the_offset() {
        let mut bytes = krl(&[(5, string(&[0; 32]))]);
        bytes.truncate(bytes.len() - 1);
        assert_eq!(
            RevokedKeys::from_bytes(&bytes, &path()).unwrap_err().to_string(),
            "/etc/shoal/revoked_keys: the KRL is truncated or malformed at byte 49 (a section's data); regenerate it with `ssh-keygen -k -f /etc/shoal/revoked_keys`"
        );
        let short = krl(&[(5, string(&[0; 31]))]);
        assert!(RevokedKeys::from_bytes(&short, &path())
            .unwrap_err()
            .to_string()
            .contains("(a SHA256 fingerprint is not 32 bytes)"));
        let mut version = krl(&[]);
        version[11] = 2;
        assert_eq!(
            RevokedKeys::from_bytes(&version, &path()).unwrap_err().to_string(),
            "/etc/shoal/revoked_keys: KRL format version 2 is not supported (only 1); regenerate it with `ssh-keygen -k`"
        );
    }
}
