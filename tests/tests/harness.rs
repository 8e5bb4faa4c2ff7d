//! Proves the harness's parts are real: signatures git verifies, tampering git rejects, and the git client cloning over HTTPS, HTTP and git://.

use std::path::{Path, PathBuf};
use std::process::Command;

use shoal_e2e::{
    agent_bin, collector_bin, git_command, output, require_tools, run, write_allowed_signers,
    ConfigRepo, GitDaemon, HttpsGitServer, SigningKey,
};
use tempfile::TempDir;

/// A signed config repo published as `served/config.git`, and the key and trust file behind it.
struct Published {
    dir: TempDir,
    key: SigningKey,
    allowed_signers: PathBuf,
    repo: ConfigRepo,
}

impl Published {
    fn new() -> Self {
        let dir = tempfile::tempdir().expect("temporary directory");
        let key = SigningKey::generate(dir.path(), "release");
        let allowed_signers = dir.path().join("allowed_signers");
        write_allowed_signers(&allowed_signers, &[("release@shoal", &key)]);
        let repo = ConfigRepo::init(dir.path().join("work"));
        repo.write("etc/motd", "hello from generation 1\n");
        repo.commit_signed(&key, "generation 1");
        let published = Published {
            dir,
            key,
            allowed_signers,
            repo,
        };
        published.publish();
        published
    }

    fn publish(&self) {
        self.repo.publish_to(self.served().join("config.git"));
    }

    /// The project root the servers export.
    fn served(&self) -> PathBuf {
        self.dir.path().join("served")
    }

    fn path(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }
}

/// The real git client, trusting `ca` for HTTPS when given.
fn client(ca: Option<&Path>) -> Command {
    let mut cmd = git_command();
    cmd.env_remove("GIT_SSL_NO_VERIFY");
    match ca {
        Some(ca) => cmd.env("GIT_SSL_CAINFO", ca),
        None => cmd.env_remove("GIT_SSL_CAINFO"),
    };
    cmd
}

fn clone(ca: Option<&Path>, url: &str, into: &Path) -> ConfigRepo {
    run(client(ca).args(["clone", "-q", url]).arg(into));
    ConfigRepo::init(into)
}

#[test]
fn signed_commits_verify_with_git_and_tampered_unsigned_or_untrusted_ones_do_not() {
    if !require_tools(&["git", "ssh-keygen"]) {
        return;
    }
    let fixture = Published::new();
    let (repo, key, trust) = (&fixture.repo, &fixture.key, &fixture.allowed_signers);
    let signed = repo.head();
    assert!(
        repo.git_verifies(trust, &signed),
        "a signed commit must verify"
    );

    let tampered = repo.commit_tampered(key, "generation 2");
    assert_eq!(
        repo.head(),
        tampered,
        "the branch moves to the rewritten commit"
    );
    assert_eq!(
        repo.git(&["log", "-1", "--format=%s"]),
        "tampered: generation 2"
    );
    assert!(
        repo.git(&["cat-file", "commit", &tampered])
            .contains("gpgsig"),
        "the signature is kept"
    );
    assert!(
        !repo.git_verifies(trust, &tampered),
        "a tampered commit must not verify"
    );
    let trust_option = format!("gpg.ssh.allowedSignersFile={}", trust.display());
    let verdict = output(git_command().arg("-C").arg(repo.path()).args([
        "-c",
        &trust_option,
        "verify-commit",
        &tampered,
    ]));
    let reason = String::from_utf8_lossy(&verdict.stderr);
    assert!(
        reason.contains("incorrect signature"),
        "rejected for the signature, not its absence: {reason}"
    );

    let unsigned = repo.commit_unsigned("generation 3");
    assert!(
        !repo.git_verifies(trust, &unsigned),
        "an unsigned commit must not verify"
    );

    let stranger = SigningKey::generate(fixture.dir.path(), "stranger");
    let untrusted = repo.commit_signed(&stranger, "generation 4");
    assert!(
        !repo.git_verifies(trust, &untrusted),
        "a commit by an untrusted key must not verify"
    );
}

#[test]
fn allowed_signers_lines_name_the_principal_the_git_namespace_and_the_key() {
    if !require_tools(&["ssh-keygen"]) {
        return;
    }
    let dir = tempfile::tempdir().expect("temporary directory");
    let key = SigningKey::generate(dir.path(), "ops");
    let mut public = key.public_line().split_whitespace();
    let (key_type, base64, comment) = (public.next(), public.next(), public.next());
    assert_eq!((key_type, comment), (Some("ssh-ed25519"), Some("ops")));
    assert_eq!(
        key.allowed_signers_line("ops@shoal"),
        format!(
            "ops@shoal namespaces=\"git\" ssh-ed25519 {}",
            base64.unwrap_or_default()
        )
    );
    assert!(key.private_path().is_file() && key.public_path().is_file());
}

#[test]
fn history_can_be_dated_branched_merged_rewound_and_force_published() {
    if !require_tools(&["git", "ssh-keygen"]) {
        return;
    }
    let fixture = Published::new();
    let (repo, key) = (&fixture.repo, &fixture.key);
    let first = repo.head();

    let dated = repo.commit_signed_at(key, "dated", 1_700_000_000);
    assert_eq!(
        repo.git(&["log", "-1", "--format=%ct %at", &dated]),
        "1700000000 1700000000"
    );

    repo.branch("feature");
    repo.checkout("feature");
    repo.write("etc/feature.conf", "on\n");
    repo.remove("etc/motd");
    repo.commit_signed(key, "feature");
    repo.checkout("main");
    let merge = repo.merge_signed(key, "feature");
    assert_eq!(
        repo.git(&["rev-list", "--parents", "-n1", &merge])
            .split(' ')
            .count(),
        3,
        "a merge has two parents"
    );
    assert!(
        repo.git_verifies(&fixture.allowed_signers, &merge),
        "the merge commit is signed"
    );
    assert_eq!(
        repo.git(&["ls-tree", "-r", "--name-only", &merge]),
        "etc/feature.conf"
    );

    fixture.publish();
    repo.reset_hard(&first);
    fixture.publish();
    let bare = fixture.served().join("config.git");
    let published_main = run(git_command()
        .arg("-C")
        .arg(&bare)
        .args(["rev-parse", "main"]));
    assert_eq!(
        published_main, first,
        "publishing after a rewind force-pushes"
    );
    assert!(
        !fixture.path("work/etc/feature.conf").exists(),
        "reset --hard rewinds the tree"
    );
}

