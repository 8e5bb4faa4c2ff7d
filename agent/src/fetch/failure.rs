//! What a failed exchange with the git server means for the operator: an HTTP status, a refused
//! redirect, a name that does not resolve or a TLS handshake that fails is named as such, and
//! only what may pass by itself (a connection, a timeout, a server error) is retried as a network
//! failure. Pure: it reads gix's error text (gix 0.90 reports every HTTP status as `Received HTTP
//! status NNN` and drops the reqwest error it came from), never the network. Must not quote a
//! credential: messages name it by file and kind (`credential::Credential`'s `Display`).

use crate::config::SourceConfig;
use crate::proxy::{self, ProxyFailure, Route};

use super::FetchError;

/// What the agent's credential callback returns to gix when the server answers 401: a device has
/// no helper to ask and no terminal to prompt on.
#[derive(Debug, thiserror::Error)]
#[error("the server asked for credentials (HTTP 401)")]
pub struct Challenged;

/// The operator's error for a failure that retrying will not fix, or `None` for one that may
/// pass (to be retried, then reported by [`unreachable`]). `chain` is the failure's
/// `error_chain`; `challenged` whether the server answered the handshake with 401.
pub fn classify(
    source: &SourceConfig,
    route: Option<&Route>,
    chain: &str,
    challenged: bool,
) -> Option<FetchError> {
    let url = source.url.clone();
    if let Some(route) = route {
        if proxy::failure(chain) == Some(ProxyFailure::Authentication) {
            return Some(FetchError::ProxyAuthentication {
                url,
                proxy: route.to_string(),
                credential: proxy_credential(route),
            });
        }
    }
    let credential = || match &source.credential {
        Some(credential) => credential.to_string(),
        None => "anonymous access (no [source] auth_file)".to_owned(),
    };
    let status = if challenged {
        Some(401)
    } else {
        http_status(chain)
    };
    match status {
        Some(401) => Some(match &source.credential {
            Some(credential) => FetchError::AuthenticationFailed {
                url,
                credential: credential.to_string(),
            },
            None => FetchError::AuthenticationRequired { url },
        }),
        Some(403) => Some(FetchError::Forbidden {
            url,
            credential: credential(),
        }),
        Some(404) => Some(FetchError::NotFound {
            url,
            credential: credential(),
        }),
        _ if chain
            .contains("refusing to follow redirect after request headers were configured") =>
        {
            Some(FetchError::Redirected { url })
        }
        _ if is_sha256(chain) => Some(FetchError::Sha256Unsupported { url }),
        _ if is_client_auth_refused(chain, source.client_identity.is_some()) => {
            Some(FetchError::ClientCertificate {
                url,
                identity: source.client_identity.as_ref().map_or_else(
                    || {
                        "the agent, which has no client certificate ([source] client_cert)"
                            .to_owned()
                    },
                    ToString::to_string,
                ),
                message: chain.to_owned(),
            })
        }
        _ if is_tls(chain) => Some(FetchError::TlsHandshake {
            url,
            message: chain.to_owned(),
        }),
        _ => None,
    }
}

/// The error for a failure that was retried `attempts` times and did not pass: a name that does
/// not resolve says DNS, anything else that the server could not be reached.
pub fn unreachable(
    source: &SourceConfig,
    route: Option<&Route>,
    attempts: u32,
    message: String,
) -> FetchError {
    let url = source.url.clone();
    if let Some(route) = route {
        let proxy = route.to_string();
        match proxy::failure(&message) {
            Some(ProxyFailure::Tunnel) => {
                return FetchError::ProxyTunnel {
                    url,
                    proxy,
                    credential: proxy_credential(route),
                    attempts,
                    message,
                }
            }
            Some(_) => {
                return FetchError::ProxyUnreachable {
                    url,
                    proxy,
                    attempts,
                    message,
                }
            }
            None => {}
        }
    }
    if is_dns(&message) {
        FetchError::Dns {
            url,
            attempts,
            message,
        }
    } else {
        FetchError::Unreachable {
            url,
            attempts,
            message,
        }
    }
}

