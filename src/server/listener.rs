//! The accept loop: TLS per connection, HTTP/1.1 and HTTP/2 via hyper-util, a total per-request
//! deadline, and graceful shutdown.
//!
//! Each connection runs in its own task, inside a span naming its peer, and each HTTP/2 stream in a
//! task of its own (hyper-util's `TokioExecutor`), so an error or a panic while serving one
//! connection or stream never reaches the others or the loop.

use std::convert::Infallible;
use std::future::Future;
use std::io;
use std::net::SocketAddr;
use std::pin::pin;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::Duration;

use axum::Router;
use axum::body::Body;
use axum::http::{HeaderValue, Request, Response, StatusCode, Version, header};
use hyper::body::{Body as HttpBody, Incoming};
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use hyper_util::server::conn::auto;
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::Notify;
use tokio::task::JoinSet;
use tokio::time::Instant;
use tokio_rustls::TlsAcceptor;
use tokio_util::io::InspectReader;
use tokio_util::sync::CancellationToken;
use tower::ServiceExt;
use tracing::Instrument;

use super::body::{AfterRequest, DeadlineBody, SharedBody};
use super::routes::json_error;
use super::tls::ALPN_H2;
use super::unvectored::Unvectored;

/// Pause after an accept error that is not about one connection (EMFILE, ENFILE, ENOBUFS): retrying
/// at once would spin on the same error while other tasks release descriptors.
const ACCEPT_BACKOFF: Duration = Duration::from_millis(100);
/// HTTP/2 pings find peers that vanished without a FIN, which would otherwise hold a task forever.
const H2_KEEPALIVE_INTERVAL: Duration = Duration::from_secs(20);
const H2_KEEPALIVE_TIMEOUT: Duration = Duration::from_secs(10);
/// After the listener closes, how long requests already under way get before any connection is
/// asked to finish. A GOAWAY in the middle of a stream is legal, but some clients mishandle it
/// (python-h2 refuses the PING that follows it), and most of these requests end within it.
const DRAIN_SETTLE: Duration = Duration::from_millis(250);
/// Once the drain starts, how long a connection that has not started its first request yet gets to
/// do so before it is asked to finish: hyper closes an HTTP/1 connection waiting for its first
/// request head at once, and an HTTP/2 client answers the GOAWAY's PING before it sends the request
/// it is about to send, which the final GOAWAY then excludes. Either way a request would be lost on a
/// connection that was accepted.
const FIRST_REQUEST_SETTLE: Duration = Duration::from_secs(1);

/// Timing of one server.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ServeOptions {
    /// Headers and body of a request must be complete within this time, or the connection is closed.
    pub request_deadline: Duration,
    /// After shutdown starts, new connections are still accepted this long, so endpoints can update.
    pub shutdown_grace: Duration,
    /// In-flight requests get this long to finish once the listener is closed.
    pub drain_timeout: Duration,
    /// A client must complete the TLS handshake within this time.
    pub handshake_timeout: Duration,
    /// An HTTP/1 connection with no request in progress is closed after this long. Longer than the
    /// 90 s after which Go clients (kube-apiserver) drop idle connections themselves, so it is the
    /// client that closes and never races a request against our close.
    pub idle_timeout: Duration,
}

impl Default for ServeOptions {
    fn default() -> Self {
        Self {
            request_deadline: Duration::from_secs(10),
            shutdown_grace: Duration::from_secs(2),
            drain_timeout: Duration::from_secs(20),
            handshake_timeout: Duration::from_secs(10),
            idle_timeout: Duration::from_secs(120),
        }
    }
}

/// What happened while serving, for the final log line.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ServeReport {
    /// TCP connections accepted.
    pub connections: u64,
    /// Connections whose TLS handshake failed or timed out.
    pub handshake_failures: u64,
    /// Connection tasks that panicked (the server kept running). An HTTP/2 stream runs in a task
    /// of its own: its panic resets only that stream and is not counted here.
    pub panicked: u64,
    /// True when every connection finished within the drain timeout.
    pub drained: bool,
    /// Connections still open at the drain timeout, closed forcibly.
    pub aborted: usize,
}

