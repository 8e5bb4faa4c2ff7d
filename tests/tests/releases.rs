//! Environments bound by signed releases, end to end (issue 13): a device with `[source]
//! environment = "production"` follows `refs/shoal/releases/production`, served by a real
//! `git daemon` (and smart HTTP over TLS), and accepts only a release tag made by stock git,
//! signed by a trusted key, for its own environment, newer than the last one, of a commit that
//! descends from the applied one, and not expired. Each bad release is refused (or reported
//! `stale`) with its reason, the device's files, watermark and generation stay as they were, and
//! every signature verdict agrees with `git verify-tag` on the same allowed_signers.

use std::path::{Path, PathBuf};
use std::process::Command;

use shoal_e2e::{
    agent_bin, gateway_config, isolate_git, output, require_tools, write_allowed_signers,
    CollectorSpec, HttpsGitServer, Run, Sandbox, SigningKey,
};

const PRODUCTION_REF: &str = "refs/shoal/releases/production";
const FAR_FUTURE: &str = "2099-01-01T00:00:00Z";

/// A sandbox whose device follows the production environment over `git daemon`, with a
/// release bot key (trusted) and mallory's key (not trusted) beside the operator's.
struct Releases {
    s: Sandbox,
    bot: SigningKey,
    mallory: SigningKey,
    signers: PathBuf,
}

impl Releases {
    /// The device at generation 1: commit `first`, released as production/1 (far from expiry)
    /// and applied; returns that commit.
    fn at_release_1(&self) -> String {
        let first = self.commit("first\n");
        self.tag(&self.bot, "production/1", &first, FAR_FUTURE, None);
        self.serve("production/1");
        self.s.device.sync().expect(0, "applied generation 1");
        first
    }

    fn new() -> Option<Releases> {
        Releases::from(Sandbox::over_git_daemon()?)
    }

    fn from(s: Sandbox) -> Option<Releases> {
        let keys = s.dir.path().join("keys");
        let bot = SigningKey::generate(&keys, "release-bot");
        let mallory = SigningKey::generate(&keys, "mallory");
        let signers = s.dir.path().join("allowed_signers");
        write_allowed_signers(
            &signers,
            &[("operator@example", &s.key), ("release-bot@example", &bot)],
        );
        s.device.follow_environment("production");
        Some(Releases {
            s,
            bot,
            mallory,
            signers,
        })
    }

    fn bare(&self) -> PathBuf {
        self.s.dir.path().join("srv/config.git")
    }

    /// Commits `motd` signed by the operator and publishes the branches (not a release).
    fn commit(&self, motd: &str) -> String {
        self.s.push(&gateway_config(motd), motd.trim())
    }

    /// A release tag `name` on `target` signed by `key`, tagged at `time` if given, expiring at
    /// `expires`; returns the tag id. Not published yet.
    fn tag(
        &self,
        key: &SigningKey,
        name: &str,
        target: &str,
        expires: &str,
        time: Option<i64>,
    ) -> String {
        let message = format!("Release {name}\n\nExpires: {expires}");
        self.s.repo.tag_signed(key, name, target, &message, time)
    }

    /// Serves `source` (a tag name or an object id) at the production release ref.
    fn serve(&self, source: &str) {
        let source = if source.contains('/') {
            format!("refs/tags/{source}")
        } else {
            source.to_owned()
        };
        self.s
            .repo
            .publish_ref(self.bare(), &source, PRODUCTION_REF);
    }

    /// `git verify-tag` with the device's allowed_signers.
    fn git_verifies(&self, tag: &str) -> bool {
        self.s.repo.git_verifies_tag(&self.signers, tag)
    }

    /// `shoal-agent verify --release`, trusting the device's signers: a release ref is read where
    /// it is served (the bare repository), a tag in the work repository.
    fn agent_verifies(&self, reference: &str, environment: &str) -> Run {
        let repo = if reference.starts_with("refs/shoal/") {
            self.bare()
        } else {
            self.s.repo.path().to_owned()
        };
        let repo = repo.display().to_string();
        let signers = self.signers.display().to_string();
        self.s.device.agent(&[
            "verify",
            &repo,
            "--release",
            reference,
            "--env",
            environment,
            "--allowed-signers",
            &signers,
        ])
    }

    /// Cuts the device off: its git server and its collector are unreachable addresses, so only
    /// a bundle can bring it anything and its reports wait in the outbox.
    fn offline(&self) {
        let config = std::fs::read_to_string(self.s.device.config_path()).unwrap();
        let served = self
            .s
            .daemon
            .as_ref()
            .expect("git daemon")
            .url("config.git");
        assert!(config.contains(&served), "{config}");
        std::fs::write(
            self.s.device.config_path(),
            config.replace(&served, "git://127.0.0.1:9/config.git"),
        )
        .unwrap();
        let token = self.s.dir.path().join("enroll-token");
        std::fs::write(&token, "enroll-token-0123456789abcdef\n").unwrap();
        self.s.device.report_to("http://127.0.0.1:9", &token);
    }

