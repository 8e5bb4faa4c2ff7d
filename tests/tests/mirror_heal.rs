//! A damaged mirror heals on the next sync: each test damages the real mirror of a device that
//! synced (as a power cut or a hand edit would), then runs the real `shoal-agent sync` against a
//! real `git daemon`, with no new commit on the server (the power-cut case of issue 19: the
//! server's ref equals the recorded one) and with a new signed commit, and checks the device
//! converges in that sync, the log names what was wrong, and the watermark, generation and
//! applied files are touched only by a real update.

use std::fs::OpenOptions;
use std::path::{Path, PathBuf};
use std::time::SystemTime;

use shoal_e2e::{git_command, run, run_bytes, Sandbox, MOTD_MANIFEST};

/// An operator's signed repo served by `git daemon`, and a device that applied two commits of
/// it (so its mirror holds two packs, the tip in the newer one, as after a fetch of an update).
struct Scenario {
    sandbox: Sandbox,
    tip: String,
}

impl std::ops::Deref for Scenario {
    type Target = Sandbox;
    fn deref(&self) -> &Sandbox {
        &self.sandbox
    }
}

impl Scenario {
    fn new() -> Option<Self> {
        let sandbox = Sandbox::over_git_daemon()?;
        let mut scenario = Scenario {
            sandbox,
            tip: String::new(),
        };
        scenario.push_motd("one");
        scenario.device.sync().assert_ok();
        scenario.tip = scenario.push_motd("two");
        scenario.device.sync().assert_ok();
        assert_eq!(scenario.device.applied(), Some(scenario.tip.clone()));
        assert_eq!(scenario.packs().len(), 2, "one pack per fetch");
        Some(scenario)
    }

    /// Commits `motd` as the file's new content, signed, and publishes it; returns the commit.
    fn push_motd(&self, motd: &str) -> String {
        let content = format!("{motd}\n");
        self.push(&[("shoal.toml", MOTD_MANIFEST), ("motd", &content)], motd)
    }

    fn mirror(&self) -> PathBuf {
        self.device.state_dir().join("mirror.git")
    }

    fn motd_path(&self) -> PathBuf {
        self.dir.path().join("device/root/etc/motd")
    }

    fn git(&self, args: &[&str]) -> String {
        run(git_command().arg("-C").arg(self.mirror()).args(args))
    }

    fn packs(&self) -> Vec<PathBuf> {
        let mut packs: Vec<PathBuf> = std::fs::read_dir(self.mirror().join("objects/pack"))
            .expect("read the mirror's pack directory")
            .map(|e| e.expect("dir entry").path())
            .filter(|p| p.extension().is_some_and(|e| e == "pack"))
            .collect();
        packs.sort();
        packs
    }

    /// The pack whose index lists `id` (read with `git show-index`).
    fn pack_holding(&self, id: &str) -> PathBuf {
        self.packs()
            .into_iter()
            .find(|pack| {
                let idx = std::fs::read(pack.with_extension("idx")).expect("read the index");
                let listing = run_bytes(git_command().arg("show-index"), &idx);
                String::from_utf8_lossy(&listing).contains(id)
            })
            .unwrap_or_else(|| panic!("no pack of {} holds {id}", self.mirror().display()))
    }

    /// Turns every packed object of the mirror into a loose object (`git unpack-objects`), as in
    /// a mirror written object by object.
    fn unpack_everything(&self) {
        for pack in self.packs() {
            let bytes = std::fs::read(&pack).expect("read the pack");
            std::fs::remove_file(&pack).expect("remove the pack");
            std::fs::remove_file(pack.with_extension("idx")).expect("remove the index");
            run_bytes(
                git_command()
                    .arg("-C")
                    .arg(self.mirror())
                    .args(["unpack-objects", "-q"]),
                &bytes,
            );
        }
        assert!(self.packs().is_empty());
    }

    fn loose_object(&self, id: &str) -> PathBuf {
        self.mirror().join("objects").join(&id[..2]).join(&id[2..])
    }

    fn watermark(&self) -> String {
        std::fs::read_to_string(self.device.state_dir().join("applied-commit"))
            .expect("read the watermark")
    }

