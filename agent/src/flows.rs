//! Per-connection state: the two ordered byte streams of each TLS connection, fed to the HTTP
//! parser, whose exchange moments are handed to the pack stage.
//!
//! A connection is named by `(tgid, SSL pointer)` for as long as the kernel says it lives
//! (`SSL_free` ends it); each gets a serial number so a reused pointer is a new connection. The
//! socket fd the kernel saw inside the calls gives the connection its addresses (read once, from
//! `/proc`, when the fd is first known); a pointer that turns up on a different fd is a new
//! connection too (its `SSL_free` was missed).

use std::{
    collections::HashMap,
    net::SocketAddr,
    sync::{
        Arc,
        atomic::{AtomicU64, Ordering},
    },
};

use agent_common::Direction;
use taskless_http::{Assembled, Assembler, Config, Connection, Event, Flow};

use crate::{
    capture::{DataRecord, Record},
    pipeline::{ExchangeKey, Job},
    sockets::{self, CgroupInfo},
};

/// Server names waiting for their connection's first data are forgotten past this many.
const MAX_PENDING_NAMES: usize = 16_384;

/// Connections idle this long are closed and forgotten.
pub const IDLE_TIMEOUT_NS: u64 = 5 * 60 * 1_000_000_000;

/// What is known about a connection and its owner, carried with its exchanges. Fields that are
/// `None` are unknown.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ConnMeta {
    /// Process id.
    pub pid: u32,
    /// Process name.
    pub comm: String,
    /// The connection's serial: unique within this agent's run, so a reused `SSL *` or fd is a
    /// new number.
    pub serial: u64,
    /// Socket fd in the process (unknown when the library does its socket I/O outside the TLS
    /// calls, as Node.js does with memory BIOs).
    pub fd: Option<i32>,
    /// This process's end of the socket.
    pub local: Option<SocketAddr>,
    /// The peer's end.
    pub remote: Option<SocketAddr>,
    /// The server name the client asked for (TLS SNI).
    pub server_name: Option<String>,
    /// The process's cgroup path.
    pub cgroup: Option<String>,
    /// The container id in the cgroup path, if any.
    pub container_id: Option<String>,
}

/// Counters of the flows stage.
#[derive(Debug, Default)]
pub struct FlowStats {
    /// Connections seen.
    pub connections: AtomicU64,
    /// Connections closed for being idle.
    pub evicted: AtomicU64,
    /// Times a parser skipped bytes to find the next message.
    pub resyncs: AtomicU64,
    /// Bytes the parsers skipped.
    pub skipped_bytes: AtomicU64,
    /// Bytes that were not captured (copy failures, per-call limit).
    pub lost_bytes: AtomicU64,
    /// Exchanges that ended without a response.
    pub incomplete: AtomicU64,
    /// Requests whose connection switched protocols (not parsed further).
    pub upgrades: AtomicU64,
    /// Connections that ended with no socket fd known (memory BIOs): no addresses.
    pub without_fd: AtomicU64,
    /// Socket fds whose addresses could not be read from `/proc` (process or socket gone).
    pub unresolved: AtomicU64,
    /// Connection objects seen on a new fd without an `SSL_free` in between (ended, restarted).
    pub fd_changes: AtomicU64,
}

struct FlowState {
    serial: u64,
    http: Connection,
    assembler: Assembler,
    meta: Arc<ConnMeta>,
    /// `meta.fd` was seen inside a call (not the thread's fallback).
    fd_exact: bool,
    last_seen_ns: u64,
}

/// All live connections.
pub struct Flows {
    config: Config,
    flows: HashMap<(u32, u64), FlowState>,
    next_serial: u64,
    stats: Arc<FlowStats>,
    proc_cache: HashMap<u32, (String, Option<CgroupInfo>)>,
    /// Server names (SNI) set on connection objects that have not moved data yet.
    pending_names: HashMap<(u32, u64), String>,
    events: Vec<Event>,
    assembled: Vec<Assembled>,
}

impl Flows {
    /// Empty, with the parser configuration every connection gets.
    #[must_use]
    pub fn new(config: Config, stats: Arc<FlowStats>) -> Self {
        Self {
            config,
            flows: HashMap::new(),
            next_serial: 0,
            stats,
            proc_cache: HashMap::new(),
            pending_names: HashMap::new(),
            events: Vec::new(),
            assembled: Vec::new(),
        }
    }

    /// Live connections.
    #[must_use]
    pub fn len(&self) -> usize {
        self.flows.len()
    }

    /// Whether there are none.
    #[must_use]
    pub fn is_empty(&self) -> bool {
        self.flows.is_empty()
    }

