//! The second RSA backend: AWS-LC (through `aws-lc-rs`), beside the pure-Rust `rsa` crate.
//!
//! Keys are always parsed by the `rsa` crate (every format, size checks) and then, when the
//! deployment chooses `aws-lc`, also loaded into AWS-LC once. Operations use AWS-LC where it
//! has them and fall back to the `rsa` crate where it does not:
//! - the public operation `x^e mod n`, for the type-1 open and for encryption: `aws-lc-rs`
//!   exposes no raw form, so [`RawPublic`] calls AWS-LC's bignum functions directly (the one
//!   `unsafe` in paysign): AWS-LC's own `BN_mod_exp_mont` (what its `RSA_public_*` functions
//!   run), with the key's Montgomery context made once at load and a per-thread scratch
//!   context, so a block costs no allocation. The type-1 padding is checked strictly in Rust;
//!   the type-2 padding of encryption (`00 02`, at least eight random non-zero bytes, `00`,
//!   the chunk) is written in Rust from AWS-LC's random generator. Public-key work needs no
//!   constant time (AWS-LC's public operation is not constant-time either);
//! - MD5 for the `md5` profile's `sign` (`aws-lc-rs` has none): AWS-LC's assembly implementation,
//!   whichever backend the keys use;
//! - keys under 2048 bits (AWS-LC refuses them; only reachable with `allow_weak_keys`);
//! - the sandbox's type-1 seal (a raw private operation; test and demo code only).
//!
//! PKCS#1 v1.5 decryption in AWS-LC reports bad padding as an error. To keep the property the
//! `rsa` crate gives (implicit rejection: no padding oracle), a failed block is replaced by
//! pseudo-random bytes derived from the ciphertext and a per-process secret, and processing
//! continues to the signature check, which rejects it like any other tampering.

use std::cell::RefCell;
use std::ptr::{self, NonNull};
use std::sync::Arc;

use aws_lc_rs::rand::SystemRandom;
use aws_lc_rs::rsa::{Pkcs1PrivateDecryptingKey, PrivateDecryptingKey, PublicEncryptingKey};
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
    pub(crate) verify: ParsedPublicKey,
    pub(crate) raw: RawPublic,
}

/// An AWS-LC `RSA*` holding only a public key, with its Montgomery context, for the public
/// operation `x^e mod n`.
pub(crate) struct RawPublic {
    rsa: NonNull<aws_lc_sys::RSA>,
    mont: NonNull<aws_lc_sys::BN_MONT_CTX>,
    size: usize,
}

// SAFETY: both objects are made at load and only read afterwards: `BN_mod_exp_mont` reads the
// modulus, exponent and Montgomery context and writes only into the calling thread's
// [`Scratch`]. The pointers are owned (freed on drop) and never handed out.
unsafe impl Send for RawPublic {}
unsafe impl Sync for RawPublic {}

impl RawPublic {
    fn from_pkcs1_der(der: &[u8]) -> Option<Self> {
        // SAFETY: `der` is a valid slice for the duration of the call; AWS-LC copies what it
        // parses and returns either null or a new `RSA*` that we own.
        let rsa = NonNull::new(unsafe { aws_lc_sys::RSA_public_key_from_bytes(der.as_ptr(), der.len()) })?;
        // SAFETY: `rsa` is a valid `RSA*`; its modulus lives as long as it does, and the new
        // Montgomery context (null on failure) is ours.
        let mont = unsafe { aws_lc_sys::BN_MONT_CTX_new_for_modulus(aws_lc_sys::RSA_get0_n(rsa.as_ptr()), ptr::null_mut()) };
        let Some(mont) = NonNull::new(mont) else {
            // SAFETY: freed exactly once, here.
            unsafe { aws_lc_sys::RSA_free(rsa.as_ptr()) };
            return None;
        };
        // SAFETY: `rsa` is a valid `RSA*`.
        let size = unsafe { aws_lc_sys::RSA_size(rsa.as_ptr()) } as usize;
        Some(RawPublic { rsa, mont, size })
    }

    /// `c^e mod n` into `out` (exactly the modulus size). False when `block` is not a valid
    /// input (wrong length, or not below the modulus).
    pub(crate) fn public_op(&self, block: &[u8], out: &mut [u8]) -> bool {
        if block.len() != self.size || out.len() != self.size {
            return false;
        }
        out.copy_from_slice(block);
        self.public_op_in_place(out)
    }

