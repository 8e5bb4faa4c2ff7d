//! `shoal-agent init` and `shoal-agent doctor` against real parts: a signed repository on the
//! harness's HTTPS git server, the real collector over TLS, real `ssh-keygen` keys. `init` writes
//! a config that syncs and refuses bad input writing nothing; `doctor` passes on a healthy device
//! and names each failure (wrong key, unreachable server, missing ref, a clock behind the applied
//! commit, an unwritable or open state directory, a device the collector does not know) with
//! its fix, changing nothing on the device.

use std::os::unix::fs::PermissionsExt;
use std::path::PathBuf;
use std::process::Command;

use shoal_e2e::{
    agent_bin, gateway_config, output, require_root, require_tools, write_allowed_signers,
    Collector, CollectorSpec, ConfigRepo, Device, HttpsGitServer, Mount, Run, SigningKey,
};

const ENROLL_TOKEN: &str = "enroll-init-doctor-4f1c9a";

/// An operator's signed repository on the HTTPS git server, a collector over TLS with the same
/// test CA, and a directory for a device that `init` sets up.
struct Scene {
    dir: tempfile::TempDir,
    key: SigningKey,
    repo: ConfigRepo,
    signers: PathBuf,
    server: HttpsGitServer,
    collector: Collector,
    token: PathBuf,
}

impl Scene {
    fn new() -> Option<Scene> {
        if !require_tools(&["git", "ssh-keygen"]) {
            return None;
        }
        let dir = tempfile::tempdir().expect("tempdir");
        let key = SigningKey::generate(dir.path().join("keys"), "operator");
        let signers = dir.path().join("allowed_signers");
        write_allowed_signers(&signers, &[("operator@example", &key)]);
        let repo = ConfigRepo::init(dir.path().join("work"));
        std::fs::create_dir_all(dir.path().join("srv")).expect("mkdir srv");
        let server = HttpsGitServer::start(dir.path().join("srv"));
        let token = dir.path().join("enroll-token");
        std::fs::write(&token, format!("{ENROLL_TOKEN}\n")).expect("token");
        let mut spec = CollectorSpec::local(dir.path().join("collector-data"), token.clone());
        spec.tls = Some(server.ca());
        let collector = spec.start();
        Some(Scene {
            dir,
            key,
            repo,
            signers,
            server,
            collector,
            token,
        })
    }

    /// Commits the gateway config signed by the operator and publishes it.
    fn push(&self, motd: &str) -> String {
        for (path, content) in gateway_config(motd) {
            self.repo.write(path, content);
        }
        let id = self.repo.commit_signed(&self.key, motd.trim());
        self.publish();
        id
    }

    fn publish(&self) {
        self.repo.publish_to(self.dir.path().join("srv/config.git"));
    }

    /// The device directory: `init` writes `agent.toml` there, its state goes to `state/`, its
    /// managed files under `root/`.
    fn device_dir(&self) -> PathBuf {
        self.dir.path().join("device")
    }

    /// `init`'s flags for a device of this scene (with the collector and its token), then `extra`.
    fn init_args(&self, extra: &[&str]) -> Vec<String> {
        let dev = self.device_dir();
        let mut args: Vec<String> = vec![
            "--config".into(),
            dev.join("agent.toml").display().to_string(),
            "init".into(),
            "--url".into(),
            self.server.url("config.git"),
            "--ref".into(),
            "refs/heads/main".into(),
            "--ca-file".into(),
            self.server.ca_pem_path().display().to_string(),
            "--allowed-signers".into(),
            self.signers.display().to_string(),
            "--device-id".into(),
            "gw-1".into(),
            "--label".into(),
            "role=gateway".into(),
            "--state-dir".into(),
            dev.join("state").display().to_string(),
            "--root".into(),
            dev.join("root").display().to_string(),
            "--collector".into(),
            self.collector.url().to_owned(),
            "--collector-ca".into(),
            self.server.ca_pem_path().display().to_string(),
            "--enroll-token-file".into(),
            self.token.display().to_string(),
        ];
        args.extend(extra.iter().map(|s| s.to_string()));
        args
    }

