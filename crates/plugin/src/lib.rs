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
//! - [`metrics`], [`logging`] (through `tracing`; the binary's subscriber written by
//!   [`log_writer`]'s thread), [`admin`], [`listener`] (safeguards for any pingora service),
//!   [`sighup`] (SIGHUP → reload, a background service): operating it.
//!
//! The wire protocol itself (keys, seal, open) is the pure crate [`protocol`]
//! (`paysign-protocol`).

// The platform is reached over https: without a TLS library every call would fail at run time,
// so refuse to build instead. (Two libraries at once already fail inside pingora-core, E0252.)
#[cfg(not(any(feature = "rustls", feature = "openssl", feature = "boringssl")))]
compile_error!("paysign-plugin needs one TLS feature: `rustls` (the default), `openssl` or `boringssl`");

pub mod access;
pub mod config;
pub mod error;
pub mod exchange;
pub mod keys;
pub mod live;
pub mod notifications;
pub mod notify;
pub mod ops;
pub mod upstream;

// The modules under their short names, for paths inside the crate (and, until the facade
// settles, outside it).
pub use access::{auth, bearer, cidr};
pub use keys::{executor, pkcs11};
pub use ops::{admin, listener, log_writer, logging, metrics, sighup};
pub use upstream::egress;

pub use paysign_protocol as protocol;
// The HTTP plumbing shared with the sandbox (crates/http), under the names the modules use.
use paysign_http::{addresses, client as http_client, reload, serve};
use paysign_protocol::{crypto, h5};
