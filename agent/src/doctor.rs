//! `shoal-agent doctor`: checks what a device needs to sync and report (config, state directory,
//! clock, git server, trust, collector, systemd unit) and says for each failure what to do. It
//! only reads: no fetch of objects (the server is asked for its refs only), no report, no write
//! to the state directory.

use std::path::{Path, PathBuf};

use gix::ObjectId;
use serde::Serialize;

use crate::config::{AgentConfig, ByteSize, ConfigError};
use crate::errors::error_chain;
use crate::fetch::{FetchError, Mirror};
use crate::report::{self, Identity, Pinned, ReportError};
use crate::state::{StateError, StateView};
use crate::verify::{self, TrustPolicy, VerifyError};

/// When this binary was built (unix seconds, from `build.rs`): a clock earlier than that is wrong.
pub const BUILD_TIME: u64 = match u64::from_str_radix(env!("SHOAL_BUILD_TIME"), 10) {
    Ok(t) => t,
    Err(_) => 0,
};

/// What one failed check found. Each variant names what is at fault; [`DoctorError::fix`] says
/// what to do.
#[derive(Debug, thiserror::Error)]
pub enum DoctorError {
    #[error(transparent)]
    Config(ConfigError),
    #[error("{} does not exist", path.display())]
    StateMissing { path: PathBuf },
    #[error("{} is not a directory", path.display())]
    StateNotDir { path: PathBuf },
    #[error("{} is owned by uid {owner}, not by the agent's user (uid {me})", path.display())]
    StateOwner { path: PathBuf, owner: u32, me: u32 },
    #[error("{} has mode {mode:04o}: others than its owner may read or change the device's key and history", path.display())]
    StateMode { path: PathBuf, mode: u32 },
    #[error("{} is not writable: {message}", path.display())]
    StateUnwritable { path: PathBuf, message: String },
    #[error("{} has {free} free, less than one fetch may need ([source] max_fetch = {need})", path.display())]
    StateFull {
        path: PathBuf,
        free: ByteSize,
        need: ByteSize,
    },
    #[error("the root {} does not exist", path.display())]
    RootMissing { path: PathBuf },
    #[error("the root {} is not a directory", path.display())]
    RootNotDir { path: PathBuf },
    #[error("the root {} is owned by uid {owner}, neither root nor the agent's user (uid {me}): that user could put links where the agent writes", path.display())]
    RootOwner { path: PathBuf, owner: u32, me: u32 },
    #[error("the root {} has mode {mode:04o}: users other than its owner may create and replace entries where the agent writes", path.display())]
    RootMode { path: PathBuf, mode: u32 },
    #[error("the root {} is not writable: {message}", path.display())]
    RootUnwritable { path: PathBuf, message: String },
    #[error("cannot read the state in {}: {source}", path.display())]
    State {
        path: PathBuf,
        #[source]
        source: StateError,
    },
    #[error("the clock says {now}, before {what} ({then})")]
    ClockBehind {
        now: String,
        what: String,
        then: String,
    },
    #[error(transparent)]
    Git(Box<FetchError>),
    #[error("cannot make a scratch repository in {} to ask the server for its refs: {message}", path.display())]
    Scratch { path: PathBuf, message: String },
    #[error(transparent)]
    Trust(Box<VerifyError>),
    #[error("no device identity key at {}", path.display())]
    NoIdentity { path: PathBuf },
    #[error(transparent)]
    Collector(Box<ReportError>),
    #[error("the collector at {url} has no key pinned to device {device_id:?}, and no enrollment token is configured")]
    NotEnrolled {
        url: String,
        device_id: String,
        key: String,
    },
    #[error("the collector at {url} has another key pinned to device {device_id:?} than this device's {key}")]
    OtherKey {
        url: String,
        device_id: String,
        key: String,
    },
    #[error(transparent)]
    Halts(Box<crate::halts::InForceError>),
    #[error("systemd is not running as the init system (no /run/systemd/system)")]
    NoSystemd,
    #[error("cannot ask systemd about {unit}: {message}")]
    Systemctl { unit: String, message: String },
    #[error("the unit {unit} is not installed (LoadState={load_state})")]
    UnitMissing { unit: String, load_state: String },
    #[error("the unit {unit} is installed but not enabled (UnitFileState={file_state}), so the agent does not run at boot")]
    UnitDisabled { unit: String, file_state: String },
}

