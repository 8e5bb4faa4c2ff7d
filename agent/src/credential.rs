//! The credential for a private configuration repository (`[source] auth_file`): read from its own
//! file, which must be owned by the agent's user and readable by no one else, and kept in a
//! [`Secret`] that never prints its value. Decides nothing about where the credential is sent
//! (that is `fetch`'s origin check); must not let the value reach a `Display`, `Debug`, log field,
//! error or report.

use std::fmt;
use std::fs::File;
use std::io::Read;
use std::os::unix::fs::{MetadataExt, OpenOptionsExt};
use std::path::{Path, PathBuf};

use base64::Engine as _;

/// A value that must never be shown: `Debug` and `Display` print `[redacted]`. The only way to
/// the value is [`Secret::expose`], called where it is put on the wire.
#[derive(Clone, PartialEq, Eq)]
pub struct Secret(String);

impl Secret {
    pub fn new(value: String) -> Self {
        Secret(value)
    }

    /// The value itself, for the one place it is sent (an `Authorization` header).
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("[redacted]")
    }
}

impl fmt::Display for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("[redacted]")
    }
}

/// Which kind of credential a file holds; what messages may say about it (never the value).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CredentialKind {
    /// `token = "..."`, sent as `Authorization: Bearer ...`.
    Token,
    /// `username` + `password`, sent as HTTP Basic; the user name is not secret.
    User(String),
}

/// A credential loaded from `[source] auth_file`: the file it came from, its kind, and the
/// `Authorization` header value it becomes (secret).
#[derive(Debug, Clone)]
pub struct Credential {
    pub file: PathBuf,
    pub kind: CredentialKind,
    authorization: Secret,
}

impl fmt::Display for Credential {
    /// How messages name the credential: `the token in /etc/shoal/git-auth.toml`.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.kind {
            CredentialKind::Token => write!(f, "the token in {}", self.file.display()),
            CredentialKind::User(user) => {
                write!(f, "user {user:?} from {}", self.file.display())
            }
        }
    }
}

/// Why an auth file cannot be used. Messages name the file, never what it holds.
#[derive(Debug, thiserror::Error)]
pub enum CredentialError {
    #[error("cannot read the auth file {}: {source}", path.display())]
    Read {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("the auth file {} is not a regular file; point [source] auth_file at the file itself", path.display())]
    NotAFile { path: PathBuf },
    #[error("the auth file {} is owned by uid {owner}, not by the agent's user (uid {agent}); chown it to the agent's user", path.display())]
    Owner {
        path: PathBuf,
        owner: u32,
        agent: u32,
    },
    #[error("the auth file {} has mode {mode:04o}, readable by others than its owner; chmod 600 it", path.display())]
    Mode { path: PathBuf, mode: u32 },
    #[error("the auth file {} is not valid: {message}; it holds either `token = \"...\"` or `username = \"...\"` and `password = \"...\"`", path.display())]
    Format { path: PathBuf, message: String },
}

impl Credential {
    /// Reads `path`: a regular file (a symbolic link is refused), owned by this process's
    /// effective user, with no permission bits for group or others. The checks are made on the
    /// open file, so the file read is the file checked.
    pub fn load(path: &Path) -> Result<Self, CredentialError> {
        let read_failed = |source| CredentialError::Read {
            path: path.to_owned(),
            source,
        };
        let mut file = File::options()
            .read(true)
            .custom_flags(libc::O_NOFOLLOW | libc::O_CLOEXEC)
            .open(path)
            .map_err(|e| match e.raw_os_error() {
                // O_NOFOLLOW on a symbolic link.
                Some(libc::ELOOP) => CredentialError::NotAFile {
                    path: path.to_owned(),
                },
                _ => read_failed(e),
            })?;
        let meta = file.metadata().map_err(read_failed)?;
        if !meta.is_file() {
            return Err(CredentialError::NotAFile {
                path: path.to_owned(),
            });
        }
        // SAFETY: geteuid has no preconditions and cannot fail.
        let agent = unsafe { libc::geteuid() };
        if meta.uid() != agent {
            return Err(CredentialError::Owner {
                path: path.to_owned(),
                owner: meta.uid(),
                agent,
            });
        }
        let mode = meta.mode() & 0o7777;
        if mode & 0o077 != 0 {
            return Err(CredentialError::Mode {
                path: path.to_owned(),
                mode,
            });
        }
        let mut text = String::new();
        file.read_to_string(&mut text).map_err(read_failed)?;
        Self::parse(Secret(text), path)
    }

