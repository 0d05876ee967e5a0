//! Configuration, in the order it is made (one file each):
//! - `schema.rs`: the file's schema ([`GatewayFile`] and the other `*File` types, serde,
//!   unknown keys rejected), every default a named function, the same defaults in `Default`;
//! - `builder.rs`: the same schema filled in code, [`Config::builder`];
//! - `validate.rs`: pure checks, schema → runtime [`Config`], every problem collected (key
//!   files are read; no host name is looked up, no PKCS#11 token opened);
//! - `online.rs`: what needs the network or the HSM (names looked up, token keys opened), done
//!   only when a configuration is loaded to run ([`Mode::Run`]), once validation has passed;
//! - `load.rs`: files and YAML ([`load`], [`load_str`], [`load_str_offline`], [`load_report`]);
//!   `runtime.rs`: the [`Config`] the gateway uses.
//!
//! A file and the builder go through the same validation: every error names the setting and,
//! where one is involved, the file.

pub mod builder;
mod load;
mod online;
mod runtime;
mod schema;
mod validate;

pub use builder::ConfigBuilder;
pub use load::{load, load_report, load_str, load_str_offline, parse_yaml, read_yaml, Mode, Report};
pub use paysign_settings::{check_customer_no, check_listen, ConfigError, ConfigErrors, Files};
pub use runtime::{sha256, Caller, Config, InboxSettings, InboxStore, Notify, NotifyRoute, Upstream};
pub use schema::{
    default_true, CallerFile, GatewayFile, InboxFile, MerchantFile, NotifyFile, NotifyRouteFile, Pkcs11File, PlatformFile, ProfileName,
    SealWith, MAX_HEADER_BYTES_LIMIT,
};
pub use validate::{ctx_for, Ctx};

/// Logs what was loaded, as the binary does at start-up: the file, the listeners, the platform
/// and its timeouts, each merchant's profile and key kinds (never key material).
pub fn announce(cfg: &Config) {
    let up = &cfg.upstream;
    tracing::info!(
        "paysign {} loaded {}: crypto_backend={} listen={} admin={} platform={} tls_verify={} ca_file={} connect_timeout_ms={} read_timeout_ms={} connect_retries={} max_body_bytes={}",
        env!("CARGO_PKG_VERSION"),
        cfg.source.display(),
        cfg.crypto_backend.as_str(),
        cfg.listen,
        cfg.admin_listen,
        up.target.url(),
        up.tls_verify,
        up.ca_file.as_ref().map_or("-".into(), |p| p.display().to_string()),
        up.connect_timeout.as_millis(),
        up.read_timeout.as_millis(),
        up.connect_retries,
        cfg.max_body_bytes,
    );
    let mut names: Vec<_> = cfg.merchants.keys().collect();
    names.sort();
    for name in names {
        let m = &cfg.merchants[name];
        let keys = match &m.keys {
            crate::protocol::MerchantKeys::Md5 { platform_public, .. } => {
                format!("platform_public=rsa-{}/{} md5_key=set", platform_public.bits(), platform_public.backend().as_str())
            }
            crate::protocol::MerchantKeys::Rsa { merchant_private, platform_public } => format!(
                "platform_public=rsa-{}/{} merchant_private=rsa-{}/{}",
                platform_public.bits(),
                platform_public.backend().as_str(),
                merchant_private.public().bits(),
                merchant_private.backend_name()
            ),
        };
        tracing::info!("merchant {} profile={} {} chunk_size={}", m.customer_no, m.profile().as_str(), keys, m.chunk_size);
    }
    if cfg.default_merchant().is_none() {
        tracing::info!("several merchants: requests must name one with X-Paysign-Merchant");
    }
}
