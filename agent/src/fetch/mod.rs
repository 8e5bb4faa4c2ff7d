//! Fetch: keeps a bare mirror of the configuration repository in `state_dir` up to date with
//! the tracked ref. The only module that talks to the network for git. It decides nothing about
//! trust: what it brings in is unverified until `verify` says otherwise, and it never touches
//! the device's managed files. What one fetch may receive before that verdict is bounded
//! (`bound`: `max_fetch` bytes, no object over `max_object`). The mirror's ref moves only to a
//! tip `verify` accepted ([`Mirror::accept`], after the objects are on disk: `durable`); what a
//! refused tip brought is removed ([`Mirror::discard`]). The mirror is a cache: one found
//! damaged (`inspect`) is rebuilt from scratch within the same fetch.

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use gix::protocol::transport::client::blocking_io::{connect, Transport};
use gix::remote::Direction;
use gix::ObjectId;

use crate::config::{self, SourceConfig};
use crate::credential::Credential;
use crate::errors::error_chain;
use crate::paths::{self, PathError};
use crate::proxy::{self, ProxyError};
use crate::state::MirrorDir;
use crate::tls::{self, TlsError};
use crate::verify::{Approval, APPROVAL_PREFIX};

mod bound;
mod bundle;
mod durable;
mod failure;
mod inspect;
mod progress;
mod ssh;

pub use bound::Exceeded;
pub use bundle::BundleError;
pub use inspect::Damage;

/// Where the fetched (not yet verified) tip of the tracked ref is kept in the mirror.
pub const FETCHED_REF: &str = "refs/shoal/fetched";

/// The approval tags. gix fetches a pattern only with a destination, so their refs land under
/// [`APPROVAL_REFS`] and are deleted as soon as the fetch returns (and at every open, after a
/// crash in between): what counts is the advertisement, and a ref into a pack that `discard`
/// removes would read as damage.
const APPROVAL_REFSPEC: &str = "+refs/tags/shoal-approve/*:refs/shoal/approve/*";
const APPROVAL_REFS: &str = "refs/shoal/approve/";

