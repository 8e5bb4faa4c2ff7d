//! Signed fetch end to end: the real `shoal-agent` pulls repos signed by real `ssh-keygen` keys
//! over real git servers (smart HTTP over TLS, plain HTTP, git daemon, file), accepts only
//! trusted, forward-moving history, and agrees with `git verify-commit` on every verdict.

use std::path::PathBuf;

use shoal_e2e::{
    require_tools, write_allowed_signers, ConfigRepo, Device, GitDaemon, HttpsGitServer, SigningKey,
};

/// An operator with a signing key, a config repo, and the bare repo servers export.
struct Scenario {
    dir: tempfile::TempDir,
    operator: SigningKey,
    repo: ConfigRepo,
    allowed_signers: PathBuf,
}

impl Scenario {
    fn new() -> Option<Self> {
        if !require_tools(&["git", "ssh-keygen"]) {
            return None;
        }
        let dir = tempfile::tempdir().expect("tempdir");
        let operator = SigningKey::generate(dir.path().join("keys"), "operator");
        let allowed_signers = dir.path().join("allowed_signers");
        write_allowed_signers(&allowed_signers, &[("operator@example", &operator)]);
        let repo = ConfigRepo::init(dir.path().join("work"));
        Some(Scenario {
            dir,
            operator,
            repo,
            allowed_signers,
        })
    }

    fn srv(&self) -> PathBuf {
        self.dir.path().join("srv")
    }

    /// Commits a change signed by the operator and publishes it.
    fn push_signed(&self, message: &str) -> String {
        self.repo
            .write("shoal.toml", format!("version = 1\n# {message}\n"));
        let id = self.repo.commit_signed(&self.operator, message);
        self.publish();
        id
    }

    fn publish(&self) {
        self.repo.publish_to(self.srv().join("config.git"));
    }

    fn device(&self, url: &str, verify: &str, extra: &str) -> Device {
        Device::new(
            self.dir.path().join("device"),
            url,
            &self.allowed_signers,
            verify,
            extra,
        )
    }

    /// A device pulling from the bare repo by path (the cheapest transport, for policy tests).
    fn local_device(&self, verify: &str) -> Device {
        let url = self.srv().join("config.git").display().to_string();
        self.device(&url, verify, "")
    }

    fn git_agrees(&self, rev: &str, ours_ok: bool) {
        assert_eq!(
            self.repo.git_verifies(&self.allowed_signers, rev),
            ours_ok,
            "git verify-commit disagrees with shoal-agent on {rev}"
        );
    }
}

#[test]
fn https_first_sync_accepts_signed_tip_and_noop_sync_costs_one_advertisement_and_no_writes() {
    let Some(s) = Scenario::new() else { return };
    let first = s.push_signed("first");
    let server = HttpsGitServer::start(s.srv());
    let ca = format!("ca_file = \"{}\"", server.ca_pem_path().display());
    let device = s.device(&server.url("config.git"), "range", &ca);

    device.sync().assert_ok().expect(0, "first sync");
    assert_eq!(device.applied().as_deref(), Some(first.as_str()));
    s.git_agrees(&first, true);

    let before = device.state_files();
    server.reset_counters();
    device.sync().assert_ok().expect(0, "up to date");
    let requests = server.requests();
    assert!(
        requests.len() == 1 && requests[0].starts_with("GET "),
        "a no-op sync is one round trip (the ref advertisement), got {requests:?}"
    );
    assert_eq!(device.state_files(), before, "a no-op sync writes nothing");

    let second = s.push_signed("second");
    device
        .sync()
        .assert_ok()
        .expect(0, &format!("commit {second} signed by operator@example"));
    assert_eq!(device.applied().as_deref(), Some(second.as_str()));
}

