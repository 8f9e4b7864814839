//! Worker threads, each with its own instance of every pack, fed through bounded queues. All
//! moments of one exchange go to the same worker, so its hooks run in order (`pre`, each
//! `chunk`, the closing `chunk`, `post`). An exchange goes to the first worker with little
//! waiting for it ([`SPILL`]): at low rates one worker does everything and the others sleep.
//!
//! A worker that falls behind sheds packs, never exchanges: the fuller its queue, the more of
//! the costliest packs it skips for the exchanges it takes next ([`keep_share`]); each line
//! names the packs skipped for it. Only when a queue is full anyway is a moment dropped and
//! counted: capture never waits for packs (replay waits instead). The workers also share a CPU
//! budget ([`CpuBudget`], `--pack-cpu`): while it is spent they shed the same way.

use std::{
    collections::HashMap,
    sync::{
        Arc,
        atomic::{AtomicUsize, Ordering},
    },
    thread::JoinHandle,
    time::{Duration, Instant},
};

use crossbeam_channel::{Receiver, Sender, TrySendError};
use taskless_http::Response;
use taskless_pack_runtime::{OutputLine, PackSet, ResponseView, Session, Worker};

use super::budget::{CpuBudget, thread_cpu};
use super::{FinishedExchange, LivePacks, PackRequest};
use crate::{
    clock::Clock,
    flows::{ExchangeKey, Identity, Moment},
    sinks::SinkSender,
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
        /// Exchanges on which at least one pack was skipped because its worker was behind
        /// or the packs' CPU budget was spent (each pack's own count is in its stats line).
        shed,
        /// Of `shed`, the exchanges on which the CPU budget (`--pack-cpu`) asked for more to
        /// be skipped than the queue did.
        shed_budget,
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

/// Moments held for one worker before they are handed on together.
const BATCH: usize = 128;

/// Moments a worker may have queued (handed on and not yet taken) for an exchange starting now
/// to go to it rather than to the next worker: under this, the first worker takes every
/// exchange and the others sleep, which at low rates saves their wake-ups and keeps one
/// worker's caches warm; past it, exchanges spill over to the next.
const SPILL: usize = 64;

/// How often the routes of exchanges that never finished are swept.
const ROUTE_SWEEP: Duration = Duration::from_secs(60);

/// Routes moments to workers by exchange: an exchange goes to the first worker with fewer than
/// [`SPILL`] moments queued (else to the one with the fewest waiting, held ones included), and
/// its later moments follow it.
///
/// Moments are held per worker and handed on together, as one message, when
/// [`Dispatcher::flush`] is called (the capture loop does at the end of each drain of the ring
/// buffer: every 10 ms while records come) or when [`BATCH`] are waiting; dropping the
/// dispatcher hands on the rest. A worker wakes once per batch, not once per moment: at low
/// rates waking a thread costs more than what it then does (a context switch, cold caches).
pub struct Dispatcher {
    queues: Vec<Queue>,
    pending: Vec<Vec<Moment>>,
    backpressure: Backpressure,
    capacity: usize,
    stats: Arc<PackStageStats>,
    /// The worker of each exchange in flight, and when its request came.
    routes: HashMap<ExchangeKey, (usize, Instant)>,
    last_sweep: Instant,
}

/// One worker's queue: batches of moments, bounded by the moments they hold.
struct Queue {
    tx: Sender<Vec<Moment>>,
    /// Moments sent and not yet taken by the worker.
    queued: Arc<AtomicUsize>,
}

impl Dispatcher {
    /// Holds a moment for its exchange's worker (see [`Dispatcher`]).
    pub fn dispatch(&mut self, moment: Moment) {
        let i = self.route(&moment);
        let Some(pending) = self.pending.get_mut(i) else {
            return;
        };
        pending.push(moment);
        if pending.len() >= BATCH {
            self.flush_worker(i);
        }
    }

    /// The worker for `moment`: chosen for a request, its exchange's for the rest. A moment of an
    /// exchange whose request was never seen goes by its connection (the worker drops it).
    fn route(&mut self, moment: &Moment) -> usize {
        let key = moment.key();
        let by_connection = || {
            let n = self.queues.len().max(1) as u64;
            usize::try_from(key.conn % n).unwrap_or(0)
        };
        match moment {
            Moment::Request { .. } => {
                let i = self.least_busy();
                self.routes.insert(key, (i, Instant::now()));
                i
            }
            Moment::ResponseHead { .. } | Moment::ResponseBody { .. } => {
                self.routes.get(&key).map_or_else(by_connection, |r| r.0)
            }
            Moment::Complete { .. } | Moment::Incomplete { .. } => {
                self.routes.remove(&key).map_or_else(by_connection, |r| r.0)
            }
        }
    }

    /// The first worker with fewer than [`SPILL`] moments handed to it and not yet taken, else
    /// the one with the fewest moments waiting, held ones included. What is held for a worker is
    /// this drain's batch, not a sign it is behind: a drain at a low rate brings a batch larger
    /// than [`SPILL`], and it should still go to one worker.
    fn least_busy(&self) -> usize {
        let queued = |i: usize| self.queues[i].queued.load(Ordering::Relaxed);
        let n = self.queues.len().min(self.pending.len());
        (0..n)
            .find(|&i| queued(i) < SPILL)
            .or_else(|| (0..n).min_by_key(|&i| queued(i) + self.pending[i].len()))
            .unwrap_or(0)
    }

    /// Hands every held moment to its worker's queue; when that queue is full, drops and counts
    /// it or waits, as the backpressure says.
    pub fn flush(&mut self) {
        for i in 0..self.queues.len() {
            self.flush_worker(i);
        }
        if self.last_sweep.elapsed() > ROUTE_SWEEP {
            // Exchanges that never finished (their worker forgets them after the same time).
            self.routes
                .retain(|_, (_, since)| since.elapsed() < IN_FLIGHT_TTL);
            self.last_sweep = Instant::now();
        }
    }

    fn flush_worker(&mut self, i: usize) {
        let (Some(queue), Some(pending)) = (self.queues.get(i), self.pending.get_mut(i)) else {
            return;
        };
        if pending.is_empty() {
            return;
        }
        let mut batch = std::mem::take(pending);
        match self.backpressure {
            Backpressure::Drop => {
                // The moments that fit go on, the rest are dropped and counted.
                let room = self
                    .capacity
                    .saturating_sub(queue.queued.load(Ordering::Acquire));
                if batch.len() > room {
                    let dropped = batch.len() - room;
                    batch.truncate(room);
                    self.stats
                        .dropped_jobs
                        .fetch_add(dropped as u64, Ordering::Relaxed);
                }
                if batch.is_empty() {
                    return;
                }
                let n = batch.len();
                queue.queued.fetch_add(n, Ordering::AcqRel);
                if let Err(TrySendError::Full(_) | TrySendError::Disconnected(_)) =
                    queue.tx.try_send(batch)
                {
                    queue.queued.fetch_sub(n, Ordering::AcqRel);
                    self.stats
                        .dropped_jobs
                        .fetch_add(n as u64, Ordering::Relaxed);
                }
            }
            Backpressure::Wait => {
                // Room for the whole batch first (or an empty queue, for a batch larger than
                // the queue): nothing is lost.
                while queue.queued.load(Ordering::Acquire) > 0
                    && queue.queued.load(Ordering::Acquire) + batch.len() > self.capacity
                {
                    std::thread::sleep(Duration::from_micros(200));
                }
                queue.queued.fetch_add(batch.len(), Ordering::AcqRel);
                // Disconnected only when the worker is gone, i.e. shutting down.
                let _ = queue.tx.send(batch);
            }
        }
    }
}

impl Drop for Dispatcher {
    /// Nothing held is lost when the stage shuts down.
    fn drop(&mut self) {
        self.flush();
    }
}

/// In-flight exchanges older than this are forgotten (their response never came).
const IN_FLIGHT_TTL: Duration = Duration::from_secs(600);

struct InFlight {
    /// The generation of the packs it started on (it finishes on them).
    generation: u64,
    identity: Arc<Identity>,
    session: Session,
    request: PackRequest,
    status: Option<u16>,
    headers: Vec<(String, String)>,
    since: Instant,
    /// A pack was skipped for it because the CPU budget was spent.
    over_budget: bool,
}

/// What an exchange keeps of its packs' cost when a moment of it is taken: the lower of what
/// the worker's queue ([`keep_share`]) and the CPU budget ([`CpuBudget::keep_share`]) allow.
#[derive(Clone, Copy, Debug, Default)]
struct Keep {
    share: Option<f64>,
    /// The budget asked for more to be skipped than the queue.
    by_budget: bool,
}

impl Keep {
    fn new(queue: Option<f64>, budget: Option<f64>) -> Self {
        match (queue, budget) {
            (q, None) => Self {
                share: q,
                by_budget: false,
            },
            (Some(q), Some(b)) if q <= b => Self {
                share: Some(q),
                by_budget: false,
            },
            (_, Some(b)) => Self {
                share: Some(b),
                by_budget: true,
            },
        }
    }
}

/// The share of the packs' cost an exchange keeps when its worker's queue holds `backlog` of
/// `capacity` moments: everything below a quarter full; then the costliest packs are skipped
/// until the rest cost at most half (a quarter full), a quarter (half full), or nothing (three
/// quarters full, so that the queue drains before it overflows). `None`: shed nothing.
#[must_use]
pub fn keep_share(backlog: usize, capacity: usize) -> Option<f64> {
    let capacity = capacity.max(1);
    if backlog * 4 < capacity {
        None
    } else if backlog * 2 < capacity {
        Some(0.5)
    } else if backlog * 4 < capacity * 3 {
        Some(0.25)
    } else {
        Some(0.0)
    }
}

struct WorkerLoop {
    live: Arc<LivePacks>,
    /// The generation of the packs `worker` runs: new exchanges start on it.
    generation: u64,
    worker: Worker,
    /// Workers of earlier generations, kept while exchanges begun on them are in flight.
    old: Vec<(u64, Worker)>,
    clock: Clock,
    in_flight: HashMap<ExchangeKey, InFlight>,
    out: SinkSender,
    /// Exchanges finished while working through the queue, handed to the sinks together when
    /// the queue is empty (or [`DONE_BATCH`] are waiting): the sinks wake once per batch.
    done: Vec<FinishedExchange>,
    stats: Arc<PackStageStats>,
    /// The CPU budget the workers share, when there is one (watching with `--pack-cpu`).
    budget: Option<Arc<CpuBudget>>,
    /// Time spent running packs on workers retired since the budget was last charged.
    busy_retired: Duration,
}

/// Finished exchanges held by a worker before it hands them to the sinks.
const DONE_BATCH: usize = 64;

/// Moments a worker takes between charges of the CPU budget within one batch.
const CHARGE_EVERY: usize = 16;

/// The worker that runs the packs of `generation`: the current one, or an earlier one kept for
/// the exchanges begun on it.
fn worker_of<'a>(
    current: &'a mut Worker,
    old: &'a mut [(u64, Worker)],
    current_generation: u64,
    generation: u64,
) -> &'a mut Worker {
    if generation == current_generation {
        return current;
    }
    match old.iter_mut().find(|(g, _)| *g == generation) {
        Some((_, w)) => w,
        None => current,
    }
}

