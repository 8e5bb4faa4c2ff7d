//! Power cuts (issue 19): the static agent syncs inside a small virtual machine whose whole
//! machine is killed with SIGKILL at random instants across fetch, verify, apply and the
//! generation commit; after every cut the device recovers to exactly one generation (every
//! managed file of the previous commit or every one of the new, byte for byte, and the recorded
//! generation agreeing) and converges on the next sync, and no cut leaves a mirror that needs
//! rebuilding.
//!
//! One trial: a new signed commit (every file rewritten, some added, some removed, some modes
//! changed) is published on the host's `git daemon`; the guest runs `shoal-agent sync`; the
//! harness, watching the agent's system calls on the console, kills QEMU a random fraction of the
//! aimed step's measured length after that step began; the machine boots again; an offline sync
//! (no network, so it can only recover) must leave one generation; an online sync must converge.
//! Trials aim at the steps in turn and the table at the end says which step each cut hit.
//!
//! Knobs: `SHOAL_POWER_CUT_SEED` (replays a run's instants, roughly: the guest's own timing
//! varies), `SHOAL_POWER_CUT_TRIALS` (default 24), `SHOAL_POWER_CUT_FILES` (default 40 under TCG,
//! 150 under KVM), `SHOAL_VM_ACCEL`, `SHOAL_VM_AGENT_BIN`, `SHOAL_VM_KERNEL` (see `vm.rs`).

use std::collections::BTreeMap;
use std::fmt;
use std::io::Write as _;
use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

use shoal_e2e::{
    e2e_required, require_tools, run, static_agent_bin, ConfigRepo, GitDaemon, Guest, Line,
    Listing, SigningKey, Vm, DISK_MOUNT, HOST_FROM_GUEST, MARK,
};

const COMMAND_TIMEOUT: Duration = Duration::from_secs(120);
/// Trials aim at these steps in turn: the issue's four steps (fetch, verify, apply, commit) twice
/// each per round, verify and apply once at each of their ends, the commit once either side of
/// its commit point.
const AIMED: [Step; 8] = [
    Step::Fetch,
    Step::Verify,
    Step::Apply,
    Step::Commit,
    Step::Fetch,
    Step::Plan,
    Step::Files,
    Step::Finish,
];
/// How many cuts must land in each of the four steps of a sync for the run to count.
const MIN_HITS_PER_STEP: usize = 4;

/// Where a sync is, from the last marker seen on the console (ARCHITECTURE.md, "Crash order").
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
enum Step {
    /// Agent start, recovery check, ref advertisement, the pack coming in (gix temp files).
    Fetch,
    /// From the new pack's rename into `objects/pack` (marked by its `.keep`, not synced):
    /// the index, the read-back, `verify`'s signature and anti-rollback checks.
    Verify,
    /// `Mirror::accept`: from `syncfs` through the `.keep` removal and `objects/pack`'s fsync to
    /// `refs/shoal/fetched`.
    Accept,
    /// From the ref's rename: render and plan, nothing written.
    Plan,
    /// From the `syncfs` that makes the new blobs' pack and the journal's content durable: the
    /// pack renamed into place, nothing managed touched yet.
    Apply,
    /// From the journal's rename into place: every managed file written and renamed.
    Files,
    /// From the last managed file's rename: the directories synced, `generations/N.json`
    /// written, up to `current-generation`'s rename (the commit point).
    Commit,
    /// After the commit point: the journal removed, the watermark, pruning.
    Finish,
    /// `last-result.json` recorded: the sync is over but for exiting.
    Done,
    /// The agent exited.
    End,
}

impl fmt::Display for Step {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let name = match self {
            Step::Fetch => "fetch",
            Step::Verify => "verify: pack stored",
            Step::Accept => "verify: accept",
            Step::Plan => "render, plan",
            Step::Apply => "apply: blobs",
            Step::Files => "apply: files",
            Step::Commit => "commit",
            Step::Finish => "after the commit",
            Step::Done => "done",
            Step::End => "end",
        };
        f.pad(name)
    }
}

