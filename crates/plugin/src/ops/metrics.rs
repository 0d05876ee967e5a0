//! Prometheus metrics as values: one [`Metrics`] per `Paysign` instance, built once into the
//! registry the embedder gives ([`Metrics::new`]; the `paysign` binary gives the default one)
//! and handed down at construction to each part that counts (executor, listeners, platform
//! client, notifications, reload). Nothing is process-wide: two instances in one process, each
//! with its own registry, count only their own calls and reloads. Label values come from small
//! fixed sets: endpoint names from the schema tables (or `other`), configured customer numbers
//! (or `unknown`), the closed enums below, documented errCodes (or `other`).

use std::sync::Mutex;
use std::time::Duration;

use prometheus::core::{Collector, Desc};
use prometheus::proto::MetricFamily;
use prometheus::{Histogram, HistogramOpts, HistogramVec, IntCounter, IntCounterVec, IntGauge, IntGaugeVec, Opts, Registry, TextEncoder};

use crate::protocol::{OpenError, PlatformKey, Profile};

/// Latency buckets from 0.5 ms to 30 s: crypto-only requests sit at the low end, platform
/// round trips and timeouts at the high end.
const LATENCY_BUCKETS: &[f64] = &[0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0];
/// Crypto operations: tens of microseconds (MD5, public ops) to tens of ms (private ops).
const CRYPTO_BUCKETS: &[f64] = &[0.00001, 0.000025, 0.00005, 0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05];

/// The errCodes of the endpoint document; anything else is counted as `other`.
pub const KNOWN_ERRCODES: &[&str] = &["0000", "1001", "1002", "1003", "2001", "2002", "2104", "2106", "9999"];

// The closed label sets: every value a label can take besides configured names (merchants,
// routes, callers, endpoint names). Each is an enum whose `as_str` is the label value, and its
// `…S` constant (the list the docs test reads) comes from the same declaration, so they cannot
// drift. Each family gets zero-valued series for them at start-up and on reload
// ([`Metrics::configured`]), so dashboards and alerts see 0, not "No data".

