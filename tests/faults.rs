//! Faults on both sides: a misbehaving platform (tests/common/fault_server.rs) and
//! misbehaving callers. Each ends in the documented error with the right delivery, nothing
//! hangs, memory stays bounded, and paysign keeps serving.

mod common;

use std::io::{Read, Write};
use std::net::TcpStream;
use std::sync::Arc;
use std::time::{Duration, Instant};

use common::fault_server::{self, Fault};
use common::*;
use paysign_protocol::crypto::{keys, Secret};
use paysign_protocol::platform::{Platform, PlatformMerchant, PlatformMerchantKeys};
use serde_json::{Map, Value};

fn platform() -> (Platform, PlatformMerchant) {
    let read = |n: &str| std::fs::read_to_string(fixtures().join("keys").join(n)).unwrap();
    (
        Platform { private: Arc::new(keys::load_private(&read("platform_private.pem"), false).unwrap()), previous: None },
        PlatformMerchant {
            customer_no: MD5_MERCHANT.into(),
            keys: PlatformMerchantKeys::Md5 { md5_key: Secret::new(MD5_KEY.into()) },
            previous: None,
        },
    )
}

/// A correctly sealed answer for the md5 merchant: (customerNo, reqmsg).
fn sealed(order: &str) -> (String, String) {
    let (p, pm) = platform();
    let mut f = Map::new();
    f.insert("orderNo".into(), Value::String(order.into()));
    f.insert("customerNo".into(), Value::String(MD5_MERCHANT.into()));
    f.insert("errCode".into(), Value::String("0000".into()));
    let body: Value = serde_json::from_slice(&p.seal_response(&pm, f).unwrap()).unwrap();
    let data: Value = serde_json::from_str(body["data"].as_str().unwrap()).unwrap();
    (MD5_MERCHANT.into(), data["reqmsg"].as_str().unwrap().to_string())
}

/// The platform's envelope around [`sealed`]'s answer: a `200` that paysign verifies.
fn verified_answer(order: &str) -> Vec<u8> {
    let (customer, reqmsg) = sealed(order);
    serde_json::json!({"code": "200", "success": true, "data": serde_json::json!({"customerNo": customer, "reqmsg": reqmsg}).to_string(), "msg": "ok"})
        .to_string()
        .into_bytes()
}

