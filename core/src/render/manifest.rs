//! `shoal.toml`, parsed and validated into profiles whose every path, mode, unit name and
//! selector is well-formed. A function of the file's text alone: it reads nothing else, and it
//! checks every profile, matched or not, so a bad commit is bad for the whole fleet.

use std::collections::BTreeMap;
use std::fmt;
use std::path::PathBuf;
use std::time::Duration;

use serde::de::{self, IgnoredAny, MapAccess, Visitor};
use serde::{Deserialize, Serialize};

use super::desired::{DeviceIdentity, HealthCheck, ServiceState};
use super::rollout::{RawRollout, Rollout};
use super::rules;
use super::{Entry, Location, RenderError};

pub const SUPPORTED_VERSION: i64 = 1;
pub const DEFAULT_MODE: u32 = 0o644;
pub const DEFAULT_OWNER: &str = "root";
/// Used when a service's `health` table has no `timeout`; the same as the agent's default
/// `apply.health_timeout`.
pub const DEFAULT_HEALTH_TIMEOUT: Duration = Duration::from_secs(30);

#[derive(Debug)]
pub(crate) struct Manifest {
    pub profiles: Vec<Profile>,
    pub rollout: Option<Rollout>,
}

#[derive(Debug)]
pub(crate) struct Profile {
    /// 1-based position in the file.
    pub index: usize,
    pub name: String,
    pub selector: Selector,
    pub files: Vec<FileDecl>,
    pub services: Vec<ServiceDecl>,
}

impl Profile {
    pub fn location(&self, entry: Option<Entry>) -> Location {
        Location {
            profile: self.index,
            profile_name: Some(self.name.clone()),
            entry,
        }
    }
}

/// Which devices a profile (or a rollout wave) selects.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Selector {
    All,
    /// Every listed condition must hold; at least one is present.
    Where {
        #[serde(skip_serializing_if = "Option::is_none")]
        labels: Option<BTreeMap<String, String>>,
        #[serde(skip_serializing_if = "Option::is_none")]
        devices: Option<Vec<String>>,
    },
}

impl Selector {
    /// A `match` as written, validated: the field at fault and what is wrong on error.
    pub(crate) fn from_raw(raw: RawSelector) -> Result<Selector, (&'static str, String)> {
        match raw {
            RawSelector::All => Ok(Selector::All),
            RawSelector::Where(RawWhere {
                labels: None,
                devices: None,
            }) => Err((
                "match",
                "must name `labels` or `devices`, or be \"*\"".into(),
            )),
            RawSelector::Where(RawWhere { labels, devices }) => {
                if labels.as_ref().is_some_and(BTreeMap::is_empty) {
                    return Err((
                        "match.labels",
                        "is empty; write match = \"*\" to select every device".into(),
                    ));
                }
                if devices.as_ref().is_some_and(Vec::is_empty) {
                    return Err((
                        "match.devices",
                        "is empty, so it selects no device; list device ids".into(),
                    ));
                }
                Ok(Selector::Where { labels, devices })
            }
        }
    }

    pub fn matches(&self, identity: &DeviceIdentity) -> bool {
        match self {
            Selector::All => true,
            Selector::Where { labels, devices } => {
                let labels_match = labels
                    .iter()
                    .flatten()
                    .all(|(key, value)| identity.labels.get(key) == Some(value));
                let device_matches = devices
                    .as_ref()
                    .is_none_or(|ids| ids.contains(&identity.device_id));
                labels_match && device_matches
            }
        }
    }
}

#[derive(Debug)]
pub(crate) struct FileDecl {
    pub path: PathBuf,
    pub source: String,
    pub mode: u32,
    pub owner: String,
    pub group: String,
    pub template: bool,
}

#[derive(Debug)]
pub(crate) struct ServiceDecl {
    pub unit: String,
    pub source: String,
    pub dropins: Vec<DropIn>,
    pub enabled: bool,
    pub state: ServiceState,
    pub restart_on: Vec<PathBuf>,
    pub health: Option<HealthCheck>,
}

#[derive(Debug)]
pub(crate) struct DropIn {
    /// The file name in the unit's drop-in directory.
    pub name: String,
    /// Where it is in the repository.
    pub source: String,
}

