//! Kill -9 at every step of a 100-file apply (and of the recovery after one): after the next
//! `recover`, every managed path matches exactly one generation, byte for byte, with its mode
//! and owner. The real apply runs in a child process (this test binary, re-executed) that a
//! fail point kills with SIGKILL. Needs the `failpoints` feature:
//! `cargo test -p shoal-agent --features failpoints --test apply_crash`.
#![cfg(feature = "failpoints")]

use std::env;
use std::fs;
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::os::unix::process::ExitStatusExt;
use std::path::{Path, PathBuf};
use std::process::Command;

use shoal_agent::apply::failpoint::{FAILPOINT_ENV, FAIL_POINTS};
use shoal_agent::apply::{apply, journal_done, observe, recover, Recovery};
use shoal_agent::paths;
use shoal_agent::plan::{observed_paths, plan, Manifest};
use shoal_agent::render::{DesiredFile, DesiredState};
use shoal_agent::state::{StateDir, StateError};
use shoal_testkit::tree::{Node, Tree};
use shoal_testkit::{is_root, require_root, Mount};

/// Set in the re-executed child: `SCENARIO:ACTION:RUN_DIR`.
const CHILD_ENV: &str = "SHOAL_APPLY_CRASH_CHILD";
/// The caller's "generation recorded" flag (`current-generation` in the agent), written by the child after
/// apply returns, read by `committed` in the parent.
const COMMITTED_FILE: &str = "committed";

// ---------------------------------------------------------------------------------------------
// The scenarios: two generations each, built the same way in parent and child.

const FILES: usize = 100;
const PREEXISTING: &str = "/etc/preexisting.conf";
const PREEXISTING_CONTENT: &str = "installed by the distribution\n";

/// 100 files in nested directories, with varied modes and owners.
fn big_gen1() -> DesiredState {
    let files = (0..FILES).map(|i| {
        let content = format!("generation 1, file {i}\n").repeat(1 + i % 7);
        (
            big_path(i),
            file(&content, [0o644, 0o600, 0o640, 0o755][i % 4], i),
        )
    });
    state(files.collect())
}

/// From `big_gen1`: files 0–19 removed, 20–79 changed (content, mode and owner, or both),
/// 80–99 unchanged, 20 new ones (half in directories that do not exist yet), and one file
/// that Shoal takes over from the distribution.
fn big_gen2() -> DesiredState {
    let mut files = Vec::new();
    for i in 20..FILES {
        let old = format!("generation 1, file {i}\n").repeat(1 + i % 7);
        let new = format!("generation 2, file {i}\n").repeat(1 + (i + 3) % 9);
        let mode = [0o644, 0o600, 0o640, 0o755][i % 4];
        let entry = match (i < 80, i % 3) {
            (false, _) => file(&old, mode, i),
            (true, 0) => file(&new, mode, i),
            (true, 1) => file(&old, mode ^ 0o004, i + 1),
            _ => file(&new, 0o600, i),
        };
        files.push((big_path(i), entry));
    }
    for j in 0..20 {
        let path = if j < 10 {
            format!("/opt/new/deep/n{j:03}")
        } else {
            format!("/etc/app/n{j:03}.conf")
        };
        files.push((
            path,
            file(&format!("generation 2, new file {j}\n"), 0o644, j),
        ));
    }
    files.push((PREEXISTING.into(), file("managed by Shoal\n", 0o644, 0)));
    state(files)
}

fn big_path(i: usize) -> String {
    if i < 50 {
        format!("/etc/app/f{i:03}.conf")
    } else {
        format!("/srv/data/s{}/f{i:03}", i % 5)
    }
}

/// Four small files on a tiny tmpfs at `/data`, replaced by bigger ones.
fn full_gen(generation: u8) -> DesiredState {
    let files = ["a", "b", "c", "d"].iter().enumerate().map(|(i, name)| {
        let content = format!("{name}{generation}").repeat(if generation == 1 { 300 } else { 900 });
        (format!("/data/{name}"), file(&content, 0o644, i))
    });
    state(files.collect())
}

fn generations(scenario: &str) -> (DesiredState, DesiredState) {
    match scenario {
        "big" => (big_gen1(), big_gen2()),
        "full" => (full_gen(1), full_gen(2)),
        other => panic!("unknown scenario {other}"),
    }
}

fn state(files: Vec<(String, DesiredFile)>) -> DesiredState {
    DesiredState::from_files(files)
}

