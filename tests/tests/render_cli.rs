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
