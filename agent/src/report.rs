//! Report: tells the collector what this device converged to, in reports signed with the
//! device's ed25519 identity key. Reports that carry news (a new status, generation or commit)
//! go to a persistent outbox first and are delivered in order until the collector acks them, so
//! nothing is lost across reboots or collector outages; unchanged state is sent as a heartbeat
//! that costs no disk write. The enrollment token is read and sent only until the collector has
//! accepted this device's key (see [`Reporter`] for the rule). The answer to an accepted report
//! may carry the collector's signed halt list, handed to `halts::receive` (only with a pinned
//! `[collector] key`). Reads the device state; writes, through `state`, the identity key, the
//! outbox and the enrollment record (and, through `halts`, the halt records).

use std::io::Read;
use std::path::{Path, PathBuf};
use std::time::Duration;

use ed25519_dalek::SigningKey;
use shoal_proto::{KeyId, Report, ResourceError, SignedEnvelope, Status};

use crate::config::{AgentConfig, CollectorConfig};
use crate::errors::error_chain;
use crate::halts;
use crate::paths::{self, PathError};
use crate::proxy::{self, ProxyFailure};
use crate::render::DeviceIdentity;
use crate::state::{unix_now, Enrolled, StateDir, StateError, StateView};
use crate::tls;

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
    #[error("cannot read the enrollment token {}: {source}; the collector does not know this device's key yet, so it needs the token (or pre-register the key: `shoal-collector register`)", path.display())]
    Token {
        path: PathBuf,
        #[source]
        source: PathError,
    },
    #[error("the enrollment token file {} is empty; put the collector's enrollment token in it", path.display())]
    EmptyToken { path: PathBuf },
    #[error("cannot reach the collector at {url}: {message}")]
    Unreachable { url: String, message: String },
    #[error("the collector at {url} answered {status} to {what}: {body}")]
    Answered {
        url: String,
        what: &'static str,
        status: u16,
        body: String,
    },
}

/// Whose key the collector has pinned to this device's id, as `GET
/// /api/v1/devices/{id}/enrollment` answers a proof of this device's key.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Pinned {
    ThisKey,
    OtherKey,
    Nothing,
}

/// Asks the collector (no side effect) whether it is up (`/healthz`) and whether this device's
/// key is pinned to its id (a signed proof of the key, `shoal_proto::EnrollmentProof`).
pub fn probe_enrollment(
    config: &AgentConfig,
    collector: &CollectorConfig,
    identity: &Identity,
    now: u64,
) -> Result<Pinned, ReportError> {
    use shoal_proto::enrollment::{KEY_HEADER, SIGNATURE_HEADER, TIME_HEADER};
    let proxy = proxy::route_from_env(collector.proxy.as_ref(), &collector.url)
        .map_err(|e| ReportError::Client(e.to_string()))?;
    let client = http_client(collector, proxy.as_ref())?;
    let url = &collector.url;
    let unreachable = |e: reqwest::Error| ReportError::Unreachable {
        url: url.clone(),
        message: error_chain(&e),
    };
    let health = client
        .get(format!("{url}/healthz"))
        .send()
        .map_err(unreachable)?;
    if !health.status().is_success() {
        return Err(ReportError::Answered {
            url: url.clone(),
            what: "GET /healthz",
            status: health.status().as_u16(),
            body: health.text().unwrap_or_default().trim().to_owned(),
        });
    }
    let proof = shoal_proto::EnrollmentProof::sign(&identity.key, &config.device_id, now);
    let answer = client
        .get(format!(
            "{url}/api/v1/devices/{}/enrollment",
            config.device_id
        ))
        .header(KEY_HEADER, &proof.key_id)
        .header(TIME_HEADER, &proof.time)
        .header(SIGNATURE_HEADER, &proof.signature)
        .send()
        .map_err(unreachable)?;
    let status = answer.status();
    let body = answer.text().unwrap_or_default();
    let refused = |body: String| ReportError::Answered {
        url: url.clone(),
        what: "the enrollment check",
        status: status.as_u16(),
        body,
    };
    if !status.is_success() {
        return Err(refused(body.trim().to_owned()));
    }
    let value: serde_json::Value =
        serde_json::from_str(&body).map_err(|_| refused(body.clone()))?;
    match value.get("pinned").and_then(|p| p.as_str()) {
        Some("this_key") => Ok(Pinned::ThisKey),
        Some("other_key") => Ok(Pinned::OtherKey),
        Some("none") => Ok(Pinned::Nothing),
        _ => Err(refused(body)),
    }
}

