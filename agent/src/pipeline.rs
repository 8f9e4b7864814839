//! The pack stage: worker threads, each with its own instance of every pack, fed through
//! bounded queues. All moments of one connection go to the same worker, so the hooks of an
//! exchange run in order (`pre`, each `chunk`, the closing `chunk`, `post`). When a worker's
//! queue is full the job is dropped and counted: capture never waits for packs.

use std::{
    collections::HashMap,
    sync::{
        Arc,
        atomic::{AtomicU64, Ordering},
    },
    thread::JoinHandle,
    time::{Duration, Instant},
};

use crossbeam_channel::{Receiver, Sender, TrySendError};
use serde::Serialize;
use taskless_http::{Bytes, Exchange, Request};
use taskless_pack_runtime::{
    OutputLine, PackSet, RequestState, RequestView, ResponseView, Timing, Worker,
};

use crate::{clock::Clock, flows::ConnMeta};

/// An exchange, named by its connection's serial and its id within the connection.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct ExchangeKey {
    /// Connection serial.
    pub conn: u64,
    /// Exchange id within the connection.
    pub id: u64,
}

/// One moment of an exchange, for the pack stage.
#[derive(Debug)]
pub enum Job {
    /// The request is complete: `pre`.
    Request {
        /// Which exchange.
        key: ExchangeKey,
        /// The request.
        request: Arc<Request>,
        /// Its connection's owner.
        meta: Arc<ConnMeta>,
    },
    /// The final response head arrived (kept for `chunk` calls).
    ResponseHead {
        /// Which exchange.
        key: ExchangeKey,
        /// Status.
        status: u16,
        /// Headers, names lower-case.
        headers: Vec<(String, String)>,
    },
    /// A decoded piece of the response body: `chunk`.
    ResponseBody {
        /// Which exchange.
        key: ExchangeKey,
        /// The bytes.
        data: Bytes,
    },
    /// The response is complete: the closing `chunk`, `post`, and the output line.
    Complete {
        /// Which exchange.
        key: ExchangeKey,
        /// The whole exchange.
        exchange: Box<Exchange>,
        /// Its connection's owner.
        meta: Arc<ConnMeta>,
    },
    /// The exchange will not complete; what `pre` captured is still written out.
    Incomplete {
        /// Which exchange.
        key: ExchangeKey,
        /// Whether the request had been complete.
        had_request: bool,
    },
}

/// Counters of the pack stage.
#[derive(Debug, Default)]
pub struct PipelineStats {
    /// Jobs dropped because a worker's queue was full.
    pub dropped_jobs: AtomicU64,
    /// Exchanges fully processed and written out.
    pub exchanges: AtomicU64,
    /// Jobs for exchanges the worker did not know (their request was dropped or missed).
    pub orphan_jobs: AtomicU64,
    /// Exchanges forgotten by a worker after waiting too long for their response.
    pub expired: AtomicU64,
}

/// Routes jobs to workers by connection.
pub struct Dispatcher {
    senders: Vec<Sender<Job>>,
    stats: Arc<PipelineStats>,
}

impl Dispatcher {
    /// Queues a job for its connection's worker, or drops and counts it when that queue is full.
    pub fn dispatch(&self, job: Job) {
        let key = job_key(&job);
        let n = self.senders.len().max(1) as u64;
        let i = usize::try_from(key.conn % n).unwrap_or(0);
        if let Some(tx) = self.senders.get(i) {
            match tx.try_send(job) {
                Ok(()) => {}
                Err(TrySendError::Full(_)) => {
                    self.stats.dropped_jobs.fetch_add(1, Ordering::Relaxed);
                }
                Err(TrySendError::Disconnected(_)) => {}
            }
        }
    }

    /// Queues a job for its connection's worker, waiting while that queue is full. For offline
    /// replay, where nothing is lost by waiting and nothing may be dropped.
    pub fn dispatch_waiting(&self, job: Job) {
        let key = job_key(&job);
        let n = self.senders.len().max(1) as u64;
        let i = usize::try_from(key.conn % n).unwrap_or(0);
        if let Some(tx) = self.senders.get(i) {
            // Disconnected only when the worker is gone, i.e. shutting down.
            let _ = tx.send(job);
        }
    }
}

const fn job_key(job: &Job) -> ExchangeKey {
    match job {
        Job::Request { key, .. }
        | Job::ResponseHead { key, .. }
        | Job::ResponseBody { key, .. }
        | Job::Complete { key, .. }
        | Job::Incomplete { key, .. } => *key,
    }
}

