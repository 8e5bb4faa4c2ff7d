//! The rollout views: `GET /api/v1/rollouts` (every commit being rolled out: its devices by wave
//! and status, halted or not and why), `GET /api/v1/rollouts/{commit}` (the same for one commit,
//! plus its adoption over time), and the `/rollouts` page, server-rendered HTML with each
//! rollout's adoption drawn as inline SVG (no JavaScript), halted commits marked. Reads the
//! rollout counters and the halt list; decides nothing.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::sync::Arc;

use axum::extract::{Path, State};
use axum::response::Html;
use axum::Json;
use serde::Serialize;
use shoal_proto::{CommitId, Status};

use shoal_fleet::rollout::{CommitCounts, HaltState};

use crate::api::{blocking, ApiError};
use crate::page::{esc, layout, when};
use crate::AppState;

/// One wave of a rollout: its devices by status.
#[derive(Debug, Serialize)]
pub struct WaveView {
    /// The wave's name; `null`: the commit declares no waves.
    pub wave: Option<String>,
    pub by_status: BTreeMap<&'static str, u64>,
}

/// One commit's rollout.
#[derive(Debug, Serialize)]
pub struct RolloutView {
    pub commit: String,
    /// Devices whose latest report is about this commit (any status).
    pub devices: u64,
    /// Of them, those that tried it (not `pending`, not `halted`).
    pub tried: u64,
    /// Of those, `failed` or `rolled_back`.
    pub failures: u64,
    pub waves: Vec<WaveView>,
    pub halted: bool,
    /// Why and since when (unix s), when halted.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub halt: Option<shoal_fleet::rollout::Halted>,
    /// The last resume (when, and the failures then), if any.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub resumed: Option<shoal_fleet::rollout::Resumed>,
}

/// One adoption sample: devices on the commit at a minute.
#[derive(Debug, Serialize)]
pub struct Sample {
    /// Unix seconds (the start of the minute).
    pub at: u64,
    pub devices: u64,
}

fn view(commit: &str, counts: &CommitCounts, halt: Option<&HaltState>) -> RolloutView {
    let waves = counts
        .waves
        .iter()
        .map(|(wave, by)| WaveView {
            wave: wave.clone(),
            by_status: Status::ALL
                .iter()
                .filter_map(|s| Some((s.as_str(), *by.get(s).filter(|n| **n > 0)?)))
                .collect(),
        })
        .collect();
    RolloutView {
        commit: commit.to_owned(),
        devices: counts.devices(),
        tried: counts.tried(),
        failures: counts.failures(),
        waves,
        halted: halt.is_some_and(|h| h.halted.is_some()),
        halt: halt.and_then(|h| h.halted.clone()),
        resumed: halt.and_then(|h| h.resumed.clone()),
    }
}

/// Every rollout: the commits reports target, and every commit with a halt state.
fn all(app: &AppState) -> Result<(Vec<RolloutView>, u64), ApiError> {
    let counts = app.rollouts.view()?;
    let halts = app.store.halts()?;
    let mut commits: Vec<String> = counts.keys().cloned().collect();
    commits.extend(halts.states.keys().map(|c| c.to_string()));
    commits.sort();
    commits.dedup();
    let empty = CommitCounts::default();
    let views = commits
        .iter()
        .map(|c| {
            let halt = CommitId::parse(c).ok().and_then(|id| halts.states.get(&id));
            view(c, counts.get(c).unwrap_or(&empty), halt)
        })
        .collect();
    Ok((views, halts.serial))
}

#[derive(Serialize)]
pub struct RolloutList {
    pub rollouts: Vec<RolloutView>,
    /// The halt list's serial as stored.
    pub halts_serial: u64,
}

/// `GET /api/v1/rollouts`.
pub async fn list_rollouts(
    State(app): State<Arc<AppState>>,
) -> Result<Json<RolloutList>, ApiError> {
    let (rollouts, halts_serial) = blocking(move || all(&app)).await?;
    Ok(Json(RolloutList {
        rollouts,
        halts_serial,
    }))
}

#[derive(Serialize)]
pub struct OneRollout {
    #[serde(flatten)]
    pub rollout: RolloutView,
    /// Devices on the commit (applied: the report's `commit`), one sample a minute, oldest first,
    /// the last 24 hours.
    pub adoption: Vec<Sample>,
}

/// `GET /api/v1/rollouts/{commit}`.
pub async fn one_rollout(
    State(app): State<Arc<AppState>>,
    Path(commit): Path<String>,
) -> Result<Json<OneRollout>, ApiError> {
    let id = CommitId::parse(&commit).map_err(|_| ApiError::BadCommit {
        input: commit.clone(),
    })?;
    let one = blocking(move || {
        let counts = app.rollouts.view()?.remove(id.as_str());
        let halts = app.store.halts()?;
        let halt = halts.states.get(&id);
        if counts.is_none() && halt.is_none() {
            return Err(ApiError::NotFound {
                what: format!(
                    "rollout of commit {id} (no report is about it and it was never halted)"
                ),
            });
        }
        let rollout = view(id.as_str(), &counts.unwrap_or_default(), halt);
        let adoption = samples(&app, id.as_str())?;
        Ok(OneRollout { rollout, adoption })
    })
    .await?;
    Ok(Json(one))
}

fn samples(app: &AppState, commit: &str) -> Result<Vec<Sample>, ApiError> {
    Ok(app
        .store
        .adoption(commit)?
        .into_iter()
        .map(|(minute, devices)| Sample {
            at: minute * 60,
            devices,
        })
        .collect())
}

