//! `shoal-loadgen`: simulates N devices that sign and post reports, and prints in one run the
//! ceiling of the machine (a hello-world axum server), the collector's ingest on sled, on
//! PostgreSQL with one replica and with two, and the summary's latency over a million devices on
//! PostgreSQL — each server in a process of its own, the same signed bodies and the same client
//! for all. A benchmark tool: it promises measurements, not correctness checks.

mod client;
mod cpu;
mod targets;
mod verify_bench;

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::{Duration, Instant};

use anyhow::{bail, Context as _};
use clap::Parser;
use shoal_collector::auth::Tokens;
use shoal_collector::ingest::{Enrollment, Verified};
use shoal_collector::store::{SledStore, Store as _};
use shoal_collector::{app, serve, AppState, Config};
use shoal_proto::{KeyId, Report, Status};

use client::{blast, device_key, get, sign_all, Stats};
use targets::{TempDir, ENROLL_TOKEN};

#[derive(Parser)]
#[command(about = "Load generator for shoal-collector: signed reports from simulated devices")]
struct Args {
    /// Only measure ingest into a running collector (host:port, plain HTTP).
    #[arg(long)]
    addr: Option<SocketAddr>,
    /// Enrollment token the collector at --addr accepts.
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
    /// The `shoal-collector` binary (default: beside this program).
    #[arg(long, value_name = "PATH")]
    collector: Option<PathBuf>,
    /// Devices seeded into PostgreSQL for the summary's latency (0: skip).
    #[arg(long, default_value_t = 1_000_000)]
    summary_devices: usize,
    /// Print, after each PostgreSQL measurement, the statements that took the database's time.
    #[arg(long)]
    statements: bool,
    /// Measure the ingest rounds (hello-world, sled, PostgreSQL) this many times in a row and
    /// print the median ratios: the machine's load changes between measurements.
    #[arg(long, default_value_t = 1)]
    repeat: usize,
    /// Skip every PostgreSQL measurement.
    #[arg(long)]
    skip_postgres: bool,
    /// Also fill an in-process sled store with this many devices (through its ingest path) and
    /// time the summary and the store's opening.
    #[arg(long, value_name = "M")]
    sled_summary_devices: Option<usize>,
    /// Only measure what a signature check costs per report, one by one and in batches, over
    /// this many signed reports.
    #[arg(long, value_name = "N")]
    verify_bench: Option<usize>,
    /// Internal: run the hello-world server (the child process of a measurement).
    #[arg(long, hide = true)]
    serve_hello: bool,
}

fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    if args.serve_hello {
        return targets::serve_hello();
    }
    if let Some(n) = args.verify_bench {
        return verify_bench::run(n);
    }
    let runtime = tokio::runtime::Runtime::new()?;
    runtime.block_on(run(args))
}

fn load_average() -> String {
    std::fs::read_to_string("/proc/loadavg")
        .map(|l| l.split_whitespace().take(3).collect::<Vec<_>>().join(" "))
        .unwrap_or_else(|_| "?".to_owned())
}

