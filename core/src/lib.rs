//! The agent's decisions as pure functions, a crate with no I/O dependency (no git library, no
//! HTTP, no filesystem, no clock): `render` (`shoal.toml` + a device → its desired state, reading
//! only through `RepoTree`), `plan` (desired state + previous generation + a snapshot of the disk
//! → what to write and remove), `services` (the service plan between two generations) and
//! `signature` (SSHSIG commit signatures and `allowed_signers`). The agent gives them trees, files
//! and snapshots and carries out what they decide; `tests/no_io.rs` keeps the crate pure.

pub mod duration;
pub mod plan;
pub mod render;
pub mod services;
pub mod signature;
