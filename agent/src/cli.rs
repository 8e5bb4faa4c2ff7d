//! The `shoal-agent` command line: parses arguments, runs one command, and prints its result
//! (`--json` to stdout, human text to stderr). Turns nothing into exit codes itself: `main`
//! does that from [`CliError::exit_code`].

use std::path::{Path, PathBuf};
use std::sync::atomic::AtomicBool;

use clap::{Parser, Subcommand};
use gix::ObjectId;
use serde_json::json;

use crate::apply;
use crate::config::{AgentConfig, ConfigError, TrustConfig, VerifyMode};
use crate::daemon;
use crate::errors::error_chain;
use crate::fetch::Mirror;
use crate::halts;
use crate::plan::Plan;
use crate::render::{self, CommitPreview, DeviceIdentity, PreviewSource, RenderError};
use crate::report::{Identity, Reporter};
use crate::rollback;
use crate::services::ServicePlan;
use crate::state::{StateDir, StateView};
use crate::sync::{self, SyncError, SyncOutcome};
use crate::verify::{self, TrustPolicy, VerifyError};

#[derive(Parser, Debug)]
#[command(
    name = "shoal-agent",
    version,
    about = "Pull-based GitOps agent for Linux devices"
)]
pub struct Cli {
    /// The agent config file.
    #[arg(long, global = true, default_value = crate::config::DEFAULT_PATH)]
    pub config: PathBuf,
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Subcommand, Debug)]
pub enum Command {
    /// The daemon: sync every interval (±10 % jitter), at once on SIGHUP; stop on SIGTERM.
    Run,
    /// Sync now: fetch, verify, render, plan and apply the tracked ref's tip.
    Sync {
        /// Fetch, verify, render and plan; print the plan and change nothing.
        #[arg(long)]
        dry_run: bool,
        /// With --dry-run: print the plan as JSON on stdout.
        #[arg(long, requires = "dry_run")]
        json: bool,
        /// Run by `shoal-agent run` for each sync: the daemon reports to the collector itself.
        #[arg(long, hide = true, conflicts_with = "dry_run")]
        from_daemon: bool,
        /// Offline: take the tracked ref (branch or release ref) and its objects from this
        /// `git bundle` file instead of the server; verified and applied exactly the same way.
        #[arg(long, value_name = "FILE", conflicts_with = "from_daemon")]
        from_bundle: Option<PathBuf>,
    },
    /// Show the current generation, commit, last result, hold and any unfinished apply.
    Status {
        #[arg(long)]
        json: bool,
    },
    /// List the generations kept on the device.
    History {
        #[arg(long)]
        json: bool,
    },
    /// Restore the previous (or given) generation and hold the device there; works offline.
    Rollback {
        /// The generation to restore (see `history`).
        #[arg(long)]
        to: Option<u64>,
    },
    /// Release the hold set by `rollback`; the next sync follows the branch tip again.
    Resume,
    /// Create the device identity key (if missing) and print its public key for enrollment.
    Keygen,
    /// Write a first agent config (`--config`, default /etc/shoal/agent.toml) from these flags,
    /// checked before it is written, and create the device identity key.
    Init(InitArgs),
    /// Check what this device needs to sync and report, one line per check with a fix for each
    /// failure; exit 0 only when every check passes.
    Doctor {
        /// The systemd unit that runs the agent.
        #[arg(long, default_value = "shoal-agent.service")]
        unit: String,
        /// Skip the systemd check (the agent runs under another supervisor, or in a sandbox).
        #[arg(long)]
        no_unit: bool,
        #[arg(long)]
        json: bool,
    },
    /// Check a commit's signature, or a release, against a trust policy (for the config repo's
    /// own CI).
    Verify {
        /// The repository to check (a work tree or a bare repository).
        path: PathBuf,
        /// The commit to check.
        #[arg(long, default_value = "HEAD")]
        rev: String,
        /// Check a release instead: the tag (or release ref) REF, as a device following its
        /// environment would (signature, environment, expiry, and its commit as with --rev).
        #[arg(long, value_name = "REF", conflicts_with = "rev")]
        release: Option<String>,
        /// With --release: the environment the release must be for (default: the one in
        /// refs/shoal/releases/NAME, else the tag's own).
        #[arg(long, requires = "release")]
        env: Option<String>,
        /// Also check every commit since this one, and that REV descends from it.
        #[arg(long)]
        since: Option<String>,
        /// Explain the repository policy (.shoal/policy.toml): for each commit since --since
        /// (all history without it), which rule allowed each changed path, or why not, with the
        /// approval tags (refs/tags/shoal-approve/*) of this repository; exit 1 if any is refused.
        #[arg(long, conflicts_with = "release")]
        policy: bool,
        /// The allowed_signers file; defaults to `[trust] allowed_signers` of the agent config.
        #[arg(long)]
        allowed_signers: Option<PathBuf>,
        /// Keys refused whatever allowed_signers says (a KRL or a list of public keys, as git's
        /// gpg.ssh.revocationFile); defaults to `[trust] revoked_keys` of the agent config, or
        /// none with --allowed-signers.
        #[arg(long, value_name = "FILE")]
        revoked_keys: Option<PathBuf>,
        /// How many allowed_signers principals the repository's first policy needs (as
        /// `[trust] root_threshold`); defaults to the agent config's, or 1 with --allowed-signers.
        #[arg(long, value_name = "N", value_parser = clap::value_parser!(u32).range(1..))]
        root_threshold: Option<u32>,
        #[arg(long)]
        json: bool,
    },
    /// Make the next release of an environment: a signed tag ENV/N on REV with an Expires:
    /// trailer, at refs/shoal/releases/ENV (runs git; for operators and CI, not devices).
    Release {
        /// The environment (devices with `[source] environment = "ENV"` follow it).
        #[arg(long = "env")]
        environment: String,
        /// How long the release stays fresh: devices report `stale` after that.
        #[arg(long, default_value = "7d", value_parser = crate::config::parse_duration)]
        expires: std::time::Duration,
        /// Add `Halt: true`: devices that have not applied the commit stay where they are.
        #[arg(long)]
        halt: bool,
        /// The SSH key to sign with (else git's user.signingkey).
        #[arg(long)]
        signing_key: Option<PathBuf>,
        /// Fetch the current release from this remote first, then push the tag and the release
        /// ref there.
        #[arg(long, value_name = "REMOTE")]
        push: Option<String>,
        /// The repository (default: the current directory).
        #[arg(long, default_value = ".")]
        repo: PathBuf,
        /// The commit to release.
        #[arg(default_value = "HEAD")]
        rev: String,
        #[arg(long)]
        json: bool,
    },
    /// Approve a commit for the repository policy: a signed tag
    /// shoal-approve/COMMIT/NAME on it (runs git; for operators, not devices).
    Approve {
        /// The commit to approve.
        #[arg(default_value = "HEAD")]
        rev: String,
        /// The principal approving (default: the one the policy at COMMIT gives the signing key).
        #[arg(long)]
        name: Option<String>,
        /// The SSH key to sign with (else git's user.signingkey).
        #[arg(long)]
        signing_key: Option<PathBuf>,
        /// Push the tag to this remote.
        #[arg(long, value_name = "REMOTE")]
        push: Option<String>,
        /// The repository (default: the current directory).
        #[arg(long, default_value = ".")]
        repo: PathBuf,
        #[arg(long)]
        json: bool,
    },
    /// Show the desired state a device would get from a config repo (for PR review).
    Render {
        /// The config repository (a work tree, or any directory with a shoal.toml).
        path: PathBuf,
        /// Read the files of this commit instead of the working directory.
        #[arg(long)]
        rev: Option<String>,
        #[arg(long)]
        device_id: String,
        /// A device label, `name=value`; repeat for several.
        #[arg(long = "label", value_parser = parse_label)]
        labels: Vec<(String, String)>,
        /// The device's state_dir (declared paths may not be inside it).
        #[arg(long, default_value = "/var/lib/shoal")]
        state_dir: PathBuf,
        #[arg(long)]
        json: bool,
    },
}

