//! Segmented RSA over `reqmsg` (PROTOCOL.md, "Segmented RSA"): the UTF-8 bytes are cut into
//! chunks, each chunk becomes one `k`-byte PKCS#1 v1.5 block, the blocks are concatenated and
//! base64-encoded. Opening reverses it block by block.

use base64::Engine;
use rsa::hazmat::rsa_encrypt;
use rsa::traits::PublicKeyParts;
use rsa::{BoxedUint, Pkcs1v15Sign};

use super::keys::{ExternalError, Held};
use super::{backend, CryptoError, PrivateKey, PublicKey};

const B64: base64::engine::GeneralPurpose = base64::engine::general_purpose::STANDARD;

/// Minimum number of `FF` bytes in a type-1 padding string (RFC 8017 §9.2 / PKCS#1 v1.5).
const MIN_TYPE1_PAD: usize = 8;

/// Checks a configured chunk size against a key; `None` means "derive it" (`k - 11`).
pub fn chunk_size_for(key: &PublicKey, configured: Option<usize>) -> Result<usize, String> {
    let max = key.max_chunk();
    match configured {
        None => Ok(max),
        Some(0) => Err("chunk_size must be at least 1".into()),
        Some(n) if n > max => {
            Err(format!("chunk_size {n} is larger than a {}-bit key can carry in one PKCS#1 v1.5 block ({max} bytes)", key.bits()))
        }
        Some(n) => Ok(n),
    }
}

/// Encrypts `plaintext` chunk by chunk with PKCS#1 v1.5 type 2 (random padding) under `key`.
pub fn encrypt(key: &PublicKey, plaintext: &[u8], chunk: usize) -> Result<String, CryptoError> {
    if chunk == 0 || chunk > key.max_chunk() {
        return Err(CryptoError::Encrypt);
    }
    let k = key.size();
    let blocks = plaintext.len().div_ceil(chunk).max(1);
    let mut out = vec![0u8; blocks * k];
    let parts: Box<dyn Iterator<Item = &[u8]>> =
        if plaintext.is_empty() { Box::new(std::iter::once(&[][..])) } else { Box::new(plaintext.chunks(chunk)) };
    for (part, slot) in parts.zip(out.chunks_mut(k)) {
        match &key.aws {
            Some(aws) => {
                if !backend::encrypt_block(aws, part, slot) {
                    return Err(CryptoError::Encrypt);
                }
            }
            None => slot.copy_from_slice(&key.inner.pkcs1v15_encrypt(part).map_err(|_| CryptoError::Encrypt)?),
        }
    }
    Ok(B64.encode(out))
}

/// Base64-decodes a `reqmsg` (tolerating the line breaks Java encoders insert) and checks
/// that it is a non-zero whole number of `k`-byte blocks.
pub fn decode_blocks(reqmsg: &str, k: usize) -> Result<Vec<u8>, CryptoError> {
    // Decoded as it is first (the common case: one pass); only text that fails is looked at
    // again without its whitespace.
    let raw = B64
        .decode(reqmsg)
        .or_else(|_| {
            let compact: Vec<u8> = reqmsg.bytes().filter(|b| !b.is_ascii_whitespace()).collect();
            B64.decode(compact)
        })
        .map_err(|_| CryptoError::Encoding)?;
    if raw.is_empty() || raw.len() % k != 0 {
        return Err(CryptoError::Encoding);
    }
    Ok(raw)
}

/// Decrypts each block with the private key (PKCS#1 v1.5 type 2, implicit rejection: a
/// tampered block yields pseudo-random bytes, never a distinguishable error; the caller's
/// signature check is what rejects it).
pub fn decrypt(key: &PrivateKey, reqmsg: &str) -> Result<Vec<u8>, CryptoError> {
    let k = key.size();
    let raw = decode_blocks(reqmsg, k)?;
    let mut out = Vec::with_capacity(raw.len());
    for block in raw.chunks(k) {
        match &key.held {
            Held::Memory { aws: Some(aws), .. } => backend::decrypt_block(aws, block, &mut out),
            Held::Memory { inner, aws: None } => out.extend_from_slice(&inner.pkcs1v15_decrypt(block).map_err(|_| CryptoError::Padding)?),
            // Every block is decrypted, and a refused one becomes synthetic bytes, as in
            // memory: neither the answer nor the time taken tells which block failed or why.
            Held::External(token) => match token.decrypt_block(block) {
                Ok(plain) => out.extend_from_slice(&plain),
                Err(ExternalError::Rejected) => backend::synthetic_block(block, &mut out),
                Err(ExternalError::Unavailable) => return Err(CryptoError::Private),
            },
        }
    }
    Ok(out)
}

