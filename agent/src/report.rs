//! Report: tells the collector what this device converged to, in reports signed with the
//! device's ed25519 identity key. Reports that carry news (a new status, generation or commit)
//! go to a persistent outbox first and are delivered in order until the collector acks them, so
//! nothing is lost across reboots or collector outages; unchanged state is sent as a heartbeat
//! that costs no disk write. Reads the device state; writes only the identity key and, through
//! `state`, the outbox.

use std::io::{Read, Write};
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};
use std::time::Duration;

use ed25519_dalek::SigningKey;
use shoal_proto::{KeyId, Report, ResourceError, SignedEnvelope, Status};

use crate::config::{AgentConfig, CollectorConfig};
use crate::fetch;
use crate::paths::{self, PathError};
use crate::state::{unix_now, State, StateError};

const IDENTITY_FILE: &str = "identity.key";
const ENROLL_HEADER: &str = "X-Shoal-Enroll";

#[derive(Debug, thiserror::Error)]
pub enum ReportError {
    #[error("the device identity key: {0}")]
    Identity(#[source] PathError),
    #[error("{} is not a device identity key (expected 32 bytes); move it aside and run `shoal-agent keygen` (the collector must then learn the new key)", path.display())]
    BadIdentity { path: PathBuf },
    #[error("no device identity key at {}; run `shoal-agent keygen` and enroll the printed key with the collector", path.display())]
    NoIdentity { path: PathBuf },
    #[error(transparent)]
    State(#[from] StateError),
    #[error("cannot build the report: {0}")]
    Seal(String),
    #[error("cannot set up the HTTPS client for the collector: {0}")]
    Client(String),
    #[error("cannot read the enrollment token {}: {source}", path.display())]
    Token {
        path: PathBuf,
        #[source]
        source: PathError,
    },
}

/// The device's identity: an ed25519 key kept in `state_dir/identity.key` (mode 0600).
pub struct Identity {
    key: SigningKey,
}

impl Identity {
    pub fn path(state_dir: &Path) -> PathBuf {
        state_dir.join(IDENTITY_FILE)
    }

    pub fn load(state_dir: &Path) -> Result<Self, ReportError> {
        let path = Self::path(state_dir);
        let bytes = paths::read(&path).map_err(|e| {
            if e.is_not_found() {
                ReportError::NoIdentity { path: path.clone() }
            } else {
                ReportError::Identity(e)
            }
        })?;
        let seed: [u8; 32] = bytes
            .try_into()
            .map_err(|_| ReportError::BadIdentity { path })?;
        Ok(Identity {
            key: SigningKey::from_bytes(&seed),
        })
    }

    /// Loads the key, creating it first if there is none. The new key's file is written 0600
    /// from the start (never readable by others, not even briefly), fsynced and renamed.
    pub fn load_or_create(state_dir: &Path) -> Result<(Self, bool), ReportError> {
        match Self::load(state_dir) {
            Ok(identity) => return Ok((identity, false)),
            Err(ReportError::NoIdentity { .. }) => {}
            Err(e) => return Err(e),
        }
        paths::create_dir_all(state_dir).map_err(ReportError::Identity)?;
        let mut seed = [0u8; 32];
        let urandom = Path::new("/dev/urandom");
        std::fs::File::open(urandom)
            .and_then(|mut f| f.read_exact(&mut seed))
            .map_err(|e| ReportError::Identity(PathError::new("read", urandom, e)))?;
        let path = Self::path(state_dir);
        let tmp = state_dir.join(".identity.key.tmp");
        let write = || -> std::io::Result<()> {
            let mut file = std::fs::OpenOptions::new()
                .write(true)
                .create(true)
                .truncate(true)
                .mode(0o600)
                .open(&tmp)?;
            file.write_all(&seed)?;
            file.sync_all()?;
            std::fs::rename(&tmp, &path)
        };
        write().map_err(|e| ReportError::Identity(PathError::new("write", &path, e)))?;
        paths::sync_dir(state_dir).map_err(ReportError::Identity)?;
        Ok((
            Identity {
                key: SigningKey::from_bytes(&seed),
            },
            true,
        ))
    }

    /// `ed25519:<base64>`, the form the collector's `register` and API use.
    pub fn key_id(&self) -> KeyId {
        KeyId::of(&self.key.verifying_key())
    }
}

/// What one round of reporting did.
#[derive(Debug, Default)]
pub struct Delivery {
    pub delivered: usize,
    pub queued: usize,
    pub error: Option<String>,
}

/// Builds, queues and delivers reports for one device. Create it and use it off the async
/// runtime (its HTTP client is reqwest's blocking one).
pub struct Reporter {
    identity: Identity,
    client: reqwest::blocking::Client,
    collector: CollectorConfig,
    token: Option<String>,
    sequences: std::ops::Range<u64>,
    last_sent: Option<Fingerprint>,
}

/// What makes a report news: anything but the sequence and the time.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Fingerprint(Status, Option<u64>, Option<String>, Vec<ResourceError>);

impl Reporter {
    /// `None` when the agent config has no `[collector]`.
    pub fn new(config: &AgentConfig) -> Result<Option<Self>, ReportError> {
        let Some(collector) = config.collector.clone() else {
            return Ok(None);
        };
        let (identity, _) = Identity::load_or_create(&config.state_dir)?;
        let tls = fetch::client_tls_config(collector.ca_file.as_deref())
            .map_err(|e| ReportError::Client(e.to_string()))?;
        let client = reqwest::blocking::Client::builder()
            .tls_backend_preconfigured((*tls).clone())
            .connect_timeout(Duration::from_secs(10))
            .timeout(Duration::from_secs(30))
            .build()
            .map_err(|e| ReportError::Client(fetch::error_chain(&e)))?;
        let token = match &collector.enroll_token_file {
            Some(path) => Some(
                paths::read_to_string(path)
                    .map_err(|source| ReportError::Token {
                        path: path.clone(),
                        source,
                    })?
                    .trim()
                    .to_owned(),
            ),
            None => None,
        };
        Ok(Some(Reporter {
            identity,
            client,
            collector,
            token,
            sequences: 0..0,
            last_sent: None,
        }))
    }

    /// Reports the device's current state: queued if it is news, else sent as a heartbeat
    /// when nothing older is waiting. Then delivers the queue, oldest first.
    pub fn report(&mut self, config: &AgentConfig) -> Result<Delivery, ReportError> {
        let state = State::open(&config.state_dir)?;
        let sequence = next_sequence(&mut self.sequences, &state)?;
        let report = build(config, &state, sequence)?;
        let fingerprint = Fingerprint(
            report.status,
            report.generation,
            report.commit.clone(),
            report.errors.clone(),
        );
        let envelope = SignedEnvelope::seal(&self.identity.key, &report)
            .map_err(|e| ReportError::Seal(e.to_string()))?
            .to_json();
        let news = self.last_sent.as_ref() != Some(&fingerprint);
        if news {
            state.enqueue_report(sequence, &envelope)?;
        }
        let mut delivery = self.deliver_queue(&state)?;
        if !news && delivery.error.is_none() && delivery.queued == 0 {
            match self.post(&envelope) {
                Ok(()) => delivery.delivered += 1,
                Err(e) => delivery.error = Some(e),
            }
        }
        if delivery.error.is_none() {
            self.last_sent = Some(fingerprint);
        }
        Ok(delivery)
    }

    fn deliver_queue(&self, state: &State) -> Result<Delivery, ReportError> {
        let mut delivery = Delivery::default();
        let queue = state.queued_reports()?;
        for (i, (sequence, envelope)) in queue.iter().enumerate() {
            match self.post(envelope) {
                Ok(()) => {
                    state.ack_report(*sequence)?;
                    delivery.delivered += 1;
                }
                Err(e) => {
                    delivery.queued = queue.len() - i;
                    delivery.error = Some(e);
                    break;
                }
            }
        }
        Ok(delivery)
    }

    /// Posts one envelope. Ok means the collector has it (accepted now, or already had this
    /// or a newer sequence: 409); a 400/413 means the report itself is unacceptable and
    /// retrying cannot help, so it is dropped with an error in the log.
    fn post(&self, envelope: &[u8]) -> Result<(), String> {
        let url = format!("{}/api/v1/reports", self.collector.url);
        let mut request = self
            .client
            .post(&url)
            .header("content-type", "application/json")
            .body(envelope.to_vec());
        if let Some(token) = &self.token {
            request = request.header(ENROLL_HEADER, token);
        }
        let response = request.send().map_err(|e| {
            format!(
                "cannot reach the collector {url}: {}",
                fetch::error_chain(&e)
            )
        })?;
        let status = response.status();
        let body = response.text().unwrap_or_default();
        match status.as_u16() {
            200..=299 | 409 => Ok(()),
            400 | 413 => {
                tracing::error!(%status, %body, "the collector rejected a report as malformed; dropping it");
                Ok(())
            }
            _ => Err(format!(
                "the collector {url} answered {status}: {}",
                body.trim()
            )),
        }
    }
}

/// The next sequence number from this reporter's block, reserving a new block when it is used
/// up or when another process (a CLI `sync` or `rollback` beside the daemon) reserved one after
/// it: sending from the older block would look like a replay to the collector, which keeps
/// only what is newer than the last sequence it accepted.
fn next_sequence(block: &mut std::ops::Range<u64>, state: &State) -> Result<u64, ReportError> {
    // `block` is `start..end` and the file records the newest block's last number, `end - 1`.
    if block.is_empty() || state.reserved_sequences()? + 1 != block.end {
        *block = state.reserve_sequences()?;
    }
    let next = block.start;
    block.start += 1;
    Ok(next)
}

/// The report for the device's current state.
fn build(config: &AgentConfig, state: &State, sequence: u64) -> Result<Report, ReportError> {
    let current = state.current()?;
    let last = state.last_result()?;
    let status = last
        .as_ref()
        .and_then(|r| Status::from_wire(&r.status))
        .unwrap_or(if current.is_some() {
            Status::Converged
        } else {
            Status::Applying
        });
    let mut report = Report::new(config.device_id.clone(), status, sequence);
    report.labels = config.labels.clone();
    report.agent_version = env!("CARGO_PKG_VERSION").to_owned();
    report.generation = current.as_ref().map(|g| g.number);
    report.commit = current.map(|g| g.commit);
    report.sent_at = unix_now();
    // The steps of the sync that produced this state (a heartbeat repeats them).
    report.timings = last.as_ref().map(|r| r.timings.clone()).unwrap_or_default();
    if let Some(message) = last.as_ref().and_then(|r| r.message.clone()) {
        if status != Status::Converged && status != Status::Held {
            report.errors.push(ResourceError {
                resource: last
                    .as_ref()
                    .and_then(|r| r.commit.clone())
                    .unwrap_or_else(|| "sync".to_owned()),
                message,
            });
        }
    }
    Ok(report)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_reporter_overtaken_by_another_process_takes_a_fresh_block() {
        let dir = tempfile::tempdir().unwrap();
        let state = State::open(dir.path()).unwrap();
        let mut daemon = 0..0;
        assert_eq!(next_sequence(&mut daemon, &state).unwrap(), 1);
        assert_eq!(next_sequence(&mut daemon, &state).unwrap(), 2);

        // A CLI `rollback` beside the daemon reserves the next block and reports from it.
        let mut cli = 0..0;
        let from_cli = next_sequence(&mut cli, &state).unwrap();
        assert!(from_cli > 2, "{from_cli}");

        // The daemon's next report must come after it, or the collector drops it as a replay.
        let next = next_sequence(&mut daemon, &state).unwrap();
        assert!(next > from_cli, "{next} must be after {from_cli}");
        // Holding the newest block again, it goes on from it without reserving (writing) more.
        let reserved = state.reserved_sequences().unwrap();
        assert_eq!(next_sequence(&mut daemon, &state).unwrap(), next + 1);
        assert_eq!(state.reserved_sequences().unwrap(), reserved);
    }
}