impl DoctorError {
    /// What the operator should do about it.
    pub fn fix(&self) -> String {
        match self {
            DoctorError::Config(_) => "correct the file as the message says, or write a new one with `shoal-agent init --force ...`".into(),
            DoctorError::StateMissing { path } => format!("run `shoal-agent init` (it creates the directory and the identity key), or `install -d -m 0700 {}`", path.display()),
            DoctorError::StateNotDir { path } => format!("move {} aside; the agent needs a directory there ([state_dir] in the config)", path.display()),
            DoctorError::StateOwner { path, me, .. } => format!("chown -R {me} {}", path.display()),
            DoctorError::StateMode { path, .. } => format!("chmod 0700 {}", path.display()),
            DoctorError::StateUnwritable { path, .. } => format!("make {} writable for the agent (a read-only mount? `mount -o remount,rw`, or point state_dir at a writable file system)", path.display()),
            DoctorError::StateFull { path, .. } => format!("free space on the file system of {}, or lower [source] max_fetch", path.display()),
            DoctorError::RootMissing { path } => format!("correct `root` in the config, or create the directory (`install -d {}`); every declared path is written below it", path.display()),
            DoctorError::RootNotDir { path } => format!("correct `root` in the config: {} must be the directory declared paths are written below", path.display()),
            DoctorError::RootOwner { path, .. } => format!("chown root {}, or correct `root` in the config", path.display()),
            DoctorError::RootMode { path, .. } => format!("chmod go-w {}", path.display()),
            DoctorError::RootUnwritable { path, .. } => format!("make {} writable for the agent (a read-only mount? `mount -o remount,rw`), or correct `root` in the config", path.display()),
            DoctorError::State { .. } => "see the message; `shoal-agent status` shows the same state".into(),
            DoctorError::ClockBehind { .. } => "set the clock (`timedatectl set-ntp true`, or `date -s`); a device with a wrong clock refuses or mis-ages releases".into(),
            DoctorError::Git(e) => match **e {
                FetchError::RefNotFound { .. } => "push the branch (or publish the release) on the server, or correct [source] ref / environment; `git ls-remote URL` lists what it has".into(),
                FetchError::TlsHandshake { .. } | FetchError::Tls(_) => "give the git server's CA in [source] ca_file, or fix its certificate".into(),
                FetchError::AuthenticationRequired { .. }
                | FetchError::AuthenticationFailed { .. }
                | FetchError::Forbidden { .. }
                | FetchError::NotFound { .. } => "check [source] auth_file and the credential's access on the server".into(),
                _ => "check the device's network, [source] url, and that the git server runs".into(),
            },
            DoctorError::Scratch { .. } => "make the temp directory ($TMPDIR) writable".into(),
            DoctorError::Trust(e) => match **e {
                VerifyError::Signers(_) | VerifyError::NoSigners { .. } => "correct [trust] allowed_signers: one `principal namespaces=\"git\" ssh-ed25519 AAAA...` line per operator key".into(),
                _ => "put the key that signs the config repository in [trust] allowed_signers, or have the tip signed by a key that is there".into(),
            },
            DoctorError::NoIdentity { .. } => "run `shoal-agent keygen` (or `shoal-agent init`) and enroll the printed key".into(),
            DoctorError::Collector(_) => "check [collector] url and ca_file, the network, and that shoal-collector runs (`curl URL/healthz`)".into(),
            DoctorError::NotEnrolled { device_id, key, .. } => format!("on the collector: `shoal-collector register --device-id {device_id} --key {key}`, or set [collector] enroll_token_file to a file with its enrollment token"),
            DoctorError::OtherKey { device_id, key, .. } => format!("re-key the device on the collector (admin: PUT /api/v1/devices/{device_id}/key with {{\"key\": \"{key}\"}}), or unpin it and let it enroll with a token"),
            DoctorError::Halts(_) => "remove the damaged halt list; the next report brings the collector's current list".into(),
            DoctorError::NoSystemd => "run `shoal-agent run` under the init system in use, and pass --no-unit to doctor".into(),
            DoctorError::Systemctl { .. } => "check that systemctl works (`systemctl status`)".into(),
            DoctorError::UnitMissing { unit, .. } => format!("install the package (`apt install ./shoal-agent_*.deb`) or copy systemd/{unit} to /etc/systemd/system/ and `systemctl daemon-reload`"),
            DoctorError::UnitDisabled { unit, .. } => format!("systemctl enable --now {unit}"),
        }
    }
}

