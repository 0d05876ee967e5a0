//! The call pipeline, one step per function: **merchant → validate → seal → send → open**
//! (open includes verify). The gateway's `ProxyHttp` runs these steps; [`Paysign::call`] runs
//! them for a pingora gateway of your own, from its `request_filter`. Either way every call
//! passes the same safeguards: admission (`max_in_flight`), the one bounded private-key
//! executor, and an error that says whether the platform may have acted
//! ([`GatewayError::delivery`]).
//!
//! ```no_run
//! # async fn example() -> Result<(), Box<dyn std::error::Error>> {
//! use paysign_plugin::call::Paysign;
//!
//! let registry = prometheus::Registry::new(); // paysign's metrics go here: serve it
//! let paysign = Paysign::from_file("conf/paysign.yaml".as_ref(), &registry)?;
//! let business = serde_json::json!({"orderNo": "BC-1", "...": "..."});
//! match paysign.call(Some("202112090603"), "/api/vborder/shortcut/bindCard/create", business, "req-1").await {
//!     Ok(verified) => println!("{}", verified.plaintext),
//!     Err(e) => println!("{} (delivery: {})", e, e.delivery().as_str()),
//! }
//! # Ok(()) }
//! ```

use std::path::Path;
use std::sync::{Arc, LazyLock};
use std::time::Duration;

use serde_json::{Map, Value};
use tokio::sync::OwnedSemaphorePermit;

use crate::auth;
use crate::bearer::Presented;
use crate::config::{self, Config, ConfigError};
use crate::error::GatewayError;
use crate::executor::ExecError;
use crate::http_client::Answer;
use crate::live::{Live, Runtime};
use crate::metrics::Metrics;
use crate::protocol::canonical::Part;
use crate::protocol::schema::Endpoints;
use crate::protocol::{fields_of, Business, Merchant, OpenError, Opened, Profile};

/// paysign for your own pingora gateway: the reloadable configuration and the call pipeline.
pub struct Paysign {
    live: Arc<Live>,
    endpoints: Arc<Endpoints>,
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

/// A request sealed for one merchant, admitted, ready to send.
pub struct Sealed {
    merchant: Arc<Merchant>,
    body: Vec<u8>,
    /// Held until the answer is opened: admission covers the whole exchange.
    _admitted: OwnedSemaphorePermit,
}

/// What sending produced, with the time the platform took (when anything was attempted).
pub struct Sent {
    pub result: Result<Verified, GatewayError>,
    pub upstream: Option<Duration>,
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
}

impl Paysign {
    /// From a validated configuration (reloads read `config.source`); its metrics are
    /// registered into `registry` (one registry per instance).
    pub fn new(config: Config, registry: &prometheus::Registry) -> Result<Self, StartError> {
        let metrics = Arc::new(Metrics::new(registry)?);
        Self::from_live(Arc::new(Live::new(config.source.clone(), config, metrics)))
    }

    /// Loads and validates the configuration file (keys parsed once); metrics as [`Self::new`].
    pub fn from_file(path: &Path, registry: &prometheus::Registry) -> Result<Self, StartError> {
        Self::new(config::load(path)?, registry)
    }

    /// Shares reloadable state with other flows (the notification listener, the admin).
    pub fn from_live(live: Arc<Live>) -> Result<Self, StartError> {
        Ok(Paysign { live, endpoints: Arc::new(Endpoints::builtin().map_err(StartError::Endpoints)?) })
    }

    pub fn live(&self) -> &Arc<Live> {
        &self.live
    }

    pub fn endpoints(&self) -> &Endpoints {
        &self.endpoints
    }

    /// The whole pipeline for one business object: `merchant` names the `customerNo` (or
    /// `None` when exactly one merchant is configured). `request_id` goes to the platform as
    /// `X-Request-Id`. Dropping the future before it sends sends nothing.
    ///
    /// When the configuration names `callers`, this refuses (401): use [`Self::call_as`] with
    /// the caller's token, so that the grants cannot be bypassed by embedding.
    pub async fn call(&self, merchant: Option<&str>, path: &str, business: Value, request_id: &str) -> Result<Verified, GatewayError> {
        self.call_as(None, merchant, path, business, request_id).await
    }

