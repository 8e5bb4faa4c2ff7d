//! The repository's trust policy end to end (issue 14): a device whose allowed_signers is only the
//! bootstrap root (`[trust] root_threshold = 2`) follows a repository with a
//! `.shoal/policy.toml` (root 2 of alice, bob, carol; a "sensor team" rule), served over smart
//! HTTP over TLS, signed with real `ssh-keygen` keys, approvals made as signed tags by stock git.
//! Each refusal is checked for its text and for the device staying where it was (applied commit,
//! its file); the rotation scenario replaces a key without touching the device's files.

use std::path::PathBuf;

use shoal_e2e::{
    agent_bin, isolate_git, output, require_tools, write_allowed_signers, ConfigRepo, Device,
    HttpsGitServer, Run, SigningKey, MOTD_MANIFEST,
};

/// The people, their keys, the repository, the server and one device.
struct Org {
    dir: tempfile::TempDir,
    alice: SigningKey,
    /// Alice's second key (a laptop and a hardware token): the same principal.
    alice2: SigningKey,
    bob: SigningKey,
    carol: SigningKey,
    sensor: SigningKey,
    mallory: SigningKey,
    repo: ConfigRepo,
    _server: HttpsGitServer,
    device: Device,
    first: String,
}

/// The policy: principals with their keys, root 2 of 3, a sensor rule, production releases.
fn policy(principals: &[(&str, &[&SigningKey])], root: &[&str]) -> String {
    let mut text = String::from("version = 1\n[principals]\n");
    for (name, keys) in principals {
        let keys: Vec<String> = keys
            .iter()
            .map(|k| format!("\"{}\"", k.public_line()))
            .collect();
        text.push_str(&format!("{name} = [{}]\n", keys.join(", ")));
    }
    let root: Vec<String> = root.iter().map(|r| format!("\"{r}\"")).collect();
    text.push_str(&format!(
        "[root]\nprincipals = [{}]\nthreshold = 2\n",
        root.join(", ")
    ));
    text.push_str(
        "[[rule]]\nname = \"sensor team\"\npaths = [\"files/sensor/**\"]\nprincipals = [\"sensor-lead\", \"alice\"]\nthreshold = 1\n",
    );
    text
}

impl Org {
    fn policy_v1(&self) -> String {
        policy(
            &[
                ("alice", &[&self.alice, &self.alice2]),
                ("bob", &[&self.bob]),
                ("carol", &[&self.carol]),
                ("sensor-lead", &[&self.sensor]),
            ],
            &["alice", "bob", "carol"],
        )
    }

    /// The device at the first commit: the policy, signed by alice and approved by bob (the
    /// bootstrap root needs 2 of allowed_signers).
    fn new() -> Option<Org> {
        if !require_tools(&["git", "ssh-keygen"]) {
            return None;
        }
        let dir = tempfile::tempdir().expect("tempdir");
        let keys = dir.path().join("keys");
        let key = |name: &str| SigningKey::generate(&keys, name);
        let (alice, alice2, bob, carol, sensor, mallory) = (
            key("alice"),
            key("alice2"),
            key("bob"),
            key("carol"),
            key("sensor"),
            key("mallory"),
        );
        let signers = dir.path().join("allowed_signers");
        write_allowed_signers(
            &signers,
            &[("alice", &alice), ("bob", &bob), ("carol", &carol)],
        );
        let repo = ConfigRepo::init(dir.path().join("work"));
        let server = HttpsGitServer::start(dir.path().join("srv"));
        let ca = format!("ca_file = \"{}\"", server.ca_pem_path().display());
        let device = Device::new(
            dir.path().join("device"),
            &server.url("config.git"),
            &signers,
            "range",
            &ca,
        );
        device.trust_option("root_threshold = 2");
        let mut org = Org {
            dir,
            alice,
            alice2,
            bob,
            carol,
            sensor,
            mallory,
            repo,
            _server: server,
            device,
            first: String::new(),
        };
        org.repo.write("shoal.toml", MOTD_MANIFEST);
        org.repo.write("motd", "v0\n");
        org.repo.write("files/sensor/a.conf", "a\n");
        org.repo.write(".shoal/policy.toml", org.policy_v1());
        let first = org.repo.commit_signed(&org.alice, "the first policy");
        org.publish();
        // One root signature of the bootstrap root's two: refused, nothing applied.
        org.device.sync().expect(
            1,
            &format!("commit {first} signed by alice changes `.shoal/policy.toml` (against parent (none: a root commit)), which the bootstrap root (allowed_signers, [trust] root_threshold = 2) needs 2 of [alice, bob, carol], has 1 (alice)"),
        );
        assert_eq!(org.device.applied(), None);
        org.approve(&org.bob, "bob", &first);
        org.device.sync().assert_ok();
        assert_eq!(org.device.applied().as_deref(), Some(first.as_str()));
        org.first = first;
        Some(org)
    }

