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
