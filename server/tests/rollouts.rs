//! The collector's side of rollouts (issue 15), on both stores: its own key (made once, private,
//! printed, served), halts and resumes by operators (token, idempotence, bad input), the signed
//! halt list in every answer (opened with the collector key, serial growing), the automatic halt
//! at its threshold, the rollout views, metrics and the page's SVG; on PostgreSQL, replicas
//! racing halts and one replica seeing another's halt within the poll bound.

#[macro_use]
mod common;

use std::os::unix::fs::PermissionsExt as _;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use axum::body::Bytes;
use common::*;
use hyper::Method;
use shoal_collector::collector_key::CollectorKey;
use shoal_collector::rollout::AutoHalt;
use shoal_collector::store::PgStore;
use shoal_collector::{Clock, Config};
use shoal_proto::{HaltList, SignedHalts, Status, Target};
use shoal_testkit::PgCluster;

const C1: &str = "c1c1c1c1c1c1c1c1c1c1c1c1c1c1c1c1c1c1c1c1";
const C2: &str = "c2c2c2c2c2c2c2c2c2c2c2c2c2c2c2c2c2c2c2c2";
const OLD: &str = "0000000000000000000000000000000000000abc";

/// A collector key in `dir` (made by the library, as `serve --data` does).
fn key_in(dir: &std::path::Path) -> CollectorKey {
    CollectorKey::load_or_generate(&dir.join("collector.key")).unwrap()
}

fn config(key: &CollectorKey, auto: Option<AutoHalt>) -> Config {
    Config {
        collector_key: Some(key.clone()),
        auto_halt: auto,
        ..config_with_tokens()
    }
}

/// A report about `commit` (its target) in `wave`, applied (`commit`) when converged.
fn about(dev: &mut Device, status: Status, target: &str, wave: Option<&str>) -> Vec<u8> {
    let applied = if status == Status::Converged {
        target
    } else {
        OLD
    };
    let mut r = dev.report(status, Some(applied));
    r.target = Some(Target {
        commit: target.to_owned(),
        wave: wave.map(str::to_owned),
    });
    dev.seal(&r)
}

/// Posts `body` (enrolling on first contact) and opens the answer's halt list with `key`.
async fn post(server: &TestServer, body: Vec<u8>, key: &CollectorKey) -> HaltList {
    let resp = server.client().post_report(body, Some(ENROLL_TOKEN)).await;
    assert_eq!(resp.status, 200, "{}", resp.text());
    open(&resp.json()["halts"], key)
}

/// Posts a report of `dev` about `target` (see [`about`]) and opens the answer's halt list.
async fn tell(
    server: &TestServer,
    key: &CollectorKey,
    dev: &mut Device,
    status: Status,
    target: &str,
    wave: Option<&str>,
) -> HaltList {
    post(server, about(dev, status, target, wave), key).await
}

fn open(halts: &serde_json::Value, key: &CollectorKey) -> HaltList {
    let signed: SignedHalts = serde_json::from_value(halts.clone()).unwrap();
    signed
        .open(&key.signing.verifying_key())
        .unwrap_or_else(|e| panic!("the answer's list does not open with the collector key: {e}"))
}

async fn admin_post(client: &Client, path: &str, body: &str) -> Resp {
    client
        .request(Method::POST, path, &[], Bytes::from(body.to_owned()))
        .await
}

/// A halt or resume answer's (changed, halted, serial).
fn change(answer: &serde_json::Value) -> (Option<bool>, Option<bool>, Option<u64>) {
    (
        answer["changed"].as_bool(),
        answer["halted"].as_bool(),
        answer["serial"].as_u64(),
    )
}

