//! A fleet on one machine: three simulated devices, each a real systemd as PID 1 in its own
//! namespaces with `shoal-agent.service` as shipped, joined by veth to a hub namespace that holds
//! the smart-HTTP git server (over TLS) and the real collector (over TLS). Two devices are
//! `role=gateway`, one `role=sensor`. The scenarios run in order on the same fleet, as an
//! operator's week would, and each checks what the collector's API says against the devices.
//!
//! After the branch scenarios the fleet moves to signed releases (`environment = "production"`):
//! a staging release served at the production ref is refused everywhere, and a release bot that
//! stops re-signing leaves the fleet `stale` until a fresh release arrives; a release with a
//! `[rollout]` goes to its canary while the rest of the fleet reports `pending`. Last, a trust
//! policy in the repository: a change outside its signer's rule is refused by every device, and
//! two of three root holders rotate a compromised key without touching the devices.
//!
//! Syncs are asked for with `systemctl reload shoal-agent` (SIGHUP, what an operator or a push
//! hook would do) instead of waiting out the interval; everything else is the agent on its own.

use std::path::PathBuf;
use std::process::Output;
use std::time::{Duration, Instant};

use serde_json::Value;
use shoal_e2e::{
    agent_bin, long_running_unit, require_tools, write_allowed_signers, Collector, CollectorSpec,
    ConfigRepo, HttpsGitServer, Hub, SigningKey, SystemdHost, TestCa, HUB_IP,
};

const AGENT: &str = "/usr/local/bin/shoal-agent";
const CONFIG: &str = "/etc/shoal/agent.toml";
/// The hub's git server is private: every device fetches with this deploy token (`auth_file`).
const GIT_TOKEN: &str = "fleet-deploy-t0ken-5e2b9c";
const ENROLL_TOKEN: &str = "fleet-enroll-token-0123456789abcdef";
/// Long enough for a sync over the links, a health gate and a report, on a loaded CI machine.
const CONVERGE: Duration = Duration::from_secs(90);

const MANIFEST: &str = r#"version = 1

[[profile]]
name = "base"
match = "*"

  [[profile.file]]
  path = "/etc/fleet/release"
  source = "files/release"

[[profile]]
name = "gateway"
match = { labels = { role = "gateway" } }

  [[profile.file]]
  path = "/etc/gateway/app.conf"
  source = "files/gateway.conf"

  [[profile.service]]
  unit = "gateway-app.service"
  source = "units/gateway-app.service"
  restart_on = ["/etc/gateway/app.conf"]

[[profile]]
name = "sensor"
match = { labels = { role = "sensor" } }

  [[profile.file]]
  path = "/etc/sensor/app.conf"
  source = "files/sensor.conf"

  [[profile.service]]
  unit = "sensor-app.service"
  source = "units/sensor-app.service"
  restart_on = ["/etc/sensor/app.conf"]
"#;

/// A gateway app that cannot start: its health check fails.
const BROKEN_GATEWAY_APP: &str =
    "[Service]\nExecStart=/bin/sh -c 'echo gateway-app: bad listen address in /etc/gateway/app.conf >&2; exit 1'\n";

/// What one commit declares: the contents of the repo's four variable files.
#[derive(Clone)]
struct Release {
    release: &'static str,
    gateway_conf: &'static str,
    sensor_conf: &'static str,
    gateway_unit: String,
}

impl Release {
    fn good(release: &'static str) -> Release {
        Release {
            release,
            gateway_conf: "listen = 10.0.0.1:7000\n",
            sensor_conf: "sample_every = 10s\n",
            gateway_unit: long_running_unit("gateway"),
        }
    }
}

struct FleetDevice {
    id: &'static str,
    role: &'static str,
    /// Its link number on the hub.
    link: u8,
    host: SystemdHost,
}

impl FleetDevice {
    fn here(&self, guest: &str) -> PathBuf {
        self.host.root().join(guest.trim_start_matches('/'))
    }

    fn read(&self, guest: &str) -> String {
        std::fs::read_to_string(self.here(guest)).unwrap_or_else(|e| format!("<{guest}: {e}>"))
    }

    /// `shoal-agent ARGS` inside the device, as an operator on it would run it.
    fn agent(&self, args: &[&str]) -> Output {
        let mut all = vec![AGENT, "--config", CONFIG];
        all.extend_from_slice(args);
        self.host.exec(&all)
    }

    /// `shoal-agent status --json`; it answers even while the daemon's sync holds the state.
    fn status(&self) -> Value {
        let out = self.agent(&["status", "--json"]);
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(
            out.status.success(),
            "{}: status --json failed: {stderr}",
            self.id
        );
        serde_json::from_slice(&out.stdout)
            .unwrap_or_else(|e| panic!("{}: status --json: {e}\n{stderr}", self.id))
    }