#[test]
fn every_transport_fetches_the_same_verified_tip() {
    let Some(s) = Scenario::new() else { return };
    let tip = s.push_signed("transport");
    let plain = HttpsGitServer::start_plain(s.srv());
    let daemon = GitDaemon::start(s.srv());
    let bare = s.srv().join("config.git");
    let urls = [
        plain.url("config.git"),
        daemon.url("config.git"),
        format!("file://{}", bare.display()),
        bare.display().to_string(),
    ];
    for (i, url) in urls.iter().enumerate() {
        let device = Device::new(
            s.dir.path().join(format!("dev{i}")),
            url,
            &s.allowed_signers,
            "range",
            "",
        );
        device.sync().assert_ok();
        assert_eq!(device.applied().as_deref(), Some(tip.as_str()), "via {url}");
    }
}

#[test]
fn untrusted_commits_are_refused_with_distinct_reasons_and_leave_the_device_where_it_was() {
    let Some(s) = Scenario::new() else { return };
    let good = s.push_signed("good");
    let device = s.local_device("tip");
    device.sync().assert_ok();

    let stranger = SigningKey::generate(s.dir.path().join("keys"), "stranger");
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .expect("clock")
        .as_secs() as i64;

    // Each case: how the bad tip is made, then the words the refusal must contain.
    type Make<'a> = Box<dyn Fn(&Scenario) -> String + 'a>;
    let cases: Vec<(&str, Make, &str)> = vec![
        (
            "unsigned",
            Box::new(|s| s.repo.commit_unsigned("unsigned")),
            "is not signed",
        ),
        (
            "unknown key",
            Box::new(|s| s.repo.commit_signed(&stranger, "by a stranger")),
            "not in the trust policy",
        ),
        (
            "tampered",
            Box::new(|s| s.repo.commit_tampered(&s.operator, "tampered")),
            "does not match",
        ),
    ];
    for (name, make, reason) in cases {
        s.repo.reset_hard(&good);
        let bad = make(&s);
        s.publish();
        let run = device.sync();
        run.expect(1, reason).expect(1, &bad);
        assert_eq!(
            device.applied().as_deref(),
            Some(good.as_str()),
            "{name}: device moved"
        );
        s.git_agrees(&bad, false);
    }

    // Validity windows are checked against the committer time (not the device clock), and the
    // key's namespaces must allow "git".
    const JUNE_2020: i64 = 1_590_969_600;
    const JAN_2022: i64 = 1_640_995_200;
    let in_2020 = "namespaces=\"git\",valid-after=\"20200101Z\",valid-before=\"20210101Z\"";
    let cases = [
        (
            in_2020,
            JAN_2022,
            "but the commit's committer time is 2022-01-01T00:00:00Z",
        ),
        (
            "valid-after=\"29990101\"",
            now,
            "but the commit's committer time is",
        ),
        ("namespaces=\"file\"", now, "does not allow `git`"),
    ];
    let trust_with = |options: &str| {
        let line = s
            .operator
            .allowed_signers_line("operator@example")
            .replace("namespaces=\"git\"", options);
        std::fs::write(&s.allowed_signers, format!("{line}\n")).expect("write allowed_signers");
    };
    for (options, time, reason) in cases {
        s.repo.reset_hard(&good);
        trust_with(options);
        let bad = s.repo.commit_signed_at(&s.operator, options, time);
        s.publish();
        device.sync().expect(1, reason).expect(1, &bad);
        assert_eq!(device.applied().as_deref(), Some(good.as_str()));
        s.git_agrees(&bad, false);
    }
    // Inside its window the same key is trusted, even though the device clock is past it.
    s.repo.reset_hard(&good);
    trust_with(in_2020);
    let old_but_valid = s
        .repo
        .commit_signed_at(&s.operator, "signed in 2020", JUNE_2020);
    s.publish();
    device.sync().expect(
        0,
        &format!("commit {old_but_valid} signed by operator@example"),
    );
    s.git_agrees(&old_but_valid, true);
}

