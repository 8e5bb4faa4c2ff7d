//! The one place that talks to systemd: `systemctl` and `journalctl` run as child processes,
//! each bounded in time, optionally behind a command prefix (`nsenter -t PID -a` reaches a
//! systemd in other namespaces). `systemctl start|stop|restart` waits for its job to finish by
//! default, which is what the health gate needs; a unit name is always passed after `--` (or
//! as `--unit=`), so no name can be read as an option; D-Bus (zbus) would add an async stack and a
//! second way to reach the manager for no gain at the scale of a few units per apply.

use std::ffi::OsString;
use std::io;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::sync::mpsc;
use std::time::Duration;

use super::error::ServiceError;
use shoal_core::services::UnitAction;

/// Long enough for systemd's own default start and stop timeouts (90 s) to fire first, so a
/// hung job is normally reported by systemd with its reason rather than killed by us.
const DEFAULT_JOB_TIMEOUT: Duration = Duration::from_secs(120);
/// How long a started unit must stay active: `Type=simple` reports success as soon as it has
/// forked, even when the binary is missing or exits at once.
const DEFAULT_GRACE: Duration = Duration::from_secs(2);
const DEFAULT_POLL: Duration = Duration::from_millis(200);
/// For commands that only read or flip symlinks (`show`, `enable`, `daemon-reload`).
const QUICK_TIMEOUT: Duration = Duration::from_secs(60);
/// After the child exited or was killed: how long to wait for its output pipes to close (a
/// daemonised grandchild may hold them forever).
const PIPE_GRACE: Duration = Duration::from_secs(2);

/// How the agent reaches the systemd that manages the device's `root`.
#[derive(Debug, Clone)]
pub struct Systemd {
    mode: Mode,
    job_timeout: Duration,
    pub(crate) grace: Duration,
    pub(crate) poll: Duration,
}

#[derive(Debug, Clone)]
enum Mode {
    /// The running manager, through `systemctl` (after `prefix`, empty on a device).
    Live { prefix: Vec<OsString> },
    /// No manager runs for this root (an image, a chroot): units are enabled and disabled with
    /// `systemctl --root`, nothing is started, stopped, reloaded or health-checked.
    Offline { root: PathBuf },
}

/// What `systemctl show` says about a unit (the properties the health gate reads).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct UnitStatus {
    pub load_state: String,
    pub active_state: String,
    pub sub_state: String,
    /// `success`, `exit-code`, `signal`, `timeout`, … (services only).
    pub result: String,
    /// Automatic restarts since the unit was last started by hand (reset by `start`/`restart`).
    pub n_restarts: u32,
    pub main_pid: u32,
    /// `simple`, `oneshot`, `notify`, … (services only).
    pub service_type: String,
    /// `no` when a `Condition…=` skipped the start.
    pub condition_result: String,
    pub unit_file_state: String,
}

const STATUS_PROPERTIES: &str =
    "LoadState,ActiveState,SubState,Result,NRestarts,MainPID,Type,ConditionResult,UnitFileState";

/// How one run of a health probe ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ProbeResult {
    Exited {
        success: bool,
        status: String,
        output: String,
    },
    TimedOut,
}

impl Systemd {
    /// The systemd managing `root`: the running manager when `root` is `/` and systemd is PID 1
    /// (`/run/systemd/system` exists, as sd_booted(3) checks), else offline.
    pub fn for_root(root: &Path) -> Systemd {
        if root == Path::new("/") && Path::new("/run/systemd/system").is_dir() {
            Systemd::live(Vec::<OsString>::new())
        } else {
            Systemd::offline(root)
        }
    }

    /// The running manager, reached by running `prefix… systemctl …` (e.g. `nsenter -t PID -a`
    /// for a systemd in other namespaces; empty on a device). Probes and `journalctl` run
    /// behind the same prefix, so they see what the units see.
    pub fn live<I, S>(prefix: I) -> Systemd
    where
        I: IntoIterator<Item = S>,
        S: Into<OsString>,
    {
        Systemd::with_mode(Mode::Live {
            prefix: prefix.into_iter().map(Into::into).collect(),
        })
    }

    /// Units under `root` (an image, a chroot) that no running manager owns.
    pub fn offline(root: &Path) -> Systemd {
        Systemd::with_mode(Mode::Offline {
            root: root.to_owned(),
        })
    }

    fn with_mode(mode: Mode) -> Systemd {
        Systemd {
            mode,
            job_timeout: DEFAULT_JOB_TIMEOUT,
            grace: DEFAULT_GRACE,
            poll: DEFAULT_POLL,
        }
    }

    /// How long a started unit must stay active before it counts as up.
    pub fn with_grace(mut self, grace: Duration) -> Systemd {
        self.grace = grace;
        self
    }

    /// The longest a `systemctl start|stop|restart` may wait for its job.
    pub fn with_job_timeout(mut self, timeout: Duration) -> Systemd {
        self.job_timeout = timeout;
        self
    }

    /// Whether a manager runs the units (false: offline, only enablement is managed).
    pub fn is_live(&self) -> bool {
        matches!(self.mode, Mode::Live { .. })
    }

