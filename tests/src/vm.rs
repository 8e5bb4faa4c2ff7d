//! `Vm`: a small x86_64 virtual machine for power-cut tests — Debian's kernel, a busybox initramfs
//! built here, one ext4 disk image — driven over its serial console and killed with SIGKILL, so
//! whatever the guest kernel had not yet sent to its disk is lost, as in a power cut.
//!
//! Why a SIGKILL of QEMU is a power cut for the guest: the guest's page cache (file data and
//! metadata it has not written back, ext4's delayed allocations, its journal's uncommitted
//! transactions) lives in QEMU's memory and dies with it. What the guest did send to its
//! virtual disk before the kill reached the image file, flushed or not: the host does not crash,
//! so the model is a disk without a volatile write cache of its own. The drive is opened with
//! `cache=none` (O_DIRECT) where the image's file system allows it, so QEMU keeps no cache either
//! and the image on the host holds exactly what the guest submitted; `cache=writeback` (the host
//! page cache, which also survives QEMU) where it does not. Either way no write the guest had not
//! submitted can appear in the image, which is what a crash-ordering bug needs to show.
//!
//! The guest's `/init` (busybox sh) mounts the disk at `/mnt/disk` and then reads one command per
//! line from the console: `net-up`, `net-down`, `sync` (the agent under `strace`, which only
//! observes: it prints the agent's `connect`, `syncfs`, `rename*` and `unlink*` calls on the
//! console, so the harness sees where a sync is; what the agent said is printed after it as
//! `SHOAL-VM agent: …` lines), `list` (hashes and modes of every file under `/mnt/disk/root`, the
//! state directory's entries), `status` (`shoal-agent status --json`, and its stderr),
//! `halt` (unmount, power off). Each command ends with a `SHOAL-VM done <command>` line.

use std::collections::BTreeMap;
use std::fs::File;
use std::io::{BufRead, BufReader, Write};
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStdin, Command, Stdio};
use std::sync::mpsc::{self, Receiver, RecvTimeoutError};
use std::time::{Duration, Instant};

use tempfile::TempDir;

use crate::command::{describe, die_with_parent, output, run};
use crate::requirements::{cannot_run, on_path, require_tools};

/// What the guest's `/init` prints before every harness-facing line.
pub const MARK: &str = "SHOAL-VM";
/// Where the guest mounts its disk; the agent's config is `DISK_MOUNT/agent.toml`.
pub const DISK_MOUNT: &str = "/mnt/disk";
/// The address at which the guest reaches the host's loopback (QEMU user networking).
pub const HOST_FROM_GUEST: &str = "10.0.2.2";

/// Modules the guest needs, loaded with their dependencies unless the kernel has them built in:
/// the PCI transport, the disk, the network card, ext4 and the checksum ext4's metadata uses.
const MODULES: &[&str] = &[
    "virtio_pci",
    "virtio_blk",
    "virtio_net",
    "crc32c_generic",
    "ext4",
];
/// How long a guest may take from QEMU's start to `/init`'s ready line (TCG on two busy cores
/// takes about 4 s).
const BOOT_TIMEOUT: Duration = Duration::from_secs(90);
/// Under KVM a guest reaches `/init` in about a second; one that has not after this long is on
/// a KVM that opens but does not run guests at speed (nested, say), and TCG is used instead.
const KVM_PROBE_TIMEOUT: Duration = Duration::from_secs(20);

/// The guest's `/init`. `@MARK@` and `@DISK@` are replaced when the initramfs is built.
const INIT: &str = r#"#!/bin/busybox sh
/bin/busybox --install -s /bin
export PATH=/bin
mount -t proc proc /proc
mount -t sysfs sys /sys
mount -t devtmpfs dev /dev
stty -echo
for m in $(cat /lib/modules/order); do
  insmod "/lib/modules/$m.ko" || echo "@MARK@ error: insmod $m failed"
done
if ! mount -t ext4 /dev/vda @DISK@; then
  echo "@MARK@ error: cannot mount /dev/vda"
  poweroff -f