// The file's shape. `deny_unknown_fields` everywhere: a misspelt key silently ignored is a
// device that does something other than what its operator wrote.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawManifest {
    // Checked before this shape is parsed (see `Manifest::parse`).
    #[serde(rename = "version")]
    _version: IgnoredAny,
    #[serde(default)]
    profile: Vec<RawProfile>,
    rollout: Option<RawRollout>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawProfile {
    name: String,
    #[serde(rename = "match")]
    selector: RawSelector,
    #[serde(default)]
    file: Vec<RawFile>,
    #[serde(default)]
    service: Vec<RawService>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawFile {
    path: String,
    source: String,
    // A `toml::Value` so that `mode = 0o644` gets a message about quoting, not a type error.
    mode: Option<toml::Value>,
    owner: Option<String>,
    group: Option<String>,
    #[serde(default)]
    template: bool,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawService {
    unit: String,
    source: String,
    #[serde(default)]
    dropins: Vec<String>,
    #[serde(default = "enabled_by_default")]
    enabled: bool,
    #[serde(default)]
    state: ServiceState,
    #[serde(default)]
    restart_on: Vec<String>,
    health: Option<RawHealth>,
}

fn enabled_by_default() -> bool {
    true
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawHealth {
    exec: String,
    timeout: Option<String>,
}

/// `match = "*"` or `match = { labels = {...}, devices = [...] }`.
pub(crate) enum RawSelector {
    All,
    Where(RawWhere),
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawWhere {
    labels: Option<BTreeMap<String, String>>,
    devices: Option<Vec<String>>,
}

impl<'de> Deserialize<'de> for RawSelector {
    fn deserialize<D: de::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct SelectorVisitor;
        impl<'de> Visitor<'de> for SelectorVisitor {
            type Value = RawSelector;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("\"*\" or a table with `labels` and/or `devices`")
            }
            fn visit_str<E: de::Error>(self, v: &str) -> Result<RawSelector, E> {
                if v == "*" {
                    return Ok(RawSelector::All);
                }
                Err(E::custom(format!(
                    "match {v:?} is not supported; write match = \"*\", \
                     match = {{ labels = {{ role = \"gateway\" }} }} or match = {{ devices = [\"gw-1\"] }}"
                )))
            }
            fn visit_map<A: MapAccess<'de>>(self, map: A) -> Result<RawSelector, A::Error> {
                RawWhere::deserialize(de::value::MapAccessDeserializer::new(map))
                    .map(RawSelector::Where)
            }
        }
        d.deserialize_any(SelectorVisitor)
    }
}

impl Manifest {
    pub fn parse(text: &str) -> Result<Manifest, RenderError> {
        // Syntax first, so TOML errors keep toml's line/column message; then the version, so a
        // newer format is reported as such and not as a pile of unknown fields; then the shape.
        let table: toml::Table = toml::from_str(text).map_err(|e| RenderError::Syntax {
            message: e.to_string().trim_end().to_owned(),
        })?;
        match table.get("version") {
            None => return Err(RenderError::MissingVersion),
            Some(toml::Value::Integer(SUPPORTED_VERSION)) => {}
            Some(other) => {
                return Err(RenderError::UnsupportedVersion {
                    found: other.to_string(),
                })
            }
        }
        let raw: RawManifest = toml::from_str(text).map_err(|e| structure_error(text, &e))?;

        let mut names: BTreeMap<String, usize> = BTreeMap::new();
        let mut profiles = Vec::with_capacity(raw.profile.len());
        for (i, raw) in raw.profile.into_iter().enumerate() {
            let index = i + 1;
            let unnamed = Location {
                profile: index,
                profile_name: None,
                entry: None,
            };
            if raw.name.trim().is_empty() {
                return Err(RenderError::Invalid {
                    at: unnamed,
                    field: "name",
                    message: "must not be empty".into(),
                });
            }
            if let Some(first) = names.insert(raw.name.clone(), index) {
                return Err(RenderError::Invalid {
                    at: unnamed,
                    field: "name",
                    message: format!(
                        "{:?} is already used by profile #{first}; profile names must be unique",
                        raw.name
                    ),
                });
            }
            profiles.push(validate_profile(index, raw)?);
        }
        let rollout = raw.rollout.map(RawRollout::validate).transpose()?;
        Ok(Manifest { profiles, rollout })
    }
}

fn validate_profile(index: usize, raw: RawProfile) -> Result<Profile, RenderError> {
    let name = raw.name;
    let invalid =
        |entry: Option<Entry>, field: &'static str, message: String| RenderError::Invalid {
            at: Location {
                profile: index,
                profile_name: Some(name.clone()),
                entry,
            },
            field,
            message,
        };

    let selector = Selector::from_raw(raw.selector).map_err(|(field, message)| {
        // For a profile, the cure for an empty device list is also to remove the profile.
        let message = if field == "match.devices" {
            "is empty, so the profile selects no device; list device ids, or remove the profile"
                .to_owned()
        } else {
            message
        };
        invalid(None, field, message)
    })?;

    let mut files = Vec::with_capacity(raw.file.len());
    let mut paths: BTreeMap<PathBuf, usize> = BTreeMap::new();
    for (i, f) in raw.file.into_iter().enumerate() {
        let entry = Some(Entry::File(i + 1));
        let path = rules::check_device_path(&f.path)
            .map_err(|m| invalid(entry, "path", format!("{:?} {m}", f.path)))?;
        if let Some(first) = paths.insert(path.clone(), i + 1) {
            return Err(invalid(
                entry,
                "path",
                format!(
                    "{:?} is already declared by file #{first} of this profile",
                    f.path
                ),
            ));
        }
        rules::check_repo_path(&f.source)
            .map_err(|m| invalid(entry, "source", format!("{:?} {m}", f.source)))?;
        let mode = match &f.mode {
            None => DEFAULT_MODE,
            Some(toml::Value::String(text)) => rules::parse_mode(text).ok_or_else(|| {
                invalid(
                    entry,
                    "mode",
                    format!(
                        "{text:?} is not an octal mode; write 3 or 4 digits 0-7, like \"0644\""
                    ),
                )
            })?,
            Some(other) => {
                return Err(invalid(
                    entry,
                    "mode",
                    format!("must be a quoted octal string like \"0644\", not {other}"),
                ))
            }
        };
        let owner = f.owner.unwrap_or_else(|| DEFAULT_OWNER.into());
        rules::check_account(&owner)
            .map_err(|m| invalid(entry, "owner", format!("{owner:?} {m}")))?;
        let group = f.group.unwrap_or_else(|| DEFAULT_OWNER.into());
        rules::check_account(&group)
            .map_err(|m| invalid(entry, "group", format!("{group:?} {m}")))?;
        files.push(FileDecl {
            path,
            source: f.source,
            mode,
            owner,
            group,
            template: f.template,
        });
    }

    let mut services = Vec::with_capacity(raw.service.len());
    let mut units: BTreeMap<String, usize> = BTreeMap::new();
    for (i, s) in raw.service.into_iter().enumerate() {
        let entry = Some(Entry::Service(i + 1));
        rules::check_unit_name(&s.unit)
            .map_err(|m| invalid(entry, "unit", format!("{:?} {m}", s.unit)))?;
        if let Some(first) = units.insert(s.unit.clone(), i + 1) {
            return Err(invalid(
                entry,
                "unit",
                format!(
                    "{:?} is already declared by service #{first} of this profile",
                    s.unit
                ),
            ));
        }
        rules::check_repo_path(&s.source)
            .map_err(|m| invalid(entry, "source", format!("{:?} {m}", s.source)))?;

        let mut dropins: Vec<DropIn> = Vec::with_capacity(s.dropins.len());
        for source in s.dropins {
            rules::check_repo_path(&source)
                .map_err(|m| invalid(entry, "dropins", format!("{source:?} {m}")))?;
            let name = source.rsplit('/').next().unwrap_or(&source).to_owned();
            if name.len() <= ".conf".len() || !name.ends_with(".conf") {
                return Err(invalid(
                    entry,
                    "dropins",
                    format!(
                        "{source:?} must be a file named like \"override.conf\"; systemd reads only *.conf files from a drop-in directory"
                    ),
                ));
            }
            if let Some(first) = dropins.iter().find(|d| d.name == name) {
                return Err(invalid(
                    entry,
                    "dropins",
                    format!(
                        "{source:?} has the same file name as {:?}; the drop-ins of one unit need distinct file names",
                        first.source
                    ),
                ));
            }
            dropins.push(DropIn { name, source });
        }

        let restart_on = s
            .restart_on
            .iter()
            .map(|p| {
                rules::check_device_path(p)
                    .map_err(|m| invalid(entry, "restart_on", format!("{p:?} {m}")))
            })
            .collect::<Result<Vec<_>, _>>()?;

        let health = match s.health {
            None => None,
            Some(h) => {
                if h.exec.trim().is_empty() {
                    return Err(invalid(entry, "health.exec", "must not be empty".into()));
                }
                let timeout = match &h.timeout {
                    None => DEFAULT_HEALTH_TIMEOUT,
                    Some(text) => crate::duration::parse_duration(text).map_err(|_| {
                        invalid(
                            entry,
                            "health.timeout",
                            format!("{text:?} is not a duration; write a number and a unit (ms, s, m, h), like \"30s\""),
                        )
                    })?,
                };
                if timeout.is_zero() {
                    return Err(invalid(
                        entry,
                        "health.timeout",
                        "must be greater than zero".into(),
                    ));
                }
                Some(HealthCheck {
                    exec: h.exec,
                    timeout,
                })
            }
        };

        services.push(ServiceDecl {
            unit: s.unit,
            source: s.source,
            dropins,
            enabled: s.enabled,
            state: s.state,
            restart_on,
            health,
        });
    }

    Ok(Profile {
        index,
        name,
        selector,
        files,
        services,
    })
}

