//! The convergence report a device sends after a sync or a status change. Every field but
//! `device_id`, `status` and `sequence` is optional on the wire and unknown fields are ignored, so an
//! older agent keeps reporting to a newer collector.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use crate::Status;

/// Longest device id accepted (a machine-id is 32 hex characters; hostnames fit too).
pub const MAX_DEVICE_ID_LEN: usize = 128;

/// One device's account of what it converged to.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Report {
    /// The device's id (`device_id` in agent.toml, default /etc/machine-id).
    pub device_id: String,
    /// The device's labels, as in agent.toml.
    #[serde(default)]
    pub labels: BTreeMap<String, String>,
    /// `shoal-agent` version (`CARGO_PKG_VERSION`).
    #[serde(default)]
    pub agent_version: String,
    /// The generation the device is on, when it has one.
    #[serde(default)]
    pub generation: Option<u64>,
    /// The commit (hex object id) of that generation, when it has one.
    #[serde(default)]
    pub commit: Option<String>,
    /// The release the device last accepted (environment mode), beside the commit.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub release: Option<Release>,
    pub status: Status,
    /// With status `pending`: the verified commit that waits, its wave and when the wave opens.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pending: Option<Pending>,
    /// The commit this report is about and the device's rollout wave for it: the verified commit
    /// the device applied (converged), tried (failed, rolled_back), waits for (pending) or holds
    /// off (halted). The collector follows each commit's rollout by wave from it. Absent when
    /// the device has no verified commit in view, or from an older agent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub target: Option<Target>,
    /// What failed, one entry per resource (file, unit, commit) at fault.
    #[serde(default)]
    pub errors: Vec<ResourceError>,
    #[serde(default)]
    pub timings: Timings,
    /// Strictly increasing per device, across restarts: the collector refuses anything not greater
    /// than the last sequence it accepted (replay protection).
    pub sequence: u64,
    /// When the device sealed the report, unix seconds by the device's clock (informational: the
    /// collector's `last_seen` uses its own clock).
    #[serde(default)]
    pub sent_at: u64,
}

/// A verified commit waiting for the device's rollout wave (`[rollout]` in `shoal.toml`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Pending {
    /// The commit that waits (the report's `commit` is still the applied one).
    pub commit: String,
    /// The wave's name in `[rollout] waves`.
    pub wave: String,
    /// When the wave opens, unix seconds by the device's clock.
    pub opens_at: u64,
}

/// The commit a report is about, and the device's wave for it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Target {
    /// Hex object id of the commit.
    pub commit: String,
    /// The device's wave in that commit's `[rollout] waves`; absent when the commit declares no
    /// rollout (every device takes it at once).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub wave: Option<String>,
}

/// A release: the environment and its number N (`production/42`), as the signed tag names it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Release {
    pub environment: String,
    pub number: u64,
}

impl std::fmt::Display for Release {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}/{}", self.environment, self.number)
    }
}

/// One resource that failed and why.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ResourceError {
    /// What is at fault: a path (`/etc/motd`), a unit (`telemetry.service`), a commit, a key.
    pub resource: String,
    pub message: String,
}

/// How long each step of the sync took, in milliseconds; absent when the step did not run.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Timings {
    #[serde(default)]
    pub fetch_ms: Option<u64>,
    #[serde(default)]
    pub verify_ms: Option<u64>,
    #[serde(default)]
    pub render_ms: Option<u64>,
    #[serde(default)]
    pub apply_ms: Option<u64>,
    #[serde(default)]
    pub health_ms: Option<u64>,
}

/// A report that parsed but breaks a rule the collector relies on.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum ReportError {
    #[error("report field {field}: {reason}")]
    Invalid { field: &'static str, reason: String },
}

impl Report {
    /// A report with only the required fields set.
    pub fn new(device_id: impl Into<String>, status: Status, sequence: u64) -> Report {
        Report {
            device_id: device_id.into(),
            labels: BTreeMap::new(),
            agent_version: String::new(),
            generation: None,
            commit: None,
            release: None,
            pending: None,
            target: None,
            status,
            errors: Vec::new(),
            timings: Timings::default(),
            sequence,
            sent_at: 0,
        }
    }

