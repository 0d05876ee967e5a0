//! The configuration file's schema: what `serde` reads from YAML (unknown keys rejected), every
//! default a named function. Nothing here is checked: [`super::validate`] turns a
//! [`GatewayFile`] into the runtime [`super::Config`]. The builder fills the same types, so a
//! configuration written in code gets the file's defaults and the file's validation.

use std::path::PathBuf;

use serde::Deserialize;

use crate::crypto::Backend;

pub(crate) fn default_listen() -> String {
    "127.0.0.1:8080".into()
}
pub(crate) fn default_admin_listen() -> String {
    "127.0.0.1:9091".into()
}
pub(crate) fn default_threads() -> usize {
    2
}
pub(crate) fn default_grace() -> u64 {
    5
}
/// Business requests are a few hundred bytes; 64 KiB leaves room and bounds memory per request.
pub(crate) fn default_max_body() -> usize {
    64 * 1024
}
/// Empty: the binary picks a private directory (`$RUNTIME_DIRECTORY`, or `.paysign-run` next
/// to the configuration file), never a shared one such as /tmp.
pub(crate) fn default_upgrade_sock() -> PathBuf {
    PathBuf::new()
}
pub(crate) fn default_client_body_timeout() -> u64 {
    10_000
}
pub use paysign_settings::default_true;
pub(crate) fn default_connect_timeout() -> u64 {
    2_000
}
pub(crate) fn default_read_timeout() -> u64 {
    10_000
}
pub(crate) fn default_dns_refresh() -> u64 {
    60
}
pub(crate) fn default_connect_retries() -> u32 {
    1
}
/// A bindCard answer with its bank form is a few KiB; 1 MiB bounds a misbehaving platform.
pub(crate) fn default_max_response() -> usize {
    1024 * 1024
}
pub(crate) fn default_pool_idle() -> u64 {
    30
}

/// The gateway's configuration file (`conf/paysign.yaml`), as written.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct GatewayFile {
    /// Where internal services connect.
    #[serde(default = "default_listen")]
    pub listen: String,
    /// `/metrics`, `/healthz`, `/readyz`, `POST /-/reload`, `GET /config`.
    #[serde(default = "default_admin_listen")]
    pub admin_listen: String,
    /// Worker threads of the proxy service.
    #[serde(default = "default_threads")]
    pub threads: usize,
    /// Seconds to finish in-flight requests on SIGTERM.
    #[serde(default = "default_grace")]
    pub grace_period_seconds: u64,
    /// Where a new process (`paysign run --upgrade`) receives the listening sockets on a
    /// graceful upgrade (SIGQUIT to the old one).
    #[serde(default = "default_upgrade_sock")]
    pub upgrade_sock: PathBuf,
    /// Larger request bodies get 413.
    #[serde(default = "default_max_body")]
    pub max_body_bytes: usize,
    /// The whole request body must arrive within this time (slow clients get 408).
    #[serde(default = "default_client_body_timeout")]
    pub client_body_timeout_ms: u64,
    /// Accept RSA keys under 2048 bits (tests with legacy keys only).
    #[serde(default)]
    pub allow_weak_keys: bool,
    /// `aws-lc` (default) or `rsa` (pure Rust): which implementation does the RSA work.
    #[serde(default)]
    pub crypto_backend: Backend,
    /// Run private-key operations on the executor's worker threads (default) instead of the event loop.
    #[serde(default = "default_true")]
    pub offload_private_key_ops: bool,
    /// At most this many private-key operations run at once (default: the CPU cores). They
    /// run at a lower priority (nice +10), so cheap requests still get a core at once.
    pub private_key_workers: Option<usize>,
    /// At most this many more private-key operations wait for a worker; beyond that, requests
    /// are shed at once with 503 `not-sent` (notifications: 503, the platform retries).
    #[serde(default = "default_private_key_queue")]
    pub private_key_queue: usize,
    /// Open connections per listener (proxy, notify; admin: at most 64); beyond, new ones are
    /// closed at once.
    #[serde(default = "default_max_connections")]
    pub max_connections: usize,
    /// A request head (and, on an idle kept-alive connection, the next one) must arrive within
    /// this time on every listener.
    #[serde(default = "default_header_timeout")]
    pub header_timeout_ms: u64,
    /// A request head (request line and headers) may be at most this many bytes on every
    /// listener; beyond, 431 and the connection closes.
    #[serde(default = "default_max_header_bytes")]
    pub max_header_bytes: usize,
    /// At most this many proxied requests are sealed or at the platform at once; beyond that,
    /// 503 `not-sent` with `Retry-After` at once.
    #[serde(default = "default_max_in_flight")]
    pub max_in_flight: usize,
    /// `POST /-/reload` and `GET /config` need `Authorization: Bearer <the token in this file>`;
    /// required when `admin_listen` is not loopback; without it, they are accepted only from
    /// 127.0.0.1 and ::1.
    pub admin_token_file: Option<PathBuf>,
    /// Internal callers and what each may do; when present, every proxied request needs
    /// `Authorization: Bearer <token>` of one of them (401 otherwise, 403 outside its grants).
    #[serde(default)]
    pub callers: Vec<CallerFile>,
    /// Where and how to reach the platform.
    pub platform: PlatformFile,
    /// At least one.
    pub merchants: Vec<MerchantFile>,
    /// The notification listener (the platform calling `bindNotifyUrl`); off when absent.
    pub notify: Option<NotifyFile>,
    /// The PKCS#11 module and PIN for merchant keys named by `pkcs11:` URIs.
    pub pkcs11: Option<Pkcs11File>,
}