    /// Parses the file's text. No message quotes it: toml's own messages can show the offending
    /// line or value, which may be the secret, so its syntax errors keep only the line number and
    /// the keys and types are checked here (strict like agent.toml: a misspelt key is an error,
    /// not an anonymous fetch).
    pub fn parse(text: Secret, path: &Path) -> Result<Self, CredentialError> {
        let invalid = |message: String| CredentialError::Format {
            path: path.to_owned(),
            message,
        };
        let table: toml::Table = toml::from_str(text.expose()).map_err(|e| {
            invalid(match e.span() {
                Some(span) => {
                    let line = text.expose()[..span.start].matches('\n').count() + 1;
                    format!("not valid TOML at line {line}")
                }
                None => "not valid TOML".to_owned(),
            })
        })?;
        let mut raw: [Option<String>; 3] = [None, None, None];
        for (key, value) in table {
            let slot = match key.as_str() {
                "token" => 0,
                "username" => 1,
                "password" => 2,
                // A key is named back only when it looks like one (not a pasted secret).
                _ if key.len() <= 16 && key.chars().all(|c| c.is_ascii_lowercase() || c == '_') => {
                    return Err(invalid(format!("unknown key `{key}`")))
                }
                _ => return Err(invalid("an unknown key".to_owned())),
            };
            match value {
                toml::Value::String(value) => raw[slot] = Some(value),
                _ => return Err(invalid(format!("`{key}` must be a quoted string"))),
            }
        }
        let [token, username, password] = raw;
        let (kind, authorization) = match (token, username, password) {
            (Some(token), None, None) => {
                if token.is_empty() || !token.chars().all(|c| c.is_ascii_graphic()) {
                    return Err(invalid(
                        "`token` must be non-empty printable ASCII without spaces".into(),
                    ));
                }
                (CredentialKind::Token, format!("Bearer {token}"))
            }
            (None, Some(username), Some(password)) => {
                if username.is_empty()
                    || username.contains(':')
                    || username.chars().any(char::is_control)
                {
                    return Err(invalid(
                        "`username` must be non-empty, without `:` or control characters".into(),
                    ));
                }
                if password.chars().any(char::is_control) {
                    return Err(invalid(
                        "`password` must not contain control characters".into(),
                    ));
                }
                let encoded = base64::engine::general_purpose::STANDARD
                    .encode(format!("{username}:{password}"));
                (CredentialKind::User(username), format!("Basic {encoded}"))
            }
            (Some(_), _, _) => {
                return Err(invalid(
                    "it sets both `token` and a user name or password; keep one of the two forms"
                        .into(),
                ))
            }
            (None, None, None) => return Err(invalid("it sets no credential".into())),
            (None, Some(_), None) => return Err(invalid("`username` without `password`".into())),
            (None, None, Some(_)) => return Err(invalid("`password` without `username`".into())),
        };
        Ok(Credential {
            file: path.to_owned(),
            kind,
            authorization: Secret(authorization),
        })
    }

    /// The value of the `Authorization` header this credential becomes.
    pub fn authorization(&self) -> &Secret {
        &self.authorization
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::PermissionsExt;

    const TOKEN: &str = "glpat-s3cr3t-Xy9";

    fn write(dir: &Path, text: &str, mode: u32) -> PathBuf {
        let path = dir.join("git-auth.toml");
        std::fs::write(&path, text).unwrap();
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(mode)).unwrap();
        path
    }

    #[test]
    fn a_secret_never_prints_its_value() {
        let secret = Secret::new(TOKEN.into());
        assert_eq!(format!("{secret}"), "[redacted]");
        assert_eq!(format!("{secret:?}"), "[redacted]");
        let dir = tempfile::tempdir().unwrap();
        let path = write(dir.path(), &format!("token = \"{TOKEN}\"\n"), 0o600);
        let credential = Credential::load(&path).unwrap();
        for shown in [
            format!("{credential}"),
            format!("{credential:?}"),
            format!("{credential:#?}"),
        ] {
            assert!(!shown.contains(TOKEN), "{shown}");
        }
        assert_eq!(
            credential.to_string(),
            format!("the token in {}", path.display())
        );
        assert_eq!(
            credential.authorization().expose(),
            format!("Bearer {TOKEN}")
        );
    }

