//! A real TLS server on 127.0.0.1 and a hyper client that trusts only the generated `ca.crt`.
#![allow(dead_code)]

use std::convert::Infallible;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::Router;
use axum::body::{Body, Bytes};
use axum::routing::{get, post};
use http_body_util::combinators::BoxBody;
use http_body_util::{BodyExt, Empty, Full};
use hyper::{Request, Response};
use hyper_util::rt::{TokioExecutor, TokioIo};
use mesh_admission::certs::{CertOptions, GeneratedCerts, generate};
use mesh_admission::server::listener::{ServeOptions, ServeReport, serve_tls};
use mesh_admission::server::tls::{
    CertificateResolver, ReloadEvent, server_config, spawn_reloader,
};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName};
use tokio::net::{TcpListener, TcpStream};
use tokio::task::JoinHandle;
use tokio_rustls::TlsConnector;
use tokio_rustls::client::TlsStream;
use tokio_util::sync::CancellationToken;

pub const SERVER_NAME: &str = "mesh-admission.mesh-system.svc";
pub const H2: &[u8] = b"h2";
pub const HTTP11: &[u8] = b"http/1.1";

pub type ClientBody = BoxBody<Bytes, Infallible>;

pub fn temp_dir(tag: &str) -> PathBuf {
    static N: AtomicU64 = AtomicU64::new(0);
    let dir = std::env::temp_dir().join(format!(
        "mesh-admission-it-{tag}-{}-{}",
        std::process::id(),
        N.fetch_add(1, Ordering::Relaxed)
    ));
    let _ = std::fs::remove_dir_all(&dir);
    dir
}

pub fn certs(dir: &Path) -> GeneratedCerts {
    generate(&CertOptions::with_defaults(dir)).expect("generate certs")
}

/// Handlers shaped like the real ones: `/echo` collects the body the way the admission routes do.
pub fn app() -> Router {
    Router::new()
        .route("/hello", get(|| async { "hello" }))
        .route(
            "/echo",
            post(|body: Body| async move {
                match axum::body::to_bytes(body, 1024 * 1024).await {
                    Ok(bytes) => (axum::http::StatusCode::OK, bytes.len().to_string()),
                    Err(error) => (axum::http::StatusCode::BAD_REQUEST, error.to_string()),
                }
            }),
        )
        .route(
            "/slow",
            get(|| async {
                tokio::time::sleep(Duration::from_millis(700)).await;
                "slow"
            }),
        )
        .route(
            "/panic",
            get(|| async {
                if true {
                    panic!("handler bug");
                }
                "unreachable"
            }),
        )
}

pub fn fast_options() -> ServeOptions {
    ServeOptions {
        request_deadline: Duration::from_secs(1),
        shutdown_grace: Duration::from_millis(300),
        drain_timeout: Duration::from_secs(5),
        handshake_timeout: Duration::from_secs(1),
        idle_timeout: Duration::from_secs(3),
    }
}

pub struct TestServer {
    pub addr: SocketAddr,
    pub shutdown: CancellationToken,
    pub handle: JoinHandle<ServeReport>,
    pub events: Arc<Mutex<Vec<ReloadEvent>>>,
    pub resolver: Arc<CertificateResolver>,
}

impl TestServer {
    pub async fn start(
        cert: &Path,
        key: &Path,
        client_ca: Option<&Path>,
        opts: ServeOptions,
    ) -> Self {
        let resolver = Arc::new(CertificateResolver::from_files(cert, key).expect("load pair"));
        let tls = server_config(resolver.clone(), client_ca).expect("server config");
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let addr = listener.local_addr().expect("addr");
        let shutdown = CancellationToken::new();
        let events = Arc::new(Mutex::new(Vec::new()));
        let sink = events.clone();
        spawn_reloader(
            resolver.clone(),
            cert.to_owned(),
            key.to_owned(),
            Duration::from_millis(50),
            move |event| sink.lock().expect("events").push(event),
            shutdown.child_token(),
        );
        let token = shutdown.clone();
        let handle = tokio::spawn(async move {
            serve_tls(listener, tls, app(), opts, token.cancelled_owned())
                .await
                .expect("serve")
        });
        Self {
            addr,
            shutdown,
            handle,
            events,
            resolver,
        }
    }

