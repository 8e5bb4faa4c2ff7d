//! Render scenarios: a repository in memory and a device go in; the desired state, or an
//! operator-facing error quoted in full, comes out. (Real git commits and checkouts, read through
//! the agent's trees: `agent/src/render/tests.rs`.)

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;
use std::time::Duration;

use super::*;

/// A configuration tree in memory. Directories are implied by file paths; `symlinks` are paths
/// (files or directories) that are symlinks in the "repository".
#[derive(Default)]
struct MemTree {
    files: BTreeMap<String, Vec<u8>>,
    symlinks: BTreeSet<String>,
}

impl MemTree {
    fn new(manifest: &str) -> Self {
        MemTree::default().file(MANIFEST, manifest)
    }

    fn file(mut self, path: &str, content: impl AsRef<[u8]>) -> Self {
        self.files
            .insert(path.to_owned(), content.as_ref().to_vec());
        self
    }

    fn symlink(mut self, path: &str) -> Self {
        self.symlinks.insert(path.to_owned());
        self
    }
}

impl RepoTree for MemTree {
    fn read_file(&self, path: &str) -> Result<Vec<u8>, TreeError> {
        let names: Vec<&str> = path.split('/').collect();
        for i in 0..names.len() {
            let here = names[..=i].join("/");
            if self.symlinks.contains(&here) {
                return Err(TreeError::Symlink { path: here });
            }
        }
        if let Some(content) = self.files.get(path) {
            return Ok(content.clone());
        }
        let dir = format!("{path}/");
        if self.files.keys().any(|p| p.starts_with(&dir)) {
            return Err(TreeError::NotAFile { what: "directory" });
        }
        Err(TreeError::NotFound)
    }
}

fn device(id: &str, labels: &[(&str, &str)]) -> DeviceIdentity {
    DeviceIdentity::new(id, labels.iter().copied(), "/var/lib/shoal")
}

fn gateway() -> DeviceIdentity {
    device("gw-0042", &[("role", "gateway"), ("site", "berlin")])
}

fn error(tree: &MemTree, identity: &DeviceIdentity) -> String {
    match render_tree(tree, identity) {
        Ok(state) => panic!("expected an error, rendered:\n{}", state.summary()),
        Err(e) => e.to_string(),
    }
}

/// A manifest with one `match = "*"` profile named "base" holding `body`.
fn base(body: &str) -> String {
    format!("version = 1\n\n[[profile]]\nname = \"base\"\nmatch = \"*\"\n{body}")
}

const DESIGN_EXAMPLE: &str = r#"
version = 1

[[profile]]
name = "base"
match = "*"                               # every device

  [[profile.file]]
  path   = "/etc/motd"                    # absolute path on the device
  source = "files/motd"                   # path inside the repo
  mode   = "0644"                         # default 0644; owner/group default root
  template = true                         # {{ device.id }}, {{ labels.site }} substituted

[[profile]]
name = "gateways"
match = { labels = { role = "gateway" } }   # all listed labels must match; also: devices = ["gw-1", ...]

  [[profile.file]]
  path   = "/etc/telemetry/config.yaml"
  source = "files/telemetry.yaml"
  mode   = "0640"
  owner  = "telemetry"

  [[profile.service]]
  unit    = "telemetry.service"
  source  = "units/telemetry.service"     # unit file content; drop-ins: dropins = ["units/telemetry.d/x.conf"]
  dropins = ["units/telemetry.d/x.conf"]
  enabled = true
  state   = "running"                     # running | stopped
  restart_on = ["/etc/telemetry/config.yaml"]   # files whose change restarts it
  health  = { exec = "/usr/bin/telemetry --self-check", timeout = "30s" }   # optional, beside "unit is active"
"#;

fn design_repo() -> MemTree {
    MemTree::new(DESIGN_EXAMPLE)
        .file(
            "files/motd",
            "Welcome to {{ device.id }} in {{labels.site}}.\n",
        )
        .file("files/telemetry.yaml", "interval: 10s\n")
        .file(
            "units/telemetry.service",
            "[Service]\nExecStart=/usr/bin/telemetry\n",
        )
        .file("units/telemetry.d/x.conf", "[Service]\nNice=5\n")
}

