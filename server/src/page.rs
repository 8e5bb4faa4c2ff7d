//! The fleet page at `/`: server-rendered HTML (no JavaScript) with the summary and a table of
//! devices, status colours, commit and last seen. Escapes everything that came from a device.

use std::fmt::Write as _;

use shoal_fleet::record::DeviceRecord;
use shoal_fleet::tally::Summary;

fn esc(s: &str) -> String {
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

fn ago(now: u64, then: u64) -> String {
    let d = now.saturating_sub(then);
    match d {
        0..=119 => format!("{d} s ago"),
        120..=7199 => format!("{} min ago", d / 60),
        7200..=172_799 => format!("{} h ago", d / 3600),
        _ => format!("{} days ago", d / 86_400),
    }
}

/// Renders the page. `shown` are the devices listed (already filtered and limited).
pub fn render(
    summary: &Summary,
    shown: &[(String, DeviceRecord)],
    more: bool,
    filter_note: &str,
) -> String {
    let mut h = String::with_capacity(4096 + shown.len() * 256);
    h.push_str(
        r#"<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>Shoal fleet</title>
<meta name="viewport" content="width=device-width, initial-scale=1">
<style>
body{font-family:system-ui,sans-serif;margin:1.5rem;color:#222}
table{border-collapse:collapse;width:100%}th,td{padding:.3rem .6rem;border-bottom:1px solid #ddd;text-align:left}
th{background:#f4f4f4}code{font-size:.9em}
.s{padding:.1rem .5rem;border-radius:.6rem;font-weight:600;color:#fff}
.converged{background:#2e7d32}.applying{background:#1565c0}.failed{background:#c62828}
.rolled_back{background:#ef6c00}.held{background:#6a1b9a}.refused{background:#ad1457}.drifted{background:#f9a825;color:#222}
.s.stale{background:#546e7a}.s.pending{background:#90a4ae;color:#222}.unseen td{color:#888}.counts span{margin-right:1rem}
</style></head><body>
<h1>Shoal fleet</h1>
<p><a href="/rollouts">Rollouts</a></p>
"#,
    );
    let _ = write!(
        h,
        r#"<p class="counts"><span><b>{}</b> devices</span><span><b>{}</b> stale (no report for &gt; {} s)</span>"#,
        summary.total, summary.stale, summary.stale_after_secs
    );
    for (status, n) in &summary.by_status {
        let _ = write!(
            h,
            r#"<span><span class="s {status}">{status}</span> {n}</span>"#
        );
    }
    h.push_str("</p>\n");
    if !summary.by_commit.is_empty() {
        h.push_str("<p class=\"counts\">commits: ");
        for (commit, n) in &summary.by_commit {
            let short = &commit[..commit.len().min(12)];
            let _ = write!(h, "<span><code>{}</code> {n}</span>", esc(short));
        }
        h.push_str("</p>\n");
    }
    if !filter_note.is_empty() {
        let _ = writeln!(h, "<p>Filter: <code>{}</code></p>", esc(filter_note));
    }
    h.push_str("<table><thead><tr><th>device</th><th>status</th><th>commit</th><th>generation</th><th>last seen</th><th>labels</th><th>errors</th></tr></thead><tbody>\n");
    for (id, r) in shown {
        let stale = summary.now.saturating_sub(r.last_seen) > summary.stale_after_secs;
        let commit = r.report.commit.as_deref().unwrap_or("-");
        let release = r
            .report
            .release
            .as_ref()
            .map_or(String::new(), |release| format!(" ({release})"));
        let labels: Vec<String> = r
            .report
            .labels
            .iter()
            .map(|(k, v)| format!("{k}={v}"))
            .collect();
        let errors: Vec<String> = r
            .report
            .errors
            .iter()
            .map(|e| format!("{}: {}", e.resource, e.message))
            .collect();
        let _ = writeln!(
            h,
            r#"<tr{}><td><code>{}</code></td><td><span class="s {}">{}</span></td><td><code title="{}">{}</code>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td></tr>"#,
            if stale { r#" class="unseen""# } else { "" },
            esc(id),
            r.report.status,
            r.report.status,
            esc(commit),
            esc(&commit[..commit.len().min(12)]),
            esc(&release),
            r.report
                .generation
                .map_or("-".to_owned(), |g| g.to_string()),
            ago(summary.now, r.last_seen),
            esc(&labels.join(", ")),
            esc(&errors.join("; ")),
        );
    }
    h.push_str("</tbody></table>\n");
    if more {
        h.push_str("<p>More devices match; narrow with <code>?status=</code>, <code>?label=k=v</code>, <code>?commit=</code>, <code>?stale=SECONDS</code>, or page with <code>?after=ID</code>.</p>\n");
    }
    h.push_str("</body></html>\n");
    h
}

#[cfg(test)]
mod tests {
    use super::*;
    use shoal_proto::{Report, ResourceError, Status};

    #[test]
    fn device_text_is_escaped() {
        let mut report = Report::new("gw-1", Status::Failed, 1);
        report
            .labels
            .insert("site".into(), "<script>alert(1)</script>".into());
        report.errors.push(ResourceError {
            resource: "/etc/a&b".into(),
            message: "\"quoted\"".into(),
        });
        let rec = DeviceRecord {
            key_id: "k".into(),
            first_seen: 0,
            last_seen: 0,
            history_next: 1,
            report,
        };
        let summary = shoal_fleet::tally::Tally::default().summary(1000, 180);
        let html = render(&summary, &[("gw-1".into(), rec)], false, "");
        assert!(!html.contains("<script>"));
        assert!(html.contains("&lt;script&gt;"));
        assert!(html.contains("/etc/a&amp;b: &quot;quoted&quot;"));
        // A device not heard from: its row is greyed (not the `stale` status, an expired release).
        assert!(html.contains(r#"<tr class="unseen">"#));
        assert!(html.contains(r#"<span class="s failed">failed</span>"#));
    }
}
