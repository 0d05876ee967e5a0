//! The process's life, with the real binary: start-up fails fast and says which listener could
//! not be bound; each listener says when it listens; SIGTERM never abandons a call the platform
//! may have, and with nothing in flight the process exits at once; a SIGQUIT no new process is
//! waiting for does not stop the service.

mod common;

use std::net::TcpStream;
use std::process::Command;
use std::time::{Duration, Instant};

use serde_json::Value;

use common::*;

fn signal(pid: u32, sig: &str) {
    assert!(Command::new("kill").args([sig, &pid.to_string()]).status().unwrap().success());
}

fn json_lines(logs: &str) -> Vec<Value> {
    logs.lines().map(|l| serde_json::from_str::<Value>(l).unwrap_or_else(|_| panic!("not a JSON line: {l}\n{logs}"))).collect()
}

/// The access line of `order_no` in `logs`.
fn access_of(logs: &str, order_no: &str) -> Vec<Value> {
    json_lines(logs).into_iter().filter(|l| l["msg"] == "access" && l["order_no"] == order_no).collect()
}

#[test]
fn a_listener_that_cannot_be_bound_is_one_json_error_line_naming_it_and_exit_1() {
    for setting in ["listen", "admin_listen", "notify.listen"] {
        let dir = temp_dir();
        let taken = bind_unclaimed();
        let busy = taken.local_addr().unwrap().port();
        let port = |name: &str| if name == setting { busy } else { free_port() };
        let config = dir.join("paysign.yaml");
        write(
            &config,
            &format!(
                "listen: 127.0.0.1:{}\nadmin_listen: 127.0.0.1:{}\nplatform:\n  base_url: http://127.0.0.1:{}\nnotify:\n  listen: 127.0.0.1:{}\n  routes:\n    - path: /notify/bindcard\n      target: http://127.0.0.1:9/n\nmerchants:\n  - customer_no: \"{MD5_MERCHANT}\"\n    profile: md5\n    platform_public_key: keys/platform_public.pem\n    md5_key_file: keys/md5.key\n",
                port("listen"),
                port("admin_listen"),
                free_port(),
                port("notify.listen"),
            ),
        );
        let started = Instant::now();
        let mut gateway = spawn(&["run", "-c", config.to_str().unwrap()], dir.join("gateway.log"));
        assert!(eventually(20, || gateway.exit_code().is_some()), "{setting}: still running with its port taken: {}", gateway.logs());
        let took = started.elapsed();
        assert_eq!(gateway.exit_code(), Some(1), "{setting}");
        assert!(took < Duration::from_secs(5), "{setting}: exited after {took:?}");
        let logs = gateway.logs();
        let errors: Vec<Value> = json_lines(&logs).into_iter().filter(|l| l["level"] == "error").collect();
        assert_eq!(errors.len(), 1, "{setting}: {logs}");
        assert!(!logs.contains("will try again"), "{logs}");
        let msg = errors[0]["msg"].as_str().unwrap();
        assert!(msg.starts_with(&format!("cannot listen on 127.0.0.1:{busy} ({setting}): ")), "{msg}");
        assert!(!logs.contains("listening on"), "{logs}");
        drop(taken);
    }
}

#[test]
fn each_listener_says_once_that_it_listens_and_the_pid_file_names_the_process() {
    let notify = free_port();
    let s = Stack::start(Options {
        merchants: &[MD5_MERCHANT],
        gateway_extra: format!(
            "notify:\n  listen: 127.0.0.1:{notify}\n  routes:\n    - path: /notify/bindcard\n      target: http://127.0.0.1:9/n\n"
        ),
        ..Options::default()
    });
    let logs = s.settled_logs();
    for line in [
        format!("listening on 127.0.0.1:{} (listen)", s.proxy),
        format!("listening on 127.0.0.1:{} (admin_listen)", s.admin),
        format!("listening on 127.0.0.1:{notify} (notify.listen)"),
    ] {
        let found: Vec<Value> = json_lines(&logs).into_iter().filter(|l| l["msg"] == line.as_str()).collect();
        assert_eq!(found.len(), 1, "{line}: {logs}");
        assert_eq!((found[0]["level"].as_str(), found[0]["target"].as_str()), (Some("info"), Some("paysign::lifecycle")));
    }
    assert_eq!(request(s.admin, "GET", "/readyz", &[], b"").status, 200);
    // The upgrade socket's directory is private and next to the configuration, not /tmp.
    let run = s.dir.join(".paysign-run");
    let mode = std::os::unix::fs::PermissionsExt::mode(&std::fs::metadata(&run).unwrap().permissions());
    assert_eq!(mode & 0o777, 0o700);
    assert_eq!(std::fs::read_to_string(run.join("paysign.pid")).unwrap(), format!("{}\n", s.gateway_pid()));
}

