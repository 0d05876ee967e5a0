//! End-to-end: the real gateway process in front of the real sandbox process, on loopback.

mod common;

use common::*;
use serde_json::Value;

fn assert_gateway_error(r: &Response, status: u16, code: &str, delivery: &str) -> Value {
    assert_eq!(r.status, status, "body: {}", r.text());
    assert_eq!(r.header("X-Paysign-Delivery"), Some(delivery));
    assert_eq!(r.header("Content-Type"), Some("application/json;charset=UTF-8"));
    let v = r.json();
    assert_eq!(v["errCode"], code, "{v}");
    assert_eq!(v["source"], "gateway", "{v}");
    assert_eq!(v.as_object().unwrap().len(), 3, "{v}");
    v
}

#[test]
fn bindcard_round_trip_and_duplicate_for_both_profiles_aws_lc() {
    round_trip("aws-lc");
}

#[test]
fn bindcard_round_trip_and_duplicate_for_both_profiles_rust_rsa() {
    round_trip("rsa");
}

fn round_trip(backend: &'static str) {
    let s = Stack::start(Options { backend, ..Options::default() });
    for merchant in [MD5_MERCHANT, RSA_MERCHANT] {
        let order = format!("RT-{merchant}");
        let r = request(
            s.proxy,
            "POST",
            BINDCARD,
            &[("X-Paysign-Merchant", merchant), ("X-Request-Id", "req-abc-123"), ("Content-Type", "application/json")],
            bindcard(&order).to_string().as_bytes(),
        );
        assert_eq!(r.status, 200, "{}", r.text());
        assert_eq!(r.header("X-Paysign-Delivery"), Some("sent"));
        assert_eq!(r.header("X-Request-Id"), Some("req-abc-123"));
        assert_eq!(r.header("Content-Length").unwrap().parse::<usize>().unwrap(), r.body.len());
        let v = r.json();
        assert_eq!(v["orderNo"], order.as_str());
        assert_eq!(v["customerNo"], merchant);
        assert_eq!(v["errCode"], "0000");
        assert_eq!(v["errMessage"], "成功");
        assert_eq!(v["submitUrl"], "https://bank.example.test/epcc/bind");
        assert_eq!(v["submitMethod"], "POST");
        assert_eq!(v["encoding"], "UTF-8");
        let params: Value = serde_json::from_str(v["submitParams"].as_str().unwrap()).unwrap();
        assert!(params["epccGwMsg"].as_str().unwrap().len() > 500);
        let sign_len = v["sign"].as_str().unwrap().len();
        assert_eq!(sign_len, if merchant == MD5_MERCHANT { 32 } else { 344 });

        let dup = s.post_json(merchant, &bindcard(&order));
        assert_eq!(dup.status, 200);
        assert_eq!(dup.header("X-Paysign-Delivery"), Some("sent"));
        let d = dup.json();
        assert_eq!(d["errCode"], "2104");
        assert_eq!(d["errMessage"], "订单已存在,请勿重复提交");
        assert_eq!(d["orderNo"], order.as_str());
    }
    let stats = s.sandbox_stats();
    assert_eq!(stats["received"], 4);
    assert_eq!(stats["opened"], 4);
}

