//! Fetch: keeps a bare mirror of the configuration repository in `state_dir` up to date with
//! the tracked ref. The only module that talks to the network for git. It decides nothing about
//! trust: what it brings in is unverified until `verify` says otherwise, and it never touches
//! the device's managed files.

use std::path::{Path, PathBuf};
use std::sync::atomic::AtomicBool;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use gix::remote::Direction;

use crate::config::SourceConfig;
use crate::paths;

/// Where the fetched (not yet verified) tip of the tracked ref is kept in the mirror.
pub const FETCHED_REF: &str = "refs/shoal/fetched";

#[derive(Debug, thiserror::Error)]
pub enum FetchError {
    #[error("cannot open the local mirror {}: {message}; it will be rebuilt if you delete it", path.display())]
    Mirror { path: PathBuf, message: String },
    #[error("cannot reach the config repository {url} after {attempts} attempt(s): {message}; check the network, the URL and the server")]
    Unreachable {
        url: String,
        attempts: u32,
        message: String,
    },
    #[error("the config repository {url} has no ref {reference}; check [source] ref in the agent config and that the branch was pushed")]
    RefNotFound { url: String, reference: String },
    #[error("cannot use the CA file {}: {message}", path.display())]
    CaFile { path: PathBuf, message: String },
}

/// The outcome of one fetch.
#[derive(Debug, Clone)]
pub struct Fetched {
    /// The commit the remote's ref points at (now present in the mirror with its history).
    pub tip: gix::ObjectId,
    /// Whether objects were downloaded; `false` means the ref advertisement was all it cost.
    pub received_pack: bool,
    pub elapsed: Duration,
}

/// The agent's private bare clone of the configuration repository.
pub struct Mirror {
    repo: gix::Repository,
}

impl Mirror {
    /// Opens the mirror at `dir`, creating an empty bare repository on first use.
    pub fn open_or_init(dir: &Path) -> Result<Self, FetchError> {
        let failed = |message: String| FetchError::Mirror {
            path: dir.to_owned(),
            message,
        };
        if !dir.join("HEAD").exists() {
            paths::create_dir_all(dir).map_err(|e| failed(e.to_string()))?;
            gix::init_bare(dir).map_err(|e| failed(error_chain(&e)))?;
        }
        // Isolated: a device's behaviour must not depend on whatever git config or GIT_*
        // environment happens to exist on it.
        // Protocol v1: its ref advertisement is the reply to the first request, so a sync with
        // nothing new costs exactly one round trip (v2 needs a second one for ls-refs). Config
        // repos have few refs, so v1 advertising all of them costs little.
        let options = gix::open::Options::isolated().config_overrides(["protocol.version=1"]);
        let repo = gix::open_opts(dir, options).map_err(|e| failed(error_chain(&e)))?;
        Ok(Mirror { repo })
    }

    pub fn repo(&self) -> &gix::Repository {
        &self.repo
    }

    /// The tip recorded by the last successful fetch, if any.
    pub fn fetched_tip(&self) -> Option<gix::ObjectId> {
        self.repo
            .try_find_reference(FETCHED_REF)
            .ok()
            .flatten()
            .and_then(|r| r.try_id().map(|id| id.detach()))
    }

    /// Brings the mirror up to date with `source.reference`, retrying transient failures
    /// with exponential backoff. With nothing new on the remote this is one ref
    /// advertisement and no object transfer.
    pub fn fetch(
        &self,
        source: &SourceConfig,
        interrupt: &AtomicBool,
    ) -> Result<Fetched, FetchError> {
        // reqwest is built without a compiled-in crypto provider (its default would pull
        // aws-lc); make ring the process default so plain http:// clients build too.
        let _ = rustls::crypto::ring::default_provider().install_default();
        let tls = match source.ca_file.as_deref() {
            Some(path) => Some(client_tls_config(Some(path))?),
            None if is_https(&source.url) => Some(client_tls_config(None)?),
            None => None,
        };
        let mut attempt = 0;
        loop {
            attempt += 1;
            match self.fetch_once(source, tls.clone(), interrupt) {
                Ok(fetched) => return Ok(fetched),
                Err(Attempt::Fatal(e)) => return Err(e),
                Err(Attempt::Transient(message)) if attempt > source.retries => {
                    return Err(FetchError::Unreachable {
                        url: source.url.clone(),
                        attempts: attempt,
                        message,
                    })
                }
                Err(Attempt::Transient(message)) => {
                    let backoff = Duration::from_millis(500) * 2u32.saturating_pow(attempt - 1);
                    tracing::warn!(attempt, %message, ?backoff, "fetch failed, retrying");
                    std::thread::sleep(backoff.min(Duration::from_secs(30)));
                }
            }
        }
    }

