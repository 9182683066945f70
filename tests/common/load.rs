//! The load engine of `examples/loadgen.rs` and `tests/soak.rs`: TLS connections like
//! kube-apiserver's, fresh uids, apiserver-style reply checks, open-loop pacing. Each includes this
//! file as its own module (`#[path]`), so the two cannot drift apart.
//!
//! Every reply is checked the way the apiserver checks it (status 200, JSON `AdmissionReview`,
//! `response.uid` echoed, `allowed` a boolean, `patchType` and `patch` consistent, the patch base64
//! JSON). Outcomes fall in three classes:
//!
//! * **ok**: a valid reply;
//! * **failed** (by reason): the request was written to a connection and no valid reply came back
//!   (wrong status, invalid reply, timeout, connection closed or reset before the reply);
//! * **not reached** (by reason): the request never got to the server: the TCP connect or the TLS
//!   handshake failed. A request that the client knows was not written (hyper hands it back), or that
//!   HTTP/2 GOAWAY says was not processed, is retried once on a fresh connection, as Go's transport
//!   does; those retries are counted.
//!
//! With a rate the load is open-loop: request `i` is due at `start + i/rate`, and its latency is
//! measured from that due time, not from when a connection became free, so a slow server cannot
//! hide its stalls by slowing the client down (coordinated omission). Requests still queued more
//! than [`LATE_CUTOFF`] after the run ended, because every connection was busy, are reported as
//! `overdue_unsent`. Rate 0 saturates: each lane sends its next request as soon as its reply is in.
//!
//! Latencies go into an HdrHistogram (3 significant digits: under 0.1 % error); percentiles report
//! the upper edge of their bucket, capped by the exact maximum, and the mean and maximum are exact.
// Each includer uses its own part of this file.
#![allow(dead_code)]

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use base64::Engine as _;
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

/// Requests due more than this long before the end of the run are still sent; later ones count as
/// `overdue_unsent`.
pub const LATE_CUTOFF: Duration = Duration::from_secs(1);
/// Up to this many example error messages are kept per reason.
const SAMPLES_PER_REASON: usize = 3;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Protocol {
    /// HTTP/1.1 keep-alive, one request at a time per connection.
    H1,
    /// HTTP/2, several streams per connection.
    H2,
}

impl Protocol {
    pub fn as_str(self) -> &'static str {
        match self {
            Protocol::H1 => "h1",
            Protocol::H2 => "h2",
        }
    }

    fn alpn(self) -> &'static [u8] {
        match self {
            Protocol::H1 => b"http/1.1",
            Protocol::H2 => b"h2",
        }
    }
}

/// Where and what to send.
pub struct Target {
    pub addr: SocketAddr,
    /// Verified in the server certificate, sent as SNI and Host.
    pub server_name: String,
    pub protocol: Protocol,
    /// From [`tls_connector`], for the same protocol.
    pub connector: TlsConnector,
    /// `/mutate?timeout=5s` and the like.
    pub path: String,
    pub body: Arc<BodyTemplate>,
    /// TCP connect + TLS + HTTP handshake limit.
    pub connect_timeout: Duration,
    /// A request without a complete reply after this long fails as `timeout`.
    pub request_timeout: Duration,
}

/// How much to send.
#[derive(Debug, Clone, Copy)]
pub struct Plan {
    pub connections: usize,
    /// Concurrent streams per HTTP/2 connection (HTTP/1.1 always has one).
    pub streams: usize,
    /// Requests per second over all connections; 0 sends as fast as the connections allow.
    pub rate: f64,
    pub duration: Duration,
    /// Stop after this many requests (0: no limit).
    pub max_requests: u64,
    /// Part of every uid, so that concurrent runs never send the same one.
    pub run_id: u16,
}

/// What one run did.
pub struct Report {
    pub stats: Stats,
    /// Until the last lane finished: the duration, or less with `max_requests`.
    pub elapsed: Duration,
    /// Requests that came due but were never sent because every connection stayed busy.
    pub overdue_unsent: u64,
    /// Lanes that panicked or did not finish in time (a bug here, not in the server).
    pub lost_lanes: usize,
}

