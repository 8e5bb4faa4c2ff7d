//! Benchmark (not a test): what an unsigned push costs a device before the signature check —
//! the agent's peak RSS (`wait4` ru_maxrss of the `shoal-agent sync` child), how much it read,
//! and what its mirror holds afterwards — for random (incompressible) blobs of 64 and 256 MiB, a
//! 256 MiB blob of zeros (a compression bomb: small on the wire, huge inflated), ten 7 MiB blobs
//! (past `max_fetch`, each under `max_object`) and 30,000 small files (past gix's read-ahead
//! threshold), under the default bounds, with `max_object` raised out of the way (the byte cap
//! alone), and with both raised (what gix does by itself). A signed first sync and a signed 7 MiB
//! file are the legitimate reference.
//!
//! Run: `cargo bench -p shoal-e2e --bench fetch_bound` (`-- --quick` skips the rows without
//! bounds, which hold hundreds of MiB). The server is `git daemon` (a process of its own) and
//! every big file is streamed to disk, so this process stays small: a child's ru_maxrss starts
//! at its parent's high-water mark when it is spawned with vfork (`Command` does), and that
//! mark is printed with the table.

use std::io::Write;
use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

use shoal_e2e::{
    agent_bin, disk_usage, git_command, run, write_allowed_signers, ConfigRepo, Device, GitDaemon,
    Incompressible, SigningKey,
};

const MIB: u64 = 1024 * 1024;

/// One attack: a commit on top of the operator's, and whether it is signed.
struct Push {
    what: &'static str,
    commit: String,
    /// The pack a complete fetch of it transfers (what the server would send).
    wire: u64,
}

/// The bounds a row runs under: the `[source]` lines, and a name for the table.
struct Bounds {
    name: &'static str,
    lines: &'static str,
}

const DEFAULTS: Bounds = Bounds {
    name: "defaults (64 MiB / 8 MiB)",
    lines: "",
};
const FETCH_CAP_ONLY: Bounds = Bounds {
    name: "max_fetch 64 MiB, max_object 1 GiB",
    lines: "max_object = \"1GiB\"",
};
const NONE: Bounds = Bounds {
    name: "none (both 16 GiB)",
    lines: "max_fetch = \"16GiB\"\nmax_object = \"16GiB\"",
};

struct Row {
    push: String,
    wire: u64,
    bounds: &'static str,
    verdict: String,
    read: Option<u64>,
    peak_kib: u64,
    anon_kib: u64,
    mirror_before: u64,
    mirror_after: u64,
    wall: Duration,
}

/// Writes `len` bytes that do not compress to `path`, 1 MiB at a time.
fn write_random(path: &Path, len: u64, seed: u64) {
    let mut file = std::io::BufWriter::new(std::fs::File::create(path).expect("create"));
    let mut stream = Incompressible::new(seed);
    let mut chunk = vec![0u8; MIB as usize];
    let mut left = len;
    while left > 0 {
        let n = left.min(MIB) as usize;
        stream.fill(&mut chunk[..n]);
        file.write_all(&chunk[..n]).expect("write");
        left -= n as u64;
    }
    file.flush().expect("flush");
}

/// The size of the pack `git pack-objects` makes of what `tip` adds over `base` (streamed to
/// a file, not held here).
fn wire_size(bare: &Path, tip: &str, base: &str) -> u64 {
    let out = bare.with_file_name("wire.pack");
    let mut child = git_command()
        .arg("-C")
        .arg(bare)
        .args(["pack-objects", "--stdout", "--revs", "-q"])
        .stdin(std::process::Stdio::piped())
        .stdout(std::fs::File::create(&out).expect("create"))
        .spawn()
        .expect("spawn git pack-objects");
    let mut stdin = child.stdin.take().expect("stdin");
    stdin
        .write_all(format!("{tip}\n^{base}\n").as_bytes())
        .expect("write revs");
    drop(stdin);
    assert!(child.wait().expect("wait").success(), "git pack-objects");
    let len = std::fs::metadata(&out).expect("stat").len();
    std::fs::remove_file(&out).expect("remove");
    len
}

