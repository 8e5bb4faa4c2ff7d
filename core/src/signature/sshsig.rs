//! Checks one git commit's SSH signature against the trust root: splits the armored SSHSIG from
//! the raw commit object, verifies it (ssh-ed25519, namespace `git`, sha256/sha512) over the
//! rest of the object, and names the trusted signer. Pure: no I/O, no network, no git; it never
//! decides anything about history (anti-rollback lives in the caller).
//!
//! This mirrors what `git verify-commit` does with `gpg.format=ssh` (git's
//! `parse_buffer_signed_by_header` + `ssh-keygen -Y find-principals`/`-Y verify` with
//! `-Overify-time=<committer time>`), minus the shelling out.

use std::fmt;
use std::path::PathBuf;

use ssh_key::public::KeyData;
use ssh_key::{Algorithm, HashAlg, PublicKey, SshSig};

use super::allowed_signers::{format_utc, AllowedSigner, AllowedSigners, LineRef, Validity};
use super::revoked::Revocation;

/// The namespace git signs commits in (`ssh-keygen -Y sign -n git`).
const GIT_NAMESPACE: &str = "git";

const SSH_ARMOR: &str = "-----BEGIN SSH SIGNATURE-----";
const SSH_ARMOR_END: &str = "-----END SSH SIGNATURE-----";
const PGP_ARMOR: &str = "-----BEGIN PGP SIGNATURE-----";

/// Why a commit's (or a release tag's) signature is not accepted. Messages are for the operator;
/// the caller adds the object's id. `object` says which kind of object was signed, so the advice
/// names the right git command.
#[derive(Debug, thiserror::Error)]
pub enum SignatureError {
    #[error("the {object} is not signed; sign it with a key from the trust policy (git config gpg.format ssh, then {})", object.sign_command())]
    Unsigned { object: Signed },
    #[error("the {object} is signed with OpenPGP, only SSH signatures are trusted; re-sign it with an SSH key from the trust policy (git config gpg.format ssh)")]
    OpenPgp { object: Signed },
    #[error("the commit's signature is not an SSH signature (it starts with `{first_line}`), only SSH signatures are trusted; re-sign it with an SSH key (git config gpg.format ssh)")]
    UnknownSignatureFormat { first_line: String },
    #[error("the commit has more than one `{header}` header, so which signature counts is ambiguous; re-create the commit with a single signature")]
    DuplicateSignature { header: &'static str },
    #[error("the commit object is malformed ({problem}); re-create the commit with git")]
    MalformedCommit { problem: &'static str },
    #[error("the tag object is malformed ({problem}); re-create the tag with git tag -s (or shoal-agent release)")]
    MalformedTag { problem: &'static str },
    #[error("the {object}'s SSH signature cannot be parsed ({reason}); re-sign the {object} ({})", object.resign_command())]
    MalformedSignature { object: Signed, reason: String },
    #[error("the {object}'s SSH signature has format version {version}, only version 1 is supported; re-sign it with OpenSSH's ssh-keygen ({})", object.sign_command())]
    UnsupportedVersion { object: Signed, version: u32 },
    #[error("the {object} is signed with a `{algorithm}` key, only ssh-ed25519 keys are trusted; re-sign it with an ed25519 key listed in the trust policy")]
    UnsupportedKeyType { object: Signed, algorithm: String },
    #[error("the {object}'s SSH signature hashes with `{hash}`, only sha256 and sha512 are accepted; re-sign it with OpenSSH's ssh-keygen ({})", object.sign_command())]
    UnsupportedHash { object: Signed, hash: String },
    #[error("the signature was made in namespace `{namespace}`, not `git`, so it does not sign a {object}; re-sign the {object} with {}", object.sign_command())]
    WrongNamespace { object: Signed, namespace: String },
    #[error("the signature by key {fingerprint} does not match the {object}'s contents: the {object} was changed after it was signed, or the signature is corrupt; do not trust this {object}, find out who changed it, and push a freshly signed one")]
    BadSignature { object: Signed, fingerprint: String },
    #[error("the {object} is signed by key {fingerprint}, which is revoked by {} ({}); a revoked key is refused whatever allowed_signers or the repository's policy say; re-sign with a key that is not revoked", .revocation.file.display(), .revocation.by)]
    Revoked {
        object: Signed,
        fingerprint: String,
        revocation: Box<Revocation>,
    },
    #[error("signed by key {fingerprint} which is not in the trust policy {}; add it to allowed_signers or re-sign with a trusted key", policy.display())]
    UnknownKey {
        fingerprint: String,
        policy: PathBuf,
    },
    #[error("key {} is in the trust policy ({}) but its namespaces= option does not allow `git`; add git to that line's namespaces or re-sign with a key trusted for git", .key.fingerprint, .key.at)]
    NamespaceNotAllowed { key: Box<ListedKey> },
    #[error("key {} is trusted {} ({}), but the {object}'s {} is {}; re-sign with a key trusted at that time, or fix the window in allowed_signers", .key.fingerprint, .key.validity, .key.at, object.time_header(), format_utc(*.signed_time))]
    OutsideValidity {
        object: Signed,
        key: Box<ListedKey>,
        /// The committer (commit) or tagger (tag) time, what the validity window is checked
        /// against.
        signed_time: i64,
    },
}

/// What kind of git object carries the signature: a commit (`gpgsig` header) or an annotated tag
/// (the signature at the end of its message). Only the messages differ.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Signed {
    Commit,
    Tag,
}

impl Signed {
    fn sign_command(self) -> &'static str {
        match self {
            Signed::Commit => "git commit -S",
            Signed::Tag => "git tag -s, or shoal-agent release",
        }
    }

    fn resign_command(self) -> &'static str {
        match self {
            Signed::Commit => "git commit --amend -S",
            Signed::Tag => "shoal-agent release, or git tag -s -f",
        }
    }

    /// The header whose time validity windows are checked against, as git reads it.
    fn time_header(self) -> &'static str {
        match self {
            Signed::Commit => "committer time",
            Signed::Tag => "tagger time",
        }
    }
}

impl fmt::Display for Signed {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Signed::Commit => "commit",
            Signed::Tag => "tag",
        })
    }
}