    fn publish(&self) {
        self.repo.publish_to(self.dir.path().join("srv/config.git"));
    }

    /// `principal` approves `commit` with `key`: a signed tag by stock git, published.
    fn approve(&self, key: &SigningKey, principal: &str, commit: &str) {
        self.approve_as(key, &format!("shoal-approve/{commit}/{principal}"), commit);
    }

    fn approve_as(&self, key: &SigningKey, name: &str, target: &str) {
        self.repo
            .tag_signed(key, name, target, &format!("approve {target}"), None);
        self.publish();
    }

    /// Changes `path` to `content` in a commit signed by `key`, published.
    fn change(&self, key: &SigningKey, path: &str, content: &str) -> String {
        self.repo.write(path, content);
        let id = self.repo.commit_signed(key, &format!("change {path}"));
        self.publish();
        id
    }

    fn motd(&self) -> String {
        std::fs::read_to_string(self.device.config_path().with_file_name("root/etc/motd"))
            .expect("the device's motd")
    }

    fn watermark(&self) -> String {
        std::fs::read_to_string(self.device.state_dir().join("applied-commit"))
            .expect("the watermark")
    }

    /// Syncs, expecting a refusal containing `needle`, and the device where it was.
    fn refused(&self, needle: &str) {
        let (applied, motd, watermark) = (self.device.applied(), self.motd(), self.watermark());
        self.device.sync().expect(1, needle);
        assert_eq!(self.device.applied(), applied, "a refusal moved the device");
        assert_eq!(self.motd(), motd, "a refusal changed the device's files");
        assert_eq!(self.watermark(), watermark);
    }

    /// `shoal-agent ARGS` as an operator runs it in the work repository (git isolated from the
    /// host's config, like the repository's own commands).
    fn operator(&self, args: &[&str]) -> Run {
        let mut cmd = std::process::Command::new(agent_bin());
        isolate_git(&mut cmd);
        cmd.args(args);
        let out = output(&mut cmd);
        Run {
            code: out.status.code().unwrap_or(-1),
            stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
            stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
        }
    }

    /// `shoal-agent verify --policy` on the work repository, from `since` to `rev`.
    fn verify_policy(&self, since: &str, rev: &str, json: bool) -> Run {
        let repo = self.repo.path().display().to_string();
        let signers = self
            .dir
            .path()
            .join("allowed_signers")
            .display()
            .to_string();
        let mut args = vec![
            "verify",
            &repo,
            "--rev",
            rev,
            "--since",
            since,
            "--policy",
            "--allowed-signers",
            &signers,
        ];
        if json {
            args.push("--json");
        }
        self.operator(&args)
    }

    fn mirror(&self) -> PathBuf {
        self.device.state_dir().join("mirror.git")
    }
}

#[test]
fn the_first_policy_needs_the_bootstrap_root_threshold_and_the_device_keeps_it_with_the_commit() {
    let Some(org) = Org::new() else { return };
    let blob = org
        .repo
        .git(&["rev-parse", &format!("{}:.shoal/policy.toml", org.first)]);
    assert_eq!(
        org.watermark(),
        format!("{}\npolicy {} {}\n", org.first, org.first, blob.trim())
    );
}

#[test]
fn a_signer_changing_a_path_outside_its_rule_is_refused() {
    let Some(org) = Org::new() else { return };
    let bad = org.change(&org.sensor, "motd", "sensor was here\n");
    org.refused(&format!(
        "commit {bad} signed by sensor-lead changes `motd` (against parent {}), which root needs 2 of [alice, bob, carol], has 0 (none of them); under .shoal/policy.toml of commit {}",
        org.first, org.first
    ));
    // Inside its rule the same signer needs nobody else.
    org.repo.reset_hard(&org.first);
    let good = org.change(&org.sensor, "files/sensor/a.conf", "b\n");
    org.device.sync().assert_ok();
    assert_eq!(org.device.applied().as_deref(), Some(good.as_str()));
}

