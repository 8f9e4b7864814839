//! The glue between Extism and a pack's plain hook functions (wasm32 only).

use crate::{Input, Output};

/// Reads the hook's JSON input, calls `hook`, and sets its JSON output.
///
/// Returns the status code Extism expects: 0 on success, 1 when the input cannot be parsed or the
/// output cannot be written (the reason is set as the call's error).
pub fn run_hook(hook: fn(&Input) -> Output) -> i32 {
    let bytes = extism_pdk::input_bytes();
    let input = match Input::from_hook_call(&bytes) {
        Ok(input) => input,
        Err(err) => return fail(&err.to_string()),
    };
    let output = crate::call_hook(hook, &input);
    if output.is_empty() {
        return 0;
    }
    match output.to_json() {
        Ok(json) => match extism_pdk::output(json) {
            Ok(()) => 0,
            Err(err) => fail(&err.to_string()),
        },
        Err(err) => fail(&err.to_string()),
    }
}

/// Sets the call's error message and returns the failure status.
fn fail(message: &str) -> i32 {
    if let Ok(memory) = extism_pdk::Memory::from_bytes(message) {
        // SAFETY: `memory` is a live block allocated through the Extism kernel just above.
        unsafe { extism_pdk::extism::error_set(memory.offset()) };
    }
    1
}

/// Logs `message` at warn level through the host.
pub fn warn(message: &str) {
    if let Ok(memory) = extism_pdk::Memory::from_bytes(message) {
        memory.log(extism_pdk::LogLevel::Warn);
    }
}
