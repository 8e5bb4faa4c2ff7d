//! The real `shoal-collector` binary: pre-registration with `register`, enrollment, SIGTERM
//! (graceful shutdown that flushes the store), and a restart on the same data directory that keeps
//! every device, pin and counter and still refuses old sequence numbers.

#[macro_use]
mod common;

use common::*;
use shoal_proto::Status;

fn without_now(mut v: serde_json::Value) -> serde_json::Value {
    v.as_object_mut().unwrap().remove("now");
    v
}

fn write_tokens(dir: &std::path::Path) -> (String, String) {
    let read = dir.join("read-tokens");
    let enroll = dir.join("enroll-tokens");
    std::fs::write(&read, format!("# read\n{READ_TOKEN}\n")).unwrap();
    std::fs::write(&enroll, format!("{ENROLL_TOKEN}\n")).unwrap();
    (
        read.to_str().unwrap().to_owned(),
        enroll.to_str().unwrap().to_owned(),
    )
}

async fn restart_keeps_everything_and_still_rejects_old_sequences(backend: Backend) {
    let tmp = TestStore::fresh(backend);
    let data = tmp.flags();
    let (read, enroll) = write_tokens(tmp.path());
    let args = ["--token-file", &read, "--enroll-token-file", &enroll];
    let mut gw = Device::new("gw-1", 1);
    let mut pre = Device::new("gw-pre", 2);

    // Pre-register gw-pre offline; idempotent; a second key for it is refused.
    let out = register(&data, "gw-pre", pre.key_id().as_str());
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let out = register(&data, "gw-pre", pre.key_id().as_str());
    assert!(out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("already registered"));
    let out = register(&data, "gw-pre", gw.key_id().as_str());
    assert_eq!(out.status.code(), Some(1));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("already pinned to key"), "{err}");
    let out = register(&data, "gw-pre", "rsa:AAAA");
    assert_eq!(out.status.code(), Some(2), "bad key is bad usage");

    let server = start_binary(&data, &args, &tmp.path().join("log1"));
    let client = Client {
        bearer: Some(READ_TOKEN.to_owned()),
        ..Client::new(server.addr())
    };
    let resp = client
        .post_report(gw.next(Status::Applying, None), Some(ENROLL_TOKEN))
        .await;
    assert_eq!(resp.status, 200, "{}", resp.text());
    for status in [Status::Failed, Status::RolledBack] {
        let resp = client
            .post_report(gw.next(status, Some("abcd1234")), None)
            .await;
        assert_eq!(resp.status, 200, "{}", resp.text());
    }
    for _ in 0..2 {
        let resp = client
            .post_report(pre.next(Status::Converged, Some("abcd1234")), None)
            .await;
        assert_eq!(resp.status, 200, "{}", resp.text());
    }
    // While it runs, sled is locked: register says to stop the collector first. PostgreSQL
    // registers alongside a running collector, and still refuses gw-1's key for another id.
    let out = register(&data, "gw-9", gw.key_id().as_str());
    assert_eq!(out.status.code(), Some(1));
    let expected = match tmp.backend() {
        Backend::Sled => "stop the collector first",
        Backend::Postgres => "is already pinned to device gw-1",
    };
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains(expected), "{err}");

    let summary = without_now(client.get("/api/v1/summary").await.json());
    let device = client.get("/api/v1/devices/gw-1").await.json();
    let history = client.get("/api/v1/devices/gw-1/history").await.json();
    assert_eq!(summary["total"], 2);
    assert_eq!(summary["by_commit"]["abcd1234"], 2);
    assert_eq!(history["history"].as_array().unwrap().len(), 3);

    let status = server.terminate();
    assert!(status.success(), "SIGTERM exit: {status:?}");

    let server = start_binary(&data, &args, &tmp.path().join("log2"));
    let client = Client {
        bearer: Some(READ_TOKEN.to_owned()),
        ..Client::new(server.addr())
    };
    assert_eq!(
        without_now(client.get("/api/v1/summary").await.json()),
        summary
    );
    assert_eq!(client.get("/api/v1/devices/gw-1").await.json(), device);
    assert_eq!(
        client.get("/api/v1/devices/gw-1/history").await.json(),
        history
    );

    // Old sequence numbers stay refused across the restart.
    for seq in [3, 1] {
        let mut old = gw.report(Status::Converged, None);
        old.sequence = seq;
        client
            .post_report(gw.seal(&old), None)
            .await
            .assert_rejected(409, "replayed_sequence", &format!("sequence {seq}"));
    }
    gw.sequence = 3;
    // The pin survived: another key for gw-1 is refused even with a token...
    let mut imposter = Device::new("gw-1", 77);
    imposter.sequence = 100;
    client
        .post_report(imposter.next(Status::Converged, None), Some(ENROLL_TOKEN))
        .await
        .assert_rejected(403, "key_mismatch", "pinned to key");
    // ...and gw-1's own key needs no token.
    let resp = client
        .post_report(gw.next(Status::Converged, Some("abcd1234")), None)
        .await;
    assert_eq!(resp.status, 200, "{}", resp.text());
    let metrics = client.get("/metrics").await.text();
    assert!(metrics.contains("shoal_reports_rejected_total{reason=\"replayed_sequence\"} 2"));
    assert!(
        metrics.contains("shoal_devices{status=\"converged\"} 2"),
        "{metrics}"
    );
    let status = server.terminate();
    assert!(status.success());
}

