//! `shoal-agent run`: the long-running loop. Syncs every interval with ±10 % jitter, at once on
//! SIGHUP (once more right after, if it comes during a sync), backs off exponentially after failures, and stops on SIGTERM/SIGINT only between
//! syncs (an apply is never interrupted). Tells systemd READY/WATCHDOG/STATUS.
//!
//! Each sync runs in a child process, `shoal-agent --config F sync --from-daemon`: what a sync
//! allocates (a rendered tree, the fetch's buffers) goes back to the system when the child exits,
//! whatever the allocator keeps (musl's keeps most of it), so the daemon stays small between
//! syncs; and a sync that panics or leaks cannot take the daemon with it. The daemon itself
//! reports to the collector after each sync, keeping its sequence block and what it last sent,
//! so a heartbeat writes nothing. One current-thread runtime; the child is waited for, and the
//! report sent, in `spawn_blocking`.
//!
//! Halts reach the device in the answer to a report, so after the sync that reported: when
//! that answer newly halts the commit the sync left waiting for its wave (`pending`), or lifts
//! the collector's halt of the commit it held off (`halted`), the daemon's next wake is at once:
//! one more sync right after the report (never two in a row for that reason, so a collector
//! flipping its list cannot make the daemon spin). Otherwise it sleeps as usual. And when the
//! wave of the commit it waits for has opened, it reports once *before* the sync that will apply
//! it, so a halt issued since the last report (up to an interval ago) still stops the device.

use std::process::{Command, ExitStatus};
use std::sync::Arc;
use std::time::Duration;

use tokio::signal::unix::{signal, SignalKind};

use crate::config::AgentConfig;
use crate::notify::Notifier;
use crate::report::Reporter;
use crate::state::{DaemonLock, StateDir, StateError};

/// Repeated failures back off up to this many intervals.
const MAX_BACKOFF_FACTOR: u32 = 16;

