//! Finds the workspace's real binaries for the tests, building them first so a test never runs a stale one.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::OnceLock;

use crate::command::run;

/// The `shoal-agent` binary of this checkout (or `$SHOAL_AGENT_BIN` when set, e.g. a cross build).
pub fn agent_bin() -> PathBuf {
    static BUILT: OnceLock<PathBuf> = OnceLock::new();
    BUILT
        .get_or_init(|| workspace_binary("shoal-agent", "shoal-agent", "SHOAL_AGENT_BIN"))
        .clone()
}

/// The `shoal-collector` binary of this checkout (or `$SHOAL_COLLECTOR_BIN` when set).
pub fn collector_bin() -> PathBuf {
    static BUILT: OnceLock<PathBuf> = OnceLock::new();
    BUILT
        .get_or_init(|| {
            workspace_binary("shoal-collector", "shoal-collector", "SHOAL_COLLECTOR_BIN")
        })
        .clone()
}

/// `shoal-agent` built with the `failpoints` feature (`SHOAL_FAILPOINT=name:N` kills it at that
/// step), for crash tests of a whole sync. It is built in a target directory of its own beside
/// the tests' (`<target>/failpoints`): building it in the shared one would swap the binary every
/// other test runs. The first call compiles the agent's dependencies once more.
pub fn agent_bin_with_failpoints() -> PathBuf {
    static BUILT: OnceLock<PathBuf> = OnceLock::new();
    BUILT
        .get_or_init(|| {
            let target = profile_dir()
                .parent()
                .expect("the profile directory is inside the target directory")
                .join("failpoints");
            let mut build =
                Command::new(std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into()));
            build
                .args(["build", "--quiet", "--manifest-path"])
                .arg(workspace_root().join("Cargo.toml"))
                .args([
                    "-p",
                    "shoal-agent",
                    "--bin",
                    "shoal-agent",
                    "--features",
                    "failpoints",
                ])
                .arg("--target-dir")
                .arg(&target);
            run(&mut build);
            let binary = target.join("debug/shoal-agent");
            assert!(binary.is_file(), "{} was not built", binary.display());
            binary
        })
        .clone()
}

/// `<target>/<profile>/<bin>`, next to this test's own `deps/` directory, after one
/// `cargo build` of `package` in the same profile. Cargo does not build other packages' binaries
/// for our tests, and a binary merely found on disk may predate the source under test; a no-op
/// build costs well under a second.
fn workspace_binary(package: &str, bin: &str, override_var: &str) -> PathBuf {
    if let Some(path) = std::env::var_os(override_var) {
        return PathBuf::from(path);
    }
    let profile_dir = profile_dir();
    let profile = profile_dir
        .file_name()
        .and_then(|name| name.to_str())
        .expect("the profile directory has a UTF-8 name");
    let mut build = Command::new(std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into()));
    build
        .arg("build")
        .arg("--quiet")
        .arg("--manifest-path")
        .arg(workspace_root().join("Cargo.toml"))
        .args(["-p", package, "--bin", bin]);
    match profile {
        "debug" => {}
        "release" => {
            build.arg("--release");
        }
        custom => {
            build.args(["--profile", custom]);
        }
    }
    run(&mut build);
    let binary = profile_dir.join(bin);
    assert!(
        binary.is_file(),
        "`cargo build -p {package}` succeeded but {} does not exist; set {override_var} to the binary",
        binary.display()
    );
    binary
}

/// `…/target/debug` for a test running as `…/target/debug/deps/name-hash`.
fn profile_dir() -> PathBuf {
    let exe = std::env::current_exe().expect("the test knows its own executable");
    let deps = exe.parent().expect("the test executable is in a directory");
    let dir = if deps.file_name().is_some_and(|name| name == "deps") {
        deps.parent()
            .expect("deps/ is inside the profile directory")
    } else {
        deps
    };
    dir.to_path_buf()
}

fn workspace_root() -> &'static Path {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("the e2e crate lives one level below the workspace root")
}