/// Owners by name from the device's own /etc/passwd and numerically when we are root; our
/// own ids otherwise (only root may give files away).
fn file(content: &str, mode: u32, i: usize) -> DesiredFile {
    let (owner, group) = if is_root() {
        match i % 3 {
            0 => ("root".to_owned(), "root".to_owned()),
            1 => ("shoal".to_owned(), "shoal".to_owned()),
            _ => ("1234".to_owned(), "1235".to_owned()),
        }
    } else {
        let (uid, gid) = my_ids();
        (uid.to_string(), gid.to_string())
    };
    DesiredFile::new(content, mode, owner, group).declared_by("base", "files/x")
}

fn ids_of(file: &DesiredFile) -> (u32, u32) {
    let id = |name: &str| match name {
        "root" => 0,
        "shoal" => 4321,
        numeric => numeric.parse().unwrap(),
    };
    let gid = match file.group.as_str() {
        "shoal" => 4322,
        other => id(other),
    };
    (id(&file.owner), gid)
}

// ---------------------------------------------------------------------------------------------
// The child: runs the agent's side of the protocol until a fail point kills it.

#[test]
fn child_process_entry() {
    let Ok(spec) = env::var(CHILD_ENV) else {
        return; // An ordinary test run: this test is only a door for the re-executed child.
    };
    let mut parts = spec.splitn(3, ':');
    let (scenario, action, dir) = (
        parts.next().unwrap(),
        parts.next().unwrap(),
        PathBuf::from(parts.next().unwrap()),
    );
    let run = Run { dir };
    match action {
        "apply" => {
            let (gen1, gen2) = generations(scenario);
            let current = Manifest::from_desired(&gen1);
            let state = run.state_dir();
            let area = state.apply_area();
            let disk = observe(&run.root(), area, observed_paths(&gen2, &current)).unwrap();
            let plan = plan(&gen2, &current, &disk);
            apply(&plan, &gen2, &run.root(), area, 1, 2).unwrap();
            // The caller records generation 2 (durably), then ends the transaction.
            paths::write_atomic(&run.dir.join(COMMITTED_FILE), b"2").unwrap();
            journal_done(area).unwrap();
        }
        "recover" => {
            run.recover();
        }
        other => panic!("unknown child action {other}"),
    }
}

// ---------------------------------------------------------------------------------------------
// The parent.

#[derive(Debug, PartialEq, Eq)]
enum Outcome {
    /// Killed at the fail point.
    Killed,
    /// The fail point was not reached that many times: the child ran to the end.
    Completed,
}

/// A sandbox device (root + state dir) with generation 1 applied, copied for every run.
struct Fixture {
    base: tempfile::TempDir,
    template: PathBuf,
    scenario: &'static str,
    runs: usize,
}

struct Run {
    dir: PathBuf,
}

impl Fixture {
    fn new(scenario: &'static str, prepare_root: impl FnOnce(&Path)) -> Fixture {
        assert!(
            env::var_os(FAILPOINT_ENV).is_none(),
            "{FAILPOINT_ENV} must not be set for the parent test process"
        );
        // tmpfs when there is one: the test is about kill -9, not power loss, and ~400 runs
        // of fsyncs on a real disk only cost time.
        let shm = Path::new("/dev/shm");
        let base = if shm.is_dir() && tempfile::tempdir_in(shm).is_ok() {
            tempfile::Builder::new()
                .prefix("shoal-crash")
                .tempdir_in(shm)
        } else {
            tempfile::Builder::new().prefix("shoal-crash").tempdir()
        }
        .unwrap();
        let template = base.path().join("template");
        let run = Run {
            dir: template.clone(),
        };
        fs::create_dir_all(run.root().join("etc")).unwrap();
        fs::write(
            run.root().join("etc/passwd"),
            "root:x:0:0:root:/root:/bin/sh\nshoal:x:4321:4322::/:/bin/false\n",
        )
        .unwrap();
        fs::write(run.root().join("etc/group"), "root:x:0:\nshoal:x:4322:\n").unwrap();
        prepare_root(&run.root());

        let (gen1, _) = generations(scenario);
        let state = run.state_dir();
        let disk = observe(
            &run.root(),
            state.apply_area(),
            observed_paths(&gen1, &Manifest::default()),
        )
        .unwrap();
        let plan = plan(&gen1, &Manifest::default(), &disk);
        apply(&plan, &gen1, &run.root(), state.apply_area(), 0, 1).unwrap();
        journal_done(state.apply_area()).unwrap();
        drop(state);
        Fixture {
            base,
            template,
            scenario,
            runs: 0,
        }
    }

    /// A fresh copy of the device at generation 1.
    fn run(&mut self) -> Run {
        self.runs += 1;
        let dir = self.base.path().join(format!("run-{}", self.runs));
        let status = Command::new("cp")
            .arg("-a")
            .arg(&self.template)
            .arg(&dir)
            .status()
            .unwrap();
        assert!(status.success(), "cp -a failed: {status}");
        Run { dir }
    }

