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

/// `openssl speed -seconds N rsa2048`, pinned to `core` with `taskset` when given:
/// (private ops/s, public ops/s) — its sign and verify rates — or `None` when unavailable.
pub fn openssl_speed(seconds: u32, core: Option<&str>) -> Option<(f64, f64)> {
    let secs = seconds.to_string();
    let mut args = vec!["speed", "-seconds", secs.as_str(), "rsa2048"];
    let program = match core {
        Some(c) => {
            args.splice(0..0, ["-c", c, "openssl"]);
            "taskset"
        }
        None => "openssl",
    };
    let out = std::process::Command::new(program).args(&args).output().ok()?;
    let text = String::from_utf8_lossy(&out.stdout);
    // "rsa 2048 bits 0.000771s 0.000023s   1297.0  43478.3"
    let line = text.lines().find(|l| l.trim_start().starts_with("rsa 2048 bits") || l.trim_start().starts_with("rsa  2048 bits"))?;
    let nums: Vec<f64> = line.split_whitespace().filter_map(|w| w.parse::<f64>().ok()).collect();
    let n = nums.len();
    (n >= 2).then(|| (nums[n - 2], nums[n - 1]))
}