#[derive(clap::Args, Debug)]
pub struct InitArgs {
    /// The config repository: https://, http://, git://, file:// or a local path.
    #[arg(long)]
    pub url: String,
    /// Follow this branch (a full ref, e.g. refs/heads/production).
    #[arg(
        long = "ref",
        value_name = "REF",
        required_unless_present = "environment"
    )]
    pub reference: Option<String>,
    /// Follow the signed releases of this environment instead of a branch.
    #[arg(long, conflicts_with = "reference")]
    pub environment: Option<String>,
    /// The trust root: an OpenSSH allowed_signers file (checked now).
    #[arg(long, value_name = "FILE")]
    pub allowed_signers: PathBuf,
    /// `range` (every commit since the applied one) or `tip`.
    #[arg(long, value_parser = ["range", "tip"])]
    pub verify: Option<String>,
    /// The device id (default: /etc/machine-id, read at each start).
    #[arg(long)]
    pub device_id: Option<String>,
    /// A device label, `name=value`; repeat for several.
    #[arg(long = "label", value_parser = parse_label)]
    pub labels: Vec<(String, String)>,
    /// Where the agent keeps its state and identity key.
    #[arg(long, value_name = "DIR")]
    pub state_dir: Option<PathBuf>,
    /// Prefix for every managed path (an image or a chroot; default /).
    #[arg(long, value_name = "DIR")]
    pub root: Option<PathBuf>,
    /// How often to sync, e.g. 60s, 5m (default 60s).
    #[arg(long, value_parser = check_duration)]
    pub interval: Option<String>,
    /// A CA file to trust for an https config repository instead of the system roots.
    #[arg(long, value_name = "FILE")]
    pub ca_file: Option<PathBuf>,
    /// The collector's URL, e.g. https://collector.example.com:8443.
    #[arg(long, value_name = "URL")]
    pub collector: Option<String>,
    /// A CA file to trust for the collector instead of the system roots.
    #[arg(long, value_name = "FILE")]
    pub collector_ca: Option<PathBuf>,
    /// A file holding the collector's enrollment token (first contact).
    #[arg(long, value_name = "FILE")]
    pub enroll_token_file: Option<PathBuf>,
    /// Replace an existing config file.
    #[arg(long)]
    pub force: bool,
}

fn check_duration(text: &str) -> Result<String, String> {
    crate::config::parse_duration(text).map(|_| text.to_owned())
}

fn parse_label(text: &str) -> Result<(String, String), String> {
    match text.split_once('=') {
        Some((k, v)) if !k.is_empty() => Ok((k.to_owned(), v.to_owned())),
        _ => Err(format!(
            "{text:?} is not a label; write name=value, e.g. role=gateway"
        )),
    }
}

