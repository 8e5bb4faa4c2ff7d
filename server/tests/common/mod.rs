//! Test harness: simulated devices that sign reports, a real HTTP(S) client (hyper over tokio,
//! rustls on ring), the collector run in-process on 127.0.0.1:0, and the real binary (started by
//! `shoal-testkit`'s launcher) — each over either store: `both_stores!` runs a test once on sled
//! and once on a real PostgreSQL (`shoal_testkit::PgCluster`, one per test process, a database
//! per test).

#![allow(dead_code)] // each test file uses a different part of the harness

use std::net::SocketAddr;
use std::path::Path;
use std::process::Command;
use std::sync::Arc;

use axum::body::Bytes;
use ed25519_dalek::SigningKey;
use http_body_util::{BodyExt as _, Full};
use hyper::{Method, Request, StatusCode};
use hyper_util::rt::TokioIo;
use shoal_collector::store::{PgStore, SledStore, Store};
use shoal_collector::{app, serve, AppState, Config};
use shoal_proto::{KeyId, Report, SignedEnvelope, Status};
use shoal_testkit::{Collector, CollectorSpec, PgCluster};
use tokio::io::{AsyncRead, AsyncWrite};

/// Runs each named `async fn NAME(backend: Backend)` as two tests, `NAME::sled` and
/// `NAME::postgres` (the second skipped loudly without PostgreSQL, failing under SHOAL_E2E=1).
/// `multi_thread` before the list runs them on a two-worker runtime.
#[allow(unused_macros)] // tls.rs runs on sled only
macro_rules! both_stores {
    (multi_thread: $($name:ident),* $(,)?) => {
        $(mod $name {
            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn sled() { super::$name($crate::common::Backend::Sled).await }
            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn postgres() {
                if $crate::common::postgres_available() {
                    super::$name($crate::common::Backend::Postgres).await
                }
            }
        })*
    };
    ($($name:ident),* $(,)?) => {
        $(mod $name {
            #[tokio::test]
            async fn sled() { super::$name($crate::common::Backend::Sled).await }
            #[tokio::test]
            async fn postgres() {
                if $crate::common::postgres_available() {
                    super::$name($crate::common::Backend::Postgres).await
                }
            }
        })*
    };
}

/// Which store a test runs on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Backend {
    Sled,
    Postgres,
}

/// Whether the shared PostgreSQL cluster runs (else a loud skip; a panic under SHOAL_E2E=1).
/// Nothing acknowledged is lost: each device in `acknowledged` (id, reports the collector
/// answered 200 to) is known to the collector behind `client` with at least that sequence.
pub async fn assert_acknowledged_kept(
    client: &Client,
    acknowledged: impl IntoIterator<Item = (String, u64)>,
) {
    for (id, n) in acknowledged {
        if n == 0 {
            continue;
        }
        let d = client.get(&format!("/api/v1/devices/{id}")).await;
        assert_eq!(
            d.status,
            200,
            "{id} was acknowledged {n} times but is gone: {}",
            d.text()
        );
        let seq = d.json()["sequence"].as_u64().unwrap();
        assert!(seq >= n, "{id}: acknowledged {n}, the collector has {seq}");
    }
}

pub fn postgres_available() -> bool {
    PgCluster::shared().is_some()
}

/// A fresh, empty store for one test: a temp dir (sled: the store is the dir itself for the
/// in-process server, `DIR/data` for the binary), and for PostgreSQL a database of its own.
pub struct TestStore {
    dir: tempfile::TempDir,
    url: Option<String>,
}

impl TestStore {
    pub fn fresh(backend: Backend) -> TestStore {
        let url = match backend {
            Backend::Sled => None,
            Backend::Postgres => Some(
                PgCluster::shared()
                    .expect("both_stores! checked that PostgreSQL runs")
                    .create_database(),
            ),
        };
        TestStore {
            dir: tempfile::tempdir().unwrap(),
            url,
        }
    }

    /// The temp dir, for the test's other files.
    pub fn path(&self) -> &Path {
        self.dir.path()
    }

