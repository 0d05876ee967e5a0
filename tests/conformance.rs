//! The end-to-end contract, checked against BOTH gateways that serve it: the `paysign` binary
//! and `examples/my_gateway.rs` (someone else's pingora gateway with paysign inside, through
//! `Paysign::request_filter`). Each check starts the one it is given from the same
//! `paysign.yaml` and asserts exact statuses, headers, bodies, access lines and metric values:
//! an embedder gets everything the binary has.

mod common;

use std::io::{Read, Write};
use std::net::TcpStream;
use std::time::{Duration, Instant};

use common::*;
use serde_json::Value;

/// Each contract check as two tests: `binary` and `example`.
macro_rules! against_both {
    ($($name:ident),* $(,)?) => {$(
        mod $name {
            use super::*;
            #[test]
            fn binary() {
                super::$name(UnderTest::Binary)
            }
            #[test]
            fn example() {
                super::$name(UnderTest::Example)
            }
        }
    )*};
}

against_both!(
    the_exchange,
    callers_are_refused_before_their_body,
    every_listener_has_a_header_deadline,
    notifications_are_verified_forwarded_and_counted,
    sigterm_drains_a_call_at_the_platform_then_exits
);

fn metric(s: &Stack, series: &str) -> f64 {
    sample(&s.metrics(), series).unwrap_or(0.0)
}

/// The access line of `request_id` in `logs` (the last one).
fn access_line(logs: &str, request_id: &str) -> Value {
    logs.lines()
        .rev()
        .filter_map(|l| serde_json::from_str::<Value>(l).ok())
        .find(|v| v["msg"] == "access" && v["request_id"] == request_id)
        .unwrap_or_else(|| panic!("no access line for {request_id}: {logs}"))
}

/// The access line's contract: these fields in this order, the timings left out.
fn without_timings(mut line: Value) -> Value {
    let keys: Vec<&str> = line.as_object().unwrap().keys().map(String::as_str).collect();
    assert_eq!(
        keys,
        [
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
            "msg"
        ]
    );
    let o = line.as_object_mut().unwrap();
    assert!(o.remove("latency_ms").unwrap().is_f64());
    o.remove("upstream_ms");
    assert!(o.remove("ts").unwrap().is_string());
    line
}

