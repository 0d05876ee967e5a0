//! Vector-driven tests: canonical strings, signatures and whole exchanges made by OpenSSL and
//! a JDK platform implementation (tests/fixtures, copied from the shared vectors), and every
//! key format they come in.

use std::path::PathBuf;
use std::sync::Arc;

use paysign_protocol::crypto::keys::{self, AnyKey, KeyError, KeyFormat};
use paysign_protocol::crypto::{segmented, signature, Backend, PrivateKey, PublicKey, Secret};
use paysign_protocol::platform::{Platform, PlatformMerchant, PlatformMerchantKeys};
use paysign_protocol::{canonicalize, fields_of, Merchant, MerchantKeys, OpenError, Opened};
use serde_json::{Map, Value};

fn fixture(name: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures").join(name)
}
fn read(name: &str) -> String {
    std::fs::read_to_string(fixture(name)).unwrap()
}
fn json(name: &str) -> Value {
    serde_json::from_str(&read(name)).unwrap()
}
/// Every test that does RSA work runs on both backends.
const BACKENDS: [Backend; 2] = [Backend::RustCrypto, Backend::AwsLc];

fn public_with(name: &str, b: Backend) -> Arc<PublicKey> {
    let k = keys::load_public(&read(&format!("keys/{name}")), false).unwrap().with_backend(b);
    assert_eq!(k.backend(), b);
    Arc::new(k)
}
fn private_with(name: &str, b: Backend) -> Arc<PrivateKey> {
    let k = keys::load_private(&read(&format!("keys/{name}")), false).unwrap().with_backend(b);
    assert_eq!(k.backend_name(), b.as_str());
    Arc::new(k)
}
fn public(name: &str) -> Arc<PublicKey> {
    public_with(name, Backend::RustCrypto)
}
fn private(name: &str) -> Arc<PrivateKey> {
    private_with(name, Backend::RustCrypto)
}
fn obj(v: &Value) -> Map<String, Value> {
    v.as_object().unwrap().clone()
}

const CUSTOMER: &str = "202112090603";

fn merchant(profile: &str, md5_key: &str, b: Backend) -> Merchant {
    let platform_public = public_with("platform_public.pem", b);
    let keys = match profile {
        "md5" => MerchantKeys::Md5 { md5_key: Secret::new(md5_key.into()), platform_public: platform_public.clone() },
        _ => MerchantKeys::Rsa { merchant_private: private_with("merchant_private.pem", b), platform_public: platform_public.clone() },
    };
    Merchant { customer_no: CUSTOMER.into(), keys, chunk_size: platform_public.max_chunk(), rollover: None }
}

fn platform_side(profile: &str, md5_key: &str, b: Backend) -> (Platform, PlatformMerchant) {
    let keys = match profile {
        "md5" => PlatformMerchantKeys::Md5 { md5_key: Secret::new(md5_key.into()) },
        _ => PlatformMerchantKeys::Rsa { merchant_public: public_with("merchant_public.pem", b) },
    };
    (
        Platform { private: private_with("platform_private.pem", b), previous: None },
        PlatformMerchant { customer_no: CUSTOMER.into(), keys, previous: None },
    )
}

#[test]
fn every_signing_vector_matches() {
    let v = json("signing.json");
    let cases = v["cases"].as_array().unwrap();
    assert_eq!(cases.len(), 4);
    for b in BACKENDS {
        let key = private_with("merchant_private.pem", b);
        let platform_view = public_with("merchant_public.pem", b);
        for case in cases {
            let o = obj(&case["object"]);
            let canonical = canonicalize(&o);
            assert_eq!(canonical, case["canonical"].as_str().unwrap());
            let md5_key = Secret::new(case["md5Key"].as_str().unwrap().into());
            assert_eq!(signature::md5_sign(&canonical, &md5_key), case["md5Sign"].as_str().unwrap());
            assert!(signature::md5_verify(&canonical, &md5_key, &case["md5Sign"].as_str().unwrap().to_lowercase()));
            let rsa_sign = signature::rsa_sign(&key, &canonical).unwrap();
            assert_eq!(rsa_sign, case["rsaSign"].as_str().unwrap());
            assert!(signature::rsa_verify(&platform_view, &canonical, &rsa_sign));
            assert!(!signature::rsa_verify(&platform_view, &format!("{canonical}x"), &rsa_sign));
        }
    }
}