fi
ip link set lo up
echo "@MARK@ ready $(cut -d' ' -f1 /proc/uptime)"
while read -r cmd; do
  case "$cmd" in
    net-up)
      ip link set eth0 up && ip addr add 10.0.2.15/24 dev eth0 && ip route add default via 10.0.2.2 ;;
    net-down)
      ip addr flush dev eth0; ip link set eth0 down ;;
    sync)
      echo "@MARK@ sync-begin"
      strace -f -qq --seccomp-bpf -e signal=none -o /dev/console \
        -e trace=connect,syncfs,rename,renameat,renameat2,unlink,unlinkat \
        shoal-agent --config @DISK@/agent.toml sync > /tmp/agent.out 2>&1
      rc=$?
      grep -iE 'warn|error|damaged|recovered|applied|up to date|refused|cannot' /tmp/agent.out \
        | cut -c1-400 | sed 's/^/@MARK@ agent: /'
      echo "@MARK@ sync-end $rc" ;;
    list)
      cd @DISK@/root
      find . -type f | sort > /tmp/files
      xargs -r sha256sum < /tmp/files | sed 's/^/@MARK@ H /'
      xargs -r stat -c '@MARK@ M %a %n' < /tmp/files
      find . ! -type f ! -type d | sed 's/^/@MARK@ O /'
      ls -a @DISK@/state | sed 's/^/@MARK@ S /'
      echo "@MARK@ fs-errors $(dmesg | grep -c 'EXT4-fs error')"
      cd / ;;
    status)
      shoal-agent --config @DISK@/agent.toml status --json > /tmp/status.out 2> /tmp/status.err
      echo "@MARK@ json $(tr -d '\n' < /tmp/status.out)"
      cut -c1-400 /tmp/status.err | sed 's/^/@MARK@ agent: /' ;;
    halt)
      cd /
      umount @DISK@ && echo "@MARK@ unmounted"
      poweroff -f ;;
    *)
      echo "@MARK@ error: unknown command $cmd" ;;
  esac
  echo "@MARK@ done $cmd"
done
"#;

/// How the guest's CPU is run.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Accel {
    Kvm,
    Tcg,
}

/// A line the guest printed and when the harness read it.
#[derive(Debug, Clone)]
pub struct Line {
    pub at: Instant,
    pub text: String,
}

/// The disk image, the kernel and the initramfs of one virtual device.
pub struct Vm {
    dir: TempDir,
    kernel: PathBuf,
    initramfs: PathBuf,
    disk: PathBuf,
    cache: &'static str,
    accel: Option<Accel>,
    boots: usize,
}

impl Vm {
    /// Builds the initramfs (busybox, strace, `agent`, the kernel's modules) and an ext4 disk of
    /// `disk_mib` MiB holding `disk_files` (path inside the disk, content; a path ending in `/`
    /// is a directory). `None` after a loud
    /// `SKIPPED` when QEMU, busybox, strace, e2fsprogs or a Debian kernel is missing; a panic
    /// instead under `SHOAL_E2E=1`.
    pub fn new(agent: &Path, disk_files: &[(&str, Vec<u8>)], disk_mib: u64) -> Option<Vm> {
        if !require_tools(&[
            "qemu-system-x86_64",
            "busybox",
            "strace",
            "mkfs.ext4",
            "debugfs",
            "ldd",
        ]) {
            return None;
        }
        let (kernel, modules_dir) = find_kernel()?;
        let dir = tempfile::tempdir().expect("a temporary directory for the VM");
        let kernel = uncompressed_kernel(&kernel, &dir.path().join("vmlinux")).unwrap_or(kernel);
        let initramfs = dir.path().join("initramfs.cpio");
        build_initramfs(&initramfs, agent, &modules_dir);
        let disk = dir.path().join("disk.img");
        make_disk(
            &disk,
            &dir.path().join("disk-content"),
            disk_files,
            disk_mib,
        );
        let cache = if supports_direct_io(&disk) {
            "none"
        } else {
            "writeback"
        };
        Some(Vm {
            dir,
            kernel,
            initramfs,
            disk,
            cache,
            accel: None,
            boots: 0,
        })
    }

    /// The accelerator the guests run on, once the first boot has decided it.
    pub fn accel(&self) -> Option<Accel> {
        self.accel
    }