#[test]
fn force_pushed_or_older_history_is_refused_even_when_validly_signed() {
    let Some(s) = Scenario::new() else { return };
    let first = s.push_signed("first");
    let second = s.push_signed("second");
    let device = s.local_device("range");
    device.sync().assert_ok();
    assert_eq!(device.applied().as_deref(), Some(second.as_str()));

    // An older, validly signed commit served as the tip.
    s.repo.reset_hard(&first);
    s.publish();
    device
        .sync()
        .expect(1, "older than the applied commit")
        .expect(1, &first)
        .expect(1, &second);
    s.git_agrees(&first, true);

    // A rewritten history: signed, newer, but not descending from what the device applied.
    let rewritten = s.push_signed("rewritten");
    device
        .sync()
        .expect(1, "does not descend from the applied commit")
        .expect(1, &rewritten)
        .expect(1, &second);
    assert_eq!(device.applied().as_deref(), Some(second.as_str()));
}

#[test]
fn range_mode_finds_an_unsigned_commit_hidden_in_the_middle_and_tip_mode_does_not_look() {
    let Some(s) = Scenario::new() else { return };
    let base = s.push_signed("base");
    let range_device = s.local_device("range");
    let tip_device = Device::new(
        s.dir.path().join("tip-device"),
        &s.srv().join("config.git").display().to_string(),
        &s.allowed_signers,
        "tip",
        "",
    );
    range_device.sync().assert_ok();
    tip_device.sync().assert_ok();

    s.repo.write("hidden", "x");
    let hidden = s.repo.commit_unsigned("hidden unsigned change");
    let tip = s.push_signed("signed tip on top");

    range_device
        .sync()
        .expect(
            1,
            &format!("commit {hidden} between the applied commit {base} and the tip"),
        )
        .expect(1, "is not signed");
    assert_eq!(range_device.applied().as_deref(), Some(base.as_str()));
    tip_device.sync().assert_ok();
    assert_eq!(tip_device.applied().as_deref(), Some(tip.as_str()));
}

#[test]
fn range_mode_checks_both_sides_of_a_merge() {
    let Some(s) = Scenario::new() else { return };
    let base = s.push_signed("base");
    let device = s.local_device("range");
    device.sync().assert_ok();

    s.repo.branch("feature");
    s.repo.checkout("feature");
    s.repo.write("feature", "y");
    let side = s.repo.commit_unsigned("unsigned work on a side branch");
    s.repo.checkout("main");
    s.repo.write("main-change", "z");
    s.repo.commit_signed(&s.operator, "signed change on main");
    s.repo.merge_signed(&s.operator, "feature");
    s.publish();

    device.sync().expect(
        1,
        &format!("commit {side} between the applied commit {base}"),
    );
    assert_eq!(device.applied().as_deref(), Some(base.as_str()));
}

#[test]
fn network_and_repository_failures_name_what_is_wrong() {
    let Some(s) = Scenario::new() else { return };
    s.push_signed("first");

    // Nothing listens on this port: a free one we bound and released.
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("free port")
        .port();
    let down = s.device(&format!("http://127.0.0.1:{port}/config.git"), "range", "");
    down.sync().expect(1, "cannot reach the config repository");
    assert_eq!(down.applied(), None);

    // The server is up but serves a repo without the tracked ref.
    let server = HttpsGitServer::start(s.srv());
    let ca = format!("ca_file = \"{}\"", server.ca_pem_path().display());
    std::fs::remove_dir_all(s.dir.path().join("device")).expect("reset device");
    let cfg = Device::new(
        s.dir.path().join("device"),
        &server.url("config.git"),
        &s.allowed_signers,
        "range",
        &ca,
    );
    let toml = std::fs::read_to_string(cfg.config_path()).expect("read");
    std::fs::write(
        cfg.config_path(),
        toml.replace("refs/heads/main", "refs/heads/production"),
    )
    .expect("write");
    cfg.sync().expect(1, "has no ref refs/heads/production");

    // TLS to a server whose certificate is not signed by the configured CA.
    let other_ca = s.dir.path().join("other-ca.pem");
    let other = HttpsGitServer::start(s.srv());
    std::fs::copy(other.ca_pem_path(), &other_ca).expect("copy ca");
    let wrong_ca = Device::new(
        s.dir.path().join("wrong-ca"),
        &server.url("config.git"),
        &s.allowed_signers,
        "range",
        &format!("ca_file = \"{}\"", other_ca.display()),
    );
    let run = wrong_ca.sync();
    run.expect(
        1,
        &format!(
            "the TLS handshake with the config repository {} failed",
            server.url("config.git")
        ),
    )
    .expect(1, "invalid peer certificate");
    assert!(!run.stderr.contains("check the network"), "{}", run.stderr);
    assert_eq!(wrong_ca.applied(), None);

    // A host name that does not resolve (`.invalid` never does, RFC 2606).
    let url = "https://shoal-test.invalid/config.git";
    let unresolved = s.device(url, "range", "");
    let run = unresolved.sync();
    run.expect(
        1,
        &format!("cannot resolve the host of the config repository {url} after 1 attempt(s) (DNS)"),
    );
    assert_eq!(unresolved.applied(), None);
}

