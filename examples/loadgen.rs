//! A small load client for the admission webhook, speaking TLS like kube-apiserver does.
//!
//! ```text
//! cargo run --release --example loadgen -- --addr 127.0.0.1:8443 --ca certs/ca.crt \
//!     --body hack/samples/pod.json --path '/mutate?timeout=5s' --protocol h1 \
//!     --connections 25 --rate 2000 --duration 20s [--max-requests N] [--json]
//! ```
//!
//! Every request carries a fresh `request.uid`, and every reply is checked the way the apiserver
//! checks it (status 200, JSON `AdmissionReview`, `response.uid` echoed, `allowed` a boolean,
//! `patchType` and `patch` consistent, the patch base64 JSON). Outcomes fall in three classes:
//!
//! * **ok**: a valid reply;
//! * **failed** (by reason): the request was written to a connection and no valid reply came back
//!   (wrong status, invalid reply, timeout, connection closed or reset before the reply);
//! * **not reached** (by reason): the request never got to the server: the TCP connect or the TLS
//!   handshake failed. A request that the client knows was not written (hyper hands it back), or that
//!   HTTP/2 GOAWAY says was not processed, is retried once on a fresh connection, as Go's transport
//!   does; those retries are counted.
//!
//! With `--rate R` the load is open-loop: request `i` is due at `start + i/R`, and its latency is
//! measured from that due time, not from when a connection became free, so a slow server cannot
//! hide its stalls by slowing the client down (coordinated omission). The service time (from the
//! actual send) and the send lag (due time to send: the client's own delay, from waking a lane or
//! waiting for a free connection) are reported too. Requests still queued more than 1 s after
//! `--duration` ended, because every connection was busy, are reported as `overdue_unsent`.
//! `--rate 0` saturates: each lane sends its next request as soon as its reply is in.
//!
//! Latencies go into an HdrHistogram (the `hdrhistogram` crate, 3 significant digits: under 0.1 %
//! error); percentiles report the upper edge of their bucket, capped by the exact maximum, and the
//! mean and maximum are exact.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use base64::Engine as _;
use clap::{Parser, ValueEnum};
use http_body_util::{BodyExt, Full};
use hyper::body::Bytes;
use hyper::client::conn::{http1, http2};
use hyper_util::rt::{TokioExecutor, TokioIo};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, ServerName};
use serde_json::{Value, json};
use tokio::net::TcpStream;
use tokio::sync::Mutex;
use tokio::time::Instant;
use tokio_rustls::TlsConnector;

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
enum Protocol {
    H1,
    H2,
}

impl Protocol {
    fn as_str(self) -> &'static str {
        match self {
            Protocol::H1 => "h1",
            Protocol::H2 => "h2",
        }
    }
}

#[derive(Debug, Parser)]
#[command(about = "Load client for mesh-admission: fresh uids, apiserver-style reply checks")]
struct Args {
    /// Address of the webhook's TLS port.
    #[arg(long)]
    addr: SocketAddr,
    /// CA certificate (PEM) the server certificate is verified against.
    #[arg(long)]
    ca: PathBuf,
    /// Name verified in the server certificate (and sent as SNI and Host).
    #[arg(long, default_value = "mesh-admission.mesh-system.svc")]
    server_name: String,
    /// AdmissionReview JSON file; its `request.uid` is replaced for every request.
    #[arg(long)]
    body: PathBuf,
    /// Request path, e.g. `/mutate` or `/validate?timeout=5s`.
    #[arg(long, default_value = "/mutate")]
    path: String,
    /// HTTP/1.1 (one request at a time per connection, keep-alive) or HTTP/2.
    #[arg(long, value_enum, default_value_t = Protocol::H1)]
    protocol: Protocol,
    /// Connections kept open.
    #[arg(long, default_value_t = 25)]
    connections: usize,
    /// Concurrent streams per HTTP/2 connection (HTTP/1.1 always has one).
    #[arg(long, default_value_t = 8)]
    streams: usize,
    /// Requests per second over all connections; 0 sends as fast as the connections allow.
    #[arg(long, default_value_t = 0.0)]
    rate: f64,
    /// How long to send, e.g. `20s`, `500ms`, `10m`.
    #[arg(long, default_value = "10s", value_parser = parse_duration)]
    duration: Duration,
    /// Stop after this many requests (0: no limit).
    #[arg(long, default_value_t = 0)]
    max_requests: u64,
    /// A request without a complete reply after this long fails as `timeout`.
    #[arg(long, default_value = "10s", value_parser = parse_duration)]
    timeout: Duration,
    /// TCP connect + TLS + HTTP handshake limit.
    #[arg(long, default_value = "5s", value_parser = parse_duration)]
    connect_timeout: Duration,
    /// Print one JSON object on stdout (the text report goes to stderr).
    #[arg(long)]
    json: bool,
}

