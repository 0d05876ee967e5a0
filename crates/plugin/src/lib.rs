//! # paysign-plugin
//!
//! paysign as a component of a pingora gateway: everything between a merchant's internal
//! services and the payment platform's open API, with its safeguards built in.
//!
//! ```text
//! internal service ──plaintext JSON──▶ paysign ──{customerNo, reqmsg}──▶ platform
//! internal service ◀──verified JSON─── paysign ◀──{code, data:{reqmsg}}── platform
//! platform ──notification──▶ paysign ──verified JSON──▶ internal service
//! ```
//!
//! The modules, in the order a request meets them:
//! - [`config`]: the gateway's configuration (YAML schema → runtime [`config::Config`], keys
//!   parsed once); [`live`]: the reloadable state every flow reads;
//! - [`auth`], [`bearer`], [`cidr`]: who may call (callers' tokens and grants, notification sources);
//! - [`exchange`]: the whole exchange, for your `ProxyHttp` ([`exchange::Paysign::request_filter`])
//!   or for callers that are not HTTP ([`exchange::Paysign::call_as`]): route, authorise, admit,
//!   validate, seal, send, open, verify, answer, count, log; [`upstream`], [`http_client`], [`one_write`], [`addresses`],
//!   [`egress`]: the call;
//! - [`executor`]: the one bounded executor for all private-key work;
//! - [`notify`]: a notification's steps (open, verify, forward); [`notifications`]: the
//!   listener (a pingora service) that runs them and acknowledges;
//! - [`error`]: every failure and the one place it becomes an answer;
//! - [`metrics`], [`logging`] (written by [`log_writer`]'s thread), [`admin`], [`listener`]:
//!   operating it.
//!
//! The wire protocol itself (keys, seal, open) is the pure crate [`protocol`]
//! (`paysign-protocol`).

// The platform is reached over https: without a TLS library every call would fail at run time,
// so refuse to build instead. (Two libraries at once already fail inside pingora-core, E0252.)
#[cfg(not(any(feature = "rustls", feature = "openssl", feature = "boringssl")))]
compile_error!("paysign-plugin needs one TLS feature: `rustls` (the default), `openssl` or `boringssl`");

pub mod addresses;
pub mod admin;
pub mod auth;
pub mod bearer;
pub mod cidr;
pub mod config;
pub mod egress;
pub mod error;
pub mod exchange;
pub mod executor;
pub mod http_client;
pub mod idle_pool;
pub mod listener;
pub mod live;
pub mod log_writer;
pub mod logging;
pub mod metrics;
pub mod notifications;
pub mod notify;
pub mod one_write;
pub mod pkcs11;
pub mod reload;
pub mod serve;
mod stream_wrap;
pub mod upstream;

pub use paysign_protocol as protocol;
use paysign_protocol::{crypto, h5};
