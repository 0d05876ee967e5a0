//! The exchange: everything paysign does with one call, in one place, for two consumers.
//!
//! **route → authenticate → merchant → (HTTP: query, deadline, body) → validate → seal → send
//! → open and verify → answer**, with every metric and the access line. Both ways in run
//! these same steps, so both get the same checks, safeguards (admission `max_in_flight`, the
//! one bounded private-key executor, the drain) and counting:
//!
//! - [`Paysign::request_filter`] (with [`Paysign::logging`]): the whole HTTP exchange from a
//!   pingora `ProxyHttp`. The caller is authenticated before its body is read; the answer is
//!   the verified JSON (or, for `Accept: text/html`, the bank page) with `X-Request-Id`,
//!   `X-Paysign-Delivery`, `Cache-Control` and the page's security headers. The `paysign`
//!   binary's proxy is this plus its own 404 for other paths.
//! - [`Paysign::call_as`]: the same steps for a caller that is not HTTP (a queue consumer, a
//!   batch job), on a business object already parsed.
//!
//! paysign's status codes depend on verifying the platform's whole answer, which pingora's
//! streaming filters cannot express (the status line would leave before the body is
//! verified), so the exchange answers from `request_filter` and never reaches `upstream_peer`.
//! Every error says whether the platform may have acted ([`GatewayError::delivery`]).
//!
//! ```no_run
//! use async_trait::async_trait;
//! use paysign_plugin::{Exchange, Paysign};
//! use pingora::prelude::*;
//! use pingora::proxy::{ProxyHttp, Session};
//!
//! struct MyGateway {
//!     paysign: Paysign,
//! }
//!
//! #[async_trait]
//! impl ProxyHttp for MyGateway {
//!     type CTX = Exchange;
//!     fn new_ctx(&self) -> Exchange {
//!         Exchange::default()
//!     }
//!
//!     async fn request_filter(&self, session: &mut Session, ex: &mut Exchange) -> Result<bool> {
//!         // `/api/…` is answered by paysign (`Ok(true)`); anything else goes on (`Ok(false)`).
//!         self.paysign.request_filter(session, ex).await
//!     }
//!
//!     async fn upstream_peer(&self, _: &mut Session, _: &mut Exchange) -> Result<Box<HttpPeer>> {
//!         Ok(Box::new(HttpPeer::new("127.0.0.1:3000", false, String::new())))
//!     }
//!
//!     async fn logging(&self, session: &mut Session, e: Option<&pingora::Error>, ex: &mut Exchange) {
//!         // paysign's access line and request metrics (nothing for a request that was not its own).
//!         self.paysign.logging(session, e, ex);
//!     }
//! }
//!
//! # fn main() -> std::result::Result<(), Box<dyn std::error::Error>> {
//! let registry = prometheus::Registry::new(); // paysign's metrics: serve it on your /metrics
//! let paysign = Paysign::from_file("conf/paysign.yaml".as_ref(), &registry)?;
//! let mut server = Server::new(None)?;
//! server.bootstrap();
//! let mut proxy = http_proxy_service(&server.configuration, MyGateway { paysign });
//! proxy.add_tcp("127.0.0.1:8000");
//! server.add_service(proxy);
//! server.run_forever();
//! # }
//! ```

mod answer;
mod intake;
mod steps;

use std::future::Future;
use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use pingora::proxy::Session;
use serde_json::{Map, Value};

use crate::auth;
use crate::bearer::{self, Presented};
use crate::config::{self, Config, ConfigError};
use crate::error::{Delivery, GatewayError};
use crate::live::{Live, ReloadSource, Runtime};
use crate::logging;
use crate::metrics::{self, Metrics};
use crate::protocol::schema::Endpoints;
use crate::protocol::{fields_of, Business, Merchant};

use answer::{answer, write_reply, AccessLine, Reply};
use intake::{business_of, caller_gone, deadline, log_code, order_no, read_body, request_id, single_header};
pub use steps::is_forwardable_path;
use steps::{open, seal, select_merchant, validate, Sealed, Sent};

