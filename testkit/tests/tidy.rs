//! Tidy: every Rust file of every workspace member starts with a `//!` line saying what it
//! promises (STYLE.md, item 9); the members are read from the root Cargo.toml, so a new crate is
//! covered without touching this test.

use std::path::{Path, PathBuf};

/// The shortest first line that can say what a file promises.
const MIN_PROMISE: usize = 20;

#[test]
fn every_rust_file_of_every_member_starts_with_a_promise() {
    let workspace = Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("testkit/ is a member of the workspace root");
    let members = members(workspace);
    assert!(
        members.iter().any(|m| m == "testkit") && members.len() > 3,
        "unexpected member list {members:?}"
    );
    let mut files = Vec::new();
    for member in &members {
        let dir = workspace.join(member);
        assert!(dir.is_dir(), "member {member} has no directory");
        rust_files(&dir, &mut files);
    }
    let missing: Vec<String> = files
        .iter()
        .filter(|file| {
            let text = std::fs::read_to_string(file)
                .unwrap_or_else(|e| panic!("cannot read {}: {e}", file.display()));
            let first = text.lines().next().unwrap_or_default();
            !first.starts_with("//! ") || first.len() < MIN_PROMISE
        })
        .map(|file| {
            file.strip_prefix(workspace)
                .unwrap_or(file)
                .display()
                .to_string()
        })
        .collect();
    assert!(
        missing.is_empty(),
        "these files do not start with a `//! ` line of at least {MIN_PROMISE} characters saying \
         what they promise:\n{}",
        missing.join("\n")
    );
}

/// `[workspace] members` of the root Cargo.toml (plain paths; a glob would need expanding here).
fn members(workspace: &Path) -> Vec<String> {
    let manifest = workspace.join("Cargo.toml");
    let text = std::fs::read_to_string(&manifest)
        .unwrap_or_else(|e| panic!("cannot read {}: {e}", manifest.display()));
    let root: toml::Table = text
        .parse()
        .unwrap_or_else(|e| panic!("{}: {e}", manifest.display()));
    let members = root["workspace"]["members"]
        .as_array()
        .expect("[workspace] members is an array");
    members
        .iter()
        .map(|m| {
            let m = m.as_str().expect("a member is a path");
            assert!(!m.contains('*'), "member globs are not expanded here: {m}");
            m.to_owned()
        })
        .collect()
}

/// Every `.rs` file under `dir`, skipping build output and hidden directories.
fn rust_files(dir: &Path, out: &mut Vec<PathBuf>) {
    let entries =
        std::fs::read_dir(dir).unwrap_or_else(|e| panic!("cannot list {}: {e}", dir.display()));
    for entry in entries {
        let path = entry.expect("directory entry").path();
        let name = path.file_name().unwrap_or_default().to_string_lossy();
        if path.is_dir() {
            if name != "target" && !name.starts_with('.') {
                rust_files(&path, out);
            }
        } else if path.extension().is_some_and(|e| e == "rs") {
            out.push(path);
        }
    }
}
