//! Which forward proxy an HTTP(S) connection of the agent goes through — to the config repository
//! or to the collector — and with what credential: the proxy set in agent.toml (`[source] proxy`,
//! `[collector] proxy`, credential from `proxy_auth_file`) when there is one, else `https_proxy` /
//! `HTTPS_PROXY` (`http_proxy` / `HTTP_PROXY` for an `http://` URL) from the environment, unless
//! `no_proxy` / `NO_PROXY` lists the host. HTTPS goes through the proxy's CONNECT tunnel, so the
//! proxy sees the host name and never the traffic. Reads the environment; does no other I/O. Must
//! not show a proxy's password (an environment URL may carry one) or its credential's value.

use std::fmt;
use std::net::IpAddr;
use std::path::PathBuf;

use crate::credential::Credential;

/// `[source] proxy` or `[collector] proxy`, with the credential of its `proxy_auth_file`.
#[derive(Debug, Clone)]
pub struct ProxySetting {
    /// `[source] proxy` or `[collector] proxy`: where the setting was written, for messages.
    pub key: &'static str,
    /// `http://host:port` (or `https://`), without user name or password.
    pub url: String,
    pub auth_file: Option<PathBuf>,
    /// Read from `auth_file` by `AgentConfig::load`.
    pub credential: Option<Credential>,
}

/// The proxy one connection goes through.
#[derive(Debug, Clone)]
pub struct Route {
    /// The proxy's URL as reqwest takes it (it may carry a password from the environment).
    url: String,
    /// The proxy's URL without user name or password: what messages show.
    pub shown: String,
    /// Where it was set: `[source] proxy`, `HTTPS_PROXY`, ...
    pub from: String,
    pub credential: Option<Credential>,
    /// The `no_proxy` list in force, for the hosts of later requests (a followed redirect).
    no_proxy: String,
}

impl fmt::Display for Route {
    /// `the proxy http://proxy.example:3128 (from [source] proxy)`.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "the proxy {} (from {})", self.shown, self.from)
    }
}

/// Why a proxy setting cannot be used.
#[derive(Debug, thiserror::Error)]
pub enum ProxyError {
    #[error("the proxy URL {shown:?} (from {from}) is not valid: {message}; write it as http://HOST:PORT")]
    Url {
        shown: String,
        from: String,
        message: String,
    },
}

/// The proxy for a connection to `target` (a URL), given the configured `setting` and the
/// environment read through `env`; `None` for a direct connection.
pub fn route(
    setting: Option<&ProxySetting>,
    target: &str,
    env: &dyn Fn(&str) -> Option<String>,
) -> Result<Option<Route>, ProxyError> {
    let Ok(target_url) = reqwest::Url::parse(target) else {
        return Ok(None);
    };
    let no_proxy = ["no_proxy", "NO_PROXY"]
        .iter()
        .find_map(|name| env(name).filter(|v| !v.trim().is_empty()))
        .unwrap_or_default();
    if bypass(&no_proxy, &target_url) {
        return Ok(None);
    }
    let (raw, from, credential) = match setting {
        Some(setting) => (
            setting.url.clone(),
            setting.key.to_owned(),
            setting.credential.clone(),
        ),
        None => {
            let names: &[&str] = match target_url.scheme() {
                "https" => &["https_proxy", "HTTPS_PROXY"],
                "http" => &["http_proxy", "HTTP_PROXY"],
                _ => &[],
            };
            match names.iter().find_map(|name| {
                env(name)
                    .filter(|v| !v.trim().is_empty())
                    .map(|v| (name, v))
            }) {
                Some((name, value)) => (value.trim().to_owned(), (*name).to_owned(), None),
                None => return Ok(None),
            }
        }
    };
    // curl and reqwest take `host:port` as http://host:port.
    let url = if raw.contains("://") {
        raw
    } else {
        format!("http://{raw}")
    };
    let shown = shown(&url);
    let invalid = |message: &str| ProxyError::Url {
        shown: shown.clone(),
        from: from.clone(),
        message: message.to_owned(),
    };
    let parsed = reqwest::Url::parse(&url).map_err(|e| invalid(&e.to_string()))?;
    if !matches!(parsed.scheme(), "http" | "https") {
        return Err(invalid(
            "the agent speaks to http:// and https:// proxies only",
        ));
    }
    if parsed.host_str().is_none_or(str::is_empty) {
        return Err(invalid("it has no host"));
    }
    Ok(Some(Route {
        url,
        shown,
        from,
        credential,
        no_proxy,
    }))
}

