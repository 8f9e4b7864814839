//! The set of loaded packs, shared by every worker thread.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use crate::config::RuntimeConfig;
use crate::error::{PackLoadError, RuntimeError};
use crate::loader;
use crate::pack::PackInfo;
use crate::shared::Shared;
use crate::stats::{Counters, PackStats};
use crate::worker::Worker;

/// The loaded packs. `Send + Sync`: keep one per process (in an `Arc` or by reference) and
/// make one [`Worker`] per worker thread from it.
pub struct PackSet {
    pub(crate) shared: Arc<Shared>,
}

impl std::fmt::Debug for PackSet {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PackSet")
            .field("packs", &self.shared.infos)
            .finish_non_exhaustive()
    }
}

impl PackSet {
    /// Loads every pack below `dir` (`<dir>/**/manifest.json` with `config.json` and `pack.wasm`
    /// beside it) and compiles each once.
    ///
    /// Fails only when `dir` itself is unusable (or the cache directory is); a broken pack is
    /// returned in the `Vec` with the reason, and the others load.
    pub fn load_dir(
        dir: &Path,
        config: &RuntimeConfig,
    ) -> Result<(PackSet, Vec<PackLoadError>), RuntimeError> {
        let manifests = loader::find_manifests(dir)?;
        let cache_config = config
            .cache_dir
            .as_deref()
            .map(loader::prepare_cache)
            .transpose()?;
        if std::env::var_os("EXTISM_ENABLE_WASI_OUTPUT").is_some() {
            tracing::warn!("EXTISM_ENABLE_WASI_OUTPUT is set: WASI packs can write to stdout");
        }
        let mut seen = BTreeSet::new();
        let mut loaded = Vec::new();
        let mut refused = Vec::new();
        for path in manifests {
            match loader::load_pack(&path, config, cache_config.as_deref(), &mut seen) {
                Ok(pack) => {
                    tracing::info!(
                        pack = %pack.def.info.id,
                        wasi = pack.def.info.wasi,
                        methods = ?pack.def.info.methods,
                        "pack loaded"
                    );
                    loaded.push(pack);
                }
                Err(e) => {
                    tracing::warn!(dir = %e.dir.display(), pack = ?e.pack, reason = %e.reason, "pack refused");
                    refused.push(e);
                }
            }
        }
        Ok((
            Self::from_loaded(loaded, config, cache_config, None),
            refused,
        ))
    }

    /// A set of `loaded`; the counters of packs that `previous` also runs carry over.
    pub(crate) fn from_loaded(
        loaded: Vec<loader::Loaded>,
        config: &RuntimeConfig,
        cache_config: Option<PathBuf>,
        previous: Option<&PackSet>,
    ) -> Self {
        let mut defs = Vec::with_capacity(loaded.len());
        let mut first = Vec::with_capacity(loaded.len());
        for l in loaded {
            defs.push(l.def);
            first.push(l.compiled);
        }
        let infos = defs.iter().map(|d| d.info.clone()).collect();
        let counters = defs
            .iter()
            .map(|d| {
                previous
                    .and_then(|p| {
                        p.shared
                            .defs
                            .iter()
                            .position(|o| o.info.id == d.info.id)
                            .map(|i| Arc::clone(&p.shared.counters[i]))
                    })
                    .unwrap_or_else(|| Arc::new(Counters::new(config.warn_interval)))
            })
            .collect();
        PackSet {
            shared: Arc::new(Shared {
                defs,
                infos,
                counters,
                cache_config,
                first: Mutex::new(Some(first)),
            }),
        }
    }

    /// The loaded packs, in load order (sorted by path).
    #[must_use]
    pub fn packs(&self) -> &[PackInfo] {
        &self.shared.infos
    }

    /// A worker with its own instances of every pack, for one thread.
    ///
    /// The first worker takes the plugins compiled by `load_dir`; every further worker gets its
    /// own engine (read back from the compile cache when one is configured), so that a timeout
    /// in one worker never interrupts calls running in another.
    pub fn worker(&self) -> Result<Worker, RuntimeError> {
        let taken = self.shared.first.lock().ok().and_then(|mut f| f.take());
        let compiled = match taken {
            Some(c) => c,
            None => self
                .shared
                .defs
                .iter()
                .map(|d| {
                    d.compile(self.shared.cache_config.as_deref()).map_err(|e| {
                        RuntimeError::WorkerCompile {
                            pack: d.info.id.clone(),
                            reason: format!("{e:#}"),
                        }
                    })
                })
                .collect::<Result<Vec<_>, _>>()?,
        };
        Ok(Worker::new(Arc::clone(&self.shared), compiled))
    }

    /// Counters of every pack, summed over all workers, in the order of [`packs`](Self::packs).
    #[must_use]
    pub fn stats(&self) -> Vec<PackStats> {
        self.shared
            .infos
            .iter()
            .zip(&self.shared.counters)
            .map(|(info, c)| c.snapshot(&info.id))
            .collect()
    }
}