fn parse_duration(text: &str) -> Result<Duration, String> {
    let text = text.trim();
    let split = text
        .find(|c: char| !(c.is_ascii_digit() || c == '.'))
        .unwrap_or(text.len());
    let (number, unit) = text.split_at(split);
    let number: f64 = number
        .parse()
        .map_err(|_| format!("invalid duration {text:?}"))?;
    let seconds = match unit {
        "" | "s" => number,
        "ms" => number / 1e3,
        "us" | "µs" => number / 1e6,
        "m" => number * 60.0,
        "h" => number * 3600.0,
        _ => {
            return Err(format!(
                "invalid duration unit in {text:?} (use ms, s, m, h)"
            ));
        }
    };
    Duration::try_from_secs_f64(seconds).map_err(|e| format!("invalid duration {text:?}: {e}"))
}

// ---------------------------------------------------------------------------------------------
// Histogram

/// Nanosecond values in an HdrHistogram (3 significant digits: under 0.1 % error, resized as
/// needed), with the exact sum and maximum beside it for the mean and the max.
#[derive(Clone)]
struct Histogram {
    hdr: hdrhistogram::Histogram<u64>,
    sum: u128,
    max: u64,
}

impl Histogram {
    fn new() -> Self {
        Self {
            hdr: hdrhistogram::Histogram::new(3).expect("3 significant digits are valid"),
            sum: 0,
            max: 0,
        }
    }

    fn record(&mut self, value: Duration) {
        let nanos = u64::try_from(value.as_nanos()).unwrap_or(u64::MAX);
        // Auto-resizing covers any duration; clamping is only a fallback for absurd values.
        if self.hdr.record(nanos).is_err() {
            self.hdr.saturating_record(nanos);
        }
        self.sum += u128::from(nanos);
        self.max = self.max.max(nanos);
    }

    fn merge(&mut self, other: &Histogram) {
        self.hdr
            .add(&other.hdr)
            .expect("auto-resizing histograms always add");
        self.sum += other.sum;
        self.max = self.max.max(other.max);
    }

    /// The value at quantile `q` (0..=1): the upper edge of its bucket, at most the maximum.
    fn quantile(&self, q: f64) -> u64 {
        if self.hdr.is_empty() {
            return 0;
        }
        self.hdr.value_at_quantile(q).min(self.max)
    }

    fn summary_ms(&self) -> Value {
        let ms = |nanos: u64| (nanos as f64 / 1e6 * 1000.0).round() / 1000.0;
        let total = self.hdr.len();
        let mean = if total == 0 {
            0.0
        } else {
            self.sum as f64 / total as f64
        };
        json!({
            "count": total,
            "mean": (mean / 1e6 * 1000.0).round() / 1000.0,
            "p50": ms(self.quantile(0.50)),
            "p90": ms(self.quantile(0.90)),
            "p99": ms(self.quantile(0.99)),
            "p999": ms(self.quantile(0.999)),
            "max": ms(self.max),
        })
    }
}

// ---------------------------------------------------------------------------------------------
// Statistics

/// Up to this many example error messages are kept per reason.
const SAMPLES_PER_REASON: usize = 3;

#[derive(Clone)]
struct Stats {
    ok: u64,
    allowed: u64,
    denied: u64,
    patched: u64,
    failures: BTreeMap<String, u64>,
    not_reached: BTreeMap<String, u64>,
    samples: BTreeMap<String, Vec<String>>,
    retried_unsent: u64,
    connections_opened: u64,
    latency: Histogram,
    service: Histogram,
    send_lag: Histogram,
}

impl Stats {
    fn new() -> Self {
        Self {
            ok: 0,
            allowed: 0,
            denied: 0,
            patched: 0,
            failures: BTreeMap::new(),
            not_reached: BTreeMap::new(),
            samples: BTreeMap::new(),
            retried_unsent: 0,
            connections_opened: 0,
            latency: Histogram::new(),
            service: Histogram::new(),
            send_lag: Histogram::new(),
        }
    }

