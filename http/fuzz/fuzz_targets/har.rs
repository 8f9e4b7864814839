#![no_main]
//! HAR import: arbitrary text must give exchanges or an error, never a panic.

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let Ok(text) = std::str::from_utf8(data) {
        let _ = taskless_http::har::exchanges_from_har_str(text, 1 << 16);
    }
});
