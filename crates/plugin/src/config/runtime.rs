//! The runtime configuration: what the gateway uses, every key loaded and parsed once, every
//! host name resolved. Made only by validation ([`super::load`] from a file, or
//! [`Config::builder`] in code), so a `Config` in hand has passed the same checks either way.

use std::collections::HashMap;
use std::fmt;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use super::ConfigError;
use crate::crypto::Backend;
use crate::http_client::Target;
use crate::protocol::{Merchant, MerchantKeys};

/// Where and how to reach the platform.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Upstream {
    /// The base URL; its path is a prefix put before every request path.
    pub target: Target,
    /// `platform.tls_verify`: verify the platform certificate and host name.
    pub tls_verify: bool,
    /// `platform.ca_file`, resolved against the configuration's folder.
    pub ca_file: Option<PathBuf>,
    /// (certificate chain, key) presented to the platform (mutual TLS).
    pub client_cert: Option<(PathBuf, PathBuf)>,
    /// Unix socket of an HTTP CONNECT egress proxy.
    pub egress_proxy_uds: Option<PathBuf>,
    /// TCP address of an HTTP CONNECT egress proxy (resolved at start-up).
    pub egress_proxy: Option<std::net::SocketAddr>,
    /// `platform.connect_timeout_ms`.
    pub connect_timeout: Duration,
    /// `platform.read_timeout_ms`: from the request sent to the complete answer.
    pub read_timeout: Duration,
    /// `platform.connect_retries`: extra rounds when connecting fails (nothing sent).
    pub connect_retries: u32,
    /// How often the platform's name is looked up again (`None`: fixed addresses).
    pub dns_refresh: Option<Duration>,
    /// `platform.max_response_bytes`.
    pub max_response_bytes: usize,
    /// `platform.pool_idle_timeout_secs`.
    pub pool_idle_timeout: Duration,
}

/// The validated configuration the gateway runs with; see [`crate::config`].
#[derive(Debug, Clone)]
pub struct Config {
    /// The configuration file (for the builder: its `source`); relative paths were resolved against its folder.
    pub source: PathBuf,
    /// `crypto_backend`: which implementation does the RSA work.
    pub crypto_backend: Backend,
    /// `offload_private_key_ops`.
    pub offload_private_key_ops: bool,
    /// `private_key_workers` (the CPU cores when not set).
    pub private_key_workers: usize,
    /// `private_key_queue`.
    pub private_key_queue: usize,
    /// `max_in_flight` (at least 1).
    pub max_in_flight: usize,
    /// `max_connections` per listener (at least 1).
    pub max_connections: usize,
    /// `header_timeout_ms`.
    pub header_timeout: Duration,
    /// `max_header_bytes` (1024 ..= [`super::MAX_HEADER_BYTES_LIMIT`]).
    pub max_header_bytes: usize,
    /// SHA-256 of the admin token (`None`: admin writes from 127.0.0.1 and ::1 only).
    pub admin_token_sha256: Option<[u8; 32]>,
    /// Empty: callers are not authenticated.
    pub callers: Vec<Caller>,
    /// `listen`: where internal services connect.
    pub listen: String,
    /// `admin_listen`.
    pub admin_listen: String,
    /// `threads` of the proxy service.
    pub threads: usize,
    /// `grace_period_seconds`.
    pub grace_period_seconds: u64,
    /// `upgrade_sock` (empty: the binary picks a private directory).
    pub upgrade_sock: PathBuf,
    /// `max_body_bytes` of a proxied request.
    pub max_body_bytes: usize,
    /// `client_body_timeout_ms`.
    pub client_body_timeout: Duration,
    /// The `platform` section.
    pub upstream: Upstream,
    /// The merchants by `customer_no`, every key loaded.
    pub merchants: HashMap<String, Arc<Merchant>>,
    /// The `notify` section (`None`: no notification listener).
    pub notify: Option<Notify>,
    /// What loading found worth saying but not refusing (logged at start and on reload).
    pub warnings: Vec<ConfigError>,
    /// Only validation makes a `Config` (the file loaders and [`Config::builder`]), so one in
    /// hand has passed every check: none made by hand with, say, no platform address.
    pub(crate) _validated: Validated,
}

/// The mark of a [`Config`] made by validation.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Validated;

/// An internal caller and its grants (`None`: all).
#[derive(Clone)]
pub struct Caller {
    /// `callers[].name`, for logs and metrics.
    pub name: String,
    /// SHA-256 of its bearer token.
    pub token_sha256: [u8; 32],
    /// The `customer_no`s it may use (`None`: all).
    pub merchants: Option<Vec<String>>,
    /// The `/api/…` paths it may call (`None`: all).
    pub endpoints: Option<Vec<String>>,
}

impl fmt::Debug for Caller {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Caller").field("name", &self.name).field("merchants", &self.merchants).field("endpoints", &self.endpoints).finish()
    }
}

