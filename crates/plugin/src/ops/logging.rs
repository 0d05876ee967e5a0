//! Structured logs. paysign logs through `tracing` only — application lines and access lines
//! ([`access_line`]: one event on [`ACCESS_TARGET`] carrying the line's JSON) — so they go to
//! whatever subscriber the embedder installed. The binary installs [`init`]'s: one JSON object
//! per line on stderr (pingora's `log` records bridged into it), the access line's JSON as the
//! line itself; every line leaves through one writer thread (`log_writer`), so
//! logging never blocks a request on stderr. Nothing secret or
//! personal is ever passed in: callers log customer numbers, order numbers, outcomes and
//! sizes, never keys, `sign`, `reqmsg` or the personal fields of a request.

use std::sync::atomic::{AtomicU8, Ordering};

use serde_json::{Map, Value};
use tracing::field::{Field, Visit};
use tracing::{Event, Level, Subscriber};
use tracing_log::NormalizeEvent;
use tracing_subscriber::layer::{Context, SubscriberExt};
use tracing_subscriber::util::SubscriberInitExt;
use tracing_subscriber::Layer;

use crate::log_writer;
pub use crate::log_writer::{flush, timestamp, EXIT_WAIT};

/// A line's `ts`, formatted (RFC 3339, see [`timestamp`]) only when the line is serialised:
/// nothing is formatted for an access line that is not written.
pub struct Now;

impl serde::Serialize for Now {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&timestamp())
    }
}

/// The most verbose level written (`tracing::Level` as 1 = error … 5 = trace).
static MAX_LEVEL: AtomicU8 = AtomicU8::new(3);

fn rank(level: &Level) -> u8 {
    match *level {
        Level::ERROR => 1,
        Level::WARN => 2,
        Level::INFO => 3,
        Level::DEBUG => 4,
        Level::TRACE => 5,
    }
}

/// Formats every event (paysign's own, and pingora's `log` records bridged by `tracing-log`)
/// as one JSON line: `{"ts","level","target","msg"}`.
struct JsonLines;

/// Collects an event's message (and any other fields, as text) for the line.
#[derive(Default)]
struct Fields {
    msg: String,
    extra: Vec<(&'static str, String)>,
}

impl Visit for Fields {
    fn record_str(&mut self, field: &Field, value: &str) {
        match field.name() {
            "message" => self.msg = value.to_string(),
            name if name.starts_with("log.") => {}
            name => self.extra.push((name, value.to_string())),
        }
    }

