//! Reading a recording back, and playing it through a flows stage with the identities the live
//! run knew.

use std::{
    cmp::Reverse,
    collections::{BinaryHeap, HashMap},
    fs::File,
    io::{BufRead as _, BufReader},
    path::{Path, PathBuf},
    sync::Arc,
};

use super::{EXTENSION, Entry, FORMAT, FileHeader, OLDEST_VERSION, RecordError, VERSION};
use crate::{
    capture::Record,
    flows::{Flows, Identity, Moment},
};

/// One recorded connection, read back.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RecordedConnection {
    /// The file it came from.
    pub path: PathBuf,
    /// Its header line.
    pub meta: FileHeader,
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
            let m: FileHeader =
                serde_json::from_str(&line).map_err(|e| bad(i + 1, format!("metadata: {e}")))?;
            if m.format != FORMAT || !(OLDEST_VERSION..=VERSION).contains(&m.version) {
                return Err(bad(
                    i + 1,
                    format!(
                        "format {:?} version {} is not {FORMAT:?} version {OLDEST_VERSION} to {VERSION}",
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

    /// Every entry as `(connection index, entry index)`, in timestamp order across
    /// connections; each connection's own entries stay in file order. At equal timestamps a
    /// close goes first, so a connection that ended and one that reused its key at the same
    /// instant are replayed in that order.
    #[must_use]
    pub fn moments(&self) -> Vec<(usize, usize)> {
        let rank = |e: &Entry| u8::from(!matches!(e, Entry::Close { .. }));
        let mut next = vec![0usize; self.connections.len()];
        let mut heap: BinaryHeap<Reverse<(u64, u8, usize)>> = self
            .connections
            .iter()
            .enumerate()
            .filter_map(|(i, c)| c.entries.first().map(|e| Reverse((e.t(), rank(e), i))))
            .collect();
        let mut out = Vec::new();
        while let Some(Reverse((_, _, i))) = heap.pop() {
            out.push((i, next[i]));
            next[i] += 1;
            if let Some(e) = self.connections[i].entries.get(next[i]) {
                heap.push(Reverse((e.t(), rank(e), i)));
            }
        }
        out
    }

    /// Every entry as the record capture delivered, in the order of [`Recording::moments`]
    /// (identity entries, which are no records, left out).
    #[must_use]
    pub fn records(&self) -> Vec<Record> {
        self.moments()
            .into_iter()
            .filter_map(|(c, e)| {
                let conn = &self.connections[c];
                conn.entries[e].to_record(conn.meta.pid, conn.conn)
            })
            .collect()
    }
}

/// Plays a recording through a flows stage: each entry becomes the record capture delivered,
/// and each moment the flows stage makes for a connection carries the identity the recording
/// holds for that connection at that moment (the live run's `source`), instead of the little
/// the flows stage can know offline. Connections of a recording without identity entries
/// (format version 1) keep what the flows stage gives them: pid, process name and its own
/// serial.
pub struct Player<'a> {
    recording: &'a Recording,
    identities: Vec<Option<Arc<Identity>>>,
    /// Which file last fed each connection key (the one a closing record belongs to).
    owners: HashMap<(u32, u64), usize>,
    closed: Vec<bool>,
    end_ns: u64,
}

impl<'a> Player<'a> {
    /// Ready to play `recording` from its start.
    #[must_use]
    pub fn new(recording: &'a Recording) -> Self {
        let n = recording.connections.len();
        Self {
            recording,
            identities: vec![None; n],
            owners: HashMap::new(),
            closed: vec![false; n],
            end_ns: 0,
        }
    }

    /// The last timestamp played so far.
    #[must_use]
    pub const fn end_ns(&self) -> u64 {
        self.end_ns
    }

    /// Plays entry `entry` of connection `connection` (a pair from [`Recording::moments`]),
    /// handing the moments it completes to `out`. Out-of-range pairs are ignored.
    pub fn step(
        &mut self,
        (connection, entry): (usize, usize),
        flows: &mut Flows,
        out: &mut impl FnMut(Moment),
    ) {
        let Some(conn) = self.recording.connections.get(connection) else {
            return;
        };
        let Some(entry) = conn.entries.get(entry) else {
            return;
        };
        if let Entry::Identity { source, .. } = entry {
            let mut identity = source.clone();
            if identity.pid == 0 {
                identity.pid = conn.meta.pid;
            }
            if identity.process.is_empty() {
                identity.process.clone_from(&conn.meta.comm);
            }
            self.identities[connection] = Some(Arc::new(identity));
            return;
        }
        let Some(record) = entry.to_record(conn.meta.pid, conn.conn) else {
            return;
        };
        self.end_ns = self.end_ns.max(entry.t());
        let key = (conn.meta.pid, conn.conn);
        if matches!(entry, Entry::Close { .. }) {
            self.closed[connection] = true;
            self.owners.remove(&key);
        } else {
            self.owners.insert(key, connection);
        }
        let identity = self.identities[connection].as_ref();
        flows.handle(record, &mut |moment| out(with_identity(moment, identity)));
    }

    /// Closes, at the last timestamp played, every connection whose file has no close line
    /// (it was still open when the recording stopped), as capture would have at exit.
    pub fn finish(&mut self, flows: &mut Flows, out: &mut impl FnMut(Moment)) {
        let mut open: Vec<((u32, u64), usize)> = self
            .owners
            .iter()
            .filter(|(_, c)| !self.closed[**c])
            .map(|(k, c)| (*k, *c))
            .collect();
        open.sort_unstable_by_key(|(_, c)| *c);
        for ((pid, conn), c) in open {
            let record = Record::Close {
                tgid: pid,
                conn,
                timestamp_ns: self.end_ns,
            };
            let identity = self.identities[c].as_ref();
            flows.handle(record, &mut |moment| out(with_identity(moment, identity)));
            self.closed[c] = true;
        }
        self.owners.clear();
    }
}

/// `job` carrying `identity` instead of the flows stage's meta, when there is one.
fn with_identity(moment: Moment, identity: Option<&Arc<Identity>>) -> Moment {
    let Some(identity) = identity else {
        return moment;
    };
    match moment {
        Moment::Request { key, request, .. } => Moment::Request {
            key,
            request,
            identity: Arc::clone(identity),
        },
        Moment::Complete { key, exchange, .. } => Moment::Complete {
            key,
            exchange,
            identity: Arc::clone(identity),
        },
        Moment::Incomplete {
            key,
            had_request,
            response,
            upgraded,
            ..
        } => Moment::Incomplete {
            key,
            had_request,
            response,
            identity: Arc::clone(identity),
            upgraded,
        },
        other => other,
    }
}
