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

/// Which private file a message is about: each is named the way agent.toml names it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FileKind {
    /// `[source] auth_file`.
    AuthFile,
    /// `[source] ssh_key`.
    DeployKey,
    /// `[source] proxy_auth_file` / `[collector] proxy_auth_file`.
    ProxyAuthFile,
    /// `[source] client_key`.
    ClientKey,
}

impl FileKind {
    fn setting(self) -> &'static str {
        match self {
            FileKind::AuthFile => "[source] auth_file",
            FileKind::DeployKey => "[source] ssh_key",
            FileKind::ProxyAuthFile => "proxy_auth_file",
            FileKind::ClientKey => "[source] client_key",
        }
    }
}

impl fmt::Display for FileKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            FileKind::AuthFile => "auth file",
            FileKind::DeployKey => "deploy key",
            FileKind::ProxyAuthFile => "proxy auth file",
            FileKind::ClientKey => "client key",
        })
    }
}

/// Why an auth file, a deploy key or a known_hosts file cannot be used. Messages name the file,
/// never what it holds.
#[derive(Debug, thiserror::Error)]
pub enum CredentialError {
    #[error("cannot read the {kind} {}: {source}", path.display())]
    Read {
        kind: FileKind,
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("the {kind} {} is not a regular file; point {} at the file itself", path.display(), kind.setting())]
    NotAFile { kind: FileKind, path: PathBuf },
    #[error("the {kind} {} is owned by uid {owner}, not by the agent's user (uid {agent}); chown it to the agent's user", path.display())]
    Owner {
        kind: FileKind,
        path: PathBuf,
        owner: u32,
        agent: u32,
    },
    #[error("the {kind} {} has mode {mode:04o}, readable by others than its owner; chmod 600 it", path.display())]
    Mode {
        kind: FileKind,
        path: PathBuf,
        mode: u32,
    },
    #[error("the {kind} {} is not valid: {message}; it holds either `token = \"...\"` or `username = \"...\"` and `password = \"...\"`", path.display())]
    Format {
        kind: FileKind,
        path: PathBuf,
        message: String,
    },
    #[error("the deploy key {} is not an SSH private key: {message}; make one with `ssh-keygen -t ed25519 -N '' -f FILE` and give the server FILE.pub", path.display())]
    DeployKey { path: PathBuf, message: String },
    #[error("cannot use the known_hosts file {}: {message}", path.display())]
    KnownHosts { path: PathBuf, message: String },
    #[error("cannot use the client {what} {}: {message}", path.display())]
    ClientIdentity {
        what: &'static str,
        path: PathBuf,
        message: String,
    },
}

/// Opens `path` for reading as a private file of `kind`: a regular file (a symbolic link is
/// refused), owned by this process's effective user, with no permission bits for group or
/// others. The checks are made on the open file, so the file read is the file checked.
fn read_private(path: &Path, kind: FileKind) -> Result<Secret, CredentialError> {
    let read_failed = |source| CredentialError::Read {
        kind,
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
                kind,
                path: path.to_owned(),
            },
            _ => read_failed(e),
        })?;
    let meta = file.metadata().map_err(read_failed)?;
    if !meta.is_file() {
        return Err(CredentialError::NotAFile {
            kind,
            path: path.to_owned(),
        });
    }
    // SAFETY: geteuid has no preconditions and cannot fail.
    let agent = unsafe { libc::geteuid() };
    if meta.uid() != agent {
        return Err(CredentialError::Owner {
            kind,
            path: path.to_owned(),
            owner: meta.uid(),
            agent,
        });
    }
    let mode = meta.mode() & 0o7777;
    if mode & 0o077 != 0 {
        return Err(CredentialError::Mode {
            kind,
            path: path.to_owned(),
            mode,
        });
    }
    let mut text = String::new();
    file.read_to_string(&mut text).map_err(read_failed)?;
    Ok(Secret(text))
}

impl Credential {
    /// Reads `path`: a regular file (a symbolic link is refused), owned by this process's
    /// effective user, with no permission bits for group or others.
    pub fn load(path: &Path) -> Result<Self, CredentialError> {
        Self::load_as(path, FileKind::AuthFile)
    }

    /// [`Credential::load`] for a file of `kind` (the proxy's credential has the same format).
    pub fn load_as(path: &Path, kind: FileKind) -> Result<Self, CredentialError> {
        let text = read_private(path, kind)?;
        Self::parse_as(text, path, kind)
    }

