//! The real agent inside a real systemd: `shoal-agent sync` installs and restarts services from a
//! signed repository, a commit whose unit does not come up is rolled back automatically, recorded
//! as bad and not retried, and `shoal-agent rollback` brings the units back with the files.

use shoal_e2e::{app_manifest, long_running_unit, GuestDevice};

const BROKEN: &str =
    "[Service]\nExecStart=/bin/sh -c 'echo boom: cannot read /etc/app.conf >&2; exit 1'\n";

fn push(d: &GuestDevice, app_unit: &str, app_conf: &str, message: &str) -> String {
    d.push(
        &[
            ("shoal.toml", &app_manifest("other.service")),
            ("units/app.service", app_unit),
            ("units/other.service", &long_running_unit("other")),
            ("files/app.conf", app_conf),
        ],
        message,
    )
}

#[test]
fn sync_restarts_what_changed_rolls_back_a_unit_that_fails_and_does_not_retry_it() {
    let Some(d) = GuestDevice::boot() else {
        return;
    };
    let v1 = long_running_unit("app v1");
    push(&d, &v1, "level = 1\n", "app and other");
    d.sync_ok("start app.service (new)");
    let app = d.running("app.service");
    let other = d.running("other.service");
    assert_eq!(d.host.show("app.service", "UnitFileState"), "enabled");

    // A restart_on file changes: exactly that unit restarts.
    push(&d, &v1, "level = 2\n", "level 2");
    d.sync_ok("restart app.service (changed: /etc/app.conf)");
    let app2 = d.running("app.service");
    assert_ne!(app2, app);
    assert_eq!(d.running("other.service"), other);

    // A unit that exits 1: rolled back, the old unit running again, the commit bad.
    let bad = push(&d, BROKEN, "level = 2\n", "broken app");
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
    let (code, status, _) = d.agent_output(&[], &["status", "--json"]);
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
    let (code, status, _) = d.agent_output(&[], &["status", "--json"]);
    assert_eq!(code, 0);
    let status: serde_json::Value = serde_json::from_str(&status).expect("status --json");
    assert_eq!(status["hold"], 1);
}