    /// A bundle file holding the release ref pointing at `source` (a tag name or an object id),
    /// with only what descends from `base` when given (an incremental bundle); returns its path.
    fn bundle(&self, file: &str, source: &str, base: Option<&str>) -> String {
        let source = if source.contains('/') {
            format!("refs/tags/{source}")
        } else {
            source.to_owned()
        };
        self.s.repo.git(&["update-ref", PRODUCTION_REF, &source]);
        let path = self.s.dir.path().join(file).display().to_string();
        let range = match base {
            Some(base) => format!("{base}..{PRODUCTION_REF}"),
            None => PRODUCTION_REF.to_owned(),
        };
        self.s.repo.git(&["bundle", "create", "-q", &path, &range]);
        path
    }

    /// `sync --from-bundle FILE`, expecting the refusal `needle` (exit 1) and the device unchanged.
    fn refused_bundle(&self, file: &str, needle: &str) {
        let before = self.device_state();
        self.s
            .device
            .agent(&["sync", "--from-bundle", file])
            .expect(1, needle);
        assert_eq!(
            self.device_state(),
            before,
            "a refused bundle changes nothing"
        );
    }

    /// What a refused release must leave as it was: the device's files, the watermark (commit
    /// and release) and the current generation.
    fn device_state(&self) -> DeviceState {
        let state = self.s.device.state_dir();
        let read = |p: &Path| std::fs::read_to_string(p).ok();
        DeviceState {
            motd: read(&self.s.root("/etc/motd")),
            watermark: read(&state.join("applied-commit")),
            generation: read(&state.join("current-generation")),
        }
    }

    /// Syncs, expecting the refusal `needle` (exit 1) and the device unchanged.
    fn refused(&self, needle: &str) -> Run {
        let before = self.device_state();
        let run = self.s.device.sync();
        run.expect(1, needle);
        assert_eq!(
            self.device_state(),
            before,
            "a refused release changes nothing"
        );
        assert_eq!(self.s.status()["last_result"]["status"], "refused");
        run
    }
}

#[derive(Debug, PartialEq, Eq)]
struct DeviceState {
    motd: Option<String>,
    watermark: Option<String>,
    generation: Option<String>,
}

fn now() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .expect("clock after 1970")
        .as_secs() as i64
}

/// Runs `shoal-agent release` as an operator does in the work repository, signing with `key`
/// and pushing to the bare repository devices pull from.
fn release_command(r: &Releases, key: &SigningKey, args: &[&str]) -> Run {
    let mut cmd = Command::new(agent_bin());
    isolate_git(&mut cmd);
    cmd.arg("release")
        .arg("--repo")
        .arg(r.s.repo.path())
        .arg("--signing-key")
        .arg(key.private_path())
        .arg("--push")
        .arg(r.bare())
        .args(args);
    let out = output(&mut cmd);
    Run {
        code: out.status.code().unwrap_or(-1),
        stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
    }
}

#[test]
fn a_device_follows_signed_releases_and_a_fresh_release_of_the_same_commit_applies_nothing() {
    let Some(s) = Sandbox::new() else { return };
    let Some(r) = Releases::from(s) else { return };
    let first = r.commit("first\n");
    let srv = r.s.dir.path().join("srv");
    let server = HttpsGitServer::start(&srv);
    // Over smart HTTP with TLS, as devices pull in the field.
    let config = std::fs::read_to_string(r.s.device.config_path()).unwrap();
    let url = srv.join("config.git").display().to_string();
    let config = config.replace(&url, &server.url("config.git")).replace(
        "retries = 0\n",
        &format!(
            "retries = 0\nca_file = \"{}\"\n",
            server.ca_pem_path().display()
        ),
    );
    std::fs::write(r.s.device.config_path(), config).unwrap();

    // No release yet: the ref is missing, nothing happens.
    r.s.device.sync().expect(1, PRODUCTION_REF);

    let made = release_command(&r, &r.bot, &["--env", "production", "--expires", "7d"]);
    assert_eq!(made.code, 0, "{}", made.stderr);
    assert_eq!(made.stdout.trim(), "production/1");
    let tag1 = r.s.repo.git(&["rev-parse", "refs/tags/production/1"]);
    assert!(r.git_verifies(&tag1));
    r.agent_verifies(PRODUCTION_REF, "production")
        .expect(0, "good release production/1");

    r.s.device.sync().expect(0, "applied generation 1");
    assert_eq!(r.s.read("/etc/motd"), "first\n");
    let status = r.s.status();
    assert_eq!(status["commit"], first);
    assert_eq!(status["release"]["environment"], "production");
    assert_eq!(status["release"]["number"], 1);
    assert_eq!(status["release"]["tag"], tag1);
    let history = r.s.device.agent(&["history"]);
    history.expect(0, "(production/1)");

    // The bot re-signs N+1 for the same commit: accepted, no apply, no new generation.
    let made = release_command(&r, &r.bot, &["--env", "production"]);
    assert_eq!(made.stdout.trim(), "production/2", "{}", made.stderr);
    let before = r.device_state();
    server.reset_counters();
    r.s.device
        .sync()
        .expect(0, "up to date: generation 1")
        .expect(0, &format!("commit {first}, release production/2"));
    let requests = server.requests();
    assert!(
        requests.len() == 2,
        "a refresh is the ref advertisement and one small fetch, got {requests:?}"
    );
    let after = r.device_state();
    assert_eq!(
        (&after.motd, &after.generation),
        (&before.motd, &before.generation)
    );
    assert_eq!(r.s.status()["release"]["number"], 2);

    // Nothing new: one round trip, nothing written anywhere in the state directory.
    server.reset_counters();
    let before = r.s.device.state_files();
    r.s.device.sync().expect(0, "up to date");
    assert_eq!(server.requests().len(), 1, "{:?}", server.requests());
    assert_eq!(
        r.s.device.state_files(),
        before,
        "a no-op sync writes nothing"
    );

    // A new commit, released as N=3: applied.
    let second = r.commit("second\n");
    let made = release_command(&r, &r.bot, &["--env", "production", &second]);
    assert_eq!(made.stdout.trim(), "production/3", "{}", made.stderr);
    r.s.device.sync().expect(
        0,
        &format!("applied generation 2: commit {second} (release production/3)"),
    );
    assert_eq!(r.s.read("/etc/motd"), "second\n");
    r.s.device.agent(&["history"]).expect(0, "(production/3)");
}