/// A key the trust policy lists, but not for this signature: the first line listing it
/// (for a validity miss, the first line also allowing `git`). Boxed in [`SignatureError`] to
/// keep the error small.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ListedKey {
    pub fingerprint: String,
    pub at: LineRef,
    pub validity: Validity,
}

/// A commit object split into the armored signature and the bytes it signs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SignedCommit {
    /// The armored `-----BEGIN SSH SIGNATURE-----` block, continuation spaces removed.
    pub signature: String,
    /// The commit object without its signature header(s): what the signer signed.
    pub payload: Vec<u8>,
    /// Committer time, unix seconds: what validity windows are checked against.
    pub committer_time: i64,
}

/// Who signed an accepted commit.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Signer {
    /// The first (non-negated) principal of the first allowed_signers entry that trusts the key.
    pub principal: String,
    /// `SHA256:…`, as `ssh-keygen -l` prints it.
    pub fingerprint: String,
}

/// Splits `raw` (a commit object body, as `git cat-file commit` prints it) into signature and
/// signed payload the way git does: the signature is the `gpgsig` header (`gpgsig-sha256` in
/// SHA-256 repositories; which one is told by the length of the `tree` id) with its continuation
/// lines, and the payload is the object without any `gpgsig*` header. Refuses unsigned commits
/// and signatures that are not SSH signatures.
pub fn split_commit(raw: &[u8]) -> Result<SignedCommit, SignatureError> {
    let header = signature_header(raw)?;
    let mut signature = Vec::new();
    let mut payload = Vec::with_capacity(raw.len());
    let mut signature_headers = 0;
    let (mut in_signature, mut in_other_signature) = (false, false);
    let mut rest = raw;
    while !rest.is_empty() {
        let len = rest
            .iter()
            .position(|&b| b == b'\n')
            .map_or(rest.len(), |i| i + 1);
        let (line, next) = rest.split_at(len);
        rest = next;
        if line == b"\n" {
            // End of the headers: the message is signed as is.
            payload.extend_from_slice(line);
            payload.extend_from_slice(rest);
            break;
        }
        let continuation = line.first() == Some(&b' ');
        if in_signature && continuation {
            signature.extend_from_slice(&line[1..]);
            continue;
        }
        in_signature = false;
        if let Some(value) = line
            .strip_prefix(header.as_bytes())
            .and_then(|l| l.strip_prefix(b" "))
        {
            signature_headers += 1;
            signature.extend_from_slice(value);
            in_signature = true;
            in_other_signature = false;
        } else if line.starts_with(b"gpgsig") {
            // The other hash's signature (or an unknown gpgsig* header): not part of what
            // this signature signs, as in git.
            in_other_signature = true;
        } else if !(in_other_signature && continuation) {
            in_other_signature = false;
            payload.extend_from_slice(line);
        }
    }
    if signature_headers == 0 {
        return Err(SignatureError::Unsigned {
            object: Signed::Commit,
        });
    }
    if signature_headers > 1 {
        return Err(SignatureError::DuplicateSignature { header });
    }
    let signature =
        String::from_utf8(signature).map_err(|_| SignatureError::MalformedSignature {
            object: Signed::Commit,
            reason: "it is not text".to_owned(),
        })?;
    if signature.starts_with(PGP_ARMOR) {
        return Err(SignatureError::OpenPgp {
            object: Signed::Commit,
        });
    }
    if !signature.starts_with(SSH_ARMOR) {
        let first_line = signature
            .lines()
            .next()
            .unwrap_or("")
            .chars()
            .take(60)
            .collect();
        return Err(SignatureError::UnknownSignatureFormat { first_line });
    }
    let committer_time = committer_time(&payload)?;
    Ok(SignedCommit {
        signature,
        payload,
        committer_time,
    })
}

/// `gpgsig` for SHA-1 objects (40-hex tree id), `gpgsig-sha256` for SHA-256 ones (64 hex).
fn signature_header(raw: &[u8]) -> Result<&'static str, SignatureError> {
    let first_line = raw.split(|&b| b == b'\n').next().unwrap_or_default();
    let Some(tree) = first_line.strip_prefix(b"tree ") else {
        return Err(SignatureError::MalformedCommit {
            problem: "it does not start with a `tree` line",
        });
    };
    if !tree.iter().all(u8::is_ascii_hexdigit) {
        return Err(SignatureError::MalformedCommit {
            problem: "the tree id is not hexadecimal",
        });
    }
    match tree.len() {
        40 => Ok("gpgsig"),
        64 => Ok("gpgsig-sha256"),
        _ => Err(SignatureError::MalformedCommit {
            problem: "the tree id is neither a SHA-1 nor a SHA-256 id",
        }),
    }
}

/// The unix time on the first `committer` header, as git reads it (the number after the
/// last `>`).
fn committer_time(payload: &[u8]) -> Result<i64, SignatureError> {
    let has_committer = payload
        .split(|&b| b == b'\n')
        .take_while(|line| !line.is_empty())
        .any(|line| line.starts_with(b"committer "));
    if !has_committer {
        return Err(SignatureError::MalformedCommit {
            problem: "it has no committer",
        });
    }
    signed_time(payload, "committer ").ok_or(SignatureError::MalformedCommit {
        problem: "the committer time is not a number of seconds",
    })
}

/// The unix time on the first `header` line (`committer ` or `tagger `) of the object's headers:
/// the number after the last `>`. `None` without such a header or number.
pub(crate) fn signed_time(payload: &[u8], header: &str) -> Option<i64> {
    let mut headers = payload
        .split(|&b| b == b'\n')
        .take_while(|line| !line.is_empty());
    let line = headers.find_map(|line| line.strip_prefix(header.as_bytes()))?;
    let after_email = line
        .iter()
        .rposition(|&b| b == b'>')
        .map_or(&[][..], |i| &line[i + 1..]);
    let digits: Vec<u8> = after_email
        .iter()
        .skip_while(|&&b| b == b' ')
        .take_while(|b| b.is_ascii_digit())
        .copied()
        .collect();
    std::str::from_utf8(&digits).ok()?.parse::<i64>().ok()
}

