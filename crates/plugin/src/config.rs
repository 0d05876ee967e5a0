//! Configuration: the on-disk YAML schema (serde, unknown keys rejected) and its validation
//! into the runtime [`Config`] with every key file loaded and parsed once. Every error names
//! the setting and, where one is involved, the file.

use std::collections::HashMap;
use std::fmt;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use serde::Deserialize;

use crate::crypto::keys::{self, KeyError};
use crate::crypto::{segmented, Backend, PrivateKey, PublicKey, Secret};
use crate::http_client::{self, Target};
use crate::pkcs11;
use crate::protocol::{Merchant, MerchantKeys, Rollover};

/// A configuration problem: which file, which setting, what is wrong.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConfigError {
    pub config: PathBuf,
    pub setting: String,
    pub file: Option<PathBuf>,
    pub message: String,
}

impl fmt::Display for ConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}", self.config.display(), self.setting)?;
        if let Some(file) = &self.file {
            write!(f, " ({})", file.display())?;
        }
        write!(f, ": {}", self.message)
    }
}

impl std::error::Error for ConfigError {}

// ---------------------------------------------------------------- on-disk schema: gateway

fn default_listen() -> String {
    "127.0.0.1:8080".into()
}
fn default_admin_listen() -> String {
    "127.0.0.1:9091".into()
}
fn default_threads() -> usize {
    2
}
fn default_grace() -> u64 {
    5
}
/// Business requests are a few hundred bytes; 64 KiB leaves room and bounds memory per request.
fn default_max_body() -> usize {
    64 * 1024
}
/// Empty: the binary picks a private directory (`$RUNTIME_DIRECTORY`, or `.paysign-run` next
/// to the configuration file), never a shared one such as /tmp.
fn default_upgrade_sock() -> PathBuf {
    PathBuf::new()
}
fn default_client_body_timeout() -> u64 {
    10_000
}
pub fn default_true() -> bool {
    true
}
fn default_connect_timeout() -> u64 {
    2_000
}
fn default_read_timeout() -> u64 {
    10_000
}
fn default_dns_refresh() -> u64 {
    60
}
fn default_connect_retries() -> u32 {
    1
}
/// A bindCard answer with its bank form is a few KiB; 1 MiB bounds a misbehaving platform.
fn default_max_response() -> usize {
    1024 * 1024
}
fn default_pool_idle() -> u64 {
    30
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct GatewayFile {
    #[serde(default = "default_listen")]
    pub listen: String,
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
    pub platform: PlatformFile,
    pub merchants: Vec<MerchantFile>,
    /// The notification listener (the platform calling `bindNotifyUrl`); off when absent.
    pub notify: Option<NotifyFile>,
    /// The PKCS#11 module and PIN for merchant keys named by `pkcs11:` URIs.
    pub pkcs11: Option<Pkcs11File>,
}

fn default_private_key_queue() -> usize {
    64
}
fn default_max_connections() -> usize {
    1024
}
fn default_header_timeout() -> u64 {
    10_000
}
/// Ample for paysign's callers (a head with a bearer token is ~0.5 KiB), small enough that
/// 1,024 connections with unfinished heads hold ~16 MiB (pingora's own bound is 1 MiB each).
fn default_max_header_bytes() -> usize {
    8192
}
/// pingora refuses larger heads itself.
pub const MAX_HEADER_BYTES_LIMIT: usize = 1_048_575;
fn default_max_in_flight() -> usize {
    256
}
fn default_max_blocks() -> usize {
    16
}

#[derive(Debug, Deserialize)]
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

fn default_notify_listen() -> String {
    "127.0.0.1:8081".into()
}
fn default_ack() -> String {
    "SUCCESS".into()
}
fn default_forward_timeout() -> u64 {
    5_000
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NotifyFile {
    /// Faces the platform, so it is its own listener.
    #[serde(default = "default_notify_listen")]
    pub listen: String,
    /// The body the platform expects once a notification has been handed on.
    #[serde(default = "default_ack")]
    pub ack: String,
    #[serde(default = "default_max_body")]
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
    pub routes: Vec<NotifyRouteFile>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NotifyRouteFile {
    /// The path the platform calls, e.g. `/notify/bindcard`.
    pub path: String,
    /// The internal service that receives the verified plaintext.
    pub target: String,
    /// The merchant whose keys open it; when absent, the envelope's `customerNo` decides.
    pub merchant: Option<String>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PlatformFile {
    pub base_url: String,
    #[serde(default = "default_true")]
    pub tls_verify: bool,
    pub ca_file: Option<PathBuf>,
    /// Client certificate (PEM chain) and key for mutual TLS with the platform.
    pub client_cert_file: Option<PathBuf>,
    pub client_key_file: Option<PathBuf>,
    /// Leave through an HTTP CONNECT egress proxy (platforms allow-list merchant IPs; the
    /// proxy owns the fixed IP and resolves the platform's name): `host:port` on TCP…
    pub egress_proxy: Option<String>,
    /// …or reached on this Unix socket.
    pub egress_proxy_uds: Option<PathBuf>,
    #[serde(default = "default_connect_timeout")]
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
    #[serde(default = "default_max_response")]
    pub max_response_bytes: usize,
    #[serde(default = "default_pool_idle")]
    pub pool_idle_timeout_secs: u64,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MerchantFile {
    pub customer_no: String,
    pub profile: ProfileName,
    pub platform_public_key: Option<PathBuf>,
    pub md5_key_file: Option<PathBuf>,
    pub md5_key_env: Option<String>,
    pub merchant_private_key: Option<PathBuf>,
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
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Pkcs11File {
    pub module: PathBuf,
    pub pin_file: Option<PathBuf>,
    pub pin_env: Option<String>,
}

#[derive(Debug, Clone, Copy, Default, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum SealWith {
    #[default]
    Current,
    Next,
}

#[derive(Debug, Clone, Copy, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum ProfileName {
    Md5,
    Rsa,
}

// ---------------------------------------------------------------- runtime config

/// Where and how to reach the platform.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Upstream {
    /// The base URL; its path is a prefix put before every request path.
    pub target: Target,
    pub tls_verify: bool,
    pub ca_file: Option<PathBuf>,
    /// (certificate chain, key) presented to the platform (mutual TLS).
    pub client_cert: Option<(PathBuf, PathBuf)>,
    /// Unix socket of an HTTP CONNECT egress proxy.
    pub egress_proxy_uds: Option<PathBuf>,
    /// TCP address of an HTTP CONNECT egress proxy (resolved at start-up).
    pub egress_proxy: Option<std::net::SocketAddr>,
    pub connect_timeout: Duration,
    pub read_timeout: Duration,
    pub connect_retries: u32,
    /// How often the platform's name is looked up again (`None`: fixed addresses).
    pub dns_refresh: Option<Duration>,
    pub max_response_bytes: usize,
    pub pool_idle_timeout: Duration,
}

#[derive(Debug, Clone)]
pub struct Config {
    pub source: PathBuf,
    pub crypto_backend: Backend,
    pub offload_private_key_ops: bool,
    pub private_key_workers: usize,
    pub private_key_queue: usize,
    pub max_in_flight: usize,
    pub max_connections: usize,
    pub header_timeout: Duration,
    pub max_header_bytes: usize,
    /// SHA-256 of the admin token (`None`: admin writes from 127.0.0.1 and ::1 only).
    pub admin_token_sha256: Option<[u8; 32]>,
    /// Empty: callers are not authenticated.
    pub callers: Vec<Caller>,
    pub listen: String,
    pub admin_listen: String,
    pub threads: usize,
    pub grace_period_seconds: u64,
    pub upgrade_sock: PathBuf,
    pub max_body_bytes: usize,
    pub client_body_timeout: Duration,
    pub upstream: Upstream,
    pub merchants: HashMap<String, Arc<Merchant>>,
    pub notify: Option<Notify>,
    /// What loading found worth saying but not refusing (logged at start and on reload).
    pub warnings: Vec<ConfigError>,
}

/// An internal caller and its grants (`None`: all).
#[derive(Clone)]
pub struct Caller {
    pub name: String,
    pub token_sha256: [u8; 32],
    pub merchants: Option<Vec<String>>,
    pub endpoints: Option<Vec<String>>,
}

impl fmt::Debug for Caller {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Caller").field("name", &self.name).field("merchants", &self.merchants).field("endpoints", &self.endpoints).finish()
    }
}

impl Caller {
    pub fn may_use(&self, merchant: &str) -> bool {
        self.merchants.as_ref().is_none_or(|m| m.iter().any(|c| c == merchant))
    }
    pub fn may_call(&self, path: &str) -> bool {
        self.endpoints.as_ref().is_none_or(|e| e.iter().any(|p| p == path))
    }
}

/// The validated notification listener.
#[derive(Debug, Clone)]
pub struct Notify {
    pub listen: String,
    pub ack: String,
    pub max_body_bytes: usize,
    pub forward_timeout: Duration,
    pub max_blocks: usize,
    pub allow_from: Vec<crate::cidr::Cidr>,
    pub trusted_proxies: Vec<crate::cidr::Cidr>,
    /// The whole notification body must arrive within this (`client_body_timeout_ms`).
    pub body_timeout: Duration,
    pub routes: Vec<NotifyRoute>,
}

#[derive(Debug, Clone)]
pub struct NotifyRoute {
    pub path: String,
    pub target: Target,
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

// ---------------------------------------------------------------- loading

/// Reading the files a configuration names (keys, certificates), relative to the
/// configuration file, with every error naming the setting and the file. Public for the
/// sandbox's configuration, which names keys the same way.
pub struct Ctx<'a> {
    config: &'a Path,
    dir: PathBuf,
    allow_weak: bool,
    backend: Backend,
    /// Look host names up (false only for fuzzing: no DNS query may leave).
    resolve: bool,
    /// `paysign check`: a name that does not resolve now, and a key in a PKCS#11 token, are
    /// reported as warnings instead of being required (validation needs neither DNS nor the HSM).
    checking: bool,
    warnings: std::cell::RefCell<Vec<ConfigError>>,
}

impl Ctx<'_> {
    pub fn err(&self, setting: impl Into<String>, file: Option<&Path>, message: impl Into<String>) -> ConfigError {
        ConfigError {
            config: self.config.to_path_buf(),
            setting: setting.into(),
            file: file.map(Path::to_path_buf),
            message: message.into(),
        }
    }

    /// Something worth saying that does not make the configuration unusable.
    pub fn warn(&self, setting: impl Into<String>, file: Option<&Path>, message: impl Into<String>) {
        self.warnings.borrow_mut().push(self.err(setting, file, message));
    }

    /// The warnings so far (for the sandbox's configuration, which shares this context).
    pub fn take_warnings(&self) -> Vec<ConfigError> {
        std::mem::take(&mut self.warnings.borrow_mut())
    }

    /// A URL setting. Its host name is looked up unless `lookup` is false (fixed addresses) or
    /// the configuration is being validated offline; `paysign check` tries the lookup and
    /// reports a failure as a warning (the name must resolve when paysign starts).
    pub fn url(&self, setting: &str, url: &str, lookup: bool) -> Result<Target, ConfigError> {
        let target = http_client::parse_url_with(url, self.resolve && lookup).map_err(|m| self.err(setting, None, m))?;
        if self.checking && lookup && !target.is_ip_literal() {
            if let Err(e) = crate::addresses::system_lookup(&target.host, target.port) {
                self.warn(setting, None, format!("cannot resolve {} now ({e}); it must resolve when paysign starts", target.host));
            }
        }
        Ok(target)
    }

    /// Reads a file holding a secret (a private key, the MD5 key, a token, a PIN), refusing one
    /// that others could replace and warning about one that others can read (as ssh does).
    pub fn read_secret(&self, setting: &str, p: &Path) -> Result<(PathBuf, String), ConfigError> {
        let path = self.resolve(p);
        self.secret_mode(setting, &path)?;
        self.read(setting, p)
    }

    fn secret_mode(&self, setting: &str, path: &Path) -> Result<(), ConfigError> {
        use std::os::unix::fs::PermissionsExt;
        // A missing file is reported by the read that follows.
        let Ok(meta) = std::fs::metadata(path) else { return Ok(()) };
        let mode = meta.permissions().mode() & 0o777;
        if mode & 0o022 != 0 {
            return Err(self.err(
                setting,
                Some(path),
                format!("is writable by group or others (mode {mode:04o}): anyone who can write it can replace the secret; chmod go-w (0600 or 0400)"),
            ));
        }
        if mode & 0o004 != 0 {
            self.warn(setting, Some(path), format!("is readable by others (mode {mode:04o}); chmod o-r (0600 or 0400)"));
        }
        Ok(())
    }

    pub fn resolve(&self, p: &Path) -> PathBuf {
        if p.is_absolute() {
            p.to_path_buf()
        } else {
            self.dir.join(p)
        }
    }

    pub fn read(&self, setting: &str, p: &Path) -> Result<(PathBuf, String), ConfigError> {
        let path = self.resolve(p);
        match std::fs::read_to_string(&path) {
            Ok(text) => Ok((path, text)),
            Err(e) => Err(self.err(setting, Some(&path), format!("cannot read file: {e}"))),
        }
    }

    pub fn public_key(&self, setting: &str, p: &Option<PathBuf>) -> Result<Arc<PublicKey>, ConfigError> {
        let p = p.as_ref().ok_or_else(|| self.err(setting, None, "is required for this profile"))?;
        let (path, text) = self.read(setting, p)?;
        keys::load_public(&text, self.allow_weak)
            .map(|k| Arc::new(k.with_backend(self.backend)))
            .map_err(|e: KeyError| self.err(setting, Some(&path), e.to_string()))
    }

    pub fn private_key(&self, setting: &str, p: &Option<PathBuf>) -> Result<Arc<PrivateKey>, ConfigError> {
        let p = p.as_ref().ok_or_else(|| self.err(setting, None, "is required for this profile"))?;
        let (path, text) = self.read_secret(setting, p)?;
        keys::load_private(&text, self.allow_weak)
            .map(|k| Arc::new(k.with_backend(self.backend)))
            .map_err(|e: KeyError| self.err(setting, Some(&path), e.to_string()))
    }

    pub fn md5_key(&self, at: &str, file: &Option<PathBuf>, env: &Option<String>) -> Result<Secret, ConfigError> {
        self.secret(&format!("{at}.md5_key"), "an md5 merchant", "the MD5 key", file, env)
    }

    /// A secret read from `<setting>_file` or `<setting>_env` (exactly one of them), without
    /// the file's trailing newline; never empty. `who` needs it, `what` it is (for messages).
    pub fn secret(
        &self,
        setting: &str,
        who: &str,
        what: &str,
        file: &Option<PathBuf>,
        env: &Option<String>,
    ) -> Result<Secret, ConfigError> {
        let (file_setting, env_setting) = (format!("{setting}_file"), format!("{setting}_env"));
        let short = |s: &str| s.rsplit('.').next().unwrap_or(s).to_string();
        let (f, e) = (short(&file_setting), short(&env_setting));
        let raw = match (file, env) {
            (Some(_), Some(_)) => return Err(self.err(file_setting, None, format!("set {f} or {e}, not both"))),
            (None, None) => return Err(self.err(file_setting, None, format!("{who} needs {f} or {e}"))),
            (Some(p), None) => self.read_secret(&file_setting, p)?.1,
            (None, Some(var)) => std::env::var(var)
                .map_err(|_| self.err(env_setting, None, format!("environment variable {var} is not set or not UTF-8")))?,
        };
        // Files usually end with a newline that is not part of the secret.
        let value = raw.trim_end_matches(['\r', '\n']).to_string();
        if value.is_empty() {
            return Err(self.err(setting, file.as_deref().map(|p| self.resolve(p)).as_deref(), format!("{what} is empty")));
        }
        Ok(Secret::new(value))
    }

    /// Two files that go together (a certificate and its key): both existing, or neither set.
    pub fn file_pair(
        &self,
        (a_name, a): (&str, &Option<PathBuf>),
        (b_name, b): (&str, &Option<PathBuf>),
    ) -> Result<Option<(PathBuf, PathBuf)>, ConfigError> {
        match (a, b) {
            (Some(a), Some(b)) => {
                let (a, b) = (self.resolve(a), self.resolve(b));
                for (setting, f) in [(a_name, &a), (b_name, &b)] {
                    if !f.is_file() {
                        return Err(self.err(setting, Some(f), "file does not exist"));
                    }
                }
                // The second of the pair is the private key.
                self.secret_mode(b_name, &b)?;
                Ok(Some((a, b)))
            }
            (None, None) => Ok(None),
            _ => Err(self.err(a_name, None, format!("set both {a_name} and {b_name}, or neither"))),
        }
    }

    pub fn not_for_profile(&self, at: &str, name: &str, set: bool, profile: &str) -> Result<(), ConfigError> {
        if set {
            return Err(self.err(format!("{at}.{name}"), None, format!("is not used by profile {profile}; remove it")));
        }
        Ok(())
    }
}

pub fn read_yaml<T: serde::de::DeserializeOwned>(path: &Path) -> Result<T, ConfigError> {
    let text = std::fs::read_to_string(path).map_err(|e| ConfigError {
        config: path.to_path_buf(),
        setting: "(file)".into(),
        file: None,
        message: format!("cannot read: {e}"),
    })?;
    parse_yaml(&text, path)
}

pub fn parse_yaml<T: serde::de::DeserializeOwned>(text: &str, path: &Path) -> Result<T, ConfigError> {
    if let Some(e) = too_deep(text, path) {
        return Err(e);
    }
    serde_yaml::from_str(text).map_err(|e| yaml_error(path, &e))
}

/// Flow collections (`[`, `{`) nested deeper than this are refused before parsing: the YAML
/// parser's time grows with the square of their depth (40,000 levels, an 80 KB file: 13.5 s of
/// CPU in `check`, and as long in a reload), and no setting nests more than a few levels.
const MAX_NESTING: usize = 64;

/// The refusal of a file nested deeper than [`MAX_NESTING`] (brackets in quotes and comments do
/// not count; a stray quote only makes the count smaller, never refuses a good file).
fn too_deep(text: &str, path: &Path) -> Option<ConfigError> {
    let (mut depth, mut quote, mut comment, mut prev) = (0usize, None::<char>, false, '\n');
    let mut chars = text.chars();
    while let Some(c) = chars.next() {
        if comment {
            comment = c != '\n';
        } else if let Some(q) = quote {
            if q == '"' && c == '\\' {
                chars.next();
            } else if c == q {
                quote = None;
            }
        } else {
            match c {
                '"' | '\'' => quote = Some(c),
                '#' if prev.is_whitespace() => comment = true,
                '[' | '{' => depth += 1,
                ']' | '}' => depth = depth.saturating_sub(1),
                _ => {}
            }
            if depth > MAX_NESTING {
                return Some(ConfigError {
                    config: path.to_path_buf(),
                    setting: "(file)".into(),
                    file: None,
                    message: format!("invalid configuration: nested deeper than {MAX_NESTING} levels of [ ] or {{ }}"),
                });
            }
        }
        prev = c;
    }
    None
}

/// A YAML error as a problem with the setting it is about: serde_yaml prefixes its message
/// with the path (`merchants[0].chunk_size: invalid type: …`), and names an unknown key in
/// the message (`unknown field `x``).
fn yaml_error(path: &Path, e: &serde_yaml::Error) -> ConfigError {
    let text = e.to_string();
    // The position goes after the message, in a form that reads as part of it.
    let text = match (e.location(), text.rfind(" at line ")) {
        (Some(l), Some(i)) => format!("{} (line {}, column {})", &text[..i], l.line(), l.column()),
        _ => text,
    };
    let (setting, message) = match text.split_once(": ") {
        Some((p, m)) if !p.is_empty() && !p.contains(char::is_whitespace) => (p.to_string(), m.to_string()),
        _ => (String::new(), text.clone()),
    };
    // `unknown field `x`` names the key itself: the setting is the key.
    let unknown = message.strip_prefix("unknown field `").and_then(|r| r.split_once('`')).map(|(k, _)| k.to_string());
    let setting = match (unknown, setting.is_empty()) {
        (Some(k), true) => k,
        (Some(k), false) => format!("{setting}.{k}"),
        (None, true) => "(file)".into(),
        (None, false) => setting,
    };
    ConfigError { config: path.to_path_buf(), setting, file: None, message: format!("invalid configuration: {message}") }
}

/// Parses a gateway file, reporting every key of the wrong type or name rather than only the
/// first: each refused key is taken out and the rest parsed again (a key that is required then
/// stops the search, as the next error would only repeat it as missing).
fn parse_gateway(text: &str, path: &Path) -> (Option<GatewayFile>, Vec<ConfigError>) {
    if let Some(e) = too_deep(text, path) {
        return (None, vec![e]);
    }
    let mut errors: Vec<ConfigError> = Vec::new();
    let mut value: Option<serde_yaml::Value> = None;
    let mut current = text.to_string();
    // Bounded: a file with more bad keys than this reports the first ones.
    for _ in 0..32 {
        let e = match serde_yaml::from_str::<GatewayFile>(&current) {
            Ok(file) => return (Some(file), errors),
            Err(e) => e,
        };
        let mut problem = yaml_error(path, &e);
        if errors.is_empty() {
            match serde_yaml::from_str::<serde_yaml::Value>(text) {
                Ok(v) => value = Some(v),
                Err(_) => return (None, vec![problem]),
            }
        } else {
            // Positions refer to the rewritten text after the first error: drop them.
            if let Some(i) = problem.message.rfind(" (line ") {
                problem.message.truncate(i);
            }
        }
        let missing =
            problem.message.strip_prefix("invalid configuration: missing field `").and_then(|r| r.split_once('`')).map(|(k, _)| k);
        if let Some(k) = missing {
            let full = if problem.setting == "(file)" { k.to_string() } else { format!("{}.{k}", problem.setting) };
            if errors.iter().any(|e| e.setting == full) {
                break;
            }
        }
        let removed = value.as_mut().is_some_and(|v| remove_setting(v, &problem.setting));
        errors.push(problem);
        if !removed {
            break;
        }
        match value.as_ref().map(serde_yaml::to_string) {
            Some(Ok(t)) => current = t,
            _ => break,
        }
    }
    (None, errors)
}

/// Removes `a.b[2].c` from a YAML tree; false when there is no such key.
fn remove_setting(root: &mut serde_yaml::Value, setting: &str) -> bool {
    let mut parts: Vec<(String, Option<usize>)> = Vec::new();
    for segment in setting.split('.') {
        let mut rest = segment;
        let name_end = rest.find('[').unwrap_or(rest.len());
        parts.push((rest[..name_end].to_string(), None));
        rest = &rest[name_end..];
        while let Some(r) = rest.strip_prefix('[') {
            let Some((n, after)) = r.split_once(']') else { return false };
            let Ok(n) = n.parse::<usize>() else { return false };
            parts.push((String::new(), Some(n)));
            rest = after;
        }
    }
    let Some(last) = parts.pop() else { return false };
    let mut node = root;
    for (key, index) in &parts {
        let next = match index {
            Some(i) => node.get_mut(*i),
            None => node.get_mut(key.as_str()),
        };
        match next {
            Some(n) => node = n,
            None => return false,
        }
    }
    match last {
        (_, Some(i)) => match node.as_sequence_mut() {
            Some(seq) if i < seq.len() => {
                seq.remove(i);
                true
            }
            _ => false,
        },
        (key, None) => node.as_mapping_mut().is_some_and(|m| m.remove(key.as_str()).is_some()),
    }
}

pub fn ctx_for(path: &Path, allow_weak: bool, backend: Backend) -> Ctx<'_> {
    let dir = path.parent().map(Path::to_path_buf).unwrap_or_default();
    Ctx { config: path, dir, allow_weak, backend, resolve: true, checking: false, warnings: Default::default() }
}