    pub fn backend(&self) -> Backend {
        match self.url {
            None => Backend::Sled,
            Some(_) => Backend::Postgres,
        }
    }

    /// Opens the store. A server stopped just before may still be letting go of sled (its
    /// writer thread ends after the last handle drops): wait for sled's lock for a little while.
    pub fn open(&self) -> Arc<dyn Store> {
        if let Some(url) = &self.url {
            return Arc::new(PgStore::connect(url, None).unwrap_or_else(|e| panic!("{e}")));
        }
        let mut tries = 0;
        loop {
            match SledStore::open(self.path()) {
                Ok(store) => return Arc::new(store),
                Err(_) if tries < 100 => {
                    tries += 1;
                    std::thread::sleep(std::time::Duration::from_millis(50));
                }
                Err(e) => panic!("opening the store in {}: {e}", self.path().display()),
            }
        }
    }

    /// The CLI flags naming this store for the binary: `--data DIR/data` or `--store URL`.
    pub fn flags(&self) -> StoreFlags {
        match &self.url {
            None => StoreFlags(vec![
                "--data".to_owned(),
                self.path().join("data").to_str().unwrap().to_owned(),
            ]),
            Some(url) => StoreFlags(vec!["--store".to_owned(), url.clone()]),
        }
    }
}

/// `--data DIR` or `--store URL`.
#[derive(Debug, Clone)]
pub struct StoreFlags(pub Vec<String>);

pub const ENROLL_TOKEN: &str = "enroll-0123456789abcdef";
pub const READ_TOKEN: &str = "read-0123456789abcdef";
pub const ADMIN_TOKEN: &str = "admin-0123456789abcdef";

/// A simulated device: an identity key and a sequence counter.
pub struct Device {
    pub id: String,
    pub key: SigningKey,
    pub sequence: u64,
}

impl Device {
    pub fn new(id: &str, seed: u64) -> Device {
        let mut bytes = [0x5a; 32];
        bytes[..8].copy_from_slice(&seed.to_le_bytes());
        Device {
            id: id.to_owned(),
            key: SigningKey::from_bytes(&bytes),
            sequence: 0,
        }
    }

    pub fn key_id(&self) -> KeyId {
        KeyId::of(&self.key.verifying_key())
    }

    /// The next report (sequence + 1) with this status and commit.
    pub fn report(&mut self, status: Status, commit: Option<&str>) -> Report {
        self.sequence += 1;
        let mut r = Report::new(&self.id, status, self.sequence);
        r.commit = commit.map(str::to_owned);
        r.agent_version = "0.1.0".to_owned();
        r.labels.insert("role".into(), "gateway".into());
        r.sent_at = 1_760_000_000 + self.sequence;
        r
    }

    /// The next report, sealed: the body to POST.
    pub fn next(&mut self, status: Status, commit: Option<&str>) -> Vec<u8> {
        let report = self.report(status, commit);
        self.seal(&report)
    }

    pub fn seal(&self, report: &Report) -> Vec<u8> {
        SignedEnvelope::seal(&self.key, report).unwrap().to_json()
    }
}

/// An HTTP response, fully read.
#[derive(Debug)]
pub struct Resp {
    pub status: StatusCode,
    pub headers: hyper::HeaderMap,
    pub body: Bytes,
}

impl Resp {
    pub fn json(&self) -> serde_json::Value {
        serde_json::from_slice(&self.body).unwrap_or_else(|e| {
            panic!(
                "{} body is not JSON ({e}): {}",
                self.status,
                String::from_utf8_lossy(&self.body)
            )
        })
    }

    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }

    /// Asserts a rejection: status, reason_code, and a fragment of the human reason.
    pub fn assert_rejected(&self, status: u16, reason_code: &str, text: &str) {
        assert_eq!(self.status.as_u16(), status, "{}", self.text());
        let j = self.json();
        assert_eq!(j["reason_code"], reason_code, "{j}");
        let error = j["error"].as_str().unwrap_or_default();
        assert!(error.contains(text), "{error:?} does not contain {text:?}");
    }
}