/// Verifies the commit's signature and finds the trusted signer in `signers`.
pub fn check_commit(signers: &AllowedSigners, raw_commit: &[u8]) -> Result<Signer, SignatureError> {
    let commit = split_commit(raw_commit)?;
    check_signed(
        signers,
        Signed::Commit,
        &commit.signature,
        &commit.payload,
        commit.committer_time,
    )
}

/// An annotated tag object split into the armored signature and the bytes it signs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SignedTag {
    /// The armored `-----BEGIN SSH SIGNATURE-----` block at the end of the message.
    pub signature: String,
    /// The tag object up to the signature: what the signer signed.
    pub payload: Vec<u8>,
    /// Tagger time, unix seconds: what validity windows are checked against.
    pub tagger_time: i64,
}

/// Splits `raw` (a tag object body, as `git cat-file tag` prints it) the way git does
/// (`parse_signed_buffer`): the signature starts at the last line that begins a signature block
/// (SSH or OpenPGP), and everything before it is the payload. Refuses unsigned tags, OpenPGP
/// signatures and tags without a tagger time.
pub fn split_tag(raw: &[u8]) -> Result<SignedTag, SignatureError> {
    const MARKERS: [&str; 4] = [
        SSH_ARMOR,
        PGP_ARMOR,
        "-----BEGIN PGP MESSAGE-----",
        "-----BEGIN SIGNED MESSAGE-----",
    ];
    let mut start = None;
    let mut at = 0;
    while at < raw.len() {
        if MARKERS.iter().any(|m| raw[at..].starts_with(m.as_bytes())) {
            start = Some(at);
        }
        at = raw[at..]
            .iter()
            .position(|&b| b == b'\n')
            .map_or(raw.len(), |i| at + i + 1);
    }
    let Some(start) = start else {
        return Err(SignatureError::Unsigned {
            object: Signed::Tag,
        });
    };
    let (payload, signature) = raw.split_at(start);
    if !signature.starts_with(SSH_ARMOR.as_bytes()) {
        return Err(SignatureError::OpenPgp {
            object: Signed::Tag,
        });
    }
    let signature =
        String::from_utf8(signature.to_vec()).map_err(|_| SignatureError::MalformedSignature {
            object: Signed::Tag,
            reason: "it is not text".to_owned(),
        })?;
    let tagger_time = signed_time(payload, "tagger ").ok_or(SignatureError::MalformedTag {
        problem: "it has no tagger with a time",
    })?;
    Ok(SignedTag {
        signature,
        payload: payload.to_vec(),
        tagger_time,
    })
}

/// Verifies an annotated tag's SSH signature (namespace `git`, over the tag object without its
/// signature block) and finds the trusted signer, as `git verify-tag` with `gpg.format=ssh` does
/// (validity windows against the tagger time).
pub fn check_tag(signers: &AllowedSigners, raw_tag: &[u8]) -> Result<Signer, SignatureError> {
    let tag = split_tag(raw_tag)?;
    check_signed(
        signers,
        Signed::Tag,
        &tag.signature,
        &tag.payload,
        tag.tagger_time,
    )
}

/// Verifies `signature` over `payload` and finds the trusted signer in `signers`, the validity
/// windows checked at `signed_time`.
fn check_signed(
    signers: &AllowedSigners,
    object: Signed,
    signature: &str,
    payload: &[u8],
    signed_time: i64,
) -> Result<Signer, SignatureError> {
    let sig = parse_signature(signature, object)?;
    let key = sig.public_key();
    let fingerprint = key.fingerprint(HashAlg::Sha256).to_string();

    // Verify the bytes before consulting the policy, so every policy error below speaks of a
    // signature that really was made by that key.
    verify(&sig, payload).map_err(|_| SignatureError::BadSignature {
        object,
        fingerprint: fingerprint.clone(),
    })?;

    if let Some(revocation) = signers.revoked().and_then(|revoked| revoked.find(key)) {
        return Err(SignatureError::Revoked {
            object,
            fingerprint,
            revocation: Box::new(revocation),
        });
    }

    let with_key: Vec<_> = signers
        .entries()
        .iter()
        .filter(|entry| entry.key().key_data() == key)
        .collect();
    let Some(first) = with_key.first() else {
        return Err(SignatureError::UnknownKey {
            fingerprint,
            policy: signers.origin().to_owned(),
        });
    };
    let for_git: Vec<_> = with_key
        .iter()
        .filter(|entry| entry.allows_namespace(GIT_NAMESPACE))
        .collect();
    let Some(first_for_git) = for_git.first() else {
        return Err(SignatureError::NamespaceNotAllowed {
            key: listed_key(signers, first, fingerprint),
        });
    };
    match for_git
        .iter()
        .find(|entry| entry.validity().contains(signed_time))
    {
        Some(entry) => Ok(Signer {
            principal: entry.principal().to_owned(),
            fingerprint,
        }),
        None => Err(SignatureError::OutsideValidity {
            object,
            key: listed_key(signers, first_for_git, fingerprint),
            signed_time,
        }),
    }
}

fn listed_key(
    signers: &AllowedSigners,
    entry: &AllowedSigner,
    fingerprint: String,
) -> Box<ListedKey> {
    Box::new(ListedKey {
        fingerprint,
        at: LineRef {
            path: signers.origin().to_owned(),
            line: entry.line(),
        },
        validity: entry.validity(),
    })
}

/// Parses the armored SSHSIG and refuses what we do not trust: other versions, key types,
/// hashes and namespaces.
fn parse_signature(armored: &str, object: Signed) -> Result<SshSig, SignatureError> {
    let sig = SshSig::from_pem(armored).map_err(|e| explain_parse_error(armored, object, e))?;
    if sig.version() != SshSig::VERSION {
        return Err(SignatureError::UnsupportedVersion {
            object,
            version: sig.version(),
        });
    }
    if sig.public_key().algorithm() != Algorithm::Ed25519 {
        return Err(SignatureError::UnsupportedKeyType {
            object,
            algorithm: sig.public_key().algorithm().to_string(),
        });
    }
    // HashAlg has only Sha256 and Sha512 today; a newer ssh-key may add more.
    if !matches!(sig.hash_alg(), HashAlg::Sha256 | HashAlg::Sha512) {
        return Err(SignatureError::UnsupportedHash {
            object,
            hash: sig.hash_alg().to_string(),
        });
    }
    if sig.namespace() != GIT_NAMESPACE {
        return Err(SignatureError::WrongNamespace {
            object,
            namespace: sig.namespace().to_owned(),
        });
    }
    Ok(sig)
}

