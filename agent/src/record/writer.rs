//! The recorder: a writer thread behind a bounded channel, one file per connection. Each record
//! comes with what the flows stage knew about its connection once it had handled it, so the
//! file holds the connection's identity as it became known, ahead of the bytes it applies to.

use std::{
    collections::HashMap,
    fs::File,
    io::{BufWriter, Write as _},
    os::unix::fs::{DirBuilderExt as _, OpenOptionsExt as _},
    path::{Path, PathBuf},
    sync::{Arc, atomic::Ordering},
    thread::JoinHandle,
    time::Duration,
};

use crossbeam_channel::{Receiver, Sender, TrySendError};

use super::{EXTENSION, Entry, FORMAT, FileHeader, QUEUE, RecordError, VERSION};
use crate::{
    capture::Record,
    flows::{Flows, Identity},
};

/// A record and its connection's identity after the flows stage handled it (`None` when the
/// connection is not live: closed, or a server name waiting for its first data).
type Message = (Record, Option<Arc<Identity>>);

crate::stats::counters! {
    /// Counters of the recorder.
    pub struct RecordStats {
        /// Records written.
        written,
        /// Connection files created.
        files,
        /// Records dropped because the writer was behind.
        dropped,
        /// Write failures (the record is lost).
        failed,
    }
}

/// Writes records to a recording directory on its own thread.
pub struct Recorder {
    tx: Sender<Message>,
    handle: JoinHandle<()>,
    stats: Arc<RecordStats>,
}

impl Recorder {
    /// Creates `dir` if needed and starts the writer. Timestamps are stored as captured;
    /// `unix_offset_ns` (Unix minus monotonic) goes into every file's metadata.
    ///
    /// # Errors
    /// When the directory cannot be created or the thread cannot start.
    pub fn start(dir: &Path, unix_offset_ns: i64) -> Result<Self, RecordError> {
        Self::start_with_limit(dir, unix_offset_ns, MAX_OPEN)
    }

    /// [`Recorder::start`] keeping at most `max_open` files open at once.
    ///
    /// # Errors
    /// When the directory cannot be created or the thread cannot start.
    pub fn start_with_limit(
        dir: &Path,
        unix_offset_ns: i64,
        max_open: usize,
    ) -> Result<Self, RecordError> {
        std::fs::DirBuilder::new()
            .recursive(true)
            .mode(0o700)
            .create(dir)
            .map_err(|source| RecordError::Io {
                path: dir.to_path_buf(),
                source,
            })?;
        let (tx, rx) = crossbeam_channel::bounded(QUEUE);
        let stats = Arc::new(RecordStats::default());
        let mut writer = Writer {
            dir: dir.to_path_buf(),
            unix_offset_ns,
            conns: HashMap::new(),
            open: 0,
            max_open,
            tick: 0,
            serial: 0,
            stats: Arc::clone(&stats),
            warned: false,
        };
        let handle = std::thread::Builder::new()
            .name("recorder".into())
            .spawn(move || writer.run(&rx))
            .map_err(RecordError::Thread)?;
        Ok(Self { tx, handle, stats })
    }

    /// Queues `record`, which `flows` has just handled, with what `flows` now knows about its
    /// connection; drops and counts it when the writer is behind.
    pub fn record(&self, record: Record, flows: &Flows) {
        match record {
            // Process events are not part of any connection.
            Record::CodeChanged { .. } | Record::Socket { .. } => {}
            _ => {
                let identity =
                    key(&record).and_then(|(tgid, conn)| flows.identity(tgid, conn).cloned());
                self.record_with_identity(record, identity);
            }
        }
    }

    /// Queues `record` with its connection's `identity` as the flows stage has it after
    /// handling the record; drops and counts it when the writer is behind.
    pub fn record_with_identity(&self, record: Record, identity: Option<Arc<Identity>>) {
        match self.tx.try_send((record, identity)) {
            Ok(()) => {}
            Err(TrySendError::Full(_) | TrySendError::Disconnected(_)) => {
                self.stats.dropped.fetch_add(1, Ordering::Relaxed);
            }
        }
    }

    /// The counters.
    #[must_use]
    pub fn stats(&self) -> &Arc<RecordStats> {
        &self.stats
    }

    /// Writes what is queued, closes the files and logs the counters.
    pub fn finish(self) {
        drop(self.tx);
        let _ = self.handle.join();
        let s = &self.stats;
        let dropped = s.dropped.load(Ordering::Relaxed);
        let failed = s.failed.load(Ordering::Relaxed);
        if dropped > 0 || failed > 0 {
            tracing::warn!(
                dropped,
                failed,
                "the recording is missing records: it will not replay exactly"
            );
        }
        crate::stats::log("recording closed", &[&**s]);
    }
}