#[test]
fn bad_configuration_exits_2_and_names_the_file() {
    let tmp = tempfile::tempdir().unwrap();
    let short = tmp.path().join("short");
    std::fs::write(&short, "abc\n").unwrap();
    let missing = tmp.path().join("missing");
    for (flag, file, expect) in [
        ("--token-file", &short, "shorter than 16 characters"),
        ("--enroll-token-file", &missing, "cannot read token file"),
        ("--tls-cert", &missing, "TLS certificate file"),
    ] {
        let mut cmd = std::process::Command::new(bin());
        cmd.args(["serve", "--listen", "127.0.0.1:0", "--data"])
            .arg(tmp.path().join("data"))
            .arg(flag)
            .arg(file);
        if flag == "--tls-cert" {
            cmd.arg("--tls-key").arg(&missing);
        }
        let out = cmd.output().unwrap();
        let err = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(2), "{flag}: {err}");
        assert!(err.contains(expect), "{flag}: {err}");
        assert!(err.contains(file.to_str().unwrap()), "{flag}: {err}");
    }
}

async fn sigterm_does_not_wait_forever_for_a_stalled_client(backend: Backend) {
    use tokio::io::AsyncWriteExt as _;
    let tmp = TestStore::fresh(backend);
    let server = start_binary(&tmp.flags(), &[], &tmp.path().join("log"));
    // A request whose body never arrives: the handler waits for it.
    let mut stalled = tokio::net::TcpStream::connect(server.addr()).await.unwrap();
    stalled
        .write_all(b"POST /api/v1/reports HTTP/1.1\r\nhost: x\r\ncontent-length: 100\r\n\r\n{\"ver")
        .await
        .unwrap();
    tokio::time::sleep(std::time::Duration::from_millis(200)).await;
    let started = std::time::Instant::now();
    let pid = server.pid() as libc::pid_t;
    // SAFETY: kill(2) on the pid of a child we spawned and have not reaped.
    assert_eq!(unsafe { libc::kill(pid, libc::SIGTERM) }, 0);
    let status = tokio::task::spawn_blocking(move || server.wait())
        .await
        .unwrap();
    let took = started.elapsed();
    assert!(status.success(), "{status:?}");
    assert!(
        took >= std::time::Duration::from_secs(5) && took < std::time::Duration::from_secs(20),
        "shutdown took {took:?}: it should wait for the request, but not forever"
    );
    drop(stalled);
}