    fn generation(&self) -> u64 {
        let run = self.device.agent(&["status", "--json"]);
        run.assert_ok();
        let status: serde_json::Value = serde_json::from_str(&run.stdout).expect("status JSON");
        status["generation"].as_u64().expect("a generation")
    }

    /// The applied file's content and modification time: a sync that did not rewrite it leaves
    /// both equal.
    fn motd(&self) -> (String, SystemTime) {
        let path = self.motd_path();
        let content = std::fs::read_to_string(&path).expect("read the applied motd");
        let mtime = std::fs::metadata(&path)
            .and_then(|m| m.modified())
            .expect("mtime");
        (content, mtime)
    }
}

/// How a case damages the mirror of a scenario; returns the words the heal message must contain.
type Damage = fn(&Scenario) -> Vec<String>;

/// Runs `damage` twice on fresh devices: once with no new commit on the server, once with one,
/// and checks each time that one sync heals the mirror and converges.
fn heals(case: &str, damage: Damage) {
    for new_commit in [false, true] {
        let Some(s) = Scenario::new() else { return };
        let watermark = s.watermark();
        let generation = s.generation();
        let motd = s.motd();
        let needles = damage(&s);
        let target = if new_commit {
            s.push_motd("three")
        } else {
            s.tip.clone()
        };

        let run = s.device.sync();
        let context = format!("{case}, new commit: {new_commit}; stderr:\n{}", run.stderr);
        assert_eq!(run.code, 0, "the sync did not converge ({context})");
        assert_eq!(
            run.stderr.matches("the local mirror is damaged").count(),
            1,
            "the heal is logged once ({context})"
        );
        for needle in &needles {
            assert!(
                run.stderr.contains(needle.as_str()),
                "the heal message should name {needle:?} ({context})"
            );
        }
        assert_eq!(s.device.applied(), Some(target.clone()), "{context}");
        if new_commit {
            assert_eq!(s.motd().0, "three\n", "{context}");
            assert_eq!(s.generation(), generation + 1, "{context}");
        } else {
            assert_eq!(s.watermark(), watermark, "the watermark moved ({context})");
            assert_eq!(s.generation(), generation, "a new generation ({context})");
            assert_eq!(s.motd(), motd, "the applied file was rewritten ({context})");
        }

        // The rebuilt mirror is whole by git's own check, records the tip, and nothing of the
        // damaged one is left behind.
        s.git(&["fsck", "--no-progress", "--no-dangling"]);
        assert_eq!(
            s.git(&["rev-parse", "refs/shoal/fetched"]),
            target,
            "{context}"
        );
        assert!(
            !s.device.state_dir().join("mirror.git.damaged").exists(),
            "{context}"
        );
        // The fetch's own leftovers are gone too: the ref's temp file, and the `.keep` that
        // guards a pack until a ref names it.
        assert!(!s.mirror().join("shoal-fetched.tmp").exists(), "{context}");
        let keeps: Vec<_> = std::fs::read_dir(s.mirror().join("objects/pack"))
            .expect("read the pack directory")
            .map(|e| e.expect("dir entry").path())
            .filter(|p| p.extension().is_some_and(|e| e == "keep"))
            .collect();
        assert!(keeps.is_empty(), "{keeps:?} left ({context})");
        let again = s.device.sync();
        again.assert_ok();
        assert!(
            !again.stderr.contains("damaged"),
            "a healed mirror stays healed ({context}); stderr:\n{}",
            again.stderr
        );
    }
}

fn file_name(path: &Path) -> String {
    path.file_name()
        .expect("a file name")
        .to_string_lossy()
        .into_owned()
}

fn truncate(path: &Path, len: u64) {
    OpenOptions::new()
        .write(true)
        .open(path)
        .and_then(|f| f.set_len(len))
        .unwrap_or_else(|e| panic!("truncate {}: {e}", path.display()));
}

#[test]
fn a_pack_truncated_to_zero_bytes_heals() {
    heals("pack truncated to 0", |s| {
        let pack = s.pack_holding(&s.tip);
        truncate(&pack, 0);
        vec![format!(
            "{} is damaged (empty or truncated?)",
            file_name(&pack)
        )]
    });
}

