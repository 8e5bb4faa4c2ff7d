//! `shoal-agent init`: writes a first agent.toml from flags, checked by the same loader the agent
//! starts with before it is renamed into place, and creates the device identity key. Refuses to
//! replace an existing config unless forced; never touches anything but the config file, its
//! directory and the state directory.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use serde::Serialize;

use crate::config::{AgentConfig, ConfigError};
use crate::paths::{self, PathError};
use crate::report::{Identity, ReportError};
use crate::state::{StateDir, StateError};
use crate::verify::{TrustPolicy, VerifyError};

#[derive(Debug, thiserror::Error)]
pub enum InitError {
    #[error("{} already exists; pass --force to replace it (or edit it, or pick another --config PATH)", path.display())]
    Exists { path: PathBuf },
    #[error("pass exactly one of --ref (a branch, e.g. refs/heads/production) or --environment (signed releases, e.g. production)")]
    Tracking,
    #[error("--enroll-token-file needs --collector URL (the token is for that collector)")]
    TokenWithoutCollector,
    #[error("--collector-ca needs --collector URL")]
    CaWithoutCollector,
    #[error("cannot find the current directory to resolve {}: {source}", path.display())]
    Relative {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("the trust file given by --allowed-signers cannot be used: {0}")]
    Trust(#[source] Box<VerifyError>),
    #[error("the enrollment token file {} cannot be read: {source}; create it with the token the collector was started with (--enroll-token-file)", path.display())]
    Token {
        path: PathBuf,
        #[source]
        source: PathError,
    },
    #[error("the enrollment token file {} is empty; put the collector's enrollment token in it", path.display())]
    EmptyToken { path: PathBuf },
    #[error("the config init would write is not valid, so nothing was written: {0}")]
    Invalid(#[source] ConfigError),
    #[error("cannot encode the config: {0}")]
    Encode(String),
    #[error("writing the config: {0}")]
    Write(#[source] PathError),
    #[error("the state directory: {0}")]
    State(#[source] StateError),
    #[error("the device identity key: {0}")]
    Identity(#[source] ReportError),
}

impl InitError {
    /// Bad flags or bad files named by flags (exit 2), against a failure to write (exit 1).
    pub fn is_usage(&self) -> bool {
        !matches!(
            self,
            InitError::Write(_) | InitError::State(_) | InitError::Identity(_)
        )
    }
}

/// What the operator asked `init` for (paths as given on the command line).
#[derive(Debug, Default)]
pub struct InitRequest {
    pub config: PathBuf,
    pub url: String,
    pub reference: Option<String>,
    pub environment: Option<String>,
    pub allowed_signers: PathBuf,
    pub verify: Option<String>,
    pub device_id: Option<String>,
    pub labels: Vec<(String, String)>,
    pub state_dir: Option<PathBuf>,
    pub root: Option<PathBuf>,
    pub interval: Option<String>,
    pub ca_file: Option<PathBuf>,
    pub collector: Option<String>,
    pub collector_ca: Option<PathBuf>,
    pub enroll_token_file: Option<PathBuf>,
    pub force: bool,
}

/// What `init` did.
#[derive(Debug)]
pub struct Initialized {
    pub config: AgentConfig,
    pub key_id: String,
    pub key_created: bool,
    pub replaced: bool,
}

// The file as written: only what the operator gave, so the defaults stay the agent's (and a
// reader sees which values were chosen).
#[derive(Serialize)]
struct FileConfig {
    #[serde(skip_serializing_if = "Option::is_none")]
    device_id: Option<String>,
    #[serde(skip_serializing_if = "BTreeMap::is_empty")]
    labels: BTreeMap<String, String>,
    state_dir: PathBuf,
    #[serde(skip_serializing_if = "Option::is_none")]
    root: Option<PathBuf>,
    source: FileSource,
    trust: FileTrust,
    #[serde(skip_serializing_if = "Option::is_none")]
    collector: Option<FileCollector>,
}

#[derive(Serialize)]
struct FileSource {
    url: String,
    #[serde(rename = "ref", skip_serializing_if = "Option::is_none")]
    reference: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    environment: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    interval: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    ca_file: Option<PathBuf>,
}

#[derive(Serialize)]
struct FileTrust {
    allowed_signers: PathBuf,
    verify: String,
}

#[derive(Serialize)]
struct FileCollector {
    url: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    ca_file: Option<PathBuf>,
    #[serde(skip_serializing_if = "Option::is_none")]
    enroll_token_file: Option<PathBuf>,
}

/// Writes the config and creates the identity key. Order: every check first (flags, the trust
/// file, the token file, the config text parsed back from the written temp file), then the
/// rename into place, then the key: a failure before the rename leaves the old config (or none)
/// untouched.
#[tracing::instrument(skip_all, fields(config = %request.config.display()))]
pub fn init(request: &InitRequest) -> Result<Initialized, InitError> {
    let path = absolute(&request.config)?;
    let exists = std::fs::symlink_metadata(&path).is_ok();
    if exists && !request.force {
        return Err(InitError::Exists { path });
    }
    if request.reference.is_some() == request.environment.is_some() {
        return Err(InitError::Tracking);
    }
    if request.collector.is_none() {
        if request.enroll_token_file.is_some() {
            return Err(InitError::TokenWithoutCollector);
        }
        if request.collector_ca.is_some() {
            return Err(InitError::CaWithoutCollector);
        }
    }
    let absolute_opt = |p: &Option<PathBuf>| p.as_deref().map(absolute).transpose();
    let file = FileConfig {
        device_id: request.device_id.clone(),
        labels: request.labels.iter().cloned().collect(),
        state_dir: match &request.state_dir {
            Some(dir) => absolute(dir)?,
            None => PathBuf::from("/var/lib/shoal"),
        },
        root: absolute_opt(&request.root)?,
        source: FileSource {
            url: local_url(&request.url)?,
            reference: request.reference.clone(),
            environment: request.environment.clone(),
            interval: request.interval.clone(),
            ca_file: absolute_opt(&request.ca_file)?,
        },
        trust: FileTrust {
            allowed_signers: absolute(&request.allowed_signers)?,
            verify: request.verify.clone().unwrap_or_else(|| "range".to_owned()),
        },
        collector: match &request.collector {
            Some(url) => Some(FileCollector {
                url: url.clone(),
                ca_file: absolute_opt(&request.collector_ca)?,
                enroll_token_file: absolute_opt(&request.enroll_token_file)?,
            }),
            None => None,
        },
    };
    let text = format!(
        "# Written by `shoal-agent init`; every key is described in README.md (\"Agent configuration\").\n{}",
        toml::to_string(&file).map_err(|e| InitError::Encode(e.to_string()))?
    );
    // The text must parse before anything is written, so a bad flag leaves no file behind.
    AgentConfig::parse(&text, &path).map_err(InitError::Invalid)?;
    TrustPolicy::load(&crate::config::TrustConfig {
        allowed_signers: file.trust.allowed_signers.clone(),
        verify: crate::config::VerifyMode::Range,
        revoked_keys: None,
        root_threshold: 1,
    })
    .map_err(|e| InitError::Trust(Box::new(e)))?;
    if let Some(token) = file
        .collector
        .as_ref()
        .and_then(|c| c.enroll_token_file.as_ref())
    {
        let content = paths::read_to_string(token).map_err(|source| InitError::Token {
            path: token.clone(),
            source,
        })?;
        if content.trim().is_empty() {
            return Err(InitError::EmptyToken {
                path: token.clone(),
            });
        }
    }

    let dir = path.parent().unwrap_or(Path::new("/"));
    paths::create_dir_all(dir).map_err(InitError::Write)?;
    let config = write_checked(&path, &text)?;

    let state = StateDir::open(&config.state_dir).map_err(InitError::State)?;
    restrict_state_dir(&config.state_dir)?;
    let (identity, key_created) = Identity::load_or_create(&state).map_err(InitError::Identity)?;
    Ok(Initialized {
        key_id: identity.key_id().to_string(),
        config,
        key_created,
        replaced: exists,
    })
}

/// Writes `text` to a temp file beside `path`, reads it back through [`AgentConfig::load`]'s
/// parser (errors naming `path`, the file the operator will edit), and only then renames it into
/// place and fsyncs the directory.
fn write_checked(path: &Path, text: &str) -> Result<AgentConfig, InitError> {
    use std::io::Write;
    let dir = path.parent().unwrap_or(Path::new("/"));
    let name = path
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    let tmp = dir.join(format!(".{name}.init-tmp.{}", std::process::id()));
    let result = (|| {
        let mut out = std::fs::File::create(&tmp)
            .map_err(|e| InitError::Write(PathError::new("create", &tmp, e)))?;
        out.write_all(text.as_bytes())
            .and_then(|()| out.sync_all())
            .map_err(|e| InitError::Write(PathError::new("write", &tmp, e)))?;
        let written = paths::read_to_string(&tmp).map_err(InitError::Write)?;
        let config = AgentConfig::parse(&written, path).map_err(InitError::Invalid)?;
        std::fs::rename(&tmp, path)
            .map_err(|e| InitError::Write(PathError::new("rename into place", path, e)))?;
        paths::sync_dir(dir).map_err(InitError::Write)?;
        Ok(config)
    })();
    if result.is_err() {
        let _ = std::fs::remove_file(&tmp);
    }
    result
}

/// The state directory holds the identity key and the device's history: owner only, as the
/// unit's `StateDirectoryMode=0700` makes it.
fn restrict_state_dir(dir: &Path) -> Result<(), InitError> {
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o700))
        .map_err(|e| InitError::State(StateError::Io(PathError::new("chmod 0700", dir, e))))
}

/// `path` made absolute against the current directory: the config resolves relative paths
/// against its own directory, which is not where the operator ran `init`.
fn absolute(path: &Path) -> Result<PathBuf, InitError> {
    std::path::absolute(path).map_err(|source| InitError::Relative {
        path: path.to_owned(),
        source,
    })
}

/// A local repository path given relative to the current directory is written absolute; URLs are
/// kept as given.
fn local_url(url: &str) -> Result<String, InitError> {
    let is_relative_path = !url.contains("://") && !url.starts_with('/') && !url.contains('@');
    if is_relative_path && !url.is_empty() {
        Ok(absolute(Path::new(url))?.to_string_lossy().into_owned())
    } else {
        Ok(url.to_owned())
    }
}
