//! The notification listener as a pingora service: each notification takes the current
//! configuration once and runs [`NotifyState::handle`] (open → verify → deliver), then the
//! acknowledgement, the metric and the access line. [`Notifications::service`] builds the
//! service with the listener's safeguards applied ([`crate::listener::safeguarded_service`]:
//! connection bound, peer check, head deadline): it faces the internet.

use std::sync::atomic::{AtomicI64, Ordering};
use std::sync::Arc;
use std::time::Instant;

use async_trait::async_trait;
use http::Response;
use pingora::apps::http_app::ServeHttp;
use pingora::protocols::http::ServerSession;
use pingora::services::listening::Service;

use crate::config::Notify;
use crate::listener::{tcp_listener, Limited, Limits, PeerCheck};
use crate::live::Live;
use crate::logging;
use crate::metrics::Listener;
use crate::notify::{NotificationFacts, NotificationLine, NotificationOutcome, NotifyState};

/// Counts one notification in [`crate::live::NotifyCounters::in_flight`] for as long as it lives.
struct Handling<'a>(&'a AtomicI64);
impl<'a> Handling<'a> {
    fn new(in_flight: &'a AtomicI64) -> Self {
        in_flight.fetch_add(1, Ordering::AcqRel);
        Handling(in_flight)
    }
}
impl Drop for Handling<'_> {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::AcqRel);
    }
}

/// The listener: takes the current notification state (routes, keys, target) for each
/// notification.
pub struct Notifications {
    live: Arc<Live>,
    /// The nice value its threads take, if any (opt-in: see [`Notifications::lower_priority`]).
    nice: Option<i32>,
}

/// The nice value the binary gives the notification listener's thread.
pub const NOTIFY_NICE: i32 = 5;

impl Notifications {
    /// The listener of `live`'s notification routes; its threads' priority is left alone.
    pub fn new(live: Arc<Live>) -> Self {
        Notifications { live, nice: None }
    }

    /// Opt-in: each thread that handles a notification lowers its own priority (`setpriority`
    /// to `nice`, once per thread, never raised again), so that on a busy machine the callers'
    /// requests win the CPU over anything a stranger on the internet can send. The binary
    /// does this ([`NOTIFY_NICE`]) on the listener's own thread; an embedder should only where
    /// the service runs on threads of its own (`threads`), as [`Notifications::service`] does.
    pub fn lower_priority(mut self, nice: i32) -> Self {
        self.nice = Some(nice);
        self
    }

    /// The notification listener as a ready pingora service, or `None` when the configuration
    /// has no `notify`: listening on `notify.listen`, on one thread of its own, behind
    /// `max_connections`, `header_timeout_ms` and `max_header_bytes` and the `allow_from`
    /// check at accept ([`Notifications::peer_check`]) — the same safeguards as the binary's.
    /// Add it with `server.add_service(…)`.
    pub fn service(self) -> Option<Service<Limited<Notifications>>> {
        let rt = self.live.current();
        let listen = rt.config.notify.as_ref()?.listen.clone();
        let limits = Limits::of(&rt.config);
        let check = Self::peer_check(self.live.clone());
        let metrics = self.live.metrics().clone();
        let mut service =
            Limited::new(self, Listener::Notify, limits, &metrics).with_peer_check(check).into_service("paysign notifications");
        service.add_listener(tcp_listener(&listen));
        service.threads = Some(1);
        Some(service)
    }
}

#[async_trait]
impl ServeHttp for Notifications {
    async fn response(&self, session: &mut ServerSession) -> Response<Vec<u8>> {
        // Until the acknowledgement is built; pingora writes it right after (a few bytes), and
        // the drain only ends after two idle looks a poll apart.
        let _handling = Handling::new(&self.live.notifications.in_flight);
        if let Some(nice) = self.nice {
            crate::executor::lower_thread_priority_once(nice);
        }
        crate::listener::request_parsed(session);
        let start = Instant::now();
        let rt = self.live.current();
        let Some(state) = rt.notify.as_ref() else {
            return NotifyState::text(503, "FAIL");
        };
        let mut facts = NotificationFacts::default();
        let outcome = state.handle(session, &mut facts).await;
        rt.metrics.notifications.with_label_values(&[facts.route.unwrap_or("none"), outcome.as_str()]).inc();
        let status = outcome.status();
        logging::access_line(&NotificationLine {
            facts,
            outcome,
            status,
            latency_ms: (start.elapsed().as_secs_f64() * 1e6).round() / 1e3,
            kind: "notification",
            ts: logging::Now,
            level: "info",
            msg: "access",
        });
        if outcome == NotificationOutcome::SourceRefused {
            // Behind a trusted proxy a refused source is known only now: it keeps no slot.
            session.set_keepalive(None);
        }
        if outcome.acknowledged() {
            NotifyState::text(200, state.ack())
        } else {
            NotifyState::text(status, "FAIL")
        }
    }
}

impl Notifications {
    /// `allow_from` at accept, from the peer's address alone, so a refused sender never holds
    /// one of the listener's connections: a peer is admitted when there is no allow-list, when
    /// it is on it, or when it is a trusted proxy (whose `X-Forwarded-For` is checked per
    /// notification, and a refused source's connection closed after its 403). Reads the
    /// configuration in force at each accept (reloads apply). Refusals are counted as
    /// `paysign_notifications_total{route="none",outcome="source_refused"}`.
    pub fn peer_check(live: Arc<Live>) -> PeerCheck {
        Arc::new(move |ip| {
            let rt = live.current();
            let admitted = rt.config.notify.as_ref().is_none_or(|n| admits_peer(n, ip));
            if !admitted {
                let refused = NotificationOutcome::SourceRefused.as_str();
                rt.metrics.notifications.with_label_values(&["none", refused]).inc();
                // Which sender was refused, for the operator: at most one line a second, with
                // how many refusals it stands for, so a flood of refused connections cannot
                // crowd other lines out of the log (the metric counts every one).
                if let Some(refused) = live.notifications.refusal_lines.take() {
                    tracing::warn!(
                        kind = "notification",
                        outcome = "source_refused",
                        peer = %ip,
                        refused,
                        "notification connection from {ip} closed at accept: not in notify.allow_from ({refused} refused since the last such line)"
                    );
                }
            }
            admitted
        })
    }
}

/// Whether a connection from `ip` may be served at all (see [`Notifications::peer_check`]).
pub fn admits_peer(n: &Notify, ip: std::net::IpAddr) -> bool {
    n.allow_from.is_empty() || n.allow_from.iter().any(|c| c.contains(ip)) || n.trusted_proxies.iter().any(|c| c.contains(ip))
}