    /// The QEMU cache mode of the disk (`none` or `writeback`).
    pub fn cache_mode(&self) -> &'static str {
        self.cache
    }

    /// Boots the machine and waits for `/init` to be ready for commands. The first boot decides
    /// the accelerator: KVM when `/dev/kvm` opens and a guest reaches `/init` in time under it,
    /// else TCG (`SHOAL_VM_ACCEL=tcg` or `kvm` forces one).
    pub fn boot(&mut self) -> Guest {
        self.boots += 1;
        if let Some(accel) = self.accel {
            return self
                .start(accel, BOOT_TIMEOUT)
                .unwrap_or_else(|why| panic!("the VM did not boot ({accel:?}): {why}"));
        }
        let forced = std::env::var("SHOAL_VM_ACCEL").ok();
        let try_kvm = match forced.as_deref() {
            Some("tcg") => false,
            Some("kvm") => true,
            _ => kvm_opens(),
        };
        if try_kvm {
            let timeout = if forced.is_some() {
                BOOT_TIMEOUT
            } else {
                KVM_PROBE_TIMEOUT
            };
            match self.start(Accel::Kvm, timeout) {
                Ok(guest) => {
                    self.accel = Some(Accel::Kvm);
                    return guest;
                }
                Err(why) if forced.is_none() => {
                    eprintln!("vm: KVM is not usable here ({why}); using TCG");
                }
                Err(why) => panic!("SHOAL_VM_ACCEL=kvm but the VM did not boot: {why}"),
            }
        }
        let guest = self
            .start(Accel::Tcg, BOOT_TIMEOUT)
            .unwrap_or_else(|why| panic!("the VM did not boot (TCG): {why}"));
        self.accel = Some(Accel::Tcg);
        guest
    }

    /// Copies the directory `inside` of the disk (e.g. `/root`) to `dest` on the host with
    /// `debugfs rdump`, which reads the image without mounting it. Only for a disk whose guest
    /// unmounted it (after [`Guest::halt`]): debugfs does not replay the ext4 journal.
    pub fn read_dir(&self, inside: &str, dest: &Path) {
        std::fs::create_dir_all(dest).expect("create the rdump destination");
        let out = output(
            Command::new("debugfs")
                .arg("-R")
                .arg(format!("rdump {inside} {}", dest.display()))
                .arg(&self.disk),
        );
        assert!(
            out.status.success(),
            "debugfs rdump failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }

    fn start(&self, accel: Accel, timeout: Duration) -> Result<Guest, String> {
        let log = self.dir.path().join(format!("qemu-{}.log", self.boots));
        let stderr = File::create(&log).expect("create the QEMU log");
        let mut cmd = Command::new("qemu-system-x86_64");
        cmd.args(["-nodefaults", "-no-user-config", "-no-reboot"])
            .args(["-display", "none", "-serial", "stdio"])
            .args(["-m", "384", "-smp", "1"]);
        match accel {
            Accel::Kvm => cmd.args(["-machine", "pc,accel=kvm", "-cpu", "host"]),
            Accel::Tcg => cmd.args(["-machine", "pc,accel=tcg"]),
        };
        cmd.arg("-kernel")
            .arg(&self.kernel)
            .arg("-initrd")
            .arg(&self.initramfs)
            .args([
                "-append",
                "console=ttyS0 quiet loglevel=3 panic=-1 mitigations=off",
            ])
            .arg("-drive")
            .arg(format!(
                "file={},format=raw,if=virtio,cache={}",
                self.disk.display(),
                self.cache
            ))
            // User-mode networking: the guest reaches the host's loopback at 10.0.2.2 and
            // nothing else is listening for it; no packet leaves QEMU's process.
            .args([
                "-netdev",
                "user,id=net0",
                "-device",
                "virtio-net-pci,netdev=net0",
            ])
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(stderr);
        die_with_parent(&mut cmd);
        let description = describe(&cmd);
        let mut child = cmd
            .spawn()
            .unwrap_or_else(|e| panic!("cannot start `{description}`: {e}"));
        let stdin = child.stdin.take().expect("QEMU's stdin is piped");
        let stdout = child.stdout.take().expect("QEMU's stdout is piped");
        let (tx, lines) = mpsc::channel();
        std::thread::spawn(move || {
            let mut reader = BufReader::new(stdout);
            let mut buf = Vec::new();
            loop {
                buf.clear();
                match reader.read_until(b'\n', &mut buf) {
                    Ok(0) | Err(_) => break,
                    Ok(_) => {
                        let text = String::from_utf8_lossy(&buf)
                            .trim_end_matches(['\r', '\n'])
                            .to_owned();
                        if tx
                            .send(Line {
                                at: Instant::now(),
                                text,
                            })
                            .is_err()
                        {
                            break;
                        }
                    }
                }
            }
        });
        let mut guest = Guest {
            child: Some(child),
            stdin,
            lines,
            transcript: Vec::new(),
            log,
            booted: Instant::now(),
        };
        match guest.wait_for(&format!("{MARK} ready"), timeout) {
            Ok(_) => Ok(guest),
            Err(why) => {
                let tail = guest.tail(20);
                guest.kill();
                Err(format!("{why}; `{description}`; console:\n{tail}"))
            }
        }
    }
}

/// A running guest, driven over its console. Dropping it kills QEMU.
pub struct Guest {
    child: Option<Child>,
    stdin: ChildStdin,
    lines: Receiver<Line>,
    transcript: Vec<String>,
    log: PathBuf,
    booted: Instant,
}

impl Guest {
    /// When QEMU was started.
    pub fn booted(&self) -> Instant {
        self.booted
    }

    /// Sends `command` to `/init` without waiting for it.
    pub fn send(&mut self, command: &str) {
        writeln!(self.stdin, "{command}")
            .and_then(|()| self.stdin.flush())
            .unwrap_or_else(|e| panic!("cannot send {command:?} to the guest: {e}"));
    }

    /// Runs `command` and returns what the guest printed up to its `done` line.
    pub fn run(&mut self, command: &str, timeout: Duration) -> Vec<Line> {
        self.send(command);
        self.wait_for(&format!("{MARK} done {command}"), timeout)
            .unwrap_or_else(|why| panic!("guest command {command:?}: {why}\n{}", self.tail(40)))
    }

    /// The next line the guest prints before `deadline`; `None` at the deadline. Panics when the
    /// guest stopped.
    pub fn next_line(&mut self, deadline: Instant) -> Option<Line> {
        let wait = deadline.saturating_duration_since(Instant::now());
        match self.lines.recv_timeout(wait) {
            Ok(line) => {
                self.transcript.push(line.text.clone());
                Some(line)
            }
            Err(RecvTimeoutError::Timeout) => None,
            Err(RecvTimeoutError::Disconnected) => {
                panic!("the guest stopped unexpectedly:\n{}", self.tail(40))
            }
        }
    }

    /// Collects lines until one starts with `prefix` (returned last); an error on timeout, on a
    /// `SHOAL-VM error` line, or when QEMU exits.
    pub fn wait_for(&mut self, prefix: &str, timeout: Duration) -> Result<Vec<Line>, String> {
        let deadline = Instant::now() + timeout;
        let mut seen = Vec::new();
        loop {
            let wait = deadline.saturating_duration_since(Instant::now());
            let line = match self.lines.recv_timeout(wait) {
                Ok(line) => line,
                Err(RecvTimeoutError::Timeout) => {
                    return Err(format!("no {prefix:?} line within {timeout:?}"))
                }
                Err(RecvTimeoutError::Disconnected) => {
                    return Err(format!(
                        "QEMU exited before {prefix:?}; its log: {}",
                        std::fs::read_to_string(&self.log)
                            .unwrap_or_default()
                            .trim()
                    ))
                }
            };
            self.transcript.push(line.text.clone());
            if line.text.starts_with(&format!("{MARK} error")) {
                return Err(line.text);
            }
            let done = line.text.starts_with(prefix);
            seen.push(line);
            if done {
                return Ok(seen);
            }
        }
    }

    /// The last `n` lines the guest printed.
    pub fn tail(&self, n: usize) -> String {
        let start = self.transcript.len().saturating_sub(n);
        self.transcript[start..].join("\n")
    }

    /// The power cut: SIGKILL to QEMU, the whole machine at once.
    pub fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            // Child::kill is SIGKILL; `child` is QEMU itself, started by us.
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// Unmounts the disk and powers off; waits for QEMU to exit.
    pub fn halt(mut self) {
        self.send("halt");
        self.wait_for(&format!("{MARK} unmounted"), BOOT_TIMEOUT)
            .unwrap_or_else(|why| panic!("halt: {why}\n{}", self.tail(40)));
        if let Some(mut child) = self.child.take() {
            let deadline = Instant::now() + BOOT_TIMEOUT;
            loop {
                match child.try_wait() {
                    Ok(Some(_)) => break,
                    Ok(None) if Instant::now() < deadline => {
                        std::thread::sleep(Duration::from_millis(50))
                    }
                    _ => {
                        let _ = child.kill();
                        let _ = child.wait();
                        panic!("the guest did not power off");
                    }
                }
            }
        }
    }
}

impl Drop for Guest {
    fn drop(&mut self) {
        self.kill();
    }
}

/// What the guest's `list` command printed: the files under the device root, the other entries
/// there (links, devices), the state directory's entries and the ext4 errors the kernel logged.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Listing {
    /// Device path (`/srv/…`) → (mode, sha256).
    pub files: BTreeMap<String, (u32, String)>,
    pub others: Vec<String>,
    pub state: Vec<String>,
    pub fs_errors: usize,
}