/// Verified calls on both profiles, the tampered answer and its alert metric, the bank page,
/// the refusals before anything is sent (query, repeated merchant header, method, caller's
/// deadline), paysign's 404 for other paths: statuses, headers, bodies, access lines, metrics.
fn the_exchange(under_test: UnderTest) {
    let s = Stack::start(Options { under_test, ..Options::default() });
    let json = [("Content-Type", "application/json")];

    for (merchant, id) in [(MD5_MERCHANT, "conf-md5"), (RSA_MERCHANT, "conf-rsa")] {
        let h = [json[0], ("X-Paysign-Merchant", merchant), ("X-Request-Id", id)];
        let r = request(s.proxy, "POST", BINDCARD, &h, bindcard(&format!("CONF-{id}")).to_string().as_bytes());
        assert_eq!(r.status, 200, "{}", r.text());
        assert_eq!(r.header("Content-Type"), Some("application/json;charset=UTF-8"));
        assert_eq!(r.header("Cache-Control"), Some("no-store"));
        assert_eq!(r.header("X-Request-Id"), Some(id));
        assert_eq!(r.header("X-Paysign-Delivery"), Some("sent"));
        let v = r.json();
        assert_eq!((v["errCode"].as_str(), v["customerNo"].as_str()), (Some("0000"), Some(merchant)));
        assert_eq!(v["orderNo"], format!("CONF-{id}"));
    }

    // A tampered answer: refused, said to be sent, and the page alert's metric moves.
    let h = [json[0], ("X-Paysign-Merchant", MD5_MERCHANT), ("X-Request-Id", "conf-tamper")];
    let r = request(s.proxy, "POST", BINDCARD, &h, bindcard("TAMPER-SIGN-CONF").to_string().as_bytes());
    assert_eq!((r.status, r.header("X-Paysign-Delivery")), (502, Some("sent")), "{}", r.text());
    assert_eq!(r.json()["errMessage"], "the platform's answer could not be verified; it was discarded");

    // `Accept: text/html`: the bank page, with its protective headers.
    let h = [json[0], ("X-Paysign-Merchant", MD5_MERCHANT), ("Accept", "text/html")];
    let r = request(s.proxy, "POST", BINDCARD, &h, bindcard("CONF-H5").to_string().as_bytes());
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(r.header("Content-Type"), Some("text/html; charset=UTF-8"));
    assert_eq!(r.header("X-Frame-Options"), Some("DENY"));
    assert_eq!(r.header("X-Content-Type-Options"), Some("nosniff"));
    assert_eq!(r.header("Cache-Control"), Some("no-store"));
    assert!(r.header("Content-Security-Policy").is_some_and(|c| c.contains("frame-ancestors 'none'")));
    assert!(r.text().contains(r#"action="https://bank.example.test/epcc/bind""#), "{}", r.text());

    // Refused before anything is sent, each with the error contract.
    let body = bindcard("CONF-REFUSED").to_string();
    // (method, query, headers, status, errMessage when checked)
    type Refusal<'a> = (&'a str, &'a str, Vec<(&'a str, &'a str)>, u16, &'a str);
    let refusals: [Refusal; 6] = [
        (
            "POST",
            "?customerNo=999",
            vec![("X-Paysign-Merchant", MD5_MERCHANT)],
            400,
            "a query string is not accepted on this endpoint; send every field in the JSON body",
        ),
        (
            "POST",
            "",
            vec![("X-Paysign-Merchant", MD5_MERCHANT), ("X-Paysign-Merchant", RSA_MERCHANT)],
            400,
            "the x-paysign-merchant header appears more than once",
        ),
        ("POST", "", vec![("X-Paysign-Merchant", MD5_MERCHANT), ("X-Paysign-Deadline-Ms", "soon")], 400, ""),
        ("POST", "", vec![("X-Paysign-Merchant", MD5_MERCHANT), ("X-Paysign-Deadline-Ms", "0")], 503, ""),
        ("GET", "", vec![("X-Paysign-Merchant", MD5_MERCHANT)], 405, ""),
        ("POST", "", vec![], 400, "several merchants are configured: name one with the X-Paysign-Merchant header"),
    ];
    for (i, (method, query, headers, status, message)) in refusals.into_iter().enumerate() {
        let id = format!("conf-refused-{i}");
        let mut h = headers.clone();
        h.push(("X-Request-Id", &id));
        let r = request(s.proxy, method, &format!("{BINDCARD}{query}"), &h, body.as_bytes());
        assert_eq!(r.status, status, "{headers:?}: {}", r.text());
        assert_eq!((r.header("X-Paysign-Delivery"), r.header("X-Request-Id")), (Some("not-sent"), Some(id.as_str())));
        assert_eq!(r.header("Cache-Control"), Some("no-store"));
        if !message.is_empty() {
            assert_eq!(r.json()["errMessage"], message, "{headers:?}");
        }
        if status == 405 {
            assert_eq!(r.header("Allow"), Some("POST"));
        }
    }

    // Not paysign's path: paysign's own 404 (the binary's; the example has no upstream here).
    let r = request(s.proxy, "GET", "/elsewhere", &[("X-Request-Id", "conf-404")], b"");
    assert_eq!((r.status, r.header("X-Paysign-Delivery")), (404, Some("not-sent")), "{}", r.text());
    assert_eq!(r.json()["errCode"], "1002");

    assert_eq!(s.sandbox_stats()["received"], 4, "only the verified, tampered and bank-page calls were sent");

    let logs = s.settled_logs();
    let line = |id: &str| without_timings(access_line(&logs, id));
    assert_eq!(
        line("conf-md5"),
        serde_json::json!({"request_id": "conf-md5", "endpoint": "bindcard_create", "merchant": MD5_MERCHANT, "order_no": "CONF-conf-md5",
            "outcome": "verified", "status": 200, "delivery": "sent", "err_code": "0000", "level": "info", "msg": "access"})
    );
    assert_eq!(
        line("conf-tamper"),
        serde_json::json!({"request_id": "conf-tamper", "endpoint": "bindcard_create", "merchant": MD5_MERCHANT, "order_no": "TAMPER-SIGN-CONF",
            "outcome": "verify_failed", "status": 502, "delivery": "sent", "err_code": "1001", "level": "info", "msg": "access"})
    );
    assert_eq!(
        line("conf-refused-0"),
        serde_json::json!({"request_id": "conf-refused-0", "endpoint": "bindcard_create", "merchant": MD5_MERCHANT, "order_no": null,
            "outcome": "query_refused", "status": 400, "delivery": "not-sent", "err_code": "1002", "level": "info", "msg": "access"})
    );
    assert_eq!(
        line("conf-refused-3"),
        serde_json::json!({"request_id": "conf-refused-3", "endpoint": "bindcard_create", "merchant": MD5_MERCHANT, "order_no": "CONF-REFUSED",
            "outcome": "deadline", "status": 503, "delivery": "not-sent", "err_code": "1001", "level": "info", "msg": "access"})
    );
    assert_eq!(
        line("conf-404"),
        serde_json::json!({"request_id": "conf-404", "endpoint": "none", "merchant": "none", "order_no": null,
            "outcome": "not_found", "status": 404, "delivery": "not-sent", "err_code": "1002", "level": "info", "msg": "access"})
    );

    let m = s.metrics();
    let requests = |merchant: &str, outcome: &str| {
        sample(&m, &format!(r#"paysign_requests_total{{endpoint="bindcard_create",merchant="{merchant}",outcome="{outcome}"}}"#))
    };
    assert_eq!(requests(MD5_MERCHANT, "verified"), Some(2.0), "{m}");
    assert_eq!(requests(RSA_MERCHANT, "verified"), Some(1.0), "{m}");
    assert_eq!(requests(MD5_MERCHANT, "verify_failed"), Some(1.0), "{m}");
    assert_eq!(requests(MD5_MERCHANT, "query_refused"), Some(1.0), "{m}");
    // Refused before the merchant is known (the deadline header, the repeated merchant header).
    assert_eq!(requests("none", "bad_request"), Some(2.0), "{m}");
    assert_eq!(requests(MD5_MERCHANT, "deadline"), Some(1.0), "{m}");
    assert_eq!(requests("none", "unknown_merchant"), Some(1.0), "{m}");
    assert_eq!(sample(&m, r#"paysign_requests_total{endpoint="bindcard_create",merchant="none",outcome="method_not_allowed"}"#), Some(1.0));
    assert_eq!(
        sample(&m, r#"paysign_requests_total{endpoint="none",merchant="none",outcome="not_found"}"#),
        Some(2.0),
        "with the log marker's"
    );
    assert_eq!(sample(&m, r#"paysign_verification_failures_total{reason="signature"}"#), Some(1.0), "{m}");
    assert_eq!(sample(&m, r#"paysign_platform_errcode_total{endpoint="bindcard_create",errcode="0000"}"#), Some(3.0), "{m}");
    assert_eq!(sample(&m, r#"paysign_upstream_duration_seconds_count{endpoint="bindcard_create"}"#), Some(4.0), "{m}");
    assert_eq!(sample(&m, "paysign_requests_in_flight"), Some(0.0), "{m}");
}

/// With `callers` configured, a caller without a valid token is refused 401 as soon as its
/// head is read — the body it announced is never waited for — and a granted one is served.
fn callers_are_refused_before_their_body(under_test: UnderTest) {
    let sha = |t: &str| paysign_plugin::config::sha256(t.as_bytes()).iter().map(|b| format!("{b:02x}")).collect::<String>();
    let s = Stack::start(Options {
        under_test,
        gateway_extra: format!(
            "callers:\n  - name: checkout\n    token_sha256: {}\n    merchants: [\"{MD5_MERCHANT}\"]\n    endpoints: [\"{BINDCARD}\"]\n",
            sha("checkout-token")
        ),
        ..Options::default()
    });
    let mut c = TcpStream::connect(("127.0.0.1", s.proxy)).unwrap();
    c.write_all(
        format!("POST {BINDCARD} HTTP/1.1\r\nHost: x\r\nX-Paysign-Merchant: {MD5_MERCHANT}\r\nContent-Length: 1000\r\n\r\n").as_bytes(),
    )
    .unwrap();
    // The body never comes: the answer must not wait for it (client_body_timeout_ms is 10 s).
    c.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    let started = Instant::now();
    let mut head = Vec::new();
    let mut buf = [0u8; 4096];
    while !head.windows(4).any(|w| w == b"\r\n\r\n") {
        match c.read(&mut buf) {
            Ok(n) if n > 0 => head.extend_from_slice(&buf[..n]),
            other => panic!("no answer before the body: {other:?} after {:?}", started.elapsed()),
        }
    }
    let head = String::from_utf8_lossy(&head).to_lowercase();
    assert!(head.starts_with("http/1.1 401 "), "{head}");
    assert!(head.contains("www-authenticate: bearer\r\n") && head.contains("x-paysign-delivery: not-sent\r\n"), "{head}");

    let granted = [("X-Paysign-Merchant", MD5_MERCHANT), ("Authorization", "Bearer checkout-token")];
    let r = request(s.proxy, "POST", BINDCARD, &granted, bindcard("CONF-CALLER").to_string().as_bytes());
    assert_eq!((r.status, r.header("X-Paysign-Delivery")), (200, Some("sent")), "{}", r.text());
    assert_eq!(s.sandbox_stats()["received"], 1);
    assert_eq!(metric(&s, r#"paysign_caller_refusals_total{caller="anonymous",reason="missing"}"#), 1.0);
}

/// `header_timeout_ms` on the proxy, the notification listener (which faces the internet) and
/// the operations endpoint: half a head is closed at the deadline, and counted.
fn every_listener_has_a_header_deadline(under_test: UnderTest) {
    let notify_port = free_port();
    let extra = format!(
        "header_timeout_ms: 300\nnotify:\n  listen: 127.0.0.1:{notify_port}\n  routes:\n    - path: /notify/bindcard\n      target: http://127.0.0.1:9/unused\n"
    );
    let s = Stack::start(Options { under_test, merchants: &[MD5_MERCHANT], gateway_extra: extra, ..Options::default() });
    wait_listening(notify_port);
    for (listener, port) in [("proxy", s.proxy), ("notify", notify_port), ("admin", s.admin)] {
        let mut half = TcpStream::connect(("127.0.0.1", port)).unwrap();
        half.write_all(b"POST /api/x HTTP/1.1\r\nHost: x\r\n").unwrap();
        half.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
        let started = Instant::now();
        let mut got = Vec::new();
        let closed = loop {
            let mut buf = [0u8; 1024];
            match half.read(&mut buf) {
                Ok(0) => break true,
                Ok(n) => got.extend_from_slice(&buf[..n]),
                Err(e) if e.kind() == std::io::ErrorKind::ConnectionReset => break true,
                Err(_) => break false,
            }
        };
        assert!(closed && got.is_empty(), "{listener}: half a head held for {:?} (got {got:?})", started.elapsed());
        let series = format!(r#"paysign_header_timeouts_total{{listener="{listener}"}}"#);
        assert!(eventually(5, || metric(&s, &series) == 1.0), "{listener}: {}", s.metrics());
    }
}

/// The notification listener on `notify.listen`: the platform's (the sandbox's) notification is
/// verified, forwarded to the internal target and acknowledged; a forged one is refused `FAIL`
/// and never forwarded; both counted.
fn notifications_are_verified_forwarded_and_counted(under_test: UnderTest) {
    use std::sync::Arc;
    let target = common::http_server::start(Arc::new(|_r| (200, "text/plain".into(), b"ok".to_vec())));
    let notify_port = free_port();
    let extra = format!(
        "notify:\n  listen: 127.0.0.1:{notify_port}\n  routes:\n    - path: /notify/bindcard\n      target: http://127.0.0.1:{}/internal/bound\n",
        target.port
    );
    let s = Stack::start(Options { under_test, merchants: &[MD5_MERCHANT], gateway_extra: extra, ..Options::default() });
    wait_listening(notify_port);
    let notify = |order: &str, tamper: Option<&str>| {
        let mut req = serde_json::json!({"customerNo": MD5_MERCHANT, "orderNo": order, "url": format!("http://127.0.0.1:{notify_port}/notify/bindcard")});
        if let Some(t) = tamper {
            req["tamper"] = t.into();
        }
        request(s.sandbox_port, "POST", "/__sandbox/notify", &[], req.to_string().as_bytes()).json()
    };
    let v = notify("CONF-NTF-1", None);
    assert_eq!(v["status"], 200, "{v}");
    let got = target.requests.recv_timeout(Duration::from_secs(15)).expect("the internal target received nothing");
    assert_eq!((got.method.as_str(), got.path.as_str()), ("POST", "/internal/bound"));
    assert_eq!(got.header("X-Paysign-Merchant"), Some(MD5_MERCHANT));
    assert_eq!(serde_json::from_slice::<Value>(&got.body).unwrap()["orderNo"], "CONF-NTF-1");

    let v = notify("CONF-NTF-2", Some("sign"));
    assert_eq!((v["status"].as_u64(), v["body"].as_str()), (Some(400), Some("FAIL")), "{v}");
    assert!(target.requests.try_recv().is_err(), "a forged notification was forwarded");

    let m = s.metrics();
    let n = |outcome: &str| sample(&m, &format!(r#"paysign_notifications_total{{outcome="{outcome}",route="/notify/bindcard"}}"#));
    assert_eq!((n("forwarded"), n("forged")), (Some(1.0), Some(1.0)), "{m}");
}

/// SIGTERM while a call waits on the platform (the sandbox holds `STALL-` orders for 2 s): new
/// connections are refused, the call gets its verified answer and its access line, and the
/// process exits as soon as nothing is in flight — not after pingora's own grace (300 s by
/// default, which an embedder got before `Paysign::server_conf`/`exit_when_drained`).
fn sigterm_drains_a_call_at_the_platform_then_exits(under_test: UnderTest) {
    let o = Options { under_test, merchants: &[MD5_MERCHANT], grace: 1, stall_ms: 2_000, read_timeout_ms: 10_000, ..Options::default() };
    let mut s = Stack::start(o);
    let proxy = s.proxy;
    let caller =
        std::thread::spawn(move || post_to(proxy, BINDCARD, Some(MD5_MERCHANT), bindcard("STALL-CONF-TERM").to_string().as_bytes()));
    assert!(eventually(20, || s.sandbox_stats()["received"] == 1), "the call never reached the platform");
    let term = std::process::Command::new("kill").args(["-TERM", &s.gateway_pid().to_string()]).status().unwrap();
    assert!(term.success());
    assert!(eventually(10, || TcpStream::connect(("127.0.0.1", proxy)).is_err()), "still accepting after SIGTERM");
    let r = caller.join().expect("the caller got no answer");
    assert_eq!((r.status, r.header("X-Paysign-Delivery")), (200, Some("sent")), "{}", r.text());
    assert_eq!(r.json()["errCode"], "0000");
    // The drain deadline of this configuration is its longest call (~13 s); the exit comes when
    // the call is answered. 30 s: far below pingora's own 300 s, far above the drain.
    assert!(eventually(30, || s.gateway.exit_code().is_some()), "{under_test:?} did not exit after SIGTERM");
    assert_eq!(s.gateway.exit_code(), Some(0));
    let logs = s.gateway.logs();
    let lines: Vec<Value> = logs.lines().filter_map(|l| serde_json::from_str::<Value>(l).ok()).collect();
    let access: Vec<&Value> = lines.iter().filter(|l| l["msg"] == "access" && l["order_no"] == "STALL-CONF-TERM").collect();
    assert_eq!(access.len(), 1, "{logs}");
    assert_eq!((access[0]["status"].as_u64(), access[0]["outcome"].as_str()), (Some(200), Some("verified")));
    assert!(logs.contains("shutdown: no call in flight after"), "{logs}");
}
