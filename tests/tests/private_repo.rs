//! A private configuration repository over HTTPS: the real agent pulls from the harness's TLS
//! `git http-backend` server requiring a bearer token or basic auth, with the credential from
//! `[source] auth_file`. It sends the credential with the first request (a no-op sync stays one
//! round trip), only to the configured origin, names a refused credential by file and kind, keeps
//! the device as it was when the server starts refusing, refuses to start with a credential file
//! others can read, and never prints the secret anywhere. Over SSH, against a real `sshd` started by
//! the test: a deploy key (`[source] ssh_key`) and a pinned host key (`[source] known_hosts`); an
//! unknown or changed host key, a deploy key the server does not know and a server that is down
//! are each refused naming what failed, the device left as it was, and the key never shown.
//! Through a real forward proxy (`tinyproxy`): `[source] proxy` with its own credential file
//! (CONNECT for HTTPS), `HTTPS_PROXY` and `NO_PROXY` from the environment, `[collector] proxy`; a
//! proxy that is down or refuses the credential is named, and its credential is never shown.
//! mTLS: a server requiring a client certificate (`[source] client_cert`/`client_key`) converges
//! with one its CA signed; none, or one of another CA, is named as refused client authentication.

use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};

use shoal_e2e::{
    gateway_config, require_tools, write_allowed_signers, ClientCert, ConfigRepo, Device,
    ForwardProxy, HttpsGitServer, Run, SigningKey, SshServer, TestCa,
};

const TOKEN: &str = "shoal-test-t0ken-9f3a51c2";
const USER: &str = "deploy";
const PASSWORD: &str = "pa55-w0rd-7e1b";

/// An operator's signed repository served over HTTPS, and a device for it.
struct Private {
    dir: tempfile::TempDir,
    key: SigningKey,
    repo: ConfigRepo,
    signers: PathBuf,
    server: HttpsGitServer,
}

impl Private {
    fn new() -> Option<Self> {
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
        Some(Private {
            dir,
            key,
            repo,
            signers,
            server,
        })
    }

    fn push(&self, motd: &str) -> String {
        for (path, content) in gateway_config(motd) {
            self.repo.write(path, content);
        }
        let id = self.repo.commit_signed(&self.key, motd.trim());
        self.repo.publish_to(self.dir.path().join("srv/config.git"));
        id
    }

    /// Writes `text` as the auth file `name` with `mode`, and returns its path.
    fn auth_file(&self, name: &str, text: &str, mode: u32) -> PathBuf {
        let path = self.dir.path().join(name);
        std::fs::write(&path, text).expect("write the auth file");
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(mode)).expect("chmod");
        path
    }

    /// A device pulling `url` (the server's by default) with the credential in `auth_file`,
    /// trusting the CA PEM file `ca`.
    fn device_for(&self, name: &str, url: &str, ca: &Path, auth_file: &Path) -> Device {
        let extra = format!(
            "ca_file = \"{}\"\nauth_file = \"{}\"",
            ca.display(),
            auth_file.display()
        );
        Device::new(
            self.dir.path().join(name),
            url,
            &self.signers,
            "range",
            &extra,
        )
    }

    fn device(&self, name: &str, auth_file: &Path) -> Device {
        let url = self.server.url("config.git");
        self.device_for(name, &url, self.server.ca_pem_path(), auth_file)
    }

    fn motd(&self, device: &str) -> String {
        let path = self.dir.path().join(device).join("root/etc/motd");
        std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
    }
}

fn status(device: &Device) -> serde_json::Value {
    let run = device.agent(&["status", "--json"]);
    run.assert_ok();
    serde_json::from_str(&run.stdout).expect("status --json")
}

/// A failed network step must not read as a network failure when the network is fine.
fn assert_not_a_network_error(run: &Run) {
    assert!(
        !run.stderr.contains("check the network"),
        "an HTTP answer is not a network failure:\n{}",
        run.stderr
    );
}

#[test]
fn a_token_is_sent_with_every_request_and_a_noop_sync_is_still_one_round_trip() {
    let Some(p) = Private::new() else { return };
    let first = p.push("first\n");
    p.server.require_bearer(TOKEN);
    let auth = p.auth_file("git-auth.toml", &format!("token = \"{TOKEN}\"\n"), 0o600);
    let device = p.device("dev", &auth);

    device.sync().expect(0, "applied generation 1");
    assert_eq!(device.applied().as_deref(), Some(first.as_str()));
    assert_eq!(p.motd("dev"), "first\n");
    let bearer = format!("Bearer {TOKEN}");
    let sent = p.server.authorizations();
    assert!(
        !sent.is_empty() && sent.iter().all(|a| a.as_deref() == Some(bearer.as_str())),
        "every request carries the token, none waits for a 401 first: {sent:?}"
    );

    p.server.reset_counters();
    device.sync().expect(0, "");
    let requests = p.server.requests();
    assert!(
        requests.len() == 1 && requests[0].starts_with("GET "),
        "an authenticated no-op sync is one round trip, got {requests:?}"
    );
    assert_eq!(p.server.authorizations(), vec![Some(bearer)]);
}

