//! A notification's steps: the platform calls `bindNotifyUrl` with `{"customerNo",
//! "reqmsg"}`; paysign opens and verifies it exactly like a response, hands the verified
//! plaintext to the internal target, and only then acknowledges (`SUCCESS` by default). A
//! forged, tampered, malformed or wrong-merchant notification gets a 4xx and goes nowhere; an
//! internal target that does not answer 2xx gets the platform a 5xx, so the platform retries
//! (at-least-once; `X-Paysign-Notification-Id` lets the target drop repeats).
//!
//! The steps: source → intake → open and verify → [`NotificationTarget::deliver`]. The target
//! is a trait so that where a verified notification goes (the internal HTTP service today,
//! [`HttpTarget`]; a durable inbox next) is a choice, not part of the steps.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Instant;

use bytes::Bytes;
use http::Response;
use pingora::protocols::http::ServerSession;
use serde_json::{Map, Value};
use sha2::{Digest, Sha256};

use super::inbox::InboxCell;
use super::target::{HttpTarget, NotificationTarget, TargetAnswer, TargetError};
use crate::config::{Config, Notify, NotifyRoute};
use crate::executor::{ExecError, PrivateKeyExecutor};
use crate::logging;
use crate::metrics::InboxStoreResult;
use crate::metrics::Metrics;
use crate::protocol::{canonicalize, fields_of, Merchant, OpenError, Opened, Profile};
use crate::serve::{read_body, reply, BodyError};
use paysign_inbox::{Inbox, NewNotification, StoreError, Stored};

/// The header carrying [`notification_id`] to the target, which may drop repeats by it.
pub const NOTIFICATION_ID_HEADER: &str = "X-Paysign-Notification-Id";

/// How one notification ended: the closed set of `paysign_notifications_total{outcome}` and
/// the access line's `outcome` (declared with the other label sets in `metrics`).
pub use crate::metrics::NotificationOutcome;

impl NotificationOutcome {
    /// Whether the platform gets the acknowledgement: the target took it, or the inbox holds it.
    pub const fn acknowledged(self) -> bool {
        matches!(self, Self::Forwarded | Self::Stored | Self::Duplicate)
    }

    /// The status the platform gets: 200 (with the acknowledgement) only when forwarded or
    /// stored; a 5xx where a retry can succeed.
    pub const fn status(self) -> u16 {
        match self {
            Self::Forwarded | Self::Stored | Self::Duplicate => 200,
            Self::SourceRefused => 403,
            Self::NotFound => 404,
            Self::MethodNotAllowed => 405,
            Self::BodyTimeout => 408,
            Self::TooLarge | Self::TooManyBlocks => 413,
            Self::Malformed | Self::WrongMerchant | Self::UnknownMerchant | Self::Forged | Self::NotUtf8 | Self::NotNotification => 400,
            Self::Internal => 500,
            Self::TargetFailed | Self::TargetUnreachable => 502,
            Self::Shed | Self::StoreFailed => 503,
        }
    }
}

/// What one notification's steps learnt, for its access line: each absent when the
/// notification did not get that far.
#[derive(Debug, Default, serde::Serialize)]
pub struct NotificationFacts<'a> {
    /// A refused source: the address an operator adds to `allow_from`, or blocks.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub source: Option<String>,
    /// A refused source's peer (the trusted proxy it came through, or itself).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub peer: Option<String>,
    /// The route's path, once one matched.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub route: Option<&'a str>,
    /// The merchant's customer number, once the envelope named a served one.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub merchant: Option<&'a str>,
    /// Ciphertext blocks of a notification refused for having too many.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub blocks: Option<usize>,
    /// Why opening failed (`paysign_verification_failures_total{reason}`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub reason: Option<&'static str>,
    /// [`notification_id`] of a verified notification.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub notification_id: Option<String>,
    /// The notification's `orderNo`, at most 64 characters.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub order_no: Option<String>,
    /// The target's status when it was not 2xx.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub target_status: Option<u16>,
}