    /// [`Self::call`] on behalf of the caller whose bearer token is `token` (checked against
    /// `callers`: its merchants and endpoints).
    pub async fn call_as(
        &self,
        token: Option<&str>,
        merchant: Option<&str>,
        path: &str,
        business: Value,
        request_id: &str,
    ) -> Result<Verified, GatewayError> {
        let rt = self.live.current();
        let presented = token.map_or(Presented::Missing, Presented::Token);
        let caller = auth::authenticate(&rt.config, &rt.metrics, presented)?;
        let merchant = select_merchant(&rt, merchant)?;
        auth::authorize(&rt.metrics, caller, path, &merchant.customer_no)?;
        let Value::Object(fields) = business else {
            return Err(GatewayError::BadBody("is not a JSON object"));
        };
        let mut business = Business::from_map(&fields);
        validate(&self.endpoints, path, &mut business, &merchant)?;
        let sealed = tokio::select! {
            biased;
            () = until_sending_stopped() => return Err(GatewayError::ShuttingDown),
            sealed = seal(&rt, &merchant, business) => sealed?,
        };
        send(&rt, path, sealed, request_id, || {}).await.result
    }
}

/// Step 1: the merchant named by the caller, or the only one configured.
pub fn select_merchant(rt: &Runtime, named: Option<&str>) -> Result<Arc<Merchant>, GatewayError> {
    match named {
        Some(c) => rt.config.merchants.get(c).cloned().ok_or(GatewayError::UnknownMerchant),
        None => rt.config.default_merchant().cloned().ok_or(GatewayError::MerchantRequired),
    }
}

/// Step 2: fields paysign owns (`sign`, `customerNo`) and the endpoint's schema.
pub fn validate(endpoints: &Endpoints, path: &str, business: &mut Business<'_>, merchant: &Merchant) -> Result<(), GatewayError> {
    if !is_forwardable_path(path) {
        return Err(GatewayError::NotFound);
    }
    check_reserved(business, &merchant.customer_no)?;
    if let Some(ep) = endpoints.get(path) {
        ep.validate(business).map_err(GatewayError::Invalid)?;
    }
    Ok(())
}

/// Step 3: admission, then `sign` and `reqmsg` (private-key work on the bounded executor, on
/// fields it owns; MD5 and public-key work inline, on the caller's text).
/// Beyond either bound: [`GatewayError::Overloaded`], nothing sent.
pub async fn seal(rt: &Runtime, merchant: &Arc<Merchant>, business: Business<'_>) -> Result<Sealed, GatewayError> {
    let admitted = rt.admission.clone().try_acquire_owned().map_err(|_| GatewayError::Overloaded)?;
    let sealed = match merchant.profile() {
        Profile::Md5 => merchant.seal_observed(business, rt.metrics.crypto_timings()),
        Profile::Rsa => {
            let (m, business, metrics) = (merchant.clone(), business.into_owned(), rt.metrics.clone());
            private_key_work(rt, Profile::Rsa, Stage::BeforeSending, move || m.seal_observed(business, metrics.crypto_timings())).await?
        }
    }?;
    Ok(Sealed { merchant: merchant.clone(), body: sealed.body, _admitted: admitted })
}

/// Set once, when the process's drain deadline has come (after SIGTERM or a hand-off): a call
/// not sent by then is answered 503 `not-sent` ([`GatewayError::ShuttingDown`]) rather than cut
/// when the process exits. Calls already sent are not affected: the deadline covers them.
static SENDING_STOPPED: LazyLock<tokio::sync::watch::Sender<bool>> = LazyLock::new(|| tokio::sync::watch::channel(false).0);

/// Nothing more is sent from now on; every call still waiting to be sent answers at once.
pub fn stop_sending() {
    SENDING_STOPPED.send_replace(true);
}

/// Whether [`stop_sending`] has been called.
pub fn sending_stopped() -> bool {
    *SENDING_STOPPED.borrow()
}

/// Resolves when [`stop_sending`] has been called (at once if it has); pends otherwise.
pub async fn until_sending_stopped() {
    let mut rx = SENDING_STOPPED.subscribe();
    if rx.wait_for(|stopped| *stopped).await.is_err() {
        // The sender is a static and never dropped: nothing will stop sending.
        std::future::pending::<()>().await
    }
}

/// Steps 4 and 5: send (never retried once anything may have been sent), then open and verify
/// the answer (private-key work that is never shed: the platform may have acted).
/// After [`stop_sending`], nothing is sent: [`GatewayError::ShuttingDown`].
pub async fn send(rt: &Runtime, path: &str, sealed: Sealed, request_id: &str, on_retry: impl Fn()) -> Sent {
    if sending_stopped() {
        return Sent { result: Err(GatewayError::ShuttingDown), upstream: None };
    }
    let (answer, took) = match rt.client.post(path, sealed.body, request_id, on_retry).await {
        Ok((answer, took)) => (answer, took),
        Err((e, took)) => return Sent { result: Err(e), upstream: Some(took) },
    };
    Sent { result: open(rt, &sealed.merchant, answer).await, upstream: Some(took) }
}

/// Step 5: open and verify the platform's answer.
async fn open(rt: &Runtime, merchant: &Arc<Merchant>, answer: Answer) -> Result<Verified, GatewayError> {
    let status = answer.status;
    let body = answer.body;
    let opened = match merchant.profile() {
        // Inline: nothing to move to a worker.
        Profile::Md5 => merchant.open_response_observed(&body, rt.metrics.crypto_timings()),
        Profile::Rsa => {
            let (m, metrics) = (merchant.clone(), rt.metrics.clone());
            let open = move || m.open_response_observed(&body, metrics.crypto_timings());
            private_key_work(rt, Profile::Rsa, Stage::AfterSending, open).await?
        }
    };
    match opened {
        Ok(Opened::Verified { plaintext, err_code }) => Ok(Verified { plaintext, err_code }),
        Ok(Opened::PlatformFailure { code, msg }) => Err(GatewayError::PlatformFailure { code, msg }),
        // Not the platform's envelope at all (an HTML error page): say what HTTP status came.
        Err(OpenError::Envelope(_)) if status != 200 => Err(GatewayError::UpstreamHttp(status)),
        Err(e) => Err(GatewayError::Verify(e)),
    }
}

/// Only normalised `/api/…` paths go to the platform (a third party): no `.`/`..` segments,
/// no empty segments, a conservative character set.
pub fn is_forwardable_path(path: &str) -> bool {
    let Some(rest) = path.strip_prefix("/api/") else {
        return false;
    };
    !rest.is_empty()
        && rest.split('/').all(|seg| !seg.is_empty() && seg != "." && seg != "..")
        && rest.bytes().all(|b| b.is_ascii_alphanumeric() || b"/-_.".contains(&b))
}

/// `sign` is computed by paysign and `customerNo` comes from the configuration.
fn check_reserved(business: &mut Business<'_>, customer_no: &str) -> Result<(), GatewayError> {
    if business.get("sign").is_some() {
        return Err(GatewayError::ReservedField("sign", "paysign computes it"));
    }
    match business.get("customerNo") {
        None => Ok(()),
        Some(Part::Text(c)) if c == customer_no => {
            business.remove("customerNo");
            Ok(())
        }
        Some(_) => Err(GatewayError::ReservedField("customerNo", "it must be the selected merchant's, or left out")),
    }
}

/// Whether the platform may already have the request: work after sending is never shed.
#[derive(Clone, Copy)]
enum Stage {
    BeforeSending,
    AfterSending,
}

/// Private-key work goes through the one bounded executor (see `executor.rs`); public-key and
/// MD5 work (tens of microseconds) stays inline, where a thread hop costs more.
async fn private_key_work<T: Send + 'static>(
    rt: &Runtime,
    profile: Profile,
    stage: Stage,
    f: impl FnOnce() -> T + Send + 'static,
) -> Result<T, GatewayError> {
    if profile != Profile::Rsa {
        return Ok(f());
    }
    let result = match stage {
        Stage::BeforeSending => rt.executor.run(f).await,
        Stage::AfterSending => rt.executor.run_committed(f).await,
    };
    result.map_err(|e| executor_error(stage, e))
}