async fn halt_and_resume_need_the_admin_token_and_each_change_bumps_the_serial(backend: Backend) {
    let store = TestStore::fresh(backend);
    let key = key_in(store.path());
    let server = TestServer::start(&store, config(&key, None)).await;
    let mut gw = Device::new("gw-1", 1);

    // The first answer: an empty list, serial 0, signed by the collector key.
    let list = tell(&server, &key, &mut gw, Status::Pending, C1, Some("all")).await;
    assert_eq!((list.serial, list.halted.len()), (0, 0));

    // The public key needs no token.
    let info = Client::new(server.addr).get("/api/v1/collector").await;
    assert_eq!(info.status, 200, "{}", info.text());
    assert_eq!(info.json()["key"], key.key_id().as_str());

    let halt = format!("/api/v1/rollouts/{C1}/halt");
    let resume = format!("/api/v1/rollouts/{C1}/resume");
    let body = r#"{"reason": "wrong endpoint"}"#;
    // Without a token, with a read token: refused, nothing changes.
    admin_post(&Client::new(server.addr), &halt, body)
        .await
        .assert_rejected(401, "unauthorized", "missing admin token");
    admin_post(&server.client(), &halt, body)
        .await
        .assert_rejected(403, "forbidden", "not an admin token");
    assert_eq!(server.state.store.halts_serial().unwrap(), 0);

    // Bad input: each a 4xx with its reason, the list untouched.
    let admin = server.admin();
    admin_post(&admin, "/api/v1/rollouts/c1c1/halt", body)
        .await
        .assert_rejected(400, "bad_commit", "is not a commit id");
    admin_post(&admin, &halt, "{reason:").await.assert_rejected(
        400,
        "bad_request",
        "body is not {\"reason\"",
    );
    admin_post(&admin, &halt, "[]")
        .await
        .assert_rejected(400, "bad_request", "not a JSON object");
    admin_post(&admin, &halt, r#"{"why": "x"}"#)
        .await
        .assert_rejected(400, "bad_request", "unknown field");
    let long = format!(r#"{{"reason": "{}"}}"#, "x".repeat(201));
    admin_post(&admin, &halt, &long)
        .await
        .assert_rejected(400, "reason_too_long", "at most 200");
    admin_post(&admin, &format!("/api/v1/rollouts/{C1}/resume"), &long)
        .await
        .assert_rejected(400, "reason_too_long", "at most 200");
    assert_eq!(server.state.store.halts_serial().unwrap(), 0);
    let list = tell(&server, &key, &mut gw, Status::Pending, C1, Some("all")).await;
    assert_eq!((list.serial, list.halted.len()), (0, 0));

    // Halt: serial 1; again: unchanged, still 1.
    let done = admin_post(&admin, &halt, body).await;
    assert_eq!(done.status, 200, "{}", done.text());
    let j = done.json();
    assert_eq!(change(&j), (Some(true), Some(true), Some(1)));
    assert_eq!(j["reason"], "operator: wrong endpoint");
    let again = admin_post(&admin, &halt, "").await.json();
    assert_eq!(change(&again), (Some(false), Some(true), Some(1)));

    // The next answer carries it.
    let list = tell(&server, &key, &mut gw, Status::Halted, C1, Some("all")).await;
    assert_eq!(list.serial, 1);
    let h = list
        .halt_of(&shoal_proto::CommitId::parse(C1).unwrap())
        .unwrap();
    assert_eq!(h.reason, "operator: wrong endpoint");

    // Resume: serial 2; again: unchanged.
    let r = admin_post(&admin, &resume, "").await.json();
    assert_eq!(change(&r), (Some(true), Some(false), Some(2)));
    let r = admin_post(&admin, &resume, "").await.json();
    assert_eq!(change(&r), (Some(false), Some(false), Some(2)));
    let list = tell(&server, &key, &mut gw, Status::Pending, C1, Some("all")).await;
    assert_eq!((list.serial, list.halted.len()), (2, 0));
    server.stop().await;
}

async fn the_automatic_halt_triggers_at_the_threshold_with_the_minimum_and_not_below(
    backend: Backend,
) {
    let store = TestStore::fresh(backend);
    let key = key_in(store.path());
    let auto = AutoHalt {
        failed_ratio: 0.5,
        min_devices: 4,
    };
    let server = TestServer::start(&store, config(&key, Some(auto))).await;
    let mut devs: Vec<Device> = (0..8)
        .map(|i| Device::new(&format!("gw-{i}"), 100 + i))
        .collect();
    let mut idle = Device::new("idle", 99);
    // The hook runs on the writer after it answers a batch; the next answered report means the
    // check before it has run.
    let settle = |idle: &mut Device| idle.next(Status::Converged, None);

    // C1: 2 of 3 tried failed: over the share, under the minimum.
    tell(
        &server,
        &key,
        &mut devs[0],
        Status::Failed,
        C1,
        Some("canary"),
    )
    .await;
    tell(
        &server,
        &key,
        &mut devs[1],
        Status::RolledBack,
        C1,
        Some("canary"),
    )
    .await;
    tell(
        &server,
        &key,
        &mut devs[2],
        Status::Converged,
        C1,
        Some("canary"),
    )
    .await;
    tell(
        &server,
        &key,
        &mut devs[3],
        Status::Pending,
        C1,
        Some("all"),
    )
    .await;
    let list = post(&server, settle(&mut idle), &key).await;
    assert_eq!(list.serial, 0, "3 tried, under the minimum of 4: {list:?}");
    // C2: 1 of 4 failed: the minimum, under the share.
    for (i, status) in [
        Status::Failed,
        Status::Converged,
        Status::Converged,
        Status::Converged,
    ]
    .into_iter()
    .enumerate()
    {
        post(&server, about(&mut devs[4 + i], status, C2, None), &key).await;
    }
    let list = post(&server, settle(&mut idle), &key).await;
    assert_eq!(list.serial, 0, "C2: 1 of 4 is under 0.5: {list:?}");

    // C1's fourth device tries it and succeeds: 2 of 4 = the threshold, with the minimum.
    tell(
        &server,
        &key,
        &mut devs[3],
        Status::Converged,
        C1,
        Some("all"),
    )
    .await;
    let list = post(&server, settle(&mut idle), &key).await;
    assert_eq!(list.serial, 1, "{list:?}");
    let c1 = shoal_proto::CommitId::parse(C1).unwrap();
    let reason = &list.halt_of(&c1).unwrap().reason;
    assert!(
        reason.starts_with("automatic: 2 of 4 devices that tried it failed or rolled back"),
        "{reason}"
    );
    assert!(!list.halts(&shoal_proto::CommitId::parse(C2).unwrap()));

    // The operator resumes: it sticks while no new failure comes.
    let resumed = admin_post(
        &server.admin(),
        &format!("/api/v1/rollouts/{C1}/resume"),
        "",
    )
    .await;
    assert_eq!(resumed.json()["serial"], 2, "{}", resumed.text());
    tell(
        &server,
        &key,
        &mut devs[2],
        Status::Converged,
        C1,
        Some("canary"),
    )
    .await;
    let list = post(&server, settle(&mut idle), &key).await;
    assert_eq!(
        (list.serial, list.halted.len()),
        (2, 0),
        "the resume sticks"
    );
    // A new failure after the resume halts it again.
    tell(
        &server,
        &key,
        &mut devs[2],
        Status::Failed,
        C1,
        Some("canary"),
    )
    .await;
    let list = post(&server, settle(&mut idle), &key).await;
    assert_eq!(list.serial, 3, "{list:?}");
    assert!(list
        .halt_of(&c1)
        .unwrap()
        .reason
        .starts_with("automatic: 3 of 4"));
    server.stop().await;
}

/// Parses `svg` with a real XML parser (python3's), failing with its message.
fn assert_well_formed(svg: &str) {
    let out = std::process::Command::new("python3")
        .args([
            "-c",
            "import sys, xml.dom.minidom; d = xml.dom.minidom.parseString(sys.stdin.read()); \
             print(d.documentElement.tagName, len(d.getElementsByTagName('polyline')), len([l for l in d.getElementsByTagName('line') if l.getAttribute('class') == 'halt']))",
        ])
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .and_then(|mut child| {
            use std::io::Write as _;
            child.stdin.take().unwrap().write_all(svg.as_bytes())?;
            child.wait_with_output()
        })
        .expect("python3 parses the SVG (apt-get install python3)");
    assert!(
        out.status.success(),
        "the SVG is not well-formed XML: {}\n{svg}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(
        String::from_utf8_lossy(&out.stdout).trim(),
        "svg 1 1",
        "{svg}"
    );
}

async fn the_rollout_views_show_devices_by_wave_and_status_and_adoption(backend: Backend) {
    let store = TestStore::fresh(backend);
    let key = key_in(store.path());
    let clock = Arc::new(AtomicU64::new(1_800_000_000));
    let server = TestServer::start(
        &store,
        Config {
            clock: Clock::Manual(clock.clone()),
            ..config(&key, None)
        },
    )
    .await;
    let mut devs: Vec<Device> = (0..6)
        .map(|i| Device::new(&format!("gw-{i}"), 200 + i))
        .collect();
    for (i, (status, wave)) in [
        (Status::Converged, "canary"),
        (Status::Failed, "canary"),
        (Status::Pending, "all"),
        (Status::Pending, "all"),
        (Status::Halted, "all"),
    ]
    .into_iter()
    .enumerate()
    {
        post(&server, about(&mut devs[i], status, C1, Some(wave)), &key).await;
    }
    // A device moving on from a target leaves its old count.
    tell(
        &server,
        &key,
        &mut devs[5],
        Status::Pending,
        C2,
        Some("all"),
    )
    .await;
    tell(
        &server,
        &key,
        &mut devs[5],
        Status::Converged,
        C1,
        Some("canary"),
    )
    .await;
    server.state.rollouts.sample_adoption().unwrap();
    clock.fetch_add(120, Ordering::Relaxed);
    let mut more = Device::new("late", 300);
    post(&server, about(&mut more, Status::Converged, C1, None), &key).await;
    server.state.rollouts.sample_adoption().unwrap();
    admin_post(
        &server.admin(),
        &format!("/api/v1/rollouts/{C1}/halt"),
        r#"{"reason":"look"}"#,
    )
    .await;

    let client = server.client();
    let all = client.get("/api/v1/rollouts").await;
    assert_eq!(all.status, 200, "{}", all.text());
    let all = all.json();
    let commits: Vec<&str> = all["rollouts"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["commit"].as_str().unwrap())
        .collect();
    assert_eq!(commits, [C1], "C2 has no device any more: {all}");
    let one = client.get(&format!("/api/v1/rollouts/{C1}")).await.json();
    assert_eq!(one["devices"], 7, "{one}");
    assert_eq!(
        (one["tried"].as_u64(), one["failures"].as_u64()),
        (Some(4), Some(1))
    );
    assert_eq!(one["halted"], true);
    assert_eq!(one["halt"]["reason"], "operator: look");
    let waves = one["waves"].as_array().unwrap();
    let by = |name: Option<&str>| {
        waves
            .iter()
            .find(|w| w["wave"].as_str() == name)
            .unwrap_or_else(|| panic!("no wave {name:?} in {one}"))["by_status"]
            .clone()
    };
    assert_eq!(
        by(Some("canary")),
        serde_json::json!({"converged": 2, "failed": 1})
    );
    assert_eq!(
        by(Some("all")),
        serde_json::json!({"pending": 2, "halted": 1})
    );
    assert_eq!(by(None), serde_json::json!({"converged": 1}));
    let adoption: Vec<(u64, u64)> = one["adoption"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| (s["at"].as_u64().unwrap(), s["devices"].as_u64().unwrap()))
        .collect();
    assert_eq!(
        adoption,
        [(1_800_000_000 / 60 * 60, 2), ((1_800_000_120) / 60 * 60, 3)],
        "devices on C1 (applied) at each sample"
    );

    // Bad input and unknown commits.
    client.get("/api/v1/rollouts/nothex").await.assert_rejected(
        400,
        "bad_commit",
        "is not a commit id",
    );
    client
        .get(&format!("/api/v1/rollouts/{OLD}"))
        .await
        .assert_rejected(404, "not_found", "no report is about it");
    Client::new(server.addr)
        .get("/api/v1/rollouts")
        .await
        .assert_rejected(401, "unauthorized", "bearer token");

    // Metrics.
    let metrics = client.get("/metrics").await.text();
    for line in [
        format!("shoal_rollout_devices{{commit=\"{C1}\",wave=\"canary\",status=\"failed\"}} 1"),
        format!("shoal_rollout_devices{{commit=\"{C1}\",wave=\"all\",status=\"pending\"}} 2"),
        format!("shoal_rollout_halted{{commit=\"{C1}\"}} 1"),
        "shoal_rollouts_halted 1".to_owned(),
        "shoal_halts_serial 1".to_owned(),
    ] {
        assert!(
            metrics.contains(&format!("{line}\n")),
            "{line} not in\n{metrics}"
        );
    }

    // The page: the section, the halt, and the chart as well-formed SVG.
    let page = client.get("/rollouts").await;
    assert_eq!(page.status, 200);
    let html = page.text();
    assert!(html.contains(&format!("<code>{C1}</code>")), "{html}");
    assert!(html.contains("operator: look"), "{html}");
    let start = html.find("<svg").expect("an SVG chart");
    let end = html[start..].find("</svg>").unwrap() + start + "</svg>".len();
    assert_well_formed(&html[start..end]);
    assert!(client.get("/").await.text().contains(r#"href="/rollouts""#));

    // The counters, the halt list and the samples are persisted: a restart shows the same.
    let before = server.state.store.rollouts().unwrap();
    let halts = server.state.store.halts().unwrap();
    assert_eq!(
        server
            .state
            .store
            .persisted_tally()
            .unwrap()
            .rollouts()
            .len(),
        5
    );
    drop(server.stop().await);
    let reopened = store.open();
    assert_eq!(reopened.rollouts().unwrap(), before);
    assert_eq!(reopened.halts().unwrap(), halts);
    assert_eq!(reopened.adoption(C1).unwrap().len(), 2);
}

both_stores!(
    halt_and_resume_need_the_admin_token_and_each_change_bumps_the_serial,
    the_automatic_halt_triggers_at_the_threshold_with_the_minimum_and_not_below,
    the_rollout_views_show_devices_by_wave_and_status_and_adoption,
);

#[test]
fn the_key_is_made_once_private_printed_and_served() {
    let tmp = tempfile::tempdir().unwrap();
    let data = tmp.path().join("data");
    let store = StoreFlags(vec!["--data".into(), data.to_str().unwrap().into()]);
    let log = tmp.path().join("c.log");
    let server = start_binary(&store, &[], &log);
    let path = data.join("collector.key");
    let mode = std::fs::metadata(&path).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode, 0o600);
    let served = server.get("/api/v1/collector")["key"]
        .as_str()
        .unwrap()
        .to_owned();
    assert!(served.starts_with("ed25519:"), "{served}");
    assert!(
        server.log().contains(&format!("collector key: {served}")),
        "{}",
        server.log()
    );
    server.terminate();

    // `key --data` prints the same; a restart loads it (not a new one).
    let out = std::process::Command::new(bin())
        .args(["key", "--data"])
        .arg(&data)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(String::from_utf8_lossy(&out.stdout).trim(), served);
    let server = start_binary(&store, &[], &log);
    assert_eq!(server.get("/api/v1/collector")["key"], served.as_str());
    server.terminate();

    // Readable by others: refused, naming the fix; the key stays as it was.
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o644)).unwrap();
    let before = std::fs::read(&path).unwrap();
    let out = std::process::Command::new(bin())
        .args(["serve", "--listen", "127.0.0.1:0", "--data"])
        .arg(&data)
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{err}");
    assert!(
        err.contains("is readable by its group or others (mode 0644)"),
        "{err}"
    );
    assert!(
        err.contains(&format!("chmod 600 {}", path.display())),
        "{err}"
    );
    assert_eq!(std::fs::read(&path).unwrap(), before);

    // --key-file: missing is refused with how to make it; --generate makes it once.
    let file = tmp.path().join("shared.key");
    let out = std::process::Command::new(bin())
        .args(["key", "--key-file"])
        .arg(&file)
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{err}");
    assert!(err.contains("--generate"), "{err}");
    let made = make_key(&file);
    assert!(made.starts_with("ed25519:"));
    let out = std::process::Command::new(bin())
        .args(["key", "--generate", "--key-file"])
        .arg(&file)
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("never replaces a key"));
}

