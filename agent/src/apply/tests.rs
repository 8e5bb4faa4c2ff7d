//! Apply's promises as scenarios on a real sandbox root: what lands on disk, what a failure
//! leaves (exactly the previous generation), and the operator's error text. Faults that need
//! root (read-only mounts, a full tmpfs) skip loudly without it, and fail under SHOAL_E2E=1.

use std::fs;
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};

mod attacks;
mod blob_store;

use super::*;
use crate::plan::{observed_paths, plan, Manifest};
use crate::render::{DesiredFile, DesiredState};
use shoal_testkit::tree::{Node, Tree};
use shoal_testkit::{is_root, require_root, Mount};

/// A sandbox device: a root prefix and a state directory, driven like the agent drives them.
struct Device {
    _dir: tempfile::TempDir,
    root: PathBuf,
    state: PathBuf,
    generation: u64,
    manifest: Manifest,
}

impl Device {
    fn new() -> Device {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path().join("root");
        let state = dir.path().join("state");
        fs::create_dir_all(root.join("etc")).unwrap();
        fs::write(
            root.join("etc/passwd"),
            "root:x:0:0:root:/root:/bin/sh\nshoal:x:4321:4322::/:/bin/false\n",
        )
        .unwrap();
        fs::write(root.join("etc/group"), "root:x:0:\nshoal:x:4322:\n").unwrap();
        Device {
            _dir: dir,
            root,
            state,
            generation: 0,
            manifest: Manifest::default(),
        }
    }

    /// Apply's part of the state directory (the unit tests hold no state lock).
    fn area(&self) -> ApplyArea<'_> {
        ApplyArea::for_tests(&self.state)
    }

    fn real(&self, path: &str) -> PathBuf {
        self.root.join(path.trim_start_matches('/'))
    }

    fn plan(&self, desired: &DesiredState) -> crate::plan::Plan {
        let disk = observe(
            &self.root,
            self.area(),
            observed_paths(desired, &self.manifest),
        )
        .unwrap();
        plan(desired, &self.manifest, &disk)
    }

    /// One sync as the agent does it: observe, plan, apply, record, journal_done.
    fn sync(&mut self, desired: &DesiredState) -> Result<Applied, ApplyError> {
        let plan = self.plan(desired);
        let applied = apply(
            &plan,
            desired,
            &self.root,
            self.area(),
            self.generation,
            self.generation + 1,
        )?;
        self.generation += 1;
        self.manifest = Manifest::from_desired(desired);
        journal_done(self.area())?;
        Ok(applied)
    }

    /// Whether the blob store holds `content` (and gives it back whole).
    fn stored(&self, content: &[u8]) -> bool {
        let store = blobs::BlobStore::open(self.area()).unwrap();
        let sha256 = crate::plan::sha256_hex(content);
        store.contains(&sha256).unwrap() && store.read(&sha256).unwrap() == content
    }

    /// Every file and directory under the root, by device path.
    fn snapshot(&self) -> Tree {
        shoal_testkit::tree::snapshot(&self.root)
    }
}

/// The owner every test file gets: `root` when we are root, else our own ids (numerically).
fn me() -> (String, String) {
    if is_root() {
        return ("root".into(), "root".into());
    }
    let probe = tempfile::tempfile().unwrap().metadata().unwrap();
    (probe.uid().to_string(), probe.gid().to_string())
}

fn file(content: &str, mode: u32) -> DesiredFile {
    let (owner, group) = me();
    DesiredFile::new(content, mode, owner, group).declared_by("base", "files/x")
}

fn desired(files: Vec<(&str, DesiredFile)>) -> DesiredState {
    DesiredState::from_files(files)
}

