//! The agent as a systemd service inside a real systemd: `systemd/shoal-agent.service` as shipped
//! (Type=notify, watchdog, hardening) starts, converges on its own, and survives
//! `systemctl kill -s KILL shoal-agent` in the middle of an apply: systemd restarts it, the
//! journal brings every file back to one generation, and the agent converges again.

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use shoal_e2e::{
    agent_bin, copy_tree, require_tools, write_allowed_signers, ConfigRepo, SigningKey, SystemdHost,
};

const GUEST_DIR: &str = "/srv/shoal";
/// Enough files that an apply takes a while to fsync: the kill must land inside it.
const FILES: usize = 1500;

fn wait_until(what: &str, timeout: Duration, mut done: impl FnMut() -> bool) {
    let deadline = Instant::now() + timeout;
    while Instant::now() < deadline {
        if done() {
            return;
        }
        std::thread::sleep(Duration::from_millis(5));
    }
    panic!("timed out after {timeout:?} waiting for {what}");
}

#[test]
fn the_agent_unit_converges_on_its_own_and_survives_kill_9_mid_apply() {
    if !require_tools(&["git", "ssh-keygen"]) {
        return;
    }
    let Some(host) = SystemdHost::boot() else {
        return;
    };
    let here = |guest: &str| -> PathBuf { host.root().join(guest.trim_start_matches('/')) };
    let work = tempfile::tempdir().expect("tempdir");
    let key = SigningKey::generate(work.path().join("keys"), "operator");
    std::fs::create_dir_all(here(GUEST_DIR)).expect("guest dir");
    write_allowed_signers(
        here(&format!("{GUEST_DIR}/allowed_signers")),
        &[("operator@example", &key)],
    );
    std::fs::copy(agent_bin(), here("/usr/local/bin/shoal-agent")).expect("install the agent");
    std::fs::create_dir_all(here("/etc/shoal")).expect("/etc/shoal");
    std::fs::write(
        here("/etc/shoal/agent.toml"),
        format!(
            "device_id = \"unit-1\"\nstate_dir = \"/var/lib/shoal\"\nroot = \"/\"\n[source]\nurl = \"{GUEST_DIR}/config.git\"\nref = \"refs/heads/main\"\ninterval = \"1h\"\n[trust]\nallowed_signers = \"{GUEST_DIR}/allowed_signers\"\n"
        ),
    )
    .expect("agent.toml");
    // The unit as shipped, but restarted after 1 s instead of 10 s to keep the test short.
    let unit = std::fs::read_to_string(
        Path::new(env!("CARGO_MANIFEST_DIR")).join("../systemd/shoal-agent.service"),
    )
    .expect("systemd/shoal-agent.service")
    .replace("RestartSec=10s", "RestartSec=1s");
    std::fs::write(here("/etc/systemd/system/shoal-agent.service"), unit)
        .expect("install the unit");

    let repo = ConfigRepo::init(work.path().join("repo"));
    let mut manifest = String::from("version = 1\n[[profile]]\nname = \"base\"\nmatch = \"*\"\n");
    for i in 0..FILES {
        manifest.push_str(&format!(
            "  [[profile.file]]\n  path = \"/opt/fleet/f{i:04}\"\n  source = \"files/f{i:04}\"\n"
        ));
    }
    let publish = |version: &str| -> String {
        repo.write("shoal.toml", &manifest);
        for i in 0..FILES {
            repo.write(format!("files/f{i:04}"), format!("{version} {i}\n"));
        }
        let id = repo.commit_signed(&key, version);
        let published = work.path().join("config.git");
        repo.publish_to(&published);
        let guest = here(&format!("{GUEST_DIR}/config.git"));
        let _ = std::fs::remove_dir_all(&guest);
        copy_tree(&published, &guest);
        id
    };
    let last_result = || -> serde_json::Value {
        std::fs::read_to_string(here("/var/lib/shoal/last-result.json"))
            .ok()
            .and_then(|t| serde_json::from_str(&t).ok())
            .unwrap_or(serde_json::Value::Null)
    };
    let all_files_are = |version: &str| -> bool {
        (0..FILES).all(|i| {
            std::fs::read_to_string(here(&format!("/opt/fleet/f{i:04}"))).ok()
                == Some(format!("{version} {i}\n"))
        })
    };

    let v1 = publish("v1");
    host.systemctl(&["daemon-reload"]);
    // Type=notify: this returns once the agent said READY=1.
    host.systemctl(&["start", "shoal-agent.service"]);
    assert_eq!(host.show("shoal-agent.service", "ActiveState"), "active");
    wait_until("the first convergence", Duration::from_secs(120), || {
        last_result()["commit"] == v1.as_str() && last_result()["status"] == "converged"
    });
    assert!(all_files_are("v1"));

    // A new commit, a reload (SIGHUP), and SIGKILL as soon as the apply's journal exists.
    let v2 = publish("v2");
    let first_pid = host.main_pid("shoal-agent.service");
    host.systemctl(&["reload", "shoal-agent.service"]);
    wait_until("the apply of v2 to start", Duration::from_secs(60), || {
        here("/var/lib/shoal/journal.json").exists()
    });
    host.systemctl(&["kill", "-s", "KILL", "shoal-agent.service"]);
    // The files are now a mix; systemd restarts the agent, which recovers and converges.
    wait_until(
        "systemd to restart the agent",
        Duration::from_secs(30),
        || {
            let pid = host.main_pid("shoal-agent.service");
            pid != 0 && pid != first_pid
        },
    );
    wait_until(
        "convergence to v2 after the kill",
        Duration::from_secs(180),
        || last_result()["commit"] == v2.as_str() && last_result()["status"] == "converged",
    );
    assert!(
        all_files_are("v2"),
        "every file at v2 after recovery and re-apply"
    );
    assert!(
        !here("/var/lib/shoal/journal.json").exists(),
        "no journal left"
    );
    let log = host.exec(&["journalctl", "-u", "shoal-agent.service", "--no-pager"]);
    let log = String::from_utf8_lossy(&log.stdout);
    assert!(
        log.contains("recovered an interrupted apply"),
        "the restart found the journal:\n{log}"
    );
}
