//! Your own pingora gateway, with paysign inside — and the conformance target of paysign's
//! end-to-end contract tests (tests/conformance.rs runs each check against this and the
//! `paysign` binary alike).
//!
//! - ordinary routes are proxied to `--upstream` (without it, they get paysign's 404, as in the
//!   binary);
//! - the platform's paths (`/api/…`) are the whole paysign exchange, in ONE call from
//!   `request_filter` (plus one in `logging` for the access line and request metrics);
//! - the notification listener on `notify.listen` (when configured);
//! - paysign's metrics in this gateway's OWN registry, served at `GET /metrics` on
//!   `admin_listen` (with `/healthz` and `/readyz`);
//! - every listener behind the plugin's connection bound and head deadline
//!   (`max_connections`, `header_timeout_ms`, `max_header_bytes`).
//!
//! ```text
//! cargo run --release --example my_gateway -- -c conf/paysign.yaml [--upstream 127.0.0.1:3000]
//! ```
//! (`make demo` runs the sandbox platform it talks to.)

use std::time::Duration;

use async_trait::async_trait;
use pingora::apps::http_app::ServeHttp;
use pingora::prelude::*;
use pingora::protocols::http::ServerSession;
use pingora::proxy::{ProxyHttp, Session};

use paysign_plugin::metrics::Listener;
use paysign_plugin::{config, logging, metrics, request_parsed, Exchange, Paysign};

struct MyGateway {
    paysign: Paysign,
    /// Where everything that is not paysign's goes; `None`: paysign's 404.
    upstream: Option<String>,
}

#[async_trait]
impl ProxyHttp for MyGateway {
    type CTX = Exchange;
    fn new_ctx(&self) -> Exchange {
        Exchange::default()
    }

    /// The head is complete: its deadline ends (the listener's safeguard), and pipelined
    /// requests are answered in order.
    async fn early_request_filter(&self, session: &mut Session, _ex: &mut Exchange) -> Result<()> {
        request_parsed(session);
        Ok(())
    }

    /// `/api/…` is answered by paysign; everything else goes on to the ordinary upstream.
    async fn request_filter(&self, session: &mut Session, ex: &mut Exchange) -> Result<bool> {
        if self.paysign.request_filter(session, ex).await? {
            return Ok(true);
        }
        match self.upstream {
            Some(_) => Ok(false),
            None => self.paysign.not_found(session, ex).await,
        }
    }

    async fn upstream_peer(&self, _session: &mut Session, _ex: &mut Exchange) -> Result<Box<HttpPeer>> {
        match &self.upstream {
            Some(up) => Ok(Box::new(HttpPeer::new(up.as_str(), false, String::new()))),
            None => Err(Error::explain(ErrorType::InternalError, "no upstream configured")),
        }
    }

    /// paysign's access line and request metrics (nothing for the ordinary routes).
    async fn logging(&self, session: &mut Session, e: Option<&pingora::Error>, ex: &mut Exchange) {
        self.paysign.logging(session, e, ex);
    }
}

/// This gateway's own operations endpoint: its registry (with paysign's metrics in it).
struct Ops {
    registry: prometheus::Registry,
    /// For the inbox's operator endpoints (`/inbox…`, with `notify.inbox`).
    paysign: Paysign,
    /// Ready once the proxy listener accepts.
    proxy: String,
}

