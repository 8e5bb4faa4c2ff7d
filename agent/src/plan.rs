//! Plan: `shoal_core::plan`, the pure diff between the desired state, the current generation's
//! manifest and the disk, re-exported where the agent's steps look for it.

pub use shoal_core::plan::*;
