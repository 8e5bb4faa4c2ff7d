//! What a child process cost, for the benchmarks: wall time from spawn to exit, and its CPU
//! (user + system) from `wait4`'s rusage, so other processes on a shared machine do not count.

use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

/// Wall and CPU time of one child and the children it waited for.
#[derive(Debug, Clone, Copy)]
pub struct Cost {
    pub wall: Duration,
    pub cpu: Duration,
    /// Whether it exited 0.
    pub succeeded: bool,
}

/// Runs `cmd` (stdin and stdout to /dev/null unless the caller set them) to its end.
// The child is reaped by `wait4` (to get its own rusage), which clippy cannot see.
#[allow(clippy::zombie_processes)]
pub fn run_measured(cmd: &mut Command) -> Cost {
    let started = Instant::now();
    let child = cmd
        .stdin(Stdio::null())
        .spawn()
        .unwrap_or_else(|e| panic!("spawn {cmd:?}: {e}"));
    let pid = child.id() as libc::pid_t;
    let mut status = 0;
    // SAFETY: rusage is plain data, zero-initialised is valid; wait4 fills it for our own child.
    let mut usage: libc::rusage = unsafe { std::mem::zeroed() };
    // SAFETY: valid pointers to locals; pid is our unreaped child.
    let waited = unsafe { libc::wait4(pid, &mut status, 0, &mut usage) };
    let wall = started.elapsed();
    assert_eq!(waited, pid, "wait4 failed");
    let tv = |t: libc::timeval| Duration::new(t.tv_sec as u64, t.tv_usec as u32 * 1000);
    Cost {
        wall,
        cpu: tv(usage.ru_utime) + tv(usage.ru_stime),
        succeeded: libc::WIFEXITED(status) && libc::WEXITSTATUS(status) == 0,
    }
}
