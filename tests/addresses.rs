//! Every address of the platform's name: a dead address next to a live one costs one
//! connection attempt and no failed call, and the platform can be reached over IPv6.

mod common;
use common::*;

/// Two addresses for the platform's name, the first one dead (nothing listens on
/// 127.0.0.2): the call succeeds through the second, and the next calls go there directly.
#[test]
fn a_dead_address_next_to_a_live_one_is_served_without_error() {
    let s = Stack::start(Options {
        platform_host: "platform.test",
        merchants: &[MD5_MERCHANT],
        gateway_extra: "  addresses: [\"127.0.0.2\", \"127.0.0.1\"]\n  connect_retries: 0\n".into(),
        ..Options::default()
    });
    for i in 0..3 {
        let r = s.post(BINDCARD, None, bindcard(&format!("ADDR-{i}")).to_string().as_bytes());
        assert_eq!(r.status, 200, "{}", r.text());
        assert_eq!(r.json()["errCode"], "0000");
    }
    // One failed attempt on the dead address, once; then the live one is preferred.
    assert_eq!(sample(&s.metrics(), r#"paysign_upstream_connect_retries_total{endpoint="bindcard_create"}"#), Some(1.0));
    assert_eq!(s.sandbox_stats()["received"], 3);
    let logs = s.settled_logs();
    assert_eq!(logs.matches("127.0.0.2").count(), 1, "{logs}");
}

/// Every address dead: not sent, after one attempt per address and round.
#[test]
fn when_no_address_answers_nothing_is_sent() {
    let dead = free_port();
    let s = Stack::start(Options {
        sandbox: false,
        platform_port: Some(dead),
        platform_host: "platform.test",
        merchants: &[MD5_MERCHANT],
        gateway_extra: "  addresses: [\"127.0.0.2\", \"127.0.0.1\"]\n  connect_retries: 1\n".into(),
        ..Options::default()
    });
    let r = s.post(BINDCARD, None, bindcard("ADDR-DEAD").to_string().as_bytes());
    assert_eq!(r.status, 502, "{}", r.text());
    assert_eq!(r.header("X-Paysign-Delivery"), Some("not-sent"));
    // 2 addresses × 2 rounds = 4 attempts, 3 of them retries.
    assert_eq!(sample(&s.metrics(), r#"paysign_upstream_connect_retries_total{endpoint="bindcard_create"}"#), Some(3.0));
}

/// The sandbox on IPv6 loopback, the gateway pointed at it by address.
#[test]
fn the_platform_is_reached_over_ipv6() {
    let s = Stack::start(Options { sandbox_host: "[::1]", platform_host: "[::1]", merchants: &[RSA_MERCHANT], ..Options::default() });
    let r = s.post(BINDCARD, None, bindcard("ADDR-V6").to_string().as_bytes());
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(r.json()["errCode"], "0000");
}
