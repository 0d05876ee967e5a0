//! Structured logs: one JSON object per line on stderr. Application lines go through the
//! `log` facade (pingora logs the same way); the access line is written by [`access`] with its
//! fields at the top level. Nothing secret or personal is ever passed in: callers log
//! customer numbers, order numbers, outcomes and sizes, never keys, `sign`, `reqmsg` or the
//! personal fields of a request.

use std::io::Write;
use std::time::{SystemTime, UNIX_EPOCH};

use log::{Level, LevelFilter, Log, Metadata, Record};
use serde_json::{Map, Value};

struct JsonLogger {
    level: LevelFilter,
}

impl Log for JsonLogger {
    fn enabled(&self, metadata: &Metadata) -> bool {
        metadata.level() <= self.level
    }

    fn log(&self, record: &Record) {
        if !self.enabled(record.metadata()) {
            return;
        }
        let mut m = Map::new();
        m.insert("ts".into(), Value::String(timestamp()));
        m.insert("level".into(), Value::String(record.level().as_str().to_ascii_lowercase()));
        m.insert("target".into(), Value::String(record.target().to_string()));
        m.insert("msg".into(), Value::String(record.args().to_string()));
        write_line(&Value::Object(m));
    }

    fn flush(&self) {
        let _ = std::io::stderr().flush();
    }
}

fn write_line(v: &Value) {
    let mut line = v.to_string();
    line.push('\n');
    // One write call per line keeps lines whole across threads.
    let _ = std::io::stderr().lock().write_all(line.as_bytes());
}

/// Installs the logger; `PAYSIGN_LOG` = error|warn|info|debug|trace (default info).
pub fn init() {
    let level = std::env::var("PAYSIGN_LOG").ok().and_then(|s| s.parse::<LevelFilter>().ok()).unwrap_or(LevelFilter::Info);
    if log::set_boxed_logger(Box::new(JsonLogger { level })).is_ok() {
        log::set_max_level(level);
    }
}

/// Writes the access line: `fields` plus `ts`, `level` and `msg: "access"`.
pub fn access(mut fields: Map<String, Value>) {
    if !log::log_enabled!(target: "access", Level::Info) {
        return;
    }
    fields.insert("ts".into(), Value::String(timestamp()));
    fields.insert("level".into(), Value::String("info".into()));
    fields.insert("msg".into(), Value::String("access".into()));
    write_line(&Value::Object(fields));
}

/// Writes an access line serialised from `line` (its fields in declaration order), when the
/// access log is on; no intermediate map.
pub fn access_line<T: serde::Serialize>(line: &T) {
    if !log::log_enabled!(target: "access", Level::Info) {
        return;
    }
    let mut buf = Vec::with_capacity(320);
    if serde_json::to_writer(&mut buf, line).is_ok() {
        buf.push(b'\n');
        // One write call per line keeps lines whole across threads.
        let _ = std::io::stderr().lock().write_all(&buf);
    }
}

/// RFC 3339 UTC with milliseconds, without pulling in a date crate.
pub fn timestamp() -> String {
    let now = SystemTime::now().duration_since(UNIX_EPOCH).unwrap_or_default();
    let secs = now.as_secs();
    let (days, rem) = (secs / 86_400, secs % 86_400);
    // Civil-from-days (H. Hinnant's algorithm).
    let z = days as i64 + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1_460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    let y = yoe + era * 400 + i64::from(m <= 2);
    format!("{y:04}-{m:02}-{d:02}T{:02}:{:02}:{:02}.{:03}Z", rem / 3600, (rem % 3600) / 60, rem % 60, now.subsec_millis())
}
