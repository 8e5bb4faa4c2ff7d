//! Rollout waves on the device (issue 15, device side): a commit whose `[rollout]` puts this
//! device in a wave that has not opened is verified but not applied; the device reports
//! `pending` with the wave and its opening, keeps the timer across runs (branch mode: from when
//! it first verified the commit; environment mode: from the release's tagger time), starts it
//! again for a newer commit, applies once the wave opens, and the daemon wakes up for the
//! opening instead of waiting out its interval. Real git, real signatures, the real collector.

use std::process::Stdio;
use std::time::{Duration, Instant};

use serde_json::Value;
use shoal_e2e::{
    everyone_after, gateway_config, notify_socket, require_tools, run_daemon, unix_now, Sandbox,
};

fn pending(status: &Value) -> (String, String, u64) {
    let last = &status["last_result"];
    assert_eq!(last["status"], "pending", "{status}");
    let p = &last["pending"];
    (
        p["commit"].as_str().expect("commit").to_owned(),
        p["wave"].as_str().expect("wave").to_owned(),
        p["opens_at"].as_u64().expect("opens_at"),
    )
}

#[test]
fn a_device_waits_for_its_wave_keeps_the_timer_and_follows_a_newer_commit() {
    if !require_tools(&["curl"]) {
        return;
    }
    let Some(s) = Sandbox::over_git_daemon() else {
        return;
    };
    let collector = s.report_to_local_collector();

    let first = s.push(&gateway_config("first\n"), "first");
    s.device.sync().expect(0, "applied generation 1");

    // A commit whose rollout opens this device's wave in an hour: verified, not applied.
    let slow = s.push_with_rollout("slow\n", &everyone_after("1h"));
    let began = unix_now();
    let run = s.device.sync();
    run.expect(
        0,
        &format!("pending: commit {slow} waits for its rollout wave \"all\" (wave 2 of 2, bucket "),
    )
    .expect(
        0,
        "(3600s after when this device first verified it); nothing is applied until then",
    );
    assert_eq!(s.read("/etc/motd"), "first\n");
    let status = s.status();
    assert_eq!(status["generation"], 1, "{status}");
    assert_eq!(status["applied_commit"], first.as_str(), "{status}");
    let (commit, wave, opens_at) = pending(&status);
    assert_eq!((commit.as_str(), wave.as_str()), (slow.as_str(), "all"));
    assert!(
        (began + 3600..=unix_now() + 3600).contains(&opens_at),
        "{opens_at}"
    );
    // The collector shows it pending, with the wave and the opening; the summary counts it.
    let seen = collector.get("/api/v1/devices/dev-1");
    assert_eq!(seen["status"], "pending", "{seen}");
    assert_eq!(
        seen["commit"],
        first.as_str(),
        "still at the applied commit: {seen}"
    );
    assert_eq!(seen["pending"]["commit"], slow.as_str(), "{seen}");
    assert_eq!(seen["pending"]["wave"], "all", "{seen}");
    assert_eq!(seen["pending"]["opens_at"], opens_at, "{seen}");
    assert_eq!(collector.get("/api/v1/summary")["by_status"]["pending"], 1);

    // Another run (a restart, a SIGHUP) does not start the timer again; a dry run says the same.
    std::thread::sleep(Duration::from_millis(1100));
    s.device.sync().expect(0, "pending: ");
    assert_eq!(pending(&s.status()).2, opens_at, "the timer was reset");
    s.device
        .agent(&["sync", "--dry-run"])
        .expect(0, "dry run: pending: ")
        .expect(0, &format!("commit {slow} waits"));

    // A newer commit arrives while the device waits: its own timer, from when it was verified.
    let fast = s.push_with_rollout("fast\n", &everyone_after("2s"));
    s.device
        .sync()
        .expect(0, &format!("pending: commit {fast} waits"));
    let (commit, _, fast_opens) = pending(&s.status());
    assert_eq!(commit, fast);
    assert!(
        fast_opens < opens_at && fast_opens <= unix_now() + 2,
        "{fast_opens}"
    );
    assert_eq!(s.read("/etc/motd"), "first\n");
    while unix_now() < fast_opens {
        std::thread::sleep(Duration::from_millis(200));
    }
    s.device.sync().expect(0, "applied generation 2");
    assert_eq!(s.read("/etc/motd"), "fast\n");
    assert_eq!(s.status()["last_result"]["status"], "converged");
    let seen = collector.get("/api/v1/devices/dev-1");
    assert_eq!(seen["status"], "converged", "{seen}");
    assert!(seen.get("pending").is_none_or(Value::is_null), "{seen}");

    // A wave that selects this device by its labels opens at once, whatever its bucket.
    let canary = s.push_with_rollout(
        "canary\n",
        "[rollout]\nwaves = [ { name = \"gateways first\", match = { labels = { role = \"gateway\" } } },\n          { name = \"all\", percent = 100, after = \"6h\" } ]\n",
    );
    s.device.sync().expect(0, "applied generation 3");
    assert_eq!(s.read("/etc/motd"), "canary\n");
    assert_eq!(s.device.applied().as_deref(), Some(canary.as_str()));
}

