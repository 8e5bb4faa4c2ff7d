//! Unpinning and re-keying devices while the collector runs, over a real socket: the admin token
//! gate, enrollment after an unpin, the old key refused after a re-key, what a leaked enrollment
//! token can and cannot do, bad input refused with a reason and nothing changed, key changes
//! ordered with reports in the writer's one batch, and a change that survives kill -9.

#[macro_use]
mod common;

use axum::body::Bytes;
use base64::Engine as _;
use common::*;
use hyper::Method;
use shoal_collector::ingest::{self, Enrollment};
use shoal_collector::keys::KeyChange;
use shoal_collector::store::{Outcome, Write};
use shoal_collector::Config;
use shoal_proto::{KeyId, Status};

const COMMIT_A: &str = "aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa";

/// Posts `n` reports of `device` with the enrollment token, each accepted; returns the bodies.
async fn report_with_token(server: &TestServer, device: &mut Device, n: usize) -> Vec<Vec<u8>> {
    let mut bodies = Vec::new();
    for _ in 0..n {
        let body = device.next(Status::Converged, Some(COMMIT_A));
        accepted(server, body.clone(), Some(ENROLL_TOKEN)).await;
        bodies.push(body);
    }
    bodies
}

/// The value of the sample `name` (with its labels) in the Prometheus text.
fn sample(metrics: &str, name: &str) -> u64 {
    metrics
        .lines()
        .find_map(|l| l.strip_prefix(name)?.strip_prefix(' ')?.parse().ok())
        .unwrap_or_else(|| panic!("no sample {name} in\n{metrics}"))
}

async fn metrics(server: &TestServer) -> String {
    server.client().get("/metrics").await.text()
}

fn key_changes(metrics: &str, action: &str, result: &str) -> u64 {
    sample(
        metrics,
        &format!("shoal_admin_key_changes_total{{action=\"{action}\",result=\"{result}\"}}"),
    )
}

/// The OpenSSH public key line for `key` (what `shoal-agent keygen` and ssh-keygen print).
fn openssh_line(key: &KeyId) -> String {
    let raw = key.verifying_key().unwrap().to_bytes();
    let mut blob = Vec::new();
    blob.extend(11u32.to_be_bytes());
    blob.extend(b"ssh-ed25519");
    blob.extend(32u32.to_be_bytes());
    blob.extend(raw);
    format!(
        "ssh-ed25519 {} operator@laptop",
        base64::engine::general_purpose::STANDARD.encode(blob)
    )
}

async fn admin_endpoints_need_an_admin_token_and_change_nothing_without_one(backend: Backend) {
    let dir = TestStore::fresh(backend);
    let server = TestServer::start(&dir, config_with_tokens()).await;
    let mut gw = Device::new("gw-1", 1);
    report_with_token(&server, &mut gw, 1).await;
    let other = Device::new("gw-1", 2);
    let before = snapshot(&server.state, "gw-1");

    let anonymous = Client::new(server.addr);
    let reader = server.client();
    let stranger = Client {
        bearer: Some("not-a-token-0123456789".to_owned()),
        ..Client::new(server.addr)
    };
    let enroller = Client {
        bearer: Some(ENROLL_TOKEN.to_owned()),
        ..Client::new(server.addr)
    };
    for (client, status, code, text) in [
        (&anonymous, 401, "unauthorized", "--admin-token-file"),
        (&reader, 403, "forbidden", "read tokens do not grant admin"),
        (&stranger, 403, "forbidden", "not an admin token"),
        (&enroller, 403, "forbidden", "not an admin token"),
    ] {
        let resp = client.delete_key("gw-1").await;
        resp.assert_rejected(status, code, text);
        let resp = client.put_key("gw-1", other.key_id().as_str()).await;
        resp.assert_rejected(status, code, text);
        if status == 401 {
            assert_eq!(resp.headers["www-authenticate"], "Bearer");
        }
        assert_eq!(snapshot(&server.state, "gw-1"), before, "{code}");
    }
    let m = metrics(&server).await;
    assert_eq!(sample(&m, "shoal_admin_unauthorized_total"), 8, "{m}");
    for action in ["unpin", "rekey"] {
        for result in ["changed", "unchanged", "refused"] {
            assert_eq!(key_changes(&m, action, result), 0, "{m}");
        }
    }
    // An admin token reads too.
    let resp = server.admin().get("/api/v1/devices/gw-1").await;
    assert_eq!(resp.status, 200, "{}", resp.text());
    assert_eq!(resp.json()["pinned_key_id"], gw.key_id().as_str());
    server.stop().await;

    // Without --admin-token-file the endpoints are off, whatever the token.
    let dir = TestStore::fresh(backend);
    let config = Config {
        admin_tokens: None,
        ..config_with_tokens()
    };
    let server = TestServer::start(&dir, config).await;
    let mut gw = Device::new("gw-1", 1);
    report_with_token(&server, &mut gw, 1).await;
    let before = snapshot(&server.state, "gw-1");
    for client in [server.admin(), server.client()] {
        client.delete_key("gw-1").await.assert_rejected(
            403,
            "admin_disabled",
            "--admin-token-file",
        );
    }
    assert_eq!(snapshot(&server.state, "gw-1"), before);
    server.stop().await;
}

