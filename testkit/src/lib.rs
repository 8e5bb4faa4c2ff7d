//! Test support for every crate of the workspace: the agent's unit tests, the server's tests and
//! the end-to-end harness (`shoal-e2e`) all build on it, so no fixture is written twice.
//!
//! Everything here drives real programs (`git`, `ssh-keygen`, `mount`, the workspace's own
//! collector binary) and panics with the failing command and its output, because a fixture that
//! hides a failure makes every test built on it lie. Invariant: this crate depends on no crate of
//! the workspace (the agent's unit tests use it as a dev-dependency; depending on the agent would
//! make two copies of its types), so the collector is started by the path of its binary.
//!
//! A test that needs a tool starts with `if !require_tools(&["git", "ssh-keygen"]) { return; }`,
//! which skips loudly, or fails under `SHOAL_E2E=1`; one that needs root, with `require_root`.

pub mod collector;
pub mod command;
pub mod mount;
pub mod postgres;
pub mod purity;
pub mod repo;
pub mod requirements;
pub mod signing;
pub mod tree;

pub use collector::{Collector, CollectorSpec};
pub use command::{
    describe, failure_report, git_command, isolate_git, output, output_with_stdin, run, run_bytes,
    GIT_USER_EMAIL, GIT_USER_NAME,
};
pub use mount::Mount;
pub use postgres::{PgCluster, PgTls};
pub use repo::{copy_tree, ConfigRepo, MOTD_MANIFEST};
pub use requirements::{
    e2e_required, is_root, require_root, require_tool, require_tools, HEADLESS_CHROMIUM_FLAGS,
};
pub use signing::{write_allowed_signers, SigningKey};