/// How a check ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Outcome {
    Pass,
    Fail,
    /// Not checked: nothing configured to check, or a check it depends on failed.
    Skip,
}

/// One line of the report.
#[derive(Debug, Serialize)]
pub struct Check {
    pub check: &'static str,
    pub outcome: Outcome,
    /// What was found (on a failure: what is wrong).
    pub detail: String,
    /// On a failure: what to do.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub fix: Option<String>,
}

impl Check {
    fn pass(check: &'static str, detail: impl Into<String>) -> Check {
        Check {
            check,
            outcome: Outcome::Pass,
            detail: detail.into(),
            fix: None,
        }
    }

    fn skip(check: &'static str, detail: impl Into<String>) -> Check {
        Check {
            check,
            outcome: Outcome::Skip,
            detail: detail.into(),
            fix: None,
        }
    }

    fn fail(check: &'static str, error: DoctorError) -> Check {
        Check {
            check,
            outcome: Outcome::Fail,
            // One line per check: a TOML error's caret diagram is folded into it.
            detail: error_chain(&error)
                .lines()
                .map(str::trim)
                .filter(|l| !l.is_empty())
                .collect::<Vec<_>>()
                .join(" "),
            fix: Some(error.fix()),
        }
    }

    fn from(check: &'static str, result: Result<String, DoctorError>) -> Check {
        match result {
            Ok(detail) => Check::pass(check, detail),
            Err(e) => Check::fail(check, e),
        }
    }
}

/// What to check besides the config's own contents.
#[derive(Debug, Clone)]
pub struct Options {
    /// The systemd unit that runs the agent; `None` skips the systemd check.
    pub unit: Option<String>,
    /// Now, in unix seconds.
    pub now: u64,
}

/// Runs every check, in order; a check whose input is missing (no config) is skipped.
#[tracing::instrument(skip_all, fields(config = %config_path.display()))]
pub fn run(config_path: &Path, options: &Options) -> Vec<Check> {
    let config = match AgentConfig::load(config_path) {
        Ok(config) => config,
        Err(e) => {
            let mut checks = vec![Check::fail("config", DoctorError::Config(e))];
            for name in [
                "state_dir",
                "root",
                "clock",
                "git",
                "trust",
                "collector",
                "halts",
            ] {
                checks.push(Check::skip(name, "needs a config that loads"));
            }
            checks.push(systemd_check(options));
            return checks;
        }
    };
    let mut checks = vec![Check::pass(
        "config",
        format!(
            "{} loads: device {}, {} at {}",
            config.path.display(),
            config.device_id,
            config.source.reference,
            config.source.url
        ),
    )];
    checks.push(Check::from("state_dir", state_dir(&config)));
    checks.push(Check::from("root", root(&config)));
    let mirror = StateView::open(&config.state_dir)
        .ok()
        .and_then(|(view, _)| Mirror::open_existing(&view.mirror_path()));
    checks.push(Check::from(
        "clock",
        clock(&config, mirror.as_ref(), options.now),
    ));
    let advertised = advertised(&config, mirror.as_ref());
    let tip = advertised.as_ref().ok().copied();
    checks.push(Check::from(
        "git",
        advertised.map(|tip| {
            format!(
                "{} has {} at {tip}",
                config.source.url, config.source.reference
            )
        }),
    ));
    checks.push(Check::from(
        "trust",
        trust(&config, mirror.as_ref(), tip, options.now),
    ));
    checks.push(match &config.collector {
        None => Check::skip("collector", "no [collector] in the config"),
        Some(_) => Check::from("collector", collector(&config, options.now)),
    });
    checks.push(halts(&config));
    checks.push(systemd_check(options));
    checks
}