async fn unpin_lets_the_device_enroll_again_with_a_token_and_in_no_other_way(backend: Backend) {
    let dir = TestStore::fresh(backend);
    let server = TestServer::start(&dir, config_with_tokens()).await;
    let mut gw = Device::new("gw-1", 1);
    report_with_token(&server, &mut gw, 3).await;
    let old_key = gw.key_id().to_string();

    let resp = server.admin().delete_key("gw-1").await;
    assert_eq!(resp.status, 200, "{}", resp.text());
    assert_eq!(
        resp.json(),
        serde_json::json!({"device_id": "gw-1", "key_id": null, "previous_key_id": old_key, "changed": true})
    );
    assert_eq!(server.state.store.pinned_key("gw-1").unwrap(), None);
    assert_eq!(server.state.store.key_owner(&old_key).unwrap(), None);
    // The device's state and history stay; only the pin went.
    let device = server.client().get("/api/v1/devices/gw-1").await.json();
    assert_eq!(device["pinned_key_id"], serde_json::Value::Null, "{device}");
    assert_eq!(device["key_id"], old_key.as_str());
    assert_eq!(device["sequence"], 3);
    assert_eq!(
        server.client().get("/api/v1/summary").await.json()["total"],
        1
    );

    // Unpinned, even the old key needs a token now.
    rejected(
        &server,
        "gw-1",
        gw.next(Status::Converged, None),
        None,
        (403, "unknown_key", "enrollment token"),
    )
    .await;
    // Unpinning again changes nothing.
    let resp = server.admin().delete_key("gw-1").await;
    assert_eq!(resp.status, 200, "{}", resp.text());
    assert_eq!(resp.json()["changed"], false);

    // The device was re-imaged: a new key, whose sequence starts again at 1, enrolls with the token.
    let mut fresh = Device::new("gw-1", 2);
    let first = fresh.next(Status::Applying, None);
    assert_enrolls(&server, &fresh, first).await;
    let history = server.client().get("/api/v1/devices/gw-1/history").await;
    assert_eq!(history.json()["history"].as_array().unwrap().len(), 4);
    // From now on the old key is refused, token or not.
    rejected(
        &server,
        "gw-1",
        gw.next(Status::Converged, None),
        Some(ENROLL_TOKEN),
        (403, "key_mismatch", "pinned to key"),
    )
    .await;

    let m = metrics(&server).await;
    assert_eq!(key_changes(&m, "unpin", "changed"), 1, "{m}");
    assert_eq!(key_changes(&m, "unpin", "unchanged"), 1, "{m}");
    assert_eq!(sample(&m, "shoal_enrollments_total"), 2, "{m}");
    server.stop().await;
}

