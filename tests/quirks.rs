//! What Java-built platforms really send, through the real gateway and sandbox: numbers as Java
//! prints doubles (`1.0E10`, `5.0E-4`, signed as written), a UTF-8 BOM before the plaintext's
//! JSON, a `customerNo` that is a number; and a verified answer re-encrypted to pose as a
//! notification. `paysign open` must give the gateway's own verdict on each.

mod common;

use std::sync::Arc;
use std::time::Duration;

use common::http_server::{self, Received};
use common::*;
use paysign_protocol::crypto::{keys, segmented, signature, Secret};
use serde_json::Value;

/// The members the sandbox adds to `JDK-NUM-` orders, exactly as it writes them.
const JAVA_NUMBERS: &str = r#""amount":1.0E10,"rate":5.0E-4,"limits":{"max":2.5E3}"#;
const PREFIXES: [&str; 3] = ["JDK-BOM-", "JDK-NUM-", "JDK-NUM-BOM-"];

struct Setup {
    stack: Stack,
    notify_port: u16,
    target: http_server::Server,
}

fn setup() -> Setup {
    let target = http_server::start(Arc::new(|_r| (200, "text/plain".into(), b"ok".to_vec())));
    let notify_port = free_port();
    let extra = format!(
        "notify:\n  listen: 127.0.0.1:{notify_port}\n  forward_timeout_ms: 3000\n  routes:\n    - path: /notify/bindcard\n      target: http://127.0.0.1:{}/internal/bind-notified\n",
        target.port
    );
    let stack = Stack::start(Options { gateway_extra: extra, ..Options::default() });
    wait_listening(notify_port);
    Setup { stack, notify_port, target }
}

fn next(target: &http_server::Server) -> Received {
    target.requests.recv_timeout(Duration::from_secs(15)).expect("the internal target received nothing")
}

fn notify_on_demand(s: &Setup, customer: &str, order: &str) -> Value {
    let req = serde_json::json!({
        "customerNo": customer, "orderNo": order, "url": format!("http://127.0.0.1:{}/notify/bindcard", s.notify_port)
    });
    request(s.stack.sandbox_port, "POST", "/__sandbox/notify", &[], req.to_string().as_bytes()).json()
}

fn counter(metrics: &str, series: &str) -> f64 {
    sample(metrics, series).unwrap_or(0.0)
}

/// Every verification failure the gateway counted, by reason (`reason=count`, sorted).
fn verification_failures(metrics: &str) -> Vec<String> {
    let mut v: Vec<String> = metrics
        .lines()
        .filter_map(|l| l.strip_prefix("paysign_verification_failures_total{reason=\""))
        .filter_map(|l| l.split_once("\"} "))
        .filter(|(_, n)| *n != "0")
        .map(|(r, n)| format!("{r}={n}"))
        .collect();
    v.sort();
    v
}

#[test]
fn java_exponent_numbers_and_a_bom_in_answers_verify_on_both_profiles() {
    let s = setup();
    for merchant in [MD5_MERCHANT, RSA_MERCHANT] {
        for prefix in PREFIXES {
            let order = format!("{prefix}{merchant}");
            let r = s.stack.post_json(merchant, &bindcard(&order));
            assert_eq!(r.status, 200, "{order}: {}", r.text());
            let text = r.text();
            // The verified plaintext, as the platform wrote it, without the BOM.
            assert!(text.starts_with(&format!("{{\"orderNo\":\"{order}\",")), "{order}: {text}");
            assert_eq!(text.contains(JAVA_NUMBERS), prefix.contains("NUM"), "{order}: {text}");
            assert_eq!(r.json()["errCode"], "0000");
        }
    }
    let m = s.stack.metrics();
    assert_eq!(verification_failures(&m), Vec::<String>::new(), "{m}");
}

