//! Issue 15, end to end: twenty lightweight devices roll out through waves against one git
//! server and one real collector that halts a bad rollout by itself.
//!
//! Each device is the real `shoal-agent run` daemon (no systemd: its own sandbox root and state
//! dir, a 1 s interval), pulling one `git daemon` and reporting to one `shoal-collector serve`
//! started with `--halt-failed-ratio 0.5 --halt-min-devices 3`, whose key every device pins in
//! `[collector] key`. Waves are seconds long: `canary` (3 devices, by label) at once, `early`
//! (40 % of the rest by bucket) after 10 s, `all` after 20 s (25 s and 40 s for the fix).
//!
//! 1. A commit that fails on every device (it writes under `/opt/app`, a regular file on each
//!    device): the canaries try it and fail, the collector halts it on its own, and no device of a
//!    later wave ever applies or even tries it: they report `halted` once their wave opens.
//! 2. A fixed commit then rolls through all waves in order: every canary applies before any
//!    device of `early`, every device of `early` before any of `all`, none before its wave
//!    opened; the collector's rollout view shows the devices by wave and status.

use std::collections::BTreeMap;
use std::os::unix::net::UnixDatagram;
use std::path::{Path, PathBuf};
use std::process::{Child, Stdio};
use std::time::{Duration, Instant};

use serde_json::Value;
use shoal_e2e::{notify_socket, require_tools, run_daemon, CollectorSpec, Device, Sandbox};
use shoal_testkit::{Collector, HEADLESS_CHROMIUM_FLAGS};

const DEVICES: usize = 20;
const CANARIES: usize = 3;
const ADMIN_TOKEN: &str = "admin-token-0123456789abcdef";

const MANIFEST: &str = r#"version = 1

[[profile]]
name = "base"
match = "*"

  [[profile.file]]
  path = "/etc/motd"
  source = "files/motd"
"#;

/// The bad change: a file under `/opt/app`, which is a regular file on every device.
const BAD_PROFILE: &str = r#"
[[profile]]
name = "app"
match = "*"

  [[profile.file]]
  path = "/opt/app/app.conf"
  source = "files/app.conf"
"#;

/// `[rollout]`: the canaries at once, 40 % of the rest after `early`, all after `all`.
fn waves(early: &str, all: &str) -> String {
    format!(
        r#"
[rollout]
waves = [ {{ name = "canary", match = {{ labels = {{ ring = "canary" }} }} }},
          {{ name = "early",  percent = 40,  after = "{early}" }},
          {{ name = "all",    percent = 100, after = "{all}" }} ]
"#
    )
}

/// Twenty daemons, killed when the test ends (also when it fails).
struct Fleet {
    s: Sandbox,
    devices: Vec<(String, Device)>,
    daemons: Vec<Child>,
    /// The daemons' notify sockets (their readiness is not under test; the sockets must exist).
    sockets: Vec<UnixDatagram>,
    collector: Collector,
}

impl Drop for Fleet {
    fn drop(&mut self) {
        for daemon in &mut self.daemons {
            let _ = daemon.kill();
            let _ = daemon.wait();
        }
    }
}

fn name(i: usize) -> String {
    format!("d{i:02}")
}