async fn rekey_refuses_the_old_key_with_a_reason_and_accepts_the_new_one_without_a_token(
    backend: Backend,
) {
    let dir = TestStore::fresh(backend);
    let server = TestServer::start(&dir, config_with_tokens()).await;
    let mut gw = Device::new("gw-1", 1);
    report_with_token(&server, &mut gw, 2).await;
    let mut new = Device::new("gw-1", 2);

    let resp = server.admin().put_key("gw-1", new.key_id().as_str()).await;
    assert_eq!(resp.status, 200, "{}", resp.text());
    assert_eq!(
        resp.json(),
        serde_json::json!({
            "device_id": "gw-1",
            "key_id": new.key_id().as_str(),
            "previous_key_id": gw.key_id().as_str(),
            "changed": true
        })
    );
    let device = server.client().get("/api/v1/devices/gw-1").await.json();
    assert_eq!(device["pinned_key_id"], new.key_id().as_str());
    assert_eq!(device["key_id"], gw.key_id().as_str(), "until it reports");

    // Reports signed with the old key: refused, saying which key is pinned and which signed.
    for token in [None, Some(ENROLL_TOKEN)] {
        let j = rejected(
            &server,
            "gw-1",
            gw.next(Status::Converged, None),
            token,
            (403, "key_mismatch", "pinned to key"),
        )
        .await;
        let error = j["error"].as_str().unwrap();
        assert!(error.contains(new.key_id().as_str()), "{error}");
        assert!(
            error.contains(&format!("signed by {}", gw.key_id())),
            "{error}"
        );
    }
    // The new key reports without a token, from its own sequence 1.
    let resp = accepted(&server, new.next(Status::Converged, Some(COMMIT_A)), None).await;
    assert_eq!(resp.json()["enrolled"], false);
    let device = server.client().get("/api/v1/devices/gw-1").await.json();
    assert_eq!(device["key_id"], new.key_id().as_str());

    // The same key again: nothing to do. An OpenSSH line is accepted as well.
    let resp = server.admin().put_key("gw-1", new.key_id().as_str()).await;
    assert_eq!(resp.status, 200, "{}", resp.text());
    assert_eq!(resp.json()["changed"], false);
    let third = Device::new("gw-1", 3);
    let resp = server
        .admin()
        .put_key("gw-1", &openssh_line(&third.key_id()))
        .await;
    assert_eq!(resp.status, 200, "{}", resp.text());
    assert_eq!(resp.json()["key_id"], third.key_id().as_str());
    assert_eq!(
        server.state.store.key_owner(new.key_id().as_str()).unwrap(),
        None,
        "a replaced key is free"
    );

    let m = metrics(&server).await;
    assert_eq!(key_changes(&m, "rekey", "changed"), 2, "{m}");
    assert_eq!(key_changes(&m, "rekey", "unchanged"), 1, "{m}");
    server.stop().await;
}

async fn a_key_pinned_again_cannot_replay_its_old_reports(backend: Backend) {
    let dir = TestStore::fresh(backend);
    let server = TestServer::start(&dir, config_with_tokens()).await;
    let mut gw = Device::new("gw-1", 1);
    let old = report_with_token(&server, &mut gw, 3).await;

    // Unpinned, then the same key enrolls again: its old reports are still replays.
    assert_eq!(server.admin().delete_key("gw-1").await.status, 200);
    let j = rejected(
        &server,
        "gw-1",
        old[1].clone(),
        Some(ENROLL_TOKEN),
        (409, "replayed_sequence", "not after"),
    )
    .await;
    assert_eq!(j["last_sequence"], 3);
    report_with_token(&server, &mut gw, 1).await;

    // Re-keyed to another key that reports, then back: the old key's floor still holds.
    let mut other = Device::new("gw-1", 2);
    let resp = server
        .admin()
        .put_key("gw-1", other.key_id().as_str())
        .await;
    assert_eq!(resp.status, 200, "{}", resp.text());
    accepted(&server, other.next(Status::Converged, None), None).await;
    let resp = server.admin().put_key("gw-1", gw.key_id().as_str()).await;
    assert_eq!(resp.status, 200, "{}", resp.text());
    let j = rejected(
        &server,
        "gw-1",
        old[2].clone(),
        None,
        (409, "replayed_sequence", "not after"),
    )
    .await;
    assert_eq!(j["last_sequence"], 4);
    accepted(&server, gw.next(Status::Converged, None), None).await;
    server.stop().await;
}

