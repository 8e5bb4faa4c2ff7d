//! The agent's decisions as pure functions, a crate with no I/O dependency (no git library, no
//! HTTP, no filesystem, no clock): `render` (`shoal.toml` + a device → its desired state, reading
//! only through `RepoTree`), `plan` (desired state + previous generation + a snapshot of the disk
//! → what to write and remove), `services` (the service plan between two generations),
//! `signature` (SSHSIG commit and tag signatures, `allowed_signers` and revoked keys), `policy`
//! (the repository's `.shoal/policy.toml`: principals, root, path rules, thresholds) and `release`
//! (release tags: parsing and the acceptance rules, the clock passed in). The agent gives them trees, files
//! and snapshots and carries out what they decide; `tests/no_io.rs` keeps the crate pure.

pub mod duration;
pub mod plan;
pub mod policy;
pub mod release;
pub mod render;
pub mod services;
pub mod signature;
