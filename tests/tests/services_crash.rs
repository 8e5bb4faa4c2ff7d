//! Kill -9 at every service step of a sync, inside a real systemd: after the daemon reload,
//! after each stop/disable/enable/start/restart, while the units are gated, after a failed gate
//! undid the files, while the units are put back, and after the commit point. The next start
//! must leave the device at exactly one generation, files *and* units: before the commit point,
//! the previous generation's files with its units running on them (a unit restarted on the new
//! configuration is restarted again on the old); after it, the new one. Then the same commit
//! converges (a crash is not the commit's fault). The agent is built with fail points
//! (`SHOAL_FAILPOINT=name:N`); the sweep fails if a service fail point is added and not listed.

use shoal_agent::apply::failpoint::SERVICE_FAIL_POINTS;
use shoal_e2e::{agent_bin_with_failpoints, app_manifest, long_running_unit, GuestDevice};

/// Records the configuration it started with (before its start job ends, so a `systemctl
/// restart` that returned has written it), then runs until stopped.
const APP: &str = "[Service]\nExecStartPre=/bin/cp /etc/app.conf /run/app.seen\nExecStart=/bin/sleep infinity\n\n[Install]\nWantedBy=multi-user.target\n";
const BROKEN: &str = "[Service]\nExecStart=/bin/sh -c 'exit 1'\n";

/// The five actions of the 1 → 2 plan: stop other, disable other, enable new, start new,
/// restart app.
const ACTIONS_1_TO_2: usize = 5;

/// Generation 1: app.service and other.service. Generation 2: app.conf changes (app restarts),
/// other.service goes (stop, disable), new.service comes (enable, start): one action of each
/// kind, in the order a plan runs them.
fn push(d: &GuestDevice, gen: u8, message: &str) -> String {
    let (second, conf) = match gen {
        1 => ("other.service", "level = 1\n"),
        _ => ("new.service", "level = 2\n"),
    };
    d.push(
        &[
            ("shoal.toml", &app_manifest(second)),
            ("units/app.service", APP),
            ("units/other.service", &long_running_unit("other")),
            ("units/new.service", &long_running_unit("new")),
            ("files/app.conf", conf),
        ],
        message,
    )
}

/// The device is at generation shape `gen`, files and units.
fn assert_at(d: &GuestDevice, gen: u8, context: &str) {
    let (level, here, gone) = match gen {
        1 => ("level = 1\n", "other.service", "new.service"),
        _ => ("level = 2\n", "new.service", "other.service"),
    };
    assert_eq!(d.read("/etc/app.conf"), level, "{context}: /etc/app.conf");
    assert_eq!(
        d.read("/run/app.seen"),
        level,
        "{context}: app.service runs on this generation's configuration"
    );
    assert_eq!(
        d.host.show("app.service", "ActiveState"),
        "active",
        "{context}"
    );
    assert_eq!(
        d.host.show(here, "ActiveState"),
        "active",
        "{context}: {here}"
    );
    assert_eq!(
        d.host.show(here, "UnitFileState"),
        "enabled",
        "{context}: {here}"
    );
    assert!(
        d.here(&format!("/etc/systemd/system/{here}")).is_file(),
        "{context}: {here}'s unit file"
    );
    assert_ne!(
        d.host.show(gone, "ActiveState"),
        "active",
        "{context}: {gone}"
    );
    assert!(
        !d.here(&format!("/etc/systemd/system/{gone}")).exists(),
        "{context}: {gone}'s unit file"
    );
}

/// Runs a sync that fail point `point:nth` kills; panics unless it was killed there.
fn sync_killed_at(d: &GuestDevice, point: &str, nth: usize) {
    let spec = format!("SHOAL_FAILPOINT={point}:{nth}");
    let (code, _, stderr) = d.agent_output(&[&spec], &["sync"]);
    assert!(
        stderr.contains(&format!("fail point {point}:{nth}: killing the process")),
        "{spec}: the sync was not killed there (exit {code}):\n{stderr}"
    );
}

/// Recovery alone: a dry run recovers first and changes nothing else.
fn recover(d: &GuestDevice, context: &str) {
    let (code, stderr) = d.agent(&["sync", "--dry-run"]);
    assert_eq!(
        code, 0,
        "{context}: recovery (sync --dry-run) failed:\n{stderr}"
    );
}

#[test]
fn kill_9_at_every_service_step_leaves_files_and_units_at_one_generation() {
    let Some(d) = GuestDevice::boot_with(&agent_bin_with_failpoints()) else {
        return;
    };
    let mut commit = 0;
    let next = |d: &GuestDevice, gen: u8, commit: &mut u32| {
        *commit += 1;
        push(d, gen, &format!("generation shape {gen}, commit {commit}"))
    };
    next(&d, 1, &mut commit);
    d.sync_ok("start app.service (new)");
    assert_at(&d, 1, "generation 1");

    // The forward path: 1 → 2, killed at each step before the commit point (back at 1), and
    // after it (at 2).
    let mut forward: Vec<(&str, usize)> =
        vec![("services_after_journal", 1), ("services_after_reload", 1)];
    forward.extend((1..=ACTIONS_1_TO_2).map(|n| ("services_after_action", n)));
    forward.push(("services_health_gate", 1));
    forward.push(("services_before_journal_end", 1));
    let mut tested: Vec<&str> = Vec::new();
    for (point, nth) in forward {
        let context = format!("killed at {point}:{nth}");
        let target = next(&d, 2, &mut commit);
        sync_killed_at(&d, point, nth);
        recover(&d, &context);
        let committed = point == "services_before_journal_end";
        assert_at(&d, if committed { 2 } else { 1 }, &context);
        // The same commit converges: a crash does not make it bad.
        if !committed {
            d.sync_ok(&format!("commit {target}"));
        }
        assert_at(&d, 2, &format!("{context}, then a sync"));
        assert!(
            !d.here("/srv/shoal/state/services-journal.json").exists(),
            "{context}: the services journal is gone"
        );
        next(&d, 1, &mut commit);
        d.sync_ok("restart app.service");
        assert_at(&d, 1, &format!("{context}, back to shape 1"));
        tested.push(point);
    }

    // The way back after a failed gate: the broken unit's files are undone, then the units are
    // put back; killed in between and while putting them back. One action: restart app.
    for (point, nth) in [
        ("services_after_undo", 1),
        ("services_revert_after_action", 1),
    ] {
        let context = format!("killed at {point}:{nth}");
        commit += 1;
        d.push(
            &[("units/app.service", BROKEN)],
            &format!("broken app, commit {commit}"),
        );
        sync_killed_at(&d, point, nth);
        recover(&d, &context);
        assert_at(&d, 1, &context);
        // Not marked bad (the crash came before that): the next sync gates it again, and
        // rolls it back on its own.
        let (code, stderr) = d.agent(&["sync"]);
        assert_eq!(code, 1, "{context}: {stderr}");
        assert!(
            stderr.contains("its services did not come up"),
            "{context}: {stderr}"
        );
        assert_at(&d, 1, &format!("{context}, then a sync"));
        commit += 1;
        // The device already runs this (the broken commit was rolled back): nothing to do.
        let fixed = d.push(
            &[("units/app.service", APP)],
            &format!("app fixed, commit {commit}"),
        );
        d.sync_ok(&format!("commit {fixed}"));
        assert_at(&d, 1, &format!("{context}, fixed"));
        tested.push(point);
    }

    tested.sort();
    tested.dedup();
    let mut every = SERVICE_FAIL_POINTS.to_vec();
    every.sort();
    assert_eq!(
        tested, every,
        "a service fail point was added: crash-test it here"
    );
}
