//! paysign as an attacker finds it: racing reloads, unauthenticated callers and admins, callers
//! outside their grants, duplicate headers and query strings, overload, impatient callers and
//! forged notification floods. Real processes; exact counts.

mod common;

use std::sync::Arc;
use std::thread;

use base64::Engine;
use common::*;
use serde_json::Value;

fn sha256_hex(s: &str) -> String {
    paysign_plugin::config::sha256(s.as_bytes()).iter().map(|b| format!("{b:02x}")).collect()
}

fn metric(s: &Stack, series: &str) -> f64 {
    sample(&s.metrics(), series).unwrap_or(0.0)
}

/// Reloads racing each other: the configuration in force is always the one the last reload
/// read, and the generation counts every successful reload exactly.
#[test]
fn concurrent_reloads_end_with_the_last_file_and_the_exact_generation() {
    let s = Stack::start(Options::default());
    let path = s.dir.join("paysign.yaml");
    let both = std::fs::read_to_string(&path).unwrap();
    // The same file without the rsa merchant.
    let rsa_at = both.find(&format!("  - customer_no: \"{RSA_MERCHANT}\"")).unwrap();
    let md5_only = both[..rsa_at].to_string() + both[rsa_at..].split_once("merchant_private_key: keys/merchant_private.pem\n").unwrap().1;
    assert!(!md5_only.contains(RSA_MERCHANT) && md5_only.contains(MD5_MERCHANT));

    let reload_burst = |n: usize| -> Vec<thread::JoinHandle<u16>> {
        (0..n)
            .map(|_| {
                thread::spawn({
                    let admin = s.admin;
                    move || request(admin, "POST", "/-/reload", &[], b"").status
                })
            })
            .collect()
    };
    // As operators (and Kubernetes) replace a configuration: a new file renamed over the old.
    let replace = |text: &str| {
        let tmp = s.dir.join("paysign.yaml.new");
        write(&tmp, text);
        std::fs::rename(&tmp, &path).unwrap();
    };
    let trials = 8;
    for trial in 0..trials {
        let (first, last) = if trial % 2 == 0 { (&both, &md5_only) } else { (&md5_only, &both) };
        replace(first);
        let early = reload_burst(5);
        replace(last);
        let late = reload_burst(5);
        for h in early.into_iter().chain(late) {
            assert_eq!(h.join().unwrap(), 200);
        }
        let r = s.post(BINDCARD, Some(RSA_MERCHANT), bindcard(&format!("RACE-{trial}")).to_string().as_bytes());
        if last == &md5_only {
            assert_eq!(r.status, 400, "trial {trial}: the older configuration stayed in force: {}", r.text());
            assert_eq!(r.json()["errCode"], "2001");
        } else {
            assert_eq!(r.status, 200, "trial {trial}: {}", r.text());
        }
    }
    assert_eq!(metric(&s, "paysign_config_generation"), 1.0 + 10.0 * trials as f64);
}

