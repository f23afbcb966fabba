//! A small blocking HTTP/1.1 client for `ctxleak attach`'s JSON API: one `GET` per connection
//! (`Connection: close`), plain HTTP only, since the API is served on loopback (or through an ssh
//! tunnel) next to the metrics.

use std::io::{Read as _, Write as _};
use std::net::{SocketAddr, TcpStream, ToSocketAddrs as _};
use std::time::Duration;

use crate::api::{GROUPS_PATH, GroupsResponse, LEAKS_PATH, LeaksResponse};

/// Why a poll brought no census.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum FetchError {
    /// Nothing answered: refused, timed out, reset, unresolvable.
    Unreachable(String),
    /// Something answered, but not with a census: an HTTP error (ctxleak says 503 until its
    /// first census), not HTTP, or JSON of another shape.
    BadAnswer(String),
}

impl std::fmt::Display for FetchError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            FetchError::Unreachable(message) | FetchError::BadAnswer(message) => {
                f.write_str(message)
            }
        }
    }
}

/// Responses larger than this are refused rather than read into memory.
const MAX_RESPONSE_BYTES: u64 = 64 << 20;

/// Where a running `ctxleak attach` serves its API, from a URL like `http://127.0.0.1:9789`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Endpoint {
    /// `host[:port]` as given, for the `Host` header.
    host_header: String,
    host: String,
    port: u16,
    /// Path prefix (no trailing slash), when ctxleak is served under one by a proxy.
    prefix: String,
    /// Which process to show when the server (`ctxleak daemon`) watches several.
    pid: Option<u32>,
}

impl Endpoint {
    /// Parses `http://host[:port][/prefix]`; the scheme may be left out. `https` is refused:
    /// ctxleak serves plain HTTP.
    pub fn parse(url: &str) -> Result<Self, String> {
        let url = url.trim();
        let rest = match url.split_once("://") {
            Some((scheme, rest)) if scheme.eq_ignore_ascii_case("http") => rest,
            Some((scheme, _)) => {
                return Err(format!(
                    "{url:?}: only http:// is supported (ctxleak serves plain HTTP), not {scheme}://"
                ));
            }
            None => url,
        };
        let (authority, path) = match rest.find('/') {
            Some(slash) => (&rest[..slash], &rest[slash..]),
            None => (rest, ""),
        };
        if authority.is_empty() {
            return Err(format!("{url:?} has no host"));
        }
        if authority.contains('@') {
            return Err(format!("{url:?}: user names in the URL are not supported"));
        }
        let (host, port) = if let Some(bracketed) = authority.strip_prefix('[') {
            // [::1]:9789
            let (host, after) = bracketed
                .split_once(']')
                .ok_or_else(|| format!("{url:?}: unclosed [ in the host"))?;
            let port = match after.strip_prefix(':') {
                Some(port) => Some(port),
                None if after.is_empty() => None,
                None => return Err(format!("{url:?}: unexpected {after:?} after the host")),
            };
            (host, port)
        } else {
            match authority.rsplit_once(':') {
                Some((host, port)) => (host, Some(port)),
                None => (authority, None),
            }
        };
        let port = match port {
            Some(port) => port
                .parse::<u16>()
                .map_err(|_| format!("{url:?}: {port:?} is not a port number"))?,
            None => 80,
        };
        if host.is_empty() {
            return Err(format!("{url:?} has no host"));
        }
        let path = path.split(['?', '#']).next().unwrap_or_default();
        Ok(Self {
            host_header: authority.to_owned(),
            host: host.to_owned(),
            port,
            prefix: path.trim_end_matches('/').to_owned(),
            pid: None,
        })
    }

    /// Asks for the census of `pid` (`?pid=N`), for a server that watches several processes.
    pub fn with_pid(self, pid: Option<u32>) -> Self {
        Self { pid, ..self }
    }

    /// `api` with `?pid=N` when one process is asked for.
    fn api_path(&self, api: &str) -> String {
        match self.pid {
            Some(pid) => format!("{api}?pid={pid}"),
            None => api.to_owned(),
        }
    }

    fn groups_path(&self) -> String {
        self.api_path(GROUPS_PATH)
    }

    /// The URL of the groups API, for messages.
    pub fn groups_url(&self) -> String {
        format!(
            "http://{}{}{}",
            self.host_header,
            self.prefix,
            self.groups_path()
        )
    }

    fn addresses(&self) -> Result<Vec<SocketAddr>, FetchError> {
        (self.host.as_str(), self.port)
            .to_socket_addrs()
            .map(Iterator::collect)
            .map_err(|error| {
                FetchError::Unreachable(format!("cannot resolve {}: {error}", self.host))
            })
    }