#[test]
fn a_pack_and_its_index_both_empty_after_a_power_cut_heal() {
    heals("pack and index truncated to 0", |s| {
        let pack = s.pack_holding(&s.tip);
        truncate(&pack, 0);
        truncate(&pack.with_extension("idx"), 0);
        vec![format!(
            "{} is damaged (empty or truncated?)",
            file_name(&pack.with_extension("idx"))
        )]
    });
}

#[test]
fn a_pack_truncated_to_half_heals() {
    heals("pack truncated to half", |s| {
        let pack = s.pack_holding(&s.tip);
        let len = std::fs::metadata(&pack).expect("pack size").len();
        truncate(&pack, len / 2);
        vec![
            format!("{} is damaged (empty or truncated?)", file_name(&pack)),
            "trailing checksum".into(),
        ]
    });
}

#[test]
fn a_deleted_pack_index_heals() {
    heals("pack index deleted", |s| {
        let index = s.pack_holding(&s.tip).with_extension("idx");
        std::fs::remove_file(&index).expect("remove the index");
        vec!["has no index".into(), file_name(&index)]
    });
}

#[test]
fn a_missing_tip_commit_object_heals() {
    heals("tip commit's loose object deleted", |s| {
        s.unpack_everything();
        std::fs::remove_file(s.loose_object(&s.tip)).expect("remove the tip's object");
        vec![format!("cannot read the fetched tip commit {}", s.tip)]
    });
}

#[test]
fn a_missing_file_object_of_the_tip_heals() {
    heals("a blob's loose object deleted", |s| {
        s.unpack_everything();
        let blob = s.git(&["rev-parse", &format!("{}:motd", s.tip)]);
        std::fs::remove_file(s.loose_object(&blob)).expect("remove the blob's object");
        vec![
            format!("cannot read a file of the fetched tip {blob}"),
            format!("\"motd\" in the tree of commit {}", s.tip),
        ]
    });
}

#[test]
fn a_ref_to_a_commit_not_in_the_mirror_heals() {
    heals("ref to a missing commit", |s| {
        let missing = "1111111111111111111111111111111111111111";
        std::fs::write(
            s.mirror().join("refs/shoal/fetched"),
            format!("{missing}\n"),
        )
        .expect("write the ref");
        vec![format!("cannot read the fetched tip commit {missing}")]
    });
}

#[test]
fn garbage_in_the_ref_file_heals() {
    heals("garbage in the ref", |s| {
        std::fs::write(
            s.mirror().join("refs/shoal/fetched"),
            b"\x00\xffnot a ref\n",
        )
        .expect("write the ref");
        vec![format!(
            "the ref refs/shoal/fetched ({}) is unreadable",
            s.mirror().join("refs/shoal/fetched").display()
        )]
    });
}

#[test]
fn an_empty_head_heals() {
    heals("empty HEAD", |s| {
        std::fs::write(s.mirror().join("HEAD"), b"").expect("empty HEAD");
        vec![format!(
            "HEAD ({}) is unreadable",
            s.mirror().join("HEAD").display()
        )]
    });
}

#[test]
fn a_broken_config_heals() {
    heals("broken config", |s| {
        std::fs::write(s.mirror().join("config"), b"[core\n\tbare = \x00\n").expect("write config");
        vec![format!(
            "the repository {} cannot be opened (broken HEAD or config?)",
            s.mirror().display()
        )]
    });
}

/// Not damage: a commit the server itself serves malformed (an author line with no email or
/// time, which git's parser rejects) reads back exactly as its id names it, so rebuilding the
/// mirror would only fetch it again. It is refused by `verify`, every sync, without a rebuild.
#[test]
fn a_malformed_commit_from_the_server_is_refused_not_healed() {
    let Some(s) = Scenario::new() else { return };
    let watermark = s.watermark();
    let motd = s.motd();
    let bad = s.repo.commit_malformed();
    s.publish();

    for attempt in ["first", "second"] {
        let run = s.device.sync();
        run.expect(1, &format!("refusing commit {bad}"));
        assert!(
            !run.stderr.contains("damaged") && !run.stderr.contains("cannot reach"),
            "{attempt} sync: neither damage nor a network failure:\n{}",
            run.stderr
        );
        assert_eq!(s.watermark(), watermark);
        assert_eq!(s.motd(), motd);
    }
}
