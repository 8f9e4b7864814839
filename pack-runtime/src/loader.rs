//! Finding packs on disk and turning each into a [`PackDef`].

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use extism::CompiledPlugin;
use serde_json::{Map, Value};
use sha2::{Digest, Sha256};

use crate::config::RuntimeConfig;
use crate::error::{LoadFailure, PackLoadError, RuntimeError};
use crate::manifest::{self, Method};
use crate::pack::{PackDef, PackInfo};

/// How deep below the pack directory manifests are looked for (`@scope/name@version/` is 2).
const MAX_DEPTH: usize = 8;

/// The module names WASI preview 1 is imported under.
const WASI_MODULES: [&str; 2] = ["wasi_snapshot_preview1", "wasi_unstable"];

/// Every `manifest.json` below `dir`, sorted by path so load order is stable.
pub(crate) fn find_manifests(dir: &Path) -> Result<Vec<PathBuf>, RuntimeError> {
    let meta = std::fs::metadata(dir).map_err(|source| RuntimeError::PackDir {
        path: dir.to_path_buf(),
        source,
    })?;
    if !meta.is_dir() {
        return Err(RuntimeError::NotADirectory(dir.to_path_buf()));
    }
    // The top directory must be readable; below it, unreadable folders are skipped.
    std::fs::read_dir(dir).map_err(|source| RuntimeError::PackDir {
        path: dir.to_path_buf(),
        source,
    })?;
    let mut found = Vec::new();
    walk(dir, 0, &mut found);
    found.sort();
    Ok(found)
}

fn walk(dir: &Path, depth: usize, found: &mut Vec<PathBuf>) {
    let Ok(entries) = std::fs::read_dir(dir) else {
        tracing::warn!(dir = %dir.display(), "cannot read folder below the pack directory");
        return;
    };
    for entry in entries.flatten() {
        let Ok(kind) = entry.file_type() else {
            continue;
        };
        let path = entry.path();
        if kind.is_dir() && depth < MAX_DEPTH {
            walk(&path, depth + 1, found);
        } else if entry.file_name() == "manifest.json" && !kind.is_dir() {
            found.push(path);
        }
    }
}

/// Writes the wasmtime cache settings for `cache_dir` and returns the settings file to give
/// Extism.
pub(crate) fn prepare_cache(cache_dir: &Path) -> Result<PathBuf, RuntimeError> {
    let err = |reason: String| RuntimeError::Cache {
        path: cache_dir.to_path_buf(),
        reason,
    };
    let modules = cache_dir.join("wasmtime");
    std::fs::create_dir_all(&modules).map_err(|e| err(e.to_string()))?;
    let modules = modules.canonicalize().map_err(|e| err(e.to_string()))?;
    let modules = modules
        .to_str()
        .ok_or_else(|| err("the path is not valid UTF-8".into()))?;
    // A JSON string is also a valid TOML basic string.
    let quoted = serde_json::to_string(modules).map_err(|e| err(e.to_string()))?;
    let settings = cache_dir.join("wasmtime-cache.toml");
    let text = format!("[cache]\ndirectory = {quoted}\n");
    // Several agents may share the directory: never let one read a half-written file. Leave a
    // correct file alone, and replace a wrong one whole (write aside, then rename over it).
    if std::fs::read_to_string(&settings).is_ok_and(|old| old == text) {
        return Ok(settings);
    }
    let aside = cache_dir.join(format!("wasmtime-cache.toml.{}", std::process::id()));
    std::fs::write(&aside, text).map_err(|e| err(e.to_string()))?;
    std::fs::rename(&aside, &settings).map_err(|e| {
        let _ = std::fs::remove_file(&aside);
        err(e.to_string())
    })?;
    Ok(settings)
}

/// A loaded pack and the plugin compiled while checking it.
pub(crate) struct Loaded {
    pub def: PackDef,
    pub compiled: CompiledPlugin,
}

/// Loads the pack whose `manifest.json` is at `manifest_path`, with the `config.json` and
/// `pack.wasm` beside it.
pub(crate) fn load_pack(
    manifest_path: &Path,
    config: &RuntimeConfig,
    cache_config: Option<&Path>,
    seen: &mut BTreeSet<String>,
) -> Result<Loaded, PackLoadError> {
    let dir = manifest_path.parent().unwrap_or(Path::new("."));
    let files = PackFiles {
        manifest: manifest_path,
        wasm: &dir.join("pack.wasm"),
        config_optional: false,
    };
    load_files(&files, config, cache_config, seen)
}

/// Where one pack's files are.
pub(crate) struct PackFiles<'a> {
    /// `manifest.json`; `config.json` is looked for beside it.
    pub manifest: &'a Path,
    /// The module.
    pub wasm: &'a Path,
    /// A missing `config.json` counts as `{}` (the fixture checker) rather than a refusal.
    pub config_optional: bool,
}

/// Loads the pack made of `files`.
pub(crate) fn load_files(
    files: &PackFiles<'_>,
    config: &RuntimeConfig,
    cache_config: Option<&Path>,
    seen: &mut BTreeSet<String>,
) -> Result<Loaded, PackLoadError> {
    let dir = files
        .manifest
        .parent()
        .unwrap_or(Path::new("."))
        .to_path_buf();
    let refuse = |pack: Option<String>, reason: LoadFailure| PackLoadError {
        dir: dir.clone(),
        pack,
        reason,
    };
    let manifest = read(files.manifest, "manifest.json").map_err(|r| refuse(None, r))?;
    let config_path = dir.join("config.json");
    let config_json = if files.config_optional && !config_path.exists() {
        b"{}".to_vec()
    } else {
        read(&config_path, "config.json").map_err(|r| refuse(None, r))?
    };
    let desc = manifest::describe(&manifest, &config_json).map_err(|r| refuse(None, r))?;
    let id = format!("{}@{}", desc.name, desc.version);
    let wasm = read(files.wasm, "pack.wasm").map_err(|r| refuse(Some(id.clone()), r))?;
    load_module(dir.clone(), desc, wasm, config, cache_config, seen)
        .map_err(|r| refuse(Some(id), r))
}