/// How messages name the proxy's credential: by file and kind, never its value.
fn proxy_credential(route: &Route) -> String {
    route.credential.as_ref().map_or_else(
        || "a connection without a credential (no proxy_auth_file)".to_owned(),
        ToString::to_string,
    )
}

/// The HTTP status gix reports in `chain` (`Received HTTP status 404`), if any.
pub fn http_status(chain: &str) -> Option<u16> {
    const MARK: &str = "Received HTTP status ";
    let at = chain.find(MARK)? + MARK.len();
    let digits = chain.get(at..at + 3)?;
    digits.parse().ok()
}

/// hyper-util names a failed lookup `dns error`; getaddrinfo's own text follows it.
fn is_dns(chain: &str) -> bool {
    chain.contains("dns error")
        || chain.contains("failed to lookup address information")
        // OpenSSH's own lookup.
        || chain.contains("Could not resolve hostname")
}

/// A ref advertisement with 64-hex object ids, which a SHA-1-only gix cannot decode (gix-hash:
/// `A hash sized 64 hexadecimal characters is invalid`).
fn is_sha256(chain: &str) -> bool {
    chain.contains("A hash sized 64 hexadecimal characters is invalid")
}

/// The alerts a server sends when it requires a client certificate and gets none, or one it does
/// not accept (rustls's names; the agent's own check of the server's certificate says "invalid
/// peer certificate" instead).
fn is_client_auth_refused(chain: &str, presented: bool) -> bool {
    // A certificate whose issuer has the name of one the server trusts but another key fails its
    // signature check: the server says DecryptError.
    if presented && chain.contains("received fatal alert: DecryptError") {
        return true;
    }
    [
        "received fatal alert: CertificateRequired",
        "received fatal alert: BadCertificate",
        "received fatal alert: UnknownCA",
        "received fatal alert: CertificateUnknown",
        "received fatal alert: CertificateExpired",
        "received fatal alert: CertificateRevoked",
        "received fatal alert: AccessDenied",
    ]
    .iter()
    .any(|alert| chain.contains(alert))
}