async fn run(args: Args) -> anyhow::Result<()> {
    println!(
        "cores: {}; load average {}",
        std::thread::available_parallelism().map_or(0, |n| n.get()),
        load_average()
    );
    eprintln!("signing {} x {} reports...", args.devices, args.rounds);
    let t = Instant::now();
    let requests = sign_all(args.devices, args.rounds, &args.enroll_token);
    eprintln!("signed in {:.1?}", t.elapsed());
    let n: usize = requests.iter().map(Vec::len).sum();
    let what = format!(
        "{} devices x {} rounds, {} connections",
        args.devices, args.rounds, args.concurrency
    );
    let ingest = |stats: &Stats, title: &str| -> anyhow::Result<()> {
        stats.print(&format!("{title}: {what}"));
        if stats.ok != n {
            bail!("{title}: {} of {n} reports were not accepted", n - stats.ok);
        }
        Ok(())
    };

    if let Some(addr) = args.addr {
        let stats = blast(&[addr], &requests, args.concurrency).await?;
        return ingest(&stats, &format!("ingest into {addr}"));
    }

    let bin = targets::collector_bin(args.collector.clone())?;
    let tmp = TempDir::new("ingest")?;
    let cluster = if args.skip_postgres {
        None
    } else {
        Some(targets::durable_cluster(args.statements)?)
    };
    let postmaster = cluster
        .as_ref()
        .and_then(|c| cpu::postmaster(&c.dir().join("data")));
    // Ratios of each round: (name, % of hello-world, % of sled).
    let mut ratios: Vec<Vec<(&str, f64, f64)>> = Vec::new();
    for round in 1..=args.repeat.max(1) {
        if args.repeat > 1 {
            println!(
                "round {round} of {}; load average {}",
                args.repeat,
                load_average()
            );
        }
        let sled_dir = format!("sled-{round}");
        let hello = targets::HelloServer::start()?;
        let (ceiling, split) = measure(
            &[hello.addr],
            &[hello.pid()],
            None,
            &requests,
            args.concurrency,
        )
        .await?;
        ceiling.print("hello-world axum (own process; same bodies, same client): the ceiling");
        println!("{}", split.describe(n));
        drop(hello);

        let data = tmp.0.join(&sled_dir);
        let sled = targets::collector(&bin, &tmp.0, &sled_dir, &["--data", path_str(&data)?])?;
        let (sled_stats, split) = measure(
            &[sled.addr()],
            &[sled.pid()],
            None,
            &requests,
            args.concurrency,
        )
        .await?;
        ingest(
            &sled_stats,
            "sled ingest (shoal-collector serve --data, own process)",
        )?;
        println!("{}", split.describe(n));
        drop(sled);

        let mut rates = vec![("sled", sled_stats.rate())];
        if let Some(cluster) = &cluster {
            for replicas in [1, 2] {
                let url = cluster.create_database();
                let servers = (0..replicas)
                    .map(|r| {
                        targets::collector(
                            &bin,
                            &tmp.0,
                            &format!("pg{replicas}-{r}-{round}"),
                            &["--store", &url],
                        )
                    })
                    .collect::<anyhow::Result<Vec<_>>>()?;
                let addrs: Vec<SocketAddr> = servers.iter().map(|s| s.addr()).collect();
                let pids: Vec<u32> = servers.iter().map(|s| s.pid()).collect();
                let db = db_name(&url)?;
                let wal = || -> anyhow::Result<f64> {
                    Ok(cluster
                        .psql(&db, "SELECT pg_current_wal_lsn() - '0/0'")
                        .parse()?)
                };
                let xacts = || -> anyhow::Result<(f64, f64)> {
                    let row = cluster.psql(
                        &db,
                        "SELECT xact_commit, xact_rollback FROM pg_stat_database WHERE datname = current_database()",
                    );
                    let (c, r) = row.split_once('|').context("pg_stat_database")?;
                    Ok((c.parse()?, r.parse()?))
                };
                if args.statements {
                    cluster.psql(&db, "CREATE EXTENSION IF NOT EXISTS pg_stat_statements");
                    cluster.psql(&db, "SELECT pg_stat_statements_reset()");
                }
                let xacts_before = xacts()?;
                let wal_before = wal()?;
                let (stats, split) =
                    measure(&addrs, &pids, postmaster, &requests, args.concurrency).await?;
                let wal_bytes = wal()? - wal_before;
                // The statistics collector reports with a delay of up to a second.
                tokio::time::sleep(Duration::from_millis(1200)).await;
                let xacts_after = xacts()?;
                let (commits, rollbacks) = (
                    xacts_after.0 - xacts_before.0,
                    xacts_after.1 - xacts_before.1,
                );
                let title = format!(
                    "PostgreSQL ingest, {replicas} replica(s) (own processes, one database)"
                );
                ingest(&stats, &title)?;
                println!("{}", split.describe(n));
                let per_row = |table: &str| {
                    cluster.psql(
                        &db,
                        &format!(
                            "SELECT pg_total_relation_size('{table}') / greatest(count(*), 1) FROM {table}"
                        ),
                    )
                };
                println!(
                    "  PostgreSQL: {commits:.0} transactions committed ({:.1} reports each), {rollbacks:.0} rolled back",
                    n as f64 / commits.max(1.0)
                );
                println!(
                    "  PostgreSQL: {:.0} bytes of WAL per report; {} bytes per device row, {} per history entry (tables with their indexes)",
                    wal_bytes / n as f64,
                    per_row("shoal_device"),
                    per_row("shoal_history"),
                );
                if args.statements {
                    let top = cluster.psql(
                        &db,
                        "SELECT round(total_exec_time)::int8 || ' ms in ' || calls || ' calls: ' || \
                         left(regexp_replace(query, '\\s+', ' ', 'g'), 90) \
                         FROM pg_stat_statements WHERE dbid = (SELECT oid FROM pg_database WHERE datname = current_database()) \
                         ORDER BY total_exec_time DESC LIMIT 12",
                    );
                    for line in top.lines() {
                        println!("    {line}");
                    }
                }
                rates.push((if replicas == 1 { "pg x1" } else { "pg x2" }, stats.rate()));
            }
        }
        let hello_rate = ceiling.rate();
        let sled_rate = sled_stats.rate();
        let mut this = Vec::new();
        for (name, rate) in &rates {
            let (of_hello, of_sled) = (100.0 * rate / hello_rate, 100.0 * rate / sled_rate);
            println!("ratio {name}: {of_hello:.0} % of hello-world, {of_sled:.0} % of sled");
            this.push((*name, of_hello, of_sled));
        }
        ratios.push(this);
    }
    if ratios.len() > 1 {
        for (i, (name, _, _)) in ratios[0].iter().enumerate() {
            let mut of_hello: Vec<f64> = ratios.iter().map(|r| r[i].1).collect();
            let mut of_sled: Vec<f64> = ratios.iter().map(|r| r[i].2).collect();
            of_hello.sort_by(f64::total_cmp);
            of_sled.sort_by(f64::total_cmp);
            println!(
                "median of {} rounds, {name}: {:.0} % of hello-world (range {:.0}-{:.0}), {:.0} % of sled (range {:.0}-{:.0})",
                ratios.len(),
                of_hello[of_hello.len() / 2],
                of_hello[0],
                of_hello[of_hello.len() - 1],
                of_sled[of_sled.len() / 2],
                of_sled[0],
                of_sled[of_sled.len() - 1],
            );
        }
    }
    if let Some(cluster) = &cluster {
        if args.summary_devices > 0 {
            summary_on_postgres(cluster, &bin, &tmp, args.summary_devices).await?;
        }
    }
    println!("load average at the end {}", load_average());

    if let Some(m) = args.sled_summary_devices {
        sled_summary(m).await?;
    }
    Ok(())
}

