//! docs/openapi.yaml against the running collector: every documented path and method exists and
//! answers with a documented status (with and without the bearer token, with the wrong token on
//! admin endpoints), and every reason code the collector can send is documented.

#[macro_use]
mod common;

use axum::body::Bytes;
use common::*;
use hyper::Method;
use shoal_collector::ingest::Rejection;
use shoal_proto::Status;

/// (path, method, documented status codes), read from the document's `paths:` section. The document
/// keeps a fixed layout (2-space path keys, 4-space methods, 8-space response codes), which this
/// reader relies on; a layout change fails the test loudly rather than silently passing.
fn documented() -> Vec<(String, String, Vec<u16>)> {
    let doc = std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/../docs/openapi.yaml"))
        .unwrap();
    let mut out: Vec<(String, String, Vec<u16>)> = Vec::new();
    let mut in_paths = false;
    let mut path = String::new();
    for line in doc.lines() {
        if !line.starts_with(' ') {
            in_paths = line == "paths:";
            continue;
        }
        if !in_paths {
            continue;
        }
        if let Some(p) = line.strip_prefix("  /") {
            path = format!("/{}", p.trim_end_matches(':'));
        } else if let Some(m) = line.strip_prefix("    ").filter(|l| !l.starts_with(' ')) {
            let m = m.trim_end_matches(':');
            if ["get", "post", "put", "delete", "patch"].contains(&m) {
                out.push((path.clone(), m.to_owned(), Vec::new()));
            }
        } else if let Some(code) = line.strip_prefix("        \"") {
            if let Some(n) = code.get(..3).and_then(|c| c.parse().ok()) {
                out.last_mut().unwrap().2.push(n);
            }
        }
    }
    out
}

#[test]
fn the_document_lists_the_api() {
    let doc = documented();
    let ops: Vec<_> = doc.iter().map(|(p, m, _)| format!("{m} {p}")).collect();
    assert_eq!(
        ops,
        [
            "post /api/v1/reports",
            "get /api/v1/devices",
            "get /api/v1/devices/{id}",
            "get /api/v1/devices/{id}/history",
            "get /api/v1/devices/{id}/enrollment",
            "put /api/v1/devices/{id}/key",
            "delete /api/v1/devices/{id}/key",
            "get /api/v1/summary",
            "get /api/v1/collector",
            "get /api/v1/rollouts",
            "get /api/v1/rollouts/{commit}",
            "post /api/v1/rollouts/{commit}/halt",
            "post /api/v1/rollouts/{commit}/resume",
            "get /metrics",
            "get /healthz",
            "get /",
            "get /devices",
            "get /devices/{id}",
            "get /rollouts",
        ]
    );
    assert!(doc.iter().all(|(_, _, codes)| codes.contains(&200)));
    let text =
        std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/../docs/openapi.yaml"))
            .unwrap();
    for code in Rejection::REASON_CODES.iter().chain(&[
        "unauthorized",
        "not_found",
        "bad_query",
        "store_unavailable",
        "forbidden",
        "admin_disabled",
        "bad_request",
        "bad_key",
        "key_in_use",
        "bad_proof",
        "bad_commit",
        "reason_too_long",
        "too_many_halts",
    ]) {
        assert!(text.contains(code), "reason code {code} is not documented");
    }
    for s in Status::ALL {
        assert!(text.contains(s.as_str()), "status {s} is not documented");
    }
}

