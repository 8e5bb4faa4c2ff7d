//! Render: decides what one device should have — its files and services — from a configuration
//! tree and the device's identity. A pure function: it reads blobs only through [`RepoTree`] and
//! never touches the device.
//!
//! Every profile is validated, matched or not (paths, modes, units, sources, template syntax),
//! so a commit is good or bad for the whole fleet alike; only what depends on the device (which
//! profiles match, label values in templates, conflicts between matched profiles) differs.

mod desired;
mod manifest;
mod rollout;
pub(crate) mod rules;
mod template;
mod tree;

#[cfg(test)]
mod rollout_tests;
#[cfg(test)]
mod tests;

use std::collections::BTreeMap;
use std::fmt;
use std::path::{Path, PathBuf};

pub use desired::{
    DesiredFile, DesiredService, DesiredState, DeviceIdentity, HealthCheck, ServiceState,
};
pub use manifest::{
    Selector, DEFAULT_HEALTH_TIMEOUT, DEFAULT_MODE, DEFAULT_OWNER, SUPPORTED_VERSION,
};
pub use rollout::{bucket, Rollout, Wave, WaveAssignment, WaveAt, WaveSelect, MAX_AFTER};
pub use rules::check_repo_path;
pub use template::TemplateError;
pub use tree::{refuse_path, RepoTree, TreeError};

use desired::format_mode;
use manifest::{FileDecl, Manifest, Profile, ServiceDecl};
use template::Template;

/// The manifest's path at the repository root.
pub const MANIFEST: &str = "shoal.toml";

#[derive(Debug, thiserror::Error)]
pub enum RenderError {
    #[error(
        "the repository has no shoal.toml at its root; add one that starts with `version = 1`"
    )]
    NoManifest,
    #[error("cannot read shoal.toml from the repository: {0}")]
    ManifestUnreadable(TreeError),
    /// Not TOML at all; `message` is toml's, with line, column and the offending line.
    #[error("shoal.toml: {message}")]
    Syntax { message: String },
    #[error("shoal.toml: `version` is missing; add `version = 1` at the top")]
    MissingVersion,
    #[error("shoal.toml: version {found} is not supported; this agent supports version {SUPPORTED_VERSION}")]
    UnsupportedVersion { found: String },
    /// Valid TOML of the wrong shape: unknown field, missing field, wrong type.
    #[error("{}", structure_message(at.as_ref(), *position, message))]
    Structure {
        at: Option<Location>,
        /// 1-based line and column.
        position: Option<(usize, usize)>,
        message: String,
    },
    /// A `[rollout]` that cannot assign every device one wave, or a wave that breaks a rule.
    #[error("shoal.toml: [rollout]{}: {message}", at.as_ref().map(|w| format!(" {w}")).unwrap_or_default())]
    Rollout {
        at: Option<rollout::WaveAt>,
        message: String,
    },
    /// A value that breaks a rule: `message` reads after the field's name.
    #[error("shoal.toml: {at}: {field} {message}")]
    Invalid {
        at: Location,
        field: &'static str,
        message: String,
    },
    /// A `source` (or drop-in) that cannot be used: missing, a symlink, a directory.
    #[error("shoal.toml: {at}: {field} {path:?}: {error}")]
    Source {
        at: Location,
        field: &'static str,
        path: String,
        #[source]
        error: TreeError,
    },
    #[error("shoal.toml: {at}: template {path:?}, {error}")]
    Template {
        at: Location,
        path: String,
        #[source]
        error: Box<TemplateError>,
    },
    #[error("shoal.toml: profiles {first:?} and {second:?} both declare {}, with different {difference}; keep one declaration, or make them identical", path.display())]
    FileConflict {
        path: PathBuf,
        first: String,
        second: String,
        difference: String,
    },
    #[error("shoal.toml: profiles {first:?} and {second:?} both declare unit {unit}, with different {difference}; keep one declaration, or make them identical")]
    ServiceConflict {
        unit: String,
        first: String,
        second: String,
        difference: String,
    },
    #[error("shoal.toml: profile {profile:?} declares {}, but profile {parent_profile:?} declares {} as a file; a path cannot be both a file and a directory", path.display(), parent.display())]
    FileUnderFile {
        path: PathBuf,
        profile: String,
        parent: PathBuf,
        parent_profile: String,
    },
}

fn structure_message(
    at: Option<&Location>,
    position: Option<(usize, usize)>,
    message: &str,
) -> String {
    let mut out = String::from(MANIFEST);
    if let Some((line, column)) = position {
        out.push_str(&format!(":{line}:{column}"));
    }
    if let Some(at) = at {
        out.push_str(&format!(": {at}"));
    }
    out.push_str(&format!(": {message}"));
    out
}

