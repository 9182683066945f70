//! The floor: mesh-admission's own TLS and HTTP stack (the same listener, rustls configuration,
//! certificate resolver and axum router layers) answering every POST with a constant allowed
//! AdmissionReview, without decoding the body. Only the uid is copied in (found by a byte search),
//! since the apiserver, and the load tool, reject a reply that does not echo it. `hack/bench.sh`
//! runs it beside the real server: the difference is what decoding, the rules and the reply cost.
//!
//! With `--patch FILE` (a JSON Patch array, such as the `patch` that `mesh-admission review -o patch`
//! prints for a pod), every `/mutate` reply carries that patch, base64-encoded, with `patchType:
//! JSONPatch`, still without decoding the request: `hack/bench-e2e.sh` uses it so that the
//! apiserver's own cost of applying a mutation is in the baseline. The patch is the same for every
//! object, so only send it objects it applies to (the benchmark's pods).
//!
//! cargo run --release --example null_webhook -- --listen 127.0.0.1:8444 --tls-cert certs/tls.crt --tls-key certs/tls.key [--patch FILE]

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;

use anyhow::Context;
use axum::Router;
use axum::body::Bytes;
use axum::extract::DefaultBodyLimit;
use axum::http::header;
use axum::response::IntoResponse;
use axum::routing::{get, post};
use base64::Engine as _;
use clap::Parser;
use mesh_admission::config::Config;
use mesh_admission::server::listener::{self, ServeOptions};
use mesh_admission::server::tls::{self, CertificateResolver};
use tower_http::catch_panic::CatchPanicLayer;

/// The same allocator as the server, so the comparison isolates decoding and the rules.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

const HEAD: &[u8] =
    br#"{"apiVersion":"admission.k8s.io/v1","kind":"AdmissionReview","response":{"uid":""#;
const TAIL: &[u8] = br#"","allowed":true}}"#;
const PATCHED_TAIL_HEAD: &[u8] = br#"","allowed":true,"patchType":"JSONPatch","patch":""#;
const PATCHED_TAIL_END: &[u8] = br#""}}"#;

#[derive(Parser)]
struct Args {
    #[arg(long, default_value = "127.0.0.1:8444")]
    listen: SocketAddr,
    #[arg(long, default_value = "certs/tls.crt")]
    tls_cert: PathBuf,
    #[arg(long, default_value = "certs/tls.key")]
    tls_key: PathBuf,
    /// A JSON Patch (array) that every `/mutate` reply carries.
    #[arg(long)]
    patch: Option<PathBuf>,
}

/// The first `"uid":"…"` of the body: the request's (the apiserver writes it first in `request`).
fn uid(body: &[u8]) -> &[u8] {
    const KEY: &[u8] = br#""uid":""#;
    let Some(start) = body
        .windows(KEY.len())
        .position(|w| w == KEY)
        .map(|i| i + KEY.len())
    else {
        return b"";
    };
    let len = body[start..].iter().position(|b| *b == b'"').unwrap_or(0);
    &body[start..start + len]
}

fn reply(body: &[u8], tail: &[u8]) -> impl IntoResponse + use<> {
    let uid = uid(body);
    let mut reply = Vec::with_capacity(HEAD.len() + uid.len() + tail.len());
    reply.extend_from_slice(HEAD);
    reply.extend_from_slice(uid);
    reply.extend_from_slice(tail);
    ([(header::CONTENT_TYPE, "application/json")], reply)
}

async fn allow(body: Bytes) -> impl IntoResponse {
    reply(&body, TAIL)
}

/// The reply's tail after the uid with `patch` in it. The patch is checked to be a JSON array at
/// start-up, since the apiserver refuses every admission of a reply whose patch is not one.
fn patched_tail(patch: &[u8]) -> anyhow::Result<Vec<u8>> {
    let ops: serde_json::Value = serde_json::from_slice(patch).context("not JSON")?;
    anyhow::ensure!(
        ops.is_array(),
        "not a JSON Patch: the top level is not an array"
    );
    let encoded = base64::engine::general_purpose::STANDARD.encode(patch);
    Ok([PATCHED_TAIL_HEAD, encoded.as_bytes(), PATCHED_TAIL_END].concat())
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    let resolver = Arc::new(
        CertificateResolver::from_files(&args.tls_cert, &args.tls_key)
            .context("serving certificate")?,
    );
    let tls_config = tls::server_config(resolver, None)?;
    let mutate = match &args.patch {
        None => post(allow),
        Some(path) => {
            let patch =
                std::fs::read(path).with_context(|| format!("reading {}", path.display()))?;
            let tail: Arc<[u8]> = patched_tail(&patch)
                .with_context(|| format!("--patch {}", path.display()))?
                .into();
            post(move |body: Bytes| async move { reply(&body, &tail) })
        }
    };
    // The same layers as the real webhook router, so only the handler differs.
    let app = Router::new()
        .route("/mutate", mutate)
        .route("/validate", post(allow))
        .route("/readyz", get(|| async { "ok\n" }))
        .layer(DefaultBodyLimit::max(Config::default().max_body_bytes))
        .layer(CatchPanicLayer::new());
    let signals = mesh_admission::signals::spawn_signal_handler()?;
    let tcp = tokio::net::TcpListener::bind(args.listen).await?;
    eprintln!("null webhook listening on {}", tcp.local_addr()?);
    let options = ServeOptions {
        shutdown_grace: std::time::Duration::ZERO,
        ..ServeOptions::default()
    };
    let shutdown = signals.shutdown.clone().cancelled_owned();
    tokio::select! {
        served = listener::serve(tcp, Some(tls_config), app, options, shutdown) => served?,
        aborted = signals.aborted() => return Err(aborted.into()),
    };
    Ok(())
}
