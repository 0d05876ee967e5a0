//! PKCS#1 v1.5 unpadding with implicit rejection, for a private key whose raw operation runs
//! elsewhere (a PKCS#11 token doing `CKM_RSA_X_509`): the same algorithm the `rsa` crate runs
//! for keys in memory (draft-irtf-cfrg-rsa-guidance-10 §7.1–7.2, whose helpers `rsa` 0.10
//! keeps private), so a badly padded block costs the same work and yields deterministic
//! synthetic bytes instead of an error.
//!
//! Why not let the token unpad (`CKM_RSA_PKCS`): a token refuses bad padding with an error
//! (SoftHSM2: `CKR_GENERAL_ERROR`) and takes a different time doing so; here every block goes
//! through the same constant-time decode and selection, whatever its padding.
//!
//! The only difference from `rsa`: the key-derivation secret cannot be `SHA256(d)` (`d` never
//! leaves the token), so it is a random secret drawn once per opened key. Synthetic bytes are
//! therefore deterministic for a ciphertext within one process (a repeated forgery gets the
//! same answer), as with the AWS-LC backend's per-process secret.

use rsa::sha2::Sha256;
use subtle::{Choice, ConditionallySelectable, ConstantTimeEq, ConstantTimeGreater};

/// The secret synthetic plaintexts are derived from (the draft's `DH`). Redacted in `Debug`.
pub struct RejectionKey([u8; 32]);

impl std::fmt::Debug for RejectionKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("RejectionKey(redacted)")
    }
}

impl RejectionKey {
    pub fn new(secret: [u8; 32]) -> Self {
        RejectionKey(secret)
    }

    /// The message inside `em` (the raw private operation's output for `ciphertext`, `k` =
    /// `ciphertext.len()` octets; shorter is left-padded with zeros, as some tokens strip
    /// leading zero octets): its PKCS#1 v1.5 type-2 payload when well padded, else synthetic
    /// bytes derived from this secret and the ciphertext. Which one is never branched on.
    /// `None` only for public length errors (`k` < 11 or > 8191, `em` longer than `k`).
    pub fn unpad(&self, em: &[u8], ciphertext: &[u8]) -> Option<Vec<u8>> {
        let k = ciphertext.len();
        if !(11..=8191).contains(&k) || em.len() > k {
            return None;
        }
        let mut em_k = vec![0u8; k];
        em_k[k - em.len()..].copy_from_slice(em);

        // Step 3: KDK = HMAC(DH, C); the alternative message and its length.
        let kdk = hmac_sha256(&self.0, &[ciphertext]);
        let cl = irprf(&kdk, b"length", 256);
        let am = irprf(&kdk, b"message", k);
        let max = (k - 11) as u16;
        let al = select_al(&cl, max);

        // Step 4: decode (check and L stay secret).
        let mut check = !em_k[0].ct_eq(&0) | !em_k[1].ct_eq(&2);
        let mut looking = Choice::from(1);
        let mut separator = 0u32;
        for (i, octet) in em_k.iter().enumerate().skip(2) {
            let is_zero = octet.ct_eq(&0);
            separator.conditional_assign(&(i as u32), looking & is_zero);
            looking &= !is_zero;
        }
        check |= looking | !separator.ct_gt(&9);
        let l = u32::conditional_select(&(k as u32).wrapping_sub(separator).wrapping_sub(1), &0, looking);

        // Step 5: select the whole buffer before the (public) length is used.
        let length = u32::conditional_select(&l, &u32::from(al), check) as usize;
        for (e, a) in em_k.iter_mut().zip(am.iter()) {
            e.conditional_assign(a, check);
        }
        Some(em_k[k - length..].to_vec())
    }
}

/// Step 3.3: the last admissible candidate length, or zero (`max` = k - 11).
fn select_al(cl: &[u8], max: u16) -> u16 {
    let mut mask = max;
    mask |= mask >> 1;
    mask |= mask >> 2;
    mask |= mask >> 4;
    mask |= mask >> 8;
    cl.chunks_exact(2).fold(0u16, |al, b| {
        let candidate = u16::from_be_bytes([b[0], b[1]]) & mask;
        u16::conditional_select(&al, &candidate, !candidate.ct_gt(&max))
    })
}

/// The draft's `IRPRF(KDK, label, length)`.
fn irprf(kdk: &[u8; 32], label: &[u8], length: usize) -> Vec<u8> {
    // `length` ≤ 8191 (checked by the caller), so the bit length fits in 16 bits.
    let bits = ((length * 8) as u16).to_be_bytes();
    let mut out = vec![0u8; length];
    for (i, chunk) in (0u16..).zip(out.chunks_mut(32)) {
        let block = hmac_sha256(kdk, &[&i.to_be_bytes(), label, &bits]);
        chunk.copy_from_slice(&block[..chunk.len()]);
    }
    out
}

