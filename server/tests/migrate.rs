//! `shoal-collector migrate`: an embedded store filled through the real API (signed reports,
//! enrollment, a pre-registration, an operator's re-key, a history longer than the kept 100) is
//! copied into an empty PostgreSQL database; a collector started on the copy answers every read
//! the same, still refuses old sequences and the retired key, and accepts new reports. A second
//! copy into the now non-empty database is refused and changes nothing.

mod common;

use common::*;
use shoal_proto::Status;
use shoal_testkit::PgCluster;

fn without_now(mut v: serde_json::Value) -> serde_json::Value {
    v.as_object_mut().unwrap().remove("now");
    v
}

fn token_args(dir: &std::path::Path) -> Vec<String> {
    let mut args = Vec::new();
    for (flag, token) in [
        ("--token-file", READ_TOKEN),
        ("--enroll-token-file", ENROLL_TOKEN),
        ("--admin-token-file", ADMIN_TOKEN),
    ] {
        let file = dir.join(flag.trim_start_matches("--"));
        std::fs::write(&file, format!("{token}\n")).unwrap();
        args.push(flag.to_owned());
        args.push(file.to_str().unwrap().to_owned());
    }
    args
}

/// Every read the API offers about the fleet, as JSON (the summary without its clock).
async fn everything(client: &Client, ids: &[String]) -> Vec<serde_json::Value> {
    let mut out = vec![
        without_now(client.get("/api/v1/summary").await.json()),
        client.get("/api/v1/devices?limit=10000").await.json(),
    ];
    for id in ids {
        let device = client.get(&format!("/api/v1/devices/{id}")).await;
        let history = client.get(&format!("/api/v1/devices/{id}/history")).await;
        out.push(serde_json::json!({
            "id": id,
            "device": device.json(),
            "status": device.status.as_u16(),
            "history": history.json(),
        }));
    }
    out
}

fn migrate(from: &std::path::Path, to: &str) -> std::process::Output {
    std::process::Command::new(bin())
        .arg("migrate")
        .arg("--from")
        .arg(from)
        .args(["--to", to])
        .output()
        .unwrap()
}

const HALTED: &str = "c0ffee00c0ffee00c0ffee00c0ffee00c0ffee00";
const RESUMED: &str = "f00df00df00df00df00df00df00df00df00df00d";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]

