//! Commit signatures: the SSHSIG signature in a commit's `gpgsig` header checked against an
//! OpenSSH `allowed_signers` trust root (ed25519 only), minus the keys a revocation file lists.
//! Bytes in, a signer or an error out.

pub mod allowed_signers;
pub mod revoked;
pub mod sshsig;

pub use allowed_signers::{AllowedSigners, SignersError};
pub use revoked::{Revocation, RevokedBy, RevokedError, RevokedKeys};
pub use sshsig::{SignatureError, Signed, Signer};