    /// `GET path` and returns the body of a 200 response; anything else is an error, worded
    /// for the status line.
    pub fn get(&self, path: &str, timeout: Duration) -> Result<Vec<u8>, FetchError> {
        let unreachable = |error: std::io::Error| FetchError::Unreachable(describe_io(&error));
        let addresses = self.addresses()?;
        let mut last_error = format!("{} resolves to no address", self.host);
        let mut stream = None;
        for address in addresses {
            match TcpStream::connect_timeout(&address, timeout) {
                Ok(connected) => {
                    stream = Some(connected);
                    break;
                }
                Err(error) => last_error = describe_io(&error),
            }
        }
        let mut stream = stream.ok_or(FetchError::Unreachable(last_error))?;
        stream
            .set_read_timeout(Some(timeout))
            .and_then(|()| stream.set_write_timeout(Some(timeout)))
            .map_err(unreachable)?;
        let request = format!(
            "GET {}{path} HTTP/1.1\r\nHost: {}\r\nUser-Agent: ctxleak-top/{}\r\nAccept: application/json\r\nConnection: close\r\n\r\n",
            self.prefix,
            self.host_header,
            env!("CARGO_PKG_VERSION"),
        );
        stream.write_all(request.as_bytes()).map_err(unreachable)?;
        let mut raw = Vec::new();
        (&mut stream)
            .take(MAX_RESPONSE_BYTES + 1)
            .read_to_end(&mut raw)
            .map_err(unreachable)?;
        if raw.len() as u64 > MAX_RESPONSE_BYTES {
            return Err(FetchError::BadAnswer(format!(
                "response larger than {MAX_RESPONSE_BYTES} bytes"
            )));
        }
        if raw.is_empty() {
            return Err(FetchError::Unreachable(
                "the server closed the connection without answering".to_owned(),
            ));
        }
        parse_response(&raw).map_err(FetchError::BadAnswer)
    }

    /// Fetches one census.
    pub fn fetch_groups(&self, timeout: Duration) -> Result<GroupsResponse, FetchError> {
        self.fetch(GROUPS_PATH, timeout)
    }

    /// Fetches the context verdicts and stuck goroutines of the last census.
    pub fn fetch_leaks(&self, timeout: Duration) -> Result<LeaksResponse, FetchError> {
        self.fetch(LEAKS_PATH, timeout)
    }

    fn fetch<T: serde::de::DeserializeOwned>(
        &self,
        api: &str,
        timeout: Duration,
    ) -> Result<T, FetchError> {
        let body = self.get(&self.api_path(api), timeout)?;
        serde_json::from_slice(&body)
            .map_err(|error| FetchError::BadAnswer(format!("unexpected response: {error}")))
    }
}

fn describe_io(error: &std::io::Error) -> String {
    use std::io::ErrorKind;
    match error.kind() {
        ErrorKind::ConnectionRefused => "connection refused".to_owned(),
        ErrorKind::ConnectionReset | ErrorKind::ConnectionAborted => "connection reset".to_owned(),
        ErrorKind::TimedOut | ErrorKind::WouldBlock => "timed out".to_owned(),
        _ => error.to_string(),
    }
}

/// Splits a whole HTTP/1.1 response (read until the server closed the connection) and returns
/// the body of a 200, de-chunked if it was sent chunked.
fn parse_response(raw: &[u8]) -> Result<Vec<u8>, String> {
    let head_end = find(raw, b"\r\n\r\n").ok_or("truncated HTTP response")?;
    let head = std::str::from_utf8(&raw[..head_end]).map_err(|_| "malformed HTTP response")?;
    let body = &raw[head_end + 4..];
    let mut lines = head.split("\r\n");
    let status_line = lines.next().unwrap_or_default();
    let mut parts = status_line.splitn(3, ' ');
    let version = parts.next().unwrap_or_default();
    if !version.starts_with("HTTP/1.") {
        return Err(format!("not an HTTP/1.x response: {status_line:?}"));
    }
    let code: u16 = parts
        .next()
        .and_then(|code| code.parse().ok())
        .ok_or_else(|| format!("malformed status line {status_line:?}"))?;
    let reason = parts.next().unwrap_or_default();
    let mut chunked = false;
    let mut length = None;
    for line in lines {
        let Some((name, value)) = line.split_once(':') else {
            continue;
        };
        let value = value.trim();
        if name.eq_ignore_ascii_case("transfer-encoding") {
            chunked = value.to_ascii_lowercase().contains("chunked");
        } else if name.eq_ignore_ascii_case("content-length") {
            length = Some(
                value
                    .parse::<usize>()
                    .map_err(|_| format!("bad Content-Length {value:?}"))?,
            );
        }
    }
    let body = if chunked {
        dechunk(body)?
    } else if let Some(length) = length {
        if body.len() < length {
            return Err("truncated HTTP response".to_owned());
        }
        body[..length].to_vec()
    } else {
        body.to_vec()
    };
    if code != 200 {
        // ctxleak explains its errors in a line of text ("no census yet: ..."): pass it on.
        let said = std::str::from_utf8(&body)
            .ok()
            .and_then(|text| text.lines().map(str::trim).find(|line| !line.is_empty()))
            .filter(|line| line.len() <= 200 && !line.starts_with('<'))
            .map(|line| format!(": {line}"))
            .unwrap_or_default();
        let hint = if code == 404 && said.is_empty() {
            " (is this a ctxleak attach that serves the JSON API?)"
        } else {
            ""
        };
        return Err(format!("HTTP {code} {reason}").trim_end().to_owned() + &said + hint);
    }
    Ok(body)
}

