//! Verify: decides whether a fetched commit may be trusted — SSH commit signatures checked
//! against the device's `allowed_signers`, plus anti-rollback. Reads git objects, writes nothing.

pub mod allowed_signers;
mod policy;
pub mod sshsig;

pub use allowed_signers::{AllowedSigners, SignersError};
pub use policy::{commit_id, verify_update, TrustPolicy, Verified, VerifyError};
pub use sshsig::{SignatureError, Signer};