/// ssh-key's errors do not say which field it disliked; read the envelope's leading fields
/// ourselves to tell the operator. The verdict does not depend on this: the signature has
/// already been refused.
fn explain_parse_error(armored: &str, object: Signed, error: ssh_key::Error) -> SignatureError {
    if let ssh_key::Error::Version { number } = error {
        return SignatureError::UnsupportedVersion {
            object,
            version: number,
        };
    }
    match Envelope::peek(armored) {
        Some(envelope) if envelope.version != SshSig::VERSION => {
            SignatureError::UnsupportedVersion {
                object,
                version: envelope.version,
            }
        }
        Some(envelope) if envelope.key_type != Algorithm::Ed25519.as_str() => {
            SignatureError::UnsupportedKeyType {
                object,
                algorithm: envelope.key_type,
            }
        }
        Some(envelope) if envelope.hash != "sha256" && envelope.hash != "sha512" => {
            SignatureError::UnsupportedHash {
                object,
                hash: envelope.hash,
            }
        }
        _ => SignatureError::MalformedSignature {
            object,
            reason: error.to_string(),
        },
    }
}

/// Verifies as OpenSSH's `sshsig_wrap_verify` does, which signs and checks with an empty
/// "reserved" field whatever the envelope carries; ssh-key would use the envelope's.
fn verify(sig: &SshSig, payload: &[u8]) -> Result<(), ssh_key::Error> {
    let key: &KeyData = sig.public_key();
    let as_openssh_checks = SshSig::new(
        key.clone(),
        sig.namespace(),
        sig.hash_alg(),
        sig.signature().clone(),
    )?;
    PublicKey::from(key.clone()).verify(GIT_NAMESPACE, payload, &as_openssh_checks)
}

/// The leading fields of an SSHSIG blob (PROTOCOL.sshsig), for error messages only.
struct Envelope {
    version: u32,
    key_type: String,
    hash: String,
}

impl Envelope {
    fn peek(armored: &str) -> Option<Envelope> {
        let body: String = armored
            .lines()
            .skip_while(|line| line.trim() != SSH_ARMOR)
            .skip(1)
            .take_while(|line| line.trim() != SSH_ARMOR_END)
            .collect();
        let blob = decode_base64(&body)?;
        let mut reader = WireReader(blob.strip_prefix(b"SSHSIG")?);
        let version = reader.u32()?;
        let key_type = WireReader(reader.string()?).string()?;
        let _namespace = reader.string()?;
        let _reserved = reader.string()?;
        let hash = reader.string()?;
        Some(Envelope {
            version,
            key_type: String::from_utf8_lossy(key_type).into_owned(),
            hash: String::from_utf8_lossy(hash).into_owned(),
        })
    }
}

/// SSH wire format: big-endian u32, and u32-length-prefixed strings.
struct WireReader<'b>(&'b [u8]);

impl<'b> WireReader<'b> {
    fn u32(&mut self) -> Option<u32> {
        let (bytes, rest) = self.0.split_first_chunk::<4>()?;
        self.0 = rest;
        Some(u32::from_be_bytes(*bytes))
    }

    fn string(&mut self) -> Option<&'b [u8]> {
        let len = usize::try_from(self.u32()?).ok()?;
        if len > self.0.len() {
            return None;
        }
        let (string, rest) = self.0.split_at(len);
        self.0 = rest;
        Some(string)
    }
}

/// Standard base64 with optional `=` padding, whitespace ignored.
fn decode_base64(text: &str) -> Option<Vec<u8>> {
    let mut out = Vec::with_capacity(text.len() / 4 * 3);
    let (mut bits, mut nbits) = (0u32, 0u32);
    for c in text.bytes().filter(|c| !c.is_ascii_whitespace()) {
        let value = match c {
            b'A'..=b'Z' => c - b'A',
            b'a'..=b'z' => c - b'a' + 26,
            b'0'..=b'9' => c - b'0' + 52,
            b'+' => 62,
            b'/' => 63,
            b'=' => break,
            _ => return None,
        };
        bits = (bits << 6) | u32::from(value);
        nbits += 6;
        if nbits >= 8 {
            nbits -= 8;
            out.push((bits >> nbits) as u8);
            bits &= (1 << nbits) - 1;
        }
    }
    Some(out)
}

impl fmt::Display for Signer {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} ({})", self.principal, self.fingerprint)
    }
}

#[cfg(test)]
mod tests {
    //! Every scenario uses signatures made by the real `git` and `ssh-keygen` (and `gpg`), and
    //! asserts that `git verify-commit`, given the same allowed_signers file, agrees with us.

    use super::*;
    use shoal_testkit::{isolate_git, output_with_stdin, run_bytes, ConfigRepo, SigningKey};
    use std::fs;
    use std::path::{Path, PathBuf};
    use std::process::{Command, Output};

    /// Author and committer time of every fixture commit: 2023-11-14T22:13:20Z.
    const COMMIT_TIME: i64 = 1_700_000_000;

    /// A scratch repository (`<tmp>/repo`, the kit's `ConfigRepo`) with keys (the kit's
    /// `SigningKey`, made by `ssh-keygen`) and policy files beside it (`<tmp>/…`).
    struct Fixture {
        dir: tempfile::TempDir,
        repo: ConfigRepo,
    }

    impl Fixture {
        fn new() -> Fixture {
            Fixture::with_object_format("sha1")
        }

        fn with_object_format(format: &str) -> Fixture {
            let dir = tempfile::tempdir().unwrap();
            let repo = ConfigRepo::init_with(
                dir.path().join("repo"),
                &[&format!("--object-format={format}")],
            );
            Fixture { dir, repo }
        }