/// Deletes the refs a fetch of approval tags left (see [`APPROVAL_REFSPEC`]).
fn drop_approval_refs(repo: &gix::Repository) -> Result<(), gix::Error> {
    let references = repo.references().map_err(gix::Error::from_error)?;
    let refs: Vec<_> = references
        .prefixed(APPROVAL_REFS)
        .map_err(gix::Error::from_error)?
        .filter_map(Result::ok)
        .collect();
    for reference in refs {
        reference.delete().map_err(gix::Error::from_error)?;
    }
    Ok(())
}

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
    #[error("cannot resolve the host of the config repository {url} after {attempts} attempt(s) (DNS): {message}; check the host name in [source] url and the device's DNS resolver")]
    Dns {
        url: String,
        attempts: u32,
        message: String,
    },
    #[error("the TLS handshake with the config repository {url} failed: {message}; check that the server's certificate is valid for its name and signed by a CA the device trusts ([source] ca_file, else the system roots)")]
    TlsHandshake { url: String, message: String },
    #[error("the config repository {url} refused the TLS client authentication of {identity}: {message}; the server wants a client certificate signed by a CA it trusts: set [source] client_cert and client_key to one it accepts")]
    ClientCertificate {
        url: String,
        identity: String,
        message: String,
    },
    #[error("the config repository {url} requires authentication (HTTP 401) and no credential is configured; set [source] auth_file to a file holding a token or a user name and password")]
    AuthenticationRequired { url: String },
    #[error("authentication failed at the config repository {url} (HTTP 401) with {credential}; the token or password is wrong, expired or revoked: put a valid one in that file")]
    AuthenticationFailed { url: String, credential: String },
    #[error("the config repository {url} refused access (HTTP 403) to {credential}; give it read access to the repository on the server")]
    Forbidden { url: String, credential: String },
    #[error("the config repository {url} does not exist, or {credential} has no access to it (HTTP 404); check [source] url and the credential's access on the server")]
    NotFound { url: String, credential: String },
    #[error("the config repository {url} uses SHA-256 object ids (made with git init --object-format=sha256), which this agent does not support: its git library (gix 0.90) is built with SHA-1 only, and its SHA-256 support is not yet complete enough to verify and apply on a device; serve the configuration from a SHA-1 repository (git's default)")]
    Sha256Unsupported { url: String },
    #[error("the SSH host key of {host} does not match the one pinned for it in {}: pinned {pinned}, offered by the server {offered}; nothing was fetched. If the server's key was replaced on purpose, check the new fingerprint with the server's operator and put the new key's line in that file; otherwise someone may be intercepting the connection", known_hosts.display())]
    HostKeyChanged {
        url: String,
        host: String,
        known_hosts: PathBuf,
        pinned: String,
        offered: String,
    },
    #[error("the SSH host {host} of the config repository {url} has no key pinned in {}, and the agent trusts no other; nothing was fetched. Add the server's line to that file (`ssh-keyscan -p PORT HOST`, its fingerprint checked against the one the server's operator gives you)", known_hosts.display())]
    UnknownHost {
        url: String,
        host: String,
        known_hosts: PathBuf,
    },
    #[error("authentication failed at the config repository {url} (SSH) with the deploy key {}; give the repository the key's public half (`ssh-keygen -y -f FILE`) as a read-only deploy key, or put the key the server knows in that file", key.display())]
    SshAuthenticationFailed { url: String, key: PathBuf },
    #[error("the config repository {url} answered with a redirect, which the agent does not follow while a credential is configured (the credential is sent only to the configured origin); set [source] url to the repository's final address")]
    Redirected { url: String },
    #[error(transparent)]
    Tls(#[from] TlsError),
    #[error(transparent)]
    Proxy(#[from] ProxyError),
    #[error("{proxy} is unreachable: the config repository {url} could not be contacted through it after {attempts} attempt(s): {message}; check that the proxy runs and that the device can reach it, or correct the setting")]
    ProxyUnreachable {
        url: String,
        proxy: String,
        attempts: u32,
        message: String,
    },
    #[error("{proxy} refused or failed the CONNECT to the config repository {url} after {attempts} attempt(s): {message}; check that it accepts {credential} and allows CONNECT to that host and port")]
    ProxyTunnel {
        url: String,
        proxy: String,
        credential: String,
        attempts: u32,
        message: String,
    },
    #[error("{proxy} requires authentication (HTTP 407) and refused {credential}; put a valid credential in its proxy_auth_file")]
    ProxyAuthentication {
        url: String,
        proxy: String,
        credential: String,
    },
    #[error("the local mirror {} is damaged ({damage}) and could not be set aside to rebuild it: {source}; check the state directory's permissions and disk", path.display())]
    SetAside {
        path: PathBuf,
        damage: Box<Damage>,
        #[source]
        source: PathError,
    },
    #[error("the local mirror {} was damaged ({first}), was rebuilt from {url}, and is damaged again: {again}; check the disk, and that the server's repository is complete (git fsck)", path.display())]
    StillDamaged {
        path: PathBuf,
        url: String,
        first: Box<Damage>,
        again: Box<Damage>,
    },
    #[error("{reason}; the fetch from {url} was stopped, nothing it sent is kept and the device is unchanged; {}", reason.advice())]
    Refused { url: String, reason: Exceeded },
    #[error(transparent)]
    Bundle(#[from] BundleError),
    #[error("the local mirror {} is damaged ({damage}); a bundle cannot rebuild it unless it holds the whole history: sync from the server once, or make a whole bundle (`git bundle create FILE REF`)", path.display())]
    DamagedForBundle { path: PathBuf, damage: Box<Damage> },
    #[error(
        "cannot record the fetched tip {tip} durably in the local mirror: {source}; check the disk"
    )]
    Record {
        tip: ObjectId,
        #[source]
        source: PathError,
    },
}

impl FetchError {
    /// Whether the server sent what the agent refuses to take before the signature can be
    /// checked (a refusal of the push, not a failure to be retried).
    pub fn is_refusal(&self) -> bool {
        match self {
            FetchError::Refused { .. } => true,
            FetchError::Bundle(e) => e.is_refusal(),
            _ => false,
        }
    }
}

/// The outcome of one fetch: a tip not yet verified. `refs/shoal/fetched` has not moved; the
/// caller settles it with [`Mirror::accept`] or [`Mirror::discard`].
#[derive(Debug, Clone)]
pub struct Fetched {
    /// The commit the remote's ref points at (now present in the mirror with its history).
    pub tip: gix::ObjectId,
    /// Whether objects were downloaded; `false` means the ref advertisement was all it cost.
    pub received_pack: bool,
    pub elapsed: Duration,
    /// Why the mirror was found damaged and rebuilt from scratch during this fetch, if it was.
    /// The fetch still succeeded; the caller reports the healing.
    pub healed: Option<String>,
    /// The approval tags (`refs/tags/shoal-approve/<commit>/<name>`) the server advertised in
    /// the same ref advertisement, their tag objects fetched with the tip; none from a bundle.
    pub approvals: Vec<Approval>,
}

/// The agent's private bare clone of the configuration repository. A cache: it may be deleted
/// at any time, and it is rebuilt from scratch when found damaged.
pub struct Mirror {
    dir: PathBuf,
    repo: gix::Repository,
    /// `refs/shoal/fetched` as found (and checked readable) when the mirror was opened.
    recorded: Option<ObjectId>,
}

/// Why an attempt on the mirror stopped.
enum Failure {
    /// The mirror is damaged: set it aside and build a new one.
    Damaged(Damage),
    Fatal(FetchError),
}