    /// Parses the file's text. No message quotes it: toml's own messages can show the offending
    /// line or value, which may be the secret, so its syntax errors keep only the line number and
    /// the keys and types are checked here (strict like agent.toml: a misspelt key is an error,
    /// not an anonymous fetch).
    pub fn parse(text: Secret, path: &Path) -> Result<Self, CredentialError> {
        Self::parse_as(text, path, FileKind::AuthFile)
    }

    fn parse_as(text: Secret, path: &Path, kind: FileKind) -> Result<Self, CredentialError> {
        let invalid = |message: String| CredentialError::Format {
            kind,
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

/// `[source] ssh_key`: the deploy key the agent's `ssh` is given (`-i`). Only its path is kept:
/// the content is read once at load, to check it is a private key ssh can use without a prompt.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DeployKey {
    pub file: PathBuf,
}

impl DeployKey {
    /// Reads `path` under the auth file's rule (regular file, the agent's own, mode 0600 or
    /// stricter) and checks that it holds a private key without a passphrase (batch mode has
    /// no one to type it).
    pub fn load(path: &Path) -> Result<Self, CredentialError> {
        let text = read_private(path, FileKind::DeployKey)?;
        let invalid = |message: &str| CredentialError::DeployKey {
            path: path.to_owned(),
            message: message.to_owned(),
        };
        let body = text.expose();
        if !(body.contains("-----BEGIN ") && body.contains("PRIVATE KEY-----")) {
            return Err(invalid(
                "it holds no private key block (the server gets the public key, FILE.pub; the \
                 device keeps the private one)",
            ));
        }
        // Keys of algorithms this parser does not know are left to ssh to judge.
        if let Ok(key) = ssh_key::PrivateKey::from_openssh(body) {
            if key.is_encrypted() {
                return Err(invalid(
                    "it is protected by a passphrase, which the agent's ssh (batch mode, no \
                     prompt) cannot type",
                ));
            }
        }
        Ok(DeployKey {
            file: path.to_owned(),
        })
    }
}

/// `[source] client_cert` + `client_key`: the certificate chain and private key the agent
/// presents to a server that requires TLS client authentication (mTLS). The key follows the auth
/// file's rule; `Debug` shows the files only.
pub struct ClientIdentity {
    pub cert_file: PathBuf,
    pub key_file: PathBuf,
    certs: Vec<rustls::pki_types::CertificateDer<'static>>,
    key: rustls::pki_types::PrivateKeyDer<'static>,
}

impl Clone for ClientIdentity {
    fn clone(&self) -> Self {
        ClientIdentity {
            cert_file: self.cert_file.clone(),
            key_file: self.key_file.clone(),
            certs: self.certs.clone(),
            key: self.key.clone_key(),
        }
    }
}

impl fmt::Debug for ClientIdentity {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ClientIdentity")
            .field("cert_file", &self.cert_file)
            .field("key_file", &self.key_file)
            .finish_non_exhaustive()
    }
}

impl fmt::Display for ClientIdentity {
    /// How messages name it: `the client certificate /etc/shoal/client.pem`.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "the client certificate {}", self.cert_file.display())
    }
}

impl ClientIdentity {
    /// Reads the PEM certificate chain (leaf first) and the PEM private key (PKCS#8, PKCS#1 or
    /// SEC1), the key under the auth file's rule.
    pub fn load(cert_file: &Path, key_file: &Path) -> Result<Self, CredentialError> {
        use rustls::pki_types::pem::PemObject;
        use rustls::pki_types::{CertificateDer, PrivateKeyDer};
        let invalid = |what, path: &Path, message: String| CredentialError::ClientIdentity {
            what,
            path: path.to_owned(),
            message,
        };
        let pem = std::fs::read(cert_file)
            .map_err(|e| invalid("certificate", cert_file, e.to_string()))?;
        let certs = CertificateDer::pem_slice_iter(&pem)
            .collect::<Result<Vec<_>, _>>()
            .map_err(|e| {
                invalid(
                    "certificate",
                    cert_file,
                    format!("not a PEM certificate file: {e}"),
                )
            })?;
        if certs.is_empty() {
            return Err(invalid(
                "certificate",
                cert_file,
                "it holds no certificate (PEM `BEGIN CERTIFICATE`)".into(),
            ));
        }
        let text = read_private(key_file, FileKind::ClientKey)?;
        // pki-types' messages name the PEM section, never the key's bytes.
        let key = PrivateKeyDer::from_pem_slice(text.expose().as_bytes()).map_err(|_| {
            invalid(
                "key",
                key_file,
                "it holds no PEM private key (PKCS#8, PKCS#1 or SEC1)".into(),
            )
        })?;
        Ok(ClientIdentity {
            cert_file: cert_file.to_owned(),
            key_file: key_file.to_owned(),
            certs,
            key,
        })
    }

