//! `shoal-agent release`: makes the next release of an environment with the operator's own git
//! (a signed annotated tag `ENV/N` whose message carries the `Expires:` trailer, so nobody writes
//! the format by hand), points the local release ref at it, and optionally pushes both. Runs on
//! an operator's or CI's checkout, never on a device's state: it reads and writes only the
//! repository it is given (and the remote it is told to push to).

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use shoal_core::release::{self, ReleaseName};

#[derive(Debug, thiserror::Error)]
pub enum ReleaseError {
    #[error("{0}")]
    Environment(String),
    #[error("cannot run git in {}: {message}", repo.display())]
    Git { repo: PathBuf, message: String },
    #[error("`git {command}` failed in {}: {stderr}", repo.display())]
    GitFailed {
        repo: PathBuf,
        command: String,
        stderr: String,
    },
    #[error("{rev:?} does not name a commit in {}: {stderr}", repo.display())]
    NotACommit {
        repo: PathBuf,
        rev: String,
        stderr: String,
    },
    #[error("the release number after {last} does not fit in 64 bits")]
    Exhausted { last: ReleaseName },
}

impl ReleaseError {
    /// Bad usage (an environment name that cannot be one, a revision that is not a commit).
    pub fn is_usage(&self) -> bool {
        matches!(
            self,
            ReleaseError::Environment(_) | ReleaseError::NotACommit { .. }
        )
    }
}

/// What `shoal-agent release` is asked to do.
#[derive(Debug, Clone)]
pub struct ReleaseRequest<'a> {
    pub repo: &'a Path,
    pub environment: &'a str,
    /// The commit to release (any revision git understands).
    pub rev: &'a str,
    /// How long the release stays fresh.
    pub expires_in: Duration,
    pub halt: bool,
    /// `user.signingkey` for this tag only (else the repository's git config decides).
    pub signing_key: Option<&'a Path>,
    /// The remote to fetch the current release from first and to push the new one to.
    pub push: Option<&'a str>,
    /// The clock, unix seconds.
    pub now: i64,
}

/// The release made.
#[derive(Debug, Clone)]
pub struct Made {
    pub name: ReleaseName,
    pub tag: String,
    pub commit: String,
    pub expires: i64,
    pub pushed: bool,
}

/// Makes the next release of `request.environment`: N is one more than the highest of the local
/// tags `ENV/*` and the release ref (fetched from the remote first when pushing, so two CI jobs
/// in a row count on). The tag is signed with SSH (`gpg.format=ssh` is forced: the agent trusts
/// nothing else).
pub fn make(request: &ReleaseRequest<'_>) -> Result<Made, ReleaseError> {
    let environment = request.environment;
    release::check_environment_name(environment).map_err(ReleaseError::Environment)?;
    let release_ref = release::release_ref(environment);
    let repo = request.repo;
    let commit = commit_of(repo, request.rev)?;
    if let Some(remote) = request.push {
        // A remote without a release yet is the first release, not an error.
        let _ = git(
            repo,
            &[
                "fetch",
                "--quiet",
                remote,
                &format!("+{release_ref}:{release_ref}"),
            ],
        );
    }
    let last = last_number(repo, environment, &release_ref)?;
    let number = match last {
        Some(n) => n.checked_add(1).ok_or(ReleaseError::Exhausted {
            last: ReleaseName {
                environment: environment.to_owned(),
                number: n,
            },
        })?,
        None => 1,
    };
    let name = ReleaseName {
        environment: environment.to_owned(),
        number,
    };
    let expires = request
        .now
        .saturating_add(i64::try_from(request.expires_in.as_secs()).unwrap_or(i64::MAX));
    let message = release::tag_message(&name, &commit, expires, request.halt);
    let tag_name = name.to_string();
    let mut args: Vec<String> = vec!["-c".into(), "gpg.format=ssh".into()];
    if let Some(key) = request.signing_key {
        args.extend(["-c".into(), format!("user.signingkey={}", key.display())]);
    }
    args.extend(
        ["tag", "-s", "-m", &message, &tag_name, &commit]
            .iter()
            .map(|s| s.to_string()),
    );
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    git(repo, &args)?;
    let tag_ref = format!("refs/tags/{tag_name}");
    git(repo, &["update-ref", &release_ref, &tag_ref])?;
    let tag = git(repo, &["rev-parse", &tag_ref])?;
    if let Some(remote) = request.push {
        git(
            repo,
            &[
                "push",
                "--quiet",
                remote,
                &format!("{tag_ref}:{tag_ref}"),
                &format!("+{tag_ref}:{release_ref}"),
            ],
        )?;
    }
    tracing::info!(release = %name, %tag, %commit, "released");
    Ok(Made {
        name,
        tag,
        commit,
        expires,
        pushed: request.push.is_some(),
    })
}

/// The highest release number of `environment` known here: local tags `ENV/N` and the tag the
/// release ref points at.
fn last_number(
    repo: &Path,
    environment: &str,
    release_ref: &str,
) -> Result<Option<u64>, ReleaseError> {
    let names = git(
        repo,
        &[
            "for-each-ref",
            "--format=%(refname:strip=2)",
            &format!("refs/tags/{environment}/"),
        ],
    )?;
    let mut numbers: Vec<u64> = names
        .lines()
        .filter_map(|n| ReleaseName::parse(n).ok())
        .filter(|n| n.environment == environment)
        .map(|n| n.number)
        .collect();
    // The release ref's own tag name (it may come from elsewhere than the local tags).
    if let Ok(tag_name) = git(repo, &["for-each-ref", "--format=%(tag)", release_ref]) {
        if let Ok(name) = ReleaseName::parse(tag_name.trim()) {
            if name.environment == environment {
                numbers.push(name.number);
            }
        }
    }
    Ok(numbers.into_iter().max())
}

/// Runs `git args` in `repo`; stdout without its final newline.
/// The commit `rev` names in `repo` (`git rev-parse REV^{commit}`); `NotACommit` when it names
/// nothing or something else.
pub(crate) fn commit_of(repo: &Path, rev: &str) -> Result<String, ReleaseError> {
    git(
        repo,
        &[
            "rev-parse",
            "--verify",
            "--quiet",
            &format!("{rev}^{{commit}}"),
        ],
    )
    .map_err(|e| match e {
        ReleaseError::GitFailed { stderr, .. } => ReleaseError::NotACommit {
            repo: repo.to_owned(),
            rev: rev.to_owned(),
            stderr,
        },
        other => other,
    })
}

pub(crate) fn git(repo: &Path, args: &[&str]) -> Result<String, ReleaseError> {
    let output = Command::new("git")
        .arg("-C")
        .arg(repo)
        .args(args)
        .output()
        .map_err(|e| ReleaseError::Git {
            repo: repo.to_owned(),
            message: e.to_string(),
        })?;
    if !output.status.success() {
        return Err(ReleaseError::GitFailed {
            repo: repo.to_owned(),
            command: args
                .iter()
                .filter(|a| !a.contains('\n'))
                .copied()
                .collect::<Vec<_>>()
                .join(" "),
            stderr: String::from_utf8_lossy(&output.stderr).trim().to_owned(),
        });
    }
    Ok(String::from_utf8_lossy(&output.stdout)
        .trim_end_matches('\n')
        .to_owned())
}
