//! Wire types shared by the Shoal agent and the collector: reports, the signed envelope and
//! status values. This crate does no I/O.

use serde::{Deserialize, Serialize};

/// The convergence state a device reports (DESIGN.md, "Reports and the collector").
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Status {
    Converged,
    Applying,
    Failed,
    RolledBack,
    Held,
    Refused,
    Drifted,
}