/// A client for one collector address, plain or TLS. One connection per request, like a device.
#[derive(Clone)]
pub struct Client {
    pub addr: SocketAddr,
    pub tls: Option<Arc<rustls::ClientConfig>>,
    pub bearer: Option<String>,
}

impl Client {
    pub fn new(addr: SocketAddr) -> Client {
        Client {
            addr,
            tls: None,
            bearer: None,
        }
    }

    pub async fn get(&self, path: &str) -> Resp {
        self.request(Method::GET, path, &[], Bytes::new()).await
    }

    /// `PUT /api/v1/devices/{id}/key` with `{"key": KEY}`.
    pub async fn put_key(&self, device_id: &str, key: &str) -> Resp {
        let body = serde_json::json!({ "key": key }).to_string();
        self.request(
            Method::PUT,
            &format!("/api/v1/devices/{device_id}/key"),
            &[],
            Bytes::from(body),
        )
        .await
    }

    /// `DELETE /api/v1/devices/{id}/key`.
    pub async fn delete_key(&self, device_id: &str) -> Resp {
        self.request(
            Method::DELETE,
            &format!("/api/v1/devices/{device_id}/key"),
            &[],
            Bytes::new(),
        )
        .await
    }

    pub async fn post_report(&self, body: Vec<u8>, enroll: Option<&str>) -> Resp {
        let headers: Vec<(&str, &str)> =
            enroll.map(|t| ("x-shoal-enroll", t)).into_iter().collect();
        self.request(Method::POST, "/api/v1/reports", &headers, Bytes::from(body))
            .await
    }

    pub async fn request(
        &self,
        method: Method,
        path: &str,
        headers: &[(&str, &str)],
        body: Bytes,
    ) -> Resp {
        self.try_request(method, path, headers, body)
            .await
            .unwrap_or_else(|e| panic!("{path}: {e}"))
    }

    /// Like `post_report`, but a connection failure is an `Err` (the server may be gone).
    pub async fn try_post_report(
        &self,
        body: Vec<u8>,
        enroll: Option<&str>,
    ) -> Result<Resp, String> {
        let headers: Vec<(&str, &str)> =
            enroll.map(|t| ("x-shoal-enroll", t)).into_iter().collect();
        self.try_request(Method::POST, "/api/v1/reports", &headers, Bytes::from(body))
            .await
    }

    pub async fn try_request(
        &self,
        method: Method,
        path: &str,
        headers: &[(&str, &str)],
        body: Bytes,
    ) -> Result<Resp, String> {
        let mut req = Request::builder()
            .method(method)
            .uri(path)
            .header("host", "localhost")
            .header("content-type", "application/json");
        if let Some(t) = &self.bearer {
            req = req.header("authorization", format!("Bearer {t}"));
        }
        for (k, v) in headers {
            req = req.header(*k, *v);
        }
        let req = req.body(Full::new(body)).map_err(|e| e.to_string())?;
        let tcp = tokio::net::TcpStream::connect(self.addr)
            .await
            .map_err(|e| format!("connect: {e}"))?;
        match &self.tls {
            None => roundtrip(tcp, req).await,
            Some(config) => {
                let connector = tokio_rustls::TlsConnector::from(config.clone());
                let name = rustls::pki_types::ServerName::try_from("localhost").unwrap();
                let tls = connector
                    .connect(name, tcp)
                    .await
                    .map_err(|e| format!("TLS: {e}"))?;
                roundtrip(tls, req).await
            }
        }
    }
}

async fn roundtrip<IO>(io: IO, req: Request<Full<Bytes>>) -> Result<Resp, String>
where
    IO: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let (mut sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(io))
        .await
        .map_err(|e| format!("handshake: {e}"))?;
    tokio::spawn(conn);
    let resp = sender
        .send_request(req)
        .await
        .map_err(|e| format!("request: {e}"))?;
    let status = resp.status();
    let headers = resp.headers().clone();
    let body = resp
        .into_body()
        .collect()
        .await
        .map_err(|e| format!("body: {e}"))?
        .to_bytes();
    Ok(Resp {
        status,
        headers,
        body,
    })
}

