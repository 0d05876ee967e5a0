//! Outgoing HTTP/1.1 POSTs over pooled connections (made by pingora's connector, kept in
//! [`IdlePool`]), shared by the platform client and the notification forwarder (and the
//! sandbox's notification sender). The rule that matters for payments lives here: only what
//! certainly sent nothing is ever retried — connection set-up, and a request write the socket
//! refused before accepting a single byte ([`OneWrite`]: head and body leave in one write);
//! once any byte may have left, a failure is reported as "unknown", never retried.

use std::future::Future;
use std::net::SocketAddr;
use std::path::Path;
use std::sync::Arc;
use std::task::{Context, Poll, Waker};
use std::time::Duration;

use bytes::Bytes;
use pingora::connectors::{ConnectorOptions, TransportConnector};
use pingora::http::RequestHeader;
use pingora::protocols::http::v1::client::HttpSession;
use pingora::upstreams::peer::HttpPeer;
use pingora::upstreams::peer::Peer;

use crate::addresses::{self, AddressBook};
use crate::idle_pool::IdlePool;
use crate::one_write::OneWrite;
use crate::serve::{Gathered, OverLimit};

/// Idle connections kept per connector, unless the caller knows better (the platform client
/// keeps one per call that can be at the platform at once: `max_in_flight`).
pub const DEFAULT_POOL_SIZE: usize = 128;

/// How often a host name is looked up again unless configured otherwise.
pub const DEFAULT_DNS_REFRESH: Duration = Duration::from_secs(60);

/// A parsed and resolved `http(s)://host[:port][/path]` URL.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Target {
    pub tls: bool,
    pub host: String,
    pub port: u16,
    /// Every address the host resolved to at load time, in the resolver's order (never empty).
    pub addrs: Vec<SocketAddr>,
    /// `Host` header value: host, plus the port when it is not the scheme's default.
    pub authority: String,
    /// Path (and query), `""` when the URL has none.
    pub path: String,
}

/// Why a URL was refused (the messages name the URL or host as written).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum UrlError {
    #[error("'{0}' must start with https:// or http://")]
    Scheme(String),
    #[error("'{0}' is not a URL like https://host[:port][/path]")]
    Malformed(String),
    #[error("bad port in '{0}'")]
    Port(String),
    #[error("cannot resolve {host}: {reason}")]
    Unresolved { host: String, reason: String },
    #[error("{0} resolves to no address")]
    NoAddress(String),
}

/// Parses and resolves a URL (a blocking lookup: call at start-up or off the event loop).
pub fn parse_url(url: &str) -> Result<Target, UrlError> {
    parse_url_with(url, true)
}

/// [`parse_url`]; with `resolve` false, a host name is not looked up (IP literals still parse)
/// and the address is 0.0.0.0 — for fuzzing, which must send no DNS query anywhere.
pub fn parse_url_with(url: &str, resolve: bool) -> Result<Target, UrlError> {
    let (tls, rest) = if let Some(r) = url.strip_prefix("https://") {
        (true, r)
    } else if let Some(r) = url.strip_prefix("http://") {
        (false, r)
    } else {
        return Err(UrlError::Scheme(url.into()));
    };
    let (authority, path) = match rest.find(['/', '?']) {
        Some(i) => (&rest[..i], &rest[i..]),
        None => (rest, ""),
    };
    if authority.is_empty() || authority.contains('@') || path.contains('#') || url.chars().any(char::is_whitespace) {
        return Err(UrlError::Malformed(url.into()));
    }
    let default_port = if tls { 443 } else { 80 };
    let (host, port) = match authority.rsplit_once(':') {
        Some((h, port)) if !h.contains('[') || h.ends_with(']') => match port.parse::<u16>() {
            Ok(n) if !h.is_empty() => (h.trim_start_matches('[').trim_end_matches(']').to_string(), n),
            _ => return Err(UrlError::Port(url.into())),
        },
        _ => (authority.trim_start_matches('[').trim_end_matches(']').to_string(), default_port),
    };
    let literal = host.parse::<std::net::IpAddr>().ok().map(|ip| SocketAddr::new(ip, port));
    let addrs = match literal {
        Some(a) => vec![a],
        None if !resolve => vec![SocketAddr::from(([0, 0, 0, 0], port))],
        None => lookup(&host, port)?,
    };
    let path = if path.starts_with('?') { format!("/{path}") } else { path.to_string() };
    Ok(Target { tls, host, port, addrs, authority: authority.to_string(), path })
}

