//! Benchmark (not a test): Shoal's apply of N changed files next to the physical floor, for N =
//! 10, 100 and 1,000 files of 4 KiB spread over a few directories.
//!
//! - **Shoal**: a full transaction from generation N-1 (applied by Shoal itself, so its blobs
//!   are in the store) to N, where every file's content differs: `apply::observe`,
//!   `plan::plan`, `apply::apply`, `apply::journal_done` — the real code, on a fresh sandbox
//!   each run (a copy of generation N-1 made once per size, set up outside the timing, then
//!   `syncfs` so no earlier dirty data is flushed inside it).
//! - **Floor**: a plain loop over the same files writing the same contents the durable way
//!   (temp file beside the target, write, fsync, rename; then one fsync per directory), on the
//!   same filesystem, interleaved with the Shoal runs (the order rotates every round) so noise
//!   hits both.
//! - Two diagnostic loops that explain the ratio: the floor plus a copy of every file into a
//!   blob directory, one file per blob made durable by one `syncfs` before renaming them (the
//!   blob store before packs), and the floor plus the same copies in one pack file (the blob
//!   store's pattern now: one file written per transaction).
//! - **Peak RSS**: each size applied once more in a child process (this binary re-executed with
//!   `SHOAL_BENCH_APPLY_CHILD` set), its `ru_maxrss` read with `wait4`.
//!
//! Run: `cargo bench -p shoal-agent --bench apply` (add `-- --quick` for fewer rounds). The
//! sandboxes go under `$TMPDIR` (default `/tmp`): point it elsewhere to measure another
//! filesystem. As root it also runs on a tmpfs it mounts (and unmounts) itself, where fsync
//! costs nothing and the CPU side shows.

use std::ffi::CString;
use std::fs::{self, OpenOptions};
use std::io::{self, Read, Write};
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

#[path = "support/floor.rs"]
mod floor;

use floor::{cpu_time, median, sync_dir, syncfs, temp_beside};
use shoal_agent::apply;
use shoal_agent::plan::{self, sha256_hex, Manifest, ManifestEntry};
use shoal_agent::render::{DesiredFile, DesiredState};
use shoal_agent::state::StateDir;

const SIZES: [usize; 3] = [10, 100, 1_000];
const FILE_SIZE: usize = 4096;
/// Files are spread round-robin over this many directories.
const DIRS: usize = 4;
const MODE: u32 = 0o644;
/// Set in a re-executed child: `setup N DIR` or `apply N DIR`.
const CHILD_ENV: &str = "SHOAL_BENCH_APPLY_CHILD";

fn main() {
    if let Ok(spec) = std::env::var(CHILD_ENV) {
        child(&spec);
        return;
    }
    let quick = std::env::args().any(|a| a == "--quick");
    let base = std::env::temp_dir();

    // Peak RSS first, while this process is still small: a child started with vfork (as
    // `Command` does) inherits the parent's high-water mark into its `ru_maxrss` at exec.
    let parent_hwm = vm_kib("VmHWM");
    let rss: Vec<RssRow> = SIZES.iter().map(|&n| peak_rss(&base, n)).collect();

    let disk_fs = filesystem(&base);
    let rounds_disk = if quick { [5, 3, 3] } else { [21, 11, 7] };
    let disk: Vec<Row> = SIZES
        .iter()
        .zip(rounds_disk)
        .map(|(&n, rounds)| measure(&base, n, rounds))
        .collect();

    let tmpfs = match TmpfsMount::new() {
        Ok(mount) => {
            let rounds = if quick { [5, 5, 3] } else { [31, 21, 11] };
            let fs_name = filesystem(mount.path());
            let rows: Vec<Row> = SIZES
                .iter()
                .zip(rounds)
                .map(|(&n, rounds)| measure(mount.path(), n, rounds))
                .collect();
            Ok((fs_name, rows))
        }
        Err(why) => Err(why),
    };

    print_report(&disk_fs, &disk, &rss, parent_hwm, &tmpfs, quick);
}