pub fn check_listen(ctx: &Ctx, setting: &str, v: &str) -> Result<(), ConfigError> {
    v.parse::<SocketAddr>().map(|_| ()).map_err(|_| ctx.err(setting, None, format!("'{v}' is not an address like 127.0.0.1:8080")))
}

pub fn check_customer_no(ctx: &Ctx, at: &str, c: &str) -> Result<(), ConfigError> {
    if c.is_empty() || c.len() > 32 || !c.bytes().all(|b| b.is_ascii_alphanumeric()) {
        return Err(ctx.err(format!("{at}.customer_no"), None, "must be 1 to 32 ASCII letters or digits"));
    }
    Ok(())
}

/// How a configuration is loaded.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    /// To run: host names are looked up and keys in a PKCS#11 token opened (both required).
    Run,
    /// `paysign check`: everything that can be checked offline; a name that does not resolve
    /// now and a key in a token are warnings (neither DNS nor the HSM is needed).
    Check,
    /// The fuzzer: no DNS query may leave, a token key is an error.
    Offline,
}

/// Everything loading a file found: every problem (not only the first) and the warnings.
#[derive(Debug)]
pub struct Report {
    /// The configuration, when there is no problem (and, for [`Mode::Check`], no key in a
    /// token that was left unopened).
    pub config: Option<Config>,
    pub errors: Vec<ConfigError>,
    pub warnings: Vec<ConfigError>,
    /// How many merchants the file configures.
    pub merchants: usize,
}

