//! Key rotation and configuration reload under continuous load, with real processes: the
//! sandbox accepts the retiring keys during the overlap (SIGHUP), the gateway switches
//! (POST /-/reload, then SIGHUP), and not one request fails. A broken configuration is refused
//! and the running one stays in force.

mod common;

use std::process::Command;

use common::*;

fn hup(pid: u32) {
    assert!(Command::new("kill").args(["-HUP", &pid.to_string()]).status().unwrap().success());
}

fn sandbox_yaml(s: &Stack, md5: &str, rsa_public: &str, previous: bool) -> String {
    let prev_md5 = if previous { "    previous_md5_key_file: keys/md5.key\n" } else { "" };
    let prev_rsa = if previous { "    previous_merchant_public_key: keys/merchant_public.pem\n" } else { "" };
    format!(
        "listen: 127.0.0.1:{}\nplatform_private_key: keys/platform_private.pem\nmerchants:\n  - customer_no: \"{MD5_MERCHANT}\"\n    profile: md5\n    md5_key_file: {md5}\n{prev_md5}  - customer_no: \"{RSA_MERCHANT}\"\n    profile: rsa\n    merchant_public_key: {rsa_public}\n{prev_rsa}",
        s.sandbox_port
    )
}

fn gateway_yaml(s: &Stack, md5: Option<&str>, rsa_private: &str, listen: Option<u16>) -> String {
    let md5_merchant = md5.map_or(String::new(), |k| {
        format!("  - customer_no: \"{MD5_MERCHANT}\"\n    profile: md5\n    platform_public_key: keys/platform_public.pem\n    md5_key_file: {k}\n")
    });
    format!(
        "listen: 127.0.0.1:{}\nadmin_listen: 127.0.0.1:{}\ngrace_period_seconds: 0\nplatform:\n  base_url: http://127.0.0.1:{}\nmerchants:\n{md5_merchant}  - customer_no: \"{RSA_MERCHANT}\"\n    profile: rsa\n    platform_public_key: keys/platform_public.pem\n    merchant_private_key: {rsa_private}\n",
        listen.unwrap_or(s.proxy),
        s.admin,
        s.sandbox_port
    )
}

fn reload(s: &Stack) -> Response {
    request(s.admin, "POST", "/-/reload", &[], b"")
}