/// A host name's addresses (a blocking lookup), never none.
pub fn lookup(host: &str, port: u16) -> Result<Vec<SocketAddr>, UrlError> {
    let addrs = addresses::system_lookup(host, port).map_err(|e| UrlError::Unresolved { host: host.into(), reason: e.to_string() })?;
    if addrs.is_empty() {
        return Err(UrlError::NoAddress(host.into()));
    }
    Ok(addrs)
}

impl Target {
    /// The URL as configured (scheme, authority, path), for logs and `GET /config`.
    pub fn url(&self) -> String {
        format!("{}://{}{}", if self.tls { "https" } else { "http" }, self.authority, self.path)
    }

    /// The host is an IP literal: there is nothing to look up again.
    pub fn is_ip_literal(&self) -> bool {
        self.host.parse::<std::net::IpAddr>().is_ok()
    }
}

/// The target's addresses, looked up again every `refresh` unless the host is an IP literal.
fn address_book(target: &Target, refresh: Option<Duration>) -> Arc<AddressBook> {
    let refresh = refresh.filter(|_| !target.is_ip_literal());
    Arc::new(AddressBook::new(&target.host, target.port, target.addrs.clone(), refresh, addresses::system_lookup))
}

/// How a POST failed, by what the server may have seen.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SendError {
    /// No connection could be set up (after the allowed retries): nothing was sent.
    NotSent,
    /// The TLS handshake failed (untrusted certificate, wrong host name…): nothing was sent,
    /// and retrying cannot help.
    Tls(String),
    /// The connection failed after the body may have left.
    Unknown,
    /// No complete answer within the read timeout (after sending).
    Timeout,
    /// The answer exceeded the size limit.
    TooLarge(usize),
}

pub struct Answer {
    pub status: u16,
    pub body: Bytes,
}

/// How to reach one target.
pub struct Route {
    /// Connection settings (TLS, timeouts, proxy); each attempt uses a copy with one of the
    /// target's addresses.
    pub peer: HttpPeer,
    pub target: Target,
    pub addresses: Arc<AddressBook>,
    pub connect_retries: u32,
    pub read_timeout: Duration,
    pub max_response_bytes: usize,
    pub idle_timeout: Duration,
}

impl Route {
    pub fn new(target: Target, connect_timeout: Duration, read_timeout: Duration, tls_verify: bool) -> Self {
        // A SocketAddr needs no lookup, so building the peer cannot block or panic. (A target
        // without addresses — validation never makes one — gets the unspecified address: its
        // calls fail as not sent, nothing panics.)
        let first = target.addrs.first().copied().unwrap_or_else(|| SocketAddr::from(([0, 0, 0, 0], target.port)));
        let mut peer = HttpPeer::new(first, target.tls, target.host.clone());
        peer.options.connection_timeout = Some(connect_timeout);
        peer.options.total_connection_timeout = Some(connect_timeout * 2);
        peer.options.verify_cert = tls_verify;
        peer.options.verify_hostname = tls_verify;
        let addresses = address_book(&target, Some(DEFAULT_DNS_REFRESH));
        Route {
            peer,
            target,
            addresses,
            connect_retries: 0,
            read_timeout,
            max_response_bytes: 1024 * 1024,
            idle_timeout: Duration::from_secs(30),
        }
    }

    /// Looks the host name up again this often (`None`: keep the load-time addresses).
    pub fn refresh_addresses_every(&mut self, every: Option<Duration>) {
        self.addresses = address_book(&self.target, every);
    }

    /// The peer for one address.
    fn peer_at(&self, addr: SocketAddr) -> HttpPeer {
        let mut p = self.peer.clone();
        p._address = pingora::protocols::l4::socket::SocketAddr::Inet(addr);
        p
    }
}

pub struct Client {
    /// Makes new connections (TCP, TLS, an egress proxy's CONNECT).
    connector: TransportConnector,
    /// Connections whose answer was read to the end, for the next call.
    idle: IdlePool,
    /// Counts the connections this client opens (those not taken from the pool).
    opened: Option<prometheus::IntCounter>,
}