/// [`route`] with the process's environment.
pub fn route_from_env(
    setting: Option<&ProxySetting>,
    target: &str,
) -> Result<Option<Route>, ProxyError> {
    route(setting, target, &|name| std::env::var(name).ok())
}

impl Route {
    /// The reqwest proxy for this route: every request whose host `no_proxy` does not list goes
    /// through it (HTTPS by CONNECT), with the credential, if any, as `Proxy-Authorization`.
    pub fn reqwest_proxy(&self) -> Result<reqwest::Proxy, ProxyError> {
        let url = reqwest::Url::parse(&self.url).map_err(|e| ProxyError::Url {
            shown: self.shown.clone(),
            from: self.from.clone(),
            message: e.to_string(),
        })?;
        let no_proxy = self.no_proxy.clone();
        let mut proxy =
            reqwest::Proxy::custom(move |target| (!bypass(&no_proxy, target)).then(|| url.clone()));
        if let Some(credential) = &self.credential {
            let mut value =
                reqwest::header::HeaderValue::from_str(credential.authorization().expose())
                    .map_err(|_| ProxyError::Url {
                        shown: self.shown.clone(),
                        from: self.from.clone(),
                        message: format!("{credential} cannot be sent in an HTTP header"),
                    })?;
            value.set_sensitive(true);
            proxy = proxy.custom_http_auth(value);
        }
        Ok(proxy)
    }
}

/// Sets `builder` to use exactly `route` (or no proxy at all): reqwest's own reading of the
/// environment is turned off, so the rules above are the only ones.
pub fn configure(
    builder: reqwest::blocking::ClientBuilder,
    route: Option<&Route>,
) -> Result<reqwest::blocking::ClientBuilder, ProxyError> {
    let builder = builder.no_proxy();
    Ok(match route {
        Some(route) => builder.proxy(route.reqwest_proxy()?),
        None => builder,
    })
}

/// `url` without user name and password.
fn shown(url: &str) -> String {
    match reqwest::Url::parse(url) {
        Ok(mut parsed) => {
            let _ = parsed.set_password(None);
            let _ = parsed.set_username("");
            parsed.as_str().trim_end_matches('/').to_owned()
        }
        Err(_) => "(unparsable)".to_owned(),
    }
}

/// Whether the `no_proxy` list (curl's form: comma-separated host names, which also cover their
/// subdomains, with or without a leading dot; IP addresses; CIDR ranges; `*` for every host)
/// sends `target` direct.
fn bypass(no_proxy: &str, target: &reqwest::Url) -> bool {
    let Some(host) = target.host_str() else {
        return false;
    };
    let host = host.trim_start_matches('[').trim_end_matches(']');
    let ip: Option<IpAddr> = host.parse().ok();
    no_proxy
        .split(',')
        .map(str::trim)
        .filter(|e| !e.is_empty())
        .any(|entry| {
            if entry == "*" {
                return true;
            }
            if let Some((net, bits)) = entry.split_once('/') {
                return match (ip, net.parse::<IpAddr>(), bits.parse::<u32>()) {
                    (Some(ip), Ok(net), Ok(bits)) => in_cidr(ip, net, bits),
                    _ => false,
                };
            }
            let name = entry.trim_start_matches('.');
            // An entry may name a port (`host:port`); it matches that port only.
            let (name, port) = match name.rsplit_once(':') {
                Some((n, p)) if !n.contains(':') && p.parse::<u16>().is_ok() => (n, p.parse().ok()),
                _ => (name, None),
            };
            if port.is_some() && port != target.port_or_known_default() {
                return false;
            }
            let name = name.trim_start_matches('[').trim_end_matches(']');
            match (ip, name.parse::<IpAddr>()) {
                (Some(ip), Ok(entry)) => ip == entry,
                (None, Err(_)) => {
                    let (host, name) = (host.to_ascii_lowercase(), name.to_ascii_lowercase());
                    host == name || host.ends_with(&format!(".{name}"))
                }
                _ => false,
            }
        })
}

