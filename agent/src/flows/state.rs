//! Per-connection state: the two ordered byte streams of each TLS connection, fed to the HTTP
//! parser, whose exchange moments are handed to the pack stage.
//!
//! A connection is named by `(tgid, SSL pointer)` for as long as the kernel says it lives
//! (`SSL_free` ends it); each gets a serial number so a reused pointer is a new connection. The
//! socket fd the kernel saw inside the calls gives the connection its addresses (sent by the
//! kernel when it first saw the fd inside a TLS call, or else read once from `/proc` when the
//! fd is first known); a pointer that turns up on a different fd is a new
//! connection too (its `SSL_free` was missed). Closing that fd (`close`, seen by the kernel side)
//! ends the connection as well, so a reused fd number always starts a new one.

use std::{
    collections::HashMap,
    sync::{Arc, atomic::Ordering},
};

use taskless_http::{
    AbortReason, Assembled, Assembler, Config, Connection, ConnectionStats, Event,
};

use super::{ExchangeKey, Identity, K8s, Moment, Role, k8s, pods::Pods};
use crate::{
    capture::{DataRecord, Record},
    procfs::{self, CgroupInfo},
};

/// Server names waiting for their connection's first data are forgotten past this many.
const MAX_PENDING_NAMES: usize = 16_384;

/// Addresses the kernel sent for sockets not yet closed are kept for at most this many; past it
/// new ones are read from `/proc` instead.
const MAX_SOCKET_ENDS: usize = 65_536;

/// Connections idle this long are closed and forgotten.
pub const IDLE_TIMEOUT_NS: u64 = 5 * 60 * 1_000_000_000;

/// Connections quiet this long give back the parser's buffers for the bytes to come (a
/// kept-alive connection waiting for its next call holds no chunk).
pub const QUIET_NS: u64 = 1_000_000_000;

crate::stats::counters! {
    /// Counters of the flows stage.
    pub struct FlowStats {
        /// Connections seen.
        connections,
        /// Connections closed for being idle or because their process is gone.
        evicted,
        /// Times a parser skipped bytes to find the next message.
        resyncs,
        /// Times a connection's records were lost (the ring buffer was full) and its parser
        /// started over at the next message.
        desyncs,
        /// Bytes the parsers skipped.
        skipped_bytes,
        /// Bytes that were not captured (copy failures, per-call limit).
        lost_bytes,
        /// Exchanges that ended without a complete response.
        incomplete,
        /// Of those, the ones whose response head had arrived: the packs still get the response
        /// as far as it came (`post`, flagged incomplete).
        partial_responses,
        /// Requests whose connection switched protocols (not parsed further).
        upgrades,
        /// Connections that ended with no socket fd known (memory BIOs): no addresses.
        connections_without_fd,
        /// Socket fds whose addresses the kernel did not send and could not be read from `/proc`
        /// (process or socket gone).
        addresses_unresolved,
        /// Connection objects seen on a new fd without an end in between (ended, restarted).
        fd_changes,
        /// Server names forgotten before their connection's first data (too many waiting).
        server_names_dropped,
        /// Exchanges where the observed process was the server, left out (`--server-side`
        /// includes them).
        server_exchanges,
    }
}

struct FlowState {
    serial: u64,
    http: Connection,
    assembler: Assembler,
    identity: Arc<Identity>,
    /// `identity.fd` was seen inside a call (not the thread's fallback).
    fd_exact: bool,
    last_seen_ns: u64,
    /// The buffers were given back since the last record.
    released: bool,
}

