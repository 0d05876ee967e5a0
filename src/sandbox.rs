//! The sandbox platform: a loopback simulator of the platform side of PROTOCOL.md, for the
//! demo, the tests and load runs. It decrypts and verifies requests like the platform,
//! answers bindCard/create per the endpoint document (`0000` with a bank form, `2104` for a
//! repeated `orderNo`, `1003`/`1002` for bad fields) and echoes other `/api/` paths.
//!
//! Fault injection by `orderNo` prefix (what the tests use):
//! `H5-` orders may repeat; `H5-XSS-` puts `"'<>&` and markup into `epccGwMsg`;
//! `TAMPER-SIGN-` (sign no longer matches), `TAMPER-CUSTOMER-` (another customerNo),
//! `TAMPER-CIPHER-` (a corrupted ciphertext byte), `TAMPER-PLATFORM-` (platform failure
//! envelope), `TAMPER-HTML-` (an HTML 502 page), `STALL-` (answers after `stall_ms`).
//!
//! `GET /__sandbox/stats` reports what it received.

use std::collections::{HashMap, HashSet};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use async_trait::async_trait;
use base64::Engine;
use http::Response;
use pingora::apps::http_app::ServeHttp;
use pingora::protocols::http::ServerSession;
use serde_json::{Map, Value};

use crate::config::SandboxConfig;
use crate::protocol::platform::{envelope, failure, Platform, PlatformMerchant};
use crate::protocol::schema::Endpoints;

const BINDCARD_PATH: &str = "/api/vborder/shortcut/bindCard/create";
/// Requests are small; this only bounds a misbehaving client.
const MAX_REQUEST: usize = 1024 * 1024;

pub struct Sandbox {
    config: SandboxConfig,
    platform: Platform,
    endpoints: Endpoints,
    state: Arc<State>,
}

#[derive(Default)]
struct State {
    received: AtomicU64,
    opened: AtomicU64,
    rejected: AtomicU64,
    orders: Mutex<HashSet<(String, String)>>,
    by_path: Mutex<HashMap<String, u64>>,
}

struct Processed {
    answer: Answer,
    /// The request decrypted and verified.
    opened: bool,
    /// A `STALL-` order: answer only after `stall_ms`.
    stall: bool,
}

/// What the sandbox decided to send back.
enum Answer {
    Json(u16, Vec<u8>),
    Html(u16, Vec<u8>),
}

impl Sandbox {
    pub fn new(config: SandboxConfig) -> Result<Self, String> {
        let platform = Platform { private: config.platform_private.clone() };
        Ok(Sandbox { platform, config, endpoints: Endpoints::builtin()?, state: Arc::default() })
    }

    fn stats(&self) -> Vec<u8> {
        let by_path: Map<String, Value> = self
            .state
            .by_path
            .lock()
            .map(|m| m.iter().map(|(k, v)| (k.clone(), Value::from(*v))).collect())
            .unwrap_or_default();
        serde_json::json!({
            "received": self.state.received.load(Ordering::Relaxed),
            "opened": self.state.opened.load(Ordering::Relaxed),
            "rejected": self.state.rejected.load(Ordering::Relaxed),
            "by_path": by_path,
        })
        .to_string()
        .into_bytes()
    }