fn in_cidr(ip: IpAddr, net: IpAddr, bits: u32) -> bool {
    match (ip, net) {
        (IpAddr::V4(ip), IpAddr::V4(net)) if bits <= 32 => {
            let mask = u32::MAX.checked_shl(32 - bits).unwrap_or(0);
            u32::from(ip) & mask == u32::from(net) & mask
        }
        (IpAddr::V6(ip), IpAddr::V6(net)) if bits <= 128 => {
            let mask = u128::MAX.checked_shl(128 - bits).unwrap_or(0);
            u128::from(ip) & mask == u128::from(net) & mask
        }
        _ => false,
    }
}

/// What a failed connection through a proxy means, from the error's text: the proxy could not
/// be reached, refused the credential (407), or could not open the tunnel; `None` when the
/// failure is not the proxy's.
pub fn failure(chain: &str) -> Option<ProxyFailure> {
    if chain.contains("proxy authorization required") {
        return Some(ProxyFailure::Authentication);
    }
    // Through a proxy, the only TCP connection (and name lookup) the agent makes is to the
    // proxy: a failed connect is the proxy's ("tunnel error: failed to create underlying
    // connection: tcp connect error" for a CONNECT that never reached it).
    if chain.contains("failed to create underlying connection") {
        return Some(ProxyFailure::Unreachable);
    }
    // Any other answer than 200 to the CONNECT (hyper-util keeps no status but 407, and some
    // proxies, tinyproxy among them, answer a refused credential with 401).
    if chain.contains("tunnel error") {
        return Some(ProxyFailure::Tunnel);
    }
    let connect = chain.contains("tcp connect error")
        || chain.contains("dns error")
        || chain.contains("Connection refused")
        || chain.contains("client error (Connect)");
    connect.then_some(ProxyFailure::Unreachable)
}

/// How a connection through a proxy failed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ProxyFailure {
    /// No connection to the proxy itself (refused, timed out, its name does not resolve).
    Unreachable,
    /// The proxy answered 407.
    Authentication,
    /// The proxy answered the CONNECT with something else than 200 or 407: it refused the
    /// credential (some answer 401), the target, or could not reach it.
    Tunnel,
}

#[cfg(test)]
mod tests {
    use super::*;

    fn env(pairs: &'static [(&'static str, &'static str)]) -> impl Fn(&str) -> Option<String> {
        move |name| {
            pairs
                .iter()
                .find(|(k, _)| *k == name)
                .map(|(_, v)| (*v).to_owned())
        }
    }

    fn shown_route(
        setting: Option<&ProxySetting>,
        target: &str,
        pairs: &'static [(&'static str, &'static str)],
    ) -> Option<String> {
        route(setting, target, &env(pairs))
            .unwrap()
            .map(|r| r.to_string())
    }

