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
//! Java platforms' quirks, in answers and in notifications: `JDK-NUM-` adds numbers as Java
//! prints doubles (`"amount":1.0E10,"rate":5.0E-4,"limits":{"max":2.5E3}`, signed as written),
//! `JDK-BOM-` puts a UTF-8 BOM before the plaintext's JSON (`JDK-NUM-BOM-`: both).
//!
//! Notifications: after a successful bindCard/create the sandbox POSTs a sealed notification
//! to the request's `bindNotifyUrl` (loopback addresses only; a reserved documentation name
//! such as the README's `merchant.example` is skipped with an `info` line), and `POST /__sandbox/notify`
//! with `{"customerNo","orderNo","url","tamper"?,"bindStatus"?}` sends one on demand (`tamper`: `sign`,
//! `customer`, `cipher` or `malformed`) and reports the answer (`status`, `body`) and the bytes
//! it sent (`sent`).
//!
//! `GET /__sandbox/stats` reports what it received and sent; `/__sandbox/inbox` is a stand-in
//! internal service for the demo (POST stores a notification, GET lists the last ones).

use std::collections::{HashMap, HashSet};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use async_trait::async_trait;
use base64::Engine;
use http::Response;
use pingora::apps::http_app::ServeHttp;
use pingora::protocols::http::ServerSession;
use serde_json::{Map, Value};

use std::time::Duration;

use sha2::Digest;

pub mod config;

pub use config::{load_sandbox, load_sandbox_str, SandboxConfig};
use paysign_http::client::{parse_url, Client, Route, DEFAULT_POOL_SIZE};
use paysign_http::reload::Reloadable;
use paysign_http::serve::{read_body, reply, BodyError};
use paysign_protocol::platform::{envelope, failure, Platform, PlatformMerchant};
use paysign_protocol::schema::Endpoints;

const BINDCARD_PATH: &str = "/api/vborder/shortcut/bindCard/create";
/// Requests are small; this only bounds a misbehaving client.
const MAX_REQUEST: usize = 1024 * 1024;
/// Notifications kept by the demo inbox.
const INBOX_KEEP: usize = 20;

pub struct Sandbox {
    client: Client,
    /// `presealed` mode: the answer per customerNo, sealed once at start-up.
    presealed: HashMap<String, Vec<u8>>,
    config: SandboxConfig,
    platform: Platform,
    endpoints: Endpoints,
    state: Arc<State>,
}

/// Notifications being sent at once, at most (beyond: dropped, counted, logged).
const NOTIFICATIONS_IN_FLIGHT: usize = 64;
/// Notifications waiting for their next try, at most (beyond: a new one is dropped, counted).
const NOTIFICATIONS_SCHEDULED: usize = 10_000;
/// A notification send (name lookup, connection, answer) gives up after this.
const NOTIFICATION_TIMEOUT: Duration = Duration::from_secs(15);

/// What the sandbox counts and remembers; kept across reloads.
pub struct State {
    /// Bounds the notifications being sent (and the name lookups they need).
    notification_slots: Arc<tokio::sync::Semaphore>,
    /// Bounds the sandbox's own RSA work: one operation per core at once.
    crypto_slots: tokio::sync::Semaphore,
    notifications_dropped: AtomicU64,
    /// Notifications not yet acknowledged nor abandoned (bounded by NOTIFICATIONS_SCHEDULED).
    notifications_scheduled: Arc<tokio::sync::Semaphore>,
    /// Tries after the first, of notifications not acknowledged.
    notifications_retried: AtomicU64,
    /// Notifications never acknowledged after every try of the schedule.
    notifications_abandoned: AtomicU64,
    generation: AtomicU64,
    opened_previous: AtomicU64,
    received: AtomicU64,
    opened: AtomicU64,
    rejected: AtomicU64,
    notifications_sent: AtomicU64,
    notifications_acked: AtomicU64,
    orders: Mutex<HashSet<(String, String)>>,
    /// The last notifications the demo inbox received.
    inbox: Mutex<Vec<String>>,
    by_path: Mutex<HashMap<String, u64>>,
}

