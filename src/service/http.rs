//! The HTTP server's own accept loop: HTTP/1.1 through hyper with the limits that keep a slow,
//! broken or hostile client from holding the server (or the file descriptors the sensors need).
//!
//! - A connection must send its request headers within [`HEADER_READ_TIMEOUT`] (hyper's timer;
//!   it also runs while a kept-alive connection waits for its next request, so the same bound
//!   is the idle timeout), and at most `MAX_BUFFER_BYTES` of them.
//! - A request body must arrive whole within [`BODY_TIMEOUT`] of its headers (408 otherwise), and
//!   one declared longer than [`MAX_REQUEST_BODY_BYTES`] is answered 413 without being read, so
//!   `Expect: 100-continue` gets no `100 Continue`.
//! - At most [`connection_limit`] connections are open at once: 256, or half the open-file limit
//!   when that is lower, so the sensors keep the other half. At the cap, the connection that has
//!   waited longest without a request running (at least [`EVICTION_GRACE`]) is closed to make
//!   room (the new one waits, up to [`EVICTION_WAIT`], until the evicted one's socket is closed,
//!   so the cap bounds descriptors, not just table entries); when none has, the new connection
//!   is closed at once. Neither waits in a queue.
//! - TLS handshakes run inside the connection's slot, under [`TLS_HANDSHAKE_TIMEOUT`].
//! - On stop, the listener closes, idle connections close, and requests running get up to
//!   [`SHUTDOWN_DRAIN`] to finish.
//!
//! It knows nothing of routes or auth: it serves the router it is handed. What it turns away is
//! counted in `icewatch_http_refused_total{reason}`.

use std::collections::HashMap;
use std::convert::Infallible;
use std::net::SocketAddr;
use std::pin::{Pin, pin};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use axum::Router;
use axum::body::Body;
use axum::http::{HeaderValue, Request, StatusCode, header};
use axum::response::{IntoResponse, Response};
use hyper::body::{Body as _, Frame, Incoming, SizeHint};
use hyper_util::rt::{TokioIo, TokioTimer};
use prometheus::{IntCounter, IntCounterVec};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::Notify;
use tokio::time::Sleep;
use tokio_rustls::TlsAcceptor;
use tokio_util::sync::CancellationToken;
use tower::ServiceExt;

/// How long a client may take to send a request's headers, counted from when the server starts
/// waiting for them; also how long a kept-alive connection may sit idle.
pub const HEADER_READ_TIMEOUT: Duration = Duration::from_secs(10);
/// How long a request body may take to arrive whole, counted from the end of its headers.
pub const BODY_TIMEOUT: Duration = Duration::from_secs(30);
/// How long a TLS handshake may take.
pub const TLS_HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);
/// The most connections open at once (see [`connection_limit`] for the open-file bound).
pub const MAX_CONNECTIONS: usize = 256;
/// The cap never goes below this, however low the open-file limit.
const MIN_CONNECTIONS: usize = 16;
/// The largest request body any route reads (`POST /api/v1/lineage`, 1 MiB); routes may set
/// lower limits of their own.
pub const MAX_REQUEST_BODY_BYTES: usize = 1024 * 1024;
/// At the cap, a connection becomes evictable once it has waited this long with no request
/// running: a real client sends its request at once, a stalled one is the first to go.
pub const EVICTION_GRACE: Duration = Duration::from_secs(1);
/// After stop, how long running requests may finish before their connections are dropped.
pub const SHUTDOWN_DRAIN: Duration = Duration::from_secs(10);
/// The most a connection buffers: request headers beyond it get 431. hyper's default (~400 KiB)
/// would let the capped connections hold about 100 MiB of half-sent headers.
const MAX_BUFFER_BYTES: usize = 64 * 1024;
/// At the cap, how long a new connection waits for an evicted one to close before it is refused.
const EVICTION_WAIT: Duration = Duration::from_secs(1);
/// After an accept error other than a client giving up (out of file descriptors, say).
const ACCEPT_BACKOFF: Duration = Duration::from_secs(1);

