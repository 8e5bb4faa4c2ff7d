//! A bounded fetch (issue 11): an unsigned push cannot make the agent download or hold without
//! limit before the signature is checked. Real signed repos served over smart HTTP (TLS and
//! plain), `git daemon`, `file://` and a local path; the attacker pushes an unsigned commit with a
//! 64 MiB or 256 MiB blob of random bytes, a 256 MiB blob of zeros (small on the wire), or many
//! blobs that together pass `max_fetch`. Each is refused naming the bound and its key, the mirror
//! keeps nothing of it (measured as `du` would), the device is untouched, and the operator's next
//! signed commit converges. A refused tip's objects are dropped whatever the reason (unsigned,
//! unknown signer), and what a crash between the fetch and the verdict leaves is cleaned up.
//! Peak RSS is measured by `cargo bench -p shoal-e2e --bench fetch_bound`, not asserted here.

use std::path::{Path, PathBuf};
use std::process::Command;

use shoal_e2e::{
    agent_bin, disk_usage, git_command, output, require_tools, run, run_bytes,
    write_allowed_signers, ConfigRepo, Device, GitDaemon, HttpsGitServer, Incompressible, Run,
    SigningKey,
};

const MIB: usize = 1024 * 1024;

/// Where the device pulls from; the servers stop when dropped.
enum Server {
    Https(HttpsGitServer),
    Http(HttpsGitServer),
    Git(GitDaemon),
    FileUrl,
    LocalPath,
}

impl Server {
    const ALL: [&'static str; 5] = ["https", "http", "git", "file", "path"];

    fn start(kind: &str, srv: &Path) -> Self {
        match kind {
            "https" => Server::Https(HttpsGitServer::start(srv)),
            "http" => Server::Http(HttpsGitServer::start_plain(srv)),
            "git" => Server::Git(GitDaemon::start(srv)),
            "file" => Server::FileUrl,
            "path" => Server::LocalPath,
            other => panic!("no server kind {other}"),
        }
    }

    /// The device's `[source] url`, and the lines its `[source]` table needs besides.
    fn source(&self, srv: &Path, extra: &str) -> (String, String) {
        let bare = srv.join("config.git");
        match self {
            Server::Https(s) => (
                s.url("config.git"),
                format!("ca_file = \"{}\"\n{extra}", s.ca_pem_path().display()),
            ),
            Server::Http(s) => (s.url("config.git"), extra.to_owned()),
            Server::Git(d) => (d.url("config.git"), extra.to_owned()),
            Server::FileUrl => (format!("file://{}", bare.display()), extra.to_owned()),
            Server::LocalPath => (bare.display().to_string(), extra.to_owned()),
        }
    }
}

/// An operator's signed repo, a device that applied its first commit, and an attacker who can
/// push to the same branch without the operator's key.
struct Scenario {
    dir: tempfile::TempDir,
    operator: SigningKey,
    repo: ConfigRepo,
    device: Device,
    /// The commit the device applied.
    good: String,
    _server: Server,
}

impl Scenario {
    /// `extra` goes into the device's `[source]` table (e.g. `max_fetch = "2MiB"`).
    fn new(kind: &str, extra: &str) -> Option<Self> {
        if !require_tools(&["git", "ssh-keygen"]) {
            return None;
        }
        let dir = tempfile::tempdir().expect("tempdir");
        let operator = SigningKey::generate(dir.path().join("keys"), "operator");
        let signers = dir.path().join("allowed_signers");
        write_allowed_signers(&signers, &[("operator@example", &operator)]);
        let (repo, good) = ConfigRepo::init_motd(dir.path().join("work"), &operator, "one");
        let srv = dir.path().join("srv");
        repo.publish_to(srv.join("config.git"));
        let server = Server::start(kind, &srv);
        let (url, source) = server.source(&srv, extra);
        let device = Device::new(dir.path().join("device"), &url, &signers, "range", &source);
        device.sync().assert_ok();
        assert_eq!(device.applied().as_deref(), Some(good.as_str()));
        Some(Scenario {
            dir,
            operator,
            repo,
            device,
            good,
            _server: server,
        })
    }

    fn publish(&self) {
        self.repo.publish_to(self.dir.path().join("srv/config.git"));
    }

    /// The attacker's push: `files` committed unsigned on top of the branch.
    fn push_unsigned(&self, files: &[(&str, Vec<u8>)]) -> String {
        for (path, content) in files {
            self.repo.write(path, content);
        }
        let id = self.repo.commit_unsigned("attack");
        self.publish();
        id
    }

    /// The operator takes the branch back and signs a new motd on top of the applied commit.
    fn operator_recovers(&self, motd: &str) -> String {
        self.repo.reset_hard(&self.good);
        self.repo.write("motd", format!("{motd}\n"));
        let id = self.repo.commit_signed(&self.operator, motd);
        self.publish();
        id
    }