impl Fleet {
    fn start() -> Option<Fleet> {
        if !require_tools(&["curl"]) {
            return None;
        }
        let s = Sandbox::over_git_daemon()?;
        let dir = s.dir.path().to_path_buf();
        let enroll = dir.join("enroll-token");
        std::fs::write(&enroll, "enroll-token-0123456789abcdef\n").expect("token");
        let admin = dir.join("admin-token");
        std::fs::write(&admin, format!("{ADMIN_TOKEN}\n")).expect("token");
        let collector = CollectorSpec::local(dir.join("collector-data"), enroll.clone())
            .start_with_args(&[
                "--admin-token-file",
                &admin.display().to_string(),
                "--halt-failed-ratio",
                "0.5",
                "--halt-min-devices",
                "3",
            ]);
        let key = collector.get("/api/v1/collector")["key"]
            .as_str()
            .expect("the collector's key")
            .to_owned();

        let mut devices = Vec::new();
        let mut daemons = Vec::new();
        let mut sockets = Vec::new();
        for i in 1..=DEVICES {
            let id = name(i);
            let device = s.another_device(&id);
            let ring = if i <= CANARIES { "canary" } else { "main" };
            let config = std::fs::read_to_string(device.config_path()).expect("agent.toml");
            let config = config
                .replacen("device_id = \"dev-1\"", &format!("device_id = \"{id}\""), 1)
                .replacen(
                    "labels = { role = \"gateway\" }",
                    &format!("labels = {{ role = \"gateway\", ring = \"{ring}\" }}"),
                    1,
                )
                .replacen("interval = \"60s\"", "interval = \"1s\"", 1);
            std::fs::write(device.config_path(), config).expect("agent.toml");
            device.report_to(collector.url(), &enroll);
            let config = std::fs::read_to_string(device.config_path()).expect("agent.toml");
            std::fs::write(device.config_path(), format!("{config}key = \"{key}\"\n"))
                .expect("agent.toml");
            // What makes the bad commit fail: its file's parent is a regular file here.
            let opt = dir.join(&id).join("root/opt");
            std::fs::create_dir_all(&opt).expect("mkdir opt");
            std::fs::write(opt.join("app"), "not a directory\n").expect("opt/app");
            devices.push((id, device));
        }
        let mut fleet = Fleet {
            s,
            devices,
            daemons: Vec::new(),
            sockets: Vec::new(),
            collector,
        };
        for (id, device) in &fleet.devices {
            let dir = fleet.s.dir.path().join(id);
            let (socket, listener) = notify_socket(&dir);
            let log = std::fs::File::create(dir.join("daemon.log")).expect("daemon log");
            daemons.push(run_daemon(&device.config_path(), &socket, Stdio::from(log)));
            sockets.push(listener);
        }
        fleet.daemons = daemons;
        fleet.sockets = sockets;
        Some(fleet)
    }

    fn push(&self, motd: &str, bad: bool) -> String {
        // The fix's waves are wider: a canary that failed backs off (up to 16 intervals) before
        // it fetches again, so it sees the fix up to 16 s after the other devices do, and each
        // device counts its waves from when it first verified the commit.
        let waves = if bad {
            waves("10s", "20s")
        } else {
            waves("25s", "40s")
        };
        let manifest = format!("{MANIFEST}{}{waves}", if bad { BAD_PROFILE } else { "" });
        let mut files = vec![("shoal.toml", manifest.as_str()), ("files/motd", motd)];
        if bad {
            files.push(("files/app.conf", "endpoint = wrong\n"));
        }
        self.s.push(&files, motd.trim())
    }

    /// The collector's view of every device, by id.
    fn seen(&self) -> BTreeMap<String, Value> {
        let list = self.collector.get("/api/v1/devices?limit=1000");
        list["devices"]
            .as_array()
            .unwrap_or_else(|| panic!("no devices array: {list}"))
            .iter()
            .map(|d| (d["device_id"].as_str().expect("id").to_owned(), d.clone()))
            .collect()
    }

    /// Polls the collector until `done` holds for its device list, or panics after `limit`
    /// with `what` and the last list.
    fn wait_until(
        &self,
        limit: Duration,
        what: &str,
        mut done: impl FnMut(&BTreeMap<String, Value>) -> bool,
    ) -> BTreeMap<String, Value> {
        let start = Instant::now();
        loop {
            let seen = self.seen();
            if done(&seen) {
                return seen;
            }
            if start.elapsed() > limit {
                let lines: Vec<String> = seen
                    .iter()
                    .map(|(id, d)| {
                        format!(
                            "{id}: {} commit {} target {} pending {} errors {}",
                            d["status"], d["commit"], d["target"], d["pending"], d["errors"]
                        )
                    })
                    .collect();
                // One device's own account: the last device that is not where it should be.
                let log = std::fs::read_to_string(
                    self.s.dir.path().join(name(DEVICES)).join("daemon.log"),
                )
                .unwrap_or_default();
                let tail: Vec<&str> = log.lines().rev().take(40).collect();
                let status = self.devices[DEVICES - 1]
                    .1
                    .agent(&["status", "--json"])
                    .stdout;
                panic!(
                    "{what}: not within {limit:?}; the collector shows:\n{}\n{} status: {status}\nits daemon's log, last lines first:\n{}",
                    lines.join("\n"),
                    name(DEVICES),
                    tail.join("\n")
                );
            }
            std::thread::sleep(Duration::from_millis(250));
        }
    }