        fn repo(&self) -> PathBuf {
            self.repo.path().to_owned()
        }

        fn path(&self, name: &str) -> PathBuf {
            self.dir.path().join(name)
        }

        /// Runs a real tool in the repository, isolated like every git the kit runs, at the
        /// fixture's commit time and with a keyring of the fixture's own.
        fn command(&self, program: &str, args: &[&str]) -> Command {
            let date = format!("@{COMMIT_TIME} +0000");
            let mut cmd = Command::new(program);
            isolate_git(&mut cmd)
                .args(args)
                .current_dir(self.repo())
                .env("GIT_AUTHOR_DATE", &date)
                .env("GIT_COMMITTER_DATE", &date)
                .env("GIT_EDITOR", "true")
                .env("GNUPGHOME", self.path("gnupg"))
                .env("LC_ALL", "C");
            cmd
        }

        /// [`Fixture::command`] run to the end, whatever its exit status.
        fn run(&self, program: &str, args: &[&str], stdin: &[u8]) -> Output {
            output_with_stdin(&mut self.command(program, args), stdin)
        }

        /// Like [`Fixture::run`], asserting success; returns stdout.
        fn ok(&self, program: &str, args: &[&str], stdin: &[u8]) -> Vec<u8> {
            run_bytes(&mut self.command(program, args), stdin)
        }

        fn git(&self, args: &[&str]) -> Vec<u8> {
            self.ok("git", args, b"")
        }

        /// git with `key` as the SSH signing key.
        fn git_signing(&self, key: &SigningKey, args: &[&str]) -> Vec<u8> {
            let config = key.git_signing_config();
            let mut all: Vec<&str> = config.iter().map(String::as_str).collect();
            all.extend_from_slice(args);
            self.git(&all)
        }

        fn key(&self, name: &str, key_type: &str) -> SigningKey {
            SigningKey::generate_typed(self.dir.path(), name, key_type)
        }

        /// A new commit on HEAD, signed by `key` if given; returns the raw object.
        fn commit(&self, message: &str, key: Option<&SigningKey>) -> Vec<u8> {
            let args = ["commit", "-q", "--allow-empty", "-m", message];
            match key {
                Some(key) => self.git_signing(key, &[&args[..], &["-S"]].concat()),
                None => self.git(&args),
            };
            self.head()
        }

        fn head(&self) -> Vec<u8> {
            self.repo.raw_commit("HEAD")
        }

        /// `ssh-keygen -Y sign` over `data`: the armored signature.
        fn sign(&self, key: &SigningKey, namespace: &str, options: &[&str], data: &[u8]) -> String {
            key.sign(namespace, options, data)
        }

        /// Our verdict on `raw` under the allowed_signers `policy`, after asserting that
        /// `git verify-commit` with the same file says ok / not ok just like us.
        fn check(&self, policy: &str, raw: &[u8]) -> Result<Signer, SignatureError> {
            let signers = self.signers(policy);
            let ours = check_commit(&signers, raw);
            let id = self.ok(
                "git",
                &["hash-object", "-t", "commit", "-w", "--stdin"],
                raw,
            );
            let id = String::from_utf8(id).unwrap();
            self.git_agrees("verify-commit", id.trim(), &ours);
            ours
        }

        /// Our verdict on the tag `id` under the allowed_signers `policy`, after asserting that
        /// `git verify-tag` with the same file says ok / not ok just like us.
        fn check_tag(&self, policy: &str, id: &str) -> Result<Signer, SignatureError> {
            let signers = self.signers(policy);
            let ours = check_tag(&signers, &self.repo.raw_tag(id));
            self.git_agrees("verify-tag", id, &ours);
            ours
        }

        /// `policy` written as the fixture's allowed_signers file, and parsed.
        fn signers(&self, policy: &str) -> AllowedSigners {
            let path = self.path("allowed_signers");
            fs::write(&path, policy).unwrap();
            AllowedSigners::from_bytes(fs::read(&path).unwrap(), &path).unwrap()
        }

        /// Asserts that `git <verify> id` with the fixture's allowed_signers file accepts
        /// exactly when we did.
        fn git_agrees(&self, verify: &str, id: &str, ours: &Result<Signer, SignatureError>) {
            let signers_file = format!(
                "gpg.ssh.allowedSignersFile={}",
                self.path("allowed_signers").display()
            );
            let git = self.run("git", &["-c", &signers_file, verify, id], b"");
            assert_eq!(
                ours.is_ok(),
                git.status.success(),
                "we said {ours:?}; git {verify} said: {}",
                String::from_utf8_lossy(&git.stderr)
            );
        }
    }

    #[test]
    fn tag_signatures_agree_with_git_verify_tag() {
        let f = Fixture::new();
        let alice = f.key("alice", "ed25519");
        let mallory = f.key("mallory", "ed25519");
        f.commit("base", Some(&alice));
        let policy = format!("alice namespaces=\"git\" {}\n", alice.public_line());
        let message = "Release production/1\n\nExpires: 2030-01-01T00:00:00Z";
        let tag = |name: &str, key: &SigningKey| {
            f.repo
                .tag_signed(key, name, "HEAD", message, Some(COMMIT_TIME))
        };

        let good = tag("production/1", &alice);
        assert_eq!(f.check_tag(&policy, &good).unwrap().principal, "alice");
        let split = split_tag(&f.repo.raw_tag(&good)).unwrap();
        assert_eq!(split.tagger_time, COMMIT_TIME);
        assert!(split.payload.ends_with(b"Expires: 2030-01-01T00:00:00Z\n"));

        let foreign = tag("production/2", &mallory);
        let err = f.check_tag(&policy, &foreign).unwrap_err();
        assert!(matches!(err, SignatureError::UnknownKey { .. }), "{err}");

        let tampered = f
            .repo
            .tag_edited(&alice, "production/3", "HEAD", message, |raw| {
                replace(&raw, b"2030-01-01", b"2099-01-01")
            });
        let err = f.check_tag(&policy, &tampered).unwrap_err();
        assert_eq!(
            err.to_string(),
            format!("the signature by key {} does not match the tag's contents: the tag was changed after it was signed, or the signature is corrupt; do not trust this tag, find out who changed it, and push a freshly signed one", alice.fingerprint())
        );

        let unsigned = f.repo.tag_unsigned("production/4", "HEAD", message);
        let err = f.check_tag(&policy, &unsigned).unwrap_err();
        assert_eq!(
            err.to_string(),
            "the tag is not signed; sign it with a key from the trust policy (git config gpg.format ssh, then git tag -s, or shoal-agent release)"
        );

        // Validity windows are checked against the tagger time, as git does.
        let expired_key = format!(
            "alice namespaces=\"git\",valid-before=\"20230101\" {}\n",
            alice.public_line()
        );
        let err = f.check_tag(&expired_key, &good).unwrap_err();
        assert!(
            err.to_string()
                .contains("but the tag's tagger time is 2023-11-14T22:13:20Z"),
            "{err}"
        );

        // A commit id is not a tag: nothing to split.
        assert!(matches!(
            split_tag(&f.head()),
            Err(SignatureError::Unsigned { .. })
        ));
    }

