//! TLS to PostgreSQL over rustls on the ring provider: the `MakeTlsConnect` that tokio-postgres
//! asks for, verifying the server's certificate against `--store-ca` or the system's roots. No
//! channel binding (SCRAM without `-PLUS`): the certificate check is what authenticates the server.

use std::future::Future;
use std::io;
use std::path::Path;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use rustls::pki_types::{CertificateDer, ServerName};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio_postgres::tls::{ChannelBinding, MakeTlsConnect, TlsConnect};
use tokio_rustls::client::TlsStream;
use tokio_rustls::TlsConnector;

/// Makes one TLS connector per connection (the host name is the one being connected to).
#[derive(Clone)]
pub struct RustlsConnector {
    config: Arc<rustls::ClientConfig>,
    /// What the server's certificate is checked against, for messages.
    trust: Arc<str>,
}

impl RustlsConnector {
    /// Trusts the PEM certificates in `ca` if given, else the system's roots.
    pub fn new(ca: Option<&Path>) -> Result<RustlsConnector, String> {
        let mut roots = rustls::RootCertStore::empty();
        match ca {
            Some(path) => {
                let pem = std::fs::read(path)
                    .map_err(|e| format!("reading --store-ca {}: {e}", path.display()))?;
                let certs: Vec<CertificateDer<'static>> =
                    rustls_pki_types::pem::PemObject::pem_slice_iter(&pem)
                        .collect::<Result<_, _>>()
                        .map_err(|e| format!("--store-ca {}: {e}", path.display()))?;
                if certs.is_empty() {
                    return Err(format!(
                        "--store-ca {} holds no certificate",
                        path.display()
                    ));
                }
                for cert in certs {
                    roots
                        .add(cert)
                        .map_err(|e| format!("--store-ca {}: {e}", path.display()))?;
                }
            }
            None => {
                // Unreadable system certificates are skipped; with none left, a TLS connection
                // fails with an unknown issuer, which names the cure (--store-ca).
                for cert in rustls_native_certs::load_native_certs().certs {
                    let _ = roots.add(cert);
                }
            }
        }
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let config = rustls::ClientConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .map_err(|e| format!("TLS to the database: {e}"))?
            .with_root_certificates(roots)
            .with_no_client_auth();
        let trust = match ca {
            Some(path) => format!("--store-ca {}", path.display()),
            None => {
                "the system's CA roots (give the database's CA with --store-ca FILE)".to_owned()
            }
        };
        Ok(RustlsConnector {
            config: Arc::new(config),
            trust: trust.into(),
        })
    }
}

impl<S> MakeTlsConnect<S> for RustlsConnector
where
    S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    type Stream = RustlsStream<S>;
    type TlsConnect = RustlsConnect;
    type Error = io::Error;

    fn make_tls_connect(&mut self, domain: &str) -> io::Result<RustlsConnect> {
        // A unix socket has no host name (""): the server never offers TLS there, so an invalid
        // name is an error only if a handshake is really attempted.
        let name = ServerName::try_from(domain.to_owned())
            .map_err(|e| format!("cannot check the certificate of {domain:?}: {e}"));
        Ok(RustlsConnect {
            name,
            connector: TlsConnector::from(self.config.clone()),
            trust: self.trust.clone(),
        })
    }
}

/// One connection's TLS handshake.
pub struct RustlsConnect {
    name: Result<ServerName<'static>, String>,
    connector: TlsConnector,
    trust: Arc<str>,
}

impl<S> TlsConnect<S> for RustlsConnect
where
    S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    type Stream = RustlsStream<S>;
    type Error = io::Error;
    type Future = Pin<Box<dyn Future<Output = io::Result<RustlsStream<S>>> + Send>>;

    fn connect(self, stream: S) -> Self::Future {
        Box::pin(async move {
            let name = self
                .name
                .map_err(|e| io::Error::new(io::ErrorKind::InvalidInput, e))?;
            let tls = self.connector.connect(name, stream).await.map_err(|e| {
                let refused = e
                    .get_ref()
                    .and_then(|inner| inner.downcast_ref::<rustls::Error>())
                    .is_some_and(|r| matches!(r, rustls::Error::InvalidCertificate(_)));
                if refused {
                    io::Error::new(
                        io::ErrorKind::InvalidData,
                        format!(
                            "the database server's certificate is not trusted ({e}): it must be signed by a CA in {} and name the host of the URL",
                            self.trust
                        ),
                    )
                } else {
                    e
                }
            })?;
            Ok(RustlsStream(Box::new(tls)))
        })
    }
}

/// A TLS connection to the database.
pub struct RustlsStream<S>(Box<TlsStream<S>>);

impl<S> tokio_postgres::tls::TlsStream for RustlsStream<S>
where
    S: AsyncRead + AsyncWrite + Unpin,
{
    fn channel_binding(&self) -> ChannelBinding {
        ChannelBinding::none()
    }
}

impl<S: AsyncRead + AsyncWrite + Unpin> AsyncRead for RustlsStream<S> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        Pin::new(&mut *self.0).poll_read(cx, buf)
    }
}

impl<S: AsyncRead + AsyncWrite + Unpin> AsyncWrite for RustlsStream<S> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut *self.0).poll_write(cx, buf)
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut *self.0).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut *self.0).poll_shutdown(cx)
    }
}
