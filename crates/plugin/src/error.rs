//! Every way a request can end other than with a verified platform plaintext, and the one
//! place where each becomes an HTTP answer: `{"errCode", "errMessage", "source"}` plus
//! `X-Paysign-Delivery`, which tells the caller whether the platform may have acted.

use serde_json::{Map, Value};

use crate::metrics::RequestOutcome;
use crate::protocol::schema::Invalid;
use crate::protocol::{OpenError, SealError};

/// Whether the request may have reached the platform.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Delivery {
    /// Certainly not sent: safe to fix and resend with the same `orderNo`.
    NotSent,
    /// The platform received it and answered.
    Sent,
    /// It may have been received: query the order before resubmitting.
    Unknown,
}

impl Delivery {
    /// The `X-Paysign-Delivery` value: `not-sent`, `sent` or `unknown`.
    pub fn as_str(self) -> &'static str {
        match self {
            Delivery::NotSent => "not-sent",
            Delivery::Sent => "sent",
            Delivery::Unknown => "unknown",
        }
    }
}

/// Why a request was answered with an error rather than the platform's verified plaintext.
/// Each variant says when it happens, its status and its [`Delivery`].
#[derive(Debug, thiserror::Error)]
pub enum GatewayError {
    /// The path is not one paysign forwards (a normalised `/api/…` path); 404, `not-sent`.
    #[error("no such endpoint: paysign proxies POST /api/…")]
    NotFound,
    /// The method is not POST (also pingora's bare 405 to `CONNECT`); 405 with `Allow: POST`,
    /// `not-sent`.
    #[error("method not allowed: use POST")]
    MethodNotAllowed,
    /// The body (as declared, or as read) is over `max_body_bytes`; 413, `not-sent`.
    #[error("request body is larger than {limit} bytes")]
    BodyTooLarge {
        /// `max_body_bytes` in force.
        limit: usize,
    },
    /// The body could not be read, or is not UTF-8 text of one JSON object; 400, `not-sent`.
    #[error("request body {0}")]
    BadBody(&'static str),
    /// The body did not arrive within `client_body_timeout_ms`; 408, `not-sent`.
    #[error("the request body did not arrive in time")]
    ClientTimeout,
    /// A field breaks the endpoint's schema (errCode from the table: 1003 missing, 1002 invalid);
    /// 400, `not-sent`.
    #[error("{}", .0.message)]
    Invalid(Invalid),
    /// The body carries `sign`, or a `customerNo` other than the selected merchant's; 400,
    /// `not-sent`.
    #[error("'{0}' must not be sent: {1}")]
    ReservedField(&'static str, &'static str),
    /// `X-Paysign-Merchant` or `X-Paysign-Deadline-Ms` appears more than once; 400, `not-sent`.
    #[error("the {0} header appears more than once")]
    DuplicateHeader(&'static str),
    /// `X-Paysign-Deadline-Ms` is not whole milliseconds of at most a day; 400, `not-sent`.
    #[error("the {0} header is not valid")]
    BadHeader(&'static str),
    /// The URL has a query string (the platform signs the body only); 400, `not-sent`.
    #[error("a query string is not accepted on this endpoint; send every field in the JSON body")]
    QueryNotAllowed,
    /// `callers` are configured and the bearer token is missing, malformed or unknown; 401 with
    /// `WWW-Authenticate: Bearer`, `not-sent`.
    #[error("authentication required: send Authorization: Bearer <your caller token>")]
    Unauthenticated,
    /// The caller's grants do not cover this endpoint or merchant; 403, `not-sent`.
    #[error("this caller may not use this merchant or endpoint")]
    Forbidden,
    /// A bound was reached before sending (`max_in_flight`, the private-key executor's workers and
    /// queue, the listener's budget for request heads) or a head was unfinished at shutdown; 503
    /// with `Retry-After: 1`, `not-sent`.
    #[error("paysign is at capacity; nothing was sent: retry after a moment")]
    Overloaded,
    /// The caller closed its connection while its request waited to be sealed; 499 (nobody reads
    /// it), `not-sent`.
    #[error("the caller closed the connection before the request was sent; nothing was sent")]
    CallerGone,
    /// [`Paysign::stop_sending`](crate::Paysign::stop_sending) was called before the request was
    /// sent; 503, `not-sent`.
    #[error("paysign is shutting down and its drain deadline passed before the request could be sent; nothing was sent: resend it")]
    ShuttingDown,
    /// The caller's `X-Paysign-Deadline-Ms` had passed once the request was sealed; 503,
    /// `not-sent`.
    #[error("the caller's deadline (X-Paysign-Deadline-Ms) passed before the request could be sent; nothing was sent")]
    DeadlinePassed,
    /// No merchant is named while several are configured; 400, `not-sent`.
    #[error("several merchants are configured: name one with the X-Paysign-Merchant header")]
    MerchantRequired,
    /// The named merchant (`customerNo`) is not configured; 400 with errCode 2001, `not-sent`.
    #[error("unknown merchant: no merchant with that customerNo is configured")]
    UnknownMerchant,
    /// Signing or encrypting the request failed (key or RNG trouble); 500, `not-sent`.
    #[error("the request could not be sealed")]
    Seal(#[from] SealError),
    /// No connection to the platform could be set up, after the allowed retries; 502, `not-sent`.
    #[error("the platform could not be reached; nothing was sent")]
    Unreachable,
    /// The TLS handshake with the platform failed (retrying cannot help); 502, `not-sent`.
    #[error("the TLS handshake with the platform failed (certificate not trusted, or not for this host name); nothing was sent")]
    PlatformTls,
    /// No complete answer within `platform.read_timeout_ms` after sending; 504, `unknown`.
    #[error("the platform did not answer in time; the request may have been received")]
    Timeout,
    /// The connection to the platform failed after the body may have left; 502, `unknown`.
    #[error("the connection to the platform failed after sending; the request may have been received")]
    UpstreamIo,
    /// The platform's answer is over `platform.max_response_bytes`; 502, `sent`.
    #[error("the platform's answer is larger than {limit} bytes")]
    ResponseTooLarge {
        /// `platform.max_response_bytes` in force.
        limit: usize,
    },
    /// The platform answered a non-200 HTTP status without its envelope (an error page); 502,
    /// `sent`.
    #[error("the platform answered HTTP {0} without a protocol envelope")]
    UpstreamHttp(u16),
    /// The platform answered a failure envelope (`code` ≠ 200 or `success` false); 502 with its
    /// code as errCode and `source` `platform`, `sent`.
    #[error("{msg}")]
    PlatformFailure {
        /// The platform's `code` (empty when it sent none): the answer's errCode.
        code: String,
        /// The platform's `msg` (empty when it sent none): the answer's errMessage.
        msg: String,
    },
    /// The platform's answer could not be opened or verified; 502, `sent`.
    /// Deliberately one message for every cause (see `OpenError::reason` for metrics).
    #[error("the platform's answer could not be verified; it was discarded")]
    Verify(OpenError),
    /// A browser asked for the bank page (`Accept: text/html`) and the verified answer's `submit…`
    /// fields cannot make one; 502, `sent`.
    #[error("the platform's answer cannot be rendered as the bank page: {0}")]
    Form(crate::h5::FormError),
    /// Refused by the HTTP parser before any app saw it (differing duplicate `Content-Length`,
    /// NUL, obs-fold, …); 400, `not-sent`.
    #[error("the request head could not be parsed as HTTP/1.1")]
    BadHttp,
    /// A request head over `max_header_bytes`, refused by the listener; 431, `not-sent`.
    #[error("the request head is larger than {limit} bytes")]
    HeadTooLarge {
        /// `max_header_bytes` in force.
        limit: usize,
    },
    /// A private-key job panicked, or after sending the executor had no room to open the answer;
    /// 500, `unknown`.
    #[error("internal error")]
    Internal,
}

impl GatewayError {
    /// The HTTP status of the answer.
    pub fn status(&self) -> u16 {
        match self {
            GatewayError::NotFound => 404,
            GatewayError::MethodNotAllowed => 405,
            GatewayError::BodyTooLarge { .. } => 413,
            GatewayError::ClientTimeout => 408,
            GatewayError::HeadTooLarge { .. } => 431,
            GatewayError::BadHttp => 400,
            GatewayError::BadBody(_)
            | GatewayError::Invalid(_)
            | GatewayError::ReservedField(..)
            | GatewayError::DuplicateHeader(_)
            | GatewayError::BadHeader(_)
            | GatewayError::QueryNotAllowed => 400,
            GatewayError::Unauthenticated => 401,
            GatewayError::Forbidden => 403,
            GatewayError::Overloaded | GatewayError::DeadlinePassed | GatewayError::ShuttingDown => 503,
            // Nobody reads it; the access log and metrics carry it (nginx's convention).
            GatewayError::CallerGone => 499,
            GatewayError::MerchantRequired | GatewayError::UnknownMerchant => 400,
            GatewayError::Seal(_) | GatewayError::Internal => 500,
            GatewayError::Timeout => 504,
            GatewayError::Unreachable
            | GatewayError::PlatformTls
            | GatewayError::UpstreamIo
            | GatewayError::ResponseTooLarge { .. }
            | GatewayError::UpstreamHttp(_)
            | GatewayError::PlatformFailure { .. }
            | GatewayError::Form(_)
            | GatewayError::Verify(_) => 502,
        }
    }

    /// The endpoint document's errCode where one fits.
    pub fn err_code(&self) -> &str {
        match self {
            GatewayError::Invalid(i) => i.code,
            GatewayError::NotFound
            | GatewayError::MethodNotAllowed
            | GatewayError::BodyTooLarge { .. }
            | GatewayError::ClientTimeout
            | GatewayError::BadBody(_)
            | GatewayError::ReservedField(..)
            | GatewayError::DuplicateHeader(_)
            | GatewayError::BadHeader(_)
            | GatewayError::QueryNotAllowed
            | GatewayError::Unauthenticated
            | GatewayError::Forbidden
            | GatewayError::BadHttp
            | GatewayError::HeadTooLarge { .. }
            | GatewayError::MerchantRequired => "1002",
            GatewayError::UnknownMerchant => "2001",
            GatewayError::PlatformFailure { code, .. } => code,
            GatewayError::Seal(_)
            | GatewayError::Unreachable
            | GatewayError::PlatformTls
            | GatewayError::Timeout
            | GatewayError::UpstreamIo
            | GatewayError::ResponseTooLarge { .. }
            | GatewayError::UpstreamHttp(_)
            | GatewayError::Verify(_)
            | GatewayError::Form(_)
            | GatewayError::Overloaded
            | GatewayError::DeadlinePassed
            | GatewayError::ShuttingDown
            | GatewayError::CallerGone
            | GatewayError::Internal => "1001",
        }
    }

    /// The answer's `source`: `platform` for the platform's own failure, `gateway` otherwise.
    pub fn source_name(&self) -> &'static str {
        match self {
            GatewayError::PlatformFailure { .. } => "platform",
            GatewayError::NotFound
            | GatewayError::MethodNotAllowed
            | GatewayError::BodyTooLarge { .. }
            | GatewayError::BadBody(_)
            | GatewayError::ClientTimeout
            | GatewayError::Invalid(_)
            | GatewayError::ReservedField(..)
            | GatewayError::DuplicateHeader(_)
            | GatewayError::BadHeader(_)
            | GatewayError::QueryNotAllowed
            | GatewayError::Unauthenticated
            | GatewayError::Forbidden
            | GatewayError::Overloaded
            | GatewayError::DeadlinePassed
            | GatewayError::ShuttingDown
            | GatewayError::CallerGone
            | GatewayError::MerchantRequired
            | GatewayError::UnknownMerchant
            | GatewayError::Seal(_)
            | GatewayError::Unreachable
            | GatewayError::PlatformTls
            | GatewayError::Timeout
            | GatewayError::UpstreamIo
            | GatewayError::ResponseTooLarge { .. }
            | GatewayError::UpstreamHttp(_)
            | GatewayError::Verify(_)
            | GatewayError::Form(_)
            | GatewayError::BadHttp
            | GatewayError::HeadTooLarge { .. }
            | GatewayError::Internal => "gateway",
        }
    }

    /// Exhaustive on purpose: a new variant must say whether the platform may have acted.
    pub fn delivery(&self) -> Delivery {
        match self {
            GatewayError::Timeout | GatewayError::UpstreamIo | GatewayError::Internal => Delivery::Unknown,
            GatewayError::ResponseTooLarge { .. }
            | GatewayError::UpstreamHttp(_)
            | GatewayError::PlatformFailure { .. }
            | GatewayError::Form(_)
            | GatewayError::Verify(_) => Delivery::Sent,
            GatewayError::NotFound
            | GatewayError::MethodNotAllowed
            | GatewayError::BodyTooLarge { .. }
            | GatewayError::BadBody(_)
            | GatewayError::ClientTimeout
            | GatewayError::Invalid(_)
            | GatewayError::ReservedField(..)
            | GatewayError::DuplicateHeader(_)
            | GatewayError::BadHeader(_)
            | GatewayError::QueryNotAllowed
            | GatewayError::Unauthenticated
            | GatewayError::Forbidden
            | GatewayError::Overloaded
            | GatewayError::DeadlinePassed
            | GatewayError::ShuttingDown
            | GatewayError::CallerGone
            | GatewayError::MerchantRequired
            | GatewayError::UnknownMerchant
            | GatewayError::Seal(_)
            | GatewayError::Unreachable
            | GatewayError::BadHttp
            | GatewayError::HeadTooLarge { .. }
            | GatewayError::PlatformTls => Delivery::NotSent,
        }
    }

    /// The label of `paysign_requests_total{outcome}` and the access log's `outcome`.
    pub fn outcome(&self) -> &'static str {
        self.request_outcome().as_str()
    }

    /// How a request that failed with this error ended (a closed set).
    pub fn request_outcome(&self) -> RequestOutcome {
        match self {
            GatewayError::NotFound => RequestOutcome::NotFound,
            GatewayError::MethodNotAllowed => RequestOutcome::MethodNotAllowed,
            GatewayError::BodyTooLarge { .. } => RequestOutcome::BodyTooLarge,
            GatewayError::ClientTimeout => RequestOutcome::ClientTimeout,
            GatewayError::BadBody(_) | GatewayError::ReservedField(..) | GatewayError::DuplicateHeader(_) | GatewayError::BadHeader(_) => {
                RequestOutcome::BadRequest
            }
            GatewayError::QueryNotAllowed => RequestOutcome::QueryRefused,
            GatewayError::Unauthenticated => RequestOutcome::Unauthenticated,
            GatewayError::Forbidden => RequestOutcome::Forbidden,
            GatewayError::Overloaded => RequestOutcome::Shed,
            GatewayError::DeadlinePassed => RequestOutcome::Deadline,
            GatewayError::ShuttingDown => RequestOutcome::ShuttingDown,
            GatewayError::CallerGone => RequestOutcome::Abandoned,
            GatewayError::Invalid(_) => RequestOutcome::Invalid,
            GatewayError::MerchantRequired | GatewayError::UnknownMerchant => RequestOutcome::UnknownMerchant,
            GatewayError::Seal(_) => RequestOutcome::SealFailed,
            GatewayError::Unreachable => RequestOutcome::Unreachable,
            GatewayError::PlatformTls => RequestOutcome::TlsFailed,
            GatewayError::Timeout => RequestOutcome::Timeout,
            GatewayError::UpstreamIo => RequestOutcome::UpstreamIo,
            GatewayError::ResponseTooLarge { .. } => RequestOutcome::ResponseTooLarge,
            GatewayError::UpstreamHttp(_) => RequestOutcome::UpstreamHttp,
            GatewayError::PlatformFailure { .. } => RequestOutcome::PlatformFailure,
            GatewayError::Verify(_) => RequestOutcome::VerifyFailed,
            GatewayError::Form(_) => RequestOutcome::FormFailed,
            GatewayError::BadHttp => RequestOutcome::BadHttp,
            GatewayError::HeadTooLarge { .. } => RequestOutcome::HeadTooLarge,
            GatewayError::Internal => RequestOutcome::Internal,
        }
    }

    /// The JSON body sent to the internal service.
    pub fn body(&self) -> Vec<u8> {
        let mut m = Map::with_capacity(3);
        m.insert("errCode".into(), Value::String(self.err_code().to_string()));
        m.insert("errMessage".into(), Value::String(self.to_string()));
        m.insert("source".into(), Value::String(self.source_name().into()));
        Value::Object(m).to_string().into_bytes()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::protocol::crypto::CryptoError;

    /// One of every variant with its whole answer: (error, status, errCode, source, delivery,
    /// outcome). A new variant does not compile in the mappings above until it says each of
    /// these; this table pins what each one says.
    #[test]
    fn every_variant_maps_to_its_answer() {
        use Delivery::*;
        let invalid = Invalid { code: "1003", field: "mobile".into(), message: "mobile is invalid".into() };
        let pf = || GatewayError::PlatformFailure { code: "9001".into(), msg: "busy".into() };
        let table: Vec<(GatewayError, u16, &str, &str, Delivery, &str)> = vec![
            (GatewayError::NotFound, 404, "1002", "gateway", NotSent, "not_found"),
            (GatewayError::MethodNotAllowed, 405, "1002", "gateway", NotSent, "method_not_allowed"),
            (GatewayError::BodyTooLarge { limit: 1 }, 413, "1002", "gateway", NotSent, "body_too_large"),
            (GatewayError::BadBody("is not JSON"), 400, "1002", "gateway", NotSent, "bad_request"),
            (GatewayError::ClientTimeout, 408, "1002", "gateway", NotSent, "client_timeout"),
            (GatewayError::Invalid(invalid), 400, "1003", "gateway", NotSent, "invalid"),
            (GatewayError::ReservedField("sign", "x"), 400, "1002", "gateway", NotSent, "bad_request"),
            (GatewayError::DuplicateHeader("x"), 400, "1002", "gateway", NotSent, "bad_request"),
            (GatewayError::BadHeader("x"), 400, "1002", "gateway", NotSent, "bad_request"),
            (GatewayError::QueryNotAllowed, 400, "1002", "gateway", NotSent, "query_refused"),
            (GatewayError::Unauthenticated, 401, "1002", "gateway", NotSent, "unauthenticated"),
            (GatewayError::Forbidden, 403, "1002", "gateway", NotSent, "forbidden"),
            (GatewayError::Overloaded, 503, "1001", "gateway", NotSent, "shed"),
            (GatewayError::CallerGone, 499, "1001", "gateway", NotSent, "abandoned"),
            (GatewayError::DeadlinePassed, 503, "1001", "gateway", NotSent, "deadline"),
            (GatewayError::ShuttingDown, 503, "1001", "gateway", NotSent, "shutting_down"),
            (GatewayError::MerchantRequired, 400, "1002", "gateway", NotSent, "unknown_merchant"),
            (GatewayError::UnknownMerchant, 400, "2001", "gateway", NotSent, "unknown_merchant"),
            (GatewayError::Seal(SealError(CryptoError::Encrypt)), 500, "1001", "gateway", NotSent, "seal_failed"),
            (GatewayError::Unreachable, 502, "1001", "gateway", NotSent, "unreachable"),
            (GatewayError::PlatformTls, 502, "1001", "gateway", NotSent, "tls_failed"),
            (GatewayError::Timeout, 504, "1001", "gateway", Unknown, "timeout"),
            (GatewayError::UpstreamIo, 502, "1001", "gateway", Unknown, "upstream_io"),
            (GatewayError::ResponseTooLarge { limit: 1 }, 502, "1001", "gateway", Sent, "response_too_large"),
            (GatewayError::UpstreamHttp(503), 502, "1001", "gateway", Sent, "upstream_http"),
            (pf(), 502, "9001", "platform", Sent, "platform_failure"),
            (GatewayError::Verify(OpenError::Signature), 502, "1001", "gateway", Sent, "verify_failed"),
            (GatewayError::Form(crate::h5::FormError::NoUrl), 502, "1001", "gateway", Sent, "form_failed"),
            (GatewayError::BadHttp, 400, "1002", "gateway", NotSent, "bad_http"),
            (GatewayError::HeadTooLarge { limit: 8192 }, 431, "1002", "gateway", NotSent, "head_too_large"),
            (GatewayError::Internal, 500, "1001", "gateway", Unknown, "internal"),
        ];
        assert_eq!(table.len(), 31, "one row per variant");
        for (e, status, code, source, delivery, outcome) in &table {
            assert_eq!(
                (e.status(), e.err_code(), e.source_name(), e.delivery(), e.outcome()),
                (*status, *code, *source, *delivery, *outcome),
                "{e:?}"
            );
            assert!(crate::metrics::REQUEST_OUTCOMES.contains(outcome), "{outcome} is not in metrics::REQUEST_OUTCOMES");
            let body: Value = serde_json::from_slice(&e.body()).unwrap();
            assert_eq!(body["errCode"], *code);
            assert_eq!(body["source"], *source);
            assert_eq!(body["errMessage"], e.to_string());
        }
    }
}
