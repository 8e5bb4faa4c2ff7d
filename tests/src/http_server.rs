//! `HttpsGitServer`: real smart-HTTP git (`git http-backend`) over TLS or plain HTTP on a loopback port, counting what clients ask,
//! optionally requiring a bearer token or basic auth (answering 401 otherwise), forbidding (403) or redirecting every request.

mod cgi;
mod tls;

pub use self::tls::{ClientCert, TestCa};

use std::convert::Infallible;
use std::net::{Ipv4Addr, SocketAddr, TcpListener as StdTcpListener};
use std::os::fd::AsRawFd;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::thread::JoinHandle;

use base64::Engine as _;
use http_body_util::{BodyExt, Full};
use hyper::body::{Body, Bytes, Incoming};
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper::{Request, Response, StatusCode};
use hyper_util::rt::TokioIo;
use tokio::net::TcpListener;
use tokio::sync::oneshot;
use tokio_rustls::TlsAcceptor;

/// A git smart-HTTP server for the bare repositories under one directory.
///
/// It runs on its own thread with its own tokio runtime, so tests stay synchronous; dropping it
/// (or [`stop`](Self::stop)) closes the port and every open connection.
pub struct HttpsGitServer {
    addr: SocketAddr,
    /// The name URLs use: one the certificate is for.
    host: String,
    ca: Option<TestCa>,
    traffic: Arc<Traffic>,
    shutdown: Option<oneshot::Sender<()>>,
    thread: Option<JoinHandle<()>>,
}

impl HttpsGitServer {
    /// HTTPS with a certificate for `localhost` and 127.0.0.1, signed by a CA made for this server
    /// (see [`ca_pem_path`](Self::ca_pem_path)).
    pub fn start(project_root: impl AsRef<Path>) -> Self {
        let listener = bind_loopback();
        Self::start_with(
            project_root.as_ref(),
            listener,
            "localhost",
            Some(TestCa::generate()),
            None,
        )
    }

    /// HTTPS like [`start`](Self::start), requiring a client certificate signed by `clients`
    /// (mTLS): a client without one, or with one of another CA, fails the handshake.
    pub fn start_requiring_client_cert(project_root: impl AsRef<Path>, clients: &TestCa) -> Self {
        let ca = TestCa::generate();
        let config = ca.requiring_clients_of(clients);
        Self::start_with(
            project_root.as_ref(),
            bind_loopback(),
            "localhost",
            Some(ca),
            Some(config),
        )
    }

    /// Plain HTTP, for `http://` URLs.
    pub fn start_plain(project_root: impl AsRef<Path>) -> Self {
        Self::start_with(
            project_root.as_ref(),
            bind_loopback(),
            "127.0.0.1",
            None,
            None,
        )
    }

    /// HTTPS on `addr` inside the network namespace `netns` (such as `/proc/PID/ns/net`), for
    /// clients in other namespaces; `ca` must vouch for `addr`'s IP ([`TestCa::for_names`]).
    /// Only the listening socket is made there; the server's thread stays in this namespace
    /// (a socket belongs to the namespace it was created in).
    pub fn start_in_netns(
        project_root: impl AsRef<Path>,
        netns: &Path,
        addr: SocketAddr,
        ca: TestCa,
    ) -> Self {
        let listener = bind_in_netns(netns, addr);
        let host = addr.ip().to_string();
        Self::start_with(project_root.as_ref(), listener, &host, Some(ca), None)
    }

    fn start_with(
        project_root: &Path,
        listener: StdTcpListener,
        host: &str,
        ca: Option<TestCa>,
        server_config: Option<Arc<rustls::ServerConfig>>,
    ) -> Self {
        // Bound before the thread starts, so the port is known and accepting on return.
        listener
            .set_nonblocking(true)
            .expect("cannot make the listener non-blocking");
        let addr = listener
            .local_addr()
            .expect("a bound listener has an address");
        let acceptor = ca.as_ref().map(|ca| {
            TlsAcceptor::from(server_config.unwrap_or_else(|| Arc::clone(&ca.server_config)))
        });
        let traffic = Arc::new(Traffic::default());
        let site = Arc::new(Site {
            project_root: project_root.to_path_buf(),
            traffic: Arc::clone(&traffic),
        });
        let (shutdown, shutdown_rx) = oneshot::channel();
        let thread = std::thread::Builder::new()
            .name(format!("git-http-{}", addr.port()))
            .spawn(move || {
                let runtime = tokio::runtime::Builder::new_current_thread()
                    .enable_all()
                    .build()
                    .expect("cannot build the server's tokio runtime");
                // Leaving block_on drops the runtime, which cancels every connection still open.
                runtime.block_on(accept_until_shutdown(listener, acceptor, site, shutdown_rx));
            })
            .expect("cannot spawn the server thread");
        HttpsGitServer {
            addr,
            host: host.to_owned(),
            ca,
            traffic,
            shutdown: Some(shutdown),
            thread: Some(thread),
        }
    }

