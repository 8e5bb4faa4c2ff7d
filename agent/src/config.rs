//! The device's own configuration (`/etc/shoal/agent.toml`): parsed, defaulted and validated
//! here so that every other module receives only well-formed settings. Reads one file, writes none.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::Deserialize;

use crate::credential::{
    ClientIdentity, Credential, CredentialError, DeployKey, FileKind, KnownHosts,
};
use crate::paths::{self, PathError};
use crate::proxy::ProxySetting;
use crate::render::DeviceIdentity;

pub const DEFAULT_PATH: &str = "/etc/shoal/agent.toml";

/// `[source] max_fetch` when unset: far above what a configuration repository's update needs,
/// small enough that an unsigned push cannot fill the device's disk or link.
pub const DEFAULT_MAX_FETCH: ByteSize = ByteSize(64 * ByteSize::MIB);
/// `[source] max_object` when unset: the agent's peak RSS while indexing a pack is about three
/// times the largest object (a delta's base, its instructions and its result), and the sync
/// budget is 48 MiB (docs/SECURITY.md, docs/BENCHMARKS.md).
pub const DEFAULT_MAX_OBJECT: ByteSize = ByteSize(8 * ByteSize::MIB);

#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("cannot read the agent config: {0}; pass --config PATH or create {DEFAULT_PATH}")]
    Read(#[source] PathError),
    #[error("{}: {message}", path.display())]
    Parse { path: PathBuf, message: String },
    #[error("{}: `{key}` {message}", path.display())]
    Invalid {
        path: PathBuf,
        key: &'static str,
        message: String,
    },
    #[error("{}: `{key}`: {source}", path.display())]
    Credential {
        path: PathBuf,
        key: &'static str,
        #[source]
        source: CredentialError,
    },
}

/// The agent's settings, with defaults applied and relative paths resolved against the
/// directory of the config file (so a sandbox config can say `state_dir = "state"`).
#[derive(Debug, Clone)]
pub struct AgentConfig {
    pub path: PathBuf,
    pub device_id: String,
    pub labels: BTreeMap<String, String>,
    pub state_dir: PathBuf,
    pub root: PathBuf,
    pub source: SourceConfig,
    pub trust: TrustConfig,
    pub collector: Option<CollectorConfig>,
    pub apply: ApplyConfig,
    pub metrics: MetricsConfig,
}

#[derive(Debug, Clone)]
pub struct SourceConfig {
    pub url: String,
    /// The ref fetched: `[source] ref` (branch mode), or the environment's release ref
    /// `refs/shoal/releases/NAME` (environment mode).
    pub reference: String,
    /// `[source] environment`: the device follows signed releases of this environment instead of
    /// a branch (DESIGN.md, "Environments and releases").
    pub environment: Option<String>,
    pub interval: Duration,
    /// PEM file of CA certificates trusted for an https source instead of the system roots.
    pub ca_file: Option<PathBuf>,
    /// Deadline for one network operation (connect, or a stalled transfer).
    pub timeout: Duration,
    /// Extra attempts after a transient network failure, with exponential backoff.
    pub retries: u32,
    /// The most one fetch may receive from the server before the signature can be checked.
    pub max_fetch: ByteSize,
    /// The largest single object (a file, once inflated) a fetch may bring.
    pub max_object: ByteSize,
    /// `[source] auth_file`: where the credential is read from (https sources only).
    pub auth_file: Option<PathBuf>,
    /// The credential read from `auth_file` by [`AgentConfig::load`] (never from agent.toml).
    pub credential: Option<Credential>,
    /// `[source] ssh_key`: the deploy key (ssh sources only, where it is required).
    pub ssh_key: Option<PathBuf>,
    /// `[source] known_hosts`: the server's pinned host key (ssh sources only, required there).
    pub known_hosts: Option<PathBuf>,
    /// Both, read and checked by [`AgentConfig::load`].
    pub ssh: Option<SshAccess>,
    /// `[source] proxy` (and `proxy_auth_file`): the forward proxy for an http(s) source, over
    /// `HTTPS_PROXY` from the environment.
    pub proxy: Option<ProxySetting>,
    /// `[source] client_cert` and `client_key` (https sources only, both or neither).
    pub client_cert: Option<(PathBuf, PathBuf)>,
    /// Both, read and checked by [`AgentConfig::load`].
    pub client_identity: Option<ClientIdentity>,
}

/// What the agent's `ssh` is given for an ssh source: the deploy key and the pinned host keys.
#[derive(Debug, Clone)]
pub struct SshAccess {
    pub key: DeployKey,
    pub known_hosts: KnownHosts,
}

/// A number of bytes, written in the config as `"64MiB"`, `"512KiB"`, `"1GiB"`, `"100B"` or a
/// plain integer, and shown the same way (`64 MiB`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub struct ByteSize(pub u64);

impl ByteSize {
    pub const KIB: u64 = 1024;
    pub const MIB: u64 = 1024 * 1024;
    pub const GIB: u64 = 1024 * 1024 * 1024;

    pub fn bytes(self) -> u64 {
        self.0
    }
}

impl std::fmt::Display for ByteSize {
    /// Exact when the size is a whole number of a unit (`64 MiB`), else one decimal (`64.1 MiB`).
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let n = self.0;
        for (unit, name) in [(Self::GIB, "GiB"), (Self::MIB, "MiB"), (Self::KIB, "KiB")] {
            if n >= unit {
                return if n.is_multiple_of(unit) {
                    write!(f, "{} {name}", n / unit)
                } else {
                    write!(f, "{:.1} {name}", n as f64 / unit as f64)
                };
            }
        }
        write!(f, "{n} bytes")
    }
}

