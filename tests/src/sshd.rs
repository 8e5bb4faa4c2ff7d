//! `SshServer`: a real OpenSSH `sshd` started by the test on a free loopback port, with a host key
//! of its own, serving the bare repositories under one directory through `git-shell` to the
//! deploy keys it is given (`command=` in its authorized_keys, as a forge restricts a deploy key),
//! and stopped by its PID when dropped.

use std::io::Write as _;
use std::net::{Ipv4Addr, TcpListener};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use crate::command::run;
use crate::requirements::{cannot_run, require_tools};

/// Where Debian's `openssh-server` puts the daemon (not on a non-root `PATH`); sshd must be
/// started by an absolute path to re-execute itself.
const SSHD: &str = "/usr/sbin/sshd";

/// A running `sshd` for git over ssh.
pub struct SshServer {
    dir: tempfile::TempDir,
    project_root: PathBuf,
    port: u16,
    user: String,
    child: Option<Child>,
}

impl SshServer {
    /// Starts sshd for the repositories under `project_root`, or `None` (after a loud skip, or a
    /// panic under `SHOAL_E2E=1`) when `sshd`, `ssh` or `git-shell` is missing.
    pub fn start(project_root: impl AsRef<Path>) -> Option<Self> {
        if !require_tools(&["ssh", "ssh-keygen", "git-shell"]) {
            return None;
        }
        if !Path::new(SSHD).is_file() {
            return cannot_run(
                "the ssh tests need a real sshd",
                &format!("{SSHD} is missing: apt-get install openssh-server"),
            );
        }
        let dir = tempfile::tempdir().expect("a temp dir for sshd");
        run(Command::new("ssh-keygen")
            .args([
                "-q",
                "-t",
                "ed25519",
                "-N",
                "",
                "-C",
                "shoal-test-host",
                "-f",
            ])
            .arg(dir.path().join("host_ed25519")));
        std::fs::write(dir.path().join("authorized_keys"), "").expect("authorized_keys");
        let user = run(Command::new("id").arg("-un")).trim().to_owned();
        let mut server = SshServer {
            dir,
            project_root: project_root.as_ref().to_path_buf(),
            port: 0,
            user,
            child: None,
        };
        server.spawn();
        Some(server)
    }

    fn spawn(&mut self) {
        // sshd, run as root, wants its privilege separation directory, which the package's
        // service unit would make.
        if crate::is_root() {
            std::fs::create_dir_all("/run/sshd").expect("mkdir /run/sshd");
        }
        self.port = TcpListener::bind((Ipv4Addr::LOCALHOST, 0))
            .and_then(|l| l.local_addr())
            .expect("a free port")
            .port();
        let dir = self.dir.path();
        let config = format!(
            "Port {port}\nListenAddress 127.0.0.1\nHostKey {dir}/host_ed25519\nPidFile none\n\
             AuthorizedKeysFile {dir}/authorized_keys\nStrictModes no\nUsePAM no\n\
             PasswordAuthentication no\nKbdInteractiveAuthentication no\nPubkeyAuthentication yes\n\
             PermitRootLogin prohibit-password\nAllowAgentForwarding no\nAllowTcpForwarding no\n\
             X11Forwarding no\nPermitTTY no\nLogLevel VERBOSE\n",
            port = self.port,
            dir = dir.display()
        );
        std::fs::write(dir.join("sshd_config"), config).expect("sshd_config");
        let log = std::fs::File::options()
            .create(true)
            .append(true)
            .open(dir.join("sshd.log"))
            .expect("sshd.log");
        let mut command = Command::new(SSHD);
        command
            .args(["-D", "-e", "-f"])
            .arg(dir.join("sshd_config"))
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(log);
        crate::command::die_with_parent(&mut command);
        let mut child = command
            .spawn()
            .unwrap_or_else(|e| panic!("cannot start {SSHD}: {e}"));
        // Ready when it says so (a probe connection would show in `connections`).
        let deadline = Instant::now() + Duration::from_secs(10);
        let ready = format!("Server listening on 127.0.0.1 port {}", self.port);
        while !self.log().contains(&ready) {
            if let Ok(Some(status)) = child.try_wait() {
                panic!("sshd exited ({status}) before listening:\n{}", self.log());
            }
            assert!(
                Instant::now() < deadline,
                "sshd did not listen on {} within 10 s:\n{}",
                self.port,
                self.log()
            );
            std::thread::sleep(Duration::from_millis(20));
        }
        self.child = Some(child);
    }

    /// `ssh://USER@127.0.0.1:PORT/<project_root>/<repo>`.
    pub fn url(&self, repo: &str) -> String {
        format!(
            "ssh://{}@127.0.0.1:{}{}/{repo}",
            self.user,
            self.port,
            self.project_root.display()
        )
    }

    pub fn port(&self) -> u16 {
        self.port
    }

    /// Lets `public_line` (`ssh-ed25519 AAAA… comment`) fetch, and only fetch: the key may run
    /// nothing but what `git-shell` allows, with no forwarding or terminal (`restrict`).
    pub fn authorize(&self, public_line: &str) {
        let mut file = std::fs::File::options()
            .append(true)
            .open(self.dir.path().join("authorized_keys"))
            .expect("open authorized_keys");
        writeln!(
            file,
            "restrict,command=\"git-shell -c \\\"$SSH_ORIGINAL_COMMAND\\\"\" {public_line}"
        )
        .expect("write authorized_keys");
    }

    /// The line a device pins: `[127.0.0.1]:PORT ssh-ed25519 AAAA…`.
    pub fn known_hosts_line(&self) -> String {
        let public = std::fs::read_to_string(self.dir.path().join("host_ed25519.pub"))
            .expect("read the host key");
        let mut fields = public.split_whitespace();
        let (kind, key) = (fields.next().unwrap_or(""), fields.next().unwrap_or(""));
        format!("[127.0.0.1]:{} {kind} {key}", self.port)
    }

    /// The host key's `SHA256:…` fingerprint, as `ssh-keygen -l` prints it.
    pub fn host_fingerprint(&self) -> String {
        let listing = run(Command::new("ssh-keygen")
            .arg("-lf")
            .arg(self.dir.path().join("host_ed25519.pub")));
        listing.split(' ').nth(1).unwrap_or_default().to_owned()
    }

    /// How many ssh connections sshd accepted so far (from its log).
    pub fn connections(&self) -> usize {
        self.log()
            .lines()
            .filter(|l| l.starts_with("Connection from "))
            .count()
    }

    /// sshd's log (`-e`, LogLevel VERBOSE).
    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("sshd.log")).unwrap_or_default()
    }

    /// Kills sshd (by its PID) and waits for it: the port refuses connections afterwards.
    pub fn stop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

impl Drop for SshServer {
    fn drop(&mut self) {
        self.stop();
    }
}
