//! Structured logs: one JSON object per line on stderr. Application lines go through `tracing`
//! (pingora's `log` records are bridged into it); the access line is written by
//! [`access_line`] with its fields at the top level. Every line leaves through one writer
//! thread ([`crate::log_writer`]): logging never blocks a request on stderr. Nothing secret or
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
pub use crate::log_writer::timestamp;

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

impl<S: Subscriber> Layer<S> for JsonLines {
    fn enabled(&self, metadata: &tracing::Metadata<'_>, _: Context<'_, S>) -> bool {
        rank(metadata.level()) <= MAX_LEVEL.load(Ordering::Relaxed)
    }

    fn on_event(&self, event: &Event<'_>, _: Context<'_, S>) {
        // A bridged `log` record carries its real target and level in its normalized metadata.
        let normalized = event.normalized_metadata();
        let meta = normalized.as_ref().unwrap_or_else(|| event.metadata());
        if rank(meta.level()) > MAX_LEVEL.load(Ordering::Relaxed) {
            return;
        }
        let mut fields = Fields::default();
        event.record(&mut fields);
        let mut m = Map::new();
        m.insert("ts".into(), Value::String(timestamp()));
        m.insert("level".into(), Value::String(meta.level().as_str().to_ascii_lowercase()));
        m.insert("target".into(), Value::String(meta.target().to_string()));
        m.insert("msg".into(), Value::String(fields.msg));
        for (k, v) in fields.extra {
            m.insert(k.into(), Value::String(v));
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

/// Installs the `tracing` subscriber and the bridge for `log` records (pingora logs through
/// `log`); `PAYSIGN_LOG` = error|warn|info|debug|trace (default info).
pub fn init() {
    let level = std::env::var("PAYSIGN_LOG").ok().and_then(|s| s.parse::<Level>().ok()).unwrap_or(Level::INFO);
    MAX_LEVEL.store(rank(&level), Ordering::Relaxed);
    let log_level = match level {
        Level::ERROR => log::LevelFilter::Error,
        Level::WARN => log::LevelFilter::Warn,
        Level::INFO => log::LevelFilter::Info,
        Level::DEBUG => log::LevelFilter::Debug,
        Level::TRACE => log::LevelFilter::Trace,
    };
    let _ = tracing_log::LogTracer::init_with_filter(log_level);
    let _ = tracing_subscriber::registry().with(JsonLines).try_init();
}

fn access_enabled() -> bool {
    MAX_LEVEL.load(Ordering::Relaxed) >= 3
}

/// Writes the access line: `fields` plus `ts`, `level` and `msg: "access"`.
pub fn access(mut fields: Map<String, Value>) {
    if !access_enabled() {
        return;
    }
    fields.insert("ts".into(), Value::String(timestamp()));
    fields.insert("level".into(), Value::String("info".into()));
    fields.insert("msg".into(), Value::String("access".into()));
    write_line(&Value::Object(fields), false);
}

/// Writes an access line serialised from `line` (its fields in declaration order), when the
/// access log is on; no intermediate map.
pub fn access_line<T: serde::Serialize>(line: &T) {
    if !access_enabled() {
        return;
    }
    let mut buf = Vec::with_capacity(320);
    if serde_json::to_writer(&mut buf, line).is_ok() {
        buf.push(b'\n');
        log_writer::write(&buf, false);
    }
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