pub(crate) fn default_private_key_queue() -> usize {
    64
}
pub(crate) fn default_max_connections() -> usize {
    1024
}
pub(crate) fn default_header_timeout() -> u64 {
    10_000
}
/// Ample for paysign's callers (a head with a bearer token is ~0.5 KiB), small enough that
/// 1,024 connections with unfinished heads hold ~16 MiB (pingora's own bound is 1 MiB each).
pub(crate) fn default_max_header_bytes() -> usize {
    8192
}
/// The largest `max_header_bytes`: pingora refuses larger heads itself.
pub const MAX_HEADER_BYTES_LIMIT: usize = 1_048_575;
pub(crate) fn default_max_in_flight() -> usize {
    256
}
pub(crate) fn default_max_blocks() -> usize {
    16
}

/// `callers[]`: an internal caller and what it may do.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CallerFile {
    /// A name for logs and metrics (`paysign_caller_refusals_total{caller}`).
    pub name: String,
    /// SHA-256 of the caller's bearer token, hex (`printf %s "$TOKEN" | sha256sum`); the
    /// token itself is never stored.
    pub token_sha256: String,
    /// The merchants (`customerNo`) it may use; `["*"]` for all.
    pub merchants: Vec<String>,
    /// The paths it may call (e.g. `/api/vborder/shortcut/bindCard/create`); `["*"]` for all.
    pub endpoints: Vec<String>,
}

pub(crate) fn default_notify_listen() -> String {
    "127.0.0.1:8081".into()
}
pub(crate) fn default_ack() -> String {
    "SUCCESS".into()
}
pub(crate) fn default_forward_timeout() -> u64 {
    5_000
}

/// `notify`: the notification listener.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NotifyFile {
    /// Faces the platform, so it is its own listener.
    #[serde(default = "default_notify_listen")]
    pub listen: String,
    /// The body the platform expects once a notification has been handed on.
    #[serde(default = "default_ack")]
    pub ack: String,
    #[serde(default = "default_max_body")]
    /// Larger notification bodies get 413.
    pub max_body_bytes: usize,
    /// How long the internal target may take to answer.
    #[serde(default = "default_forward_timeout")]
    pub forward_timeout_ms: u64,
    /// A notification whose `reqmsg` holds more RSA blocks is refused before any decryption.
    #[serde(default = "default_max_blocks")]
    pub max_blocks: usize,
    /// Accept notifications only from these addresses/networks (the platform's published
    /// callback addresses); empty: from anywhere.
    #[serde(default)]
    pub allow_from: Vec<String>,
    /// Proxies (e.g. the ingress) whose `X-Forwarded-For` is believed: the source is then the
    /// last address in it that is not itself a trusted proxy.
    #[serde(default)]
    pub trusted_proxies: Vec<String>,
    /// At least one.
    pub routes: Vec<NotifyRouteFile>,
    /// Store each verified notification durably before acknowledging it, then deliver it from
    /// there with retries for days; absent: hand it to the target before acknowledging.
    #[serde(default)]
    pub inbox: Option<InboxFile>,
}

pub(crate) fn default_retry_first_ms() -> u64 {
    5_000
}
pub(crate) fn default_retry_max_interval_ms() -> u64 {
    3_600_000
}
pub(crate) fn default_give_up_after_secs() -> u64 {
    96 * 3600
}
pub(crate) fn default_retention_hours() -> u64 {
    168
}
pub(crate) fn default_lease_ms() -> u64 {
    60_000
}
pub(crate) fn default_deliverers() -> usize {
    8
}

