//! The notification listener as a pingora service: each notification takes the current
//! configuration once and runs [`NotifyState::handle`] (open → verify → forward), then the
//! acknowledgement, the metric and the log line.

use std::sync::atomic::{AtomicI64, Ordering};
use std::sync::Arc;
use std::time::Instant;

use async_trait::async_trait;
use http::Response;
use pingora::apps::http_app::ServeHttp;
use pingora::protocols::http::ServerSession;
use serde_json::{Map, Value};

use crate::config::Notify;
use crate::listener::PeerCheck;
use crate::live::Live;
use crate::logging;
use crate::metrics::NotificationOutcome;
use crate::notify::NotifyState;

/// Counts one notification in [`Live::notifications_in_flight`] for as long as it lives.
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

/// The listener: takes the current [`NotifyState`] for each notification.
pub struct Notifications {
    pub live: Arc<Live>,
}

#[async_trait]
impl ServeHttp for Notifications {
    async fn response(&self, session: &mut ServerSession) -> Response<Vec<u8>> {
        // Until the acknowledgement is built; pingora writes it right after (a few bytes), and
        // the drain only ends after two idle looks a poll apart.
        let _handling = Handling::new(&self.live.notifications.in_flight);
        // This listener faces the internet: its thread yields the CPU to the callers' proxy.
        crate::executor::lower_thread_priority_once(5);
        crate::listener::request_parsed(session);
        let start = Instant::now();
        let mut log = Map::new();
        let rt = self.live.current();
        let Some(state) = rt.notify.as_ref() else {
            return NotifyState::text(503, "FAIL");
        };
        let o = state.handle(session, &rt.executor, &mut log).await;
        let route = log.get("route").and_then(Value::as_str).unwrap_or("none").to_string();
        rt.metrics.notifications.with_label_values(&[&route, o.label]).inc();
        log.insert("outcome".into(), Value::String(o.label.into()));
        log.insert("status".into(), Value::from(o.status));
        log.insert("latency_ms".into(), Value::from((start.elapsed().as_secs_f64() * 1e6).round() / 1e3));
        log.insert("kind".into(), Value::String("notification".into()));
        logging::access(log);
        if o.label == "source_refused" {
            // Behind a trusted proxy a refused source is known only now: it keeps no slot.
            session.set_keepalive(None);
        }
        if o.status == 200 {
            NotifyState::text(200, state.ack())
        } else {
            NotifyState::text(o.status, "FAIL")
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
