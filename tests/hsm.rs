//! Merchant private keys in a PKCS#11 token, for real: SoftHSM2 (installed by `scripts/setup`
//! for the tests) holds the rsa merchant's key; the gateway signs and decrypts through it for
//! the round trip, the duplicate order and every tamper case, and so do `paysign seal/open`.
//! The token going away fails requests with the right delivery state, and it comes back
//! without a restart.

mod common;

use std::path::{Path, PathBuf};
use std::process::Command;

use common::*;
use serde_json::Value;

const PIN: &str = "4321";

fn module() -> PathBuf {
    [
        "/usr/lib/softhsm/libsofthsm2.so",
        "/usr/lib/x86_64-linux-gnu/softhsm/libsofthsm2.so",
        "/usr/lib/aarch64-linux-gnu/softhsm/libsofthsm2.so",
    ]
    .iter()
    .map(PathBuf::from)
    .find(|p| p.exists())
    .expect("SoftHSM2 is installed (scripts/setup test installs softhsm2)")
}

fn softhsm(conf: &Path, args: &[&str]) {
    let out = Command::new("softhsm2-util").args(args).env("SOFTHSM2_CONF", conf).output().expect("softhsm2-util");
    assert!(out.status.success(), "softhsm2-util {args:?}: {}", String::from_utf8_lossy(&out.stderr));
}

/// A fresh token `paysign` holding the rsa merchant's key as object `merchant`.
fn token(dir: &Path) -> PathBuf {
    let conf = dir.join("softhsm2.conf");
    std::fs::create_dir_all(dir.join("tokens")).unwrap();
    write(&conf, &format!("directories.tokendir = {}\nobjectstore.backend = file\nlog.level = ERROR\n", dir.join("tokens").display()));
    init_token(dir, &conf);
    conf
}

fn init_token(dir: &Path, conf: &Path) {
    softhsm(conf, &["--init-token", "--free", "--label", "paysign", "--pin", PIN, "--so-pin", "8765"]);
    let key = dir.join("keys/merchant_private.pem");
    softhsm(conf, &["--import", key.to_str().unwrap(), "--token", "paysign", "--label", "merchant", "--id", "01", "--pin", PIN]);
}

fn gateway_yaml(s: &Stack, proxy: u16, admin: u16) -> String {
    format!(
        "listen: 127.0.0.1:{proxy}\nadmin_listen: 127.0.0.1:{admin}\ngrace_period_seconds: 0\nplatform:\n  base_url: http://127.0.0.1:{}\npkcs11:\n  module: {}\n  pin_env: PAYSIGN_TEST_PKCS11_PIN\nmerchants:\n  - customer_no: \"{RSA_MERCHANT}\"\n    profile: rsa\n    platform_public_key: keys/platform_public.pem\n    merchant_private_key: \"pkcs11:token=paysign;object=merchant\"\n",
        s.sandbox_port,
        module().display()
    )
}

/// `paysign` with the token's configuration and PIN in its environment: (exit code, stdout and
/// stderr).
fn run_tool(conf: &Path, args: &[&str], stdin: &str) -> (i32, String) {
    let conf = conf.to_str().unwrap();
    let (code, stdout, stderr) = run_paysign(args, &[("SOFTHSM2_CONF", conf), ("PAYSIGN_TEST_PKCS11_PIN", PIN)], stdin);
    (code, stdout + &stderr)
}