impl Default for State {
    fn default() -> Self {
        State {
            notification_slots: Arc::new(tokio::sync::Semaphore::new(NOTIFICATIONS_IN_FLIGHT)),
            crypto_slots: tokio::sync::Semaphore::new(std::thread::available_parallelism().map_or(1, |n| n.get())),
            notifications_dropped: AtomicU64::new(0),
            notifications_scheduled: Arc::new(tokio::sync::Semaphore::new(NOTIFICATIONS_SCHEDULED)),
            notifications_retried: AtomicU64::default(),
            notifications_abandoned: AtomicU64::default(),
            generation: AtomicU64::default(),
            opened_previous: AtomicU64::default(),
            received: AtomicU64::default(),
            opened: AtomicU64::default(),
            rejected: AtomicU64::default(),
            notifications_sent: AtomicU64::default(),
            notifications_acked: AtomicU64::default(),
            orders: Mutex::default(),
            inbox: Mutex::default(),
            by_path: Mutex::default(),
        }
    }
}

struct Processed {
    answer: Answer,
    /// The request decrypted and verified.
    opened: bool,
    /// A `STALL-` order: answer only after `stall_ms`.
    stall: bool,
    /// Send a notification for (customerNo, orderNo) to this URL after answering.
    notify: Option<(String, String, String)>,
}

/// What the sandbox decided to send back.
enum Answer {
    Json(u16, Vec<u8>),
    Html(u16, Vec<u8>),
}

impl Sandbox {
    pub fn new(config: SandboxConfig, state: Arc<State>) -> Result<Self, String> {
        let platform = Platform { private: config.platform_private.clone(), previous: config.previous_platform_private.clone() };
        let mut sb = Sandbox {
            client: Client::new(None, None, DEFAULT_POOL_SIZE),
            presealed: HashMap::new(),
            platform,
            config,
            endpoints: Endpoints::builtin()?,
            state,
        };
        if sb.config.presealed {
            for m in sb.config.merchants.values() {
                let mut out = sb.bindcard(m, &fields_for_load());
                let body = sb.seal(m, &mut out, "LOAD-1").map_err(|e| e.to_string())?;
                sb.presealed.insert(m.customer_no.clone(), body);
            }
        }
        Ok(sb)
    }

    fn stats(&self) -> Vec<u8> {
        let by_path: Map<String, Value> =
            self.state.by_path.lock().map(|m| m.iter().map(|(k, v)| (k.clone(), Value::from(*v))).collect()).unwrap_or_default();
        serde_json::json!({
            "received": self.state.received.load(Ordering::Relaxed),
            "opened": self.state.opened.load(Ordering::Relaxed),
            "opened_with_previous_keys": self.state.opened_previous.load(Ordering::Relaxed),
            "generation": self.state.generation.load(Ordering::Relaxed),
            "rejected": self.state.rejected.load(Ordering::Relaxed),
            "notifications_sent": self.state.notifications_sent.load(Ordering::Relaxed),
            "notifications_acked": self.state.notifications_acked.load(Ordering::Relaxed),
            "notifications_dropped": self.state.notifications_dropped.load(Ordering::Relaxed),
            "notifications_retried": self.state.notifications_retried.load(Ordering::Relaxed),
            "notifications_abandoned": self.state.notifications_abandoned.load(Ordering::Relaxed),
            "by_path": by_path,
        })
        .to_string()
        .into_bytes()
    }

