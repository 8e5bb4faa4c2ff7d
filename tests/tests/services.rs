//! Services against a real systemd as PID 1: units installed and started, exactly the units whose
//! inputs changed restarted, a unit that does not come up (or fails its probe) rolled back to the
//! previous generation with its journal quoted, removed units stopped, disabled and deleted.
//!
//! Each test boots its own systemd ([`SystemdHost`]) and converges a simulated device whose `root`
//! is that systemd's `/` (`/proc/PID/root`), with the steps and the order `sync` uses: unit files
//! merged into the declared files, file plan, service plan, journaled apply, execute, health gate,
//! and on failure `apply::undo` then `services::revert`.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::Duration;

use shoal_agent::apply;
use shoal_agent::health::{self, HealthFailure, Unhealthy};
use shoal_agent::plan::{self, Manifest, Plan};
use shoal_agent::render::{DesiredFile, DesiredService, DesiredState, HealthCheck};
use shoal_agent::services::{self, ServiceError, ServicePlan, ServiceRecord, Systemd};
use shoal_agent::state::StateDir;
use shoal_e2e::{long_running_unit, require_tool, SystemdHost};

/// `agent.toml`'s `apply.health_timeout` for these devices.
const HEALTH_TIMEOUT: Duration = Duration::from_secs(20);

/// `services`, and `files` (device path, content) as 0644 root:root.
fn desired(services: Vec<DesiredService>, files: &[(&str, &str)]) -> DesiredState {
    let files = files
        .iter()
        .map(|&(path, content)| (path, DesiredFile::new(content, 0o644, "root", "root")));
    DesiredState::from_files(files).with_services(services)
}

/// One device: the guest systemd's `/` as its root, a state dir here, and what its current
/// generation declared (kept in memory: the state database is `sync`'s business).
struct Device<'a> {
    host: &'a SystemdHost,
    state_dir: tempfile::TempDir,
    systemd: Systemd,
    generation: u64,
    next: u64,
    manifest: Manifest,
    services: BTreeMap<String, ServiceRecord>,
}

/// What one converge did.
#[derive(Debug)]
struct Converged {
    files: Plan,
    services: ServicePlan,
}

/// Why a generation was rolled back.
#[derive(Debug)]
enum RolledBack {
    Execute(ServiceError),
    Unhealthy(HealthFailure),
}

impl std::fmt::Display for RolledBack {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            RolledBack::Execute(e) => write!(f, "rolled back: {e}"),
            RolledBack::Unhealthy(e) => write!(f, "rolled back: {e}"),
        }
    }
}

impl<'a> Device<'a> {
    fn new(host: &'a SystemdHost) -> Self {
        Device {
            host,
            state_dir: tempfile::tempdir().expect("state dir"),
            systemd: Systemd::live(host.nsenter()),
            generation: 0,
            next: 1,
            manifest: Manifest::default(),
            services: BTreeMap::new(),
        }
    }

    fn root(&self) -> PathBuf {
        self.host.root()
    }

    /// The steps of one sync from render on, in its order.
    fn converge(&mut self, mut desired: DesiredState) -> Result<Converged, RolledBack> {
        let root = self.root();
        let state = StateDir::open(self.state_dir.path()).expect("lock the state dir");
        let state_dir = state.apply_area();
        services::merge_unit_files(&mut desired).expect("no unit file conflicts");
        let records = services::records(&desired);
        let disk = apply::observe(
            &root,
            state_dir,
            plan::observed_paths(&desired, &self.manifest),
        )
        .expect("observe the guest's files");
        let files = plan::plan(&desired, &self.manifest, &disk);
        let service_plan =
            services::plan(&records, &self.services, &services::changed_paths(&files));
        let to = self.next;
        self.next += 1;
        apply::apply(&files, &desired, &root, state_dir, self.generation, to)
            .expect("apply the files");
        let gate = services::execute(&service_plan, &self.systemd)
            .map_err(RolledBack::Execute)
            .and_then(|_| {
                health::gate(&service_plan, &self.systemd, HEALTH_TIMEOUT)
                    .map_err(RolledBack::Unhealthy)
            });
        if let Err(failure) = gate {
            // Files first, so the units that go back are restarted on the previous files.
            apply::undo(&root, state_dir).expect("undo the files");
            services::revert(&service_plan, &self.systemd)
                .unwrap_or_else(|e| panic!("revert the services: {e}"));
            return Err(failure);
        }
        self.generation = to;
        self.manifest = Manifest::from_desired(&desired);
        self.services = records;
        apply::journal_done(state_dir).expect("finish the transaction");
        Ok(Converged {
            files,
            services: service_plan,
        })
    }