    /// `raw` with a signature header inserted where git puts it: after the last header.
    fn with_signature(raw: &[u8], header: &str, armored: &str) -> Vec<u8> {
        let end = raw.windows(2).position(|w| w == b"\n\n").unwrap() + 1;
        let mut lines = armored.lines();
        let mut header = format!("{header} {}\n", lines.next().unwrap());
        for line in lines {
            header.push_str(&format!(" {line}\n"));
        }
        [&raw[..end], header.as_bytes(), &raw[end..]].concat()
    }

    fn replace(haystack: &[u8], from: &[u8], to: &[u8]) -> Vec<u8> {
        let at = haystack
            .windows(from.len())
            .position(|w| w == from)
            .unwrap();
        [&haystack[..at], to, &haystack[at + from.len()..]].concat()
    }

    /// `armored` with its SSHSIG bytes edited, re-armored with the real `base64` tool.
    fn edit_envelope(
        fixture: &Fixture,
        armored: &str,
        edit: impl FnOnce(Vec<u8>) -> Vec<u8>,
    ) -> String {
        let body: String = armored
            .lines()
            .filter(|l| !l.starts_with("-----"))
            .collect();
        let blob = edit(fixture.ok("base64", &["-d"], body.as_bytes()));
        let body = String::from_utf8(fixture.ok("base64", &["-w", "70"], &blob)).unwrap();
        format!("{SSH_ARMOR}\n{body}{SSH_ARMOR_END}\n")
    }

    #[test]
    fn good_signature_names_the_first_principal() {
        let f = Fixture::new();
        let alice = f.key("alice", "ed25519");
        let raw = f.commit("hello", Some(&alice));

        let policy = format!(
            "alice@example.com,ops@example.com namespaces=\"git\" {}\n",
            alice.public_line()
        );
        let signer = f.check(&policy, &raw).unwrap();
        assert_eq!(
            signer,
            Signer {
                principal: "alice@example.com".to_owned(),
                fingerprint: alice.fingerprint(),
            }
        );

        let commit = split_commit(&raw).unwrap();
        assert_eq!(commit.committer_time, COMMIT_TIME);
        assert!(
            commit.signature.starts_with(SSH_ARMOR),
            "{}",
            commit.signature
        );
        assert!(!commit.payload.windows(6).any(|w| w == b"gpgsig"));
    }

    #[test]
    fn the_first_entry_trusting_the_key_for_git_at_commit_time_names_the_signer() {
        let f = Fixture::new();
        let (alice, bob) = (f.key("alice", "ed25519"), f.key("bob", "ed25519"));
        let raw = f.commit("hello", Some(&alice));
        let policy = format!(
            "bob@example.com {bob}\n\
             alice@example.com namespaces=\"file\" {alice}\n\
             alice@example.com valid-before=\"20230101Z\" {alice}\n\
             alice@example.com,alice-2023 valid-after=\"20230101Z\" {alice}\n\
             alice-later {alice}\n",
            alice = alice.public_line(),
            bob = bob.public_line()
        );
        assert_eq!(
            f.check(&policy, &raw).unwrap().principal,
            "alice@example.com"
        );
    }

    #[test]
    fn unsigned_commit_is_refused() {
        let f = Fixture::new();
        let alice = f.key("alice", "ed25519");
        let raw = f.commit("hello", None);
        let err = f
            .check(&format!("alice {}", alice.public_line()), &raw)
            .unwrap_err();
        assert!(matches!(err, SignatureError::Unsigned { .. }), "{err:?}");
        assert_eq!(
            err.to_string(),
            "the commit is not signed; sign it with a key from the trust policy (git config gpg.format ssh, then git commit -S)"
        );
    }

    #[test]
    fn key_not_in_the_policy_is_refused() {
        let f = Fixture::new();
        let (alice, mallory) = (f.key("alice", "ed25519"), f.key("mallory", "ed25519"));
        let raw = f.commit("hello", Some(&mallory));
        let err = f
            .check(&format!("alice {}", alice.public_line()), &raw)
            .unwrap_err();
        assert_eq!(
            err.to_string(),
            format!(
                "signed by key {} which is not in the trust policy {}; add it to allowed_signers or re-sign with a trusted key",
                mallory.fingerprint(),
                f.path("allowed_signers").display()
            )
        );
    }

    #[test]
    fn key_not_allowed_for_git_namespace_is_refused() {
        let f = Fixture::new();
        let alice = f.key("alice", "ed25519");
        let raw = f.commit("hello", Some(&alice));
        let policy = format!(
            "# files only\nalice namespaces=\"file\" {}\n",
            alice.public_line()
        );
        let err = f.check(&policy, &raw).unwrap_err();
        assert_eq!(
            err.to_string(),
            format!(
                "key {} is in the trust policy ({}:2) but its namespaces= option does not allow `git`; add git to that line's namespaces or re-sign with a key trusted for git",
                alice.fingerprint(),
                f.path("allowed_signers").display()
            )
        );
        let negated = format!("alice namespaces=\"*,!git\" {}\n", alice.public_line());
        assert!(matches!(
            f.check(&negated, &raw),
            Err(SignatureError::NamespaceNotAllowed { .. })
        ));
    }

