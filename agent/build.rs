//! Records when the agent was built (`SHOAL_BUILD_TIME`, unix seconds) for `doctor`'s clock check:
//! a device clock earlier than the build is certainly wrong. `SOURCE_DATE_EPOCH` (reproducible
//! builds, Debian packaging) wins over the build machine's clock.

use std::time::{SystemTime, UNIX_EPOCH};

fn main() {
    // Computed once per clean build: a lower bound for the clock needs no refresh.
    println!("cargo:rerun-if-changed=build.rs");
    println!("cargo:rerun-if-env-changed=SOURCE_DATE_EPOCH");
    let time = std::env::var("SOURCE_DATE_EPOCH")
        .ok()
        .and_then(|s| s.trim().parse::<u64>().ok())
        .unwrap_or_else(|| {
            SystemTime::now()
                .duration_since(UNIX_EPOCH)
                .map_or(0, |d| d.as_secs())
        });
    println!("cargo:rustc-env=SHOAL_BUILD_TIME={time}");
}