/// Serves `app` on `listener`, over TLS when `tls` is given (the webhook port) and plain HTTP/1.1
/// otherwise (the admin port), until `shutdown` completes; then keeps accepting for
/// `shutdown_grace` (zero closes the listener at once), closes the listener and waits up to
/// `drain_timeout` for open connections (HTTP/1 keep-alive connections get `Connection: close`,
/// HTTP/2 ones GOAWAY). Fails only for a listener without a local address, which is not bound.
pub async fn serve(
    listener: TcpListener,
    tls: Option<Arc<rustls::ServerConfig>>,
    app: Router,
    opts: ServeOptions,
    shutdown: impl Future<Output = ()> + Send,
) -> io::Result<ServeReport> {
    let tls = tls.map(TlsAcceptor::from);
    let local = listener.local_addr()?;
    tracing::debug!(%local, tls = tls.is_some(), "accepting connections");

    let mut connections = Connections {
        server: Arc::new(ConnectionServer::new(tls, app, opts)),
        drain: CancellationToken::new(),
        tasks: JoinSet::new(),
        report: ServeReport::default(),
    };
    connections.accept_until(&listener, shutdown).await;
    tracing::info!(%local, grace = ?opts.shutdown_grace, "shutting down: still accepting during the grace period");
    // From now on every HTTP/1 response says `Connection: close`, so keep-alive clients move off
    // their connections themselves instead of racing the server's close of an idle one.
    connections.server.closing.store(true, Ordering::Release);
    connections
        .accept_until(&listener, tokio::time::sleep(opts.shutdown_grace))
        .await;
    connections.accept_backlog(listener);
    connections.reap_until(Instant::now() + DRAIN_SETTLE).await;
    Ok(connections.drain(local, opts.drain_timeout).await)
}

/// The connections of one listener, from accept to drain.
struct Connections {
    server: Arc<ConnectionServer>,
    /// Cancelled when every connection is asked to finish.
    drain: CancellationToken,
    tasks: JoinSet<Result<(), HandshakeFailed>>,
    report: ServeReport,
}

impl Connections {
    async fn accept_until(&mut self, listener: &TcpListener, stop: impl Future<Output = ()>) {
        let mut stop = pin!(stop);
        loop {
            tokio::select! {
                () = &mut stop => return,
                accepted = listener.accept() => self.accept(accepted).await,
                // Reaping as we go keeps the set from growing with every connection ever served.
                Some(joined) = self.tasks.join_next() => self.reap(joined),
            }
        }
    }

    /// Reaps finished connections until none is left (true) or `deadline` passes (false).
    async fn reap_until(&mut self, deadline: Instant) -> bool {
        loop {
            match tokio::time::timeout_at(deadline, self.tasks.join_next()).await {
                Ok(Some(joined)) => self.reap(joined),
                Ok(None) => return true,
                Err(_elapsed) => return false,
            }
        }
    }

    /// Accepts what the kernel has already accepted for us, then closes the listener: those
    /// clients consider themselves connected, and closing the listener would reset them.
    fn accept_backlog(&mut self, listener: TcpListener) {
        let listener = match listener.into_std() {
            Ok(listener) => listener,
            Err(error) => {
                tracing::debug!(%error, "cannot take the listener's backlog");
                return;
            }
        };
        // The socket is still non-blocking, so this ends with WouldBlock once the backlog is empty.
        while let Ok((stream, peer)) = listener.accept() {
            let stream = stream
                .set_nonblocking(true)
                .and_then(|()| TcpStream::from_std(stream));
            if let Ok(stream) = stream {
                self.spawn(stream, peer);
            }
        }
    }

    /// Serves one connection in a task of its own, inside a span that names its peer.
    fn spawn(&mut self, stream: TcpStream, peer: SocketAddr) {
        self.report.connections += 1;
        let (server, drain) = (self.server.clone(), self.drain.clone());
        let span = tracing::info_span!("connection", %peer);
        self.tasks
            .spawn(async move { server.serve(stream, drain).await }.instrument(span));
    }

    async fn accept(&mut self, accepted: io::Result<(TcpStream, SocketAddr)>) {
        match accepted {
            Ok((stream, peer)) => self.spawn(stream, peer),
            Err(error)
                if matches!(
                    error.kind(),
                    io::ErrorKind::ConnectionRefused
                        | io::ErrorKind::ConnectionAborted
                        | io::ErrorKind::ConnectionReset
                ) =>
            {
                tracing::debug!(%error, "connection failed before it was accepted");
            }
            Err(error) => {
                tracing::error!(%error, "accept failed, backing off");
                tokio::time::sleep(ACCEPT_BACKOFF).await;
            }
        }
    }