#[test]
fn a_user_and_password_sync_with_basic_auth() {
    let Some(p) = Private::new() else { return };
    let first = p.push("basic\n");
    p.server.require_basic(USER, PASSWORD);
    let auth = p.auth_file(
        "git-auth.toml",
        &format!("username = \"{USER}\"\npassword = \"{PASSWORD}\"\n"),
        0o600,
    );
    let device = p.device("dev", &auth);
    device.sync().expect(0, "applied generation 1");
    assert_eq!(device.applied().as_deref(), Some(first.as_str()));
    assert_eq!(p.motd("dev"), "basic\n");
}

#[test]
fn refusals_name_the_credential_by_file_and_kind_and_say_what_they_mean() {
    let Some(p) = Private::new() else { return };
    p.push("private\n");
    p.server.require_bearer(TOKEN);

    let wrong = p.auth_file("wrong-token.toml", "token = \"not-the-token\"\n", 0o600);
    let run = p.device("wrong", &wrong).sync();
    run.expect(
        1,
        &format!(
            "authentication failed at the config repository {} (HTTP 401) with the token in {}",
            p.server.url("config.git"),
            wrong.display()
        ),
    );
    assert_not_a_network_error(&run);
    assert!(!run.stderr.contains("not-the-token"), "{}", run.stderr);

    let user = p.auth_file(
        "wrong-user.toml",
        &format!("username = \"{USER}\"\npassword = \"wrong\"\n"),
        0o600,
    );
    p.device("user", &user).sync().expect(
        1,
        &format!("(HTTP 401) with user \"{USER}\" from {}", user.display()),
    );

    // A valid credential without access to the repository.
    let right = p.auth_file("git-auth.toml", &format!("token = \"{TOKEN}\"\n"), 0o600);
    p.server.forbid();
    let run = p.device("forbidden", &right).sync();
    run.expect(
        1,
        &format!(
            "the config repository {} refused access (HTTP 403) to the token in {}",
            p.server.url("config.git"),
            right.display()
        ),
    );
    assert_not_a_network_error(&run);

    // A repository that is not there (or that the credential may not see).
    p.server.require_bearer(TOKEN);
    let url = p.server.url("missing.git");
    let missing = p.device_for("missing", &url, p.server.ca_pem_path(), &right);
    let run = missing.sync();
    run.expect(
        1,
        &format!(
            "the config repository {url} does not exist, or the token in {} has no access to it \
             (HTTP 404)",
            right.display()
        ),
    );
    assert_not_a_network_error(&run);
}

#[test]
fn a_token_revoked_after_a_success_fails_clearly_and_leaves_the_device_as_it_was() {
    let Some(p) = Private::new() else { return };
    let first = p.push("before revocation\n");
    p.server.require_bearer(TOKEN);
    let auth = p.auth_file("git-auth.toml", &format!("token = \"{TOKEN}\"\n"), 0o600);
    let device = p.device("dev", &auth);
    device.sync().expect(0, "applied generation 1");
    let before = status(&device);

    // The forge revokes the token; a new signed commit is waiting behind it.
    p.server.require_bearer("a-rotated-token");
    p.push("after revocation\n");
    let run = device.sync();
    run.expect(1, "authentication failed")
        .expect(1, "expired or revoked")
        .expect(1, &auth.display().to_string());
    assert_not_a_network_error(&run);

    let after = status(&device);
    assert_eq!(after["applied_commit"], first.as_str(), "watermark kept");
    assert_eq!(after["generation"], before["generation"], "generation kept");
    assert_eq!(after["commit"], before["commit"]);
    assert_eq!(p.motd("dev"), "before revocation\n", "files kept");
    assert_eq!(after["last_result"]["status"], "failed", "{after}");

    // The operator puts the new token in the file: the next sync converges.
    std::fs::write(&auth, "token = \"a-rotated-token\"\n").expect("rotate");
    device.sync().expect(0, "applied generation 2");
    assert_eq!(p.motd("dev"), "after revocation\n");
}

#[test]
fn a_credential_file_others_can_read_stops_the_agent_naming_the_file() {
    let Some(p) = Private::new() else { return };
    p.push("private\n");
    let auth = p.auth_file("git-auth.toml", &format!("token = \"{TOKEN}\"\n"), 0o644);
    let device = p.device("dev", &auth);
    let run = device.sync();
    run.expect(
        2,
        &format!(
            "`source.auth_file`: the auth file {} has mode 0644, readable by others than its \
             owner; chmod 600 it",
            auth.display()
        ),
    );
    assert!(!run.stderr.contains(TOKEN));
    assert!(p.server.requests().is_empty(), "nothing was fetched");
    assert!(!device.state_dir().exists(), "nothing was written");
    device.agent(&["status"]).expect(2, "has mode 0644");

    std::fs::set_permissions(&auth, std::fs::Permissions::from_mode(0o600)).expect("chmod");
    device.sync().expect(0, "applied generation 1");
}

