//! The admin listener: `/metrics` (Prometheus text format), `/healthz` (the process answers)
//! and `/readyz` (every listener is bound, the process is not shutting down, and the proxy
//! listener accepts connections), `POST /-/reload` and `GET /config` (the configuration in
//! force, secrets redacted), and the inbox's endpoints (`/inbox…`, [`super::inbox_admin`]).
//! Kept apart from the proxied paths.

use std::net::SocketAddr;
use std::time::Duration;

use async_trait::async_trait;
use http::Response;
use pingora::apps::http_app::ServeHttp;
use pingora::protocols::http::ServerSession;

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use crate::bearer::{self, Presented};
use crate::live::Live;
use crate::metrics::{self, CallerRefusal};

/// How long `/readyz` waits for the proxy listener to accept a probe connection.
const READY_PROBE: Duration = Duration::from_millis(500);

/// What `/readyz` knows of the process's life: set once every listener listens and the
/// process handles its signals (a SIGTERM before that would end it at once), and once a
/// shutdown or hand-off has begun (then never ready again).
#[derive(Default)]
pub struct ReadyState {
    listening: AtomicBool,
    signals: AtomicBool,
    draining: AtomicBool,
}

impl ReadyState {
    /// Every listener is bound.
    pub fn set_listening(&self) {
        self.listening.store(true, Ordering::Release);
    }

    /// The process handles SIGTERM, SIGQUIT and SIGINT (a signal no longer ends it at once).
    pub fn set_signals_handled(&self) {
        self.signals.store(true, Ordering::Release);
    }

    /// Whether [`ReadyState::set_signals_handled`] has been called.
    pub fn signals_handled(&self) -> bool {
        self.signals.load(Ordering::Acquire)
    }

    /// A shutdown or hand-off has begun: `/readyz` answers not ready from now on.
    pub fn set_draining(&self) {
        self.draining.store(true, Ordering::Release);
    }

    /// Why the process is not ready, if it is not.
    pub fn not_ready(&self) -> Option<&'static [u8]> {
        if self.draining.load(Ordering::Acquire) {
            Some(b"shutting down\n")
        } else if !self.listening.load(Ordering::Acquire) {
            Some(b"not every listener is bound yet\n")
        } else if !self.signals_handled() {
            Some(b"starting\n")
        } else {
            None
        }
    }
}

/// The admin listener's app: serves `/metrics`, `/healthz`, `/readyz`, `POST /-/reload` and
/// `GET /config`.
pub struct Admin {
    /// The proxy listener whose acceptance makes us ready.
    pub proxy_addr: SocketAddr,
    /// What `POST /-/reload` reloads.
    pub live: Arc<Live>,
    /// What `GET /metrics` shows (paysign's metrics are registered into it).
    pub registry: prometheus::Registry,
    /// Listeners bound, shutdown begun.
    pub ready: Arc<ReadyState>,
}

/// Admin answers are never cached.
fn reply(status: u16, content_type: &str, body: Vec<u8>) -> Response<Vec<u8>> {
    let mut r = crate::serve::reply(status, content_type, body);
    r.headers_mut().insert(http::header::CACHE_CONTROL, http::HeaderValue::from_static("no-store"));
    r
}