/// HMAC-SHA256 (RFC 2104) with a 32-octet key, over the concatenation of `parts` (the `hmac`
/// crate `rsa` itself uses for implicit rejection).
fn hmac_sha256(key: &[u8; 32], parts: &[&[u8]]) -> [u8; 32] {
    use hmac::{KeyInit, Mac};
    // HMAC pads a key shorter than SHA-256's 64-octet block with zeros: the padded key given
    // to the fixed-size constructor is the same MAC, with no length to refuse.
    let mut block = [0u8; 64];
    block[..32].copy_from_slice(key);
    let mut mac = hmac::Hmac::<Sha256>::new(&block.into());
    parts.iter().for_each(|p| mac.update(p));
    mac.finalize().into_bytes().into()
}

#[cfg(test)]
mod tests {
    use super::*;
    use rsa::sha2::Digest;
    use rsa::traits::PublicKeyParts;

    #[test]
    fn hmac_matches_rfc_4231() {
        // RFC 4231 test case 2's message with a 32-octet key (the key is zero-padded to the
        // block, so this equals HMAC with the key "Jefe" followed by 28 zero octets).
        let mut key = [0u8; 32];
        key[..4].copy_from_slice(b"Jefe");
        let mac = hmac_sha256(&key, &[b"what do ya want ", b"for nothing?"]);
        let hex: String = mac.iter().map(|b| format!("{b:02x}")).collect();
        assert_eq!(hex, "5bdcc146bf60754e6a042426089575c75a003f089d2739839dec58b964ec3843");
    }

    /// The same decode and selection as `rsa` 0.10: with the secret `rsa` uses for a key
    /// (`SHA256(I2OSP(d, k))`), the result is exactly what `rsa` returns, for good and bad
    /// padding alike.
    #[test]
    fn agrees_with_the_rsa_crate() {
        use rsa::pkcs8::DecodePrivateKey;
        use rsa::traits::PrivateKeyParts;
        let pem = include_str!(concat!(env!("CARGO_MANIFEST_DIR"), "/../../tests/fixtures/keys/merchant_private.pem"));
        let key = rsa::PrivateKey::from_pkcs8_pem(pem).unwrap();
        let k = key.size();
        let be = |v: &[u8]| {
            let mut out = vec![0u8; k];
            let v = &v[v.len().saturating_sub(k)..];
            out[k - v.len()..].copy_from_slice(v);
            out
        };
        let dh: [u8; 32] = Sha256::digest(be(&key.d().to_be_bytes())).into();
        let ours = RejectionKey::new(dh);
        let public = key.to_public_key();
        for i in 0..32u8 {
            // Even cases well padded (messages of several lengths), odd ones not in a different
            // way each: wrong type, no separator, a short padding string.
            let mut em = vec![0x5au8.wrapping_add(i) | 1; k];
            em[0] = 0;
            em[1] = 2;
            match i % 8 {
                1 => em[1] = 1,
                3 => {}
                5 => em[5] = 0,
                7 => em[0] = 1,
                _ => em[k - 1 - usize::from(i) * 5] = 0,
            }
            let m = rsa::BoxedUint::from_be_slice(&em, key.n_bits_precision()).unwrap();
            let ciphertext = be(&rsa::hazmat::rsa_encrypt(&public, &m).unwrap().to_be_bytes());
            let expected = key.decrypt(rsa::Pkcs1v15Encrypt, &ciphertext).unwrap();
            assert_eq!(ours.unpad(&em, &ciphertext), Some(expected.clone()), "case {i}");
            if em[0] == 0 {
                // A token that strips leading zero octets gives the same result.
                assert_eq!(ours.unpad(&em[1..], &ciphertext), Some(expected), "case {i}, stripped");
            }
        }
    }

    #[test]
    fn public_length_errors() {
        let key = RejectionKey::new([7; 32]);
        assert_eq!(key.unpad(&[0; 10], &[0; 10]), None);
        assert_eq!(key.unpad(&[0; 12], &[0; 11]), None);
        // A well-padded block of 11 octets carries the empty message.
        assert_eq!(key.unpad(&[0, 2, 1, 2, 3, 4, 5, 6, 7, 8, 0], &[1; 11]), Some(vec![]));
        // Bad padding: deterministic, and not the raw bytes.
        let bad = [0x42u8; 64];
        let a = key.unpad(&bad, &[9; 64]).unwrap();
        assert_eq!(key.unpad(&bad, &[9; 64]).unwrap(), a);
        assert!(a.len() <= 53);
        assert_ne!(RejectionKey::new([8; 32]).unpad(&bad, &[9; 64]).unwrap(), a);
    }
}
