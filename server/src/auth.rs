//! Shared-secret tokens: the bearer tokens that guard read endpoints and the enrollment tokens
//! that let an unknown device key pin itself. Compares in constant time; never logs a token.

use std::path::{Path, PathBuf};

use subtle::ConstantTimeEq as _;

/// Shortest token accepted from a token file (guessing a 16-character random token is hopeless).
pub const MIN_TOKEN_LEN: usize = 16;

/// A set of accepted tokens (several, so a token can be rotated without downtime).
#[derive(Clone)]
pub struct Tokens(Vec<Vec<u8>>);

impl std::fmt::Debug for Tokens {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Tokens({} redacted)", self.0.len())
    }
}

#[derive(Debug, thiserror::Error)]
pub enum AuthError {
    #[error("cannot read token file {path}: {source}")]
    Read {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("token file {path} has no token: put one token per line (`#` starts a comment)")]
    Empty { path: PathBuf },
    #[error("token file {path} line {line}: token is shorter than {MIN_TOKEN_LEN} characters; generate one with `head -c 32 /dev/urandom | base64`")]
    TooShort { path: PathBuf, line: usize },
}

impl Tokens {
    /// Reads a token file: one token per line, blank lines and `#` comments ignored.
    pub fn load(path: &Path) -> Result<Tokens, AuthError> {
        let text = std::fs::read_to_string(path).map_err(|source| AuthError::Read {
            path: path.to_path_buf(),
            source,
        })?;
        let mut tokens = Vec::new();
        for (i, line) in text.lines().enumerate() {
            let line = line.trim();
            if line.is_empty() || line.starts_with('#') {
                continue;
            }
            if line.len() < MIN_TOKEN_LEN {
                return Err(AuthError::TooShort {
                    path: path.to_path_buf(),
                    line: i + 1,
                });
            }
            tokens.push(line.as_bytes().to_vec());
        }
        if tokens.is_empty() {
            return Err(AuthError::Empty {
                path: path.to_path_buf(),
            });
        }
        Ok(Tokens(tokens))
    }

    /// Tokens given directly (tests, embedding).
    pub fn new<I: IntoIterator<Item = S>, S: Into<String>>(tokens: I) -> Tokens {
        Tokens(tokens.into_iter().map(|t| t.into().into_bytes()).collect())
    }

    /// Whether `candidate` is one of the tokens. Every token is compared, each in constant time.
    pub fn accepts(&self, candidate: &[u8]) -> bool {
        let mut ok = subtle::Choice::from(0);
        for t in &self.0 {
            ok |= t.as_slice().ct_eq(candidate);
        }
        ok.into()
    }
}

/// The token of an `Authorization: Bearer TOKEN` header value.
pub fn bearer(header: &[u8]) -> Option<&[u8]> {
    let prefix = b"Bearer ";
    if header.len() > prefix.len() && header[..prefix.len()].eq_ignore_ascii_case(prefix) {
        Some(header[prefix.len()..].trim_ascii())
    } else {
        None
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn token_file_rules() {
        let dir = tempfile::tempdir().unwrap();
        let f = dir.path().join("tokens");
        std::fs::write(
            &f,
            "# read tokens\n\n0123456789abcdef0123\n  fedcba9876543210fedc  \n",
        )
        .unwrap();
        let t = Tokens::load(&f).unwrap();
        assert!(t.accepts(b"0123456789abcdef0123"));
        assert!(t.accepts(b"fedcba9876543210fedc"));
        assert!(!t.accepts(b"0123456789abcdef012"));
        assert!(!t.accepts(b""));
        std::fs::write(&f, "# nothing\n").unwrap();
        assert!(matches!(Tokens::load(&f), Err(AuthError::Empty { .. })));
        std::fs::write(&f, "short\n").unwrap();
        assert!(matches!(
            Tokens::load(&f),
            Err(AuthError::TooShort { line: 1, .. })
        ));
    }

    #[test]
    fn bearer_header() {
        assert_eq!(bearer(b"Bearer abc"), Some(&b"abc"[..]));
        assert_eq!(bearer(b"bearer abc "), Some(&b"abc"[..]));
        assert_eq!(bearer(b"Basic abc"), None);
        assert_eq!(bearer(b"Bearer "), None);
    }
}