#[test]
fn https_clone_works_for_a_client_trusting_the_ca_and_a_noop_fetch_asks_twice() {
    if !require_tools(&["git", "ssh-keygen"]) {
        return;
    }
    let fixture = Published::new();
    let server = HttpsGitServer::start(fixture.served());
    let url = server.url("config.git");
    assert!(url.starts_with("https://localhost:"), "{url}");

    let ca = server.ca_pem_path();
    let cloned = clone(Some(ca), &url, &fixture.path("clone"));
    assert_eq!(cloned.head(), fixture.repo.head());
    let motd = std::fs::read_to_string(fixture.path("clone/etc/motd")).expect("cloned file");
    assert_eq!(motd, "hello from generation 1\n");
    assert!(server.request_count() >= 2 && server.bytes_sent() > 0);

    server.reset_counters();
    run(client(Some(ca))
        .arg("-C")
        .arg(cloned.path())
        .args(["fetch", "-q", "origin"]));
    // Protocol v2: advertise capabilities, then list refs; nothing new, so no pack is asked for.
    assert_eq!(
        server.requests(),
        [
            "GET /config.git/info/refs?service=git-upload-pack",
            "POST /config.git/git-upload-pack",
        ]
    );
    assert_eq!(server.request_count(), 2);
    assert!(server.bytes_sent() > 0);
}

#[test]
fn https_server_is_refused_by_a_client_that_does_not_trust_its_ca() {
    if !require_tools(&["git", "ssh-keygen"]) {
        return;
    }
    let fixture = Published::new();
    let server = HttpsGitServer::start(fixture.served());
    let refused = output(client(None).args(["ls-remote", &server.url("config.git")]));
    assert!(
        !refused.status.success(),
        "an untrusted certificate must be refused"
    );
    let stderr = String::from_utf8_lossy(&refused.stderr);
    assert!(stderr.to_lowercase().contains("certificate"), "{stderr}");
}

#[test]
fn plain_http_serves_clones_and_a_stopped_server_refuses() {
    if !require_tools(&["git", "ssh-keygen"]) {
        return;
    }
    let fixture = Published::new();
    let mut server = HttpsGitServer::start_plain(fixture.served());
    let url = server.url("config.git");
    assert!(url.starts_with("http://127.0.0.1:"), "{url}");
    let cloned = clone(None, &url, &fixture.path("clone"));
    assert_eq!(cloned.head(), fixture.repo.head());

    server.stop();
    let refused = output(client(None).args(["ls-remote", &url]));
    assert!(
        !refused.status.success(),
        "a stopped server must refuse connections"
    );
}

#[test]
fn gzip_request_bodies_reach_http_backend() {
    if !require_tools(&["git", "ssh-keygen"]) {
        return;
    }
    let fixture = Published::new();
    // Forty branch tips make the clone's list of wants exceed the 1 KiB above which git gzips it.
    for n in 0..40 {
        let branch = format!("device-{n:02}");
        fixture.repo.branch(&branch);
        fixture.repo.checkout(&branch);
        fixture.repo.commit_unsigned(&branch);
        fixture.repo.checkout("main");
    }
    fixture.publish();
    let server = HttpsGitServer::start_plain(fixture.served());
    let traced = output(
        client(None)
            .env("GIT_TRACE_CURL", "1")
            .env("GIT_TRACE_CURL_NO_DATA", "1")
            .args(["clone", "-q", "--mirror", &server.url("config.git")])
            .arg(fixture.path("mirror")),
    );
    let trace = String::from_utf8_lossy(&traced.stderr);
    assert!(traced.status.success(), "{trace}");
    assert!(
        trace.contains("Content-Encoding: gzip"),
        "git did not gzip its request:\n{trace}"
    );
    let branches = run(git_command()
        .arg("-C")
        .arg(fixture.path("mirror"))
        .args(["branch", "--list", "device-*"]));
    assert_eq!(branches.lines().count(), 40);
}

#[test]
fn git_daemon_serves_ls_remote() {
    if !require_tools(&["git", "ssh-keygen"]) {
        return;
    }
    let fixture = Published::new();
    let daemon = GitDaemon::start(fixture.served());
    let url = daemon.url("config.git");
    assert_eq!(url, format!("git://127.0.0.1:{}/config.git", daemon.port()));
    let refs = run(client(None).args(["ls-remote", &url]));
    let main = format!("{}\trefs/heads/main", fixture.repo.head());
    assert!(
        refs.lines().any(|line| line == main),
        "{refs}\ndaemon log:\n{}",
        daemon.log()
    );
}

#[test]
fn workspace_binaries_are_built_and_found() {
    let agent = agent_bin();
    assert!(agent.is_file(), "{}", agent.display());
    assert_eq!(
        agent.file_name().and_then(|name| name.to_str()),
        Some("shoal-agent")
    );
    let collector = collector_bin();
    assert!(collector.is_file(), "{}", collector.display());
}
