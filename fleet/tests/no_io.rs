//! The fleet crate does no I/O, by construction: its dependencies are only the pure ones allowed
//! here, and no source file names a std module or type that reaches outside the process.
//! (ARCHITECTURE.md, Invariants; STYLE.md: "a crate without fs/network dependencies cannot do I/O".)

use std::path::{Path, PathBuf};

/// What `[dependencies]` may list. A new entry needs a reason a reviewer accepts: no store,
/// HTTP, async runtime, file system or clock.
const ALLOWED: [&str; 3] = ["shoal-proto", "serde", "thiserror"];

/// What the sources must not mention: std's ways out of the process, the clock, and the
/// collector's I/O crates (which, not being dependencies, would not compile anyway).
const FORBIDDEN: [&str; 11] = [
    "std::fs",
    "std::net",
    "std::io",
    "std::process",
    "std::env",
    "std::thread",
    "SystemTime",
    "Instant",
    "sled",
    "tokio",
    "axum",
];

fn root() -> &'static Path {
    Path::new(env!("CARGO_MANIFEST_DIR"))
}

#[test]
fn dependencies_are_only_the_pure_ones() {
    let manifest = std::fs::read_to_string(root().join("Cargo.toml")).unwrap();
    let deps: Vec<&str> = manifest
        .lines()
        .skip_while(|l| l.trim() != "[dependencies]")
        .skip(1)
        .take_while(|l| !l.starts_with('['))
        .map(str::trim)
        .filter(|l| !l.is_empty() && !l.starts_with('#'))
        .map(|l| l.split(['.', '=', ' ']).next().unwrap_or(l))
        .collect();
    assert!(!deps.is_empty(), "no [dependencies] found in {manifest}");
    let extra: Vec<_> = deps.iter().filter(|d| !ALLOWED.contains(d)).collect();
    assert!(
        extra.is_empty(),
        "shoal-fleet must do no I/O; these dependencies are not on the allowed list: {extra:?}"
    );
}

fn rust_files(dir: &Path, out: &mut Vec<PathBuf>) {
    for entry in std::fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        if path.is_dir() {
            rust_files(&path, out);
        } else if path.extension().is_some_and(|e| e == "rs") {
            out.push(path);
        }
    }
}

#[test]
fn sources_name_no_way_out_of_the_process() {
    let mut files = Vec::new();
    rust_files(&root().join("src"), &mut files);
    assert!(files.len() >= 4, "found only {files:?}");
    let mut found = Vec::new();
    for file in &files {
        let text = std::fs::read_to_string(file).unwrap();
        for (n, line) in text.lines().enumerate() {
            let code = line.split("//").next().unwrap_or("");
            for word in FORBIDDEN.iter().filter(|w| code.contains(**w)) {
                found.push(format!("{}:{}: {word}", file.display(), n + 1));
            }
        }
    }
    assert!(
        found.is_empty(),
        "shoal-fleet must do no I/O (pass state and the clock in as arguments):\n{}",
        found.join("\n")
    );
}