impl Report {
    pub fn throughput(&self) -> f64 {
        self.stats.ok as f64 / self.elapsed.as_secs_f64().max(1e-9)
    }
}

/// Opens the connections (before the clock starts, so the run measures requests, not handshakes),
/// then sends as `plan` says. `Err` only when no connection could be opened at all.
pub async fn run(target: Target, plan: Plan) -> Result<Report, String> {
    let uri: hyper::Uri = match target.protocol {
        Protocol::H1 => target.path.parse(),
        Protocol::H2 => format!("https://{}{}", target.server_name, target.path).parse(),
    }
    .map_err(|e| format!("path {:?}: {e}", target.path))?;
    let server_name = ServerName::try_from(target.server_name.clone())
        .map_err(|e| format!("server name {:?}: {e}", target.server_name))?;
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_nanos())
        .unwrap_or_default();
    let uid_prefix = format!(
        "{:08x}-{:04x}-4{:03x}-8{:03x}",
        std::process::id(),
        (nanos >> 20) as u16,
        (nanos as u16) & 0xfff,
        plan.run_id & 0xfff
    );
    let mut ctx = Context {
        target,
        server_name,
        uri,
        uid_prefix,
        uid_counter: AtomicU64::new(0),
        start: Instant::now(),
    };
    let mut setup = Stats::new();
    let mut slots = Vec::new();
    for _ in 0..plan.connections {
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
        let addr = ctx.target.addr;
        return Err(format!("cannot connect to {addr}: {}", samples.join("; ")));
    }
    let start = Instant::now();
    ctx.start = start;
    let pacer = Arc::new(Pacer::new(start, plan));
    let ctx = Arc::new(ctx);
    let lanes_per_connection = match ctx.target.protocol {
        Protocol::H1 => 1,
        Protocol::H2 => plan.streams,
    };
    let mut tasks = tokio::task::JoinSet::new();
    for slot in &slots {
        for _ in 0..lanes_per_connection {
            tasks.spawn(lane(ctx.clone(), pacer.clone(), slot.clone()));
        }
    }
    let mut stats = setup;
    // Lanes stop taking requests at the end of the duration; the last ones finish within the
    // request timeout (plus a reconnect). Anything beyond that is a bug here, so it is cut off.
    let hard_stop =
        pacer.end() + LATE_CUTOFF + ctx.target.request_timeout + ctx.target.connect_timeout * 2;
    let mut lost_lanes = 0;
    loop {
        match tokio::time::timeout_at(hard_stop, tasks.join_next()).await {
            Ok(Some(Ok(lane_stats))) => stats.merge(&lane_stats),
            Ok(Some(Err(_))) => lost_lanes += 1,
            Ok(None) => break,
            Err(_) => {
                lost_lanes += tasks.len();
                tasks.abort_all();
                break;
            }
        }
    }
    let elapsed = start.elapsed();
    let issued = stats.ok + stats.failed() + stats.unreached();
    let overdue_unsent = pacer.scheduled().saturating_sub(issued);
    Ok(Report {
        stats,
        elapsed,
        overdue_unsent,
        lost_lanes,
    })
}

/// A connector that trusts only the certificates in `ca` and offers exactly `protocol` by ALPN.
pub fn tls_connector(ca: &Path, protocol: Protocol) -> Result<TlsConnector, String> {
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
    config.alpn_protocols = vec![protocol.alpn().to_vec()];
    Ok(TlsConnector::from(Arc::new(config)))
}

// ---------------------------------------------------------------------------------------------
// Histogram

/// Nanosecond values in an HdrHistogram (3 significant digits: under 0.1 % error, resized as
/// needed), with the exact sum and maximum beside it for the mean and the max.
#[derive(Clone)]
pub struct Histogram {
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
    pub fn quantile(&self, q: f64) -> u64 {
        if self.hdr.is_empty() {
            return 0;
        }
        self.hdr.value_at_quantile(q).min(self.max)
    }