impl Job {
    /// The response-head moment of exchange `key`.
    #[must_use]
    pub fn response_head(key: ExchangeKey, head: &taskless_http::ResponseHead) -> Self {
        Job::ResponseHead {
            key,
            status: head.status,
            headers: head
                .headers
                .iter()
                .map(|(name, value)| (name.to_owned(), value.to_owned()))
                .collect(),
        }
    }
}

/// In-flight exchanges older than this are forgotten (their response never came).
const IN_FLIGHT_TTL: Duration = Duration::from_secs(600);

/// The request as packs see it, built once per exchange.
struct OwnedRequest {
    method: String,
    url: String,
    domain: String,
    path: String,
    headers: Vec<(String, String)>,
    body: Option<Vec<u8>>,
    timing: Timing,
}

impl OwnedRequest {
    fn from_request(request: &Request, clock: &Clock) -> Self {
        let head = &request.head;
        let headers: Vec<(String, String)> = head
            .headers
            .iter()
            .map(|(name, value)| (name.to_owned(), value.to_owned()))
            .collect();
        let authority = head
            .authority
            .as_deref()
            .map(str::to_owned)
            .or_else(|| {
                headers
                    .iter()
                    .find(|(n, _)| n == "host")
                    .map(|(_, v)| v.clone())
            })
            .unwrap_or_default();
        let domain = host_of(&authority).to_owned();
        let scheme = head.scheme.as_deref().unwrap_or("https");
        let target = if head.target.starts_with('/') {
            head.target.to_string()
        } else {
            format!("/{}", head.target)
        };
        let path = target.split(['?', '#']).next().unwrap_or("/").to_owned();
        let url = format!("{scheme}://{authority}{target}");
        Self {
            method: head.method.to_string(),
            url,
            domain,
            path,
            headers,
            body: (!request.body.data.is_empty()).then(|| request.body.data.to_vec()),
            timing: Timing {
                request_start_unix_ns: clock.to_unix_ns(request.start_ns),
                request_end_unix_ns: clock.to_unix_ns(request.end_ns),
                response_start_unix_ns: None,
                response_end_unix_ns: None,
            },
        }
    }

    fn view(&self) -> RequestView<'_> {
        RequestView {
            method: &self.method,
            url: &self.url,
            domain: &self.domain,
            path: &self.path,
            headers: &self.headers,
            body: self.body.as_deref(),
            timing: self.timing,
        }
    }
}

/// The host name of an authority (`host[:port]`, `[v6]:port`).
#[must_use]
pub fn host_of(authority: &str) -> &str {
    let a = authority.rsplit('@').next().unwrap_or(authority);
    if let Some(rest) = a.strip_prefix('[') {
        return rest.split(']').next().unwrap_or(rest);
    }
    a.split(':').next().unwrap_or(a)
}

/// The NDJSON line: the pack runtime's line (`requestId`, `dimensions`, unchanged) and where the
/// exchange came from.
#[derive(Serialize)]
struct Line<'a> {
    #[serde(flatten)]
    line: OutputLine,
    source: Source<'a>,
}

/// The line's `source` object; unknown fields are left out.
#[derive(Debug, Serialize, PartialEq, Eq)]
#[serde(rename_all = "camelCase")]
pub struct Source<'a> {
    /// Process id.
    pub pid: u32,
    /// Process name.
    #[serde(skip_serializing_if = "str::is_empty")]
    pub process: &'a str,
    /// The connection's serial within this run.
    pub connection: u64,
    /// Socket fd in the process.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub fd: Option<i32>,
    /// The process's end, `ip:port` (`[v6]:port`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub local_address: Option<String>,
    /// The peer, `ip:port` (`[v6]:port`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub remote_address: Option<String>,
    /// TLS SNI, else the request's Host / `:authority` host.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub server_name: Option<&'a str>,
    /// The process's cgroup path.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub cgroup: Option<&'a str>,
    /// The container id found in the cgroup path.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub container_id: Option<&'a str>,
}

impl<'a> Source<'a> {
    /// The source of an exchange on the connection `meta` whose request named `domain`.
    #[must_use]
    pub fn new(meta: &'a ConnMeta, domain: &'a str) -> Self {
        Self {
            pid: meta.pid,
            process: &meta.comm,
            connection: meta.serial,
            fd: meta.fd,
            local_address: meta.local.map(|a| a.to_string()),
            remote_address: meta.remote.map(|a| a.to_string()),
            server_name: meta
                .server_name
                .as_deref()
                .or_else(|| (!domain.is_empty()).then_some(domain)),
            cgroup: meta.cgroup.as_deref(),
            container_id: meta.container_id.as_deref(),
        }
    }
}