    /// The chain and key for rustls, at the one place they are handed to it.
    pub fn for_rustls(
        &self,
    ) -> (
        Vec<rustls::pki_types::CertificateDer<'static>>,
        rustls::pki_types::PrivateKeyDer<'static>,
    ) {
        (self.certs.clone(), self.key.clone_key())
    }
}

/// `[source] known_hosts`: the pinned host keys, in OpenSSH's format, the only ones the agent's
/// `ssh` accepts. Not secret, but a pin others can rewrite pins nothing: the file must not be
/// writable by group or others.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KnownHosts {
    pub file: PathBuf,
}

/// One host key pinned in a known_hosts file, as messages show it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PinnedKey {
    /// `ED25519`, `RSA`, `ECDSA`: what ssh's own messages call the key type.
    pub kind: String,
    /// `SHA256:...`, as `ssh-keygen -lf` prints it.
    pub fingerprint: String,
}

impl fmt::Display for PinnedKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} {}", self.kind, self.fingerprint)
    }
}

impl KnownHosts {
    /// Reads and checks `path`: a regular file, not writable by group or others, whose every
    /// line is a comment or `[@marker] HOSTS KEYTYPE BASE64`, pinning at least one key.
    pub fn load(path: &Path) -> Result<Self, CredentialError> {
        let invalid = |message: String| CredentialError::KnownHosts {
            path: path.to_owned(),
            message,
        };
        let mut file = File::options()
            .read(true)
            .custom_flags(libc::O_NOFOLLOW | libc::O_CLOEXEC)
            .open(path)
            .map_err(|e| match e.raw_os_error() {
                Some(libc::ELOOP) => invalid(
                    "it is a symbolic link; point [source] known_hosts at the file itself".into(),
                ),
                _ => invalid(e.to_string()),
            })?;
        let meta = file.metadata().map_err(|e| invalid(e.to_string()))?;
        if !meta.is_file() {
            return Err(invalid(
                "it is not a regular file; point [source] known_hosts at the file itself".into(),
            ));
        }
        let mode = meta.mode() & 0o7777;
        if mode & 0o022 != 0 {
            return Err(invalid(format!(
                "it has mode {mode:04o}, writable by others than its owner, who could replace \
                 the pinned key; chmod 644 it"
            )));
        }
        let mut text = String::new();
        file.read_to_string(&mut text)
            .map_err(|e| invalid(e.to_string()))?;
        let mut pinned = 0;
        for (index, line) in text.lines().enumerate() {
            match parse_known_host(line) {
                Ok(Some(_)) => pinned += 1,
                Ok(None) => {}
                Err(message) => {
                    return Err(invalid(format!("line {}: {message}", index + 1)));
                }
            }
        }
        if pinned == 0 {
            return Err(invalid(
                "it pins no host key; add the server's line (`ssh-keyscan -p PORT HOST`, its \
                 fingerprint checked against the one the server's operator gives you)"
                    .into(),
            ));
        }
        Ok(KnownHosts {
            file: path.to_owned(),
        })
    }

    /// The key pinned on line `number` (1-based) of the file, as ssh names it in "Offending
    /// key in FILE:N"; `None` if the file no longer reads or that line pins nothing.
    pub fn pinned_at(&self, number: usize) -> Option<PinnedKey> {
        let text = std::fs::read_to_string(&self.file).ok()?;
        let line = text.lines().nth(number.checked_sub(1)?)?;
        parse_known_host(line).ok().flatten()
    }
}

/// One known_hosts line: `None` for a blank line or a comment, the key it pins, or why it is
/// not a known_hosts line.
fn parse_known_host(line: &str) -> Result<Option<PinnedKey>, String> {
    let line = line.trim();
    if line.is_empty() || line.starts_with('#') {
        return Ok(None);
    }
    let mut fields = line.split_whitespace().peekable();
    if fields.peek().is_some_and(|f| f.starts_with('@')) {
        fields.next();
    }
    let (Some(_hosts), Some(key_type), Some(blob)) = (fields.next(), fields.next(), fields.next())
    else {
        return Err("not `HOSTS KEYTYPE BASE64KEY` (as `ssh-keyscan` prints it)".into());
    };
    let blob = base64::engine::general_purpose::STANDARD
        .decode(blob)
        .map_err(|_| format!("the {key_type} key is not valid base64"))?;
    let kind = match key_type {
        "ssh-ed25519" => "ED25519",
        "ssh-rsa" => "RSA",
        "ssh-dss" => "DSA",
        t if t.starts_with("ecdsa-sha2-") => "ECDSA",
        t if t.starts_with("sk-ssh-ed25519") => "ED25519-SK",
        t if t.starts_with("sk-ecdsa-") => "ECDSA-SK",
        _ => return Err(format!("unknown key type `{key_type}`")),
    };
    Ok(Some(PinnedKey {
        kind: kind.to_owned(),
        fingerprint: fingerprint(&blob),
    }))
}

