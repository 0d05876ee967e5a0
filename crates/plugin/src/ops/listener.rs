//! What every listener does before HTTP: a bound on open connections, an optional check of the
//! peer's address at accept, and a deadline and a size bound for each request head (the
//! deadline is also the idle keep-alive timeout).
//!
//! pingora holds ~30 KB per connection, waits 60 s per read with no deadline for a whole
//! request head, and lets a head grow to 1 MiB, so idle, byte-a-second or huge-head connections
//! could hold memory forever (1,024 partial 1 MiB heads took 1.1 GB). [`Limited`] wraps any
//! pingora [`ServerApp`]:
//!
//! - beyond `max_connections` open connections, a new one is closed at once (counted in
//!   `paysign_connections_refused_total{listener}`): in pingora's accept loop, before it
//!   allocates the connection's buffers ([`Limited::connection_filter`]; a flood of 15,000
//!   connections otherwise allocated ~200 MB for a moment), and again exactly when the
//!   connection reaches the app (the filter's check and the count are not one atomic step);
//! - a peer whose address the listener's [`PeerCheck`] refuses is closed in the accept loop
//!   too, so it never takes a slot (the notification listener's `allow_from`);
//! - each connection's stream is wrapped in a [`HeadDeadline`]: from the first read of a
//!   request (or of the wait for the next one on a kept-alive connection) until the app is
//!   handed the parsed head ([`request_parsed`]) — pingora's parser decides, not a byte pattern:
//!   blank lines before a request line do not end a head — the head must arrive within
//!   `head_timeout`, or the read fails and pingora closes the connection (counted in
//!   `paysign_header_timeouts_total{listener}`); and it may not exceed `max_head_bytes`, or it
//!   is answered 431 and closed. pingora is never given more than `max_head_bytes + 1` bytes
//!   of a head, so its buffer (and the re-parse of it on every read) stays that small; and all
//!   unfinished heads of a listener together hold at most [`HEAD_BUDGET`] (beyond: 503).
//!   Bodies have their own timeouts (`client_body_timeout_ms`).
//! - pingora answers a head its parser refuses with a bare 400 of its own (and `CONNECT` with a
//!   bare 405); that answer is replaced by paysign's (JSON error, `X-Request-Id`,
//!   `X-Paysign-Delivery: not-sent`); its HTTP apps (admin, notifications) close such a
//!   connection without a word, and get the same answer.

use std::future::Future;
use std::io;
use std::net::IpAddr;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use async_trait::async_trait;
use pingora::apps::ServerApp;
use pingora::listeners::{ConnectionFilter, L4BufferSettings, ListenerConfig};
use pingora::server::ShutdownWatch;
use pingora::services::listening::Service;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};

use crate::error::GatewayError;
use crate::metrics::{Listener, ListenerMetrics, Metrics};

/// Connection limits of one listener.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    /// Open connections at most; beyond, a new one is closed at accept.
    pub max_connections: usize,
    /// A request head must arrive within this (also the keep-alive idle timeout).
    pub head_timeout: Duration,
    /// A request head (request line, headers and the blank line, with any blank lines before
    /// it) may be at most this long; beyond, 431.
    pub max_head_bytes: usize,
}

impl Limits {
    /// The limits a configuration gives its proxy and notification listeners
    /// (`max_connections`, `header_timeout_ms`, `max_header_bytes`).
    pub fn of(config: &crate::config::Config) -> Self {
        Limits { max_connections: config.max_connections, head_timeout: config.header_timeout, max_head_bytes: config.max_header_bytes }
    }
}

/// At most this many bytes of unfinished heads are held per listener (at least one whole head):
/// 1,024 connections of 8 KiB heads (the defaults) stay below it; a `max_header_bytes` raised
/// towards pingora's 1 MiB does not multiply by `max_connections`.
pub const HEAD_BUDGET: usize = 16 * 1024 * 1024;

/// Decides from the peer's address alone, at accept, whether a connection may be served.
pub type PeerCheck = Arc<dyn Fn(IpAddr) -> bool + Send + Sync>;

