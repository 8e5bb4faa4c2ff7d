//! `docs/grafana-dashboard.json` against the real collector: every panel's PromQL names only
//! metrics, labels and label values that a running `shoal-collector` exports on `/metrics`, and
//! the JSON has what Grafana's dashboard import needs (schemaVersion, panels with ids, gridPos,
//! targets and a datasource, a datasource variable in templating). No Grafana runs here (none is
//! packaged in the registries this project installs from), so this is the check of record.

#[macro_use]
mod common;

use std::collections::{BTreeMap, BTreeSet};

use common::*;
use serde_json::Value;
use shoal_proto::Status;

/// What a scrape of `/metrics` holds: metric name → label name → the values seen.
type Exported = BTreeMap<String, BTreeMap<String, BTreeSet<String>>>;

/// Labels Prometheus adds to every scraped series itself.
const TARGET_LABELS: [&str; 2] = ["job", "instance"];

/// PromQL functions and aggregations the dashboard may call.
const FUNCTIONS: [&str; 10] = [
    "sum",
    "max",
    "min",
    "avg",
    "count",
    "rate",
    "irate",
    "increase",
    "topk",
    "clamp_min",
];

fn dashboard() -> Value {
    let path = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../docs/grafana-dashboard.json"
    );
    let text = std::fs::read_to_string(path).unwrap_or_else(|e| panic!("{path}: {e}"));
    serde_json::from_str(&text).unwrap_or_else(|e| panic!("{path} is not JSON: {e}"))
}

/// Parses Prometheus text exposition: `# TYPE` names every family; samples give the labels.
fn parse_exposition(text: &str) -> Exported {
    let mut out = Exported::new();
    for line in text.lines() {
        if let Some(rest) = line.strip_prefix("# TYPE ") {
            let name = rest.split_whitespace().next().unwrap();
            out.entry(name.to_owned()).or_default();
            continue;
        }
        if line.starts_with('#') || line.trim().is_empty() {
            continue;
        }
        let (series, _value) = line.rsplit_once(' ').unwrap();
        let (name, labels) = match series.split_once('{') {
            Some((name, labels)) => (name, labels.trim_end_matches('}')),
            None => (series, ""),
        };
        let family = out
            .get_mut(name)
            .unwrap_or_else(|| panic!("sample {line:?} has no # TYPE line"));
        for pair in labels.split(',').filter(|p| !p.is_empty()) {
            let (k, v) = pair.split_once('=').unwrap();
            family
                .entry(k.to_owned())
                .or_default()
                .insert(v.trim_matches('"').to_owned());
        }
    }
    out
}

/// A label matcher: label, operator, value.
type Matcher = (String, String, String);

/// What one PromQL expression refers to.
#[derive(Debug, Default)]
struct Refs {
    /// Each selector: metric name and its matchers (label, operator, value).
    selectors: Vec<(String, Vec<Matcher>)>,
    /// Labels named in `by (...)`, `without (...)`, `on (...)`, `ignoring (...)`.
    grouping: BTreeSet<String>,
    functions: BTreeSet<String>,
}

