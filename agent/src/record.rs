//! Recordings: every connection's captured byte streams written to a directory, and read back
//! as the [`Record`]s capture produced, so `replay` runs them through the same flows and pack
//! stage. The format is described in docs/record-format.md.
//!
//! Writing never stalls capture: records are handed to a writer thread through a bounded
//! channel, and what does not fit is dropped and counted.

use std::{
    cmp::Reverse,
    collections::BinaryHeap,
    fs::File,
    io::{BufRead as _, BufReader},
    path::{Path, PathBuf},
};

use agent_common::Direction;
use base64::{Engine as _, engine::general_purpose::STANDARD as BASE64};
use serde::{Deserialize, Serialize};

use crate::capture::{DataRecord, Record};

/// The `format` value of a recording's metadata line.
pub const FORMAT: &str = "taskless-agent-recording";
/// The format version this agent writes and reads.
pub const VERSION: u32 = 1;
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

/// The first line of a connection file.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ConnectionMeta {
    /// Always [`FORMAT`].
    pub format: String,
    /// The format version ([`VERSION`]).
    pub version: u32,
    /// The process id.
    pub pid: u32,
    /// The process name.
    pub comm: String,
    /// The connection key (the `SSL *`), as `0x…` hex.
    pub conn: String,
    /// Unix ns minus `CLOCK_MONOTONIC` ns when the recording was made.
    pub unix_offset_ns: i64,
}

/// Which way recorded bytes went, relative to the observed process.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Dir {
    /// Written by the process.
    Egress,
    /// Read by the process.
    Ingress,
}

impl From<Direction> for Dir {
    fn from(d: Direction) -> Self {
        match d {
            Direction::Egress => Self::Egress,
            Direction::Ingress => Self::Ingress,
        }
    }
}

impl From<Dir> for Direction {
    fn from(d: Dir) -> Self {
        match d {
            Dir::Egress => Self::Egress,
            Dir::Ingress => Self::Ingress,
        }
    }
}

/// One line after the metadata, as stored.
#[derive(Clone, Debug, Default, Serialize, Deserialize)]
struct Line {
    t: u64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    dir: Option<Dir>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    data: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    gap: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    close: Option<bool>,
}

/// One recorded moment of a connection.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Entry {
    /// Bytes that went one way.
    Data {
        /// `CLOCK_MONOTONIC` ns.
        t: u64,
        /// Which way.
        dir: Dir,
        /// The bytes.
        data: Vec<u8>,
    },
    /// Bytes that went one way but were not captured.
    Gap {
        /// `CLOCK_MONOTONIC` ns.
        t: u64,
        /// Which way.
        dir: Dir,
        /// How many.
        len: u64,
    },
    /// The connection ended.
    Close {
        /// `CLOCK_MONOTONIC` ns.
        t: u64,
    },
}

impl Entry {
    /// The timestamp.
    #[must_use]
    pub const fn t(&self) -> u64 {
        match self {
            Self::Data { t, .. } | Self::Gap { t, .. } | Self::Close { t } => *t,
        }
    }

    /// The JSON line.
    #[must_use]
    pub fn to_json(&self) -> String {
        let line = match self {
            Self::Data { t, dir, data } => Line {
                t: *t,
                dir: Some(*dir),
                data: Some(BASE64.encode(data)),
                ..Line::default()
            },
            Self::Gap { t, dir, len } => Line {
                t: *t,
                dir: Some(*dir),
                gap: Some(*len),
                ..Line::default()
            },
            Self::Close { t } => Line {
                t: *t,
                close: Some(true),
                ..Line::default()
            },
        };
        serde_json::to_string(&line).unwrap_or_default()
    }

    /// Parses one JSON line.
    ///
    /// # Errors
    /// A description of what is wrong with it.
    pub fn from_json(text: &str) -> Result<Self, String> {
        let line: Line = serde_json::from_str(text).map_err(|e| e.to_string())?;
        match (line.dir, line.data, line.gap, line.close) {
            (Some(dir), Some(data), None, None) => Ok(Self::Data {
                t: line.t,
                dir,
                data: BASE64
                    .decode(data.as_bytes())
                    .map_err(|e| format!("data is not base64: {e}"))?,
            }),
            (Some(dir), None, Some(len), None) => Ok(Self::Gap {
                t: line.t,
                dir,
                len,
            }),
            (None, None, None, Some(true)) => Ok(Self::Close { t: line.t }),
            _ => Err("expected exactly one of dir+data, dir+gap or close:true".into()),
        }
    }

    /// The entries one captured record is stored as: its bytes and, when part of the call was
    /// not captured, a gap of the same size the flows stage would report for it.
    #[must_use]
    pub fn from_record(record: &Record) -> Vec<Self> {
        match record {
            Record::Close { timestamp_ns, .. } => vec![Self::Close { t: *timestamp_ns }],
            // The server name is not part of the format yet: replay takes it from Host.
            Record::ServerName { .. } => Vec::new(),
            // Connections end at SSL_free or the end of the recording; process events are not
            // part of a connection.
            Record::FdClose { .. } | Record::CodeChanged { .. } => Vec::new(),
            Record::Data(d) => {
                let (t, dir) = (d.timestamp_ns, Dir::from(d.direction));
                let mut v = Vec::new();
                if d.read_failed {
                    let len = u64::from(d.total_len.saturating_sub(d.offset))
                        .min(agent_common::data::MAX_CHUNK as u64);
                    v.push(Self::Gap { t, dir, len });
                    return v;
                }
                if !d.payload.is_empty() {
                    v.push(Self::Data {
                        t,
                        dir,
                        data: d.payload.clone(),
                    });
                }
                if d.truncated {
                    let end = u64::from(d.offset) + d.payload.len() as u64;
                    let len = u64::from(d.total_len).saturating_sub(end);
                    v.push(Self::Gap { t, dir, len });
                }
                v
            }
        }
    }