/// Loads and validates a gateway configuration, parsing every key.
pub fn load(path: &Path) -> Result<Config, ConfigError> {
    first_problem(load_report(path, Mode::Run))
}

/// [`load`] from text, without looking host names up (they become 0.0.0.0); relative paths
/// are relative to `path`'s folder. For the fuzzer: it must send no DNS query.
pub fn load_str_offline(text: &str, path: &Path) -> Result<Config, ConfigError> {
    first_problem(report_str(text, path, Mode::Offline))
}

fn first_problem(report: Report) -> Result<Config, ConfigError> {
    match (report.config, report.errors.into_iter().next()) {
        (_, Some(e)) => Err(e),
        (Some(c), None) => Ok(c),
        (None, None) => Err(ConfigError {
            config: PathBuf::new(),
            setting: "(file)".into(),
            file: None,
            message: "not loaded (a key was left unopened)".into(),
        }),
    }
}

/// Every problem of a gateway file, with its warnings.
pub fn load_report(path: &Path, mode: Mode) -> Report {
    match std::fs::read_to_string(path) {
        Ok(text) => report_str(&text, path, mode),
        Err(e) => Report {
            config: None,
            errors: vec![ConfigError {
                config: path.to_path_buf(),
                setting: "(file)".into(),
                file: None,
                message: format!("cannot read: {e}"),
            }],
            warnings: Vec::new(),
            merchants: 0,
        },
    }
}

