#![no_main]
//! HTTP/2 state machine: the client preface, then arbitrary frames on both flows.

use libfuzzer_sys::fuzz_target;

mod script;

fuzz_target!(|data: &[u8]| {
    script::run(b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n", data);
});
