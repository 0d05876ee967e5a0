//! The admin listener: `/metrics` (Prometheus text format), `/healthz` (the process answers)
//! and `/readyz` (the proxy listener accepts connections). Kept apart from the proxied paths.

use std::net::SocketAddr;
use std::time::Duration;

use async_trait::async_trait;
use http::Response;
use pingora::apps::http_app::ServeHttp;
use pingora::protocols::http::ServerSession;

use std::sync::Arc;

use crate::bearer::{self, Presented};
use crate::live::Live;
use crate::metrics;

/// How long `/readyz` waits for the proxy listener to accept a probe connection.
const READY_PROBE: Duration = Duration::from_millis(500);

pub struct Admin {
    /// The proxy listener whose acceptance makes us ready.
    pub proxy_addr: SocketAddr,
    /// What `POST /-/reload` reloads.
    pub live: Arc<Live>,
    /// What `GET /metrics` shows (paysign's metrics are registered into it).
    pub registry: prometheus::Registry,
}

/// Admin answers are never cached.
fn reply(status: u16, content_type: &str, body: Vec<u8>) -> Response<Vec<u8>> {
    let mut r = crate::serve::reply(status, content_type, body);
    r.headers_mut().insert(http::header::CACHE_CONTROL, http::HeaderValue::from_static("no-store"));
    r
}

impl Admin {
    /// Admin writes need the admin token when one is configured, and otherwise come from
    /// loopback only.
    #[allow(clippy::result_large_err)]
    fn may_write(&self, session: &ServerSession) -> Result<(), Response<Vec<u8>>> {
        let expected = self.live.current().config.admin_token_sha256;
        match expected {
            Some(expected) => {
                let ok = match bearer::presented(&session.req_header().headers) {
                    Presented::Token(t) => bearer::same(&crate::config::sha256(t.as_bytes()), &expected),
                    Presented::Missing | Presented::Malformed => false,
                };
                if ok {
                    return Ok(());
                }
                metrics::CALLER_REFUSED.with_label_values(&["admin", "unauthenticated"]).inc();
                let mut r = reply(401, "application/json", br#"{"result":"refused","error":"admin token required"}"#.to_vec());
                r.headers_mut().insert(http::header::WWW_AUTHENTICATE, http::HeaderValue::from_static("Bearer"));
                Err(r)
            }
            None => {
                let loopback = session.client_addr().and_then(|a| a.as_inet()).is_some_and(|a| a.ip().is_loopback());
                if loopback {
                    return Ok(());
                }
                metrics::CALLER_REFUSED.with_label_values(&["admin", "not_loopback"]).inc();
                Err(reply(
                    403,
                    "application/json",
                    br#"{"result":"refused","error":"without admin_token_file, reloads are accepted from loopback only"}"#.to_vec(),
                ))
            }
        }
    }
}

#[async_trait]
impl ServeHttp for Admin {
    async fn response(&self, session: &mut ServerSession) -> Response<Vec<u8>> {
        crate::listener::head_parsed(session.stream());
        // Pipelined requests are answered in order, never one dropped.
        session.set_pipelining_enabled(true);
        let path = session.req_header().uri.path().to_string();
        if path == "/-/reload" {
            if session.req_header().method != http::Method::POST {
                return reply(405, "text/plain", b"POST to reload\n".to_vec());
            }
            if let Err(refusal) = self.may_write(session) {
                return refusal;
            }
            // Key parsing is CPU work: keep it off the event loop.
            let live = self.live.clone();
            return match tokio::task::spawn_blocking(move || live.reload()).await {
                Ok(Ok(generation)) => {
                    reply(200, "application/json", serde_json::json!({"result": "ok", "generation": generation}).to_string().into_bytes())
                }
                Ok(Err(e)) => {
                    reply(500, "application/json", serde_json::json!({"result": "failed", "error": e.to_string()}).to_string().into_bytes())
                }
                Err(_) => reply(500, "application/json", br#"{"result":"failed","error":"internal"}"#.to_vec()),
            };
        }
        match path.as_str() {
            "/metrics" => reply(200, "text/plain; version=0.0.4", metrics::render(&self.registry).into_bytes()),
            "/healthz" => reply(200, "text/plain", b"ok\n".to_vec()),
            "/readyz" => {
                let probe = tokio::time::timeout(READY_PROBE, tokio::net::TcpStream::connect(self.proxy_addr)).await;
                if matches!(probe, Ok(Ok(_))) {
                    reply(200, "text/plain", b"ready\n".to_vec())
                } else {
                    reply(503, "text/plain", b"proxy listener is not accepting\n".to_vec())
                }
            }
            _ => reply(404, "text/plain", b"not found: /metrics, /healthz, /readyz, POST /-/reload\n".to_vec()),
        }
    }
}
