//! Halts on the device (issue 15, the agent's side): a verified commit the device has not
//! applied is not applied while it is halted — by the collector's signed halt list, taken from
//! the answer to a report and opened with the key pinned in `[collector] key`, or by a release
//! with `Halt: true` — and the device reports `halted`; a device already on the commit stays; a
//! lifted halt lets the next sync apply; a list that is replayed (lower serial), signed by
//! another key, tampered with or not a list at all is ignored and said in the next report; the
//! collector down does not stop waves; every report names its `target` (commit and wave); the
//! daemon acts on a changed list at once after the report that brought it. Real agent, real git,
//! real ssh-keygen signatures; the real collector where it is what the test is about.

use std::io::{BufRead as _, BufReader, Read as _, Write as _};
use std::net::{TcpListener, TcpStream};
use std::process::Stdio;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use ed25519_dalek::SigningKey;
use serde_json::{json, Value};
use shoal_e2e::{
    everyone_after, gateway_config, notify_socket, require_tools, run_daemon, unix_now, Sandbox,
    ENROLL_TOKEN,
};
use shoal_proto::{CommitId, Halt, HaltList, KeyId, Report, SignedEnvelope, SignedHalts, Status};

/// Waits until the pending commit's wave (as `status --json` says) has opened.
fn wait_for_wave(s: &Sandbox) {
    let status = s.status();
    let opens_at = status["last_result"]["pending"]["opens_at"]
        .as_u64()
        .unwrap_or_else(|| panic!("not pending: {status}"));
    while unix_now() < opens_at {
        std::thread::sleep(Duration::from_millis(200));
    }
}

/// The collector's key in these tests, and another collector's.
fn collector_key() -> SigningKey {
    SigningKey::from_bytes(&[42; 32])
}

fn other_key() -> SigningKey {
    SigningKey::from_bytes(&[43; 32])
}

fn key_id(key: &SigningKey) -> String {
    KeyId::of(&key.verifying_key()).to_string()
}

/// A halt list with `serial`, halting each (commit, reason), signed by `key`.
fn halts(key: &SigningKey, serial: u64, halted: &[(&str, &str)]) -> Value {
    let list = HaltList {
        serial,
        issued_at: unix_now(),
        halted: halted
            .iter()
            .map(|(commit, reason)| Halt {
                commit: CommitId::parse(commit).expect("commit id"),
                reason: (*reason).to_owned(),
                since: 1_800_000_000,
            })
            .collect(),
    };
    serde_json::to_value(SignedHalts::seal(key, &list)).expect("halts JSON")
}

/// A stand-in for the collector's answer to reports: accepts every signed report (opened with
/// the key in its envelope), keeps it, and answers 200 with the `halts` it was told to. The
/// collector's halt endpoint and its signing key are another task's (its answer is not what
/// these tests are about); the agent's side of the wire — the report it sends, the `SignedHalts`
/// it reads — is `shoal_proto`'s, the same types the real collector uses.
struct StandIn {
    url: String,
    shared: Arc<Mutex<Shared>>,
}

#[derive(Default)]
struct Shared {
    halts: Option<Value>,
    reports: Vec<Report>,
}

impl StandIn {
    fn start() -> StandIn {
        let listener = TcpListener::bind("127.0.0.1:0").expect("bind");
        let url = format!("http://{}", listener.local_addr().expect("addr"));
        let shared = Arc::new(Mutex::new(Shared::default()));
        let serving = Arc::clone(&shared);
        std::thread::spawn(move || {
            for stream in listener.incoming().flatten() {
                if let Err(e) = answer(stream, &serving) {
                    eprintln!("stand-in collector: {e}");
                }
            }
        });
        StandIn { url, shared }
    }

    /// What the next answers carry as `halts` (`None`: no `halts` at all).
    fn answer_with(&self, halts: Option<Value>) {
        self.shared.lock().expect("lock").halts = halts;
    }

    fn last_report(&self) -> Report {
        self.shared
            .lock()
            .expect("lock")
            .reports
            .last()
            .cloned()
            .expect("no report yet")
    }
}