/// Opens blocks the platform "encrypted" with its private key (Java `Cipher("RSA")` in
/// ENCRYPT_MODE with a private key = PKCS#1 v1.5 type 1): the public operation `c^e mod n`,
/// then a strict check of `00 01 FF{8,} 00` before the data. Public data, so no constant time
/// is needed here.
pub fn open_type1(key: &PublicKey, reqmsg: &str) -> Result<Vec<u8>, CryptoError> {
    let k = key.size();
    let raw = decode_blocks(reqmsg, k)?;
    let mut out = Vec::with_capacity(raw.len());
    for block in raw.chunks(k) {
        out.extend_from_slice(&open_type1_block(key, block)?);
    }
    Ok(out)
}

/// Opens one `k`-byte type-1 block (exposed for `paysign open`, which names the bad block).
pub fn open_type1_block(key: &PublicKey, block: &[u8]) -> Result<Vec<u8>, CryptoError> {
    let k = key.size();
    if block.len() != k {
        return Err(CryptoError::Encoding);
    }
    if let Some(aws) = &key.aws {
        let mut em = vec![0u8; k];
        if !aws.raw.public_op(block, &mut em) {
            return Err(CryptoError::Padding);
        }
        return Ok(strip_type1(&em)?.to_vec());
    }
    let c = BoxedUint::from_be_slice(block, key.inner.n_bits_precision()).map_err(|_| CryptoError::Padding)?;
    if c >= *key.inner.n().as_ref() {
        return Err(CryptoError::Padding);
    }
    let m = rsa_encrypt(&key.inner, &c).map_err(|_| CryptoError::Padding)?;
    let wide = m.to_be_bytes();
    if wide.len() < k {
        return Err(CryptoError::Padding);
    }
    Ok(strip_type1(&wide[wide.len() - k..])?.to_vec())
}

fn strip_type1(em: &[u8]) -> Result<&[u8], CryptoError> {
    if em.len() < 11 || em[0] != 0x00 || em[1] != 0x01 {
        return Err(CryptoError::Padding);
    }
    let pad = em[2..].iter().take_while(|&&b| b == 0xFF).count();
    let sep = 2 + pad;
    if pad < MIN_TYPE1_PAD || sep >= em.len() || em[sep] != 0x00 {
        return Err(CryptoError::Padding);
    }
    Ok(&em[sep + 1..])
}

/// The platform's side of [`open_type1`] (used by the sandbox): each chunk is padded with
/// type 1 and put through the private-key operation.
pub fn seal_type1(key: &PrivateKey, plaintext: &[u8], chunk: usize) -> Result<String, CryptoError> {
    if chunk == 0 || chunk > key.public().max_chunk() {
        return Err(CryptoError::Encrypt);
    }
    let mut out = Vec::with_capacity(plaintext.len().div_ceil(chunk) * key.size());
    // The platform's side runs in the sandbox and tests only, with keys in memory.
    let Held::Memory { inner, .. } = &key.held else {
        return Err(CryptoError::Private);
    };
    for part in plaintext.chunks(chunk) {
        let block = inner.sign(Pkcs1v15Sign::new_unprefixed(), part).map_err(|_| CryptoError::Private)?;
        out.extend_from_slice(&block);
    }
    Ok(B64.encode(out))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn strip_type1_is_strict() {
        let mut em = vec![0u8, 1];
        em.extend([0xFF; 8]);
        em.push(0);
        em.extend(b"hi");
        assert_eq!(strip_type1(&em).unwrap(), b"hi");
        let mut short = vec![0u8, 1];
        short.extend([0xFF; 7]);
        short.extend([0, b'a', b'b']);
        assert_eq!(strip_type1(&short), Err(CryptoError::Padding));
        let mut type2 = em.clone();
        type2[1] = 2;
        assert_eq!(strip_type1(&type2), Err(CryptoError::Padding));
        let mut no_sep = vec![0u8, 1];
        no_sep.extend([0xFF; 20]);
        assert_eq!(strip_type1(&no_sep), Err(CryptoError::Padding));
    }
}