async fn every_documented_operation_answers_a_documented_status(backend: Backend) {
    let dir = TestStore::fresh(backend);
    let server = TestServer::start(&dir, config_with_tokens()).await;
    let authed = server.client();
    let admin = server.admin();
    let anonymous = Client::new(server.addr);
    let mut gw = Device::new("gw-1", 1);
    let mut other = Device::new("gw-2", 2);
    let resp = authed
        .post_report(other.next(Status::Converged, None), Some(ENROLL_TOKEN))
        .await;
    assert_eq!(resp.status, 200, "{}", resp.text());
    let new_key = Device::new("gw-1", 3).key_id();
    // A rollout for the {commit} paths: a report about it.
    const COMMIT: &str = "c1c1c1c1c1c1c1c1c1c1c1c1c1c1c1c1c1c1c1c1";
    let mut r = other.report(Status::Pending, None);
    r.target = Some(shoal_proto::Target {
        commit: COMMIT.to_owned(),
        wave: Some("all".to_owned()),
    });
    let resp = authed.post_report(other.seal(&r), None).await;
    assert_eq!(resp.status, 200, "{}", resp.text());

    for (path, method, codes) in documented() {
        let concrete = path.replace("{id}", "gw-1").replace("{commit}", COMMIT);
        let check = |resp: &Resp, case: &str| {
            assert!(
                codes.contains(&resp.status.as_u16()),
                "{method} {path} ({case}) answered {} which the document does not list ({codes:?}): {}",
                resp.status,
                resp.text()
            );
        };
        match method.as_str() {
            "post" if path.starts_with("/api/v1/rollouts/") => {
                let resp = admin
                    .request(Method::POST, &concrete, &[], Bytes::from_static(b"{}"))
                    .await;
                assert_eq!(resp.status, 200, "{method} {path}: {}", resp.text());
                check(&resp, "admin token");
                let empty = admin
                    .request(Method::POST, &concrete, &[], Bytes::new())
                    .await;
                check(&empty, "no body");
                for (client, case) in [(&anonymous, "no token"), (&authed, "read token")] {
                    let resp = client
                        .request(Method::POST, &concrete, &[], Bytes::new())
                        .await;
                    check(&resp, case);
                }
                let junk = admin
                    .request(Method::POST, &concrete, &[], Bytes::from_static(b"[]"))
                    .await;
                assert_eq!(junk.status, 400, "{}", junk.text());
                check(&junk, "junk body");
                let bad = path.replace("{commit}", "abc");
                let resp = admin.request(Method::POST, &bad, &[], Bytes::new()).await;
                assert_eq!(resp.status, 400, "{}", resp.text());
                check(&resp, "bad commit id");
            }
            "post" => {
                let ok = authed
                    .post_report(gw.next(Status::Converged, None), Some(ENROLL_TOKEN))
                    .await;
                assert_eq!(ok.status, 200, "{}", ok.text());
                check(&ok, "valid report");
                let junk = authed
                    .request(Method::POST, &concrete, &[], Bytes::from_static(b"[]"))
                    .await;
                check(&junk, "junk body");
                check(
                    &authed.post_report(vec![b'x'; 70_000], None).await,
                    "oversized",
                );
            }
            "get" if path.ends_with("/enrollment") => {
                // Device-authenticated: a proof of gw-1's key, not a bearer token.
                let now = std::time::SystemTime::now()
                    .duration_since(std::time::UNIX_EPOCH)
                    .unwrap()
                    .as_secs();
                let proof = shoal_proto::EnrollmentProof::sign(&gw.key, "gw-1", now);
                let headers = [
                    ("x-shoal-key", proof.key_id.as_str()),
                    ("x-shoal-time", proof.time.as_str()),
                    ("x-shoal-signature", proof.signature.as_str()),
                ];
                let resp = anonymous
                    .request(Method::GET, &concrete, &headers, Bytes::new())
                    .await;
                assert_eq!(resp.status, 200, "{method} {path}: {}", resp.text());
                assert!(
                    resp.text().contains("\"pinned\":\"this_key\""),
                    "{}",
                    resp.text()
                );
                check(&resp, "a proof of the pinned key");
                check(&anonymous.get(&concrete).await, "no proof");
                let other_id = path.replace("{id}", "gw-2");
                let resp = anonymous
                    .request(Method::GET, &other_id, &headers, Bytes::new())
                    .await;
                assert_eq!(resp.status, 401, "{}", resp.text());
                check(&resp, "a proof made for another device");
            }
            "get" => {
                let resp = authed.get(&concrete).await;
                assert_eq!(resp.status, 200, "{method} {path}: {}", resp.text());
                check(&resp, "with token");
                let resp = anonymous.get(&concrete).await;
                check(&resp, "without token");
                if codes.contains(&400) {
                    check(
                        &authed.get(&format!("{concrete}?bogus=1")).await,
                        "bad query",
                    );
                }
                if path.contains("{commit}") {
                    let missing = path.replace("{commit}", &"0".repeat(40));
                    let resp = authed.get(&missing).await;
                    assert_eq!(resp.status, 404, "{}", resp.text());
                    check(&resp, "unknown commit");
                    let bad = authed.get(&path.replace("{commit}", "xyz")).await;
                    assert_eq!(bad.status, 400, "{}", bad.text());
                    check(&bad, "bad commit id");
                } else if codes.contains(&404) {
                    let missing = path.replace("{id}", "no-such-device");
                    let resp = authed.get(&missing).await;
                    assert_eq!(resp.status, 404);
                    check(&resp, "unknown device");
                }
            }
            "put" => {
                let resp = admin.put_key("gw-1", new_key.as_str()).await;
                assert_eq!(resp.status, 200, "{method} {path}: {}", resp.text());
                check(&resp, "admin token");
                check(
                    &anonymous.put_key("gw-1", new_key.as_str()).await,
                    "no token",
                );
                check(
                    &authed.put_key("gw-1", new_key.as_str()).await,
                    "read token",
                );
                check(&admin.put_key("gw-1", "ed25519:AAAA").await, "bad key");
                check(
                    &admin
                        .request(Method::PUT, &concrete, &[], Bytes::from_static(b"[]"))
                        .await,
                    "junk body",
                );
                check(
                    &admin.put_key("gw-1", other.key_id().as_str()).await,
                    "key of another device",
                );
                check(
                    &admin.put_key("no-such-device", new_key.as_str()).await,
                    "unknown device",
                );
            }
            "delete" => {
                let resp = admin.delete_key("gw-1").await;
                assert_eq!(resp.status, 200, "{method} {path}: {}", resp.text());
                check(&resp, "admin token");
                check(&anonymous.delete_key("gw-1").await, "no token");
                check(&authed.delete_key("gw-1").await, "read token");
                check(&admin.delete_key("no-such-device").await, "unknown device");
            }
            other => panic!("method {other} is documented but not exercised"),
        }
    }
    server.stop().await;
}

both_stores!(every_documented_operation_answers_a_documented_status,);