#[test]
fn every_exchange_opens_with_the_expected_outcome() {
    let v = json("exchanges.json");
    let md5_key = v["md5Key"].as_str().unwrap();
    let exchanges = v["exchanges"].as_array().unwrap();
    assert_eq!(exchanges.len(), 12);
    let (mut verified, mut rejected, mut failures) = (0, 0, 0);
    for (ex, b) in exchanges.iter().flat_map(|e| BACKENDS.map(|b| (e, b))) {
        let profile = ex["profile"].as_str().unwrap();
        let m = merchant(profile, md5_key, b);
        let body = ex["responseBody"].as_str().unwrap().as_bytes();
        let result = m.open_response(body);
        match ex["expect"].as_str().unwrap() {
            "verified" => {
                verified += 1;
                match result {
                    Ok(Opened::Verified { plaintext, .. }) => {
                        assert_eq!(plaintext, ex["responsePlaintext"].as_str().unwrap())
                    }
                    other => panic!("{profile} {}: expected verified, got {other:?}", ex["path"]),
                }
            }
            "reject" => {
                rejected += 1;
                let err = result.expect_err("tampered exchange must be refused");
                assert!(matches!(err, OpenError::Signature | OpenError::CustomerMismatch), "{err:?}");
            }
            "platform-failure" => {
                failures += 1;
                match result {
                    Ok(Opened::PlatformFailure { code, msg }) => {
                        assert_eq!(code, "500");
                        assert_eq!(msg, "系统繁忙");
                    }
                    other => panic!("expected platform failure, got {other:?}"),
                }
            }
            other => panic!("unknown expectation {other}"),
        }
    }
    assert_eq!((verified, rejected, failures), (12, 8, 4));
}

/// The JDK platform's sealed requests open with our platform-side code, and our own sealing
/// of the same business object opens (on the platform side) to byte-identical plaintext.
#[test]
fn our_sealing_matches_the_jdk_requests() {
    let v = json("exchanges.json");
    let md5_key = v["md5Key"].as_str().unwrap();
    for (ex, b) in v["exchanges"].as_array().unwrap().iter().flat_map(|e| BACKENDS.map(|b| (e, b))) {
        let profile = ex["profile"].as_str().unwrap();
        let (platform, pm) = platform_side(profile, md5_key, b);
        let expected = ex["requestPlaintext"].as_str().unwrap();
        let request: Value = serde_json::from_str(ex["requestBody"].as_str().unwrap()).unwrap();
        let (text, _) = platform.open_request(&pm, request["reqmsg"].as_str().unwrap()).unwrap();
        assert_eq!(text, expected);

        let mut business: Map<String, Value> = serde_json::from_str(expected).unwrap();
        business.remove("sign");
        let sealed = merchant(profile, md5_key, b).seal(paysign_protocol::Business::from_map(&business)).unwrap();
        let env: Value = serde_json::from_slice(&sealed.body).unwrap();
        assert_eq!(env["customerNo"], CUSTOMER);
        assert_eq!(env.as_object().unwrap().len(), 2);
        let (ours, _) = platform.open_request(&pm, env["reqmsg"].as_str().unwrap()).unwrap();
        assert_eq!(ours, expected, "{profile}: our plaintext differs from the JDK's");
    }
}

fn multiblock_business() -> Map<String, Value> {
    let mut m = Map::new();
    m.insert("orderNo".into(), Value::String("MB-1".into()));
    // ~1.5 KiB of Chinese text and the characters that break naive URL-decoding signers.
    m.insert("note".into(), Value::String("绑卡测试 & = + / % 中文字符".repeat(40)));
    m.insert("plus".into(), Value::String("a+b c/d=e&f%20".into()));
    m
}

