//! Arbitrary text as a config file: it loads or fails with a message; it never panics.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let Ok(text) = std::str::from_utf8(data) {
        let _ = quotad_server::config::load_str(text);
    }
});