    #[test]
    fn validity_window_is_checked_against_the_committer_time() {
        let f = Fixture::new();
        let alice = f.key("alice", "ed25519");
        let raw = f.commit("hello", Some(&alice));
        let policy = |options: &str| format!("alice {options} {}\n", alice.public_line());

        let expired = f
            .check(&policy("valid-before=\"20231101Z\""), &raw)
            .unwrap_err();
        assert_eq!(
            expired.to_string(),
            format!(
                "key {} is trusted until 2023-11-01T00:00:00Z ({}:1), but the commit's committer time is 2023-11-14T22:13:20Z; re-sign with a key trusted at that time, or fix the window in allowed_signers",
                alice.fingerprint(),
                f.path("allowed_signers").display()
            )
        );
        let not_yet = f
            .check(&policy("valid-after=\"20240101Z\""), &raw)
            .unwrap_err();
        assert!(
            not_yet
                .to_string()
                .contains("is trusted from 2024-01-01T00:00:00Z on"),
            "{not_yet}"
        );

        f.check(
            &policy("valid-after=\"20231101Z\",valid-before=\"20231201Z\""),
            &raw,
        )
        .unwrap();
        // Both ends are inclusive, to the second, as in OpenSSH.
        f.check(&policy("valid-after=\"20231114221320Z\""), &raw)
            .unwrap();
        f.check(&policy("valid-before=\"20231114221320Z\""), &raw)
            .unwrap();
        let one_second_late = f.check(&policy("valid-after=\"20231114221321Z\""), &raw);
        assert!(matches!(
            one_second_late,
            Err(SignatureError::OutsideValidity { .. })
        ));
        // Without Z we read UTC; git + ssh-keygen read local time, which is UTC here (TZ=UTC).
        f.check(&policy("valid-after=\"202311142213\""), &raw)
            .unwrap();
        let late = f.check(&policy("valid-after=\"202311142214\""), &raw);
        assert!(matches!(late, Err(SignatureError::OutsideValidity { .. })));
    }

    #[test]
    fn commit_changed_after_signing_is_refused() {
        let f = Fixture::new();
        let alice = f.key("alice", "ed25519");
        let raw = f.commit("deploy v1\n", Some(&alice));
        let tampered = replace(&raw, b"deploy v1", b"deploy v2");
        let err = f
            .check(&format!("alice {}", alice.public_line()), &tampered)
            .unwrap_err();
        assert_eq!(
            err.to_string(),
            format!(
                "the signature by key {} does not match the commit's contents: the commit was changed after it was signed, or the signature is corrupt; do not trust this commit, find out who changed it, and push a freshly signed one",
                alice.fingerprint()
            )
        );
        // A forged signature is reported as such even when the key is not trusted at all.
        let err = f.check("# nobody\n", &tampered).unwrap_err();
        assert!(
            matches!(err, SignatureError::BadSignature { .. }),
            "{err:?}"
        );
    }

    #[test]
    fn signature_made_for_another_namespace_is_refused() {
        let f = Fixture::new();
        let alice = f.key("alice", "ed25519");
        let unsigned = f.commit("hello", None);
        let file_signature = f.sign(&alice, "file", &[], &unsigned);
        let raw = with_signature(&unsigned, "gpgsig", &file_signature);
        let err = f
            .check(&format!("alice {}", alice.public_line()), &raw)
            .unwrap_err();
        assert_eq!(
            err.to_string(),
            "the signature was made in namespace `file`, not `git`, so it does not sign a commit; re-sign the commit with git commit -S"
        );
    }

    #[test]
    fn sha256_and_sha512_hashes_are_accepted() {
        let f = Fixture::new();
        let alice = f.key("alice", "ed25519");
        let unsigned = f.commit("hello", None);
        let policy = format!("alice {}", alice.public_line());
        for hash in ["sha256", "sha512"] {
            let signature = f.sign(
                &alice,
                "git",
                &["-O", &format!("hashalg={hash}")],
                &unsigned,
            );
            let raw = with_signature(&unsigned, "gpgsig", &signature);
            assert_eq!(
                split_commit(&raw).unwrap().payload,
                unsigned,
                "the payload is the object without gpgsig"
            );
            assert_eq!(f.check(&policy, &raw).unwrap().principal, "alice");
        }
    }

    #[test]
    fn unknown_version_and_hash_are_refused() {
        let f = Fixture::new();
        let alice = f.key("alice", "ed25519");
        let signed = f.commit("hello", Some(&alice));
        let commit = split_commit(&signed).unwrap();
        let policy = format!("alice {}", alice.public_line());

        let version_2 = edit_envelope(&f, &commit.signature, |mut blob| {
            blob[6..10].copy_from_slice(&2u32.to_be_bytes());
            blob
        });
        let err = f
            .check(
                &policy,
                &with_signature(&commit.payload, "gpgsig", &version_2),
            )
            .unwrap_err();
        assert!(
            matches!(err, SignatureError::UnsupportedVersion { version: 2, .. }),
            "{err:?}"
        );

        let sha384 = edit_envelope(&f, &commit.signature, |blob| {
            replace(&blob, b"sha512", b"sha384")
        });
        let err = f
            .check(&policy, &with_signature(&commit.payload, "gpgsig", &sha384))
            .unwrap_err();
        assert_eq!(
            err.to_string(),
            "the commit's SSH signature hashes with `sha384`, only sha256 and sha512 are accepted; re-sign it with OpenSSH's ssh-keygen (git commit -S)"
        );
    }

    #[test]
    fn non_ed25519_key_is_refused() {
        let f = Fixture::new();
        let (alice, rsa) = (f.key("alice", "ed25519"), f.key("ops-rsa", "rsa"));
        let raw = f.commit("hello", Some(&rsa));
        // The policy cannot list the RSA key at all (the parser refuses it), so git sees only alice.
        let err = f
            .check(&format!("alice {}", alice.public_line()), &raw)
            .unwrap_err();
        assert_eq!(
            err.to_string(),
            "the commit is signed with a `ssh-rsa` key, only ssh-ed25519 keys are trusted; re-sign it with an ed25519 key listed in the trust policy"
        );
    }