    fn record_debug(&mut self, field: &Field, value: &dyn std::fmt::Debug) {
        match field.name() {
            "message" => self.msg = format!("{value:?}"),
            name if name.starts_with("log.") => {}
            name => self.extra.push((name, format!("{value:?}"))),
        }
    }
}

/// Whether a record is paysign's own (its crates are `paysign`, `paysign_plugin`, …): those
/// never carry a secret (see the module doc); every other crate's records are bridged through
/// [`foreign_level`] and [`redact`].
fn is_own(target: &str) -> bool {
    target.starts_with("paysign")
}

/// The level another crate's record is written at, or `None` when it is never written.
/// pingora's lifecycle lines (bootstrap, each service starting, shutdown steps: ~60 per run)
/// say nothing an operator acts on: `info` becomes `debug`, where paysign's own lines say
/// what was loaded and what listens. `trace` records of other crates are wire dumps — pingora
/// traces every request head (bearer tokens in `Authorization`) and response body (`reqmsg`,
/// personal data) — so they are not written at any level.
///
/// One exception: a new process started with `--upgrade` logs "No incoming socket transfer"
/// at `error` once a second while it waits for the running one's sockets — the expected state
/// of every upgrade until the old process hands over, so it is `info`, not an error.
fn foreign_level(level: Level, target: &str, msg: &str) -> Option<Level> {
    if target.ends_with("transfer_fd") && msg.starts_with("No incoming socket transfer") {
        return Some(Level::INFO);
    }
    // pingora reports a head paysign refused itself (listener.rs: a late one, one over a bound)
    // as its own error; paysign's access line or metric already counts it, and an outsider
    // could write error lines at the rate it opens connections.
    if msg.contains("cause: request head not received in time") || msg.contains("cause: request refused") {
        return Some(Level::DEBUG);
    }
    match level {
        Level::TRACE => None,
        Level::INFO => Some(Level::DEBUG),
        other => Some(other),
    }
}

/// Headers whose values are credentials, blanked wherever another crate's record prints a
/// header map or a request head (`"authorization": "Bearer …"` or `authorization: Bearer …`).
const SECRET_HEADERS: &[&str] = &["authorization", "proxy-authorization", "cookie", "set-cookie"];
/// JSON fields that are secret or personal (the platform's `sign` and `reqmsg`, the request's
/// personal fields), blanked wherever another crate's record prints a body.
const SECRET_FIELDS: &[&str] = &["sign", "reqmsg", "certNo", "mobile", "bankCardName", "identifyId", "md5Key", "key"];
const REDACTED: &str = "[redacted]";

/// Another crate's message with every credential and personal value replaced: the values of
/// [`SECRET_HEADERS`], anything after `Bearer `, and the values of [`SECRET_FIELDS`] (also when
/// escaped inside a printed string, `\"certNo\":\"…`). pingora prints a refused head as
/// it came (`buf: …`, with the body of the same write), so spacing is the sender's: a JSON
/// `"certNo": "…"` (Python's `json.dumps`), `Authorization:Bearer  …`.
fn redact(msg: &str) -> String {
    let mut out = msg.to_string();
    for h in SECRET_HEADERS {
        // A printed header map (`"authorization": "…"`) and a raw head (`authorization: …`).
        out = blank_value(&out, &format!("\"{h}\""), Some(":"), "\"", true);
        out = blank_value(&out, &format!("{h}:"), None, "\\\r\n\"", true);
    }
    out = blank_value(&out, "bearer ", None, " \"\\,;}", true);
    for f in SECRET_FIELDS {
        out = blank_value(&out, &format!("\"{f}\""), Some(":"), "\",}] \\", false);
        out = blank_value(&out, &format!("\\\"{f}\\\""), Some(":"), "\",}] \\", false);
    }
    out
}

/// `text` with the value after each `marker` replaced by [`REDACTED`] (`any_case`: the marker
/// matched without regard to ASCII case). The spacing after `marker` is skipped (and then
/// `then`, e.g. a JSON colon, and its spacing; where `then` does not follow, the text is left
/// alone); a quoted value (`"…"` or the escaped `\"…\"`) is blanked up to its closing quote, a bare one
/// (a JSON number, a header value) up to the first character of `stop`.
fn blank_value(text: &str, marker: &str, then: Option<&str>, stop: &str, any_case: bool) -> String {
    let hay = if any_case { text.to_ascii_lowercase() } else { text.to_string() };
    let skip = |at: usize| at + text[at..].len() - text[at..].trim_start_matches([' ', '\t']).len();
    let mut out = String::with_capacity(text.len());
    let mut from = 0;
    while let Some(i) = hay[from..].find(marker) {
        let mut start = skip(from + i + marker.len());
        if let Some(then) = then {
            if !text[start..].starts_with(then) {
                out.push_str(&text[from..start]);
                from = start;
                continue;
            }
            start = skip(start + then.len());
        }
        let (open, close) = if text[start..].starts_with("\\\"") {
            (2, "\\\"")
        } else if text[start..].starts_with('"') {
            (1, "\"")
        } else {
            (0, "")
        };
        start += open;
        out.push_str(&text[from..start]);
        out.push_str(REDACTED);
        let end = if open > 0 { text[start..].find(close) } else { text[start..].find(|c: char| stop.contains(c)) };
        from = end.map_or(text.len(), |j| start + j);
    }
    out.push_str(&text[from..]);
    out
}

impl<S: Subscriber> Layer<S> for JsonLines {
    fn enabled(&self, metadata: &tracing::Metadata<'_>, _: Context<'_, S>) -> bool {
        rank(metadata.level()) <= MAX_LEVEL.load(Ordering::Relaxed)
    }

