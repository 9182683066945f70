//! Blocking HTTP/1.1 GETs: the admin ports of the processes under test (plain HTTP) and the
//! apiserver's own endpoints (TLS with the admin token).

use std::io::{self, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::sync::Arc;
use std::time::Duration;

use rustls::pki_types::ServerName;

/// One plain-HTTP GET on 127.0.0.1 (an admin port); the whole response, status line first.
pub fn admin_get(addr: SocketAddr, path: &str) -> io::Result<String> {
    let tcp = TcpStream::connect_timeout(&addr, Duration::from_secs(2))?;
    tcp.set_read_timeout(Some(Duration::from_secs(5)))?;
    tcp.set_write_timeout(Some(Duration::from_secs(5)))?;
    http_get(tcp, path, None)
}

/// One GET over TLS verified by `config` for the address itself, with a bearer token.
pub fn https_get(
    addr: SocketAddr,
    config: &Arc<rustls::ClientConfig>,
    token: &str,
    path: &str,
) -> io::Result<String> {
    let tcp = TcpStream::connect_timeout(&addr, Duration::from_secs(2))?;
    tcp.set_read_timeout(Some(Duration::from_secs(5)))?;
    let name = ServerName::IpAddress(addr.ip().into());
    let tls = rustls::ClientConnection::new(config.clone(), name).map_err(io::Error::other)?;
    http_get(rustls::StreamOwned::new(tls, tcp), path, Some(token))
}

/// The status code of a response [`admin_get`] returned (0 when it has none).
pub fn status(reply: &str) -> u16 {
    reply
        .strip_prefix("HTTP/1.1 ")
        .and_then(|rest| rest.get(..3))
        .and_then(|code| code.parse().ok())
        .unwrap_or(0)
}

/// The body of a response [`admin_get`] returned.
pub fn body(reply: &str) -> &str {
    reply.split_once("\r\n\r\n").map_or("", |(_, body)| body)
}

/// One HTTP/1.1 GET on `stream`; returns the whole response, status line first.
fn http_get(mut stream: impl Read + Write, path: &str, token: Option<&str>) -> io::Result<String> {
    let auth = token.map_or(String::new(), |t| format!("Authorization: Bearer {t}\r\n"));
    write!(
        stream,
        "GET {path} HTTP/1.1\r\nHost: 127.0.0.1\r\n{auth}Connection: close\r\n\r\n"
    )?;
    let mut reply = Vec::new();
    match stream.read_to_end(&mut reply) {
        // A TLS peer may close without close_notify once the reply is complete.
        Err(e) if e.kind() == io::ErrorKind::UnexpectedEof && !reply.is_empty() => {}
        result => {
            result?;
        }
    }
    Ok(String::from_utf8_lossy(&dechunk(reply)?).into_owned())
}

/// The reply with a chunked body joined back into one, so that no chunk header cuts a line of it
/// (the apiserver's `/metrics` comes in chunks, and a counter cut in two would read as absent).
fn dechunk(reply: Vec<u8>) -> io::Result<Vec<u8>> {
    let Some(end) = reply.windows(4).position(|w| w == b"\r\n\r\n") else {
        return Ok(reply);
    };
    let (head, mut body) = (&reply[..end + 4], &reply[end + 4..]);
    let chunked = String::from_utf8_lossy(head)
        .to_ascii_lowercase()
        .contains("transfer-encoding: chunked");
    if !chunked {
        return Ok(reply);
    }
    let malformed = || io::Error::new(io::ErrorKind::InvalidData, "malformed chunked body");
    let mut joined = head.to_vec();
    loop {
        let line_end = body
            .windows(2)
            .position(|w| w == b"\r\n")
            .ok_or_else(malformed)?;
        let size_text = String::from_utf8_lossy(&body[..line_end]);
        let size_text = size_text.split(';').next().unwrap_or_default().trim();
        let size = usize::from_str_radix(size_text, 16).map_err(|_| malformed())?;
        body = &body[line_end + 2..];
        if size == 0 {
            return Ok(joined);
        }
        let chunk = body.get(..size).ok_or_else(malformed)?;
        joined.extend_from_slice(chunk);
        body = body.get(size + 2..).ok_or_else(malformed)?;
    }
}