impl Client {
    /// `ca_file`: extra trusted CAs; `client_cert`: (chain, key) for mutual TLS; `pool_size`:
    /// idle connections kept for reuse.
    pub fn new(ca_file: Option<&Path>, client_cert: Option<&(std::path::PathBuf, std::path::PathBuf)>, pool_size: usize) -> Self {
        // The connector only makes connections: its own keep-alive pool is not used.
        let mut opts = ConnectorOptions::new(0);
        opts.ca_file = ca_file.map(|p| p.display().to_string());
        opts.cert_key_file = client_cert.map(|(c, k)| (c.display().to_string(), k.display().to_string()));
        Client { connector: TransportConnector::new(Some(opts)), idle: IdlePool::new(pool_size), opened: None }
    }

    /// Counts every new connection in `counter`.
    pub fn counting_new_connections(mut self, counter: prometheus::IntCounter) -> Self {
        self.opened = Some(counter);
        self
    }

    /// An HTTP/1.1 session on a pooled or new connection to `peer`, its stream wrapped so
    /// that a request leaves in one write, and the pool's key for `peer` (to give it back).
    async fn session(&self, peer: &HttpPeer) -> pingora::Result<(HttpSession, u64)> {
        let key = peer.reuse_hash();
        let stream = match self.idle.take(key) {
            Some(stream) => stream,
            None => {
                // Boxed: making a connection (TLS included) is a ~8 KiB state machine; inline,
                // it would make every call's future that large, allocated and copied per call.
                let stream = Box::pin(self.connector.new_stream(peer)).await?;
                if let Some(opened) = &self.opened {
                    opened.inc();
                }
                stream
            }
        };
        Ok((HttpSession::new_with_options(OneWrite::wrap(stream), peer), key))
    }

    /// Writes the request, head and body in one write: `NotSent` when the socket accepted
    /// none of it (the request may go elsewhere), `Unknown` when some of it may have left.
    async fn write_request(session: &mut HttpSession, head: RequestHeader, body: &[u8]) -> Result<(), SendError> {
        let Some(w) = OneWrite::of(session.stream()) else { return Err(SendError::Unknown) };
        w.begin();
        let written = async {
            session.write_request_header(Box::new(head)).await?;
            if let Some(w) = OneWrite::of(session.stream()) {
                w.body_follows();
            }
            session.write_body(body).await?;
            session.finish_body().await
        };
        match written.await {
            Ok(_) => Ok(()),
            Err(_) if OneWrite::of(session.stream()).is_some_and(|w| !w.any_accepted()) => Err(SendError::NotSent),
            Err(_) => Err(SendError::Unknown),
        }
    }

    /// Returns the connection to the pool when its answer was read to the end. Not async:
    /// a connection kept alive is handed back at once; one that is not is closed (pingora's
    /// `reuse` shuts it down, polled once here; what is left of that is done by dropping it).
    fn release(&self, mut session: HttpSession, key: u64, idle_timeout: Duration) {
        session.respect_keepalive();
        let reuse = std::pin::pin!(session.reuse());
        if let Poll::Ready(Some(stream)) = reuse.poll(&mut Context::from_waker(Waker::noop())) {
            self.idle.put(key, stream, idle_timeout);
        }
    }

