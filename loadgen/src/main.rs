//! `shoal-loadgen`: simulates N devices that sign and post reports to a collector and prints
//! reports/s and p50/p99 latency; optionally the summary query time over M devices and, as the
//! ceiling on the same machine, a hello-world axum server's requests/s under the same client.
//! A benchmark tool: it promises measurements, not correctness checks.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{bail, Context as _};
use axum::body::Bytes;
use clap::Parser;
use ed25519_dalek::SigningKey;
use http_body_util::{BodyExt as _, Full};
use hyper::Request;
use hyper_util::rt::TokioIo;
use shoal_collector::auth::Tokens;
use shoal_collector::ingest::{Enrollment, Verified};
use shoal_collector::store::{SledStore, Store as _};
use shoal_collector::{app, serve, AppState, Config};
use shoal_proto::{KeyId, Report, SignedEnvelope, Status};

const ENROLL_TOKEN: &str = "loadgen-enroll-token-000000";

#[derive(Parser)]
#[command(about = "Load generator for shoal-collector: signed reports from simulated devices")]
struct Args {
    /// Collector address (host:port, plain HTTP). Default: start one in-process on a temp dir.
    #[arg(long)]
    addr: Option<SocketAddr>,
    /// Enrollment token the collector accepts (with --addr).
    #[arg(long, default_value = ENROLL_TOKEN)]
    enroll_token: String,
    /// Simulated devices.
    #[arg(long, default_value_t = 10_000)]
    devices: usize,
    /// Reports per device (the first enrolls).
    #[arg(long, default_value_t = 1)]
    rounds: usize,
    /// Concurrent keep-alive connections.
    #[arg(long, default_value_t = 64)]
    concurrency: usize,
    /// Also fill an in-process store with this many devices and time GET /api/v1/summary.
    #[arg(long)]
    summary_devices: Option<usize>,
    /// Also measure a hello-world axum server with the same client (the ceiling).
    #[arg(long)]
    hello: bool,
}

fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    let runtime = tokio::runtime::Runtime::new()?;
    runtime.block_on(run(args))
}

struct TempDir(std::path::PathBuf);
impl TempDir {
    fn new(tag: &str) -> anyhow::Result<TempDir> {
        let p = std::env::temp_dir().join(format!("shoal-loadgen-{tag}-{}", std::process::id()));
        std::fs::create_dir_all(&p).with_context(|| format!("creating {}", p.display()))?;
        Ok(TempDir(p))
    }
}
impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

async fn start_collector(data: &std::path::Path) -> anyhow::Result<(SocketAddr, Arc<AppState>)> {
    let store = SledStore::open(data)?;
    let state = AppState::new(
        store,
        Config {
            enroll_tokens: Some(Tokens::new([ENROLL_TOKEN])),
            ..Config::default()
        },
    )?;
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let addr = listener.local_addr()?;
    let router = app(state.clone());
    tokio::spawn(serve::run(listener, None, router, std::future::pending()));
    Ok((addr, state))
}

async fn run(args: Args) -> anyhow::Result<()> {
    let _tmp;
    let addr = match args.addr {
        Some(a) => a,
        None => {
            let tmp = TempDir::new("ingest")?;
            let (addr, _) = start_collector(&tmp.0).await?;
            _tmp = tmp;
            addr
        }
    };
    println!(
        "cores: {}",
        std::thread::available_parallelism().map_or(0, |n| n.get())
    );

    eprintln!("signing {} x {} reports...", args.devices, args.rounds);
    let t = Instant::now();
    let requests = sign_all(args.devices, args.rounds, &args.enroll_token);
    eprintln!("signed in {:.1?}", t.elapsed());
    let n: usize = requests.iter().map(Vec::len).sum();
    let stats = blast(addr, requests, args.concurrency).await?;
    stats.print(&format!(
        "ingest: {} devices x {} rounds, {} connections",
        args.devices, args.rounds, args.concurrency
    ));
    if stats.ok != n {
        bail!("{} of {n} reports were not accepted", n - stats.ok);
    }

    if args.hello {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
        let hello_addr = listener.local_addr()?;
        let hello = axum::Router::new().route(
            "/api/v1/reports",
            axum::routing::post(|body: Bytes| async move { format!("{}", body.len()) }),
        );
        tokio::spawn(async move { axum::serve(listener, hello).await });
        let requests = sign_all(args.devices, args.rounds, &args.enroll_token);
        let stats = blast(hello_addr, requests, args.concurrency).await?;
        stats.print("hello-world axum (same bodies, same client): the ceiling");
    }

    if let Some(m) = args.summary_devices {
        summary_bench(m).await?;
    }
    Ok(())
}