#[derive(Debug, thiserror::Error)]
pub enum CliError {
    #[error(transparent)]
    Config(#[from] ConfigError),
    #[error(transparent)]
    Sync(Box<SyncError>),
    #[error(transparent)]
    Verify(Box<VerifyError>),
    #[error(transparent)]
    Render(Box<RenderError>),
    #[error("{0}")]
    Usage(String),
    #[error("{0}")]
    Failed(String),
}

impl From<SyncError> for CliError {
    fn from(e: SyncError) -> Self {
        CliError::Sync(Box::new(e))
    }
}

impl From<VerifyError> for CliError {
    fn from(e: VerifyError) -> Self {
        CliError::Verify(Box::new(e))
    }
}

impl From<RenderError> for CliError {
    fn from(e: RenderError) -> Self {
        CliError::Render(Box::new(e))
    }
}

impl CliError {
    /// 2 for bad usage or bad configuration, 1 for a failed operation.
    pub fn exit_code(&self) -> i32 {
        let bad_trust_root = |e: &VerifyError| {
            matches!(
                e,
                VerifyError::Signers(_) | VerifyError::Revoked(_) | VerifyError::NoSigners { .. }
            )
        };
        match self {
            CliError::Config(_) | CliError::Usage(_) => 2,
            CliError::Verify(e) if bad_trust_root(e) => 2,
            CliError::Sync(e) if matches!(&**e, SyncError::Verify(v) if bad_trust_root(v)) => 2,
            _ => 1,
        }
    }
}

pub fn run(cli: Cli) -> Result<(), CliError> {
    match cli.command {
        Command::Run => {
            let config = AgentConfig::load(&cli.config)?;
            daemon::run(config).map_err(failed)
        }
        Command::Sync {
            dry_run,
            json,
            from_daemon,
            from_bundle,
        } => sync_command(
            &cli.config,
            dry_run,
            json,
            !from_daemon,
            from_bundle.as_deref(),
        ),
        Command::History { json } => history_command(&cli.config, json),
        Command::Rollback { to } => rollback_command(&cli.config, to),
        Command::Resume => resume_command(&cli.config),
        Command::Keygen => keygen_command(&cli.config),
        Command::Init(args) => init_command(&cli.config, args),
        Command::Doctor {
            unit,
            no_unit,
            json,
        } => doctor_command(&cli.config, (!no_unit).then_some(unit), json),
        Command::Status { json } => status_command(&cli.config, json),
        Command::Verify {
            path,
            rev,
            release,
            env,
            since,
            policy,
            allowed_signers,
            revoked_keys,
            root_threshold,
            json,
        } => {
            let trust = TrustFiles {
                allowed_signers,
                revoked_keys,
                root_threshold,
            };
            match release {
                Some(release) => verify_release_command(
                    &cli.config,
                    &path,
                    &release,
                    env.as_deref(),
                    since.as_deref(),
                    trust,
                    json,
                ),
                None if policy => {
                    verify_policy_command(&cli.config, &path, &rev, since.as_deref(), trust, json)
                }
                None => verify_command(&cli.config, &path, &rev, since.as_deref(), trust, json),
            }
        }
        Command::Release {
            environment,
            expires,
            halt,
            signing_key,
            push,
            repo,
            rev,
            json,
        } => release_command(
            &crate::release::ReleaseRequest {
                repo: &repo,
                environment: &environment,
                rev: &rev,
                expires_in: expires,
                halt,
                signing_key: signing_key.as_deref(),
                push: push.as_deref(),
                now: i64::try_from(crate::state::unix_now()).unwrap_or(i64::MAX),
            },
            json,
        ),
        Command::Approve {
            rev,
            name,
            signing_key,
            push,
            repo,
            json,
        } => approve_command(
            &crate::approve::ApproveRequest {
                repo: &repo,
                rev: &rev,
                name: name.as_deref(),
                signing_key: signing_key.as_deref(),
                push: push.as_deref(),
            },
            json,
        ),
        Command::Render {
            path,
            rev,
            device_id,
            labels,
            state_dir,
            json,
        } => {
            let identity = DeviceIdentity {
                device_id,
                labels: labels.into_iter().collect(),
                state_dir,
            };
            render_command(&path, rev.as_deref(), &identity, json)
        }
    }
}

fn sync_command(
    config_path: &Path,
    dry_run: bool,
    json: bool,
    report: bool,
    bundle: Option<&Path>,
) -> Result<(), CliError> {
    let config = AgentConfig::load(config_path)?;
    let interrupt = AtomicBool::new(false);
    let result = sync::sync_once(&config, dry_run, bundle, &interrupt);
    if report && !dry_run {
        report_after_sync(&config);
    }
    match result? {
        SyncOutcome::Held { generation } => {
            eprintln!("held at generation {generation} by `shoal-agent rollback`; run `shoal-agent resume` to follow the branch again")
        }
        SyncOutcome::UpToDate {
            generation,
            commit,
            release,
        } => {
            let release = release.map_or(String::new(), |r| format!(", release {r}"));
            eprintln!("up to date: generation {generation}, commit {commit}{release}")
        }
        SyncOutcome::Pending {
            commit,
            pending,
            message,
        } => {
            if json {
                let value = json!({ "commit": commit.to_string(), "pending": pending });
                println!("{value:#}");
            }
            let dry = if dry_run { "dry run: " } else { "" };
            eprintln!("{dry}pending: {message}");
        }
        SyncOutcome::Halted {
            commit,
            halt,
            message,
        } => {
            if json {
                let value = json!({ "commit": commit.to_string(), "halted": halt });
                println!("{value:#}");
            }
            let dry = if dry_run { "dry run: " } else { "" };
            eprintln!("{dry}halted: {message}");
        }
        SyncOutcome::DryRun {
            commit,
            plan,
            services,
            policy,
        } => {
            if json {
                let mut value =
                    json!({ "commit": commit.to_string(), "plan": plan, "services": services });
                if let Some(policy) = policy {
                    value["policy"] = json!({
                        "commit": policy.commit.to_string(),
                        "blob": policy.blob.to_string(),
                    });
                }
                println!("{value:#}");
            } else {
                let under = policy.map_or(String::new(), |p| {
                    format!(
                        " (verified under {} of commit {})",
                        shoal_core::policy::POLICY_PATH,
                        p.commit
                    )
                });
                eprintln!(
                    "dry run for commit {commit}{under}; nothing was changed:\n{}",
                    plan_text(&plan, &services)
                );
            }
        }
        SyncOutcome::Applied {
            generation,
            previous,
            commit,
            signer,
            release,
            plan,
            services,
        } => {
            let was = previous.map_or("first sync".to_owned(), |p| format!("was generation {p}"));
            let release = release.map_or(String::new(), |r| format!(" (release {r})"));
            eprintln!(
                "applied generation {generation}: commit {commit}{release} signed by {signer} ({was})\n{}",
                plan_text(&plan, &services)
            );
        }
    }
    Ok(())
}

/// The file plan's lines, then the service plan's; `nothing to do` only when both are empty.
fn plan_text(plan: &Plan, services: &ServicePlan) -> String {
    match (plan.is_empty(), services.is_empty()) {
        (_, true) => plan.to_string(),
        (true, false) => services.to_string(),
        (false, false) => format!("{plan}{services}"),
    }
}

fn status_command(config_path: &Path, json: bool) -> Result<(), CliError> {
    let config = AgentConfig::load(config_path)?;
    // Readable while a sync runs: an operator asks exactly then.
    let (state, syncing) = StateView::open(&config.state_dir).map_err(failed)?;
    let current = state.current().map_err(failed)?;
    let hold = state.hold().map_err(failed)?;
    let last = state.last_result().map_err(failed)?;
    let watermark = state.applied_commit().map_err(failed)?;
    let release = state.applied_release().map_err(failed)?;
    let pending = apply::pending(&state.apply_journal_path()).map_err(failed)?;
    let queued = state.queued_reports().map_err(failed)?.len();
    // The collector's halt list in force (opened with the pinned key), or why it cannot be.
    let pinned = config.collector.as_ref().and_then(|c| c.key.as_ref());
    let halts = halts::in_force(&state, pinned).map_err(|e| e.to_string());
    let halts_refused = state.halts_refused().map_err(failed)?;
    let mirror = Mirror::open_existing(&state.mirror_path());
    let fetched = mirror.as_ref().and_then(|m| m.fetched_tip());
    // In environment mode the mirror records the release tag: show its commit as the fetched
    // commit, and the tag beside it.
    let fetched_tag = mirror.as_ref().zip(fetched).and_then(|(m, id)| {
        let object = m.repo().find_object(id).ok()?;
        (object.kind == gix::object::Kind::Tag).then_some(id)
    });
    let fetched = match (mirror.as_ref(), fetched_tag) {
        (Some(m), Some(tag)) => m
            .repo()
            .find_object(tag)
            .ok()
            .and_then(|o| o.peel_to_commit().ok())
            .map(|c| c.id),
        _ => fetched,
    };
    if json {
        let value = json!({
            "device_id": config.device_id,
            "source": { "url": config.source.url, "ref": config.source.reference, "environment": config.source.environment },
            "generation": current.as_ref().map(|g| g.number),
            "commit": current.as_ref().map(|g| g.commit.clone()),
            "release": release.as_ref().map(|r| json!({
                "environment": r.name.environment,
                "number": r.name.number,
                "tag": r.tag,
                "tagged_at": r.tagger_time,
            })),
            "applied_commit": watermark.map(|c| c.to_string()),
            "fetched_commit": fetched.map(|c| c.to_string()),
            "fetched_release_tag": fetched_tag.map(|t| t.to_string()),
            "hold": hold,
            "last_result": last,
            "sync_in_progress": syncing,
            "unfinished_apply": pending.map(|j| json!({ "from": j.from, "to": j.to })),
            "queued_reports": queued,
            "halts": match &halts {
                Ok(list) => json!(list),
                Err(e) => json!({ "error": e }),
            },
            "halts_trusted": pinned.map(|k| k.id.to_string()),
            "halts_refused": halts_refused,
        });
        println!("{value:#}");
        return Ok(());
    }
    eprintln!("device      {}", config.device_id);
    eprintln!(
        "source      {} {}",
        config.source.url, config.source.reference
    );
    match &current {
        Some(g) => eprintln!("generation  {} (commit {})", g.number, g.commit),
        None => eprintln!("generation  none (never applied)"),
    }
    if let Some(r) = &release {
        eprintln!(
            "release     {} (tag {}, tagged {})",
            r.name,
            r.tag,
            human_time(r.tagger_time)
        );
    }
    if let Some(h) = hold {
        eprintln!("hold        held at generation {h}; `shoal-agent resume` releases it");
    }
    if let Some(last) = last {
        let message = last.message.map(|m| format!(": {m}")).unwrap_or_default();
        eprintln!(
            "last sync   {} at {}{message}",
            last.status,
            human_time(last.at)
        );
    }
    match (&halts, pinned) {
        (_, None) => {}
        (Ok(None), Some(_)) => eprintln!("halts       none from the collector yet"),
        (Ok(Some(list)), Some(_)) => {
            let halted: Vec<String> = list.halted.iter().map(|h| h.commit.to_string()).collect();
            let halted = if halted.is_empty() {
                "nothing halted".to_owned()
            } else {
                format!("halted: {}", halted.join(", "))
            };
            eprintln!(
                "halts       list {} from the collector: {halted}",
                list.serial
            );
        }
        (Err(e), Some(_)) => eprintln!("halts       {e}"),
    }
    if let Some(why) = &halts_refused {
        eprintln!("halts       the collector's last list was ignored: {why}");
    }
    match (pending, syncing) {
        (Some(j), true) => eprintln!("syncing     applying generation {} → {} now", j.from, j.to),
        (None, true) => eprintln!("syncing     a sync is running now"),
        (Some(j), false) => eprintln!(
            "unfinished  apply {} → {}; the next start recovers it",
            j.from, j.to
        ),
        (None, false) => {}
    }
    Ok(())
}

fn history_command(config_path: &Path, json: bool) -> Result<(), CliError> {
    let config = AgentConfig::load(config_path)?;
    let (state, _) = StateView::open(&config.state_dir).map_err(failed)?;
    let current = state.current_number().map_err(failed)?;
    let hold = state.hold().map_err(failed)?;
    let generations = state.generations().map_err(failed)?;
    if json {
        let list: Vec<_> = generations
            .iter()
            .map(|g| {
                json!({
                    "generation": g.number,
                    "commit": g.commit,
                    "applied_at": g.applied_at,
                    "signer": g.signer,
                    "release": g.release,
                    "files": g.manifest.files.len(),
                    "current": Some(g.number) == current,
                    "held": Some(g.number) == hold,
                })
            })
            .collect();
        println!("{:#}", serde_json::Value::Array(list));
        return Ok(());
    }
    for g in generations.iter().rev() {
        let marker = match (Some(g.number) == current, Some(g.number) == hold) {
            (true, true) => "* held",
            (true, false) => "*",
            _ => "",
        };
        let release = g
            .release
            .as_ref()
            .map_or(String::new(), |r| format!(" ({r})"));
        eprintln!(
            "{:>4} {:<6} {}{release} {:>4} files  applied {} by {}",
            g.number,
            marker,
            g.commit,
            g.manifest.files.len(),
            human_time(g.applied_at),
            g.signer
        );
    }
    Ok(())
}

fn rollback_command(config_path: &Path, to: Option<u64>) -> Result<(), CliError> {
    let config = AgentConfig::load(config_path)?;
    let done = rollback::rollback(&config, to).map_err(failed)?;
    eprintln!(
        "rolled back from generation {} to {} (commit {}); held there until `shoal-agent resume`",
        done.from, done.to, done.commit
    );
    // The fleet should see the hold now, not at the daemon's next sync; with no network the
    // report waits in the outbox and the rollback has still succeeded.
    report_after_sync(&config);
    Ok(())
}

fn resume_command(config_path: &Path) -> Result<(), CliError> {
    let config = AgentConfig::load(config_path)?;
    match rollback::resume(&config).map_err(failed)? {
        Some(n) => {
            eprintln!("released the hold on generation {n}; the next sync follows the branch again")
        }
        None => eprintln!("the device was not held; nothing to do"),
    }
    Ok(())
}

fn keygen_command(config_path: &Path) -> Result<(), CliError> {
    let config = AgentConfig::load(config_path)?;
    let state = StateDir::open(&config.state_dir).map_err(failed)?;
    let (identity, created) = Identity::load_or_create(&state).map_err(failed)?;
    println!("{}", identity.key_id());
    let path = state.identity_path();
    if created {
        eprintln!(
            "created {}; enroll the key above: `shoal-collector register --device-id {} --key <key>`, or give the device an enrollment token",
            path.display(),
            config.device_id
        );
    } else {
        eprintln!("{} already exists; its public key is above", path.display());
    }
    Ok(())
}

fn doctor_command(config_path: &Path, unit: Option<String>, json: bool) -> Result<(), CliError> {
    use crate::doctor::Outcome;
    let options = crate::doctor::Options {
        unit,
        now: crate::state::unix_now(),
    };
    let checks = crate::doctor::run(config_path, &options);
    let failed_checks: Vec<&str> = checks
        .iter()
        .filter(|c| c.outcome == Outcome::Fail)
        .map(|c| c.check)
        .collect();
    if json {
        let value = json!({ "ok": failed_checks.is_empty(), "checks": checks });
        println!("{value:#}");
    } else {
        for c in &checks {
            let word = match c.outcome {
                Outcome::Pass => "ok  ",
                Outcome::Fail => "FAIL",
                Outcome::Skip => "skip",
            };
            match &c.fix {
                Some(fix) => eprintln!("{word} {:<9} {}; fix: {fix}", c.check, c.detail),
                None => eprintln!("{word} {:<9} {}", c.check, c.detail),
            }
        }
    }
    if failed_checks.is_empty() {
        Ok(())
    } else {
        Err(CliError::Failed(format!(
            "doctor: {} check(s) failed: {}",
            failed_checks.len(),
            failed_checks.join(", ")
        )))
    }
}

fn init_command(config_path: &Path, args: InitArgs) -> Result<(), CliError> {
    let request = crate::init::InitRequest {
        config: config_path.to_owned(),
        url: args.url,
        reference: args.reference,
        environment: args.environment,
        allowed_signers: args.allowed_signers,
        verify: args.verify,
        device_id: args.device_id,
        labels: args.labels,
        state_dir: args.state_dir,
        root: args.root,
        interval: args.interval,
        ca_file: args.ca_file,
        collector: args.collector,
        collector_ca: args.collector_ca,
        enroll_token_file: args.enroll_token_file,
        force: args.force,
    };
    let done = crate::init::init(&request).map_err(|e| {
        if e.is_usage() {
            CliError::Usage(e.to_string())
        } else {
            failed(e)
        }
    })?;
    let config = &done.config;
    println!("{}", done.key_id);
    let verb = if done.replaced { "replaced" } else { "wrote" };
    eprintln!(
        "{verb} {}: device {}, following {} at {}",
        config.path.display(),
        config.device_id,
        config.source.reference,
        config.source.url
    );
    let key = if done.key_created {
        "created"
    } else {
        "kept the existing"
    };
    eprintln!(
        "{key} device key {} (public key above)",
        config.state_dir.join("identity.key").display()
    );
    match &config.collector {
        Some(c) if c.enroll_token_file.is_some() => eprintln!(
            "enrollment: the first report presents the token in {}; or pre-register: shoal-collector register --device-id {} --key {}",
            c.enroll_token_file.as_deref().unwrap_or(Path::new("")).display(),
            config.device_id,
            done.key_id
        ),
        Some(_) => eprintln!(
            "enrollment: on the collector, shoal-collector register --device-id {} --key {}",
            config.device_id, done.key_id
        ),
        None => {}
    }
    let config_flag = if config.path == Path::new(crate::config::DEFAULT_PATH) {
        String::new()
    } else {
        format!(" --config {}", config.path.display())
    };
    eprintln!("next: shoal-agent{config_flag} doctor, then systemctl enable --now shoal-agent");
    Ok(())
}

/// Sends the device's state to the collector after a CLI sync or rollback, if one is
/// configured. A collector that is down is not a failure: the report stays queued.
fn report_after_sync(config: &AgentConfig) {
    let delivery = Reporter::new(config).and_then(|r| match r {
        Some(mut reporter) => reporter.report().map(Some),
        None => Ok(None),
    });
    match delivery {
        Ok(Some(d)) => match d.error {
            Some(e) => eprintln!(
                "report: {} delivered, {} queued for later: {e}",
                d.delivered, d.queued
            ),
            None => eprintln!("report: {} delivered to the collector", d.delivered),
        },
        Ok(None) => {}
        Err(e) => eprintln!("report: {e}"),
    }
}

/// A unix time as people read it in `status` and `history`: RFC 3339, UTC (`--json` keeps the
/// number).
fn human_time(unix: impl TryInto<i64>) -> String {
    shoal_core::release::format_rfc3339_utc(unix.try_into().unwrap_or(i64::MAX))
}

fn failed(e: impl std::fmt::Display) -> CliError {
    CliError::Failed(e.to_string())
}

/// `verify`'s `--allowed-signers` and `--revoked-keys`.
struct TrustFiles {
    allowed_signers: Option<PathBuf>,
    revoked_keys: Option<PathBuf>,
    root_threshold: Option<u32>,
}

/// The trust policy `verify` uses: `--allowed-signers`, else the agent config's; the
/// `--revoked-keys` file, else the config's (none when `--allowed-signers` stands in for it).
fn verify_policy(config_path: &Path, files: TrustFiles) -> Result<TrustPolicy, CliError> {
    let mut trust = match files.allowed_signers {
        Some(path) => TrustConfig {
            allowed_signers: path,
            verify: VerifyMode::Range,
            revoked_keys: None,
            root_threshold: 1,
        },
        None => {
            let config = AgentConfig::load(config_path)
                .map_err(|e| CliError::Usage(format!("{e}\n(or pass --allowed-signers FILE)")))?;
            TrustConfig {
                verify: VerifyMode::Range,
                ..config.trust
            }
        }
    };
    if files.revoked_keys.is_some() {
        trust.revoked_keys = files.revoked_keys;
    }
    if let Some(threshold) = files.root_threshold {
        trust.root_threshold = threshold as usize;
    }
    Ok(TrustPolicy::load(&trust)?)
}

/// `verify --release REF`: the verdict a device of the environment would reach on the release,
/// from scratch (no last release; `--since` as its applied commit) at this machine's clock.
fn verify_release_command(
    config_path: &Path,
    repo_path: &Path,
    reference: &str,
    environment: Option<&str>,
    since: Option<&str>,
    trust: TrustFiles,
    json: bool,
) -> Result<(), CliError> {
    let policy = verify_policy(config_path, trust)?;
    let repo = open_repo(repo_path)?;
    let tag = repo
        .rev_parse_single(reference)
        .map_err(|e| {
            CliError::Usage(format!(
                "cannot resolve release {reference:?}: {}",
                error_chain(&e)
            ))
        })?
        .detach();
    let from_ref = reference
        .strip_prefix(shoal_core::release::RELEASE_REF_PREFIX)
        .map(str::to_owned);
    // Without --env or a release ref, the tag's own environment: what CI checks then is the
    // signature, the format, the expiry and the commit.
    let from_tag = || {
        repo.find_object(tag).ok().and_then(|o| {
            shoal_core::release::parse_tag(&o.data)
                .ok()
                .map(|t| t.name.environment)
        })
    };
    let environment = environment
        .map(str::to_owned)
        .or(from_ref)
        .or_else(from_tag)
        .ok_or_else(|| {
            CliError::Usage(format!(
                "{reference:?} is not a release tag with an environment in its name; pass --env NAME"
            ))
        })?;
    let base = since.map(|s| resolve_commit(&repo, s)).transpose()?;
    let approvals = verify::local_approvals(&repo);
    let context = verify::ReleaseContext {
        environment: &environment,
        applied: base,
        policy: None,
        approvals: &approvals,
        last: None,
        now: i64::try_from(crate::state::unix_now()).unwrap_or(i64::MAX),
    };
    let verified = verify::verify_release(&repo, &policy, context, tag)?;
    let release = verified
        .release()
        .expect("verify_release attaches the release it accepted");
    if json {
        let value = json!({
            "release": { "environment": release.name.environment, "number": release.name.number },
            "tag": release.tag.to_string(),
            "commit": verified.commit().to_string(),
            "expires": shoal_core::release::format_rfc3339_utc(release.expires),
            "tag_principal": release.signer.principal,
            "tag_fingerprint": release.signer.fingerprint,
            "principal": verified.signer().principal,
            "commits_checked": verified.commits_checked(),
        });
        println!("{value:#}");
    } else {
        println!("{}", release.signer.principal);
        eprintln!(
            "good release {} (tag {}) by {} ({}): commit {} signed by {}, {} commit(s) checked; expires {}",
            release.name,
            release.tag,
            release.signer.principal,
            release.signer.fingerprint,
            verified.commit(),
            verified.signer().principal,
            verified.commits_checked(),
            shoal_core::release::format_rfc3339_utc(release.expires),
        );
    }
    Ok(())
}

fn release_command(
    request: &crate::release::ReleaseRequest<'_>,
    json: bool,
) -> Result<(), CliError> {
    let made = crate::release::make(request).map_err(|e| {
        if e.is_usage() {
            CliError::Usage(e.to_string())
        } else {
            failed(e)
        }
    })?;
    let expires = shoal_core::release::format_rfc3339_utc(made.expires);
    if json {
        let value = json!({
            "release": { "environment": made.name.environment, "number": made.name.number },
            "tag": made.tag,
            "commit": made.commit,
            "expires": expires,
            "pushed": made.pushed,
        });
        println!("{value:#}");
    } else {
        println!("{}", made.name);
        let where_to = if made.pushed {
            "pushed"
        } else {
            "not pushed; publish it with git push <remote> +refs/tags/NAME:refs/shoal/releases/ENV"
        };
        eprintln!(
            "made release {} (tag {}) of commit {}, expires {expires}; at {} ({where_to})",
            made.name,
            made.tag,
            made.commit,
            shoal_core::release::release_ref(&made.name.environment),
        );
    }
    Ok(())
}

fn approve_command(
    request: &crate::approve::ApproveRequest<'_>,
    json: bool,
) -> Result<(), CliError> {
    let approved = crate::approve::make(request).map_err(|e| {
        if e.is_usage() {
            CliError::Usage(e.to_string())
        } else {
            failed(e)
        }
    })?;
    if json {
        let value = json!({
            "commit": approved.commit,
            "principal": approved.name,
            "ref": approved.reference,
            "tag": approved.tag,
            "pushed": approved.pushed,
        });
        println!("{value:#}");
    } else {
        let pushed = if approved.pushed { ", pushed" } else { "" };
        eprintln!(
            "approved {} as {}: tag {} at {}{pushed}",
            approved.commit, approved.name, approved.tag, approved.reference
        );
    }
    Ok(())
}

/// What `verify` and `verify --policy` judge: the trust files, the repository, the tip, the
/// base (`--since`) and the approval tags the repository holds.
struct CheckedRange {
    policy: TrustPolicy,
    repo: gix::Repository,
    tip: ObjectId,
    base: Option<ObjectId>,
    approvals: Vec<verify::Approval>,
}

impl CheckedRange {
    fn open(
        config_path: &Path,
        repo_path: &Path,
        rev: &str,
        since: Option<&str>,
        trust: TrustFiles,
    ) -> Result<CheckedRange, CliError> {
        let policy = verify_policy(config_path, trust)?;
        let repo = open_repo(repo_path)?;
        let tip = resolve_commit(&repo, rev)?;
        let base = since.map(|s| resolve_commit(&repo, s)).transpose()?;
        let approvals = verify::local_approvals(&repo);
        Ok(CheckedRange {
            policy,
            repo,
            tip,
            base,
            approvals,
        })
    }

