//! Loading the pack directory again over a running set: what changed, and a new set in which a
//! pack that no longer loads keeps its previous version.

use std::collections::BTreeSet;
use std::path::Path;

use crate::config::RuntimeConfig;
use crate::error::{PackLoadError, RuntimeError};
use crate::loader::{self, Loaded};
use crate::packset::PackSet;

/// What [`PackSet::reload`] found.
#[derive(Debug, Default)]
pub struct Reload {
    /// The packs to run from now on; `None` when nothing changed.
    pub set: Option<PackSet>,
    /// Packs (`name@version`) in a folder that held none before, or a new version in a folder.
    pub added: Vec<String>,
    /// Packs whose folder is gone (or holds another version now).
    pub removed: Vec<String>,
    /// Packs whose module, manifest or configuration changed in place.
    pub changed: Vec<String>,
    /// Packs that do not load, each with the previous version from the same folder that keeps
    /// running in its place (`None`: there was none, the folder is left out).
    pub refused: Vec<(PackLoadError, Option<String>)>,
}

impl Reload {
    /// Whether any pack was added, removed or changed.
    #[must_use]
    pub fn changed_anything(&self) -> bool {
        self.set.is_some()
    }
}

/// What makes two loads of one folder the same pack: everything `PackInfo` shows (module hash,
/// manifest, configuration, limits).
fn fingerprint(info: &crate::PackInfo) -> String {
    serde_json::to_string(info).unwrap_or_default()
}

impl PackSet {
    /// Loads `dir` again, as [`PackSet::load_dir`] does, and compares it with this set. A pack
    /// that no longer loads keeps the version this set runs from the same folder (that is how a
    /// half-written or broken replacement leaves the old one running). Counters carry over for
    /// packs that stay (by `name@version`). The set in [`Reload::set`] is new: make new
    /// [`Worker`](crate::Worker)s from it, and let exchanges begun on this one finish here.
    ///
    /// # Errors
    /// When `dir` itself is unusable; this set is then left as it is.
    pub fn reload(&self, dir: &Path, config: &RuntimeConfig) -> Result<Reload, RuntimeError> {
        let manifests = loader::find_manifests(dir)?;
        let cache_config = self.shared.cache_config.clone();
        let mut seen = BTreeSet::new();
        let mut loaded: Vec<Loaded> = Vec::new();
        let mut refused = Vec::new();
        for path in manifests {
            match loader::load_pack(&path, config, cache_config.as_deref(), &mut seen) {
                Ok(pack) => loaded.push(pack),
                Err(e) => {
                    let previous = self
                        .shared
                        .defs
                        .iter()
                        .find(|d| d.info.dir == e.dir && !seen.contains(&d.info.id));
                    let kept = previous.and_then(|def| match def.compile(cache_config.as_deref()) {
                        Ok(compiled) => {
                            seen.insert(def.info.id.clone());
                            loaded.push(Loaded {
                                def: def.clone(),
                                compiled,
                            });
                            Some(def.info.id.clone())
                        }
                        Err(err) => {
                            tracing::warn!(pack = %def.info.id, error = %format!("{err:#}"), "previous version of a pack no longer compiles");
                            None
                        }
                    });
                    refused.push((e, kept));
                }
            }
        }
        let mut report = Reload {
            refused,
            ..Reload::default()
        };
        for l in &loaded {
            let info = &l.def.info;
            match self.shared.defs.iter().find(|d| d.info.dir == info.dir) {
                None => report.added.push(info.id.clone()),
                Some(old) if old.info.id != info.id => {
                    report.removed.push(old.info.id.clone());
                    report.added.push(info.id.clone());
                }
                Some(old) if fingerprint(&old.info) != fingerprint(info) => {
                    report.changed.push(info.id.clone());
                }
                Some(_) => {}
            }
        }
        for old in &self.shared.defs {
            if !loaded.iter().any(|l| l.def.info.dir == old.info.dir) {
                report.removed.push(old.info.id.clone());
            }
        }
        if !(report.added.is_empty() && report.removed.is_empty() && report.changed.is_empty()) {
            report.set = Some(Self::from_loaded(loaded, config, cache_config, Some(self)));
        }
        Ok(report)
    }
}