fn answer(stream: TcpStream, shared: &Mutex<Shared>) -> std::io::Result<()> {
    let mut reader = BufReader::new(stream.try_clone()?);
    let mut request = String::new();
    reader.read_line(&mut request)?;
    let mut length = 0usize;
    loop {
        let mut line = String::new();
        reader.read_line(&mut line)?;
        let line = line.trim_end().to_ascii_lowercase();
        if line.is_empty() {
            break;
        }
        if let Some(n) = line.strip_prefix("content-length:") {
            length = n.trim().parse().unwrap_or(0);
        }
    }
    let mut body = vec![0; length];
    reader.read_exact(&mut body)?;
    let (status, text) = if request.starts_with("POST /api/v1/reports ") {
        let envelope = SignedEnvelope::from_json(&body).map_err(std::io::Error::other)?;
        let (_, key) = envelope.signer().map_err(std::io::Error::other)?;
        let report = envelope.open(&key).map_err(std::io::Error::other)?;
        let mut shared = shared.lock().expect("lock");
        let mut answer = json!({ "device_id": report.device_id, "sequence": report.sequence });
        if let Some(halts) = &shared.halts {
            answer["halts"] = halts.clone();
        }
        shared.reports.push(report);
        (200, answer.to_string())
    } else {
        (404, json!({ "error": "not here" }).to_string())
    };
    let mut out = stream;
    write!(
        out,
        "HTTP/1.1 {status} X\r\ncontent-type: application/json\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{text}",
        text.len()
    )
}

/// Points the sandbox's device at `url`, pinning `key` (if any) as the collector's key.
fn report_to(s: &Sandbox, url: &str, key: Option<&SigningKey>) {
    let enroll = s.dir.path().join("enroll-token");
    std::fs::write(&enroll, format!("{ENROLL_TOKEN}\n")).expect("token");
    s.device.report_to(url, &enroll);
    if let Some(key) = key {
        trust_collector_key(s, key);
    }
}

/// Pins `key` as the collector's (`[collector] key`), after a `report_to`.
fn trust_collector_key(s: &Sandbox, key: &SigningKey) {
    // `[collector]` is the config's last table: the key goes into it.
    let config = std::fs::read_to_string(s.device.config_path()).expect("agent.toml");
    std::fs::write(
        s.device.config_path(),
        format!("{config}key = \"{}\"\n", key_id(key)),
    )
    .expect("agent.toml");
}

fn target(report: &Report) -> (String, Option<String>) {
    let target = report
        .target
        .as_ref()
        .unwrap_or_else(|| panic!("no target in {report:?}"));
    (target.commit.clone(), target.wave.clone())
}

fn collector_errors(report: &Report) -> Vec<String> {
    report
        .errors
        .iter()
        .filter(|e| e.resource == "collector")
        .map(|e| e.message.clone())
        .collect()
}

/// The device's files and generation, which a halt must leave as they are.
fn device_state(s: &Sandbox) -> (String, Value, Value) {
    let status = s.status();
    (
        s.read("/etc/motd"),
        status["generation"].clone(),
        status["applied_commit"].clone(),
    )
}