    fn reap(&mut self, joined: Result<Result<(), HandshakeFailed>, tokio::task::JoinError>) {
        match joined {
            Ok(Ok(())) => {}
            Ok(Err(HandshakeFailed)) => self.report.handshake_failures += 1,
            Err(error) if error.is_panic() => {
                self.report.panicked += 1;
                tracing::error!(%error, "connection task panicked; other connections are unaffected");
            }
            Err(_cancelled) => {}
        }
    }

    /// Asks every connection to finish (h1: `Connection: close` after the current response, h2:
    /// GOAWAY; see [`FIRST_REQUEST_SETTLE`] for connections that have not started a request) and
    /// waits up to `timeout` before closing the rest forcibly.
    async fn drain(mut self, local: SocketAddr, timeout: Duration) -> ServeReport {
        tracing::info!(%local, open = self.tasks.len(), "listener closed, draining connections");
        self.drain.cancel();
        self.report.drained = self.reap_until(Instant::now() + timeout).await;
        self.report.aborted = self.tasks.len();
        if self.report.aborted > 0 {
            tracing::warn!(%local, aborted = self.report.aborted, "drain timeout reached, closing remaining connections");
        }
        self.tasks.shutdown().await;
        tracing::info!(%local, report = ?self.report, "server stopped");
        self.report
    }
}

/// The TLS handshake of a connection failed or timed out.
struct HandshakeFailed;

/// Everything a connection task needs, shared by all of them.
struct ConnectionServer {
    tls: Option<TlsAcceptor>,
    app: Router,
    opts: ServeOptions,
    /// Set when shutdown starts: HTTP/1 responses then carry `Connection: close`.
    closing: AtomicBool,
    /// hyper-util's builder in each of its one-protocol modes: ALPN already told us the protocol,
    /// and sniffing the preface instead would wait on a silent client with no timeout at all.
    http1: auto::Builder<TokioExecutor>,
    http2: auto::Builder<TokioExecutor>,
}

impl ConnectionServer {
    fn new(tls: Option<TlsAcceptor>, app: Router, opts: ServeOptions) -> Self {
        // `TokioExecutor` runs each HTTP/2 stream in a task of its own.
        let mut builder = auto::Builder::new(TokioExecutor::new());
        builder
            .http1()
            .timer(TokioTimer::new())
            .keep_alive(true)
            // hyper starts this clock whenever it waits for a request head, so it would close every
            // keep-alive connection idle for `request_deadline` and count from the end of the last
            // response rather than the first byte; the connection's `RequestClock` does instead.
            .header_read_timeout(None);
        builder
            .http2()
            .timer(TokioTimer::new())
            .keep_alive_interval(H2_KEEPALIVE_INTERVAL)
            .keep_alive_timeout(H2_KEEPALIVE_TIMEOUT);
        Self {
            tls,
            app,
            opts,
            closing: AtomicBool::new(false),
            http1: builder.clone().http1_only(),
            http2: builder.http2_only(),
        }
    }

    async fn serve(
        self: Arc<Self>,
        stream: TcpStream,
        drain: CancellationToken,
    ) -> Result<(), HandshakeFailed> {
        if let Err(error) = stream.set_nodelay(true) {
            tracing::debug!(%error, "cannot set TCP_NODELAY");
        }
        let Some(acceptor) = &self.tls else {
            self.serve_http(stream, false, drain).await;
            return Ok(());
        };
        let handshake = tokio::time::timeout(self.opts.handshake_timeout, acceptor.accept(stream));
        let stream = match handshake.await {
            Ok(Ok(stream)) => stream,
            Ok(Err(error)) => {
                tracing::debug!(%error, "TLS handshake failed");
                return Err(HandshakeFailed);
            }
            Err(_elapsed) => {
                tracing::debug!("TLS handshake timed out");
                return Err(HandshakeFailed);
            }
        };
        // RFC 9113 §3.2: over TLS, HTTP/2 is only spoken when ALPN selected it.
        let h2 = stream.get_ref().1.alpn_protocol() == Some(ALPN_H2);
        self.serve_http(stream, h2, drain).await;
        Ok(())
    }