/// `notify.inbox`: the durable inbox (docs/flows.md, "The inbox").
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct InboxFile {
    /// The embedded store: one SQLite file (created with its folder). Set this or
    /// `postgres_url`.
    pub sqlite_path: Option<PathBuf>,
    /// A PostgreSQL database shared by replicas (`postgresql://user@host/db`); never logged.
    pub postgres_url: Option<String>,
    /// `postgres_url` from this environment variable instead (it carries a password).
    pub postgres_url_env: Option<String>,
    /// The AES-256 key (64 hex digits) that seals stored payloads: from a file (mode 0600)…
    pub key_file: Option<PathBuf>,
    /// …or from this environment variable.
    pub key_env: Option<String>,
    /// The first retry after a failed delivery; it doubles from there.
    #[serde(default = "default_retry_first_ms")]
    pub retry_first_ms: u64,
    /// The longest wait between two attempts.
    #[serde(default = "default_retry_max_interval_ms")]
    pub retry_max_interval_ms: u64,
    /// Dead-lettered once this long after it was received (96 hours by default: longer than
    /// every platform's own retries).
    #[serde(default = "default_give_up_after_secs")]
    pub give_up_after_secs: u64,
    /// Deliver notifications of one `orderNo` in the order received, each after the previous
    /// one was delivered or dead-lettered.
    #[serde(default)]
    pub ordered: bool,
    /// Delivered notifications are purged this long after delivery.
    #[serde(default = "default_retention_hours")]
    pub retention_hours: u64,
    /// How long one deliverer owns a notification it is delivering; after that (a replica
    /// killed mid-delivery) another may take it.
    #[serde(default = "default_lease_ms")]
    pub lease_ms: u64,
    /// Deliveries in flight at once, per process.
    #[serde(default = "default_deliverers")]
    pub deliverers: usize,
}

impl Default for InboxFile {
    /// The defaults, with no store and no key (refused until both are set).
    fn default() -> Self {
        InboxFile {
            sqlite_path: None,
            postgres_url: None,
            postgres_url_env: None,
            key_file: None,
            key_env: None,
            retry_first_ms: default_retry_first_ms(),
            retry_max_interval_ms: default_retry_max_interval_ms(),
            give_up_after_secs: default_give_up_after_secs(),
            ordered: false,
            retention_hours: default_retention_hours(),
            lease_ms: default_lease_ms(),
            deliverers: default_deliverers(),
        }
    }
}

/// `notify.routes[]`.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NotifyRouteFile {
    /// The path the platform calls, e.g. `/notify/bindcard`.
    pub path: String,
    /// The internal service that receives the verified plaintext.
    pub target: String,
    /// The merchant whose keys open it; when absent, the envelope's `customerNo` decides.
    pub merchant: Option<String>,
}

/// `platform`: where and how to reach the platform.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PlatformFile {
    /// `https://host[:port][/prefix]`; the prefix goes before every request path.
    pub base_url: String,
    #[serde(default = "default_true")]
    /// Verify the platform's certificate and host name.
    pub tls_verify: bool,
    /// A PEM CA bundle for the platform's certificate.
    pub ca_file: Option<PathBuf>,
    /// Client certificate (PEM chain) and key for mutual TLS with the platform.
    pub client_cert_file: Option<PathBuf>,
    /// The key of `client_cert_file`.
    pub client_key_file: Option<PathBuf>,
    /// Leave through an HTTP CONNECT egress proxy (platforms allow-list merchant IPs; the
    /// proxy owns the fixed IP and resolves the platform's name): `host:port` on TCP…
    pub egress_proxy: Option<String>,
    /// …or reached on this Unix socket.
    pub egress_proxy_uds: Option<PathBuf>,
    #[serde(default = "default_connect_timeout")]
    /// TCP and TLS connection set-up.
    pub connect_timeout_ms: u64,
    /// From the request being sent to the platform's full answer.
    #[serde(default = "default_read_timeout")]
    pub read_timeout_ms: u64,
    /// Extra rounds over the platform's addresses when connecting fails (nothing sent yet).
    #[serde(default = "default_connect_retries")]
    pub connect_retries: u32,
    /// Look the base URL's host name up again this often (0: only at start-up and reload).
    #[serde(default = "default_dns_refresh")]
    pub dns_refresh_secs: u64,
    /// Fixed IP addresses for the base URL's host name, tried in this order, never looked up
    /// (platforms that publish fixed addresses); the name still goes into SNI and `Host`.
    #[serde(default)]
    pub addresses: Vec<String>,
    /// Larger answers are refused (502).
    #[serde(default = "default_max_response")]
    pub max_response_bytes: usize,
    /// An idle connection to the platform older than this is closed, not reused.
    #[serde(default = "default_pool_idle")]
    pub pool_idle_timeout_secs: u64,
}

