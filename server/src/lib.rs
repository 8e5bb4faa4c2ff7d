//! The Shoal collector as a library: `app(state)` is the whole HTTP API as an axum `Router` (tests
//! drive it without a socket), `serve` runs it on a listener with optional TLS and graceful
//! shutdown, and `store` is the only module that opens a store (sled or PostgreSQL, behind the
//! `Store` trait).

pub mod api;
pub mod auth;
mod batch;
pub mod collector_key;
pub mod metrics;
pub mod page;
pub mod page_rollouts;
pub mod rollouts;
pub mod serve;
pub mod signers;
pub mod store;
pub mod writer;

// The decisions and the tally live in the pure crate `shoal-fleet`; the store's and the API's
// signatures take and return its types, so the library's users (its tests, shoal-loadgen) reach
// them here too, without a dependency of their own.
pub use shoal_fleet::{ingest, keys, record, rollout, tally};

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

pub use api::{app, ApiError};

use auth::Tokens;
use collector_key::CollectorKey;
use metrics::Metrics;
use rollouts::Rollouts;
use shoal_fleet::rollout::AutoHalt;
use signers::Signers;
use store::Store;
use writer::Writer;

/// Default stale threshold: three missed 60 s sync intervals.
pub const DEFAULT_STALE_AFTER_SECS: u64 = 180;

/// Where "now" comes from: the system clock, or a hand-set one for tests.
#[derive(Debug, Clone, Default)]
pub enum Clock {
    #[default]
    System,
    Manual(Arc<AtomicU64>),
}

impl Clock {
    /// Unix seconds.
    pub fn now(&self) -> u64 {
        match self {
            Clock::System => std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map_or(0, |d| d.as_secs()),
            Clock::Manual(t) => t.load(Ordering::Relaxed),
        }
    }
}

/// How the collector is configured (everything but the listener).
#[derive(Debug, Clone)]
pub struct Config {
    /// Bearer tokens required on read endpoints; `None`: reads are open.
    pub read_tokens: Option<Tokens>,
    /// Tokens that let an unknown key enroll; `None`: only pre-registered keys are accepted.
    pub enroll_tokens: Option<Tokens>,
    /// Bearer tokens of the admin endpoints (unpin, re-key); they also pass the read gate.
    /// `None`: the admin endpoints are off.
    pub admin_tokens: Option<Tokens>,
    /// Seconds without a report after which a device counts as stale.
    pub stale_after: u64,
    pub clock: Clock,
    /// The key that signs the halt list; `None`: a key made in memory for this process (tests,
    /// benchmarks: devices cannot pin it across restarts).
    pub collector_key: Option<CollectorKey>,
    /// The automatic halt's threshold; `None`: off.
    pub auto_halt: Option<AutoHalt>,
}

impl Default for Config {
    fn default() -> Config {
        Config {
            read_tokens: None,
            enroll_tokens: None,
            admin_tokens: None,
            stale_after: DEFAULT_STALE_AFTER_SECS,
            clock: Clock::System,
            collector_key: None,
            auto_halt: None,
        }
    }
}

/// Everything a request handler may use.
pub struct AppState {
    pub store: Arc<dyn Store>,
    pub writer: Writer,
    /// Decompressed keys of the devices that report (decoding an envelope looks its key up here).
    pub signers: Signers,
    pub config: Config,
    pub metrics: Metrics,
    pub rollouts: Arc<Rollouts>,
}

impl AppState {
    /// Starts the ingest writer thread for `store` (it also checks the reports' signatures).
    pub fn new(store: impl Store + 'static, config: Config) -> std::io::Result<Arc<AppState>> {
        AppState::shared(Arc::new(store), config)
    }

    /// `new` for a store already shared (several app instances over one store in tests).
    pub fn shared(store: Arc<dyn Store>, config: Config) -> std::io::Result<Arc<AppState>> {
        let key = match &config.collector_key {
            Some(key) => key.clone(),
            None => in_memory_key()?,
        };
        let rollouts = Rollouts::start(key, config.auto_halt, store.clone(), config.clock.clone())
            .map_err(std::io::Error::other)?;
        let hook = rollouts.clone();
        Ok(Arc::new(AppState {
            writer: Writer::spawn_with(store.clone(), move |tried| hook.after_batch(tried))?,
            signers: Signers::default(),
            store,
            config,
            metrics: Metrics::default(),
            rollouts,
        }))
    }
}

/// A collector key that lives only as long as the process (no `collector_key` configured).
fn in_memory_key() -> std::io::Result<CollectorKey> {
    use std::io::Read as _;
    let mut seed = [0u8; 32];
    std::fs::File::open("/dev/urandom")?.read_exact(&mut seed)?;
    Ok(CollectorKey {
        signing: ed25519_dalek::SigningKey::from_bytes(&seed),
        path: "(in memory)".into(),
        created: true,
    })
}