/// Config with every token kind set (read, enroll, admin).
pub fn config_with_tokens() -> Config {
    Config {
        read_tokens: Some(shoal_collector::auth::Tokens::new([READ_TOKEN])),
        enroll_tokens: Some(shoal_collector::auth::Tokens::new([ENROLL_TOKEN])),
        admin_tokens: Some(shoal_collector::auth::Tokens::new([ADMIN_TOKEN])),
        ..Config::default()
    }
}

/// The collector running in-process on 127.0.0.1:0 over a real socket.
pub struct TestServer {
    pub addr: SocketAddr,
    pub state: Arc<AppState>,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
    task: Option<tokio::task::JoinHandle<()>>,
}

impl TestServer {
    pub async fn start(store: &TestStore, config: Config) -> TestServer {
        TestServer::start_tls(store, config, None).await
    }

    pub async fn start_tls(
        store: &TestStore,
        config: Config,
        tls: Option<Arc<rustls::ServerConfig>>,
    ) -> TestServer {
        TestServer::start_on(store.open(), config, tls).await
    }

    /// An app instance over a store already open (several replicas over one store).
    pub async fn start_on(
        store: Arc<dyn Store>,
        config: Config,
        tls: Option<Arc<rustls::ServerConfig>>,
    ) -> TestServer {
        let state = AppState::shared(store, config).unwrap();
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        let router = app(state.clone());
        let task = tokio::spawn(async move {
            serve::run(listener, tls, router, async {
                let _ = stopped.await;
            })
            .await
            .unwrap();
        });
        TestServer {
            addr,
            state,
            stop: Some(stop),
            task: Some(task),
        }
    }

    /// A client for this server with the read token set.
    pub fn client(&self) -> Client {
        Client {
            bearer: Some(READ_TOKEN.to_owned()),
            ..Client::new(self.addr)
        }
    }

    /// A client for this server with the admin token set.
    pub fn admin(&self) -> Client {
        Client {
            bearer: Some(ADMIN_TOKEN.to_owned()),
            ..Client::new(self.addr)
        }
    }

    /// Graceful shutdown; returns the state so the caller can drop (and so close) the store.
    pub async fn stop(mut self) -> Arc<AppState> {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        if let Some(task) = self.task.take() {
            task.await.unwrap();
        }
        self.state.clone()
    }
}

/// This crate's `shoal-collector` binary.
pub fn bin() -> &'static str {
    env!("CARGO_BIN_EXE_shoal-collector")
}

/// The collector binary on `dir`'s store with the read ([`READ_TOKEN`]) and enrollment
/// ([`ENROLL_TOKEN`]) tokens in files beside it, and a client that sends the read token.
pub fn start_with_tokens(dir: &TestStore) -> (Collector, Client) {
    let read = dir.path().join("read-tokens");
    let enroll = dir.path().join("enroll-tokens");
    std::fs::write(&read, format!("{READ_TOKEN}\n")).unwrap();
    std::fs::write(&enroll, format!("{ENROLL_TOKEN}\n")).unwrap();
    let collector = start_binary(
        &dir.flags(),
        &[
            "--token-file",
            read.to_str().unwrap(),
            "--enroll-token-file",
            enroll.to_str().unwrap(),
        ],
        &dir.path().join("collector.log"),
    );
    let client = Client {
        bearer: Some(READ_TOKEN.to_owned()),
        ..Client::new(collector.addr())
    };
    (collector, client)
}

/// Starts `shoal-collector serve --listen 127.0.0.1:0 STORE ARGS...` with the kit's
/// launcher (the one the end-to-end tests use), its log in `log`, and waits for its
/// "listening on" line.
/// On PostgreSQL without `--key-file` in `args`, a collector key made by the binary beside
/// `log` (`LOG.key`, shared by every start with the same log name) is given.
pub fn start_binary(store: &StoreFlags, args: &[&str], log: &Path) -> Collector {
    let mut spec = CollectorSpec::new(bin(), std::path::PathBuf::new())
        .args(&store.0)
        .args(args)
        .log(log);
    if store.0.iter().any(|a| a == "--store") && !args.contains(&"--key-file") {
        let key = log.with_extension("key");
        if !key.exists() {
            make_key(&key);
        }
        spec = spec.args(&["--key-file", key.to_str().unwrap()]);
    }
    Collector::start(&spec)
}

