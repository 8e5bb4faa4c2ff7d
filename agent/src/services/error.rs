//! What can go wrong while installing or driving services, each error naming the unit, path or
//! command at fault and what the operator can do about it.

use std::time::Duration;

use shoal_core::services::{UnitAction, UnitFileConflict};

#[derive(Debug, thiserror::Error)]
pub enum ServiceError {
    #[error(transparent)]
    UnitFileConflict(Box<UnitFileConflict>),
    #[error("cannot run `{command}`: {source}; the agent needs systemctl and journalctl (systemd) on the device")]
    Spawn {
        command: String,
        #[source]
        source: std::io::Error,
    },
    #[error("`{command}` failed ({status}): {stderr}")]
    Command {
        command: String,
        status: String,
        stderr: String,
    },
    #[error(
        "{action} {unit} failed ({status}): {stderr}{}",
        journal_section(unit, journal_tail)
    )]
    Job {
        unit: String,
        action: UnitAction,
        status: String,
        stderr: String,
        journal_tail: String,
    },
    #[error("`{command}` did not finish within {}s and was killed; is systemd responsive (`systemctl list-jobs`)?", after.as_secs())]
    Timeout { command: String, after: Duration },
}

impl ServiceError {
    /// The unit at fault, when the error is about one.
    pub fn unit(&self) -> Option<&str> {
        match self {
            ServiceError::UnitFileConflict(conflict) => Some(&conflict.unit),
            ServiceError::Job { unit, .. } => Some(unit),
            ServiceError::Spawn { .. }
            | ServiceError::Command { .. }
            | ServiceError::Timeout { .. } => None,
        }
    }
}

/// The journal lines appended to a message, or nothing when there are none.
pub(crate) fn journal_section(unit: &str, tail: &str) -> String {
    let tail = tail.trim_end();
    if tail.is_empty() {
        return String::new();
    }
    format!("\nlast lines of `journalctl -u {unit}`:\n{tail}")
}
