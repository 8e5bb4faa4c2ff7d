//! The Debian packages (`scripts/package.sh`) with real dpkg in a real systemd guest: README's
//! "Installing on a host" run as written — `apt install ./shoal-agent_*.deb`, `shoal-agent init`,
//! `shoal-agent doctor`, `systemctl enable --now shoal-agent` — against the harness's HTTPS git
//! server and collector across a veth link. Installed, the unit is present and inactive until a
//! config exists; enabled, the device converges; an upgrade keeps the config, the conffile the
//! operator edited and the generations; `dpkg --purge` removes the agent, its state and its
//! config. The collector's package makes its system user and installs its hardened unit, not
//! started; with its token files written as its unit says, `systemctl start shoal-collector`
//! serves `/healthz`, and the installed agent, pointed at it with `shoal-agent init --force`,
//! reports to it and is listed by `/api/v1/devices`; purge removes its store. The arm64 and armhf
//! packages hold the aarch64 and armv7 agents, which run under qemu-user (`--version`, `init`,
//! `doctor --json`, a signed `sync`).

use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use shoal_e2e::{
    collector_bin, gateway_config, output, require_tools, run, static_agent_bin,
    write_allowed_signers, CollectorSpec, ConfigRepo, HttpsGitServer, Hub, Sandbox, SigningKey,
    SystemdHost, TestCa, HUB_IP,
};

const ENROLL_TOKEN: &str = "enroll-packages-5b2e7c";
/// The packaged collector's read token (`/etc/shoal/collector-read-tokens`).
const READ_TOKEN: &str = "read-packages-0f3a9d71c2";
/// Where the packaged collector listens in the guest (its unit's default, plain HTTP).
const GUEST_COLLECTOR: &str = "http://127.0.0.1:8443";

fn workspace() -> &'static Path {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("the e2e crate lives one level below the workspace root")
}

/// `<target>` of this test (`<target>/<profile>/deps/<test>`).
fn target_dir() -> PathBuf {
    std::env::current_exe()
        .expect("the test knows its own executable")
        .ancestors()
        .nth(3)
        .expect("the test runs from <target>/<profile>/deps")
        .to_path_buf()
}

/// `scripts/package.sh ARCH AGENT [COLLECTOR]` with `VERSION`, into `out`; the files it made.
fn package(arch: &str, agent: &Path, collector: Option<&Path>, version: &str, out: &Path) {
    let mut cmd = Command::new("bash");
    cmd.arg(workspace().join("scripts/package.sh"))
        .arg(arch)
        .arg(agent);
    if let Some(collector) = collector {
        cmd.arg(collector);
    }
    cmd.env("VERSION", version)
        .env("OUT", out)
        .env("CARGO_TARGET_DIR", target_dir())
        // The debug collector is large; xz would take a minute for nothing.
        .env("DEB_COMPRESSION", "gzip")
        // lintian is run on the release packages below, not on a debug collector.
        .env("LINTIAN", "0");
    run(&mut cmd);
}

/// The paths in a package, from `dpkg-deb -c`.
fn contents(deb: &Path) -> Vec<String> {
    run(Command::new("dpkg-deb").arg("-c").arg(deb))
        .lines()
        .filter_map(|l| l.split_whitespace().last())
        .map(|p| p.trim_start_matches('.').to_owned())
        .collect()
}

