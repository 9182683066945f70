//! The integration tests' harness: an apiserver-like TLS client, the real `mesh-admission` binary
//! as a server, and (in [`listener`]) the library's listener in-process.
//!
//! The client speaks TLS verified against the generated `ca.crt` for the Service name, over HTTP/1.1
//! or HTTP/2 chosen by ALPN, the way kube-apiserver's webhook dispatcher does.
#![allow(dead_code)]

pub mod listener;
pub mod rules;

use std::convert::Infallible;
use std::io::{BufRead, BufReader, Write};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::mpsc;
use std::time::Duration;

use http_body_util::combinators::BoxBody;
use http_body_util::{BodyExt, Empty, Full};
use hyper::body::{Bytes, Incoming};
use hyper::client::conn::{http1, http2};
use hyper::{Request, Response, Version};
use hyper_util::rt::{TokioExecutor, TokioIo};
use mesh_admission::certs::GeneratedCerts;
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

pub fn bin() -> &'static str {
    env!("CARGO_BIN_EXE_mesh-admission")
}

/// A fresh, empty directory under the target dir, unique to this process and call.
pub fn temp_dir(name: &str) -> PathBuf {
    static N: AtomicU64 = AtomicU64::new(0);
    let n = N.fetch_add(1, Ordering::Relaxed);
    let dir = PathBuf::from(env!("CARGO_TARGET_TMPDIR"))
        .join(format!("{name}-{}-{n}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

/// Runs `mesh-admission certs --out DIR` (an existing CA there is reused) and checks it succeeded.
pub fn generate_certs(dir: &Path) -> GeneratedCerts {
    let out = Command::new(bin())
        .args(["certs", "--out"])
        .arg(dir)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "certs failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    GeneratedCerts {
        ca_cert: dir.join("ca.crt"),
        ca_key: dir.join("ca.key"),
        tls_cert: dir.join("tls.crt"),
        tls_key: dir.join("tls.key"),
        reused_ca: String::from_utf8_lossy(&out.stdout).contains("CA (reused)"),
    }
}

/// Runs `mesh-admission SUBCOMMAND ARGS` feeding `stdin`; returns (exit code, stdout, stderr).
pub fn run_command(subcommand: &str, args: &[&str], stdin: &str) -> (i32, String, String) {
    let mut child = Command::new(bin())
        .arg(subcommand)
        .args(args)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    child
        .stdin
        .take()
        .unwrap()
        .write_all(stdin.as_bytes())
        .unwrap();
    let out = child.wait_with_output().unwrap();
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8(out.stdout).unwrap(),
        String::from_utf8(out.stderr).unwrap(),
    )
}

/// A running `mesh-admission serve` process.
pub struct Server {
    pub child: Child,
    pub addr: SocketAddr,
    pub admin_addr: SocketAddr,
    pub logs: mpsc::Receiver<String>,
}

impl Server {
    /// Starts `serve` on ephemeral 127.0.0.1 ports with the pair in `dir`, plus `extra` flags.
    pub fn start(dir: &Path, extra: &[&str]) -> Server {
        let mut child = Command::new(bin())
            // As the image and the chart run it (src/main.rs says why).
            .env("MIMALLOC_PURGE_DELAY", "0")
            .args([
                "serve",
                "--listen",
                "127.0.0.1:0",
                "--admin-listen",
                "127.0.0.1:0",
                "--log-format",
                "json",
            ])
            .arg("--tls-cert")
            .arg(dir.join("tls.crt"))
            .arg("--tls-key")
            .arg(dir.join("tls.key"))
            .args(extra)
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        let stderr = child.stderr.take().unwrap();
        let (tx, rx) = mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stderr).lines().map_while(Result::ok) {
                if tx.send(line).is_err() {
                    break;
                }
            }
        });
        let deadline = std::time::Instant::now() + Duration::from_secs(20);
        loop {
            let remaining = deadline.saturating_duration_since(std::time::Instant::now());
            let line = rx.recv_timeout(remaining).unwrap_or_else(|_| {
                panic!(
                    "server did not report its address (exit: {:?})",
                    child.try_wait()
                )
            });
            let Ok(log) = serde_json::from_str::<Value>(&line) else {
                continue;
            };
            if log["fields"]["message"] == "listening" {
                let addr = log["fields"]["addr"].as_str().unwrap().parse().unwrap();
                let admin_addr = log["fields"]["admin_addr"]
                    .as_str()
                    .unwrap()
                    .parse()
                    .unwrap();
                return Server {
                    child,
                    addr,
                    admin_addr,
                    logs: rx,
                };
            }
        }
    }

    /// Log lines printed so far.
    pub fn drain_logs(&self) -> Vec<String> {
        self.logs.try_iter().collect()
    }

    pub fn signal(&self, signal: nix::sys::signal::Signal) {
        let pid = nix::unistd::Pid::from_raw(self.child.id() as i32);
        nix::sys::signal::kill(pid, signal).unwrap();
    }

    /// Waits for the process to exit, at most `limit`.
    pub fn wait_exit(&mut self, limit: Duration) -> Option<std::process::ExitStatus> {
        let deadline = std::time::Instant::now() + limit;
        while std::time::Instant::now() < deadline {
            if let Some(status) = self.child.try_wait().unwrap() {
                return Some(status);
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        None
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Protocol {
    Http1,
    Http2,
}

impl Protocol {
    pub fn alpn(self) -> &'static [u8] {
        match self {
            Protocol::Http1 => HTTP11,
            Protocol::Http2 => H2,
        }
    }
}

/// A client certificate and its key, for mutual TLS.
pub struct ClientIdentity {
    pub chain: Vec<CertificateDer<'static>>,
    pub key: PrivateKeyDer<'static>,
}

/// A client that trusts only `ca` and offers the `alpn` protocols (none: no ALPN at all).
pub fn client_config(
    ca: &Path,
    alpn: &[&[u8]],
    identity: Option<ClientIdentity>,
) -> rustls::ClientConfig {
    let mut roots = rustls::RootCertStore::empty();
    for cert in CertificateDer::pem_file_iter(ca).expect("read ca") {
        roots.add(cert.expect("ca pem")).expect("add root");
    }
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let builder = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .expect("versions")
        .with_root_certificates(roots);
    let mut config = match identity {
        Some(id) => builder
            .with_client_auth_cert(id.chain, id.key)
            .expect("client cert"),
        None => builder.with_no_client_auth(),
    };
    config.alpn_protocols = alpn.iter().map(|p| p.to_vec()).collect();
    config
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

pub enum Sender {
    H1(http1::SendRequest<ClientBody>),
    H2(http2::SendRequest<ClientBody>),
}

/// One TLS connection to the server, kept open across requests.
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

    pub async fn send(
        &mut self,
        request: Request<ClientBody>,
    ) -> hyper::Result<Response<Incoming>> {
        match &mut self.sender {
            Sender::H1(s) => {
                s.ready().await?;
                s.send_request(request).await
            }
            Sender::H2(s) => {
                s.ready().await?;
                s.send_request(request).await
            }
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
