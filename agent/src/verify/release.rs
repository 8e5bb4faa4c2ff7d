//! The trust decision for a release (environment mode): may the device follow the tag at
//! `refs/shoal/releases/NAME`? The tag must be a signed annotated tag (`check_tag`, as
//! `git verify-tag`), for this device's environment and newer than the last accepted release
//! (`shoal_core::release::decide`, the clock passed in), and its commit must pass
//! `verify_update` (anti-rollback and signatures, tip or range) as a branch tip would. Reads the
//! mirror's objects; writes nothing.

use gix::ObjectId;
use shoal_core::release::{self, Context, LastRelease, Refusal};
use shoal_core::signature::sshsig;

use super::chain::{Approval, Chain, InForce, PolicyRecord};
use super::policy::{
    anchor_in_force, verify_update, AcceptedRelease, Anchor, HaltedRelease, ReleaseRights,
    TrustPolicy, Verified, VerifyError,
};
use crate::errors::error_chain;

/// What the device knows when it looks at a release: its environment, the commit and release it
/// accepted last, and its clock (unix seconds).
#[derive(Debug, Clone, Copy)]
pub struct ReleaseContext<'a> {
    pub environment: &'a str,
    pub applied: Option<ObjectId>,
    /// The repository policy the device trusts, and the approval tags offered.
    pub policy: Option<PolicyRecord>,
    pub approvals: &'a [Approval],
    pub last: Option<&'a LastRelease>,
    pub now: i64,
}

/// Decides whether the device may follow the release tag `tag` (the object its release ref
/// names). On success the `Verified` is the tag's commit's, carrying the release.
pub fn verify_release(
    repo: &gix::Repository,
    policy: &TrustPolicy,
    context: ReleaseContext<'_>,
    tag: ObjectId,
) -> Result<Verified, VerifyError> {
    let reference = release::release_ref(context.environment);
    let object = repo.find_object(tag).map_err(|e| VerifyError::Object {
        commit: tag,
        message: error_chain(&e),
    })?;
    if object.kind != gix::object::Kind::Tag {
        let what = match object.kind {
            gix::object::Kind::Commit => {
                "a commit (a branch or a lightweight tag was pushed there)".to_owned()
            }
            kind => format!("a {kind}"),
        };
        return Err(VerifyError::NotARelease {
            reference,
            id: tag,
            what,
        });
    }
    let anchor = Anchor {
        applied: context.applied,
        policy: context.policy,
        approvals: context.approvals,
    };
    // Once the repository has a policy, its keys sign releases, and only its environment's
    // `release` principals may.
    let mut chain = Chain::new(repo, &policy.signers, policy.root_threshold, &[]);
    let in_force = anchor_in_force(&mut chain, &anchor)?;
    let signers = match &in_force {
        InForce::Bootstrap => &policy.signers,
        InForce::Policy { signers, .. } => &**signers,
    };
    // The signature first: nothing in the tag is believed before it is checked.
    let signer = sshsig::check_tag(signers, &object.data).map_err(|source| {
        VerifyError::ReleaseSignature {
            reference: reference.clone(),
            tag,
            source: Box::new(source),
        }
    })?;
    let parsed = release::parse_tag(&object.data).map_err(|source| VerifyError::ReleaseTag {
        reference: reference.clone(),
        tag,
        source: Box::new(source),
    })?;
    if let (Some(trusted), Some(record)) = (in_force.policy(), in_force.record()) {
        let environment = trusted.environment(&parsed.name.environment);
        let allowed = environment.map_or_else(
            || "it has no [[environment]] of that name".to_owned(),
            |e| {
                let names: Vec<&str> = e.release.iter().map(String::as_str).collect();
                format!("release = [{}]", names.join(", "))
            },
        );
        if !environment.is_some_and(|e| e.release.contains(&signer.principal)) {
            return Err(VerifyError::ReleaseRights(Box::new(
                ReleaseRights::Signer {
                    reference,
                    tag,
                    principal: signer.principal,
                    environment: parsed.name.environment.clone(),
                    policy_commit: record.commit,
                    allowed,
                },
            )));
        }
        if let Some(max_age) = environment.and_then(|e| e.max_age) {
            let lifetime = parsed.expires.saturating_sub(parsed.tagger_time);
            if lifetime > i64::try_from(max_age.as_secs()).unwrap_or(i64::MAX) {
                return Err(VerifyError::ReleaseRights(Box::new(
                    ReleaseRights::TooLong {
                        reference,
                        tag,
                        environment: parsed.name.environment.clone(),
                        lifetime_secs: lifetime,
                        max_age_secs: max_age.as_secs(),
                        policy_commit: record.commit,
                    },
                )));
            }
        }
    }
    let applied = context.applied.map(|id| id.to_string());
    let decided = release::decide(
        &parsed,
        &tag.to_string(),
        Context {
            environment: context.environment,
            last: context.last,
            applied: applied.as_deref(),
            now: context.now,
        },
    );
    // A halted release is still checked to the end (its commit's signatures and descent), so
    // the device can say which commit is halted and in which wave; a halted release whose
    // commit would be refused is refused.
    let halted = matches!(decided, Err(Refusal::Halted { .. }));
    if !halted {
        decided.map_err(|source| VerifyError::Release {
            reference: reference.clone(),
            tag,
            source: Box::new(source),
        })?;
    }
    // `decide` refused every type but `commit`, and parse_tag checked the id is hex.
    let commit = ObjectId::from_hex(parsed.object.as_bytes()).map_err(|e| VerifyError::Object {
        commit: tag,
        message: format!("the tag's object id does not parse: {e}"),
    })?;
    let accepted = AcceptedRelease {
        name: parsed.name.clone(),
        tag,
        tagger_time: parsed.tagger_time,
        expires: parsed.expires,
        signer,
    };
    let verified = verify_update(repo, policy, &anchor, commit).map_err(|source| {
        VerifyError::ReleaseCommit {
            release: Box::new(parsed.name),
            tag,
            source: Box::new(source),
        }
    })?;
    let verified = verified.with_release(accepted);
    if halted {
        return Err(VerifyError::Halted(Box::new(HaltedRelease {
            reference,
            tag,
            verified,
        })));
    }
    Ok(verified)
}
