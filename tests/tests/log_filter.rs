//! `SHOAL_LOG`, parsed by the agent as `target=level` directives (tracing's `Targets`, not
//! `EnvFilter`): unset means warnings only, a level or a per-target level shows more, and a value
//! that does not parse is named once on stderr while the command itself runs unchanged.

use shoal_e2e::{gateway_config, Sandbox};

#[test]
fn levels_and_targets_filter_the_log_and_a_bad_filter_is_named_and_ignored() {
    let Some(f) = Sandbox::new() else { return };
    f.push(&gateway_config("hello\n"), "first");

    // The default (what the harness passes): no INFO lines.
    let quiet = f.device.sync();
    quiet.expect(0, "applied generation 1");
    assert!(!quiet.stderr.contains(" INFO "), "{}", quiet.stderr);

    // A level for the agent's own modules only: its INFO lines, none of a library's.
    f.push(&gateway_config("second\n"), "second");
    let info = f.device.agent_logging(&["sync"], "warn,shoal_agent=info");
    info.expect(0, "applied generation 2");
    let lines: Vec<&str> = info
        .stderr
        .lines()
        .filter(|l| l.contains(" INFO "))
        .collect();
    assert!(!lines.is_empty(), "{}", info.stderr);
    assert!(
        lines.iter().all(|l| l.contains(" shoal_agent")),
        "only shoal_agent's targets: {lines:#?}"
    );

    // Not a filter: said once, with what is accepted, and the sync runs as at `warn`.
    let bad = f.device.agent_logging(&["sync"], "warn,=[x");
    bad.expect(0, "up to date: generation 2");
    bad.expect(0, "warning: SHOAL_LOG=\"warn,=[x\" is not a log filter (");
    bad.expect(0, "); logging at warn. Use a level (error, warn, info, debug, trace) or target=level pairs separated by commas");
    assert_eq!(bad.stderr.matches("SHOAL_LOG=").count(), 1);
    assert!(!bad.stderr.contains(" INFO "), "{}", bad.stderr);
    assert_eq!(f.read("/etc/motd"), "second\n");
}