#[test]
fn a_redirect_to_another_host_never_receives_the_credential() {
    let Some(p) = Private::new() else { return };
    p.push("redirected\n");
    // The second host serves the same repository, openly, under a name the agent would trust:
    // its CA is in the device's CA file too, so only the agent's rule keeps the token from it.
    let other = HttpsGitServer::start(p.dir.path().join("srv"));
    let cas = p.dir.path().join("both-cas.pem");
    let pems = [p.server.ca_pem_path(), other.ca_pem_path()]
        .map(|path| std::fs::read_to_string(path).expect("read a CA"));
    std::fs::write(&cas, pems.concat()).expect("write the CA file");
    let elsewhere = format!("https://127.0.0.1:{}", other.port());
    p.server.redirect_to(&elsewhere);

    let auth = p.auth_file("git-auth.toml", &format!("token = \"{TOKEN}\"\n"), 0o600);
    let device = p.device_for("dev", &p.server.url("config.git"), &cas, &auth);
    let run = device.sync();
    run.expect(1, "answered with a redirect")
        .expect(1, "set [source] url to the repository's final address");
    assert_not_a_network_error(&run);
    assert_eq!(
        p.server.authorizations(),
        vec![Some(format!("Bearer {TOKEN}"))],
        "the configured origin got the token, once"
    );
    let leaked: Vec<_> = other
        .authorizations()
        .into_iter()
        .filter(Option::is_some)
        .collect();
    assert!(leaked.is_empty(), "the other host received {leaked:?}");
    assert_eq!(device.applied(), None);

    // The same redirect without a credential is followed as git does, and the sync converges:
    // the rule above is about the credential, not redirects in general.
    let open = Device::new(
        p.dir.path().join("open"),
        &p.server.url("config.git"),
        &p.signers,
        "range",
        &format!("ca_file = \"{}\"", cas.display()),
    );
    open.sync().expect(0, "applied generation 1");
    assert!(!other.requests().is_empty(), "followed to the other host");
    assert!(other.authorizations().iter().all(Option::is_none));
}

/// Every file under `dir`, as bytes, with its path.
fn files_under(dir: &Path) -> Vec<(PathBuf, Vec<u8>)> {
    let mut out = Vec::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        for entry in std::fs::read_dir(&d).expect("read_dir") {
            let path = entry.expect("entry").path();
            let meta = std::fs::symlink_metadata(&path).expect("metadata");
            if meta.is_dir() {
                stack.push(path);
            } else if meta.is_file() {
                let bytes = std::fs::read(&path).expect("read");
                out.push((path, bytes));
            }
        }
    }
    out
}

fn contains(haystack: &[u8], needle: &str) -> bool {
    haystack
        .windows(needle.len())
        .any(|w| w == needle.as_bytes())
}

/// How a server checks a credential, and what the device's auth file holds.
struct Access {
    require: fn(&HttpsGitServer),
    auth_file: String,
    /// Every form the secret could leak in (the value, and as it goes on the wire).
    secrets: Vec<String>,
}

#[test]
fn the_token_appears_in_no_output_of_a_succeeding_or_a_failing_sync() {
    secret_appears_in_no_output(Access {
        require: |server| server.require_bearer(TOKEN),
        auth_file: format!("token = \"{TOKEN}\"\n"),
        secrets: vec![TOKEN.to_owned()],
    });
}

#[test]
fn the_password_appears_in_no_output_of_a_succeeding_or_a_failing_sync() {
    use base64::Engine as _;
    let basic = base64::engine::general_purpose::STANDARD.encode(format!("{USER}:{PASSWORD}"));
    secret_appears_in_no_output(Access {
        require: |server| server.require_basic(USER, PASSWORD),
        auth_file: format!("username = \"{USER}\"\npassword = \"{PASSWORD}\"\n"),
        secrets: vec![PASSWORD.to_owned(), basic],
    });
}

fn secret_appears_in_no_output(access: Access) {
    let Some(p) = Private::new() else { return };
    p.push("watched\n");
    (access.require)(&p.server);
    let auth = p.auth_file("git-auth.toml", &access.auth_file, 0o600);
    let device = p.device("dev", &auth);
    let outputs = p.outputs_of_a_good_and_a_failing_sync(&device, || {
        // The server stops accepting the credential (revoked); the device still sends it.
        p.server.require_bearer("revoked-the-old-one");
        "authentication failed"
    });
    assert_no_secret_in(&outputs, &access.secrets);
}

