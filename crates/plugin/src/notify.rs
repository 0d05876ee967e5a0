//! The notification listener: the platform calls `bindNotifyUrl` with `{"customerNo",
//! "reqmsg"}`; paysign opens and verifies it exactly like a response, hands the verified
//! plaintext to the internal target, and only then acknowledges (`SUCCESS` by default). A
//! forged, tampered, malformed or wrong-merchant notification gets a 4xx and goes nowhere; an
//! internal target that does not answer 2xx gets the platform a 5xx, so the platform retries
//! (at-least-once; `X-Paysign-Notification-Id` lets the target drop repeats).

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Instant;

use bytes::Bytes;
use http::Response;
use pingora::protocols::http::ServerSession;
use serde_json::{Map, Value};
use sha2::{Digest, Sha256};

use crate::config::{Config, Notify, NotifyRoute};
use crate::executor::{ExecError, PrivateKeyExecutor};
use crate::http_client::{Client, Route, SendError, DEFAULT_POOL_SIZE};
use crate::logging;
use crate::metrics::Metrics;
use crate::protocol::{canonicalize, fields_of, Merchant, OpenError, Opened, Profile};
use crate::serve::{read_body, reply, BodyError};

pub const NOTIFICATION_ID_HEADER: &str = "X-Paysign-Notification-Id";

/// The notification routes of one configuration (rebuilt on reload).
pub struct NotifyState {
    notify: Notify,
    merchants: HashMap<String, Arc<Merchant>>,
    routes: HashMap<String, (NotifyRoute, Route)>,
    client: Client,
    metrics: Arc<Metrics>,
}

/// How one notification ended (a fixed label set).
pub struct Outcome {
    pub label: &'static str,
    pub status: u16,
}

const fn outcome(label: &'static str, status: u16) -> Outcome {
    Outcome { label, status }
}

/// A stable id for a verified notification: the same content gives the same id however often
/// the platform re-sends (and re-encrypts) it.
pub fn notification_id(customer_no: &str, fields: &Map<String, Value>) -> String {
    let mut h = Sha256::new();
    h.update(customer_no.as_bytes());
    h.update(b"\n");
    h.update(canonicalize(fields).as_bytes());
    h.update(b"\n");
    h.update(fields.get("sign").and_then(Value::as_str).unwrap_or("").as_bytes());
    hex::encode(&h.finalize()[..16])
}

impl NotifyState {
    pub fn new(config: &Config, metrics: &Arc<Metrics>) -> Option<Self> {
        let notify = config.notify.clone()?;
        let routes = notify
            .routes
            .iter()
            .map(|r| {
                let route = Route::new(r.target.clone(), notify.forward_timeout, notify.forward_timeout, true);
                (r.path.clone(), (r.clone(), route))
            })
            .collect();
        Some(NotifyState {
            notify,
            merchants: config.merchants.clone(),
            routes,
            client: Client::new(None, None, DEFAULT_POOL_SIZE),
            metrics: metrics.clone(),
        })
    }

    pub fn text(status: u16, body: &str) -> Response<Vec<u8>> {
        reply(status, "text/plain;charset=UTF-8", body.as_bytes().to_vec())
    }

    /// The notification's source: the peer, or — when the peer is a trusted proxy — the last
    /// address in `X-Forwarded-For` that is not a trusted proxy.
    fn source(&self, session: &ServerSession) -> Option<std::net::IpAddr> {
        let peer = session.client_addr().and_then(|a| a.as_inet()).map(|a| a.ip())?;
        let trusted = |ip: std::net::IpAddr| self.notify.trusted_proxies.iter().any(|c| c.contains(ip));
        if !trusted(peer) {
            return Some(peer);
        }
        let forwarded: Vec<std::net::IpAddr> = session
            .req_header()
            .headers
            .get_all("x-forwarded-for")
            .iter()
            .filter_map(|v| v.to_str().ok())
            .flat_map(|v| v.split(','))
            .map(|a| a.trim().parse().ok())
            .collect::<Option<_>>()?;
        Some(forwarded.into_iter().rev().find(|ip| !trusted(*ip)).unwrap_or(peer))
    }