// ---------------------------------------------------------------------------------------------
// The files

/// Generation `generation`'s content of file `i`: 4 KiB, different for every file and
/// generation (a header, then xorshift noise so nothing is accidentally shared).
fn content(generation: u64, i: usize) -> Vec<u8> {
    let mut out = format!("# generation {generation}, file {i}\n").into_bytes();
    let mut x = ((generation << 32) | i as u64).wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
    while out.len() < FILE_SIZE {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        out.extend_from_slice(&x.to_le_bytes());
    }
    out.truncate(FILE_SIZE);
    out
}

fn device_path(i: usize) -> PathBuf {
    PathBuf::from(format!("/etc/shoal-bench/d{}/f{i:04}.conf", i % DIRS))
}

fn real_path(root: &Path, device: &Path) -> PathBuf {
    root.join(device.strip_prefix("/").unwrap_or(device))
}

/// Our own uid and gid as numeric owner and group, so the bench runs without root too.
fn owner() -> (String, String) {
    // SAFETY: geteuid and getegid cannot fail and touch no memory of ours.
    unsafe { (libc::geteuid().to_string(), libc::getegid().to_string()) }
}

/// What render would hand to plan and apply for `n` files of generation `generation`.
fn desired(generation: u64, n: usize) -> DesiredState {
    let (owner, group) = owner();
    let files = (0..n).map(|i| {
        let file = DesiredFile::new(content(generation, i), MODE, &owner, &group)
            .declared_by("bench", format!("files/f{i:04}.conf"));
        (device_path(i), file)
    });
    DesiredState::from_files(files)
}

/// The manifest of generation `generation` without holding its contents (for the RSS child,
/// which must not carry generation N-1's bytes the agent would not have in memory).
fn manifest(generation: u64, n: usize) -> Manifest {
    let (owner, group) = owner();
    let files = (0..n)
        .map(|i| {
            let entry = ManifestEntry {
                sha256: sha256_hex(&content(generation, i)),
                mode: MODE,
                owner: owner.clone(),
                group: group.clone(),
            };
            (device_path(i), entry)
        })
        .collect();
    Manifest { files }
}

// ---------------------------------------------------------------------------------------------
// Shoal

/// A device at generation 1 (`n` files), applied by Shoal from nothing: `root` and `state`
/// are created. Returns generation 1's manifest.
fn shoal_generation_1(root: &Path, state: &Path, n: usize) -> Manifest {
    fs::create_dir_all(root).expect("create the sandbox root");
    fs::create_dir_all(state).expect("create the sandbox state dir");
    let desired = desired(1, n);
    let empty = Manifest::default();
    let state = StateDir::open(state).unwrap_or_else(|e| panic!("state dir: {e}"));
    let state = state.apply_area();
    let disk = apply::observe(root, state, plan::observed_paths(&desired, &empty))
        .unwrap_or_else(|e| panic!("observe: {e}"));
    let plan = plan::plan(&desired, &empty, &disk);
    apply::apply(&plan, &desired, root, state, 0, 1).unwrap_or_else(|e| panic!("apply: {e}"));
    apply::journal_done(state).unwrap_or_else(|e| panic!("journal_done: {e}"));
    Manifest::from_desired(&desired)
}

/// Times of one Shoal transaction.
struct Transaction {
    written: usize,
    /// observe + plan (wall).
    planned: Duration,
    /// apply + journal_done: wall, and CPU (user + sys) of the same interval.
    applied: Duration,
    applied_cpu: Duration,
}