fn report_str(text: &str, path: &Path, mode: Mode) -> Report {
    let (file, mut errors) = parse_gateway(text, path);
    let Some(file) = file else {
        return Report { config: None, errors, warnings: Vec::new(), merchants: 0 };
    };
    let merchants = file.merchants.len();
    let mut ctx = ctx_for(path, file.allow_weak_keys, file.crypto_backend);
    ctx.resolve = mode == Mode::Run;
    ctx.checking = mode == Mode::Check;
    let mut found = Found { errors: Vec::new() };
    let config = validate(file, &ctx, &mut found);
    // Errors from the keys taken out while parsing come first, as they appear in the file.
    errors.extend(found.errors);
    let warnings = ctx.take_warnings();
    let config = match config {
        Some(mut c) if errors.is_empty() => {
            c.warnings = warnings.clone();
            Some(c)
        }
        _ => None,
    };
    Report { config, errors, warnings, merchants }
}

/// The problems found so far: validation goes on after each one, so that a file's problems
/// are all reported at once.
struct Found {
    errors: Vec<ConfigError>,
}

impl Found {
    fn ok<T>(&mut self, r: Result<T, ConfigError>) -> Option<T> {
        r.map_err(|e| self.errors.push(e)).ok()
    }
    fn check(&mut self, r: Result<(), ConfigError>) {
        self.ok(r);
    }
}

