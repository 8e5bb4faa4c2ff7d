//! The service plan: from what the previous generation recorded, what the new one declares and
//! which files the file plan changes, the systemd actions to take, in the order to take them.
//! Pure: no I/O, no systemd.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use super::{ServiceRecord, UNIT_DIR};
use crate::render::ServiceState;

/// What to do to systemd to go from one generation's services to the next.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct ServicePlan {
    /// Unit files or drop-ins are written or removed: systemd must re-read them (once) before any
    /// unit is touched.
    pub daemon_reload: bool,
    /// In execution order: stops, disables, enables, starts, restarts; by unit within each.
    pub actions: Vec<ServiceAction>,
    /// Before and after of every unit with an action: what a rollback returns to.
    #[serde(skip)]
    pub transitions: BTreeMap<String, Transition>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ServiceAction {
    pub unit: String,
    pub action: UnitAction,
    #[serde(flatten)]
    pub reason: Reason,
}

/// One `systemctl` verb. The order of the variants is the order of execution: units going away
/// release what they hold before new ones start, and restarts come last so a unit restarted
/// because of a changed file sees every other change already made.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum UnitAction {
    Stop,
    Disable,
    Enable,
    Start,
    Restart,
}

impl UnitAction {
    pub fn as_str(self) -> &'static str {
        match self {
            UnitAction::Stop => "stop",
            UnitAction::Disable => "disable",
            UnitAction::Enable => "enable",
            UnitAction::Start => "start",
            UnitAction::Restart => "restart",
        }
    }

    /// The action that undoes this one (a restart is undone by another restart, on the old files).
    pub fn inverse(self) -> UnitAction {
        match self {
            UnitAction::Stop => UnitAction::Start,
            UnitAction::Start => UnitAction::Stop,
            UnitAction::Disable => UnitAction::Enable,
            UnitAction::Enable => UnitAction::Disable,
            UnitAction::Restart => UnitAction::Restart,
        }
    }

    /// Whether the unit must be up afterwards, so the health gate watches it.
    pub fn starts(self) -> bool {
        matches!(self, UnitAction::Start | UnitAction::Restart)
    }
}

impl fmt::Display for UnitAction {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Why an action is in the plan.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "reason", rename_all = "snake_case")]
pub enum Reason {
    /// The unit is declared for the first time.
    New,
    /// The unit was declared by the previous generation, not any more.
    NoLongerDeclared,
    /// `enabled` or `state` changed in the repository.
    Declared,
    /// Its unit file, a drop-in or a `restart_on` file changes.
    Changed { paths: Vec<PathBuf> },
    /// Undoing the plan of a generation that failed its health gate.
    RollingBack,
}

/// A unit's record in the previous generation (`None`: not declared) and in the new one.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Transition {
    pub before: Option<ServiceRecord>,
    pub after: Option<ServiceRecord>,
}

/// A [`ServicePlan`] as it is kept on disk while it runs (the state module's services journal):
/// everything, the transitions included, which `--json` output leaves out.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PlanRecord {
    pub daemon_reload: bool,
    pub actions: Vec<ServiceAction>,
    pub transitions: BTreeMap<String, Transition>,
}

impl From<&ServicePlan> for PlanRecord {
    fn from(plan: &ServicePlan) -> Self {
        PlanRecord {
            daemon_reload: plan.daemon_reload,
            actions: plan.actions.clone(),
            transitions: plan.transitions.clone(),
        }
    }
}

impl From<PlanRecord> for ServicePlan {
    fn from(record: PlanRecord) -> Self {
        ServicePlan {
            daemon_reload: record.daemon_reload,
            actions: record.actions,
            transitions: record.transitions,
        }
    }
}

impl ServicePlan {
    /// Nothing to reload and nothing to do to any unit.
    pub fn is_empty(&self) -> bool {
        !self.daemon_reload && self.actions.is_empty()
    }

    /// The units that must be up once the plan ran (started or restarted), in plan order.
    pub fn started(&self) -> impl Iterator<Item = &ServiceAction> {
        self.actions.iter().filter(|a| a.action.starts())
    }

    /// The plan that takes systemd back to the previous generation after this one was applied
    /// (its files already restored by `apply::undo`): every action inverted, the same reload.
    pub fn reverse(&self) -> ServicePlan {
        let mut actions: Vec<ServiceAction> = self
            .actions
            .iter()
            .map(|a| ServiceAction {
                unit: a.unit.clone(),
                action: a.action.inverse(),
                reason: Reason::RollingBack,
            })
            .collect();
        sort(&mut actions);
        ServicePlan {
            daemon_reload: self.daemon_reload,
            actions,
            transitions: self
                .transitions
                .iter()
                .map(|(unit, t)| {
                    let back = Transition {
                        before: t.after.clone(),
                        after: t.before.clone(),
                    };
                    (unit.clone(), back)
                })
                .collect(),
        }
    }
}

