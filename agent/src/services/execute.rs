//! Carries out a service plan against systemd: forward (stopping at the first failure, so the
//! caller can roll back) or in reverse after a failed health gate (best effort: every step is
//! tried and every failure collected).

use std::fmt;

use super::error::ServiceError;
use super::systemd::Systemd;
use crate::apply::failpoint::fail_point;
use shoal_core::services::{ServiceAction, ServicePlan, UnitAction};

/// What [`execute`] or [`revert`] did.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Executed {
    pub daemon_reloaded: bool,
    /// The actions that succeeded, in the order they ran.
    pub done: Vec<ServiceAction>,
}

/// A [`revert`] that could not do everything: what it did and each step that failed.
#[derive(Debug)]
pub struct RevertFailed {
    pub executed: Executed,
    pub errors: Vec<ServiceError>,
}

impl fmt::Display for RevertFailed {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{} step(s) of putting the services back failed; check them with `systemctl status`:",
            self.errors.len()
        )?;
        for error in &self.errors {
            write!(f, "\n- {error}")?;
        }
        Ok(())
    }
}

impl std::error::Error for RevertFailed {}

/// Runs `plan`: one `daemon-reload` if unit files changed, then each action in order, each
/// start, stop and restart waiting for its job. Stops at the first failure, which names the unit
/// (and, for a failed start, quotes its journal); what ran before it is not undone here — the
/// caller reverts the whole plan.
pub fn execute(plan: &ServicePlan, systemd: &Systemd) -> Result<Executed, ServiceError> {
    let mut executed = Executed::default();
    if !systemd.is_live() && plan.started().next().is_some() {
        tracing::warn!("no running systemd manages this root: units are only enabled and disabled; nothing is started, stopped or health-checked");
    }
    if plan.daemon_reload {
        systemd.daemon_reload()?;
        executed.daemon_reloaded = systemd.is_live();
        fail_point!("services_after_reload");
    }
    for action in &plan.actions {
        tracing::info!(unit = %action.unit, action = %action.action, "service");
        match systemd.act(action.action, &action.unit) {
            Ok(()) => executed.done.push(action.clone()),
            Err(e) if leaving(plan, action) => {
                tracing::warn!(unit = %action.unit, error = %e, "ignored: the unit is going away")
            }
            Err(e) => return Err(e),
        }
        fail_point!("services_after_action");
    }
    forget_gone_units(plan, systemd);
    Ok(executed)
}

/// Takes systemd back to the generation before `plan` (whose files `apply::undo` has already
/// restored): reloads, then undoes every action of `plan` ([`ServicePlan::reverse`]): units
/// it started are stopped, stopped ones started, restarted ones restarted on the old files,
/// enablement flipped back. Every step is attempted even when one fails.
pub fn revert(plan: &ServicePlan, systemd: &Systemd) -> Result<Executed, RevertFailed> {
    let reverse = plan.reverse();
    let mut executed = Executed::default();
    let mut errors = Vec::new();
    if reverse.daemon_reload {
        match systemd.daemon_reload() {
            Ok(()) => executed.daemon_reloaded = systemd.is_live(),
            Err(e) => errors.push(e),
        }
    }
    for action in &reverse.actions {
        tracing::warn!(unit = %action.unit, action = %action.action, "rolling back service");
        match systemd.act(action.action, &action.unit) {
            Ok(()) => executed.done.push(action.clone()),
            Err(e) if leaving(&reverse, action) => {
                tracing::warn!(unit = %action.unit, error = %e, "ignored: the unit is going away")
            }
            Err(e) => errors.push(e),
        }
        fail_point!("services_revert_after_action");
    }
    forget_gone_units(&reverse, systemd);
    if errors.is_empty() {
        Ok(executed)
    } else {
        Err(RevertFailed { executed, errors })
    }
}

/// Whether `action` only tidies up after a unit whose file is already gone: disabling it fails
/// when nothing was enabled ("Unit file … does not exist"), and whatever symlink could be left
/// dangles harmlessly. Such a failure must not fail (or roll back) a generation.
fn leaving(plan: &ServicePlan, action: &ServiceAction) -> bool {
    action.action == UnitAction::Disable
        && plan
            .transitions
            .get(&action.unit)
            .is_some_and(|t| t.after.is_none())
}

/// Units `plan` leaves undeclared may still be listed as failed (a unit that crashed before it
/// was removed, or a new one whose health gate failed): forget that, or the system reports
/// itself degraded because of a unit that no longer exists.
fn forget_gone_units(plan: &ServicePlan, systemd: &Systemd) {
    let gone = plan.transitions.iter().filter(|(_, t)| t.after.is_none());
    for (unit, _) in gone {
        if let Err(e) = systemd.reset_failed(unit) {
            tracing::debug!(%unit, error = %e, "reset-failed");
        }
    }
}
