//! Prometheus metrics, defined once and registered into the registry the embedder passes
//! ([`register`]; the `paysign` binary passes the default one). Label values come
//! from small fixed sets: endpoint names from the schema tables (or `other`), configured
//! customer numbers (or `unknown`), outcome and reason enums, documented errCodes (or `other`).

use std::time::Duration;

use once_cell::sync::Lazy;
use prometheus::core::Collector;
use prometheus::{HistogramOpts, HistogramVec, IntCounter, IntCounterVec, IntGauge, IntGaugeVec, Opts, Registry, TextEncoder};

/// Latency buckets from 0.5 ms to 30 s: crypto-only requests sit at the low end, platform
/// round trips and timeouts at the high end.
const LATENCY_BUCKETS: &[f64] = &[0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0];
/// Crypto operations: tens of microseconds (MD5, public ops) to tens of ms (private ops).
const CRYPTO_BUCKETS: &[f64] = &[0.00001, 0.000025, 0.00005, 0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05];

/// The errCodes of the endpoint document; anything else is counted as `other`.
pub const KNOWN_ERRCODES: &[&str] = &["0000", "1001", "1002", "1003", "2001", "2002", "2104", "2106", "9999"];

// The closed label sets: every value a label can take besides configured names (merchants,
// routes, callers, endpoint names). Each family gets zero-valued series for them at start-up
// and on reload ([`configured`]), so dashboards and alerts see 0, not "No data"; the unit tests
// (and `tests/observability.rs` against docs/observability.md) keep these lists and the code
// that emits the values in step.

/// `paysign_requests_total{outcome}`: `verified`, `client_gone` (the answer could not be
/// written), `bad_http` (pingora's parser refused the head), `head_too_large` (a head over
/// `max_header_bytes`), and every `GatewayError::outcome`.
pub const REQUEST_OUTCOMES: &[&str] = &[
    "verified",
    "client_gone",
    "bad_http",
    "head_too_large",
    "not_found",
    "method_not_allowed",
    "body_too_large",
    "client_timeout",
    "bad_request",
    "query_refused",
    "unauthenticated",
    "forbidden",
    "shed",
    "deadline",
    "shutting_down",
    "abandoned",
    "invalid",
    "unknown_merchant",
    "seal_failed",
    "unreachable",
    "tls_failed",
    "timeout",
    "upstream_io",
    "response_too_large",
    "upstream_http",
    "platform_failure",
    "verify_failed",
    "form_failed",
    "internal",
];
/// `endpoint` besides the endpoint table's names: `other` (a forwardable path without a
/// table), `none` (not a forwardable path, or a head that never reached paysign).
pub const ENDPOINT_FALLBACKS: &[&str] = &["other", "none"];
/// `merchant` besides the configured customer numbers.
pub const MERCHANT_FALLBACKS: &[&str] = &["unknown", "none"];
/// `paysign_verification_failures_total{reason}` (`OpenError::reason`).
pub const VERIFY_REASONS: &[&str] =
    &["envelope", "customer_mismatch", "encoding", "padding", "plaintext", "not_utf8", "signature", "not_notification"];
/// `paysign_notifications_total{outcome}` (the outcomes of `notify.rs`).
pub const NOTIFICATION_OUTCOMES: &[&str] = &[
    "forwarded",
    "source_refused",
    "not_found",
    "method_not_allowed",
    "too_large",
    "body_timeout",
    "malformed",
    "wrong_merchant",
    "unknown_merchant",
    "too_many_blocks",
    "shed",
    "internal",
    "forged",
    "not_utf8",
    "not_notification",
    "target_failed",
    "target_unreachable",
];
/// `route` besides the configured paths: `none` (no route matched).
pub const ROUTE_FALLBACKS: &[&str] = &["none"];
/// `paysign_caller_refusals_total{reason}`: the proxy's (`missing`, `malformed`,
/// `unknown_token`, `forbidden`) and the admin listener's (`unauthenticated`, `not_loopback`).
pub const CALLER_REFUSAL_REASONS: &[&str] = &["missing", "malformed", "unknown_token", "forbidden", "unauthenticated", "not_loopback"];
/// `caller` besides the configured callers' names.
pub const CALLER_FALLBACKS: &[&str] = &["anonymous", "admin"];
/// `listener` of the connection metrics.
pub const LISTENERS: &[&str] = &["proxy", "notify", "admin"];
/// `paysign_private_key_jobs_total{outcome}`: done, or skipped (its caller had gone).
pub const PRIVATE_KEY_JOB_OUTCOMES: &[&str] = &["executed", "skipped"];
/// `paysign_config_reloads_total{result}`.
pub const RELOAD_RESULTS: &[&str] = &["ok", "failed"];
/// `paysign_platform_key_verified_total{key}`.
pub const PLATFORM_KEYS: &[&str] = &["current", "next"];
/// `paysign_merchants_configured{profile}`.
pub const PROFILES: &[&str] = &["md5", "rsa"];