    pub fn daemon_reload(&self) -> Result<(), ServiceError> {
        if !self.is_live() {
            return Ok(());
        }
        let cmd = self.systemctl(&["daemon-reload"]);
        self.checked(cmd, QUICK_TIMEOUT).map(drop)
    }

    /// Runs `systemctl ACTION UNIT`; start, stop and restart wait for the job to finish.
    /// Offline, only enable and disable do anything.
    pub fn act(&self, action: UnitAction, unit: &str) -> Result<(), ServiceError> {
        let timeout = match action {
            UnitAction::Enable | UnitAction::Disable => QUICK_TIMEOUT,
            UnitAction::Start | UnitAction::Stop | UnitAction::Restart => self.job_timeout,
        };
        let cmd = match &self.mode {
            Mode::Live { .. } => self.systemctl(&[action.as_str(), "--", unit]),
            Mode::Offline { root } => match action {
                UnitAction::Enable | UnitAction::Disable => {
                    let mut cmd = Command::new("systemctl");
                    cmd.arg("--root")
                        .arg(root)
                        .args([action.as_str(), "--", unit]);
                    cmd
                }
                UnitAction::Start | UnitAction::Stop | UnitAction::Restart => return Ok(()),
            },
        };
        let output = self.bounded(cmd, timeout)?;
        if output.status.success() {
            return Ok(());
        }
        // Exit status 5: "unit not loaded". Stopping or disabling something systemd does not
        // know any more already has the effect asked for.
        let not_loaded = output.status.code() == Some(5);
        if not_loaded && matches!(action, UnitAction::Stop | UnitAction::Disable) {
            return Ok(());
        }
        Err(ServiceError::Job {
            unit: unit.to_owned(),
            action,
            status: output.status.to_string(),
            stderr: text(&output.stderr),
            journal_tail: match action {
                UnitAction::Start | UnitAction::Restart | UnitAction::Stop => {
                    self.journal_tail(unit, 20)
                }
                UnitAction::Enable | UnitAction::Disable => String::new(),
            },
        })
    }

    pub fn enable(&self, unit: &str) -> Result<(), ServiceError> {
        self.act(UnitAction::Enable, unit)
    }

    pub fn disable(&self, unit: &str) -> Result<(), ServiceError> {
        self.act(UnitAction::Disable, unit)
    }

    pub fn start(&self, unit: &str) -> Result<(), ServiceError> {
        self.act(UnitAction::Start, unit)
    }

    pub fn stop(&self, unit: &str) -> Result<(), ServiceError> {
        self.act(UnitAction::Stop, unit)
    }

    pub fn restart(&self, unit: &str) -> Result<(), ServiceError> {
        self.act(UnitAction::Restart, unit)
    }

    /// Forgets a unit's failed state (`systemctl reset-failed`) so a unit that is gone does not
    /// keep the system "degraded". Best effort: callers only log a failure.
    pub fn reset_failed(&self, unit: &str) -> Result<(), ServiceError> {
        if !self.is_live() {
            return Ok(());
        }
        let cmd = self.systemctl(&["reset-failed", "--", unit]);
        self.checked(cmd, QUICK_TIMEOUT).map(drop)
    }

    /// `systemctl show` of the properties in [`UnitStatus`]. Offline: the default (empty) status.
    pub fn status(&self, unit: &str) -> Result<UnitStatus, ServiceError> {
        if !self.is_live() {
            return Ok(UnitStatus::default());
        }
        let cmd = self.systemctl(&["show", "-p", STATUS_PROPERTIES, "--", unit]);
        let output = self.checked(cmd, QUICK_TIMEOUT)?;
        Ok(UnitStatus::parse(&text(&output.stdout)))
    }

    /// The last `lines` lines of the unit's journal, best effort (a failure to read it is
    /// described in the text instead: it only ever decorates another error).
    pub fn journal_tail(&self, unit: &str, lines: u32) -> String {
        let Mode::Live { .. } = self.mode else {
            return String::new();
        };
        // Output the failing process wrote a moment ago may still be on its way to the journal;
        // ask journald to write out what it has received first. Best effort, like the rest.
        let _ = self.bounded(self.prefixed("journalctl", &["--sync"]), QUICK_TIMEOUT);
        let lines = lines.to_string();
        let unit = format!("--unit={unit}");
        let cmd = self.prefixed("journalctl", &[&unit, "-n", &lines, "--no-pager"]);
        let command = describe(&cmd);
        match self.bounded(cmd, QUICK_TIMEOUT) {
            Ok(output) if output.status.success() => text(&output.stdout),
            Ok(output) => format!("(`{command}` failed: {})", text(&output.stderr)),
            Err(e) => format!("({e})"),
        }
    }

    /// Runs `sh -c exec` (behind the prefix), killing it and its process group after `timeout`.
    pub fn probe(&self, exec: &str, timeout: Duration) -> Result<ProbeResult, ServiceError> {
        let cmd = self.prefixed("sh", &["-c", exec]);
        match self.bounded(cmd, timeout) {
            Ok(output) => {
                let mut all = output.stdout;
                all.extend_from_slice(&output.stderr);
                Ok(ProbeResult::Exited {
                    success: output.status.success(),
                    status: output.status.to_string(),
                    output: last_lines(&text(&all), 10),
                })
            }
            Err(ServiceError::Timeout { .. }) => Ok(ProbeResult::TimedOut),
            Err(e) => Err(e),
        }
    }

