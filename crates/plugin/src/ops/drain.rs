//! Shutdown that never abandons a call: once pingora stops accepting (SIGTERM, or the sockets
//! handed to a new process), the process ends as soon as no call or notification is in flight,
//! and at the latest at the drain deadline — max(`grace_period_seconds`, the longest a call can
//! take) — where every call not yet sent is answered 503 `not-sent` first. pingora alone would
//! wait out its whole grace period, or cut calls when it ends.

use std::time::{Duration, Instant};

use pingora::server::configuration::ServerConf;
use pingora::server::ExecutionPhase;

use crate::config::Config;

/// The longest a call whose connection was open at SIGTERM can still take: the rest of its
/// head, its body, every connection attempt, the platform's answer (or a notification's body
/// and forwarding), plus a second for the CPU work around them (sealing, opening, the
/// private-key queue: milliseconds each). Shutdown waits at least this long, so every such call
/// ends with its own answer and none the platform may have is abandoned.
pub fn longest_call(cfg: &Config) -> Duration {
    let up = &cfg.upstream;
    // Saturating: the settings are unbounded numbers (`connect_retries: 4294967295` panicked).
    let attempts = up.connect_timeout.saturating_mul(up.connect_retries.saturating_add(1));
    let call = cfg.client_body_timeout.saturating_add(attempts).saturating_add(up.read_timeout);
    let notification = cfg.notify.as_ref().map_or(Duration::ZERO, |n| n.body_timeout.saturating_add(n.forward_timeout));
    cfg.header_timeout.saturating_add(call.max(notification)).saturating_add(Duration::from_secs(1))
}

/// The drain deadline of `cfg`: max(`grace_period_seconds`, [`longest_call`]), in whole seconds.
pub fn deadline(cfg: &Config) -> Duration {
    let drain = Duration::from_secs(cfg.grace_period_seconds).max(longest_call(cfg));
    Duration::from_secs(drain.as_secs().saturating_add(u64::from(drain.subsec_nanos() > 0)))
}

/// pingora's server settings for a gateway of `cfg`: its `threads` (work stealing only with
/// more than one), and pingora's own grace outlasting the drain and the answers to the calls
/// not yet sent, so that the drain ([`when_drained`]), not pingora dropping its runtimes, ends
/// the process.
pub fn server_conf(cfg: &Config) -> ServerConf {
    let mut conf = ServerConf::default();
    conf.grace_period_seconds = Some(deadline(cfg).as_secs() + ANSWER_NOT_SENT.as_secs() + 1);
    conf.graceful_shutdown_timeout_seconds = Some(1);
    conf.threads = cfg.threads;
    // One event loop (`threads: 1`, e.g. one pinned core): a single-threaded runtime — there
    // is no other loop to steal from, and the work-stealing scheduler's cross-thread machinery
    // is pure cost (md5 on one pinned core: 247 → 237 µs of CPU per call at 8 connections).
    // With more loops stealing stays on: without it an unlucky loop's callers wait.
    conf.work_stealing = conf.threads > 1;
    conf
}

/// How often the drain looks at the calls in flight.
const DRAIN_POLL: Duration = Duration::from_millis(20);

/// At the drain deadline, how long the calls not yet sent have to write their 503 `not-sent`
/// (each is a few hundred bytes already built: milliseconds; this bounds a stuck caller).
pub const ANSWER_NOT_SENT: Duration = Duration::from_secs(1);

/// Once pingora has stopped accepting (after SIGTERM, or after handing the sockets over), runs
/// `then` (the binary: exit)
/// as soon as no call or notification is in flight, and at the latest after `deadline` (pingora
/// itself would wait out its whole grace period even with nothing to do). At the deadline the
/// calls not yet sent are answered 503 `not-sent` (`stop_sending`; for at most [`ANSWER_NOT_SENT`]) before
/// the exit, instead of being cut.
pub fn when_drained(
    mut phases: tokio::sync::broadcast::Receiver<ExecutionPhase>,
    in_flight: impl Fn() -> i64 + Send + 'static,
    stop_sending: impl Fn() + Send + 'static,
    deadline: Duration,
    then: impl FnOnce() + Send + 'static,
) -> std::io::Result<()> {
    std::thread::Builder::new().name("paysign drain".into()).spawn(move || {
        loop {
            match phases.blocking_recv() {
                Ok(ExecutionPhase::ShutdownStarted) => break,
                Ok(_) | Err(tokio::sync::broadcast::error::RecvError::Lagged(_)) => continue,
                Err(tokio::sync::broadcast::error::RecvError::Closed) => return,
            }
        }
        let start = Instant::now();
        // Idle twice in a row, a poll apart: a connection accepted just before the listener
        // closed has had the time to become a call.
        let mut idle_before = false;
        loop {
            let n = in_flight();
            if n <= 0 && idle_before {
                tracing::info!("shutdown: no call in flight after {} ms; exiting", start.elapsed().as_millis());
                break;
            }
            idle_before = n <= 0;
            if start.elapsed() >= deadline {
                tracing::warn!(
                    "shutdown: {n} call(s) still in flight at the drain deadline ({} s); those not yet sent are answered 503 not-sent",
                    deadline.as_secs()
                );
                stop_sending();
                let answering = Instant::now();
                let mut n = in_flight();
                while n > 0 && answering.elapsed() < ANSWER_NOT_SENT {
                    std::thread::sleep(DRAIN_POLL);
                    n = in_flight();
                }
                if n > 0 {
                    tracing::warn!("shutdown: {n} call(s) still in flight; exiting");
                } else {
                    tracing::info!("shutdown: no call in flight after {} ms; exiting", start.elapsed().as_millis());
                }
                break;
            }
            std::thread::sleep(DRAIN_POLL);
        }
        then();
    })?;
    Ok(())
}