#[test]
fn sigterm_with_nothing_in_flight_exits_at_once_not_after_the_grace() {
    let mut s = Stack::start(Options { merchants: &[MD5_MERCHANT], grace: 30, ..Options::default() });
    assert_eq!(s.post_json(MD5_MERCHANT, &bindcard("IDLE-1")).status, 200);
    let started = Instant::now();
    signal(s.gateway_pid(), "-TERM");
    assert!(eventually(40, || s.gateway.exit_code().is_some()));
    let took = started.elapsed();
    assert_eq!(s.gateway.exit_code(), Some(0));
    // The grace is 30 s; nothing was in flight.
    assert!(took < Duration::from_secs(5), "exited after {took:?}");
    let logs = s.gateway.logs();
    assert_eq!(access_of(&logs, "IDLE-1").len(), 1);
    assert!(logs.contains("shutdown: no call in flight after"), "{logs}");
}

/// A call at the platform (the sandbox holds `STALL-` orders for `stall_ms`) when SIGTERM
/// arrives; returns its answer and the stopped gateway's log.
fn sigterm_during_a_stalled_call(o: Options, order_no: &'static str) -> (Response, String) {
    let mut s = Stack::start(o);
    let proxy = s.proxy;
    let caller = std::thread::spawn(move || post_to(proxy, BINDCARD, Some(MD5_MERCHANT), bindcard(order_no).to_string().as_bytes()));
    assert!(eventually(20, || s.sandbox_stats()["received"] == 1), "the call never reached the platform");
    signal(s.gateway_pid(), "-TERM");
    // New connections are refused while the call is still waiting on the platform.
    assert!(eventually(10, || TcpStream::connect(("127.0.0.1", proxy)).is_err()), "still accepting after SIGTERM");
    assert!(!caller.is_finished(), "the call ended before the platform answered");
    let answer = caller.join().expect("the caller got no answer");
    assert!(eventually(20, || s.gateway.exit_code().is_some()), "the gateway did not exit");
    assert_eq!(s.gateway.exit_code(), Some(0));
    (answer, s.gateway.logs())
}

#[test]
fn sigterm_gives_a_call_at_the_platform_its_verified_answer_and_access_line() {
    // The grace (1 s) is shorter than the platform's answer (3 s): the call is still given its
    // read timeout.
    let o = Options { merchants: &[MD5_MERCHANT], grace: 1, stall_ms: 3_000, read_timeout_ms: 10_000, ..Options::default() };
    let (r, logs) = sigterm_during_a_stalled_call(o, "STALL-TERM-OK");
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(r.header("X-Paysign-Delivery"), Some("sent"));
    assert_eq!(r.json()["errCode"], "0000");
    let access = access_of(&logs, "STALL-TERM-OK");
    assert_eq!(access.len(), 1, "{logs}");
    assert_eq!((access[0]["status"].as_u64(), access[0]["outcome"].as_str()), (Some(200), Some("verified")));
}

#[test]
fn sigterm_gives_a_call_at_the_platform_until_its_read_timeout_then_504_unknown() {
    let o = Options { merchants: &[MD5_MERCHANT], grace: 0, stall_ms: 4_000, read_timeout_ms: 2_000, ..Options::default() };
    let (r, logs) = sigterm_during_a_stalled_call(o, "STALL-TERM-LATE");
    assert_eq!(r.status, 504, "{}", r.text());
    assert_eq!(r.header("X-Paysign-Delivery"), Some("unknown"));
    assert_eq!(r.json()["errCode"], "1001");
    let access = access_of(&logs, "STALL-TERM-LATE");
    assert_eq!(access.len(), 1, "{logs}");
    assert_eq!((access[0]["status"].as_u64(), access[0]["delivery"].as_str()), (Some(504), Some("unknown")));
}

