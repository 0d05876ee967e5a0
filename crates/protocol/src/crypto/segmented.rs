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
    let mut em = vec![0u8; k];
    for block in raw.chunks(k) {
        out.extend_from_slice(open_type1_into(key, block, &mut em)?);
    }
    Ok(out)
}

/// Opens one `k`-byte type-1 block (exposed for `paysign open`, which names the bad block).
pub fn open_type1_block(key: &PublicKey, block: &[u8]) -> Result<Vec<u8>, CryptoError> {
    Ok(open_type1_into(key, block, &mut vec![0u8; key.size()])?.to_vec())
}

/// [`open_type1_block`] with `em` (`k` bytes) as working memory: the data, borrowed from it.
fn open_type1_into<'a>(key: &PublicKey, block: &[u8], em: &'a mut Vec<u8>) -> Result<&'a [u8], CryptoError> {
    let k = key.size();
    if block.len() != k {
        return Err(CryptoError::Encoding);
    }
    if let Some(aws) = &key.aws {
        if !aws.raw.public_op(block, em) {
            return Err(CryptoError::Padding);
        }
        return strip_type1(em);
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
    em.clear();
    em.extend_from_slice(&wide[wide.len() - k..]);
    strip_type1(em)
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

    /// The test-only platform keys of tests/fixtures (compiled in: this crate does no I/O).
    const PLATFORM_PUBLIC: &str = include_str!("../../../../tests/fixtures/keys/platform_public.pem");
    const PLATFORM_PRIVATE: &str = include_str!("../../../../tests/fixtures/keys/platform_private.pem");

    /// The platform's side of the test: its private key in the `rsa` crate, for the raw
    /// private operation (the block before any padding is checked).
    fn raw_private(block: &[u8]) -> Vec<u8> {
        enum NoRng {}
        impl rsa::rand_core::TryRng for NoRng {
            type Error = std::convert::Infallible;
            fn try_next_u32(&mut self) -> Result<u32, Self::Error> {
                match *self {}
            }
            fn try_next_u64(&mut self) -> Result<u64, Self::Error> {
                match *self {}
            }
            fn try_fill_bytes(&mut self, _: &mut [u8]) -> Result<(), Self::Error> {
                match *self {}
            }
        }
        impl rsa::rand_core::TryCryptoRng for NoRng {}
        let key = crate::crypto::keys::load_private(PLATFORM_PRIVATE, false).unwrap();
        let Held::Memory { inner, .. } = &key.held else { unreachable!() };
        let c = BoxedUint::from_be_slice(block, inner.n_bits_precision()).unwrap();
        let m = rsa::hazmat::rsa_decrypt_and_check::<NoRng>(inner, None, &c).unwrap().to_be_bytes();
        let mut em = vec![0u8; block.len()];
        em[block.len() - m.len().min(block.len())..].copy_from_slice(&m[m.len().saturating_sub(block.len())..]);
        em
    }

    /// paysign writes the type-2 padding itself on the AWS-LC backend: every byte of the
    /// block is checked after the private operation, at the chunk sizes' edges, on threads
    /// of their own (each has its own scratch bignums).
    #[test]
    fn aws_lc_type2_blocks_are_exactly_pkcs1_v1_5() {
        let public = crate::crypto::keys::load_public(PLATFORM_PUBLIC, false).unwrap().with_backend(super::super::Backend::AwsLc);
        let aws = public.aws.clone().unwrap();
        let k = public.size();
        assert_eq!(k, 256);
        std::thread::scope(|scope| {
            for len in [0, 1, 117, k - 11] {
                let aws = aws.clone();
                scope.spawn(move || {
                    let chunk: Vec<u8> = (0..len).map(|i| (i * 7 % 256) as u8).collect();
                    let (mut a, mut b) = (vec![0u8; k], vec![0u8; k]);
                    assert!(backend::encrypt_block(&aws, &chunk, &mut a));
                    assert!(backend::encrypt_block(&aws, &chunk, &mut b));
                    assert_ne!(a, b, "the padding is random");
                    for block in [a, b] {
                        let em = raw_private(&block);
                        let sep = k - len - 1;
                        assert_eq!(&em[..2], &[0x00, 0x02]);
                        assert!(sep - 2 >= 8 && em[2..sep].iter().all(|&x| x != 0), "{len}: {:?}", &em[2..sep]);
                        assert_eq!(em[sep], 0x00);
                        assert_eq!(&em[sep + 1..], &chunk[..]);
                    }
                });
            }
        });
        // A chunk that leaves less than eight padding bytes, or an output of the wrong size: refused.
        assert!(!backend::encrypt_block(&aws, &vec![1u8; k - 10], &mut vec![0u8; k]));
        assert!(!backend::encrypt_block(&aws, b"x", &mut vec![0u8; k - 1]));
    }

    /// The public operation agrees with the `rsa` crate's, and refuses what is not a block.
    #[test]
    fn aws_lc_public_operation_matches_the_rsa_crate() {
        let public = crate::crypto::keys::load_public(PLATFORM_PUBLIC, false).unwrap().with_backend(super::super::Backend::AwsLc);
        let aws = public.aws.clone().unwrap();
        let k = public.size();
        for seed in 1..=4u8 {
            let mut x = vec![0u8; k];
            aws_lc_rs::rand::fill(&mut x[1..]).unwrap();
            x[1] = seed;
            let mut ours = vec![0u8; k];
            assert!(aws.raw.public_op(&x, &mut ours));
            let c = BoxedUint::from_be_slice(&x, public.inner.n_bits_precision()).unwrap();
            let theirs = rsa_encrypt(&public.inner, &c).unwrap().to_be_bytes();
            assert_eq!(&ours[..], &theirs[theirs.len() - k..]);
        }
        let mut out = vec![0u8; k];
        assert!(!aws.raw.public_op(&vec![0xFF; k], &mut out), "not below the modulus");
        assert!(!aws.raw.public_op(&vec![0x01; k - 1], &mut out), "short");
        assert!(!aws.raw.public_op(&vec![0x01; k], &mut vec![0u8; k + 1]), "output size");
    }

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