/// What an executor failure means for the caller. Before sending, a saturated executor sent
/// nothing (503 `not-sent`); after sending, the platform may have acted, so whatever kept the
/// answer from being opened is never "not sent".
fn executor_error(stage: Stage, e: ExecError) -> GatewayError {
    match (stage, e) {
        (Stage::BeforeSending, ExecError::Overloaded) => GatewayError::Overloaded,
        (Stage::AfterSending, ExecError::Overloaded) | (Stage::BeforeSending | Stage::AfterSending, ExecError::Panicked) => {
            GatewayError::Internal
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn after_sending_an_executor_failure_is_never_not_sent() {
        use crate::error::Delivery;
        assert_eq!(executor_error(Stage::BeforeSending, ExecError::Overloaded).delivery(), Delivery::NotSent);
        assert_eq!(executor_error(Stage::AfterSending, ExecError::Overloaded).delivery(), Delivery::Unknown);
        assert_eq!(executor_error(Stage::BeforeSending, ExecError::Panicked).delivery(), Delivery::Unknown);
        assert_eq!(executor_error(Stage::AfterSending, ExecError::Panicked).delivery(), Delivery::Unknown);
    }

    #[test]
    fn forwardable_paths() {
        assert!(is_forwardable_path("/api/vborder/shortcut/bindCard/create"));
        assert!(!is_forwardable_path("/api/"));
        assert!(!is_forwardable_path("/api/../admin"));
        assert!(!is_forwardable_path("/api//x"));
        assert!(!is_forwardable_path("/metrics"));
        assert!(!is_forwardable_path("/api/a%2e%2e"));
    }
}
