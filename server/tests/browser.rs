//! The fleet pages in a real headless Chromium (Debian's `chromium`, driven over WebDriver by
//! `chromedriver`): the real collector binary, fed signed reports from devices in different
//! states, then the summary, the list with filters, a device page and the not-found page loaded
//! with the read token, at a desktop width and at a 390×844 phone width (no horizontal scrolling of
//! the page). Screenshots go to `target/screenshots/`. Without Chromium it skips loudly; under
//! `SHOAL_E2E=1` it fails.

#[macro_use]
mod common;

use std::net::{SocketAddr, TcpListener};
use std::os::unix::process::CommandExt as _;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use axum::body::Bytes;
use base64::Engine as _;
use common::*;
use hyper::Method;
use serde_json::{json, Value};
use shoal_proto::{Pending, Report, ResourceError, Status, Target, Timings};

const COMMIT_A: &str = "a1b2c3d4e5f60718293a4b5c6d7e8f9012345678";
const COMMIT_B: &str = "b7e15163a0c2d4e6f8091a2b3c4d5e6f70819203";

use shoal_testkit::HEADLESS_CHROMIUM_FLAGS as CHROMIUM_FLAGS;

/// `chromedriver` on a free loopback port, in a process group of its own so that the browsers it
/// starts are stopped with it (SIGKILL to that group, only it) even when the test panics.
struct ChromeDriver {
    child: Child,
    client: Client,
}

impl ChromeDriver {
    fn start(log: &Path) -> ChromeDriver {
        let port = TcpListener::bind("127.0.0.1:0")
            .and_then(|l| l.local_addr())
            .expect("a free port")
            .port();
        let child = Command::new("chromedriver")
            .arg(format!("--port={port}"))
            .arg(format!("--log-path={}", log.display()))
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .process_group(0)
            .spawn()
            .expect("start chromedriver");
        let addr: SocketAddr = ([127, 0, 0, 1], port).into();
        ChromeDriver {
            child,
            client: Client::new(addr),
        }
    }

    async fn wait_ready(&self) {
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            if let Ok(resp) = self
                .client
                .try_request(Method::GET, "/status", &[], Bytes::new())
                .await
            {
                if resp.json()["value"]["ready"] == true {
                    return;
                }
            }
            assert!(
                Instant::now() < deadline,
                "chromedriver did not get ready in 30 s"
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }
}

impl Drop for ChromeDriver {
    fn drop(&mut self) {
        // The group this test made: chromedriver and the Chromium processes it started.
        let group = self.child.id() as libc::pid_t;
        // SAFETY: kill(2) on a process group id we created; no memory is involved.
        unsafe { libc::kill(-group, libc::SIGKILL) };
        let _ = self.child.wait();
    }
}

/// One WebDriver session: a Chromium tab.
struct Browser {
    driver: Client,
    session: String,
    screenshots: PathBuf,
}

impl Browser {
    async fn open(driver: &ChromeDriver, profile: &Path, screenshots: PathBuf) -> Browser {
        let mut args: Vec<String> = CHROMIUM_FLAGS.iter().map(|f| f.to_string()).collect();
        args.push(format!("--user-data-dir={}", profile.display()));
        let caps = json!({"capabilities": {"alwaysMatch": {
            "browserName": "chrome",
            "goog:chromeOptions": {"binary": chromium(), "args": args},
        }}});
        let created = call(&driver.client, Method::POST, "/session", caps).await;
        let session = created["sessionId"]
            .as_str()
            .unwrap_or_else(|| panic!("no session id in {created}"))
            .to_owned();
        Browser {
            driver: driver.client.clone(),
            session,
            screenshots,
        }
    }

    async fn cmd(&self, method: Method, path: &str, body: Value) -> Value {
        let path = format!("/session/{}{path}", self.session);
        call(&self.driver, method, &path, body).await
    }

    /// A Chrome DevTools Protocol command through chromedriver.
    async fn cdp(&self, cmd: &str, params: Value) -> Value {
        self.cmd(
            Method::POST,
            "/goog/cdp/execute",
            json!({"cmd": cmd, "params": params}),
        )
        .await
    }

    async fn goto(&self, url: &str) {
        self.cmd(Method::POST, "/url", json!({ "url": url })).await;
    }

    async fn url(&self) -> String {
        let v = self.cmd(Method::GET, "/url", Value::Null).await;
        v.as_str().unwrap().to_owned()
    }

