//! `PgCluster`: a real, throwaway PostgreSQL server for tests — `initdb` in a temp dir, the
//! server on a free port of 127.0.0.1 and a unix socket in that dir, run as an unprivileged user
//! when the tests run as root (PostgreSQL refuses root), stopped and deleted at the end; never a
//! cluster the machine runs. `PgCluster::shared()` is one per test process (each test takes a
//! database of its own); `PgCluster::start()` is a test's own, to stop and restart.

use std::os::unix::fs::PermissionsExt as _;
use std::os::unix::process::CommandExt as _;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::{Mutex, OnceLock};
use std::time::{Duration, Instant};

use crate::requirements::{cannot_run, is_root};

/// The database superuser of a test cluster (trust authentication, test-only).
pub const PG_USER: &str = "shoal";
/// The account the server runs as when the tests run as root.
const UNPRIVILEGED: (u32, u32) = (65534, 65534);

/// Where PostgreSQL's server programs are: `$SHOAL_PG_BIN`, else the newest
/// `/usr/lib/postgresql/*/bin` (Debian), else `initdb` on `PATH`.
pub fn postgres_bin_dir() -> Option<PathBuf> {
    if let Some(dir) = std::env::var_os("SHOAL_PG_BIN") {
        return Some(PathBuf::from(dir));
    }
    let mut versions: Vec<(u32, PathBuf)> = std::fs::read_dir("/usr/lib/postgresql")
        .into_iter()
        .flatten()
        .flatten()
        .filter_map(|e| {
            let version = e.file_name().to_str()?.parse().ok()?;
            let bin = e.path().join("bin");
            bin.join("initdb").is_file().then_some((version, bin))
        })
        .collect();
    versions.sort();
    if let Some((_, bin)) = versions.pop() {
        return Some(bin);
    }
    crate::requirements::on_path("initdb").then(|| {
        let path = std::env::var_os("PATH").unwrap_or_default();
        std::env::split_paths(&path)
            .find(|d| d.join("initdb").is_file())
            .unwrap_or_default()
    })
}

/// A running test cluster; stopped (fast shutdown) and deleted when dropped.
#[derive(Debug)]
pub struct PgCluster {
    bin: PathBuf,
    dir: PathBuf,
    port: u16,
    child: Mutex<Option<Child>>,
    next_db: AtomicU32,
    /// `-c name=value` settings after the defaults (so they win).
    settings: Vec<(String, String)>,
}

/// A server certificate for a TLS test cluster (PEM, made by the test).
#[derive(Debug, Clone, Copy)]
pub struct PgTls<'a> {
    /// The certificate chain, server first.
    pub cert_chain_pem: &'a str,
    pub key_pem: &'a str,
}

impl PgCluster {
    /// A new cluster of the test's own, or `None` after a loud `SKIPPED` line when PostgreSQL is
    /// not installed (a panic under `SHOAL_E2E=1`).
    pub fn start() -> Option<PgCluster> {
        PgCluster::start_with(&[], None)
    }