fn dechunk(mut data: &[u8]) -> Result<Vec<u8>, String> {
    let mut body = Vec::new();
    loop {
        let line_end = find(data, b"\r\n").ok_or("truncated chunked body")?;
        let size_text = std::str::from_utf8(&data[..line_end]).map_err(|_| "bad chunk size")?;
        let size_text = size_text.split(';').next().unwrap_or_default().trim();
        let size = usize::from_str_radix(size_text, 16)
            .map_err(|_| format!("bad chunk size {size_text:?}"))?;
        data = &data[line_end + 2..];
        if size == 0 {
            return Ok(body);
        }
        if data.len() < size + 2 {
            return Err("truncated chunked body".to_owned());
        }
        body.extend_from_slice(&data[..size]);
        data = &data[size + 2..];
    }
}

fn find(haystack: &[u8], needle: &[u8]) -> Option<usize> {
    haystack
        .windows(needle.len())
        .position(|window| window == needle)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_urls() {
        let e = Endpoint::parse("http://127.0.0.1:9789").unwrap();
        assert_eq!(
            (e.host.as_str(), e.port, e.prefix.as_str()),
            ("127.0.0.1", 9789, "")
        );
        assert_eq!(e.groups_url(), "http://127.0.0.1:9789/api/groups");
        let e = Endpoint::parse("localhost:8080/ctxleak/").unwrap();
        assert_eq!(
            (e.host.as_str(), e.port, e.prefix.as_str()),
            ("localhost", 8080, "/ctxleak")
        );
        let e = Endpoint::parse("http://[::1]:9789/").unwrap();
        assert_eq!(
            (e.host.as_str(), e.port, e.host_header.as_str()),
            ("::1", 9789, "[::1]:9789")
        );
        let e = Endpoint::parse("HTTP://example").unwrap();
        assert_eq!(e.port, 80);
        assert!(Endpoint::parse("https://127.0.0.1:9789").is_err());
        assert!(Endpoint::parse("http://127.0.0.1:port").is_err());
        assert!(Endpoint::parse("http://").is_err());
    }

    #[test]
    fn asks_a_daemon_for_one_process() {
        let e = Endpoint::parse("http://127.0.0.1:9789/ctxleak/").unwrap();
        assert_eq!(e.groups_url(), "http://127.0.0.1:9789/ctxleak/api/groups");
        let e = e.with_pid(Some(42));
        assert_eq!(
            e.groups_url(),
            "http://127.0.0.1:9789/ctxleak/api/groups?pid=42"
        );
    }

    #[test]
    fn parses_responses() {
        let ok = b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\n{}extra";
        assert_eq!(parse_response(ok).unwrap(), b"{}");
        let chunked = b"HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\n3\r\nabc\r\n2;x=y\r\nde\r\n0\r\n\r\n";
        assert_eq!(parse_response(chunked).unwrap(), b"abcde");
        let close = b"HTTP/1.0 200 OK\r\n\r\nall of it";
        assert_eq!(parse_response(close).unwrap(), b"all of it");
        let missing = b"HTTP/1.1 404 Not Found\r\ncontent-length: 0\r\n\r\n";
        assert!(
            parse_response(missing)
                .unwrap_err()
                .starts_with("HTTP 404 Not Found")
        );
        assert!(parse_response(b"").is_err());
        assert!(parse_response(b"HTTP/1.1 200 OK\r\nContent-Length: 10\r\n\r\nshort").is_err());
        assert!(parse_response(b"SSH-2.0-OpenSSH\r\n\r\n").is_err());
    }
}
