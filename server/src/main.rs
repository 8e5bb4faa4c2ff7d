//! `shoal-collector`: the CLI over the collector library. `serve` runs the HTTP service (its admin
//! endpoints unpin and re-key devices and halt or resume rollouts while it runs); `register`
//! pre-registers a device key; `key` shows (or makes) the collector's own key. Either works on
//! the embedded store (`--data DIR`) or PostgreSQL (`--store postgres://...`). Turns errors into
//! messages and exit codes (0 ok, 1 failed, 2 bad usage or configuration).

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::Arc;

use anyhow::Context as _;
use clap::{Parser, Subcommand};
use shoal_collector::auth::Tokens;
use shoal_collector::collector_key::{CollectorKey, KeyFileError, KEY_FILE};
use shoal_collector::rollout::AutoHalt;
use shoal_collector::store::{migrate, PgStore, Registration, SledStore, Store};
use shoal_collector::{app, serve, AppState, Clock, Config, DEFAULT_STALE_AFTER_SECS};
use shoal_proto::KeyId;

// The collector allocates per report (the body, the decoded report, its record and history
// entry, sled's node copies) on several threads; glibc's malloc/free were about a tenth of its
// instructions per report. Only the binary: the library leaves the allocator to its users.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

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
        #[command(flatten)]
        store: StoreArgs,
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
        /// The collector's ed25519 key, which signs the halt list (32 raw bytes, mode 0600).
        /// Default with --data: DATA/collector.key, made on first start. Required with a
        /// PostgreSQL store (every replica signs with the same key): make it once with
        /// `shoal-collector key --key-file PATH --generate`.
        #[arg(long, value_name = "PATH")]
        key_file: Option<PathBuf>,
        /// Halt a commit automatically when this share (0 < R <= 1) of the devices that tried
        /// it failed or rolled back. Off unless given.
        #[arg(long, value_name = "R")]
        halt_failed_ratio: Option<f64>,
        /// ... and at least this many devices tried it (with --halt-failed-ratio).
        #[arg(
            long,
            value_name = "N",
            requires = "halt_failed_ratio",
            default_value_t = 5
        )]
        halt_min_devices: u64,
    },
    /// Print the collector's public key (`ed25519:BASE64`, for the agents' `[collector] key`):
    /// `--data DIR` (the embedded store's key, made if missing) or `--key-file PATH`
    /// (`--generate` makes a new one there; never replaces a key).
    Key {
        /// The embedded store's directory (its `collector.key`).
        #[arg(
            long,
            conflicts_with = "key_file",
            required_unless_present = "key_file"
        )]
        data: Option<PathBuf>,
        /// A key file (what PostgreSQL replicas share).
        #[arg(long, value_name = "PATH")]
        key_file: Option<PathBuf>,
        /// Make a new key in --key-file (refused when the file exists).
        #[arg(long, requires = "key_file")]
        generate: bool,
    },
    /// Pre-register a device's public key (with --data, run while the collector is stopped: sled
    /// locks the store; with --store, at any time; a running collector re-keys and unpins devices
    /// through its admin API instead).
    Register {
        #[command(flatten)]
        store: StoreArgs,
        #[arg(long)]
        device_id: String,
        /// `ed25519:BASE64` or an OpenSSH line `ssh-ed25519 AAAA...` (what `shoal-agent keygen` prints).
        #[arg(long)]
        key: String,
    },
    /// Copy an embedded store (sled, `--data DIR`; stop its collector first) into an empty
    /// PostgreSQL database, in one transaction verified by counts (printed; exit 1 on a mismatch,
    /// and nothing is kept).
    Migrate {
        /// The embedded store's directory.
        #[arg(long, value_name = "DIR")]
        from: PathBuf,
        /// The PostgreSQL database to fill (empty; its schema is created if missing). Visible in
        /// the process list: prefer --to-file or SHOAL_STORE when it holds a password.
        #[arg(long, value_name = "URL", conflicts_with = "to_file")]
        to: Option<String>,
        /// A file holding the target's URL (mode 0600 or 0400, as --store-file).
        #[arg(long, value_name = "PATH")]
        to_file: Option<PathBuf>,
        /// PEM file of the CA(s) that sign the database server's certificate.
        #[arg(long, value_name = "FILE")]
        store_ca: Option<PathBuf>,
    },
}

