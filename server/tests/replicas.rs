//! The collector on PostgreSQL as several replicas over one database: enrollment, the key pin and
//! the per-key sequence stay atomic when two replicas race for the same device; the database
//! restarted during ingest loses nothing acknowledged and counts nothing twice; a database that is
//! unreachable or newer than the binary stops the start with a clear error, never the password.

#[macro_use]
mod common;

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use common::*;
use shoal_collector::store::PgStore;
use shoal_proto::Status;
use shoal_testkit::PgCluster;

/// Two app instances, each with its own store (pool, writer, connections): two replicas.
async fn two_replicas(url: &str) -> (TestServer, TestServer) {
    let a = TestServer::start_on(
        Arc::new(PgStore::connect(url, None).unwrap()),
        config_with_tokens(),
        None,
    )
    .await;
    let b = TestServer::start_on(
        Arc::new(PgStore::connect(url, None).unwrap()),
        config_with_tokens(),
        None,
    )
    .await;
    (a, b)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_replicas_racing_one_device_never_split_its_pin_and_accept_each_sequence_once() {
    let Some(cluster) = PgCluster::shared() else {
        return;
    };
    let url = cluster.create_database();
    let (a, b) = two_replicas(&url).await;
    let (ca, cb) = (a.client(), b.client());

    // Enrollment: two keys claim the same new device id at once, one on each replica.
    for round in 0..20u64 {
        let id = format!("race-{round:02}");
        let mut first = Device::new(&id, 10_000 + round);
        let mut second = Device::new(&id, 20_000 + round);
        let (ra, rb) = tokio::join!(
            ca.post_report(first.next(Status::Converged, None), Some(ENROLL_TOKEN)),
            cb.post_report(second.next(Status::Converged, None), Some(ENROLL_TOKEN)),
        );
        let statuses = [ra.status.as_u16(), rb.status.as_u16()];
        assert!(
            statuses == [200, 403] || statuses == [403, 200],
            "{id}: exactly one enrollment wins: {statuses:?} {} {}",
            ra.text(),
            rb.text()
        );
        let winner = if ra.status == 200 { &first } else { &second };
        let loser = if ra.status == 200 { &rb } else { &ra };
        assert_eq!(
            loser.json()["reason_code"],
            "key_mismatch",
            "{}",
            loser.text()
        );
        for server in [&a, &b] {
            let store = &server.state.store;
            assert_eq!(
                store.pinned_key(&id).unwrap().as_deref(),
                Some(winner.key_id().as_str())
            );
            assert_eq!(
                store
                    .key_owner(winner.key_id().as_str())
                    .unwrap()
                    .as_deref(),
                Some(id.as_str()),
                "the pin is one pair"
            );
            let other = if ra.status == 200 { &second } else { &first };
            assert_eq!(store.key_owner(other.key_id().as_str()).unwrap(), None);
        }
    }

    // One key claims two new device ids at once: it speaks for one of them only.
    let mut left = Device::new("twin-left", 30_000);
    let mut right = Device::new("twin-right", 30_000);
    let (ra, rb) = tokio::join!(
        ca.post_report(left.next(Status::Converged, None), Some(ENROLL_TOKEN)),
        cb.post_report(right.next(Status::Converged, None), Some(ENROLL_TOKEN)),
    );
    let statuses = [ra.status.as_u16(), rb.status.as_u16()];
    assert!(
        statuses == [200, 403] || statuses == [403, 200],
        "{statuses:?}"
    );

    // Sequences: the same report delivered to both replicas at once is accepted exactly once;
    // neighbouring sequences racing end with the newest.
    let mut gw = Device::new("gw-race", 40_000);
    let first = ca
        .post_report(gw.next(Status::Converged, None), Some(ENROLL_TOKEN))
        .await;
    assert_eq!(first.status, 200, "{}", first.text());
    let mut accepted = 1;
    for _ in 0..30 {
        let body = gw.next(Status::Applying, Some("abcd"));
        let (ra, rb) = tokio::join!(
            ca.post_report(body.clone(), None),
            cb.post_report(body, None)
        );
        let mut statuses = [ra.status.as_u16(), rb.status.as_u16()];
        statuses.sort();
        assert_eq!(statuses, [200, 409], "{} {}", ra.text(), rb.text());
        accepted += 1;
        let older = gw.next(Status::Converged, Some("abcd"));
        let newer = gw.next(Status::Failed, Some("abcd"));
        let (ro, rn) = tokio::join!(ca.post_report(older, None), cb.post_report(newer, None));
        assert_eq!(
            rn.status,
            200,
            "the newest sequence always wins: {}",
            rn.text()
        );
        assert!(
            ro.status == 200 || ro.status == 409,
            "{} {}",
            ro.status,
            ro.text()
        );
        accepted += 1 + usize::from(ro.status == 200);
    }
    let device = a.state.store.device("gw-race").unwrap().unwrap();
    assert_eq!(device.report.sequence, gw.sequence);
    assert_eq!(device.report.status, Status::Failed);
    let history = a.state.store.history("gw-race").unwrap();
    assert_eq!(history.len(), accepted, "each accepted report once");
    let mut sequences: Vec<u64> = history.iter().map(|h| h.report.sequence).collect();
    sequences.dedup();
    assert_eq!(sequences.len(), accepted, "no sequence stored twice");

    // The counters, maintained by both replicas in their transactions, count each device once.
    let summary = b.state.store.summary(0, 180).unwrap();
    assert_eq!(summary.total, 20 + 1 + 1, "{summary:?}");
    assert_eq!(summary.by_status["failed"], 1, "{summary:?}");
    assert_eq!(
        a.state.store.persisted_tally().unwrap().seen_total(),
        summary.total
    );
    a.stop().await;
    b.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn database_restarted_during_ingest_loses_no_acknowledged_report_and_counts_none_twice() {
    const DEVICES: usize = 20;
    const REPORTS: u64 = 15;
    let Some(cluster) = PgCluster::start() else {
        return;
    };
    let cluster = Arc::new(cluster);
    cluster.psql("postgres", "CREATE DATABASE restarted");
    let (a, b) = two_replicas(&cluster.url("restarted")).await;
    let acked = Arc::new(AtomicUsize::new(0));
    let unavailable = Arc::new(AtomicUsize::new(0));
    let mut tasks = Vec::new();
    for i in 0..DEVICES {
        let mut device = Device::new(&format!("dev-{i:02}"), 500 + i as u64);
        let bodies: Vec<Vec<u8>> = (0..REPORTS)
            .map(|n| {
                device.next(
                    Status::ALL[(i + n as usize) % Status::ALL.len()],
                    Some("abcd"),
                )
            })
            .collect();
        let client = if i % 2 == 0 { a.client() } else { b.client() };
        let (acked, unavailable) = (acked.clone(), unavailable.clone());
        tasks.push(tokio::spawn(async move {
            // An agent's outbox: each report until it is answered 200 or 409.
            for body in bodies {
                loop {
                    let r = client.post_report(body.clone(), Some(ENROLL_TOKEN)).await;
                    match r.status.as_u16() {
                        200 => {
                            acked.fetch_add(1, Ordering::SeqCst);
                            break;
                        }
                        409 => break,
                        503 => {
                            assert_eq!(r.json()["reason_code"], "store_unavailable");
                            unavailable.fetch_add(1, Ordering::SeqCst);
                            tokio::time::sleep(Duration::from_millis(50)).await;
                        }
                        other => panic!("unexpected answer {other}: {}", r.text()),
                    }
                }
            }
        }));
    }
    while acked.load(Ordering::SeqCst) < DEVICES * 3 {
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    let restarting = cluster.clone();
    tokio::task::spawn_blocking(move || {
        restarting.stop();
        std::thread::sleep(Duration::from_millis(500));
        restarting.start_again();
    })
    .await
    .unwrap();
    for t in tasks {
        t.await.unwrap();
    }
    let store = &a.state.store;
    for i in 0..DEVICES {
        let id = format!("dev-{i:02}");
        let record = store.device(&id).unwrap().expect("every device is stored");
        assert_eq!(
            record.report.sequence, REPORTS,
            "{id}: the last report is in"
        );
        let history = store.history(&id).unwrap();
        assert_eq!(
            history.len(),
            REPORTS as usize,
            "{id}: each report exactly once"
        );
    }
    let summary = store.summary(0, 180).unwrap();
    assert_eq!(summary.total, DEVICES as u64, "counted once: {summary:?}");
    assert_eq!(summary.by_commit["abcd"], DEVICES as u64);
    assert!(acked.load(Ordering::SeqCst) <= DEVICES * REPORTS as usize);
    eprintln!(
        "database restart: {} reports answered 503 and redelivered",
        unavailable.load(Ordering::SeqCst)
    );
    a.stop().await;
    b.stop().await;
}

#[test]
fn an_unreachable_database_stops_the_start_with_exit_1_naming_the_store_but_not_its_password() {
    let out = std::process::Command::new(bin())
        .args([
            "serve",
            "--listen",
            "127.0.0.1:0",
            "--store",
            "postgres://shoal:Sup3rSecretPw@127.0.0.1:1/fleet?connect_timeout=3",
        ])
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{err}");
    assert!(
        err.contains("PostgreSQL store postgres://shoal:***@127.0.0.1:1/fleet"),
        "{err}"
    );
    assert!(err.contains("cannot connect"), "{err}");
    assert!(!err.contains("Sup3rSecretPw"), "the password leaked: {err}");

    let out = std::process::Command::new(bin())
        .args(["serve", "--store", "mysql://x"])
        .output()
        .unwrap();
    assert_eq!(
        out.status.code(),
        Some(2),
        "a URL of another kind is bad usage"
    );
}

#[tokio::test]
async fn a_database_newer_than_the_collector_is_refused_and_left_alone() {
    let Some(cluster) = PgCluster::shared() else {
        return;
    };
    let url = cluster.create_database();
    drop(PgStore::connect(&url, None).unwrap());
    let db = url.split('/').nth(3).unwrap().split('?').next().unwrap();
    assert_eq!(cluster.psql(db, "SELECT version FROM shoal_schema"), "2");
    cluster.psql(db, "UPDATE shoal_schema SET version = 7");
    let err = match PgStore::connect(&url, None) {
        Ok(_) => panic!("a newer schema was accepted"),
        Err(e) => e.to_string(),
    };
    assert!(
        err.contains("has schema version 7, newer than this collector's 2"),
        "{err}"
    );
    assert_eq!(cluster.psql(db, "SELECT version FROM shoal_schema"), "7");
}

/// One of two replica processes killed with SIGKILL while 30 devices report through a "load
/// balancer" (each device's first choice, the other when it cannot connect): the survivor keeps
/// serving, the devices redeliver to it, and in the end every report acknowledged by either is
/// there exactly once and the counters count each device once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_replica_killed_while_the_other_serves_loses_nothing_acknowledged_and_counts_nothing_twice(
) {
    const DEVICES: usize = 30;
    const REPORTS: u64 = 15;
    let Some(cluster) = PgCluster::shared() else {
        return;
    };
    let url = cluster.create_database();
    let tmp = tempfile::tempdir().unwrap();
    let enroll = tmp.path().join("enroll");
    std::fs::write(&enroll, format!("{ENROLL_TOKEN}\n")).unwrap();
    let store = StoreFlags(vec!["--store".into(), url]);
    let args = ["--enroll-token-file", enroll.to_str().unwrap()];
    let doomed = start_binary(&store, &args, &tmp.path().join("a.log"));
    let survivor = start_binary(&store, &args, &tmp.path().join("b.log"));
    let addrs = [doomed.addr(), survivor.addr()];

    // Per device: the highest sequence either replica acknowledged (200), and how many 409s
    // (a report the killed replica committed but could not acknowledge).
    let acked: Arc<Vec<AtomicUsize>> =
        Arc::new((0..DEVICES).map(|_| AtomicUsize::new(0)).collect());
    let total_acks = Arc::new(AtomicUsize::new(0));
    let mut tasks = Vec::new();
    for i in 0..DEVICES {
        let mut device = Device::new(&format!("dev-{i:02}"), 700 + i as u64);
        let bodies: Vec<Vec<u8>> = (0..REPORTS)
            .map(|n| device.next(Status::ALL[(i + n as usize) % 7], Some("abcd")))
            .collect();
        let (acked, total_acks) = (acked.clone(), total_acks.clone());
        tasks.push(tokio::spawn(async move {
            let mut choice = i % 2;
            let mut failovers = 0;
            for (n, body) in bodies.into_iter().enumerate() {
                loop {
                    let client = Client::new(addrs[choice]);
                    match client
                        .try_post_report(body.clone(), Some(ENROLL_TOKEN))
                        .await
                    {
                        Ok(r) if r.status == 200 => {
                            acked[i].fetch_max(n + 1, Ordering::SeqCst);
                            total_acks.fetch_add(1, Ordering::SeqCst);
                            break;
                        }
                        // Stored by the killed replica, the answer lost: delivered.
                        Ok(r) if r.status == 409 => break,
                        Ok(r) => panic!("dev-{i:02}: unexpected answer {}: {}", r.status, r.text()),
                        // The balancer's health check: this replica is gone, use the other.
                        Err(_) => {
                            failovers += 1;
                            assert!(failovers < 50, "dev-{i:02}: no replica answers");
                            choice = 1 - choice;
                        }
                    }
                }
            }
            failovers
        }));
    }
    while total_acks.load(Ordering::SeqCst) < 120 {
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    let status = tokio::task::spawn_blocking(move || doomed.kill())
        .await
        .unwrap();
    assert!(!status.success(), "killed: {status:?}");
    // What was acknowledged before the kill is on the survivor now.
    let at_kill: Vec<usize> = acked.iter().map(|a| a.load(Ordering::SeqCst)).collect();
    let client = Client::new(survivor.addr());
    assert_acknowledged_kept(
        &client,
        at_kill
            .iter()
            .enumerate()
            .map(|(i, n)| (format!("dev-{i:02}"), *n as u64)),
    )
    .await;
    let mut failovers = 0;
    for t in tasks {
        failovers += t.await.unwrap();
    }
    assert!(failovers > 0, "the kill came too late to move any device");

    let summary = client.get("/api/v1/summary").await.json();
    assert_eq!(summary["total"], DEVICES, "{summary}");
    assert_eq!(summary["by_commit"]["abcd"], DEVICES, "{summary}");
    for i in 0..DEVICES {
        let last = Status::ALL[(i + REPORTS as usize - 1) % 7];
        let d = client
            .get(&format!("/api/v1/devices/dev-{i:02}"))
            .await
            .json();
        assert_eq!(d["status"], last.as_str(), "{d}");
        let h = client
            .get(&format!("/api/v1/devices/dev-{i:02}/history"))
            .await
            .json();
        let seqs: Vec<u64> = h["history"]
            .as_array()
            .unwrap()
            .iter()
            .map(|e| e["report"]["sequence"].as_u64().unwrap())
            .collect();
        assert_eq!(
            seqs,
            (1..=REPORTS).rev().collect::<Vec<_>>(),
            "dev-{i:02}: each once"
        );
    }
    let mut by_status = std::collections::BTreeMap::new();
    for i in 0..DEVICES {
        *by_status
            .entry(Status::ALL[(i + REPORTS as usize - 1) % 7].as_str())
            .or_insert(0u64) += 1;
    }
    for (status, n) in &by_status {
        assert_eq!(summary["by_status"][status], *n, "{status}: {summary}");
    }
    eprintln!("one replica killed: {failovers} deliveries moved to the survivor");
    assert!(survivor.terminate().success());
}

/// A CA and a server certificate it signed for 127.0.0.1 (PEM: CA, server chain, server key).
fn certificates() -> (String, String, String) {
    let ca_key = rcgen::KeyPair::generate().unwrap();
    let mut ca_params = rcgen::CertificateParams::new(Vec::<String>::new()).unwrap();
    ca_params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
    ca_params
        .distinguished_name
        .push(rcgen::DnType::CommonName, "shoal test database CA");
    let ca = ca_params.self_signed(&ca_key).unwrap();
    let issuer = rcgen::Issuer::new(ca_params, ca_key);
    let key = rcgen::KeyPair::generate().unwrap();
    let params =
        rcgen::CertificateParams::new(vec!["127.0.0.1".to_owned(), "localhost".to_owned()])
            .unwrap();
    let cert = params.signed_by(&key, &issuer).unwrap();
    (ca.pem(), cert.pem(), key.serialize_pem())
}

/// TLS to the database: the collector connects with `sslmode=require` and `--store-ca`, and the
/// server sees its connections encrypted (`pg_stat_ssl`); a CA that did not sign the server's
/// certificate stops the start (exit 1) with an error that names the certificate check and
/// `--store-ca`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tls_to_the_database_is_verified_against_the_store_ca() {
    let (ca, chain, key) = certificates();
    let Some(cluster) = PgCluster::start_with(
        &[],
        Some(shoal_testkit::PgTls {
            cert_chain_pem: &chain,
            key_pem: &key,
        }),
    ) else {
        return;
    };
    cluster.psql("postgres", "CREATE DATABASE fleet");
    let tmp = tempfile::tempdir().unwrap();
    let ca_file = tmp.path().join("db-ca.pem");
    std::fs::write(&ca_file, &ca).unwrap();
    let url = format!(
        "postgres://shoal@127.0.0.1:{}/fleet?sslmode=require",
        cluster.port()
    );
    let store = StoreFlags(vec![
        "--store".into(),
        url.clone(),
        "--store-ca".into(),
        ca_file.to_str().unwrap().into(),
    ]);
    let enroll = tmp.path().join("enroll");
    std::fs::write(&enroll, format!("{ENROLL_TOKEN}\n")).unwrap();
    let server = start_binary(
        &store,
        &["--enroll-token-file", enroll.to_str().unwrap()],
        &tmp.path().join("log"),
    );
    let client = Client::new(server.addr());
    let mut gw = Device::new("gw-tls", 61);
    let resp = client
        .post_report(gw.next(Status::Converged, None), Some(ENROLL_TOKEN))
        .await;
    assert_eq!(resp.status, 200, "{}", resp.text());
    let connections = |ssl: bool| {
        cluster.psql(
            "postgres",
            &format!(
                "SELECT count(*) FROM pg_stat_ssl s JOIN pg_stat_activity a USING (pid) \
                 WHERE a.application_name = 'shoal-collector' AND s.ssl = {ssl}"
            ),
        )
    };
    assert_ne!(
        connections(true),
        "0",
        "no TLS connection from the collector"
    );
    assert_eq!(
        connections(false),
        "0",
        "a collector connection without TLS"
    );
    assert!(server.terminate().success());

    // Another CA: the server's certificate is not trusted, and the start says so.
    let (other_ca, _, _) = certificates();
    let other = tmp.path().join("other-ca.pem");
    std::fs::write(&other, other_ca).unwrap();
    let out = std::process::Command::new(bin())
        .args([
            "serve",
            "--listen",
            "127.0.0.1:0",
            "--store",
            &url,
            "--store-ca",
        ])
        .arg(&other)
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{err}");
    assert!(err.contains("cannot connect"), "{err}");
    assert!(
        err.contains("the database server's certificate is not trusted"),
        "{err}"
    );
    assert!(
        err.contains(&format!("--store-ca {}", other.display())),
        "{err}"
    );
}