    fn sample(&mut self, reason: &str, message: String) {
        let list = self.samples.entry(reason.to_string()).or_default();
        if list.len() < SAMPLES_PER_REASON {
            list.push(message);
        }
    }

    fn failed(&self) -> u64 {
        self.failures.values().sum()
    }

    fn unreached(&self) -> u64 {
        self.not_reached.values().sum()
    }

    fn merge(&mut self, other: &Stats) {
        self.ok += other.ok;
        self.allowed += other.allowed;
        self.denied += other.denied;
        self.patched += other.patched;
        for (k, v) in &other.failures {
            *self.failures.entry(k.clone()).or_default() += v;
        }
        for (k, v) in &other.not_reached {
            *self.not_reached.entry(k.clone()).or_default() += v;
        }
        for (k, v) in &other.samples {
            for message in v {
                self.sample(k, message.clone());
            }
        }
        self.retried_unsent += other.retried_unsent;
        self.connections_opened += other.connections_opened;
        self.latency.merge(&other.latency);
        self.service.merge(&other.service);
        self.send_lag.merge(&other.send_lag);
    }
}

// ---------------------------------------------------------------------------------------------
// Requests

/// The body split around its uid, so each request is `prefix + uid + suffix`.
struct BodyTemplate {
    prefix: Vec<u8>,
    suffix: Vec<u8>,
    api_version: String,
}

impl BodyTemplate {
    /// Splits the file's text itself around `request.uid`, so every other byte (in particular the
    /// apiserver's key order, which the server's one-pass decoding relies on) is sent as written.
    fn load(path: &PathBuf) -> Result<Self, String> {
        let text = std::fs::read_to_string(path).map_err(|e| format!("{}: {e}", path.display()))?;
        let review: Value =
            serde_json::from_str(&text).map_err(|e| format!("{}: {e}", path.display()))?;
        let uid = review["request"]["uid"]
            .as_str()
            .filter(|uid| !uid.is_empty())
            .ok_or_else(|| format!("{}: no `request.uid` string", path.display()))?;
        let api_version = review["apiVersion"]
            .as_str()
            .unwrap_or("admission.k8s.io/v1")
            .to_string();
        // The request's own uid: the first `"uid":"<uid>"` after `"request":`.
        let request_at = text
            .find("\"request\"")
            .ok_or_else(|| format!("{}: no `request` key", path.display()))?;
        let needle = format!("\"{uid}\"");
        let at = text[request_at..]
            .find(&needle)
            .map(|i| request_at + i + 1)
            .ok_or_else(|| format!("{}: request.uid not found in the text", path.display()))?;
        Ok(Self {
            prefix: text.as_bytes()[..at].to_vec(),
            suffix: text.as_bytes()[at + uid.len()..].to_vec(),
            api_version,
        })
    }

    fn render(&self, uid: &str) -> Bytes {
        let mut body = Vec::with_capacity(self.prefix.len() + uid.len() + self.suffix.len());
        body.extend_from_slice(&self.prefix);
        body.extend_from_slice(uid.as_bytes());
        body.extend_from_slice(&self.suffix);
        Bytes::from(body)
    }
}

/// Requests due more than this long before the end of the run are still sent; later ones count as
/// `overdue_unsent`.
const LATE_CUTOFF: Duration = Duration::from_secs(1);

/// Hands out requests. Open-loop: a thread sleeps until each due time (`start + i / rate`, with
/// the kernel's timer precision rather than tokio's 1 ms wheel) and queues it; a free lane takes
/// the oldest, so due times queue up while every connection is busy. Saturating: a request is due
/// whenever a lane is free.
enum Pacer {
    Saturate {
        end: Instant,
        max_requests: u64,
        next: AtomicU64,
    },
    Paced {
        end: Instant,
        due: Mutex<tokio::sync::mpsc::UnboundedReceiver<Instant>>,
        /// How many requests came due, sent or not.
        scheduled: Arc<AtomicU64>,
    },
}