/// A notification's access line (a contract: these fields, in this order; see
/// docs/observability.md).
#[derive(serde::Serialize)]
pub struct NotificationLine<'a> {
    /// What the steps learnt (first in the line).
    #[serde(flatten)]
    pub facts: NotificationFacts<'a>,
    /// Written as its label.
    #[serde(serialize_with = "outcome_label")]
    pub outcome: NotificationOutcome,
    /// The status the platform got.
    pub status: u16,
    /// From the head parsed to the answer, in milliseconds (three decimals).
    pub latency_ms: f64,
    /// `notification`.
    pub kind: &'static str,
    /// When the line was written.
    pub ts: logging::Now,
    /// `info`.
    pub level: &'static str,
    /// `access`.
    pub msg: &'static str,
}

fn outcome_label<S: serde::Serializer>(o: &NotificationOutcome, s: S) -> Result<S::Ok, S::Error> {
    s.serialize_str(o.as_str())
}

/// The notification routes of one configuration (rebuilt on reload), with the executor for
/// their private-key work and the target they are handed to (both kept across reloads).
pub struct NotifyState {
    notify: Notify,
    merchants: HashMap<String, Arc<Merchant>>,
    routes: HashMap<String, NotifyRoute>,
    executor: Arc<PrivateKeyExecutor>,
    /// The HTTP target whose pool a reload keeps (`None` when another target was given).
    http: Option<Arc<HttpTarget>>,
    target: Arc<dyn NotificationTarget>,
    /// Where verified notifications are stored before the acknowledgement (`notify.inbox`),
    /// the same across reloads; `None`: delivered before the acknowledgement.
    inbox: Option<Arc<InboxCell>>,
    metrics: Arc<Metrics>,
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

type Step<T> = Result<T, NotificationOutcome>;

/// A notification's `orderNo` as the access line and the inbox keep it: at most 64 characters.
fn order_no(fields: &Map<String, Value>) -> Option<String> {
    fields.get("orderNo").and_then(Value::as_str).map(|o| o.chars().take(64).collect())
}

/// What recognises a re-send before decryption: the route and the exact bytes the platform sent.
fn raw_digest(route: &str, body: &[u8]) -> [u8; 32] {
    let mut h = Sha256::new();
    h.update(route.as_bytes());
    h.update(b"\n");
    h.update(body);
    h.finalize().into()
}

impl NotifyState {
    /// The notification state of `config` (`None` without `notify`), delivering to the routes'
    /// HTTP targets; `previous`: the state it replaces on reload, whose connection pool is kept.
    /// `inbox`: the instance's inbox when `notify.inbox` is configured (kept across reloads).
    pub(crate) fn new(
        config: &Config,
        executor: Arc<PrivateKeyExecutor>,
        previous: Option<&NotifyState>,
        inbox: Option<Arc<InboxCell>>,
        metrics: &Arc<Metrics>,
    ) -> Option<Self> {
        let notify = config.notify.clone()?;
        let http = Arc::new(match previous.and_then(|p| p.http.as_ref()) {
            Some(p) => p.reloaded(&notify),
            None => HttpTarget::new(&notify),
        });
        Some(Self::build(notify, config, executor, Some(http.clone()), http, inbox, metrics))
    }

    /// The notification state of `config` delivering to `target` instead of HTTP.
    pub fn with_target(
        config: &Config,
        executor: Arc<PrivateKeyExecutor>,
        target: Arc<dyn NotificationTarget>,
        metrics: &Arc<Metrics>,
    ) -> Option<Self> {
        let notify = config.notify.clone()?;
        Some(Self::build(notify, config, executor, None, target, None, metrics))
    }

    fn build(
        notify: Notify,
        config: &Config,
        executor: Arc<PrivateKeyExecutor>,
        http: Option<Arc<HttpTarget>>,
        target: Arc<dyn NotificationTarget>,
        inbox: Option<Arc<InboxCell>>,
        metrics: &Arc<Metrics>,
    ) -> Self {
        let routes = notify.routes.iter().map(|r| (r.path.clone(), r.clone())).collect();
        NotifyState { notify, merchants: config.merchants.clone(), routes, executor, http, target, inbox, metrics: metrics.clone() }
    }