#[test]
fn platform_faults_end_in_the_documented_errors() {
    let fs = fault_server::start();
    let s = Stack::start(Options {
        sandbox: false,
        platform_port: Some(fs.port),
        read_timeout_ms: 1_000,
        merchants: &[MD5_MERCHANT],
        ..Options::default()
    });
    let pid = s.gateway_pid();
    let call = |order: &str| s.post(BINDCARD, None, bindcard(order).to_string().as_bytes());
    let gateway_err = |r: &Response, status: u16, delivery: &str, message: &str| {
        assert_eq!(r.status, status, "{}", r.text());
        assert_eq!(r.header("X-Paysign-Delivery"), Some(delivery), "{}", r.text());
        let v = r.json();
        assert_eq!(v["source"], "gateway");
        assert_eq!(v["errMessage"], message, "{v}");
    };

    let (customer, reqmsg) = sealed("OK-1");
    let good = |data: Value| serde_json::json!({"code": "200", "success": true, "data": data, "msg": "ok"}).to_string().into_bytes();

    // `data` as an object instead of a string: accepted (PROTOCOL.md) and verified.
    fs.set(Fault::Answer(200, "application/json", good(serde_json::json!({"customerNo": customer, "reqmsg": reqmsg}))));
    // Internal and hop-by-hop headers stay inside: the platform is a third party.
    let r = request(
        s.proxy,
        "POST",
        "/api/vborder/shortcut/bindCard/create",
        &[
            ("Authorization", "Bearer internal-token"),
            ("Cookie", "session=internal"),
            ("X-Internal-User", "alice"),
            ("X-Forwarded-For", "10.1.2.3"),
            ("Keep-Alive", "timeout=5"),
            ("TE", "trailers"),
            ("X-Request-Id", "hdr-test-1"),
            ("Content-Type", "text/plain"),
        ],
        bindcard("OK-1").to_string().as_bytes(),
    );
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(r.json()["orderNo"], "OK-1");
    let head = fs.last_head();
    assert_eq!(head[0], "POST /api/vborder/shortcut/bindCard/create HTTP/1.1");
    let mut names: Vec<String> = head[1..].iter().map(|l| l.split(':').next().unwrap().to_ascii_lowercase()).collect();
    names.sort();
    assert_eq!(names, ["accept", "content-length", "content-type", "host", "user-agent", "x-request-id"], "{head:?}");
    assert!(
        head.contains(&"Content-Type: application/json;charset=UTF-8".to_string())
            || head.contains(&"content-type: application/json;charset=UTF-8".to_string()),
        "{head:?}"
    );

    let t = Instant::now();
    fs.set(Fault::NeverAnswer);
    gateway_err(&call("F-1"), 504, "unknown", "the platform did not answer in time; the request may have been received");
    fs.set(Fault::SlowDrip(Duration::from_millis(50)));
    gateway_err(&call("F-2"), 504, "unknown", "the platform did not answer in time; the request may have been received");
    assert!(t.elapsed() < Duration::from_secs(10), "timeouts must bound slow platforms");

    fs.set(Fault::CloseMidBody);
    gateway_err(&call("F-3"), 502, "unknown", "the connection to the platform failed after sending; the request may have been received");
    fs.set(Fault::Garbage);
    gateway_err(&call("F-4"), 502, "unknown", "the connection to the platform failed after sending; the request may have been received");
    fs.set(Fault::Huge(50 * 1024 * 1024));
    gateway_err(&call("F-5"), 502, "sent", "the platform's answer is larger than 1048576 bytes");
    fs.set(Fault::Answer(503, "text/html", b"<html><body>Service Unavailable</body></html>".to_vec()));
    gateway_err(&call("F-6"), 502, "sent", "the platform answered HTTP 503 without a protocol envelope");
    fs.set(Fault::Answer(200, "text/html", b"<html>maintenance</html>".to_vec()));
    gateway_err(&call("F-7"), 502, "sent", "the platform's answer could not be verified; it was discarded");
    let truncated = serde_json::json!({"customerNo": customer, "reqmsg": &reqmsg[..reqmsg.len() - 40]}).to_string();
    fs.set(Fault::Answer(200, "application/json", good(Value::String(truncated))));
    gateway_err(&call("F-8"), 502, "sent", "the platform's answer could not be verified; it was discarded");
    fs.set(Fault::Answer(200, "application/json", good(Value::String("{\"customerNo\":".into()))));
    gateway_err(&call("F-9"), 502, "sent", "the platform's answer could not be verified; it was discarded");

    // Every faulty answer reached the fault server exactly once: nothing was retried.
    assert_eq!(fs.received(), 10);
    // Memory stayed bounded although a 50 MiB answer was offered.
    assert!(proc_status(pid, "VmHWM") < 64 * 1024, "peak RSS {} KiB", proc_status(pid, "VmHWM"));
    // And it keeps serving.
    fs.set(Fault::Answer(
        200,
        "application/json",
        good(Value::String(serde_json::json!({"customerNo": customer, "reqmsg": reqmsg}).to_string())),
    ));
    assert_eq!(call("OK-2").status, 200);
    let m = s.metrics();
    for (outcome, n) in [
        ("timeout", 2.0),
        ("upstream_io", 2.0),
        ("response_too_large", 1.0),
        ("upstream_http", 1.0),
        ("verify_failed", 3.0),
        ("verified", 2.0),
    ] {
        assert_eq!(
            sample(&m, &format!(r#"paysign_requests_total{{endpoint="bindcard_create",merchant="{MD5_MERCHANT}",outcome="{outcome}"}}"#)),
            Some(n),
            "{outcome}"
        );
    }

    // A verified answer that arrives in 60-byte pieces is put together whole and opened.
    let whole = good(Value::String(serde_json::json!({"customerNo": customer, "reqmsg": reqmsg}).to_string()));
    assert!(whole.len() > 5 * 60, "{} bytes: too few pieces", whole.len());
    fs.set(Fault::Pieces(whole, 60));
    let r = call("OK-3");
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(r.json()["orderNo"], "OK-1");
    assert_eq!(fs.received(), 12);
}

#[test]
fn misbehaving_callers_cost_nothing_and_reach_nothing() {
    let fs = fault_server::start();
    let s = Stack::start(Options {
        sandbox: false,
        platform_port: Some(fs.port),
        merchants: &[MD5_MERCHANT],
        gateway_extra: "client_body_timeout_ms: 2000\n".into(),
        ..Options::default()
    });
    fs.set(Fault::Answer(200, "application/json", verified_answer("OK-1")));

    // 100 slowloris connections: half a request head each, then silence.
    let lorises: Vec<TcpStream> = (0..100)
        .map(|_| {
            let mut c = TcpStream::connect(("127.0.0.1", s.proxy)).unwrap();
            c.write_all(b"POST /api/vborder/shortcut/bindCard/create HTTP/1.1\r\nHost: x\r\nContent-Le").unwrap();
            c
        })
        .collect();
    // A client that announces a body and sends only part of it, then waits.
    let mut partial = TcpStream::connect(("127.0.0.1", s.proxy)).unwrap();
    partial
        .write_all(b"POST /api/vborder/shortcut/bindCard/create HTTP/1.1\r\nHost: x\r\nContent-Length: 500\r\n\r\n{\"orderNo\":")
        .unwrap();
    // A client that disconnects in the middle of its body.
    {
        let mut gone = TcpStream::connect(("127.0.0.1", s.proxy)).unwrap();
        gone.write_all(b"POST /api/vborder/shortcut/bindCard/create HTTP/1.1\r\nHost: x\r\nContent-Length: 500\r\n\r\n{\"orderNo\":\"GONE")
            .unwrap();
    }
    // A body over the limit, streamed.
    let mut big = TcpStream::connect(("127.0.0.1", s.proxy)).unwrap();
    big.write_all(b"POST /api/vborder/shortcut/bindCard/create HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n").unwrap();
    let chunk = format!("{:x}\r\n{}\r\n", 32 * 1024, "x".repeat(32 * 1024));
    for _ in 0..4 {
        if big.write_all(chunk.as_bytes()).is_err() {
            break;
        }
    }
    let mut answer = Vec::new();
    big.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    let _ = big.read_to_end(&mut answer);
    let text = String::from_utf8_lossy(&answer);
    assert!(text.starts_with("HTTP/1.1 413"), "{text}");

    // Meanwhile a normal caller is served at once.
    let t = Instant::now();
    let r = s.post(BINDCARD, None, bindcard("OK-1").to_string().as_bytes());
    assert_eq!(r.status, 200, "{}", r.text());
    assert!(t.elapsed() < Duration::from_secs(5));

    // The partial body times out with 408 (client_body_timeout_ms, 2 s here).
    partial.set_read_timeout(Some(Duration::from_secs(20))).unwrap();
    let mut answer = Vec::new();
    let _ = partial.read_to_end(&mut answer);
    let text = String::from_utf8_lossy(&answer);
    assert!(text.starts_with("HTTP/1.1 408"), "{text}");
    assert!(text.contains("X-Paysign-Delivery: not-sent") || text.contains("x-paysign-delivery: not-sent"), "{text}");

    // Only the one complete request ever reached the platform.
    assert_eq!(fs.received(), 1);
    drop(lorises);
    assert_eq!(request(s.admin, "GET", "/readyz", &[], b"").status, 200);
}

/// Kept-alive connections to the platform are reused, and one the platform closed while it
/// waited idle is not: the next call goes out on a new connection and is answered (a dead
/// connection taken from the pool would lose that call as "unknown").
#[test]
fn an_idle_connection_the_platform_closed_is_not_reused() {
    let fs = fault_server::start();
    let s = Stack::start(Options { sandbox: false, platform_port: Some(fs.port), merchants: &[MD5_MERCHANT], ..Options::default() });
    let ok = verified_answer("OK-1");
    let call = |order: &str| s.post(BINDCARD, None, bindcard(order).to_string().as_bytes());
    let opened = || sample(&s.metrics(), "paysign_upstream_connections_opened_total");

    fs.set(Fault::Answer(200, "application/json", ok.clone()));
    for i in 0..3 {
        assert_eq!(call(&format!("KEPT-{i}")).status, 200);
    }
    assert_eq!(opened(), Some(1.0), "three calls in a row share one connection");

    fs.set(Fault::AnswerThenClose(200, "application/json", ok.clone()));
    assert_eq!(call("CLOSED-1").status, 200);
    // Closed while paysign keeps it idle (after it was put back).
    fs.close_idle();
    assert!(eventually(5, || fs.closed() == 1), "the fault server closed the connection");
    fs.set(Fault::Answer(200, "application/json", ok));
    let r = call("AFTER-CLOSE");
    assert_eq!((r.status, r.header("X-Paysign-Delivery")), (200, Some("sent")), "{}", r.text());
    assert_eq!(opened(), Some(2.0), "the closed connection was replaced, not reused");
    assert_eq!(fs.received(), 5, "every call reached the platform once");
}

/// An answer that says `Connection: close` ends its connection: paysign closes it and does not
/// reuse it, even though the platform leaves it open (each call opens its own; every one of
/// them is closed by paysign, none left behind).
#[test]
fn a_connection_the_platform_said_close_on_is_closed_not_reused() {
    let fs = fault_server::start();
    let s = Stack::start(Options { sandbox: false, platform_port: Some(fs.port), merchants: &[MD5_MERCHANT], ..Options::default() });
    let ok = verified_answer("OK-1");
    let opened = || sample(&s.metrics(), "paysign_upstream_connections_opened_total");

    fs.set(Fault::AnswerSayingClose(200, "application/json", ok));
    for i in 0..3 {
        let r = s.post(BINDCARD, None, bindcard(&format!("CLOSE-{i}")).to_string().as_bytes());
        assert_eq!((r.status, r.header("X-Paysign-Delivery")), (200, Some("sent")), "{}", r.text());
    }
    assert_eq!(opened(), Some(3.0), "no connection that said close was reused");
    assert!(eventually(5, || fs.ended_by_client() == 3), "paysign closed all three: {} closed", fs.ended_by_client());
    assert_eq!(fs.received(), 3, "every call reached the platform once");
}
