//! Idle connections kept for the next call. pingora's own pool watches every idle connection
//! with a task of its own (spawned, with a timer, each time a connection is released); this one
//! does no work per call beyond a list push and pop: a connection is checked when it is taken —
//! closed by the server, broken, holding bytes nobody asked for, or idle past its timeout:
//! closed, and the next one tried — and one sweeper task per pool does the same check over the
//! parked connections once a second, so that a connection the server closed does not linger
//! while no call comes. Connections are taken in turn, the longest-parked first; beyond
//! `size`, the oldest is closed.

use std::collections::VecDeque;
use std::future::Future;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, Weak};
use std::task::{Context, Poll, Waker};
use std::time::{Duration, Instant};

use pingora::protocols::Stream;
use tokio::io::AsyncReadExt;

/// How often the sweeper looks over the parked connections.
const SWEEP_EVERY: Duration = Duration::from_secs(1);

pub struct IdlePool {
    shared: Arc<Shared>,
    /// Whether the sweeper has been started (on the first connection parked, from within the
    /// event loop that parks it).
    sweeping: AtomicBool,
    sweep_every: Duration,
}

struct Shared {
    /// Oldest first (taken from the front, parked at the back).
    parked: Mutex<VecDeque<Parked>>,
    size: usize,
}

struct Parked {
    key: u64,
    stream: Stream,
    until: Instant,
}

impl Parked {
    /// Still within its idle timeout at `now`, and usable: the one rule for taking a
    /// connection and for keeping it through a sweep.
    fn reusable(&mut self, now: Instant) -> bool {
        now < self.until && usable(&mut self.stream)
    }
}

impl IdlePool {
    /// A pool that keeps at most `size` idle connections.
    pub fn new(size: usize) -> Self {
        Self::sweeping_every(size, SWEEP_EVERY)
    }

    /// [`Self::new`], its sweeper running every `every`.
    pub fn sweeping_every(size: usize, every: Duration) -> Self {
        IdlePool {
            shared: Arc::new(Shared { parked: Mutex::new(VecDeque::new()), size }),
            sweeping: AtomicBool::new(false),
            sweep_every: every,
        }
    }

    /// The longest-parked connection for `key` that is still usable (connections are used in
    /// turn, as pingora's pool does: at 256 concurrent calls this costs 3.6 µs less CPU per
    /// call than newest first; none is taken past its idle timeout, which is set below the
    /// platform's keep-alive timeout).
    pub fn take(&self, key: u64) -> Option<Stream> {
        loop {
            let mut p = {
                let mut parked = self.shared.lock();
                let i = parked.iter().position(|p| p.key == key)?;
                parked.remove(i)?
            };
            if p.reusable(Instant::now()) {
                return Some(p.stream);
            }
            // Dropped here, outside the lock: closed.
        }
    }

    /// Parks `stream` (whose answer was read to the end) for `idle_timeout`, closing the
    /// connections that waited longer and, beyond `size`, the oldest.
    pub fn put(&self, key: u64, mut stream: Stream, idle_timeout: Duration) {
        if self.shared.size == 0 || !usable(&mut stream) {
            return;
        }
        self.start_sweeper();
        let now = Instant::now();
        let closed: Vec<Parked> = {
            let mut parked = self.shared.lock();
            // `pool_idle_timeout_secs` is any u64: a huge one (overflowing an Instant) is "never".
            let until = now.checked_add(idle_timeout).unwrap_or_else(|| now + Duration::from_secs(u64::from(u32::MAX)));
            parked.push_back(Parked { key, stream, until });
            let expired = parked.iter().take_while(|p| p.until <= now).count();
            let over = parked.len().saturating_sub(self.shared.size);
            let n = expired.max(over);
            if n == 0 {
                return;
            }
            parked.drain(..n).collect()
        };
        drop(closed);
    }

    /// How many connections are parked.
    pub fn len(&self) -> usize {
        self.shared.lock().len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// One task per pool, ending within `sweep_every` of the pool being dropped.
    fn start_sweeper(&self) {
        if self.sweeping.load(Ordering::Relaxed) {
            return;
        }
        let Ok(runtime) = tokio::runtime::Handle::try_current() else { return };
        if self.sweeping.swap(true, Ordering::Relaxed) {
            return;
        }
        let (shared, every) = (Arc::downgrade(&self.shared), self.sweep_every);
        runtime.spawn(sweep_while_alive(shared, every));
    }
}

async fn sweep_while_alive(shared: Weak<Shared>, every: Duration) {
    loop {
        tokio::time::sleep(every).await;
        let Some(shared) = shared.upgrade() else { return };
        shared.sweep();
    }
}

impl Shared {
    /// Closes the parked connections that are past their time or no longer usable.
    fn sweep(&self) {
        let now = Instant::now();
        let mut closed = Vec::new();
        {
            let mut parked = self.lock();
            for mut p in std::mem::take(&mut *parked) {
                if p.reusable(now) {
                    parked.push_back(p);
                } else {
                    closed.push(p);
                }
            }
        }
        drop(closed);
    }

    fn lock(&self) -> MutexGuard<'_, VecDeque<Parked>> {
        // A panic while holding the lock leaves a list of streams, still a valid list.
        self.parked.lock().unwrap_or_else(|e| e.into_inner())
    }
}

