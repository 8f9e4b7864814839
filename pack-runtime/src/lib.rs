//! Runs Taskless "pre2" packs (Extism Wasm plugins) over HTTP exchanges.
//!
//! ```no_run
//! # use std::path::Path;
//! # use taskless_pack_runtime::*;
//! # fn demo(request: &RequestView, response: &ResponseView) -> Result<(), RuntimeError> {
//! let (packs, refused) = PackSet::load_dir(Path::new(".taskless"), &RuntimeConfig::default())?;
//! for r in &refused {
//!     eprintln!("{r}");
//! }
//! let mut worker = packs.worker()?; // one per worker thread
//! let mut session = Session::start(&mut worker, request); // request complete: `pre`
//! session.chunk(&mut worker, request, response, b"..."); // each body piece: `chunk`
//! let line = session.finish(&mut worker, request, response); // closing `chunk`, `post`
//! println!("{}", line.to_json());
//! # Ok(()) }
//! ```
//!
//! Loading, compiling, instances, limits, calling and output lines live here; the crate knows
//! nothing of eBPF, async runtimes or HTTP parsing. See `docs/pack-runtime.md` for the input
//! document, limits and their defaults.

mod check;
mod config;
mod domain;
mod error;
mod input;
pub mod json_prefix;
mod loader;
mod manifest;
mod output;
mod pack;
mod packset;
mod reload;
mod session;
mod shared;
mod state;
mod stats;
mod worker;

pub use check::{
    CheckError, CheckReport, Fixture, FixtureRequest, FixtureResponse, FixtureTest, PackListing,
    TestResult, check_fixture, list_packs,
};
pub use config::{
    DEFAULT_MAX_OUTPUT_BYTES, DEFAULT_MEMORY_MAX_PAGES, DEFAULT_TIMEOUT, DEFAULT_WARN_INTERVAL,
    EffectiveLimits, PackLimits, RuntimeConfig,
};
pub use domain::DomainFilter;
pub use error::{LoadFailure, PackLoadError, RuntimeError};
pub use input::{RequestView, ResponseView, Timing, body_value, write_body};
pub use manifest::{Bodies, BodyWhen, Field, Method, Permissions};
pub use output::{Dimension, OutputLine};
pub use pack::PackInfo;
pub use packset::PackSet;
pub use reload::Reload;
pub use session::Session;
pub use stats::{CallTime, FailureKind, PackStats};
pub use worker::Worker;

#[cfg(test)]
mod send_sync {
    fn assert_send_sync<T: Send + Sync>() {}
    fn assert_send<T: Send>() {}

    #[test]
    fn pack_set_is_shared_and_workers_move_to_their_threads() {
        assert_send_sync::<super::PackSet>();
        assert_send::<super::Worker>();
        assert_send::<super::Session>();
    }
}