/// Names the merchant (`customerNo`) a call is for; optional when exactly one is configured.
pub const MERCHANT_HEADER: &str = "x-paysign-merchant";
/// Whether the platform may have the request: `sent`, `not-sent` or `unknown`.
pub const DELIVERY_HEADER: &str = "X-Paysign-Delivery";
/// The caller's request id (kept when well-formed, else a new one), echoed and sent on.
pub const REQUEST_ID_HEADER: &str = "x-request-id";
/// The caller's remaining patience in milliseconds: a request that cannot be sent within it is
/// not sent (503 `not-sent`).
pub const DEADLINE_HEADER: &str = "x-paysign-deadline-ms";
const JSON: &str = "application/json;charset=UTF-8";

/// paysign for a pingora gateway: the reloadable configuration and the exchange. Cheap to
/// clone (clones share everything, the drain included).
#[derive(Clone)]
pub struct Paysign {
    live: Arc<Live>,
    endpoints: Arc<Endpoints>,
    /// Set once, when this instance's drain deadline has come (see [`Paysign::stop_sending`]).
    sending_stopped: Arc<tokio::sync::watch::Sender<bool>>,
}

/// One request's state as it moves through the exchange (a pingora `ProxyHttp::CTX`, or a part
/// of yours): what the access line and the request metrics say about it.
pub struct Exchange {
    start: Instant,
    seen: Seen,
    request_id: String,
    endpoint: String,
    merchant: String,
    order_no: Option<String>,
    outcome: &'static str,
    status: u16,
    delivery: Delivery,
    err_code: Option<String>,
    upstream: Option<Duration>,
    /// The instance's metrics, from the moment paysign takes the request.
    metrics: Option<Arc<Metrics>>,
    _in_flight: Option<InFlight>,
}

/// Whether a request is paysign's: only those are logged and counted.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Seen {
    /// `request_filter` has not run (pingora failed the request before it).
    NotYet,
    Paysigns,
    NotPaysigns,
}

impl Default for Exchange {
    fn default() -> Self {
        Exchange {
            start: Instant::now(),
            seen: Seen::NotYet,
            request_id: String::new(),
            endpoint: "none".into(),
            merchant: "none".into(),
            order_no: None,
            outcome: "internal",
            status: 500,
            delivery: Delivery::NotSent,
            err_code: None,
            upstream: None,
            metrics: None,
            _in_flight: None,
        }
    }
}

impl Exchange {
    /// The request id this exchange answers with (empty until paysign has taken the request).
    pub fn request_id(&self) -> &str {
        &self.request_id
    }

    /// From now on the request is paysign's: timed, counted in flight, logged.
    fn claim(&mut self, request_id: String, metrics: &Arc<Metrics>) {
        self.seen = Seen::Paysigns;
        self.start = Instant::now();
        self.request_id = request_id;
        self._in_flight = Some(InFlight::new(&metrics.in_flight));
        self.metrics = Some(metrics.clone());
    }

    /// What the caller got, for the access line and the metrics.
    fn settle(&mut self, result: Result<(), &GatewayError>) {
        match result {
            Ok(()) => {
                self.outcome = "verified";
                self.status = 200;
                self.delivery = Delivery::Sent;
            }
            Err(e) => {
                self.outcome = e.outcome();
                self.status = e.status();
                self.delivery = e.delivery();
                if self.err_code.is_none() {
                    // What the caller got in `errCode`: the platform's own code for a platform
                    // failure, the gateway's otherwise.
                    self.err_code = Some(log_code(e.err_code()));
                }
            }
        }
    }

    // Every metric of the exchange is recorded by the four methods below (and `InFlight`).

    /// The platform's answer that verified: its errCode, counted and kept for the access line.
    fn count_answer(&mut self, verified: &Verified) {
        let code = verified.err_code.as_deref().unwrap_or("");
        if let Some(m) = &self.metrics {
            m.platform_errcodes.with_label_values(&[&self.endpoint, metrics::errcode_label(code)]).inc();
        }
        // The log says the code itself; only the metric label is bounded to the document's set.
        self.err_code = verified.err_code.as_deref().map(log_code);
    }

    /// The platform's refusals and answers that did not verify, counted and logged.
    fn count_refusal(&self, e: &GatewayError) {
        let Some(m) = &self.metrics else { return };
        match e {
            GatewayError::PlatformFailure { .. } => m.platform_failures.with_label_values(&[&self.endpoint]).inc(),
            GatewayError::Verify(v) => {
                m.verify_failed(v);
                tracing::warn!("platform answer rejected: request_id={} merchant={} reason={}", self.request_id, self.merchant, v.reason());
            }
            _ => {} // ok: only these two are counted here; every error is counted by outcome in `record`
        }
    }

