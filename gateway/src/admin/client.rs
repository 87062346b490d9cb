//! A minimal blocking HTTP/1.1 client for the CLI (one request per
//! connection, plain HTTP, no redirects): the admin API is all it talks to.

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream, ToSocketAddrs};
use std::time::Duration;

/// Why a request to the admin API failed.
#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    /// The admin URL is not `http://host:port`.
    #[error("admin URL {0:?} must look like http://127.0.0.1:8089")]
    BadUrl(String),
    /// Could not connect.
    #[error(
        "cannot reach the admin API at {addr}: {source} (is rtcgate running, and is [admin] enabled?)"
    )]
    Connect {
        /// Where.
        addr: String,
        /// Why.
        source: std::io::Error,
    },
    /// The exchange failed midway.
    #[error("admin API I/O error: {0}")]
    Io(#[from] std::io::Error),
    /// The reply is not HTTP.
    #[error("malformed reply from the admin API")]
    Malformed,
}

/// A reply: status and body.
#[derive(Debug, Clone)]
pub struct Response {
    /// HTTP status.
    pub status: u16,
    /// Body as text.
    pub body: String,
}

/// Where the admin API is and how to authenticate.
#[derive(Debug, Clone)]
pub struct AdminClient {
    host: String,
    addr: SocketAddr,
    token: Option<String>,
    timeout: Duration,
}

impl AdminClient {
    /// A client for `url` (`http://host:port`, optional trailing slash).
    pub fn new(url: &str, token: Option<String>) -> Result<Self, ClientError> {
        let bad = || ClientError::BadUrl(url.to_owned());
        let rest = url.strip_prefix("http://").ok_or_else(bad)?;
        let host = rest.trim_end_matches('/');
        if host.is_empty() || host.contains('/') {
            return Err(bad());
        }
        let addr = host
            .to_socket_addrs()
            .map_err(|_| bad())?
            .next()
            .ok_or_else(bad)?;
        Ok(Self {
            host: host.to_owned(),
            addr,
            token,
            timeout: Duration::from_secs(30),
        })
    }

    /// The URL of a listen address (`0.0.0.0`/`::` become loopback).
    pub fn url_for(listen: SocketAddr) -> String {
        let ip = match listen.ip() {
            ip if ip.is_unspecified() && ip.is_ipv4() => std::net::IpAddr::from([127, 0, 0, 1]),
            ip if ip.is_unspecified() => std::net::IpAddr::from(std::net::Ipv6Addr::LOCALHOST),
            ip => ip,
        };
        format!("http://{}", SocketAddr::new(ip, listen.port()))
    }

    /// `GET path`.
    pub fn get(&self, path: &str) -> Result<Response, ClientError> {
        self.request("GET", path)
    }

    /// `POST path` (empty body).
    pub fn post(&self, path: &str) -> Result<Response, ClientError> {
        self.request("POST", path)
    }

    fn request(&self, method: &str, path: &str) -> Result<Response, ClientError> {
        let mut tcp =
            TcpStream::connect_timeout(&self.addr, Duration::from_secs(5)).map_err(|source| {
                ClientError::Connect {
                    addr: self.host.clone(),
                    source,
                }
            })?;
        tcp.set_read_timeout(Some(self.timeout))?;
        tcp.set_write_timeout(Some(self.timeout))?;
        let auth = self
            .token
            .as_deref()
            .map(|t| format!("Authorization: Bearer {t}\r\n"))
            .unwrap_or_default();
        let req = format!(
            "{method} {path} HTTP/1.1\r\nHost: {}\r\n{auth}User-Agent: rtcgate-cli/{}\r\nAccept: application/json\r\nContent-Length: 0\r\nConnection: close\r\n\r\n",
            self.host,
            env!("CARGO_PKG_VERSION")
        );
        tcp.write_all(req.as_bytes())?;
        let mut raw = Vec::new();
        tcp.read_to_end(&mut raw)?;
        parse(&raw)
    }
}

fn parse(raw: &[u8]) -> Result<Response, ClientError> {
    let mut headers = [httparse::EMPTY_HEADER; 32];
    let mut resp = httparse::Response::new(&mut headers);
    let len = match resp.parse(raw) {
        Ok(httparse::Status::Complete(n)) => n,
        _ => return Err(ClientError::Malformed),
    };
    let status = resp.code.ok_or(ClientError::Malformed)?;
    let body = raw.get(len..).unwrap_or_default();
    Ok(Response {
        status,
        body: String::from_utf8_lossy(body).into_owned(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn urls() {
        assert!(AdminClient::new("http://127.0.0.1:8089", None).is_ok());
        assert!(AdminClient::new("http://127.0.0.1:8089/", None).is_ok());
        assert!(AdminClient::new("https://127.0.0.1:8089", None).is_err());
        assert!(AdminClient::new("127.0.0.1:8089", None).is_err());
        assert_eq!(
            AdminClient::url_for("0.0.0.0:8089".parse().unwrap()),
            "http://127.0.0.1:8089"
        );
        assert_eq!(
            AdminClient::url_for("[::]:9".parse().unwrap()),
            "http://[::1]:9"
        );
    }

    #[test]
    fn parses_a_reply() {
        let r = parse(b"HTTP/1.1 401 Unauthorized\r\nContent-Length: 2\r\n\r\n{}").unwrap();
        assert_eq!(r.status, 401);
        assert_eq!(r.body, "{}");
    }
}