    /// Checks the rules the collector relies on: the device id is 1..=128 characters of
    /// `[A-Za-z0-9._:@-]` (it is used in storage keys and URLs), label keys are non-empty, and the
    /// commit, when present, is a hex object id.
    pub fn validate(&self) -> Result<(), ReportError> {
        let id = &self.device_id;
        if id.is_empty() || id.len() > MAX_DEVICE_ID_LEN {
            return Err(invalid(
                "device_id",
                format!(
                    "must be 1 to {MAX_DEVICE_ID_LEN} characters, got {}",
                    id.len()
                ),
            ));
        }
        if let Some(c) = id.chars().find(|c| !is_device_id_char(*c)) {
            return Err(invalid(
                "device_id",
                format!("{id:?} contains {c:?}; allowed are letters, digits and . _ : @ -"),
            ));
        }
        if self.labels.keys().any(|k| k.is_empty()) {
            return Err(invalid("labels", "a label key is empty".to_owned()));
        }
        if let Some(commit) = &self.commit {
            if !is_object_id(commit) {
                return Err(invalid(
                    "commit",
                    format!("{commit:?} is not a hex object id"),
                ));
            }
        }
        if let Some(pending) = &self.pending {
            if !is_object_id(&pending.commit) {
                return Err(invalid(
                    "pending",
                    format!("{:?} is not a hex object id", pending.commit),
                ));
            }
            if pending.wave.is_empty() || pending.wave.chars().count() > 128 {
                return Err(invalid(
                    "pending",
                    "the wave's name must be 1 to 128 characters".to_owned(),
                ));
            }
        }
        if let Some(target) = &self.target {
            if !is_object_id(&target.commit) {
                return Err(invalid(
                    "target",
                    format!("{:?} is not a hex object id", target.commit),
                ));
            }
            if let Some(wave) = &target.wave {
                if wave.is_empty() || wave.chars().count() > 128 {
                    return Err(invalid(
                        "target",
                        "the wave's name must be 1 to 128 characters".to_owned(),
                    ));
                }
            }
        }
        if let Some(release) = &self.release {
            let environment = &release.environment;
            let valid = !environment.is_empty()
                && environment.len() <= 64
                && !environment.starts_with(['.', '-'])
                && environment
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'-'));
            if !valid || release.number == 0 {
                return Err(invalid(
                    "release",
                    format!("{release} is not an environment and a release number from 1"),
                ));
            }
        }
        Ok(())
    }
}

/// A git object id (or an abbreviation of one): 4 to 64 hex digits.
fn is_object_id(text: &str) -> bool {
    text.len() >= 4 && text.len() <= 64 && text.bytes().all(|b| b.is_ascii_hexdigit())
}

/// The characters allowed in a device id.
pub fn is_device_id_char(c: char) -> bool {
    c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | ':' | '@' | '-')
}

fn invalid(field: &'static str, reason: String) -> ReportError {
    ReportError::Invalid { field, reason }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn minimal_json_from_an_old_agent_parses() {
        let r: Report = serde_json::from_str(
            r#"{"device_id":"gw-1","status":"converged","sequence":3,"from_the_future":{"x":1}}"#,
        )
        .unwrap();
        assert_eq!(r, Report::new("gw-1", Status::Converged, 3));
    }

    #[test]
    fn full_report_round_trips() {
        let mut r = Report::new("gw-0042", Status::RolledBack, 9);
        r.labels.insert("role".into(), "gateway".into());
        r.agent_version = "0.1.0".into();
        r.generation = Some(4);
        r.commit = Some("0123456789abcdef0123456789abcdef01234567".into());
        r.release = Some(Release {
            environment: "production".into(),
            number: 42,
        });
        r.errors.push(ResourceError {
            resource: "telemetry.service".into(),
            message: "health check timed out after 30s".into(),
        });
        r.timings.apply_ms = Some(120);
        r.sent_at = 1_700_000_000;
        let json = serde_json::to_string(&r).unwrap();
        assert_eq!(serde_json::from_str::<Report>(&json).unwrap(), r);
        r.validate().unwrap();
    }

    #[test]
    fn validation_names_the_field() {
        let mut r = Report::new("gw/1", Status::Failed, 1);
        assert!(
            matches!(
                r.validate(),
                Err(ReportError::Invalid {
                    field: "device_id",
                    ..
                })
            ),
            "slash in id"
        );
        r.device_id = String::new();
        assert!(r.validate().is_err(), "empty id");
        r.device_id = "x".repeat(MAX_DEVICE_ID_LEN + 1);
        assert!(r.validate().is_err(), "long id");
        r.device_id = "gw-1".into();
        r.commit = Some("not-hex".into());
        assert!(matches!(
            r.validate(),
            Err(ReportError::Invalid {
                field: "commit",
                ..
            })
        ));
        r.commit = None;
        r.release = Some(Release {
            environment: "prod<script>".into(),
            number: 1,
        });
        assert!(matches!(
            r.validate(),
            Err(ReportError::Invalid {
                field: "release",
                ..
            })
        ));
    }
}