#[test]
fn the_design_example_renders_for_a_gateway() {
    let state = render_tree(&design_repo(), &gateway()).unwrap();
    let expected = DesiredState::from_files([
        (
            "/etc/motd",
            DesiredFile::new(b"Welcome to gw-0042 in berlin.\n", 0o644, "root", "root")
                .declared_by("base", "files/motd"),
        ),
        (
            "/etc/telemetry/config.yaml",
            DesiredFile::new(b"interval: 10s\n", 0o640, "telemetry", "root")
                .declared_by("gateways", "files/telemetry.yaml"),
        ),
    ])
    .with_services([DesiredService {
        dropins: BTreeMap::from([("x.conf".into(), b"[Service]\nNice=5\n".to_vec())]),
        restart_on: vec!["/etc/telemetry/config.yaml".into()],
        health: Some(HealthCheck {
            exec: "/usr/bin/telemetry --self-check".into(),
            timeout: Duration::from_secs(30),
        }),
        ..DesiredService::new(
            "telemetry.service",
            b"[Service]\nExecStart=/usr/bin/telemetry\n",
        )
        .declared_by("gateways")
    }]);
    assert_eq!(state, expected);
    assert_eq!(
        state.summary(),
        "0644 root:root /etc/motd  (base)\n\
         0640 telemetry:root /etc/telemetry/config.yaml  (gateways)\n\
         service telemetry.service enabled running, drop-ins: x.conf, restart on: /etc/telemetry/config.yaml, \
         health: /usr/bin/telemetry --self-check (timeout 30s)  (gateways)\n"
    );
}

#[test]
fn a_device_that_matches_no_label_gets_only_the_base_profile() {
    let state = render_tree(&design_repo(), &device("sensor-7", &[("site", "paris")])).unwrap();
    assert_eq!(
        state.files.keys().collect::<Vec<_>>(),
        [Path::new("/etc/motd")]
    );
    assert!(state.services.is_empty());
    assert_eq!(
        state.files[Path::new("/etc/motd")].content,
        b"Welcome to sensor-7 in paris.\n"
    );
}

/// Which profiles contribute a file for `identity`, each profile declaring `/etc/<name>`.
fn matched_profiles(identity: &DeviceIdentity) -> Vec<String> {
    let manifest = r#"
version = 1
[[profile]]
name = "all"
match = "*"
[[profile.file]]
path = "/etc/all"
source = "f"

[[profile]]
name = "gateways"
match = { labels = { role = "gateway" } }
[[profile.file]]
path = "/etc/gateways"
source = "f"

[[profile]]
name = "berlin-gateways"
match = { labels = { role = "gateway", site = "berlin" } }
[[profile.file]]
path = "/etc/berlin-gateways"
source = "f"

[[profile]]
name = "pilot"
match = { devices = ["gw-1", "gw-2"] }
[[profile.file]]
path = "/etc/pilot"
source = "f"

[[profile]]
name = "pilot-gateways"
match = { devices = ["gw-1", "sensor-1"], labels = { role = "gateway" } }
[[profile.file]]
path = "/etc/pilot-gateways"
source = "f"
"#;
    let tree = MemTree::new(manifest).file("f", "x");
    let state = render_tree(&tree, identity).unwrap();
    state.files.values().map(|f| f.profile.clone()).collect()
}

#[test]
fn profiles_match_on_labels_devices_or_both() {
    let cases: &[(DeviceIdentity, &[&str])] = &[
        (device("sensor-9", &[]), &["all"]),
        (
            device("gw-9", &[("role", "gateway"), ("site", "paris")]),
            &["all", "gateways"],
        ),
        (
            device("gw-9", &[("role", "gateway"), ("site", "berlin")]),
            &["all", "berlin-gateways", "gateways"],
        ),
        (device("gw-2", &[]), &["all", "pilot"]),
        (
            device("gw-1", &[("role", "gateway")]),
            &["all", "gateways", "pilot", "pilot-gateways"],
        ),
        // `devices` matches but `labels` does not: both keys must match.
        (device("sensor-1", &[("role", "sensor")]), &["all"]),
        // Label values are compared exactly.
        (device("gw-9", &[("role", "Gateway")]), &["all"]),
    ];
    for (identity, expected) in cases {
        let mut got = matched_profiles(identity);
        got.sort();
        assert_eq!(got, *expected, "{identity:?}");
    }
}

