//! What every listener does before HTTP: a bound on open connections and a deadline for each
//! request head (which is also the idle keep-alive timeout).
//!
//! pingora holds ~30 KB per connection and, by default, waits 60 s per read with no deadline
//! for a whole request head, so idle or byte-a-second connections could hold memory forever.
//! [`Limited`] wraps any pingora [`ServerApp`]:
//!
//! - beyond `max_connections` open connections, a new one is closed at once (counted in
//!   `paysign_connections_refused_total{listener}`): in pingora's accept loop, before it
//!   allocates the connection's buffers ([`Limited::connection_filter`]; a flood of 15,000
//!   connections otherwise allocated ~200 MB for a moment), and again exactly when the
//!   connection reaches the app (the filter's check and the count are not one atomic step);
//! - each connection's stream is wrapped in a [`HeadDeadline`]: from the first read of a
//!   request (or of the wait for the next one on a kept-alive connection) its head — up to the
//!   blank line — must arrive within `head_timeout`, or the read fails and pingora closes the
//!   connection (counted in `paysign_header_timeouts_total{listener}`). Bodies have their own
//!   timeouts (`client_body_timeout_ms`).

use std::io;
use std::pin::Pin;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use async_trait::async_trait;
use pingora::apps::ServerApp;
use pingora::listeners::ConnectionFilter;
use pingora::server::ShutdownWatch;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};

use crate::metrics;

/// Connection limits of one listener.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    pub max_connections: usize,
    pub head_timeout: Duration,
}

/// A pingora app behind a connection bound and a request-head deadline.
pub struct Limited<A> {
    inner: Arc<A>,
    bound: Arc<ConnectionBound>,
    head_timeout: Duration,
}

impl<A> Limited<A> {
    pub fn new(inner: A, listener: &'static str, limits: Limits) -> Self {
        let bound = Arc::new(ConnectionBound { open: AtomicUsize::new(0), max: limits.max_connections, listener });
        Limited { inner: Arc::new(inner), bound, head_timeout: limits.head_timeout }
    }

    /// The same bound for pingora's accept loop (`Service::set_connection_filter`): a
    /// connection beyond it is closed before pingora allocates anything for it.
    pub fn connection_filter(&self) -> Arc<dyn ConnectionFilter> {
        self.bound.clone()
    }
}

/// At most `max` open connections on one listener; each refusal counted.
#[derive(Debug)]
struct ConnectionBound {
    open: AtomicUsize,
    max: usize,
    listener: &'static str,
}

impl ConnectionBound {
    /// Counts a new connection in, or refuses it when `max` are open (exact).
    fn admit(self: &Arc<Self>) -> Option<Counted> {
        if self.open.fetch_add(1, Ordering::AcqRel) >= self.max {
            self.open.fetch_sub(1, Ordering::AcqRel);
            self.refused();
            return None;
        }
        metrics::CONNECTIONS_OPEN.with_label_values(&[self.listener]).inc();
        Some(Counted(self.clone()))
    }

    fn refused(&self) {
        metrics::CONNECTIONS_REFUSED.with_label_values(&[self.listener]).inc();
    }
}

/// The accept loop's check: cheap, not atomic with [`ConnectionBound::admit`], which stays exact.
#[async_trait]
impl ConnectionFilter for ConnectionBound {
    async fn should_accept(&self, _peer: Option<&std::net::SocketAddr>) -> bool {
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
            Box::new(HeadDeadline::new(stream, self.head_timeout, self.bound.listener, counted)) as pingora::protocols::Stream
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
        metrics::CONNECTIONS_OPEN.with_label_values(&[self.0.listener]).dec();
    }
}

/// Finds the end of a request head (`\r\n\r\n`) across reads.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
struct HeadEnd {
    /// How many bytes of `\r\n\r\n` the data seen so far ends with.
    matched: u8,
}

impl HeadEnd {
    /// Feeds bytes; true when the blank line that ends the head has been seen.
    fn feed(&mut self, bytes: &[u8]) -> bool {
        const END: &[u8; 4] = b"\r\n\r\n";
        for &b in bytes {
            self.matched = if b == END[self.matched as usize] {
                self.matched + 1
            } else if b == b'\r' {
                1
            } else {
                0
            };
            if self.matched == 4 {
                self.matched = 0;
                return true;
            }
        }
        false
    }
}

/// A stream whose request heads must arrive within a deadline.
pub struct HeadDeadline {
    inner: pingora::protocols::Stream,
    timeout: Duration,
    listener: &'static str,
    /// Reading a request head (true from the start and after each response write).
    in_head: bool,
    head_end: HeadEnd,
    deadline: Option<Pin<Box<tokio::time::Sleep>>>,
    _counted: Counted,
}

impl std::fmt::Debug for HeadDeadline {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("HeadDeadline").field("listener", &self.listener).field("in_head", &self.in_head).finish()
    }
}

impl HeadDeadline {
    fn new(inner: pingora::protocols::Stream, timeout: Duration, listener: &'static str, counted: Counted) -> Self {
        HeadDeadline { inner, timeout, listener, in_head: true, head_end: HeadEnd::default(), deadline: None, _counted: counted }
    }
}

