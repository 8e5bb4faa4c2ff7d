//! `Device`: one simulated device for end-to-end tests — an agent config, a state dir and a
//! sandbox root in a temp dir — driving the real `shoal-agent` binary and reading its verdicts.

use std::os::unix::net::UnixDatagram;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use crate::binaries::agent_bin;
use crate::command::output;

/// What one run of the agent did.
#[derive(Debug)]
pub struct Run {
    pub code: i32,
    pub stdout: String,
    pub stderr: String,
}

impl Run {
    /// Panics with the agent's output unless it exited 0.
    pub fn assert_ok(&self) -> &Self {
        assert_eq!(self.code, 0, "agent failed:\n{}", self.stderr);
        self
    }

    /// Panics unless the agent exited with `code` and said `needle` on stderr (a refusal names
    /// the commit and the reason; a success says what it accepted).
    pub fn expect(&self, code: i32, needle: &str) -> &Self {
        assert_eq!(
            self.code, code,
            "unexpected exit code; stderr:\n{}",
            self.stderr
        );
        assert!(
            self.stderr.contains(needle),
            "stderr should contain {needle:?}:\n{}",
            self.stderr
        );
        self
    }
}

/// What the agent reads to pick a proxy (and what reqwest would read on its own).
const PROXY_VARIABLES: [&str; 8] = [
    "https_proxy",
    "HTTPS_PROXY",
    "http_proxy",
    "HTTP_PROXY",
    "all_proxy",
    "ALL_PROXY",
    "no_proxy",
    "NO_PROXY",
];

/// A device with its own config, state dir and root under `dir`.
pub struct Device {
    dir: PathBuf,
}

impl Device {
    /// Writes `dir/agent.toml` tracking `url` at `refs/heads/main`, trusting `allowed_signers`.
    /// `extra` is appended to the `[source]` table (e.g. `ca_file = "…"`), and `verify` is the
    /// trust mode (`"tip"` or `"range"`).
    pub fn new(
        dir: impl AsRef<Path>,
        url: &str,
        allowed_signers: &Path,
        verify: &str,
        extra: &str,
    ) -> Self {
        let dir = dir.as_ref().to_path_buf();
        std::fs::create_dir_all(dir.join("root")).expect("create the device dir and its root");
        let config = format!(
            r#"device_id = "dev-1"
labels = {{ role = "gateway" }}
state_dir = "state"
root = "root"

[source]
url = "{url}"
ref = "refs/heads/main"
interval = "60s"
timeout = "5s"
retries = 0
{extra}

[trust]
allowed_signers = "{signers}"
verify = "{verify}"
"#,
            signers = allowed_signers.display()
        );
        std::fs::write(dir.join("agent.toml"), config).expect("write agent.toml");
        Device { dir }
    }

    /// The device whose config is `dir/agent.toml`, written by someone else (`shoal-agent init`);
    /// its state is expected in `dir/state`.
    pub fn at(dir: impl AsRef<Path>) -> Self {
        Device {
            dir: dir.as_ref().to_path_buf(),
        }
    }

    /// Adds a `[collector]` table to the device's config: reports go to `url`, first contact
    /// with the enrollment token in `enroll_token_file`.
    pub fn report_to(&self, url: &str, enroll_token_file: &Path) {
        let config = std::fs::read_to_string(self.config_path()).expect("read agent.toml");
        let config = format!(
            "{config}\n[collector]\nurl = \"{url}\"\nenroll_token_file = \"{}\"\n",
            enroll_token_file.display()
        );
        std::fs::write(self.config_path(), config).expect("write agent.toml");
    }

    /// Makes the device follow the signed releases of `environment` (`[source] environment`)
    /// instead of the branch.
    pub fn follow_environment(&self, environment: &str) {
        let config = std::fs::read_to_string(self.config_path()).expect("read agent.toml");
        assert!(config.contains("ref = \"refs/heads/main\"\n"), "{config}");
        let config = config.replace(
            "ref = \"refs/heads/main\"\n",
            &format!("environment = \"{environment}\"\n"),
        );
        std::fs::write(self.config_path(), config).expect("write agent.toml");
    }