    /// Rewrites the device's config with `extra` as the only extra line of its `[source]`
    /// table (`""` for none), beside what the transport needs.
    fn set_source(&self, extra: &str) {
        let path = self.device.config_path();
        let config = std::fs::read_to_string(&path).expect("read agent.toml");
        let kept: Vec<&str> = config
            .lines()
            .filter(|l| !l.starts_with("max_object") && !l.starts_with("max_fetch"))
            .collect();
        let mut text = kept.join("\n");
        text.push('\n');
        let text = text.replacen("[source]\n", &format!("[source]\n{extra}\n"), 1);
        std::fs::write(&path, text).expect("write agent.toml");
    }

    fn mirror(&self) -> PathBuf {
        self.device.state_dir().join("mirror.git")
    }

    fn motd(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("device/root/etc/motd")).expect("read motd")
    }

    fn status(&self) -> serde_json::Value {
        let run = self.device.agent(&["status", "--json"]);
        run.assert_ok();
        serde_json::from_str(&run.stdout).expect("status JSON")
    }

    fn fetched_ref(&self) -> String {
        run(git_command()
            .arg("-C")
            .arg(self.mirror())
            .args(["rev-parse", "refs/shoal/fetched"]))
    }

    /// What the device holds that a refusal must leave exactly as it was.
    fn snapshot(&self) -> Snapshot {
        let status = self.status();
        Snapshot {
            mirror_bytes: disk_usage(&self.mirror()),
            fetched: self.fetched_ref(),
            applied: status["applied_commit"].as_str().map(str::to_owned),
            generation: status["generation"].as_u64(),
            motd: self.motd(),
        }
    }

    /// The refusal left the device and its state as in `before`, and the mirror holds nothing
    /// of the refused push: within a few KiB of its size before, no pack still marked
    /// unaccepted, no temp file, and whole by git's own check.
    fn assert_untouched(&self, before: &Snapshot, context: &str) {
        let after = self.snapshot();
        assert_eq!(
            after.fetched, before.fetched,
            "the mirror's ref moved ({context})"
        );
        assert_eq!(after.applied, before.applied, "{context}");
        assert_eq!(after.generation, before.generation, "{context}");
        assert_eq!(after.motd, before.motd, "{context}");
        assert!(
            after.mirror_bytes <= before.mirror_bytes + 64 * 1024,
            "the mirror grew from {} to {} bytes ({context})",
            before.mirror_bytes,
            after.mirror_bytes
        );
        let leftovers: Vec<String> = std::fs::read_dir(self.mirror().join("objects/pack"))
            .expect("read the pack directory")
            .map(|e| e.expect("entry").file_name().to_string_lossy().into_owned())
            .filter(|n| n.ends_with(".keep") || n.starts_with(".tmp"))
            .collect();
        assert!(leftovers.is_empty(), "{leftovers:?} left ({context})");
        run(git_command().arg("-C").arg(self.mirror()).args([
            "fsck",
            "--no-progress",
            "--no-dangling",
        ]));
        let last = &self.status()["last_result"];
        assert_eq!(last["status"], "refused", "{context}: {last}");
    }
}

#[derive(Debug)]
struct Snapshot {
    mirror_bytes: u64,
    fetched: String,
    applied: Option<String>,
    generation: Option<u64>,
    motd: String,
}

/// The bytes the agent read before it stopped, from its warning (`received=N`).
fn received(run: &Run) -> u64 {
    let start = run
        .stderr
        .find("received=")
        .unwrap_or_else(|| panic!("no received= in:\n{}", run.stderr))
        + "received=".len();
    run.stderr[start..]
        .chars()
        .take_while(char::is_ascii_digit)
        .collect::<String>()
        .parse()
        .expect("a byte count")
}

