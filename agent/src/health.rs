//! The health gate, the step between apply and the commit point: decides whether the units a plan started or restarted came up and stay up —
//! active through a grace window without automatic restarts (or finished successfully, for
//! oneshot units), and their `health.exec` probes passing. It changes nothing in systemd.

use std::time::{Duration, Instant};

use crate::render::ServiceState;
use crate::services::{
    journal_section, HealthProbe, ProbeResult, ServicePlan, Systemd, UnitStatus,
};

/// Pause between two runs of a failing probe: a service often needs a moment before it answers.
const PROBE_RETRY: Duration = Duration::from_millis(500);
const JOURNAL_LINES: u32 = 20;

/// The units the gate checked (all of them passed).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Healthy {
    pub units: Vec<String>,
}

/// The first unit found unhealthy, why, and the end of its journal.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error(
    "{unit} is not healthy: {reason}{}",
    journal_section(unit, journal_tail)
)]
pub struct HealthFailure {
    pub unit: String,
    pub reason: Unhealthy,
    /// `journalctl -u UNIT -n 20`.
    pub journal_tail: String,
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Unhealthy {
    #[error("it failed after starting, now {status}")]
    Failed { status: String },
    #[error("it exited right after starting, now {status}; a unit declared running must keep running (or be Type=oneshot)")]
    Exited { status: String },
    #[error("systemd restarted it automatically {restarts} time(s) right after it was started, now {status}")]
    Restarted { restarts: u32, status: String },
    #[error("it did not become active within {} (health_timeout in agent.toml), still {status}", seconds(*timeout))]
    NotActive { timeout: Duration, status: String },
    #[error("its health check `{exec}` failed ({status}){}", probe_output(output))]
    ProbeFailed {
        exec: String,
        status: String,
        output: String,
    },
    #[error("its health check `{exec}` did not exit within {}", seconds(*timeout))]
    ProbeTimedOut { exec: String, timeout: Duration },
    #[error("cannot read its state from systemd: {message}")]
    Unknown { message: String },
}

/// Checks every unit `plan` starts or restarts (after [`super::execute`] ran it): each must
/// become active within `timeout` and stay active, without automatic restarts, for the grace
/// window of `systemd` (a oneshot unit must instead have finished successfully; a unit whose
/// `Condition…=` skipped it passes), then its probe must exit 0 within its own timeout (it is
/// retried until then), and the unit must still be active after the probes. Offline, nothing
/// was started and nothing is checked.
pub fn gate(
    plan: &ServicePlan,
    systemd: &Systemd,
    timeout: Duration,
) -> Result<Healthy, HealthFailure> {
    if !systemd.is_live() {
        return Ok(Healthy::default());
    }
    let mut units: Vec<String> = plan.started().map(|a| a.unit.clone()).collect();
    units.dedup();
    let fail = |unit: &str, reason: Unhealthy| HealthFailure {
        unit: unit.to_owned(),
        reason,
        journal_tail: systemd.journal_tail(unit, JOURNAL_LINES),
    };
    let status = |unit: &str| {
        systemd.status(unit).map_err(|e| Unhealthy::Unknown {
            message: e.to_string(),
        })
    };

    let began = Instant::now();
    // While the units are being gated (started, inside their grace window).
    crate::apply::failpoint::fail_point!("services_health_gate");
    let mut watches: Vec<Watch> = units.iter().map(|u| Watch::new(u)).collect();
    while watches.iter().any(|w| !w.settled) {
        let now = Instant::now();
        for watch in watches.iter_mut().filter(|w| !w.settled) {
            let found = status(&watch.unit).map_err(|r| fail(&watch.unit, r))?;
            watch
                .observe(&found, now, began, systemd.grace, timeout)
                .map_err(|r| fail(&watch.unit, r))?;
        }
        if watches.iter().any(|w| !w.settled) {
            std::thread::sleep(systemd.poll);
        }
    }

    for unit in &units {
        let probe = plan
            .transitions
            .get(unit)
            .and_then(|t| t.after.as_ref())
            .filter(|after| after.state == ServiceState::Running)
            .and_then(|after| after.health.as_ref());
        if let Some(probe) = probe {
            run_probe(systemd, probe).map_err(|r| fail(unit, r))?;
        }
    }
    // A unit can die while another one's probe runs.
    for unit in &units {
        let found = status(unit).map_err(|r| fail(unit, r))?;
        match assess(&found) {
            Phase::Up | Phase::Finished => {}
            Phase::Broken(reason) => return Err(fail(unit, reason)),
            Phase::Pending => {
                return Err(fail(
                    unit,
                    Unhealthy::Failed {
                        status: found.describe(),
                    },
                ))
            }
        }
    }
    Ok(Healthy { units })
}

/// One unit under watch until it is settled (up for the grace window, or finished).
struct Watch {
    unit: String,
    up_since: Option<Instant>,
    settled: bool,
}

impl Watch {
    fn new(unit: &str) -> Watch {
        Watch {
            unit: unit.to_owned(),
            up_since: None,
            settled: false,
        }
    }