/// The step a console line starts (the agent's system calls as strace prints them);
/// `renames` counts the managed files renamed into place so far in this sync, `files` is how
/// many the commit declares (every trial rewrites them all).
fn marker(text: &str, renames: usize, files: usize, now: Option<Step>) -> Option<Step> {
    let renamed = text.contains("rename");
    if text.starts_with(&format!("{MARK} sync-begin")) {
        Some(Step::Fetch)
    } else if text.starts_with(&format!("{MARK} sync-end")) {
        Some(Step::End)
    } else if renamed && text.contains("/objects/pack/") && text.contains(".pack\"") {
        Some(Step::Verify)
    } else if text.contains("syncfs(") {
        // The mirror's accept, then (once the plan is made) the `syncfs` that makes the new
        // blobs and the journal's content durable: apply's first traced call. A later one (the
        // managed files' batch) falls inside `Files` and moves nothing.
        match now {
            Some(step) if step >= Step::Plan => Some(Step::Apply),
            _ => Some(Step::Accept),
        }
    } else if renamed && text.contains("refs/shoal/fetched\"") {
        Some(Step::Plan)
    } else if (renamed && text.contains("/state/generations/"))
        || (text.contains(".shoal-new\"") && renamed && renames == files)
    {
        Some(Step::Commit)
    } else if renamed && text.contains("/state/current-generation\"") {
        Some(Step::Finish)
    } else if renamed && text.contains("last-result.json") {
        Some(Step::Done)
    } else if renamed && text.contains("journal.json\"") {
        // `renameat(fd, ".journal.json.shoal-tmp.N", fd, "journal.json")`: the journal in place.
        Some(Step::Files)
    } else if text.contains("/state/blobs/") {
        Some(Step::Apply)
    } else {
        None
    }
}

impl Step {
    /// The step of a sync as the issue names them: fetch, verify (with the accept and the
    /// render and plan that write nothing), apply, commit (with what follows the commit point).
    fn group(self) -> &'static str {
        match self {
            Step::Fetch => "fetch",
            Step::Verify | Step::Accept | Step::Plan => "verify",
            Step::Apply | Step::Files => "apply",
            Step::Commit | Step::Finish | Step::Done | Step::End => "commit",
        }
    }
}

/// When each step began in one sync, as the harness saw it.
struct Timeline {
    began: BTreeMap<Step, Instant>,
    /// Managed files the commit declares, and how many were renamed into place so far.
    files: usize,
    renames: usize,
}

impl Timeline {
    fn new(files: usize) -> Timeline {
        Timeline {
            began: BTreeMap::new(),
            files,
            renames: 0,
        }
    }

    /// Records `line`; returns the step it starts, if it moves the sync forward.
    fn see(&mut self, line: &Line) -> Option<Step> {
        if line.text.contains(".shoal-new\"") && line.text.contains("rename") {
            self.renames += 1;
        }
        let step = marker(&line.text, self.renames, self.files, self.current())?;
        if self.current().is_some_and(|now| step <= now) {
            return None;
        }
        self.began.insert(step, line.at);
        Some(step)
    }

    fn current(&self) -> Option<Step> {
        self.began.keys().next_back().copied()
    }

    /// How long `step` lasted, if this sync went through it and straight into the next one.
    fn length(&self, step: Step) -> Option<Duration> {
        let start = self.began.get(&step)?;
        let (next, end) = self.began.range(step..).nth(1)?;
        (*next as usize == step as usize + 1).then(|| end.duration_since(*start))
    }
}

/// splitmix64: small, seedable, good enough to spread instants.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }

    fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }

    fn unit(&mut self) -> f64 {
        (self.next() >> 11) as f64 / (1u64 << 53) as f64
    }
}

/// A published commit and what it declares: device path → (mode, sha256 of the content).
struct Commit {
    id: String,
    files: BTreeMap<String, (u32, String)>,
}

/// The operator's side: a signed repository served by `git daemon` on the host.
struct Operator {
    dir: tempfile::TempDir,
    key: SigningKey,
    repo: ConfigRepo,
    daemon: GitDaemon,
    /// File number → mode, of the files the next commit keeps.
    live: BTreeMap<u64, u32>,
    next_file: u64,
}

impl Operator {
    /// The operator's key and repository, and a daemon serving it; no files yet.
    fn new() -> Operator {
        let dir = tempfile::tempdir().expect("tempdir");
        let key = SigningKey::generate(dir.path().join("keys"), "operator");
        let repo = ConfigRepo::init(dir.path().join("work"));
        // Start the daemon on an empty directory's repository; commits are published into it.
        run(shoal_e2e::git_command()
            .args(["init", "-q", "--bare"])
            .arg(dir.path().join("srv/config.git")));
        let daemon = GitDaemon::start(dir.path().join("srv"));
        Operator {
            dir,
            key,
            repo,
            daemon,
            live: BTreeMap::new(),
            next_file: 0,
        }
    }