impl Pacer {
    fn new(start: Instant, duration: Duration, rate: f64, max_requests: u64) -> Self {
        let end = start + duration;
        if rate <= 0.0 {
            return Pacer::Saturate {
                end,
                max_requests,
                next: AtomicU64::new(0),
            };
        }
        let (tx, rx) = tokio::sync::mpsc::unbounded_channel();
        let scheduled = Arc::new(AtomicU64::new(0));
        let counter = scheduled.clone();
        let (start, end_std) = (start.into_std(), end.into_std());
        std::thread::spawn(move || {
            for i in 0u64.. {
                if max_requests > 0 && i >= max_requests {
                    break;
                }
                let due = start + Duration::from_secs_f64(i as f64 / rate);
                if due >= end_std {
                    break;
                }
                let now = std::time::Instant::now();
                if due > now {
                    std::thread::sleep(due - now);
                }
                counter.fetch_add(1, Ordering::Relaxed);
                if tx.send(Instant::from_std(due)).is_err() {
                    break;
                }
            }
        });
        Pacer::Paced {
            end,
            due: Mutex::new(rx),
            scheduled,
        }
    }

    async fn take(&self) -> Option<Instant> {
        match self {
            Pacer::Saturate {
                end,
                max_requests,
                next,
            } => {
                let now = Instant::now();
                if now >= *end {
                    return None;
                }
                let i = next.fetch_add(1, Ordering::Relaxed);
                (*max_requests == 0 || i < *max_requests).then_some(now)
            }
            Pacer::Paced { end, due, .. } => {
                let due = due.lock().await.recv().await?;
                (Instant::now() < *end + LATE_CUTOFF).then_some(due)
            }
        }
    }

    /// Requests that came due (open-loop only).
    fn scheduled(&self) -> u64 {
        match self {
            Pacer::Saturate { .. } => 0,
            Pacer::Paced { scheduled, .. } => scheduled.load(Ordering::Relaxed),
        }
    }

    fn end(&self) -> Instant {
        match self {
            Pacer::Saturate { end, .. } | Pacer::Paced { end, .. } => *end,
        }
    }
}

struct Context {
    args: Args,
    connector: TlsConnector,
    server_name: ServerName<'static>,
    body: BodyTemplate,
    uri: hyper::Uri,
    uid_prefix: String,
    uid_counter: AtomicU64,
    /// When the clock started, for the timestamps of error samples.
    start: Instant,
}

enum Conn {
    H1(http1::SendRequest<Full<Bytes>>),
    H2(http2::SendRequest<Full<Bytes>>),
}

/// Why a request did not produce a reply.
enum SendError {
    /// The server never saw it: it can be retried on another connection.
    Unsent(String),
    /// It was written and no complete reply came back.
    Failed(&'static str, String),
}

fn error_chain(error: &(dyn std::error::Error + 'static)) -> String {
    let mut text = error.to_string();
    let mut source = error.source();
    while let Some(inner) = source {
        text.push_str(": ");
        text.push_str(&inner.to_string());
        source = inner.source();
    }
    text
}

fn connect_reason(error: &std::io::Error) -> &'static str {
    match error.kind() {
        std::io::ErrorKind::ConnectionRefused => "connect_refused",
        std::io::ErrorKind::ConnectionReset => "connect_reset",
        std::io::ErrorKind::TimedOut => "connect_timeout",
        _ => "connect_error",
    }
}

impl Context {
    /// An error sample: when (seconds since the start), which request, what.
    fn stamp(&self, uid: &str, message: &str) -> String {
        let t = self.start.elapsed().as_secs_f64();
        format!("t+{t:.3}s uid {uid}: {message}")
    }

    fn next_uid(&self) -> String {
        let n = self.uid_counter.fetch_add(1, Ordering::Relaxed);
        format!("{}-{n:012x}", self.uid_prefix)
    }

    /// TCP, TLS and the HTTP handshake. The error is a not-reached reason and a message.
    async fn connect(&self) -> Result<Conn, (&'static str, String)> {
        let tcp = match tokio::time::timeout(
            self.args.connect_timeout,
            TcpStream::connect(self.args.addr),
        )
        .await
        {
            Err(_) => return Err(("connect_timeout", "TCP connect timed out".into())),
            Ok(Err(e)) => return Err((connect_reason(&e), e.to_string())),
            Ok(Ok(tcp)) => tcp,
        };
        let _ = tcp.set_nodelay(true);
        let tls = match tokio::time::timeout(
            self.args.connect_timeout,
            self.connector.connect(self.server_name.clone(), tcp),
        )
        .await
        {
            Err(_) => return Err(("tls_timeout", "TLS handshake timed out".into())),
            Ok(Err(e)) => return Err(("tls_handshake", error_chain(&e))),
            Ok(Ok(tls)) => tls,
        };
        let io = TokioIo::new(tls);
        match self.args.protocol {
            Protocol::H1 => {
                let (sender, conn) = http1::handshake(io)
                    .await
                    .map_err(|e| ("http_handshake", error_chain(&e)))?;
                tokio::spawn(conn);
                Ok(Conn::H1(sender))
            }
            Protocol::H2 => {
                let (sender, conn) = http2::handshake(TokioExecutor::new(), io)
                    .await
                    .map_err(|e| ("http_handshake", error_chain(&e)))?;
                tokio::spawn(conn);
                Ok(Conn::H2(sender))
            }
        }
    }

