//! The notification listener as a pingora service: each notification takes the current
//! configuration once and runs [`NotifyState::handle`] (open → verify → forward), then the
//! acknowledgement, the metric and the log line.

use std::sync::Arc;
use std::time::Instant;

use async_trait::async_trait;
use http::Response;
use pingora::apps::http_app::ServeHttp;
use pingora::protocols::http::ServerSession;
use serde_json::{Map, Value};

use crate::live::Live;
use crate::logging;
use crate::metrics;
use crate::notify::NotifyState;

/// The listener: takes the current [`NotifyState`] for each notification.
pub struct Notifications {
    pub live: Arc<Live>,
}

#[async_trait]
impl ServeHttp for Notifications {
    async fn response(&self, session: &mut ServerSession) -> Response<Vec<u8>> {
        // This listener faces the internet: its thread yields the CPU to the callers' proxy.
        crate::executor::lower_thread_priority_once(5);
        let start = Instant::now();
        let mut log = Map::new();
        let rt = self.live.current();
        let Some(state) = rt.notify.as_ref() else {
            return NotifyState::text(503, "FAIL");
        };
        let o = state.handle(session, &rt.executor, &mut log).await;
        let route = log.get("route").and_then(Value::as_str).unwrap_or("none").to_string();
        metrics::NOTIFICATIONS.with_label_values(&[&route, o.label]).inc();
        log.insert("outcome".into(), Value::String(o.label.into()));
        log.insert("status".into(), Value::from(o.status));
        log.insert("latency_ms".into(), Value::from((start.elapsed().as_secs_f64() * 1e6).round() / 1e3));
        log.insert("kind".into(), Value::String("notification".into()));
        logging::access(log);
        if o.status == 200 {
            NotifyState::text(200, state.ack())
        } else {
            NotifyState::text(o.status, "FAIL")
        }
    }
}