/// All live connections.
pub struct Flows {
    config: Config,
    /// Hand on the exchanges of connections where the process is the server too.
    server_side: bool,
    flows: HashMap<(u32, u64), FlowState>,
    next_serial: u64,
    stats: Arc<FlowStats>,
    proc_cache: HashMap<u32, (String, Option<CgroupInfo>)>,
    /// This node's pods, from the kubelet (`--kubelet`).
    pods: Option<Arc<Pods>>,
    /// Server names (SNI) set on connection objects that have not moved data yet.
    pending_names: HashMap<(u32, u64), String>,
    /// The live connection on each known `(tgid, fd)`.
    by_fd: HashMap<(u32, i32), u64>,
    /// Both ends of each TLS socket `(tgid, fd)` as the kernel saw them, until it is closed,
    /// and the connection object that took them (the first on the fd).
    socket_ends: HashMap<(u32, i32), (procfs::SocketEnds, Option<u64>)>,
    /// The HTTP parsers' counters of connections that have ended.
    ended_http: ConnectionStats,
    events: Vec<Event>,
    assembled: Vec<Assembled>,
}

impl Flows {
    /// Empty, with the parser configuration every connection gets. Exchanges where the observed
    /// process is the server are counted and dropped unless `server_side`.
    #[must_use]
    pub fn new(config: Config, server_side: bool, stats: Arc<FlowStats>) -> Self {
        Self {
            config,
            server_side,
            flows: HashMap::new(),
            next_serial: 0,
            stats,
            proc_cache: HashMap::new(),
            pods: None,
            pending_names: HashMap::new(),
            by_fd: HashMap::new(),
            socket_ends: HashMap::new(),
            ended_http: ConnectionStats::default(),
            events: Vec::new(),
            assembled: Vec::new(),
        }
    }

    /// Names the pods of processes in pods' cgroups from `pods` (the kubelet's).
    pub fn set_pods(&mut self, pods: Arc<Pods>) {
        self.pods = Some(pods);
    }

    /// The kubelet's pods, when `--kubelet` names them.
    #[must_use]
    pub fn pods(&self) -> Option<&Arc<Pods>> {
        self.pods.as_ref()
    }

    /// The pod and container of a process in cgroup `path`, if it is a pod's.
    fn k8s(&self, path: &str) -> Option<K8s> {
        let cgroup = k8s::parse(path)?;
        Some(match &self.pods {
            Some(pods) => pods.lookup(&cgroup),
            None => K8s::from_cgroup(&cgroup),
        })
    }

    /// Takes process `pid`'s name and cgroup from `/proc` now, unless already known: called
    /// when it is found to use TLS, before its first data (it may be gone by then).
    pub fn note_process(&mut self, pid: u32) {
        self.proc_cache
            .entry(pid)
            .or_insert_with(|| (procfs::process_name(pid), procfs::cgroup(pid)));
    }

    /// Names process `pid` (instead of reading `/proc`), e.g. from a recording's metadata.
    pub fn set_process_name(&mut self, pid: u32, name: String) {
        self.proc_cache.insert(pid, (name, None));
    }

    /// The identity of the live connection `(tgid, conn)`, if there is one.
    #[must_use]
    pub fn identity(&self, tgid: u32, conn: u64) -> Option<&Arc<Identity>> {
        self.flows.get(&(tgid, conn)).map(|f| &f.identity)
    }

    /// The HTTP parsers' counters (decode and HPACK errors, skipped streams, ...) over every
    /// connection, ended and live.
    #[must_use]
    pub fn http_stats(&self) -> ConnectionStats {
        let mut total = self.ended_http;
        for flow in self.flows.values() {
            total.add(flow.http.stats());
        }
        total
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
    pub fn handle(&mut self, record: Record, dispatch: &mut impl FnMut(Moment)) {
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
            Record::FdClose {
                tgid,
                fd,
                timestamp_ns,
            } => {
                self.socket_ends.remove(&(tgid, fd));
                if let Some(conn) = self.by_fd.get(&(tgid, fd)).copied() {
                    tracing::debug!(pid = tgid, fd, "socket closed");
                    self.end(tgid, conn, timestamp_ns, dispatch);
                }
            }
            Record::Socket { tgid, fd, ends } => self.socket(tgid, fd, ends),
            Record::ServerName { tgid, conn, name } => self.server_name(tgid, conn, name),
            // A new program's name and cgroup, taken now: a short-lived process may be gone
            // by the time its first data arrives.
            Record::CodeChanged { tgid, exec, comm } => {
                if exec || !self.proc_cache.contains_key(&tgid) {
                    self.proc_cache.insert(tgid, (comm, procfs::cgroup(tgid)));
                }
            }
        }
    }