/// Observe + plan, then apply + journal_done: generation 1 → 2.
fn shoal_transaction(
    root: &Path,
    state: &Path,
    desired: &DesiredState,
    current: &Manifest,
) -> Transaction {
    let state = StateDir::open(state).unwrap_or_else(|e| panic!("state dir: {e}"));
    let state = state.apply_area();
    let started = Instant::now();
    let disk = apply::observe(root, state, plan::observed_paths(desired, current))
        .unwrap_or_else(|e| panic!("observe: {e}"));
    let plan = plan::plan(desired, current, &disk);
    let planned = started.elapsed();
    let cpu = cpu_time();
    let started = Instant::now();
    let applied =
        apply::apply(&plan, desired, root, state, 1, 2).unwrap_or_else(|e| panic!("apply: {e}"));
    apply::journal_done(state).unwrap_or_else(|e| panic!("journal_done: {e}"));
    Transaction {
        written: applied.written.len(),
        planned,
        applied: started.elapsed(),
        applied_cpu: cpu_time() - cpu,
    }
}

/// Copies a sandbox made by [`shoal_generation_1`] (directories, files, modes) without any
/// fsync: each Shoal round starts from a fresh copy of the same generation N-1, made durable
/// at once by the `syncfs` before the timing.
fn copy_tree(from: &Path, to: &Path) -> io::Result<()> {
    fs::create_dir(to)?;
    fs::set_permissions(to, fs::metadata(from)?.permissions())?;
    for entry in fs::read_dir(from)? {
        let entry = entry?;
        let target = to.join(entry.file_name());
        if entry.file_type()?.is_dir() {
            copy_tree(&entry.path(), &target)?;
        } else {
            fs::copy(entry.path(), &target)?; // permissions included
        }
    }
    Ok(())
}

// ---------------------------------------------------------------------------------------------
// The floor and the diagnostic loops

/// The floor over `desired`'s files under `root` (the shared loop in `support/floor.rs`).
fn floor(root: &Path, desired: &DesiredState) -> io::Result<()> {
    floor::floor(
        desired
            .files
            .iter()
            .map(|(path, file)| (real_path(root, path), file.content.as_slice())),
        MODE,
    )
}

/// A blob temp file as the store creates one: new, 0600.
fn new_blob_temp(temp: &Path) -> io::Result<fs::File> {
    OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(temp)
}

/// The blob store's disk pattern without its CPU work: every content copied into one pack
/// file (no flush), one `syncfs`, the pack renamed and the blob directory fsynced; then the
/// floor.
fn floor_with_pack(root: &Path, blobs: &Path, desired: &DesiredState) -> io::Result<()> {
    let pack = blobs.join("pack");
    let temp = temp_beside(&pack);
    let mut out = new_blob_temp(&temp)?;
    for file in desired.files.values() {
        out.write_all(&file.content)?;
    }
    drop(out);
    syncfs(blobs)?;
    fs::rename(&temp, &pack)?;
    sync_dir(blobs)?;
    floor(root, desired)
}

/// The blob copies one file each, made durable together: all written to temp files, one
/// `syncfs`, then renamed and the blob directory fsynced once; then the floor.
fn floor_with_batched_blobs(
    root: &Path,
    blobs: &Path,
    desired: &DesiredState,
    hashes: &[String],
) -> io::Result<()> {
    let mut temps = Vec::with_capacity(hashes.len());
    for (file, sha256) in desired.files.values().zip(hashes) {
        let blob = blobs.join(sha256);
        let temp = temp_beside(&blob);
        new_blob_temp(&temp)?.write_all(&file.content)?;
        temps.push((temp, blob));
    }
    syncfs(blobs)?;
    for (temp, blob) in &temps {
        fs::rename(temp, blob)?;
    }
    sync_dir(blobs)?;
    floor(root, desired)
}

/// The floor's starting point: the same tree at generation 1, written plainly.
fn plain_generation_1(root: &Path, n: usize) {
    for i in 0..n {
        let real = real_path(root, &device_path(i));
        if let Some(dir) = real.parent() {
            fs::create_dir_all(dir).expect("create a directory of the floor's tree");
        }
        fs::write(&real, content(1, i)).expect("write a file of the floor's tree");
    }
}

// ---------------------------------------------------------------------------------------------
// Timing

