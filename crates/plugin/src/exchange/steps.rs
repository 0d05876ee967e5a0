//! The common steps of every call, HTTP or not: merchant → validate → seal → (send) → open and
//! verify; private-key work through the one bounded executor, with what its failure means
//! before and after sending.

use std::sync::Arc;
use std::time::Duration;

use tokio::sync::OwnedSemaphorePermit;

use super::{Exchange, Verified};
use crate::error::GatewayError;
use crate::executor::ExecError;
use crate::http_client::Answer;
use crate::live::Runtime;
use crate::protocol::canonical::Part;
use crate::protocol::schema::Endpoints;
use crate::protocol::{Business, Merchant, OpenError, Opened, Profile};

/// A request sealed for one merchant, admitted, ready to send.
pub(super) struct Sealed {
    pub(super) merchant: Arc<Merchant>,
    pub(super) body: Vec<u8>,
    /// Held until the answer is opened: admission covers the whole exchange.
    pub(super) _admitted: OwnedSemaphorePermit,
}

/// What sending produced, with the time the platform took (when anything was attempted).
pub(super) struct Sent {
    pub(super) result: Result<Verified, GatewayError>,
    pub(super) upstream: Option<Duration>,
}

/// The merchant named by the caller, or the only one configured; its label set on `ex` as soon
/// as it is known (`unknown` for a name not configured).
pub(super) fn select_merchant(rt: &Runtime, ex: &mut Exchange, named: Option<&str>) -> Result<Arc<Merchant>, GatewayError> {
    let found = match named {
        Some(c) => rt.config.merchants.get(c).cloned().ok_or(GatewayError::UnknownMerchant),
        None => rt.config.default_merchant().cloned().ok_or(GatewayError::MerchantRequired),
    };
    ex.merchant = match (&found, named) {
        (Ok(m), _) => m.customer_no.clone(),
        (Err(_), Some(_)) => "unknown".into(),
        (Err(_), None) => "none".into(),
    };
    found
}

/// Fields paysign owns (`sign`, `customerNo`) and the endpoint's schema.
pub(super) fn validate(endpoints: &Endpoints, path: &str, business: &mut Business<'_>, merchant: &Merchant) -> Result<(), GatewayError> {
    check_reserved(business, &merchant.customer_no)?;
    if let Some(ep) = endpoints.get(path) {
        ep.validate(business).map_err(GatewayError::Invalid)?;
    }
    Ok(())
}

/// Admission, then `sign` and `reqmsg` (private-key work on the bounded executor, on fields it
/// owns; MD5 and public-key work inline, on the caller's text).
/// Beyond either bound: [`GatewayError::Overloaded`], nothing sent.
pub(super) async fn seal(rt: &Runtime, merchant: &Arc<Merchant>, business: Business<'_>) -> Result<Sealed, GatewayError> {
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

/// Step 5: open and verify the platform's answer.
pub(super) async fn open(rt: &Runtime, merchant: &Arc<Merchant>, answer: Answer) -> Result<Verified, GatewayError> {
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
pub(super) fn check_reserved(business: &mut Business<'_>, customer_no: &str) -> Result<(), GatewayError> {
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
pub(super) enum Stage {
    BeforeSending,
    AfterSending,
}

/// Private-key work goes through the one bounded executor (see `executor.rs`); public-key and
/// MD5 work (tens of microseconds) stays inline, where a thread hop costs more.
pub(super) async fn private_key_work<T: Send + 'static>(
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
pub(super) fn executor_error(stage: Stage, e: ExecError) -> GatewayError {
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
