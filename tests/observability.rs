//! What a fresh process shows on `/metrics`, what the documentation says the labels are, and
//! what the logs say (and never say), with the real binary.

mod common;

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::process::Command;

use common::*;
use paysign_plugin::metrics;
use serde_json::Value;

fn sha256_hex(s: &str) -> String {
    paysign_plugin::config::sha256(s.as_bytes()).iter().map(|b| format!("{b:02x}")).collect()
}

/// The notification section for a listener on `port` with one route (to nowhere: these tests
/// never forward), and `allow_from` when given.
fn notify_section(port: u16, allow_from: Option<&str>) -> String {
    let allow = allow_from.map_or(String::new(), |a| format!("  allow_from: [\"{a}\"]\n"));
    format!(
        "notify:\n  listen: 127.0.0.1:{port}\n{allow}  routes:\n    - path: /notify/bindcard\n      target: http://127.0.0.1:9/internal\n"
    )
}

/// Lines of a JSON log (other lines, e.g. a panic's text, are skipped).
fn lines(log: &str) -> Vec<Value> {
    log.lines().filter_map(|l| serde_json::from_str::<Value>(l).ok()).collect()
}

#[test]
fn a_fresh_process_shows_every_family_with_zero_series_and_the_process_metrics() {
    let notify_port = free_port();
    let extra = format!(
        "callers:\n  - name: ops\n    token_sha256: {}\n    merchants: [\"*\"]\n    endpoints: [\"*\"]\n{}",
        sha256_hex("caller-token-0123456789abcdef"),
        notify_section(notify_port, None)
    );
    let s = Stack::start(Options { gateway_extra: extra, ..Options::default() });
    let m = s.metrics();
    let missing: Vec<String> = metrics::family_names().into_iter().filter(|n| !m.contains(&format!("# TYPE {n} "))).collect();
    assert!(missing.is_empty(), "families absent from a fresh /metrics: {missing:?}");
    for series in [
        r#"paysign_requests_total{endpoint="bindcard_create",merchant="202112090603",outcome="verified"}"#,
        r#"paysign_requests_total{endpoint="bindcard_create",merchant="202112090604",outcome="timeout"}"#,
        r#"paysign_requests_total{endpoint="none",merchant="none",outcome="not_found"}"#,
        // The listeners' own refusals (a head over max_header_bytes, the head budget).
        r#"paysign_requests_total{endpoint="none",merchant="none",outcome="head_too_large"}"#,
        r#"paysign_requests_total{endpoint="none",merchant="none",outcome="shed"}"#,
        r#"paysign_verification_failures_total{reason="signature"}"#,
        r#"paysign_platform_errcode_total{endpoint="bindcard_create",errcode="other"}"#,
        r#"paysign_platform_failures_total{endpoint="bindcard_create"}"#,
        r#"paysign_upstream_connect_retries_total{endpoint="bindcard_create"}"#,
        r#"paysign_notifications_total{outcome="forged",route="/notify/bindcard"}"#,
        r#"paysign_notifications_total{outcome="source_refused",route="none"}"#,
        r#"paysign_notification_forward_duration_seconds_count{route="/notify/bindcard"}"#,
        r#"paysign_config_reloads_total{result="failed"}"#,
        r#"paysign_config_reloads_total{result="ok"}"#,
        r#"paysign_caller_refusals_total{caller="ops",reason="forbidden"}"#,
        r#"paysign_caller_refusals_total{caller="anonymous",reason="missing"}"#,
        r#"paysign_caller_refusals_total{caller="admin",reason="unauthenticated"}"#,
        r#"paysign_connections_refused_total{listener="notify"}"#,
        r#"paysign_header_timeouts_total{listener="proxy"}"#,
        r#"paysign_bad_http_total{listener="admin"}"#,
        r#"paysign_platform_key_verified_total{key="next",merchant="202112090604"}"#,
        r#"paysign_crypto_duration_seconds_count{op="rsa_sign"}"#,
        r#"paysign_request_duration_seconds_count{endpoint="bindcard_create"}"#,
        r#"paysign_upstream_duration_seconds_count{endpoint="other"}"#,
        r#"paysign_merchants_configured{profile="md5"}"#,
        r#"paysign_private_key_ops_shed_total"#,
    ] {
        assert_eq!(sample(&m, series), Some(if series.starts_with("paysign_merchants") { 1.0 } else { 0.0 }), "{series}");
    }
    // The Prometheus client's process collector: this very process.
    let started = sample(&m, "process_start_time_seconds").expect("process_start_time_seconds");
    let now = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_secs_f64();
    assert!(started > now - 120.0 && started <= now + 1.0, "{started} {now}");
    assert!(sample(&m, "process_cpu_seconds_total").is_some_and(|v| v >= 0.0));
    for name in ["process_resident_memory_bytes", "process_open_fds", "process_max_fds", "process_threads", "process_virtual_memory_bytes"]
    {
        assert!(sample(&m, name).is_some_and(|v| v > 0.0), "{name}");
    }
}

