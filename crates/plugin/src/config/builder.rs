//! A configuration written in code: the file's schema ([`GatewayFile`]) filled with the file's
//! defaults, set by name, then validated by exactly the loader's validation — so a builder
//! refuses what a file would (`max_in_flight: 0`, no merchant, a platform without an address)
//! with the same errors, each naming the setting.
//!
//! ```no_run
//! use paysign_plugin::config::{Config, MerchantFile};
//!
//! let config = Config::builder()
//!     .source("/etc/paysign/config/paysign.yaml") // errors name it; relative key paths start from its folder
//!     .listen("127.0.0.1:8080")
//!     .base_url("https://openapi.platform.example")
//!     .merchant(MerchantFile::rsa("M100", "keys/platform_public.pem", "keys/merchant_private.pem"))
//!     .max_in_flight(128)
//!     .build()?;
//! # Ok::<(), paysign_plugin::config::ConfigErrors>(())
//! ```

use std::path::PathBuf;

use super::load::{report_file, Mode};
use super::runtime::Config;
use super::schema::{CallerFile, GatewayFile, MerchantFile, NotifyFile, Pkcs11File, PlatformFile};
use super::{ConfigError, ConfigErrors};
use crate::crypto::Backend;

/// What a builder's errors name as the configuration when no [`ConfigBuilder::source`] is set.
const IN_CODE: &str = "(code)";

/// A [`Config`] built in code; see the [`builder`](crate::config::builder) module.
#[derive(Debug, Clone)]
pub struct ConfigBuilder {
    file: GatewayFile,
    source: PathBuf,
}

impl Default for ConfigBuilder {
    fn default() -> Self {
        ConfigBuilder { file: GatewayFile::default(), source: PathBuf::from(IN_CODE) }
    }
}

impl From<GatewayFile> for ConfigBuilder {
    /// A schema value already filled (e.g. parsed by the embedder from its own file format).
    fn from(file: GatewayFile) -> Self {
        ConfigBuilder { file, ..ConfigBuilder::default() }
    }
}

impl Config {
    /// A builder with every setting at the file's default.
    pub fn builder() -> ConfigBuilder {
        ConfigBuilder::default()
    }
}

/// Setters of top-level settings, each named as in the file: numbers and flags as they are,
/// text and paths as anything that converts.
macro_rules! setters {
    ($($name:ident: $ty:ty),* $(,)?) => {$(
        #[doc = concat!("`", stringify!($name), "` (see the configuration reference, docs/configuration.md).")]
        pub fn $name(mut self, value: $ty) -> Self {
            self.file.$name = value;
            self
        }
    )*};
}
macro_rules! setters_into {
    ($($name:ident: $ty:ty),* $(,)?) => {$(
        #[doc = concat!("`", stringify!($name), "` (see the configuration reference, docs/configuration.md).")]
        pub fn $name(mut self, value: impl Into<$ty>) -> Self {
            self.file.$name = value.into();
            self
        }
    )*};
}

impl ConfigBuilder {
    /// The path errors name as the configuration and `Config::source` holds; relative paths
    /// (keys, certificates) are relative to its folder. Default: `(code)`, paths relative to
    /// the current directory. Note: `Paysign::new` reloads (SIGHUP, `/-/reload`) from the file
    /// at this path; a configuration that lives only in code is given its reload source with
    /// `Paysign::with_reload_source`.
    pub fn source(mut self, path: impl Into<PathBuf>) -> Self {
        self.source = path.into();
        self
    }

    setters_into! {
        listen: String,
        admin_listen: String,
        upgrade_sock: PathBuf,
    }

    setters! {
        threads: usize,
        grace_period_seconds: u64,
        max_body_bytes: usize,
        client_body_timeout_ms: u64,
        allow_weak_keys: bool,
        crypto_backend: Backend,
        offload_private_key_ops: bool,
        private_key_queue: usize,
        max_connections: usize,
        header_timeout_ms: u64,
        max_header_bytes: usize,
        max_in_flight: usize,
        platform: PlatformFile,
    }

    /// `private_key_workers` (default: the CPU cores).
    pub fn private_key_workers(mut self, n: usize) -> Self {
        self.file.private_key_workers = Some(n);
        self
    }

    /// `admin_token_file`: the file holding the admin's bearer token.
    pub fn admin_token_file(mut self, path: impl Into<PathBuf>) -> Self {
        self.file.admin_token_file = Some(path.into());
        self
    }

    /// `platform.base_url`, the other platform settings unchanged.
    pub fn base_url(mut self, url: impl Into<String>) -> Self {
        self.file.platform.base_url = url.into();
        self
    }

    /// `platform.addresses`: fixed IP addresses, never looked up.
    pub fn addresses<S: Into<String>>(mut self, addresses: impl IntoIterator<Item = S>) -> Self {
        self.file.platform.addresses = addresses.into_iter().map(Into::into).collect();
        self
    }

    /// Adds a merchant (`merchants`).
    pub fn merchant(mut self, merchant: MerchantFile) -> Self {
        self.file.merchants.push(merchant);
        self
    }

    /// Adds a caller (`callers`).
    pub fn caller(mut self, caller: CallerFile) -> Self {
        self.file.callers.push(caller);
        self
    }

    /// The `notify` section: the notification listener.
    pub fn notify(mut self, notify: NotifyFile) -> Self {
        self.file.notify = Some(notify);
        self
    }

    /// The `pkcs11` section, for merchant keys named by `pkcs11:` URIs.
    pub fn pkcs11(mut self, pkcs11: Pkcs11File) -> Self {
        self.file.pkcs11 = Some(pkcs11);
        self
    }

    /// Any other setting, on the schema itself.
    pub fn with(mut self, set: impl FnOnce(&mut GatewayFile)) -> Self {
        set(&mut self.file);
        self
    }

    /// The settings so far.
    pub fn file(&self) -> &GatewayFile {
        &self.file
    }

    /// Validates as the loader does, then looks host names up and opens keys in a PKCS#11
    /// token (blocking: call at start-up or off the event loop). Every problem, each naming
    /// its setting.
    pub fn build(self) -> Result<Config, ConfigErrors> {
        self.build_in(Mode::Run)
    }

    /// [`Self::build`] without the network or the HSM: host names are not looked up (their
    /// address is 0.0.0.0) and a key in a token is refused. For checks and tests.
    pub fn build_offline(self) -> Result<Config, ConfigErrors> {
        self.build_in(Mode::Offline)
    }

    fn build_in(self, mode: Mode) -> Result<Config, ConfigErrors> {
        let report = report_file(self.file, &self.source, mode, Vec::new());
        match report.config {
            Some(c) if report.errors.is_empty() => Ok(c),
            _ if report.errors.is_empty() => Err(ConfigErrors(vec![ConfigError {
                config: self.source,
                setting: "(file)".into(),
                file: None,
                message: "not loaded (a key was left unopened)".into(),
            }])),
            _ => Err(ConfigErrors(report.errors)),
        }
    }
}
