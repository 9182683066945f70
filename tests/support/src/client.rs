//! An apiserver-like client: TLS verified against a CA file for the name the apiserver verifies,
//! HTTP/1.1 or HTTP/2 chosen by ALPN, the way kube-apiserver's webhook dispatcher connects; and the
//! apiserver's checks on a webhook's reply. The load engine ([`crate::load`]) and the API client
//! ([`crate::api`]) connect through it too.

use std::convert::Infallible;
use std::net::SocketAddr;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use http_body_util::combinators::BoxBody;
use http_body_util::{BodyExt, Empty, Full};
use hyper::body::{Bytes, Incoming};
use hyper::client::conn::{TrySendError, http1, http2};
use hyper::{Request, Response, Version};
use hyper_util::rt::{TokioExecutor, TokioIo};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName};
use serde_json::{Value, json};
use tokio::net::TcpStream;
use tokio_rustls::TlsConnector;
use tokio_rustls::client::TlsStream;

/// The name the apiserver verifies: `SERVICE.NAMESPACE.svc`.
pub const SERVICE_NAME: &str = "mesh-admission.mesh-system.svc";
pub const H2: &[u8] = b"h2";
pub const HTTP11: &[u8] = b"http/1.1";

pub type ClientBody = BoxBody<Bytes, Infallible>;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Protocol {
    /// HTTP/1.1 keep-alive, one request at a time per connection.
    Http1,
    /// HTTP/2, several streams per connection.
    Http2,
}

impl Protocol {
    pub fn alpn(self) -> &'static [u8] {
        match self {
            Protocol::Http1 => HTTP11,
            Protocol::Http2 => H2,
        }
    }

    /// `h1` or `h2`, as the load tools name them.
    pub fn as_str(self) -> &'static str {
        match self {
            Protocol::Http1 => "h1",
            Protocol::Http2 => "h2",
        }
    }
}

impl std::str::FromStr for Protocol {
    type Err = String;

    fn from_str(text: &str) -> Result<Self, String> {
        match text {
            "h1" => Ok(Protocol::Http1),
            "h2" => Ok(Protocol::Http2),
            _ => Err(format!("unknown protocol {text:?} (h1 or h2)")),
        }
    }
}

/// A client certificate and its key, for mutual TLS.
pub struct ClientIdentity {
    pub chain: Vec<CertificateDer<'static>>,
    pub key: PrivateKeyDer<'static>,
}

/// A client that trusts only the certificates in `ca` (PEM) and offers the `alpn` protocols (none:
/// no ALPN at all).
pub fn try_client_config(
    ca: &Path,
    alpn: &[&[u8]],
    identity: Option<ClientIdentity>,
) -> Result<rustls::ClientConfig, String> {
    let what = |e: &dyn std::fmt::Display| format!("{}: {e}", ca.display());
    let mut roots = rustls::RootCertStore::empty();
    for cert in CertificateDer::pem_file_iter(ca).map_err(|e| what(&e))? {
        roots
            .add(cert.map_err(|e| what(&e))?)
            .map_err(|e| what(&e))?;
    }
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let builder = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| e.to_string())?
        .with_root_certificates(roots);
    let mut config = match identity {
        Some(id) => builder
            .with_client_auth_cert(id.chain, id.key)
            .map_err(|e| format!("client certificate: {e}"))?,
        None => builder.with_no_client_auth(),
    };
    config.alpn_protocols = alpn.iter().map(|p| p.to_vec()).collect();
    Ok(config)
}

/// [`try_client_config`], failing the test when the CA cannot be read.
pub fn client_config(
    ca: &Path,
    alpn: &[&[u8]],
    identity: Option<ClientIdentity>,
) -> rustls::ClientConfig {
    try_client_config(ca, alpn, identity).unwrap_or_else(|e| panic!("TLS client: {e}"))
}

/// A TLS connection to `addr` verifying the server for `name`, each step within `limit`; `Err`
/// holds a short reason (`connect_refused`, `tls_handshake`, ...) and the message.
pub async fn tls_connect_to(
    addr: SocketAddr,
    name: ServerName<'static>,
    connector: &TlsConnector,
    limit: Duration,
) -> Result<TlsStream<TcpStream>, (&'static str, String)> {
    let tcp = match tokio::time::timeout(limit, TcpStream::connect(addr)).await {
        Err(_) => {
            return Err((
                "connect_timeout",
                format!("TCP connect to {addr} timed out"),
            ));
        }
        Ok(Err(e)) => return Err((connect_reason(&e), format!("connecting to {addr}: {e}"))),
        Ok(Ok(tcp)) => tcp,
    };
    let _ = tcp.set_nodelay(true);
    match tokio::time::timeout(limit, connector.connect(name, tcp)).await {
        Err(_) => Err((
            "tls_timeout",
            format!("TLS handshake with {addr} timed out"),
        )),
        Ok(Err(e)) => Err(("tls_handshake", error_chain(&e))),
        Ok(Ok(tls)) => Ok(tls),
    }
}

