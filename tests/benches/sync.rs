//! Benchmark (not a test): a whole `shoal-agent sync` of 1,000 changed files — fetch, verify,
//! render, plan, apply, generation recorded — next to the write+fsync+rename floor for the same
//! 1,000 files, side by side in one run, with the agent's own per-step timings.
//!
//! - **Shoal**: the real binary (`cargo build --release -p shoal-agent`, built by the harness)
//!   against a signed repository served by `git daemon` (git://), `verify = "range"`. A
//!   device at generation 1 (its first sync, of a commit declaring 1,000 files of 4 KiB over
//!   10 directories) is made once; every round copies it, `syncfs`es, then times one `sync`
//!   to the next signed commit, where every file's content differs. Steps from
//!   `state/last-result.json` (`fetch_ms`, `verify_ms`, `render_ms` = render + observe +
//!   plan, `apply_ms`); "rest" is the wall time none of them covers (process start, recover,
//!   the mirror's accept, recording the generation, journal, watermark, pruning).
//! - **Floor**: the loop of `agent/benches/support/floor.rs` (the same code the apply bench
//!   uses) writing the same 1,000 contents over a plain copy of generation 1.
//!
//! Each round runs both, in an order that alternates, so machine noise hits both; the ratio is
//! the medians' and, per round, each round's own.
//!
//! Run: `cargo bench -p shoal-e2e --bench sync` (add `-- --quick` for 3 rounds). The sandboxes
//! go under `$TMPDIR` (default `/tmp`).

#[path = "../../agent/benches/support/floor.rs"]
mod floor;

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use floor::{cpu_time, median, syncfs};
use shoal_e2e::{agent_bin, copy_tree, require_tools, run_measured, Sandbox};

const FILES: usize = 1_000;
const FILE_SIZE: usize = 4096;
const DIRS: usize = 10;
const MODE: u32 = 0o644;

fn rel_path(i: usize) -> String {
    format!("files/d{:02}/f{i:04}.conf", i % DIRS)
}

fn device_path(i: usize) -> String {
    format!("/srv/bench/{}", rel_path(i))
}

/// 4 KiB of config-like text (`key_NNN = <hex>` lines), different for every file and
/// generation (xorshift, so nothing is shared between files).
fn content(generation: u64, i: usize) -> Vec<u8> {
    let mut x = ((generation << 32) | i as u64).wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
    let mut out = String::with_capacity(FILE_SIZE + 64);
    let mut n = 0;
    while out.len() < FILE_SIZE {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        let y = x.wrapping_mul(0x2545_F491_4F6C_DD1D);
        out.push_str(&format!("key_{n:03} = {x:016x}{y:016x}\n"));
        n += 1;
    }
    let mut out = out.into_bytes();
    out.truncate(FILE_SIZE - 1);
    out.push(b'\n');
    out
}

/// `shoal.toml` declaring the 1,000 files with our own numeric owner (no root needed).
fn manifest() -> String {
    // SAFETY: geteuid and getegid cannot fail and touch no memory of ours.
    let (uid, gid) = unsafe { (libc::geteuid(), libc::getegid()) };
    let mut out = String::from("version = 1\n\n[[profile]]\nname = \"bench\"\nmatch = \"*\"\n");
    for i in 0..FILES {
        out.push_str(&format!(
            "\n  [[profile.file]]\n  path = \"{}\"\n  source = \"{}\"\n  mode = \"0644\"\n  owner = \"{uid}\"\n  group = \"{gid}\"\n",
            device_path(i),
            rel_path(i)
        ));
    }
    out
}

/// Writes generation `generation`'s files into the repository's working tree.
fn write_generation(sandbox: &Sandbox, generation: u64) {
    for i in 0..FILES {
        sandbox.repo.write(rel_path(i), content(generation, i));
    }
}

struct SyncRun {
    wall: Duration,
    cpu: Duration,
    /// fetch, verify, render(+observe+plan), apply: ms, from last-result.json.
    steps: [u64; 4],
}

/// One `shoal-agent sync` of the device in `dir`: wall and CPU from `wait4`.
fn sync(agent: &Path, dir: &Path) -> SyncRun {
    let log = dir.join("sync.log");
    let cost = run_measured(
        Command::new(agent)
            .arg("--config")
            .arg(dir.join("agent.toml"))
            .arg("sync")
            .env("SHOAL_LOG", "warn")
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(&log).expect("create the sync's log")),
    );
    assert!(
        cost.succeeded,
        "shoal-agent sync failed:\n{}",
        std::fs::read_to_string(&log).unwrap_or_default()
    );
    let result =
        std::fs::read_to_string(dir.join("state/last-result.json")).expect("read last-result.json");
    let result: serde_json::Value = serde_json::from_str(&result).expect("last-result.json");
    assert_eq!(result["status"], "converged", "{result}");
    let step = |name: &str| result["timings"][name].as_u64().unwrap_or(0);
    SyncRun {
        wall: cost.wall,
        cpu: cost.cpu,
        steps: [
            step("fetch_ms"),
            step("verify_ms"),
            step("render_ms"),
            step("apply_ms"),
        ],
    }
}

/// Every file under `root` is generation 2's.
fn check(root: &Path) {
    for i in 0..FILES {
        let real = root.join(device_path(i).trim_start_matches('/'));
        let found = std::fs::read(&real).unwrap_or_else(|e| panic!("{}: {e}", real.display()));
        assert!(
            found == content(2, i),
            "{} is not generation 2",
            real.display()
        );
    }
}

