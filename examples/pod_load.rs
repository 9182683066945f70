//! A pod-creation load client for kube-apiserver, sending the way client-go does: a few HTTP/2
//! connections over TLS, many requests in flight on each, a bearer token.
//!
//! ```text
//! cargo run --release --example pod_load -- --url https://127.0.0.1:6443 --ca ca.crt \
//!     --token-file token --namespace bench --pod pod.json --count 1000 --in-flight 16
//! ```
//!
//! It POSTs `--pod` (a Pod as JSON, normally with `generateName`) `--count` times to
//! `/api/v1/namespaces/NS/pods`, keeping `--in-flight` requests under way over `--connections`
//! HTTP/2 connections, and prints one JSON object on stdout: pods created (status 201), failures by
//! status (or `timeout`, `transport`), the elapsed time from the first request to the last reply,
//! pods per second, and the latency of the create calls (p50, p99, max, mean, in ms).
//!
//! Connections are opened before the clock starts, so the run measures pod creations, not handshakes.
//! A connection that closes (a GOAWAY, say) is opened again for the requests after it, at most
//! `MAX_RECONNECTS` times in a run. No request is retried: a failure is a figure of the run.
//! Latencies are kept exactly (one value per request, `--count` is capped) and percentiles are the
//! nearest rank, as `loadgen` reports them.

// The webhook load client's TLS and error helpers (its engine is unused here).
#[path = "../tests/common/load.rs"]
mod load;

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use clap::Parser;
use http_body_util::{BodyExt, Full};
use hyper::body::Bytes;
use hyper::client::conn::http2;
use hyper_util::rt::{TokioExecutor, TokioIo};
use rustls::pki_types::ServerName;
use serde_json::{Value, json};
use tokio::net::TcpStream;
use tokio::sync::Mutex;
use tokio::time::Instant;
use tokio_rustls::TlsConnector;

/// Beyond this a run is not a benchmark of this tool's kind, and the latencies it keeps would grow
/// without a useful bound.
const MAX_COUNT: u64 = 10_000_000;
const MAX_IN_FLIGHT: usize = 4096;
/// A connection that keeps closing means the apiserver is going away: the run stops reconnecting.
const MAX_RECONNECTS: u64 = 10;
/// Error bodies kept per failure reason, for the report.
const SAMPLES_PER_REASON: usize = 2;

#[derive(Debug, Parser)]
#[command(about = "Pod-creation load for kube-apiserver over HTTP/2, as client-go sends it")]
struct Args {
    /// The apiserver's base URL, `https://HOST:PORT`.
    #[arg(long)]
    url: String,
    /// CA certificate (PEM) that signed the apiserver's serving certificate.
    #[arg(long)]
    ca: PathBuf,
    /// File holding the bearer token (a file, not an argument, so it stays out of `ps`).
    #[arg(long)]
    token_file: PathBuf,
    /// Namespace the pods are created in.
    #[arg(long)]
    namespace: String,
    /// The Pod to create, as JSON; give it `metadata.generateName` so every copy gets a new name.
    #[arg(long)]
    pod: PathBuf,
    /// Pods to create.
    #[arg(long, default_value_t = 1000)]
    count: u64,
    /// Requests under way at any time, spread over the connections.
    #[arg(long, default_value_t = 16)]
    in_flight: usize,
    /// HTTP/2 connections.
    #[arg(long, default_value_t = 1)]
    connections: usize,
    /// A request without a complete reply after this long fails as `timeout`.
    #[arg(long, default_value = "30", value_parser = parse_seconds)]
    timeout: Duration,
    /// No request starts after this long from the first one.
    #[arg(long, default_value = "600", value_parser = parse_seconds)]
    max_duration: Duration,
}

fn parse_seconds(text: &str) -> Result<Duration, String> {
    let seconds: f64 = text
        .trim_end_matches('s')
        .parse()
        .map_err(|_| format!("invalid number of seconds {text:?}"))?;
    Duration::try_from_secs_f64(seconds).map_err(|e| format!("invalid duration {text:?}: {e}"))
}