/// rustls's certificate and handshake failures, as reqwest passes them on.
fn is_tls(chain: &str) -> bool {
    chain.contains("invalid peer certificate")
        || chain.contains("received fatal alert")
        || chain.contains("peer is incompatible")
        || chain.contains("peer misbehaved")
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::AgentConfig;
    use crate::credential::{Credential, Secret};
    use std::path::Path;

    fn source(credential: Option<&str>) -> SourceConfig {
        let config = AgentConfig::parse(
            "device_id = \"d\"\n[source]\nurl = \"https://git.example.com/config.git\"\nref = \"refs/heads/main\"\n",
            Path::new("/etc/shoal/agent.toml"),
        )
        .unwrap();
        let mut source = config.source;
        source.credential = credential.map(|text| {
            Credential::parse(
                Secret::new(text.into()),
                Path::new("/etc/shoal/git-auth.toml"),
            )
            .unwrap()
        });
        source
    }

    // Texts as gix 0.90 and reqwest 0.13 render them (from real failures; see the e2e tests).
    const NOT_FOUND: &str = "Transport handshake failed: An IO error occurred when talking to the server: Received HTTP status 404: HTTP status client error (404 Not Found) for url (https://git.example.com/config.git/info/refs?service=git-upload-pack)";
    const FORBIDDEN: &str = "Transport handshake failed: An IO error occurred when talking to the server: Received HTTP status 403";
    const SERVER_ERROR: &str = "Transport handshake failed: Received HTTP status 502";
    const DNS: &str = "Transport handshake failed: error sending request for url (https://nope.invalid/info/refs): client error (Connect): dns error: failed to lookup address information: Name or service not known";
    const TLS: &str = "Transport handshake failed: error sending request for url (https://localhost:1/info/refs): client error (Connect): invalid peer certificate: UnknownIssuer";
    const REDIRECT: &str = "Transport handshake failed: error following redirect for url (https://localhost:1/info/refs): refusing to follow redirect after request headers were configured";

    #[test]
    fn http_statuses_become_what_they_mean_for_the_credential() {
        let token = source(Some("token = \"s3cret-t0ken\""));
        let user = source(Some("username = \"deploy\"\npassword = \"s3cret-pw\""));
        let anonymous = source(None);
        let text = |source: &SourceConfig, chain: &str, challenged: bool| {
            classify(source, None, chain, challenged)
                .map(|e| e.to_string())
                .unwrap_or_default()
        };
        assert_eq!(
            text(&token, "Failed to obtain credentials", true),
            "authentication failed at the config repository https://git.example.com/config.git \
             (HTTP 401) with the token in /etc/shoal/git-auth.toml; the token or password is \
             wrong, expired or revoked: put a valid one in that file"
        );
        assert!(text(&user, "Received HTTP status 401", false)
            .contains("with user \"deploy\" from /etc/shoal/git-auth.toml;"));
        assert!(text(&anonymous, "Failed to obtain credentials", true)
            .contains("requires authentication (HTTP 401) and no credential is configured"));
        assert_eq!(
            text(&token, NOT_FOUND, false),
            "the config repository https://git.example.com/config.git does not exist, or the \
             token in /etc/shoal/git-auth.toml has no access to it (HTTP 404); check [source] \
             url and the credential's access on the server"
        );
        assert!(text(&anonymous, FORBIDDEN, false)
            .contains("refused access (HTTP 403) to anonymous access (no [source] auth_file)"));
        assert!(text(&token, REDIRECT, false).contains("answered with a redirect"));
        assert!(
            text(&token, TLS, false).starts_with("the TLS handshake with the config repository")
        );
        for chain in [SERVER_ERROR, DNS, "connection refused"] {
            assert!(
                classify(&token, None, chain, false).is_none(),
                "{chain} is retried"
            );
        }
        for message in [
            text(&token, "Received HTTP status 401", false),
            text(&user, NOT_FOUND, false),
            text(&user, "Received HTTP status 401", false),
        ] {
            assert!(!message.contains("s3cret"), "{message}");
        }
    }

    #[test]
    fn a_refused_client_certificate_is_named_as_client_authentication() {
        let anonymous = source(None);
        for alert in ["CertificateRequired", "UnknownCA", "BadCertificate"] {
            let chain = format!(
                "client error (SendRequest): connection error: received fatal alert: {alert}"
            );
            let message = classify(&anonymous, None, &chain, false)
                .unwrap()
                .to_string();
            assert!(
                message.starts_with(
                    "the config repository https://git.example.com/config.git refused the TLS \
                     client authentication of the agent, which has no client certificate"
                ),
                "{message}"
            );
        }
        // Without a certificate of ours, DecryptError is some other handshake failure.
        let chain = "connection error: received fatal alert: DecryptError";
        assert!(classify(&anonymous, None, chain, false)
            .unwrap()
            .to_string()
            .starts_with("the TLS handshake with the config repository"));
    }

    #[test]
    fn what_is_retried_is_named_dns_or_unreachable_at_the_end() {
        let anonymous = source(None);
        assert!(unreachable(&anonymous, None, 4, DNS.into())
            .to_string()
            .starts_with("cannot resolve the host of the config repository https://git.example.com/config.git after 4 attempt(s) (DNS): "));
        assert!(unreachable(&anonymous, None, 1, SERVER_ERROR.into())
            .to_string()
            .starts_with("cannot reach the config repository"));
        assert_eq!(http_status(NOT_FOUND), Some(404));
        assert_eq!(http_status(SERVER_ERROR), Some(502));
        assert_eq!(http_status("Received HTTP status 4"), None);
        assert_eq!(http_status(DNS), None);
    }
}