#[test]
fn profiles_merge_in_file_order_and_identical_declarations_are_fine() {
    let manifest = r#"
version = 1
[[profile]]
name = "a"
match = "*"
[[profile.file]]
path = "/etc/shared"
source = "shared-a"
mode = "0600"
[[profile.file]]
path = "/etc/a"
source = "a"
[[profile.service]]
unit = "x.service"
source = "x.service"

[[profile]]
name = "b"
match = "*"
[[profile.file]]
path = "/etc/b"
source = "b"
[[profile.file]]
path = "/etc/shared"
source = "shared-b"
mode = "600"
template = true
[[profile.service]]
unit = "x.service"
source = "x.service"
enabled = true
state = "running"
"#;
    let tree = MemTree::new(manifest)
        .file("shared-a", "same")
        .file("shared-b", "same")
        .file("a", "A")
        .file("b", "B")
        .file("x.service", "[Service]\n");
    let state = render_tree(&tree, &gateway()).unwrap();
    let owners: Vec<(&Path, &str)> = state
        .files
        .iter()
        .map(|(p, f)| (p.as_path(), f.profile.as_str()))
        .collect();
    assert_eq!(
        owners,
        [
            (Path::new("/etc/a"), "a"),
            (Path::new("/etc/b"), "b"),
            (Path::new("/etc/shared"), "a"),
        ],
        "a path declared identically twice belongs to the first profile"
    );
    assert_eq!(state.files[Path::new("/etc/shared")].source, "shared-a");
    assert_eq!(state.services["x.service"].profile, "a");
}

fn two_profiles(a: &str, b: &str) -> String {
    format!(
        "version = 1\n[[profile]]\nname = \"base\"\nmatch = \"*\"\n{a}\n\
         [[profile]]\nname = \"gateways\"\nmatch = {{ labels = {{ role = \"gateway\" }} }}\n{b}\n"
    )
}

#[test]
fn conflicting_declarations_name_both_profiles_and_the_path() {
    let file = |source: &str, extra: &str| {
        format!("[[profile.file]]\npath = \"/etc/motd\"\nsource = \"{source}\"\n{extra}")
    };
    let tree = |a: String, b: String| {
        MemTree::new(&two_profiles(&a, &b))
            .file("one", "one\n")
            .file("two", "two\n")
    };
    let cases = [
        (
            tree(file("one", ""), file("two", "")),
            "shoal.toml: profiles \"base\" and \"gateways\" both declare /etc/motd, with different content; keep one declaration, or make them identical",
        ),
        (
            tree(file("one", ""), file("one", "mode = \"0600\"")),
            "shoal.toml: profiles \"base\" and \"gateways\" both declare /etc/motd, with different mode (0644 vs 0600); keep one declaration, or make them identical",
        ),
        (
            tree(file("one", ""), file("one", "owner = \"app\"")),
            "shoal.toml: profiles \"base\" and \"gateways\" both declare /etc/motd, with different owner (root vs app); keep one declaration, or make them identical",
        ),
        (
            tree(file("one", "group = \"adm\""), file("one", "")),
            "shoal.toml: profiles \"base\" and \"gateways\" both declare /etc/motd, with different group (adm vs root); keep one declaration, or make them identical",
        ),
    ];
    for (tree, expected) in cases {
        assert_eq!(error(&tree, &gateway()), expected);
        // Only matched profiles are merged: a sensor gets "base" alone, without conflict.
        render_tree(&tree, &device("sensor-1", &[])).unwrap();
    }
}

#[test]
fn conflicting_services_name_both_profiles_and_the_unit() {
    let service = |extra: &str| {
        format!("[[profile.service]]\nunit = \"telemetry.service\"\nsource = \"u\"\n{extra}")
    };
    let cases = [
        (service("state = \"stopped\""), "state (running vs stopped)"),
        (service("enabled = false"), "enabled (true vs false)"),
        (service("dropins = [\"d/x.conf\"]"), "drop-ins"),
        (service("health = { exec = \"/bin/true\" }"), "health check"),
    ];
    for (second, difference) in cases {
        let tree = MemTree::new(&two_profiles(&service(""), &second))
            .file("u", "[Service]\n")
            .file("d/x.conf", "");
        assert_eq!(
            error(&tree, &gateway()),
            format!(
                "shoal.toml: profiles \"base\" and \"gateways\" both declare unit telemetry.service, with different {difference}; keep one declaration, or make them identical"
            )
        );
    }
}

