//! Request validation from the endpoints' field tables. Each endpoint is a JSON file in
//! `src/protocol/endpoints/` (name, path, fields with `required`, `max_len`, `one_of`,
//! `format`): supporting the next endpoint's validation means adding one such file to
//! [`BUILTIN`]. Paths without a schema are sealed without field validation.

use std::collections::HashMap;

use serde::Deserialize;
use serde_json::{Map, Value};

use crate::canonical::Part;

/// The endpoint documents compiled in.
const BUILTIN: &[&str] = &[include_str!("endpoints/bindcard-create.json")];

#[derive(Debug, Clone, Copy, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "snake_case")]
pub enum Format {
    /// `yyyy-MM-dd HH:mm:ss`, a real calendar date and time.
    Datetime,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Field {
    pub name: String,
    #[serde(default)]
    pub required: bool,
    /// `String(n)`: at most n characters, counted as Java counts them (UTF-16 units).
    pub max_len: Option<usize>,
    pub one_of: Option<Vec<String>>,
    pub format: Option<Format>,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Endpoint {
    /// Metric label and log name (a small fixed set).
    pub name: String,
    pub path: String,
    #[serde(default)]
    pub doc: String,
    pub fields: Vec<Field>,
}

/// A rejected field: `code` is the document's errCode (1003 missing, 1002 invalid).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Invalid {
    pub code: &'static str,
    pub field: String,
    pub message: String,
}

/// All known endpoints, by path.
#[derive(Debug, Clone)]
pub struct Endpoints {
    by_path: HashMap<String, Endpoint>,
}

impl Endpoints {
    /// The compiled-in endpoint tables. They are part of the binary, so a broken one is a
    /// build defect caught by the unit tests, not a runtime condition.
    pub fn builtin() -> Result<Self, String> {
        let mut by_path = HashMap::new();
        for doc in BUILTIN {
            let ep: Endpoint = serde_json::from_str(doc).map_err(|e| format!("endpoint schema: {e}"))?;
            by_path.insert(ep.path.clone(), ep);
        }
        Ok(Endpoints { by_path })
    }

    pub fn get(&self, path: &str) -> Option<&Endpoint> {
        self.by_path.get(path)
    }

    pub fn iter(&self) -> impl Iterator<Item = &Endpoint> {
        self.by_path.values()
    }
}

/// Named members, as the field table reads them: a parsed map, or the caller's
/// [`Business`](crate::envelope::Business) fields.
pub trait Fields {
    fn field(&self, name: &str) -> Option<Part<'_>>;
}

impl Fields for Map<String, Value> {
    fn field(&self, name: &str) -> Option<Part<'_>> {
        self.get(name).map(Part::of)
    }
}

impl Endpoint {
    /// Checks `obj` against the table, in table order; the first problem wins.
    pub fn validate(&self, obj: &impl Fields) -> Result<(), Invalid> {
        for f in &self.fields {
            let value = obj.field(&f.name).filter(|v| !v.is_absent());
            let Some(value) = value else {
                if f.required {
                    return Err(Invalid {
                        code: "1003",
                        field: f.name.clone(),
                        message: format!("required field '{}' is missing or empty", f.name),
                    });
                }
                continue;
            };
            let Part::Text(s) = value else {
                return Err(invalid(f, format!("'{}' must be a JSON string", f.name)));
            };
            if let Some(max) = f.max_len {
                let len = s.encode_utf16().count();
                if len > max {
                    return Err(invalid(f, format!("'{}' is {len} characters long; at most {max} are allowed", f.name)));
                }
            }
            if let Some(allowed) = &f.one_of {
                if !allowed.iter().any(|a| a == s) {
                    return Err(invalid(f, format!("'{}' must be one of {}", f.name, allowed.join(", "))));
                }
            }
            if f.format == Some(Format::Datetime) && !is_datetime(s) {
                return Err(invalid(f, format!("'{}' must be a date and time as yyyy-MM-dd HH:mm:ss", f.name)));
            }
        }
        Ok(())
    }
}

fn invalid(f: &Field, message: String) -> Invalid {
    Invalid { code: "1002", field: f.name.clone(), message }
}

/// `yyyy-MM-dd HH:mm:ss` with a real date (leap years included) and time.
pub fn is_datetime(s: &str) -> bool {
    let b = s.as_bytes();
    if b.len() != 19 || b[4] != b'-' || b[7] != b'-' || b[10] != b' ' || b[13] != b':' || b[16] != b':' {
        return false;
    }
    let num = |r: std::ops::Range<usize>| -> Option<u32> {
        b[r].iter().try_fold(0u32, |acc, &c| c.is_ascii_digit().then(|| acc * 10 + u32::from(c - b'0')))
    };
    let (Some(y), Some(mo), Some(d), Some(h), Some(mi), Some(se)) =
        (num(0..4), num(5..7), num(8..10), num(11..13), num(14..16), num(17..19))
    else {
        return false;
    };
    let leap = (y % 4 == 0 && y % 100 != 0) || y % 400 == 0;
    let days = match mo {
        1 | 3 | 5 | 7 | 8 | 10 | 12 => 31,
        4 | 6 | 9 | 11 => 30,
        2 if leap => 29,
        2 => 28,
        _ => return false,
    };
    d >= 1 && d <= days && h < 24 && mi < 60 && se < 60
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn datetimes() {
        assert!(is_datetime("2023-01-01 12:05:01"));
        assert!(is_datetime("2024-02-29 23:59:59"));
        assert!(!is_datetime("2023-02-29 00:00:00"));
        assert!(!is_datetime("2023-1-01 12:05:01"));
        assert!(!is_datetime("2023-01-01T12:05:01"));
        assert!(!is_datetime("2023-01-01 24:00:00"));
        assert!(!is_datetime("２023-01-01 12:05:01"));
    }

    #[test]
    fn builtin_tables_load() {
        let eps = Endpoints::builtin().unwrap();
        let ep = eps.get("/api/vborder/shortcut/bindCard/create").unwrap();
        assert_eq!(ep.name, "bindcard_create");
        assert_eq!(ep.fields.len(), 12);
        assert_eq!(ep.fields.iter().filter(|f| f.required).count(), 11);
    }
}