#[test]
fn sigquit_with_no_new_process_waiting_keeps_serving_and_says_why() {
    let mut s = Stack::start(Options { merchants: &[MD5_MERCHANT], ..Options::default() });
    signal(s.gateway_pid(), "-QUIT");
    let mut logs = String::new();
    assert!(
        eventually(10, || {
            logs = s.gateway.logs();
            logs.contains("SIGQUIT: not upgrading, still serving: ")
        }),
        "{logs}"
    );
    let line = json_lines(&logs).into_iter().find(|l| l["msg"].as_str().unwrap().starts_with("SIGQUIT: not upgrading")).unwrap();
    assert_eq!(line["level"], "error");
    // Still serving, still ready, on the same process.
    let r = s.post_json(MD5_MERCHANT, &bindcard("AFTER-QUIT"));
    assert_eq!(r.status, 200);
    assert_eq!(request(s.admin, "GET", "/readyz", &[], b"").status, 200);
    assert!(s.gateway.is_running());
}

#[test]
fn an_upgrade_socket_in_a_directory_others_may_write_is_refused() {
    let dir = temp_dir();
    let shared = dir.join("shared");
    std::fs::create_dir(&shared).unwrap();
    std::fs::set_permissions(&shared, std::os::unix::fs::PermissionsExt::from_mode(0o777)).unwrap();
    let mut s = Stack::start(Options {
        merchants: &[MD5_MERCHANT],
        gateway_extra: format!("upgrade_sock: {}/upgrade.sock\n", shared.display()),
        ..Options::default()
    });
    let logs = s.settled_logs();
    assert!(
        logs.contains(&format!(
            "graceful upgrade unavailable: upgrade_sock: the directory {} is writable by others (mode 777)",
            shared.display()
        )),
        "{logs}"
    );
    // Nobody can receive the sockets there: SIGQUIT is refused, and the gateway keeps serving.
    signal(s.gateway_pid(), "-QUIT");
    assert!(eventually(10, || s.gateway.logs().contains("SIGQUIT: not upgrading, still serving: graceful upgrade is unavailable")));
    assert_eq!(s.post_json(MD5_MERCHANT, &bindcard("AFTER-QUIT")).status, 200);
    assert!(s.gateway.is_running());
}

/// The shipped Kubernetes manifest and systemd unit give a stopping gateway at least its drain
/// deadline (docs/operations.md, Shutdown), computed from the ConfigMap's settings and their
/// defaults, and the running gateway states the same deadline.
#[test]
fn the_shipped_stop_timeouts_cover_the_drain_deadline() {
    let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR"));
    let manifest = std::fs::read_to_string(root.join("conf/deploy/kubernetes.yaml")).unwrap();
    let docs: Vec<serde_yaml::Value> =
        serde_yaml::Deserializer::from_str(&manifest).map(|d| serde::Deserialize::deserialize(d).unwrap()).collect();
    let config_map = docs.iter().find(|d| d["kind"] == "ConfigMap" && d["metadata"]["name"] == "paysign-config").unwrap();
    let text = config_map["data"].as_mapping().unwrap().values().next().unwrap().as_str().unwrap();
    let cfg: serde_yaml::Value = serde_yaml::from_str(text).unwrap();
    let ms = |v: &serde_yaml::Value, default: u64| v.as_u64().unwrap_or(default);
    let platform = &cfg["platform"];
    let call = ms(&cfg["client_body_timeout_ms"], 10_000)
        + ms(&platform["connect_timeout_ms"], 2_000) * (ms(&platform["connect_retries"], 1) + 1)
        + ms(&platform["read_timeout_ms"], 10_000);
    let notification = ms(&cfg["client_body_timeout_ms"], 10_000) + ms(&cfg["notify"]["forward_timeout_ms"], 5_000);
    let longest = 1_000 + ms(&cfg["header_timeout_ms"], 10_000) + call.max(notification);
    let drain = (ms(&cfg["grace_period_seconds"], 5) * 1000).max(longest).div_ceil(1000);
    assert_eq!(drain, 35, "the documented deadline");

    let deployment = docs.iter().find(|d| d["kind"] == "Deployment").unwrap();
    let pod = &deployment["spec"]["template"]["spec"];
    let pre_stop: u64 = pod["containers"][0]["lifecycle"]["preStop"]["exec"]["command"][1].as_str().unwrap().parse().unwrap();
    let kill_after = pod["terminationGracePeriodSeconds"].as_u64().unwrap();
    // + 1 s: at the deadline the calls not yet sent are given their 503 (paysign_plugin::drain::ANSWER_NOT_SENT).
    assert!(kill_after > pre_stop + drain + 1, "terminationGracePeriodSeconds {kill_after} <= preStop {pre_stop} + drain {drain} + 1");

    let unit = std::fs::read_to_string(root.join("conf/deploy/paysign.service")).unwrap();
    let stop: u64 = unit.lines().find_map(|l| l.strip_prefix("TimeoutStopSec=")).unwrap().parse().unwrap();
    assert!(stop > drain + 1, "TimeoutStopSec {stop} <= drain {drain} + 1");

    // The gateway computes the same deadline from the same settings (here: the defaults).
    let s = Stack::start(Options {
        merchants: &[MD5_MERCHANT],
        read_timeout_ms: 10_000,
        connect_timeout_ms: 2_000,
        grace: 10,
        ..Options::default()
    });
    assert!(s.settled_logs().contains("shutdown: the drain deadline is 35 s"), "{}", s.settled_logs());
}

