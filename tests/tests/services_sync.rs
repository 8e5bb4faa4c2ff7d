//! The real agent inside a real systemd: `shoal-agent sync` installs and restarts services from a
//! signed repository, a commit whose unit does not come up is rolled back automatically, recorded
//! as bad and not retried, and `shoal-agent rollback` brings the units back with the files.

use std::path::PathBuf;

use shoal_e2e::{
    agent_bin, copy_tree, long_running_unit, require_tools, write_allowed_signers, ConfigRepo,
    SigningKey, SystemdHost,
};

/// Where the device's own files live inside the guest (its overlay's upper layer, a tmpfs).
const GUEST_DIR: &str = "/srv/shoal";

const MANIFEST: &str = r#"version = 1

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
  unit = "other.service"
  source = "units/other.service"
"#;

const BROKEN: &str =
    "[Service]\nExecStart=/bin/sh -c 'echo boom: cannot read /etc/app.conf >&2; exit 1'\n";

struct GuestDevice {
    host: SystemdHost,
    work: tempfile::TempDir,
    key: SigningKey,
    repo: ConfigRepo,
}

impl GuestDevice {
    fn boot() -> Option<GuestDevice> {
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
        std::fs::copy(
            agent_bin(),
            device.here(&format!("{GUEST_DIR}/shoal-agent")),
        )
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
    fn here(&self, guest: &str) -> PathBuf {
        self.host.root().join(guest.trim_start_matches('/'))
    }

    fn push(&self, app_unit: &str, app_conf: &str, message: &str) -> String {
        self.repo.write("shoal.toml", MANIFEST);
        self.repo.write("units/app.service", app_unit);
        self.repo
            .write("units/other.service", long_running_unit("other"));
        self.repo.write("files/app.conf", app_conf);
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
    fn agent(&self, args: &[&str]) -> (i32, String) {
        let (code, _, stderr) = self.agent_output(args);
        (code, stderr)
    }

    /// `shoal-agent ARGS` inside the guest: (exit code, stdout, stderr).
    fn agent_output(&self, args: &[&str]) -> (i32, String, String) {
        let bin = format!("{GUEST_DIR}/shoal-agent");
        let config = format!("{GUEST_DIR}/agent.toml");
        let mut all = vec![bin.as_str(), "--config", config.as_str()];
        all.extend_from_slice(args);
        let out = self.host.exec(&all);
        (
            out.status.code().unwrap_or(-1),
            String::from_utf8_lossy(&out.stdout).into_owned(),
            String::from_utf8_lossy(&out.stderr).into_owned(),
        )
    }

    fn sync_ok(&self, needle: &str) -> String {
        let (code, stderr) = self.agent(&["sync"]);
        assert_eq!(code, 0, "sync failed:\n{stderr}");
        assert!(
            stderr.contains(needle),
            "stderr should contain {needle:?}:\n{stderr}"
        );
        stderr
    }

    fn running(&self, unit: &str) -> u32 {
        assert_eq!(self.host.show(unit, "ActiveState"), "active", "{unit}");
        self.host.main_pid(unit)
    }

    fn read(&self, guest: &str) -> String {
        std::fs::read_to_string(self.here(guest)).unwrap_or_else(|e| panic!("{guest}: {e}"))
    }
}

#[test]
fn sync_restarts_what_changed_rolls_back_a_unit_that_fails_and_does_not_retry_it() {
    let Some(d) = GuestDevice::boot() else {
        return;
    };
    let v1 = long_running_unit("app v1");
    d.push(&v1, "level = 1\n", "app and other");
    d.sync_ok("start app.service (new)");
    let app = d.running("app.service");
    let other = d.running("other.service");
    assert_eq!(d.host.show("app.service", "UnitFileState"), "enabled");

    // A restart_on file changes: exactly that unit restarts.
    d.push(&v1, "level = 2\n", "level 2");
    d.sync_ok("restart app.service (changed: /etc/app.conf)");
    let app2 = d.running("app.service");
    assert_ne!(app2, app);
    assert_eq!(d.running("other.service"), other);

    // A unit that exits 1: rolled back, the old unit running again, the commit bad.
    let bad = d.push(BROKEN, "level = 2\n", "broken app");
    let (code, stderr) = d.agent(&["sync"]);
    assert_eq!(code, 1, "{stderr}");
    for needle in [
        &format!("commit {bad} was applied but its services did not come up"),
        "rolled back to generation 2",
        "app.service is not healthy",
        "boom: cannot read /etc/app.conf",
    ] {
        assert!(
            stderr.contains(needle),
            "stderr should contain {needle:?}:\n{stderr}"
        );
    }
    assert_eq!(d.read("/etc/systemd/system/app.service"), v1);
    let app3 = d.running("app.service");
    assert_eq!(d.running("other.service"), other);
    let (code, status, _) = d.agent_output(&["status", "--json"]);
    assert_eq!(code, 0);
    let status: serde_json::Value = serde_json::from_str(&status).expect("status --json");
    assert_eq!(status["last_result"]["status"], "rolled_back");
    assert_eq!(status["generation"], 2);

    // Not retried.
    let (code, stderr) = d.agent(&["sync"]);
    assert_eq!(code, 1, "{stderr}");
    assert!(stderr.contains("is recorded as bad"), "{stderr}");
    assert_eq!(
        d.running("app.service"),
        app3,
        "a bad commit is not retried"
    );

    // An operator rollback to generation 1 brings the file back and restarts its unit.
    let (code, stderr) = d.agent(&["rollback", "--to", "1"]);
    assert_eq!(code, 0, "{stderr}");
    assert_eq!(d.read("/etc/app.conf"), "level = 1\n");
    assert_ne!(
        d.running("app.service"),
        app3,
        "app.service restarted on the old file"
    );
    assert_eq!(d.running("other.service"), other);
    let (code, status, _) = d.agent_output(&["status", "--json"]);
    assert_eq!(code, 0);
    let status: serde_json::Value = serde_json::from_str(&status).expect("status --json");
    assert_eq!(status["hold"], 1);
}