/// One connection's sender, shared by the lanes assigned to it, and opened again when it closed.
struct Slot {
    sender: Mutex<Option<http2::SendRequest<Full<Bytes>>>>,
}

struct Target {
    connector: TlsConnector,
    server_name: ServerName<'static>,
    /// `HOST:PORT` for the TCP connection.
    authority: String,
    uri: hyper::Uri,
    authorization: hyper::header::HeaderValue,
    body: Bytes,
    timeout: Duration,
}

impl Target {
    async fn connect(&self) -> Result<http2::SendRequest<Full<Bytes>>, String> {
        let handshake = async {
            let tcp = TcpStream::connect(&self.authority)
                .await
                .map_err(|e| format!("connecting to {}: {e}", self.authority))?;
            let _ = tcp.set_nodelay(true);
            let tls = self
                .connector
                .connect(self.server_name.clone(), tcp)
                .await
                .map_err(|e| format!("TLS handshake with {}: {e}", self.authority))?;
            let (sender, connection) = http2::handshake(TokioExecutor::new(), TokioIo::new(tls))
                .await
                .map_err(|e| format!("HTTP/2 handshake with {}: {e}", self.authority))?;
            tokio::spawn(connection);
            Ok(sender)
        };
        tokio::time::timeout(self.timeout, handshake)
            .await
            .map_err(|_| {
                format!(
                    "no connection to {} within {:?}",
                    self.authority, self.timeout
                )
            })?
    }

    fn request(&self) -> hyper::Request<Full<Bytes>> {
        let mut request = hyper::Request::new(Full::new(self.body.clone()));
        *request.method_mut() = hyper::Method::POST;
        *request.uri_mut() = self.uri.clone();
        let headers = request.headers_mut();
        headers.insert(hyper::header::AUTHORIZATION, self.authorization.clone());
        for (name, value) in [
            (hyper::header::CONTENT_TYPE, "application/json"),
            (hyper::header::ACCEPT, "application/json"),
            (
                hyper::header::USER_AGENT,
                "pod_load (mesh-admission bench-e2e)",
            ),
        ] {
            headers.insert(name, hyper::header::HeaderValue::from_static(value));
        }
        request
    }
}

/// What one lane saw.
#[derive(Default)]
struct Outcome {
    created: u64,
    latencies: Vec<Duration>,
    failed: BTreeMap<String, u64>,
    samples: BTreeMap<String, Vec<String>>,
}

impl Outcome {
    fn fail(&mut self, reason: String, message: String) {
        let samples = self.samples.entry(reason.clone()).or_default();
        if samples.len() < SAMPLES_PER_REASON {
            samples.push(message.chars().take(400).collect());
        }
        *self.failed.entry(reason).or_default() += 1;
    }

    fn merge(&mut self, other: Outcome) {
        self.created += other.created;
        self.latencies.extend(other.latencies);
        for (reason, count) in other.failed {
            *self.failed.entry(reason).or_default() += count;
        }
        for (reason, messages) in other.samples {
            let samples = self.samples.entry(reason).or_default();
            let room = SAMPLES_PER_REASON.saturating_sub(samples.len());
            samples.extend(messages.into_iter().take(room));
        }
    }
}

struct Run {
    target: Target,
    next: AtomicU64,
    count: u64,
    reconnects: AtomicU64,
    deadline: Instant,
}

impl Run {
    async fn sender(&self, slot: &Slot) -> Result<http2::SendRequest<Full<Bytes>>, String> {
        let mut guard = slot.sender.lock().await;
        if let Some(sender) = guard.as_ref().filter(|s| !s.is_closed()) {
            return Ok(sender.clone());
        }
        if self.reconnects.fetch_add(1, Ordering::Relaxed) >= MAX_RECONNECTS {
            return Err(format!(
                "the connection closed more than {MAX_RECONNECTS} times"
            ));
        }
        let sender = self.target.connect().await?;
        *guard = Some(sender.clone());
        Ok(sender)
    }

