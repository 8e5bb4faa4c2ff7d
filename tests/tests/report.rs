//! Reports end to end: the real agent enrolls with a token and reports to the real collector
//! over HTTP; with the collector down, reports wait in the outbox across agent runs and arrive,
//! each once, when it is back.

use shoal_e2e::{
    require_tools, write_allowed_signers, Collector, CollectorSpec, ConfigRepo, Device, SigningKey,
};

#[test]
fn reports_enroll_survive_a_collector_outage_and_arrive_once() {
    if !require_tools(&["git", "ssh-keygen", "curl"]) {
        return;
    }
    let dir = tempfile::tempdir().expect("tempdir");
    let key = SigningKey::generate(dir.path().join("keys"), "operator");
    let signers = dir.path().join("allowed_signers");
    write_allowed_signers(&signers, &[("operator@example", &key)]);
    let (repo, first) = ConfigRepo::init_motd(dir.path().join("work"), &key, "one");
    let bare = dir.path().join("srv/config.git");
    repo.publish_to(&bare);

    let enroll = dir.path().join("enroll-token");
    std::fs::write(&enroll, "enroll-token-0123456789abcdef\n").expect("token");
    let data = dir.path().join("collector-data");
    let mut spec = CollectorSpec {
        data,
        enroll_token_file: enroll.clone(),
        listen: "127.0.0.1:0".into(),
        tls: None,
        hub: None,
    };
    let collector = Collector::start(&spec);
    let extra = "";
    let device = Device::new(
        dir.path().join("device"),
        &bare.display().to_string(),
        &signers,
        "range",
        extra,
    );
    let config = std::fs::read_to_string(device.config_path()).expect("read");
    let with_collector = format!(
        "{config}\n[collector]\nurl = \"{}\"\nenroll_token_file = \"{}\"\n",
        collector.url(),
        enroll.display()
    );
    std::fs::write(device.config_path(), with_collector).expect("write");

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
    repo.write("motd", "two\n");
    let second = repo.commit_signed(&key, "two");
    repo.publish_to(&bare);
    device.sync().expect(0, "queued for later");
    device.sync().expect(0, "up to date");
    let status: serde_json::Value =
        serde_json::from_str(&device.agent(&["status", "--json"]).stdout).expect("status");
    assert!(
        status["queued_reports"].as_u64().unwrap_or(0) >= 1,
        "{status}"
    );

    // Back on the same address and store: the queue drains, nothing is counted twice.
    let collector = Collector::start(&spec);
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