impl WorkerLoop {
    /// Takes up reloaded packs for the exchanges that start from now on.
    fn refresh(&mut self) {
        if self.live.generation() == self.generation {
            return;
        }
        let (generation, set) = self.live.snapshot();
        match set.worker() {
            Ok(worker) => {
                let previous = std::mem::replace(&mut self.worker, worker);
                self.old.push((self.generation, previous));
                self.generation = generation;
                self.retire();
            }
            Err(e) => {
                // The packs reloaded but this worker cannot run them: keep the ones it has.
                tracing::warn!(error = %e, "pack worker keeps its packs: the reloaded ones cannot be instantiated");
                self.generation = generation;
            }
        }
    }

    /// Drops earlier workers no exchange in flight needs any more.
    fn retire(&mut self) {
        if self.old.is_empty() {
            return;
        }
        let in_flight = &self.in_flight;
        let busy_retired = &mut self.busy_retired;
        self.old.retain_mut(|(g, w)| {
            let keep = in_flight.values().any(|f| f.generation == *g);
            if !keep {
                *busy_retired += w.take_busy();
            }
            keep
        });
    }

    /// The wall time spent running packs, on every worker, since the last call.
    fn take_busy(&mut self) -> Duration {
        let mut busy = self.worker.take_busy() + std::mem::take(&mut self.busy_retired);
        for (_, w) in &mut self.old {
            busy += w.take_busy();
        }
        busy
    }