/// A pingora app behind a connection bound, a peer check and request-head bounds.
pub struct Limited<A> {
    inner: Arc<A>,
    bound: Arc<ConnectionBound>,
    head: HeadLimits,
}

#[derive(Debug, Clone, Copy)]
struct HeadLimits {
    timeout: Duration,
    max_bytes: usize,
}

impl<A> Limited<A> {
    /// `metrics`: the instance's, counted under `listener`.
    pub fn new(inner: A, listener: Listener, limits: Limits, metrics: &Metrics) -> Self {
        let bound = Arc::new(ConnectionBound {
            open: AtomicUsize::new(0),
            max: limits.max_connections,
            metrics: metrics.listener(listener),
            peer_check: std::sync::OnceLock::new(),
            head_bytes: AtomicUsize::new(0),
            head_budget: HEAD_BUDGET.max(limits.max_head_bytes + 1),
        });
        let head = HeadLimits { timeout: limits.head_timeout, max_bytes: limits.max_head_bytes.max(1) };
        Limited { inner: Arc::new(inner), bound, head }
    }

    /// Refuses peers `check` refuses, in the accept loop (before [`Self::connection_filter`]
    /// is taken).
    pub fn with_peer_check(self, check: PeerCheck) -> Self {
        // Set at most once (the first check stays); it holds even where the bound is shared.
        let _ = self.bound.peer_check.set(check);
        self
    }

    /// The same bound for pingora's accept loop (`Service::set_connection_filter`): a
    /// connection beyond it (or from a refused peer) is closed before pingora allocates
    /// anything for it.
    pub fn connection_filter(&self) -> Arc<dyn ConnectionFilter> {
        self.bound.clone()
    }
}

impl<A: ServerApp + Send + Sync + 'static> Limited<A> {
    /// A pingora service of this app whose listeners apply its safeguards: the bound and the
    /// peer check in the accept loop first (nothing allocated for a refused connection), then
    /// exactly. Add its listeners with [`Service::add_listener`] (e.g. [`tcp_listener`]).
    pub fn into_service(self, name: &str) -> Service<Limited<A>> {
        let filter = self.connection_filter();
        let mut service = Service::new(name.to_string(), self);
        service.set_connection_filter(filter);
        service
    }
}

/// Any pingora app as a service behind paysign's safeguards — at most
/// `limits.max_connections` open connections, each request head within `limits.head_timeout`
/// (also the keep-alive idle timeout) and `limits.max_head_bytes` — counted under `listener`
/// in `paysign_connections_*{listener}` and `paysign_header_timeouts_total{listener}`. Every
/// service paysign builds goes through it; an embedder's own services can too. An app behind
/// it calls [`request_parsed`] first for each request (pingora's `ServeHttp` apps and
/// `HttpProxy` do not know to: without it the head deadline would also cut the body).
pub fn safeguarded_service<A: ServerApp + Send + Sync + 'static>(
    name: &str,
    listener: Listener,
    app: A,
    limits: Limits,
    metrics: &Metrics,
) -> Service<Limited<A>> {
    Limited::new(app, listener, limits, metrics).into_service(name)
}

/// A plain TCP listener as paysign's services use it: a whole answer (head and body, up to
/// 4 KiB) leaves in one write instead of two. Reads go through a 16 KiB buffer instead of
/// pingora's 64 KiB: a client that sends fast fills the buffer, and it stays resident for the
/// connection's life (1,024 connections sending large heads: 64 MiB of the 137 MiB peak); an
/// idle connection's cost is unchanged (not resident until used), and a larger read bypasses it.
pub fn tcp_listener(addr: &str) -> ListenerConfig {
    ListenerConfig::tcp(addr).l4_buffer(L4BufferSettings::new(16 * 1024, 4096))
}

/// At most `max` open connections on one listener; each refusal counted.
struct ConnectionBound {
    open: AtomicUsize,
    max: usize,
    /// The listener's label and its connection metrics.
    metrics: ListenerMetrics,
    peer_check: std::sync::OnceLock<PeerCheck>,
    /// Bytes of unfinished heads all connections hold now, and the most they may.
    head_bytes: AtomicUsize,
    head_budget: usize,
}

