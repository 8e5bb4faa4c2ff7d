//! Answers one smart-HTTP request by running `git http-backend` as a CGI program (RFC 3875) and translating its reply.

use std::net::SocketAddr;
use std::path::Path;
use std::process::Stdio;

use http_body_util::Full;
use hyper::body::Bytes;
use hyper::header::{HeaderName, HeaderValue};
use hyper::http::request::Parts;
use hyper::{Response, StatusCode};
use tokio::io::AsyncWriteExt;
use tokio::process::Command;

use crate::command::git_exec_path;

/// Runs `git http-backend` for the request (`parts`, `body`) from `peer` against the bare
/// repositories under `project_root`. Failures become 5xx responses that carry the reason.
pub(crate) async fn serve(
    project_root: &Path,
    parts: &Parts,
    body: Bytes,
    peer: SocketAddr,
) -> Response<Full<Bytes>> {
    let mut cmd = Command::new(git_exec_path().join("git-http-backend"));
    cmd.env_clear()
        .env("PATH", std::env::var_os("PATH").unwrap_or_default())
        .env("GIT_CONFIG_GLOBAL", "/dev/null")
        .env("GIT_CONFIG_NOSYSTEM", "1")
        .env("GIT_PROJECT_ROOT", project_root)
        .env("GIT_HTTP_EXPORT_ALL", "1")
        .env("GATEWAY_INTERFACE", "CGI/1.1")
        .env("SERVER_PROTOCOL", "HTTP/1.1")
        .env("REQUEST_METHOD", parts.method.as_str())
        .env("PATH_INFO", parts.uri.path())
        .env("QUERY_STRING", parts.uri.query().unwrap_or(""))
        .env("CONTENT_LENGTH", body.len().to_string())
        .env("REMOTE_ADDR", peer.ip().to_string())
        .env("REMOTE_PORT", peer.port().to_string());
    for (header, variable) in [
        ("content-type", "CONTENT_TYPE"),
        ("git-protocol", "HTTP_GIT_PROTOCOL"),
        // http-backend inflates a gzip'd body itself when told so.
        ("content-encoding", "HTTP_CONTENT_ENCODING"),
    ] {
        if let Some(value) = parts.headers.get(header).and_then(|v| v.to_str().ok()) {
            cmd.env(variable, value);
        }
    }
    cmd.stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true);

    let mut child = match cmd.spawn() {
        Ok(child) => child,
        Err(e) => {
            return plain_response(
                StatusCode::INTERNAL_SERVER_ERROR,
                format!("cannot start git http-backend: {e}"),
            )
        }
    };
    let mut stdin = child.stdin.take().expect("stdin was configured as piped");
    // Feed the body while reading the reply: http-backend may start answering before it read everything.
    let feed = async move {
        // A backend that exits without reading its input says why on stdout/stderr; that is what we report.
        let _ = stdin.write_all(&body).await;
    };
    let (_, finished) = tokio::join!(feed, child.wait_with_output());
    let output = match finished {
        Ok(output) => output,
        Err(e) => {
            return plain_response(
                StatusCode::INTERNAL_SERVER_ERROR,
                format!("git http-backend failed: {e}"),
            )
        }
    };
    match parse_cgi_reply(&output.stdout) {
        Some(response) => response,
        None => plain_response(
            StatusCode::BAD_GATEWAY,
            format!(
                "git http-backend gave no CGI reply ({}): {}",
                output.status,
                String::from_utf8_lossy(&output.stderr)
            ),
        ),
    }
}

/// Turns a CGI reply (headers, a blank line, the body) into a response; `Status:` sets the code.
fn parse_cgi_reply(stdout: &[u8]) -> Option<Response<Full<Bytes>>> {
    let (head, body) = split_head(stdout)?;
    let mut response = Response::builder().status(StatusCode::OK);
    for line in std::str::from_utf8(head).ok()?.lines() {
        let (name, value) = line.split_once(':')?;
        let value = value.trim();
        if name.eq_ignore_ascii_case("status") {
            let code = value.split_whitespace().next()?.parse::<u16>().ok()?;
            response = response.status(StatusCode::from_u16(code).ok()?);
        } else {
            response = response.header(
                HeaderName::from_bytes(name.trim().as_bytes()).ok()?,
                HeaderValue::from_str(value).ok()?,
            );
        }
    }
    response.body(Full::new(Bytes::copy_from_slice(body))).ok()
}

/// Splits at the first blank line, whether lines end in CRLF or LF.
fn split_head(reply: &[u8]) -> Option<(&[u8], &[u8])> {
    let crlf = find(reply, b"\r\n\r\n").map(|at| (at, at + 4));
    let lf = find(reply, b"\n\n").map(|at| (at, at + 2));
    let (head_end, body_start) = match (crlf, lf) {
        (Some(a), Some(b)) => a.min(b),
        (a, b) => a.or(b)?,
    };
    Some((&reply[..head_end], &reply[body_start..]))
}

fn find(haystack: &[u8], needle: &[u8]) -> Option<usize> {
    haystack
        .windows(needle.len())
        .position(|window| window == needle)
}

pub(crate) fn plain_response(status: StatusCode, text: String) -> Response<Full<Bytes>> {
    let mut response = Response::new(Full::new(Bytes::from(text)));
    *response.status_mut() = status;
    response
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn status_line_and_headers_become_the_response() {
        let reply = b"Status: 404 Not Found\r\nContent-Type: text/plain\r\n\r\nno such repo\n";
        let response = parse_cgi_reply(reply).expect("a valid CGI reply");
        assert_eq!(response.status(), StatusCode::NOT_FOUND);
        assert_eq!(response.headers()["content-type"], "text/plain");
    }

    #[test]
    fn reply_without_status_is_ok_and_keeps_its_body_bytes() {
        let reply = b"Content-Type: application/x-git-upload-pack-result\n\n\x00\x01PACK\r\n\r\n";
        let (_, body) = split_head(reply).expect("a blank line");
        assert_eq!(body, b"\x00\x01PACK\r\n\r\n");
        assert_eq!(
            parse_cgi_reply(reply).expect("valid").status(),
            StatusCode::OK
        );
    }

    #[test]
    fn reply_without_blank_line_is_rejected() {
        assert!(parse_cgi_reply(b"Content-Type: text/plain\r\n").is_none());
    }
}