#[test]
fn bad_agent_config_exits_2_naming_the_file_and_key() {
    let Some(s) = Scenario::new() else { return };
    let device = s.local_device("range");
    let toml = std::fs::read_to_string(device.config_path()).expect("read");
    std::fs::write(
        device.config_path(),
        toml.replace("verify = \"range\"", "verify = \"sometimes\""),
    )
    .expect("write");
    device
        .sync()
        .expect(2, "agent.toml")
        .expect(2, "unknown variant `sometimes`, expected `tip` or `range`");

    std::fs::write(
        &s.allowed_signers,
        "operator@example cert-authority ssh-ed25519 AAAA\n",
    )
    .expect("write");
    let device = s.local_device("range");
    device.sync().expect(2, "allowed_signers");
}

#[test]
fn verify_command_checks_a_users_repo_for_ci() {
    let Some(s) = Scenario::new() else { return };
    let base = s.push_signed("base");
    let signers = s.allowed_signers.display().to_string();
    let repo = s.repo.path().display().to_string();
    let device = s.local_device("range");

    let ok = device.agent(&["verify", &repo, "--allowed-signers", &signers]);
    ok.assert_ok();
    assert_eq!(ok.stdout.trim(), "operator@example");

    let unsigned = s.repo.commit_unsigned("unsigned");
    let run = device.agent(&[
        "verify",
        &repo,
        "--rev",
        &unsigned,
        "--allowed-signers",
        &signers,
    ]);
    run.expect(1, "is not signed").expect(1, &unsigned);

    let tip = s.push_signed("signed on top");
    device
        .agent(&[
            "verify",
            &repo,
            "--rev",
            &tip,
            "--allowed-signers",
            &signers,
        ])
        .assert_ok();
    device
        .agent(&[
            "verify",
            &repo,
            "--rev",
            &tip,
            "--since",
            &base,
            "--allowed-signers",
            &signers,
        ])
        .expect(1, &unsigned);
    device
        .agent(&[
            "verify",
            &repo,
            "--rev",
            "no-such-rev",
            "--allowed-signers",
            &signers,
        ])
        .expect(2, "cannot resolve revision");
}

