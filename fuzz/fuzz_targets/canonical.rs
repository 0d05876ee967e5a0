//! The canonical string, the schema check and the bank page on arbitrary JSON objects: no
//! panic; `sign` never influences the canonical string; the page never carries more than its
//! one script; the caller's fields read member by member (`Business`) are what the parsed map
//! holds — the same objects accepted, the same canonical string, the same schema verdicts.
#![no_main]

use libfuzzer_sys::fuzz_target;
use paysign_protocol::schema::Endpoints;
use paysign_protocol::{canonicalize, Business};
use serde_json::Value;

fuzz_target!(|data: &[u8]| {
    let parsed = serde_json::from_slice::<Value>(data);
    let business = Business::parse(data);
    assert_eq!(business.is_ok(), matches!(parsed, Ok(Value::Object(_))));
    let (Ok(Value::Object(mut obj)), Ok(business)) = (parsed, business) else { return };
    let c = canonicalize(&obj);
    if as_written_is_the_parsed_map(&business, &obj) {
        assert_eq!(business.canonical(), c);
    }
    if let Ok(eps) = Endpoints::builtin() {
        for ep in eps.iter() {
            assert_eq!(ep.validate(&obj), ep.validate(&business));
        }
    }
    obj.insert("sign".into(), Value::String("anything".into()));
    assert_eq!(c, canonicalize(&obj));
    if let Ok(page) = paysign_protocol::h5::render(&obj) {
        let html = String::from_utf8_lossy(&page.body);
        assert_eq!(html.matches("<script").count(), 1, "{html}");
    }
});

/// Each member as the business holds it is the parsed map's value; whether each one's text in
/// the canonical string is the same too. The business keeps a value's text as written, where a
/// parsed map rewrites a number's exponent (`1E3` → `1e+3`) and keeps one of a nested object's
/// duplicate names: then the text, read back, must still be the map's value.
fn as_written_is_the_parsed_map(business: &paysign_protocol::Business<'_>, obj: &serde_json::Map<String, Value>) -> bool {
    use paysign_protocol::canonical::{canonical_of, Part};
    let mut same = true;
    for (name, value) in obj {
        let ours = business.get(name).expect("every member is read");
        assert_eq!(&ours.to_value(), value, "{name}");
        let text = |p: Part<'_>| canonical_of(std::iter::once((name.as_str(), p)));
        let (as_written, parsed) = (text(ours), text(Part::of(value)));
        if as_written != parsed {
            let read_back: Value = serde_json::from_str(&as_written[name.len() + 1..]).expect("JSON text");
            assert_eq!(&read_back, value, "{name}");
            same = false;
        }
    }
    same
}