impl Caller {
    /// Whether it may use this merchant (`customer_no`).
    pub fn may_use(&self, merchant: &str) -> bool {
        self.merchants.as_ref().is_none_or(|m| m.iter().any(|c| c == merchant))
    }
    /// Whether it may call this `/api/…` path.
    pub fn may_call(&self, path: &str) -> bool {
        self.endpoints.as_ref().is_none_or(|e| e.iter().any(|p| p == path))
    }
}

/// The validated notification listener.
#[derive(Debug, Clone)]
pub struct Notify {
    /// `notify.listen`.
    pub listen: String,
    /// `notify.ack`: the body the platform expects once a notification is handed on.
    pub ack: String,
    /// `notify.max_body_bytes`.
    pub max_body_bytes: usize,
    /// `notify.forward_timeout_ms`.
    pub forward_timeout: Duration,
    /// `notify.max_blocks`.
    pub max_blocks: usize,
    /// `notify.allow_from` (empty: from anywhere).
    pub allow_from: Vec<crate::cidr::Cidr>,
    /// `notify.trusted_proxies`.
    pub trusted_proxies: Vec<crate::cidr::Cidr>,
    /// The whole notification body must arrive within this (`client_body_timeout_ms`).
    pub body_timeout: Duration,
    /// `notify.routes`.
    pub routes: Vec<NotifyRoute>,
    /// `notify.inbox`: store before acknowledging (`None`: deliver before acknowledging).
    pub inbox: Option<InboxSettings>,
}

/// Where the inbox keeps notifications.
#[derive(Clone, PartialEq, Eq)]
pub enum InboxStore {
    /// `notify.inbox.sqlite_path`, resolved against the configuration file's folder.
    Sqlite(PathBuf),
    /// `notify.inbox.postgres_url` (never shown: it may carry a password).
    Postgres(String),
}

impl fmt::Debug for InboxStore {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            InboxStore::Sqlite(p) => write!(f, "Sqlite({})", p.display()),
            InboxStore::Postgres(_) => f.write_str("Postgres(<url not shown>)"),
        }
    }
}

/// The validated `notify.inbox`.
#[derive(Clone)]
pub struct InboxSettings {
    /// The store.
    pub store: InboxStore,
    /// The payload key (64 hex digits, checked); never shown.
    pub key: crate::crypto::Secret,
    /// The retry schedule.
    pub schedule: paysign_inbox::Schedule,
    /// `ordered`.
    pub ordered: bool,
    /// `retention_hours`.
    pub retention: Duration,
    /// `lease_ms`.
    pub lease: Duration,
    /// `deliverers`.
    pub deliverers: usize,
}

impl PartialEq for InboxSettings {
    fn eq(&self, o: &Self) -> bool {
        self.store == o.store
            && self.key.expose() == o.key.expose()
            && self.schedule == o.schedule
            && (self.ordered, self.retention, self.lease, self.deliverers) == (o.ordered, o.retention, o.lease, o.deliverers)
    }
}

impl fmt::Debug for InboxSettings {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("InboxSettings")
            .field("store", &self.store)
            .field("schedule", &self.schedule)
            .field("ordered", &self.ordered)
            .field("retention", &self.retention)
            .field("lease", &self.lease)
            .field("deliverers", &self.deliverers)
            .finish_non_exhaustive()
    }
}

impl InboxSettings {
    /// The store as `GET /config` shows it.
    pub fn describe(&self) -> serde_json::Value {
        use serde_json::json;
        let store = match &self.store {
            InboxStore::Sqlite(p) => json!({"sqlite_path": p.display().to_string()}),
            InboxStore::Postgres(_) => json!({"postgres_url": "(not shown)"}),
        };
        json!({
            "store": store,
            "retry_first_ms": self.schedule.first.as_millis() as u64,
            "retry_max_interval_ms": self.schedule.max_interval.as_millis() as u64,
            "give_up_after_secs": self.schedule.give_up_after.as_secs(),
            "ordered": self.ordered,
            "retention_hours": self.retention.as_secs() / 3600,
            "lease_ms": self.lease.as_millis() as u64,
            "deliverers": self.deliverers,
        })
    }
}

/// A validated notification route.
#[derive(Debug, Clone)]
pub struct NotifyRoute {
    /// The path the platform calls.
    pub path: String,
    /// The internal service that gets the verified plaintext.
    pub target: Target,
    /// The merchant whose keys open it (`None`: the envelope's `customerNo` decides).
    pub merchant: Option<Arc<Merchant>>,
}

impl Config {
    /// The merchant used when a request names none: the only one, if there is exactly one.
    pub fn default_merchant(&self) -> Option<&Arc<Merchant>> {
        if self.merchants.len() == 1 {
            self.merchants.values().next()
        } else {
            None
        }
    }
}