/// `None` when anything was refused (the problems are in `found`).
fn validate(file: GatewayFile, ctx: &Ctx, found: &mut Found) -> Option<Config> {
    let before = found.errors.len();
    found.check(check_listen(ctx, "listen", &file.listen));
    found.check(check_listen(ctx, "admin_listen", &file.admin_listen));
    if file.listen == file.admin_listen {
        found.check(Err(ctx.err("admin_listen", None, "must differ from listen")));
    }
    // Without a token, reloads and GET /config are accepted from 127.0.0.1/::1 only: an admin
    // listener that others can reach would be refused to everyone, or (behind a sidecar that
    // connects from 127.0.0.x) open to everyone.
    let admin_reachable = file.admin_listen.parse::<SocketAddr>().is_ok_and(|a| !a.ip().is_loopback());
    if admin_reachable && file.admin_token_file.is_none() {
        found.check(Err(ctx.err(
            "admin_token_file",
            None,
            format!("is required when admin_listen ({}) is not a loopback address", file.admin_listen),
        )));
    }
    if file.threads == 0 {
        found.check(Err(ctx.err("threads", None, "must be at least 1")));
    }
    if file.max_body_bytes == 0 {
        found.check(Err(ctx.err("max_body_bytes", None, "must be at least 1")));
    }
    let upstream = found.ok(upstream(ctx, &file.platform));
    if file.merchants.is_empty() {
        found.check(Err(ctx.err("merchants", None, "at least one merchant is required")));
    }
    let mut merchants = HashMap::new();
    // Every customer_no named, built or not: references to it are then not reported twice.
    let mut known = std::collections::HashSet::new();
    let mut unopened = false;
    for (i, m) in file.merchants.iter().enumerate() {
        let at = format!("merchants[{i}]");
        if found.ok(check_customer_no(ctx, &at, &m.customer_no)).is_none() {
            continue;
        }
        if !known.insert(m.customer_no.clone()) {
            found.check(Err(ctx.err(format!("{at}.customer_no"), None, format!("{} is configured twice", m.customer_no))));
            continue;
        }
        match merchant(ctx, &at, m, file.pkcs11.as_ref(), file.allow_weak_keys, found) {
            Some(Some(merchant)) => {
                merchants.insert(m.customer_no.clone(), Arc::new(merchant));
            }
            Some(None) => unopened = true,
            None => {}
        }
    }
    let notify = file.notify.as_ref().and_then(|n| found.ok(notify(ctx, n, &merchants, &known, &[&file.listen, &file.admin_listen])));
    let callers = found.ok(callers(ctx, &file.callers, &known));
    let admin_token_sha256 = match &file.admin_token_file {
        Some(f) => found.ok(admin_token(ctx, f)).map(Some),
        None => Some(None),
    };
    if file.max_in_flight == 0 {
        found.check(Err(ctx.err("max_in_flight", None, "must be at least 1")));
    }
    if file.max_connections == 0 {
        found.check(Err(ctx.err("max_connections", None, "must be at least 1")));
    }
    if file.header_timeout_ms == 0 {
        found.check(Err(ctx.err("header_timeout_ms", None, "must be positive")));
    }
    let private_key_workers = match file.private_key_workers {
        Some(0) => {
            found.check(Err(ctx.err("private_key_workers", None, "must be at least 1")));
            0
        }
        Some(n) => n,
        None => std::thread::available_parallelism().map_or(1, |n| n.get()),
    };
    if !(1024..=MAX_HEADER_BYTES_LIMIT).contains(&file.max_header_bytes) {
        found.check(Err(ctx.err("max_header_bytes", None, format!("must be between 1024 and {MAX_HEADER_BYTES_LIMIT}"))));
    }
    if found.errors.len() > before || unopened {
        return None;
    }
    let notify = notify.map(|mut n| {
        n.body_timeout = Duration::from_millis(file.client_body_timeout_ms.max(1));
        n
    });
    Some(Config {
        notify,
        callers: callers?,
        admin_token_sha256: admin_token_sha256?,
        max_in_flight: file.max_in_flight,
        max_connections: file.max_connections,
        header_timeout: Duration::from_millis(file.header_timeout_ms),
        max_header_bytes: file.max_header_bytes,
        private_key_queue: file.private_key_queue,
        crypto_backend: file.crypto_backend,
        offload_private_key_ops: file.offload_private_key_ops,
        private_key_workers,
        source: ctx.config.to_path_buf(),
        listen: file.listen,
        admin_listen: file.admin_listen,
        threads: file.threads,
        grace_period_seconds: file.grace_period_seconds,
        upgrade_sock: file.upgrade_sock.clone(),
        max_body_bytes: file.max_body_bytes,
        client_body_timeout: Duration::from_millis(file.client_body_timeout_ms.max(1)),
        upstream: upstream?,
        merchants,
        warnings: Vec::new(),
    })
}