/// The blocking HTTPS client every request to the collector goes through.
fn http_client(
    collector: &CollectorConfig,
    proxy: Option<&proxy::Route>,
) -> Result<reqwest::blocking::Client, ReportError> {
    let tls = tls::client_config(collector.ca_file.as_deref())
        .map_err(|e| ReportError::Client(e.to_string()))?;
    let builder = reqwest::blocking::Client::builder()
        .tls_backend_preconfigured((*tls).clone())
        .connect_timeout(Duration::from_secs(10))
        .timeout(Duration::from_secs(30));
    proxy::configure(builder, proxy)
        .map_err(|e| ReportError::Client(e.to_string()))?
        .build()
        .map_err(|e| ReportError::Client(error_chain(&e)))
}

/// The device's identity: an ed25519 key kept in `state_dir/identity.key` (mode 0600).
pub struct Identity {
    key: SigningKey,
}

impl Identity {
    pub fn load(state: &StateView) -> Result<Self, ReportError> {
        let path = state.identity_path();
        let bytes = match state.identity_key() {
            Ok(Some(bytes)) => bytes,
            Ok(None) => return Err(ReportError::NoIdentity { path }),
            Err(StateError::Io(e)) => return Err(ReportError::Identity(e)),
            Err(e) => return Err(e.into()),
        };
        let seed: [u8; 32] = bytes
            .try_into()
            .map_err(|_| ReportError::BadIdentity { path })?;
        Ok(Identity {
            key: SigningKey::from_bytes(&seed),
        })
    }

    /// Loads the key, creating it first if there is none (durable, 0600 from the start).
    pub fn load_or_create(state: &StateDir) -> Result<(Self, bool), ReportError> {
        match Self::load(state) {
            Ok(identity) => return Ok((identity, false)),
            Err(ReportError::NoIdentity { .. }) => {}
            Err(e) => return Err(e),
        }
        let mut seed = [0u8; 32];
        let urandom = Path::new("/dev/urandom");
        std::fs::File::open(urandom)
            .and_then(|mut f| f.read_exact(&mut seed))
            .map_err(|e| ReportError::Identity(PathError::new("read", urandom, e)))?;
        state.create_identity_key(&seed).map_err(|e| match e {
            StateError::Io(e) => ReportError::Identity(e),
            e => e.into(),
        })?;
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
///
/// The enrollment token (`[collector] enroll_token_file`, header `X-Shoal-Enroll`) is sent only
/// while the device is not enrolled: `state_dir/enrolled` does not name both the configured
/// collector URL and this device's key. The first 2xx answer to a report records it there
/// (fsynced, atomic); from then on the token file is not even read, so it may be deleted. If the
/// collector answers 403 `unknown_key` (the key is not pinned any more: an operator unpinned the
/// device), the record is removed and the same report is sent again at once with the token. No
/// other answer brings the token back: `key_mismatch` means the device is pinned to another key,
/// which no token can change (only an operator's re-key or unpin).
pub struct Reporter {
    /// The device the reports are about (id and labels).
    device: DeviceIdentity,
    state_dir: PathBuf,
    identity: Identity,
    client: reqwest::blocking::Client,
    collector: CollectorConfig,
    /// The proxy reports go through, if any (named when it fails).
    proxy: Option<proxy::Route>,
    /// Whether the collector has accepted this key (read from `enrolled` once per round).
    enrolled: bool,
    sequences: std::ops::Range<u64>,
    last_sent: Option<Fingerprint>,
}

/// A collector's answer to one report.
struct Answer {
    status: reqwest::StatusCode,
    body: String,
    /// Why the enrollment token that should have gone with the report could not be read (the
    /// report went without it: a pre-registered key needs none).
    token_error: Option<String>,
}

impl Answer {
    /// The `reason_code` of a refusal's JSON body.
    fn reason_code(&self) -> Option<String> {
        let v: serde_json::Value = serde_json::from_str(&self.body).ok()?;
        v.get("reason_code")?.as_str().map(str::to_owned)
    }

    /// The `halts` of an accepted report's answer: `None` when there is none (an older
    /// collector, or one without a key), else the signed list or why it is not one.
    fn halts(&self) -> Option<Result<shoal_proto::SignedHalts, String>> {
        let v: serde_json::Value = serde_json::from_str(&self.body).ok()?;
        let halts = v.get("halts").filter(|h| !h.is_null())?;
        Some(serde_json::from_value(halts.clone()).map_err(|e| e.to_string()))
    }
}

/// What makes a report news: anything but the sequence and the time.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Fingerprint(
    Status,
    Option<u64>,
    Option<String>,
    Option<shoal_proto::Release>,
    Vec<ResourceError>,
    Option<shoal_proto::Target>,
);

impl Reporter {
    /// `None` when the agent config has no `[collector]`.
    pub fn new(config: &AgentConfig) -> Result<Option<Self>, ReportError> {
        let Some(collector) = config.collector.clone() else {
            return Ok(None);
        };
        let (identity, _) = Identity::load_or_create(&StateDir::open(&config.state_dir)?)?;
        let device = config.identity();
        let state_dir = config.state_dir.clone();
        // `[collector] proxy`, else HTTPS_PROXY / NO_PROXY from the environment; kept to name
        // the proxy when delivery fails.
        let proxy = proxy::route_from_env(collector.proxy.as_ref(), &collector.url)
            .map_err(|e| ReportError::Client(e.to_string()))?;
        let client = http_client(&collector, proxy.as_ref())?;
        Ok(Some(Reporter {
            device,
            state_dir,
            identity,
            client,
            collector,
            proxy,
            enrolled: false,
            sequences: 0..0,
            last_sent: None,
        }))
    }