impl std::fmt::Debug for ConnectionBound {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ConnectionBound").field("listener", &self.metrics.listener).field("max", &self.max).finish()
    }
}

impl ConnectionBound {
    /// Counts a new connection in, or refuses it when `max` are open (exact).
    fn admit(self: &Arc<Self>) -> Option<Counted> {
        if self.open.fetch_add(1, Ordering::AcqRel) >= self.max {
            self.open.fetch_sub(1, Ordering::AcqRel);
            self.refused();
            return None;
        }
        self.metrics.open.inc();
        Some(Counted(self.clone()))
    }

    fn refused(&self) {
        self.metrics.refused.inc();
    }
}

/// The accept loop's check: the peer first (a refused peer never counts against the bound),
/// then the bound — cheap, not atomic with [`ConnectionBound::admit`], which stays exact.
#[async_trait]
impl ConnectionFilter for ConnectionBound {
    async fn should_accept(&self, peer: Option<&std::net::SocketAddr>) -> bool {
        if let (Some(check), Some(peer)) = (self.peer_check.get(), peer) {
            if !check(peer.ip()) {
                return false;
            }
        }
        if self.open.load(Ordering::Acquire) >= self.max {
            self.refused();
            return false;
        }
        true
    }
}

#[async_trait]
impl<A: ServerApp + Send + Sync + 'static> ServerApp for Limited<A> {
    async fn process_new(
        self: &Arc<Self>,
        stream: pingora::protocols::Stream,
        shutdown: &ShutdownWatch,
    ) -> Option<pingora::protocols::Stream> {
        // A kept-alive connection comes back already wrapped (and counted).
        let stream = if stream.as_any().is::<HeadDeadline>() {
            stream
        } else {
            let counted = self.bound.admit()?; // None: dropped, closed at once
            Box::new(HeadDeadline::new(stream, self.head, counted, shutdown.clone())) as pingora::protocols::Stream
        };
        self.inner.process_new(stream, shutdown).await
    }

    async fn cleanup(&self) {
        self.inner.cleanup().await
    }
}

/// One open connection, counted until its stream is dropped.
#[derive(Debug)]
struct Counted(Arc<ConnectionBound>);

impl Drop for Counted {
    fn drop(&mut self) {
        self.0.open.fetch_sub(1, Ordering::AcqRel);
        self.0.metrics.open.dec();
    }
}

/// What every app behind [`Limited`] does first for each request (the only moment a head is
/// known to be complete): tells the connection's `HeadDeadline` (if the stream is one) that
/// pingora has parsed the head, so its deadline and size bound end; and answers pipelined
/// requests in order (pingora's default drops the second one).
pub fn request_parsed(session: &mut pingora::protocols::http::ServerSession) {
    if let Some(h) = session.stream().and_then(|s| (**s).as_any().downcast_ref::<HeadDeadline>()) {
        h.parsed.store(true, Ordering::Release);
    }
    session.set_pipelining_enabled(true);
}

/// Where a connection is in its exchange.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Phase {
    /// Reading a request head: deadline and size bound apply.
    Head,
    /// The head was parsed: the body is read and the request handled.
    Request,
    /// An answer is going out; the next read starts the next head.
    Answer,
    /// paysign's own refusal is going out (or went out): then the connection closes.
    Refused,
}

/// A stream whose request heads must arrive within a deadline and a size.
pub struct HeadDeadline {
    inner: pingora::protocols::Stream,
    limits: HeadLimits,
    phase: Phase,
    /// Set through [`request_parsed`] (from the app, which holds only `&Stream`).
    parsed: AtomicBool,
    /// Bytes of the current head read so far.
    head_bytes: usize,
    deadline: Option<Pin<Box<tokio::time::Sleep>>>,
    /// paysign's own answer and how much of it is written.
    own: Option<(Vec<u8>, usize)>,
    /// The write side was shut after the own answer (then the rest is read and discarded).
    shut: bool,
    /// The current head ended without pingora's parser: the client closed, a read failed, the
    /// deadline passed.
    ended: bool,
    /// pingora's shutdown signal: a head it drops unfinished because of it was not a bad one.
    shutdown: ShutdownWatch,
    _counted: Counted,
}