/// One measurement: the posts and the CPU each part used meanwhile.
async fn measure(
    addrs: &[SocketAddr],
    servers: &[u32],
    postmaster: Option<u32>,
    requests: &[Vec<client::Post>],
    concurrency: usize,
) -> anyhow::Result<(Stats, cpu::Split)> {
    let before = cpu::snapshot(servers, postmaster);
    let stats = blast(addrs, requests, concurrency).await?;
    let split = before.until(cpu::snapshot(servers, postmaster));
    Ok((stats, split))
}

/// The database name of a test cluster's URL (`postgres://USER@HOST/DB?...`).
fn db_name(url: &str) -> anyhow::Result<String> {
    Ok(url
        .split('/')
        .nth(3)
        .and_then(|rest| rest.split('?').next())
        .context("the database's name")?
        .to_owned())
}

fn path_str(p: &std::path::Path) -> anyhow::Result<&str> {
    p.to_str().context("a temp path that is not UTF-8")
}

/// Times `GET /api/v1/summary` 20 times, each on a new connection; checks the total.
async fn time_summary(addr: SocketAddr, m: usize) -> anyhow::Result<(Duration, Duration)> {
    let mut times = Vec::new();
    for _ in 0..20 {
        let t = Instant::now();
        let body = get(addr, "/api/v1/summary").await?;
        times.push(t.elapsed());
        let v: serde_json::Value = serde_json::from_slice(&body)?;
        if v["total"] != m as u64 {
            bail!("summary total {} != {m}", v["total"]);
        }
    }
    times.sort();
    Ok((times[times.len() / 2], times[times.len() - 1]))
}

/// Seeds `m` devices into a fresh database (by SQL: see `targets::seed_fleet`) behind a
/// collector process and times its summary.
async fn summary_on_postgres(
    cluster: &shoal_testkit::PgCluster,
    bin: &std::path::Path,
    tmp: &TempDir,
    m: usize,
) -> anyhow::Result<()> {
    let url = cluster.create_database();
    let db = db_name(&url)?;
    // The collector creates the schema; the fleet is seeded behind it (reads go to the database).
    let server = targets::collector(bin, &tmp.0, "pg-summary", &["--store", &url])?;
    eprintln!("seeding {m} devices into PostgreSQL (SQL)...");
    let t = Instant::now();
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)?
        .as_secs();
    targets::seed_fleet(cluster, &db, m, now)?;
    eprintln!("seeded in {:.1?}", t.elapsed());
    let (p50, max) = time_summary(server.addr(), m).await?;
    println!(
        "summary over {m} devices on PostgreSQL (GET /api/v1/summary, collector process, new connection each, 20 runs): p50 {p50:.2?}, max {max:.2?}"
    );
    Ok(())
}

/// Fills an in-process sled store with `m` devices through the same ingest path (signatures
/// skipped: they are not what a summary costs) and times its opening and GET /api/v1/summary.
async fn sled_summary(m: usize) -> anyhow::Result<()> {
    let tmp = TempDir::new("summary")?;
    eprintln!("filling a sled store with {m} devices...");
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
    let store = SledStore::open(&tmp.0)?;
    let state = AppState::new(
        store,
        Config {
            enroll_tokens: Some(Tokens::new([ENROLL_TOKEN])),
            ..Config::default()
        },
    )?;
    println!(
        "sled store open (restart) with {m} devices: {:.2?}",
        t.elapsed()
    );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let addr = listener.local_addr()?;
    tokio::spawn(serve::run(
        listener,
        None,
        app(state),
        std::future::pending(),
    ));
    let (p50, max) = time_summary(addr, m).await?;
    println!(
        "summary over {m} devices on sled (in-process, new connection each, 20 runs): p50 {p50:.2?}, max {max:.2?}"
    );
    Ok(())
}
