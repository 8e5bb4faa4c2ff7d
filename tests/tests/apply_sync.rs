//! Render → plan → journaled apply, end to end with the real agent into a sandbox root: files
//! land with their modes, drift is corrected, `rollback` then `resume` round-trips offline, and a
//! commit that cannot be applied or rendered is recorded as bad, leaves the device exactly at the
//! previous generation, and is not retried until a newer commit arrives.

use std::os::unix::fs::PermissionsExt;

use shoal_e2e::{gateway_config, Sandbox, GATEWAY_MANIFEST};

#[test]
fn files_converge_drift_is_corrected_and_rollback_resume_round_trips_offline() {
    let Some(f) = Sandbox::new() else { return };
    let first = f.push(&gateway_config("hello {{ device.id }}\n"), "first");
    f.device.sync().expect(0, "applied generation 1");
    assert_eq!(f.read("/etc/motd"), "hello dev-1\n");
    assert_eq!(f.read("/etc/gw/gw.conf"), "gateway=yes\n");
    let mode = std::fs::metadata(f.root("/etc/gw/gw.conf"))
        .expect("meta")
        .permissions()
        .mode();
    assert_eq!(mode & 0o7777, 0o600);

    // A dry run shows the change and writes nothing.
    let second = f.push(&gateway_config("welcome to {{ device.id }}\n"), "second");
    let dry = f.device.agent(&["sync", "--dry-run"]);
    dry.expect(0, "change /etc/motd: content");
    assert_eq!(f.read("/etc/motd"), "hello dev-1\n");
    f.device.sync().expect(0, "applied generation 2");
    assert_eq!(f.read("/etc/motd"), "welcome to dev-1\n");

    // Drift: a hand edit is corrected by the next sync, as a new generation.
    std::fs::write(f.root("/etc/motd"), "edited by hand\n").expect("edit");
    f.device.sync().expect(0, "drift: /etc/motd edited by hand");
    assert_eq!(f.read("/etc/motd"), "welcome to dev-1\n");
    assert_eq!(f.status()["generation"], 3);

    // Rollback to the first generation (no network needed), held until resume.
    f.device
        .agent(&["rollback", "--to", "1"])
        .expect(0, "rolled back from generation 3 to 1");
    assert_eq!(f.read("/etc/motd"), "hello dev-1\n");
    let status = f.status();
    assert_eq!(status["hold"], 1);
    assert_eq!(status["commit"], first.as_str());
    f.device.sync().expect(0, "held at generation 1");
    assert_eq!(
        f.read("/etc/motd"),
        "hello dev-1\n",
        "a held device does not move"
    );

    let history = f.device.agent(&["history", "--json"]);
    history.expect(0, "");
    let history: serde_json::Value = serde_json::from_str(&history.stdout).expect("history --json");
    assert_eq!(history.as_array().map(Vec::len), Some(3));

    f.device
        .agent(&["resume"])
        .expect(0, "released the hold on generation 1");
    f.device.sync().expect(0, "applied generation 4");
    assert_eq!(f.read("/etc/motd"), "welcome to dev-1\n");
    assert_eq!(f.status()["commit"], second.as_str());
}

#[test]
fn a_commit_that_cannot_apply_is_rolled_back_recorded_bad_and_not_retried() {
    let Some(f) = Sandbox::new() else { return };
    f.push(&gateway_config("hello\n"), "good");
    f.device.sync().expect(0, "applied generation 1");

    // The next commit declares a file where the device has a directory.
    std::fs::create_dir_all(f.root("/etc/blocked")).expect("mkdir");
    f.repo.write(
        "shoal.toml",
        format!("{GATEWAY_MANIFEST}\n  [[profile.file]]\n  path = \"/etc/blocked\"\n  source = \"files/motd\"\n"),
    );
    f.repo.write("files/motd", "changed\n");
    let bad = f.repo.commit_signed(&f.key, "blocked");
    f.publish();

    f.device
        .sync()
        .expect(1, &format!("applying commit {bad} failed"))
        .expect(1, "is a directory");
    assert_eq!(
        f.read("/etc/motd"),
        "hello\n",
        "the device stays exactly at generation 1"
    );
    assert_eq!(f.status()["generation"], 1);
    assert_eq!(f.status()["last_result"]["status"], "rolled_back");
    f.device
        .sync()
        .expect(1, &format!("commit {bad} is recorded as bad"));

    // A newer commit is tried again.
    let fixed = f.push(&gateway_config("fixed\n"), "fixed");
    f.device
        .sync()
        .expect(0, &format!("commit {fixed} signed by operator@example"));
    assert_eq!(f.read("/etc/motd"), "fixed\n");
}

#[test]
fn a_commit_that_does_not_render_is_refused_with_the_file_and_variable() {
    let Some(f) = Sandbox::new() else { return };
    f.push(&gateway_config("hello\n"), "good");
    f.device.sync().expect(0, "applied generation 1");
    let bad = f.push(
        &gateway_config("hello {{ device.hostname }}\n"),
        "bad template",
    );
    f.device
        .sync()
        .expect(1, &format!("commit {bad} cannot be rendered"))
        .expect(1, "unknown variable \"device.hostname\"");
    assert_eq!(f.read("/etc/motd"), "hello\n");
    f.device.sync().expect(1, "is recorded as bad");
}