    /// The record capture would have delivered for this entry on connection `(pid, conn)`.
    /// A gap becomes an empty, truncated piece of a call of `len` bytes, which the flows stage
    /// reports to the parser as exactly `len` lost bytes.
    #[must_use]
    pub fn to_record(&self, pid: u32, conn: u64) -> Record {
        let data = |t, dir: Dir, payload: Vec<u8>, total_len, truncated| {
            Record::Data(DataRecord {
                tgid: pid,
                tid: pid,
                conn,
                timestamp_ns: t,
                fd: -1,
                fd_fallback: false,
                direction: dir.into(),
                offset: 0,
                total_len,
                truncated,
                read_failed: false,
                payload,
            })
        };
        match self {
            Self::Data { t, dir, data: d } => {
                let len = u32::try_from(d.len()).unwrap_or(u32::MAX);
                data(*t, *dir, d.clone(), len, false)
            }
            Self::Gap { t, dir, len } => data(
                *t,
                *dir,
                Vec::new(),
                u32::try_from(*len).unwrap_or(u32::MAX),
                true,
            ),
            Self::Close { t } => Record::Close {
                tgid: pid,
                conn,
                timestamp_ns: *t,
            },
        }
    }
}

/// One recorded connection, read back.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RecordedConnection {
    /// The file it came from.
    pub path: PathBuf,
    /// Its metadata.
    pub meta: ConnectionMeta,
    /// The connection key parsed from the metadata.
    pub conn: u64,
    /// Its entries in file order.
    pub entries: Vec<Entry>,
}

/// Reads one connection file.
///
/// # Errors
/// When it cannot be read or is not in the format.
pub fn read_connection(path: &Path) -> Result<RecordedConnection, RecordError> {
    let file = File::open(path).map_err(|source| RecordError::Io {
        path: path.to_path_buf(),
        source,
    })?;
    let bad = |line: usize, reason: String| RecordError::Format {
        path: path.to_path_buf(),
        line,
        reason,
    };
    let mut meta = None;
    let mut entries = Vec::new();
    for (i, line) in BufReader::new(file).lines().enumerate() {
        let line = line.map_err(|source| RecordError::Io {
            path: path.to_path_buf(),
            source,
        })?;
        if line.trim().is_empty() {
            continue;
        }
        if meta.is_none() {
            let m: ConnectionMeta =
                serde_json::from_str(&line).map_err(|e| bad(i + 1, format!("metadata: {e}")))?;
            if m.format != FORMAT || m.version != VERSION {
                return Err(bad(
                    i + 1,
                    format!(
                        "format {:?} version {} is not {FORMAT:?} version {VERSION}",
                        m.format, m.version
                    ),
                ));
            }
            meta = Some(m);
        } else {
            entries.push(Entry::from_json(&line).map_err(|r| bad(i + 1, r))?);
        }
    }
    let meta = meta.ok_or_else(|| bad(1, "empty file: no metadata line".into()))?;
    let hex = meta.conn.trim_start_matches("0x");
    let conn = u64::from_str_radix(hex, 16)
        .map_err(|e| bad(1, format!("conn {:?} is not hex: {e}", meta.conn)))?;
    Ok(RecordedConnection {
        path: path.to_path_buf(),
        meta,
        conn,
        entries,
    })
}

/// A whole recording directory.
#[derive(Clone, Debug)]
pub struct Recording {
    /// Its connections, sorted by file name.
    pub connections: Vec<RecordedConnection>,
}

impl Recording {
    /// Reads every `*.jsonl` file of `dir`.
    ///
    /// # Errors
    /// When the directory cannot be read, holds no connection files, or one is malformed.
    pub fn read_dir(dir: &Path) -> Result<Self, RecordError> {
        let io = |source| RecordError::Io {
            path: dir.to_path_buf(),
            source,
        };
        let mut paths = Vec::new();
        for entry in std::fs::read_dir(dir).map_err(io)? {
            let path = entry.map_err(io)?.path();
            if path.extension().is_some_and(|e| e == EXTENSION) && path.is_file() {
                paths.push(path);
            }
        }
        if paths.is_empty() {
            return Err(RecordError::Empty(dir.to_path_buf()));
        }
        paths.sort();
        let connections = paths
            .iter()
            .map(|p| read_connection(p))
            .collect::<Result<Vec<_>, _>>()?;
        Ok(Self { connections })
    }

    /// The Unix offset of the recording (of its first file; they are all written by one run).
    #[must_use]
    pub fn unix_offset_ns(&self) -> i64 {
        self.connections
            .first()
            .map_or(0, |c| c.meta.unix_offset_ns)
    }

    /// Every entry as the record capture delivered, in timestamp order across connections;
    /// each connection's own entries stay in file order.
    #[must_use]
    pub fn records(&self) -> Vec<Record> {
        let mut next = vec![0usize; self.connections.len()];
        let mut heap: BinaryHeap<Reverse<(u64, usize)>> = self
            .connections
            .iter()
            .enumerate()
            .filter_map(|(i, c)| c.entries.first().map(|e| Reverse((e.t(), i))))
            .collect();
        let mut out = Vec::new();
        while let Some(Reverse((_, i))) = heap.pop() {
            let c = &self.connections[i];
            out.push(c.entries[next[i]].to_record(c.meta.pid, c.conn));
            next[i] += 1;
            if let Some(e) = c.entries.get(next[i]) {
                heap.push(Reverse((e.t(), i)));
            }
        }
        out
    }
}

#[cfg(test)]
mod tests;
mod writer;

pub use writer::{MAX_OPEN, RecordStats, Recorder};