/// The documented metrics table (docs/observability.md) against the code: the same families,
/// the same label names, and each closed label set listed in full.
#[test]
fn the_documented_label_values_are_the_codes() {
    let doc = std::fs::read_to_string(PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("docs/observability.md")).unwrap();
    // metric -> label -> backticked values
    let mut documented: BTreeMap<String, Vec<(String, BTreeSet<String>)>> = BTreeMap::new();
    for row in doc.lines().filter(|l| l.starts_with("| `paysign_")) {
        let cells: Vec<&str> = row.split(" | ").collect();
        let name = cells[0].trim_start_matches("| `").split('`').next().unwrap().to_string();
        let mut labels = Vec::new();
        if !cells[1].starts_with('—') {
            for segment in cells[1].trim_end_matches(" |").split("; ") {
                let ticked: Vec<String> = segment.split('`').skip(1).step_by(2).map(str::to_string).collect();
                let label = ticked[0].clone();
                // Values end where a remark starts (" — …", or a link to another document).
                let values = segment.split(" — ").next().unwrap();
                let values: BTreeSet<String> = values.split('`').skip(1).step_by(2).skip(1).map(str::to_string).collect();
                labels.push((label, values));
            }
        }
        assert!(documented.insert(name.clone(), labels).is_none(), "{name} is documented twice");
    }
    let code: BTreeMap<String, Vec<String>> = metrics::families().into_iter().collect();
    assert_eq!(documented.keys().collect::<Vec<_>>(), code.keys().collect::<Vec<_>>(), "documented families vs the code's");
    for (name, labels) in &code {
        let names: Vec<&String> = documented[name].iter().map(|(l, _)| l).collect();
        assert_eq!(names, labels.iter().collect::<Vec<_>>(), "{name}: label names");
    }
    let endpoints = paysign_plugin::protocol::schema::Endpoints::builtin().unwrap();
    let set = |parts: &[&[&str]]| -> BTreeSet<String> { parts.iter().flat_map(|p| p.iter().map(|s| s.to_string())).collect() };
    let endpoint_names: Vec<&str> = endpoints.iter().map(|e| e.name.as_str()).collect();
    let endpoint = set(&[&endpoint_names, metrics::ENDPOINT_FALLBACKS]);
    let listener = set(&[metrics::LISTENERS]);
    let route = set(&[metrics::ROUTE_FALLBACKS]);
    let closed: Vec<(&str, &str, BTreeSet<String>)> = vec![
        ("paysign_requests_total", "endpoint", endpoint.clone()),
        ("paysign_requests_total", "merchant", set(&[metrics::MERCHANT_FALLBACKS])),
        ("paysign_requests_total", "outcome", set(&[metrics::REQUEST_OUTCOMES])),
        ("paysign_request_duration_seconds", "endpoint", endpoint.clone()),
        ("paysign_upstream_duration_seconds", "endpoint", endpoint.clone()),
        ("paysign_crypto_duration_seconds", "op", set(&[&metrics::CRYPTO_OPS[..]])),
        ("paysign_verification_failures_total", "reason", set(&[metrics::VERIFY_REASONS])),
        ("paysign_platform_errcode_total", "endpoint", endpoint.clone()),
        ("paysign_platform_errcode_total", "errcode", set(&[metrics::KNOWN_ERRCODES, &["other"]])),
        ("paysign_platform_failures_total", "endpoint", endpoint.clone()),
        ("paysign_upstream_connect_retries_total", "endpoint", endpoint.clone()),
        ("paysign_merchants_configured", "profile", set(&[metrics::PROFILES])),
        ("paysign_notifications_total", "route", route.clone()),
        ("paysign_notifications_total", "outcome", set(&[metrics::NOTIFICATION_OUTCOMES])),
        ("paysign_notification_forward_duration_seconds", "route", route),
        ("paysign_config_reloads_total", "result", set(&[metrics::RELOAD_RESULTS])),
        ("paysign_platform_key_verified_total", "key", set(&[metrics::PLATFORM_KEYS])),
        ("paysign_caller_refusals_total", "caller", set(&[metrics::CALLER_FALLBACKS])),
        ("paysign_caller_refusals_total", "reason", set(&[metrics::CALLER_REFUSAL_REASONS])),
        ("paysign_connections_open", "listener", listener.clone()),
        ("paysign_connections_refused_total", "listener", listener.clone()),
        ("paysign_header_timeouts_total", "listener", listener.clone()),
        ("paysign_bad_http_total", "listener", listener),
        ("paysign_private_key_jobs_total", "outcome", set(&[metrics::PRIVATE_KEY_JOB_OUTCOMES])),
        ("paysign_inbox_stored_total", "result", set(&[metrics::INBOX_STORE_RESULTS])),
        ("paysign_inbox_deliveries_total", "outcome", set(&[metrics::DELIVERY_OUTCOMES])),
        ("paysign_inbox_notifications", "state", set(&[metrics::INBOX_STATES])),
    ];
    for (name, label, expected) in closed {
        let listed = &documented[name].iter().find(|(l, _)| l == label).unwrap().1;
        // "as above": the values are those of the row above with the same label.
        let listed = if listed.is_empty() {
            documented["paysign_requests_total"]
                .iter()
                .chain(&documented["paysign_connections_open"])
                .find(|(l, _)| l == label)
                .unwrap()
                .1
                .clone()
        } else {
            listed.clone()
        };
        assert_eq!(listed, expected, "{name}{{{label}}}: documented vs the code's values");
    }
}