    /// The listener's plain-text answer (`FAIL`, or the acknowledgement).
    pub fn text(status: u16, body: &str) -> Response<Vec<u8>> {
        reply(status, "text/plain;charset=UTF-8", body.as_bytes().to_vec())
    }

    /// What the platform gets back once a notification was handed on.
    pub fn ack(&self) -> &str {
        &self.notify.ack
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

    /// The steps of one notification: source → intake → (with an inbox: recognise a re-send)
    /// → open and verify → store in the inbox, or deliver; the acknowledgement follows from the
    /// outcome ([`NotificationOutcome::acknowledged`]).
    pub async fn handle<'s>(&'s self, session: &mut ServerSession, facts: &mut NotificationFacts<'s>) -> NotificationOutcome {
        let steps = async {
            self.check_source(session, facts)?;
            let (route, merchant, data, raw_digest) = self.intake(session, facts).await?;
            let inbox = match (&self.inbox, raw_digest) {
                (Some(cell), Some(digest)) => Some((self.recognise(cell, digest, facts).await?, digest)),
                _ => None,
            };
            let (plaintext, fields) = self.open(merchant, data, facts).await?;
            Ok(match inbox {
                Some((inbox, digest)) => self.store(&*inbox, route, merchant, digest, plaintext, &fields, facts).await,
                None => self.deliver(route, merchant, plaintext, &fields, facts).await,
            })
        };
        match steps.await {
            Ok(o) | Err(o) => o,
        }
    }

    /// The optional allow-list of the platform's callback addresses.
    fn check_source(&self, session: &ServerSession, facts: &mut NotificationFacts<'_>) -> Step<()> {
        if !self.notify.allow_from.is_empty() {
            let source = self.source(session);
            let allowed = source.is_some_and(|ip| self.notify.allow_from.iter().any(|c| c.contains(ip)));
            if !allowed {
                facts.source = Some(source.map_or_else(|| "unknown".to_string(), |ip| ip.to_string()));
                facts.peer = session.client_addr().and_then(|a| a.as_inet()).map(|peer| peer.ip().to_string());
                return Err(NotificationOutcome::SourceRefused);
            }
        }
        Ok(())
    }

    /// Route, method, bounded body, merchant, and the block cap — before any decryption.
    async fn intake<'s>(
        &'s self,
        session: &mut ServerSession,
        facts: &mut NotificationFacts<'s>,
    ) -> Step<(&'s NotifyRoute, &'s Arc<Merchant>, Map<String, Value>, Option<[u8; 32]>)> {
        let Some(route) = self.routes.get(session.req_header().uri.path()) else {
            return Err(NotificationOutcome::NotFound);
        };
        facts.route = Some(&route.path);
        if session.req_header().method != http::Method::POST {
            return Err(NotificationOutcome::MethodNotAllowed);
        }
        let body = match tokio::time::timeout(self.notify.body_timeout, read_body(session, self.notify.max_body_bytes)).await {
            Ok(Ok(b)) => b,
            Ok(Err(BodyError::TooLarge)) => return Err(NotificationOutcome::TooLarge),
            Ok(Err(BodyError::Unreadable)) => return Err(NotificationOutcome::Malformed),
            Err(_) => return Err(NotificationOutcome::BodyTimeout),
        };
        // Only an inbox recognises re-sends: without one, no hashing on this path.
        let raw_digest = self.inbox.is_some().then(|| raw_digest(&route.path, &body));
        let data = match serde_json::from_slice::<Value>(&body) {
            Ok(Value::Object(m)) => m,
            _ => return Err(NotificationOutcome::Malformed),
        };
        let named = data.get("customerNo").and_then(Value::as_str).unwrap_or("");
        let merchant = match &route.merchant {
            Some(m) if m.customer_no == named => m,
            Some(_) => return Err(NotificationOutcome::WrongMerchant),
            None => self.merchants.get(named).ok_or(NotificationOutcome::UnknownMerchant)?,
        };
        facts.merchant = Some(&merchant.customer_no);
        // Nothing unauthenticated may cost unbounded work: count the blocks before opening any.
        let blocks = data.get("reqmsg").and_then(Value::as_str).map_or(0, |r| merchant.ciphertext_blocks(r));
        if blocks > self.notify.max_blocks {
            facts.blocks = Some(blocks);
            return Err(NotificationOutcome::TooManyBlocks);
        }
        Ok((route, merchant, data, raw_digest))
    }

