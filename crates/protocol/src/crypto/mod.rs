//! RSA and MD5 primitives the protocol is built from, one file per role:
//! [`keys`] loads keys in every format platforms hand out, [`segmented`] does the
//! block-by-block PKCS#1 v1.5 work on `reqmsg`, [`signature`] computes and checks `sign`.
//!
//! Errors here are deliberately coarse: the outside world learns "it did not verify",
//! never which step failed (see `docs` on [`CryptoError`]).

pub mod backend;
pub mod keys;
pub mod rejection;
pub mod segmented;
pub mod signature;

pub use backend::Backend;
pub use keys::{ExternalError, ExternalKey, PrivateKey, PublicKey, Secret};
pub use rejection::RejectionKey;

/// Why a crypto operation on input failed. The variant is for metrics and logs inside paysign;
/// callers all get the same opaque answer.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum CryptoError {
    /// `reqmsg` is not base64, or its length is not a non-zero multiple of the block size.
    #[error("ciphertext encoding or length is invalid")]
    Encoding,
    /// A block's padding is wrong (type-1 open), or the block is not below the modulus.
    #[error("ciphertext block does not open")]
    Padding,
    /// Plaintext too long for one block, chunk size not usable, or RNG failure.
    #[error("encryption failed")]
    Encrypt,
    /// A private-key operation failed (key or RNG problem).
    #[error("private-key operation failed")]
    Private,
}