/// Runs `args` in the guest; (exit code, stdout, stderr).
fn guest(host: &SystemdHost, args: &[&str]) -> (i32, String, String) {
    let out = host.exec(args);
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

/// Runs `args` in the guest and panics unless it succeeds; its stdout.
fn guest_ok(host: &SystemdHost, args: &[&str]) -> String {
    let (code, stdout, stderr) = guest(host, args);
    assert_eq!(
        code,
        0,
        "{} failed in the guest:\n{stdout}\n{stderr}",
        args.join(" ")
    );
    stdout
}

/// `curl URL` in the guest with the read token, retried until it answers 200 (90 s at most);
/// the body.
fn guest_get(host: &SystemdHost, path: &str) -> String {
    let url = format!("{GUEST_COLLECTOR}{path}");
    let bearer = format!("Authorization: Bearer {READ_TOKEN}");
    let deadline = Instant::now() + Duration::from_secs(90);
    loop {
        let (code, stdout, stderr) = guest(host, &["curl", "-fsS", "-H", &bearer, &url]);
        if code == 0 {
            return stdout;
        }
        assert!(
            Instant::now() < deadline,
            "{url} did not answer within 90 s: {stderr}
journal:
{}",
            guest(host, &["journalctl", "-u", "shoal-collector", "--no-pager"]).1
        );
        std::thread::sleep(Duration::from_millis(500));
    }
}

/// Waits until the guest's agent has applied `commit` (`shoal-agent status --json`).
fn wait_applied(host: &SystemdHost, commit: &str) {
    let deadline = Instant::now() + Duration::from_secs(90);
    loop {
        let (_, stdout, _) = guest(host, &["shoal-agent", "status", "--json"]);
        let applied = serde_json::from_str::<serde_json::Value>(&stdout)
            .ok()
            .and_then(|s| s["applied_commit"].as_str().map(str::to_owned));
        if applied.as_deref() == Some(commit) {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "the agent did not apply {commit} within 90 s; status: {stdout}\njournal:\n{}",
            guest(host, &["journalctl", "-u", "shoal-agent", "--no-pager"]).1
        );
        std::thread::sleep(Duration::from_millis(500));
    }
}

#[test]
fn install_init_doctor_enable_converges_upgrade_keeps_state_and_purge_cleans_up() {
    if !require_tools(&[
        "git",
        "ssh-keygen",
        "dpkg-deb",
        "ip",
        "nsenter",
        "unshare",
        "curl",
    ]) {
        return;
    }
    let work = tempfile::tempdir().expect("tempdir");
    let agent = static_agent_bin();
    let collector = collector_bin();
    let (v1, v2) = (work.path().join("v1"), work.path().join("v2"));
    package("amd64", &agent, Some(&collector), "0.1.0-1", &v1);
    package("amd64", &agent, Some(&collector), "0.1.0-2", &v2);
    let deb = |dir: &Path, pkg: &str, version: &str| dir.join(format!("{pkg}_{version}_amd64.deb"));
    let agent_deb = deb(&v1, "shoal-agent", "0.1.0-1");
    let files = contents(&agent_deb);
    for path in [
        "/usr/bin/shoal-agent",
        "/lib/systemd/system/shoal-agent.service",
        "/etc/shoal/agent.toml.example",
        "/usr/share/man/man1/shoal-agent.1.gz",
        "/usr/share/man/man1/shoal-agent-init.1.gz",
        "/usr/share/man/man1/shoal-agent-doctor.1.gz",
        "/usr/share/bash-completion/completions/shoal-agent",
        "/usr/share/zsh/vendor-completions/_shoal-agent",
        "/usr/share/fish/vendor_completions.d/shoal-agent.fish",
        "/usr/share/doc/shoal-agent/copyright",
    ] {
        assert!(files.iter().any(|f| f == path), "{path} not in {files:?}");
    }
    let sums = std::fs::read_to_string(v1.join("SHA256SUMS")).expect("SHA256SUMS");
    for name in [
        "shoal-agent_0.1.0-1_amd64.deb",
        "shoal-collector_0.1.0-1_amd64.deb",
        "shoal-0.1.0-x86_64-unknown-linux-musl.tar.gz",
    ] {
        assert!(sums.contains(&format!("  {name}\n")), "{name}: {sums}");
    }
    run(Command::new("sha256sum")
        .arg("-c")
        .arg("SHA256SUMS")
        .current_dir(&v1));

    // The fleet side: a signed repository on the HTTPS git server and the collector, in the hub.
    let Some(hub) = Hub::create() else { return };
    let key = SigningKey::generate(work.path().join("keys"), "operator");
    let repo = ConfigRepo::init(work.path().join("repo"));
    let srv = work.path().join("srv");
    std::fs::create_dir_all(&srv).expect("srv");
    let ca = TestCa::for_names(&[&HUB_IP.to_string()]);
    let git = HttpsGitServer::start_in_netns(&srv, &hub.netns(), (HUB_IP, 0).into(), ca);
    let tokens = work.path().join("enroll-tokens");
    std::fs::write(&tokens, format!("{ENROLL_TOKEN}\n")).expect("tokens");
    let fleet_collector = CollectorSpec {
        data: work.path().join("collector-data"),
        enroll_token_file: tokens,
        listen: format!("{HUB_IP}:0"),
        tls: Some(git.ca()),
        hub: Some(&hub),
    }
    .start();
    let push = |motd: &str| {
        for (path, content) in gateway_config(motd) {
            repo.write(path, content);
        }
        let id = repo.commit_signed(&key, motd.trim());
        repo.publish_to(srv.join("config.git"));
        id
    };
    let first = push("hello {{ device.id }}\n");

    let Some(host) = SystemdHost::boot() else {
        return;
    };
    hub.attach(&host, 1);
    let here = |p: &str| host.root().join(p.trim_start_matches('/'));
    std::fs::create_dir_all(here("/root/pkgs")).expect("pkgs");
    for (dir, version) in [(&v1, "0.1.0-1"), (&v2, "0.1.0-2")] {
        for pkg in ["shoal-agent", "shoal-collector"] {
            std::fs::copy(
                deb(dir, pkg, version),
                here(&format!("/root/pkgs/{pkg}_{version}_amd64.deb")),
            )
            .expect("copy the package into the guest");
        }
    }

    // A build container's /usr/sbin/policy-rc.d (exit 101: "start no service") would reach the
    // guest through its overlay and stop the maintainer scripts' deb-systemd-invoke; a host
    // that runs services has none. Removed in the guest's overlay only.
    let _ = std::fs::remove_file(here("/usr/sbin/policy-rc.d"));

    // 1. apt install: the unit is there, not enabled, and does not start without a config.
    guest_ok(
        &host,
        &[
            "sh",
            "-c",
            "cd /root/pkgs && apt-get install -y -q ./shoal-agent_0.1.0-1_amd64.deb",
        ],
    );
    assert_eq!(host.show("shoal-agent.service", "LoadState"), "loaded");
    assert_eq!(
        host.show("shoal-agent.service", "UnitFileState"),
        "disabled"
    );
    assert_eq!(host.show("shoal-agent.service", "ActiveState"), "inactive");
    host.systemctl(&["start", "shoal-agent.service"]);
    assert_eq!(
        host.show("shoal-agent.service", "ConditionResult"),
        "no",
        "no config: the start is skipped"
    );
    assert_eq!(host.show("shoal-agent.service", "ActiveState"), "inactive");
    assert_eq!(
        guest_ok(&host, &["stat", "-c", "%a", "/var/lib/shoal"]).trim(),
        "700"
    );
    assert!(here("/usr/share/man/man1/shoal-agent-init.1.gz").is_file());

    // 2. The operator's files, then `shoal-agent init` and `shoal-agent doctor`.
    std::fs::create_dir_all(here("/etc/shoal")).expect("/etc/shoal");
    write_allowed_signers(
        here("/etc/shoal/allowed_signers"),
        &[("operator@example", &key)],
    );
    std::fs::copy(git.ca_pem_path(), here("/etc/shoal/ca.pem")).expect("ca");
    std::fs::write(here("/etc/shoal/enroll-token"), ENROLL_TOKEN).expect("token");
    let git_url = git.url("config.git");
    let collector_url = fleet_collector.url().to_owned();
    let init = [
        "shoal-agent",
        "init",
        "--url",
        &git_url,
        "--ref",
        "refs/heads/main",
        "--ca-file",
        "/etc/shoal/ca.pem",
        "--allowed-signers",
        "/etc/shoal/allowed_signers",
        "--device-id",
        "gw-1",
        "--label",
        "role=gateway",
        "--collector",
        &collector_url,
        "--collector-ca",
        "/etc/shoal/ca.pem",
        "--enroll-token-file",
        "/etc/shoal/enroll-token",
    ];
    let (code, key_id, stderr) = guest(&host, &init);
    assert_eq!(code, 0, "{stderr}");
    assert!(key_id.starts_with("ed25519:"), "{key_id}");
    assert!(
        stderr.ends_with("next: shoal-agent doctor, then systemctl enable --now shoal-agent\n"),
        "{stderr}"
    );
    // Before the unit is enabled, doctor says so, and only that.
    let (code, _, stderr) = guest(&host, &["shoal-agent", "doctor"]);
    assert_eq!(code, 1, "{stderr}");
    let failing: Vec<&str> = stderr.lines().filter(|l| l.starts_with("FAIL")).collect();
    assert_eq!(
        failing,
        ["FAIL systemd   the unit shoal-agent.service is installed but not enabled (UnitFileState=disabled), so the agent does not run at boot; fix: systemctl enable --now shoal-agent.service"],
        "{stderr}"
    );

    // 3. systemctl enable --now: the device converges and reports; doctor passes.
    host.systemctl(&["enable", "--now", "shoal-agent"]);
    wait_applied(&host, &first);
    assert_eq!(
        std::fs::read_to_string(here("/etc/motd")).expect("motd"),
        "hello gw-1\n"
    );
    let (code, _, stderr) = guest(&host, &["shoal-agent", "doctor"]);
    assert_eq!(code, 0, "{stderr}");
    assert!(stderr.contains("ok   systemd   shoal-agent.service is installed and enabled (active)"));
    let seen = fleet_collector.get("/api/v1/devices/gw-1");
    assert_eq!(seen["commit"], first.as_str(), "{seen}");

    // 4. Upgrade: the config, an edited conffile, the state and the enabled unit are kept.
    let config = std::fs::read(here("/etc/shoal/agent.toml")).expect("agent.toml");
    let edited = "# the operator's own notes\n";
    std::fs::write(here("/etc/shoal/agent.toml.example"), edited).expect("edit the example");
    guest_ok(
        &host,
        &["dpkg", "-i", "/root/pkgs/shoal-agent_0.1.0-2_amd64.deb"],
    );
    assert_eq!(
        guest_ok(
            &host,
            &["dpkg-query", "-W", "-f", "${Version}", "shoal-agent"]
        ),
        "0.1.0-2"
    );
    assert_eq!(
        std::fs::read(here("/etc/shoal/agent.toml")).expect("agent.toml"),
        config
    );
    assert_eq!(
        std::fs::read_to_string(here("/etc/shoal/agent.toml.example")).expect("example"),
        edited,
        "a conffile the operator changed is kept"
    );
    assert_eq!(host.show("shoal-agent.service", "UnitFileState"), "enabled");
    assert_eq!(host.show("shoal-agent.service", "ActiveState"), "active");
    let second = push("welcome to {{ device.id }}\n");
    host.systemctl(&["reload", "shoal-agent"]);
    wait_applied(&host, &second);
    let history = guest_ok(&host, &["shoal-agent", "history", "--json"]);
    let history: serde_json::Value = serde_json::from_str(&history).expect("history --json");
    let commits: Vec<&str> = history
        .as_array()
        .expect("a list")
        .iter()
        .map(|g| g["commit"].as_str().expect("commit"))
        .collect();
    assert_eq!(
        commits,
        [first.as_str(), second.as_str()],
        "generations kept"
    );

    // 5. The collector's package beside it: installed, not started before its token files
    // exist; then the token files as its unit's comments say, `systemctl start`, and the agent
    // (the same installed one, same key) pointed at it by `shoal-agent init --force`.
    guest_ok(
        &host,
        &["dpkg", "-i", "/root/pkgs/shoal-collector_0.1.0-1_amd64.deb"],
    );
    assert!(
        guest_ok(&host, &["getent", "passwd", "shoal-collector"]).starts_with("shoal-collector:")
    );
    assert_eq!(host.show("shoal-collector.service", "LoadState"), "loaded");
    assert_eq!(
        host.show("shoal-collector.service", "User"),
        "shoal-collector"
    );
    assert_eq!(
        host.show("shoal-collector.service", "ActiveState"),
        "inactive",
        "not started before its token files exist"
    );
    for (file, token) in [
        ("collector-read-tokens", READ_TOKEN),
        ("collector-enroll-tokens", ENROLL_TOKEN),
    ] {
        let path = here(&format!("/etc/shoal/{file}"));
        std::fs::write(&path, format!("{token}\n")).expect("a token file");
        // root's alone: systemd hands the content to the service (LoadCredential=).
        std::fs::set_permissions(&path, std::os::unix::fs::PermissionsExt::from_mode(0o600))
            .expect("chmod");
    }
    host.systemctl(&["start", "shoal-collector"]);
    assert_eq!(guest_get(&host, "/healthz").trim(), "ok");
    assert_eq!(
        host.show("shoal-collector.service", "ActiveState"),
        "active"
    );
    let (code, _, stderr) = guest(
        &host,
        &[
            "shoal-agent",
            "init",
            "--force",
            "--url",
            &git_url,
            "--ref",
            "refs/heads/main",
            "--ca-file",
            "/etc/shoal/ca.pem",
            "--allowed-signers",
            "/etc/shoal/allowed_signers",
            "--device-id",
            "gw-1",
            "--label",
            "role=gateway",
            "--collector",
            GUEST_COLLECTOR,
            "--enroll-token-file",
            "/etc/shoal/enroll-token",
        ],
    );
    assert_eq!(code, 0, "{stderr}");
    host.systemctl(&["restart", "shoal-agent"]);
    let deadline = Instant::now() + Duration::from_secs(90);
    let device = loop {
        let devices: serde_json::Value =
            serde_json::from_str(&guest_get(&host, "/api/v1/devices")).expect("devices JSON");
        let found = devices["devices"]
            .as_array()
            .and_then(|list| list.iter().find(|d| d["device_id"] == "gw-1").cloned());
        if let Some(device) = found {
            break device;
        }
        assert!(
            Instant::now() < deadline,
            "gw-1 never reported to the packaged collector: {devices}\nagent journal:\n{}",
            guest(&host, &["journalctl", "-u", "shoal-agent", "--no-pager"]).1
        );
        std::thread::sleep(Duration::from_millis(500));
    };
    assert_eq!(device["commit"], second.as_str(), "{device}");
    assert_eq!(
        device["key_id"],
        key_id.trim(),
        "the key init made at first"
    );
    // Its store is the unit's StateDirectory, the dynamic user's, under /var/lib/private.
    assert!(here("/var/lib/private/shoal-collector").is_dir());

    // 6. Purge: the agent, its state and its config go; the operator's files and what the
    // agent managed stay.
    guest_ok(&host, &["dpkg", "--purge", "shoal-agent"]);
    assert_eq!(host.show("shoal-agent.service", "LoadState"), "not-found");
    for gone in [
        "/usr/bin/shoal-agent",
        "/var/lib/shoal",
        "/etc/shoal/agent.toml",
        "/etc/shoal/agent.toml.example",
    ] {
        assert!(!here(gone).exists(), "{gone} is still there after purge");
    }
    assert!(here("/etc/shoal/allowed_signers").exists());
    assert_eq!(
        std::fs::read_to_string(here("/etc/motd")).expect("motd"),
        "welcome to gw-1\n"
    );

    // 7. The collector's purge: stopped, its unit, binary and store gone; the operator's token
    // files stay.
    guest_ok(&host, &["dpkg", "--purge", "shoal-collector"]);
    assert_eq!(
        host.show("shoal-collector.service", "LoadState"),
        "not-found"
    );
    let (code, _, _) = guest(
        &host,
        &["curl", "-fsS", &format!("{GUEST_COLLECTOR}/healthz")],
    );
    assert_ne!(code, 0, "the collector still answers after purge");
    for gone in [
        "/usr/bin/shoal-collector",
        "/var/lib/private/shoal-collector",
        "/var/lib/shoal-collector",
    ] {
        assert!(!here(gone).exists(), "{gone} is still there after purge");
    }
    assert!(here("/etc/shoal/collector-read-tokens").exists());
}

/// An ARM package and what proves it: the Debian architecture, the agent's Rust target, the
/// variable naming an agent built already (the build takes minutes), the emulator that runs it
/// and the machine its ELF header names.
struct ArmPackage {
    arch: &'static str,
    triple: &'static str,
    agent_env: &'static str,
    qemu: &'static str,
    elf_machine: &'static str,
}

/// The arm64 package: the aarch64 static agent (`scripts/cross-build.sh`, as the ARM smoke test
/// builds it), which runs under qemu-aarch64-static; and lintian on the release packages.
#[test]
fn the_arm64_package_holds_an_aarch64_agent_that_runs_and_lintian_passes() {
    arm_package(&ArmPackage {
        arch: "arm64",
        triple: "aarch64-unknown-linux-musl",
        agent_env: "SHOAL_ARM64_AGENT_BIN",
        qemu: "qemu-aarch64-static",
        elf_machine: "AArch64",
    });
}

/// The armhf package: the 32-bit ARMv7 hard-float agent (std built from source, see
/// docs/CROSS.md), which runs under qemu-arm-static.
#[test]
fn the_armhf_package_holds_an_armv7_agent_that_runs_and_lintian_passes() {
    arm_package(&ArmPackage {
        arch: "armhf",
        triple: "armv7-unknown-linux-musleabihf",
        agent_env: "SHOAL_ARMHF_AGENT_BIN",
        qemu: "qemu-arm-static",
        elf_machine: "ARM",
    });
}

/// Builds `pkg`'s package from its static agent ($`agent_env`, or `scripts/cross-build.sh`),
/// checks its control file, contents, release tarball and SHA256SUMS, then runs the packaged
/// binary under qemu-user as an operator would on the device: `--version`, `init` against a
/// signed repository (a local path: gix spawns the host's git-upload-pack, which qemu-user
/// execs natively), `doctor --json` (every check it can make passes), and a `sync` that renders
/// and applies the commit; then lintian.
fn arm_package(pkg: &ArmPackage) {
    if !require_tools(&["dpkg-deb", pkg.qemu, "readelf", "python3"]) {
        return;
    }
    let Some(sandbox) = Sandbox::new() else {
        return;
    };
    let agent = match std::env::var_os(pkg.agent_env) {
        Some(path) => PathBuf::from(path),
        None => {
            // One cross build at a time: the arm64 and armhf tests run in parallel, and
            // cross-build.sh installs what is missing (pip, rustup) before it builds.
            static CROSS_BUILD: Mutex<()> = Mutex::new(());
            let _one = CROSS_BUILD.lock().unwrap_or_else(|e| e.into_inner());
            let cross = target_dir().join("cross");
            let mut build = Command::new("bash");
            build
                .arg(workspace().join("scripts/cross-build.sh"))
                .arg(pkg.triple)
                .env("CARGO_TARGET_DIR", &cross);
            run(&mut build);
            cross.join(pkg.triple).join("release/shoal-agent")
        }
    };
    let work = tempfile::tempdir().expect("tempdir");
    let out = work.path().join("out");
    package(pkg.arch, &agent, None, "0.1.0-1", &out);
    let deb = out.join(format!("shoal-agent_0.1.0-1_{}.deb", pkg.arch));
    let control = run(Command::new("dpkg-deb")
        .args(["-f"])
        .arg(&deb)
        .arg("Architecture"));
    assert_eq!(control.trim(), pkg.arch);
    let files = contents(&deb);
    assert!(
        files.iter().any(|f| f == "/usr/bin/shoal-agent"),
        "{files:?}"
    );
    let unpacked = work.path().join("unpacked");
    run(Command::new("dpkg-deb").arg("-x").arg(&deb).arg(&unpacked));
    let binary = unpacked.join("usr/bin/shoal-agent");
    let header = run(Command::new("readelf").arg("-h").arg(&binary));
    let machine = header
        .lines()
        .find_map(|l| l.trim().strip_prefix("Machine:"))
        .map(str::trim);
    assert_eq!(machine, Some(pkg.elf_machine), "{header}");
    let emulated = |args: &[&str]| {
        let mut cmd = Command::new(pkg.qemu);
        cmd.arg(&binary).args(args);
        output(&mut cmd)
    };
    let version = emulated(&["--version"]);
    assert!(version.status.success(), "{version:?}");
    assert_eq!(
        String::from_utf8_lossy(&version.stdout).trim(),
        format!("shoal-agent {}", env!("CARGO_PKG_VERSION"))
    );

    // The packaged agent, emulated, set up and run against a signed repository.
    let commit = sandbox.push(&gateway_config("hello {{ device.id }}\n"), "first");
    let device = work.path().join("device");
    let config = device.join("agent.toml");
    let config_arg = config.display().to_string();
    let url = sandbox.dir.path().join("srv/config.git");
    let signers = sandbox.dir.path().join("allowed_signers");
    let (state, root) = (device.join("state"), device.join("root"));
    // The device's root: `/` on a device, a directory here (0755 whatever the umask: doctor
    // refuses a root others may write).
    std::fs::create_dir_all(&root).expect("device root");
    std::fs::set_permissions(&root, std::os::unix::fs::PermissionsExt::from_mode(0o755))
        .expect("chmod device root");
    let init = emulated(&[
        "--config",
        &config_arg,
        "init",
        "--url",
        &url.display().to_string(),
        "--ref",
        "refs/heads/main",
        "--allowed-signers",
        &signers.display().to_string(),
        "--device-id",
        "arm-1",
        "--label",
        "role=gateway",
        "--state-dir",
        &state.display().to_string(),
        "--root",
        &root.display().to_string(),
    ]);
    let stderr = String::from_utf8_lossy(&init.stderr);
    assert!(init.status.success(), "init: {stderr}");
    assert!(
        String::from_utf8_lossy(&init.stdout).starts_with("ed25519:"),
        "init prints the identity key: {init:?}"
    );
    let doctor = emulated(&["--config", &config_arg, "doctor", "--no-unit", "--json"]);
    let report: serde_json::Value = serde_json::from_slice(&doctor.stdout)
        .unwrap_or_else(|e| panic!("doctor --json: {e}: {doctor:?}"));
    let checks = report["checks"]
        .as_array()
        .unwrap_or_else(|| panic!("doctor --json: no checks in {report:#}"));
    let failed: Vec<_> = checks.iter().filter(|c| c["outcome"] == "fail").collect();
    assert!(failed.is_empty(), "doctor: {failed:#?}");
    assert_eq!(report["ok"], true, "{report:#}");
    let git = checks
        .iter()
        .find(|c| c["check"] == "git")
        .unwrap_or_else(|| panic!("no git check in {report:#}"));
    assert_eq!(git["outcome"], "pass", "{report:#}");
    assert!(
        git["detail"].as_str().is_some_and(|d| d.contains(&commit)),
        "doctor saw the tip over git: {report:#}"
    );
    assert!(doctor.status.success(), "{doctor:?}");
    let sync = emulated(&["--config", &config_arg, "sync"]);
    assert!(sync.status.success(), "sync: {sync:?}");
    assert_eq!(
        std::fs::read_to_string(root.join("etc/motd")).expect("motd"),
        "hello arm-1\n"
    );
    assert_eq!(
        std::fs::read_to_string(root.join("etc/gw/gw.conf")).expect("gw.conf"),
        "gateway=yes\n"
    );

    let tarball = out.join(format!(
        "shoal-{}-{}.tar.gz",
        env!("CARGO_PKG_VERSION"),
        pkg.triple
    ));
    assert!(tarball.is_file(), "{}", tarball.display());
    run(Command::new("sha256sum")
        .arg("-c")
        .arg("SHA256SUMS")
        .current_dir(&out));

    // lintian on the release package (the x86 one carries a debug collector: not checked).
    if require_tools(&["lintian"]) {
        let lint = output(
            Command::new("lintian")
                .args(["--fail-on", "error,warning", "--suppress-tags-from-file"])
                .arg(workspace().join("packaging/lintian-overrides"))
                .arg(&deb),
        );
        assert!(
            lint.status.success(),
            "lintian:\n{}{}",
            String::from_utf8_lossy(&lint.stdout),
            String::from_utf8_lossy(&lint.stderr)
        );
    }
}