/// The SHA-256 fingerprint of a public key blob as OpenSSH prints it (`SHA256:` and unpadded
/// base64).
pub fn fingerprint(blob: &[u8]) -> String {
    use sha2::Digest as _;
    let digest = sha2::Sha256::digest(blob);
    format!(
        "SHA256:{}",
        base64::engine::general_purpose::STANDARD_NO_PAD.encode(digest)
    )
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
    fn a_deploy_key_must_be_a_private_key_without_a_passphrase() {
        let dir = tempfile::tempdir().unwrap();
        let key = dir.path().join("deploy");
        let keygen = |passphrase: &str| {
            let _ = std::fs::remove_file(&key);
            let status = std::process::Command::new("ssh-keygen")
                .args(["-q", "-t", "ed25519", "-N", passphrase, "-f"])
                .arg(&key)
                .status()
                .unwrap();
            assert!(status.success());
        };
        if !shoal_testkit::require_tool("ssh-keygen") {
            return;
        }
        keygen("");
        assert_eq!(DeployKey::load(&key).unwrap().file, key);
        keygen("a passphrase");
        let message = DeployKey::load(&key).unwrap_err().to_string();
        assert!(
            message.contains("is protected by a passphrase, which the agent's ssh"),
            "{message}"
        );
        let public = dir.path().join("deploy.pub");
        std::fs::set_permissions(&public, std::fs::Permissions::from_mode(0o600)).unwrap();
        let message = DeployKey::load(&public).unwrap_err().to_string();
        assert!(message.contains("holds no private key block"), "{message}");
        std::fs::set_permissions(&key, std::fs::Permissions::from_mode(0o644)).unwrap();
        let message = DeployKey::load(&key).unwrap_err().to_string();
        assert_eq!(
            message,
            format!(
                "the deploy key {} has mode 0644, readable by others than its owner; chmod 600 it",
                key.display()
            )
        );
    }

    #[test]
    fn known_hosts_lines_are_checked_and_fingerprinted_as_ssh_keygen_does() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("known_hosts");
        // ssh-keygen -lf of this key prints SHA256:+DiY3wvvV6TuJJhbpZisF/zLDA0zPMSvHdkr4UvCOqU.
        let key = "AAAAC3NzaC1lZDI1NTE5AAAAIOMqqnkVzrm0SdG6UOoqKLsabgH5C9okWi0dh2l9GKJl";
        let text = format!(
            "# pinned\n\n[git.example.com]:2222 ssh-ed25519 {key}\n@revoked * ssh-ed25519 {key}\n"
        );
        std::fs::write(&path, &text).unwrap();
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o644)).unwrap();
        let known = KnownHosts::load(&path).unwrap();
        let pinned = known.pinned_at(3).unwrap();
        assert_eq!(pinned.kind, "ED25519");
        assert_eq!(
            pinned.fingerprint,
            "SHA256:+DiY3wvvV6TuJJhbpZisF/zLDA0zPMSvHdkr4UvCOqU"
        );
        assert_eq!(known.pinned_at(1), None, "a comment pins nothing");

        for (text, mode, expected) in [
            (text.clone(), 0o664, "it has mode 0664, writable by others"),
            ("# nothing\n".to_owned(), 0o644, "it pins no host key"),
            (
                format!("host ssh-ed25519\nhost ssh-ed25519 {key}\n"),
                0o644,
                "line 1: not `HOSTS KEYTYPE BASE64KEY`",
            ),
            (
                "host ssh-ed25519 not*base64\n".to_owned(),
                0o644,
                "line 1: the ssh-ed25519 key is not valid base64",
            ),
            (
                format!("host ssh-foo {key}\n"),
                0o644,
                "line 1: unknown key type `ssh-foo`",
            ),
        ] {
            std::fs::write(&path, &text).unwrap();
            std::fs::set_permissions(&path, std::fs::Permissions::from_mode(mode)).unwrap();
            let message = KnownHosts::load(&path).unwrap_err().to_string();
            assert_eq!(
                message,
                format!(
                    "cannot use the known_hosts file {}: {}",
                    path.display(),
                    message.split_once(": ").unwrap().1
                )
            );
            assert!(message.contains(expected), "{message:?} for {text:?}");
        }
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