    /// The platform's handling of one sealed request (synchronous: crypto only).
    fn process(&self, path: &str, body: &[u8]) -> Processed {
        let reject =
            |code: &str, msg: &str| Processed { answer: Answer::Json(200, failure(code, msg)), opened: false, stall: false, notify: None };
        let Ok(Value::Object(env)) = serde_json::from_slice::<Value>(body) else {
            return reject("400", "请求报文格式错误");
        };
        let (Some(customer), Some(reqmsg)) = (env.get("customerNo").and_then(Value::as_str), env.get("reqmsg").and_then(Value::as_str))
        else {
            return reject("400", "缺少customerNo或reqmsg");
        };
        let Some(current) = self.config.merchants.get(customer) else {
            return reject("401", "商户不存在");
        };
        let Ok((_text, mut fields, previous)) = self.platform.open_request_rotating(current, reqmsg) else {
            return reject("402", "验签失败");
        };
        self.state.opened.fetch_add(1, Ordering::Relaxed);
        // During a rotation, answer a request made with the retiring keys in those keys.
        let retiring = if previous { current.with_previous_keys() } else { None };
        if retiring.is_some() {
            self.state.opened_previous.fetch_add(1, Ordering::Relaxed);
        }
        let m = retiring.as_ref().unwrap_or(current);
        fields.remove("sign");
        let order_no = fields.get("orderNo").and_then(Value::as_str).unwrap_or("").to_string();

        let done = |answer| Processed { answer, opened: true, stall: order_no.starts_with("STALL-"), notify: None };
        if order_no.starts_with("TAMPER-PLATFORM-") {
            return done(Answer::Json(200, failure("500", "系统繁忙")));
        }
        if order_no.starts_with("TAMPER-HTML-") {
            return done(Answer::Html(502, b"<html><body><h1>502 Bad Gateway</h1></body></html>".to_vec()));
        }
        let mut out = if path == BINDCARD_PATH { self.bindcard(m, &fields) } else { echo(m, &fields) };
        let succeeded = path == BINDCARD_PATH && out.get("errCode").and_then(Value::as_str) == Some("0000");
        let mut processed = match self.seal(m, &mut out, &order_no) {
            Ok(body) => done(Answer::Json(200, body)),
            Err(_) => done(Answer::Json(200, failure("500", "系统异常"))),
        };
        if succeeded && self.config.send_notifications {
            if let Some(url) = fields.get("bindNotifyUrl").and_then(Value::as_str) {
                match reserved_host(url) {
                    // The demo's and the tests' placeholder URLs name nobody: nothing to warn about.
                    Some(host) => tracing::info!(
                        "sandbox does not notify order {order_no}: {host} is a reserved documentation name (RFC 2606), not a receiver"
                    ),
                    None => processed.notify = Some((m.customer_no.clone(), order_no.clone(), url.to_string())),
                }
            }
        }
        processed
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
        let fresh = !["TAMPER-", "STALL-", "H5-", "JDK-"].iter().any(|p| order_no.starts_with(p));
        let first =
            self.state.orders.lock().map(|mut seen| !fresh || seen.insert((m.customer_no.clone(), order_no.to_string()))).unwrap_or(false);
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
    fn seal(
        &self,
        m: &PlatformMerchant,
        fields: &mut Map<String, Value>,
        order_no: &str,
    ) -> Result<Vec<u8>, paysign_protocol::crypto::CryptoError> {
        let mut customer = m.customer_no.clone();
        if order_no.starts_with("TAMPER-CUSTOMER-") {
            customer = "999999999999".into();
            fields.insert("customerNo".into(), Value::String(customer.clone()));
        }
        let plaintext = match java_quirks(order_no) {
            Some(quirks) => self.java_plaintext(m, fields, quirks)?,
            None => {
                let sign = self.platform.sign(m, fields)?;
                fields.insert("sign".into(), Value::String(sign));
                if order_no.starts_with("TAMPER-SIGN-") {
                    fields.insert("errMessage".into(), Value::String("成功!".into()));
                }
                Value::Object(fields.clone()).to_string()
            }
        };
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

impl Sandbox {
    /// A sealed `{"customerNo","reqmsg"}` notification for a bound card.
    fn notification(
        &self,
        m: &PlatformMerchant,
        order_no: &str,
        tamper: Option<&str>,
        bind_status: Option<&str>,
    ) -> Result<Vec<u8>, String> {
        if tamper == Some("malformed") {
            return Ok(b"{\"customerNo\":".to_vec());
        }
        let digest = sha2::Sha256::digest(format!("{}|{order_no}", m.customer_no).as_bytes());
        let bind_id = hex::encode_upper(&digest[..8]);
        let mut fields = Map::new();
        fields.insert("orderNo".into(), Value::String(order_no.into()));
        fields.insert("customerNo".into(), Value::String(m.customer_no.clone()));
        fields.insert("bindStatus".into(), Value::String(bind_status.unwrap_or("SUCCESS").into()));
        fields.insert("bindId".into(), Value::String(format!("BIND{bind_id}")));
        fields.insert("errCode".into(), Value::String("0000".into()));
        fields.insert("errMessage".into(), Value::String("绑卡成功".into()));
        let mut customer = m.customer_no.clone();
        if tamper == Some("customer") {
            customer = "999999999999".into();
            fields.insert("customerNo".into(), Value::String(customer.clone()));
        }
        let plaintext = match java_quirks(order_no) {
            Some(quirks) => self.java_plaintext(m, &fields, quirks).map_err(|e| e.to_string())?,
            None => {
                let sign = self.platform.sign(m, &fields).map_err(|e| e.to_string())?;
                fields.insert("sign".into(), Value::String(sign));
                if tamper == Some("sign") {
                    fields.insert("bindStatus".into(), Value::String("FAILED".into()));
                }
                Value::Object(fields).to_string()
            }
        };
        let mut reqmsg = self.platform.encrypt(m, plaintext.as_bytes()).map_err(|e| e.to_string())?;
        if tamper == Some("cipher") {
            let b64 = base64::engine::general_purpose::STANDARD;
            if let Ok(mut raw) = b64.decode(&reqmsg) {
                raw[10] ^= 0x20;
                reqmsg = b64.encode(raw);
            }
        }
        let mut data = Map::new();
        data.insert("customerNo".into(), Value::String(customer));
        data.insert("reqmsg".into(), Value::String(reqmsg));
        Ok(Value::Object(data).to_string().into_bytes())
    }

    /// POSTs a notification to `url` (loopback only) and returns the answer.
    async fn send_notification(&self, url: String, body: Vec<u8>) -> Result<(u16, String), String> {
        let target = tokio::task::spawn_blocking(move || parse_url(&url).map_err(|e| e.to_string())).await.map_err(|e| e.to_string())??;
        if let Some(a) = target.addrs.iter().find(|a| !a.ip().is_loopback()) {
            return Err(format!("{a} is not a loopback address; the sandbox only notifies this machine"));
        }
        let route = Route::new(target, Duration::from_secs(2), Duration::from_secs(10), true);
        let path = if route.target.path.is_empty() { "/".to_string() } else { route.target.path.clone() };
        self.state.notifications_sent.fetch_add(1, Ordering::Relaxed);
        let headers = [("Content-Type", "application/json;charset=UTF-8")];
        let answer = self.client.post(&route, &path, &headers, body.into(), || {}).await.map_err(|e| format!("{e:?}"))?;
        let text = String::from_utf8_lossy(&answer.body).into_owned();
        if answer.status == 200 && text.trim() == "SUCCESS" {
            self.state.notifications_acked.fetch_add(1, Ordering::Relaxed);
        }
        Ok((answer.status, text))
    }

    /// The platform side's RSA work (opening requests, sealing answers and notifications): on
    /// the blocking pool, at most one operation per core at once — a load test cannot grow the
    /// sandbox's threads without bound, and the event loop never runs RSA.
    async fn platform_work<T: Send + 'static>(self: &Arc<Self>, f: impl FnOnce(&Sandbox) -> T + Send + 'static) -> Result<T, String> {
        let _slot = self.state.crypto_slots.acquire().await.map_err(|e| e.to_string())?;
        let sb = self.clone();
        tokio::task::spawn_blocking(move || f(&sb)).await.map_err(|e| e.to_string())
    }

    /// One order's notification, as a platform sends it: tried, and tried again after each
    /// delay of `notify_retry` until the receiver acknowledges (HTTP 200 `SUCCESS`), each try
    /// sealed afresh (a new encryption of the same content).
    async fn notify_until_acknowledged(self: Arc<Self>, customer: String, order: String, url: String) {
        let Some(m) = self.config.merchants.get(&customer).cloned() else {
            return;
        };
        // Held until acknowledged or abandoned: a flood of orders cannot schedule retries
        // without bound.
        let Ok(_scheduled) = self.state.notifications_scheduled.clone().try_acquire_owned() else {
            self.state.notifications_dropped.fetch_add(1, Ordering::Relaxed);
            tracing::warn!("sandbox dropped the notification for order {order}: {NOTIFICATIONS_SCHEDULED} already scheduled");
            return;
        };
        let mut delays = self.config.notify_retry.clone().into_iter();
        for attempt in 1.. {
            let Ok(slot) = self.state.notification_slots.clone().try_acquire_owned() else {
                self.state.notifications_dropped.fetch_add(1, Ordering::Relaxed);
                tracing::warn!("sandbox dropped the notification for order {order}: {NOTIFICATIONS_IN_FLIGHT} already in flight");
                return;
            };
            let send = async {
                let (m, order) = (m.clone(), order.clone());
                let n = self.platform_work(move |sb| sb.notification(&m, &order, None, None)).await??;
                self.send_notification(url.clone(), n).await
            };
            let acknowledged = match tokio::time::timeout(NOTIFICATION_TIMEOUT, send).await {
                Ok(Ok((status, body))) => {
                    tracing::info!("sandbox notified order {order} (try {attempt}): HTTP {status}");
                    status == 200 && body.trim() == "SUCCESS"
                }
                Ok(Err(e)) => {
                    tracing::warn!("sandbox could not notify order {order} (try {attempt}): {e}");
                    false
                }
                Err(_) => {
                    tracing::warn!("sandbox gave up try {attempt} notifying order {order} after {NOTIFICATION_TIMEOUT:?}");
                    false
                }
            };
            drop(slot);
            if acknowledged {
                return;
            }
            let Some(delay) = delays.next() else {
                self.state.notifications_abandoned.fetch_add(1, Ordering::Relaxed);
                tracing::warn!("sandbox abandoned the notification for order {order} after {attempt} tries");
                return;
            };
            // The platform's retry schedule (not test synchronisation).
            tokio::time::sleep(delay).await;
            self.state.notifications_retried.fetch_add(1, Ordering::Relaxed);
        }
    }

    async fn notify_on_demand(self: &Arc<Self>, body: &[u8]) -> Response<Vec<u8>> {
        let Ok(Value::Object(req)) = serde_json::from_slice::<Value>(body) else {
            return reply(400, "application/json", br#"{"error":"body must be a JSON object"}"#.to_vec());
        };
        let get = |k: &str| req.get(k).and_then(Value::as_str).map(str::to_string);
        let (Some(customer), Some(order), Some(url)) = (get("customerNo"), get("orderNo"), get("url")) else {
            return reply(400, "application/json", br#"{"error":"customerNo, orderNo and url are required"}"#.to_vec());
        };
        let Some(m) = self.config.merchants.get(&customer).cloned() else {
            return reply(404, "application/json", br#"{"error":"unknown customerNo"}"#.to_vec());
        };
        let (tamper, bind_status) = (get("tamper"), get("bindStatus"));
        let sealed = self.platform_work(move |sb| sb.notification(&m, &order, tamper.as_deref(), bind_status.as_deref())).await;
        // What was sent is in the answer (`sent`): a test re-sends exactly these bytes, as a
        // platform retrying without re-encrypting does.
        let result = match sealed.and_then(|n| n) {
            Ok(n) => {
                let sent = String::from_utf8_lossy(&n).into_owned();
                self.send_notification(url, n).await.map(|r| (r, sent))
            }
            Err(e) => Err(e),
        };
        let out = match result {
            Ok(((status, body), sent)) => serde_json::json!({ "status": status, "body": body, "sent": sent }),
            Err(e) => serde_json::json!({ "error": e }),
        };
        reply(200, "application/json", out.to_string().into_bytes())
    }
}

/// Which Java quirks an order asks for: (exponent numbers, a leading BOM).
fn java_quirks(order_no: &str) -> Option<(bool, bool)> {
    let rest = order_no.strip_prefix("JDK-")?;
    let numbers = rest.starts_with("NUM-");
    let bom = rest.strip_prefix("NUM-").unwrap_or(rest).starts_with("BOM-");
    (numbers || bom).then_some((numbers, bom))
}

impl Sandbox {
    /// The signed plaintext as a Java-built platform writes it: with `numbers`, members whose
    /// numbers Java prints in exponent form, signed over their text exactly as written; with
    /// `bom`, a UTF-8 byte-order mark before the JSON.
    fn java_plaintext(
        &self,
        m: &PlatformMerchant,
        fields: &Map<String, Value>,
        (numbers, bom): (bool, bool),
    ) -> Result<String, paysign_protocol::crypto::CryptoError> {
        use paysign_protocol::canonical::{canonical_of, Part};
        // As Java prints these doubles. Written into the canonical string verbatim (as text),
        // not through any JSON reading: a parsed map would rewrite `1.0E10` as `1.0e+10`.
        let java: &[(&str, &str)] = if numbers { &[("amount", "1.0E10"), ("rate", "5.0E-4"), ("limits", r#"{"max":2.5E3}"#)] } else { &[] };
        let members = fields.iter().map(|(k, v)| (k.as_str(), Part::of(v))).chain(java.iter().map(|(k, v)| (*k, Part::Text(v))));
        let sign = self.platform.sign_canonical(m, &canonical_of(members))?;
        let mut text = Value::Object(fields.clone()).to_string();
        text.pop();
        for (k, v) in java {
            text.push_str(&format!(",\"{k}\":{v}"));
        }
        text.push_str(",\"sign\":");
        text.push_str(&Value::String(sign).to_string());
        text.push('}');
        if bom {
            text.insert(0, '\u{feff}');
        }
        Ok(text)
    }
}

/// A valid bindCard request for the presealed answer (a fixed, repeatable order).
fn fields_for_load() -> Map<String, Value> {
    serde_json::json!({
        "orderNo": "H5-LOAD-1", "userType": "EMAIL", "identifyId": "load@example.test", "bankCardType": "DEBIT",
        "bankCode": "ICBC", "bankCardName": "load", "certType": "ID", "certNo": "0", "mobile": "0",
        "bindNotifyUrl": "http://127.0.0.1/", "pageReturnUrl": "http://127.0.0.1/"
    })
    .as_object()
    .cloned()
    .unwrap_or_default()
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

#[async_trait]
impl ServeHttp for SandboxService {
    async fn response(&self, session: &mut ServerSession) -> Response<Vec<u8>> {
        let sb = &self.current();
        let path = session.req_header().uri.path().to_string();
        let method = session.req_header().method.clone();
        if method == http::Method::GET && path == "/__sandbox/stats" {
            return reply(200, "application/json", sb.stats());
        }
        if method == http::Method::GET && path == "/healthz" {
            return reply(200, "text/plain", b"ok\n".to_vec());
        }
        if path == "/__sandbox/inbox" {
            // A stand-in internal service for the demo: it takes what paysign forwards.
            if method == http::Method::POST {
                let Ok(body) = read_body(session, MAX_REQUEST).await else {
                    return reply(413, "text/plain", b"too large or unreadable\n".to_vec());
                };
                if let Ok(mut inbox) = sb.state.inbox.lock() {
                    inbox.push(String::from_utf8_lossy(&body).into_owned());
                    let excess = inbox.len().saturating_sub(INBOX_KEEP);
                    inbox.drain(..excess);
                }
                return reply(200, "text/plain", b"ok\n".to_vec());
            }
            let inbox = sb.state.inbox.lock().map(|i| i.clone()).unwrap_or_default();
            return reply(200, "application/json", serde_json::json!({ "received": inbox }).to_string().into_bytes());
        }
        if method == http::Method::POST && path == "/__sandbox/notify" {
            let Ok(body) = read_body(session, MAX_REQUEST).await else {
                return reply(413, "text/plain", b"too large or unreadable\n".to_vec());
            };
            return sb.notify_on_demand(&body).await;
        }
        if !path.starts_with("/api/") {
            return reply(404, "text/plain", b"not found\n".to_vec());
        }
        if method != http::Method::POST {
            return reply(405, "text/plain", b"POST only\n".to_vec());
        }
        let body = match read_body(session, MAX_REQUEST).await {
            Ok(b) => b,
            Err(BodyError::TooLarge) => return reply(413, "text/plain", b"too large\n".to_vec()),
            Err(BodyError::Unreadable) => return reply(400, "text/plain", b"bad body\n".to_vec()),
        };
        sb.state.received.fetch_add(1, Ordering::Relaxed);
        if sb.config.presealed {
            // Load-test mode: no platform-side crypto, the customerNo picks the answer.
            let customer = serde_json::from_slice::<Value>(&body)
                .ok()
                .and_then(|v| v.get("customerNo").and_then(Value::as_str).map(str::to_string))
                .unwrap_or_default();
            return match sb.presealed.get(&customer) {
                Some(answer) => reply(200, "application/json;charset=UTF-8", answer.clone()),
                None => reply(200, "application/json;charset=UTF-8", failure("401", "商户不存在")),
            };
        }
        if let Ok(mut by_path) = sb.state.by_path.lock() {
            *by_path.entry(path.clone()).or_default() += 1;
        }
        let p = path.clone();
        let done = match sb.platform_work(move |sb| sb.process(&p, &body)).await {
            Ok(r) => r,
            Err(_) => Processed { answer: Answer::Json(500, failure("500", "系统异常")), opened: false, stall: false, notify: None },
        };
        if !done.opened {
            sb.state.rejected.fetch_add(1, Ordering::Relaxed);
        }
        // Notifications leave off the request path, bounded: at most NOTIFICATIONS_IN_FLIGHT
        // tries at once (their name lookups included), each within NOTIFICATION_TIMEOUT; one not
        // acknowledged is tried again on the configured schedule, holding no slot meanwhile.
        if let Some((customer, order, url)) = done.notify {
            let sb = sb.clone();
            tokio::spawn(async move { sb.notify_until_acknowledged(customer, order, url).await });
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

/// The pingora app over a shared [`SandboxService`] (shared with the SIGHUP handler).
pub struct SandboxApp(pub Arc<SandboxService>);

#[async_trait]
impl ServeHttp for SandboxApp {
    async fn response(&self, session: &mut ServerSession) -> Response<Vec<u8>> {
        ServeHttp::response(&*self.0, session).await
    }
}

/// The sandbox behind its listener: the current [`Sandbox`], replaced whole on reload (counters and seen
/// orders survive in the shared [`State`]).
pub struct SandboxService {
    path: std::path::PathBuf,
    state: Arc<State>,
    current: Reloadable<Sandbox>,
}

impl SandboxService {
    pub fn new(config: SandboxConfig) -> Result<Self, String> {
        let state = Arc::new(State::default());
        state.generation.store(1, Ordering::Relaxed);
        let path = config.source.clone();
        let sb = Sandbox::new(config, state.clone())?;
        Ok(SandboxService { path, state, current: Reloadable::new(sb) })
    }

    fn current(&self) -> Arc<Sandbox> {
        self.current.current()
    }

    /// Loads the sandbox configuration again (keys included) and swaps it in.
    pub fn reload(&self) -> Result<(), String> {
        self.current.reload_and(
            |_| {
                let config = crate::config::load_sandbox(&self.path).map_err(|e| e.to_string())?;
                Sandbox::new(config, self.state.clone())
            },
            |_| {
                let g = self.state.generation.fetch_add(1, Ordering::Relaxed) + 1;
                tracing::info!("sandbox configuration reloaded: generation {g}");
            },
        )?;
        Ok(())
    }
}

/// The host of `url` when it is a name reserved for documentation and testing (RFC 2606,
/// RFC 6761: `example`, `example.com|net|org`, `test`, `invalid`, and names under them), which
/// no receiver can have: the sandbox does not try to notify it.
fn reserved_host(url: &str) -> Option<String> {
    let rest = url.split_once("://").map_or(url, |(_, r)| r);
    let authority = rest.split(['/', '?', '#']).next().unwrap_or("");
    let host = authority.rsplit_once('@').map_or(authority, |(_, h)| h);
    let host = if host.starts_with('[') { host } else { host.split(':').next().unwrap_or("") };
    let host = host.trim_end_matches('.').to_ascii_lowercase();
    let reserved = ["example", "example.com", "example.net", "example.org", "test", "invalid"];
    reserved.iter().any(|r| host == *r || host.ends_with(&format!(".{r}"))).then_some(host)
}

#[cfg(test)]
mod reserved_tests {
    #[test]
    fn documentation_names_are_not_receivers() {
        for (url, host) in [
            ("http://merchant.example/notify", Some("merchant.example")),
            ("https://EXAMPLE.com:8443/x", Some("example.com")),
            ("http://merchant.example.test/notify", Some("merchant.example.test")),
            ("http://a.invalid", Some("a.invalid")),
            ("http://127.0.0.1:8081/notify/bindcard", None),
            ("http://localhost:8081/", None),
            ("http://myexample.com/", None),
            ("http://[::1]:8081/n", None),
        ] {
            assert_eq!(super::reserved_host(url).as_deref(), host, "{url}");
        }
    }
}
