//! Prometheus metrics, defined and registered once in the default registry. Label values come
//! from small fixed sets: endpoint names from the schema tables (or `other`), configured
//! customer numbers (or `unknown`), outcome and reason enums, documented errCodes (or `other`).

use std::time::Duration;

use once_cell::sync::Lazy;
use prometheus::{
    register_histogram_vec, register_int_counter, register_int_counter_vec, register_int_gauge, register_int_gauge_vec, HistogramVec,
    IntCounter, IntCounterVec, IntGauge, IntGaugeVec, TextEncoder,
};

/// Latency buckets from 0.5 ms to 30 s: crypto-only requests sit at the low end, platform
/// round trips and timeouts at the high end.
const LATENCY_BUCKETS: &[f64] = &[0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0];
/// Crypto operations: tens of microseconds (MD5, public ops) to tens of ms (private ops).
const CRYPTO_BUCKETS: &[f64] = &[0.00001, 0.000025, 0.00005, 0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05];

/// The errCodes of the endpoint document; anything else is counted as `other`.
const KNOWN_ERRCODES: &[&str] = &["0000", "1001", "1002", "1003", "2001", "2002", "2104", "2106", "9999"];

// The registrations below can fail only on a duplicate name or a malformed definition, both
// fixed at compile time; the unit test `metrics_register` exercises every one of them.
macro_rules! lazy_metric {
    ($name:ident: $ty:ty = $e:expr) => {
        pub static $name: Lazy<$ty> = Lazy::new(|| $e.expect("metric definition")); // ok: static definition
    };
}

lazy_metric!(REQUESTS: IntCounterVec = register_int_counter_vec!(
    "paysign_requests_total",
    "Requests from internal services, by endpoint, merchant and outcome.",
    &["endpoint", "merchant", "outcome"]
));
lazy_metric!(REQUEST_DURATION: HistogramVec = register_histogram_vec!(
    "paysign_request_duration_seconds",
    "End-to-end time from request received to response written, by endpoint.",
    &["endpoint"],
    LATENCY_BUCKETS.to_vec()
));
lazy_metric!(UPSTREAM_DURATION: HistogramVec = register_histogram_vec!(
    "paysign_upstream_duration_seconds",
    "Time from connecting to the platform to its full response, by endpoint.",
    &["endpoint"],
    LATENCY_BUCKETS.to_vec()
));
lazy_metric!(CRYPTO_DURATION: HistogramVec = register_histogram_vec!(
    "paysign_crypto_duration_seconds",
    "Duration of crypto operations, by operation.",
    &["op"],
    CRYPTO_BUCKETS.to_vec()
));
lazy_metric!(VERIFY_FAILURES: IntCounterVec = register_int_counter_vec!(
    "paysign_verification_failures_total",
    "Platform responses that could not be opened or verified, by reason.",
    &["reason"]
));
lazy_metric!(PLATFORM_ERRCODES: IntCounterVec = register_int_counter_vec!(
    "paysign_platform_errcode_total",
    "errCode of verified platform answers, by endpoint.",
    &["endpoint", "errcode"]
));
lazy_metric!(PLATFORM_FAILURES: IntCounterVec = register_int_counter_vec!(
    "paysign_platform_failures_total",
    "Platform-level failure envelopes (code != 200 or success false), by endpoint.",
    &["endpoint"]
));
lazy_metric!(CONNECT_RETRIES: IntCounterVec = register_int_counter_vec!(
    "paysign_upstream_connect_retries_total",
    "Connection attempts to the platform retried (nothing had been sent).",
    &["endpoint"]
));
lazy_metric!(NOTIFICATIONS: IntCounterVec = register_int_counter_vec!(
    "paysign_notifications_total",
    "Platform notifications, by configured route and outcome.",
    &["route", "outcome"]
));
lazy_metric!(NOTIFY_FORWARD_DURATION: HistogramVec = register_histogram_vec!(
    "paysign_notification_forward_duration_seconds",
    "Time for the internal target to take a verified notification, by route.",
    &["route"],
    LATENCY_BUCKETS.to_vec()
));
lazy_metric!(CONFIG_RELOADS: IntCounterVec = register_int_counter_vec!(
    "paysign_config_reloads_total",
    "Configuration reloads (SIGHUP or POST /-/reload), by result.",
    &["result"]
));
lazy_metric!(CONFIG_GENERATION: IntGauge = register_int_gauge!(
    "paysign_config_generation",
    "How many configurations this process has loaded (1 at start-up)."
));
lazy_metric!(IN_FLIGHT: IntGauge = register_int_gauge!(
    "paysign_requests_in_flight",
    "Requests being handled right now."
));
lazy_metric!(PRIVATE_KEY_QUEUE: IntGauge = register_int_gauge!(
    "paysign_private_key_ops_admitted",
    "Private-key operations running or waiting for a worker."
));
lazy_metric!(PRIVATE_KEY_RUNNING_MAX: IntGauge = register_int_gauge!(
    "paysign_private_key_ops_running_max",
    "The most private-key operations ever seen running at once (never above private_key_workers)."
));
lazy_metric!(PRIVATE_KEY_SHED: IntCounter = register_int_counter!(
    "paysign_private_key_ops_shed_total",
    "Private-key operations refused at once because workers and queue were full (nothing was sent)."
));
lazy_metric!(CALLER_REFUSED: IntCounterVec = register_int_counter_vec!(
    "paysign_caller_refusals_total",
    "Requests refused by caller authentication or authorisation, by caller (or `anonymous`) and reason.",
    &["caller", "reason"]
));
lazy_metric!(CONNECTIONS_OPEN: IntGaugeVec = register_int_gauge_vec!(
    "paysign_connections_open",
    "Open client connections, by listener (proxy, notify, admin).",
    &["listener"]
));
lazy_metric!(CONNECTIONS_REFUSED: IntCounterVec = register_int_counter_vec!(
    "paysign_connections_refused_total",
    "Connections closed at once because the listener had max_connections open.",
    &["listener"]
));
lazy_metric!(HEADER_TIMEOUTS: IntCounterVec = register_int_counter_vec!(
    "paysign_header_timeouts_total",
    "Connections closed because a request head (or the next one, when idle) did not arrive within header_timeout_ms.",
    &["listener"]
));
lazy_metric!(BAD_HTTP: IntCounterVec = register_int_counter_vec!(
    "paysign_bad_http_total",
    "Request heads the HTTP parser refused (answered 400 by pingora before paysign saw them), by listener.",
    &["listener"]
));
lazy_metric!(BUILD_INFO: IntGaugeVec = register_int_gauge_vec!(
    "paysign_build_info",
    "Always 1; labels tell the build.",
    &["version", "crypto_backend"]
));
lazy_metric!(MERCHANTS: IntGaugeVec = register_int_gauge_vec!(
    "paysign_merchants_configured",
    "Merchants loaded from the configuration, by profile.",
    &["profile"]
));