/// A platform failure's access line says the code the caller got (the platform's `500`), not
/// the metric label's `other`; the metric stays bounded.
#[test]
fn a_platform_failure_access_line_says_the_platform_code() {
    let s = Stack::start(Options::default());
    let r = s.post_json(MD5_MERCHANT, &bindcard("TAMPER-PLATFORM-1"));
    assert_eq!(r.status, 502, "{}", r.text());
    assert_eq!(r.json()["errCode"], "500");
    assert_eq!(r.json()["source"], "platform");
    let logs = s.settled_logs();
    let access: Vec<Value> = lines(&logs).into_iter().filter(|l| l["order_no"] == "TAMPER-PLATFORM-1").collect();
    assert_eq!(access.len(), 1, "{logs}");
    assert_eq!(access[0]["outcome"], "platform_failure");
    assert_eq!(access[0]["err_code"], "500");
    assert_eq!(access[0]["status"], 502);
    assert_eq!(sample(&s.metrics(), r#"paysign_platform_failures_total{endpoint="bindcard_create"}"#), Some(1.0));
}

/// A peer refused by `allow_from` is closed at accept, counted, and logged with its address —
/// at most one line a second, saying how many refusals it stands for.
#[test]
fn a_refused_notification_source_is_logged_with_its_address() {
    use std::io::{Read, Write};
    let notify_port = free_port();
    let s = Stack::start(Options { gateway_extra: notify_section(notify_port, Some("10.0.0.0/8")), ..Options::default() });
    wait_listening(notify_port);
    // Refused at accept (issue 26.3): the connection is closed before a byte is read.
    let mut c = std::net::TcpStream::connect(("127.0.0.1", notify_port)).unwrap();
    c.set_read_timeout(Some(std::time::Duration::from_secs(10))).unwrap();
    let _ = c.write_all(b"POST /notify/bindcard HTTP/1.1\r\nHost: x\r\nContent-Length: 2\r\n\r\n{}");
    let mut answer = Vec::new();
    let _ = c.read_to_end(&mut answer);
    assert!(answer.is_empty(), "{}", String::from_utf8_lossy(&answer));
    let refusal_lines = || -> Vec<Value> { lines(&s.gateway.logs()).into_iter().filter(|l| l["outcome"] == "source_refused").collect() };
    let refused_in = |found: &[Value]| -> u64 { found.iter().map(|l| l["refused"].as_str().unwrap().parse::<u64>().unwrap()).sum() };
    // The readiness probe's connection and this one: one line (or two, across a second).
    let mut found = Vec::new();
    assert!(
        eventually(10, || {
            found = refusal_lines();
            !found.is_empty()
        }),
        "{}",
        s.gateway.logs()
    );
    assert!(found.iter().all(|l| l["peer"] == "127.0.0.1" && l["level"] == "warn"), "{found:?}");
    assert!(found[0]["msg"].as_str().unwrap().starts_with("notification connection from 127.0.0.1 closed at accept"), "{found:?}");
    let metric = || sample(&s.metrics(), r#"paysign_notifications_total{outcome="source_refused",route="none"}"#).unwrap();
    assert_eq!(metric(), 2.0);
    assert!(refused_in(&found) <= 2 && found.len() <= 2, "{found:?}");
    // A flood of refused connections: every one counted, at most a line a second.
    let start = std::time::Instant::now();
    for _ in 0..300 {
        let mut c = std::net::TcpStream::connect(("127.0.0.1", notify_port)).unwrap();
        let _ = c.write_all(b"GET / HTTP/1.1\r\n\r\n");
    }
    assert!(eventually(10, || metric() == 302.0), "{}", metric());
    let seconds = start.elapsed().as_secs();
    let found = refusal_lines();
    assert!(found.len() as u64 <= seconds + 3, "{} lines in {seconds} s", found.len());
    assert!(refused_in(&found) <= 302, "{found:?}");
}

/// Behind a trusted proxy the source is known only from `X-Forwarded-For`: a refused one gets
/// 403 and its access line names both the source and the proxy (the peer).
#[test]
fn a_refused_source_behind_a_trusted_proxy_is_logged_with_both_addresses() {
    let notify_port = free_port();
    let section = notify_section(notify_port, Some("10.0.0.0/8")).replace("  routes:", "  trusted_proxies: [\"127.0.0.1/32\"]\n  routes:");
    let s = Stack::start(Options { gateway_extra: section, ..Options::default() });
    wait_listening(notify_port);
    let r = request(
        notify_port,
        "POST",
        "/notify/bindcard",
        &[("x-forwarded-for", "192.0.2.7")],
        br#"{"customerNo":"202112090603","reqmsg":"AAAA"}"#,
    );
    assert_eq!(r.status, 403, "{}", r.text());
    let mut found = Vec::new();
    assert!(
        eventually(10, || {
            found = lines(&s.gateway.logs()).into_iter().filter(|l| l["outcome"] == "source_refused").collect();
            !found.is_empty()
        }),
        "{}",
        s.gateway.logs()
    );
    assert_eq!(found.len(), 1);
    assert_eq!(found[0]["source"], "192.0.2.7");
    assert_eq!(found[0]["peer"], "127.0.0.1");
    assert_eq!(found[0]["status"], 403);
    assert_eq!(sample(&s.metrics(), r#"paysign_notifications_total{outcome="source_refused",route="none"}"#), Some(1.0));
}

/// A refused admin write is one `warn` line naming what was refused and from where, without
/// the token presented.
#[test]
fn a_refused_admin_write_is_logged() {
    let d = temp_dir();
    write(&d.join("admin.token"), "admin-token-0123456789abcdef\n");
    let s =
        Stack::start(Options { gateway_extra: format!("admin_token_file: {}\n", d.join("admin.token").display()), ..Options::default() });
    let wrong = "Bearer wrong-admin-token-9876543210";
    assert_eq!(request(s.admin, "POST", "/-/reload", &[("Authorization", wrong)], b"").status, 401);
    assert_eq!(request(s.admin, "POST", "/-/reload", &[], b"").status, 401);
    let logs = s.settled_logs();
    let refused: Vec<Value> =
        lines(&logs).into_iter().filter(|l| l["msg"].as_str().is_some_and(|m| m.starts_with("admin refused"))).collect();
    assert_eq!(refused.len(), 2, "{logs}");
    for l in &refused {
        assert_eq!(l["level"], "warn");
        assert_eq!(l["msg"], "admin refused POST /-/reload from 127.0.0.1: 401, no valid admin token");
    }
    assert!(!logs.contains("wrong-admin-token"), "a presented token reached the logs");
}

/// One failed SIGHUP reload: one error line (it was two: the reload's and the signal
/// handler's), and the running configuration stays.
#[test]
fn a_failed_sighup_reload_writes_one_error_line() {
    let s = Stack::start(Options::default());
    write(&s.dir.join("paysign.yaml"), "listen: [this is not a configuration\n");
    assert_eq!(unsafe { libc::kill(s.gateway_pid() as i32, libc::SIGHUP) }, 0);
    assert!(eventually(10, || sample(&s.metrics(), r#"paysign_config_reloads_total{result="failed"}"#) == Some(1.0)));
    let logs = s.settled_logs();
    let errors: Vec<Value> = lines(&logs).into_iter().filter(|l| l["level"] == "error").collect();
    assert_eq!(errors.len(), 1, "{errors:?}");
    assert!(errors[0]["msg"].as_str().unwrap().starts_with("configuration reload refused, the running configuration stays in force: "));
    assert_eq!(s.post_json(MD5_MERCHANT, &bindcard("AFTER-HUP")).status, 200);
}

/// At `info`, a start, a call and a stop show paysign's own lines, none of pingora's
/// lifecycle chatter (written at `debug`).
#[test]
fn pingora_lifecycle_lines_are_debug() {
    let s = Stack::start(Options::default());
    assert_eq!(s.post_json(MD5_MERCHANT, &bindcard("LIFECYCLE-1")).status, 200);
    let logs = s.settled_logs();
    let foreign_info: Vec<Value> = lines(&logs)
        .into_iter()
        .filter(|l| l["level"] == "info" && l["target"].as_str().is_some_and(|t| !t.starts_with("paysign")))
        .collect();
    assert!(foreign_info.is_empty(), "other crates' info lines at info: {foreign_info:?}");
    assert!(logs.contains("merchant 202112090603 profile=md5"), "paysign's own start-up lines stay: {logs}");

    // At debug they are there, as debug.
    let (dir, gateway, _sandbox, proxy, _) = start_at("debug");
    let bearer = format!("Bearer {CALLER_TOKEN}");
    let r = request(
        proxy,
        "POST",
        BINDCARD,
        &[("X-Paysign-Merchant", MD5_MERCHANT), ("Authorization", &bearer)],
        bindcard("LIFECYCLE-2").to_string().as_bytes(),
    );
    assert_eq!(r.status, 200, "{}", r.text());
    let logs = settled_logs(&gateway, proxy);
    let pingora: Vec<Value> = lines(&logs).into_iter().filter(|l| l["target"].as_str().is_some_and(|t| t.starts_with("pingora"))).collect();
    assert!(!pingora.is_empty(), "pingora's lines at debug: {logs}");
    assert!(pingora.iter().all(|l| l["level"] == "debug" || l["level"] == "warn" || l["level"] == "error"), "{pingora:?}");
    drop(dir);
}

const CALLER_TOKEN: &str = "caller-secret-token-5f1e2d3c4b5a69788796a5b4";
const ADMIN_TOKEN: &str = "admin-secret-token-a1b2c3d4e5f60718293a4b5c";
const WRONG_TOKEN: &str = "wrong-secret-token-0f9e8d7c6b5a4938271605f4";

/// The gateway (a caller token, an admin token, both profiles) and the sandbox, both logging at
/// `level`: (dir, gateway, sandbox, proxy port, admin port).
fn start_at(level: &str) -> (PathBuf, Proc, Proc, u16, u16) {
    start_with(level, "")
}

/// [`start_at`] with `extra` YAML in the gateway's configuration.
fn start_with(level: &str, extra: &str) -> (PathBuf, Proc, Proc, u16, u16) {
    let dir = temp_dir();
    let (proxy, admin, sandbox) = (free_port(), free_port(), free_port());
    write(
        &dir.join("sandbox.yaml"),
        &format!(
            "listen: \"127.0.0.1:{sandbox}\"\nplatform_private_key: keys/platform_private.pem\nstall_ms: 1000\nsubmit_url: https://bank.example.test/epcc/bind\nmerchants:\n  - customer_no: \"{MD5_MERCHANT}\"\n    profile: md5\n    md5_key_file: keys/md5.key\n  - customer_no: \"{RSA_MERCHANT}\"\n    profile: rsa\n    merchant_public_key: keys/merchant_public.pem\n"
        ),
    );
    write(&dir.join("admin.token"), &format!("{ADMIN_TOKEN}\n"));
    write(
        &dir.join("paysign.yaml"),
        &format!(
            "listen: 127.0.0.1:{proxy}\nadmin_listen: 127.0.0.1:{admin}\ngrace_period_seconds: 0\nadmin_token_file: admin.token\ncallers:\n  - name: ops\n    token_sha256: {}\n    merchants: [\"*\"]\n    endpoints: [\"*\"]\nplatform:\n  base_url: http://127.0.0.1:{sandbox}\n{extra}merchants:\n  - customer_no: \"{MD5_MERCHANT}\"\n    profile: md5\n    platform_public_key: keys/platform_public.pem\n    md5_key_file: keys/md5.key\n  - customer_no: \"{RSA_MERCHANT}\"\n    profile: rsa\n    platform_public_key: keys/platform_public.pem\n    merchant_private_key: keys/merchant_private.pem\n",
            sha256_hex(CALLER_TOKEN)
        ),
    );
    let spawn_at = |args: &[&str], log: &Path| {
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_paysign"));
        cmd.args(args).env("PAYSIGN_LOG", level);
        spawn_cmd(&mut cmd, log.to_path_buf())
    };
    let sandbox_proc = spawn_at(&["sandbox", "-c", dir.join("sandbox.yaml").to_str().unwrap()], &dir.join("sandbox.log"));
    wait_ready(sandbox, "/healthz");
    let gateway = spawn_at(&["run", "-c", dir.join("paysign.yaml").to_str().unwrap()], &dir.join("gateway.log"));
    wait_ready(admin, "/readyz");
    (dir, gateway, sandbox_proc, proxy, admin)
}

/// No level logs a token, a key or personal data: at each of the five levels, a call with a
/// caller token and every personal field (both profiles) and the notification that follows
/// it, an admin reload with the admin token and one with a wrong token; neither process's log
/// has any of those strings, the MD5 key, the private key, an answer's or a notification's
/// `sign`, the inbox key (notifications go through the inbox).
#[test]
fn no_level_logs_a_secret() {
    let personal = bindcard("SECRETS-0");
    let mut secrets: Vec<String> = vec![CALLER_TOKEN.into(), ADMIN_TOKEN.into(), WRONG_TOKEN.into(), MD5_KEY.into()];
    for f in ["certNo", "mobile", "bankCardName", "identifyId"] {
        secrets.push(personal[f].as_str().unwrap().to_string());
    }
    let key = std::fs::read_to_string(fixtures().join("keys/merchant_private.pem")).unwrap();
    secrets.push(key.lines().nth(1).unwrap().to_string());
    let target = common::http_server::start(std::sync::Arc::new(|_r| (200, "text/plain".into(), b"ok".to_vec())));
    // The notifications go through the inbox (stored sealed, then delivered): its key is a secret.
    let inbox_key = "5e".repeat(32);
    secrets.push(inbox_key.clone());
    for level in ["error", "warn", "info", "debug", "trace"] {
        let notify_port = free_port();
        let key_dir = temp_dir();
        write_secret(&key_dir.join("inbox.key"), &inbox_key);
        let extra = format!(
            "notify:\n  listen: 127.0.0.1:{notify_port}\n  routes:\n    - path: /notify/bindcard\n      target: http://127.0.0.1:{}/internal\n  inbox:\n    sqlite_path: {}/inbox.sqlite\n    key_file: {}/inbox.key\n",
            target.port,
            key_dir.display(),
            key_dir.display()
        );
        let (dir, gateway, sandbox, proxy, admin) = start_with(level, &extra);
        wait_listening(notify_port);
        let bearer = format!("Bearer {CALLER_TOKEN}");
        let mut signs = Vec::new();
        for (i, merchant) in [MD5_MERCHANT, RSA_MERCHANT].iter().enumerate() {
            let mut b = personal.clone();
            b["orderNo"] = Value::String(format!("SECRETS-{level}-{i}"));
            // The sandbox notifies the gateway, which hands the verified plaintext (with its
            // `sign`) to the target.
            b["bindNotifyUrl"] = Value::String(format!("http://127.0.0.1:{notify_port}/notify/bindcard"));
            let r = request(
                proxy,
                "POST",
                BINDCARD,
                &[("Content-Type", "application/json"), ("X-Paysign-Merchant", merchant), ("Authorization", &bearer)],
                b.to_string().as_bytes(),
            );
            assert_eq!(r.status, 200, "{level}: {}", r.text());
            signs.push(r.json()["sign"].as_str().unwrap().to_string());
            let notified = target.requests.recv_timeout(std::time::Duration::from_secs(15)).expect("no notification forwarded");
            let notified: Value = serde_json::from_slice(&notified.body).unwrap();
            signs.push(notified["sign"].as_str().unwrap().to_string());
        }
        // Refused with a wrong token, and a platform failure's answer, then a good reload.
        let r = request(
            proxy,
            "POST",
            BINDCARD,
            &[("X-Paysign-Merchant", MD5_MERCHANT), ("Authorization", &format!("Bearer {WRONG_TOKEN}"))],
            b"{}",
        );
        assert_eq!(r.status, 401);
        assert_eq!(request(admin, "POST", "/-/reload", &[("Authorization", &format!("Bearer {WRONG_TOKEN}"))], b"").status, 401);
        let r = request(admin, "POST", "/-/reload", &[("Authorization", &format!("Bearer {ADMIN_TOKEN}"))], b"");
        assert_eq!(r.status, 200, "{level}: {}", r.text());
        // Every line logged so far is written (the marker's access line exists at info and below;
        // at error and warn there is no access line: wait for the reload's effect instead).
        if matches!(level, "info" | "debug" | "trace") {
            settled_logs(&gateway, proxy);
        } else {
            assert_eq!(request(admin, "GET", "/metrics", &[], b"").status, 200);
        }
        // SIGTERM: at exit whatever waits is written first.
        let mut gateway = gateway;
        assert_eq!(unsafe { libc::kill(gateway.pid() as i32, libc::SIGTERM) }, 0);
        assert!(eventually(20, || !gateway.is_running()), "{level}: the gateway did not stop");
        let logs = format!("{}\n{}", std::fs::read_to_string(dir.join("gateway.log")).unwrap(), sandbox.logs());
        for secret in secrets.iter().chain(&signs) {
            assert!(!logs.contains(secret.as_str()), "PAYSIGN_LOG={level}: {secret} is in the logs");
        }
        if level == "trace" {
            assert!(lines(&logs).len() > 20, "trace wrote lines: {logs}");
        }
    }
}

/// `PAYSIGN_LOG` takes the five levels only: anything else is refused before anything runs.
#[test]
fn an_unknown_log_level_is_refused() {
    let (code, out, err) = run_paysign(&["check", "-c", "conf/paysign.yaml"], &[("PAYSIGN_LOG", "verbose")], "");
    assert_eq!(code, 1, "{out}{err}");
    assert_eq!(err, "paysign: PAYSIGN_LOG=\"verbose\" is not a log level: use one of error, warn, info, debug, trace\n");
    assert_eq!(out, "");
    for ok in ["ERROR", "warn", "Info", "debug", "trace", ""] {
        let (code, _, err) = run_paysign(&["check", "-c", "does-not-exist.yaml"], &[("PAYSIGN_LOG", ok)], "");
        assert!(!err.contains("is not a log level"), "{ok}: {err}");
        assert_ne!(code, -1);
    }
}

/// The README's demo call (its `bindNotifyUrl` is on `merchant.example`, a reserved name)
/// makes the sandbox log no warning: it does not try a name that cannot be a receiver.
#[test]
fn the_demo_call_makes_the_sandbox_warn_of_nothing() {
    let s = Stack::start(Options::default());
    let demo = serde_json::json!({
        "orderNo":"2022090700001","userType":"EMAIL","identifyId":"xxxx@email.com",
        "bankCardType":"CREDIT","bankCode":"ICBC","bankCardName":"张三","certType":"ID",
        "certNo":"110123199001011234","mobile":"18812345678","expiredTime":"2030-01-01 12:05:01",
        "bindNotifyUrl":"http://merchant.example/notify","pageReturnUrl":"http://merchant.example/return"
    });
    let r = s.post_json(MD5_MERCHANT, &demo);
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(r.json()["errCode"], "0000");
    let sandbox = s.sandbox.as_ref().unwrap();
    assert!(eventually(10, || sandbox.logs().contains("2022090700001")), "{}", sandbox.logs());
    let logged = lines(&sandbox.logs());
    let warnings: Vec<&Value> = logged.iter().filter(|l| l["level"] == "warn" || l["level"] == "error").collect();
    assert!(warnings.is_empty(), "{warnings:?}");
    let skipped: Vec<&Value> = logged.iter().filter(|l| l["msg"].as_str().is_some_and(|m| m.contains("2022090700001"))).collect();
    assert_eq!(skipped.len(), 1, "{logged:?}");
    assert_eq!(skipped[0]["level"], "info");
    assert_eq!(
        skipped[0]["msg"],
        "sandbox does not notify order 2022090700001: merchant.example is a reserved documentation name (RFC 2606), not a receiver"
    );
    assert_eq!(s.sandbox_stats()["notifications_sent"], 0);
}

/// Two `Paysign` instances in one process (an embedder with two gateways), each with its own
/// registry and configuration: each counts only its own calls and reloads. With process-wide
/// metrics, loading B erased A's merchant from A's registry, B's refusals showed up in A's,
/// and reloading A bumped B's `paysign_config_generation`.
#[test]
fn two_instances_in_one_process_count_only_their_own() {
    use paysign_plugin::Paysign;
    use prometheus::Registry;

    let dir = temp_dir();
    let config = |merchant: &str, profile_keys: &str, caller: &str, token: &str| {
        format!(
            "platform:\n  base_url: http://127.0.0.1:9\ncallers:\n  - name: {caller}\n    token_sha256: {}\n    merchants: [\"{merchant}\"]\n    endpoints: [\"{BINDCARD}\"]\nmerchants:\n  - customer_no: \"{merchant}\"\n    platform_public_key: keys/platform_public.pem\n{profile_keys}",
            sha256_hex(token)
        )
    };
    let (a_file, b_file) = (dir.join("a.yaml"), dir.join("b.yaml"));
    write(&a_file, &config(MD5_MERCHANT, "    profile: md5\n    md5_key_file: keys/md5.key\n", "shop_a", "token-a-0123456789abcdef"));
    write(
        &b_file,
        &config(
            RSA_MERCHANT,
            "    profile: rsa\n    merchant_private_key: keys/merchant_private.pem\n",
            "shop_b",
            "token-b-0123456789abcdef",
        ),
    );
    let (ra, rb) = (Registry::new(), Registry::new());
    let a = Paysign::from_file(&a_file, &ra).unwrap();
    let b = Paysign::from_file(&b_file, &rb).unwrap();
    let value = |r: &Registry, series: &str| sample(&metrics::render(r), series);

    // Loading B left A's merchant in A's registry.
    let merchants = |r: &Registry| {
        (value(r, r#"paysign_merchants_configured{profile="md5"}"#), value(r, r#"paysign_merchants_configured{profile="rsa"}"#))
    };
    assert_eq!(merchants(&ra), (Some(1.0), Some(0.0)));
    assert_eq!(merchants(&rb), (Some(0.0), Some(1.0)));

    let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
    rt.block_on(async {
        async fn refused(p: &Paysign, token: Option<&str>, merchant: &str, path: &str) -> u16 {
            p.call_as(token, Some(merchant), path, bindcard("TWO-1"), "two-1").await.unwrap_err().status()
        }
        // A: a call without a token, and one with a token A does not know (B's).
        assert_eq!(refused(&a, None, MD5_MERCHANT, BINDCARD).await, 401);
        assert_eq!(refused(&a, Some("token-b-0123456789abcdef"), MD5_MERCHANT, BINDCARD).await, 401);
        // B: a call without a token, and its own caller on an endpoint it was not granted.
        assert_eq!(refused(&b, None, RSA_MERCHANT, BINDCARD).await, 401);
        assert_eq!(refused(&b, Some("token-b-0123456789abcdef"), RSA_MERCHANT, "/api/other/endpoint").await, 403);
    });
    let refusals = |r: &Registry, caller: &str, reason: &str| {
        value(r, &format!(r#"paysign_caller_refusals_total{{caller="{caller}",reason="{reason}"}}"#))
    };
    assert_eq!(
        (refusals(&ra, "anonymous", "missing"), refusals(&ra, "anonymous", "unknown_token"), refusals(&ra, "shop_b", "forbidden")),
        (Some(1.0), Some(1.0), None)
    );
    assert_eq!(
        (refusals(&rb, "anonymous", "missing"), refusals(&rb, "anonymous", "unknown_token"), refusals(&rb, "shop_b", "forbidden")),
        (Some(1.0), Some(0.0), Some(1.0))
    );

    // Reloading A: A's generation and reload count move, B's do not.
    a.live().reload().unwrap();
    let reloads = |r: &Registry| (value(r, "paysign_config_generation"), value(r, r#"paysign_config_reloads_total{result="ok"}"#));
    assert_eq!(reloads(&ra), (Some(2.0), Some(1.0)));
    assert_eq!(reloads(&rb), (Some(1.0), Some(0.0)));
    assert_eq!(merchants(&ra), (Some(1.0), Some(0.0)), "A's reload keeps A's merchants");
    assert_eq!(merchants(&rb), (Some(0.0), Some(1.0)), "and leaves B's alone");
}