    /// [`Self::quantile`] in milliseconds, rounded to microseconds.
    pub fn ms(&self, q: f64) -> f64 {
        round_ms(self.quantile(q) as f64)
    }

    pub fn summary_ms(&self) -> Value {
        let total = self.hdr.len();
        let mean = if total == 0 {
            0.0
        } else {
            self.sum as f64 / total as f64
        };
        json!({
            "count": total,
            "mean": round_ms(mean),
            "p50": self.ms(0.50),
            "p90": self.ms(0.90),
            "p99": self.ms(0.99),
            "p999": self.ms(0.999),
            "max": round_ms(self.max as f64),
        })
    }
}

fn round_ms(nanos: f64) -> f64 {
    (nanos / 1e6 * 1000.0).round() / 1000.0
}

// ---------------------------------------------------------------------------------------------
// Statistics

#[derive(Clone)]
pub struct Stats {
    pub ok: u64,
    pub allowed: u64,
    pub denied: u64,
    pub patched: u64,
    pub failures: BTreeMap<String, u64>,
    pub not_reached: BTreeMap<String, u64>,
    pub samples: BTreeMap<String, Vec<String>>,
    pub retried_unsent: u64,
    pub connections_opened: u64,
    /// From each request's due time to its reply.
    pub latency: Histogram,
    /// From each request's send to its reply.
    pub service: Histogram,
    /// From due time to send: the client's own delay, from waking a lane or waiting for a free
    /// connection.
    pub send_lag: Histogram,
}

impl Stats {
    pub fn new() -> Self {
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

    pub fn failed(&self) -> u64 {
        self.failures.values().sum()
    }

    pub fn unreached(&self) -> u64 {
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
pub struct BodyTemplate {
    prefix: Vec<u8>,
    suffix: Vec<u8>,
    api_version: String,
}

impl BodyTemplate {
    /// Splits the file's text itself around `request.uid`, so every other byte (in particular the
    /// apiserver's key order, which the server's one-pass decoding relies on) is sent as written.
    pub fn load(path: &Path) -> Result<Self, String> {
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
    fn new(start: Instant, plan: Plan) -> Self {
        let Plan {
            rate,
            max_requests,
            duration,
            ..
        } = plan;
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
    target: Target,
    server_name: ServerName<'static>,
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
        let limit = self.target.connect_timeout;
        let tcp = match tokio::time::timeout(limit, TcpStream::connect(self.target.addr)).await {
            Err(_) => return Err(("connect_timeout", "TCP connect timed out".into())),
            Ok(Err(e)) => return Err((connect_reason(&e), e.to_string())),
            Ok(Ok(tcp)) => tcp,
        };
        let _ = tcp.set_nodelay(true);
        let handshake = self.target.connector.connect(self.server_name.clone(), tcp);
        let tls = match tokio::time::timeout(limit, handshake).await {
            Err(_) => return Err(("tls_timeout", "TLS handshake timed out".into())),
            Ok(Err(e)) => return Err(("tls_handshake", error_chain(&e))),
            Ok(Ok(tls)) => tls,
        };
        let io = TokioIo::new(tls);
        match self.target.protocol {
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
        if self.target.protocol == Protocol::H1 {
            builder = builder.header("host", self.target.server_name.as_str());
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
        if reply["apiVersion"] != self.target.body.api_version.as_str() {
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
        match (response.get("patch"), response.get("patchType")) {
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
    let body = ctx.target.body.render(&uid);
    let limit = ctx.target.request_timeout;
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
        let outcome =
            tokio::time::timeout(limit, ctx.send(&mut conn, ctx.request(body.clone()))).await;
        let done = Instant::now();
        let reason_message = match outcome {
            Err(_elapsed) => Some(("timeout", format!("no reply within {limit:?}"))),
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