impl std::fmt::Debug for HeadDeadline {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("HeadDeadline").field("listener", &self._counted.0.metrics.listener).field("phase", &self.phase).finish()
    }
}

impl HeadDeadline {
    fn new(inner: pingora::protocols::Stream, limits: HeadLimits, counted: Counted, shutdown: ShutdownWatch) -> Self {
        HeadDeadline {
            inner,
            limits,
            phase: Phase::Head,
            parsed: AtomicBool::new(false),
            head_bytes: 0,
            deadline: None,
            own: None,
            shut: false,
            ended: false,
            shutdown,
            _counted: counted,
        }
    }

    /// Applies a [`request_parsed`] signal, if one came.
    fn take_parsed(&mut self) {
        if self.parsed.swap(false, Ordering::AcqRel) && self.phase != Phase::Refused {
            self.phase = Phase::Request;
            self.deadline = None;
            self.release_head();
        }
    }

    /// The current head is no longer unfinished: its bytes leave the listener's budget.
    fn release_head(&mut self) {
        let held = std::mem::take(&mut self.head_bytes);
        if held > 0 {
            self._counted.0.head_bytes.fetch_sub(held, Ordering::AcqRel);
        }
    }

    /// True once the head deadline has passed (registers the waker otherwise).
    fn expired(&mut self, cx: &mut Context<'_>) -> bool {
        self.deadline.as_mut().is_some_and(|d| d.as_mut().poll(cx).is_ready())
    }

    /// Refuses the connection with paysign's own answer for `e`; counted and logged.
    fn refuse(&mut self, e: &GatewayError) {
        self.release_head();
        let request_id = crate::logging::new_request_id();
        let metrics = &self._counted.0.metrics;
        note_refusal(metrics, e, &request_id);
        self.own = Some((own_answer(metrics.listener, e, &request_id), 0));
        self.phase = Phase::Refused;
    }

    /// Writes what is left of the own answer: Ready(Ok) once all of it is out.
    fn poll_own(&mut self, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        while let Some((bytes, at)) = &mut self.own {
            if *at == bytes.len() {
                break;
            }
            match Pin::new(&mut self.inner).poll_write(cx, &bytes[*at..]) {
                Poll::Ready(Ok(0)) => return Poll::Ready(Err(io::ErrorKind::WriteZero.into())),
                Poll::Ready(Ok(n)) => *at += n,
                Poll::Ready(Err(e)) => return Poll::Ready(Err(e)),
                Poll::Pending => return Poll::Pending,
            }
        }
        Pin::new(&mut self.inner).poll_flush(cx)
    }

    /// A refused connection: the answer goes out, the write side is shut, and what the client
    /// still sends is read and discarded until it closes (so the answer is not lost to a reset),
    /// within the head deadline. Then the read fails and pingora closes the connection.
    fn poll_refused(&mut self, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let gone = || Poll::Ready(Err(io::Error::new(io::ErrorKind::InvalidData, "request refused")));
        let waiting = match self.poll_own(cx) {
            Poll::Ready(Ok(())) => false,
            Poll::Ready(Err(_)) => return gone(),
            Poll::Pending => true,
        };
        if !waiting {
            if !self.shut {
                match Pin::new(&mut self.inner).poll_shutdown(cx) {
                    Poll::Ready(_) => self.shut = true,
                    Poll::Pending => return if self.expired(cx) { gone() } else { Poll::Pending },
                }
            }
            let mut scratch = [0u8; 2048];
            loop {
                let mut discard = ReadBuf::new(&mut scratch);
                match Pin::new(&mut self.inner).poll_read(cx, &mut discard) {
                    Poll::Ready(Ok(())) if !discard.filled().is_empty() => continue,
                    Poll::Ready(_) => return gone(),
                    Poll::Pending => break,
                }
            }
        }
        if self.expired(cx) {
            return gone();
        }
        Poll::Pending
    }
}

