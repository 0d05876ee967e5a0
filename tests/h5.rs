//! The bank H5 page: rendered by paysign for `Accept: text/html`, and driven in a real
//! headless Chromium from a launcher page, through paysign, to a loopback "bank".

mod common;

use std::process::Command;
use std::sync::Arc;
use std::time::Duration;

use common::http_server::{self, form_decode};
use common::*;
use serde_json::Value;

fn bank() -> http_server::Server {
    http_server::start(Arc::new(|_req| {
        (200, "text/html; charset=UTF-8".into(), b"<html><body><p id=bank>bank page</p></body></html>".to_vec())
    }))
}

fn stack_with_bank(bank_port: u16) -> Stack {
    Stack::start(Options {
        merchants: &[MD5_MERCHANT],
        submit_url: format!("http://127.0.0.1:{bank_port}/epcc/bind"),
        ..Options::default()
    })
}

#[test]
fn html_accept_gets_the_bank_page_with_protective_headers() {
    let s = Stack::start(Options { merchants: &[MD5_MERCHANT], ..Options::default() });
    let body = bindcard("H5-XSS-1").to_string();
    let json = request(s.proxy, "POST", BINDCARD, &[], body.as_bytes()).json();
    let expected =
        serde_json::from_str::<Value>(json["submitParams"].as_str().unwrap()).unwrap()["epccGwMsg"].as_str().unwrap().to_string();
    assert!(expected.contains("\"'><script>"));

    let r = request(s.proxy, "POST", BINDCARD, &[("Accept", "text/html,application/xhtml+xml;q=0.9")], body.as_bytes());
    assert_eq!(r.status, 200);
    assert_eq!(r.header("Content-Type"), Some("text/html; charset=UTF-8"));
    assert_eq!(r.header("X-Frame-Options"), Some("DENY"));
    assert_eq!(r.header("Cache-Control"), Some("no-store"));
    assert_eq!(r.header("X-Content-Type-Options"), Some("nosniff"));
    let csp = r.header("Content-Security-Policy").unwrap();
    assert!(csp.contains("frame-ancestors 'none'") && csp.contains("script-src 'sha256-"), "{csp}");
    let html = r.text();
    assert!(html.contains(r#"action="https://bank.example.test/epcc/bind""#), "{html}");
    assert!(html.contains(r#"method="post""#));
    assert!(html.contains(&format!(r#"value="{}""#, paysign_protocol::h5::escape(&expected))));
    assert_eq!(html.matches("<script").count(), 1, "{html}");
    assert!(html.contains("<button type=\"submit\">"));

    // Not a success: the verified JSON as usual, even when HTML is asked for.
    let dup = bindcard("HTML-DUP");
    assert_eq!(request(s.proxy, "POST", BINDCARD, &[], dup.to_string().as_bytes()).status, 200);
    let r = request(s.proxy, "POST", BINDCARD, &[("Accept", "text/html")], dup.to_string().as_bytes());
    assert_eq!(r.header("Content-Type"), Some("application/json;charset=UTF-8"));
    assert_eq!(r.json()["errCode"], "2104");
}

/// A launcher page posts the business JSON to paysign as a `text/plain` form (the browser
/// asks for HTML), paysign answers with the bank page, the page submits itself to the bank.
#[test]
fn chromium_lands_on_the_bank_with_epcc_gw_msg_byte_identical() {
    let chromium = ["/usr/bin/chromium", "/usr/bin/chromium-browser"].into_iter().find(|p| std::path::Path::new(p).exists());
    let chromium = chromium.expect("headless Chromium is needed for this test: apt-get install -y chromium");
    let bank = bank();
    let s = stack_with_bank(bank.port);

    let order = "H5-XSS-BROWSER";
    let business = bindcard(order);
    let json = request(s.proxy, "POST", BINDCARD, &[], business.to_string().as_bytes()).json();
    let expected =
        serde_json::from_str::<Value>(json["submitParams"].as_str().unwrap()).unwrap()["epccGwMsg"].as_str().unwrap().to_string();
    // The launcher request itself is recorded too; drain it later.
    let text = business.to_string();
    let name = format!("{},\"pad\":\"", &text[..text.len() - 1]);
    let launcher = format!(
        "<!DOCTYPE html><html><body><form method=\"post\" enctype=\"text/plain\" action=\"http://127.0.0.1:{}{BINDCARD}\">\
         <input type=\"hidden\" name=\"{}\" value='\"}}'></form><script>document.forms[0].submit();</script></body></html>",
        s.proxy,
        paysign_protocol::h5::escape(&name)
    );
    let launch_page = launcher.into_bytes();
    *bank.handler.lock().unwrap() = Arc::new(move |req| {
        if req.path == "/launch" {
            (200, "text/html; charset=UTF-8".into(), launch_page.clone())
        } else {
            (200, "text/html; charset=UTF-8".into(), b"<html><body><p id=bank>bank page</p></body></html>".to_vec())
        }
    });

    let profile = s.dir.join("chromium-profile");
    let child = Command::new(chromium)
        .args([
            "--headless",
            "--no-sandbox",
            "--disable-gpu",
            "--disable-quic",
            "--no-first-run",
            "--disable-background-networking",
            "--disable-component-update",
            "--disable-sync",
            "--virtual-time-budget=15000",
            "--dump-dom",
        ])
        .arg(format!("--user-data-dir={}", profile.display()))
        .arg(format!("http://127.0.0.1:{}/launch", bank.port))
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();

    let mut landed = None;
    let mut seen = Vec::new();
    while let Ok(req) = bank.requests.recv_timeout(Duration::from_secs(60)) {
        seen.push(format!("{} {}", req.method, req.path));
        if req.path == "/epcc/bind" {
            landed = Some(req);
            break;
        }
    }
    let landed = landed.unwrap_or_else(|| panic!("the browser never reached the bank; bank saw {seen:?}"));
    let out = child.wait_with_output().unwrap();
    let dom = String::from_utf8_lossy(&out.stdout);

    assert_eq!(landed.method, "POST");
    assert!(landed.header("Content-Type").unwrap().starts_with("application/x-www-form-urlencoded"));
    let fields = form_decode(&landed.body);
    assert_eq!(fields.len(), 1, "{fields:?}");
    assert_eq!(fields[0].0, "epccGwMsg");
    assert_eq!(fields[0].1, expected, "epccGwMsg changed on its way through the page");
    assert!(landed.header("Referer").is_none(), "the page must not leak its URL");
    assert!(dom.contains("bank page"), "final DOM: {dom}");
    // Nothing hostile ran or loaded: no request for /pwned ever arrived.
    while let Ok(req) = bank.requests.recv_timeout(Duration::from_millis(200)) {
        seen.push(format!("{} {}", req.method, req.path));
    }
    assert!(seen.iter().all(|r| !r.contains("pwned")), "{seen:?}");
    assert_eq!(seen.iter().filter(|r| r.ends_with("/epcc/bind")).count(), 1, "{seen:?}");
}