    /// Makes the next commit declare `files` files (numbered from where the last ones ended).
    fn declare(&mut self, files: u64) {
        self.live = (self.next_file..self.next_file + files)
            .map(|n| (n, 0o644))
            .collect();
        self.next_file += files;
    }

    fn allowed_signers(&self) -> String {
        format!("{}\n", self.key.allowed_signers_line("operator@example"))
    }

    fn agent_toml(&self) -> String {
        format!(
            r#"device_id = "vm-1"
state_dir = "{DISK_MOUNT}/state"
root = "{DISK_MOUNT}/root"

[source]
url = "git://{HOST_FROM_GUEST}:{port}/config.git"
ref = "refs/heads/main"
interval = "60s"
timeout = "30s"
retries = 0

[trust]
allowed_signers = "{DISK_MOUNT}/allowed_signers"
verify = "range"
"#,
            port = self.daemon.port()
        )
    }

    /// A new signed commit: about a tenth of the files removed and as many added, every file's
    /// content new, some modes changed; published to the daemon.
    fn publish(&mut self, rng: &mut Rng, round: usize) -> Commit {
        let count = self.live.len() as u64;
        if round > 0 {
            for _ in 0..(count / 10).max(1) {
                let victim = *self
                    .live
                    .keys()
                    .nth(rng.below(self.live.len() as u64) as usize)
                    .expect("a file to remove");
                self.live.remove(&victim);
                self.live.insert(self.next_file, 0o644);
                self.next_file += 1;
            }
        }
        let modes = [0o644, 0o640, 0o600];
        for mode in self.live.values_mut() {
            if rng.below(4) == 0 {
                *mode = modes[rng.below(3) as usize];
            }
        }
        let files_dir = self.repo.path().join("files");
        if files_dir.exists() {
            self.repo.remove("files");
        }
        let mut manifest =
            String::from("version = 1\n[[profile]]\nname = \"base\"\nmatch = \"*\"\n");
        let mut sources = Vec::new();
        for (&n, &mode) in &self.live {
            let source = format!("files/d{}/file-{n}.conf", n % 6);
            let path = format!("/srv/app/d{}/file-{n}.conf", n % 6);
            self.repo.write(&source, content(rng, round, n));
            manifest.push_str(&format!(
                "  [[profile.file]]\n  path = \"{path}\"\n  source = \"{source}\"\n  mode = \"{mode:04o}\"\n"
            ));
            sources.push((source, path, mode));
        }
        self.repo.write("shoal.toml", manifest);
        let id = self
            .repo
            .commit_signed(&self.key, &format!("round {round}"));
        self.repo.publish_to(self.dir.path().join("srv/config.git"));
        let hashes = sha256_of(self.repo.path(), sources.iter().map(|(s, _, _)| s.as_str()));
        let files = sources
            .into_iter()
            .map(|(source, path, mode)| (path, (mode, hashes[&source].clone())))
            .collect();
        Commit { id, files }
    }
}

/// Text a few hundred bytes to a few KiB long, different every round.
fn content(rng: &mut Rng, round: usize, n: u64) -> String {
    const ALPHABET: &[u8] = b"abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789+/";
    let len = 300 + rng.below(3000) as usize;
    let mut text = format!("# round {round}, file {n}\n");
    for i in 0..len {
        text.push(ALPHABET[rng.below(64) as usize] as char);
        if i % 64 == 63 {
            text.push('\n');
        }
    }
    text.push('\n');
    text
}

/// `sha256sum` of `paths` (relative to `dir`), by path.
fn sha256_of<'a>(dir: &Path, paths: impl Iterator<Item = &'a str>) -> BTreeMap<String, String> {
    let out = run(Command::new("sha256sum").current_dir(dir).args(paths));
    out.lines()
        .map(|line| {
            let (hash, path) = line.split_once("  ").expect("a sha256sum line");
            (path.to_owned(), hash.to_owned())
        })
        .collect()
}

/// What one sync printed.
struct SyncRun {
    code: Option<i32>,
    agent: Vec<String>,
    timeline: Timeline,
}

impl SyncRun {
    fn healed(&self) -> bool {
        self.agent.iter().any(|l| l.contains("damaged"))
    }
}

