//! The transport of an ssh source: the system's `ssh` (the first on `PATH`), spawned by the agent
//! itself with exactly the options it wants — batch mode, the deploy key only, the pinned
//! known_hosts only, strict host key checking, no agent, no forwarding, no `ssh_config` — and
//! git's protocol spoken over its stdin and stdout. What ssh says on stderr is kept, so that a
//! refused host key or deploy key is named as such ([`classify`]) instead of as a network failure.
//! Must not read anything from `~/.ssh` or `/etc/ssh/ssh_config`, prompt, or show a key's content.

use std::any::Any;
use std::borrow::Cow;
use std::ffi::OsString;
use std::io::{BufRead, BufReader};
use std::process::{Child, ChildStdin, ChildStdout, Command, Stdio};
use std::sync::{Arc, Condvar, Mutex};
use std::time::Duration;

use gix::bstr::{BStr, ByteSlice};
use gix::protocol::transport::client::blocking_io::{RequestWriter, SetServiceResponse, Transport};
use gix::protocol::transport::client::git::blocking_io::Connection;
use gix::protocol::transport::client::git::ConnectMode;
use gix::protocol::transport::client::{self, MessageKind, TransportWithoutIO, WriteMode};
use gix::protocol::transport::{Protocol, Service};

use crate::config::{SourceConfig, SshAccess};

use super::FetchError;

/// The program run for an ssh source. Not configurable on purpose: the options below are
/// OpenSSH's, and a wrapper script would be a way around them.
pub const PROGRAM: &str = "ssh";

/// The most lines of ssh's stderr kept for a message; the rest is logged only.
const MAX_LINES: usize = 64;

/// The arguments given to `ssh` before the destination: nothing is taken from a config file
/// (`-F /dev/null`), the environment or an agent, and nothing may prompt.
pub fn options(access: &SshAccess, timeout: Duration) -> Vec<OsString> {
    let seconds = timeout.as_secs().max(1);
    let mut args: Vec<OsString> = vec!["-F".into(), "/dev/null".into()];
    for option in [
        "BatchMode=yes".to_owned(),
        "IdentitiesOnly=yes".to_owned(),
        "IdentityAgent=none".to_owned(),
        "PubkeyAuthentication=yes".to_owned(),
        "PasswordAuthentication=no".to_owned(),
        "KbdInteractiveAuthentication=no".to_owned(),
        "HostbasedAuthentication=no".to_owned(),
        "StrictHostKeyChecking=yes".to_owned(),
        // `config::check_ssh_path` keeps these paths free of what ssh would split or expand.
        format!("UserKnownHostsFile={}", access.known_hosts.file.display()),
        "GlobalKnownHostsFile=/dev/null".to_owned(),
        "UpdateHostKeys=no".to_owned(),
        "CheckHostIP=no".to_owned(),
        "ForwardAgent=no".to_owned(),
        "ForwardX11=no".to_owned(),
        "ClearAllForwardings=yes".to_owned(),
        "PermitLocalCommand=no".to_owned(),
        "RequestTTY=no".to_owned(),
        format!("ConnectTimeout={seconds}"),
        // A server that stops answering mid-transfer is dropped after about `timeout`.
        format!("ServerAliveInterval={}", seconds.div_ceil(3).max(1)),
        "ServerAliveCountMax=3".to_owned(),
    ] {
        args.push("-o".into());
        args.push(option.into());
    }
    args.push("-i".into());
    args.push(access.key.file.clone().into_os_string());
    args
}

/// What ssh wrote on stderr, shared between the thread that reads it and the fetch that names
/// a failure from it.
#[derive(Default)]
pub struct Stderr {
    lines: Mutex<Vec<String>>,
    /// Set once ssh closed its stderr (it exited).
    done: Mutex<bool>,
    closed: Condvar,
}

impl Stderr {
    /// The lines ssh wrote, waiting up to `within` for it to close stderr (by the time a
    /// failure is named, gix has dropped the transport, which kills and reaps ssh).
    pub fn lines(&self, within: Duration) -> Vec<String> {
        let done = lock(&self.done);
        // A timeout leaves what was read so far; a poisoned flag is read like a closed one.
        drop(self.closed.wait_timeout_while(done, within, |done| !*done));
        lock(&self.lines).clone()
    }