impl Private {
    /// Everything a device shows or keeps around a sync that succeeds and one that fails after
    /// `break_access` (which returns what the failure says): both syncs' stdout and stderr at
    /// trace level (the agent and its libraries: gix, reqwest, hyper, rustls, and what ssh says),
    /// `status`, `status --json`, `history --json`, and every file of the state directory,
    /// queued reports included (the collector is down, so they stay in the outbox).
    fn outputs_of_a_good_and_a_failing_sync(
        &self,
        device: &Device,
        break_access: impl FnOnce() -> &'static str,
    ) -> Vec<(String, Vec<u8>)> {
        let enroll = self.dir.path().join("enroll-token");
        std::fs::write(&enroll, "enroll-me\n").expect("write the enroll token");
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .and_then(|l| l.local_addr())
            .expect("a free port")
            .port();
        device.report_to(&format!("http://127.0.0.1:{port}"), &enroll);

        let mut outputs: Vec<(String, Vec<u8>)> = Vec::new();
        let mut record = |what: &str, run: &Run| {
            outputs.push((format!("{what} stdout"), run.stdout.clone().into_bytes()));
            outputs.push((format!("{what} stderr"), run.stderr.clone().into_bytes()));
        };
        let ok = device.agent_logging(&["sync"], "trace");
        assert_eq!(ok.code, 0, "{}", ok.stderr);
        assert!(ok.stderr.contains("TRACE"), "trace logging is on");
        record("succeeding sync", &ok);
        let expected = break_access();
        self.push("watched again\n");
        let failed = device.agent_logging(&["sync"], "trace");
        assert_eq!(failed.code, 1, "{}", failed.stderr);
        assert!(failed.stderr.contains(expected), "{}", failed.stderr);
        record("failing sync", &failed);
        for args in [
            &["status"][..],
            &["status", "--json"],
            &["history", "--json"],
        ] {
            record(&args.join(" "), &device.agent_logging(args, "trace"));
        }
        for (path, bytes) in files_under(&device.state_dir()) {
            outputs.push((path.display().to_string(), bytes));
        }
        let names: Vec<&str> = outputs.iter().map(|(name, _)| name.as_str()).collect();
        assert!(
            names.iter().any(|n| n.ends_with("last-result.json")),
            "{names:?}"
        );
        assert!(names.iter().any(|n| n.contains("/outbox/")), "{names:?}");
        outputs
    }
}

fn assert_no_secret_in(outputs: &[(String, Vec<u8>)], secrets: &[String]) {
    assert!(!secrets.is_empty());
    for (name, bytes) in outputs {
        for secret in secrets {
            assert!(!contains(bytes, secret), "{secret:?} appears in {name}");
        }
    }
}

// ---- SSH: a deploy key and a pinned host key, against a real sshd ----

/// An operator's repository served by a real sshd, a device's deploy key it accepts, and the
/// known_hosts file pinning its host key.
struct OverSsh {
    p: Private,
    sshd: SshServer,
    deploy_key: SigningKey,
    known_hosts: PathBuf,
}

impl OverSsh {
    fn new() -> Option<Self> {
        let p = Private::new()?;
        let sshd = SshServer::start(p.dir.path().join("srv"))?;
        let deploy_key = SigningKey::generate(p.dir.path().join("device-keys"), "deploy");
        sshd.authorize(deploy_key.public_line());
        let known_hosts = p.dir.path().join("known_hosts");
        write_mode(
            &known_hosts,
            &format!("# pinned\n{}\n", sshd.known_hosts_line()),
            0o644,
        );
        Some(OverSsh {
            p,
            sshd,
            deploy_key,
            known_hosts,
        })
    }

    fn device(&self, name: &str) -> Device {
        Device::new(
            self.p.dir.path().join(name),
            &self.sshd.url("config.git"),
            &self.p.signers,
            "range",
            &format!(
                "ssh_key = \"{}\"\nknown_hosts = \"{}\"",
                self.deploy_key.private_path().display(),
                self.known_hosts.display()
            ),
        )
    }

    /// A device converged to a first commit over ssh, a second commit waiting on the server,
    /// and its status before anything is broken.
    fn converged(&self) -> (Device, String, serde_json::Value) {
        let first = self.p.push("over ssh\n");
        let device = self.device("dev");
        device.sync().expect(0, "applied generation 1");
        assert_eq!(device.applied().as_deref(), Some(first.as_str()));
        assert_eq!(self.p.motd("dev"), "over ssh\n");
        let before = status(&device);
        self.p.push("second over ssh\n");
        (device, first, before)
    }

    /// After a refused sync: the watermark, the generation and the files are as they were.
    fn assert_kept(&self, device: &Device, first: &str, before: &serde_json::Value) {
        let after = status(device);
        assert_eq!(after["applied_commit"], first, "watermark kept");
        assert_eq!(after["generation"], before["generation"], "generation kept");
        assert_eq!(after["commit"], before["commit"]);
        assert_eq!(after["last_result"]["status"], "failed", "{after}");
        assert_eq!(self.p.motd("dev"), "over ssh\n", "files kept");
    }
}

fn write_mode(path: &Path, text: &str, mode: u32) {
    std::fs::write(path, text).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode)).expect("chmod");
}

