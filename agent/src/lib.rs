//! The Shoal agent library: one module per step of a sync (fetch → verify → …), driven by `cli`.

pub mod apply;
pub mod approve;
pub mod cli;
pub mod config;
pub mod credential;
pub mod daemon;
pub mod doctor;
pub mod errors;
pub mod fetch;
pub mod halts;
pub mod health;
pub mod init;
pub mod metrics;
pub mod notify;
pub mod paths;
pub mod plan;
pub mod proxy;
pub mod release;
pub mod render;
pub mod report;
pub mod rollback;
pub mod services;
pub mod state;
pub mod sync;
pub mod tls;
pub mod verify;
