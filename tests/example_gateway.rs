//! `examples/my_gateway.rs` — someone else's pingora gateway with paysign inside — run as a
//! real process against the real sandbox, with an ordinary upstream beside it.

mod common;

use std::process::Command;
use std::sync::Arc;

use common::http_server;
use common::*;

fn example_binary() -> std::path::PathBuf {
    // `cargo test` builds the examples next to the binaries; `cargo test --test …` does not.
    let bin = std::path::PathBuf::from(env!("CARGO_BIN_EXE_paysign"));
    let example = bin.parent().unwrap().join("examples/my_gateway");
    if !example.exists() {
        let release = bin.parent().unwrap().ends_with("release");
        let mut cargo = Command::new(env!("CARGO"));
        cargo.args(["build", "--example", "my_gateway"]).current_dir(env!("CARGO_MANIFEST_DIR"));
        if release {
            cargo.arg("--release");
        }
        assert!(cargo.status().unwrap().success(), "cargo build --example my_gateway");
    }
    example
}

#[test]
fn my_gateway_signs_the_platform_paths_and_proxies_the_rest() {
    let stack = Stack::start(Options::default());
    let ordinary = http_server::start(Arc::new(|r| (200, "text/plain".into(), format!("ordinary {} {}", r.method, r.path).into_bytes())));
    let listen = free_port();
    let _gateway = spawn_cmd(
        Command::new(example_binary()).args([
            stack.dir.join("paysign.yaml").to_str().unwrap(),
            &format!("127.0.0.1:{listen}"),
            &format!("127.0.0.1:{}", ordinary.port),
        ]),
        stack.dir.join("my_gateway.log"),
    );
    wait_listening(listen);

    // The platform's path, both profiles: sealed, sent, opened, verified.
    for merchant in [MD5_MERCHANT, RSA_MERCHANT] {
        let h = [("Content-Type", "application/json"), ("X-Paysign-Merchant", merchant)];
        let r = request(listen, "POST", BINDCARD, &h, bindcard(&format!("EX-{merchant}")).to_string().as_bytes());
        assert_eq!(r.status, 200, "{}", r.text());
        assert_eq!(r.header("X-Paysign-Delivery"), Some("sent"));
        let v = r.json();
        assert_eq!(v["errCode"], "0000");
        assert_eq!(v["orderNo"], format!("EX-{merchant}"));
        assert_eq!(v["customerNo"], merchant);

        // A tampered answer is refused, and says the platform did act.
        let r = request(listen, "POST", BINDCARD, &h, bindcard(&format!("TAMPER-SIGN-EX-{merchant}")).to_string().as_bytes());
        assert_eq!(r.status, 502);
        assert_eq!(r.header("X-Paysign-Delivery"), Some("sent"));
        assert_eq!(r.json()["errMessage"], "the platform's answer could not be verified; it was discarded");

        // Invalid business fields never leave.
        let mut bad = bindcard("EX-BAD");
        bad["certType"] = "DRIVER".into();
        let r = request(listen, "POST", BINDCARD, &h, bad.to_string().as_bytes());
        assert_eq!(r.status, 400);
        assert_eq!(r.header("X-Paysign-Delivery"), Some("not-sent"));
        assert_eq!(r.json()["errCode"], "1002");
    }
    let stats = stack.sandbox_stats();
    assert_eq!(stats["received"], 4, "{stats}");

    // Everything else: the ordinary upstream, untouched.
    let r = request(listen, "GET", "/orders/42", &[], b"");
    assert_eq!((r.status, r.text().as_str()), (200, "ordinary GET /orders/42"));
    let got = ordinary.requests.recv_timeout(std::time::Duration::from_secs(5)).unwrap();
    assert_eq!((got.method.as_str(), got.path.as_str()), ("GET", "/orders/42"));
}