    /// A connection attempt to the platform that is retried (nothing was sent on it).
    fn count_retry(&self) {
        if let Some(m) = &self.metrics {
            m.connect_retries.with_label_values(&[&self.endpoint]).inc();
        }
    }

    /// The end of the request: `paysign_requests_total`, the durations, the access line.
    fn record(&mut self, e: Option<&pingora::Error>, m: &Metrics) {
        let took = self.start.elapsed();
        if self.request_id.is_empty() {
            // The request never reached request_filter (e.g. a failed downstream module).
            self.outcome = "bad_request";
            self.status = 400;
        }
        if e.is_some() && self.outcome == "verified" {
            self.outcome = "client_gone";
        }
        m.requests.with_label_values(&[&self.endpoint, &self.merchant, self.outcome]).inc();
        m.request_duration.with_label_values(&[&self.endpoint]).observe(took.as_secs_f64());
        if let Some(up) = self.upstream {
            m.upstream_duration.with_label_values(&[&self.endpoint]).observe(up.as_secs_f64());
        }
        let ms = |d: Duration| (d.as_secs_f64() * 1e6).round() / 1e3;
        logging::access_line(&AccessLine {
            request_id: &self.request_id,
            endpoint: &self.endpoint,
            merchant: &self.merchant,
            order_no: self.order_no.as_deref(),
            outcome: self.outcome,
            status: self.status,
            delivery: self.delivery.as_str(),
            err_code: self.err_code.as_deref(),
            latency_ms: ms(took),
            upstream_ms: self.upstream.map(ms),
            ts: logging::Now,
            level: "info",
            msg: "access",
        });
    }
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

/// The platform's verified answer.
#[derive(Debug)]
pub struct Verified {
    /// Exactly the bytes the platform sealed (a JSON object).
    pub plaintext: String,
    /// Its `errCode` member, when a string.
    pub err_code: Option<String>,
}

impl Verified {
    /// The answer's members as a map (the plaintext parsed again; verifying it reads only what
    /// the signature needs).
    pub fn fields(&self) -> Map<String, Value> {
        fields_of(&self.plaintext)
    }
}

/// What the HTTP intake hands to the common steps.
struct Intake {
    path: String,
    merchant: Arc<Merchant>,
    body: Bytes,
    deadline: Option<Duration>,
    wants_html: bool,
}

/// Why a [`Paysign`] could not be built.
#[derive(Debug, thiserror::Error)]
pub enum StartError {
    /// The configuration file does not load or validate (the setting and file are named).
    #[error(transparent)]
    Config(#[from] ConfigError),
    /// The endpoint tables built into this binary do not parse: a defect of the build.
    #[error("the built-in endpoint tables: {0}")]
    Endpoints(String),
    /// paysign's metrics could not be registered (the registry already holds paysign's
    /// families: one registry per instance).
    #[error("metrics: {0}")]
    Metrics(#[from] prometheus::Error),
    /// `notify.inbox`'s store could not be opened (a folder that cannot be created, a database
    /// that cannot be reached): the notifications would have nowhere durable to go.
    #[error("notify.inbox: {0}")]
    Inbox(#[from] paysign_inbox::StoreError),
}

impl Paysign {
    /// From a validated configuration (reloads read `config.source`).
    pub fn new(config: Config, registry: &prometheus::Registry) -> Result<Self, StartError> {
        let metrics = Arc::new(Metrics::new(registry)?);
        metrics.crypto_backend(config.crypto_backend.as_str());
        Self::from_live(Arc::new(Live::new(config.source.clone(), config, metrics)))
    }

    /// From a configuration made in code, reloaded ([`Live::reload`], SIGHUP) from `source` — a
    /// file, or a closure returning the next configuration; metrics as [`Self::new`].
    pub fn with_reload_source(config: Config, source: ReloadSource, registry: &prometheus::Registry) -> Result<Self, StartError> {
        let metrics = Arc::new(Metrics::new(registry)?);
        metrics.crypto_backend(config.crypto_backend.as_str());
        Self::from_live(Arc::new(Live::new(source, config, metrics)))
    }

    /// Loads and validates the configuration file (keys parsed once); its metrics are
    /// registered into `registry` (one registry per instance; serve it on your metrics
    /// endpoint).
    pub fn from_file(path: &Path, registry: &prometheus::Registry) -> Result<Self, StartError> {
        Self::new(config::load(path)?, registry)
    }

    /// Shares reloadable state with other flows (the notification listener, the admin).
    /// Opens `notify.inbox`'s store, if configured.
    pub fn from_live(live: Arc<Live>) -> Result<Self, StartError> {
        live.open_inbox()?;
        Ok(Paysign {
            live,
            endpoints: Arc::new(Endpoints::builtin().map_err(StartError::Endpoints)?),
            sending_stopped: Arc::new(tokio::sync::watch::channel(false).0),
        })
    }

    /// The reloadable state (configuration, keys, platform client) this instance reads.
    pub fn live(&self) -> &Arc<Live> {
        &self.live
    }

    /// The endpoint tables (schemas) calls are validated against.
    pub fn endpoints(&self) -> &Endpoints {
        &self.endpoints
    }

    /// Nothing more is sent from now on (call it when your drain deadline has come): every
    /// call still waiting to be sent (for its body, for the private-key executor) answers at
    /// once 503 `not-sent` ([`GatewayError::ShuttingDown`]) rather than being cut when the
    /// process exits. Calls already sent are not affected. Shared by this instance's clones.
    pub fn stop_sending(&self) {
        self.sending_stopped.send_replace(true);
    }

    /// Whether [`Self::stop_sending`] has been called.
    pub fn sending_stopped(&self) -> bool {
        *self.sending_stopped.borrow()
    }

    /// Resolves when [`Self::stop_sending`] has been called (at once if it has); pends otherwise.
    async fn until_sending_stopped(&self) {
        let mut rx = self.sending_stopped.subscribe();
        if rx.wait_for(|stopped| *stopped).await.is_err() {
            // This instance holds the sender: nothing will stop sending.
            std::future::pending::<()>().await
        }
    }

    /// The whole HTTP exchange, for your `ProxyHttp::request_filter`: a request under `/api/`
    /// is paysign's — it is answered (`Ok(true)`: the response has been written) with its
    /// status, headers and body, whatever happened; any other path is left to you
    /// (`Ok(false)`). `Err` only when the answer could not be written (pingora then closes the
    /// connection). Call [`Self::logging`] from your `logging` hook for the access line and
    /// the request metrics.
    pub async fn request_filter(&self, session: &mut Session, ex: &mut Exchange) -> pingora::Result<bool> {
        // The head is complete, whoever answers it: its deadline and size bound end
        // ([`crate::listener::safeguarded_service`]), and pipelined requests are answered in order.
        crate::listener::request_parsed(session);
        if !session.req_header().uri.path().starts_with("/api/") {
            ex.seen = Seen::NotPaysigns;
            return Ok(false);
        }
        ex.claim(request_id(session), self.live.metrics());
        let result = self.handle(session, ex).await;
        self.respond(session, ex, result).await
    }

    /// Answers the request as paysign answers a path it does not serve (404, JSON, with its
    /// headers, access line and metrics): for a gateway that has nothing else on its listener.
    pub async fn not_found(&self, session: &mut Session, ex: &mut Exchange) -> pingora::Result<bool> {
        ex.claim(request_id(session), self.live.metrics());
        self.respond(session, ex, Err(GatewayError::NotFound)).await
    }

    /// For your `ProxyHttp::logging`: paysign's access line and request metrics
    /// (`paysign_requests_total`, the durations) for a request it answered; nothing for one it
    /// left to you. `e` is pingora's error, if any (a verified answer the caller did not take
    /// is logged as `client_gone`).
    pub fn logging(&self, session: &Session, e: Option<&pingora::Error>, ex: &mut Exchange) {
        match ex.seen {
            Seen::Paysigns => {}
            Seen::NotPaysigns => return,
            // Failed before request_filter (pingora's error): paysign's when it was for
            // paysign's paths. Without an error, the embedder answered it without paysign.
            Seen::NotYet if e.is_none() || !session.req_header().uri.path().starts_with("/api/") => return,
            Seen::NotYet => {}
        }
        ex.record(e, self.live.metrics());
    }

    /// The exchange for a caller that is not HTTP, on behalf of the caller whose bearer token
    /// is `token` (checked against `callers`: its merchants and endpoints; `None` when no
    /// `callers` are configured). `merchant` names the `customerNo` (or `None` when exactly one
    /// merchant is configured); `request_id` goes to the platform as `X-Request-Id` and into
    /// the access line. The same steps, checks and metrics as [`Self::request_filter`].
    /// Dropping the future before it sends sends nothing.
    pub async fn call_as(
        &self,
        token: Option<&str>,
        merchant: Option<&str>,
        path: &str,
        business: Value,
        request_id: &str,
    ) -> Result<Verified, GatewayError> {
        let mut ex = Exchange::default();
        ex.claim(request_id.to_string(), self.live.metrics());
        let result = self.call_steps(&mut ex, token, merchant, path, &business).await;
        ex.settle(result.as_ref().map(|_| ()));
        ex.record(None, self.live.metrics());
        result
    }

    /// [`Self::call_as`] without a caller's token: refused (401) when the configuration names
    /// `callers`, so that the grants cannot be bypassed by embedding.
    pub async fn call(&self, merchant: Option<&str>, path: &str, business: Value, request_id: &str) -> Result<Verified, GatewayError> {
        self.call_as(None, merchant, path, business, request_id).await
    }

    /// The endpoint's name for metrics and the access line.
    fn endpoint_label(&self, path: &str) -> String {
        if !is_forwardable_path(path) {
            return "none".into();
        }
        self.endpoints.get(path).map_or_else(|| "other".to_string(), |e| e.name.clone())
    }

    /// The steps of one HTTP call: intake (route, authenticate, merchant, body) → the body's
    /// fields → the common steps → answer (JSON, or the bank page).
    async fn handle(&self, session: &mut Session, ex: &mut Exchange) -> Result<Reply, GatewayError> {
        // One configuration for the whole request, whatever reloads happen meanwhile.
        let rt = self.live.current();
        // Until it is sent, a call still waiting (for its body, for the private-key executor)
        // when the drain deadline comes is answered 503 `not-sent`, not cut by the exit.
        let (path, sealed, wants_html) = tokio::select! {
            biased;
            () = self.until_sending_stopped() => {
                session.set_keepalive(None);
                return Err(GatewayError::ShuttingDown);
            }
            before = self.before_sending(&rt, session, ex) => before?,
        };
        let verified = self.deliver(&rt, ex, &path, sealed).await?;
        answer(verified, wants_html)
    }

    /// Everything before sending over HTTP: intake, the body's fields, then validate and seal.
    async fn before_sending(&self, rt: &Runtime, session: &mut Session, ex: &mut Exchange) -> Result<(String, Sealed, bool), GatewayError> {
        let Intake { path, merchant, body, deadline, wants_html } = self.intake(rt, session, ex).await?;
        let business = business_of(&body)?;
        // A caller that hangs up while its request waits to be sealed is not sent for.
        let sealed = self.prepare(rt, ex, &path, &merchant, business, deadline, caller_gone(session)).await?;
        Ok((path, sealed, wants_html))
    }

    /// Route, method, caller, deadline, merchant, query, then the body (a refused caller's
    /// body is never read).
    async fn intake(&self, rt: &Runtime, session: &mut Session, ex: &mut Exchange) -> Result<Intake, GatewayError> {
        let req = session.req_header();
        let path = req.uri.path().to_string();
        ex.endpoint = self.endpoint_label(&path);
        if !is_forwardable_path(&path) {
            return Err(GatewayError::NotFound);
        }
        if req.method != http::Method::POST {
            return Err(GatewayError::MethodNotAllowed);
        }
        let wants_html = req.headers.get(http::header::ACCEPT).and_then(|v| v.to_str().ok()).is_some_and(|v| v.contains("text/html"));
        let caller = auth::authenticate(&rt.config, &rt.metrics, bearer::presented(&req.headers))?;
        let deadline = deadline(req)?;

        let named = single_header(req, MERCHANT_HEADER)?.map(|v| v.to_str().unwrap_or("").trim().to_string());
        let merchant = select_merchant(rt, ex, named.as_deref())?;
        auth::authorize(&rt.metrics, caller, &path, &merchant.customer_no)?;
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

    /// The steps of one call that is not HTTP: route, authenticate, merchant, then the common
    /// steps.
    async fn call_steps(
        &self,
        ex: &mut Exchange,
        token: Option<&str>,
        merchant: Option<&str>,
        path: &str,
        business: &Value,
    ) -> Result<Verified, GatewayError> {
        let rt = self.live.current();
        ex.endpoint = self.endpoint_label(path);
        let before = async {
            if !is_forwardable_path(path) {
                return Err(GatewayError::NotFound);
            }
            let caller = auth::authenticate(&rt.config, &rt.metrics, token.map_or(Presented::Missing, Presented::Token))?;
            let merchant = select_merchant(&rt, ex, merchant)?;
            auth::authorize(&rt.metrics, caller, path, &merchant.customer_no)?;
            let Value::Object(fields) = business else {
                return Err(GatewayError::BadBody("is not a JSON object"));
            };
            self.prepare(&rt, ex, path, &merchant, Business::from_map(fields), None, std::future::pending()).await
        };
        let sealed = tokio::select! {
            biased;
            () = self.until_sending_stopped() => return Err(GatewayError::ShuttingDown),
            sealed = before => sealed?,
        };
        self.deliver(&rt, ex, path, sealed).await
    }

    /// Common steps before sending: validate (fields paysign owns, the endpoint's schema), then
    /// seal — not for a caller that is `gone` meanwhile, and not past its `deadline`.
    #[allow(clippy::too_many_arguments)]
    async fn prepare(
        &self,
        rt: &Runtime,
        ex: &mut Exchange,
        path: &str,
        merchant: &Arc<Merchant>,
        mut business: Business<'_>,
        deadline: Option<Duration>,
        gone: impl Future<Output = ()>,
    ) -> Result<Sealed, GatewayError> {
        ex.order_no = order_no(&business);
        validate(&self.endpoints, path, &mut business, merchant)?;
        let sealed = tokio::select! {
            biased;
            () = gone => return Err(GatewayError::CallerGone),
            sealed = seal(rt, merchant, business) => sealed?,
        };
        if deadline.is_some_and(|d| ex.start.elapsed() >= d) {
            return Err(GatewayError::DeadlinePassed);
        }
        Ok(sealed)
    }

    /// Common steps from sending: send (never retried once anything may have been sent), open
    /// and verify, each outcome counted.
    async fn deliver(&self, rt: &Runtime, ex: &mut Exchange, path: &str, sealed: Sealed) -> Result<Verified, GatewayError> {
        let sent = {
            let ex = &*ex;
            self.send(rt, path, sealed, &ex.request_id, || ex.count_retry()).await
        };
        ex.upstream = sent.upstream;
        let verified = sent.result.inspect_err(|e| ex.count_refusal(e))?;
        ex.count_answer(&verified);
        Ok(verified)
    }

    /// Send, then open and verify the answer (private-key work that is never shed: the
    /// platform may have acted). After [`Self::stop_sending`], nothing is sent.
    async fn send(&self, rt: &Runtime, path: &str, sealed: Sealed, request_id: &str, on_retry: impl Fn()) -> Sent {
        if self.sending_stopped() {
            return Sent { result: Err(GatewayError::ShuttingDown), upstream: None };
        }
        let (answer, took) = match rt.client.post(path, sealed.body, request_id, on_retry).await {
            Ok((answer, took)) => (answer, took),
            Err((e, took)) => return Sent { result: Err(e), upstream: Some(took) },
        };
        Sent { result: open(rt, &sealed.merchant, answer).await, upstream: Some(took) }
    }

    /// Writes paysign's answer (the reply, or the error's) with every header; `Ok(true)`.
    async fn respond(&self, session: &mut Session, ex: &mut Exchange, result: Result<Reply, GatewayError>) -> pingora::Result<bool> {
        match result {
            Ok(reply) => {
                ex.settle(Ok(()));
                match &reply.csp {
                    None => write_reply(session, ex, 200, &reply.content_type, reply.body, &[]).await?,
                    Some(csp) => {
                        let page_headers = [
                            ("Content-Security-Policy", csp.as_str()),
                            ("X-Frame-Options", "DENY"),
                            ("X-Content-Type-Options", "nosniff"),
                            ("Referrer-Policy", "no-referrer"),
                            ("Pragma", "no-cache"),
                        ];
                        write_reply(session, ex, 200, &reply.content_type, reply.body, &page_headers).await?
                    }
                }
            }
            Err(e) => {
                ex.settle(Err(&e));
                let extra: &[(&'static str, &str)] = match e {
                    GatewayError::MethodNotAllowed => &[("Allow", "POST")],
                    GatewayError::Overloaded => &[("Retry-After", "1")],
                    GatewayError::Unauthenticated => &[("WWW-Authenticate", "Bearer")],
                    _ => &[],
                };
                write_reply(session, ex, e.status(), JSON, Bytes::from(e.body()), extra).await?;
            }
        }
        Ok(true)
    }
}
