//! The accept loop: TLS per connection, HTTP/1.1 and HTTP/2 via hyper-util, a total per-request
//! deadline, and graceful shutdown.
//!
//! Each connection runs in its own task, so an error or a panic while serving one connection
//! never reaches the others or the loop.

use std::convert::Infallible;
use std::error::Error as StdError;
use std::future::Future;
use std::io;
use std::net::SocketAddr;
use std::pin::{Pin, pin};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::task::{Context, Poll};
use std::time::Duration;

use axum::Router;
use axum::body::Body;
use axum::http::{HeaderValue, Request, Response, StatusCode, Version, header};
use hyper::body::{Body as HttpBody, Incoming};
use hyper::server::conn::http2;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use hyper_util::server::conn::auto;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::{TcpListener, TcpStream};
use tokio::task::JoinSet;
use tokio::time::{Instant, Sleep};
use tokio_rustls::TlsAcceptor;
use tokio_util::sync::CancellationToken;
use tower::ServiceExt;

use super::body::{AfterRequest, DeadlineBody, SharedBody};
use super::streams::{StreamQueue, WithStreams};
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
    /// Connection tasks that panicked (the server kept running).
    pub panicked: u64,
    /// True when every connection finished within the drain timeout.
    pub drained: bool,
    /// Connections still open at the drain timeout, closed forcibly.
    pub aborted: usize,
}

type BoxError = Box<dyn StdError + Send + Sync>;

/// Why a server could not run.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ServeError {
    /// The listener has no local address, which means it is not a bound socket.
    #[error("listener has no local address: {0}")]
    LocalAddr(#[source] io::Error),
}

/// Serves `app` over TLS on `listener` until `shutdown` completes; then keeps accepting for
/// `shutdown_grace`, closes the listener and waits up to `drain_timeout` for open connections
/// (HTTP/1 keep-alive connections get `Connection: close`, HTTP/2 ones GOAWAY).
pub async fn serve_tls(
    listener: TcpListener,
    tls: Arc<rustls::ServerConfig>,
    app: Router,
    opts: ServeOptions,
    shutdown: impl Future<Output = ()> + Send,
) -> Result<ServeReport, ServeError> {
    serve(
        listener,
        Transport::Tls(TlsAcceptor::from(tls)),
        app,
        opts,
        shutdown,
    )
    .await
}

/// Serves `app` over plain HTTP/1.1 (the admin port) with the same shutdown semantics; pass a zero
/// `shutdown_grace` to close the listener as soon as `shutdown` completes.
pub async fn serve_plain(
    listener: TcpListener,
    app: Router,
    opts: ServeOptions,
    shutdown: impl Future<Output = ()> + Send,
) -> Result<ServeReport, ServeError> {
    serve(listener, Transport::Plain, app, opts, shutdown).await
}

#[derive(Clone)]
enum Transport {
    Plain,
    Tls(TlsAcceptor),
}

