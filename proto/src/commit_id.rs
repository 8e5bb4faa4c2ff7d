//! Commit ids as a type: a full git object id in lowercase hex (40 digits for SHA-1, 64 for
//! SHA-256), checked once where it enters (a state file, a report) and never re-parsed after.

use serde::{Deserialize, Serialize};

/// A full git commit id, lowercase hex. Its serde form is the hex string, so files and reports
/// that held a `String` read the same.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct CommitId(String);

/// Why a string is not a commit id.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
#[error("{input:?} is not a commit id (40 or 64 hexadecimal digits)")]
pub struct CommitIdError {
    input: String,
}

impl CommitId {
    /// Parses 40 (SHA-1) or 64 (SHA-256) hex digits, either case; the id keeps them lowercase.
    pub fn parse(input: &str) -> Result<CommitId, CommitIdError> {
        let hex = matches!(input.len(), 40 | 64) && input.bytes().all(|b| b.is_ascii_hexdigit());
        if !hex {
            return Err(CommitIdError {
                input: input.to_owned(),
            });
        }
        Ok(CommitId(input.to_ascii_lowercase()))
    }

    /// The id of a raw object hash (20 or 32 bytes), as git's object databases hold them.
    pub fn from_raw(bytes: &[u8]) -> Result<CommitId, CommitIdError> {
        let hex: String = bytes.iter().map(|b| format!("{b:02x}")).collect();
        CommitId::parse(&hex)
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl TryFrom<String> for CommitId {
    type Error = CommitIdError;
    fn try_from(value: String) -> Result<Self, Self::Error> {
        CommitId::parse(&value)
    }
}

impl From<CommitId> for String {
    fn from(id: CommitId) -> String {
        id.0
    }
}

impl std::fmt::Display for CommitId {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::str::FromStr for CommitId {
    type Err = CommitIdError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        CommitId::parse(s)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn full_ids_of_both_formats_parse_and_keep_lowercase() {
        let sha1 = "0123456789ABCDEF0123456789abcdef01234567";
        assert_eq!(
            CommitId::parse(sha1).unwrap().as_str(),
            sha1.to_ascii_lowercase()
        );
        let sha256 = "a".repeat(64);
        assert_eq!(CommitId::parse(&sha256).unwrap().as_str(), sha256);
        assert_eq!(
            CommitId::from_raw(&[0xab; 20]).unwrap().as_str(),
            "ab".repeat(20)
        );
    }

    #[test]
    fn anything_else_is_refused_with_the_input_named() {
        for bad in [
            "",
            "abc",
            "../applied-commit",
            &"g".repeat(40),
            &"a".repeat(41),
        ] {
            let err = CommitId::parse(bad).unwrap_err();
            assert!(err.to_string().contains(&format!("{bad:?}")), "{err}");
        }
        assert!(serde_json::from_str::<CommitId>("\"abc\"").is_err());
        let id: CommitId = serde_json::from_str(&format!("\"{}\"", "b".repeat(40))).unwrap();
        assert_eq!(
            serde_json::to_string(&id).unwrap(),
            format!("\"{}\"", "b".repeat(40))
        );
    }
}
