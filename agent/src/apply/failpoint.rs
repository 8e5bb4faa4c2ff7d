//! Crash-test hooks: with the `failpoints` feature, `fail_point!("name")` kills the process
//! (SIGKILL, exactly what `kill -9` does) at the N-th pass named by `SHOAL_FAILPOINT=name:N`,
//! and runs the hooks a test set with [`set_hook`] (to change the disk at that instant).
//! Without the feature the macro expands to nothing; it must never change behaviour otherwise.
//!
//! Why not the `fail` crate: its actions (panic, return, sleep) run inside the process, so
//! destructors and unwinding still happen; a crash test wants the process gone with no cleanup,
//! and it is driven from a parent that re-executes the test binary, for which one environment
//! variable is the simplest switch. No dependency is needed.

/// `NAME` or `NAME:N`: die at the N-th pass through fail point `NAME` (N counts from 1).
pub const FAILPOINT_ENV: &str = "SHOAL_FAILPOINT";

/// Every fail point in apply, in the order a transaction passes them.
pub const FAIL_POINTS: &[&str] = &[
    "apply_after_blobs_syncfs",
    "apply_after_blobs",
    "apply_after_journal",
    "apply_after_mkdir",
    "apply_after_resolve",
    "apply_after_temp_write",
    "apply_after_files_syncfs",
    "apply_after_rename",
    "apply_after_remove",
    "apply_after_dir_sync",
    "journal_done",
    "recover_after_entry",
    "recover_before_journal_removal",
];

/// Every fail point between apply and the commit point of a sync with services (`services`,
/// `sync`), in the order a sync passes them; crash-tested against a real systemd by
/// `tests/tests/services_crash.rs`.
pub const SERVICE_FAIL_POINTS: &[&str] = &[
    "services_after_journal",
    "services_after_reload",
    "services_after_action",
    "services_health_gate",
    "services_after_undo",
    "services_revert_after_action",
    "services_before_journal_end",
];

macro_rules! fail_point {
    ($name:literal) => {
        #[cfg(feature = "failpoints")]
        $crate::apply::failpoint::pass($name);
    };
}
pub(crate) use fail_point;

/// Runs `hook` (instead of killing the process) every time fail point `name` is passed, in
/// this process: a test's way to change the disk at an exact instant of a transaction, say to
/// swap a directory for a symbolic link between resolving a path and writing it.
#[cfg(feature = "failpoints")]
pub fn set_hook(name: &'static str, hook: impl Fn() + Send + 'static) {
    hooks()
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner())
        .push((name, Box::new(hook)));
}

#[cfg(feature = "failpoints")]
type Hooks = std::sync::Mutex<Vec<(&'static str, Box<dyn Fn() + Send>)>>;

#[cfg(feature = "failpoints")]
fn hooks() -> &'static Hooks {
    static HOOKS: std::sync::OnceLock<Hooks> = std::sync::OnceLock::new();
    HOOKS.get_or_init(Default::default)
}

#[cfg(feature = "failpoints")]
pub(crate) fn pass(name: &str) {
    use std::sync::atomic::{AtomicU64, Ordering};
    use std::sync::OnceLock;

    {
        let hooks = hooks()
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        for (point, hook) in hooks.iter() {
            if *point == name {
                hook();
            }
        }
    }

    static ARMED: OnceLock<Option<(String, u64)>> = OnceLock::new();
    static PASSES: AtomicU64 = AtomicU64::new(0);

    let armed = ARMED.get_or_init(|| {
        let spec = std::env::var(FAILPOINT_ENV).ok()?;
        let (point, nth) = match spec.split_once(':') {
            Some((point, nth)) => (point, nth.parse().ok()?),
            None => (spec.as_str(), 1),
        };
        Some((point.to_owned(), nth))
    });
    let Some((point, nth)) = armed else { return };
    if point != name || PASSES.fetch_add(1, Ordering::SeqCst) + 1 != *nth {
        return;
    }
    eprintln!("fail point {name}:{nth}: killing the process");
    kill_self();
}

#[cfg(feature = "failpoints")]
fn kill_self() -> ! {
    // SIGKILL from outside, as an operator's `kill -9` or the OOM killer would; std has no
    // raise(). abort() (SIGABRT) is the fallback: also no cleanup, but it may dump core.
    let pid = std::process::id().to_string();
    let _ = std::process::Command::new("sh")
        .args(["-c", "kill -KILL \"$1\"", "sh", &pid])
        .status();
    // The signal is delivered asynchronously; never run another line of apply meanwhile.
    for _ in 0..100 {
        std::thread::sleep(std::time::Duration::from_millis(10));
    }
    std::process::abort()
}