#[test]
fn two_of_three_needs_two_principals_not_two_keys_or_tags_of_one_and_not_an_approval_of_another_commit(
) {
    let Some(org) = Org::new() else { return };
    let change = org.change(&org.alice, "motd", "v1\n");
    let one_of_two = format!(
        "commit {change} signed by alice changes `motd` (against parent {}), which root needs 2 of [alice, bob, carol], has 1 (alice)",
        org.first
    );
    org.refused(&one_of_two);

    // Alice's second key approves: still alice.
    org.approve(&org.alice2, "alice-token", &change);
    org.refused(&one_of_two);
    // The signer approves her own commit: still alice.
    org.approve(&org.alice, "alice", &change);
    org.refused(&one_of_two);
    // Bob's approval, named for this commit but on another one.
    org.approve_as(&org.bob, &format!("shoal-approve/{change}/bob"), &org.first);
    org.refused(&format!(
        "not counted: refs/tags/shoal-approve/{change}/bob tags commit {}, not {change}",
        org.first
    ));
    // Mallory's (not in the policy) does not count either.
    org.approve(&org.mallory, "mallory", &change);
    org.refused(&one_of_two);

    // Bob approves the commit itself: two principals.
    org.approve(&org.bob, "bob", &change);
    org.device.sync().assert_ok();
    assert_eq!(org.device.applied().as_deref(), Some(change.as_str()));
    assert_eq!(org.motd(), "v1\n");
}

#[test]
fn a_policy_change_needs_the_root_threshold_of_the_policy_before_it() {
    let Some(org) = Org::new() else { return };
    // One root of the 2-of-3 root changes the policy (drops carol from root).
    let text = org.policy_v1().replace(
        "principals = [\"alice\", \"bob\", \"carol\"]",
        "principals = [\"alice\", \"bob\"]",
    );
    let alone = org.change(&org.alice, ".shoal/policy.toml", &text);
    org.refused(&format!(
        "commit {alone} signed by alice changes `.shoal/policy.toml` (against parent {}), which root needs 2 of [alice, bob, carol], has 1 (alice)",
        org.first
    ));

    // The sensor lead writes herself into the root: the policy before the change decides.
    org.repo.reset_hard(&org.first);
    let text = org.policy_v1().replace(
        "principals = [\"alice\", \"bob\", \"carol\"]\nthreshold = 2",
        "principals = [\"alice\", \"bob\", \"carol\", \"sensor-lead\"]\nthreshold = 1",
    );
    let own = org.change(&org.sensor, ".shoal/policy.toml", &text);
    org.refused(&format!(
        "commit {own} signed by sensor-lead changes `.shoal/policy.toml` (against parent {}), which root needs 2 of [alice, bob, carol], has 0 (none of them)",
        org.first
    ));

    // A policy that adds the signer's own, unknown key: its signature is not even known.
    org.repo.reset_hard(&org.first);
    let text = org.policy_v1().replace(
        "[root]",
        &format!("mallory = \"{}\"\n[root]", org.mallory.public_line()),
    );
    let added = org.change(&org.mallory, ".shoal/policy.toml", &text);
    org.refused(&format!(
        "commit {added}: signed by key {} which is not in the trust policy .shoal/policy.toml at commit {}",
        org.mallory.fingerprint(),
        org.first
    ));
}

#[test]
fn a_merge_is_checked_against_each_parent() {
    let Some(org) = Org::new() else { return };
    // A side branch where the root changed the motd properly (alice, approved by bob)…
    org.repo.branch("side");
    org.repo.checkout("side");
    let side = org.change(&org.alice, "motd", "from the side\n");
    org.approve(&org.bob, "bob", &side);
    // …and main, where the sensor lead works inside her rule…
    org.repo.checkout("main");
    let sensor = org.change(&org.sensor, "files/sensor/a.conf", "c\n");
    // …merged by the sensor lead: against its first parent the merge changes `motd`.
    let merge = org.repo.merge_signed(&org.sensor, "side");
    org.publish();
    org.refused(&format!(
        "commit {merge} signed by sensor-lead changes `motd` (against parent {sensor}), which root needs 2 of [alice, bob, carol], has 0 (none of them)"
    ));
    // The same merge approved by two roots passes.
    org.approve(&org.alice, "alice", &merge);
    org.approve(&org.carol, "carol", &merge);
    org.device.sync().assert_ok();
    assert_eq!(org.device.applied().as_deref(), Some(merge.as_str()));
    assert_eq!(org.motd(), "from the side\n");
}

