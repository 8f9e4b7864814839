//! Runtime settings: limits for every pack, per-pack overrides and the compile cache.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::time::Duration;

/// Default wall-clock limit of one hook call.
pub const DEFAULT_TIMEOUT: Duration = Duration::from_millis(100);
/// Default memory cap of one instance, in 64 KiB Wasm pages (32 MiB), counted over all of the
/// instance's memories (the pack's own and Extism's kernel memory).
pub const DEFAULT_MEMORY_MAX_PAGES: u32 = 512;
/// Default cap on the size of one hook's output.
pub const DEFAULT_MAX_OUTPUT_BYTES: usize = 1024 * 1024;
/// Default minimum time between two warnings about the same pack failing the same way.
pub const DEFAULT_WARN_INTERVAL: Duration = Duration::from_secs(10);

/// Settings of the pack runtime. `Default` gives the documented defaults.
#[derive(Debug, Clone)]
pub struct RuntimeConfig {
    /// Wall-clock limit of one hook call (Extism timeout).
    pub timeout: Duration,
    /// Memory cap of one instance in 64 KiB pages.
    pub memory_max_pages: u32,
    /// Optional instruction budget of one hook call (wasmtime fuel). `None` turns fuel off,
    /// which keeps calls faster; the timeout still applies.
    pub fuel: Option<u64>,
    /// Folder for wasmtime's compile cache (in the agent's state directory). With it, a pack is
    /// compiled once and later loads (other workers, restarts) read the compiled code back.
    /// Without it, every worker compiles its own copy.
    pub cache_dir: Option<PathBuf>,
    /// Largest hook output accepted; a larger one fails that call.
    pub max_output_bytes: usize,
    /// Minimum time between two warnings about one pack failing in one way.
    pub warn_interval: Duration,
    /// Limits for single packs, keyed by pack name or `name@version` (the latter wins).
    pub overrides: BTreeMap<String, PackLimits>,
}

impl Default for RuntimeConfig {
    fn default() -> Self {
        Self {
            timeout: DEFAULT_TIMEOUT,
            memory_max_pages: DEFAULT_MEMORY_MAX_PAGES,
            fuel: None,
            cache_dir: None,
            max_output_bytes: DEFAULT_MAX_OUTPUT_BYTES,
            warn_interval: DEFAULT_WARN_INTERVAL,
            overrides: BTreeMap::new(),
        }
    }
}

/// Limits that replace the runtime-wide ones for one pack. `None` keeps the runtime's value.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct PackLimits {
    /// Wall-clock limit of one hook call.
    pub timeout: Option<Duration>,
    /// Memory cap in 64 KiB pages.
    pub memory_max_pages: Option<u32>,
    /// Instruction budget of one call (`Some(None)` turns fuel off for this pack).
    pub fuel: Option<Option<u64>>,
    /// Largest output accepted from one call.
    pub max_output_bytes: Option<usize>,
}

/// The limits in force for one pack, after overrides.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
pub struct EffectiveLimits {
    /// Wall-clock limit of one hook call.
    #[serde(serialize_with = "ser_millis")]
    pub timeout: Duration,
    /// Memory cap in 64 KiB pages.
    pub memory_max_pages: u32,
    /// Instruction budget of one call, if any.
    pub fuel: Option<u64>,
    /// Largest output accepted from one call.
    pub max_output_bytes: usize,
}

fn ser_millis<S: serde::Serializer>(d: &Duration, s: S) -> Result<S::Ok, S::Error> {
    s.serialize_u128(d.as_millis())
}

impl RuntimeConfig {
    /// The limits for the pack `name` at `version`.
    #[must_use]
    pub fn limits_for(&self, name: &str, version: &str) -> EffectiveLimits {
        let mut limits = EffectiveLimits {
            timeout: self.timeout,
            memory_max_pages: self.memory_max_pages,
            fuel: self.fuel,
            max_output_bytes: self.max_output_bytes,
        };
        let by_name = self.overrides.get(name);
        let by_id = self.overrides.get(&format!("{name}@{version}"));
        for o in [by_name, by_id].into_iter().flatten() {
            if let Some(t) = o.timeout {
                limits.timeout = t;
            }
            if let Some(p) = o.memory_max_pages {
                limits.memory_max_pages = p;
            }
            if let Some(f) = o.fuel {
                limits.fuel = f;
            }
            if let Some(m) = o.max_output_bytes {
                limits.max_output_bytes = m;
            }
        }
        limits
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn overrides_by_id_win_over_overrides_by_name() {
        let mut config = RuntimeConfig::default();
        config.overrides.insert(
            "core".into(),
            PackLimits {
                timeout: Some(Duration::from_millis(5)),
                memory_max_pages: Some(10),
                ..PackLimits::default()
            },
        );
        config.overrides.insert(
            "core@1.0.0".into(),
            PackLimits {
                timeout: Some(Duration::from_millis(7)),
                fuel: Some(Some(1000)),
                ..PackLimits::default()
            },
        );
        let l = config.limits_for("core", "1.0.0");
        assert_eq!(l.timeout, Duration::from_millis(7));
        assert_eq!(l.memory_max_pages, 10);
        assert_eq!(l.fuel, Some(1000));
        assert_eq!(l.max_output_bytes, DEFAULT_MAX_OUTPUT_BYTES);

        let other = config.limits_for("core", "2.0.0");
        assert_eq!(other.timeout, Duration::from_millis(5));
        assert_eq!(other.fuel, None);
        let unrelated = config.limits_for("stripe", "1.0.0");
        assert_eq!(unrelated.timeout, DEFAULT_TIMEOUT);
        assert_eq!(unrelated.memory_max_pages, DEFAULT_MEMORY_MAX_PAGES);
    }
}
