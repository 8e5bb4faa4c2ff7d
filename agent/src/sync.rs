//! One sync, end to end: fetch → verify → record. Owns the order of the steps and nothing
//! else: each step's decisions live in its own module.

use std::sync::atomic::AtomicBool;

use gix::ObjectId;

use crate::config::AgentConfig;
use crate::fetch::{FetchError, Fetched, Mirror};
use crate::state::{State, StateError};
use crate::verify::{self, TrustPolicy, Verified, VerifyError};

#[derive(Debug, thiserror::Error)]
pub enum SyncError {
    #[error(transparent)]
    Fetch(#[from] FetchError),
    #[error(transparent)]
    Verify(#[from] VerifyError),
    #[error(transparent)]
    State(#[from] StateError),
}

#[derive(Debug)]
pub struct SyncOutcome {
    pub previous: Option<ObjectId>,
    pub fetched: Fetched,
    pub verified: Verified,
    /// Whether the device moved to a new commit (false for a no-op sync or a dry run).
    pub advanced: bool,
}

/// Runs one sync. With `dry_run`, everything up to and including verification happens but
/// the device's state does not move.
pub fn sync_once(
    config: &AgentConfig,
    dry_run: bool,
    interrupt: &AtomicBool,
) -> Result<SyncOutcome, SyncError> {
    let span =
        tracing::info_span!("sync", device = %config.device_id, commit = tracing::field::Empty);
    let _enter = span.enter();

    let policy = TrustPolicy::load(&config.trust)?;
    let state = State::open(&config.state_dir)?;
    let previous = state.applied_commit()?;
    let mirror = Mirror::open_or_init(&state.mirror_dir())?;
    let fetched = mirror.fetch(&config.source, interrupt)?;
    span.record("commit", tracing::field::display(fetched.tip));
    tracing::debug!(received_pack = fetched.received_pack, elapsed = ?fetched.elapsed, "fetched");

    let verified = verify::verify_update(mirror.repo(), &policy, previous, fetched.tip)
        .inspect_err(|e| {
            tracing::warn!(error = %e, "refused");
        })?;
    let advanced = previous != Some(verified.commit()) && !dry_run;
    if advanced {
        state.record_applied(verified.commit())?;
        tracing::info!(signer = %verified.signer().principal, checked = verified.commits_checked(), "accepted");
    }
    Ok(SyncOutcome {
        previous,
        fetched,
        verified,
        advanced,
    })
}