    /// `start` with `-c name=value` settings that override the test defaults (e.g. `fsync=on`
    /// for a benchmark), and with `tls`, `ssl=on` on that certificate (TCP clients may then use
    /// TLS; the unix socket never does).
    pub fn start_with(settings: &[(&str, &str)], tls: Option<PgTls<'_>>) -> Option<PgCluster> {
        let Some(bin) = postgres_bin_dir() else {
            return cannot_run(
                "PostgreSQL is not installed",
                "no initdb under /usr/lib/postgresql/*/bin, $SHOAL_PG_BIN or PATH: apt-get install postgresql",
            );
        };
        let dir = std::env::temp_dir().join(format!(
            "shoal-pg-{}-{}",
            std::process::id(),
            NEXT_CLUSTER.fetch_add(1, Ordering::Relaxed)
        ));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(dir.join("socket"))
            .unwrap_or_else(|e| panic!("creating {}: {e}", dir.display()));
        std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(0o700))
            .unwrap_or_else(|e| panic!("chmod {}: {e}", dir.display()));
        if is_root() {
            chown_tree(&dir, UNPRIVILEGED);
        }
        let initdb = as_server_user(Command::new(bin.join("initdb")))
            .args([
                "--auth=trust",
                "--encoding=UTF8",
                "--locale=C",
                "--no-sync",
                "-U",
                PG_USER,
                "-D",
            ])
            .arg(dir.join("data"))
            .output()
            .unwrap_or_else(|e| panic!("cannot run {}/initdb: {e}", bin.display()));
        assert!(
            initdb.status.success(),
            "initdb failed: {}{}",
            String::from_utf8_lossy(&initdb.stdout),
            String::from_utf8_lossy(&initdb.stderr)
        );
        let mut settings: Vec<(String, String)> = settings
            .iter()
            .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
            .collect();
        if let Some(tls) = tls {
            // The server refuses a key that others may read; it must own both files.
            for (name, pem) in [
                ("server.crt", tls.cert_chain_pem),
                ("server.key", tls.key_pem),
            ] {
                let path = dir.join(name);
                std::fs::write(&path, pem)
                    .unwrap_or_else(|e| panic!("writing {}: {e}", path.display()));
                std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o600))
                    .unwrap_or_else(|e| panic!("chmod {}: {e}", path.display()));
                if is_root() {
                    chown_tree(&path, UNPRIVILEGED);
                }
                let setting = if name == "server.crt" {
                    "ssl_cert_file"
                } else {
                    "ssl_key_file"
                };
                settings.push((setting.to_owned(), path.display().to_string()));
            }
            settings.push(("ssl".to_owned(), "on".to_owned()));
        }
        let port = free_port();
        let cluster = PgCluster {
            bin,
            dir,
            port,
            child: Mutex::new(None),
            next_db: AtomicU32::new(0),
            settings,
        };
        cluster.run();
        Some(cluster)
    }

    /// The process's one shared cluster (started at first use, stopped when the process exits),
    /// or `None` after a loud skip.
    pub fn shared() -> Option<&'static PgCluster> {
        static SHARED: OnceLock<Option<PgCluster>> = OnceLock::new();
        SHARED
            .get_or_init(|| {
                let cluster = PgCluster::start()?;
                let pid = cluster.pid();
                let dir = cluster.dir.clone();
                // Statics are never dropped: stop it when the test process exits.
                let _ = AT_EXIT.set((pid, dir));
                // SAFETY: registers a plain function without arguments.
                unsafe { libc::atexit(stop_shared_at_exit) };
                Some(cluster)
            })
            .as_ref()
    }

    /// Starts the server on its data directory (again, after `stop`) and waits until it answers.
    fn run(&self) {
        let mut cmd = as_server_user(Command::new(self.bin.join("postgres")));
        cmd.arg("-D")
            .arg(self.dir.join("data"))
            .args(["-p", &self.port.to_string(), "-k"])
            .arg(self.dir.join("socket"))
            .args(["-c", "listen_addresses=127.0.0.1"])
            // A test cluster: nothing must survive a power cut, only a crash of the server
            // (commits are still written before they return), so skip the fsyncs.
            .args(["-c", "fsync=off", "-c", "full_page_writes=off"])
            .args(["-c", "max_connections=400", "-c", "shared_buffers=32MB"])
            .args(
                self.settings
                    .iter()
                    .flat_map(|(k, v)| ["-c".to_owned(), format!("{k}={v}")]),
            )
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::from(
                std::fs::OpenOptions::new()
                    .create(true)
                    .append(true)
                    .open(self.log_path())
                    .unwrap_or_else(|e| panic!("creating the server log: {e}")),
            ));
        crate::command::die_with_parent(&mut cmd);
        // PR_SET_PDEATHSIG fires when the spawning *thread* ends: spawn from one that never does.
        let (tx, rx) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            let _ = tx.send(cmd.spawn());
            loop {
                std::thread::park();
            }
        });
        let child = rx
            .recv()
            .expect("the spawning thread answers")
            .unwrap_or_else(|e| panic!("cannot start postgres: {e}"));
        *self.child.lock().unwrap_or_else(|p| p.into_inner()) = Some(child);
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            let ready = Command::new(self.bin.join("pg_isready"))
                .args(["-q", "-h"])
                .arg(self.dir.join("socket"))
                .args(["-p", &self.port.to_string()])
                .status()
                .is_ok_and(|s| s.success());
            if ready {
                return;
            }
            assert!(
                Instant::now() < deadline,
                "postgres did not start within 60 s:\n{}",
                self.log()
            );
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    /// Fast shutdown (clients disconnected, then the server exits) and waits for it.
    pub fn stop(&self) {
        if let Some(mut child) = self.child.lock().unwrap_or_else(|p| p.into_inner()).take() {
            // SAFETY: kill(2) on our own child's pid.
            unsafe { libc::kill(child.id() as libc::pid_t, libc::SIGINT) };
            let _ = child.wait();
        }
    }

    /// Stops the server and starts it again on the same data, port and socket.
    pub fn restart(&self) {
        self.stop();
        self.run();
    }

    /// Starts the server again after `stop`.
    pub fn start_again(&self) {
        self.run();
    }

    fn pid(&self) -> u32 {
        self.child
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .as_ref()
            .map_or(0, Child::id)
    }

    fn log_path(&self) -> PathBuf {
        self.dir.join("server.log")
    }

    /// What the server logged.
    pub fn log(&self) -> String {
        std::fs::read_to_string(self.log_path()).unwrap_or_default()
    }

    /// Its TCP port (127.0.0.1).
    pub fn port(&self) -> u16 {
        self.port
    }

    /// The URL of database `db` over the unix socket (no TLS, no password).
    pub fn url(&self, db: &str) -> String {
        format!(
            "postgres://{PG_USER}@localhost/{db}?host={}&port={}",
            self.dir.join("socket").display(),
            self.port
        )
    }

    /// The directory of the cluster's files (its data directory is `data` inside).
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// The URL of database `db` over TCP on 127.0.0.1.
    pub fn tcp_url(&self, db: &str) -> String {
        format!(
            "postgres://{PG_USER}@127.0.0.1:{}/{db}?sslmode=disable",
            self.port
        )
    }

    /// Creates an empty database of the test's own; returns its URL.
    pub fn create_database(&self) -> String {
        let name = format!("t{}", self.next_db.fetch_add(1, Ordering::Relaxed));
        self.psql("postgres", &format!("CREATE DATABASE {name}"));
        self.url(&name)
    }

    /// Runs `sql` in `db` with `psql`; returns its unaligned output, panics on an error.
    pub fn psql(&self, db: &str, sql: &str) -> String {
        let out = Command::new(self.bin.join("psql"))
            .args(["-X", "-q", "-A", "-t", "-v", "ON_ERROR_STOP=1", "-h"])
            .arg(self.dir.join("socket"))
            .args([
                "-p",
                &self.port.to_string(),
                "-U",
                PG_USER,
                "-d",
                db,
                "-c",
                sql,
            ])
            .output()
            .unwrap_or_else(|e| panic!("cannot run psql: {e}"));
        assert!(
            out.status.success(),
            "psql {sql:?} failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout).trim().to_owned()
    }
}