    fn converge_ok(&mut self, desired: DesiredState) -> Converged {
        match self.converge(desired) {
            Ok(converged) => converged,
            Err(failure) => panic!("converge failed: {failure}"),
        }
    }

    fn guest_file(&self, path: &str) -> PathBuf {
        self.root().join(path.trim_start_matches('/'))
    }
}

fn lines(plan: &ServicePlan) -> Vec<String> {
    plan.to_string().lines().map(str::to_owned).collect()
}

fn assert_running(host: &SystemdHost, unit: &str) -> u32 {
    assert_eq!(
        host.show(unit, "ActiveState"),
        "active",
        "{unit}: {}",
        host.systemctl(&["show", "-p", "SubState,Result,NRestarts", unit])
    );
    let pid = host.main_pid(unit);
    assert_ne!(pid, 0, "{unit} has a main process");
    pid
}

fn assert_gone(device: &Device, unit: &str) {
    let host = device.host;
    assert_eq!(
        host.show(unit, "ActiveState"),
        "inactive",
        "{unit} is stopped"
    );
    assert_eq!(
        host.show(unit, "LoadState"),
        "not-found",
        "{unit} has no unit file any more"
    );
    let unit_file = format!("/etc/systemd/system/{unit}");
    assert!(
        !device.guest_file(&unit_file).exists(),
        "{unit_file} is removed"
    );
    let wants = format!("/etc/systemd/system/multi-user.target.wants/{unit}");
    assert!(
        device.guest_file(&wants).symlink_metadata().is_err(),
        "{unit} is disabled ({wants} is gone)"
    );
}

#[test]
fn a_new_service_is_installed_enabled_and_started() {
    let Some(host) = SystemdHost::boot() else {
        return;
    };
    let mut device = Device::new(&host);
    let mut app = DesiredService::new("app.service", long_running_unit("app"));
    app.health = Some(HealthCheck {
        exec: "systemctl is-active --quiet app.service".into(),
        timeout: Duration::from_secs(5),
    });
    let once = DesiredService::new(
        "once.service",
        "[Service]\nType=oneshot\nExecStart=/bin/sh -c 'echo ran > /run/once-ran'\n",
    );
    let converged = device.converge_ok(desired(vec![app, once], &[]));

    assert_eq!(
        lines(&converged.services),
        [
            "daemon-reload (unit files changed)",
            "enable app.service (new)",
            "enable once.service (new)",
            "start app.service (new)",
            "start once.service (new)",
        ]
    );
    assert_running(&host, "app.service");
    assert_eq!(host.show("app.service", "UnitFileState"), "enabled");
    assert_eq!(
        std::fs::read_to_string(device.guest_file("/etc/systemd/system/app.service")).unwrap(),
        long_running_unit("app")
    );
    assert!(
        device
            .guest_file("/etc/systemd/system/multi-user.target.wants/app.service")
            .symlink_metadata()
            .is_ok(),
        "app.service is enabled"
    );
    // A oneshot passes the gate by finishing successfully.
    assert_eq!(host.show("once.service", "Result"), "success");
    assert_eq!(
        std::fs::read_to_string(device.guest_file("/run/once-ran")).unwrap(),
        "ran\n"
    );
}