/// The connection cap for an open-file limit of `open_files` (`None`: unlimited or unknown):
/// [`MAX_CONNECTIONS`], or half the limit when that is lower, but at least [`MIN_CONNECTIONS`].
pub fn connection_limit(open_files: Option<u64>) -> usize {
    let half = open_files.map_or(usize::MAX, |limit| usize::try_from(limit / 2).unwrap_or(usize::MAX));
    half.clamp(MIN_CONNECTIONS, MAX_CONNECTIONS)
}

/// This process's soft limit on open files.
fn open_file_limit() -> Option<u64> {
    rustix::process::getrlimit(rustix::process::Resource::Nofile).current
}

/// The counters of `icewatch_http_refused_total`, one per reason.
#[derive(Clone)]
pub struct Refusals {
    /// A new connection closed at once: the cap was reached and none could be evicted.
    connection_limit: IntCounter,
    /// A waiting connection closed to make room for a new one.
    evicted: IntCounter,
    /// A connection closed because its first request's headers did not arrive in time.
    header_timeout: IntCounter,
    /// A TLS handshake that failed to finish in time.
    handshake_timeout: IntCounter,
    /// A request answered 408 because its body did not arrive in time.
    body_timeout: IntCounter,
    /// A request answered 413 because it declared a body over the limit.
    body_too_large: IntCounter,
}

impl Refusals {
    pub fn new(family: &IntCounterVec) -> Refusals {
        let reason = |reason: &str| family.with_label_values(&[reason]);
        Refusals {
            connection_limit: reason("connection_limit"),
            evicted: reason("evicted"),
            header_timeout: reason("header_timeout"),
            handshake_timeout: reason("handshake_timeout"),
            body_timeout: reason("body_timeout"),
            body_too_large: reason("body_too_large"),
        }
    }
}

/// Serves `router` on `listener` (through `tls` when set) until `stop`, then drains.
pub async fn serve(
    listener: TcpListener,
    tls: Option<TlsAcceptor>,
    router: Router,
    refusals: Refusals,
    stop: CancellationToken,
) -> std::io::Result<()> {
    let connections = Arc::new(Connections::new(connection_limit(open_file_limit())));
    tracing::debug!(limit = connections.limit, "accepting connections");
    loop {
        let accepted = tokio::select! {
            _ = stop.cancelled() => break,
            accepted = listener.accept() => accepted,
        };
        let (stream, peer) = match accepted {
            Ok(connection) => connection,
            Err(error) if is_client_gone(&error) => continue,
            Err(error) => {
                // Out of file descriptors and the like: the connection waits in the kernel's
                // queue meanwhile, and the log says why.
                tracing::warn!(%error, "failed to accept a connection");
                tokio::select! {
                    _ = stop.cancelled() => break,
                    _ = tokio::time::sleep(ACCEPT_BACKOFF) => continue,
                }
            }
        };
        let slot = loop {
            // Created before the table is read, so a slot freed in between still wakes it.
            let freed = connections.closed.notified();
            match connections.admit(&refusals) {
                Admission::Admitted(slot) => break Some(slot),
                Admission::Refused => break None,
                // An evicted connection frees its slot only once its socket is closed: waiting
                // for that keeps the descriptors held by connections within the cap, also in a
                // burst that evicts faster than the evicted tasks run.
                Admission::Evicting => tokio::select! {
                    _ = stop.cancelled() => break None,
                    freed = tokio::time::timeout(EVICTION_WAIT, freed) => {
                        if freed.is_err() {
                            break None;
                        }
                    }
                },
            }
        };
        let Some(slot) = slot else {
            refusals.connection_limit.inc();
            tracing::debug!(%peer, limit = connections.limit, "connection refused: too many open");
            continue;
        };
        let _ = stream.set_nodelay(true);
        let connection = Connection { slot: Arc::new(slot), router: router.clone(), refusals: refusals.clone() };
        tokio::spawn(connection.run(stream, peer, tls.clone(), stop.clone()));
    }
    drop(listener);
    if tokio::time::timeout(SHUTDOWN_DRAIN, connections.all_closed()).await.is_err() {
        tracing::warn!(open = connections.open(), "HTTP connections still open after the drain; dropping them");
    }
    Ok(())
}

