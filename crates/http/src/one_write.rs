//! A request leaves in one write, and the client knows whether any of it left.
//!
//! pingora's HTTP/1 client flushes the request head before it writes the body: two `sendto`
//! per call to the platform, and two segments for the platform to read. [`OneWrite`] wraps
//! the connection's stream: while a request is being written ([`OneWrite::begin`]) it keeps the
//! head and body in its buffer and hands them to the socket together at the final flush,
//! counting the bytes the socket accepted. That count is what the never-retry rule needs:
//! a write that failed before the socket accepted a single byte sent nothing, so the request
//! may go on another connection; once any byte was accepted, the platform may have acted.
//!
//! Reading passes through untouched. The wrapper stays on the connection in the pool, so a
//! reused connection is wrapped once.

use std::io;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::task::{Context, Poll};

use pingora::protocols::Stream;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};

/// A connection's stream that sends each request's head and body in one write.
#[derive(Debug)]
pub struct OneWrite {
    inner: Stream,
    /// Written but not yet handed to the socket.
    pending: Vec<u8>,
    /// How much of `pending` the socket has accepted in the flush under way.
    flushed: usize,
    /// Between [`Self::begin`] and [`Self::body_follows`]: flushes keep the head back.
    holding_head: AtomicBool,
    /// Bytes of the current request the socket accepted.
    accepted: AtomicUsize,
}

impl OneWrite {
    /// Wraps a connection's stream, unless a pooled connection already is wrapped.
    pub fn wrap(stream: Stream) -> Stream {
        if stream.as_any().is::<OneWrite>() {
            return stream;
        }
        Box::new(OneWrite {
            inner: stream,
            pending: Vec::new(),
            flushed: 0,
            holding_head: AtomicBool::new(false),
            accepted: AtomicUsize::new(0),
        })
    }

    /// The wrapper inside a session's stream (`None` for a stream [`Self::wrap`] never saw).
    pub fn of(stream: &Stream) -> Option<&OneWrite> {
        stream.as_any().downcast_ref::<OneWrite>()
    }

    /// A request starts: its head is kept back until the body is written.
    pub fn begin(&self) {
        self.accepted.store(0, Ordering::Release);
        self.holding_head.store(true, Ordering::Release);
    }

    /// The head is written; the next flush sends head and body.
    pub fn body_follows(&self) {
        self.holding_head.store(false, Ordering::Release);
    }

    /// Whether the socket accepted any byte of the current request.
    pub fn any_accepted(&self) -> bool {
        self.accepted.load(Ordering::Acquire) > 0
    }
}

impl AsyncRead for OneWrite {
    fn poll_read(self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &mut ReadBuf<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().inner).poll_read(cx, buf)
    }
}

impl AsyncWrite for OneWrite {
    fn poll_write(self: Pin<&mut Self>, _cx: &mut Context<'_>, data: &[u8]) -> Poll<io::Result<usize>> {
        // Everything waits for the flush; the buffer holds one request (bounded by the
        // body limit of whoever writes it).
        self.get_mut().pending.extend_from_slice(data);
        Poll::Ready(Ok(data.len()))
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        if this.holding_head.load(Ordering::Acquire) {
            return Poll::Ready(Ok(()));
        }
        while this.flushed < this.pending.len() {
            match Pin::new(&mut this.inner).poll_write(cx, &this.pending[this.flushed..]) {
                Poll::Ready(Ok(0)) => return Poll::Ready(Err(io::ErrorKind::WriteZero.into())),
                Poll::Ready(Ok(n)) => {
                    this.flushed += n;
                    this.accepted.fetch_add(n, Ordering::AcqRel);
                }
                Poll::Ready(Err(e)) => return Poll::Ready(Err(e)),
                Poll::Pending => return Poll::Pending,
            }
        }
        this.pending.clear();
        this.flushed = 0;
        Pin::new(&mut this.inner).poll_flush(cx)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().inner).poll_shutdown(cx)
    }
}

crate::delegate_stream_traits!(OneWrite);

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    async fn connected() -> (Stream, tokio::net::TcpStream) {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let client = tokio::net::TcpStream::connect(listener.local_addr().unwrap()).await.unwrap();
        let (server, _) = listener.accept().await.unwrap();
        (Box::new(pingora::protocols::l4::stream::Stream::from(client)), server)
    }

    #[tokio::test]
    async fn head_and_body_leave_together_at_the_last_flush() {
        let (stream, mut server) = connected().await;
        let mut s = OneWrite::wrap(stream);
        let w = OneWrite::of(&s).unwrap();
        w.begin();
        s.write_all(b"POST / HTTP/1.1\r\nContent-Length: 4\r\n\r\n").await.unwrap();
        s.flush().await.unwrap();
        assert!(!OneWrite::of(&s).unwrap().any_accepted(), "the head was kept back");
        OneWrite::of(&s).unwrap().body_follows();
        s.write_all(b"body").await.unwrap();
        assert!(!OneWrite::of(&s).unwrap().any_accepted());
        s.flush().await.unwrap();
        assert!(OneWrite::of(&s).unwrap().any_accepted());
        let want = b"POST / HTTP/1.1\r\nContent-Length: 4\r\n\r\nbody";
        let mut got = vec![0u8; want.len()];
        server.read_exact(&mut got).await.unwrap();
        assert_eq!(got, want);
        // Wrapping again (a pooled connection) keeps the one wrapper.
        let again = OneWrite::wrap(s);
        assert!(OneWrite::of(&again).is_some());
        assert!(again.as_any().downcast_ref::<OneWrite>().is_some_and(|w| !w.inner.as_any().is::<OneWrite>()));
    }

    #[tokio::test]
    async fn a_write_the_socket_refused_accepted_nothing() {
        let (stream, server) = connected().await;
        // The peer resets the connection: the next send fails before the socket takes a byte.
        // (A zero linger never blocks on drop: the connection is reset at once.)
        #[allow(deprecated)]
        server.set_linger(Some(std::time::Duration::ZERO)).unwrap();
        drop(server);
        let mut s = OneWrite::wrap(stream);
        let mut failed = false;
        for _ in 0..50 {
            let w = OneWrite::of(&s).unwrap();
            w.begin();
            w.body_follows();
            s.write_all(b"POST / HTTP/1.1\r\n\r\n").await.unwrap();
            if s.flush().await.is_err() {
                failed = true;
                break;
            }
            tokio::task::yield_now().await;
        }
        assert!(failed, "writing to a reset connection must fail");
        assert!(!OneWrite::of(&s).unwrap().any_accepted());
    }
}