fn sync(guest: &mut Guest, files: usize) -> SyncRun {
    guest.send("sync");
    let deadline = Instant::now() + COMMAND_TIMEOUT;
    let mut run = SyncRun {
        code: None,
        agent: Vec::new(),
        timeline: Timeline::new(files),
    };
    loop {
        let Some(line) = guest.next_line(deadline) else {
            panic!("the sync did not finish:\n{}", guest.tail(40));
        };
        run.timeline.see(&line);
        if let Some(said) = line.text.strip_prefix(&format!("{MARK} agent: ")) {
            run.agent.push(said.to_owned());
        }
        if let Some(code) = line.text.strip_prefix(&format!("{MARK} sync-end ")) {
            run.code = code.trim().parse().ok();
        }
        if line.text.starts_with(&format!("{MARK} done sync")) {
            return run;
        }
    }
}

fn list(guest: &mut Guest) -> Listing {
    Listing::parse(&guest.run("list", COMMAND_TIMEOUT))
}

/// `shoal-agent status --json` in the guest; what it said on stderr when it printed no JSON.
fn status(guest: &mut Guest) -> Result<serde_json::Value, String> {
    let lines = guest.run("status", COMMAND_TIMEOUT);
    let json = lines
        .iter()
        .find_map(|l| l.text.strip_prefix(&format!("{MARK} json ")))
        .unwrap_or_default();
    serde_json::from_str(json).map_err(|e| {
        let said: Vec<&str> = lines
            .iter()
            .filter_map(|l| l.text.strip_prefix(&format!("{MARK} agent: ")))
            .collect();
        format!("`shoal-agent status --json` printed no status ({e}); it said: {said:?}")
    })
}

/// Which of `commits` the listing is exactly at: the same files, modes and contents, nothing else.
fn at_commit<'a>(listing: &Listing, commits: &[&'a Commit]) -> Option<&'a Commit> {
    if !listing.others.is_empty() {
        return None;
    }
    commits.iter().copied().find(|c| c.files == listing.files)
}

/// How the disk looked right after the cut, before the agent ran: "old", "new", or a mix.
fn describe_raw(listing: &Listing, old: &Commit, new: &Commit) -> String {
    let journal = listing.state.iter().any(|s| s == "journal.json");
    let what = match at_commit(listing, &[old, new]) {
        Some(c) if c.id == old.id => "old".to_owned(),
        Some(_) => "new".to_owned(),
        None => {
            let new_files = listing
                .files
                .iter()
                .filter(|(p, f)| new.files.get(*p) == Some(f) && old.files.get(*p) != Some(f))
                .count();
            format!("mixed ({new_files} new)")
        }
    };
    if journal {
        format!("{what} + journal")
    } else {
        what
    }
}

fn difference(listing: &Listing, commit: &Commit) -> String {
    let mut text = String::new();
    for (path, want) in &commit.files {
        match listing.files.get(path) {
            None => text.push_str(&format!("\n  missing {path}")),
            Some(got) if got != want => {
                text.push_str(&format!("\n  {path}: {got:?} instead of {want:?}"))
            }
            Some(_) => {}
        }
    }
    for path in listing.files.keys() {
        if !commit.files.contains_key(path) {
            text.push_str(&format!("\n  extra {path}"));
        }
    }
    for other in &listing.others {
        text.push_str(&format!("\n  not a file: {other}"));
    }
    text
}

/// Prints on the test's real stderr, past libtest's capture, so CI logs show the run.
fn say(text: &str) {
    let mut err = std::io::stderr();
    let _ = writeln!(err, "{text}");
}

struct Trial {
    number: usize,
    aimed: Step,
    fraction: f64,
    after_begin: Duration,
    hit: Step,
    last_call: String,
    raw: String,
    recovered_to: &'static str,
    healed: bool,
    misses: usize,
}

