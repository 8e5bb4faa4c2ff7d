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
    assert_eq!(cluster.psql(db, "SELECT version FROM shoal_schema"), "1");
    cluster.psql(db, "UPDATE shoal_schema SET version = 7");
    let err = match PgStore::connect(&url, None) {
        Ok(_) => panic!("a newer schema was accepted"),
        Err(e) => e.to_string(),
    };
    assert!(
        err.contains("has schema version 7, newer than this collector's 1"),
        "{err}"
    );
    assert_eq!(cluster.psql(db, "SELECT version FROM shoal_schema"), "7");
}