    /// Asks the running agent to sync now (SIGHUP through the unit's ExecReload).
    fn sync_now(&self) {
        self.host.systemctl(&["reload", "shoal-agent.service"]);
    }

    fn main_pid(&self, unit: &str) -> u32 {
        self.host.main_pid(unit)
    }

    fn is_active(&self, unit: &str) -> bool {
        self.host
            .exec(&["systemctl", "is-active", "--quiet", unit])
            .status
            .success()
    }

    fn journal(&self) -> String {
        let out = self.host.exec(&[
            "journalctl",
            "--no-pager",
            "-o",
            "cat",
            "-n",
            "60",
            "-u",
            "shoal-agent.service",
        ]);
        String::from_utf8_lossy(&out.stdout).into_owned()
    }
}

struct Fleet {
    work: tempfile::TempDir,
    key: SigningKey,
    repo: ConfigRepo,
    hub: Hub,
    git: HttpsGitServer,
    collector: Option<Collector>,
    collector_listen: String,
    devices: Vec<FleetDevice>,
}

impl Fleet {
    /// The hub with its git server and collector, then three devices joined to it with the
    /// agent installed (not yet started). `None` where this machine cannot (skipped loudly).
    fn build() -> Option<Fleet> {
        if !require_tools(&["git", "ssh-keygen", "curl", "ip", "nsenter", "unshare"]) {
            return None;
        }
        let hub = Hub::create()?;
        let work = tempfile::tempdir().expect("tempdir");
        let key = SigningKey::generate(work.path().join("keys"), "operator");
        let repo = ConfigRepo::init(work.path().join("repo"));
        let srv = work.path().join("srv");
        std::fs::create_dir_all(&srv).expect("srv");
        let ca = TestCa::for_names(&[&HUB_IP.to_string()]);
        let git = HttpsGitServer::start_in_netns(&srv, &hub.netns(), (HUB_IP, 0).into(), ca);
        // As a forge serves a private repository: 401 to any request without the token.
        git.require_bearer(GIT_TOKEN);
        let mut fleet = Fleet {
            work,
            key,
            repo,
            hub,
            git,
            collector: None,
            collector_listen: format!("{HUB_IP}:0"),
            devices: Vec::new(),
        };
        fleet.start_collector();

        for (link, (id, role)) in [
            ("gw-1", "gateway"),
            ("gw-2", "gateway"),
            ("sensor-1", "sensor"),
        ]
        .into_iter()
        .enumerate()
        {
            let host = SystemdHost::boot()?;
            let link = link as u8 + 1;
            fleet.hub.attach(&host, link);
            let device = FleetDevice {
                id,
                role,
                link,
                host,
            };
            fleet.install(&device);
            fleet.devices.push(device);
        }
        Some(fleet)
    }

    fn start_collector(&mut self) {
        let spec = CollectorSpec {
            data: self.work.path().join("collector-data"),
            enroll_token_file: self.work.path().join("enroll-tokens"),
            listen: self.collector_listen.clone(),
            tls: Some(self.git.ca()),
            hub: Some(&self.hub),
        };
        std::fs::write(&spec.enroll_token_file, format!("{ENROLL_TOKEN}\n")).expect("tokens");
        let collector = spec.start();
        // Restarted later on the same address, as a real collector behind a fixed URL.
        self.collector_listen = collector.listen();
        self.collector = Some(collector);
    }

    fn stop_collector(&mut self) {
        self.collector
            .take()
            .expect("the collector is running")
            .kill();
    }

    fn collector(&self) -> &Collector {
        self.collector.as_ref().expect("the collector is running")
    }

