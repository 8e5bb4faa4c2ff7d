//! Fleet queries over many devices: 10,000 devices' reports through `app()` (no socket, for speed),
//! then the summary, metrics, filters and the fleet page must match exactly what was sent; history
//! stays bounded; staleness follows the collector's clock.

#[macro_use]
mod common;

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use axum::body::{Body, Bytes};
use common::*;
use http_body_util::BodyExt as _;
use hyper::{Request, StatusCode};
use shoal_collector::{app, AppState, Clock, Config};
use shoal_proto::Status;
use tower::ServiceExt as _;

const COMMITS: [&str; 3] = [
    "1111111111111111111111111111111111111111",
    "2222222222222222222222222222222222222222",
    "3333333333333333333333333333333333333333",
];

struct Fleet {
    router: axum::Router,
    state: Arc<AppState>,
    clock: Arc<AtomicU64>,
}

impl Fleet {
    fn new(store: &TestStore) -> Fleet {
        let clock = Arc::new(AtomicU64::new(1_000));
        let config = Config {
            clock: Clock::Manual(clock.clone()),
            ..config_with_tokens()
        };
        let state = AppState::shared(store.open(), config).unwrap();
        Fleet {
            router: app(state.clone()),
            state,
            clock,
        }
    }

    async fn call(&self, req: Request<Body>) -> (StatusCode, Bytes) {
        let resp = self.router.clone().oneshot(req).await.unwrap();
        let status = resp.status();
        (status, resp.into_body().collect().await.unwrap().to_bytes())
    }

    async fn get(&self, path: &str) -> serde_json::Value {
        let req = Request::get(path)
            .header("authorization", format!("Bearer {READ_TOKEN}"))
            .body(Body::empty())
            .unwrap();
        let (status, body) = self.call(req).await;
        assert_eq!(status, 200, "{path}: {}", String::from_utf8_lossy(&body));
        serde_json::from_slice(&body).unwrap()
    }

    async fn get_text(&self, path: &str) -> String {
        let req = Request::get(path)
            .header("authorization", format!("Bearer {READ_TOKEN}"))
            .body(Body::empty())
            .unwrap();
        let (status, body) = self.call(req).await;
        assert_eq!(status, 200, "{path}");
        String::from_utf8(body.to_vec()).unwrap()
    }

    /// Posts all bodies, 256 at a time (the group commit batches their fsyncs).
    async fn post_all(&self, bodies: Vec<(Vec<u8>, bool)>) {
        let mut pending = tokio::task::JoinSet::new();
        for (body, enroll) in bodies {
            if pending.len() >= 256 {
                pending.join_next().await.unwrap().unwrap();
            }
            let router = self.router.clone();
            pending.spawn(async move {
                let mut req = Request::post("/api/v1/reports");
                if enroll {
                    req = req.header("x-shoal-enroll", ENROLL_TOKEN);
                }
                let resp = router
                    .oneshot(req.body(Body::from(body)).unwrap())
                    .await
                    .unwrap();
                let status = resp.status();
                let body = resp.into_body().collect().await.unwrap().to_bytes();
                assert_eq!(status, 200, "{}", String::from_utf8_lossy(&body));
            });
        }
        while let Some(r) = pending.join_next().await {
            r.unwrap();
        }
    }
}

/// What device `i` reports in round one.
fn round_one(i: usize) -> (Status, Option<&'static str>, String) {
    let status = Status::ALL[i % Status::ALL.len()];
    let commit = (!i.is_multiple_of(10)).then_some(COMMITS[i % 3]);
    (status, commit, format!("s{}", i % 5))
}

