//! Reports end to end: the real agent enrolls with a token and reports to the real collector
//! over HTTP; with the collector down, reports wait in the outbox across agent runs and arrive,
//! each once, when it is back. The enrollment token goes only until the collector accepts the key;
//! an operator unpins and re-keys the device while the collector runs.

use shoal_e2e::{
    require_tools, Collector, CollectorSpec, Sandbox, SigningKey, ENROLL_TOKEN, MOTD_MANIFEST,
};

#[test]
fn reports_enroll_survive_a_collector_outage_and_arrive_once() {
    if !require_tools(&["curl"]) {
        return;
    }
    let Some(s) = Sandbox::new() else { return };
    let first = s.push(&[("shoal.toml", MOTD_MANIFEST), ("motd", "one\n")], "one");

    let enroll = s.dir.path().join("enroll-token");
    std::fs::write(&enroll, format!("{ENROLL_TOKEN}\n")).expect("token");
    let mut spec = CollectorSpec::local(s.dir.path().join("collector-data"), enroll.clone());
    let collector = spec.start();
    let device = &s.device;
    device.report_to(collector.url(), &enroll);

    device.sync().expect(0, "report: 1 delivered");
    let seen = collector.get("/api/v1/devices/dev-1");
    assert_eq!(seen["status"], "converged", "{seen}");
    assert_eq!(seen["commit"], first.as_str(), "{seen}");
    // The steps that ran have timings; no unit was declared, so there was no health step.
    for step in ["fetch_ms", "verify_ms", "render_ms", "apply_ms"] {
        assert!(seen["timings"][step].is_u64(), "no {step}: {seen}");
    }
    assert!(seen["timings"]["health_ms"].is_null(), "{seen}");

    // The collector is killed; the device keeps converging and queues what it would report.
    spec.listen = collector.listen();
    collector.kill();
    let second = s.push(&[("motd", "two\n")], "two");
    device.sync().expect(0, "queued for later");
    device.sync().expect(0, "up to date");
    let status: serde_json::Value =
        serde_json::from_str(&device.agent(&["status", "--json"]).stdout).expect("status");
    assert!(
        status["queued_reports"].as_u64().unwrap_or(0) >= 1,
        "{status}"
    );

    // Back on the same address and store: the queue drains, nothing is counted twice.
    let collector = spec.start();
    device.sync().expect(0, "delivered");
    let seen = collector.get("/api/v1/devices/dev-1");
    assert_eq!(seen["commit"], second.as_str(), "{seen}");
    assert_eq!(seen["status"], "converged");
    let history = collector.get("/api/v1/devices/dev-1/history");
    let text = history.to_string();
    let mut sequences: Vec<u64> = history["history"]
        .as_array()
        .unwrap_or_else(|| panic!("no history array: {text}"))
        .iter()
        .map(|entry| {
            entry["report"]["sequence"]
                .as_u64()
                .unwrap_or_else(|| panic!("an entry without a sequence: {text}"))
        })
        .collect();
    // The first report and the one queued during the outage, at least.
    assert!(sequences.len() >= 2, "{text}");
    sequences.sort_unstable();
    let mut unique = sequences.clone();
    unique.dedup();
    assert_eq!(sequences, unique, "no report counted twice: {text}");
    let status: serde_json::Value =
        serde_json::from_str(&device.agent(&["status", "--json"]).stdout).expect("status");
    assert_eq!(status["queued_reports"], 0, "{status}");
    let summary = collector.get("/api/v1/summary");
    assert_eq!(summary["total"], 1, "{summary}");
}

const ADMIN_TOKEN: &str = "admin-token-0123456789abcdef";

/// One sample of the collector's /metrics.
fn sample(collector: &Collector, name: &str) -> u64 {
    let (status, text) = collector.call("GET", "/metrics", None, None);
    assert_eq!(status, 200, "{text}");
    text.lines()
        .find_map(|l| l.strip_prefix(name)?.strip_prefix(' ')?.parse().ok())
        .unwrap_or_else(|| panic!("no {name} in\n{text}"))
}