    fn request(&self, body: Bytes) -> hyper::Request<Full<Bytes>> {
        let mut builder = hyper::Request::builder()
            .method("POST")
            .uri(self.uri.clone())
            .header("content-type", "application/json")
            .header("accept", "application/json");
        if self.args.protocol == Protocol::H1 {
            builder = builder.header("host", self.args.server_name.as_str());
        }
        builder.body(Full::new(body)).expect("valid request")
    }

    /// Sends one request on `conn` and reads the whole reply.
    async fn send(
        &self,
        conn: &mut Conn,
        request: hyper::Request<Full<Bytes>>,
    ) -> Result<(u16, Option<String>, Bytes), SendError> {
        let response = match conn {
            Conn::H1(sender) => sender.try_send_request(request).await,
            Conn::H2(sender) => sender.try_send_request(request).await,
        };
        let response = match response {
            Ok(response) => response,
            Err(mut error) => {
                let message = error_chain(error.error());
                if error.take_message().is_some() {
                    return Err(SendError::Unsent(message));
                }
                let error = error.into_error();
                // RFC 9113 §6.8: streams above GOAWAY's last stream id were not processed, and
                // REFUSED_STREAM means the same for one stream.
                if message.contains("connection error received: not a result of an error")
                    || message.contains("refused stream before processing")
                {
                    return Err(SendError::Unsent(message));
                }
                let reason = if error.is_incomplete_message() {
                    "closed_before_reply"
                } else if error.is_canceled() {
                    "canceled_after_send"
                } else if message.contains("reset") {
                    "reset_before_reply"
                } else if message.contains("broken pipe") {
                    "broken_pipe"
                } else {
                    "transport_error"
                };
                return Err(SendError::Failed(reason, message));
            }
        };
        let status = response.status().as_u16();
        let content_type = response
            .headers()
            .get("content-type")
            .and_then(|v| v.to_str().ok())
            .map(str::to_string);
        let body = response
            .into_body()
            .collect()
            .await
            .map_err(|e| SendError::Failed("reply_body_error", error_chain(&e)))?
            .to_bytes();
        Ok((status, content_type, body))
    }

    /// The apiserver's checks on a reply; `Ok((allowed, patched))`.
    fn check(
        &self,
        uid: &str,
        status: u16,
        content_type: Option<&str>,
        body: &[u8],
    ) -> Result<(bool, bool), (&'static str, String)> {
        let snippet = || String::from_utf8_lossy(&body[..body.len().min(200)]).into_owned();
        if status != 200 {
            let reason = match status {
                400 => "status_400",
                404 => "status_404",
                405 => "status_405",
                408 => "status_408",
                413 => "status_413",
                500 => "status_500",
                503 => "status_503",
                _ => "status_other",
            };
            return Err((reason, format!("status {status}: {}", snippet())));
        }
        if !content_type.is_some_and(|t| t.contains("json")) {
            return Err(("content_type", format!("content-type {content_type:?}")));
        }
        let reply: Value =
            serde_json::from_slice(body).map_err(|e| ("invalid_json", format!("{e}")))?;
        if reply["apiVersion"] != self.body.api_version.as_str() {
            return Err(("bad_api_version", snippet()));
        }
        if reply["kind"] != "AdmissionReview" {
            return Err(("bad_kind", snippet()));
        }
        let response = &reply["response"];
        if response["uid"] != uid {
            return Err((
                "uid_mismatch",
                format!("sent {uid}, got {}", response["uid"]),
            ));
        }
        let allowed = response["allowed"]
            .as_bool()
            .ok_or(("allowed_not_bool", snippet()))?;
        let patch = response.get("patch");
        let patch_type = response.get("patchType");
        match (patch, patch_type) {
            (None, None) => Ok((allowed, false)),
            (Some(patch), Some(kind)) if kind == "JSONPatch" => {
                let encoded = patch.as_str().ok_or(("patch_not_string", snippet()))?;
                let decoded = base64::engine::general_purpose::STANDARD
                    .decode(encoded)
                    .map_err(|e| ("patch_not_base64", e.to_string()))?;
                let ops: Value = serde_json::from_slice(&decoded)
                    .map_err(|e| ("patch_not_json", e.to_string()))?;
                if !ops.is_array() {
                    return Err(("patch_not_array", ops.to_string()));
                }
                Ok((allowed, true))
            }
            _ => Err(("patch_inconsistent", snippet())),
        }
    }
}

/// A connection shared by the lanes of one connection worker: HTTP/1.1 lends it to its single
/// lane, HTTP/2 clones the sender for every stream.
struct Slot {
    conn: Mutex<Option<Conn>>,
}

impl Slot {
    async fn acquire(
        &self,
        ctx: &Context,
        stats: &mut Stats,
    ) -> Result<Conn, (&'static str, String)> {
        let mut guard = self.conn.lock().await;
        let idle_h1 = match guard.take() {
            Some(Conn::H1(sender)) if !sender.is_closed() => Some(sender),
            Some(Conn::H2(sender)) if !sender.is_closed() => {
                *guard = Some(Conn::H2(sender.clone()));
                return Ok(Conn::H2(sender));
            }
            _ => None,
        };
        if let Some(mut sender) = idle_h1
            && sender.ready().await.is_ok()
        {
            return Ok(Conn::H1(sender));
        }
        let conn = ctx.connect().await?;
        stats.connections_opened += 1;
        if let Conn::H2(sender) = &conn {
            *guard = Some(Conn::H2(sender.clone()));
        }
        Ok(conn)
    }