/// `merchants[]`: a merchant and where its keys are.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MerchantFile {
    /// The platform's merchant number (1 to 32 letters or digits).
    pub customer_no: String,
    /// `md5` or `rsa`.
    pub profile: ProfileName,
    /// The platform's RSA public key (both profiles).
    pub platform_public_key: Option<PathBuf>,
    /// `md5` only: the file holding the MD5 key (or `md5_key_env`).
    pub md5_key_file: Option<PathBuf>,
    /// `md5` only: the environment variable holding the MD5 key.
    pub md5_key_env: Option<String>,
    /// `rsa` only: our private key, a PEM file or a `pkcs11:` URI.
    pub merchant_private_key: Option<PathBuf>,
    /// Plaintext bytes per RSA block (default: the key's size - 11).
    pub chunk_size: Option<usize>,
    /// The platform's announced next public key: during the overlap, answers and
    /// notifications verify under either key.
    pub next_platform_public_key: Option<PathBuf>,
    /// Which platform key requests are encrypted with (`next` once the platform has switched).
    #[serde(default)]
    pub seal_with: SealWith,
}

/// Where merchant keys in an HSM are reached: the module (shared library) and the PIN, from a
/// file or an environment variable — never written in this file.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Pkcs11File {
    /// The PKCS#11 module (shared library).
    pub module: PathBuf,
    /// A file holding the token's user PIN (or `pin_env`).
    pub pin_file: Option<PathBuf>,
    /// The environment variable holding the PIN.
    pub pin_env: Option<String>,
}

/// `merchants[].seal_with`: which platform key requests are encrypted with.
#[derive(Debug, Clone, Copy, Default, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum SealWith {
    /// The platform's current key.
    #[default]
    Current,
    /// `next_platform_public_key`, once the platform has switched.
    Next,
}

pub use paysign_settings::ProfileName;

// ---------------------------------------------------------------- the same defaults in code

impl Default for GatewayFile {
    /// Every setting at the value a file that leaves it out gets; `platform.base_url` and
    /// `merchants` are empty, which validation refuses until they are set.
    fn default() -> Self {
        GatewayFile {
            listen: default_listen(),
            admin_listen: default_admin_listen(),
            threads: default_threads(),
            grace_period_seconds: default_grace(),
            upgrade_sock: default_upgrade_sock(),
            max_body_bytes: default_max_body(),
            client_body_timeout_ms: default_client_body_timeout(),
            allow_weak_keys: false,
            crypto_backend: Backend::default(),
            offload_private_key_ops: default_true(),
            private_key_workers: None,
            private_key_queue: default_private_key_queue(),
            max_connections: default_max_connections(),
            header_timeout_ms: default_header_timeout(),
            max_header_bytes: default_max_header_bytes(),
            max_in_flight: default_max_in_flight(),
            admin_token_file: None,
            callers: Vec::new(),
            platform: PlatformFile::default(),
            merchants: Vec::new(),
            notify: None,
            pkcs11: None,
        }
    }
}

impl Default for PlatformFile {
    /// The file's defaults; `base_url` is empty (refused until set).
    fn default() -> Self {
        PlatformFile {
            base_url: String::new(),
            tls_verify: default_true(),
            ca_file: None,
            client_cert_file: None,
            client_key_file: None,
            egress_proxy: None,
            egress_proxy_uds: None,
            connect_timeout_ms: default_connect_timeout(),
            read_timeout_ms: default_read_timeout(),
            connect_retries: default_connect_retries(),
            dns_refresh_secs: default_dns_refresh(),
            addresses: Vec::new(),
            max_response_bytes: default_max_response(),
            pool_idle_timeout_secs: default_pool_idle(),
        }
    }
}

impl Default for NotifyFile {
    /// The file's defaults; no route (refused until one is added).
    fn default() -> Self {
        NotifyFile {
            listen: default_notify_listen(),
            ack: default_ack(),
            max_body_bytes: default_max_body(),
            forward_timeout_ms: default_forward_timeout(),
            max_blocks: default_max_blocks(),
            allow_from: Vec::new(),
            trusted_proxies: Vec::new(),
            routes: Vec::new(),
            inbox: None,
        }
    }
}

