//! Worker threads, each with its own instance of every pack, fed through bounded queues. All
//! moments of one connection go to the same worker, so the hooks of an exchange run in order
//! (`pre`, each `chunk`, the closing `chunk`, `post`). When a worker's queue is full the moment
//! is dropped and counted: capture never waits for packs (replay waits instead).

use std::{
    collections::HashMap,
    sync::{Arc, atomic::Ordering},
    thread::JoinHandle,
    time::{Duration, Instant},
};

use crossbeam_channel::{Receiver, Sender, TrySendError};
use taskless_http::Response;
use taskless_pack_runtime::{OutputLine, PackSet, ResponseView, Session, Worker};

use super::{FinishedExchange, PackRequest};
use crate::{
    clock::Clock,
    flows::{ExchangeKey, Identity, Moment},
};

crate::stats::counters! {
    /// Counters of the pack stage.
    pub struct PackStageStats {
        /// Exchanges that went through the packs and were handed to the sinks.
        exchanges,
        /// Moments dropped because a worker's queue was full.
        dropped_jobs,
        /// Moments of exchanges the worker did not know (their request was dropped or missed).
        orphan_jobs,
        /// Exchanges forgotten by a worker after waiting too long for their response.
        expired,
    }
}

/// What to do with a moment when its worker's queue is full.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Backpressure {
    /// Drop and count it: capture never waits (watching).
    Drop,
    /// Wait for room: nothing is lost (replay).
    Wait,
}

/// Routes moments to workers by connection.
pub struct Dispatcher {
    senders: Vec<Sender<Moment>>,
    backpressure: Backpressure,
    stats: Arc<PackStageStats>,
}

impl Dispatcher {
    /// Queues a moment for its connection's worker; when that queue is full, drops and counts it
    /// or waits, as the backpressure says.
    pub fn dispatch(&self, moment: Moment) {
        let n = self.senders.len().max(1) as u64;
        let i = usize::try_from(moment.key().conn % n).unwrap_or(0);
        let Some(tx) = self.senders.get(i) else {
            return;
        };
        match self.backpressure {
            Backpressure::Drop => {
                if let Err(TrySendError::Full(_)) = tx.try_send(moment) {
                    self.stats.dropped_jobs.fetch_add(1, Ordering::Relaxed);
                }
            }
            // Disconnected only when the worker is gone, i.e. shutting down.
            Backpressure::Wait => {
                let _ = tx.send(moment);
            }
        }
    }
}

/// In-flight exchanges older than this are forgotten (their response never came).
const IN_FLIGHT_TTL: Duration = Duration::from_secs(600);

struct InFlight {
    identity: Arc<Identity>,
    session: Session,
    request: PackRequest,
    status: Option<u16>,
    headers: Vec<(String, String)>,
    since: Instant,
}

struct WorkerLoop {
    worker: Worker,
    clock: Clock,
    in_flight: HashMap<ExchangeKey, InFlight>,
    out: Sender<FinishedExchange>,
    stats: Arc<PackStageStats>,
}

impl WorkerLoop {
    fn handle(&mut self, moment: Moment) {
        match moment {
            Moment::Request {
                key,
                request,
                identity,
            } => {
                let request = PackRequest::new(&request, identity.role, &self.clock);
                let session = Session::start(&mut self.worker, &request.view());
                self.in_flight.insert(
                    key,
                    InFlight {
                        identity,
                        session,
                        request,
                        status: None,
                        headers: Vec::new(),
                        since: Instant::now(),
                    },
                );
            }
            Moment::ResponseHead {
                key,
                status,
                headers,
            } => {
                if let Some(f) = self.in_flight.get_mut(&key) {
                    f.status = Some(status);
                    f.headers = headers;
                }
            }
            Moment::ResponseBody { key, data } => {
                let Some(f) = self.in_flight.get_mut(&key) else {
                    self.stats.orphan_jobs.fetch_add(1, Ordering::Relaxed);
                    return;
                };
                let response = ResponseView {
                    status: f.status.unwrap_or(0),
                    headers: &f.headers,
                    body: None,
                    complete: true,
                };
                f.session
                    .chunk(&mut self.worker, &f.request.view(), &response, &data);
            }
            Moment::Complete {
                key,
                exchange,
                identity,
            } => {
                let Some(f) = self.in_flight.remove(&key) else {
                    self.stats.orphan_jobs.fetch_add(1, Ordering::Relaxed);
                    return;
                };
                self.finish(f, &exchange.response, identity, true);
            }
            Moment::Incomplete {
                key,
                response,
                identity,
                upgraded,
                ..
            } => {
                let Some(f) = self.in_flight.remove(&key) else {
                    return;
                };
                match response {
                    Some(response) => self.finish(f, &response, identity, upgraded),
                    None => self.abandon(f),
                }
            }
        }
    }