#[test]
fn content_mode_and_owner_land_on_disk() {
    let mut device = Device::new();
    let mut owned = file("owned\n", 0o640);
    if is_root() {
        // By name from the root's /etc/passwd and /etc/group, and numerically.
        owned.owner = "shoal".into();
        owned.group = "shoal".into();
    }
    let mut numeric = file("numeric\n", 0o4755);
    if is_root() {
        numeric.owner = "1234".into();
        numeric.group = "1235".into();
    }
    let gen1 = desired(vec![
        ("/etc/motd", file("hello\n", 0o644)),
        ("/etc/app/owned.conf", owned),
        ("/usr/local/bin/tool", numeric),
    ]);
    let applied = device.sync(&gen1).unwrap();
    assert_eq!(
        applied.written,
        vec![
            PathBuf::from("/etc/app/owned.conf"),
            PathBuf::from("/etc/motd"),
            PathBuf::from("/usr/local/bin/tool")
        ]
    );
    assert_eq!(
        applied.created_dirs,
        vec![
            PathBuf::from("/etc/app"),
            PathBuf::from("/usr"),
            PathBuf::from("/usr/local"),
            PathBuf::from("/usr/local/bin")
        ]
    );

    let motd = fs::metadata(device.real("/etc/motd")).unwrap();
    assert_eq!(fs::read(device.real("/etc/motd")).unwrap(), b"hello\n");
    assert_eq!(motd.mode() & 0o7777, 0o644);
    let owned = fs::metadata(device.real("/etc/app/owned.conf")).unwrap();
    assert_eq!(owned.mode() & 0o7777, 0o640);
    let tool = fs::metadata(device.real("/usr/local/bin/tool")).unwrap();
    assert_eq!(
        tool.mode() & 0o7777,
        0o4755,
        "setuid survives the chown because chmod comes after it"
    );
    let created = fs::metadata(device.real("/usr/local")).unwrap();
    assert_eq!(created.mode() & 0o7777, 0o755);
    if is_root() {
        assert_eq!((owned.uid(), owned.gid()), (4321, 4322));
        assert_eq!((tool.uid(), tool.gid()), (1234, 1235));
        assert_eq!((motd.uid(), motd.gid()), (0, 0));
    }

    // Every content is in the blob store, and nothing is left to do.
    for content in [&b"hello\n"[..], b"owned\n", b"numeric\n"] {
        assert!(device.stored(content));
    }
    assert!(device.plan(&gen1).is_empty());
    assert!(pending(&device.area().journal()).unwrap().is_none());
}

#[test]
fn a_new_generation_changes_creates_and_removes_and_restore_goes_back_offline() {
    let mut device = Device::new();
    let gen1 = desired(vec![
        ("/etc/motd", file("one\n", 0o644)),
        ("/etc/old.conf", file("old\n", 0o600)),
        ("/etc/same", file("same\n", 0o644)),
    ]);
    let gen2 = desired(vec![
        ("/etc/motd", file("two\n", 0o600)),
        ("/etc/same", file("same\n", 0o644)),
        ("/opt/app/new.conf", file("new\n", 0o644)),
    ]);
    device.sync(&gen1).unwrap();
    let at_gen1 = device.snapshot();
    assert_eq!(
        device.plan(&gen2).to_string(),
        format!(
            "change /etc/motd: content, mode 0644→0600\n\
             remove /etc/old.conf\n\
             create /opt/app/new.conf (0644 {0}:{1})\n",
            me().0,
            me().1
        )
    );
    let applied = device.sync(&gen2).unwrap();
    assert_eq!(applied.removed, vec![PathBuf::from("/etc/old.conf")]);
    assert!(!device.real("/etc/old.conf").exists());
    assert_eq!(
        fs::read(device.real("/opt/app/new.conf")).unwrap(),
        b"new\n"
    );
    let at_gen2 = device.snapshot();

    // Back to generation 1 from the blob store alone.
    let m1 = Manifest::from_desired(&gen1);
    let m2 = Manifest::from_desired(&gen2);
    let restored = restore(&m2, &m1, &device.root, device.area(), 2, 1).unwrap();
    journal_done(device.area()).unwrap();
    assert_eq!(
        restored.removed,
        vec![PathBuf::from("/opt/app/new.conf")],
        "{restored:?}"
    );
    let mut expected = at_gen1.clone();
    // The directories gen2 created stay (empty) after a later generation drops their files.
    expected.insert("/opt".into(), Node::Dir);
    expected.insert("/opt/app".into(), Node::Dir);
    assert_eq!(device.snapshot(), expected);

    // And forward again.
    restore(&m1, &m2, &device.root, device.area(), 1, 2).unwrap();
    journal_done(device.area()).unwrap();
    assert_eq!(device.snapshot(), at_gen2);
}