#[test]
fn templates_expand_only_when_asked() {
    let tree = MemTree::new(&base(
        "[[profile.file]]\npath = \"/etc/a\"\nsource = \"t\"\ntemplate = true\n\
         [[profile.file]]\npath = \"/etc/b\"\nsource = \"t\"\n",
    ))
    .file("t", "id={{device.id}} site={{ labels.site }}");
    let state = render_tree(&tree, &gateway()).unwrap();
    assert_eq!(
        state.files[Path::new("/etc/a")].content,
        b"id=gw-0042 site=berlin"
    );
    assert_eq!(
        state.files[Path::new("/etc/b")].content,
        b"id={{device.id}} site={{ labels.site }}"
    );
}

#[test]
fn template_errors_name_the_file_the_variable_and_the_line() {
    let manifest =
        base("[[profile.file]]\npath = \"/etc/motd\"\nsource = \"files/motd\"\ntemplate = true\n");
    let cases: [(&[u8], &str); 4] = [
        (
            b"Welcome\nto {{ device.hostname }}\n",
            "shoal.toml: profile \"base\", file #1: template \"files/motd\", line 2: unknown variable \"device.hostname\"; templates know only {{ device.id }} and {{ labels.NAME }}",
        ),
        (
            b"\n\n{{ labels.rack }}",
            "shoal.toml: profile \"base\", file #1: template \"files/motd\", line 3: device \"gw-0042\" has no label \"rack\" (used as {{ labels.rack }}); add it to `labels` in the device's agent.toml, or stop using it in this template",
        ),
        (
            b"{{ device.id",
            "shoal.toml: profile \"base\", file #1: template \"files/motd\", line 1: \"{{\" is not closed by \"}}\" on the same line (a file that needs a literal \"{{\" cannot be a template; set template = false)",
        ),
        (
            b"\x89PNG\r\n",
            "shoal.toml: profile \"base\", file #1: template \"files/motd\", line 1: not UTF-8 text; templates must be text (set template = false for binary files)",
        ),
    ];
    for (content, expected) in cases {
        let tree = MemTree::new(&manifest).file("files/motd", content);
        assert_eq!(error(&tree, &gateway()), expected);
    }
}

#[test]
fn template_syntax_is_checked_for_every_profile_but_labels_only_for_matching_devices() {
    let manifest = two_profiles(
        "",
        "[[profile.file]]\npath = \"/etc/gw\"\nsource = \"t\"\ntemplate = true\n",
    );
    let sensor = device("sensor-1", &[]);
    let missing_label = MemTree::new(&manifest).file("t", "{{ labels.uplink }}");
    render_tree(&missing_label, &sensor).expect("a sensor does not get the gateway template");
    assert!(error(&missing_label, &gateway()).contains("has no label \"uplink\""));

    let unknown = MemTree::new(&manifest).file("t", "{{ uplink }}");
    assert_eq!(
        error(&unknown, &sensor),
        "shoal.toml: profile \"gateways\", file #1: template \"t\", line 1: unknown variable \"uplink\"; templates know only {{ device.id }} and {{ labels.NAME }}"
    );
}