#[test]
fn rotation_two_roots_replace_a_compromised_key_the_device_follows_and_the_old_key_is_refused() {
    let Some(org) = Org::new() else { return };
    let device_files = std::fs::read(org.dir.path().join("allowed_signers")).unwrap();
    let carol_new = SigningKey::generate(org.dir.path().join("keys"), "carol-new");

    // Carol's key is compromised: alice and bob replace it.
    let v2 = policy(
        &[
            ("alice", &[&org.alice, &org.alice2]),
            ("bob", &[&org.bob]),
            ("carol", &[&carol_new]),
            ("sensor-lead", &[&org.sensor]),
        ],
        &["alice", "bob", "carol"],
    );
    let rotation = org.change(&org.alice, ".shoal/policy.toml", &v2);
    org.approve(&org.bob, "bob", &rotation);
    org.device.sync().assert_ok();
    assert_eq!(org.device.applied().as_deref(), Some(rotation.as_str()));
    assert!(org.watermark().contains(&format!("policy {rotation} ")));
    assert_eq!(
        std::fs::read(org.dir.path().join("allowed_signers")).unwrap(),
        device_files,
        "the device's own files did not change"
    );

    // Carol's new key works, with an approval, for root paths.
    let by_new = org.change(&carol_new, "motd", "carol's new key\n");
    org.approve(&org.alice, "alice", &by_new);
    org.device.sync().assert_ok();
    assert_eq!(org.motd(), "carol's new key\n");

    // The old key's next commit is refused, though allowed_signers still lists it.
    let old = org.change(&org.carol, "files/sensor/a.conf", "stolen\n");
    org.approve(&org.alice, "alice", &old);
    let not_trusted = format!(
        "commit {old}: signed by key {} which is not in the trust policy .shoal/policy.toml at commit {rotation}",
        org.carol.fingerprint()
    );
    org.refused(&not_trusted);

    // The mirror is deleted and the attacker serves the old policy back, on top of the
    // rotation, signed with the old key and approved by it: still the rotated policy decides.
    std::fs::remove_dir_all(org.mirror()).unwrap();
    org.repo.reset_hard(&by_new);
    let revert = org.change(&org.carol, ".shoal/policy.toml", &org.policy_v1());
    org.approve(&org.carol, "carol", &revert);
    org.refused(&format!(
        "commit {revert}: signed by key {} which is not in the trust policy .shoal/policy.toml at commit {rotation}",
        org.carol.fingerprint()
    ));
    // Or the history from before the rotation: anti-rollback.
    org.repo.reset_hard(&org.first);
    org.publish();
    org.refused("older than the applied commit");

    // A watermark whose policy line does not match the applied commit's policy fails closed.
    org.repo.reset_hard(&by_new);
    org.publish();
    let watermark = org.watermark();
    let forged = watermark.replace(
        &format!("policy {rotation}"),
        &format!("policy {}", org.first),
    );
    let first_blob = org
        .repo
        .git(&["rev-parse", &format!("{}:.shoal/policy.toml", org.first)]);
    let rotated_blob = org
        .repo
        .git(&["rev-parse", &format!("{rotation}:.shoal/policy.toml")]);
    let forged = forged.replace(rotated_blob.trim(), first_blob.trim());
    std::fs::write(org.device.state_dir().join("applied-commit"), &forged).unwrap();
    let next = org.change(&org.alice, "files/sensor/a.conf", "after\n");
    org.device.sync().expect(
        1,
        &format!(
            "the device trusts the policy .shoal/policy.toml of commit {} (blob {}), but the applied commit {by_new} has blob {}",
            org.first,
            first_blob.trim(),
            rotated_blob.trim()
        ),
    );
    assert_eq!(org.device.applied().as_deref(), Some(by_new.as_str()));
    std::fs::write(org.device.state_dir().join("applied-commit"), &watermark).unwrap();
    org.device.sync().assert_ok();
    assert_eq!(org.device.applied().as_deref(), Some(next.as_str()));
}

