//! The two `sign` schemes: upper-case hex MD5 over `canonical&key=<md5Key>` (`md5` profile) and
//! base64 SHA256withRSA (RSASSA-PKCS1-v1_5) over the canonical string (`rsa` profile).

use base64::Engine;
use rsa::sha2::Sha256;
use subtle::ConstantTimeEq;

use super::keys::Held;
use super::{backend, CryptoError, PrivateKey, PublicKey, Secret};

const B64: base64::engine::GeneralPurpose = base64::engine::general_purpose::STANDARD;

/// `UPPERCASE_HEX(MD5(UTF8(canonical + "&key=" + md5Key)))`.
pub fn md5_sign(canonical: &str, key: &Secret) -> String {
    let mut h = backend::Md5::new();
    h.update(canonical.as_bytes());
    h.update(b"&key=");
    h.update(key.expose().as_bytes());
    hex::encode_upper(h.finalize())
}

/// Compares case-insensitively and in constant time (for equal lengths).
pub fn md5_verify(canonical: &str, key: &Secret, sign: &str) -> bool {
    let expected = md5_sign(canonical, key);
    let given = sign.to_ascii_uppercase();
    expected.as_bytes().ct_eq(given.as_bytes()).into()
}

/// `BASE64(SHA256withRSA(private, UTF8(canonical)))`.
pub fn rsa_sign(key: &PrivateKey, canonical: &str) -> Result<String, CryptoError> {
    let sig = match &key.held {
        Held::Memory { aws: Some(aws), .. } => backend::sign(aws, canonical.as_bytes()).ok_or(CryptoError::Private)?,
        Held::Memory { inner, aws: None } => inner.pkcs1v15_sign::<Sha256>(canonical.as_bytes()).map_err(|_| CryptoError::Private)?,
        Held::External(token) => token.sign_sha256(canonical.as_bytes()).map_err(|_| CryptoError::Private)?,
    };
    Ok(B64.encode(sig))
}

/// Verifies a base64 SHA256withRSA signature (line breaks in the base64 tolerated).
pub fn rsa_verify(key: &PublicKey, canonical: &str, sign: &str) -> bool {
    let compact: String = sign.chars().filter(|c| !c.is_ascii_whitespace()).collect();
    let Ok(sig) = B64.decode(compact) else {
        return false;
    };
    match &key.aws {
        Some(aws) => backend::verify(aws, canonical.as_bytes(), &sig),
        None => key.inner.pkcs1v15_verify::<Sha256>(canonical.as_bytes(), &sig).is_ok(),
    }
}