/// `GET /rollouts`: the page.
pub async fn rollouts_page(State(app): State<Arc<AppState>>) -> Result<Html<String>, ApiError> {
    let now = app.config.clock.now();
    let page = blocking(move || {
        let (views, serial) = all(&app)?;
        let mut charts = Vec::with_capacity(views.len());
        for v in views {
            let adoption = samples(&app, &v.commit)?;
            charts.push((v, adoption));
        }
        Ok(render(&charts, serial, now))
    })
    .await?;
    Ok(Html(page))
}

/// The page: one section per rollout with its waves table and adoption chart.
pub fn render(rollouts: &[(RolloutView, Vec<Sample>)], serial: u64, now: u64) -> String {
    let mut h = String::with_capacity(4096 + rollouts.len() * 4096);
    h.push_str("<h1>Rollouts</h1>\n");
    let _ = writeln!(
        h,
        "<p>{} rollouts; halt list serial {serial}.</p>",
        rollouts.len()
    );
    for (v, adoption) in rollouts {
        let class = if v.halted {
            "rollout halted"
        } else {
            "rollout"
        };
        let _ = writeln!(
            h,
            r#"<section class="{class}" id="c-{c}"><h2><code>{c}</code></h2>"#,
            c = esc(&v.commit)
        );
        if let Some(halt) = &v.halt {
            let _ = writeln!(
                h,
                r#"<p><span class="s halted">halted</span> {} (since {})</p>"#,
                esc(&halt.reason),
                when(now, halt.since)
            );
        }
        let _ = writeln!(
            h,
            "<p>{} devices, {} tried, {} failed or rolled back</p>",
            v.devices, v.tried, v.failures
        );
        h.push_str(
            "<div class=\"scroll\"><table><tr><th>wave</th><th>devices by status</th></tr>\n",
        );
        for w in &v.waves {
            let statuses: Vec<String> = w
                .by_status
                .iter()
                .map(|(s, n)| format!("{s}: {n}"))
                .collect();
            let _ = writeln!(
                h,
                "<tr><td>{}</td><td>{}</td></tr>",
                esc(w.wave.as_deref().unwrap_or("(no waves)")),
                esc(&statuses.join(", "))
            );
        }
        h.push_str("</table></div>\n");
        h.push_str(&chart(v, adoption, now));
        h.push_str("</section>\n");
    }
    layout("Rollouts", "/rollouts", &h)
}

/// The adoption chart: devices on the commit over time as a step line, the halt as a red line
/// at its time. Plain SVG, every value computed here.
pub fn chart(v: &RolloutView, adoption: &[Sample], now: u64) -> String {
    const W: f64 = 600.0;
    const H: f64 = 160.0;
    const PAD: f64 = 30.0;
    let start = adoption
        .first()
        .map_or(now, |s| s.at)
        .min(v.halt.as_ref().map_or(now, |h| h.since));
    let end = now.max(start + 60);
    let top = adoption
        .iter()
        .map(|s| s.devices)
        .chain([v.devices, 1])
        .max()
        .unwrap_or(1);
    let x =
        |t: u64| PAD + (t.saturating_sub(start)) as f64 / (end - start) as f64 * (W - 2.0 * PAD);
    let y = |n: u64| H - PAD - n as f64 / top as f64 * (H - 2.0 * PAD);
    let mut s = String::with_capacity(1024 + adoption.len() * 24);
    let _ = write!(
        s,
        r#"<svg xmlns="http://www.w3.org/2000/svg" class="adoption" viewBox="0 0 {W} {H}" width="{W}" height="{H}" role="img" aria-label="devices on {c} over time">"#,
        c = esc(&v.commit)
    );
    let _ = write!(
        s,
        r##"<line x1="{PAD}" y1="{b}" x2="{r}" y2="{b}" stroke="#888"/><line x1="{PAD}" y1="{PAD}" x2="{PAD}" y2="{b}" stroke="#888"/>"##,
        b = H - PAD,
        r = W - PAD
    );
    let _ = write!(
        s,
        r#"<text x="4" y="{}" font-size="11">{top}</text><text x="4" y="{}" font-size="11">0</text>"#,
        PAD + 4.0,
        H - PAD
    );
    if !adoption.is_empty() {
        let mut points = String::new();
        let mut last: Option<u64> = None;
        for sample in adoption {
            if let Some(prev) = last {
                let _ = write!(points, "{:.1},{:.1} ", x(sample.at), y(prev));
            }
            let _ = write!(points, "{:.1},{:.1} ", x(sample.at), y(sample.devices));
            last = Some(sample.devices);
        }
        if let Some(prev) = last {
            let _ = write!(points, "{:.1},{:.1}", x(end), y(prev));
        }
        let _ = write!(
            s,
            r##"<polyline class="adoption-line" fill="none" stroke="#1565c0" stroke-width="2" points="{}"/>"##,
            points.trim_end()
        );
    }
    if let Some(halt) = &v.halt {
        let hx = x(halt.since);
        let _ = write!(
            s,
            r##"<line class="halt" x1="{hx:.1}" y1="{PAD}" x2="{hx:.1}" y2="{b}" stroke="#c62828" stroke-width="2"/><text x="{tx:.1}" y="{ty}" font-size="11" fill="#c62828">halted</text>"##,
            b = H - PAD,
            tx = hx + 3.0,
            ty = PAD + 10.0
        );
    }
    let _ = write!(
        s,
        r#"<text x="{PAD}" y="{}" font-size="11">devices on the commit, last {} min</text>"#,
        H - 8.0,
        (end - start) / 60
    );
    s.push_str("</svg>\n");
    s
}
