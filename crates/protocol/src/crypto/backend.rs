//! The second RSA backend: AWS-LC (through `aws-lc-rs`), beside the pure-Rust `rsa` crate.
//!
//! Keys are always parsed by the `rsa` crate (every format, size checks) and then, when the
//! deployment chooses `aws-lc`, also loaded into AWS-LC once. Operations use AWS-LC where it
//! has them and fall back to the `rsa` crate where it does not:
//! - the raw public operation of the type-1 open: `aws-lc-rs` exposes none, so [`RawPublic`]
//!   calls AWS-LC's `RSA_public_decrypt` with `RSA_NO_PADDING` directly (the one `unsafe`
//!   in paysign) and the padding is then checked strictly in Rust; public-key work needs no
//!   constant time;
//! - keys under 2048 bits (AWS-LC refuses them; only reachable with `allow_weak_keys`);
//! - the sandbox's type-1 seal (a raw private operation; test and demo code only).
//!
//! PKCS#1 v1.5 decryption in AWS-LC reports bad padding as an error. To keep the property the
//! `rsa` crate gives (implicit rejection: no padding oracle), a failed block is replaced by
//! pseudo-random bytes derived from the ciphertext and a per-process secret, and processing
//! continues to the signature check, which rejects it like any other tampering.

use std::sync::Arc;

use aws_lc_rs::rand::SystemRandom;
use aws_lc_rs::rsa::{Pkcs1PrivateDecryptingKey, Pkcs1PublicEncryptingKey, PrivateDecryptingKey, PublicEncryptingKey};
use aws_lc_rs::signature::{ParsedPublicKey, RsaKeyPair, RSA_PKCS1_2048_8192_SHA256, RSA_PKCS1_SHA256};
use once_cell::sync::Lazy;
use rsa::pkcs1::EncodeRsaPublicKey;
use rsa::pkcs8::{EncodePrivateKey, EncodePublicKey};
use rsa::sha2::{Digest, Sha256};
use serde::Deserialize;

/// Which implementation does the RSA work.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Default)]
pub enum Backend {
    /// The pure-Rust `rsa` 0.10 crate: constant-time, blinded, implicit rejection.
    #[serde(rename = "rsa")]
    RustCrypto,
    /// AWS-LC: assembly-optimised, constant-time, blinded; several times faster.
    #[default]
    #[serde(rename = "aws-lc")]
    AwsLc,
}

impl Backend {
    pub fn as_str(self) -> &'static str {
        match self {
            Backend::RustCrypto => "rsa",
            Backend::AwsLc => "aws-lc",
        }
    }
}

pub(crate) struct AwsPublic {
    pub(crate) enc: Pkcs1PublicEncryptingKey,
    pub(crate) verify: ParsedPublicKey,
    pub(crate) raw: RawPublic,
}

/// An AWS-LC `RSA*` holding only a public key, for the raw public operation `m = c^e mod n`.
pub(crate) struct RawPublic {
    rsa: std::ptr::NonNull<aws_lc_sys::RSA>,
    size: usize,
}

// SAFETY: AWS-LC documents `RSA` objects as safe for concurrent use by operations that do
// not change the key; the public operation only reads the key and initialises its cached
// Montgomery context under the object's internal lock. The pointer is owned (freed on drop)
// and never handed out.
unsafe impl Send for RawPublic {}
unsafe impl Sync for RawPublic {}

impl RawPublic {
    fn from_pkcs1_der(der: &[u8]) -> Option<Self> {
        // SAFETY: `der` is a valid slice for the duration of the call; AWS-LC copies what it
        // parses and returns either null or a new `RSA*` that we own.
        let ptr = unsafe { aws_lc_sys::RSA_public_key_from_bytes(der.as_ptr(), der.len()) };
        let rsa = std::ptr::NonNull::new(ptr)?;
        // SAFETY: `rsa` is a valid `RSA*` created above.
        let size = unsafe { aws_lc_sys::RSA_size(rsa.as_ptr()) } as usize;
        Some(RawPublic { rsa, size })
    }

    /// `c^e mod n` into `out` (exactly the modulus size). False when `block` is not a valid
    /// input (wrong length, or not below the modulus).
    pub(crate) fn public_op(&self, block: &[u8], out: &mut [u8]) -> bool {
        if block.len() != self.size || out.len() != self.size {
            return false;
        }
        // SAFETY: `block` and `out` are valid for `self.size` bytes (checked above), which is
        // what RSA_NO_PADDING reads and writes; `self.rsa` is a live `RSA*` we own.
        let n = unsafe {
            aws_lc_sys::RSA_public_decrypt(block.len(), block.as_ptr(), out.as_mut_ptr(), self.rsa.as_ptr(), aws_lc_sys::RSA_NO_PADDING)
        };
        usize::try_from(n) == Ok(self.size)
    }
}

