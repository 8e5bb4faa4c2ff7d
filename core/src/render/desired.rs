//! What render produces and what it needs: the device's identity in, the desired state out.
//! Plain data with a JSON form (for `shoal-agent render`) and a one-line-per-item summary.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::path::PathBuf;
use std::time::Duration;

use serde::ser::{SerializeMap, Serializer};
use serde::{Deserialize, Serialize};

/// Who the device is, as far as rendering is concerned.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DeviceIdentity {
    pub device_id: String,
    pub labels: BTreeMap<String, String>,
    /// The agent's state directory as seen on the device (without the `root` prefix); no
    /// declared path may be inside it.
    pub state_dir: PathBuf,
}

/// Everything the repository declares for one device: files by device path, services by unit.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct DesiredState {
    pub files: BTreeMap<PathBuf, DesiredFile>,
    pub services: BTreeMap<String, DesiredService>,
    /// The commit's `[rollout]`, the same for every device (which wave a device is in depends
    /// on the commit id, which render does not know); `None` when it has none: all at once.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub rollout: Option<super::Rollout>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct DesiredFile {
    /// Final bytes, templates already expanded.
    #[serde(serialize_with = "bytes_json")]
    pub content: Vec<u8>,
    #[serde(serialize_with = "mode_json")]
    pub mode: u32,
    pub owner: String,
    pub group: String,
    /// The profile that declared it (the first one, when several declare it identically).
    pub profile: String,
    /// The repository path the content came from.
    pub source: String,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct DesiredService {
    pub unit: String,
    /// The unit file's content.
    #[serde(serialize_with = "bytes_json")]
    pub content: Vec<u8>,
    /// Drop-in file name (e.g. `override.conf`) → content.
    #[serde(serialize_with = "bytes_map_json")]
    pub dropins: BTreeMap<String, Vec<u8>>,
    pub enabled: bool,
    pub state: ServiceState,
    /// Device paths whose change restarts the unit; each is a declared file.
    pub restart_on: Vec<PathBuf>,
    pub health: Option<HealthCheck>,
    pub profile: String,
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ServiceState {
    #[default]
    Running,
    Stopped,
}

impl ServiceState {
    pub fn as_str(self) -> &'static str {
        match self {
            ServiceState::Running => "running",
            ServiceState::Stopped => "stopped",
        }
    }
}

/// A probe run beside "the unit is active": the command must exit 0 within `timeout`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct HealthCheck {
    pub exec: String,
    #[serde(serialize_with = "duration_json")]
    pub timeout: Duration,
}

impl DeviceIdentity {
    /// The identity of device `device_id` with `labels`, whose agent keeps its state in
    /// `state_dir` (as the device sees it).
    pub fn new<K, V>(
        device_id: impl Into<String>,
        labels: impl IntoIterator<Item = (K, V)>,
        state_dir: impl Into<PathBuf>,
    ) -> DeviceIdentity
    where
        K: Into<String>,
        V: Into<String>,
    {
        DeviceIdentity {
            device_id: device_id.into(),
            labels: labels
                .into_iter()
                .map(|(k, v)| (k.into(), v.into()))
                .collect(),
            state_dir: state_dir.into(),
        }
    }
}

impl DesiredFile {
    /// A file with these bytes, mode and owner, declared by no profile and from no source
    /// (both empty) until [`declared_by`](Self::declared_by) names them; render always does.
    pub fn new(
        content: impl Into<Vec<u8>>,
        mode: u32,
        owner: impl Into<String>,
        group: impl Into<String>,
    ) -> DesiredFile {
        DesiredFile {
            content: content.into(),
            mode,
            owner: owner.into(),
            group: group.into(),
            profile: String::new(),
            source: String::new(),
        }
    }

    /// The same file, declared by `profile` with its content from repository path `source`.
    pub fn declared_by(self, profile: impl Into<String>, source: impl Into<String>) -> DesiredFile {
        DesiredFile {
            profile: profile.into(),
            source: source.into(),
            ..self
        }
    }
}

impl DesiredService {
    /// Unit `unit` with this unit file, as render gives a `[[profile.service]]` that sets
    /// nothing else: enabled, running, no drop-ins, no `restart_on`, no health probe; declared
    /// by no profile (empty) until [`declared_by`](Self::declared_by) names one.
    pub fn new(unit: impl Into<String>, content: impl Into<Vec<u8>>) -> DesiredService {
        DesiredService {
            unit: unit.into(),
            content: content.into(),
            dropins: BTreeMap::new(),
            enabled: true,
            state: ServiceState::Running,
            restart_on: Vec::new(),
            health: None,
            profile: String::new(),
        }
    }