    /// The steps of one notification: source → intake → open and verify → forward; the
    /// acknowledgement follows from the outcome (`forwarded` only).
    /// What the platform gets back once a notification was handed on.
    pub fn ack(&self) -> &str {
        &self.notify.ack
    }

    pub async fn handle(&self, session: &mut ServerSession, executor: &PrivateKeyExecutor, log: &mut Map<String, Value>) -> Outcome {
        let steps = async {
            self.check_source(session, log)?;
            let (route, peer, merchant, data) = self.intake(session, log).await?;
            let (plaintext, fields) = open(&merchant, data, executor, &self.metrics, log).await?;
            Ok(self.forward(route, peer, &merchant, plaintext, &fields, log).await)
        };
        match steps.await {
            Ok(o) | Err(o) => o,
        }
    }

    /// The optional allow-list of the platform's callback addresses.
    fn check_source(&self, session: &ServerSession, log: &mut Map<String, Value>) -> Result<(), Outcome> {
        if !self.notify.allow_from.is_empty() {
            let source = self.source(session);
            let allowed = source.is_some_and(|ip| self.notify.allow_from.iter().any(|c| c.contains(ip)));
            if !allowed {
                // Who was refused: the address an operator adds to `allow_from`, or blocks.
                let shown = source.map_or_else(|| "unknown".to_string(), |ip| ip.to_string());
                log.insert("source".into(), Value::String(shown));
                if let Some(peer) = session.client_addr().and_then(|a| a.as_inet()) {
                    log.insert("peer".into(), Value::String(peer.ip().to_string()));
                }
                return Err(outcome("source_refused", 403));
            }
        }
        Ok(())
    }

    /// Route, method, bounded body, merchant, and the block cap — before any decryption.
    async fn intake(
        &self,
        session: &mut ServerSession,
        log: &mut Map<String, Value>,
    ) -> Result<(&NotifyRoute, &Route, Arc<Merchant>, Map<String, Value>), Outcome> {
        let path = session.req_header().uri.path().to_string();
        let Some((route, peer)) = self.routes.get(&path) else {
            return Err(outcome("not_found", 404));
        };
        log.insert("route".into(), Value::String(route.path.clone()));
        if session.req_header().method != http::Method::POST {
            return Err(outcome("method_not_allowed", 405));
        }
        let body = match tokio::time::timeout(self.notify.body_timeout, read_body(session, self.notify.max_body_bytes)).await {
            Ok(Ok(b)) => b,
            Ok(Err(BodyError::TooLarge)) => return Err(outcome("too_large", 413)),
            Ok(Err(BodyError::Unreadable)) => return Err(outcome("malformed", 400)),
            Err(_) => return Err(outcome("body_timeout", 408)),
        };
        let data = match serde_json::from_slice::<Value>(&body) {
            Ok(Value::Object(m)) => m,
            _ => return Err(outcome("malformed", 400)),
        };
        let named = data.get("customerNo").and_then(Value::as_str).unwrap_or("");
        let merchant = match &route.merchant {
            Some(m) if m.customer_no == named => m.clone(),
            Some(_) => return Err(outcome("wrong_merchant", 400)),
            None => match self.merchants.get(named) {
                Some(m) => m.clone(),
                None => return Err(outcome("unknown_merchant", 400)),
            },
        };
        log.insert("merchant".into(), Value::String(merchant.customer_no.clone()));
        // Nothing unauthenticated may cost unbounded work: count the blocks before opening any.
        let blocks = data.get("reqmsg").and_then(Value::as_str).map_or(0, |r| merchant.ciphertext_blocks(r));
        if blocks > self.notify.max_blocks {
            log.insert("blocks".into(), Value::from(blocks));
            return Err(outcome("too_many_blocks", 413));
        }
        Ok((route, peer, merchant, data))
    }