async fn a_leaked_enrollment_token_enrolls_new_ids_only(backend: Backend) {
    let dir = TestStore::fresh(backend);
    let server = TestServer::start(&dir, config_with_tokens()).await;
    let mut gw = Device::new("gw-1", 1);
    report_with_token(&server, &mut gw, 1).await;
    let mut pre = Device::new("gw-pre", 2);
    server
        .state
        .store
        .register("gw-pre", &pre.key_id())
        .unwrap();

    // The attacker holds a valid token and a key of their own.
    let mut attacker = Device::new("gw-1", 66);
    attacker.sequence = 1000;
    rejected(
        &server,
        "gw-1",
        attacker.next(Status::Converged, None),
        Some(ENROLL_TOKEN),
        (403, "key_mismatch", "pinned to key"),
    )
    .await;
    let mut attacker_pre = Device::new("gw-pre", 66);
    rejected(
        &server,
        "gw-pre",
        attacker_pre.next(Status::Converged, None),
        Some(ENROLL_TOKEN),
        (403, "key_mismatch", "pinned to key"),
    )
    .await;
    // A report signed by a real device's key cannot be forged without that key: only its own.
    // What the token does allow: pinning the attacker's key to an id nobody holds yet.
    let mut rogue = Device::new("gw-rogue", 66);
    let resp = accepted(
        &server,
        rogue.next(Status::Converged, None),
        Some(ENROLL_TOKEN),
    )
    .await;
    assert_eq!(resp.json()["enrolled"], true);
    // ...and that key then speaks for gw-rogue only.
    rejected(
        &server,
        "gw-1",
        attacker.next(Status::Converged, None),
        Some(ENROLL_TOKEN),
        (403, "key_mismatch", "pinned to key"),
    )
    .await;

    // Unpinning gw-rogue while the token is still valid lets the attacker straight back in:
    // rotate the token first.
    assert_eq!(server.admin().delete_key("gw-rogue").await.status, 200);
    accepted(
        &server,
        rogue.next(Status::Converged, None),
        Some(ENROLL_TOKEN),
    )
    .await;
    let state = server.stop().await;
    drop(state);

    // Rotated: the collector restarts with a new enrollment token on the same store.
    let rotated = Config {
        enroll_tokens: Some(shoal_collector::auth::Tokens::new([
            "enroll-rotated-0123456789abcdef",
        ])),
        ..config_with_tokens()
    };
    let server = TestServer::start(&dir, rotated).await;
    assert_eq!(server.admin().delete_key("gw-rogue").await.status, 200);
    rejected(
        &server,
        "gw-rogue",
        rogue.next(Status::Converged, None),
        Some(ENROLL_TOKEN),
        (403, "bad_enrollment_token", "not valid"),
    )
    .await;
    // Enrolled devices need no token: they keep reporting.
    accepted(&server, gw.next(Status::Converged, None), None).await;
    accepted(&server, pre.next(Status::Converged, None), None).await;
    server.stop().await;
}

