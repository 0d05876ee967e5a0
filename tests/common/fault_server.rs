//! A misbehaving "platform" on loopback: it reads each request and then answers the way the
//! test last asked for — never, slowly, cut off, garbage, huge, HTML, or a properly sealed
//! answer in an unusual shape. Port 0, a thread per connection; it counts what it received.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpStream;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Condvar, Mutex};
use std::time::Duration;

#[derive(Clone, Debug)]
pub enum Fault {
    /// Read the request, answer nothing, keep the connection open.
    NeverAnswer,
    /// A valid head, then the body one byte every `Duration`.
    SlowDrip(Duration),
    /// A head announcing more body than is sent, then close.
    CloseMidBody,
    /// Bytes that are not HTTP.
    Garbage,
    /// A 200 with a body of this many bytes.
    Huge(usize),
    /// An arbitrary status, content type and body.
    Answer(u16, &'static str, Vec<u8>),
    /// An arbitrary status, content type and body (nothing said about the connection); then,
    /// once [`FaultServer::close_idle`] is called, the connection closed: what a server's idle
    /// timeout does to a kept-alive connection.
    AnswerThenClose(u16, &'static str, Vec<u8>),
    /// An arbitrary status, content type and body with `Connection: close`; the connection is
    /// then left open (the client must close it, not reuse it).
    AnswerSayingClose(u16, &'static str, Vec<u8>),
    /// A 200 JSON answer whose body leaves in pieces of this many bytes, each its own segment
    /// with a pause after it, so that the reader gets it in several reads.
    Pieces(Vec<u8>, usize),
}

pub struct FaultServer {
    pub port: u16,
    pub fault: Arc<Mutex<Fault>>,
    pub requests: Arc<AtomicUsize>,
    /// The head (request line and header lines) of the last request received.
    pub last_head: Arc<Mutex<Vec<String>>>,
    /// Connections closed by `AnswerThenClose` (counted once the close has been sent).
    pub closed: Arc<AtomicUsize>,
    /// Connections the client closed (their end of file read between requests).
    pub ended_by_client: Arc<AtomicUsize>,
    /// Set by `close_idle`: `AnswerThenClose` connections close.
    pub close_now: Arc<(Mutex<bool>, Condvar)>,
}

impl FaultServer {
    pub fn set(&self, f: Fault) {
        *self.fault.lock().unwrap() = f;
    }
    pub fn received(&self) -> usize {
        self.requests.load(Ordering::SeqCst)
    }
    /// Closes the connections `AnswerThenClose` answered on.
    pub fn close_idle(&self) {
        *self.close_now.0.lock().unwrap() = true;
        self.close_now.1.notify_all();
    }
    pub fn closed(&self) -> usize {
        self.closed.load(Ordering::SeqCst)
    }
    pub fn ended_by_client(&self) -> usize {
        self.ended_by_client.load(Ordering::SeqCst)
    }
    pub fn last_head(&self) -> Vec<String> {
        self.last_head.lock().unwrap().clone()
    }
}

fn read_request(r: &mut BufReader<TcpStream>, head: &Mutex<Vec<String>>) -> Option<Vec<u8>> {
    let mut len = 0;
    let mut lines = Vec::new();
    loop {
        let mut line = String::new();
        if r.read_line(&mut line).ok()? == 0 {
            return None;
        }
        if line != "\r\n" {
            lines.push(line.trim_end().to_string());
        }
        if let Some(v) = line.to_ascii_lowercase().strip_prefix("content-length:") {
            len = v.trim().parse().ok()?;
        }
        if line == "\r\n" {
            break;
        }
    }
    let mut body = vec![0; len];
    r.read_exact(&mut body).ok()?;
    *head.lock().unwrap() = lines;
    Some(body)
}

fn serve(
    stream: TcpStream,
    fault: Arc<Mutex<Fault>>,
    count: Arc<AtomicUsize>,
    head: Arc<Mutex<Vec<String>>>,
    closed: Arc<AtomicUsize>,
    ended: Arc<AtomicUsize>,
    close_now: Arc<(Mutex<bool>, Condvar)>,
) {
    let mut w = stream.try_clone().unwrap();
    let mut r = BufReader::new(stream);
    loop {
        if read_request(&mut r, &head).is_none() {
            ended.fetch_add(1, Ordering::SeqCst);
            return;
        }
        count.fetch_add(1, Ordering::SeqCst);
        let f = fault.lock().unwrap().clone();
        let res = match f {
            Fault::NeverAnswer => {
                // Hold the connection until the peer gives up.
                let mut sink = [0u8; 64];
                while r.get_mut().read(&mut sink).map(|n| n > 0).unwrap_or(false) {}
                return;
            }
            Fault::SlowDrip(every) => (|| {
                w.write_all(b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: 400\r\n\r\n")?;
                for _ in 0..400 {
                    w.write_all(b" ")?;
                    w.flush()?;
                    std::thread::sleep(every);
                }
                Ok::<(), std::io::Error>(())
            })(),
            Fault::Pieces(body, size) => (|| {
                w.set_nodelay(true)?;
                write!(w, "HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n", body.len())?;
                for piece in body.chunks(size.max(1)) {
                    w.write_all(piece)?;
                    w.flush()?;
                    std::thread::sleep(Duration::from_millis(5));
                }
                Ok::<(), std::io::Error>(())
            })(),
            Fault::CloseMidBody => {
                let _ = w.write_all(b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: 1000\r\n\r\n{\"code\":\"200\",");
                return;
            }
            Fault::Garbage => {
                let _ = w.write_all(b"\x00\x01garbage that is not HTTP at all\r\n\r\n");
                return;
            }
            Fault::Huge(n) => (|| {
                w.write_all(format!("HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: {n}\r\n\r\n").as_bytes())?;
                let chunk = vec![b'a'; 64 * 1024];
                let mut left = n;
                while left > 0 {
                    let k = left.min(chunk.len());
                    w.write_all(&chunk[..k])?;
                    left -= k;
                }
                Ok(())
            })(),
            Fault::AnswerThenClose(status, ct, body) => {
                let _ = answer(&mut w, status, ct, "", &body);
                let (flag, signal) = &*close_now;
                drop(signal.wait_while(flag.lock().unwrap(), |now| !*now).unwrap());
                let _ = w.shutdown(std::net::Shutdown::Both);
                closed.fetch_add(1, Ordering::SeqCst);
                return;
            }
            Fault::AnswerSayingClose(status, ct, body) => answer(&mut w, status, ct, "Connection: close\r\n", &body),
            Fault::Answer(status, ct, body) => answer(&mut w, status, ct, "", &body),
        };
        if res.is_err() {
            return;
        }
    }
}

/// A complete answer: the status line, `Content-Type`, any `extra` header lines (each ending in
/// CRLF), `Content-Length`, then the body.
fn answer(w: &mut TcpStream, status: u16, ct: &str, extra: &str, body: &[u8]) -> std::io::Result<()> {
    w.write_all(format!("HTTP/1.1 {status} X\r\nContent-Type: {ct}\r\n{extra}Content-Length: {}\r\n\r\n", body.len()).as_bytes())?;
    w.write_all(body)
}

pub fn start() -> FaultServer {
    let listener = super::bind_unclaimed();
    let port = listener.local_addr().unwrap().port();
    let fault = Arc::new(Mutex::new(Fault::NeverAnswer));
    let requests = Arc::new(AtomicUsize::new(0));
    let last_head = Arc::new(Mutex::new(Vec::new()));
    let closed = Arc::new(AtomicUsize::new(0));
    let close_now = Arc::new((Mutex::new(false), Condvar::new()));
    let ended_by_client = Arc::new(AtomicUsize::new(0));
    let (f, c, h, x, e, n) =
        (fault.clone(), requests.clone(), last_head.clone(), closed.clone(), ended_by_client.clone(), close_now.clone());
    std::thread::spawn(move || {
        for s in listener.incoming().flatten() {
            let (f, c, h, x, e, n) = (f.clone(), c.clone(), h.clone(), x.clone(), e.clone(), n.clone());
            std::thread::spawn(move || serve(s, f, c, h, x, e, n));
        }
    });
    FaultServer { port, fault, requests, last_head, closed, ended_by_client, close_now }
}
