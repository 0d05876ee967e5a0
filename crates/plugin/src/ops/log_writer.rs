//! The one thread that writes log lines to stderr. Event loops only append a finished line to
//! a bounded buffer and go on: a log consumer that stops reading (a full pipe, a stalled
//! journald or container log driver) must not stop payments. Before this, a `write` to a full
//! stderr pipe blocked the event loop that logged, and with it every connection on that loop.
//!
//! - Lines leave in batches: when the batch reaches [`FLUSH_AT`] bytes, [`FLUSH_EVERY`] after
//!   its first line, or at once for a line marked urgent (anything but an access line).
//! - At most [`MAX_PENDING`] bytes wait; a line beyond that is dropped and counted
//!   (`paysign_log_lines_dropped_total`, and one warning line once the writer catches up).
//! - At exit (`std::process::exit`, also pingora's) what is pending is written, waiting at
//!   most [`EXIT_WAIT`] for a stalled consumer.

use std::io::Write;
use std::sync::{Condvar, Mutex, MutexGuard, OnceLock};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

/// A batch is written once it holds this many bytes …
pub const FLUSH_AT: usize = 32 * 1024;
/// … or this long after its first line.
pub const FLUSH_EVERY: Duration = Duration::from_millis(20);
/// Bytes that may wait for a consumer that does not read; beyond them lines are dropped.
pub const MAX_PENDING: usize = 1024 * 1024;
/// How long exit waits for the pending lines to be written.
pub const EXIT_WAIT: Duration = Duration::from_secs(1);

struct Pending {
    lines: Vec<u8>,
    /// Lines refused since the last batch left (the consumer is not keeping up).
    dropped: u64,
    /// A line that should not wait for the batch to fill.
    urgent: bool,
    /// The writer thread is writing a batch (taken out of `lines`).
    writing: bool,
}

struct Writer {
    pending: Mutex<Pending>,
    /// Wakes the writer thread.
    wake: Condvar,
    /// Wakes [`flush`] when a batch has been written.
    written: Condvar,
}

static WRITER: Writer = Writer {
    pending: Mutex::new(Pending { lines: Vec::new(), dropped: 0, urgent: false, writing: false }),
    wake: Condvar::new(),
    written: Condvar::new(),
};
/// Lines dropped since the process started (stderr is one per process): every instance's
/// `paysign_log_lines_dropped_total` shows it.
static DROPPED: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);

/// How many log lines were dropped because stderr was not read fast enough.
pub fn lines_dropped() -> u64 {
    DROPPED.load(std::sync::atomic::Ordering::Relaxed)
}

/// Whether the writer thread runs (started on first use).
static STARTED: OnceLock<bool> = OnceLock::new();

/// The writer, its thread started on first use; `None` if no thread could be started (then
/// lines are written directly, as a last resort).
fn writer() -> Option<&'static Writer> {
    let started = *STARTED.get_or_init(|| {
        let spawned = std::thread::Builder::new().name("paysign-log".into()).spawn(|| run(&WRITER)).is_ok();
        if spawned {
            // SAFETY: registering a plain `extern "C" fn()`; it runs on the exiting thread.
            unsafe { libc::atexit(flush_at_exit) };
        }
        spawned
    });
    started.then_some(&WRITER)
}

fn lock(w: &Writer) -> MutexGuard<'_, Pending> {
    // A panic while holding the lock leaves plain bytes behind: keep going.
    w.pending.lock().unwrap_or_else(|p| p.into_inner())
}

/// Queues one whole line (ending in `\n`) for stderr; never blocks on the consumer.
/// `urgent`: write it without waiting for the batch to fill (application lines).
pub fn write(line: &[u8], urgent: bool) {
    write_parts(&[line], urgent);
}

/// Queues `text` and a newline as one line (see [`write()`]), without first joining them.
pub fn write_str_line(text: &str, urgent: bool) {
    write_parts(&[text.as_bytes(), b"\n"], urgent);
}

/// Queues the parts of one line, all or none.
fn write_parts(parts: &[&[u8]], urgent: bool) {
    let Some(w) = writer() else {
        let mut err = std::io::stderr().lock();
        for part in parts {
            let _ = err.write_all(part);
        }
        return;
    };
    let len: usize = parts.iter().map(|p| p.len()).sum();
    let mut p = lock(w);
    if p.lines.len() + len > MAX_PENDING {
        p.dropped += 1;
        drop(p);
        DROPPED.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        return;
    }
    let first = p.lines.is_empty();
    for part in parts {
        p.lines.extend_from_slice(part);
    }
    let wake = urgent || first || p.lines.len() >= FLUSH_AT;
    p.urgent |= urgent;
    drop(p);
    if wake {
        w.wake.notify_one();
    }
}

