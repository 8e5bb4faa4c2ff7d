//! `CollectorSpec` for end-to-end tests: the kit's [`Collector`] (the real `shoal-collector
//! serve` as a child process) started with this workspace's binary, its enrollment tokens, and
//! optionally a [`TestCa`]'s certificate and a [`Hub`]'s network namespace.

use std::path::PathBuf;

use shoal_testkit::collector::TlsFiles;
use shoal_testkit::Collector;

use crate::binaries::collector_bin;
use crate::network::Hub;
use crate::TestCa;

/// How to start one; [`CollectorSpec::start`] takes it by reference so a test can start the
/// same collector again (same store, same address) after stopping it.
pub struct CollectorSpec<'a> {
    /// The embedded store's directory.
    pub data: PathBuf,
    /// A file of enrollment tokens (`--enroll-token-file`).
    pub enroll_token_file: PathBuf,
    /// `IP:PORT`; port 0 picks a free one (see [`Collector::listen`]).
    pub listen: String,
    /// Serve HTTPS with this CA's server certificate.
    pub tls: Option<&'a TestCa>,
    /// Run inside this hub's network namespace.
    pub hub: Option<&'a Hub>,
}

impl CollectorSpec<'_> {
    /// Plain HTTP on a free port of 127.0.0.1, outside any hub.
    pub fn local(data: PathBuf, enroll_token_file: PathBuf) -> Self {
        CollectorSpec {
            data,
            enroll_token_file,
            listen: "127.0.0.1:0".into(),
            tls: None,
            hub: None,
        }
    }

    /// Starts it and waits for its `listening on URL` line.
    pub fn start(&self) -> Collector {
        self.start_with_args(&[])
    }

    /// `start` with more `serve` flags (e.g. `--admin-token-file F`).
    pub fn start_with_args(&self, extra: &[&str]) -> Collector {
        let mut spec = shoal_testkit::CollectorSpec::new(collector_bin(), &self.data);
        spec.listen = self.listen.clone();
        spec.args = vec![
            "--enroll-token-file".to_owned(),
            self.enroll_token_file.display().to_string(),
        ];
        spec = spec.args(extra);
        spec.tls = self.tls.map(|ca| TlsFiles {
            cert_chain: ca.cert_chain_path().to_path_buf(),
            key: ca.key_path().to_path_buf(),
            ca: ca.pem_path().to_path_buf(),
        });
        spec.netns = self.hub.map(Hub::netns);
        Collector::start(&spec)
    }
}