async fn ten_thousand_devices_then_the_summary_matches_exactly(backend: Backend) {
    const N: usize = 10_000;
    let dir = TestStore::fresh(backend);
    let fleet = Fleet::new(&dir);
    let mut devices: Vec<Device> = (0..N)
        .map(|i| Device::new(&format!("dev-{i:05}"), i as u64 + 1))
        .collect();

    // Round one at t=1000: every device enrolls.
    let bodies = devices
        .iter_mut()
        .enumerate()
        .map(|(i, d)| {
            let (status, commit, site) = round_one(i);
            let mut r = d.report(status, commit);
            r.labels.insert("site".into(), site);
            (d.seal(&r), true)
        })
        .collect();
    fleet.post_all(bodies).await;

    // Round two at t=1100: every fourth device converges on COMMITS[0].
    fleet.clock.store(1_100, Ordering::Relaxed);
    let bodies = devices
        .iter_mut()
        .enumerate()
        .filter(|(i, _)| i.is_multiple_of(4))
        .map(|(i, d)| {
            let mut r = d.report(Status::Converged, Some(COMMITS[0]));
            r.labels.insert("site".into(), round_one(i).2);
            (d.seal(&r), false)
        })
        .collect();
    fleet.post_all(bodies).await;

    // The expected fleet, computed from what was sent.
    let mut by_status: BTreeMap<String, u64> = Status::ALL
        .iter()
        .map(|s| (s.as_str().to_owned(), 0))
        .collect();
    let mut by_commit: BTreeMap<String, u64> = BTreeMap::new();
    let mut no_commit = 0;
    let mut stale = 0;
    for i in 0..N {
        let (status, commit) = if i.is_multiple_of(4) {
            (Status::Converged, Some(COMMITS[0]))
        } else {
            let (s, c, _) = round_one(i);
            stale += 1; // last seen at 1000; at 1250 with 180 s that is stale
            (s, c)
        };
        *by_status.get_mut(status.as_str()).unwrap() += 1;
        match commit {
            Some(c) => *by_commit.entry(c.to_owned()).or_default() += 1,
            None => no_commit += 1,
        }
    }

    fleet.clock.store(1_250, Ordering::Relaxed);
    let summary = fleet.get("/api/v1/summary").await;
    assert_eq!(
        summary,
        serde_json::json!({
            "total": N,
            "by_status": by_status,
            "by_commit": by_commit,
            "no_commit": no_commit,
            "stale": stale,
            "stale_after_secs": 180,
            "now": 1250,
        })
    );
    assert_eq!(fleet.get("/api/v1/summary?stale=1000").await["stale"], 0);

    // Counters on disk agree with the ones in memory.
    let persisted = fleet.state.store.persisted_tally().unwrap();
    assert_eq!(
        persisted.summary(1250, 180),
        fleet.state.store.summary(1250, 180).unwrap()
    );

    let metrics = fleet.get_text("/metrics").await;
    assert!(
        metrics.contains(&format!("shoal_devices_total {N}\n")),
        "{metrics}"
    );
    assert!(
        metrics.contains(&format!("shoal_devices_stale {stale}\n")),
        "{metrics}"
    );
    assert!(metrics.contains(&format!(
        "shoal_devices{{status=\"converged\"}} {}\n",
        by_status["converged"]
    )));
    assert!(metrics.contains(&format!("shoal_reports_accepted_total {}\n", N + N / 4)));
    assert!(metrics.contains(&format!("shoal_enrollments_total {N}\n")));

    // Filters: status + label, paged; commit prefix; stale.
    let expect: Vec<String> = (0..N)
        .filter(|i| {
            !i.is_multiple_of(4) && round_one(*i).0 == Status::Failed && round_one(*i).2 == "s1"
        })
        .map(|i| format!("dev-{i:05}"))
        .collect();
    let mut got = Vec::new();
    let mut after = String::new();
    loop {
        let page = fleet
            .get(&format!(
                "/api/v1/devices?status=failed&label=site%3Ds1&limit=50{after}"
            ))
            .await;
        got.extend(
            page["devices"]
                .as_array()
                .unwrap()
                .iter()
                .map(|d| d["device_id"].as_str().unwrap().to_owned()),
        );
        match page["next_after"].as_str() {
            Some(next) => after = format!("&after={next}"),
            None => break,
        }
    }
    assert_eq!(got, expect);
    let on_commit_2 = fleet.get("/api/v1/devices?commit=2222&limit=10000").await;
    assert_eq!(
        on_commit_2["devices"].as_array().unwrap().len() as u64,
        by_commit[COMMITS[1]]
    );
    let stale_list = fleet.get("/api/v1/devices?stale=180&limit=10000").await;
    assert_eq!(
        stale_list["devices"].as_array().unwrap().len() as u64,
        stale
    );
    assert!(stale_list["devices"]
        .as_array()
        .unwrap()
        .iter()
        .all(|d| d["stale"] == true && d["last_seen"] == 1000));

    // The pages: the summary's counts (read from the tally, not a scan), the list's colours,
    // first rows and a link to the next page, the same filters as the API.
    let html = fleet.get_text("/").await;
    assert!(
        html.contains(&format!(r#"<span class="n" id="total">{N}</span>"#)),
        "{}",
        &html[..2000]
    );
    assert!(html.contains(&format!(r#"<span class="n" id="stale">{stale}</span>"#)));
    assert!(!html.contains("<script"));
    let list = fleet.get_text("/devices").await;
    assert!(list.contains(r#"<span class="s converged">converged</span>"#));
    assert!(list.contains("<code>dev-00000</code>"));
    assert!(list.contains(r#"<a id="next" href="/devices?after=dev-00499">"#));
    assert!(!list.contains("<script"));
    let failed_page = fleet
        .get_text("/devices?status=failed&label=site%3Ds1")
        .await;
    assert_eq!(failed_page.matches("<tr").count() - 1, expect.len());
}

async fn history_keeps_the_newest_hundred(backend: Backend) {
    let dir = TestStore::fresh(backend);
    let fleet = Fleet::new(&dir);
    let mut gw = Device::new("gw-1", 1);
    for n in 0..105 {
        let body = gw.next(Status::Converged, None);
        fleet.post_all(vec![(body, n == 0)]).await;
    }
    let history = fleet.get("/api/v1/devices/gw-1/history").await;
    let seqs: Vec<u64> = history["history"]
        .as_array()
        .unwrap()
        .iter()
        .map(|h| h["report"]["sequence"].as_u64().unwrap())
        .collect();
    assert_eq!(seqs, (6..=105).rev().collect::<Vec<_>>());
    let summary = fleet.get("/api/v1/summary").await;
    assert_eq!(summary["total"], 1);
    assert_eq!(summary["by_status"]["converged"], 1);
}

both_stores!(history_keeps_the_newest_hundred,);
both_stores!(
    multi_thread:
    ten_thousand_devices_then_the_summary_matches_exactly,
);
