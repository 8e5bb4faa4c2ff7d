//! Snapshots of what the real `shoal-agent` tells an operator: `render`, `verify`, `sync
//! --dry-run`, `sync`, `status`, `history` (human and `--json`) and the text of every refusal
//! (signatures, history, config, the state lock, a private repository's credential, its deploy
//! key and pinned host key, a proxy, a client certificate).
//! The snapshots live in `tests/tests/snapshots/`; a change of wording fails here until the new
//! text is reviewed (`cargo insta review`, or `INSTA_UPDATE=always` and read the diff).

use std::os::unix::fs::PermissionsExt;
use std::path::Path;

use shoal_e2e::{
    gateway_config, Device, ForwardProxy, HttpsGitServer, Run, Sandbox, SigningKey, SshServer,
    Transcript, GATEWAY_MANIFEST,
};

/// Values no name covers: times, durations, fingerprints and keys made fresh by each run.
fn check(snapshot: &str, transcript: &Transcript) {
    let mut settings = insta::Settings::clone_current();
    settings.set_prepend_module_to_snapshot(false);
    settings.set_omit_expression(true);
    for (pattern, name) in [
        (
            r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d(\.\d+)?(Z|[+-]\d\d:\d\d)",
            "[TIME]",
        ),
        (r"\b1\d{9}\b", "[UNIX_TIME]"),
        (r"\(\d+ days? ago", "([AGE] ago"),
        (r#""(\w+_ms)": \d+"#, "\"$1\": [MS]"),
        (r"\b\d+(\.\d+)?\s?(ns|µs|us|ms|s)\b", "[DURATION]"),
        (r"SHA256:[A-Za-z0-9+/]{43}", "SHA256:[FINGERPRINT]"),
        (r"ssh-ed25519 AAAA[A-Za-z0-9+/=]+", "ssh-ed25519 [KEY]"),
        (r"127\.0\.0\.1:\d+", "127.0.0.1:[PORT]"),
        (r"\b[0-9a-f]{40}\b", "[UNNAMED_COMMIT]"),
    ] {
        settings.add_filter(pattern, name);
    }
    settings.bind(|| insta::assert_snapshot!(snapshot, transcript.text()));
}

/// A sandbox with the operator's first commit (`[first]`) published and named.
fn scene() -> Option<(Sandbox, Transcript, String)> {
    let s = Sandbox::new()?;
    let mut t = Transcript::new();
    t.name(s.dir.path().display().to_string(), "SANDBOX");
    let first = s.push(&gateway_config("hello {{ device.id }}\n"), "first");
    t.name(&first, "first");
    Some((s, t, first))
}

/// Runs `shoal-agent ARGS` on the sandbox's device and records it.
fn agent(s: &Sandbox, t: &mut Transcript, args: &[&str]) -> Run {
    let run = s.device.agent(args);
    t.record(args, &run);
    run
}

#[test]
fn render_shows_each_file_a_device_gets() {
    let Some((s, mut t, _)) = scene() else { return };
    let repo = s.repo.path().display().to_string();
    for json in [false, true] {
        let mut args = vec![
            "render",
            &repo,
            "--device-id",
            "gw-1",
            "--label",
            "role=gateway",
        ];
        if json {
            args.push("--json");
        }
        agent(&s, &mut t, &args);
    }
    check("render", &t);
}

#[test]
fn verify_names_the_signer() {
    let Some((s, mut t, _)) = scene() else { return };
    let repo = s.repo.path().display().to_string();
    let signers = s.dir.path().join("allowed_signers").display().to_string();
    agent(
        &s,
        &mut t,
        &["verify", &repo, "--allowed-signers", &signers],
    );
    agent(
        &s,
        &mut t,
        &["verify", &repo, "--allowed-signers", &signers, "--json"],
    );
    check("verify", &t);
}

#[test]
fn sync_dry_run_then_sync_then_status_and_history() {
    let Some((s, mut t, _)) = scene() else { return };
    agent(&s, &mut t, &["sync", "--dry-run"]);
    agent(&s, &mut t, &["sync", "--dry-run", "--json"]);
    check("sync_dry_run_first", &t);

    let mut t = Transcript::new();
    t.name(s.dir.path().display().to_string(), "SANDBOX");
    t.name(s.repo.head(), "first");
    agent(&s, &mut t, &["sync"]).assert_ok();
    let second = s.push(&gateway_config("welcome to {{ device.id }}\n"), "second");
    t.name(&second, "second");
    agent(&s, &mut t, &["sync", "--dry-run"]);
    agent(&s, &mut t, &["sync", "--dry-run", "--json"]);
    agent(&s, &mut t, &["sync"]).assert_ok();
    agent(&s, &mut t, &["sync"]).assert_ok();
    check("sync", &t);

    let mut t = Transcript::new();
    t.name(s.dir.path().display().to_string(), "SANDBOX");
    t.name(&second, "second");
    agent(&s, &mut t, &["status"]);
    agent(&s, &mut t, &["status", "--json"]);
    check("status", &t);

    let mut t = Transcript::new();
    t.name(s.dir.path().display().to_string(), "SANDBOX");
    t.name(s.repo.git(&["rev-parse", "HEAD~1"]), "first");
    t.name(&second, "second");
    agent(&s, &mut t, &["history"]);
    agent(&s, &mut t, &["history", "--json"]);
    check("history", &t);
}

/// Environment mode: a release applied, then shown by status and history; a release of another
/// environment refused; an expired release reported stale; and `verify --release`.
#[test]
fn environment_mode_releases_status_history_refusal_and_stale() {
    let Some((s, mut t, first)) = scene() else {
        return;
    };
    s.device.follow_environment("production");
    let bare = s.dir.path().join("srv/config.git");
    let release = |name: &str, commit: &str, expires: &str| {
        let message = format!("Release {name}\n\nExpires: {expires}");
        let tag = s
            .repo
            .tag_signed(&s.key, name, commit, &message, Some(1_700_000_000));
        s.repo.publish_ref(
            &bare,
            &format!("refs/tags/{name}"),
            "refs/shoal/releases/production",
        );
        tag
    };
    let tag = release("production/1", &first, "2099-01-01T00:00:00Z");
    t.name(&tag, "production/1 tag");
    agent(&s, &mut t, &["sync"]).assert_ok();
    agent(&s, &mut t, &["status"]);
    agent(&s, &mut t, &["history"]);
    let repo = bare.display().to_string();
    let signers = s.dir.path().join("allowed_signers").display().to_string();
    let verify = [
        "verify",
        &repo,
        "--release",
        "refs/shoal/releases/production",
        "--allowed-signers",
        &signers,
    ];
    agent(&s, &mut t, &verify).assert_ok();
    agent(&s, &mut t, &[&verify[..], &["--json"]].concat()).assert_ok();

    let second = s.push(&gateway_config("second\n"), "second");
    t.name(&second, "second");
    let tag = release("staging/2", &second, "2099-01-01T00:00:00Z");
    t.name(&tag, "staging/2 tag");
    assert_eq!(agent(&s, &mut t, &["sync"]).code, 1);
    let tag = release("production/2", &second, "2020-01-01T00:00:00Z");
    t.name(&tag, "production/2 tag");
    assert_eq!(agent(&s, &mut t, &["sync"]).code, 1);
    agent(&s, &mut t, &["status", "--json"]);
    check("environment_mode", &t);
}

/// The device at `[first]`, then `make` publishes a tip it must refuse; the transcript of the
/// refusal, the tip named `[refused]`.
fn refusal(snapshot: &str, make: impl FnOnce(&Sandbox, &mut Transcript) -> String) {
    let Some((s, mut t, _)) = scene() else { return };
    s.device.sync().assert_ok();
    let refused = make(&s, &mut t);
    t.name(&refused, "refused");
    s.publish();
    let run = agent(&s, &mut t, &["sync"]);
    assert_ne!(run.code, 0, "{snapshot}: the tip was accepted");
    check(snapshot, &t);
}

#[test]
fn refusal_unsigned_commit() {
    refusal("refusal_unsigned", |s, _| {
        s.repo.write("files/motd", "unsigned\n");
        s.repo.commit_unsigned("unsigned")
    });
}

#[test]
fn refusal_untrusted_signer() {
    refusal("refusal_untrusted_signer", |s, _| {
        let stranger = SigningKey::generate(s.dir.path().join("keys"), "stranger");
        s.repo.write("files/motd", "by a stranger\n");
        s.repo.commit_signed(&stranger, "by a stranger")
    });
}

#[test]
fn refusal_tampered_commit() {
    refusal("refusal_tampered", |s, _| {
        s.repo.write("files/motd", "tampered\n");
        s.repo.commit_tampered(&s.key, "tampered")
    });
}

#[test]
fn refusal_older_than_the_applied_commit() {
    let Some((s, mut t, first)) = scene() else {
        return;
    };
    let second = s.push(&gateway_config("second\n"), "second");
    t.name(&second, "second");
    s.device.sync().assert_ok();
    s.repo.reset_hard(&first);
    s.publish();
    agent(&s, &mut t, &["sync"]);
    check("refusal_older", &t);
}

#[test]
fn refusal_diverged_tip() {
    let Some((s, mut t, first)) = scene() else {
        return;
    };
    let second = s.push(&gateway_config("second\n"), "second");
    t.name(&second, "second");
    s.device.sync().assert_ok();
    s.repo.reset_hard(&first);
    let rewritten = s.push(&gateway_config("rewritten\n"), "rewritten");
    t.name(&rewritten, "rewritten");
    agent(&s, &mut t, &["sync"]);
    check("refusal_diverged", &t);
}

#[test]
fn refusal_malformed_manifest() {
    refusal("refusal_malformed_manifest", |s, _| {
        s.repo.write(
            "shoal.toml",
            "version = 1\n[[profile]]\nname = \"base\"\nmatch = \n",
        );
        s.repo.commit_signed(&s.key, "malformed")
    });
}

#[test]
fn refusal_source_escaping_the_repository() {
    refusal("refusal_source_escapes", |s, _| {
        s.repo.remove("files/motd");
        std::os::unix::fs::symlink("/etc/passwd", s.repo.path().join("files/motd"))
            .expect("the attacker's link");
        s.repo.commit_signed(&s.key, "escape")
    });
}

#[test]
fn refusal_symbolic_link_in_a_managed_parent() {
    refusal("refusal_symlinked_parent", |s, _| {
        let outside = s.dir.path().join("outside");
        std::fs::create_dir_all(&outside).expect("mkdir outside");
        std::fs::remove_dir_all(s.root("/etc/gw")).expect("rm /etc/gw");
        std::os::unix::fs::symlink(&outside, s.root("/etc/gw")).expect("the user's link");
        s.push(
            &gateway_config("hello again {{ device.id }}\n"),
            "after the link",
        )
    });
}

#[test]
fn refusal_bad_commit_on_retry() {
    let Some((s, mut t, _)) = scene() else { return };
    s.device.sync().assert_ok();
    std::fs::create_dir_all(s.root("/etc/blocked")).expect("mkdir");
    s.repo.write(
        "shoal.toml",
        format!("{GATEWAY_MANIFEST}\n  [[profile.file]]\n  path = \"/etc/blocked\"\n  source = \"files/motd\"\n"),
    );
    let bad = s.repo.commit_signed(&s.key, "blocked");
    t.name(&bad, "bad");
    s.publish();
    agent(&s, &mut t, &["sync"]);
    agent(&s, &mut t, &["sync"]);
    check("refusal_bad_commit_retry", &t);
}

#[test]
fn refusal_bad_agent_config() {
    let Some((s, mut t, _)) = scene() else { return };
    let config = std::fs::read_to_string(s.device.config_path()).expect("read agent.toml");
    std::fs::write(
        s.device.config_path(),
        config.replace("verify = \"range\"", "verify = \"sometimes\""),
    )
    .expect("write agent.toml");
    agent(&s, &mut t, &["sync"]);
    std::fs::write(s.device.config_path(), format!("{config}\nsurprise = 1\n"))
        .expect("write agent.toml");
    agent(&s, &mut t, &["status"]);
    check("refusal_bad_agent_config", &t);
}

#[test]
fn refusal_locked_state_directory() {
    let Some((s, mut t, _)) = scene() else { return };
    s.device.sync().assert_ok();
    let lock = lock_state(&s.device);
    agent(&s, &mut t, &["sync"]);
    drop(lock);
    check("refusal_locked_state_dir", &t);
}

#[test]
fn refusal_private_repository() {
    let Some((s, mut t, _)) = scene() else { return };
    let server = HttpsGitServer::start(s.dir.path().join("srv"));
    t.name(server.url(""), "SERVER/");
    server.require_bearer("the-right-token");
    let auth = s.dir.path().join("git-auth.toml");
    let write_auth = |text: &str, mode: u32| {
        std::fs::write(&auth, text).expect("write the auth file");
        std::fs::set_permissions(&auth, std::fs::Permissions::from_mode(mode)).expect("chmod");
    };
    let device = |repo: &str| {
        let extra = format!(
            "ca_file = \"{}\"\nauth_file = \"{}\"",
            server.ca_pem_path().display(),
            auth.display()
        );
        let signers = s.dir.path().join("allowed_signers");
        Device::new(
            s.dir.path().join("private"),
            &server.url(repo),
            &signers,
            "range",
            &extra,
        )
    };
    let mut sync = |device: &Device| {
        t.record(&["sync"], &device.sync());
    };

    write_auth("token = \"a-wrong-token\"\n", 0o600);
    sync(&device("config.git"));
    write_auth("username = \"deploy\"\npassword = \"wrong\"\n", 0o600);
    sync(&device("config.git"));
    write_auth("token = \"the-right-token\"\n", 0o600);
    sync(&device("missing.git"));
    server.forbid();
    sync(&device("config.git"));
    write_auth("token = \"the-right-token\"\n", 0o644);
    sync(&device("config.git"));
    write_auth("token = \"the-right-token\"\nuser = \"me\"\n", 0o600);
    sync(&device("config.git"));
    check("refusal_private_repository", &t);
}

#[test]
fn refusal_private_repository_over_ssh_through_a_proxy_and_mtls() {
    let Some((s, mut t, _)) = scene() else { return };
    let Some(sshd) = SshServer::start(s.dir.path().join("srv")) else {
        return;
    };
    let Some(mut proxy) = ForwardProxy::start_requiring("fleet", "pr0xy") else {
        return;
    };
    let dir = s.dir.path();
    let server = HttpsGitServer::start(dir.join("srv"));
    let clients = shoal_e2e::TestCa::for_names(&["shoal-device-ca"]);
    let mtls = HttpsGitServer::start_requiring_client_cert(dir.join("srv"), &clients);
    t.name(sshd.url(""), "SSH_SERVER/");
    t.name(proxy.url(), "PROXY");
    t.name(server.url(""), "SERVER/");
    t.name(mtls.url(""), "MTLS_SERVER/");
    let signers = dir.join("allowed_signers");
    let key = SigningKey::generate(dir.join("deploy"), "deploy");
    sshd.authorize(key.public_line());
    let known_hosts = dir.join("known_hosts");
    let write = |path: &Path, text: &str, mode: u32| {
        std::fs::write(path, text).expect("write");
        std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode)).expect("chmod");
    };
    let mut sync = |name: &str, url: &str, extra: &str| {
        let device = Device::new(dir.join(name), url, &signers, "range", extra);
        t.record(&["sync"], &device.sync());
    };
    let ssh = format!(
        "ssh_key = \"{}\"\nknown_hosts = \"{}\"",
        key.private_path().display(),
        known_hosts.display()
    );
    // SSH: no key pinned for the host; another key pinned for it; a key the server does not know.
    let other = SigningKey::generate(dir.join("other"), "other");
    write(
        &known_hosts,
        &format!("git.example.com {}\n", other.public_line()),
        0o644,
    );
    sync("ssh-unknown", &sshd.url("config.git"), &ssh);
    let mut fields = other.public_line().split_whitespace();
    let (kind, base64) = (fields.next().unwrap(), fields.next().unwrap());
    write(
        &known_hosts,
        &format!("[127.0.0.1]:{} {kind} {base64}\n", sshd.port()),
        0o644,
    );
    sync("ssh-changed", &sshd.url("config.git"), &ssh);
    write(
        &known_hosts,
        &format!("{}\n", sshd.known_hosts_line()),
        0o644,
    );
    let stranger = SigningKey::generate(dir.join("stranger"), "stranger");
    let stranger_ssh = ssh.replace(
        &key.private_path().display().to_string(),
        &stranger.private_path().display().to_string(),
    );
    sync("ssh-wrong-key", &sshd.url("config.git"), &stranger_ssh);
    std::fs::set_permissions(key.private_path(), std::fs::Permissions::from_mode(0o640))
        .expect("chmod");
    sync("ssh-key-mode", &sshd.url("config.git"), &ssh);
    sync("ssh-no-key", &sshd.url("config.git"), "");

    // HTTPS through the proxy: a refused proxy credential, then the proxy down.
    let proxy_auth = dir.join("proxy-auth.toml");
    write(
        &proxy_auth,
        "username = \"fleet\"\npassword = \"wrong\"\n",
        0o600,
    );
    let through = format!(
        "ca_file = \"{}\"\nproxy = \"{}\"\nproxy_auth_file = \"{}\"",
        server.ca_pem_path().display(),
        proxy.url(),
        proxy_auth.display()
    );
    sync("proxy-refused", &server.url("config.git"), &through);
    proxy.stop();
    sync("proxy-down", &server.url("config.git"), &through);

    // mTLS: a server that requires a client certificate, and a device without one.
    let ca = format!("ca_file = \"{}\"", mtls.ca_pem_path().display());
    sync("mtls-none", &mtls.url("config.git"), &ca);
    check("refusal_private_repository_over_ssh_proxy_mtls", &t);
}

/// Holds the state directory's lock as another agent would (flock on `state/lock`).
fn lock_state(device: &Device) -> std::fs::File {
    let path = device.state_dir().join("lock");
    let file = std::fs::File::options()
        .create(true)
        .truncate(false)
        .write(true)
        .open(&path)
        .unwrap_or_else(|e| panic!("{}: {e}", Path::new(&path).display()));
    file.try_lock().expect("nobody else holds the lock");
    file
}