    /// `init` with this scene's flags; the device it made.
    fn init(&self) -> Device {
        let root = self.device_dir().join("root");
        std::fs::create_dir_all(&root).expect("device root");
        // Whatever the umask: doctor refuses a root others may write.
        std::fs::set_permissions(&root, std::fs::Permissions::from_mode(0o755)).expect("chmod");
        agent(&self.init_args(&[])).expect(0, "next: shoal-agent --config");
        Device::at(self.device_dir())
    }
}

/// `shoal-agent ARGS`.
fn agent(args: &[String]) -> Run {
    let out = output(
        Command::new(agent_bin())
            .args(args)
            .env("SHOAL_LOG", "warn"),
    );
    Run {
        code: out.status.code().unwrap_or(-1),
        stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
    }
}

/// `doctor --no-unit` (no systemd here; the packages test checks the unit) on `device`.
fn doctor(device: &Device) -> Run {
    device.agent(&["doctor", "--no-unit"])
}

/// The line of `check` in doctor's human output.
fn line<'a>(run: &'a Run, check: &str) -> &'a str {
    run.stderr
        .lines()
        .find(|l| l.get(5..).is_some_and(|rest| rest.starts_with(check)))
        .unwrap_or_else(|| panic!("no {check} line:\n{}", run.stderr))
}

/// Doctor failed (exit 1) on exactly `check`, saying `what` and `fix`, and the device's state
/// is what it was before.
fn fails_only(device: &Device, check: &str, what: &str, fix: &str) {
    let before = device.state_files();
    let run = doctor(device);
    assert_eq!(run.code, 1, "{}", run.stderr);
    let failing: Vec<&str> = run
        .stderr
        .lines()
        .filter(|l| l.starts_with("FAIL"))
        .collect();
    assert_eq!(failing.len(), 1, "only {check} fails:\n{}", run.stderr);
    let found = line(&run, check);
    assert!(found.starts_with("FAIL"), "{found}");
    assert!(found.contains(what), "{found:?} should say {what:?}");
    assert!(
        found.contains(&format!("; fix: {fix}")),
        "{found:?} should advise {fix:?}"
    );
    assert!(
        run.stderr
            .contains(&format!("error: doctor: 1 check(s) failed: {check}")),
        "{}",
        run.stderr
    );
    assert_eq!(device.state_files(), before, "doctor changed the state");
}