/// kill -9 while 40 devices are reporting, restart, let the devices' outboxes redeliver: every
/// report acknowledged before the kill is there after it, redelivery is answered 200 or 409, and
/// in the end each device has exactly its reports once — nothing lost, nothing counted twice.
async fn kill_9_mid_stream_loses_no_acknowledged_report_and_counts_none_twice(backend: Backend) {
    use std::sync::atomic::{AtomicUsize, Ordering};
    use std::sync::Arc;

    const DEVICES: usize = 40;
    const REPORTS: u64 = 15;
    let tmp = TestStore::fresh(backend);
    let data = tmp.flags();
    let (_, enroll) = write_tokens(tmp.path());
    let args = ["--enroll-token-file", enroll.as_str()];

    // Each device's outbox: sealed reports, sequence 1..=REPORTS, statuses cycling.
    let outboxes: Vec<(String, Vec<Vec<u8>>)> = (0..DEVICES)
        .map(|i| {
            let mut d = Device::new(&format!("dev-{i:02}"), 1000 + i as u64);
            let bodies = (0..REPORTS)
                .map(|n| {
                    d.next(
                        Status::ALL[(i + n as usize) % Status::ALL.len()],
                        Some("abcd"),
                    )
                })
                .collect();
            (d.id.clone(), bodies)
        })
        .collect();

    /// Delivers from `from` on; returns the index of the first report not delivered.
    async fn deliver(
        client: Client,
        bodies: Vec<Vec<u8>>,
        from: usize,
        acked: Arc<AtomicUsize>,
    ) -> usize {
        for (i, body) in bodies.into_iter().enumerate().skip(from) {
            match client.try_post_report(body, Some(ENROLL_TOKEN)).await {
                Ok(r) if r.status == 200 => {
                    acked.fetch_add(1, Ordering::SeqCst);
                }
                // Stored earlier but our ack was lost: delivered all the same.
                Ok(r) if r.status == 409 => {}
                Ok(r) => panic!("unexpected answer {}: {}", r.status, r.text()),
                Err(_) => return i,
            }
        }
        REPORTS as usize
    }

    let server = start_binary(&data, &args, &tmp.path().join("log1"));
    let acked = Arc::new(AtomicUsize::new(0));
    let tasks: Vec<_> = outboxes
        .iter()
        .map(|(_, bodies)| {
            tokio::spawn(deliver(
                Client::new(server.addr()),
                bodies.clone(),
                0,
                acked.clone(),
            ))
        })
        .collect();
    while acked.load(Ordering::SeqCst) < 100 {
        tokio::time::sleep(std::time::Duration::from_millis(5)).await;
    }
    let status = tokio::task::spawn_blocking(move || server.signal(libc::SIGKILL))
        .await
        .unwrap();
    assert!(!status.success(), "killed: {status:?}");
    let mut delivered = Vec::new();
    for t in tasks {
        delivered.push(t.await.unwrap());
    }
    assert!(
        delivered.iter().any(|d| *d < REPORTS as usize),
        "the kill came too late to interrupt anything: {delivered:?}"
    );

    let server = start_binary(&data, &args, &tmp.path().join("log2"));
    let client = Client::new(server.addr());
    assert_acknowledged_kept(
        &client,
        outboxes
            .iter()
            .zip(&delivered)
            .map(|((id, _), done)| (id.to_string(), *done as u64)),
    )
    .await;
    let tasks: Vec<_> = outboxes
        .iter()
        .zip(&delivered)
        .map(|((_, bodies), done)| {
            tokio::spawn(deliver(
                client.clone(),
                bodies.clone(),
                *done,
                acked.clone(),
            ))
        })
        .collect();
    for t in tasks {
        assert_eq!(t.await.unwrap(), REPORTS as usize);
    }

    let summary = client.get("/api/v1/summary").await.json();
    assert_eq!(summary["total"], DEVICES);
    assert_eq!(summary["by_commit"]["abcd"], DEVICES);
    let mut by_status = std::collections::BTreeMap::new();
    for i in 0..DEVICES {
        let last = Status::ALL[(i + REPORTS as usize - 1) % Status::ALL.len()];
        *by_status.entry(last.as_str()).or_insert(0u64) += 1;
    }
    for (status, n) in &by_status {
        assert_eq!(summary["by_status"][status], *n, "{status}: {summary}");
    }
    for (id, _) in &outboxes {
        let h = client
            .get(&format!("/api/v1/devices/{id}/history"))
            .await
            .json();
        let seqs: Vec<u64> = h["history"]
            .as_array()
            .unwrap()
            .iter()
            .map(|e| e["report"]["sequence"].as_u64().unwrap())
            .collect();
        assert_eq!(seqs, (1..=REPORTS).rev().collect::<Vec<_>>(), "{id}");
    }
    assert!(server.terminate().success());
}

both_stores!(
    restart_keeps_everything_and_still_rejects_old_sequences,
    sigterm_does_not_wait_forever_for_a_stalled_client,
);
both_stores!(
    multi_thread:
    kill_9_mid_stream_loses_no_acknowledged_report_and_counts_none_twice,
);