#[test]
fn device_paths_must_be_absolute_and_normalized() {
    let cases = [
        (
            "etc/motd",
            "shoal.toml: profile \"base\", file #1: path \"etc/motd\" must be absolute, like \"/etc/motd\"",
        ),
        (
            "/etc/../etc/shadow",
            "shoal.toml: profile \"base\", file #1: path \"/etc/../etc/shadow\" must not contain \"..\" components",
        ),
        (
            "/etc//motd",
            "shoal.toml: profile \"base\", file #1: path \"/etc//motd\" is not normalized; write \"/etc/motd\"",
        ),
        (
            "/etc/motd/",
            "shoal.toml: profile \"base\", file #1: path \"/etc/motd/\" is not normalized; write \"/etc/motd\"",
        ),
        (
            "/etc/./motd",
            "shoal.toml: profile \"base\", file #1: path \"/etc/./motd\" is not normalized; write \"/etc/motd\"",
        ),
        (
            "/",
            "shoal.toml: profile \"base\", file #1: path \"/\" is the root directory; name a file below it",
        ),
    ];
    for (path, expected) in cases {
        let tree = MemTree::new(&base(&format!(
            "[[profile.file]]\npath = \"{path}\"\nsource = \"f\"\n"
        )))
        .file("f", "");
        assert_eq!(error(&tree, &gateway()), expected);
    }
}

#[test]
fn paths_inside_the_state_dir_are_refused_for_every_profile() {
    let cases = [
        (
            "/var/lib/shoal/applied-commit",
            "shoal.toml: profile \"gateways\", file #1: path \"/var/lib/shoal/applied-commit\" is inside the agent's state directory /var/lib/shoal; Shoal does not manage its own state",
        ),
        (
            "/var/lib/shoal",
            "shoal.toml: profile \"gateways\", file #1: path \"/var/lib/shoal\" is inside the agent's state directory /var/lib/shoal; Shoal does not manage its own state",
        ),
        (
            "/var/lib",
            "shoal.toml: profile \"gateways\", file #1: path \"/var/lib\" would replace a directory that holds the agent's state directory /var/lib/shoal",
        ),
    ];
    for (path, expected) in cases {
        let tree = MemTree::new(&two_profiles(
            "",
            &format!("[[profile.file]]\npath = \"{path}\"\nsource = \"f\"\n"),
        ))
        .file("f", "");
        // The sensor does not match "gateways"; the path is refused all the same.
        let mut sensor = device("sensor-1", &[]);
        assert_eq!(error(&tree, &sensor), expected);
        // The state dir from agent.toml may be written loosely; it is compared normalized.
        sensor.state_dir = "/var/lib/./shoal/".into();
        assert_eq!(error(&tree, &sensor), expected);
    }
    let beside = MemTree::new(&base(
        "[[profile.file]]\npath = \"/var/lib/shoal-other/x\"\nsource = \"f\"\n",
    ))
    .file("f", "");
    render_tree(&beside, &gateway()).expect("a sibling of the state dir is fine");
}

#[test]
fn sources_must_stay_inside_the_repository() {
    let cases = [
        (
            "../../etc/shadow",
            "shoal.toml: profile \"base\", file #1: source \"../../etc/shadow\" must stay inside the repository: \"..\" components are not allowed",
        ),
        (
            "files/../../etc/shadow",
            "shoal.toml: profile \"base\", file #1: source \"files/../../etc/shadow\" must stay inside the repository: \"..\" components are not allowed",
        ),
        (
            "/etc/shadow",
            "shoal.toml: profile \"base\", file #1: source \"/etc/shadow\" must be relative to the repository root, not absolute",
        ),
        (
            "./files/motd",
            "shoal.toml: profile \"base\", file #1: source \"./files/motd\" is not normalized; write \"files/motd\"",
        ),
        (
            ".git/config",
            "shoal.toml: profile \"base\", file #1: source \".git/config\" points into git's own \".git\" directory",
        ),
        (
            "files/evil",
            "shoal.toml: profile \"base\", file #1: source \"files/evil\": \"files/evil\" is a symlink, and Shoal reads only regular files from the repository (symlink escape)",
        ),
        (
            "linked/shadow",
            "shoal.toml: profile \"base\", file #1: source \"linked/shadow\": \"linked\" is a symlink, and Shoal reads only regular files from the repository (symlink escape)",
        ),
        (
            "files",
            "shoal.toml: profile \"base\", file #1: source \"files\": is a directory, not a regular file",
        ),
        (
            "files/missing",
            "shoal.toml: profile \"base\", file #1: source \"files/missing\": not found in the repository",
        ),
    ];
    for (source, expected) in cases {
        let tree = MemTree::new(&base(&format!(
            "[[profile.file]]\npath = \"/etc/x\"\nsource = \"{source}\"\n"
        )))
        .file("files/motd", "hello")
        // If render ever asked for these, the test tree would hand them out.
        .file("../../etc/shadow", "root:secret")
        .file("files/../../etc/shadow", "root:secret")
        .file("/etc/shadow", "root:secret")
        .file(".git/config", "[core]")
        .symlink("files/evil")
        .symlink("linked");
        assert_eq!(error(&tree, &gateway()), expected);
    }
}

