//! The collector's decisions and the fleet's counts, with no I/O: whether a report is accepted
//! (`ingest`), whether an operator's key change is (`keys`), what an accepted report becomes
//! (`record`), the incrementally kept counts (`tally`), and rollouts: each commit's devices by
//! wave and status and the halt decisions, operator's and automatic (`rollout`). Each decider takes the current state
//! (and the clock) as arguments and returns its decision as data; the collector's store reads
//! the state, calls them, and records what they decide.
//!
//! Dependencies inside: `ingest` → `record`; `rollout` → `tally`; `keys`, `tally` and `record`
//! know only `shoal-proto`.
//! The crate has no store, HTTP, runtime or file-system dependency (`tests/no_io.rs`).

pub mod ingest;
pub mod keys;
pub mod record;
pub mod rollout;
pub mod tally;