#[test]
fn a_staging_commit_served_on_the_production_release_ref_is_refused() {
    let Some(r) = Releases::new() else { return };
    let base = r.commit("base\n");
    r.tag(&r.bot, "production/1", &base, FAR_FUTURE, None);
    r.serve("production/1");
    r.s.device.sync().expect(0, "applied generation 1");

    // A validly signed commit from staging, built on the applied one, served as production.
    r.s.repo.branch("staging");
    r.s.repo.checkout("staging");
    let staging = r.commit("staging only\n");
    assert!(
        r.s.repo.git_verifies(&r.signers, &staging),
        "a good commit signature"
    );
    assert!(!r.git_verifies(&staging), "git verify-tag: not a tag");
    r.serve(&staging);
    r.refused(&format!(
        "refusing {PRODUCTION_REF}: it points at a commit (a branch or a lightweight tag was pushed there) {staging}, not at a signed release tag"
    ));
    assert_eq!(r.s.read("/etc/motd"), "base\n");
}

#[test]
fn a_staging_release_published_at_the_production_release_ref_is_refused() {
    let Some(r) = Releases::new() else { return };
    let base = r.commit("base\n");
    r.tag(&r.bot, "production/1", &base, FAR_FUTURE, None);
    r.serve("production/1");
    r.s.device.sync().expect(0, "applied generation 1");

    let staging = r.commit("staging\n");
    let tag = r.tag(&r.bot, "staging/7", &staging, FAR_FUTURE, None);
    // The signature is good (git agrees): the environment in the signed header is what refuses.
    assert!(r.git_verifies(&tag));
    r.serve("staging/7");
    r.refused(
        "the release is staging/7, for environment `staging`, but this device follows `production`",
    );
    r.agent_verifies(PRODUCTION_REF, "production")
        .expect(1, "but this device follows `production`");
}

#[test]
fn an_older_release_is_refused_after_a_newer_one_same_or_other_commit() {
    let Some(r) = Releases::new() else { return };
    let old = r.commit("old\n");
    let tag1 = r.tag(&r.bot, "production/1", &old, FAR_FUTURE, None);
    let new = r.commit("new\n");
    r.tag(&r.bot, "production/2", &new, FAR_FUTURE, None);
    r.serve("production/2");
    r.s.device.sync().expect(0, "applied generation 1");

    // N-1 of another (older) commit.
    assert!(r.git_verifies(&tag1));
    r.serve("production/1");
    r.refused("release production/1 is older than production/2, the last release this device accepted (anti-rollback)");

    // N-1 of the same commit.
    r.tag(&r.bot, "production/1", &new, FAR_FUTURE, None);
    r.serve("production/1");
    r.refused("release production/1 is older than production/2");

    // N again, but another tag object (re-signed): a number is used once.
    r.tag(&r.bot, "production/2", &new, "2098-01-01T00:00:00Z", None);
    r.serve("production/2");
    r.refused("release production/2 is not the tag");
    assert_eq!(r.s.read("/etc/motd"), "new\n");
}

#[test]
fn a_release_of_a_commit_not_descending_from_the_applied_one_is_refused() {
    let Some(r) = Releases::new() else { return };
    let base = r.commit("base\n");
    let applied = r.commit("applied\n");
    r.tag(&r.bot, "production/1", &applied, FAR_FUTURE, None);
    r.serve("production/1");
    r.s.device.sync().expect(0, "applied generation 1");

    // A signed commit on a side branch from `base`: a newer, well-signed release of it.
    r.s.repo.checkout(&base);
    r.s.repo.git(&["checkout", "-q", "-b", "side"]);
    let side = r.commit("side\n");
    let tag = r.tag(&r.bot, "production/2", &side, FAR_FUTURE, None);
    assert!(r.git_verifies(&tag));
    r.serve("production/2");
    r.refused(&format!(
        "refusing release production/2 (tag {tag}): refusing tip {side}: it does not descend from the applied commit {applied}"
    ));
}

