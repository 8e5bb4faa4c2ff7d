//! Where the CPU went during a measurement: user + system seconds of this process, of the server
//! processes it started and of the PostgreSQL cluster (the postmaster and its backends), read
//! from `/proc/PID/stat` before and after. Linux only; a process that cannot be read counts 0.

use std::path::Path;

/// Clock ticks per second of `/proc/PID/stat` (USER_HZ, 100 on every Linux the project runs).
const TICKS: f64 = 100.0;

/// user + system seconds of `pid`, with `children` also its reaped children's.
fn seconds(pid: u32, children: bool) -> f64 {
    let Ok(stat) = std::fs::read_to_string(format!("/proc/{pid}/stat")) else {
        return 0.0;
    };
    // Fields after the command name (which may hold spaces) start after the last ')'.
    let Some((_, rest)) = stat.rsplit_once(')') else {
        return 0.0;
    };
    let fields: Vec<&str> = rest.split_whitespace().collect();
    // rest[0] is field 3 (state): utime is field 14, stime 15, cutime 16, cstime 17.
    let field = |n: usize| {
        fields
            .get(n - 3)
            .and_then(|f| f.parse::<f64>().ok())
            .unwrap_or(0.0)
    };
    let own = field(14) + field(15);
    let reaped = if children { field(16) + field(17) } else { 0.0 };
    (own + reaped) / TICKS
}

/// The parent pid of `pid`.
fn parent(pid: u32) -> Option<u32> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    let (_, rest) = stat.rsplit_once(')')?;
    rest.split_whitespace().nth(1)?.parse().ok()
}

/// CPU seconds of a process tree: `root` (and its reaped children) plus its live children.
pub fn tree_seconds(root: u32) -> f64 {
    let mut total = seconds(root, true);
    if let Ok(entries) = std::fs::read_dir("/proc") {
        for entry in entries.flatten() {
            let Some(pid) = entry
                .file_name()
                .to_str()
                .and_then(|n| n.parse::<u32>().ok())
            else {
                continue;
            };
            if parent(pid) == Some(root) {
                total += seconds(pid, true);
            }
        }
    }
    total
}

/// This process's CPU seconds (the client and its signing threads).
pub fn own_seconds() -> f64 {
    seconds(std::process::id(), false)
}

/// The postmaster's pid of a cluster whose data directory is `data`.
pub fn postmaster(data: &Path) -> Option<u32> {
    std::fs::read_to_string(data.join("postmaster.pid"))
        .ok()?
        .lines()
        .next()?
        .trim()
        .parse()
        .ok()
}

/// CPU seconds used by each part while a measurement ran.
#[derive(Debug, Default, Clone, Copy)]
pub struct Split {
    pub client: f64,
    pub servers: f64,
    pub postgres: f64,
}

/// Snapshots the parts' CPU seconds.
pub fn snapshot(servers: &[u32], postmaster: Option<u32>) -> Split {
    Split {
        client: own_seconds(),
        servers: servers.iter().map(|p| seconds(*p, false)).sum(),
        postgres: postmaster.map_or(0.0, tree_seconds),
    }
}

impl Split {
    /// `after - self`.
    pub fn until(&self, after: Split) -> Split {
        Split {
            client: after.client - self.client,
            servers: after.servers - self.servers,
            postgres: after.postgres - self.postgres,
        }
    }

    /// One line: CPU seconds per part, and per 1,000 requests.
    pub fn describe(&self, requests: usize) -> String {
        // Milliseconds of CPU per 1,000 requests (= microseconds per request).
        let per = |s: f64| 1e6 * s / requests.max(1) as f64;
        let mut out = format!(
            "  cpu: client {:.2} s, server(s) {:.2} s",
            self.client, self.servers
        );
        if self.postgres > 0.0 {
            out.push_str(&format!(", PostgreSQL {:.2} s", self.postgres));
        }
        out.push_str(&format!(
            "; per 1,000 requests: client {:.0} ms, server(s) {:.0} ms",
            per(self.client),
            per(self.servers)
        ));
        if self.postgres > 0.0 {
            out.push_str(&format!(", PostgreSQL {:.0} ms", per(self.postgres)));
        }
        out
    }
}