    /// Handles one record, calling `dispatch` for each exchange moment it completes.
    pub fn handle(&mut self, record: Record, dispatch: &mut impl FnMut(Job)) {
        match record {
            Record::Data(d) => self.data(d, dispatch),
            Record::Close {
                tgid,
                conn,
                timestamp_ns,
            } => {
                self.pending_names.remove(&(tgid, conn));
                self.end(tgid, conn, timestamp_ns, dispatch);
            }
            Record::ServerName { tgid, conn, name } => self.server_name(tgid, conn, name),
        }
    }

    /// A client names the server before the handshake, so before any data: the name waits for
    /// the connection's first record. A name set on a live connection object updates it.
    fn server_name(&mut self, tgid: u32, conn: u64, name: String) {
        if let Some(flow) = self.flows.get_mut(&(tgid, conn)) {
            let mut meta = (*flow.meta).clone();
            meta.server_name = Some(name);
            flow.meta = Arc::new(meta);
            return;
        }
        if self.pending_names.len() >= MAX_PENDING_NAMES {
            self.pending_names.clear();
        }
        self.pending_names.insert((tgid, conn), name);
    }

    /// Ends a connection, finishing what can be finished.
    fn end(&mut self, tgid: u32, conn: u64, now_ns: u64, dispatch: &mut impl FnMut(Job)) {
        if let Some(mut flow) = self.flows.remove(&(tgid, conn)) {
            if flow.meta.fd.is_none() {
                self.stats.without_fd.fetch_add(1, Ordering::Relaxed);
            }
            let mut events = std::mem::take(&mut self.events);
            flow.http.close(now_ns, &mut events);
            self.process(&mut flow, &mut events, dispatch);
            self.events = events;
        }
    }

    /// Takes the record's fd into the connection's meta when it tells more than what is known:
    /// the first fd, or a seen one replacing a guessed one. Addresses are read from `/proc` then.
    fn learn_fd(&self, flow: &mut FlowState, d: &DataRecord) {
        if d.fd < 0 || (flow.meta.fd.is_some() && (flow.fd_exact || d.fd_fallback)) {
            return;
        }
        let mut meta = (*flow.meta).clone();
        meta.fd = Some(d.fd);
        match sockets::resolve(d.tgid, d.fd) {
            Ok(ends) => {
                meta.local = Some(ends.local);
                meta.remote = Some(ends.remote);
            }
            Err(e) => {
                self.stats.unresolved.fetch_add(1, Ordering::Relaxed);
                tracing::debug!(pid = d.tgid, fd = d.fd, error = %e, "socket not resolved");
                meta.local = None;
                meta.remote = None;
            }
        }
        tracing::debug!(serial = meta.serial, fd = d.fd, remote = ?meta.remote, guessed = d.fd_fallback, "connection fd");
        flow.fd_exact = !d.fd_fallback;
        flow.meta = Arc::new(meta);
    }

    fn data(&mut self, d: DataRecord, dispatch: &mut impl FnMut(Job)) {
        let key = (d.tgid, d.conn);
        if d.fd >= 0
            && !d.fd_fallback
            && self
                .flows
                .get(&key)
                .is_some_and(|f| f.fd_exact && f.meta.fd != Some(d.fd))
        {
            self.stats.fd_changes.fetch_add(1, Ordering::Relaxed);
            self.end(d.tgid, d.conn, d.timestamp_ns, dispatch);
        }
        if !self.flows.contains_key(&key) {
            let (comm, cgroup) = self
                .proc_cache
                .entry(d.tgid)
                .or_insert_with(|| {
                    (
                        crate::discovery::process_name(d.tgid),
                        sockets::cgroup(d.tgid),
                    )
                })
                .clone();
            self.next_serial += 1;
            self.stats.connections.fetch_add(1, Ordering::Relaxed);
            tracing::debug!(
                pid = d.tgid,
                conn = format_args!("{:#x}", d.conn),
                serial = self.next_serial,
                "new connection"
            );
            self.flows.insert(
                key,
                FlowState {
                    serial: self.next_serial,
                    http: Connection::new(self.config.clone()),
                    assembler: Assembler::new(self.config.max_body),
                    meta: Arc::new(ConnMeta {
                        pid: d.tgid,
                        comm,
                        serial: self.next_serial,
                        server_name: self.pending_names.remove(&key),
                        cgroup: cgroup.as_ref().map(|c| c.path.clone()),
                        container_id: cgroup.and_then(|c| c.container_id),
                        ..ConnMeta::default()
                    }),
                    fd_exact: false,
                    last_seen_ns: d.timestamp_ns,
                },
            );
        }
        let Some(mut flow) = self.flows.remove(&key) else {
            return;
        };
        flow.last_seen_ns = d.timestamp_ns;
        self.learn_fd(&mut flow, &d);
        let dir = match d.direction {
            Direction::Egress => Flow::Egress,
            Direction::Ingress => Flow::Ingress,
        };
        let mut events = std::mem::take(&mut self.events);
        if d.read_failed {
            let lost = u64::from(d.total_len.saturating_sub(d.offset))
                .min(agent_common::data::MAX_CHUNK as u64);
            self.stats.lost_bytes.fetch_add(lost, Ordering::Relaxed);
            flow.http.gap(dir, lost, d.timestamp_ns, &mut events);
        } else {
            flow.http.feed(dir, &d.payload, d.timestamp_ns, &mut events);
            if d.truncated {
                let end = u64::from(d.offset) + d.payload.len() as u64;
                let lost = u64::from(d.total_len).saturating_sub(end);
                self.stats.lost_bytes.fetch_add(lost, Ordering::Relaxed);
                flow.http.gap(dir, lost, d.timestamp_ns, &mut events);
            }
        }
        self.process(&mut flow, &mut events, dispatch);
        self.events = events;
        self.flows.insert(key, flow);
    }