#[test]
fn multi_block_round_trip_both_profiles_and_chunk_sizes() {
    for (profile, b) in [("md5", BACKENDS[0]), ("md5", BACKENDS[1]), ("rsa", BACKENDS[0]), ("rsa", BACKENDS[1])] {
        for chunk in [None, Some(117)] {
            let mut m = merchant(profile, "k-123", b);
            m.chunk_size = segmented::chunk_size_for(&public("platform_public.pem"), chunk).unwrap();
            let (platform, pm) = platform_side(profile, "k-123", b);
            let business = multiblock_business();
            let sealed = m.seal(paysign_protocol::Business::from_map(&business)).unwrap();
            let env: Value = serde_json::from_slice(&sealed.body).unwrap();
            let reqmsg = env["reqmsg"].as_str().unwrap();
            let blocks = segmented::decode_blocks(reqmsg, 256).unwrap().len() / 256;
            let plain_len = {
                let (t, _) = platform.open_request(&pm, reqmsg).unwrap();
                t.len()
            };
            assert_eq!(blocks, plain_len.div_ceil(m.chunk_size), "{profile} {chunk:?}");
            assert!(blocks >= 7);
            let (_, fields) = platform.open_request(&pm, reqmsg).unwrap();
            assert_eq!(fields["note"], business["note"]);

            // And back: a multi-block answer from the platform opens and verifies.
            let mut answer = business.clone();
            answer.insert("customerNo".into(), Value::String(CUSTOMER.into()));
            answer.insert("errCode".into(), Value::String("0000".into()));
            let body = platform.seal_response(&pm, answer).unwrap();
            match m.open_response(&body).unwrap() {
                Opened::Verified { plaintext, err_code } => {
                    assert_eq!(fields_of(&plaintext)["note"], business["note"]);
                    assert_eq!(err_code.as_deref(), Some("0000"));
                }
                other => panic!("{other:?}"),
            }
        }
    }
}

#[test]
fn reqmsg_with_java_line_breaks_opens() {
    let (platform, pm) = platform_side("md5", "k", Backend::AwsLc);
    let m = merchant("md5", "k", Backend::AwsLc);
    let mut answer = multiblock_business();
    answer.insert("customerNo".into(), Value::String(CUSTOMER.into()));
    let body = platform.seal_response(&pm, answer).unwrap();
    let outer: Value = serde_json::from_slice(&body).unwrap();
    let data: Value = serde_json::from_str(outer["data"].as_str().unwrap()).unwrap();
    let reqmsg = data["reqmsg"].as_str().unwrap();
    let wrapped: String = reqmsg.as_bytes().chunks(76).map(|c| std::str::from_utf8(c).unwrap()).collect::<Vec<_>>().join("\r\n");
    let mut d = obj(&data);
    d.insert("reqmsg".into(), Value::String(wrapped));
    assert!(matches!(m.open_data(&d), Ok(Opened::Verified { .. })));
    // A length that is not a whole number of blocks is refused.
    d.insert("reqmsg".into(), Value::String(reqmsg[..reqmsg.len() - 8].to_string()));
    assert_eq!(m.open_data(&d).unwrap_err(), OpenError::Ciphertext(paysign_protocol::crypto::CryptoError::Encoding));
}

