//! A throwaway certificate authority and the rustls (ring) server config it vouches for: `localhost` and 127.0.0.1.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use rcgen::{
    BasicConstraints, CertificateParams, DnType, ExtendedKeyUsagePurpose, IsCa, Issuer, KeyPair,
    KeyUsagePurpose,
};
use rustls::pki_types::{PrivateKeyDer, PrivatePkcs8KeyDer};
use rustls::ServerConfig;
use tempfile::TempDir;

/// A CA made for one server: its certificate as a PEM file for clients, and the server's TLS config.
pub(crate) struct TestCa {
    /// Holds the PEM file; removed with the server.
    _dir: TempDir,
    pem_path: PathBuf,
    pub(crate) server_config: Arc<ServerConfig>,
}

impl TestCa {
    pub(crate) fn generate() -> Self {
        let ca_key = KeyPair::generate().expect("rcgen generates a CA key");
        let mut ca_params =
            CertificateParams::new(Vec::<String>::new()).expect("no names to parse");
        ca_params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        ca_params
            .distinguished_name
            .push(DnType::CommonName, "Shoal e2e test CA");
        ca_params.key_usages = vec![
            KeyUsagePurpose::KeyCertSign,
            KeyUsagePurpose::CrlSign,
            KeyUsagePurpose::DigitalSignature,
        ];
        let ca_cert = ca_params
            .self_signed(&ca_key)
            .expect("rcgen self-signs the CA");
        let issuer = Issuer::new(ca_params, ca_key);

        let server_key = KeyPair::generate().expect("rcgen generates a server key");
        let mut server_params =
            CertificateParams::new(vec!["localhost".to_owned(), "127.0.0.1".to_owned()])
                .expect("localhost and 127.0.0.1 are valid names");
        server_params
            .distinguished_name
            .push(DnType::CommonName, "localhost");
        server_params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth];
        let server_cert = server_params
            .signed_by(&server_key, &issuer)
            .expect("rcgen signs the server certificate");

        let key = PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(server_key.serialize_der()));
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let mut config = ServerConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .expect("ring supports the default TLS versions")
            .with_no_client_auth()
            .with_single_cert(vec![server_cert.der().clone(), ca_cert.der().clone()], key)
            .expect("the server certificate matches its key");
        // The server speaks HTTP/1.1 only; say so rather than let a client guess h2.
        config.alpn_protocols = vec![b"http/1.1".to_vec()];

        let dir = tempfile::tempdir().expect("cannot make a temporary directory for the CA");
        let pem_path = dir.path().join("ca.pem");
        std::fs::write(&pem_path, ca_cert.pem())
            .unwrap_or_else(|e| panic!("cannot write {}: {e}", pem_path.display()));
        TestCa {
            _dir: dir,
            pem_path,
            server_config: Arc::new(config),
        }
    }

    /// The CA certificate (PEM), for `GIT_SSL_CAINFO` or the agent's trust settings.
    pub(crate) fn pem_path(&self) -> &Path {
        &self.pem_path
    }
}