    /// Installs the agent as an operator would: the static binary, `/etc/shoal`, the shipped
    /// unit (restarting after 1 s instead of 10 s, to keep the test short).
    fn install(&self, device: &FleetDevice) {
        std::fs::copy(agent_bin(), device.here(AGENT)).expect("install the agent");
        std::fs::create_dir_all(device.here("/etc/shoal")).expect("/etc/shoal");
        write_allowed_signers(
            device.here("/etc/shoal/allowed_signers"),
            &[("operator@example", &self.key)],
        );
        std::fs::copy(self.git.ca_pem_path(), device.here("/etc/shoal/ca.pem")).expect("ca");
        std::fs::write(device.here("/etc/shoal/enroll-token"), ENROLL_TOKEN).expect("token");
        // The deploy token, readable by the agent (root) only, as README's private-repo setup says.
        let auth = device.here("/etc/shoal/git-auth.toml");
        std::fs::write(&auth, format!("token = \"{GIT_TOKEN}\"\n")).expect("git-auth.toml");
        std::fs::set_permissions(&auth, std::os::unix::fs::PermissionsExt::from_mode(0o600))
            .expect("chmod git-auth.toml");
        let config = format!(
            r#"device_id = "{id}"
state_dir = "/var/lib/shoal"
root = "/"
labels = {{ role = "{role}" }}

[source]
url = "{git}"
ref = "refs/heads/main"
interval = "1h"
ca_file = "/etc/shoal/ca.pem"
auth_file = "/etc/shoal/git-auth.toml"
timeout = "5s"
retries = 1

[trust]
allowed_signers = "/etc/shoal/allowed_signers"
verify = "range"

[collector]
url = "{collector}"
ca_file = "/etc/shoal/ca.pem"
enroll_token_file = "/etc/shoal/enroll-token"

[apply]
health_timeout = "5s"
"#,
            id = device.id,
            role = device.role,
            git = self.git.url("config.git"),
            collector = self.collector().url(),
        );
        std::fs::write(device.here(CONFIG), config).expect("agent.toml");
        let unit = std::fs::read_to_string(
            std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../systemd/shoal-agent.service"),
        )
        .expect("systemd/shoal-agent.service")
        .replace("RestartSec=10s", "RestartSec=1s");
        std::fs::write(device.here("/etc/systemd/system/shoal-agent.service"), unit)
            .expect("install the unit");
        device.host.systemctl(&["daemon-reload"]);
    }

    /// Commits `release` signed (or not) and publishes it to the git server's branch.
    fn push(&self, release: &Release, message: &str, signed: bool) -> String {
        self.push_manifest(release, message, signed, MANIFEST)
    }

    /// [`push`](Self::push), signed, with `extra` (a `[rollout]`) appended to the manifest.
    fn push_with(&self, release: &Release, message: &str, extra: &str) -> String {
        self.push_manifest(release, message, true, &format!("{MANIFEST}{extra}"))
    }

    fn push_manifest(
        &self,
        release: &Release,
        message: &str,
        signed: bool,
        manifest: &str,
    ) -> String {
        self.repo.write("shoal.toml", manifest);
        self.repo.write("files/release", release.release);
        self.repo.write("files/gateway.conf", release.gateway_conf);
        self.repo.write("files/sensor.conf", release.sensor_conf);
        self.repo
            .write("units/gateway-app.service", &release.gateway_unit);
        self.repo
            .write("units/sensor-app.service", long_running_unit("sensor"));
        let id = if signed {
            self.repo.commit_signed(&self.key, message)
        } else {
            self.repo.commit_unsigned(message)
        };
        self.repo
            .publish_to(self.work.path().join("srv/config.git"));
        id
    }

    fn device(&self, id: &str) -> &FleetDevice {
        self.devices
            .iter()
            .find(|d| d.id == id)
            .unwrap_or_else(|| panic!("no device {id}"))
    }

    fn gateways(&self) -> impl Iterator<Item = &FleetDevice> {
        self.devices.iter().filter(|d| d.role == "gateway")
    }

    fn sync_all(&self) {
        for device in &self.devices {
            device.sync_now();
        }
    }

    /// The collector's view of one device (null if it has never reported).
    fn seen(&self, id: &str) -> Value {
        self.collector()
            .try_get(&format!("/api/v1/devices/{id}"))
            .unwrap_or(Value::Null)
    }

    /// Waits until the collector shows each of `devices` with `status` at `commit`; on timeout,
    /// panics with what the collector and each device's agent said.
    fn wait_for(&self, devices: &[&str], status: &str, commit: &str) {
        self.wait_until(devices, &format!("{status} at {commit}"), |seen| {
            seen["status"] == status && seen["commit"] == commit
        });
    }

    /// Waits until the collector shows each of `devices` with `status` at `commit`, under the
    /// release `environment/number`.
    fn wait_for_release(&self, devices: &[&str], status: &str, commit: &str, release: &str) {
        let (environment, number) = release.split_once('/').expect("ENV/N");
        let number: u64 = number.parse().expect("N");
        self.wait_until(
            devices,
            &format!("{status} at {commit} under release {release}"),
            |seen| {
                seen["status"] == status
                    && seen["commit"] == commit
                    && seen["release"]["environment"] == environment
                    && seen["release"]["number"] == number
            },
        );
    }

    /// Waits until the collector's view of each of `devices` (`what`) satisfies `shows`; on
    /// timeout, panics with what the collector and each device's agent said.
    fn wait_until(&self, devices: &[&str], what: &str, shows: impl Fn(&Value) -> bool) {
        let deadline = Instant::now() + CONVERGE;
        loop {
            let pending: Vec<String> = devices
                .iter()
                .filter_map(|id| {
                    let seen = self.seen(id);
                    (!shows(&seen)).then(|| format!("{id}: {seen}"))
                })
                .collect();
            if pending.is_empty() {
                return;
            }
            if Instant::now() > deadline {
                panic!(
                    "after {CONVERGE:?} the collector does not show {devices:?} {what}:\n{}\n\n{}",
                    pending.join("\n"),
                    self.diagnostics()
                );
            }
            std::thread::sleep(Duration::from_millis(200));
        }
    }