    /// POSTs `body` to `path` on the route. `on_retry` is told about each retried connection.
    pub async fn post(
        &self,
        route: &Route,
        path: &str,
        headers: &[(&'static str, &str)],
        body: Bytes,
        on_retry: impl Fn(),
    ) -> Result<Answer, SendError> {
        let head = || -> Result<RequestHeader, SendError> {
            let mut req = RequestHeader::build("POST", path.as_bytes(), Some(headers.len() + 3)).map_err(|_| SendError::NotSent)?;
            req.insert_header("Host", route.target.authority.as_str()).map_err(|_| SendError::NotSent)?;
            req.insert_header("Content-Length", http::HeaderValue::from(body.len())).map_err(|_| SendError::NotSent)?;
            req.insert_header("User-Agent", concat!("paysign/", env!("CARGO_PKG_VERSION"))).map_err(|_| SendError::NotSent)?;
            for (k, v) in headers {
                req.insert_header(*k, *v).map_err(|_| SendError::NotSent)?;
            }
            Ok(req)
        };
        // Connection set-up is safe to retry: every address in turn (the one that answered
        // last first), `connect_retries` more rounds, a fresh lookup after a round that failed.
        // Through an egress proxy the proxy resolves the name: one address, the proxy's.
        route.addresses.refresh_if_due();
        let mut attempt = 0;
        let (mut session, key) = 'connected: {
            for round in 0..=route.connect_retries {
                let candidates = if route.peer.proxy.is_some() {
                    route.target.addrs.iter().take(1).copied().collect()
                } else {
                    route.addresses.candidates()
                };
                for addr in candidates {
                    if attempt > 0 {
                        on_retry();
                    }
                    attempt += 1;
                    // The peer (~700 bytes) lives only while the session is made: the
                    // call's future does not carry it across the exchange.
                    let (mut s, key) = match self.session(&route.peer_at(addr)).await {
                        Ok(made) => made,
                        Err(e) => {
                            use pingora::ErrorType::{HandshakeError, InvalidCert, TLSHandshakeFailure};
                            if matches!(e.etype(), TLSHandshakeFailure | InvalidCert | HandshakeError) {
                                let why = e.to_string();
                                tracing::error!("TLS with {} ({addr}) failed: {why}", route.target.authority);
                                return Err(SendError::Tls(why));
                            }
                            tracing::warn!(
                                "connection attempt {attempt} to {} ({addr}) failed: {}",
                                route.target.authority,
                                e.etype().as_str()
                            );
                            continue;
                        }
                    };
                    // A socket that takes nothing within the read timeout counts as "may have
                    // left" (it has a request's bytes in its buffers): never retried.
                    match tokio::time::timeout(route.read_timeout, Self::write_request(&mut s, head()?, &body))
                        .await
                        .unwrap_or(Err(SendError::Unknown))
                    {
                        Ok(()) => {
                            route.addresses.answered(addr);
                            break 'connected (s, key);
                        }
                        // The socket took none of it: nothing was sent.
                        Err(SendError::NotSent) => {
                            tracing::debug!("writing the request to {} ({addr}) failed before any byte left", route.target.authority)
                        }
                        // The server may have the request: no retry.
                        Err(e) => return Err(e),
                    }
                }
                // No address answered: look the name up again, waiting for it only when
                // another round follows.
                if route.peer.proxy.is_none() {
                    if round < route.connect_retries {
                        let limit = route.peer.options.connection_timeout.unwrap_or(Duration::from_secs(1));
                        route.addresses.refresh_after_failure(limit).await;
                    } else {
                        route.addresses.refresh_in_background();
                    }
                }
            }
            return Err(SendError::NotSent);
        };

        // The request has left: no retry, whatever happens.
        let limit = route.max_response_bytes;
        let read = async {
            session.read_response().await.map_err(|_| SendError::Unknown)?;
            let status = session.resp_header().map_or(0, |h| h.status.as_u16());
            let mut body = Gathered::new(limit);
            while let Some(chunk) = session.read_body_bytes().await.map_err(|_| SendError::Unknown)? {
                body.push(chunk).map_err(|OverLimit| SendError::TooLarge(limit))?;
            }
            Ok(Answer { status, body: body.finish() })
        };
        let answer = match tokio::time::timeout(route.read_timeout, read).await {
            Ok(r) => r?,
            Err(_) => return Err(SendError::Timeout),
        };
        if session.is_body_done() {
            self.release(session, key, route.idle_timeout);
        }
        Ok(answer)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Validation never makes a target without addresses, but a `Config` can be changed after
    /// it: such a route fails its calls as not sent instead of panicking (it panicked indexing
    /// the first address).
    #[tokio::test]
    async fn a_target_without_addresses_is_not_sent_and_nothing_panics() {
        let mut target = parse_url_with("http://127.0.0.1:9/x", false).unwrap();
        target.addrs.clear();
        let mut route = Route::new(target, Duration::from_millis(200), Duration::from_millis(200), true);
        route.connect_retries = 0;
        let client = Client::new(None, None, 1);
        let sent = client.post(&route, "/x", &[], Bytes::from_static(b"{}"), || {}).await;
        assert!(matches!(sent, Err(SendError::NotSent)), "{:?}", sent.map(|a| a.status));
    }
}
