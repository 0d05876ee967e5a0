//! The envelope parser and opener, on both profiles: any bytes a platform (or an attacker)
//! sends must be refused or verified, never panic; and anything "verified" must really carry a
//! valid signature (impossible to forge by fuzzing, so Verified must never happen).
#![no_main]

use std::sync::{Arc, OnceLock};

use libfuzzer_sys::fuzz_target;
use paysign_protocol::crypto::{keys, Backend, Secret};
use paysign_protocol::{Merchant, MerchantKeys, Opened};

// TEST-ONLY keys (tests/fixtures/keys).
const PLATFORM_PUBLIC: &str = include_str!("../../tests/fixtures/keys/platform_public.pem");
const MERCHANT_PRIVATE: &str = include_str!("../../tests/fixtures/keys/merchant_private.pem");

fn merchants() -> &'static [Merchant] {
    static M: OnceLock<Vec<Merchant>> = OnceLock::new();
    M.get_or_init(|| {
        let mut out = Vec::new();
        for b in [Backend::AwsLc, Backend::RustCrypto] {
            let public = Arc::new(keys::load_public(PLATFORM_PUBLIC, false).unwrap().with_backend(b));
            let private = Arc::new(keys::load_private(MERCHANT_PRIVATE, false).unwrap().with_backend(b));
            out.push(Merchant {
                customer_no: "202112090603".into(),
                keys: MerchantKeys::Md5 { md5_key: Secret::new("fuzz-md5-key".into()), platform_public: public.clone() },
                chunk_size: 245,
                rollover: None,
            });
            out.push(Merchant {
                customer_no: "202112090603".into(),
                keys: MerchantKeys::Rsa { merchant_private: private, platform_public: public },
                chunk_size: 245,
                rollover: None,
            });
        }
        out
    })
}

fuzz_target!(|data: &[u8]| {
    for m in merchants() {
        if let Ok(Opened::Verified { .. }) = m.open_response(data) {
            panic!("fuzzer forged a verified answer");
        }
        if let Ok(serde_json::Value::Object(d)) = serde_json::from_slice::<serde_json::Value>(data) {
            if let Ok(Opened::Verified { .. }) = m.open_data(&d) {
                panic!("fuzzer forged a verified notification");
            }
        }
    }
});