async fn a_sled_store_migrated_to_postgres_answers_the_same() {
    let Some(cluster) = PgCluster::shared() else {
        return;
    };
    let url = cluster.create_database();
    let tmp = tempfile::tempdir().unwrap();
    let data = tmp.path().join("data");
    let sled = StoreFlags(vec!["--data".into(), data.to_str().unwrap().into()]);
    let args = token_args(tmp.path());
    let args: Vec<&str> = args.iter().map(String::as_str).collect();

    // A device pre-registered that never reports: its pin must move too.
    let quiet = Device::new("gw-quiet", 900);
    let out = register(&sled, "gw-quiet", quiet.key_id().as_str());
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );

    let server = start_binary(&sled, &args, &tmp.path().join("sled.log"));
    let client = Client {
        bearer: Some(ADMIN_TOKEN.to_owned()),
        ..Client::new(server.addr())
    };
    let mut devices: Vec<Device> = (0..12)
        .map(|i| Device::new(&format!("gw-{i:02}"), 100 + i))
        .collect();
    for (i, d) in devices.iter_mut().enumerate() {
        for round in 0..3 {
            let status = Status::ALL[(i + round) % 7];
            let commit = ["abcd1234", "beef5678"].get(i % 3).copied();
            let token = (round == 0).then_some(ENROLL_TOKEN);
            let resp = client.post_report(d.next(status, commit), token).await;
            assert_eq!(resp.status, 200, "{}", resp.text());
        }
    }
    // A long history: the store keeps the newest 100 of 105 (slots 5..105).
    for _ in 0..102 {
        let resp = client
            .post_report(devices[0].next(Status::Converged, Some("abcd1234")), None)
            .await;
        assert_eq!(resp.status, 200, "{}", resp.text());
    }
    // An operator re-keys gw-01: its old key is retired with its last sequence as a floor.
    let old_key = Device::new("gw-01", 101);
    let mut rekeyed = Device::new("gw-01", 7001);
    let resp = client.put_key("gw-01", rekeyed.key_id().as_str()).await;
    assert_eq!(resp.status, 200, "{}", resp.text());
    let resp = client
        .post_report(rekeyed.next(Status::Converged, Some("beef5678")), None)
        .await;
    assert_eq!(resp.status, 200, "{}", resp.text());

    // Rollouts: reports with a target, a halted commit and a resumed one (serial 3).
    for (i, d) in devices.iter_mut().enumerate().skip(2).take(4) {
        let mut r = d.report(Status::ALL[i % 3], Some("abcd1234"));
        r.target = Some(shoal_proto::Target {
            commit: HALTED.to_owned(),
            wave: Some(["canary", "all"][i % 2].to_owned()),
        });
        let resp = client.post_report(d.seal(&r), None).await;
        assert_eq!(resp.status, 200, "{}", resp.text());
    }
    for (commit, action) in [(HALTED, "halt"), (RESUMED, "halt"), (RESUMED, "resume")] {
        let resp = client
            .request(
                hyper::Method::POST,
                &format!("/api/v1/rollouts/{commit}/{action}"),
                &[],
                axum::body::Bytes::from_static(br#"{"reason": "bad endpoint"}"#),
            )
            .await;
        assert_eq!(resp.status, 200, "{}", resp.text());
    }
    let rollouts_before = client.get("/api/v1/rollouts").await.json();
    assert_eq!(rollouts_before["halts_serial"], 3, "{rollouts_before}");
    let key_before = client.get("/api/v1/collector").await.json()["key"].clone();

    let mut ids: Vec<String> = devices.iter().map(|d| d.id.clone()).collect();
    ids.push("gw-quiet".to_owned());
    ids.push("gw-missing".to_owned());
    let before = everything(&client, &ids).await;
    assert_eq!(before[0]["total"], 12, "{}", before[0]);
    assert_eq!(
        before[2]["history"]["history"].as_array().unwrap().len(),
        100
    );

    // While the sled collector runs, its store is locked: migrate says to stop it first.
    let out = migrate(&data, &url);
    assert_eq!(out.status.code(), Some(1));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("stop its collector first"), "{err}");
    assert!(server.terminate().success());

    let out = migrate(&data, &url);
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{err}");
    for line in [
        "devices                               12          12",
        "registered, never reported             1           1",
        "pinned keys                           13          13",
        // gw-00: its newest 100; gw-01: 3 + 1 from its new key; 10 others: 3 each, and 4 of
        // them one report about a rollout.
        "history entries                      138         138",
        "retired keys                           1           1",
        "fleet total (counters)                12          12",
        "verified: the copy holds every row of the store; committed",
    ] {
        assert!(err.contains(line), "{line:?} not in:\n{err}");
    }

    let pg = StoreFlags(vec!["--store".into(), url.clone()]);
    // The replicas sign with the embedded store's key, which devices pinned.
    let key_file = data.join("collector.key");
    let mut pg_args = args.clone();
    pg_args.extend(["--key-file", key_file.to_str().unwrap()]);
    let server = start_binary(&pg, &pg_args, &tmp.path().join("pg.log"));
    let client = Client {
        bearer: Some(ADMIN_TOKEN.to_owned()),
        ..Client::new(server.addr())
    };
    let after = everything(&client, &ids).await;
    assert_eq!(after, before);
    // The halt list came along with its serial, the rollout counters with the records.
    assert_eq!(client.get("/api/v1/rollouts").await.json(), rollouts_before);
    assert_eq!(
        client.get("/api/v1/collector").await.json()["key"],
        key_before
    );

    // Sequences and pins came along: old sequences are replays, the retired key is refused,
    // the pre-registered key reports without a token, and new reports are accepted.
    let mut old = devices[3].report(Status::Converged, None);
    old.sequence = 2;
    client
        .post_report(devices[3].seal(&old), None)
        .await
        .assert_rejected(409, "replayed_sequence", "sequence 2");
    let mut retired = old_key;
    retired.sequence = 50;
    client
        .post_report(retired.next(Status::Converged, None), Some(ENROLL_TOKEN))
        .await
        .assert_rejected(403, "key_mismatch", "pinned to key");
    let mut quiet = quiet;
    let resp = client
        .post_report(quiet.next(Status::Converged, None), None)
        .await;
    assert_eq!(resp.status, 200, "{}", resp.text());
    let resp = client
        .post_report(devices[3].next(Status::Failed, Some("beef5678")), None)
        .await;
    assert_eq!(resp.status, 200, "{}", resp.text());
    let summary = client.get("/api/v1/summary").await.json();
    assert_eq!(summary["total"], 13, "{summary}");
    assert!(server.terminate().success());

    // The database is not empty any more: a second copy is refused and leaves it alone.
    let db = url.split('/').nth(3).unwrap().split('?').next().unwrap();
    let rows = cluster.psql(db, "SELECT count(*) FROM shoal_history");
    let out = migrate(&data, &url);
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{err}");
    assert!(err.contains("is not empty (13 devices"), "{err}");
    assert!(
        err.contains("migrate copies only into an empty database"),
        "{err}"
    );
    assert_eq!(cluster.psql(db, "SELECT count(*) FROM shoal_history"), rows);

    // Not a store: bad usage, and nothing is created there.
    let empty = tmp.path().join("empty");
    std::fs::create_dir(&empty).unwrap();
    let out = migrate(&empty, &url);
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("not an embedded store"));
    assert_eq!(std::fs::read_dir(&empty).unwrap().count(), 0);
}
