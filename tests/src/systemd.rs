//! `SystemdHost`: a real systemd booted as PID 1 in its own namespaces, on a throwaway overlay of
//! the host's root, for tests that need a service manager; it skips loudly, or fails under `SHOAL_E2E=1`.
//!
//! Isolation matters more than it looks: a systemd booted on the host's own filesystem runs
//! `systemd-tmpfiles --remove` (which empties the host's `/tmp`), writes the host's journal and
//! `wtmp`, and its kernel-wide units (binfmt, sysctl, modules) would change the host. So the boot
//! script mounts an overlay whose upper layer is a tmpfs over `/` and pivots into it — every file
//! the guest writes is gone when it stops — puts fresh tmpfs on `/run`, `/tmp`, `/var/tmp` and
//! `/etc/systemd/system` (the host's enablement symlinks must not start its services in the
//! guest), and masks the units that would touch the kernel or the console.

use std::ffi::OsString;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

use crate::command::{describe, die_with_parent, failure_report, output};
use crate::requirements::{cannot_run, on_path};

const SYSTEMD: &str = "/lib/systemd/systemd";
const BOOT_TIMEOUT: Duration = Duration::from_secs(60);
const POWEROFF_TIMEOUT: Duration = Duration::from_secs(20);

/// Units that would act on the whole kernel, the host's console or its disks even from inside
/// the namespaces, or that only slow the boot down. Masked in the guest's `/run/systemd/system`.
const MASKED_UNITS: &[&str] = &[
    // Kernel-wide: binfmt_misc registrations, sysctls, module loading.
    "systemd-binfmt.service",
    "proc-sys-fs-binfmt_misc.automount",
    "proc-sys-fs-binfmt_misc.mount",
    "systemd-sysctl.service",
    "systemd-modules-load.service",
    "kmod-static-nodes.service",
    "modprobe@.service",
    "systemd-remount-fs.service",
    "systemd-random-seed.service",
    "sys-kernel-config.mount",
    "sys-kernel-debug.mount",
    "sys-kernel-tracing.mount",
    "sys-fs-fuse-connections.mount",
    "dev-hugepages.mount",
    // The console is the host's: no getty or password agent on it.
    "console-getty.service",
    "getty@.service",
    "serial-getty@.service",
    "getty.target",
    "systemd-ask-password-console.path",
    "systemd-ask-password-wall.path",
    // Boot bookkeeping the tests do not need.
    "systemd-logind.service",
    "systemd-tmpfiles-clean.timer",
    "systemd-firstboot.service",
    "systemd-machine-id-commit.service",
    "systemd-repart.service",
    "systemd-pcrphase-sysinit.service",
    "systemd-pcrphase.service",
    "systemd-hwdb-update.service",
    "ldconfig.service",
    "systemd-journal-catalog-update.service",
    "systemd-update-utmp.service",
    "systemd-update-utmp-runlevel.service",
    // The journal stays volatile (in /run/log/journal).
    "systemd-journal-flush.service",
];

/// Run by `unshare` as the new namespaces' PID 1; ends by exec'ing systemd. `$1`: an empty
/// directory for the overlay's layers (a tmpfs is mounted on it, visible only inside); `$2`: the
/// units to mask, separated by spaces; `$3`: a cgroup name of this guest's own.
///
/// The guest shares the machine's cgroup hierarchies (there is no cgroup namespace here), so it
/// first moves itself into a cgroup of its own in each writable hierarchy: systemd takes the
/// cgroup it starts in as the root of its tree, so two guests' `shoal-agent.service` are two
/// cgroups, not one that both systemds would fight over (and kill each other's processes in).
///
/// Last, the guest's mounts are made shared (`mount --make-rshared /`, inside its own mount
/// namespace, after `--make-rprivate` cut it off from the machine's), as systemd does at boot on
/// a real host; it skips that step when `container=` is set. With private mounts, what systemd
/// mounts in a helper's namespace never reaches its own: `LoadCredential=` puts a unit's
/// credentials on a ramfs mounted over `/run/credentials/UNIT` that way, so every unit with
/// credentials found that directory empty and root's (EACCES), the packaged collector included.
const BOOT_SCRIPT: &str = r#"set -eu
layers=$1
masked=$2
cgroup=$3
for hierarchy in /sys/fs/cgroup/systemd /sys/fs/cgroup/unified /sys/fs/cgroup; do
  if [ -w "$hierarchy/cgroup.procs" ]; then
    mkdir -p "$hierarchy/$cgroup"
    echo 0 > "$hierarchy/$cgroup/cgroup.procs"
  fi
