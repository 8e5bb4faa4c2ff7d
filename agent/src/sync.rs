//! One sync, end to end: recover → (hold?) → fetch → verify → render → plan → apply → commit
//! generation. Owns the order of the steps and the crash order between apply and the state
//! database, nothing else: each step's decisions live in its own module.

use std::sync::atomic::AtomicBool;

use gix::ObjectId;

use crate::apply::{self, ApplyError, Recovery};
use crate::config::AgentConfig;
use crate::fetch::{FetchError, Mirror};
use crate::plan::{self, Manifest, Plan};
use crate::render::{self, DeviceIdentity, GitTree, RenderError};
use crate::state::{unix_now, Generation, State, StateError, SyncResult};
use crate::verify::{self, TrustPolicy, VerifyError};

#[derive(Debug, thiserror::Error)]
pub enum SyncError {
    #[error(transparent)]
    Fetch(#[from] FetchError),
    #[error(transparent)]
    Verify(#[from] VerifyError),
    #[error(transparent)]
    State(#[from] StateError),
    #[error("commit {commit} cannot be rendered for this device: {source}; it is recorded as bad and will not be retried until a newer commit arrives")]
    Render {
        commit: ObjectId,
        #[source]
        source: Box<RenderError>,
    },
    #[error("cannot read the tree of commit {commit}: {message}")]
    Tree { commit: ObjectId, message: String },
    #[error("applying commit {commit} failed: {source}; it is recorded as bad and will not be retried until a newer commit arrives")]
    Apply {
        commit: ObjectId,
        #[source]
        source: Box<ApplyError>,
    },
    #[error("cannot start: {0}")]
    Recover(#[source] Box<ApplyError>),
    #[error("cannot look at the device's files: {0}")]
    Observe(#[source] Box<ApplyError>),
    #[error("the device root {} is not a directory; fix `root` in {}", root.display(), config.display())]
    Root {
        root: std::path::PathBuf,
        config: std::path::PathBuf,
    },
    #[error("commit {commit} is recorded as bad ({reason}); staying at the current generation until a newer commit arrives")]
    BadCommit { commit: ObjectId, reason: String },
}

impl SyncError {
    /// The report status this error stands for.
    pub fn status(&self) -> &'static str {
        match self {
            SyncError::Verify(_) => "refused",
            SyncError::Apply { .. } => "rolled_back",
            _ => "failed",
        }
    }
}

/// What one sync did.
#[derive(Debug)]
pub enum SyncOutcome {
    /// The device is held on a generation by `shoal-agent rollback`; nothing was fetched.
    Held { generation: u64 },
    /// The device already matches the verified tip; nothing was written.
    UpToDate { generation: u64, commit: ObjectId },
    /// A dry run: what the sync would do.
    DryRun { commit: ObjectId, plan: Plan },
    /// A new generation was applied.
    Applied {
        generation: u64,
        previous: Option<u64>,
        commit: ObjectId,
        signer: String,
        plan: Plan,
    },
}

/// Runs one sync. With `dry_run`, everything up to and including the plan happens, but the
/// device and its state do not change.
pub fn sync_once(
    config: &AgentConfig,
    dry_run: bool,
    interrupt: &AtomicBool,
) -> Result<SyncOutcome, SyncError> {
    let span =
        tracing::info_span!("sync", device = %config.device_id, commit = tracing::field::Empty);
    let _enter = span.enter();

    if !config.root.is_dir() {
        return Err(SyncError::Root {
            root: config.root.clone(),
            config: config.path.clone(),
        });
    }
    let state = State::open(&config.state_dir)?;
    recover(config, &state)?;
    if let Some(generation) = state.hold()? {
        record(&state, "held", state.current()?.map(|g| g.commit), None)?;
        return Ok(SyncOutcome::Held { generation });
    }

    let result = sync_unheld(config, &state, dry_run, interrupt, &span);
    if !dry_run {
        match &result {
            Ok(SyncOutcome::Applied { commit, plan, .. }) => {
                let drift = (!plan.drift.is_empty())
                    .then(|| format!("corrected drift: {} path(s)", plan.drift.len()));
                record(&state, "converged", Some(commit.to_string()), drift)?;
            }
            Ok(SyncOutcome::UpToDate { commit, .. }) => {
                record(&state, "converged", Some(commit.to_string()), None)?
            }
            Ok(_) => {}
            Err(e) => record(&state, e.status(), None, Some(e.to_string()))?,
        }
    }
    result
}

fn sync_unheld(
    config: &AgentConfig,
    state: &State,
    dry_run: bool,
    interrupt: &AtomicBool,
    span: &tracing::Span,
) -> Result<SyncOutcome, SyncError> {
    let policy = TrustPolicy::load(&config.trust)?;
    let watermark = state.applied_commit()?;
    let mirror = Mirror::open_or_init(&state.mirror_dir())?;
    let fetched = mirror.fetch(&config.source, interrupt)?;
    span.record("commit", tracing::field::display(fetched.tip));

    let verified = verify::verify_update(mirror.repo(), &policy, watermark, fetched.tip)
        .inspect_err(|e| tracing::warn!(error = %e, "refused"))?;
    let commit = verified.commit();
    let current = state.current()?;
    let at_tip = current
        .as_ref()
        .is_some_and(|g| commit.to_hex() == g.commit);
    // Only a commit the device is not already at can be recorded as bad; checking it opens the
    // database, which a no-op sync must not do (sled writes on open).
    if !at_tip {
        if let Some(reason) = state.bad_commit(&commit.to_string())? {
            return Err(SyncError::BadCommit { commit, reason });
        }
    }

    let tree = GitTree::at_commit(mirror.repo(), commit).map_err(|e| SyncError::Tree {
        commit,
        message: e.to_string(),
    })?;
    let desired = match render::render(&tree, &DeviceIdentity::from_config(config)) {
        Ok(desired) => desired,
        Err(e) => {
            // A render error is a property of the commit (and this device's identity): retrying
            // it every interval would only repeat the same error.
            if !dry_run {
                state.mark_bad(&commit.to_string(), &e.to_string())?;
            }
            return Err(SyncError::Render {
                commit,
                source: Box::new(e),
            });
        }
    };

    let empty = Manifest::default();
    let current_manifest = current.as_ref().map_or(&empty, |g| &g.manifest);
    let disk = apply::observe(
        &config.root,
        plan::observed_paths(&desired, current_manifest),
    )
    .map_err(|e| SyncError::Observe(Box::new(e)))?;
    let plan = plan::plan(&desired, current_manifest, &disk);

    if dry_run {
        return Ok(SyncOutcome::DryRun { commit, plan });
    }
    if let Some(current) = current.as_ref().filter(|_| at_tip && plan.is_empty()) {
        if watermark != Some(commit) {
            // Only after a crash between recording the generation and the watermark.
            state.record_watermark(commit)?;
        }
        return Ok(SyncOutcome::UpToDate {
            generation: current.number,
            commit,
        });
    }

    // Every change, drift correction included, is a new generation: recovery decides between
    // N-1 and N by whether N is recorded, so N must never be reused.
    let from = current.as_ref().map_or(0, |g| g.number);
    let to = state.next_generation_number()?;
    if let Err(e) = apply::apply(&plan, &desired, &config.root, &config.state_dir, from, to) {
        // apply has already put the device back at `from`.
        state.mark_bad(&commit.to_string(), &e.to_string())?;
        return Err(SyncError::Apply {
            commit,
            source: Box::new(e),
        });
    }
    // The commit point: once generation `to` is recorded, recovery keeps it; before, it undoes it.
    state.commit_generation(&Generation {
        number: to,
        commit: commit.to_string(),
        applied_at: unix_now(),
        signer: verified.signer().principal.clone(),
        manifest: Manifest::from_desired(&desired),
    })?;
    apply::journal_done(&config.state_dir).map_err(|e| SyncError::Recover(Box::new(e)))?;
    state.record_watermark(commit)?;
    prune(config, state)?;
    tracing::info!(generation = to, signer = %verified.signer().principal, "applied");
    Ok(SyncOutcome::Applied {
        generation: to,
        previous: current.map(|g| g.number),
        commit,
        signer: verified.signer().principal.clone(),
        plan,
    })
}

/// Resolves an apply interrupted by a crash, so the device is exactly at one generation.
pub fn recover(config: &AgentConfig, state: &State) -> Result<Option<Recovery>, SyncError> {
    let current = state.current_number()?;
    let recovery = apply::recover(&config.root, &config.state_dir, |n| current == Some(n))
        .map_err(|e| SyncError::Recover(Box::new(e)))?;
    if let Some(r) = &recovery {
        tracing::warn!(%r, "recovered an interrupted apply");
    }
    Ok(recovery)
}

/// Keeps the newest `keep_generations` generations and the blobs they need.
fn prune(config: &AgentConfig, state: &State) -> Result<(), SyncError> {
    let removed = state.prune(config.apply.keep_generations as usize)?;
    if removed.is_empty() {
        return Ok(());
    }
    let kept = state.generations()?;
    let manifests: Vec<&Manifest> = kept.iter().map(|g| &g.manifest).collect();
    apply::prune_blobs(&config.state_dir, &manifests)
        .map_err(|e| SyncError::Recover(Box::new(e)))?;
    Ok(())
}

fn record(
    state: &State,
    status: &str,
    commit: Option<String>,
    message: Option<String>,
) -> Result<(), StateError> {
    state.record_result(&SyncResult {
        status: status.to_owned(),
        commit,
        message,
        at: unix_now(),
    })?;
    Ok(())
}