// The definitions below can fail only on a malformed name or label, fixed at compile time;
// the unit test `metrics_register` builds and registers every one of them.
macro_rules! lazy_metric {
    ($name:ident: $ty:ty = $e:expr) => {
        pub static $name: Lazy<$ty> = Lazy::new(|| $e.expect("metric definition")); // ok: static definition
    };
}

macro_rules! counter_vec {
    ($name:expr, $help:expr, $labels:expr) => {
        IntCounterVec::new(Opts::new($name, $help), $labels)
    };
}
macro_rules! gauge_vec {
    ($name:expr, $help:expr, $labels:expr) => {
        IntGaugeVec::new(Opts::new($name, $help), $labels)
    };
}
macro_rules! counter {
    ($name:expr, $help:expr) => {
        IntCounter::new($name, $help)
    };
}
macro_rules! gauge {
    ($name:expr, $help:expr) => {
        IntGauge::new($name, $help)
    };
}
macro_rules! histogram_vec {
    ($name:expr, $help:expr, $labels:expr, $buckets:expr) => {
        HistogramVec::new(HistogramOpts::new($name, $help).buckets($buckets), $labels)
    };
}

lazy_metric!(REQUESTS: IntCounterVec = counter_vec!(
    "paysign_requests_total",
    "Requests from internal services, by endpoint, merchant and outcome.",
    &["endpoint", "merchant", "outcome"]
));
lazy_metric!(REQUEST_DURATION: HistogramVec = histogram_vec!(
    "paysign_request_duration_seconds",
    "End-to-end time from request received to response written, by endpoint.",
    &["endpoint"],
    LATENCY_BUCKETS.to_vec()
));
lazy_metric!(UPSTREAM_DURATION: HistogramVec = histogram_vec!(
    "paysign_upstream_duration_seconds",
    "Time from connecting to the platform to its full response, by endpoint.",
    &["endpoint"],
    LATENCY_BUCKETS.to_vec()
));
lazy_metric!(CRYPTO_DURATION: HistogramVec = histogram_vec!(
    "paysign_crypto_duration_seconds",
    "Duration of crypto operations, by operation.",
    &["op"],
    CRYPTO_BUCKETS.to_vec()
));
lazy_metric!(VERIFY_FAILURES: IntCounterVec = counter_vec!(
    "paysign_verification_failures_total",
    "Platform responses that could not be opened or verified, by reason.",
    &["reason"]
));
lazy_metric!(PLATFORM_ERRCODES: IntCounterVec = counter_vec!(
    "paysign_platform_errcode_total",
    "errCode of verified platform answers, by endpoint.",
    &["endpoint", "errcode"]
));
lazy_metric!(PLATFORM_FAILURES: IntCounterVec = counter_vec!(
    "paysign_platform_failures_total",
    "Platform-level failure envelopes (code != 200 or success false), by endpoint.",
    &["endpoint"]
));
lazy_metric!(CONNECT_RETRIES: IntCounterVec = counter_vec!(
    "paysign_upstream_connect_retries_total",
    "Connection attempts to the platform retried (nothing had been sent).",
    &["endpoint"]
));
lazy_metric!(NOTIFICATIONS: IntCounterVec = counter_vec!(
    "paysign_notifications_total",
    "Platform notifications, by configured route and outcome.",
    &["route", "outcome"]
));
lazy_metric!(NOTIFY_FORWARD_DURATION: HistogramVec = histogram_vec!(
    "paysign_notification_forward_duration_seconds",
    "Time for the internal target to take a verified notification, by route.",
    &["route"],
    LATENCY_BUCKETS.to_vec()
));
lazy_metric!(CONFIG_RELOADS: IntCounterVec = counter_vec!(
    "paysign_config_reloads_total",
    "Configuration reloads (SIGHUP or POST /-/reload), by result.",
    &["result"]
));
lazy_metric!(CONFIG_GENERATION: IntGauge = gauge!(
    "paysign_config_generation",
    "How many configurations this process has loaded (1 at start-up)."
));
lazy_metric!(IN_FLIGHT: IntGauge = gauge!(
    "paysign_requests_in_flight",
    "Requests being handled right now."
));
lazy_metric!(PRIVATE_KEY_QUEUE: IntGauge = gauge!(
    "paysign_private_key_ops_admitted",
    "Private-key operations running or waiting for a worker."
));
lazy_metric!(PRIVATE_KEY_RUNNING_MAX: IntGauge = gauge!(
    "paysign_private_key_ops_running_max",
    "The most private-key operations ever seen running at once (never above private_key_workers)."
));
lazy_metric!(PRIVATE_KEY_SHED: IntCounter = counter!(
    "paysign_private_key_ops_shed_total",
    "Private-key operations refused at once because workers and queue were full (nothing was sent)."
));
lazy_metric!(PRIVATE_KEY_JOBS: IntCounterVec = counter_vec!(
    "paysign_private_key_jobs_total",
    "Private-key operations that reached a worker, by outcome: `executed`, or `skipped` because their caller had gone before the work started.",
    &["outcome"]
));
lazy_metric!(PKCS11_SESSIONS: IntGauge = gauge!(
    "paysign_pkcs11_sessions",
    "PKCS#11 sessions paysign holds open (pooled or in use); at most one per concurrent private-key operation and key."
));
lazy_metric!(CALLER_REFUSED: IntCounterVec = counter_vec!(
    "paysign_caller_refusals_total",
    "Requests refused by caller authentication or authorisation, by caller (or `anonymous`) and reason.",
    &["caller", "reason"]
));
lazy_metric!(CONNECTIONS_OPEN: IntGaugeVec = gauge_vec!(
    "paysign_connections_open",
    "Open client connections, by listener (proxy, notify, admin).",
    &["listener"]
));
lazy_metric!(CONNECTIONS_REFUSED: IntCounterVec = counter_vec!(
    "paysign_connections_refused_total",
    "Connections closed at once because the listener had max_connections open.",
    &["listener"]
));
lazy_metric!(HEADER_TIMEOUTS: IntCounterVec = counter_vec!(
    "paysign_header_timeouts_total",
    "Connections closed because a request head (or the next one, when idle) did not arrive within header_timeout_ms.",
    &["listener"]
));
lazy_metric!(BAD_HTTP: IntCounterVec = counter_vec!(
    "paysign_bad_http_total",
    "Request heads refused before any app saw them, by listener: the HTTP parser's refusals (400) and heads over max_header_bytes (431).",
    &["listener"]
));
lazy_metric!(PLATFORM_KEY_VERIFIED: IntCounterVec = counter_vec!(
    "paysign_platform_key_verified_total",
    "Answers and notifications verified, by merchant and by which platform key verified them (current or next, during a rollover).",
    &["merchant", "key"]
));
lazy_metric!(UPSTREAM_CONNECTIONS_OPENED: IntCounter = counter!(
    "paysign_upstream_connections_opened_total",
    "Connections opened to the platform (each a TCP and, over https, a TLS handshake); the rest reuse pooled ones."
));
lazy_metric!(LOG_LINES_DROPPED: IntCounter = counter!(
    "paysign_log_lines_dropped_total",
    "Log lines dropped because stderr was not read fast enough (more than 1 MiB waiting); requests are never held up by logging."
));
lazy_metric!(BUILD_INFO: IntGaugeVec = gauge_vec!(
    "paysign_build_info",
    "Always 1; labels tell the build.",
    &["version", "crypto_backend"]
));
lazy_metric!(MERCHANTS: IntGaugeVec = gauge_vec!(
    "paysign_merchants_configured",
    "Merchants loaded from the configuration, by profile.",
    &["profile"]
));

