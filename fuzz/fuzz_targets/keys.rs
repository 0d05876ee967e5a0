//! Key loading on arbitrary text: refused with an error, never a panic.
#![no_main]

use libfuzzer_sys::fuzz_target;
use paysign_protocol::crypto::keys;

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else { return };
    let _ = keys::parse_any(text);
    let _ = keys::load_public(text, true);
    let _ = keys::load_private(text, false);
    // As PEM bodies too, where the interesting parsing happens.
    let _ = keys::parse_any(&format!("-----BEGIN PUBLIC KEY-----\n{text}\n-----END PUBLIC KEY-----\n"));
    let _ = keys::parse_any(&format!("-----BEGIN RSA PRIVATE KEY-----\n{text}\n-----END RSA PRIVATE KEY-----\n"));
});