#[test]
fn in_environment_mode_the_wave_opens_after_the_releases_tagger_time() {
    let Some(s) = Sandbox::over_git_daemon() else {
        return;
    };
    s.device.follow_environment("production");
    let bare = s.dir.path().join("srv/config.git");
    let release = |name: &str, commit: &str, tagged: u64| {
        let message = format!("Release {name}\n\nExpires: 2099-01-01T00:00:00Z");
        s.repo
            .tag_signed(&s.key, name, commit, &message, Some(tagged as i64));
        s.repo.publish_ref(
            &bare,
            &format!("refs/tags/{name}"),
            "refs/shoal/releases/production",
        );
    };

    // Released two hours ago with a one-hour wave: open already, applied at once.
    let old = s.push_with_rollout("released earlier\n", &everyone_after("1h"));
    release("production/1", &old, unix_now() - 7200);
    s.device.sync().expect(0, "applied generation 1");
    assert_eq!(s.read("/etc/motd"), "released earlier\n");

    // Released now: the wave opens an hour after the tagger time, the same instant on every
    // device of the wave (the signed tag says when, not each device's first sight).
    let new = s.push_with_rollout("released now\n", &everyone_after("1h"));
    let tagged = unix_now();
    release("production/2", &new, tagged);
    s.device
        .sync()
        .expect(0, &format!("pending: commit {new} waits"))
        .expect(0, "(3600s after the tagger time of release production/2)");
    let (commit, wave, opens_at) = pending(&s.status());
    assert_eq!(
        (commit.as_str(), wave.as_str(), opens_at),
        (new.as_str(), "all", tagged + 3600)
    );
    assert_eq!(s.read("/etc/motd"), "released earlier\n");
    assert_eq!(
        s.status()["release"]["number"],
        1,
        "the release applied is still 1"
    );

    // A device clock behind the release bot's (here: a tag made ten minutes in the device's
    // future) delays it, even for a wave that opens at once: it waits until its own clock
    // reaches the tagger time. (A clock ahead is the first case above: it applies at once.)
    let future = s.push_with_rollout("from the future\n", &everyone_after("0s"));
    let tagged = unix_now() + 600;
    release("production/3", &future, tagged);
    s.device
        .sync()
        .expect(0, &format!("pending: commit {future} waits"));
    assert_eq!(pending(&s.status()).2, tagged);
    assert_eq!(s.read("/etc/motd"), "released earlier\n");
}

/// The daemon, with an interval of an hour, sleeps until the wave opens and applies then,
/// without a SIGHUP.
#[test]
fn the_daemon_wakes_when_the_wave_opens() {
    let Some(s) = Sandbox::over_git_daemon() else {
        return;
    };
    let config = std::fs::read_to_string(s.device.config_path()).expect("agent.toml");
    std::fs::write(
        s.device.config_path(),
        config.replace("interval = \"60s\"", "interval = \"1h\""),
    )
    .expect("agent.toml");
    s.push(&gateway_config("first\n"), "first");
    s.device.sync().expect(0, "applied generation 1");
    let waiting = s.push_with_rollout("after the wave\n", &everyone_after("4s"));

    let (socket_path, socket) = notify_socket(s.dir.path());
    let mut daemon = run_daemon(&s.device.config_path(), &socket_path, Stdio::piped());
    let deadline = Instant::now() + Duration::from_secs(60);
    let mut saw_pending = false;
    while s.device.applied().as_deref() != Some(waiting.as_str()) {
        // `status` answers while the daemon's sync holds the state.
        saw_pending |= s.status()["last_result"]["status"] == "pending";
        if Instant::now() > deadline {
            let _ = daemon.kill();
            let out = daemon.wait_with_output().expect("daemon output");
            panic!(
                "the daemon did not apply the commit when its wave opened:\n{}",
                String::from_utf8_lossy(&out.stderr)
            );
        }
        let mut buf = [0u8; 4096];
        let _ = socket.recv(&mut buf);
    }
    let _ = daemon.kill();
    let _ = daemon.wait();
    assert!(saw_pending, "the device never reported pending first");
    assert_eq!(s.read("/etc/motd"), "after the wave\n");
}
