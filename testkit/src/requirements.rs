//! Decides whether a test may skip for a missing tool or privilege: never under `SHOAL_E2E=1`, loudly otherwise.

use std::path::Path;

/// True when `SHOAL_E2E=1`: every e2e test must then run, and a missing tool is a failure.
pub fn e2e_required() -> bool {
    std::env::var_os("SHOAL_E2E").is_some_and(|value| value == "1")
}

/// Whether the program `name` is on `PATH`. When it is not, panics under [`e2e_required`];
/// otherwise prints a loud `SKIPPED` line on stderr and returns false, so the test can return early.
pub fn require_tool(name: &str) -> bool {
    if on_path(name) {
        return true;
    }
    let why = format!("`{name}` is not on PATH");
    if e2e_required() {
        panic!("SHOAL_E2E=1 but {why}: install it (see shared TESTING.md)");
    }
    skipped(&format!(
        "SKIPPED: {why}; this test did not run (set SHOAL_E2E=1 to make this a failure)"
    ));
    false
}

/// [`require_tool`] for each of `names`; reports every missing one, not just the first.
pub fn require_tools(names: &[&str]) -> bool {
    // Not `all`: that would stop at the first missing tool and leave the others unreported.
    let missing = names.iter().filter(|name| !require_tool(name)).count();
    missing == 0
}

/// The `None` of a harness part this machine cannot provide (`what`, e.g. "a test systemd cannot
/// boot here"), after a loud `SKIPPED` line; under [`e2e_required`] a panic with `why` instead.
pub fn cannot_run<T>(what: &str, why: &str) -> Option<T> {
    if e2e_required() {
        panic!("SHOAL_E2E=1 but {what}: {why}");
    }
    skipped(&format!(
        "SKIPPED: {what} ({why}); this test did not run (set SHOAL_E2E=1 to make this a failure)"
    ));
    None
}

/// Straight to the process's stderr, not `eprintln!`: libtest captures that, and would swallow
/// the line for a test that "passed" by skipping.
fn skipped(line: &str) {
    use std::io::Write as _;
    let _ = writeln!(std::io::stderr(), "{line}");
}

pub fn on_path(name: &str) -> bool {
    let Some(path) = std::env::var_os("PATH") else {
        return false;
    };
    std::env::split_paths(&path).any(|dir| is_executable(&dir.join(name)))
}

fn is_executable(path: &Path) -> bool {
    use std::os::unix::fs::PermissionsExt;
    path.metadata()
        .is_ok_and(|meta| meta.is_file() && meta.permissions().mode() & 0o111 != 0)
}

/// Whether this process runs as root (effective uid 0).
pub fn is_root() -> bool {
    // SAFETY: geteuid has no preconditions and cannot fail.
    unsafe { libc::geteuid() == 0 }
}

/// Whether this process is root, which `what` needs (mounting a tmpfs, owning files as another
/// user); if not, a loud `SKIPPED` line and `false`, or a panic under [`e2e_required`].
pub fn require_root(what: &str) -> bool {
    if is_root() {
        return true;
    }
    cannot_run::<()>(what, "it needs root").is_some()
}

/// The flags a headless Chromium needs on these machines: no sandbox (tests run as root), no GPU,
/// and none of its background connections (the network is closed; each would be refused). Add a
/// fresh `--user-data-dir` per browser.
pub const HEADLESS_CHROMIUM_FLAGS: &[&str] = &[
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--hide-scrollbars",
];
