//! The load generator's client side: simulated devices' reports signed up front, posted over
//! keep-alive HTTP/1 connections spread over one or more targets, and what came back (counts,
//! latencies). Measures; checks nothing about the collector's answers but their status.

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use anyhow::Context as _;
use axum::body::Bytes;
use ed25519_dalek::SigningKey;
use http_body_util::{BodyExt as _, Full};
use hyper::Request;
use hyper_util::rt::TokioIo;
use shoal_proto::{Report, SignedEnvelope, Status};

/// One report to post: its body and, for a device's first, the enrollment token.
pub type Post = (Bytes, Option<String>);

/// Device i's key is derived from i, so runs are repeatable.
pub fn device_key(i: usize) -> SigningKey {
    let mut seed = [0x42u8; 32];
    seed[..8].copy_from_slice(&(i as u64).to_le_bytes());
    SigningKey::from_bytes(&seed)
}

/// Every device's reports (sequence 1..=rounds, the first with the enrollment token), signed on
/// every core; device-major, so each device's reports stay in order within its connection.
pub fn sign_all(devices: usize, rounds: usize, token: &str) -> Vec<Vec<Post>> {
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

/// What one run of posts got.
pub struct Stats {
    pub ok: usize,
    pub failed: usize,
    pub elapsed: Duration,
    latencies_us: Vec<u64>,
}

impl Stats {
    /// Requests per second (answered, whatever the status).
    pub fn rate(&self) -> f64 {
        (self.ok + self.failed) as f64 / self.elapsed.as_secs_f64()
    }

    pub fn print(&self, title: &str) {
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
            self.rate(),
            pct(0.50) as f64 / 1000.0,
            pct(0.99) as f64 / 1000.0,
            l.last().copied().unwrap_or(0) as f64 / 1000.0,
        );
    }
}

/// Posts every device's reports over `concurrency` keep-alive connections, spread round-robin
/// over `targets` (replicas behind a balancer); a device's reports all go over one connection.
pub async fn blast(
    targets: &[SocketAddr],
    devices: &[Vec<Post>],
    concurrency: usize,
) -> anyhow::Result<Stats> {
    let mut lanes: Vec<Vec<Post>> = vec![Vec::new(); concurrency.max(1)];
    let n = lanes.len();
    for (i, reports) in devices.iter().enumerate() {
        lanes[i % n].extend(reports.iter().cloned());
    }
    let start = Instant::now();
    let mut tasks = tokio::task::JoinSet::new();
    for (l, lane) in lanes.into_iter().enumerate() {
        let addr = targets[l % targets.len()];
        tasks.spawn(async move {
            let tcp = tokio::net::TcpStream::connect(addr)
                .await
                .with_context(|| format!("connecting to {addr}"))?;
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

/// `GET path` on a new connection; the body.
pub async fn get(addr: SocketAddr, path: &str) -> anyhow::Result<Bytes> {
    let tcp = tokio::net::TcpStream::connect(addr).await?;
    let (mut sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(tcp)).await?;
    tokio::spawn(conn);
    let resp = sender
        .send_request(
            Request::get(path)
                .header("host", "collector")
                .body(Full::new(Bytes::new()))?,
        )
        .await?;
    let status = resp.status();
    let body = resp.into_body().collect().await?.to_bytes();
    anyhow::ensure!(
        status.is_success(),
        "GET {path}: {status} {}",
        String::from_utf8_lossy(&body)
    );
    Ok(body)
}
