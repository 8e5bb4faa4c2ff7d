//! Reports end to end: the real agent enrolls with a token and reports to the real collector
//! over HTTP; with the collector down, reports wait in the outbox across agent runs and arrive,
//! each once, when it is back.

use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::{Child, Command, Stdio};

use shoal_e2e::{
    collector_bin, require_tools, write_allowed_signers, ConfigRepo, Device, SigningKey,
};

/// A running `shoal-collector serve`, killed by PID on drop.
struct Collector {
    child: Child,
    url: String,
}

impl Collector {
    fn start(data: &Path, enroll: &Path, listen: &str) -> Collector {
        let mut child = Command::new(collector_bin())
            .args(["serve", "--listen", listen, "--data"])
            .arg(data)
            .arg("--enroll-token-file")
            .arg(enroll)
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("start shoal-collector");
        let stdout = child.stdout.take().expect("stdout");
        let mut line = String::new();
        BufReader::new(stdout)
            .read_line(&mut line)
            .expect("read the listen line");
        let url = line
            .trim()
            .strip_prefix("listening on ")
            .unwrap_or_else(|| panic!("unexpected first line {line:?}"))
            .to_owned();
        Collector { child, url }
    }

    fn get(&self, path: &str) -> serde_json::Value {
        let out = Command::new("curl")
            .args(["-sS", "--fail-with-body", &format!("{}{path}", self.url)])
            .output()
            .expect("curl");
        assert!(
            out.status.success(),
            "GET {path}: {}",
            String::from_utf8_lossy(&out.stdout)
        );
        serde_json::from_slice(&out.stdout).expect("JSON")
    }

    /// SIGKILL: no graceful flush; whatever the collector acknowledged must survive it.
    fn kill(mut self) -> String {
        let _ = Command::new("kill")
            .args(["-KILL", &self.child.id().to_string()])
            .status();
        let _ = self.child.wait();
        self.url.clone()
    }
}

impl Drop for Collector {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

#[test]
fn reports_enroll_survive_a_collector_outage_and_arrive_once() {
    if !require_tools(&["git", "ssh-keygen", "curl"]) {
        return;
    }
    let dir = tempfile::tempdir().expect("tempdir");
    let key = SigningKey::generate(dir.path().join("keys"), "operator");
    let signers = dir.path().join("allowed_signers");
    write_allowed_signers(&signers, &[("operator@example", &key)]);
    let repo = ConfigRepo::init(dir.path().join("work"));
    let manifest = "version = 1\n[[profile]]\nname = \"base\"\nmatch = \"*\"\n  [[profile.file]]\n  path = \"/etc/motd\"\n  source = \"motd\"\n";
    repo.write("shoal.toml", manifest);
    repo.write("motd", "one\n");
    let first = repo.commit_signed(&key, "one");
    let bare = dir.path().join("srv/config.git");
    repo.publish_to(&bare);

    let enroll = dir.path().join("enroll-token");
    std::fs::write(&enroll, "enroll-token-0123456789abcdef\n").expect("token");
    let data = dir.path().join("collector-data");
    let collector = Collector::start(&data, &enroll, "127.0.0.1:0");
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
        collector.url,
        enroll.display()
    );
    std::fs::write(device.config_path(), with_collector).expect("write");

    device.sync().expect(0, "report: 1 delivered");
    let seen = collector.get("/api/v1/devices/dev-1");
    assert_eq!(seen["status"], "converged", "{seen}");
    assert_eq!(seen["commit"], first.as_str(), "{seen}");

    // The collector is killed; the device keeps converging and queues what it would report.
    let url = collector.kill();
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
    let listen = url.trim_start_matches("http://");
    let collector = Collector::start(&data, &enroll, listen);
    device.sync().expect(0, "delivered");
    let seen = collector.get("/api/v1/devices/dev-1");
    assert_eq!(seen["commit"], second.as_str(), "{seen}");
    assert_eq!(seen["status"], "converged");
    let history = collector.get("/api/v1/devices/dev-1/history");
    let text = history.to_string();
    let sequences: Vec<u64> = history
        .as_array()
        .or_else(|| history["history"].as_array())
        .map(|a| a.iter().filter_map(|r| r["sequence"].as_u64()).collect())
        .unwrap_or_default();
    let mut unique = sequences.clone();
    unique.dedup();
    assert_eq!(sequences, unique, "no report counted twice: {text}");
    let status: serde_json::Value =
        serde_json::from_str(&device.agent(&["status", "--json"]).stdout).expect("status");
    assert_eq!(status["queued_reports"], 0, "{status}");
    let summary = collector.get("/api/v1/summary");
    assert_eq!(summary["total"], 1, "{summary}");
}
