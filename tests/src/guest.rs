//! `GuestDevice`: the real agent installed inside a real systemd ([`SystemdHost`]) with `root = "/"`,
//! a signed config repository on the host published into the guest, and the agent driven with
//! `nsenter` — a device as it runs in the field, for service tests.

use std::path::{Path, PathBuf};

use crate::binaries::agent_bin;
use crate::repo::{copy_tree, ConfigRepo};
use crate::requirements::require_tools;
use crate::signing::{write_allowed_signers, SigningKey};
use crate::systemd::SystemdHost;

/// Where the device's own files live inside the guest (its overlay's upper layer, a tmpfs).
pub const GUEST_DIR: &str = "/srv/shoal";

/// The manifest of the service tests on a [`GuestDevice`]: `/etc/app.conf` from
/// `files/app.conf`, `app.service` (from `units/app.service`) restarted when it changes, and the
/// unit `second` (from `units/<second>`) beside it.
pub fn app_manifest(second: &str) -> String {
    format!(
        r#"version = 1

[[profile]]
name = "base"
match = "*"

  [[profile.file]]
  path = "/etc/app.conf"
  source = "files/app.conf"

  [[profile.service]]
  unit = "app.service"
  source = "units/app.service"
  restart_on = ["/etc/app.conf"]

  [[profile.service]]
  unit = "{second}"
  source = "units/{second}"
"#
    )
}

pub struct GuestDevice {
    pub host: SystemdHost,
    work: tempfile::TempDir,
    pub key: SigningKey,
    pub repo: ConfigRepo,
}

impl GuestDevice {
    /// Boots a guest with the workspace's agent at `/srv/shoal/shoal-agent` and its config
    /// (tracking `/srv/shoal/config.git`, `verify = "range"`, a 10 s health timeout). `None`
    /// (after a `SKIPPED` line) where this machine cannot; a panic under `SHOAL_E2E=1`.
    pub fn boot() -> Option<GuestDevice> {
        GuestDevice::boot_with(&agent_bin())
    }

    /// [`GuestDevice::boot`] with another agent binary (one built with fail points, say).
    pub fn boot_with(agent: &Path) -> Option<GuestDevice> {
        if !require_tools(&["git", "ssh-keygen"]) {
            return None;
        }
        let host = SystemdHost::boot()?;
        let work = tempfile::tempdir().expect("tempdir");
        let key = SigningKey::generate(work.path().join("keys"), "operator");
        let repo = ConfigRepo::init(work.path().join("repo"));
        let device = GuestDevice {
            host,
            work,
            key,
            repo,
        };
        std::fs::create_dir_all(device.here(GUEST_DIR)).expect("guest dir");
        write_allowed_signers(
            device.here(&format!("{GUEST_DIR}/allowed_signers")),
            &[("operator@example", &device.key)],
        );
        std::fs::copy(agent, device.here(&format!("{GUEST_DIR}/shoal-agent")))
            .expect("copy the agent into the guest");
        let config = format!(
            r#"device_id = "dev-1"
state_dir = "{GUEST_DIR}/state"
root = "/"

[source]
url = "{GUEST_DIR}/config.git"
ref = "refs/heads/main"
interval = "60s"

[trust]
allowed_signers = "{GUEST_DIR}/allowed_signers"
verify = "range"

[apply]
health_timeout = "10s"
"#
        );
        std::fs::write(device.here(&format!("{GUEST_DIR}/agent.toml")), config)
            .expect("agent.toml");
        Some(device)
    }

    /// A guest path, seen from the test.
    pub fn here(&self, guest: &str) -> PathBuf {
        self.host.root().join(guest.trim_start_matches('/'))
    }

    /// Writes `files` (repository path, content) into the working tree, commits them signed,
    /// and publishes the repository into the guest; returns the commit id.
    pub fn push(&self, files: &[(&str, &str)], message: &str) -> String {
        for (path, content) in files {
            self.repo.write(path, content);
        }
        let id = self.repo.commit_signed(&self.key, message);
        // git cannot work inside /proc/PID/root (its working directory would be unreachable
        // from its own root): publish here, then copy the bare repository into the guest.
        let published = self.work.path().join("config.git");
        self.repo.publish_to(&published);
        let guest = self.here(&format!("{GUEST_DIR}/config.git"));
        let _ = std::fs::remove_dir_all(&guest);
        copy_tree(&published, &guest);
        id
    }

    /// `shoal-agent ARGS` inside the guest: (exit code, stderr).
    pub fn agent(&self, args: &[&str]) -> (i32, String) {
        let (code, _, stderr) = self.agent_output(&[], args);
        (code, stderr)
    }

    /// `env ENV… shoal-agent ARGS` inside the guest: (exit code, stdout, stderr).
    pub fn agent_output(&self, env: &[&str], args: &[&str]) -> (i32, String, String) {
        let bin = format!("{GUEST_DIR}/shoal-agent");
        let config = format!("{GUEST_DIR}/agent.toml");
        let mut all = vec!["env"];
        all.extend_from_slice(env);
        all.extend_from_slice(&[bin.as_str(), "--config", config.as_str()]);
        all.extend_from_slice(args);
        let out = self.host.exec(&all);
        (
            out.status.code().unwrap_or(-1),
            String::from_utf8_lossy(&out.stdout).into_owned(),
            String::from_utf8_lossy(&out.stderr).into_owned(),
        )
    }

    /// `shoal-agent status --json` inside the guest.
    pub fn status(&self) -> serde_json::Value {
        let (code, status, stderr) = self.agent_output(&[], &["status", "--json"]);
        assert_eq!(code, 0, "status failed:\n{stderr}");
        serde_json::from_str(&status).expect("status --json")
    }

    /// Runs `sync` and panics unless it succeeds saying `needle`; returns its stderr.
    pub fn sync_ok(&self, needle: &str) -> String {
        let (code, stderr) = self.agent(&["sync"]);
        assert_eq!(code, 0, "sync failed:\n{stderr}");
        assert!(
            stderr.contains(needle),
            "stderr should contain {needle:?}:\n{stderr}"
        );
        stderr
    }

    /// The unit's main PID, after checking it is active.
    pub fn running(&self, unit: &str) -> u32 {
        assert_eq!(self.host.show(unit, "ActiveState"), "active", "{unit}");
        self.host.main_pid(unit)
    }

    /// A guest file's content.
    pub fn read(&self, guest: &str) -> String {
        std::fs::read_to_string(self.here(guest)).unwrap_or_else(|e| panic!("{guest}: {e}"))
    }
}
