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

use std::fmt;
use std::path::PathBuf;

pub mod builder;
mod load;
mod online;
mod runtime;
mod schema;
mod validate;

pub use builder::ConfigBuilder;
pub use load::{load, load_report, load_str, load_str_offline, parse_yaml, read_yaml, Mode, Report};
pub use runtime::{sha256, Caller, Config, Notify, NotifyRoute, Upstream};
pub use schema::{
    default_true, CallerFile, GatewayFile, MerchantFile, NotifyFile, NotifyRouteFile, Pkcs11File, PlatformFile, ProfileName, SealWith,
    MAX_HEADER_BYTES_LIMIT,
};
pub use validate::{check_customer_no, check_listen, ctx_for, Ctx};

/// A configuration problem: which file, which setting, what is wrong.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConfigError {
    /// The configuration file (for the builder: its [`ConfigBuilder::source`]).
    pub config: PathBuf,
    /// The setting, as written in the file (`merchants[0].platform_public_key`).
    pub setting: String,
    /// The file the setting names, when the problem is with that file.
    pub file: Option<PathBuf>,
    /// What is wrong.
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

/// Every problem of a configuration that does not validate (never empty), in the order of the
/// settings; shown one per line.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConfigErrors(pub Vec<ConfigError>);

impl fmt::Display for ConfigErrors {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, e) in self.0.iter().enumerate() {
            if i > 0 {
                writeln!(f)?;
            }
            write!(f, "{e}")?;
        }
        Ok(())
    }
}

impl std::error::Error for ConfigErrors {}

impl ConfigErrors {
    /// Whether one of the problems is with `setting`.
    pub fn names(&self, setting: &str) -> bool {
        self.0.iter().any(|e| e.setting == setting)
    }
}