/// Issue 13: a repository made with `git init --object-format=sha256` is refused with a message
/// naming the limitation (the agent's gix is built with SHA-1 only), over every transport, and
/// is not retried as a network failure; `git verify-commit` accepts the same commit, so the
/// refusal is the agent's limitation and not the repository's fault. Nothing is written.
#[test]
fn a_sha256_repository_is_refused_naming_the_limitation_and_nothing_is_written() {
    if !require_tools(&["git", "ssh-keygen"]) {
        return;
    }
    let dir = tempfile::tempdir().expect("tempdir");
    let operator = SigningKey::generate(dir.path().join("keys"), "operator");
    let allowed_signers = dir.path().join("allowed_signers");
    write_allowed_signers(&allowed_signers, &[("operator@example", &operator)]);
    let repo = ConfigRepo::init_with(dir.path().join("work"), &["--object-format=sha256"]);
    repo.write("shoal.toml", "version = 1\n");
    let commit = repo.commit_signed(&operator, "sha256 config");
    assert_eq!(commit.len(), 64, "a SHA-256 commit id: {commit}");
    assert!(
        repo.git_verifies(&allowed_signers, &commit),
        "git verify-commit accepts the SHA-256 commit"
    );
    let srv = dir.path().join("srv");
    let bare = srv.join("config.git");
    let init = std::process::Command::new("git")
        .args(["init", "-q", "--bare", "--object-format=sha256"])
        .arg(&bare)
        .status()
        .expect("git init --bare");
    assert!(init.success());
    repo.publish_to(&bare);

    let daemon = GitDaemon::start(&srv);
    for (name, url) in [
        ("git daemon", daemon.url("config.git")),
        ("path", bare.display().to_string()),
    ] {
        let device = Device::new(
            dir.path()
                .join(format!("device-{}", name.replace(' ', "-"))),
            &url,
            &allowed_signers,
            "tip",
            "",
        );
        let run = device.sync();
        run.expect(
            1,
            &format!(
                "the config repository {url} uses SHA-256 object ids (made with git init \
             --object-format=sha256), which this agent does not support: its git library (gix \
             0.90) is built with SHA-1 only"
            ),
        );
        assert!(
            !run.stderr.contains("cannot reach"),
            "{name}: not a network failure: {}",
            run.stderr
        );
        for record in ["applied-commit", "current-generation", "generations"] {
            assert!(
                !device.state_dir().join(record).exists(),
                "{name}: {record} was written"
            );
        }
    }
}

#[test]
fn a_revoked_key_is_refused_in_tip_and_range_mode_and_by_verify_whatever_allowed_signers_says() {
    let Some(s) = Scenario::new() else { return };
    let deputy = SigningKey::generate(s.dir.path().join("keys"), "deputy");
    write_allowed_signers(
        &s.allowed_signers,
        &[
            ("operator@example", &s.operator),
            ("deputy@example", &deputy),
        ],
    );
    s.repo.write("shoal.toml", shoal_e2e::MOTD_MANIFEST);
    s.repo.write("motd", "before\n");
    let first = s.repo.commit_signed(&s.operator, "before the revocation");
    s.publish();
    let server = HttpsGitServer::start(s.srv());
    let ca = format!("ca_file = \"{}\"", server.ca_pem_path().display());
    let range_device = s.device(&server.url("config.git"), "range", &ca);
    let tip_device = Device::new(
        s.dir.path().join("tip-device"),
        &server.url("config.git"),
        &s.allowed_signers,
        "tip",
        &ca,
    );
    for device in [&range_device, &tip_device] {
        device.sync().assert_ok();
    }
    let motd = |device: &Device| {
        std::fs::read_to_string(device.config_path().with_file_name("root/etc/motd"))
            .expect("the device's motd")
    };

    // The operator's key is revoked, first as git's plain list of public keys; allowed_signers
    // still trusts it.
    let list = s.dir.path().join("revoked_keys");
    std::fs::write(
        &list,
        format!("# lost laptop\n{}\n", s.operator.public_line()),
    )
    .unwrap();
    // Then as a KRL from `ssh-keygen -k`: the key itself, its SHA256 and its SHA1 fingerprint.
    let krl = |name: &str, spec: String| {
        let spec_path = s.dir.path().join(format!("{name}.spec"));
        std::fs::write(&spec_path, spec).unwrap();
        let path = s.dir.path().join(name);
        shoal_e2e::run(
            std::process::Command::new("ssh-keygen")
                .args(["-q", "-k", "-f"])
                .arg(&path)
                .arg(&spec_path),
        );
        path
    };
    let fingerprint = s.operator.fingerprint();
    let files = [
        list,
        krl("krl-key", format!("key: {}\n", s.operator.public_line())),
        krl("krl-sha256", format!("hash: {fingerprint}\n")),
        krl("krl-sha1", format!("sha1: {}\n", s.operator.public_line())),
    ];
    for revoked in &files {
        for device in [&range_device, &tip_device] {
            let config = std::fs::read_to_string(device.config_path()).unwrap();
            let config = config
                .lines()
                .filter(|line| !line.starts_with("revoked_keys"))
                .collect::<Vec<_>>()
                .join("\n");
            std::fs::write(device.config_path(), config + "\n").unwrap();
            device.trust_option(&format!("revoked_keys = \"{}\"", revoked.display()));
        }

        // Tip mode: the revoked key signs the tip.
        s.repo.reset_hard(&first);
        s.repo.write("motd", "by a revoked key\n");
        let bad = s
            .repo
            .commit_signed(&s.operator, "signed after the revocation");
        s.publish();
        let reason = format!(
            "the commit is signed by key {fingerprint}, which is revoked by {}",
            revoked.display()
        );
        tip_device.sync().expect(1, &reason).expect(1, &bad);
        assert_eq!(tip_device.applied().as_deref(), Some(first.as_str()));
        assert_eq!(
            motd(&tip_device),
            "before\n",
            "the refused commit changed nothing"
        );
        assert!(!s
            .repo
            .git_verifies_revoking(&s.allowed_signers, revoked, &bad));

        // Range mode: the revoked key's commit hides under a tip the deputy signed.
        s.repo.write("motd", "after\n");
        let tip = s.repo.commit_signed(&deputy, "trusted tip on top");
        s.publish();
        range_device
            .sync()
            .expect(
                1,
                &format!("commit {bad} between the applied commit {first}"),
            )
            .expect(1, &reason);
        assert_eq!(range_device.applied().as_deref(), Some(first.as_str()));
        assert_eq!(motd(&range_device), "before\n");
        assert!(s
            .repo
            .git_verifies_revoking(&s.allowed_signers, revoked, &tip));

        // `verify` in the repo's CI says the same, with the file given on the command line.
        let verify = tip_device.agent(&[
            "verify",
            &s.repo.path().display().to_string(),
            "--rev",
            &bad,
            "--allowed-signers",
            &s.allowed_signers.display().to_string(),
            "--revoked-keys",
            &revoked.display().to_string(),
        ]);
        verify.expect(1, &reason);
    }
    // The deputy's key was never revoked: its own commit on top of `first` is followed.
    s.repo.reset_hard(&first);
    s.repo.write("motd", "deputy\n");
    let good = s.repo.commit_signed(&deputy, "deputy's change");
    s.publish();
    range_device.sync().assert_ok();
    assert_eq!(range_device.applied().as_deref(), Some(good.as_str()));
    assert_eq!(motd(&range_device), "deputy\n");
}