/// Every paysign metric, for registering into a registry.
fn collectors() -> Vec<Box<dyn Collector>> {
    vec![
        Box::new(REQUESTS.clone()),
        Box::new(REQUEST_DURATION.clone()),
        Box::new(UPSTREAM_DURATION.clone()),
        Box::new(CRYPTO_DURATION.clone()),
        Box::new(VERIFY_FAILURES.clone()),
        Box::new(PLATFORM_ERRCODES.clone()),
        Box::new(PLATFORM_FAILURES.clone()),
        Box::new(CONNECT_RETRIES.clone()),
        Box::new(NOTIFICATIONS.clone()),
        Box::new(NOTIFY_FORWARD_DURATION.clone()),
        Box::new(CONFIG_RELOADS.clone()),
        Box::new(CONFIG_GENERATION.clone()),
        Box::new(IN_FLIGHT.clone()),
        Box::new(PRIVATE_KEY_QUEUE.clone()),
        Box::new(PRIVATE_KEY_RUNNING_MAX.clone()),
        Box::new(PRIVATE_KEY_SHED.clone()),
        Box::new(PRIVATE_KEY_JOBS.clone()),
        Box::new(PKCS11_SESSIONS.clone()),
        Box::new(CALLER_REFUSED.clone()),
        Box::new(CONNECTIONS_OPEN.clone()),
        Box::new(CONNECTIONS_REFUSED.clone()),
        Box::new(HEADER_TIMEOUTS.clone()),
        Box::new(BAD_HTTP.clone()),
        Box::new(PLATFORM_KEY_VERIFIED.clone()),
        Box::new(UPSTREAM_CONNECTIONS_OPENED.clone()),
        Box::new(LOG_LINES_DROPPED.clone()),
        Box::new(BUILD_INFO.clone()),
        Box::new(MERCHANTS.clone()),
    ]
}

