//! Unit files as declared files, and the service plan: what restarts, what is left alone.

use std::collections::{BTreeMap, BTreeSet};
use std::path::PathBuf;
use std::time::Duration;

use super::*;
use crate::render::{DesiredFile, DesiredService, DesiredState, HealthCheck, ServiceState};

fn service(unit: &str) -> DesiredService {
    DesiredService::new(unit, format!("[Service]\nExecStart=/usr/bin/{unit}\n")).declared_by("base")
}

fn record(unit: &str) -> ServiceRecord {
    ServiceRecord {
        unit: unit.into(),
        enabled: true,
        state: ServiceState::Running,
        dropins: Vec::new(),
        restart_on: Vec::new(),
        health: None,
    }
}

fn records(list: &[ServiceRecord]) -> BTreeMap<String, ServiceRecord> {
    list.iter().map(|r| (r.unit.clone(), r.clone())).collect()
}

fn paths(list: &[&str]) -> BTreeSet<PathBuf> {
    list.iter().map(PathBuf::from).collect()
}

/// The plan's lines, for readable assertions.
fn lines(plan: &ServicePlan) -> Vec<String> {
    plan.to_string().lines().map(str::to_owned).collect()
}

#[test]
fn unit_files_and_dropins_become_declared_files() {
    let mut desired = DesiredState::default();
    let mut telemetry = service("telemetry.service");
    telemetry
        .dropins
        .insert("override.conf".into(), b"[Service]\nNice=5\n".to_vec());
    desired
        .services
        .insert("telemetry.service".into(), telemetry);
    let files = unit_files(&desired);
    let unit = &files[&PathBuf::from("/etc/systemd/system/telemetry.service")];
    assert_eq!(
        unit.content,
        b"[Service]\nExecStart=/usr/bin/telemetry.service\n"
    );
    assert_eq!(
        (unit.mode, unit.owner.as_str(), unit.group.as_str()),
        (0o644, "root", "root")
    );
    assert_eq!(unit.source, "unit file of telemetry.service");
    let dropin = &files[&PathBuf::from("/etc/systemd/system/telemetry.service.d/override.conf")];
    assert_eq!(dropin.content, b"[Service]\nNice=5\n");
    assert_eq!(dropin.profile, "base");
    assert_eq!(files.len(), 2);

    merge_unit_files(&mut desired).unwrap();
    assert_eq!(desired.files, files);
}

#[test]
fn a_file_declared_at_a_unit_path_is_a_conflict_naming_both() {
    let mut desired = DesiredState::default();
    desired
        .services
        .insert("telemetry.service".into(), service("telemetry.service"));
    desired.files.insert(
        "/etc/systemd/system/telemetry.service".into(),
        DesiredFile::new(b"x", 0o644, "root", "root")
            .declared_by("gateways", "files/telemetry.service"),
    );
    let err = merge_unit_files(&mut desired).unwrap_err();
    assert_eq!(
        err.to_string(),
        "/etc/systemd/system/telemetry.service is declared twice: as the unit file of service \
         telemetry.service (profile \"base\") and as a file (profile \"gateways\", source \
         \"files/telemetry.service\"); declare the unit only under [[profile.service]], or rename the file"
    );
}

#[test]
fn records_keep_what_planning_and_rollback_need() {
    let mut desired = DesiredState::default();
    let mut telemetry = service("telemetry.service");
    telemetry.dropins.insert("a.conf".into(), Vec::new());
    telemetry.restart_on = vec!["/etc/telemetry.yaml".into()];
    telemetry.health = Some(HealthCheck {
        exec: "/usr/bin/telemetry --self-check".into(),
        timeout: Duration::from_millis(1500),
    });
    desired
        .services
        .insert("telemetry.service".into(), telemetry);
    let records = super::records(&desired);
    let json = serde_json::to_value(&records).unwrap();
    assert_eq!(
        json,
        serde_json::json!({
            "telemetry.service": {
                "unit": "telemetry.service",
                "enabled": true,
                "state": "running",
                "dropins": ["a.conf"],
                "restart_on": ["/etc/telemetry.yaml"],
                "health": { "exec": "/usr/bin/telemetry --self-check", "timeout_ms": 1500 }
            }
        })
    );
    let back: BTreeMap<String, ServiceRecord> = serde_json::from_value(json).unwrap();
    assert_eq!(back, records);
    // Optional fields may be absent (older generations, hand-written fixtures).
    let minimal: ServiceRecord = serde_json::from_value(serde_json::json!({
        "unit": "a.service", "enabled": false, "state": "stopped"
    }))
    .unwrap();
    assert!(minimal.dropins.is_empty() && minimal.health.is_none());
}