impl Drop for PgCluster {
    fn drop(&mut self) {
        self.stop();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

static NEXT_CLUSTER: AtomicU32 = AtomicU32::new(0);
static AT_EXIT: OnceLock<(u32, PathBuf)> = OnceLock::new();

extern "C" fn stop_shared_at_exit() {
    if let Some((pid, dir)) = AT_EXIT.get() {
        let pid = *pid as libc::pid_t;
        // SAFETY: kill/waitpid on the shared cluster's server, our child. Immediate shutdown: its
        // data is deleted next.
        unsafe {
            libc::kill(pid, libc::SIGQUIT);
            let deadline = Instant::now() + Duration::from_secs(10);
            while libc::waitpid(pid, std::ptr::null_mut(), libc::WNOHANG) == 0
                && Instant::now() < deadline
            {
                std::thread::sleep(Duration::from_millis(20));
            }
        }
        let _ = std::fs::remove_dir_all(dir);
    }
}

/// `cmd` run as the unprivileged account when we are root (PostgreSQL refuses to run as root).
fn as_server_user(mut cmd: Command) -> Command {
    if is_root() {
        cmd.uid(UNPRIVILEGED.0).gid(UNPRIVILEGED.1);
        // Its home (/nonexistent) does not exist: run from /.
        cmd.current_dir("/");
    }
    cmd
}

fn chown_tree(path: &Path, (uid, gid): (u32, u32)) {
    std::os::unix::fs::chown(path, Some(uid), Some(gid))
        .unwrap_or_else(|e| panic!("chown {}: {e}", path.display()));
    if path.is_dir() {
        for entry in std::fs::read_dir(path).into_iter().flatten().flatten() {
            chown_tree(&entry.path(), (uid, gid));
        }
    }
}

/// A TCP port free on 127.0.0.1 a moment ago.
fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .unwrap_or_else(|e| panic!("finding a free port: {e}"))
}