/// Accept errors that concern one client only: accept the next one at once.
fn is_client_gone(error: &std::io::Error) -> bool {
    use std::io::ErrorKind::{ConnectionAborted, ConnectionRefused, ConnectionReset};
    matches!(error.kind(), ConnectionAborted | ConnectionRefused | ConnectionReset)
}

// ---------------------------------------------------------------------------------------------
// One connection.

struct Connection {
    slot: Arc<Slot>,
    router: Router,
    refusals: Refusals,
}

impl Connection {
    async fn run(self, stream: TcpStream, peer: SocketAddr, tls: Option<TlsAcceptor>, stop: CancellationToken) {
        let Some(acceptor) = tls else { return self.serve(TokioIo::new(stream), peer, stop).await };
        let handshake = tokio::select! {
            handshake = tokio::time::timeout(TLS_HANDSHAKE_TIMEOUT, acceptor.accept(stream)) => handshake,
            _ = self.slot.evicted.cancelled() => return,
            _ = stop.cancelled() => return,
        };
        match handshake {
            Ok(Ok(stream)) => self.serve(TokioIo::new(stream), peer, stop).await,
            Ok(Err(error)) => tracing::debug!(%peer, %error, "TLS handshake failed"),
            Err(_) => {
                self.refusals.handshake_timeout.inc();
                tracing::debug!(%peer, "TLS handshake timed out");
            }
        }
    }

    async fn serve<I>(self, io: I, peer: SocketAddr, stop: CancellationToken)
    where
        I: hyper::rt::Read + hyper::rt::Write + Unpin + Send + 'static,
    {
        let Connection { slot, router, refusals } = self;
        let service = {
            let (slot, refusals) = (slot.clone(), refusals.clone());
            hyper::service::service_fn(move |request| handle(router.clone(), slot.clone(), refusals.clone(), request))
        };
        let mut builder = hyper::server::conn::http1::Builder::new();
        builder
            .timer(TokioTimer::new())
            .header_read_timeout(HEADER_READ_TIMEOUT)
            .keep_alive(true)
            .max_buf_size(MAX_BUFFER_BYTES);
        let mut connection = pin!(builder.serve_connection(io, service));
        let result = tokio::select! {
            result = connection.as_mut() => result,
            // Dropped mid-wait: no request of its was running when it was chosen.
            _ = slot.evicted.cancelled() => return,
            _ = stop.cancelled() => {
                connection.as_mut().graceful_shutdown();
                connection.await
            }
        };
        match result {
            Ok(()) => {}
            // A kept-alive connection idle for the header timeout ends the same way: only one
            // that never finished a request's headers counts as refused.
            Err(error) if error.is_timeout() => {
                if slot.requests.load(Ordering::Relaxed) == 0 {
                    refusals.header_timeout.inc();
                    tracing::debug!(%peer, "connection closed: no request headers in time");
                }
            }
            Err(error) => tracing::debug!(%peer, %error, "HTTP connection ended with an error"),
        }
    }
}

/// One request: refuse a declared body over the limit, put the body under its deadline, run the
/// router, answer 408 if the body missed the deadline.
async fn handle(
    router: Router,
    slot: Arc<Slot>,
    refusals: Refusals,
    request: Request<Incoming>,
) -> Result<Response, Infallible> {
    let _running = slot.request_started();
    if request.body().size_hint().lower() > MAX_REQUEST_BODY_BYTES as u64 {
        refusals.body_too_large.inc();
        let message = format!("request body over the limit of {MAX_REQUEST_BODY_BYTES} bytes\n");
        return Ok(closing(StatusCode::PAYLOAD_TOO_LARGE, message));
    }
    let late = Arc::new(AtomicBool::new(false));
    let request = request.map(|body| Body::new(DeadlineBody::new(body, BODY_TIMEOUT, late.clone())));
    let response = match router.oneshot(request).await {
        Ok(response) => response,
        Err(never) => match never {},
    };
    if late.load(Ordering::Relaxed) {
        refusals.body_timeout.inc();
        let message = format!("request body not received within {} s\n", BODY_TIMEOUT.as_secs());
        return Ok(closing(StatusCode::REQUEST_TIMEOUT, message));
    }
    Ok(response)
}

/// An answer after which the connection closes (the rest of the body is never read).
fn closing(status: StatusCode, message: String) -> Response {
    (status, [(header::CONNECTION, HeaderValue::from_static("close"))], message).into_response()
}