/// Where in `shoal.toml` a problem is: a profile, and maybe one of its entries.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Location {
    /// 1-based position of the profile in the file.
    pub profile: usize,
    /// `None` when the name is unknown or is itself the problem.
    pub profile_name: Option<String>,
    pub entry: Option<Entry>,
}

/// A `[[profile.file]]` or `[[profile.service]]` entry, 1-based within its profile.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Entry {
    File(usize),
    Service(usize),
}

impl fmt::Display for Location {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.profile_name {
            Some(name) => write!(f, "profile {name:?}")?,
            None => write!(f, "profile #{}", self.profile)?,
        }
        match self.entry {
            Some(Entry::File(n)) => write!(f, ", file #{n}"),
            Some(Entry::Service(n)) => write!(f, ", service #{n}"),
            None => Ok(()),
        }
    }
}

/// The desired state of the device `identity` according to the tree's `shoal.toml`. A pure
/// function of the tree: which trees a device may render is the agent's decision (it renders
/// only a verified commit's tree).
pub fn render(tree: &dyn RepoTree, identity: &DeviceIdentity) -> Result<DesiredState, RenderError> {
    render_tree(tree, identity)
}

fn render_tree(
    tree: &dyn RepoTree,
    identity: &DeviceIdentity,
) -> Result<DesiredState, RenderError> {
    let bytes = match tree.read_file(MANIFEST) {
        Ok(bytes) => bytes,
        Err(TreeError::NotFound) => return Err(RenderError::NoManifest),
        Err(e) => return Err(RenderError::ManifestUnreadable(e)),
    };
    let text = String::from_utf8(bytes).map_err(|e| RenderError::Syntax {
        message: format!(
            "not UTF-8 text (invalid byte at offset {}); TOML files must be UTF-8",
            e.utf8_error().valid_up_to()
        ),
    })?;
    let manifest = Manifest::parse(&text)?;
    let state_dir = rules::lexically_normal(&identity.state_dir);

    let mut desired = Merge::default();
    for profile in &manifest.profiles {
        let matched = profile.selector.matches(identity);
        for (i, file) in profile.files.iter().enumerate() {
            let at = profile.location(Some(Entry::File(i + 1)));
            check_outside_state_dir(&file.path, &state_dir, &at)?;
            let source = read_source(tree, &at, "source", &file.source)?;
            // Template syntax is checked for every profile; expanding it needs a matching device.
            let template = if file.template {
                Some(Template::parse(&source).map_err(|e| template_error(&at, file, e))?)
            } else {
                None
            };
            if !matched {
                continue;
            }
            let content = match template {
                Some(template) => template
                    .expand(&identity.device_id, &identity.labels)
                    .map_err(|e| template_error(&at, file, e))?,
                None => source,
            };
            desired.add_file(profile, file, content)?;
        }
        for (i, service) in profile.services.iter().enumerate() {
            let at = profile.location(Some(Entry::Service(i + 1)));
            let content = read_source(tree, &at, "source", &service.source)?;
            let mut dropins = BTreeMap::new();
            for dropin in &service.dropins {
                let bytes = read_source(tree, &at, "dropins", &dropin.source)?;
                dropins.insert(dropin.name.clone(), bytes);
            }
            if matched {
                desired.add_service(profile, at, service, content, dropins)?;
            }
        }
    }
    let mut desired = desired.finish()?;
    desired.rollout = manifest.rollout;
    Ok(desired)
}

fn template_error(at: &Location, file: &FileDecl, error: TemplateError) -> RenderError {
    RenderError::Template {
        at: at.clone(),
        path: file.source.clone(),
        error: Box::new(error),
    }
}

fn read_source(
    tree: &dyn RepoTree,
    at: &Location,
    field: &'static str,
    path: &str,
) -> Result<Vec<u8>, RenderError> {
    tree.read_file(path).map_err(|error| RenderError::Source {
        at: at.clone(),
        field,
        path: path.to_owned(),
        error,
    })
}

/// The agent's own state (generations, keys, the watermark) is never configuration: a repo
/// that could write there could forge the device's history.
fn check_outside_state_dir(
    path: &Path,
    state_dir: &Path,
    at: &Location,
) -> Result<(), RenderError> {
    let message = if path.starts_with(state_dir) {
        format!(
            "{:?} is inside the agent's state directory {}; Shoal does not manage its own state",
            path.display().to_string(),
            state_dir.display()
        )
    } else if state_dir.starts_with(path) {
        format!(
            "{:?} would replace a directory that holds the agent's state directory {}",
            path.display().to_string(),
            state_dir.display()
        )
    } else {
        return Ok(());
    };
    Err(RenderError::Invalid {
        at: at.clone(),
        field: "path",
        message,
    })
}