    /// The closing `chunk` and `post` with `response` (whole, or as far as it came), then the
    /// finished exchange with the connection's latest identity (an fd may have been learnt since
    /// the request).
    fn finish(
        &mut self,
        mut f: InFlight,
        resp: &Response,
        identity: Arc<Identity>,
        complete: bool,
    ) {
        f.request.timing.response_start_unix_ns = Some(self.clock.to_unix_ns(resp.start_ns));
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
            complete,
        };
        let line = f
            .session
            .finish(&mut self.worker, &f.request.view(), &response);
        let partial = f.request.partial || resp.head.partial;
        self.emit(
            line,
            identity,
            &f.request,
            Some(resp.head.status),
            complete,
            partial,
        );
    }

    fn emit(
        &self,
        line: OutputLine,
        identity: Arc<Identity>,
        request: &PackRequest,
        status: Option<u16>,
        complete: bool,
        partial: bool,
    ) {
        self.stats.exchanges.fetch_add(1, Ordering::Relaxed);
        // A closed sink means we are shutting down; nothing else to do with the exchange.
        let _ = self.out.send(FinishedExchange {
            request_id: line.request_id,
            dimensions: line.dimensions,
            identity,
            method: request.method().to_owned(),
            url: request.url.url.clone(),
            domain: request.url.domain.clone(),
            status,
            timing: request.timing,
            complete,
            partial,
        });
    }

    /// Hands on an exchange that will not complete, with what its hooks captured so far.
    fn abandon(&self, f: InFlight) {
        let line = f.session.into_line();
        let partial = f.request.partial;
        self.emit(line, f.identity, &f.request, f.status, false, partial);
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

    fn run(mut self, rx: &Receiver<Moment>) {
        let mut last_expire = Instant::now();
        loop {
            match rx.recv_timeout(Duration::from_secs(1)) {
                Ok(moment) => self.handle(moment),
                Err(crossbeam_channel::RecvTimeoutError::Timeout) => {}
                Err(crossbeam_channel::RecvTimeoutError::Disconnected) => break,
            }
            if last_expire.elapsed() > Duration::from_secs(10) {
                self.expire();
                last_expire = Instant::now();
            }
        }
        // Shutting down: hand on what `pre` captured for exchanges still open.
        for (_, f) in std::mem::take(&mut self.in_flight) {
            self.abandon(f);
        }
    }
}

/// Why the pack stage could not start.
#[derive(Debug, thiserror::Error)]
pub enum PackStageError {
    /// A worker's pack instances could not be created.
    #[error(transparent)]
    Runtime(#[from] taskless_pack_runtime::RuntimeError),
    /// A worker thread could not be started.
    #[error("starting a pack worker thread: {0}")]
    Thread(std::io::Error),
}

/// The pack stage's settings.
pub struct StageOptions {
    /// Worker threads (at least one is started).
    pub workers: usize,
    /// Moments queued per worker.
    pub queue: usize,
    /// Drop or wait when a queue is full.
    pub backpressure: Backpressure,
    /// Turns exchange timestamps into Unix time (a recording's stored offset when replaying).
    pub clock: Clock,
}

/// Starts the workers over `packs`, handing finished exchanges to `out`.
///
/// # Errors
/// When a worker's pack instances or thread cannot be created.
pub fn start(
    packs: &Arc<PackSet>,
    options: &StageOptions,
    out: &Sender<FinishedExchange>,
    stats: &Arc<PackStageStats>,
) -> Result<(Dispatcher, Vec<JoinHandle<()>>), PackStageError> {
    let mut senders = Vec::new();
    let mut handles = Vec::new();
    for i in 0..options.workers.max(1) {
        let (tx, rx) = crossbeam_channel::bounded(options.queue.max(1));
        let worker = WorkerLoop {
            worker: packs.worker()?,
            clock: options.clock,
            in_flight: HashMap::new(),
            out: out.clone(),
            stats: Arc::clone(stats),
        };
        let handle = std::thread::Builder::new()
            .name(format!("packs-{i}"))
            .spawn(move || worker.run(&rx))
            .map_err(PackStageError::Thread)?;
        senders.push(tx);
        handles.push(handle);
    }
    Ok((
        Dispatcher {
            senders,
            backpressure: options.backpressure,
            stats: Arc::clone(stats),
        },
        handles,
    ))
}

/// A line per pack with its calls, domain skips and failures: every pack in the summary
/// (`all`), only failing ones otherwise.
pub fn log_pack_stats(packs: &PackSet, all: bool) {
    for p in packs.stats() {
        let failures = p.failures_total();
        if failures > 0 || all {
            tracing::info!(pack = %p.pack, calls = p.calls, skipped_domain = p.skipped_domain, failures, "pack stats");
        }
    }
}
