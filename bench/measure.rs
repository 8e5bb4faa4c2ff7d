//! `measure OUT -- CMD [ARG]...`: runs CMD, waits for it, and writes one line to OUT:
//! `wall_s cpu_s maxrss_kib exit_code`.
//!
//! Compiled by `bench/compare.sh` with plain `rustc` (std only, no crates). Why not Python's
//! `resource` module or a shell: on Linux a child's `ru_maxrss` starts at its parent's RSS high
//! water mark when it execs (the kernel copies the old mm's hiwater into the new process's
//! `maxrss`), so a command started by a 14 MiB Python interpreter never reports less than 14 MiB.
//! This helper is ~1 MiB, so that floor stays at ~1 MiB; `compare.sh` measures it (`true`) and
//! prints it with the table.
//!
//! - wall: from just before the spawn to the return of `wait4` on the child.
//! - cpu: user + system of every process of the tree that was waited for (`RUSAGE_CHILDREN`).
//! - maxrss: `RUSAGE_CHILDREN`'s `ru_maxrss`, the largest RSS reached by any **single** process
//!   of the tree (the kernel keeps a maximum, not a sum): a pipeline of three 10 MiB processes
//!   running at once reports 10 MiB. Processes that detach and are never waited for (daemons)
//!   are not counted; none of the measured tools does that.
//!
//! The child's stdin, stdout and stderr are this process's (the caller redirects them).

use std::io::Write;
use std::os::raw::{c_int, c_long};
use std::process::Command;
use std::time::Instant;

/// `struct rusage` on Linux with a `long`-sized `time_t` (every 64-bit target): two `timeval`s
/// (seconds, microseconds) and 14 `long`s, `ru_maxrss` (KiB) first.
#[repr(C)]
#[derive(Default)]
struct Rusage {
    utime: [c_long; 2],
    stime: [c_long; 2],
    maxrss: c_long,
    rest: [c_long; 13],
}

const RUSAGE_CHILDREN: c_int = -1;

extern "C" {
    fn wait4(pid: c_int, status: *mut c_int, options: c_int, rusage: *mut Rusage) -> c_int;
    fn getrusage(who: c_int, rusage: *mut Rusage) -> c_int;
}

fn seconds(tv: [c_long; 2]) -> f64 {
    tv[0] as f64 + tv[1] as f64 / 1e6
}

fn main() {
    let args: Vec<String> = std::env::args().collect();
    if args.len() < 4 || args[2] != "--" {
        eprintln!("usage: measure OUT -- CMD [ARG]...");
        std::process::exit(2);
    }
    let (out, program, rest) = (&args[1], &args[3], &args[4..]);

    let start = Instant::now();
    let child = match Command::new(program).args(rest).spawn() {
        Ok(child) => child,
        Err(e) => {
            eprintln!("measure: cannot start {program}: {e}");
            std::process::exit(127);
        }
    };
    // Reaped here with wait4 rather than Child::wait, so the rusage below includes it; the
    // `Child` handle is dropped without waiting (that neither kills nor reaps).
    let pid = child.id() as c_int;
    let mut status: c_int = 0;
    let mut own = Rusage::default();
    // SAFETY: plain libc calls with valid pointers to owned, correctly laid out values.
    let reaped = unsafe { wait4(pid, &mut status, 0, &mut own) };
    let wall = start.elapsed().as_secs_f64();
    if reaped != pid {
        eprintln!("measure: wait4 failed: {}", std::io::Error::last_os_error());
        std::process::exit(1);
    }
    let mut tree = Rusage::default();
    // SAFETY: as above.
    unsafe { getrusage(RUSAGE_CHILDREN, &mut tree) };

    // Exit code, or 128 + signal as a shell reports it.
    let code = if status & 0x7f == 0 { (status >> 8) & 0xff } else { 128 + (status & 0x7f) };
    let cpu = seconds(tree.utime) + seconds(tree.stime);
    let line = format!("{wall:.4} {cpu:.4} {} {code}\n", tree.maxrss);
    let written = std::fs::File::create(out).and_then(|mut f| f.write_all(line.as_bytes()));
    if let Err(e) = written {
        eprintln!("measure: cannot write {out}: {e}");
        std::process::exit(1);
    }
    std::process::exit(code);
}