#[test]
fn a_revocation_file_that_cannot_be_read_whole_refuses_every_commit_and_names_the_file() {
    let Some(s) = Scenario::new() else { return };
    let first = s.push_signed("first");
    let device = s.local_device("range");
    device.sync().assert_ok();
    let second = s.push_signed("second");

    let revoked = s.dir.path().join("revoked_keys");
    let cases: [(&str, &[u8], String); 3] = [
        (
            "missing",
            b"",
            format!("cannot read the revoked keys file {}", revoked.display()),
        ),
        (
            "not a key",
            b"# ok\nssh-ed25519 not-base64\n",
            format!("{}:2: not a public key (", revoked.display()),
        ),
        (
            "a KRL certificates section",
            b"SSHKRL\n\0\0\0\0\x01\0\0\0\0\0\0\0\0\0\0\0\0\0\0\0\0\0\0\0\0\0\0\0\0\0\0\0\0\0\0\0\0\x01\0\0\0\x01x",
            format!(
                "{}: the KRL has a certificates section (type 1, at byte 44) which Shoal does not read",
                revoked.display()
            ),
        ),
    ];
    device.trust_option(&format!("revoked_keys = \"{}\"", revoked.display()));
    for (name, bytes, reason) in cases {
        let _ = std::fs::remove_file(&revoked);
        if name != "missing" {
            std::fs::write(&revoked, bytes).unwrap();
        }
        device.sync().expect(2, &reason);
        assert_eq!(device.applied().as_deref(), Some(first.as_str()), "{name}");
    }
    std::fs::write(&revoked, "").unwrap();
    device.sync().expect(0, &second);
}