#[test]
fn power_cuts_leave_one_generation_and_the_next_sync_converges() {
    if !e2e_required() {
        say("SKIPPED: power_cut needs SHOAL_E2E=1 (it builds the static agent and boots a VM about 30 times; a few minutes)");
        return;
    }
    if !require_tools(&["git", "ssh-keygen", "sha256sum"]) {
        return;
    }
    let started = Instant::now();
    let seed = std::env::var("SHOAL_POWER_CUT_SEED")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| {
            std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map(|d| d.as_nanos() as u64)
                .unwrap_or(19)
        });
    let trials: usize = std::env::var("SHOAL_POWER_CUT_TRIALS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(24);
    let mut rng = Rng(seed);
    say(&format!(
        "power_cut: seed {seed} (SHOAL_POWER_CUT_SEED={seed} replays it), {trials} trials"
    ));

    let agent = static_agent_bin();
    say(&format!(
        "power_cut: static agent {} ({:.0} s to build or find)",
        agent.display(),
        started.elapsed().as_secs_f64()
    ));
    let mut operator = Operator::new();
    let disk_files = vec![
        ("agent.toml", operator.agent_toml().into_bytes()),
        ("allowed_signers", operator.allowed_signers().into_bytes()),
        ("root/", Vec::new()),
    ];
    let Some(mut vm) = Vm::new(&agent, &disk_files, 64) else {
        return;
    };
    let mut guest = vm.boot();
    let accel = vm.accel().expect("the first boot chose an accelerator");
    let files: u64 = std::env::var("SHOAL_POWER_CUT_FILES")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(if accel == shoal_e2e::Accel::Kvm {
            150
        } else {
            40
        });
    say(&format!(
        "power_cut: {accel:?}, disk cache={}, {files} files per commit, first boot {:.1} s",
        vm.cache_mode(),
        guest.booted().elapsed().as_secs_f64()
    ));
    operator.declare(files);

    // Provisioning: the first commit, synced to the end; its timeline seeds the estimates.
    let mut current = operator.publish(&mut rng, 0);
    guest.run("net-up", COMMAND_TIMEOUT);
    let first = sync(&mut guest, current.files.len());
    assert_eq!(
        first.code,
        Some(0),
        "the first sync failed:\n{}",
        guest.tail(40)
    );
    let listing = list(&mut guest);
    assert!(
        at_commit(&listing, &[&current]).is_some(),
        "the first sync did not converge:{}",
        difference(&listing, &current)
    );
    let mut lengths: BTreeMap<Step, Duration> = BTreeMap::new();
    // A first sync clones the whole repository; an update sync is what the trials cut, so the
    // estimates start from one.
    let mut round = 1;
    current = operator.publish(&mut rng, round);
    let warm_up = sync(&mut guest, current.files.len());
    assert_eq!(
        warm_up.code,
        Some(0),
        "the second sync failed:\n{}",
        guest.tail(40)
    );
    learn(&warm_up.timeline, &mut lengths);
    say(&format!(
        "power_cut: an update sync's steps (ms): {}",
        show_lengths(&lengths)
    ));

    let mut done: Vec<Trial> = Vec::new();
    let mut misses = 0;
    while done.len() < trials {
        round += 1;
        let number = done.len() + 1;
        let aimed = AIMED[done.len() % AIMED.len()];
        // Not the very edges: an instant there is the neighbouring step's.
        // The harness sees a marker some milliseconds after the guest printed it (a serial line
        // under TCG), so the instants stop short of the window's end.
        let fraction = 0.02 + 0.7 * rng.unit();
        let length = lengths
            .get(&aimed)
            .copied()
            .unwrap_or(Duration::from_millis(200));
        let delay = length.mul_f64(fraction);
        let previous = current;
        current = operator.publish(&mut rng, round);

        // The sync to cut.
        guest.send("sync");
        let mut timeline = Timeline::new(current.files.len());
        let mut kill_at: Option<Instant> = None;
        let mut last_call = String::new();
        let mut missed = false;
        loop {
            let deadline = kill_at.unwrap_or_else(|| Instant::now() + COMMAND_TIMEOUT);
            let Some(line) = guest.next_line(deadline) else {
                assert!(kill_at.is_some(), "the sync stalled:\n{}", guest.tail(40));
                break;
            };
            if line.text.contains('(') && !line.text.starts_with(MARK) {
                // strace -f prefixes the thread id.
                last_call = line
                    .text
                    .trim_start_matches(|c: char| c.is_ascii_digit() || c == ' ')
                    .to_owned();
            }
            if let Some(step) = timeline.see(&line) {
                if step == aimed && kill_at.is_none() {
                    kill_at = Some(line.at + delay);
                }
                if step == Step::End {
                    missed = true;
                    break;
                }
            }
        }
        if missed {
            // The sync ended before the instant: the device converged on this commit; the
            // next round aims at the same step again with a new commit.
            misses += 1;
            assert!(
                misses <= 12,
                "too many syncs ended before their cut instant"
            );
            say(&format!(
                "power_cut: round {round} aimed at {aimed} +{} ms ended first; again",
                delay.as_millis()
            ));
            guest
                .wait_for(&format!("{MARK} done sync"), COMMAND_TIMEOUT)
                .unwrap_or_else(|why| panic!("{why}"));
            learn(&timeline, &mut lengths);
            continue;
        }
        guest.kill();
        let hit = timeline.current().expect("the sync had begun");
        let after_begin = timeline
            .began
            .get(&Step::Fetch)
            .map(|t| Instant::now().duration_since(*t))
            .unwrap_or_default();
        drop(guest);

        // After the cut: the disk as the power cut left it, then recovery alone, then a sync.
        let phase = Instant::now();
        guest = vm.boot();
        let boot_took = phase.elapsed();
        let raw = list(&mut guest);
        assert_eq!(
            raw.fs_errors,
            0,
            "ext4 reported errors after the cut:\n{}",
            guest.tail(40)
        );
        let raw = describe_raw(&raw, &previous, &current);
        let offline = sync(&mut guest, current.files.len());
        let recovered = list(&mut guest);
        let context = format!(
            "trial {number} (seed {seed}): cut in {hit} ({aimed} aimed, +{} ms), last call {last_call}",
            delay.as_millis()
        );
        let state = status(&mut guest).unwrap_or_else(|why| {
            panic!(
                "{context}: after recovery: {why}; the offline sync said: {:?}",
                offline.agent
            )
        });
        let Some(at) = at_commit(&recovered, &[&previous, &current]) else {
            panic!(
                "{context}: after recovery the device is at no single generation; against the new commit:{}\nagainst the old:{}\nagent: {:?}",
                difference(&recovered, &current),
                difference(&recovered, &previous),
                offline.agent
            );
        };
        assert_eq!(
            state["commit"].as_str(),
            Some(at.id.as_str()),
            "{context}: the files are at {} but the recorded generation says otherwise: {state}",
            at.id
        );
        assert!(
            state["unfinished_apply"].is_null(),
            "{context}: recovery left an unfinished apply: {state}"
        );
        let recovered_to = if at.id == current.id { "new" } else { "old" };

        let recover_took = phase.elapsed() - boot_took;
        guest.run("net-up", COMMAND_TIMEOUT);
        let online = sync(&mut guest, current.files.len());
        assert_eq!(
            online.code,
            Some(0),
            "{context}: the sync after the cut failed: {:?}\n{}",
            online.agent,
            guest.tail(40)
        );
        let converged = list(&mut guest);
        let state =
            status(&mut guest).unwrap_or_else(|why| panic!("{context}: after the sync: {why}"));
        assert!(
            at_commit(&converged, &[&current]).is_some(),
            "{context}: the sync after the cut did not converge:{}",
            difference(&converged, &current)
        );
        assert_eq!(
            state["commit"].as_str(),
            Some(current.id.as_str()),
            "{context}: {state}"
        );
        assert_eq!(
            state["applied_commit"].as_str(),
            Some(current.id.as_str()),
            "{context}: {state}"
        );
        assert_eq!(
            state["last_result"]["status"], "converged",
            "{context}: {state}"
        );
        let healed = offline.healed() || online.healed();
        // The fetch's crash order: a pack not yet accepted is still marked by its `.keep` and
        // removed at the next open; an accepted one was synced before its ref moved. No cut
        // anywhere may leave a mirror that has to be rebuilt.
        assert!(
            !healed,
            "{context}: the mirror had to be rebuilt after the cut (objects were not durable before the ref that names them, or a marked pack was taken for damage): {:?} {:?}",
            offline.agent,
            online.agent
        );
        learn(&online.timeline, &mut lengths);
        let converge_took = phase.elapsed() - boot_took - recover_took;

        let trial = Trial {
            number,
            aimed,
            fraction,
            after_begin,
            hit,
            last_call,
            raw,
            recovered_to,
            healed,
            misses,
        };
        say(&format!(
            "power_cut: trial {:>2}: aimed {:<18} +{:>5} ms ({:>4.0}% of {} ms) → cut in {:<18} {:>6} ms after sync start; disk after cut: {}; recovered to {}{} [boot {:.1} s, recovery {:.1} s, converge {:.1} s]",
            trial.number,
            trial.aimed,
            delay.as_millis(),
            trial.fraction * 100.0,
            length.as_millis(),
            trial.hit,
            trial.after_begin.as_millis(),
            trial.raw,
            trial.recovered_to,
            if trial.healed { "; mirror rebuilt" } else { "" },
            boot_took.as_secs_f64(),
            recover_took.as_secs_f64(),
            converge_took.as_secs_f64()
        ));
        done.push(trial);
    }

    guest.halt();
    // The disk as the host sees it, read without the guest: the last commit, byte for byte.
    let dump = tempfile::tempdir().expect("tempdir");
    vm.read_dir("/root", dump.path());
    let mut on_disk = BTreeMap::new();
    collect_files(&dump.path().join("root"), "", &mut on_disk);
    let mut in_repo = BTreeMap::new();
    for path in current.files.keys() {
        let source = path.replacen("/srv/app/", "files/", 1);
        let bytes = std::fs::read(operator.repo.path().join(&source)).expect("the repo's file");
        in_repo.insert(path.clone(), bytes);
    }
    assert!(
        on_disk == in_repo,
        "the disk image read on the host differs from the last commit"
    );

    say(&format!(
        "power_cut: {:>5} | {:<20} | {:<20} | {:>19} | {:<80} | {:<24} | {:<12} | {}",
        "trial",
        "aimed",
        "cut in",
        "ms after sync start",
        "last system call seen",
        "disk after the cut",
        "recovered to",
        "mirror rebuilt"
    ));
    for t in &done {
        let mut call = t.last_call.clone();
        call.truncate(80);
        say(&format!(
            "power_cut: {:>5} | {:<20} | {:<20} | {:>19} | {:<80} | {:<24} | {:<12} | {}",
            t.number,
            t.aimed,
            t.hit,
            t.after_begin.as_millis(),
            call,
            t.raw,
            t.recovered_to,
            if t.healed { "yes" } else { "no" }
        ));
    }
    let mut per_step: BTreeMap<Step, usize> = BTreeMap::new();
    let mut per_group: BTreeMap<&str, usize> = BTreeMap::new();
    for t in &done {
        *per_step.entry(t.hit).or_default() += 1;
        *per_group.entry(t.hit.group()).or_default() += 1;
    }
    let summary: Vec<String> = per_step.iter().map(|(s, n)| format!("{s} {n}")).collect();
    let groups: Vec<String> = ["fetch", "verify", "apply", "commit"]
        .iter()
        .map(|g| format!("{g} {}", per_group.get(g).copied().unwrap_or(0)))
        .collect();
    say(&format!(
        "power_cut: {} trials ({}; by step of a sync: {}), {} syncs ended before their instant, {:?}, {:.0} s in all",
        done.len(),
        summary.join(", "),
        groups.join(", "),
        done.last().map_or(0, |t| t.misses),
        accel,
        started.elapsed().as_secs_f64()
    ));
    for group in ["fetch", "verify", "apply", "commit"] {
        let hits = per_group.get(group).copied().unwrap_or(0);
        assert!(
            hits >= MIN_HITS_PER_STEP,
            "only {hits} cut(s) landed in {group} (seed {seed}); every step needs {MIN_HITS_PER_STEP}"
        );
    }
}

/// Folds a complete sync's step lengths into the estimates the next instants are aimed with,
/// weighted towards the latest: the guest's pace drifts a little.
fn learn(timeline: &Timeline, lengths: &mut BTreeMap<Step, Duration>) {
    for step in AIMED {
        if let Some(length) = timeline.length(step) {
            let merged = match lengths.get(&step) {
                Some(old) => (*old + length * 3) / 4,
                None => length,
            };
            lengths.insert(step, merged);
        }
    }
}

fn show_lengths(lengths: &BTreeMap<Step, Duration>) -> String {
    lengths
        .iter()
        .map(|(s, d)| format!("{s} {}", d.as_millis()))
        .collect::<Vec<_>>()
        .join(", ")
}

fn collect_files(dir: &Path, prefix: &str, into: &mut BTreeMap<String, Vec<u8>>) {
    for entry in std::fs::read_dir(dir).expect("read the dumped root") {
        let entry = entry.expect("dir entry");
        let name = format!("{prefix}/{}", entry.file_name().to_string_lossy());
        if entry.file_type().expect("file type").is_dir() {
            collect_files(&entry.path(), &name, into);
        } else {
            into.insert(
                name,
                std::fs::read(entry.path()).expect("read a dumped file"),
            );
        }
    }
}