/// Ownership, mode, writability and free space of the state directory.
fn state_dir(config: &AgentConfig) -> Result<String, DoctorError> {
    use std::os::unix::fs::MetadataExt;
    let path = config.state_dir.clone();
    let meta = directory(&path).map_err(|look| match look {
        DirLook::Missing => DoctorError::StateMissing { path: path.clone() },
        DirLook::NotDir => DoctorError::StateNotDir { path: path.clone() },
        DirLook::Unreadable(message) => DoctorError::StateUnwritable {
            path: path.clone(),
            message,
        },
    })?;
    // SAFETY: geteuid has no preconditions and cannot fail.
    let me = unsafe { libc::geteuid() };
    if meta.uid() != me {
        return Err(DoctorError::StateOwner {
            path,
            owner: meta.uid(),
            me,
        });
    }
    let mode = meta.mode() & 0o7777;
    if mode & 0o077 != 0 {
        return Err(DoctorError::StateMode { path, mode });
    }
    writable(&path).map_err(|message| DoctorError::StateUnwritable {
        path: path.clone(),
        message,
    })?;
    let stats = rustix::fs::statvfs(&path).map_err(|e| DoctorError::StateUnwritable {
        path: path.clone(),
        message: format!("statvfs: {}", std::io::Error::from(e)),
    })?;
    let free = ByteSize(stats.f_bavail.saturating_mul(stats.f_frsize));
    let need = config.source.max_fetch;
    if free < need {
        return Err(DoctorError::StateFull { path, free, need });
    }
    Ok(format!(
        "{}: owner uid {me}, mode {mode:04o}, writable, {free} free",
        path.display()
    ))
}

/// The directory files are applied below: it exists, is a directory, nobody but root or the
/// agent's user owns or may write it (another user could put links where the agent writes), and
/// the agent may write in it (a sync fails on the first file otherwise).
fn root(config: &AgentConfig) -> Result<String, DoctorError> {
    use std::os::unix::fs::MetadataExt;
    let path = config.root.clone();
    let meta = directory(&path).map_err(|look| match look {
        DirLook::Missing => DoctorError::RootMissing { path: path.clone() },
        DirLook::NotDir => DoctorError::RootNotDir { path: path.clone() },
        DirLook::Unreadable(message) => DoctorError::RootUnwritable {
            path: path.clone(),
            message,
        },
    })?;
    // SAFETY: geteuid has no preconditions and cannot fail.
    let me = unsafe { libc::geteuid() };
    if meta.uid() != 0 && meta.uid() != me {
        return Err(DoctorError::RootOwner {
            path,
            owner: meta.uid(),
            me,
        });
    }
    let mode = meta.mode() & 0o7777;
    if mode & 0o022 != 0 {
        return Err(DoctorError::RootMode { path, mode });
    }
    writable(&path).map_err(|message| DoctorError::RootUnwritable {
        path: path.clone(),
        message,
    })?;
    Ok(format!(
        "{}: owner uid {}, mode {mode:04o}, writable",
        path.display(),
        meta.uid()
    ))
}

/// Why a directory the agent needs did not pass its first look.
enum DirLook {
    Missing,
    NotDir,
    Unreadable(String),
}

/// The metadata of `path`, a directory (links followed).
fn directory(path: &Path) -> Result<std::fs::Metadata, DirLook> {
    match std::fs::metadata(path) {
        Ok(meta) if meta.is_dir() => Ok(meta),
        Ok(_) => Err(DirLook::NotDir),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Err(DirLook::Missing),
        Err(e) => Err(DirLook::Unreadable(e.to_string())),
    }
}

/// Whether the agent may write in `path`: access(2) asks the kernel, so a read-only mount counts
/// even for root.
fn writable(path: &Path) -> Result<(), String> {
    rustix::fs::access(path, rustix::fs::Access::WRITE_OK)
        .map_err(|e| std::io::Error::from(e).to_string())
}

