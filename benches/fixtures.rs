//! Shared bench inputs: the test keys (TEST-ONLY, from tests/fixtures) and business objects of
//! a given JSON size.

#![allow(dead_code)]

use std::sync::Arc;

use paysign_protocol::crypto::{keys, Backend, PrivateKey, PublicKey, Secret};
use paysign_protocol::platform::{Platform, PlatformMerchant, PlatformMerchantKeys};
use paysign_protocol::{Merchant, MerchantKeys};
use serde_json::{Map, Value};

pub const CUSTOMER: &str = "202112090603";
pub const MD5_KEY: &str = "test-md5-key-0123456789abcdef";

fn read(name: &str) -> String {
    std::fs::read_to_string(format!("{}/tests/fixtures/keys/{name}", env!("CARGO_MANIFEST_DIR"))).unwrap()
}
pub fn public(name: &str, b: Backend) -> Arc<PublicKey> {
    Arc::new(keys::load_public(&read(name), false).unwrap().with_backend(b))
}
pub fn private(name: &str, b: Backend) -> Arc<PrivateKey> {
    Arc::new(keys::load_private(&read(name), false).unwrap().with_backend(b))
}

/// A bindCard/create-like object whose compact JSON is about `size` bytes.
pub fn business(size: usize) -> Map<String, Value> {
    let mut m: Map<String, Value> = serde_json::from_str(
        r#"{"orderNo":"2022090700001","userType":"EMAIL","identifyId":"xxxx@email.com","bankCardType":"CREDIT","bankCode":"ICBC","bankCardName":"张三","certType":"ID","certNo":"110123199001011234","mobile":"18812345678","expiredTime":"2023-01-01 12:05:01","bindNotifyUrl":"http://xxxx/xxxx","pageReturnUrl":"http://xxxx/xxxx"}"#,
    )
    .unwrap();
    let base = Value::Object(m.clone()).to_string().len();
    let pad = size.saturating_sub(base + 10);
    m.insert("note".into(), Value::String("x".repeat(pad)));
    m
}

pub fn merchant(profile: &str, b: Backend) -> Merchant {
    let platform_public = public("platform_public.pem", b);
    let keys = if profile == "md5" {
        MerchantKeys::Md5 { md5_key: Secret::new(MD5_KEY.into()), platform_public: platform_public.clone() }
    } else {
        MerchantKeys::Rsa { merchant_private: private("merchant_private.pem", b), platform_public: platform_public.clone() }
    };
    Merchant { customer_no: CUSTOMER.into(), keys, chunk_size: 245, rollover: None }
}

pub fn platform(profile: &str, b: Backend) -> (Platform, PlatformMerchant) {
    let keys = if profile == "md5" {
        PlatformMerchantKeys::Md5 { md5_key: Secret::new(MD5_KEY.into()) }
    } else {
        PlatformMerchantKeys::Rsa { merchant_public: public("merchant_public.pem", b) }
    };
    (
        Platform { private: private("platform_private.pem", b), previous: None },
        PlatformMerchant { customer_no: CUSTOMER.into(), keys, previous: None },
    )
}

/// A sealed platform answer of about `size` bytes of plaintext.
pub fn answer(profile: &str, size: usize, b: Backend) -> Vec<u8> {
    let (p, pm) = platform(profile, b);
    let mut fields = business(size);
    fields.insert("customerNo".into(), Value::String(CUSTOMER.into()));
    fields.insert("errCode".into(), Value::String("0000".into()));
    p.seal_response(&pm, fields).unwrap()
}