/// A small PromQL reader: enough to find every metric, matcher, grouping label and function
/// the dashboard's expressions use (and to fail loudly on anything it does not understand).
fn read_promql(expr: &str) -> Refs {
    let chars: Vec<char> = expr.chars().collect();
    let mut refs = Refs::default();
    let mut depth = 0i32;
    let mut i = 0;
    let ident = |i: &mut usize| {
        let start = *i;
        while *i < chars.len() && (chars[*i].is_ascii_alphanumeric() || "_:".contains(chars[*i])) {
            *i += 1;
        }
        chars[start..*i].iter().collect::<String>()
    };
    let skip_ws = |i: &mut usize| {
        while *i < chars.len() && chars[*i].is_whitespace() {
            *i += 1;
        }
    };
    while i < chars.len() {
        let c = chars[i];
        if c.is_whitespace() || "+-*/<>=!,".contains(c) {
            i += 1;
        } else if c == '(' {
            depth += 1;
            i += 1;
        } else if c == ')' {
            depth -= 1;
            assert!(depth >= 0, "unbalanced ) in {expr}");
            i += 1;
        } else if c == '[' {
            // A range: `[5m]` or `[$__rate_interval]`.
            let end = chars[i..]
                .iter()
                .position(|c| *c == ']')
                .unwrap_or_else(|| panic!("unclosed [ in {expr}"));
            let range: String = chars[i + 1..i + end].iter().collect();
            assert!(
                range.starts_with('$') || range.chars().all(|c| c.is_ascii_alphanumeric()),
                "bad range [{range}] in {expr}"
            );
            i += end + 1;
        } else if c.is_ascii_digit() || c == '.' {
            while i < chars.len() && (chars[i].is_ascii_digit() || chars[i] == '.') {
                i += 1;
            }
        } else if c.is_ascii_alphabetic() || c == '_' {
            let word = ident(&mut i);
            let mut j = i;
            skip_ws(&mut j);
            match word.as_str() {
                "by" | "without" | "on" | "ignoring" | "group_left" | "group_right" => {
                    assert_eq!(chars.get(j), Some(&'('), "{word} without ( in {expr}");
                    let end = chars[j..].iter().position(|c| *c == ')').unwrap();
                    let labels: String = chars[j + 1..j + end].iter().collect();
                    refs.grouping
                        .extend(labels.split(',').map(|l| l.trim().to_owned()));
                    i = j + end + 1;
                }
                "bool" | "and" | "or" | "unless" | "offset" => {}
                // A call, or an aggregation with its grouping first (`sum by (l) (...)`).
                _ if chars.get(j) == Some(&'(')
                    || ["by", "without"].iter().any(|k| {
                        let next: String = chars[j..].iter().take(k.len() + 1).collect();
                        next.trim_end() == *k && next.ends_with([' ', '('])
                    }) =>
                {
                    refs.functions.insert(word);
                }
                _ => {
                    let mut matchers = Vec::new();
                    if chars.get(j) == Some(&'{') {
                        let end = chars[j..]
                            .iter()
                            .position(|c| *c == '}')
                            .unwrap_or_else(|| panic!("unclosed {{ in {expr}"));
                        let body: String = chars[j + 1..j + end].iter().collect();
                        for m in body.split(',').map(str::trim).filter(|m| !m.is_empty()) {
                            let op_at = m
                                .find(|c| "=!~".contains(c))
                                .unwrap_or_else(|| panic!("bad matcher {m:?} in {expr}"));
                            let (label, rest) = m.split_at(op_at);
                            let op_len = rest.find('"').unwrap_or_else(|| {
                                panic!("matcher {m:?} has no quoted value in {expr}")
                            });
                            let (op, value) = rest.split_at(op_len);
                            assert!(
                                ["=", "!=", "=~", "!~"].contains(&op),
                                "bad operator {op} in {expr}"
                            );
                            assert!(value.len() >= 2 && value.ends_with('"'), "{m} in {expr}");
                            matchers.push((
                                label.trim().to_owned(),
                                op.to_owned(),
                                value[1..value.len() - 1].to_owned(),
                            ));
                        }
                        i = j + end + 1;
                    }
                    refs.selectors.push((word, matchers));
                }
            }
        } else {
            panic!("unexpected {c:?} at {i} in {expr}");
        }
    }
    assert_eq!(depth, 0, "unbalanced ( in {expr}");
    refs
}

/// Every place the dashboard names a metric: panel targets and the variables' queries.
fn checked_expressions(dash: &Value) -> Vec<(String, String)> {
    let mut out = Vec::new();
    for panel in dash["panels"].as_array().unwrap() {
        for t in panel["targets"].as_array().into_iter().flatten() {
            out.push((
                format!("panel {} {}", panel["id"], panel["title"]),
                t["expr"].as_str().unwrap().to_owned(),
            ));
        }
    }
    for var in dash["templating"]["list"].as_array().unwrap() {
        if var["type"] == "query" {
            let q = var["query"]["query"].as_str().unwrap();
            let inner = q
                .strip_prefix("label_values(")
                .and_then(|q| q.strip_suffix(')'))
                .unwrap_or_else(|| {
                    panic!("variable query {q:?} is not label_values(METRIC, LABEL)")
                });
            let (metric, label) = inner.split_once(',').unwrap();
            assert!(
                TARGET_LABELS.contains(&label.trim()),
                "variable {} lists {label}, a label the scrape does not add",
                var["name"]
            );
            out.push((
                format!("variable {}", var["name"]),
                metric.trim().to_owned(),
            ));
        }
    }
    out
}

