//! `Collector`: the workspace's real `shoal-collector serve`, as a child process on a chosen
//! address (optionally over TLS, optionally inside a [`Hub`](crate::Hub)'s namespace), read
//! through its HTTP API with `curl`. Killed by PID on drop.

use std::io::{BufRead, BufReader};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};

use crate::binaries::collector_bin;
use crate::network::{command_in_netns, Hub};
use crate::TestCa;

/// How to start one; `Collector::start` takes it by reference so a test can start the same
/// collector again (same store, same address) after stopping it.
pub struct CollectorSpec<'a> {
    /// The embedded store's directory.
    pub data: PathBuf,
    /// A file of enrollment tokens (`--enroll-token-file`).
    pub enroll_token_file: PathBuf,
    /// `IP:PORT`; port 0 picks a free one (see [`Collector::listen`]).
    pub listen: String,
    /// Serve HTTPS with this CA's server certificate.
    pub tls: Option<&'a TestCa>,
    /// Run inside this hub's network namespace.
    pub hub: Option<&'a Hub>,
}

pub struct Collector {
    child: Child,
    url: String,
    ca_pem: Option<PathBuf>,
    netns: Option<PathBuf>,
}

impl Collector {
    /// Starts it and waits for its `listening on URL` line.
    pub fn start(spec: &CollectorSpec<'_>) -> Collector {
        Collector::start_with_args(spec, &[])
    }

    /// `start` with more `serve` flags (e.g. `--admin-token-file F`).
    pub fn start_with_args(spec: &CollectorSpec<'_>, extra: &[&str]) -> Collector {
        let bin = collector_bin();
        let mut cmd = match spec.hub {
            Some(hub) => hub.command(&bin),
            None => Command::new(&bin),
        };
        cmd.args(["serve", "--listen", &spec.listen, "--data"])
            .arg(&spec.data)
            .arg("--enroll-token-file")
            .arg(&spec.enroll_token_file)
            .args(extra);
        if let Some(ca) = spec.tls {
            cmd.arg("--tls-cert")
                .arg(ca.cert_chain_path())
                .arg("--tls-key")
                .arg(ca.key_path());
        }
        let mut child = cmd
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
            .unwrap_or_else(|| panic!("unexpected first line from shoal-collector: {line:?}"))
            .to_owned();
        Collector {
            child,
            url,
            ca_pem: spec.tls.map(|ca| ca.pem_path().to_path_buf()),
            netns: spec.hub.map(Hub::netns),
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

    /// `GET path` as JSON; panics on an HTTP error or a body that is not JSON.
    pub fn get(&self, path: &str) -> serde_json::Value {
        self.try_get(path)
            .unwrap_or_else(|e| panic!("GET {path}: {e}"))
    }

    /// `GET path` as JSON, or why not.
    pub fn try_get(&self, path: &str) -> Result<serde_json::Value, String> {
        let mut cmd = match &self.netns {
            Some(netns) => command_in_netns(netns, "curl"),
            None => Command::new("curl"),
        };
        cmd.args(["-sS", "--max-time", "10", "--fail-with-body"]);
        if let Some(ca) = &self.ca_pem {
            cmd.arg("--cacert").arg(ca);
        }
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
        let mut cmd = match &self.netns {
            Some(netns) => command_in_netns(netns, "curl"),
            None => Command::new("curl"),
        };
        cmd.args([
            "-sS",
            "--max-time",
            "10",
            "-X",
            method,
            "-w",
            "\n%{http_code}",
        ]);
        if let Some(ca) = &self.ca_pem {
            cmd.arg("--cacert").arg(ca);
        }
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

    /// SIGKILL: no graceful flush; whatever the collector acknowledged must survive it.
    pub fn kill(mut self) {
        self.stop();
    }

    fn stop(&mut self) {
        // Only ever the process this harness started.
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Drop for Collector {
    fn drop(&mut self) {
        self.stop();
    }
}