    /// Waits (bounded) until the reloader has reported `n` events.
    pub async fn wait_for_events(&self, n: usize) -> Vec<ReloadEvent> {
        for _ in 0..100 {
            let events = self.events.lock().expect("events").clone();
            if events.len() >= n {
                return events;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        panic!(
            "reloader reported {:?}, expected {n} events",
            self.events.lock().expect("events")
        );
    }
}

pub struct ClientIdentity {
    pub chain: Vec<CertificateDer<'static>>,
    pub key: PrivateKeyDer<'static>,
}

pub fn client_config(
    ca: &Path,
    alpn: &[&[u8]],
    identity: Option<ClientIdentity>,
) -> rustls::ClientConfig {
    let mut roots = rustls::RootCertStore::empty();
    for cert in CertificateDer::pem_file_iter(ca).expect("read ca") {
        roots.add(cert.expect("ca pem")).expect("add root");
    }
    let builder = rustls::ClientConfig::builder_with_provider(Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
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

pub async fn connect_with(
    addr: SocketAddr,
    config: rustls::ClientConfig,
) -> std::io::Result<TlsStream<TcpStream>> {
    let tcp = TcpStream::connect(addr).await?;
    let name = ServerName::try_from(SERVER_NAME).expect("server name");
    TlsConnector::from(Arc::new(config))
        .connect(name, tcp)
        .await
}

pub async fn connect(addr: SocketAddr, ca: &Path, alpn: &[&[u8]]) -> TlsStream<TcpStream> {
    connect_with(addr, client_config(ca, alpn, None))
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

/// One HTTP connection of either version, negotiated from ALPN like a real client would.
pub enum Client {
    H1(hyper::client::conn::http1::SendRequest<ClientBody>),
    H2(hyper::client::conn::http2::SendRequest<ClientBody>),
}

impl Client {
    pub async fn handshake(stream: TlsStream<TcpStream>) -> Self {
        let h2 = stream.get_ref().1.alpn_protocol() == Some(H2);
        let io = TokioIo::new(stream);
        if h2 {
            let (send, conn) = hyper::client::conn::http2::handshake(TokioExecutor::new(), io)
                .await
                .expect("h2 handshake");
            tokio::spawn(conn);
            Client::H2(send)
        } else {
            let (send, conn) = hyper::client::conn::http1::handshake(io)
                .await
                .expect("h1 handshake");
            tokio::spawn(conn);
            Client::H1(send)
        }
    }

    pub async fn send(
        &mut self,
        request: Request<ClientBody>,
    ) -> hyper::Result<Response<hyper::body::Incoming>> {
        match self {
            Client::H1(send) => {
                send.ready().await?;
                send.send_request(request).await
            }
            Client::H2(send) => {
                send.ready().await?;
                send.send_request(request).await
            }
        }
    }

    /// GET `path`, returning status, version and body.
    pub async fn get(&mut self, path: &str) -> hyper::Result<(u16, hyper::Version, String)> {
        let request = Request::get(format!("https://{SERVER_NAME}{path}"))
            .body(empty())
            .expect("request");
        let response = self.send(request).await?;
        let status = response.status().as_u16();
        let version = response.version();
        let body = response.into_body().collect().await?.to_bytes();
        Ok((status, version, String::from_utf8_lossy(&body).into_owned()))
    }
}

pub fn empty() -> ClientBody {
    Empty::new().boxed()
}

pub fn full(bytes: impl Into<Bytes>) -> ClientBody {
    Full::new(bytes.into()).boxed()
}
