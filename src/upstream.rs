//! The platform client: one pooled pingora connector, one POST per call, never retried once a
//! byte of the body may have left. Only establishing the connection (and writing the request
//! head, which the platform cannot act on without the body) is retried.

use std::time::{Duration, Instant};

use bytes::{Bytes, BytesMut};
use pingora::connectors::http::Connector;
use pingora::connectors::ConnectorOptions;
use pingora::http::RequestHeader;
use pingora::upstreams::peer::HttpPeer;

use crate::config::Upstream;
use crate::error::GatewayError;

/// Idle upstream connections kept per process.
const POOL_SIZE: usize = 128;

/// The platform's answer, before any opening or verification.
pub struct Answer {
    pub status: u16,
    pub body: Bytes,
}

pub struct PlatformClient {
    connector: Connector,
    peer: HttpPeer,
    up: Upstream,
}

impl PlatformClient {
    pub fn new(up: Upstream) -> Self {
        let mut opts = ConnectorOptions::new(POOL_SIZE);
        opts.ca_file = up.ca_file.as_ref().map(|p| p.display().to_string());
        let connector = Connector::new(Some(opts));
        // A SocketAddr needs no lookup, so building the peer cannot block or panic.
        let mut peer = HttpPeer::new(up.addr, up.tls, up.host.clone());
        peer.options.connection_timeout = Some(up.connect_timeout);
        peer.options.total_connection_timeout = Some(up.connect_timeout * 2);
        peer.options.verify_cert = up.tls_verify;
        peer.options.verify_hostname = up.tls_verify;
        peer.options.idle_timeout = Some(up.pool_idle_timeout);
        PlatformClient { connector, peer, up }
    }

    pub fn upstream(&self) -> &Upstream {
        &self.up
    }

    fn request_head(&self, path_and_query: &str, len: usize, request_id: &str) -> Result<RequestHeader, GatewayError> {
        let uri = format!("{}{}", self.up.prefix, path_and_query);
        let mut req = RequestHeader::build("POST", uri.as_bytes(), Some(6)).map_err(|_| GatewayError::Internal)?;
        let headers: [(&str, String); 6] = [
            ("Host", self.up.authority.clone()),
            ("Content-Type", "application/json;charset=UTF-8".into()),
            ("Content-Length", len.to_string()),
            ("Accept", "application/json".into()),
            ("User-Agent", concat!("paysign/", env!("CARGO_PKG_VERSION")).into()),
            ("X-Request-Id", request_id.into()),
        ];
        for (k, v) in headers {
            req.insert_header(k, v).map_err(|_| GatewayError::Internal)?;
        }
        Ok(req)
    }

    /// POSTs `body` to the platform. `on_retry` is told about each retried connection attempt.
    /// Returns the answer and the time spent talking to the platform.
    pub async fn post(
        &self,
        path_and_query: &str,
        body: Vec<u8>,
        request_id: &str,
        on_retry: impl Fn(),
    ) -> Result<(Answer, Duration), (GatewayError, Duration)> {
        let start = Instant::now();
        let body = Bytes::from(body);
        let mut attempt = 0;
        let mut session = loop {
            let head = self.request_head(path_and_query, body.len(), request_id).map_err(|e| (e, start.elapsed()))?;
            let connected = self.connector.get_http_session(&self.peer).await;
            match connected {
                Ok((mut s, _reused)) => match s.write_request_header(Box::new(head)).await {
                    Ok(()) => break s,
                    Err(e) => log::debug!("writing request head failed: {e}"),
                },
                Err(e) => log::warn!("platform connection attempt {} failed: {}", attempt + 1, e.etype().as_str()),
            }
            if attempt >= self.up.connect_retries {
                return Err((GatewayError::Unreachable, start.elapsed()));
            }
            attempt += 1;
            on_retry();
        };

        // From here on the platform may receive the request: no retry, whatever happens.
        if session.write_request_body(body, true).await.is_err() {
            return Err((GatewayError::UpstreamIo, start.elapsed()));
        }
        if session.finish_request_body().await.is_err() {
            return Err((GatewayError::UpstreamIo, start.elapsed()));
        }
        let limit = self.up.max_response_bytes;
        let read = async {
            session.read_response_header().await.map_err(|_| GatewayError::UpstreamIo)?;
            let status = session.response_header().map(|h| h.status.as_u16()).unwrap_or(0);
            let mut buf = BytesMut::new();
            while let Some(chunk) = session.read_response_body().await.map_err(|_| GatewayError::UpstreamIo)? {
                if buf.len() + chunk.len() > limit {
                    return Err(GatewayError::ResponseTooLarge { limit });
                }
                buf.extend_from_slice(&chunk);
            }
            Ok(Answer { status, body: buf.freeze() })
        };
        let answer = match tokio::time::timeout(self.up.read_timeout, read).await {
            Ok(Ok(a)) => a,
            Ok(Err(e)) => return Err((e, start.elapsed())),
            Err(_) => return Err((GatewayError::Timeout, start.elapsed())),
        };
        let elapsed = start.elapsed();
        if session.response_done() {
            self.connector.release_http_session(session, &self.peer, Some(self.up.pool_idle_timeout)).await;
        }
        Ok((answer, elapsed))
    }
}
