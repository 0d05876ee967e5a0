//! The platform rotates its own key pair (issue: key custody). The gateway is told the
//! announced next key; the sandbox switches its key pair under continuous load; the gateway
//! then seals with the next key and finally drops the old one — and not one request fails, for
//! both profiles. Afterwards an answer under the old key is refused. A metric tells which key
//! verified each answer.

mod common;

use std::process::Command;

use common::*;

fn hup(pid: u32) {
    assert!(Command::new("kill").args(["-HUP", &pid.to_string()]).status().unwrap().success());
}

/// The sandbox with platform key pair `key` (`platform` or `platform_next`), optionally still
/// accepting requests sealed for `previous`.
fn sandbox_yaml(s: &Stack, key: &str, previous: Option<&str>) -> String {
    let previous = previous.map_or(String::new(), |p| format!("previous_platform_private_key: keys/{p}_private.pem\n"));
    format!(
        "listen: 127.0.0.1:{}\nplatform_private_key: keys/{key}_private.pem\n{previous}merchants:\n  - customer_no: \"{MD5_MERCHANT}\"\n    profile: md5\n    md5_key_file: keys/md5.key\n  - customer_no: \"{RSA_MERCHANT}\"\n    profile: rsa\n    merchant_public_key: keys/merchant_public.pem\n",
        s.sandbox_port
    )
}

/// The notification listener's part of the gateway's configuration (the same in every
/// reload: listeners need a restart): notifications go to the sandbox's stand-in inbox.
fn notify_yaml(notify_port: u16, sandbox_port: u16) -> String {
    format!("notify:\n  listen: 127.0.0.1:{notify_port}\n  routes:\n    - path: /notify/bindcard\n      target: http://127.0.0.1:{sandbox_port}/__sandbox/inbox\n")
}

/// The gateway with platform key `current`, optionally the announced `next` and which seals.
fn gateway_yaml(s: &Stack, notify_port: u16, current: &str, next: Option<&str>, seal_with: &str) -> String {
    let rollover =
        next.map_or(String::new(), |n| format!("    next_platform_public_key: keys/{n}_public.pem\n    seal_with: {seal_with}\n"));
    format!(
        "listen: 127.0.0.1:{}\nadmin_listen: 127.0.0.1:{}\ngrace_period_seconds: 0\nplatform:\n  base_url: http://127.0.0.1:{}\n{}merchants:\n  - customer_no: \"{MD5_MERCHANT}\"\n    profile: md5\n    platform_public_key: keys/{current}_public.pem\n    md5_key_file: keys/md5.key\n{rollover}  - customer_no: \"{RSA_MERCHANT}\"\n    profile: rsa\n    platform_public_key: keys/{current}_public.pem\n    merchant_private_key: keys/merchant_private.pem\n{rollover}",
        s.proxy,
        s.admin,
        s.sandbox_port,
        notify_yaml(notify_port, s.sandbox_port)
    )
}

/// The sandbox sends a notification (sealed with its current key pair) to the gateway's
/// listener: `true` when it was verified, handed on and acknowledged.
fn notified(s: &Stack, notify_port: u16, merchant: &str, order: &str) -> bool {
    let req =
        serde_json::json!({"customerNo": merchant, "orderNo": order, "url": format!("http://127.0.0.1:{notify_port}/notify/bindcard")});
    let r = request(s.sandbox_port, "POST", "/__sandbox/notify", &[], req.to_string().as_bytes()).json();
    r["status"] == 200 && r["body"] == "SUCCESS"
}

fn reload_gateway(s: &Stack, yaml: &str, generation: u64) {
    write(&s.dir.join("paysign.yaml"), yaml);
    let r = request(s.admin, "POST", "/-/reload", &[], b"");
    assert_eq!(r.json(), serde_json::json!({"result": "ok", "generation": generation}), "{}", r.text());
}

fn reload_sandbox(s: &Stack, yaml: &str, generation: u64) {
    write(&s.dir.join("sandbox.yaml"), yaml);
    hup(s.sandbox.as_ref().unwrap().pid());
    assert!(eventually(20, || s.sandbox_stats()["generation"] == generation));
}