fn write_zeros(path: &Path, len: u64) {
    let file = std::fs::File::create(path).expect("create");
    // A sparse file reads as zeros; git reads it through like any other.
    file.set_len(len).expect("set_len");
}

/// This process's own memory figure `key` (`VmHWM`, `VmRSS`) in KiB.
fn vm_kib(key: &str) -> u64 {
    let status = std::fs::read_to_string("/proc/self/status").expect("read /proc/self/status");
    status
        .lines()
        .find_map(|l| l.strip_prefix(key)?.strip_prefix(':'))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .expect("a VmHWM line")
}

/// What one `shoal-agent sync` cost.
struct Cost {
    /// `ru_maxrss`, KiB: anonymous memory and mapped files (the pack gix maps to index it).
    peak_kib: u64,
    /// The largest `RssAnon` seen in `/proc/PID/status`, sampled every millisecond (a lower
    /// bound of the anonymous peak).
    anon_kib: u64,
    wall: Duration,
    stderr: String,
}

/// Polls `/proc/PID/status` until `done`, returning the largest `RssAnon` seen (KiB).
fn sample_anon(pid: libc::pid_t, done: &std::sync::atomic::AtomicBool) -> u64 {
    let path = format!("/proc/{pid}/status");
    let mut peak = 0;
    while !done.load(std::sync::atomic::Ordering::Relaxed) {
        if let Ok(status) = std::fs::read_to_string(&path) {
            let anon = status
                .lines()
                .find_map(|l| l.strip_prefix("RssAnon:"))
                .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
                .unwrap_or(0);
            peak = peak.max(anon);
        }
        std::thread::sleep(Duration::from_millis(1));
    }
    peak
}

/// Runs one `shoal-agent sync` and measures it.
// The child is reaped by `wait4` (to get its own rusage), which clippy cannot see.
#[allow(clippy::zombie_processes)]
fn sync(device: &Device) -> Cost {
    let stderr_path = device.state_dir().with_file_name("sync.stderr");
    let stderr = std::fs::File::create(&stderr_path).expect("create the stderr file");
    let agent = agent_bin();
    let started = Instant::now();
    let child = Command::new(agent)
        .arg("--config")
        .arg(device.config_path())
        .arg("sync")
        .env_remove("GIT_DIR")
        .env("SHOAL_LOG", "warn")
        .stdout(std::process::Stdio::null())
        .stderr(stderr)
        .spawn()
        .expect("spawn the agent");
    let pid = child.id() as libc::pid_t;
    let done = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let sampler = {
        let done = std::sync::Arc::clone(&done);
        std::thread::spawn(move || sample_anon(pid, &done))
    };
    let mut status = 0;
    // SAFETY: rusage is plain data, zero-initialised is valid; wait4 fills it for our own child.
    let mut usage: libc::rusage = unsafe { std::mem::zeroed() };
    let waited = unsafe { libc::wait4(pid, &mut status, 0, &mut usage) };
    let wall = started.elapsed();
    assert_eq!(waited, pid, "wait4 failed");
    done.store(true, std::sync::atomic::Ordering::Relaxed);
    let anon_kib = sampler.join().expect("the sampler thread");
    Cost {
        peak_kib: usage.ru_maxrss as u64,
        anon_kib,
        wall,
        stderr: std::fs::read_to_string(&stderr_path).unwrap_or_default(),
    }
}

fn verdict(device: &Device, stderr: &str) -> String {
    let run = device.agent(&["status", "--json"]);
    let status: serde_json::Value = serde_json::from_str(&run.stdout).expect("status JSON");
    let last = &status["last_result"];
    let message = last["message"].as_str().unwrap_or_default();
    let why = if message.contains("max_object =") {
        ": max_object"
    } else if message.contains("max_fetch =") {
        ": max_fetch"
    } else if message.contains("not signed") {
        ": unsigned (verify)"
    } else if last["status"] == "converged" {
        ""
    } else {
        ": other"
    };
    if last["status"] != "converged" && why == ": other" {
        eprintln!("unexpected result: {last}\n{stderr}");
    }
    format!("{}{why}", last["status"].as_str().unwrap_or("?"))
}

