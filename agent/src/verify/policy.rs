//! The trust decision for an update: may the device move from the applied commit to the new
//! tip? Checks anti-rollback (the tip must descend from the applied commit) and signatures
//! (the tip, or every commit in between). Reads the mirror's objects; writes nothing.

use std::path::PathBuf;

use gix::ObjectId;
use shoal_proto::CommitId;

use std::collections::HashMap;

use shoal_core::policy::POLICY_PATH;

use super::chain::{Approval, Chain, ChainError, CommitReport, InForce, PolicyRecord};
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
    #[error("refusing tip {tip}: {source}")]
    Chain {
        tip: ObjectId,
        #[source]
        source: Box<ChainError>,
    },
    #[error("refusing tip {tip}: the repository has a {POLICY_PATH}, whose path rules and thresholds are checked commit by commit, so it needs `[trust] verify = \"range\"`; set that in the agent config")]
    PolicyNeedsRange { tip: ObjectId },
    #[error(transparent)]
    PolicyMismatch(Box<PolicyMismatch>),
    #[error(transparent)]
    ReleaseRights(Box<ReleaseRights>),
    /// A release with `Halt: true` whose commit the device has not applied. Its tag and commit
    /// passed every check, so the sync can name the commit and its wave, but the commit is not
    /// applied (status `halted`, not `refused`).
    #[error("not applying release {} (tag {} at {}): it is halted (Halt: true, signed by {}); devices that have not applied its commit {} wait for a release without a halt", .0.name(), .0.tag, .0.reference, .0.signer(), .0.verified.commit())]
    Halted(Box<HaltedRelease>),
    #[error("refusing release {release} (tag {tag}): {source}")]
    ReleaseCommit {
        release: Box<ReleaseName>,
        tag: ObjectId,
        #[source]
        source: Box<VerifyError>,
    },
}

/// The trusted policy recorded with the watermark is not the applied commit's.
#[derive(Debug, thiserror::Error)]
#[error("the device trusts the policy {POLICY_PATH} of commit {} (blob {}), but the applied commit {applied} has {}; refusing to guess which policy is in force (fails closed): restore the mirror, or write the right `policy COMMIT BLOB` line in the watermark file", .recorded.commit, .recorded.blob, .found.map_or("no policy".to_owned(), |b| format!("blob {b}")))]
pub struct PolicyMismatch {
    pub applied: ObjectId,
    pub recorded: PolicyRecord,
    pub found: Option<ObjectId>,
}

/// A release the repository policy does not allow: who signed it, or how long it lives.
#[derive(Debug, thiserror::Error)]
pub enum ReleaseRights {
    #[error("refusing release tag {tag} at {reference}: it is signed by {principal}, who may not release `{environment}` under {POLICY_PATH} of commit {policy_commit} ({allowed}); sign releases with a key of a principal in that environment's `release` list")]
    Signer {
        reference: String,
        tag: ObjectId,
        principal: String,
        environment: String,
        policy_commit: ObjectId,
        allowed: String,
    },
    #[error("refusing release tag {tag} at {reference}: it expires {lifetime_secs}s after its tagger time, more than the max_age ({max_age_secs}s) of environment `{environment}` in {POLICY_PATH} of commit {policy_commit}; release with a shorter --expires")]
    TooLong {
        reference: String,
        tag: ObjectId,
        environment: String,
        lifetime_secs: i64,
        max_age_secs: u64,
        policy_commit: ObjectId,
    },
}

impl VerifyError {
    /// Whether this is an expired release (a freeze, reported `stale`), not a refusal.
    pub fn is_stale(&self) -> bool {
        matches!(self, VerifyError::Release { source, .. } if source.is_stale())
    }
}

/// A release tag with `Halt: true`, verified like any release (its signature, its rules, its
/// commit's signatures and descent), for a commit the device has not applied.
#[derive(Debug)]
pub struct HaltedRelease {
    pub reference: String,
    pub tag: ObjectId,
    /// The release's commit and the release itself: for naming the commit and rendering its
    /// wave. The sync must not apply it, and the watermark must not move to it.
    pub verified: Verified,
}

impl HaltedRelease {
    /// The release (`production/5`).
    pub fn name(&self) -> &ReleaseName {
        // Invariant: `verify_release` builds a `HaltedRelease` only with the release attached.
        &self
            .verified
            .release()
            .expect("a halted release carries its release")
            .name
    }

    /// Who signed the halted release tag.
    pub fn signer(&self) -> &str {
        self.verified
            .release()
            .map_or("", |release| release.signer.principal.as_str())
    }
}