    #[test]
    fn openpgp_signature_is_refused() {
        let f = Fixture::new();
        let alice = f.key("alice", "ed25519");
        let gnupg = f.path("gnupg");
        fs::create_dir(&gnupg).unwrap();
        fs::set_permissions(&gnupg, std::os::unix::fs::PermissionsExt::from_mode(0o700)).unwrap();
        let uid = "Shoal Test <test@example.com>";
        let generated = f.run(
            "gpg",
            &[
                "--batch",
                "--passphrase",
                "",
                "--quick-gen-key",
                uid,
                "ed25519",
                "sign",
                "never",
            ],
            b"",
        );
        let signed = generated.status.success().then(|| {
            f.run(
                "git",
                &[
                    "-c",
                    "gpg.format=openpgp",
                    "-c",
                    "user.signingkey=test@example.com",
                    "commit",
                    "-q",
                    "--allow-empty",
                    "-S",
                    "-m",
                    "pgp",
                ],
                b"",
            )
        });
        // The agent gpg started for this keyring must not outlive the test.
        f.run("gpgconf", &["--kill", "all"], b"");
        assert!(
            generated.status.success(),
            "gpg: {}",
            String::from_utf8_lossy(&generated.stderr)
        );
        let signed = signed.unwrap();
        assert!(
            signed.status.success(),
            "git: {}",
            String::from_utf8_lossy(&signed.stderr)
        );
        // The device trusts no OpenPGP key: git must verify with an empty keyring too.
        fs::rename(&gnupg, f.path("gnupg-signer")).unwrap();

        let err = f
            .check(&format!("alice {}", alice.public_line()), &f.head())
            .unwrap_err();
        assert_eq!(
            err.to_string(),
            "the commit is signed with OpenPGP, only SSH signatures are trusted; re-sign it with an SSH key from the trust policy (git config gpg.format ssh)"
        );
    }

    #[test]
    fn sha256_repository_signs_in_gpgsig_sha256() {
        let f = Fixture::with_object_format("sha256");
        let alice = f.key("alice", "ed25519");
        let raw = f.commit("hello", Some(&alice));
        assert!(raw.windows(14).any(|w| w == b"gpgsig-sha256 "));
        assert_eq!(
            f.check(&format!("alice {}", alice.public_line()), &raw)
                .unwrap()
                .principal,
            "alice"
        );
    }

    #[test]
    fn merge_of_a_signed_tag_keeps_the_tag_signature_in_the_payload() {
        let f = Fixture::new();
        let alice = f.key("alice", "ed25519");
        f.commit("base", Some(&alice));
        f.git(&["checkout", "-q", "-b", "feature"]);
        f.commit("feature", Some(&alice));
        f.git_signing(&alice, &["tag", "-s", "-m", "release v1", "v1"]);
        f.git(&["checkout", "-q", "-"]);
        f.git_signing(
            &alice,
            &["merge", "-q", "--no-ff", "-S", "-m", "merge v1", "v1"],
        );
        let raw = f.head();
        assert!(raw.starts_with(b"tree ") && raw.windows(9).any(|w| w == b"mergetag "));

        let commit = split_commit(&raw).unwrap();
        assert!(commit.payload.windows(9).any(|w| w == b"mergetag "));
        assert_eq!(commit.signature.matches(SSH_ARMOR).count(), 1);
        assert_eq!(
            f.check(&format!("alice {}", alice.public_line()), &raw)
                .unwrap()
                .principal,
            "alice"
        );
    }

    #[test]
    fn a_second_signature_header_is_refused() {
        let f = Fixture::new();
        let alice = f.key("alice", "ed25519");
        let signed = f.commit("hello", Some(&alice));
        let commit = split_commit(&signed).unwrap();
        let twice = with_signature(&signed, "gpgsig", &commit.signature);
        // Deliberately stricter than git, which checks the first armored block and ignores
        // the rest; so no comparison with git verify-commit here.
        let signers =
            AllowedSigners::parse(&format!("alice {}", alice.public_line()), Path::new("as"))
                .unwrap();
        let err = check_commit(&signers, &twice).unwrap_err();
        assert!(
            matches!(err, SignatureError::DuplicateSignature { header: "gpgsig" }),
            "{err:?}"
        );
    }

    #[test]
    fn objects_that_are_not_signed_commits_are_refused() {
        let tree = "tree 4b825dc642cb6eb9a060e54bf8d69288fbee4904\n";
        let committer = "committer A <a@example.com> 1700000000 +0000\n";
        let ssh = format!("gpgsig {SSH_ARMOR}\n AAAA\n {SSH_ARMOR_END}\n");
        let cases: &[(String, &str)] = &[
            ("hello\n".to_owned(), "MalformedCommit"),
            (
                format!("tree abc\n{committer}{ssh}\nmsg\n"),
                "MalformedCommit",
            ),
            (format!("{tree}{ssh}\nmsg\n"), "MalformedCommit"),
            (
                format!("{tree}committer A <a@example.com> soon +0000\n{ssh}\nmsg\n"),
                "MalformedCommit",
            ),
            (
                format!("{tree}{committer}\ngpgsig {SSH_ARMOR}\n"),
                "Unsigned",
            ),
            (
                format!("{tree}{committer}gpgsig-sha256 {SSH_ARMOR}\n AAAA\n\nmsg\n"),
                "Unsigned",
            ),
            (
                format!("{tree}{committer}gpgsig -----BEGIN SIGNED MESSAGE-----\n AAAA\n\nmsg\n"),
                "UnknownSignatureFormat",
            ),
            (
                format!("{tree}{committer}{ssh}\nmsg\n"),
                "MalformedSignature",
            ),
        ];
        for (raw, expected) in cases {
            let err = check_commit(
                &AllowedSigners::parse("", Path::new("as")).unwrap(),
                raw.as_bytes(),
            )
            .unwrap_err();
            assert!(format!("{err:?}").starts_with(expected), "{raw:?}: {err:?}");
        }
    }
}