/// The plan from `previous` (the current generation's records) to `desired`, given the device
/// paths the file plan writes or removes (`changed`). Units whose records are equal and none of
/// whose inputs changed get no action at all.
pub fn plan(
    desired: &BTreeMap<String, ServiceRecord>,
    previous: &BTreeMap<String, ServiceRecord>,
    changed: &BTreeSet<PathBuf>,
) -> ServicePlan {
    let mut plan = ServicePlan {
        daemon_reload: changed.iter().any(|p| p.starts_with(UNIT_DIR)),
        ..ServicePlan::default()
    };
    let units: BTreeSet<&String> = desired.keys().chain(previous.keys()).collect();
    for unit in units {
        let (before, after) = (previous.get(unit), desired.get(unit));
        let actions = match (before, after) {
            (None, Some(after)) => new_unit(after),
            (Some(before), None) => removed_unit(before),
            (Some(before), Some(after)) => kept_unit(before, after, changed),
            (None, None) => Vec::new(),
        };
        if actions.is_empty() {
            continue;
        }
        plan.actions
            .extend(actions.into_iter().map(|(action, reason)| ServiceAction {
                unit: unit.clone(),
                action,
                reason,
            }));
        plan.transitions.insert(
            unit.clone(),
            Transition {
                before: before.cloned(),
                after: after.cloned(),
            },
        );
    }
    sort(&mut plan.actions);
    plan
}

fn new_unit(after: &ServiceRecord) -> Vec<(UnitAction, Reason)> {
    let mut actions = Vec::new();
    if after.enabled {
        actions.push((UnitAction::Enable, Reason::New));
    }
    if after.state == ServiceState::Running {
        actions.push((UnitAction::Start, Reason::New));
    }
    actions
}

fn removed_unit(before: &ServiceRecord) -> Vec<(UnitAction, Reason)> {
    let mut actions = Vec::new();
    if before.state == ServiceState::Running {
        actions.push((UnitAction::Stop, Reason::NoLongerDeclared));
    }
    if before.enabled {
        actions.push((UnitAction::Disable, Reason::NoLongerDeclared));
    }
    actions
}

fn kept_unit(
    before: &ServiceRecord,
    after: &ServiceRecord,
    changed: &BTreeSet<PathBuf>,
) -> Vec<(UnitAction, Reason)> {
    let mut actions = Vec::new();
    match (before.enabled, after.enabled) {
        (false, true) => actions.push((UnitAction::Enable, Reason::Declared)),
        (true, false) => actions.push((UnitAction::Disable, Reason::Declared)),
        _ => {}
    }
    // A drop-in that goes away changes the unit as much as one that arrives.
    let inputs: BTreeSet<PathBuf> = after.inputs().chain(before.inputs()).collect();
    let paths: Vec<PathBuf> = inputs.into_iter().filter(|p| changed.contains(p)).collect();
    match (before.state, after.state) {
        (ServiceState::Running, ServiceState::Stopped) => {
            actions.push((UnitAction::Stop, Reason::Declared))
        }
        // Started after the reload, so it runs with the new files anyway.
        (ServiceState::Stopped, ServiceState::Running) => {
            actions.push((UnitAction::Start, Reason::Declared))
        }
        (ServiceState::Running, ServiceState::Running) if !paths.is_empty() => {
            actions.push((UnitAction::Restart, Reason::Changed { paths }))
        }
        // Stopped and staying stopped: a changed file is read whenever it is next started.
        _ => {}
    }
    actions
}

fn sort(actions: &mut [ServiceAction]) {
    actions.sort_by(|a, b| (a.action, &a.unit).cmp(&(b.action, &b.unit)));
}

impl fmt::Display for ServicePlan {
    /// One line per step (`daemon-reload`, then `restart telemetry.service (changed: …)`);
    /// nothing at all for an empty plan.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.daemon_reload {
            writeln!(f, "daemon-reload (unit files changed)")?;
        }
        for action in &self.actions {
            writeln!(f, "{action}")?;
        }
        Ok(())
    }
}

impl fmt::Display for ServiceAction {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} {} ", self.action, self.unit)?;
        match &self.reason {
            Reason::New => f.write_str("(new)"),
            Reason::NoLongerDeclared => f.write_str("(no longer declared)"),
            Reason::Declared => f.write_str(match self.action {
                UnitAction::Enable => "(declared enabled)",
                UnitAction::Disable => "(declared disabled)",
                UnitAction::Stop => "(declared stopped)",
                UnitAction::Start | UnitAction::Restart => "(declared running)",
            }),
            Reason::Changed { paths } => {
                let paths: Vec<_> = paths.iter().map(|p| display(p)).collect();
                write!(f, "(changed: {})", paths.join(", "))
            }
            Reason::RollingBack => f.write_str("(rolling back)"),
        }
    }
}

fn display(path: &Path) -> String {
    path.display().to_string()
}
