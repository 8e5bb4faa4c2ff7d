//! One sync, end to end: recover → (hold?) → fetch → verify → render → (halted? wave open?) →
//! plan → apply → services and health gate → commit generation. Owns the order of the steps and the crash order between
//! apply, systemd and the state directory, nothing else: each step's decisions live in its own
//! module.

use std::collections::BTreeMap;
use std::path::Path;
use std::sync::atomic::AtomicBool;
use std::time::{Duration, Instant};

use gix::ObjectId;
use shoal_proto::{CommitId, Status, Target, Timings};

use crate::apply::failpoint::fail_point;
use crate::apply::{self, ApplyError, Recovery};
use crate::config::AgentConfig;
use crate::fetch::{FetchError, Mirror};
use crate::halts::{self, InForceError};
use crate::health;
use crate::metrics;
use crate::plan::{self, Manifest, Plan};
use crate::render::{self, RenderError, VerifiedTree};
use crate::services::{self, ServiceError, ServicePlan, Systemd};
use crate::state::{
    unix_now, Generation, HaltRecord, HaltSource, StateDir, StateError, SyncResult,
};
use crate::verify::{self, commit_id, HaltedRelease, ReleaseContext, TrustPolicy, VerifyError};
use shoal_core::release::ReleaseName;

#[derive(Debug, thiserror::Error)]
pub enum SyncError {
    #[error(transparent)]
    Fetch(#[from] FetchError),
    #[error(transparent)]
    Verify(#[from] VerifyError),
    #[error(transparent)]
    State(#[from] StateError),
    #[error(transparent)]
    Halts(#[from] InForceError),
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
    #[error("applying commit {commit} failed because of the device, not the commit: {source}; it will be retried (with backoff) once this is fixed")]
    ApplyEnvironment {
        commit: ObjectId,
        #[source]
        source: Box<ApplyError>,
    },
    #[error("commit {commit} cannot be applied on this device: {source}; it is recorded as bad and will not be retried until a newer commit arrives")]
    UnitFiles {
        commit: ObjectId,
        #[source]
        source: Box<ServiceError>,
    },
    #[error("commit {commit} was applied but its services did not come up, so the device was rolled back to generation {generation}; the commit is recorded as bad and will not be retried until a newer commit arrives. {reason}{}", rollback_problems(problems))]
    Unhealthy {
        commit: ObjectId,
        /// The unit at fault, when one is (a failed `daemon-reload` names none).
        unit: Option<String>,
        /// The generation the device is back at.
        generation: u64,
        /// The failing unit, why, and the last lines of its journal.
        reason: String,
        /// What did not go back cleanly (empty when the rollback was complete).
        problems: Vec<String>,
    },
    #[error("cannot start: {0}")]
    Recover(#[source] Box<ApplyError>),
    #[error("generation {generation} is applied and recorded, but its apply journal could not be removed: {source}; the next start removes it")]
    JournalDone {
        generation: u64,
        #[source]
        source: Box<ApplyError>,
    },
    #[error("generation {generation} is applied, but removing the blobs of pruned generations failed: {source}; the next sync that prunes tries again")]
    Prune {
        generation: u64,
        #[source]
        source: Box<ApplyError>,
    },
    #[error(transparent)]
    Observe(Box<ApplyError>),
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
    pub fn status(&self) -> Status {
        match self {
            SyncError::Verify(e) if e.is_stale() => Status::Stale,
            // `sync_unheld` turns a halted release into `SyncOutcome::Halted`; kept for callers
            // that look at a bare verdict.
            SyncError::Verify(VerifyError::Halted(_)) => Status::Halted,
            SyncError::Verify(_) => Status::Refused,
            SyncError::Fetch(e) if e.is_refusal() => Status::Refused,
            SyncError::Apply { .. } | SyncError::Unhealthy { .. } => Status::RolledBack,
            _ => Status::Failed,
        }
    }
}

/// What one sync did.
#[derive(Debug)]
pub enum SyncOutcome {
    /// The device is held on a generation by `shoal-agent rollback`; nothing was fetched.
    Held { generation: u64 },
    /// The device already matches the verified tip; nothing was written (but the release kept
    /// with the watermark, when a fresh release of the same commit came).
    UpToDate {
        generation: u64,
        commit: ObjectId,
        /// The release accepted (environment mode).
        release: Option<ReleaseName>,
    },
    /// A verified commit waits for this device's rollout wave to open; nothing was applied.
    Pending {
        commit: ObjectId,
        pending: shoal_proto::Pending,
        /// Why, for people: the wave, its position and the device's bucket, and the opening.
        message: String,
    },
    /// A verified commit the device has not applied is halted (a release with `Halt: true`, or
    /// the collector's signed halt list); nothing was applied.
    Halted {
        commit: ObjectId,
        halt: HaltRecord,
        /// Why, for people: who halted it, why, and where the device stays.
        message: String,
    },
    /// A dry run: what the sync would do.
    DryRun {
        commit: ObjectId,
        plan: Plan,
        services: ServicePlan,
        /// The repository policy the commit was verified under, if the repository has one.
        policy: Option<verify::PolicyRecord>,
    },
    /// A new generation was applied.
    Applied {
        generation: u64,
        previous: Option<u64>,
        commit: ObjectId,
        signer: String,
        /// The release that named the commit (environment mode).
        release: Option<ReleaseName>,
        plan: Plan,
        services: ServicePlan,
    },
}

/// Runs one sync. With `dry_run`, everything up to and including the plan happens, but the
/// device and its state do not change. With `bundle`, the tracked ref and its objects come from
/// that `git bundle` file instead of the server (offline); everything else is the same.
pub fn sync_once(
    config: &AgentConfig,
    dry_run: bool,
    bundle: Option<&Path>,
    interrupt: &AtomicBool,
) -> Result<SyncOutcome, SyncError> {
    let began = Instant::now();
    let span =
        tracing::info_span!("sync", device = %config.device_id, commit = tracing::field::Empty);
    let _enter = span.enter();

    if !config.root.is_dir() {
        return Err(SyncError::Root {
            root: config.root.clone(),
            config: config.path.clone(),
        });
    }
    let state = StateDir::open(&config.state_dir)?;
    recover(&config.root, &state)?;
    if let Some(generation) = state.hold()? {
        let held = state.current()?.map(|g| g.commit);
        // The report is about the commit the device is held on; its wave is the one the last
        // sync saw for it, if it saw that commit (a hold renders nothing).
        let target = held.as_ref().map(|c| known_target(&state, c));
        state.record_result(&SyncResult {
            status: Status::Held,
            commit: held,
            message: None,
            at: unix_now(),
            timings: Timings::default(),
            pending: None,
            halted: None,
            target,
        })?;
        metrics_after(config, &state, Status::Held, None, began);
        return Ok(SyncOutcome::Held { generation });
    }

    let mut timings = Timings::default();
    let mut target = None;
    let result = sync_unheld(
        config,
        &state,
        dry_run,
        bundle,
        interrupt,
        &span,
        &mut timings,
        &mut target,
    );
    if !dry_run {
        match &result {
            Ok(SyncOutcome::Applied { commit, plan, .. }) => {
                let drift = (!plan.drift.is_empty())
                    .then(|| format!("corrected drift: {} path(s)", plan.drift.len()));
                record(
                    &state,
                    Status::Converged,
                    Some(commit_id(*commit)),
                    drift,
                    timings,
                    target,
                )?;
            }
            Ok(SyncOutcome::UpToDate { commit, .. }) => record(
                &state,
                Status::Converged,
                Some(commit_id(*commit)),
                None,
                timings,
                target,
            )?,
            Ok(SyncOutcome::Halted {
                commit,
                halt,
                message,
            }) => {
                state.record_result(&SyncResult {
                    status: Status::Halted,
                    commit: Some(commit_id(*commit)),
                    message: Some(message.clone()),
                    at: unix_now(),
                    timings,
                    pending: None,
                    halted: Some(halt.clone()),
                    target,
                })?;
            }
            Ok(SyncOutcome::Pending {
                commit,
                pending,
                message,
            }) => {
                state.record_result(&SyncResult {
                    status: Status::Pending,
                    commit: Some(commit_id(*commit)),
                    message: Some(message.clone()),
                    at: unix_now(),
                    timings,
                    pending: Some(pending.clone()),
                    halted: None,
                    target,
                })?;
            }
            Ok(_) => {}
            Err(e) => record(
                &state,
                e.status(),
                None,
                Some(e.to_string()),
                timings,
                target,
            )?,
        }
        let (status, pending) = match &result {
            Ok(SyncOutcome::Pending { pending, .. }) => (Status::Pending, Some(pending.clone())),
            Ok(SyncOutcome::Halted { .. }) => (Status::Halted, None),
            Ok(_) => (Status::Converged, None),
            Err(e) => (e.status(), None),
        };
        metrics_after(config, &state, status, pending, began);
    }
    result
}

/// The `[metrics] textfile`, rewritten for this sync's result (a failure is only logged).
fn metrics_after(
    config: &AgentConfig,
    state: &StateDir,
    status: Status,
    pending: Option<shoal_proto::Pending>,
    began: Instant,
) {
    let run = metrics::Run {
        status,
        ended_at: unix_now(),
        duration: began.elapsed(),
        pending,
    };
    metrics::after(config.metrics.textfile.as_deref(), state, &run);
}

/// Runs `step`, recording how long it took in `slot` (milliseconds), whatever its outcome.
fn timed<T>(slot: &mut Option<u64>, step: impl FnOnce() -> T) -> T {
    let began = Instant::now();
    let result = step();
    *slot = Some(millis(began.elapsed()));
    result
}

fn millis(elapsed: Duration) -> u64 {
    u64::try_from(elapsed.as_millis()).unwrap_or(u64::MAX)
}

/// `target` is set as soon as a commit is verified (the commit the result is about), with the
/// device's wave once the commit is rendered.
#[allow(clippy::too_many_arguments)]
fn sync_unheld(
    config: &AgentConfig,
    state: &StateDir,
    dry_run: bool,
    bundle: Option<&Path>,
    interrupt: &AtomicBool,
    span: &tracing::Span,
    timings: &mut Timings,
    target: &mut Option<Target>,
) -> Result<SyncOutcome, SyncError> {
    let policy = TrustPolicy::load(&config.trust)?;
    let watermark = state.applied_commit()?;
    let last_release = state.applied_release()?;
    let trusted_policy = state.applied_policy()?;
    let (mut mirror, fetched) = timed(&mut timings.fetch_ms, || match bundle {
        Some(file) => {
            Mirror::from_bundle(&state.mirror(), file, &config.source, watermark, interrupt)
        }
        None => Mirror::fetch(&state.mirror(), &config.source, watermark, interrupt),
    })?;
    span.record("commit", tracing::field::display(fetched.tip));
    if let Some(damage) = &fetched.healed {
        // The sync goes on with the rebuilt mirror, but a damaged mirror says something about
        // the device's disk: the fleet sees a `failed` report with the reason, then the result.
        let message = format!(
            "the local mirror {} was damaged ({damage}); it was rebuilt from the server",
            state.mirror_path().display()
        );
        tracing::warn!(%message, "mirror healed");
        if !dry_run {
            record(
                state,
                Status::Failed,
                None,
                Some(message),
                Timings::default(),
                None,
            )?;
            if let Err(e) = crate::report::queue_now(config, state) {
                tracing::warn!(error = %e, "could not queue the report of the damaged mirror");
            }
        }
    }

    // In environment mode the fetched tip is the release tag; its commit is verified through it.
    let verified = timed(&mut timings.verify_ms, || {
        match config.source.environment.as_deref() {
            Some(environment) => {
                let context = ReleaseContext {
                    environment,
                    applied: watermark,
                    policy: trusted_policy,
                    approvals: &fetched.approvals,
                    last: last_release.as_ref(),
                    now: i64::try_from(unix_now()).unwrap_or(i64::MAX),
                };
                verify::verify_release(mirror.repo(), &policy, context, fetched.tip)
            }
            None => {
                let anchor = verify::Anchor {
                    applied: watermark,
                    policy: trusted_policy,
                    approvals: &fetched.approvals,
                };
                verify::verify_update(mirror.repo(), &policy, &anchor, fetched.tip)
            }
        }
    })
    .inspect_err(|e| {
        if e.is_stale() {
            tracing::warn!(error = %e, "stale");
        } else if matches!(e, VerifyError::Halted(_)) {
            tracing::warn!(error = %e, "halted");
        } else {
            tracing::warn!(error = %e, "refused");
        }
    });
    // The mirror's ref moves only to an accepted tip; a refused one's objects are not kept.
    let verified = match verified {
        Ok(verified) => {
            mirror.accept(&fetched)?;
            verified
        }
        Err(VerifyError::Halted(halted)) => {
            // Verified to the end, only halted: kept like an accepted tip (its tag and commit
            // are trusted), never applied.
            mirror.accept(&fetched)?;
            return halted_release(config, state, &mirror, *halted, target);
        }
        Err(e) => {
            mirror.discard();
            return Err(e.into());
        }
    };
    let commit = verified.commit();
    let id = verified.commit_id();
    let current = state.current()?;
    let at_tip = current.as_ref().is_some_and(|g| g.commit == id);
    *target = Some(known_target(state, &id));
    // Only a commit the device is not already at can be recorded as bad.
    if !at_tip {
        if let Some(reason) = state.bad_commit(&id)? {
            return Err(SyncError::BadCommit { commit, reason });
        }
    }

    let rendering = Instant::now();
    let tree = VerifiedTree::new(mirror.repo(), &verified).map_err(|e| SyncError::Tree {
        commit,
        message: e.to_string(),
    })?;
    let mut desired = match render::render(&tree, &config.identity()) {
        Ok(desired) => desired,
        Err(e) => {
            // A render error is a property of the commit (and this device's identity): retrying
            // it every interval would only repeat the same error.
            if !dry_run {
                state.mark_bad(&id, &e.to_string())?;
            }
            return Err(SyncError::Render {
                commit,
                source: Box::new(e),
            });
        }
    };

    *target = Some(Target {
        commit: id.to_string(),
        wave: wave_name(config, &verified, &desired),
    });
    // A commit the device is not at waits for the device's wave of its `[rollout]`, unless it
    // is halted (a halt never moves a device that already applied it, so only here). The wave's
    // timer starts either way: a halt lifted later finds the wave where it would have been.
    if !at_tip {
        let waiting = wait_for_wave(config, state, &verified, &desired, dry_run)?;
        if let Some(halted) = collector_halt(config, state, &verified, current.as_ref())? {
            return Ok(halted);
        }
        if let Some(outcome) = waiting {
            return Ok(outcome);
        }
    }

    // From here on unit files and drop-ins are declared files: planned, journaled, rolled back
    // and removed like every other file.
    if let Err(e) = services::merge_unit_files(&mut desired) {
        if !dry_run {
            state.mark_bad(&id, &e.to_string())?;
        }
        return Err(SyncError::UnitFiles {
            commit,
            source: Box::new(e),
        });
    }
    let service_records = services::records(&desired);

    let empty = Manifest::default();
    let current_manifest = current.as_ref().map_or(&empty, |g| &g.manifest);
    let disk = apply::observe(
        &config.root,
        state.apply_area(),
        plan::observed_paths(&desired, current_manifest),
    )
    .map_err(|e| SyncError::Observe(Box::new(e)))?;
    let plan = plan::plan(&desired, current_manifest, &disk);
    let no_services = BTreeMap::new();
    let current_services = current.as_ref().map_or(&no_services, |g| &g.services);
    let service_plan = services::plan(
        &service_records,
        current_services,
        &services::changed_paths(&plan),
    );
    // Render and plan together: what it took to know what to do.
    timings.render_ms = Some(millis(rendering.elapsed()));

    if dry_run {
        return Ok(SyncOutcome::DryRun {
            commit,
            plan,
            services: service_plan,
            policy: verified.policy(),
        });
    }
    let nothing_to_do = plan.is_empty() && service_plan.is_empty();
    if let Some(current) = current.as_ref().filter(|_| at_tip && nothing_to_do) {
        // A fresh release of the applied commit (a release bot re-signing N+1) moves only the
        // release kept with the watermark: no apply, one small write.
        let release_moved = verified.release().is_some_and(|release| {
            last_release.as_ref().map(|last| last.tag.as_str()) != Some(&*release.tag.to_string())
        });
        if watermark != Some(commit) || release_moved {
            // The commit: only after a crash between recording the generation and the watermark.
            state.record_watermark(&verified)?;
        }
        return Ok(SyncOutcome::UpToDate {
            generation: current.number,
            commit,
            release: verified.release().map(|r| r.name.clone()),
        });
    }

    // Every change, drift correction included, is a new generation: recovery decides between
    // N-1 and N by whether N is recorded, so N must never be reused.
    let from = current.as_ref().map_or(0, |g| g.number);
    let to = state.next_generation_number()?;
    let applied = timed(&mut timings.apply_ms, || {
        apply::apply(&plan, &desired, &config.root, state.apply_area(), from, to)
    });
    if let Err(e) = applied {
        // apply has already put the device back at `from` (or kept the journal for recovery).
        if e.fault().is_some_and(apply::Fault::is_environmental) {
            // A full disk or a link a local user planted says nothing about the commit: the
            // same commit is tried again after the daemon's backoff.
            return Err(SyncError::ApplyEnvironment {
                commit,
                source: Box::new(e),
            });
        }
        state.mark_bad(&id, &e.to_string())?;
        return Err(SyncError::Apply {
            commit,
            source: Box::new(e),
        });
    }
    // Services run between the writes and the commit point, so a failed health gate can still
    // undo the files exactly like a crash would.
    let systemd = Systemd::for_root(&config.root);
    if !service_plan.is_empty() {
        // Before the first systemctl call: a crash from here on is taken back by `recover`,
        // units included (the apply journal alone would only bring the files back).
        if let Err(e) = state.begin_services(from, to, &service_plan) {
            if let Err(undo) = apply::undo(&config.root, state.apply_area()) {
                tracing::error!(error = %undo, "could not undo the apply; the next start retries");
            }
            return Err(e.into());
        }
        fail_point!("services_after_journal");
    }
    let started = timed(&mut timings.health_ms, || {
        start_services(&service_plan, &systemd, config.apply.health_timeout)
    });
    if service_plan.is_empty() {
        // No unit to start or check: no health step to report.
        timings.health_ms = None;
    }
    if let Err((unit, reason)) = started {
        tracing::error!(%reason, "health gate failed; rolling back");
        // Files first, so the units that go back restart on the previous generation's files.
        // The commit is marked bad last: a crash before that leaves it unmarked, and the next
        // sync (after `recover` restored the files) applies and gates it again, which brings the
        // units back in line; marking it first could leave units on the new configuration with
        // nothing left to correct them.
        let mut problems = Vec::new();
        if let Err(e) = apply::undo(&config.root, state.apply_area()) {
            problems.push(format!(
                "restoring the files failed: {e} (the journal is kept; the next start retries)"
            ));
        }
        fail_point!("services_after_undo");
        if let Err(e) = services::revert(&service_plan, &systemd) {
            problems.push(e.to_string());
        }
        state.mark_bad(&id, &reason)?;
        state.end_services()?;
        return Err(SyncError::Unhealthy {
            commit,
            unit,
            generation: from,
            reason,
            problems,
        });
    }
    // The commit point: once generation `to` is recorded, recovery keeps it; before, it undoes it.
    state.commit_generation(&Generation {
        number: to,
        commit: id,
        applied_at: unix_now(),
        signer: verified.signer().principal.clone(),
        release: verified.release().map(|release| shoal_proto::Release {
            environment: release.name.environment.clone(),
            number: release.name.number,
        }),
        manifest: Manifest::from_desired(&desired),
        services: service_records,
    })?;
    fail_point!("services_before_journal_end");
    apply::journal_done(state.apply_area()).map_err(|e| SyncError::JournalDone {
        generation: to,
        source: Box::new(e),
    })?;
    state.end_services()?;
    state.record_watermark(&verified)?;
    prune(state, config.apply.keep_generations as usize, to)?;
    tracing::info!(generation = to, signer = %verified.signer().principal, "applied");
    Ok(SyncOutcome::Applied {
        generation: to,
        previous: current.map(|g| g.number),
        commit,
        signer: verified.signer().principal.clone(),
        release: verified.release().map(|r| r.name.clone()),
        plan,
        services: service_plan,
    })
}

/// Runs the service plan and its health gate; the error is the unit at fault and the operator's
/// message (why, and the end of the unit's journal).
fn start_services(
    plan: &ServicePlan,
    systemd: &Systemd,
    timeout: Duration,
) -> Result<(), (Option<String>, String)> {
    services::execute(plan, systemd).map_err(|e| (e.unit().map(str::to_owned), e.to_string()))?;
    let healthy =
        health::gate(plan, systemd, timeout).map_err(|e| (Some(e.unit.clone()), e.to_string()))?;
    if !healthy.units.is_empty() {
        tracing::info!(units = ?healthy.units, "services healthy");
    }
    Ok(())
}

fn rollback_problems(problems: &[String]) -> String {
    if problems.is_empty() {
        return String::new();
    }
    let mut text = String::from("\nThe rollback was incomplete:");
    for problem in problems {
        text.push_str("\n- ");
        text.push_str(problem);
    }
    text
}

/// Resolves an apply interrupted by a crash, so the device is exactly at one generation: its
/// files (`apply::recover`, from the apply journal), then its units. A services journal whose
/// generation was not recorded means the crash came between the first `systemctl` call and the
/// commit point (while units were restarted or gated, or undone after a failed gate): the files
/// are back at the previous generation by now, so the plan is reverted like after a failed
/// gate — reload, units it started stopped, stopped ones started, restarted ones restarted on
/// the old files. The commit is not marked bad: the next sync applies and gates it again.
pub fn recover(root: &Path, state: &StateDir) -> Result<Option<Recovery>, SyncError> {
    let current = state.current_number()?;
    let recovery = apply::recover(root, state.apply_area(), |n| current == Some(n))
        .map_err(|e| SyncError::Recover(Box::new(e)))?;
    if let Some(r) = &recovery {
        tracing::warn!(%r, "recovered an interrupted apply");
    }
    if let Some(pending) = state.pending_services()? {
        if current != Some(pending.to) {
            tracing::warn!(
                from = pending.from,
                to = pending.to,
                "the services of an interrupted apply are taken back to the previous generation"
            );
            let systemd = Systemd::for_root(root);
            if let Err(e) = services::revert(&pending.plan(), &systemd) {
                // The same as after a failed gate: reported, not fatal; the files are right.
                tracing::error!(error = %e, "putting the services back after a crash was incomplete");
            }
        }
        state.end_services()?;
    }
    Ok(recovery)
}

/// Keeps the newest `keep_generations` generations and the blobs they need.
/// `generation` is the one just applied (for the message if removing blobs fails).
fn prune(state: &StateDir, keep: usize, generation: u64) -> Result<(), SyncError> {
    let removed = state.prune(keep)?;
    if removed.is_empty() {
        return Ok(());
    }
    let kept = state.generations()?;
    let manifests: Vec<&Manifest> = kept.iter().map(|g| &g.manifest).collect();
    apply::prune_blobs(state.apply_area(), &manifests).map_err(|e| SyncError::Prune {
        generation,
        source: Box::new(e),
    })?;
    Ok(())
}

/// The `Pending` outcome when `verified`'s `[rollout]` puts this device in a wave that has not
/// opened yet; `None` when it may apply now (no rollout, or its wave is open). The wave opens
/// `after` its start: the release's tagger time (environment mode: the same instant on every
/// device, signed), else the time this device first verified the commit (branch mode: recorded,
/// so a restart does not start the timer again; a newer commit starts its own).
fn wait_for_wave(
    config: &AgentConfig,
    state: &StateDir,
    verified: &verify::Verified,
    desired: &render::DesiredState,
    dry_run: bool,
) -> Result<Option<SyncOutcome>, SyncError> {
    let Some(rollout) = desired.rollout.as_ref() else {
        return Ok(None);
    };
    let id = verified.commit_id();
    let wave = rollout.wave_for(&config.identity(), id.as_str());
    let now = unix_now();
    let (start, counted_from) = match verified.release() {
        Some(release) => (
            u64::try_from(release.tagger_time).unwrap_or(0),
            format!("the tagger time of release {}", release.name),
        ),
        None => {
            let start = match state.rollout_start(&id)? {
                Some(start) => start,
                None => {
                    if !dry_run {
                        state.record_rollout_start(&id, now)?;
                    }
                    now
                }
            };
            (start, "when this device first verified it".to_owned())
        }
    };
    let opens_at = start.saturating_add(wave.after.as_secs());
    if now >= opens_at {
        return Ok(None);
    }
    let message = format!(
        "commit {} waits for its rollout wave {:?} (wave {} of {}, bucket {}), which opens at {} ({}s after {counted_from}); nothing is applied until then",
        verified.commit(),
        wave.name,
        wave.index + 1,
        rollout.waves.len(),
        wave.bucket,
        shoal_core::release::format_rfc3339_utc(i64::try_from(opens_at).unwrap_or(i64::MAX)),
        wave.after.as_secs(),
    );
    tracing::info!(wave = %wave.name, opens_at, "pending");
    Ok(Some(SyncOutcome::Pending {
        commit: verified.commit(),
        pending: shoal_proto::Pending {
            commit: id.to_string(),
            wave: wave.name,
            opens_at,
        },
        message,
    }))
}

/// The device's wave for the rendered commit, `None` when it declares no `[rollout]`.
fn wave_name(
    config: &AgentConfig,
    verified: &verify::Verified,
    desired: &render::DesiredState,
) -> Option<String> {
    let rollout = desired.rollout.as_ref()?;
    Some(
        rollout
            .wave_for(&config.identity(), verified.commit_id().as_str())
            .name,
    )
}

/// The target of a result about `commit` before it is rendered (a bad commit, a hold): the wave
/// the last sync saw for the same commit, else none.
fn known_target(state: &StateDir, commit: &CommitId) -> Target {
    let wave = state
        .last_result()
        .ok()
        .flatten()
        .and_then(|last| last.target)
        .filter(|t| t.commit == commit.as_str())
        .and_then(|t| t.wave);
    Target {
        commit: commit.to_string(),
        wave,
    }
}

/// The `Halted` outcome when the collector's halt list in force (signed by the pinned
/// `[collector] key`) halts `verified`'s commit; `None` without a key, a list, or a halt of it.
fn collector_halt(
    config: &AgentConfig,
    state: &StateDir,
    verified: &verify::Verified,
    current: Option<&Generation>,
) -> Result<Option<SyncOutcome>, SyncError> {
    let pinned = config.collector.as_ref().and_then(|c| c.key.as_ref());
    let list = halts::in_force(state, pinned)?;
    let id = verified.commit_id();
    let (Some(halt), Some(pinned)) = (halts::halt_of(list.as_ref(), &id), pinned) else {
        return Ok(None);
    };
    let record = HaltRecord {
        commit: id,
        source: HaltSource::Collector,
        by: format!("the collector ({})", pinned.id),
        reason: halt.reason.clone(),
    };
    let message = format!(
        "commit {} is halted by {} since {}: {}; nothing is applied, the device stays {} until the collector resumes it",
        verified.commit(),
        record.by,
        shoal_core::release::format_rfc3339_utc(i64::try_from(halt.since).unwrap_or(i64::MAX)),
        halt.reason,
        staying(current),
    );
    tracing::warn!(by = %record.by, reason = %halt.reason, "halted");
    Ok(Some(SyncOutcome::Halted {
        commit: verified.commit(),
        halt: record,
        message,
    }))
}

/// Where a device that applies nothing stays, for messages.
fn staying(current: Option<&Generation>) -> String {
    current.map_or_else(
        || "with nothing applied".to_owned(),
        |g| format!("at generation {} (commit {})", g.number, g.commit),
    )
}

/// The outcome of a release with `Halt: true` whose commit the device has not applied. Its
/// commit is rendered only to name the device's wave (environment mode counts waves from the
/// tagger time, so there is no timer to record); a commit that does not render is named
/// without a wave and not marked bad here (a release without a halt will try it).
fn halted_release(
    config: &AgentConfig,
    state: &StateDir,
    mirror: &Mirror,
    halted: HaltedRelease,
    target: &mut Option<Target>,
) -> Result<SyncOutcome, SyncError> {
    let verified = &halted.verified;
    let id = verified.commit_id();
    let wave = VerifiedTree::new(mirror.repo(), verified)
        .ok()
        .and_then(|tree| render::render(&tree, &config.identity()).ok())
        .and_then(|desired| wave_name(config, verified, &desired));
    *target = Some(Target {
        commit: id.to_string(),
        wave,
    });
    let current = state.current()?;
    let record = HaltRecord {
        commit: id,
        source: HaltSource::Release,
        by: format!("release {} signed by {}", halted.name(), halted.signer()),
        reason: "Halt: true in the release tag".to_owned(),
    };
    let message = format!(
        "commit {} is halted by {} (Halt: true); nothing is applied, the device stays {} until a release without a halt",
        verified.commit(),
        record.by,
        staying(current.as_ref()),
    );
    Ok(SyncOutcome::Halted {
        commit: verified.commit(),
        halt: record,
        message,
    })
}

fn record(
    state: &StateDir,
    status: Status,
    commit: Option<CommitId>,
    message: Option<String>,
    timings: Timings,
    target: Option<Target>,
) -> Result<(), StateError> {
    state.record_result(&SyncResult {
        status,
        commit,
        message,
        at: unix_now(),
        timings,
        pending: None,
        halted: None,
        target,
    })?;
    Ok(())
}
