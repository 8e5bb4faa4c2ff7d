//! The physical floor Shoal's benchmarks compare against, shared by `agent/benches/apply.rs` and
//! `tests/benches/sync.rs` (included by path, so both measure the very same loop): every file
//! written the durable way with nothing else — temp file beside the target, write, fsync,
//! rename — then one fsync per directory. Also the small measuring tools both need.

// Each bench uses only part of this module.
#![allow(dead_code)]

use std::collections::BTreeSet;
use std::fs::{self, File, OpenOptions};
use std::io::{self, Write};
use std::os::unix::fs::OpenOptionsExt;
use std::os::unix::io::AsRawFd;
use std::path::{Path, PathBuf};
use std::time::Duration;

/// The floor: each `(real path, content)` written durably with `mode`, then each directory
/// fsynced once.
pub fn floor<'a>(
    files: impl IntoIterator<Item = (PathBuf, &'a [u8])>,
    mode: u32,
) -> io::Result<()> {
    let mut dirs = BTreeSet::new();
    for (real, content) in files {
        write_durably(&real, content, mode)?;
        if let Some(dir) = real.parent() {
            dirs.insert(dir.to_owned());
        }
    }
    for dir in &dirs {
        sync_dir(dir)?;
    }
    Ok(())
}

/// temp file beside `real` (`mode`) → write → fsync → rename over `real`.
pub fn write_durably(real: &Path, content: &[u8], mode: u32) -> io::Result<()> {
    let temp = temp_beside(real);
    let mut file = OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(mode)
        .open(&temp)?;
    file.write_all(content)?;
    file.sync_all()?;
    drop(file);
    fs::rename(&temp, real)
}

pub fn temp_beside(real: &Path) -> PathBuf {
    let name = real.file_name().unwrap_or_default().to_string_lossy();
    real.with_file_name(format!(".{name}.tmp"))
}

pub fn sync_dir(dir: &Path) -> io::Result<()> {
    File::open(dir)?.sync_all()
}

/// Flushes the whole file system holding `dir` (so no earlier dirty data is flushed inside a
/// timed interval, or to make a batch durable).
pub fn syncfs(dir: &Path) -> io::Result<()> {
    let dir = File::open(dir)?;
    // SAFETY: a valid open descriptor; syncfs only flushes the filesystem it is on.
    if unsafe { libc::syncfs(dir.as_raw_fd()) } != 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

pub fn median(mut values: Vec<Duration>) -> Duration {
    values.sort();
    values[values.len() / 2]
}

/// User + system CPU time of this process so far.
pub fn cpu_time() -> Duration {
    // SAFETY: rusage is plain data, zero-initialised is valid; getrusage fills it.
    let mut usage: libc::rusage = unsafe { std::mem::zeroed() };
    // SAFETY: a valid pointer to a rusage we own.
    let rc = unsafe { libc::getrusage(libc::RUSAGE_SELF, &mut usage) };
    assert_eq!(rc, 0, "getrusage");
    timeval(usage.ru_utime) + timeval(usage.ru_stime)
}

pub fn timeval(t: libc::timeval) -> Duration {
    Duration::new(t.tv_sec as u64, t.tv_usec as u32 * 1000)
}