impl Config {
    /// The configuration in force as `GET /config` shows it: every setting, and of each secret
    /// only whether it is set (no key material, MD5 key, token, PIN, nor their hashes).
    pub fn describe(&self) -> serde_json::Value {
        use serde_json::json;
        let rsa = |bits: usize| format!("rsa-{bits}");
        let mut merchants: Vec<_> = self.merchants.values().collect();
        merchants.sort_by(|a, b| a.customer_no.cmp(&b.customer_no));
        let merchants: Vec<_> = merchants
            .into_iter()
            .map(|m| {
                let mut v = match &m.keys {
                    MerchantKeys::Md5 { platform_public, .. } => {
                        json!({"platform_public_key": rsa(platform_public.bits()), "md5_key": "(set)"})
                    }
                    MerchantKeys::Rsa { merchant_private, platform_public } => json!({
                        "platform_public_key": rsa(platform_public.bits()),
                        "merchant_private_key": format!("{} ({})", rsa(merchant_private.public().bits()), merchant_private.backend_name()),
                    }),
                };
                v["customer_no"] = json!(m.customer_no);
                v["profile"] = json!(m.profile().as_str());
                v["chunk_size"] = json!(m.chunk_size);
                if let Some(r) = &m.rollover {
                    v["next_platform_public_key"] = json!(rsa(r.next.bits()));
                    v["seal_with"] = json!(if r.seal_with_next { "next" } else { "current" });
                }
                v
            })
            .collect();
        let all = |v: &Option<Vec<String>>| v.clone().unwrap_or_else(|| vec!["*".into()]);
        let callers: Vec<_> =
            self.callers.iter().map(|c| json!({"name": c.name, "merchants": all(&c.merchants), "endpoints": all(&c.endpoints)})).collect();
        let up = &self.upstream;
        let text = |v: &[crate::cidr::Cidr]| v.iter().map(ToString::to_string).collect::<Vec<_>>();
        let notify = self.notify.as_ref().map(|n| {
            json!({
                "listen": n.listen,
                "ack": n.ack,
                "max_body_bytes": n.max_body_bytes,
                "forward_timeout_ms": n.forward_timeout.as_millis() as u64,
                "max_blocks": n.max_blocks,
                "allow_from": text(&n.allow_from),
                "trusted_proxies": text(&n.trusted_proxies),
                "routes": n.routes.iter().map(|r| json!({
                    "path": r.path,
                    "target": r.target.url(),
                    "merchant": r.merchant.as_ref().map(|m| m.customer_no.clone()),
                })).collect::<Vec<_>>(),
                "inbox": n.inbox.as_ref().map(InboxSettings::describe),
            })
        });
        json!({
            "source": self.source.display().to_string(),
            "listen": self.listen,
            "admin_listen": self.admin_listen,
            "admin_token": if self.admin_token_sha256.is_some() { "(set)" } else { "(none: 127.0.0.1 and ::1 only)" },
            "threads": self.threads,
            "grace_period_seconds": self.grace_period_seconds,
            // Unset, the binary picks the path at start (docs/configuration.md, `upgrade_sock`).
            "upgrade_sock": if self.upgrade_sock.as_os_str().is_empty() { "(default)".to_string() } else { self.upgrade_sock.display().to_string() },
            "max_body_bytes": self.max_body_bytes,
            "client_body_timeout_ms": self.client_body_timeout.as_millis() as u64,
            "crypto_backend": self.crypto_backend.as_str(),
            "offload_private_key_ops": self.offload_private_key_ops,
            "private_key_workers": self.private_key_workers,
            "private_key_queue": self.private_key_queue,
            "max_in_flight": self.max_in_flight,
            "max_connections": self.max_connections,
            "header_timeout_ms": self.header_timeout.as_millis() as u64,
            "max_header_bytes": self.max_header_bytes,
            "callers": callers,
            "platform": {
                "base_url": up.target.url(),
                "addresses": up.target.addrs.iter().map(|a| a.ip().to_string()).collect::<Vec<_>>(),
                "tls_verify": up.tls_verify,
                "ca_file": up.ca_file.as_ref().map(|p| p.display().to_string()),
                "client_cert_file": up.client_cert.as_ref().map(|(c, _)| c.display().to_string()),
                "client_key_file": up.client_cert.as_ref().map(|_| "(set)"),
                "egress_proxy": up.egress_proxy.map(|a| a.to_string()),
                "egress_proxy_uds": up.egress_proxy_uds.as_ref().map(|p| p.display().to_string()),
                "connect_timeout_ms": up.connect_timeout.as_millis() as u64,
                "read_timeout_ms": up.read_timeout.as_millis() as u64,
                "connect_retries": up.connect_retries,
                "dns_refresh_secs": up.dns_refresh.map(|d| d.as_secs()),
                "max_response_bytes": up.max_response_bytes,
                "pool_idle_timeout_secs": up.pool_idle_timeout.as_secs(),
            },
            "merchants": merchants,
            "notify": notify,
        })
    }
}

/// SHA-256, as stored for callers' and the admin's tokens.
pub fn sha256(bytes: &[u8]) -> [u8; 32] {
    use sha2::Digest;
    sha2::Sha256::digest(bytes).into()
}
