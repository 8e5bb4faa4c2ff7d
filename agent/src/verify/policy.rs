//! The trust decision for an update: may the device move from the applied commit to the new
//! tip? Checks anti-rollback (the tip must descend from the applied commit) and signatures
//! (the tip, or every commit in between). Reads the mirror's objects; writes nothing.

use std::path::PathBuf;

use gix::ObjectId;
use shoal_proto::CommitId;

use crate::config::{TrustConfig, VerifyMode};
use crate::errors::error_chain;
use shoal_core::release::{LastRelease, Refusal, ReleaseError, ReleaseName};
use shoal_core::signature::sshsig::{self, SignatureError, Signer};
use shoal_core::signature::{AllowedSigners, RevokedError, SignersError};

#[derive(Debug, thiserror::Error)]
pub enum VerifyError {
    #[error(transparent)]
    Signers(#[from] SignersError),
    #[error(transparent)]
    Revoked(#[from] RevokedError),
    #[error("{} has no trusted signers; add at least one `principal namespaces=\"git\" ssh-ed25519 AAAA…` line", path.display())]
    NoSigners { path: PathBuf },
    #[error("refusing commit {commit}: {source}")]
    Signature {
        commit: ObjectId,
        #[source]
        source: Box<SignatureError>,
    },
    #[error("refusing tip {tip}: commit {commit} between the applied commit {applied} and the tip is not trusted: {source}")]
    RangeSignature {
        tip: ObjectId,
        applied: ObjectId,
        commit: ObjectId,
        #[source]
        source: Box<SignatureError>,
    },
    #[error("refusing tip {tip}: it is older than the applied commit {applied} (anti-rollback); to go back, push a new signed revert commit, or run `shoal-agent rollback` on the device")]
    Older { tip: ObjectId, applied: ObjectId },
    #[error("refusing tip {tip}: it does not descend from the applied commit {applied} (history was rewritten or force-pushed; anti-rollback); push a signed commit on top of {applied}")]
    Diverged { tip: ObjectId, applied: ObjectId },
    #[error("cannot read commit {commit} from the repository: {message}")]
    Object { commit: ObjectId, message: String },
    #[error("refusing {reference}: it points at {what} {id}, not at a signed release tag; publish releases with `shoal-agent release` (a tag made with git tag -s, pushed to {reference})")]
    NotARelease {
        reference: String,
        id: ObjectId,
        what: String,
    },
    #[error("refusing release tag {tag} at {reference}: {source}")]
    ReleaseSignature {
        reference: String,
        tag: ObjectId,
        #[source]
        source: Box<SignatureError>,
    },
    #[error("refusing release tag {tag} at {reference}: {source}")]
    ReleaseTag {
        reference: String,
        tag: ObjectId,
        #[source]
        source: Box<ReleaseError>,
    },
    #[error("{}release tag {tag} at {reference}: {source}", if source.is_stale() { "not applying " } else { "refusing " })]
    Release {
        reference: String,
        tag: ObjectId,
        #[source]
        source: Box<Refusal>,
    },
    #[error("refusing release {release} (tag {tag}): {source}")]
    ReleaseCommit {
        release: Box<ReleaseName>,
        tag: ObjectId,
        #[source]
        source: Box<VerifyError>,
    },
}

impl VerifyError {
    /// Whether this is an expired release (a freeze, reported `stale`), not a refusal.
    pub fn is_stale(&self) -> bool {
        matches!(self, VerifyError::Release { source, .. } if source.is_stale())
    }
}

/// The device's trust root and how much history it checks.
pub struct TrustPolicy {
    pub signers: AllowedSigners,
    pub mode: VerifyMode,
}

impl TrustPolicy {
    pub fn load(config: &TrustConfig) -> Result<Self, VerifyError> {
        let mut signers = super::load_signers(&config.allowed_signers)?;
        if signers.is_empty() {
            return Err(VerifyError::NoSigners {
                path: config.allowed_signers.clone(),
            });
        }
        if let Some(path) = &config.revoked_keys {
            signers = signers.with_revoked(super::load_revoked(path)?);
        }
        Ok(TrustPolicy {
            signers,
            mode: config.verify,
        })
    }
}

/// A commit that passed the trust policy. Only this module constructs one, so code that takes
/// a `Verified` cannot be handed an unchecked commit.
#[derive(Debug, Clone)]
pub struct Verified {
    commit: ObjectId,
    signer: Signer,
    commits_checked: usize,
    /// The release that named the commit, in environment mode.
    release: Option<AcceptedRelease>,
}

/// The release tag a device accepted (environment mode): what it persists with its watermark
/// and reports beside the commit.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AcceptedRelease {
    pub name: ReleaseName,
    /// The tag object's id.
    pub tag: ObjectId,
    pub tagger_time: i64,
    pub expires: i64,
    /// Who signed the tag.
    pub signer: Signer,
}

impl AcceptedRelease {
    /// The release as the watermark keeps it, for the next release's rules.
    pub fn last(&self) -> LastRelease {
        LastRelease {
            name: self.name.clone(),
            tag: self.tag.to_string(),
            tagger_time: self.tagger_time,
        }
    }
}

impl Verified {
    pub fn commit(&self) -> ObjectId {
        self.commit
    }
    pub fn signer(&self) -> &Signer {
        &self.signer
    }
    /// How many commit signatures were checked to accept this one.
    pub fn commits_checked(&self) -> usize {
        self.commits_checked
    }
    /// The commit as the state files and reports name it.
    pub fn commit_id(&self) -> CommitId {
        commit_id(self.commit)
    }
    /// The release that named the commit (environment mode), `None` in branch mode.
    pub fn release(&self) -> Option<&AcceptedRelease> {
        self.release.as_ref()
    }
    /// A `Verified` carrying a release, for unit tests of the state records.
    #[cfg(test)]
    pub(crate) fn for_tests_with_release(
        commit: ObjectId,
        principal: &str,
        release: AcceptedRelease,
    ) -> Verified {
        Verified::for_tests(commit, principal).with_release(release)
    }
    /// This verdict, as the verdict on `release`'s commit: only `verify_release` attaches one,
    /// after checking the tag.
    pub(crate) fn with_release(mut self, release: AcceptedRelease) -> Verified {
        self.release = Some(release);
        self
    }