#[test]
fn an_expired_release_is_stale_changes_nothing_and_a_fresh_one_converges() {
    let Some(r) = Releases::new() else { return };
    r.at_release_1();

    let second = r.commit("second\n");
    let tag = r.tag(
        &r.bot,
        "production/2",
        &second,
        "2020-01-01T00:00:00Z",
        None,
    );
    assert!(
        r.git_verifies(&tag),
        "an expired release is still well signed"
    );
    r.serve("production/2");
    let before = r.device_state();
    r.s.device.sync().expect(
        1,
        &format!("not applying release tag {tag} at {PRODUCTION_REF}: release production/2 expired at 2020-01-01T00:00:00Z ("),
    );
    assert_eq!(r.device_state(), before, "a stale release changes nothing");
    let status = r.s.status();
    assert_eq!(status["last_result"]["status"], "stale");
    assert!(
        status["last_result"]["message"]
            .as_str()
            .unwrap()
            .contains("ago by this device's clock"),
        "{status}"
    );
    assert_eq!(status["release"]["number"], 1);
    // Stale again at the next sync: the same result, not recorded again (the age is in days).
    let result = r.s.device.state_dir().join("last-result.json");
    let recorded = std::fs::metadata(&result).unwrap().modified().unwrap();
    r.s.device
        .sync()
        .expect(1, "release production/2 expired at");
    assert_eq!(
        std::fs::metadata(&result).unwrap().modified().unwrap(),
        recorded
    );
    assert_eq!(r.device_state(), before);

    // The bot comes back: a fresh release converges.
    r.tag(&r.bot, "production/3", &second, FAR_FUTURE, None);
    r.serve("production/3");
    r.s.device.sync().expect(0, "applied generation 2");
    assert_eq!(r.s.read("/etc/motd"), "second\n");
    assert_eq!(r.s.status()["last_result"]["status"], "converged");
}

#[test]
fn a_release_tagged_before_the_last_accepted_one_is_refused() {
    let Some(r) = Releases::new() else { return };
    let first = r.commit("first\n");
    r.tag(&r.bot, "production/1", &first, FAR_FUTURE, Some(now()));
    r.serve("production/1");
    r.s.device.sync().expect(0, "applied generation 1");

    let second = r.commit("second\n");
    let tag = r.tag(
        &r.bot,
        "production/2",
        &second,
        FAR_FUTURE,
        Some(now() - 86_400),
    );
    assert!(r.git_verifies(&tag));
    r.serve("production/2");
    r.refused("the tagger time never goes backwards (anti-rollback)");
}

#[test]
fn unsigned_and_lightweight_tags_at_the_release_ref_are_refused() {
    let Some(r) = Releases::new() else { return };
    r.at_release_1();
    let second = r.commit("second\n");

    let unsigned = r.s.repo.tag_unsigned(
        "production/2",
        &second,
        &format!("Release production/2\n\nExpires: {FAR_FUTURE}"),
    );
    assert!(!r.git_verifies(&unsigned));
    r.serve("production/2");
    r.refused(&format!(
        "refusing release tag {unsigned} at {PRODUCTION_REF}: the tag is not signed"
    ));
    r.agent_verifies(PRODUCTION_REF, "production")
        .expect(1, "the tag is not signed");

    let lightweight = r.s.repo.tag_lightweight("production/2", &second);
    assert!(!r.git_verifies(&lightweight), "git verify-tag: not a tag");
    r.serve("production/2");
    r.refused("it points at a commit (a branch or a lightweight tag was pushed there)");
}

#[test]
fn a_release_signed_by_a_key_not_allowed_is_refused() {
    let Some(r) = Releases::new() else { return };
    r.at_release_1();

    let second = r.commit("second\n");
    let tag = r.tag(&r.mallory, "production/2", &second, FAR_FUTURE, None);
    assert!(!r.git_verifies(&tag));
    r.serve("production/2");
    r.refused(&format!(
        "refusing release tag {tag} at {PRODUCTION_REF}: signed by key {} which is not in the trust policy",
        r.mallory.fingerprint()
    ));
    r.agent_verifies("refs/tags/production/2", "production")
        .expect(1, "which is not in the trust policy");
}

