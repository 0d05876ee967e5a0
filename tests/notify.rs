//! Notifications: the real sandbox notifies the real gateway's notification listener, which
//! verifies and hands the plaintext to an internal target (a recording server here).

mod common;

use std::sync::atomic::{AtomicU16, Ordering};
use std::sync::Arc;
use std::time::Duration;

use common::http_server::{self, Received};
use common::*;
use serde_json::Value;

struct Setup {
    stack: Stack,
    notify_port: u16,
    target: http_server::Server,
    target_status: Arc<AtomicU16>,
}

fn setup() -> Setup {
    setup_with(String::new())
}

/// [`setup`] with `sandbox_extra` appended to the sandbox's configuration.
fn setup_with(sandbox_extra: String) -> Setup {
    let target_status = Arc::new(AtomicU16::new(200));
    let st = target_status.clone();
    let target = http_server::start(Arc::new(move |_r| (st.load(Ordering::SeqCst), "text/plain".into(), b"ok".to_vec())));
    let notify_port = free_port();
    let extra = format!(
        "notify:\n  listen: 127.0.0.1:{notify_port}\n  forward_timeout_ms: 3000\n  routes:\n    - path: /notify/bindcard\n      target: http://127.0.0.1:{}/internal/bind-notified\n    - path: /notify/md5-only\n      target: http://127.0.0.1:{}/internal/md5\n      merchant: \"{MD5_MERCHANT}\"\n",
        target.port, target.port
    );
    let stack = Stack::start(Options { gateway_extra: extra, sandbox_extra, ..Options::default() });
    wait_listening(notify_port);
    Setup { stack, notify_port, target, target_status }
}

fn notify_on_demand(s: &Setup, customer: &str, order: &str, path: &str, tamper: Option<&str>) -> Value {
    let mut req = serde_json::json!({
        "customerNo": customer, "orderNo": order, "url": format!("http://127.0.0.1:{}{path}", s.notify_port)
    });
    if let Some(t) = tamper {
        req["tamper"] = Value::String(t.into());
    }
    request(s.stack.sandbox_port, "POST", "/__sandbox/notify", &[], req.to_string().as_bytes()).json()
}

fn next(target: &http_server::Server) -> Received {
    target.requests.recv_timeout(Duration::from_secs(15)).expect("the internal target received nothing")
}

