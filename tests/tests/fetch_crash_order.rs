//! The fetch's crash order, seen in the system calls of the real `shoal-agent` (under `strace`):
//! the pack and its index are renamed into place, then the mirror's file system is synced, and
//! only then is `refs/shoal/fetched` renamed into place (its temp file fsynced before, its
//! directory after); a sync with nothing new syncs and renames nothing.

use std::path::Path;
use std::process::Command;

use shoal_e2e::{agent_bin, output, require_tools, Device, Sandbox, MOTD_MANIFEST};

/// The syscalls of one `shoal-agent sync` of `device`, one per line, in order.
fn traced_sync(device: &Device, trace: &Path) -> Vec<String> {
    let mut cmd = Command::new("strace");
    cmd.args(["-f", "-qq", "-y", "-s", "512", "-o"])
        .arg(trace)
        .args([
            "-e",
            "trace=rename,renameat,renameat2,syncfs,fsync,fdatasync,openat",
        ])
        .arg(agent_bin())
        .arg("--config")
        .arg(device.config_path())
        .arg("sync");
    cmd.env_remove("GIT_DIR").env("SHOAL_LOG", "warn");
    let out = output(&mut cmd);
    assert!(
        out.status.success(),
        "traced sync failed:\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    std::fs::read_to_string(trace)
        .expect("read the trace")
        .lines()
        .map(str::to_owned)
        .collect()
}

/// Index of the first line that satisfies `pred`; panics naming `what` with the trace otherwise.
fn position(lines: &[String], what: &str, pred: impl Fn(&str) -> bool) -> usize {
    lines
        .iter()
        .position(|l| pred(l))
        .unwrap_or_else(|| panic!("no {what} in the trace:\n{}", lines.join("\n")))
}

fn is_rename(line: &str) -> bool {
    line.split_whitespace()
        .nth(1)
        .is_some_and(|call| call.starts_with("rename"))
}

#[test]
fn objects_are_synced_before_the_fetched_ref_moves_and_a_noop_sync_syncs_nothing() {
    if !require_tools(&["strace"]) {
        return;
    }
    let Some(s) = Sandbox::over_git_daemon() else {
        return;
    };
    let device = &s.device;
    s.push(&[("shoal.toml", MOTD_MANIFEST), ("motd", "one\n")], "one");
    device.sync().assert_ok();
    let tip = s.push(&[("motd", "two\n")], "two");
    let dir = &s.dir;

    let mirror = device.state_dir().join("mirror.git");
    let mirror = mirror.display().to_string();
    let fetched_ref = format!("{mirror}/refs/shoal/fetched");
    let lines = traced_sync(device, &dir.path().join("update.trace"));
    assert_eq!(device.applied().as_deref(), Some(tip.as_str()));

    let pack = position(&lines, "rename of the pack into place", |l| {
        is_rename(l) && l.contains("/objects/pack/pack-") && l.contains(".pack\"")
    });
    let index = position(&lines, "rename of the pack index into place", |l| {
        is_rename(l) && l.contains("/objects/pack/pack-") && l.contains(".idx\"")
    });
    let syncfs = position(&lines, "syncfs of the mirror", |l| {
        l.contains("syncfs(") && l.contains(&mirror) && l.ends_with("= 0")
    });
    let temp_synced = position(&lines, "fsync of the ref's temp file", |l| {
        l.contains("fsync(") && l.contains(&format!("{mirror}/shoal-fetched.tmp>"))
    });
    let moved = position(&lines, "rename of refs/shoal/fetched", |l| {
        is_rename(l) && l.contains(&format!("\"{fetched_ref}\""))
    });
    let dir_synced = position(&lines, "fsync of refs/shoal", |l| {
        l.contains("fsync(") && l.contains(&format!("{mirror}/refs/shoal>"))
    });
    let order = [
        ("pack", pack),
        ("index", index),
        ("syncfs", syncfs),
        ("ref temp fsync", temp_synced),
        ("ref rename", moved),
        ("ref dir fsync", dir_synced),
    ];
    assert!(
        pack < syncfs && index < syncfs && syncfs < temp_synced,
        "objects must be renamed, then synced, before the ref is written: {order:?}\n{}",
        lines.join("\n")
    );
    assert!(
        temp_synced < moved && moved < dir_synced,
        "the ref is fsynced, renamed, then its directory fsynced: {order:?}"
    );
    // Exactly one way moves the ref: ours. gix would have gone through a lock file.
    assert!(
        !lines.iter().any(|l| l.contains("refs/shoal/fetched.lock")),
        "gix wrote the ref itself:\n{}",
        lines.join("\n")
    );
    assert_eq!(
        lines
            .iter()
            .filter(|l| is_rename(l) && l.contains(&fetched_ref))
            .count(),
        1
    );

    // Nothing new: no sync, no rename, no fsync anywhere in the mirror.
    let lines = traced_sync(device, &dir.path().join("noop.trace"));
    let writes: Vec<&String> = lines
        .iter()
        .filter(|l| {
            (is_rename(l) || l.contains("syncfs(") || l.contains("fsync(")) && l.contains(&mirror)
        })
        .collect();
    assert!(
        writes.is_empty(),
        "a no-op sync wrote to the mirror: {writes:#?}"
    );
}
