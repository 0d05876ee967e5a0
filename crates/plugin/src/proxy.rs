//! The `ProxyHttp` implementation. paysign's status codes depend on verifying the platform's
//! whole answer, which pingora's streaming filters cannot express (the status line would
//! leave before the body is verified), so everything happens in `request_filter`: read the
//! body, validate, seal, call the platform over pooled connections (made by pingora's
//! connector), open, verify, and write the final status with an exact `Content-Length`.
//! `upstream_peer` is never reached.

use std::sync::Arc;
use std::time::{Duration, Instant};

use async_trait::async_trait;
use bytes::Bytes;
use pingora::http::{RequestHeader, ResponseHeader};
use pingora::prelude::*;
use pingora::proxy::{ProxyHttp, Session};

use crate::auth;
use crate::bearer;
use crate::call::{self, Paysign};
use crate::error::{Delivery, GatewayError};
use crate::h5;
use crate::live::Runtime;
use crate::logging;
use crate::metrics::{self, Metrics};
use crate::protocol::canonical::Part;
use crate::protocol::envelope::NotAnObject;
use crate::protocol::{Business, Merchant};
use crate::serve::Gathered;

pub const MERCHANT_HEADER: &str = "x-paysign-merchant";
pub const DELIVERY_HEADER: &str = "X-Paysign-Delivery";
pub const REQUEST_ID_HEADER: &str = "x-request-id";
/// The caller's remaining patience in milliseconds: a request that cannot be sent within it is
/// not sent (503 `not-sent`).
pub const DEADLINE_HEADER: &str = "x-paysign-deadline-ms";
const JSON: &str = "application/json;charset=UTF-8";

/// Long-lived state shared by all requests.
pub struct Gateway {
    paysign: Paysign,
    metrics: Arc<Metrics>,
}

/// Per-request state, filled in as the request moves through the phases.
pub struct Ctx {
    start: Instant,
    request_id: String,
    endpoint: String,
    merchant: String,
    order_no: Option<String>,
    outcome: &'static str,
    status: u16,
    delivery: Delivery,
    err_code: Option<String>,
    upstream: Option<Duration>,
    _in_flight: InFlight,
}

/// Counts a request in `paysign_requests_in_flight` for exactly as long as it lives.
struct InFlight(prometheus::IntGauge);
impl InFlight {
    fn new(gauge: &prometheus::IntGauge) -> Self {
        gauge.inc();
        InFlight(gauge.clone())
    }
}
impl Drop for InFlight {
    fn drop(&mut self) {
        self.0.dec();
    }
}

/// A verified answer for the internal service: the plaintext JSON, or the bank page.
struct Reply {
    body: Bytes,
    content_type: String,
    /// Set for the bank page (with the frame/sniff/referrer headers that go with it).
    csp: Option<String>,
}

impl Gateway {
    pub fn new(paysign: Paysign) -> Self {
        let metrics = paysign.live().metrics().clone();
        Gateway { paysign, metrics }
    }

    fn merchant_label(rt: &Runtime, m: Option<&str>) -> String {
        match m {
            Some(c) if rt.config.merchants.contains_key(c) => c.to_string(),
            Some(_) => "unknown".into(),
            None => "none".into(),
        }
    }

    /// The steps of one call: intake (route, authenticate, merchant, body) → the body's fields
    /// → validate → seal → send → open and verify (see `call.rs`) → answer (JSON, or the bank
    /// page).
    async fn handle(&self, session: &mut Session, ctx: &mut Ctx) -> Result<Reply, GatewayError> {
        // One configuration for the whole request, whatever reloads happen meanwhile.
        let rt = self.paysign.live().current();
        // Until it is sent, a call still waiting (for its body, for the private-key executor)
        // when the drain deadline comes is answered 503 `not-sent`, not cut by the exit.
        let (path, sealed, wants_html) = tokio::select! {
            biased;
            () = call::until_sending_stopped() => {
                session.set_keepalive(None);
                return Err(GatewayError::ShuttingDown);
            }
            before = self.before_sending(&rt, session, ctx) => before?,
        };
        let retry = || self.metrics.connect_retries.with_label_values(&[&ctx.endpoint]).inc();
        let sent = call::send(&rt, &path, sealed, &ctx.request_id, retry).await;
        ctx.upstream = sent.upstream;
        let verified = sent.result.inspect_err(|e| self.count_refusal(ctx, e))?;
        self.answer(ctx, verified, wants_html)
    }

