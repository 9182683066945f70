//! The load engine of `examples/loadgen.rs` (reviews for the webhook), `examples/pod_load.rs` (pod
//! creations for kube-apiserver) and `tests/soak.rs`: TLS connections like kube-apiserver's or
//! client-go's, one request body per request from a [`Workload`], which also judges each reply.
//!
//! Outcomes fall in three classes:
//!
//! * **ok**: a valid reply (the workload names what it said: `allowed`, `patched`, `created`);
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

mod histogram;
mod pacer;
mod pods;
mod reviews;

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::Duration;

use http_body_util::BodyExt;
use hyper::body::Bytes;
use hyper::header::{HeaderName, HeaderValue};
use rustls::pki_types::ServerName;
use tokio::sync::Mutex;
use tokio::time::Instant;
use tokio_rustls::TlsConnector;

pub use histogram::Histogram;
pub use pods::{PodCreations, pods_target};
pub use reviews::{BodyTemplate, Reviews};

use crate::client::{
    Client, ClientBody, Protocol, error_chain, full, tls_connect_to, try_client_config,
};
use pacer::Pacer;

/// Requests due more than this long before the end of the run are still sent; later ones count as
/// `overdue_unsent`.
pub const LATE_CUTOFF: Duration = Duration::from_secs(1);
/// Up to this many example error messages are kept per reason.
const SAMPLES_PER_REASON: usize = 3;

/// What to send and how to judge the replies.
pub trait Workload: Send + Sync + 'static {
    /// The body of request `n` and the name error samples give it (its uid, say).
    fn body(&self, n: u64) -> (String, Bytes);

    /// Judges the complete reply to request `id`: what a valid one said, or why it is not valid
    /// (a reason and a message).
    fn check(
        &self,
        id: &str,
        reply: &Reply,
    ) -> Result<&'static [&'static str], (&'static str, String)>;
}

/// A complete reply.
pub struct Reply<'a> {
    pub status: u16,
    pub content_type: Option<&'a str>,
    pub body: &'a [u8],
}

/// The failure reason of an unexpected status.
pub fn status_reason(status: u16) -> &'static str {
    match status {
        400 => "status_400",
        403 => "status_403",
        404 => "status_404",
        405 => "status_405",
        408 => "status_408",
        409 => "status_409",
        413 => "status_413",
        422 => "status_422",
        429 => "status_429",
        500 => "status_500",
        502 => "status_502",
        503 => "status_503",
        504 => "status_504",
        _ => "status_other",
    }
}

/// Where to send.
pub struct Target {
    pub addr: SocketAddr,
    /// Verified in the server certificate and sent as SNI.
    pub server_name: String,
    /// Sent as `Host` (HTTP/1.1) or in the `:authority` (HTTP/2).
    pub authority: String,
    pub protocol: Protocol,
    /// From [`tls_connector`], for the same protocol.
    pub connector: TlsConnector,
    /// `/mutate?timeout=5s`, `/api/v1/namespaces/NS/pods` and the like; every request is a POST of
    /// JSON.
    pub path: String,
    /// More headers, e.g. `authorization`.
    pub headers: Vec<(HeaderName, HeaderValue)>,
    /// TCP connect, TLS and HTTP handshake limit.
    pub connect_timeout: Duration,
    /// A request without a complete reply after this long fails as `timeout`.
    pub request_timeout: Duration,
}

/// How much to send.
#[derive(Debug, Clone, Copy)]
pub struct Plan {
    pub connections: usize,
    /// Requests under way at once, spread over the connections: as many as the connections for
    /// HTTP/1.1 (one at a time on each), any number from there for HTTP/2 (concurrent streams).
    pub in_flight: usize,
    /// Requests per second over all connections; 0 sends as fast as the lanes allow.
    pub rate: f64,
    /// No request is due after this long.
    pub duration: Duration,
    /// Stop after this many requests (0: no limit).
    pub max_requests: u64,
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
    /// Valid replies per second.
    pub fn throughput(&self) -> f64 {
        self.stats.ok as f64 / self.elapsed.as_secs_f64().max(1e-9)
    }
}

/// A connector that trusts only the certificates in `ca` and offers exactly `protocol` by ALPN.
pub fn tls_connector(ca: &Path, protocol: Protocol) -> Result<TlsConnector, String> {
    let config = try_client_config(ca, &[protocol.alpn()], None)?;
    Ok(TlsConnector::from(Arc::new(config)))
}

/// A run watched, and ended, from outside while it goes on.
#[derive(Debug, Default)]
pub struct Progress {
    ok: AtomicU64,
    not_ok: AtomicU64,
    stopped: AtomicBool,
}