    /// What `enrolled` must say for this device to be enrolled at the configured collector.
    fn enrollment(&self) -> Enrolled {
        Enrolled {
            collector: self.collector.url.clone(),
            key_id: self.identity.key_id(),
        }
    }

    /// Reads the enrollment record. An unreadable or corrupt one counts as "not enrolled": the
    /// worst that does is send the token once more.
    fn load_enrolled(&mut self, state: &StateView) {
        self.enrolled = match state.enrolled() {
            Ok(record) => record.as_ref() == Some(&self.enrollment()),
            Err(e) => {
                tracing::warn!(error = %e, "cannot read the enrollment record; sending the enrollment token");
                false
            }
        };
    }

    /// Records (or forgets) that the collector accepts this key. A failed write is only logged:
    /// the report went through, and the token keeps being sent until a write succeeds.
    fn set_enrolled(&mut self, state: &StateDir, enrolled: bool) {
        let record = enrolled.then(|| self.enrollment());
        match state.record_enrolled(record.as_ref()) {
            Ok(()) => self.enrolled = enrolled,
            Err(e) => {
                tracing::warn!(error = %e, enrolled, "cannot update the enrollment record");
                self.enrolled = false;
            }
        }
    }

    /// The enrollment token, read now (only a device that is not enrolled gets here).
    fn token(&self) -> Result<Option<String>, ReportError> {
        let Some(path) = &self.collector.enroll_token_file else {
            return Ok(None);
        };
        let text = paths::read_to_string(path).map_err(|source| ReportError::Token {
            path: path.clone(),
            source,
        })?;
        let token = text.trim();
        if token.is_empty() {
            return Err(ReportError::EmptyToken { path: path.clone() });
        }
        Ok(Some(token.to_owned()))
    }

    /// Reports the device's current state: queued if it is news, else sent as a heartbeat
    /// when nothing older is waiting. Then delivers the queue, oldest first.
    pub fn report(&mut self) -> Result<Delivery, ReportError> {
        let state = StateDir::open(&self.state_dir)?;
        self.load_enrolled(&state);
        let sequence = next_sequence(&mut self.sequences, &state)?;
        let report = build(&self.device, &state, sequence)?;
        let fingerprint = Fingerprint(
            report.status,
            report.generation,
            report.commit.clone(),
            report.release.clone(),
            report.errors.clone(),
            report.target.clone(),
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
            match self.post(&state, &envelope) {
                Ok(()) => delivery.delivered += 1,
                Err(e) => delivery.error = Some(e),
            }
        }
        if delivery.error.is_none() {
            self.last_sent = Some(fingerprint);
        }
        Ok(delivery)
    }