#[test]
fn ssh_with_a_deploy_key_and_a_pinned_host_key_converges_and_a_noop_sync_is_one_connection() {
    let Some(s) = OverSsh::new() else { return };
    let (device, _, _) = s.converged();
    device.sync().expect(0, "applied generation 2");
    assert_eq!(s.p.motd("dev"), "second over ssh\n");

    let connections = s.sshd.connections();
    let files = device.state_files();
    device.sync().expect(0, "");
    assert_eq!(
        s.sshd.connections(),
        connections + 1,
        "a no-op sync over ssh is one connection:\n{}",
        s.sshd.log()
    );
    assert_eq!(device.state_files(), files, "a no-op sync writes nothing");
    assert!(
        s.sshd.log().contains("Accepted publickey for"),
        "{}",
        s.sshd.log()
    );
}

#[test]
fn an_ssh_host_with_no_pinned_key_is_refused_naming_the_known_hosts_file() {
    let Some(s) = OverSsh::new() else { return };
    let (device, first, before) = s.converged();
    // The file now pins only another server's key.
    let other = SigningKey::generate(s.p.dir.path().join("other-host"), "other-host");
    write_mode(
        &s.known_hosts,
        &format!("git.example.com {}\n", other.public_line()),
        0o644,
    );
    let run = device.sync();
    run.expect(
        1,
        &format!(
            "the SSH host 127.0.0.1:{port} of the config repository {url} has no key pinned in \
             {kh}, and the agent trusts no other; nothing was fetched. Add the server's line to \
             that file (`ssh-keyscan -p PORT HOST`",
            port = s.sshd.port(),
            url = s.sshd.url("config.git"),
            kh = s.known_hosts.display()
        ),
    );
    assert_not_a_network_error(&run);
    s.assert_kept(&device, &first, &before);
}

#[test]
fn a_changed_ssh_host_key_is_refused_naming_both_fingerprints() {
    let Some(s) = OverSsh::new() else { return };
    let (device, first, before) = s.converged();
    // The device pins a key the server does not have: what a device sees when the server (or
    // something between) presents another key than the one pinned.
    let pinned = SigningKey::generate(s.p.dir.path().join("old-host"), "old-host");
    let mut fields = pinned.public_line().split_whitespace();
    let (kind, key) = (fields.next().unwrap(), fields.next().unwrap());
    write_mode(
        &s.known_hosts,
        &format!("# the server\n[127.0.0.1]:{} {kind} {key}\n", s.sshd.port()),
        0o644,
    );
    let run = device.sync();
    run.expect(
        1,
        &format!(
            "the SSH host key of 127.0.0.1:{} does not match the one pinned for it in {}: \
             pinned ED25519 {} (line 2), offered by the server ED25519 {}; nothing was fetched",
            s.sshd.port(),
            s.known_hosts.display(),
            pinned.fingerprint(),
            s.sshd.host_fingerprint()
        ),
    )
    .expect(1, "someone may be intercepting the connection");
    assert_not_a_network_error(&run);
    assert!(
        !run.stderr.contains("@@@@"),
        "ssh's own banner is not passed through:\n{}",
        run.stderr
    );
    s.assert_kept(&device, &first, &before);
}

#[test]
fn a_deploy_key_the_server_does_not_know_fails_authentication_naming_the_key_file() {
    let Some(s) = OverSsh::new() else { return };
    let (device, first, before) = s.converged();
    // The device's key file now holds a key the server was never given.
    let stranger = SigningKey::generate(s.p.dir.path().join("stranger"), "stranger");
    std::fs::copy(stranger.private_path(), s.deploy_key.private_path()).expect("replace the key");
    let run = device.sync();
    run.expect(
        1,
        &format!(
            "authentication failed at the config repository {} (SSH) with the deploy key {}; \
             give the repository the key's public half (`ssh-keygen -y -f FILE`) as a read-only \
             deploy key",
            s.sshd.url("config.git"),
            s.deploy_key.private_path().display()
        ),
    );
    assert_not_a_network_error(&run);
    s.assert_kept(&device, &first, &before);
}

#[test]
fn an_sshd_that_is_down_is_unreachable_and_changes_nothing() {
    let Some(mut s) = OverSsh::new() else { return };
    let (device, first, before) = s.converged();
    s.sshd.stop();
    device
        .sync()
        .expect(
            1,
            &format!(
                "cannot reach the config repository {} after 1 attempt(s)",
                s.sshd.url("config.git")
            ),
        )
        .expect(1, "Connection refused");
    s.assert_kept(&device, &first, &before);
}

#[test]
fn a_deploy_key_others_can_read_stops_the_agent_naming_the_file() {
    let Some(s) = OverSsh::new() else { return };
    s.p.push("private\n");
    let device = s.device("dev");
    let key = s.deploy_key.private_path();
    std::fs::set_permissions(key, std::fs::Permissions::from_mode(0o640)).expect("chmod");
    device.sync().expect(
        2,
        &format!(
            "`source.ssh_key`: the deploy key {} has mode 0640, readable by others than its \
             owner; chmod 600 it",
            key.display()
        ),
    );
    assert_eq!(s.sshd.connections(), 0, "nothing was fetched");
    assert!(!device.state_dir().exists(), "nothing was written");

    std::fs::set_permissions(key, std::fs::Permissions::from_mode(0o600)).expect("chmod");
    write_mode(&s.known_hosts, &s.sshd.known_hosts_line(), 0o666);
    device.sync().expect(
        2,
        &format!(
            "`source.known_hosts`: cannot use the known_hosts file {}: it has mode 0666, \
             writable by others than its owner, who could replace the pinned key; chmod 644 it",
            s.known_hosts.display()
        ),
    );
    std::fs::set_permissions(&s.known_hosts, std::fs::Permissions::from_mode(0o644))
        .expect("chmod");
    device.sync().expect(0, "applied generation 1");
}