/// The name of every paysign metric family.
pub fn family_names() -> Vec<String> {
    families().into_iter().map(|(name, _)| name).collect()
}

/// Every paysign metric family with its label names.
pub fn families() -> Vec<(String, Vec<String>)> {
    collectors().iter().flat_map(|c| c.desc().into_iter().map(|d| (d.fq_name.clone(), d.variable_labels.clone()))).collect()
}

/// Registers every paysign metric into `registry` (the embedder's, or
/// `prometheus::default_registry()`), so that a scrape shows them all from the start. Metrics
/// count whether or not they are registered; registering twice into one registry is an error.
pub fn register(registry: &Registry) -> prometheus::Result<()> {
    for c in collectors() {
        registry.register(c)?;
    }
    Ok(())
}

/// Sets `paysign_build_info` (version and crypto backend).
pub fn init(crypto_backend: &str) {
    BUILD_INFO.with_label_values(&[env!("CARGO_PKG_VERSION"), crypto_backend]).set(1);
}

/// `paysign_merchants_configured` for a (re)loaded configuration.
pub fn set_merchants<'a>(merchants: impl Iterator<Item = &'a crate::protocol::Merchant>) {
    MERCHANTS.reset();
    for p in PROFILES {
        MERCHANTS.with_label_values(&[p]).set(0);
    }
    for m in merchants {
        MERCHANTS.with_label_values(&[m.profile().as_str()]).inc();
    }
}

/// What a configuration names, for the zero-valued series of [`configured`].
pub struct Known<'a> {
    /// The endpoint table's names (`bindcard_create`, …).
    pub endpoints: Vec<&'a str>,
    /// Configured customer numbers.
    pub merchants: Vec<&'a str>,
    /// Configured notification route paths (empty without a `notify` section).
    pub routes: Vec<&'a str>,
    /// Configured caller names.
    pub callers: Vec<&'a str>,
    /// Whether the notification listener is configured.
    pub notify: bool,
}