    /// A client names the server before the handshake, so before any data: the name waits for
    /// the connection's first record. A name set on a live connection object updates it.
    fn server_name(&mut self, tgid: u32, conn: u64, name: String) {
        if let Some(flow) = self.flows.get_mut(&(tgid, conn)) {
            let mut identity = (*flow.identity).clone();
            identity.server_name = Some(name);
            flow.identity = Arc::new(identity);
            return;
        }
        if self.pending_names.len() >= MAX_PENDING_NAMES {
            self.stats
                .server_names_dropped
                .fetch_add(self.pending_names.len() as u64, Ordering::Relaxed);
            self.pending_names.clear();
        }
        self.pending_names.insert((tgid, conn), name);
    }

    /// Ends a connection, finishing what can be finished.
    fn end(&mut self, tgid: u32, conn: u64, now_ns: u64, dispatch: &mut impl FnMut(Moment)) {
        if let Some(mut flow) = self.flows.remove(&(tgid, conn)) {
            match flow.identity.fd {
                None => {
                    self.stats
                        .connections_without_fd
                        .fetch_add(1, Ordering::Relaxed);
                }
                Some(fd) => self.forget_fd(tgid, fd, conn),
            }
            let mut events = std::mem::take(&mut self.events);
            flow.http.close(now_ns, &mut events);
            self.process(&mut flow, &mut events, dispatch);
            self.events = events;
            self.ended_http.add(flow.http.stats());
        }
    }

    /// Keeps the ends the kernel sent for a TLS socket until it is closed. A connection already
    /// on that fd without addresses gets them (a Go write is sent before its fd is noted, so
    /// the first request of a connection arrives before them).
    fn socket(&mut self, tgid: u32, fd: i32, ends: procfs::SocketEnds) {
        // The live connection on the fd, if any, is the one these ends belong to.
        let owner = self
            .by_fd
            .get(&(tgid, fd))
            .copied()
            .filter(|conn| self.flows.contains_key(&(tgid, *conn)));
        if let Some(conn) = owner
            && let Some(flow) = self.flows.get_mut(&(tgid, conn))
            && flow.identity.remote_address.is_none()
        {
            self.stats
                .addresses_unresolved
                .fetch_sub(1, Ordering::Relaxed);
            let mut identity = (*flow.identity).clone();
            identity.local_address = Some(ends.local);
            identity.remote_address = Some(ends.remote);
            flow.identity = Arc::new(identity);
        }
        if self.socket_ends.len() < MAX_SOCKET_ENDS || self.socket_ends.contains_key(&(tgid, fd)) {
            self.socket_ends.insert((tgid, fd), (ends, owner));
        }
    }

    /// Takes the record's fd into the connection's identity when it tells more than what is known:
    /// the first fd, or a seen one replacing a guessed one. Its addresses are the kernel's, or
    /// else read from `/proc` then.
    fn learn_fd(&mut self, flow: &mut FlowState, d: &DataRecord) {
        if d.fd < 0 || (flow.identity.fd.is_some() && (flow.fd_exact || d.fd_fallback)) {
            return;
        }
        if let Some(old) = flow.identity.fd {
            self.forget_fd(d.tgid, old, d.conn);
        }
        self.by_fd.insert((d.tgid, d.fd), d.conn);
        let mut identity = (*flow.identity).clone();
        identity.fd = Some(d.fd);
        // The kernel's ends name the first connection object on the socket. Another one on the
        // same fd number without a close seen in between (an fd closed by `dup2` or
        // `close_range`, then reused) asks `/proc`, which knows the socket there now.
        let ends = match self.socket_ends.get_mut(&(d.tgid, d.fd)) {
            Some((ends, owner)) if owner.is_none_or(|c| c == d.conn) => {
                *owner = Some(d.conn);
                Ok(*ends)
            }
            _ => procfs::socket_ends(d.tgid, d.fd),
        };
        match ends {
            Ok(ends) => {
                identity.local_address = Some(ends.local);
                identity.remote_address = Some(ends.remote);
            }
            Err(e) => {
                self.stats
                    .addresses_unresolved
                    .fetch_add(1, Ordering::Relaxed);
                tracing::debug!(pid = d.tgid, fd = d.fd, error = %e, "socket not resolved");
                identity.local_address = None;
                identity.remote_address = None;
            }
        }
        tracing::debug!(serial = identity.serial, fd = d.fd, remote = ?identity.remote_address, guessed = d.fd_fallback, "connection fd");
        flow.fd_exact = !d.fd_fallback;
        flow.identity = Arc::new(identity);
    }