    /// Runs `action` in a child process that dies at `failpoint` (`name:N`).
    fn child(&self, run: &Run, action: &str, failpoint: &str) -> Outcome {
        let output = Command::new(env::current_exe().unwrap())
            .args([
                "child_process_entry",
                "--exact",
                "--nocapture",
                "--test-threads=1",
            ])
            .env(
                CHILD_ENV,
                format!("{}:{action}:{}", self.scenario, run.dir.display()),
            )
            .env(FAILPOINT_ENV, failpoint)
            .output()
            .unwrap();
        match output.status.signal() {
            Some(9) => Outcome::Killed,
            None if output.status.success() => Outcome::Completed,
            _ => panic!(
                "child {action} with {failpoint} failed ({}):\n{}{}",
                output.status,
                String::from_utf8_lossy(&output.stdout),
                String::from_utf8_lossy(&output.stderr)
            ),
        }
    }
}

impl Run {
    fn root(&self) -> PathBuf {
        self.dir.join("root")
    }

    fn state(&self) -> PathBuf {
        self.dir.join("state")
    }

    /// The state directory, locked as the agent holds it. The tests of this file run in
    /// parallel threads that each spawn children: a child forked by another thread holds a
    /// copy of every open descriptor, this lock's included, until it execs (close-on-exec),
    /// so the lock can be briefly busy after our own child died. Wait that out; a lock still
    /// held after two seconds is a real failure.
    fn state_dir(&self) -> StateDir {
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(2);
        loop {
            match StateDir::open(&self.state()) {
                Err(StateError::Locked { .. }) if std::time::Instant::now() < deadline => {
                    std::thread::sleep(std::time::Duration::from_millis(10));
                }
                other => return other.unwrap(),
            }
        }
    }

    fn committed(&self) -> Option<u64> {
        let text = fs::read_to_string(self.dir.join(COMMITTED_FILE)).ok()?;
        text.trim().parse().ok()
    }

    /// What the agent does at start.
    fn recover(&self) -> Option<Recovery> {
        let committed = self.committed();
        recover(&self.root(), self.state_dir().apply_area(), |generation| {
            committed == Some(generation)
        })
        .unwrap()
    }

    fn tree(&self) -> Tree {
        shoal_testkit::tree::snapshot(&self.root())
    }

    fn remove(self) {
        fs::remove_dir_all(&self.dir).unwrap();
    }
}

/// The whole root as generation `desired` defines it: its files, their directories, plus
/// whatever else the template root holds that no generation manages (`unmanaged`).
fn expected_tree(desired: &DesiredState, unmanaged: &Tree) -> Tree {
    let mut tree = unmanaged.clone();
    for (path, file) in &desired.files {
        let (uid, gid) = ids_of(file);
        let node = Node::File {
            content: file.content.clone(),
            mode: file.mode,
            uid,
            gid,
        };
        tree.insert(path.display().to_string(), node);
        for dir in path.ancestors().skip(1) {
            if dir != Path::new("/") {
                tree.insert(dir.display().to_string(), Node::Dir);
            }
        }
    }
    tree
}

/// Asserts `actual` is exactly `expected`, naming the paths that differ (not dumping 100 files).
fn assert_tree(actual: &Tree, expected: &Tree, context: &str) {
    if actual == expected {
        return;
    }
    let mut problems = Vec::new();
    for (path, node) in expected {
        match actual.get(path) {
            None => problems.push(format!("missing {path}")),
            Some(found) if found != node => {
                problems.push(format!("wrong {path}: {}", brief(found)))
            }
            Some(_) => {}
        }
    }
    for path in actual.keys().filter(|p| !expected.contains_key(*p)) {
        problems.push(format!("unexpected {path}"));
    }
    panic!("{context}: {}", problems.join("; "));
}

fn brief(node: &Node) -> String {
    match node {
        Node::Dir => "a directory".into(),
        Node::Symlink(target) => format!("a link to {}", target.display()),
        Node::File {
            content,
            mode,
            uid,
            gid,
        } => format!(
            "{:?}… mode {mode:04o} {uid}:{gid}",
            String::from_utf8_lossy(&content[..content.len().min(24)])
        ),
    }
}

/// The two states a device may be in after recovery, and which one it must be in.
struct Expected {
    gen1: Tree,
    gen2: Tree,
}