#[test]
fn a_halted_commit_is_not_applied_a_device_on_it_stays_and_a_lifted_halt_applies() {
    let Some(s) = Sandbox::over_git_daemon() else {
        return;
    };
    let collector = StandIn::start();
    let key = collector_key();
    report_to(&s, &collector.url, Some(&key));
    collector.answer_with(Some(halts(&key, 1, &[])));

    let first = s.push(&gateway_config("first\n"), "first");
    s.device.sync().expect(0, "applied generation 1");
    let report = collector.last_report();
    assert_eq!(report.status, Status::Converged);
    // No `[rollout]` in the commit: no wave.
    assert_eq!(target(&report), (first.clone(), None));

    // A commit whose wave opens in 3 s; the collector halts it meanwhile.
    let second = s.push_with_rollout("second\n", &everyone_after("3s"));
    collector.answer_with(Some(halts(
        &key,
        2,
        &[(&second, "operator: wrong endpoint")],
    )));
    s.device
        .sync()
        .expect(0, &format!("pending: commit {second} waits"));
    let report = collector.last_report();
    assert_eq!(report.status, Status::Pending);
    assert_eq!(target(&report), (second.clone(), Some("all".to_owned())));
    wait_for_wave(&s);

    // The wave is open, but the commit is halted: nothing is applied.
    let before = device_state(&s);
    s.device
        .sync()
        .expect(
            0,
            &format!(
                "halted: commit {second} is halted by the collector ({}) since 2027-01-15T08:00:00Z: operator: wrong endpoint; nothing is applied, the device stays at generation 1 (commit {first}) until the collector resumes it",
                key_id(&key)
            ),
        );
    assert_eq!(device_state(&s), before, "a halt changes nothing");
    assert_eq!(s.read("/etc/motd"), "first\n");
    let status = s.status();
    let last = &status["last_result"];
    assert_eq!(last["status"], "halted", "{status}");
    assert_eq!(last["commit"], second.as_str(), "{status}");
    assert_eq!(last["halted"]["source"], "collector", "{status}");
    assert_eq!(
        last["halted"]["reason"], "operator: wrong endpoint",
        "{status}"
    );
    assert_eq!(last["target"]["wave"], "all", "{status}");
    assert_eq!(status["halts"]["serial"], 2, "{status}");
    let report = collector.last_report();
    assert_eq!(report.status, Status::Halted);
    assert_eq!(target(&report), (second.clone(), Some("all".to_owned())));
    assert_eq!(report.commit.as_deref(), Some(first.as_str()));
    assert!(
        report
            .errors
            .iter()
            .any(|e| e.resource == second && e.message.contains("operator: wrong endpoint")),
        "{report:?}"
    );
    s.device
        .agent(&["sync", "--dry-run"])
        .expect(0, &format!("dry run: halted: commit {second} is halted"));
    s.device.agent(&["status"]).expect(
        0,
        &format!("halts       list 2 from the collector: halted: {second}"),
    );

    // The collector resumes it (list 3). The answer to the next report brings the list; the
    // sync after it applies.
    collector.answer_with(Some(halts(&key, 3, &[])));
    s.device
        .sync()
        .expect(0, &format!("halted: commit {second} is halted"));
    s.device.sync().expect(0, "applied generation 2");
    assert_eq!(s.read("/etc/motd"), "second\n");
    let report = collector.last_report();
    assert_eq!(report.status, Status::Converged);
    assert_eq!(target(&report), (second.clone(), Some("all".to_owned())));

    // Halting the commit a device already runs does not move it back.
    collector.answer_with(Some(halts(
        &key,
        4,
        &[(&second, "automatic: 3 of 5 devices failed")],
    )));
    s.device.sync().expect(0, "up to date: generation 2");
    s.device.sync().expect(0, "up to date: generation 2");
    assert_eq!(s.read("/etc/motd"), "second\n");
    let status = s.status();
    assert_eq!(status["last_result"]["status"], "converged", "{status}");
    assert_eq!(status["halts"]["serial"], 4, "{status}");
    assert_eq!(collector.last_report().status, Status::Converged);

    // A commit that fails to render is reported `failed` with the commit it tried.
    let broken = s.push_with_rollout(
        "broken\n",
        "[rollout]\nwaves = [ { name = \"half\", percent = 50 } ]\n",
    );
    s.device
        .sync()
        .expect(1, "the waves reach 50 % of the fleet");
    let report = collector.last_report();
    assert_eq!(report.status, Status::Failed);
    assert_eq!(target(&report).0, broken);
    assert_eq!(s.read("/etc/motd"), "second\n");
}

