//! What the collector keeps about a device: its latest accepted state (`DeviceRecord`) and one
//! entry of its history (`HistoryEntry`). Plain data: `ingest::decide` builds them, the
//! collector's store persists them, its API and fleet page show them.

use serde::{Deserialize, Serialize};
use shoal_proto::Report;

/// How many reports the collector keeps per device (the newest).
pub const HISTORY_LIMIT: u64 = 100;

/// A device's latest accepted state.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct DeviceRecord {
    /// The key the device's reports are signed with (pinned).
    pub key_id: String,
    /// Collector time (unix s) of the first accepted report.
    pub first_seen: u64,
    /// Collector time (unix s) of the latest accepted report.
    pub last_seen: u64,
    /// Next history slot; the kept slots are
    /// `history_next.saturating_sub(HISTORY_LIMIT)..history_next`.
    pub history_next: u64,
    pub report: Report,
}

/// One accepted report, as kept in a device's history.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct HistoryEntry {
    /// Collector time (unix s) the report was accepted.
    pub received_at: u64,
    pub report: Report,
}