    fn deliver_queue(&mut self, state: &StateDir) -> Result<Delivery, ReportError> {
        let mut delivery = Delivery::default();
        let queue = state.queued_reports()?;
        for (i, (sequence, envelope)) in queue.iter().enumerate() {
            match self.post(state, envelope) {
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

    /// Posts one envelope, with the enrollment token only while not enrolled (the rule is on
    /// [`Reporter`]). Ok means the collector has it (accepted now, or already had this or a newer
    /// sequence: 409); a 400/413 means the report itself is unacceptable and retrying cannot
    /// help, so it is dropped with an error in the log.
    fn post(&mut self, state: &StateDir, envelope: &[u8]) -> Result<(), String> {
        let with_token = !self.enrolled && self.collector.enroll_token_file.is_some();
        let mut answer = self.send(envelope, with_token)?;
        if answer.status == reqwest::StatusCode::FORBIDDEN
            && answer.reason_code().as_deref() == Some("unknown_key")
        {
            // The collector does not have this key pinned (any more): whatever `enrolled` said
            // is out of date. With a token, enroll again now rather than a sync later.
            if self.enrolled {
                self.set_enrolled(state, false);
            }
            if !with_token && self.collector.enroll_token_file.is_some() {
                tracing::warn!(
                    collector = %self.collector.url,
                    "the collector does not know this device's key (unpinned?); enrolling again with the token"
                );
                answer = self.send(envelope, true)?;
            }
        }
        let status = answer.status;
        if status.is_success() && !self.enrolled {
            self.set_enrolled(state, true);
        }
        if status.is_success() {
            self.take_halts(state, &answer);
        }
        let url = &self.collector.url;
        match status.as_u16() {
            200..=299 | 409 => Ok(()),
            400 | 413 => {
                tracing::error!(%status, body = %answer.body, "the collector rejected a report as malformed; dropping it");
                Ok(())
            }
            _ => Err(match &answer.token_error {
                None => format!("the collector {url} answered {status}: {}", answer.body.trim()),
                Some(e) => format!(
                    "the collector {url} answered {status}: {}; and the report went without its enrollment token: {e}",
                    answer.body.trim()
                ),
            }),
        }
    }

    /// Hands the answer's halt list to `halts::receive`, when a collector key is pinned (without
    /// one, halts are not trusted and not even read). A failure to record it is only logged:
    /// the report went through, and the next answer carries the list again.
    fn take_halts(&self, state: &StateDir, answer: &Answer) {
        let Some(pinned) = &self.collector.key else {
            return;
        };
        let Some(offered) = answer.halts() else {
            return;
        };
        if let Err(e) = halts::receive(state, pinned, offered) {
            tracing::warn!(error = %e, "cannot record the collector's halt list");
        }
    }

    /// One POST of `envelope`, with the enrollment token (read now) if `with_token`.
    fn send(&self, envelope: &[u8], with_token: bool) -> Result<Answer, String> {
        let url = format!("{}/api/v1/reports", self.collector.url);
        let mut request = self
            .client
            .post(&url)
            .header("content-type", "application/json")
            .body(envelope.to_vec());
        let mut token_error = None;
        if with_token {
            match self.token() {
                Ok(Some(token)) => request = request.header(ENROLL_HEADER, token),
                Ok(None) => {}
                Err(e) => token_error = Some(e.to_string()),
            }
        }
        let response = request.send().map_err(|e| {
            let chain = error_chain(&e);
            match (&self.proxy, proxy::failure(&chain)) {
                (Some(route), Some(ProxyFailure::Unreachable)) => {
                    format!("cannot reach the collector {url}: {route} is unreachable: {chain}")
                }
                (Some(route), Some(ProxyFailure::Tunnel)) => format!(
                    "cannot reach the collector {url}: {route} refused or failed the CONNECT: \
                     {chain}"
                ),
                (Some(route), Some(ProxyFailure::Authentication)) => format!(
                    "cannot reach the collector {url}: {route} requires authentication (HTTP \
                     407): {chain}; put a valid credential in [collector] proxy_auth_file"
                ),
                _ => format!("cannot reach the collector {url}: {chain}"),
            }
        })?;
        let status = response.status();
        let body = response.text().unwrap_or_default();
        Ok(Answer {
            status,
            body,
            token_error,
        })
    }
}

/// Queues a signed report of the device's state as `state` records it now, without sending it:
/// for news in the middle of a sync (a mirror found damaged and rebuilt), which the sync's own
/// result then follows in the outbox; whoever reports after the sync (the daemon, the CLI)
/// delivers both, in order. Reserves a sequence block of its own, so a reporter that held an
/// older block takes a fresh one. Nothing when no collector is configured.
pub fn queue_now(config: &AgentConfig, state: &StateDir) -> Result<(), ReportError> {
    if config.collector.is_none() {
        return Ok(());
    }
    let (identity, _) = Identity::load_or_create(state)?;
    let mut block = 0..0;
    let sequence = next_sequence(&mut block, state)?;
    let report = build(&config.identity(), state, sequence)?;
    let envelope = SignedEnvelope::seal(&identity.key, &report)
        .map_err(|e| ReportError::Seal(e.to_string()))?
        .to_json();
    state.enqueue_report(sequence, &envelope)?;
    Ok(())
}

/// The next sequence number from this reporter's block, reserving a new block when it is used
/// up or when another process (a CLI `sync` or `rollback` beside the daemon) reserved one after
/// it: sending from the older block would look like a replay to the collector, which keeps
/// only what is newer than the last sequence it accepted.
fn next_sequence(block: &mut std::ops::Range<u64>, state: &StateDir) -> Result<u64, ReportError> {
    // `block` is `start..end` and the file records the newest block's last number, `end - 1`.
    if block.is_empty() || state.reserved_sequences()? + 1 != block.end {
        *block = state.reserve_sequences()?;
    }
    let next = block.start;
    block.start += 1;
    Ok(next)
}

/// The report for the device's current state.
fn build(device: &DeviceIdentity, state: &StateView, sequence: u64) -> Result<Report, ReportError> {
    let current = state.current()?;
    let last = state.last_result()?;
    let status = last
        .as_ref()
        .map(|r| r.status)
        .unwrap_or(if current.is_some() {
            Status::Converged
        } else {
            Status::Applying
        });
    let mut report = Report::new(device.device_id.clone(), status, sequence);
    report.labels = device.labels.clone();
    report.agent_version = env!("CARGO_PKG_VERSION").to_owned();
    report.generation = current.as_ref().map(|g| g.number);
    report.commit = current.map(|g| g.commit.into());
    report.release = state.applied_release()?.map(|last| shoal_proto::Release {
        environment: last.name.environment,
        number: last.name.number,
    });
    report.sent_at = unix_now();
    if status == Status::Pending {
        report.pending = last.as_ref().and_then(|r| r.pending.clone());
    }
    // The commit this report is about and the device's wave for it, as the sync saw them.
    report.target = last.as_ref().and_then(|r| r.target.clone());
    // The steps of the sync that produced this state (a heartbeat repeats them).
    report.timings = last.as_ref().map(|r| r.timings.clone()).unwrap_or_default();
    if let Some(message) = last.as_ref().and_then(|r| r.message.clone()) {
        if status != Status::Converged && status != Status::Held {
            report.errors.push(ResourceError {
                resource: last
                    .as_ref()
                    .and_then(|r| r.commit.as_ref())
                    .map_or_else(|| "sync".to_owned(), |c| c.to_string()),
                message,
            });
        }
    }
    // The collector's last halt list was ignored (replayed, another key, a bad signature): said
    // in every report until a list is accepted.
    if let Some(why) = state.halts_refused()? {
        report.errors.push(ResourceError {
            resource: "collector".to_owned(),
            message: format!("ignored the collector's halt list: {why}"),
        });
    }
    Ok(report)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::BufRead as _;
    use std::io::Write as _;
    use std::sync::{Arc, Mutex};

    /// A stand-in collector for the agent's side of the enrollment rule: answers each report
    /// with the next scripted (status, body) and records whether it carried `X-Shoal-Enroll`.
    /// (End to end against the real collector: tests/tests/report.rs.)
    fn scripted_collector(script: Vec<(u16, &'static str)>) -> (String, Arc<Mutex<Vec<bool>>>) {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let url = format!("http://{}", listener.local_addr().unwrap());
        let seen = Arc::new(Mutex::new(Vec::new()));
        let log = seen.clone();
        std::thread::spawn(move || {
            for (status, body) in script {
                let (stream, _) = listener.accept().unwrap();
                let mut reader = std::io::BufReader::new(stream.try_clone().unwrap());
                let (mut token, mut length) = (false, 0usize);
                loop {
                    let mut line = String::new();
                    reader.read_line(&mut line).unwrap();
                    let line = line.trim_end().to_ascii_lowercase();
                    if line.is_empty() {
                        break;
                    }
                    token |= line.starts_with("x-shoal-enroll:");
                    if let Some(n) = line.strip_prefix("content-length:") {
                        length = n.trim().parse().unwrap();
                    }
                }
                let mut request_body = vec![0; length];
                reader.read_exact(&mut request_body).unwrap();
                log.lock().unwrap().push(token);
                let mut out = stream;
                write!(
                    out,
                    "HTTP/1.1 {status} X\r\ncontent-type: application/json\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{body}",
                    body.len()
                )
                .unwrap();
            }
        });
        (url, seen)
    }

    fn config(dir: &Path, url: &str) -> AgentConfig {
        let text = format!(
            "device_id = \"gw-1\"\nstate_dir = \"state\"\n[source]\nurl = \"x\"\nref = \"refs/heads/main\"\n[collector]\nurl = \"{url}\"\nenroll_token_file = \"token\"\n"
        );
        AgentConfig::parse(&text, &dir.join("agent.toml")).unwrap()
    }

    const UNKNOWN_KEY: &str = r#"{"error":"key is not registered","reason_code":"unknown_key"}"#;
    const KEY_MISMATCH: &str = r#"{"error":"pinned to another key","reason_code":"key_mismatch"}"#;
    const OK: &str = r#"{"device_id":"gw-1","sequence":1,"enrolled":false}"#;

    #[test]
    fn the_token_goes_only_until_the_key_is_accepted_and_again_after_unknown_key() {
        let dir = tempfile::tempdir().unwrap();
        let token = dir.path().join("token");
        std::fs::write(&token, "enroll-0123456789abcdef\n").unwrap();
        let (url, seen) = scripted_collector(vec![
            (200, OK),           // first report, with the token: enrolled
            (200, OK),           // heartbeat without it
            (403, UNKNOWN_KEY),  // heartbeat: the operator unpinned the device...
            (200, OK),           // ...so the same report again, with the token
            (200, OK),           // heartbeat without it
            (403, KEY_MISMATCH), // pinned to another key: no token can help
        ]);
        let config = config(dir.path(), &url);
        let mut reporter = Reporter::new(&config).unwrap().unwrap();
        let record = || {
            StateDir::open(&config.state_dir)
                .unwrap()
                .enrolled()
                .unwrap()
        };

        assert_eq!(reporter.report().unwrap().error, None);
        let enrolled = record().expect("enrolled after the first 2xx");
        assert_eq!(enrolled.collector, url);
        assert_eq!(enrolled.key_id, reporter.identity.key_id());

        // Enrolled: the token file is not read any more.
        std::fs::remove_file(&token).unwrap();
        assert_eq!(reporter.report().unwrap().error, None);

        std::fs::write(&token, "enroll-0123456789abcdef\n").unwrap();
        let delivery = reporter.report().unwrap();
        assert_eq!(delivery.error, None);
        assert_eq!(delivery.delivered, 1);
        assert!(record().is_some(), "enrolled again");
        // A new reporter (the next `sync`) reads the record: no token.
        let mut next = Reporter::new(&config).unwrap().unwrap();
        next.last_sent = reporter.last_sent.clone();
        assert_eq!(next.report().unwrap().error, None);

        let error = next.report().unwrap().error.unwrap();
        assert!(error.contains("403"), "{error}");
        assert_eq!(
            *seen.lock().unwrap(),
            [true, false, false, true, false, false]
        );
    }

    #[test]
    fn an_unreadable_token_is_named_when_the_collector_needs_it() {
        let dir = tempfile::tempdir().unwrap();
        let (url, seen) = scripted_collector(vec![(403, UNKNOWN_KEY)]);
        let config = config(dir.path(), &url);
        let mut reporter = Reporter::new(&config).unwrap().unwrap();
        let error = reporter.report().unwrap().error.unwrap();
        assert!(error.contains("unknown_key"), "{error}");
        assert!(
            error.contains(&format!(
                "cannot read the enrollment token {}",
                dir.path().join("token").display()
            )),
            "{error}"
        );
        assert!(StateDir::open(&config.state_dir)
            .unwrap()
            .enrolled()
            .unwrap()
            .is_none());
        // It went once, without a token (a pre-registered key would have been accepted).
        assert_eq!(*seen.lock().unwrap(), [false]);
    }

    #[test]
    fn a_reporter_overtaken_by_another_process_takes_a_fresh_block() {
        let dir = tempfile::tempdir().unwrap();
        let state = StateDir::open(dir.path()).unwrap();
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