    /// A `Verified` for unit tests of the code that consumes one (the state records): only
    /// test builds have it.
    #[cfg(test)]
    pub(crate) fn for_tests(commit: ObjectId, principal: &str) -> Verified {
        Verified {
            commit,
            signer: Signer {
                principal: principal.to_owned(),
                fingerprint: String::new(),
            },
            commits_checked: 1,
            release: None,
        }
    }
}

/// A git object id as the state files and reports name it.
pub fn commit_id(id: ObjectId) -> CommitId {
    CommitId::from_raw(id.as_bytes()).expect("a git object id is 20 or 32 bytes")
}

/// Decides whether the device may move from `applied` (None on first sync) to `tip`.
///
/// On first sync there is no applied commit to measure a range from, so only the tip is
/// checked: its signature covers its whole tree, and older history is not applied.
pub fn verify_update(
    repo: &gix::Repository,
    policy: &TrustPolicy,
    applied: Option<ObjectId>,
    tip: ObjectId,
) -> Result<Verified, VerifyError> {
    let signer = check_one(repo, policy, tip).map_err(|source| match source {
        CheckError::Signature(source) => VerifyError::Signature {
            commit: tip,
            source: Box::new(source),
        },
        CheckError::Object(e) => *e,
    })?;
    let Some(applied) = applied else {
        return Ok(Verified {
            commit: tip,
            signer,
            commits_checked: 1,
            release: None,
        });
    };
    if applied == tip {
        return Ok(Verified {
            commit: tip,
            signer,
            commits_checked: 1,
            release: None,
        });
    }
    check_descends(repo, applied, tip)?;
    let mut commits_checked = 1;
    if policy.mode == VerifyMode::Range {
        for commit in range(repo, applied, tip)? {
            if commit == tip {
                continue;
            }
            check_one(repo, policy, commit).map_err(|e| match e {
                CheckError::Signature(source) => VerifyError::RangeSignature {
                    tip,
                    applied,
                    commit,
                    source: Box::new(source),
                },
                CheckError::Object(e) => *e,
            })?;
            commits_checked += 1;
        }
    }
    Ok(Verified {
        commit: tip,
        signer,
        commits_checked,
        release: None,
    })
}

enum CheckError {
    Signature(SignatureError),
    Object(Box<VerifyError>),
}

fn check_one(
    repo: &gix::Repository,
    policy: &TrustPolicy,
    commit: ObjectId,
) -> Result<Signer, CheckError> {
    let object = repo.find_object(commit).map_err(|e| {
        CheckError::Object(Box::new(VerifyError::Object {
            commit,
            message: error_chain(&e),
        }))
    })?;
    if object.kind != gix::object::Kind::Commit {
        return Err(CheckError::Object(Box::new(VerifyError::Object {
            commit,
            message: format!("it is a {}, not a commit", object.kind),
        })));
    }
    sshsig::check_commit(&policy.signers, &object.data).map_err(CheckError::Signature)
}

/// Anti-rollback: `tip` must have `applied` as an ancestor.
fn check_descends(
    repo: &gix::Repository,
    applied: ObjectId,
    tip: ObjectId,
) -> Result<(), VerifyError> {
    // An error here (e.g. the applied commit is gone from the mirror) is treated as
    // "does not descend": fail closed.
    let base = repo
        .merge_base(applied, tip)
        .ok()
        .flatten()
        .map(|id| id.detach());
    match base {
        Some(base) if base == applied => Ok(()),
        Some(base) if base == tip => Err(VerifyError::Older { tip, applied }),
        _ => Err(VerifyError::Diverged { tip, applied }),
    }
}

/// Every commit reachable from `tip` but not from `applied`, merges and both sides of them.
fn range(
    repo: &gix::Repository,
    applied: ObjectId,
    tip: ObjectId,
) -> Result<Vec<ObjectId>, VerifyError> {
    let walk_error = |e: gix::Error| VerifyError::Object {
        commit: tip,
        message: format!("cannot walk history back to {applied}: {}", error_chain(&e)),
    };
    let walk = repo
        .rev_walk([tip])
        .with_hidden([applied])
        .all()
        .map_err(walk_error)?;
    walk.map(|info| info.map(|i| i.id).map_err(walk_error))
        .collect()
}
