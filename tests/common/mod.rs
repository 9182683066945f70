//! An apiserver-like test client and a harness that runs the real `mesh-admission` binary.
//!
//! The client speaks TLS verified against the generated `ca.crt` for the Service name, over HTTP/1.1
//! or HTTP/2 chosen by ALPN, the way kube-apiserver's webhook dispatcher does.
#![allow(dead_code)]

pub mod rules;

use std::io::{BufRead, BufReader};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::sync::mpsc;
use std::time::Duration;

use http_body_util::{BodyExt, Full};
use hyper::body::Bytes;
use hyper::client::conn::{http1, http2};
use hyper_util::rt::{TokioExecutor, TokioIo};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, ServerName};
use serde_json::{Value, json};
use tokio::net::TcpStream;
use tokio_rustls::TlsConnector;

/// The name the apiserver verifies: `SERVICE.NAMESPACE.svc`.
pub const SERVICE_NAME: &str = "mesh-admission.mesh-system.svc";

pub fn bin() -> &'static str {
    env!("CARGO_BIN_EXE_mesh-admission")
}

/// A fresh directory under the target dir, removed first if it exists.
pub fn temp_dir(name: &str) -> PathBuf {
    let dir =
        PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join(format!("{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

/// Runs `mesh-admission certs --out DIR` and checks it succeeded.
pub fn generate_certs(dir: &Path) {
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

enum Sender {
    H1(http1::SendRequest<Full<Bytes>>),
    H2(http2::SendRequest<Full<Bytes>>),
}

/// One TLS connection to the server, kept open across requests.
pub struct Client {
    sender: Sender,
    pub peer_certificate: Vec<u8>,
    pub alpn: Option<Vec<u8>>,
}

pub fn tls_connector(ca: &Path, protocol: Protocol) -> TlsConnector {
    let mut roots = rustls::RootCertStore::empty();
    for cert in CertificateDer::pem_file_iter(ca).unwrap() {
        roots.add(cert.unwrap()).unwrap();
    }
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut config = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_root_certificates(roots)
        .with_no_client_auth();
    config.alpn_protocols = vec![match protocol {
        Protocol::Http1 => b"http/1.1".to_vec(),
        Protocol::Http2 => b"h2".to_vec(),
    }];
    TlsConnector::from(Arc::new(config))
}

impl Client {
    /// Connects, verifying the server against `ca` for [`SERVICE_NAME`].
    pub async fn connect(
        addr: SocketAddr,
        ca: &Path,
        protocol: Protocol,
    ) -> Result<Client, String> {
        let tcp = TcpStream::connect(addr).await.map_err(|e| e.to_string())?;
        let name = ServerName::try_from(SERVICE_NAME).unwrap();
        let tls = tls_connector(ca, protocol)
            .connect(name, tcp)
            .await
            .map_err(|e| e.to_string())?;
        let (_, session) = tls.get_ref();
        let peer_certificate = session
            .peer_certificates()
            .and_then(|c| c.first())
            .map(|c| c.to_vec())
            .unwrap_or_default();
        let alpn = session.alpn_protocol().map(<[u8]>::to_vec);
        let io = TokioIo::new(tls);
        let sender = match protocol {
            Protocol::Http1 => {
                let (sender, conn) = http1::handshake(io).await.map_err(|e| e.to_string())?;
                tokio::spawn(conn);
                Sender::H1(sender)
            }
            Protocol::Http2 => {
                let (sender, conn) = http2::handshake(TokioExecutor::new(), io)
                    .await
                    .map_err(|e| e.to_string())?;
                tokio::spawn(conn);
                Sender::H2(sender)
            }
        };
        Ok(Client {
            sender,
            peer_certificate,
            alpn,
        })
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

    /// Sends one request; the error is the transport's (a closed connection, say).
    pub async fn request(
        &mut self,
        method: &str,
        path: &str,
        body: Vec<u8>,
    ) -> Result<(u16, Vec<u8>), String> {
        let request = hyper::Request::builder()
            .method(method)
            .uri(path)
            .header("host", SERVICE_NAME)
            .header("content-type", "application/json")
            .body(Full::new(Bytes::from(body)))
            .unwrap();
        let response = match &mut self.sender {
            Sender::H1(s) => {
                s.ready().await.map_err(|e| e.to_string())?;
                s.send_request(request).await
            }
            Sender::H2(s) => {
                s.ready().await.map_err(|e| e.to_string())?;
                s.send_request(request).await
            }
        }
        .map_err(|e| e.to_string())?;
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