#[test]
fn a_file_shoal_took_over_comes_back_when_the_repo_drops_it() {
    let mut device = Device::new();
    fs::write(device.real("/etc/issue"), "Debian GNU/Linux\n").unwrap();
    fs::set_permissions(device.real("/etc/issue"), fs::Permissions::from_mode(0o600)).unwrap();
    let before_shoal = device.snapshot();

    let gen1 = desired(vec![("/etc/issue", file("Shoal-managed\n", 0o644))]);
    assert_eq!(
        device.plan(&gen1).to_string(),
        format!(
            "create /etc/issue (0644 {}:{}), taking over the file already there (saved for rollback)\n",
            me().0,
            me().1
        )
    );
    device.sync(&gen1).unwrap();
    assert_eq!(
        fs::read(device.real("/etc/issue")).unwrap(),
        b"Shoal-managed\n"
    );

    // Removed from the repository: the distro's file is back, byte for byte, mode too.
    let gen2 = desired(vec![("/etc/motd", file("hi\n", 0o644))]);
    let applied = device.sync(&gen2).unwrap();
    assert_eq!(applied.restored, vec![PathBuf::from("/etc/issue")]);
    let mut expected = before_shoal.clone();
    expected.insert("/etc/motd".into(), device.snapshot()["/etc/motd"].clone());
    assert_eq!(device.snapshot(), expected);

    // Rolling back to before the first generation also restores it.
    device.sync(&gen1).unwrap();
    let m = Manifest::from_desired(&gen1);
    restore(&m, &Manifest::default(), &device.root, device.area(), 3, 0).unwrap();
    journal_done(device.area()).unwrap();
    assert_eq!(device.snapshot(), before_shoal);
}

#[test]
fn a_file_deleted_while_unmanaged_stays_deleted_after_the_next_takeover() {
    let mut device = Device::new();
    fs::write(device.real("/etc/issue"), "distro\n").unwrap();
    let gen1 = desired(vec![("/etc/issue", file("managed\n", 0o644))]);
    let empty = desired(vec![]);
    device.sync(&gen1).unwrap();
    device.sync(&empty).unwrap();
    assert_eq!(fs::read(device.real("/etc/issue")).unwrap(), b"distro\n");
    fs::remove_file(device.real("/etc/issue")).unwrap();
    device.sync(&gen1).unwrap();
    device.sync(&empty).unwrap();
    assert!(
        !device.real("/etc/issue").exists(),
        "the stale pre-Shoal copy must not come back"
    );
}

#[test]
fn drift_is_detected_and_corrected() {
    let mut device = Device::new();
    let gen1 = desired(vec![
        ("/etc/motd", file("declared\n", 0o644)),
        ("/etc/gone", file("g\n", 0o644)),
    ]);
    device.sync(&gen1).unwrap();
    let at_gen1 = device.snapshot();
    fs::write(device.real("/etc/motd"), "hand edit\n").unwrap();
    fs::remove_file(device.real("/etc/gone")).unwrap();

    let plan = device.plan(&gen1);
    assert_eq!(
        plan.to_string(),
        "change /etc/gone: content\n\
         change /etc/motd: content\n\
         drift: /etc/gone removed by hand\n\
         drift: /etc/motd edited by hand\n"
    );
    let applied = apply(&plan, &gen1, &device.root, device.area(), 1, 2).unwrap();
    journal_done(device.area()).unwrap();
    assert_eq!(applied.written.len(), 2);
    assert_eq!(device.snapshot(), at_gen1);
}