    /// The inbox, and whether these exact bytes were stored before: a platform retry of a stored
    /// notification is acknowledged again without any private-key work. The store unavailable
    /// answers 503 now (storing would fail too).
    async fn recognise(&self, cell: &InboxCell, raw_digest: [u8; 32], facts: &mut NotificationFacts<'_>) -> Step<Arc<dyn Inbox>> {
        let failed = |e: StoreError| self.not_stored(&e);
        let inbox = cell.get().await.map_err(failed)?;
        match inbox.recognise(raw_digest).await.map_err(failed)? {
            Some(id) => {
                self.metrics.inbox_stored.with_label_values(&[InboxStoreResult::Recognised.as_str()]).inc();
                facts.notification_id = Some(id);
                Err(NotificationOutcome::Duplicate)
            }
            None => Ok(inbox),
        }
    }

    /// Stores the verified notification durably; acknowledged only once it is.
    #[allow(clippy::too_many_arguments)]
    async fn store(
        &self,
        inbox: &dyn Inbox,
        route: &NotifyRoute,
        merchant: &Merchant,
        raw_digest: [u8; 32],
        plaintext: String,
        fields: &Map<String, Value>,
        facts: &mut NotificationFacts<'_>,
    ) -> NotificationOutcome {
        let id = notification_id(&merchant.customer_no, fields);
        let order_no = order_no(fields);
        facts.order_no.clone_from(&order_no);
        facts.notification_id = Some(id.clone());
        let ordered = self.inbox.as_ref().is_some_and(|c| c.settings().ordered);
        let n = NewNotification {
            id,
            raw_digest,
            route: route.path.clone(),
            customer_no: merchant.customer_no.clone(),
            order_no,
            ordered,
            body: plaintext.into_bytes(),
        };
        let (outcome, result) = match inbox.store(n).await {
            Ok(Stored::New) => (NotificationOutcome::Stored, InboxStoreResult::Stored),
            Ok(Stored::Duplicate) => (NotificationOutcome::Duplicate, InboxStoreResult::Duplicate),
            Err(e) => return self.not_stored(&e),
        };
        self.metrics.inbox_stored.with_label_values(&[result.as_str()]).inc();
        outcome
    }

    /// The inbox could not take a notification: counted, logged, not acknowledged (503).
    fn not_stored(&self, e: &StoreError) -> NotificationOutcome {
        self.metrics.inbox_stored.with_label_values(&[InboxStoreResult::Failed.as_str()]).inc();
        tracing::warn!(kind = "notification", "notification not acknowledged: {e}");
        NotificationOutcome::StoreFailed
    }

    /// The route a stored notification names, if it is still configured.
    pub(crate) fn route(&self, path: &str) -> Option<&NotifyRoute> {
        self.routes.get(path)
    }

    /// Hands a verified notification to its route's target with the headers paysign adds —
    /// directly (without an inbox) or from the inbox (the deliverer's attempt) — and times it.
    pub(crate) async fn forward(
        &self,
        route: &NotifyRoute,
        id: &str,
        customer_no: &str,
        request_id: &str,
        body: Bytes,
    ) -> Result<TargetAnswer, TargetError> {
        let headers = [
            ("Content-Type", "application/json;charset=UTF-8"),
            (NOTIFICATION_ID_HEADER, id),
            ("X-Paysign-Merchant", customer_no),
            ("X-Request-Id", request_id),
        ];
        let start = Instant::now();
        let sent = self.target.deliver(route, &headers, body).await;
        self.metrics.notify_forward_duration.with_label_values(&[&route.path]).observe(start.elapsed().as_secs_f64());
        sent
    }

