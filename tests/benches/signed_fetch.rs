//! Benchmark (not a test): what a no-op sync costs the device and the network (following the
//! branch, following a signed release in environment mode, and from a private repository with a
//! deploy token in `auth_file`), next to plain `git fetch` into a
//! mirror of the same repository over the same HTTPS server, and how long verifying a range of
//! 1,000 signed commits takes next to `git verify-commit`, and under a repository policy of 50
//! path rules next to the same range without one.
//!
//! Run: `cargo bench -p shoal-e2e --bench signed_fetch` (add `-- --quick` for fewer rounds;
//! `-- --policy` for the policy comparison alone).

use std::process::Command;
use std::time::Duration;

use shoal_e2e::{
    agent_bin, git_command, run, run_measured, write_allowed_signers, ConfigRepo, Cost, Device,
    HttpsGitServer, SigningKey,
};

const COMMITS: usize = 1_000;
/// The deploy token of the private server's row.
const TOKEN: &str = "bench-deploy-t0ken";

fn measure(cmd: &mut Command) -> Cost {
    let cost = run_measured(
        cmd.stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null()),
    );
    assert!(cost.succeeded, "{cmd:?} failed");
    cost
}

fn median(mut values: Vec<Duration>) -> Duration {
    values.sort();
    values[values.len() / 2]
}

struct Row {
    what: String,
    wall: Duration,
    cpu: Duration,
    requests: f64,
    bytes: f64,
}

/// Runs `make()` `rounds` times against `server`, returning medians and per-run traffic.
fn rounds(
    what: &str,
    rounds: usize,
    server: &HttpsGitServer,
    mut make: impl FnMut() -> Command,
) -> Row {
    let (mut walls, mut cpus) = (Vec::new(), Vec::new());
    server.reset_counters();
    for _ in 0..rounds {
        let cost = measure(&mut make());
        walls.push(cost.wall);
        cpus.push(cost.cpu);
    }
    Row {
        what: what.to_owned(),
        wall: median(walls),
        cpu: median(cpus),
        requests: server.request_count() as f64 / rounds as f64,
        bytes: server.bytes_sent() as f64 / rounds as f64,
    }
}

fn ms(d: Duration) -> String {
    format!("{:.1} ms", d.as_secs_f64() * 1e3)
}

/// Rules in the policy of the policy comparison.
const RULES: usize = 50;

/// The same 1,000 commits (each adds a file under one of `RULES` directories, round robin) in
/// two repositories, one whose first commit carries a `.shoal/policy.toml` with a rule per
/// directory and one without; `verify --since first --rev tip` on each.
fn policy_range(root: &std::path::Path, rounds: usize) {
    let key = SigningKey::generate(root.join("policy-keys"), "alice");
    let other = SigningKey::generate(root.join("policy-keys"), "bob");
    let signers = root.join("policy_signers");
    write_allowed_signers(&signers, &[("alice", &key), ("bob", &other)]);
    let mut policy = format!(
        "version = 1\n[principals]\nalice = \"{}\"\nbob = \"{}\"\n[root]\nprincipals = [\"alice\", \"bob\"]\nthreshold = 2\n",
        key.public_line(),
        other.public_line()
    );
    for r in 0..RULES {
        policy.push_str(&format!(
            "[[rule]]\nname = \"rule {r}\"\npaths = [\"rules/r{r:02}/**\", \"extra/r{r:02}/*.conf\"]\nprincipals = [\"bob\", \"alice\"]\nthreshold = 1\n"
        ));
    }
    let mut measured = Vec::new();
    for (what, with_policy) in [
        ("without a policy", false),
        ("under a 50-rule policy", true),
    ] {
        eprintln!("making {COMMITS} signed commits ({what})…");
        let repo = ConfigRepo::init(root.join(format!("policy-work-{with_policy}")));
        repo.write("shoal.toml", "version = 1\n");
        if with_policy {
            repo.write(".shoal/policy.toml", &policy);
        }
        let first = repo.commit_signed(&key, "commit 0");
        for i in 1..COMMITS {
            // The last rules match last: the worst case of first-match order for most commits.
            let r = RULES - 1 - (i % RULES);
            repo.write(format!("rules/r{r:02}/f{i:04}.conf"), format!("{i}\n"));
            repo.commit_signed(&key, &format!("commit {i}"));
        }
        let tip = repo.head();
        let walls: Vec<_> = (0..rounds)
            .map(|_| {
                let mut c = Command::new(agent_bin());
                c.arg("verify")
                    .arg(repo.path())
                    .args(["--rev", &tip, "--since", &first, "--allowed-signers"])
                    .arg(&signers);
                measure(&mut c).wall
            })
            .collect();
        measured.push((what, median(walls)));
    }
    println!(
        "\n## Verifying a range of {} commits, with and without a repository policy (median of {rounds})\n",
        COMMITS - 1
    );
    println!("| what | wall | per commit |");
    println!("| --- | --- | --- |");
    for (what, wall) in &measured {
        println!(
            "| `shoal-agent verify --since` {what} | {} | {:.3} ms |",
            ms(*wall),
            wall.as_secs_f64() * 1e3 / (COMMITS - 1) as f64
        );
    }
    println!(
        "\npolicy / no policy: {:.2}× (budget: 2×)",
        measured[1].1.as_secs_f64() / measured[0].1.as_secs_f64()
    );
}