#[test]
fn a_directory_in_the_way_changes_nothing() {
    let mut device = Device::new();
    let gen1 = desired(vec![("/etc/motd", file("one\n", 0o644))]);
    device.sync(&gen1).unwrap();
    fs::create_dir_all(device.real("/etc/app.conf/inside")).unwrap();
    let at_gen1 = device.snapshot();

    let gen2 = desired(vec![
        ("/etc/app.conf", file("app\n", 0o644)),
        ("/etc/motd", file("two\n", 0o644)),
    ]);
    let err = device.sync(&gen2).unwrap_err();
    assert_eq!(
        err.to_string(),
        format!(
            "{}/etc/app.conf is a directory, but generation 2 declares a file at /etc/app.conf; \
             remove the directory (or stop declaring the file) and run sync again; \
             the device was left at generation 1",
            device.root.display()
        )
    );
    assert!(matches!(err.fault(), Some(Fault::DirectoryInTheWay { .. })));
    assert_eq!(device.snapshot(), at_gen1);
    assert!(pending(&device.area().journal()).unwrap().is_none());
}

#[test]
fn a_file_where_a_directory_must_be_changes_nothing() {
    let mut device = Device::new();
    let gen1 = desired(vec![("/etc/motd", file("one\n", 0o644))]);
    device.sync(&gen1).unwrap();
    let at_gen1 = device.snapshot();
    let gen2 = desired(vec![
        ("/etc/motd", file("two\n", 0o644)),
        ("/etc/motd/d/x", file("x\n", 0o644)),
    ]);
    let err = device.sync(&gen2).unwrap_err();
    assert_eq!(
        err.to_string(),
        format!(
            "{}/etc/motd is not a directory, but generation 2 declares /etc/motd/d/x beneath it; \
             remove it (or stop declaring the file) and run sync again; \
             the device was left at generation 1",
            device.root.display()
        )
    );
    assert_eq!(device.snapshot(), at_gen1);
}

#[test]
fn an_unknown_owner_changes_nothing() {
    let mut device = Device::new();
    let gen1 = desired(vec![("/etc/motd", file("one\n", 0o644))]);
    device.sync(&gen1).unwrap();
    let at_gen1 = device.snapshot();
    let mut telemetry = file("t\n", 0o644);
    telemetry.owner = "telemetry-no-such-user".into();
    let gen2 = desired(vec![
        ("/etc/motd", file("two\n", 0o644)),
        ("/etc/telemetry.yaml", telemetry),
    ]);
    let err = device.sync(&gen2).unwrap_err();
    assert_eq!(
        err.to_string(),
        format!(
            "owner \"telemetry-no-such-user\" of /etc/telemetry.yaml is not a user in \
             {}/etc/passwd or /etc/passwd; create the user (for example with a sysusers.d \
             snippet) or declare a numeric uid, and run sync again; \
             the device was left at generation 1",
            device.root.display()
        )
    );
    assert_eq!(device.snapshot(), at_gen1);
}

#[test]
fn a_read_only_target_rolls_back_to_the_previous_generation() {
    if !require_root("mounting a read-only bind mount") {
        return;
    }
    let mut device = Device::new();
    let gen1 = desired(vec![
        ("/etc/motd", file("one\n", 0o644)),
        ("/srv/ro/config", file("ro one\n", 0o644)),
    ]);
    device.sync(&gen1).unwrap();
    let _mount = Mount::read_only(&device.real("/srv/ro"));
    let at_gen1 = device.snapshot();

    // Sorted by path: the directories and the two /etc files are written before /srv/ro fails.
    let gen2 = desired(vec![
        ("/etc/motd", file("two\n", 0o644)),
        ("/etc/new/dir/file", file("new\n", 0o644)),
        ("/srv/ro/config", file("ro two\n", 0o644)),
    ]);
    let err = device.sync(&gen2).unwrap_err();
    assert_eq!(
        err.to_string(),
        format!(
            "cannot write /srv/ro/config: {}/srv/ro is on a read-only filesystem; remount it \
             read-write (or stop declaring the file) and run sync again; \
             the device was left at generation 1",
            device.root.display()
        )
    );
    assert_eq!(
        device.snapshot(),
        at_gen1,
        "/etc/motd put back, /etc/new removed"
    );
    assert!(pending(&device.area().journal()).unwrap().is_none());
}

