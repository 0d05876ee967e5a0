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
pub use runtime::{sha256, Caller, Config, Notify, NotifyRoute, Upstream};
pub use schema::{
    default_true, CallerFile, GatewayFile, MerchantFile, NotifyFile, NotifyRouteFile, Pkcs11File, PlatformFile, ProfileName, SealWith,
    MAX_HEADER_BYTES_LIMIT,
};
pub use validate::{ctx_for, Ctx};
