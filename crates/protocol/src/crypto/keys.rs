//! Key loading: PEM `PUBLIC KEY` (SPKI), PEM `RSA PUBLIC KEY` (PKCS#1) and bare base64 of either
//! for public keys; PEM `PRIVATE KEY` (PKCS#8), PEM `RSA PRIVATE KEY` (PKCS#1) and bare base64 of
//! either for private keys. Keys are parsed once (start-up or reload) and then shared.

use std::fmt;
use std::sync::Arc;

use base64::Engine;
use rsa::pkcs1::{DecodeRsaPrivateKey, DecodeRsaPublicKey};
use rsa::pkcs8::{DecodePrivateKey, DecodePublicKey};
use rsa::traits::PublicKeyParts;

use super::backend::{self, AwsPrivate, AwsPublic, Backend};

/// Smallest modulus accepted unless weak keys are explicitly allowed (PROTOCOL.md, Keys).
pub const MIN_BITS: usize = 2048;

/// An RSA public key with its modulus size in bytes cached (`k` in PKCS#1).
#[derive(Clone)]
pub struct PublicKey {
    pub(crate) inner: rsa::PublicKey,
    k: usize,
    /// Set when the deployment uses the AWS-LC backend and AWS-LC accepts the key.
    pub(crate) aws: Option<Arc<AwsPublic>>,
}

/// An RSA private key. `Debug` never prints key material.
#[derive(Clone)]
pub struct PrivateKey {
    pub(crate) held: Held,
    public: PublicKey,
}

/// Where the private key lives.
#[derive(Clone)]
#[allow(clippy::large_enum_variant)] // one per configured key, parsed once and shared by Arc
pub(crate) enum Held {
    /// In this process: RustCrypto's key, and AWS-LC's copy when that backend is used.
    Memory { inner: rsa::PrivateKey, aws: Option<Arc<AwsPrivate>> },
    /// Outside it (an HSM): only the two operations the protocol needs cross the boundary.
    External(Arc<dyn ExternalKey>),
}

/// A private key that never enters this process (a PKCS#11 token): PKCS#1 v1.5 decryption of
/// one block and SHA256withRSA signing, done where the key is.
///
/// Bad padding must not be an error at all: let the token do the raw operation and unpad with
/// [`super::RejectionKey`] (implicit rejection, constant time), so that a badly padded block
/// costs and ends like a good one. Any other refusal of a block is [`ExternalError::Rejected`]:
/// the caller continues with synthetic bytes, so the token cannot become a padding oracle.
/// [`ExternalError::Unavailable`] is for the token itself failing (gone, session lost).
pub trait ExternalKey: Send + Sync {
    fn decrypt_block(&self, block: &[u8]) -> Result<Vec<u8>, ExternalError>;
    fn sign_sha256(&self, message: &[u8]) -> Result<Vec<u8>, ExternalError>;
    /// What to show in logs (e.g. the PKCS#11 URI without secrets).
    fn describe(&self) -> String;
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ExternalError {
    /// The operation ran and refused this input (for decryption: any ciphertext problem).
    Rejected,
    /// The key could not be used (token removed, session lost, module error).
    Unavailable,
}

/// A secret string (the MD5 signing key). Redacted in `Debug` and `Display`.
#[derive(Clone)]
pub struct Secret(String);

impl Secret {
    pub fn new(s: String) -> Self {
        Secret(s)
    }
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Secret(<redacted>)")
    }
}

impl fmt::Debug for PublicKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "PublicKey(rsa-{})", self.bits())
    }
}

impl fmt::Debug for PrivateKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.held {
            Held::Memory { .. } => write!(f, "PrivateKey(rsa-{}, <redacted>)", self.public.bits()),
            Held::External(e) => write!(f, "PrivateKey(rsa-{}, {})", self.public.bits(), e.describe()),
        }
    }
}

impl PublicKey {
    fn new(inner: rsa::PublicKey) -> Self {
        let k = inner.size();
        PublicKey { inner, k, aws: None }
    }
    /// Loads the key into `backend` as well (once, at start-up).
    pub fn with_backend(mut self, backend: Backend) -> Self {
        self.aws = match backend {
            Backend::AwsLc => backend::load_public(&self.inner),
            Backend::RustCrypto => None,
        };
        self
    }
    /// The backend that will do this key's work.
    pub fn backend(&self) -> Backend {
        if self.aws.is_some() {
            Backend::AwsLc
        } else {
            Backend::RustCrypto
        }
    }
    /// Modulus length in bytes: the size of every ciphertext block and signature.
    pub fn size(&self) -> usize {
        self.k
    }
    pub fn bits(&self) -> usize {
        self.inner.n().as_ref().bit_width_vartime() as usize
    }
    /// The most plaintext one PKCS#1 v1.5 block can carry: `k - 11`.
    pub fn max_chunk(&self) -> usize {
        self.k - 11
    }
}