impl HeadDeadline {
    /// An answer (starting with `first`) is going out: what is read next is the next request's
    /// head.
    fn answer_written(&mut self, first: &[u8]) {
        note_parser_refusal(self.listener, first);
        self.in_head = true;
        self.head_end = HeadEnd::default();
        self.deadline = None;
    }
}

impl AsyncRead for HeadDeadline {
    fn poll_read(self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &mut ReadBuf<'_>) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        if this.in_head && this.deadline.is_none() {
            this.deadline = Some(Box::pin(tokio::time::sleep(this.timeout)));
        }
        let before = buf.filled().len();
        match Pin::new(&mut this.inner).poll_read(cx, buf) {
            Poll::Ready(Ok(())) => {
                if this.in_head && this.head_end.feed(&buf.filled()[before..]) {
                    this.in_head = false;
                    this.deadline = None;
                }
                Poll::Ready(Ok(()))
            }
            Poll::Ready(Err(e)) => Poll::Ready(Err(e)),
            Poll::Pending => {
                let expired = this.deadline.as_mut().is_some_and(|d| d.as_mut().poll(cx).is_ready());
                if expired {
                    metrics::HEADER_TIMEOUTS.with_label_values(&[this.listener]).inc();
                    this.deadline = None;
                    return Poll::Ready(Err(io::Error::new(io::ErrorKind::TimedOut, "request head not received in time")));
                }
                Poll::Pending
            }
        }
    }
}

use std::future::Future;

/// pingora answers a request head it cannot parse with a bare 400 of its own (no
/// `Content-Type`; every answer of paysign's has one), before paysign sees the request. It is
/// counted and logged here, the one place that sees it.
fn note_parser_refusal(listener: &'static str, data: &[u8]) {
    if !data.starts_with(b"HTTP/1.1 400 ") {
        return;
    }
    let head = &data[..data.windows(4).position(|w| w == b"\r\n\r\n").unwrap_or(data.len())];
    if head.windows(14).any(|w| w.eq_ignore_ascii_case(b"\ncontent-type:")) {
        return;
    }
    metrics::BAD_HTTP.with_label_values(&[listener]).inc();
    if listener == "proxy" {
        metrics::REQUESTS.with_label_values(&["none", "none", "bad_http"]).inc();
    }
    let mut f = serde_json::Map::new();
    f.insert("listener".into(), listener.into());
    f.insert("outcome".into(), "bad_http".into());
    f.insert("status".into(), 400.into());
    f.insert("delivery".into(), "not-sent".into());
    f.insert("reason".into(), "the request head could not be parsed".into());
    crate::logging::access(f);
}

impl AsyncWrite for HeadDeadline {
    fn poll_write(self: Pin<&mut Self>, cx: &mut Context<'_>, data: &[u8]) -> Poll<io::Result<usize>> {
        let this = self.get_mut();
        let r = Pin::new(&mut this.inner).poll_write(cx, data);
        if matches!(r, Poll::Ready(Ok(n)) if n > 0) {
            this.answer_written(data);
        }
        r
    }
    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().inner).poll_flush(cx)
    }
    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().inner).poll_shutdown(cx)
    }
    fn poll_write_vectored(self: Pin<&mut Self>, cx: &mut Context<'_>, bufs: &[io::IoSlice<'_>]) -> Poll<io::Result<usize>> {
        let this = self.get_mut();
        let r = Pin::new(&mut this.inner).poll_write_vectored(cx, bufs);
        if matches!(r, Poll::Ready(Ok(n)) if n > 0) {
            this.answer_written(bufs.iter().find(|b| !b.is_empty()).map_or(&[][..], |b| &b[..]));
        }
        r
    }
    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }
}

crate::stream_wrap::delegate_stream_traits!(HeadDeadline);

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn the_accept_filter_refuses_at_the_bound_and_counts_it() {
        let filter = Arc::new(ConnectionBound { open: AtomicUsize::new(0), max: 2, listener: "filter-test" });
        let open = &filter.open;
        let refused = || metrics::CONNECTIONS_REFUSED.with_label_values(&["filter-test"]).get();
        assert!(filter.should_accept(None).await);
        open.store(2, Ordering::Release);
        assert!(!filter.should_accept(None).await);
        assert!(!filter.should_accept(None).await);
        assert_eq!(refused(), 2);
        open.store(1, Ordering::Release);
        assert!(filter.should_accept(None).await);
        assert_eq!(refused(), 2);
    }

    #[test]
    fn the_end_of_a_head_is_found_across_reads() {
        let mut h = HeadEnd::default();
        assert!(!h.feed(b"POST / HTTP/1.1\r\nHost: x\r\n"));
        assert!(!h.feed(b"\r"));
        assert!(h.feed(b"\nbody"));
        let mut h = HeadEnd::default();
        assert!(!h.feed(b"GET / HTTP/1.1\r\n\r\r\n"));
        assert!(h.feed(b"\r\n"));
        let mut h = HeadEnd::default();
        assert!(!h.feed(b"\n\n\r\n\n"));
    }
}
