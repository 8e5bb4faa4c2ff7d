//! `[metrics] textfile`: after each sync and rollback, the device's state as a node_exporter
//! textfile (Prometheus text exposition format 0.0.4), so a fleet already scraped by
//! node_exporter's textfile collector gets the agent's view without another exporter. Writes
//! that one file, atomically (a temp file in its directory, mode 0644, renamed over it), and
//! nothing else; decides nothing. A failure to write it never fails the sync: it is logged.

use std::fmt::Write as _;
use std::path::{Path, PathBuf};
use std::time::Duration;

use shoal_proto::Status;

use crate::paths::{self, PathError};
use crate::state::{Generation, StateDir, StateError};

#[derive(Debug, thiserror::Error)]
pub enum MetricsError {
    #[error("cannot write the metrics textfile ([metrics] textfile): {0}; check that its directory exists and the agent may write there")]
    Write(#[source] PathError),
    #[error("refusing to write the metrics textfile into {}: {reason}; make it a directory owned by root (or the agent's user) that group and others cannot write, as node_exporter's textfile directory is", dir.display())]
    UnsafeDirectory { dir: PathBuf, reason: String },
    #[error("cannot read the state for the metrics textfile {}: {source}", path.display())]
    State {
        path: PathBuf,
        #[source]
        source: StateError,
    },
}

/// What one sync (or rollback) ended with, for the textfile.
#[derive(Debug, Clone)]
pub struct Run {
    pub status: Status,
    /// Unix seconds when it ended.
    pub ended_at: u64,
    pub duration: Duration,
    /// With status `pending`: the wave the device waits for and when it opens.
    pub pending: Option<shoal_proto::Pending>,
}

/// Writes the textfile for `run` at `path`, with the generation the state directory is at.
pub fn write_textfile(path: &Path, state: &StateDir, run: &Run) -> Result<(), MetricsError> {
    let current = state.current().map_err(|source| MetricsError::State {
        path: path.to_owned(),
        source,
    })?;
    let text = exposition(current.as_ref(), state.hold().ok().flatten(), run);
    check_directory(path)?;
    paths::write_atomic_mode(path, text.as_bytes(), 0o644).map_err(MetricsError::Write)
}

/// The agent writes the textfile as root into a directory the operator names: a directory
/// another user can write could have its temp file or the directory itself swapped for a link
/// between the agent's steps, so it must be a real directory (not a link) owned by root or the
/// agent's user, not writable by group or others.
fn check_directory(path: &Path) -> Result<(), MetricsError> {
    use std::os::unix::fs::MetadataExt;
    let dir = match path.parent() {
        Some(p) if !p.as_os_str().is_empty() => p,
        _ => Path::new("."),
    };
    let unsafe_dir = |reason: String| MetricsError::UnsafeDirectory {
        dir: dir.to_owned(),
        reason,
    };
    let meta = std::fs::symlink_metadata(dir)
        .map_err(|e| MetricsError::Write(PathError::new("inspect the directory of", path, e)))?;
    if !meta.file_type().is_dir() {
        return Err(unsafe_dir(
            "it is not a directory (a symbolic link?)".into(),
        ));
    }
    // SAFETY: geteuid has no preconditions and cannot fail.
    let agent = unsafe { libc::geteuid() };
    if meta.uid() != 0 && meta.uid() != agent {
        return Err(unsafe_dir(format!("it is owned by uid {}", meta.uid())));
    }
    if meta.mode() & 0o022 != 0 {
        return Err(unsafe_dir(format!(
            "group or others may write it (mode {:o})",
            meta.mode() & 0o7777
        )));
    }
    Ok(())
}

/// Writes the textfile if one is configured; a failure is a warning, never the sync's failure.
pub fn after(textfile: Option<&Path>, state: &StateDir, run: &Run) {
    if let Some(path) = textfile {
        if let Err(e) = write_textfile(path, state, run) {
            tracing::warn!(error = %crate::errors::error_chain(&e), "metrics textfile not written");
        }
    }
}

/// The file's text. Every metric is a gauge; every family is always present (zeros included), so
/// a dashboard or an alert never sees a series appear and disappear with the status.
fn exposition(current: Option<&Generation>, hold: Option<u64>, run: &Run) -> String {
    let mut out = String::new();
    let mut family = |name: &str, help: &str, samples: &[(String, String)]| {
        let _ = writeln!(out, "# HELP {name} {help}");
        let _ = writeln!(out, "# TYPE {name} gauge");
        for (labels, value) in samples {
            let _ = writeln!(out, "{name}{labels} {value}");
        }
    };
    let plain = |value: String| vec![(String::new(), value)];
    family(
        "shoal_agent_generation",
        "The generation the device is at (0 before its first).",
        &plain(current.map_or(0, |g| g.number).to_string()),
    );
    let applied = current.map(|g| {
        (
            format!(
                "{{commit=\"{}\",generation=\"{}\"}}",
                label_value(g.commit.as_str()),
                g.number
            ),
            "1".to_owned(),
        )
    });
    family(
        "shoal_agent_applied_info",
        "The commit of the generation the device is at, as the label commit (no sample before the first generation).",
        &applied.into_iter().collect::<Vec<_>>(),
    );
    let statuses: Vec<_> = Status::ALL
        .iter()
        .map(|s| {
            (
                format!("{{status=\"{}\"}}", s.as_str()),
                u8::from(*s == run.status).to_string(),
            )
        })
        .collect();
    family(
        "shoal_agent_last_sync_status",
        "The result of the last sync or rollback: 1 for its status, 0 for every other.",
        &statuses,
    );
    family(
        "shoal_agent_last_sync_timestamp_seconds",
        "When the last sync or rollback ended, in unix seconds.",
        &plain(run.ended_at.to_string()),
    );
    family(
        "shoal_agent_last_sync_duration_seconds",
        "How long the last sync or rollback took.",
        &plain(format!("{:.3}", run.duration.as_secs_f64())),
    );
    family(
        "shoal_agent_held",
        "1 while `shoal-agent rollback` holds the device on a generation, else 0.",
        &plain(u8::from(hold.is_some()).to_string()),
    );
    let pending = run.pending.as_ref().map(|p| {
        (
            format!(
                "{{commit=\"{}\",wave=\"{}\"}}",
                label_value(&p.commit),
                label_value(&p.wave)
            ),
            p.opens_at.to_string(),
        )
    });
    family(
        "shoal_agent_pending_wave_opens_timestamp_seconds",
        "With status pending: when the device's rollout wave for the commit opens, in unix seconds (no sample otherwise).",
        &pending.into_iter().collect::<Vec<_>>(),
    );
    out
}

/// A label value escaped as the exposition format wants (`\\`, `\"`, `\n`).
fn label_value(value: &str) -> String {
    let mut out = String::with_capacity(value.len());
    for c in value.chars() {
        match c {
            '\\' => out.push_str("\\\\"),
            '"' => out.push_str("\\\""),
            '\n' => out.push_str("\\n"),
            c => out.push(c),
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn label_values_are_escaped() {
        assert_eq!(label_value("a\"b\\c\nd"), "a\\\"b\\\\c\\nd");
    }

    #[test]
    fn a_pending_run_before_any_generation() {
        let run = Run {
            status: Status::Pending,
            ended_at: 1_700_000_000,
            duration: Duration::from_millis(1234),
            pending: Some(shoal_proto::Pending {
                commit: "abc".into(),
                wave: "early".into(),
                opens_at: 1_700_003_600,
            }),
        };
        let text = exposition(None, None, &run);
        assert!(text.contains("\nshoal_agent_generation 0\n"), "{text}");
        assert!(text.contains("shoal_agent_last_sync_status{status=\"pending\"} 1\n"));
        assert!(text.contains("shoal_agent_last_sync_status{status=\"converged\"} 0\n"));
        assert!(text.contains("shoal_agent_last_sync_duration_seconds 1.234\n"));
        assert!(text.contains(
            "shoal_agent_pending_wave_opens_timestamp_seconds{commit=\"abc\",wave=\"early\"} 1700003600\n"
        ));
        assert!(!text.contains("shoal_agent_applied_info{"));
    }
}
