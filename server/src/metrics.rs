//! Process counters (reports accepted, rejected by reason, reports carrying an enrollment token,
//! refused reads, operators' key changes, refused admin requests, store errors) and their
//! Prometheus text rendering together with the fleet gauges. Counters reset when the process
//! restarts, as Prometheus expects; fleet gauges come from the persisted tally.

use std::fmt::Write as _;
use std::sync::atomic::{AtomicU64, Ordering};

use shoal_fleet::ingest::Rejection;
use shoal_fleet::rollout::CommitCounts;
use shoal_fleet::tally::Summary;

/// The `action` label of `shoal_admin_key_changes_total` (`keys::KeyChange::action`).
const ADMIN_ACTIONS: [&str; 2] = ["unpin", "rekey"];
/// Its `result` label: the pin changed, it was already so, or the request was refused (4xx).
pub const ADMIN_RESULTS: [&str; 3] = ["changed", "unchanged", "refused"];

#[derive(Debug, Default)]
pub struct Metrics {
    accepted: AtomicU64,
    enrolled: AtomicU64,
    rejected: [AtomicU64; Rejection::REASON_CODES.len()],
    with_enroll_token: AtomicU64,
    unauthorized: AtomicU64,
    admin_unauthorized: AtomicU64,
    key_changes: [[AtomicU64; ADMIN_RESULTS.len()]; ADMIN_ACTIONS.len()],
    store_errors: AtomicU64,
}

impl Metrics {
    pub fn accepted(&self, enrolled: bool) {
        self.accepted.fetch_add(1, Ordering::Relaxed);
        if enrolled {
            self.enrolled.fetch_add(1, Ordering::Relaxed);
        }
    }

    pub fn rejected(&self, r: &Rejection) {
        let code = r.reason_code();
        if let Some(i) = Rejection::REASON_CODES.iter().position(|c| *c == code) {
            self.rejected[i].fetch_add(1, Ordering::Relaxed);
        }
    }

    pub fn unauthorized(&self) {
        self.unauthorized.fetch_add(1, Ordering::Relaxed);
    }

    /// A report arrived with an `X-Shoal-Enroll` header (whatever became of it).
    pub fn enroll_token_presented(&self) {
        self.with_enroll_token.fetch_add(1, Ordering::Relaxed);
    }

    /// Reports that carried an `X-Shoal-Enroll` header since the process started.
    pub fn enroll_token_presented_count(&self) -> u64 {
        self.with_enroll_token.load(Ordering::Relaxed)
    }

    /// An admin request without an admin token (missing, wrong, or admin endpoints off).
    pub fn admin_unauthorized(&self) {
        self.admin_unauthorized.fetch_add(1, Ordering::Relaxed);
    }

    /// An operator's key change: `action` is `KeyChange::action`, `result` one of [`ADMIN_RESULTS`].
    pub fn key_change(&self, action: &str, result: &str) {
        let action = ADMIN_ACTIONS.iter().position(|a| *a == action);
        let result = ADMIN_RESULTS.iter().position(|r| *r == result);
        if let (Some(a), Some(r)) = (action, result) {
            self.key_changes[a][r].fetch_add(1, Ordering::Relaxed);
        }
    }

    pub fn store_error(&self) {
        self.store_errors.fetch_add(1, Ordering::Relaxed);
    }

    /// Reports rejected for `reason_code` since the process started.
    pub fn rejected_count(&self, reason_code: &str) -> u64 {
        Rejection::REASON_CODES
            .iter()
            .position(|c| *c == reason_code)
            .map_or(0, |i| self.rejected[i].load(Ordering::Relaxed))
    }

    pub fn accepted_count(&self) -> u64 {
        self.accepted.load(Ordering::Relaxed)
    }