    /// A device at the base (`--since`), with no policy recorded yet and the repository's
    /// approval tags.
    fn anchor(&self) -> verify::Anchor<'_> {
        verify::Anchor {
            applied: self.base,
            policy: None,
            approvals: &self.approvals,
        }
    }
}

/// `verify --policy`: the policy's verdict on every path of every commit, refused ones included.
fn verify_policy_command(
    config_path: &Path,
    repo_path: &Path,
    rev: &str,
    since: Option<&str>,
    trust: TrustFiles,
    json: bool,
) -> Result<(), CliError> {
    let range = CheckedRange::open(config_path, repo_path, rev, since, trust)?;
    let tip = range.tip;
    let reports = verify::explain(&range.repo, &range.policy, &range.anchor(), tip)?;
    let refused: usize = reports
        .iter()
        .flat_map(|r| &r.paths)
        .filter(|p| !p.decision.allowed())
        .count();
    if json {
        let commits: Vec<_> = reports
            .iter()
            .map(|r| {
                json!({
                    "commit": r.commit.to_string(),
                    "signer": r.signer.principal,
                    "fingerprint": r.signer.fingerprint,
                    "approvers": r.approvers,
                    "not_counted": r.ignored_approvals,
                    "paths": r.paths.iter().map(|p| json!({
                        "path": p.path,
                        "parent": p.parent.map(|id| id.to_string()),
                        "allowed": p.decision.allowed(),
                        "by": p.decision.by,
                        "threshold": p.decision.threshold,
                        "counted": p.decision.counted,
                        "role": p.decision.role,
                    })).collect::<Vec<_>>(),
                })
            })
            .collect();
        println!(
            "{:#}",
            json!({ "tip": tip.to_string(), "refused": refused, "commits": commits })
        );
    } else {
        for report in &reports {
            let approvals = if report.approvers.is_empty() {
                String::new()
            } else {
                format!("; approved by {}", report.approvers.join(", "))
            };
            eprintln!(
                "commit {} signed by {} ({}){approvals}",
                report.commit, report.signer.principal, report.signer.fingerprint
            );
            for path in &report.paths {
                eprintln!("  {path}");
            }
            for ignored in &report.ignored_approvals {
                eprintln!("  not counted: {ignored}");
            }
        }
    }
    if refused > 0 {
        return Err(CliError::Failed(format!(
            "{refused} path change(s) under {tip} are not allowed by the policy in force at their parent; see above for the rule and the approvals each needs"
        )));
    }
    if !json {
        eprintln!(
            "every change of {} commit(s) up to {tip} is allowed by the policy",
            reports.len()
        );
    }
    Ok(())
}