    /// `x^e mod n` for the `k` bytes in `buf`, written back over them.
    fn public_op_in_place(&self, buf: &mut [u8]) -> bool {
        if buf.len() != self.size {
            return false;
        }
        Scratch::with(|scratch| {
            // SAFETY: `buf` is valid for `self.size` bytes, read before it is written; `self.rsa`
            // and `self.mont` are live objects we own, only read here; the scratch bignums and
            // context belong to this thread alone (see `Scratch`).
            unsafe {
                let n = aws_lc_sys::RSA_get0_n(self.rsa.as_ptr());
                let e = aws_lc_sys::RSA_get0_e(self.rsa.as_ptr());
                let ok = !aws_lc_sys::BN_bin2bn(buf.as_ptr(), buf.len(), scratch.x).is_null()
                    && aws_lc_sys::BN_ucmp(scratch.x, n) < 0
                    && aws_lc_sys::BN_mod_exp_mont(scratch.y, scratch.x, e, n, scratch.ctx, self.mont.as_ptr()) == 1
                    && aws_lc_sys::BN_bn2bin_padded(buf.as_mut_ptr(), buf.len(), scratch.y) == 1;
                // The message does not stay behind in the thread's bignums.
                aws_lc_sys::BN_clear(scratch.x);
                aws_lc_sys::BN_clear(scratch.y);
                ok
            }
        })
        .unwrap_or(false)
    }
}

impl Drop for RawPublic {
    fn drop(&mut self) {
        // SAFETY: we own both pointers and each is freed exactly once.
        unsafe {
            aws_lc_sys::BN_MONT_CTX_free(self.mont.as_ptr());
            aws_lc_sys::RSA_free(self.rsa.as_ptr());
        }
    }
}

/// One thread's working memory for the public operation: a bignum context and two bignums,
/// kept between operations so that a block costs no allocation (AWS-LC's `RSA_public_*`
/// functions allocate and free about 17 times per block).
struct Scratch {
    ctx: *mut aws_lc_sys::BN_CTX,
    x: *mut aws_lc_sys::BIGNUM,
    y: *mut aws_lc_sys::BIGNUM,
}

thread_local! {
    static SCRATCH: RefCell<Option<Scratch>> = const { RefCell::new(None) };
}

impl Scratch {
    fn new() -> Option<Self> {
        // SAFETY: plain constructors; each result is checked and owned by the `Scratch` (freed
        // on drop, null included).
        let scratch = unsafe { Scratch { ctx: aws_lc_sys::BN_CTX_new(), x: aws_lc_sys::BN_new(), y: aws_lc_sys::BN_new() } };
        (!scratch.ctx.is_null() && !scratch.x.is_null() && !scratch.y.is_null()).then_some(scratch)
    }

    /// Runs `f` with this thread's scratch (made on first use); `None` if it cannot be made.
    fn with<R>(f: impl FnOnce(&Scratch) -> R) -> Option<R> {
        SCRATCH
            .try_with(|cell| {
                let mut slot = cell.try_borrow_mut().ok()?;
                if slot.is_none() {
                    *slot = Scratch::new();
                }
                slot.as_ref().map(f)
            })
            .ok()
            .flatten()
    }
}