#[test]
fn sources_of_unmatched_profiles_must_exist_too() {
    let tree = MemTree::new(&two_profiles(
        "",
        "[[profile.service]]\nunit = \"x.service\"\nsource = \"u\"\ndropins = [\"x.d/a.conf\"]\n",
    ))
    .file("u", "");
    assert_eq!(
        error(&tree, &device("sensor-1", &[])),
        "shoal.toml: profile \"gateways\", service #1: dropins \"x.d/a.conf\": not found in the repository"
    );
}

#[test]
fn malformed_toml_keeps_tomls_line_and_column() {
    let tree = MemTree::new("version = 1\n[[profile]\nname = \"base\"\n");
    assert_eq!(
        error(&tree, &gateway()),
        "shoal.toml: TOML parse error at line 2, column 10\n  |\n2 | [[profile]\n  |          ^\ninvalid table header\nexpected `.`, `]]`"
    );
    let not_utf8 = MemTree::default().file(MANIFEST, b"version = 1\n\xff");
    assert_eq!(
        error(&not_utf8, &gateway()),
        "shoal.toml: not UTF-8 text (invalid byte at offset 12); TOML files must be UTF-8"
    );
}

#[test]
fn shape_errors_give_line_column_profile_and_entry() {
    let cases = [
        (
            base("[[profile.file]]\npath = \"/etc/motd\"\nsource = \"f\"\nmodee = \"0600\"\n"),
            "shoal.toml:9:1: profile \"base\", file #1: unknown field `modee`, expected one of `path`, `source`, `mode`, `owner`, `group`, `template`",
        ),
        (
            base("file = [{ path = \"/etc/motd\", source = \"f\" }, { path = \"/etc/x\", sauce = \"f\" }]\n"),
            "shoal.toml:6:66: profile \"base\", file #2: unknown field `sauce`, expected one of `path`, `source`, `mode`, `owner`, `group`, `template`",
        ),
        (
            base("[[profile.service]]\nunit = \"x.service\"\n"),
            "shoal.toml:6:1: profile \"base\", service #1: missing field `source`",
        ),
        (
            base("[[profile.service]]\nunit = \"x.service\"\nsource = \"u\"\nstate = \"started\"\n"),
            "shoal.toml:9:9: profile \"base\", service #1: unknown variant `started`, expected `running` or `stopped`",
        ),
        (
            base("[[profile.file]]\npath = \"/etc/motd\"\nsource = \"f\"\nowner = 0\n"),
            "shoal.toml:9:9: profile \"base\", file #1: invalid type: integer `0`, expected a string",
        ),
        (
            base("descripton = \"typo\"\n"),
            "shoal.toml:6:1: profile \"base\": unknown field `descripton`, expected one of `name`, `match`, `file`, `service`",
        ),
        (
            "version = 1\n[[profile]]\nname = \"x\"\nmatch = \"all\"\n".to_string(),
            "shoal.toml:4:9: profile \"x\": match \"all\" is not supported; write match = \"*\", match = { labels = { role = \"gateway\" } } or match = { devices = [\"gw-1\"] }",
        ),
        (
            "version = 1\n[[profile]]\nname = \"x\"\nmatch = { label = { role = \"gateway\" } }\n".to_string(),
            "shoal.toml:4:11: profile \"x\": unknown field `label`, expected `labels` or `devices`",
        ),
        (
            "version = 1\n[[profiles]]\nname = \"x\"\n".to_string(),
            "shoal.toml:2:3: unknown field `profiles`, expected one of `version`, `profile`, `rollout`",
        ),
    ];
    for (manifest, expected) in cases {
        let tree = MemTree::new(&manifest).file("f", "").file("u", "");
        assert_eq!(error(&tree, &gateway()), expected, "{manifest}");
    }
}

