//! # paysign-plugin
//!
//! paysign as a component of your pingora gateway: everything between a merchant's internal
//! services and the payment platform's open API — seal, send, open, verify, answer; verify and
//! hand on the platform's notifications — with its safeguards built in. The `paysign` binary is
//! one consumer of exactly this API.
//!
//! ```text
//! internal service ──plaintext JSON──▶ paysign ──{customerNo, reqmsg}──▶ platform
//! internal service ◀──verified JSON─── paysign ◀──{code, data:{reqmsg}}── platform
//! platform ──notification──▶ paysign ──verified JSON──▶ internal service
//! ```
//!
//! What an embedder uses:
//! - [`Paysign`]: one instance per configuration — [`Paysign::from_file`] or
//!   [`Paysign::new`] with a [`config::Config`] from the [builder](config::Config::builder), its
//!   [`Metrics`] registered into the `prometheus` registry you give;
//! - [`Paysign::request_filter`] and [`Paysign::logging`]: the whole exchange from your
//!   `ProxyHttp` in one call each, with [`Exchange`] as (part of) your request context;
//!   [`Paysign::call_as`] for callers that are not HTTP; every failure a [`GatewayError`] with
//!   `status()`, `body()` and [`delivery()`](GatewayError::delivery) (may the platform have
//!   acted?);
//! - [`Notifications`]: the platform's notifications as a ready pingora service (safeguards
//!   applied), handing verified ones to a [`NotificationTarget`];
//! - [`safeguarded_service`] / [`Limits`]: the connection bound, head deadline and head size
//!   bound for any pingora service of yours; [`ReloadOnSighup`]: SIGHUP reloads
//!   ([`Live::reload`]) as a pingora background service;
//! - [`logging`]: paysign logs through `tracing` into your subscriber ([`logging::init`] installs
//!   the binary's JSON one).
//!
//! ```no_run
//! use async_trait::async_trait;
//! use paysign_plugin::{Exchange, Listener, Paysign};
//! use pingora::prelude::*;
//! use pingora::proxy::{ProxyHttp, Session};
//!
//! struct MyGateway {
//!     paysign: Paysign,
//! }
//!
//! #[async_trait]
//! impl ProxyHttp for MyGateway {
//!     type CTX = Exchange;
//!     fn new_ctx(&self) -> Exchange {
//!         Exchange::default()
//!     }
//!
//!     async fn request_filter(&self, session: &mut Session, ex: &mut Exchange) -> Result<bool> {
//!         // `/api/…` is answered by paysign (`Ok(true)`); anything else goes on (`Ok(false)`).
//!         self.paysign.request_filter(session, ex).await
//!     }
//!
//!     async fn upstream_peer(&self, _: &mut Session, _: &mut Exchange) -> Result<Box<HttpPeer>> {
//!         Ok(Box::new(HttpPeer::new("127.0.0.1:3000", false, String::new())))
//!     }
//!
//!     async fn logging(&self, session: &mut Session, e: Option<&pingora::Error>, ex: &mut Exchange) {
//!         // paysign's access line and request metrics (nothing for a request not its own).
//!         self.paysign.logging(session, e, ex);
//!     }
//! }
//!
//! # fn main() -> std::result::Result<(), Box<dyn std::error::Error>> {
//! let registry = prometheus::Registry::new(); // paysign's metrics: serve it on your /metrics
//! let paysign = Paysign::from_file("conf/paysign.yaml".as_ref(), &registry)?;
//! paysign_plugin::config::announce(&paysign.live().current().config); // what was loaded
//! // pingora's threads and a grace that outlasts paysign's drain.
//! let mut server = Server::new_with_opt_and_conf(None, paysign.server_conf());
//! server.bootstrap();
//! let proxy = pingora::proxy::http_proxy(&server.configuration, MyGateway { paysign: paysign.clone() });
//! // Behind the binary's safeguards: connection bound, head deadline and size.
//! server.add_service(paysign.safeguarded("my gateway", Listener::Proxy, "127.0.0.1:8000", proxy));
//! if let Some(notifications) = paysign.notification_service() {
//!     server.add_service(notifications); // notify.listen, safeguarded, allow_from at accept
//! }
//! server.add_service(paysign.reload_on_sighup()?); // SIGHUP reloads instead of ending the process
//! paysign.exit_when_drained(server.watch_execution_phase())?; // SIGTERM: exit once nothing is in flight
//! server.run_forever();
//! # }
//! ```
//!
//! `examples/my_gateway.rs` is the whole of it (ordinary routes proxied, notifications, its own
//! metrics endpoint, SIGHUP), and the project's contract tests run against it as against the
//! binary. The wire protocol itself (keys, seal, open) is the pure crate [`protocol`].

#![warn(missing_docs)]

// The platform is reached over https: without a TLS library every call would fail at run time,
// so refuse to build instead. (Two libraries at once already fail inside pingora-core, E0252.)
#[cfg(not(any(feature = "rustls", feature = "openssl", feature = "boringssl")))]
compile_error!("paysign-plugin needs one TLS feature: `rustls` (the default), `openssl` or `boringssl`");

// The roles, each in its folder (docs/architecture.md draws the tree).
mod access;
pub mod config;
mod error;
mod exchange;
mod keys;
mod live;
mod notify;
mod ops;
mod services;
mod upstream;

pub use error::{Delivery, GatewayError};
pub use exchange::{Exchange, Paysign, StartError, Verified, DEADLINE_HEADER, DELIVERY_HEADER, MERCHANT_HEADER, REQUEST_ID_HEADER};
/// Private keys held in a PKCS#11 token (for tools such as `paysign keys check`).
pub use keys::pkcs11;
pub use live::{ListenerChange, Live, ReloadError, ReloadSource, Reloaded, Runtime};
pub use notify::{
    notification_id, Deliverer, HttpTarget, InboxCell, NotificationOutcome, NotificationTarget, Notifications, TargetAnswer, TargetError,
    NOTIFICATION_ID_HEADER, NOTIFY_NICE,
};
pub use ops::admin::{Admin, ReadyState};
/// Shutdown that never abandons a call: the drain deadline and pingora's settings for it.
pub use ops::drain;
pub use ops::inbox_admin::{inbox_admin, InboxAnswer};
pub use ops::listener::{request_parsed, safeguarded_service, tcp_listener, Limited, Limits, PeerCheck};
/// paysign's logs: through `tracing`; [`logging::init`] installs the binary's JSON lines.
pub use ops::logging;
/// The metrics' label sets and helpers ([`Metrics`] is the instance's).
pub use ops::metrics;
pub use ops::metrics::{Listener, Metrics};
pub use ops::sighup::{Reload, ReloadOnSighup};
/// The durable notification inbox's stores (`notify.inbox`): the [`inbox::Inbox`] trait, SQLite and
/// PostgreSQL.
pub use paysign_inbox as inbox;
pub use paysign_protocol as protocol;
/// The `prometheus` paysign's [`Metrics`] are registered with (the registry you pass is one).
pub use prometheus;

// Short names inside the crate.
use access::{auth, bearer, cidr};
use keys::executor;
use ops::{listener, log_writer};
use paysign_http::{addresses, client as http_client, reload, serve};
use paysign_protocol::{crypto, h5};
use upstream::egress;
