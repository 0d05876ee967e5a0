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

include!("../invariants.rs");