impl AsyncRead for HeadDeadline {
    fn poll_read(self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &mut ReadBuf<'_>) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        this.take_parsed();
        match this.phase {
            Phase::Refused => return this.poll_refused(cx),
            Phase::Request => return Pin::new(&mut this.inner).poll_read(cx, buf),
            Phase::Answer => {
                this.phase = Phase::Head;
                this.ended = false;
                this.release_head();
            }
            Phase::Head => {}
        }
        if this.deadline.is_none() {
            this.deadline = Some(Box::pin(tokio::time::sleep(this.limits.timeout)));
        }
        // Never more than one byte past the bound: pingora's buffer stays that small, and a
        // head that is still incomplete at max + 1 bytes is too large.
        let room = (this.limits.max_bytes + 1).saturating_sub(this.head_bytes).min(buf.remaining());
        let mut part = ReadBuf::new(buf.initialize_unfilled_to(room));
        match Pin::new(&mut this.inner).poll_read(cx, &mut part) {
            Poll::Ready(Ok(())) => {
                let n = part.filled().len();
                this.ended |= n == 0 && room > 0;
                // Charged to the connection and the listener alike (released together).
                this.head_bytes += n;
                let bound = &this._counted.0;
                let held = bound.head_bytes.fetch_add(n, Ordering::AcqRel) + n;
                let refusal = if this.head_bytes > this.limits.max_bytes {
                    Some(GatewayError::HeadTooLarge { limit: this.limits.max_bytes })
                } else if held > bound.head_budget {
                    Some(GatewayError::Overloaded)
                } else {
                    None
                };
                if let Some(e) = refusal {
                    this.refuse(&e);
                    return this.poll_refused(cx);
                }
                buf.advance(n);
                Poll::Ready(Ok(()))
            }
            Poll::Ready(Err(e)) => {
                this.ended = true;
                Poll::Ready(Err(e))
            }
            Poll::Pending => {
                if this.expired(cx) {
                    this.ended = true;
                    this._counted.0.metrics.header_timeouts.inc();
                    this.deadline = None;
                    return Poll::Ready(Err(io::Error::new(io::ErrorKind::TimedOut, "request head not received in time")));
                }
                Poll::Pending
            }
        }
    }
}

/// pingora's own answer written before any app saw a request — a bare 400 to a head its parser
/// refused, a bare 405 to `CONNECT` (no `Content-Type`; every answer of paysign's has one) —
/// as the refusal paysign answers instead (the error contract holds for every response).
fn pingora_refusal(data: &[u8]) -> Option<GatewayError> {
    let e = if data.starts_with(b"HTTP/1.1 400 ") {
        GatewayError::BadHttp
    } else if data.starts_with(b"HTTP/1.1 405 ") {
        GatewayError::MethodNotAllowed
    } else {
        return None;
    };
    let head = &data[..data.windows(4).position(|w| w == b"\r\n\r\n").unwrap_or(data.len())];
    (!head.windows(14).any(|w| w.eq_ignore_ascii_case(b"\ncontent-type:"))).then_some(e)
}

/// A refusal, counted and logged (the one place that sees it).
fn note_refusal(metrics: &ListenerMetrics, e: &GatewayError, request_id: &str) {
    if !matches!(e, GatewayError::Overloaded) {
        metrics.bad_http.inc();
    }
    if metrics.listener == Listener::Proxy {
        metrics.requests.with_label_values(&["none", "none", e.outcome()]).inc();
    }
    let mut f = serde_json::Map::new();
    f.insert("request_id".into(), request_id.into());
    f.insert("listener".into(), metrics.listener.as_str().into());
    f.insert("outcome".into(), e.outcome().into());
    f.insert("status".into(), e.status().into());
    f.insert("delivery".into(), e.delivery().as_str().into());
    f.insert("reason".into(), e.to_string().into());
    crate::logging::access(f);
}