    /// Drops the fd index entry of `(tgid, fd)` if it still names `conn`.
    fn forget_fd(&mut self, tgid: u32, fd: i32, conn: u64) {
        if self.by_fd.get(&(tgid, fd)) == Some(&conn) {
            self.by_fd.remove(&(tgid, fd));
        }
    }

    fn data(&mut self, d: DataRecord, dispatch: &mut impl FnMut(Moment)) {
        let key = (d.tgid, d.conn);
        if d.fd >= 0
            && !d.fd_fallback
            && self
                .flows
                .get(&key)
                .is_some_and(|f| f.fd_exact && f.identity.fd != Some(d.fd))
        {
            self.stats.fd_changes.fetch_add(1, Ordering::Relaxed);
            self.end(d.tgid, d.conn, d.timestamp_ns, dispatch);
        }
        let existed = self.flows.contains_key(&key);
        if !existed {
            let (process, cgroup) = self
                .proc_cache
                .entry(d.tgid)
                .or_insert_with(|| (procfs::process_name(d.tgid), procfs::cgroup(d.tgid)))
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
                    identity: Arc::new(Identity {
                        pid: d.tgid,
                        process,
                        serial: self.next_serial,
                        server_name: self.pending_names.remove(&key),
                        k8s: cgroup
                            .as_ref()
                            .and_then(|c| self.k8s(&c.path))
                            .map(Box::new),
                        cgroup: cgroup.as_ref().map(|c| c.path.clone()),
                        container_id: cgroup.and_then(|c| c.container_id),
                        ..Identity::default()
                    }),
                    fd_exact: false,
                    last_seen_ns: d.timestamp_ns,
                    released: false,
                },
            );
        }
        let Some(mut flow) = self.flows.remove(&key) else {
            return;
        };
        flow.last_seen_ns = d.timestamp_ns;
        flow.released = false;
        self.learn_fd(&mut flow, &d);
        let dir = d.direction;
        let mut events = std::mem::take(&mut self.events);
        if d.lost_before && existed {
            // Bytes are missing in an unknown amount and direction: no request may be paired
            // with another's response, the parser looks for the next message.
            self.stats.desyncs.fetch_add(1, Ordering::Relaxed);
            flow.http.desync(d.timestamp_ns, &mut events);
        }
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
        dispatch: &mut impl FnMut(Moment),
    ) {
        if flow.identity.role.is_none()
            && let Some(request_flow) = flow.http.request_flow()
        {
            let mut identity = (*flow.identity).clone();
            identity.role = Some(Role::from_request_flow(request_flow));
            flow.identity = Arc::new(identity);
        }
        // A pod the kubelet's answer did not name yet when the connection began.
        if let (Some(pods), Some(k8s)) = (&self.pods, &flow.identity.k8s)
            && k8s.pod.is_none()
        {
            let mut k8s = k8s.clone();
            if pods.name(&mut k8s) {
                let mut identity = (*flow.identity).clone();
                identity.k8s = Some(k8s);
                flow.identity = Arc::new(identity);
            }
        }
        let skip = flow.identity.role == Some(Role::Server) && !self.server_side;
        let mut dispatch = |moment: Moment| {
            if !skip {
                dispatch(moment);
            }
        };
        let mut assembled = std::mem::take(&mut self.assembled);
        for event in events.drain(..) {
            match &event {
                Event::ResponseHead { id, head, .. } => dispatch(Moment::response_head(
                    ExchangeKey {
                        conn: flow.serial,
                        id: *id,
                    },
                    head,
                )),
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
                Assembled::Request { .. } if skip => {
                    self.stats.server_exchanges.fetch_add(1, Ordering::Relaxed);
                    continue;
                }
                Assembled::Request { id, request } => Moment::Request {
                    key: ExchangeKey {
                        conn: flow.serial,
                        id,
                    },
                    request,
                    identity: Arc::clone(&flow.identity),
                },
                Assembled::ResponseBody { id, data, .. } => Moment::ResponseBody {
                    key: ExchangeKey {
                        conn: flow.serial,
                        id,
                    },
                    data,
                },
                Assembled::Complete { id, exchange } => Moment::Complete {
                    key: ExchangeKey {
                        conn: flow.serial,
                        id,
                    },
                    exchange,
                    identity: Arc::clone(&flow.identity),
                },
                Assembled::Incomplete {
                    id,
                    request,
                    response,
                    reason,
                } => {
                    if reason != AbortReason::Upgraded {
                        self.stats.incomplete.fetch_add(1, Ordering::Relaxed);
                        if response.is_some() {
                            self.stats.partial_responses.fetch_add(1, Ordering::Relaxed);
                        }
                    }
                    tracing::debug!(
                        serial = flow.serial,
                        id,
                        ?reason,
                        response = response.is_some(),
                        "exchange incomplete"
                    );
                    Moment::Incomplete {
                        key: ExchangeKey {
                            conn: flow.serial,
                            id,
                        },
                        had_request: request.is_some(),
                        response,
                        identity: Arc::clone(&flow.identity),
                        upgraded: reason == AbortReason::Upgraded,
                    }
                }
            };
            dispatch(job);
        }
        self.assembled = assembled;
    }

    /// Closes connections idle since before `now_ns - IDLE_TIMEOUT_NS`, and every connection of
    /// a process that is gone.
    pub fn evict_idle(&mut self, now_ns: u64, dispatch: &mut impl FnMut(Moment)) {
        let cutoff = now_ns.saturating_sub(IDLE_TIMEOUT_NS);
        let stale: Vec<(u32, u64)> = self
            .flows
            .iter()
            .filter(|(k, f)| f.last_seen_ns < cutoff || !procfs::process_exists(k.0))
            .map(|(k, _)| *k)
            .collect();
        for (tgid, conn) in stale {
            self.stats.evicted.fetch_add(1, Ordering::Relaxed);
            self.end(tgid, conn, now_ns, dispatch);
        }
        self.proc_cache
            .retain(|pid, _| procfs::process_exists(*pid));
        self.pending_names
            .retain(|(pid, _), _| procfs::process_exists(*pid));
        // Many sockets per process: each process is looked up once.
        let mut alive = HashMap::new();
        self.socket_ends.retain(|(pid, _), _| {
            *alive
                .entry(*pid)
                .or_insert_with(|| procfs::process_exists(*pid))
        });
        let live = &self.flows;
        self.by_fd
            .retain(|(pid, _), conn| live.contains_key(&(*pid, *conn)));
    }

    /// Lets connections without a record since before `now_ns - QUIET_NS` give back their
    /// parsers' buffers; says how many did.
    pub fn release_quiet(&mut self, now_ns: u64) -> usize {
        let cutoff = now_ns.saturating_sub(QUIET_NS);
        let mut released = 0;
        for flow in self.flows.values_mut() {
            if !flow.released && flow.last_seen_ns < cutoff {
                flow.http.release_buffers();
                flow.assembler.release_buffers();
                flow.released = true;
                released += 1;
            }
        }
        released
    }

    /// Closes every connection (at exit), finishing what can be finished.
    pub fn close_all(&mut self, now_ns: u64, dispatch: &mut impl FnMut(Moment)) {
        let keys: Vec<_> = self.flows.keys().copied().collect();
        for (tgid, conn) in keys {
            self.end(tgid, conn, now_ns, dispatch);
        }
    }
}