    /// Runs `script` (a function body) in the page and returns its value. The pages themselves
    /// have no script: this is the test reading them, as a person's eyes would.
    async fn eval(&self, script: &str) -> Value {
        self.cmd(
            Method::POST,
            "/execute/sync",
            json!({"script": script, "args": []}),
        )
        .await
    }

    async fn text(&self, css: &str) -> String {
        let v = self
            .eval(&format!(
                "const e = document.querySelector({}); return e ? e.innerText : null;",
                json!(css)
            ))
            .await;
        v.as_str()
            .unwrap_or_else(|| panic!("no element {css} on the page"))
            .to_owned()
    }

    /// The text of a device page's fact (the `<dd>` after the `<dt>` named `name`).
    async fn fact(&self, name: &str) -> String {
        let script = format!(
            "const dt = [...document.querySelectorAll('#latest dt')].find(d => d.innerText === {});
             return dt ? dt.nextElementSibling.innerText : null;",
            json!(name)
        );
        let v = self.eval(&script).await;
        v.as_str()
            .unwrap_or_else(|| panic!("no fact {name:?} on the device page"))
            .to_owned()
    }

    /// The `data-device` of each row of the device table, in order.
    async fn listed_devices(&self) -> Vec<String> {
        let v = self
            .eval("return [...document.querySelectorAll('#devices tbody tr')].map(r => r.dataset.device);")
            .await;
        serde_json::from_value(v).unwrap()
    }

