//! `shoal-agent render` as a config repo's reviewer uses it: what a device with a given id and
//! labels would get, from the working tree or from a commit, and readable errors for bad input.

use std::process::Command;

use shoal_e2e::{agent_bin, gateway_config, output, require_tools, ConfigRepo};

fn render(args: &[&str]) -> (i32, String, String) {
    let out = output(Command::new(agent_bin()).arg("render").args(args));
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

#[test]
fn render_shows_what_each_device_gets_and_names_the_error_in_bad_input() {
    if !require_tools(&["git"]) {
        return;
    }
    let dir = tempfile::tempdir().expect("tempdir");
    let repo = ConfigRepo::init(dir.path());
    for (path, content) in gateway_config("hello {{ device.id }} in {{ labels.site }}\n") {
        repo.write(path, content);
    }
    let first = repo.commit_unsigned("first");
    let path = repo.path().display().to_string();

    let (code, _, stderr) = render(&[
        &path,
        "--device-id",
        "gw-1",
        "--label",
        "role=gateway",
        "--label",
        "site=berlin",
    ]);
    assert_eq!(code, 0, "{stderr}");
    assert!(
        stderr.contains("0644 root:root /etc/motd  (base)"),
        "{stderr}"
    );
    assert!(
        stderr.contains("0600 root:root /etc/gw/gw.conf  (gateways)"),
        "{stderr}"
    );

    let (code, stdout, stderr) = render(&[
        &path,
        "--device-id",
        "s-1",
        "--label",
        "site=oslo",
        "--json",
    ]);
    assert_eq!(code, 0, "{stderr}");
    let json: serde_json::Value = serde_json::from_str(&stdout).expect("render --json prints JSON");
    let text = json.to_string();
    assert!(text.contains("hello s-1 in oslo"), "{text}");
    assert!(
        !text.contains("/etc/gw/gw.conf"),
        "a sensor gets no gateway files: {text}"
    );

    // The working tree changes; --rev still renders the committed state.
    repo.write("files/motd", "hello {{ device.hostname }}\n");
    let (code, _, stderr) = render(&[&path, "--device-id", "s-1", "--label", "site=oslo"]);
    assert_eq!(code, 1);
    assert!(
        stderr.contains("template \"files/motd\", line 1: unknown variable \"device.hostname\""),
        "{stderr}"
    );
    let (code, stdout, stderr) = render(&[
        &path,
        "--rev",
        &first,
        "--device-id",
        "s-1",
        "--label",
        "site=oslo",
        "--json",
    ]);
    assert_eq!(code, 0, "{stderr}");
    assert!(stdout.contains("hello s-1 in oslo"), "{stdout}");

    let (code, _, stderr) = render(&[&path, "--device-id", "s-1", "--label", "oops"]);
    assert_eq!(code, 2, "bad usage exits 2");
    assert!(
        stderr.contains("\"oops\" is not a label; write name=value"),
        "{stderr}"
    );
}

/// A commit with `[rollout]`: `render --rev` tells a reviewer which wave a device is in for that
/// commit (its bucket is computed from the commit id, so only a commit has one), and a rollout
/// that would leave devices in no wave is refused for every device.
#[test]
fn render_names_the_wave_of_a_device_for_a_commit_and_refuses_a_bad_rollout() {
    if !require_tools(&["git"]) {
        return;
    }
    let dir = tempfile::tempdir().expect("tempdir");
    let repo = ConfigRepo::init(dir.path());
    let rollout = "\n[rollout]\nwaves = [ { name = \"canary\", match = { labels = { ring = \"canary\" } } },\n          { name = \"early\", percent = 10, after = \"1h\" },\n          { name = \"all\", percent = 100, after = \"6h\" } ]\n";
    for (path, content) in gateway_config("hello\n") {
        let content = if path == "shoal.toml" {
            format!("{content}{rollout}")
        } else {
            content.to_owned()
        };
        repo.write(path, content);
    }
    let commit = repo.commit_unsigned("with a rollout");
    let path = repo.path().display().to_string();

    let (code, stdout, stderr) = render(&[
        &path,
        "--rev",
        &commit,
        "--device-id",
        "c-1",
        "--label",
        "ring=canary",
        "--json",
    ]);
    assert_eq!(code, 0, "{stderr}");
    let json: serde_json::Value = serde_json::from_str(&stdout).expect("JSON");
    assert_eq!(json["wave"]["name"], "canary", "{json}");
    assert_eq!(json["wave"]["after_seconds"], 0, "{json}");
    assert_eq!(json["rollout"]["waves"][2]["percent"], 100, "{json}");
    // A device without the label: its bucket for this commit decides between early and all.
    let (code, stdout, stderr) = render(&[&path, "--rev", &commit, "--device-id", "s-1", "--json"]);
    assert_eq!(code, 0, "{stderr}");
    let json: serde_json::Value = serde_json::from_str(&stdout).expect("JSON");
    let bucket = json["wave"]["bucket"].as_u64().expect("bucket");
    let expected = if bucket < 10 {
        ("early", 3600)
    } else {
        ("all", 21_600)
    };
    assert_eq!(json["wave"]["name"], expected.0, "{json}");
    assert_eq!(json["wave"]["after_seconds"], expected.1, "{json}");
    let (code, _, stderr) = render(&[&path, "--rev", &commit, "--device-id", "s-1"]);
    assert_eq!(code, 0, "{stderr}");
    assert!(
        stderr.contains(&format!(
            "rollout: wave \"{}\" (#{}, bucket {bucket}), opens {}s after",
            expected.0,
            if expected.0 == "early" { 2 } else { 3 },
            expected.1
        )),
        "{stderr}"
    );

    // Waves that stop at 60 %: refused, whichever device renders it.
    let shoal = std::fs::read_to_string(repo.path().join("shoal.toml")).unwrap();
    repo.write("shoal.toml", shoal.replace("percent = 100", "percent = 60"));
    let bad = repo.commit_unsigned("rollout that stops at 60 %");
    for device in ["c-1", "s-1"] {
        let (code, _, stderr) = render(&[&path, "--rev", &bad, "--device-id", device]);
        assert_eq!(code, 1, "{stderr}");
        assert!(
            stderr.contains("shoal.toml: [rollout]: the waves reach 60 % of the fleet, not 100 %"),
            "{stderr}"
        );
    }
}
