//! Soak and fault test of `mesh-admission serve` (DESIGN.md section 3), on 127.0.0.1 only.
//!
//! ```text
//! cargo test --release --test soak -- --ignored --nocapture     (or hack/soak.sh)
//! SOAK_SECONDS=45 SOAK_ROTATE_SECONDS=15 SOAK_WARMUP_SECONDS=15 hack/soak.sh   # a short run
//! ```
//!
//! 1. Generates certificates in a work directory and starts the release binary (the harness's
//!    `Server`; certificate reload interval 1 s, shutdown grace 2 s).
//! 2. Sustained good load for SOAK_SECONDS: HTTP/1.1 keep-alive (25 connections, open-loop
//!    SOAK_H1_RATE req/s) and HTTP/2 (SOAK_H2_CONNECTIONS x 8 streams, SOAK_H2_RATE req/s) in
//!    parallel, every reply checked as the apiserver would. Pass: zero failed good requests.
//! 3. Every SOAK_ROTATE_SECONDS the certificate is re-issued (`certs` into the same directory):
//!    mesh_admission_tls_reloads_total must grow by one per rotation and a new TLS handshake must
//!    present the new leaf.
//! 4. In parallel, a bounded bad-request mix over TLS: malformed JSON, JSON that is not an
//!    AdmissionReview, an undecodable object, GET /mutate, 9 MiB bodies (with Content-Length and
//!    chunked), stalled bodies, stalled and trickled headers. Each outcome must be the contract's.
//! 5. Server RSS and open FDs sampled every 10 s. After the warm-up, the median RSS of the last
//!    minute must be within +-SOAK_RSS_PCT % of the median of the first minute (single samples spike
//!    by up to 8 MiB while a 9 MiB bad request is buffered; every minute's median is printed, and a
//!    minute beyond the bound is a WARN), and the median FD count of the last minute within
//!    SOAK_FD_TOLERANCE of the first.
//! 6. SIGTERM under load: /readyz turns 503, connections are still accepted during the grace period,
//!    every request that reached the server gets a valid reply (connect failures after the listener
//!    closed are fine), and the process exits 0 within grace + 20 s drain.
//! 7. Prints a summary table; fails if any criterion failed (including ERROR lines in the server's
//!    log, or a drain report of the TLS listener without `drained: true` and `panicked: 0`).
//!
//! Environment: SOAK_SECONDS (600, at least 30), SOAK_H1_RATE (1500), SOAK_H2_RATE (500),
//! SOAK_H2_CONNECTIONS (2), SOAK_ROTATE_SECONDS (60), SOAK_WARMUP_SECONDS (60, at most a third of
//! SOAK_SECONDS), SOAK_RSS_PCT (10), SOAK_FD_TOLERANCE (10), SOAK_KEEP=1 keeps the work directory
//! (it is always kept when the soak fails): server.log, samples.tsv, rotations.tsv, summary.txt.
//!
//! Every loop here is bounded in count and time; the server is killed by its `Drop` (the harness's
//! `Server`), and so is a `certs` run that does not finish.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex as StdMutex};
use std::time::Duration;

use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, ServerName};
use serde_json::{Value, json};
use testkit::bench::median;
use testkit::client::tls_connect_to;
use testkit::load::{BodyTemplate, Plan, Reviews, Stats, Target, tls_connector};
use testkit::procfs::{open_fds, status_kib, try_cpu_time};
use testkit::{Client, Protocol, SERVICE_NAME, Server, admin_get, certs, metrics, temp_dir};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::time::Instant;
use tokio_rustls::TlsConnector;
use tokio_rustls::client::TlsStream;

const SHUTDOWN_GRACE: u64 = 2;
const DRAIN_LIMIT: u64 = 20;
const SAMPLE_EVERY: u64 = 10;
const SHUTDOWN_LOAD_SECONDS: u64 = 20;
const H1_CONNECTIONS: usize = 25;
const H2_STREAMS: usize = 8;
const BODY: &str = "hack/samples/pod.json";
const PATH: &str = "/mutate?timeout=5s";
const REQUEST_TIMEOUT: Duration = Duration::from_secs(10);
const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);

// ---------------------------------------------------------------------------------------------
// Configuration

struct Config {
    soak_seconds: u64,
    h1_rate: f64,
    h2_rate: f64,
    h2_connections: usize,
    rotate_seconds: u64,
    warmup: u64,
    rss_pct: u64,
    fd_tolerance: u64,
    keep: bool,
}

fn env_whole(name: &str, default: u64) -> u64 {
    match std::env::var(name) {
        Err(_) => default,
        Ok(text) => text
            .parse()
            .unwrap_or_else(|_| panic!("soak: {name} is not a whole number: {text:?}")),
    }
}

fn env_rate(name: &str, default: f64) -> f64 {
    match std::env::var(name) {
        Err(_) => default,
        Ok(text) => text
            .parse::<f64>()
            .ok()
            .filter(|rate| rate.is_finite() && *rate > 0.0)
            .unwrap_or_else(|| panic!("soak: {name} is not a positive rate: {text:?}")),
    }
}

impl Config {
    fn from_env() -> Config {
        let soak_seconds = env_whole("SOAK_SECONDS", 600);
        assert!(soak_seconds >= 30, "soak: SOAK_SECONDS must be at least 30");
        let rotate_seconds = env_whole("SOAK_ROTATE_SECONDS", 60);
        assert!(
            rotate_seconds >= 1,
            "soak: SOAK_ROTATE_SECONDS must be at least 1"
        );
        let h2_connections = env_whole("SOAK_H2_CONNECTIONS", 2) as usize;
        assert!(
            h2_connections >= 1,
            "soak: SOAK_H2_CONNECTIONS must be at least 1"
        );
        Config {
            soak_seconds,
            h1_rate: env_rate("SOAK_H1_RATE", 1500.0),
            h2_rate: env_rate("SOAK_H2_RATE", 500.0),
            h2_connections,
            rotate_seconds,
            warmup: env_whole("SOAK_WARMUP_SECONDS", 60).min(soak_seconds / 3),
            rss_pct: env_whole("SOAK_RSS_PCT", 10),
            fd_tolerance: env_whole("SOAK_FD_TOLERANCE", 10),
            keep: std::env::var_os("SOAK_KEEP").is_some_and(|v| !v.is_empty()),
        }
    }
}

// ---------------------------------------------------------------------------------------------
// Guards and small helpers

/// The work directory: removed when the soak passed (unless SOAK_KEEP), kept otherwise. Declared
/// before the server, so the server is killed first.
struct WorkDir {
    path: PathBuf,
    keep: bool,
    passed: bool,
}

impl Drop for WorkDir {
    fn drop(&mut self) {
        if self.passed && !self.keep {
            let _ = std::fs::remove_dir_all(&self.path);
        } else {
            eprintln!("soak: logs and results kept in {}", self.path.display());
        }
    }
}