    /// `https://localhost:PORT/repo_name` (a name the certificate is for; the IP for a server
    /// in another namespace), or `http://127.0.0.1:PORT/repo_name` for a plain server.
    pub fn url(&self, repo_name: &str) -> String {
        let scheme = if self.ca.is_some() { "https" } else { "http" };
        format!("{scheme}://{}:{}/{repo_name}", self.host, self.addr.port())
    }

    /// The CA that signed this server's certificate. Panics for a plain server.
    pub fn ca(&self) -> &TestCa {
        self.ca
            .as_ref()
            .expect("a plain-HTTP server has no CA; start it with HttpsGitServer::start")
    }

    pub fn port(&self) -> u16 {
        self.addr.port()
    }

    /// The PEM file of the CA that signed this server's certificate. Panics for a plain server.
    pub fn ca_pem_path(&self) -> &Path {
        self.ca().pem_path()
    }

    /// HTTP requests received since start (or the last [`reset_counters`](Self::reset_counters)).
    pub fn request_count(&self) -> usize {
        self.traffic.requests().len()
    }

    /// Response body bytes sent since start (or the last reset).
    pub fn bytes_sent(&self) -> u64 {
        self.traffic.bytes_sent.load(Ordering::SeqCst)
    }

    /// Each request received, in order, as `METHOD /path?query`.
    pub fn requests(&self) -> Vec<String> {
        self.traffic.requests().clone()
    }

    /// The `Authorization` header of each request received, in order (`None`: there was none).
    pub fn authorizations(&self) -> Vec<Option<String>> {
        self.traffic.authorizations().clone()
    }

    /// Zeroes the counters, e.g. after a first sync, to measure what the next one costs.
    pub fn reset_counters(&self) {
        self.traffic.requests().clear();
        self.traffic.authorizations().clear();
        self.traffic.bytes_sent.store(0, Ordering::SeqCst);
    }

    /// From now on, answers 401 to every request without `Authorization: Bearer <token>`
    /// (replacing any earlier requirement: requiring another token revokes the old one).
    pub fn require_bearer(&self, token: &str) {
        *self.traffic.gate() = Gate::Require(format!("Bearer {token}"));
    }

    /// From now on, answers 401 to every request without HTTP Basic `user:password`.
    pub fn require_basic(&self, user: &str, password: &str) {
        let encoded =
            base64::engine::general_purpose::STANDARD.encode(format!("{user}:{password}"));
        *self.traffic.gate() = Gate::Require(format!("Basic {encoded}"));
    }

    /// From now on, answers every request with `403 Forbidden`, as a forge does to a valid
    /// credential without access to the repository.
    pub fn forbid(&self) {
        *self.traffic.gate() = Gate::Forbid;
    }

    /// From now on, answers every request with `302 Found` to the same path and query under
    /// `base` (a URL without the trailing slash, such as another server's `http(s)://host:port`).
    pub fn redirect_to(&self, base: &str) {
        *self.traffic.gate() = Gate::Redirect(base.trim_end_matches('/').to_owned());
    }

    /// Closes the port and every open connection; later connections are refused. Idempotent.
    pub fn stop(&mut self) {
        if let Some(shutdown) = self.shutdown.take() {
            // The thread may already be gone if it panicked; join reports that below.
            let _ = shutdown.send(());
        }
        if let Some(thread) = self.thread.take() {
            if thread.join().is_err() && !std::thread::panicking() {
                panic!("the git HTTP server thread panicked");
            }
        }
    }
}

impl Drop for HttpsGitServer {
    fn drop(&mut self) {
        self.stop();
    }
}

fn bind_loopback() -> StdTcpListener {
    StdTcpListener::bind((Ipv4Addr::LOCALHOST, 0)).expect("cannot bind a loopback port")
}

/// Binds `addr` from a short-lived thread that first joins the network namespace `netns`
/// (`setns` changes only the calling thread's namespace, so this process's other threads,
/// and the server thread, stay where they are).
fn bind_in_netns(netns: &Path, addr: SocketAddr) -> StdTcpListener {
    let netns = netns.to_path_buf();
    std::thread::spawn(move || -> Result<StdTcpListener, String> {
        let ns = std::fs::File::open(&netns)
            .map_err(|e| format!("cannot open {}: {e}", netns.display()))?;
        // SAFETY: setns on a valid namespace fd; it affects only this thread, which ends here.
        if unsafe { libc::setns(ns.as_raw_fd(), libc::CLONE_NEWNET) } != 0 {
            return Err(format!(
                "setns({}) failed: {}",
                netns.display(),
                std::io::Error::last_os_error()
            ));
        }
        StdTcpListener::bind(addr)
            .map_err(|e| format!("cannot bind {addr} in {}: {e}", netns.display()))
    })
    .join()
    .expect("the bind thread panicked")
    .unwrap_or_else(|e| panic!("{e}"))
}