/// One output line as JSON, without the trailing newline.
#[must_use]
pub fn line_json(line: OutputLine, source: Source<'_>) -> String {
    // Strings, numbers and a Vec of plain structs always serialize.
    serde_json::to_string(&Line { line, source }).unwrap_or_default()
}

struct InFlight {
    meta: Arc<ConnMeta>,
    state: RequestState,
    request: OwnedRequest,
    status: u16,
    headers: Vec<(String, String)>,
    since: Instant,
}

struct WorkerLoop {
    worker: Worker,
    clock: Clock,
    in_flight: HashMap<ExchangeKey, InFlight>,
    out: Sender<String>,
    stats: Arc<PipelineStats>,
}

impl WorkerLoop {
    fn handle(&mut self, job: Job) {
        match job {
            Job::Request { key, request, meta } => {
                let mut state = RequestState::new();
                let owned = OwnedRequest::from_request(&request, &self.clock);
                self.worker.pre(&mut state, &owned.view());
                self.in_flight.insert(
                    key,
                    InFlight {
                        meta,
                        state,
                        request: owned,
                        status: 0,
                        headers: Vec::new(),
                        since: Instant::now(),
                    },
                );
            }
            Job::ResponseHead {
                key,
                status,
                headers,
            } => {
                if let Some(f) = self.in_flight.get_mut(&key) {
                    f.status = status;
                    f.headers = headers;
                }
            }
            Job::ResponseBody { key, data } => {
                let Some(f) = self.in_flight.get_mut(&key) else {
                    self.stats.orphan_jobs.fetch_add(1, Ordering::Relaxed);
                    return;
                };
                let response = ResponseView {
                    status: f.status,
                    headers: &f.headers,
                    body: None,
                };
                self.worker
                    .chunk(&mut f.state, &f.request.view(), &response, Some(&data[..]));
            }
            Job::Complete {
                key,
                exchange,
                meta,
            } => {
                let Some(mut f) = self.in_flight.remove(&key) else {
                    self.stats.orphan_jobs.fetch_add(1, Ordering::Relaxed);
                    return;
                };
                let resp = &exchange.response;
                f.request.timing.response_start_unix_ns =
                    Some(self.clock.to_unix_ns(resp.start_ns));
                f.request.timing.response_end_unix_ns = Some(self.clock.to_unix_ns(resp.end_ns));
                let headers: Vec<(String, String)> = resp
                    .head
                    .headers
                    .iter()
                    .map(|(name, value)| (name.to_owned(), value.to_owned()))
                    .collect();
                let response = ResponseView {
                    status: resp.head.status,
                    headers: &headers,
                    body: (!resp.body.data.is_empty()).then_some(&resp.body.data[..]),
                };
                let request = f.request.view();
                self.worker.chunk(&mut f.state, &request, &response, None);
                self.worker.post(&mut f.state, &request, &response);
                // The connection's latest meta (an fd may have been learnt since the request).
                f.meta = meta;
                self.emit(f);
            }
            Job::Incomplete { key, .. } => {
                if let Some(f) = self.in_flight.remove(&key) {
                    self.emit(f);
                }
            }
        }
    }

    fn emit(&self, f: InFlight) {
        self.stats.exchanges.fetch_add(1, Ordering::Relaxed);
        let line = line_json(f.state.into_line(), Source::new(&f.meta, &f.request.domain));
        // A closed sink means we are shutting down; nothing else to do with the line.
        let _ = self.out.send(line);
    }

    fn expire(&mut self) {
        let before = self.in_flight.len();
        self.in_flight
            .retain(|_, f| f.since.elapsed() < IN_FLIGHT_TTL);
        let gone = before - self.in_flight.len();
        if gone > 0 {
            self.stats.expired.fetch_add(gone as u64, Ordering::Relaxed);
        }
    }
}