/// The first certificate of a PEM file (the leaf of tls.crt), DER-encoded.
fn leaf_of(path: &Path) -> Option<Vec<u8>> {
    CertificateDer::pem_file_iter(path)
        .ok()?
        .next()?
        .ok()
        .map(|c| c.to_vec())
}

/// A short fingerprint for logs: the first bytes of the certificate's signature (its DER tail).
fn short_id(der: &[u8]) -> String {
    let tail = &der[der.len().saturating_sub(6)..];
    tail.iter().map(|b| format!("{b:02x}")).collect()
}

/// The value of a counter on /metrics, 0 when it cannot be read (which fails the checks using it).
fn metric(admin: SocketAddr, name: &str) -> u64 {
    admin_get(admin, "/metrics")
        .ok()
        .filter(|reply| testkit::http::status(reply) == 200)
        .map_or(0, |reply| metrics::value(&reply, name) as u64)
}

/// The status `/readyz` answers, "000" when it does not answer.
fn readyz(admin: SocketAddr) -> String {
    admin_get(admin, "/readyz").map_or_else(
        |_| "000".to_string(),
        |r| testkit::http::status(&r).to_string(),
    )
}

/// Resident set size in KiB and open file descriptors of `pid`.
fn rss_and_fds(pid: u32) -> Option<(u64, u64)> {
    Some((status_kib(pid, "VmRSS")?, open_fds(pid)?))
}

/// A number as Python's `:g` prints small values: no trailing `.0`.
fn g(value: f64) -> String {
    if value.fract() == 0.0 {
        format!("{value:.0}")
    } else {
        format!("{value}")
    }
}

fn truncate(text: &str, max: usize) -> String {
    text.chars().take(max).collect()
}

fn log(start: std::time::Instant, message: &str) {
    eprintln!("[soak {:4}s] {message}", start.elapsed().as_secs());
}

// ---------------------------------------------------------------------------------------------
// Good load: open-loop, every reply checked the way the apiserver checks it (`testkit::load`,
// the engine of examples/loadgen.rs)

/// What a load run reports; `status` is `Err` when it could not run properly (no connection at all,
/// lanes that did not finish), as loadgen's exit status.
struct LoadReport {
    stats: Stats,
    elapsed: Duration,
    overdue_unsent: u64,
    status: Result<(), String>,
}

impl LoadReport {
    fn throughput(&self) -> f64 {
        self.stats.ok as f64 / self.elapsed.as_secs_f64().max(1e-9)
    }

    fn text(&self, name: &str) -> String {
        let s = &self.stats;
        format!(
            "{name}: ok {} failed {} {:?} not reached {} {:?} retried unsent {} overdue unsent {} in {:.1} s \
             ({:.1}/s); latency ms p50 {} p99 {} p99.9 {} max {}; status {:?}",
            s.ok,
            s.failed(),
            s.failures,
            s.unreached(),
            s.not_reached,
            s.retried_unsent,
            self.overdue_unsent,
            self.elapsed.as_secs_f64(),
            self.throughput(),
            s.latency.ms(0.5),
            s.latency.ms(0.99),
            s.latency.ms(0.999),
            s.latency.ms(1.0),
            self.status
        )
    }
}

struct LoadSpec {
    /// Distinguishes the uids of the four load runs.
    id: u16,
    protocol: Protocol,
    connections: usize,
    rate: f64,
    duration: Duration,
}

/// Opens the connections (before the clock starts), then sends for `spec.duration`.
async fn run_load(spec: LoadSpec, addr: SocketAddr, ca: PathBuf, body: BodyTemplate) -> LoadReport {
    let target = Target {
        addr,
        server_name: SERVICE_NAME.to_string(),
        authority: SERVICE_NAME.to_string(),
        protocol: spec.protocol,
        connector: tls_connector(&ca, spec.protocol).expect("the soak's own CA"),
        path: PATH.to_string(),
        headers: Vec::new(),
        connect_timeout: CONNECT_TIMEOUT,
        request_timeout: REQUEST_TIMEOUT,
    };
    let streams = match spec.protocol {
        Protocol::Http1 => 1,
        Protocol::Http2 => H2_STREAMS,
    };
    let plan = Plan {
        connections: spec.connections,
        in_flight: spec.connections * streams,
        rate: spec.rate,
        duration: spec.duration,
        max_requests: 0,
    };
    let reviews = Arc::new(Reviews::new(body, spec.id));
    match testkit::load::run(target, plan, reviews).await {
        Ok(report) => LoadReport {
            status: match report.lost_lanes {
                0 => Ok(()),
                lost => Err(format!("{lost} lanes did not finish")),
            },
            stats: report.stats,
            elapsed: report.elapsed,
            overdue_unsent: report.overdue_unsent,
        },
        Err(message) => LoadReport {
            stats: Stats::new(),
            elapsed: Duration::ZERO,
            overdue_unsent: 0,
            status: Err(message),
        },
    }
}

// ---------------------------------------------------------------------------------------------
// The bad-request mix

#[derive(Default)]
struct BadEntry {
    expected: u64,
    unexpected: u64,
    outcomes: BTreeMap<String, u64>,
    samples: Vec<String>,
    close_seconds: Vec<f64>,
}

type BadResults = Arc<StdMutex<BTreeMap<&'static str, BadEntry>>>;

fn note(results: &BadResults, kind: &'static str, outcome: &str, expected: bool, detail: &str) {
    let mut map = results.lock().unwrap();
    let entry = map.entry(kind).or_default();
    if expected {
        entry.expected += 1;
    } else {
        entry.unexpected += 1;
    }
    *entry.outcomes.entry(outcome.to_string()).or_default() += 1;
    if !expected && entry.samples.len() < 5 {
        entry
            .samples
            .push(truncate(&format!("{outcome}: {detail}"), 300));
    }
}

#[derive(Clone)]
struct BadClient {
    addr: SocketAddr,
    connector: TlsConnector,
    results: BadResults,
    deadline: Instant,
}

fn lossy(bytes: &[u8], max: usize) -> String {
    format!(
        "{:?}",
        String::from_utf8_lossy(&bytes[..bytes.len().min(max)])
    )
}

fn status_of(got: &[u8]) -> Option<u16> {
    if got.starts_with(b"HTTP/1.1 ") && got.len() >= 12 {
        std::str::from_utf8(&got[9..12]).ok()?.parse().ok()
    } else {
        None
    }
}

fn head_end(data: &[u8]) -> Option<usize> {
    data.windows(4).position(|w| w == b"\r\n\r\n")
}

