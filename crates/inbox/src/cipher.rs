//! Payloads at rest: AES-256-GCM, a fresh random nonce per payload, the notification's id as
//! associated data.

use aws_lc_rs::aead::{Aad, LessSafeKey, Nonce, UnboundKey, AES_256_GCM, NONCE_LEN};

/// The inbox key. Its `Debug` never shows it.
pub struct Cipher {
    key: LessSafeKey,
}

impl std::fmt::Debug for Cipher {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Cipher(AES-256-GCM, key not shown)")
    }
}

/// The key material is not a 256-bit key.
#[derive(Debug, thiserror::Error)]
#[error("the inbox key must be 64 hex digits (a 256-bit key, e.g. from `openssl rand -hex 32`); got {0} characters")]
pub struct KeyError(pub usize);

impl Cipher {
    /// From 32 raw bytes.
    pub fn new(key: &[u8]) -> Result<Self, KeyError> {
        let unbound = UnboundKey::new(&AES_256_GCM, key).map_err(|_| KeyError(key.len() * 2))?;
        Ok(Cipher { key: LessSafeKey::new(unbound) })
    }

    /// From the text of a key file or variable: 64 hex digits (surrounding whitespace ignored).
    pub fn from_hex(text: &str) -> Result<Self, KeyError> {
        let text = text.trim();
        let bytes: Option<Vec<u8>> = text
            .len()
            .is_multiple_of(2)
            .then(|| (0..text.len()).step_by(2).map(|i| u8::from_str_radix(text.get(i..i + 2)?, 16).ok()).collect())
            .flatten();
        match bytes {
            Some(b) => Self::new(&b),
            None => Err(KeyError(text.len())),
        }
    }

    /// `nonce || ciphertext || tag`.
    pub fn seal(&self, id: &str, plaintext: &[u8]) -> Vec<u8> {
        let mut nonce = [0u8; NONCE_LEN];
        // A failing system RNG leaves no safe nonce: refuse to store rather than reuse one.
        if aws_lc_rs::rand::fill(&mut nonce).is_err() {
            return Vec::new();
        }
        let mut out = Vec::with_capacity(NONCE_LEN + plaintext.len() + 16);
        out.extend_from_slice(&nonce);
        out.extend_from_slice(plaintext);
        let mut body = out.split_off(NONCE_LEN);
        match self.key.seal_in_place_append_tag(Nonce::assume_unique_for_key(nonce), Aad::from(id.as_bytes()), &mut body) {
            Ok(()) => {
                out.extend_from_slice(&body);
                out
            }
            Err(_) => Vec::new(),
        }
    }

    /// The plaintext, or `None` when the payload was not sealed for `id` with this key.
    pub fn open(&self, id: &str, sealed: &[u8]) -> Option<Vec<u8>> {
        if sealed.len() < NONCE_LEN + 16 {
            return None;
        }
        let (nonce, body) = sealed.split_at(NONCE_LEN);
        let nonce = Nonce::try_assume_unique_for_key(nonce).ok()?;
        let mut body = body.to_vec();
        let plain = self.key.open_in_place(nonce, Aad::from(id.as_bytes()), &mut body).ok()?;
        let n = plain.len();
        body.truncate(n);
        Some(body)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_payload_opens_only_for_its_id_and_key() {
        let c = Cipher::from_hex(&"11".repeat(32)).unwrap();
        let sealed = c.seal("n1", b"{\"certNo\":\"X\"}");
        assert_eq!(sealed.len(), 12 + 14 + 16);
        assert!(!sealed.windows(5).any(|w| w == b"certN"));
        assert_eq!(c.open("n1", &sealed).unwrap(), b"{\"certNo\":\"X\"}");
        assert!(c.open("n2", &sealed).is_none());
        let other = Cipher::from_hex(&"22".repeat(32)).unwrap();
        assert!(other.open("n1", &sealed).is_none());
        // Two seals of one payload differ (fresh nonce).
        assert_ne!(c.seal("n1", b"x"), c.seal("n1", b"x"));
    }

    #[test]
    fn keys_must_be_256_bits_of_hex() {
        assert_eq!(
            Cipher::from_hex("abcd").unwrap_err().to_string(),
            "the inbox key must be 64 hex digits (a 256-bit key, e.g. from `openssl rand -hex 32`); got 4 characters"
        );
        assert!(Cipher::from_hex(&"zz".repeat(32)).is_err());
        assert!(Cipher::from_hex(&format!(" {}\n", "ab".repeat(32))).is_ok());
        assert!(format!("{:?}", Cipher::from_hex(&"ab".repeat(32)).unwrap()).contains("not shown"));
    }
}