    /// Speaks HTTP on `io` until the connection ends; once `drain` is cancelled, asks it to finish.
    async fn serve_http<I>(self: &Arc<Self>, io: I, h2: bool, drain: CancellationToken)
    where
        I: AsyncRead + AsyncWrite + Unpin + Send + 'static,
    {
        // HTTP/2 streams are multiplexed, so there is no connection-wide "between requests" to
        // time: each stream's body deadline starts when its headers arrive.
        let clock = (!h2).then(|| Arc::new(RequestClock::new(&self.opts)));
        let io = TokioIo::new(transport(io, clock.clone()));
        let timer = clock.clone();
        let mut expired = pin!(async move {
            match timer {
                Some(clock) => clock.expired().await,
                None => std::future::pending().await,
            }
        });
        let first_request = CancellationToken::new();
        let mut finish = pin!(finish_requested(drain, first_request.clone()));
        let server = self.clone();
        // An HTTP/2 stream runs in a task of its own, which does not inherit the connection's span.
        let span = tracing::Span::current();
        let service = hyper::service::service_fn(move |request: Request<Incoming>| {
            first_request.cancel();
            handle(server.clone(), request, clock.clone()).instrument(span.clone())
        });
        let builder = if h2 { &self.http2 } else { &self.http1 };
        let mut connection = pin!(builder.serve_connection(io, service));
        let mut finishing = false;
        let result = loop {
            tokio::select! {
                biased;
                result = connection.as_mut() => break result,
                // Dropping the connection closes it, as hyper would after a failed read.
                reason = &mut expired => break Err(reason.into()),
                () = &mut finish, if !finishing => {
                    finishing = true;
                    connection.as_mut().graceful_shutdown();
                }
            }
        };
        if let Err(error) = result {
            tracing::debug!(%error, "connection ended with an error");
        }
    }
}

/// The transport under a connection: its reader tells the clock (HTTP/1) when bytes arrive, and
/// it claims no vectored writes (see [`Unvectored`]).
fn transport<I: AsyncRead>(
    io: I,
    clock: Option<Arc<RequestClock>>,
) -> Unvectored<InspectReader<I, impl FnMut(&[u8])>> {
    Unvectored(InspectReader::new(io, move |bytes: &[u8]| {
        if let Some(clock) = clock.as_ref().filter(|_| !bytes.is_empty()) {
            clock.on_bytes();
        }
    }))
}

/// Resolves when a connection should be asked to finish: once the server drains, and the
/// connection has started its first request or [`FIRST_REQUEST_SETTLE`] has passed.
async fn finish_requested(drain: CancellationToken, first_request: CancellationToken) {
    drain.cancelled().await;
    let _ = tokio::time::timeout(FIRST_REQUEST_SETTLE, first_request.cancelled()).await;
}

/// Runs one request through `app` with its body on a deadline counted from the request's first
/// byte when the connection's clock knows it (HTTP/1), else from the arrival of its head.
async fn handle(
    server: Arc<ConnectionServer>,
    request: Request<Incoming>,
    clock: Option<Arc<RequestClock>>,
) -> Result<Response<Body>, Infallible> {
    let http1 = request.version() < Version::HTTP_2;
    let first_byte = clock
        .as_ref()
        .map_or_else(Instant::now, |clock| clock.begin_request());
    let expired = Arc::new(AtomicBool::new(false));
    let (parts, body) = request.into_parts();
    // The apiserver stops waiting after its `timeoutSeconds`, which it sends as `?timeout=`: a body
    // still arriving after that would be reviewed for nobody, so the earlier deadline wins.
    let deadline = server.opts.request_deadline;
    let deadline = caller_timeout(parts.uri.query()).map_or(deadline, |t| t.min(deadline));
    let body = DeadlineBody::new(body, first_byte + deadline, expired.clone());
    // Over HTTP/2 the answer keeps the request's stream open until its body is read (see `body`);
    // HTTP/1 needs no help, hyper reads or closes what a handler left.
    let (request, unread) = if http1 {
        (Request::from_parts(parts, Body::new(body)), None)
    } else {
        let shared = SharedBody::new(body);
        let request = Request::from_parts(parts, Body::new(shared.clone()));
        (request, Some(shared))
    };
    let response = server.app.clone().oneshot(request).await;
    if let Some(clock) = clock {
        clock.end_request();
    }
    if expired.load(Ordering::Acquire) {
        return Ok(request_timeout(http1));
    }
    let mut response = response?;
    if http1 && server.closing.load(Ordering::Acquire) {
        let close = HeaderValue::from_static("close");
        response.headers_mut().insert(header::CONNECTION, close);
    }
    Ok(match unread {
        Some(unread) if !unread.is_end_stream() => {
            response.map(|answer| Body::new(AfterRequest::new(answer, unread)))
        }
        _ => response,
    })
}