/// The device's trust root and how much history it checks.
pub struct TrustPolicy {
    pub signers: AllowedSigners,
    pub mode: VerifyMode,
    /// How many allowed_signers principals must sign the repository's first policy.
    pub root_threshold: usize,
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
            root_threshold: config.root_threshold,
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
    /// The repository policy in force at the commit, once the repository has one.
    policy: Option<PolicyRecord>,
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
    /// The repository policy in force at the commit (`None` before the repository has one).
    pub fn policy(&self) -> Option<PolicyRecord> {
        self.policy
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

    /// This verdict with a trusted policy, for unit tests of the state records.
    #[cfg(test)]
    pub(crate) fn with_policy_for_tests(mut self, policy: PolicyRecord) -> Verified {
        self.policy = Some(policy);
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
            policy: None,
        }
    }
}

/// A git object id as the state files and reports name it.
pub fn commit_id(id: ObjectId) -> CommitId {
    CommitId::from_raw(id.as_bytes()).expect("a git object id is 20 or 32 bytes")
}

/// Where the device stands: the applied commit (None on first sync), the policy it trusts, and the
/// approval tags the server offered.
#[derive(Debug, Clone, Copy, Default)]
pub struct Anchor<'a> {
    pub applied: Option<ObjectId>,
    pub policy: Option<PolicyRecord>,
    pub approvals: &'a [Approval],
}

impl<'a> Anchor<'a> {
    /// A device at `applied` with no policy and no approvals (tests, `verify --since`).
    pub fn at(applied: Option<ObjectId>) -> Anchor<'a> {
        Anchor {
            applied,
            policy: None,
            approvals: &[],
        }
    }
}

/// The policy in force at the anchor: the one the device recorded, checked against the applied
/// commit's tree (a mismatch fails closed); a device that applied a commit with a policy before
/// it recorded policies adopts that commit's.
pub(crate) fn anchor_in_force(
    chain: &mut Chain<'_>,
    anchor: &Anchor<'_>,
) -> Result<InForce, VerifyError> {
    let Some(applied) = anchor.applied else {
        return Ok(InForce::Bootstrap);
    };
    let found = chain
        .policy_blob(applied)
        .map_err(|e| chain_error(applied, e))?;
    match (anchor.policy, found) {
        (None, None) => Ok(InForce::Bootstrap),
        (None, Some(_)) => chain
            .in_force_at(applied, applied, &InForce::Bootstrap)
            .map_err(|e| chain_error(applied, e)),
        (Some(recorded), Some((blob, _))) if blob == recorded.blob => chain
            .in_force_at(applied, recorded.commit, &InForce::Bootstrap)
            .map_err(|e| chain_error(applied, e)),
        (Some(recorded), found) => Err(VerifyError::PolicyMismatch(Box::new(PolicyMismatch {
            applied,
            recorded,
            found: found.map(|(blob, _)| blob),
        }))),
    }
}

fn chain_error(tip: ObjectId, source: ChainError) -> VerifyError {
    VerifyError::Chain {
        tip,
        source: Box::new(source),
    }
}

/// Decides whether the device may move from the anchor's applied commit (None on first sync) to
/// `tip`.
///
/// Without a repository policy (none trusted, none at the tip), on first sync only the tip is
/// checked: its signature covers its whole tree, and older history is not applied. With one, the
/// policy chain is walked (from the first commit on a first sync).
pub fn verify_update(
    repo: &gix::Repository,
    policy: &TrustPolicy,
    anchor: &Anchor<'_>,
    tip: ObjectId,
) -> Result<Verified, VerifyError> {
    let mut chain = Chain::new(
        repo,
        &policy.signers,
        policy.root_threshold,
        anchor.approvals,
    );
    let in_force = anchor_in_force(&mut chain, anchor)?;
    let tip_has_policy = chain
        .policy_blob(tip)
        .map_err(|e| chain_error(tip, e))?
        .is_some();
    if in_force.policy().is_some() || tip_has_policy {
        return verify_chain(repo, policy, &mut chain, in_force, anchor.applied, tip);
    }
    verify_signatures(repo, policy, anchor.applied, tip)
}