    /// Prometheus text exposition format 0.0.4.
    pub fn render(&self, fleet: &Summary) -> String {
        let mut out = String::new();
        let mut family = |name: &str, kind: &str, help: &str, samples: &[(String, u64)]| {
            let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} {kind}");
            for (labels, v) in samples {
                let _ = writeln!(out, "{name}{labels} {v}");
            }
        };
        let one = |v: &AtomicU64| vec![(String::new(), v.load(Ordering::Relaxed))];
        family(
            "shoal_reports_accepted_total",
            "counter",
            "Signed reports accepted and stored.",
            &one(&self.accepted),
        );
        family(
            "shoal_enrollments_total",
            "counter",
            "Device keys pinned on first contact with an enrollment token.",
            &one(&self.enrolled),
        );
        let rejected: Vec<_> = Rejection::REASON_CODES
            .iter()
            .zip(&self.rejected)
            .map(|(code, v)| (format!("{{reason=\"{code}\"}}"), v.load(Ordering::Relaxed)))
            .collect();
        family(
            "shoal_reports_rejected_total",
            "counter",
            "Reports rejected, by reason; nothing was stored for them.",
            &rejected,
        );
        family(
            "shoal_reports_with_enroll_token_total",
            "counter",
            "Reports that carried an X-Shoal-Enroll header (agents stop sending it once enrolled).",
            &one(&self.with_enroll_token),
        );
        family(
            "shoal_read_unauthorized_total",
            "counter",
            "Read requests refused for a missing or wrong bearer token.",
            &one(&self.unauthorized),
        );
        let key_changes: Vec<_> = ADMIN_ACTIONS
            .iter()
            .zip(&self.key_changes)
            .flat_map(|(action, results)| {
                ADMIN_RESULTS.iter().zip(results).map(move |(result, v)| {
                    (
                        format!("{{action=\"{action}\",result=\"{result}\"}}"),
                        v.load(Ordering::Relaxed),
                    )
                })
            })
            .collect();
        family(
            "shoal_admin_key_changes_total",
            "counter",
            "Operators' key changes (unpin, rekey) by result: changed, unchanged, refused.",
            &key_changes,
        );
        family(
            "shoal_admin_unauthorized_total",
            "counter",
            "Admin requests refused for a missing or wrong admin token, or with admin endpoints off.",
            &one(&self.admin_unauthorized),
        );
        family(
            "shoal_store_errors_total",
            "counter",
            "Requests that failed because the store failed (answered 503).",
            &one(&self.store_errors),
        );
        let by_status: Vec<_> = fleet
            .by_status
            .iter()
            .map(|(s, n)| (format!("{{status=\"{s}\"}}"), *n))
            .collect();
        family(
            "shoal_devices",
            "gauge",
            "Devices by the status of their latest report.",
            &by_status,
        );
        family(
            "shoal_devices_total",
            "gauge",
            "Devices that have reported at least once.",
            &[(String::new(), fleet.total)],
        );
        family(
            "shoal_devices_stale",
            "gauge",
            "Devices not seen for longer than the stale threshold.",
            &[(String::new(), fleet.stale)],
        );
        family(
            "shoal_stale_after_seconds",
            "gauge",
            "The stale threshold in seconds.",
            &[(String::new(), fleet.stale_after_secs)],
        );
        out
    }
}

/// Label values escaped for the text format (`\`, `"`, newline): wave names come from repos.
fn label(v: &str) -> String {
    v.replace('\\', "\\\\")
        .replace('"', "\\\"")
        .replace('\n', "\\n")
}

/// The rollout gauges: devices by target commit, wave and status; halted commits; the halt
/// list's serial. Appended to `Metrics::render`'s output by the `/metrics` handler.
pub fn render_rollouts(
    rollouts: &std::collections::BTreeMap<String, CommitCounts>,
    halted: &[shoal_proto::Halt],
    serial: u64,
) -> String {
    let mut out = String::new();
    out.push_str("# HELP shoal_rollout_devices Devices whose latest report is about a commit (its target), by the device's wave for it and status.\n# TYPE shoal_rollout_devices gauge\n");
    for (commit, counts) in rollouts {
        for (wave, by) in &counts.waves {
            for (status, n) in by {
                let _ = writeln!(
                    out,
                    "shoal_rollout_devices{{commit=\"{commit}\",wave=\"{}\",status=\"{status}\"}} {n}",
                    label(wave.as_deref().unwrap_or(""))
                );
            }
        }
    }
    out.push_str("# HELP shoal_rollout_halted A commit halted by the collector's signed list (1 while halted).\n# TYPE shoal_rollout_halted gauge\n");
    for h in halted {
        let _ = writeln!(out, "shoal_rollout_halted{{commit=\"{}\"}} 1", h.commit);
    }
    let _ = writeln!(
        out,
        "# HELP shoal_rollouts_halted Commits halted now.\n# TYPE shoal_rollouts_halted gauge\nshoal_rollouts_halted {}",
        halted.len()
    );
    let _ = writeln!(
        out,
        "# HELP shoal_halts_serial The serial of the halt list this process signs.\n# TYPE shoal_halts_serial gauge\nshoal_halts_serial {serial}"
    );
    out
}
