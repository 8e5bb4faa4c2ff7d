//! Purity checks for the crates that must do no I/O (`shoal-core`, `shoal-fleet`): their
//! `[dependencies]` are only an allowed list, and their code (test modules aside) names none of
//! std's ways out of the process. A crate's `tests/no_io.rs` calls [`check_crate`].

use std::path::{Path, PathBuf};

/// std's ways out of the process and the clock: what pure code never names.
pub const STD_IO: [&str; 8] = [
    "std::fs",
    "std::net",
    "std::io",
    "std::process",
    "std::env",
    "std::thread",
    "SystemTime",
    "Instant",
];

/// Fails (naming every offence) unless the crate at `root` lists only `allowed` dependencies and
/// its `src` code names none of [`STD_IO`] and `also_forbidden`. Test code is not checked: files
/// named `tests.rs` and everything after a `#[cfg(test)]` line.
pub fn check_crate(root: &Path, allowed: &[&str], also_forbidden: &[&str]) {
    let name = root.file_name().unwrap_or_default().to_string_lossy();
    let manifest = std::fs::read_to_string(root.join("Cargo.toml")).unwrap();
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
    let extra: Vec<_> = deps.iter().filter(|d| !allowed.contains(d)).collect();
    assert!(
        extra.is_empty(),
        "{name} must do no I/O; these dependencies are not on its allowed list: {extra:?}"
    );

    let mut files = Vec::new();
    rust_files(&root.join("src"), &mut files);
    assert!(files.len() >= 4, "found only {files:?}");
    let mut found = Vec::new();
    for file in files.iter().filter(|f| !f.ends_with("tests.rs")) {
        let text = std::fs::read_to_string(file).unwrap();
        for (n, line) in text.lines().enumerate() {
            if line.trim() == "#[cfg(test)]" {
                break;
            }
            let code = line.split("//").next().unwrap_or("");
            for word in STD_IO.iter().chain(also_forbidden) {
                if code.contains(word) {
                    found.push(format!("{}:{}: {word}", file.display(), n + 1));
                }
            }
        }
    }
    assert!(
        found.is_empty(),
        "{name} must do no I/O (pass data and the clock in as arguments):\n{}",
        found.join("\n")
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