/// Connection files kept open at once; beyond this the least recently written is closed and
/// reopened for appending when its connection moves again.
pub const MAX_OPEN: usize = 256;

/// The connection a record belongs to.
/// The connection a record belongs to, when it names one by its `SSL *`.
const fn key(record: &Record) -> Option<(u32, u64)> {
    match record {
        Record::Data(d) => Some((d.tgid, d.conn)),
        Record::Close { tgid, conn, .. } | Record::ServerName { tgid, conn, .. } => {
            Some((*tgid, *conn))
        }
        Record::FdClose { .. } | Record::CodeChanged { .. } | Record::Socket { .. } => None,
    }
}

struct ConnFile {
    path: PathBuf,
    file: Option<BufWriter<File>>,
    used: u64,
    /// The flows stage's serial for the connection this file holds.
    serial: u64,
    /// The identity last written.
    identity: Option<Arc<Identity>>,
    /// The timestamp of the last line written.
    last_t: u64,
}

struct Writer {
    dir: PathBuf,
    unix_offset_ns: i64,
    conns: HashMap<(u32, u64), ConnFile>,
    open: usize,
    max_open: usize,
    tick: u64,
    serial: u64,
    stats: Arc<RecordStats>,
    /// The first failure has been logged; later ones are only counted.
    warned: bool,
}

impl Writer {
    /// Counts a failed write, and logs the first one with the file and the cause (a full or
    /// read-only file system fails every write after it: one line, not one per record).
    fn fail(&mut self, path: &Path, error: &dyn std::fmt::Display) {
        self.stats.failed.fetch_add(1, Ordering::Relaxed);
        if !self.warned {
            self.warned = true;
            tracing::error!(path = %path.display(), %error, "cannot write the recording: records are lost from it from now on (counted as `failed`, only this first failure is logged); capture and output go on");
        }
    }

    fn run(&mut self, rx: &Receiver<Message>) {
        loop {
            match rx.recv_timeout(Duration::from_secs(1)) {
                Ok((record, meta)) => self.write(&record, meta),
                Err(crossbeam_channel::RecvTimeoutError::Timeout) => self.flush_all(),
                Err(crossbeam_channel::RecvTimeoutError::Disconnected) => break,
            }
        }
        self.flush_all();
    }

    fn flush_all(&mut self) {
        let mut failures = Vec::new();
        for c in self.conns.values_mut() {
            if let Some(Err(e)) = c.file.as_mut().map(BufWriter::flush) {
                failures.push((c.path.clone(), e));
            }
        }
        for (path, e) in failures {
            self.fail(&path, &e);
        }
    }

    fn write(&mut self, record: &Record, meta: Option<Arc<Identity>>) {
        if let Record::FdClose {
            tgid,
            fd,
            timestamp_ns,
        } = record
        {
            // A closed socket ends the connection recorded on that fd, as it did live.
            let on_fd = self.conns.iter().find_map(|(k, c)| {
                (k.0 == *tgid && c.identity.as_ref().and_then(|m| m.fd) == Some(*fd)).then_some(k.1)
            });
            if let Some(conn) = on_fd {
                let close = Record::Close {
                    tgid: *tgid,
                    conn,
                    timestamp_ns: *timestamp_ns,
                };
                self.write(&close, None);
            }
            return;
        }
        let Some(key) = key(record) else {
            return;
        };
        let known = self.conns.get(&key).map(|c| (c.serial, c.last_t));
        let t = match record {
            Record::Data(d) => d.timestamp_ns,
            Record::Close { timestamp_ns, .. } => *timestamp_ns,
            // A server name has no timestamp: it applies from the connection's last line on.
            // Before the first data there is no file yet; the name comes with that data.
            Record::ServerName { .. } => match known {
                Some((_, last_t)) => last_t,
                None => return,
            },
            Record::FdClose { .. } | Record::CodeChanged { .. } | Record::Socket { .. } => return,
        };
        let is_close = matches!(record, Record::Close { .. });
        if is_close && known.is_none() {
            // A connection this recording never saw data for.
            return;
        }
        if let (Record::Data(_), Some((serial, _)), Some(m)) = (record, known, &meta)
            && serial != m.serial
        {
            // The flows stage ended that connection and started another under the same key
            // (a new fd without a close in between, or it had been idle too long).
            // A failure is counted by `append`.
            self.append(key, None, &[Entry::Close { t }]);
            self.remove(key);
        }
        let identity = meta.filter(|m| {
            !is_close
                && self
                    .conns
                    .get(&key)
                    .and_then(|c| c.identity.as_ref())
                    .is_none_or(|old| !Arc::ptr_eq(old, m) && **old != **m)
        });
        let mut entries = Vec::new();
        if let Some(m) = &identity {
            entries.push(Entry::Identity {
                t,
                source: Identity::clone(m),
            });
        }
        entries.extend(Entry::from_record(record));
        if entries.is_empty() {
            return;
        }
        let ok = self.append(key, identity, &entries);
        if is_close {
            self.remove(key);
        }
        if ok {
            self.stats.written.fetch_add(1, Ordering::Relaxed);
        }
    }