#[test]
fn replayed_forged_and_tampered_halt_lists_are_ignored_and_reported() {
    let Some(s) = Sandbox::over_git_daemon() else {
        return;
    };
    let collector = StandIn::start();
    let key = collector_key();
    report_to(&s, &collector.url, Some(&key));
    collector.answer_with(Some(halts(&key, 4, &[])));
    s.push(&gateway_config("first\n"), "first");
    s.device.sync().expect(0, "applied generation 1");

    let held = s.push_with_rollout("held back\n", &everyone_after("2s"));
    collector.answer_with(Some(halts(&key, 5, &[(&held, "operator: hold it")])));
    s.device.sync().expect(0, "pending: ");
    wait_for_wave(&s);
    s.device
        .sync()
        .expect(0, &format!("halted: commit {held} is halted"));
    let before = device_state(&s);

    let pinned = key_id(&key);
    let mut tampered: SignedHalts =
        serde_json::from_value(halts(&key, 6, &[(&held, "x")])).expect("halts");
    tampered.payload = serde_json::from_value::<SignedHalts>(halts(&key, 10, &[]))
        .expect("halts")
        .payload;
    let cases = [
        (
            "an old list (serial 3) that would lift the halt",
            halts(&key, 3, &[]),
            "ignored the collector's halt list: halt list serial 3 is lower than serial 5, the newest this device accepted: a replayed old list; keeping list 5".to_owned(),
        ),
        (
            "another collector's list",
            halts(&other_key(), 9, &[]),
            format!(
                "ignored the collector's halt list: halt list is signed by {}, not by the pinned collector key {pinned}",
                key_id(&other_key())
            ),
        ),
        (
            "a list whose payload was swapped",
            serde_json::to_value(&tampered).expect("json"),
            format!("ignored the collector's halt list: halt list signature does not verify with the pinned collector key {pinned}"),
        ),
        (
            "something that is not a list",
            json!({ "version": 1, "serial": 99 }),
            "ignored the collector's halt list: the answer's `halts` is not a signed halt list: missing field `key_id`".to_owned(),
        ),
    ];
    for (what, offered, said) in cases {
        collector.answer_with(Some(offered));
        // The sync still sees list 5; its report's answer carries the bad list, which is
        // ignored; the next sync is still halted and its report says why.
        s.device
            .sync()
            .expect(0, &format!("halted: commit {held} is halted"));
        s.device
            .sync()
            .expect(0, &format!("halted: commit {held} is halted"));
        assert_eq!(device_state(&s), before, "{what} changed the device");
        let report = collector.last_report();
        assert_eq!(report.status, Status::Halted, "{what}");
        assert_eq!(collector_errors(&report), vec![said.clone()], "{what}");
        let status = s.status();
        assert_eq!(status["halts"]["serial"], 5, "{what}: {status}");
        assert_eq!(
            status["halts_refused"]
                .as_str()
                .map(|m| format!("ignored the collector's halt list: {m}")),
            Some(said),
            "{what}"
        );
    }

    // An answer without `halts` changes nothing (the refusal stays until a list is accepted).
    collector.answer_with(None);
    s.device
        .sync()
        .expect(0, &format!("halted: commit {held} is halted"));
    assert_eq!(collector_errors(&collector.last_report()).len(), 1);

    // A good newer list lifts the halt and the error goes.
    collector.answer_with(Some(halts(&key, 6, &[])));
    s.device
        .sync()
        .expect(0, &format!("halted: commit {held} is halted"));
    s.device.sync().expect(0, "applied generation 2");
    assert_eq!(s.read("/etc/motd"), "held back\n");
    assert!(collector_errors(&collector.last_report()).is_empty());
    assert_eq!(s.status()["halts_refused"], Value::Null);
}

/// Without `[collector] key` a halt list is not trusted: the device applies what it halts.
#[test]
fn without_a_pinned_collector_key_halt_lists_are_ignored() {
    let Some(s) = Sandbox::over_git_daemon() else {
        return;
    };
    let collector = StandIn::start();
    report_to(&s, &collector.url, None);
    s.push(&gateway_config("first\n"), "first");
    s.device.sync().expect(0, "applied generation 1");
    let next = s.push_with_rollout("next\n", &everyone_after("2s"));
    collector.answer_with(Some(halts(&collector_key(), 1, &[(&next, "operator: no")])));
    s.device.sync().expect(0, "pending: ");
    wait_for_wave(&s);
    s.device.sync().expect(0, "applied generation 2");
    assert_eq!(s.read("/etc/motd"), "next\n");
    let status = s.status();
    assert_eq!(status["halts"], Value::Null, "{status}");
    assert_eq!(status["halts_trusted"], Value::Null, "{status}");
    assert!(!s.device.state_dir().join("halts.json").exists());
    let doctor = s.device.agent(&["doctor", "--no-unit"]);
    assert!(
        doctor
            .stderr
            .contains("no [collector] key: halts from the collector are not trusted"),
        "{}",
        doctor.stderr
    );
}