fn floor_files(root: &Path, contents: &[Vec<u8>]) -> Vec<(PathBuf, Vec<u8>)> {
    (0..FILES)
        .map(|i| {
            (
                root.join(device_path(i).trim_start_matches('/')),
                contents[i].clone(),
            )
        })
        .collect()
}

fn ms(d: Duration) -> String {
    format!("{:.0} ms", d.as_secs_f64() * 1e3)
}

fn main() {
    if !require_tools(&["git", "ssh-keygen"]) {
        return;
    }
    let quick = std::env::args().any(|a| a == "--quick");
    let rounds = if quick { 3 } else { 7 };
    let agent = agent_bin();

    eprintln!("making a signed repository of {FILES} files and a device at its first commit…");
    let sandbox = Sandbox::over_git_daemon().expect("git and ssh-keygen");
    sandbox.repo.write("shoal.toml", manifest());
    write_generation(&sandbox, 1);
    sandbox.repo.commit_signed(&sandbox.key, "generation 1");
    sandbox.publish();
    sandbox.device.sync().assert_ok();
    let template = sandbox.dir.path().join("device");
    write_generation(&sandbox, 2);
    sandbox
        .repo
        .commit_signed(&sandbox.key, "generation 2: every file changed");
    sandbox.publish();

    let gen1: Vec<Vec<u8>> = (0..FILES).map(|i| content(1, i)).collect();
    let gen2: Vec<Vec<u8>> = (0..FILES).map(|i| content(2, i)).collect();
    let base = std::env::temp_dir();
    let (mut shoal, mut floors, mut ratios) = (Vec::new(), Vec::new(), Vec::new());
    let mut floor_cpus = Vec::new();
    for round in 0..rounds {
        eprintln!("round {}/{rounds}", round + 1);
        let (mut this_shoal, mut this_floor) = (Duration::ZERO, Duration::ZERO);
        for k in 0..2 {
            let sandbox_dir = tempfile::Builder::new()
                .prefix("shoal-sync-bench.")
                .tempdir_in(&base)
                .expect("create a sandbox");
            if (round + k) % 2 == 0 {
                let dir = sandbox_dir.path().join("device");
                copy_tree(&template, &dir);
                syncfs(sandbox_dir.path()).expect("syncfs");
                let run = sync(&agent, &dir);
                check(&dir.join("root"));
                this_shoal = run.wall;
                shoal.push(run);
            } else {
                let root = sandbox_dir.path().join("root");
                for (real, content) in floor_files(&root, &gen1) {
                    std::fs::create_dir_all(real.parent().expect("a parent"))
                        .expect("create a directory of the floor's tree");
                    std::fs::write(&real, content).expect("write generation 1");
                }
                syncfs(sandbox_dir.path()).expect("syncfs");
                let files = floor_files(&root, &gen2);
                let cpu = cpu_time();
                let started = Instant::now();
                floor::floor(
                    files.iter().map(|(real, c)| (real.clone(), c.as_slice())),
                    MODE,
                )
                .expect("floor loop");
                this_floor = started.elapsed();
                floors.push(this_floor);
                floor_cpus.push(cpu_time() - cpu);
                check(&root);
            }
        }
        ratios.push(this_shoal.as_secs_f64() / this_floor.as_secs_f64());
    }
    ratios.sort_by(f64::total_cmp);

    let wall = median(shoal.iter().map(|r| r.wall).collect());
    let cpu = median(shoal.iter().map(|r| r.cpu).collect());
    let floor = median(floors);
    let floor_cpu = median(floor_cpus);
    let step = |k: usize| {
        median(
            shoal
                .iter()
                .map(|r| Duration::from_millis(r.steps[k]))
                .collect(),
        )
    };
    let rest = median(
        shoal
            .iter()
            .map(|r| {
                r.wall
                    .saturating_sub(Duration::from_millis(r.steps.iter().sum::<u64>()))
            })
            .collect(),
    );
    println!("## Whole sync of {FILES} changed files vs the write+fsync+rename floor\n");
    println!(
        "Command: `cargo bench -p shoal-e2e --bench sync{}`; {FILES} files of {FILE_SIZE} bytes \
         over {DIRS} directories, every one changed; git daemon (git://), verify = \"range\"; \
         medians over {rounds} rounds.\n",
        if quick { " -- --quick" } else { "" }
    );
    println!("| rounds | shoal-agent sync | floor | sync/floor | per round: median (min–max) | sync CPU | floor CPU |");
    println!("| ---: | ---: | ---: | ---: | ---: | ---: | ---: |");
    println!(
        "| {rounds} | {} | {} | **{:.2}×** | {:.2}× ({:.2}–{:.2}×) | {} | {} |\n",
        ms(wall),
        ms(floor),
        wall.as_secs_f64() / floor.as_secs_f64(),
        ratios[ratios.len() / 2],
        ratios[0],
        ratios[ratios.len() - 1],
        ms(cpu),
        ms(floor_cpu),
    );
    println!("Where the sync's time goes (medians of each column; `last-result.json` timings):\n");
    println!("| fetch | verify | render + observe + plan | apply | rest | apply/floor |");
    println!("| ---: | ---: | ---: | ---: | ---: | ---: |");
    println!(
        "| {} | {} | {} | {} | {} | {:.2}× |",
        ms(step(0)),
        ms(step(1)),
        ms(step(2)),
        ms(step(3)),
        ms(rest),
        step(3).as_secs_f64() / floor.as_secs_f64(),
    );
}