#[cfg(test)]
mod tests {
    use std::os::fd::AsRawFd as _;

    use super::*;

    fn record(conn: u64, fd: i32, fd_fallback: bool, ts: u64, payload: &[u8]) -> Record {
        Record::Data(DataRecord {
            tgid: std::process::id(),
            tid: std::process::id(),
            conn,
            timestamp_ns: ts,
            fd,
            fd_fallback,
            direction: taskless_http::Flow::Egress,
            offset: 0,
            total_len: u32::try_from(payload.len()).unwrap(),
            truncated: false,
            read_failed: false,
            lost_before: false,
            payload: payload.to_vec(),
        })
    }

    fn requests(jobs: &[Moment]) -> Vec<Arc<Identity>> {
        jobs.iter()
            .filter_map(|j| match j {
                Moment::Request { identity, .. } => Some(Arc::clone(identity)),
                _ => None,
            })
            .collect()
    }

    const GET: &[u8] = b"GET /a HTTP/1.1\r\nHost: example.test\r\n\r\n";

    #[test]
    fn a_quiet_connection_gives_back_its_buffers_and_parses_on() {
        let stats = Arc::new(FlowStats::default());
        let mut flows = Flows::new(Config::default(), false, Arc::clone(&stats));
        let mut jobs = Vec::new();
        let mut dispatch = |j: Moment| jobs.push(j);
        let response = |ts: u64, body: &str| {
            let Record::Data(mut d) = record(
                0x80,
                920,
                false,
                ts,
                format!(
                    "HTTP/1.1 200 OK\r\nContent-Length: {}\r\n\r\n{body}",
                    body.len()
                )
                .as_bytes(),
            ) else {
                unreachable!()
            };
            d.direction = taskless_http::Flow::Ingress;
            Record::Data(d)
        };
        flows.handle(record(0x80, 920, false, 10, GET), &mut dispatch);
        // Quiet means no record for `QUIET_NS`.
        flows.handle(response(20, "first"), &mut dispatch);
        assert_eq!(flows.release_quiet(20 + QUIET_NS), 0, "a record came since");
        assert_eq!(flows.release_quiet(21 + QUIET_NS), 1);
        assert_eq!(flows.release_quiet(22 + QUIET_NS), 0, "released once");
        // The next call on it is parsed as before.
        let later = 30 + 2 * QUIET_NS;
        flows.handle(record(0x80, 920, false, later, GET), &mut dispatch);
        flows.handle(response(later + 1, "second"), &mut dispatch);
        // A request head cut in two by a quiet spell is kept whole.
        flows.handle(
            record(0x80, 920, false, later + 2, &GET[..10]),
            &mut dispatch,
        );
        assert_eq!(flows.release_quiet(later + 3 + QUIET_NS), 1);
        flows.handle(
            record(0x80, 920, false, later + 4 + QUIET_NS, &GET[10..]),
            &mut dispatch,
        );
        flows.handle(response(later + 5 + QUIET_NS, "third"), &mut dispatch);
        let bodies: Vec<Vec<u8>> = jobs
            .iter()
            .filter_map(|j| match j {
                Moment::Complete { exchange, .. } => Some(exchange.response.body.data.to_vec()),
                _ => None,
            })
            .collect();
        assert_eq!(bodies, [&b"first"[..], b"second", b"third"]);
        assert_eq!(requests(&jobs).len(), 3);
        assert_eq!(stats.resyncs.load(Ordering::Relaxed), 0);
        assert_eq!(stats.incomplete.load(Ordering::Relaxed), 0);
    }

