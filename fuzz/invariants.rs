// The canonical target's invariant, included by fuzz/fuzz_targets/canonical.rs and by
// tests/fuzz_corpus.rs (which replays the kept corpus through the same checks).

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