#[test]
fn a_new_unit_is_enabled_and_started() {
    let desired = records(&[record("a.service")]);
    let plan = plan(
        &desired,
        &BTreeMap::new(),
        &paths(&["/etc/systemd/system/a.service"]),
    );
    assert_eq!(
        lines(&plan),
        [
            "daemon-reload (unit files changed)",
            "enable a.service (new)",
            "start a.service (new)",
        ]
    );
    assert_eq!(plan.started().count(), 1);
}

#[test]
fn a_new_disabled_stopped_unit_is_only_installed() {
    let mut quiet = record("a.service");
    quiet.enabled = false;
    quiet.state = ServiceState::Stopped;
    let plan = plan(
        &records(&[quiet]),
        &BTreeMap::new(),
        &paths(&["/etc/systemd/system/a.service"]),
    );
    assert_eq!(lines(&plan), ["daemon-reload (unit files changed)"]);
}

#[test]
fn unchanged_inputs_mean_nothing_at_all() {
    let mut a = record("a.service");
    a.restart_on = vec!["/etc/a.conf".into()];
    let all = records(&[a, record("b.service")]);
    // A file that is no input of any unit changes: still nothing.
    let plan = plan(&all, &all, &paths(&["/etc/motd"]));
    assert!(plan.is_empty(), "{plan}");
    assert_eq!(plan.to_string(), "");
}

#[test]
fn exactly_the_units_whose_inputs_changed_restart() {
    let mut a = record("a.service");
    a.restart_on = vec!["/etc/a.conf".into()];
    let mut b = record("b.service");
    b.dropins = vec!["override.conf".into()];
    let c = record("c.service");
    let all = records(&[a, b, c]);
    let plan = plan(
        &all,
        &all,
        &paths(&[
            "/etc/a.conf",
            "/etc/systemd/system/b.service.d/override.conf",
        ]),
    );
    assert_eq!(
        lines(&plan),
        [
            "daemon-reload (unit files changed)",
            "restart a.service (changed: /etc/a.conf)",
            "restart b.service (changed: /etc/systemd/system/b.service.d/override.conf)",
        ]
    );
}

#[test]
fn a_removed_dropin_restarts_its_unit() {
    let mut before = record("a.service");
    before.dropins = vec!["old.conf".into()];
    let after = record("a.service");
    let plan = plan(
        &records(&[after]),
        &records(&[before]),
        &paths(&["/etc/systemd/system/a.service.d/old.conf"]),
    );
    assert_eq!(
        lines(&plan)[1],
        "restart a.service (changed: /etc/systemd/system/a.service.d/old.conf)"
    );
}

#[test]
fn a_changed_unit_that_stays_stopped_is_not_started() {
    let mut a = record("a.service");
    a.state = ServiceState::Stopped;
    let all = records(&[a]);
    let plan = plan(&all, &all, &paths(&["/etc/systemd/system/a.service"]));
    assert_eq!(lines(&plan), ["daemon-reload (unit files changed)"]);
}

#[test]
fn declared_state_and_enablement_flips_are_followed() {
    let before = records(&[record("a.service"), {
        let mut b = record("b.service");
        b.enabled = false;
        b.state = ServiceState::Stopped;
        b
    }]);
    let after = records(&[
        {
            let mut a = record("a.service");
            a.enabled = false;
            a.state = ServiceState::Stopped;
            a
        },
        record("b.service"),
    ]);
    let plan = plan(&after, &before, &BTreeSet::new());
    assert_eq!(
        lines(&plan),
        [
            "stop a.service (declared stopped)",
            "disable a.service (declared disabled)",
            "enable b.service (declared enabled)",
            "start b.service (declared running)",
        ]
    );
}

#[test]
fn a_unit_no_longer_declared_is_stopped_and_disabled() {
    let plan = plan(
        &BTreeMap::new(),
        &records(&[record("old.service")]),
        &paths(&["/etc/systemd/system/old.service"]),
    );
    assert_eq!(
        lines(&plan),
        [
            "daemon-reload (unit files changed)",
            "stop old.service (no longer declared)",
            "disable old.service (no longer declared)",
        ]
    );
    assert_eq!(plan.started().count(), 0);
    assert!(plan.transitions["old.service"].after.is_none());
}