fn content_length(head: &[u8]) -> Result<usize, String> {
    let head = String::from_utf8_lossy(head);
    for line in head.split("\r\n").skip(1) {
        let (name, value) = line.split_once(':').unwrap_or((line, ""));
        if name.trim().eq_ignore_ascii_case("content-length") {
            return value
                .trim()
                .parse()
                .map_err(|e| format!("bad content-length {value:?}: {e}"));
        }
    }
    Ok(0)
}

struct Response {
    status: u16,
    headers: BTreeMap<String, String>,
    body: Vec<u8>,
}

impl BadClient {
    async fn connect(&self, limit: Duration) -> Result<TlsStream<TcpStream>, String> {
        let name = ServerName::try_from(SERVICE_NAME).unwrap();
        tls_connect_to(self.addr, name, &self.connector, limit)
            .await
            .map_err(|(_, message)| message)
    }

    fn note(&self, kind: &'static str, outcome: &str, expected: bool, detail: &str) {
        note(&self.results, kind, outcome, expected, detail);
    }

    /// Reads one response; `None` on a clean EOF before any byte.
    async fn read_response(sock: &mut TlsStream<TcpStream>) -> Result<Option<Response>, String> {
        let mut data = Vec::new();
        let mut buf = vec![0u8; 65536];
        let end = loop {
            if let Some(end) = head_end(&data) {
                break end;
            }
            let n = sock.read(&mut buf).await.map_err(|e| e.to_string())?;
            if n == 0 {
                if data.is_empty() {
                    return Ok(None);
                }
                return Err(format!(
                    "EOF inside the response head: {}",
                    lossy(&data, 100)
                ));
            }
            data.extend_from_slice(&buf[..n]);
        };
        let head = String::from_utf8_lossy(&data[..end]).into_owned();
        let mut lines = head.split("\r\n");
        let status = lines
            .next()
            .and_then(|l| l.split(' ').nth(1))
            .and_then(|s| s.parse().ok())
            .ok_or_else(|| format!("bad status line in {head:?}"))?;
        let mut headers = BTreeMap::new();
        for line in lines {
            let (name, value) = line.split_once(':').unwrap_or((line, ""));
            headers.insert(name.trim().to_lowercase(), value.trim().to_string());
        }
        let length = content_length(&data[..end])?;
        let mut body = data[end + 4..].to_vec();
        while body.len() < length {
            let n = sock.read(&mut buf).await.map_err(|e| e.to_string())?;
            if n == 0 {
                break;
            }
            body.extend_from_slice(&buf[..n]);
        }
        Ok(Some(Response {
            status,
            headers,
            body,
        }))
    }