#[test]
fn bad_requests_are_refused_before_anything_is_sent() {
    let s = Stack::start(Options { max_body_bytes: 4096, ..Options::default() });
    let mut missing = bindcard("V-1");
    missing.as_object_mut().unwrap().remove("certNo");
    let v = assert_gateway_error(&s.post_json(MD5_MERCHANT, &missing), 400, "1003", "not-sent");
    assert_eq!(v["errMessage"], "required field 'certNo' is missing or empty");

    let mut empty = bindcard("V-2");
    empty["mobile"] = Value::String(String::new());
    let v = assert_gateway_error(&s.post_json(RSA_MERCHANT, &empty), 400, "1003", "not-sent");
    assert!(v["errMessage"].as_str().unwrap().contains("'mobile'"));

    let cases: &[(&str, Value, &str)] = &[
        (
            "userType",
            Value::String("FAX".into()),
            "'userType' must be one of IMEI, MAC, USER_ID, EMAIL, PHONE, ID_CARD, AGREEMENT_NO, WECHAT",
        ),
        ("bankCardType", Value::String("debit".into()), "'bankCardType' must be one of CREDIT, DEBIT"),
        ("certType", Value::String("DRIVER".into()), "'certType' must be one of"),
        ("expiredTime", Value::String("2030-02-30 12:00:00".into()), "'expiredTime' must be a date and time as yyyy-MM-dd HH:mm:ss"),
        ("expiredTime", Value::String("2030/01/01 12:00:00".into()), "'expiredTime' must be a date and time as yyyy-MM-dd HH:mm:ss"),
        ("mobile", Value::String("139123456789".into()), "'mobile' is 12 characters long; at most 11 are allowed"),
        ("bankCardName", Value::String("张".repeat(65)), "'bankCardName' is 65 characters long; at most 64 are allowed"),
        ("orderNo", Value::from(12345), "'orderNo' must be a JSON string"),
    ];
    for (field, value, message) in cases {
        let mut b = bindcard("V-3");
        b[*field] = value.clone();
        let v = assert_gateway_error(&s.post_json(MD5_MERCHANT, &b), 400, "1002", "not-sent");
        assert!(v["errMessage"].as_str().unwrap().starts_with(message), "{field}: {v}");
    }
    // 64 Chinese characters are within String(64).
    let mut ok_len = bindcard("V-OK");
    ok_len["bankCardName"] = Value::String("张".repeat(64));

    let raw: &[(&[u8], &str)] = &[
        (b"{not json", "request body is not JSON"),
        (b"[1,2,3]", "request body is not a JSON object"),
        (b"\"text\"", "request body is not a JSON object"),
        (b"{\"orderNo\":\"\xff\xfe\"}", "request body is not UTF-8"),
    ];
    for (body, message) in raw {
        let v = assert_gateway_error(&s.post(BINDCARD, Some(MD5_MERCHANT), body), 400, "1002", "not-sent");
        assert_eq!(v["errMessage"], *message);
    }
    let mut signed = bindcard("V-4");
    signed["sign"] = Value::String("ABC".into());
    assert_gateway_error(&s.post_json(MD5_MERCHANT, &signed), 400, "1002", "not-sent");
    let mut other_customer = bindcard("V-5");
    other_customer["customerNo"] = Value::String("999".into());
    assert_gateway_error(&s.post_json(MD5_MERCHANT, &other_customer), 400, "1002", "not-sent");

    let big = format!("{{\"orderNo\":\"{}\"}}", "x".repeat(5000));
    let v = assert_gateway_error(&s.post(BINDCARD, Some(MD5_MERCHANT), big.as_bytes()), 413, "1002", "not-sent");
    assert_eq!(v["errMessage"], "request body is larger than 4096 bytes");

    let r = request(s.proxy, "GET", BINDCARD, &[("X-Paysign-Merchant", MD5_MERCHANT)], b"");
    assert_gateway_error(&r, 405, "1002", "not-sent");
    assert_eq!(r.header("Allow"), Some("POST"));
    assert_gateway_error(&s.post("/metrics", Some(MD5_MERCHANT), b"{}"), 404, "1002", "not-sent");
    assert_gateway_error(&s.post("/api/../admin", Some(MD5_MERCHANT), b"{}"), 404, "1002", "not-sent");

    let v = assert_gateway_error(&s.post_json("123456", &bindcard("V-6")), 400, "2001", "not-sent");
    assert!(v["errMessage"].as_str().unwrap().starts_with("unknown merchant"));
    let v = assert_gateway_error(&s.post(BINDCARD, None, bindcard("V-7").to_string().as_bytes()), 400, "1002", "not-sent");
    assert!(v["errMessage"].as_str().unwrap().contains("X-Paysign-Merchant"));

    // Nothing reached the platform.
    let stats = s.sandbox_stats();
    assert_eq!(stats["received"], 0, "{stats}");

    // The valid one still goes through afterwards (keep-alive and state intact).
    let r = s.post_json(MD5_MERCHANT, &ok_len);
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(s.sandbox_stats()["received"], 1);
}

