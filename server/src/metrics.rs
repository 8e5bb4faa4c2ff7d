//! Process counters (reports accepted, rejected by reason, refused reads, store errors) and their
//! Prometheus text rendering together with the fleet gauges. Counters reset when the process
//! restarts, as Prometheus expects; fleet gauges come from the persisted tally.

use std::fmt::Write as _;
use std::sync::atomic::{AtomicU64, Ordering};

use crate::ingest::Rejection;
use crate::tally::Summary;

#[derive(Debug, Default)]
pub struct Metrics {
    accepted: AtomicU64,
    enrolled: AtomicU64,
    rejected: [AtomicU64; Rejection::REASON_CODES.len()],
    unauthorized: AtomicU64,
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
            "shoal_read_unauthorized_total",
            "counter",
            "Read requests refused for a missing or wrong bearer token.",
            &one(&self.unauthorized),
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