    /// Adds `line` (e.g. `revoked_keys = "…"`) to the device's `[trust]` table.
    pub fn trust_option(&self, line: &str) {
        let config = std::fs::read_to_string(self.config_path()).expect("read agent.toml");
        let config = config.replacen("[trust]\n", &format!("[trust]\n{line}\n"), 1);
        std::fs::write(self.config_path(), config).expect("write agent.toml");
    }

    pub fn config_path(&self) -> PathBuf {
        self.dir.join("agent.toml")
    }

    pub fn state_dir(&self) -> PathBuf {
        self.dir.join("state")
    }

    /// Every entry under the state directory with its size and mtime, sorted: a sync that
    /// writes nothing leaves it equal.
    pub fn state_files(&self) -> Vec<(PathBuf, u64, std::time::SystemTime)> {
        let mut out = Vec::new();
        let mut stack = vec![self.state_dir()];
        while let Some(d) = stack.pop() {
            for entry in std::fs::read_dir(&d).expect("read_dir") {
                let entry = entry.expect("entry");
                let meta = entry.metadata().expect("metadata");
                if meta.is_dir() {
                    stack.push(entry.path());
                }
                out.push((entry.path(), meta.len(), meta.modified().expect("mtime")));
            }
        }
        out.sort();
        out
    }

    /// Runs `shoal-agent --config <this device> ARGS`.
    pub fn agent(&self, args: &[&str]) -> Run {
        self.agent_logging(args, "warn")
    }

    /// Runs `shoal-agent --config <this device> ARGS` with `SHOAL_LOG=filter` (`"trace"` shows
    /// everything the agent and its libraries log).
    pub fn agent_logging(&self, args: &[&str], filter: &str) -> Run {
        self.agent_with_env(args, filter, &[])
    }

    /// Runs `shoal-agent --config <this device> ARGS` with `SHOAL_LOG=filter` and the variables
    /// `env` (such as `HTTPS_PROXY`). No proxy variable of the test runner's reaches the agent.
    pub fn agent_with_env(&self, args: &[&str], filter: &str, env: &[(&str, &str)]) -> Run {
        let mut cmd = Command::new(agent_bin());
        cmd.arg("--config").arg(self.config_path()).args(args);
        // The agent must not depend on the test runner's git config or environment.
        cmd.env_remove("GIT_DIR").env("SHOAL_LOG", filter);
        for name in PROXY_VARIABLES {
            cmd.env_remove(name);
        }
        cmd.envs(env.iter().copied());
        let out = output(&mut cmd);
        Run {
            code: out.status.code().unwrap_or(-1),
            stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
            stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
        }
    }

    pub fn sync(&self) -> Run {
        self.agent(&["sync"])
    }

    /// The commit the device has accepted, from `shoal-agent status --json`.
    pub fn applied(&self) -> Option<String> {
        let run = self.agent(&["status", "--json"]);
        run.assert_ok();
        let status: serde_json::Value = serde_json::from_str(&run.stdout)
            .unwrap_or_else(|e| panic!("status --json is not JSON ({e}): {}", run.stdout));
        status["applied_commit"].as_str().map(str::to_owned)
    }
}

/// The socket the test listens on as systemd would (`NOTIFY_SOCKET`), in `dir`.
pub fn notify_socket(dir: &Path) -> (PathBuf, UnixDatagram) {
    let path = dir.join("notify.sock");
    let socket = UnixDatagram::bind(&path).expect("bind notify socket");
    socket
        .set_read_timeout(Some(Duration::from_millis(200)))
        .expect("timeout");
    (path, socket)
}

/// `shoal-agent run` for the device configured at `config`, notifying `socket`.
pub fn run_daemon(config: &Path, socket: &Path, stderr: Stdio) -> Child {
    Command::new(agent_bin())
        .arg("--config")
        .arg(config)
        .arg("run")
        .env("NOTIFY_SOCKET", socket)
        .env("SHOAL_LOG", "info")
        .stdout(Stdio::null())
        .stderr(stderr)
        .spawn()
        .expect("spawn shoal-agent run")
}