#[test]
fn a_postgres_collector_without_a_key_file_is_refused() {
    let Some(cluster) = PgCluster::shared() else {
        return;
    };
    let url = cluster.create_database();
    let out = std::process::Command::new(bin())
        .args(["serve", "--listen", "127.0.0.1:0", "--store", &url])
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{err}");
    assert!(err.contains("a PostgreSQL store needs --key-file"), "{err}");
}

async fn replica(url: &str, key: &CollectorKey) -> TestServer {
    TestServer::start_on(
        Arc::new(PgStore::connect(url, None).unwrap()),
        config(key, None),
        None,
    )
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_replicas_racing_halts_and_resumes_give_each_change_its_own_serial() {
    let Some(cluster) = PgCluster::shared() else {
        return;
    };
    let url = cluster.create_database();
    let tmp = tempfile::tempdir().unwrap();
    let key = key_in(tmp.path());
    let (a, b) = (replica(&url, &key).await, replica(&url, &key).await);
    let commits: Vec<String> = (0..6).map(|i| format!("{:040x}", 0xd0 + i)).collect();
    let mut serials = Vec::new();
    for round in 0..4 {
        let action = if round % 2 == 0 { "halt" } else { "resume" };
        let calls = commits.iter().enumerate().map(|(i, c)| {
            let client = if i % 2 == 0 { a.admin() } else { b.admin() };
            let path = format!("/api/v1/rollouts/{c}/{action}");
            async move { admin_post(&client, &path, "").await }
        });
        // Both replicas change the same commits too: one of each pair is a no-op.
        let doubled = commits.iter().enumerate().map(|(i, c)| {
            let client = if i % 2 == 0 { b.admin() } else { a.admin() };
            let path = format!("/api/v1/rollouts/{c}/{action}");
            async move { admin_post(&client, &path, "").await }
        });
        let (first, second) = tokio::join!(
            futures_join(calls.collect()),
            futures_join(doubled.collect())
        );
        for resp in first.iter().chain(&second) {
            assert_eq!(resp.status, 200, "{}", resp.text());
            let j = resp.json();
            if j["changed"] == true {
                serials.push(j["serial"].as_u64().unwrap());
            }
        }
    }
    serials.sort();
    let n = serials.len() as u64;
    assert_eq!(
        n,
        4 * commits.len() as u64,
        "each change made once: {serials:?}"
    );
    assert_eq!(
        serials,
        (1..=n).collect::<Vec<_>>(),
        "one serial per change, none shared"
    );
    // Both replicas seal the very same list for the final serial.
    a.state.rollouts.refresh().unwrap();
    b.state.rollouts.refresh().unwrap();
    let (sa, sb) = (a.state.rollouts.sealed(), b.state.rollouts.sealed());
    assert_eq!(sa.list.serial, n);
    assert_eq!(sa.signed, sb.signed, "same serial, same bytes");
    assert!(
        sa.list.halted.is_empty(),
        "the last round resumed every commit"
    );
    a.stop().await;
    b.stop().await;
}

/// Runs the futures concurrently (no extra dependency).
async fn futures_join<F: std::future::Future<Output = Resp> + Send + 'static>(
    futures: Vec<F>,
) -> Vec<Resp> {
    let handles: Vec<_> = futures.into_iter().map(tokio::spawn).collect();
    let mut out = Vec::new();
    for h in handles {
        out.push(h.await.unwrap());
    }
    out
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_replica_signs_the_others_halt_within_the_poll_bound() {
    let Some(cluster) = PgCluster::shared() else {
        return;
    };
    let url = cluster.create_database();
    let tmp = tempfile::tempdir().unwrap();
    let key = key_in(tmp.path());
    let (a, b) = (replica(&url, &key).await, replica(&url, &key).await);
    let mut gw = Device::new("gw-1", 1);
    let list = post(&b, about(&mut gw, Status::Pending, C1, Some("all")), &key).await;
    assert_eq!(list.serial, 0);
    let halted = admin_post(&a.admin(), &format!("/api/v1/rollouts/{C1}/halt"), "").await;
    assert_eq!(halted.status, 200, "{}", halted.text());
    let start = Instant::now();
    let bound = shoal_collector::rollouts::POLL + Duration::from_secs(2);
    loop {
        let list = post(&b, about(&mut gw, Status::Pending, C1, Some("all")), &key).await;
        if list.serial == 1 {
            assert_eq!(list.halted[0].reason, "operator");
            break;
        }
        assert!(
            start.elapsed() < bound,
            "replica b still signs serial {} after {:?}",
            list.serial,
            start.elapsed()
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    a.stop().await;
    b.stop().await;
}

#[tokio::test]
async fn a_schema_1_database_is_migrated_to_the_halt_list() {
    let Some(cluster) = PgCluster::shared() else {
        return;
    };
    let url = cluster.create_database();
    drop(PgStore::connect(&url, None).unwrap());
    let db = url.split('/').nth(3).unwrap().split('?').next().unwrap();
    // Back to what a collector of schema 1 left.
    cluster.psql(
        db,
        "DROP TABLE shoal_halt, shoal_halt_list, shoal_adoption; UPDATE shoal_schema SET version = 1",
    );
    let tmp = tempfile::tempdir().unwrap();
    let key = key_in(tmp.path());
    let server = replica(&url, &key).await;
    assert_eq!(cluster.psql(db, "SELECT version FROM shoal_schema"), "2");
    let mut gw = Device::new("gw-1", 1);
    let list = post(&server, about(&mut gw, Status::Pending, C1, None), &key).await;
    assert_eq!(list.serial, 0);
    let done = admin_post(&server.admin(), &format!("/api/v1/rollouts/{C1}/halt"), "").await;
    assert_eq!(done.json()["serial"], 1, "{}", done.text());
    server.stop().await;
}

#[test]
fn bad_automatic_halt_flags_are_refused_before_anything_starts() {
    let tmp = tempfile::tempdir().unwrap();
    let data = tmp.path().join("data");
    for (flags, text) in [
        (
            &["--halt-failed-ratio", "1.5"][..],
            "--halt-failed-ratio 1.5 is not a share above 0 and at most 1",
        ),
        (&["--halt-failed-ratio", "0"][..], "is not a share above 0"),
        (
            &["--halt-failed-ratio", "0.5", "--halt-min-devices", "0"][..],
            "--halt-min-devices 0: give at least 1",
        ),
        (&["--halt-min-devices", "3"][..], "--halt-failed-ratio"),
    ] {
        let out = std::process::Command::new(bin())
            .args(["serve", "--listen", "127.0.0.1:0", "--data"])
            .arg(&data)
            .args(flags)
            .output()
            .unwrap();
        let err = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(2), "{flags:?}: {err}");
        assert!(err.contains(text), "{flags:?}: {err}");
        assert!(!data.exists(), "{flags:?} created the store");
    }
    let out = std::process::Command::new(bin())
        .args(["key", "--data"])
        .arg(&data)
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{err}");
    assert!(err.contains("no such directory"), "{err}");
}