/// Why the pack stage could not start.
#[derive(Debug, thiserror::Error)]
pub enum PipelineError {
    /// A worker's pack instances could not be created.
    #[error(transparent)]
    Runtime(#[from] taskless_pack_runtime::RuntimeError),
    /// A worker thread could not be started.
    #[error("starting a pack worker thread: {0}")]
    Thread(std::io::Error),
}

/// Starts `n` workers over `packs`, writing lines to `out`.
///
/// # Errors
/// When a worker's pack instances cannot be created.
pub fn start(
    packs: &Arc<PackSet>,
    n: usize,
    queue: usize,
    out: &Sender<String>,
    stats: &Arc<PipelineStats>,
) -> Result<(Dispatcher, Vec<JoinHandle<()>>), PipelineError> {
    start_with_clock(packs, n, queue, out, stats, Clock::new())
}

/// [`start`] with the clock that turns exchange timestamps into Unix time (a recording's
/// stored offset when replaying).
///
/// # Errors
/// When a worker's pack instances cannot be created.
pub fn start_with_clock(
    packs: &Arc<PackSet>,
    n: usize,
    queue: usize,
    out: &Sender<String>,
    stats: &Arc<PipelineStats>,
    clock: Clock,
) -> Result<(Dispatcher, Vec<JoinHandle<()>>), PipelineError> {
    let mut senders = Vec::new();
    let mut handles = Vec::new();
    for i in 0..n.max(1) {
        let (tx, rx): (Sender<Job>, Receiver<Job>) = crossbeam_channel::bounded(queue.max(1));
        let mut lp = WorkerLoop {
            worker: packs.worker()?,
            clock,
            in_flight: HashMap::new(),
            out: out.clone(),
            stats: Arc::clone(stats),
        };
        let handle = std::thread::Builder::new()
            .name(format!("packs-{i}"))
            .spawn(move || {
                let mut last_expire = Instant::now();
                loop {
                    match rx.recv_timeout(Duration::from_secs(1)) {
                        Ok(job) => lp.handle(job),
                        Err(crossbeam_channel::RecvTimeoutError::Timeout) => {}
                        Err(crossbeam_channel::RecvTimeoutError::Disconnected) => break,
                    }
                    if last_expire.elapsed() > Duration::from_secs(10) {
                        lp.expire();
                        last_expire = Instant::now();
                    }
                }
                // Shutting down: write out what `pre` captured for exchanges still open.
                for (_, f) in std::mem::take(&mut lp.in_flight) {
                    lp.emit(f);
                }
            })
            .map_err(PipelineError::Thread)?;
        senders.push(tx);
        handles.push(handle);
    }
    Ok((
        Dispatcher {
            senders,
            stats: Arc::clone(stats),
        },
        handles,
    ))
}

#[cfg(test)]
mod tests {
    use taskless_pack_runtime::{Dimension, OutputLine};

    use super::{Source, host_of, line_json};
    use crate::flows::ConnMeta;

    fn line() -> OutputLine {
        OutputLine {
            request_id: "0123456789abcdef0123456789abcdef".into(),
            dimensions: vec![Dimension {
                name: "core/status".into(),
                value: "200".into(),
            }],
        }
    }

    #[test]
    fn the_line_keeps_the_pack_fields_and_adds_a_full_source() {
        let meta = ConnMeta {
            pid: 42,
            comm: "curl".into(),
            serial: 7,
            fd: Some(5),
            local: Some("127.0.0.1:40000".parse().unwrap()),
            remote: Some("[::1]:8443".parse().unwrap()),
            server_name: Some("api.example.com".into()),
            cgroup: Some("/user.slice".into()),
            container_id: None,
        };
        let json = line_json(line(), Source::new(&meta, "ignored.example"));
        let v: serde_json::Value = serde_json::from_str(&json).unwrap();
        let expected_pack: serde_json::Value = serde_json::from_str(&line().to_json()).unwrap();
        assert_eq!(v["requestId"], expected_pack["requestId"]);
        assert_eq!(v["dimensions"], expected_pack["dimensions"]);
        assert_eq!(
            v["source"],
            serde_json::json!({
                "pid": 42, "process": "curl", "connection": 7, "fd": 5,
                "localAddress": "127.0.0.1:40000", "remoteAddress": "[::1]:8443",
                "serverName": "api.example.com", "cgroup": "/user.slice"
            })
        );
        assert!(json.starts_with(r#"{"requestId":"#), "{json}");
    }

    #[test]
    fn unknown_fields_are_left_out_and_the_server_name_falls_back_to_the_host() {
        let meta = ConnMeta {
            pid: 9,
            serial: 1,
            ..ConnMeta::default()
        };
        let v: serde_json::Value =
            serde_json::from_str(&line_json(line(), Source::new(&meta, "localhost"))).unwrap();
        assert_eq!(
            v["source"],
            serde_json::json!({"pid": 9, "connection": 1, "serverName": "localhost"})
        );
        let v: serde_json::Value =
            serde_json::from_str(&line_json(line(), Source::new(&meta, ""))).unwrap();
        assert_eq!(v["source"], serde_json::json!({"pid": 9, "connection": 1}));
    }

    #[test]
    fn host_of_strips_ports_users_and_brackets() {
        assert_eq!(host_of("api.stripe.com"), "api.stripe.com");
        assert_eq!(host_of("localhost:8443"), "localhost");
        assert_eq!(host_of("user@example.com:1"), "example.com");
        assert_eq!(host_of("[::1]:443"), "::1");
        assert_eq!(host_of(""), "");
    }
}