/// Whether an idle connection has nothing to read: no close, no error, no unasked bytes (a
/// server does not speak first on an idle HTTP/1.1 connection). One read, never waiting.
fn usable(stream: &mut Stream) -> bool {
    let mut probe = [0u8; 1];
    // Unconstrained: tokio's task budget must not turn a ready read into "nothing to read".
    let read = std::pin::pin!(tokio::task::unconstrained(stream.read(&mut probe)));
    match read.poll(&mut Context::from_waker(Waker::noop())) {
        Poll::Pending => true,
        Poll::Ready(Ok(0)) => false,
        Poll::Ready(Ok(_)) => {
            tracing::warn!("an idle connection received bytes nobody asked for: closed");
            false
        }
        Poll::Ready(Err(_)) => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A connected pair: the client side as a pingora stream, and the server side.
    async fn pair(listener: &tokio::net::TcpListener) -> (Stream, tokio::net::TcpStream) {
        let client = tokio::net::TcpStream::connect(listener.local_addr().unwrap()).await.unwrap();
        let (server, _) = listener.accept().await.unwrap();
        (Box::new(pingora::protocols::l4::stream::Stream::from(client)), server)
    }

    #[tokio::test(flavor = "current_thread")]
    async fn in_turn_per_key_bounded_and_timed() {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let pool = IdlePool::new(2);
        let long = Duration::from_secs(60);
        let (a, mut sa) = pair(&listener).await;
        let (b, _sb) = pair(&listener).await;
        let (c, _sc) = pair(&listener).await;
        let (idb, idc) = (b.id(), c.id());
        pool.put(1, a, long);
        pool.put(1, b, long);
        pool.put(2, c, long);
        // Beyond the size the oldest (a) was closed.
        assert_eq!(pool.len(), 2);
        assert_eq!(sa.read(&mut [0u8; 1]).await.unwrap(), 0, "the oldest connection was closed");
        assert_eq!(pool.take(1).map(|s| s.id()), Some(idb));
        assert!(pool.take(1).is_none());
        assert_eq!(pool.take(2).map(|s| s.id()), Some(idc));
        assert!(pool.is_empty());

        // In turn: the longest-parked first.
        let (d, _sd) = pair(&listener).await;
        let (e, _se) = pair(&listener).await;
        let (idd, ide) = (d.id(), e.id());
        pool.put(3, d, long);
        pool.put(3, e, long);
        assert_eq!(pool.take(3).map(|s| s.id()), Some(idd));
        assert_eq!(pool.take(3).map(|s| s.id()), Some(ide));

        // Past its idle timeout a connection is closed, not taken.
        let pool = IdlePool::new(4);
        let (f, _sf) = pair(&listener).await;
        pool.put(1, f, Duration::ZERO);
        assert!(pool.take(1).is_none());
        assert!(pool.is_empty());

        // A pool of size 0 keeps nothing.
        let none = IdlePool::new(0);
        let (g, _sg) = pair(&listener).await;
        none.put(1, g, long);
        assert!(none.is_empty());
    }

    /// Without any call, the sweeper closes a connection the server closed and one past its
    /// idle timeout; it ends once the pool is gone.
    #[tokio::test(flavor = "current_thread")]
    async fn the_sweeper_closes_what_no_call_takes() {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let pool = IdlePool::sweeping_every(4, Duration::from_millis(5));
        let (a, sa) = pair(&listener).await;
        let (b, mut sb) = pair(&listener).await;
        let (c, _sc) = pair(&listener).await;
        pool.put(1, a, Duration::from_secs(60));
        pool.put(1, b, Duration::from_millis(50));
        pool.put(1, c, Duration::from_secs(60));
        drop(sa);
        let waited = Instant::now();
        while pool.len() > 1 && waited.elapsed() < Duration::from_secs(5) {
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        assert_eq!(pool.len(), 1, "the closed and the expired connections are swept");
        assert_eq!(sb.read(&mut [0u8; 1]).await.unwrap(), 0, "the expired connection was closed");
        let weak = Arc::downgrade(&pool.shared);
        drop(pool);
        assert!(weak.upgrade().is_none());
    }

    #[tokio::test(flavor = "current_thread")]
    async fn a_connection_with_something_to_read_is_not_kept() {
        use tokio::io::AsyncWriteExt;
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let pool = IdlePool::new(4);
        let long = Duration::from_secs(60);

        // Closed by the server while idle: put back, then not taken.
        let (mut a, sa) = pair(&listener).await;
        assert!(usable(&mut a));
        pool.put(1, a, long);
        drop(sa);
        // Until the close is seen the connection may look idle; the close is seen within the
        // wait below (the event loop runs between tries).
        let mut seen = false;
        for _ in 0..1000 {
            tokio::task::yield_now().await;
            match pool.take(1) {
                Some(s) => pool.put(1, s, long),
                None => {
                    seen = true;
                    break;
                }
            }
        }
        assert!(seen && pool.is_empty(), "a closed connection stayed in the pool");

        // Bytes nobody asked for: not kept.
        let (b, mut sb) = pair(&listener).await;
        sb.write_all(b"HTTP/1.1 408 Request Timeout\r\n\r\n").await.unwrap();
        let mut b = Some(b);
        for _ in 0..1000 {
            tokio::task::yield_now().await;
            let Some(mut s) = b.take() else { break };
            if usable(&mut s) {
                b = Some(s);
            }
        }
        assert!(b.is_none(), "unasked bytes went unnoticed");
    }
}