#[derive(Clone, Copy)]
enum Contender {
    Shoal,
    Floor,
    FloorWithPack,
    FloorWithBatchedBlobs,
}

const CONTENDERS: [Contender; 4] = [
    Contender::Shoal,
    Contender::Floor,
    Contender::FloorWithPack,
    Contender::FloorWithBatchedBlobs,
];

#[derive(Default)]
struct Samples {
    shoal: Vec<Duration>,
    shoal_cpu: Vec<Duration>,
    shoal_plan: Vec<Duration>,
    floor: Vec<Duration>,
    floor_cpu: Vec<Duration>,
    floor_pack: Vec<Duration>,
    floor_pack_cpu: Vec<Duration>,
    floor_batched: Vec<Duration>,
    floor_batched_cpu: Vec<Duration>,
}

struct Row {
    files: usize,
    rounds: usize,
    shoal: Duration,
    shoal_cpu: Duration,
    shoal_plan: Duration,
    floor: Duration,
    floor_cpu: Duration,
    floor_pack: Duration,
    floor_pack_cpu: Duration,
    floor_batched: Duration,
    floor_batched_cpu: Duration,
    /// Shoal / floor within each round: lowest, median, highest.
    ratio_range: (f64, f64, f64),
}

/// `rounds` rounds on the filesystem of `base`; each round runs every contender once, on a
/// fresh sandbox, in an order that rotates from round to round.
fn measure(base: &Path, n: usize, rounds: usize) -> Row {
    eprintln!("{n} files, {rounds} rounds under {}", base.display());
    let want = desired(2, n);
    let current = Manifest::from_desired(&desired(1, n));
    let hashes: Vec<String> = want
        .files
        .values()
        .map(|file| sha256_hex(&file.content))
        .collect();
    // Generation N-1 as Shoal leaves it (managed files, blobs, preexisting.json), made once
    // and copied for every round.
    let template = tempfile::Builder::new()
        .prefix("shoal-apply-bench-template.")
        .tempdir_in(base)
        .expect("create a sandbox");
    let manifest = shoal_generation_1(
        &template.path().join("root"),
        &template.path().join("state"),
        n,
    );
    assert_eq!(manifest, current);
    let mut samples = Samples::default();
    let mut ratios = Vec::with_capacity(rounds);
    for round in 0..rounds {
        let (mut shoal, mut floor_time) = (Duration::ZERO, Duration::ZERO);
        for k in 0..CONTENDERS.len() {
            let contender = CONTENDERS[(round + k) % CONTENDERS.len()];
            let sandbox = tempfile::Builder::new()
                .prefix("shoal-apply-bench.")
                .tempdir_in(base)
                .expect("create a sandbox");
            let root = sandbox.path().join("root");
            let state = sandbox.path().join("state");
            match contender {
                Contender::Shoal => {
                    copy_tree(&template.path().join("root"), &root).expect("copy generation 1");
                    copy_tree(&template.path().join("state"), &state).expect("copy its state");
                    syncfs(sandbox.path()).expect("syncfs");
                    let done = shoal_transaction(&root, &state, &want, &current);
                    assert_eq!(done.written, n, "every file is changed");
                    samples.shoal_cpu.push(done.applied_cpu);
                    samples.shoal_plan.push(done.planned);
                    samples.shoal.push(done.applied);
                    shoal = done.applied;
                }
                Contender::Floor => {
                    plain_generation_1(&root, n);
                    syncfs(sandbox.path()).expect("syncfs");
                    let cpu = cpu_time();
                    let started = Instant::now();
                    floor(&root, &want).expect("floor loop");
                    floor_time = started.elapsed();
                    samples.floor_cpu.push(cpu_time() - cpu);
                    samples.floor.push(floor_time);
                }
                Contender::FloorWithPack | Contender::FloorWithBatchedBlobs => {
                    plain_generation_1(&root, n);
                    let blobs = state.join("blobs");
                    fs::create_dir_all(&blobs).expect("create the blob directory");
                    syncfs(sandbox.path()).expect("syncfs");
                    let cpu = cpu_time();
                    let started = Instant::now();
                    if let Contender::FloorWithPack = contender {
                        floor_with_pack(&root, &blobs, &want).expect("pack loop");
                        samples.floor_pack.push(started.elapsed());
                        samples.floor_pack_cpu.push(cpu_time() - cpu);
                    } else {
                        floor_with_batched_blobs(&root, &blobs, &want, &hashes)
                            .expect("batched blob loop");
                        samples.floor_batched.push(started.elapsed());
                        samples.floor_batched_cpu.push(cpu_time() - cpu);
                    }
                }
            }
            check(&root, &want);
        }
        ratios.push(shoal.as_secs_f64() / floor_time.as_secs_f64());
    }
    ratios.sort_by(f64::total_cmp);
    Row {
        files: n,
        rounds,
        shoal: median(samples.shoal),
        shoal_cpu: median(samples.shoal_cpu),
        shoal_plan: median(samples.shoal_plan),
        floor: median(samples.floor),
        floor_cpu: median(samples.floor_cpu),
        floor_pack: median(samples.floor_pack),
        floor_pack_cpu: median(samples.floor_pack_cpu),
        floor_batched: median(samples.floor_batched),
        floor_batched_cpu: median(samples.floor_batched_cpu),
        ratio_range: (
            ratios[0],
            ratios[ratios.len() / 2],
            ratios[ratios.len() - 1],
        ),
    }
}