#[test]
fn the_deploy_key_appears_in_no_output_of_a_succeeding_or_a_failing_ssh_sync() {
    let Some(s) = OverSsh::new() else { return };
    s.p.push("watched\n");
    let device = s.device("dev");
    let original = std::fs::read_to_string(s.deploy_key.private_path()).expect("read the key");
    let outputs = s.p.outputs_of_a_good_and_a_failing_sync(&device, || {
        let stranger = SigningKey::generate(s.p.dir.path().join("stranger"), "stranger");
        std::fs::copy(stranger.private_path(), s.deploy_key.private_path())
            .expect("replace the key");
        "authentication failed"
    });
    // Every line of both keys' base64 bodies: the one that worked and the one that failed.
    let stranger = std::fs::read_to_string(s.deploy_key.private_path()).expect("read the key");
    let secrets: Vec<String> = [original, stranger]
        .iter()
        .flat_map(|k| secret_lines(k))
        .collect();
    assert_no_secret_in(&outputs, &secrets);
}

/// The body lines of a PEM private key: what must never be shown.
fn secret_lines(pem: &str) -> Vec<String> {
    pem.lines()
        .filter(|l| !l.starts_with("-----") && l.len() >= 16)
        .map(str::to_owned)
        .collect()
}

// ---- Proxies: a real forward proxy (tinyproxy), CONNECT for HTTPS ----

const PROXY_USER: &str = "fleet";
const PROXY_PASSWORD: &str = "pr0xy-pa55-4c1d";

/// A private HTTPS repository (token), a forward proxy requiring basic auth, and the device's
/// proxy credential file.
struct BehindProxy {
    p: Private,
    proxy: ForwardProxy,
    token_file: PathBuf,
    proxy_auth: PathBuf,
}

impl BehindProxy {
    fn new() -> Option<Self> {
        let p = Private::new()?;
        let proxy = ForwardProxy::start_requiring(PROXY_USER, PROXY_PASSWORD)?;
        p.server.require_bearer(TOKEN);
        let token_file = p.auth_file("git-auth.toml", &format!("token = \"{TOKEN}\"\n"), 0o600);
        let proxy_auth = p.auth_file(
            "proxy-auth.toml",
            &format!("username = \"{PROXY_USER}\"\npassword = \"{PROXY_PASSWORD}\"\n"),
            0o600,
        );
        Some(BehindProxy {
            p,
            proxy,
            token_file,
            proxy_auth,
        })
    }

    /// A device whose `[source]` ends with `extra` (its proxy settings).
    fn device(&self, name: &str, extra: &str) -> Device {
        Device::new(
            self.p.dir.path().join(name),
            &self.p.server.url("config.git"),
            &self.p.signers,
            "range",
            &format!(
                "ca_file = \"{}\"\nauth_file = \"{}\"\n{extra}",
                self.p.server.ca_pem_path().display(),
                self.token_file.display()
            ),
        )
    }

    /// `proxy = "…"` and `proxy_auth_file = "…"` for `[source]` or `[collector]`.
    fn settings(&self) -> String {
        format!(
            "proxy = \"{}\"\nproxy_auth_file = \"{}\"",
            self.proxy.url(),
            self.proxy_auth.display()
        )
    }

    /// The tunnels the proxy opened to the git server.
    fn tunnels_to_the_server(&self) -> usize {
        let connect = format!("CONNECT localhost:{} ", self.p.server.port());
        self.proxy
            .requests()
            .iter()
            .filter(|r| r.starts_with(&connect))
            .count()
    }
}

/// A loopback URL where nothing listens.
fn dead_url() -> String {
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("a free port")
        .port();
    format!("http://127.0.0.1:{port}")
}

#[test]
fn a_configured_proxy_carries_the_fetch_through_connect_with_its_own_credential() {
    let Some(b) = BehindProxy::new() else { return };
    let first = b.p.push("through the proxy\n");
    let device = b.device("dev", &b.settings());
    device.sync().expect(0, "applied generation 1");
    assert_eq!(device.applied().as_deref(), Some(first.as_str()));
    assert_eq!(b.p.motd("dev"), "through the proxy\n");
    assert!(
        b.tunnels_to_the_server() >= 1,
        "the fetch went through the proxy's CONNECT: {:?}",
        b.proxy.requests()
    );
    // The repository's token went through the tunnel to the server, not to the proxy.
    let bearer = format!("Bearer {TOKEN}");
    assert!(b
        .p
        .server
        .authorizations()
        .iter()
        .all(|a| a.as_deref() == Some(bearer.as_str())));
    assert!(!b.proxy.log().contains(TOKEN));

    // A no-op sync is still one request to the server, in one tunnel.
    b.p.server.reset_counters();
    let tunnels = b.tunnels_to_the_server();
    device.sync().expect(0, "");
    assert_eq!(b.p.server.request_count(), 1, "{:?}", b.p.server.requests());
    assert_eq!(b.tunnels_to_the_server(), tunnels + 1);
}