    fn read_from(self: Arc<Self>, stderr: std::process::ChildStderr) {
        for line in BufReader::new(stderr).lines() {
            let Ok(line) = line else { break };
            tracing::debug!(target: "shoal_agent::fetch::ssh", %line, "ssh");
            let mut lines = lock(&self.lines);
            if lines.len() < MAX_LINES {
                lines.push(line);
            }
        }
        *lock(&self.done) = true;
        self.closed.notify_all();
    }
}

/// A git transport over one `ssh` process, started at the handshake like gix's own.
pub struct SshTransport {
    url: gix::Url,
    args: Vec<OsString>,
    stderr: Arc<Stderr>,
    desired_version: Protocol,
    child: Option<Child>,
    connection: Option<Connection<ChildStdout, ChildStdin>>,
}

impl SshTransport {
    pub fn new(
        url: gix::Url,
        access: &SshAccess,
        timeout: Duration,
        desired_version: Protocol,
        stderr: Arc<Stderr>,
    ) -> Self {
        SshTransport {
            url,
            args: options(access, timeout),
            stderr,
            desired_version,
            child: None,
            connection: None,
        }
    }

    fn spawn(&mut self, service: Service) -> Result<(), client::Error> {
        let invalid = |what: &str| {
            client::Error::Io(std::io::Error::new(
                std::io::ErrorKind::InvalidInput,
                format!("the ssh URL's {what} could be taken for an option of ssh"),
            ))
        };
        let host = self.url.host().ok_or_else(|| invalid("host"))?;
        if host.starts_with('-') {
            return Err(invalid("host"));
        }
        let mut command = Command::new(PROGRAM);
        command.args(&self.args);
        if let Some(port) = self.url.port {
            command.arg("-p").arg(port.to_string());
        }
        if let Some(user) = self.url.user() {
            if user.starts_with('-') {
                return Err(invalid("user"));
            }
            command.arg("-l").arg(user);
        }
        let path = gix::url::expand_path::for_shell(self.url.path.clone());
        if path.trim().first() == Some(&b'-') {
            return Err(invalid("path"));
        }
        // The remote command as git sends it: the service and the path, quoted for the
        // server's shell.
        let remote = format!(
            "{} {}",
            service.as_str(),
            quote(path.to_str_lossy().as_ref())
        );
        command
            .arg("--")
            .arg(host)
            .arg(remote)
            // Messages in English, to be named (`classify`); no agent to fall back on.
            .env("LC_ALL", "C")
            .env("LANG", "C")
            .env_remove("SSH_AUTH_SOCK")
            .env_remove("GIT_PROTOCOL")
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        tracing::debug!(?command, "starting ssh");
        let mut child = command
            .spawn()
            .map_err(|source| client::Error::InvokeProgram {
                source,
                command: PROGRAM.into(),
            })?;
        let stdout = child.stdout.take().expect("stdout is piped");
        let stdin = child.stdin.take().expect("stdin is piped");
        let stderr = child.stderr.take().expect("stderr is piped");
        let collector = Arc::clone(&self.stderr);
        std::thread::Builder::new()
            .name("ssh stderr".into())
            .stack_size(128 * 1024)
            .spawn(move || collector.read_from(stderr))
            .map_err(client::Error::Io)?;
        self.child = Some(child);
        self.connection = Some(Connection::new(
            stdout,
            stdin,
            self.desired_version,
            path,
            None::<(&str, Option<u16>)>,
            ConnectMode::Process,
            false,
        ));
        Ok(())
    }
}

impl TransportWithoutIO for SshTransport {
    fn to_url(&self) -> Cow<'_, BStr> {
        Cow::Owned(self.url.to_bstring())
    }

    fn connection_persists_across_multiple_requests(&self) -> bool {
        true
    }

    fn configure(&mut self, _config: &dyn Any) -> gix::error::Result {
        Ok(())
    }
}

impl Transport for SshTransport {
    fn handshake<'a>(
        &mut self,
        service: Service,
        extra_parameters: &'a [(&'a str, Option<&'a str>)],
    ) -> Result<SetServiceResponse<'_>, client::Error> {
        self.spawn(service)?;
        self.connection
            .as_mut()
            .ok_or(client::Error::MissingHandshake)?
            .handshake(service, extra_parameters)
    }

    fn request(
        &mut self,
        write_mode: WriteMode,
        on_into_read: MessageKind,
        trace: bool,
    ) -> Result<RequestWriter<'_>, client::Error> {
        self.connection
            .as_mut()
            .ok_or(client::Error::MissingHandshake)?
            .request(write_mode, on_into_read, trace)
    }
}

