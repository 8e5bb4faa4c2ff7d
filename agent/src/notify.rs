//! `sd_notify` for `Type=notify` units: READY=1, WATCHDOG=1, STATUS= and STOPPING=1 sent as
//! datagrams to `$NOTIFY_SOCKET`. Silently does nothing when not started by systemd.

use std::os::unix::net::UnixDatagram;
use std::time::Duration;

/// A handle on systemd's notification socket, if the agent was started with one.
pub struct Notifier {
    socket: Option<(UnixDatagram, std::os::unix::net::SocketAddr)>,
}

impl Notifier {
    pub fn from_env() -> Self {
        let socket = std::env::var_os("NOTIFY_SOCKET").and_then(|path| {
            let path = path.to_string_lossy().into_owned();
            let addr = if let Some(name) = path.strip_prefix('@') {
                // Abstract namespace socket (systemd uses these in containers).
                use std::os::linux::net::SocketAddrExt;
                std::os::unix::net::SocketAddr::from_abstract_name(name.as_bytes()).ok()?
            } else {
                std::os::unix::net::SocketAddr::from_pathname(&path).ok()?
            };
            let socket = UnixDatagram::unbound().ok()?;
            // Never wait for systemd: a full queue on its side (a manager that does not read)
            // drops the notification instead of stopping the daemon's loop.
            socket.set_nonblocking(true).ok()?;
            Some((socket, addr))
        });
        Notifier { socket }
    }

    /// Sends one notification; errors are logged, never fatal (the agent must keep working
    /// if systemd's socket goes away), and it never blocks (a full queue drops it).
    pub fn send(&self, message: &str) {
        if let Some((socket, addr)) = &self.socket {
            if let Err(e) = socket.send_to_addr(message.as_bytes(), addr) {
                tracing::warn!(error = %e, "sd_notify failed");
            }
        }
    }

    /// How often to send WATCHDOG=1: half of `$WATCHDOG_USEC`, if systemd asked for it.
    pub fn watchdog_interval() -> Option<Duration> {
        let usec: u64 = std::env::var("WATCHDOG_USEC").ok()?.parse().ok()?;
        let for_us = std::env::var("WATCHDOG_PID")
            .ok()
            .and_then(|p| p.parse::<u32>().ok())
            .is_none_or(|pid| pid == std::process::id());
        (for_us && usec > 0).then(|| Duration::from_micros(usec / 2))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn notifications_reach_the_socket() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("notify");
        let server = UnixDatagram::bind(&path).unwrap();
        let notifier = Notifier {
            socket: Some((
                UnixDatagram::unbound().unwrap(),
                std::os::unix::net::SocketAddr::from_pathname(&path).unwrap(),
            )),
        };
        notifier.send("READY=1");
        let mut buf = [0u8; 64];
        let n = server.recv(&mut buf).unwrap();
        assert_eq!(&buf[..n], b"READY=1");
    }

    /// A receiver that never reads fills its queue; the sender drops notifications instead of
    /// blocking (which would stop the daemon's loop: seen with a test's socket nobody read).
    #[test]
    fn a_full_socket_does_not_block_the_sender() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("notify");
        let _server = UnixDatagram::bind(&path).unwrap();
        std::env::set_var("NOTIFY_SOCKET", &path);
        let notifier = Notifier::from_env();
        std::env::remove_var("NOTIFY_SOCKET");
        let (done, finished) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            for _ in 0..1000 {
                notifier.send("STATUS=syncing");
            }
            let _ = done.send(());
        });
        assert!(
            finished.recv_timeout(Duration::from_secs(20)).is_ok(),
            "sending to a socket nobody reads blocked"
        );
    }
}