/// Forces registration of every metric so that a scrape shows them all from the start.
pub fn init(crypto_backend: &str) {
    BUILD_INFO.with_label_values(&[env!("CARGO_PKG_VERSION"), crypto_backend]).set(1);
    Lazy::force(&REQUESTS);
    Lazy::force(&REQUEST_DURATION);
    Lazy::force(&UPSTREAM_DURATION);
    Lazy::force(&CRYPTO_DURATION);
    Lazy::force(&VERIFY_FAILURES);
    Lazy::force(&PLATFORM_ERRCODES);
    Lazy::force(&PLATFORM_FAILURES);
    Lazy::force(&CONNECT_RETRIES);
    Lazy::force(&IN_FLIGHT);
    Lazy::force(&PRIVATE_KEY_QUEUE);
    Lazy::force(&PRIVATE_KEY_RUNNING_MAX);
    Lazy::force(&PRIVATE_KEY_SHED);
    Lazy::force(&CALLER_REFUSED);
    Lazy::force(&CONNECTIONS_OPEN);
    Lazy::force(&CONNECTIONS_REFUSED);
    Lazy::force(&HEADER_TIMEOUTS);
    Lazy::force(&BAD_HTTP);
    Lazy::force(&NOTIFICATIONS);
    Lazy::force(&CONFIG_RELOADS);
    Lazy::force(&CONFIG_GENERATION);
    Lazy::force(&NOTIFY_FORWARD_DURATION);
    Lazy::force(&MERCHANTS);
}

/// `paysign_merchants_configured` for a (re)loaded configuration.
pub fn set_merchants(config: &crate::config::Config) {
    MERCHANTS.reset();
    for m in config.merchants.values() {
        MERCHANTS.with_label_values(&[m.profile().as_str()]).inc();
    }
}

pub fn observe_crypto(op: &'static str, d: Duration) {
    CRYPTO_DURATION.with_label_values(&[op]).observe(d.as_secs_f64());
}

/// The protocol's timings of each sealing and opening step, recorded as
/// `paysign_crypto_duration_seconds{op}`.
pub struct CryptoTimings;

impl crate::protocol::Observer for CryptoTimings {
    fn crypto(&self, op: &'static str, elapsed: Duration) {
        observe_crypto(op, elapsed);
    }
}

/// Maps a platform errCode onto the fixed label set.
pub fn errcode_label(code: &str) -> &str {
    KNOWN_ERRCODES.iter().find(|k| **k == code).copied().unwrap_or("other")
}

/// The default registry in the Prometheus text format.
pub fn render() -> String {
    TextEncoder::new().encode_to_string(&prometheus::gather()).unwrap_or_else(|e| format!("# encoding error: {e}\n"))
}

#[cfg(test)]
mod tests {
    #[test]
    fn metrics_register() {
        super::init("rsa");
        let text = super::render();
        assert!(text.contains("paysign_build_info{"));
        assert_eq!(super::errcode_label("2104"), "2104");
        assert_eq!(super::errcode_label("12345"), "other");
    }
}
