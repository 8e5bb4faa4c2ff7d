//! Report ingestion over a real socket: enrollment by token, pre-registered keys, and every
//! rejection path — each answered with its status code and reason, counted in /metrics, and
//! changing nothing (device state, history, key pins, fleet counters in memory and on disk).

#[macro_use]
mod common;

use axum::body::Bytes;
use base64::Engine as _;
use common::*;
use hyper::Method;
use shoal_proto::{Status, MAX_ENVELOPE_BYTES};
use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};

const COMMIT_A: &str = "aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa";
const COMMIT_B: &str = "bbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbb";

async fn enrollment_token_pins_the_key_to_the_device(backend: Backend) {
    let dir = TestStore::fresh(backend);
    let server = TestServer::start(&dir, config_with_tokens()).await;
    let client = server.client();
    let mut gw = Device::new("gw-1", 1);

    let first = gw.next(Status::Converged, Some(COMMIT_A));
    assert_enrolls(&server, &gw, first).await;

    // Once pinned, no token is needed.
    let resp = client
        .post_report(gw.next(Status::Applying, Some(COMMIT_B)), None)
        .await;
    assert_eq!(resp.status, 200, "{}", resp.text());
    assert_eq!(resp.json()["enrolled"], false);

    let device = client.get("/api/v1/devices/gw-1").await;
    assert_eq!(device.status, 200);
    let d = device.json();
    assert_eq!(d["status"], "applying");
    assert_eq!(d["commit"], COMMIT_B);
    assert_eq!(d["sequence"], 2);
    assert_eq!(d["key_id"], gw.key_id().as_str());
    assert_eq!(d["labels"]["role"], "gateway");
    assert_eq!(d["stale"], false);

    let history = client.get("/api/v1/devices/gw-1/history").await.json();
    let seqs: Vec<_> = history["history"]
        .as_array()
        .unwrap()
        .iter()
        .map(|h| h["report"]["sequence"].as_u64().unwrap())
        .collect();
    assert_eq!(seqs, vec![2, 1], "newest first");

    let metrics = client.get("/metrics").await.text();
    assert!(
        metrics.contains("shoal_reports_accepted_total 2\n"),
        "{metrics}"
    );
    assert!(metrics.contains("shoal_enrollments_total 1\n"), "{metrics}");
    assert!(
        metrics.contains("shoal_devices{status=\"applying\"} 1\n"),
        "{metrics}"
    );

    // A token cannot re-key a pinned device: another key claiming gw-1 is refused.
    let mut imposter = Device::new("gw-1", 99);
    imposter.sequence = 50;
    let body = imposter.next(Status::Converged, None);
    rejected(
        &server,
        "gw-1",
        body,
        Some(ENROLL_TOKEN),
        (403, "key_mismatch", "pinned to key"),
    )
    .await;
    server.stop().await;
}

async fn pre_registered_key_is_accepted_without_a_token(backend: Backend) {
    let dir = TestStore::fresh(backend);
    let server = TestServer::start(&dir, config_with_tokens()).await;
    let mut gw = Device::new("gw-pre", 2);
    server.state.store.register("gw-pre", &gw.key_id()).unwrap();
    let resp = accepted(&server, gw.next(Status::Held, None), None).await;
    assert_eq!(resp.json()["enrolled"], false);
    let summary = server.client().get("/api/v1/summary").await.json();
    assert_eq!(summary["total"], 1);
    assert_eq!(summary["by_status"]["held"], 1);
    assert_eq!(summary["no_commit"], 1);

    // The pre-registered key of another device cannot be used for this one.
    let other = Device::new("gw-other", 3);
    server
        .state
        .store
        .register("gw-other", &other.key_id())
        .unwrap();
    let mut wrong = Device::new("gw-pre", 3); // gw-other's key, claiming gw-pre
    wrong.sequence = 10;
    let body = wrong.next(Status::Converged, None);
    rejected(
        &server,
        "gw-pre",
        body,
        None,
        (403, "key_mismatch", "pinned to key"),
    )
    .await;
    server.stop().await;
}

