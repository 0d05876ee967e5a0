//! Replays the kept fuzz corpus (fuzz/corpus, grown by `cargo fuzz` and minimised) through the
//! same checks as the fuzz targets, so every input a fuzzer ever found interesting — and any
//! crash, once fixed, saved there — stays a regression test in the normal suite.

use std::path::PathBuf;
use std::sync::Arc;

use paysign_protocol::crypto::{keys, Backend, Secret};
use paysign_protocol::schema::Endpoints;
use paysign_protocol::{canonicalize, Business, Merchant, MerchantKeys, Opened};
use serde_json::Value;

fn corpus(target: &str) -> Vec<(PathBuf, Vec<u8>)> {
    let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("fuzz/corpus").join(target);
    let mut out: Vec<_> =
        std::fs::read_dir(&dir).unwrap().map(|e| e.unwrap().path()).map(|p| (p.clone(), std::fs::read(p).unwrap())).collect();
    out.sort();
    assert!(out.len() >= 5, "{} holds {} inputs", dir.display(), out.len());
    out
}

fn fixture(name: &str) -> String {
    std::fs::read_to_string(PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/keys").join(name)).unwrap()
}

#[test]
fn open_response_corpus_never_verifies_or_panics() {
    let mut merchants = Vec::new();
    for b in [Backend::AwsLc, Backend::RustCrypto] {
        let public = Arc::new(keys::load_public(&fixture("platform_public.pem"), false).unwrap().with_backend(b));
        let private = Arc::new(keys::load_private(&fixture("merchant_private.pem"), false).unwrap().with_backend(b));
        merchants.push(Merchant {
            customer_no: "202112090603".into(),
            keys: MerchantKeys::Md5 { md5_key: Secret::new("fuzz-md5-key".into()), platform_public: public.clone() },
            chunk_size: 245,
            rollover: None,
        });
        merchants.push(Merchant {
            customer_no: "202112090603".into(),
            keys: MerchantKeys::Rsa { merchant_private: private, platform_public: public },
            chunk_size: 245,
            rollover: None,
        });
    }
    for (path, data) in corpus("open_response") {
        for m in &merchants {
            assert!(!matches!(m.open_response(&data), Ok(Opened::Verified { .. })), "{}", path.display());
            if let Ok(Value::Object(d)) = serde_json::from_slice::<Value>(&data) {
                assert!(!matches!(m.open_data(&d), Ok(Opened::Verified { .. })), "{}", path.display());
            }
        }
    }
}

#[test]
fn canonical_corpus_keeps_its_invariants() {
    let eps = Endpoints::builtin().unwrap();
    let mut objects = 0;
    for (path, data) in corpus("canonical") {
        let parsed = serde_json::from_slice::<Value>(&data);
        let business = Business::parse(&data);
        assert_eq!(business.is_ok(), matches!(parsed, Ok(Value::Object(_))), "{}", path.display());
        let (Ok(Value::Object(mut obj)), Ok(business)) = (parsed, business) else {
            continue;
        };
        objects += 1;
        let c = canonicalize(&obj);
        if as_written_is_the_parsed_map(&business, &obj) {
            assert_eq!(business.canonical(), c, "{}", path.display());
        }
        for ep in eps.iter() {
            assert_eq!(ep.validate(&obj), ep.validate(&business), "{}", path.display());
        }
        obj.insert("sign".into(), Value::String("x".into()));
        assert_eq!(c, canonicalize(&obj), "{}", path.display());
        if let Ok(page) = paysign_protocol::h5::render(&obj) {
            assert_eq!(String::from_utf8_lossy(&page.body).matches("<script").count(), 1, "{}", path.display());
        }
    }
    assert!(objects > 0, "the canonical corpus holds JSON objects");
}

#[test]
fn keys_and_config_corpora_only_produce_errors() {
    for (_, data) in corpus("keys") {
        if let Ok(text) = std::str::from_utf8(&data) {
            let _ = keys::parse_any(text);
            let _ = keys::load_public(text, true);
            let _ = keys::load_private(text, false);
        }
    }
    let at = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("conf/fuzz.yaml");
    for (_, data) in corpus("config") {
        if let Ok(text) = std::str::from_utf8(&data) {
            let _ = paysign_plugin::config::load_str_offline(text, &at);
            let _ = paysign_sandbox::load_sandbox_str(text, &at);
        }
    }
}

// The canonical target's invariant, shared with fuzz/fuzz_targets/canonical.rs.
include!("../fuzz/invariants.rs");
