//! The canonical string that `sign` covers (PROTOCOL.md, "Canonical string").

use serde_json::{Map, Value};

/// Builds `name=value&…` over every top-level member except `sign`, leaving out `null` and
/// `""`, sorted by name bytes, with string values verbatim (never re-escaped, trimmed or
/// URL-encoded) and other values as compact JSON text.
///
/// Works on whatever fields arrive: fields the platform adds later are covered automatically.
/// A parsed map has lost a number's exponent as written (`1.0E10` reads back as `1.0e+10`):
/// messages are verified from their text ([`crate::envelope`]), never through this.
pub fn canonicalize(obj: &Map<String, Value>) -> String {
    canonical_of(obj.iter().map(|(k, v)| (k.as_str(), Part::of(v))))
}

/// A member's value as the canonical string takes it.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Part<'a> {
    /// A string's value, written verbatim.
    Text(&'a str),
    /// Any other value as the sender wrote it (JSON text: a number keeps its exact text, e.g.
    /// Java's `1.0E10`; whitespace inside an object or array is dropped when written).
    Json(&'a str),
    /// Any other value of a parsed map, written as compact JSON text.
    Value(&'a Value),
}

impl<'a> Part<'a> {
    pub fn of(v: &'a Value) -> Self {
        match v {
            Value::String(s) => Part::Text(s),
            other => Part::Value(other),
        }
    }

    /// `null` or `""`: left out of the canonical string, and missing for the schema.
    pub fn is_absent(&self) -> bool {
        matches!(self, Part::Text("") | Part::Json("null") | Part::Value(Value::Null))
    }

    /// The value as a parsed JSON value (a number's exponent normalised as serde_json does).
    pub fn to_value(&self) -> Value {
        match self {
            Part::Text(s) => Value::String((*s).to_owned()),
            Part::Json(t) => serde_json::from_str(t).unwrap_or(Value::Null),
            Part::Value(v) => (*v).clone(),
        }
    }
}

/// [`canonicalize`] over members given one by one (names unique, in any order).
pub fn canonical_of<'a>(members: impl Iterator<Item = (&'a str, Part<'a>)>) -> String {
    let mut members: Vec<(&str, Part)> = members.filter(|(k, v)| *k != "sign" && !v.is_absent()).collect();
    // `str` ordering is byte ordering, which is what the protocol specifies.
    members.sort_unstable_by(|a, b| a.0.cmp(b.0));

    // Names, values (strings and JSON text exactly; parsed values guessed) and separators: one allocation.
    let size: usize = members
        .iter()
        .map(|(k, v)| {
            k.len()
                + 2
                + match v {
                    Part::Text(s) | Part::Json(s) => s.len(),
                    Part::Value(_) => 16,
                }
        })
        .sum();
    let mut out = String::with_capacity(size);
    for (i, (k, v)) in members.into_iter().enumerate() {
        if i > 0 {
            out.push('&');
        }
        out.push_str(k);
        out.push('=');
        match v {
            Part::Text(s) => out.push_str(s),
            Part::Json(text) => push_compact(&mut out, text),
            // Compact JSON of a number, bool, object or array cannot fail to serialize.
            Part::Value(other) => out.push_str(&other.to_string()),
        }
    }
    out
}

/// Appends valid JSON `text` compactly: whitespace between tokens dropped, numbers and
/// literals exactly as written, strings as serde_json writes them (the same text as
/// `Value::to_string` gives, except that a number keeps its exponent as written).
pub(crate) fn push_compact(out: &mut String, text: &str) {
    let b = text.as_bytes();
    let mut i = 0;
    while i < b.len() {
        let start = i;
        match b[i] {
            b' ' | b'\t' | b'\n' | b'\r' => {
                i += 1;
                continue;
            }
            b'"' => {
                i += 1;
                let mut escaped = false;
                while i < b.len() && b[i] != b'"' {
                    if b[i] == b'\\' {
                        escaped = true;
                        i += 1;
                    }
                    i += 1;
                }
                i = (i + 1).min(b.len());
                let token = text.get(start..i).unwrap_or("");
                // Without escapes serde_json writes a string exactly as it reads; with them,
                // the decoded string is written again (`\/` → `/`, `\u0041` → `A`).
                match escaped.then(|| serde_json::from_str::<String>(token)) {
                    Some(Ok(s)) => out.push_str(&Value::String(s).to_string()),
                    _ => out.push_str(token),
                }
            }
            _ => {
                while i < b.len() && !matches!(b[i], b' ' | b'\t' | b'\n' | b'\r' | b'"') {
                    i += 1;
                }
                out.push_str(text.get(start..i).unwrap_or(""));
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn protocol_example() {
        let v: Value = serde_json::from_str(r#"{"b":"2","a":"x&y","c":"","sign":"…","n":10}"#).unwrap();
        assert_eq!(canonicalize(v.as_object().unwrap()), "a=x&y&b=2&n=10");
    }

    /// Decimal numbers keep their text as received (`1.50` stays `1.50`, as a Java
    /// BigDecimal would print it). A parsed map normalises exponents (`1e3` → `1e+3`), which
    /// is why messages are verified from their text (see `envelope`).
    #[test]
    fn number_text_is_kept() {
        let v: Value = serde_json::from_str(r#"{"a":1.50,"b":100,"c":-0.0,"d":[1.0,{"x":2.50}]}"#).unwrap();
        assert_eq!(canonicalize(v.as_object().unwrap()), r#"a=1.50&b=100&c=-0.0&d=[1.0,{"x":2.50}]"#);
    }

    /// JSON text as written: exponents exactly (Java's `1.0E10`, `5.0E-4`), whitespace
    /// dropped, strings inside written as serde_json writes them.
    #[test]
    fn json_text_keeps_numbers_as_written() {
        let members = [
            ("e", Part::Json("1.0E10")),
            ("f", Part::Json("5.0E-4")),
            ("o", Part::Json("{ \"k\" : [ 1E3 , \"a b\\/\\u0041\" , true ] ,\n\"n\":null }")),
            ("z", Part::Json("null")),
            ("t", Part::Text("x")),
        ];
        assert_eq!(canonical_of(members.into_iter()), r#"e=1.0E10&f=5.0E-4&o={"k":[1E3,"a b/A",true],"n":null}&t=x"#);
        // The same text through a parsed map: every string and layout the same, exponents aside.
        let mut out = String::new();
        push_compact(&mut out, "{ \"k\" : [ 10 , \"a b\\/\\u0041\\n\\u001f中\" , true ] ,\n\"n\":null }");
        let parsed: Value = serde_json::from_str(&out).unwrap();
        assert_eq!(out, parsed.to_string());
    }
}
