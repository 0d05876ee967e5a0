//! The durable inbox's acknowledgement latency: how long a verified notification waits to be
//! stored (committed and synced) before the platform may be acknowledged — on the embedded
//! SQLite store and on a real PostgreSQL server (Debian's, started here like the tests do).
//! `cargo bench --bench inbox`.
//!
//! Two measurements per store: an open loop offering 500 notifications/s for 10 s (each store's
//! latency from the moment it was due, so a stall counts for everything queued behind it:
//! p50/p99/max), and the most it stores per second with 64 stores in flight.

use std::sync::Arc;
use std::time::{Duration, Instant};

use paysign_inbox::postgres::PgInbox;
use paysign_inbox::sqlite::SqliteInbox;
use paysign_inbox::{Cipher, Inbox, NewNotification};

/// A real PostgreSQL server, as the tests start it.
#[path = "../tests/common/postgres.rs"]
#[allow(dead_code)] // restart: the tests use it
mod postgres;

/// What `postgres.rs` needs from the test harness.
fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port()
}

fn eventually(secs: u64, mut check: impl FnMut() -> bool) -> bool {
    let deadline = Instant::now() + Duration::from_secs(secs);
    let mut backoff = Duration::from_millis(5);
    while !check() {
        if Instant::now() > deadline {
            return false;
        }
        std::thread::sleep(backoff);
        backoff = (backoff * 2).min(Duration::from_millis(100));
    }
    true
}

const RATE: u32 = 500;
const SECONDS: u32 = 10;

fn note(i: usize) -> NewNotification {
    use sha2::Digest;
    let id = format!("bench-{i:08}");
    NewNotification {
        raw_digest: sha2::Sha256::digest(id.as_bytes()).into(),
        route: "/notify/bindcard".into(),
        customer_no: "202112090603".into(),
        order_no: Some(format!("BC-{i}")),
        ordered: false,
        // A bindCard notification's verified plaintext is ~600 bytes.
        body: format!("{{\"orderNo\":\"BC-{i}\",\"customerNo\":\"202112090603\",\"status\":\"SUCCESS\",\"pad\":\"{}\"}}", "x".repeat(520))
            .into_bytes(),
        id,
    }
}

fn percentile(sorted: &[Duration], p: f64) -> Duration {
    sorted[((sorted.len() as f64 * p).ceil() as usize).clamp(1, sorted.len()) - 1]
}

async fn open_loop(inbox: Arc<dyn Inbox>, first: usize) -> Vec<Duration> {
    let start = Instant::now();
    let period = Duration::from_secs(1) / RATE;
    let tasks: Vec<_> = (0..(RATE * SECONDS) as usize)
        .map(|i| {
            let inbox = inbox.clone();
            let due = start + period * i as u32;
            tokio::spawn(async move {
                tokio::time::sleep_until(due.into()).await;
                inbox.store(note(first + i)).await.expect("stored");
                due.elapsed()
            })
        })
        .collect();
    let mut latencies = Vec::with_capacity(tasks.len());
    for t in tasks {
        latencies.push(t.await.unwrap());
    }
    latencies.sort();
    latencies
}

async fn closed_loop(inbox: Arc<dyn Inbox>, first: usize) -> f64 {
    let start = Instant::now();
    let total = 20_000;
    let next = Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let workers: Vec<_> = (0..64)
        .map(|_| {
            let (inbox, next) = (inbox.clone(), next.clone());
            tokio::spawn(async move {
                loop {
                    let i = next.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                    if i >= total {
                        return;
                    }
                    inbox.store(note(first + i)).await.expect("stored");
                }
            })
        })
        .collect();
    for w in workers {
        w.await.unwrap();
    }
    total as f64 / start.elapsed().as_secs_f64()
}

/// A platform's re-send of a stored notification, recognised by its bytes before anything is
/// decrypted: the lookup's latency, one at a time.
async fn recognise(inbox: &dyn Inbox) -> Vec<Duration> {
    use sha2::Digest;
    let mut latencies = Vec::with_capacity(2000);
    for i in 0..2000 {
        let digest: [u8; 32] = sha2::Sha256::digest(format!("bench-{:08}", (i * 7) % 5000).as_bytes()).into();
        let start = Instant::now();
        assert!(inbox.recognise(digest).await.expect("recognised").is_some());
        latencies.push(start.elapsed());
    }
    latencies.sort();
    latencies
}

async fn measure(name: &str, inbox: Arc<dyn Inbox>) {
    let l = open_loop(inbox.clone(), 0).await;
    let ms = |d: Duration| d.as_secs_f64() * 1e3;
    let r = recognise(&*inbox).await;
    let rate = closed_loop(inbox, 1_000_000).await;
    println!(
        "{name}: {RATE}/s offered for {SECONDS} s: acknowledgement latency p50 {:.2} ms, p99 {:.2} ms, max {:.2} ms; {rate:.0} stored/s with 64 in flight; a re-send recognised before decryption in p50 {:.3} ms, p99 {:.3} ms",
        ms(percentile(&l, 0.50)),
        ms(percentile(&l, 0.99)),
        ms(l[l.len() - 1]),
        ms(percentile(&r, 0.50)),
        ms(percentile(&r, 0.99)),
    );
}

fn main() {
    if std::env::args().any(|a| a == "--list") {
        return;
    }
    let key = || Cipher::from_hex(&"5a".repeat(32)).unwrap();
    let rt = tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().unwrap();
    let dir = std::env::temp_dir().join(format!("paysign-inbox-bench-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    rt.block_on(async {
        let sqlite: Arc<dyn Inbox> = Arc::new(SqliteInbox::open(&dir.join("inbox.db"), key()).unwrap());
        measure("SQLite (WAL, synchronous=FULL, group commit)", sqlite).await;
    });
    let pg = postgres::Postgres::start();
    rt.block_on(async {
        let inbox: Arc<dyn Inbox> = Arc::new(PgInbox::connect(&pg.url(), key()).await.unwrap());
        measure("PostgreSQL (synchronous_commit=on, fsync=on)", inbox).await;
    });
    drop(pg);
    let _ = std::fs::remove_dir_all(&dir);
}