#[test]
fn verify_policy_explains_each_path_and_approve_makes_the_tag_with_stock_git() {
    let Some(org) = Org::new() else { return };
    let change = org.change(&org.alice, "motd", "v1\n");
    let repo = org.repo.path().display().to_string();
    let bare = org.dir.path().join("srv/config.git").display().to_string();

    let before = org.verify_policy(&org.first, &change, false);
    before
        .expect(1, &format!("commit {change} signed by alice ("))
        .expect(
            1,
            "  REFUSED motd: root needs 2 of [alice, bob, carol], has 1 (alice)\n",
        )
        .expect(1, "1 path change(s) under");

    // A key the policy does not know cannot approve by name.
    let mallory = org.mallory.private_path().display().to_string();
    org.operator(&["approve", &change, "--repo", &repo, "--signing-key", &mallory])
        .expect(2, &format!("cannot tell which principal approves: the key {}.pub is not a principal's in .shoal/policy.toml at commit {change}; pass --name PRINCIPAL", mallory));

    // Bob approves with the agent (stock git underneath), pushing the tag where devices pull.
    let bob = org.bob.private_path().display().to_string();
    org.operator(&[
        "approve",
        &change,
        "--repo",
        &repo,
        "--signing-key",
        &bob,
        "--push",
        &bare,
    ])
    .expect(0, &format!("approved {change} as bob: tag "))
    .expect(
        0,
        &format!("at refs/tags/shoal-approve/{change}/bob, pushed"),
    );
    assert!(org.repo.git_verifies_tag(
        org.dir.path().join("allowed_signers"),
        &format!("shoal-approve/{change}/bob")
    ));

    let after = org.verify_policy(&org.first, &change, false);
    after.expect(0, "; approved by bob").expect(
        0,
        "  allowed motd: root needs 2 of [alice, bob, carol], has 2 (alice, bob)\n",
    );
    let json = org.verify_policy(&org.first, &change, true);
    json.assert_ok();
    let value: serde_json::Value = serde_json::from_str(&json.stdout).expect("JSON");
    assert_eq!(value["refused"], 0);
    assert_eq!(value["commits"][0]["approvers"][0], "bob");
    assert_eq!(value["commits"][0]["paths"][0]["path"], "motd");
    assert_eq!(value["commits"][0]["paths"][0]["by"], "root");
    assert_eq!(value["commits"][0]["paths"][0]["allowed"], true);

    // The previews say which policy they used: the commit that brought it.
    let render = org.operator(&["render", &repo, "--rev", &change, "--device-id", "dev-1"]);
    render.expect(
        0,
        &format!("policy: .shoal/policy.toml of commit {} (blob ", org.first),
    );
    org.device
        .agent(&["sync", "--dry-run"])
        .expect(
            0,
            &format!("dry run for commit {change} (verified under .shoal/policy.toml of commit {}); nothing was changed", org.first),
        );
    let dry = org.device.agent(&["sync", "--dry-run", "--json"]);
    let value: serde_json::Value = serde_json::from_str(&dry.stdout).expect("JSON");
    assert_eq!(value["policy"]["commit"], org.first.as_str());

    // The device sees the pushed approval.
    org.device.sync().assert_ok();
    assert_eq!(org.device.applied().as_deref(), Some(change.as_str()));
}

/// `YYYY-MM-DDTHH:MM:SSZ`, `seconds` from now.
fn in_seconds(seconds: i64) -> String {
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .expect("clock after 1970")
        .as_secs() as i64;
    shoal_e2e::run(std::process::Command::new("date").args([
        "-u",
        "-d",
        &format!("@{}", now + seconds),
        "+%Y-%m-%dT%H:%M:%SZ",
    ]))
    .trim()
    .to_owned()
}