/// With an admin token, reloads need it (and nothing else gets through).
#[test]
fn admin_reload_needs_the_admin_token() {
    let token = "admin-token-0123456789abcdef";
    let d = temp_dir();
    write(&d.join("admin.token"), &format!("{token}\n"));
    let s =
        Stack::start(Options { gateway_extra: format!("admin_token_file: {}\n", d.join("admin.token").display()), ..Options::default() });
    let reload = |h: &[(&str, &str)]| request(s.admin, "POST", "/-/reload", h, b"");
    let bearer = format!("Bearer {token}");
    for refused in [
        vec![],
        vec![("Authorization", "Bearer wrong-token-0123456789")],
        vec![("Authorization", token)],
        vec![("Authorization", bearer.as_str()), ("Authorization", bearer.as_str())],
    ] {
        let r = reload(&refused);
        assert_eq!(r.status, 401, "{refused:?}: {}", r.text());
        assert_eq!(r.header("WWW-Authenticate"), Some("Bearer"));
    }
    assert_eq!(metric(&s, "paysign_config_generation"), 1.0);
    let r = reload(&[("Authorization", bearer.as_str())]);
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(r.json()["generation"], 2);
    assert_eq!(metric(&s, r#"paysign_caller_refusals_total{caller="admin",reason="unauthenticated"}"#), 4.0);
    assert!(!s.settled_logs().contains(token), "the admin token reached the logs");
}

/// Every combination of caller × merchant × endpoint: only what a caller is granted reaches
/// the platform; everything else is 401/403 `not-sent`, counted by caller.
#[test]
fn callers_are_authenticated_and_authorised() {
    let (ops_token, all_token) = ("ops-token-0123456789abcdef", "all-token-fedcba9876543210");
    let extra = format!(
        "callers:\n  - name: ops\n    token_sha256: {}\n    merchants: [\"{MD5_MERCHANT}\"]\n    endpoints: [\"{BINDCARD}\"]\n  - name: all\n    token_sha256: {}\n    merchants: [\"*\"]\n    endpoints: [\"*\"]\n",
        sha256_hex(ops_token),
        sha256_hex(all_token)
    );
    let s = Stack::start(Options { gateway_extra: extra, ..Options::default() });
    let other = "/api/vborder/shortcut/other";
    let mut sent = 0;
    let mut n = 0;
    for (caller, auth) in [
        ("none", None),
        ("wrong", Some("Bearer not-a-caller-token-000".to_string())),
        ("ops", Some(format!("Bearer {ops_token}"))),
        ("all", Some(format!("Bearer {all_token}"))),
    ] {
        for merchant in [MD5_MERCHANT, RSA_MERCHANT] {
            for path in [BINDCARD, other] {
                n += 1;
                let mut h = vec![("X-Paysign-Merchant", merchant)];
                if let Some(a) = &auth {
                    h.push(("Authorization", a.as_str()));
                }
                let r = request(s.proxy, "POST", path, &h, bindcard(&format!("AUTH-{n}")).to_string().as_bytes());
                let expected = match caller {
                    "none" | "wrong" => Some(401),
                    "ops" if merchant == MD5_MERCHANT && path == BINDCARD => None,
                    "ops" => Some(403),
                    _ => None,
                };
                match expected {
                    Some(status) => {
                        assert_eq!(r.status, status, "{caller} {merchant} {path}: {}", r.text());
                        assert_eq!(r.header("X-Paysign-Delivery"), Some("not-sent"));
                        assert_eq!(r.json()["errCode"], "1002");
                    }
                    None => {
                        sent += 1;
                        assert!(r.status != 401 && r.status != 403, "{caller} {merchant} {path}: {}", r.text());
                        assert_eq!(r.header("X-Paysign-Delivery"), Some("sent"), "{caller} {merchant} {path}: {}", r.text());
                        if path == BINDCARD {
                            assert_eq!(r.json()["errCode"], "0000");
                        }
                    }
                }
            }
        }
    }
    assert_eq!(sent, 5);
    assert_eq!(s.sandbox_stats()["received"], 5);
    let m = s.metrics();
    assert_eq!(sample(&m, r#"paysign_caller_refusals_total{caller="anonymous",reason="missing"}"#), Some(4.0));
    assert_eq!(sample(&m, r#"paysign_caller_refusals_total{caller="anonymous",reason="unknown_token"}"#), Some(4.0));
    assert_eq!(sample(&m, r#"paysign_caller_refusals_total{caller="ops",reason="forbidden"}"#), Some(3.0));
    let logs = s.settled_logs();
    assert!(!logs.contains(ops_token) && !logs.contains(all_token), "a caller token reached the logs");
}

/// A repeated merchant header and a query string are refused before anything is sent.
#[test]
fn duplicate_merchant_headers_and_query_strings_are_refused() {
    let s = Stack::start(Options::default());
    let body = bindcard("EDGE-1").to_string();
    let r =
        request(s.proxy, "POST", BINDCARD, &[("X-Paysign-Merchant", MD5_MERCHANT), ("X-Paysign-Merchant", RSA_MERCHANT)], body.as_bytes());
    assert_eq!(r.status, 400, "{}", r.text());
    assert_eq!(r.json()["errMessage"], "the x-paysign-merchant header appears more than once");
    assert_eq!(r.header("X-Paysign-Delivery"), Some("not-sent"));
    for q in ["?customerNo=999&reqmsg=zz", "?%0d%0aInjected:1", "?"] {
        let r = request(s.proxy, "POST", &format!("{BINDCARD}{q}"), &[("X-Paysign-Merchant", MD5_MERCHANT)], body.as_bytes());
        assert_eq!(r.status, 400, "{q}: {}", r.text());
        assert_eq!(r.header("X-Paysign-Delivery"), Some("not-sent"));
        assert_eq!(r.json()["errCode"], "1002");
    }
    assert_eq!(s.sandbox_stats()["received"], 0);
    assert_eq!(metric(&s, r#"paysign_requests_total{endpoint="bindcard_create",merchant="202112090603",outcome="query_refused"}"#), 3.0);
}

/// A caller's deadline that has passed before sending: not sent.
#[test]
fn a_request_past_its_callers_deadline_is_not_sent() {
    let s = Stack::start(Options { merchants: &[RSA_MERCHANT], ..Options::default() });
    let body = bindcard("DEADLINE-1").to_string();
    let r = request(s.proxy, "POST", BINDCARD, &[("X-Paysign-Deadline-Ms", "0")], body.as_bytes());
    assert_eq!(r.status, 503, "{}", r.text());
    assert_eq!(r.header("X-Paysign-Delivery"), Some("not-sent"));
    let r = request(s.proxy, "POST", BINDCARD, &[("X-Paysign-Deadline-Ms", "soon")], body.as_bytes());
    assert_eq!(r.status, 400, "{}", r.text());
    let r = request(s.proxy, "POST", BINDCARD, &[("X-Paysign-Deadline-Ms", "30000")], body.as_bytes());
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(s.sandbox_stats()["received"], 1);
}

/// Beyond the private-key workers and queue, requests are shed at once with 503 `not-sent`
/// and `Retry-After`; every other one is answered; nothing shed reaches the platform, and no
/// more private-key operations ever ran at once than the bound.
#[test]
fn overload_is_shed_before_sending() {
    let s = Stack::start(Options {
        merchants: &[RSA_MERCHANT],
        gateway_extra: "private_key_workers: 1\nprivate_key_queue: 1\n".into(),
        ..Options::default()
    });
    let port = s.proxy;
    let callers: Vec<_> = (0..48)
        .map(|i| {
            thread::spawn(move || {
                let r = request(port, "POST", BINDCARD, &[], bindcard(&format!("SHED-{i}")).to_string().as_bytes());
                (r.status, r.header("X-Paysign-Delivery").map(str::to_string), r.header("Retry-After").map(str::to_string))
            })
        })
        .collect();
    let (mut ok, mut shed) = (0, 0);
    for c in callers {
        match c.join().unwrap() {
            (200, Some(d), None) if d == "sent" => ok += 1,
            (503, Some(d), Some(ra)) if d == "not-sent" && ra == "1" => shed += 1,
            other => panic!("neither answered nor shed: {other:?}"),
        }
    }
    assert!(shed >= 1, "48 concurrent rsa calls on 1 worker + 1 queued: nothing was shed");
    assert_eq!(ok + shed, 48);
    assert_eq!(s.sandbox_stats()["received"], ok);
    let m = s.metrics();
    assert_eq!(sample(&m, "paysign_private_key_ops_running_max"), Some(1.0));
    assert_eq!(sample(&m, "paysign_private_key_ops_shed_total"), Some(shed as f64));
}

/// `max_in_flight`: with one request at the platform, the next is shed at once.
#[test]
fn admission_sheds_beyond_max_in_flight() {
    let s = Arc::new(Stack::start(Options {
        merchants: &[MD5_MERCHANT],
        stall_ms: 3_000,
        gateway_extra: "max_in_flight: 1\n".into(),
        ..Options::default()
    }));
    let slow = {
        let s = s.clone();
        thread::spawn(move || s.post(BINDCARD, None, bindcard("STALL-ADMIT").to_string().as_bytes()).status)
    };
    assert!(eventually(10, || s.sandbox_stats()["received"] == 1));
    let r = s.post(BINDCARD, None, bindcard("ADMIT-2").to_string().as_bytes());
    assert_eq!(r.status, 503, "{}", r.text());
    assert_eq!(r.header("X-Paysign-Delivery"), Some("not-sent"));
    assert_eq!(r.header("Retry-After"), Some("1"));
    assert_eq!(slow.join().unwrap(), 200);
    assert_eq!(s.sandbox_stats()["received"], 1);
    let r = s.post(BINDCARD, None, bindcard("ADMIT-3").to_string().as_bytes());
    assert_eq!(r.status, 200, "{}", r.text());
}

fn forged(blocks: usize) -> String {
    let noise: Vec<u8> = (0..blocks * 256).map(|i| (i * 7 + 13) as u8).collect();
    serde_json::json!({"customerNo": RSA_MERCHANT, "reqmsg": base64::engine::general_purpose::STANDARD.encode(noise)}).to_string()
}

/// Forged notifications: oversized ones are refused before any decryption; a flood of
/// maximal ones never runs more private-key work at once than the bound, is shed with 503
/// beyond the queue, and a genuine notification still gets through (first try or a retry).
#[test]
fn forged_notification_floods_are_bounded() {
    forged_notification_flood(false);
}

/// The same flood with the durable inbox on: verification comes first, so nothing forged
/// reaches the store — it holds exactly the one genuine notification, delivered.
#[test]
fn forged_notification_floods_are_bounded_with_the_inbox_on_and_never_reach_it() {
    forged_notification_flood(true);
}

fn forged_notification_flood(inbox: bool) {
    let target = common::http_server::start(Arc::new(|_r| (200, "text/plain".into(), b"ok".to_vec())));
    let notify_port = free_port();
    let mut extra = format!(
        "private_key_workers: 1\nprivate_key_queue: 2\nnotify:\n  listen: 127.0.0.1:{notify_port}\n  max_blocks: 16\n  routes:\n    - path: /notify/bindcard\n      target: http://127.0.0.1:{}/bind-notified\n",
        target.port
    );
    if inbox {
        let key = temp_dir().join("inbox.key");
        write_secret(&key, &"1f".repeat(32));
        extra.push_str(&format!("  inbox:\n    sqlite_path: data/inbox.sqlite\n    key_file: {}\n", key.display()));
    }
    let s = Stack::start(Options { gateway_extra: extra, ..Options::default() });
    wait_listening(notify_port);
    let decrypts = |s: &Stack| metric(s, r#"paysign_crypto_duration_seconds_count{op="decrypt"}"#);

    let r = request(notify_port, "POST", "/notify/bindcard", &[], forged(17).as_bytes());
    assert_eq!((r.status, r.text().as_str()), (413, "FAIL"));
    assert_eq!(decrypts(&s), 0.0, "an oversized forged notification was decrypted");
    let r = request(notify_port, "POST", "/notify/bindcard", &[], forged(16).as_bytes());
    assert_eq!((r.status, r.text().as_str()), (400, "FAIL"));

    let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let flood: Vec<_> = (0..16)
        .map(|_| {
            let stop = stop.clone();
            thread::spawn(move || {
                let (mut refused, mut shed) = (0u32, 0u32);
                while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                    match request(notify_port, "POST", "/notify/bindcard", &[], forged(16).as_bytes()).status {
                        400 => refused += 1,
                        503 => shed += 1,
                        other => panic!("a forged notification got {other}"),
                    }
                }
                (refused, shed)
            })
        })
        .collect();
    // A genuine notification, retried on 503 as the platform does.
    let url = format!("http://127.0.0.1:{notify_port}/notify/bindcard");
    let mut tries = 0;
    let acked = eventually(60, || {
        tries += 1;
        let req = serde_json::json!({"customerNo": RSA_MERCHANT, "orderNo": format!("GENUINE-{tries}"), "url": url});
        let answer = request(s.sandbox_port, "POST", "/__sandbox/notify", &[], req.to_string().as_bytes()).json();
        answer["status"] == 200 && answer["body"] == "SUCCESS"
    });
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    let (mut refused, mut shed) = (0, 0);
    for f in flood {
        let (r, sh) = f.join().unwrap();
        refused += r;
        shed += sh;
    }
    assert!(acked, "the genuine notification was never acknowledged ({tries} tries)");
    assert!(refused > 0);
    let m = s.metrics();
    assert_eq!(sample(&m, "paysign_private_key_ops_running_max"), Some(1.0));
    // Shed: the flood's, plus the genuine tries that came before the acknowledged one.
    let counted = sample(&m, r#"paysign_notifications_total{outcome="shed",route="/notify/bindcard"}"#).unwrap_or(0.0);
    assert!(counted >= shed as f64 && counted < (shed + tries) as f64, "{counted} shed counted, {shed} seen by the flood, {tries} tries");
    let got: Value = serde_json::from_slice(&target.requests.recv_timeout(std::time::Duration::from_secs(5)).unwrap().body).unwrap();
    assert!(got["orderNo"].as_str().unwrap().starts_with("GENUINE-"));
    if inbox {
        let stored = |result: &str| sample(&m, &format!(r#"paysign_inbox_stored_total{{result="{result}"}}"#));
        assert_eq!(
            (stored("stored"), stored("recognised"), stored("duplicate"), stored("failed")),
            (Some(1.0), Some(0.0), Some(0.0), Some(0.0))
        );
        assert!(eventually(10, || request(s.admin, "GET", "/inbox", &[], b"").json()["delivered"] == 1));
        let depth = request(s.admin, "GET", "/inbox", &[], b"").json();
        assert_eq!((depth["pending"].as_u64(), depth["leased"].as_u64(), depth["dead"].as_u64()), (Some(0), Some(0), Some(0)), "{depth}");
    }
}

/// Callers that hang up right after sending their request: nothing is sent for them, and each
/// is counted (and logged) as `abandoned`, `not-sent`.
#[test]
fn requests_whose_callers_hung_up_are_not_sent() {
    use std::io::{Read, Write};
    let s = Stack::start(Options { merchants: &[RSA_MERCHANT], gateway_extra: "private_key_workers: 1\n".into(), ..Options::default() });
    let n = 20;
    let callers: Vec<_> = (0..n)
        .map(|i| {
            let port = s.proxy;
            thread::spawn(move || {
                let body = bindcard(&format!("GONE-{i}")).to_string();
                let mut c = std::net::TcpStream::connect(("127.0.0.1", port)).unwrap();
                let head = format!(
                    "POST {BINDCARD} HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n",
                    body.len()
                );
                c.write_all(format!("{head}{body}").as_bytes()).unwrap();
                c.shutdown(std::net::Shutdown::Write).unwrap();
                let mut rest = Vec::new();
                let _ = c.read_to_end(&mut rest);
            })
        })
        .collect();
    for c in callers {
        c.join().unwrap();
    }
    let series = format!(r#"paysign_requests_total{{endpoint="bindcard_create",merchant="{RSA_MERCHANT}",outcome="abandoned"}}"#);
    assert!(eventually(10, || metric(&s, &series) == n as f64), "{}", s.metrics());
    assert_eq!(s.sandbox_stats()["received"], 0);
    let logs = s.settled_logs();
    assert_eq!(logs.matches(r#""outcome":"abandoned","status":499,"delivery":"not-sent""#).count(), n, "{logs}");
    // A caller that waits is served as usual.
    let r = s.post(BINDCARD, None, bindcard("STAYED").to_string().as_bytes());
    assert_eq!(r.status, 200, "{}", r.text());
}

fn read_until_closed(c: &mut std::net::TcpStream) -> Vec<u8> {
    use std::io::Read;
    c.set_read_timeout(Some(std::time::Duration::from_secs(15))).unwrap();
    let mut got = Vec::new();
    let mut buf = [0u8; 4096];
    loop {
        match c.read(&mut buf) {
            Ok(0) | Err(_) => return got,
            Ok(n) => got.extend_from_slice(&buf[..n]),
        }
    }
}

/// Request heads have a deadline on every listener: an idle connection, a half-sent head and a
/// head dripped a byte at a time are all closed and counted; a prompt caller is served.
#[test]
fn slow_and_idle_connections_are_closed_at_the_header_deadline() {
    use std::io::Write;
    let s = Stack::start(Options { merchants: &[MD5_MERCHANT], gateway_extra: "header_timeout_ms: 400\n".into(), ..Options::default() });
    for port in [s.proxy, s.admin] {
        // Idle: never sends a byte.
        let mut idle = std::net::TcpStream::connect(("127.0.0.1", port)).unwrap();
        // Half a head, then silence.
        let mut half = std::net::TcpStream::connect(("127.0.0.1", port)).unwrap();
        half.write_all(b"POST /api/x HTTP/1.1\r\nHost: x\r\n").unwrap();
        // A byte every 100 ms: each read is quick, the head never completes in time.
        let mut drip = std::net::TcpStream::connect(("127.0.0.1", port)).unwrap();
        let dripper = thread::spawn(move || {
            for b in b"GET /healthz HTTP/1.1\r\nHost: x\r\nX-Slow: aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa\r\n\r\n" {
                if drip.write_all(&[*b]).is_err() {
                    break;
                }
                thread::sleep(std::time::Duration::from_millis(100));
            }
            read_until_closed(&mut drip)
        });
        assert_eq!(read_until_closed(&mut idle), b"");
        assert_eq!(read_until_closed(&mut half), b"");
        assert_eq!(dripper.join().unwrap(), b"", "the dripped head was served");
    }
    let m = s.metrics();
    assert_eq!(sample(&m, r#"paysign_header_timeouts_total{listener="proxy"}"#), Some(3.0));
    assert_eq!(sample(&m, r#"paysign_header_timeouts_total{listener="admin"}"#), Some(3.0));
    let r = s.post(BINDCARD, None, bindcard("PROMPT").to_string().as_bytes());
    assert_eq!(r.status, 200, "{}", r.text());
}

/// Beyond `max_connections`, a new connection is closed at once; when one closes, the next is
/// served.
#[test]
fn connections_beyond_the_limit_are_refused_at_once() {
    let s = Stack::start(Options {
        merchants: &[MD5_MERCHANT],
        gateway_extra: "max_connections: 3\nheader_timeout_ms: 30000\n".into(),
        ..Options::default()
    });
    // The readiness probe's connection (to the proxy port) is gone first: counted *and* closed
    // (an absent series means it has not even been accepted yet; it would take a held slot).
    assert!(eventually(10, || sample(&s.metrics(), r#"paysign_connections_open{listener="proxy"}"#) == Some(0.0)));
    let held: Vec<_> = (0..3).map(|_| std::net::TcpStream::connect(("127.0.0.1", s.proxy)).unwrap()).collect();
    assert!(eventually(10, || sample(&s.metrics(), r#"paysign_connections_open{listener="proxy"}"#) == Some(3.0)));
    let mut extra = std::net::TcpStream::connect(("127.0.0.1", s.proxy)).unwrap();
    assert_eq!(read_until_closed(&mut extra), b"");
    assert_eq!(sample(&s.metrics(), r#"paysign_connections_refused_total{listener="proxy"}"#), Some(1.0));
    drop(held);
    assert!(eventually(10, || sample(&s.metrics(), r#"paysign_connections_open{listener="proxy"}"#) == Some(0.0)));
    let r = s.post(BINDCARD, None, bindcard("AFTER-LIMIT").to_string().as_bytes());
    assert_eq!(r.status, 200, "{}", r.text());
}

/// Two requests in one write (pipelining): both answered in order, or the first answered and
/// the connection closed — never a request dropped silently on an open connection.
#[test]
fn pipelined_requests_are_answered_in_order_or_the_connection_closes() {
    use std::io::Write;
    let s = Stack::start(Options { merchants: &[MD5_MERCHANT], ..Options::default() });
    let one = |order: &str| {
        let body = bindcard(order).to_string();
        format!("POST {BINDCARD} HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n{body}", body.len())
    };
    let mut c = std::net::TcpStream::connect(("127.0.0.1", s.proxy)).unwrap();
    c.write_all(format!("{}{}", one("PIPE-1"), one("PIPE-2")).as_bytes()).unwrap();
    // Read until both are answered or the server closes; a read that times out means the
    // second request sits unanswered on an open connection.
    use std::io::Read;
    c.set_read_timeout(Some(std::time::Duration::from_secs(10))).unwrap();
    let (mut raw, mut buf) = (Vec::new(), [0u8; 4096]);
    let got = loop {
        let text = String::from_utf8_lossy(&raw).into_owned();
        if text.matches("\"orderNo\":\"PIPE-").count() == 2 {
            break text;
        }
        match c.read(&mut buf) {
            Ok(0) => break text,
            Ok(n) => raw.extend_from_slice(&buf[..n]),
            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock || e.kind() == std::io::ErrorKind::TimedOut => {
                panic!("the second pipelined request was dropped silently: {text}")
            }
            Err(_) => break text,
        }
    };
    let answers = got.matches("HTTP/1.1 200").count();
    assert!(answers >= 1, "{got}");
    let first = got.find("PIPE-1").expect("the first request was not answered");
    if answers == 2 {
        assert!(got.find("PIPE-2").unwrap() > first, "answers out of order: {got}");
    }
    assert_eq!(s.sandbox_stats()["received"], answers);
}

/// The sandbox's notifications leave off the request path and are bounded: with every
/// notification target hanging, 70 successful calls are all answered at once, 64
/// notifications are in flight and the rest are dropped (counted).
#[test]
fn sandbox_notifications_are_bounded_and_off_the_request_path() {
    let hang = bind_unclaimed();
    let hang_port = hang.local_addr().unwrap().port();
    thread::spawn(move || {
        let mut held = Vec::new();
        for c in hang.incoming() {
            held.push(c); // accepted, never answered
        }
    });
    let s = Stack::start(Options { merchants: &[MD5_MERCHANT], ..Options::default() });
    for i in 0..70 {
        let mut b = bindcard(&format!("HANG-{i}"));
        b["bindNotifyUrl"] = Value::String(format!("http://127.0.0.1:{hang_port}/notify"));
        let r = s.post_json(MD5_MERCHANT, &b);
        assert_eq!(r.status, 200, "call {i}: {}", r.text());
    }
    assert!(eventually(10, || s.sandbox_stats()["notifications_sent"] == 64), "{}", s.sandbox_stats());
    assert_eq!(s.sandbox_stats()["notifications_dropped"], 6);
}

/// `notify.allow_from`: only the platform's addresses may notify; `X-Forwarded-For` counts only
/// when the peer is a trusted proxy, and then its last untrusted address is the source. A peer
/// that is neither allowed nor a trusted proxy is closed at accept (0 here: no answer at all).
#[test]
fn notifications_are_accepted_only_from_allowed_sources() {
    for trusted in [false, true] {
        let notify_port = free_port();
        let proxies = if trusted { "  trusted_proxies: [\"127.0.0.1/32\"]\n" } else { "" };
        let extra = format!(
            "notify:\n  listen: 127.0.0.1:{notify_port}\n  allow_from: [\"127.0.0.2\", \"198.51.100.0/24\"]\n{proxies}  routes:\n    - path: /notify/bindcard\n      target: http://127.0.0.1:9/unused\n"
        );
        let s = Stack::start(Options { gateway_extra: extra, ..Options::default() });
        wait_listening(notify_port);
        let send = |xff: Option<&str>| {
            let h: Vec<(&str, &str)> = xff.map(|v| vec![("X-Forwarded-For", v)]).unwrap_or_default();
            try_request(notify_port, "POST", "/notify/bindcard", &h, forged(2).as_bytes()).map_or(0, |r| r.status)
        };
        // 400: past the source check, refused as forged; 403: refused by source.
        let cases: [(Option<&str>, u16, u16); 6] = [
            (None, 0, 403),
            (Some("127.0.0.2"), 0, 400),
            (Some("203.0.113.9, 198.51.100.4"), 0, 400),
            (Some("198.51.100.4, 203.0.113.9"), 0, 403),
            (Some("127.0.0.1, 127.0.0.2, 127.0.0.1"), 0, 400),
            (Some("not-an-address"), 0, 403),
        ];
        for (xff, untrusted_status, trusted_status) in cases {
            assert_eq!(send(xff), if trusted { trusted_status } else { untrusted_status }, "trusted={trusted} xff={xff:?}");
        }
        let refused = sample(&s.metrics(), r#"paysign_notifications_total{outcome="source_refused",route="none"}"#);
        // Untrusted: the six, and the readiness probe's connection (from 127.0.0.1 too).
        assert_eq!(refused, Some(if trusted { 3.0 } else { 7.0 }));
    }
}

/// Heads the HTTP parser refuses (pingora answers them before paysign sees them) are counted
/// and logged as `bad_http`, never dropped unseen.
#[test]
fn parser_refusals_are_counted_and_logged() {
    use std::io::Write;
    let s = Stack::start(Options { merchants: &[MD5_MERCHANT], ..Options::default() });
    let bad: [&[u8]; 3] = [
        b"POST /api/x HTTP/1.1\r\nHost: x\r\nContent-Length: 5\r\nContent-Length: 6\r\n\r\nhello!",
        b"POST /api/x HTTP/1.1\r\nHost: x\r\nX-Nul: a\0b\r\nContent-Length: 0\r\n\r\n",
        b"GET /api/x HTTP/1.1\r\nHost: x\r\nX-Folded: a\r\n  b\r\n\r\n",
    ];
    let mut statuses = Vec::new();
    for raw in bad {
        let mut c = std::net::TcpStream::connect(("127.0.0.1", s.proxy)).unwrap();
        c.write_all(raw).unwrap();
        let got = String::from_utf8_lossy(&read_until_closed(&mut c)).into_owned();
        statuses.push(got.get(9..12).unwrap_or("").to_string());
    }
    let refused = statuses.iter().filter(|st| *st == "400").count();
    assert_eq!(refused, 3, "{statuses:?}");
    let m = s.metrics();
    assert_eq!(sample(&m, r#"paysign_bad_http_total{listener="proxy"}"#), Some(refused as f64), "{statuses:?}");
    assert_eq!(sample(&m, r#"paysign_requests_total{endpoint="none",merchant="none",outcome="bad_http"}"#), Some(refused as f64));
    assert_eq!(s.settled_logs().matches(r#""outcome":"bad_http""#).count(), refused);
    assert_eq!(s.sandbox_stats()["received"], 0);
}

/// A log consumer that stops reading (stderr a full pipe: a stalled journald or container log
/// driver) holds up no request: lines wait in a bounded buffer, beyond it they are dropped and
/// counted, and once the consumer reads again it gets what waited and how many were dropped.
/// (Before, the event loop blocked in `write` once the pipe was full, ~200 calls in.)
#[test]
fn a_log_consumer_that_stops_reading_holds_up_no_request() {
    const FLOOD: usize = 6_000;
    let s = Stack::start(Options { merchants: &[MD5_MERCHANT], ..Options::default() });
    let (proxy, admin) = (free_port(), free_port());
    let config = std::fs::read_to_string(s.dir.join("paysign.yaml"))
        .unwrap()
        .replace(&format!("listen: 127.0.0.1:{}\n", s.proxy), &format!("listen: 127.0.0.1:{proxy}\n"))
        .replace(&format!("admin_listen: 127.0.0.1:{}\n", s.admin), &format!("admin_listen: 127.0.0.1:{admin}\n"));
    let path = s.dir.join("stalled-log.yaml");
    write(&path, &config);
    let (gateway, mut stderr) = spawn_with_stderr_pipe(&["run", "-c", path.to_str().unwrap()]);
    wait_ready(admin, "/readyz");
    let threads_before = proc_status(gateway.pid(), "Threads");

    // Calls refused by validation (no crypto, nothing sent), each with a long order number:
    // ~6,000 access lines of ~330 bytes, far more than the pipe and the 1 MiB buffer hold.
    let refused: Vec<thread::JoinHandle<Vec<u16>>> = (0..4)
        .map(|t| {
            thread::spawn(move || {
                (0..FLOOD / 4)
                    .map(|i| {
                        let mut b = bindcard(&format!("LOGFLOOD-{t}-{i:05}-{}", "x".repeat(40)));
                        b.as_object_mut().unwrap().remove("mobile");
                        post_to(proxy, BINDCARD, Some(MD5_MERCHANT), b.to_string().as_bytes()).status
                    })
                    .collect()
            })
        })
        .collect();
    let statuses: Vec<u16> = refused.into_iter().flat_map(|t| t.join().unwrap()).collect();
    assert_eq!((statuses.len(), statuses.iter().filter(|st| **st == 400).count()), (FLOOD, FLOOD));
    // A payment while the log is still stalled: served as usual.
    let r = post_to(proxy, BINDCARD, Some(MD5_MERCHANT), bindcard("LOGFLOOD-GENUINE").to_string().as_bytes());
    assert_eq!((r.status, r.json()["errCode"].as_str()), (200, Some("0000")), "{}", r.text());
    // Bounded meanwhile: no thread per line, and the buffer's megabyte is all the memory it took.
    assert_eq!(proc_status(gateway.pid(), "Threads"), threads_before);
    assert!(proc_status(gateway.pid(), "VmHWM") < 64 * 1024, "peak RSS {} KiB", proc_status(gateway.pid(), "VmHWM"));

    // The consumer reads again: what waited arrives, and a note says how many were dropped.
    let received = Arc::new(std::sync::Mutex::new(String::new()));
    let sink = received.clone();
    thread::spawn(move || {
        let mut chunk = [0u8; 65536];
        while let Ok(n @ 1..) = std::io::Read::read(&mut stderr, &mut chunk) {
            sink.lock().unwrap().push_str(&String::from_utf8_lossy(&chunk[..n]));
        }
    });
    let dropped_in_notes = |text: &str| -> usize {
        text.lines()
            .filter_map(|l| serde_json::from_str::<Value>(l).ok())
            .filter_map(|l| {
                l["msg"].as_str()?.strip_suffix(" log line(s) dropped: stderr is not being read fast enough")?.parse::<usize>().ok()
            })
            .sum()
    };
    let calls = |text: &str| text.matches(r#""order_no":"LOGFLOOD-"#).count();
    // Every call either reached the consumer or was counted as dropped (nothing else was logged
    // meanwhile): exactly the flood and the payment.
    assert!(
        eventually(20, || {
            let text = received.lock().unwrap().clone();
            dropped_in_notes(&text) > 0 && calls(&text) + dropped_in_notes(&text) == FLOOD + 1
        }),
        "received {} calls, {} dropped",
        calls(&received.lock().unwrap()),
        dropped_in_notes(&received.lock().unwrap())
    );
    let dropped = dropped_in_notes(&received.lock().unwrap());
    let m = request(admin, "GET", "/metrics", &[], b"").text();
    assert_eq!(sample(&m, "paysign_log_lines_dropped_total"), Some(dropped as f64));
    // Lines are whole: every line received is one JSON object.
    let text = received.lock().unwrap().clone();
    assert!(text.lines().all(|l| serde_json::from_str::<Value>(l).is_ok()), "a line was torn");
    assert_eq!(s.sandbox_stats()["received"], 1);
}

/// Whether the server closes `c` within `secs` (EOF or reset), reading and discarding what it
/// sends; false if it is still open then.
fn closed_within(c: &mut std::net::TcpStream, secs: u64) -> bool {
    use std::io::Read;
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(secs);
    let mut buf = [0u8; 4096];
    loop {
        let left = deadline.saturating_duration_since(std::time::Instant::now());
        if left.is_zero() {
            return false;
        }
        c.set_read_timeout(Some(left)).unwrap();
        match c.read(&mut buf) {
            Ok(0) => return true,
            Ok(_) => {}
            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock || e.kind() == std::io::ErrorKind::TimedOut => return false,
            Err(_) => return true,
        }
    }
}

/// The head deadline ends only when a complete head has been parsed: blank lines sent first
/// (which the parser skips) do not end it, on any listener. (Before, `\r\n\r\n` ended it:
/// such connections stayed open past the deadline, `paysign_header_timeouts_total` 0.)
#[test]
fn leading_blank_lines_do_not_end_the_head_deadline() {
    use std::io::Write;
    let notify_port = free_port();
    let extra = format!(
        "header_timeout_ms: 300\nnotify:\n  listen: 127.0.0.1:{notify_port}\n  routes:\n    - path: /notify/bindcard\n      target: http://127.0.0.1:9/unused\n"
    );
    let s = Stack::start(Options { merchants: &[MD5_MERCHANT], gateway_extra: extra, ..Options::default() });
    wait_listening(notify_port);
    let listeners = [("proxy", s.proxy), ("admin", s.admin), ("notify", notify_port)];
    let before: Vec<f64> =
        listeners.iter().map(|(l, _)| metric(&s, &format!(r#"paysign_header_timeouts_total{{listener="{l}"}}"#))).collect();
    for (name, port) in listeners {
        for opening in [&b"\r\n\r\n"[..], b"\r\n\r\nGET /healthz HTTP/1.1\r\nHost: x\r\n", b"\n\n\n\n"] {
            let mut c = std::net::TcpStream::connect(("127.0.0.1", port)).unwrap();
            c.write_all(opening).unwrap();
            assert!(
                closed_within(&mut c, 5),
                "{name}: {:?} held the connection past the 300 ms deadline",
                String::from_utf8_lossy(opening)
            );
        }
    }
    for ((l, _), was) in listeners.iter().zip(before) {
        let now = metric(&s, &format!(r#"paysign_header_timeouts_total{{listener="{l}"}}"#));
        assert_eq!(now - was, 3.0, "{l}");
    }
    // A head that does complete is served at once.
    let r = s.post(BINDCARD, None, bindcard("AFTER-BLANK").to_string().as_bytes());
    assert_eq!(r.status, 200, "{}", r.text());
}

/// Reads `n` whole HTTP responses (framed by `Content-Length`) from `c`, stopping early at EOF
/// or after 10 s of silence; returns each as (status, headers, body) and whether the server
/// then closed.
fn read_responses(c: &mut std::net::TcpStream, n: usize) -> Vec<Response> {
    use std::io::Read;
    c.set_read_timeout(Some(std::time::Duration::from_secs(10))).unwrap();
    let (mut raw, mut buf, mut out) = (Vec::<u8>::new(), [0u8; 8192], Vec::new());
    loop {
        // Take every complete response at the front of `raw`.
        while let Some(end) = raw.windows(4).position(|w| w == b"\r\n\r\n") {
            let head = String::from_utf8_lossy(&raw[..end]).into_owned();
            let len: usize = head
                .lines()
                .find_map(|l| {
                    l.split_once(':').filter(|(k, _)| k.eq_ignore_ascii_case("content-length")).map(|(_, v)| v.trim().parse().unwrap())
                })
                .unwrap_or(0);
            if raw.len() < end + 4 + len {
                break;
            }
            let mut lines = head.split("\r\n");
            let status = lines.next().unwrap().split(' ').nth(1).unwrap().parse().unwrap();
            let headers = lines.filter_map(|l| l.split_once(':').map(|(k, v)| (k.trim().to_string(), v.trim().to_string()))).collect();
            let body = raw[end + 4..end + 4 + len].to_vec();
            raw.drain(..end + 4 + len);
            out.push(Response { status, headers, body });
        }
        if out.len() >= n {
            return out;
        }
        match c.read(&mut buf) {
            Ok(0) | Err(_) => return out,
            Ok(k) => raw.extend_from_slice(&buf[..k]),
        }
    }
}

/// Two requests in one write are both answered, in order, on the proxy (GET+GET, POST+POST,
/// GET+POST) and the admin listener; the connection stays usable. (Before: one answer saying
/// `keep-alive`, then the connection closed and the second request was dropped.)
#[test]
fn pipelined_requests_are_all_answered_in_order() {
    use std::io::Write;
    let s = Stack::start(Options { merchants: &[MD5_MERCHANT], ..Options::default() });
    let post = |order: &str| {
        let body = bindcard(order).to_string();
        format!("POST {BINDCARD} HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n{body}", body.len())
    };
    let get = |path: &str, id: &str| format!("GET {path} HTTP/1.1\r\nHost: x\r\nX-Request-Id: {id}\r\n\r\n");
    // (name, port, the two requests in one write, the answers expected: status and marker)
    type Case<'a> = (&'a str, u16, String, Vec<(u16, &'a str)>);
    let cases: Vec<Case> = vec![
        ("2 GETs", s.proxy, get("/nowhere", "g-1") + &get(BINDCARD, "g-2"), vec![(404, "g-1"), (405, "g-2")]),
        ("2 POSTs", s.proxy, post("PIPE2-1") + &post("PIPE2-2"), vec![(200, "PIPE2-1"), (200, "PIPE2-2")]),
        ("GET+POST", s.proxy, get("/nowhere", "gp-1") + &post("PIPE2-3"), vec![(404, "gp-1"), (200, "PIPE2-3")]),
        ("admin", s.admin, get("/healthz", "a-1") + &get("/nowhere", "a-2"), vec![(200, ""), (404, "")]),
    ];
    for (name, port, both, expected) in cases {
        let mut c = std::net::TcpStream::connect(("127.0.0.1", port)).unwrap();
        c.write_all(both.as_bytes()).unwrap();
        let got = read_responses(&mut c, 2);
        let statuses: Vec<u16> = got.iter().map(|r| r.status).collect();
        assert_eq!(statuses, expected.iter().map(|e| e.0).collect::<Vec<_>>(), "{name}");
        for (r, (_, mark)) in got.iter().zip(&expected) {
            if mark.starts_with("PIPE") {
                assert_eq!(r.json()["orderNo"], *mark, "{name}");
            } else if !mark.is_empty() {
                assert_eq!(r.header("X-Request-Id"), Some(*mark), "{name}");
            }
        }
        // Still open and usable: a third request on the same connection is answered.
        c.write_all(get("/healthz", "third").as_bytes()).unwrap();
        assert_eq!(read_responses(&mut c, 1).len(), 1, "{name}: the connection closed after the pipelined pair");
    }
    assert_eq!(s.sandbox_stats()["received"], 3);
}

/// Heads the HTTP parser refuses are answered with the error contract on every listener: a
/// JSON error (the notification listener: `FAIL`), `X-Request-Id` (the one in the access line),
/// `X-Paysign-Delivery: not-sent`, then the connection closes. (Before: a bare 400 on the proxy,
/// and on the admin and notification listeners no answer at all.)
#[test]
fn parser_refusals_carry_a_request_id_and_the_delivery_header() {
    use std::io::Write;
    let notify_port = free_port();
    let extra = format!(
        "notify:\n  listen: 127.0.0.1:{notify_port}\n  routes:\n    - path: /notify/bindcard\n      target: http://127.0.0.1:9/unused\n"
    );
    let s = Stack::start(Options { merchants: &[MD5_MERCHANT], gateway_extra: extra, ..Options::default() });
    wait_listening(notify_port);
    let bad: [(&str, &[u8]); 3] = [
        ("duplicate Content-Length", b"POST /api/x HTTP/1.1\r\nHost: x\r\nContent-Length: 5\r\nContent-Length: 6\r\n\r\nhello!"),
        ("NUL", b"POST /api/x HTTP/1.1\r\nHost: x\r\nX-Nul: a\0b\r\nContent-Length: 0\r\n\r\n"),
        ("obs-fold", b"GET /api/x HTTP/1.1\r\nHost: x\r\nX-Folded: a\r\n  b\r\n\r\n"),
    ];
    let mut ids = Vec::new();
    for (listener, port) in [("proxy", s.proxy), ("admin", s.admin), ("notify", notify_port)] {
        for (name, raw) in bad {
            let mut c = std::net::TcpStream::connect(("127.0.0.1", port)).unwrap();
            c.write_all(raw).unwrap();
            let got = read_responses(&mut c, 1);
            assert_eq!(got.len(), 1, "{listener} {name}: no answer");
            let r = &got[0];
            assert_eq!(r.status, 400, "{listener} {name}");
            assert_eq!(r.header("X-Paysign-Delivery"), Some("not-sent"), "{listener} {name}");
            assert_eq!(r.header("Connection"), Some("close"), "{listener} {name}");
            let id = r.header("X-Request-Id").unwrap_or_else(|| panic!("{listener} {name}: no X-Request-Id")).to_string();
            assert_eq!(id.len(), 32, "{listener} {name}: {id}");
            if listener == "notify" {
                assert_eq!((r.header("Content-Type"), r.text().as_str()), (Some("text/plain;charset=UTF-8"), "FAIL"), "{name}");
            } else {
                assert_eq!(r.header("Content-Type"), Some("application/json;charset=UTF-8"), "{listener} {name}");
                assert_eq!(
                    (r.json()["errCode"].as_str(), r.json()["source"].as_str()),
                    (Some("1002"), Some("gateway")),
                    "{listener} {name}"
                );
            }
            assert!(read_responses(&mut c, 1).is_empty(), "{listener} {name}: more after the refusal");
            ids.push((listener, id));
        }
    }
    let logs = s.settled_logs();
    for (listener, id) in &ids {
        let line = format!(r#""request_id":"{id}","listener":"{listener}","outcome":"bad_http","status":400,"delivery":"not-sent""#);
        assert_eq!(logs.matches(&line).count(), 1, "{line}: {logs}");
    }
    let m = s.metrics();
    for l in ["proxy", "admin", "notify"] {
        assert_eq!(sample(&m, &format!(r#"paysign_bad_http_total{{listener="{l}"}}"#)), Some(3.0), "{l}");
    }
}

/// A request head longer than `max_header_bytes` is answered 431 with the error contract and
/// the connection closed, on every listener; one within the bound is served.
#[test]
fn heads_over_max_header_bytes_are_answered_431() {
    use std::io::Write;
    let notify_port = free_port();
    let extra = format!(
        "max_header_bytes: 2048\nnotify:\n  listen: 127.0.0.1:{notify_port}\n  routes:\n    - path: /notify/bindcard\n      target: http://127.0.0.1:9/unused\n"
    );
    let s = Stack::start(Options { merchants: &[MD5_MERCHANT], gateway_extra: extra, ..Options::default() });
    wait_listening(notify_port);
    let head = |total: usize| {
        let start = "GET /healthz HTTP/1.1\r\nHost: x\r\nX-Pad: ";
        format!("{start}{}\r\n\r\n", "a".repeat(total - start.len() - 4))
    };
    assert_eq!(head(2048).len(), 2048);
    for (name, port, within) in [("proxy", s.proxy, 404), ("admin", s.admin, 200), ("notify", notify_port, 404)] {
        // Exactly at the bound: served.
        let mut c = std::net::TcpStream::connect(("127.0.0.1", port)).unwrap();
        c.write_all(head(2048).as_bytes()).unwrap();
        assert_eq!(read_responses(&mut c, 1).first().map(|r| r.status), Some(within), "{name}");
        // One byte over (in one write, and in 100-byte pieces): 431, then closed.
        for pieces in [usize::MAX, 100] {
            let mut c = std::net::TcpStream::connect(("127.0.0.1", port)).unwrap();
            for piece in head(2049).as_bytes().chunks(pieces.min(4096)) {
                c.write_all(piece).unwrap();
            }
            let got = read_responses(&mut c, 2);
            assert_eq!(got.len(), 1, "{name}: {pieces}");
            let r = &got[0];
            assert_eq!(r.status, 431, "{name}: {}", r.text());
            assert_eq!(r.header("X-Paysign-Delivery"), Some("not-sent"), "{name}");
            assert_eq!(r.header("X-Request-Id").map(str::len), Some(32), "{name}");
            if name == "notify" {
                assert_eq!(r.text(), "FAIL");
            } else {
                assert_eq!(r.json()["errMessage"], "the request head is larger than 2048 bytes", "{name}");
            }
        }
    }
    let m = s.metrics();
    assert_eq!(sample(&m, r#"paysign_requests_total{endpoint="none",merchant="none",outcome="head_too_large"}"#), Some(2.0));
    for l in ["proxy", "admin", "notify"] {
        assert_eq!(sample(&m, &format!(r#"paysign_bad_http_total{{listener="{l}"}}"#)), Some(2.0), "{l}");
    }
}

/// CPU seconds (user + system) a process has used so far, from /proc/PID/stat.
fn cpu_seconds(pid: u32) -> f64 {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap();
    let fields: Vec<&str> = stat[stat.rfind(')').unwrap() + 2..].split(' ').collect();
    let ticks: u64 = fields[11].parse::<u64>().unwrap() + fields[12].parse::<u64>().unwrap();
    ticks as f64 / 100.0
}

/// 1,024 connections each sending a 160 KiB partial head at once: the gateway's peak RSS stays
/// within 128 MiB (each head is refused at `max_header_bytes`, default 8 KiB, and what follows
/// is discarded, never buffered). Before, pingora buffered up to 1 MiB of each head (1,024
/// such connections: 13 MB → 1,144 MB).
#[test]
fn a_thousand_huge_partial_heads_stay_within_128_mib() {
    use std::io::Write;
    const CONNECTIONS: usize = 1024;
    const SENT: usize = 160 * 1024;
    let s = Stack::start(Options {
        merchants: &[MD5_MERCHANT],
        gateway_extra: "max_connections: 1100\nheader_timeout_ms: 60000\n".into(),
        ..Options::default()
    });
    let pid = s.gateway_pid();
    let (rss_before, cpu_before) = (proc_status(pid, "VmRSS"), cpu_seconds(pid));
    let mut pad = b"GET /healthz HTTP/1.1\r\nHost: x\r\n".to_vec();
    while pad.len() < SENT {
        pad.extend_from_slice(format!("X-Pad-{}: {}\r\n", pad.len(), "p".repeat(1000)).as_bytes());
    }
    pad.truncate(SENT);
    let pad = Arc::new(pad);
    let port = s.proxy;
    // 8 senders of 128 connections each; every connection stays open until all have sent.
    let senders: Vec<_> = (0..8)
        .map(|_| {
            let pad = pad.clone();
            thread::spawn(move || {
                (0..CONNECTIONS / 8)
                    .map(|_| {
                        let mut c = std::net::TcpStream::connect(("127.0.0.1", port)).unwrap();
                        c.set_write_timeout(Some(std::time::Duration::from_secs(30))).unwrap();
                        let sent = c.write_all(&pad).is_ok();
                        (c, sent)
                    })
                    .collect::<Vec<_>>()
            })
        })
        .collect();
    let mut held: Vec<(std::net::TcpStream, bool)> = senders.into_iter().flat_map(|t| t.join().unwrap()).collect();
    assert_eq!(held.len(), CONNECTIONS);
    assert!(held.iter().all(|(_, sent)| *sent), "a write did not complete");
    let open = |s: &Stack| sample(&s.metrics(), r#"paysign_connections_open{listener="proxy"}"#).unwrap_or(0.0);
    // Every byte sent has been taken from the gateway's sockets (buffered or discarded by it,
    // none left in the kernel): then the peak is the gateway's own.
    let taken = eventually(90, || {
        let (sockets, waiting) = server_sockets(port);
        sockets >= CONNECTIONS && waiting == 0
    });
    assert!(taken, "the gateway did not read what was sent: {:?} (sockets, with bytes waiting)", server_sockets(port));
    let peak = proc_status(pid, "VmHWM");
    let cpu = cpu_seconds(pid) - cpu_before;
    eprintln!("rss before {rss_before} KiB, peak {peak} KiB, open {}, cpu {cpu:.2} s", open(&s));
    assert!(peak <= 128 * 1024, "peak RSS {peak} KiB with {CONNECTIONS} partial heads of {SENT} bytes");
    // Each was answered 431 and closed.
    let refused = held.iter_mut().map(|(c, _)| read_responses(c, 1)).filter(|r| r.first().map(|r| r.status) == Some(431)).count();
    assert_eq!(refused, CONNECTIONS);
    drop(held);
    assert!(eventually(20, || open(&s) == 0.0));
    assert_eq!(
        sample(&s.metrics(), r#"paysign_requests_total{endpoint="none",merchant="none",outcome="head_too_large"}"#),
        Some(CONNECTIONS as f64)
    );
    // Nothing re-parses an ever-growing head: the gateway's CPU for the whole 160 MiB flood.
    // (Before: 1.48 s for this flood, debug build; now ~0.2 s.)
    assert!(cpu < 0.75, "{cpu:.2} CPU seconds for the flood");
}

/// `notify.allow_from` is checked at accept: a refused sender holding many connections takes
/// none of the listener's slots, and an allowed sender is served meanwhile. (Before: checked
/// after the head, so refused senders held every slot — 0/20 genuine notifications accepted.)
#[test]
fn refused_notification_sources_take_no_connection_slots() {
    use std::io::Write;
    let notify_port = free_port();
    let extra = format!(
        "max_connections: 4\nheader_timeout_ms: 30000\nnotify:\n  listen: 127.0.0.1:{notify_port}\n  allow_from: [\"127.0.0.2\"]\n  routes:\n    - path: /notify/bindcard\n      target: http://127.0.0.1:9/unused\n"
    );
    let s = Stack::start(Options { gateway_extra: extra, ..Options::default() });
    // From 127.0.0.1 (not allowed): 20 connections, each closed at once, none counted open.
    let mut refused: Vec<_> = (0..20).map(|_| std::net::TcpStream::connect(("127.0.0.1", notify_port)).unwrap()).collect();
    for c in &mut refused {
        let _ = c.write_all(b"POST /notify/bindcard HTTP/1.1\r\nHost: x\r\n");
        assert!(closed_within(c, 5), "a refused source's connection stayed open");
    }
    assert_eq!(sample(&s.metrics(), r#"paysign_connections_open{listener="notify"}"#).unwrap_or(0.0), 0.0);
    assert_eq!(sample(&s.metrics(), r#"paysign_notifications_total{outcome="source_refused",route="none"}"#), Some(20.0));
    // From 127.0.0.2 (allowed): served (400: past the source check, refused as forged).
    for i in 0..6 {
        let mut c = connect_from([127, 0, 0, 2], notify_port);
        let body = forged(2);
        c.write_all(format!("POST /notify/bindcard HTTP/1.1\r\nHost: x\r\nContent-Length: {}\r\n\r\n{body}", body.len()).as_bytes())
            .unwrap();
        let got = read_responses(&mut c, 1);
        assert_eq!(got.first().map(|r| r.status), Some(400), "allowed notification {i}");
    }
    drop(refused);
}

/// A connection to 127.0.0.1:`port` from the local address `source` (any of 127.0.0.0/8).
fn connect_from(source: [u8; 4], port: u16) -> std::net::TcpStream {
    use std::os::fd::FromRawFd;
    let addr = |ip: [u8; 4], port: u16| libc::sockaddr_in {
        sin_family: libc::AF_INET as libc::sa_family_t,
        sin_port: port.to_be(),
        sin_addr: libc::in_addr { s_addr: u32::from_ne_bytes(ip) },
        sin_zero: [0; 8],
    };
    let len = std::mem::size_of::<libc::sockaddr_in>() as libc::socklen_t;
    let (from, to) = (addr(source, 0), addr([127, 0, 0, 1], port));
    // SAFETY: a fresh socket, bound and connected with valid sockaddr_in values, then owned by
    // the TcpStream.
    unsafe {
        let fd = libc::socket(libc::AF_INET, libc::SOCK_STREAM | libc::SOCK_CLOEXEC, 0);
        assert!(fd >= 0);
        assert_eq!(libc::bind(fd, (&from as *const libc::sockaddr_in).cast(), len), 0);
        assert_eq!(libc::connect(fd, (&to as *const libc::sockaddr_in).cast(), len), 0);
        std::net::TcpStream::from_raw_fd(fd)
    }
}

/// The connected sockets (not listening, not in TIME_WAIT) whose local port is `port` (the server's side) and how many of them
/// have received bytes the server has not read yet, from /proc/net/tcp.
fn server_sockets(port: u16) -> (usize, usize) {
    let table = std::fs::read_to_string("/proc/net/tcp").unwrap_or_default();
    let local = format!(":{port:04X}");
    let mut counts = (0, 0);
    for line in table.lines().skip(1) {
        let f: Vec<&str> = line.split_whitespace().collect();
        if f.len() > 4 && f[1].ends_with(&local) && f[3] != "0A" && f[3] != "06" {
            counts.0 += 1;
            let rx = f[4].split(':').nth(1).and_then(|q| u64::from_str_radix(q, 16).ok()).unwrap_or(0);
            if rx > 0 {
                counts.1 += 1;
            }
        }
    }
    counts
}

/// The bytes all unfinished heads of a listener hold are bounded (16 MiB), whatever
/// `max_header_bytes` allows each: with it at pingora's 1 MiB, 20 connections each sending a
/// 900 KiB partial head do not all get buffered — those beyond the budget are answered 503
/// `not-sent` with `Retry-After` and closed. (Before: all 20 held, 18 MiB.)
#[test]
fn unfinished_heads_share_a_bounded_budget() {
    use std::io::Write;
    const CONNECTIONS: usize = 20;
    let s = Stack::start(Options {
        merchants: &[MD5_MERCHANT],
        gateway_extra: "max_header_bytes: 1048575\nheader_timeout_ms: 60000\n".into(),
        ..Options::default()
    });
    let mut pad = b"GET /healthz HTTP/1.1\r\nHost: x\r\n".to_vec();
    // Long lines: pingora refuses more than 256 headers by itself.
    while pad.len() < 900 * 1024 {
        pad.extend_from_slice(format!("X-Pad-{}: {}\r\n", pad.len(), "p".repeat(8000)).as_bytes());
    }
    pad.truncate(900 * 1024);
    let mut held: Vec<std::net::TcpStream> = (0..CONNECTIONS)
        .map(|_| {
            let mut c = std::net::TcpStream::connect(("127.0.0.1", s.proxy)).unwrap();
            c.set_write_timeout(Some(std::time::Duration::from_secs(30))).unwrap();
            c.write_all(&pad).unwrap();
            c
        })
        .collect();
    let port = s.proxy;
    assert!(
        eventually(60, || {
            let (sockets, waiting) = server_sockets(port);
            sockets >= CONNECTIONS && waiting == 0
        }),
        "{:?}",
        server_sockets(port)
    );
    // The answered ones were refused for the budget; the rest are still reading their heads.
    let mut shed = 0;
    for c in &mut held {
        c.set_nonblocking(true).unwrap();
        let mut probe = [0u8; 1];
        let answered = matches!(std::io::Read::read(c, &mut probe), Ok(1));
        c.set_nonblocking(false).unwrap();
        if answered {
            let mut rest = read_responses(c, 1);
            let r = rest.pop().expect("a whole answer");
            assert_eq!(probe[0], b'H');
            assert_eq!((r.status, r.header("X-Paysign-Delivery"), r.header("Retry-After")), (503, Some("not-sent"), Some("1")));
            shed += 1;
        }
    }
    // 16 MiB hold 18 heads of 900 KiB: at least the last two are shed.
    assert!((2..CONNECTIONS).contains(&shed), "{shed} of {CONNECTIONS} shed");
    let m = s.metrics();
    assert_eq!(sample(&m, r#"paysign_requests_total{endpoint="none",merchant="none",outcome="shed"}"#), Some(shed as f64));
    assert!(proc_status(s.gateway_pid(), "VmHWM") < 96 * 1024);
}

/// Behind a trusted proxy a refused source is known only once its head is read: it is answered
/// 403 and its connection closed, so it cannot hold a slot across requests (what
/// docs/security.md's threat model relies on; this held before too: pingora closes a connection
/// answered before its body was read).
#[test]
fn a_refused_source_behind_a_trusted_proxy_keeps_no_connection() {
    use std::io::Write;
    let notify_port = free_port();
    let extra = format!(
        "header_timeout_ms: 30000\nnotify:\n  listen: 127.0.0.1:{notify_port}\n  allow_from: [\"198.51.100.0/24\"]\n  trusted_proxies: [\"127.0.0.1/32\"]\n  routes:\n    - path: /notify/bindcard\n      target: http://127.0.0.1:9/unused\n"
    );
    let _s = Stack::start(Options { gateway_extra: extra, ..Options::default() });
    wait_listening(notify_port);
    let body = forged(2);
    let send = |xff: &str| {
        let mut c = std::net::TcpStream::connect(("127.0.0.1", notify_port)).unwrap();
        let head = format!("POST /notify/bindcard HTTP/1.1\r\nHost: x\r\nX-Forwarded-For: {xff}\r\nContent-Length: {}\r\n\r\n", body.len());
        c.write_all(format!("{head}{body}").as_bytes()).unwrap();
        let status = read_responses(&mut c, 1).first().map(|r| r.status);
        (status, closed_within(&mut c, 5))
    };
    assert_eq!(send("203.0.113.9"), (Some(403), true));
    // An allowed source's connection stays open for its next notification.
    assert_eq!(send("198.51.100.4"), (Some(400), false));
}

/// Private-key work is done only for callers still there (issue 26, point 5). With the pure-Rust
/// backend and one worker, 8 callers in a row send 60 calls each and hang up when no answer came
/// within 3 ms. Once no request is in flight and no private-key operation is admitted, nothing
/// is left to compute: a caller that stays is served with exactly its own two operations (sign,
/// decrypt). Before, a caller that hung up freed its worker slot while its signature was still
/// being computed, so the slot passed on at the rate callers gave up rather than the rate the
/// CPU worked; the backlog (signatures for callers long gone) ran after everyone had left, in
/// front of the next caller's work: 22, 48 and 58 operations ran between the last impatient
/// caller leaving and the answer to the one that stayed, in three runs.
#[test]
fn private_key_work_is_not_done_for_callers_who_have_gone() {
    use std::io::{Read, Write};
    let s = Stack::start(Options {
        merchants: &[RSA_MERCHANT],
        backend: "rsa",
        gateway_extra: "private_key_workers: 1\nprivate_key_queue: 512\nmax_in_flight: 1024\n".into(),
        ..Options::default()
    });
    // 8 callers in a row each send a call and hang up when no answer came within 3 ms (less
    // than one signature takes): there is always a caller that takes the worker and leaves
    // while its signature is still being computed.
    let impatient: Vec<_> = (0..8)
        .map(|t| {
            let port = s.proxy;
            thread::spawn(move || {
                let mut gave_up = 0;
                for i in 0..60 {
                    let body = bindcard(&format!("LEFT-{t}-{i}")).to_string();
                    let mut c = std::net::TcpStream::connect(("127.0.0.1", port)).unwrap();
                    let head = format!(
                        "POST {BINDCARD} HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n",
                        body.len()
                    );
                    c.write_all(format!("{head}{body}").as_bytes()).unwrap();
                    c.set_read_timeout(Some(std::time::Duration::from_millis(3))).unwrap();
                    if c.read(&mut [0u8; 1]).is_err() {
                        gave_up += 1;
                    }
                }
                gave_up
            })
        })
        .collect();
    let gave_up: usize = impatient.into_iter().map(|t| t.join().unwrap()).sum();
    assert!(gave_up > 0, "every impatient call was answered in time");
    // Every call has ended (answered, or abandoned when its caller went) and no private-key
    // operation is admitted.
    let settled = |s: &Stack| {
        let m = s.metrics();
        sample(&m, "paysign_requests_in_flight") == Some(0.0) && sample(&m, "paysign_private_key_ops_admitted") == Some(0.0)
    };
    assert!(eventually(30, || settled(&s)), "{}", s.metrics());
    let executed = r#"paysign_private_key_jobs_total{outcome="executed"}"#;
    let skipped = r#"paysign_private_key_jobs_total{outcome="skipped"}"#;
    let abandoned = format!(r#"paysign_requests_total{{endpoint="bindcard_create",merchant="{RSA_MERCHANT}",outcome="abandoned"}}"#);
    let before = metric(&s, executed);
    eprintln!(
        "{gave_up} callers gave up, {} abandoned; {before} operations executed, {} skipped",
        metric(&s, &abandoned),
        metric(&s, skipped)
    );

    // A caller that stays: served, with its own two operations and nothing left over in front.
    let r = s.post(BINDCARD, None, bindcard("STAYED-PK").to_string().as_bytes());
    assert_eq!((r.status, r.json()["errCode"].as_str()), (200, Some("0000")), "{}", r.text());
    let after = metric(&s, executed);
    assert_eq!(
        after - before,
        2.0,
        "{} operations ran between the moment every impatient caller had gone and this call's answer",
        after - before
    );
    assert!(settled(&s), "{}", s.metrics());
}

/// `paysign upgrade` signals only a paysign: a stale pid file (the gateway was killed, its pid
/// recycled) named an unrelated process of the same user, which SIGQUIT ended.
#[test]
fn upgrade_does_not_signal_a_process_that_is_not_paysign() {
    let s = Stack::start(Options { merchants: &[MD5_MERCHANT], ..Options::default() });
    let pid_file = s.dir.join(".paysign-run/paysign.pid");
    let gateway = s.gateway_pid().to_string();
    assert!(std::process::Command::new("kill").args(["-KILL", &gateway]).status().unwrap().success());
    assert!(eventually(10, || !std::path::Path::new(&format!("/proc/{gateway}/exe")).exists()));
    let mut other = spawn_cmd(std::process::Command::new("sleep").arg("120"), s.dir.join("sleep.log"));
    write(&pid_file, &format!("{}\n", other.pid()));
    let mut cmd = spawn_cmd(
        std::process::Command::new(env!("CARGO_BIN_EXE_paysign"))
            .args(["upgrade", "-c", s.dir.join("paysign.yaml").to_str().unwrap()])
            .env("PAYSIGN_LOG", "info"),
        s.dir.join("upgrade.log"),
    );
    let finished = eventually(60, || cmd.exit_code().is_some() || !cmd.is_running());
    // Whatever the command started must not outlive the test.
    if let Some(pid) = std::fs::read_to_string(&pid_file).ok().and_then(|t| t.trim().parse::<u32>().ok()) {
        if pid != other.pid() {
            let _ = std::process::Command::new("kill").args(["-KILL", &pid.to_string()]).status();
        }
    }
    assert!(finished, "{}", cmd.logs());
    assert!(other.is_running(), "the unrelated process was signalled: {}", cmd.logs());
    assert_eq!(cmd.exit_code(), Some(1), "{}", cmd.logs());
    assert!(cmd.logs().contains(&format!("pid {} (from {}) is not a paysign process", other.pid(), pid_file.display())), "{}", cmd.logs());
}

/// pingora prints the bytes of a head its parser refuses — with the body that came in the same
/// write — at `debug` (proxy) and `error` (admin, notifications). A caller whose JSON has a
/// space after each colon (Python's `json.dumps`, any pretty printer) had its `certNo` and
/// `mobile` written to the log; a notification's `reqmsg` and a token after two spaces too.
#[test]
fn a_refused_heads_bytes_are_logged_without_personal_data() {
    use std::io::Write;
    let certno = "110101199003071234";
    let mobile = "13900001234";
    let reqmsg = "UmVxbXNnQ2lwaGVydGV4dFNlY3JldA";
    let token = "tok-spaced-0a1b2c3d4e5f";
    for level in ["debug", "trace"] {
        let dir = temp_dir();
        let (proxy, admin, notify) = (free_port(), free_port(), free_port());
        write(
            &dir.join("paysign.yaml"),
            &format!(
                "listen: 127.0.0.1:{proxy}\nadmin_listen: 127.0.0.1:{admin}\ngrace_period_seconds: 0\nplatform:\n  base_url: http://127.0.0.1:9\nnotify:\n  listen: 127.0.0.1:{notify}\n  routes:\n    - path: /notify/bindcard\n      target: http://127.0.0.1:9/unused\nmerchants:\n  - customer_no: \"{MD5_MERCHANT}\"\n    profile: md5\n    platform_public_key: keys/platform_public.pem\n    md5_key_file: keys/md5.key\n"
            ),
        );
        let gateway = spawn_cmd(
            std::process::Command::new(env!("CARGO_BIN_EXE_paysign"))
                .args(["run", "-c", dir.join("paysign.yaml").to_str().unwrap()])
                .env("PAYSIGN_LOG", level),
            dir.join("gateway.log"),
        );
        wait_ready(admin, "/readyz");
        wait_listening(notify);
        let body = format!(r#"{{"orderNo": "LEAK-1", "certNo": "{certno}", "mobile": {mobile}}}"#);
        let sends = [
            (proxy, format!("POST {BINDCARD} HTTP/1.1\r\nHost: x\r\nX-Nul: a\0b\r\nContent-Length: {}\r\n\r\n{body}", body.len())),
            (notify, format!("POST /notify/bindcard HTTP/1.1\r\nHost: x\r\nX-Nul: a\0b\r\n\r\n{{\"customerNo\": \"{MD5_MERCHANT}\", \"reqmsg\": \"{reqmsg}\"}}")),
            (admin, format!("POST /-/reload HTTP/1.1\r\nHost: x\r\nAuthorization:Bearer  {token}\r\nX-Nul: a\0b\r\n\r\n")),
        ];
        for (port, raw) in &sends {
            let mut c = std::net::TcpStream::connect(("127.0.0.1", *port)).unwrap();
            c.write_all(raw.as_bytes()).unwrap();
            let got = read_responses(&mut c, 1);
            assert_eq!(got.iter().map(|r| r.status).collect::<Vec<_>>(), [400], "{level} {port}");
        }
        let logs = settled_logs(&gateway, proxy);
        // pingora's line with the refused bytes was written (so the check below means something).
        assert!(logs.contains("X-Nul: a"), "{level}: {logs}");
        for secret in [certno, mobile, reqmsg, token] {
            assert!(!logs.contains(secret), "PAYSIGN_LOG={level}: {secret} is in the logs: {logs}");
        }
    }
}

/// Numbers `check` accepts are numbers `run` survives: `connect_retries: 4294967295` panicked at
/// start (the drain deadline's sum), `pool_idle_timeout_secs: 18446744073709551615` on the first
/// call whose connection was pooled — after the platform had its request, the caller got no
/// answer and the process exited.
#[test]
fn the_largest_numbers_check_accepts_do_not_panic_run() {
    let huge = u64::MAX;
    let extra = format!(
        "  connect_retries: {}\n  pool_idle_timeout_secs: {huge}\nheader_timeout_ms: {huge}\nclient_body_timeout_ms: {huge}\n",
        u32::MAX
    );
    let mut s = Stack::start(Options { merchants: &[MD5_MERCHANT], gateway_extra: extra, ..Options::default() });
    let (code, out, err) = run_paysign(&["check", "-c", s.dir.join("paysign.yaml").to_str().unwrap()], &[], "");
    assert_eq!(code, 0, "{out}{err}");
    for i in 0..3 {
        let r = s.post_json(MD5_MERCHANT, &bindcard(&format!("HUGE-{i}")));
        assert_eq!(r.status, 200, "{}: {}", r.text(), s.gateway.logs());
    }
    assert!(s.gateway.is_running());
    // With nothing in flight, SIGTERM ends it at once, whatever the deadline's sum.
    assert_eq!(unsafe { libc::kill(s.gateway_pid() as i32, libc::SIGTERM) }, 0);
    assert!(eventually(10, || !s.gateway.is_running()), "did not stop");
    assert_eq!(s.gateway.exit_code(), Some(0));
    assert!(!s.gateway.logs().contains("panic"), "{}", s.gateway.logs());
}

/// Refusals paysign makes itself before any app (a late head, a head over `max_header_bytes`)
/// are one access line or metric each, not also an `error` line of pingora's ("Fail to proxy:
/// … request head not received in time", "HTTP server fails to read from downstream: …
/// request refused"): an outsider could write error lines at the rate it opens connections.
#[test]
fn refusals_before_any_app_write_no_error_lines() {
    use std::io::Write;
    let notify_port = free_port();
    let extra = format!(
        "header_timeout_ms: 300\nmax_header_bytes: 1024\nnotify:\n  listen: 127.0.0.1:{notify_port}\n  routes:\n    - path: /notify/bindcard\n      target: http://127.0.0.1:9/unused\n"
    );
    let s = Stack::start(Options { merchants: &[MD5_MERCHANT], gateway_extra: extra, ..Options::default() });
    wait_listening(notify_port);
    for port in [s.proxy, s.admin, notify_port] {
        let mut late = std::net::TcpStream::connect(("127.0.0.1", port)).unwrap();
        late.write_all(b"GET /x HTTP/1.1\r\n").unwrap();
        assert!(closed_within(&mut late, 10), "{port}: not closed at the deadline");
        let mut large = std::net::TcpStream::connect(("127.0.0.1", port)).unwrap();
        large.write_all(format!("GET /x HTTP/1.1\r\nX-Big: {}\r\n\r\n", "a".repeat(2000)).as_bytes()).unwrap();
        assert_eq!(read_responses(&mut large, 1).iter().map(|r| r.status).collect::<Vec<_>>(), [431], "{port}");
    }
    let m = s.metrics();
    for l in ["proxy", "admin", "notify"] {
        assert_eq!(sample(&m, &format!(r#"paysign_header_timeouts_total{{listener="{l}"}}"#)), Some(1.0), "{l}");
    }
    let logs = s.settled_logs();
    assert_eq!(logs.matches(r#""status":431"#).count(), 3, "{logs}");
    let errors: Vec<&str> = logs.lines().filter(|l| l.contains(r#""level":"error""#)).collect();
    assert!(errors.is_empty(), "{errors:#?}");
}

/// At SIGTERM pingora's proxy drops every connection still sending its head; paysign answered
/// each "400 the request head could not be parsed" (counted as bad HTTP), which tells a caller
/// its request was wrong. Nothing was sent: 503 `not-sent` with `Retry-After`, so it retries.
#[test]
fn heads_unfinished_at_sigterm_are_answered_503_not_sent() {
    use std::io::Write;
    let mut s = Stack::start(Options { merchants: &[MD5_MERCHANT], ..Options::default() });
    let mut callers: Vec<_> = (0..3)
        .map(|_| {
            let mut c = std::net::TcpStream::connect(("127.0.0.1", s.proxy)).unwrap();
            c.write_all(format!("POST {BINDCARD} HTTP/1.1\r\nHo").as_bytes()).unwrap();
            c
        })
        .collect();
    assert!(eventually(10, || sample(&s.metrics(), r#"paysign_connections_open{listener="proxy"}"#) == Some(3.0)));
    assert_eq!(unsafe { libc::kill(s.gateway_pid() as i32, libc::SIGTERM) }, 0);
    for c in &mut callers {
        let got = read_responses(c, 1);
        assert_eq!(got.len(), 1, "no answer");
        let r = &got[0];
        assert_eq!((r.status, r.header("X-Paysign-Delivery"), r.header("Retry-After")), (503, Some("not-sent"), Some("1")), "{}", r.text());
    }
    assert!(eventually(20, || !s.gateway.is_running()), "did not stop");
    assert_eq!(s.gateway.exit_code(), Some(0));
    let logs = s.gateway.logs();
    assert_eq!(logs.matches(r#""listener":"proxy","outcome":"shed","status":503,"delivery":"not-sent""#).count(), 3, "{logs}");
    assert!(!logs.contains("bad_http"), "{logs}");
}

/// `notify.allow_from` written as a dual-stack socket shows an IPv4 peer (`::ffff:127.0.0.1`)
/// allows that peer: it was kept as an IPv6 network, peers are compared as IPv4, so it matched
/// nothing and the platform itself was closed at accept.
#[test]
fn allow_from_in_ipv4_mapped_form_allows_that_ipv4_peer() {
    let notify_port = free_port();
    let extra = format!(
        "notify:\n  listen: 127.0.0.1:{notify_port}\n  allow_from: [\"::ffff:127.0.0.1\", \"::ffff:10.0.0.0/104\"]\n  routes:\n    - path: /notify/bindcard\n      target: http://127.0.0.1:9/unused\n"
    );
    let s = Stack::start(Options { merchants: &[MD5_MERCHANT], gateway_extra: extra, ..Options::default() });
    wait_listening(notify_port);
    let r = try_request(notify_port, "GET", "/nowhere", &[], b"").map(|r| r.status);
    assert_eq!(r.ok(), Some(404), "the allowed peer was refused");
    let m = s.metrics();
    assert_eq!(sample(&m, r#"paysign_notifications_total{outcome="source_refused"}"#).unwrap_or(0.0), 0.0, "{m}");
    // GET /config shows what is in force: the IPv4 networks.
    let c = request(s.admin, "GET", "/config", &[], b"").json();
    assert_eq!(c["config"]["notify"]["allow_from"], serde_json::json!(["127.0.0.1/32", "10.0.0.0/8"]), "{c}");
}

/// `CONNECT` is refused by pingora's proxy before any filter, with a bare 405 of its own: no
/// `X-Request-Id`, no `X-Paysign-Delivery`, no body, no access line — the error contract
/// (docs/errors.md: every response) did not hold. It is paysign's answer now.
#[test]
fn connect_is_answered_with_the_error_contract() {
    use std::io::Write;
    let s = Stack::start(Options { merchants: &[MD5_MERCHANT], ..Options::default() });
    let mut c = std::net::TcpStream::connect(("127.0.0.1", s.proxy)).unwrap();
    c.write_all(b"CONNECT platform.example:443 HTTP/1.1\r\nHost: platform.example:443\r\n\r\n").unwrap();
    let got = read_responses(&mut c, 1);
    assert_eq!(got.len(), 1, "no answer");
    let r = &got[0];
    assert_eq!((r.status, r.header("X-Paysign-Delivery"), r.header("Connection")), (405, Some("not-sent"), Some("close")));
    assert_eq!(r.header("Content-Type"), Some("application/json;charset=UTF-8"));
    assert_eq!((r.json()["errCode"].as_str(), r.json()["source"].as_str()), (Some("1002"), Some("gateway")), "{}", r.text());
    let id = r.header("X-Request-Id").expect("no X-Request-Id").to_string();
    assert_eq!(id.len(), 32);
    assert!(read_responses(&mut c, 1).is_empty(), "more after the refusal");
    let logs = s.settled_logs();
    let line = format!(r#""request_id":"{id}","listener":"proxy","outcome":"method_not_allowed","status":405,"delivery":"not-sent""#);
    assert_eq!(logs.matches(&line).count(), 1, "{line}: {logs}");
}

/// `paysign check` on a file of deeply nested flow collections: no panic, and no quadratic
/// parse (40,000 levels, an 80 KB file, took 13.5 s of CPU; a reload as long).
#[test]
fn check_refuses_deep_nesting_at_once() {
    let dir = temp_dir();
    let n = 40_000;
    let file = dir.join("deep.yaml");
    write(&file, &format!("listen: {}{}\n", "[".repeat(n), "]".repeat(n)));
    let start = std::time::Instant::now();
    let (code, out, err) = run_paysign(&["check", "-c", file.to_str().unwrap()], &[], "");
    let took = start.elapsed();
    assert_eq!(code, 1, "{out}{err}");
    assert!(
        format!("{out}{err}").contains("deep.yaml: (file): invalid configuration: nested deeper than 64 levels of [ ] or { }"),
        "{out}{err}"
    );
    assert!(took < std::time::Duration::from_secs(3), "took {took:?}");
    // A setting's own brackets, quoted ones and comments are not nesting.
    let fine = dir.join("fine.yaml");
    write(&fine, &format!("listen: \"{}\" # {}\n", "[".repeat(100), "{".repeat(100)));
    let (_, out, err) = run_paysign(&["check", "-c", fine.to_str().unwrap()], &[], "");
    assert!(!format!("{out}{err}").contains("nested deeper"), "{out}{err}");
}
