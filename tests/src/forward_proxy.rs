//! `ForwardProxy`: a real HTTP forward proxy (Debian's `tinyproxy`) started by the test on a free
//! loopback port with a configuration of its own in a temp dir, optionally requiring basic auth,
//! logging every request (a `CONNECT host:port` for each HTTPS tunnel), stopped by its PID.

use std::net::{Ipv4Addr, TcpListener};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use crate::requirements::require_tool;

pub struct ForwardProxy {
    dir: tempfile::TempDir,
    port: u16,
    child: Option<Child>,
}

impl ForwardProxy {
    /// An open proxy, or `None` (after a loud skip, or a panic under `SHOAL_E2E=1`) without
    /// tinyproxy.
    pub fn start() -> Option<Self> {
        Self::start_with(None)
    }

    /// A proxy that answers 407 unless the request carries basic auth `user:password`.
    pub fn start_requiring(user: &str, password: &str) -> Option<Self> {
        Self::start_with(Some((user, password)))
    }

    fn start_with(auth: Option<(&str, &str)>) -> Option<Self> {
        if !require_tool("tinyproxy") {
            return None;
        }
        let dir = tempfile::tempdir().expect("a temp dir for the proxy");
        let port = TcpListener::bind((Ipv4Addr::LOCALHOST, 0))
            .and_then(|l| l.local_addr())
            .expect("a free port")
            .port();
        let mut config = format!(
            "Port {port}\nListen 127.0.0.1\nTimeout 60\nLogFile \"{}\"\nLogLevel Info\n\
             MaxClients 50\nDisableViaHeader Yes\n",
            dir.path().join("tinyproxy.log").display()
        );
        if let Some((user, password)) = auth {
            config.push_str(&format!("BasicAuth {user} {password}\n"));
        }
        let config_path = dir.path().join("tinyproxy.conf");
        std::fs::write(&config_path, config).expect("write tinyproxy.conf");
        let mut command = Command::new("tinyproxy");
        command
            .arg("-d")
            .arg("-c")
            .arg(&config_path)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null());
        crate::command::die_with_parent(&mut command);
        let child = command
            .spawn()
            .unwrap_or_else(|e| panic!("cannot start tinyproxy: {e}"));
        let mut proxy = ForwardProxy {
            dir,
            port,
            child: Some(child),
        };
        let deadline = Instant::now() + Duration::from_secs(10);
        while !proxy.log().contains("Accepting connections") {
            if let Some(Ok(Some(status))) = proxy.child.as_mut().map(Child::try_wait) {
                panic!("tinyproxy exited ({status}):\n{}", proxy.log());
            }
            assert!(
                Instant::now() < deadline,
                "tinyproxy did not start within 10 s:\n{}",
                proxy.log()
            );
            std::thread::sleep(Duration::from_millis(20));
        }
        Some(proxy)
    }

    /// `http://127.0.0.1:PORT`.
    pub fn url(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    /// The requests the proxy received, as its log shows them (`CONNECT localhost:8443 HTTP/1.1`,
    /// `POST http://127.0.0.1:9000/api/v1/reports HTTP/1.1`).
    pub fn requests(&self) -> Vec<String> {
        self.log()
            .lines()
            .filter_map(|l| l.split_once("Request (file descriptor ").map(|(_, r)| r))
            .filter_map(|r| r.split_once("): ").map(|(_, r)| r.to_owned()))
            .collect()
    }

    /// tinyproxy's log.
    pub fn log(&self) -> String {
        std::fs::read_to_string(self.log_path()).unwrap_or_default()
    }

    fn log_path(&self) -> std::path::PathBuf {
        Path::new(self.dir.path()).join("tinyproxy.log")
    }

    /// Kills tinyproxy (by its PID) and waits for it: its port refuses connections afterwards.
    pub fn stop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

impl Drop for ForwardProxy {
    fn drop(&mut self) {
        self.stop();
    }
}