    /// Everything before sending: intake, the body's fields, validate, seal.
    async fn before_sending(
        &self,
        rt: &Runtime,
        session: &mut Session,
        ctx: &mut Ctx,
    ) -> Result<(String, call::Sealed, bool), GatewayError> {
        let intake = self.intake(rt, session, ctx).await?;
        let Intake { path, merchant, body, deadline, wants_html } = intake;
        let mut business = business_of(&body)?;
        ctx.order_no = order_no(&business);
        call::validate(self.paysign.endpoints(), &path, &mut business, &merchant)?;
        // A caller that hangs up while its request waits to be sealed is not sent for.
        let sealed = tokio::select! {
            biased;
            () = caller_gone(session) => return Err(GatewayError::CallerGone),
            sealed = call::seal(rt, &merchant, business) => sealed?,
        };
        if deadline.is_some_and(|d| ctx.start.elapsed() >= d) {
            return Err(GatewayError::DeadlinePassed);
        }
        Ok((path, sealed, wants_html))
    }

    /// Route, method, caller, deadline, merchant, query, then the body.
    async fn intake(&self, rt: &Runtime, session: &mut Session, ctx: &mut Ctx) -> Result<Intake, GatewayError> {
        let req = session.req_header();
        let path = req.uri.path().to_string();
        ctx.endpoint = self.paysign.endpoints().get(&path).map_or_else(|| "other".to_string(), |e| e.name.clone());
        if !call::is_forwardable_path(&path) {
            ctx.endpoint = "none".into();
            return Err(GatewayError::NotFound);
        }
        if req.method != http::Method::POST {
            return Err(GatewayError::MethodNotAllowed);
        }
        let wants_html = req.headers.get(http::header::ACCEPT).and_then(|v| v.to_str().ok()).is_some_and(|v| v.contains("text/html"));
        let caller = auth::authenticate(&rt.config, &self.metrics, bearer::presented(&req.headers))?;
        let deadline = deadline(req)?;

        let named = single_header(req, MERCHANT_HEADER)?.map(|v| v.to_str().unwrap_or("").trim().to_string());
        ctx.merchant = Self::merchant_label(rt, named.as_deref());
        let merchant = call::select_merchant(rt, named.as_deref())?;
        ctx.merchant = merchant.customer_no.clone();
        auth::authorize(&self.metrics, caller, &path, &merchant.customer_no)?;
        // The platform signs the body only: nothing unsigned may ride along in the URL.
        if req.uri.query().is_some() {
            return Err(GatewayError::QueryNotAllowed);
        }

        let body = match tokio::time::timeout(rt.config.client_body_timeout, read_body(session, rt.config.max_body_bytes)).await {
            Ok(body) => body?,
            Err(_) => {
                session.set_keepalive(None);
                return Err(GatewayError::ClientTimeout);
            }
        };
        Ok(Intake { path, merchant, body, deadline, wants_html })
    }

    /// The verified plaintext as JSON, or the bank page when a browser asked for it.
    fn answer(&self, ctx: &mut Ctx, verified: call::Verified, wants_html: bool) -> Result<Reply, GatewayError> {
        let code = verified.err_code.as_deref().unwrap_or("");
        self.metrics.platform_errcodes.with_label_values(&[&ctx.endpoint, metrics::errcode_label(code)]).inc();
        // The log says the code itself; only the metric label is bounded to the document's set.
        ctx.err_code = verified.err_code.as_deref().map(log_code);
        if wants_html {
            let fields = verified.fields();
            if h5::wants_form(&fields) {
                let page = h5::render(&fields).map_err(GatewayError::Form)?;
                return Ok(Reply { body: Bytes::from(page.body), content_type: page.content_type, csp: Some(page.csp) });
            }
        }
        Ok(Reply { body: Bytes::from(verified.plaintext), content_type: JSON.into(), csp: None })
    }

    /// The platform's refusals and answers that did not verify, counted and logged.
    fn count_refusal(&self, ctx: &Ctx, e: &GatewayError) {
        match e {
            GatewayError::PlatformFailure { .. } => self.metrics.platform_failures.with_label_values(&[&ctx.endpoint]).inc(),
            GatewayError::Verify(v) => {
                self.metrics.verify_failed(v);
                tracing::warn!("platform answer rejected: request_id={} merchant={} reason={}", ctx.request_id, ctx.merchant, v.reason());
            }
            _ => {} // ok: only these two are counted here; every error is counted by outcome in `logging`
        }
    }
}

/// The access line (a contract: these fields, in this order; see docs/observability.md),
/// serialised straight from the request's state.
#[derive(serde::Serialize)]
struct AccessLine<'a> {
    request_id: &'a str,
    endpoint: &'a str,
    merchant: &'a str,
    order_no: Option<&'a str>,
    outcome: &'a str,
    status: u16,
    delivery: &'a str,
    err_code: Option<&'a str>,
    latency_ms: f64,
    upstream_ms: Option<f64>,
    ts: logging::Now,
    level: &'static str,
    msg: &'static str,
}