/// Every contender must leave exactly generation 2 on disk.
fn check(root: &Path, desired: &DesiredState) {
    for (path, file) in &desired.files {
        let real = real_path(root, path);
        let found = fs::read(&real).unwrap_or_else(|e| panic!("read {}: {e}", real.display()));
        assert!(
            found == file.content,
            "{} is not generation 2",
            real.display()
        );
    }
}

// ---------------------------------------------------------------------------------------------
// Peak RSS, in a child process

struct RssRow {
    files: usize,
    /// `ru_maxrss` of the child that applied, KiB.
    peak_kib: u64,
    /// The child's high-water mark after building generation 2's desired state and
    /// generation 1's manifest, before observe, KiB.
    before_kib: u64,
}

/// Sets up a device at generation 1 in one child, then applies generation 2 in another and
/// reads that child's peak RSS.
fn peak_rss(base: &Path, n: usize) -> RssRow {
    eprintln!("peak RSS of the apply of {n} files (child process)");
    let sandbox = tempfile::Builder::new()
        .prefix("shoal-apply-bench-rss.")
        .tempdir_in(base)
        .expect("create a sandbox");
    run_child("setup", n, sandbox.path());
    let (usage, out) = run_child("apply", n, sandbox.path());
    let field = |name: &str| -> u64 {
        out.lines()
            .find_map(|line| line.strip_prefix(name)?.trim().parse().ok())
            .unwrap_or_else(|| panic!("the child printed no {name:?}: {out:?}"))
    };
    assert_eq!(field("written") as usize, n, "every file is changed");
    RssRow {
        files: n,
        peak_kib: usage.ru_maxrss as u64,
        before_kib: field("before_apply_kib"),
    }
}

/// Runs this binary as `mode n dir`, returning its rusage (from `wait4`) and its stdout.
// The child is reaped by `wait4` (to get its own rusage), which clippy cannot see.
#[allow(clippy::zombie_processes)]
fn run_child(mode: &str, n: usize, dir: &Path) -> (libc::rusage, String) {
    let exe = std::env::current_exe().expect("the bench binary's path");
    let mut child = Command::new(exe)
        .env(CHILD_ENV, format!("{mode} {n} {}", dir.display()))
        .stdout(Stdio::piped())
        .spawn()
        .expect("re-execute the bench binary");
    let mut out = String::new();
    child
        .stdout
        .take()
        .expect("piped stdout")
        .read_to_string(&mut out)
        .expect("read the child's output");
    let pid = child.id() as libc::pid_t;
    let mut status = 0;
    // SAFETY: rusage is plain data, zero-initialised is valid; wait4 fills it for our own child.
    let mut usage: libc::rusage = unsafe { std::mem::zeroed() };
    // SAFETY: valid pointers to locals; pid is our unreaped child.
    let waited = unsafe { libc::wait4(pid, &mut status, 0, &mut usage) };
    assert_eq!(waited, pid, "wait4 failed");
    assert!(
        libc::WIFEXITED(status) && libc::WEXITSTATUS(status) == 0,
        "the {mode} child failed"
    );
    (usage, out)
}