async fn bad_admin_input_is_a_4xx_with_a_reason_and_changes_nothing(backend: Backend) {
    let dir = TestStore::fresh(backend);
    let server = TestServer::start(&dir, config_with_tokens()).await;
    let mut one = Device::new("gw-1", 1);
    let mut two = Device::new("gw-2", 2);
    report_with_token(&server, &mut one, 1).await;
    report_with_token(&server, &mut two, 1).await;
    let spare = Device::new("gw-3", 3);
    let admin = server.admin();
    let put = |device: &'static str, body: Vec<u8>| {
        let admin = admin.clone();
        async move {
            admin
                .request(
                    Method::PUT,
                    &format!("/api/v1/devices/{device}/key"),
                    &[],
                    Bytes::from(body),
                )
                .await
        }
    };
    let json = |v: serde_json::Value| v.to_string().into_bytes();
    let cases: Vec<(&str, Resp, (u16, &str, &str))> = vec![
        (
            "short key",
            put("gw-1", json(serde_json::json!({"key": "ed25519:AAAA"}))).await,
            (400, "bad_key", "not standard base64"),
        ),
        (
            "rsa key",
            put(
                "gw-1",
                json(serde_json::json!({"key": "ssh-rsa AAAAB3Nza"})),
            )
            .await,
            (400, "bad_key", "does not start with"),
        ),
        (
            "not json",
            put("gw-1", b"ed25519:xyz".to_vec()).await,
            (400, "bad_request", "body is not"),
        ),
        (
            "no key",
            put("gw-1", b"{}".to_vec()).await,
            (400, "bad_request", "missing field"),
        ),
        (
            "unknown field",
            put(
                "gw-1",
                json(serde_json::json!({"key": spare.key_id().as_str(), "force": true})),
            )
            .await,
            (400, "bad_request", "unknown field"),
        ),
        (
            "oversized",
            put("gw-1", vec![b' '; 5000]).await,
            (400, "bad_request", "over 4096 bytes"),
        ),
        (
            "key of another device",
            admin.put_key("gw-1", two.key_id().as_str()).await,
            (409, "key_in_use", "pinned to device gw-2"),
        ),
        (
            "unknown device",
            admin.put_key("gw-9", spare.key_id().as_str()).await,
            (404, "not_found", "unknown to this collector"),
        ),
        (
            "unpin unknown device",
            admin.delete_key("gw-9").await,
            (404, "not_found", "unknown to this collector"),
        ),
    ];
    let before_one = snapshot(&server.state, "gw-1");
    let before_two = snapshot(&server.state, "gw-2");
    for (case, resp, (status, code, text)) in &cases {
        assert_eq!(resp.status.as_u16(), *status, "{case}: {}", resp.text());
        resp.assert_rejected(*status, code, text);
    }
    assert_eq!(snapshot(&server.state, "gw-1"), before_one);
    assert_eq!(snapshot(&server.state, "gw-2"), before_two);
    assert_eq!(server.state.store.pinned_key("gw-9").unwrap(), None);
    assert_eq!(
        server
            .state
            .store
            .key_owner(spare.key_id().as_str())
            .unwrap(),
        None
    );
    let m = metrics(&server).await;
    assert_eq!(key_changes(&m, "rekey", "refused"), 8, "{m}");
    assert_eq!(key_changes(&m, "unpin", "refused"), 1, "{m}");
    assert_eq!(key_changes(&m, "rekey", "changed"), 0, "{m}");
    server.stop().await;
}

async fn key_changes_and_reports_in_one_batch_see_each_other_in_order(backend: Backend) {
    let dir = TestStore::fresh(backend);
    let store = dir.open();
    let mut old = Device::new("gw-1", 1);
    let mut new = Device::new("gw-1", 2);
    let verified = |body: Vec<u8>| ingest::verify(&body).unwrap();
    store
        .ingest(
            verified(old.next(Status::Converged, None)),
            Enrollment::Valid,
            10,
        )
        .unwrap();
    let report = |body: Vec<u8>, enrollment| Write::Report {
        verified: verified(body),
        enrollment,
        now: 11,
    };
    let key = |change| Write::Key {
        device_id: "gw-1".to_owned(),
        change,
    };
    let outcomes = store.write_batch(vec![
        report(old.next(Status::Converged, None), Enrollment::Absent),
        key(KeyChange::Pin(new.key_id())),
        report(old.next(Status::Converged, None), Enrollment::Absent),
        report(new.next(Status::Converged, None), Enrollment::Absent),
        key(KeyChange::Unpin),
        report(new.next(Status::Converged, None), Enrollment::Absent),
        report(new.next(Status::Failed, None), Enrollment::Valid),
        key(KeyChange::Unpin),
    ]);
    let summary: Vec<String> = outcomes
        .iter()
        .map(|o| match o {
            Outcome::Report(Ok(a)) => format!("report {} ok enrolled={}", a.sequence, a.enrolled),
            Outcome::Report(Err(e)) => format!("report refused: {}", reason(e)),
            Outcome::Key(Ok(k)) => format!("key ok changed={}", k.changed),
            Outcome::Key(Err(e)) => format!("key refused: {e}"),
        })
        .collect();
    assert_eq!(
        summary,
        [
            "report 2 ok enrolled=false",
            "key ok changed=true",
            "report refused: key_mismatch",
            "report 1 ok enrolled=false",
            "key ok changed=true",
            "report refused: unknown_key",
            "report 3 ok enrolled=true",
            "key ok changed=true",
        ]
    );
    // All of it is in the store, as one batch left it.
    assert_eq!(store.pinned_key("gw-1").unwrap(), None);
    assert_eq!(store.key_owner(new.key_id().as_str()).unwrap(), None);
    assert_eq!(store.key_owner(old.key_id().as_str()).unwrap(), None);
    let record = store.device("gw-1").unwrap().unwrap();
    assert_eq!(record.report.sequence, 3);
    assert_eq!(record.report.status, Status::Failed);
    assert_eq!(store.history("gw-1").unwrap().len(), 4);
    assert_eq!(store.summary(11, 180).unwrap().total, 1);
}

