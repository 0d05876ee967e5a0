//! The canonical string that `sign` covers (PROTOCOL.md, "Canonical string").

use serde_json::{Map, Value};

/// Builds `name=value&…` over every top-level member except `sign`, leaving out `null` and
/// `""`, sorted by name bytes, with string values verbatim (never re-escaped, trimmed or
/// URL-encoded) and other values as compact JSON text.
///
/// Works on whatever fields arrive: fields the platform adds later are covered automatically.
pub fn canonicalize(obj: &Map<String, Value>) -> String {
    canonical_of(obj.iter().map(|(k, v)| (k.as_str(), Part::of(v))))
}

/// A member's value as the canonical string takes it.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Part<'a> {
    /// A string's value, written verbatim.
    Text(&'a str),
    /// Any other value, written as compact JSON text (`null` is left out).
    Json(&'a Value),
}

impl<'a> Part<'a> {
    pub fn of(v: &'a Value) -> Self {
        match v {
            Value::String(s) => Part::Text(s),
            other => Part::Json(other),
        }
    }
}

/// [`canonicalize`] over members given one by one (names unique, in any order).
pub fn canonical_of<'a>(members: impl Iterator<Item = (&'a str, Part<'a>)>) -> String {
    let mut members: Vec<(&str, Part)> =
        members.filter(|(k, v)| *k != "sign" && !matches!(v, Part::Json(Value::Null) | Part::Text(""))).collect();
    // `str` ordering is byte ordering, which is what the protocol specifies.
    members.sort_unstable_by(|a, b| a.0.cmp(b.0));

    // Names, values (strings exactly; other values guessed) and separators: one allocation.
    let size: usize = members.iter().map(|(k, v)| k.len() + 2 + if let Part::Text(s) = v { s.len() } else { 16 }).sum();
    let mut out = String::with_capacity(size);
    for (i, (k, v)) in members.into_iter().enumerate() {
        if i > 0 {
            out.push('&');
        }
        out.push_str(k);
        out.push('=');
        match v {
            Part::Text(s) => out.push_str(s),
            // Compact JSON of a number (its text as received, with arbitrary_precision),
            // bool, object or array cannot fail to serialize.
            Part::Json(other) => out.push_str(&other.to_string()),
        }
    }
    out
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
    /// BigDecimal would print it). Exponent forms are normalised by serde_json (`1e3` →
    /// `1e+3`); platforms send amounts as decimals, so this is noted, not worked around.
    #[test]
    fn number_text_is_kept() {
        let v: Value = serde_json::from_str(r#"{"a":1.50,"b":100,"c":-0.0,"d":[1.0,{"x":2.50}]}"#).unwrap();
        assert_eq!(canonicalize(v.as_object().unwrap()), r#"a=1.50&b=100&c=-0.0&d=[1.0,{"x":2.50}]"#);
    }
}