#[test]
fn a_proxy_that_is_down_is_named_unreachable_and_changes_nothing() {
    let Some(mut b) = BehindProxy::new() else {
        return;
    };
    let first = b.p.push("through the proxy\n");
    let device = b.device("dev", &b.settings());
    device.sync().expect(0, "applied generation 1");
    let before = status(&device);
    b.p.push("while the proxy is down\n");
    b.proxy.stop();
    let run = device.sync();
    run.expect(
        1,
        &format!(
            "the proxy {} (from [source] proxy) is unreachable: the config repository {} could \
             not be contacted through it after 1 attempt(s): ",
            b.proxy.url(),
            b.p.server.url("config.git")
        ),
    )
    .expect(
        1,
        "check that the proxy runs and that the device can reach it",
    );
    let after = status(&device);
    assert_eq!(after["applied_commit"], first.as_str(), "watermark kept");
    assert_eq!(after["generation"], before["generation"], "generation kept");
    assert_eq!(b.p.motd("dev"), "through the proxy\n", "files kept");
}

#[test]
fn a_proxy_that_refuses_the_credential_is_named_with_the_credential_file() {
    let Some(b) = BehindProxy::new() else { return };
    b.p.push("through the proxy\n");
    let wrong = b.p.auth_file(
        "wrong-proxy-auth.toml",
        &format!("username = \"{PROXY_USER}\"\npassword = \"not-it\"\n"),
        0o600,
    );
    let device = b.device(
        "dev",
        &format!(
            "proxy = \"{}\"\nproxy_auth_file = \"{}\"",
            b.proxy.url(),
            wrong.display()
        ),
    );
    let run = device.sync();
    // tinyproxy answers a refused credential with 401 (a proxy that says 407 is named as
    // requiring authentication: `proxy` unit tests).
    run.expect(
        1,
        &format!(
            "the proxy {} (from [source] proxy) refused or failed the CONNECT to the config \
             repository {} after 1 attempt(s): ",
            b.proxy.url(),
            b.p.server.url("config.git"),
        ),
    )
    .expect(
        1,
        &format!(
            "check that it accepts user \"{PROXY_USER}\" from {} and allows CONNECT to that host \
             and port",
            wrong.display()
        ),
    );
    assert!(!run.stderr.contains("not-it"), "{}", run.stderr);
    assert_eq!(device.applied(), None);
    assert!(
        b.p.server.requests().is_empty(),
        "the server was not reached"
    );
}

#[test]
fn https_proxy_from_the_environment_is_used_and_no_proxy_is_honoured() {
    let Some(p) = Private::new() else { return };
    let Some(proxy) = ForwardProxy::start() else {
        return;
    };
    p.push("from the environment\n");
    let auth = p.auth_file("git-auth.toml", &format!("token = \"{TOKEN}\"\n"), 0o600);
    p.server.require_bearer(TOKEN);
    let device = p.device("dev", &auth);
    let connect = format!("CONNECT localhost:{} ", p.server.port());

    let run = device.agent_with_env(&["sync"], "warn", &[("HTTPS_PROXY", &proxy.url())]);
    run.expect(0, "applied generation 1");
    assert!(
        proxy.requests().iter().any(|r| r.starts_with(&connect)),
        "HTTPS_PROXY carried the fetch: {:?}",
        proxy.requests()
    );

    // A proxy that does not answer, which NO_PROXY bypasses for this host: the sync goes direct.
    p.push("direct\n");
    let dead = dead_url();
    let requests = proxy.requests().len();
    let run = device.agent_with_env(
        &["sync"],
        "warn",
        &[
            ("https_proxy", &dead),
            ("NO_PROXY", "example.org,localhost"),
        ],
    );
    run.expect(0, "applied generation 2");
    assert_eq!(proxy.requests().len(), requests);

    // Without NO_PROXY the dead proxy is named, with where it came from.
    p.push("blocked\n");
    let run = device.agent_with_env(&["sync"], "warn", &[("HTTPS_PROXY", &dead)]);
    run.expect(
        1,
        &format!("the proxy {dead} (from HTTPS_PROXY) is unreachable: the config repository"),
    );
    assert_eq!(p.motd("dev"), "direct\n", "files kept");
}