#[test]
fn once_a_policy_exists_only_its_release_principals_may_release_an_environment_within_max_age() {
    let Some(org) = Org::new() else { return };
    let bot = SigningKey::generate(org.dir.path().join("keys"), "release-bot");
    let v2 = policy(
        &[
            ("alice", &[&org.alice, &org.alice2]),
            ("bob", &[&org.bob]),
            ("carol", &[&org.carol]),
            ("release-bot", &[&bot]),
            ("sensor-lead", &[&org.sensor]),
        ],
        &["alice", "bob", "carol"],
    ) + "[[environment]]\nname = \"production\"\nrelease = [\"release-bot\"]\nmax_age = \"72h\"\n";
    let with_env = org.change(&org.alice, ".shoal/policy.toml", &v2);
    org.approve(&org.bob, "bob", &with_env);
    org.device.sync().assert_ok();
    org.device.follow_environment("production");
    let bare = org.dir.path().join("srv/config.git");
    let release = |key: &SigningKey, name: &str, expires: &str| {
        let tag = org.repo.tag_signed(
            key,
            name,
            &with_env,
            &format!("Release {name}\n\nExpires: {expires}"),
            None,
        );
        org.repo.publish_ref(
            &bare,
            &format!("refs/tags/{name}"),
            "refs/shoal/releases/production",
        );
        tag
    };

    // Alice is a root, in allowed_signers too, but not in production's release list.
    let by_alice = release(&org.alice, "production/1", &in_seconds(24 * 3600));
    org.refused(&format!(
        "refusing release tag {by_alice} at refs/shoal/releases/production: it is signed by alice, who may not release `production` under .shoal/policy.toml of commit {with_env} (release = [release-bot])"
    ));
    // The bot, for longer than max_age.
    let too_long = release(&bot, "production/2", &in_seconds(30 * 24 * 3600));
    org.refused(&format!(
        "refusing release tag {too_long} at refs/shoal/releases/production: it expires"
    ));
    org.refused("more than the max_age (259200s) of environment `production`");
    // The bot, within max_age: followed (its key is in no allowed_signers).
    release(&bot, "production/3", &in_seconds(48 * 3600));
    org.device.sync().assert_ok();
    assert_eq!(org.device.applied().as_deref(), Some(with_env.as_str()));
}

#[test]
fn the_worked_example_repository_verifies_and_a_device_follows_it() {
    if !require_tools(&["git", "ssh-keygen", "sh", "sed"]) {
        return;
    }
    let dir = tempfile::tempdir().expect("tempdir");
    let example = dir.path().join("example");
    let script =
        std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../examples/policy-repo/make.sh");
    let mut make = std::process::Command::new("sh");
    isolate_git(&mut make);
    shoal_e2e::run(make.arg(&script).arg(&example));
    let repo = example.join("repo");
    let signers = example.join("allowed_signers");

    // The operator's view: every change allowed, by the rule the example says.
    let explain = {
        let mut cmd = std::process::Command::new(agent_bin());
        isolate_git(&mut cmd);
        output(
            cmd.arg("verify")
                .arg(&repo)
                .args(["--policy", "--root-threshold", "2", "--allowed-signers"])
                .arg(&signers),
        )
    };
    let stderr = String::from_utf8_lossy(&explain.stderr);
    assert!(explain.status.success(), "{stderr}");
    for line in [
        "allowed .shoal/policy.toml: the bootstrap root (allowed_signers, [trust] root_threshold = 2) needs 2 of [alice, bob, carol], has 2 (alice, bob)",
        "allowed files/sensor/sensor.conf: rule \"sensor team\" needs 1 of [alice, sensor-lead], has 1 (sensor-lead)",
        "allowed .shoal/policy.toml: root needs 2 of [alice, bob, carol], has 2 (alice, bob)",
        "allowed files/motd: root needs 2 of [alice, bob, carol], has 2 (alice, carol)",
        "every change of 4 commit(s) up to",
    ] {
        assert!(stderr.contains(line), "missing {line:?} in:\n{stderr}");
    }

    // A device trusting the example's bootstrap root follows it over HTTPS, from scratch.
    let bare = dir.path().join("srv/config.git");
    shoal_e2e::run(
        shoal_e2e::git_command()
            .args(["clone", "-q", "--mirror"])
            .arg(&repo)
            .arg(&bare),
    );
    let server = HttpsGitServer::start(dir.path().join("srv"));
    let device = Device::new(
        dir.path().join("device"),
        &server.url("config.git"),
        &signers,
        "range",
        &format!("ca_file = \"{}\"", server.ca_pem_path().display()),
    );
    device.trust_option("root_threshold = 2");
    device.sync().assert_ok();
    let head = shoal_e2e::run(
        shoal_e2e::git_command()
            .arg("-C")
            .arg(&repo)
            .args(["rev-parse", "HEAD"]),
    );
    assert_eq!(device.applied().as_deref(), Some(head.trim()));
    assert_eq!(
        std::fs::read_to_string(dir.path().join("device/root/etc/motd")).unwrap(),
        "Managed by Shoal. Maintenance on Sunday.\n"
    );
}