    /// The platform's handling of one sealed request (synchronous: crypto only).
    fn process(&self, path: &str, body: &[u8]) -> Processed {
        let reject = |code: &str, msg: &str| Processed { answer: Answer::Json(200, failure(code, msg)), opened: false, stall: false };
        let Ok(Value::Object(env)) = serde_json::from_slice::<Value>(body) else {
            return reject("400", "请求报文格式错误");
        };
        let (Some(customer), Some(reqmsg)) =
            (env.get("customerNo").and_then(Value::as_str), env.get("reqmsg").and_then(Value::as_str))
        else {
            return reject("400", "缺少customerNo或reqmsg");
        };
        let Some(m) = self.config.merchants.get(customer) else {
            return reject("401", "商户不存在");
        };
        let Ok((_text, mut fields)) = self.platform.open_request(m, reqmsg) else {
            return reject("402", "验签失败");
        };
        self.state.opened.fetch_add(1, Ordering::Relaxed);
        fields.remove("sign");
        let order_no = fields.get("orderNo").and_then(Value::as_str).unwrap_or("").to_string();

        let done = |answer| Processed { answer, opened: true, stall: order_no.starts_with("STALL-") };
        if order_no.starts_with("TAMPER-PLATFORM-") {
            return done(Answer::Json(200, failure("500", "系统繁忙")));
        }
        if order_no.starts_with("TAMPER-HTML-") {
            return done(Answer::Html(502, b"<html><body><h1>502 Bad Gateway</h1></body></html>".to_vec()));
        }
        let mut out = if path == BINDCARD_PATH { self.bindcard(m, &fields) } else { echo(m, &fields) };
        match self.seal(m, &mut out, &order_no) {
            Ok(body) => done(Answer::Json(200, body)),
            Err(_) => done(Answer::Json(200, failure("500", "系统异常"))),
        }
    }

    fn bindcard(&self, m: &PlatformMerchant, fields: &Map<String, Value>) -> Map<String, Value> {
        let order_no = fields.get("orderNo").and_then(Value::as_str).unwrap_or("");
        let mut out = Map::new();
        out.insert("orderNo".into(), Value::String(order_no.into()));
        out.insert("customerNo".into(), Value::String(m.customer_no.clone()));
        if let Some(ep) = self.endpoints.get(BINDCARD_PATH) {
            if let Err(bad) = ep.validate(fields) {
                out.insert("errCode".into(), Value::String(bad.code.into()));
                out.insert("errMessage".into(), Value::String(bad.message));
                return out;
            }
        }
        // Fault-injection and page-test orders may be repeated; real ones are unique.
        let fresh = !["TAMPER-", "STALL-", "H5-"].iter().any(|p| order_no.starts_with(p));
        let first = self
            .state
            .orders
            .lock()
            .map(|mut seen| !fresh || seen.insert((m.customer_no.clone(), order_no.to_string())))
            .unwrap_or(false);
        if !first {
            out.insert("errCode".into(), Value::String("2104".into()));
            out.insert("errMessage".into(), Value::String("订单已存在,请勿重复提交".into()));
            return out;
        }
        let xml = format!(
            "<root><MsgHeader><MsgTp>epcc.105.001.01</MsgTp><IssrId>{order_no}</IssrId></MsgHeader>\
             <MsgBody><BindCard>{}</BindCard></MsgBody></root>",
            "x".repeat(600)
        );
        let mut gw = base64::engine::general_purpose::STANDARD.encode(xml);
        if order_no.starts_with("H5-XSS-") {
            // A hostile value for the bank-page tests: it must arrive byte-identical and never run.
            let base = &self.config.submit_url;
            gw.push_str(&format!(
                "\"'><script>fetch('{base}/pwned?script')</script><img src=\"{base}/pwned?img\" onerror=\"location='{base}/pwned?onerror'\">&amp;<"
            ));
        }
        let params = serde_json::json!({ "epccGwMsg": gw }).to_string();
        out.insert("errCode".into(), Value::String("0000".into()));
        out.insert("errMessage".into(), Value::String("成功".into()));
        out.insert("submitUrl".into(), Value::String(self.config.submit_url.clone()));
        out.insert("submitMethod".into(), Value::String("POST".into()));
        out.insert("encoding".into(), Value::String("UTF-8".into()));
        out.insert("submitParams".into(), Value::String(params));
        out
    }