#[test]
fn a_full_disk_rolls_back_to_the_previous_generation() {
    if !require_root("mounting a small tmpfs") {
        return;
    }
    let mut device = Device::new();
    fs::create_dir(device.real("/data")).unwrap();
    let _mount = Mount::tmpfs(&device.real("/data"), "64k");
    let small = |n: char| file(&n.to_string().repeat(100), 0o644);
    let big = |n: char| file(&n.to_string().repeat(20_000), 0o644);
    let gen1 = desired(vec![
        ("/data/a", small('a')),
        ("/data/b", small('b')),
        ("/data/c", small('c')),
        ("/data/d", small('d')),
    ]);
    device.sync(&gen1).unwrap();
    let at_gen1 = device.snapshot();

    // 64 KiB is 16 pages: a and b (5 pages each) fit, c does not.
    let gen2 = desired(vec![
        ("/data/a", big('A')),
        ("/data/b", big('B')),
        ("/data/c", big('C')),
        ("/data/d", big('D')),
    ]);
    let err = device.sync(&gen2).unwrap_err();
    assert_eq!(
        err.to_string(),
        format!(
            "no space left on device while writing /data/c; free space on the filesystem \
             holding {}/data and run sync again; the device was left at generation 1",
            device.root.display()
        )
    );
    assert_eq!(device.snapshot(), at_gen1);
    assert!(pending(&device.area().journal()).unwrap().is_none());
}

#[test]
fn an_unrecorded_apply_is_rolled_back_by_recover_and_a_recorded_one_is_kept() {
    let mut device = Device::new();
    let gen1 = desired(vec![
        ("/etc/motd", file("one\n", 0o644)),
        ("/etc/old", file("old\n", 0o644)),
    ]);
    device.sync(&gen1).unwrap();
    let at_gen1 = device.snapshot();
    let gen2 = desired(vec![
        ("/etc/motd", file("two\n", 0o600)),
        ("/var/new/file", file("new\n", 0o644)),
    ]);

    // Applied, but the agent died before recording generation 2.
    let plan2 = device.plan(&gen2);
    apply(&plan2, &gen2, &device.root, device.area(), 1, 2).unwrap();
    let journal = pending(&device.area().journal()).unwrap().unwrap();
    assert_eq!((journal.from, journal.to), (1, 2));
    let err = apply(&plan2, &gen2, &device.root, device.area(), 1, 2).unwrap_err();
    assert_eq!(
        err.to_string(),
        format!(
            "{}/journal.json records an unfinished apply (generation 1 → 2); recover first \
             (shoal-agent does this at start) and apply again",
            device.state.display()
        )
    );
    let recovery = recover(&device.root, device.area(), |gen| gen == 1).unwrap();
    assert_eq!(
        recovery,
        Some(Recovery::RolledBack {
            from: 1,
            to: 2,
            restored: 3
        })
    );
    assert_eq!(device.snapshot(), at_gen1);
    assert_eq!(
        recover(&device.root, device.area(), |_| false).unwrap(),
        None,
        "idempotent"
    );

    // Applied and recorded, then the agent died before journal_done.
    apply(&plan2, &gen2, &device.root, device.area(), 1, 2).unwrap();
    let at_gen2 = device.snapshot();
    let recovery = recover(&device.root, device.area(), |gen| gen == 2).unwrap();
    assert_eq!(recovery, Some(Recovery::Committed { from: 1, to: 2 }));
    assert_eq!(device.snapshot(), at_gen2);
    assert!(pending(&device.area().journal()).unwrap().is_none());
}

#[test]
fn undo_rolls_back_an_apply_whose_health_check_failed() {
    let mut device = Device::new();
    let gen1 = desired(vec![("/etc/motd", file("one\n", 0o644))]);
    device.sync(&gen1).unwrap();
    let at_gen1 = device.snapshot();
    let gen2 = desired(vec![("/etc/motd", file("two\n", 0o644))]);
    apply(
        &device.plan(&gen2),
        &gen2,
        &device.root,
        device.area(),
        1,
        2,
    )
    .unwrap();
    assert_eq!(
        undo(&device.root, device.area())
            .unwrap()
            .unwrap()
            .to_string(),
        "the apply of generation 2 was interrupted; rolled 1 path(s) back to generation 1"
    );
    assert_eq!(device.snapshot(), at_gen1);
}