    #[test]
    fn user_and_password_become_basic_auth() {
        let credential = Credential::parse(
            Secret::new("username = \"deploy\"\npassword = \"pa ss:wörd\"\n".into()),
            Path::new("/etc/shoal/git-auth.toml"),
        )
        .unwrap();
        assert_eq!(credential.kind, CredentialKind::User("deploy".into()));
        let expected =
            base64::engine::general_purpose::STANDARD.encode("deploy:pa ss:wörd".as_bytes());
        assert_eq!(
            credential.authorization().expose(),
            format!("Basic {expected}")
        );
        assert_eq!(
            credential.to_string(),
            "user \"deploy\" from /etc/shoal/git-auth.toml"
        );
    }

    #[test]
    fn a_malformed_file_is_named_and_its_content_never_quoted() {
        let cases = [
            (
                format!("token = \"{TOKEN}\"\ntokn = \"x\"\n"),
                "unknown key `tokn`",
            ),
            (
                "password = 123456\nusername = \"u\"\n".into(),
                "`password` must be a quoted string",
            ),
            (
                format!("token = \"{TOKEN}\"\nusername = \"u\"\npassword = \"p\"\n"),
                "sets both `token` and a user name",
            ),
            (String::new(), "sets no credential"),
            (
                format!("username = \"{TOKEN}\"\n"),
                "`username` without `password`",
            ),
            (
                format!("password = \"{TOKEN}\"\n"),
                "`password` without `username`",
            ),
            (format!("token = {TOKEN}\n"), "not valid TOML at line 1"),
            (
                format!("token = \"\"\"\n{TOKEN}\n\"\"\"\n"),
                "printable ASCII",
            ),
            (format!("token = \"{TOKEN}\"\ntoken = \"x\"\n"), "line 2"),
        ];
        for (text, expected) in cases {
            let err =
                Credential::parse(Secret::new(text.clone()), Path::new("/etc/a.toml")).unwrap_err();
            let message = err.to_string();
            assert!(
                message.starts_with("the auth file /etc/a.toml is not valid: "),
                "{message}"
            );
            assert!(message.contains(expected), "{message:?} for {text:?}");
            assert!(!message.contains(TOKEN), "{message:?} quotes the secret");
            assert!(!message.contains("123456"), "{message:?} quotes the secret");
            assert!(!format!("{err:?}").contains(TOKEN), "{err:?}");
        }
    }

    #[test]
    fn a_file_others_can_read_or_that_is_not_a_file_is_refused_naming_it() {
        let dir = tempfile::tempdir().unwrap();
        for mode in [0o644, 0o640, 0o604, 0o660] {
            let path = write(dir.path(), &format!("token = \"{TOKEN}\"\n"), mode);
            let message = Credential::load(&path).unwrap_err().to_string();
            assert_eq!(
                message,
                format!(
                    "the auth file {} has mode {mode:04o}, readable by others than its owner; \
                     chmod 600 it",
                    path.display()
                )
            );
        }
        let path = write(dir.path(), &format!("token = \"{TOKEN}\"\n"), 0o400);
        assert!(
            Credential::load(&path).is_ok(),
            "0400 is stricter than 0600"
        );

        let link = dir.path().join("link.toml");
        std::os::unix::fs::symlink(&path, &link).unwrap();
        let message = Credential::load(&link).unwrap_err().to_string();
        assert!(message.contains("is not a regular file"), "{message}");
        let message = Credential::load(dir.path()).unwrap_err().to_string();
        assert!(message.contains("is not a regular file"), "{message}");
        let message = Credential::load(&dir.path().join("missing"))
            .unwrap_err()
            .to_string();
        assert!(
            message.starts_with("cannot read the auth file "),
            "{message}"
        );
    }

    #[test]
    fn a_file_owned_by_another_user_is_refused_naming_both() {
        if !shoal_testkit::require_root("giving a file to another user") {
            return;
        }
        let dir = tempfile::tempdir().unwrap();
        let path = write(dir.path(), &format!("token = \"{TOKEN}\"\n"), 0o600);
        std::os::unix::fs::chown(&path, Some(65534), None).unwrap();
        let message = Credential::load(&path).unwrap_err().to_string();
        assert_eq!(
            message,
            format!(
                "the auth file {} is owned by uid 65534, not by the agent's user (uid 0); chown it \
                 to the agent's user",
                path.display()
            )
        );
    }
}