#[test]
fn a_changed_restart_on_file_restarts_exactly_that_unit() {
    let Some(host) = SystemdHost::boot() else {
        return;
    };
    let mut device = Device::new(&host);
    let generation = |a_conf: &str| {
        let mut a = DesiredService::new("a.service", long_running_unit("a"));
        a.restart_on = vec!["/etc/a.conf".into()];
        let mut b = DesiredService::new("b.service", long_running_unit("b"));
        b.restart_on = vec!["/etc/b.conf".into()];
        desired(
            vec![a, b],
            &[("/etc/a.conf", a_conf), ("/etc/b.conf", "b\n")],
        )
    };
    device.converge_ok(generation("level = 1\n"));
    let (a_before, b_before) = (
        assert_running(&host, "a.service"),
        assert_running(&host, "b.service"),
    );

    let converged = device.converge_ok(generation("level = 2\n"));

    assert_eq!(
        lines(&converged.services),
        ["restart a.service (changed: /etc/a.conf)"]
    );
    let a_after = assert_running(&host, "a.service");
    assert_ne!(a_after, a_before, "a.service restarted (new main PID)");
    assert_eq!(
        assert_running(&host, "b.service"),
        b_before,
        "b.service was left alone"
    );
}

#[test]
fn unchanged_inputs_do_nothing() {
    let Some(host) = SystemdHost::boot() else {
        return;
    };
    let mut device = Device::new(&host);
    let generation = || {
        let mut a = DesiredService::new("a.service", long_running_unit("a"));
        a.restart_on = vec!["/etc/a.conf".into()];
        desired(vec![a], &[("/etc/a.conf", "level = 1\n")])
    };
    device.converge_ok(generation());
    let pid = assert_running(&host, "a.service");
    let started = host.show("a.service", "ActiveEnterTimestampMonotonic");

    let converged = device.converge_ok(generation());

    assert!(converged.files.is_empty(), "{}", converged.files);
    assert!(converged.services.is_empty(), "{}", converged.services);
    assert_eq!(assert_running(&host, "a.service"), pid);
    assert_eq!(
        host.show("a.service", "ActiveEnterTimestampMonotonic"),
        started,
        "a.service was not restarted"
    );
}

#[test]
fn a_unit_that_exits_1_fails_the_gate_and_everything_rolls_back() {
    let Some(host) = SystemdHost::boot() else {
        return;
    };
    let mut device = Device::new(&host);
    let good = long_running_unit("app");
    device.converge_ok(desired(
        vec![DesiredService::new("app.service", good.as_str())],
        &[],
    ));
    let before = assert_running(&host, "app.service");

    let broken =
        "[Service]\nExecStart=/bin/sh -c 'echo boom: cannot read /etc/app.conf >&2; exit 1'\n";
    let newcomer = DesiredService::new("newcomer.service", long_running_unit("newcomer"));
    let failure = match device.converge(desired(
        vec![DesiredService::new("app.service", broken), newcomer],
        &[],
    )) {
        Err(RolledBack::Unhealthy(failure)) => failure,
        other => panic!("expected a health failure, got {other:?}"),
    };

    assert_eq!(failure.unit, "app.service");
    assert!(
        matches!(
            failure.reason,
            Unhealthy::Failed { .. } | Unhealthy::Exited { .. }
        ),
        "{failure}"
    );
    assert!(
        failure
            .journal_tail
            .contains("boom: cannot read /etc/app.conf"),
        "the journal tail quotes the unit's output:\n{}",
        failure.journal_tail
    );
    let message = failure.to_string();
    assert!(
        message.starts_with("app.service is not healthy: it failed after starting")
            && message.contains("last lines of `journalctl -u app.service`:"),
        "{message}"
    );
    // Back at the previous generation: the old unit file, running again; the newcomer gone.
    assert_eq!(
        std::fs::read_to_string(device.guest_file("/etc/systemd/system/app.service")).unwrap(),
        good
    );
    let after = assert_running(&host, "app.service");
    assert_ne!(
        after, before,
        "app.service was restarted on its old unit file"
    );
    assert_eq!(host.show("app.service", "NeedDaemonReload"), "no");
    assert_gone(&device, "newcomer.service");
}