    fn generations(&self, device: &Device) -> Vec<Value> {
        let run = device.agent(&["history", "--json"]);
        run.assert_ok();
        serde_json::from_str::<Value>(&run.stdout)
            .expect("history --json")
            .as_array()
            .expect("an array")
            .clone()
    }
    /// The `/rollouts` page's HTML, and a screenshot of it in a real headless Chromium under
    /// `target/screenshots/NAME` (skipped loudly without Chromium, unless `SHOAL_E2E=1`).
    fn rollouts_page(&self, name: &str) -> String {
        let url = format!("{}/rollouts", self.collector.url());
        let out = std::process::Command::new("curl")
            .args(["-sS", "--fail", &url])
            .output()
            .expect("curl");
        assert!(
            out.status.success(),
            "{url}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        if require_tools(&["chromium"]) {
            let shots = std::env::var_os("CARGO_TARGET_DIR")
                .map(PathBuf::from)
                .unwrap_or_else(|| Path::new(env!("CARGO_MANIFEST_DIR")).join("../target"))
                .join("screenshots");
            std::fs::create_dir_all(&shots).expect("mkdir screenshots");
            let profile = tempfile::tempdir().expect("profile dir");
            let shot = shots.join(name);
            let run = std::process::Command::new("chromium")
                .args(HEADLESS_CHROMIUM_FLAGS)
                .arg("--window-size=1100,1500")
                .arg(format!("--user-data-dir={}", profile.path().display()))
                .arg(format!("--screenshot={}", shot.display()))
                .arg(&url)
                .output()
                .expect("chromium");
            assert!(
                run.status.success() && shot.exists(),
                "chromium could not take {name}: {}",
                String::from_utf8_lossy(&run.stderr)
            );
        }
        String::from_utf8(out.stdout).expect("utf-8 page")
    }
}

fn is_canary(id: &str) -> bool {
    (1..=CANARIES).any(|i| name(i) == id)
}

