//! The fetch's progress line: a first sync of a large repository run at a terminal (a real pty,
//! from util-linux's `script`) shows objects and bytes received, redrawn on one line; the same
//! sync with stderr piped (a log, CI, systemd's journal) writes no progress at all.

use std::process::Command;

use shoal_e2e::{agent_bin, gateway_config, output, require_tools, Incompressible, Sandbox};

/// A repository large enough that the pack takes a while: 400 files of 8 KiB that do not
/// compress (about 3 MiB on the wire).
fn large_repo(f: &Sandbox) -> String {
    for i in 0..400u64 {
        f.repo.write(
            format!("bulk/{i:03}.bin"),
            Incompressible::bytes(8 * 1024, i),
        );
    }
    f.push(&gateway_config("hello\n"), "large")
}

/// One shell word, quoted for `sh -c`.
fn quoted(word: &str) -> String {
    format!("'{}'", word.replace('\'', r"'\''"))
}

#[test]
fn a_first_sync_at_a_terminal_shows_the_progress_line_and_piped_it_does_not() {
    let Some(f) = Sandbox::new() else { return };
    if !require_tools(&["script"]) {
        return;
    }
    let commit = large_repo(&f);
    let other = f.another_device("piped");

    // At a terminal: `script` gives the agent a pty for stdin, stdout and stderr, and copies
    // what it printed to its own stdout (the pty's bytes, carriage returns included).
    let line = format!(
        "{} --config {} sync",
        quoted(&agent_bin().display().to_string()),
        quoted(&f.device.config_path().display().to_string())
    );
    let mut at_terminal = Command::new("script");
    at_terminal
        .args(["-q", "-e", "-c", &line, "/dev/null"])
        .env("SHOAL_LOG", "warn")
        .env("TERM", "xterm")
        .env_remove("GIT_DIR");
    let run = output(&mut at_terminal);
    let seen = String::from_utf8_lossy(&run.stdout).into_owned();
    assert!(run.status.success(), "sync at a terminal failed:\n{seen}");
    assert!(seen.contains("applied generation 1"), "{seen}");
    assert!(
        seen.contains("receiving objects: "),
        "no progress line:\n{seen}"
    );
    // The pack's object count: 400 blobs, their trees, the commit.
    assert!(
        seen.contains("100% (") && seen.contains(", done."),
        "the line ends at 100 %:\n{seen}"
    );
    assert!(
        seen.contains("\r"),
        "redrawn in place with a carriage return"
    );
    assert!(seen.contains(" MiB"), "bytes received are shown:\n{seen}");
    assert_eq!(f.status()["commit"], commit.as_str());

    // Piped: the same first sync of the same repository, not a byte of progress.
    let piped = other.sync();
    piped.expect(0, "applied generation 1");
    for text in [&piped.stdout, &piped.stderr] {
        assert!(!text.contains("receiving"), "progress in a pipe:\n{text}");
        assert!(!text.contains('\r') && !text.contains('\x1b'), "{text:?}");
    }
}