#[test]
fn single_merchant_is_the_default() {
    let s = Stack::start(Options { merchants: &[RSA_MERCHANT], ..Options::default() });
    let r = s.post(BINDCARD, None, bindcard("DEF-1").to_string().as_bytes());
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(r.json()["customerNo"], RSA_MERCHANT);
}

#[test]
fn multi_block_chinese_and_special_characters_on_an_unschema_d_path() {
    for backend in ["aws-lc", "rsa"] {
        multi_block(backend);
    }
}

fn multi_block(backend: &'static str) {
    let s = Stack::start(Options { backend, ..Options::default() });
    let note = "绑卡测试 & = + / % 中文字符 ".repeat(30);
    for merchant in [MD5_MERCHANT, RSA_MERCHANT] {
        // Raw text, so that the number keeps its exact form `12.50` on the way through.
        let body = format!(r#"{{"orderNo":"ECHO-MB","note":"{note}","plus":"a+b c/d=e&f%20","amount":12.50}}"#);
        let r = s.post("/api/vborder/some/other", Some(merchant), body.as_bytes());
        assert_eq!(r.status, 200, "{}", r.text());
        let v = r.json();
        assert_eq!(v["echo_note"], note.as_str());
        assert_eq!(v["echo_plus"], "a+b c/d=e&f%20");
        assert_eq!(v["echo_amount"].to_string(), "12.50");
        assert!(v.to_string().len() > 3 * 245, "the answer spans several RSA blocks");
    }
    let stats = s.sandbox_stats();
    assert_eq!(stats["by_path"]["/api/vborder/some/other"], 2);
}

#[test]
fn tampered_answers_are_never_passed_on_aws_lc() {
    tampered("aws-lc");
}

#[test]
fn tampered_answers_are_never_passed_on_rust_rsa() {
    tampered("rsa");
}

fn tampered(backend: &'static str) {
    let s = Stack::start(Options { backend, ..Options::default() });
    for merchant in [MD5_MERCHANT, RSA_MERCHANT] {
        let mut bodies = Vec::new();
        for order in ["TAMPER-SIGN-1", "TAMPER-CUSTOMER-1", "TAMPER-CIPHER-1"] {
            let r = s.post_json(merchant, &bindcard(order));
            let v = assert_gateway_error(&r, 502, "1001", "sent");
            assert_eq!(v["errMessage"], "the platform's answer could not be verified; it was discarded");
            assert!(!r.text().contains("成功"), "unverified plaintext leaked: {}", r.text());
            bodies.push(r.body.clone());
        }
        // Every crypto failure is answered identically.
        assert!(bodies.windows(2).all(|w| w[0] == w[1]));

        let r = s.post_json(merchant, &bindcard("TAMPER-PLATFORM-1"));
        assert_eq!(r.status, 502);
        assert_eq!(r.header("X-Paysign-Delivery"), Some("sent"));
        let v = r.json();
        assert_eq!(v, serde_json::json!({"errCode": "500", "errMessage": "系统繁忙", "source": "platform"}));

        let r = s.post_json(merchant, &bindcard("TAMPER-HTML-1"));
        let v = assert_gateway_error(&r, 502, "1001", "sent");
        assert_eq!(v["errMessage"], "the platform answered HTTP 502 without a protocol envelope");
    }
    let m = s.metrics();
    assert_eq!(sample(&m, r#"paysign_verification_failures_total{reason="signature"}"#), Some(2.0));
    assert_eq!(sample(&m, r#"paysign_verification_failures_total{reason="customer_mismatch"}"#), Some(2.0));
    // md5: the type-1 padding check catches the flipped byte; rsa: implicit rejection
    // produces garbage that fails as plaintext or signature.
    let padding = sample(&m, r#"paysign_verification_failures_total{reason="padding"}"#).unwrap_or(0.0);
    let plaintext = sample(&m, r#"paysign_verification_failures_total{reason="plaintext"}"#).unwrap_or(0.0);
    assert_eq!(padding + plaintext, 2.0, "{m}");
    assert_eq!(sample(&m, r#"paysign_platform_failures_total{endpoint="bindcard_create"}"#), Some(2.0));
}

#[test]
fn platform_down_means_not_sent() {
    let s = Stack::start(Options { sandbox: false, ..Options::default() });
    let r = s.post_json(MD5_MERCHANT, &bindcard("DOWN-1"));
    let v = assert_gateway_error(&r, 502, "1001", "not-sent");
    assert_eq!(v["errMessage"], "the platform could not be reached; nothing was sent");
    let m = s.metrics();
    assert_eq!(sample(&m, r#"paysign_upstream_connect_retries_total{endpoint="bindcard_create"}"#), Some(1.0));
    assert_eq!(
        sample(&m, r#"paysign_requests_total{endpoint="bindcard_create",merchant="202112090603",outcome="unreachable"}"#),
        Some(1.0)
    );
}

#[test]
fn platform_stall_past_read_timeout_means_unknown_and_no_retry() {
    let s = Stack::start(Options { read_timeout_ms: 400, stall_ms: 3_000, ..Options::default() });
    let r = s.post_json(RSA_MERCHANT, &bindcard("STALL-1"));
    let v = assert_gateway_error(&r, 504, "1001", "unknown");
    assert_eq!(v["errMessage"], "the platform did not answer in time; the request may have been received");
    // Exactly one request reached the platform: a POST that may have arrived is never retried.
    assert_eq!(s.sandbox_stats()["received"], 1);
    // And the gateway keeps serving.
    let r = s.post_json(RSA_MERCHANT, &bindcard("AFTER-STALL"));
    assert_eq!(r.status, 200);
}

#[test]
fn metrics_count_exactly_what_happened_and_logs_hold_no_secrets() {
    let s = Stack::start(Options::default());
    let mut signs = Vec::new();
    for (i, merchant) in [MD5_MERCHANT, MD5_MERCHANT, RSA_MERCHANT].iter().enumerate() {
        let r = s.post_json(merchant, &bindcard(&format!("M-{i}")));
        assert_eq!(r.status, 200);
        signs.push(r.json()["sign"].as_str().unwrap().to_string());
    }
    let dup = s.post_json(RSA_MERCHANT, &bindcard("M-2"));
    assert_eq!(dup.json()["errCode"], "2104");
    signs.push(dup.json()["sign"].as_str().unwrap().to_string());
    let mut bad = bindcard("M-BAD");
    bad["userType"] = Value::String("NOPE".into());
    assert_eq!(s.post_json(MD5_MERCHANT, &bad).status, 400);
    assert_eq!(s.post_json(RSA_MERCHANT, &bindcard("TAMPER-SIGN-9")).status, 502);

    let m = s.metrics();
    let req = |merchant: &str, outcome: &str| {
        sample(&m, &format!(r#"paysign_requests_total{{endpoint="bindcard_create",merchant="{merchant}",outcome="{outcome}"}}"#))
    };
    assert_eq!(req(MD5_MERCHANT, "verified"), Some(2.0));
    assert_eq!(req(RSA_MERCHANT, "verified"), Some(2.0));
    assert_eq!(req(MD5_MERCHANT, "invalid"), Some(1.0));
    assert_eq!(req(RSA_MERCHANT, "verify_failed"), Some(1.0));
    assert_eq!(sample(&m, r#"paysign_platform_errcode_total{endpoint="bindcard_create",errcode="0000"}"#), Some(3.0));
    assert_eq!(sample(&m, r#"paysign_platform_errcode_total{endpoint="bindcard_create",errcode="2104"}"#), Some(1.0));
    assert_eq!(sample(&m, r#"paysign_request_duration_seconds_count{endpoint="bindcard_create"}"#), Some(6.0));
    assert_eq!(sample(&m, r#"paysign_upstream_duration_seconds_count{endpoint="bindcard_create"}"#), Some(5.0));
    assert_eq!(sample(&m, r#"paysign_crypto_duration_seconds_count{op="rsa_sign"}"#), Some(3.0));
    assert_eq!(sample(&m, r#"paysign_crypto_duration_seconds_count{op="md5_sign"}"#), Some(2.0));
    assert_eq!(sample(&m, r#"paysign_crypto_duration_seconds_count{op="open_type1"}"#), Some(2.0));
    assert_eq!(sample(&m, r#"paysign_crypto_duration_seconds_count{op="decrypt"}"#), Some(3.0));
    assert_eq!(sample(&m, r#"paysign_verification_failures_total{reason="signature"}"#), Some(1.0));
    // The gauge drops when pingora releases the request, just after the answer is written.
    assert!(eventually(5, || sample(&s.metrics(), "paysign_requests_in_flight") == Some(0.0)));
    assert!(m.contains(r#"paysign_build_info{crypto_backend="aws-lc",version="0.1.0"} 1"#), "{m}");
    assert_eq!(sample(&m, r#"paysign_merchants_configured{profile="md5"}"#), Some(1.0));
    assert!(!m.contains("M-0"), "order numbers must not become labels");
    assert_eq!(request(s.admin, "GET", "/healthz", &[], b"").status, 200);
    assert_eq!(request(s.admin, "GET", "/readyz", &[], b"").status, 200);

    // Logs: one access line per request, with what an operator needs and nothing secret.
    let logs = s.settled_logs();
    let access: Vec<Value> = logs
        .lines()
        .filter_map(|l| serde_json::from_str::<Value>(l).ok())
        .filter(|v| v["msg"] == "access" && !v["request_id"].as_str().is_some_and(|id| id.starts_with("log-marker-")))
        .collect();
    assert_eq!(access.len(), 6, "{logs}");
    assert!(access.iter().any(|a| a["order_no"] == "M-BAD" && a["outcome"] == "invalid" && a["status"] == 400));
    assert!(access.iter().all(|a| a["request_id"].as_str().unwrap().len() == 32));
    // The access line is a contract: exactly these fields, in this order, of these types.
    let fields = [
        "request_id",
        "endpoint",
        "merchant",
        "order_no",
        "outcome",
        "status",
        "delivery",
        "err_code",
        "latency_ms",
        "upstream_ms",
        "ts",
        "level",
        "msg",
    ];
    for a in &access {
        let keys: Vec<&str> = a.as_object().unwrap().keys().map(String::as_str).collect();
        assert_eq!(keys, fields, "{a}");
        assert_eq!((a["level"].as_str(), a["msg"].as_str()), (Some("info"), Some("access")));
        assert!(a["status"].is_u64() && a["latency_ms"].is_number() && a["ts"].as_str().unwrap().ends_with('Z'), "{a}");
    }
    // Every other line: {ts, level, target, msg} — paysign's own (tracing) and pingora's (its
    // `log` records bridged into tracing) alike.
    let lines: Vec<Value> = logs.lines().map(|l| serde_json::from_str::<Value>(l).unwrap_or_else(|_| panic!("not JSON: {l}"))).collect();
    for l in lines.iter().filter(|l| l["msg"] != "access") {
        let keys: Vec<&str> = l.as_object().unwrap().keys().map(String::as_str).collect();
        assert_eq!(keys, ["ts", "level", "target", "msg"], "{l}");
    }
    // pingora's lifecycle lines are debug (docs/observability.md): at info, only paysign's own.
    assert!(!lines.iter().any(|l| l["target"].as_str().is_some_and(|t| t.starts_with("pingora")) && l["level"] == "info"), "{logs}");
    assert!(lines
        .iter()
        .any(|l| l["target"] == "paysign_plugin::config" && l["msg"].as_str().unwrap().starts_with("paysign 0.1.0 loaded")));
    let verified = access.iter().find(|a| a["outcome"] == "verified").expect("a verified request");
    assert_eq!(
        (&verified["endpoint"], &verified["status"], &verified["delivery"], &verified["err_code"]),
        (&Value::from("bindcard_create"), &Value::from(200), &Value::from("sent"), &Value::from("0000"))
    );
    assert!(verified["upstream_ms"].is_number());
    assert!(logs.contains("merchant 202112090604 profile=rsa"));
    let b = bindcard("x");
    let secrets = [
        b["certNo"].as_str().unwrap(),
        b["mobile"].as_str().unwrap(),
        b["bankCardName"].as_str().unwrap(),
        b["identifyId"].as_str().unwrap(),
        MD5_KEY,
        "BEGIN",
        "reqmsg\":",
    ];
    for secret in secrets.iter().copied().chain(signs.iter().map(String::as_str)) {
        assert!(!logs.contains(secret), "log contains a secret or personal value: {secret}");
    }
    let sandbox_logs = s.sandbox.as_ref().unwrap().logs();
    for secret in secrets {
        assert!(!sandbox_logs.contains(secret), "sandbox log contains {secret}");
    }
}

/// The sandbox on its own behaves like the platform: it rejects what does not decrypt or
/// verify, and answers 1003 for a missing field (which the gateway would have caught).
#[test]
fn sandbox_rejects_like_the_platform() {
    use paysign_protocol::crypto::{keys, Secret};
    use paysign_protocol::{Merchant, MerchantKeys, Opened};
    use std::sync::Arc;

    let s = Stack::start(Options::default());
    let key_text = std::fs::read_to_string(fixtures().join("keys/platform_public.pem")).unwrap();
    let platform_public = Arc::new(keys::load_public(&key_text, false).unwrap());
    let m = |md5: &str| Merchant {
        customer_no: MD5_MERCHANT.into(),
        keys: MerchantKeys::Md5 { md5_key: Secret::new(md5.into()), platform_public: platform_public.clone() },
        chunk_size: 245,
        rollover: None,
    };
    let mut missing = bindcard("SB-1").as_object().unwrap().clone();
    missing.remove("mobile");
    let sealed = m(MD5_KEY).seal(paysign_protocol::Business::from_map(&missing)).unwrap();
    let r = request(s.sandbox_port, "POST", BINDCARD, &[], &sealed.body);
    match m(MD5_KEY).open_response(&r.body).unwrap() {
        Opened::Verified { plaintext, err_code } => {
            let fields = paysign_protocol::fields_of(&plaintext);
            assert_eq!((fields["errCode"].as_str(), err_code.as_deref()), (Some("1003"), Some("1003")));
            assert_eq!(fields["errMessage"], "required field 'mobile' is missing or empty");
        }
        other => panic!("{other:?}"),
    }
    // Signed with the wrong MD5 key: the platform refuses it.
    let sealed = m("wrong-key").seal(paysign_protocol::Business::from_map(bindcard("SB-2").as_object().unwrap())).unwrap();
    let r = request(s.sandbox_port, "POST", BINDCARD, &[], &sealed.body);
    assert_eq!(r.json(), serde_json::json!({"code": "402", "success": false, "data": null, "msg": "验签失败"}));
    let r = request(s.sandbox_port, "POST", BINDCARD, &[], br#"{"customerNo":"1","reqmsg":"AAAA"}"#);
    assert_eq!(r.json()["code"], "401");
    let stats = s.sandbox_stats();
    assert_eq!((stats["received"].as_u64(), stats["opened"].as_u64(), stats["rejected"].as_u64()), (Some(3), Some(1), Some(2)));
}

/// `threads: 1` (one event loop, as the floor bench runs it): calls from many callers at once,
/// both profiles, all verified — while another caller holds a half-sent request open.
#[test]
fn one_event_loop_serves_concurrent_calls_next_to_a_stalled_caller() {
    use std::io::Write as _;
    let s = Stack::start(Options { gateway_extra: "threads: 1\n".into(), ..Options::default() });
    let mut stalled = std::net::TcpStream::connect(("127.0.0.1", s.proxy)).unwrap();
    stalled
        .write_all(b"POST /api/vborder/shortcut/bindCard/create HTTP/1.1\r\nHost: x\r\nContent-Length: 500\r\n\r\n{\"orderNo\":")
        .unwrap();
    let port = s.proxy;
    let callers: Vec<_> = (0..8)
        .map(|i| {
            std::thread::spawn(move || {
                let merchant = if i % 2 == 0 { MD5_MERCHANT } else { RSA_MERCHANT };
                (0..3)
                    .map(|j| {
                        let order = format!("ONE-{i}-{j}");
                        let r =
                            request(port, "POST", BINDCARD, &[("X-Paysign-Merchant", merchant)], bindcard(&order).to_string().as_bytes());
                        (r.status, r.header("X-Paysign-Delivery").map(str::to_string), r.json()["orderNo"] == order.as_str())
                    })
                    .collect::<Vec<_>>()
            })
        })
        .collect();
    let answers: Vec<_> = callers.into_iter().flat_map(|c| c.join().unwrap()).collect();
    assert_eq!(answers.len(), 24);
    assert!(answers.iter().all(|(status, delivery, own)| *status == 200 && delivery.as_deref() == Some("sent") && *own), "{answers:?}");
    let stats = s.sandbox_stats();
    assert_eq!(stats["received"], 24);
    assert_eq!(stats["opened"], 24);
    drop(stalled);
}

/// Up to `max_in_flight` calls (256 by default) can be at the platform at once, and every
/// connection they open goes back to the pool and is reused. With a pool smaller than that (128
/// before), a burst beyond it closed connections on release and opened new ones for the next
/// calls — each a TCP and TLS handshake with a real platform.
#[test]
fn connections_to_the_platform_are_reused_after_a_burst() {
    const BURST: usize = 200;
    let s = Stack::start(Options { merchants: &[MD5_MERCHANT], stall_ms: 1_000, ..Options::default() });
    let wave = |n: usize| {
        let start = std::sync::Barrier::new(BURST);
        std::thread::scope(|scope| {
            let calls: Vec<_> = (0..BURST)
                .map(|i| {
                    let (s, start) = (&s, &start);
                    scope.spawn(move || {
                        let body = bindcard(&format!("STALL-W{n}-{i}"));
                        start.wait();
                        s.post_json(MD5_MERCHANT, &body)
                    })
                })
                .collect();
            for call in calls {
                let r = call.join().unwrap();
                assert_eq!((r.status, r.json()["errCode"].as_str()), (200, Some("0000")), "{}", r.text());
            }
        });
    };
    // The sandbox holds every STALL- call for a second: all 200 are at the platform at once.
    wave(1);
    assert_eq!(sample(&s.metrics(), "paysign_upstream_connections_opened_total"), Some(BURST as f64));
    wave(2);
    assert_eq!(sample(&s.metrics(), "paysign_upstream_connections_opened_total"), Some(BURST as f64), "a connection was not reused");
    assert_eq!(s.sandbox_stats()["received"], 2 * BURST);
}