/// A release with `Halt: true`: the device reports `halted` (not `refused`) to the real
/// collector, with the commit it holds off and its wave; a later release without the halt
/// applies.
#[test]
fn a_halted_release_is_reported_halted_and_a_release_without_the_halt_applies() {
    if !require_tools(&["curl"]) {
        return;
    }
    let Some(s) = Sandbox::over_git_daemon() else {
        return;
    };
    let collector = s.report_to_local_collector();
    s.device.follow_environment("production");
    let bare = s.dir.path().join("srv/config.git");
    let release = |name: &str, commit: &str, halt: bool| {
        let halt = if halt { "\nHalt: true" } else { "" };
        let message = format!("Release {name}\n\nExpires: 2099-01-01T00:00:00Z{halt}");
        s.repo.tag_signed(
            &s.key,
            name,
            commit,
            &message,
            Some(unix_now() as i64 - 7200),
        );
        s.repo.publish_ref(
            &bare,
            &format!("refs/tags/{name}"),
            "refs/shoal/releases/production",
        );
    };
    let first = s.push_with_rollout("first\n", &everyone_after("1h"));
    release("production/1", &first, false);
    s.device.sync().expect(0, "applied generation 1");

    let second = s.push_with_rollout("second\n", &everyone_after("1h"));
    release("production/2", &second, true);
    let before = device_state(&s);
    s.device
        .sync()
        .expect(
            0,
            &format!("halted: commit {second} is halted by release production/2 signed by operator@example (Halt: true)"),
        )
        .expect(0, "report: 1 delivered");
    assert_eq!(device_state(&s), before);
    let status = s.status();
    assert_eq!(status["last_result"]["target"]["commit"], second.as_str());
    assert_eq!(status["last_result"]["target"]["wave"], "all");
    let seen = collector.get("/api/v1/devices/dev-1");
    assert_eq!(seen["status"], "halted", "{seen}");
    assert_eq!(seen["commit"], first.as_str(), "{seen}");
    assert_eq!(collector.get("/api/v1/summary")["by_status"]["halted"], 1);

    release("production/3", &second, false);
    s.device.sync().expect(0, "applied generation 2");
    assert_eq!(s.read("/etc/motd"), "second\n");
    assert_eq!(
        collector.get("/api/v1/devices/dev-1")["status"],
        "converged"
    );
}

/// The collector down during a rollout: waves still open and apply (halts need the collector:
/// a device that cannot report learns of no halt), and the reports wait in the outbox.
#[test]
fn with_the_collector_down_waves_proceed() {
    if !require_tools(&["curl"]) {
        return;
    }
    let Some(s) = Sandbox::over_git_daemon() else {
        return;
    };
    let collector = s.report_to_local_collector();
    trust_collector_key(&s, &collector_key());
    s.push(&gateway_config("first\n"), "first");
    s.device.sync().expect(0, "applied generation 1");

    let next = s.push_with_rollout("next\n", &everyone_after("2s"));
    s.device
        .sync()
        .expect(0, "pending: ")
        .expect(0, "report: 1 delivered");
    // The real collector took the report with its target.
    assert_eq!(collector.get("/api/v1/devices/dev-1")["status"], "pending");
    collector.kill();
    wait_for_wave(&s);
    s.device
        .sync()
        .expect(0, "applied generation 2")
        .expect(0, "queued for later");
    assert_eq!(s.read("/etc/motd"), "next\n");
    assert_eq!(s.device.applied().as_deref(), Some(next.as_str()));
    assert!(s.status()["queued_reports"].as_u64() >= Some(1));
}

/// A device reporting to a stand-in collector whose key it trusts (its answers carry list 1,
/// nothing halted), on an hour's interval (so a daemon's syncs are the ones the test causes), and
/// converged on a first commit.
fn hourly_device_on_first() -> Option<(Sandbox, StandIn, SigningKey)> {
    let s = Sandbox::over_git_daemon()?;
    let collector = StandIn::start();
    let key = collector_key();
    report_to(&s, &collector.url, Some(&key));
    let config = std::fs::read_to_string(s.device.config_path()).expect("agent.toml");
    std::fs::write(
        s.device.config_path(),
        config.replace("interval = \"60s\"", "interval = \"1h\""),
    )
    .expect("agent.toml");
    collector.answer_with(Some(halts(&key, 1, &[])));
    s.push(&gateway_config("first\n"), "first");
    s.device.sync().expect(0, "applied generation 1");
    Some((s, collector, key))
}

