//! The library's listener in-process: a real TLS server on 127.0.0.1 with a test router, short
//! timings, and the certificate reloader's events collected.

use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::Router;
use axum::body::Body;
use axum::routing::{get, post};
use mesh_admission::server::listener::{ServeOptions, ServeReport, serve};
use mesh_admission::server::tls::{
    CertificateResolver, ReloadEvent, server_config, spawn_reloader,
};
use tokio::net::TcpListener;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

/// Handlers shaped like the real ones: `/echo` collects the body the way the admission routes do.
/// No panic-catching layer, so `/panic` shows what the listener itself does with a panic.
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
    pub addr: std::net::SocketAddr,
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
            serve(listener, Some(tls), app(), opts, token.cancelled_owned())
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

    /// Waits until the reloader has reported `n` events (at most 10 s: the machine may be busy).
    pub async fn wait_for_events(&self, n: usize) -> Vec<ReloadEvent> {
        let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
        while tokio::time::Instant::now() < deadline {
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