#[derive(Debug, thiserror::Error)]
pub enum DaemonError {
    #[error(transparent)]
    AlreadyRunning(StateError),
    #[error("cannot start the daemon: {0}")]
    State(#[source] StateError),
    #[error("cannot start the daemon's runtime: {0}")]
    Runtime(#[source] std::io::Error),
}

/// Runs until SIGTERM or SIGINT.
pub fn run(config: AgentConfig) -> Result<(), DaemonError> {
    let _lock = DaemonLock::acquire(&config.state_dir).map_err(|e| match e {
        e @ StateError::DaemonRunning { .. } => DaemonError::AlreadyRunning(e),
        e => DaemonError::State(e),
    })?;
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_time()
        .enable_io()
        .build()
        .map_err(DaemonError::Runtime)?;
    runtime.block_on(run_loop(Arc::new(config)))
}

async fn run_loop(config: Arc<AgentConfig>) -> Result<(), DaemonError> {
    let sig = |kind| signal(kind).map_err(DaemonError::Runtime);
    let (mut hup, mut term, mut int) = (
        sig(SignalKind::hangup())?,
        sig(SignalKind::terminate())?,
        sig(SignalKind::interrupt())?,
    );
    let notifier = Notifier::from_env();
    let mut watchdog =
        tokio::time::interval(Notifier::watchdog_interval().unwrap_or(Duration::from_secs(3600)));
    let mut failures: u32 = 0;
    // Whether this round's sync was the one extra sync a changed halt list asked for.
    let mut followed_halts = false;
    // Built lazily on the blocking pool (reqwest's blocking client must not live on the runtime).
    let mut reporter: Option<Reporter> = None;
    notifier.send("READY=1");
    tracing::info!(device = %config.device_id, interval = ?config.source.interval, "agent started");

    loop {
        // One sync, with the watchdog kept alive and a stop request remembered (not acted on
        // until the sync returns: an apply must finish or roll back on its own terms).
        let job = {
            let config = Arc::clone(&config);
            let reporter = reporter.take();
            tokio::task::spawn_blocking(move || {
                // The sync that will apply a commit whose wave has opened asks the collector for
                // its newest halt list first: the one the last report brought may be a whole
                // interval old, and a halt issued since must stop this device too.
                let reporter = if wave_due(&config) {
                    tracing::info!("the wave of the commit this device waits for has opened: asking the collector for its newest halt list first");
                    report(&config, reporter)
                } else {
                    reporter
                };
                let result = sync_in_child(&config);
                (result, report(&config, reporter))
            })
        };
        tokio::pin!(job);
        let mut stop = false;
        // A SIGHUP during a sync asks for one more right after it: the operator may have pushed
        // (or the link come back) after this sync fetched.
        let mut again = false;
        let result = loop {
            tokio::select! {
                r = &mut job => break r,
                _ = watchdog.tick() => notifier.send("WATCHDOG=1"),
                _ = term.recv() => stop = true,
                _ = int.recv() => stop = true,
                _ = hup.recv() => again = true,
            }
        };
        let result = result.map(|(sync_result, kept)| {
            reporter = kept;
            sync_result
        });
        let status = match result {
            Ok(Ok(exit)) if exit.success() => {
                failures = 0;
                describe(&config)
            }
            // An expired release is a server that stopped releasing, not a failure to back off
            // from: keep looking every interval, so a fresh release converges the device soon.
            Ok(Ok(_)) if last_status(&config) == Some(shoal_proto::Status::Stale) => {
                failures = 0;
                let what = describe(&config);
                tracing::warn!(last = %what, "stale release");
                what
            }
            Ok(Ok(exit)) => {
                failures = failures.saturating_add(1);
                let what = describe(&config);
                tracing::error!(%exit, failures, last = %what, "sync failed");
                format!("sync failed: {what}")
            }
            Ok(Err(e)) => {
                failures = failures.saturating_add(1);
                tracing::error!(error = %e, failures, "cannot run the sync");
                format!("cannot run the sync: {e}")
            }
            Err(join) => {
                failures = failures.saturating_add(1);
                tracing::error!(error = %join, "sync task panicked");
                format!("sync crashed: {join}")
            }
        };
        notifier.send(&format!(
            "STATUS={}",
            status.lines().next().unwrap_or_default()
        ));
        if stop {
            break;
        }

        if again {
            tracing::info!("SIGHUP during the sync: syncing again now");
            continue;
        }
        let follow = !followed_halts && halts_turned(&config);
        followed_halts = follow;
        if follow {
            tracing::info!("the collector's halt list changed for the commit this device waits for: syncing again now");
            continue;
        }
        // A commit waiting for its rollout wave: wake when the wave opens (not a poll), unless
        // the interval comes first (a newer commit may have arrived meanwhile).
        let delay = match wave_opens_in(&config) {
            Some(opens) => next_delay(config.source.interval, failures).min(opens),
            None => next_delay(config.source.interval, failures),
        };
        tracing::debug!(?delay, failures, "next sync");
        let sleep = tokio::time::sleep(delay);
        tokio::pin!(sleep);
        let stop = loop {
            tokio::select! {
                _ = &mut sleep => break false,
                _ = watchdog.tick() => notifier.send("WATCHDOG=1"),
                _ = hup.recv() => { tracing::info!("SIGHUP: syncing now"); break false; }
                _ = term.recv() => break true,
                _ = int.recv() => break true,
            }
        };
        if stop {
            break;
        }
    }
    notifier.send("STOPPING=1");
    tracing::info!("agent stopped");
    Ok(())
}

/// How long until the wave of the commit the device waits for opens (a second past it), if the
/// last sync ended `pending`.
fn wave_opens_in(config: &AgentConfig) -> Option<Duration> {
    let (state, _) = crate::state::StateView::open(&config.state_dir).ok()?;
    let last = state.last_result().ok()??;
    let opens_at = last
        .pending
        .filter(|_| last.status == shoal_proto::Status::Pending)?
        .opens_at;
    let wait = opens_at
        .saturating_sub(crate::state::unix_now())
        .saturating_add(1);
    Some(Duration::from_secs(wait))
}

/// Whether the last sync left a commit waiting for a wave that has opened by now, on a device
/// that trusts the collector's halts (a `[collector] key`): the next sync will apply it, so the
/// daemon reports first to take the newest halt list.
fn wave_due(config: &AgentConfig) -> bool {
    config.collector.as_ref().is_some_and(|c| c.key.is_some())
        && wave_opens_in(config).is_some_and(|wait| wait <= Duration::from_secs(1))
}

/// Whether the halt list in force now disagrees with what the last sync decided about the commit
/// it did not apply: it waited for its wave (`pending`) and is halted now, or it was halted by
/// the collector and is not any more. (A release's `Halt: true` changes only with a release.)
fn halts_turned(config: &AgentConfig) -> bool {
    use crate::state::HaltSource;
    use shoal_proto::Status;
    let Some(pinned) = config.collector.as_ref().and_then(|c| c.key.as_ref()) else {
        return false;
    };
    let Ok((state, _)) = crate::state::StateView::open(&config.state_dir) else {
        return false;
    };
    let Some(last) = state.last_result().ok().flatten() else {
        return false;
    };
    let Some(commit) = last.commit.as_ref() else {
        return false;
    };
    let Ok(list) = crate::halts::in_force(&state, Some(pinned)) else {
        return false;
    };
    let halted_now = crate::halts::halt_of(list.as_ref(), commit).is_some();
    match last.status {
        Status::Pending => halted_now,
        Status::Halted => {
            !halted_now
                && last
                    .halted
                    .is_some_and(|h| h.source == HaltSource::Collector)
        }
        _ => false,
    }
}

/// Reports after a sync; returns the reporter to keep its sequence block and what it last sent.
fn report(config: &AgentConfig, reporter: Option<Reporter>) -> Option<Reporter> {
    let mut reporter = match reporter {
        Some(r) => r,
        None => match Reporter::new(config) {
            Ok(Some(r)) => r,
            Ok(None) => return None,
            Err(e) => {
                tracing::error!(error = %e, "cannot report to the collector");
                return None;
            }
        },
    };
    match reporter.report() {
        Ok(d) if d.error.is_none() => tracing::debug!(delivered = d.delivered, "reported"),
        Ok(d) => tracing::warn!(
            delivered = d.delivered,
            queued = d.queued,
            error = d.error.as_deref().unwrap_or(""),
            "report not delivered; kept in the outbox"
        ),
        Err(e) => tracing::error!(error = %e, "cannot report"),
    }
    Some(reporter)
}

/// Runs one sync in a child process of this same binary and waits for it. Its stderr (the
/// human summary and its log lines) goes where the daemon's goes: the journal.
fn sync_in_child(config: &AgentConfig) -> std::io::Result<ExitStatus> {
    let exe = std::env::current_exe()?;
    Command::new(exe)
        .arg("--config")
        .arg(&config.path)
        .args(["sync", "--from-daemon"])
        .stdin(std::process::Stdio::null())
        // `sync` prints nothing on stdout without --json; anything there is noise for the journal.
        .stdout(std::process::Stdio::null())
        .status()
}

/// The status the last sync recorded, if it can be read.
fn last_status(config: &AgentConfig) -> Option<shoal_proto::Status> {
    let (state, _) = crate::state::StateView::open(&config.state_dir).ok()?;
    state.last_result().ok()?.map(|r| r.status)
}

/// The device's state after a sync, for systemd's STATUS= line, from the state directory.
fn describe(config: &AgentConfig) -> String {
    let read = || -> Result<String, crate::state::StateError> {
        let state = StateDir::open(&config.state_dir)?;
        let current = state.current()?;
        let last = state.last_result()?;
        let generation = current.as_ref().map_or_else(
            || "no generation".to_owned(),
            |g| format!("generation {}, commit {}", g.number, g.commit),
        );
        Ok(match (last, state.hold()?) {
            (_, Some(held)) => format!("held at generation {held}"),
            (Some(last), None) if last.status == shoal_proto::Status::Converged => {
                format!("converged: {generation}")
            }
            (Some(last), None) => format!(
                "{}: {}; {generation}",
                last.status,
                last.message.unwrap_or_default()
            ),
            (None, None) => generation,
        })
    };
    read().unwrap_or_else(|e| format!("state unreadable: {e}"))
}

/// The wait before the next sync: the interval, doubled per consecutive failure up to
/// `MAX_BACKOFF_FACTOR` intervals (a fleet hammering a server that is down helps no one),
/// then ±10 % jitter so devices that started together drift apart.
pub fn next_delay(interval: Duration, failures: u32) -> Duration {
    let factor = 2u32.saturating_pow(failures).min(MAX_BACKOFF_FACTOR);
    let base = interval.saturating_mul(factor);
    jitter(base, random_unit())
}

/// `base` scaled by a factor in [0.9, 1.1) chosen by `unit` in [0, 1).
fn jitter(base: Duration, unit: f64) -> Duration {
    base.mul_f64(0.9 + 0.2 * unit)
}

fn random_unit() -> f64 {
    use std::hash::{BuildHasher, Hasher};
    // RandomState is seeded from the OS per process and per instance: enough for jitter.
    let mut hasher = std::collections::hash_map::RandomState::new().build_hasher();
    hasher.write_u64(std::process::id() as u64);
    (hasher.finish() >> 11) as f64 / (1u64 << 53) as f64
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn delay_is_the_interval_within_ten_percent_and_backs_off_on_failures() {
        let interval = Duration::from_secs(60);
        assert_eq!(jitter(interval, 0.0), Duration::from_secs(54));
        assert_eq!(jitter(interval, 0.5), Duration::from_secs(60));
        for failures in 0..8 {
            let d = next_delay(interval, failures);
            let base = 60.0 * 2f64.powi(failures as i32).min(MAX_BACKOFF_FACTOR as f64);
            assert!(
                d.as_secs_f64() >= base * 0.9 && d.as_secs_f64() < base * 1.1,
                "{failures} failures: {d:?}"
            );
        }
    }
}