    fn observe(
        &mut self,
        status: &UnitStatus,
        now: Instant,
        began: Instant,
        grace: Duration,
        timeout: Duration,
    ) -> Result<(), Unhealthy> {
        match assess(status) {
            Phase::Broken(reason) => Err(reason),
            Phase::Finished => {
                self.settled = true;
                Ok(())
            }
            Phase::Up => {
                let since = *self.up_since.get_or_insert(now);
                self.settled = now.duration_since(since) >= grace;
                Ok(())
            }
            Phase::Pending => {
                self.up_since = None;
                if now.duration_since(began) >= timeout {
                    return Err(Unhealthy::NotActive {
                        timeout,
                        status: status.describe(),
                    });
                }
                Ok(())
            }
        }
    }
}

/// Where a unit stands after it was started.
#[derive(Debug, PartialEq, Eq)]
enum Phase {
    /// Active (or reloading).
    Up,
    /// Done and fine: a oneshot that exited successfully, or a start skipped by a condition.
    Finished,
    /// Still activating or deactivating.
    Pending,
    Broken(Unhealthy),
}

fn assess(status: &UnitStatus) -> Phase {
    let described = || status.describe();
    if status.n_restarts > 0 {
        return Phase::Broken(Unhealthy::Restarted {
            restarts: status.n_restarts,
            status: described(),
        });
    }
    match status.active_state.as_str() {
        "active" | "reloading" => Phase::Up,
        "failed" => Phase::Broken(Unhealthy::Failed {
            status: described(),
        }),
        // Exited and waiting for its automatic restart: as failed as it gets.
        "activating" if status.sub_state == "auto-restart" => Phase::Broken(Unhealthy::Failed {
            status: described(),
        }),
        "activating" | "deactivating" => Phase::Pending,
        "inactive" if status.condition_result == "no" => Phase::Finished,
        "inactive" if status.service_type == "oneshot" && status.result == "success" => {
            Phase::Finished
        }
        _ => Phase::Broken(Unhealthy::Exited {
            status: described(),
        }),
    }
}

/// Runs the probe until it exits 0 or its timeout is spent.
fn run_probe(systemd: &Systemd, probe: &HealthProbe) -> Result<(), Unhealthy> {
    let deadline = Instant::now() + probe.timeout;
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        let failed = match systemd.probe(&probe.exec, left) {
            Ok(ProbeResult::Exited { success: true, .. }) => return Ok(()),
            Ok(ProbeResult::Exited { status, output, .. }) => Unhealthy::ProbeFailed {
                exec: probe.exec.clone(),
                status,
                output,
            },
            Ok(ProbeResult::TimedOut) => {
                return Err(Unhealthy::ProbeTimedOut {
                    exec: probe.exec.clone(),
                    timeout: probe.timeout,
                })
            }
            Err(e) => {
                return Err(Unhealthy::Unknown {
                    message: e.to_string(),
                })
            }
        };
        if Instant::now() + PROBE_RETRY >= deadline {
            return Err(failed);
        }
        std::thread::sleep(PROBE_RETRY);
    }
}

