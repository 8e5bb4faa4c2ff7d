//! The `shoal-agent` command line: parses arguments, runs one command, and prints its result
//! (`--json` to stdout, human text to stderr). Turns nothing into exit codes itself: `main`
//! does that from [`CliError::exit_code`].

use std::path::{Path, PathBuf};
use std::sync::atomic::AtomicBool;

use clap::{Parser, Subcommand};
use gix::ObjectId;
use serde_json::json;

use crate::config::{AgentConfig, ConfigError, TrustConfig, VerifyMode};
use crate::fetch::{error_chain, Mirror};
use crate::render::{self, DeviceIdentity, DirTree, GitTree, RenderError};
use crate::state::State;
use crate::sync::{self, SyncError};
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
    /// Fetch and verify the configuration repository now, and accept its new tip.
    Sync {
        /// Fetch and verify, but change nothing on the device.
        #[arg(long)]
        dry_run: bool,
    },
    /// Show the applied commit and what the last fetch saw.
    Status {
        #[arg(long)]
        json: bool,
    },
    /// Check a commit's signature against a trust policy (for the config repo's own CI).
    Verify {
        /// The repository to check (a work tree or a bare repository).
        path: PathBuf,
        /// The commit to check.
        #[arg(long, default_value = "HEAD")]
        rev: String,
        /// Also check every commit since this one, and that REV descends from it.
        #[arg(long)]
        since: Option<String>,
        /// The allowed_signers file; defaults to `[trust] allowed_signers` of the agent config.
        #[arg(long)]
        allowed_signers: Option<PathBuf>,
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
        let bad_trust_root =
            |e: &VerifyError| matches!(e, VerifyError::Signers(_) | VerifyError::NoSigners { .. });
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
        Command::Sync { dry_run } => sync_command(&cli.config, dry_run),
        Command::Status { json } => status_command(&cli.config, json),
        Command::Verify {
            path,
            rev,
            since,
            allowed_signers,
            json,
        } => verify_command(
            &cli.config,
            &path,
            &rev,
            since.as_deref(),
            allowed_signers,
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

fn sync_command(config_path: &Path, dry_run: bool) -> Result<(), CliError> {
    let config = AgentConfig::load(config_path)?;
    let interrupt = AtomicBool::new(false);
    let outcome = sync::sync_once(&config, dry_run, &interrupt)?;
    let commit = outcome.verified.commit();
    let signer = &outcome.verified.signer().principal;
    if outcome.advanced {
        match outcome.previous {
            Some(previous) => eprintln!("accepted {commit} (signed by {signer}), was {previous}"),
            None => eprintln!("accepted {commit} (signed by {signer}), first sync"),
        }
    } else if dry_run && outcome.previous != Some(commit) {
        eprintln!("dry run: would accept {commit} (signed by {signer}); nothing changed");
    } else {
        eprintln!("up to date at {commit}");
    }
    Ok(())
}

fn status_command(config_path: &Path, json: bool) -> Result<(), CliError> {
    let config = AgentConfig::load(config_path)?;
    let state = State::open_existing(&config.state_dir);
    let applied = match &state {
        Some(s) => s
            .applied_commit()
            .map_err(|e| CliError::Failed(e.to_string()))?,
        None => None,
    };
    let fetched = state
        .as_ref()
        .filter(|s| s.mirror_dir().join("HEAD").exists())
        .and_then(|s| Mirror::open_or_init(&s.mirror_dir()).ok())
        .and_then(|m| m.fetched_tip());
    let hex = |id: Option<ObjectId>| id.map(|id| id.to_string());
    if json {
        let value = json!({
            "device_id": config.device_id,
            "source": { "url": config.source.url, "ref": config.source.reference },
            "applied_commit": hex(applied),
            "fetched_commit": hex(fetched),
        });
        println!("{value:#}");
    } else {
        eprintln!("device   {}", config.device_id);
        eprintln!("source   {} {}", config.source.url, config.source.reference);
        eprintln!(
            "applied  {}",
            hex(applied).unwrap_or_else(|| "none (never synced)".into())
        );
        eprintln!("fetched  {}", hex(fetched).unwrap_or_else(|| "none".into()));
    }
    Ok(())
}

fn verify_command(
    config_path: &Path,
    repo_path: &Path,
    rev: &str,
    since: Option<&str>,
    allowed_signers: Option<PathBuf>,
    json: bool,
) -> Result<(), CliError> {
    let trust = match allowed_signers {
        Some(path) => TrustConfig {
            allowed_signers: path,
            verify: VerifyMode::Range,
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
    let policy = TrustPolicy::load(&trust)?;
    let repo = open_repo(repo_path)?;
    let tip = resolve_commit(&repo, rev)?;
    let base = since.map(|s| resolve_commit(&repo, s)).transpose()?;
    let verified = verify::verify_update(&repo, &policy, base, tip)?;
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
    let desired = match rev {
        None => render::render(&DirTree::new(repo_path), identity)?,
        Some(rev) => {
            let repo = open_repo(repo_path)?;
            let commit = resolve_commit(&repo, rev)?;
            let tree = GitTree::at_commit(&repo, commit)
                .map_err(|e| CliError::Failed(format!("cannot read the tree of {commit}: {e}")))?;
            render::render(&tree, identity)?
        }
    };
    if json {
        println!("{:#}", desired.to_json());
    } else {
        eprint!("{}", desired.summary());
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