    /// Small bad requests on one keep-alive connection (reconnecting when it closes), every 0.25 s.
    async fn quick_loop(self) {
        let undecodable = json!({
            "apiVersion": "admission.k8s.io/v1", "kind": "AdmissionReview",
            "request": {
                "uid": "bad-object-0001", "kind": {"group": "", "version": "v1", "kind": "Pod"},
                "resource": {"group": "", "version": "v1", "resource": "pods"},
                "namespace": "payments", "operation": "CREATE", "userInfo": {"username": "soak"},
                "object": {"apiVersion": "v1", "kind": "Pod",
                           "metadata": {"name": "x", "namespace": "payments", "labels": ["not", "a", "map"]},
                           "spec": {"containers": []}},
            },
        })
        .to_string()
        .into_bytes();
        let cases: [(&'static str, &str, Vec<u8>, u16); 4] = [
            (
                "malformed_json",
                "POST",
                br#"{"apiVersion": "admission.k8s.io/v1", "kind": "#.to_vec(),
                400,
            ),
            (
                "not_admission_review",
                "POST",
                br#"{"apiVersion": "v1", "kind": "ConfigMap", "data": {}}"#.to_vec(),
                400,
            ),
            ("get_mutate", "GET", Vec::new(), 405),
            ("undecodable_object", "POST", undecodable, 200),
        ];
        let mut sock: Option<TlsStream<TcpStream>> = None;
        while Instant::now() < self.deadline {
            for (kind, method, body, want) in &cases {
                let (kind, want) = (*kind, *want);
                let exchange = async {
                    if sock.is_none() {
                        sock = Some(self.connect(Duration::from_secs(30)).await?);
                    }
                    let s = sock.as_mut().unwrap();
                    let mut request = format!(
                        "{method} /mutate?timeout=5s HTTP/1.1\r\nHost: {SERVICE_NAME}\r\nContent-Type: application/json\r\n\
                         Content-Length: {}\r\n\r\n",
                        body.len()
                    )
                    .into_bytes();
                    request.extend_from_slice(body);
                    s.write_all(&request).await.map_err(|e| e.to_string())?;
                    s.flush().await.map_err(|e| e.to_string())?;
                    Self::read_response(s).await
                };
                let response = match tokio::time::timeout(Duration::from_secs(30), exchange).await {
                    Err(_) => Err("no reply within 30 s".to_string()),
                    Ok(result) => result,
                };
                let response = match response {
                    Ok(Some(response)) => response,
                    Ok(None) => {
                        self.note(kind, "closed_without_reply", false, "EOF before any reply");
                        sock = None;
                        continue;
                    }
                    Err(error) => {
                        self.note(kind, "error", false, &error);
                        sock = None;
                        tokio::time::sleep(Duration::from_millis(250)).await;
                        continue;
                    }
                };
                let status = response.status;
                let detail = truncate(&String::from_utf8_lossy(&response.body), 200);
                let good = status == want;
                if good && kind == "undecodable_object" {
                    match serde_json::from_slice::<Value>(&response.body) {
                        Ok(review) => {
                            let r = &review["response"];
                            let good = r["uid"] == "bad-object-0001"
                                && r["allowed"] == false
                                && r["status"]["code"] == 400
                                && r["status"]["reason"] == "BadRequest";
                            self.note(
                                kind,
                                if good {
                                    "allowed_false_400"
                                } else {
                                    "wrong_review"
                                },
                                good,
                                &detail,
                            );
                        }
                        Err(e) => {
                            self.note(kind, "error", false, &e.to_string());
                            sock = None;
                            tokio::time::sleep(Duration::from_millis(250)).await;
                            continue;
                        }
                    }
                } else if good && want == 400 {
                    let body = String::from_utf8_lossy(&response.body);
                    let good = serde_json::from_str::<Value>(&body)
                        .is_ok_and(|v| v["error"].is_string())
                        && !body.trim().contains('\n');
                    let outcome = format!("status_{status}{}", if good { "" } else { "_bad_body" });
                    self.note(kind, &outcome, good, &detail);
                } else {
                    self.note(kind, &format!("status_{status}"), good, &detail);
                }
                if response
                    .headers
                    .get("connection")
                    .is_some_and(|v| v.eq_ignore_ascii_case("close"))
                {
                    sock = None;
                }
                tokio::time::sleep(Duration::from_millis(250)).await;
            }
        }
    }

    /// POSTs a 9 MiB body; the reply must be 413, possibly before the body is fully sent. Reading
    /// and writing run concurrently, so an early reply is seen at once.
    async fn oversize_once(&self, chunked: bool) {
        let kind = if chunked {
            "oversize_chunked"
        } else {
            "oversize_content_length"
        };
        let size = 9 * 1024 * 1024;
        let mut body = Vec::with_capacity(size);
        body.push(b'[');
        for _ in 0..size / 2 - 1 {
            body.extend_from_slice(b"0,");
        }
        body.push(b']');
        let (framing, payload) = if chunked {
            let mut payload = Vec::with_capacity(size + size / 65536 * 12 + 16);
            for chunk in body.chunks(65536) {
                payload.extend_from_slice(format!("{:x}\r\n", chunk.len()).as_bytes());
                payload.extend_from_slice(chunk);
                payload.extend_from_slice(b"\r\n");
            }
            payload.extend_from_slice(b"0\r\n\r\n");
            ("Transfer-Encoding: chunked".to_string(), payload)
        } else {
            (format!("Content-Length: {size}"), body)
        };
        let mut request = format!(
            "POST /mutate HTTP/1.1\r\nHost: {SERVICE_NAME}\r\nContent-Type: application/json\r\n{framing}\r\n\r\n"
        )
        .into_bytes();
        request.extend_from_slice(&payload);
        let sock = match self.connect(Duration::from_secs(30)).await {
            Ok(sock) => sock,
            Err(error) => return self.note(kind, "connect_error", false, &error),
        };
        let (mut rd, mut wr) = tokio::io::split(sock);
        let sent = AtomicUsize::new(0);
        let writer = async {
            for chunk in request.chunks(65536) {
                wr.write_all(chunk).await?;
                sent.fetch_add(chunk.len(), Ordering::Relaxed);
            }
            wr.flush().await
        };
        tokio::pin!(writer);
        let (mut got, mut closed, mut writing, mut send_error) = (Vec::new(), false, true, None);
        let start = Instant::now();
        let stop = tokio::time::sleep(Duration::from_secs(30));
        tokio::pin!(stop);
        let mut buf = vec![0u8; 65536];
        loop {
            tokio::select! {
                read = rd.read(&mut buf) => match read {
                    Ok(0) | Err(_) => {
                        closed = true;
                        break;
                    }
                    Ok(n) => {
                        got.extend_from_slice(&buf[..n]);
                        if let Some(end) = head_end(&got) {
                            let length = content_length(&got[..end]).unwrap_or(0);
                            if got.len() - end - 4 >= length {
                                break;
                            }
                        }
                    }
                },
                written = &mut writer, if writing => {
                    writing = false;
                    send_error = written.err().map(|e| e.to_string());
                }
                _ = &mut stop => break,
            }
        }
        let elapsed = start.elapsed().as_secs_f64();
        let status = status_of(&got);
        let detail = format!(
            "{elapsed:.2} s, sent {} of {} bytes, closed {closed}, send error {send_error:?}, reply {}",
            sent.load(Ordering::Relaxed),
            request.len(),
            lossy(&got, 120)
        );
        let outcome = match status {
            Some(status) => format!("status_{status}"),
            None if closed => "closed_without_reply".into(),
            None => "no_reply".into(),
        };
        self.note(kind, &outcome, status == Some(413), &detail);
    }

    async fn oversize_loop(self) {
        let mut chunked = false;
        while Instant::now() < self.deadline {
            self.oversize_once(chunked).await;
            chunked = !chunked;
            tokio::time::sleep(Duration::from_secs(2)).await;
        }
    }

    /// Reads until the server closes (EOF or error) or `limit` passes without data:
    /// `(bytes, closed)`.
    async fn read_until_close(sock: &mut TlsStream<TcpStream>, limit: Duration) -> (Vec<u8>, bool) {
        let mut got = Vec::new();
        let mut buf = vec![0u8; 65536];
        // At most 1,000 reads: a server trickling bytes for ever would be a failure anyway.
        for _ in 0..1000 {
            match tokio::time::timeout(limit, sock.read(&mut buf)).await {
                Err(_) => return (got, false),
                Ok(Ok(0)) | Ok(Err(_)) => return (got, true),
                Ok(Ok(n)) => got.extend_from_slice(&buf[..n]),
            }
        }
        (got, false)
    }

    /// Starts a request and never finishes it; the server must close within ~10 s of the first
    /// byte (a 408 reply before closing is fine).
    async fn stall_once(&self, kind: &'static str) {
        let mut sock = match self.connect(Duration::from_secs(30)).await {
            Ok(sock) => sock,
            Err(error) => return self.note(kind, "connect_error", false, &error),
        };
        let (mut got, mut closed) = (Vec::new(), false);
        let start = Instant::now();
        let sent: Result<(), std::io::Error> = async {
            match kind {
                "stalled_body" => {
                    let body = br#"{"apiVersion": "admission.k8s.io/v1", "kind": "AdmissionReview", "request": {"#;
                    let mut request = format!(
                        "POST /mutate HTTP/1.1\r\nHost: {SERVICE_NAME}\r\nContent-Type: application/json\r\n\
                         Content-Length: 4096\r\n\r\n"
                    )
                    .into_bytes();
                    request.extend_from_slice(body);
                    sock.write_all(&request).await?;
                    sock.flush().await
                }
                "stalled_headers" => {
                    sock.write_all(format!("POST /mutate HTTP/1.1\r\nHost: {SERVICE_NAME}\r\nContent-Le").as_bytes())
                        .await?;
                    sock.flush().await
                }
                _ => {
                    // Trickled headers: one byte every 0.5 s, so the connection is never idle for long.
                    let head = format!("POST /mutate HTTP/1.1\r\nHost: {SERVICE_NAME}\r\nX-Padding: {}", "a".repeat(200));
                    for byte in head.as_bytes() {
                        sock.write_all(std::slice::from_ref(byte)).await?;
                        sock.flush().await?;
                        (got, closed) = Self::read_until_close(&mut sock, Duration::from_millis(500)).await;
                        if !got.is_empty() || closed || start.elapsed() > Duration::from_secs(20) {
                            break;
                        }
                    }
                    Ok(())
                }
            }
        }
        .await;
        if sent.is_err() {
            closed = true; // the server closed while we were still sending
        }
        if !closed {
            let left = Duration::from_secs(25)
                .saturating_sub(start.elapsed())
                .max(Duration::from_secs(1));
            let (more, now_closed) = Self::read_until_close(&mut sock, left).await;
            got.extend_from_slice(&more);
            closed = now_closed;
        }
        let elapsed = start.elapsed().as_secs_f64();
        drop(sock);
        let status = status_of(&got);
        let what = if closed {
            format!(
                "closed_after_{}",
                status.map_or("no_reply".to_string(), |s| s.to_string())
            )
        } else {
            "still_open".to_string()
        };
        let good = closed
            && (9.0..=13.0).contains(&elapsed)
            && matches!(status, None | Some(408))
            && (got.is_empty() || status == Some(408));
        let outcome = if good {
            what
        } else {
            format!("{what}_at_{elapsed:.0}s")
        };
        self.note(
            kind,
            &outcome,
            good,
            &format!(
                "closed {closed} after {elapsed:.2} s, reply {}",
                lossy(&got, 80)
            ),
        );
        let mut map = self.results.lock().unwrap();
        map.entry(kind)
            .or_default()
            .close_seconds
            .push((elapsed * 100.0).round() / 100.0);
    }

    async fn stall_loop(self, kind: &'static str) {
        while Instant::now() + Duration::from_secs(14) < self.deadline {
            self.stall_once(kind).await;
            tokio::time::sleep(Duration::from_secs(1)).await;
        }
    }
}

/// Runs the bad-request mix until `seconds` from now; returns the outcomes by kind.
async fn bad_mix(addr: SocketAddr, ca: PathBuf, seconds: u64) -> BadResults {
    let client = BadClient {
        addr,
        connector: tls_connector(&ca, Protocol::Http1).expect("the soak's own CA"),
        results: Arc::default(),
        deadline: Instant::now() + Duration::from_secs(seconds),
    };
    let mut tasks = tokio::task::JoinSet::new();
    tasks.spawn(client.clone().quick_loop());
    tasks.spawn(client.clone().oversize_loop());
    for kind in ["stalled_body", "stalled_headers", "trickled_headers"] {
        tasks.spawn(client.clone().stall_loop(kind));
    }
    let hard_stop = client.deadline + Duration::from_secs(60);
    while let Ok(Some(_)) = tokio::time::timeout_at(hard_stop, tasks.join_next()).await {}
    tasks.abort_all();
    client.results
}

// ---------------------------------------------------------------------------------------------
// The soak

const BAD_KINDS: [&str; 9] = [
    "malformed_json",
    "not_admission_review",
    "undecodable_object",
    "get_mutate",
    "oversize_content_length",
    "oversize_chunked",
    "stalled_body",
    "stalled_headers",
    "trickled_headers",
];

struct Rotation {
    before: u64,
    after: u64,
    ok: bool,
}

/// The summary table and the failed criteria.
#[derive(Default)]
struct Verdict {
    rows: Vec<(String, String, String)>,
    failures: Vec<String>,
}

impl Verdict {
    /// "ok" or "FAIL" for the table; a failure is remembered with `what`.
    fn check(&mut self, ok: bool, what: impl Into<String>) -> String {
        if ok {
            "ok".into()
        } else {
            self.failures.push(what.into());
            "FAIL".into()
        }
    }