    /// Signs and encrypts `fields`, applying the `TAMPER-` faults the tests ask for.
    fn seal(&self, m: &PlatformMerchant, fields: &mut Map<String, Value>, order_no: &str) -> Result<Vec<u8>, crate::crypto::CryptoError> {
        let mut customer = m.customer_no.clone();
        if order_no.starts_with("TAMPER-CUSTOMER-") {
            customer = "999999999999".into();
            fields.insert("customerNo".into(), Value::String(customer.clone()));
        }
        let sign = self.platform.sign(m, fields)?;
        fields.insert("sign".into(), Value::String(sign));
        if order_no.starts_with("TAMPER-SIGN-") {
            fields.insert("errMessage".into(), Value::String("成功!".into()));
        }
        let plaintext = Value::Object(fields.clone()).to_string();
        let mut reqmsg = self.platform.encrypt(m, plaintext.as_bytes())?;
        if order_no.starts_with("TAMPER-CIPHER-") {
            let b64 = base64::engine::general_purpose::STANDARD;
            if let Ok(mut raw) = b64.decode(&reqmsg) {
                let mid = raw.len() / 2;
                raw[mid] ^= 0x5A;
                reqmsg = b64.encode(raw);
            }
        }
        Ok(envelope(&customer, &reqmsg))
    }
}

fn echo(m: &PlatformMerchant, fields: &Map<String, Value>) -> Map<String, Value> {
    let mut out = Map::new();
    out.insert("orderNo".into(), fields.get("orderNo").cloned().unwrap_or(Value::Null));
    out.insert("customerNo".into(), Value::String(m.customer_no.clone()));
    out.insert("errCode".into(), Value::String("0000".into()));
    out.insert("errMessage".into(), Value::String("成功".into()));
    for (k, v) in fields {
        out.insert(format!("echo_{k}"), v.clone());
    }
    out
}

fn reply(status: u16, content_type: &str, body: Vec<u8>) -> Response<Vec<u8>> {
    Response::builder()
        .status(status)
        .header("Content-Type", content_type)
        .header("Content-Length", body.len())
        .body(body)
        .unwrap_or_default()
}

#[async_trait]
impl ServeHttp for SandboxService {
    async fn response(&self, session: &mut ServerSession) -> Response<Vec<u8>> {
        let sb = &self.0;
        let path = session.req_header().uri.path().to_string();
        let method = session.req_header().method.clone();
        if method == http::Method::GET && path == "/__sandbox/stats" {
            return reply(200, "application/json", sb.stats());
        }
        if method == http::Method::GET && path == "/healthz" {
            return reply(200, "text/plain", b"ok\n".to_vec());
        }
        if !path.starts_with("/api/") {
            return reply(404, "text/plain", b"not found\n".to_vec());
        }
        if method != http::Method::POST {
            return reply(405, "text/plain", b"POST only\n".to_vec());
        }
        let mut body = Vec::new();
        loop {
            match session.read_request_body().await {
                Ok(Some(chunk)) if body.len() + chunk.len() <= MAX_REQUEST => body.extend_from_slice(&chunk),
                Ok(Some(_)) => return reply(413, "text/plain", b"too large\n".to_vec()),
                Ok(None) => break,
                Err(_) => return reply(400, "text/plain", b"bad body\n".to_vec()),
            }
        }
        sb.state.received.fetch_add(1, Ordering::Relaxed);
        if let Ok(mut by_path) = sb.state.by_path.lock() {
            *by_path.entry(path.clone()).or_default() += 1;
        }
        let worker = self.0.clone();
        let p = path.clone();
        let done = match tokio::task::spawn_blocking(move || worker.process(&p, &body)).await {
            Ok(r) => r,
            Err(_) => Processed { answer: Answer::Json(500, failure("500", "系统异常")), opened: false, stall: false },
        };
        if !done.opened {
            sb.state.rejected.fetch_add(1, Ordering::Relaxed);
        }
        // The simulated platform being slow (not test synchronisation).
        if done.stall {
            tokio::time::sleep(sb.config.stall).await;
        }
        match done.answer {
            Answer::Json(status, b) => reply(status, "application/json;charset=UTF-8", b),
            Answer::Html(status, b) => reply(status, "text/html; charset=UTF-8", b),
        }
    }
}

/// The pingora app wrapping a shared [`Sandbox`].
pub struct SandboxService(pub Arc<Sandbox>);
