//! The Shoal agent library: one module per step of a sync (fetch → verify → …), driven by `cli`.
