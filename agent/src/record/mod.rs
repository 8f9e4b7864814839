//! Recordings: every connection's captured byte streams, and what the live run knew about the
//! connection (its [`Identity`](crate::flows::Identity): fd, addresses, server name, cgroup,
//! serial), written to a
//! directory and read back as the [`Record`](crate::capture::Record)s capture produced, so
//! `replay` runs them through the same flows and pack stage and prints the same `source`. The
//! format is described in docs/record-format.md.
//!
//! Writing never stalls capture: records are handed to a writer thread through a bounded
//! channel, and what does not fit is dropped and counted.

use std::path::PathBuf;

/// The `format` value of a recording's metadata line.
pub const FORMAT: &str = "taskless-agent-recording";
/// The format version this agent writes.
pub const VERSION: u32 = 3;
/// The oldest format version this agent still reads (version 1: no identity lines).
pub const OLDEST_VERSION: u32 = 1;
/// Records queued for the writer thread; beyond this they are dropped and counted.
pub const QUEUE: usize = 16 * 1024;
/// File name suffix of connection files.
pub const EXTENSION: &str = "jsonl";

/// Why a recording could not be written or read.
#[derive(Debug, thiserror::Error)]
pub enum RecordError {
    /// A file or directory could not be created, listed or read.
    #[error("{path}: {source}")]
    Io {
        /// The file or directory.
        path: PathBuf,
        /// The cause.
        source: std::io::Error,
    },
    /// A line is not what the format says.
    #[error("{path}:{line}: {reason}")]
    Format {
        /// The file.
        path: PathBuf,
        /// 1-based line number.
        line: usize,
        /// What is wrong.
        reason: String,
    },
    /// The directory holds no connection files.
    #[error("{0}: no recorded connections (*.jsonl) in this directory")]
    Empty(PathBuf),
    /// The writer thread could not be started.
    #[error("starting the recording thread: {0}")]
    Thread(std::io::Error),
}

mod format;
mod read;
#[cfg(test)]
mod tests;
mod writer;

pub use format::{Entry, FileHeader};
pub use read::{Player, RecordedConnection, Recording, read_connection};
pub use writer::{MAX_OPEN, RecordStats, Recorder};