    fn release(&self, conn: Conn) {
        if let Conn::H1(sender) = conn
            && let Ok(mut guard) = self.conn.try_lock()
        {
            *guard = Some(Conn::H1(sender));
        }
    }

    async fn invalidate(&self) {
        *self.conn.lock().await = None;
    }
}

/// One request, end to end, recorded in `stats`.
async fn one_request(ctx: &Context, slot: &Slot, due: Instant, stats: &mut Stats) {
    let uid = ctx.next_uid();
    let body = ctx.body.render(&uid);
    for attempt in 0..2 {
        let mut conn = match slot.acquire(ctx, stats).await {
            Ok(conn) => conn,
            Err((reason, message)) => {
                *stats.not_reached.entry(reason.into()).or_default() += 1;
                stats.sample(reason, ctx.stamp(&uid, &message));
                // A server that is gone is not hammered: this lane pauses a little.
                tokio::time::sleep(Duration::from_millis(20)).await;
                return;
            }
        };
        let sent = Instant::now();
        if attempt == 0 {
            stats.send_lag.record(sent.saturating_duration_since(due));
        }
        let outcome = tokio::time::timeout(
            ctx.args.timeout,
            ctx.send(&mut conn, ctx.request(body.clone())),
        )
        .await;
        let done = Instant::now();
        let reason_message = match outcome {
            Err(_elapsed) => Some(("timeout", format!("no reply within {:?}", ctx.args.timeout))),
            Ok(Err(SendError::Unsent(message))) => {
                stats.retried_unsent += 1;
                stats.sample("retried_unsent", ctx.stamp(&uid, &message));
                slot.invalidate().await;
                if attempt == 0 {
                    continue;
                }
                *stats.not_reached.entry("unsent_twice".into()).or_default() += 1;
                return;
            }
            Ok(Err(SendError::Failed(reason, message))) => Some((reason, message)),
            Ok(Ok((status, content_type, reply))) => {
                slot.release(conn);
                match ctx.check(&uid, status, content_type.as_deref(), &reply) {
                    Ok((allowed, patched)) => {
                        stats.ok += 1;
                        if allowed {
                            stats.allowed += 1;
                        } else {
                            stats.denied += 1;
                        }
                        if patched {
                            stats.patched += 1;
                        }
                        stats.latency.record(done - due);
                        stats.service.record(done - sent);
                        None
                    }
                    Err((reason, message)) => Some((reason, message)),
                }
            }
        };
        if let Some((reason, message)) = reason_message {
            *stats.failures.entry(reason.into()).or_default() += 1;
            stats.sample(reason, ctx.stamp(&uid, &message));
        }
        return;
    }
}

async fn lane(ctx: Arc<Context>, pacer: Arc<Pacer>, slot: Arc<Slot>) -> Stats {
    let mut stats = Stats::new();
    while let Some(due) = pacer.take().await {
        one_request(&ctx, &slot, due, &mut stats).await;
    }
    stats
}

fn tls_connector(ca: &PathBuf, protocol: Protocol) -> Result<TlsConnector, String> {
    let mut roots = rustls::RootCertStore::empty();
    let certs = CertificateDer::pem_file_iter(ca).map_err(|e| format!("{}: {e}", ca.display()))?;
    for cert in certs {
        let cert = cert.map_err(|e| format!("{}: {e}", ca.display()))?;
        roots
            .add(cert)
            .map_err(|e| format!("{}: {e}", ca.display()))?;
    }
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut config = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| e.to_string())?
        .with_root_certificates(roots)
        .with_no_client_auth();
    config.alpn_protocols = vec![match protocol {
        Protocol::H1 => b"http/1.1".to_vec(),
        Protocol::H2 => b"h2".to_vec(),
    }];
    Ok(TlsConnector::from(Arc::new(config)))
}