/// Where the collector keeps its state: `--data DIR`, or a PostgreSQL URL given by `--store`,
/// `--store-file` or the `SHOAL_STORE` environment variable (read only when no flag names a
/// store). Exactly one.
#[derive(clap::Args, Clone)]
struct StoreArgs {
    /// Directory of the embedded store (sled; created if missing; one process at a time).
    #[arg(long, conflicts_with_all = ["store", "store_file"])]
    data: Option<PathBuf>,
    /// PostgreSQL instead of the embedded store: `postgres://USER[:PASSWORD]@HOST[:PORT]/DB[?sslmode=require]`
    /// (any number of collectors may share one database). Local users see a command line in the
    /// process list: prefer --store-file or SHOAL_STORE when the URL holds a password.
    #[arg(long, value_name = "URL", conflicts_with = "store_file")]
    store: Option<String>,
    /// A file holding the PostgreSQL URL (one line; only its owner may have access: mode 0600 or
    /// 0400). Keeps a password out of the process list.
    #[arg(long, value_name = "PATH")]
    store_file: Option<PathBuf>,
    /// PEM file of the CA(s) that sign the database server's certificate (TLS with
    /// `sslmode=require`); default: the system's roots.
    #[arg(long, value_name = "FILE")]
    store_ca: Option<PathBuf>,
}

/// The environment variable that may hold the PostgreSQL URL (never shown by `--help`).
const STORE_ENV: &str = "SHOAL_STORE";

/// Where the URL came from, for messages: `--store`, `--store-file PATH`, `SHOAL_STORE`.
fn postgres_url(
    flag: Option<&str>,
    file: Option<&Path>,
    flag_name: &str,
) -> Result<Option<(String, String)>, Failure> {
    if let Some(url) = flag {
        return Ok(Some((url.to_owned(), flag_name.to_owned())));
    }
    if let Some(path) = file {
        return url_from_file(path)
            .map(|url| Some((url, format!("{flag_name}-file {}", path.display()))));
    }
    match std::env::var(STORE_ENV) {
        Ok(url) if !url.trim().is_empty() => {
            Ok(Some((url.trim().to_owned(), STORE_ENV.to_owned())))
        }
        _ => Ok(None),
    }
}

/// Whether `path` is in `$CREDENTIALS_DIRECTORY`, the directory systemd gives a service its
/// credentials in.
fn in_credentials_directory(path: &Path) -> bool {
    let Some(dir) = std::env::var_os("CREDENTIALS_DIRECTORY") else {
        return false;
    };
    match (std::fs::canonicalize(dir), std::fs::canonicalize(path)) {
        (Ok(dir), Ok(path)) => path.starts_with(dir),
        _ => false,
    }
}

/// Reads a URL file: refused (bad usage, naming the file) when its group or others have any
/// access, since the URL may hold the database password.
fn url_from_file(path: &Path) -> Result<String, Failure> {
    use std::os::unix::fs::PermissionsExt as _;
    let usage = |e: String| Failure::Usage(anyhow::anyhow!(e));
    let meta = std::fs::metadata(path).map_err(|e| {
        usage(format!(
            "cannot read the store URL file {}: {e}",
            path.display()
        ))
    })?;
    let mode = meta.permissions().mode() & 0o777;
    // systemd's credentials (LoadCredential=) are private to the service whatever their group
    // bits show: systemd grants the service's user access with an ACL, whose mask appears as
    // the group bits (0440). Others must still have none.
    let forbidden = if in_credentials_directory(path) {
        0o007
    } else {
        0o077
    };
    if mode & forbidden != 0 {
        return Err(usage(format!(
            "the store URL file {} is open to its group or others (mode {mode:04o}) and may hold the database password: chmod 600 {}",
            path.display(),
            path.display()
        )));
    }
    let text = std::fs::read_to_string(path).map_err(|e| {
        usage(format!(
            "cannot read the store URL file {}: {e}",
            path.display()
        ))
    })?;
    let lines: Vec<&str> = text
        .lines()
        .map(str::trim)
        .filter(|l| !l.is_empty())
        .collect();
    match lines.as_slice() {
        [url] => Ok((*url).to_owned()),
        [] => Err(usage(format!(
            "the store URL file {} is empty",
            path.display()
        ))),
        _ => Err(usage(format!(
            "the store URL file {} holds {} lines; it takes one URL",
            path.display(),
            lines.len()
        ))),
    }
}

impl StoreArgs {
    /// Opens the store the flags name (exit 2 for bad flags, 1 when it cannot be opened).
    fn open(&self, doing_sled: &str) -> Result<Arc<dyn Store>, Failure> {
        let url = if self.data.is_some() {
            None
        } else {
            postgres_url(self.store.as_deref(), self.store_file.as_deref(), "--store")?
        };
        match (&self.data, url) {
            (Some(data), None) => {
                if self.store_ca.is_some() {
                    return Err(Failure::Usage(anyhow::anyhow!(
                        "--store-ca is for a PostgreSQL store; --data names an embedded one"
                    )));
                }
                let store = SledStore::open(data)
                    .with_context(|| format!("opening the store in {}{doing_sled}", data.display()))
                    .map_err(Failure::Op)?;
                Ok(Arc::new(store))
            }
            (None, Some((url, from))) => {
                check_postgres_url(&url, &from)?;
                let store = PgStore::connect(&url, self.store_ca.as_deref())
                    .context("opening the store")
                    .map_err(Failure::Op)?;
                Ok(Arc::new(store))
            }
            _ => Err(Failure::Usage(anyhow::anyhow!(
                "give exactly one store: --data DIR (embedded), or PostgreSQL by --store URL, --store-file PATH or the {STORE_ENV} environment variable"
            ))),
        }
    }
}