#[test]
fn versions_other_than_1_are_refused() {
    let cases = [
        (
            "version = 2\n[[profile]]\nfuture = true\n",
            "shoal.toml: version 2 is not supported; this agent supports version 1",
        ),
        (
            "version = \"1\"\n",
            "shoal.toml: version \"1\" is not supported; this agent supports version 1",
        ),
        (
            "[[profile]]\nname = \"x\"\nmatch = \"*\"\n",
            "shoal.toml: `version` is missing; add `version = 1` at the top",
        ),
    ];
    for (manifest, expected) in cases {
        assert_eq!(error(&MemTree::new(manifest), &gateway()), expected);
    }
    assert_eq!(
        render_tree(&MemTree::new("version = 1\n"), &gateway()).unwrap(),
        DesiredState::default()
    );
}

#[test]
fn invalid_values_name_the_profile_the_entry_and_the_field() {
    let two = |b: &str| two_profiles("", b);
    let cases = [
        (
            two("[[profile.file]]\npath = \"/a\"\nsource = \"f\"\n[[profile.file]]\npath = \"/etc/motd\"\nsource = \"f\"\nmode = \"0999\"\n"),
            "shoal.toml: profile \"gateways\", file #2: mode \"0999\" is not an octal mode; write 3 or 4 digits 0-7, like \"0644\"",
        ),
        (
            base("[[profile.file]]\npath = \"/etc/motd\"\nsource = \"f\"\nmode = 0o644\n"),
            "shoal.toml: profile \"base\", file #1: mode must be a quoted octal string like \"0644\", not 420",
        ),
        (
            base("[[profile.file]]\npath = \"/etc/motd\"\nsource = \"f\"\nowner = \"root:root\"\n"),
            "shoal.toml: profile \"base\", file #1: owner \"root:root\" is not a user or group name; write a name like \"root\" or a numeric id",
        ),
        (
            base("[[profile.file]]\npath = \"/etc/motd\"\nsource = \"f\"\n[[profile.file]]\npath = \"/etc/motd\"\nsource = \"f\"\n"),
            "shoal.toml: profile \"base\", file #2: path \"/etc/motd\" is already declared by file #1 of this profile",
        ),
        (
            base("[[profile.service]]\nunit = \"telemetry\"\nsource = \"u\"\n"),
            "shoal.toml: profile \"base\", service #1: unit \"telemetry\" needs a unit type suffix: one of .service, .socket, .timer, .path, .mount, .automount, .swap, .target, .slice",
        ),
        (
            base("[[profile.service]]\nunit = \"x.service\"\nsource = \"u\"\ndropins = [\"x.d/override\"]\n"),
            "shoal.toml: profile \"base\", service #1: dropins \"x.d/override\" must be a file named like \"override.conf\"; systemd reads only *.conf files from a drop-in directory",
        ),
        (
            base("[[profile.service]]\nunit = \"x.service\"\nsource = \"u\"\ndropins = [\"a/x.conf\", \"b/x.conf\"]\n"),
            "shoal.toml: profile \"base\", service #1: dropins \"b/x.conf\" has the same file name as \"a/x.conf\"; the drop-ins of one unit need distinct file names",
        ),
        (
            base("[[profile.service]]\nunit = \"x.service\"\nsource = \"u\"\nrestart_on = [\"etc/x\"]\n"),
            "shoal.toml: profile \"base\", service #1: restart_on \"etc/x\" must be absolute, like \"/etc/x\"",
        ),
        (
            base("[[profile.service]]\nunit = \"x.service\"\nsource = \"u\"\nhealth = { exec = \"/bin/true\", timeout = \"soon\" }\n"),
            "shoal.toml: profile \"base\", service #1: health.timeout \"soon\" is not a duration; write a number and a unit (ms, s, m, h), like \"30s\"",
        ),
        (
            base("[[profile.service]]\nunit = \"x.service\"\nsource = \"u\"\nhealth = { exec = \" \" }\n"),
            "shoal.toml: profile \"base\", service #1: health.exec must not be empty",
        ),
        (
            "version = 1\n[[profile]]\nname = \"x\"\nmatch = {}\n".to_string(),
            "shoal.toml: profile \"x\": match must name `labels` or `devices`, or be \"*\"",
        ),
        (
            "version = 1\n[[profile]]\nname = \"x\"\nmatch = { labels = {} }\n".to_string(),
            "shoal.toml: profile \"x\": match.labels is empty; write match = \"*\" to select every device",
        ),
        (
            "version = 1\n[[profile]]\nname = \"x\"\nmatch = { devices = [] }\n".to_string(),
            "shoal.toml: profile \"x\": match.devices is empty, so the profile selects no device; list device ids, or remove the profile",
        ),
        (
            "version = 1\n[[profile]]\nname = \"x\"\nmatch = \"*\"\n[[profile]]\nname = \"x\"\nmatch = \"*\"\n".to_string(),
            "shoal.toml: profile #2: name \"x\" is already used by profile #1; profile names must be unique",
        ),
        (
            "version = 1\n[[profile]]\nname = \"\"\nmatch = \"*\"\n".to_string(),
            "shoal.toml: profile #1: name must not be empty",
        ),
    ];
    for (manifest, expected) in cases {
        let tree = MemTree::new(&manifest).file("f", "").file("u", "");
        assert_eq!(
            error(&tree, &device("sensor-1", &[])),
            expected,
            "{manifest}"
        );
    }
}