#[test]
fn init_writes_a_config_that_syncs_and_doctor_passes_before_and_after() {
    let Some(s) = Scene::new() else { return };
    let first = s.push("hello {{ device.id }}\n");
    std::fs::create_dir_all(s.device_dir().join("root")).expect("device root");
    let run = agent(&s.init_args(&[]));
    run.assert_ok();
    let key = run.stdout.trim();
    assert!(key.starts_with("ed25519:"), "{}", run.stdout);
    let config = s.device_dir().join("agent.toml");
    let expected = format!(
        "wrote {config}: device gw-1, following refs/heads/main at {url}\n\
         created device key {state}/identity.key (public key above)\n\
         enrollment: the first report presents the token in {token}; or pre-register: \
         shoal-collector register --device-id gw-1 --key {key}\n\
         next: shoal-agent --config {config} doctor, then systemctl enable --now shoal-agent\n",
        config = config.display(),
        url = s.server.url("config.git"),
        state = s.device_dir().join("state").display(),
        token = s.token.display(),
    );
    assert_eq!(run.stderr, expected);
    let state = s.device_dir().join("state");
    let mode = std::fs::metadata(&state)
        .expect("state")
        .permissions()
        .mode();
    assert_eq!(mode & 0o777, 0o700, "the state dir is the owner's only");
    let device = Device::at(s.device_dir());

    // Before the first sync: the server has the ref, the tip is not fetched, the device is
    // not enrolled but has the token.
    let run = doctor(&device);
    assert_eq!(run.code, 0, "{}", run.stderr);
    assert!(
        line(&run, "git").contains(&format!("has refs/heads/main at {first}")),
        "{}",
        run.stderr
    );
    assert!(line(&run, "trust").contains("is not fetched yet"));
    assert!(line(&run, "collector").contains("is not enrolled yet: its first report enrolls"));
    // Without `[collector] key`, doctor says the collector's halts are not trusted.
    let halts = line(&run, "halts");
    assert!(halts.starts_with("skip"), "{halts}");
    assert!(
        halts.contains("no [collector] key: halts from the collector are not trusted"),
        "{halts}"
    );
    assert!(line(&run, "systemd").starts_with("skip"));

    device.sync().expect(0, "report: 1 delivered");
    assert_eq!(device.applied().as_deref(), Some(first.as_str()));
    assert_eq!(
        std::fs::read_to_string(s.device_dir().join("root/etc/motd")).expect("motd"),
        "hello gw-1\n"
    );
    let before = device.state_files();
    let run = device.agent(&["doctor", "--no-unit", "--json"]);
    assert_eq!(run.code, 0, "{}", run.stderr);
    let report: serde_json::Value = serde_json::from_str(&run.stdout).expect("doctor --json");
    assert_eq!(report["ok"], true, "{report}");
    let checks = report["checks"].as_array().expect("checks");
    let names: Vec<&str> = checks
        .iter()
        .map(|c| c["check"].as_str().unwrap())
        .collect();
    assert_eq!(
        names,
        [
            "config",
            "state_dir",
            "root",
            "clock",
            "git",
            "trust",
            "collector",
            "halts",
            "systemd"
        ]
    );
    let detail = |name: &str| {
        checks.iter().find(|c| c["check"] == name).unwrap()["detail"]
            .as_str()
            .unwrap()
            .to_owned()
    };
    assert!(
        detail("trust").ends_with(&format!("the tip {first} is signed by operator@example")),
        "{report}"
    );
    assert!(
        detail("collector").contains(&format!("has this device's key {key} pinned to \"gw-1\"")),
        "{report}"
    );
    assert!(detail("clock").contains("is not before"), "{report}");
    assert_eq!(device.state_files(), before, "doctor writes nothing");
}

#[test]
fn init_refuses_bad_input_and_leaves_what_exists() {
    let Some(s) = Scene::new() else { return };
    s.push("hello\n");
    let config = s.device_dir().join("agent.toml");
    let state = s.device_dir().join("state");
    // Each refusal: exit 2, the message, and neither a config nor a state dir left behind.
    let refused = |extra: &[&str], replace: Option<(&str, &str)>, message: &str| {
        let mut args = s.init_args(extra);
        if let Some((flag, value)) = replace {
            let at = args.iter().position(|a| a == flag).expect("flag") + 1;
            args[at] = value.to_owned();
        }
        let run = agent(&args);
        assert_eq!(run.code, 2, "{}", run.stderr);
        assert!(
            run.stderr.contains(message),
            "{:?} should contain {message:?}",
            run.stderr
        );
        assert!(!config.exists(), "{message}: a config was written");
        assert!(!state.exists(), "{message}: a state dir was made");
    };
    let missing = s.dir.path().join("no-such-signers");
    refused(
        &[],
        Some(("--allowed-signers", missing.to_str().unwrap())),
        &format!(
            "error: the trust file given by --allowed-signers cannot be used: cannot load the trust policy: could not read {}: No such file or directory",
            missing.display()
        ),
    );
    refused(
        &[],
        Some(("--ref", "main")),
        &format!(
            "error: the config init would write is not valid, so nothing was written: {}: `source.ref` must be a full ref name such as \"refs/heads/production\"",
            config.display()
        ),
    );
    let empty = s.dir.path().join("empty-token");
    std::fs::write(&empty, "\n").expect("empty token");
    refused(
        &[],
        Some(("--enroll-token-file", empty.to_str().unwrap())),
        &format!(
            "error: the enrollment token file {} is empty; put the collector's enrollment token in it",
            empty.display()
        ),
    );
    refused(
        &["--environment", "production"],
        None,
        "the argument '--ref <REF>' cannot be used with '--environment <ENVIRONMENT>'",
    );
    refused(
        &["--label", "gateway"],
        None,
        "\"gateway\" is not a label; write name=value, e.g. role=gateway",
    );

    // An existing config is kept unless --force; with it, replaced, and the key kept.
    let device = s.init();
    let written = std::fs::read(&config).expect("config");
    let key = std::fs::read(state.join("identity.key")).expect("key");
    let run = agent(&s.init_args(&[]));
    assert_eq!(run.code, 2, "{}", run.stderr);
    assert_eq!(
        run.stderr,
        format!(
            "error: {} already exists; pass --force to replace it (or edit it, or pick another --config PATH)\n",
            config.display()
        )
    );
    assert_eq!(std::fs::read(&config).expect("config"), written);
    let run = agent(&s.init_args(&["--label", "site=berlin", "--force"]));
    run.assert_ok();
    assert!(run
        .stderr
        .starts_with(&format!("replaced {}", config.display())));
    assert!(run.stderr.contains("kept the existing device key"));
    assert_eq!(std::fs::read(state.join("identity.key")).expect("key"), key);
    let text = std::fs::read_to_string(&config).expect("config");
    assert!(text.contains("site = \"berlin\""), "{text}");
    device.sync().assert_ok();
}