    /// The same service, declared by `profile`.
    pub fn declared_by(self, profile: impl Into<String>) -> DesiredService {
        DesiredService {
            profile: profile.into(),
            ..self
        }
    }
}

impl DesiredState {
    /// These files (device path, file) and no services.
    pub fn from_files<P: Into<PathBuf>>(
        files: impl IntoIterator<Item = (P, DesiredFile)>,
    ) -> DesiredState {
        DesiredState {
            files: files
                .into_iter()
                .map(|(path, file)| (path.into(), file))
                .collect(),
            services: BTreeMap::new(),
            rollout: None,
        }
    }

    /// The same state with `services` added, each under its own unit name.
    pub fn with_services(
        mut self,
        services: impl IntoIterator<Item = DesiredService>,
    ) -> DesiredState {
        self.services
            .extend(services.into_iter().map(|s| (s.unit.clone(), s)));
        self
    }

    /// One line per file (`0644 root:root /etc/motd  (base)`) and per service, for humans.
    pub fn summary(&self) -> String {
        let mut out = String::new();
        if self.files.is_empty() && self.services.is_empty() {
            out.push_str("no files and no services for this device\n");
        }
        for (path, file) in &self.files {
            let _ = writeln!(
                out,
                "{} {}:{} {}  ({})",
                format_mode(file.mode),
                file.owner,
                file.group,
                path.display(),
                file.profile
            );
        }
        for (unit, service) in &self.services {
            let _ = write!(
                out,
                "service {unit} {} {}",
                if service.enabled {
                    "enabled"
                } else {
                    "disabled"
                },
                service.state.as_str()
            );
            if !service.dropins.is_empty() {
                let names: Vec<&str> = service.dropins.keys().map(String::as_str).collect();
                let _ = write!(out, ", drop-ins: {}", names.join(" "));
            }
            if !service.restart_on.is_empty() {
                let paths: Vec<String> = service
                    .restart_on
                    .iter()
                    .map(|p| p.display().to_string())
                    .collect();
                let _ = write!(out, ", restart on: {}", paths.join(" "));
            }
            if let Some(health) = &service.health {
                let _ = write!(
                    out,
                    ", health: {} (timeout {})",
                    health.exec,
                    format_duration(health.timeout)
                );
            }
            let _ = writeln!(out, "  ({})", service.profile);
        }
        out
    }

    /// The JSON form printed by `shoal-agent render --json`: contents as text when they are
    /// UTF-8, else as `{ "base64": "..." }`; modes as octal strings; durations like `"30s"`.
    pub fn to_json(&self) -> serde_json::Value {
        // Serializing these types into a `Value` cannot fail: every map key is a string (paths
        // come from TOML strings, so they are UTF-8) and no serializer here returns an error.
        serde_json::to_value(self).expect("desired state serializes to JSON")
    }
}

pub(crate) fn format_mode(mode: u32) -> String {
    format!("{mode:04o}")
}

pub(crate) fn format_duration(d: Duration) -> String {
    let ms = d.as_millis();
    if ms.is_multiple_of(1000) {
        format!("{}s", ms / 1000)
    } else {
        format!("{ms}ms")
    }
}

/// Text when the bytes are UTF-8 (the common case: config files), else `{ "base64": ... }`.
fn bytes_json<S: Serializer>(bytes: &[u8], s: S) -> Result<S::Ok, S::Error> {
    match std::str::from_utf8(bytes) {
        Ok(text) => s.serialize_str(text),
        Err(_) => {
            let mut map = s.serialize_map(Some(1))?;
            map.serialize_entry("base64", &base64(bytes))?;
            map.end()
        }
    }
}

fn bytes_map_json<S: Serializer>(
    entries: &BTreeMap<String, Vec<u8>>,
    s: S,
) -> Result<S::Ok, S::Error> {
    struct Bytes<'a>(&'a [u8]);
    impl Serialize for Bytes<'_> {
        fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
            bytes_json(self.0, s)
        }
    }
    let mut map = s.serialize_map(Some(entries.len()))?;
    for (name, bytes) in entries {
        map.serialize_entry(name, &Bytes(bytes))?;
    }
    map.end()
}

