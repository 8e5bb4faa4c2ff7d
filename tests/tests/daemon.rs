//! `shoal-agent run` as systemd would run it: READY=1 on the notify socket, a sync at start and
//! at once on SIGHUP, one daemon per state directory, and a clean stop on SIGTERM.

use std::os::unix::net::UnixDatagram;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use shoal_e2e::{agent_bin, require_tools, Sandbox, MOTD_MANIFEST};

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

    let socket_path = s.dir.path().join("notify.sock");
    let socket = UnixDatagram::bind(&socket_path).expect("bind notify socket");
    socket
        .set_read_timeout(Some(Duration::from_millis(200)))
        .expect("timeout");
    let spawn = || {
        Command::new(agent_bin())
            .arg("--config")
            .arg(device.config_path())
            .arg("run")
            .env("NOTIFY_SOCKET", &socket_path)
            .env("SHOAL_LOG", "info")
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .expect("spawn shoal-agent run")
    };
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
