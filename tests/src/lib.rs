//! Test harness: real git servers, devices, systemd, VMs and networks, used by `tests/tests/*.rs`.
//!
//! It builds on `shoal-testkit` (signing keys, signed repositories, root and mount helpers, the
//! collector launcher: what the agent's and the server's tests use too) and re-exports it, so an
//! end-to-end test imports everything from `shoal_e2e`. Everything here drives real programs
//! (`git http-backend`, `git daemon`, systemd, qemu, the workspace's own binaries) and panics with
//! the failing command and its output, because a harness that hides a failure makes every test
//! built on it lie. A test starts with `if !require_tools(&["git", "ssh-keygen"]) { return; }`,
//! which skips loudly, or fails under `SHOAL_E2E=1`.

// The kit's modules, under the paths this crate's own modules use (`crate::command::run`).
use shoal_testkit::{command, repo, requirements, signing};

mod binaries;
mod bulk;
mod collector;
mod device;
mod forward_proxy;
mod git_daemon;
mod guest;
mod http_server;
mod measure;
mod network;
mod sandbox;
mod sshd;
mod systemd;
mod transcript;
mod vm;

pub use binaries::{agent_bin, agent_bin_with_failpoints, collector_bin};
pub use bulk::{disk_usage, Incompressible};
pub use collector::CollectorSpec;
pub use device::{notify_socket, run_daemon, Device, Run};
pub use forward_proxy::ForwardProxy;
pub use git_daemon::GitDaemon;
pub use guest::{app_manifest, GuestDevice, GUEST_DIR};
pub use http_server::{ClientCert, HttpsGitServer, TestCa};
pub use measure::{run_measured, Cost};
pub use network::{Hub, HUB_IP};
pub use sandbox::{
    everyone_after, gateway_config, unix_now, Sandbox, ENROLL_TOKEN, GATEWAY_MANIFEST,
};
pub use shoal_testkit::{
    copy_tree, describe, e2e_required, failure_report, git_command, is_root, isolate_git, output,
    output_with_stdin, require_root, require_tool, require_tools, run, run_bytes,
    write_allowed_signers, Collector, ConfigRepo, Mount, SigningKey, GIT_USER_EMAIL, GIT_USER_NAME,
    MOTD_MANIFEST,
};
pub use sshd::SshServer;
pub use systemd::{long_running_unit, SystemdHost};
pub use transcript::Transcript;
pub use vm::{
    static_agent_bin, Accel, Guest, Line, Listing, Vm, DISK_MOUNT, HOST_FROM_GUEST, MARK,
};