/// The `timeout` query parameter (`5s`, `500ms`), as kube-apiserver adds it to every webhook call.
/// One that does not parse is ignored: the server's own deadline still applies.
fn caller_timeout(query: Option<&str>) -> Option<Duration> {
    query?
        .split('&')
        .find_map(|pair| pair.strip_prefix("timeout="))
        .and_then(|value| humantime::parse_duration(value).ok())
        .filter(|timeout| !timeout.is_zero())
}

/// The answer once a body missed its deadline, whatever the handler made of the error it got.
/// On HTTP/1 `Connection: close` makes hyper close the connection after writing it: the rest of
/// the late body is still in flight, and the connection cannot be reused after it.
fn request_timeout(http1: bool) -> Response<Body> {
    let message = "request not complete within the deadline";
    let mut response = json_error(StatusCode::REQUEST_TIMEOUT, message);
    if http1 {
        let close = HeaderValue::from_static("close");
        response.headers_mut().insert(header::CONNECTION, close);
    }
    response
}

/// Where an HTTP/1 connection stands between its requests: its reader sees bytes arrive, its
/// service sees requests start and end, and its task closes it once [`Self::expired`].
struct RequestClock {
    state: Mutex<ClockState>,
    /// Woken on every change of state, each of which moves the expiry.
    changed: Notify,
    request_deadline: Duration,
    idle_timeout: Duration,
}

#[derive(Clone, Copy, Debug)]
enum ClockState {
    /// No request in progress since this instant.
    Idle(Instant),
    /// The first byte of a request arrived at this instant; its head is still incomplete.
    Head(Instant),
    /// The service has the request; its body deadline is [`DeadlineBody`]'s job.
    Request,
}

impl RequestClock {
    fn new(opts: &ServeOptions) -> Self {
        Self {
            state: Mutex::new(ClockState::Idle(Instant::now())),
            changed: Notify::new(),
            request_deadline: opts.request_deadline,
            idle_timeout: opts.idle_timeout,
        }
    }

    fn state(&self) -> MutexGuard<'_, ClockState> {
        // The state is a plain value, valid whatever a panicking holder was doing.
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }

    fn set(&self, state: ClockState) -> ClockState {
        let previous = std::mem::replace(&mut *self.state(), state);
        self.changed.notify_one();
        previous
    }

    fn on_bytes(&self) {
        let mut state = self.state();
        if let ClockState::Idle(_) = *state {
            *state = ClockState::Head(Instant::now());
            self.changed.notify_one();
        }
    }

    /// When the request now handed to the service sent its first byte. Bytes hyper had buffered
    /// beyond the previous request never passed `on_bytes`, so such a request starts now.
    fn begin_request(&self) -> Instant {
        match self.set(ClockState::Request) {
            ClockState::Head(first_byte) => first_byte,
            ClockState::Idle(_) | ClockState::Request => Instant::now(),
        }
    }

    fn end_request(&self) {
        self.set(ClockState::Idle(Instant::now()));
    }

    /// Resolves once a request head misses its deadline (counted from its first byte, so a client
    /// trickling header bytes is cut off) or the connection has been idle too long.
    async fn expired(&self) -> &'static str {
        loop {
            let changed = self.changed.notified();
            let expiry = match *self.state() {
                ClockState::Idle(since) => Some((since + self.idle_timeout, "idle timeout")),
                ClockState::Head(first_byte) => Some((
                    first_byte + self.request_deadline,
                    "request head not complete within the deadline",
                )),
                ClockState::Request => None,
            };
            let Some((at, reason)) = expiry else {
                changed.await;
                continue;
            };
            tokio::select! {
                biased;
                () = changed => {}
                () = tokio::time::sleep_until(at) => return reason,
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_apiservers_timeout_parameter_is_read_and_bad_ones_ignored() {
        for (query, want) in [
            (Some("timeout=5s"), Some(Duration::from_secs(5))),
            (Some("a=b&timeout=500ms"), Some(Duration::from_millis(500))),
            (Some("timeout=0s"), None),
            (Some("timeout=soon"), None),
            (Some("timeouts=5s"), None),
            (None, None),
        ] {
            assert_eq!(caller_timeout(query), want, "{query:?}");
        }
    }

    #[tokio::test]
    async fn the_connection_transport_reports_no_vectored_writes_even_over_a_socket_that_has_them()
    {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let socket = TcpStream::connect(listener.local_addr().unwrap())
            .await
            .unwrap();
        assert!(socket.is_write_vectored());
        let clock = RequestClock::new(&ServeOptions::default());
        let io = transport(socket, Some(Arc::new(clock)));
        assert!(!io.is_write_vectored());
    }
}
