//! A throwaway certificate authority and the rustls (ring) server config it vouches for:
//! `localhost` and 127.0.0.1 by default, or the names a test asks for.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use rcgen::{
    BasicConstraints, CertificateParams, DnType, ExtendedKeyUsagePurpose, IsCa, Issuer, KeyPair,
    KeyUsagePurpose,
};
use rustls::pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer};
use rustls::ServerConfig;
use tempfile::TempDir;

/// A CA made for one server: its certificate as a PEM file for clients, and the server's TLS config.
pub struct TestCa {
    /// Holds the PEM files; removed with the server.
    _dir: TempDir,
    pem_path: PathBuf,
    cert_chain_path: PathBuf,
    key_path: PathBuf,
    pub(crate) server_config: Arc<ServerConfig>,
    /// What signs client certificates (`issue_client`) and vouches for them (`requiring_clients_of`).
    issuer: Issuer<'static, KeyPair>,
    ca_der: CertificateDer<'static>,
    server_chain: Vec<CertificateDer<'static>>,
    server_key_der: Vec<u8>,
}

/// A client certificate and its key, as PEM files, for `[source] client_cert` / `client_key`.
pub struct ClientCert {
    pub cert_path: PathBuf,
    pub key_path: PathBuf,
}

impl TestCa {
    pub(crate) fn generate() -> Self {
        Self::for_names(&["localhost", "127.0.0.1"])
    }

    /// A CA and a server certificate for `names` (DNS names or IP addresses), the first of
    /// which is the certificate's common name.
    pub fn for_names(names: &[&str]) -> Self {
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
            CertificateParams::new(names.iter().map(|n| n.to_string()).collect::<Vec<_>>())
                .unwrap_or_else(|e| panic!("{names:?} are not valid certificate names: {e}"));
        server_params
            .distinguished_name
            .push(DnType::CommonName, names[0]);
        server_params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth];
        let server_cert = server_params
            .signed_by(&server_key, &issuer)
            .expect("rcgen signs the server certificate");

        let dir = tempfile::tempdir().expect("cannot make a temporary directory for the CA");
        let write = |name: &str, pem: String| -> PathBuf {
            let path = dir.path().join(name);
            std::fs::write(&path, pem)
                .unwrap_or_else(|e| panic!("cannot write {}: {e}", path.display()));
            path
        };
        let pem_path = write("ca.pem", ca_cert.pem());
        let cert_chain_path = write("server.pem", server_cert.pem() + &ca_cert.pem());
        let key_path = write("server.key", server_key.serialize_pem());
        let server_chain = vec![server_cert.der().clone(), ca_cert.der().clone()];
        let server_key_der = server_key.serialize_der();
        let config = server_config(&server_chain, &server_key_der, None);
        TestCa {
            _dir: dir,
            pem_path,
            cert_chain_path,
            key_path,
            server_config: config,
            issuer,
            ca_der: ca_cert.der().clone(),
            server_chain,
            server_key_der,
        }
    }

    /// A client certificate for `name` signed by this CA, written as PEM files in `dir` (the key
    /// 0600, as the agent requires).
    pub fn issue_client(&self, dir: &Path, name: &str) -> ClientCert {
        use std::os::unix::fs::PermissionsExt;
        let key = KeyPair::generate().expect("rcgen generates a client key");
        let mut params = CertificateParams::new(Vec::<String>::new()).expect("no names to parse");
        params.distinguished_name.push(DnType::CommonName, name);
        params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ClientAuth];
        let cert = params
            .signed_by(&key, &self.issuer)
            .expect("rcgen signs the client certificate");
        std::fs::create_dir_all(dir).expect("mkdir for the client certificate");
        let cert_path = dir.join(format!("{name}.pem"));
        let key_path = dir.join(format!("{name}.key"));
        std::fs::write(&cert_path, cert.pem()).expect("write the client certificate");
        std::fs::write(&key_path, key.serialize_pem()).expect("write the client key");
        std::fs::set_permissions(&key_path, std::fs::Permissions::from_mode(0o600))
            .expect("chmod the client key");
        ClientCert {
            cert_path,
            key_path,
        }
    }

    /// This CA's server config, also requiring a client certificate signed by `clients`.
    pub(crate) fn requiring_clients_of(&self, clients: &TestCa) -> Arc<ServerConfig> {
        server_config(
            &self.server_chain,
            &self.server_key_der,
            Some(clients.ca_der.clone()),
        )
    }

    /// The CA certificate (PEM), for `GIT_SSL_CAINFO` or the agent's trust settings.
    pub fn pem_path(&self) -> &Path {
        &self.pem_path
    }

    /// The server certificate then the CA's (PEM), for a server such as `shoal-collector --tls-cert`.
    pub fn cert_chain_path(&self) -> &Path {
        &self.cert_chain_path
    }

    /// The server's private key (PKCS#8 PEM), for `--tls-key`.
    pub fn key_path(&self) -> &Path {
        &self.key_path
    }
}

/// The rustls (ring) server config for `chain` and `key`, requiring a client certificate that
/// `client_ca` signed when there is one.
fn server_config(
    chain: &[CertificateDer<'static>],
    key: &[u8],
    client_ca: Option<CertificateDer<'static>>,
) -> Arc<ServerConfig> {
    let key = PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(key.to_vec()));
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let builder = ServerConfig::builder_with_provider(Arc::clone(&provider))
        .with_safe_default_protocol_versions()
        .expect("ring supports the default TLS versions");
    let builder = match client_ca {
        Some(ca) => {
            let mut roots = rustls::RootCertStore::empty();
            roots.add(ca).expect("the client CA is a valid certificate");
            let verifier = rustls::server::WebPkiClientVerifier::builder_with_provider(
                Arc::new(roots),
                provider,
            )
            .build()
            .expect("a client verifier for the test CA");
            builder.with_client_cert_verifier(verifier)
        }
        None => builder.with_no_client_auth(),
    };
    let mut config = builder
        .with_single_cert(chain.to_vec(), key)
        .expect("the server certificate matches its key");
    // The server speaks HTTP/1.1 only; say so rather than let a client guess h2.
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    Arc::new(config)
}
