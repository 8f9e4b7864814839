//! What every Taskless "pre2" pack needs, so that a pack is only its own logic.
//!
//! A pack is three plain functions, `fn(&Input) -> Output`, one per hook (`pre`, `chunk`,
//! `post`). They are tested natively on the host; [`export_hooks!`] turns them into the Wasm
//! exports Extism calls when the crate is built for `wasm32-unknown-unknown`.
//!
//! ```
//! use taskless_pack_kit::{Input, Output};
//!
//! fn post(input: &Input) -> Output {
//!     let mut out = Output::new();
//!     if let Some(response) = &input.response {
//!         out.capture("status", response.status);
//!     }
//!     out
//! }
//! # let input = Input::from_json(br#"{"request":{"domain":"a.b","path":"/","url":"https://a.b/","method":"GET","headers":[]},"response":{"status":204,"headers":[]}}"#).unwrap();
//! # assert_eq!(post(&input).to_json().unwrap(), r#"{"capture":{"status":204}}"#);
//! ```

mod body;
mod config;
mod event_stream;
mod hash;
mod headers;
mod input;
mod input_json;
mod output;
mod redact;
mod skip;
mod sse;
mod stream;
#[cfg(target_arch = "wasm32")]
#[doc(hidden)]
pub mod wasm;

pub use body::{Body, get_path, scalar};
pub use config::Config;
pub use event_stream::{
    Summary, model_request, stream_chunk, stream_was_read, summarize_stream_text,
};
pub use hash::{FastHasher, FastMap, FastSet, hash};
pub use headers::Headers;
pub use input::{Input, InputError, Request, Response, Timing};
pub use output::{Capture, Output};
pub use redact::{
    DEFAULT_REDACTED_QUERY_PARAMETERS, REDACT_SETTING, REDACTED, percent_decode, redact_query,
    redacted_parameters,
};
pub use sse::{SseDecoder, SseEvent};
pub use stream::{ChunkDecoder, decode_chunk};
pub use taskless_url::{any_domain_matches, domain_matches};

/// Runs `hook` on `input` as the Wasm exports do: the hook's output with the credential-like
/// query parameters the pack's `redactQueryParameters` setting names (by default
/// [`DEFAULT_REDACTED_QUERY_PARAMETERS`]) redacted in every text capture. Test harnesses call this
/// too, so that fixtures see what the agent would.
pub fn call_hook(hook: fn(&Input) -> Output, input: &Input) -> Output {
    let mut output = hook(input);
    output.redact_queries(&redacted_parameters(input));
    output
}

/// Writes a warning to the host's log (Extism's `log_warn`); does nothing in host builds.
pub fn warn(message: &str) {
    #[cfg(target_arch = "wasm32")]
    wasm::warn(message);
    #[cfg(not(target_arch = "wasm32"))]
    let _ = message;
}

/// Exports a pack's hook functions as the Extism entry points `pre`, `post` and `chunk`.
///
/// Each argument is `name = path`, where `name` is one of `pre`, `post`, `chunk` and `path` a
/// `fn(&Input) -> Output`. Outside `wasm32` this expands to nothing, so host tests link.
///
/// ```
/// use taskless_pack_kit::{Input, Output};
///
/// fn pre(input: &Input) -> Output {
///     let mut out = Output::new();
///     out.capture("method", input.request.method.as_str());
///     out
/// }
///
/// taskless_pack_kit::export_hooks!(pre = pre);
/// ```
#[macro_export]
macro_rules! export_hooks {
    ($($name:ident = $hook:path),+ $(,)?) => {
        $(
            #[cfg(target_arch = "wasm32")]
            const _: () = {
                #[unsafe(export_name = stringify!($name))]
                extern "C" fn export() -> i32 {
                    $crate::wasm::run_hook($hook)
                }
            };
        )+
    };
}
