//! `shoal-collector`: the CLI over the collector library. `serve` runs the HTTP service (its admin
//! endpoints unpin and re-key devices while it runs); `register` pre-registers a device key offline. Turns errors into messages and exit codes (0 ok, 1 failed,
//! 2 bad usage or configuration).

use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Context as _;
use clap::{Parser, Subcommand};
use shoal_collector::auth::Tokens;
use shoal_collector::store::{Registration, Store};
use shoal_collector::{app, serve, AppState, Clock, Config, DEFAULT_STALE_AFTER_SECS};
use shoal_proto::KeyId;

#[derive(Parser)]
#[command(
    name = "shoal-collector",
    version,
    about = "Collects signed convergence reports from Shoal agents and answers fleet status"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Run the collector HTTP service.
    Serve {
        /// Address to listen on (port 0 picks a free port; the chosen address is printed).
        #[arg(long, default_value = "127.0.0.1:8080")]
        listen: SocketAddr,
        /// Directory of the embedded store (created if missing).
        #[arg(long)]
        data: PathBuf,
        /// PEM certificate chain; with --tls-key, serve HTTPS.
        #[arg(long, requires = "tls_key")]
        tls_cert: Option<PathBuf>,
        /// PEM private key for --tls-cert.
        #[arg(long, requires = "tls_cert")]
        tls_key: Option<PathBuf>,
        /// File of bearer tokens (one per line) required on read endpoints.
        #[arg(long)]
        token_file: Option<PathBuf>,
        /// File of enrollment tokens (one per line) that let an unknown device key pin itself.
        #[arg(long)]
        enroll_token_file: Option<PathBuf>,
        /// File of admin bearer tokens (one per line) for unpinning and re-keying devices
        /// (`DELETE`/`PUT /api/v1/devices/{id}/key`); without it those endpoints are off.
        #[arg(long)]
        admin_token_file: Option<PathBuf>,
        /// Seconds without a report after which a device counts as stale.
        #[arg(long, default_value_t = DEFAULT_STALE_AFTER_SECS)]
        stale_after: u64,
    },
    /// Pre-register a device's public key (run while the collector is stopped: sled locks the store;
    /// a running collector re-keys and unpins devices through its admin API instead).
    Register {
        #[arg(long)]
        data: PathBuf,
        #[arg(long)]
        device_id: String,
        /// `ed25519:BASE64` or an OpenSSH line `ssh-ed25519 AAAA...` (what `shoal-agent keygen` prints).
        #[arg(long)]
        key: String,
    },
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    tracing_subscriber::fmt()
        .with_writer(std::io::stderr)
        // Colour only on a terminal: journald and log files get plain text.
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info")),
        )
        .init();
    let result = match cli.command {
        Command::Serve {
            listen,
            data,
            tls_cert,
            tls_key,
            token_file,
            enroll_token_file,
            admin_token_file,
            stale_after,
        } => serve_cmd(ServeArgs {
            listen,
            data,
            tls: tls_cert.zip(tls_key),
            token_file,
            enroll_token_file,
            admin_token_file,
            stale_after,
        }),
        Command::Register {
            data,
            device_id,
            key,
        } => register_cmd(&data, &device_id, &key),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(Failure::Usage(e)) => {
            eprintln!("shoal-collector: {e:#}");
            ExitCode::from(2)
        }
        Err(Failure::Op(e)) => {
            eprintln!("shoal-collector: {e:#}");
            ExitCode::from(1)
        }
    }
}

enum Failure {
    /// Bad flags or configuration files (exit 2).
    Usage(anyhow::Error),
    /// The operation failed (exit 1).
    Op(anyhow::Error),
}

struct ServeArgs {
    listen: SocketAddr,
    data: PathBuf,
    tls: Option<(PathBuf, PathBuf)>,
    token_file: Option<PathBuf>,
    enroll_token_file: Option<PathBuf>,
    admin_token_file: Option<PathBuf>,
    stale_after: u64,
}

fn serve_cmd(args: ServeArgs) -> Result<(), Failure> {
    let read_tokens = args
        .token_file
        .as_deref()
        .map(Tokens::load)
        .transpose()
        .map_err(|e| Failure::Usage(e.into()))?;
    let enroll_tokens = args
        .enroll_token_file
        .as_deref()
        .map(Tokens::load)
        .transpose()
        .map_err(|e| Failure::Usage(e.into()))?;
    let admin_tokens = args
        .admin_token_file
        .as_deref()
        .map(Tokens::load)
        .transpose()
        .map_err(|e| Failure::Usage(e.into()))?;
    let tls = args
        .tls
        .as_ref()
        .map(|(c, k)| serve::tls_config(c, k))
        .transpose()
        .map_err(|e| Failure::Usage(e.into()))?;
    if read_tokens.is_none() {
        tracing::warn!("no --token-file: read endpoints are open to anyone who can reach them");
    }
    if enroll_tokens.is_none() {
        tracing::info!("no --enroll-token-file: only pre-registered device keys are accepted");
    }
    if admin_tokens.is_none() {
        tracing::info!("no --admin-token-file: devices cannot be unpinned or re-keyed while the collector runs");
    }
    let store = Store::open(&args.data)
        .with_context(|| format!("opening the store in {}", args.data.display()))
        .map_err(Failure::Op)?;
    let runtime = tokio::runtime::Runtime::new()
        .context("starting the tokio runtime")
        .map_err(Failure::Op)?;
    runtime.block_on(async move {
        let listener = tokio::net::TcpListener::bind(args.listen)
            .await
            .with_context(|| format!("binding {}", args.listen))
            .map_err(Failure::Op)?;
        let local = listener
            .local_addr()
            .context("reading the bound address")
            .map_err(Failure::Op)?;
        let scheme = if tls.is_some() { "https" } else { "http" };
        // The one line on stdout: where to reach the collector (scripts and tests read it).
        println!("listening on {scheme}://{local}");
        tracing::info!(%local, tls = tls.is_some(), data = %args.data.display(), "collector started");
        let state = AppState::new(
            store,
            Config {
                read_tokens,
                enroll_tokens,
                admin_tokens,
                stale_after: args.stale_after,
                clock: Clock::System,
            },
        )
        .context("starting the ingest writer")
        .map_err(Failure::Op)?;
        let store = state.store.clone();
        let served = serve::run(listener, tls, app(state), serve::shutdown_signal()).await;
        // Writes are durable before each ack already; this makes everything else durable too.
        let flushed = store.flush();
        served.context("serving").map_err(Failure::Op)?;
        flushed.context("final flush of the store").map_err(Failure::Op)?;
        tracing::info!("store flushed; bye");
        Ok(())
    })
}

fn register_cmd(data: &std::path::Path, device_id: &str, key: &str) -> Result<(), Failure> {
    let key_id = KeyId::parse(key).context("--key").map_err(Failure::Usage)?;
    let store = Store::open(data)
        .with_context(|| {
            format!(
                "opening the store in {} (stop the collector first: the store allows one process; to re-key or unpin a device while it runs, use its admin API, PUT or DELETE /api/v1/devices/ID/key)",
                data.display()
            )
        })
        .map_err(Failure::Op)?;
    match store.register(device_id, &key_id) {
        Ok(Registration::New) => eprintln!("registered {device_id} with key {key_id}"),
        Ok(Registration::AlreadyRegistered) => {
            eprintln!("{device_id} was already registered with key {key_id}")
        }
        Err(e) => return Err(Failure::Op(e.into())),
    }
    Ok(())
}