/// A closed label set: the enum, its `as_str`, `ALL`, and the list of its values.
macro_rules! label_set {
    ($(#[$m:meta])* $name:ident, $(#[$lm:meta])* $list:ident { $($(#[$vm:meta])* $v:ident => $s:literal),+ $(,)? }) => {
        $(#[$m])*
        #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
        pub enum $name {
            $($(#[$vm])* $v),+
        }
        impl $name {
            /// Every value, in the order of the list.
            pub const ALL: &'static [$name] = &[$($name::$v),+];
            /// The label value.
            pub const fn as_str(self) -> &'static str {
                match self {
                    $($name::$v => $s),+
                }
            }
        }
        $(#[$lm])*
        pub const $list: &[&str] = &[$($s),+];
    };
}

label_set!(
    /// How a request to the proxy ended: `paysign_requests_total{outcome}` and the access line.
    RequestOutcome,
    /// `paysign_requests_total{outcome}`: `verified`, `client_gone` (the answer could not be
    /// written), `bad_http` (pingora's parser refused the head), `head_too_large` (a head over
    /// `max_header_bytes`), and every `GatewayError::outcome`.
    REQUEST_OUTCOMES {
        /// The verified answer was written to the caller.
        Verified => "verified",
        /// A verified answer the caller did not take (pingora reported an error writing it).
        ClientGone => "client_gone",
        /// [`GatewayError::BadHttp`](crate::GatewayError::BadHttp).
        BadHttp => "bad_http",
        /// [`GatewayError::HeadTooLarge`](crate::GatewayError::HeadTooLarge).
        HeadTooLarge => "head_too_large",
        /// [`GatewayError::NotFound`](crate::GatewayError::NotFound).
        NotFound => "not_found",
        /// [`GatewayError::MethodNotAllowed`](crate::GatewayError::MethodNotAllowed).
        MethodNotAllowed => "method_not_allowed",
        /// [`GatewayError::BodyTooLarge`](crate::GatewayError::BodyTooLarge).
        BodyTooLarge => "body_too_large",
        /// [`GatewayError::ClientTimeout`](crate::GatewayError::ClientTimeout).
        ClientTimeout => "client_timeout",
        /// `BadBody`, `ReservedField`, `DuplicateHeader`, `BadHeader`, or a request that never
        /// reached `request_filter`.
        BadRequest => "bad_request",
        /// [`GatewayError::QueryNotAllowed`](crate::GatewayError::QueryNotAllowed).
        QueryRefused => "query_refused",
        /// [`GatewayError::Unauthenticated`](crate::GatewayError::Unauthenticated).
        Unauthenticated => "unauthenticated",
        /// [`GatewayError::Forbidden`](crate::GatewayError::Forbidden).
        Forbidden => "forbidden",
        /// [`GatewayError::Overloaded`](crate::GatewayError::Overloaded).
        Shed => "shed",
        /// [`GatewayError::DeadlinePassed`](crate::GatewayError::DeadlinePassed).
        Deadline => "deadline",
        /// [`GatewayError::ShuttingDown`](crate::GatewayError::ShuttingDown).
        ShuttingDown => "shutting_down",
        /// [`GatewayError::CallerGone`](crate::GatewayError::CallerGone).
        Abandoned => "abandoned",
        /// [`GatewayError::Invalid`](crate::GatewayError::Invalid).
        Invalid => "invalid",
        /// [`GatewayError::UnknownMerchant`](crate::GatewayError::UnknownMerchant) or
        /// `MerchantRequired`.
        UnknownMerchant => "unknown_merchant",
        /// [`GatewayError::Seal`](crate::GatewayError::Seal).
        SealFailed => "seal_failed",
        /// [`GatewayError::Unreachable`](crate::GatewayError::Unreachable).
        Unreachable => "unreachable",
        /// [`GatewayError::PlatformTls`](crate::GatewayError::PlatformTls).
        TlsFailed => "tls_failed",
        /// [`GatewayError::Timeout`](crate::GatewayError::Timeout).
        Timeout => "timeout",
        /// [`GatewayError::UpstreamIo`](crate::GatewayError::UpstreamIo).
        UpstreamIo => "upstream_io",
        /// [`GatewayError::ResponseTooLarge`](crate::GatewayError::ResponseTooLarge).
        ResponseTooLarge => "response_too_large",
        /// [`GatewayError::UpstreamHttp`](crate::GatewayError::UpstreamHttp).
        UpstreamHttp => "upstream_http",
        /// [`GatewayError::PlatformFailure`](crate::GatewayError::PlatformFailure).
        PlatformFailure => "platform_failure",
        /// [`GatewayError::Verify`](crate::GatewayError::Verify).
        VerifyFailed => "verify_failed",
        /// [`GatewayError::Form`](crate::GatewayError::Form).
        FormFailed => "form_failed",
        /// [`GatewayError::Internal`](crate::GatewayError::Internal).
        Internal => "internal",
    }
);

label_set!(
    /// Why an answer or a notification did not open or verify.
    VerifyReason,
    /// `paysign_verification_failures_total{reason}` (`OpenError::reason`).
    VERIFY_REASONS {
        /// The outer JSON envelope is malformed.
        Envelope => "envelope",
        /// The envelope names another `customerNo`.
        CustomerMismatch => "customer_mismatch",
        /// `reqmsg` is not base64, or not a whole number of blocks.
        Encoding => "encoding",
        /// A `reqmsg` block does not open.
        Padding => "padding",
        /// The opened `reqmsg` is not a JSON object.
        Plaintext => "plaintext",
        /// The opened `reqmsg` is not UTF-8.
        NotUtf8 => "not_utf8",
        /// `sign` is missing or does not verify.
        Signature => "signature",
        /// Verified, but not shaped as a notification (an answer posing as one).
        NotNotification => "not_notification",
    }
);

impl VerifyReason {
    /// The reason of a failure to open (the same value as `OpenError::reason`).
    pub fn of(e: &OpenError) -> Self {
        use crate::protocol::crypto::CryptoError;
        match e {
            OpenError::Envelope(_) => VerifyReason::Envelope,
            OpenError::CustomerMismatch => VerifyReason::CustomerMismatch,
            OpenError::Ciphertext(CryptoError::Encoding) => VerifyReason::Encoding,
            OpenError::Ciphertext(_) => VerifyReason::Padding,
            OpenError::NotUtf8 => VerifyReason::NotUtf8,
            OpenError::Plaintext => VerifyReason::Plaintext,
            OpenError::NotANotification => VerifyReason::NotNotification,
            OpenError::Signature => VerifyReason::Signature,
        }
    }
}

label_set!(
    /// How a notification ended.
    NotificationOutcome,
    /// `paysign_notifications_total{outcome}` (the outcomes of `notify.rs`).
    NOTIFICATION_OUTCOMES {
        /// Verified and taken by the target (a 2xx).
        Forwarded => "forwarded",
        /// Verified and stored durably in the inbox, then acknowledged (delivered from there).
        Stored => "stored",
        /// Already in the inbox (a platform retry): acknowledged again, nothing stored twice.
        Duplicate => "duplicate",
        /// Verified, but the inbox could not store it (disk full, read-only, database down):
        /// not acknowledged, so the platform sends it again.
        StoreFailed => "store_failed",
        /// The source address is not in `notify.allow_from`.
        SourceRefused => "source_refused",
        /// The path is not a configured route.
        NotFound => "not_found",
        /// The method is not POST.
        MethodNotAllowed => "method_not_allowed",
        /// The body is over `notify.max_body_bytes`.
        TooLarge => "too_large",
        /// The body did not arrive within `client_body_timeout_ms`.
        BodyTimeout => "body_timeout",
        /// The body is unreadable, not a JSON object, or not a notification envelope.
        Malformed => "malformed",
        /// The `customerNo` is not the route's merchant, or the envelope names another.
        WrongMerchant => "wrong_merchant",
        /// The `customerNo` is not a configured merchant.
        UnknownMerchant => "unknown_merchant",
        /// `reqmsg` has more blocks than `notify.max_blocks` (refused before decrypting).
        TooManyBlocks => "too_many_blocks",
        /// The private-key executor had no room to open it (the platform retries).
        Shed => "shed",
        /// The private-key job that opened it panicked.
        Internal => "internal",
        /// `reqmsg` does not decode or open, its plaintext is not a JSON object, or `sign` does not
        /// verify (one outcome for all: no oracle).
        Forged => "forged",
        /// Genuine but not UTF-8 (a charset problem to fix with the platform).
        NotUtf8 => "not_utf8",
        /// Verified, but not shaped as a notification: never forwarded.
        NotNotification => "not_notification",
        /// The target answered non-2xx, or failed after the notification may have reached it.
        TargetFailed => "target_failed",
        /// The target could not be reached (nothing was sent to it).
        TargetUnreachable => "target_unreachable",
    }
);

label_set!(
    /// What the inbox did with a notification the platform sent.
    InboxStoreResult,
    /// `paysign_inbox_stored_total{result}`.
    INBOX_STORE_RESULTS {
        /// Verified and committed as a new notification.
        Stored => "stored",
        /// Verified, and its id was stored already (the platform re-encrypted a retry).
        Duplicate => "duplicate",
        /// The exact bytes of a stored notification, recognised before any decryption.
        Recognised => "recognised",
        /// The store failed: not acknowledged.
        Failed => "failed",
    }
);

label_set!(
    /// How one delivery attempt from the inbox ended.
    DeliveryOutcome,
    /// `paysign_inbox_deliveries_total{route,outcome}`.
    DELIVERY_OUTCOMES {
        /// The target answered 2xx: done.
        Delivered => "delivered",
        /// The target failed or was unreachable: tried again on the schedule.
        Retry => "retry",
        /// It failed after its last scheduled attempt: dead-lettered.
        DeadLettered => "dead_lettered",
        /// The lease ran out before the result was recorded: another deliverer owns it now.
        LeaseLost => "lease_lost",
    }
);

label_set!(
    /// The states of a stored notification.
    InboxState,
    /// `paysign_inbox_notifications{state}`.
    INBOX_STATES {
        /// Waiting for its next attempt.
        Pending => "pending",
        /// Being delivered (leased to a deliverer).
        Leased => "leased",
        /// Delivered, kept until the retention ends.
        Delivered => "delivered",
        /// Dead-lettered: needs an operator.
        Dead => "dead",
    }
);

label_set!(
    /// Why a caller was refused.
    CallerRefusal,
    /// `paysign_caller_refusals_total{reason}`: the proxy's (`missing`, `malformed`,
    /// `unknown_token`, `forbidden`) and the admin listener's (`unauthenticated`, `not_loopback`).
    CALLER_REFUSAL_REASONS {
        /// No bearer token was presented.
        Missing => "missing",
        /// The `Authorization` header is repeated, not `Bearer …`, or not text.
        Malformed => "malformed",
        /// The token is no configured caller's.
        UnknownToken => "unknown_token",
        /// The caller's grants do not cover the endpoint or merchant.
        Forbidden => "forbidden",
        /// Admin: no valid admin token presented.
        Unauthenticated => "unauthenticated",
        /// Admin: no `admin_token_file` and not from 127.0.0.1 or ::1.
        NotLoopback => "not_loopback",
    }
);

label_set!(
    /// Which of paysign's listeners a connection came to.
    Listener,
    /// `listener` of the connection metrics.
    LISTENERS {
        /// The proxy listener (`listen`).
        Proxy => "proxy",
        /// The notification listener (`notify.listen`).
        Notify => "notify",
        /// The admin listener (`admin_listen`).
        Admin => "admin",
    }
);

label_set!(
    /// What became of a private-key operation that reached a worker.
    PrivateKeyJob,
    /// `paysign_private_key_jobs_total{outcome}`: done, or skipped (its caller had gone).
    PRIVATE_KEY_JOB_OUTCOMES {
        /// The operation ran.
        Executed => "executed",
        /// Not run: its caller had gone before the work started.
        Skipped => "skipped",
    }
);

label_set!(
    /// How a configuration reload ended.
    ReloadResult,
    /// `paysign_config_reloads_total{result}`.
    RELOAD_RESULTS {
        /// The new configuration is in force.
        Ok => "ok",
        /// Refused: the running configuration stays in force.
        Failed => "failed",
    }
);

/// `paysign_platform_key_verified_total{key}` (the protocol's [`PlatformKey`]).
pub const PLATFORM_KEYS: &[&str] = &[PlatformKey::Current.as_str(), PlatformKey::Next.as_str()];
/// `paysign_merchants_configured{profile}` (the protocol's [`Profile`]).
pub const PROFILES: &[&str] = &[Profile::Md5.as_str(), Profile::Rsa.as_str()];
/// `endpoint` besides the endpoint table's names: `other` (a forwardable path without a
/// table), `none` (not a forwardable path, or a head that never reached paysign).
pub const ENDPOINT_FALLBACKS: &[&str] = &["other", "none"];
/// `merchant` besides the configured customer numbers.
pub const MERCHANT_FALLBACKS: &[&str] = &["unknown", "none"];
/// `route` besides the configured paths: `none` (no route matched).
pub const ROUTE_FALLBACKS: &[&str] = &["none"];
/// `caller` besides the configured callers' names.
pub const CALLER_FALLBACKS: &[&str] = &["anonymous", "admin"];
/// The protocol's operations, each with its histogram resolved once (no label lookup per call).
pub const CRYPTO_OPS: [&str; 8] = ["canonicalize", "md5_sign", "md5_verify", "rsa_sign", "rsa_verify", "encrypt", "decrypt", "open_type1"];

/// Every paysign metric of one instance. Built once ([`Metrics::new`]) into the embedder's
/// registry and shared (`Arc<Metrics>`) by the parts of that instance; the hot paths hold
/// handles resolved at construction ([`Metrics::listener`], [`Metrics::executor`],
/// [`Metrics::crypto_timings`]) so that counting costs no label lookup.
pub struct Metrics {
    /// `paysign_requests_total{endpoint,merchant,outcome}`: requests from internal services.
    pub requests: IntCounterVec,
    /// `paysign_request_duration_seconds{endpoint}`: request received to response written.
    pub request_duration: HistogramVec,
    /// `paysign_upstream_duration_seconds{endpoint}`: connecting to the platform to its answer.
    pub upstream_duration: HistogramVec,
    /// `paysign_crypto_duration_seconds{op}`: the duration of each crypto operation.
    pub crypto_duration: HistogramVec,
    /// `paysign_verification_failures_total{reason}`: answers and notifications not verified.
    pub verify_failures: IntCounterVec,
    /// `paysign_platform_errcode_total{endpoint,errcode}`: errCode of verified answers.
    pub platform_errcodes: IntCounterVec,
    /// `paysign_platform_failures_total{endpoint}`: the platform's failure envelopes.
    pub platform_failures: IntCounterVec,
    /// `paysign_upstream_connect_retries_total{endpoint}`: connects retried (nothing sent).
    pub connect_retries: IntCounterVec,
    /// `paysign_notifications_total{route,outcome}`: platform notifications.
    pub notifications: IntCounterVec,
    /// `paysign_notification_forward_duration_seconds{route}`: the target taking a notification.
    pub notify_forward_duration: HistogramVec,
    /// `paysign_inbox_stored_total{result}`: what the inbox did with verified notifications.
    pub inbox_stored: IntCounterVec,
    /// `paysign_inbox_deliveries_total{route,outcome}`: delivery attempts from the inbox.
    pub inbox_deliveries: IntCounterVec,
    /// `paysign_inbox_notifications{state}`: stored notifications by state (sampled).
    pub inbox_depth: IntGaugeVec,
    /// `paysign_inbox_oldest_undelivered_age_seconds`: 0 when everything is delivered.
    pub inbox_oldest_age: IntGauge,
    /// `paysign_config_reloads_total{result}`: reloads, `ok` or `failed`.
    pub config_reloads: IntCounterVec,
    /// `paysign_config_generation`: configurations loaded (1 at start-up).
    pub config_generation: IntGauge,
    /// `paysign_requests_in_flight`: requests being handled now.
    pub in_flight: IntGauge,
    /// `paysign_private_key_ops_admitted`: private-key operations running or waiting for a worker.
    pub private_key_queue: IntGauge,
    /// `paysign_private_key_ops_running_max`: the most ever running at once.
    pub private_key_running_max: IntGauge,
    /// `paysign_private_key_ops_shed_total`: private-key operations refused, all full.
    pub private_key_shed: IntCounter,
    /// `paysign_private_key_jobs_total{outcome}`: operations that reached a worker.
    pub private_key_jobs: IntCounterVec,
    /// `paysign_caller_refusals_total{caller,reason}`: callers refused by authentication or grants.
    pub caller_refused: IntCounterVec,
    /// `paysign_connections_open{listener}`: open client connections.
    pub connections_open: IntGaugeVec,
    /// `paysign_connections_refused_total{listener}`: closed at once, `max_connections` open.
    pub connections_refused: IntCounterVec,
    /// `paysign_header_timeouts_total{listener}`: closed, no head within `header_timeout_ms`.
    pub header_timeouts: IntCounterVec,
    /// `paysign_bad_http_total{listener}`: heads refused (unparsable, over `max_header_bytes`).
    pub bad_http: IntCounterVec,
    /// `paysign_platform_key_verified_total{merchant,key}`: which platform key verified.
    pub platform_key_verified: IntCounterVec,
    /// `paysign_upstream_connections_opened_total`: new (not pooled) connections to the platform.
    pub upstream_connections_opened: IntCounter,
    /// `paysign_build_info{version,crypto_backend}`: always 1.
    pub build_info: IntGaugeVec,
    /// `paysign_merchants_configured{profile}`: merchants configured, by profile.
    pub merchants: IntGaugeVec,
    /// Read from the process's PKCS#11 modules when gathered (a module is loaded once per
    /// process, whichever instance opened it).
    pkcs11_sessions: IntGauge,
    /// Read from the process's stderr writer when gathered (one per process, as stderr is).
    log_lines_dropped: IntCounter,
    crypto: CryptoTimings,
}

macro_rules! counter_vec {
    ($name:expr, $help:expr, $labels:expr) => {
        IntCounterVec::new(Opts::new($name, $help), $labels)?
    };
}
macro_rules! gauge_vec {
    ($name:expr, $help:expr, $labels:expr) => {
        IntGaugeVec::new(Opts::new($name, $help), $labels)?
    };
}
macro_rules! histogram_vec {
    ($name:expr, $help:expr, $labels:expr, $buckets:expr) => {
        HistogramVec::new(HistogramOpts::new($name, $help).buckets($buckets.to_vec()), $labels)?
    };
}

impl Metrics {
    /// Defines every paysign metric and registers it into `registry` (the embedder's, or
    /// `prometheus::default_registry()`), so that a scrape shows them all from the start.
    /// Fails when a family of the same name is already registered there (a registry holds one
    /// instance's metrics).
    pub fn new(registry: &Registry) -> prometheus::Result<Self> {
        let crypto_duration =
            histogram_vec!("paysign_crypto_duration_seconds", "Duration of crypto operations, by operation.", &["op"], CRYPTO_BUCKETS);
        let platform_key_verified = counter_vec!(
            "paysign_platform_key_verified_total",
            "Answers and notifications verified, by merchant and by which platform key verified them (current or next, during a rollover).",
            &["merchant", "key"]
        );
        let crypto = CryptoTimings {
            ops: CRYPTO_OPS.map(|op| crypto_duration.with_label_values(&[op])),
            all: crypto_duration.clone(),
            platform_key_verified: platform_key_verified.clone(),
        };
        let m = Metrics {
            requests: counter_vec!(
                "paysign_requests_total",
                "Requests from internal services, by endpoint, merchant and outcome.",
                &["endpoint", "merchant", "outcome"]
            ),
            request_duration: histogram_vec!(
                "paysign_request_duration_seconds",
                "End-to-end time from request received to response written, by endpoint.",
                &["endpoint"],
                LATENCY_BUCKETS
            ),
            upstream_duration: histogram_vec!(
                "paysign_upstream_duration_seconds",
                "Time from connecting to the platform to its full response, by endpoint.",
                &["endpoint"],
                LATENCY_BUCKETS
            ),
            crypto_duration,
            verify_failures: counter_vec!(
                "paysign_verification_failures_total",
                "Platform responses that could not be opened or verified, by reason.",
                &["reason"]
            ),
            platform_errcodes: counter_vec!(
                "paysign_platform_errcode_total",
                "errCode of verified platform answers, by endpoint.",
                &["endpoint", "errcode"]
            ),
            platform_failures: counter_vec!(
                "paysign_platform_failures_total",
                "Platform-level failure envelopes (code != 200 or success false), by endpoint.",
                &["endpoint"]
            ),
            connect_retries: counter_vec!(
                "paysign_upstream_connect_retries_total",
                "Connection attempts to the platform retried (nothing had been sent).",
                &["endpoint"]
            ),
            notifications: counter_vec!(
                "paysign_notifications_total",
                "Platform notifications, by configured route and outcome.",
                &["route", "outcome"]
            ),
            notify_forward_duration: histogram_vec!(
                "paysign_notification_forward_duration_seconds",
                "Time for the internal target to take a verified notification, by route.",
                &["route"],
                LATENCY_BUCKETS
            ),
            inbox_stored: counter_vec!(
                "paysign_inbox_stored_total",
                "Verified notifications by what the inbox did: stored, duplicate (id stored already), recognised (the same bytes, before decryption), failed (not acknowledged).",
                &["result"]
            ),
            inbox_deliveries: counter_vec!(
                "paysign_inbox_deliveries_total",
                "Delivery attempts from the inbox to the internal target, by route and outcome.",
                &["route", "outcome"]
            ),
            inbox_depth: gauge_vec!(
                "paysign_inbox_notifications",
                "Notifications in the inbox by state (pending, leased, delivered, dead), sampled every few seconds.",
                &["state"]
            ),
            inbox_oldest_age: IntGauge::new(
                "paysign_inbox_oldest_undelivered_age_seconds",
                "Age of the oldest notification neither delivered nor dead-lettered (0: none).",
            )?,
            config_reloads: counter_vec!(
                "paysign_config_reloads_total",
                "Configuration reloads (SIGHUP or POST /-/reload), by result.",
                &["result"]
            ),
            config_generation: IntGauge::new(
                "paysign_config_generation",
                "How many configurations this process has loaded (1 at start-up).",
            )?,
            in_flight: IntGauge::new("paysign_requests_in_flight", "Requests being handled right now.")?,
            private_key_queue: IntGauge::new(
                "paysign_private_key_ops_admitted",
                "Private-key operations running or waiting for a worker.",
            )?,
            private_key_running_max: IntGauge::new(
                "paysign_private_key_ops_running_max",
                "The most private-key operations ever seen running at once (never above private_key_workers).",
            )?,
            private_key_shed: IntCounter::new(
                "paysign_private_key_ops_shed_total",
                "Private-key operations refused at once because workers and queue were full (nothing was sent).",
            )?,
            private_key_jobs: counter_vec!(
                "paysign_private_key_jobs_total",
                "Private-key operations that reached a worker, by outcome: `executed`, or `skipped` because their caller had gone before the work started.",
                &["outcome"]
            ),
            caller_refused: counter_vec!(
                "paysign_caller_refusals_total",
                "Requests refused by caller authentication or authorisation, by caller (or `anonymous`) and reason.",
                &["caller", "reason"]
            ),
            connections_open: gauge_vec!(
                "paysign_connections_open",
                "Open client connections, by listener (proxy, notify, admin).",
                &["listener"]
            ),
            connections_refused: counter_vec!(
                "paysign_connections_refused_total",
                "Connections closed at once because the listener had max_connections open.",
                &["listener"]
            ),
            header_timeouts: counter_vec!(
                "paysign_header_timeouts_total",
                "Connections closed because a request head (or the next one, when idle) did not arrive within header_timeout_ms.",
                &["listener"]
            ),
            bad_http: counter_vec!(
                "paysign_bad_http_total",
                "Request heads refused before any app saw them, by listener: the HTTP parser's refusals (400) and heads over max_header_bytes (431).",
                &["listener"]
            ),
            platform_key_verified,
            upstream_connections_opened: IntCounter::new(
                "paysign_upstream_connections_opened_total",
                "Connections opened to the platform (each a TCP and, over https, a TLS handshake); the rest reuse pooled ones.",
            )?,
            build_info: gauge_vec!("paysign_build_info", "Always 1; labels tell the build.", &["version", "crypto_backend"]),
            merchants: gauge_vec!(
                "paysign_merchants_configured",
                "Merchants loaded from the configuration, by profile.",
                &["profile"]
            ),
            pkcs11_sessions: IntGauge::new(
                "paysign_pkcs11_sessions",
                "PKCS#11 sessions paysign holds open (pooled or in use); at most one per concurrent private-key operation and key.",
            )?,
            log_lines_dropped: IntCounter::new(
                "paysign_log_lines_dropped_total",
                "Log lines dropped because stderr was not read fast enough (more than 1 MiB waiting); requests are never held up by logging.",
            )?,
            crypto,
        };
        for c in m.collectors() {
            registry.register(c)?;
        }
        Ok(m)
    }

    /// Every metric of this instance, as registered.
    fn collectors(&self) -> Vec<Box<dyn Collector>> {
        vec![
            Box::new(self.requests.clone()),
            Box::new(self.request_duration.clone()),
            Box::new(self.upstream_duration.clone()),
            Box::new(self.crypto_duration.clone()),
            Box::new(self.verify_failures.clone()),
            Box::new(self.platform_errcodes.clone()),
            Box::new(self.platform_failures.clone()),
            Box::new(self.connect_retries.clone()),
            Box::new(self.notifications.clone()),
            Box::new(self.notify_forward_duration.clone()),
            Box::new(self.inbox_stored.clone()),
            Box::new(self.inbox_deliveries.clone()),
            Box::new(self.inbox_depth.clone()),
            Box::new(self.inbox_oldest_age.clone()),
            Box::new(self.config_reloads.clone()),
            Box::new(self.config_generation.clone()),
            Box::new(self.in_flight.clone()),
            Box::new(self.private_key_queue.clone()),
            Box::new(self.private_key_running_max.clone()),
            Box::new(self.private_key_shed.clone()),
            Box::new(self.private_key_jobs.clone()),
            Box::new(SampledGauge { gauge: self.pkcs11_sessions.clone(), read: crate::pkcs11::sessions_open }),
            Box::new(self.caller_refused.clone()),
            Box::new(self.connections_open.clone()),
            Box::new(self.connections_refused.clone()),
            Box::new(self.header_timeouts.clone()),
            Box::new(self.bad_http.clone()),
            Box::new(self.platform_key_verified.clone()),
            Box::new(self.upstream_connections_opened.clone()),
            Box::new(SampledCounter {
                counter: self.log_lines_dropped.clone(),
                read: crate::log_writer::lines_dropped,
                lock: Mutex::new(()),
            }),
            Box::new(self.build_info.clone()),
            Box::new(self.merchants.clone()),
        ]
    }

    /// Sets `paysign_build_info` (version and crypto backend).
    pub fn crypto_backend(&self, crypto_backend: &str) {
        self.build_info.with_label_values(&[env!("CARGO_PKG_VERSION"), crypto_backend]).set(1);
    }

    /// `paysign_merchants_configured` for a (re)loaded configuration.
    pub fn set_merchants<'a>(&self, merchants: impl Iterator<Item = &'a crate::protocol::Merchant>) {
        self.merchants.reset();
        for p in PROFILES {
            self.merchants.with_label_values(&[p]).set(0);
        }
        for m in merchants {
            self.merchants.with_label_values(&[m.profile().as_str()]).inc();
        }
    }

    /// A caller refused (`caller`: a configured name, `anonymous` or `admin`).
    pub fn caller_refused(&self, caller: &str, reason: CallerRefusal) {
        self.caller_refused.with_label_values(&[caller, reason.as_str()]).inc();
    }

    /// An answer or a notification that did not open or verify.
    pub fn verify_failed(&self, e: &OpenError) {
        self.verify_failures.with_label_values(&[VerifyReason::of(e).as_str()]).inc();
    }

    /// A reload, done or refused.
    pub fn reloaded(&self, result: ReloadResult) {
        self.config_reloads.with_label_values(&[result.as_str()]).inc();
    }

    /// The handles one listener counts with.
    pub fn listener(&self, listener: Listener) -> ListenerMetrics {
        let l = [listener.as_str()];
        ListenerMetrics {
            listener,
            open: self.connections_open.with_label_values(&l),
            refused: self.connections_refused.with_label_values(&l),
            header_timeouts: self.header_timeouts.with_label_values(&l),
            bad_http: self.bad_http.with_label_values(&l),
            requests: self.requests.clone(),
        }
    }

    /// The handles the private-key executor counts with.
    pub fn executor(&self) -> ExecutorMetrics {
        ExecutorMetrics {
            admitted: self.private_key_queue.clone(),
            running_max: self.private_key_running_max.clone(),
            shed: self.private_key_shed.clone(),
            executed: self.private_key_jobs.with_label_values(&[PrivateKeyJob::Executed.as_str()]),
            skipped: self.private_key_jobs.with_label_values(&[PrivateKeyJob::Skipped.as_str()]),
        }
    }

    /// The protocol's observer: crypto timings and the platform key that verified.
    pub fn crypto_timings(&self) -> &CryptoTimings {
        &self.crypto
    }

    /// Creates every series a configuration makes possible, at 0 where it is new (a series
    /// that already counted keeps its value): every family is present on a fresh instance, and
    /// a rate or an `increase()` starts from 0 instead of from the first event. Bounded:
    /// endpoints × configured merchants × outcomes for the requests, routes × outcomes for
    /// notifications.
    pub fn configured(&self, k: &Known<'_>) {
        let endpoints: Vec<&str> = k.endpoints.iter().copied().chain(ENDPOINT_FALLBACKS.iter().copied()).collect();
        for ep in &endpoints {
            let _ = self.request_duration.with_label_values(&[ep]);
            let _ = self.upstream_duration.with_label_values(&[ep]);
            let _ = self.platform_failures.with_label_values(&[ep]);
            let _ = self.connect_retries.with_label_values(&[ep]);
            for code in KNOWN_ERRCODES.iter().chain(&["other"]) {
                let _ = self.platform_errcodes.with_label_values(&[ep, code]);
            }
        }
        // A forwardable path with an endpoint table (or `other`) and a configured merchant can
        // end in any outcome; `none` and `unknown` only in the few that refuse before a merchant
        // is known.
        for ep in k.endpoints.iter().copied().chain(["other"]) {
            for m in &k.merchants {
                for o in REQUEST_OUTCOMES {
                    let _ = self.requests.with_label_values(&[ep, m, o]);
                }
            }
            for o in [
                RequestOutcome::UnknownMerchant,
                RequestOutcome::Unauthenticated,
                RequestOutcome::MethodNotAllowed,
                RequestOutcome::BadRequest,
            ] {
                let _ = self.requests.with_label_values(&[ep, "unknown", o.as_str()]);
                let _ = self.requests.with_label_values(&[ep, "none", o.as_str()]);
            }
        }
        // The listener's own refusals (before any app saw the head) are counted as none/none too.
        for o in [
            RequestOutcome::NotFound,
            RequestOutcome::BadHttp,
            RequestOutcome::HeadTooLarge,
            RequestOutcome::Shed,
            RequestOutcome::BadRequest,
        ] {
            let _ = self.requests.with_label_values(&["none", "none", o.as_str()]);
        }
        for r in VERIFY_REASONS {
            let _ = self.verify_failures.with_label_values(&[r]);
        }
        for o in PRIVATE_KEY_JOB_OUTCOMES {
            let _ = self.private_key_jobs.with_label_values(&[o]);
        }
        for m in &k.merchants {
            for key in PLATFORM_KEYS {
                let _ = self.platform_key_verified.with_label_values(&[m, key]);
            }
        }
        if k.notify {
            for route in k.routes.iter().chain(ROUTE_FALLBACKS) {
                let _ = self.notify_forward_duration.with_label_values(&[route]);
                for o in NOTIFICATION_OUTCOMES {
                    let _ = self.notifications.with_label_values(&[route, o]);
                }
            }
        }
        // With the listener, whether or not it has an inbox: every family from the first scrape.
        if k.notify {
            for r in INBOX_STORE_RESULTS {
                let _ = self.inbox_stored.with_label_values(&[r]);
            }
            for route in &k.routes {
                for o in DELIVERY_OUTCOMES {
                    let _ = self.inbox_deliveries.with_label_values(&[route, o]);
                }
            }
            for st in INBOX_STATES {
                let _ = self.inbox_depth.with_label_values(&[st]);
            }
        }
        for r in RELOAD_RESULTS {
            let _ = self.config_reloads.with_label_values(&[r]);
        }
        for r in [CallerRefusal::Missing, CallerRefusal::Malformed, CallerRefusal::UnknownToken] {
            let _ = self.caller_refused.with_label_values(&["anonymous", r.as_str()]);
        }
        for c in &k.callers {
            let _ = self.caller_refused.with_label_values(&[c, CallerRefusal::Forbidden.as_str()]);
        }
        for r in [CallerRefusal::Unauthenticated, CallerRefusal::NotLoopback] {
            let _ = self.caller_refused.with_label_values(&["admin", r.as_str()]);
        }
        for l in Listener::ALL.iter().filter(|l| k.notify || **l != Listener::Notify) {
            let l = [l.as_str()];
            let _ = self.connections_open.with_label_values(&l);
            let _ = self.connections_refused.with_label_values(&l);
            let _ = self.header_timeouts.with_label_values(&l);
            let _ = self.bad_http.with_label_values(&l);
        }
        for p in PROFILES {
            let _ = self.merchants.with_label_values(&[p]);
        }
    }
}

/// What a configuration names, for the zero-valued series of [`Metrics::configured`].
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

/// One listener's connection metrics, resolved once for its label.
#[derive(Clone)]
pub struct ListenerMetrics {
    /// The listener these handles count for.
    pub listener: Listener,
    /// `paysign_connections_open{listener}`.
    pub open: IntGauge,
    /// `paysign_connections_refused_total{listener}`.
    pub refused: IntCounter,
    /// `paysign_header_timeouts_total{listener}`.
    pub header_timeouts: IntCounter,
    /// `paysign_bad_http_total{listener}`.
    pub bad_http: IntCounter,
    /// `paysign_requests_total`: the proxy's refusals before any app saw the head.
    pub requests: IntCounterVec,
}

/// The private-key executor's metrics.
#[derive(Clone)]
pub struct ExecutorMetrics {
    /// `paysign_private_key_ops_admitted`.
    pub admitted: IntGauge,
    /// `paysign_private_key_ops_running_max`.
    pub running_max: IntGauge,
    /// `paysign_private_key_ops_shed_total`.
    pub shed: IntCounter,
    /// `paysign_private_key_jobs_total{outcome="executed"}`.
    pub executed: IntCounter,
    /// `paysign_private_key_jobs_total{outcome="skipped"}`.
    pub skipped: IntCounter,
}

/// The protocol's timings of each sealing and opening step, recorded as
/// `paysign_crypto_duration_seconds{op}`, and which platform key verified
/// (`paysign_platform_key_verified_total`).
pub struct CryptoTimings {
    /// One histogram per [`CRYPTO_OPS`] entry.
    ops: [Histogram; CRYPTO_OPS.len()],
    all: HistogramVec,
    platform_key_verified: IntCounterVec,
}

impl CryptoTimings {
    /// Records `d` for `op` (by its resolved histogram when `op` is one of [`CRYPTO_OPS`]).
    pub fn observe(&self, op: &'static str, d: Duration) {
        match CRYPTO_OPS.iter().position(|o| *o == op) {
            Some(i) => self.ops[i].observe(d.as_secs_f64()),
            None => self.all.with_label_values(&[op]).observe(d.as_secs_f64()),
        }
    }
}

impl crate::protocol::Observer for CryptoTimings {
    fn crypto(&self, op: &'static str, elapsed: Duration) {
        self.observe(op, elapsed);
    }

    fn platform_key(&self, customer_no: &str, key: PlatformKey) {
        self.platform_key_verified.with_label_values(&[customer_no, key.as_str()]).inc();
    }
}

/// A gauge of process-wide state, set from it each time the registry is gathered.
struct SampledGauge {
    gauge: IntGauge,
    read: fn() -> i64,
}

impl Collector for SampledGauge {
    fn desc(&self) -> Vec<&Desc> {
        self.gauge.desc()
    }
    fn collect(&self) -> Vec<MetricFamily> {
        self.gauge.set((self.read)());
        self.gauge.collect()
    }
}

/// A counter of process-wide events, brought up to their count each time the registry is
/// gathered (one gather at a time, so that a count is added once).
struct SampledCounter {
    counter: IntCounter,
    read: fn() -> u64,
    lock: Mutex<()>,
}

impl Collector for SampledCounter {
    fn desc(&self) -> Vec<&Desc> {
        self.counter.desc()
    }
    fn collect(&self) -> Vec<MetricFamily> {
        let _one = self.lock.lock().unwrap_or_else(|p| p.into_inner());
        let (now, have) = ((self.read)(), self.counter.get());
        if now > have {
            self.counter.inc_by(now - have);
        }
        self.counter.collect()
    }
}

/// Every paysign metric family with its label names (from a throwaway instance).
pub fn families() -> Vec<(String, Vec<String>)> {
    Metrics::new(&Registry::new())
        .map(|m| m.collectors().iter().flat_map(|c| c.desc().into_iter().map(|d| (d.fq_name.clone(), d.variable_labels.clone()))).collect())
        .unwrap_or_default()
}

/// The name of every paysign metric family.
pub fn family_names() -> Vec<String> {
    families().into_iter().map(|(name, _)| name).collect()
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
    use super::*;

    #[test]
    fn metrics_register() {
        let registry = Registry::new();
        let m = Metrics::new(&registry).unwrap();
        m.crypto_backend("rsa");
        let text = render(&registry);
        assert!(text.contains("paysign_build_info{"));
        // Every definition is valid, named paysign_*, and named once.
        let names: std::collections::HashSet<String> = family_names().into_iter().collect();
        assert_eq!(names.len(), m.collectors().len());
        assert!(names.iter().all(|n| n.starts_with("paysign_")));
        assert!(Metrics::new(&registry).is_err(), "registering twice into one registry is refused");
        assert_eq!(errcode_label("2104"), "2104");
        assert_eq!(errcode_label("12345"), "other");
    }

    /// Two instances, two registries: what one counts the other does not see.
    #[test]
    fn instances_count_apart() {
        let (ra, rb) = (Registry::new(), Registry::new());
        let (a, b) = (Metrics::new(&ra).unwrap(), Metrics::new(&rb).unwrap());
        a.caller_refused("anonymous", CallerRefusal::Missing);
        a.reloaded(ReloadResult::Ok);
        b.config_generation.set(7);
        assert!(render(&ra).contains(r#"paysign_caller_refusals_total{caller="anonymous",reason="missing"} 1"#));
        assert!(!render(&rb).contains("paysign_caller_refusals_total{"));
        assert!(render(&ra).contains("paysign_config_generation 0"));
        assert!(render(&rb).contains("paysign_config_generation 7") && !render(&rb).contains(r#"result="ok"} 1"#));
    }

    /// Every verification reason the protocol can give is in the closed set, with the same
    /// value (the match in `VerifyReason::of` stops compiling when a variant is added).
    #[test]
    fn every_verification_reason_is_known() {
        use crate::protocol::crypto::CryptoError;
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
            assert_eq!(VerifyReason::of(e).as_str(), e.reason());
        }
        let given: std::collections::BTreeSet<&str> = all.iter().map(|e| e.reason()).collect();
        let listed: std::collections::BTreeSet<&str> = VERIFY_REASONS.iter().copied().collect();
        assert_eq!(given, listed);
    }

    /// Each list is its enum's values, in order.
    #[test]
    fn the_lists_are_the_enums() {
        fn same<T: Copy>(all: &[T], as_str: fn(T) -> &'static str, list: &[&str]) {
            assert_eq!(all.iter().map(|v| as_str(*v)).collect::<Vec<_>>(), list);
        }
        same(RequestOutcome::ALL, RequestOutcome::as_str, REQUEST_OUTCOMES);
        same(NotificationOutcome::ALL, NotificationOutcome::as_str, NOTIFICATION_OUTCOMES);
        same(InboxStoreResult::ALL, InboxStoreResult::as_str, INBOX_STORE_RESULTS);
        same(DeliveryOutcome::ALL, DeliveryOutcome::as_str, DELIVERY_OUTCOMES);
        same(InboxState::ALL, InboxState::as_str, INBOX_STATES);
        same(CallerRefusal::ALL, CallerRefusal::as_str, CALLER_REFUSAL_REASONS);
        same(Listener::ALL, Listener::as_str, LISTENERS);
        same(PrivateKeyJob::ALL, PrivateKeyJob::as_str, PRIVATE_KEY_JOB_OUTCOMES);
        same(ReloadResult::ALL, ReloadResult::as_str, RELOAD_RESULTS);
        same(VerifyReason::ALL, VerifyReason::as_str, VERIFY_REASONS);
        // The protocol's enums: a new variant stops this match compiling.
        for p in [Profile::Md5, Profile::Rsa] {
            match p {
                Profile::Md5 | Profile::Rsa => assert!(PROFILES.contains(&p.as_str())),
            }
        }
        for k in [PlatformKey::Current, PlatformKey::Next] {
            match k {
                PlatformKey::Current | PlatformKey::Next => assert!(PLATFORM_KEYS.contains(&k.as_str())),
            }
        }
    }

    /// A fresh registry shows every family, with zero-valued series for what a configuration
    /// names.
    #[test]
    fn a_configuration_gives_every_family_its_zero_series() {
        let registry = Registry::new();
        let m = Metrics::new(&registry).unwrap();
        m.crypto_backend("rsa");
        m.configured(&Known {
            endpoints: vec!["bindcard_create"],
            merchants: vec!["100"],
            routes: vec!["/n"],
            callers: vec!["ops"],
            notify: true,
        });
        let text = render(&registry);
        for name in family_names() {
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