/// What intake hands to the pipeline.
struct Intake {
    path: String,
    merchant: Arc<Merchant>,
    body: Bytes,
    deadline: Option<Duration>,
    wants_html: bool,
}

/// The request body's fields: UTF-8 text of one JSON object, read once (see [`Business`]).
fn business_of(body: &[u8]) -> Result<Business<'_>, GatewayError> {
    std::str::from_utf8(body).map_err(|_| GatewayError::BadBody("is not UTF-8"))?;
    Business::parse(body).map_err(|e| {
        GatewayError::BadBody(match e {
            NotAnObject::NotJson => "is not JSON",
            NotAnObject::OtherValue => "is not a JSON object",
        })
    })
}

/// An errCode for the access line as the caller got it (at most 64 characters).
fn log_code(code: &str) -> String {
    code.chars().take(64).collect()
}

/// `orderNo` for the access line (at most 64 characters).
fn order_no(business: &Business<'_>) -> Option<String> {
    match business.get("orderNo") {
        Some(Part::Text(s)) => Some(s.chars().take(64).collect()),
        _ => None,
    }
}

/// Resolves when the caller closes its connection (the request body has been read); pends
/// otherwise.
async fn caller_gone(session: &mut Session) {
    if session.read_body_or_idle(true).await.is_ok() {
        // Pipelined bytes, not a close: keep waiting for the work.
        std::future::pending::<()>().await
    }
}

/// A header that may appear at most once.
fn single_header<'a>(req: &'a RequestHeader, name: &'static str) -> Result<Option<&'a http::HeaderValue>, GatewayError> {
    let mut all = req.headers.get_all(name).iter();
    let first = all.next();
    if all.next().is_some() {
        return Err(GatewayError::DuplicateHeader(name));
    }
    Ok(first)
}

/// `X-Paysign-Deadline-Ms`: whole milliseconds, at most a day.
fn deadline(req: &RequestHeader) -> Result<Option<Duration>, GatewayError> {
    match single_header(req, DEADLINE_HEADER)? {
        None => Ok(None),
        Some(v) => v
            .to_str()
            .ok()
            .and_then(|v| v.trim().parse::<u64>().ok())
            .filter(|ms| *ms <= 86_400_000)
            .map(|ms| Some(Duration::from_millis(ms)))
            .ok_or(GatewayError::BadHeader(DEADLINE_HEADER)),
    }
}

async fn read_body(session: &mut Session, limit: usize) -> Result<Bytes, GatewayError> {
    let declared =
        session.req_header().headers.get(http::header::CONTENT_LENGTH).and_then(|v| v.to_str().ok()).and_then(|v| v.parse::<usize>().ok());
    if declared.is_some_and(|n| n > limit) {
        // The body stays unread, so this connection cannot be reused.
        session.set_keepalive(None);
        return Err(GatewayError::BodyTooLarge { limit });
    }
    let mut body = Gathered::new(limit);
    loop {
        match session.read_request_body().await {
            Ok(Some(chunk)) => {
                if body.push(chunk).is_err() {
                    session.set_keepalive(None);
                    return Err(GatewayError::BodyTooLarge { limit });
                }
            }
            Ok(None) => return Ok(body.finish()),
            Err(_) => {
                session.set_keepalive(None);
                return Err(GatewayError::BadBody("could not be read"));
            }
        }
    }
}

fn request_id(session: &Session) -> String {
    let given = session.req_header().headers.get(REQUEST_ID_HEADER).and_then(|v| v.to_str().ok());
    match given {
        Some(id) if !id.is_empty() && id.len() <= 128 && id.bytes().all(|b| b.is_ascii_alphanumeric() || b"-_.:".contains(&b)) => {
            id.to_string()
        }
        _ => logging::new_request_id(),
    }
}