async fn every_reject_path_is_a_4xx_with_a_reason_and_changes_nothing(backend: Backend) {
    let dir = TestStore::fresh(backend);
    let server = TestServer::start(&dir, config_with_tokens()).await;
    let mut gw = Device::new("gw-1", 1);
    let first = gw.next(Status::Converged, Some(COMMIT_A));
    accepted(&server, first.clone(), Some(ENROLL_TOKEN)).await;

    // Malformed JSON.
    rejected(
        &server,
        "gw-1",
        b"{not json".to_vec(),
        None,
        (400, "malformed_envelope", "not a signed envelope"),
    )
    .await;
    rejected(
        &server,
        "gw-1",
        br#"{"version":1,"key_id":"ed25519:AAAA"}"#.to_vec(),
        None,
        (400, "malformed_envelope", "missing field"),
    )
    .await;
    rejected(
        &server,
        "gw-1",
        Vec::new(),
        None,
        (400, "malformed_envelope", "not a signed envelope"),
    )
    .await;

    // Oversized body, declared by Content-Length.
    let big = vec![b' '; MAX_ENVELOPE_BYTES + 1];
    rejected(
        &server,
        "gw-1",
        big,
        None,
        (413, "oversized_body", "over the limit of 65536 bytes"),
    )
    .await;

    // Unsupported envelope version.
    let mut v2: serde_json::Value =
        serde_json::from_slice(&gw.next(Status::Converged, None)).unwrap();
    v2["version"] = 2.into();
    rejected(
        &server,
        "gw-1",
        serde_json::to_vec(&v2).unwrap(),
        None,
        (400, "unsupported_version", "version 2 is not supported"),
    )
    .await;

    // Bad signature: a payload changed after signing.
    let mut forged: serde_json::Value =
        serde_json::from_slice(&gw.next(Status::Failed, None)).unwrap();
    let mut report = gw.report(Status::Converged, Some(COMMIT_B));
    report.sequence = 1000;
    forged["payload"] = base64::engine::general_purpose::STANDARD
        .encode(serde_json::to_vec(&report).unwrap())
        .into();
    rejected(
        &server,
        "gw-1",
        serde_json::to_vec(&forged).unwrap(),
        None,
        (401, "bad_signature", "does not verify"),
    )
    .await;

    // Signed but not a report, and signed but invalid.
    let garbage = signed_payload(&gw, br#"{"device_id":"gw-1","sequence":"x"}"#);
    rejected(
        &server,
        "gw-1",
        garbage,
        None,
        (400, "malformed_report", "not a report"),
    )
    .await;
    let mut bad_id = gw.report(Status::Converged, None);
    bad_id.device_id = "gw/1".into();
    let invalid = gw.seal(&bad_id);
    rejected(
        &server,
        "gw-1",
        invalid,
        None,
        (422, "invalid_report", "device_id"),
    )
    .await;

    // Unknown key: a new device with no registration and no token.
    let mut stranger = Device::new("gw-2", 2);
    let body = stranger.next(Status::Converged, None);
    rejected(
        &server,
        "gw-2",
        body.clone(),
        None,
        (403, "unknown_key", "not registered"),
    )
    .await;
    // ... or with a token this collector does not know.
    rejected(
        &server,
        "gw-2",
        body,
        Some("not-the-enroll-token"),
        (403, "bad_enrollment_token", "X-Shoal-Enroll"),
    )
    .await;

    // Key/device mismatch: gw-1's pinned key signing for a device id that is not gw-1.
    let mut thief = Device::new("gw-3", 1);
    let body = thief.next(Status::Converged, None);
    rejected(
        &server,
        "gw-3",
        body,
        Some(ENROLL_TOKEN),
        (403, "key_mismatch", "is pinned to device gw-1"),
    )
    .await;

    // Replay: the very first envelope again, and an older sequence number.
    let j = rejected(
        &server,
        "gw-1",
        first,
        None,
        (
            409,
            "replayed_sequence",
            "not after the last accepted sequence 1",
        ),
    )
    .await;
    assert_eq!(j["last_sequence"], 1);
    accepted(&server, gw.next(Status::Drifted, None), None).await;
    let mut older = gw.report(Status::Converged, None);
    older.sequence = 5;
    rejected(
        &server,
        "gw-1",
        gw.seal(&older),
        None,
        (409, "replayed_sequence", "sequence 5"),
    )
    .await;

    // Through it all: one device, two accepted reports.
    let summary = server.client().get("/api/v1/summary").await.json();
    assert_eq!(summary["total"], 1);
    assert_eq!(summary["by_status"]["drifted"], 1);
    assert_eq!(server.state.metrics.accepted_count(), 2);
    server.stop().await;
}

fn signed_payload(device: &Device, payload: &[u8]) -> Vec<u8> {
    use ed25519_dalek::Signer as _;
    let b64 = base64::engine::general_purpose::STANDARD;
    let mut msg = shoal_proto::SIGNING_CONTEXT.to_vec();
    msg.extend_from_slice(payload);
    serde_json::to_vec(&serde_json::json!({
        "version": 1,
        "key_id": device.key_id().to_string(),
        "payload": b64.encode(payload),
        "signature": b64.encode(device.key.sign(&msg).to_bytes()),
    }))
    .unwrap()
}

async fn oversized_chunked_body_is_cut_off_at_the_limit(backend: Backend) {
    let dir = TestStore::fresh(backend);
    let server = TestServer::start(&dir, config_with_tokens()).await;
    let before = snapshot(&server.state, "gw-1");
    // No Content-Length: the limit must hold while reading.
    let mut tcp = tokio::net::TcpStream::connect(server.addr).await.unwrap();
    tcp.write_all(
        b"POST /api/v1/reports HTTP/1.1\r\nhost: localhost\r\ntransfer-encoding: chunked\r\n\r\n",
    )
    .await
    .unwrap();
    let chunk = vec![b' '; 16 * 1024];
    for _ in 0..5 {
        let _ = tcp
            .write_all(format!("{:x}\r\n", chunk.len()).as_bytes())
            .await;
        let _ = tcp.write_all(&chunk).await;
        let _ = tcp.write_all(b"\r\n").await;
    }
    let _ = tcp.write_all(b"0\r\n\r\n").await;
    let mut response = Vec::new();
    let _ = tcp.read_to_end(&mut response).await;
    let response = String::from_utf8_lossy(&response);
    assert!(response.starts_with("HTTP/1.1 413"), "{response}");
    assert!(
        response.contains(r#""reason_code":"oversized_body""#),
        "{response}"
    );
    assert_eq!(snapshot(&server.state, "gw-1"), before);
    assert_eq!(server.state.metrics.rejected_count("oversized_body"), 1);
    server.stop().await;
}

async fn reads_need_the_bearer_token_and_reports_do_not(backend: Backend) {
    let dir = TestStore::fresh(backend);
    let server = TestServer::start(&dir, config_with_tokens()).await;
    let anonymous = Client::new(server.addr);
    for path in [
        "/",
        "/devices",
        "/devices/gw-1",
        "/api/v1/devices",
        "/api/v1/devices/gw-1",
        "/api/v1/devices/gw-1/history",
        "/api/v1/summary",
        "/metrics",
    ] {
        let resp = anonymous.get(path).await;
        resp.assert_rejected(401, "unauthorized", "bearer token");
        assert_eq!(resp.headers["www-authenticate"], "Bearer", "{path}");
        let wrong = Client {
            bearer: Some("read-0123456789abcdeX".into()),
            ..anonymous.clone()
        };
        wrong
            .get(path)
            .await
            .assert_rejected(401, "unauthorized", "bearer token");
    }
    assert_eq!(anonymous.get("/healthz").await.status, 200);
    let mut gw = Device::new("gw-1", 1);
    let resp = anonymous
        .post_report(gw.next(Status::Converged, None), Some(ENROLL_TOKEN))
        .await;
    assert_eq!(
        resp.status, 200,
        "signature, not bearer, authenticates reports"
    );
    let authed = server.client();
    assert_eq!(authed.get("/api/v1/devices/gw-1").await.status, 200);
    authed
        .get("/api/v1/devices/nope")
        .await
        .assert_rejected(404, "not_found", "device \"nope\"");
    authed
        .get("/api/v1/devices?status=great")
        .await
        .assert_rejected(400, "bad_query", "status \"great\"");
    authed
        .request(Method::DELETE, "/api/v1/nothing", &[], Bytes::new())
        .await
        .assert_rejected(404, "not_found", "route");
    server.stop().await;
}

async fn without_a_token_file_reads_are_open_and_without_enroll_tokens_only_registered_keys_enroll(
    backend: Backend,
) {
    let dir = TestStore::fresh(backend);
    let server = TestServer::start(&dir, shoal_collector::Config::default()).await;
    let client = Client::new(server.addr);
    assert_eq!(client.get("/api/v1/summary").await.status, 200);
    let mut gw = Device::new("gw-1", 1);
    let body = gw.next(Status::Converged, None);
    rejected(
        &server,
        "gw-1",
        body,
        Some(ENROLL_TOKEN),
        (403, "bad_enrollment_token", "not valid"),
    )
    .await;
    server.stop().await;
}

/// A device whose release expired reports `stale` with the release beside the commit: the
/// collector counts it by status, filters on it, and shows both on the page.
async fn a_stale_release_is_counted_filtered_and_shown(backend: Backend) {
    let dir = TestStore::fresh(backend);
    let server = TestServer::start(&dir, config_with_tokens()).await;
    let client = server.client();
    let mut gw = Device::new("gw-1", 1);
    let mut stale = gw.report(Status::Stale, Some(COMMIT_A));
    stale.release = Some(shoal_proto::Release {
        environment: "production".into(),
        number: 42,
    });
    stale.errors.push(shoal_proto::ResourceError {
        resource: "release production/42".into(),
        message: "release production/42 expired at 2024-05-01T12:00:00Z (2h 5m ago by this device's clock)".into(),
    });
    let body = gw.seal(&stale);
    assert_enrolls(&server, &gw, body).await;
    let mut other = Device::new("gw-2", 2);
    let body = other.next(Status::Converged, Some(COMMIT_B));
    assert_enrolls(&server, &other, body).await;

    let summary = client.get("/api/v1/summary").await.json();
    assert_eq!(summary["by_status"]["stale"], 1);
    assert_eq!(summary["by_status"]["converged"], 1);
    let devices = client.get("/api/v1/devices?status=stale").await.json();
    let ids: Vec<_> = devices["devices"]
        .as_array()
        .unwrap()
        .iter()
        .map(|d| d["device_id"].as_str().unwrap().to_owned())
        .collect();
    assert_eq!(ids, ["gw-1"]);
    let device = client.get("/api/v1/devices/gw-1").await.json();
    assert_eq!(device["status"], "stale");
    assert_eq!(device["release"]["environment"], "production");
    assert_eq!(device["release"]["number"], 42);
    let metrics = client.get("/metrics").await.text();
    assert!(
        metrics.contains("shoal_devices{status=\"stale\"} 1\n"),
        "{metrics}"
    );
    let page = client.get("/devices?status=stale").await.text();
    assert!(
        page.contains(r#"<span class="s stale">stale</span>"#),
        "{page}"
    );
    assert!(page.contains("(production/42)"), "{page}");
    assert!(!page.contains("gw-2"), "{page}");
    server.stop().await;
}

both_stores!(
    a_stale_release_is_counted_filtered_and_shown,
    enrollment_token_pins_the_key_to_the_device,
    pre_registered_key_is_accepted_without_a_token,
    every_reject_path_is_a_4xx_with_a_reason_and_changes_nothing,
    oversized_chunked_body_is_cut_off_at_the_limit,
    reads_need_the_bearer_token_and_reports_do_not,
    without_a_token_file_reads_are_open_and_without_enroll_tokens_only_registered_keys_enroll,
);