fn verify_command(
    config_path: &Path,
    repo_path: &Path,
    rev: &str,
    since: Option<&str>,
    trust: TrustFiles,
    json: bool,
) -> Result<(), CliError> {
    let range = CheckedRange::open(config_path, repo_path, rev, since, trust)?;
    let tip = range.tip;
    let verified = verify::verify_update(&range.repo, &range.policy, &range.anchor(), tip)?;
    let signer = verified.signer();
    if json {
        let value = json!({
            "commit": tip.to_string(),
            "principal": signer.principal,
            "fingerprint": signer.fingerprint,
            "commits_checked": verified.commits_checked(),
        });
        println!("{value:#}");
    } else {
        println!("{}", signer.principal);
        eprintln!(
            "good signature on {tip} by {} ({}); {} commit(s) checked",
            signer.principal,
            signer.fingerprint,
            verified.commits_checked()
        );
    }
    Ok(())
}

fn render_command(
    repo_path: &Path,
    rev: Option<&str>,
    identity: &DeviceIdentity,
    json: bool,
) -> Result<(), CliError> {
    let mut policy = None;
    let (desired, commit) = match rev {
        None => (
            render::preview(&PreviewSource::Dir(repo_path), identity)?,
            None,
        ),
        Some(rev) => {
            let repo = open_repo(repo_path)?;
            let commit = resolve_commit(&repo, rev)?;
            policy = verify::policy_source(&repo, commit).map_err(failed)?;
            let tree = CommitPreview::at_commit(&repo, commit)
                .map_err(|e| CliError::Failed(format!("cannot read the tree of {commit}: {e}")))?;
            let preview = render::preview(&PreviewSource::Commit(tree), identity)?;
            (preview, Some(commit))
        }
    };
    // A device's wave depends on the commit id, so only a commit (`--rev`) has one.
    let wave = commit.and_then(|c| desired.wave(identity, &c.to_string()));
    if json {
        let mut value = desired.to_json();
        if let Some(wave) = &wave {
            value["wave"] = json!(wave);
        }
        if let Some(policy) = &policy {
            value["policy"] = json!({
                "commit": policy.commit.to_string(),
                "blob": policy.blob.to_string(),
            });
        }
        println!("{value:#}");
    } else {
        eprint!("{}", desired.summary());
        if let Some(wave) = wave {
            eprintln!(
                "rollout: wave {:?} (#{}, bucket {}), opens {}s after the release's tagger time (or after the device first verifies the commit)",
                wave.name,
                wave.index + 1,
                wave.bucket,
                wave.after.as_secs()
            );
        }
        if let Some(policy) = policy {
            eprintln!(
                "policy: {} of commit {} (blob {}); `shoal-agent verify --policy` checks who may change what",
                shoal_core::policy::POLICY_PATH,
                policy.commit,
                policy.blob
            );
        }
    }
    Ok(())
}

fn open_repo(path: &Path) -> Result<gix::Repository, CliError> {
    gix::open_opts(path, gix::open::Options::isolated()).map_err(|e| {
        CliError::Usage(format!(
            "{} is not a git repository: {}",
            path.display(),
            error_chain(&e)
        ))
    })
}

fn resolve_commit(repo: &gix::Repository, spec: &str) -> Result<ObjectId, CliError> {
    repo.rev_parse_single(spec)
        .map_err(|e| {
            CliError::Usage(format!(
                "cannot resolve revision {spec:?}: {}",
                error_chain(&e)
            ))
        })?
        .object()
        .and_then(|o| o.peel_to_commit())
        .map(|c| c.id)
        .map_err(|e| {
            CliError::Usage(format!(
                "{spec:?} does not name a commit: {}",
                error_chain(&e)
            ))
        })
}