#[test]
fn twenty_devices_a_bad_commit_halted_by_the_collector_then_a_fix_through_every_wave() {
    let Some(fleet) = Fleet::start() else { return };

    // Everyone starts on a first commit (no rollout in it yet: all at once).
    let base = fleet.s.push(
        &[("shoal.toml", MANIFEST), ("files/motd", "base\n")],
        "base",
    );
    fleet.wait_until(
        Duration::from_secs(120),
        "all converge on the base",
        |seen| {
            seen.len() == DEVICES
                && seen
                    .values()
                    .all(|d| d["status"] == "converged" && d["commit"] == base.as_str())
        },
    );

    // 1. The bad commit. The canaries try it at once and fail; the collector halts it.
    let bad = fleet.push("bad\n", true);
    let pushed = Instant::now();
    let rollout = format!("/api/v1/rollouts/{bad}");
    let start = Instant::now();
    let halted = loop {
        // 404 until a report is about it.
        let view = fleet.collector.try_get(&rollout).unwrap_or(Value::Null);
        if view["halted"] == true {
            break view;
        }
        assert!(
            start.elapsed() < Duration::from_secs(60),
            "the collector never halted {bad}: {view:#}\n{}",
            fleet.collector.log()
        );
        std::thread::sleep(Duration::from_millis(250));
    };
    let reason = halted["halt"]["reason"].as_str().expect("reason");
    assert!(reason.starts_with("automatic: "), "{halted:#}");
    // Only the canaries tried it, and all of them failed.
    assert_eq!(halted["tried"], CANARIES, "{halted:#}");
    assert_eq!(halted["failures"], CANARIES, "{halted:#}");
    let page = fleet.rollouts_page("rollouts-halted.png");
    assert!(
        page.contains(r#"class="rollout halted""#) && page.contains("automatic: "),
        "the page marks the halt: {page}"
    );
    // Every later wave has opened (20 s) and looked at the halt: they report `halted`.
    let seen = fleet.wait_until(
        Duration::from_secs(90),
        "every device of a later wave reports halted",
        |seen| {
            pushed.elapsed() > Duration::from_secs(22)
                && seen
                    .iter()
                    .filter(|(id, _)| !is_canary(id))
                    .all(|(_, d)| d["status"] == "halted")
        },
    );
    for (id, device) in &seen {
        if is_canary(id) {
            assert!(
                device["status"] == "failed" || device["status"] == "rolled_back",
                "{id}: {device:#}"
            );
        }
        assert_eq!(device["commit"], base.as_str(), "{id} stays on the base");
    }
    for (id, device) in &fleet.devices {
        assert_eq!(
            std::fs::read_to_string(fleet.s.dir.path().join(id).join("root/etc/motd"))
                .expect("motd"),
            "base\n",
            "{id}"
        );
        assert!(
            fleet
                .generations(device)
                .iter()
                .all(|g| g["commit"] != bad.as_str()),
            "{id} applied the halted commit"
        );
        // No device outside the canaries even tried it: its history at the collector has no
        // `failed` (or `rolled_back`) report about it.
        if !is_canary(id) {
            let history = fleet
                .collector
                .get(&format!("/api/v1/devices/{id}/history"));
            let tried: Vec<&Value> = history["history"]
                .as_array()
                .expect("history")
                .iter()
                .map(|e| &e["report"])
                .filter(|r| r["target"]["commit"] == bad.as_str())
                .filter(|r| r["status"] == "failed" || r["status"] == "rolled_back")
                .collect();
            assert!(tried.is_empty(), "{id} tried the halted commit: {tried:#?}");
        }
    }

    // 2. The fix rolls through the waves in order.
    let fixed = fleet.push("fixed\n", false);
    let mut opens: BTreeMap<String, u64> = BTreeMap::new();
    let mut waves: BTreeMap<String, String> = BTreeMap::new();
    fleet.wait_until(
        Duration::from_secs(120),
        "all converge on the fix",
        |seen| {
            for (id, d) in seen {
                if d["pending"]["commit"] == fixed.as_str() {
                    let at = d["pending"]["opens_at"].as_u64().expect("opens_at");
                    opens.insert(id.clone(), at);
                    waves.insert(
                        id.clone(),
                        d["pending"]["wave"].as_str().expect("wave").into(),
                    );
                }
            }
            seen.values()
                .all(|d| d["status"] == "converged" && d["commit"] == fixed.as_str())
        },
    );
    let mut applied: BTreeMap<&str, Vec<u64>> = BTreeMap::new();
    for (id, device) in &fleet.devices {
        let at = fleet
            .generations(device)
            .iter()
            .find(|g| g["commit"] == fixed.as_str())
            .and_then(|g| g["applied_at"].as_u64())
            .unwrap_or_else(|| panic!("{id} has no generation of the fix"));
        let wave = if is_canary(id) {
            "canary"
        } else {
            waves
                .get(id)
                .unwrap_or_else(|| panic!("{id} was never seen pending: {waves:?}"))
                .as_str()
        };
        if let Some(opens) = opens.get(id) {
            assert!(
                at >= *opens,
                "{id} applied at {at}, before its wave opened at {opens}"
            );
        }
        applied.entry(wave).or_default().push(at);
    }
    let first = |w: &str| applied.get(w).and_then(|v| v.iter().min().copied());
    let last = |w: &str| applied.get(w).and_then(|v| v.iter().max().copied());
    assert_eq!(applied["canary"].len(), CANARIES);
    assert_eq!(
        applied.values().map(Vec::len).sum::<usize>(),
        DEVICES,
        "{applied:?}"
    );
    if let (Some(canary), Some(early)) = (last("canary"), first("early")) {
        assert!(
            canary < early,
            "early applied before the canaries: {applied:?}"
        );
    }
    let before_all = last("early").or(last("canary")).expect("canaries applied");
    if let Some(all) = first("all") {
        assert!(before_all < all, "all applied before early: {applied:?}");
    }

    let page = fleet.rollouts_page("rollouts-fixed.png");
    assert!(
        page.contains(&format!("<code>{fixed}</code>")) && page.contains("<svg"),
        "the page shows the fix's rollout with its chart: {page}"
    );

    // The collector's view of the fix: every device, by wave, converged.
    let view = fleet.collector.get(&format!("/api/v1/rollouts/{fixed}"));
    assert_eq!(view["halted"], false, "{view:#}");
    assert_eq!(view["devices"], DEVICES, "{view:#}");
    assert_eq!(view["failures"], 0, "{view:#}");
    let converged_in = |wave: &str| {
        view["waves"]
            .as_array()
            .expect("waves")
            .iter()
            .find(|w| w["wave"] == wave)
            .map_or(0, |w| w["by_status"]["converged"].as_u64().unwrap_or(0))
    };
    for (wave, devices) in &applied {
        assert_eq!(
            converged_in(wave),
            devices.len() as u64,
            "wave {wave}: {view:#}"
        );
    }
}