/// Whether `check` stays false for all of `within` (polled): a bounded look that something
/// does not happen.
fn stays_false(within: Duration, mut check: impl FnMut() -> bool) -> bool {
    let until = Instant::now() + within;
    while Instant::now() < until {
        if check() {
            return false;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    !check()
}

/// Calls queued for the private-key executor (one worker, an 8192-bit merchant key: ~40 ms a
/// signature) at SIGTERM cannot all be sealed before the drain deadline (2 s here): those not
/// sent by then are answered 503 `not-sent` with their access line, none is cut by the exit.
#[test]
fn at_the_drain_deadline_a_call_not_yet_sent_is_answered_503_not_sent_with_its_access_line() {
    const CALLS: usize = 150;
    let dir = temp_dir();
    let (proxy, admin) = (free_port(), free_port());
    let config = dir.join("paysign.yaml");
    // The platform's port is closed (a call that gets sealed fails at once, 502 `not-sent`);
    // the timeouts are short so that the drain deadline is 2 s.
    write(
        &config,
        &format!(
            "listen: 127.0.0.1:{proxy}\nadmin_listen: 127.0.0.1:{admin}\ngrace_period_seconds: 0\nheader_timeout_ms: 300\nclient_body_timeout_ms: 300\nprivate_key_workers: 1\nprivate_key_queue: 200\nmax_in_flight: 300\nplatform:\n  base_url: http://127.0.0.1:{}\n  connect_timeout_ms: 100\n  connect_retries: 0\n  read_timeout_ms: 200\nmerchants:\n  - customer_no: \"{RSA_MERCHANT}\"\n    profile: rsa\n    platform_public_key: keys/platform_public.pem\n    merchant_private_key: keys/slow8192_private.pem\n",
            free_port(),
        ),
    );
    let mut gateway = spawn(&["run", "-c", config.to_str().unwrap()], dir.join("gateway.log"));
    wait_ready(admin, "/readyz");
    assert!(eventually(10, || gateway.logs().contains("shutdown: the drain deadline is 2 s")), "{}", gateway.logs());

    let callers: Vec<_> = (0..CALLS)
        .map(|i| {
            std::thread::spawn(move || {
                let order = format!("QUEUED-{i}");
                let headers = [("Content-Type", "application/json"), ("X-Paysign-Merchant", RSA_MERCHANT)];
                (order.clone(), try_request(proxy, "POST", BINDCARD, &headers, bindcard(&order).to_string().as_bytes()))
            })
        })
        .collect();
    // Every call is under way (in flight, or already refused by the closed port) and most wait
    // for the executor.
    let (mut queued, mut seen) = (0.0, 0.0);
    let all_queued = eventually(20, || {
        let m = request(admin, "GET", "/metrics", &[], b"").text();
        let n = |series: &str| sample(&m, series).unwrap_or(0.0);
        queued = n("paysign_private_key_ops_admitted");
        seen = n("paysign_requests_in_flight")
            + n(&format!(r#"paysign_requests_total{{endpoint="bindcard_create",merchant="{RSA_MERCHANT}",outcome="unreachable"}}"#));
        seen == CALLS as f64 && queued >= 100.0
    });
    assert!(all_queued, "the calls never queued: {seen} under way, {queued} at the executor");
    signal(gateway.pid(), "-TERM");
    let answers: Vec<(String, std::io::Result<Response>)> = callers.into_iter().map(|c| c.join().unwrap()).collect();
    assert!(eventually(20, || gateway.exit_code().is_some()), "the gateway did not exit");
    assert_eq!(gateway.exit_code(), Some(0));
    let logs = gateway.logs();

    let mut not_sent = 0;
    for (order, answer) in &answers {
        let r = answer.as_ref().unwrap_or_else(|e| panic!("{order}: no answer ({e}): the call was cut\n{logs}"));
        let access = access_of(&logs, order);
        assert_eq!(access.len(), 1, "{order}: {logs}");
        assert_eq!(r.header("X-Paysign-Delivery"), Some("not-sent"), "{order}: {}", r.text());
        match r.status {
            // Sealed and sent before the deadline: the closed port refused it.
            502 => assert_eq!(access[0]["outcome"], "unreachable"),
            503 => {
                not_sent += 1;
                let body = r.json();
                assert_eq!(body["errCode"], "1001");
                assert_eq!(body["source"], "gateway");
                assert_eq!(
                    body["errMessage"],
                    "paysign is shutting down and its drain deadline passed before the request could be sent; nothing was sent: resend it"
                );
                assert_eq!(
                    (access[0]["status"].as_u64(), access[0]["outcome"].as_str(), access[0]["delivery"].as_str()),
                    (Some(503), Some("shutting_down"), Some("not-sent"))
                );
            }
            other => panic!("{order}: {other} {}", r.text()),
        }
    }
    assert!(not_sent > 0, "every call was sent before the deadline: the test proves nothing\n{logs}");
    assert!(logs.contains("at the drain deadline (2 s); those not yet sent are answered 503 not-sent"), "{logs}");
    assert!(logs.contains("shutdown: no call in flight after"), "{logs}");
}

/// A notification whose internal target is slow at SIGTERM: the process waits for it (within
/// the drain deadline), the target receives it and the platform gets its acknowledgement.
#[test]
fn sigterm_waits_for_a_notification_being_forwarded_and_the_platform_gets_its_ack() {
    use std::sync::mpsc::channel;
    use std::sync::{Arc, Mutex};
    let (arrived_tx, arrived) = channel::<()>();
    let (release, release_rx) = channel::<()>();
    let (arrived_tx, release_rx) = (Mutex::new(arrived_tx), Mutex::new(release_rx));
    let target = http_server::start(Arc::new(move |_r| {
        let _ = arrived_tx.lock().unwrap().send(());
        // Slow: answers only once the test says so (bounded).
        let _ = release_rx.lock().unwrap().recv_timeout(Duration::from_secs(30));
        (200, "text/plain".into(), b"ok".to_vec())
    }));
    let notify = free_port();
    let mut s = Stack::start(Options {
        merchants: &[MD5_MERCHANT],
        gateway_extra: format!(
            "notify:\n  listen: 127.0.0.1:{notify}\n  forward_timeout_ms: 10000\n  routes:\n    - path: /notify/bindcard\n      target: http://127.0.0.1:{}/internal/bind-notified\n",
            target.port
        ),
        ..Options::default()
    });
    wait_listening(notify);
    let sandbox = s.sandbox_port;
    let platform = std::thread::spawn(move || {
        let req = serde_json::json!({"customerNo": MD5_MERCHANT, "orderNo": "NTF-TERM", "url": format!("http://127.0.0.1:{notify}/notify/bindcard")});
        request(sandbox, "POST", "/__sandbox/notify", &[], req.to_string().as_bytes()).json()
    });
    arrived.recv_timeout(Duration::from_secs(15)).expect("the target never received the notification");
    signal(s.gateway_pid(), "-TERM");
    assert!(eventually(10, || TcpStream::connect(("127.0.0.1", notify)).is_err()), "still accepting after SIGTERM");
    // The forward is under way: the process must not exit under it.
    assert!(stays_false(Duration::from_secs(1), || s.gateway.exit_code().is_some()), "exited during a forward: {}", s.gateway.logs());
    release.send(()).unwrap();
    let answer = platform.join().unwrap();
    assert_eq!((answer["status"].as_u64(), answer["body"].as_str()), (Some(200), Some("SUCCESS")), "{answer}");
    let got = target.requests.recv_timeout(Duration::from_secs(5)).expect("nothing recorded by the target");
    assert_eq!(got.path, "/internal/bind-notified");
    assert!(eventually(20, || s.gateway.exit_code().is_some()), "the gateway did not exit");
    assert_eq!(s.gateway.exit_code(), Some(0));
    let logs = s.gateway.logs();
    let lines: Vec<Value> = json_lines(&logs).into_iter().filter(|l| l["kind"] == "notification").collect();
    assert_eq!(lines.len(), 1, "{logs}");
    assert_eq!((lines[0]["outcome"].as_str(), lines[0]["status"].as_u64()), (Some("forwarded"), Some(200)));
    assert!(logs.contains("shutdown: no call in flight after"), "{logs}");
}