#[test]
fn stops_come_before_starts_and_restarts_last() {
    let mut changed = record("b.service");
    changed.restart_on = vec!["/etc/b.conf".into()];
    let before = records(&[record("a-old.service"), changed.clone()]);
    let after = records(&[changed, record("z-new.service")]);
    let plan = plan(&after, &before, &paths(&["/etc/b.conf"]));
    let order: Vec<(UnitAction, &str)> = plan
        .actions
        .iter()
        .map(|a| (a.action, a.unit.as_str()))
        .collect();
    assert_eq!(
        order,
        [
            (UnitAction::Stop, "a-old.service"),
            (UnitAction::Disable, "a-old.service"),
            (UnitAction::Enable, "z-new.service"),
            (UnitAction::Start, "z-new.service"),
            (UnitAction::Restart, "b.service"),
        ]
    );
}

#[test]
fn the_reverse_plan_undoes_every_action() {
    let mut changed = record("b.service");
    changed.restart_on = vec!["/etc/b.conf".into()];
    let before = records(&[record("a-old.service"), changed.clone()]);
    let after = records(&[changed, record("z-new.service")]);
    let forward = plan(
        &after,
        &before,
        &paths(&["/etc/b.conf", "/etc/systemd/system/z-new.service"]),
    );
    let back = forward.reverse();
    assert_eq!(
        lines(&back),
        [
            "daemon-reload (unit files changed)",
            "stop z-new.service (rolling back)",
            "disable z-new.service (rolling back)",
            "enable a-old.service (rolling back)",
            "start a-old.service (rolling back)",
            "restart b.service (rolling back)",
        ]
    );
    assert!(back.transitions["z-new.service"].after.is_none());
    assert!(back.transitions["a-old.service"].before.is_none());
}

#[test]
fn the_plan_serializes_for_dry_runs() {
    let mut a = record("a.service");
    a.restart_on = vec!["/etc/a.conf".into()];
    let all = records(&[a]);
    let plan = plan(&all, &all, &paths(&["/etc/a.conf"]));
    assert_eq!(
        serde_json::to_value(&plan).unwrap(),
        serde_json::json!({
            "daemon_reload": false,
            "actions": [
                { "unit": "a.service", "action": "restart", "reason": "changed", "paths": ["/etc/a.conf"] }
            ]
        })
    );
}

#[test]
fn unit_status_parses_systemctl_show() {
    let status = UnitStatus::parse(
        "Type=simple\nResult=success\nNRestarts=0\nMainPID=124\nLoadState=loaded\n\
         ActiveState=active\nSubState=running\nConditionResult=yes\nUnitFileState=enabled\n",
    );
    assert_eq!(
        status,
        UnitStatus {
            load_state: "loaded".into(),
            active_state: "active".into(),
            sub_state: "running".into(),
            result: "success".into(),
            n_restarts: 0,
            main_pid: 124,
            service_type: "simple".into(),
            condition_result: "yes".into(),
            unit_file_state: "enabled".into(),
        }
    );
    assert_eq!(status.describe(), "active (running)");
    // A timer has no MainPID, Type or Result.
    let timer = UnitStatus::parse("ActiveState=active\nSubState=waiting\n");
    assert_eq!((timer.main_pid, timer.service_type.as_str()), (0, ""));
}

#[test]
fn offline_systemd_starts_nothing_and_checks_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let systemd = Systemd::for_root(dir.path());
    assert!(!systemd.is_live());
    let all = records(&[record("a.service")]);
    let mut started = ServicePlan {
        daemon_reload: true,
        ..ServicePlan::default()
    };
    started.actions.push(ServiceAction {
        unit: "a.service".into(),
        action: UnitAction::Restart,
        reason: Reason::Declared,
    });
    started.transitions.insert(
        "a.service".into(),
        Transition {
            before: all.get("a.service").cloned(),
            after: all.get("a.service").cloned(),
        },
    );
    // No systemctl runs for these: daemon-reload and restart are for a running manager.
    let executed = execute(&started, &systemd).unwrap();
    assert_eq!(executed.done.len(), 1);
    assert_eq!(
        crate::health::gate(&started, &systemd, Duration::from_secs(1)).unwrap(),
        crate::health::Healthy::default()
    );
    // "/" is live only where systemd is PID 1 (sd_booted).
    assert_eq!(
        Systemd::for_root(std::path::Path::new("/")).is_live(),
        std::path::Path::new("/run/systemd/system").is_dir()
    );
}