#[test]
fn a_release_signed_by_a_revoked_key_is_refused_though_allowed_signers_lists_it() {
    let Some(r) = Releases::new() else { return };
    r.at_release_1();

    // The bot's key leaked: it is revoked on the device (a KRL by fingerprint), while
    // allowed_signers still lists it.
    let spec = r.s.dir.path().join("revoke.spec");
    std::fs::write(&spec, format!("hash: {}\n", r.bot.fingerprint())).unwrap();
    let krl = r.s.dir.path().join("revoked.krl");
    shoal_e2e::run(
        std::process::Command::new("ssh-keygen")
            .args(["-q", "-k", "-f"])
            .arg(&krl)
            .arg(&spec),
    );
    r.s.device
        .trust_option(&format!("revoked_keys = \"{}\"", krl.display()));

    let second = r.commit("second\n");
    let tag = r.tag(&r.bot, "production/2", &second, FAR_FUTURE, None);
    r.serve("production/2");
    r.refused(&format!(
        "refusing release tag {tag} at {PRODUCTION_REF}: the tag is signed by key {}, which is revoked by {} (KRL, SHA256 fingerprint)",
        r.bot.fingerprint(),
        krl.display()
    ));
}

#[test]
fn a_release_tag_whose_object_is_not_a_commit_is_refused() {
    let Some(r) = Releases::new() else { return };
    r.at_release_1();

    let tree = r.s.repo.git(&["rev-parse", "HEAD^{tree}"]);
    let tag = r.tag(&r.bot, "production/2", &tree, FAR_FUTURE, None);
    assert!(
        r.git_verifies(&tag),
        "well signed; what it points at is the problem"
    );
    r.serve("production/2");
    r.refused("release production/2 points at a tree, not a commit");
}

#[test]
fn a_tampered_release_tag_is_refused() {
    let Some(r) = Releases::new() else { return };
    r.at_release_1();

    // A mirror that stretches the expiry of a signed release (the freeze, disguised).
    let second = r.commit("second\n");
    let message = "Release production/2\n\nExpires: 2030-01-01T00:00:00Z";
    let tag =
        r.s.repo
            .tag_edited(&r.bot, "production/2", &second, message, |raw| {
                String::from_utf8(raw)
                    .unwrap()
                    .replace("2030-01-01", "2099-01-01")
                    .into_bytes()
            });
    assert!(!r.git_verifies(&tag));
    r.serve(&tag);
    r.refused(&format!(
        "refusing release tag {tag} at {PRODUCTION_REF}: the signature by key {} does not match the tag's contents",
        r.bot.fingerprint()
    ));
}

#[test]
fn a_halted_release_stops_devices_that_have_not_applied_its_commit() {
    let Some(r) = Releases::new() else { return };
    let first = r.at_release_1();

    let second = r.commit("second\n");
    let halted = format!("Release production/2\n\nExpires: {FAR_FUTURE}\nHalt: true");
    r.s.repo
        .tag_signed(&r.bot, "production/2", &second, &halted, None);
    r.serve("production/2");
    // Halted, not refused: the release and its commit pass every check, the device names the
    // commit and applies nothing (exit 0: nothing is wrong with the device).
    let before = r.device_state();
    r.s.device
        .sync()
        .expect(
            0,
            &format!("halted: commit {second} is halted by release production/2 signed by "),
        )
        .expect(
            0,
            "(Halt: true); nothing is applied, the device stays at generation 1",
        );
    assert_eq!(r.device_state(), before, "a halted release changes nothing");
    assert_eq!(r.s.read("/etc/motd"), "first\n");
    let status = r.s.status();
    let last = &status["last_result"];
    assert_eq!(last["status"], "halted", "{status}");
    assert_eq!(last["commit"], second.as_str(), "{status}");
    assert_eq!(last["halted"]["source"], "release", "{status}");
    assert_eq!(last["target"]["commit"], second.as_str(), "{status}");
    r.s.device
        .agent(&["sync", "--dry-run"])
        .expect(0, &format!("dry run: halted: commit {second} is halted"));

    // Halting the release of the commit a device runs keeps it there, fresh.
    let halted = format!("Release production/3\n\nExpires: {FAR_FUTURE}\nHalt: true");
    r.s.repo
        .tag_signed(&r.bot, "production/3", &first, &halted, None);
    r.serve("production/3");
    r.s.device.sync().expect(0, "up to date: generation 1");
    assert_eq!(r.s.status()["release"]["number"], 3);
}