fn check_queries(dash: &Value, exported: &Exported) {
    let mut used = BTreeSet::new();
    for (where_, expr) in checked_expressions(dash) {
        let refs = read_promql(&expr);
        assert!(
            !refs.selectors.is_empty(),
            "{where_}: {expr} names no metric"
        );
        for f in &refs.functions {
            assert!(
                FUNCTIONS.contains(&f.as_str()),
                "{where_}: {f}() is not a PromQL function this test knows"
            );
        }
        let mut labels_in_expr: BTreeSet<String> =
            TARGET_LABELS.iter().map(|l| l.to_string()).collect();
        for (metric, matchers) in &refs.selectors {
            let family = exported.get(metric).unwrap_or_else(|| {
                panic!(
                    "{where_}: {metric} is not exported by the collector (it exports {:?})",
                    exported.keys().collect::<Vec<_>>()
                )
            });
            used.insert(metric.clone());
            labels_in_expr.extend(family.keys().cloned());
            for (label, op, value) in matchers {
                if TARGET_LABELS.contains(&label.as_str()) {
                    assert!(
                        value.starts_with('$'),
                        "{where_}: {label} should come from a variable"
                    );
                    continue;
                }
                let values = family.get(label).unwrap_or_else(|| {
                    panic!(
                        "{where_}: {metric} has no label {label} (it has {:?})",
                        family.keys()
                    )
                });
                // Plain alternatives (`failed|rolled_back`) must each be a value the metric has.
                let wanted: Vec<&str> = if op.contains('~') {
                    value.split('|').collect()
                } else {
                    vec![value.as_str()]
                };
                for w in wanted {
                    assert!(
                        values.contains(w),
                        "{where_}: {metric}{{{label}{op}\"{value}\"}}: {w:?} is not a value the collector exports ({values:?})"
                    );
                }
            }
        }
        for label in &refs.grouping {
            assert!(
                labels_in_expr.contains(label),
                "{where_}: groups by {label}, which none of its metrics has"
            );
        }
    }
    // The panels an operator looks at first are there.
    for metric in [
        "shoal_devices",
        "shoal_devices_total",
        "shoal_devices_stale",
        "shoal_reports_accepted_total",
        "shoal_reports_rejected_total",
        "shoal_store_errors_total",
    ] {
        assert!(used.contains(metric), "no panel shows {metric}");
    }
}

/// The fields Grafana's import reads, and a layout without overlaps.
fn check_import_fields(dash: &Value) {
    assert!(dash["title"].as_str().is_some_and(|t| !t.is_empty()));
    let uid = dash["uid"].as_str().expect("uid");
    assert!(
        !uid.is_empty()
            && uid.len() <= 40
            && uid
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_'),
        "uid {uid:?}: at most 40 characters of [A-Za-z0-9-_]"
    );
    let schema = dash["schemaVersion"].as_u64().expect("schemaVersion");
    assert!(
        schema >= 36,
        "schemaVersion {schema}: Grafana 9+ dashboards are 36 or later"
    );
    assert!(dash["time"]["from"].is_string() && dash["time"]["to"].is_string());
    let vars = dash["templating"]["list"]
        .as_array()
        .expect("templating.list");
    let ds_var = vars
        .iter()
        .find(|v| v["type"] == "datasource" && v["query"] == "prometheus")
        .expect("a datasource variable of type prometheus, so import asks for no uid");
    let ds_uid = format!("${{{}}}", ds_var["name"].as_str().unwrap());
    for v in vars.iter().filter(|v| v["type"] == "query") {
        assert_eq!(
            v["datasource"]["uid"],
            ds_uid.as_str(),
            "variable {}",
            v["name"]
        );
    }

    let panels = dash["panels"].as_array().expect("panels");
    assert!(!panels.is_empty());
    let mut ids = BTreeSet::new();
    let mut cells: BTreeMap<(u64, u64), String> = BTreeMap::new();
    for p in panels {
        let id = p["id"]
            .as_u64()
            .unwrap_or_else(|| panic!("panel without id: {p}"));
        assert!(ids.insert(id), "panel id {id} is used twice");
        let title = p["title"].as_str().unwrap_or_default();
        assert!(!title.is_empty(), "panel {id} has no title");
        let kind = p["type"].as_str().unwrap();
        assert!(
            ["row", "stat", "timeseries", "gauge", "table", "bargauge"].contains(&kind),
            "panel {id}: type {kind}"
        );
        let g = &p["gridPos"];
        let [h, w, x, y] = ["h", "w", "x", "y"].map(|k| {
            g[k].as_u64()
                .unwrap_or_else(|| panic!("panel {id} gridPos.{k} missing: {g}"))
        });
        assert!(
            h > 0 && w > 0 && x + w <= 24,
            "panel {id}: gridPos {g} is off the 24-column grid"
        );
        for cy in y..y + h {
            for cx in x..x + w {
                if let Some(other) = cells.insert((cx, cy), title.to_owned()) {
                    panic!("panels {other:?} and {title:?} overlap at column {cx}, row {cy}");
                }
            }
        }
        if kind == "row" {
            assert!(p.get("targets").is_none(), "row {id} has targets");
            continue;
        }
        assert_eq!(p["datasource"]["type"], "prometheus", "panel {id}");
        assert_eq!(p["datasource"]["uid"], ds_uid.as_str(), "panel {id}");
        let targets = p["targets"]
            .as_array()
            .unwrap_or_else(|| panic!("panel {id}: targets"));
        assert!(!targets.is_empty(), "panel {id} has no query");
        let mut refs = BTreeSet::new();
        for t in targets {
            assert!(
                refs.insert(t["refId"].as_str().unwrap().to_owned()),
                "panel {id}: refId twice"
            );
            assert!(
                t["expr"].as_str().is_some_and(|e| !e.is_empty()),
                "panel {id}: expr"
            );
            assert_eq!(t["datasource"]["uid"], ds_uid.as_str(), "panel {id}");
        }
    }
}