#[test]
fn reports_go_through_the_collector_proxy() {
    let Some(b) = BehindProxy::new() else { return };
    b.p.push("reported\n");
    let device = b.device("dev", "");
    let enroll = b.p.dir.path().join("enroll-token");
    std::fs::write(&enroll, "enroll-me-through-the-proxy\n").expect("write the enroll token");
    let collector =
        shoal_e2e::CollectorSpec::local(b.p.dir.path().join("collector-data"), enroll.clone())
            .start();
    device.report_to(collector.url(), &enroll);
    let config = std::fs::read_to_string(device.config_path()).expect("read agent.toml");
    std::fs::write(device.config_path(), format!("{config}{}\n", b.settings()))
        .expect("write agent.toml");

    device.sync().expect(0, "applied generation 1");
    let seen = collector.get("/api/v1/devices/dev-1");
    assert_eq!(seen["status"], "converged", "{seen}");
    let post = format!("POST {}/api/v1/reports ", collector.url());
    assert!(
        b.proxy.requests().iter().any(|r| r.starts_with(&post)),
        "the report went through the proxy: {:?}",
        b.proxy.requests()
    );
    assert_eq!(b.tunnels_to_the_server(), 0, "the fetch is not proxied");
}

#[test]
fn the_proxy_credential_appears_in_no_output_of_a_succeeding_or_a_failing_sync() {
    use base64::Engine as _;
    let Some(b) = BehindProxy::new() else { return };
    b.p.push("watched\n");
    let device = b.device("dev", &b.settings());
    let outputs = b.p.outputs_of_a_good_and_a_failing_sync(&device, || {
        // The proxy's password is rotated; the device still sends the old one.
        std::fs::write(
            &b.proxy_auth,
            format!("username = \"{PROXY_USER}\"\npassword = \"{PROXY_PASSWORD}-old\"\n"),
        )
        .expect("rewrite the proxy credential");
        "refused or failed the CONNECT"
    });
    let basic =
        base64::engine::general_purpose::STANDARD.encode(format!("{PROXY_USER}:{PROXY_PASSWORD}"));
    assert_no_secret_in(
        &outputs,
        &[PROXY_PASSWORD.to_owned(), basic, TOKEN.to_owned()],
    );
}

// ---- mTLS: a server that requires a client certificate ----

/// A private repository whose server requires a client certificate signed by `clients`, and a
/// device presenting `cert` (or none).
fn mtls_device(
    p: &Private,
    server: &HttpsGitServer,
    name: &str,
    cert: Option<&ClientCert>,
) -> Device {
    let mut extra = format!("ca_file = \"{}\"", server.ca_pem_path().display());
    if let Some(cert) = cert {
        extra.push_str(&format!(
            "\nclient_cert = \"{}\"\nclient_key = \"{}\"",
            cert.cert_path.display(),
            cert.key_path.display()
        ));
    }
    Device::new(
        p.dir.path().join(name),
        &server.url("config.git"),
        &p.signers,
        "range",
        &extra,
    )
}

#[test]
fn a_client_certificate_the_server_requires_converges() {
    let Some(p) = Private::new() else { return };
    let first = p.push("mutual\n");
    let clients = TestCa::for_names(&["shoal-device-ca"]);
    let server = HttpsGitServer::start_requiring_client_cert(p.dir.path().join("srv"), &clients);
    let cert = clients.issue_client(&p.dir.path().join("client"), "dev-1");
    let device = mtls_device(&p, &server, "dev", Some(&cert));
    device.sync().expect(0, "applied generation 1");
    assert_eq!(device.applied().as_deref(), Some(first.as_str()));
    assert_eq!(p.motd("dev"), "mutual\n");
}

#[test]
fn no_client_certificate_or_one_of_another_ca_is_named_as_client_authentication() {
    let Some(p) = Private::new() else { return };
    p.push("mutual\n");
    let clients = TestCa::for_names(&["shoal-device-ca"]);
    let server = HttpsGitServer::start_requiring_client_cert(p.dir.path().join("srv"), &clients);
    let url = server.url("config.git");

    let run = mtls_device(&p, &server, "none", None).sync();
    run.expect(
        1,
        &format!(
            "the config repository {url} refused the TLS client authentication of the agent, \
             which has no client certificate ([source] client_cert): "
        ),
    )
    .expect(
        1,
        "set [source] client_cert and client_key to one it accepts",
    );
    assert_not_a_network_error(&run);

    let stranger_ca = TestCa::for_names(&["another-ca"]);
    let stranger = stranger_ca.issue_client(&p.dir.path().join("stranger"), "dev-1");
    let device = mtls_device(&p, &server, "stranger", Some(&stranger));
    let run = device.sync();
    run.expect(
        1,
        &format!(
            "the config repository {url} refused the TLS client authentication of the client \
             certificate {}: ",
            stranger.cert_path.display()
        ),
    );
    assert_not_a_network_error(&run);
    assert_eq!(device.applied(), None);
    assert!(server.requests().is_empty(), "no request got through");

    // The client key follows the auth file's rule.
    std::fs::set_permissions(&stranger.key_path, std::fs::Permissions::from_mode(0o644))
        .expect("chmod");
    device.sync().expect(
        2,
        &format!(
            "`source.client_key`: the client key {} has mode 0644, readable by others than its \
             owner; chmod 600 it",
            stranger.key_path.display()
        ),
    );
}
