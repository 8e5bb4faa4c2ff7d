//! The Shoal agent library: one module per step of a sync (fetch → verify → …), driven by `cli`.

pub mod cli;
pub mod config;
pub mod fetch;
pub mod paths;
pub mod render;
pub mod state;
pub mod sync;
pub mod verify;