    fn on_event(&self, event: &Event<'_>, _: Context<'_, S>) {
        // An access line is already the JSON line (written without waiting: see log_writer).
        if event.metadata().target() == ACCESS_TARGET {
            event.record(&mut AccessJson);
            return;
        }
        // A bridged `log` record carries its real target and level in its normalized metadata.
        let normalized = event.normalized_metadata();
        let meta = normalized.as_ref().unwrap_or_else(|| event.metadata());
        let own = is_own(meta.target());
        let mut fields = Fields::default();
        event.record(&mut fields);
        let level = if own { Some(*meta.level()) } else { foreign_level(*meta.level(), meta.target(), &fields.msg) };
        let Some(level) = level.filter(|l| rank(l) <= MAX_LEVEL.load(Ordering::Relaxed)) else {
            return;
        };
        let clean = |text: String| if own { text } else { redact(&text) };
        let mut m = Map::new();
        m.insert("ts".into(), Value::String(timestamp()));
        m.insert("level".into(), Value::String(level.as_str().to_ascii_lowercase()));
        m.insert("target".into(), Value::String(meta.target().to_string()));
        m.insert("msg".into(), Value::String(clean(fields.msg)));
        for (k, v) in fields.extra {
            m.insert(k.into(), Value::String(clean(v)));
        }
        write_line(&Value::Object(m), true);
    }
}

/// Queues one line; `urgent`: without waiting for the batch to fill (all but access lines).
fn write_line(v: &Value, urgent: bool) {
    let mut line = v.to_string();
    line.push('\n');
    log_writer::write(line.as_bytes(), urgent);
}

/// The levels `PAYSIGN_LOG` accepts (any ASCII case); unset or empty means `info`.
pub const LEVELS: &[&str] = &["error", "warn", "info", "debug", "trace"];

/// `PAYSIGN_LOG`'s value as a level; anything but [`LEVELS`] is refused, so a typo
/// (`verbose`) does not silently log at `info`.
pub fn parse_level(value: Option<&str>) -> Result<Level, LevelError> {
    let value = value.map(str::trim).unwrap_or("");
    match value.to_ascii_lowercase().as_str() {
        "" | "info" => Ok(Level::INFO),
        "error" => Ok(Level::ERROR),
        "warn" => Ok(Level::WARN),
        "debug" => Ok(Level::DEBUG),
        "trace" => Ok(Level::TRACE),
        _ => Err(LevelError(value.into())),
    }
}

/// A `PAYSIGN_LOG` value that is not one of [`LEVELS`].
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("PAYSIGN_LOG={0:?} is not a log level: use one of {levels}", levels = LEVELS.join(", "))]
pub struct LevelError(pub String);

/// Installs the `tracing` subscriber and the bridge for `log` records (pingora logs through
/// `log`); `PAYSIGN_LOG` = error|warn|info|debug|trace (default info). An unknown level is an
/// error (nothing is installed).
pub fn init() -> Result<(), LevelError> {
    let level = parse_level(std::env::var("PAYSIGN_LOG").ok().as_deref())?;
    MAX_LEVEL.store(rank(&level), Ordering::Relaxed);
    // Other crates' `info` is written at `debug` and their `trace` never (see `foreign_level`):
    // the bridge need not pass what cannot be written.
    let log_level = match level {
        Level::ERROR => log::LevelFilter::Error,
        Level::WARN => log::LevelFilter::Warn,
        Level::INFO => log::LevelFilter::Warn,
        Level::DEBUG | Level::TRACE => log::LevelFilter::Debug,
    };
    let _ = tracing_log::LogTracer::init_with_filter(log_level);
    let _ = tracing_subscriber::registry().with(JsonLines).try_init();
    Ok(())
}

/// The `tracing` target of access lines: each is one `info` event whose field `json` is the
/// whole line, serialised once (an embedder's subscriber gets it as any other event; the
/// binary's [`init`] writes it as the line itself).
pub const ACCESS_TARGET: &str = "paysign::access";

/// Emits one access line (see [`ACCESS_TARGET`]).
fn access_event(json: &str) {
    tracing::info!(target: ACCESS_TARGET, json, "access");
}

/// Whether an access line would be taken by the subscriber in force: when not, nothing is
/// serialised.
fn access_enabled() -> bool {
    tracing::enabled!(target: ACCESS_TARGET, Level::INFO)
}

/// Emits the access line `fields` plus `ts`, `level` and `msg: "access"`.
pub fn access(mut fields: Map<String, Value>) {
    if !access_enabled() {
        return;
    }
    fields.insert("ts".into(), Value::String(timestamp()));
    fields.insert("level".into(), Value::String("info".into()));
    fields.insert("msg".into(), Value::String("access".into()));
    access_event(&Value::Object(fields).to_string());
}

