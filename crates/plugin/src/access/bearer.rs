//! `Authorization: Bearer <token>`: the one parser for callers and the admin, and the one
//! constant-time comparison of a presented token with a stored SHA-256.

use subtle::ConstantTimeEq;

/// What a request presents.
pub enum Presented<'a> {
    Missing,
    /// Repeated, not `Bearer …`, or not text.
    Malformed,
    Token(&'a str),
}

pub fn presented(headers: &http::HeaderMap) -> Presented<'_> {
    let mut values = headers.get_all(http::header::AUTHORIZATION).iter();
    match (values.next(), values.next()) {
        (None, _) => Presented::Missing,
        (Some(v), None) => match v.to_str().ok().and_then(|v| v.strip_prefix("Bearer ")) {
            Some(token) => Presented::Token(token.trim()),
            None => Presented::Malformed,
        },
        (Some(_), Some(_)) => Presented::Malformed,
    }
}

/// Whether a token's SHA-256 (see [`crate::config::sha256`]) equals a stored one, in constant time.
pub fn same(presented_sha256: &[u8; 32], stored_sha256: &[u8; 32]) -> bool {
    bool::from(presented_sha256.ct_eq(stored_sha256))
}