/// One merchant: `None` when refused (the problems are in `found`), `Some(None)` when its key
/// is in a token that `paysign check` does not open.
fn merchant(
    ctx: &Ctx,
    at: &str,
    m: &MerchantFile,
    p11: Option<&Pkcs11File>,
    allow_weak: bool,
    found: &mut Found,
) -> Option<Option<Merchant>> {
    let before = found.errors.len();
    let platform_public = found.ok(ctx.public_key(&format!("{at}.platform_public_key"), &m.platform_public_key));
    let keys = match m.profile {
        ProfileName::Md5 => {
            found.check(ctx.not_for_profile(at, "merchant_private_key", m.merchant_private_key.is_some(), "md5"));
            let md5_key = found.ok(ctx.md5_key(at, &m.md5_key_file, &m.md5_key_env));
            match (md5_key, &platform_public) {
                (Some(md5_key), Some(p)) => Some(MerchantKeys::Md5 { md5_key, platform_public: p.clone() }),
                _ => None,
            }
        }
        ProfileName::Rsa => {
            found.check(ctx.not_for_profile(at, "md5_key_file", m.md5_key_file.is_some(), "rsa"));
            found.check(ctx.not_for_profile(at, "md5_key_env", m.md5_key_env.is_some(), "rsa"));
            let setting = format!("{at}.merchant_private_key");
            let merchant_private = match m.merchant_private_key.as_ref().and_then(|p| p.to_str()).filter(|p| pkcs11::is_uri(p)) {
                Some(uri) => match found.ok(token_key(ctx, &setting, uri, p11, allow_weak))? {
                    Some(k) => Some(k),
                    // In a token, not opened by `check`: the rest is still checked.
                    None => {
                        found.check(rollover_and_chunk(ctx, at, m, platform_public.as_ref()).map(|_| ()));
                        return (found.errors.len() == before).then_some(None);
                    }
                },
                None => found.ok(ctx.private_key(&setting, &m.merchant_private_key)),
            };
            match (merchant_private, &platform_public) {
                (Some(merchant_private), Some(p)) => Some(MerchantKeys::Rsa { merchant_private, platform_public: p.clone() }),
                _ => None,
            }
        }
    };
    let rollover = found.ok(rollover_and_chunk(ctx, at, m, platform_public.as_ref()));
    if found.errors.len() > before {
        return None;
    }
    let (rollover, chunk_size) = rollover?;
    Some(Some(Merchant { customer_no: m.customer_no.clone(), keys: keys?, chunk_size, rollover }))
}