    /// Takes out of the budget the share of this thread's CPU time since `since` (CPU time,
    /// instant) that went to running packs: the thread's CPU time, split by how much of the
    /// wall time the packs took. The work around the packs (building requests, handing lines
    /// on) is not charged: shedding packs cannot save it.
    fn charge(&mut self, budget: &CpuBudget, since: &mut (Duration, Instant)) {
        let (cpu, now) = (thread_cpu(), Instant::now());
        let wall = now.saturating_duration_since(since.1);
        let busy = self.take_busy();
        let share = if wall.is_zero() {
            0.0
        } else {
            (busy.as_secs_f64() / wall.as_secs_f64()).min(1.0)
        };
        budget.charge(cpu.saturating_sub(since.0).mul_f64(share), now);
        *since = (cpu, now);
    }
    /// Handles one moment; `keep` is what the queue behind it and the CPU budget allow.
    fn handle(&mut self, moment: Moment, keep: Keep) {
        match moment {
            Moment::Request {
                key,
                request,
                identity,
            } => {
                self.refresh();
                let request = PackRequest::new(&request, identity.role, &self.clock);
                let session =
                    Session::start_shedding(&mut self.worker, &request.view(), keep.share);
                let over_budget = keep.by_budget && !session.skipped().is_empty();
                self.in_flight.insert(
                    key,
                    InFlight {
                        generation: self.generation,
                        identity,
                        session,
                        request,
                        status: None,
                        headers: Vec::new(),
                        since: Instant::now(),
                        over_budget,
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
                let worker = worker_of(
                    &mut self.worker,
                    &mut self.old,
                    self.generation,
                    f.generation,
                );
                if let Some(share) = keep.share {
                    f.over_budget |=
                        f.session.shed(worker, &f.request.view(), share) > 0 && keep.by_budget;
                }
                f.session.chunk(worker, &f.request.view(), &response, &data);
            }
            Moment::Complete {
                key,
                exchange,
                identity,
            } => {
                let Some(mut f) = self.in_flight.remove(&key) else {
                    self.stats.orphan_jobs.fetch_add(1, Ordering::Relaxed);
                    return;
                };
                if let Some(share) = keep.share {
                    let worker = worker_of(
                        &mut self.worker,
                        &mut self.old,
                        self.generation,
                        f.generation,
                    );
                    f.over_budget |=
                        f.session.shed(worker, &f.request.view(), share) > 0 && keep.by_budget;
                }
                self.finish(f, &exchange.response, identity, true);
                self.retire();
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
                self.retire();
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
        let worker = worker_of(
            &mut self.worker,
            &mut self.old,
            self.generation,
            f.generation,
        );
        let line = f.session.finish(worker, &f.request.view(), &response);
        let partial = f.request.partial || resp.head.partial;
        if f.over_budget {
            self.stats.shed_budget.fetch_add(1, Ordering::Relaxed);
        }
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
        &mut self,
        line: OutputLine,
        identity: Arc<Identity>,
        request: &PackRequest,
        status: Option<u16>,
        complete: bool,
        partial: bool,
    ) {
        self.stats.exchanges.fetch_add(1, Ordering::Relaxed);
        if !line.skipped.is_empty() {
            self.stats.shed.fetch_add(1, Ordering::Relaxed);
        }
        self.done.push(FinishedExchange {
            request_id: line.request_id,
            dimensions: line.dimensions,
            skipped: line.skipped,
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

    /// Hands the finished exchanges held to the sinks.
    fn hand_on(&mut self) {
        for exchange in self.done.drain(..) {
            self.out.send(exchange);
        }
    }

    /// Hands on an exchange that will not complete, with what its hooks captured so far.
    fn abandon(&mut self, f: InFlight) {
        let line = f.session.into_line();
        let partial = f.request.partial;
        if f.over_budget {
            self.stats.shed_budget.fetch_add(1, Ordering::Relaxed);
        }
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
        self.retire();
    }

    /// Runs until the queue closes; sheds packs as the queue fills when `shed` (watching), never
    /// otherwise (replay, which waits for room and so loses nothing). `queued` counts the moments
    /// sent to this worker and not yet taken.
    fn run(
        mut self,
        rx: &Receiver<Vec<Moment>>,
        queued: &AtomicUsize,
        capacity: usize,
        shed: bool,
    ) {
        let mut last_expire = Instant::now();
        let budget = self.budget.clone();
        loop {
            match rx.recv_timeout(Duration::from_secs(1)) {
                Ok(batch) => {
                    // What this thread spends on packs is taken out of the budget after
                    // every few moments (reading the thread's clock is a system call).
                    let mut started = budget.as_ref().map(|b| {
                        let now = Instant::now();
                        b.charge(Duration::ZERO, now);
                        self.take_busy();
                        (thread_cpu(), now)
                    });
                    for (i, moment) in batch.into_iter().enumerate() {
                        // The moments behind this one, in this batch and the queue.
                        let backlog = queued.fetch_sub(1, Ordering::AcqRel).saturating_sub(1);
                        let keep = if shed {
                            Keep::new(
                                keep_share(backlog, capacity),
                                budget.as_ref().and_then(|b| b.keep_share()),
                            )
                        } else {
                            Keep::default()
                        };
                        self.handle(moment, keep);
                        if self.done.len() >= DONE_BATCH {
                            self.hand_on();
                        }
                        if let (Some(b), Some(since)) = (&budget, started.as_mut())
                            && i % CHARGE_EVERY == CHARGE_EVERY - 1
                        {
                            self.charge(b, since);
                        }
                    }
                    if let (Some(b), Some(since)) = (&budget, started.as_mut()) {
                        self.charge(b, since);
                    }
                }
                Err(crossbeam_channel::RecvTimeoutError::Timeout) => {}
                Err(crossbeam_channel::RecvTimeoutError::Disconnected) => break,
            }
            if last_expire.elapsed() > Duration::from_secs(10) {
                self.expire();
                last_expire = Instant::now();
            }
            if !self.done.is_empty() && rx.is_empty() {
                self.hand_on();
            }
        }
        // Shutting down: hand on what `pre` captured for exchanges still open.
        for (_, f) in std::mem::take(&mut self.in_flight) {
            self.abandon(f);
        }
        self.hand_on();
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
    /// The workers' nice value (see [`lower_priority`]).
    pub nice: u8,
    /// Moments queued per worker.
    pub queue: usize,
    /// Drop or wait when a queue is full.
    pub backpressure: Backpressure,
    /// The CPU the workers may take together, in CPUs (0: no budget); only while watching
    /// (with [`Backpressure::Drop`]): replay skips no pack.
    pub cpu_budget: f64,
    /// Turns exchange timestamps into Unix time (a recording's stored offset when replaying).
    pub clock: Clock,
}

/// Starts the workers over `packs` (taking up each reload for the exchanges that start after
/// it), handing finished exchanges to `out`.
///
/// # Errors
/// When a worker's pack instances or thread cannot be created.
pub fn start(
    packs: &Arc<LivePacks>,
    options: &StageOptions,
    out: &SinkSender,
    stats: &Arc<PackStageStats>,
) -> Result<(Dispatcher, Vec<JoinHandle<()>>), PackStageError> {
    let mut queues = Vec::new();
    let mut handles = Vec::new();
    let capacity = options.queue.max(1);
    let shed = options.backpressure == Backpressure::Drop;
    let nice = options.nice;
    let budget = shed
        .then(|| CpuBudget::new(options.cpu_budget, Instant::now()))
        .flatten()
        .map(Arc::new);
    for i in 0..options.workers.max(1) {
        // Every batch holds a moment at least, so `capacity` batches can hold every moment
        // the queue allows.
        let (tx, rx) = crossbeam_channel::bounded(capacity);
        let queued = Arc::new(AtomicUsize::new(0));
        let (generation, set) = packs.snapshot();
        let worker = WorkerLoop {
            live: Arc::clone(packs),
            generation,
            worker: set.worker()?,
            old: Vec::new(),
            clock: options.clock,
            in_flight: HashMap::new(),
            out: out.clone(),
            done: Vec::new(),
            stats: Arc::clone(stats),
            budget: budget.clone(),
            busy_retired: Duration::ZERO,
        };
        let handle = std::thread::Builder::new()
            .name(format!("packs-{i}"))
            .spawn({
                let queued = Arc::clone(&queued);
                move || {
                    lower_priority(nice);
                    worker.run(&rx, &queued, capacity, shed);
                }
            })
            .map_err(PackStageError::Thread)?;
        queues.push(Queue { tx, queued });
        handles.push(handle);
    }
    Ok((
        Dispatcher {
            pending: queues.iter().map(|_| Vec::new()).collect(),
            queues,
            backpressure: options.backpressure,
            capacity,
            stats: Arc::clone(stats),
            routes: HashMap::new(),
            last_sweep: Instant::now(),
        },
        handles,
    ))
}

/// Gives the calling thread the nice value `nice` (0 to 19), or leaves it where it is when it
/// is higher already (an agent started at a lower priority), so that it runs after the watched
/// programs when they want the same CPU: the pack workers then fall behind and shed their
/// costliest packs instead of taking the programs' time. Raising a thread's own nice value needs
/// no privilege; when it fails anyway, the thread keeps the agent's priority and says so.
fn lower_priority(nice: u8) {
    // SAFETY: no memory is passed; `gettid` cannot fail.
    let tid = unsafe { libc::gettid() };
    #[allow(clippy::cast_sign_loss)]
    let who = tid as libc::id_t;
    // On Linux, `PRIO_PROCESS` with a thread id reads and sets that thread's nice value alone.
    // SAFETY: no memory is passed. (An error also reads as -1: the nice value is then set.)
    let current = unsafe { libc::getpriority(libc::PRIO_PROCESS, who) };
    let nice = i32::from(nice);
    if nice <= current {
        return;
    }
    // SAFETY: no memory is passed.
    if unsafe { libc::setpriority(libc::PRIO_PROCESS, who, nice) } != 0 {
        tracing::warn!(nice, error = %std::io::Error::last_os_error(), "pack worker keeps the agent's priority");
    }
}

/// A line per pack with its calls, domain skips, sheds (`skipped_shed`), failures and time per
/// call (`p50_us`, `p99_us`, `max_us`, from the runtime's histogram): every pack in the summary
/// (`all`), the packs that were called, shed or failed otherwise.
pub fn log_pack_stats(packs: &PackSet, all: bool) {
    for p in packs.stats() {
        let failures = p.failures_total();
        if !(all || p.calls > 0 || p.skipped_shed > 0 || failures > 0) {
            continue;
        }
        let micros = |d: Option<Duration>| d.map_or(0.0, |d| d.as_secs_f64() * 1e6);
        tracing::info!(
            pack = %p.pack,
            calls = p.calls,
            failures,
            skipped_shed = p.skipped_shed,
            skipped_domain = p.skipped_domain,
            p50_us = format_args!("{:.1}", micros(p.call_time.map(|t| t.p50))),
            p99_us = format_args!("{:.1}", micros(p.call_time.map(|t| t.p99))),
            max_us = format_args!("{:.1}", micros(p.call_time.map(|t| t.max))),
            "pack stats"
        );
    }
}

#[cfg(test)]
mod tests {
    use std::{
        collections::HashMap,
        sync::{
            Arc,
            atomic::{AtomicUsize, Ordering},
        },
        time::Instant,
    };

    use super::{
        Backpressure, Dispatcher, Keep, PackStageStats, Queue, SPILL, keep_share, lower_priority,
    };
    use crate::flows::{ExchangeKey, Moment};

    fn request(conn: u64, id: u64) -> Moment {
        use taskless_http::{Body, Headers, Request, RequestHead, Text, Version};
        Moment::Request {
            key: ExchangeKey { conn, id },
            request: Arc::new(Request {
                head: RequestHead {
                    method: Text::from("GET"),
                    target: Text::from("/"),
                    authority: None,
                    scheme: None,
                    version: Version::Http11,
                    headers: Headers::default(),
                    partial: false,
                },
                body: Body {
                    data: bytes::Bytes::new(),
                    total_len: 0,
                    truncated: false,
                },
                trailers: Headers::default(),
                start_ns: 0,
                end_ns: 0,
            }),
            identity: Arc::new(crate::flows::Identity::default()),
        }
    }

    fn incomplete(conn: u64, id: u64) -> Moment {
        Moment::Incomplete {
            key: ExchangeKey { conn, id },
            had_request: true,
            response: None,
            identity: Arc::new(crate::flows::Identity::default()),
            upgraded: false,
        }
    }

    #[test]
    fn exchanges_go_to_the_first_worker_until_it_is_behind_and_their_moments_follow_them() {
        let queued: Vec<_> = (0..2).map(|_| Arc::new(AtomicUsize::new(0))).collect();
        let (queues, _rxs): (Vec<_>, Vec<_>) = queued
            .iter()
            .map(|q| {
                let (tx, rx) = crossbeam_channel::bounded(64);
                (
                    Queue {
                        tx,
                        queued: Arc::clone(q),
                    },
                    rx,
                )
            })
            .unzip();
        let mut d = Dispatcher {
            queues,
            pending: vec![Vec::new(), Vec::new()],
            backpressure: Backpressure::Drop,
            capacity: 4096,
            stats: Arc::new(PackStageStats::default()),
            routes: HashMap::new(),
            last_sweep: Instant::now(),
        };
        // Quiet: every exchange, whatever its connection, goes to the first worker.
        for conn in 0..3 {
            d.dispatch(request(conn, 1));
        }
        d.dispatch(body(1, 1));
        assert_eq!((d.pending[0].len(), d.pending[1].len()), (4, 0));
        // A drain's batch larger than SPILL, held and not yet handed on, is not a worker behind.
        for conn in 10..10 + SPILL as u64 {
            d.dispatch(request(conn, 1));
        }
        assert_eq!((d.pending[0].len(), d.pending[1].len()), (4 + SPILL, 0));
        d.pending[0].truncate(4);
        d.routes.retain(|k, _| k.conn < 10);
        // The first worker is behind: a new exchange goes to the second, and stays there.
        queued[0].store(SPILL, Ordering::Relaxed);
        d.dispatch(request(0, 2));
        d.dispatch(body(0, 2));
        assert_eq!((d.pending[0].len(), d.pending[1].len()), (4, 2));
        // The first worker caught up: the exchanges already on the second finish there.
        queued[0].store(0, Ordering::Relaxed);
        d.dispatch(body(0, 2));
        d.dispatch(incomplete(0, 2));
        assert_eq!((d.pending[0].len(), d.pending[1].len()), (4, 4));
        d.dispatch(incomplete(1, 1));
        assert_eq!(d.pending[0].len(), 5);
        assert_eq!(d.routes.len(), 2, "finished exchanges are forgotten");
        // Both behind: the one with less waiting.
        queued[0].store(SPILL + 10, Ordering::Relaxed);
        queued[1].store(SPILL, Ordering::Relaxed);
        d.dispatch(request(5, 1));
        assert_eq!(d.pending[1].len(), 5);
    }

    fn body(conn: u64, id: u64) -> Moment {
        Moment::ResponseBody {
            key: ExchangeKey { conn, id },
            data: bytes::Bytes::from_static(b"x"),
        }
    }

    #[test]
    fn a_flush_hands_on_one_batch_and_drops_and_counts_what_does_not_fit() {
        let (tx, rx) = crossbeam_channel::bounded(4);
        let queued = Arc::new(AtomicUsize::new(0));
        let stats = Arc::new(PackStageStats::default());
        let mut d = Dispatcher {
            queues: vec![Queue {
                tx,
                queued: Arc::clone(&queued),
            }],
            pending: vec![Vec::new()],
            backpressure: Backpressure::Drop,
            capacity: 4,
            stats: Arc::clone(&stats),
            routes: HashMap::new(),
            last_sweep: Instant::now(),
        };
        for id in 0..3 {
            d.dispatch(body(0, id));
        }
        assert!(rx.is_empty(), "held until the flush");
        d.flush();
        assert_eq!(rx.len(), 1, "one message for the three moments");
        assert_eq!(queued.load(Ordering::Relaxed), 3);
        for id in 3..6 {
            d.dispatch(body(0, id));
        }
        d.flush();
        // One more fitted; two were dropped and counted.
        assert_eq!(queued.load(Ordering::Relaxed), 4);
        assert_eq!(stats.dropped_jobs.load(Ordering::Relaxed), 2);
        let taken: Vec<u64> = rx.try_iter().flatten().map(|m| m.key().id).collect();
        assert_eq!(taken, [0, 1, 2, 3]);
    }

    /// The calling thread's nice value, from `/proc/thread-self/stat` (its 19th field).
    fn own_nice() -> i64 {
        let stat = std::fs::read_to_string("/proc/thread-self/stat").expect("stat");
        let after = &stat[stat.rfind(')').expect("comm") + 1..];
        after
            .split_whitespace()
            .nth(16)
            .expect("nice")
            .parse()
            .expect("number")
    }

    #[test]
    fn a_worker_thread_lowers_its_own_priority_only() {
        let before = own_nice();
        let nice = std::thread::spawn(|| {
            lower_priority(7);
            own_nice()
        })
        .join()
        .expect("thread");
        assert_eq!(nice, before.max(7));
        assert_eq!(
            own_nice(),
            before,
            "the calling thread is not the one lowered"
        );
        let untouched = std::thread::spawn(|| {
            lower_priority(0);
            own_nice()
        })
        .join()
        .expect("thread");
        assert_eq!(untouched, before);
        // A thread already nicer than asked stays as nice as it was.
        let nicer = std::thread::spawn(|| {
            lower_priority(12);
            lower_priority(5);
            own_nice()
        })
        .join()
        .expect("thread");
        assert_eq!(nicer, before.max(12));
    }

    #[test]
    fn an_exchange_keeps_the_lower_share_of_queue_and_budget_and_knows_which_asked() {
        let keep = |q, b| {
            let k = Keep::new(q, b);
            (k.share, k.by_budget)
        };
        assert_eq!(keep(None, None), (None, false));
        assert_eq!(keep(Some(0.5), None), (Some(0.5), false));
        assert_eq!(keep(None, Some(0.5)), (Some(0.5), true));
        assert_eq!(keep(Some(0.25), Some(0.5)), (Some(0.25), false));
        assert_eq!(keep(Some(0.5), Some(0.25)), (Some(0.25), true));
        // Both the same: the queue would have shed it anyway.
        assert_eq!(keep(Some(0.5), Some(0.5)), (Some(0.5), false));
    }

    #[test]
    fn the_fuller_the_queue_the_less_of_the_packs_cost_an_exchange_keeps() {
        assert_eq!(keep_share(0, 4096), None);
        assert_eq!(keep_share(1023, 4096), None);
        assert_eq!(keep_share(1024, 4096), Some(0.5));
        assert_eq!(keep_share(2048, 4096), Some(0.25));
        assert_eq!(keep_share(3072, 4096), Some(0.0));
        assert_eq!(keep_share(4096, 4096), Some(0.0));
        // A queue of one: an empty queue sheds nothing, a full one everything.
        assert_eq!(keep_share(0, 1), None);
        assert_eq!(keep_share(1, 1), Some(0.0));
    }
}