impl From<Damage> for Failure {
    fn from(damage: Damage) -> Self {
        Failure::Damaged(damage)
    }
}

impl Mirror {
    /// Opens the mirror at `dir` as it is, for reading (`status`): `None` when there is none
    /// or it cannot be opened. Never creates, checks or repairs anything.
    pub fn open_existing(dir: &Path) -> Option<Self> {
        let repo = open_isolated(dir).ok()?;
        let recorded = repo
            .try_find_reference(FETCHED_REF)
            .ok()
            .flatten()
            .and_then(|r| r.try_id().map(|id| id.detach()));
        Some(Mirror {
            dir: dir.to_owned(),
            repo,
            recorded,
        })
    }

    pub fn repo(&self) -> &gix::Repository {
        &self.repo
    }

    /// The tip of the last fetch `verify` accepted, if any.
    pub fn fetched_tip(&self) -> Option<gix::ObjectId> {
        self.recorded
    }

    /// Opens the mirror (making it on first use) and fetches the tip of
    /// `source.reference` into it, retrying transient network failures with exponential backoff.
    /// With nothing new on the remote this is one ref advertisement, no object transfer and no
    /// write. The tip is not recorded yet: [`Mirror::accept`] it once `verify` has, or
    /// [`Mirror::discard`] what it brought. A fetch past its bounds (`max_fetch`, `max_object`)
    /// is stopped, not retried, and keeps nothing ([`FetchError::Refused`]).
    ///
    /// `applied` is the device's watermark: the history from the fetched tip down to it is what
    /// `verify` will read, so it must be readable here. A damaged mirror (see [`Damage`]) is
    /// logged, set aside, and built again from scratch once in the same call; the outcome's
    /// `healed` says why. Nothing outside the mirror (the watermark, generations) is touched.
    pub fn fetch(
        mirror: &MirrorDir<'_>,
        source: &SourceConfig,
        applied: Option<ObjectId>,
        interrupt: &AtomicBool,
    ) -> Result<(Mirror, Fetched), FetchError> {
        let dir = mirror.path();
        // reqwest is built without a compiled-in crypto provider (its default would pull
        // aws-lc); make ring the process default so plain http:// clients build too.
        let _ = rustls::crypto::ring::default_provider().install_default();
        let link = Link::for_source(source)?;
        let mut healed: Option<Damage> = None;
        loop {
            let attempt = Mirror::open_checked(dir, applied).and_then(|mirror| {
                let fetched = mirror.fetch_retrying(source, &link, applied, interrupt)?;
                Ok((mirror, fetched))
            });
            let damage = match attempt {
                Ok((mirror, mut fetched)) => {
                    fetched.healed = healed.map(|d| d.to_string());
                    return Ok((mirror, fetched));
                }
                Err(Failure::Fatal(e)) => return Err(e),
                Err(Failure::Damaged(damage)) => damage,
            };
            if let Some(first) = healed {
                return Err(FetchError::StillDamaged {
                    path: dir.to_owned(),
                    url: source.url.clone(),
                    first: Box::new(first),
                    again: Box::new(damage),
                });
            }
            tracing::warn!(
                mirror = %dir.display(),
                %damage,
                "the local mirror is damaged; rebuilding it from the config repository"
            );
            durable::set_aside(dir).map_err(|source| FetchError::SetAside {
                path: dir.to_owned(),
                damage: Box::new(damage.clone()),
                source,
            })?;
            healed = Some(damage);
        }
    }

    /// Like [`Mirror::fetch`], from a `git bundle` file instead of the server: no network. The
    /// bundle's pack goes through the same bounds and lands marked unaccepted, so `verify`,
    /// [`Mirror::accept`] and [`Mirror::discard`] work on it as on a fetch. A damaged mirror is
    /// not rebuilt from a bundle (it may hold only the newest commits): the error says so.
    pub fn from_bundle(
        mirror: &MirrorDir<'_>,
        bundle_path: &Path,
        source: &SourceConfig,
        applied: Option<ObjectId>,
        interrupt: &AtomicBool,
    ) -> Result<(Mirror, Fetched), FetchError> {
        let started = Instant::now();
        let dir = mirror.path();
        let mirror = match Mirror::open_checked(dir, applied) {
            Ok(mirror) => mirror,
            Err(Failure::Fatal(e)) => return Err(e),
            Err(Failure::Damaged(damage)) => {
                return Err(FetchError::DamagedForBundle {
                    path: dir.to_owned(),
                    damage: Box::new(damage),
                })
            }
        };
        let limits = bound::Limits {
            max_fetch: source.max_fetch,
            max_object: source.max_object,
        };
        let tip = bundle::import(
            &mirror.repo,
            dir,
            bundle_path,
            &source.reference,
            limits,
            interrupt,
        )?;
        // What the pack brought must read back like a fetched tip (a bundle cut short, say).
        let repo = open_isolated(dir).map_err(|e| FetchError::Mirror {
            path: dir.to_owned(),
            message: error_chain(&e),
        })?;
        if let Err(damage) = inspect::tip(&repo, tip, applied) {
            mirror.discard();
            return Err(FetchError::Bundle(BundleError::Write {
                path: bundle_path.to_owned(),
                message: format!("what it holds does not read back: {damage}"),
            }));
        }
        let mirror = Mirror { repo, ..mirror };
        Ok((
            mirror,
            Fetched {
                tip,
                received_pack: true,
                elapsed: started.elapsed(),
                healed: None,
                approvals: Vec::new(),
            },
        ))
    }