    #[test]
    fn a_connection_learns_its_fd_addresses_and_server_name() {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let client = std::net::TcpStream::connect(listener.local_addr().unwrap()).unwrap();
        let stats = Arc::new(FlowStats::default());
        let mut flows = Flows::new(Config::default(), false, Arc::clone(&stats));
        let mut jobs = Vec::new();
        let mut dispatch = |j: Moment| jobs.push(j);
        flows.handle(
            Record::ServerName {
                tgid: std::process::id(),
                conn: 0x10,
                name: "api.example.test".into(),
            },
            &mut dispatch,
        );
        flows.handle(
            record(0x10, client.as_raw_fd(), false, 1, GET),
            &mut dispatch,
        );
        let metas = requests(&jobs);
        assert_eq!(metas.len(), 1);
        let m = &metas[0];
        assert_eq!(m.fd, Some(client.as_raw_fd()));
        assert_eq!(m.remote_address, Some(listener.local_addr().unwrap()));
        assert_eq!(m.local_address, Some(client.local_addr().unwrap()));
        assert_eq!(m.server_name.as_deref(), Some("api.example.test"));
        assert_eq!(stats.addresses_unresolved.load(Ordering::Relaxed), 0);
    }

    #[test]
    fn the_kernels_addresses_name_a_socket_until_it_is_closed() {
        let stats = Arc::new(FlowStats::default());
        let mut flows = Flows::new(Config::default(), false, Arc::clone(&stats));
        let mut jobs = Vec::new();
        let mut dispatch = |j: Moment| jobs.push(j);
        let tgid = std::process::id();
        let ends = |remote: &str| procfs::SocketEnds {
            local: "10.0.0.7:40000".parse().unwrap(),
            remote: remote.parse().unwrap(),
        };
        // fds 950+ are not open here: `/proc` cannot name them, the kernel's records do.
        flows.handle(
            Record::Socket {
                tgid,
                fd: 950,
                ends: ends("93.184.216.34:443"),
            },
            &mut dispatch,
        );
        flows.handle(record(0x50, 950, false, 1, GET), &mut dispatch);
        let identity = flows.identity(tgid, 0x50).expect("live");
        assert_eq!(
            identity.remote_address,
            Some("93.184.216.34:443".parse().unwrap())
        );
        assert_eq!(
            identity.local_address,
            Some("10.0.0.7:40000".parse().unwrap())
        );
        assert_eq!(stats.addresses_unresolved.load(Ordering::Relaxed), 0);
        // Ends that come after the connection's first data fill its identity in.
        flows.handle(record(0x60, 951, false, 2, GET), &mut dispatch);
        assert_eq!(stats.addresses_unresolved.load(Ordering::Relaxed), 1);
        flows.handle(
            Record::Socket {
                tgid,
                fd: 951,
                ends: ends("[2001:db8::1]:443"),
            },
            &mut dispatch,
        );
        let identity = flows.identity(tgid, 0x60).expect("live");
        assert_eq!(
            identity.remote_address,
            Some("[2001:db8::1]:443".parse().unwrap())
        );
        assert_eq!(stats.addresses_unresolved.load(Ordering::Relaxed), 0);
        // Another connection object on the same fd, with no close seen in between, is not
        // given them: `/proc` is asked, and has nothing for fd 951 here.
        flows.handle(record(0x61, 951, false, 3, GET), &mut dispatch);
        assert_eq!(
            flows.identity(tgid, 0x61).expect("live").remote_address,
            None
        );
        assert_eq!(stats.addresses_unresolved.load(Ordering::Relaxed), 1);
        // A closed socket's ends are forgotten: a later socket on the same number is not
        // given them.
        flows.handle(
            Record::FdClose {
                tgid,
                fd: 950,
                timestamp_ns: 3,
            },
            &mut dispatch,
        );
        flows.handle(record(0x70, 950, false, 4, GET), &mut dispatch);
        assert_eq!(
            flows.identity(tgid, 0x70).expect("live").remote_address,
            None
        );
        assert_eq!(stats.addresses_unresolved.load(Ordering::Relaxed), 2);
        let metas = requests(&jobs);
        assert_eq!(
            metas[0].remote_address,
            Some("93.184.216.34:443".parse().unwrap()),
            "the request's moment carries them"
        );
    }