    /// Clicks the element and waits until the browser is at a URL ending in `path_and_query`.
    async fn click(&self, css: &str, path_and_query: &str) {
        let found = self
            .cmd(
                Method::POST,
                "/element",
                json!({"using": "css selector", "value": css}),
            )
            .await;
        let element = found["element-6066-11e4-a52e-4f735466cecf"]
            .as_str()
            .unwrap_or_else(|| panic!("no element {css}: {found}"))
            .to_owned();
        self.cmd(
            Method::POST,
            &format!("/element/{element}/click"),
            json!({}),
        )
        .await;
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            let url = self.url().await;
            if url.ends_with(path_and_query) {
                return;
            }
            assert!(
                Instant::now() < deadline,
                "clicking {css} led to {url}, not {path_and_query}"
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// The page must not scroll sideways: anything wide scrolls in its own box.
    async fn assert_no_horizontal_overflow(&self, what: &str) {
        let v = self
            .eval("return [document.scrollingElement.scrollWidth, window.innerWidth];")
            .await;
        let (scroll, inner) = (v[0].as_u64().unwrap(), v[1].as_u64().unwrap());
        assert!(
            scroll <= inner,
            "{what}: the page is {scroll} px wide in a {inner} px window"
        );
    }

    /// A PNG of what the window shows, saved as `name` in the screenshot directory.
    async fn screenshot(&self, name: &str) -> PathBuf {
        let v = self.cmd(Method::GET, "/screenshot", Value::Null).await;
        let png = base64::engine::general_purpose::STANDARD
            .decode(v.as_str().unwrap())
            .unwrap();
        assert!(png.starts_with(b"\x89PNG"), "{name} is not a PNG");
        let path = self.screenshots.join(name);
        std::fs::write(&path, png).unwrap();
        path
    }

    async fn close(self) {
        self.cmd(Method::DELETE, "", Value::Null).await;
    }
}

/// A WebDriver call: its `value`, or a panic with the driver's error.
async fn call(driver: &Client, method: Method, path: &str, body: Value) -> Value {
    let body = if body.is_null() {
        Bytes::new()
    } else {
        Bytes::from(body.to_string())
    };
    let resp = driver.request(method.clone(), path, &[], body).await;
    let v = resp.json();
    assert!(
        resp.status.is_success(),
        "WebDriver {method} {path}: {} {}",
        resp.status,
        v
    );
    v["value"].clone()
}

fn chromium() -> &'static str {
    if Path::new("/usr/bin/chromium").exists() {
        "/usr/bin/chromium"
    } else {
        "chromium"
    }
}

/// `target/screenshots/` (CI keeps it): under `CARGO_TARGET_DIR` when set, else the workspace's.
fn screenshot_dir() -> PathBuf {
    let target = std::env::var_os("CARGO_TARGET_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| Path::new(env!("CARGO_MANIFEST_DIR")).join("../target"));
    let dir = target.join("screenshots");
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

fn now() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs()
}

/// A report from `device` with its labels, commit and generation.
fn report(
    device: &mut Device,
    status: Status,
    commit: Option<&str>,
    generation: Option<u64>,
    labels: &[(&str, &str)],
) -> Report {
    let mut r = device.report(status, commit);
    r.labels.clear();
    for (k, v) in labels {
        r.labels.insert((*k).into(), (*v).into());
    }
    r.generation = generation;
    r.sent_at = now();
    r.timings = Timings {
        fetch_ms: Some(41),
        verify_ms: Some(3),
        render_ms: Some(2),
        apply_ms: Some(18),
        health_ms: Some(1200),
    };
    r
}

fn error(resource: &str, message: &str) -> ResourceError {
    ResourceError {
        resource: resource.into(),
        message: message.into(),
    }
}

/// Five devices in five states, the failed one with a history (converged first).
async fn feed(client: &Client) {
    let berlin_gw = [("role", "gateway"), ("site", "berlin")];
    let mut sends: Vec<(Device, Vec<Report>)> = Vec::new();

    let mut d = Device::new("gw-berlin-1", 11);
    let r = report(
        &mut d,
        Status::Converged,
        Some(COMMIT_B),
        Some(7),
        &berlin_gw,
    );
    sends.push((d, vec![r]));

    let mut d = Device::new("gw-berlin-2", 12);
    let first = report(
        &mut d,
        Status::Converged,
        Some(COMMIT_A),
        Some(6),
        &berlin_gw,
    );
    let mut failed = report(&mut d, Status::Failed, Some(COMMIT_A), Some(6), &berlin_gw);
    failed.errors = vec![
        error(
            "telemetry.service",
            "unit did not stay active through the grace window (3 restarts); rolled back to generation 6",
        ),
        error(
            "/etc/telemetry/config.yaml",
            "mode 0600 but the unit runs as telemetry: permission denied <check owner>",
        ),
    ];
    failed.target = Some(Target {
        commit: COMMIT_B.into(),
        wave: Some("early".into()),
    });
    sends.push((d, vec![first, failed]));

    let mut d = Device::new("gw-paris-1", 13);
    let mut r = report(
        &mut d,
        Status::Pending,
        Some(COMMIT_A),
        Some(6),
        &[("role", "gateway"), ("site", "paris")],
    );
    r.pending = Some(Pending {
        commit: COMMIT_B.into(),
        wave: "all".into(),
        opens_at: now() + 5 * 3600 + 1800,
    });
    sends.push((d, vec![r]));

    let mut d = Device::new("sensor-berlin-1", 14);
    let mut r = report(
        &mut d,
        Status::Refused,
        Some(COMMIT_A),
        Some(2),
        &[("role", "sensor"), ("site", "berlin")],
    );
    r.errors = vec![error(
        COMMIT_B,
        "commit is not signed by a key in allowed_signers",
    )];
    sends.push((d, vec![r]));

    let mut d = Device::new("sensor-oslo-1", 15);
    let r = report(
        &mut d,
        Status::Converged,
        Some(COMMIT_B),
        Some(3),
        &[
            ("role", "sensor"),
            ("site", "oslo"),
            ("owner", "<i>ops</i>"),
        ],
    );
    sends.push((d, vec![r]));

    for (device, reports) in &sends {
        for (i, r) in reports.iter().enumerate() {
            let token = (i == 0).then_some(ENROLL_TOKEN);
            let resp = client.post_report(device.seal(r), token).await;
            assert_eq!(resp.status, 200, "{}: {}", device.id, resp.text());
        }
    }
}

/// The collector binary with read and enrollment tokens, fed the five devices.
async fn fed_collector(dir: &TestStore) -> (shoal_testkit::Collector, Client) {
    let (collector, client) = start_with_tokens(dir);
    feed(&client).await;
    (collector, client)
}

#[tokio::test]
async fn the_pages_in_a_real_chromium_at_desktop_and_phone_width() {
    if !shoal_testkit::require_tools(&["chromium", "chromedriver"]) {
        return;
    }
    let dir = TestStore::fresh(Backend::Sled);
    let (collector, client) = fed_collector(&dir).await;
    let base = collector.url().to_owned();
    let shots = screenshot_dir();

    let driver = ChromeDriver::start(&dir.path().join("chromedriver.log"));
    driver.wait_ready().await;
    let browser = Browser::open(&driver, &dir.path().join("profile"), shots.clone()).await;
    browser
        .cmd(
            Method::POST,
            "/window/rect",
            json!({"width": 1280, "height": 1000}),
        )
        .await;

    // Without the token the page is refused, as any read is.
    browser.goto(&format!("{base}/")).await;
    let refused = browser.text("body").await;
    assert!(refused.contains("bearer token"), "{refused}");
    assert!(!refused.contains("gw-berlin"), "{refused}");

    // With it (the header a reverse proxy or a header extension would add), every page loads.
    browser.cdp("Network.enable", json!({})).await;
    browser
        .cdp(
            "Network.setExtraHTTPHeaders",
            json!({"headers": {"Authorization": format!("Bearer {READ_TOKEN}")}}),
        )
        .await;

    // The summary: counts by status and commit.
    browser.goto(&format!("{base}/")).await;
    assert_eq!(browser.text("#total").await, "5");
    assert_eq!(browser.text("#stale").await, "0");
    for (status, n) in [
        ("converged", "2"),
        ("failed", "1"),
        ("pending", "1"),
        ("refused", "1"),
        ("rolled_back", "0"),
    ] {
        let css = format!("[data-status={status}] .n");
        assert_eq!(browser.text(&css).await, n, "{status}");
    }
    let commits = browser.text("#by-commit").await;
    assert!(
        commits.contains(&COMMIT_A[..12]) && commits.contains(&COMMIT_B[..12]),
        "{commits}"
    );
    browser
        .assert_no_horizontal_overflow("summary, desktop")
        .await;
    browser.screenshot("summary.png").await;

    // Summary → the failed devices.
    browser
        .click("[data-status=failed] a", "/devices?status=failed")
        .await;
    assert_eq!(browser.listed_devices().await, ["gw-berlin-2"]);
    assert_eq!(browser.text("#count").await, "1 device shown.");

    // A label filter from a link, and the form (whose empty fields are ignored).
    browser
        .goto(&format!("{base}/devices?label=site%3Dberlin"))
        .await;
    assert_eq!(
        browser.listed_devices().await,
        ["gw-berlin-1", "gw-berlin-2", "sensor-berlin-1"]
    );
    browser
        .eval(
            "document.querySelector('select[name=status]').value = 'converged';
             document.querySelector('form.filter').submit();",
        )
        .await;
    let deadline = Instant::now() + Duration::from_secs(10);
    while !browser.url().await.contains("status=converged") {
        assert!(Instant::now() < deadline, "the filter form did not submit");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert_eq!(browser.listed_devices().await, ["gw-berlin-1"]);
    browser.goto(&format!("{base}/devices")).await;
    assert_eq!(browser.listed_devices().await.len(), 5);
    // Text from a device is shown as text, never as markup.
    let labels = browser
        .text("[data-device=sensor-oslo-1] td:nth-child(6)")
        .await;
    assert!(labels.contains("owner=<i>ops</i>"), "{labels}");
    assert_eq!(
        browser
            .eval("return document.querySelectorAll('#devices i').length;")
            .await,
        0
    );
    browser.assert_no_horizontal_overflow("list, desktop").await;
    browser.screenshot("devices.png").await;

    // List → device: the latest report, its errors, its history; then back to the summary.
    browser
        .click(
            "[data-device=gw-berlin-2] a[href='/devices/gw-berlin-2']",
            "/devices/gw-berlin-2",
        )
        .await;
    assert!(browser.text("h1").await.contains("gw-berlin-2 failed"));
    assert_eq!(browser.fact("commit").await, COMMIT_A);
    assert_eq!(browser.fact("generation").await, "6");
    assert_eq!(
        browser.fact("rollout target").await,
        format!("{COMMIT_B}, wave early")
    );
    assert_eq!(
        browser.fact("timings").await,
        "fetch 41 ms, verify 3 ms, render 2 ms, apply 18 ms, health 1200 ms"
    );
    assert_eq!(browser.fact("labels").await, "role=gateway site=berlin");
    // Last seen: relative, and the API's `last_seen` as RFC 3339 (as GNU date writes it).
    let last_seen = client.get("/api/v1/devices/gw-berlin-2").await.json()["last_seen"]
        .as_u64()
        .unwrap();
    let date = Command::new("date")
        .args(["-u", "-d", &format!("@{last_seen}"), "+%Y-%m-%dT%H:%M:%SZ"])
        .output()
        .unwrap();
    let rfc3339 = String::from_utf8(date.stdout).unwrap();
    let seen = browser.fact("last seen").await;
    assert!(
        seen.contains(" ago (") && seen.ends_with(&format!("({})", rfc3339.trim())),
        "{seen} is not 'N s ago ({})'",
        rfc3339.trim()
    );
    let errors = browser.text("#errors").await;
    assert!(
        errors.contains("telemetry.service")
            && errors.contains("/etc/telemetry/config.yaml")
            && errors.contains("permission denied <check owner>"),
        "{errors}"
    );
    let history: Vec<String> = serde_json::from_value(
        browser
            .eval("return [...document.querySelectorAll('#history tbody tr td:nth-child(3)')].map(c => c.innerText);")
            .await,
    )
    .unwrap();
    assert_eq!(history, ["failed", "converged"]);
    browser
        .assert_no_horizontal_overflow("device, desktop")
        .await;
    browser.screenshot("device.png").await;
    browser.click("main a[href='/']", "/").await;
    assert_eq!(browser.text("#total").await, "5");

    // A device that never reported: the not-found page.
    browser.goto(&format!("{base}/devices/gw-nowhere")).await;
    assert_eq!(browser.text("h1").await, "404 Not Found");
    assert!(browser
        .text("#reason")
        .await
        .contains("device \"gw-nowhere\" not found"));

    // A 390×844 phone: the viewport tag makes the layout that wide, and nothing scrolls the page
    // sideways; the device table scrolls in its own box.
    browser
        .cdp(
            "Emulation.setDeviceMetricsOverride",
            json!({"width": 390, "height": 844, "deviceScaleFactor": 2, "mobile": true}),
        )
        .await;
    for (path, name) in [
        ("/", "phone-summary.png"),
        ("/devices", "phone-devices.png"),
        ("/devices/gw-berlin-2", "phone-device.png"),
        ("/devices/gw-paris-1", "phone-device-pending.png"),
    ] {
        browser.goto(&format!("{base}{path}")).await;
        let width = browser.eval("return window.innerWidth;").await;
        assert_eq!(width, 390, "{path}");
        browser
            .assert_no_horizontal_overflow(&format!("{path} at 390 px"))
            .await;
        browser.screenshot(name).await;
        if path == "/devices" {
            let boxed = browser
                .eval("const b = document.querySelector('#devices').parentElement; return [b.scrollWidth, b.clientWidth];")
                .await;
            assert!(
                boxed[0].as_u64() > boxed[1].as_u64(),
                "the device table is wider than a phone and scrolls in its own box: {boxed}"
            );
        }
    }
    let pending = browser.fact("pending").await;
    assert!(
        pending.starts_with(&format!("{COMMIT_B} waits for wave all, opens in 5 h (")),
        "{pending}"
    );

    browser.close().await;
    drop(driver);
    let _ = std::io::Write::write_all(
        &mut std::io::stderr(),
        format!("screenshots in {}\n", shots.display()).as_bytes(),
    );
}

/// Without a browser: what the pages answer over HTTP (status codes, the redirect of old links
/// to the list, bad input as an HTML page that changes nothing).
#[tokio::test]
async fn page_answers_over_http() {
    let dir = TestStore::fresh(Backend::Sled);
    let (collector, client) = fed_collector(&dir).await;
    let before = client.get("/api/v1/summary").await.json()["by_status"].clone();

    let resp = client.get("/?status=failed&label=site%3Dberlin").await;
    assert_eq!(resp.status, 303, "{}", resp.text());
    assert_eq!(
        resp.headers["location"],
        "/devices?status=failed&label=site%3Dberlin"
    );

    let resp = client.get("/devices/gw-nowhere").await;
    assert_eq!(resp.status, 404);
    assert_eq!(resp.headers["content-type"], "text/html; charset=utf-8");
    assert!(resp
        .text()
        .contains("device &quot;gw-nowhere&quot; not found"));

    let resp = client.get("/devices?status=on_fire").await;
    assert_eq!(resp.status, 400);
    assert_eq!(resp.headers["content-type"], "text/html; charset=utf-8");
    let text = resp.text();
    assert!(
        text.contains("bad query: status &quot;on_fire&quot; is not one of converged"),
        "{text}"
    );
    let resp = client.get("/devices?colour=red").await;
    assert_eq!(resp.status, 400);
    assert!(resp.text().contains("unknown parameter &quot;colour&quot;"));

    // A form's empty fields are no filter.
    let resp = client
        .get("/devices?status=&label=&commit=&stale=&label=role%3Dsensor")
        .await;
    assert_eq!(resp.status, 200, "{}", resp.text());
    assert_eq!(resp.text().matches("<tr data-device=").count(), 2);

    let anonymous = Client::new(collector.addr());
    for path in ["/", "/devices", "/devices/gw-berlin-2"] {
        anonymous
            .get(path)
            .await
            .assert_rejected(401, "unauthorized", "bearer token");
    }
    assert_eq!(
        client.get("/api/v1/summary").await.json()["by_status"],
        before
    );
}