done
mount --make-rprivate /
mount -t tmpfs -o mode=0755 shoal-layers "$layers"
mkdir "$layers/upper" "$layers/work" "$layers/root"
mount -t overlay shoal-root -o "lowerdir=/,upperdir=$layers/upper,workdir=$layers/work" "$layers/root"
new=$layers/root
mount --rbind /dev "$new/dev"
mount --rbind /sys "$new/sys"
mount -t proc proc "$new/proc"
for dir in run tmp var/tmp etc/systemd/system; do
  mount -t tmpfs -o mode=0755 shoal-tmpfs "$new/$dir"
done
chmod 1777 "$new/tmp" "$new/var/tmp"
mkdir -p "$new/run/systemd/system"
for unit in $masked; do
  ln -s /dev/null "$new/run/systemd/system/$unit"
done
mkdir "$new/.shoal-old-root"
cd "$new"
pivot_root . .shoal-old-root
export container=shoal-test
exec chroot . /bin/sh -c 'umount -l /.shoal-old-root && rmdir /.shoal-old-root && mount --make-rshared / && exec /lib/systemd/systemd --system --unit=multi-user.target'
"#;

/// A systemd running as PID 1 of its own PID, mount, UTS, IPC and network namespaces. Dropping it
/// powers it off (and kills what this harness started if that does not work).
pub struct SystemdHost {
    /// The `unshare` process; systemd is its only child.
    unshare: Child,
    /// systemd's PID as this process sees it.
    pid: u32,
    dir: tempfile::TempDir,
}

impl SystemdHost {
    /// Boots one. `None` when this machine cannot (not root, no systemd, no namespaces): then a
    /// `SKIPPED` line is printed, or, under `SHOAL_E2E=1`, this panics with the reason.
    pub fn boot() -> Option<SystemdHost> {
        if let Err(why) = prerequisites() {
            return skip(&why);
        }
        match SystemdHost::try_boot() {
            Ok(host) => Some(host),
            Err(why) => skip(&why),
        }
    }

    fn try_boot() -> Result<SystemdHost, String> {
        let dir = tempfile::Builder::new()
            .prefix("shoal-systemd.")
            .tempdir()
            .map_err(|e| format!("cannot make a temp dir: {e}"))?;
        let script = dir.path().join("boot.sh");
        let layers = dir.path().join("layers");
        std::fs::write(&script, BOOT_SCRIPT)
            .map_err(|e| format!("cannot write {script:?}: {e}"))?;
        std::fs::create_dir(&layers).map_err(|e| format!("cannot make {layers:?}: {e}"))?;
        let console = std::fs::File::create(dir.path().join("console.log"))
            .map_err(|e| format!("cannot create the console log: {e}"))?;
        let console_err = console
            .try_clone()
            .map_err(|e| format!("cannot share the console log: {e}"))?;

        let mut cmd = Command::new("unshare");
        cmd.args([
            "--fork",
            "--kill-child",
            "--pid",
            "--mount",
            "--uts",
            "--ipc",
            "--net",
            "--mount-proc",
            "sh",
        ])
        .arg(&script)
        .arg(&layers)
        .arg(MASKED_UNITS.join(" "))
        .arg(cgroup_name(dir.path()))
        .stdin(Stdio::null())
        .stdout(console)
        .stderr(console_err);
        // If this test process dies without dropping the host (a panic=abort, a timeout kill),
        // `unshare` gets SIGKILL, and `--kill-child` takes systemd and its namespace with it.
        die_with_parent(&mut cmd);
        let unshare = cmd
            .spawn()
            .map_err(|e| format!("cannot start `{}`: {e}", describe(&cmd)))?;
        let mut host = SystemdHost {
            pid: 0,
            unshare,
            dir,
        };
        host.pid = host.find_child()?;
        host.wait_until_running()?;
        Ok(host)
    }