impl PrivateKey {
    fn new(inner: rsa::PrivateKey) -> Self {
        let public = PublicKey::new(inner.to_public_key());
        PrivateKey { held: Held::Memory { inner, aws: None }, public }
    }

    /// A key held outside this process, with its public half (read from the token).
    pub fn external(public: PublicKey, key: Arc<dyn ExternalKey>) -> Self {
        PrivateKey { held: Held::External(key), public }
    }

    /// Loads the key (and its public half) into `backend` as well (once, at start-up).
    pub fn with_backend(mut self, backend: Backend) -> Self {
        self.public = self.public.with_backend(backend);
        if let Held::Memory { inner, aws } = &mut self.held {
            *aws = match backend {
                Backend::AwsLc => backend::load_private(inner),
                Backend::RustCrypto => None,
            };
        }
        self
    }

    /// `aws-lc`, `rsa`, or `external` (an HSM).
    pub fn backend_name(&self) -> &'static str {
        match &self.held {
            Held::Memory { aws: Some(_), .. } => Backend::AwsLc.as_str(),
            Held::Memory { aws: None, .. } => Backend::RustCrypto.as_str(),
            Held::External(_) => "external",
        }
    }

    pub fn is_external(&self) -> bool {
        matches!(self.held, Held::External(_))
    }
    pub fn public(&self) -> &PublicKey {
        &self.public
    }
    pub fn size(&self) -> usize {
        self.public.size()
    }
}

/// The key formats we recognise, for messages and for `keys check`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum KeyFormat {
    PemSpki,
    PemPkcs1Public,
    PemPkcs8,
    PemPkcs1Private,
    Base64Spki,
    Base64Pkcs1Public,
    Base64Pkcs8,
    Base64Pkcs1Private,
}

impl fmt::Display for KeyFormat {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            KeyFormat::PemSpki => "PEM PUBLIC KEY (SPKI)",
            KeyFormat::PemPkcs1Public => "PEM RSA PUBLIC KEY (PKCS#1)",
            KeyFormat::PemPkcs8 => "PEM PRIVATE KEY (PKCS#8)",
            KeyFormat::PemPkcs1Private => "PEM RSA PRIVATE KEY (PKCS#1)",
            KeyFormat::Base64Spki => "base64 DER SPKI public key",
            KeyFormat::Base64Pkcs1Public => "base64 DER PKCS#1 public key",
            KeyFormat::Base64Pkcs8 => "base64 DER PKCS#8 private key",
            KeyFormat::Base64Pkcs1Private => "base64 DER PKCS#1 private key",
        })
    }
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum KeyError {
    #[error("not an RSA key in a supported format (PEM PUBLIC KEY / RSA PUBLIC KEY / PRIVATE KEY / RSA PRIVATE KEY, or bare base64 DER)")]
    Unrecognised,
    #[error("is a private key, but a public key is expected here")]
    PrivateWherePublic,
    #[error("is a public key, but a private key is expected here")]
    PublicWherePrivate,
    #[error("PEM block '{0}' is not an RSA key")]
    UnsupportedPem(String),
    #[error("{format} could not be parsed: {detail}")]
    Malformed { format: KeyFormat, detail: String },
    #[error("is a {bits}-bit key; at least {min} bits are required (set allow_weak_keys to accept it, for testing only)")]
    TooSmall { bits: usize, min: usize },
}

/// What kind of key a text holds, without caring which slot it is for (used by `keys check`).
/// Short-lived (one per key file checked), so its size does not matter.
#[allow(clippy::large_enum_variant)]
pub enum AnyKey {
    Public(PublicKey, KeyFormat),
    Private(PrivateKey, KeyFormat),
}

fn pem_label(text: &str) -> Option<&str> {
    let start = text.find("-----BEGIN ")? + "-----BEGIN ".len();
    let rest = &text[start..];
    let end = rest.find("-----")?;
    Some(&rest[..end])
}

fn bare_der(text: &str) -> Option<Vec<u8>> {
    let compact: String = text.chars().filter(|c| !c.is_ascii_whitespace()).collect();
    if compact.is_empty() {
        return None;
    }
    base64::engine::general_purpose::STANDARD.decode(compact).ok()
}

fn malformed(format: KeyFormat, e: impl fmt::Display) -> KeyError {
    KeyError::Malformed { format, detail: e.to_string() }
}

