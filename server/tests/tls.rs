//! HTTPS: the collector serves rustls (ring) with a certificate made at test time by rcgen; a
//! client that trusts it reports and reads; plain HTTP and untrusting clients get nowhere.

mod common;

use std::sync::Arc;

use common::*;
use rustls::pki_types::pem::PemObject as _;
use rustls::pki_types::CertificateDer;
use shoal_proto::Status;
use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};

fn client_config(roots: &[CertificateDer<'static>]) -> Arc<rustls::ClientConfig> {
    let mut store = rustls::RootCertStore::empty();
    for r in roots {
        store.add(r.clone()).unwrap();
    }
    Arc::new(
        rustls::ClientConfig::builder_with_provider(Arc::new(
            rustls::crypto::ring::default_provider(),
        ))
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_root_certificates(store)
        .with_no_client_auth(),
    )
}

#[tokio::test]
async fn tls_serves_trusting_clients_only() {
    let tmp = tempfile::tempdir().unwrap();
    let certified = rcgen::generate_simple_self_signed(vec!["localhost".to_owned()]).unwrap();
    let cert_file = tmp.path().join("cert.pem");
    let key_file = tmp.path().join("key.pem");
    std::fs::write(&cert_file, certified.cert.pem()).unwrap();
    std::fs::write(&key_file, certified.signing_key.serialize_pem()).unwrap();
    let enroll = tmp.path().join("enroll");
    std::fs::write(&enroll, format!("{ENROLL_TOKEN}\n")).unwrap();

    let server = start_binary(
        &StoreFlags(vec![
            "--data".into(),
            tmp.path().join("data").to_str().unwrap().into(),
        ]),
        &[
            "--tls-cert",
            cert_file.to_str().unwrap(),
            "--tls-key",
            key_file.to_str().unwrap(),
            "--enroll-token-file",
            enroll.to_str().unwrap(),
        ],
        &tmp.path().join("log"),
    );
    let trusted = CertificateDer::from_pem_file(&cert_file).unwrap();
    let client = Client {
        tls: Some(client_config(&[trusted])),
        ..Client::new(server.addr())
    };
    let mut gw = Device::new("gw-tls", 5);
    let resp = client
        .post_report(gw.next(Status::Converged, None), Some(ENROLL_TOKEN))
        .await;
    assert_eq!(resp.status, 200, "{}", resp.text());
    assert_eq!(client.get("/api/v1/summary").await.json()["total"], 1);
    assert_eq!(client.get("/healthz").await.text(), "ok\n");

    // A client that does not trust the certificate fails the handshake.
    let untrusting = tokio_rustls::TlsConnector::from(client_config(&[]));
    let tcp = tokio::net::TcpStream::connect(server.addr()).await.unwrap();
    let name = rustls::pki_types::ServerName::try_from("localhost").unwrap();
    assert!(untrusting.connect(name, tcp).await.is_err());

    // Plain HTTP to the TLS port gets no HTTP answer.
    let mut tcp = tokio::net::TcpStream::connect(server.addr()).await.unwrap();
    tcp.write_all(b"GET /healthz HTTP/1.1\r\nhost: localhost\r\nconnection: close\r\n\r\n")
        .await
        .unwrap();
    let mut buf = Vec::new();
    let _ = tcp.read_to_end(&mut buf).await;
    assert!(
        !buf.starts_with(b"HTTP/1.1 200"),
        "{}",
        String::from_utf8_lossy(&buf)
    );

    // And the HTTPS service still works after those.
    assert_eq!(client.get("/healthz").await.status, 200);
    assert!(server.terminate().success());
}

#[tokio::test]
async fn tls_config_errors_name_the_file() {
    let tmp = tempfile::tempdir().unwrap();
    let cert = tmp.path().join("cert.pem");
    let key = tmp.path().join("key.pem");
    std::fs::write(&cert, "not a certificate\n").unwrap();
    std::fs::write(&key, "not a key\n").unwrap();
    let e = shoal_collector::serve::tls_config(&cert, &key).unwrap_err();
    assert!(e.to_string().contains(cert.to_str().unwrap()), "{e}");
    let certified = rcgen::generate_simple_self_signed(vec!["localhost".to_owned()]).unwrap();
    std::fs::write(&cert, certified.cert.pem()).unwrap();
    let e = shoal_collector::serve::tls_config(&cert, &key).unwrap_err();
    assert!(e.to_string().contains(key.to_str().unwrap()), "{e}");
}

#[tokio::test]
async fn in_process_tls_server_accepts_reports() {
    let tmp = tempfile::tempdir().unwrap();
    let certified = rcgen::generate_simple_self_signed(vec!["localhost".to_owned()]).unwrap();
    let cert = tmp.path().join("cert.pem");
    let key = tmp.path().join("key.pem");
    std::fs::write(&cert, certified.cert.pem()).unwrap();
    std::fs::write(&key, certified.signing_key.serialize_pem()).unwrap();
    let tls = shoal_collector::serve::tls_config(&cert, &key).unwrap();
    let server = TestServer::start_tls(
        &TestStore::fresh(Backend::Sled),
        config_with_tokens(),
        Some(tls),
    )
    .await;
    let client = Client {
        tls: Some(client_config(&[CertificateDer::from(
            certified.cert.der().to_vec(),
        )])),
        ..server.client()
    };
    let mut gw = Device::new("gw-1", 1);
    let resp = client
        .post_report(gw.next(Status::Converged, None), Some(ENROLL_TOKEN))
        .await;
    assert_eq!(resp.status, 200, "{}", resp.text());
    // Stopping releases the port: the accept task ends with the server.
    let addr = server.addr;
    server.stop().await;
    assert!(tokio::net::TcpStream::connect(addr).await.is_err());
}
