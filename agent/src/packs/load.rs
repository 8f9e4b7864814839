//! Finding and loading the packs: the directory given, or the packs shipped with the agent.

use std::{
    path::{Path, PathBuf},
    sync::Arc,
    time::Instant,
};

use taskless_pack_runtime::{PackSet, RuntimeConfig, RuntimeError};

use crate::config::PackConfig;

/// Why the packs could not be loaded.
#[derive(Debug, thiserror::Error)]
pub enum LoadError {
    /// The packs directory is missing or unusable.
    #[error("packs directory {path}: {reason}")]
    Dir {
        /// The directory.
        path: PathBuf,
        /// Why.
        reason: String,
    },
    /// No directory given and no shipped packs found.
    #[error(
        "no --packs given and no packs shipped beside the agent (looked in {looked}); pass --packs DIR"
    )]
    NoDefault {
        /// Where it looked.
        looked: String,
    },
}

/// Where the shipped packs are looked for when no directory is given, relative to the
/// executable: beside it, one level up (`target/packs` for a development build), and the
/// conventional install locations.
fn default_candidates() -> Vec<PathBuf> {
    let mut v = Vec::new();
    if let Some(dir) = std::env::current_exe()
        .ok()
        .and_then(|e| e.parent().map(Path::to_path_buf))
    {
        v.push(dir.join("packs"));
        if let Some(up) = dir.parent() {
            v.push(up.join("packs"));
            v.push(up.join("share/taskless-agent/packs"));
        }
    }
    v.push(PathBuf::from("/usr/share/taskless-agent/packs"));
    v
}

/// The packs directory `config` asks for: the one given, else the shipped packs.
///
/// # Errors
/// When the directory given is unusable, or none is given and no shipped packs are found.
pub fn packs_dir(config: &PackConfig) -> Result<PathBuf, LoadError> {
    resolve_dir(config.dir.as_deref())
}

fn resolve_dir(given: Option<&Path>) -> Result<PathBuf, LoadError> {
    if let Some(p) = given {
        if !p.is_dir() {
            return Err(LoadError::Dir {
                path: p.to_path_buf(),
                reason: if p.exists() {
                    "not a directory".into()
                } else {
                    "does not exist".into()
                },
            });
        }
        return Ok(p.to_path_buf());
    }
    let candidates = default_candidates();
    candidates
        .iter()
        .find(|p| p.is_dir())
        .cloned()
        .ok_or_else(|| LoadError::NoDefault {
            looked: candidates
                .iter()
                .map(|p| p.display().to_string())
                .collect::<Vec<_>>()
                .join(", "),
        })
}

/// The pack runtime's settings for `config`.
#[must_use]
pub fn runtime_config(config: &PackConfig) -> RuntimeConfig {
    RuntimeConfig {
        timeout: config.timeout,
        memory_max_pages: config.memory_mib.saturating_mul(16),
        cache_dir: Some(config.state_dir.join("compile-cache")),
        ..RuntimeConfig::default()
    }
}

/// Loads the packs, logging each one and each refusal. An unusable compile cache is not fatal:
/// the packs are compiled in memory instead.
///
/// # Errors
/// When the directory is unusable.
pub fn load_packs(config: &PackConfig) -> Result<Arc<PackSet>, LoadError> {
    let dir = resolve_dir(config.dir.as_deref())?;
    let started = Instant::now();
    let mut runtime = runtime_config(config);
    let loaded = match PackSet::load_dir(&dir, &runtime) {
        Err(RuntimeError::Cache { path, reason }) => {
            tracing::warn!(path = %path.display(), %reason, "compile cache unusable; compiling packs in memory");
            runtime.cache_dir = None;
            PackSet::load_dir(&dir, &runtime)
        }
        other => other,
    };
    let (set, refused) = loaded.map_err(|e| LoadError::Dir {
        path: dir.clone(),
        reason: e.to_string(),
    })?;
    if !refused.is_empty() {
        tracing::warn!(dir = %dir.display(), refused = refused.len(), "some packs were refused (each is logged above)");
    }
    if set.packs().is_empty() {
        tracing::warn!(dir = %dir.display(), "no packs loaded: output lines will carry no dimensions");
    }
    tracing::debug!(elapsed_ms = started.elapsed().as_millis(), "packs compiled");
    Ok(Arc::new(set))
}