    /// Writes `entries` to `key`'s file (created when new, with `identity` for its header),
    /// remembering `identity` as the last one written. False when something failed (counted).
    fn append(
        &mut self,
        key: (u32, u64),
        identity: Option<Arc<Identity>>,
        entries: &[Entry],
    ) -> bool {
        if let Err(e) = self.open_file(key, identity.as_deref()) {
            let path = match &e {
                RecordError::Io { path, .. } => path.clone(),
                _ => self.dir.clone(),
            };
            self.fail(&path, &e);
            return false;
        }
        self.tick += 1;
        let Some(c) = self.conns.get_mut(&key) else {
            return false;
        };
        c.used = self.tick;
        if let Some(m) = identity {
            c.identity = Some(m);
        }
        let Some(f) = c.file.as_mut() else {
            return false;
        };
        let mut error = None;
        for entry in entries {
            if let Err(e) = writeln!(f, "{}", entry.to_json()) {
                error = Some(e);
            }
            c.last_t = c.last_t.max(entry.t());
        }
        match error {
            None => true,
            Some(e) => {
                let path = c.path.clone();
                self.fail(&path, &e);
                false
            }
        }
    }

    /// Flushes and forgets `key`'s file: its connection has ended.
    fn remove(&mut self, key: (u32, u64)) {
        if let Some(c) = self.conns.remove(&key)
            && let Some(mut f) = c.file
        {
            if let Err(e) = f.flush() {
                self.fail(&c.path, &e);
            }
            self.open -= 1;
        }
    }

    /// Makes sure `key` has an open file: a new one for a new connection (named after `meta`),
    /// or its old one reopened for appending after it was closed to make room.
    fn open_file(&mut self, key: (u32, u64), meta: Option<&Identity>) -> Result<(), RecordError> {
        if self.conns.get(&key).is_some_and(|c| c.file.is_some()) {
            return Ok(());
        }
        self.make_room();
        if let Some(c) = self.conns.get_mut(&key) {
            let file = std::fs::OpenOptions::new()
                .append(true)
                .open(&c.path)
                .map_err(|source| RecordError::Io {
                    path: c.path.clone(),
                    source,
                })?;
            c.file = Some(BufWriter::new(file));
        } else {
            let c = self.create(key, meta)?;
            self.conns.insert(key, c);
        }
        self.open += 1;
        Ok(())
    }

    fn make_room(&mut self) {
        while self.open >= self.max_open.max(1) {
            let lru = self
                .conns
                .iter()
                .filter(|(_, c)| c.file.is_some())
                .min_by_key(|(_, c)| c.used)
                .map(|(k, _)| *k);
            let Some((path, file)) = lru
                .and_then(|k| self.conns.get_mut(&k))
                .and_then(|c| Some((c.path.clone(), c.file.take()?)))
            else {
                break;
            };
            self.open -= 1;
            if let Err(e) = file.into_inner() {
                self.fail(&path, e.error());
            }
        }
    }

    fn create(
        &mut self,
        (pid, conn): (u32, u64),
        meta: Option<&Identity>,
    ) -> Result<ConnFile, RecordError> {
        self.serial += 1;
        let path = self
            .dir
            .join(format!("{pid}-{conn:016x}-{}.{EXTENSION}", self.serial));
        let io = |source| RecordError::Io {
            path: path.clone(),
            source,
        };
        let file = std::fs::OpenOptions::new()
            .write(true)
            .create(true)
            .truncate(true)
            .mode(0o600)
            .open(&path)
            .map_err(io)?;
        let mut f = BufWriter::new(file);
        let header = FileHeader {
            format: FORMAT.into(),
            version: VERSION,
            pid,
            comm: meta.map_or_else(|| crate::procfs::process_name(pid), |m| m.process.clone()),
            conn: format!("{conn:#x}"),
            unix_offset_ns: self.unix_offset_ns,
        };
        let text = serde_json::to_string(&header).unwrap_or_default();
        writeln!(f, "{text}").map_err(io)?;
        self.stats.files.fetch_add(1, Ordering::Relaxed);
        tracing::debug!(path = %path.display(), "recording connection");
        Ok(ConnFile {
            path,
            file: Some(f),
            used: 0,
            serial: meta.map_or(0, |m| m.serial),
            identity: None,
            last_t: 0,
        })
    }
}