impl Drop for Scratch {
    fn drop(&mut self) {
        // SAFETY: owned by this `Scratch` and freed exactly once; the `*_free` functions accept null.
        unsafe {
            aws_lc_sys::BN_clear_free(self.x);
            aws_lc_sys::BN_clear_free(self.y);
            aws_lc_sys::BN_CTX_free(self.ctx);
        }
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
    // aws-lc-rs' own check of the key for encryption (size, exponent), kept as the gate.
    PublicEncryptingKey::from_der(spki.as_bytes()).ok()?;
    let verify = ParsedPublicKey::new(&RSA_PKCS1_2048_8192_SHA256, pkcs1.as_bytes()).ok()?;
    let raw = RawPublic::from_pkcs1_der(pkcs1.as_bytes())?;
    Some(Arc::new(AwsPublic { verify, raw }))
}

pub(crate) fn load_private(key: &rsa::PrivateKey) -> Option<Arc<AwsPrivate>> {
    let pkcs8 = key.to_pkcs8_der().ok()?;
    let dec = Pkcs1PrivateDecryptingKey::new(PrivateDecryptingKey::from_pkcs8(pkcs8.as_bytes()).ok()?).ok()?;
    let sign = RsaKeyPair::from_pkcs8(pkcs8.as_bytes()).ok()?;
    Some(Arc::new(AwsPrivate { dec, sign }))
}

/// MD5 (the `md5` profile's `sign`) by AWS-LC's assembly implementation: ~20 % faster than
/// the pure-Rust `md-5` over a canonical string (2.07 vs 2.61 µs for 1,400 bytes here). The
/// context is wiped when dropped (it has held the MD5 key).
pub(crate) struct Md5(aws_lc_sys::MD5_CTX);

impl Md5 {
    pub(crate) fn new() -> Self {
        // SAFETY: `MD5_CTX` is plain data (no pointers); `MD5_Init` sets every field.
        let mut ctx: aws_lc_sys::MD5_CTX = unsafe { std::mem::zeroed() };
        // SAFETY: `ctx` is a valid, exclusively borrowed `MD5_CTX`. MD5_Init cannot fail.
        unsafe { aws_lc_sys::MD5_Init(&mut ctx) };
        Md5(ctx)
    }

    pub(crate) fn update(&mut self, data: &[u8]) {
        // SAFETY: `data` is valid for `data.len()` bytes; the context is ours. MD5_Update cannot fail.
        unsafe { aws_lc_sys::MD5_Update(&mut self.0, data.as_ptr().cast(), data.len()) };
    }

    pub(crate) fn finalize(mut self) -> [u8; 16] {
        let mut out = [0u8; 16];
        // SAFETY: `out` has the 16 bytes MD5_Final writes; the context is ours. It cannot fail.
        unsafe { aws_lc_sys::MD5_Final(out.as_mut_ptr(), &mut self.0) };
        out
    }
}

/// The context has seen the MD5 key: wiped when it goes.
impl Drop for Md5 {
    fn drop(&mut self) {
        // SAFETY: the context is ours and `size_of` bytes long.
        unsafe {
            aws_lc_sys::OPENSSL_cleanse((&mut self.0 as *mut aws_lc_sys::MD5_CTX).cast(), std::mem::size_of::<aws_lc_sys::MD5_CTX>())
        };
    }
}

static RNG: Lazy<SystemRandom> = Lazy::new(SystemRandom::new);

/// Per-process secret for the synthetic plaintext of a block that failed to decrypt.
static REJECTION_KEY: Lazy<[u8; 32]> = Lazy::new(|| {
    let mut k = [0u8; 32];
    // A failed RNG would leave zeros: still deterministic garbage, never an oracle.
    let _ = aws_lc_rs::rand::fill(&mut k);
    k
});

/// PKCS#1 v1.5 type-2 encryption of one chunk into `out` (the modulus size): `00 02`, random
/// non-zero bytes (at least eight), `00`, the chunk; then the public operation. False when
/// the chunk does not fit or the random generator fails.
pub(crate) fn encrypt_block(key: &AwsPublic, chunk: &[u8], out: &mut [u8]) -> bool {
    let k = key.raw.size;
    if out.len() != k || chunk.len() + 11 > k {
        return false;
    }
    let (head, message) = out.split_at_mut(k - chunk.len());
    message.copy_from_slice(chunk);
    head[0] = 0x00;
    head[1] = 0x02;
    head[k - chunk.len() - 1] = 0x00;
    non_zero_random(&mut head[2..k - chunk.len() - 1]) && key.raw.public_op_in_place(out)
}

/// Fills `buf` with random bytes none of which is zero (zeros are drawn again).
fn non_zero_random(buf: &mut [u8]) -> bool {
    if aws_lc_rs::rand::fill(buf).is_err() {
        return false;
    }
    let mut spare = [0u8; 32];
    let mut left = 0;
    for b in buf.iter_mut().filter(|b| **b == 0) {
        while *b == 0 {
            if left == 0 {
                if aws_lc_rs::rand::fill(&mut spare).is_err() {
                    return false;
                }
                left = spare.len();
            }
            left -= 1;
            *b = spare[left];
        }
    }
    true
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
