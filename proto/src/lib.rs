//! Wire types shared by the Shoal agent and the collector: reports, the signed envelope, key ids and
//! status values. This crate does no I/O: it only encodes, decodes, signs and verifies bytes.

mod commit_id;
pub mod enrollment;
mod envelope;
mod halts;
mod key_id;
mod report;

pub use commit_id::{CommitId, CommitIdError};
pub use enrollment::{EnrollmentProof, ProofError};
#[cfg(feature = "batch")]
pub use envelope::verify_all;
pub use envelope::{
    EnvelopeError, SignedEnvelope, Unverified, ENVELOPE_VERSION, MAX_ENVELOPE_BYTES,
    SIGNING_CONTEXT,
};
pub use halts::{
    Halt, HaltList, HaltsError, SignedHalts, HALTS_SIGNING_CONTEXT, HALTS_VERSION, MAX_HALTED,
};
pub use key_id::{KeyId, KeyIdError};
pub use report::{Pending, Release, Report, ReportError, ResourceError, Target, Timings};

use serde::{Deserialize, Serialize};

/// The convergence state a device reports (DESIGN.md, "Reports and the collector").
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Status {
    Converged,
    Applying,
    Failed,
    RolledBack,
    Held,
    Refused,
    Drifted,
    /// The release the device follows has expired (environment mode): nothing was applied, the
    /// device stays where it was, and the server may be frozen (DESIGN.md, "Environments and
    /// releases").
    Stale,
    /// A verified commit waits for this device's rollout wave to open (`[rollout]` in
    /// `shoal.toml`): nothing was applied yet; the report's `pending` says which wave and when.
    Pending,
    /// A verified commit this device has not applied is halted: by a release with `Halt: true`
    /// or by the collector's signed halt list. Nothing was applied; the device stays where it was
    /// (DESIGN.md, "Rollouts: waves, halt").
    Halted,
}

impl Status {
    /// Every status, in a stable order (summaries and metrics list them all, zeros included).
    pub const ALL: [Status; 10] = [
        Status::Converged,
        Status::Applying,
        Status::Failed,
        Status::RolledBack,
        Status::Held,
        Status::Refused,
        Status::Drifted,
        Status::Stale,
        Status::Pending,
        Status::Halted,
    ];

    /// The wire name (`rolled_back`), the same string serde uses.
    pub fn as_str(self) -> &'static str {
        match self {
            Status::Converged => "converged",
            Status::Applying => "applying",
            Status::Failed => "failed",
            Status::RolledBack => "rolled_back",
            Status::Held => "held",
            Status::Refused => "refused",
            Status::Drifted => "drifted",
            Status::Stale => "stale",
            Status::Pending => "pending",
            Status::Halted => "halted",
        }
    }

    /// Parses a wire name; `None` for anything else.
    pub fn from_wire(s: &str) -> Option<Status> {
        Status::ALL.into_iter().find(|st| st.as_str() == s)
    }
}

impl std::fmt::Display for Status {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn status_wire_names_match_serde() {
        for st in Status::ALL {
            let json = serde_json::to_string(&st).unwrap();
            assert_eq!(json, format!("\"{}\"", st.as_str()));
            assert_eq!(Status::from_wire(st.as_str()), Some(st));
        }
        assert_eq!(Status::from_wire("degraded"), None);
    }
}