fn report(args: &Args, stats: &Stats, elapsed: Duration, overdue: u64) -> (String, Value) {
    let failed = stats.failed();
    let unreached = stats.unreached();
    let requests = stats.ok + failed + unreached;
    let seconds = elapsed.as_secs_f64().max(1e-9);
    let throughput = stats.ok as f64 / seconds;
    let latency = stats.latency.summary_ms();
    let service = stats.service.summary_ms();
    let send_lag = stats.send_lag.summary_ms();
    let value = json!({
        "protocol": args.protocol.as_str(),
        "addr": args.addr.to_string(),
        "path": args.path,
        "connections": args.connections,
        "streams": if args.protocol == Protocol::H2 { args.streams } else { 1 },
        "target_rate": args.rate,
        "elapsed_s": (seconds * 1000.0).round() / 1000.0,
        "requests": requests,
        "ok": stats.ok,
        "failed": failed,
        "failures": stats.failures,
        "not_reached": unreached,
        "not_reached_reasons": stats.not_reached,
        "retried_unsent": stats.retried_unsent,
        "overdue_unsent": overdue,
        "connections_opened": stats.connections_opened,
        "allowed": stats.allowed,
        "denied": stats.denied,
        "patched": stats.patched,
        "throughput": (throughput * 10.0).round() / 10.0,
        "latency_ms": latency,
        "service_ms": service,
        "send_lag_ms": send_lag,
        "error_samples": stats.samples,
    });
    let mut text = String::new();
    let rate = if args.rate > 0.0 {
        format!("{}/s open-loop", args.rate)
    } else {
        "saturating".to_string()
    };
    text.push_str(&format!(
        "loadgen {} {}{}: {} connections{}, {rate}, {:.1}s\n",
        args.protocol.as_str(),
        args.addr,
        args.path,
        args.connections,
        if args.protocol == Protocol::H2 {
            format!(" x {} streams", args.streams)
        } else {
            String::new()
        },
        seconds,
    ));
    text.push_str(&format!(
        "  requests {requests}: ok {} (allowed {}, denied {}, patched {}), failed {failed}, not reached {unreached}; \
         retried unsent {}, overdue unsent {overdue}, connections opened {}\n",
        stats.ok,
        stats.allowed,
        stats.denied,
        stats.patched,
        stats.retried_unsent,
        stats.connections_opened
    ));
    text.push_str(&format!("  throughput {throughput:.1} ok/s\n"));
    for (name, summary) in [
        ("latency from due time", &latency),
        ("service time from send", &service),
        ("send lag (due to send)", &send_lag),
    ] {
        text.push_str(&format!(
            "  {name} (ms): p50 {} p90 {} p99 {} p99.9 {} max {} mean {}\n",
            summary["p50"],
            summary["p90"],
            summary["p99"],
            summary["p999"],
            summary["max"],
            summary["mean"]
        ));
    }
    for (label, map) in [
        ("failed", &stats.failures),
        ("not reached", &stats.not_reached),
    ] {
        for (reason, count) in map {
            text.push_str(&format!("  {label}: {reason} x{count}\n"));
        }
    }
    for (reason, messages) in &stats.samples {
        for message in messages {
            text.push_str(&format!("  sample {reason}: {message}\n"));
        }
    }
    (text, value)
}