impl Listing {
    pub fn parse(lines: &[Line]) -> Listing {
        let mut listing = Listing::default();
        let mut hashes = BTreeMap::new();
        let mut modes = BTreeMap::new();
        let device_path = |rel: &str| rel.trim_start_matches('.').to_owned();
        for line in lines {
            let Some(rest) = line.text.strip_prefix(MARK).map(str::trim_start) else {
                continue;
            };
            if let Some(rest) = rest.strip_prefix("H ") {
                let (hash, path) = rest.split_once("  ").expect("sha256sum line");
                hashes.insert(device_path(path), hash.to_owned());
            } else if let Some(rest) = rest.strip_prefix("M ") {
                let (mode, path) = rest.split_once(' ').expect("stat line");
                let mode = u32::from_str_radix(mode, 8).expect("octal mode");
                modes.insert(device_path(path), mode);
            } else if let Some(path) = rest.strip_prefix("O ") {
                listing.others.push(device_path(path));
            } else if let Some(name) = rest.strip_prefix("S ") {
                if name != "." && name != ".." {
                    listing.state.push(name.to_owned());
                }
            } else if let Some(count) = rest.strip_prefix("fs-errors ") {
                listing.fs_errors = count.trim().parse().expect("an error count");
            }
        }
        for (path, hash) in hashes {
            let mode = modes.get(&path).copied().expect("a mode for every file");
            listing.files.insert(path, (mode, hash));
        }
        listing
    }
}

