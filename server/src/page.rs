//! The fleet pages, server-rendered HTML with no JavaScript: the summary (`/`), the device list
//! (`/devices`, the filters of `GET /api/v1/devices`), a device with its latest report and kept
//! history (`/devices/{id}`), and the not-found and error pages. Escapes everything that came from
//! a device or a request; reads nothing itself (the handlers in `api` pass what to show).

use std::fmt::Write as _;

use shoal_fleet::record::{DeviceRecord, HistoryEntry};
use shoal_fleet::tally::Summary;
use shoal_proto::{Report, Status};

use crate::api::DeviceFilter;

/// The links of every page's header, in order: (path, label). Another page (rollouts) adds its
/// entry here.
const NAV: &[(&str, &str)] = &[
    ("/", "Summary"),
    ("/devices", "Devices"),
    ("/rollouts", "Rollouts"),
];

const STYLE: &str = r#"
*{box-sizing:border-box}
body{font-family:system-ui,sans-serif;margin:0;color:#222;background:#fafafa;line-height:1.4}
header{background:#263238;color:#fff;padding:.6rem 1rem;display:flex;flex-wrap:wrap;gap:.4rem 1.2rem;align-items:baseline}
header b{font-size:1.1rem}header a{color:#cfd8dc;text-decoration:none}header a.here{color:#fff;font-weight:600;border-bottom:2px solid #80cbc4}
main{padding:1rem;max-width:80rem}
h1{font-size:1.4rem;margin:.2rem 0 .8rem;overflow-wrap:anywhere}h1 code{font-size:inherit}h2{font-size:1.1rem;margin:1.4rem 0 .5rem}
a{color:#00695c}
code{font-family:ui-monospace,monospace;font-size:.88rem;overflow-wrap:anywhere}
.scroll{overflow-x:auto;max-width:100%;border:1px solid #e0e0e0;background:#fff}
table{border-collapse:collapse;width:100%}th,td{padding:.3rem .6rem;border-bottom:1px solid #eee;text-align:left;vertical-align:top}
th{background:#f4f4f4;white-space:nowrap}
.s{display:inline-block;padding:.05rem .5rem;border-radius:.6rem;font-weight:600;color:#fff;background:#78909c;white-space:nowrap}
.converged{background:#2e7d32}.applying{background:#1565c0}.failed{background:#c62828}
.rolled_back{background:#ef6c00}.held{background:#6a1b9a}.refused{background:#ad1457}.drifted{background:#f9a825;color:#222}
.s.stale{background:#546e7a}.s.pending{background:#90a4ae;color:#222}.s.halted{background:#4e342e}
.unseen td{color:#888}
.rows td{white-space:nowrap}.rows td.wrap{white-space:normal;min-width:12rem;overflow-wrap:anywhere}
.cards{display:flex;flex-wrap:wrap;gap:.6rem;padding:0;margin:0;list-style:none}
.cards li{background:#fff;border:1px solid #e0e0e0;border-radius:.4rem;padding:.5rem .8rem;min-width:8rem}
.cards .n{display:block;font-size:1.5rem;font-weight:700}.cards .zero{opacity:.55}
dl.facts{display:grid;grid-template-columns:max-content 1fr;gap:.3rem 1rem;background:#fff;border:1px solid #e0e0e0;padding:.8rem;margin:0}
dl.facts dt{font-weight:600;color:#555}dl.facts dd{margin:0;overflow-wrap:anywhere}
form.filter{display:flex;flex-wrap:wrap;gap:.5rem;align-items:end;margin:0 0 .8rem}
form.filter label{display:flex;flex-direction:column;font-size:.85rem;color:#555}
form.filter input,form.filter select{font:inherit;padding:.2rem .3rem;max-width:100%}
.err{color:#b71c1c}.muted{color:#777}
section.rollout{margin-bottom:2rem;border-left:4px solid #1565c0;padding-left:1rem}section.rollout.halted{border-left-color:#c62828}
svg.adoption{max-width:100%;height:auto;background:#fff;border:1px solid #e0e0e0;margin-top:.6rem}
@media (max-width:400px){
 main{padding:.6rem}
 header{padding:.5rem .6rem}
 dl.facts{grid-template-columns:1fr}dl.facts dt{margin-top:.3rem}
 .cards li{min-width:0;flex:1 1 40%}
 form.filter label{flex:1 1 40%}
}
"#;

/// Text for HTML content and attribute values.
pub fn esc(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            c => out.push(c),
        }
    }
    out
}

/// A query string (`a=1&b=2`) from pairs, each part percent-encoded.
fn query(pairs: &[(&str, &str)]) -> String {
    let mut q = form_urlencoded::Serializer::new(String::new());
    for (k, v) in pairs {
        q.append_pair(k, v);
    }
    q.finish()
}

/// The device list filtered by `pairs`, as an escaped href.
fn list_href(pairs: &[(&str, &str)]) -> String {
    if pairs.is_empty() {
        return "/devices".to_owned();
    }
    esc(&format!("/devices?{}", query(pairs)))
}

/// A device page's href. Device ids are `[A-Za-z0-9._:@-]` (checked at ingest), all allowed in a
/// path segment; encoded anyway so the page never depends on that rule.
fn device_href(id: &str) -> String {
    let encoded: String = id
        .bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'.' | b'_' | b'-' | b':' | b'@' => {
                (b as char).to_string()
            }
            _ => format!("%{b:02X}"),
        })
        .collect();
    esc(&format!("/devices/{encoded}"))
}

/// Unix seconds as RFC 3339 UTC (`2026-12-02T19:30:00Z`).
pub fn rfc3339(unix: u64) -> String {
    let days = unix / 86_400;
    let secs = unix % 86_400;
    // Days since 1970-01-01 to a civil date (Howard Hinnant's `civil_from_days`).
    let z = days as i64 + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    format!(
        "{year:04}-{month:02}-{day:02}T{:02}:{:02}:{:02}Z",
        secs / 3600,
        secs / 60 % 60,
        secs % 60
    )
}

/// How long ago (or, for a time after `now`, how long until) `then`, as people say it.
pub fn relative(now: u64, then: u64) -> String {
    let span = |d: u64| match d {
        0..=119 => format!("{d} s"),
        120..=7199 => format!("{} min", d / 60),
        7200..=172_799 => format!("{} h", d / 3600),
        _ => format!("{} days", d / 86_400),
    };
    if then > now {
        format!("in {}", span(then - now))
    } else {
        format!("{} ago", span(now - then))
    }
}

/// A time shown both ways: relative, with the exact RFC 3339 time beside it.
pub fn when(now: u64, then: u64) -> String {
    format!(
        r#"<time datetime="{0}" title="{0}">{1}</time> <span class="muted">({0})</span>"#,
        rfc3339(then),
        relative(now, then)
    )
}

/// A time in a table cell: relative, the exact time in the tooltip.
fn when_short(now: u64, then: u64) -> String {
    format!(
        r#"<time datetime="{0}" title="{0}">{1}</time>"#,
        rfc3339(then),
        relative(now, then)
    )
}

fn badge(status: Status) -> String {
    format!(r#"<span class="s {status}">{status}</span>"#)
}

fn short(commit: &str) -> &str {
    &commit[..commit.len().min(12)]
}

/// A commit shortened, the whole id in its tooltip, linking to the devices on it.
fn commit_link(commit: &str) -> String {
    format!(
        r#"<a href="{}"><code title="{}">{}</code></a>"#,
        list_href(&[("commit", commit)]),
        esc(commit),
        esc(short(commit))
    )
}

fn label_links(report: &Report) -> String {
    report
        .labels
        .iter()
        .map(|(k, v)| {
            let pair = format!("{k}={v}");
            format!(
                r#"<a href="{}"><code>{}</code></a>"#,
                list_href(&[("label", &pair)]),
                esc(&pair)
            )
        })
        .collect::<Vec<_>>()
        .join(" ")
}

/// The page around `body`: head (viewport, style), the header with its links (`here` marked).
pub fn layout(title: &str, here: &str, body: &str) -> String {
    let mut h = String::with_capacity(STYLE.len() + body.len() + 1024);
    let _ = write!(
        h,
        r#"<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>{} · Shoal</title>
<meta name="viewport" content="width=device-width, initial-scale=1">
<style>{STYLE}</style></head><body>
<header><b>Shoal</b><nav>"#,
        esc(title)
    );
    for (i, (path, label)) in NAV.iter().enumerate() {
        let class = if *path == here {
            r#" class="here""#
        } else {
            ""
        };
        let sep = if i > 0 { " · " } else { "" };
        let _ = write!(h, r#"{sep}<a href="{path}"{class}>{label}</a>"#);
    }
    let _ = write!(
        h,
        "</nav></header>\n<main>\n{body}</main>\n</body></html>\n"
    );
    h
}

/// `/`: counts by status and by commit, stale devices; every count links to the devices it
/// counts. Reads only the summary (no device scan).
pub fn summary(summary: &Summary) -> String {
    let mut b = String::new();
    let _ = writeln!(b, "<h1>Fleet summary</h1>");
    let _ = writeln!(
        b,
        r#"<ul class="cards" id="totals"><li><a href="/devices"><span class="n" id="total">{}</span>devices</a></li><li><a href="{}"><span class="n" id="stale">{}</span>not seen for &gt; {} s</a></li></ul>"#,
        summary.total,
        list_href(&[("stale", &summary.stale_after_secs.to_string())]),
        summary.stale,
        summary.stale_after_secs
    );
    let _ = writeln!(b, r#"<h2>By status</h2><ul class="cards" id="by-status">"#);
    for status in Status::ALL {
        let n = summary.by_status.get(status.as_str()).copied().unwrap_or(0);
        let zero = if n == 0 { r#" class="zero""# } else { "" };
        let _ = writeln!(
            b,
            r#"<li{zero} data-status="{status}"><a href="{}"><span class="n">{n}</span>{}</a></li>"#,
            list_href(&[("status", status.as_str())]),
            badge(status)
        );
    }
    b.push_str("</ul>\n<h2>By commit</h2>\n");
    if summary.by_commit.is_empty() && summary.no_commit == 0 {
        b.push_str("<p class=\"muted\">No device has reported yet.</p>\n");
    } else {
        b.push_str(r#"<div class="scroll"><table id="by-commit"><thead><tr><th>commit</th><th>devices</th></tr></thead><tbody>"#);
        let mut commits: Vec<_> = summary.by_commit.iter().collect();
        // Most devices first: the commit the fleet is on, then the stragglers.
        commits.sort_by(|a, b| b.1.cmp(a.1).then(a.0.cmp(b.0)));
        for (commit, n) in commits {
            let _ = write!(b, "<tr><td>{}</td><td>{n}</td></tr>", commit_link(commit));
        }
        if summary.no_commit > 0 {
            let _ = write!(
                b,
                r#"<tr><td class="muted">no commit yet</td><td>{}</td></tr>"#,
                summary.no_commit
            );
        }
        b.push_str("</tbody></table></div>\n");
    }
    let _ = writeln!(
        b,
        r#"<p class="muted">As of {} (collector clock).</p>"#,
        rfc3339(summary.now)
    );
    layout("Fleet summary", "/", &b)
}

/// `/devices`: a filter form (GET, no script), the matching devices, a link to the next page.
/// `next_after` is the id to continue after when more devices match.
pub fn device_list(
    filter: &DeviceFilter,
    shown: &[(String, DeviceRecord)],
    next_after: Option<&str>,
    now: u64,
    stale_after: u64,
) -> String {
    let mut b = String::new();
    b.push_str("<h1>Devices</h1>\n");
    b.push_str(r#"<form class="filter" method="get" action="/devices"><label>status<select name="status"><option value="">any</option>"#);
    for status in Status::ALL {
        let selected = if filter.status == Some(status) {
            " selected"
        } else {
            ""
        };
        let _ = write!(b, r#"<option{selected}>{status}</option>"#);
    }
    b.push_str("</select></label>");
    for (k, v) in &filter.labels {
        let _ = write!(
            b,
            r#"<label>label<input name="label" value="{}"></label>"#,
            esc(&format!("{k}={v}"))
        );
    }
    let _ = write!(
        b,
        r#"<label>label<input name="label" placeholder="site=berlin"></label><label>commit prefix<input name="commit" value="{}" size="12"></label><label>not seen for (s)<input name="stale" value="{}" size="6" inputmode="numeric"></label><button>Filter</button> <a href="/devices">clear</a></form>"#,
        esc(filter.commit.as_deref().unwrap_or("")),
        filter.stale.map_or(String::new(), |s| s.to_string()),
    );
    b.push('\n');
    let _ = writeln!(
        b,
        r#"<p id="count">{} device{} shown{}.</p>"#,
        shown.len(),
        if shown.len() == 1 { "" } else { "s" },
        if next_after.is_some() {
            " (more match)"
        } else {
            ""
        }
    );
    b.push_str(r#"<div class="scroll"><table id="devices" class="rows"><thead><tr><th>device</th><th>status</th><th>commit</th><th>generation</th><th>last seen</th><th>labels</th><th>errors</th></tr></thead><tbody>"#);
    b.push('\n');
    for (id, r) in shown {
        let unseen = now.saturating_sub(r.last_seen) > stale_after;
        let report = &r.report;
        let commit = report.commit.as_deref().map_or("-".to_owned(), commit_link);
        let release = report.release.as_ref().map_or(String::new(), |release| {
            format!(" ({})", esc(&release.to_string()))
        });
        let errors = match report.errors.as_slice() {
            [] => String::new(),
            [one] => format!(
                r#"<span class="err">{}: {}</span>"#,
                esc(&one.resource),
                esc(&one.message)
            ),
            [one, rest @ ..] => format!(
                r#"<span class="err">{}: {}</span> <span class="muted">and {} more</span>"#,
                esc(&one.resource),
                esc(&one.message),
                rest.len()
            ),
        };
        let _ = writeln!(
            b,
            r#"<tr{} data-device="{}"><td><a href="{}"><code>{}</code></a></td><td>{}</td><td>{commit}{release}</td><td>{}</td><td>{}</td><td class="wrap">{}</td><td class="wrap">{errors}</td></tr>"#,
            if unseen { r#" class="unseen""# } else { "" },
            esc(id),
            device_href(id),
            esc(id),
            badge(report.status),
            report.generation.map_or("-".to_owned(), |g| g.to_string()),
            when_short(now, r.last_seen),
            label_links(report),
        );
    }
    b.push_str("</tbody></table></div>\n");
    if let Some(after) = next_after {
        let mut pairs: Vec<(String, String)> = Vec::new();
        if let Some(s) = filter.status {
            pairs.push(("status".into(), s.as_str().into()));
        }
        for (k, v) in &filter.labels {
            pairs.push(("label".into(), format!("{k}={v}")));
        }
        if let Some(c) = &filter.commit {
            pairs.push(("commit".into(), c.clone()));
        }
        if let Some(s) = filter.stale {
            pairs.push(("stale".into(), s.to_string()));
        }
        if filter.limit < crate::api::PAGE_ROWS {
            pairs.push(("limit".into(), filter.limit.to_string()));
        }
        pairs.push(("after".into(), after.to_owned()));
        let pairs: Vec<(&str, &str)> = pairs
            .iter()
            .map(|(k, v)| (k.as_str(), v.as_str()))
            .collect();
        let _ = writeln!(
            b,
            r#"<p>More devices match. <a id="next" href="{}">Next page →</a></p>"#,
            list_href(&pairs)
        );
    }
    layout("Devices", "/devices", &b)
}

/// `/devices/{id}`: the latest report (status, commit, release, generation, pending wave,
/// errors, timings, last seen) and the kept history, newest first.
pub fn device(
    id: &str,
    record: &DeviceRecord,
    pinned: Option<&str>,
    history: &[HistoryEntry],
    now: u64,
    stale_after: u64,
) -> String {
    let r = &record.report;
    let mut b = String::new();
    let _ = writeln!(
        b,
        r#"<p class="muted"><a href="/">Summary</a> › <a href="/devices">Devices</a> › {}</p>"#,
        esc(id)
    );
    let _ = writeln!(
        b,
        r#"<h1><code>{}</code> <a href="{}">{}</a></h1>"#,
        esc(id),
        list_href(&[("status", r.status.as_str())]),
        badge(r.status)
    );
    b.push_str(r#"<dl class="facts" id="latest">"#);
    let mut fact = |name: &str, value: String| {
        let _ = write!(b, "<dt>{name}</dt><dd>{value}</dd>");
    };
    let unseen = now.saturating_sub(record.last_seen) > stale_after;
    fact(
        "last seen",
        format!(
            "{}{}",
            when(now, record.last_seen),
            if unseen {
                format!(r#" <span class="err">no report for over {stale_after} s</span>"#)
            } else {
                String::new()
            }
        ),
    );
    fact(
        "commit",
        r.commit.as_deref().map_or("none yet".to_owned(), |c| {
            format!(
                r#"<a href="{}"><code>{}</code></a>"#,
                list_href(&[("commit", c)]),
                esc(c)
            )
        }),
    );
    if let Some(release) = &r.release {
        fact("release", esc(&release.to_string()));
    }
    fact(
        "generation",
        r.generation
            .map_or("none yet".to_owned(), |g| g.to_string()),
    );
    if let Some(p) = &r.pending {
        fact(
            "pending",
            format!(
                "<code>{}</code> waits for wave <b>{}</b>, opens {}",
                esc(&p.commit),
                esc(&p.wave),
                when(now, p.opens_at)
            ),
        );
    }
    if let Some(t) = &r.target {
        fact(
            "rollout target",
            format!(
                "<code>{}</code>{}",
                esc(&t.commit),
                t.wave
                    .as_deref()
                    .map_or(String::new(), |w| format!(", wave <b>{}</b>", esc(w)))
            ),
        );
    }
    fact("labels", {
        let l = label_links(r);
        if l.is_empty() {
            "none".to_owned()
        } else {
            l
        }
    });
    fact("timings", timings(r));
    fact(
        "agent",
        if r.agent_version.is_empty() {
            "unknown".to_owned()
        } else {
            esc(&r.agent_version)
        },
    );
    fact("sequence", r.sequence.to_string());
    fact(
        "key",
        format!(
            "<code>{}</code>{}",
            esc(&record.key_id),
            match pinned {
                Some(p) if p == record.key_id => String::new(),
                Some(p) => format!(" (pinned now: <code>{}</code>)", esc(p)),
                None => " (unpinned: it may enroll again with a token)".to_owned(),
            }
        ),
    );
    fact("first seen", when(now, record.first_seen));
    b.push_str("</dl>\n");

    let _ = writeln!(b, "<h2>Errors ({})</h2>", r.errors.len());
    if r.errors.is_empty() {
        b.push_str(r#"<p class="muted" id="errors">None in the latest report.</p>"#);
        b.push('\n');
    } else {
        b.push_str(r#"<div class="scroll"><table id="errors"><thead><tr><th>resource</th><th>error</th></tr></thead><tbody>"#);
        for e in &r.errors {
            let _ = write!(
                b,
                r#"<tr><td><code>{}</code></td><td class="err">{}</td></tr>"#,
                esc(&e.resource),
                esc(&e.message)
            );
        }
        b.push_str("</tbody></table></div>\n");
    }

    let _ = writeln!(
        b,
        "<h2>History ({} kept report{}, newest first)</h2>",
        history.len(),
        if history.len() == 1 { "" } else { "s" }
    );
    b.push_str(r#"<div class="scroll"><table id="history" class="rows"><thead><tr><th>received</th><th>sequence</th><th>status</th><th>commit</th><th>generation</th><th>errors</th></tr></thead><tbody>"#);
    b.push('\n');
    for entry in history {
        let h = &entry.report;
        let errors: Vec<String> = h
            .errors
            .iter()
            .map(|e| format!("{}: {}", e.resource, e.message))
            .collect();
        let _ = writeln!(
            b,
            r#"<tr><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td class="err wrap">{}</td></tr>"#,
            when_short(now, entry.received_at),
            h.sequence,
            badge(h.status),
            h.commit.as_deref().map_or("-".to_owned(), commit_link),
            h.generation.map_or("-".to_owned(), |g| g.to_string()),
            esc(&errors.join("; ")),
        );
    }
    b.push_str("</tbody></table></div>\n");
    let api = device_href(id).replacen("/devices/", "/api/v1/devices/", 1);
    let _ = writeln!(
        b,
        r#"<p class="muted">As JSON: <a href="{api}">the device</a> · <a href="{api}/history">its history</a></p>"#
    );
    layout(id, "/devices", &b)
}

fn timings(r: &Report) -> String {
    let t = &r.timings;
    let parts: Vec<String> = [
        ("fetch", t.fetch_ms),
        ("verify", t.verify_ms),
        ("render", t.render_ms),
        ("apply", t.apply_ms),
        ("health", t.health_ms),
    ]
    .iter()
    .filter_map(|(step, ms)| ms.map(|ms| format!("{step} {ms} ms")))
    .collect();
    if parts.is_empty() {
        "none reported".to_owned()
    } else {
        parts.join(", ")
    }
}

/// A page for a failed request: its status line and the reason (the same text the API gives).
pub fn error(status: u16, title: &str, reason: &str) -> String {
    let body = format!(
        r#"<h1>{status} {}</h1><p id="reason">{}</p><p><a href="/">Summary</a> · <a href="/devices">All devices</a></p>
"#,
        esc(title),
        esc(reason)
    );
    layout(title, "", &body)
}

#[cfg(test)]
mod tests {
    use super::*;
    use shoal_proto::{Pending, Report, ResourceError, Status};

    fn record(report: Report, last_seen: u64) -> DeviceRecord {
        DeviceRecord {
            key_id: "k".into(),
            first_seen: 0,
            last_seen,
            history_next: 1,
            report,
        }
    }

    #[test]
    fn device_text_is_escaped_everywhere() {
        let mut report = Report::new("gw-1", Status::Failed, 1);
        report
            .labels
            .insert("site".into(), "<script>alert(1)</script>".into());
        report.errors.push(ResourceError {
            resource: "/etc/a&b".into(),
            message: "\"quoted\"".into(),
        });
        report.pending = Some(Pending {
            commit: "abcd".into(),
            wave: "<b>canary</b>".into(),
            opens_at: 1000,
        });
        let rec = record(report.clone(), 0);
        let list = device_list(
            &DeviceFilter::default(),
            &[("gw-1".into(), rec.clone())],
            None,
            1000,
            180,
        );
        let history = [HistoryEntry {
            received_at: 0,
            report,
        }];
        let page = device("gw-1", &rec, Some("k"), &history, 1000, 180);
        for html in [&list, &page] {
            assert!(!html.contains("<script>"), "{html}");
            assert!(html.contains("&lt;script&gt;"));
            assert!(html.contains("/etc/a&amp;b"));
            assert!(html.contains("&quot;quoted&quot;"));
            assert!(html.contains(r#"<span class="s failed">failed</span>"#));
        }
        assert!(page.contains("&lt;b&gt;canary&lt;/b&gt;"));
        // The label's link is percent-encoded, then escaped for the attribute.
        assert!(
            list.contains(
                r#"href="/devices?label=site%3D%3Cscript%3Ealert%281%29%3C%2Fscript%3E""#
            ),
            "{list}"
        );
        // A device not heard from: its row is greyed (not the `stale` status, an expired release).
        assert!(list.contains(r#"<tr class="unseen" data-device="gw-1">"#));
        let e = error(404, "Not found", "device \"<x>\" not found");
        assert!(e.contains("device &quot;&lt;x&gt;&quot; not found"));
    }

    #[test]
    fn times_read_both_ways() {
        assert_eq!(rfc3339(0), "1970-01-01T00:00:00Z");
        assert_eq!(rfc3339(951_782_400), "2000-02-29T00:00:00Z");
        assert_eq!(rfc3339(1_714_564_800), "2024-05-01T12:00:00Z");
        assert_eq!(rfc3339(4_102_444_799), "2099-12-31T23:59:59Z");
        assert_eq!(relative(1000, 990), "10 s ago");
        assert_eq!(relative(10_000, 10_000 - 600), "10 min ago");
        assert_eq!(relative(1000, 1000 + 7200), "in 2 h");
        assert_eq!(relative(400_000, 0), "4 days ago");
    }

    #[test]
    fn the_next_page_keeps_the_filter() {
        let filter = DeviceFilter::parse(Some("status=failed&label=site=b%20c&stale=60")).unwrap();
        let rec = record(Report::new("gw-1", Status::Failed, 1), 0);
        let html = device_list(&filter, &[("gw-1".into(), rec)], Some("gw-1"), 1000, 180);
        assert!(
            html.contains(
                r#"href="/devices?status=failed&amp;label=site%3Db+c&amp;stale=60&amp;after=gw-1""#
            ),
            "{html}"
        );
        assert!(html.contains("<option selected>failed</option>"));
        assert!(html.contains(r#"<input name="label" value="site=b c">"#));
        // A smaller page size than the page's own is kept too.
        let filter = DeviceFilter::parse(Some("limit=20")).unwrap();
        let rec = record(Report::new("gw-1", Status::Failed, 1), 0);
        let html = device_list(&filter, &[("gw-1".into(), rec)], Some("gw-1"), 1000, 180);
        assert!(
            html.contains(r#"href="/devices?limit=20&amp;after=gw-1""#),
            "{html}"
        );
    }
}