/// Device i's key is derived from i, so runs are repeatable.
fn device_key(i: usize) -> SigningKey {
    let mut seed = [0x42u8; 32];
    seed[..8].copy_from_slice(&(i as u64).to_le_bytes());
    SigningKey::from_bytes(&seed)
}

/// (body, enroll header?) for every report, device-major so each device's sequence is in order
/// within its connection.
fn sign_all(devices: usize, rounds: usize, token: &str) -> Vec<Vec<(Bytes, Option<String>)>> {
    let threads = std::thread::available_parallelism().map_or(1, |n| n.get());
    let chunk = devices.div_ceil(threads).max(1);
    std::thread::scope(|s| {
        let handles: Vec<_> = (0..devices)
            .step_by(chunk)
            .map(|start| {
                s.spawn(move || {
                    (start..(start + chunk).min(devices))
                        .map(|i| {
                            let key = device_key(i);
                            (1..=rounds as u64)
                                .map(|seq| {
                                    let mut r = Report::new(
                                        format!("load-{i:07}"),
                                        Status::ALL[(i + seq as usize) % Status::ALL.len()],
                                        seq,
                                    );
                                    r.commit = Some(format!("{:040x}", seq));
                                    r.agent_version = "loadgen".into();
                                    r.labels.insert("site".into(), format!("s{}", i % 10));
                                    let body = SignedEnvelope::seal(&key, &r)
                                        .expect("small report fits")
                                        .to_json();
                                    (Bytes::from(body), (seq == 1).then(|| token.to_owned()))
                                })
                                .collect::<Vec<_>>()
                        })
                        .collect::<Vec<_>>()
                })
            })
            .collect();
        handles
            .into_iter()
            .flat_map(|h| h.join().expect("signing thread"))
            .collect()
    })
}

struct Stats {
    ok: usize,
    failed: usize,
    elapsed: Duration,
    latencies_us: Vec<u64>,
}

impl Stats {
    fn print(&self, title: &str) {
        let mut l = self.latencies_us.clone();
        l.sort_unstable();
        let pct = |p: f64| {
            l.get(((l.len() as f64 * p) as usize).min(l.len().saturating_sub(1)))
                .copied()
                .unwrap_or(0)
        };
        println!("{title}");
        println!(
            "  requests: {} ok, {} failed in {:.2?}: {:.0} req/s; latency p50 {:.2} ms, p99 {:.2} ms, max {:.2} ms",
            self.ok,
            self.failed,
            self.elapsed,
            (self.ok + self.failed) as f64 / self.elapsed.as_secs_f64(),
            pct(0.50) as f64 / 1000.0,
            pct(0.99) as f64 / 1000.0,
            l.last().copied().unwrap_or(0) as f64 / 1000.0,
        );
    }
}

