//! Arbitrary text as a lease id: only the canonical spelling parses, and it prints back as itself.
#![no_main]

use libfuzzer_sys::fuzz_target;
use quotad_server::engine::LeaseId;

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else { return };
    if let Ok(id) = text.parse::<LeaseId>() {
        assert_eq!(id.to_string(), text, "a lease id has one spelling");
    }
});