    /// Opens the mirror at `dir`, making an empty bare repository if there is none, and checks
    /// what later steps will read: HEAD, the recorded ref, the packs, the recorded tip's commit,
    /// tree and history down to `applied`. Reads only (unless it creates the mirror).
    fn open_checked(dir: &Path, applied: Option<ObjectId>) -> Result<Self, Failure> {
        if let Err(e) = durable::remove_leftover(dir) {
            // Only disk space is at stake; the mirror itself is not.
            tracing::warn!(error = %e, "cannot remove a mirror set aside earlier");
        }
        let failed = |message: String| {
            Failure::Fatal(FetchError::Mirror {
                path: dir.to_owned(),
                message,
            })
        };
        // Only a missing directory means "first use". A directory without HEAD is a mirror
        // whose creation (or something after it) was cut short: damage, rebuilt like any other.
        if !dir.exists() {
            paths::create_dir_all(dir).map_err(|e| failed(e.to_string()))?;
            gix::init_bare(dir).map_err(|e| failed(error_chain(&e)))?;
        }
        // What a crash between a fetch and `verify`'s verdict left: a pack no accepted tip names.
        // Removed before the damage checks, so that it is neither taken for damage nor kept.
        match durable::remove_unaccepted(dir) {
            Ok(removed) if !removed.is_empty() => {
                tracing::info!(packs = ?removed, "removed packs of a tip that was never accepted");
            }
            Ok(_) => {}
            Err(e) => return Err(failed(e.to_string())),
        }
        let repo = open_isolated(dir).map_err(|e| Damage::Open {
            path: dir.to_owned(),
            message: error_chain(&e),
        })?;
        drop_approval_refs(&repo).map_err(|e| Damage::Open {
            path: dir.to_owned(),
            message: error_chain(&e),
        })?;
        let recorded = inspect::repository(&repo, dir)?;
        if let Some(tip) = recorded {
            inspect::tip(&repo, tip, applied)?;
        }
        Ok(Mirror {
            dir: dir.to_owned(),
            repo,
            recorded,
        })
    }