/// Builds a pack from parts already in memory.
fn load_module(
    dir: PathBuf,
    desc: manifest::PackDescription,
    wasm: Vec<u8>,
    config: &RuntimeConfig,
    cache_config: Option<&Path>,
    seen: &mut BTreeSet<String>,
) -> Result<Loaded, LoadFailure> {
    let id = format!("{}@{}", desc.name, desc.version);
    let sha256 = hex::encode(Sha256::digest(&wasm));
    if !desc.signature.is_empty() && desc.signature != sha256 {
        return Err(LoadFailure::Signature {
            expected: desc.signature,
            actual: sha256,
        });
    }
    let shape = ModuleShape::read(&wasm)?;
    let wanted = desc
        .methods
        .clone()
        .unwrap_or_else(|| vec![Method::Pre, Method::Post]);
    if desc.methods.is_some() {
        for m in &wanted {
            if !shape.exports.contains(m.export()) {
                return Err(LoadFailure::MissingExport(m.export()));
            }
        }
    }
    let has = |m: Method| wanted.contains(&m) && shape.exports.contains(m.export());
    let (has_pre, has_chunk, has_post) = (has(Method::Pre), has(Method::Chunk), has(Method::Post));
    let methods = [
        (Method::Pre, has_pre),
        (Method::Chunk, has_chunk),
        (Method::Post, has_post),
    ]
    .into_iter()
    .filter_map(|(m, on)| on.then_some(m))
    .collect();
    let environment = environment(&desc.permissions.environment);
    // Written into every hook input: serialized once here.
    let configuration_json =
        serde_json::value::to_raw_value(&desc.configuration).map_err(|e| LoadFailure::Json {
            file: "config.json",
            message: e.to_string(),
        })?;
    let environment_json = environment
        .as_ref()
        .map(serde_json::value::to_raw_value)
        .transpose()
        .map_err(|e| LoadFailure::Json {
            file: "manifest.json",
            message: e.to_string(),
        })?;
    let limits = config.limits_for(&desc.name, &desc.version);
    let def = PackDef {
        info: PackInfo {
            id: id.clone(),
            name: desc.name,
            version: desc.version,
            description: desc.description,
            methods,
            permissions: desc.permissions,
            bodies: desc.bodies,
            configuration_once: desc.configuration_once,
            domains: desc.domains.patterns().map(<[String]>::to_vec),
            fields: desc.fields,
            charts: desc.charts,
            configuration: desc.configuration,
            wasi: shape.wasi,
            dir,
            sha256,
            limits,
        },
        wasm: Arc::from(wasm),
        domains: desc.domains,
        configuration_json,
        environment_json,
        has_pre,
        has_post,
        has_chunk,
    };
    if seen.contains(&id) {
        return Err(LoadFailure::Duplicate(id));
    }
    let compiled = def
        .compile(cache_config)
        .map_err(|e| LoadFailure::Module(format!("{e:#}")))?;
    // Instantiating once proves the imports link (unknown host functions are caught here).
    extism::Plugin::new_from_compiled(&compiled)
        .map_err(|e| LoadFailure::Module(format!("{e:#}")))?;
    seen.insert(id);
    Ok(Loaded { def, compiled })
}

fn read(path: &Path, file: &'static str) -> Result<Vec<u8>, LoadFailure> {
    std::fs::read(path).map_err(|e| LoadFailure::Read {
        file,
        message: e.to_string(),
    })
}

/// The listed environment variables that are set, or `None` when none are listed.
fn environment(names: &[String]) -> Option<Map<String, Value>> {
    if names.is_empty() {
        return None;
    }
    let mut out = Map::new();
    for name in names {
        if let Ok(v) = std::env::var(name) {
            out.insert(name.clone(), Value::String(v));
        }
    }
    Some(out)
}

/// What the loader needs to know about a module before compiling it.
struct ModuleShape {
    wasi: bool,
    exports: BTreeSet<String>,
}

impl ModuleShape {
    fn read(wasm: &[u8]) -> Result<Self, LoadFailure> {
        let bad = |e: wasmparser::BinaryReaderError| LoadFailure::Module(e.to_string());
        let mut shape = ModuleShape {
            wasi: false,
            exports: BTreeSet::new(),
        };
        for payload in wasmparser::Parser::new(0).parse_all(wasm) {
            match payload.map_err(bad)? {
                wasmparser::Payload::ImportSection(reader) => {
                    for import in reader.into_imports() {
                        let import = import.map_err(bad)?;
                        if WASI_MODULES.contains(&import.module) {
                            shape.wasi = true;
                        }
                    }
                }
                wasmparser::Payload::ExportSection(reader) => {
                    for export in reader {
                        let export = export.map_err(bad)?;
                        if export.kind == wasmparser::ExternalKind::Func {
                            shape.exports.insert(export.name.to_string());
                        }
                    }
                }
                _ => {}
            }
        }
        Ok(shape)
    }
}