impl MerchantFile {
    /// A merchant of profile `md5`: the platform's public key and the file holding the MD5 key.
    pub fn md5(customer_no: impl Into<String>, platform_public_key: impl Into<PathBuf>, md5_key_file: impl Into<PathBuf>) -> Self {
        MerchantFile {
            md5_key_file: Some(md5_key_file.into()),
            ..MerchantFile::new(customer_no.into(), ProfileName::Md5, platform_public_key.into())
        }
    }

    /// A merchant of profile `rsa`: the platform's public key and the merchant's private key
    /// (a PEM file, or a `pkcs11:` URI with [`GatewayFile::pkcs11`] set).
    pub fn rsa(customer_no: impl Into<String>, platform_public_key: impl Into<PathBuf>, merchant_private_key: impl Into<PathBuf>) -> Self {
        MerchantFile {
            merchant_private_key: Some(merchant_private_key.into()),
            ..MerchantFile::new(customer_no.into(), ProfileName::Rsa, platform_public_key.into())
        }
    }

    /// `md5_key_env` instead of `md5_key_file`: the MD5 key from this environment variable.
    pub fn md5_key_env(mut self, var: impl Into<String>) -> Self {
        (self.md5_key_file, self.md5_key_env) = (None, Some(var.into()));
        self
    }

    /// `chunk_size`: plaintext bytes per RSA block.
    pub fn chunk_size(mut self, bytes: usize) -> Self {
        self.chunk_size = Some(bytes);
        self
    }

    /// `next_platform_public_key` and `seal_with`: the platform's announced next key, and
    /// whether requests are already sealed with it.
    pub fn rollover(mut self, next_platform_public_key: impl Into<PathBuf>, seal_with: SealWith) -> Self {
        (self.next_platform_public_key, self.seal_with) = (Some(next_platform_public_key.into()), seal_with);
        self
    }

    fn new(customer_no: String, profile: ProfileName, platform_public_key: PathBuf) -> Self {
        MerchantFile {
            customer_no,
            profile,
            platform_public_key: Some(platform_public_key),
            md5_key_file: None,
            md5_key_env: None,
            merchant_private_key: None,
            chunk_size: None,
            next_platform_public_key: None,
            seal_with: SealWith::default(),
        }
    }
}

impl CallerFile {
    /// A caller: its name, the SHA-256 of its token (hex), the merchants and `/api/…` paths it
    /// may use (`["*"]`: all).
    pub fn new<M: Into<String>, E: Into<String>>(
        name: impl Into<String>,
        token_sha256: impl Into<String>,
        merchants: impl IntoIterator<Item = M>,
        endpoints: impl IntoIterator<Item = E>,
    ) -> Self {
        CallerFile {
            name: name.into(),
            token_sha256: token_sha256.into(),
            merchants: merchants.into_iter().map(Into::into).collect(),
            endpoints: endpoints.into_iter().map(Into::into).collect(),
        }
    }
}

impl Pkcs11File {
    /// The module, with the PIN from this environment variable.
    pub fn with_pin_env(module: impl Into<PathBuf>, var: impl Into<String>) -> Self {
        Pkcs11File { module: module.into(), pin_file: None, pin_env: Some(var.into()) }
    }

    /// The module, with the PIN from this file.
    pub fn with_pin_file(module: impl Into<PathBuf>, file: impl Into<PathBuf>) -> Self {
        Pkcs11File { module: module.into(), pin_file: Some(file.into()), pin_env: None }
    }
}

impl NotifyRouteFile {
    /// Pinned to one merchant's keys (`merchant`).
    pub fn merchant(mut self, customer_no: impl Into<String>) -> Self {
        self.merchant = Some(customer_no.into());
        self
    }

    /// A route: the path the platform calls and the internal URL that gets the plaintext.
    pub fn new(path: impl Into<String>, target: impl Into<String>) -> Self {
        NotifyRouteFile { path: path.into(), target: target.into(), merchant: None }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The code's defaults are the file's: a file with only the required keys parses to them.
    #[test]
    fn defaults_in_code_are_the_files() {
        let yaml = "platform: {base_url: 'https://p.example'}\nmerchants: []\nnotify: {routes: []}\n";
        let parsed: GatewayFile = serde_yaml::from_str(yaml).unwrap();
        let mut code = GatewayFile { notify: Some(NotifyFile::default()), ..GatewayFile::default() };
        code.platform.base_url = "https://p.example".into();
        assert_eq!(parsed, code);
    }
}