/// The daemon (interval: an hour) syncs again right after a report whose answer halts the
/// commit it waits for, and again right after one that lifts that halt: it does not wait for
/// its next wake.
#[test]
fn the_daemon_acts_on_a_changed_halt_list_right_after_the_report() {
    let Some((s, collector, key)) = hourly_device_on_first() else {
        return;
    };

    // The wave opens in 5 s; the first report's answer halts the commit.
    let waiting = s.push_with_rollout("after the halt\n", &everyone_after("5s"));
    collector.answer_with(Some(halts(&key, 2, &[(&waiting, "operator: wait")])));
    let (socket_path, _socket) = notify_socket(s.dir.path());
    let mut daemon = run_daemon(&s.device.config_path(), &socket_path, Stdio::piped());
    let fail = |daemon: std::process::Child, what: &str| -> ! {
        let mut daemon = daemon;
        let _ = daemon.kill();
        let out = daemon.wait_with_output().expect("daemon output");
        panic!("{what}:\n{}", String::from_utf8_lossy(&out.stderr));
    };
    let wait_for = |what: &str, done: &dyn Fn() -> bool, within: Duration| -> bool {
        let deadline = Instant::now() + within;
        while !done() {
            if Instant::now() > deadline {
                eprintln!("gave up waiting for {what}");
                return false;
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        true
    };
    // Pending first, then halted well before the wave opens: the sync after the report.
    let halted = || s.status()["last_result"]["status"] == "halted";
    if !wait_for("halted", &halted, Duration::from_secs(4)) {
        fail(
            daemon,
            "the daemon did not act on the halt right after the report",
        );
    }
    assert_eq!(collector.last_report().status, Status::Halted);

    // Once the wave is open: the collector resumes it. A SIGHUP's sync is still halted (it had
    // list 2); its report brings list 3, and the daemon applies right after.
    std::thread::sleep(Duration::from_secs(5));
    collector.answer_with(Some(halts(&key, 3, &[])));
    let hup = std::process::Command::new("kill")
        .args(["-s", "HUP", &daemon.id().to_string()])
        .status()
        .expect("kill");
    assert!(hup.success(), "kill -s HUP failed");
    let applied = || s.device.applied().as_deref() == Some(waiting.as_str());
    if !wait_for("applied", &applied, Duration::from_secs(20)) {
        fail(
            daemon,
            "the daemon did not apply the resumed commit right after the report",
        );
    }
    let _ = daemon.kill();
    let _ = daemon.wait();
    assert_eq!(s.read("/etc/motd"), "after the halt\n");
}

/// A halt issued while a device sleeps until its wave opens (its last report's list did not
/// have it, and no report happens in between: the interval is an hour) still stops it: the
/// daemon asks the collector for its newest list right before the sync that would apply.
#[test]
fn the_daemon_takes_the_newest_halt_list_when_the_wave_opens() {
    let Some((s, collector, key)) = hourly_device_on_first() else {
        return;
    };

    let waiting = s.push_with_rollout("bad\n", &everyone_after("5s"));
    let (socket_path, _socket) = notify_socket(s.dir.path());
    let mut daemon = run_daemon(&s.device.config_path(), &socket_path, Stdio::piped());
    // Pending, and reported so (the daemon reports after the sync child has written it).
    let deadline = Instant::now() + Duration::from_secs(4);
    while collector.last_report().status != Status::Pending {
        assert!(
            Instant::now() < deadline,
            "never reported pending: {}",
            s.status()
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    // The halt comes after the device's last report; it sleeps until the wave opens.
    collector.answer_with(Some(halts(
        &key,
        2,
        &[(&waiting, "operator: wrong endpoint")],
    )));

    let deadline = Instant::now() + Duration::from_secs(15);
    while s.status()["last_result"]["status"] == "pending" {
        if Instant::now() > deadline {
            let _ = daemon.kill();
            let out = daemon.wait_with_output().expect("daemon output");
            panic!(
                "the wave never opened:\n{}",
                String::from_utf8_lossy(&out.stderr)
            );
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    let _ = daemon.kill();
    let out = daemon.wait_with_output().expect("daemon output");
    let log = String::from_utf8_lossy(&out.stderr);
    let status = s.status();
    assert_eq!(status["last_result"]["status"], "halted", "{status}\n{log}");
    assert!(
        log.contains("asking the collector for its newest halt list first"),
        "{log}"
    );
    assert_eq!(
        s.read("/etc/motd"),
        "first\n",
        "the halted commit was applied"
    );
    assert_ne!(s.device.applied().as_deref(), Some(waiting.as_str()));
    assert_eq!(collector.last_report().status, Status::Halted);
}