/// The child side: `setup N DIR` puts a device at generation 1 under DIR; `apply N DIR` does
/// what a sync does from there to generation 2 and prints what the parent needs.
fn child(spec: &str) {
    let mut parts = spec.splitn(3, ' ');
    let (Some(mode), Some(n), Some(dir)) = (parts.next(), parts.next(), parts.next()) else {
        panic!("{CHILD_ENV}={spec:?}: expected `setup|apply N DIR`");
    };
    let n: usize = n.parse().expect("a number of files");
    let (root, state) = (Path::new(dir).join("root"), Path::new(dir).join("state"));
    match mode {
        "setup" => {
            shoal_generation_1(&root, &state, n);
            syncfs(Path::new(dir)).expect("syncfs");
        }
        "apply" => {
            // What a sync holds when it reaches apply: the rendered desired state (contents
            // included) and the current generation's manifest (hashes only).
            let desired = desired(2, n);
            let current = manifest(1, n);
            let before = vm_kib("VmHWM");
            let done = shoal_transaction(&root, &state, &desired, &current);
            println!("before_apply_kib {before}");
            println!("written {}", done.written);
        }
        other => panic!("{CHILD_ENV}: unknown mode {other:?}"),
    }
}

/// A `Vm*` line of /proc/self/status, KiB.
fn vm_kib(field: &str) -> u64 {
    let status = fs::read_to_string("/proc/self/status").expect("read /proc/self/status");
    status
        .lines()
        .find_map(|line| {
            let rest = line.strip_prefix(field)?.strip_prefix(':')?;
            rest.trim().trim_end_matches("kB").trim().parse().ok()
        })
        .unwrap_or_else(|| panic!("no {field} in /proc/self/status"))
}

// ---------------------------------------------------------------------------------------------
// tmpfs

/// A tmpfs mounted on a fresh temp dir, unmounted when dropped.
struct TmpfsMount {
    dir: tempfile::TempDir,
}

impl TmpfsMount {
    fn new() -> Result<TmpfsMount, String> {
        // SAFETY: geteuid cannot fail.
        if unsafe { libc::geteuid() } != 0 {
            return Err("not root: cannot mount a tmpfs".to_owned());
        }
        let dir = tempfile::Builder::new()
            .prefix("shoal-apply-bench-tmpfs.")
            .tempdir()
            .map_err(|e| format!("temp dir: {e}"))?;
        let target = c_path(dir.path());
        // SAFETY: NUL-terminated strings that outlive the call.
        let rc = unsafe {
            libc::mount(
                c"tmpfs".as_ptr(),
                target.as_ptr(),
                c"tmpfs".as_ptr(),
                0,
                c"size=1g,mode=0755".as_ptr().cast(),
            )
        };
        if rc != 0 {
            return Err(format!(
                "mount -t tmpfs on {}: {}",
                dir.path().display(),
                io::Error::last_os_error()
            ));
        }
        Ok(TmpfsMount { dir })
    }

    fn path(&self) -> &Path {
        self.dir.path()
    }
}

