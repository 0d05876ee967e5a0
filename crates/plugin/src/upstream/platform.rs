//! The platform client: the configured base URL as a [`Route`], with the
//! platform's headers, and failures mapped to what the caller must know about delivery.

use std::time::{Duration, Instant};

use bytes::Bytes;

use crate::config::Upstream;
use crate::error::GatewayError;
use crate::http_client::{Answer, Client, Route, SendError};

pub struct PlatformClient {
    client: Client,
    route: Route,
    prefix: String,
    /// Keeps the TCP egress bridge running as long as this client exists.
    _bridge: Option<crate::egress::TcpBridge>,
}

impl PlatformClient {
    /// `connections_opened`: the instance's `paysign_upstream_connections_opened_total`.
    pub fn new(up: &Upstream, max_in_flight: usize, connections_opened: prometheus::IntCounter) -> Self {
        let mut route = Route::new(up.target.clone(), up.connect_timeout, up.read_timeout, up.tls_verify);
        route.connect_retries = up.connect_retries;
        route.refresh_addresses_every(up.dns_refresh);
        route.max_response_bytes = up.max_response_bytes;
        route.idle_timeout = up.pool_idle_timeout;
        route.peer.options.idle_timeout = Some(up.pool_idle_timeout);
        // A TCP egress proxy is reached through a private Unix-socket bridge (see egress.rs).
        let bridge = up.egress_proxy.and_then(|addr| match crate::egress::TcpBridge::start(addr) {
            Ok(b) => Some(b),
            Err(e) => {
                tracing::error!("egress proxy bridge to {addr} could not start: {e}; calls will fail as not sent");
                None
            }
        });
        let uds = bridge.as_ref().map(|b| b.path().to_path_buf()).or_else(|| up.egress_proxy_uds.clone());
        if up.egress_proxy.is_some() && bridge.is_none() {
            // Never fall back to a direct connection when an egress proxy is configured.
            route.peer.proxy = Some(pingora::upstreams::peer::Proxy {
                next_hop: std::path::PathBuf::from("/nonexistent/paysign-egress.sock").into_boxed_path(),
                host: up.target.host.clone(),
                port: up.target.port,
                headers: Default::default(),
            });
        }
        if let Some(uds) = uds {
            // pingora sends `CONNECT host:port` through the socket, then speaks TLS (or plain
            // HTTP) to the platform inside the tunnel.
            route.peer.proxy = Some(pingora::upstreams::peer::Proxy {
                next_hop: uds.into_boxed_path(),
                host: up.target.host.clone(),
                port: up.target.port,
                headers: Default::default(),
            });
        }
        let prefix = up.target.path.trim_end_matches('/').to_string();
        // One idle connection per call that can be at the platform at once: with fewer, a burst
        // beyond the pool closes connections on release and opens (TLS handshakes) new ones.
        let client =
            Client::new(up.ca_file.as_deref(), up.client_cert.as_ref(), max_in_flight).counting_new_connections(connections_opened);
        PlatformClient { client, route, prefix, _bridge: bridge }
    }

    /// POSTs a sealed body; returns the answer and the time spent on the platform.
    pub async fn post(
        &self,
        path_and_query: &str,
        body: Vec<u8>,
        request_id: &str,
        on_retry: impl Fn(),
    ) -> Result<(Answer, Duration), (GatewayError, Duration)> {
        let start = Instant::now();
        let uri = [self.prefix.as_str(), path_and_query].concat();
        let headers = [("Content-Type", "application/json;charset=UTF-8"), ("Accept", "application/json"), ("X-Request-Id", request_id)];
        let result = self.client.post(&self.route, &uri, &headers, Bytes::from(body), on_retry).await;
        let took = start.elapsed();
        result.map(|a| (a, took)).map_err(|e| {
            let e = match e {
                SendError::NotSent => GatewayError::Unreachable,
                SendError::Tls(_) => GatewayError::PlatformTls,
                SendError::Unknown => GatewayError::UpstreamIo,
                SendError::Timeout => GatewayError::Timeout,
                SendError::TooLarge(limit) => GatewayError::ResponseTooLarge { limit },
            };
            (e, took)
        })
    }
}