    #[test]
    fn a_new_seen_fd_under_the_same_pointer_is_a_new_connection_but_a_guessed_one_is_not() {
        let stats = Arc::new(FlowStats::default());
        let mut flows = Flows::new(Config::default(), false, Arc::clone(&stats));
        let mut jobs = Vec::new();
        let mut dispatch = |j: Moment| jobs.push(j);
        // fds 900+ are not open here: addresses stay unknown, the fds still count.
        flows.handle(record(0x20, 901, false, 1, GET), &mut dispatch);
        flows.handle(record(0x20, 905, true, 2, GET), &mut dispatch);
        flows.handle(record(0x20, 902, false, 3, GET), &mut dispatch);
        // A connection that never had an fd is counted when it ends.
        flows.handle(record(0x30, -1, false, 4, GET), &mut dispatch);
        flows.close_all(5, &mut dispatch);
        let metas = requests(&jobs);
        assert_eq!(metas.len(), 4);
        assert_eq!(
            metas.iter().map(|m| m.fd).collect::<Vec<_>>(),
            [Some(901), Some(901), Some(902), None]
        );
        assert_eq!(
            metas[0].serial, metas[1].serial,
            "a guessed fd does not split"
        );
        assert_ne!(metas[1].serial, metas[2].serial, "a seen new fd does");
        assert_eq!(stats.fd_changes.load(Ordering::Relaxed), 1);
        assert_eq!(stats.connections.load(Ordering::Relaxed), 3);
        assert_eq!(stats.addresses_unresolved.load(Ordering::Relaxed), 2);
        assert_eq!(stats.connections_without_fd.load(Ordering::Relaxed), 1);
    }