fn connect_reason(error: &std::io::Error) -> &'static str {
    match error.kind() {
        std::io::ErrorKind::ConnectionRefused => "connect_refused",
        std::io::ErrorKind::ConnectionReset => "connect_reset",
        std::io::ErrorKind::TimedOut => "connect_timeout",
        _ => "connect_error",
    }
}

/// A TLS connection to `addr`, verifying the server for [`SERVICE_NAME`].
pub async fn tls_connect(
    addr: SocketAddr,
    config: rustls::ClientConfig,
) -> std::io::Result<TlsStream<TcpStream>> {
    let tcp = TcpStream::connect(addr).await?;
    let name = ServerName::try_from(SERVICE_NAME).expect("server name");
    TlsConnector::from(Arc::new(config))
        .connect(name, tcp)
        .await
}

/// [`tls_connect`] without a client certificate; panics when it fails.
pub async fn connect(addr: SocketAddr, ca: &Path, alpn: &[&[u8]]) -> TlsStream<TcpStream> {
    tls_connect(addr, client_config(ca, alpn, None))
        .await
        .expect("TLS connect")
}

pub fn peer_leaf(stream: &TlsStream<TcpStream>) -> CertificateDer<'static> {
    stream
        .get_ref()
        .1
        .peer_certificates()
        .and_then(|chain| chain.first())
        .expect("peer certificate")
        .clone()
        .into_owned()
}

pub fn file_leaf(path: &Path) -> CertificateDer<'static> {
    CertificateDer::pem_file_iter(path)
        .expect("read cert")
        .next()
        .expect("a cert")
        .expect("pem")
}

