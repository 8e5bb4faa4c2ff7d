//! `[rollout]` in `shoal.toml`: ordered waves, and which wave a device is in for a commit. A
//! wave selects devices by `match` (labels or device ids, like a profile) or by a cumulative
//! `percent` of the stable bucket `sha256(device_id ‖ commit) mod 100`, and opens `after` a
//! duration counted from the rollout's start (the agent supplies the start: a release's tagger
//! time, or when it first verified the commit). Pure: the clock and the commit are inputs.
//!
//! Validated for the whole fleet alike, like profiles: the waves must reach 100 % (so every
//! device is in exactly one wave), names are unique, percentages grow, and waves open in order.

use std::collections::BTreeMap;
use std::fmt;
use std::time::Duration;

use serde::{Deserialize, Serialize};
use ssh_key::sha2::{Digest, Sha256};

use super::desired::DeviceIdentity;
use super::manifest::{RawSelector, Selector};
use super::RenderError;

/// The longest `after` a wave may have: a longer one is a typo (`"90000s"` meant as minutes),
/// and a rollout that waits months would outlive any release's expiry.
pub const MAX_AFTER: Duration = Duration::from_secs(90 * 86_400);

/// The validated `[rollout]`: at least one wave; the percentage waves grow to exactly 100.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Rollout {
    pub waves: Vec<Wave>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Wave {
    pub name: String,
    #[serde(flatten)]
    pub selects: WaveSelect,
    /// From the rollout's start until this wave may apply.
    #[serde(rename = "after_seconds", serialize_with = "seconds")]
    pub after: Duration,
}

/// How a wave picks its devices.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum WaveSelect {
    /// The devices the selector matches, whatever their bucket.
    Match(Selector),
    /// The devices whose bucket is below this cumulative percentage (and not in an earlier
    /// percentage wave).
    Percent(u8),
}

/// Which wave a device is in, for one commit.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct WaveAssignment {
    /// 0-based position of the wave in `[rollout] waves`.
    pub index: usize,
    pub name: String,
    #[serde(rename = "after_seconds", serialize_with = "seconds")]
    pub after: Duration,
    /// The device's bucket for this commit, 0–99 (reported even when a `match` decided).
    pub bucket: u8,
}

impl Rollout {
    /// The wave of `identity` for `commit` (its id as hex): the first wave whose `match`
    /// selects the device, else the first percentage wave above its bucket. Always one, since
    /// validation makes the percentages reach 100.
    pub fn wave_for(&self, identity: &DeviceIdentity, commit: &str) -> WaveAssignment {
        let bucket = bucket(&identity.device_id, commit);
        let matched = self.waves.iter().position(|w| match &w.selects {
            WaveSelect::Match(selector) => selector.matches(identity),
            WaveSelect::Percent(_) => false,
        });
        let index = matched
            .or_else(|| {
                self.waves.iter().position(|w| match w.selects {
                    WaveSelect::Percent(percent) => bucket < percent,
                    WaveSelect::Match(_) => false,
                })
            })
            // Validation ends the percentages at 100 and a bucket is below 100, so a wave was
            // found; the last wave is the safe answer should that ever not hold.
            .unwrap_or(self.waves.len() - 1);
        let wave = &self.waves[index];
        WaveAssignment {
            index,
            name: wave.name.clone(),
            after: wave.after,
            bucket,
        }
    }
}

/// A device's bucket for a commit: `sha256(device_id ‖ commit_hex)`, its first 8 bytes read
/// big-endian, mod 100. Stable for one commit, and different commits spread a device over
/// different waves, so the same devices are not always the first.
pub fn bucket(device_id: &str, commit: &str) -> u8 {
    let mut hash = Sha256::new();
    hash.update(device_id.as_bytes());
    hash.update(commit.to_ascii_lowercase().as_bytes());
    let digest = hash.finalize();
    let mut first = [0u8; 8];
    first.copy_from_slice(&digest[..8]);
    (u64::from_be_bytes(first) % 100) as u8
}

/// `[rollout]` as written.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawRollout {
    waves: Vec<RawWave>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawWave {
    name: String,
    #[serde(rename = "match")]
    selector: Option<RawSelector>,
    // A `toml::Value` so that `percent = 12.5` or `"10%"` gets a message, not a type error.
    percent: Option<toml::Value>,
    after: Option<String>,
}

/// Where in `[rollout]` a problem is.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WaveAt {
    /// 1-based.
    pub index: usize,
    pub name: Option<String>,
}

impl fmt::Display for WaveAt {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.name {
            Some(name) => write!(f, "wave #{} {name:?}", self.index),
            None => write!(f, "wave #{}", self.index),
        }
    }
}