/// `shoal-collector key --generate --key-file PATH`; returns the printed key id.
pub fn make_key(path: &Path) -> String {
    let out = Command::new(bin())
        .args(["key", "--generate", "--key-file"])
        .arg(path)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).unwrap().trim().to_owned()
}

/// Runs `shoal-collector register STORE`.
pub fn register(store: &StoreFlags, device_id: &str, key: &str) -> std::process::Output {
    Command::new(bin())
        .arg("register")
        .args(&store.0)
        .args(["--device-id", device_id, "--key", key])
        .output()
        .unwrap()
}

/// What a rejection must not change: the device's state, its history, and the fleet counters
/// (in memory and as persisted).
#[derive(Debug, PartialEq)]
pub struct Snapshot {
    pub device: Option<shoal_collector::store::DeviceRecord>,
    pub history: usize,
    pub summary: shoal_collector::tally::Summary,
    pub persisted: shoal_collector::tally::Tally,
    pub pinned: Option<String>,
    pub accepted: u64,
}

pub fn snapshot(state: &AppState, device_id: &str) -> Snapshot {
    Snapshot {
        device: state.store.device(device_id).unwrap(),
        history: state.store.history(device_id).unwrap().len(),
        summary: state.store.summary(0, 180).unwrap(),
        persisted: state.store.persisted_tally().unwrap(),
        pinned: state.store.pinned_key(device_id).unwrap(),
        accepted: state.metrics.accepted_count(),
    }
}

/// Sends `body` and asserts the rejection and that nothing changed for `device_id`.
pub async fn rejected(
    server: &TestServer,
    device_id: &str,
    body: Vec<u8>,
    enroll: Option<&str>,
    expect: (u16, &str, &str),
) -> serde_json::Value {
    let before = snapshot(&server.state, device_id);
    let counted = server.state.metrics.rejected_count(expect.1);
    let resp = server.client().post_report(body, enroll).await;
    resp.assert_rejected(expect.0, expect.1, expect.2);
    assert_eq!(
        snapshot(&server.state, device_id),
        before,
        "{} changed state",
        expect.1
    );
    assert_eq!(server.state.metrics.rejected_count(expect.1), counted + 1);
    let metrics = server.client().get("/metrics").await.text();
    let line = format!(
        "shoal_reports_rejected_total{{reason=\"{}\"}} {}",
        expect.1,
        counted + 1
    );
    assert!(metrics.contains(&line), "{line} not in\n{metrics}");
    resp.json()
}

/// Posts `body` (with the enrollment token `enroll`, if any) and asserts that it was accepted.
pub async fn accepted(server: &TestServer, body: Vec<u8>, enroll: Option<&str>) -> Resp {
    let resp = server.client().post_report(body, enroll).await;
    assert_eq!(resp.status, 200, "{}", resp.text());
    resp
}

/// Posts `body`, `device`'s first report, with the enrollment token and asserts that it
/// enrolled the device: accepted as sequence 1, `enrolled`, and the device's key pinned.
pub async fn assert_enrolls(server: &TestServer, device: &Device, body: Vec<u8>) {
    let resp = server.client().post_report(body, Some(ENROLL_TOKEN)).await;
    assert_eq!(resp.status, 200, "{}", resp.text());
    let id = device.id.as_str();
    let mut answer = resp.json();
    // Every accepted report's answer carries the signed halt list (tests/rollouts.rs opens it).
    assert!(answer["halts"]["signature"].is_string(), "{answer}");
    answer.as_object_mut().unwrap().remove("halts");
    assert_eq!(
        answer,
        serde_json::json!({"device_id": id, "sequence": 1, "enrolled": true})
    );
    assert_eq!(
        server.state.store.pinned_key(id).unwrap().as_deref(),
        Some(device.key_id().as_str())
    );
}