    /// Moves `device` from the branch to the signed releases of `environment` (what an operator
    /// does once a release bot exists) and restarts its agent, which syncs at start.
    fn follow_environment(&self, device: &FleetDevice, environment: &str) {
        let config = device.read(CONFIG);
        let branch = "ref = \"refs/heads/main\"\n";
        assert!(config.contains(branch), "{}: {config}", device.id);
        let config = config.replace(branch, &format!("environment = \"{environment}\"\n"));
        std::fs::write(device.here(CONFIG), config).expect("agent.toml");
        device.host.systemctl(&["restart", "shoal-agent.service"]);
    }

    /// Signs the release tag `name` (`ENV/N`) of `commit`, expiring at `expires` (unix seconds),
    /// and serves it at `refs/shoal/releases/SERVED_AS`, as a release bot (or a hostile mirror)
    /// would. Returns the tag's id.
    fn release(&self, name: &str, commit: &str, expires: i64, served_as: &str) -> String {
        let message = format!(
            "Release {name}\n\nExpires: {}",
            shoal_core::release::format_rfc3339_utc(expires)
        );
        let tag = self
            .repo
            .tag_signed(&self.key, name, commit, &message, None);
        self.repo.publish_ref(
            self.work.path().join("srv/config.git"),
            &tag,
            &format!("refs/shoal/releases/{served_as}"),
        );
        tag
    }

    fn diagnostics(&self) -> String {
        let mut text = String::new();
        for device in &self.devices {
            text.push_str(&format!(
                "--- {} agent journal ---\n{}\n--- {} status ---\n{}\n",
                device.id,
                device.journal(),
                device.id,
                String::from_utf8_lossy(&device.agent(&["status"]).stderr)
            ));
        }
        text
    }

    /// The reports the collector holds for `id`, oldest first.
    fn history(&self, id: &str) -> Vec<Value> {
        let history = self
            .collector()
            .get(&format!("/api/v1/devices/{id}/history"));
        // Entries are `{received_at, report}`; the reports are what the devices sent.
        let mut reports: Vec<Value> = history["history"]
            .as_array()
            .unwrap_or_else(|| panic!("no history array: {history}"))
            .iter()
            .map(|entry| entry["report"].clone())
            .collect();
        reports.sort_by_key(|r| r["sequence"].as_u64());
        reports
    }
}

fn assert_no_report_twice(fleet: &Fleet, id: &str) {
    let sequences: Vec<u64> = fleet
        .history(id)
        .iter()
        .map(|r| r["sequence"].as_u64().expect("sequence"))
        .collect();
    let mut unique = sequences.clone();
    unique.dedup();
    assert_eq!(sequences, unique, "{id}: a report was counted twice");
}