impl RawRollout {
    pub(crate) fn validate(self) -> Result<Rollout, RenderError> {
        let whole = |message: String| RenderError::Rollout { at: None, message };
        if self.waves.is_empty() {
            return Err(whole(
                "has no waves; list them, e.g. waves = [{ name = \"all\", percent = 100 }], or remove [rollout]".into(),
            ));
        }
        let mut names: BTreeMap<String, usize> = BTreeMap::new();
        let mut waves: Vec<Wave> = Vec::with_capacity(self.waves.len());
        // The last percentage wave so far, and the wave that opens latest so far.
        let mut last_percent: Option<(u8, WaveAt)> = None;
        let mut latest: Option<(Duration, WaveAt)> = None;
        for (i, raw) in self.waves.into_iter().enumerate() {
            let name = raw.name.trim().to_owned();
            let at = WaveAt {
                index: i + 1,
                name: (!name.is_empty()).then(|| name.clone()),
            };
            let invalid = |message: String| RenderError::Rollout {
                at: Some(at.clone()),
                message,
            };
            if name.is_empty() {
                return Err(invalid("name must not be empty".into()));
            }
            if name != raw.name {
                return Err(invalid(
                    "name must not begin or end with white space".into(),
                ));
            }
            if let Some(first) = names.insert(name.clone(), i + 1) {
                return Err(invalid(format!(
                    "name is already used by wave #{first}; wave names must be unique"
                )));
            }
            let selects = match (raw.selector, raw.percent) {
                (Some(_), Some(_)) => {
                    return Err(invalid(
                        "has both `match` and `percent`; a wave selects devices by one of them"
                            .into(),
                    ))
                }
                (None, None) => {
                    return Err(invalid(
                        "needs `match = { labels = {...} }` (or `devices = [...]`) or `percent = N`"
                            .into(),
                    ))
                }
                (Some(RawSelector::All), None) => {
                    return Err(invalid(
                        "match = \"*\" would put every device in this wave; for \"everyone else\" write percent = 100".into(),
                    ))
                }
                (Some(raw), None) => WaveSelect::Match(
                    Selector::from_raw(raw)
                        .map_err(|(field, message)| invalid(format!("{field} {message}")))?,
                ),
                (None, Some(value)) => {
                    let percent = match value {
                        toml::Value::Integer(n) if (1..=100).contains(&n) => n as u8,
                        toml::Value::Integer(n) => {
                            return Err(invalid(format!(
                                "percent {n} is out of range; write a whole number from 1 to 100"
                            )))
                        }
                        other => {
                            return Err(invalid(format!(
                                "percent must be a whole number from 1 to 100, not {other}"
                            )))
                        }
                    };
                    if let Some((before, before_at)) = &last_percent {
                        if percent <= *before {
                            return Err(invalid(format!(
                                "percent {percent} does not grow from {before_at} ({before}); percentages are cumulative: each wave's is the share of the fleet reached once it opens"
                            )));
                        }
                    }
                    last_percent = Some((percent, at.clone()));
                    WaveSelect::Percent(percent)
                }
            };
            let after = match &raw.after {
                None => Duration::ZERO,
                Some(text) => crate::duration::parse_duration(text)
                    .map_err(|m| invalid(format!("after: {m}")))?,
            };
            if after > MAX_AFTER {
                return Err(invalid(format!(
                    "after {:?} is longer than the longest a wave may wait, {} days",
                    raw.after.unwrap_or_default(),
                    MAX_AFTER.as_secs() / 86_400
                )));
            }
            if let Some((before, before_at)) = &latest {
                if after < *before {
                    return Err(invalid(format!(
                        "after {:?} opens before {before_at} (after {}s); waves open in the order they are listed",
                        raw.after.unwrap_or_default(),
                        before.as_secs()
                    )));
                }
            }
            latest = Some((after, at.clone()));
            waves.push(Wave {
                name,
                selects,
                after,
            });
        }
        match last_percent {
            Some((100, _)) => {}
            Some((reached, _)) => {
                return Err(whole(format!(
                    "the waves reach {reached} % of the fleet, not 100 %: the other devices would be in no wave; end with a wave of percent = 100"
                )))
            }
            None => {
                return Err(whole(
                    "every wave selects by `match`, so a device none matches would be in no wave; end with a wave of percent = 100".into(),
                ))
            }
        }
        Ok(Rollout { waves })
    }
}

fn seconds<S: serde::Serializer>(d: &Duration, s: S) -> Result<S::Ok, S::Error> {
    s.serialize_u64(d.as_secs())
}
