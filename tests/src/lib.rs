//! Test harness: builders for signed repositories and real git servers, used by `tests/tests/*.rs`.
//!
//! Everything here drives real programs (`git`, `ssh-keygen`, `git http-backend`, `git daemon`, the
//! workspace's own binaries) and panics with the failing command and its output, because a harness
//! that hides a failure makes every test built on it lie. A test starts with
//! `if !require_tools(&["git", "ssh-keygen"]) { return; }`, which skips loudly, or fails under `SHOAL_E2E=1`.

mod binaries;
mod collector;
mod command;
mod device;
mod git_daemon;
mod guest;
mod http_server;
mod network;
mod repo;
mod requirements;
mod sandbox;
mod signing;
mod systemd;
mod vm;

pub use binaries::{agent_bin, agent_bin_with_failpoints, collector_bin};
pub use collector::{Collector, CollectorSpec};
pub use command::{
    describe, failure_report, git_command, isolate_git, output, output_with_stdin, run, run_bytes,
    GIT_USER_EMAIL, GIT_USER_NAME,
};
pub use device::{Device, Run};
pub use git_daemon::GitDaemon;
pub use guest::{GuestDevice, GUEST_DIR};
pub use http_server::{HttpsGitServer, TestCa};
pub use network::{Hub, HUB_IP};
pub use repo::{copy_tree, ConfigRepo, MOTD_MANIFEST};
pub use requirements::{e2e_required, require_root, require_tool, require_tools};
pub use sandbox::Sandbox;
pub use signing::{write_allowed_signers, SigningKey};
pub use systemd::{long_running_unit, SystemdHost};
pub use vm::{
    static_agent_bin, Accel, Guest, Line, Listing, Vm, DISK_MOUNT, HOST_FROM_GUEST, MARK,
};