    /// Takes request numbers until `count` are taken or the deadline passed.
    async fn lane(self: Arc<Self>, slot: Arc<Slot>) -> Outcome {
        let mut outcome = Outcome::default();
        while self.next.fetch_add(1, Ordering::Relaxed) < self.count
            && Instant::now() < self.deadline
        {
            let mut sender = match self.sender(&slot).await {
                Ok(sender) => sender,
                Err(message) => {
                    outcome.fail("connect".to_owned(), message);
                    continue;
                }
            };
            let started = Instant::now();
            let exchange = async {
                let response = sender
                    .send_request(self.target.request())
                    .await
                    .map_err(|e| ("transport".to_owned(), load::error_chain(&e)))?;
                let status = response.status();
                let body = response
                    .into_body()
                    .collect()
                    .await
                    .map_err(|e| ("transport".to_owned(), load::error_chain(&e)))?
                    .to_bytes();
                Ok::<_, (String, String)>((status, body))
            };
            match tokio::time::timeout(self.target.timeout, exchange).await {
                Err(_) => outcome.fail(
                    "timeout".to_owned(),
                    format!("no reply within {:?}", self.target.timeout),
                ),
                Ok(Err((reason, message))) => outcome.fail(reason, message),
                Ok(Ok((status, _))) if status == hyper::StatusCode::CREATED => {
                    outcome.created += 1;
                    outcome.latencies.push(started.elapsed());
                }
                Ok(Ok((status, body))) => outcome.fail(
                    status.as_u16().to_string(),
                    String::from_utf8_lossy(&body).into_owned(),
                ),
            }
        }
        outcome
    }
}

/// Nearest rank of the sorted `values`, in milliseconds with microsecond precision.
fn percentile_ms(sorted: &[Duration], q: f64) -> f64 {
    let Some(last) = sorted.len().checked_sub(1) else {
        return 0.0;
    };
    let rank = ((q * sorted.len() as f64).ceil() as usize).clamp(1, sorted.len());
    ms(sorted[(rank - 1).min(last)])
}

fn ms(duration: Duration) -> f64 {
    (duration.as_secs_f64() * 1e6).round() / 1e3
}

fn target(args: &Args) -> Result<Target, String> {
    let base: hyper::Uri = args
        .url
        .parse()
        .map_err(|e| format!("--url {:?}: {e}", args.url))?;
    if base.scheme_str() != Some("https") {
        return Err(format!("--url {:?}: only https is supported", args.url));
    }
    let host = base
        .host()
        .ok_or_else(|| format!("--url {:?} has no host", args.url))?
        .trim_start_matches('[')
        .trim_end_matches(']')
        .to_owned();
    let port = base.port_u16().unwrap_or(443);
    let server_name = ServerName::try_from(host.clone()).map_err(|e| format!("--url: {e}"))?;
    let authority = if host.contains(':') {
        format!("[{host}]:{port}")
    } else {
        format!("{host}:{port}")
    };
    let uri = format!(
        "https://{authority}/api/v1/namespaces/{}/pods",
        args.namespace
    )
    .parse()
    .map_err(|e| format!("--namespace {:?}: {e}", args.namespace))?;
    let token = std::fs::read_to_string(&args.token_file)
        .map_err(|e| format!("{}: {e}", args.token_file.display()))?;
    let authorization = format!("Bearer {}", token.trim())
        .parse()
        .map_err(|_| format!("{}: not a valid token", args.token_file.display()))?;
    let body = std::fs::read(&args.pod).map_err(|e| format!("{}: {e}", args.pod.display()))?;
    let pod: Value = serde_json::from_slice(&body)
        .map_err(|e| format!("{}: not JSON: {e}", args.pod.display()))?;
    if pod["kind"] != "Pod" {
        return Err(format!("{}: not a Pod", args.pod.display()));
    }
    Ok(Target {
        connector: load::tls_connector(&args.ca, load::Protocol::H2)?,
        server_name,
        authority,
        uri,
        authorization,
        body: Bytes::from(body),
        timeout: args.timeout,
    })
}

