//! What a generation declared, as plain data (path → content hash, mode, owner, group) that the
//! state module persists as JSON; computed from a desired state without I/O.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};
// ssh-key re-exports the very `sha2` crate the agent already links for SSHSIG; using it avoids
// a second copy in the dependency tree.
use ssh_key::sha2::{Digest, Sha256};

use crate::render::DesiredState;

/// The files one generation declared. Generation 0 (before Shoal managed anything) is the
/// empty manifest.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Manifest {
    pub files: BTreeMap<PathBuf, ManifestEntry>,
}

/// One declared file: its content by hash (the bytes live in apply's blob store) and its
/// metadata as declared (owner and group are names or numeric ids, resolved on the device).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ManifestEntry {
    /// sha256 of the content, lowercase hex.
    pub sha256: String,
    #[serde(with = "octal_mode")]
    pub mode: u32,
    pub owner: String,
    pub group: String,
}

impl Manifest {
    /// The manifest a desired state declares (services are not part of it yet).
    pub fn from_desired(desired: &DesiredState) -> Manifest {
        let files = desired
            .files
            .iter()
            .map(|(path, file)| {
                let entry = ManifestEntry {
                    sha256: sha256_hex(&file.content),
                    mode: file.mode,
                    owner: file.owner.clone(),
                    group: file.group.clone(),
                };
                (path.clone(), entry)
            })
            .collect();
        Manifest { files }
    }

    pub fn get(&self, path: &Path) -> Option<&ManifestEntry> {
        self.files.get(path)
    }

    pub fn contains(&self, path: &Path) -> bool {
        self.files.contains_key(path)
    }
}

/// Lowercase hex sha256 of `bytes`: the content address used by manifests, the disk snapshot
/// and apply's blob store.
pub fn sha256_hex(bytes: &[u8]) -> String {
    hex(&Sha256::digest(bytes))
}

/// Lowercase hex of a digest.
pub fn hex(digest: &[u8]) -> String {
    const DIGITS: &[u8; 16] = b"0123456789abcdef";
    let mut out = String::with_capacity(digest.len() * 2);
    for byte in digest {
        out.push(char::from(DIGITS[usize::from(byte >> 4)]));
        out.push(char::from(DIGITS[usize::from(byte & 0x0f)]));
    }
    out
}

/// Whether `text` looks like what [`sha256_hex`] produces; apply uses hashes as file names, so
/// anything else read back from disk is refused.
pub fn is_sha256_hex(text: &str) -> bool {
    text.len() == 64 && text.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f'))
}

/// File modes as the operator writes them (`"0644"`), not as decimal numbers, in every JSON
/// document Shoal writes (manifests, the journal, `--json` output).
pub mod octal_mode {
    use serde::{de, Deserializer, Serializer};

    pub fn serialize<S: Serializer>(mode: &u32, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.collect_str(&format_args!("{mode:04o}"))
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(deserializer: D) -> Result<u32, D::Error> {
        let text: String = de::Deserialize::deserialize(deserializer)?;
        parse(&text).ok_or_else(|| {
            de::Error::invalid_value(de::Unexpected::Str(&text), &"an octal mode like \"0644\"")
        })
    }

    fn parse(text: &str) -> Option<u32> {
        if text.is_empty() || text.len() > 5 {
            return None;
        }
        let mode = u32::from_str_radix(text, 8).ok()?;
        (mode <= 0o7777).then_some(mode)
    }
}