fn main() {
    let quick = std::env::args().any(|a| a == "--quick");
    if std::env::args().any(|a| a == "--policy") {
        let dir = tempfile::tempdir().expect("tempdir");
        policy_range(dir.path(), if quick { 3 } else { 7 });
        return;
    }
    let n = if quick { 5 } else { 25 };
    let dir = tempfile::tempdir().expect("tempdir");
    let root = dir.path();
    let key = SigningKey::generate(root.join("keys"), "operator");
    let signers = root.join("allowed_signers");
    write_allowed_signers(&signers, &[("operator@example", &key)]);

    eprintln!("making a repository of {COMMITS} signed commits over 100 files (git commit -S)…");
    let repo = ConfigRepo::init(root.join("work"));
    // A manifest declaring nothing: the syncs measured are no-ops, but the first one renders.
    repo.write("shoal.toml", "version = 1\n");
    for i in 0..100 {
        repo.write(format!("files/f{i:03}"), format!("file {i}\n"));
    }
    let first = repo.commit_signed(&key, "commit 0");
    for i in 1..COMMITS {
        repo.write(
            format!("files/f{:03}", i % 100),
            format!("file {} rev {i}\n", i % 100),
        );
        repo.commit_signed(&key, &format!("commit {i}"));
    }
    let tip = repo.head();
    let bare = root.join("srv/config.git");
    repo.publish_to(&bare);
    let server = HttpsGitServer::start(root.join("srv"));
    let url = server.url("config.git");
    let ca = server.ca_pem_path().to_owned();

    // The agent, synced once so that further syncs are no-ops.
    let device = Device::new(
        root.join("device"),
        &url,
        &signers,
        "range",
        &format!("ca_file = \"{}\"", ca.display()),
    );
    device.sync().expect(0, "first sync");
    let agent = agent_bin();
    let noop_agent = rounds("shoal-agent sync (no-op)", n, &server, || {
        let mut c = Command::new(&agent);
        c.arg("--config").arg(device.config_path()).arg("sync");
        c
    });

    // Environment mode: the same tip released as production/1 (a signed tag at the release
    // ref); each no-op sync also checks the tag's signature and expiry.
    repo.tag_signed(
        &key,
        "production/1",
        &tip,
        "Release production/1\n\nExpires: 2099-01-01T00:00:00Z",
        None,
    );
    repo.publish_ref(
        &bare,
        "refs/tags/production/1",
        "refs/shoal/releases/production",
    );
    let env_device = Device::new(
        root.join("device-env"),
        &url,
        &signers,
        "range",
        &format!("ca_file = \"{}\"", ca.display()),
    );
    env_device.follow_environment("production");
    env_device.sync().expect(0, "first sync");
    let noop_env = rounds(
        "shoal-agent sync (no-op, environment mode)",
        n,
        &server,
        || {
            let mut c = Command::new(&agent);
            c.arg("--config").arg(env_device.config_path()).arg("sync");
            c
        },
    );

    // A private repository: the same one behind a second server that answers 401 without a
    // deploy token, and a device with the token in `[source] auth_file`. The token is sent with
    // the first request, so nothing new is still one request.
    let private = HttpsGitServer::start(root.join("srv"));
    private.require_bearer(TOKEN);
    let auth = root.join("git-auth.toml");
    std::fs::write(&auth, format!("token = \"{TOKEN}\"\n")).expect("write the auth file");
    std::fs::set_permissions(&auth, std::os::unix::fs::PermissionsExt::from_mode(0o600))
        .expect("chmod the auth file");
    let auth_device = Device::new(
        root.join("device-auth"),
        &private.url("config.git"),
        &signers,
        "range",
        &format!(
            "ca_file = \"{}\"\nauth_file = \"{}\"",
            private.ca_pem_path().display(),
            auth.display()
        ),
    );
    auth_device.sync().expect(0, "first sync");
    let noop_auth = rounds(
        "shoal-agent sync (no-op, private: token in auth_file)",
        n,
        &private,
        || {
            let mut c = Command::new(&agent);
            c.arg("--config").arg(auth_device.config_path()).arg("sync");
            c
        },
    );

    // Plain git: a bare mirror fetched the same way.
    let mirror = root.join("git-mirror.git");
    run(git_command()
        .env("GIT_SSL_CAINFO", &ca)
        .args(["clone", "-q", "--mirror", &url])
        .arg(&mirror));
    let noop_git = rounds("git fetch (no-op)", n, &server, || {
        let mut c = git_command();
        c.env("GIT_SSL_CAINFO", &ca)
            .arg("-C")
            .arg(&mirror)
            .args(["fetch", "-q", "origin"]);
        c
    });

    // Verifying the whole range: ours in one process, git's reference verifier on the same commits.
    let verify_rounds = if quick { 1 } else { 3 };
    let ours: Vec<_> = (0..verify_rounds)
        .map(|_| {
            let mut c = Command::new(&agent);
            c.arg("verify")
                .arg(repo.path())
                .args(["--rev", &tip, "--since", &first, "--allowed-signers"])
                .arg(&signers);
            measure(&mut c)
        })
        .collect();
    let all: Vec<String> = repo
        .git(&["rev-list", &format!("{first}..{tip}")])
        .lines()
        .map(str::to_owned)
        .collect();
    let theirs: Vec<_> = (0..verify_rounds)
        .map(|_| {
            let mut c = git_command();
            c.arg("-C")
                .arg(repo.path())
                .arg("-c")
                .arg(format!("gpg.ssh.allowedSignersFile={}", signers.display()))
                .arg("verify-commit")
                .args(&all);
            measure(&mut c)
        })
        .collect();
    let ours_wall = median(ours.iter().map(|c| c.wall).collect());
    let theirs_wall = median(theirs.iter().map(|c| c.wall).collect());

    println!(
        "\n## No-op sync over HTTPS (median of {n} runs, same server, same machine, same run)\n"
    );
    println!("| what | wall | CPU (user+sys) | HTTP requests | response bytes |");
    println!("| --- | --- | --- | --- | --- |");
    for row in [&noop_agent, &noop_env, &noop_auth, &noop_git] {
        println!(
            "| {} | {} | {} | {:.0} | {:.0} |",
            row.what,
            ms(row.wall),
            ms(row.cpu),
            row.requests,
            row.bytes
        );
    }
    println!(
        "\nratio shoal/git: wall {:.2}×, CPU {:.2}×, bytes {:.2}×",
        noop_agent.wall.as_secs_f64() / noop_git.wall.as_secs_f64(),
        noop_agent.cpu.as_secs_f64() / noop_git.cpu.as_secs_f64(),
        noop_agent.bytes / noop_git.bytes
    );
    println!(
        "\n## Verifying a range of {} signed commits (median of {verify_rounds})\n",
        all.len()
    );
    println!("| what | wall | per commit |");
    println!("| --- | --- | --- |");
    for (what, wall) in [
        ("shoal-agent verify --since (ed25519 in-process)", ours_wall),
        ("git verify-commit (ssh-keygen per commit)", theirs_wall),
    ] {
        println!(
            "| {what} | {} | {:.3} ms |",
            ms(wall),
            wall.as_secs_f64() * 1e3 / all.len() as f64
        );
    }
    println!(
        "\nshoal-agent is {:.1}× faster than git verify-commit",
        theirs_wall.as_secs_f64() / ours_wall.as_secs_f64()
    );
    policy_range(root, verify_rounds);
}
