//! Private keys at work: the one bounded executor every private-key operation goes through, and
//! keys held in a PKCS#11 token.

pub mod executor;
pub mod pkcs11;