    /// systemd's PID (in this process's PID namespace).
    pub fn pid(&self) -> u32 {
        self.pid
    }

    /// The program and arguments that run a command inside the guest: `nsenter -t PID -a`.
    pub fn nsenter(&self) -> Vec<OsString> {
        ["nsenter", "-t", &self.pid.to_string(), "-a"]
            .into_iter()
            .map(OsString::from)
            .collect()
    }

    /// The guest's `/`, seen from here (`/proc/PID/root`): write its files through this.
    pub fn root(&self) -> PathBuf {
        PathBuf::from(format!("/proc/{}/root", self.pid))
    }

    /// Runs `args` inside the guest, whatever its exit status.
    pub fn exec(&self, args: &[&str]) -> Output {
        output(self.command(args).stdin(Stdio::null()))
    }

    /// `systemctl ARGS` inside the guest; its stdout. Panics unless it succeeds.
    pub fn systemctl(&self, args: &[&str]) -> String {
        let mut all = vec!["systemctl", "--no-pager"];
        all.extend_from_slice(args);
        let mut cmd = self.command(&all);
        let out = output(&mut cmd);
        if !out.status.success() {
            panic!(
                "{}\n--- guest console ---\n{}",
                failure_report(&cmd, &out),
                self.console()
            );
        }
        String::from_utf8_lossy(&out.stdout).trim_end().to_owned()
    }

    /// One property of a unit (`systemctl show -p PROPERTY --value UNIT`).
    pub fn show(&self, unit: &str, property: &str) -> String {
        self.systemctl(&["show", "-p", property, "--value", unit])
    }

    /// The unit's main PID; 0 when it has no running main process.
    pub fn main_pid(&self, unit: &str) -> u32 {
        let value = self.show(unit, "MainPID");
        value
            .parse()
            .unwrap_or_else(|_| panic!("MainPID of {unit} is {value:?}"))
    }