impl Expected {
    fn new(scenario: &str, template_root_extra: &Tree) -> Expected {
        let (gen1, gen2) = generations(scenario);
        let mut after_gen1 = template_root_extra.clone();
        if scenario == "big" {
            let (uid, gid) = if is_root() { (0, 0) } else { my_ids() };
            after_gen1.insert(
                PREEXISTING.into(),
                Node::File {
                    content: PREEXISTING_CONTENT.into(),
                    mode: 0o640,
                    uid,
                    gid,
                },
            );
        }
        Expected {
            gen1: expected_tree(&gen1, &after_gen1),
            gen2: expected_tree(&gen2, template_root_extra),
        }
    }

    /// After recovery: all generation 2 if the child recorded it, else all generation 1.
    fn check(&self, run: &Run, context: &str) {
        let tree = run.tree();
        let (want, other, name) = match run.committed() {
            Some(2) => (&self.gen2, &self.gen1, "generation 2 (recorded)"),
            _ => (&self.gen1, &self.gen2, "generation 1 (not recorded)"),
        };
        if tree == *other {
            panic!("{context}: the device is at the other generation than {name}");
        }
        assert_tree(&tree, want, &format!("{context}: expected exactly {name}"));
        assert!(
            !run.state().join("journal.json").exists(),
            "{context}: journal left after recovery"
        );
        let leftovers: Vec<_> = fs::read_dir(run.state())
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .filter(|name| name.contains("shoal-tmp"))
            .collect();
        assert!(
            leftovers.is_empty(),
            "{context}: temp files in the state dir: {leftovers:?}"
        );
    }
}

/// The files in the template's root that no generation manages (passwd, group).
fn unmanaged_tree(root: &Path) -> Tree {
    let mut tree = Tree::new();
    tree.insert("/etc".into(), Node::Dir);
    for name in ["/etc/passwd", "/etc/group"] {
        let real = root.join(&name[1..]);
        let meta = fs::metadata(&real).unwrap();
        tree.insert(
            name.into(),
            Node::File {
                content: fs::read(&real).unwrap(),
                mode: meta.mode() & 0o7777,
                uid: meta.uid(),
                gid: meta.gid(),
            },
        );
    }
    tree
}

fn big_fixture() -> (Fixture, Expected) {
    let fixture = Fixture::new("big", |root| {
        let real = root.join(&PREEXISTING[1..]);
        fs::write(&real, PREEXISTING_CONTENT).unwrap();
        fs::set_permissions(&real, fs::Permissions::from_mode(0o640)).unwrap();
    });
    let template = Run {
        dir: fixture.template.clone(),
    };
    let expected = Expected::new("big", &unmanaged_tree(&template.root()));
    assert_tree(
        &template.tree(),
        &expected.gen1,
        "the template after generation 1",
    );
    (fixture, expected)
}

/// Kills the child at every pass of `point` (1, 2, … until the child runs to the end) and
/// checks each time; returns how many times it was killed.
fn crash_at_every_pass(
    fixture: &mut Fixture,
    expected: &Expected,
    point: &str,
    before: Option<&str>,
) -> usize {
    for nth in 1.. {
        let run = fixture.run();
        if let Some(apply_point) = before {
            let first = fixture.child(&run, "apply", apply_point);
            assert_eq!(first, Outcome::Killed, "apply did not reach {apply_point}");
        }
        let action = if before.is_some() { "recover" } else { "apply" };
        let outcome = fixture.child(&run, action, &format!("{point}:{nth}"));
        let context = match before {
            Some(apply_point) => {
                format!("killed at {apply_point}, then recovery killed at {point}:{nth}")
            }
            None => format!("killed at {point}:{nth}"),
        };
        run.recover();
        expected.check(&run, &context);
        assert_eq!(
            run.recover(),
            None,
            "{context}: a second recovery has nothing to do"
        );
        if nth == 1 && before.is_none() && run.committed().is_none() {
            // The device is usable afterwards: the same apply now runs to the end.
            assert_eq!(fixture.child(&run, "apply", "none:1"), Outcome::Completed);
            expected.check(&run, &format!("{context}, then a clean apply"));
        }
        run.remove();
        if outcome == Outcome::Completed {
            return nth - 1;
        }
    }
    unreachable!("the loop only ends by returning")
}

/// How often a clean apply of the big scenario passes each fail point: 60 changed + 20 new +
/// 1 taken over are written, 20 removed, 3 directories created.
const APPLY_PASSES: &[(&str, usize)] = &[
    ("apply_after_blobs_syncfs", 1),
    ("apply_after_blobs", 1),
    ("apply_after_journal", 1),
    ("apply_after_mkdir", 3),
    ("apply_after_resolve", 101),
    ("apply_after_temp_write", 81),
    ("apply_after_files_syncfs", 1),
    ("apply_after_rename", 81),
    ("apply_after_remove", 20),
    ("apply_after_dir_sync", 1),
    ("journal_done", 1),
];
const RECOVERY_POINTS: &[&str] = &["recover_after_entry", "recover_before_journal_removal"];