#[test]
fn doctor_names_a_trust_file_without_the_signers_key() {
    let Some(s) = Scene::new() else { return };
    let first = s.push("hello\n");
    let device = s.init();
    device.sync().assert_ok();
    let stranger = SigningKey::generate(s.dir.path().join("stranger"), "stranger");
    write_allowed_signers(&s.signers, &[("stranger@example", &stranger)]);
    fails_only(
        &device,
        "trust",
        &first,
        "put the key that signs the config repository in [trust] allowed_signers",
    );
}

#[test]
fn doctor_names_an_unreachable_server_and_a_missing_ref() {
    let Some(mut s) = Scene::new() else { return };
    s.push("hello\n");
    let device = s.init();
    device.sync().assert_ok();
    let config = s.device_dir().join("agent.toml");
    let text = std::fs::read_to_string(&config).expect("config");
    std::fs::write(&config, text.replace("refs/heads/main", "refs/heads/nope")).expect("config");
    fails_only(
        &device,
        "git",
        &format!(
            "the config repository {} has no ref refs/heads/nope",
            s.server.url("config.git")
        ),
        "push the branch (or publish the release) on the server, or correct [source] ref / environment",
    );
    std::fs::write(&config, &text).expect("config");
    s.server.stop();
    fails_only(
        &device,
        "git",
        &format!(
            "cannot reach the config repository {} after 1 attempt(s)",
            s.server.url("config.git")
        ),
        "check the device's network, [source] url, and that the git server runs",
    );
}

#[test]
fn doctor_names_a_clock_behind_the_applied_commit() {
    let Some(s) = Scene::new() else { return };
    s.push("hello\n");
    let device = s.init();
    device.sync().assert_ok();
    // A commit dated 2100: applied like any other, but a clock before it is wrong.
    s.repo.write("files/motd", "from the future\n");
    let future = s.repo.commit_signed_at(&s.key, "future", 4_102_444_800);
    s.publish();
    device.sync().assert_ok();
    fails_only(
        &device,
        "clock",
        &format!("before the applied commit {future} was committed (2100-01-01T00:00:00Z)"),
        "set the clock",
    );
}

#[test]
fn doctor_names_a_state_dir_others_can_open_or_nobody_can_write() {
    let Some(s) = Scene::new() else { return };
    s.push("hello\n");
    let device = s.init();
    device.sync().assert_ok();
    let state = s.device_dir().join("state");
    std::fs::set_permissions(&state, std::fs::Permissions::from_mode(0o755)).expect("chmod");
    fails_only(
        &device,
        "state_dir",
        &format!("{} has mode 0755", state.display()),
        &format!("chmod 0700 {}", state.display()),
    );
    std::fs::set_permissions(&state, std::fs::Permissions::from_mode(0o700)).expect("chmod");
    if !require_root("a read-only bind mount of the state directory") {
        return;
    }
    let _read_only = Mount::read_only(&state);
    fails_only(
        &device,
        "state_dir",
        &format!("{} is not writable: Read-only file system", state.display()),
        "make",
    );
}

