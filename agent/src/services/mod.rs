//! Services on the device: carries out the service plan (`shoal_core::services`, re-exported
//! here) through `systemctl` — daemon-reload, stop → disable → enable → start → restart, waiting
//! for each job — and undoes it (`revert`). The `health` module then gates the new generation on
//! the started units. It never writes managed paths: unit files and drop-ins are ordinary
//! declared files ([`merge_unit_files`]), written (and rolled back) by `apply` like any other.
//!
//! The caller's side, in the crash order `sync` keeps:
//! ```text
//! merge_unit_files(&mut desired)?;                  // before planning files
//! let records = records(&desired);
//! let files = plan::plan(...);
//! let services = plan(&records, &current.services, &changed_paths(&files));
//! apply::apply(&files, ...)?;                        // unit files written, journaled
//! execute(&services, &systemd).and(health::gate(&services, &systemd, timeout))
//!     // on failure: apply::undo, then revert(&services, &systemd), then mark the commit bad
//! state.commit_generation(.. services: records ..); apply::journal_done(..)
//! ```

mod error;
mod execute;
mod systemd;
#[cfg(test)]
mod tests;

pub use shoal_core::services::*;

pub(crate) use error::journal_section;
pub use error::ServiceError;
pub use execute::{execute, revert, Executed, RevertFailed};
pub use systemd::{ProbeResult, Systemd, UnitStatus};

use shoal_core::render::DesiredState;

/// [`shoal_core::services::merge_unit_files`], its conflict as a [`ServiceError`].
pub fn merge_unit_files(desired: &mut DesiredState) -> Result<(), ServiceError> {
    shoal_core::services::merge_unit_files(desired).map_err(ServiceError::UnitFileConflict)
}