#[test]
fn an_unsigned_push_of_a_64_or_256_mib_random_blob_is_refused_early_and_nothing_of_it_is_kept() {
    let Some(s) = Scenario::new("https", "") else {
        return;
    };
    // Stored, not deflated: random bytes do not compress, and this keeps the set-up fast.
    s.repo.git(&["config", "core.compression", "0"]);
    let before = s.snapshot();
    for (mib, seed) in [(64, 1), (256, 2)] {
        s.repo.reset_hard(&s.good);
        s.push_unsigned(&[("blob.bin", Incompressible::bytes(mib * MIB, seed))]);
        let refused = s.device.sync();
        let context = format!("{mib} MiB; stderr:\n{}", refused.stderr);
        refused.expect(
            1,
            &format!(
                "the server sent a blob of {mib} MiB (more than max_object = 8 MiB) before the \
                 signature could be checked; the fetch from "
            ),
        );
        refused.expect(1, "raise [source] max_object in the agent config");
        assert!(
            !refused.stderr.contains("attempt"),
            "not retried ({context})"
        );
        // Refused at the blob's entry header, before its data.
        assert!(received(&refused) < MIB as u64, "{context}");
        s.assert_untouched(&before, &context);

        // With objects that large allowed, the byte cap stops the same push.
        s.set_source("max_object = \"1GiB\"");
        let refused = s.device.sync();
        let context = format!("{mib} MiB, max_object 1 GiB; stderr:\n{}", refused.stderr);
        refused.expect(
            1,
            "the server sent more than max_fetch = 64 MiB before the signature could be checked",
        );
        let got = received(&refused);
        assert!(
            got > 64 * MIB as u64 && got < 65 * MIB as u64,
            "stopped at {got} ({context})"
        );
        s.assert_untouched(&before, &context);
        s.set_source("");
    }
    let two = s.operator_recovers("two");
    s.device.sync().assert_ok();
    assert_eq!(s.device.applied(), Some(two));
    assert_eq!(s.motd(), "two\n");
}

#[test]
fn a_compression_bomb_is_refused_on_its_size_though_it_is_small_on_the_wire() {
    let Some(s) = Scenario::new("git", "") else {
        return;
    };
    let before = s.snapshot();
    s.push_unsigned(&[("zeros", vec![0; 256 * MIB])]);
    let refused = s.device.sync();
    refused.expect(
        1,
        "the server sent a blob of 256 MiB (more than max_object = 8 MiB) before the signature \
         could be checked",
    );
    assert!(received(&refused) < MIB as u64, "{}", refused.stderr);
    s.assert_untouched(&before, "256 MiB of zeros");
    let two = s.operator_recovers("two");
    s.device.sync().assert_ok();
    assert_eq!(s.device.applied(), Some(two));
}

#[test]
fn a_push_past_max_fetch_is_cut_over_every_transport() {
    for kind in Server::ALL {
        let Some(s) = Scenario::new(kind, "max_fetch = \"2MiB\"") else {
            return;
        };
        s.repo.git(&["config", "core.compression", "0"]);
        let before = s.snapshot();
        // Four blobs of 1 MiB: each under max_object, together past max_fetch.
        let blobs: Vec<(String, Vec<u8>)> = (0..4)
            .map(|i| (format!("blob{i}.bin"), Incompressible::bytes(MIB, 10 + i)))
            .collect();
        let files: Vec<(&str, Vec<u8>)> = blobs
            .iter()
            .map(|(name, bytes)| (name.as_str(), bytes.clone()))
            .collect();
        s.push_unsigned(&files);
        let refused = s.device.sync();
        let context = format!("{kind}; stderr:\n{}", refused.stderr);
        refused.expect(
            1,
            "the server sent more than max_fetch = 2 MiB before the signature could be checked; \
             the fetch from ",
        );
        refused.expect(1, "raise [source] max_fetch in the agent config");
        let got = received(&refused);
        assert!(
            got > 2 * MIB as u64 && got < 3 * MIB as u64,
            "stopped at {got} bytes ({context})"
        );
        s.assert_untouched(&before, &context);
        let two = s.operator_recovers("two");
        s.device.sync().assert_ok();
        assert_eq!(s.device.applied(), Some(two), "{context}");
    }
}

#[test]
fn a_tip_verify_refuses_leaves_nothing_in_the_mirror_whatever_the_reason() {
    let Some(s) = Scenario::new("git", "") else {
        return;
    };
    s.repo.git(&["config", "core.compression", "0"]);
    let stranger = SigningKey::generate(s.dir.path().join("keys"), "stranger");
    let before = s.snapshot();
    // Under both bounds: fetched whole, then refused by verify.
    s.push_unsigned(&[("blob.bin", Incompressible::bytes(2 * MIB, 20))]);
    s.device.sync().expect(1, "is not signed");
    s.assert_untouched(&before, "unsigned");

    s.repo.reset_hard(&s.good);
    s.repo.write("blob.bin", Incompressible::bytes(2 * MIB, 21));
    s.repo
        .commit_signed(&stranger, "a key the device does not trust");
    s.publish();
    let refused = s.device.sync();
    assert_eq!(refused.code, 1, "{}", refused.stderr);
    s.assert_untouched(&before, &format!("unknown signer: {}", refused.stderr));

    // Refused twice in a row: still nothing kept, nothing taken for damage.
    let again = s.device.sync();
    assert_eq!(again.code, 1);
    assert!(!again.stderr.contains("damaged"), "{}", again.stderr);
    s.assert_untouched(&before, "refused again");

    let two = s.operator_recovers("two");
    s.device.sync().assert_ok();
    assert_eq!(s.device.applied(), Some(two));
}