#[test]
fn a_stale_device_is_reported_with_its_release_and_counted_by_the_collector() {
    if !require_tools(&["curl"]) {
        return;
    }
    let Some(r) = Releases::new() else { return };
    let enroll = r.s.dir.path().join("enroll-token");
    std::fs::write(&enroll, "enroll-token-0123456789abcdef\n").expect("token");
    let spec = CollectorSpec::local(r.s.dir.path().join("collector-data"), enroll.clone());
    let collector = spec.start();
    r.s.device.report_to(collector.url(), &enroll);

    let first = r.commit("first\n");
    r.tag(&r.bot, "production/1", &first, FAR_FUTURE, None);
    r.serve("production/1");
    r.s.device.sync().expect(0, "delivered to the collector");
    let seen = collector.get("/api/v1/devices/dev-1");
    assert_eq!(seen["status"], "converged", "{seen}");
    assert_eq!(seen["commit"], first.as_str(), "{seen}");
    assert_eq!(
        seen["release"],
        serde_json::json!({"environment": "production", "number": 1})
    );

    // The bot stopped: the last release the server has is expired.
    let second = r.commit("second\n");
    r.tag(
        &r.bot,
        "production/2",
        &second,
        "2020-01-01T00:00:00Z",
        None,
    );
    r.serve("production/2");
    r.s.device.sync().expect(1, "delivered to the collector");
    let seen = collector.get("/api/v1/devices/dev-1");
    assert_eq!(seen["status"], "stale", "{seen}");
    assert_eq!(seen["commit"], first.as_str(), "{seen}");
    assert_eq!(seen["release"]["number"], 1, "{seen}");
    let message = seen["errors"][0]["message"].as_str().unwrap_or_default();
    assert!(
        message.contains("release production/2 expired at 2020-01-01T00:00:00Z ("),
        "{seen}"
    );
    assert_eq!(collector.get("/api/v1/summary")["by_status"]["stale"], 1);
    let listed = collector.get("/api/v1/devices?status=stale");
    assert_eq!(listed["devices"][0]["device_id"], "dev-1", "{listed}");

    // A fresh release: converged again, with its number.
    r.tag(&r.bot, "production/3", &second, FAR_FUTURE, None);
    r.serve("production/3");
    r.s.device.sync().expect(0, "delivered to the collector");
    let seen = collector.get("/api/v1/devices/dev-1");
    assert_eq!(seen["status"], "converged", "{seen}");
    assert_eq!(seen["commit"], second.as_str(), "{seen}");
    assert_eq!(seen["release"]["number"], 3, "{seen}");
    assert_eq!(collector.get("/api/v1/summary")["by_status"]["stale"], 0);
}

#[test]
fn the_release_command_counts_on_from_the_remote_and_refuses_bad_input() {
    let Some(r) = Releases::new() else { return };
    let first = r.commit("first\n");
    let made = release_command(&r, &r.bot, &["--env", "production"]);
    assert_eq!(made.stdout.trim(), "production/1", "{}", made.stderr);
    let remote_ref = |r: &Releases| {
        r.s.repo
            .git(&["ls-remote", &r.bare().display().to_string(), PRODUCTION_REF])
    };
    let published = remote_ref(&r);

    // A fresh CI checkout knows no release: the next number comes from the remote.
    r.s.repo.git(&["tag", "-d", "production/1"]);
    r.s.repo.git(&["update-ref", "-d", PRODUCTION_REF]);
    let made = release_command(&r, &r.bot, &["--env", "production", "--halt", "--json"]);
    assert_eq!(made.code, 0, "{}", made.stderr);
    let json: serde_json::Value = serde_json::from_str(&made.stdout).expect("release --json");
    assert_eq!(json["release"]["number"], 2, "{json}");
    assert_eq!(json["commit"], first.as_str(), "{json}");
    let tag = json["tag"].as_str().expect("tag id");
    assert!(r.git_verifies(tag));
    let raw = String::from_utf8(r.s.repo.raw_tag(tag)).unwrap();
    assert!(raw.contains("\ntag production/2\n"), "{raw}");
    assert!(
        raw.contains("\nExpires: ") && raw.contains("\nHalt: true\n"),
        "{raw}"
    );
    assert_ne!(remote_ref(&r), published);
    assert!(
        remote_ref(&r).starts_with(tag),
        "the release ref points at the new tag"
    );

    // Bad input: exit 2, nothing made or pushed.
    let published = remote_ref(&r);
    release_command(&r, &r.bot, &["--env", "prod/1"])
        .expect(2, "\"prod/1\" is not an environment name");
    release_command(&r, &r.bot, &["--env", "production", "no-such-rev"])
        .expect(2, "\"no-such-rev\" does not name a commit");
    let tree = r.s.repo.git(&["rev-parse", "HEAD^{tree}"]);
    release_command(&r, &r.bot, &["--env", "production", &tree])
        .expect(2, "does not name a commit");
    release_command(&r, &r.bot, &["--env", "production", "--expires", "7 days"])
        .expect(2, "invalid duration");
    assert_eq!(remote_ref(&r), published);
}

#[test]
fn a_release_over_an_unsigned_commit_is_refused_in_range_mode() {
    let Some(r) = Releases::new() else { return };
    let first = r.at_release_1();

    // An unsigned commit, then a signed one on top, released: the tag and the tip are good, the
    // history between the applied commit and the tip is not (`verify = "range"`).
    r.s.repo.write("files/motd", "unsigned\n");
    let unsigned = r.s.repo.commit_unsigned("unsigned");
    let tip = r.commit("signed on top\n");
    let tag = r.tag(&r.bot, "production/2", &tip, FAR_FUTURE, None);
    assert!(r.git_verifies(&tag));
    assert!(!r.s.repo.git_verifies(&r.signers, &unsigned));
    r.serve("production/2");
    r.refused(&format!(
        "refusing release production/2 (tag {tag}): refusing tip {tip}: commit {unsigned} between the applied commit {first} and the tip is not trusted: the commit is not signed"
    ));
}