impl Progress {
    /// Valid replies so far.
    pub fn ok(&self) -> u64 {
        self.ok.load(Ordering::Relaxed)
    }

    /// Requests so far that failed or did not reach the server.
    pub fn not_ok(&self) -> u64 {
        self.not_ok.load(Ordering::Relaxed)
    }

    /// No request starts after this; the run ends once those under way are done.
    pub fn stop(&self) {
        self.stopped.store(true, Ordering::Relaxed);
    }

    fn stopped(&self) -> bool {
        self.stopped.load(Ordering::Relaxed)
    }
}

/// Opens the connections (before the clock starts, so the run measures requests, not handshakes),
/// then sends as `plan` says. `Err` when the plan is impossible or no connection could be opened.
pub async fn run(
    target: Target,
    plan: Plan,
    workload: Arc<dyn Workload>,
) -> Result<Report, String> {
    run_with(target, plan, workload, Arc::default()).await
}

/// [`run`], counting in `progress` as it goes, until the plan's end or [`Progress::stop`].
pub async fn run_with(
    target: Target,
    plan: Plan,
    workload: Arc<dyn Workload>,
    progress: Arc<Progress>,
) -> Result<Report, String> {
    let lanes_fit = match target.protocol {
        Protocol::Http1 => plan.in_flight == plan.connections,
        Protocol::Http2 => plan.in_flight >= plan.connections,
    };
    if plan.connections == 0 || !lanes_fit {
        return Err(format!(
            "{} requests in flight cannot be spread over {} {} connections",
            plan.in_flight,
            plan.connections,
            target.protocol.as_str()
        ));
    }
    let uri: hyper::Uri = match target.protocol {
        Protocol::Http1 => target.path.parse(),
        Protocol::Http2 => format!("https://{}{}", target.authority, target.path).parse(),
    }
    .map_err(|e| format!("path {:?}: {e}", target.path))?;
    let server_name = ServerName::try_from(target.server_name.clone())
        .map_err(|e| format!("server name {:?}: {e}", target.server_name))?;
    let mut ctx = Context {
        target,
        workload,
        progress,
        server_name,
        uri,
        requests: AtomicU64::new(0),
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
    let mut tasks = tokio::task::JoinSet::new();
    for lane in 0..plan.in_flight {
        let slot = slots[lane % slots.len()].clone();
        tasks.spawn(lane_loop(ctx.clone(), pacer.clone(), slot));
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

/// A duration as the load tools take it: a number of seconds, or a number with a unit (`500ms`,
/// `20s`, `10m`, `1h`).
pub fn parse_duration(text: &str) -> Result<Duration, String> {
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

#[derive(Clone)]
pub struct Stats {
    pub ok: u64,
    /// What the valid replies said, by the workload's names (`allowed`, `patched`, `created`).
    pub outcomes: BTreeMap<&'static str, u64>,
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

impl Default for Stats {
    fn default() -> Self {
        Self::new()
    }
}

impl Stats {
    pub fn new() -> Self {
        Self {
            ok: 0,
            outcomes: BTreeMap::new(),
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

    /// How many valid replies said `outcome`.
    pub fn outcome(&self, outcome: &str) -> u64 {
        self.outcomes.get(outcome).copied().unwrap_or(0)
    }

    pub fn failed(&self) -> u64 {
        self.failures.values().sum()
    }

    pub fn unreached(&self) -> u64 {
        self.not_reached.values().sum()
    }

    fn sample(&mut self, reason: &str, message: String) {
        let list = self.samples.entry(reason.to_string()).or_default();
        if list.len() < SAMPLES_PER_REASON {
            list.push(message);
        }
    }

    fn merge(&mut self, other: &Stats) {
        self.ok += other.ok;
        for (k, v) in &other.outcomes {
            *self.outcomes.entry(k).or_default() += v;
        }
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

struct Context {
    target: Target,
    workload: Arc<dyn Workload>,
    progress: Arc<Progress>,
    server_name: ServerName<'static>,
    uri: hyper::Uri,
    /// Requests numbered so far.
    requests: AtomicU64,
    /// When the clock started, for the timestamps of error samples.
    start: Instant,
}

/// Why a request did not produce a reply.
enum SendError {
    /// The server never saw it: it can be retried on another connection.
    Unsent(String),
    /// It was written and no complete reply came back.
    Failed(&'static str, String),
}

impl Context {
    /// An error sample: when (seconds since the start), which request, what.
    fn stamp(&self, id: &str, message: &str) -> String {
        let t = self.start.elapsed().as_secs_f64();
        format!("t+{t:.3}s {id}: {message}")
    }

    /// TCP, TLS and the HTTP handshake. The error is a not-reached reason and a message.
    async fn connect(&self) -> Result<Client, (&'static str, String)> {
        let target = &self.target;
        let tls = tls_connect_to(
            target.addr,
            self.server_name.clone(),
            &target.connector,
            target.connect_timeout,
        )
        .await?;
        let client = Client::over(tls)
            .await
            .map_err(|e| ("http_handshake", error_chain(&e)))?;
        if target.protocol == Protocol::Http2 && client.another_stream().is_none() {
            return Err(("http_handshake", "the server did not choose h2".to_owned()));
        }
        Ok(client)
    }

    fn request(&self, body: Bytes) -> hyper::Request<ClientBody> {
        let mut builder = hyper::Request::builder()
            .method("POST")
            .uri(self.uri.clone())
            .header("content-type", "application/json")
            .header("accept", "application/json");
        if self.target.protocol == Protocol::Http1 {
            builder = builder.header("host", self.target.authority.as_str());
        }
        for (name, value) in &self.target.headers {
            builder = builder.header(name, value);
        }
        builder.body(full(body)).expect("valid request")
    }

    /// Sends one request on `conn` and reads the whole reply: status, content type, body.
    async fn send(
        &self,
        conn: &mut Client,
        request: hyper::Request<ClientBody>,
    ) -> Result<(u16, Option<String>, Bytes), SendError> {
        let response = match conn.try_send(request).await {
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
}

/// A connection shared by the lanes assigned to it: HTTP/1.1 lends it to its single lane, HTTP/2
/// gives every lane a stream of it.
struct Slot {
    conn: Mutex<Option<Client>>,
}

impl Slot {
    async fn acquire(
        &self,
        ctx: &Context,
        stats: &mut Stats,
    ) -> Result<Client, (&'static str, String)> {
        let mut guard = self.conn.lock().await;
        if let Some(mut conn) = guard.take().filter(|conn| !conn.is_closed()) {
            if let Some(stream) = conn.another_stream() {
                *guard = Some(conn);
                return Ok(stream);
            }
            if conn.ready().await.is_ok() {
                return Ok(conn);
            }
        }
        let conn = ctx.connect().await?;
        stats.connections_opened += 1;
        if let Some(stream) = conn.another_stream() {
            *guard = Some(conn);
            return Ok(stream);
        }
        Ok(conn)
    }

    /// Gives an HTTP/1.1 connection back after a complete reply.
    fn release(&self, conn: Client) {
        if conn.another_stream().is_none()
            && let Ok(mut guard) = self.conn.try_lock()
        {
            *guard = Some(conn);
        }
    }

    async fn invalidate(&self) {
        *self.conn.lock().await = None;
    }
}

/// One request, end to end, recorded in `stats`.
async fn one_request(ctx: &Context, slot: &Slot, due: Instant, stats: &mut Stats) {
    let n = ctx.requests.fetch_add(1, Ordering::Relaxed);
    let (id, body) = ctx.workload.body(n);
    let limit = ctx.target.request_timeout;
    for attempt in 0..2 {
        let mut conn = match slot.acquire(ctx, stats).await {
            Ok(conn) => conn,
            Err((reason, message)) => {
                *stats.not_reached.entry(reason.into()).or_default() += 1;
                ctx.progress.not_ok.fetch_add(1, Ordering::Relaxed);
                stats.sample(reason, ctx.stamp(&id, &message));
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
                stats.sample("retried_unsent", ctx.stamp(&id, &message));
                slot.invalidate().await;
                if attempt == 0 {
                    continue;
                }
                *stats.not_reached.entry("unsent_twice".into()).or_default() += 1;
                ctx.progress.not_ok.fetch_add(1, Ordering::Relaxed);
                return;
            }
            Ok(Err(SendError::Failed(reason, message))) => Some((reason, message)),
            Ok(Ok((status, content_type, reply))) => {
                slot.release(conn);
                let reply = Reply {
                    status,
                    content_type: content_type.as_deref(),
                    body: &reply,
                };
                match ctx.workload.check(&id, &reply) {
                    Ok(said) => {
                        stats.ok += 1;
                        ctx.progress.ok.fetch_add(1, Ordering::Relaxed);
                        for outcome in said {
                            *stats.outcomes.entry(outcome).or_default() += 1;
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
            ctx.progress.not_ok.fetch_add(1, Ordering::Relaxed);
            stats.sample(reason, ctx.stamp(&id, &message));
        }
        return;
    }
}

async fn lane_loop(ctx: Arc<Context>, pacer: Arc<Pacer>, slot: Arc<Slot>) -> Stats {
    let mut stats = Stats::new();
    while !ctx.progress.stopped()
        && let Some(due) = pacer.take().await
    {
        one_request(&ctx, &slot, due, &mut stats).await;
    }
    stats
}
