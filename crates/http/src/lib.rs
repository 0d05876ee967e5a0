//! # paysign-http
//!
//! The HTTP plumbing the paysign gateway (`paysign-plugin`) and its platform simulator
//! (`paysign-sandbox`) share, so that neither depends on the other's internals:
//!
//! - [`client`]: outgoing HTTP/1.1 POSTs over pooled connections to every address of a name
//!   ([`addresses`]), idle connections watched in [`idle_pool`], a request's head and body in one
//!   write ([`one_write`]);
//! - [`serve`]: a bounded request body and an answer with an exact `Content-Length`;
//! - [`reload`]: reloadable state read once per request.

#[cfg(not(any(feature = "rustls", feature = "openssl", feature = "boringssl")))]
compile_error!("paysign-http needs one TLS feature: `rustls` (the default), `openssl` or `boringssl`");

pub mod addresses;
pub mod client;
pub mod idle_pool;
pub mod one_write;
pub mod reload;
pub mod serve;
mod stream_wrap;