impl Drop for SshTransport {
    fn drop(&mut self) {
        // Closing stdin ends a finished exchange; a failed one may leave ssh running.
        self.connection.take();
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

// A poisoned buffer still holds what ssh said.
fn lock<T>(mutex: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    mutex
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner())
}

/// `'path'` for a POSIX shell, as git quotes it (`'` and `!` leave the quotes).
fn quote(text: &str) -> String {
    let mut quoted = String::with_capacity(text.len() + 2);
    quoted.push('\'');
    for c in text.chars() {
        match c {
            '\'' | '!' => {
                quoted.push_str("'\\");
                quoted.push(c);
                quoted.push('\'');
            }
            c => quoted.push(c),
        }
    }
    quoted.push('\'');
    quoted
}

/// The operator's error for what ssh said when it refused to go on (a host key that does not
/// match the pinned one, a host with no pinned key, a deploy key the server refused), or `None`
/// for a failure that may pass (a refused or timed-out connection), to be retried.
pub fn classify(source: &SourceConfig, access: &SshAccess, lines: &[String]) -> Option<FetchError> {
    let url = source.url.clone();
    let known_hosts = access.known_hosts.file.clone();
    let host = host_of(&source.url);
    let changed = lines
        .iter()
        .any(|l| l.contains("REMOTE HOST IDENTIFICATION HAS CHANGED"));
    if changed {
        let offered = lines
            .iter()
            .position(|l| l.contains("key sent by the remote host is"))
            .map(|at| {
                let kind =
                    between(&lines[at], "The fingerprint for the ", " key sent").unwrap_or("host");
                let fingerprint = lines
                    .get(at + 1)
                    .map_or("", |l| l.trim().trim_end_matches('.'));
                format!("{kind} {fingerprint}")
            })
            .unwrap_or_else(|| "a key ssh did not name".to_owned());
        let pinned = lines
            .iter()
            .find_map(|l| l.trim().strip_prefix("Offending "))
            .and_then(|rest| {
                let (_, place) = rest.split_once(" key in ")?;
                let (_, number) = place.rsplit_once(':')?;
                let number: usize = number.trim().parse().ok()?;
                let key = access.known_hosts.pinned_at(number)?;
                Some(format!("{key} (line {number})"))
            })
            .unwrap_or_else(|| "the key in that file".to_owned());
        return Some(FetchError::HostKeyChanged {
            url,
            host,
            known_hosts,
            pinned,
            offered,
        });
    }
    if lines
        .iter()
        .any(|l| l.contains("Host key verification failed"))
    {
        return Some(FetchError::UnknownHost {
            url,
            host,
            known_hosts,
        });
    }
    if lines.iter().any(|l| l.contains("Permission denied")) {
        return Some(FetchError::SshAuthenticationFailed {
            url,
            key: access.key.file.clone(),
        });
    }
    None
}

/// `host` or `host:port` of an ssh URL, as messages name it.
fn host_of(url: &str) -> String {
    match gix::url::parse(gix::bstr::BStr::new(url)) {
        Ok(url) => match (url.host(), url.port) {
            (Some(host), Some(port)) => format!("{host}:{port}"),
            (Some(host), None) => host.to_owned(),
            (None, _) => url.to_bstring().to_string(),
        },
        Err(_) => url.to_owned(),
    }
}

fn between<'t>(text: &'t str, start: &str, end: &str) -> Option<&'t str> {
    let from = text.find(start)? + start.len();
    let to = text[from..].find(end)? + from;
    Some(&text[from..to])
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn paths_are_quoted_for_the_server_shell_as_git_does() {
        assert_eq!(quote("/srv/config.git"), "'/srv/config.git'");
        assert_eq!(quote("it's!"), "'it'\\''s'\\!''");
    }

    #[test]
    fn the_host_is_named_with_its_port() {
        assert_eq!(
            host_of("ssh://git@127.0.0.1:2222/srv/config.git"),
            "127.0.0.1:2222"
        );
        assert_eq!(host_of("git@github.com:fleet/config.git"), "github.com");
    }
}