/// `git pack-objects` of what `tip` adds over `base` in the server's repository, indexed into
/// the device's mirror as the fetch would have left it; with `keep`, still marked unaccepted.
fn plant_pack(s: &Scenario, base: &str, tip: &str, keep: bool) {
    let bare = s.dir.path().join("srv/config.git");
    let pack = run_bytes(
        git_command()
            .arg("-C")
            .arg(&bare)
            .args(["pack-objects", "--stdout", "--revs", "-q"]),
        format!("{tip}\n^{base}\n").as_bytes(),
    );
    let mut index = git_command();
    index
        .arg("-C")
        .arg(s.mirror())
        .args(["index-pack", "--stdin"]);
    if keep {
        index.arg("--keep=fetched, not accepted");
    }
    run_bytes(&mut index, &pack);
}

#[test]
fn what_a_crash_between_the_fetch_and_the_verdict_leaves_is_cleaned_up_and_the_sync_converges() {
    for keep in [true, false] {
        let Some(s) = Scenario::new("git", "") else {
            return;
        };
        let two = s.operator_recovers("two");
        // keep: killed after gix renamed the pack into place, before verify (or after it
        // refused, before the pack was removed): the pack and its `.keep`, and a temp file of
        // gix's. Not keep: killed after the `.keep` was removed, before the ref moved.
        plant_pack(&s, &s.good, &two, keep);
        let temp = s.mirror().join("objects/pack/.tmpAbCdEf");
        if keep {
            std::fs::write(&temp, b"half a pack").expect("write a temp file");
        }
        let context = format!("keep: {keep}");
        let synced = s.device.sync();
        synced.assert_ok();
        assert!(
            !synced.stderr.contains("damaged"),
            "an unaccepted pack is not damage ({context}):\n{}",
            synced.stderr
        );
        assert_eq!(s.device.applied(), Some(two.clone()), "{context}");
        assert_eq!(s.fetched_ref(), two, "{context}");
        assert!(!temp.exists(), "{context}");
        let keeps = std::fs::read_dir(s.mirror().join("objects/pack"))
            .expect("read the pack directory")
            .filter(|e| {
                e.as_ref()
                    .expect("entry")
                    .file_name()
                    .to_string_lossy()
                    .ends_with(".keep")
            })
            .count();
        assert_eq!(keeps, 0, "{context}");
        run(git_command().arg("-C").arg(s.mirror()).args([
            "fsck",
            "--no-progress",
            "--no-dangling",
        ]));
        let again = s.device.sync();
        again.assert_ok();
        assert!(!again.stderr.contains("damaged"), "{}", again.stderr);
    }
}

#[test]
fn the_keep_is_removed_durably_after_the_objects_are_synced_and_before_the_ref_moves() {
    if !require_tools(&["strace"]) {
        return;
    }
    let Some(s) = Scenario::new("git", "") else {
        return;
    };
    s.operator_recovers("two");
    let trace = s.dir.path().join("sync.trace");
    let mut cmd = Command::new("strace");
    cmd.args(["-f", "-qq", "-y", "-s", "512", "-o"])
        .arg(&trace)
        .args([
            "-e",
            "trace=rename,renameat,renameat2,syncfs,fsync,unlink,unlinkat",
        ])
        .arg(agent_bin())
        .arg("--config")
        .arg(s.device.config_path())
        .arg("sync");
    cmd.env_remove("GIT_DIR").env("SHOAL_LOG", "warn");
    let out = output(&mut cmd);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let lines: Vec<String> = std::fs::read_to_string(&trace)
        .expect("read the trace")
        .lines()
        .map(str::to_owned)
        .collect();
    let mirror = s.mirror().display().to_string();
    let find = |what: &str, pred: &dyn Fn(&str) -> bool| {
        lines
            .iter()
            .position(|l| pred(l))
            .unwrap_or_else(|| panic!("no {what} in the trace:\n{}", lines.join("\n")))
    };
    let syncfs = find("syncfs", &|l| l.contains("syncfs(") && l.contains(&mirror));
    let unkeep = find("unlink of the .keep", &|l| {
        l.contains("unlink") && l.contains("/objects/pack/pack-") && l.contains(".keep\"")
    });
    let pack_dir_synced = find("fsync of the pack directory", &|l| {
        l.contains("fsync(") && l.contains(&format!("{mirror}/objects/pack>"))
    });
    let ref_moved = find("rename of refs/shoal/fetched", &|l| {
        l.contains("rename") && l.contains(&format!("{mirror}/refs/shoal/fetched\""))
    });
    assert!(
        syncfs < unkeep && unkeep < pack_dir_synced && pack_dir_synced < ref_moved,
        "syncfs {syncfs}, unlink .keep {unkeep}, fsync objects/pack {pack_dir_synced}, ref \
         {ref_moved}:\n{}",
        lines.join("\n")
    );
}