/// Creates every series a configuration makes possible, at 0 where it is new (a series that
/// already counted keeps its value): every family is present on a fresh process, and a rate or
/// an `increase()` starts from 0 instead of from the first event. Bounded: endpoints ×
/// configured merchants × outcomes for the requests, routes × outcomes for notifications.
pub fn configured(k: &Known<'_>) {
    let endpoints: Vec<&str> = k.endpoints.iter().copied().chain(ENDPOINT_FALLBACKS.iter().copied()).collect();
    for ep in &endpoints {
        let _ = REQUEST_DURATION.with_label_values(&[ep]);
        let _ = UPSTREAM_DURATION.with_label_values(&[ep]);
        let _ = PLATFORM_FAILURES.with_label_values(&[ep]);
        let _ = CONNECT_RETRIES.with_label_values(&[ep]);
        for code in KNOWN_ERRCODES.iter().chain(&["other"]) {
            let _ = PLATFORM_ERRCODES.with_label_values(&[ep, code]);
        }
    }
    // A forwardable path with an endpoint table (or `other`) and a configured merchant can end
    // in any outcome; `none` and `unknown` only in the few that refuse before a merchant is known.
    for ep in k.endpoints.iter().copied().chain(["other"]) {
        for m in &k.merchants {
            for o in REQUEST_OUTCOMES {
                let _ = REQUESTS.with_label_values(&[ep, m, o]);
            }
        }
        for o in ["unknown_merchant", "unauthenticated", "method_not_allowed", "bad_request"] {
            let _ = REQUESTS.with_label_values(&[ep, "unknown", o]);
            let _ = REQUESTS.with_label_values(&[ep, "none", o]);
        }
    }
    // The listener's own refusals (before any app saw the head) are counted as none/none too.
    for o in ["not_found", "bad_http", "head_too_large", "shed", "bad_request"] {
        let _ = REQUESTS.with_label_values(&["none", "none", o]);
    }
    for r in VERIFY_REASONS {
        let _ = VERIFY_FAILURES.with_label_values(&[r]);
    }
    for o in PRIVATE_KEY_JOB_OUTCOMES {
        let _ = PRIVATE_KEY_JOBS.with_label_values(&[o]);
    }
    for m in &k.merchants {
        for key in PLATFORM_KEYS {
            let _ = PLATFORM_KEY_VERIFIED.with_label_values(&[m, key]);
        }
    }
    if k.notify {
        for route in k.routes.iter().chain(ROUTE_FALLBACKS) {
            let _ = NOTIFY_FORWARD_DURATION.with_label_values(&[route]);
            for o in NOTIFICATION_OUTCOMES {
                let _ = NOTIFICATIONS.with_label_values(&[route, o]);
            }
        }
    }
    for r in RELOAD_RESULTS {
        let _ = CONFIG_RELOADS.with_label_values(&[r]);
    }
    for r in ["missing", "malformed", "unknown_token"] {
        let _ = CALLER_REFUSED.with_label_values(&["anonymous", r]);
    }
    for c in &k.callers {
        let _ = CALLER_REFUSED.with_label_values(&[c, "forbidden"]);
    }
    for r in ["unauthenticated", "not_loopback"] {
        let _ = CALLER_REFUSED.with_label_values(&["admin", r]);
    }
    for l in LISTENERS.iter().filter(|l| k.notify || **l != "notify") {
        let _ = CONNECTIONS_OPEN.with_label_values(&[l]);
        let _ = CONNECTIONS_REFUSED.with_label_values(&[l]);
        let _ = HEADER_TIMEOUTS.with_label_values(&[l]);
        let _ = BAD_HTTP.with_label_values(&[l]);
    }
    for p in PROFILES {
        let _ = MERCHANTS.with_label_values(&[p]);
    }
    Lazy::force(&CRYPTO_HANDLES);
}

/// The protocol's operations, each with its histogram resolved once (no label lookup per call).
pub const CRYPTO_OPS: [&str; 8] = ["canonicalize", "md5_sign", "md5_verify", "rsa_sign", "rsa_verify", "encrypt", "decrypt", "open_type1"];
static CRYPTO_HANDLES: Lazy<Vec<prometheus::Histogram>> =
    Lazy::new(|| CRYPTO_OPS.iter().map(|op| CRYPTO_DURATION.with_label_values(&[op])).collect());

pub fn observe_crypto(op: &'static str, d: Duration) {
    match CRYPTO_OPS.iter().position(|o| *o == op) {
        Some(i) => CRYPTO_HANDLES[i].observe(d.as_secs_f64()),
        None => CRYPTO_DURATION.with_label_values(&[op]).observe(d.as_secs_f64()),
    }
}

/// The protocol's timings of each sealing and opening step, recorded as
/// `paysign_crypto_duration_seconds{op}`.
pub struct CryptoTimings;

impl crate::protocol::Observer for CryptoTimings {
    fn crypto(&self, op: &'static str, elapsed: Duration) {
        observe_crypto(op, elapsed);
    }

