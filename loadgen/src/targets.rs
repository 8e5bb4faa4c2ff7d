//! What the load generator measures against, each in a process of its own: the hello-world axum
//! server (this binary again, `--serve-hello`), `shoal-collector serve` on a fresh sled directory
//! or on a database of a private PostgreSQL cluster (durable: `fsync` on), and a million-device
//! fleet seeded into the real schema by SQL for the summary. Only processes it started are
//! stopped, by PID.

use std::io::{BufRead as _, BufReader};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};

use anyhow::{bail, Context as _};
use axum::body::Bytes;
use shoal_proto::Status;
use shoal_testkit::{Collector, CollectorSpec, PgCluster};

/// The enrollment token every collector started here accepts.
pub const ENROLL_TOKEN: &str = "loadgen-enroll-token-000000";

/// A temp directory removed when dropped.
pub struct TempDir(pub PathBuf);

impl TempDir {
    pub fn new(tag: &str) -> anyhow::Result<TempDir> {
        let p = std::env::temp_dir().join(format!("shoal-loadgen-{tag}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&p);
        std::fs::create_dir_all(&p).with_context(|| format!("creating {}", p.display()))?;
        Ok(TempDir(p))
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// Runs the hello-world server in this process (the child side of `HelloServer`): answers
/// `POST /api/v1/reports` with the body's length, on the same runtime shape as the collector.
pub fn serve_hello() -> anyhow::Result<()> {
    let runtime = tokio::runtime::Runtime::new()?;
    runtime.block_on(async {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
        println!("listening on http://{}", listener.local_addr()?);
        let hello = axum::Router::new().route(
            "/api/v1/reports",
            axum::routing::post(|body: Bytes| async move { format!("{}", body.len()) }),
        );
        axum::serve(listener, hello).await?;
        anyhow::Ok(())
    })
}

/// The hello-world server as a child process (this binary with `--serve-hello`).
pub struct HelloServer {
    child: Child,
    pub addr: SocketAddr,
}

impl HelloServer {
    pub fn start() -> anyhow::Result<HelloServer> {
        let exe = std::env::current_exe().context("finding this program")?;
        let mut child = Command::new(&exe)
            .arg("--serve-hello")
            .stdout(Stdio::piped())
            .spawn()
            .with_context(|| format!("starting {} --serve-hello", exe.display()))?;
        let mut line = String::new();
        BufReader::new(child.stdout.take().context("its stdout")?).read_line(&mut line)?;
        let addr = line
            .trim()
            .strip_prefix("listening on http://")
            .with_context(|| format!("the hello server said {line:?}"))?
            .parse()?;
        Ok(HelloServer { child, addr })
    }
}

impl HelloServer {
    pub fn pid(&self) -> u32 {
        self.child.id()
    }
}

impl Drop for HelloServer {
    fn drop(&mut self) {
        // Our own child, by PID.
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// `shoal-collector serve` with the enrollment token, its log in `dir`.
pub fn collector(bin: &Path, dir: &Path, name: &str, store: &[&str]) -> anyhow::Result<Collector> {
    let enroll = dir.join("enroll-tokens");
    std::fs::write(&enroll, format!("{ENROLL_TOKEN}\n"))?;
    let mut spec = CollectorSpec::new(bin, PathBuf::new())
        .args(store)
        .args(&["--enroll-token-file", enroll.to_str().context("temp path")?]);
    if store.contains(&"--store") {
        // PostgreSQL replicas share one collector key, made once by the binary itself.
        let key = dir.join("collector.key");
        if !key.exists() {
            let made = std::process::Command::new(bin)
                .args(["key", "--generate", "--key-file"])
                .arg(&key)
                .output()?;
            if !made.status.success() {
                bail!(
                    "making the collector key: {}",
                    String::from_utf8_lossy(&made.stderr)
                );
            }
        }
        spec = spec.args(&["--key-file", key.to_str().context("temp path")?]);
    }
    let spec = spec.log(dir.join(format!("{name}.log")));
    Ok(Collector::start(&spec))
}

/// A private PostgreSQL cluster as durable as a production one (`fsync`, full page writes and
/// synchronous commit on: a 200 means the commit is on disk, as sled's flush does).
/// With `statements`, `pg_stat_statements` is loaded (where the database's time goes).
pub fn durable_cluster(statements: bool) -> anyhow::Result<PgCluster> {
    let mut settings = vec![
        ("fsync", "on"),
        ("full_page_writes", "on"),
        ("synchronous_commit", "on"),
        ("shared_buffers", "128MB"),
    ];
    if statements {
        settings.push(("shared_preload_libraries", "pg_stat_statements"));
        settings.push(("pg_stat_statements.track", "all"));
    }
    PgCluster::start_with(&settings, None)
        .context("PostgreSQL is not installed (apt-get install postgresql), or use --skip-postgres")
}

/// Fills database `db` (its schema already migrated by a collector) with `m` devices by SQL
/// (generate_series into the real tables: device rows with a record and a pin, counters and
/// last-seen counts spread over the 16 shards as writers leave them, the last-seen seconds over
/// the last ten minutes). A bulk path: the ingest path is measured separately.
pub fn seed_fleet(cluster: &PgCluster, db: &str, m: usize, now: u64) -> anyhow::Result<()> {
    let statuses: Vec<String> = Status::ALL
        .iter()
        .map(|s| format!("'{}'", s.as_str()))
        .collect();
    let kinds = Status::ALL.len();
    let sql = format!(
        "CREATE TEMP TABLE seed AS SELECT i, \
             (ARRAY[{statuses}])[1 + i % {kinds}] AS status, \
             lpad(to_hex(i % 5), 40, '0') AS commit, \
             {now} - i % 600 AS seen \
           FROM generate_series(0, {last}) AS i; \
         INSERT INTO shoal_device (id, pinned_key, record) \
           SELECT 'fleet-' || lpad(i::text, 7, '0'), 'ed25519:seed-' || i, \
             convert_to(json_build_object( \
               'key_id', 'ed25519:seed-' || i, 'first_seen', {now} - 86400, 'last_seen', seen, \
               'history_next', 1, \
               'report', json_build_object('device_id', 'fleet-' || lpad(i::text, 7, '0'), \
                 'status', status, 'sequence', 1, 'commit', commit, 'agent_version', 'loadgen', \
                 'labels', json_build_object('site', 's' || (i % 10))))::text, 'UTF8') \
           FROM seed; \
         INSERT INTO shoal_counter (kind, name, shard, n) \
           SELECT 'status', status, i % 16, count(*) FROM seed GROUP BY status, i % 16; \
         INSERT INTO shoal_counter (kind, name, shard, n) \
           SELECT 'commit', commit, i % 16, count(*) FROM seed GROUP BY commit, i % 16; \
         INSERT INTO shoal_seen (second, shard, n) \
           SELECT seen, i % 16, count(*) FROM seed GROUP BY seen, i % 16; \
         ANALYZE shoal_device; ANALYZE shoal_counter; ANALYZE shoal_seen;",
        statuses = statuses.join(","),
        last = m.saturating_sub(1),
    );
    cluster.psql(db, &sql);
    let n = cluster.psql(
        db,
        "SELECT count(*) FROM shoal_device WHERE record IS NOT NULL",
    );
    if n != m.to_string() {
        bail!("seeded {n} devices, wanted {m}");
    }
    Ok(())
}

/// The `shoal-collector` binary: `--collector`, else beside this program.
pub fn collector_bin(given: Option<PathBuf>) -> anyhow::Result<PathBuf> {
    let bin = match given {
        Some(b) => b,
        None => std::env::current_exe()?
            .parent()
            .context("this program's directory")?
            .join("shoal-collector"),
    };
    if !bin.is_file() {
        bail!(
            "no collector binary at {} (cargo build --profile server -p shoal-collector, or --collector PATH)",
            bin.display()
        );
    }
    Ok(bin)
}