impl<'de> Deserialize<'de> for ByteSize {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct Visitor;
        impl serde::de::Visitor<'_> for Visitor {
            type Value = ByteSize;
            fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str("a size such as \"64MiB\", \"512KiB\" or a number of bytes")
            }
            fn visit_u64<E: serde::de::Error>(self, n: u64) -> Result<ByteSize, E> {
                Ok(ByteSize(n))
            }
            fn visit_i64<E: serde::de::Error>(self, n: i64) -> Result<ByteSize, E> {
                u64::try_from(n)
                    .map(ByteSize)
                    .map_err(|_| E::custom(format!("invalid size {n}: must not be negative")))
            }
            fn visit_str<E: serde::de::Error>(self, text: &str) -> Result<ByteSize, E> {
                parse_size(text).map_err(E::custom)
            }
        }
        d.deserialize_any(Visitor)
    }
}

/// Parses `"64MiB"`, `"64 MiB"`, `"512KiB"`, `"100B"` or `"1048576"` (bytes). Decimal units
/// (`MB`) are refused rather than guessed at: `64MB` is 64,000,000 bytes to some and 64 MiB to
/// others.
pub fn parse_size(text: &str) -> Result<ByteSize, String> {
    let trimmed = text.trim();
    let split = trimmed
        .find(|c: char| !c.is_ascii_digit())
        .unwrap_or(trimmed.len());
    let (number, unit) = trimmed.split_at(split);
    let value: u64 = number.parse().map_err(|_| {
        format!("invalid size {text:?}: expected a number and a unit, like \"64MiB\"")
    })?;
    let unit_bytes = match unit.trim() {
        "" | "B" => 1,
        "KiB" => ByteSize::KIB,
        "MiB" => ByteSize::MIB,
        "GiB" => ByteSize::GIB,
        _ => {
            return Err(format!(
                "invalid size {text:?}: unit must be one of B, KiB, MiB, GiB"
            ))
        }
    };
    value
        .checked_mul(unit_bytes)
        .map(ByteSize)
        .ok_or_else(|| format!("invalid size {text:?}: too large"))
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum VerifyMode {
    /// Only the new tip's signature is checked.
    Tip,
    /// Every commit between the applied one and the new tip, merges included.
    Range,
}

#[derive(Debug, Clone)]
pub struct TrustConfig {
    pub allowed_signers: PathBuf,
    pub verify: VerifyMode,
    /// `revoked_keys`: keys refused everywhere (git's `gpg.ssh.revocationFile` format).
    pub revoked_keys: Option<PathBuf>,
    /// `root_threshold`: how many allowed_signers principals must sign the repository's first
    /// `.shoal/policy.toml` (default 1).
    pub root_threshold: usize,
}

#[derive(Debug, Clone)]
pub struct CollectorConfig {
    pub url: String,
    pub ca_file: Option<PathBuf>,
    /// A file holding the enrollment token presented on first contact (`X-Shoal-Enroll`).
    pub enroll_token_file: Option<PathBuf>,
    /// `[collector] proxy` (and `proxy_auth_file`), over `HTTPS_PROXY` from the environment.
    pub proxy: Option<ProxySetting>,
    /// `[collector] key`: the collector's own ed25519 key, which signs its halt lists. Without
    /// it the agent ignores halt lists (a halt from the collector is not trusted).
    pub key: Option<CollectorKey>,
}

/// The collector key pinned in `[collector] key`, parsed once at load.
#[derive(Debug, Clone)]
pub struct CollectorKey {
    /// `ed25519:BASE64`, as messages and `doctor` name it.
    pub id: shoal_proto::KeyId,
    pub key: ed25519_dalek::VerifyingKey,
}

/// `[metrics]`: what the agent exports besides its reports.
#[derive(Debug, Clone, Default)]
pub struct MetricsConfig {
    /// `textfile`: a node_exporter textfile (`*.prom`) rewritten after each sync and rollback.
    pub textfile: Option<PathBuf>,
}

#[derive(Debug, Clone)]
pub struct ApplyConfig {
    pub health_timeout: Duration,
    pub keep_generations: u32,
}

// The raw file shape. `deny_unknown_fields` everywhere: a misspelt key silently ignored is a
// device that does something other than what its operator wrote.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawConfig {
    device_id: Option<String>,
    #[serde(default)]
    labels: BTreeMap<String, String>,
    state_dir: Option<PathBuf>,
    root: Option<PathBuf>,
    source: RawSource,
    #[serde(default)]
    trust: RawTrust,
    collector: Option<RawCollector>,
    #[serde(default)]
    apply: RawApply,
    #[serde(default)]
    metrics: RawMetrics,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawSource {
    url: String,
    #[serde(rename = "ref")]
    reference: Option<String>,
    environment: Option<String>,
    interval: Option<HumanDuration>,
    ca_file: Option<PathBuf>,
    timeout: Option<HumanDuration>,
    retries: Option<u32>,
    max_fetch: Option<ByteSize>,
    max_object: Option<ByteSize>,
    auth_file: Option<PathBuf>,
    ssh_key: Option<PathBuf>,
    known_hosts: Option<PathBuf>,
    proxy: Option<String>,
    proxy_auth_file: Option<PathBuf>,
    client_cert: Option<PathBuf>,
    client_key: Option<PathBuf>,
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct RawTrust {
    allowed_signers: Option<PathBuf>,
    verify: Option<VerifyMode>,
    revoked_keys: Option<PathBuf>,
    root_threshold: Option<u32>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawCollector {
    url: String,
    ca_file: Option<PathBuf>,
    enroll_token_file: Option<PathBuf>,
    proxy: Option<String>,
    proxy_auth_file: Option<PathBuf>,
    key: Option<String>,
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct RawApply {
    health_timeout: Option<HumanDuration>,
    keep_generations: Option<u32>,
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct RawMetrics {
    textfile: Option<PathBuf>,
}

/// A duration written the way operators write them: `"500ms"`, `"30s"`, `"5m"`, `"1h"`.
#[derive(Debug, Clone, Copy)]
struct HumanDuration(Duration);

impl<'de> Deserialize<'de> for HumanDuration {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let text = String::deserialize(d)?;
        parse_duration(&text)
            .map(HumanDuration)
            .map_err(serde::de::Error::custom)
    }
}

pub use shoal_core::duration::parse_duration;

impl AgentConfig {
    /// Reads and checks the config file, and the credential of `[source] auth_file` if it
    /// names one: a credential file that others can read, or that is malformed, is a config
    /// error (the agent does not start).
    pub fn load(path: &Path) -> Result<Self, ConfigError> {
        let text = paths::read_to_string(path).map_err(ConfigError::Read)?;
        let mut config = Self::parse(&text, path)?;
        if let Some(file) = &config.source.auth_file {
            let credential = Credential::load(file).map_err(|source| ConfigError::Credential {
                path: path.to_owned(),
                key: "source.auth_file",
                source,
            })?;
            config.source.credential = Some(credential);
        }
        if let (Some(key), Some(known_hosts)) = (&config.source.ssh_key, &config.source.known_hosts)
        {
            let failed = |key, source| ConfigError::Credential {
                path: path.to_owned(),
                key,
                source,
            };
            config.source.ssh = Some(SshAccess {
                key: DeployKey::load(key).map_err(|e| failed("source.ssh_key", e))?,
                known_hosts: KnownHosts::load(known_hosts)
                    .map_err(|e| failed("source.known_hosts", e))?,
            });
        }
        if let Some((cert, key)) = &config.source.client_cert {
            let identity =
                ClientIdentity::load(cert, key).map_err(|source| ConfigError::Credential {
                    path: path.to_owned(),
                    key: "source.client_key",
                    source,
                })?;
            config.source.client_identity = Some(identity);
        }
        let proxies = [
            ("source.proxy_auth_file", config.source.proxy.as_mut()),
            (
                "collector.proxy_auth_file",
                config.collector.as_mut().and_then(|c| c.proxy.as_mut()),
            ),
        ];
        for (key, proxy) in proxies {
            let Some(proxy) = proxy else { continue };
            if let Some(file) = &proxy.auth_file {
                let credential =
                    Credential::load_as(file, FileKind::ProxyAuthFile).map_err(|source| {
                        ConfigError::Credential {
                            path: path.to_owned(),
                            key,
                            source,
                        }
                    })?;
                proxy.credential = Some(credential);
            }
        }
        Ok(config)
    }

    /// Parses config text; `path` is used for error messages and to resolve relative paths.
    pub fn parse(text: &str, path: &Path) -> Result<Self, ConfigError> {
        let raw: RawConfig = toml::from_str(text).map_err(|e| ConfigError::Parse {
            path: path.to_owned(),
            message: e.to_string().trim_end().to_owned(),
        })?;
        let base = path.parent().unwrap_or(Path::new("/"));
        let resolve = |p: PathBuf| if p.is_absolute() { p } else { base.join(p) };
        let invalid = |key, message: &str| ConfigError::Invalid {
            path: path.to_owned(),
            key,
            message: message.to_owned(),
        };

        let device_id = match raw.device_id {
            Some(id) => id,
            None => machine_id().ok_or_else(|| {
                invalid(
                    "device_id",
                    "is not set and /etc/machine-id is unreadable; set device_id in the config",
                )
            })?,
        };
        if device_id.is_empty()
            || device_id
                .chars()
                .any(|c| c.is_whitespace() || c.is_control())
        {
            return Err(invalid(
                "device_id",
                "must be non-empty, without spaces or control characters",
            ));
        }
        if raw.source.url.trim().is_empty() {
            return Err(invalid("source.url", "must not be empty"));
        }
        let reference = match (raw.source.reference, &raw.source.environment) {
            (Some(_), Some(_)) => {
                return Err(invalid(
                    "source.ref",
                    "and `source.environment` are both set; set only one: `ref` follows a branch, `environment` follows the signed releases at refs/shoal/releases/NAME",
                ))
            }
            (None, None) => {
                return Err(invalid(
                    "source",
                    "needs `ref` (a branch, such as \"refs/heads/production\") or `environment` (signed releases, such as \"production\")",
                ))
            }
            (Some(reference), None) => {
                if !reference.starts_with("refs/") {
                    return Err(invalid(
                        "source.ref",
                        "must be a full ref name such as \"refs/heads/production\"",
                    ));
                }
                reference
            }
            (None, Some(environment)) => {
                shoal_core::release::check_environment_name(environment)
                    .map_err(|message| invalid("source.environment", &message))?;
                shoal_core::release::release_ref(environment)
            }
        };
        let interval = raw.source.interval.map_or(Duration::from_secs(60), |d| d.0);
        if interval.is_zero() {
            return Err(invalid("source.interval", "must be greater than zero"));
        }
        let max_fetch = raw.source.max_fetch.unwrap_or(DEFAULT_MAX_FETCH);
        if max_fetch.bytes() == 0 {
            return Err(invalid("source.max_fetch", "must be greater than zero"));
        }
        let max_object = raw.source.max_object.unwrap_or(DEFAULT_MAX_OBJECT);
        if max_object.bytes() == 0 {
            return Err(invalid("source.max_object", "must be greater than zero"));
        }
        let url = resolve_local_url(&raw.source.url, base);
        if url_has_password(&url) {
            return Err(invalid(
                "source.url",
                "carries a password (scheme://user:password@host): it would show in logs, \
                 errors and status; remove it from the URL and put the credential in \
                 `auth_file` (a file of its own, mode 0600)",
            ));
        }
        if raw.source.auth_file.is_some() && !has_scheme(&url, "https") {
            return Err(invalid(
                "source.auth_file",
                "is only used with an https:// source URL: over any other transport the \
                 credential would travel in clear text or not be used at all; use https:// or \
                 remove auth_file",
            ));
        }
        let ssh_source = is_ssh_url(&url);
        match (&raw.source.ssh_key, &raw.source.known_hosts) {
            (Some(_), Some(_)) if ssh_source => {}
            _ if ssh_source => {
                return Err(invalid(
                    "source.url",
                    "is an ssh URL, which needs `ssh_key` (the deploy key, mode 0600) and \
                     `known_hosts` (the server's pinned host key, as `ssh-keyscan` prints it) in \
                     [source]: the agent's ssh runs in batch mode and uses nothing from ~/.ssh",
                ))
            }
            (Some(_), _) => return Err(invalid("source.ssh_key", SSH_ONLY)),
            (_, Some(_)) => return Err(invalid("source.known_hosts", SSH_ONLY)),
            (None, None) => {}
        }
        for (key, file) in [
            ("source.ssh_key", &raw.source.ssh_key),
            ("source.known_hosts", &raw.source.known_hosts),
        ] {
            if let Some(file) = file {
                check_ssh_path(&resolve(file.clone())).map_err(|m| invalid(key, &m))?;
            }
        }
        if raw.source.proxy.is_some() && !(has_scheme(&url, "https") || has_scheme(&url, "http")) {
            return Err(invalid(
                "source.proxy",
                "is only used with an http:// or https:// source URL (git://, ssh and local \
                 sources are not proxied); remove it",
            ));
        }
        let client_cert = match (raw.source.client_cert, raw.source.client_key) {
            (None, None) => None,
            (Some(cert), Some(key)) if has_scheme(&url, "https") => {
                Some((resolve(cert), resolve(key)))
            }
            (Some(_), Some(_)) => {
                return Err(invalid(
                    "source.client_cert",
                    "is only used with an https:// source URL (a TLS client certificate); \
                     remove it or use https://",
                ))
            }
            (Some(_), None) | (None, Some(_)) => {
                return Err(invalid(
                    "source.client_cert",
                    "and `source.client_key` go together: set both (the PEM certificate and \
                     its private key, mode 0600) or neither",
                ))
            }
        };
        let source_proxy = proxy_setting(
            "[source] proxy",
            raw.source.proxy,
            raw.source.proxy_auth_file.map(resolve),
        )
        .map_err(|(key, m)| invalid(["source.proxy", "source.proxy_auth_file"][key], &m))?;
        let collector = match raw.collector {
            Some(c) => Some(CollectorConfig {
                key: match c.key.as_deref() {
                    None => None,
                    Some(text) => {
                        let (id, key) = shoal_proto::KeyId::parse_with_key(text).map_err(|e| {
                            invalid(
                                "collector.key",
                                &format!(
                                    "is not a collector key: {e}; write the key \
                                     `shoal-collector serve` prints at start, like \
                                     \"ed25519:BASE64\""
                                ),
                            )
                        })?;
                        Some(CollectorKey { id, key })
                    }
                },
                url: c.url.trim_end_matches('/').to_owned(),
                ca_file: c.ca_file.map(resolve),
                enroll_token_file: c.enroll_token_file.map(resolve),
                proxy: proxy_setting("[collector] proxy", c.proxy, c.proxy_auth_file.map(resolve))
                    .map_err(|(key, m)| {
                        invalid(["collector.proxy", "collector.proxy_auth_file"][key], &m)
                    })?,
            }),
            None => None,
        };
        let root_threshold = match raw.trust.root_threshold {
            None => 1,
            Some(0) => return Err(invalid(
                "trust.root_threshold",
                "must be at least 1 (how many allowed_signers principals sign the first policy)",
            )),
            Some(n) => n as usize,
        };
        let keep_generations = raw.apply.keep_generations.unwrap_or(10);
        if keep_generations == 0 {
            return Err(invalid(
                "apply.keep_generations",
                "must be at least 1 (the current generation)",
            ));
        }

        let state_dir = resolve(raw.state_dir.unwrap_or_else(|| "/var/lib/shoal".into()));
        let textfile = raw.metrics.textfile.map(resolve);
        if let Some(textfile) = &textfile {
            // node_exporter's textfile collector reads `*.prom` only: any other name would be
            // written after every sync and never scraped.
            if textfile.extension().is_none_or(|e| e != "prom") {
                return Err(invalid(
                    "metrics.textfile",
                    &format!(
                        "= {:?} does not end in .prom, and node_exporter's textfile collector reads only *.prom files; name it like /var/lib/prometheus/node-exporter/shoal.prom",
                        textfile.display().to_string()
                    ),
                ));
            }
            if textfile.starts_with(&state_dir) {
                return Err(invalid(
                    "metrics.textfile",
                    "is inside state_dir, which only the agent's own records may use; put it in node_exporter's textfile directory",
                ));
            }
        }
        Ok(AgentConfig {
            path: path.to_owned(),
            device_id,
            labels: raw.labels,
            state_dir,
            root: resolve(raw.root.unwrap_or_else(|| "/".into())),
            source: SourceConfig {
                url,
                reference,
                environment: raw.source.environment,
                interval,
                ca_file: raw.source.ca_file.map(resolve),
                timeout: raw.source.timeout.map_or(Duration::from_secs(60), |d| d.0),
                retries: raw.source.retries.unwrap_or(3),
                max_fetch,
                max_object,
                auth_file: raw.source.auth_file.map(resolve),
                credential: None,
                ssh_key: raw.source.ssh_key.map(resolve),
                known_hosts: raw.source.known_hosts.map(resolve),
                ssh: None,
                proxy: source_proxy,
                client_cert,
                client_identity: None,
            },
            trust: TrustConfig {
                allowed_signers: resolve(
                    raw.trust
                        .allowed_signers
                        .unwrap_or_else(|| "/etc/shoal/allowed_signers".into()),
                ),
                verify: raw.trust.verify.unwrap_or(VerifyMode::Range),
                revoked_keys: raw.trust.revoked_keys.map(resolve),
                root_threshold,
            },
            collector,
            apply: ApplyConfig {
                health_timeout: raw
                    .apply
                    .health_timeout
                    .map_or(Duration::from_secs(30), |d| d.0),
                keep_generations,
            },
            metrics: MetricsConfig { textfile },
        })
    }
}

/// A relative local path as the source URL is taken relative to the config file, like every
/// other path in it; URLs with a scheme and absolute paths are left alone.
fn resolve_local_url(url: &str, base: &Path) -> String {
    let is_relative_path = !url.contains("://") && !url.starts_with('/') && !url.contains('@');
    if is_relative_path {
        base.join(url).to_string_lossy().into_owned()
    } else {
        url.to_owned()
    }
}

/// `proxy` and `proxy_auth_file` of one table (`key`: `[source] proxy`), checked: an http(s) URL
/// with a host and no credential in it, and an auth file only with a proxy. The error is the
/// index of the faulty key (0: proxy, 1: proxy_auth_file) and the message.
fn proxy_setting(
    key: &'static str,
    url: Option<String>,
    auth_file: Option<PathBuf>,
) -> Result<Option<ProxySetting>, (usize, String)> {
    let Some(url) = url else {
        return match auth_file {
            Some(_) => Err((
                1,
                "is only used with `proxy` (the proxy it authenticates to); set `proxy` or \
                 remove it (a proxy from HTTPS_PROXY takes its credential in its own URL)"
                    .into(),
            )),
            None => Ok(None),
        };
    };
    let parsed = reqwest::Url::parse(&url).map_err(|e| {
        (
            0,
            format!("{url:?} is not a URL ({e}); write it as http://HOST:PORT"),
        )
    })?;
    if !matches!(parsed.scheme(), "http" | "https") || parsed.host_str().is_none_or(str::is_empty) {
        return Err((
            0,
            "must be an http:// or https:// URL with a host, such as http://proxy.example:3128"
                .into(),
        ));
    }
    if !parsed.username().is_empty() || parsed.password().is_some() {
        return Err((
            0,
            "carries a user name or password: it would show in logs, errors and status; remove \
             it from the URL and put the proxy's credential in `proxy_auth_file` (a file of its \
             own, mode 0600)"
                .into(),
        ));
    }
    Ok(Some(ProxySetting {
        key,
        url: url.trim_end_matches('/').to_owned(),
        auth_file,
        credential: None,
    }))
}

const SSH_ONLY: &str = "is only used with an ssh source URL (ssh://user@host/path or \
                        user@host:path); remove it, or use an ssh URL";

/// Whether the source is reached over ssh: `ssh://` or the scp-like `user@host:path`.
pub fn is_ssh_url(url: &str) -> bool {
    gix::url::parse(gix::bstr::BStr::new(url)).is_ok_and(|u| u.scheme == gix::url::Scheme::Ssh)
}

/// A path handed to ssh must mean the same file to it: ssh expands `%` and `~` in these
/// options and splits an `-o` value at white space unless quoted.
fn check_ssh_path(path: &Path) -> Result<(), String> {
    let text = path.to_str().ok_or("is not valid UTF-8")?;
    match text
        .chars()
        .find(|c| !(c.is_ascii_alphanumeric() || "/._-+@,=:".contains(*c)))
    {
        Some(c) => Err(format!(
            "{text:?} contains {c:?}, which ssh would expand or split; use a path of letters, \
             digits and / . _ - + @ , = :"
        )),
        None => Ok(()),
    }
}

/// Whether `url` has a password in its authority (`scheme://user:password@host/...`).
fn url_has_password(url: &str) -> bool {
    let Some((_, rest)) = url.split_once("://") else {
        return false;
    };
    let authority = rest.split(['/', '?', '#']).next().unwrap_or("");
    authority
        .rsplit_once('@')
        .is_some_and(|(userinfo, _)| userinfo.contains(':'))
}

/// Whether `url` starts with `scheme://`, in any case.
pub fn has_scheme(url: &str, scheme: &str) -> bool {
    url.get(..scheme.len())
        .is_some_and(|s| s.eq_ignore_ascii_case(scheme))
        && url
            .get(scheme.len()..)
            .is_some_and(|rest| rest.starts_with("://"))
}

fn machine_id() -> Option<String> {
    let id = std::fs::read_to_string("/etc/machine-id").ok()?;
    let id = id.trim();
    (!id.is_empty()).then(|| id.to_owned())
}

impl AgentConfig {
    /// The identity of the device this config describes, as render and reports use it.
    /// `state_dir` is turned into the path the device sees: with `root = "/mnt/img"` and
    /// `state_dir = "/mnt/img/var/lib/shoal"`, declared paths must stay out of `/var/lib/shoal`.
    pub fn identity(&self) -> DeviceIdentity {
        let state_dir = match self.state_dir.strip_prefix(&self.root) {
            Ok(inside) => Path::new("/").join(inside),
            // Outside the root: no declared path can reach it; keep it for the message.
            Err(_) => self.state_dir.clone(),
        };
        DeviceIdentity {
            device_id: self.device_id.clone(),
            labels: self.labels.clone(),
            state_dir,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const MINIMAL: &str = r#"
device_id = "gw-0042"
[source]
url = "https://git.example.com/fleet/config.git"
ref = "refs/heads/production"
"#;

    fn parse(text: &str) -> Result<AgentConfig, ConfigError> {
        AgentConfig::parse(text, Path::new("/etc/shoal/agent.toml"))
    }

    #[test]
    fn minimal_config_gets_documented_defaults() {
        let c = parse(MINIMAL).unwrap();
        assert_eq!(c.device_id, "gw-0042");
        assert_eq!(c.state_dir, Path::new("/var/lib/shoal"));
        assert_eq!(c.root, Path::new("/"));
        assert_eq!(c.source.interval, Duration::from_secs(60));
        assert_eq!(c.trust.verify, VerifyMode::Range);
        assert_eq!(
            c.trust.allowed_signers,
            Path::new("/etc/shoal/allowed_signers")
        );
        assert_eq!(c.apply.keep_generations, 10);
        assert!(c.collector.is_none());
        assert_eq!(c.source.environment, None);
    }

    #[test]
    fn an_environment_follows_its_release_ref() {
        let c = parse(&MINIMAL.replace(
            "ref = \"refs/heads/production\"",
            "environment = \"production\"",
        ))
        .unwrap();
        assert_eq!(c.source.environment.as_deref(), Some("production"));
        assert_eq!(c.source.reference, "refs/shoal/releases/production");
    }

    #[test]
    fn full_design_example_parses() {
        let c = parse(
            r#"
device_id = "gw-0042"
labels    = { role = "gateway", site = "berlin" }
state_dir = "state"
root      = "/"
[source]
url      = "https://git.example.com/fleet/config.git"
ref      = "refs/heads/production"
interval = "60s"
[trust]
allowed_signers = "/etc/shoal/allowed_signers"
verify = "tip"
[collector]
url = "https://collector.example.com"
[apply]
health_timeout = "30s"
keep_generations = 10
"#,
        )
        .unwrap();
        assert_eq!(c.labels["site"], "berlin");
        assert_eq!(
            c.state_dir,
            Path::new("/etc/shoal/state"),
            "relative to the config file"
        );
        assert_eq!(c.trust.verify, VerifyMode::Tip);
        assert_eq!(c.collector.unwrap().url, "https://collector.example.com");
    }

    #[test]
    fn errors_name_the_file_and_the_key() {
        let cases = [
            (
                MINIMAL.replace("[source]", "[source]\nintervall = \"5s\""),
                "unknown field `intervall`",
            ),
            (
                MINIMAL.replace("refs/heads/production", "production"),
                "`source.ref` must be a full ref name",
            ),
            (
                format!("{MINIMAL}interval = \"5 minutes\""),
                "invalid duration \"5 minutes\": unit must be one of ms, s, m, h, d",
            ),
            (
                format!("{MINIMAL}[trust]\nverify = \"all\""),
                "unknown variant `all`, expected `tip` or `range`",
            ),
            (MINIMAL.replace("[source]\n", ""), "unknown field `url`"),
            (
                MINIMAL.replace("ref = ", "environment = \"production\"\nref = "),
                "`source.ref` and `source.environment` are both set; set only one",
            ),
            (
                MINIMAL.replace("ref = \"refs/heads/production\"", ""),
                "`source` needs `ref` (a branch, such as \"refs/heads/production\") or `environment`",
            ),
            (
                MINIMAL.replace("ref = \"refs/heads/production\"", "environment = \"prod/1\""),
                "`source.environment` \"prod/1\" is not an environment name",
            ),
            (
                "device_id = ".to_owned(),
                "TOML parse error at line 1, column 13",
            ),
        ];
        for (text, expected) in cases {
            let message = parse(&text).unwrap_err().to_string();
            assert!(message.starts_with("/etc/shoal/agent.toml"), "{message}");
            assert!(
                message.contains(expected),
                "{message:?} should contain {expected:?}"
            );
        }
    }

    #[test]
    fn missing_file_says_what_to_do() {
        let err = AgentConfig::load(Path::new("/nonexistent/agent.toml")).unwrap_err();
        assert_eq!(
            err.to_string(),
            "cannot read the agent config: could not read /nonexistent/agent.toml: No such file or \
             directory (os error 2); pass --config PATH or create /etc/shoal/agent.toml"
        );
    }

    #[test]
    fn fetch_bounds_default_and_parse_as_sizes() {
        let c = parse(MINIMAL).unwrap();
        assert_eq!(c.source.max_fetch, ByteSize(64 << 20));
        assert_eq!(c.source.max_object, ByteSize(8 << 20));
        let c = parse(&format!(
            "{MINIMAL}max_fetch = \"512KiB\"\nmax_object = 300000\n"
        ))
        .unwrap();
        assert_eq!(c.source.max_fetch, ByteSize(512 * 1024));
        assert_eq!(c.source.max_object, ByteSize(300_000));
        let cases = [
            (
                "max_fetch = \"64MB\"",
                "unit must be one of B, KiB, MiB, GiB",
            ),
            ("max_fetch = \"MiB\"", "expected a number and a unit"),
            ("max_fetch = -1", "must not be negative"),
            (
                "max_fetch = 0",
                "`source.max_fetch` must be greater than zero",
            ),
            (
                "max_object = \"0KiB\"",
                "`source.max_object` must be greater than zero",
            ),
            ("max_fetch = \"99999999999GiB\"", "too large"),
            ("max_fetch = 1.5", "a size such as"),
        ];
        for (line, expected) in cases {
            let message = parse(&format!("{MINIMAL}{line}\n"))
                .unwrap_err()
                .to_string();
            assert!(message.starts_with("/etc/shoal/agent.toml"), "{message}");
            assert!(
                message.contains(expected),
                "{message:?} should contain {expected:?}"
            );
        }
    }

    #[test]
    fn sizes_read_back_the_way_they_are_written() {
        for (text, bytes, shown) in [
            ("64MiB", 64 << 20, "64 MiB"),
            ("64 MiB", 64 << 20, "64 MiB"),
            ("512KiB", 512 << 10, "512 KiB"),
            ("1GiB", 1 << 30, "1 GiB"),
            ("100B", 100, "100 bytes"),
            ("67108913", 67_108_913, "64.0 MiB"),
            ("1536KiB", 1536 << 10, "1.5 MiB"),
        ] {
            let size = parse_size(text).unwrap();
            assert_eq!(size, ByteSize(bytes), "{text}");
            assert_eq!(size.to_string(), shown, "{text}");
        }
    }

    #[test]
    fn a_password_in_the_source_url_is_refused_without_repeating_it() {
        for url in [
            "https://deploy:hunter2@git.example.com/fleet/config.git",
            "http://deploy:hunter2@git.example.com:8080/fleet/config.git",
            "ssh://git:hunter2@git.example.com/fleet/config.git",
        ] {
            let text = MINIMAL.replace("https://git.example.com/fleet/config.git", url);
            let message = parse(&text).unwrap_err().to_string();
            assert_eq!(
                message,
                "/etc/shoal/agent.toml: `source.url` carries a password \
                 (scheme://user:password@host): it would show in logs, errors and status; \
                 remove it from the URL and put the credential in `auth_file` (a file of its \
                 own, mode 0600)",
                "{url}"
            );
            assert!(!message.contains("hunter2"));
        }
        // A user name alone is no secret (ssh://git@host is the usual form).
        for url in [
            "ssh://git@git.example.com/fleet/config.git",
            "https://deploy@git.example.com/fleet/config.git",
            "https://git.example.com/fleet/config.git?a=b:c@d",
        ] {
            let mut text = MINIMAL.replace("https://git.example.com/fleet/config.git", url);
            if is_ssh_url(url) {
                text.push_str("ssh_key = \"k\"\nknown_hosts = \"h\"\n");
            }
            assert!(parse(&text).is_ok(), "{url}");
        }
    }

    #[test]
    fn auth_file_is_for_https_sources_only() {
        let c = parse(&format!("{MINIMAL}auth_file = \"git-auth.toml\"\n")).unwrap();
        assert_eq!(
            c.source.auth_file.as_deref(),
            Some(Path::new("/etc/shoal/git-auth.toml")),
            "relative to the config file"
        );
        assert!(c.source.credential.is_none(), "parse reads no other file");
        for url in [
            "http://git.example.com/fleet/config.git",
            "git://git.example.com/fleet/config.git",
            "ssh://git@git.example.com/fleet/config.git",
            "/srv/config.git",
        ] {
            let text = MINIMAL.replace("https://git.example.com/fleet/config.git", url);
            let message = parse(&format!("{text}auth_file = \"/etc/shoal/git-auth.toml\"\n"))
                .unwrap_err()
                .to_string();
            assert!(
                message.starts_with(
                    "/etc/shoal/agent.toml: `source.auth_file` is only used with an https:// \
                     source URL: over any other transport the credential would travel in clear \
                     text"
                ),
                "{url}: {message}"
            );
        }
    }

    #[test]
    fn an_ssh_source_needs_its_deploy_key_and_pinned_host_keys_and_only_it_takes_them() {
        let ssh = MINIMAL.replace(
            "https://git.example.com/fleet/config.git",
            "git@git.example.com:fleet/config.git",
        );
        let both = "ssh_key = \"deploy_key\"\nknown_hosts = \"known_hosts\"\n";
        let c = parse(&format!("{ssh}{both}")).unwrap();
        assert_eq!(
            c.source.ssh_key.as_deref(),
            Some(Path::new("/etc/shoal/deploy_key"))
        );
        assert_eq!(
            c.source.known_hosts.as_deref(),
            Some(Path::new("/etc/shoal/known_hosts"))
        );
        assert!(c.source.ssh.is_none(), "parse reads no other file");
        for text in [
            ssh.clone(),
            format!("{ssh}ssh_key = \"k\"\n"),
            format!("{ssh}known_hosts = \"k\"\n"),
        ] {
            let message = parse(&text).unwrap_err().to_string();
            assert!(
                message.starts_with(
                    "/etc/shoal/agent.toml: `source.url` is an ssh URL, which needs `ssh_key` \
                     (the deploy key, mode 0600) and `known_hosts`"
                ),
                "{message}"
            );
        }
        for (line, key) in [
            ("ssh_key = \"k\"", "source.ssh_key"),
            ("known_hosts = \"k\"", "source.known_hosts"),
        ] {
            let message = parse(&format!("{MINIMAL}{line}\n"))
                .unwrap_err()
                .to_string();
            assert!(
                message.starts_with(&format!(
                    "/etc/shoal/agent.toml: `{key}` is only used with an ssh source URL"
                )),
                "{message}"
            );
        }
        let message = parse(&format!(
            "{ssh}ssh_key = \"/etc/shoal/my key\"\nknown_hosts = \"k\"\n"
        ))
        .unwrap_err()
        .to_string();
        assert!(
            message.contains("`source.ssh_key` \"/etc/shoal/my key\" contains ' ', which ssh"),
            "{message}"
        );
        assert!(is_ssh_url("ssh://git@host:2222/srv/config.git"));
        assert!(!is_ssh_url("https://host/config.git"));
        assert!(!is_ssh_url("/srv/config.git"));
    }

    #[test]
    fn the_collector_key_is_an_ed25519_key_id_and_a_bad_one_names_the_field() {
        let signing = ed25519_dalek::SigningKey::from_bytes(&[7; 32]);
        let id = shoal_proto::KeyId::of(&signing.verifying_key());
        let c = parse(&format!(
            "{MINIMAL}[collector]\nurl = \"https://c.example\"\nkey = \"{id}\"\n"
        ))
        .unwrap();
        let key = c.collector.unwrap().key.unwrap();
        assert_eq!(key.id, id);
        assert_eq!(key.key, signing.verifying_key());
        // Optional: without it, halt lists are not trusted.
        let c = parse(&format!(
            "{MINIMAL}[collector]\nurl = \"https://c.example\"\n"
        ))
        .unwrap();
        assert!(c.collector.unwrap().key.is_none());
        for (bad, why) in [
            (
                "ed25519:nope",
                "is not standard base64 of a 32-byte ed25519 public key",
            ),
            ("rsa:AAAA", "does not start with \"ed25519:\""),
        ] {
            let err = parse(&format!(
                "{MINIMAL}[collector]\nurl = \"https://c.example\"\nkey = \"{bad}\"\n"
            ))
            .unwrap_err()
            .to_string();
            assert!(
                err.starts_with(
                    "/etc/shoal/agent.toml: `collector.key` is not a collector key: key id "
                ),
                "{err}"
            );
            assert!(err.contains(why), "{err}");
            assert!(
                err.ends_with("write the key `shoal-collector serve` prints at start, like \"ed25519:BASE64\""),
                "{err}"
            );
        }
    }

    #[test]
    fn proxies_are_http_urls_without_credentials_and_their_auth_file_needs_them() {
        let c = parse(&format!(
            "{MINIMAL}proxy = \"http://proxy.corp:3128/\"\nproxy_auth_file = \"proxy.toml\"\n\
             [collector]\nurl = \"https://c.example\"\nproxy = \"http://p2:8080\"\n"
        ))
        .unwrap();
        let proxy = c.source.proxy.unwrap();
        assert_eq!(proxy.url, "http://proxy.corp:3128");
        assert_eq!(proxy.key, "[source] proxy");
        assert_eq!(
            proxy.auth_file.as_deref(),
            Some(Path::new("/etc/shoal/proxy.toml"))
        );
        assert_eq!(c.collector.unwrap().proxy.unwrap().url, "http://p2:8080");
        let cases = [
            (
                format!("{MINIMAL}proxy = \"http://u:hunter2@proxy:3128\"\n"),
                "`source.proxy` carries a user name or password",
            ),
            (
                format!("{MINIMAL}proxy = \"socks5://proxy:1080\"\n"),
                "`source.proxy` must be an http:// or https:// URL with a host",
            ),
            (
                format!("{MINIMAL}proxy_auth_file = \"p.toml\"\n"),
                "`source.proxy_auth_file` is only used with `proxy`",
            ),
            (
                format!(
                    "{MINIMAL}[collector]\nurl = \"https://c\"\nproxy_auth_file = \"p.toml\"\n"
                ),
                "`collector.proxy_auth_file` is only used with `proxy`",
            ),
            (
                format!(
                    "{}proxy = \"http://proxy:3128\"\n",
                    MINIMAL.replace("https://git.example.com", "git://git.example.com")
                ),
                "`source.proxy` is only used with an http:// or https:// source URL",
            ),
        ];
        for (text, expected) in cases {
            let message = parse(&text).unwrap_err().to_string();
            assert!(message.contains(expected), "{message:?} vs {expected:?}");
            assert!(!message.contains("hunter2"), "{message}");
        }
    }

    #[test]
    fn a_client_certificate_needs_its_key_and_an_https_source() {
        let c = parse(&format!(
            "{MINIMAL}client_cert = \"client.pem\"\nclient_key = \"client.key\"\n"
        ))
        .unwrap();
        assert_eq!(
            c.source.client_cert,
            Some((
                PathBuf::from("/etc/shoal/client.pem"),
                PathBuf::from("/etc/shoal/client.key")
            ))
        );
        for (text, expected) in [
            (
                format!("{MINIMAL}client_cert = \"client.pem\"\n"),
                "`source.client_cert` and `source.client_key` go together",
            ),
            (
                format!(
                    "{}client_cert = \"c\"\nclient_key = \"k\"\n",
                    MINIMAL.replace("https://", "http://")
                ),
                "`source.client_cert` is only used with an https:// source URL",
            ),
        ] {
            let message = parse(&text).unwrap_err().to_string();
            assert!(message.contains(expected), "{message:?} vs {expected:?}");
        }
    }

    #[test]
    fn load_reads_the_credential_and_names_both_files_when_it_cannot() {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::tempdir().unwrap();
        let config = dir.path().join("agent.toml");
        let auth = dir.path().join("git-auth.toml");
        std::fs::write(&config, format!("{MINIMAL}auth_file = \"git-auth.toml\"\n")).unwrap();
        std::fs::write(&auth, "token = \"t0ken-value\"\n").unwrap();
        std::fs::set_permissions(&auth, std::fs::Permissions::from_mode(0o600)).unwrap();
        let c = AgentConfig::load(&config).unwrap();
        let credential = c.source.credential.as_ref().expect("loaded");
        assert_eq!(credential.file, auth);
        assert!(!format!("{c:?}").contains("t0ken-value"), "{c:?}");

        std::fs::set_permissions(&auth, std::fs::Permissions::from_mode(0o644)).unwrap();
        let message = AgentConfig::load(&config).unwrap_err().to_string();
        assert_eq!(
            message,
            format!(
                "{}: `source.auth_file`: the auth file {} has mode 0644, readable by others than \
                 its owner; chmod 600 it",
                config.display(),
                auth.display()
            )
        );
    }

    #[test]
    fn durations() {
        assert_eq!(parse_duration("500ms"), Ok(Duration::from_millis(500)));
        assert_eq!(parse_duration("2m"), Ok(Duration::from_secs(120)));
        assert!(parse_duration("s").is_err());
        assert!(parse_duration("10").is_err());
    }
}