#[test]
fn a_fleet_of_three_converges_refuses_rolls_back_and_catches_up() {
    let Some(mut fleet) = Fleet::build() else {
        return;
    };
    let all = ["gw-1", "gw-2", "sensor-1"];
    let gateways = ["gw-1", "gw-2"];

    // 1. The first signed commit converges all three; the collector shows 3 converged at it.
    let c1 = fleet.push(&Release::good("1\n"), "first release", true);
    for device in &fleet.devices {
        device
            .host
            .systemctl(&["enable", "--now", "shoal-agent.service"]);
    }
    fleet.wait_for(&all, "converged", &c1);
    let summary = fleet.collector().get("/api/v1/summary");
    assert_eq!(summary["total"], 3, "{summary}");
    assert_eq!(summary["by_status"]["converged"], 3, "{summary}");
    assert_eq!(summary["by_commit"][&c1], 3, "{summary}");
    // Each report says how long the steps of the sync behind it took.
    for id in all {
        let timings = &fleet.seen(id)["timings"];
        for step in [
            "fetch_ms",
            "verify_ms",
            "render_ms",
            "apply_ms",
            "health_ms",
        ] {
            assert!(timings[step].is_u64(), "{id}: no {step} in {timings}");
        }
    }
    for device in &fleet.devices {
        assert_eq!(device.read("/etc/fleet/release"), "1\n", "{}", device.id);
        let (own, other) = match device.role {
            "gateway" => ("gateway-app.service", "/etc/sensor/app.conf"),
            _ => ("sensor-app.service", "/etc/gateway/app.conf"),
        };
        assert!(device.is_active(own), "{}: {own} is not running", device.id);
        assert!(!device.here(other).exists(), "{}: has {other}", device.id);
    }

    // 2. A commit that changes only the gateways' profile restarts their app, and only theirs.
    let before: Vec<u32> = fleet
        .gateways()
        .map(|d| d.main_pid("gateway-app.service"))
        .collect();
    let sensor_pid = fleet.device("sensor-1").main_pid("sensor-app.service");
    let mut r2 = Release::good("1\n");
    r2.gateway_conf = "listen = 10.0.0.1:7001\n";
    let c2 = fleet.push(&r2, "gateways listen on 7001", true);
    fleet.sync_all();
    fleet.wait_for(&all, "converged", &c2);
    for (device, old) in fleet.gateways().zip(&before) {
        let new = device.main_pid("gateway-app.service");
        assert!(
            new != 0 && new != *old,
            "{}: gateway-app not restarted ({old} → {new})",
            device.id
        );
        assert_eq!(device.read("/etc/gateway/app.conf"), r2.gateway_conf);
    }
    assert_eq!(
        fleet.device("sensor-1").main_pid("sensor-app.service"),
        sensor_pid,
        "the sensor's app must not be restarted by a gateway-only change"
    );

    // 3. An unsigned commit on the branch: all three refuse it, keep running, report `refused`.
    let agent_pids: Vec<u32> = fleet
        .devices
        .iter()
        .map(|d| d.main_pid("shoal-agent.service"))
        .collect();
    let mut r3 = r2.clone();
    r3.release = "3 (unsigned)\n";
    let unsigned = fleet.push(&r3, "unsigned change", false);
    fleet.sync_all();
    fleet.wait_for(&all, "refused", &c2);
    for (device, pid) in fleet.devices.iter().zip(&agent_pids) {
        assert_eq!(
            device.main_pid("shoal-agent.service"),
            *pid,
            "{}: the agent restarted",
            device.id
        );
        assert_eq!(
            device.read("/etc/fleet/release"),
            "1\n",
            "{}: the unsigned commit's file was written",
            device.id
        );
        let seen = fleet.seen(device.id);
        let errors = seen["errors"].to_string();
        assert!(
            errors.contains(&unsigned[..12]) || errors.contains("sign"),
            "{}: {seen}",
            device.id
        );
    }
    // The operator takes the unsigned commit off the branch (a force-push).
    fleet.repo.reset_hard(&c2);

    // 4. A commit whose gateway service fails its health check: the gateways roll back on
    //    their own and report `rolled_back`; the sensor, which does not run it, converges.
    let mut r4 = r2.clone();
    r4.release = "4\n";
    r4.gateway_unit = BROKEN_GATEWAY_APP.to_owned();
    r4.sensor_conf = "sample_every = 5s\n";
    let c4 = fleet.push(&r4, "new gateway build, faster sampling", true);
    fleet.sync_all();
    fleet.wait_for(&["sensor-1"], "converged", &c4);
    fleet.wait_for(&gateways, "rolled_back", &c2);
    for device in fleet.gateways() {
        assert_eq!(
            device.read("/etc/fleet/release"),
            "1\n",
            "{}: not rolled back",
            device.id
        );
        assert!(
            device.is_active("gateway-app.service"),
            "{}: the old gateway app is not back",
            device.id
        );
    }
    assert_eq!(
        fleet.device("sensor-1").read("/etc/sensor/app.conf"),
        r4.sensor_conf
    );

    // 5. The collector is down while a fixed commit rolls out; started again, it receives every
    //    report the devices queued, none twice.
    fleet.stop_collector();
    let mut r5 = r2.clone();
    r5.release = "5\n";
    let c5 = fleet.push(&r5, "gateway build fixed", true);
    fleet.sync_all();
    for device in &fleet.devices {
        let deadline = Instant::now() + CONVERGE;
        while device.status()["applied_commit"] != c5.as_str()
            || device.status()["queued_reports"] == 0
        {
            assert!(
                Instant::now() < deadline,
                "{}: did not converge offline:\n{}",
                device.id,
                fleet.diagnostics()
            );
            std::thread::sleep(Duration::from_millis(200));
        }
    }
    fleet.start_collector();
    fleet.sync_all();
    fleet.wait_for(&all, "converged", &c5);
    for device in &fleet.devices {
        let deadline = Instant::now() + CONVERGE;
        while device.status()["queued_reports"] != 0 {
            assert!(
                Instant::now() < deadline,
                "{}: outbox not drained",
                device.id
            );
            std::thread::sleep(Duration::from_millis(200));
        }
        assert_no_report_twice(&fleet, device.id);
        let history = fleet.history(device.id);
        assert!(
            history
                .iter()
                .any(|r| r["commit"] == c5.as_str() && r["status"] == "converged"),
            "{}: the report queued while the collector was down did not arrive: {history:?}",
            device.id
        );
    }

    // 6. `shoal-agent rollback` on one device: the collector shows it held at the older
    //    generation; `resume` brings it back to the branch.
    let sensor = fleet.device("sensor-1");
    let generation = fleet.seen("sensor-1")["generation"]
        .as_u64()
        .expect("generation");
    let out = sensor.agent(&["rollback"]);
    assert!(
        out.status.success(),
        "rollback: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let deadline = Instant::now() + CONVERGE;
    loop {
        let seen = fleet.seen("sensor-1");
        if seen["status"] == "held" {
            assert!(seen["generation"].as_u64() < Some(generation), "{seen}");
            assert_eq!(
                seen["commit"],
                c4.as_str(),
                "held at the generation before: {seen}"
            );
            break;
        }
        assert!(
            Instant::now() < deadline,
            "the collector never showed sensor-1 held: {seen}"
        );
        std::thread::sleep(Duration::from_millis(200));
    }
    assert_eq!(sensor.read("/etc/fleet/release"), "4\n");
    let out = sensor.agent(&["resume"]);
    assert!(
        out.status.success(),
        "resume: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    sensor.sync_now();
    fleet.wait_for(&["sensor-1"], "converged", &c5);
    assert!(fleet.seen("sensor-1")["generation"].as_u64() > Some(generation));
    assert_eq!(sensor.read("/etc/fleet/release"), "5\n");

    // 7. One device's link is cut for a sync; it misses the commit, then catches up.
    let cut = fleet.device("gw-2");
    fleet.hub.set_link(cut.link, false);
    let mut r7 = r2.clone();
    r7.release = "7\n";
    let c7 = fleet.push(&r7, "release 7", true);
    fleet.sync_all();
    fleet.wait_for(&["gw-1", "sensor-1"], "converged", &c7);
    // Its last sync (scenario 6 left every device converged) now records the failure.
    let deadline = Instant::now() + CONVERGE;
    loop {
        let status = cut.status();
        if status["last_result"]["status"] != "converged" {
            assert_eq!(status["last_result"]["status"], "failed", "{status}");
            break;
        }
        assert!(
            Instant::now() < deadline,
            "gw-2 never tried to sync:\n{}",
            cut.journal()
        );
        std::thread::sleep(Duration::from_millis(200));
    }
    assert_eq!(
        fleet.seen("gw-2")["commit"],
        c5.as_str(),
        "gw-2 cannot have reported c7"
    );
    assert_eq!(cut.read("/etc/fleet/release"), "5\n");
    fleet.hub.set_link(cut.link, true);
    cut.sync_now();
    fleet.wait_for(&["gw-2"], "converged", &c7);
    assert_eq!(cut.read("/etc/fleet/release"), "7\n");
    // The failure it recorded while cut off was queued, and arrives before the catch-up.
    let history = fleet.history("gw-2");
    let failed = history.iter().rposition(|r| r["status"] == "failed");
    let caught_up = history
        .iter()
        .position(|r| r["status"] == "converged" && r["commit"] == c7.as_str());
    assert!(
        matches!((failed, caught_up), (Some(f), Some(c)) if f < c),
        "gw-2's history lacks the failure then the catch-up: {history:?}"
    );
    for id in all {
        assert_no_report_twice(&fleet, id);
    }
    let summary = fleet.collector().get("/api/v1/summary");
    assert_eq!(summary["by_commit"][&c7], 3, "{summary}");

    // 8. The operator moves the fleet to signed releases (`environment = "production"`): the
    //    release bot releases c7 as production/1; every device takes it without a new
    //    generation, and the collector shows the release beside the commit.
    let generations: Vec<u64> = all
        .iter()
        .map(|id| fleet.seen(id)["generation"].as_u64().expect("generation"))
        .collect();
    let far = unix_now() + 365 * 86_400;
    fleet.release("production/1", &c7, far, "production");
    for device in &fleet.devices {
        fleet.follow_environment(device, "production");
    }
    fleet.wait_for_release(&all, "converged", &c7, "production/1");
    for (id, generation) in all.iter().zip(&generations) {
        assert_eq!(
            fleet.seen(id)["generation"].as_u64(),
            Some(*generation),
            "{id}: a release of the applied commit applies nothing"
        );
    }

    // 9. The hub's git server serves a staging release (signed by the same trusted key, built
    //    on the applied commit) at the production release ref: every device refuses it, keeps
    //    its files and reports `refused` with the reason.
    let mut r9 = r7.clone();
    r9.release = "9 (staging)\n";
    let staging = fleet.push(&r9, "staging: release 9", true);
    fleet.release("staging/4", &staging, far, "production");
    fleet.sync_all();
    fleet.wait_for_release(&all, "refused", &c7, "production/1");
    for device in &fleet.devices {
        assert_eq!(device.read("/etc/fleet/release"), "7\n", "{}", device.id);
        let seen = fleet.seen(device.id);
        let errors = seen["errors"].to_string();
        assert!(
            errors.contains("the release is staging/4, for environment `staging`, but this device follows `production`"),
            "{}: {seen}",
            device.id
        );
    }

    // 10. The release bot promotes it as production/2, expiring in a minute, then stops
    //     re-signing: the devices converge, then report `stale` once it expires (their files
    //     stay), and converge again on a fresh release of the same commit without applying.
    let expires = unix_now() + 60;
    fleet.release("production/2", &staging, expires, "production");
    fleet.sync_all();
    fleet.wait_for_release(&all, "converged", &staging, "production/2");
    let generations: Vec<u64> = all
        .iter()
        .map(|id| fleet.seen(id)["generation"].as_u64().expect("generation"))
        .collect();
    while unix_now() <= expires {
        std::thread::sleep(Duration::from_millis(500));
    }
    fleet.sync_all();
    fleet.wait_for_release(&all, "stale", &staging, "production/2");
    let summary = fleet.collector().get("/api/v1/summary");
    assert_eq!(summary["by_status"]["stale"], 3, "{summary}");
    let listed = fleet.collector().get("/api/v1/devices?status=stale");
    assert_eq!(
        listed["devices"].as_array().map(Vec::len),
        Some(3),
        "{listed}"
    );
    for device in &fleet.devices {
        assert_eq!(device.read("/etc/fleet/release"), "9 (staging)\n");
        let message = fleet.seen(device.id)["errors"][0]["message"].to_string();
        assert!(
            message.contains(&format!(
                "release production/2 expired at {}",
                shoal_core::release::format_rfc3339_utc(expires)
            )),
            "{}: {message}",
            device.id
        );
    }
    fleet.release("production/3", &staging, far, "production");
    fleet.sync_all();
    fleet.wait_for_release(&all, "converged", &staging, "production/3");
    for (id, generation) in all.iter().zip(&generations) {
        assert_eq!(
            fleet.seen(id)["generation"].as_u64(),
            Some(*generation),
            "{id}: a re-signed release of the applied commit applies nothing"
        );
        assert_no_report_twice(&fleet, id);
    }
    assert_eq!(
        fleet.collector().get("/api/v1/summary")["by_status"]["stale"],
        0
    );

    // 11. A release whose `[rollout]` makes gw-1 the canary and everyone else wait an hour:
    //     gw-1 applies it, the others verify it, apply nothing and report `pending` with their
    //     wave; the operator, content with the canary, releases the next commit without waves
    //     and the whole fleet takes it.
    let mut r11 = r9.clone();
    r11.release = "11 (canary)\n";
    let c11 = fleet.push_with(
        &r11,
        "release 11, canary first",
        "\n[rollout]\nwaves = [ { name = \"canary\", match = { devices = [\"gw-1\"] } },\n          { name = \"everyone\", percent = 100, after = \"1h\" } ]\n",
    );
    fleet.release("production/4", &c11, far, "production");
    fleet.sync_all();
    fleet.wait_for_release(&["gw-1"], "converged", &c11, "production/4");
    fleet.wait_until(&["gw-2", "sensor-1"], "pending on release 11", |seen| {
        seen["status"] == "pending" && seen["pending"]["commit"] == c11.as_str()
    });
    for id in ["gw-2", "sensor-1"] {
        let seen = fleet.seen(id);
        assert_eq!(seen["commit"], staging.as_str(), "{id}: {seen}");
        assert_eq!(seen["pending"]["wave"], "everyone", "{id}: {seen}");
        assert_eq!(fleet.device(id).read("/etc/fleet/release"), "9 (staging)\n");
    }
    assert_eq!(
        fleet.device("gw-1").read("/etc/fleet/release"),
        "11 (canary)\n"
    );
    let summary = fleet.collector().get("/api/v1/summary");
    assert_eq!(summary["by_status"]["pending"], 2, "{summary}");
    let mut r12 = r11.clone();
    r12.release = "12\n";
    let c12 = fleet.push(&r12, "release 12, everyone", true);
    fleet.release("production/5", &c12, far, "production");
    fleet.sync_all();
    fleet.wait_for_release(&all, "converged", &c12, "production/5");
    for device in &fleet.devices {
        assert_eq!(device.read("/etc/fleet/release"), "12\n", "{}", device.id);
    }
    assert_eq!(
        fleet.collector().get("/api/v1/summary")["by_status"]["pending"],
        0
    );

    // 12. The operator puts a trust policy in the repository (signed with the operator key, the
    //     devices' bootstrap root): alice, bob and carol are root (2 of 3), the operator
    //     releases production, anyone of the four may change files and units, and only the
    //     sensor lead (with alice) may change the sensor's config. The devices take it with no
    //     change to their own files.
    let keys = fleet.work.path().join("keys");
    let (alice, bob, carol, carol2, sensor_lead) = (
        SigningKey::generate(&keys, "alice"),
        SigningKey::generate(&keys, "bob"),
        SigningKey::generate(&keys, "carol"),
        SigningKey::generate(&keys, "carol-new"),
        SigningKey::generate(&keys, "sensor-lead"),
    );
    let policy = |carol: &SigningKey| {
        format!(
            "version = 1\n[principals]\noperator = \"{}\"\nalice = \"{}\"\nbob = \"{}\"\ncarol = \"{}\"\nsensor-lead = \"{}\"\n[root]\nprincipals = [\"alice\", \"bob\", \"carol\"]\nthreshold = 2\n[[environment]]\nname = \"production\"\nrelease = [\"operator\"]\n[[rule]]\nname = \"sensor\"\npaths = [\"files/sensor.conf\"]\nprincipals = [\"sensor-lead\", \"alice\"]\nthreshold = 1\n[[rule]]\nname = \"ops\"\npaths = [\"files/**\", \"units/**\", \"shoal.toml\"]\nprincipals = [\"operator\", \"alice\", \"bob\", \"carol\"]\nthreshold = 1\n",
            fleet.key.public_line(),
            alice.public_line(),
            bob.public_line(),
            carol.public_line(),
            sensor_lead.public_line()
        )
    };
    let publish = || {
        fleet
            .repo
            .publish_to(fleet.work.path().join("srv/config.git"))
    };
    fleet.repo.write(".shoal/policy.toml", policy(&carol));
    let c12 = fleet.repo.commit_signed(&fleet.key, "a trust policy");
    publish();
    fleet.release("production/6", &c12, far, "production");
    fleet.sync_all();
    fleet.wait_for_release(&all, "converged", &c12, "production/6");

    // 13. The sensor lead changes the gateways' config, outside the sensor rule: every device
    //     refuses the release of it, names the rule it broke, and keeps its files.
    fleet
        .repo
        .write("files/gateway.conf", "listen = 0.0.0.0:7000\n");
    let c13 = fleet
        .repo
        .commit_signed(&sensor_lead, "sensor lead edits the gateways");
    publish();
    fleet.release("production/7", &c13, far, "production");
    fleet.sync_all();
    fleet.wait_for_release(&all, "refused", &c12, "production/6");
    for device in &fleet.devices {
        let errors = fleet.seen(device.id)["errors"].to_string();
        assert!(
            errors.contains(&format!(
                "commit {c13} signed by sensor-lead changes `files/gateway.conf`"
            )),
            "{}: {errors}",
            device.id
        );
    }
    assert_eq!(
        fleet.device("gw-1").read("/etc/gateway/app.conf"),
        r2.gateway_conf
    );
    fleet.repo.reset_hard(&c12);
    publish();

    // 14. Carol's key is compromised: alice and bob (2 of 3 roots) replace it in the policy; the
    //     devices follow without any change to their files, and the old key's next commit is
    //     refused everywhere.
    fleet.repo.write(".shoal/policy.toml", policy(&carol2));
    let c14 = fleet.repo.commit_signed(&alice, "rotate carol's key");
    fleet.repo.tag_signed(
        &bob,
        &format!("shoal-approve/{c14}/bob"),
        &c14,
        &format!("approve {c14}"),
        None,
    );
    publish();
    fleet.release("production/8", &c14, far, "production");
    fleet.sync_all();
    fleet.wait_for_release(&all, "converged", &c14, "production/8");
    fleet.repo.write("files/release", "15 (old key)\n");
    let c15 = fleet
        .repo
        .commit_signed(&carol, "signed with the revoked key");
    publish();
    fleet.release("production/9", &c15, far, "production");
    fleet.sync_all();
    fleet.wait_for_release(&all, "refused", &c14, "production/8");
    for device in &fleet.devices {
        let errors = fleet.seen(device.id)["errors"].to_string();
        assert!(
            errors.contains(&format!(
                "commit {c15}: signed by key {} which is not in the trust policy",
                carol.fingerprint()
            )),
            "{}: {errors}",
            device.id
        );
        assert_eq!(device.read("/etc/fleet/release"), "12\n", "{}", device.id);
    }
    for id in all {
        assert_no_report_twice(&fleet, id);
    }
}

fn unix_now() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .expect("the clock is after 1970")
        .as_secs() as i64
}