    fn process(
        &mut self,
        flow: &mut FlowState,
        events: &mut Vec<Event>,
        dispatch: &mut impl FnMut(Job),
    ) {
        let mut assembled = std::mem::take(&mut self.assembled);
        for event in events.drain(..) {
            match &event {
                Event::ResponseHead { id, head, .. } => dispatch(Job::ResponseHead {
                    key: ExchangeKey {
                        conn: flow.serial,
                        id: *id,
                    },
                    status: head.status,
                    headers: head
                        .headers
                        .iter()
                        .map(|h| (h.name.clone(), h.value.clone()))
                        .collect(),
                }),
                Event::Resync {
                    skipped, reason, ..
                } => {
                    self.stats.resyncs.fetch_add(1, Ordering::Relaxed);
                    self.stats
                        .skipped_bytes
                        .fetch_add(*skipped, Ordering::Relaxed);
                    tracing::debug!(
                        serial = flow.serial,
                        skipped,
                        ?reason,
                        "parser resynchronised"
                    );
                }
                Event::Upgrade { protocol, .. } => {
                    self.stats.upgrades.fetch_add(1, Ordering::Relaxed);
                    tracing::debug!(
                        serial = flow.serial,
                        protocol,
                        "connection upgraded; no longer parsed"
                    );
                }
                _ => {}
            }
            flow.assembler.push(event, &mut assembled);
        }
        for a in assembled.drain(..) {
            let job = match a {
                Assembled::Request { id, request } => Job::Request {
                    key: ExchangeKey {
                        conn: flow.serial,
                        id,
                    },
                    request,
                    meta: Arc::clone(&flow.meta),
                },
                Assembled::ResponseBody { id, data, .. } => Job::ResponseBody {
                    key: ExchangeKey {
                        conn: flow.serial,
                        id,
                    },
                    data,
                },
                Assembled::Complete { id, exchange } => Job::Complete {
                    key: ExchangeKey {
                        conn: flow.serial,
                        id,
                    },
                    exchange: Box::new(exchange),
                    meta: Arc::clone(&flow.meta),
                },
                Assembled::Incomplete {
                    id,
                    request,
                    reason,
                } => {
                    self.stats.incomplete.fetch_add(1, Ordering::Relaxed);
                    tracing::debug!(serial = flow.serial, id, ?reason, "exchange incomplete");
                    Job::Incomplete {
                        key: ExchangeKey {
                            conn: flow.serial,
                            id,
                        },
                        had_request: request.is_some(),
                    }
                }
            };
            dispatch(job);
        }
        self.assembled = assembled;
    }

    /// Closes connections idle since before `now_ns - IDLE_TIMEOUT_NS`, and every connection of
    /// a process that is gone.
    pub fn evict_idle(&mut self, now_ns: u64, dispatch: &mut impl FnMut(Job)) {
        let cutoff = now_ns.saturating_sub(IDLE_TIMEOUT_NS);
        let stale: Vec<(u32, u64)> = self
            .flows
            .iter()
            .filter(|(k, f)| f.last_seen_ns < cutoff || !crate::discovery::process_exists(k.0))
            .map(|(k, _)| *k)
            .collect();
        for (tgid, conn) in stale {
            self.stats.evicted.fetch_add(1, Ordering::Relaxed);
            self.end(tgid, conn, now_ns, dispatch);
        }
        self.proc_cache
            .retain(|pid, _| crate::discovery::process_exists(*pid));
        self.pending_names
            .retain(|(pid, _), _| crate::discovery::process_exists(*pid));
    }

    /// Closes every connection (at exit), finishing what can be finished.
    pub fn close_all(&mut self, now_ns: u64, dispatch: &mut impl FnMut(Job)) {
        let keys: Vec<_> = self.flows.keys().copied().collect();
        for (tgid, conn) in keys {
            self.end(tgid, conn, now_ns, dispatch);
        }
    }
}