async fn serve(
    listener: TcpListener,
    transport: Transport,
    app: Router,
    opts: ServeOptions,
    shutdown: impl Future<Output = ()> + Send,
) -> Result<ServeReport, ServeError> {
    let local = listener.local_addr().map_err(ServeError::LocalAddr)?;
    let tls = matches!(transport, Transport::Tls(_));
    tracing::debug!(%local, tls, "accepting connections");

    let mut connections = Connections {
        server: Arc::new(ConnectionServer::new(transport, app, &opts)),
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
    if !connections.tasks.is_empty() {
        connections
            .reap_until(tokio::time::sleep(DRAIN_SETTLE))
            .await;
    }
    Ok(connections.drain(local, opts.drain_timeout).await)
}

/// The connections of one listener, from accept to drain.
struct Connections {
    server: Arc<ConnectionServer>,
    /// Cancelled when every connection is asked to finish.
    drain: CancellationToken,
    tasks: JoinSet<ConnectionOutcome>,
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

    /// Like [`Self::accept_until`] with the listener gone: only reaps finished connections.
    async fn reap_until(&mut self, stop: impl Future<Output = ()>) {
        let mut stop = pin!(stop);
        loop {
            tokio::select! {
                () = &mut stop => return,
                Some(joined) = self.tasks.join_next() => self.reap(joined),
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
            let accepted = stream
                .set_nonblocking(true)
                .and_then(|()| TcpStream::from_std(stream))
                .map(|stream| (stream, peer));
            if let Ok(accepted) = accepted {
                self.spawn(accepted);
            }
        }
    }

    fn spawn(&mut self, (stream, peer): (TcpStream, SocketAddr)) {
        self.report.connections += 1;
        let (server, drain) = (self.server.clone(), self.drain.clone());
        self.tasks
            .spawn(async move { server.serve(stream, peer, drain).await });
    }

    async fn accept(&mut self, accepted: io::Result<(TcpStream, SocketAddr)>) {
        match accepted {
            Ok(accepted) => self.spawn(accepted),
            Err(error) if is_connection_error(&error) => {
                tracing::debug!(%error, "connection failed before it was accepted");
            }
            Err(error) => {
                tracing::error!(%error, "accept failed, backing off");
                tokio::time::sleep(ACCEPT_BACKOFF).await;
            }
        }
    }

    fn reap(&mut self, joined: Result<ConnectionOutcome, tokio::task::JoinError>) {
        match joined {
            Ok(ConnectionOutcome::Served) => {}
            Ok(ConnectionOutcome::HandshakeFailed) => self.report.handshake_failures += 1,
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
        let deadline = Instant::now() + timeout;
        self.report.drained = loop {
            match tokio::time::timeout_at(deadline, self.tasks.join_next()).await {
                Ok(Some(joined)) => self.reap(joined),
                Ok(None) => break true,
                Err(_elapsed) => break false,
            }
        };
        self.report.aborted = self.tasks.len();
        if self.report.aborted > 0 {
            tracing::warn!(%local, aborted = self.report.aborted, "drain timeout reached, closing remaining connections");
        }
        self.tasks.shutdown().await;
        tracing::info!(%local, report = ?self.report, "server stopped");
        self.report
    }
}

fn is_connection_error(error: &io::Error) -> bool {
    matches!(
        error.kind(),
        io::ErrorKind::ConnectionRefused
            | io::ErrorKind::ConnectionAborted
            | io::ErrorKind::ConnectionReset
    )
}

enum ConnectionOutcome {
    Served,
    HandshakeFailed,
}

/// Everything a connection task needs, shared by all of them.
struct ConnectionServer {
    transport: Transport,
    app: Router,
    request_deadline: Duration,
    handshake_timeout: Duration,
    idle_timeout: Duration,
    /// Set when shutdown starts: HTTP/1 responses then carry `Connection: close`.
    closing: Arc<AtomicBool>,
    http1: auto::Builder<TokioExecutor>,
}

impl ConnectionServer {
    fn new(transport: Transport, app: Router, opts: &ServeOptions) -> Self {
        let mut builder = auto::Builder::new(TokioExecutor::new());
        builder
            .http1()
            .timer(TokioTimer::new())
            .keep_alive(true)
            // hyper starts this clock whenever it waits for a request head, so it would close every
            // keep-alive connection idle for `request_deadline` and count from the end of the last
            // response rather than the first byte; `DeadlineIo` keeps the head deadline instead.
            .header_read_timeout(None);
        // ALPN already told us the protocol; sniffing the preface instead would wait on a silent
        // client with no timeout at all.
        Self {
            transport,
            app,
            request_deadline: opts.request_deadline,
            handshake_timeout: opts.handshake_timeout,
            idle_timeout: opts.idle_timeout,
            closing: Arc::new(AtomicBool::new(false)),
            http1: builder.http1_only(),
        }
    }

    /// One builder per HTTP/2 connection, since each has its own stream queue (see `streams`).
    fn http2(queue: StreamQueue) -> http2::Builder<StreamQueue> {
        let mut builder = http2::Builder::new(queue);
        builder
            .timer(TokioTimer::new())
            .keep_alive_interval(H2_KEEPALIVE_INTERVAL)
            .keep_alive_timeout(H2_KEEPALIVE_TIMEOUT);
        builder
    }

    async fn serve(
        &self,
        stream: TcpStream,
        peer: SocketAddr,
        drain: CancellationToken,
    ) -> ConnectionOutcome {
        if let Err(error) = stream.set_nodelay(true) {
            tracing::debug!(%peer, %error, "cannot set TCP_NODELAY");
        }
        match &self.transport {
            Transport::Plain => self.serve_http(stream, false, peer, drain).await,
            Transport::Tls(acceptor) => {
                let stream =
                    match tokio::time::timeout(self.handshake_timeout, acceptor.accept(stream))
                        .await
                    {
                        Ok(Ok(stream)) => stream,
                        Ok(Err(error)) => {
                            tracing::debug!(%peer, %error, "TLS handshake failed");
                            return ConnectionOutcome::HandshakeFailed;
                        }
                        Err(_elapsed) => {
                            tracing::debug!(%peer, "TLS handshake timed out");
                            return ConnectionOutcome::HandshakeFailed;
                        }
                    };
                // RFC 9113 §3.2: over TLS, HTTP/2 is only spoken when ALPN selected it.
                let h2 = stream.get_ref().1.alpn_protocol() == Some(ALPN_H2);
                self.serve_http(stream, h2, peer, drain).await
            }
        }
    }

    async fn serve_http<I>(
        &self,
        io: I,
        h2: bool,
        peer: SocketAddr,
        drain: CancellationToken,
    ) -> ConnectionOutcome
    where
        I: AsyncRead + AsyncWrite + Unpin + Send + 'static,
    {
        let app = self.app.clone();
        let deadline = self.request_deadline;
        let first_request = CancellationToken::new();
        let finish = finish_requested(drain, first_request.clone());
        let result = if h2 {
            // Streams are multiplexed, so there is no connection-wide "between requests": each
            // stream's body deadline starts when its headers arrive.
            let service = hyper::service::service_fn(move |request: Request<Incoming>| {
                first_request.cancel();
                handle(app.clone(), request, deadline, None, None)
            });
            let queue = StreamQueue::default();
            let connection =
                Self::http2(queue.clone()).serve_connection(TokioIo::new(Unvectored(io)), service);
            let connection = until_finish(connection, finish, |c| c.graceful_shutdown());
            WithStreams::new(connection, queue)
                .await
                .map_err(BoxError::from)
        } else {
            let clock = Arc::new(RequestClock::new());
            let closing = self.closing.clone();
            let io = DeadlineIo::new(io, clock.clone(), deadline, self.idle_timeout);
            let service = hyper::service::service_fn(move |request: Request<Incoming>| {
                first_request.cancel();
                handle(
                    app.clone(),
                    request,
                    deadline,
                    Some(clock.clone()),
                    Some(closing.clone()),
                )
            });
            let connection = self.http1.serve_connection(TokioIo::new(io), service);
            until_finish(connection, finish, |c| c.graceful_shutdown()).await
        };
        if let Err(error) = result {
            tracing::debug!(%peer, %error, "connection ended with an error");
        }
        ConnectionOutcome::Served
    }
}

/// Resolves when a connection should be asked to finish: once the server drains, and the
/// connection has started its first request or [`FIRST_REQUEST_SETTLE`] has passed.
async fn finish_requested(drain: CancellationToken, first_request: CancellationToken) {
    drain.cancelled().await;
    let _ = tokio::time::timeout(FIRST_REQUEST_SETTLE, first_request.cancelled()).await;
}

/// Drives `connection` to its end, asking it to finish gracefully once `finish` resolves.
async fn until_finish<C, E>(
    connection: C,
    finish: impl Future<Output = ()>,
    graceful_shutdown: impl FnOnce(Pin<&mut C>),
) -> Result<(), E>
where
    C: Future<Output = Result<(), E>>,
{
    let mut connection = pin!(connection);
    tokio::select! {
        biased;
        result = connection.as_mut() => return result,
        () = finish => graceful_shutdown(connection.as_mut()),
    }
    connection.await
}

/// Runs one request through `app` with its body on a deadline counted from the request's first
/// byte when the connection's clock knows it (HTTP/1), else from the arrival of its head.
async fn handle(
    app: Router,
    request: Request<Incoming>,
    deadline: Duration,
    clock: Option<Arc<RequestClock>>,
    closing: Option<Arc<AtomicBool>>,
) -> Result<Response<Body>, Infallible> {
    let http1 = request.version() < Version::HTTP_2;
    let first_byte = clock
        .as_ref()
        .map_or_else(Instant::now, |clock| clock.begin_request());
    let expired = Arc::new(AtomicBool::new(false));
    let (parts, body) = request.into_parts();
    // The apiserver stops waiting after its `timeoutSeconds`, which it sends as `?timeout=`: a body
    // still arriving after that would be reviewed for nobody, so the earlier deadline wins.
    let deadline = caller_timeout(parts.uri.query()).map_or(deadline, |t| t.min(deadline));
    let body = DeadlineBody::new(body, first_byte + deadline, expired.clone());
    // Over HTTP/2 the answer keeps the request's stream open until its body is read (see `body`);
    // HTTP/1 needs no help, hyper reads or closes what a handler left.
    let (request, unread) = if http1 {
        (Request::from_parts(parts, Body::new(body)), None)
    } else {
        let shared = SharedBody::new(body);
        (
            Request::from_parts(parts, Body::new(shared.clone())),
            Some(shared),
        )
    };
    let response = app.oneshot(request).await;
    if let Some(clock) = clock {
        clock.end_request();
    }
    if expired.load(Ordering::Acquire) {
        return Ok(request_timeout(http1));
    }
    let mut response = response?;
    if closing.is_some_and(|closing| closing.load(Ordering::Acquire)) {
        response
            .headers_mut()
            .insert(header::CONNECTION, HeaderValue::from_static("close"));
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
        .and_then(|value| crate::cli::parse_duration(value).ok())
        .filter(|timeout| !timeout.is_zero())
}

/// The answer once a body missed its deadline, whatever the handler made of the error it got.
/// On HTTP/1 `Connection: close` makes hyper close the connection after writing it: the rest of
/// the late body is still in flight, and the connection cannot be reused after it.
fn request_timeout(http1: bool) -> Response<Body> {
    let mut response = Response::new(Body::from(
        "{\"error\":\"request not complete within the deadline\"}",
    ));
    *response.status_mut() = StatusCode::REQUEST_TIMEOUT;
    let headers = response.headers_mut();
    headers.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    if http1 {
        headers.insert(header::CONNECTION, HeaderValue::from_static("close"));
    }
    response
}

/// Where an HTTP/1 connection stands between its requests, shared by its [`DeadlineIo`] (which
/// sees bytes arrive) and its service (which sees requests start and end).
struct RequestClock {
    state: Mutex<ClockState>,
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
    fn new() -> Self {
        Self {
            state: Mutex::new(ClockState::Idle(Instant::now())),
        }
    }

    fn state(&self) -> MutexGuard<'_, ClockState> {
        // The state is a plain value, valid whatever a panicking holder was doing.
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }

    fn on_bytes(&self) {
        let mut state = self.state();
        if let ClockState::Idle(_) = *state {
            *state = ClockState::Head(Instant::now());
        }
    }

    /// When the request now handed to the service sent its first byte. Bytes hyper had buffered
    /// beyond the previous request never passed `on_bytes`, so such a request starts now.
    fn begin_request(&self) -> Instant {
        match std::mem::replace(&mut *self.state(), ClockState::Request) {
            ClockState::Head(first_byte) => first_byte,
            ClockState::Idle(_) | ClockState::Request => Instant::now(),
        }
    }

    fn end_request(&self) {
        *self.state() = ClockState::Idle(Instant::now());
    }

    fn expiry(
        &self,
        request_deadline: Duration,
        idle_timeout: Duration,
    ) -> Option<(Instant, &'static str)> {
        match *self.state() {
            ClockState::Idle(since) => Some((since + idle_timeout, "idle timeout")),
            ClockState::Head(first_byte) => Some((
                first_byte + request_deadline,
                "request head not complete within the deadline",
            )),
            ClockState::Request => None,
        }
    }
}

/// The IO under an HTTP/1 connection: it fails the read hyper is waiting on once a request head
/// misses its deadline (counted from its first byte, so a client trickling header bytes is cut off)
/// or once the connection has been idle too long. hyper then drops the connection.
struct DeadlineIo<T> {
    inner: T,
    clock: Arc<RequestClock>,
    request_deadline: Duration,
    idle_timeout: Duration,
    timer: Pin<Box<Sleep>>,
    armed_for: Option<Instant>,
}

impl<T> DeadlineIo<T> {
    fn new(
        inner: T,
        clock: Arc<RequestClock>,
        request_deadline: Duration,
        idle_timeout: Duration,
    ) -> Self {
        Self {
            inner,
            clock,
            request_deadline,
            idle_timeout,
            timer: Box::pin(tokio::time::sleep(Duration::ZERO)),
            armed_for: None,
        }
    }

    fn poll_expiry(&mut self, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let Some((at, reason)) = self.clock.expiry(self.request_deadline, self.idle_timeout) else {
            return Poll::Pending;
        };
        if self.armed_for != Some(at) {
            self.timer.as_mut().reset(at);
            self.armed_for = Some(at);
        }
        match self.timer.as_mut().poll(cx) {
            Poll::Ready(()) => Poll::Ready(Err(io::Error::new(io::ErrorKind::TimedOut, reason))),
            Poll::Pending => Poll::Pending,
        }
    }
}

impl<T: AsyncRead + Unpin> AsyncRead for DeadlineIo<T> {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        let before = buf.filled().len();
        match Pin::new(&mut this.inner).poll_read(cx, buf) {
            Poll::Ready(Ok(())) => {
                if buf.filled().len() > before {
                    this.clock.on_bytes();
                }
                Poll::Ready(Ok(()))
            }
            Poll::Ready(Err(error)) => Poll::Ready(Err(error)),
            Poll::Pending => this.poll_expiry(cx),
        }
    }
}

/// Vectored writes are deliberately not passed through: see [`super::unvectored`] for why the
/// server's HTTP/1 and HTTP/2 connections are better off without them.
impl<T: AsyncWrite + Unpin> AsyncWrite for DeadlineIo<T> {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.get_mut().inner).poll_write(cx, buf)
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().inner).poll_flush(cx)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().inner).poll_shutdown(cx)
    }
}

