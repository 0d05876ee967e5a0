//! # paysign-protocol
//!
//! The aggregated-payment platform's wire protocol, pure and synchronous: no I/O, no async
//! runtime, no metrics, no logging (timings reach callers through [`envelope::Observer`]).
//!
//! - [`crypto`]: keys (parsed once), segmented RSA, signatures, on aws-lc or RustCrypto `rsa`;
//! - [`canonical`]: the string that is signed;
//! - [`envelope`]: a merchant seals requests and opens (and verifies) answers and notifications;
//! - [`schema`]: each endpoint's business fields, checked before anything is sent;
//! - [`h5`]: the bank's H5 page from a verified answer;
//! - `platform` (feature `platform`): the platform's side of the same exchange, for the sandbox
//!   and for tests.
//!
//! ```
//! use paysign_protocol::canonicalize;
//! let fields = serde_json::json!({"b": "2", "a": "1", "sign": "x", "empty": ""});
//! assert_eq!(canonicalize(fields.as_object().unwrap()), "a=1&b=2");
//! ```

pub mod canonical;
pub mod crypto;
pub mod envelope;
pub mod h5;
#[cfg(feature = "platform")]
pub mod platform;
pub mod schema;

pub use canonical::canonicalize;
pub use envelope::{
    fields_of, Business, Merchant, MerchantKeys, Observer, OpenError, Opened, PlatformKey, Profile, Rollover, SealError, Sealed,
};
