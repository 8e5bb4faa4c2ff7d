//! `shoal-agent run` as systemd would run it: READY=1 on the notify socket, a sync at start and
//! at once on SIGHUP, one daemon per state directory, and a clean stop on SIGTERM; in
//! environment mode, no backoff while the release is stale.

use std::os::unix::net::UnixDatagram;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use shoal_e2e::{notify_socket, require_tools, run_daemon, Sandbox, MOTD_MANIFEST};

/// Kills the daemon by PID if a test fails before stopping it.
struct Daemon(Child);

impl Drop for Daemon {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn signal(child: &Child, sig: &str) {
    let ok = Command::new("kill")
        .args(["-s", sig, &child.id().to_string()])
        .status()
        .expect("kill")
        .success();
    assert!(ok, "kill -s {sig} failed");
}

/// Reads notifications until one contains `needle`, or panics after `timeout`.
fn wait_for(socket: &UnixDatagram, needle: &str, timeout: Duration) -> String {
    let deadline = Instant::now() + timeout;
    let mut seen = Vec::new();
    while Instant::now() < deadline {
        let mut buf = [0u8; 4096];
        if let Ok(n) = socket.recv(&mut buf) {
            let text = String::from_utf8_lossy(&buf[..n]).into_owned();
            if text.contains(needle) {
                return text;
            }
            seen.push(text);
        }
    }
    panic!("no notification containing {needle:?} within {timeout:?}; saw {seen:?}");
}

#[test]
fn daemon_notifies_ready_syncs_on_sighup_refuses_a_second_instance_and_stops_on_sigterm() {
    if !require_tools(&["kill"]) {
        return;
    }
    let Some(s) = Sandbox::new() else { return };
    s.push(&[("shoal.toml", MOTD_MANIFEST), ("motd", "one\n")], "one");
    let device = &s.device;
    // A long interval: the second sync can only come from SIGHUP.
    let config = std::fs::read_to_string(device.config_path()).expect("read");
    std::fs::write(
        device.config_path(),
        config.replace("interval = \"60s\"", "interval = \"1h\""),
    )
    .expect("write");

    let (socket_path, socket) = notify_socket(s.dir.path());
    let spawn = || run_daemon(&device.config_path(), &socket_path, Stdio::piped());
    let daemon = Daemon(spawn());
    wait_for(&socket, "READY=1", Duration::from_secs(20));
    wait_for(
        &socket,
        "STATUS=converged: generation 1",
        Duration::from_secs(30),
    );
    assert_eq!(s.read("/etc/motd"), "one\n");

    let second = spawn().wait_with_output().expect("second daemon");
    assert_eq!(second.status.code(), Some(1));
    let stderr = String::from_utf8_lossy(&second.stderr);
    assert!(
        stderr.contains("another `shoal-agent run` is already running"),
        "{stderr}"
    );

    s.push(&[("motd", "two\n")], "two");
    signal(&daemon.0, "HUP");
    wait_for(
        &socket,
        "STATUS=converged: generation 2",
        Duration::from_secs(30),
    );
    assert_eq!(s.read("/etc/motd"), "two\n");

    signal(&daemon.0, "TERM");
    wait_for(&socket, "STOPPING=1", Duration::from_secs(20));
    let mut daemon = daemon;
    let status = daemon.0.wait().expect("wait");
    assert!(status.success(), "SIGTERM is a clean stop: {status:?}");
}

/// Every notification until `count` of them contain `needle`, or a panic after `timeout`.
fn wait_for_many(socket: &UnixDatagram, needle: &str, count: usize, timeout: Duration) {
    let deadline = Instant::now() + timeout;
    let mut seen = 0;
    while seen < count {
        let left = deadline.saturating_duration_since(Instant::now());
        assert!(
            !left.is_zero(),
            "only {seen} of {count} notifications containing {needle:?} within {timeout:?}"
        );
        wait_for(socket, needle, left);
        seen += 1;
    }
}

/// Environment mode under the daemon: a stale release is not a failure to back off from. The
/// daemon keeps looking every interval while the release is expired, so a fresh release is
/// applied at the next one (with the failure backoff, the sixth look alone would take 31
/// intervals).
#[test]
fn a_stale_release_keeps_the_daemon_at_its_interval_and_a_fresh_release_converges() {
    if !require_tools(&["kill"]) {
        return;
    }
    let Some(s) = Sandbox::new() else { return };
    let device = &s.device;
    device.follow_environment("production");
    let config = std::fs::read_to_string(device.config_path()).expect("read");
    std::fs::write(
        device.config_path(),
        config.replace("interval = \"60s\"", "interval = \"1s\""),
    )
    .expect("write");
    let bare = s.dir.path().join("srv/config.git");
    let release = |name: &str, commit: &str, expires: &str| {
        let message = format!("Release {name}\n\nExpires: {expires}");
        s.repo.tag_signed(&s.key, name, commit, &message, None);
        s.repo.publish_ref(
            &bare,
            &format!("refs/tags/{name}"),
            "refs/shoal/releases/production",
        );
    };
    let one = s.push(&[("shoal.toml", MOTD_MANIFEST), ("motd", "one\n")], "one");
    release("production/1", &one, "2099-01-01T00:00:00Z");

    let (socket_path, socket) = notify_socket(s.dir.path());
    let daemon = Daemon(run_daemon(
        &device.config_path(),
        &socket_path,
        Stdio::null(),
    ));
    wait_for(
        &socket,
        "STATUS=converged: generation 1",
        Duration::from_secs(30),
    );

    let two = s.push(&[("motd", "two\n")], "two");
    release("production/2", &two, "2020-01-01T00:00:00Z");
    wait_for_many(
        &socket,
        "STATUS=stale: not applying release tag",
        6,
        Duration::from_secs(20),
    );
    assert_eq!(s.read("/etc/motd"), "one\n");

    release("production/3", &two, "2099-01-01T00:00:00Z");
    wait_for(
        &socket,
        "STATUS=converged: generation 2",
        Duration::from_secs(10),
    );
    assert_eq!(s.read("/etc/motd"), "two\n");
    signal(&daemon.0, "TERM");
    wait_for(&socket, "STOPPING=1", Duration::from_secs(20));
}