/// Waits (at most `limit`) until every line queued so far has been written.
pub fn flush(limit: Duration) {
    if STARTED.get() != Some(&true) {
        return;
    }
    let w = &WRITER;
    let deadline = Instant::now() + limit;
    let mut p = lock(w);
    p.urgent = true;
    w.wake.notify_one();
    while !p.lines.is_empty() || p.writing || p.dropped > 0 {
        let Some(left) = deadline.checked_duration_since(Instant::now()) else { return };
        p = w.written.wait_timeout(p, left).unwrap_or_else(|e| e.into_inner()).0;
    }
}

extern "C" fn flush_at_exit() {
    flush(EXIT_WAIT);
}

/// The writer thread: take a batch, write it (blocking only this thread), repeat.
fn run(w: &'static Writer) {
    let mut spare = Vec::with_capacity(FLUSH_AT);
    let mut stderr = std::io::stderr();
    loop {
        let (mut batch, dropped) = {
            let mut p = lock(w);
            while p.lines.is_empty() && p.dropped == 0 {
                p = w.wake.wait(p).unwrap_or_else(|e| e.into_inner());
            }
            // Let the batch gather, unless it is full or a line is urgent.
            let gather_until = Instant::now() + FLUSH_EVERY;
            while !p.urgent && p.lines.len() < FLUSH_AT {
                let Some(left) = gather_until.checked_duration_since(Instant::now()) else { break };
                p = w.wake.wait_timeout(p, left).unwrap_or_else(|e| e.into_inner()).0;
            }
            p.urgent = false;
            p.writing = true;
            (std::mem::replace(&mut p.lines, std::mem::take(&mut spare)), std::mem::take(&mut p.dropped))
        };
        if dropped > 0 {
            let note = serde_json::json!({
                "ts": timestamp(),
                "level": "warn",
                "target": "paysign::logging",
                "msg": format!("{dropped} log line(s) dropped: stderr is not being read fast enough"),
            });
            batch.extend_from_slice(format!("{note}\n").as_bytes());
        }
        // An error (stderr closed) loses this batch, as a direct write would have.
        let _ = stderr.write_all(&batch);
        batch.clear();
        // A burst may have grown the buffer: do not keep a megabyte for the quiet times after.
        batch.shrink_to(4 * FLUSH_AT);
        spare = batch;
        lock(w).writing = false;
        w.written.notify_all();
    }
}

/// RFC 3339 UTC with milliseconds, without pulling in a date crate.
pub fn timestamp() -> String {
    rfc3339(SystemTime::now().duration_since(UNIX_EPOCH).unwrap_or_default())
}

/// `yyyy-MM-ddTHH:mm:ss.SSSZ` for a time since the Unix epoch.
fn rfc3339(now: Duration) -> String {
    let secs = now.as_secs();
    let (days, rem) = (secs / 86_400, secs % 86_400);
    // Civil-from-days (H. Hinnant's algorithm).
    let z = days as i64 + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1_460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    let y = yoe + era * 400 + i64::from(m <= 2);
    // Fixed-width digits written in place (one per access line: `format!` cost more here).
    let mut out = *b"0000-00-00T00:00:00.000Z";
    let mut put = |at: usize, width: usize, mut n: u64| {
        for i in (at..at + width).rev() {
            out[i] = b'0' + (n % 10) as u8;
            n /= 10;
        }
    };
    put(0, 4, y.clamp(0, 9999) as u64);
    put(5, 2, m as u64);
    put(8, 2, d as u64);
    put(11, 2, rem / 3600);
    put(14, 2, (rem % 3600) / 60);
    put(17, 2, rem % 60);
    put(20, 3, u64::from(now.subsec_millis()));
    out.iter().map(|&b| char::from(b)).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn timestamps_are_rfc3339_utc_with_milliseconds() {
        for (ms, text) in [
            (0, "1970-01-01T00:00:00.000Z"),
            (951_782_400_999, "2000-02-29T00:00:00.999Z"),
            (1_709_164_799_123, "2024-02-28T23:59:59.123Z"),
            (1_795_737_204_007, "2026-11-26T23:53:24.007Z"),
            (253_402_300_799_999, "9999-12-31T23:59:59.999Z"),
        ] {
            assert_eq!(rfc3339(Duration::from_millis(ms)), text);
        }
        assert_eq!(timestamp().len(), 24);
    }
}
