//! `Collector`: the workspace's real `shoal-collector serve`, as a child process started from the
//! path of its binary (optionally over TLS, optionally inside a network namespace), read through
//! its HTTP API with `curl`, stopped by signal; only ever the process it started, by PID.

use std::io::{BufRead, BufReader};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};

/// How to start one; [`Collector::start`] takes it by reference so a test can start the same
/// collector again (same store, same address) after stopping it.
#[derive(Debug, Clone)]
pub struct CollectorSpec {
    /// The `shoal-collector` binary (`env!("CARGO_BIN_EXE_shoal-collector")` in the server's
    /// tests, the workspace's build in the end-to-end harness).
    pub bin: PathBuf,
    /// The embedded store's directory (`--data`); empty when the store is given in `args`
    /// instead (`--store URL`, see [`CollectorSpec::postgres`]).
    pub data: PathBuf,
    /// `IP:PORT`; port 0 picks a free one (see [`Collector::listen`]).
    pub listen: String,
    /// More `serve` flags (`--enroll-token-file F`, `--admin-token-file F`, …).
    pub args: Vec<String>,
    /// Serve HTTPS with these files.
    pub tls: Option<TlsFiles>,
    /// Run inside this network namespace (`/proc/PID/ns/net`), through `nsenter`.
    pub netns: Option<PathBuf>,
    /// Where its stderr goes (with `RUST_LOG=info`); inherited from the test when `None`.
    pub log: Option<PathBuf>,
}

/// The certificate files of an HTTPS collector.
#[derive(Debug, Clone)]
pub struct TlsFiles {
    /// The server's certificate chain (PEM), `--tls-cert`.
    pub cert_chain: PathBuf,
    /// Its private key (PEM), `--tls-key`.
    pub key: PathBuf,
    /// The CA that signed it (PEM), which `curl` trusts.
    pub ca: PathBuf,
}

impl CollectorSpec {
    /// `bin serve --listen 127.0.0.1:0 --data data`, plain HTTP, stderr inherited.
    pub fn new(bin: impl Into<PathBuf>, data: impl Into<PathBuf>) -> CollectorSpec {
        CollectorSpec {
            bin: bin.into(),
            data: data.into(),
            listen: "127.0.0.1:0".to_owned(),
            args: Vec::new(),
            tls: None,
            netns: None,
            log: None,
        }
    }

    /// `bin serve --listen 127.0.0.1:0 --store url`: a collector on PostgreSQL.
    pub fn postgres(bin: impl Into<PathBuf>, url: &str) -> CollectorSpec {
        CollectorSpec::new(bin, PathBuf::new()).args(&["--store", url])
    }

    /// Adds `serve` flags.
    pub fn args<S: AsRef<str>>(mut self, args: &[S]) -> CollectorSpec {
        self.args
            .extend(args.iter().map(|arg| arg.as_ref().to_owned()));
        self
    }

    /// Sends stderr to `log`, with `RUST_LOG=info` (see [`Collector::log`]).
    pub fn log(mut self, log: impl Into<PathBuf>) -> CollectorSpec {
        self.log = Some(log.into());
        self
    }
}

/// A running collector; killed (SIGKILL, by PID) when dropped.
#[derive(Debug)]
pub struct Collector {
    child: Child,
    url: String,
    ca_pem: Option<PathBuf>,
    netns: Option<PathBuf>,
    log: Option<PathBuf>,
}

impl Collector {
    /// Starts it and waits for its `listening on URL` line.
    pub fn start(spec: &CollectorSpec) -> Collector {
        let mut cmd = match &spec.netns {
            Some(netns) => command_in_netns(netns, &spec.bin),
            None => Command::new(&spec.bin),
        };
        cmd.args(["serve", "--listen", &spec.listen]);
        if !spec.data.as_os_str().is_empty() {
            cmd.arg("--data").arg(&spec.data);
        }
        cmd.args(&spec.args);
        if let Some(tls) = &spec.tls {
            cmd.arg("--tls-cert")
                .arg(&tls.cert_chain)
                .arg("--tls-key")
                .arg(&tls.key);
        }
        let stderr = match &spec.log {
            Some(log) => {
                cmd.env("RUST_LOG", "info");
                Stdio::from(
                    std::fs::File::create(log)
                        .unwrap_or_else(|e| panic!("cannot create {}: {e}", log.display())),
                )
            }
            None => Stdio::inherit(),
        };
        let mut child = cmd
            .stdout(Stdio::piped())
            .stderr(stderr)
            .spawn()
            .unwrap_or_else(|e| panic!("cannot start {}: {e}", spec.bin.display()));
        let stdout = child.stdout.take().expect("stdout was configured as piped");
        let mut line = String::new();
        BufReader::new(stdout)
            .read_line(&mut line)
            .expect("read the listen line");
        let Some(url) = line.trim().strip_prefix("listening on ") else {
            let log = spec.log.as_deref().map(read_log).unwrap_or_default();
            panic!("unexpected first line from shoal-collector: {line:?}\n{log}");
        };
        Collector {
            url: url.to_owned(),
            child,
            ca_pem: spec.tls.as_ref().map(|tls| tls.ca.clone()),
            netns: spec.netns.clone(),
            log: spec.log.clone(),
        }
    }