async fn write_reply(
    session: &mut Session,
    ctx: &Ctx,
    status: u16,
    content_type: &str,
    body: Bytes,
    extra: &[(&'static str, &str)],
) -> pingora::Result<()> {
    let mut resp = ResponseHeader::build(status, Some(6 + extra.len()))?;
    resp.insert_header("Content-Type", content_type)?;
    resp.insert_header("Content-Length", http::HeaderValue::from(body.len()))?;
    resp.insert_header("Cache-Control", "no-store")?;
    resp.insert_header("X-Request-Id", ctx.request_id.as_str())?;
    resp.insert_header(DELIVERY_HEADER, ctx.delivery.as_str())?;
    for (k, v) in extra {
        resp.insert_header(*k, *v)?;
    }
    session.write_response_header(Box::new(resp), false).await?;
    session.write_response_body(Some(body), true).await?;
    Ok(())
}

#[async_trait]
impl ProxyHttp for Gateway {
    type CTX = Ctx;

    fn new_ctx(&self) -> Ctx {
        Ctx {
            start: Instant::now(),
            request_id: String::new(),
            endpoint: "none".into(),
            merchant: "none".into(),
            order_no: None,
            outcome: "internal",
            status: 500,
            delivery: Delivery::NotSent,
            err_code: None,
            upstream: None,
            _in_flight: InFlight::new(&self.metrics.in_flight),
        }
    }

    /// Default: nothing. Here: the head is complete (its deadline and size bound end), and
    /// pipelined requests are answered in order (pingora's default drops the second one).
    async fn early_request_filter(&self, session: &mut Session, _ctx: &mut Ctx) -> pingora::Result<()> {
        crate::listener::request_parsed(session);
        Ok(())
    }

    /// Default: continue to `upstream_peer`. Here: the whole exchange, then `Ok(true)` (the
    /// response has been written and pingora does not proxy).
    async fn request_filter(&self, session: &mut Session, ctx: &mut Ctx) -> pingora::Result<bool> {
        ctx.start = Instant::now();
        ctx.request_id = request_id(session);
        let result = self.handle(session, ctx).await;
        match result {
            Ok(reply) => {
                ctx.outcome = "verified";
                ctx.status = 200;
                ctx.delivery = Delivery::Sent;
                match &reply.csp {
                    None => write_reply(session, ctx, 200, &reply.content_type, reply.body, &[]).await?,
                    Some(csp) => {
                        let page_headers = [
                            ("Content-Security-Policy", csp.as_str()),
                            ("X-Frame-Options", "DENY"),
                            ("X-Content-Type-Options", "nosniff"),
                            ("Referrer-Policy", "no-referrer"),
                            ("Pragma", "no-cache"),
                        ];
                        write_reply(session, ctx, 200, &reply.content_type, reply.body, &page_headers).await?
                    }
                }
            }
            Err(e) => {
                ctx.outcome = e.outcome();
                ctx.status = e.status();
                ctx.delivery = e.delivery();
                if ctx.err_code.is_none() {
                    // What the caller got in `errCode`: the platform's own code for a platform
                    // failure, the gateway's otherwise.
                    ctx.err_code = Some(log_code(e.err_code()));
                }
                let extra: &[(&'static str, &str)] = match e {
                    GatewayError::MethodNotAllowed => &[("Allow", "POST")],
                    GatewayError::Overloaded => &[("Retry-After", "1")],
                    GatewayError::Unauthenticated => &[("WWW-Authenticate", "Bearer")],
                    _ => &[],
                };
                write_reply(session, ctx, e.status(), JSON, Bytes::from(e.body()), extra).await?;
            }
        }
        Ok(true)
    }

    /// Never reached: `request_filter` always answers.
    async fn upstream_peer(&self, _session: &mut Session, _ctx: &mut Ctx) -> pingora::Result<Box<HttpPeer>> {
        Err(Error::explain(ErrorType::InternalError, "paysign answers every request in request_filter"))
    }

    /// Default: nothing. Here: the access line and the request metrics.
    async fn logging(&self, _session: &mut Session, e: Option<&pingora::Error>, ctx: &mut Ctx) {
        let took = ctx.start.elapsed();
        if ctx.request_id.is_empty() {
            // The request never reached request_filter (e.g. malformed head).
            ctx.outcome = "bad_request";
            ctx.status = 400;
        }
        if e.is_some() && ctx.outcome == "verified" {
            ctx.outcome = "client_gone";
        }
        self.metrics.requests.with_label_values(&[&ctx.endpoint, &ctx.merchant, ctx.outcome]).inc();
        self.metrics.request_duration.with_label_values(&[&ctx.endpoint]).observe(took.as_secs_f64());
        if let Some(up) = ctx.upstream {
            self.metrics.upstream_duration.with_label_values(&[&ctx.endpoint]).observe(up.as_secs_f64());
        }
        let ms = |d: Duration| (d.as_secs_f64() * 1e6).round() / 1e3;
        logging::access_line(&AccessLine {
            request_id: &ctx.request_id,
            endpoint: &ctx.endpoint,
            merchant: &ctx.merchant,
            order_no: ctx.order_no.as_deref(),
            outcome: ctx.outcome,
            status: ctx.status,
            delivery: ctx.delivery.as_str(),
            err_code: ctx.err_code.as_deref(),
            latency_ms: ms(took),
            upstream_ms: ctx.upstream.map(ms),
            ts: logging::Now,
            level: "info",
            msg: "access",
        });
    }
}