/// The shutdown trigger of a process: cancelled on the first SIGTERM or SIGINT.
///
/// Flip `/readyz` to 503 and start [`serve_tls`]'s shutdown when it is cancelled. A second signal
/// exits the process at once with status 1, for an operator who does not want to wait for the drain.
pub fn spawn_signal_handler() -> io::Result<CancellationToken> {
    use tokio::signal::unix::{SignalKind, signal};
    let mut term = signal(SignalKind::terminate())?;
    let mut int = signal(SignalKind::interrupt())?;
    let token = CancellationToken::new();
    let first = token.clone();
    tokio::spawn(async move {
        let name = tokio::select! {
            _ = term.recv() => "SIGTERM",
            _ = int.recv() => "SIGINT",
        };
        tracing::info!(
            signal = name,
            "shutting down; send the signal again to exit at once"
        );
        first.cancel();
        let name = tokio::select! {
            _ = term.recv() => "SIGTERM",
            _ = int.recv() => "SIGINT",
        };
        tracing::warn!(signal = name, "second signal, exiting without draining");
        std::process::exit(1);
    });
    Ok(token)
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
    async fn the_http1_transport_reports_no_vectored_writes_even_over_a_socket_that_has_them() {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let socket = TcpStream::connect(listener.local_addr().unwrap())
            .await
            .unwrap();
        assert!(socket.is_write_vectored());
        let clock = Arc::new(RequestClock::new());
        let io = DeadlineIo::new(
            socket,
            clock,
            Duration::from_secs(1),
            Duration::from_secs(1),
        );
        assert!(!io.is_write_vectored());
    }
}
