//! The scenario parser on arbitrary text: it may refuse, with a located error, but never panic.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else { return };
    if let Err(error) = sim::scenario::parse_str(text, "fuzz.yaml") {
        // Rendering the error is part of the contract (file, line, column, field).
        let _ = error.to_string();
    }
});