    fn platform_key(&self, customer_no: &str, key: crate::protocol::PlatformKey) {
        PLATFORM_KEY_VERIFIED.with_label_values(&[customer_no, key.as_str()]).inc();
    }
}

/// Maps a platform errCode onto the fixed label set.
pub fn errcode_label(code: &str) -> &str {
    KNOWN_ERRCODES.iter().find(|k| **k == code).copied().unwrap_or("other")
}

/// `registry` in the Prometheus text format.
pub fn render(registry: &Registry) -> String {
    TextEncoder::new().encode_to_string(&registry.gather()).unwrap_or_else(|e| format!("# encoding error: {e}\n"))
}

#[cfg(test)]
mod tests {
    #[test]
    fn metrics_register() {
        let registry = prometheus::Registry::new();
        super::register(&registry).unwrap();
        super::init("rsa");
        let text = super::render(&registry);
        assert!(text.contains("paysign_build_info{"));
        // Every definition is valid, named paysign_*, and named once.
        let names: std::collections::HashSet<String> =
            super::collectors().iter().flat_map(|c| c.desc().into_iter().map(|d| d.fq_name.clone())).collect();
        assert_eq!(names.len(), super::collectors().len());
        assert!(names.iter().all(|n| n.starts_with("paysign_")));
        assert!(super::register(&registry).is_err(), "registering twice is refused");
        assert_eq!(super::errcode_label("2104"), "2104");
        assert_eq!(super::errcode_label("12345"), "other");
    }

    /// Every verification reason the protocol can give is in the closed set (the match
    /// stops compiling when a variant is added, and with it this list must grow).
    #[test]
    fn every_verification_reason_is_known() {
        use crate::protocol::crypto::CryptoError;
        use crate::protocol::OpenError;
        let all = [
            OpenError::Envelope("not JSON"),
            OpenError::CustomerMismatch,
            OpenError::Ciphertext(CryptoError::Encoding),
            OpenError::Ciphertext(CryptoError::Padding),
            OpenError::Plaintext,
            OpenError::NotUtf8,
            OpenError::Signature,
            OpenError::NotANotification,
        ];
        for e in &all {
            match e {
                OpenError::Envelope(_)
                | OpenError::CustomerMismatch
                | OpenError::Ciphertext(_)
                | OpenError::Plaintext
                | OpenError::NotUtf8
                | OpenError::Signature
                | OpenError::NotANotification => assert!(super::VERIFY_REASONS.contains(&e.reason()), "{}", e.reason()),
            }
        }
        let given: std::collections::BTreeSet<&str> = all.iter().map(|e| e.reason()).collect();
        let listed: std::collections::BTreeSet<&str> = super::VERIFY_REASONS.iter().copied().collect();
        assert_eq!(given, listed);
    }

    /// The notification outcomes `notify.rs` can give are exactly the closed set.
    #[test]
    fn every_notification_outcome_is_known() {
        let given: std::collections::BTreeSet<&str> = crate::notify::NotificationOutcome::ALL.iter().map(|o| o.as_str()).collect();
        let listed: std::collections::BTreeSet<&str> = super::NOTIFICATION_OUTCOMES.iter().copied().collect();
        assert_eq!(given, listed);
    }

    /// A fresh registry shows every family, with zero-valued series for what a configuration
    /// names.
    #[test]
    fn a_configuration_gives_every_family_its_zero_series() {
        let registry = prometheus::Registry::new();
        super::register(&registry).unwrap();
        super::init("rsa");
        super::configured(&super::Known {
            endpoints: vec!["bindcard_create"],
            merchants: vec!["100"],
            routes: vec!["/n"],
            callers: vec!["ops"],
            notify: true,
        });
        let text = super::render(&registry);
        for name in super::family_names() {
            assert!(text.contains(&format!("# TYPE {name} ")), "{name} missing");
        }
        for series in [
            r#"paysign_requests_total{endpoint="bindcard_create",merchant="100",outcome="platform_failure"} 0"#,
            r#"paysign_notifications_total{outcome="forged",route="/n"} 0"#,
            r#"paysign_caller_refusals_total{caller="ops",reason="forbidden"} 0"#,
            r#"paysign_verification_failures_total{reason="signature"} 0"#,
        ] {
            assert!(text.contains(series), "{series} missing");
        }
    }
}