/// A PostgreSQL URL, or bad usage naming `flag` (and not the password).
fn check_postgres_url(url: &str, flag: &str) -> Result<(), Failure> {
    if url.starts_with("postgres://") || url.starts_with("postgresql://") {
        return Ok(());
    }
    Err(Failure::Usage(anyhow::anyhow!(
        "{flag} takes a PostgreSQL URL (postgres://USER@HOST/DB), not {:?}",
        shoal_collector::store::redact_url(url)
    )))
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
            store,
            tls_cert,
            tls_key,
            token_file,
            enroll_token_file,
            admin_token_file,
            stale_after,
            key_file,
            halt_failed_ratio,
            halt_min_devices,
        } => serve_cmd(ServeArgs {
            listen,
            store,
            tls: tls_cert.zip(tls_key),
            token_file,
            enroll_token_file,
            admin_token_file,
            stale_after,
            key_file,
            auto_halt: halt_failed_ratio.map(|failed_ratio| AutoHalt {
                failed_ratio,
                min_devices: halt_min_devices,
            }),
        }),
        Command::Key {
            data,
            key_file,
            generate,
        } => key_cmd(data.as_deref(), key_file.as_deref(), generate),
        Command::Register {
            store,
            device_id,
            key,
        } => register_cmd(&store, &device_id, &key),
        Command::Migrate {
            from,
            to,
            to_file,
            store_ca,
        } => migrate_cmd(
            &from,
            to.as_deref(),
            to_file.as_deref(),
            store_ca.as_deref(),
        ),
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
    store: StoreArgs,
    tls: Option<(PathBuf, PathBuf)>,
    token_file: Option<PathBuf>,
    enroll_token_file: Option<PathBuf>,
    admin_token_file: Option<PathBuf>,
    stale_after: u64,
    key_file: Option<PathBuf>,
    auto_halt: Option<AutoHalt>,
}

/// The key file error as a failure: a bad or missing file is bad configuration (exit 2).
fn key_failure(e: KeyFileError) -> Failure {
    match e {
        KeyFileError::Io { .. } => Failure::Op(e.into()),
        _ => Failure::Usage(e.into()),
    }
}

/// The serve command's key: `--key-file` (must exist), else `DATA/collector.key` (made on
/// first start); a PostgreSQL store needs `--key-file`.
fn serve_key(store: &StoreArgs, key_file: Option<&Path>) -> Result<CollectorKey, Failure> {
    match (key_file, &store.data) {
        (Some(path), _) => CollectorKey::load(path).map_err(key_failure),
        (None, Some(data)) => CollectorKey::load_or_generate(&data.join(KEY_FILE)).map_err(key_failure),
        (None, None) => Err(Failure::Usage(anyhow::anyhow!(
            "a PostgreSQL store needs --key-file PATH: every replica signs the halt list with the same key, so it is made once (`shoal-collector key --key-file PATH --generate`) and given to each, never made by a replica on its own"
        ))),
    }
}

fn key_cmd(data: Option<&Path>, key_file: Option<&Path>, generate: bool) -> Result<(), Failure> {
    let key = match (data, key_file) {
        (_, Some(path)) if generate => CollectorKey::generate(path),
        (_, Some(path)) => CollectorKey::load(path),
        (Some(data), None) => {
            if !data.is_dir() {
                return Err(Failure::Usage(anyhow::anyhow!(
                    "--data {}: no such directory (start `shoal-collector serve --data {}` once, or create it)",
                    data.display(),
                    data.display()
                )));
            }
            CollectorKey::load_or_generate(&data.join(KEY_FILE))
        }
        (None, None) => unreachable!("clap requires --data or --key-file"),
    }
    .map_err(key_failure)?;
    if key.created {
        eprintln!("made a new collector key in {}", key.path.display());
    }
    println!("{}", key.key_id());
    Ok(())
}

