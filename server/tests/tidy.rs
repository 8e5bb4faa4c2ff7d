//! Tidy: every Rust file of the collector, fleet, loadgen and proto crates starts with a `//!` line
//! saying what it promises (STYLE.md, item 9).

use std::path::{Path, PathBuf};

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
fn every_rust_file_starts_with_a_promise() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let mut files = Vec::new();
    for dir in [
        "src",
        "tests",
        "../fleet/src",
        "../fleet/tests",
        "../loadgen/src",
        "../proto/src",
        "../proto/tests",
    ] {
        rust_files(&root.join(dir), &mut files);
    }
    assert!(files.len() > 10, "found only {files:?}");
    let missing: Vec<_> = files
        .iter()
        .filter(|f| {
            let text = std::fs::read_to_string(f).unwrap();
            !text.starts_with("//! ") || text.lines().next().is_some_and(|l| l.len() < 20)
        })
        .collect();
    assert!(
        missing.is_empty(),
        "files without a //! promise line: {missing:?}"
    );
}
