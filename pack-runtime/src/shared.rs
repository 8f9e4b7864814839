//! What every worker of a [`PackSet`](crate::PackSet) shares: the packs' definitions and
//! counters.

use std::path::PathBuf;
use std::sync::{Arc, Mutex};

use extism::CompiledPlugin;

use crate::pack::{PackDef, PackInfo};
use crate::stats::Counters;

/// The packs' definitions, infos and counters, behind one `Arc` for every worker.
pub(crate) struct Shared {
    pub defs: Vec<PackDef>,
    pub infos: Vec<PackInfo>,
    /// Kept across reloads for the packs that stay (by `name@version`).
    pub counters: Vec<Arc<Counters>>,
    /// The wasmtime cache settings file, when a cache directory is configured.
    pub cache_config: Option<PathBuf>,
    /// The plugins compiled at load time, handed to the first worker so that it needs no
    /// compile of its own.
    pub first: Mutex<Option<Vec<CompiledPlugin>>>,
}