#[test]
fn doctor_names_a_device_the_collector_does_not_know() {
    let Some(s) = Scene::new() else { return };
    s.push("hello\n");
    std::fs::create_dir_all(s.device_dir().join("root")).expect("root");
    // No enrollment token: the key must be registered, and it is not.
    let mut args = s.init_args(&[]);
    args.truncate(args.len() - 2);
    let run = agent(&args);
    run.assert_ok();
    let key = run.stdout.trim().to_owned();
    assert!(
        run.stderr.contains(&format!(
            "enrollment: on the collector, shoal-collector register --device-id gw-1 --key {key}"
        )),
        "{}",
        run.stderr
    );
    let device = Device::at(s.device_dir());
    fails_only(
        &device,
        "collector",
        &format!(
            "the collector at {} has no key pinned to device \"gw-1\", and no enrollment token is configured",
            s.collector.url()
        ),
        &format!("on the collector: `shoal-collector register --device-id gw-1 --key {key}`"),
    );
}

/// A root that is missing, is a file, that another user owns or may write, or is read-only: a
/// sync would fail on the first file, or write where someone else can put links, so doctor
/// names it (and only it).
#[test]
fn doctor_names_a_root_that_is_missing_not_a_directory_not_ours_or_read_only() {
    let Some(s) = Scene::new() else { return };
    s.push("hello\n");
    let device = s.init();
    device.sync().assert_ok();
    let root = s.device_dir().join("root");
    let aside = s.device_dir().join("root.aside");
    std::fs::rename(&root, &aside).expect("move the root aside");
    fails_only(
        &device,
        "root",
        &format!("the root {} does not exist", root.display()),
        &format!(
            "correct `root` in the config, or create the directory (`install -d {}`)",
            root.display()
        ),
    );
    std::fs::write(&root, "not a directory\n").expect("a file at the root");
    fails_only(
        &device,
        "root",
        &format!("the root {} is not a directory", root.display()),
        "correct `root` in the config",
    );
    std::fs::remove_file(&root).expect("rm");
    std::fs::rename(&aside, &root).expect("move the root back");
    let run = doctor(&device);
    assert!(line(&run, "root").starts_with("ok"), "{}", run.stderr);
    // A root others may write: they could put links where the agent writes.
    std::fs::set_permissions(&root, std::fs::Permissions::from_mode(0o777)).expect("chmod");
    fails_only(
        &device,
        "root",
        &format!("the root {} has mode 0777", root.display()),
        &format!("chmod go-w {}", root.display()),
    );
    std::fs::set_permissions(&root, std::fs::Permissions::from_mode(0o755)).expect("chmod");
    if !require_root("a root owned by another user, a read-only bind mount of the device root") {
        return;
    }
    // A root another (unprivileged) user owns.
    std::os::unix::fs::chown(&root, Some(65534), None).expect("chown nobody");
    fails_only(
        &device,
        "root",
        &format!(
            "the root {} is owned by uid 65534, neither root nor the agent's user",
            root.display()
        ),
        &format!("chown root {}", root.display()),
    );
    std::os::unix::fs::chown(&root, Some(0), None).expect("chown root");
    let _read_only = Mount::read_only(&root);
    fails_only(
        &device,
        "root",
        &format!(
            "the root {} is not writable: Read-only file system",
            root.display()
        ),
        "make",
    );
}

#[test]
fn doctor_on_a_config_that_does_not_load_says_so_and_checks_what_it_can() {
    let Some(s) = Scene::new() else { return };
    let device = s.init();
    let config = s.device_dir().join("agent.toml");
    let text = std::fs::read_to_string(&config).expect("config");
    std::fs::write(
        &config,
        text.replace("[source]", "[source]\nintervall = \"5s\""),
    )
    .expect("w");
    let run = doctor(&device);
    assert_eq!(run.code, 1);
    let found = line(&run, "config");
    assert!(
        found.starts_with(&format!(
            "FAIL config    {}: TOML parse error",
            config.display()
        )),
        "{found}"
    );
    assert!(found.contains("unknown field `intervall`"), "{found}");
    assert!(found.ends_with("; fix: correct the file as the message says, or write a new one with `shoal-agent init --force ...`"));
    assert!(line(&run, "git").starts_with("skip"), "{}", run.stderr);
}