    #[test]
    fn closing_the_fd_ends_the_connection_and_a_reused_fd_starts_a_new_one() {
        let stats = Arc::new(FlowStats::default());
        let mut flows = Flows::new(Config::default(), false, Arc::clone(&stats));
        let mut jobs = Vec::new();
        let mut dispatch = |j: Moment| jobs.push(j);
        let tgid = std::process::id();
        flows.handle(record(0x40, 911, false, 1, GET), &mut dispatch);
        // Another process's fd 911 is not this connection's.
        flows.handle(
            Record::FdClose {
                tgid: tgid + 1,
                fd: 911,
                timestamp_ns: 2,
            },
            &mut dispatch,
        );
        assert_eq!(flows.len(), 1);
        flows.handle(
            Record::FdClose {
                tgid,
                fd: 911,
                timestamp_ns: 3,
            },
            &mut dispatch,
        );
        assert!(flows.is_empty(), "the close ended the connection");
        // The request never got a response: the close finished it as incomplete.
        assert_eq!(stats.incomplete.load(Ordering::Relaxed), 1);
        // The same object on the same fd number again is a new connection.
        flows.handle(record(0x40, 911, false, 4, GET), &mut dispatch);
        flows.handle(
            Record::FdClose {
                tgid,
                fd: 911,
                timestamp_ns: 5,
            },
            &mut dispatch,
        );
        assert!(flows.is_empty());
        // A close after the connection ended does nothing.
        flows.handle(
            Record::FdClose {
                tgid,
                fd: 911,
                timestamp_ns: 6,
            },
            &mut dispatch,
        );
        let metas = requests(&jobs);
        assert_eq!(metas.len(), 2);
        assert_ne!(metas[0].serial, metas[1].serial);
        assert_eq!(stats.connections.load(Ordering::Relaxed), 2);
        assert_eq!(stats.incomplete.load(Ordering::Relaxed), 2);
    }
}
