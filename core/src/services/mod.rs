//! The service plan: decides what systemd must do so the device runs the units a generation
//! declares — reload, enable/disable, start/stop/restart only what changed — from the records of
//! the generation before and after. Unit files and drop-ins become ordinary declared files
//! ([`merge_unit_files`]), planned and applied like any other. Pure: doing the plan (systemctl)
//! and the health gate are the agent's.

mod plan;

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::{Deserialize, Serialize};

pub use plan::{plan, PlanRecord, Reason, ServiceAction, ServicePlan, Transition, UnitAction};

use crate::render::{DesiredFile, DesiredState, ServiceState};

/// Where unit files and drop-in directories go on the device (under its `root`): the
/// administrator's directory, which overrides the distribution's units of the same name.
pub const UNIT_DIR: &str = "/etc/systemd/system";

/// The device path of `unit`'s unit file.
pub fn unit_file_path(unit: &str) -> PathBuf {
    Path::new(UNIT_DIR).join(unit)
}

/// The device path of drop-in `name` of `unit`.
pub fn dropin_path(unit: &str, name: &str) -> PathBuf {
    Path::new(UNIT_DIR).join(format!("{unit}.d")).join(name)
}

/// What one generation declared about one unit: enough to plan the next generation against it,
/// to undo a unit that is no longer declared, and to roll back to it. Stored by the state module
/// in each generation.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ServiceRecord {
    pub unit: String,
    pub enabled: bool,
    pub state: ServiceState,
    /// Drop-in file names; their paths are [`dropin_path`].
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub dropins: Vec<String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub restart_on: Vec<PathBuf>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub health: Option<HealthProbe>,
}

impl ServiceRecord {
    /// Every device path whose change means the running unit is out of date: its unit file, its
    /// drop-ins and its `restart_on` files.
    pub fn inputs(&self) -> impl Iterator<Item = PathBuf> + '_ {
        std::iter::once(unit_file_path(&self.unit))
            .chain(
                self.dropins
                    .iter()
                    .map(|name| dropin_path(&self.unit, name)),
            )
            .chain(self.restart_on.iter().cloned())
    }
}

/// The optional command run beside "the unit is active": it must exit 0 within `timeout`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct HealthProbe {
    pub exec: String,
    #[serde(rename = "timeout_ms", with = "duration_ms")]
    pub timeout: Duration,
}

/// The records of every service `desired` declares, by unit.
pub fn records(desired: &DesiredState) -> BTreeMap<String, ServiceRecord> {
    desired
        .services
        .iter()
        .map(|(unit, service)| {
            let record = ServiceRecord {
                unit: unit.clone(),
                enabled: service.enabled,
                state: service.state,
                dropins: service.dropins.keys().cloned().collect(),
                restart_on: service.restart_on.clone(),
                health: service.health.as_ref().map(|h| HealthProbe {
                    exec: h.exec.clone(),
                    timeout: h.timeout,
                }),
            };
            (unit.clone(), record)
        })
        .collect()
}

/// The unit files and drop-ins `desired`'s services need, as declared files (0644 root:root):
/// `/etc/systemd/system/<unit>` and `/etc/systemd/system/<unit>.d/<name>`.
pub fn unit_files(desired: &DesiredState) -> BTreeMap<PathBuf, DesiredFile> {
    let mut files = BTreeMap::new();
    for (unit, service) in &desired.services {
        let file = |content: &[u8], source: String| DesiredFile {
            content: content.to_vec(),
            mode: 0o644,
            owner: "root".into(),
            group: "root".into(),
            profile: service.profile.clone(),
            source,
        };
        files.insert(
            unit_file_path(unit),
            file(&service.content, format!("unit file of {unit}")),
        );
        for (name, content) in &service.dropins {
            files.insert(
                dropin_path(unit, name),
                file(content, format!("drop-in {name} of {unit}")),
            );
        }
    }
    files
}

/// Adds [`unit_files`] to `desired.files`, so `plan` and `apply` treat them like every other
/// declared file (journaled, rolled back, removed when no longer declared). A path declared both
/// as a file and as a unit file or drop-in is an error naming both.
pub fn merge_unit_files(desired: &mut DesiredState) -> Result<(), Box<UnitFileConflict>> {
    for (unit, service) in &desired.services {
        let dropins = service
            .dropins
            .keys()
            .map(|name| (dropin_path(unit, name), "drop-in"));
        for (path, what) in std::iter::once((unit_file_path(unit), "unit file")).chain(dropins) {
            if let Some(file) = desired.files.get(&path) {
                return Err(Box::new(UnitFileConflict {
                    path,
                    what,
                    unit: unit.clone(),
                    service_profile: service.profile.clone(),
                    file_profile: file.profile.clone(),
                    file_source: file.source.clone(),
                }));
            }
        }
    }
    let units = unit_files(desired);
    desired.files.extend(units);
    Ok(())
}

/// The device paths a file plan writes or removes: what [`plan`] compares services' inputs with.
pub fn changed_paths(files: &crate::plan::Plan) -> BTreeSet<PathBuf> {
    files.actions.iter().map(|a| a.path().to_owned()).collect()
}

/// A unit file or drop-in path that is also declared as a file.
#[derive(Debug, thiserror::Error)]
#[error("{} is declared twice: as the {what} of service {unit} (profile {service_profile:?}) and as a file (profile {file_profile:?}, source {file_source:?}); declare the unit only under [[profile.service]], or rename the file", path.display())]
pub struct UnitFileConflict {
    pub path: PathBuf,
    /// `unit file` or `drop-in`.
    pub what: &'static str,
    pub unit: String,
    pub service_profile: String,
    pub file_profile: String,
    pub file_source: String,
}

/// `Duration` as whole milliseconds in the generation records.
mod duration_ms {
    use std::time::Duration;

    use serde::{Deserialize, Deserializer, Serializer};

    pub fn serialize<S: Serializer>(d: &Duration, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_u64(u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Duration, D::Error> {
        u64::deserialize(d).map(Duration::from_millis)
    }
}