#[test]
fn every_fail_point_is_exercised_here() {
    let mut tested: Vec<&str> = APPLY_PASSES.iter().map(|(point, _)| *point).collect();
    tested.extend(RECOVERY_POINTS);
    assert_eq!(
        tested, FAIL_POINTS,
        "a fail point was added to apply: crash-test it"
    );
}

#[test]
fn kill_9_at_every_step_of_a_100_file_apply_leaves_exactly_one_generation() {
    let (mut fixture, expected) = big_fixture();
    for &(point, passes) in APPLY_PASSES {
        let killed = crash_at_every_pass(&mut fixture, &expected, point, None);
        assert_eq!(killed, passes, "how often apply passes {point}");
    }
}

#[test]
fn kill_9_during_recovery_is_repaired_by_the_next_recovery() {
    let (mut fixture, expected) = big_fixture();
    // Half-way through the renames (the 20 removals sort before them: 60 paths to put back),
    // and with everything written but not recorded (the most to roll back: 20 + 81).
    for (apply_point, entries) in [
        ("apply_after_rename:40", 60),
        ("apply_after_dir_sync:1", 101),
    ] {
        let (after_entry, before_removal) = (RECOVERY_POINTS[0], RECOVERY_POINTS[1]);
        let killed = crash_at_every_pass(&mut fixture, &expected, after_entry, Some(apply_point));
        assert_eq!(killed, entries, "paths rolled back after {apply_point}");
        let killed =
            crash_at_every_pass(&mut fixture, &expected, before_removal, Some(apply_point));
        assert_eq!(killed, 1);
    }
}

#[test]
fn recovery_on_a_full_disk_still_restores_the_previous_generation() {
    if !require_root("mounting a small tmpfs") {
        return;
    }
    let mut fixture = Fixture::new("full", |root| {
        fs::create_dir(root.join("data")).unwrap();
    });
    let template = Run {
        dir: fixture.template.clone(),
    };
    let unmanaged = unmanaged_tree(&template.root());
    let expected = Expected::new("full", &unmanaged);

    let run = fixture.run();
    let data = run.root().join("data");
    // The copy's /data becomes a 64 KiB tmpfs holding generation 1's files.
    let saved: Vec<_> = fs::read_dir(&data)
        .unwrap()
        .map(|e| {
            let path = e.unwrap().path();
            let meta = fs::metadata(&path).unwrap();
            (
                path.clone(),
                fs::read(&path).unwrap(),
                meta.mode(),
                meta.uid(),
                meta.gid(),
            )
        })
        .collect();
    // Declared after `run` and `fixture`, so it is unmounted before their directories go.
    let mount = Mount::tmpfs(&data, "64k");
    for (path, content, mode, uid, gid) in saved {
        fs::write(&path, content).unwrap();
        fs::set_permissions(&path, fs::Permissions::from_mode(mode)).unwrap();
        std::os::unix::fs::chown(&path, Some(uid), Some(gid)).unwrap();
    }
    assert_tree(&run.tree(), &expected.gen1, "generation 1 on the tmpfs");

    // Killed after two of four files were replaced; then something fills the disk.
    assert_eq!(
        fixture.child(&run, "apply", "apply_after_rename:2"),
        Outcome::Killed
    );
    let filler = data.join("filler");
    let mut written = 0;
    while fs::OpenOptions::new()
        .append(true)
        .create(true)
        .open(&filler)
        .and_then(|mut f| std::io::Write::write_all(&mut f, &[0; 4096]))
        .is_ok()
    {
        written += 1;
    }
    assert!(written > 0);

    let recovery = run.recover();
    assert_eq!(
        recovery,
        Some(Recovery::RolledBack {
            from: 1,
            to: 2,
            restored: 2
        })
    );
    fs::remove_file(&filler).unwrap();
    expected.check(&run, "recovered on a full disk");
    drop(mount);
}

// ---------------------------------------------------------------------------------------------
// Who the files belong to.

fn my_ids() -> (u32, u32) {
    let status = fs::read_to_string("/proc/self/status").unwrap();
    let field = |key: &str| -> u32 {
        status
            .lines()
            .find_map(|line| line.strip_prefix(key))
            .and_then(|ids| ids.split_whitespace().nth(1))
            .and_then(|id| id.parse().ok())
            .unwrap()
    };
    (field("Uid:"), field("Gid:"))
}