/// A request body that fails once `deadline` passes, setting `late`.
struct DeadlineBody {
    body: Incoming,
    deadline: Pin<Box<Sleep>>,
    late: Arc<AtomicBool>,
}

impl DeadlineBody {
    fn new(body: Incoming, within: Duration, late: Arc<AtomicBool>) -> DeadlineBody {
        DeadlineBody { body, deadline: Box::pin(tokio::time::sleep(within)), late }
    }
}

#[derive(Debug, thiserror::Error)]
#[error("the request body did not arrive within {} s", BODY_TIMEOUT.as_secs())]
struct BodyTimeout;

impl hyper::body::Body for DeadlineBody {
    type Data = axum::body::Bytes;
    type Error = axum::BoxError;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        context: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Self::Data>, Self::Error>>> {
        // The deadline first: a client trickling bytes must not keep the body "ready" past it.
        if self.deadline.as_mut().poll(context).is_ready() {
            self.late.store(true, Ordering::Relaxed);
            return Poll::Ready(Some(Err(BodyTimeout.into())));
        }
        Pin::new(&mut self.body).poll_frame(context).map(|frame| frame.map(|frame| frame.map_err(Into::into)))
    }

    fn is_end_stream(&self) -> bool {
        self.body.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.body.size_hint()
    }
}

// ---------------------------------------------------------------------------------------------
// The connection table.

/// The open connections, each with when it last started waiting for its client (none while a
/// request runs), and the token that evicts it.
struct Connections {
    limit: usize,
    next_id: AtomicU64,
    open: Mutex<HashMap<u64, Waiting>>,
    closed: Notify,
}

struct Waiting {
    /// `None` while a request runs.
    since: Option<Instant>,
    evict: CancellationToken,
    /// Evicted, its task not yet done closing it.
    evicting: bool,
}

/// What [`Connections::admit`] decided for a new connection.
enum Admission {
    Admitted(Slot),
    /// A connection is being evicted to make room: wait for a slot to free, then ask again.
    Evicting,
    Refused,
}

/// A connection's place in [`Connections`], freed on drop.
struct Slot {
    id: u64,
    connections: Arc<Connections>,
    evicted: CancellationToken,
    /// Requests started on this connection.
    requests: AtomicU64,
}

impl Connections {
    fn new(limit: usize) -> Connections {
        Connections { limit, next_id: AtomicU64::new(0), open: Mutex::new(HashMap::new()), closed: Notify::new() }
    }

    fn table(&self) -> std::sync::MutexGuard<'_, HashMap<u64, Waiting>> {
        self.open.lock().unwrap_or_else(PoisonError::into_inner)
    }

    fn open(&self) -> usize {
        self.table().len()
    }

    /// A slot for a new connection when there is room. At the cap, evicts the connection that
    /// has waited longest (at least [`EVICTION_GRACE`]) and says to wait for a slot to free; an
    /// evicted connection keeps its slot until its socket is closed. Refused when the cap is
    /// reached and no connection is or can be evicted.
    fn admit(self: &Arc<Self>, refusals: &Refusals) -> Admission {
        let now = Instant::now();
        let mut open = self.table();
        if open.len() >= self.limit {
            let oldest = open
                .iter()
                .filter(|(_, waiting)| !waiting.evicting)
                .filter_map(|(id, waiting)| Some((*id, waiting.since?)))
                .filter(|(_, since)| now.duration_since(*since) >= EVICTION_GRACE)
                .min_by_key(|(_, since)| *since);
            if let Some(waiting) = oldest.and_then(|(id, _)| open.get_mut(&id)) {
                waiting.evicting = true;
                waiting.evict.cancel();
                refusals.evicted.inc();
                return Admission::Evicting;
            }
            if open.values().any(|waiting| waiting.evicting) {
                return Admission::Evicting;
            }
            return Admission::Refused;
        }
        let id = self.next_id.fetch_add(1, Ordering::Relaxed);
        let evicted = CancellationToken::new();
        open.insert(id, Waiting { since: Some(now), evict: evicted.clone(), evicting: false });
        Admission::Admitted(Slot { id, connections: self.clone(), evicted, requests: AtomicU64::new(0) })
    }

    fn set_since(&self, id: u64, since: Option<Instant>) {
        if let Some(waiting) = self.table().get_mut(&id) {
            waiting.since = since;
        }
    }

    /// Resolves once no connection holds a slot.
    async fn all_closed(&self) {
        loop {
            let closed = self.closed.notified();
            if self.open() == 0 {
                return;
            }
            closed.await;
        }
    }
}