/// Offline: `sync --from-bundle` takes a `git bundle` holding the release ref; it is verified and
/// applied exactly like a fetch, with no network (the server and the collector are unreachable,
/// so reports wait in the outbox), and each bad release in a bundle is refused the same way.
#[test]
fn offline_bundles_are_verified_like_a_fetch_and_bad_releases_in_them_refused() {
    let Some(r) = Releases::new() else { return };
    r.offline();
    let bundle = |file: &str, name: &str, base: Option<&str>| r.bundle(file, name, base);
    let sync = |file: &str| r.s.device.agent(&["sync", "--from-bundle", file]);
    let refused = |file: &str, needle: &str| r.refused_bundle(file, needle);

    let first = r.commit("first\n");
    r.tag(&r.bot, "production/1", &first, FAR_FUTURE, None);
    let one = bundle("one.bundle", "production/1", None);
    sync(&one)
        .expect(0, "applied generation 1")
        .expect(0, "queued for later");
    assert_eq!(r.s.read("/etc/motd"), "first\n");
    assert!(r.s.status()["queued_reports"].as_u64().unwrap() >= 1);
    // The same bundle again: up to date, nothing written.
    sync(&one).expect(0, "up to date: generation 1");

    // Incremental: only what the device lacks, from its applied commit.
    let second = r.commit("second\n");
    r.tag(&r.bot, "production/2", &second, FAR_FUTURE, None);
    let two = bundle("two.bundle", "production/2", Some(&first));
    sync(&two).expect(0, "applied generation 2");
    assert_eq!(r.s.read("/etc/motd"), "second\n");

    // The older release, a staging release at the production ref, an expired one.
    refused(&one, "release production/1 is older than production/2");
    let third = r.commit("third\n");
    r.tag(&r.bot, "staging/9", &third, FAR_FUTURE, None);
    refused(
        &bundle("staging.bundle", "staging/9", Some(&second)),
        "but this device follows `production`",
    );
    r.tag(&r.bot, "production/3", &third, "2020-01-01T00:00:00Z", None);
    let before = r.device_state();
    sync(&bundle("expired.bundle", "production/3", Some(&second)))
        .expect(1, "release production/3 expired at 2020-01-01T00:00:00Z");
    assert_eq!(r.device_state(), before);
    assert_eq!(r.s.status()["last_result"]["status"], "stale");

    // A bundle without the release ref, and one that needs a commit the device does not have.
    let branch_only = r.s.dir.path().join("branch.bundle").display().to_string();
    r.s.repo
        .git(&["bundle", "create", "-q", &branch_only, "refs/heads/main"]);
    refused(
        &branch_only,
        &format!("has no ref {PRODUCTION_REF}; it holds refs/heads/main"),
    );
    let fourth = r.commit("fourth\n");
    r.tag(&r.bot, "production/4", &fourth, FAR_FUTURE, None);
    refused(
        &bundle("gap.bundle", "production/4", Some(&third)),
        &format!("needs commit {third}, which this device does not have"),
    );
    // Not a bundle at all.
    let junk = r.s.dir.path().join("junk.bundle");
    std::fs::write(&junk, "PK\u{3}\u{4} not a bundle").unwrap();
    refused(&junk.display().to_string(), "is not a git bundle");
    // The whole history in one bundle converges, within the fetch's bounds only.
    let four = bundle("four.bundle", "production/4", None);
    let config = std::fs::read_to_string(r.s.device.config_path()).unwrap();
    let bounded = config.replace("retries = 0\n", "retries = 0\nmax_fetch = \"200B\"\n");
    std::fs::write(r.s.device.config_path(), &bounded).unwrap();
    refused(&four, "more than max_fetch = 200 bytes");
    std::fs::write(r.s.device.config_path(), &config).unwrap();
    sync(&four).expect(0, "applied generation 3");
    assert_eq!(r.s.read("/etc/motd"), "fourth\n");
}