impl Admin {
    /// Reloads and `GET /config` need the admin token when one is configured, and otherwise come
    /// from 127.0.0.1 or ::1 only: not the rest of 127.0.0.0/8, which sidecars (Istio's inbound
    /// traffic comes from 127.0.0.6) use for traffic from elsewhere.
    #[allow(clippy::result_large_err)]
    fn authorized(&self, session: &ServerSession) -> Result<(), Response<Vec<u8>>> {
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
                self.live.metrics().caller_refused("admin", CallerRefusal::Unauthenticated);
                refused(session, 401, "no valid admin token");
                let mut r = reply(401, "application/json", br#"{"result":"refused","error":"admin token required"}"#.to_vec());
                r.headers_mut().insert(http::header::WWW_AUTHENTICATE, http::HeaderValue::from_static("Bearer"));
                Err(r)
            }
            None => {
                let local = session.client_addr().and_then(|a| a.as_inet()).is_some_and(|a| {
                    let ip = a.ip().to_canonical();
                    ip == std::net::Ipv4Addr::LOCALHOST || ip == std::net::Ipv6Addr::LOCALHOST
                });
                if local {
                    return Ok(());
                }
                self.live.metrics().caller_refused("admin", CallerRefusal::NotLoopback);
                refused(session, 403, "not from 127.0.0.1 or ::1 and no admin_token_file is configured");
                Err(reply(
                    403,
                    "application/json",
                    br#"{"result":"refused","error":"without admin_token_file, reloads and GET /config are accepted from 127.0.0.1 and ::1 only"}"#.to_vec(),
                ))
            }
        }
    }

    /// An admin write (or `GET /config`): the one method it takes, from an authorized caller.
    #[allow(clippy::result_large_err)]
    fn guard(&self, session: &ServerSession, method: http::Method, usage: &'static [u8]) -> Result<(), Response<Vec<u8>>> {
        if session.req_header().method != method {
            return Err(reply(405, "text/plain", usage.to_vec()));
        }
        self.authorized(session)
    }

    /// `POST /-/reload`: the answer says the new generation and what needs a restart.
    async fn reload(&self, session: &ServerSession) -> Response<Vec<u8>> {
        if let Err(refusal) = self.guard(session, http::Method::POST, b"POST to reload\n") {
            return refusal;
        }
        // Key parsing is CPU work: keep it off the event loop.
        let live = self.live.clone();
        match tokio::task::spawn_blocking(move || live.reload()).await {
            Ok(Ok(done)) => {
                let mut answer = serde_json::json!({"result": "ok", "generation": done.generation});
                // Said only when there is something to say, so the usual answer stays short.
                if !done.needs_restart.is_empty() {
                    answer["needs_restart"] = serde_json::json!(done.needs_restart);
                }
                reply(200, "application/json", answer.to_string().into_bytes())
            }
            Ok(Err(e)) => {
                reply(500, "application/json", serde_json::json!({"result": "failed", "error": e.to_string()}).to_string().into_bytes())
            }
            Err(_) => reply(500, "application/json", br#"{"result":"failed","error":"internal"}"#.to_vec()),
        }
    }

    /// `GET /config`: the configuration in force (secrets redacted) and its generation.
    fn config(&self, session: &ServerSession) -> Response<Vec<u8>> {
        if let Err(refusal) = self.guard(session, http::Method::GET, b"GET the configuration\n") {
            return refusal;
        }
        let rt = self.live.current();
        let answer = serde_json::json!({
            "generation": rt.generation,
            "needs_restart": rt.needs_restart,
            "config": rt.config.describe(),
        });
        reply(200, "application/json", answer.to_string().into_bytes())
    }
}

/// One `warn` line per refused admin write: who tried what (never the token presented).
fn refused(session: &ServerSession, status: u16, why: &str) {
    let req = session.req_header();
    let peer = session.client_addr().and_then(|a| a.as_inet()).map_or_else(|| "unknown".to_string(), |a| a.ip().to_string());
    tracing::warn!("admin refused {} {} from {peer}: {status}, {why}", req.method, req.uri.path());
}

#[async_trait]
impl ServeHttp for Admin {
    async fn response(&self, session: &mut ServerSession) -> Response<Vec<u8>> {
        crate::listener::request_parsed(session);
        let path = session.req_header().uri.path().to_string();
        match path.as_str() {
            "/-/reload" => self.reload(session).await,
            "/config" => self.config(session),
            "/metrics" => reply(200, "text/plain; version=0.0.4", metrics::render(&self.registry).into_bytes()),
            "/healthz" => reply(200, "text/plain", b"ok\n".to_vec()),
            p if p == "/inbox" || p.starts_with("/inbox/") => {
                if let Err(refusal) = self.authorized(session) {
                    return refusal;
                }
                let (method, query) = (session.req_header().method.clone(), session.req_header().uri.query().map(str::to_string));
                match crate::ops::inbox_admin::inbox_admin(&self.live, &method, p, query.as_deref()).await {
                    Some(a) => reply(a.status, "application/json", a.body.to_string().into_bytes()),
                    None => {
                        reply(404, "text/plain", b"not found: /inbox, /inbox/dead, POST /inbox/redeliver, POST /inbox/purge\n".to_vec())
                    }
                }
            }
            "/readyz" => {
                if let Some(why) = self.ready.not_ready() {
                    return reply(503, "text/plain", why.to_vec());
                }
                let probe = tokio::time::timeout(READY_PROBE, tokio::net::TcpStream::connect(self.proxy_addr)).await;
                if matches!(probe, Ok(Ok(_))) {
                    reply(200, "text/plain", b"ready\n".to_vec())
                } else {
                    reply(503, "text/plain", b"proxy listener is not accepting\n".to_vec())
                }
            }
            _ => reply(404, "text/plain", b"not found: /metrics, /healthz, /readyz, POST /-/reload, GET /config, /inbox\n".to_vec()),
        }
    }
}