impl Slot {
    /// Marks a request running until the guard drops, then waiting again.
    fn request_started(&self) -> RequestRunning<'_> {
        self.requests.fetch_add(1, Ordering::Relaxed);
        self.connections.set_since(self.id, None);
        RequestRunning { slot: self }
    }
}

impl Drop for Slot {
    fn drop(&mut self) {
        self.connections.table().remove(&self.id);
        self.connections.closed.notify_waiters();
    }
}

struct RequestRunning<'a> {
    slot: &'a Slot,
}

impl Drop for RequestRunning<'_> {
    fn drop(&mut self) {
        self.slot.connections.set_since(self.slot.id, Some(Instant::now()));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn refusals() -> (IntCounterVec, Refusals) {
        let family = IntCounterVec::new(prometheus::Opts::new("refused", "refused"), &["reason"]).unwrap();
        let refusals = Refusals::new(&family);
        (family, refusals)
    }

    #[test]
    fn the_cap_is_half_the_open_file_limit_within_bounds() {
        assert_eq!(connection_limit(None), MAX_CONNECTIONS);
        assert_eq!(connection_limit(Some(1_048_576)), MAX_CONNECTIONS);
        assert_eq!(connection_limit(Some(1024)), MAX_CONNECTIONS);
        assert_eq!(connection_limit(Some(256)), 128);
        assert_eq!(connection_limit(Some(20)), MIN_CONNECTIONS);
    }

    impl Admission {
        fn slot(self) -> Option<Slot> {
            match self {
                Admission::Admitted(slot) => Some(slot),
                _ => None,
            }
        }
    }

    #[test]
    fn at_the_cap_the_longest_waiting_connection_makes_room_and_busy_ones_stay() {
        let (family, refusals) = refusals();
        let connections = Arc::new(Connections::new(2));
        let busy = connections.admit(&refusals).slot().unwrap();
        let _running = busy.request_started();
        let waiting = connections.admit(&refusals).slot().unwrap();
        // Both are younger than the grace: the third is refused.
        assert!(matches!(connections.admit(&refusals), Admission::Refused));
        // Once the waiting one is old enough, it is the one evicted; the busy one never is.
        let old = Instant::now().checked_sub(EVICTION_GRACE * 2).unwrap();
        connections.set_since(waiting.id, Some(old));
        assert!(matches!(connections.admit(&refusals), Admission::Evicting));
        assert!(waiting.evicted.is_cancelled() && !busy.evicted.is_cancelled());
        assert_eq!(family.with_label_values(&["evicted"]).get(), 1);
        // Until the evicted connection is closed (its slot dropped) it holds its place: the
        // newcomer waits, and no second connection is evicted for it.
        assert!(matches!(connections.admit(&refusals), Admission::Evicting));
        assert_eq!(family.with_label_values(&["evicted"]).get(), 1);
        assert_eq!(connections.open(), 2);
        drop(waiting);
        let newcomer = connections.admit(&refusals).slot().unwrap();
        assert_eq!(connections.open(), 2);
        assert!(matches!(connections.admit(&refusals), Admission::Refused));
        drop(newcomer);
        assert_eq!(connections.open(), 1);
    }

    #[tokio::test]
    async fn all_closed_resolves_when_the_last_slot_drops() {
        let (_, refusals) = refusals();
        let connections = Arc::new(Connections::new(4));
        let slot = connections.admit(&refusals).slot().unwrap();
        let waiter = tokio::spawn({
            let connections = connections.clone();
            async move { connections.all_closed().await }
        });
        tokio::task::yield_now().await;
        assert!(!waiter.is_finished());
        drop(slot);
        tokio::time::timeout(Duration::from_secs(5), waiter).await.unwrap().unwrap();
    }
}