impl Drop for RawPublic {
    fn drop(&mut self) {
        // SAFETY: we own the pointer and it is freed exactly once.
        unsafe { aws_lc_sys::RSA_free(self.rsa.as_ptr()) }
    }
}

pub(crate) struct AwsPrivate {
    pub(crate) dec: Pkcs1PrivateDecryptingKey,
    pub(crate) sign: RsaKeyPair,
}

/// `None` when AWS-LC cannot take the key (under 2048 bits): the `rsa` crate then does the work.
pub(crate) fn load_public(key: &rsa::PublicKey) -> Option<Arc<AwsPublic>> {
    let spki = key.to_public_key_der().ok()?;
    let pkcs1 = key.to_pkcs1_der().ok()?;
    let enc = Pkcs1PublicEncryptingKey::new(PublicEncryptingKey::from_der(spki.as_bytes()).ok()?).ok()?;
    let verify = ParsedPublicKey::new(&RSA_PKCS1_2048_8192_SHA256, pkcs1.as_bytes()).ok()?;
    let raw = RawPublic::from_pkcs1_der(pkcs1.as_bytes())?;
    Some(Arc::new(AwsPublic { enc, verify, raw }))
}

pub(crate) fn load_private(key: &rsa::PrivateKey) -> Option<Arc<AwsPrivate>> {
    let pkcs8 = key.to_pkcs8_der().ok()?;
    let dec = Pkcs1PrivateDecryptingKey::new(PrivateDecryptingKey::from_pkcs8(pkcs8.as_bytes()).ok()?).ok()?;
    let sign = RsaKeyPair::from_pkcs8(pkcs8.as_bytes()).ok()?;
    Some(Arc::new(AwsPrivate { dec, sign }))
}

static RNG: Lazy<SystemRandom> = Lazy::new(SystemRandom::new);

/// Per-process secret for the synthetic plaintext of a block that failed to decrypt.
static REJECTION_KEY: Lazy<[u8; 32]> = Lazy::new(|| {
    let mut k = [0u8; 32];
    // A failed RNG would leave zeros: still deterministic garbage, never an oracle.
    let _ = aws_lc_rs::rand::fill(&mut k);
    k
});

pub(crate) fn encrypt_block(key: &AwsPublic, chunk: &[u8], out: &mut [u8]) -> bool {
    key.enc.encrypt(chunk, out).is_ok()
}

/// Decrypts one block; on any failure returns synthetic bytes instead (see the module doc).
pub(crate) fn decrypt_block(key: &AwsPrivate, block: &[u8], out: &mut Vec<u8>) {
    let mut buf = vec![0u8; key.dec.min_output_size()];
    match key.dec.decrypt(block, &mut buf) {
        Ok(plain) => out.extend_from_slice(plain),
        Err(_) => synthetic_block(block, out),
    }
}

/// The bytes a refused block decrypts to (implicit rejection): deterministic for the block,
/// pseudo-random, of a plausible length, so the caller's later checks reject it like any other
/// garbage and nothing reveals which block or step failed.
pub(crate) fn synthetic_block(block: &[u8], out: &mut Vec<u8>) {
    let mut h = Sha256::new();
    h.update(*REJECTION_KEY);
    h.update(block);
    let seed = h.finalize();
    let len = block.len().saturating_sub(11).saturating_sub(usize::from(seed[0] % 64));
    let mut synthetic = Vec::with_capacity(len + 32);
    let mut counter = 0u32;
    while synthetic.len() < len {
        let mut h = Sha256::new();
        h.update(seed);
        h.update(counter.to_be_bytes());
        synthetic.extend_from_slice(&h.finalize());
        counter += 1;
    }
    synthetic.truncate(len);
    out.extend_from_slice(&synthetic);
}

pub(crate) fn sign(key: &AwsPrivate, msg: &[u8]) -> Option<Vec<u8>> {
    let mut sig = vec![0u8; key.sign.public_modulus_len()];
    key.sign.sign(&RSA_PKCS1_SHA256, &*RNG, msg, &mut sig).ok()?;
    Some(sig)
}

pub(crate) fn verify(key: &AwsPublic, msg: &[u8], sig: &[u8]) -> bool {
    key.verify.verify_sig(msg, sig).is_ok()
}