/// The clock is not before this binary's build, nor before what the device already accepted
/// (the applied commit's committer time, the release's tagger time, the last apply).
fn clock(config: &AgentConfig, mirror: Option<&Mirror>, now: u64) -> Result<String, DoctorError> {
    let (view, _) = StateView::open(&config.state_dir).map_err(|source| DoctorError::State {
        path: config.state_dir.clone(),
        source,
    })?;
    let state = |source| DoctorError::State {
        path: config.state_dir.clone(),
        source,
    };
    let mut bounds: Vec<(String, u64)> = vec![("this agent was built".into(), BUILD_TIME)];
    if view.dir().is_dir() {
        if let Some(applied) = view.applied_commit().map_err(state)? {
            let time = mirror
                .and_then(|m| m.repo().find_commit(applied).ok())
                .and_then(|c| c.committer().ok().map(|s| s.seconds()));
            if let Some(time) = time {
                bounds.push((
                    format!("the applied commit {applied} was committed"),
                    u64::try_from(time).unwrap_or(0),
                ));
            }
        }
        if let Some(release) = view.applied_release().map_err(state)? {
            bounds.push((
                format!("the applied release {} was tagged", release.name),
                u64::try_from(release.tagger_time).unwrap_or(0),
            ));
        }
        if let Some(current) = view.current().map_err(state)? {
            bounds.push((
                format!("generation {} was applied", current.number),
                current.applied_at,
            ));
        }
    }
    let latest = bounds
        .iter()
        .max_by_key(|(_, t)| *t)
        .expect("the build time is always a bound");
    if now < latest.1 {
        return Err(DoctorError::ClockBehind {
            now: rfc3339(now),
            what: latest.0.clone(),
            then: rfc3339(latest.1),
        });
    }
    Ok(format!(
        "{} is not before {} ({})",
        rfc3339(now),
        latest.0,
        rfc3339(latest.1)
    ))
}

/// What the server advertises for the tracked ref: a handshake and ls-refs, through the
/// device's mirror, or a scratch repository when it has none yet.
fn advertised(config: &AgentConfig, mirror: Option<&Mirror>) -> Result<ObjectId, DoctorError> {
    if let Some(mirror) = mirror {
        return mirror
            .advertised_tip(&config.source)
            .map_err(|e| DoctorError::Git(Box::new(e)));
    }
    let dir = std::env::temp_dir().join(format!("shoal-doctor.{}", std::process::id()));
    let scratch = |message: String| DoctorError::Scratch {
        path: dir.clone(),
        message,
    };
    let result = gix::init_bare(&dir)
        .map_err(|e| scratch(error_chain(&e)))
        .and_then(|_| Mirror::open_existing(&dir).ok_or_else(|| scratch("cannot open it".into())))
        .and_then(|m| {
            m.advertised_tip(&config.source)
                .map_err(|e| DoctorError::Git(Box::new(e)))
        });
    let _ = std::fs::remove_dir_all(&dir);
    result
}

/// The trust file loads; the advertised tip's signature verifies if the mirror holds it.
fn trust(
    config: &AgentConfig,
    mirror: Option<&Mirror>,
    tip: Option<ObjectId>,
    now: u64,
) -> Result<String, DoctorError> {
    let trust = |e| DoctorError::Trust(Box::new(e));
    let policy = TrustPolicy::load(&config.trust).map_err(trust)?;
    let file = config.trust.allowed_signers.display();
    let Some((mirror, tip)) = mirror
        .zip(tip)
        .filter(|(m, tip)| m.repo().find_object(*tip).is_ok())
    else {
        let tip = tip.map_or("the tip".to_owned(), |t| format!("the tip {t}"));
        return Ok(format!(
            "{file} loads; {tip} is not fetched yet: the next sync checks its signature"
        ));
    };
    // The approval tags the mirror holds (none: a fetch deletes their refs; the tip's own
    // signature is what doctor checks, not the policy's thresholds).
    let approvals = verify::local_approvals(mirror.repo());
    let verified = match &config.source.environment {
        Some(environment) => verify::verify_release(
            mirror.repo(),
            &policy,
            verify::ReleaseContext {
                environment,
                applied: None,
                policy: None,
                approvals: &approvals,
                last: None,
                now: i64::try_from(now).unwrap_or(i64::MAX),
            },
            tip,
        ),
        None => verify::verify_update(
            mirror.repo(),
            &policy,
            &verify::Anchor {
                applied: None,
                policy: None,
                approvals: &approvals,
            },
            tip,
        ),
    }
    .map_err(trust)?;
    Ok(format!(
        "{file} loads; the tip {} is signed by {}",
        verified.commit(),
        verified.signer().principal
    ))
}