/// The usual answer is read without building maps; every other shape of envelope takes the
/// full parse. Both must give exactly the outcome a parsed map gives: a repeated member
/// counts with its last value, names and strings are compared after unescaping, nothing may
/// follow the object. (Each expectation here was also checked against the map-only reading.)
#[test]
fn every_shape_of_answer_envelope_opens_as_a_parsed_map_would() {
    // (Except that values keep their text as written: a parsed map would say `2e+2` below.)
    let (platform, pm) = platform_side("md5", "k", Backend::AwsLc);
    let m = merchant("md5", "k", Backend::AwsLc);
    // A genuine answer whose `reqmsg` holds a '/' (to be escaped as `\/` below).
    let (genuine, data_text, reqmsg) = (0..64)
        .find_map(|n| {
            let mut answer = Map::new();
            answer.insert("customerNo".into(), Value::String(CUSTOMER.into()));
            answer.insert("errCode".into(), Value::String("0000".into()));
            answer.insert("orderNo".into(), Value::String(format!("O{n}")));
            let body = platform.seal_response(&pm, answer).unwrap();
            let outer: Value = serde_json::from_slice(&body).unwrap();
            let data_text = outer["data"].as_str().unwrap().to_string();
            let data: Value = serde_json::from_str(&data_text).unwrap();
            let reqmsg = data["reqmsg"].as_str().unwrap().to_string();
            reqmsg.contains('/').then_some((body, data_text, reqmsg))
        })
        .unwrap();
    // `data` as a JSON string member.
    let quoted = |text: &str| serde_json::to_string(text).unwrap();
    let data_member = quoted(&data_text);
    let with_data = |d: &str| format!(r#"{{"customerNo":"{CUSTOMER}",{d}}}"#);
    let escaped_slashes = with_data(&format!(r#""reqmsg":"{}""#, reqmsg.replace('/', "\\/")));
    let escaped_name = with_data(&format!(r#""\u0072eqmsg":"{reqmsg}""#));
    let other_customer = format!(r#"{{"customerNo":"999","reqmsg":"{reqmsg}"}}"#);
    let numeric_customer = format!(r#"{{"customerNo":202112090603,"reqmsg":"{reqmsg}"}}"#);
    let twice = format!(r#"{{"customerNo":"999","reqmsg":"AAAA","customerNo":"{CUSTOMER}","reqmsg":"{reqmsg}"}}"#);

    let verified = || Ok::<_, OpenError>("verified".to_string());
    let failure = |code: &str, msg: &str| Ok::<_, OpenError>(format!("failure {code} {msg}"));
    let refused = |e: OpenError| Err::<String, _>(e);
    let cases: Vec<(String, Result<String, OpenError>)> = vec![
        (String::from_utf8(genuine.clone()).unwrap(), verified()),
        (format!(r#"{{"code":200,"success":true,"data":{data_member}}}"#), verified()),
        (format!(r#" {{ "success" : true , "data" : {data_member} , "code" : "200" , "x" : [1, {{"y": null}}] }} "#), verified()),
        (format!(r#"{{"code":"\u0032\u0030\u0030","success":true,"data":{data_member}}}"#), verified()),
        (format!(r#"{{"code":"500","code":"200","success":true,"data":{data_member}}}"#), verified()),
        (format!(r#"{{"code":"200","success":true,"data":{data_member},"code":"500","msg":"m"}}"#), failure("500", "m")),
        (format!(r#"{{"code":"200","success":true,"data":"{{}}","data":{data_member}}}"#), verified()),
        (
            format!(r#"{{"code":"200","success":true,"data":{data_member},"data":"{{}}"}}"#),
            refused(OpenError::Envelope("data.customerNo is missing")),
        ),
        (format!(r#"{{"code":"200","success":true,"data":{data_text}}}"#), verified()),
        (format!(r#"{{"code":"200","success":true,"data":{}}}"#, quoted(&escaped_slashes)), verified()),
        (format!(r#"{{"code":"200","success":true,"data":{}}}"#, quoted(&escaped_name)), verified()),
        (format!(r#"{{"code":"200","success":true,"data":{}}}"#, quoted(&twice)), verified()),
        (format!(r#"{{"code":"200","success":true,"data":{}}}"#, quoted(&other_customer)), refused(OpenError::CustomerMismatch)),
        (
            format!(r#"{{"code":"200","success":true,"data":{}}}"#, quoted(&numeric_customer)),
            refused(OpenError::Envelope("data.customerNo is missing")),
        ),
        (
            format!(r#"{{"code":"200","success":true,"data":{}}}"#, quoted(&format!("{data_text} x"))),
            refused(OpenError::Envelope("data is not JSON text")),
        ),
        (r#"{"code":"200","success":true,"data":"[1]"}"#.to_string(), refused(OpenError::Envelope("data is not a JSON object"))),
        (r#"{"code":"200","success":true}"#.to_string(), refused(OpenError::Envelope("data is missing"))),
        (r#"{"code":"200","success":true,"data":null}"#.to_string(), refused(OpenError::Envelope("data is missing"))),
        (format!(r#"{{"code":"200","success":"true","data":{data_member},"msg":"m"}}"#), failure("200", "m")),
        (format!(r#"{{"code":"200.0","success":true,"data":{data_member}}}"#), failure("200.0", "")),
        // A code that is a number is passed on as the platform wrote it.
        (format!(r#"{{"code":2e2,"success":true,"data":{data_member}}}"#), failure("2e2", "")),
        (r#"{"success":false}"#.to_string(), failure("", "")),
        (r#"{"msg":"m"}"#.to_string(), refused(OpenError::Envelope("no code/success members"))),
        (format!(r#"{{"code":"200","success":true,"data":{data_member}}} x"#), refused(OpenError::Envelope("body is not JSON"))),
        (format!(r#"{{"code":"200","success":true,"data":{data_member}}}{{}}"#), refused(OpenError::Envelope("body is not JSON"))),
        (format!(r#"{{"code":"200","success":true,"data":{data_member},}}"#), refused(OpenError::Envelope("body is not JSON"))),
        (format!(r#"[{{"code":"200","success":true,"data":{data_member}}}]"#), refused(OpenError::Envelope("body is not a JSON object"))),
        (String::new(), refused(OpenError::Envelope("body is not JSON"))),
    ];
    assert_eq!(cases.len(), 28);
    for (i, (body, expected)) in cases.iter().enumerate() {
        let got = match m.open_response(body.as_bytes()) {
            Ok(Opened::Verified { err_code, .. }) => {
                assert_eq!(err_code.as_deref(), Some("0000"), "case {i}");
                Ok("verified".to_string())
            }
            Ok(Opened::PlatformFailure { code, msg }) => Ok(format!("failure {code} {msg}")),
            Err(e) => Err(e),
        };
        assert_eq!(&got, expected, "case {i}: {body}");
    }
}

#[test]
fn corrupted_ciphertext_is_refused_like_any_other_tamper() {
    use base64::Engine;
    let b64 = base64::engine::general_purpose::STANDARD;
    for (profile, b) in [("md5", BACKENDS[0]), ("md5", BACKENDS[1]), ("rsa", BACKENDS[0]), ("rsa", BACKENDS[1])] {
        let (platform, pm) = platform_side(profile, "k", b);
        let m = merchant(profile, "k", b);
        let mut answer = Map::new();
        answer.insert("orderNo".into(), Value::String("X".into()));
        answer.insert("errCode".into(), Value::String("0000".into()));
        let body = platform.seal_response(&pm, answer).unwrap();
        let outer: Value = serde_json::from_slice(&body).unwrap();
        let data: Value = serde_json::from_str(outer["data"].as_str().unwrap()).unwrap();
        let mut raw = b64.decode(data["reqmsg"].as_str().unwrap()).unwrap();
        raw[100] ^= 0x01;
        let mut d = obj(&data);
        d.insert("reqmsg".into(), Value::String(b64.encode(raw)));
        let err = m.open_data(&d).unwrap_err();
        // md5: the type-1 padding check fails; rsa: implicit rejection yields garbage, which
        // fails as plaintext or signature. Either way: refused.
        assert!(matches!(err, OpenError::Ciphertext(_) | OpenError::Plaintext | OpenError::Signature), "{err:?}");
    }
}

#[test]
fn every_key_format_loads() {
    let cases: &[(&str, bool, KeyFormat)] = &[
        ("platform_public.pem", false, KeyFormat::PemSpki),
        ("platform_public_pkcs1.pem", false, KeyFormat::PemPkcs1Public),
        ("platform_public.b64", false, KeyFormat::Base64Spki),
        ("merchant_public.pem", false, KeyFormat::PemSpki),
        ("merchant_private.pem", true, KeyFormat::PemPkcs8),
        ("merchant_private_pkcs1.pem", true, KeyFormat::PemPkcs1Private),
        ("merchant_private.b64", true, KeyFormat::Base64Pkcs1Private),
        ("platform_private.pem", true, KeyFormat::PemPkcs8),
    ];
    for (name, is_private, format) in cases {
        match keys::parse_any(&read(&format!("keys/{name}"))).unwrap() {
            AnyKey::Public(k, f) => {
                assert!(!is_private, "{name}");
                assert_eq!(f, *format, "{name}");
                assert_eq!(k.bits(), 2048);
            }
            AnyKey::Private(k, f) => {
                assert!(is_private, "{name}");
                assert_eq!(f, *format, "{name}");
                assert_eq!(k.public().bits(), 2048);
            }
        }
    }
    // All encodings of one key are the same key.
    let p1 = public("platform_public.pem");
    assert!(keys::is_pair(&private("platform_private.pem"), &p1));
    assert!(keys::is_pair(&private("merchant_private_pkcs1.pem"), &public("merchant_public.pem")));
    assert!(keys::is_pair(&private("merchant_private.b64"), &public("merchant_public.pem")));
    assert!(!keys::is_pair(&private("merchant_private.pem"), &p1));
    assert_eq!(keys::load_public(&read("keys/platform_public_pkcs1.pem"), false).unwrap().size(), 256);
    assert_eq!(keys::load_public(&read("keys/platform_public.b64"), false).unwrap().size(), 256);
}

#[test]
fn weak_and_misplaced_keys_are_refused() {
    let weak_pub = read("keys/weak1024_public.pem");
    let weak_priv = read("keys/weak1024_private.pem");
    assert_eq!(keys::load_public(&weak_pub, false).unwrap_err(), KeyError::TooSmall { bits: 1024, min: 2048 });
    assert_eq!(keys::load_private(&weak_priv, false).unwrap_err(), KeyError::TooSmall { bits: 1024, min: 2048 });
    assert_eq!(keys::load_public(&weak_pub, true).unwrap().bits(), 1024);
    assert_eq!(keys::load_private(&weak_priv, true).unwrap().public().bits(), 1024);
    assert_eq!(keys::load_public(&read("keys/merchant_private.pem"), false).unwrap_err(), KeyError::PrivateWherePublic);
    assert_eq!(keys::load_private(&read("keys/platform_public.pem"), false).unwrap_err(), KeyError::PublicWherePrivate);
    assert_eq!(keys::load_public("not a key", false).unwrap_err(), KeyError::Unrecognised);
    assert!(matches!(
        keys::load_public("-----BEGIN CERTIFICATE-----\nAAAA\n-----END CERTIFICATE-----\n", false),
        Err(KeyError::UnsupportedPem(_))
    ));
}

#[test]
fn chunk_size_override_is_checked_against_the_key() {
    let k = public("platform_public.pem");
    assert_eq!(segmented::chunk_size_for(&k, None).unwrap(), 245);
    assert_eq!(segmented::chunk_size_for(&k, Some(117)).unwrap(), 117);
    assert!(segmented::chunk_size_for(&k, Some(246)).is_err());
    assert!(segmented::chunk_size_for(&k, Some(0)).is_err());
}

#[test]
fn weak_keys_fall_back_to_the_rust_backend() {
    let k = keys::load_public(&read("keys/weak1024_public.pem"), true).unwrap().with_backend(Backend::AwsLc);
    assert_eq!(k.backend(), Backend::RustCrypto, "AWS-LC refuses 1024-bit keys; the rsa crate does the work");
    let p = keys::load_private(&read("keys/weak1024_private.pem"), true).unwrap().with_backend(Backend::AwsLc);
    let sealed = segmented::encrypt(&k, "弱".repeat(100).as_bytes(), k.max_chunk()).unwrap();
    assert_eq!(segmented::decrypt(&p, &sealed).unwrap(), "弱".repeat(100).as_bytes());
}

/// Both backends interoperate: what one encrypts or signs, the other opens or verifies.
#[test]
fn backends_interoperate() {
    let text = "互通 & = + / %".repeat(50);
    for (a, b) in [(Backend::RustCrypto, Backend::AwsLc), (Backend::AwsLc, Backend::RustCrypto)] {
        let enc = segmented::encrypt(&public_with("merchant_public.pem", a), text.as_bytes(), 245).unwrap();
        assert_eq!(segmented::decrypt(&private_with("merchant_private.pem", b), &enc).unwrap(), text.as_bytes());
        let sig = signature::rsa_sign(&private_with("merchant_private.pem", a), &text).unwrap();
        assert!(signature::rsa_verify(&public_with("merchant_public.pem", b), &text, &sig));
    }
}