/// paysign's answer for a refusal made before any app saw the request: the error contract's
/// headers (the notification listener answers `FAIL` as it always does), then the close.
fn own_answer(listener: Listener, e: &GatewayError, request_id: &str) -> Vec<u8> {
    let (content_type, body) = if listener == Listener::Notify {
        ("text/plain;charset=UTF-8", b"FAIL".to_vec())
    } else {
        ("application/json;charset=UTF-8", e.body())
    };
    let status = e.status();
    let reason = http::StatusCode::from_u16(status).ok().and_then(|s| s.canonical_reason()).unwrap_or("");
    let mut out = format!(
        "HTTP/1.1 {status} {reason}\r\nContent-Type: {content_type}\r\nContent-Length: {}\r\nCache-Control: no-store\r\nX-Request-Id: {request_id}\r\nX-Paysign-Delivery: {}\r\n{}Connection: close\r\n\r\n",
        body.len(),
        e.delivery().as_str(),
        if status == 503 { "Retry-After: 1\r\n" } else { "" },
    )
    .into_bytes();
    out.extend_from_slice(&body);
    out
}

impl HeadDeadline {
    /// One write from pingora: passed through, or — pingora refusing a head — replaced by
    /// paysign's own answer (and whatever pingora writes after it swallowed).
    fn write(
        &mut self,
        cx: &mut Context<'_>,
        data: &[u8],
        pass: impl FnOnce(&mut Self, &mut Context<'_>) -> Poll<io::Result<usize>>,
    ) -> Poll<io::Result<usize>> {
        self.take_parsed();
        if self.phase == Phase::Head && self.own.is_none() {
            if let Some(e) = pingora_refusal(data) {
                self.refuse(&e);
            }
        }
        if self.phase == Phase::Refused {
            return match self.poll_own(cx) {
                Poll::Ready(Ok(())) => Poll::Ready(Ok(data.len())),
                Poll::Ready(Err(e)) => Poll::Ready(Err(e)),
                Poll::Pending => Poll::Pending,
            };
        }
        let r = pass(self, cx);
        // An interim answer (`100 Continue`) is not the answer: the body is still to come.
        if matches!(r, Poll::Ready(Ok(n)) if n > 0) && !data.starts_with(b"HTTP/1.1 1") {
            self.phase = Phase::Answer;
            self.deadline = None;
            self.release_head();
        }
        r
    }
}

impl AsyncWrite for HeadDeadline {
    fn poll_write(self: Pin<&mut Self>, cx: &mut Context<'_>, data: &[u8]) -> Poll<io::Result<usize>> {
        self.get_mut().write(cx, data, |this, cx| Pin::new(&mut this.inner).poll_write(cx, data))
    }
    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().inner).poll_flush(cx)
    }
    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        if this.shut {
            return Poll::Ready(Ok(()));
        }
        Pin::new(&mut this.inner).poll_shutdown(cx)
    }
    fn poll_write_vectored(self: Pin<&mut Self>, cx: &mut Context<'_>, bufs: &[io::IoSlice<'_>]) -> Poll<io::Result<usize>> {
        let first = bufs.iter().find(|b| !b.is_empty()).map_or(&[][..], |b| &b[..]);
        self.get_mut().write(cx, first, |this, cx| Pin::new(&mut this.inner).poll_write_vectored(cx, bufs))
    }
    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }
}

impl Drop for HeadDeadline {
    fn drop(&mut self) {
        if self.phase == Phase::Head && self.head_bytes > 0 && !self.ended {
            // pingora's HTTP apps (admin, notifications) drop a head their parser refused
            // without a word: answer it here, as the proxy's refusals are. The socket has sent
            // nothing yet, so the answer fits in its buffer and goes out without waiting.
            // At shutdown pingora's proxy drops every unfinished head: nothing was wrong with
            // it (a 400 said so, and was counted as bad HTTP), the caller may retry elsewhere.
            let shutting_down = *self.shutdown.borrow();
            self.refuse(if shutting_down { &GatewayError::Overloaded } else { &GatewayError::BadHttp });
            let mut cx = Context::from_waker(std::task::Waker::noop());
            if self.poll_own(&mut cx).is_ready() {
                let _ = Pin::new(&mut self.inner).poll_shutdown(&mut cx);
            }
        }
        self.release_head();
    }
}

