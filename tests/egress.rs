//! Leaving through an HTTP CONNECT egress proxy (platforms allow-list the merchant's fixed IP,
//! which the proxy owns). The proxy here listens on a Unix socket, records each CONNECT, and
//! tunnels to the sandbox; a proxy that refuses means nothing was sent.

mod common;

use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpStream;
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::PathBuf;
use std::sync::{Arc, Mutex};

use common::*;

/// A minimal CONNECT proxy on a Unix socket: answers `status` and, on 200, pipes both ways.
fn egress_proxy(path: PathBuf, status: u16) -> Arc<Mutex<Vec<String>>> {
    let seen = Arc::new(Mutex::new(Vec::new()));
    let listener = UnixListener::bind(&path).unwrap();
    let log = seen.clone();
    std::thread::spawn(move || {
        for client in listener.incoming().flatten() {
            let log = log.clone();
            std::thread::spawn(move || tunnel(client, status, log));
        }
    });
    seen
}

/// A client connection of either kind of proxy listener.
trait Duplex: Read + Write + Send + Sized + 'static {
    fn dup(&self) -> Self;
}
impl Duplex for UnixStream {
    fn dup(&self) -> Self {
        self.try_clone().unwrap()
    }
}
impl Duplex for TcpStream {
    fn dup(&self) -> Self {
        self.try_clone().unwrap()
    }
}

/// The same CONNECT proxy on TCP (the usual fixed-IP egress proxy).
fn tcp_egress_proxy(status: u16) -> (u16, Arc<Mutex<Vec<String>>>) {
    let seen = Arc::new(Mutex::new(Vec::new()));
    let listener = bind_unclaimed();
    let port = listener.local_addr().unwrap().port();
    let log = seen.clone();
    std::thread::spawn(move || {
        for client in listener.incoming().flatten() {
            let log = log.clone();
            std::thread::spawn(move || tunnel(client, status, log));
        }
    });
    (port, seen)
}

fn tunnel<S: Duplex>(client: S, status: u16, log: Arc<Mutex<Vec<String>>>) {
    let mut reader = BufReader::new(client.dup());
    let mut first = String::new();
    if reader.read_line(&mut first).unwrap_or(0) == 0 {
        return;
    }
    loop {
        let mut l = String::new();
        if reader.read_line(&mut l).unwrap_or(0) == 0 || l == "\r\n" {
            break;
        }
    }
    log.lock().unwrap().push(first.trim_end().to_string());
    let mut w = client;
    if status != 200 {
        let _ = w.write_all(format!("HTTP/1.1 {status} Forbidden\r\nContent-Length: 0\r\n\r\n").as_bytes());
        return;
    }
    let target = first.split_whitespace().nth(1).unwrap_or("").to_string();
    let Ok(upstream) = TcpStream::connect(&target) else {
        return;
    };
    let _ = w.write_all(b"HTTP/1.1 200 Connection Established\r\n\r\n");
    let (mut up_r, mut up_w) = (upstream.try_clone().unwrap(), upstream);
    let mut down_w = w.dup();
    let buffered = reader.buffer().to_vec();
    let _ = up_w.write_all(&buffered);
    let mut down_r = reader.into_inner();
    std::thread::spawn(move || {
        let _ = std::io::copy(&mut down_r, &mut up_w);
    });
    let mut buf = [0u8; 16 * 1024];
    while let Ok(n) = up_r.read(&mut buf) {
        if n == 0 || down_w.write_all(&buf[..n]).is_err() {
            break;
        }
    }
}

fn stack_via(sock: &std::path::Path) -> Stack {
    Stack::start(Options {
        merchants: &[MD5_MERCHANT],
        gateway_extra: format!("  egress_proxy_uds: {}\n  connect_retries: 0\n", sock.display()),
        // The tunnel is set up by a thread per connection here: give it time on a busy machine.
        connect_timeout_ms: 5000,
        ..Options::default()
    })
}

#[test]
fn calls_leave_through_the_egress_proxy() {
    let sock = std::env::temp_dir().join(format!("paysign-egress-{}.sock", std::process::id()));
    let _ = std::fs::remove_file(&sock);
    let seen = egress_proxy(sock.clone(), 200);
    let s = stack_via(&sock);
    for i in 0..3 {
        let r = s.post(BINDCARD, None, bindcard(&format!("EGRESS-{i}")).to_string().as_bytes());
        assert_eq!(r.status, 200, "{}", r.text());
        assert_eq!(r.json()["errCode"], "0000");
    }
    let seen = seen.lock().unwrap().clone();
    assert!(!seen.is_empty());
    assert!(seen.iter().all(|l| *l == format!("CONNECT 127.0.0.1:{} HTTP/1.1", s.sandbox_port)), "{seen:?}");
    assert_eq!(s.sandbox_stats()["received"], 3);
    let _ = std::fs::remove_file(&sock);
}

#[test]
fn a_refusing_egress_proxy_means_nothing_was_sent() {
    let sock = std::env::temp_dir().join(format!("paysign-egress-deny-{}.sock", std::process::id()));
    let _ = std::fs::remove_file(&sock);
    let seen = egress_proxy(sock.clone(), 403);
    let s = stack_via(&sock);
    let r = s.post(BINDCARD, None, bindcard("EGRESS-DENY").to_string().as_bytes());
    assert_eq!(r.status, 502, "{}", r.text());
    assert_eq!(r.header("X-Paysign-Delivery"), Some("not-sent"));
    assert_eq!(seen.lock().unwrap().len(), 1);
    assert_eq!(s.sandbox_stats()["received"], 0);
    let _ = std::fs::remove_file(&sock);
}

#[test]
fn calls_leave_through_an_egress_proxy_on_tcp() {
    let (port, seen) = tcp_egress_proxy(200);
    let s = Stack::start(Options {
        merchants: &[RSA_MERCHANT],
        gateway_extra: format!("  egress_proxy: 127.0.0.1:{port}\n  connect_retries: 0\n"),
        connect_timeout_ms: 5000,
        ..Options::default()
    });
    for i in 0..3 {
        let r = s.post(BINDCARD, None, bindcard(&format!("EGRESS-TCP-{i}")).to_string().as_bytes());
        assert_eq!(r.status, 200, "{}", r.text());
    }
    let seen = seen.lock().unwrap().clone();
    assert!(!seen.is_empty());
    assert!(seen.iter().all(|l| *l == format!("CONNECT 127.0.0.1:{} HTTP/1.1", s.sandbox_port)), "{seen:?}");
    assert_eq!(s.sandbox_stats()["received"], 3);
}

#[test]
fn an_unreachable_tcp_egress_proxy_means_nothing_was_sent() {
    let s = Stack::start(Options {
        merchants: &[MD5_MERCHANT],
        gateway_extra: format!("  egress_proxy: 127.0.0.1:{}\n  connect_retries: 0\n", free_port()),
        connect_timeout_ms: 5000,
        ..Options::default()
    });
    let r = s.post(BINDCARD, None, bindcard("EGRESS-TCP-DOWN").to_string().as_bytes());
    assert_eq!(r.status, 502, "{}", r.text());
    assert_eq!(r.header("X-Paysign-Delivery"), Some("not-sent"));
    assert_eq!(s.sandbox_stats()["received"], 0, "no direct connection around the proxy");
}