/// A shape error (unknown field, wrong type, missing field) with its line and column and, when
/// the position falls inside one, the profile and entry it belongs to.
fn structure_error(text: &str, error: &toml::de::Error) -> RenderError {
    let start = error.span().map(|span| span.start);
    RenderError::Structure {
        at: start.and_then(|offset| locate(text, offset)),
        position: start.map(|offset| position(text, offset)),
        message: error.message().trim_end().to_owned(),
    }
}

/// 1-based line and column (in characters) of a byte offset.
fn position(text: &str, offset: usize) -> (usize, usize) {
    let before = text.get(..offset).unwrap_or(text);
    let line = before.matches('\n').count() + 1;
    let column = before.rsplit('\n').next().unwrap_or("").chars().count() + 1;
    (line, column)
}

/// Which profile (and file or service entry) contains `offset`, found by parsing the file
/// again into a skeleton that keeps the spans of profiles and entries and ignores everything
/// else. `None` when the skeleton itself does not parse (the error is then in its shape).
fn locate(text: &str, offset: usize) -> Option<Location> {
    #[derive(Deserialize)]
    struct Skeleton {
        #[serde(default)]
        profile: Vec<toml::Spanned<SkeletonProfile>>,
    }
    #[derive(Deserialize)]
    struct SkeletonProfile {
        name: Option<toml::Value>,
        #[serde(default)]
        file: Vec<toml::Spanned<IgnoredAny>>,
        #[serde(default)]
        service: Vec<toml::Spanned<IgnoredAny>>,
    }

    let skeleton: Skeleton = toml::from_str(text).ok()?;
    for (i, profile) in skeleton.profile.iter().enumerate() {
        let body = profile.get_ref();
        let location = |entry| Location {
            profile: i + 1,
            profile_name: match &body.name {
                Some(toml::Value::String(name)) => Some(name.clone()),
                _ => None,
            },
            entry,
        };
        // Entries first: with inline tables they lie inside the profile's span.
        let in_file = body.file.iter().position(|f| f.span().contains(&offset));
        if let Some(j) = in_file {
            return Some(location(Some(Entry::File(j + 1))));
        }
        let in_service = body.service.iter().position(|s| s.span().contains(&offset));
        if let Some(j) = in_service {
            return Some(location(Some(Entry::Service(j + 1))));
        }
        if profile.span().contains(&offset) {
            return Some(location(None));
        }
    }
    None
}