    fn row(
        &mut self,
        name: impl Into<String>,
        value: impl Into<String>,
        verdict: impl Into<String>,
    ) {
        self.rows.push((name.into(), value.into(), verdict.into()));
    }

    fn table(&self) -> String {
        let width = self.rows.iter().map(|r| r.0.len()).max().unwrap_or(0);
        let mut text = format!(
            "\n{}\nmesh-admission soak summary\n{}\n",
            "=".repeat(100),
            "=".repeat(100)
        );
        for (name, value, verdict) in &self.rows {
            text.push_str(&format!("{name:<width$}  {verdict:<4}  {value}\n"));
        }
        text.push_str(&format!("{}\n", "-".repeat(100)));
        if self.failures.is_empty() {
            text.push_str("RESULT: PASS\n");
        } else {
            text.push_str("RESULT: FAIL\n");
            for failure in &self.failures {
                text.push_str(&format!("  - {failure}\n"));
            }
        }
        text
    }
}

fn map_text(map: &BTreeMap<String, u64>) -> String {
    if map.is_empty() {
        String::new()
    } else {
        format!("{map:?}")
    }
}

fn good_load_rows(v: &mut Verdict, name: &str, rate: f64, report: &LoadReport) {
    let s = &report.stats;
    let ok = s.failed() == 0 && s.unreached() == 0 && report.status.is_ok() && s.ok > 0;
    let verdict = v.check(
        ok,
        format!(
            "good {name}: {} failed {:?}, {} not reached {:?}; samples {:?}; status {:?}",
            s.failed(),
            s.failures,
            s.unreached(),
            s.not_reached,
            s.samples,
            report.status
        ),
    );
    v.row(
        format!("good {name} requests"),
        format!(
            "ok {}  failed {} {}  not reached {} {}",
            s.ok,
            s.failed(),
            map_text(&s.failures),
            s.unreached(),
            map_text(&s.not_reached)
        ),
        verdict,
    );
    let achieved = report.throughput();
    v.row(
        format!("good {name} rate"),
        format!(
            "{achieved:.1}/s achieved of {}/s; overdue unsent {}; connections opened {}",
            g(rate),
            report.overdue_unsent,
            s.connections_opened
        ),
        if achieved >= 0.95 * rate { "" } else { "WARN" },
    );
    v.row(
        format!("good {name} latency (ms)"),
        format!(
            "p50 {}  p99 {}  p99.9 {}  max {}  (service time p50 {}  p99 {})",
            s.latency.ms(0.5),
            s.latency.ms(0.99),
            s.latency.ms(0.999),
            s.latency.ms(1.0),
            s.service.ms(0.5),
            s.service.ms(0.99)
        ),
        "",
    );
}

fn mib(kb: f64) -> String {
    format!("{:.1}", kb / 1024.0)
}

/// Rows and checks of the RSS and FD samples `(t, rss_kb, fds)`.
fn resource_rows(v: &mut Verdict, cfg: &Config, samples: &[(u64, u64, u64)]) {
    let post: Vec<_> = samples
        .iter()
        .copied()
        .filter(|s| s.0 >= cfg.warmup)
        .collect();
    if post.len() < 2 {
        let verdict = v.check(false, "too few RSS/FD samples after the warm-up");
        v.row("RSS / FDs", "too few samples", verdict);
    } else {
        // The criterion is the trend: the median of the last minute against the median of the first
        // minute after the warm-up. Single samples are too noisy for a +-10% bound on a ~11 MiB
        // process: each 9 MiB bad request makes the server buffer up to its 8 MiB limit for a
        // moment, and the allocator may hold on to freed memory for a while. Minutes that stray
        // further are shown as a WARN row with every minute's median, so an excursion stays visible
        // without failing the run.
        let limit = cfg.rss_pct as f64;
        let mut windows: BTreeMap<u64, Vec<f64>> = BTreeMap::new();
        for (t, kb, _) in &post {
            windows
                .entry((t - post[0].0) / 60)
                .or_default()
                .push(*kb as f64);
        }
        let mut groups: Vec<Vec<f64>> = windows.into_values().collect();
        if groups.len() > 1 && groups.last().unwrap().len() < 3 {
            // a short last minute joins the one before
            let last = groups.pop().unwrap();
            groups.last_mut().unwrap().extend(last);
        }
        let medians: Vec<f64> = groups
            .iter()
            .map(|g| median(g).unwrap_or(f64::NAN))
            .collect();
        let base = medians[0];
        let end = *medians.last().unwrap();
        let rss: Vec<u64> = post.iter().map(|s| s.1).collect();
        let change = (end - base) * 100.0 / base;
        let verdict = v.check(
            change.abs() <= limit,
            format!(
                "RSS: the last minute's median {} MiB is {change:+.1}% from the post-warm-up {} MiB (limit {}%)",
                mib(end),
                mib(base),
                g(limit)
            ),
        );
        v.row(
            "RSS (MiB)",
            format!(
                "first {}  after warm-up {}  end {}  min {}  max {}  change {change:+.1}% \
                 (warm-up/end: 1-min medians; min/max: single samples)",
                mib(samples[0].1 as f64),
                mib(base),
                mib(end),
                mib(*rss.iter().min().unwrap() as f64),
                mib(*rss.iter().max().unwrap() as f64)
            ),
            verdict,
        );
        let worst = medians.iter().map(|m| (m - base).abs()).fold(0.0, f64::max) * 100.0 / base;
        v.row(
            "RSS 1-min medians (MiB)",
            format!(
                "{}  (largest {worst:.1}% off)",
                medians
                    .iter()
                    .map(|m| mib(*m))
                    .collect::<Vec<_>>()
                    .join(" ")
            ),
            if worst <= limit { "" } else { "WARN" },
        );
        let fds: Vec<u64> = post.iter().map(|s| s.2).collect();
        let (t0, t_end) = (post[0].0, post.last().unwrap().0);
        let first: Vec<f64> = post
            .iter()
            .filter(|s| s.0 < t0 + 60)
            .map(|s| s.2 as f64)
            .collect();
        let last: Vec<f64> = post
            .iter()
            .filter(|s| s.0 + 60 > t_end)
            .map(|s| s.2 as f64)
            .collect();
        let (m1, m2) = (
            median(&first).unwrap_or(f64::NAN),
            median(&last).unwrap_or(f64::NAN),
        );
        let tolerance = cfg.fd_tolerance as f64;
        let verdict = v.check(
            (m2 - m1).abs() <= tolerance,
            format!(
                "open FDs: median {} in the first minute after warm-up, {} in the last (tolerance {})",
                g(m1),
                g(m2),
                cfg.fd_tolerance
            ),
        );
        v.row(
            "open FDs",
            format!(
                "first {}  after warm-up {}  last {}  min {}  max {}  median first/last minute {}/{}",
                samples[0].2,
                post[0].2,
                post.last().unwrap().2,
                fds.iter().min().unwrap(),
                fds.iter().max().unwrap(),
                g(m1),
                g(m2)
            ),
            verdict,
        );
    }
    v.row(
        "samples",
        format!("{}, every {SAMPLE_EVERY} s", samples.len()),
        "",
    );
}

fn bad_rows(v: &mut Verdict, bad: Option<&BTreeMap<&'static str, BadEntry>>) {
    let Some(bad) = bad else {
        let verdict = v.check(false, "the bad-request client did not finish");
        v.row("bad requests", "no report", verdict);
        return;
    };
    for kind in BAD_KINDS {
        let Some(entry) = bad.get(kind) else {
            let verdict = v.check(false, format!("bad {kind}: none sent"));
            v.row(format!("bad {kind}"), "none sent", verdict);
            continue;
        };
        let mut extra = String::new();
        if !entry.close_seconds.is_empty() {
            let low = entry
                .close_seconds
                .iter()
                .copied()
                .fold(f64::INFINITY, f64::min);
            let high = entry.close_seconds.iter().copied().fold(0.0, f64::max);
            extra = format!("  closed after {low}-{high} s");
        }
        let outcomes = entry
            .outcomes
            .iter()
            .map(|(k, n)| format!("{k}={n}"))
            .collect::<Vec<_>>()
            .join(" ");
        let verdict = v.check(
            entry.unexpected == 0 && entry.expected > 0,
            format!(
                "bad {kind}: {} unexpected outcomes {:?}: {:?}",
                entry.unexpected, entry.outcomes, entry.samples
            ),
        );
        v.row(
            format!("bad {kind}"),
            format!(
                "expected {}  unexpected {}  [{outcomes}]{extra}",
                entry.expected, entry.unexpected
            ),
            verdict,
        );
    }
}

/// Levels of the server's log lines and the TLS listener's drain report.
fn log_rows(v: &mut Verdict, lines: &[&str], addr: SocketAddr) {
    let mut levels: BTreeMap<String, u64> = BTreeMap::new();
    let mut stopped = "none".to_string();
    for line in lines {
        let Ok(entry) = serde_json::from_str::<Value>(line) else {
            *levels.entry("unparsable".into()).or_default() += 1;
            continue;
        };
        *levels
            .entry(entry["level"].as_str().unwrap_or("?").to_string())
            .or_default() += 1;
        let fields = &entry["fields"];
        if fields["message"] == "server stopped" && fields["local"] == addr.to_string().as_str() {
            stopped = fields["report"].as_str().unwrap_or("?").to_string();
        }
    }
    let errors = levels.get("ERROR").copied().unwrap_or(0);
    let verdict = v.check(
        errors == 0 && !levels.contains_key("unparsable"),
        format!("the server logged {errors} ERROR lines (see server.log)"),
    );
    v.row(
        "server log lines",
        levels
            .iter()
            .map(|(k, n)| format!("{k}={n}"))
            .collect::<Vec<_>>()
            .join(" "),
        verdict,
    );
    let verdict = v.check(
        stopped.contains("panicked: 0") && stopped.contains("drained: true"),
        format!("server drain report: {stopped}"),
    );
    v.row("server drain report", stopped, verdict);
}

/// A new TLS handshake (HTTP/1.1 over ALPN) with the harness's client, within CONNECT_TIMEOUT.
fn handshake(rt: &tokio::runtime::Runtime, addr: SocketAddr, ca: &Path) -> Option<Client> {
    rt.block_on(async {
        tokio::time::timeout(CONNECT_TIMEOUT, Client::connect(addr, ca, Protocol::Http1))
            .await
            .ok()?
            .ok()
    })
}

/// Waits for a spawned task at most `limit`, aborting it then.
fn join_bounded<T>(
    rt: &tokio::runtime::Runtime,
    handle: tokio::task::JoinHandle<T>,
    limit: Duration,
) -> Option<T> {
    rt.block_on(async {
        let abort = handle.abort_handle();
        match tokio::time::timeout(limit, handle).await {
            Ok(Ok(value)) => Some(value),
            Ok(Err(_)) => None,
            Err(_) => {
                abort.abort();
                None
            }
        }
    })
}

#[test]
#[ignore = "a soak of SOAK_SECONDS (default 600 s): cargo test --release --test soak -- --ignored --nocapture"]
fn soak() {
    let cfg = Config::from_env();
    let script_start = std::time::Instant::now();
    let mut work = WorkDir {
        path: temp_dir("soak"),
        keep: cfg.keep,
        passed: false,
    };
    let certs = work.path.join("certs");
    certs::issue(&certs, &[]).expect("initial certificates");
    let ca = certs.join("ca.crt");
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    // 1. The server (killed by its Drop, also when this test panics).
    let args = ["--cert-reload-interval", "1s", "--shutdown-grace", "2s"].map(String::from);
    let mut server = Server::start_with(None, &certs, &args, &work.path.join("server.log"));
    let (addr, admin) = (server.addr, server.admin_addr);
    let pid = server.pid().expect("a running server");
    log(
        script_start,
        &format!(
            "server pid {pid} on https://{addr}, admin http://{admin}; work dir {}",
            work.path.display()
        ),
    );
    let body = BodyTemplate::load(&Path::new(env!("CARGO_MANIFEST_DIR")).join(BODY))
        .expect("the soak's review body");

    // 2-5. Load, rotations, bad requests and samples for SOAK_SECONDS.
    log(
        script_start,
        &format!(
            "soak: {}s of load (h1 {H1_CONNECTIONS} conns @ {}/s, h2 {}x{H2_STREAMS} streams @ {}/s), bad requests, \
             rotations every {}s",
            cfg.soak_seconds,
            g(cfg.h1_rate),
            cfg.h2_connections,
            g(cfg.h2_rate),
            cfg.rotate_seconds
        ),
    );
    let soak_duration = Duration::from_secs(cfg.soak_seconds);
    let load = |id, protocol, connections, rate, duration| {
        let spec = LoadSpec {
            id,
            protocol,
            connections,
            rate,
            duration,
        };
        rt.spawn(run_load(spec, addr, ca.clone(), body.clone()))
    };
    let soak_start = std::time::Instant::now();
    let h1 = load(
        1,
        Protocol::Http1,
        H1_CONNECTIONS,
        cfg.h1_rate,
        soak_duration,
    );
    let h2 = load(
        2,
        Protocol::Http2,
        cfg.h2_connections,
        cfg.h2_rate,
        soak_duration,
    );
    let bad = rt.spawn(bad_mix(addr, ca.clone(), cfg.soak_seconds));

    let mut samples_tsv = String::from("t\trss_kb\tfds\n");
    let mut rotations_tsv = String::from(
        "n\tt\treloads_before\treloads_after\treload_errors\tfile_leaf\tserved_leaf\tok\n",
    );
    let mut samples: Vec<(u64, u64, u64)> = Vec::new();
    let mut rotations: Vec<Rotation> = Vec::new();
    let reloads_start = metric(admin, "mesh_admission_tls_reloads_total");
    let cpu_start = try_cpu_time(pid).unwrap_or_default();
    let (mut next_sample, mut next_rotation) = (0, cfg.rotate_seconds);
    loop {
        let elapsed = soak_start.elapsed().as_secs();
        if elapsed >= cfg.soak_seconds {
            break;
        }
        if server.exited().is_some() {
            log(script_start, "the server died during the soak");
            break;
        }
        if elapsed >= next_sample {
            if let Some((rss, fds)) = rss_and_fds(pid) {
                samples.push((elapsed, rss, fds));
                samples_tsv.push_str(&format!("{elapsed}\t{rss}\t{fds}\n"));
            }
            next_sample += SAMPLE_EVERY;
        }
        // A rotation needs a few seconds to be verified, so none starts in the last 10 s.
        if elapsed >= next_rotation && elapsed + 10 < cfg.soak_seconds {
            let before = metric(admin, "mesh_admission_tls_reloads_total");
            if let Err(error) = certs::issue(&certs, &[]) {
                log(script_start, &format!("certs failed: {error}"));
            }
            let want = leaf_of(&certs.join("tls.crt")).unwrap_or_default();
            let mut after = before;
            for _ in 0..20 {
                std::thread::sleep(Duration::from_millis(500));
                after = metric(admin, "mesh_admission_tls_reloads_total");
                if after > before {
                    break;
                }
            }
            let served = handshake(&rt, addr, &ca).map(|client| client.peer_certificate);
            let errors = metric(admin, "mesh_admission_tls_reload_errors_total");
            let new_leaf = !want.is_empty() && served.as_deref() == Some(want.as_slice());
            let ok = after == before + 1 && new_leaf;
            rotations.push(Rotation { before, after, ok });
            rotations_tsv.push_str(&format!(
                "{}\t{elapsed}\t{before}\t{after}\t{errors}\t{}\t{}\t{}\n",
                rotations.len(),
                short_id(&want),
                served.as_deref().map_or("none".into(), short_id),
                if ok { "yes" } else { "no" }
            ));
            log(
                script_start,
                &format!(
                    "rotation {}: reloads {before} -> {after}, new leaf served: {}",
                    rotations.len(),
                    if new_leaf { "yes" } else { "no" }
                ),
            );
            next_rotation += cfg.rotate_seconds;
        }
        std::thread::sleep(Duration::from_secs(1));
    }
    let reloads_end = metric(admin, "mesh_admission_tls_reloads_total");
    let cpu_end = try_cpu_time(pid).unwrap_or_default();
    let reload_errors_end = metric(admin, "mesh_admission_tls_reload_errors_total");
    let server_alive = server.exited().is_none();

    log(script_start, "soak load finished; waiting for the clients");
    let h1 = join_bounded(&rt, h1, Duration::from_secs(40));
    let h2 = join_bounded(&rt, h2, Duration::from_secs(40));
    let bad = join_bounded(&rt, bad, Duration::from_secs(60));
    for (name, report) in [("h1", &h1), ("h2", &h2)] {
        match report {
            Some(report) => log(script_start, &report.text(name)),
            None => log(
                script_start,
                &format!("{name}: no report (the load did not finish)"),
            ),
        }
    }

    // 6. SIGTERM under load.
    log(
        script_start,
        &format!("shutdown: load for {SHUTDOWN_LOAD_SECONDS}s, SIGTERM after 5 s"),
    );
    let ready_before = readyz(admin);
    let term_duration = Duration::from_secs(SHUTDOWN_LOAD_SECONDS);
    let term_h1 = load(
        3,
        Protocol::Http1,
        H1_CONNECTIONS,
        cfg.h1_rate,
        term_duration,
    );
    let term_h2 = load(
        4,
        Protocol::Http2,
        cfg.h2_connections,
        cfg.h2_rate,
        term_duration,
    );
    std::thread::sleep(Duration::from_secs(5));
    let term_at = std::time::Instant::now();
    if server_alive {
        server.signal(nix::sys::signal::Signal::SIGTERM);
    }
    std::thread::sleep(Duration::from_millis(300));
    let ready_after = readyz(admin);
    let grace_accept = handshake(&rt, addr, &ca).is_some();
    let limit = SHUTDOWN_GRACE + DRAIN_LIMIT + 5;
    let exit = server.wait_exit(Duration::from_secs(limit).saturating_sub(term_at.elapsed()));
    let exit_seconds = term_at.elapsed().as_secs_f64();
    if exit.is_none() {
        log(
            script_start,
            &format!("the server did not exit within {limit}s of SIGTERM; killing it"),
        );
        server.stop();
    }
    let term_h1 = join_bounded(&rt, term_h1, Duration::from_secs(60));
    let term_h2 = join_bounded(&rt, term_h2, Duration::from_secs(60));
    for (name, report) in [("term_h1", &term_h1), ("term_h2", &term_h2)] {
        if let Some(report) = report {
            log(script_start, &report.text(name));
        }
    }
    // The whole log: the process has exited (or was killed) by now.
    let log = server.log();
    let logs: Vec<&str> = log.lines().collect();
    for line in logs.iter().filter(|l| {
        [
            "\"shutting down",
            "\"stopped",
            "\"server stopped",
            "\"listener closed, draining connections",
        ]
        .iter()
        .any(|m| l.contains(m))
    }) {
        eprintln!("{line}");
    }

    // 7. Summary and verdict.
    let mut v = Verdict::default();
    v.row(
        "duration",
        format!(
            "soak {} s (warm-up {} s); test total {} s",
            cfg.soak_seconds,
            cfg.warmup,
            script_start.elapsed().as_secs()
        ),
        "",
    );
    let verdict = v.check(server_alive, "the server died during the soak");
    v.row(
        "server alive after soak",
        if server_alive { "yes" } else { "no" },
        verdict,
    );
    let cpu = cpu_end.saturating_sub(cpu_start).as_secs_f64();
    v.row(
        "server CPU during soak",
        format!(
            "{cpu:.0} s = {:.0}% of one core (2-core host shared with the load)",
            cpu * 100.0 / cfg.soak_seconds as f64
        ),
        "",
    );
    // 2. Good load.
    for (name, rate, report) in [("h1", cfg.h1_rate, &h1), ("h2", cfg.h2_rate, &h2)] {
        match report {
            Some(report) => good_load_rows(&mut v, name, rate, report),
            None => {
                let verdict = v.check(
                    false,
                    format!("load {name} did not finish within 40 s of the end"),
                );
                v.row(format!("good {name}"), "no report", verdict);
            }
        }
    }
    // 3. Rotations.
    let done = rotations.len() as u64;
    let verified = rotations.iter().filter(|r| r.ok).count();
    let grown = reloads_end.saturating_sub(reloads_start);
    let single_steps = rotations.iter().filter(|r| r.after == r.before + 1).count();
    let verdict = v.check(
        done > 0 && grown == done && verified as u64 == done,
        format!("rotations: done {done}, tls_reloads_total grew by {grown}, verified {verified}"),
    );
    v.row(
        "cert rotations",
        format!(
            "done {done}; tls_reloads_total +{grown} (+1 per rotation {single_steps}/{done}); new leaf on new \
             handshake {verified}/{done}; reload errors {reload_errors_end}"
        ),
        verdict,
    );
    // 4. Bad requests.
    let bad_map = bad.as_ref().map(|results| results.lock().unwrap());
    bad_rows(&mut v, bad_map.as_deref());
    // 5. RSS and FDs.
    resource_rows(&mut v, &cfg, &samples);
    // 6. Shutdown.
    let verdict = v.check(
        ready_before == "200" && ready_after == "503",
        format!("/readyz before/after SIGTERM: {ready_before}/{ready_after}"),
    );
    v.row(
        "readyz before / after SIGTERM",
        format!("{ready_before} / {ready_after}"),
        verdict,
    );
    let verdict = v.check(
        grace_accept,
        "no TLS handshake during the shutdown grace period",
    );
    v.row(
        "TLS accepted during grace",
        if grace_accept { "yes" } else { "no" },
        verdict,
    );
    let limit = SHUTDOWN_GRACE + DRAIN_LIMIT;
    let code = exit.and_then(|status| status.code());
    let in_time = exit.is_some() && exit_seconds <= (limit + 1) as f64;
    let (code_text, seconds_text) = match exit {
        Some(status) => (
            code.map_or_else(|| format!("{status}"), |c| c.to_string()),
            format!("{exit_seconds:.2}"),
        ),
        None => ("none".to_string(), "none".to_string()),
    };
    let verdict = v.check(
        code == Some(0) && in_time,
        format!("server exit after SIGTERM: code {code_text} after {seconds_text} s"),
    );
    v.row(
        "server exit after SIGTERM",
        format!("code {code_text} after {seconds_text} s (limit {limit} s: grace + drain)"),
        verdict,
    );
    for (name, report) in [("h1", &term_h1), ("h2", &term_h2)] {
        let Some(report) = report else {
            let verdict = v.check(false, format!("shutdown load {name} did not finish"));
            v.row(format!("shutdown {name}"), "no report", verdict);
            continue;
        };
        let s = &report.stats;
        let verdict = v.check(
            s.failed() == 0 && s.ok > 0 && report.status.is_ok(),
            format!(
                "shutdown {name}: {} requests reached the server without a valid reply: {:?}; samples {:?}; status {:?}",
                s.failed(),
                s.failures,
                s.samples,
                report.status
            ),
        );
        v.row(
            format!("shutdown {name} requests"),
            format!(
                "ok {}  failed {} {}  not reached {} {}  retried unsent {}",
                s.ok,
                s.failed(),
                map_text(&s.failures),
                s.unreached(),
                map_text(&s.not_reached),
                s.retried_unsent
            ),
            verdict,
        );
    }
    // The server's own account: log levels and the TLS listener's final report.
    log_rows(&mut v, &logs, addr);

    let table = v.table();
    println!("{table}");
    let _ = std::fs::write(work.path.join("samples.tsv"), samples_tsv);
    let _ = std::fs::write(work.path.join("rotations.tsv"), rotations_tsv);
    let _ = std::fs::write(work.path.join("summary.txt"), &table);
    drop(bad_map);
    drop(server);
    assert!(
        v.failures.is_empty(),
        "soak failed:\n  - {}",
        v.failures.join("\n  - ")
    );
    work.passed = true;
}