/// The matched profiles' declarations, merged in file order.
#[derive(Default)]
struct Merge {
    state: DesiredState,
    /// Where each service was first declared, for errors found after merging.
    service_locations: BTreeMap<String, Location>,
}

impl Merge {
    fn add_file(
        &mut self,
        profile: &Profile,
        decl: &FileDecl,
        content: Vec<u8>,
    ) -> Result<(), RenderError> {
        let file = DesiredFile {
            content,
            mode: decl.mode,
            owner: decl.owner.clone(),
            group: decl.group.clone(),
            profile: profile.name.clone(),
            source: decl.source.clone(),
        };
        let Some(first) = self.state.files.get(&decl.path) else {
            self.state.files.insert(decl.path.clone(), file);
            return Ok(());
        };
        match file_difference(first, &file) {
            // Identical: the first declaration stands (and keeps its profile name).
            None => Ok(()),
            Some(difference) => Err(RenderError::FileConflict {
                path: decl.path.clone(),
                first: first.profile.clone(),
                second: file.profile,
                difference,
            }),
        }
    }

    fn add_service(
        &mut self,
        profile: &Profile,
        at: Location,
        decl: &ServiceDecl,
        content: Vec<u8>,
        dropins: BTreeMap<String, Vec<u8>>,
    ) -> Result<(), RenderError> {
        let service = DesiredService {
            unit: decl.unit.clone(),
            content,
            dropins,
            enabled: decl.enabled,
            state: decl.state,
            restart_on: decl.restart_on.clone(),
            health: decl.health.clone(),
            profile: profile.name.clone(),
        };
        let Some(first) = self.state.services.get(&decl.unit) else {
            self.state.services.insert(decl.unit.clone(), service);
            self.service_locations.insert(decl.unit.clone(), at);
            return Ok(());
        };
        match service_difference(first, &service) {
            None => Ok(()),
            Some(difference) => Err(RenderError::ServiceConflict {
                unit: decl.unit.clone(),
                first: first.profile.clone(),
                second: service.profile,
                difference,
            }),
        }
    }

    /// Checks that need the whole merged state.
    fn finish(self) -> Result<DesiredState, RenderError> {
        let files = &self.state.files;
        for (path, file) in files {
            let parent = path
                .ancestors()
                .skip(1)
                .find_map(|a| files.get_key_value(a));
            if let Some((parent, parent_file)) = parent {
                return Err(RenderError::FileUnderFile {
                    path: path.clone(),
                    profile: file.profile.clone(),
                    parent: parent.clone(),
                    parent_profile: parent_file.profile.clone(),
                });
            }
        }
        // A `restart_on` naming a file this device does not get would never fire: most likely
        // a typo, which is better refused now than discovered after a change did not apply.
        for (unit, service) in &self.state.services {
            if let Some(missing) = service.restart_on.iter().find(|p| !files.contains_key(*p)) {
                // `add_service` records a location for every service it inserts.
                let at = self.service_locations[unit].clone();
                return Err(RenderError::Invalid {
                    at,
                    field: "restart_on",
                    message: format!(
                        "{:?} is not a file declared for this device; declare it in a profile that matches, or remove it from restart_on",
                        missing.display().to_string()
                    ),
                });
            }
        }
        Ok(self.state)
    }
}

fn file_difference(a: &DesiredFile, b: &DesiredFile) -> Option<String> {
    if a.content != b.content {
        return Some("content".into());
    }
    if a.mode != b.mode {
        return Some(format!(
            "mode ({} vs {})",
            format_mode(a.mode),
            format_mode(b.mode)
        ));
    }
    if a.owner != b.owner {
        return Some(format!("owner ({} vs {})", a.owner, b.owner));
    }
    if a.group != b.group {
        return Some(format!("group ({} vs {})", a.group, b.group));
    }
    None
}

fn service_difference(a: &DesiredService, b: &DesiredService) -> Option<String> {
    if a.content != b.content {
        return Some("unit file content".into());
    }
    if a.dropins != b.dropins {
        return Some("drop-ins".into());
    }
    if a.enabled != b.enabled {
        return Some(format!("enabled ({} vs {})", a.enabled, b.enabled));
    }
    if a.state != b.state {
        return Some(format!(
            "state ({} vs {})",
            a.state.as_str(),
            b.state.as_str()
        ));
    }
    if a.restart_on != b.restart_on {
        return Some("restart_on".into());
    }
    if a.health != b.health {
        return Some("health check".into());
    }
    None
}