    /// Its base URL, as it printed it (`http://IP:PORT` or `https://IP:PORT`).
    pub fn url(&self) -> &str {
        &self.url
    }

    /// `IP:PORT`, to start it again on the same address.
    pub fn listen(&self) -> String {
        self.url
            .split_once("://")
            .map_or(self.url.as_str(), |(_, rest)| rest)
            .to_owned()
    }

    /// The address it listens on, for a client of the test's own.
    pub fn addr(&self) -> SocketAddr {
        let listen = self.listen();
        listen
            .parse()
            .unwrap_or_else(|e| panic!("{listen:?} is not IP:PORT: {e}"))
    }

    /// Its process id.
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// What it logged so far (with [`CollectorSpec::log`]; empty otherwise).
    pub fn log(&self) -> String {
        self.log.as_deref().map(read_log).unwrap_or_default()
    }

    /// `GET path` as JSON; panics on an HTTP error or a body that is not JSON.
    pub fn get(&self, path: &str) -> serde_json::Value {
        self.try_get(path)
            .unwrap_or_else(|e| panic!("GET {path}: {e}"))
    }

    /// `GET path` as JSON, or why not.
    pub fn try_get(&self, path: &str) -> Result<serde_json::Value, String> {
        let mut cmd = self.curl();
        cmd.arg("--fail-with-body");
        let out = cmd
            .arg(format!("{}{path}", self.url))
            .output()
            .map_err(|e| format!("cannot run curl: {e}"))?;
        if !out.status.success() {
            return Err(format!(
                "{}{}",
                String::from_utf8_lossy(&out.stdout),
                String::from_utf8_lossy(&out.stderr)
            ));
        }
        serde_json::from_slice(&out.stdout)
            .map_err(|e| format!("not JSON ({e}): {}", String::from_utf8_lossy(&out.stdout)))
    }

    /// `METHOD path` with an optional bearer token and JSON body: the HTTP status and the body,
    /// whatever the status (admin calls, /metrics).
    pub fn call(
        &self,
        method: &str,
        path: &str,
        bearer: Option<&str>,
        body: Option<&str>,
    ) -> (u16, String) {
        let mut cmd = self.curl();
        cmd.args(["-X", method, "-w", "\n%{http_code}"]);
        if let Some(token) = bearer {
            cmd.arg("-H").arg(format!("Authorization: Bearer {token}"));
        }
        if let Some(body) = body {
            cmd.args([
                "-H",
                "Content-Type: application/json",
                "--data-binary",
                body,
            ]);
        }
        let out = cmd
            .arg(format!("{}{path}", self.url))
            .output()
            .unwrap_or_else(|e| panic!("cannot run curl: {e}"));
        let text = String::from_utf8_lossy(&out.stdout).into_owned();
        let (body, status) = text.rsplit_once('\n').unwrap_or(("", text.as_str()));
        let status = status.trim().parse().unwrap_or_else(|_| {
            panic!(
                "{method} {path}: no HTTP status from curl: {text}{}",
                String::from_utf8_lossy(&out.stderr)
            )
        });
        (status, body.to_owned())
    }

    /// SIGTERM (a graceful stop), then waits; returns the exit status.
    pub fn terminate(self) -> ExitStatus {
        self.signal(libc::SIGTERM)
    }

    /// SIGKILL: no graceful flush; whatever the collector acknowledged must survive it.
    pub fn kill(self) -> ExitStatus {
        self.signal(libc::SIGKILL)
    }

    /// Sends `signal` to the child (ours, by PID), then waits for it; returns the exit status.
    pub fn signal(self, signal: libc::c_int) -> ExitStatus {
        let pid = self.child.id() as libc::pid_t;
        // SAFETY: kill(2) on the pid of a child we spawned and have not reaped.
        let rc = unsafe { libc::kill(pid, signal) };
        assert_eq!(rc, 0, "kill -{signal} {pid}");
        self.wait()
    }

    /// Waits for it to exit (after a signal sent some other way).
    pub fn wait(mut self) -> ExitStatus {
        self.child
            .wait()
            .unwrap_or_else(|e| panic!("waiting for shoal-collector: {e}"))
    }

    fn curl(&self) -> Command {
        let mut cmd = match &self.netns {
            Some(netns) => command_in_netns(netns, "curl"),
            None => Command::new("curl"),
        };
        cmd.args(["-sS", "--max-time", "10"]);
        if let Some(ca) = &self.ca_pem {
            cmd.arg("--cacert").arg(ca);
        }
        cmd
    }
}

impl Drop for Collector {
    fn drop(&mut self) {
        // A test that failed midway: do not leave the child running (only our own, by PID).
        if let Ok(None) = self.child.try_wait() {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}

/// `program`, to be run inside the network namespace `netns` (only: mounts, PIDs and the file
/// system are this process's).
pub fn command_in_netns(netns: &Path, program: impl AsRef<std::ffi::OsStr>) -> Command {
    let mut cmd = Command::new("nsenter");
    cmd.arg(format!("--net={}", netns.display()))
        .arg("--")
        .arg(program);
    cmd
}

fn read_log(path: &Path) -> String {
    std::fs::read_to_string(path).unwrap_or_default()
}