    /// Opens and verifies like a platform answer. RSA work is unauthenticated here: it goes to
    /// the executor's lowest class, and when that is full the platform gets a 503 and retries.
    async fn open(
        &self,
        merchant: &Arc<Merchant>,
        data: Map<String, Value>,
        facts: &mut NotificationFacts<'_>,
    ) -> Step<(String, Map<String, Value>)> {
        let opened = match merchant.profile() {
            Profile::Rsa => {
                let (m, metrics) = (merchant.clone(), self.metrics.clone());
                match self.executor.run_unauthenticated(move || m.open_notification_observed(&data, metrics.crypto_timings())).await {
                    Ok(opened) => opened,
                    Err(ExecError::Overloaded) => return Err(NotificationOutcome::Shed),
                    Err(ExecError::Panicked) => return Err(NotificationOutcome::Internal),
                }
            }
            Profile::Md5 => merchant.open_notification_observed(&data, self.metrics.crypto_timings()),
        };
        match opened {
            Ok(Opened::Verified { plaintext, .. }) => {
                let fields = fields_of(&plaintext);
                Ok((plaintext, fields))
            }
            Ok(Opened::PlatformFailure { .. }) => Err(NotificationOutcome::Malformed),
            Err(e) => {
                self.metrics.verify_failed(&e);
                facts.reason = Some(e.reason());
                Err(match e {
                    OpenError::Envelope(_) => NotificationOutcome::Malformed,
                    OpenError::CustomerMismatch => NotificationOutcome::WrongMerchant,
                    // Genuine (md5: a valid type-1 block) but not UTF-8: a charset problem to
                    // fix with the platform, not a forgery.
                    OpenError::NotUtf8 => NotificationOutcome::NotUtf8,
                    // Signed by the platform, but an answer (or another message) posing as a
                    // notification: never forwarded.
                    OpenError::NotANotification => NotificationOutcome::NotNotification,
                    // One answer for every cryptographic failure: no oracle.
                    OpenError::Ciphertext(_) | OpenError::Plaintext | OpenError::Signature => NotificationOutcome::Forged,
                })
            }
        }
    }

    /// Hands the verified plaintext to the target; acknowledged only on its 2xx.
    async fn deliver(
        &self,
        route: &NotifyRoute,
        merchant: &Merchant,
        plaintext: String,
        fields: &Map<String, Value>,
        facts: &mut NotificationFacts<'_>,
    ) -> NotificationOutcome {
        let id = notification_id(&merchant.customer_no, fields);
        facts.order_no = order_no(fields);
        let sent = self.forward(route, &id, &merchant.customer_no, &logging::new_request_id(), Bytes::from(plaintext)).await;
        facts.notification_id = Some(id);
        match sent {
            Ok(a) if (200..300).contains(&a.status) => NotificationOutcome::Forwarded,
            Ok(a) => {
                facts.target_status = Some(a.status);
                NotificationOutcome::TargetFailed
            }
            Err(TargetError::NotSent) => NotificationOutcome::TargetUnreachable,
            Err(TargetError::Failed) => NotificationOutcome::TargetFailed,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::NotificationOutcome;

    #[test]
    fn outcomes_have_distinct_labels_and_only_forwarded_or_stored_is_acknowledged() {
        use NotificationOutcome::*;
        let labels: std::collections::BTreeSet<&str> = NotificationOutcome::ALL.iter().map(|o| o.as_str()).collect();
        assert_eq!(labels.len(), NotificationOutcome::ALL.len());
        for &o in NotificationOutcome::ALL {
            assert_eq!(o.status() == 200, matches!(o, Forwarded | Stored | Duplicate), "{o:?}");
            assert_eq!(o.acknowledged(), o.status() == 200, "{o:?}");
        }
        assert_eq!(StoreFailed.status(), 503);
    }
}