    fn fetch_retrying(
        &self,
        source: &SourceConfig,
        link: &Link,
        applied: Option<ObjectId>,
        interrupt: &AtomicBool,
    ) -> Result<Fetched, Failure> {
        let mut attempt = 0;
        loop {
            attempt += 1;
            match self.fetch_once(source, link, applied, interrupt) {
                Ok(fetched) => return Ok(fetched),
                Err(Attempt::Fatal(e)) => return Err(Failure::Fatal(e)),
                Err(Attempt::Damaged(damage)) => return Err(Failure::Damaged(damage)),
                Err(Attempt::Transient(message)) if attempt > source.retries => {
                    return Err(Failure::Fatal(failure::unreachable(
                        source,
                        link.proxy.as_ref(),
                        attempt,
                        message,
                    )))
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
        link: &Link,
        applied: Option<ObjectId>,
        interrupt: &AtomicBool,
    ) -> Result<Fetched, Attempt> {
        let started = Instant::now();
        let transient = |e: gix::Error| Attempt::Transient(error_chain(&e));
        // No destination: gix writes the objects and no ref. The ref moves in `accept`, once
        // `verify` has accepted the tip and the objects are on disk.
        let refspec = format!("+{}", source.reference);
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
            // Tags are not followed, and fetching them would write refs gix does not sync; the
            // approval tags the policy counts come by their own refspec, in the same
            // advertisement (no round trip more), their objects without refs.
            .with_fetch_tags(gix::remote::fetch::Tags::None)
            .with_refspecs([refspec.as_str(), APPROVAL_REFSPEC], Direction::Fetch)
            .map_err(|e| Attempt::Transient(error_chain(&e)))?;
        let meter = bound::Meter::new(bound::Limits {
            max_fetch: source.max_fetch,
            max_object: source.max_object,
        });
        // Past a bound a read fails and gix gives up; the reason is the meter's, not gix's error.
        let refused = |meter: &bound::Meter| {
            meter.verdict().map(|reason| {
                Attempt::Fatal(FetchError::Refused {
                    url: source.url.clone(),
                    reason,
                })
            })
        };
        // What the agent's ssh says, for an ssh source: a refused host key or deploy key is
        // named from it.
        let ssh_stderr = source
            .ssh
            .as_ref()
            .map(|access| (access, Arc::new(ssh::Stderr::default())));
        let transport = self
            .connect(&remote, source, ssh_stderr.as_ref().map(|(_, s)| s), &meter)
            .map_err(transient)?;
        // Set when the server answers 401 to the handshake. gix would then ask git's credential
        // helpers or prompt on a terminal: a device does neither, its credential (if any) was
        // already sent with the request.
        let challenged = Arc::new(AtomicBool::new(false));
        let on_challenge = Arc::clone(&challenged);
        let mut connection = remote
            .to_connection_with_transport(transport)
            .with_credentials(move |_| {
                on_challenge.store(true, Ordering::SeqCst);
                Err(gix::Error::from_error(failure::Challenged))
            });
        if link.http {
            let options = self.http_options(source, link).map_err(Attempt::Fatal)?;
            connection.set_transport_options(options);
        }
        // What a failed HTTP exchange means for the operator: a 401/403/404 or a refused
        // redirect is not retried as a network failure.
        let failed = |e: gix::Error, meter: &bound::Meter| {
            if let Some(refusal) = refused(meter) {
                return refusal;
            }
            let mut chain = error_chain(&e);
            if let Some((access, stderr)) = &ssh_stderr {
                let lines = stderr.lines(Duration::from_secs(2));
                if let Some(fatal) = ssh::classify(source, access, &lines) {
                    return Attempt::Fatal(fatal);
                }
                if !lines.is_empty() {
                    chain = format!("{chain}: {}", lines.join("; "));
                }
            }
            let challenged = challenged.load(Ordering::SeqCst);
            match failure::classify(source, link.proxy.as_ref(), &chain, challenged) {
                Some(fatal) => Attempt::Fatal(fatal),
                None => Attempt::Transient(chain),
            }
        };
        let prepare = connection
            .prepare_fetch(gix::progress::Discard, Default::default())
            .map_err(|e| failed(e, &meter))?;
        let not_found = || {
            Attempt::Fatal(FetchError::RefNotFound {
                url: source.url.clone(),
                reference: source.reference.clone(),
            })
        };
        let mappings = &prepare.ref_map().mappings;
        let approvals: Vec<Approval> = mappings
            .iter()
            .filter_map(|m| {
                let name = m.remote.as_name()?.to_string();
                let id = m.remote.as_id()?.to_owned();
                name.starts_with(APPROVAL_PREFIX).then_some(Approval {
                    reference: name,
                    tag: id,
                })
            })
            .collect();
        let tip = mappings
            .iter()
            .find(|m| {
                m.remote
                    .as_name()
                    .is_some_and(|name| name == source.reference.as_str())
            })
            .ok_or_else(not_found)?
            .remote
            .as_id()
            .map(|id| id.to_owned())
            .ok_or_else(not_found)?;
        // Nothing new: stop after the ref advertisement (one round trip, no write). The recorded
        // tip, its tree and its history down to `applied` were read back when the mirror was
        // opened, so a tip whose objects a power cut took is not handed to `verify` as is: it
        // was found there, and the mirror rebuilt, before this point.
        if Some(tip) == self.recorded {
            return Ok(Fetched {
                tip,
                received_pack: false,
                elapsed: started.elapsed(),
                healed: None,
                approvals,
            });
        }
        // A person at a terminal sees the pack come in (objects and bytes, one line).
        let progress = progress::ProgressLine::start(&meter);
        let received = prepare.receive(gix::progress::Discard, interrupt);
        if let Some(progress) = progress {
            progress.finish();
        }
        drop_approval_refs(&self.repo).map_err(transient)?;
        if let Some(refusal) = refused(&meter) {
            // gix drops its temp files when it fails; but the bytes past a bound may come after
            // the pack's checksum, once the pack is in place.
            self.discard();
            tracing::warn!(received = meter.received(), "fetch stopped at its bound");
            return Err(refusal);
        }
        let outcome = match received {
            Ok(outcome) => outcome,
            Err(e) => {
                // Negotiation walks the local history: a fetch can also fail on a mirror whose
                // older objects are gone. Tell that apart from a network failure.
                if let Some(recorded) = self.recorded {
                    inspect::history(&self.repo, recorded).map_err(Attempt::Damaged)?;
                }
                return Err(failed(e, &meter));
            }
        };
        let received_pack = matches!(outcome.status, gix::remote::fetch::Status::Change { .. });
        // The new tip and the history `verify` will walk must read back: a pack the server sent
        // incomplete, or a damaged older pack the new history leans on, is damage.
        inspect::tip(&self.repo, tip, applied).map_err(Attempt::Damaged)?;
        Ok(Fetched {
            tip,
            received_pack,
            elapsed: started.elapsed(),
            healed: None,
            approvals,
        })
    }

    /// The id the server advertises for `source.reference`: the handshake and ref
    /// advertisement of a fetch (ls-refs), no object transfer and no write, one attempt. For
    /// `doctor`, which asks whether the server is reachable and has the ref.
    pub fn advertised_tip(&self, source: &SourceConfig) -> Result<ObjectId, FetchError> {
        let _ = rustls::crypto::ring::default_provider().install_default();
        // The same link as a fetch: TLS (with a client certificate), proxy, ssh settings.
        let link = Link::for_source(source)?;
        let unreachable = |message: String| FetchError::Unreachable {
            url: source.url.clone(),
            attempts: 1,
            message,
        };
        let refspec = format!("+{}", source.reference);
        let remote = self
            .repo
            .remote_at(source.url.as_str())
            .map_err(|e| unreachable(format!("invalid URL: {}", error_chain(&e))))?
            .with_fetch_tags(gix::remote::fetch::Tags::None)
            .with_refspecs([refspec.as_str()], Direction::Fetch)
            .map_err(|e| unreachable(error_chain(&e)))?;
        let meter = bound::Meter::new(bound::Limits {
            max_fetch: source.max_fetch,
            max_object: source.max_object,
        });
        let ssh_stderr = source
            .ssh
            .as_ref()
            .map(|access| (access, Arc::new(ssh::Stderr::default())));
        let transport = self
            .connect(&remote, source, ssh_stderr.as_ref().map(|(_, s)| s), &meter)
            .map_err(|e| unreachable(error_chain(&e)))?;
        let challenged = Arc::new(AtomicBool::new(false));
        let on_challenge = Arc::clone(&challenged);
        let mut connection = remote
            .to_connection_with_transport(transport)
            .with_credentials(move |_| {
                on_challenge.store(true, Ordering::SeqCst);
                Err(gix::Error::from_error(failure::Challenged))
            });
        if link.http {
            connection.set_transport_options(self.http_options(source, &link)?);
        }
        // Dropped after the ref map: nothing is negotiated or received.
        let prepare = connection
            .prepare_fetch(gix::progress::Discard, Default::default())
            .map_err(|e| {
                let mut chain = error_chain(&e);
                if let Some((access, stderr)) = &ssh_stderr {
                    let lines = stderr.lines(Duration::from_secs(2));
                    if let Some(fatal) = ssh::classify(source, access, &lines) {
                        return fatal;
                    }
                    if !lines.is_empty() {
                        chain = format!("{chain}: {}", lines.join("; "));
                    }
                }
                let challenged = challenged.load(Ordering::SeqCst);
                failure::classify(source, link.proxy.as_ref(), &chain, challenged)
                    .unwrap_or_else(|| failure::unreachable(source, link.proxy.as_ref(), 1, chain))
            })?;
        prepare
            .ref_map()
            .mappings
            .first()
            .and_then(|m| m.remote.as_id().map(|id| id.to_owned()))
            .ok_or_else(|| FetchError::RefNotFound {
                url: source.url.clone(),
                reference: source.reference.clone(),
            })
    }

    /// Makes `fetched.tip` the mirror's recorded tip, once `verify` has accepted it. With
    /// nothing new (the tip is the one recorded) this writes nothing.
    ///
    /// Crash order: objects durable → packs marked accepted durably → ref moved durably.
    /// 1. syncfs: gix renamed the pack and its index into place without fsync; a ref that
    ///    reaches the disk first can outlive them after a power cut and point into an empty pack
    ///    (issue 19). Done even when no pack came now: the objects may have arrived in an
    ///    earlier fetch cut short before its own sync.
    /// 2. The packs' `.keep` files removed and the pack directory fsynced: a `.keep` is what
    ///    marks a pack as not accepted (the next open removes such a pack), so it must be gone
    ///    for good before the ref names the pack. A crash here leaves accepted objects without a
    ///    ref: the next fetch asks for them again, and the server's identical pack lands on the
    ///    same name.
    /// 3. The ref: temp, fsync, rename, fsync its directories. A crash before this leaves the
    ///    old ref: the next fetch fetches and verifies the tip again.
    pub fn accept(&mut self, fetched: &Fetched) -> Result<(), FetchError> {
        let tip = fetched.tip;
        if Some(tip) == self.recorded && !fetched.received_pack {
            return Ok(());
        }
        let record = |source| FetchError::Record { tip, source };
        durable::sync_file_system(&self.dir).map_err(record)?;
        durable::release_packs(&self.dir).map_err(record)?;
        if Some(tip) != self.recorded {
            durable::record_tip(&self.dir, tip).map_err(record)?;
            self.recorded = Some(tip);
        }
        Ok(())
    }

    /// Removes what the last fetch brought for a tip `verify` refused (or a fetch stopped at
    /// its bound): every pack not yet accepted. `refs/shoal/fetched` stays at the last accepted
    /// tip, so the mirror does not grow with every refused push. Failing here is logged, not
    /// fatal: the refusal is what the sync reports, and the next open removes what is left.
    pub fn discard(&self) {
        match durable::remove_unaccepted(&self.dir) {
            Ok(removed) if !removed.is_empty() => {
                tracing::info!(packs = ?removed, "removed what the refused fetch brought");
            }
            Ok(_) => {}
            Err(e) => {
                tracing::warn!(error = %e, "cannot remove what the refused fetch brought; the next sync retries");
            }
        }
    }

    /// A transport to the remote's URL, as `gix::Remote::connect` makes it, wrapped so that what
    /// it receives is counted against the fetch's bounds (`bound`).
    ///
    /// An ssh source goes through the agent's own `ssh` invocation (`ssh::SshTransport`), never
    /// gix's (which would take `core.sshCommand`, `GIT_SSH_COMMAND` and the user's ssh config).
    fn connect(
        &self,
        remote: &gix::Remote<'_>,
        source: &SourceConfig,
        ssh_stderr: Option<&Arc<ssh::Stderr>>,
        meter: &bound::Meter,
    ) -> Result<bound::Metered<Box<dyn Transport + Send>>, gix::Error> {
        let (url, version) = remote.sanitized_url_and_version(Direction::Fetch)?;
        let transport: Box<dyn Transport + Send> = if url.scheme == gix::url::Scheme::Ssh {
            let (Some(access), Some(stderr)) = (&source.ssh, ssh_stderr) else {
                // `config` refuses an ssh source without its key and known_hosts.
                return Err(gix::Error::from_error(SshNotConfigured));
            };
            Box::new(ssh::SshTransport::new(
                url,
                access,
                source.timeout,
                version,
                Arc::clone(stderr),
            ))
        } else {
            let options = connect::Options {
                version,
                ..Default::default()
            };
            connect::connect(url, options)?
        };
        Ok(bound::Metered::new(
            transport,
            meter.clone(),
            self.repo.object_hash(),
        ))
    }

    /// gix's HTTP options for the source, with our rustls (ring) configuration and deadlines
    /// handed to its reqwest backend, and the credential, if any, on every request to the
    /// source's origin.
    ///
    /// The credential is sent pre-emptively (not after a 401 challenge), so a sync with nothing
    /// new stays one round trip. It goes only where the request's scheme, host and port are the
    /// configured URL's: `origin_of` and `Origin::matches` check every request. Redirects are
    /// not followed at all while a credential is configured: gix's reqwest backend refuses a
    /// redirect once a request was configured (`RejectConfiguredHeaders`), and reqwest would
    /// otherwise keep the header on a same-host redirect; the sync fails naming the redirect
    /// ([`FetchError::Redirected`]).
    fn http_options(
        &self,
        source: &SourceConfig,
        link: &Link,
    ) -> Result<Box<dyn std::any::Any>, FetchError> {
        use gix::protocol::transport::client::blocking_io::http;
        let timeout = source.timeout;
        let mut options = self
            .repo
            .transport_options(source.url.as_str(), None)
            .ok()
            .flatten()
            .and_then(|o| o.downcast::<http::Options>().ok())
            .map(|o| *o)
            .unwrap_or_default();
        options.connect_timeout = Some(timeout);
        // Abort a transfer that stalls below 1 byte/s for `timeout`, like git's lowSpeed*.
        options.low_speed_limit_bytes_per_second = 1;
        options.low_speed_time_seconds = timeout.as_secs().max(1);
        let configure_request = match &source.credential {
            Some(credential) => Some(authorize(&source.url, credential)?),
            None => None,
        };
        // The proxy, or none: reqwest's own reading of the environment is off (`proxy`).
        let proxy = match &link.proxy {
            Some(route) => Some(route.reqwest_proxy()?),
            None => None,
        };
        let tls = link.tls.clone();
        let backend = http::reqwest::Options {
            configure_client: Some(Box::new(move |builder| {
                let mut builder = builder.no_proxy().connect_timeout(timeout);
                if let Some(proxy) = &proxy {
                    builder = builder.proxy(proxy.clone());
                }
                if let Some(tls) = &tls {
                    builder = builder.tls_backend_preconfigured((**tls).clone());
                }
                Ok(builder)
            })),
            configure_request,
        };
        options.backend = Some(Arc::new(Mutex::new(backend)));
        Ok(Box::new(options))
    }
}

/// The request hook that adds `credential`'s `Authorization` header to each request whose
/// origin is `url`'s, and to no other.
fn authorize(
    url: &str,
    credential: &Credential,
) -> Result<
    Box<gix::protocol::transport::client::blocking_io::http::reqwest::ConfigureRequestFn>,
    FetchError,
> {
    let origin = Origin::of(url).ok_or_else(|| FetchError::Unreachable {
        url: url.to_owned(),
        attempts: 0,
        message: "invalid URL: it has no host".to_owned(),
    })?;
    let mut value = reqwest::header::HeaderValue::from_str(credential.authorization().expose())
        .map_err(|_| FetchError::AuthenticationFailed {
            url: url.to_owned(),
            credential: format!("{credential} (it cannot be sent in an HTTP header)"),
        })?;
    // reqwest and http print a sensitive value as `Sensitive` in Debug output.
    value.set_sensitive(true);
    Ok(Box::new(move |request: &mut reqwest::blocking::Request| {
        if origin.matches(request.url()) {
            request
                .headers_mut()
                .insert(reqwest::header::AUTHORIZATION, value.clone());
        }
        Ok(())
    }))
}

/// Scheme, host and port of a URL: where a credential may be sent.
#[derive(Debug, PartialEq, Eq)]
struct Origin {
    scheme: String,
    host: String,
    port: Option<u16>,
}

impl Origin {
    fn of(url: &str) -> Option<Origin> {
        let url = reqwest::Url::parse(url).ok()?;
        Some(Origin {
            scheme: url.scheme().to_owned(),
            host: url.host_str()?.to_owned(),
            port: url.port_or_known_default(),
        })
    }

    fn matches(&self, url: &reqwest::Url) -> bool {
        url.scheme() == self.scheme
            && url.host_str() == Some(self.host.as_str())
            && url.port_or_known_default() == self.port
    }
}

/// How the agent reaches an http(s) source: its TLS configuration and proxy.
struct Link {
    /// Whether the source is http(s) (gix's reqwest backend, configured here).
    http: bool,
    tls: Option<Arc<rustls::ClientConfig>>,
    proxy: Option<proxy::Route>,
}

impl Link {
    /// The TLS settings (CA, client certificate) and the proxy route of `source`.
    fn for_source(source: &SourceConfig) -> Result<Link, FetchError> {
        let identity = source.client_identity.as_ref();
        let tls = match source.ca_file.as_deref() {
            Some(path) => Some(tls::client_config_with(Some(path), identity)?),
            None if is_https(&source.url) => Some(tls::client_config_with(None, identity)?),
            None => None,
        };
        Ok(Link {
            http: is_https(&source.url) || config::has_scheme(&source.url, "http"),
            tls,
            proxy: proxy::route_from_env(source.proxy.as_ref(), &source.url)?,
        })
    }
}

/// An ssh source reached without the settings `config` requires for one (a bug, not a state).
#[derive(Debug, thiserror::Error)]
#[error("an ssh source needs [source] ssh_key and known_hosts")]
struct SshNotConfigured;

enum Attempt {
    Transient(String),
    Damaged(Damage),
    Fatal(FetchError),
}

/// Isolated: a device's behaviour must not depend on whatever git config or GIT_* environment
/// happens to exist on it.
/// Protocol v1: its ref advertisement is the reply to the first request, so a sync with
/// nothing new costs exactly one round trip (v2 needs a second one for ls-refs). Config repos
/// have few refs, so v1 advertising all of them costs little.
fn open_isolated(dir: &Path) -> Result<gix::Repository, gix::Error> {
    // One thread to index a pack: each thread inflates its own objects, so the peak memory of a
    // fetch would grow with the device's cores (docs/SECURITY.md, "Fetch").
    let options =
        gix::open::Options::isolated().config_overrides(["protocol.version=1", "pack.threads=1"]);
    gix::open_opts(dir, options)
}

fn is_https(url: &str) -> bool {
    config::has_scheme(url, "https")
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::credential::Secret;

    #[test]
    fn the_credential_goes_only_to_the_configured_origin() {
        let credential = Credential::parse(
            Secret::new("token = \"s3cret\"".into()),
            Path::new("/etc/shoal/git-auth.toml"),
        )
        .unwrap();
        let mut hook = authorize("https://git.example.com/fleet/config.git", &credential).unwrap();
        let mut sent = |url: &str| {
            let url = reqwest::Url::parse(url).unwrap();
            let mut request = reqwest::blocking::Request::new(reqwest::Method::GET, url);
            hook(&mut request).unwrap();
            request
                .headers()
                .get(reqwest::header::AUTHORIZATION)
                .map(|v| v.to_str().unwrap().to_owned())
        };
        for same in [
            "https://git.example.com/fleet/config.git/info/refs?service=git-upload-pack",
            "https://git.example.com:443/fleet/config.git/git-upload-pack",
            "https://GIT.example.com/other/repo.git/info/refs",
        ] {
            assert_eq!(sent(same).as_deref(), Some("Bearer s3cret"), "{same}");
        }
        for other in [
            "https://evil.example.com/fleet/config.git/info/refs",
            "https://git.example.com:8443/fleet/config.git/info/refs",
            "http://git.example.com/fleet/config.git/info/refs",
            "https://git.example.com.evil.net/fleet/config.git/info/refs",
        ] {
            assert_eq!(sent(other), None, "{other}");
        }
    }
}