/// The collector answers, and has this device's key pinned (or will take it with the token).
fn collector(config: &AgentConfig, now: u64) -> Result<String, DoctorError> {
    let collector = config.collector.as_ref().expect("checked by the caller");
    let (view, _) = StateView::open(&config.state_dir).map_err(|source| DoctorError::State {
        path: config.state_dir.clone(),
        source,
    })?;
    let identity = match Identity::load(&view) {
        Ok(identity) => identity,
        Err(ReportError::NoIdentity { path }) => return Err(DoctorError::NoIdentity { path }),
        Err(e) => return Err(DoctorError::Collector(Box::new(e))),
    };
    let key = identity.key_id().to_string();
    let pinned = report::probe_enrollment(config, collector, &identity, now)
        .map_err(|e| DoctorError::Collector(Box::new(e)))?;
    let url = collector.url.clone();
    let device_id = config.device_id.clone();
    match (pinned, &collector.enroll_token_file) {
        (Pinned::ThisKey, _) => Ok(format!(
            "{url} is up and has this device's key {key} pinned to {device_id:?}"
        )),
        (Pinned::Nothing, Some(token)) => Ok(format!(
            "{url} is up; device {device_id:?} is not enrolled yet: its first report enrolls key {key} with the token in {}",
            token.display()
        )),
        (Pinned::Nothing, None) => Err(DoctorError::NotEnrolled {
            url,
            device_id,
            key,
        }),
        (Pinned::OtherKey, _) => Err(DoctorError::OtherKey {
            url,
            device_id,
            key,
        }),
    }
}

/// Whether halts from the collector are trusted (`[collector] key`), and the list in force.
fn halts(config: &AgentConfig) -> Check {
    let Some(collector) = &config.collector else {
        return Check::skip(
            "halts",
            "no [collector] in the config: halts from the collector are not trusted",
        );
    };
    let Some(key) = &collector.key else {
        return Check::skip(
            "halts",
            "no [collector] key: halts from the collector are not trusted (its halt lists are ignored); pin the key `shoal-collector serve` prints to honour them",
        );
    };
    let list = StateView::open(&config.state_dir)
        .map_err(|source| DoctorError::State {
            path: config.state_dir.clone(),
            source,
        })
        .and_then(|(view, _)| {
            crate::halts::in_force(&view, Some(key)).map_err(|e| DoctorError::Halts(Box::new(e)))
        });
    Check::from(
        "halts",
        list.map(|list| {
            let in_force = match list {
                None => "no list accepted yet".to_owned(),
                Some(list) => format!(
                    "list {} in force, {} commit(s) halted",
                    list.serial,
                    list.halted.len()
                ),
            };
            format!(
                "halts from the collector are trusted when signed by {}; {in_force}",
                key.id
            )
        }),
    )
}

fn systemd_check(options: &Options) -> Check {
    match &options.unit {
        None => Check::skip("systemd", "--no-unit"),
        Some(unit) => Check::from("systemd", systemd(unit)),
    }
}

/// systemd is PID 1, and the unit is installed and enabled.
fn systemd(unit: &str) -> Result<String, DoctorError> {
    if !Path::new("/run/systemd/system").is_dir() {
        return Err(DoctorError::NoSystemd);
    }
    let failed = |message: String| DoctorError::Systemctl {
        unit: unit.to_owned(),
        message,
    };
    let out = std::process::Command::new("systemctl")
        .args([
            "show",
            "--property=LoadState",
            "--property=UnitFileState",
            "--property=ActiveState",
            "--",
            unit,
        ])
        .stdin(std::process::Stdio::null())
        .output()
        .map_err(|e| failed(e.to_string()))?;
    if !out.status.success() {
        return Err(failed(
            String::from_utf8_lossy(&out.stderr).trim().to_owned(),
        ));
    }
    let text = String::from_utf8_lossy(&out.stdout);
    let property = |name: &str| {
        text.lines()
            .find_map(|l| l.strip_prefix(name)?.strip_prefix('='))
            .unwrap_or("")
            .to_owned()
    };
    let load_state = property("LoadState");
    if load_state != "loaded" {
        return Err(DoctorError::UnitMissing {
            unit: unit.to_owned(),
            load_state,
        });
    }
    let file_state = property("UnitFileState");
    if file_state != "enabled" {
        return Err(DoctorError::UnitDisabled {
            unit: unit.to_owned(),
            file_state,
        });
    }
    Ok(format!(
        "{unit} is installed and enabled ({})",
        property("ActiveState")
    ))
}

/// Unix seconds as RFC 3339 UTC.
fn rfc3339(unix: u64) -> String {
    shoal_core::release::format_rfc3339_utc(i64::try_from(unix).unwrap_or(i64::MAX))
}