#[async_trait]
impl ServeHttp for Ops {
    async fn response(&self, session: &mut ServerSession) -> http::Response<Vec<u8>> {
        request_parsed(session);
        let (status, body) = match session.req_header().uri.path() {
            "/metrics" => (200, metrics::render(&self.registry).into_bytes()),
            "/healthz" => (200, b"ok\n".to_vec()),
            "/readyz" => {
                let probe = tokio::time::timeout(Duration::from_secs(1), tokio::net::TcpStream::connect(&self.proxy)).await;
                match probe {
                    Ok(Ok(_)) => (200, b"ready\n".to_vec()),
                    _ => (503, b"proxy listener is not accepting\n".to_vec()),
                }
            }
            // The inbox's operator endpoints, from this machine only (this gateway's own rule).
            p if p == "/inbox" || p.starts_with("/inbox/") => {
                let local = session.client_addr().and_then(|a| a.as_inet()).is_some_and(|a| a.ip().is_loopback());
                let (method, query) = (session.req_header().method.clone(), session.req_header().uri.query().map(str::to_string));
                if !local {
                    (403, b"from this machine only\n".to_vec())
                } else if let Some(a) = paysign_plugin::inbox_admin(self.paysign.live(), &method, p, query.as_deref()).await {
                    (a.status, a.body.to_string().into_bytes())
                } else {
                    (404, b"not found\n".to_vec())
                }
            }
            _ => (404, b"not found\n".to_vec()),
        };
        let mut builder = http::Response::builder().status(status).header("Content-Type", "text/plain; version=0.0.4");
        builder = builder.header("Content-Length", body.len());
        builder.body(body).unwrap_or_default()
    }
}

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let (config_path, upstream) = match args.iter().map(String::as_str).collect::<Vec<_>>().as_slice() {
        ["-c", c] => (c.to_string(), None),
        ["-c", c, "--upstream", u] | ["--upstream", u, "-c", c] => (c.to_string(), Some(u.to_string())),
        _ => {
            eprintln!("usage: my_gateway -c CONFIG [--upstream HOST:PORT]");
            std::process::exit(2);
        }
    };
    if let Err(e) = logging::init() {
        eprintln!("my_gateway: {e}");
        std::process::exit(2);
    }
    let cfg = config::load(config_path.as_ref()).unwrap_or_else(|e| {
        eprintln!("my_gateway: {e}");
        std::process::exit(1);
    });

    let (listen, admin_listen) = (cfg.listen.clone(), cfg.admin_listen.clone());
    config::announce(&cfg);
    // paysign's metrics in this gateway's own registry, served on its own endpoint below.
    let registry = prometheus::Registry::new();
    let paysign = Paysign::new(cfg, &registry).unwrap_or_else(|e| {
        eprintln!("my_gateway: {e}");
        std::process::exit(1);
    });

    // pingora's settings from paysign's configuration (threads, a grace that outlasts the drain).
    let mut server = Server::new_with_opt_and_conf(None, paysign.server_conf());
    server.bootstrap();

    // This gateway's proxy, behind paysign's safeguards (connection bound, head deadline and
    // size): paysign on `/api/…`, the rest to the ordinary upstream.
    let proxy = pingora::proxy::http_proxy(&server.configuration, MyGateway { paysign: paysign.clone(), upstream });
    server.add_service(paysign.safeguarded("my gateway", Listener::Proxy, &listen, proxy));
    // The platform's notifications on `notify.listen` (safeguarded, allow_from at accept).
    if let Some(notifications) = paysign.notification_service() {
        server.add_service(notifications);
    }
    // With `notify.inbox`: the deliverer of stored notifications.
    if let Some(deliverer) = paysign.deliverer_service() {
        server.add_service(deliverer);
    }
    // Its own operations endpoint, with paysign's metrics in its registry.
    let mut ops =
        paysign.safeguarded("my gateway ops", Listener::Admin, &admin_listen, Ops { registry, paysign: paysign.clone(), proxy: listen });
    ops.threads = Some(1);
    server.add_service(ops);
    // SIGHUP reloads paysign's configuration (and keys) instead of ending the process.
    match paysign.reload_on_sighup() {
        Ok(reload) => {
            server.add_service(reload);
        }
        Err(e) => {
            eprintln!("my_gateway: cannot handle SIGHUP: {e}");
            std::process::exit(1);
        }
    }

    // After SIGTERM: exit as soon as no call is in flight, at the latest at the drain deadline.
    if let Err(e) = paysign.exit_when_drained(server.watch_execution_phase()) {
        eprintln!("my_gateway: cannot watch the shutdown: {e}");
        std::process::exit(1);
    }
    server.run_forever();
}