#[test]
fn a_failing_health_probe_rolls_back() {
    let Some(host) = SystemdHost::boot() else {
        return;
    };
    let mut device = Device::new(&host);
    let mut probed = DesiredService::new("probed.service", long_running_unit("probed"));
    probed.health = Some(HealthCheck {
        exec: "test -e /run/probed.ready || { echo probed is not ready >&2; exit 3; }".into(),
        timeout: Duration::from_secs(2),
    });

    let failure = match device.converge(desired(vec![probed], &[])) {
        Err(RolledBack::Unhealthy(failure)) => failure,
        other => panic!("expected a health failure, got {other:?}"),
    };

    assert_eq!(failure.unit, "probed.service");
    match &failure.reason {
        Unhealthy::ProbeFailed {
            exec,
            status,
            output,
        } => {
            assert!(exec.starts_with("test -e /run/probed.ready"));
            assert_eq!(status, "exit status: 3");
            assert_eq!(output, "probed is not ready");
        }
        other => panic!("expected a failed probe, got {other}"),
    }
    assert!(
        failure
            .to_string()
            .contains("probed.service is not healthy: its health check `test -e /run/probed.ready"),
        "{failure}"
    );
    assert_gone(&device, "probed.service");
}

#[test]
fn a_removed_service_is_stopped_disabled_and_deleted() {
    let Some(host) = SystemdHost::boot() else {
        return;
    };
    let mut device = Device::new(&host);
    let all = desired(
        vec![
            DesiredService::new("old.service", long_running_unit("old")),
            DesiredService::new("kept.service", long_running_unit("kept")),
            DesiredService::new("by-hand.service", long_running_unit("by-hand")),
        ],
        &[],
    );
    device.converge_ok(all);
    assert_running(&host, "old.service");
    let kept = assert_running(&host, "kept.service");
    // Stopped and disabled by hand before the repository drops it: nothing is left to stop or
    // disable, which must not fail the generation.
    host.systemctl(&["disable", "--now", "by-hand.service"]);

    let converged = device.converge_ok(desired(
        vec![DesiredService::new(
            "kept.service",
            long_running_unit("kept"),
        )],
        &[],
    ));

    assert_eq!(
        lines(&converged.services),
        [
            "daemon-reload (unit files changed)",
            "stop by-hand.service (no longer declared)",
            "stop old.service (no longer declared)",
            "disable by-hand.service (no longer declared)",
            "disable old.service (no longer declared)",
        ]
    );
    assert_gone(&device, "old.service");
    assert_gone(&device, "by-hand.service");
    assert_eq!(assert_running(&host, "kept.service"), kept);
}

/// A root no systemd runs (an image being prepared): units are enabled with `systemctl --root`,
/// nothing is started.
#[test]
fn an_offline_root_gets_its_units_enabled_only() {
    if !require_tool("systemctl") {
        return;
    }
    let root = tempfile::tempdir().expect("root");
    let mut desired = desired(
        vec![DesiredService::new("app.service", long_running_unit("app"))],
        &[],
    );
    services::merge_unit_files(&mut desired).unwrap();
    let state_dir = tempfile::tempdir().expect("state dir");
    let state = StateDir::open(state_dir.path()).expect("lock the state dir");
    let disk = apply::observe(
        root.path(),
        state.apply_area(),
        plan::observed_paths(&desired, &Manifest::default()),
    )
    .unwrap();
    let files = plan::plan(&desired, &Manifest::default(), &disk);
    apply::apply(&files, &desired, root.path(), state.apply_area(), 0, 1).unwrap();
    let service_plan = services::plan(
        &services::records(&desired),
        &BTreeMap::new(),
        &services::changed_paths(&files),
    );

    let systemd = Systemd::for_root(root.path());
    services::execute(&service_plan, &systemd).unwrap();
    health::gate(&service_plan, &systemd, HEALTH_TIMEOUT).unwrap();

    let wants = root
        .path()
        .join("etc/systemd/system/multi-user.target.wants/app.service");
    assert_eq!(
        std::fs::read_link(&wants).unwrap(),
        Path::new("/etc/systemd/system/app.service")
    );
}