/// An error with its sources, one line.
pub fn error_chain(error: &(dyn std::error::Error + 'static)) -> String {
    let mut text = error.to_string();
    let mut source = error.source();
    while let Some(inner) = source {
        text.push_str(": ");
        text.push_str(&inner.to_string());
        source = inner.source();
    }
    text
}

pub enum Sender {
    H1(http1::SendRequest<ClientBody>),
    H2(http2::SendRequest<ClientBody>),
}

/// One TLS connection to a server, kept open across requests.
pub struct Client {
    pub sender: Sender,
    pub peer_certificate: Vec<u8>,
    pub alpn: Option<Vec<u8>>,
}

impl Client {
    /// Connects offering only `protocol`, verifying the server against `ca` for [`SERVICE_NAME`].
    pub async fn connect(
        addr: SocketAddr,
        ca: &Path,
        protocol: Protocol,
    ) -> Result<Client, String> {
        let config = client_config(ca, &[protocol.alpn()], None);
        let tls = tls_connect(addr, config).await.map_err(|e| e.to_string())?;
        Client::over(tls).await.map_err(|e| e.to_string())
    }

    /// HTTP on an established TLS connection, in the version ALPN chose, as a real client would.
    pub async fn over(tls: TlsStream<TcpStream>) -> hyper::Result<Client> {
        let (_, session) = tls.get_ref();
        let peer_certificate = session
            .peer_certificates()
            .and_then(|c| c.first())
            .map(|c| c.to_vec())
            .unwrap_or_default();
        let alpn = session.alpn_protocol().map(<[u8]>::to_vec);
        let io = TokioIo::new(tls);
        let sender = if alpn.as_deref() == Some(H2) {
            let (sender, conn) = http2::handshake(TokioExecutor::new(), io).await?;
            tokio::spawn(conn);
            Sender::H2(sender)
        } else {
            let (sender, conn) = http1::handshake(io).await?;
            tokio::spawn(conn);
            Sender::H1(sender)
        };
        Ok(Client {
            sender,
            peer_certificate,
            alpn,
        })
    }

    /// [`Client::over`], panicking when the HTTP handshake fails.
    pub async fn handshake(tls: TlsStream<TcpStream>) -> Client {
        Client::over(tls).await.expect("HTTP handshake")
    }

    /// Another handle on the same HTTP/2 connection, for concurrent streams; `None` for HTTP/1.
    pub fn another_stream(&self) -> Option<Client> {
        match &self.sender {
            Sender::H1(_) => None,
            Sender::H2(s) => Some(Client {
                sender: Sender::H2(s.clone()),
                peer_certificate: self.peer_certificate.clone(),
                alpn: self.alpn.clone(),
            }),
        }
    }

    /// The connection is gone (closed by either side, or failed).
    pub fn is_closed(&self) -> bool {
        match &self.sender {
            Sender::H1(s) => s.is_closed(),
            Sender::H2(s) => s.is_closed(),
        }
    }

    /// Waits until the connection can take a request (HTTP/1.1: the previous one is answered).
    pub async fn ready(&mut self) -> hyper::Result<()> {
        match &mut self.sender {
            Sender::H1(s) => s.ready().await,
            Sender::H2(s) => s.ready().await,
        }
    }

    pub async fn send(
        &mut self,
        request: Request<ClientBody>,
    ) -> hyper::Result<Response<Incoming>> {
        self.ready().await?;
        match &mut self.sender {
            Sender::H1(s) => s.send_request(request).await,
            Sender::H2(s) => s.send_request(request).await,
        }
    }

    /// Sends without waiting for readiness; a request the connection never wrote comes back in the
    /// error, so that it can be sent on another.
    pub async fn try_send(
        &mut self,
        request: Request<ClientBody>,
    ) -> Result<Response<Incoming>, TrySendError<Request<ClientBody>>> {
        match &mut self.sender {
            Sender::H1(s) => s.try_send_request(request).await,
            Sender::H2(s) => s.try_send_request(request).await,
        }
    }

    /// Sends one request; the error is the transport's (a closed connection, say).
    pub async fn request(
        &mut self,
        method: &str,
        path: &str,
        body: Vec<u8>,
    ) -> Result<(u16, Vec<u8>), String> {
        let request = Request::builder()
            .method(method)
            .uri(path)
            .header("host", SERVICE_NAME)
            .header("content-type", "application/json")
            .body(full(body))
            .unwrap();
        let response = self.send(request).await.map_err(|e| e.to_string())?;
        let status = response.status().as_u16();
        let body = response
            .into_body()
            .collect()
            .await
            .map_err(|e| e.to_string())?
            .to_bytes()
            .to_vec();
        Ok((status, body))
    }

    /// GET `path`, returning status, version and body.
    pub async fn get(&mut self, path: &str) -> hyper::Result<(u16, Version, String)> {
        let request = Request::get(format!("https://{SERVICE_NAME}{path}"))
            .body(empty())
            .expect("request");
        let response = self.send(request).await?;
        let status = response.status().as_u16();
        let version = response.version();
        let body = response.into_body().collect().await?.to_bytes();
        Ok((status, version, String::from_utf8_lossy(&body).into_owned()))
    }

    /// POSTs a review the way the apiserver does (`?timeout=5s`) and checks the reply as it would.
    pub async fn review(&mut self, endpoint: &str, review: &Value) -> Value {
        let path = format!("/{endpoint}?timeout=5s");
        let (status, body) = self
            .request("POST", &path, review.to_string().into_bytes())
            .await
            .unwrap();
        assert_eq!(status, 200, "{}", String::from_utf8_lossy(&body));
        let reply: Value = serde_json::from_slice(&body).unwrap();
        check_reply(review, &reply);
        reply
    }
}

pub fn empty() -> ClientBody {
    Empty::new().boxed()
}

pub fn full(bytes: impl Into<Bytes>) -> ClientBody {
    Full::new(bytes.into()).boxed()
}

/// The apiserver's checks on a webhook reply.
pub fn check_reply(review: &Value, reply: &Value) {
    assert_eq!(reply["apiVersion"], review["apiVersion"], "{reply}");
    assert_eq!(reply["kind"], "AdmissionReview", "{reply}");
    assert_eq!(
        reply["response"]["uid"], review["request"]["uid"],
        "{reply}"
    );
    assert!(reply["response"]["allowed"].is_boolean(), "{reply}");
    let has_patch = reply["response"].get("patch").is_some();
    assert_eq!(
        has_patch,
        reply["response"]["patchType"] == "JSONPatch",
        "{reply}"
    );
    if has_patch {
        patch_of(reply);
    }
}

/// The reply's patch, decoded from base64 JSON (empty when there is none).
pub fn patch_of(reply: &Value) -> json_patch::Patch {
    use base64::Engine;
    let Some(encoded) = reply["response"]["patch"].as_str() else {
        return json_patch::Patch(Vec::new());
    };
    let bytes = base64::engine::general_purpose::STANDARD
        .decode(encoded)
        .expect("patch is base64");
    serde_json::from_slice(&bytes).expect("patch is a JSON Patch")
}

/// An AdmissionReview v1 for `object`, with a fresh uid.
pub fn review_for(object: &Value, operation: &str) -> Value {
    static NEXT: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(1);
    let n = NEXT.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    let api_version = object["apiVersion"].as_str().unwrap_or("v1");
    let (group, version) = api_version.split_once('/').unwrap_or(("", api_version));
    let kind = object["kind"].as_str().unwrap_or("");
    json!({
        "apiVersion": "admission.k8s.io/v1",
        "kind": "AdmissionReview",
        "request": {
            "uid": format!("00000000-0000-4000-8000-{n:012}"),
            "kind": {"group": group, "version": version, "kind": kind},
            "resource": {"group": group, "version": version, "resource": format!("{}s", kind.to_lowercase())},
            "name": object["metadata"]["name"].as_str().unwrap_or(""),
            "namespace": object["metadata"]["namespace"].as_str().unwrap_or("default"),
            "operation": operation,
            "userInfo": {"username": "system:serviceaccount:kube-system:replicaset-controller"},
            "object": object,
            "oldObject": null,
            "dryRun": false,
        }
    })
}