impl Drop for TmpfsMount {
    fn drop(&mut self) {
        let target = c_path(self.dir.path());
        // SAFETY: a NUL-terminated path that outlives the call.
        if unsafe { libc::umount2(target.as_ptr(), 0) } != 0 {
            let err = io::Error::last_os_error();
            // SAFETY: as above; a lazy unmount cannot leave the mount behind.
            unsafe { libc::umount2(target.as_ptr(), libc::MNT_DETACH) };
            eprintln!("unmount {}: {err} (detached)", self.dir.path().display());
        }
    }
}

fn c_path(path: &Path) -> CString {
    CString::new(path.as_os_str().as_bytes()).expect("a path without NUL")
}

// ---------------------------------------------------------------------------------------------
// Where we ran

/// `ext4 (/dev/vda, statfs f_type 0xef53)` for the filesystem holding `dir`.
fn filesystem(dir: &Path) -> String {
    let c = c_path(dir);
    // SAFETY: statfs is plain data; zero-initialised is valid and statfs fills it.
    let mut st: libc::statfs = unsafe { std::mem::zeroed() };
    // SAFETY: valid pointers for the duration of the call.
    let magic = if unsafe { libc::statfs(c.as_ptr(), &mut st) } == 0 {
        format!("{:#x}", st.f_type as u64)
    } else {
        "unknown".to_owned()
    };
    let dir = fs::canonicalize(dir).unwrap_or_else(|_| dir.to_owned());
    // The mount holding `dir` is the longest mount point that is a prefix of it.
    let mounts = fs::read_to_string("/proc/self/mountinfo").unwrap_or_default();
    let mount = mounts
        .lines()
        .filter_map(|line| {
            let (left, right) = line.split_once(" - ")?;
            let point = left.split(' ').nth(4)?.replace("\\040", " ");
            let mut right = right.split(' ');
            let (fstype, source) = (right.next()?, right.next()?);
            dir.starts_with(&point)
                .then(|| (point.len(), fstype.to_owned(), source.to_owned()))
        })
        .max_by_key(|(len, _, _)| *len);
    match mount {
        Some((_, fstype, source)) => format!("{fstype} ({source}, statfs f_type {magic})"),
        None => format!("statfs f_type {magic}"),
    }
}

fn machine() -> String {
    let cores = std::thread::available_parallelism().map_or(0, |n| n.get());
    let cpu = fs::read_to_string("/proc/cpuinfo")
        .ok()
        .and_then(|info| {
            info.lines().find_map(|l| {
                Some(
                    l.strip_prefix("model name")?
                        .split_once(':')?
                        .1
                        .trim()
                        .to_owned(),
                )
            })
        })
        .unwrap_or_else(|| "unknown CPU".to_owned());
    let kernel = fs::read_to_string("/proc/sys/kernel/osrelease").unwrap_or_default();
    format!(
        "{cores} cores (nproc), {cpu}, {} Linux {}",
        std::env::consts::ARCH,
        kernel.trim()
    )
}

// ---------------------------------------------------------------------------------------------
// Output (markdown on stdout)

fn ms(d: Duration) -> String {
    let ms = d.as_secs_f64() * 1e3;
    if ms >= 100.0 {
        format!("{ms:.0} ms")
    } else if ms >= 10.0 {
        format!("{ms:.1} ms")
    } else {
        format!("{ms:.2} ms")
    }
}

fn mib(kib: u64) -> String {
    format!("{:.1} MiB", kib as f64 / 1024.0)
}

fn ratio(a: Duration, b: Duration) -> f64 {
    a.as_secs_f64() / b.as_secs_f64()
}