fn main() -> std::process::ExitCode {
    let args = Args::parse();
    if args.connections == 0 || (args.protocol == Protocol::H2 && args.streams == 0) {
        eprintln!("loadgen: --connections and --streams must be at least 1");
        return std::process::ExitCode::from(2);
    }
    if !(args.rate >= 0.0 && args.rate.is_finite()) {
        eprintln!("loadgen: --rate must be a non-negative number");
        return std::process::ExitCode::from(2);
    }
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .expect("tokio runtime");
    match runtime.block_on(run(args)) {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(error) => {
            eprintln!("loadgen: {error}");
            std::process::ExitCode::from(2)
        }
    }
}

async fn run(args: Args) -> Result<(), String> {
    let body = BodyTemplate::load(&args.body)?;
    let connector = tls_connector(&args.ca, args.protocol)?;
    let server_name = ServerName::try_from(args.server_name.clone())
        .map_err(|e| format!("--server-name: {e}"))?;
    let uri: hyper::Uri = match args.protocol {
        Protocol::H1 => args.path.parse(),
        Protocol::H2 => format!("https://{}{}", args.server_name, args.path).parse(),
    }
    .map_err(|e| format!("--path: {e}"))?;
    let uid_prefix = {
        let nanos = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_nanos())
            .unwrap_or_default();
        format!(
            "{:08x}-{:04x}-4{:03x}-8{:03x}",
            std::process::id(),
            (nanos >> 20) as u16,
            (nanos as u16) & 0xfff,
            args.protocol as u16
        )
    };
    let lanes_per_connection = match args.protocol {
        Protocol::H1 => 1,
        Protocol::H2 => args.streams,
    };
    let mut ctx = Context {
        connector,
        server_name,
        body,
        uri,
        uid_prefix,
        uid_counter: AtomicU64::new(0),
        start: Instant::now(),
        args,
    };

    // Connections are opened before the clock starts, so the run measures requests, not handshakes.
    let mut setup = Stats::new();
    let mut slots = Vec::new();
    for _ in 0..ctx.args.connections {
        let conn = match ctx.connect().await {
            Ok(conn) => {
                setup.connections_opened += 1;
                Some(conn)
            }
            Err((reason, message)) => {
                setup.sample(reason, message);
                None
            }
        };
        slots.push(Arc::new(Slot {
            conn: Mutex::new(conn),
        }));
    }
    if setup.connections_opened == 0 {
        let samples: Vec<_> = setup.samples.values().flatten().cloned().collect();
        return Err(format!(
            "cannot connect to {}: {}",
            ctx.args.addr,
            samples.join("; ")
        ));
    }
    let start = Instant::now();
    ctx.start = start;
    let pacer = Arc::new(Pacer::new(
        start,
        ctx.args.duration,
        ctx.args.rate,
        ctx.args.max_requests,
    ));
    let ctx = Arc::new(ctx);

    let mut tasks = tokio::task::JoinSet::new();
    for slot in &slots {
        for _ in 0..lanes_per_connection {
            tasks.spawn(lane(ctx.clone(), pacer.clone(), slot.clone()));
        }
    }
    let mut stats = setup;
    // Lanes stop taking requests at the end of the duration; the last ones finish within the
    // request timeout (plus a reconnect). Anything beyond that is a bug here, so it is cut off.
    let hard_stop = pacer.end() + LATE_CUTOFF + ctx.args.timeout + ctx.args.connect_timeout * 2;
    let mut lost_lanes = 0;
    loop {
        match tokio::time::timeout_at(hard_stop, tasks.join_next()).await {
            Ok(Some(Ok(lane_stats))) => stats.merge(&lane_stats),
            Ok(Some(Err(error))) => {
                eprintln!("loadgen: a lane failed: {error}");
                lost_lanes += 1;
            }
            Ok(None) => break,
            Err(_) => {
                lost_lanes += tasks.len();
                tasks.abort_all();
                break;
            }
        }
    }
    // Until the last lane finished: the duration, or less with --max-requests.
    let elapsed = start.elapsed();
    let issued = stats.ok + stats.failed() + stats.unreached();
    let overdue = pacer.scheduled().saturating_sub(issued);
    let (text, mut value) = report(&ctx.args, &stats, elapsed, overdue);
    value["lost_lanes"] = json!(lost_lanes);
    if ctx.args.json {
        eprint!("{text}");
        println!("{value}");
    } else {
        print!("{text}");
    }
    if lost_lanes > 0 {
        return Err(format!("{lost_lanes} lanes did not finish"));
    }
    Ok(())
}