/// Each bad release the network tests refuse, carried by a bundle instead: the same verdict and
/// the same message, nothing changed on the device (the bundle path shares the verification, and
/// this shows it for every case, not only the three above).
#[test]
fn every_bad_release_in_a_bundle_is_refused_as_over_the_network() {
    let Some(r) = Releases::new() else { return };
    r.offline();
    let base = r.commit("base\n");
    let first = r.commit("first\n");
    let tag1 = r.tag(&r.bot, "production/1", &first, FAR_FUTURE, Some(now()));
    r.s.device
        .agent(&[
            "sync",
            "--from-bundle",
            &r.bundle("one.bundle", "production/1", None),
        ])
        .expect(0, "applied generation 1");
    assert!(r.git_verifies(&tag1));
    let second = r.commit("second\n");

    // A validly signed commit (a branch or a lightweight tag) at the release ref.
    r.refused_bundle(
        &r.bundle("commit.bundle", &second, Some(&first)),
        "it points at a commit (a branch or a lightweight tag was pushed there)",
    );
    // A staging release at the production ref.
    r.tag(&r.bot, "staging/2", &second, FAR_FUTURE, None);
    r.refused_bundle(
        &r.bundle("staging.bundle", "staging/2", Some(&first)),
        "but this device follows `production`",
    );
    // A tagger time before the last accepted one.
    r.tag(
        &r.bot,
        "production/2",
        &second,
        FAR_FUTURE,
        Some(now() - 86_400),
    );
    r.refused_bundle(
        &r.bundle("backdated.bundle", "production/2", Some(&first)),
        "the tagger time never goes backwards (anti-rollback)",
    );
    // An unsigned tag.
    let unsigned = r.s.repo.tag_unsigned(
        "production/2",
        &second,
        &format!("Release production/2\n\nExpires: {FAR_FUTURE}"),
    );
    assert!(!r.git_verifies(&unsigned));
    r.refused_bundle(
        &r.bundle("unsigned.bundle", "production/2", Some(&first)),
        "the tag is not signed",
    );
    // A tag signed by a key not allowed to release.
    let tag = r.tag(&r.mallory, "production/2", &second, FAR_FUTURE, None);
    assert!(!r.git_verifies(&tag));
    r.refused_bundle(
        &r.bundle("mallory.bundle", "production/2", Some(&first)),
        &format!(
            "signed by key {} which is not in the trust policy",
            r.mallory.fingerprint()
        ),
    );
    // A tag whose object is a tree.
    let tree = r.s.repo.git(&["rev-parse", &format!("{second}^{{tree}}")]);
    r.tag(&r.bot, "production/2", &tree, FAR_FUTURE, None);
    r.refused_bundle(
        &r.bundle("tree.bundle", "production/2", None),
        "release production/2 points at a tree, not a commit",
    );
    // A tampered tag (the expiry stretched after signing).
    let message = "Release production/2\n\nExpires: 2030-01-01T00:00:00Z";
    let tampered =
        r.s.repo
            .tag_edited(&r.bot, "production/2", &second, message, |raw| {
                String::from_utf8(raw)
                    .unwrap()
                    .replace("2030-01-01", "2099-01-01")
                    .into_bytes()
            });
    assert!(!r.git_verifies(&tampered));
    r.refused_bundle(
        &r.bundle("tampered.bundle", &tampered, Some(&first)),
        "does not match the tag's contents",
    );
    // A halted release.
    let halted = format!("Release production/2\n\nExpires: {FAR_FUTURE}\nHalt: true");
    r.s.repo
        .tag_signed(&r.bot, "production/2", &second, &halted, None);
    let bundle = r.bundle("halted.bundle", "production/2", Some(&first));
    let before = r.device_state();
    r.s.device
        .agent(&["sync", "--from-bundle", &bundle])
        .expect(
            0,
            &format!("halted: commit {second} is halted by release production/2"),
        );
    assert_eq!(r.device_state(), before, "a halted release changes nothing");
    // A release of a commit that does not descend from the applied one.
    let branch = r.s.repo.git(&["rev-parse", "--abbrev-ref", "HEAD"]);
    r.s.repo.checkout(&base);
    r.s.repo.git(&["checkout", "-q", "-b", "side"]);
    let side = r.commit("side\n");
    r.tag(&r.bot, "production/2", &side, FAR_FUTURE, None);
    r.refused_bundle(
        &r.bundle("side.bundle", "production/2", Some(&base)),
        &format!("refusing tip {side}: it does not descend from the applied commit {first}"),
    );
    r.s.repo.checkout(branch.trim());
    // A release over an unsigned commit (`verify = "range"`).
    r.s.repo.write("files/motd", "unsigned\n");
    let between = r.s.repo.commit_unsigned("unsigned");
    let tip = r.commit("signed on top\n");
    r.tag(&r.bot, "production/2", &tip, FAR_FUTURE, None);
    r.refused_bundle(
        &r.bundle("range.bundle", "production/2", Some(&first)),
        &format!("commit {between} between the applied commit {first} and the tip is not trusted: the commit is not signed"),
    );

    // After all that, a good release in a bundle still applies (its commit built on the applied
    // one, not on the unsigned commit), and N-1 of its commit is refused.
    r.s.repo.reset_hard(&first);
    let good = r.commit("good\n");
    r.tag(&r.bot, "production/3", &good, FAR_FUTURE, None);
    r.s.device
        .agent(&[
            "sync",
            "--from-bundle",
            &r.bundle("good.bundle", "production/3", Some(&first)),
        ])
        .expect(0, "applied generation 2");
    assert_eq!(r.s.read("/etc/motd"), "good\n");
    r.tag(&r.bot, "production/2", &good, FAR_FUTURE, None);
    r.refused_bundle(
        &r.bundle("n-1.bundle", "production/2", Some(&first)),
        "release production/2 is older than production/3",
    );
}