#[tokio::test]
async fn the_grafana_dashboard_uses_only_what_the_collector_exports() {
    let dir = TestStore::fresh(Backend::Sled);
    let (_collector, client) = start_with_tokens(&dir);
    // Some traffic, so the scrape is a collector at work: accepted, enrolled, refused.
    let mut gw = Device::new("gw-1", 1);
    let body = gw.next(Status::Converged, Some("89abcdef"));
    assert_eq!(
        client
            .post_report(body.clone(), Some(ENROLL_TOKEN))
            .await
            .status,
        200
    );
    assert_eq!(client.post_report(body, None).await.status, 409);
    let scrape = client.get("/metrics").await;
    assert_eq!(scrape.status, 200);
    let exported = parse_exposition(&scrape.text());
    assert!(exported["shoal_reports_rejected_total"]["reason"].contains("replayed_sequence"));

    let dash = dashboard();
    check_import_fields(&dash);
    check_queries(&dash, &exported);
}

/// The checks themselves fail on what they are for: a metric the collector does not export, a
/// status it never reports, a label it does not have, overlapping or id-less panels.
#[test]
fn the_checks_catch_a_wrong_dashboard() {
    let text = "# TYPE shoal_devices gauge\nshoal_devices{status=\"failed\"} 1\n# TYPE shoal_devices_total gauge\nshoal_devices_total 1\n";
    let exported = parse_exposition(text);
    let with_expr = |expr: &str| {
        let mut d = dashboard();
        d["panels"][1]["targets"][0]["expr"] = Value::from(expr);
        d
    };
    let fails = |d: Value| {
        std::panic::catch_unwind(|| check_queries(&d, &exported))
            .err()
            .and_then(|e| e.downcast_ref::<String>().cloned())
            .unwrap_or_else(|| "did not fail".to_owned())
    };
    assert!(
        fails(with_expr("max(shoal_device_count)")).contains("shoal_device_count is not exported")
    );
    assert!(fails(with_expr(r#"shoal_devices{status="exploded"}"#))
        .contains("\"exploded\" is not a value"));
    assert!(fails(with_expr(r#"shoal_devices{site="x"}"#)).contains("has no label site"));
    assert!(fails(with_expr("sum by (site) (shoal_devices)")).contains("groups by site"));
    assert!(fails(with_expr("sum(shoal_devices")).contains("unbalanced"));
    assert!(fails(with_expr("histogram_quantile(0.9, shoal_devices)"))
        .contains("histogram_quantile() is not"));

    let mut overlapping = dashboard();
    overlapping["panels"][2]["gridPos"] = overlapping["panels"][1]["gridPos"].clone();
    let e = std::panic::catch_unwind(|| check_import_fields(&overlapping)).unwrap_err();
    assert!(e.downcast_ref::<String>().unwrap().contains("overlap"));
    let mut no_id = dashboard();
    no_id["panels"][3].as_object_mut().unwrap().remove("id");
    assert!(std::panic::catch_unwind(|| check_import_fields(&no_id)).is_err());
    let mut no_ds = dashboard();
    no_ds["templating"]["list"] = Value::Array(vec![]);
    assert!(std::panic::catch_unwind(|| check_import_fields(&no_ds)).is_err());
}
