#![no_main]
//! HTTP/2 joined mid-connection: arbitrary HPACK blocks and DATA payloads in frames on both
//! flows, without the preface, so the partial HPACK decoding and the stream classification are
//! hit directly. Each input is fed whole and byte by byte: the events must be the same.

use libfuzzer_sys::fuzz_target;

mod joined;

fuzz_target!(|data: &[u8]| {
    joined::run(data);
});