    /// Hands the verified plaintext to the internal target; acknowledged only on its 2xx.
    async fn forward(
        &self,
        route: &NotifyRoute,
        peer: &Route,
        merchant: &Merchant,
        plaintext: String,
        fields: &Map<String, Value>,
        log: &mut Map<String, Value>,
    ) -> Outcome {
        let id = notification_id(&merchant.customer_no, fields);
        log.insert("notification_id".into(), Value::String(id.clone()));
        if let Some(o) = fields.get("orderNo").and_then(Value::as_str) {
            log.insert("order_no".into(), Value::String(o.chars().take(64).collect()));
        }
        let request_id = logging::new_request_id();
        let headers = [
            ("Content-Type", "application/json;charset=UTF-8"),
            (NOTIFICATION_ID_HEADER, id.as_str()),
            ("X-Paysign-Merchant", merchant.customer_no.as_str()),
            ("X-Request-Id", request_id.as_str()),
        ];
        let start = Instant::now();
        let target_path = if route.target.path.is_empty() { "/" } else { route.target.path.as_str() };
        let sent = self.client.post(peer, target_path, &headers, Bytes::from(plaintext), || {}).await;
        self.metrics.notify_forward_duration.with_label_values(&[&route.path]).observe(start.elapsed().as_secs_f64());
        match sent {
            Ok(a) if (200..300).contains(&a.status) => outcome("forwarded", 200),
            Ok(a) => {
                log.insert("target_status".into(), Value::from(a.status));
                outcome("target_failed", 502)
            }
            Err(SendError::NotSent) => outcome("target_unreachable", 502),
            Err(SendError::Tls(_) | SendError::Unknown | SendError::Timeout | SendError::TooLarge(_)) => outcome("target_failed", 502),
        }
    }
}

/// Opens and verifies like a platform answer. RSA work is unauthenticated here: it goes to the
/// executor's lowest class, and when that is full the platform gets a 503 and retries.
async fn open(
    merchant: &Arc<Merchant>,
    data: Map<String, Value>,
    executor: &PrivateKeyExecutor,
    metrics: &Arc<Metrics>,
    log: &mut Map<String, Value>,
) -> Result<(String, Map<String, Value>), Outcome> {
    let opened = match merchant.profile() {
        Profile::Rsa => {
            let (m, metrics) = (merchant.clone(), metrics.clone());
            match executor.run_unauthenticated(move || m.open_notification_observed(&data, metrics.crypto_timings())).await {
                Ok(opened) => opened,
                Err(ExecError::Overloaded) => return Err(outcome("shed", 503)),
                Err(ExecError::Panicked) => return Err(outcome("internal", 500)),
            }
        }
        Profile::Md5 => merchant.open_notification_observed(&data, metrics.crypto_timings()),
    };
    match opened {
        Ok(Opened::Verified { plaintext, .. }) => {
            let fields = fields_of(&plaintext);
            Ok((plaintext, fields))
        }
        Ok(Opened::PlatformFailure { .. }) => Err(outcome("malformed", 400)),
        Err(e) => {
            metrics.verify_failed(&e);
            log.insert("reason".into(), Value::String(e.reason().into()));
            Err(match e {
                OpenError::Envelope(_) => outcome("malformed", 400),
                OpenError::CustomerMismatch => outcome("wrong_merchant", 400),
                // Genuine (md5: a valid type-1 block) but not UTF-8: a charset problem to fix
                // with the platform, not a forgery.
                OpenError::NotUtf8 => outcome("not_utf8", 400),
                // Signed by the platform, but an answer (or another message) posing as a
                // notification: never forwarded.
                OpenError::NotANotification => outcome("not_notification", 400),
                // One answer for every cryptographic failure: no oracle.
                OpenError::Ciphertext(_) | OpenError::Plaintext | OpenError::Signature => outcome("forged", 400),
            })
        }
    }
}