/// The merchant's key rollover and the chunk size its sealing key allows.
fn rollover_and_chunk(
    ctx: &Ctx,
    at: &str,
    m: &MerchantFile,
    platform_public: Option<&Arc<PublicKey>>,
) -> Result<(Option<Rollover>, usize), ConfigError> {
    let rollover = match (&m.next_platform_public_key, m.seal_with) {
        (None, SealWith::Current) => None,
        (None, SealWith::Next) => return Err(ctx.err(format!("{at}.seal_with"), None, "next needs next_platform_public_key")),
        (Some(_), seal_with) => Some(Rollover {
            next: ctx.public_key(&format!("{at}.next_platform_public_key"), &m.next_platform_public_key)?,
            seal_with_next: seal_with == SealWith::Next,
        }),
    };
    let sealing_key = match (&rollover, platform_public) {
        (Some(Rollover { next, seal_with_next: true }), _) => next,
        (_, Some(p)) => p,
        // The platform key was refused (and reported): nothing to size chunks by.
        (_, None) => return Ok((rollover, 0)),
    };
    let chunk_size = segmented::chunk_size_for(sealing_key, m.chunk_size).map_err(|e| ctx.err(format!("{at}.chunk_size"), None, e))?;
    Ok((rollover, chunk_size))
}

fn admin_token(ctx: &Ctx, f: &Path) -> Result<[u8; 32], ConfigError> {
    let path = ctx.resolve(f);
    ctx.secret_mode("admin_token_file", &path)?;
    let mut token = String::new();
    std::fs::File::open(&path)
        .and_then(|f| std::io::Read::read_to_string(&mut std::io::Read::take(f, 4096), &mut token))
        .map_err(|e| ctx.err("admin_token_file", Some(&path), format!("cannot read file: {e}")))?;
    let token = token.trim_end_matches(['\r', '\n']);
    if token.len() < 16 {
        return Err(ctx.err("admin_token_file", Some(&path), "the token must be at least 16 characters"));
    }
    Ok(sha256(token.as_bytes()))
}

/// A merchant key in a PKCS#11 token (see `pkcs11.rs`): opened when running, checked but not
/// opened by `paysign check` (`None`, with a warning), refused when validating offline.
fn token_key(
    ctx: &Ctx,
    setting: &str,
    uri: &str,
    settings: Option<&Pkcs11File>,
    allow_weak: bool,
) -> Result<Option<Arc<PrivateKey>>, ConfigError> {
    let p = settings.ok_or_else(|| ctx.err(setting, None, "a pkcs11: key needs the pkcs11 settings (module, pin_file or pin_env)"))?;
    pkcs11::Pkcs11Uri::parse(uri).map_err(|e| ctx.err(setting, None, e))?;
    let pin = ctx.secret("pkcs11.pin", "a pkcs11: key", "the PIN", &p.pin_file, &p.pin_env)?;
    let module = ctx.resolve(&p.module);
    if ctx.checking {
        if !module.is_file() {
            return Err(ctx.err("pkcs11.module", Some(&module), "file does not exist"));
        }
        ctx.warn(setting, None, "the key in the PKCS#11 token is not opened by check (`paysign keys check --pkcs11-module` opens it)");
        return Ok(None);
    }
    if !ctx.resolve {
        return Err(ctx.err(setting, None, "PKCS#11 keys are opened only when the configuration is loaded for real"));
    }
    pkcs11::open_key(uri, &module, &pin, allow_weak).map(|k| Some(Arc::new(k))).map_err(|e| ctx.err(setting, Some(&module), e))
}

pub fn sha256(bytes: &[u8]) -> [u8; 32] {
    use sha2::Digest;
    sha2::Sha256::digest(bytes).into()
}

fn callers(ctx: &Ctx, files: &[CallerFile], merchants: &std::collections::HashSet<String>) -> Result<Vec<Caller>, ConfigError> {
    let mut out: Vec<Caller> = Vec::with_capacity(files.len());
    for (i, c) in files.iter().enumerate() {
        let at = format!("callers[{i}]");
        if c.name.is_empty() || c.name.len() > 64 || !c.name.bytes().all(|b| b.is_ascii_alphanumeric() || b"-_.".contains(&b)) {
            return Err(ctx.err(format!("{at}.name"), None, "1-64 letters, digits, '-', '_' or '.'"));
        }
        let hex = c.token_sha256.trim();
        let mut hash = [0u8; 32];
        if hex.len() != 64 || !hex.bytes().all(|b| b.is_ascii_hexdigit()) {
            return Err(ctx.err(format!("{at}.token_sha256"), None, "must be 64 hex digits (the SHA-256 of the token, not the token)"));
        }
        for (j, byte) in hash.iter_mut().enumerate() {
            *byte = u8::from_str_radix(&hex[2 * j..2 * j + 2], 16).map_err(|_| ctx.err(format!("{at}.token_sha256"), None, "not hex"))?;
        }
        if out.iter().any(|o| o.token_sha256 == hash || o.name == c.name) {
            return Err(ctx.err(at.clone(), None, "name and token must differ from every other caller's"));
        }
        let all = |v: &[String]| v.len() == 1 && v[0] == "*";
        for m in c.merchants.iter().filter(|m| *m != "*") {
            if !merchants.contains(m) {
                return Err(ctx.err(format!("{at}.merchants"), None, format!("{m} is not a configured merchant")));
            }
        }
        for e in c.endpoints.iter().filter(|e| *e != "*") {
            if !e.starts_with("/api/") {
                return Err(ctx.err(format!("{at}.endpoints"), None, format!("'{e}' is not a /api/… path")));
            }
        }
        if c.merchants.is_empty() || c.endpoints.is_empty() {
            return Err(ctx.err(at.clone(), None, "merchants and endpoints must each name at least one (or \"*\")"));
        }
        out.push(Caller {
            name: c.name.clone(),
            token_sha256: hash,
            merchants: (!all(&c.merchants)).then(|| c.merchants.clone()),
            endpoints: (!all(&c.endpoints)).then(|| c.endpoints.clone()),
        });
    }
    Ok(out)
}

fn cidrs(ctx: &Ctx, at: &str, list: &[String]) -> Result<Vec<crate::cidr::Cidr>, ConfigError> {
    list.iter().map(|c| crate::cidr::Cidr::parse(c).map_err(|m| ctx.err(at, None, m))).collect()
}