    #[test]
    fn the_configured_proxy_wins_over_the_environment_and_no_proxy_over_both() {
        let setting = ProxySetting {
            key: "[source] proxy",
            url: "http://proxy.corp:3128".into(),
            auth_file: None,
            credential: None,
        };
        let env_proxy: &[(&str, &str)] = &[("HTTPS_PROXY", "http://user:s3cret@env-proxy:8080")];
        assert_eq!(
            shown_route(Some(&setting), "https://git.example.com/c.git", env_proxy).as_deref(),
            Some("the proxy http://proxy.corp:3128 (from [source] proxy)")
        );
        let shown = shown_route(None, "https://git.example.com/c.git", env_proxy).unwrap();
        assert_eq!(shown, "the proxy http://env-proxy:8080 (from HTTPS_PROXY)");
        assert!(!shown.contains("s3cret"));
        assert_eq!(
            shown_route(
                None,
                "https://git.example.com/c.git",
                &[("https_proxy", "proxy:1"), ("HTTPS_PROXY", "other:2")]
            )
            .as_deref(),
            Some("the proxy http://proxy:1 (from https_proxy)"),
            "lower case first, as curl"
        );
        assert_eq!(
            shown_route(None, "http://git.example.com/c.git", env_proxy),
            None,
            "HTTPS_PROXY is for https URLs"
        );
        for (no_proxy, target) in [
            ("example.com", "https://git.example.com/c.git"),
            (".example.com", "https://git.example.com/c.git"),
            ("git.example.com:443", "https://git.example.com/c.git"),
            ("*", "https://git.example.com/c.git"),
            ("other, 10.0.0.0/8", "https://10.1.2.3/c.git"),
            ("127.0.0.1", "https://127.0.0.1:8443/c.git"),
            ("::1", "https://[::1]:8443/c.git"),
        ] {
            let pairs: &'static [(&'static str, &'static str)] = Box::leak(Box::new([(
                "NO_PROXY",
                Box::leak(no_proxy.to_owned().into_boxed_str()) as &str,
            )]));
            assert_eq!(
                shown_route(Some(&setting), target, pairs),
                None,
                "{no_proxy} sends {target} direct"
            );
        }
        for (no_proxy, target) in [
            ("example.org", "https://git.example.com/c.git"),
            ("ample.com", "https://git.example.com/c.git"),
            ("git.example.com:8443", "https://git.example.com/c.git"),
            ("10.0.0.0/8", "https://11.1.2.3/c.git"),
        ] {
            let pairs: &'static [(&'static str, &'static str)] = Box::leak(Box::new([(
                "no_proxy",
                Box::leak(no_proxy.to_owned().into_boxed_str()) as &str,
            )]));
            assert!(
                shown_route(Some(&setting), target, pairs).is_some(),
                "{no_proxy} does not send {target} direct"
            );
        }
    }

    #[test]
    fn a_proxy_url_that_is_not_http_is_refused_naming_where_it_was_set() {
        let err = route(
            None,
            "https://git.example.com/c.git",
            &env(&[("HTTPS_PROXY", "socks5://user:pw@proxy:1080")]),
        )
        .unwrap_err();
        assert_eq!(
            err.to_string(),
            "the proxy URL \"socks5://proxy:1080\" (from HTTPS_PROXY) is not valid: the agent \
             speaks to http:// and https:// proxies only; write it as http://HOST:PORT"
        );
    }

    #[test]
    fn failures_through_a_proxy_are_named_for_the_proxy() {
        assert_eq!(
            failure("client error (Connect): tcp connect error: Connection refused"),
            Some(ProxyFailure::Unreachable)
        );
        assert_eq!(
            failure(
                "client error (Connect): tunnel error: failed to create underlying connection: \
                 tcp connect error: Connection refused (os error 111)"
            ),
            Some(ProxyFailure::Unreachable)
        );
        assert_eq!(
            failure("client error (Connect): tunnel error: unsuccessful"),
            Some(ProxyFailure::Tunnel)
        );
        assert_eq!(
            failure("tunnel error: proxy authorization required"),
            Some(ProxyFailure::Authentication)
        );
        assert_eq!(failure("Received HTTP status 502"), None);
    }
}
