//! Verify: decides whether a fetched commit may be trusted — SSH commit signatures checked
//! against the device's `allowed_signers` minus its `revoked_keys`, plus anti-rollback — and, in environment mode,
//! whether a release tag may be followed (`release`). Reads git objects, writes nothing.
//! The signature and `allowed_signers` parsing are `shoal_core::signature`'s (pure); this module
//! reads the file and the commits.

mod chain;
mod policy;
mod release;

use std::path::Path;

pub use chain::{Approval, ChainError, CommitReport, PathReport, PolicyRecord, APPROVAL_PREFIX};
pub use policy::{
    commit_id, explain, verify_update, AcceptedRelease, Anchor, HaltedRelease, TrustPolicy,
    Verified, VerifyError,
};
pub use release::{verify_release, ReleaseContext};
pub use shoal_core::signature::{allowed_signers, sshsig};
pub use shoal_core::signature::{AllowedSigners, SignatureError, Signer, SignersError};
pub use shoal_core::signature::{RevokedError, RevokedKeys};

/// Reads and parses the `allowed_signers` file at `path`.
pub fn load_signers(path: &Path) -> Result<AllowedSigners, SignersError> {
    let bytes = std::fs::read(path).map_err(|e| SignersError::Read {
        path: path.to_owned(),
        reason: e.to_string(),
    })?;
    AllowedSigners::from_bytes(bytes, path)
}

/// The approval tags of a local repository (`refs/tags/shoal-approve/*`), for `verify`. An
/// unreadable ref is left out: it can only lower what counts.
pub fn local_approvals(repo: &gix::Repository) -> Vec<Approval> {
    let Ok(references) = repo.references() else {
        return Vec::new();
    };
    let Ok(tags) = references.prefixed(APPROVAL_PREFIX) else {
        return Vec::new();
    };
    tags.filter_map(Result::ok)
        .filter_map(|r| {
            let tag = r.target().try_id()?.to_owned();
            Some(Approval {
                reference: r.name().as_bstr().to_string(),
                tag,
            })
        })
        .collect()
}

/// The policy `render --rev` shows: the blob of `.shoal/policy.toml` at `commit` and the oldest
/// commit on its first-parent line with that same blob (the one that brought it); `None`
/// without a policy.
pub fn policy_source(
    repo: &gix::Repository,
    commit: gix::ObjectId,
) -> Result<Option<PolicyRecord>, ChainError> {
    let signers =
        AllowedSigners::parse("", Path::new("(none)")).map_err(|e| ChainError::Object {
            what: "an empty allowed_signers".into(),
            message: e.to_string(),
        })?;
    let chain = chain::Chain::new(repo, &signers, 1, &[]);
    let Some((blob, _)) = chain.policy_blob(commit)? else {
        return Ok(None);
    };
    let mut brought_by = commit;
    loop {
        let parent = repo
            .find_commit(brought_by)
            .map_err(|e| chain::object_error(format!("commit {brought_by}"), e))?
            .parent_ids()
            .next()
            .map(|id| id.detach());
        match parent {
            Some(parent) if chain.policy_blob(parent)?.map(|(b, _)| b) == Some(blob) => {
                brought_by = parent;
            }
            _ => break,
        }
    }
    Ok(Some(PolicyRecord {
        commit: brought_by,
        blob,
    }))
}

/// Reads and parses the revocation file at `path` (`[trust] revoked_keys`).
pub fn load_revoked(path: &Path) -> Result<RevokedKeys, RevokedError> {
    let bytes = std::fs::read(path).map_err(|e| RevokedError::Read {
        path: path.to_owned(),
        reason: e.to_string(),
    })?;
    RevokedKeys::from_bytes(&bytes, path)
}

#[cfg(test)]
mod tests {
    use super::*;

    const ALICE: &str =
        "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIBgqO+3I2d03iDv9TQDFHM7SLcu01mVRXsHh8aF7k2H9";

    #[test]
    fn load_names_the_file() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("allowed_signers");

        let missing = load_signers(&path).unwrap_err().to_string();
        assert!(
            missing.starts_with("cannot load the trust policy: could not read "),
            "{missing}"
        );
        assert!(missing.contains(&path.display().to_string()), "{missing}");

        std::fs::write(&path, b"# ok\nalice \xff ssh-ed25519 AAAA\n").unwrap();
        assert_eq!(
            load_signers(&path).unwrap_err().to_string(),
            format!(
                "{}:2: the allowed_signers file is not valid UTF-8; save it as UTF-8 text",
                path.display()
            )
        );

        std::fs::write(&path, format!("alice {ALICE}\n")).unwrap();
        let signers = load_signers(&path).unwrap();
        assert_eq!(signers.len(), 1);
        assert_eq!(signers.origin(), path);
    }
}