/// The repository policy's way: every commit since the anchor, parents first, under the policy
/// in force at each parent.
fn verify_chain(
    repo: &gix::Repository,
    policy: &TrustPolicy,
    chain: &mut Chain<'_>,
    anchor: InForce,
    applied: Option<ObjectId>,
    tip: ObjectId,
) -> Result<Verified, VerifyError> {
    if policy.mode != VerifyMode::Range {
        return Err(VerifyError::PolicyNeedsRange { tip });
    }
    if applied == Some(tip) {
        let signer = chain
            .check_signature(tip, &anchor)
            .map_err(|e| chain_error(tip, e))?;
        return Ok(Verified {
            commit: tip,
            signer,
            commits_checked: 1,
            release: None,
            policy: anchor.record(),
        });
    }
    if let Some(applied) = applied {
        check_descends(repo, applied, tip)?;
    }
    let commits = topological(repo, applied, tip)?;
    let mut after: HashMap<ObjectId, InForce> = HashMap::new();
    let mut tip_signer = None;
    for (commit, parents) in &commits {
        let parent_states: Vec<(Option<ObjectId>, InForce)> = if parents.is_empty() {
            vec![(None, InForce::Bootstrap)]
        } else {
            parents
                .iter()
                .map(|p| {
                    (
                        Some(*p),
                        after.get(p).cloned().unwrap_or_else(|| anchor.clone()),
                    )
                })
                .collect()
        };
        let report = chain
            .check_commit(*commit, &parent_states, false)
            .map_err(|e| chain_error(tip, e))?;
        let inherited = &parent_states[0].1;
        let state = chain
            .in_force_at(*commit, *commit, inherited)
            .map_err(|e| chain_error(tip, e))?;
        if state.policy().is_none() && parent_states.iter().any(|(_, s)| s.policy().is_some()) {
            return Err(chain_error(tip, ChainError::Removed { commit: *commit }));
        }
        if *commit == tip {
            tip_signer = Some(report.signer);
        }
        after.insert(*commit, state);
    }
    let signer = tip_signer.ok_or_else(|| VerifyError::Object {
        commit: tip,
        message: "the tip is not in its own history walk".into(),
    })?;
    Ok(Verified {
        commit: tip,
        signer,
        commits_checked: commits.len(),
        release: None,
        policy: after.get(&tip).and_then(InForce::record),
    })
}

/// `verify --policy`: every commit since the anchor (all of history without one), parents
/// first, with which rule allowed or refused each changed path, against each parent; nothing is
/// refused on the way (a bad signature or an unreadable policy still stops it).
pub fn explain(
    repo: &gix::Repository,
    policy: &TrustPolicy,
    anchor: &Anchor<'_>,
    tip: ObjectId,
) -> Result<Vec<CommitReport>, VerifyError> {
    let mut chain = Chain::new(
        repo,
        &policy.signers,
        policy.root_threshold,
        anchor.approvals,
    );
    let anchor_state = anchor_in_force(&mut chain, anchor)?;
    if let Some(applied) = anchor.applied {
        check_descends(repo, applied, tip)?;
    }
    let mut after: HashMap<ObjectId, InForce> = HashMap::new();
    let mut reports = Vec::new();
    for (commit, parents) in topological(repo, anchor.applied, tip)? {
        let parent_states: Vec<(Option<ObjectId>, InForce)> = if parents.is_empty() {
            vec![(None, InForce::Bootstrap)]
        } else {
            parents
                .iter()
                .map(|p| {
                    (
                        Some(*p),
                        after
                            .get(p)
                            .cloned()
                            .unwrap_or_else(|| anchor_state.clone()),
                    )
                })
                .collect()
        };
        reports.push(
            chain
                .check_commit(commit, &parent_states, true)
                .map_err(|e| chain_error(tip, e))?,
        );
        let state = chain
            .in_force_at(commit, commit, &parent_states[0].1)
            .map_err(|e| chain_error(tip, e))?;
        after.insert(commit, state);
    }
    Ok(reports)
}

/// Commits reachable from `tip` but not from `applied` (all of them when `applied` is None),
/// parents before children, each with its parents.
pub(crate) fn topological(
    repo: &gix::Repository,
    applied: Option<ObjectId>,
    tip: ObjectId,
) -> Result<Vec<(ObjectId, Vec<ObjectId>)>, VerifyError> {
    let walk_error = |e: gix::Error| VerifyError::Object {
        commit: tip,
        message: format!("cannot walk the history of the tip: {}", error_chain(&e)),
    };
    let walk = repo
        .rev_walk([tip])
        .with_hidden(applied)
        .all()
        .map_err(walk_error)?;
    let mut parents_of: HashMap<ObjectId, Vec<ObjectId>> = HashMap::new();
    for info in walk {
        let info = info.map_err(walk_error)?;
        parents_of.insert(info.id, info.parent_ids.iter().copied().collect());
    }
    // Depth-first post-order from the tip over the walked set: parents first.
    let mut order = Vec::with_capacity(parents_of.len());
    let mut done: std::collections::HashSet<ObjectId> = std::collections::HashSet::new();
    let mut stack = vec![(tip, false)];
    while let Some((id, expanded)) = stack.pop() {
        if expanded {
            if done.insert(id) {
                order.push((id, parents_of.get(&id).cloned().unwrap_or_default()));
            }
            continue;
        }
        if done.contains(&id) {
            continue;
        }
        stack.push((id, true));
        for parent in parents_of.get(&id).into_iter().flatten() {
            if parents_of.contains_key(parent) && !done.contains(parent) {
                stack.push((*parent, false));
            }
        }
    }
    Ok(order)
}

/// Without a repository policy: the tip's signature, anti-rollback, and in range mode every
/// commit's signature, all against the device's allowed_signers.
fn verify_signatures(
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
            policy: None,
        });
    };
    if applied == tip {
        return Ok(Verified {
            commit: tip,
            signer,
            commits_checked: 1,
            release: None,
            policy: None,
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
        policy: None,
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