#[test]
fn java_exponent_numbers_and_a_bom_in_notifications_are_verified_and_forwarded() {
    let s = setup();
    for merchant in [MD5_MERCHANT, RSA_MERCHANT] {
        for prefix in PREFIXES {
            let order = format!("{prefix}N-{merchant}");
            let v = notify_on_demand(&s, merchant, &order);
            assert_eq!(v["status"], 200, "{order}: {v}");
            assert_eq!(v["body"], "SUCCESS", "{order}");
            let got = next(&s.target);
            let body = String::from_utf8(got.body).unwrap();
            assert!(body.starts_with(&format!("{{\"orderNo\":\"{order}\",")), "{order}: {body}");
            assert_eq!(body.contains(JAVA_NUMBERS), prefix.contains("NUM"), "{order}: {body}");
        }
    }
    let m = s.stack.metrics();
    assert_eq!(counter(&m, r#"paysign_notifications_total{outcome="forwarded",route="/notify/bindcard"}"#), 6.0, "{m}");
    assert_eq!(counter(&m, r#"paysign_notifications_total{outcome="forged",route="/notify/bindcard"}"#), 0.0, "{m}");
    assert_eq!(verification_failures(&m), Vec::<String>::new(), "{m}");
}

/// The request side: a caller's number text is what is signed and what is sent, so a platform
/// that reads the text as received (as PROTOCOL.md says) verifies it.
#[test]
fn a_callers_exponent_numbers_are_signed_and_sent_as_written() {
    let s = setup();
    for merchant in [MD5_MERCHANT, RSA_MERCHANT] {
        let body = format!(r#"{{"orderNo":"REQ-{merchant}","amount":1.0E10,"o":{{"r": 5.0E-4}}}}"#);
        let r = s.stack.post("/api/vborder/some/other", Some(merchant), body.as_bytes());
        assert_eq!(r.status, 200, "{merchant}: {}", r.text());
        assert_eq!(r.json()["errCode"], "0000", "{merchant}: the platform did not verify the request");
    }
}

/// Key material of the test platform and merchants (tests/fixtures).
fn key(name: &str) -> String {
    std::fs::read_to_string(fixtures().join("keys").join(name)).unwrap()
}

/// `{"customerNo","reqmsg"}` as the platform (or someone holding what it signed) would seal
/// `signed` (JSON text, `sign` included) for `merchant`.
fn sealed_for(merchant: &str, signed: &[u8]) -> String {
    let reqmsg = if merchant == MD5_MERCHANT {
        let platform = keys::load_private(&key("platform_private.pem"), false).unwrap();
        segmented::seal_type1(&platform, signed, platform.public().max_chunk()).unwrap()
    } else {
        let merchant_public = keys::load_public(&key("merchant_public.pem"), false).unwrap();
        segmented::encrypt(&merchant_public, signed, merchant_public.max_chunk()).unwrap()
    };
    serde_json::json!({ "customerNo": merchant, "reqmsg": reqmsg }).to_string()
}

/// `fields` plus `java` (members whose JSON text is given as written, e.g. `1.0E10`) signed by
/// the platform over that text — the canonical string built here from the parts, never through
/// the gateway's reading — then `sign` appended; `bom` puts a BOM first.
fn platform_signed(merchant: &str, fields: Value, java: &[(&str, &str)], bom: bool) -> Vec<u8> {
    use paysign_protocol::canonical::{canonical_of, Part};
    let fields = fields.as_object().unwrap().clone();
    let members = fields.iter().map(|(k, v)| (k.as_str(), Part::of(v))).chain(java.iter().map(|(k, v)| (*k, Part::Text(v))));
    let canonical = canonical_of(members);
    let sign = if merchant == MD5_MERCHANT {
        signature::md5_sign(&canonical, &Secret::new(MD5_KEY.into()))
    } else {
        signature::rsa_sign(&keys::load_private(&key("platform_private.pem"), false).unwrap(), &canonical).unwrap()
    };
    let mut out = if bom { "\u{feff}".to_string() } else { String::new() };
    let text = Value::Object(fields).to_string();
    out.push_str(&text[..text.len() - 1]);
    for (k, v) in java {
        out.push_str(&format!(",\"{k}\":{v}"));
    }
    out.push_str(&format!(",\"sign\":{}}}", Value::String(sign)));
    out.into_bytes()
}

/// 26.10: an internal caller holds verified answers with their `sign`; re-encrypted for the
/// merchant, one must not pass as the platform's notification.
#[test]
fn a_verified_answer_posing_as_a_notification_is_refused_on_both_profiles() {
    let s = setup();
    for merchant in [MD5_MERCHANT, RSA_MERCHANT] {
        for order in [format!("POSE-{merchant}"), format!("POSE-{merchant}")] {
            // The first is a 0000 answer with the bank form, the second a 2104 (repeated order).
            let r = s.stack.post_json(merchant, &bindcard(&order));
            assert_eq!(r.status, 200, "{}", r.text());
            let answer = r.text();
            assert!(answer.contains("\"sign\":"), "{answer}");
            let posed = sealed_for(merchant, answer.as_bytes());
            let got = request(s.notify_port, "POST", "/notify/bindcard", &[("Content-Type", "application/json")], posed.as_bytes());
            assert_eq!((got.status, got.text()), (400, "FAIL".to_string()), "{merchant}: {answer}");
        }
    }
    assert!(s.target.requests.recv_timeout(Duration::from_millis(200)).is_err(), "an answer was forwarded as a notification");
    let m = s.stack.metrics();
    assert_eq!(counter(&m, r#"paysign_notifications_total{outcome="not_notification",route="/notify/bindcard"}"#), 4.0, "{m}");
    assert_eq!(counter(&m, r#"paysign_notifications_total{outcome="forwarded",route="/notify/bindcard"}"#), 0.0, "{m}");
    assert_eq!(verification_failures(&m), vec!["not_notification=4".to_string()], "{m}");
    let logs = s.stack.settled_logs();
    assert_eq!(logs.lines().filter(|l| l.contains(r#""reason":"not_notification""#)).count(), 4, "{logs}");
}

/// The same bytes through `paysign open` and through the gateway's notification listener: the
/// same verdict, and `open` names the gateway's reason.
#[test]
fn paysign_open_and_the_gateway_agree_on_every_quirk() {
    let s = setup();
    let cfg = s.stack.dir.join("paysign.yaml");
    let cfg = cfg.to_str().unwrap();
    let notification = |merchant: &str| serde_json::json!({"orderNo": "AGREE-1", "customerNo": merchant, "bindStatus": "SUCCESS", "bindId": "B1", "errCode": "0000"});
    let java: &[(&str, &str)] = &[("amount", "1.0E10"), ("rate", "5.0E-4"), ("limits", r#"{"max":2.5E3}"#)];
    let mut forwarded = 0;
    for merchant in [MD5_MERCHANT, RSA_MERCHANT] {
        let numeric_customer = serde_json::json!({"orderNo": "AGREE-2", "bindStatus": "SUCCESS"});
        let answer = serde_json::json!({"orderNo": "AGREE-3", "customerNo": merchant, "errCode": "0000", "submitUrl": "https://bank.example.test/b"});
        let cases: Vec<(&str, Vec<u8>, Option<&str>)> = vec![
            ("plain", platform_signed(merchant, notification(merchant), &[], false), None),
            ("java numbers", platform_signed(merchant, notification(merchant), java, false), None),
            ("bom", platform_signed(merchant, notification(merchant), &[], true), None),
            (
                "numeric customerNo",
                platform_signed(merchant, numeric_customer, &[("customerNo", merchant)], false),
                Some("customer_mismatch"),
            ),
            ("answer", platform_signed(merchant, answer, &[], false), Some("not_notification")),
        ];
        for (what, signed, refused) in cases {
            let body = sealed_for(merchant, &signed);
            let (code, out, _) = run_paysign(&["open", "-c", cfg, "--merchant", merchant], &[], &body);
            let before = verification_failures(&s.stack.metrics());
            let got = request(s.notify_port, "POST", "/notify/bindcard", &[("Content-Type", "application/json")], body.as_bytes());
            let after = verification_failures(&s.stack.metrics());
            match refused {
                None => {
                    forwarded += 1;
                    assert_eq!((code, got.status), (0, 200), "{merchant} {what}: {out}");
                    assert!(out.contains("\nresult:    VERIFIED\n"), "{merchant} {what}: {out}");
                    assert_eq!(before, after);
                    next(&s.target);
                }
                Some(reason) => {
                    assert_eq!((code, got.status), (1, 400), "{merchant} {what}: {out}");
                    assert!(out.contains("\nresult:    NOT VERIFIED\n"), "{merchant} {what}: {out}");
                    assert!(out.contains(&format!("\nreason:    {reason} ")), "{merchant} {what}: {out}");
                    assert_ne!(before, after, "{merchant} {what}");
                    assert!(after.iter().any(|l| l.starts_with(&format!("{reason}="))), "{merchant} {what}: {after:?}");
                }
            }
        }
    }
    assert_eq!(forwarded, 6);
}

/// md5: bytes out of valid type-1 blocks that are not UTF-8 (a platform writing GBK) are a
/// charset problem with its own reason, not a forgery.
#[test]
fn a_notification_that_is_not_utf8_has_its_own_reason() {
    let s = setup();
    // "中" in GBK.
    let body = sealed_for(MD5_MERCHANT, b"{\"orderNo\":\"\xd6\xd0\",\"bindStatus\":\"SUCCESS\",\"sign\":\"X\"}");
    let got = request(s.notify_port, "POST", "/notify/bindcard", &[("Content-Type", "application/json")], body.as_bytes());
    assert_eq!((got.status, got.text()), (400, "FAIL".to_string()));
    let m = s.stack.metrics();
    assert_eq!(counter(&m, r#"paysign_notifications_total{outcome="not_utf8",route="/notify/bindcard"}"#), 1.0, "{m}");
    assert_eq!(counter(&m, r#"paysign_notifications_total{outcome="forged",route="/notify/bindcard"}"#), 0.0, "{m}");
    assert_eq!(verification_failures(&m), vec!["not_utf8=1".to_string()], "{m}");
    let cfg = s.stack.dir.join("paysign.yaml");
    let (code, out, _) = run_paysign(&["open", "-c", cfg.to_str().unwrap(), "--merchant", MD5_MERCHANT], &[], &body);
    assert_eq!(code, 1, "{out}");
    assert!(out.contains("\nreason:    not_utf8 "), "{out}");
}