fn mode_json<S: Serializer>(mode: &u32, s: S) -> Result<S::Ok, S::Error> {
    s.serialize_str(&format_mode(*mode))
}

fn duration_json<S: Serializer>(d: &Duration, s: S) -> Result<S::Ok, S::Error> {
    s.serialize_str(&format_duration(*d))
}

/// Standard base64 with padding (RFC 4648 §4). Only binary file contents in the JSON output
/// need it, which does not justify a dependency.
fn base64(bytes: &[u8]) -> String {
    const ALPHABET: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let mut out = String::with_capacity(bytes.len().div_ceil(3) * 4);
    for chunk in bytes.chunks(3) {
        let b = [
            chunk[0],
            *chunk.get(1).unwrap_or(&0),
            *chunk.get(2).unwrap_or(&0),
        ];
        let n = (u32::from(b[0]) << 16) | (u32::from(b[1]) << 8) | u32::from(b[2]);
        for (i, shift) in [18, 12, 6, 0].into_iter().enumerate() {
            if i <= chunk.len() {
                out.push(char::from(ALPHABET[(n >> shift) as usize & 63]));
            } else {
                out.push('=');
            }
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn base64_matches_rfc_4648_vectors() {
        let vectors = [
            ("", ""),
            ("f", "Zg=="),
            ("fo", "Zm8="),
            ("foo", "Zm9v"),
            ("foob", "Zm9vYg=="),
            ("fooba", "Zm9vYmE="),
            ("foobar", "Zm9vYmFy"),
        ];
        for (input, expected) in vectors {
            assert_eq!(base64(input.as_bytes()), expected, "{input:?}");
        }
        assert_eq!(base64(&[0xff, 0xfe, 0x00]), "//4A");
    }

    fn example() -> DesiredState {
        DesiredState::from_files([
            (
                "/etc/motd",
                DesiredFile::new(b"hello\n", 0o644, "root", "root")
                    .declared_by("base", "files/motd"),
            ),
            (
                "/usr/share/logo.bin",
                DesiredFile::new(vec![0xff, 0x00, 0x01], 0o600, "app", "1000")
                    .declared_by("gateways", "files/logo.bin"),
            ),
        ])
        .with_services([DesiredService {
            dropins: BTreeMap::from([("override.conf".into(), b"[Service]\n".to_vec())]),
            restart_on: vec!["/etc/motd".into()],
            health: Some(HealthCheck {
                exec: "/usr/bin/telemetry --self-check".into(),
                timeout: Duration::from_millis(1500),
            }),
            ..DesiredService::new(
                "telemetry.service",
                b"[Service]\nExecStart=/usr/bin/telemetry\n",
            )
            .declared_by("gateways")
        }])
    }

    #[test]
    fn json_shows_text_as_text_and_binary_as_base64() {
        let json = example().to_json();
        assert_eq!(
            json,
            serde_json::json!({
                "files": {
                    "/etc/motd": {
                        "content": "hello\n", "mode": "0644", "owner": "root", "group": "root",
                        "profile": "base", "source": "files/motd"
                    },
                    "/usr/share/logo.bin": {
                        "content": { "base64": "/wAB" }, "mode": "0600", "owner": "app",
                        "group": "1000", "profile": "gateways", "source": "files/logo.bin"
                    }
                },
                "services": {
                    "telemetry.service": {
                        "unit": "telemetry.service",
                        "content": "[Service]\nExecStart=/usr/bin/telemetry\n",
                        "dropins": { "override.conf": "[Service]\n" },
                        "enabled": true,
                        "state": "running",
                        "restart_on": ["/etc/motd"],
                        "health": { "exec": "/usr/bin/telemetry --self-check", "timeout": "1500ms" },
                        "profile": "gateways"
                    }
                }
            })
        );
    }

    #[test]
    fn summary_has_one_line_per_item() {
        assert_eq!(
            example().summary(),
            "0644 root:root /etc/motd  (base)\n\
             0600 app:1000 /usr/share/logo.bin  (gateways)\n\
             service telemetry.service enabled running, drop-ins: override.conf, restart on: /etc/motd, \
             health: /usr/bin/telemetry --self-check (timeout 1500ms)  (gateways)\n"
        );
        assert_eq!(
            DesiredState::default().summary(),
            "no files and no services for this device\n"
        );
    }
}
