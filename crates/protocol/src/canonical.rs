//! The canonical string that `sign` covers (PROTOCOL.md, "Canonical string").

use serde_json::{Map, Value};

/// Builds `name=value&…` over every top-level member except `sign`, leaving out `null` and
/// `""`, sorted by name bytes, with string values verbatim (never re-escaped, trimmed or
/// URL-encoded) and other values as compact JSON text.
///
/// Works on whatever fields arrive: fields the platform adds later are covered automatically.
pub fn canonicalize(obj: &Map<String, Value>) -> String {
    let mut members: Vec<(&str, &Value)> = obj
        .iter()
        .filter(|(k, v)| k.as_str() != "sign" && !v.is_null() && !matches!(v, Value::String(s) if s.is_empty()))
        .map(|(k, v)| (k.as_str(), v))
        .collect();
    // `str` ordering is byte ordering, which is what the protocol specifies.
    members.sort_unstable_by(|a, b| a.0.cmp(b.0));

    // Names, values (strings exactly; other values guessed) and separators: one allocation.
    let size: usize = members.iter().map(|(k, v)| k.len() + 2 + if let Value::String(s) = v { s.len() } else { 16 }).sum();
    let mut out = String::with_capacity(size);
    for (i, (k, v)) in members.into_iter().enumerate() {
        if i > 0 {
            out.push('&');
        }
        out.push_str(k);
        out.push('=');
        match v {
            Value::String(s) => out.push_str(s),
            // Compact JSON of a number (its text as received, with arbitrary_precision),
            // bool, object or array cannot fail to serialize.
            other => out.push_str(&other.to_string()),
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
