//! The progress line of a fetch, for a person at a terminal: objects and bytes received, one
//! line redrawn in place on stderr while the pack streams in. Drawn only when stderr is a
//! terminal (and `TERM` is not `dumb`): under systemd, in CI or piped into a file, nothing is
//! written at all. Reads the fetch's [`Meter`]; decides nothing about the fetch.

use std::io::{IsTerminal, Write};
use std::sync::mpsc::{self, RecvTimeoutError};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use super::bound::Meter;

/// How often the line is redrawn.
const REDRAW: Duration = Duration::from_millis(100);

/// The line being drawn; [`ProgressLine::finish`] (or drop) draws it a last time and ends it.
pub struct ProgressLine {
    stop: Option<mpsc::Sender<()>>,
    drawer: Option<JoinHandle<()>>,
}

impl ProgressLine {
    /// Starts drawing `meter`'s counts, or `None` when stderr is not a terminal.
    pub fn start(meter: &Meter) -> Option<ProgressLine> {
        let dumb = std::env::var_os("TERM").is_some_and(|term| term == "dumb");
        if dumb || !std::io::stderr().is_terminal() {
            return None;
        }
        let meter = meter.clone();
        let (stop, stopped) = mpsc::channel::<()>();
        let drawer = std::thread::Builder::new()
            .name("fetch-progress".into())
            .spawn(move || draw_until_stopped(&meter, &stopped))
            .ok()?;
        Some(ProgressLine {
            stop: Some(stop),
            drawer: Some(drawer),
        })
    }

    /// Draws the final counts and ends the line.
    pub fn finish(mut self) {
        self.end();
    }

    fn end(&mut self) {
        // Dropping the sender wakes the drawer at once.
        self.stop.take();
        if let Some(drawer) = self.drawer.take() {
            let _ = drawer.join();
        }
    }
}

impl Drop for ProgressLine {
    fn drop(&mut self) {
        self.end();
    }
}

fn draw_until_stopped(meter: &Meter, stopped: &mpsc::Receiver<()>) {
    let started = Instant::now();
    let mut drawn = false;
    loop {
        let last = !matches!(stopped.recv_timeout(REDRAW), Err(RecvTimeoutError::Timeout));
        // Drawn from the pack's header on: a negotiation that brings no pack stays silent.
        if let Some(objects) = meter.objects() {
            let text = line(objects, meter.received(), started.elapsed(), last);
            // `\r` and erase to the end of the line: one line, redrawn in place.
            let mut err = std::io::stderr().lock();
            let _ = write!(err, "\r{text}\x1b[K");
            let _ = err.flush();
            drawn = true;
        }
        if last {
            if drawn {
                let _ = writeln!(std::io::stderr());
            }
            return;
        }
    }
}

/// The text of the line, as git prints its own: `receiving objects:  45% (900/2000), 9.10 MiB`.
fn line((received, total): (u32, u32), bytes: u64, elapsed: Duration, done: bool) -> String {
    let size = human_bytes(bytes);
    let rate = match elapsed.as_secs_f64() {
        s if s >= 1.0 => format!(" | {}/s", human_bytes((bytes as f64 / s) as u64)),
        _ => String::new(),
    };
    let end = if done { ", done." } else { "" };
    let percent = (u64::from(received) * 100)
        .checked_div(u64::from(total))
        .unwrap_or(100);
    format!("receiving objects: {percent:3}% ({received}/{total}), {size}{rate}{end}")
}

fn human_bytes(bytes: u64) -> String {
    const KIB: f64 = 1024.0;
    let b = bytes as f64;
    if b >= KIB * KIB * KIB {
        format!("{:.2} GiB", b / (KIB * KIB * KIB))
    } else if b >= KIB * KIB {
        format!("{:.2} MiB", b / (KIB * KIB))
    } else if b >= KIB {
        format!("{:.2} KiB", b / KIB)
    } else {
        format!("{bytes} bytes")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_line_reads_like_gits() {
        let second = Duration::from_secs(2);
        assert_eq!(
            line((900, 2000), 9_542_041, second, false),
            "receiving objects:  45% (900/2000), 9.10 MiB | 4.55 MiB/s"
        );
        assert_eq!(
            line((2000, 2000), 20 * 1024 * 1024, second, true),
            "receiving objects: 100% (2000/2000), 20.00 MiB | 10.00 MiB/s, done."
        );
        assert_eq!(
            line((0, 0), 512, Duration::from_millis(10), true),
            "receiving objects: 100% (0/0), 512 bytes, done."
        );
    }
}