    /// What systemd and the boot script printed so far.
    pub fn console(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("console.log")).unwrap_or_default()
    }

    fn command(&self, args: &[&str]) -> Command {
        let prefix = self.nsenter();
        let mut cmd = Command::new(&prefix[0]);
        cmd.args(&prefix[1..]).args(args);
        cmd
    }

    /// The PID of `unshare`'s child: the boot script, which becomes systemd.
    fn find_child(&mut self) -> Result<u32, String> {
        let parent = self.unshare.id();
        let deadline = Instant::now() + Duration::from_secs(10);
        while Instant::now() < deadline {
            if let Some(pid) = child_of(parent) {
                return Ok(pid);
            }
            if let Ok(Some(status)) = self.unshare.try_wait() {
                return Err(format!(
                    "`unshare` exited ({status}) before starting the boot script:\n{}",
                    self.console()
                ));
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        Err(format!(
            "`unshare` (pid {parent}) started no child within 10s"
        ))
    }

    fn wait_until_running(&mut self) -> Result<(), String> {
        let began = Instant::now();
        let mut last = String::new();
        while began.elapsed() < BOOT_TIMEOUT {
            if let Ok(Some(status)) = self.unshare.try_wait() {
                return Err(format!(
                    "systemd exited ({status}) while booting:\n{}",
                    self.console()
                ));
            }
            let out = self.exec(&["systemctl", "is-system-running"]);
            last = String::from_utf8_lossy(&out.stdout).trim().to_owned();
            match last.as_str() {
                "running" => return Ok(()),
                "degraded" => {
                    let failed = self.exec(&["systemctl", "--failed", "--no-pager"]);
                    eprintln!(
                        "note: the test systemd booted degraded:\n{}",
                        String::from_utf8_lossy(&failed.stdout)
                    );
                    return Ok(());
                }
                _ => std::thread::sleep(Duration::from_millis(100)),
            }
        }
        Err(format!(
            "systemd did not finish booting within {}s (is-system-running: {last:?}):\n{}",
            BOOT_TIMEOUT.as_secs(),
            self.console()
        ))
    }
}

impl Drop for SystemdHost {
    fn drop(&mut self) {
        self.power_off();
        remove_cgroups(&cgroup_name(self.dir.path()));
    }
}

impl SystemdHost {
    fn power_off(&mut self) {
        if self.pid != 0 {
            // Asked of the manager directly: `systemctl poweroff` would go through logind, which
            // is masked here.
            let _ = self.exec(&[
                "systemctl",
                "--no-block",
                "--job-mode=replace-irreversibly",
                "start",
                "poweroff.target",
            ]);
        }
        let deadline = Instant::now() + POWEROFF_TIMEOUT;
        while Instant::now() < deadline {
            if let Ok(Some(_)) = self.unshare.try_wait() {
                return;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        eprintln!(
            "the test systemd (pid {}) did not power off within {}s; killing `unshare` (pid {}), which kills it",
            self.pid,
            POWEROFF_TIMEOUT.as_secs(),
            self.unshare.id()
        );
        // Only ever the process this harness started; `--kill-child` takes systemd along.
        let _ = self.unshare.kill();
        let _ = self.unshare.wait();
    }
}

/// The guest's own cgroup name, from its unique temp dir.
fn cgroup_name(dir: &Path) -> String {
    let unique = dir.file_name().map_or_else(
        || "guest".to_owned(),
        |n| n.to_string_lossy().replace('.', "-"),
    );
    format!("shoal-test-{unique}")
}

/// Removes the guest's cgroups once it is gone, deepest first (a cgroup goes only when empty;
/// systemd removes its own on the way down, this catches what is left).
fn remove_cgroups(name: &str) {
    fn remove_tree(dir: &Path) {
        if let Ok(entries) = std::fs::read_dir(dir) {
            for entry in entries.flatten() {
                if entry.file_type().is_ok_and(|t| t.is_dir()) {
                    remove_tree(&entry.path());
                }
            }
        }
        let _ = std::fs::remove_dir(dir);
    }
    for hierarchy in [
        "/sys/fs/cgroup/systemd",
        "/sys/fs/cgroup/unified",
        "/sys/fs/cgroup",
    ] {
        let dir = Path::new(hierarchy).join(name);
        if dir.is_dir() {
            remove_tree(&dir);
        }
    }
}

/// What this machine lacks to boot a systemd in namespaces, if anything.
fn prerequisites() -> Result<(), String> {
    // SAFETY: geteuid has no preconditions and cannot fail.
    if unsafe { libc::geteuid() } != 0 {
        return Err("booting systemd in new namespaces needs root".into());
    }
    if !Path::new(SYSTEMD).is_file() {
        return Err(format!(
            "{SYSTEMD} does not exist (install the `systemd` package)"
        ));
    }
    for tool in ["unshare", "nsenter", "systemctl", "sh"] {
        if !on_path(tool) {
            return Err(format!("`{tool}` is not on PATH (util-linux, systemd)"));
        }
    }
    let filesystems = std::fs::read_to_string("/proc/filesystems").unwrap_or_default();
    if !filesystems.lines().any(|l| l.ends_with("\toverlay")) {
        return Err("the kernel has no overlay filesystem (modprobe overlay)".into());
    }
    Ok(())
}

fn skip<T>(why: &str) -> Option<T> {
    cannot_run("a test systemd cannot boot here", why)
}

/// A unit that runs until it is stopped, for tests that need a service to be up.
pub fn long_running_unit(description: &str) -> String {
    format!(
        "[Unit]\nDescription=shoal test {description}\n\n[Service]\nExecStart=/bin/sh -c 'while sleep 1; do :; done'\n\n[Install]\nWantedBy=multi-user.target\n"
    )
}

/// The first process whose parent is `parent`, from `/proc/*/stat`.
fn child_of(parent: u32) -> Option<u32> {
    let entries = std::fs::read_dir("/proc").ok()?;
    entries.flatten().find_map(|entry| {
        let pid: u32 = entry.file_name().to_str()?.parse().ok()?;
        let stat = std::fs::read_to_string(entry.path().join("stat")).ok()?;
        // `pid (comm) state ppid …`; comm may contain spaces and parentheses.
        let after_comm = &stat[stat.rfind(')')? + 1..];
        let ppid: u32 = after_comm.split_whitespace().nth(1)?.parse().ok()?;
        (ppid == parent).then_some(pid)
    })
}