#[test]
fn an_edit_between_observe_and_apply_is_what_undo_puts_back() {
    let mut device = Device::new();
    let gen1 = desired(vec![("/etc/motd", file("one\n", 0o644))]);
    device.sync(&gen1).unwrap();
    // Old enough for observe to keep a stamp, so apply would not read it again unchanged.
    std::thread::sleep(std::time::Duration::from_millis(100));
    let gen2 = desired(vec![("/etc/motd", file("two\n", 0o644))]);
    let plan = device.plan(&gen2);
    assert!(plan.stamps.contains_key(Path::new("/etc/motd")), "{plan:?}");
    // Same size, right after the look: only the stat's times and the hash tell them apart.
    fs::write(device.real("/etc/motd"), "edi\n").unwrap();
    let at_edit = device.snapshot();
    apply(&plan, &gen2, &device.root, device.area(), 1, 2).unwrap();
    assert_eq!(
        fs::read_to_string(device.real("/etc/motd")).unwrap(),
        "two\n"
    );
    undo(&device.root, device.area()).unwrap();
    assert_eq!(
        device.snapshot(),
        at_edit,
        "the edit, not observe's stale look, was saved"
    );
}

#[test]
fn a_corrupt_journal_fails_closed() {
    let device = Device::new();
    fs::create_dir_all(&device.state).unwrap();
    fs::write(
        device.state.join("journal.json"),
        "{\"version\": 1, \"from\"",
    )
    .unwrap();
    let err = recover(&device.root, device.area(), |_| false).unwrap_err();
    assert_eq!(
        err.to_string(),
        format!(
            "{}/journal.json is unreadable (EOF while parsing an object at line 1 column 21); \
             refusing to guess which files to restore: compare the device with the generations \
             in the state directory, fix it by hand, then delete the journal",
            device.state.display()
        )
    );
}

#[test]
fn the_journal_format() {
    let journal = Journal {
        version: 1,
        from: 6,
        to: 7,
        entries: vec![
            JournalEntry {
                path: "/etc/motd".into(),
                before: Before::Blob(crate::plan::DiskFile {
                    sha256: "ab".repeat(32),
                    mode: 0o644,
                    uid: 0,
                    gid: 0,
                }),
            },
            JournalEntry {
                path: "/etc/new".into(),
                before: Before::Absent,
            },
        ],
        created_dirs: vec!["/opt/app".into()],
    };
    assert_eq!(
        serde_json::to_string(&journal).unwrap(),
        format!(
            r#"{{"version":1,"from":6,"to":7,"entries":[{{"path":"/etc/motd","before":{{"kind":"blob","sha256":"{}","mode":"0644","uid":0,"gid":0}}}},{{"path":"/etc/new","before":{{"kind":"absent"}}}}],"created_dirs":["/opt/app"]}}"#,
            "ab".repeat(32)
        )
    );
}

#[test]
fn prune_keeps_what_generations_and_saved_files_need() {
    let mut device = Device::new();
    fs::write(device.real("/etc/issue"), "distro\n").unwrap();
    let gen1 = desired(vec![
        ("/etc/motd", file("one\n", 0o644)),
        ("/etc/issue", file("managed\n", 0o644)),
    ]);
    let gen2 = desired(vec![("/etc/motd", file("two\n", 0o644))]);
    device.sync(&gen1).unwrap();
    device.sync(&gen2).unwrap();
    let m2 = Manifest::from_desired(&gen2);
    // gen1's "one" and "managed" go; gen2's "two" and the distro's /etc/issue stay.
    assert_eq!(prune_blobs(device.area(), &[&m2]).unwrap(), 2);
    assert!(device.stored(b"two\n"));
    assert!(device.stored(b"distro\n"));
    assert!(!device.stored(b"one\n"));
}