/// Sends every device's reports over `concurrency` keep-alive connections.
async fn blast(
    addr: SocketAddr,
    devices: Vec<Vec<(Bytes, Option<String>)>>,
    concurrency: usize,
) -> anyhow::Result<Stats> {
    let mut lanes: Vec<Vec<(Bytes, Option<String>)>> = vec![Vec::new(); concurrency.max(1)];
    let n = lanes.len();
    for (i, reports) in devices.into_iter().enumerate() {
        lanes[i % n].extend(reports);
    }
    let start = Instant::now();
    let mut tasks = tokio::task::JoinSet::new();
    for lane in lanes {
        tasks.spawn(async move {
            let tcp = tokio::net::TcpStream::connect(addr).await?;
            tcp.set_nodelay(true)?;
            let (mut sender, conn) =
                hyper::client::conn::http1::handshake(TokioIo::new(tcp)).await?;
            tokio::spawn(conn);
            let mut ok = 0;
            let mut failed = 0;
            let mut lat = Vec::with_capacity(lane.len());
            for (body, enroll) in lane {
                let mut req = Request::post("/api/v1/reports")
                    .header("host", "collector")
                    .header("content-type", "application/json");
                if let Some(t) = enroll {
                    req = req.header("x-shoal-enroll", t);
                }
                let req = req.body(Full::new(body))?;
                let t = Instant::now();
                sender.ready().await?;
                let resp = sender.send_request(req).await?;
                let status = resp.status();
                let _ = resp.into_body().collect().await?;
                lat.push(t.elapsed().as_micros() as u64);
                if status.is_success() {
                    ok += 1;
                } else {
                    failed += 1;
                }
            }
            anyhow::Ok((ok, failed, lat))
        });
    }
    let mut stats = Stats {
        ok: 0,
        failed: 0,
        elapsed: Duration::ZERO,
        latencies_us: Vec::new(),
    };
    while let Some(r) = tasks.join_next().await {
        let (ok, failed, lat) = r??;
        stats.ok += ok;
        stats.failed += failed;
        stats.latencies_us.extend(lat);
    }
    stats.elapsed = start.elapsed();
    Ok(stats)
}

/// Fills a store with `m` devices through the same ingest path (signatures skipped: they are not
/// what a summary costs) and times GET /api/v1/summary over HTTP.
async fn summary_bench(m: usize) -> anyhow::Result<()> {
    let tmp = TempDir::new("summary")?;
    eprintln!("filling a store with {m} devices...");
    let t = Instant::now();
    let dir = tmp.0.clone();
    tokio::task::spawn_blocking(move || -> anyhow::Result<()> {
        let store = SledStore::open(&dir)?;
        let mut batch = Vec::with_capacity(1000);
        for i in 0..m {
            let mut r = Report::new(
                format!("fleet-{i:07}"),
                Status::ALL[i % Status::ALL.len()],
                1,
            );
            r.commit = Some(format!("{:040x}", i % 5));
            // One key per device: a key is pinned to one device.
            let key_id = KeyId::of(&device_key(i).verifying_key());
            batch.push((
                Verified { key_id, report: r },
                Enrollment::Valid,
                1_000 + (i as u64 % 600),
            ));
            if batch.len() == 1000 || i + 1 == m {
                for result in store.ingest_batch(std::mem::take(&mut batch)) {
                    result?;
                }
            }
        }
        store.flush()?;
        Ok(())
    })
    .await??;
    eprintln!("filled in {:.1?}", t.elapsed());
    // Restart cost: opening loads the counters and rebuilds the last-seen index.
    let t = Instant::now();
    let (addr, _state) = start_collector(&tmp.0).await?;
    println!("store open (restart) with {m} devices: {:.2?}", t.elapsed());
    let mut times = Vec::new();
    for _ in 0..20 {
        let t = Instant::now();
        let tcp = tokio::net::TcpStream::connect(addr).await?;
        let (mut sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(tcp)).await?;
        tokio::spawn(conn);
        let resp = sender
            .send_request(
                Request::get("/api/v1/summary")
                    .header("host", "collector")
                    .body(Full::new(Bytes::new()))?,
            )
            .await?;
        let body = resp.into_body().collect().await?.to_bytes();
        times.push(t.elapsed());
        let v: serde_json::Value = serde_json::from_slice(&body)?;
        if v["total"] != m as u64 {
            bail!("summary total {} != {m}", v["total"]);
        }
    }
    times.sort();
    println!(
        "summary over {m} devices (GET /api/v1/summary, new connection each): p50 {:.2?}, max {:.2?}",
        times[times.len() / 2],
        times[times.len() - 1]
    );
    Ok(())
}
