//! The core crate does no I/O, by construction: its dependencies are only the pure ones allowed
//! here (no git library, HTTP, runtime, filesystem or clock), and no source names a std module or
//! type that reaches outside the process. (ARCHITECTURE.md, `core/`.)

use std::path::Path;

/// What `[dependencies]` may list. A new entry needs a reason a reviewer accepts.
/// `sha1dc`: SHA-1 with collision detection (the one gix builds), for the SHA1 fingerprints a
/// KRL may revoke.
const ALLOWED: [&str; 6] = [
    "thiserror",
    "serde",
    "serde_json",
    "toml",
    "ssh-key",
    "sha1dc",
];

#[test]
fn the_core_crate_does_no_io() {
    shoal_testkit::purity::check_crate(
        Path::new(env!("CARGO_MANIFEST_DIR")),
        &ALLOWED,
        &["gix", "reqwest", "rustix", "libc", "tokio"],
    );
}
