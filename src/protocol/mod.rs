//! The wire protocol, pure and synchronous: [`canonical`] builds what is signed,
//! [`envelope`] seals requests and opens responses for a merchant, [`platform`] is the
//! platform's side of the same exchange (used by the sandbox and by tests), and [`schema`]
//! validates business fields against the endpoints' tables before anything is sent.

pub mod canonical;
pub mod envelope;
pub mod platform;
pub mod schema;

pub use canonical::canonicalize;
pub use envelope::{Merchant, MerchantKeys, OpenError, Opened, Profile, SealError, Sealed};
