//! On-device rollback, no network: switch the device to a kept generation (journaled, like an
//! apply) and hold it there until `resume`. Decides which generation "previous" means; the file
//! work is `apply::restore`'s, the units' is `services`'.

use std::collections::BTreeSet;

use crate::apply::{self, Applied, ApplyError};
use crate::config::AgentConfig;
use crate::health;
use crate::metrics;
use crate::plan::Manifest;
use crate::services::{self, Systemd};
use shoal_proto::{CommitId, Status};

use crate::state::{unix_now, StateDir, StateError, SyncResult};
use crate::sync::{self, SyncError};

#[derive(Debug, thiserror::Error)]
pub enum RollbackError {
    #[error(transparent)]
    State(#[from] StateError),
    #[error(transparent)]
    Sync(#[from] SyncError),
    #[error("nothing to roll back to: the device has {0}; `shoal-agent history` lists the generations kept")]
    NoPrevious(&'static str),
    #[error("rolling back to generation {to} failed: {source}")]
    Restore {
        to: u64,
        #[source]
        source: Box<ApplyError>,
    },
    #[error("the files of generation {to} are restored and the device is held there, but its services did not all come back: {message}; fix the unit by hand (systemctl), or pick another generation with `shoal-agent rollback --to N`")]
    Services { to: u64, message: String },
}

/// Where a rollback left the device.
#[derive(Debug)]
pub struct RolledBack {
    pub from: u64,
    pub to: u64,
    pub commit: CommitId,
}

/// Restores generation `to` (default: the one before the current) and holds the device there.
pub fn rollback(config: &AgentConfig, to: Option<u64>) -> Result<RolledBack, RollbackError> {
    let began = std::time::Instant::now();
    let state = StateDir::open(&config.state_dir)?;
    sync::recover(&config.root, &state)?;
    let current = state
        .current()?
        .ok_or(RollbackError::NoPrevious("never applied a generation"))?;
    let target = match to {
        Some(n) => state.generation(n)?,
        None => state
            .generations()?
            .into_iter()
            .filter(|g| g.number < current.number)
            .max_by_key(|g| g.number)
            .ok_or(RollbackError::NoPrevious("only one generation"))?,
    };
    let mut changed = None;
    if target.number != current.number {
        let applied = restore(
            config,
            &state,
            &current.manifest,
            current.number,
            &target.manifest,
            target.number,
        )?;
        changed = Some(applied);
    }
    state.set_hold(Some(target.number))?;
    // The units follow the files: reload, restart the units whose files were restored, start,
    // stop, enable and disable as the target generation declared. No automatic way back if they
    // fail: this is the operator's choice of generation.
    let changed: BTreeSet<_> = changed.iter().flat_map(changed_paths).collect();
    let plan = services::plan(&target.services, &current.services, &changed);
    let systemd = Systemd::for_root(&config.root);
    services::execute(&plan, &systemd)
        .map_err(|e| e.to_string())
        .and_then(|_| {
            health::gate(&plan, &systemd, config.apply.health_timeout).map_err(|e| e.to_string())
        })
        .map_err(|message| RollbackError::Services {
            to: target.number,
            message,
        })?;
    state.record_result(&SyncResult {
        status: Status::Held,
        commit: Some(target.commit.clone()),
        message: Some(format!(
            "rolled back from generation {} by an operator",
            current.number
        )),
        at: unix_now(),
        timings: Default::default(),
        pending: None,
        halted: None,
        // The wave is a property of a sync's rendering; a rollback renders nothing.
        target: Some(shoal_proto::Target {
            commit: target.commit.to_string(),
            wave: None,
        }),
    })?;
    let run = metrics::Run {
        status: Status::Held,
        ended_at: unix_now(),
        duration: began.elapsed(),
        pending: None,
    };
    metrics::after(config.metrics.textfile.as_deref(), &state, &run);
    Ok(RolledBack {
        from: current.number,
        to: target.number,
        commit: target.commit,
    })
}

/// Releases the hold; returns the generation that was held, if any.
pub fn resume(config: &AgentConfig) -> Result<Option<u64>, RollbackError> {
    let state = StateDir::open(&config.state_dir)?;
    let held = state.hold()?;
    state.set_hold(None)?;
    Ok(held)
}

/// Every path a restore wrote, removed or put back as it was before Shoal.
fn changed_paths(applied: &Applied) -> impl Iterator<Item = std::path::PathBuf> + '_ {
    applied
        .written
        .iter()
        .chain(&applied.removed)
        .chain(&applied.restored)
        .cloned()
}

/// Switches the disk from one generation's files to another's with the same crash order as an
/// apply: journal, writes, then the state records the new current generation, then the journal
/// goes.
fn restore(
    config: &AgentConfig,
    state: &StateDir,
    from: &Manifest,
    from_number: u64,
    to: &Manifest,
    to_number: u64,
) -> Result<Applied, RollbackError> {
    let failed = |e: ApplyError| RollbackError::Restore {
        to: to_number,
        source: Box::new(e),
    };
    let applied = apply::restore(
        from,
        to,
        &config.root,
        state.apply_area(),
        from_number,
        to_number,
    )
    .map_err(failed)?;
    state.set_current(to_number)?;
    apply::journal_done(state.apply_area()).map_err(failed)?;
    Ok(applied)
}