fn reason(e: &shoal_collector::store::IngestError) -> &'static str {
    match e {
        shoal_collector::store::IngestError::Rejected(r) => r.reason_code(),
        shoal_collector::store::IngestError::Store(_) => "store",
    }
}

async fn the_real_binary_rekeys_while_running_and_the_change_survives_kill_9(backend: Backend) {
    let tmp = TestStore::fresh(backend);
    let data = tmp.flags();
    let enroll = tmp.path().join("enroll-tokens");
    let admin = tmp.path().join("admin-tokens");
    std::fs::write(&enroll, format!("{ENROLL_TOKEN}\n")).unwrap();
    std::fs::write(&admin, format!("# operators\n{ADMIN_TOKEN}\n")).unwrap();

    // A short admin token is bad configuration, named.
    let short = tmp.path().join("short");
    std::fs::write(&short, "admin\n").unwrap();
    let out = std::process::Command::new(bin())
        .args(["serve", "--listen", "127.0.0.1:0"])
        .args(&data.0)
        .arg("--admin-token-file")
        .arg(&short)
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains(short.to_str().unwrap()), "{err}");

    let args = [
        "--enroll-token-file",
        enroll.to_str().unwrap(),
        "--admin-token-file",
        admin.to_str().unwrap(),
    ];
    let server = start_binary(&data, &args, &tmp.path().join("log1"));
    let client = Client {
        bearer: Some(ADMIN_TOKEN.to_owned()),
        ..Client::new(server.addr())
    };
    let mut gw = Device::new("gw-1", 1);
    let mut new = Device::new("gw-1", 2);
    let resp = client
        .post_report(gw.next(Status::Converged, None), Some(ENROLL_TOKEN))
        .await;
    assert_eq!(resp.status, 200, "{}", resp.text());
    let resp = client.put_key("gw-1", new.key_id().as_str()).await;
    assert_eq!(resp.status, 200, "{}", resp.text());
    // A 200 means durable: kill -9 right after it.
    let log = server.log();
    server.signal(libc::SIGKILL);
    assert!(log.contains("admin: device key pinned"), "{log}");
    assert!(
        log.contains("action=\"rekey\"") || log.contains("action=rekey"),
        "{log}"
    );
    assert!(
        !log.contains(ADMIN_TOKEN) && !log.contains(ENROLL_TOKEN),
        "{log}"
    );

    let server = start_binary(&data, &args, &tmp.path().join("log2"));
    let client = Client {
        bearer: Some(ADMIN_TOKEN.to_owned()),
        ..Client::new(server.addr())
    };
    let device = client.get("/api/v1/devices/gw-1").await.json();
    assert_eq!(device["pinned_key_id"], new.key_id().as_str(), "{device}");
    client
        .post_report(gw.next(Status::Converged, None), Some(ENROLL_TOKEN))
        .await
        .assert_rejected(403, "key_mismatch", "pinned to key");
    let resp = client
        .post_report(new.next(Status::Converged, None), None)
        .await;
    assert_eq!(resp.status, 200, "{}", resp.text());
    // Without a token: 401, and the pin stays.
    Client::new(server.addr())
        .delete_key("gw-1")
        .await
        .assert_rejected(401, "unauthorized", "--admin-token-file");
    let device = client.get("/api/v1/devices/gw-1").await.json();
    assert_eq!(device["pinned_key_id"], new.key_id().as_str());
    assert!(server.terminate().success());
}

both_stores!(
    admin_endpoints_need_an_admin_token_and_change_nothing_without_one,
    unpin_lets_the_device_enroll_again_with_a_token_and_in_no_other_way,
    rekey_refuses_the_old_key_with_a_reason_and_accepts_the_new_one_without_a_token,
    a_key_pinned_again_cannot_replay_its_old_reports,
    a_leaked_enrollment_token_enrolls_new_ids_only,
    bad_admin_input_is_a_4xx_with_a_reason_and_changes_nothing,
    key_changes_and_reports_in_one_batch_see_each_other_in_order,
    the_real_binary_rekeys_while_running_and_the_change_survives_kill_9,
);
