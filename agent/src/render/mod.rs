//! Render on the device: which trees may become a [`DesiredState`]. The rendering itself is
//! `shoal_core::render` (pure, re-exported here); this module gives it trees. A sync renders only
//! the tree of a commit `verify` accepted ([`render`] takes a [`VerifiedTree`]); `shoal-agent
//! render` previews a checkout or any commit ([`preview`]), and a [`Preview`] prints but cannot be
//! planned or applied.

mod tree;

#[cfg(test)]
mod tests;

pub use shoal_core::render::{
    DesiredFile, DesiredService, DesiredState, DeviceIdentity, HealthCheck, RenderError, RepoTree,
    ServiceState, TemplateError, TreeError, DEFAULT_HEALTH_TIMEOUT, DEFAULT_MODE, DEFAULT_OWNER,
    MANIFEST, SUPPORTED_VERSION,
};
pub use shoal_core::render::{Rollout, WaveAssignment};
pub use tree::{CommitPreview, PreviewSource, VerifiedTree};

/// The desired state of the device `identity` according to the `shoal.toml` of a verified
/// commit: the only way to a [`DesiredState`] from a repository. A directory or an unchecked
/// commit is a [`preview`]:
///
/// ```compile_fail
/// fn render_a_checkout(path: &std::path::Path, device: &shoal_agent::render::DeviceIdentity) {
///     let source = shoal_agent::render::PreviewSource::Dir(path);
///     let _ = shoal_agent::render::render(&source, device);
/// }
/// ```
///
/// Nor does the pure renderer take a preview source: no tree over an unchecked commit or a
/// directory is a `RepoTree` outside this module.
///
/// ```compile_fail
/// fn render_a_checkout(path: &std::path::Path, device: &shoal_agent::render::DeviceIdentity) {
///     let source = shoal_agent::render::PreviewSource::Dir(path);
///     let _ = shoal_core::render::render(&source, device);
/// }
/// ```
///
/// (What does compile: a verified tree into either, a preview source into `preview`.)
///
/// ```
/// use shoal_agent::render::{DeviceIdentity, PreviewSource, VerifiedTree};
/// fn render_verified(tree: &VerifiedTree<'_>, device: &DeviceIdentity) {
///     let _ = shoal_core::render::render(tree, device);
///     let _ = shoal_agent::render::render(tree, device);
/// }
/// fn preview_a_checkout(path: &std::path::Path, device: &DeviceIdentity) {
///     let _ = shoal_agent::render::preview(&PreviewSource::Dir(path), device);
/// }
/// ```
pub fn render(
    tree: &VerifiedTree<'_>,
    identity: &DeviceIdentity,
) -> Result<DesiredState, RenderError> {
    shoal_core::render::render(tree, identity)
}

/// What a checkout or any commit would render to, for people to read (`shoal-agent render`).
pub fn preview(
    source: &PreviewSource<'_>,
    identity: &DeviceIdentity,
) -> Result<Preview, RenderError> {
    let rendered = match source {
        PreviewSource::Dir(path) => {
            shoal_core::render::render(&tree::DirTree::new(*path), identity)
        }
        PreviewSource::Commit(commit) => shoal_core::render::render(&commit.0, identity),
    };
    rendered.map(Preview)
}

/// A rendering of a tree that was not necessarily verified: text and JSON, nothing more.
///
/// ```compile_fail
/// fn plan_a_preview(
///     preview: shoal_agent::render::Preview,
///     disk: &shoal_agent::plan::DiskSnapshot,
/// ) {
///     let _ = shoal_agent::plan::plan(&preview, &Default::default(), disk);
/// }
/// ```
pub struct Preview(DesiredState);

impl Preview {
    /// The human summary `DesiredState::summary` prints.
    pub fn summary(&self) -> String {
        self.0.summary()
    }
    /// The JSON form `DesiredState::to_json` gives.
    pub fn to_json(&self) -> serde_json::Value {
        self.0.to_json()
    }
    /// The device's wave of the tree's `[rollout]` for `commit`; `None` without a rollout.
    pub fn wave(&self, identity: &DeviceIdentity, commit: &str) -> Option<WaveAssignment> {
        let rollout = self.0.rollout.as_ref()?;
        Some(rollout.wave_for(identity, commit))
    }
}
