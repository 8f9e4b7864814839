//! The pack stage: every exchange through the packs.
//!
//! Takes: the flows stage's [`Moment`](crate::flows::Moment)s. Runs each exchange's hooks on a
//! worker thread (one per connection, so in order) through a pack-runtime
//! [`Session`](taskless_pack_runtime::Session), with the request built once per exchange
//! ([`PackRequest`]). Gives: a [`FinishedExchange`] per exchange to the sinks. The packs
//! directory is watched while the agent runs ([`watch`]): packs reload without a restart.

mod budget;
mod finished;
mod input;
mod load;
mod reload;
mod stage;

pub use finished::FinishedExchange;
pub use input::PackRequest;
pub use load::{LoadError, load_packs, packs_dir, runtime_config};
pub use reload::{LivePacks, PackWatch, watch};
pub use stage::{
    Backpressure, Dispatcher, PackStageError, PackStageStats, StageOptions, log_pack_stats, start,
};
