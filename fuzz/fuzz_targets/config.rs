//! Configuration parsing and validation on arbitrary YAML: an error naming the setting, never
//! a panic.
#![no_main]

use std::path::Path;

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else { return };
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../conf/fuzz.yaml");
    let _ = paysign_plugin::config::load_str_offline(text, &dir);
    let _ = paysign_sandbox::load_sandbox_str(text, &dir);
});
