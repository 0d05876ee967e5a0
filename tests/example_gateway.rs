//! `examples/my_gateway.rs` — someone else's pingora gateway with paysign inside — run as a
//! real process against the real sandbox, with an ordinary upstream beside it.

mod common;

use std::sync::Arc;

use common::http_server;
use common::*;

#[test]
fn my_gateway_signs_the_platform_paths_and_proxies_the_rest() {
    let ordinary = http_server::start(Arc::new(|r| (200, "text/plain".into(), format!("ordinary {} {}", r.method, r.path).into_bytes())));
    let stack = Stack::start(Options { under_test: UnderTest::Example, example_upstream: Some(ordinary.port), ..Options::default() });
    let listen = stack.proxy;

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

/// The plugin API in-process: with `callers` configured, `Paysign::call` refuses and
/// `call_as` applies the caller's grants — embedding cannot bypass them.
#[test]
fn the_embedding_api_keeps_the_callers_grants() {
    use paysign_plugin::Delivery;
    use paysign_plugin::Paysign;

    let stack = Stack::start(Options::default());
    let sha = |t: &str| paysign_plugin::config::sha256(t.as_bytes()).iter().map(|b| format!("{b:02x}")).collect::<String>();
    let cfg = stack.dir.join("embedded.yaml");
    write(
        &cfg,
        &format!(
            "platform:\n  base_url: http://127.0.0.1:{}\ncallers:\n  - name: checkout\n    token_sha256: {}\n    merchants: [\"{MD5_MERCHANT}\"]\n    endpoints: [\"{BINDCARD}\"]\nmerchants:\n  - customer_no: \"{MD5_MERCHANT}\"\n    profile: md5\n    platform_public_key: keys/platform_public.pem\n    md5_key_file: keys/md5.key\n  - customer_no: \"{RSA_MERCHANT}\"\n    profile: rsa\n    platform_public_key: keys/platform_public.pem\n    merchant_private_key: keys/merchant_private.pem\n",
            stack.sandbox_port,
            sha("checkout-token")
        ),
    );
    // A configuration that does not load is a typed error that names the setting.
    match Paysign::from_file(&stack.dir.join("missing.yaml"), &prometheus::Registry::new()) {
        Err(paysign_plugin::StartError::Config(e)) => assert!(e.to_string().contains("missing.yaml"), "{e}"),
        Err(other) => panic!("expected a configuration error, got {other}"),
        Ok(_) => panic!("a missing configuration file was accepted"),
    }
    let paysign = Paysign::from_file(&cfg, &prometheus::Registry::new()).unwrap();
    // A reload that would change a listener is refused as needing a restart; the running
    // configuration stays.
    let moved = std::fs::read_to_string(&cfg).unwrap().replacen("platform:", "listen: 127.0.0.1:1\nplatform:", 1);
    write(&cfg, &moved);
    assert!(matches!(paysign.live().reload(), Err(paysign_plugin::ReloadError::NeedsRestart(_))));
    let rt = tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().unwrap();
    rt.block_on(async {
        let e = paysign.call(Some(MD5_MERCHANT), BINDCARD, bindcard("EMB-1"), "emb-1").await.unwrap_err();
        assert_eq!((e.status(), e.delivery()), (401, Delivery::NotSent));
        let e = paysign.call_as(Some("wrong"), Some(MD5_MERCHANT), BINDCARD, bindcard("EMB-2"), "emb-2").await.unwrap_err();
        assert_eq!((e.status(), e.delivery()), (401, Delivery::NotSent));
        let e = paysign.call_as(Some("checkout-token"), Some(RSA_MERCHANT), BINDCARD, bindcard("EMB-3"), "emb-3").await.unwrap_err();
        assert_eq!((e.status(), e.delivery()), (403, Delivery::NotSent));
        let v = paysign.call_as(Some("checkout-token"), Some(MD5_MERCHANT), BINDCARD, bindcard("EMB-4"), "emb-4").await.unwrap();
        let fields = v.fields();
        assert_eq!(
            (fields["errCode"].as_str(), fields["orderNo"].as_str(), v.err_code.as_deref()),
            (Some("0000"), Some("EMB-4"), Some("0000"))
        );
    });
    assert_eq!(stack.sandbox_stats()["received"], 1, "only the granted call reached the platform");
}

/// The example (and so the README's snippet) with `callers` configured: the caller's own
/// `Authorization: Bearer` token is what paysign checks — a granted call is sent and verified,
/// a missing token is 401 and another merchant 403, neither reaching the platform. (Through
/// `Paysign::call` every one of these was 401.)
#[test]
fn my_gateway_passes_the_callers_token() {
    let sha = |t: &str| paysign_plugin::config::sha256(t.as_bytes()).iter().map(|b| format!("{b:02x}")).collect::<String>();
    let stack = Stack::start(Options {
        gateway_extra: format!(
            "callers:\n  - name: checkout\n    token_sha256: {}\n    merchants: [\"{MD5_MERCHANT}\"]\n    endpoints: [\"{BINDCARD}\"]\n",
            sha("checkout-token")
        ),
        under_test: UnderTest::Example,
        ..Options::default()
    });
    let listen = stack.proxy;

    let body = |order: &str| bindcard(order).to_string();
    let granted = [("Content-Type", "application/json"), ("X-Paysign-Merchant", MD5_MERCHANT), ("Authorization", "Bearer checkout-token")];
    let r = request(listen, "POST", BINDCARD, &granted, body("CALLER-1").as_bytes());
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(r.header("X-Paysign-Delivery"), Some("sent"));
    assert_eq!((r.json()["errCode"].as_str(), r.json()["orderNo"].as_str()), (Some("0000"), Some("CALLER-1")));

    let anonymous = [("Content-Type", "application/json"), ("X-Paysign-Merchant", MD5_MERCHANT)];
    let r = request(listen, "POST", BINDCARD, &anonymous, body("CALLER-2").as_bytes());
    assert_eq!((r.status, r.header("X-Paysign-Delivery")), (401, Some("not-sent")), "{}", r.text());

    let other = [("Content-Type", "application/json"), ("X-Paysign-Merchant", RSA_MERCHANT), ("Authorization", "Bearer checkout-token")];
    let r = request(listen, "POST", BINDCARD, &other, body("CALLER-3").as_bytes());
    assert_eq!((r.status, r.header("X-Paysign-Delivery")), (403, Some("not-sent")), "{}", r.text());

    assert_eq!(stack.sandbox_stats()["received"], 1, "only the granted call reached the platform");
}

/// `call_as` (a caller that is not HTTP) runs the exchange's own steps and counts like the
/// binary: a tampered answer moves `paysign_verification_failures_total` (the page alert), the
/// request is counted by outcome with its durations and errCodes, and nothing stays in
/// flight. (Before: six tampered answers refused, not one counted.) The RSA merchant only:
/// the other in-process test of this file calls the MD5 one.
#[test]
fn call_as_records_the_same_metrics_as_the_gateway() {
    use paysign_plugin::Paysign;

    let stack = Stack::start(Options::default());
    let registry = prometheus::Registry::new();
    let paysign = Paysign::from_file(&stack.dir.join("paysign.yaml"), &registry).unwrap();
    let series = |m: &str, s: &str| sample(m, s).unwrap_or(0.0);
    let verified = format!(r#"paysign_requests_total{{endpoint="bindcard_create",merchant="{RSA_MERCHANT}",outcome="verified"}}"#);
    let refused = format!(r#"paysign_requests_total{{endpoint="bindcard_create",merchant="{RSA_MERCHANT}",outcome="verify_failed"}}"#);
    let invalid = format!(r#"paysign_requests_total{{endpoint="bindcard_create",merchant="{RSA_MERCHANT}",outcome="invalid"}}"#);
    let signature = r#"paysign_verification_failures_total{reason="signature"}"#;
    let before = paysign_plugin::metrics::render(&registry);

    let rt = tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().unwrap();
    rt.block_on(async {
        let v = paysign.call_as(None, Some(RSA_MERCHANT), BINDCARD, bindcard("CM-1"), "cm-1").await.unwrap();
        assert_eq!(v.err_code.as_deref(), Some("0000"));
        let e = paysign.call_as(None, Some(RSA_MERCHANT), BINDCARD, bindcard("TAMPER-SIGN-CM-2"), "cm-2").await.unwrap_err();
        assert_eq!((e.status(), e.outcome()), (502, "verify_failed"));
        let mut bad = bindcard("CM-3");
        bad["certType"] = "DRIVER".into();
        let e = paysign.call_as(None, Some(RSA_MERCHANT), BINDCARD, bad, "cm-3").await.unwrap_err();
        assert_eq!(e.status(), 400);
    });

    let after = paysign_plugin::metrics::render(&registry);
    for (s, by) in [(verified.as_str(), 1.0), (refused.as_str(), 1.0), (invalid.as_str(), 1.0), (signature, 1.0)] {
        assert_eq!(series(&after, s) - series(&before, s), by, "{s}\n{after}");
    }
    let histogram = r#"paysign_upstream_duration_seconds_count{endpoint="bindcard_create"}"#;
    assert!(series(&after, histogram) - series(&before, histogram) >= 2.0, "{after}");
    let errcode = r#"paysign_platform_errcode_total{endpoint="bindcard_create",errcode="0000"}"#;
    assert!(series(&after, errcode) - series(&before, errcode) >= 1.0, "{after}");
    assert_eq!(sample(&after, "paysign_requests_in_flight"), Some(0.0), "{after}");
    assert_eq!(stack.sandbox_stats()["received"], 2, "the invalid call never left");
}
