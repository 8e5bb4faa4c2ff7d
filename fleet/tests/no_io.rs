//! The fleet crate does no I/O, by construction: its dependencies are only the pure ones allowed
//! here, and no source file names a std module or type that reaches outside the process.
//! (ARCHITECTURE.md, Invariants; STYLE.md: "a crate without fs/network dependencies cannot do I/O".)

use std::path::Path;

/// What `[dependencies]` may list. A new entry needs a reason a reviewer accepts: no store,
/// HTTP, async runtime, file system or clock.
const ALLOWED: [&str; 3] = ["shoal-proto", "serde", "thiserror"];

#[test]
fn the_fleet_crate_does_no_io() {
    // The collector's I/O crates would not compile here anyway (not dependencies); named so a
    // reviewer sees the intent.
    shoal_testkit::purity::check_crate(
        Path::new(env!("CARGO_MANIFEST_DIR")),
        &ALLOWED,
        &["sled", "tokio", "axum"],
    );
}