#[test]
fn the_merchant_key_never_leaves_the_token() {
    // The sandbox (keys in files: it is the platform); the gateway with its key in SoftHSM.
    let s = Stack::start(Options { merchants: &[MD5_MERCHANT], ..Options::default() });
    let conf = token(&s.dir);
    let (proxy, admin) = (free_port(), free_port());
    let cfg = s.dir.join("hsm.yaml");
    write(&cfg, &gateway_yaml(&s, proxy, admin));
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_paysign"));
    cmd.args(["run", "-c", cfg.to_str().unwrap()]).env("SOFTHSM2_CONF", &conf).env("PAYSIGN_TEST_PKCS11_PIN", PIN);
    let gateway = spawn_cmd(&mut cmd, s.dir.join("hsm-gateway.log"));
    wait_ready(admin, "/readyz");
    let post = |order: &str| {
        let h = [("Content-Type", "application/json"), ("X-Paysign-Merchant", RSA_MERCHANT)];
        request(proxy, "POST", BINDCARD, &h, bindcard(order).to_string().as_bytes())
    };

    // Round trip and the duplicate order, signed and opened in the token.
    let r = post("HSM-1");
    assert_eq!(r.status, 200, "{}\n{}", r.text(), gateway.logs());
    assert_eq!((r.json()["errCode"].as_str(), r.json()["orderNo"].as_str()), (Some("0000"), Some("HSM-1")));
    let r = post("HSM-1");
    assert_eq!((r.status, r.json()["errCode"].as_str()), (200, Some("2104")));

    // Every tamper case: one identical answer (no oracle, the token's refusals included).
    let mut bodies = Vec::new();
    for order in ["TAMPER-SIGN-H", "TAMPER-CUSTOMER-H", "TAMPER-CIPHER-H"] {
        let r = post(order);
        assert_eq!((r.status, r.header("X-Paysign-Delivery")), (502, Some("sent")), "{order}: {}", r.text());
        bodies.push(r.body.clone());
    }
    assert!(bodies.windows(2).all(|w| w[0] == w[1]), "{:?}", bodies.iter().map(|b| String::from_utf8_lossy(b)).collect::<Vec<_>>());
    let m = request(admin, "GET", "/metrics", &[], b"").text();
    assert_eq!(sample(&m, r#"paysign_requests_total{endpoint="bindcard_create",merchant="202112090604",outcome="verified"}"#), Some(2.0));
    assert_eq!(
        sample(&m, r#"paysign_requests_total{endpoint="bindcard_create",merchant="202112090604",outcome="verify_failed"}"#),
        Some(3.0)
    );
    assert!(!settled_logs(&gateway, proxy).contains(PIN), "the PIN is never logged");

    // The offline tools through the token.
    let plain = bindcard("HSM-TOOL");
    let (code, out) = run_tool(&conf, &["seal", "-c", cfg.to_str().unwrap(), "--path", BINDCARD], &plain.to_string());
    assert_eq!(code, 0, "{out}");
    assert!(out.contains("envelope:"), "{out}");
    let (code, out) = run_tool(
        &conf,
        &[
            "keys",
            "check",
            "--pkcs11-module",
            module().to_str().unwrap(),
            "--pin-env",
            "PAYSIGN_TEST_PKCS11_PIN",
            "pkcs11:token=paysign;object=merchant",
        ],
        "",
    );
    assert_eq!(code, 0, "{out}");
    assert!(out.contains("pkcs11:token=paysign;object=merchant: private key in a PKCS#11 token, RSA-2048"), "{out}");

    // The token goes away (its store is taken away, as when an HSM drops off the network):
    // signing fails before anything is sent; it comes back, and so does paysign, no restart.
    let (here, away) = (s.dir.join("tokens"), s.dir.join("tokens-away"));
    std::fs::rename(&here, &away).unwrap();
    let r = post("HSM-GONE");
    assert_eq!((r.status, r.header("X-Paysign-Delivery")), (500, Some("not-sent")), "{}", r.text());
    assert_eq!(r.json()["errMessage"], "the request could not be sealed");
    std::fs::rename(&away, &here).unwrap();
    // The module is looked at again at most once a second: the first calls may still fail
    // (500 not-sent, nothing sent), then it is back.
    let mut n = 0;
    let back = eventually(10, || {
        n += 1;
        let r = post(&format!("HSM-BACK-{n}"));
        assert!(r.status == 200 || (r.status == 500 && r.header("X-Paysign-Delivery") == Some("not-sent")), "{}", r.text());
        r.status == 200 && r.json()["errCode"] == "0000"
    });
    assert!(back, "{}", gateway.logs());
    let stats = s.sandbox_stats();
    assert!(stats["received"].as_u64().unwrap() >= 6, "{stats}");
}

#[test]
fn open_through_the_token_verifies_and_refuses_like_memory_keys() {
    use paysign_protocol::crypto::keys;
    use paysign_protocol::platform::{Platform, PlatformMerchant, PlatformMerchantKeys};
    use std::sync::Arc;

    let dir = temp_dir();
    let conf = token(&dir);
    let cfg = dir.join("hsm.yaml");
    write(
        &cfg,
        &format!(
            "platform:\n  base_url: http://127.0.0.1:9\npkcs11:\n  module: {}\n  pin_env: PAYSIGN_TEST_PKCS11_PIN\nmerchants:\n  - customer_no: \"{RSA_MERCHANT}\"\n    profile: rsa\n    platform_public_key: keys/platform_public.pem\n    merchant_private_key: \"pkcs11:token=paysign;object=merchant\"\n",
            module().display()
        ),
    );
    // An answer sealed the platform's way for the rsa merchant.
    let read = |n: &str| std::fs::read_to_string(dir.join("keys").join(n)).unwrap();
    let platform = Platform { private: Arc::new(keys::load_private(&read("platform_private.pem"), false).unwrap()), previous: None };
    let pm = PlatformMerchant {
        customer_no: RSA_MERCHANT.into(),
        keys: PlatformMerchantKeys::Rsa { merchant_public: Arc::new(keys::load_public(&read("merchant_public.pem"), false).unwrap()) },
        previous: None,
    };
    let fields = serde_json::json!({"customerNo": RSA_MERCHANT, "orderNo": "HSM-O", "errCode": "0000"});
    let body = String::from_utf8(platform.seal_response(&pm, fields.as_object().unwrap().clone()).unwrap()).unwrap();
    let (code, out) = run_tool(&conf, &["open", "-c", cfg.to_str().unwrap()], &body);
    assert_eq!(code, 0, "{out}");
    assert!(out.contains("HSM-O"), "{out}");

    // One ciphertext byte changed: the token refuses or yields noise; either way: not verified.
    let outer: Value = serde_json::from_str(&body).unwrap();
    let mut data: Value = serde_json::from_str(outer["data"].as_str().unwrap()).unwrap();
    use base64::Engine;
    let b64 = base64::engine::general_purpose::STANDARD;
    let mut raw = b64.decode(data["reqmsg"].as_str().unwrap()).unwrap();
    raw[10] ^= 0x40;
    data["reqmsg"] = Value::String(b64.encode(raw));
    let (code, out) = run_tool(&conf, &["open", "-c", cfg.to_str().unwrap()], &data.to_string());
    assert_eq!(code, 1, "{out}");
    assert!(out.contains("does not verify"), "{out}");
}