/// What the server has been asked and has answered, shared with the test thread, and what it
/// requires of a request.
#[derive(Default)]
struct Traffic {
    requests: Mutex<Vec<String>>,
    authorizations: Mutex<Vec<Option<String>>>,
    bytes_sent: AtomicU64,
    gate: Mutex<Gate>,
}

/// What a request must bring to be served.
#[derive(Default, Clone)]
enum Gate {
    #[default]
    Open,
    /// This exact `Authorization` header value, else 401.
    Require(String),
    /// Every request is answered 403.
    Forbid,
    /// Every request is redirected under this base URL.
    Redirect(String),
}

// A poisoned log is still a log: the panic that poisoned it is reported on its own.
fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    mutex
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner())
}

impl Traffic {
    fn requests(&self) -> MutexGuard<'_, Vec<String>> {
        lock(&self.requests)
    }

    fn authorizations(&self) -> MutexGuard<'_, Vec<Option<String>>> {
        lock(&self.authorizations)
    }

    fn gate(&self) -> MutexGuard<'_, Gate> {
        lock(&self.gate)
    }
}

/// Everything a connection needs to answer requests.
struct Site {
    project_root: PathBuf,
    traffic: Arc<Traffic>,
}

impl Site {
    async fn answer(&self, request: Request<Incoming>, peer: SocketAddr) -> Response<Full<Bytes>> {
        let (parts, body) = request.into_parts();
        let target = parts
            .uri
            .path_and_query()
            .map_or_else(|| parts.uri.path().to_owned(), ToString::to_string);
        self.traffic
            .requests()
            .push(format!("{} {target}", parts.method));
        let authorization = parts
            .headers
            .get(hyper::header::AUTHORIZATION)
            .map(|value| String::from_utf8_lossy(value.as_bytes()).into_owned());
        self.traffic.authorizations().push(authorization.clone());
        let gate = self.traffic.gate().clone();
        match gate {
            Gate::Open => {}
            Gate::Require(expected) if authorization.as_deref() == Some(expected.as_str()) => {}
            Gate::Require(expected) => {
                let scheme = expected.split(' ').next().unwrap_or("Basic");
                let mut response = cgi::plain_response(
                    StatusCode::UNAUTHORIZED,
                    "authentication required\n".into(),
                );
                let challenge = format!("{scheme} realm=\"shoal-test\"");
                response.headers_mut().insert(
                    hyper::header::WWW_AUTHENTICATE,
                    challenge.parse().expect("a valid header value"),
                );
                return response;
            }
            Gate::Forbid => {
                return cgi::plain_response(StatusCode::FORBIDDEN, "forbidden\n".into());
            }
            Gate::Redirect(base) => {
                let mut response = cgi::plain_response(StatusCode::FOUND, String::new());
                response.headers_mut().insert(
                    hyper::header::LOCATION,
                    format!("{base}{target}")
                        .parse()
                        .expect("a valid header value"),
                );
                return response;
            }
        }
        let response = match body.collect().await {
            Ok(body) => cgi::serve(&self.project_root, &parts, body.to_bytes(), peer).await,
            Err(e) => cgi::plain_response(
                StatusCode::BAD_REQUEST,
                format!("cannot read the request body: {e}"),
            ),
        };
        let sent = response.body().size_hint().exact().unwrap_or(0);
        self.traffic.bytes_sent.fetch_add(sent, Ordering::SeqCst);
        response
    }
}

async fn accept_until_shutdown(
    listener: StdTcpListener,
    acceptor: Option<TlsAcceptor>,
    site: Arc<Site>,
    mut shutdown: oneshot::Receiver<()>,
) {
    let listener = TcpListener::from_std(listener).expect("cannot hand the listener to tokio");
    loop {
        let (stream, peer) = tokio::select! {
            _ = &mut shutdown => return,
            accepted = listener.accept() => match accepted {
                Ok(accepted) => accepted,
                Err(e) => {
                    eprintln!("git HTTP server: accept failed: {e}");
                    continue;
                }
            },
        };
        let acceptor = acceptor.clone();
        let site = Arc::clone(&site);
        tokio::spawn(async move {
            let service = service_fn(move |request| {
                let site = Arc::clone(&site);
                async move { Ok::<_, Infallible>(site.answer(request, peer).await) }
            });
            let served = match acceptor {
                Some(acceptor) => match acceptor.accept(stream).await {
                    Ok(stream) => {
                        http1::Builder::new()
                            .serve_connection(TokioIo::new(stream), service)
                            .await
                    }
                    Err(e) => {
                        // Expected when a test checks that an untrusting client refuses us.
                        eprintln!("git HTTP server: TLS handshake with {peer} failed: {e}");
                        return;
                    }
                },
                None => {
                    http1::Builder::new()
                        .serve_connection(TokioIo::new(stream), service)
                        .await
                }
            };
            if let Err(e) = served {
                eprintln!("git HTTP server: connection from {peer} ended with: {e}");
            }
        });
    }
}