paysign_http::delegate_stream_traits!(HeadDeadline);

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn the_accept_filter_refuses_at_the_bound_and_counts_it() {
        let metrics = Metrics::new(&prometheus::Registry::new()).unwrap().listener(Listener::Proxy);
        let filter = Arc::new(ConnectionBound {
            open: AtomicUsize::new(0),
            max: 2,
            metrics: metrics.clone(),
            peer_check: std::sync::OnceLock::new(),
            head_bytes: AtomicUsize::new(0),
            head_budget: 1,
        });
        let open = &filter.open;
        let refused = || metrics.refused.get();
        assert!(filter.should_accept(None).await);
        open.store(2, Ordering::Release);
        assert!(!filter.should_accept(None).await);
        assert!(!filter.should_accept(None).await);
        assert_eq!(refused(), 2);
        open.store(1, Ordering::Release);
        assert!(filter.should_accept(None).await);
        assert_eq!(refused(), 2);
    }

    #[tokio::test]
    async fn the_accept_filter_refuses_peers_the_check_refuses() {
        let check: PeerCheck = Arc::new(|ip: IpAddr| ip == IpAddr::from([127, 0, 0, 2]));
        let metrics = Metrics::new(&prometheus::Registry::new()).unwrap().listener(Listener::Notify);
        let filter = ConnectionBound {
            open: AtomicUsize::new(0),
            max: 2,
            metrics: metrics.clone(),
            peer_check: std::sync::OnceLock::from(check),
            head_bytes: AtomicUsize::new(0),
            head_budget: 1,
        };
        assert!(filter.should_accept(Some(&"127.0.0.2:1000".parse().unwrap())).await);
        assert!(!filter.should_accept(Some(&"127.0.0.1:1000".parse().unwrap())).await);
        // Refused by address, not by capacity.
        assert_eq!(metrics.refused.get(), 0);
    }

    #[test]
    fn only_pingoras_bare_refusals_are_replaced() {
        let refusal = |d: &[u8]| pingora_refusal(d).map(|e| e.status());
        assert_eq!(refusal(b"HTTP/1.1 400 Bad Request\r\nServer: Pingora\r\nContent-Length: 0\r\n\r\n"), Some(400));
        assert_eq!(refusal(b"HTTP/1.1 400 Bad Request\r\nContent-Type: application/json\r\n\r\n{}"), None);
        assert_eq!(refusal(b"HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n"), None);
        assert_eq!(refusal(b"HTTP/1.1 405 Method Not Allowed\r\nContent-Length: 0\r\n\r\n"), Some(405));
        assert_eq!(refusal(b"HTTP/1.1 405 Method Not Allowed\r\nContent-Type: application/json\r\n\r\n{}"), None);
    }

    #[test]
    fn own_answers_carry_the_error_contract() {
        let a = String::from_utf8(own_answer(Listener::Proxy, &GatewayError::HeadTooLarge { limit: 8192 }, "rid-1")).unwrap();
        assert!(a.starts_with("HTTP/1.1 431 Request Header Fields Too Large\r\n"), "{a}");
        assert!(a.contains("\r\nX-Request-Id: rid-1\r\n") && a.contains("\r\nX-Paysign-Delivery: not-sent\r\n"), "{a}");
        let body = &a[a.find("\r\n\r\n").unwrap() + 4..];
        assert!(a.contains(&format!("\r\nContent-Length: {}\r\n", body.len())), "{a}");
        let v: serde_json::Value = serde_json::from_str(body).unwrap();
        assert_eq!(v["errCode"], "1002");
        let n = String::from_utf8(own_answer(Listener::Notify, &GatewayError::BadHttp, "rid-2")).unwrap();
        assert!(n.starts_with("HTTP/1.1 400 Bad Request\r\n") && n.ends_with("\r\n\r\nFAIL"), "{n}");
    }
}