/// Parses any supported key text.
pub fn parse_any(text: &str) -> Result<AnyKey, KeyError> {
    if let Some(label) = pem_label(text) {
        return match label {
            "PUBLIC KEY" => rsa::PublicKey::from_public_key_pem(text)
                .map(|k| AnyKey::Public(PublicKey::new(k), KeyFormat::PemSpki))
                .map_err(|e| malformed(KeyFormat::PemSpki, e)),
            "RSA PUBLIC KEY" => rsa::PublicKey::from_pkcs1_pem(text)
                .map(|k| AnyKey::Public(PublicKey::new(k), KeyFormat::PemPkcs1Public))
                .map_err(|e| malformed(KeyFormat::PemPkcs1Public, e)),
            "PRIVATE KEY" => rsa::PrivateKey::from_pkcs8_pem(text)
                .map(|k| AnyKey::Private(PrivateKey::new(k), KeyFormat::PemPkcs8))
                .map_err(|e| malformed(KeyFormat::PemPkcs8, e)),
            "RSA PRIVATE KEY" => rsa::PrivateKey::from_pkcs1_pem(text)
                .map(|k| AnyKey::Private(PrivateKey::new(k), KeyFormat::PemPkcs1Private))
                .map_err(|e| malformed(KeyFormat::PemPkcs1Private, e)),
            other => Err(KeyError::UnsupportedPem(other.to_string())),
        };
    }
    let der = bare_der(text).ok_or(KeyError::Unrecognised)?;
    // Try each DER structure; platforms label "PKCS#8" files that are really PKCS#1.
    if let Ok(k) = rsa::PublicKey::from_public_key_der(&der) {
        return Ok(AnyKey::Public(PublicKey::new(k), KeyFormat::Base64Spki));
    }
    if let Ok(k) = rsa::PrivateKey::from_pkcs8_der(&der) {
        return Ok(AnyKey::Private(PrivateKey::new(k), KeyFormat::Base64Pkcs8));
    }
    if let Ok(k) = rsa::PrivateKey::from_pkcs1_der(&der) {
        return Ok(AnyKey::Private(PrivateKey::new(k), KeyFormat::Base64Pkcs1Private));
    }
    if let Ok(k) = rsa::PublicKey::from_pkcs1_der(&der) {
        return Ok(AnyKey::Public(PublicKey::new(k), KeyFormat::Base64Pkcs1Public));
    }
    Err(KeyError::Unrecognised)
}

fn check_size(bits: usize, allow_weak: bool) -> Result<(), KeyError> {
    if bits < MIN_BITS && !allow_weak {
        return Err(KeyError::TooSmall { bits, min: MIN_BITS });
    }
    Ok(())
}

/// Loads a public key from text in any supported format.
pub fn load_public(text: &str, allow_weak: bool) -> Result<PublicKey, KeyError> {
    match parse_any(text)? {
        AnyKey::Public(k, _) => {
            check_size(k.bits(), allow_weak)?;
            Ok(k)
        }
        AnyKey::Private(..) => Err(KeyError::PrivateWherePublic),
    }
}

/// Loads a private key from text in any supported format.
pub fn load_private(text: &str, allow_weak: bool) -> Result<PrivateKey, KeyError> {
    match parse_any(text)? {
        AnyKey::Private(k, _) => {
            check_size(k.public().bits(), allow_weak)?;
            Ok(k)
        }
        AnyKey::Public(..) => Err(KeyError::PublicWherePrivate),
    }
}

/// A public key from its modulus and exponent (big-endian bytes, as a PKCS#11 token shows
/// them), with the same size checks as [`load_public`].
pub fn public_from_components(n: &[u8], e: &[u8], allow_weak: bool) -> Result<PublicKey, KeyError> {
    fn der_len(len: usize, out: &mut Vec<u8>) {
        match len {
            0..=0x7f => out.push(len as u8),
            0x80..=0xff => out.extend_from_slice(&[0x81, len as u8]),
            _ => out.extend_from_slice(&[0x82, (len >> 8) as u8, len as u8]),
        }
    }
    fn der_uint(v: &[u8], out: &mut Vec<u8>) {
        let v = &v[v.iter().position(|b| *b != 0).unwrap_or(v.len().saturating_sub(1))..];
        let pad = v.first().is_some_and(|b| b & 0x80 != 0);
        out.push(0x02);
        der_len(v.len() + usize::from(pad), out);
        if pad {
            out.push(0);
        }
        out.extend_from_slice(v);
    }
    // Through PKCS#1 DER, so the key is decoded exactly as one read from a file (same integer
    // precision: `is_pair` compares them). RSAPublicKey ::= SEQUENCE { n INTEGER, e INTEGER }
    let mut body = Vec::with_capacity(n.len() + e.len() + 16);
    der_uint(n, &mut body);
    der_uint(e, &mut body);
    let mut der = vec![0x30];
    der_len(body.len(), &mut der);
    der.extend_from_slice(&body);
    let inner = rsa::PublicKey::from_pkcs1_der(&der).map_err(|e| malformed(KeyFormat::Base64Pkcs1Public, e))?;
    check_size(inner.size() * 8, allow_weak)?;
    Ok(PublicKey::new(inner))
}

/// Whether a private and a public key belong together.
pub fn is_pair(private: &PrivateKey, public: &PublicKey) -> bool {
    private.public().inner == public.inner
}
