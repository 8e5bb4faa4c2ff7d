//! `GitDaemon`: a real `git daemon` serving git:// on a free loopback port, killed by PID when dropped.

use std::fs::File;
use std::net::{Ipv4Addr, SocketAddr, TcpListener, TcpStream};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use tempfile::TempDir;

use crate::command::{describe, git_exec_path, isolate_git};

/// How often a daemon that lost the race for its port is restarted on another one.
const START_ATTEMPTS: usize = 5;
const START_TIMEOUT: Duration = Duration::from_secs(10);

/// `git daemon --export-all` over a directory of bare repositories.
#[derive(Debug)]
pub struct GitDaemon {
    child: Child,
    port: u16,
    log_dir: TempDir,
}

impl GitDaemon {
    /// Serves every repository under `base_path`; returns once the port accepts connections.
    pub fn start(base_path: impl AsRef<Path>) -> Self {
        let base_path = base_path.as_ref();
        let log_dir =
            tempfile::tempdir().expect("cannot make a temporary directory for the daemon log");
        let mut last_log = String::new();
        for _ in 0..START_ATTEMPTS {
            // The port is free now; the daemon may still lose it to another process, hence the retries.
            let port = free_port();
            let log_path = log_dir.path().join("git-daemon.log");
            let log = File::create(&log_path).expect("cannot create the daemon log");
            let mut cmd = Command::new(git_exec_path().join("git-daemon"));
            isolate_git(&mut cmd)
                .arg(format!("--base-path={}", base_path.display()))
                .args(["--export-all", "--reuseaddr", "--informative-errors"])
                .args(["--listen=127.0.0.1", &format!("--port={port}")])
                .stdin(Stdio::null())
                .stdout(Stdio::null())
                .stderr(log);
            let mut child = cmd
                .spawn()
                .unwrap_or_else(|e| panic!("cannot start `{}`: {e}", describe(&cmd)));
            if wait_until_listening(&mut child, port) {
                return GitDaemon {
                    child,
                    port,
                    log_dir,
                };
            }
            // Neither listening nor (after the timeout) alive: this child is ours to end.
            let _ = child.kill();
            let _ = child.wait();
            last_log = std::fs::read_to_string(&log_path).unwrap_or_default();
        }
        panic!(
            "`git daemon` did not start after {START_ATTEMPTS} attempts; its last log:\n{last_log}"
        );
    }

    /// `git://127.0.0.1:PORT/repo_name`.
    pub fn url(&self, repo_name: &str) -> String {
        format!("git://127.0.0.1:{}/{repo_name}", self.port)
    }

    pub fn port(&self) -> u16 {
        self.port
    }

    /// What the daemon wrote on stderr so far (errors; handy in a failing test's message).
    pub fn log(&self) -> String {
        std::fs::read_to_string(self.log_dir.path().join("git-daemon.log")).unwrap_or_default()
    }
}

impl Drop for GitDaemon {
    fn drop(&mut self) {
        // `child` is the daemon itself (not a `git` wrapper), so this ends exactly what we started.
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A port that was free a moment ago.
fn free_port() -> u16 {
    TcpListener::bind((Ipv4Addr::LOCALHOST, 0))
        .and_then(|listener| listener.local_addr())
        .expect("cannot bind a loopback port")
        .port()
}

/// True once `port` accepts connections; false if the child exits first or the timeout passes.
fn wait_until_listening(child: &mut Child, port: u16) -> bool {
    let addr = SocketAddr::from((Ipv4Addr::LOCALHOST, port));
    let deadline = Instant::now() + START_TIMEOUT;
    while Instant::now() < deadline {
        if let Ok(Some(_exited)) = child.try_wait() {
            return false;
        }
        if TcpStream::connect_timeout(&addr, Duration::from_millis(200)).is_ok() {
            // Someone answers; make sure it is our daemon and not a process that took the port.
            std::thread::sleep(Duration::from_millis(20));
            return matches!(child.try_wait(), Ok(None));
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    false
}