#[test]
fn a_bound_card_is_notified_verified_forwarded_and_acknowledged() {
    let s = setup();
    for merchant in [MD5_MERCHANT, RSA_MERCHANT] {
        let order = format!("NTF-{merchant}");
        let mut b = bindcard(&order);
        b["bindNotifyUrl"] = Value::String(format!("http://127.0.0.1:{}/notify/bindcard", s.notify_port));
        let r = s.stack.post_json(merchant, &b);
        assert_eq!(r.json()["errCode"], "0000");

        let got = next(&s.target);
        assert_eq!(got.method, "POST");
        assert_eq!(got.path, "/internal/bind-notified");
        assert_eq!(got.header("Content-Type"), Some("application/json;charset=UTF-8"));
        assert_eq!(got.header("X-Paysign-Merchant"), Some(merchant));
        assert_eq!(got.header("X-Paysign-Notification-Id").unwrap().len(), 32);
        let v: Value = serde_json::from_slice(&got.body).unwrap();
        assert_eq!(v["orderNo"], order.as_str());
        assert_eq!(v["customerNo"], merchant);
        assert_eq!(v["bindStatus"], "SUCCESS");
        assert!(v["sign"].is_string());
    }
    assert!(eventually(15, || s.stack.sandbox_stats()["notifications_acked"] == 2), "{}", s.stack.sandbox_stats());
    let m = s.stack.metrics();
    assert_eq!(sample(&m, r#"paysign_notifications_total{outcome="forwarded",route="/notify/bindcard"}"#), Some(2.0));
    assert_eq!(sample(&m, r#"paysign_notification_forward_duration_seconds_count{route="/notify/bindcard"}"#), Some(2.0));

    // Each has its access line: these fields, in this order (docs/observability.md).
    let lines = |logs: &str| -> Vec<Value> {
        logs.lines().filter_map(|l| serde_json::from_str::<Value>(l).ok()).filter(|v| v["kind"] == "notification").collect()
    };
    assert!(eventually(10, || lines(&s.stack.gateway.logs()).len() == 2), "{}", s.stack.gateway.logs());
    for (line, merchant) in lines(&s.stack.gateway.logs()).iter().zip([MD5_MERCHANT, RSA_MERCHANT]) {
        let keys: Vec<&str> = line.as_object().unwrap().keys().map(String::as_str).collect();
        assert_eq!(
            keys,
            ["route", "merchant", "notification_id", "order_no", "outcome", "status", "latency_ms", "kind", "ts", "level", "msg"],
            "{line}"
        );
        assert_eq!((&line["route"], &line["merchant"]), (&Value::from("/notify/bindcard"), &Value::from(merchant)), "{line}");
        assert_eq!(
            (&line["order_no"], &line["outcome"], &line["status"]),
            (&Value::from(format!("NTF-{merchant}")), &Value::from("forwarded"), &Value::from(200)),
            "{line}"
        );
        assert_eq!((&line["level"], &line["msg"]), (&Value::from("info"), &Value::from("access")), "{line}");
    }
}

#[test]
fn forged_tampered_malformed_or_misrouted_notifications_are_refused_and_not_forwarded() {
    let s = setup();
    for merchant in [MD5_MERCHANT, RSA_MERCHANT] {
        for tamper in ["sign", "customer", "cipher", "malformed"] {
            let v = notify_on_demand(&s, merchant, "NTF-BAD", "/notify/bindcard", Some(tamper));
            assert_eq!(v["status"], 400, "{merchant} {tamper}: {v}");
            assert_eq!(v["body"], "FAIL");
        }
    }
    // A valid rsa notification on the md5 merchant's route: wrong merchant.
    let v = notify_on_demand(&s, RSA_MERCHANT, "NTF-X", "/notify/md5-only", None);
    assert_eq!(v["status"], 400, "{v}");
    let v = notify_on_demand(&s, MD5_MERCHANT, "NTF-X", "/notify/unknown", None);
    assert_eq!(v["status"], 404, "{v}");
    // A GET is not a notification.
    assert_eq!(request(s.notify_port, "GET", "/notify/bindcard", &[], b"").status, 405);

    assert!(s.target.requests.try_recv().is_err(), "something unverified was forwarded");
    let m = s.stack.metrics();
    let n = |outcome: &str| {
        sample(&m, &format!(r#"paysign_notifications_total{{outcome="{outcome}",route="/notify/bindcard"}}"#)).unwrap_or(0.0)
    };
    assert_eq!(n("forged"), 4.0, "{m}");
    assert_eq!(n("unknown_merchant"), 2.0, "an envelope naming a customerNo we do not serve");
    assert_eq!(n("malformed"), 2.0);
    assert_eq!(sample(&m, r#"paysign_notifications_total{outcome="wrong_merchant",route="/notify/md5-only"}"#), Some(1.0));
    assert_eq!(sample(&m, r#"paysign_notifications_total{outcome="not_found",route="none"}"#), Some(1.0));
    assert_eq!(sample(&m, r#"paysign_notifications_total{outcome="method_not_allowed",route="/notify/bindcard"}"#), Some(1.0));
}

#[test]
fn nothing_is_acknowledged_before_the_target_took_it_and_repeats_carry_the_same_id() {
    let s = setup();
    s.target_status.store(503, Ordering::SeqCst);
    let v = notify_on_demand(&s, RSA_MERCHANT, "NTF-RETRY", "/notify/bindcard", None);
    assert_eq!(v["status"], 502, "{v}");
    assert_eq!(v["body"], "FAIL");
    let first = next(&s.target);

    s.target_status.store(200, Ordering::SeqCst);
    let v = notify_on_demand(&s, RSA_MERCHANT, "NTF-RETRY", "/notify/bindcard", None);
    assert_eq!(v["status"], 200);
    assert_eq!(v["body"], "SUCCESS");
    let second = next(&s.target);
    assert_eq!(first.header("X-Paysign-Notification-Id"), second.header("X-Paysign-Notification-Id"));
    assert_eq!(first.body, second.body);

    // A different notification has a different id.
    let v = notify_on_demand(&s, RSA_MERCHANT, "NTF-OTHER", "/notify/bindcard", None);
    assert_eq!(v["status"], 200);
    let third = next(&s.target);
    assert_ne!(third.header("X-Paysign-Notification-Id"), second.header("X-Paysign-Notification-Id"));

    let m = s.stack.metrics();
    assert_eq!(sample(&m, r#"paysign_notifications_total{outcome="target_failed",route="/notify/bindcard"}"#), Some(1.0));
    assert_eq!(sample(&m, r#"paysign_notifications_total{outcome="forwarded",route="/notify/bindcard"}"#), Some(2.0));
}

/// An embedder's notification listener, built through the plugin API in the embedder's own
/// process (no paysign binary): it is safeguarded like the binary's — a request head sent in
/// part is closed at `header_timeout_ms` and counted — while its access lines go to the
/// embedder's `tracing` subscriber and its threads keep their priority. (Issue 27: an
/// embedder's listener, a bare `Service::new` of the app, held a half-sent head for 25 s+ —
/// pingora's own read timeout is 60 s —, wrote its lines to paysign's own stderr writer and
/// reniced the embedder's thread.)
#[test]
fn an_embedded_notification_listener_is_safeguarded_logs_through_tracing_and_keeps_thread_priority() {
    use pingora::services::Service as _;
    use std::io::{Read, Write};
    use std::time::Instant;

    let dir = temp_dir();
    let notify_port = free_port();
    let yaml = format!(
        "listen: 127.0.0.1:{}\nadmin_listen: 127.0.0.1:{}\nheader_timeout_ms: 400\nplatform:\n  base_url: http://127.0.0.1:9\nnotify:\n  listen: 127.0.0.1:{notify_port}\n  routes:\n    - path: /notify/bindcard\n      target: http://127.0.0.1:9/unused\nmerchants:\n  - customer_no: \"{MD5_MERCHANT}\"\n    profile: md5\n    platform_public_key: keys/platform_public.pem\n    md5_key_file: keys/md5.key\n",
        free_port(),
        free_port()
    );
    let path = dir.join("paysign.yaml");
    std::fs::write(&path, yaml).unwrap();
    let config = paysign_plugin::config::load(&path).expect("the configuration loads");
    let registry = prometheus::Registry::new();
    let metrics = Arc::new(paysign_plugin::metrics::Metrics::new(&registry).unwrap());
    let live = Arc::new(paysign_plugin::Live::new(path, config, metrics.clone()));
    let mut service = paysign_plugin::Notifications::new(live).service().expect("notify is configured");

    let runtime = tokio::runtime::Builder::new_multi_thread().worker_threads(1).thread_name("embedder").enable_all().build().unwrap();
    let (_shutdown, watch) = tokio::sync::watch::channel(false);
    runtime.spawn(async move { service.start_service(None, watch, 1).await });
    wait_listening(notify_port);
    let timeouts = || metrics.header_timeouts.with_label_values(&["notify"]).get();
    let before = timeouts();

    let mut c = std::net::TcpStream::connect(("127.0.0.1", notify_port)).unwrap();
    let sent = Instant::now();
    c.write_all(b"POST /notify/bindcard HTTP/1.1\r\nHost: x\r\nContent-Le").unwrap();
    c.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    let mut buf = [0u8; 64];
    let read = c.read(&mut buf);
    let took = sent.elapsed();
    assert!(matches!(read, Ok(0) | Err(_)), "the half-sent head got an answer: {read:?}");
    assert!(took >= Duration::from_millis(400) && took < Duration::from_secs(3), "closed after {took:?}, not at the 400 ms deadline");
    assert!(eventually(5, || timeouts() == before + 1), "paysign_header_timeouts_total{{listener=\"notify\"}}: {}", timeouts());

    // A whole request is served (here: a GET, which is not a notification), and its access
    // line goes to the embedder's subscriber, not to a writer of paysign's own.
    let lines = access_lines();
    assert_eq!(request(notify_port, "GET", "/notify/bindcard", &[], b"").status, 405);
    assert!(eventually(5, || lines.lock().unwrap().len() == 1), "{:?}", lines.lock().unwrap());
    let line: Value = serde_json::from_str(&lines.lock().unwrap()[0]).unwrap();
    let keys: Vec<&str> = line.as_object().unwrap().keys().map(String::as_str).collect();
    assert_eq!(keys, ["route", "outcome", "status", "latency_ms", "kind", "ts", "level", "msg"], "{line}");
    assert_eq!(
        (&line["route"], &line["outcome"], &line["status"]),
        (&Value::from("/notify/bindcard"), &Value::from("method_not_allowed"), &Value::from(405))
    );

    // The embedder's threads kept their priority, this thread's (lowering it is opt-in).
    // SAFETY: getpriority of the calling thread; no memory is passed.
    let own = i64::from(unsafe { libc::getpriority(libc::PRIO_PROCESS, 0) });
    let threads = embedder_threads();
    assert!(!threads.is_empty());
    assert!(threads.iter().all(|nice| *nice == own), "an embedder's threads were reniced: {threads:?}, not {own}");
}

/// The nice values of this process's threads named `embedder` (from /proc).
fn embedder_threads() -> Vec<i64> {
    let mut out = Vec::new();
    for task in std::fs::read_dir("/proc/self/task").unwrap() {
        let stat = std::fs::read_to_string(task.unwrap().path().join("stat")).unwrap_or_default();
        // `pid (comm) state …`: the nice value is the 19th field (index 16 after the comm).
        let Some((comm, rest)) = stat.split_once(" (").and_then(|(_, r)| r.rsplit_once(") ")) else { continue };
        if comm == "embedder" {
            out.push(rest.split(' ').nth(16).unwrap().parse().unwrap());
        }
    }
    out
}

/// An embedder's `tracing` subscriber that keeps paysign's access lines (the `json` field of
/// events on `paysign::access`), installed for this test process.
fn access_lines() -> Arc<std::sync::Mutex<Vec<String>>> {
    use tracing::field::{Field, Visit};
    struct Capture(Arc<std::sync::Mutex<Vec<String>>>);
    struct Json<'a>(&'a std::sync::Mutex<Vec<String>>);
    impl Visit for Json<'_> {
        fn record_str(&mut self, field: &Field, value: &str) {
            if field.name() == "json" {
                self.0.lock().unwrap().push(value.to_string());
            }
        }
        fn record_debug(&mut self, _: &Field, _: &dyn std::fmt::Debug) {}
    }
    impl tracing::Subscriber for Capture {
        fn enabled(&self, m: &tracing::Metadata<'_>) -> bool {
            m.target() == "paysign::access"
        }
        fn new_span(&self, _: &tracing::span::Attributes<'_>) -> tracing::span::Id {
            tracing::span::Id::from_u64(1)
        }
        fn record(&self, _: &tracing::span::Id, _: &tracing::span::Record<'_>) {}
        fn record_follows_from(&self, _: &tracing::span::Id, _: &tracing::span::Id) {}
        fn event(&self, e: &tracing::Event<'_>) {
            e.record(&mut Json(&self.0));
        }
        fn enter(&self, _: &tracing::span::Id) {}
        fn exit(&self, _: &tracing::span::Id) {}
    }
    let lines = Arc::new(std::sync::Mutex::new(Vec::new()));
    tracing::subscriber::set_global_default(Capture(lines.clone())).expect("the only subscriber of this test process");
    lines
}

/// The connection to a notification target outlives a reload: the forwarder (and its pool) is
/// the notification state's, kept across reloads like the platform client's. (Before, each
/// reload built a new client: the next notification opened a new connection.)
#[test]
fn a_reload_keeps_the_connection_to_the_notification_target() {
    use std::io::{BufRead, BufReader, Read, Write};
    use std::sync::atomic::AtomicUsize;

    // A target that answers 200 on kept-alive connections and counts the connections.
    let listener = bind_unclaimed();
    let target_port = listener.local_addr().unwrap().port();
    let (connections, requests) = (Arc::new(AtomicUsize::new(0)), Arc::new(AtomicUsize::new(0)));
    let (c, r) = (connections.clone(), requests.clone());
    std::thread::spawn(move || {
        for stream in listener.incoming() {
            let Ok(mut stream) = stream else { continue };
            c.fetch_add(1, Ordering::SeqCst);
            let r = r.clone();
            std::thread::spawn(move || {
                let mut reader = BufReader::new(stream.try_clone().unwrap());
                loop {
                    let mut length = 0;
                    loop {
                        let mut line = String::new();
                        if reader.read_line(&mut line).unwrap_or(0) == 0 {
                            return;
                        }
                        if let Some((k, v)) = line.trim_end().split_once(':') {
                            if k.eq_ignore_ascii_case("content-length") {
                                length = v.trim().parse().unwrap();
                            }
                        } else if line.trim_end().is_empty() {
                            break;
                        }
                    }
                    let mut body = vec![0u8; length];
                    reader.read_exact(&mut body).unwrap();
                    r.fetch_add(1, Ordering::SeqCst);
                    stream.write_all(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok").unwrap();
                }
            });
        }
    });
    let notify_port = free_port();
    let extra = format!(
        "notify:\n  listen: 127.0.0.1:{notify_port}\n  routes:\n    - path: /notify/bindcard\n      target: http://127.0.0.1:{target_port}/internal\n"
    );
    let stack = Stack::start(Options { gateway_extra: extra, ..Options::default() });
    wait_listening(notify_port);
    let notify = |order: &str| {
        let req = serde_json::json!({
            "customerNo": MD5_MERCHANT, "orderNo": order, "url": format!("http://127.0.0.1:{notify_port}/notify/bindcard")
        });
        request(stack.sandbox_port, "POST", "/__sandbox/notify", &[], req.to_string().as_bytes()).json()
    };
    assert_eq!(notify("NTF-POOL-1")["status"], 200);
    let r = request(stack.admin, "POST", "/-/reload", &[], b"");
    assert_eq!((r.status, &r.json()["generation"]), (200, &Value::from(2)), "{}", r.text());
    assert_eq!(notify("NTF-POOL-2")["status"], 200);
    assert_eq!((requests.load(Ordering::SeqCst), connections.load(Ordering::SeqCst)), (2, 1), "requests, connections");
}

/// The sandbox behaves like a platform: a notification paysign did not acknowledge (its target
/// failed, so the platform got a 5xx) is sent again on the schedule, sealed afresh, until it is
/// acknowledged — and abandoned after the last try. Every try carries the same notification id.
#[test]
fn the_sandbox_retries_an_unacknowledged_notification_on_its_schedule() {
    let s = setup_with("notify_retry_ms: [100, 100, 100]\n".into());
    let stats = |s: &Setup| request(s.stack.sandbox_port, "GET", "/__sandbox/stats", &[], b"").json();
    s.target_status.store(503, Ordering::SeqCst);
    let mut b = bindcard("RETRY-1");
    b["bindNotifyUrl"] = Value::String(format!("http://127.0.0.1:{}/notify/bindcard", s.notify_port));
    assert_eq!(s.stack.post_json(RSA_MERCHANT, &b).json()["errCode"], "0000");

    // Tries 1 and 2 reach the target, which fails them: the platform gets no acknowledgement.
    let first = next(&s.target);
    let second = next(&s.target);
    s.target_status.store(200, Ordering::SeqCst);
    let third = next(&s.target);
    let id = first.header("X-Paysign-Notification-Id").unwrap().to_string();
    for r in [&second, &third] {
        assert_eq!(r.header("X-Paysign-Notification-Id"), Some(id.as_str()));
        assert_eq!(r.json()["orderNo"], "RETRY-1");
    }
    assert!(eventually(10, || stats(&s)["notifications_acked"] == 1), "{}", stats(&s));
    let st = stats(&s);
    assert_eq!((st["notifications_sent"].as_u64(), st["notifications_retried"].as_u64()), (Some(3), Some(2)), "{st}");
    assert_eq!(st["notifications_abandoned"], 0);
    assert!(s.target.requests.recv_timeout(Duration::from_millis(500)).is_err(), "a fourth try after the acknowledgement");

    // Never acknowledged: four tries (the first and three retries), then abandoned.
    s.target_status.store(500, Ordering::SeqCst);
    let mut b = bindcard("RETRY-2");
    b["bindNotifyUrl"] = Value::String(format!("http://127.0.0.1:{}/notify/bindcard", s.notify_port));
    assert_eq!(s.stack.post_json(MD5_MERCHANT, &b).json()["errCode"], "0000");
    for _ in 0..4 {
        assert_eq!(next(&s.target).json()["orderNo"], "RETRY-2");
    }
    assert!(eventually(10, || stats(&s)["notifications_abandoned"] == 1), "{}", stats(&s));
    assert_eq!(stats(&s)["notifications_retried"], 5);
}
