//! The canonical string, the schema check and the bank page on arbitrary JSON objects: no
//! panic; `sign` never influences the canonical string; the page never carries more than its
//! one script.
#![no_main]

use libfuzzer_sys::fuzz_target;
use paysign_protocol::canonicalize;
use paysign_protocol::schema::Endpoints;
use serde_json::Value;

fuzz_target!(|data: &[u8]| {
    let Ok(Value::Object(mut obj)) = serde_json::from_slice::<Value>(data) else { return };
    let c = canonicalize(&obj);
    obj.insert("sign".into(), Value::String("anything".into()));
    assert_eq!(c, canonicalize(&obj));
    if let Ok(eps) = Endpoints::builtin() {
        for ep in eps.iter() {
            let _ = ep.validate(&obj);
        }
    }
    if let Ok(page) = paysign_protocol::h5::render(&obj) {
        let html = String::from_utf8_lossy(&page.body);
        assert_eq!(html.matches("<script").count(), 1, "{html}");
    }
});