/// The static agent the guest runs: `$SHOAL_VM_AGENT_BIN` when set, else
/// `cargo build --release --target x86_64-unknown-linux-musl` in a target directory of its own
/// (`<target>/vm-agent`, so it never waits on the lock of the tests' own). Built without LTO and
/// with 16 codegen units (the device profile's code, minutes less to build); panic = abort as in
/// `scripts/cross-build.sh`. ring's C is compiled by `musl-gcc` where Debian's musl-tools is
/// installed, else by the host's gcc (it uses no libc headers that differ).
pub fn static_agent_bin() -> PathBuf {
    if let Some(path) = std::env::var_os("SHOAL_VM_AGENT_BIN") {
        return PathBuf::from(path);
    }
    let exe = std::env::current_exe().expect("the test knows its own executable");
    // …/target/<profile>/deps/<test> → …/target
    let target = exe
        .ancestors()
        .nth(3)
        .expect("the test runs from <target>/<profile>/deps")
        .join("vm-agent");
    let workspace = Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("the e2e crate lives one level below the workspace root");
    let triple = "x86_64-unknown-linux-musl";
    let cc = if on_path("musl-gcc") {
        "musl-gcc"
    } else {
        "gcc"
    };
    let mut build = Command::new(std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into()));
    build
        .args(["build", "--quiet", "--release", "--manifest-path"])
        .arg(workspace.join("Cargo.toml"))
        .args([
            "-p",
            "shoal-agent",
            "--bin",
            "shoal-agent",
            "--target",
            triple,
        ])
        .arg("--target-dir")
        .arg(&target)
        .env("CARGO_PROFILE_RELEASE_LTO", "false")
        .env("CARGO_PROFILE_RELEASE_CODEGEN_UNITS", "16")
        .env("CARGO_PROFILE_RELEASE_PANIC", "abort")
        .env("CC_x86_64_unknown_linux_musl", cc);
    let out = output(&mut build);
    if !out.status.success() {
        panic!(
            "cannot build the static agent (`rustup target add {triple}` installs the target):\n{}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
    let binary = target.join(triple).join("release/shoal-agent");
    assert!(binary.is_file(), "{} was not built", binary.display());
    binary
}

/// The newest `/boot/vmlinuz-V` whose modules are in `/lib/modules/V` (or `$SHOAL_VM_KERNEL`).
fn find_kernel() -> Option<(PathBuf, PathBuf)> {
    let from_env = std::env::var_os("SHOAL_VM_KERNEL").map(PathBuf::from);
    let mut candidates: Vec<PathBuf> = match from_env {
        Some(path) => vec![path],
        None => std::fs::read_dir("/boot")
            .map(|dir| {
                dir.filter_map(Result::ok)
                    .map(|e| e.path())
                    .filter(|p| {
                        p.file_name()
                            .and_then(|n| n.to_str())
                            .is_some_and(|n| n.starts_with("vmlinuz-"))
                    })
                    .collect()
            })
            .unwrap_or_default(),
    };
    candidates.sort();
    for kernel in candidates.into_iter().rev() {
        let version = kernel
            .file_name()
            .and_then(|n| n.to_str())
            .and_then(|n| n.strip_prefix("vmlinuz-"))
            .unwrap_or_default()
            .to_owned();
        let modules = Path::new("/lib/modules").join(&version);
        if modules.join("modules.dep").is_file() && File::open(&kernel).is_ok() {
            return Some((kernel, modules));
        }
    }
    cannot_run(
        "no kernel for the power-cut VM",
        "no readable /boot/vmlinuz-V with /lib/modules/V/modules.dep (apt-get install linux-image-amd64)",
    )
}

/// The kernel of the bzImage `bzimage` as an uncompressed ELF at `dest`, which QEMU boots through
/// its PVH entry point (the kernel must have `CONFIG_PVH`, as Debian's does): it skips the
/// kernel's own decompression, seconds of every boot under TCG (Debian's is xz-compressed).
/// `None` when the kernel has no PVH entry, its payload is not xz, or `xz` is missing: QEMU
/// then boots the bzImage itself.
fn uncompressed_kernel(bzimage: &Path, dest: &Path) -> Option<PathBuf> {
    let name = bzimage.file_name()?.to_str()?;
    let version = name.strip_prefix("vmlinuz-")?;
    let config =
        std::fs::read_to_string(Path::new("/boot").join(format!("config-{version}"))).ok()?;
    if !config.lines().any(|l| l == "CONFIG_PVH=y") || !on_path("xz") {
        return None;
    }
    let image = std::fs::read(bzimage).ok()?;
    let magic = b"\xfd7zXZ\x00";
    let start = image.windows(magic.len()).position(|w| w == magic)?;
    let out = crate::command::output_with_stdin(
        Command::new("xz").args(["-dc", "--single-stream"]),
        &image[start..],
    );
    if !out.status.success() || !out.stdout.starts_with(b"\x7fELF") {
        return None;
    }
    std::fs::write(dest, &out.stdout).ok()?;
    Some(dest.to_owned())
}

/// Whether `/dev/kvm` opens for reading and writing (it may still be too slow to use: see
/// [`KVM_PROBE_TIMEOUT`]).
fn kvm_opens() -> bool {
    std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .open("/dev/kvm")
        .is_ok()
}

/// Whether `path`'s file system takes O_DIRECT (tmpfs does not), which `cache=none` needs.
fn supports_direct_io(path: &Path) -> bool {
    use std::os::unix::fs::OpenOptionsExt;
    std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .custom_flags(libc::O_DIRECT)
        .open(path)
        .is_ok()
}

fn make_disk(image: &Path, content: &Path, files: &[(&str, Vec<u8>)], mib: u64) {
    std::fs::create_dir_all(content).expect("create the disk's content directory");
    for (path, bytes) in files {
        let target = content.join(path.trim_start_matches('/'));
        if path.ends_with('/') {
            std::fs::create_dir_all(&target).expect("create a directory on the disk");
            continue;
        }
        if let Some(parent) = target.parent() {
            std::fs::create_dir_all(parent).expect("create a directory on the disk");
        }
        std::fs::write(&target, bytes).expect("write a file for the disk");
    }
    let file = File::create(image).expect("create the disk image");
    file.set_len(mib * 1024 * 1024)
        .expect("size the disk image");
    drop(file);
    run(Command::new("mkfs.ext4")
        .args(["-F", "-q", "-L", "shoal-device", "-d"])
        .arg(content)
        .arg(image));
}

/// Writes the initramfs (a newc cpio archive, uncompressed so the kernel unpacks it fast).
fn build_initramfs(path: &Path, agent: &Path, modules_dir: &Path) {
    let mut cpio = Cpio::default();
    for dir in [
        "bin",
        "dev",
        "etc",
        "lib",
        "lib/modules",
        "mnt",
        DISK_MOUNT,
        "proc",
        "sys",
        "tmp",
    ] {
        cpio.dir(dir.trim_start_matches('/'));
    }
    cpio.char_device("dev/console", 5, 1);
    let init = INIT.replace("@MARK@", MARK).replace("@DISK@", DISK_MOUNT);
    cpio.file("init", 0o755, init.as_bytes());
    cpio.file("etc/passwd", 0o644, b"root:x:0:0:root:/:/bin/sh\n");
    cpio.file("etc/group", 0o644, b"root:x:0:\n");
    let busybox = which("busybox").expect("busybox is on PATH");
    let strace = which("strace").expect("strace is on PATH");
    for (name, binary) in [
        ("busybox", busybox.as_path()),
        ("strace", strace.as_path()),
        ("shoal-agent", agent),
    ] {
        let bytes = std::fs::read(binary)
            .unwrap_or_else(|e| panic!("cannot read {}: {e}", binary.display()));
        cpio.file(&format!("bin/{name}"), 0o755, &bytes);
        for library in shared_libraries(binary) {
            let inside = library.to_string_lossy().trim_start_matches('/').to_owned();
            let bytes = std::fs::read(&library)
                .unwrap_or_else(|e| panic!("cannot read {}: {e}", library.display()));
            cpio.parents(&inside);
            cpio.file(&inside, 0o755, &bytes);
        }
    }
    let mut order = String::new();
    for module in modules_in_load_order(modules_dir) {
        let name = module
            .file_name()
            .and_then(|n| n.to_str())
            .and_then(|n| n.split(".ko").next())
            .expect("a module file name")
            .to_owned();
        cpio.file(
            &format!("lib/modules/{name}.ko"),
            0o644,
            &read_module(&module),
        );
        order.push_str(&name);
        order.push('\n');
    }
    cpio.file("lib/modules/order", 0o644, order.as_bytes());
    std::fs::write(path, cpio.finish()).expect("write the initramfs");
}

/// The shared libraries `binary` loads (none for a static binary), from `ldd`.
fn shared_libraries(binary: &Path) -> Vec<PathBuf> {
    let out = output(Command::new("ldd").arg(binary));
    if !out.status.success() {
        // "not a dynamic executable": a static binary needs nothing else.
        return Vec::new();
    }
    String::from_utf8_lossy(&out.stdout)
        .split_whitespace()
        .filter(|word| word.starts_with('/'))
        .map(PathBuf::from)
        .collect()
}

/// [`MODULES`] and what they depend on (from `modules.dep`), each after its dependencies;
/// modules the kernel has built in (`modules.builtin`) are left out.
fn modules_in_load_order(modules_dir: &Path) -> Vec<PathBuf> {
    let read = |name: &str| std::fs::read_to_string(modules_dir.join(name)).unwrap_or_default();
    let dep_text = read("modules.dep");
    let builtin = read("modules.builtin");
    let stem = |path: &str| -> String {
        Path::new(path)
            .file_name()
            .and_then(|n| n.to_str())
            .and_then(|n| n.split(".ko").next())
            .unwrap_or_default()
            .replace('-', "_")
    };
    let mut deps: BTreeMap<String, (String, Vec<String>)> = BTreeMap::new();
    for line in dep_text.lines() {
        let Some((module, needs)) = line.split_once(':') else {
            continue;
        };
        let needs = needs.split_whitespace().map(&stem).collect();
        deps.insert(stem(module), (module.to_owned(), needs));
    }
    let builtin: Vec<String> = builtin.lines().map(stem).collect();
    let mut order: Vec<String> = Vec::new();
    fn visit(name: &str, deps: &BTreeMap<String, (String, Vec<String>)>, order: &mut Vec<String>) {
        if order.iter().any(|n| n == name) {
            return;
        }
        let (_, needs) = &deps[name];
        for need in needs {
            visit(need, deps, order);
        }
        order.push(name.to_owned());
    }
    for wanted in MODULES {
        if deps.contains_key(*wanted) {
            visit(wanted, &deps, &mut order);
        } else if !builtin.iter().any(|b| b == wanted) {
            panic!(
                "the kernel in {} has no module {wanted} and does not build it in",
                modules_dir.display()
            );
        }
    }
    order
        .iter()
        .map(|name| modules_dir.join(&deps[name].0))
        .collect()
}

/// A module's bytes, decompressed when the kernel package ships it compressed (busybox's
/// `insmod` takes only plain `.ko` files).
fn read_module(path: &Path) -> Vec<u8> {
    let name = path.to_string_lossy();
    let tool = if name.ends_with(".ko.xz") {
        Some("xz")
    } else if name.ends_with(".ko.zst") {
        Some("zstd")
    } else if name.ends_with(".ko.gz") {
        Some("gzip")
    } else {
        None
    };
    match tool {
        None => std::fs::read(path).unwrap_or_else(|e| panic!("{}: {e}", path.display())),
        Some(tool) => {
            let out = output(Command::new(tool).arg("-dc").arg(path));
            assert!(
                out.status.success(),
                "`{tool} -dc {}` failed (is {tool} installed?)",
                path.display()
            );
            out.stdout
        }
    }
}

/// A newc ("070701") cpio archive, the format the kernel unpacks into its initramfs.
#[derive(Default)]
struct Cpio {
    bytes: Vec<u8>,
    inode: u32,
    dirs: Vec<String>,
    files: Vec<String>,
}

impl Cpio {
    fn dir(&mut self, path: &str) {
        if path.is_empty() || self.dirs.iter().any(|d| d == path) {
            return;
        }
        self.dirs.push(path.to_owned());
        self.entry(path, 0o040_755, 0, &[]);
    }

    /// Every directory above `path`.
    fn parents(&mut self, path: &str) {
        let mut at = String::new();
        let components: Vec<&str> = path.split('/').collect();
        for component in &components[..components.len().saturating_sub(1)] {
            if !at.is_empty() {
                at.push('/');
            }
            at.push_str(component);
            self.dir(&at.clone());
        }
    }

    fn file(&mut self, path: &str, mode: u32, content: &[u8]) {
        if self.files.iter().any(|f| f == path) {
            return;
        }
        self.files.push(path.to_owned());
        self.entry(path, 0o100_000 | mode, 0, content);
    }

    fn char_device(&mut self, path: &str, major: u32, minor: u32) {
        self.entry(path, 0o020_600, (major << 8) | minor, &[]);
    }

    fn entry(&mut self, path: &str, mode: u32, rdev: u32, content: &[u8]) {
        self.inode += 1;
        let name_len = path.len() + 1;
        let fields = [
            self.inode,
            mode,
            0,
            0,
            if mode & 0o040_000 != 0 { 2 } else { 1 },
            0,
            u32::try_from(content.len()).expect("an initramfs file under 4 GiB"),
            0,
            0,
            rdev >> 8,
            rdev & 0xff,
            u32::try_from(name_len).expect("a short name"),
            0,
        ];
        self.bytes.extend_from_slice(b"070701");
        for field in fields {
            self.bytes
                .extend_from_slice(format!("{field:08x}").as_bytes());
        }
        self.bytes.extend_from_slice(path.as_bytes());
        self.bytes.push(0);
        self.pad();
        self.bytes.extend_from_slice(content);
        self.pad();
    }

    fn pad(&mut self) {
        while !self.bytes.len().is_multiple_of(4) {
            self.bytes.push(0);
        }
    }

    fn finish(mut self) -> Vec<u8> {
        self.entry("TRAILER!!!", 0, 0, &[]);
        self.bytes
    }
}

/// Where `name` is on `PATH`.
fn which(name: &str) -> Option<PathBuf> {
    let path = std::env::var_os("PATH")?;
    std::env::split_paths(&path)
        .map(|dir| dir.join(name))
        .find(|candidate| candidate.is_file())
}
