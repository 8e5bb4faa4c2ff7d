//! TLS for every connection the agent makes (the config repository over HTTPS, the collector):
//! rustls on the `ring` provider (never aws-lc), trusting a pinned CA file or the system's roots.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use crate::credential::ClientIdentity;
use crate::paths;

/// A CA file, or a client certificate and key, that cannot be used.
#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    #[error("cannot use the CA file {}: {message}", path.display())]
    CaFile { path: PathBuf, message: String },
    #[error("cannot use the client key {}: {message}", path.display())]
    ClientKey { path: PathBuf, message: String },
}

/// A rustls client config on the `ring` provider, trusting either the CA certificates in
/// `ca_file` (a pinned private CA) or the system's root store, without a client certificate.
pub fn client_config(ca_file: Option<&Path>) -> Result<Arc<rustls::ClientConfig>, TlsError> {
    client_config_with(ca_file, None)
}

/// [`client_config`] presenting `identity` to a server that asks for a client certificate.
pub fn client_config_with(
    ca_file: Option<&Path>,
    identity: Option<&ClientIdentity>,
) -> Result<Arc<rustls::ClientConfig>, TlsError> {
    use rustls::pki_types::{pem::PemObject, CertificateDer};
    let mut roots = rustls::RootCertStore::empty();
    match ca_file {
        Some(path) => {
            let failed = |message: String| TlsError::CaFile {
                path: path.to_owned(),
                message,
            };
            let pem = paths::read(path).map_err(|e| failed(e.to_string()))?;
            for cert in CertificateDer::pem_slice_iter(&pem) {
                let cert = cert.map_err(|e| failed(format!("not a PEM certificate file: {e}")))?;
                roots.add(cert).map_err(|e| failed(e.to_string()))?;
            }
            if roots.is_empty() {
                return Err(failed("contains no certificate".into()));
            }
        }
        None => {
            let native = rustls_native_certs::load_native_certs();
            roots.add_parsable_certificates(native.certs);
        }
    }
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let config = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| TlsError::CaFile {
            path: ca_file.unwrap_or(Path::new("<system roots>")).to_owned(),
            message: e.to_string(),
        })?
        .with_root_certificates(roots);
    let config = match identity {
        Some(identity) => {
            let (certs, key) = identity.for_rustls();
            config
                .with_client_auth_cert(certs, key)
                .map_err(|e| TlsError::ClientKey {
                    path: identity.key_file.clone(),
                    message: format!(
                        "the key does not go with {} or is of a kind rustls cannot use: {e}",
                        identity.cert_file.display()
                    ),
                })?
        }
        None => config.with_no_client_auth(),
    };
    Ok(Arc::new(config))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_ca_file_without_certificates_is_refused_naming_it() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("ca.pem");
        std::fs::write(&path, "not pem\n").unwrap();
        let err = client_config(Some(&path)).unwrap_err();
        assert_eq!(
            err.to_string(),
            format!(
                "cannot use the CA file {}: contains no certificate",
                path.display()
            )
        );
        assert!(client_config(None).is_ok());
    }
}