#[test]
fn keys_rotate_under_load_without_a_single_failed_request() {
    let s = Stack::start(Options::default());
    let sandbox_pid = s.sandbox.as_ref().unwrap().pid();
    // New keys: a new MD5 key, and a new RSA key pair for the rsa merchant (TEST-ONLY keys).
    write(&s.dir.join("keys/md5-new.key"), "rotated-md5-key-0002\n");
    std::fs::copy(s.dir.join("keys/platform_private.pem"), s.dir.join("keys/merchant2_private.pem")).unwrap();
    std::fs::copy(s.dir.join("keys/platform_public.pem"), s.dir.join("keys/merchant2_public.pem")).unwrap();

    let load = Load::start(s.proxy, "ROT", &[MD5_MERCHANT, RSA_MERCHANT]);
    let progressed = |by: usize| load.progress(by);
    progressed(10);

    // 1. The platform accepts old and new keys (and answers each request in its own keys).
    write(&s.dir.join("sandbox.yaml"), &sandbox_yaml(&s, "keys/md5-new.key", "keys/merchant2_public.pem", true));
    hup(sandbox_pid);
    assert!(eventually(20, || s.sandbox_stats()["generation"] == 2));
    progressed(10);
    let old_keys_before = s.sandbox_stats()["opened_with_previous_keys"].as_u64().unwrap();
    assert!(old_keys_before > 0, "requests still use the old keys during the overlap");

    // 2. The gateway switches to the new keys.
    write(&s.dir.join("paysign.yaml"), &gateway_yaml(&s, Some("keys/md5-new.key"), "keys/merchant2_private.pem", None));
    let r = reload(&s);
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(r.json(), serde_json::json!({"result": "ok", "generation": 2}));
    progressed(2);
    let old_keys_after = s.sandbox_stats()["opened_with_previous_keys"].as_u64().unwrap();
    progressed(20);
    assert_eq!(s.sandbox_stats()["opened_with_previous_keys"].as_u64().unwrap(), old_keys_after, "new requests must use the new keys");

    // 3. The platform retires the old keys.
    write(&s.dir.join("sandbox.yaml"), &sandbox_yaml(&s, "keys/md5-new.key", "keys/merchant2_public.pem", false));
    hup(sandbox_pid);
    assert!(eventually(20, || s.sandbox_stats()["generation"] == 3));
    progressed(20);

    let (done, failures) = load.finish();
    assert!(failures.is_empty(), "{} failed requests: {:?}", failures.len(), &failures[..failures.len().min(5)]);
    assert!(done >= 62, "the load ran through every step");
    let m = s.metrics();
    assert_eq!(sample(&m, r#"paysign_config_reloads_total{result="ok"}"#), Some(1.0));
    assert_eq!(sample(&m, "paysign_config_generation"), Some(2.0));
    let logs = s.settled_logs();
    assert!(logs.contains("configuration reloaded from"), "{logs}");
    assert!(!logs.contains("rotated-md5-key-0002"), "the MD5 key was logged");
}

#[test]
fn broken_or_listener_changing_reloads_are_refused_and_merchants_come_and_go() {
    let s = Stack::start(Options::default());
    let ok = |merchant: &str, order: &str| s.post_json(merchant, &bindcard(order)).status;
    assert_eq!(ok(MD5_MERCHANT, "B-1"), 200);

    // A missing key file: refused, named, and the running configuration stays.
    let good = std::fs::read_to_string(s.dir.join("paysign.yaml")).unwrap();
    write(&s.dir.join("paysign.yaml"), &good.replace("keys/merchant_private.pem", "keys/nope.pem"));
    let r = reload(&s);
    assert_eq!(r.status, 500);
    let v = r.json();
    assert_eq!(v["result"], "failed");
    assert!(
        v["error"].as_str().unwrap().contains("merchants[1].merchant_private_key") && v["error"].as_str().unwrap().contains("nope.pem"),
        "{v}"
    );
    assert_eq!(ok(RSA_MERCHANT, "B-2"), 200);

    // Not YAML at all.
    write(&s.dir.join("paysign.yaml"), "listen: [unclosed\n");
    assert_eq!(reload(&s).status, 500);
    // A different listener needs a restart.
    write(&s.dir.join("paysign.yaml"), &gateway_yaml(&s, Some("keys/md5.key"), "keys/merchant_private.pem", Some(free_port())));
    let r = reload(&s);
    assert_eq!(r.status, 500);
    assert!(r.json()["error"].as_str().unwrap().contains("cannot change on reload"), "{}", r.text());
    assert_eq!(ok(MD5_MERCHANT, "B-3"), 200);

    // Remove the md5 merchant (by SIGHUP this time): it becomes unknown, the other works.
    write(&s.dir.join("paysign.yaml"), &gateway_yaml(&s, None, "keys/merchant_private.pem", None));
    hup(s.gateway_pid());
    assert!(eventually(20, || sample(&s.metrics(), "paysign_config_generation") == Some(2.0)));
    let r = s.post_json(MD5_MERCHANT, &bindcard("B-4"));
    assert_eq!(r.status, 400);
    assert_eq!(r.json()["errCode"], "2001");
    // With one merchant left, it is the default.
    assert_eq!(s.post(BINDCARD, None, bindcard("B-5").to_string().as_bytes()).status, 200);
    // And add it back.
    write(&s.dir.join("paysign.yaml"), &gateway_yaml(&s, Some("keys/md5.key"), "keys/merchant_private.pem", None));
    assert_eq!(reload(&s).status, 200);
    assert_eq!(ok(MD5_MERCHANT, "B-6"), 200);

    let m = s.metrics();
    assert_eq!(sample(&m, r#"paysign_config_reloads_total{result="failed"}"#), Some(3.0));
    assert_eq!(sample(&m, r#"paysign_config_reloads_total{result="ok"}"#), Some(2.0));
    assert_eq!(sample(&m, r#"paysign_merchants_configured{profile="md5"}"#), Some(1.0));
    assert!(s.settled_logs().contains("configuration reload refused"));
}

/// A request whose connection comes from `source` (e.g. 127.0.0.6, where a sidecar's traffic
/// comes from): (status, body).
fn request_from(source: std::net::Ipv4Addr, port: u16, method: &str, path: &str, headers: &str) -> (u16, String) {
    use std::io::{Read, Write};
    use std::os::fd::FromRawFd;
    let addr = |ip: std::net::Ipv4Addr, port: u16| libc::sockaddr_in {
        sin_family: libc::AF_INET as libc::sa_family_t,
        sin_port: port.to_be(),
        sin_addr: libc::in_addr { s_addr: u32::from(ip).to_be() },
        sin_zero: [0; 8],
    };
    let (src, dst) = (addr(source, 0), addr(std::net::Ipv4Addr::LOCALHOST, port));
    let len = std::mem::size_of::<libc::sockaddr_in>() as libc::socklen_t;
    // SAFETY: a fresh socket, bound and connected with valid sockaddr_in values, then owned by
    // the TcpStream.
    let mut s = unsafe {
        let fd = libc::socket(libc::AF_INET, libc::SOCK_STREAM | libc::SOCK_CLOEXEC, 0);
        assert!(fd >= 0);
        assert_eq!(libc::bind(fd, &src as *const libc::sockaddr_in as *const libc::sockaddr, len), 0);
        assert_eq!(libc::connect(fd, &dst as *const libc::sockaddr_in as *const libc::sockaddr, len), 0);
        std::net::TcpStream::from_raw_fd(fd)
    };
    write!(s, "{method} {path} HTTP/1.1\r\nHost: admin\r\nConnection: close\r\nContent-Length: 0\r\n{headers}\r\n").unwrap();
    let mut raw = String::new();
    s.read_to_string(&mut raw).unwrap();
    let status = raw.split(' ').nth(1).and_then(|s| s.parse().ok()).unwrap();
    (status, raw.split_once("\r\n\r\n").map(|(_, b)| b.to_string()).unwrap_or_default())
}

#[test]
fn a_reload_names_what_needs_a_restart_and_get_config_shows_what_is_in_force() {
    let s = Stack::start(Options::default());
    let config = || request(s.admin, "GET", "/config", &[], b"");
    let r = config();
    assert_eq!(r.status, 200, "{}", r.text());
    let v = r.json();
    assert_eq!(
        (v["generation"].as_u64(), v["config"]["threads"].as_u64(), v["config"]["max_in_flight"].as_u64()),
        (Some(1), Some(2), Some(256))
    );
    assert_eq!(v["config"]["listen"], format!("127.0.0.1:{}", s.proxy));
    assert_eq!(v["config"]["merchants"][0]["md5_key"], "(set)");
    assert_eq!(v["config"]["merchants"][1]["merchant_private_key"], "rsa-2048 (aws-lc)");
    assert_eq!(v["needs_restart"], serde_json::json!([]));

    // threads and max_in_flight change: the rest is applied, those two named, not applied.
    let path = s.dir.join("paysign.yaml");
    let good = std::fs::read_to_string(&path).unwrap();
    write(&path, &format!("threads: 3\nmax_in_flight: 8\n{}", good.replace("read_timeout_ms: 10000", "read_timeout_ms: 9000")));
    let r = reload(&s);
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(r.json(), serde_json::json!({"result": "ok", "generation": 2, "needs_restart": ["threads", "max_in_flight"]}));
    let v = config().json();
    assert_eq!(
        (v["generation"].as_u64(), v["config"]["threads"].as_u64(), v["config"]["max_in_flight"].as_u64()),
        (Some(2), Some(2), Some(256))
    );
    assert_eq!(v["config"]["platform"]["read_timeout_ms"].as_u64(), Some(9000));
    assert_eq!(v["needs_restart"], serde_json::json!(["threads", "max_in_flight"]));
    let text = config().text();
    for secret in [MD5_KEY, "BEGIN", "token_sha256"] {
        assert!(!text.contains(secret), "GET /config shows {secret}: {text}");
    }
    assert_eq!(s.post_json(MD5_MERCHANT, &bindcard("CFG-1")).status, 200);

    // A listener change: refused, naming the file and the setting.
    let moved = free_port();
    write(&path, &good.replace(&format!("listen: 127.0.0.1:{}\n", s.proxy), &format!("listen: 127.0.0.1:{moved}\n")));
    let r = reload(&s);
    assert_eq!(r.status, 500);
    assert_eq!(
        r.json()["error"],
        format!(
            "{}: listen: cannot change on reload (127.0.0.1:{} in force, 127.0.0.1:{moved} in the file); restart (or upgrade) instead",
            path.display(),
            s.proxy
        )
    );
    // Every problem of the file, not only the first.
    write(&path, &good.replace("keys/md5.key", "keys/gone.key").replace("keys/merchant_private.pem", "keys/gone.pem"));
    let r = reload(&s);
    assert_eq!(r.status, 500);
    let (p, gone) = (path.display(), |f: &str| s.dir.join("keys").join(f).display().to_string());
    assert_eq!(
        r.json()["error"],
        format!(
            "{p}: merchants[0].md5_key_file ({}): cannot read file: No such file or directory (os error 2); {p}: merchants[1].merchant_private_key ({}): cannot read file: No such file or directory (os error 2)",
            gone("gone.key"),
            gone("gone.pem")
        )
    );
    let logs = s.settled_logs();
    assert!(
        logs.contains(&format!(
            "configuration reloaded from {}: generation 2; needs a restart: threads, max_in_flight (the running values stay in force)",
            path.display()
        )),
        "{logs}"
    );
}

/// `max_header_bytes` is read once at start (the listeners' limits): a reload that changes it
/// names it and keeps the running bound, instead of saying "reloaded" and not applying it.
#[test]
fn a_reload_that_changes_max_header_bytes_names_it_and_keeps_the_running_bound() {
    let s = Stack::start(Options::default());
    let config = || request(s.admin, "GET", "/config", &[], b"").json();
    let path = s.dir.join("paysign.yaml");
    let good = std::fs::read_to_string(&path).unwrap();
    write(&path, &format!("max_header_bytes: 2048\n{good}"));
    let r = reload(&s);
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(r.json(), serde_json::json!({"result": "ok", "generation": 2, "needs_restart": ["max_header_bytes"]}));
    let v = config();
    assert_eq!(
        (v["config"]["max_header_bytes"].as_u64(), v["needs_restart"].clone()),
        (Some(8192), serde_json::json!(["max_header_bytes"]))
    );
    // The running bound (8 KiB) still holds: a 4 KiB head is answered, not refused with 431.
    let big = "a".repeat(4096);
    let headers = [("x-paysign-merchant", MD5_MERCHANT), ("x-padding", big.as_str())];
    let r = request(s.proxy, "POST", BINDCARD, &headers, bindcard("MHB-1").to_string().as_bytes());
    assert_eq!(r.status, 200, "{}", r.text());
}

#[test]
fn without_a_token_the_admin_accepts_127_0_0_1_only_and_with_one_it_needs_it() {
    let s = Stack::start(Options::default());
    let sidecar: std::net::Ipv4Addr = "127.0.0.6".parse().unwrap();
    let local = std::net::Ipv4Addr::LOCALHOST;
    let refused =
        r#"{"result":"refused","error":"without admin_token_file, reloads and GET /config are accepted from 127.0.0.1 and ::1 only"}"#;
    assert_eq!(request_from(sidecar, s.admin, "POST", "/-/reload", ""), (403, refused.to_string()));
    assert_eq!(request_from(sidecar, s.admin, "GET", "/config", ""), (403, refused.to_string()));
    assert_eq!(request_from(local, s.admin, "POST", "/-/reload", "").0, 200);
    assert_eq!(request_from(local, s.admin, "GET", "/config", "").0, 200);
    assert_eq!(sample(&s.metrics(), r#"paysign_caller_refusals_total{caller="admin",reason="not_loopback"}"#), Some(2.0));
    // The log names the rule (127.0.0.6 is a loopback address, but not one the rule accepts).
    let logs = s.settled_logs();
    assert!(
        logs.contains("admin refused POST /-/reload from 127.0.0.6: 403, not from 127.0.0.1 or ::1 and no admin_token_file is configured"),
        "{logs}"
    );

    // With a token: needed from everywhere, loopback included.
    let keys = temp_dir();
    let token = "admin-token-0123456789abcdef";
    write_secret(&keys.join("admin_token"), &format!("{token}\n"));
    let t = Stack::start(Options {
        gateway_extra: format!("admin_token_file: {}\n", keys.join("admin_token").display()),
        ..Options::default()
    });
    assert_eq!(request_from(local, t.admin, "GET", "/config", "").0, 401);
    let bearer = format!("Authorization: Bearer {token}\r\n");
    let (status, body) = request_from(sidecar, t.admin, "GET", "/config", &bearer);
    assert_eq!(status, 200, "{body}");
    assert!(body.contains(r#""admin_token":"(set)""#) && !body.contains(token), "{body}");
}