fn verified_by(s: &Stack, merchant: &str, key: &str) -> f64 {
    sample(&s.metrics(), &format!(r#"paysign_platform_key_verified_total{{key="{key}",merchant="{merchant}"}}"#)).unwrap_or(0.0)
}

#[test]
fn the_platform_rotates_its_key_under_load_without_a_failed_request() {
    let np = free_port();
    let s = Stack::start(Options { gateway_extra: notify_yaml(np, 9), ..Options::default() });
    wait_listening(np);
    let merchants = [MD5_MERCHANT, RSA_MERCHANT];
    let load = Load::start(s.proxy, "ROLL", &[MD5_MERCHANT, RSA_MERCHANT]);
    load.progress(10);

    // 1. The platform announces its next key: the gateway accepts answers under either.
    reload_gateway(&s, &gateway_yaml(&s, np, "platform", Some("platform_next"), "current"), 2);
    load.progress(10);
    for m in merchants {
        assert!(verified_by(&s, m, "current") > 0.0);
        assert_eq!(verified_by(&s, m, "next"), 0.0);
    }

    // 2. The platform switches its key pair, still opening requests sealed for the old one.
    reload_sandbox(&s, &sandbox_yaml(&s, "platform_next", Some("platform")), 2);
    load.progress(10);
    let next_before: Vec<f64> = merchants.iter().map(|m| verified_by(&s, m, "next")).collect();
    assert!(next_before.iter().all(|n| *n > 0.0), "answers under the next key verified: {next_before:?}");
    // Notifications, sealed by the platform with its next key now, verify too.
    for m in merchants {
        assert!(notified(&s, np, m, &format!("ROLL-N-{m}")), "{m}: a notification under the next key");
    }

    // 3. The gateway seals with the next key (switched by configuration, never by guessing).
    reload_gateway(&s, &gateway_yaml(&s, np, "platform", Some("platform_next"), "next"), 3);
    load.progress(10);

    // 4. The old key is removed: the next key becomes the current one.
    reload_gateway(&s, &gateway_yaml(&s, np, "platform_next", None, "current"), 4);
    load.progress(10);
    reload_sandbox(&s, &sandbox_yaml(&s, "platform_next", None), 3);
    load.progress(10);
    for m in merchants {
        let current = verified_by(&s, m, "current");
        load.progress(4);
        assert!(verified_by(&s, m, "current") > current, "{m}: answers now verify under the (new) current key");
    }

    let (calls, failures) = load.finish();
    assert!(calls >= 70, "{calls}");
    assert!(
        failures.is_empty(),
        "{} of {calls} calls failed during the rollover: {:?}",
        failures.len(),
        &failures[..failures.len().min(5)]
    );

    // 5. An answer under the removed key is refused like any forgery (the platform acted).
    reload_sandbox(&s, &sandbox_yaml(&s, "platform", Some("platform_next")), 4);
    for m in merchants {
        let r = s.post_json(m, &bindcard(&format!("OLD-KEY-{m}")));
        assert_eq!(r.status, 502, "{m}: {}", r.text());
        assert_eq!(r.header("X-Paysign-Delivery"), Some("sent"));
        assert_eq!(r.json()["errMessage"], "the platform's answer could not be verified; it was discarded");
        assert!(!notified(&s, np, m, &format!("OLD-KEY-N-{m}")), "{m}: a notification under the removed key is refused");
    }
}

#[test]
fn seal_with_next_needs_the_next_key() {
    let dir = temp_dir();
    let yaml = "platform:\n  base_url: http://127.0.0.1:9\nmerchants:\n  - customer_no: \"202112090603\"\n    profile: md5\n    platform_public_key: keys/platform_public.pem\n    md5_key_file: keys/md5.key\n    seal_with: next\n";
    let err = paysign_plugin::config::load_str_offline(yaml, &dir.join("paysign.yaml")).unwrap_err();
    assert_eq!((err.setting.as_str(), err.message.as_str()), ("merchants[0].seal_with", "next needs next_platform_public_key"));
}