fn serve_cmd(args: ServeArgs) -> Result<(), Failure> {
    if let Some(auto) = &args.auto_halt {
        if !(auto.failed_ratio > 0.0 && auto.failed_ratio <= 1.0) {
            return Err(Failure::Usage(anyhow::anyhow!(
                "--halt-failed-ratio {} is not a share above 0 and at most 1 (0.5: half the devices that tried a commit)",
                auto.failed_ratio
            )));
        }
        if auto.min_devices == 0 {
            return Err(Failure::Usage(anyhow::anyhow!(
                "--halt-min-devices 0: give at least 1 (how many devices must have tried a commit before it may be halted automatically)"
            )));
        }
    }
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
    let store = args.store.open("")?;
    let key = serve_key(&args.store, args.key_file.as_deref())?;
    // Operators paste this into every agent's `[collector] key`.
    eprintln!(
        "collector key: {} ({}{})",
        key.key_id(),
        key.path.display(),
        if key.created { ", made now" } else { "" }
    );
    tracing::info!(key = %key.key_id(), path = %key.path.display(), created = key.created, "collector key");
    match &args.auto_halt {
        Some(a) => tracing::info!(
            failed_ratio = a.failed_ratio,
            min_devices = a.min_devices,
            "automatic halt on"
        ),
        None => tracing::info!("no --halt-failed-ratio: rollouts are halted only by operators"),
    }
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
        tracing::info!(%local, tls = tls.is_some(), store = %store.describe(), "collector started");
        let state = AppState::shared(
            store,
            Config {
                read_tokens,
                enroll_tokens,
                admin_tokens,
                stale_after: args.stale_after,
                clock: Clock::System,
                collector_key: Some(key),
                auto_halt: args.auto_halt,
            },
        )
        .context("starting the ingest writer")
        .map_err(Failure::Op)?;
        let store = state.store.clone();
        let served = serve::run(listener, tls, app(state), serve::shutdown_signal()).await;
        // Writes are durable before each ack already; this makes everything else durable too.
        let flushed = store.flush();
        served.context("serving").map_err(Failure::Op)?;
        flushed
            .context("final flush of the store")
            .map_err(Failure::Op)?;
        tracing::info!("store flushed; bye");
        Ok(())
    })
}

fn register_cmd(store: &StoreArgs, device_id: &str, key: &str) -> Result<(), Failure> {
    let key_id = KeyId::parse(key).context("--key").map_err(Failure::Usage)?;
    let store = store.open(
        " (stop the collector first: the store allows one process; to re-key or unpin a device while it runs, use its admin API, PUT or DELETE /api/v1/devices/ID/key)",
    )?;
    match store.register(device_id, &key_id) {
        Ok(Registration::New) => eprintln!("registered {device_id} with key {key_id}"),
        Ok(Registration::AlreadyRegistered) => {
            eprintln!("{device_id} was already registered with key {key_id}")
        }
        Err(e) => return Err(Failure::Op(e.into())),
    }
    Ok(())
}

fn migrate_cmd(
    from: &Path,
    to: Option<&str>,
    to_file: Option<&Path>,
    ca: Option<&Path>,
) -> Result<(), Failure> {
    let Some((to, named)) = postgres_url(to, to_file, "--to")? else {
        return Err(Failure::Usage(anyhow::anyhow!(
            "name the target: --to URL, --to-file PATH or the {STORE_ENV} environment variable"
        )));
    };
    let to = to.as_str();
    check_postgres_url(to, &named)?;
    if !from.join("conf").is_file() {
        return Err(Failure::Usage(anyhow::anyhow!(
            "--from {}: not an embedded store (no sled `conf` file there)",
            from.display()
        )));
    }
    let source = SledStore::open(from)
        .with_context(|| {
            format!(
                "opening the store in {} (stop its collector first: the store allows one process)",
                from.display()
            )
        })
        .map_err(Failure::Op)?;
    let target = PgStore::connect(to, ca)
        .context("opening the target")
        .map_err(Failure::Op)?;
    eprintln!(
        "copying {} into {}...",
        source.describe(),
        target.describe()
    );
    let migrated = migrate::migrate(&source, &target)
        .context("migrating")
        .map_err(Failure::Op)?;
    let (s, t) = (migrated.source, migrated.target);
    eprintln!("{:<28}{:>12}{:>12}", "", "sled", "PostgreSQL");
    for (what, a, b) in [
        ("devices", s.devices, t.devices),
        (
            "registered, never reported",
            s.registered_only,
            t.registered_only,
        ),
        ("pinned keys", s.pins, t.pins),
        ("history entries", s.history, t.history),
        ("retired keys", s.retired, t.retired),
        (
            "fleet total (counters)",
            migrated.source_total,
            migrated.target_total,
        ),
    ] {
        eprintln!("{what:<28}{a:>12}{b:>12}");
    }
    if !migrated.source_counters_agree {
        eprintln!(
            "note: the sled store's counters disagreed with its records; the copy's were recounted from the records"
        );
    }
    eprintln!("verified: the copy holds every row of the store; committed");
    Ok(())
}