fn seconds(d: Duration) -> String {
    format!("{:.1}s", d.as_secs_f64())
}

fn probe_output(output: &str) -> String {
    if output.is_empty() {
        String::new()
    } else {
        format!(": {output}")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn status(active: &str, sub: &str, result: &str, kind: &str) -> UnitStatus {
        UnitStatus {
            load_state: "loaded".into(),
            active_state: active.into(),
            sub_state: sub.into(),
            result: result.into(),
            service_type: kind.into(),
            ..UnitStatus::default()
        }
    }

    #[test]
    fn assess_tells_up_finished_pending_and_broken_apart() {
        assert_eq!(
            assess(&status("active", "running", "success", "simple")),
            Phase::Up
        );
        assert_eq!(
            assess(&status("inactive", "dead", "success", "oneshot")),
            Phase::Finished
        );
        assert_eq!(
            assess(&status("activating", "start", "success", "notify")),
            Phase::Pending
        );
        let skipped = UnitStatus {
            condition_result: "no".into(),
            ..status("inactive", "dead", "success", "simple")
        };
        assert_eq!(assess(&skipped), Phase::Finished);
        assert_eq!(
            assess(&status("failed", "failed", "exit-code", "simple")),
            Phase::Broken(Unhealthy::Failed {
                status: "failed (failed, result exit-code)".into()
            })
        );
        assert_eq!(
            assess(&status("inactive", "dead", "success", "simple")),
            Phase::Broken(Unhealthy::Exited {
                status: "inactive (dead)".into()
            })
        );
        assert!(matches!(
            assess(&status("activating", "auto-restart", "exit-code", "simple")),
            Phase::Broken(Unhealthy::Failed { .. })
        ));
        let flapping = UnitStatus {
            n_restarts: 2,
            ..status("active", "running", "success", "simple")
        };
        assert!(matches!(
            assess(&flapping),
            Phase::Broken(Unhealthy::Restarted { restarts: 2, .. })
        ));
    }

    #[test]
    fn a_unit_settles_only_after_staying_up_for_the_grace_window() {
        let grace = Duration::from_secs(2);
        let timeout = Duration::from_secs(30);
        let t0 = Instant::now();
        let up = status("active", "running", "success", "simple");
        let mut watch = Watch::new("a.service");
        watch.observe(&up, t0, t0, grace, timeout).unwrap();
        assert!(!watch.settled);
        // Going back to activating restarts the window.
        let activating = status("activating", "start", "success", "simple");
        let t1 = t0 + Duration::from_secs(1);
        watch.observe(&activating, t1, t0, grace, timeout).unwrap();
        watch
            .observe(&up, t0 + Duration::from_secs(2), t0, grace, timeout)
            .unwrap();
        assert!(!watch.settled);
        watch
            .observe(&up, t0 + Duration::from_secs(4), t0, grace, timeout)
            .unwrap();
        assert!(watch.settled);
    }

    #[test]
    fn a_unit_still_activating_at_the_timeout_is_not_active() {
        let t0 = Instant::now();
        let mut watch = Watch::new("a.service");
        let activating = status("activating", "start", "success", "notify");
        let timeout = Duration::from_secs(5);
        let err = watch
            .observe(
                &activating,
                t0 + timeout,
                t0,
                Duration::from_secs(2),
                timeout,
            )
            .unwrap_err();
        assert_eq!(
            err.to_string(),
            "it did not become active within 5.0s (health_timeout in agent.toml), still activating (start)"
        );
    }

    #[test]
    fn the_failure_message_names_the_unit_and_quotes_its_journal() {
        let failure = HealthFailure {
            unit: "telemetry.service".into(),
            reason: Unhealthy::Failed {
                status: "failed (failed, result exit-code)".into(),
            },
            journal_tail: "Nov 25 15:37:02 vm sh[124]: boom\n".into(),
        };
        assert_eq!(
            failure.to_string(),
            "telemetry.service is not healthy: it failed after starting, now failed (failed, result exit-code)\n\
             last lines of `journalctl -u telemetry.service`:\n\
             Nov 25 15:37:02 vm sh[124]: boom"
        );
    }
}
