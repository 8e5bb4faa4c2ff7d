//! `shoal-agent approve`: makes an approval of a commit with the operator's own git — a signed
//! annotated tag `shoal-approve/<commit>/<name>` on that commit, which the policy counts for the
//! principal whose key signed it — and optionally pushes it. `<name>` is the principal the
//! signing key belongs to in the commit's `.shoal/policy.toml` (or `--name`). Runs on an
//! operator's checkout, never on a device: it reads and writes only the repository it is given
//! (and the remote it is told to push to).

use std::path::{Path, PathBuf};

use shoal_core::policy::{Policy, POLICY_PATH};

use crate::release::{self, git, ReleaseError};

#[derive(Debug, thiserror::Error)]
pub enum ApproveError {
    #[error(transparent)]
    Git(#[from] ReleaseError),
    #[error("{rev:?} does not name a commit in {}: {stderr}", repo.display())]
    NotACommit {
        repo: PathBuf,
        rev: String,
        stderr: String,
    },
    #[error("cannot read the public key {}: {reason}; pass --signing-key with a key whose .pub file is beside it", path.display())]
    PublicKey { path: PathBuf, reason: String },
    #[error("cannot tell which principal approves: {reason}; pass --name PRINCIPAL (the name the policy gives your key)")]
    NoName { reason: String },
    #[error("`{name}` cannot be part of a tag name; use the principal's name from {POLICY_PATH} (letters, digits, `.`, `_`, `-`)")]
    BadName { name: String },
}

impl ApproveError {
    /// Bad usage: a revision that is not a commit, no name, a bad name, an unreadable key.
    pub fn is_usage(&self) -> bool {
        !matches!(self, ApproveError::Git(_))
    }
}

/// What `shoal-agent approve` is asked to do.
#[derive(Debug, Clone)]
pub struct ApproveRequest<'a> {
    pub repo: &'a Path,
    pub rev: &'a str,
    /// The principal's name; else found from the signing key in the commit's policy.
    pub name: Option<&'a str>,
    /// `user.signingkey` for this tag only (else the repository's git config decides).
    pub signing_key: Option<&'a Path>,
    pub push: Option<&'a str>,
}

/// The approval made.
#[derive(Debug, Clone)]
pub struct Approved {
    pub commit: String,
    pub name: String,
    pub reference: String,
    pub tag: String,
    pub pushed: bool,
}

/// Makes the approval tag (replacing one of the same name) and pushes it if asked.
pub fn make(request: &ApproveRequest<'_>) -> Result<Approved, ApproveError> {
    let repo = request.repo;
    let commit = release::commit_of(repo, request.rev).map_err(|e| match e {
        ReleaseError::NotACommit { repo, rev, stderr } => {
            ApproveError::NotACommit { repo, rev, stderr }
        }
        other => ApproveError::Git(other),
    })?;
    let name = match request.name {
        Some(name) => name.to_owned(),
        None => principal_of_key(repo, &commit, request.signing_key)?,
    };
    let valid = !name.is_empty()
        && name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-'))
        && !name.starts_with(['.', '-']);
    if !valid {
        return Err(ApproveError::BadName { name });
    }
    let tag_name = format!("shoal-approve/{commit}/{name}");
    let mut args: Vec<String> = vec!["-c".into(), "gpg.format=ssh".into()];
    if let Some(key) = request.signing_key {
        args.extend(["-c".into(), format!("user.signingkey={}", key.display())]);
    }
    let message = format!("Approve {commit}\n\nApproved-by: {name}");
    args.extend(
        ["tag", "-s", "-f", "-m", &message, &tag_name, &commit]
            .iter()
            .map(|s| s.to_string()),
    );
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    git(repo, &args)?;
    let reference = format!("refs/tags/{tag_name}");
    let tag = git(repo, &["rev-parse", &reference])?;
    if let Some(remote) = request.push {
        git(
            repo,
            &[
                "push",
                "--quiet",
                "--force",
                remote,
                &format!("{reference}:{reference}"),
            ],
        )?;
    }
    tracing::info!(%commit, %name, %tag, "approved");
    Ok(Approved {
        commit,
        name,
        reference,
        tag,
        pushed: request.push.is_some(),
    })
}

/// The principal the signing key belongs to in the policy of `commit`.
fn principal_of_key(
    repo: &Path,
    commit: &str,
    signing_key: Option<&Path>,
) -> Result<String, ApproveError> {
    let key_path = match signing_key {
        Some(path) => path.to_owned(),
        None => {
            let configured =
                git(repo, &["config", "user.signingkey"]).map_err(|_| ApproveError::NoName {
                    reason: "no --signing-key and no git config user.signingkey".into(),
                })?;
            PathBuf::from(configured)
        }
    };
    let public_path = if key_path.extension().is_some_and(|e| e == "pub") {
        key_path.clone()
    } else {
        let mut name = key_path.clone().into_os_string();
        name.push(".pub");
        PathBuf::from(name)
    };
    let text = std::fs::read_to_string(&public_path).map_err(|e| ApproveError::PublicKey {
        path: public_path.clone(),
        reason: e.to_string(),
    })?;
    let key =
        ssh_key::PublicKey::from_openssh(text.trim()).map_err(|e| ApproveError::PublicKey {
            path: public_path.clone(),
            reason: e.to_string(),
        })?;
    let policy_text = git(repo, &["show", &format!("{commit}:{POLICY_PATH}")]).map_err(|_| {
        ApproveError::NoName {
            reason: format!("commit {commit} has no {POLICY_PATH}"),
        }
    })?;
    let origin = format!("{POLICY_PATH} at commit {commit}");
    let policy = Policy::parse(&policy_text, &origin).map_err(|e| ApproveError::NoName {
        reason: e.to_string(),
    })?;
    policy
        .principal_of(key.key_data())
        .map(str::to_owned)
        .ok_or_else(|| ApproveError::NoName {
            reason: format!(
                "the key {} is not a principal's in {origin}",
                public_path.display()
            ),
        })
}
