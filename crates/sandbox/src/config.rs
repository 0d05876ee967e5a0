//! The sandbox's configuration: its on-disk schema (unknown keys rejected) and its
//! validation, with keys read the way the gateway's configuration reads them.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use paysign_protocol::crypto::{Backend, PrivateKey};
use paysign_protocol::platform::{PlatformMerchant, PlatformMerchantKeys};
use paysign_settings::{check_customer_no, check_listen, default_true, files_for, parse_yaml, read_yaml, ConfigError, ProfileName};
use serde::Deserialize;

fn default_sandbox_listen() -> String {
    "127.0.0.1:9443".into()
}
fn default_stall_ms() -> u64 {
    30_000
}
/// A real platform's shape (Alipay's: 4 min, 10 min, 10 min, 1 h, 2 h, 6 h, 15 h after the
/// first try — 8 tries over ~25 h); tests compress it to milliseconds.
fn default_notify_retry_ms() -> Vec<u64> {
    vec![240_000, 600_000, 600_000, 3_600_000, 7_200_000, 21_600_000, 54_000_000]
}
fn default_submit_url() -> String {
    "https://bank.example.test/epcc/bind".into()
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SandboxFile {
    #[serde(default = "default_sandbox_listen")]
    pub listen: String,
    pub platform_private_key: PathBuf,
    /// During the platform's key rollover: the retiring key pair, still accepted on requests.
    pub previous_platform_private_key: Option<PathBuf>,
    #[serde(default)]
    pub allow_weak_keys: bool,
    #[serde(default)]
    pub crypto_backend: Backend,
    /// How long a `STALL-` order waits before answering (to exercise read timeouts).
    #[serde(default = "default_stall_ms")]
    pub stall_ms: u64,
    /// The bank form target put into successful bindCard answers.
    #[serde(default = "default_submit_url")]
    pub submit_url: String,
    /// After a successful bindCard/create, notify the request's `bindNotifyUrl` (loopback
    /// addresses only: the sandbox never calls anything off this machine).
    #[serde(default = "default_true")]
    pub send_notifications: bool,
    /// A notification not acknowledged (HTTP 200 with `SUCCESS`) is sent again after each of
    /// these delays in turn (milliseconds after the previous try), sealed afresh each time, then
    /// abandoned — as a real platform retries.
    #[serde(default = "default_notify_retry_ms")]
    pub notify_retry_ms: Vec<u64>,
    /// Load-test mode: answer every `/api/` POST at once with a response sealed at start-up,
    /// without opening the request (so the upstream is never the bottleneck).
    #[serde(default)]
    pub presealed: bool,
    /// Serve HTTPS with this certificate chain and key (PEM) instead of plain HTTP.
    pub tls_cert_file: Option<PathBuf>,
    pub tls_key_file: Option<PathBuf>,
    /// With TLS: require client certificates issued by this CA (mutual TLS).
    pub tls_client_ca_file: Option<PathBuf>,
    pub merchants: Vec<SandboxMerchantFile>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SandboxMerchantFile {
    pub customer_no: String,
    pub profile: ProfileName,
    pub md5_key_file: Option<PathBuf>,
    pub md5_key_env: Option<String>,
    pub merchant_public_key: Option<PathBuf>,
    /// During a key rotation: the MD5 key being retired, still accepted (md5).
    pub previous_md5_key_file: Option<PathBuf>,
    /// During a key rotation: the merchant public key being retired, still accepted (rsa).
    pub previous_merchant_public_key: Option<PathBuf>,
}

#[derive(Debug, Clone)]
pub struct SandboxConfig {
    pub source: PathBuf,
    pub listen: String,
    pub platform_private: Arc<PrivateKey>,
    pub previous_platform_private: Option<Arc<PrivateKey>>,
    pub stall: Duration,
    pub submit_url: String,
    pub send_notifications: bool,
    /// The delays before each retry of an unacknowledged notification.
    pub notify_retry: Vec<Duration>,
    pub presealed: bool,
    /// (certificate chain, key) files when the sandbox serves HTTPS.
    pub tls: Option<(PathBuf, PathBuf)>,
    /// CA whose client certificates the sandbox requires (mutual TLS).
    pub tls_client_ca: Option<PathBuf>,
    pub merchants: HashMap<String, PlatformMerchant>,
}

/// Loads and validates a sandbox (platform simulator) configuration.
pub fn load_sandbox(path: &Path) -> Result<SandboxConfig, ConfigError> {
    let file: SandboxFile = read_yaml(path)?;
    validate_sandbox(file, path)
}

/// [`load_sandbox`] from text (the sandbox configuration names no host to look up).
pub fn load_sandbox_str(text: &str, path: &Path) -> Result<SandboxConfig, ConfigError> {
    validate_sandbox(parse_yaml(text, path)?, path)
}

fn validate_sandbox(file: SandboxFile, path: &Path) -> Result<SandboxConfig, ConfigError> {
    let ctx = files_for(path, file.allow_weak_keys, file.crypto_backend);
    check_listen(&ctx, "listen", &file.listen)?;
    let platform_private = ctx.private_key("platform_private_key", &Some(file.platform_private_key.clone()))?;
    let mut merchants = HashMap::new();
    for (i, m) in file.merchants.iter().enumerate() {
        let at = format!("merchants[{i}]");
        check_customer_no(&ctx, &at, &m.customer_no)?;
        let keys = match m.profile {
            ProfileName::Md5 => {
                ctx.not_for_profile(&at, "merchant_public_key", m.merchant_public_key.is_some(), "md5")?;
                ctx.not_for_profile(&at, "previous_merchant_public_key", m.previous_merchant_public_key.is_some(), "md5")?;
                PlatformMerchantKeys::Md5 { md5_key: ctx.md5_key(&at, &m.md5_key_file, &m.md5_key_env)? }
            }
            ProfileName::Rsa => {
                ctx.not_for_profile(&at, "md5_key_file", m.md5_key_file.is_some(), "rsa")?;
                ctx.not_for_profile(&at, "md5_key_env", m.md5_key_env.is_some(), "rsa")?;
                ctx.not_for_profile(&at, "previous_md5_key_file", m.previous_md5_key_file.is_some(), "rsa")?;
                PlatformMerchantKeys::Rsa { merchant_public: ctx.public_key(&format!("{at}.merchant_public_key"), &m.merchant_public_key)? }
            }
        };
        let previous = match m.profile {
            ProfileName::Md5 => match &m.previous_md5_key_file {
                Some(f) => Some(PlatformMerchantKeys::Md5 { md5_key: ctx.md5_key(&at, &Some(f.clone()), &None)? }),
                None => None,
            },
            ProfileName::Rsa => match &m.previous_merchant_public_key {
                Some(_) => Some(PlatformMerchantKeys::Rsa {
                    merchant_public: ctx.public_key(&format!("{at}.previous_merchant_public_key"), &m.previous_merchant_public_key)?,
                }),
                None => None,
            },
        };
        let pm = PlatformMerchant { customer_no: m.customer_no.clone(), keys, previous };
        if merchants.insert(m.customer_no.clone(), pm).is_some() {
            return Err(ctx.err(format!("{at}.customer_no"), None, format!("{} is configured twice", m.customer_no)));
        }
    }
    Ok(SandboxConfig {
        source: path.to_path_buf(),
        listen: file.listen,
        platform_private,
        previous_platform_private: match &file.previous_platform_private_key {
            Some(p) => Some(ctx.private_key("previous_platform_private_key", &Some(p.clone()))?),
            None => None,
        },
        stall: Duration::from_millis(file.stall_ms),
        submit_url: file.submit_url,
        send_notifications: file.send_notifications,
        notify_retry: file.notify_retry_ms.iter().map(|ms| Duration::from_millis(*ms)).collect(),
        presealed: file.presealed,
        tls: ctx.file_pair(("tls_cert_file", &file.tls_cert_file), ("tls_key_file", &file.tls_key_file))?,
        tls_client_ca: match &file.tls_client_ca_file {
            Some(f) if file.tls_cert_file.is_some() => {
                let f = ctx.resolve(f);
                if !f.is_file() {
                    return Err(ctx.err("tls_client_ca_file", Some(&f), "file does not exist"));
                }
                Some(f)
            }
            Some(_) => return Err(ctx.err("tls_client_ca_file", None, "needs tls_cert_file and tls_key_file")),
            None => None,
        },
        merchants,
    })
}