/// Emits an access line serialised from `line` (its fields in declaration order), when the
/// subscriber takes access lines; no intermediate map.
pub fn access_line<T: serde::Serialize>(line: &T) {
    if !access_enabled() {
        return;
    }
    // One buffer per thread, reused: the line is copied once, by whoever takes the event.
    thread_local! {
        static BUF: std::cell::RefCell<Vec<u8>> = std::cell::RefCell::new(Vec::with_capacity(512));
    }
    let emit = |buf: &mut Vec<u8>| {
        buf.clear();
        if serde_json::to_writer(&mut *buf, line).is_ok() {
            // serde_json writes UTF-8: the check cannot fail (and costs far less than the line).
            if let Ok(json) = std::str::from_utf8(buf) {
                access_event(json);
            }
        }
        // A rare huge line does not stay resident on every thread.
        buf.shrink_to(4096);
    };
    // Re-entered (a subscriber that logs an access line while taking one): a buffer of its own.
    BUF.with(|b| match b.try_borrow_mut() {
        Ok(mut buf) => emit(&mut buf),
        Err(_) => emit(&mut Vec::new()),
    });
}

/// Writes an access event's `json` field as the line, as it is.
struct AccessJson;

impl Visit for AccessJson {
    fn record_str(&mut self, field: &Field, value: &str) {
        if field.name() == "json" {
            log_writer::write_str_line(value, false);
        }
    }

    fn record_debug(&mut self, _: &Field, _: &dyn std::fmt::Debug) {}
}

/// A new request id: 128 random bits as 32 hex digits (for `X-Request-Id`).
pub fn new_request_id() -> String {
    hex::encode(rand::random::<[u8; 16]>())
}

#[cfg(test)]
mod tests {
    #[test]
    fn now_is_serialised_as_the_moment_of_writing_in_rfc3339() {
        let before = super::timestamp();
        let json = serde_json::to_string(&super::Now).unwrap();
        let after = super::timestamp();
        let ts: String = serde_json::from_str(&json).unwrap();
        assert_eq!((ts.len(), &ts[4..5], &ts[10..11], &ts[19..20], &ts[23..]), (24, "-", "T", ".", "Z"), "{ts}");
        assert!(before <= ts && ts <= after, "{before} {ts} {after}");
    }

    #[test]
    fn only_the_five_levels_are_accepted() {
        use tracing::Level;
        for (given, level) in [(None, Level::INFO), (Some(""), Level::INFO), (Some("TRACE"), Level::TRACE), (Some(" warn "), Level::WARN)] {
            assert_eq!(super::parse_level(given), Ok(level), "{given:?}");
        }
        for bad in ["verbose", "3", "information", "off"] {
            assert_eq!(
                super::parse_level(Some(bad)).map_err(|e| e.to_string()),
                Err(format!("PAYSIGN_LOG={bad:?} is not a log level: use one of error, warn, info, debug, trace"))
            );
        }
    }