async fn run(args: Args) -> Result<Value, String> {
    let target = target(&args)?;
    let mut slots = Vec::with_capacity(args.connections);
    for _ in 0..args.connections {
        let sender = target.connect().await?;
        slots.push(Arc::new(Slot {
            sender: Mutex::new(Some(sender)),
        }));
    }
    let start = Instant::now();
    let run = Arc::new(Run {
        target,
        next: AtomicU64::new(0),
        count: args.count,
        reconnects: AtomicU64::new(0),
        deadline: start + args.max_duration,
    });
    let mut lanes = tokio::task::JoinSet::new();
    for lane in 0..args.in_flight {
        lanes.spawn(run.clone().lane(slots[lane % slots.len()].clone()));
    }
    // Every lane ends within a request timeout (plus a reconnect) of the deadline; a lane still
    // running after that is a bug here, and is cut off rather than waited for.
    let hard_stop = run.deadline + run.target.timeout * 3;
    let mut outcome = Outcome::default();
    let mut lost_lanes = 0;
    loop {
        match tokio::time::timeout_at(hard_stop, lanes.join_next()).await {
            Ok(Some(Ok(lane))) => outcome.merge(lane),
            Ok(Some(Err(error))) => {
                outcome.fail("lane_failed".to_owned(), error.to_string());
                lost_lanes += 1;
            }
            Ok(None) => break,
            Err(_) => {
                lost_lanes += lanes.len();
                lanes.abort_all();
                break;
            }
        }
    }
    let elapsed = start.elapsed();
    let sent = outcome.created + outcome.failed.values().sum::<u64>();
    outcome.latencies.sort_unstable();
    let mean = if outcome.latencies.is_empty() {
        Duration::ZERO
    } else {
        outcome.latencies.iter().sum::<Duration>() / outcome.latencies.len() as u32
    };
    let seconds = elapsed.as_secs_f64().max(1e-9);
    Ok(json!({
        "count": args.count,
        "sent": sent,
        "created": outcome.created,
        "failed": outcome.failed,
        "not_sent": args.count.saturating_sub(sent),
        "connections": args.connections,
        "in_flight": args.in_flight,
        "reconnects": run.reconnects.load(Ordering::Relaxed),
        "lost_lanes": lost_lanes,
        "elapsed_s": (seconds * 1e3).round() / 1e3,
        "pods_per_s": (outcome.created as f64 / seconds * 10.0).round() / 10.0,
        "latency_ms": {
            "p50": percentile_ms(&outcome.latencies, 0.50),
            "p90": percentile_ms(&outcome.latencies, 0.90),
            "p99": percentile_ms(&outcome.latencies, 0.99),
            "max": outcome.latencies.last().copied().map_or(0.0, ms),
            "mean": ms(mean),
        },
        "error_samples": outcome.samples,
    }))
}

fn main() -> ExitCode {
    let args = Args::parse();
    if !(1..=MAX_COUNT).contains(&args.count)
        || !(1..=MAX_IN_FLIGHT).contains(&args.in_flight)
        || !(1..=args.in_flight).contains(&args.connections)
    {
        eprintln!(
            "pod_load: --count must be 1 to {MAX_COUNT}, --in-flight 1 to {MAX_IN_FLIGHT}, \
             --connections 1 to --in-flight"
        );
        return ExitCode::from(2);
    }
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(runtime) => runtime,
        Err(e) => {
            eprintln!("pod_load: starting the tokio runtime: {e}");
            return ExitCode::from(2);
        }
    };
    match runtime.block_on(run(args)) {
        Ok(report) => {
            println!("{report}");
            ExitCode::SUCCESS
        }
        Err(error) => {
            eprintln!("pod_load: {error}");
            ExitCode::from(2)
        }
    }
}
