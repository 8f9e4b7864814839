#![no_main]
//! HTTP/1 state machine: arbitrary bytes on both flows, gaps and close.

use libfuzzer_sys::fuzz_target;

mod script;

fuzz_target!(|data: &[u8]| {
    script::run(b"GET / HTTP/1.1\r\n\r\n", data);
});