    /// What pingora prints at debug and trace (a request head's `Debug`, a raw head, a body)
    /// loses every credential and personal value.
    #[test]
    fn other_crates_records_are_redacted() {
        let head = r#"Request header: RequestHeader { base: Parts { method: POST, uri: /api/x, headers: {"host": "h", "authorization": "Bearer tok-123", "x-paysign-merchant": "1"} } }"#;
        assert_eq!(
            super::redact(head),
            r#"Request header: RequestHeader { base: Parts { method: POST, uri: /api/x, headers: {"host": "h", "authorization": "[redacted]", "x-paysign-merchant": "1"} } }"#
        );
        let raw = r"Writing request header: b'POST / HTTP/1.1
Authorization: Bearer tok-456
Host: h

'";
        assert_eq!(
            super::redact(raw),
            r"Writing request header: b'POST / HTTP/1.1
Authorization: [redacted]
Host: h

'"
        );
        let body = r#"Response body: Some(b"{"certNo":"110101","mobile":"139","sign":"AB","orderNo":"O-1"}")"#;
        assert_eq!(
            super::redact(body),
            r#"Response body: Some(b"{"certNo":"[redacted]","mobile":"[redacted]","sign":"[redacted]","orderNo":"O-1"}")"#
        );
        assert_eq!(super::redact("token Bearer abc.def, next"), "token Bearer [redacted], next");
        assert_eq!(super::redact("nothing secret"), "nothing secret");
        // As a sender spaced it, in pingora's print of a refused head (`buf: "…"`).
        let spaced =
            r#"buf: "POST / HTTP/1.1\r\nAuthorization:Bearer  tok-7\r\n\r\n{\"certNo\": \"1101\", \"mobile\" : 139, \"sign\":\"s\"}""#;
        assert_eq!(
            super::redact(spaced),
            r#"buf: "POST / HTTP/1.1\r\nAuthorization:[redacted]\r\n\r\n{\"certNo\": \"[redacted]\", \"mobile\" : [redacted], \"sign\":\"[redacted]\"}""#
        );
        assert_eq!(super::redact(r#"{"mobile": "139", "key" "x"}"#), r#"{"mobile": "[redacted]", "key" "x"}"#);
    }

    #[test]
    fn other_crates_info_is_debug_and_their_trace_is_never_written() {
        use tracing::Level;
        assert_eq!(super::foreign_level(Level::INFO, "pingora_core::server", "Bootstrap starting"), Some(Level::DEBUG));
        let waiting = "No incoming socket transfer, sleep 1s and try again";
        assert_eq!(super::foreign_level(Level::ERROR, "pingora_core::server::transfer_fd", waiting), Some(Level::INFO));
        assert_eq!(super::foreign_level(Level::TRACE, "pingora_proxy", "raw"), None);
        assert_eq!(super::foreign_level(Level::WARN, "pingora_core", "x"), Some(Level::WARN));
        assert!(super::is_own("paysign_plugin::proxy") && super::is_own("paysign") && !super::is_own("pingora_core::server"));
    }

    /// An access line is serialised once, and only when the subscriber takes access lines.
    #[test]
    fn access_lines_are_serialised_only_for_a_subscriber_that_takes_them() {
        use std::sync::atomic::{AtomicUsize, Ordering};
        use tracing_subscriber::layer::SubscriberExt;
        static SERIALISED: AtomicUsize = AtomicUsize::new(0);
        struct Line;
        impl serde::Serialize for Line {
            fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
                SERIALISED.fetch_add(1, Ordering::SeqCst);
                s.serialize_str("line")
            }
        }
        /// Takes everything but (when `access` is false) access lines; counts the access events.
        struct Only {
            access: bool,
            seen: std::sync::Arc<AtomicUsize>,
        }
        impl<S: tracing::Subscriber> tracing_subscriber::Layer<S> for Only {
            fn enabled(&self, m: &tracing::Metadata<'_>, _: tracing_subscriber::layer::Context<'_, S>) -> bool {
                self.access || m.target() != super::ACCESS_TARGET
            }
            fn on_event(&self, e: &tracing::Event<'_>, _: tracing_subscriber::layer::Context<'_, S>) {
                if e.metadata().target() == super::ACCESS_TARGET {
                    self.seen.fetch_add(1, Ordering::SeqCst);
                }
            }
        }
        for access in [false, true] {
            let seen = std::sync::Arc::new(AtomicUsize::new(0));
            let subscriber = tracing_subscriber::registry().with(Only { access, seen: seen.clone() });
            SERIALISED.store(0, Ordering::SeqCst);
            tracing::subscriber::with_default(subscriber, || super::access_line(&Line));
            let expected = usize::from(access);
            assert_eq!((SERIALISED.load(Ordering::SeqCst), seen.load(Ordering::SeqCst)), (expected, expected), "access: {access}");
        }
    }

    #[test]
    fn request_ids_are_32_lowercase_hex_digits_and_fresh() {
        let ids: std::collections::HashSet<String> = (0..1000).map(|_| super::new_request_id()).collect();
        assert_eq!(ids.len(), 1000);
        for id in &ids {
            assert_eq!(id.len(), 32, "{id}");
            assert!(id.bytes().all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b)), "{id}");
        }
        // Every hex digit position is used (leading zeros are kept, not dropped).
        assert!(ids.iter().any(|id| id.starts_with('0')));
    }
}