#[test]
fn restart_on_must_name_a_file_the_device_gets() {
    let manifest = two_profiles(
        "[[profile.service]]\nunit = \"x.service\"\nsource = \"u\"\nrestart_on = [\"/etc/x.conf\"]\n",
        "[[profile.file]]\npath = \"/etc/x.conf\"\nsource = \"f\"\n",
    );
    let tree = MemTree::new(&manifest).file("u", "").file("f", "");
    let state = render_tree(&tree, &gateway()).unwrap();
    assert_eq!(
        state.services["x.service"].restart_on,
        [Path::new("/etc/x.conf")]
    );
    assert_eq!(
        error(&tree, &device("sensor-1", &[])),
        "shoal.toml: profile \"base\", service #1: restart_on \"/etc/x.conf\" is not a file declared for this device; declare it in a profile that matches, or remove it from restart_on"
    );
}

#[test]
fn a_path_cannot_be_both_a_file_and_a_directory() {
    let tree = MemTree::new(&two_profiles(
        "[[profile.file]]\npath = \"/etc/app\"\nsource = \"f\"\n",
        "[[profile.file]]\npath = \"/etc/app/conf\"\nsource = \"f\"\n",
    ))
    .file("f", "");
    assert_eq!(
        error(&tree, &gateway()),
        "shoal.toml: profile \"gateways\" declares /etc/app/conf, but profile \"base\" declares /etc/app as a file; a path cannot be both a file and a directory"
    );
}

#[test]
fn defaults_apply_when_keys_are_left_out() {
    let tree = MemTree::new(&base(
        "[[profile.file]]\npath = \"/etc/motd\"\nsource = \"f\"\n\
         [[profile.service]]\nunit = \"x.service\"\nsource = \"u\"\nhealth = { exec = \"/bin/true\" }\n",
    ))
    .file("f", "")
    .file("u", "");
    let state = render_tree(&tree, &gateway()).unwrap();
    let file = &state.files[Path::new("/etc/motd")];
    assert_eq!(
        (file.mode, file.owner.as_str(), file.group.as_str()),
        (0o644, "root", "root")
    );
    let service = &state.services["x.service"];
    assert!(service.enabled);
    assert_eq!(service.state, ServiceState::Running);
    assert!(service.dropins.is_empty() && service.restart_on.is_empty());
    assert_eq!(
        service.health.as_ref().unwrap().timeout,
        DEFAULT_HEALTH_TIMEOUT
    );
}

#[test]
fn a_missing_or_unusable_manifest_is_reported() {
    assert_eq!(
        error(&MemTree::default(), &gateway()),
        "the repository has no shoal.toml at its root; add one that starts with `version = 1`"
    );
    assert_eq!(
        error(&MemTree::default().symlink(MANIFEST), &gateway()),
        "cannot read shoal.toml from the repository: \"shoal.toml\" is a symlink, and Shoal reads only regular files from the repository (symlink escape)"
    );
}