/// An admin call; panics unless it answers 200.
fn admin(collector: &Collector, method: &str, path: &str, body: Option<&str>) -> String {
    let (status, text) = collector.call(method, path, Some(ADMIN_TOKEN), body);
    assert_eq!(status, 200, "{method} {path}: {text}");
    text
}

#[test]
fn the_token_goes_only_until_the_key_is_pinned_and_operators_unpin_and_rekey_while_it_runs() {
    if !require_tools(&["curl"]) {
        return;
    }
    let Some(s) = Sandbox::new() else { return };
    s.push(&[("shoal.toml", MOTD_MANIFEST), ("motd", "one\n")], "one");
    let dir = &s.dir;

    let tokens = dir.path().join("enroll-tokens");
    std::fs::write(&tokens, format!("{ENROLL_TOKEN}\n")).expect("tokens");
    let admin_tokens = dir.path().join("admin-tokens");
    std::fs::write(&admin_tokens, format!("{ADMIN_TOKEN}\n")).expect("admin tokens");
    let spec = CollectorSpec::local(dir.path().join("collector-data"), tokens);
    let collector =
        spec.start_with_args(&["--admin-token-file", admin_tokens.to_str().expect("utf-8")]);
    // A device whose config names its enrollment token file.
    let new_device = |name: &str| {
        let device = s.another_device(name);
        let token = dir.path().join(name).join("enroll-token");
        std::fs::write(&token, format!("{ENROLL_TOKEN}\n")).expect("token");
        device.report_to(collector.url(), &token);
        (device, token)
    };
    let (device, token) = new_device("first-device");
    let run = device.agent(&["keygen"]);
    run.assert_ok();
    let key_id = run.stdout.trim().to_owned();
    let pinned = || collector.get("/api/v1/devices/dev-1")["pinned_key_id"].clone();

    // First contact: the report carries the token and pins the key; the device records it.
    device.sync().expect(0, "delivered to the collector");
    assert_eq!(
        sample(&collector, "shoal_reports_with_enroll_token_total"),
        1
    );
    assert_eq!(sample(&collector, "shoal_enrollments_total"), 1);
    assert_eq!(pinned(), key_id.as_str());
    let enrolled = device.state_dir().join("enrolled");
    let record: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&enrolled).expect("enrolled")).expect("json");
    assert_eq!(record["key_id"], key_id.as_str(), "{record}");
    assert_eq!(record["collector"], collector.url(), "{record}");

    // Enrolled: the token file may go; reports keep arriving and none carries the token.
    std::fs::remove_file(&token).expect("remove the token");
    for _ in 0..2 {
        device.sync().expect(0, "delivered to the collector");
    }
    assert_eq!(
        sample(&collector, "shoal_reports_with_enroll_token_total"),
        1
    );
    assert_eq!(sample(&collector, "shoal_reports_accepted_total"), 3);

    // A leaked token does not let another key take the enrolled device id.
    let (impostor, _) = new_device("impostor");
    impostor.sync().expect(0, "key_mismatch");
    assert_eq!(pinned(), key_id.as_str());
    assert_eq!(
        sample(&collector, "shoal_reports_with_enroll_token_total"),
        2
    );

    // The operator unpins the device while the collector runs. Without its token file the
    // device cannot pin itself again, and says why.
    let answer = admin(&collector, "DELETE", "/api/v1/devices/dev-1/key", None);
    assert!(answer.contains(r#""changed":true"#), "{answer}");
    let run = device.sync();
    run.expect(0, "unknown_key");
    run.expect(0, "cannot read the enrollment token");
    assert!(!enrolled.exists(), "the stale record is gone");
    assert_eq!(pinned(), serde_json::Value::Null);
    // With the token back, the next report pins the key again.
    std::fs::write(&token, format!("{ENROLL_TOKEN}\n")).expect("token");
    device.sync().expect(0, "delivered to the collector");
    assert_eq!(pinned(), key_id.as_str());
    assert_eq!(sample(&collector, "shoal_enrollments_total"), 2);
    assert_eq!(
        sample(&collector, "shoal_reports_with_enroll_token_total"),
        3
    );
    assert!(enrolled.exists());

    // Re-keyed to another key: the device's reports are refused with the reason, and a token
    // is no way around it (the agent does not even send it).
    let replacement = SigningKey::generate(dir.path().join("keys"), "replacement");
    let body = serde_json::json!({ "key": replacement.public_line() }).to_string();
    admin(&collector, "PUT", "/api/v1/devices/dev-1/key", Some(&body));
    let run = device.sync();
    run.expect(0, "key_mismatch");
    run.expect(0, &format!("signed by {key_id}"));
    assert_eq!(
        sample(&collector, "shoal_reports_with_enroll_token_total"),
        3
    );
    // Bad admin input and a missing admin token change nothing.
    let (status, text) = collector.call(
        "PUT",
        "/api/v1/devices/dev-1/key",
        Some(ADMIN_TOKEN),
        Some(r#"{"key":"ed25519:nope"}"#),
    );
    assert_eq!(status, 400, "{text}");
    assert!(text.contains("bad_key"), "{text}");
    let (status, text) = collector.call("DELETE", "/api/v1/devices/dev-1/key", None, None);
    assert_eq!(status, 401, "{text}");
    assert_ne!(pinned(), key_id.as_str());
    assert_ne!(pinned(), serde_json::Value::Null);

    // Back to the device's own key: delivered again, still without the token.
    let body = serde_json::json!({ "key": key_id }).to_string();
    admin(&collector, "PUT", "/api/v1/devices/dev-1/key", Some(&body));
    device.sync().expect(0, "delivered to the collector");
    assert_eq!(
        sample(&collector, "shoal_reports_with_enroll_token_total"),
        3
    );
    assert_eq!(pinned(), key_id.as_str());
}

#[test]
fn a_mirror_rebuilt_after_damage_is_reported_failed_with_the_reason_then_converged() {
    let Some(s) = Sandbox::new() else { return };
    if !require_tools(&["curl"]) {
        return;
    }
    let collector = s.report_to_local_collector();
    s.push(&[("shoal.toml", MOTD_MANIFEST), ("motd", "one\n")], "one");
    s.device.sync().expect(0, "report: 1 delivered");

    // A power cut left every pack of the mirror empty (the case of issue 19).
    let packs = s.device.state_dir().join("mirror.git/objects/pack");
    for pack in std::fs::read_dir(&packs).expect("packs") {
        let pack = pack.expect("entry").path();
        if pack.extension().is_some_and(|e| e == "pack" || e == "idx") {
            std::fs::File::create(&pack).expect("truncate");
        }
    }
    let second = s.push(&[("motd", "two\n")], "two");
    s.device.sync().expect(0, "2 delivered");
    assert_eq!(s.read("/etc/motd"), "two\n");

    let history = collector.get("/api/v1/devices/dev-1/history");
    let text = history.to_string();
    let reports: Vec<&serde_json::Value> = history["history"]
        .as_array()
        .unwrap_or_else(|| panic!("no history array: {text}"))
        .iter()
        .map(|entry| &entry["report"])
        .collect();
    let failed = reports
        .iter()
        .position(|r| r["status"] == "failed")
        .unwrap_or_else(|| panic!("no failed report: {text}"));
    assert!(
        reports[failed].to_string().contains("was damaged")
            && reports[failed]
                .to_string()
                .contains("it was rebuilt from the server"),
        "the failed report says why: {text}"
    );
    let converged = reports
        .iter()
        .position(|r| r["status"] == "converged" && r["commit"] == second.as_str())
        .unwrap_or_else(|| panic!("no converged report at {second}: {text}"));
    assert!(
        reports[failed]["sequence"].as_u64() < reports[converged]["sequence"].as_u64(),
        "failed, then converged: {text}"
    );
    assert_eq!(
        collector.get("/api/v1/devices/dev-1")["status"],
        "converged"
    );
}