/// The main table, then where the time goes. `cpu_view`: the filesystem costs no I/O wait
/// (tmpfs), so the diagnostic loops are compared by CPU time, which a loaded machine does not
/// stretch the way it stretches wall time.
fn print_timing(fs_name: &str, rows: &[Row], rss: Option<&[RssRow]>, cpu_view: bool) {
    println!("Filesystem: {fs_name}\n");
    print!("| changed files | rounds | Shoal apply | floor | Shoal/floor | per round: median (min–max) | Shoal CPU | floor CPU | CPU ratio | observe+plan |");
    println!("{}", if rss.is_some() { " peak RSS |" } else { "" });
    print!("| ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |");
    println!("{}", if rss.is_some() { " ---: |" } else { "" });
    for row in rows {
        let (low, mid, high) = row.ratio_range;
        print!(
            "| {} | {} | {} | {} | **{:.2}×** | {mid:.2}× ({low:.2}–{high:.2}×) | {} | {} | {:.2}× | {} |",
            row.files,
            row.rounds,
            ms(row.shoal),
            ms(row.floor),
            ratio(row.shoal, row.floor),
            ms(row.shoal_cpu),
            ms(row.floor_cpu),
            ratio(row.shoal_cpu, row.floor_cpu),
            ms(row.shoal_plan),
        );
        match rss.and_then(|rss| rss.iter().find(|r| r.files == row.files)) {
            Some(r) => println!(" {} |", mib(r.peak_kib)),
            None => println!(),
        }
    }
    println!();
    let what = if cpu_view { "CPU time" } else { "wall time" };
    println!(
        "Where the time goes ({what}, same rounds; the blob loops are the floor plus a copy of \
         each file into a blob directory, written before the targets as apply does):\n"
    );
    println!("| changed files | floor (1 fsync/file) | + blob copies one file each, one syncfs | + blob copies in one pack, one syncfs | Shoal apply | Shoal / pack loop |");
    println!("| ---: | ---: | ---: | ---: | ---: | ---: |");
    for row in rows {
        let [floor, batched, pack, shoal] = if cpu_view {
            [
                row.floor_cpu,
                row.floor_batched_cpu,
                row.floor_pack_cpu,
                row.shoal_cpu,
            ]
        } else {
            [row.floor, row.floor_batched, row.floor_pack, row.shoal]
        };
        println!(
            "| {} | {} | {} | {} | {} | {:.2}× |",
            row.files,
            ms(floor),
            ms(batched),
            ms(pack),
            ms(shoal),
            ratio(shoal, pack),
        );
    }
    println!();
}

fn print_report(
    disk_fs: &str,
    disk: &[Row],
    rss: &[RssRow],
    parent_hwm: u64,
    tmpfs: &Result<(String, Vec<Row>), String>,
    quick: bool,
) {
    println!("## Apply: N changed files vs the write+fsync+rename floor\n");
    println!("Machine: {}  ", machine());
    println!(
        "Command: `cargo bench -p shoal-agent --bench apply{}`  ",
        if quick { " -- --quick" } else { "" }
    );
    println!(
        "Files: {FILE_SIZE} bytes each over {DIRS} directories; every file's content differs \
         between N-1 and N. Times are medians over rounds; Shoal apply = `apply::apply` + \
         `apply::journal_done`; CPU = user+sys of the same interval; Shoal/floor = ratio of the \
         medians.\n"
    );
    print_timing(disk_fs, disk, Some(rss), false);

    println!(
        "Peak RSS of the apply in a child process (`wait4` ru_maxrss; the child holds generation \
         N's desired state with its contents and N-1's manifest, as a sync does):\n"
    );
    println!("| changed files | peak RSS | before observe (desired state built) | added by observe+plan+apply |");
    println!("| ---: | ---: | ---: | ---: |");
    for r in rss {
        println!(
            "| {} | {} | {} | {} |",
            r.files,
            mib(r.peak_kib),
            mib(r.before_kib),
            mib(r.peak_kib.saturating_sub(r.before_kib)),
        );
    }
    println!(
        "\n(The bench process's own high-water mark when it started the children: {}; a vfork'd \
         child's ru_maxrss cannot be below it.)\n",
        mib(parent_hwm)
    );

    match tmpfs {
        Ok((fs_name, rows)) => {
            println!("On a tmpfs (fsync is free: the CPU side):\n");
            print_timing(fs_name, rows, None, true);
        }
        Err(why) => println!("tmpfs: skipped ({why}).\n"),
    }
}
