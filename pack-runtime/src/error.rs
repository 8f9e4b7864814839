//! Errors at the crate boundary.

use std::path::PathBuf;

/// An error that stops the runtime itself (as opposed to one pack).
#[derive(Debug, thiserror::Error)]
pub enum RuntimeError {
    /// The pack directory does not exist or cannot be read.
    #[error("pack directory {path} is unusable: {source}")]
    PackDir {
        /// The directory that was given.
        path: PathBuf,
        /// Why it could not be used.
        source: std::io::Error,
    },
    /// The pack directory path exists but is not a directory.
    #[error("{0} is not a directory")]
    NotADirectory(PathBuf),
    /// The compile cache directory could not be prepared.
    #[error("compile cache in {path} is unusable: {reason}")]
    Cache {
        /// The configured cache directory.
        path: PathBuf,
        /// Why it could not be used.
        reason: String,
    },
    /// A pack that compiled at load time could not be compiled again for a worker.
    #[error("pack {pack} could not be prepared for a worker: {reason}")]
    WorkerCompile {
        /// `name@version` of the pack.
        pack: String,
        /// The compiler's message.
        reason: String,
    },
}

/// Why one pack was refused at load time. The other packs still load.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("pack at {dir} refused: {reason}")]
pub struct PackLoadError {
    /// The folder that holds the pack's `manifest.json`.
    pub dir: PathBuf,
    /// `name@version` when the manifest was readable far enough to tell.
    pub pack: Option<String>,
    /// What is wrong with it.
    pub reason: LoadFailure,
}

/// The reasons a pack can be refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum LoadFailure {
    /// A file beside the manifest is missing or unreadable.
    #[error("cannot read {file}: {message}")]
    Read {
        /// The file name (`manifest.json`, `config.json` or `pack.wasm`).
        file: &'static str,
        /// The I/O error.
        message: String,
    },
    /// `manifest.json` or `config.json` is not valid JSON of the expected shape.
    #[error("invalid {file}: {message}")]
    Json {
        /// The file name.
        file: &'static str,
        /// The parser's message.
        message: String,
    },
    /// The manifest's `schema` is not `"pre2"`.
    #[error("unsupported schema {0:?} (expected \"pre2\")")]
    Schema(String),
    /// `url.signature` in `config.json` does not match the sha-256 of `pack.wasm`.
    #[error("signature mismatch: config.json expects {expected}, pack.wasm hashes to {actual}")]
    Signature {
        /// The signature from `config.json`.
        expected: String,
        /// The sha-256 of the module that is on disk.
        actual: String,
    },
    /// The module is not valid WebAssembly, or Extism refused it.
    #[error("bad module: {0}")]
    Module(String),
    /// The manifest lists a method the module does not export.
    #[error("manifest lists method {0:?} but pack.wasm does not export it")]
    MissingExport(&'static str),
    /// Another pack with the same `name@version` was loaded first.
    #[error("duplicate pack {0}")]
    Duplicate(String),
}
