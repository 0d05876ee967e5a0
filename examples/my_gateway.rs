//! Your own pingora gateway, with paysign inside: ordinary routes are proxied to an ordinary
//! upstream; the platform's paths (`/api/…`) are sealed, sent, opened and verified by paysign's
//! plugin API, from `request_filter` (a verified answer must be complete before the status
//! line leaves, so this cannot be a streaming filter).
//!
//! ```text
//! cargo run --example my_gateway -- conf/paysign.yaml 127.0.0.1:8000 127.0.0.1:3000
//! ```
//! (configuration, listen address, ordinary upstream; `make demo` runs the sandbox it talks to.)

use async_trait::async_trait;
use bytes::Bytes;
use paysign_plugin::call::Paysign;
use pingora::http::ResponseHeader;
use pingora::prelude::*;
use pingora::proxy::{ProxyHttp, Session};

struct MyGateway {
    paysign: Paysign,
    ordinary_upstream: String,
}

#[async_trait]
impl ProxyHttp for MyGateway {
    type CTX = ();
    fn new_ctx(&self) {}

    /// The platform's paths end here, answered by paysign; everything else goes on upstream.
    async fn request_filter(&self, session: &mut Session, _ctx: &mut ()) -> Result<bool> {
        let path = session.req_header().uri.path().to_string();
        if !path.starts_with("/api/") {
            return Ok(false);
        }
        let header = |name| session.req_header().headers.get(name).and_then(|v| v.to_str().ok()).map(str::to_string);
        let merchant = header("x-paysign-merchant");
        // The caller's own token: with `callers` configured, paysign checks its grants.
        let token = header("authorization").and_then(|v| v.strip_prefix("Bearer ").map(str::to_string));
        let mut body = Vec::new();
        while let Some(chunk) = session.read_request_body().await? {
            if body.len() + chunk.len() > 64 * 1024 {
                return answer(session, 413, "not-sent", Bytes::from_static(b"{\"errMessage\":\"too large\"}")).await;
            }
            body.extend_from_slice(&chunk);
        }
        let business = serde_json::from_slice(&body).unwrap_or(serde_json::Value::Null);
        match self.paysign.call_as(token.as_deref(), merchant.as_deref(), &path, business, "my-gateway").await {
            Ok(verified) => answer(session, 200, "sent", Bytes::from(verified.plaintext)).await,
            Err(e) => answer(session, e.status(), e.delivery().as_str(), Bytes::from(e.body())).await,
        }
    }

    async fn upstream_peer(&self, _session: &mut Session, _ctx: &mut ()) -> Result<Box<HttpPeer>> {
        Ok(Box::new(HttpPeer::new(self.ordinary_upstream.as_str(), false, String::new())))
    }
}

/// Writes a complete JSON answer with the delivery state and ends the request (`Ok(true)`).
async fn answer(session: &mut Session, status: u16, delivery: &str, body: Bytes) -> Result<bool> {
    let mut resp = ResponseHeader::build(status, Some(3))?;
    resp.insert_header("Content-Type", "application/json")?;
    resp.insert_header("Content-Length", body.len().to_string())?;
    resp.insert_header("X-Paysign-Delivery", delivery.to_string())?;
    session.write_response_header(Box::new(resp), false).await?;
    session.write_response_body(Some(body), true).await?;
    Ok(true)
}

fn main() {
    let args: Vec<String> = std::env::args().collect();
    let [_, config, listen, upstream] = args.as_slice() else {
        eprintln!("usage: my_gateway CONFIG LISTEN_ADDR ORDINARY_UPSTREAM");
        std::process::exit(2);
    };
    let paysign = Paysign::from_file(config.as_ref(), &prometheus::Registry::new()).unwrap_or_else(|e| {
        eprintln!("my_gateway: {e}");
        std::process::exit(1);
    });
    let mut server = Server::new(None).expect("pingora server");
    server.bootstrap();
    let mut proxy = http_proxy_service(&server.configuration, MyGateway { paysign, ordinary_upstream: upstream.clone() });
    proxy.add_tcp(listen);
    server.add_service(proxy);
    server.run_forever();
}