    fn fetch_once(
        &self,
        source: &SourceConfig,
        tls: Option<Arc<rustls::ClientConfig>>,
        interrupt: &AtomicBool,
    ) -> Result<Fetched, Attempt> {
        let started = Instant::now();
        let transient = |e: gix::Error| Attempt::Transient(error_chain(&e));
        let refspec = format!("+{}:{}", source.reference, FETCHED_REF);
        let remote = self
            .repo
            .remote_at(source.url.as_str())
            .map_err(|e| {
                Attempt::Fatal(FetchError::Unreachable {
                    url: source.url.clone(),
                    attempts: 1,
                    message: format!("invalid URL: {}", error_chain(&e)),
                })
            })?
            .with_refspecs([refspec.as_str()], Direction::Fetch)
            .map_err(|e| Attempt::Transient(error_chain(&e)))?;
        let mut connection = remote.connect(Direction::Fetch).map_err(transient)?;
        if let Some(tls) = tls {
            let options = self.http_options(&source.url, tls, source.timeout);
            connection.set_transport_options(options);
        }
        let prepare = connection
            .prepare_fetch(gix::progress::Discard, Default::default())
            .map_err(transient)?;
        let Some(mapping) = prepare.ref_map().mappings.first() else {
            return Err(Attempt::Fatal(FetchError::RefNotFound {
                url: source.url.clone(),
                reference: source.reference.clone(),
            }));
        };
        // Nothing new: stop after the ref advertisement. Going on to `receive` would take (and
        // drop) a ref lock in the mirror, and a no-op sync must not write to disk.
        let advertised = mapping.remote.as_id().map(|id| id.to_owned());
        if let Some(tip) = advertised.filter(|id| Some(*id) == self.fetched_tip()) {
            return Ok(Fetched {
                tip,
                received_pack: false,
                elapsed: started.elapsed(),
            });
        }
        let outcome = prepare
            .receive(gix::progress::Discard, interrupt)
            .map_err(transient)?;
        let received_pack = matches!(outcome.status, gix::remote::fetch::Status::Change { .. });
        let tip = self.fetched_tip().ok_or_else(|| {
            Attempt::Fatal(FetchError::RefNotFound {
                url: source.url.clone(),
                reference: source.reference.clone(),
            })
        })?;
        Ok(Fetched {
            tip,
            received_pack,
            elapsed: started.elapsed(),
        })
    }

    /// gix's HTTP options for `url`, with our rustls (ring) configuration and deadlines
    /// handed to its reqwest backend.
    fn http_options(
        &self,
        url: &str,
        tls: Arc<rustls::ClientConfig>,
        timeout: Duration,
    ) -> Box<dyn std::any::Any> {
        use gix::protocol::transport::client::blocking_io::http;
        let mut options = self
            .repo
            .transport_options(url, None)
            .ok()
            .flatten()
            .and_then(|o| o.downcast::<http::Options>().ok())
            .map(|o| *o)
            .unwrap_or_default();
        options.connect_timeout = Some(timeout);
        // Abort a transfer that stalls below 1 byte/s for `timeout`, like git's lowSpeed*.
        options.low_speed_limit_bytes_per_second = 1;
        options.low_speed_time_seconds = timeout.as_secs().max(1);
        let backend = http::reqwest::Options {
            configure_client: Some(Box::new(move |builder| {
                Ok(builder
                    .tls_backend_preconfigured((*tls).clone())
                    .connect_timeout(timeout))
            })),
            configure_request: None,
        };
        options.backend = Some(Arc::new(Mutex::new(backend)));
        Box::new(options)
    }
}

enum Attempt {
    Transient(String),
    Fatal(FetchError),
}

fn is_https(url: &str) -> bool {
    url.get(..8)
        .is_some_and(|s| s.eq_ignore_ascii_case("https://"))
}

/// A rustls client config on the `ring` provider, trusting either the CA certificates in
/// `ca_file` (a pinned private CA) or the system's root store.
pub fn client_tls_config(ca_file: Option<&Path>) -> Result<Arc<rustls::ClientConfig>, FetchError> {
    use rustls::pki_types::{pem::PemObject, CertificateDer};
    let mut roots = rustls::RootCertStore::empty();
    match ca_file {
        Some(path) => {
            let failed = |message: String| FetchError::CaFile {
                path: path.to_owned(),
                message,
            };
            let pem = paths::read(path).map_err(|e| failed(e.to_string()))?;
            for cert in CertificateDer::pem_slice_iter(&pem) {
                let cert = cert.map_err(|e| failed(format!("not a PEM certificate file: {e}")))?;
                roots.add(cert).map_err(|e| failed(e.to_string()))?;
            }
            if roots.is_empty() {
                return Err(failed("contains no certificate".into()));
            }
        }
        None => {
            let native = rustls_native_certs::load_native_certs();
            roots.add_parsable_certificates(native.certs);
        }
    }
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let config = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| FetchError::CaFile {
            path: ca_file.unwrap_or(Path::new("<system roots>")).to_owned(),
            message: e.to_string(),
        })?
        .with_root_certificates(roots)
        .with_no_client_auth();
    Ok(Arc::new(config))
}

/// Renders an error and its sources as one line, skipping repeated messages.
pub fn error_chain(error: &(dyn std::error::Error + 'static)) -> String {
    let mut parts: Vec<String> = Vec::new();
    let mut next = Some(error);
    while let Some(e) = next {
        let text = e.to_string();
        if !parts.iter().any(|p| p.contains(&text)) {
            parts.push(text);
        }
        next = e.source();
    }
    parts.join(": ")
}
