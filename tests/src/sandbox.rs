//! `Sandbox`: the smallest whole setup most end-to-end tests need — an operator's signing key, a
//! config repository, the bare repository a device pulls from (a local path), and one device with
//! a sandbox root trusting that key with `verify = "range"`; the repository is read from its path,
//! or served by a real `git daemon` ([`Sandbox::over_git_daemon`]).

use std::path::PathBuf;

use shoal_testkit::Collector;

use crate::collector::CollectorSpec;
use crate::device::Device;
use crate::git_daemon::GitDaemon;
use crate::repo::ConfigRepo;
use crate::requirements::require_tools;
use crate::signing::{write_allowed_signers, SigningKey};

/// The enrollment token of [`Sandbox::report_to_local_collector`]'s collector.
pub const ENROLL_TOKEN: &str = "enroll-token-0123456789abcdef";

/// The configuration most end-to-end tests push: `/etc/motd` for every device, a template from
/// `files/motd`, and `/etc/gw/gw.conf` (0600, from `files/gw.conf`) for devices labelled
/// `role = "gateway"` (as a [`Sandbox`]'s device is).
pub const GATEWAY_MANIFEST: &str = r#"version = 1

[[profile]]
name = "base"
match = "*"

  [[profile.file]]
  path = "/etc/motd"
  source = "files/motd"
  template = true

[[profile]]
name = "gateways"
match = { labels = { role = "gateway" } }

  [[profile.file]]
  path = "/etc/gw/gw.conf"
  source = "files/gw.conf"
  mode = "0600"
"#;

/// The repository files of a [`GATEWAY_MANIFEST`] commit (path, content): the manifest, `motd`
/// as `files/motd` and `gateway=yes` as `files/gw.conf`.
pub fn gateway_config(motd: &str) -> [(&str, &str); 3] {
    [
        ("shoal.toml", GATEWAY_MANIFEST),
        ("files/motd", motd),
        ("files/gw.conf", "gateway=yes\n"),
    ]
}

pub struct Sandbox {
    pub dir: tempfile::TempDir,
    pub key: SigningKey,
    pub repo: ConfigRepo,
    pub device: Device,
    /// The server, when the device pulls over `git://`.
    pub daemon: Option<GitDaemon>,
    /// Where devices pull from.
    url: String,
}

impl Sandbox {
    /// `None` (after a `SKIPPED` line) without git and ssh-keygen; a panic under `SHOAL_E2E=1`.
    pub fn new() -> Option<Sandbox> {
        Sandbox::build(false)
    }

    /// Like [`Sandbox::new`], the device pulling from a `git daemon` serving the repository.
    pub fn over_git_daemon() -> Option<Sandbox> {
        Sandbox::build(true)
    }

    fn build(daemon: bool) -> Option<Sandbox> {
        if !require_tools(&["git", "ssh-keygen"]) {
            return None;
        }
        let dir = tempfile::tempdir().expect("tempdir");
        let key = SigningKey::generate(dir.path().join("keys"), "operator");
        let signers = dir.path().join("allowed_signers");
        write_allowed_signers(&signers, &[("operator@example", &key)]);
        let repo = ConfigRepo::init(dir.path().join("work"));
        let srv = dir.path().join("srv");
        std::fs::create_dir_all(&srv).expect("mkdir srv");
        let daemon = daemon.then(|| GitDaemon::start(&srv));
        let url = match &daemon {
            Some(daemon) => daemon.url("config.git"),
            None => srv.join("config.git").display().to_string(),
        };
        let device = Device::new(dir.path().join("device"), &url, &signers, "range", "");
        Some(Sandbox {
            dir,
            key,
            repo,
            device,
            daemon,
            url,
        })
    }

    /// Another device under `dir/<name>` (its root `dir/<name>/root`), pulling the same
    /// repository and trusting the same key as the sandbox's own.
    pub fn another_device(&self, name: &str) -> Device {
        let signers = self.dir.path().join("allowed_signers");
        Device::new(self.dir.path().join(name), &self.url, &signers, "range", "")
    }

    /// Starts the real collector on a free local port (its store in `collector-data`, the
    /// enrollment token [`ENROLL_TOKEN`] in `enroll-token`) and points the device's reports at
    /// it.
    pub fn report_to_local_collector(&self) -> Collector {
        let enroll = self.dir.path().join("enroll-token");
        std::fs::write(&enroll, format!("{ENROLL_TOKEN}\n")).expect("enrollment token");
        let collector =
            CollectorSpec::local(self.dir.path().join("collector-data"), enroll.clone()).start();
        self.device.report_to(collector.url(), &enroll);
        collector
    }

    /// Writes `files` (repository path, content), commits them signed by the operator, and
    /// publishes the repository where the device pulls from; returns the commit id.
    pub fn push(&self, files: &[(&str, &str)], message: &str) -> String {
        for (path, content) in files {
            self.repo.write(path, content);
        }
        let id = self.repo.commit_signed(&self.key, message);
        self.publish();
        id
    }

    /// Pushes a signed commit of the gateway config ([`gateway_config`]) whose motd is `motd`
    /// and whose `shoal.toml` ends with `rollout` (a `[rollout]` table, see [`everyone_after`]);
    /// returns the commit id.
    pub fn push_with_rollout(&self, motd: &str, rollout: &str) -> String {
        let manifest = format!("{GATEWAY_MANIFEST}\n{rollout}");
        let [_, motd_file, gw] = gateway_config(motd);
        self.push(&[("shoal.toml", &manifest), motd_file, gw], motd.trim())
    }

    /// Publishes the repository as it is (after a commit made by hand, say a malformed one).
    pub fn publish(&self) {
        self.repo.publish_to(self.dir.path().join("srv/config.git"));
    }

    /// Where device path `path` is on the host.
    pub fn root(&self, path: &str) -> PathBuf {
        self.dir
            .path()
            .join("device/root")
            .join(path.trim_start_matches('/'))
    }

    /// A device file's content.
    pub fn read(&self, path: &str) -> String {
        std::fs::read_to_string(self.root(path)).unwrap_or_else(|e| panic!("{path}: {e}"))
    }

    /// `shoal-agent status --json`.
    pub fn status(&self) -> serde_json::Value {
        let run = self.device.agent(&["status", "--json"]);
        run.expect(0, "");
        serde_json::from_str(&run.stdout).expect("status --json")
    }
}

/// A `[rollout]` in which every device but one named `nobody` (the canary wave) waits `after`.
pub fn everyone_after(after: &str) -> String {
    format!(
        "[rollout]\nwaves = [ {{ name = \"canary\", match = {{ devices = [\"nobody\"] }} }},\n          {{ name = \"all\", percent = 100, after = \"{after}\" }} ]\n"
    )
}

/// Seconds since the Unix epoch by this machine's clock.
pub fn unix_now() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .expect("clock after 1970")
        .as_secs()
}