    fn systemctl(&self, args: &[&str]) -> Command {
        let mut all = vec!["--no-ask-password", "--no-pager"];
        all.extend_from_slice(args);
        self.prefixed("systemctl", &all)
    }

    fn prefixed(&self, program: &str, args: &[&str]) -> Command {
        let prefix: &[OsString] = match &self.mode {
            Mode::Live { prefix } => prefix,
            Mode::Offline { .. } => &[],
        };
        let mut cmd = match prefix.split_first() {
            Some((first, rest)) => {
                let mut cmd = Command::new(first);
                cmd.args(rest).arg(program);
                cmd
            }
            None => Command::new(program),
        };
        cmd.args(args);
        cmd
    }

    /// Runs `cmd` within `limit`; a non-zero exit is an error carrying its stderr.
    fn checked(&self, cmd: Command, limit: Duration) -> Result<Output, ServiceError> {
        let command = describe(&cmd);
        let output = self.bounded(cmd, limit)?;
        if output.status.success() {
            return Ok(output);
        }
        Err(ServiceError::Command {
            command,
            status: output.status.to_string(),
            stderr: text(&output.stderr),
        })
    }

    /// Runs `cmd` (no input, output captured) and waits at most `limit` for it to exit; after
    /// that its whole process group is killed: a probe's `sh -c` and what it started, or the
    /// prefix (`nsenter` forks into the target's PID namespace) and its child.
    fn bounded(&self, mut cmd: Command, limit: Duration) -> Result<Output, ServiceError> {
        let command = describe(&cmd);
        cmd.stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .process_group(0);
        let child = cmd.spawn().map_err(|source| ServiceError::Spawn {
            command: command.clone(),
            source,
        })?;
        let pid = child.id();
        let (tx, rx) = mpsc::channel();
        std::thread::spawn(move || {
            // The receiver may be gone (we stopped waiting): nothing left to tell.
            let _ = tx.send(child.wait_with_output());
        });
        let waited = match rx.recv_timeout(limit) {
            Ok(result) => result,
            Err(_) => {
                kill_group(pid);
                // Reap it (its pipes close with it, unless a grandchild escaped the group).
                let _ = rx.recv_timeout(PIPE_GRACE);
                return Err(ServiceError::Timeout {
                    command,
                    after: limit,
                });
            }
        };
        waited.map_err(|source: io::Error| ServiceError::Spawn { command, source })
    }
}

impl UnitStatus {
    /// Parses `Key=Value` lines as `systemctl show -p …` prints them; unknown keys are ignored,
    /// missing ones stay empty (a timer has no `MainPID`).
    pub fn parse(text: &str) -> UnitStatus {
        let mut status = UnitStatus::default();
        for line in text.lines() {
            let Some((key, value)) = line.split_once('=') else {
                continue;
            };
            let value = value.trim().to_owned();
            match key {
                "LoadState" => status.load_state = value,
                "ActiveState" => status.active_state = value,
                "SubState" => status.sub_state = value,
                "Result" => status.result = value,
                "NRestarts" => status.n_restarts = value.parse().unwrap_or(0),
                "MainPID" => status.main_pid = value.parse().unwrap_or(0),
                "Type" => status.service_type = value,
                "ConditionResult" => status.condition_result = value,
                "UnitFileState" => status.unit_file_state = value,
                _ => {}
            }
        }
        status
    }

    /// `active (running)`, `failed (failed, result exit-code)`: for messages.
    pub fn describe(&self) -> String {
        let mut text = format!("{} ({}", self.active_state, self.sub_state);
        if !self.result.is_empty() && self.result != "success" {
            text.push_str(&format!(", result {}", self.result));
        }
        text.push(')');
        text
    }
}

/// Kills process group `pgid` (a child spawned with `process_group(0)`, so its pid is the
/// group's id).
fn kill_group(pgid: u32) {
    let Ok(pgid) = libc::pid_t::try_from(pgid) else {
        return;
    };
    // SAFETY: kill(2) has no memory-safety preconditions; a negative pid addresses the process
    // group. It is the group we created for a child we were still waiting for; if that child
    // exited in the same instant, the signal finds no group (ESRCH) — an id is not reused that fast.
    unsafe {
        libc::kill(-pgid, libc::SIGKILL);
    }
}

fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).trim_end().to_owned()
}

fn last_lines(text: &str, n: usize) -> String {
    let lines: Vec<&str> = text.lines().collect();
    lines[lines.len().saturating_sub(n)..].join("\n")
}

/// `program arg…` for messages.
fn describe(cmd: &Command) -> String {
    std::iter::once(cmd.get_program())
        .chain(cmd.get_args())
        .map(|a| a.to_string_lossy().into_owned())
        .collect::<Vec<_>>()
        .join(" ")
}