fn notify(
    ctx: &Ctx,
    n: &NotifyFile,
    merchants: &HashMap<String, Arc<Merchant>>,
    known: &std::collections::HashSet<String>,
    taken: &[&String],
) -> Result<Notify, ConfigError> {
    check_listen(ctx, "notify.listen", &n.listen)?;
    // Without an allow-list, anyone who reaches a non-loopback listener can spend its capacity
    // (forged notifications cost decryptions) and shed the platform's genuine ones.
    if n.allow_from.is_empty() && n.listen.parse::<SocketAddr>().is_ok_and(|a| !a.ip().is_loopback()) {
        ctx.warn(
            "notify.allow_from",
            None,
            format!("is empty while notify.listen ({}) is not a loopback address: list the platform's callback addresses", n.listen),
        );
    }
    if taken.contains(&&n.listen) {
        return Err(ctx.err("notify.listen", None, "must differ from listen and admin_listen"));
    }
    if n.ack.is_empty() {
        return Err(ctx.err("notify.ack", None, "must not be empty"));
    }
    if n.forward_timeout_ms == 0 || n.max_body_bytes == 0 {
        return Err(ctx.err("notify.forward_timeout_ms", None, "limits must be positive"));
    }
    if n.routes.is_empty() {
        return Err(ctx.err("notify.routes", None, "at least one route is required"));
    }
    let mut routes: Vec<NotifyRoute> = Vec::new();
    for (i, r) in n.routes.iter().enumerate() {
        let at = format!("notify.routes[{i}]");
        if !r.path.starts_with('/') || r.path.contains(['?', '#', ' ']) {
            return Err(ctx.err(format!("{at}.path"), None, "must be a path like /notify/bindcard"));
        }
        if routes.iter().any(|x| x.path == r.path) {
            return Err(ctx.err(format!("{at}.path"), None, format!("{} is routed twice", r.path)));
        }
        let target = ctx.url(&format!("{at}.target"), &r.target, true)?;
        let merchant = match &r.merchant {
            Some(c) if !known.contains(c) => {
                return Err(ctx.err(format!("{at}.merchant"), None, format!("{c} is not a configured merchant")))
            }
            // Not built only when its key was refused (reported) or left in its token by `check`.
            Some(c) => merchants.get(c).cloned(),
            None => None,
        };
        routes.push(NotifyRoute { path: r.path.clone(), target, merchant });
    }
    Ok(Notify {
        listen: n.listen.clone(),
        ack: n.ack.clone(),
        max_body_bytes: n.max_body_bytes,
        forward_timeout: Duration::from_millis(n.forward_timeout_ms),
        max_blocks: n.max_blocks.max(1),
        allow_from: cidrs(ctx, "notify.allow_from", &n.allow_from)?,
        trusted_proxies: cidrs(ctx, "notify.trusted_proxies", &n.trusted_proxies)?,
        body_timeout: Duration::from_millis(default_client_body_timeout()),
        routes,
    })
}

fn upstream(ctx: &Ctx, p: &PlatformFile) -> Result<Upstream, ConfigError> {
    // Resolved once at start-up: pingora's peer would otherwise do a blocking lookup (and
    // panic on failure) on the request path.
    // With fixed addresses the name is never looked up.
    let target = ctx.url("platform.base_url", &p.base_url, p.addresses.is_empty())?;
    if target.path.contains('?') {
        return Err(ctx.err("platform.base_url", None, "must not carry a query string"));
    }
    let ca_file = match &p.ca_file {
        Some(f) => {
            let path = ctx.resolve(f);
            if !path.is_file() {
                return Err(ctx.err("platform.ca_file", Some(&path), "file does not exist"));
            }
            Some(path)
        }
        None => None,
    };
    if p.connect_timeout_ms == 0 || p.read_timeout_ms == 0 {
        return Err(ctx.err("platform.read_timeout_ms", None, "timeouts must be positive"));
    }
    if p.max_response_bytes == 0 {
        return Err(ctx.err("platform.max_response_bytes", None, "must be at least 1"));
    }
    let client_cert =
        ctx.file_pair(("platform.client_cert_file", &p.client_cert_file), ("platform.client_key_file", &p.client_key_file))?;
    let egress_proxy_uds = p.egress_proxy_uds.as_ref().map(|f| ctx.resolve(f));
    let egress_proxy = match &p.egress_proxy {
        Some(_) if egress_proxy_uds.is_some() => {
            return Err(ctx.err("platform.egress_proxy", None, "set egress_proxy or egress_proxy_uds, not both"))
        }
        Some(hp) => {
            let t = ctx
                .url("platform.egress_proxy", &format!("http://{hp}"), true)
                .map_err(|e| ctx.err("platform.egress_proxy", None, format!("'{hp}' is not host:port: {}", e.message)))?;
            if !t.path.is_empty() || !hp.contains(':') {
                return Err(ctx.err("platform.egress_proxy", None, format!("'{hp}' is not host:port")));
            }
            Some(t.addrs[0])
        }
        None => None,
    };
    let mut target = target;
    let fixed = !p.addresses.is_empty() || target.is_ip_literal();
    if !p.addresses.is_empty() {
        target.addrs = p
            .addresses
            .iter()
            .map(|a| a.parse::<std::net::IpAddr>().map(|ip| std::net::SocketAddr::new(ip, target.port)))
            .collect::<Result<_, _>>()
            .map_err(|_| ctx.err("platform.addresses", None, "each entry must be an IP address (no port, no name)"))?;
    }
    let dns_refresh = (!fixed && p.dns_refresh_secs > 0).then(|| Duration::from_secs(p.dns_refresh_secs));
    Ok(Upstream {
        target,
        client_cert,
        egress_proxy_uds,
        egress_proxy,
        tls_verify: p.tls_verify,
        ca_file,
        connect_timeout: Duration::from_millis(p.connect_timeout_ms),
        read_timeout: Duration::from_millis(p.read_timeout_ms),
        connect_retries: p.connect_retries,
        dns_refresh,
        max_response_bytes: p.max_response_bytes,
        pool_idle_timeout: Duration::from_secs(p.pool_idle_timeout_secs),
    })
}
