//! `Hub`: a network namespace of the test's own, with a bridge that simulated hosts
//! ([`SystemdHost`]s, each in its own network namespace) join by veth. Servers that must be
//! reached across the links listen inside it ([`Hub::netns`], [`Hub::command`]).
//!
//! Addresses are on `10.99.0.0/24` and exist only on the hub's bridge and the hosts' `eth0`:
//! nothing is added to the machine's own namespace, and no traffic leaves the machine. The
//! namespace is held by a `sleep` process this harness starts; dropping the hub kills it by PID,
//! which removes the namespace with its bridge and every veth (the hosts' ends go too).

use std::ffi::OsStr;
use std::net::Ipv4Addr;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};

use crate::command::{die_with_parent, failure_report, output};
use crate::requirements::cannot_run;
use crate::SystemdHost;
use shoal_testkit::collector::command_in_netns;

/// The hub's own address on its bridge; hosts get `10.99.0.(10 + n)`.
pub const HUB_IP: Ipv4Addr = Ipv4Addr::new(10, 99, 0, 1);

pub struct Hub {
    /// `unshare --net sleep infinity`: the process that keeps the namespace alive.
    holder: Child,
}

impl Hub {
    /// Makes the namespace and its bridge. `None` (with a `SKIPPED` line) where this machine
    /// cannot; under `SHOAL_E2E=1` that panics instead.
    pub fn create() -> Option<Hub> {
        // SAFETY: geteuid has no preconditions and cannot fail.
        if unsafe { libc::geteuid() } != 0 {
            return skip("network namespaces and veth links need root");
        }
        let mut cmd = Command::new("unshare");
        cmd.args(["--net", "sleep", "infinity"])
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::inherit());
        // If the test dies without dropping the hub, the namespace holder dies with it.
        die_with_parent(&mut cmd);
        let holder = match cmd.spawn() {
            Ok(child) => child,
            Err(e) => return skip(&format!("cannot start `unshare --net`: {e}")),
        };
        let hub = Hub { holder };
        // `unshare` without --fork execs sleep in place, once the namespace is made.
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
        while hub.own_netns() == current_netns() {
            assert!(
                std::time::Instant::now() < deadline,
                "`unshare --net` did not enter a new namespace within 10s"
            );
            std::thread::sleep(std::time::Duration::from_millis(10));
        }
        let bridge = hub.ip_script(&[
            "link set lo up",
            "link add br0 type bridge",
            &format!("addr add {HUB_IP}/24 dev br0"),
            "link set br0 up",
        ]);
        if let Err(why) = bridge {
            return skip(&why);
        }
        Some(hub)
    }

    /// The namespace, as a path other programs can join (`nsenter --net=PATH`, `setns`).
    pub fn netns(&self) -> PathBuf {
        PathBuf::from(format!("/proc/{}/ns/net", self.holder.id()))
    }

    /// `program`, to be run inside the hub's network namespace (only: mounts, PIDs and the
    /// filesystem are this process's).
    pub fn command(&self, program: impl AsRef<OsStr>) -> Command {
        command_in_netns(&self.netns(), program)
    }

    /// Joins `host` to the hub with a veth pair, `shoal-h{n}` here and `eth0` there, and gives
    /// it the address `10.99.0.(10 + n)/24`, which it returns.
    pub fn attach(&self, host: &SystemdHost, n: u8) -> Ipv4Addr {
        let ip = Ipv4Addr::new(10, 99, 0, 10 + n);
        let link = link_name(n);
        self.ip_script(&[
            &format!(
                "link add {link} type veth peer name eth0 netns {}",
                host.pid()
            ),
            &format!("link set {link} master br0"),
            &format!("link set {link} up"),
        ])
        .unwrap_or_else(|e| panic!("{e}"));
        for step in [
            vec!["ip", "link", "set", "lo", "up"],
            vec!["ip", "addr", "add", &format!("{ip}/24"), "dev", "eth0"],
            vec!["ip", "link", "set", "eth0", "up"],
        ] {
            let out = host.exec(&step);
            assert!(
                out.status.success(),
                "in host {}: {}: {}",
                host.pid(),
                step.join(" "),
                String::from_utf8_lossy(&out.stderr)
            );
        }
        ip
    }

    /// Cuts (`up = false`) or restores the link of host `n`, from the hub's side: the host
    /// sees its `eth0` lose its carrier, as when a cable is pulled.
    pub fn set_link(&self, n: u8, up: bool) {
        let state = if up { "up" } else { "down" };
        self.ip_script(&[&format!("link set {} {state}", link_name(n))])
            .unwrap_or_else(|e| panic!("{e}"));
    }

    /// The namespace the holder is in now (this process's until `unshare` has made its own).
    fn own_netns(&self) -> Option<PathBuf> {
        std::fs::read_link(self.netns()).ok()
    }

    /// Runs `ip` once per line, inside the hub; the first failure, described.
    fn ip_script(&self, lines: &[&str]) -> Result<(), String> {
        for line in lines {
            let mut cmd = self.command("ip");
            cmd.args(line.split_whitespace());
            let out = output(&mut cmd);
            if !out.status.success() {
                return Err(failure_report(&cmd, &out));
            }
        }
        Ok(())
    }
}

impl Drop for Hub {
    fn drop(&mut self) {
        // Only ever the process this harness started.
        let _ = self.holder.kill();
        let _ = self.holder.wait();
    }
}

fn link_name(n: u8) -> String {
    format!("shoal-h{n}")
}

fn current_netns() -> Option<PathBuf> {
    std::fs::read_link("/proc/self/ns/net").ok()
}

fn skip<T>(why: &str) -> Option<T> {
    cannot_run("the test network cannot be made here", why)
}