/// Bytes read before the stop, from the agent's warning (`received=N`).
fn read_before_stop(stderr: &str) -> Option<u64> {
    let start = stderr.find("received=")? + "received=".len();
    stderr[start..]
        .chars()
        .take_while(char::is_ascii_digit)
        .collect::<String>()
        .parse()
        .ok()
}

fn set_bounds(device: &Device, bounds: &Bounds) {
    let path = device.config_path();
    let config = std::fs::read_to_string(&path).expect("read agent.toml");
    let kept: Vec<&str> = config
        .lines()
        .filter(|l| !l.starts_with("max_object") && !l.starts_with("max_fetch"))
        .collect();
    let text = kept
        .join("\n")
        .replacen("[source]\n", &format!("[source]\n{}\n", bounds.lines), 1);
    std::fs::write(&path, text + "\n").expect("write agent.toml");
}

fn mib(bytes: u64) -> String {
    format!("{:.1} MiB", bytes as f64 / MIB as f64)
}

fn main() {
    let quick = std::env::args().any(|a| a == "--quick");
    let dir = tempfile::tempdir().expect("tempdir");
    let root = dir.path();
    let operator = SigningKey::generate(root.join("keys"), "operator");
    let signers = root.join("allowed_signers");
    write_allowed_signers(&signers, &[("operator@example", &operator)]);
    let (repo, good) = ConfigRepo::init_motd(root.join("work"), &operator, "one");
    let bare = root.join("srv/config.git");
    repo.publish_to(&bare);
    let daemon = GitDaemon::start(root.join("srv"));
    let url = daemon.url("config.git");

    eprintln!("making the pushes (random blobs stored without compression, zeros deflated)…");
    let mut pushes: Vec<Push> = Vec::new();
    let mut commit = |what: &'static str, files: &dyn Fn(&Path), signed: bool| {
        repo.reset_hard(&good);
        files(repo.path());
        let id = if signed {
            repo.commit_signed(&operator, what)
        } else {
            repo.commit_unsigned(what)
        };
        repo.git(&["branch", "-f", &format!("push-{}", pushes.len()), &id]);
        pushes.push(Push {
            what,
            commit: id,
            wire: 0,
        });
    };
    repo.git(&["config", "core.compression", "0"]);
    commit(
        "64 MiB random blob",
        &|dir| write_random(&dir.join("blob.bin"), 64 * MIB, 1),
        false,
    );
    commit(
        "256 MiB random blob",
        &|dir| write_random(&dir.join("blob.bin"), 256 * MIB, 2),
        false,
    );
    commit(
        "10 random blobs of 7 MiB",
        &|dir| {
            for i in 0..10 {
                write_random(&dir.join(format!("blob{i}.bin")), 7 * MIB, 10 + i);
            }
        },
        false,
    );
    commit(
        "30,000 random files of 2 KiB",
        &|dir| {
            for d in 0..30 {
                let sub = dir.join(format!("d{d:02}"));
                std::fs::create_dir_all(&sub).expect("mkdir");
                for f in 0..1000 {
                    write_random(&sub.join(format!("f{f:04}")), 2048, 100_000 + d * 1000 + f);
                }
            }
        },
        false,
    );
    commit(
        "signed 7 MiB random file",
        &|dir| write_random(&dir.join("firmware.bin"), 7 * MIB, 3),
        true,
    );
    repo.publish_to(&bare);
    repo.git(&["config", "--unset", "core.compression"]);
    commit(
        "256 MiB of zeros",
        &|dir| write_zeros(&dir.join("zeros"), 256 * MIB),
        false,
    );
    // Eight versions of a file just under max_object, each a small change of the one before,
    // one commit each: git sends the first whole and the others as deltas, and indexing them
    // holds a base and a result at once.
    repo.reset_hard(&good);
    let chain = repo.path().join("firmware.bin");
    write_random(&chain, 8 * MIB - 4096, 4);
    repo.commit_unsigned("delta chain v0");
    for version in 1..8u64 {
        // In place: this process must stay small (see the top of the file).
        let at = (version * 997_331) % (8 * MIB - 4096 - 100);
        let mut file = std::fs::OpenOptions::new()
            .write(true)
            .open(&chain)
            .expect("open");
        std::io::Seek::seek(&mut file, std::io::SeekFrom::Start(at)).expect("seek");
        file.write_all(&[version as u8; 100]).expect("write");
        repo.commit_unsigned("delta chain");
    }
    let id = repo.head();
    repo.git(&["branch", "-f", "push-delta-chain", &id]);
    pushes.push(Push {
        what: "8 versions of an 8 MiB random file, as deltas",
        commit: id,
        wire: 0,
    });
    repo.reset_hard(&good);
    repo.publish_to(&bare);
    for push in &mut pushes {
        push.wire = wire_size(&bare, &push.commit, &good);
    }
    let serve = |commit: &str| {
        run(git_command()
            .arg("-C")
            .arg(&bare)
            .args(["update-ref", "refs/heads/main", commit]));
    };

    // The legitimate reference: a first sync of the operator's repo.
    let device = Device::new(root.join("device"), &url, &signers, "range", "");
    let hwm_before = vm_kib("VmHWM");
    let mirror = device.state_dir().join("mirror.git");
    let first = sync(&device);
    let mut rows = vec![Row {
        push: "signed first sync (motd repo)".into(),
        wire: 0,
        bounds: DEFAULTS.name,
        verdict: verdict(&device, &first.stderr),
        read: None,
        peak_kib: first.peak_kib,
        anon_kib: first.anon_kib,
        mirror_before: 0,
        mirror_after: disk_usage(&mirror),
        wall: first.wall,
    }];

    let mut plan: Vec<(&Bounds, usize)> = Vec::new();
    let attacks = [0usize, 1, 5, 2, 3, 6];
    for &i in &attacks {
        plan.push((&DEFAULTS, i));
    }
    for &i in &[0usize, 1, 5] {
        plan.push((&FETCH_CAP_ONLY, i));
    }
    if !quick {
        for &i in &[0usize, 1, 5, 2] {
            plan.push((&NONE, i));
        }
    }
    // One push served and synced under `bounds`, as a row of the table.
    let measure = |name: String, push: &Push, bounds: &Bounds| {
        set_bounds(&device, bounds);
        serve(&push.commit);
        let before = disk_usage(&mirror);
        let cost = sync(&device);
        Row {
            push: name,
            wire: push.wire,
            bounds: bounds.name,
            verdict: verdict(&device, &cost.stderr),
            read: read_before_stop(&cost.stderr),
            peak_kib: cost.peak_kib,
            anon_kib: cost.anon_kib,
            mirror_before: before,
            mirror_after: disk_usage(&mirror),
            wall: cost.wall,
        }
    };
    for (bounds, i) in plan {
        let push = &pushes[i];
        eprintln!("{} under {}…", push.what, bounds.name);
        rows.push(measure(format!("unsigned {}", push.what), push, bounds));
    }
    // Last, as it changes the device: a legitimate file just under max_object.
    let signed = &pushes[4];
    rows.push(measure(signed.what.into(), signed, &DEFAULTS));
    let hwm_after = vm_kib("VmHWM");
    drop(daemon);

    println!("\n## Fetch before the signature check (git daemon, release agent, one run)\n");
    println!("| push | pack on the wire | bounds | verdict | read before the stop | peak RSS | of it anonymous (sampled) | mirror before → after | wall |");
    println!("| --- | ---: | --- | --- | ---: | ---: | ---: | --- | ---: |");
    for r in &rows {
        println!(
            "| {} | {} | {} | {} | {} | {} | {} | {} → {} | {:.2} s |",
            r.push,
            if r.wire == 0 {
                "—".to_owned()
            } else {
                mib(r.wire)
            },
            r.bounds,
            r.verdict,
            r.read.map_or("whole pack".to_owned(), mib),
            mib(r.peak_kib * 1024),
            mib(r.anon_kib * 1024),
            mib(r.mirror_before),
            mib(r.mirror_after),
            r.wall.as_secs_f64()
        );
    }
    println!(
        "\n(This process's high-water mark when it spawned the agents: {} at the first, {} at \
         the last; a child's ru_maxrss cannot be below it.)",
        mib(hwm_before * 1024),
        mib(hwm_after * 1024)
    );
}
