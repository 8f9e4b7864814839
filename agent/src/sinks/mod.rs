//! The sink stage: where finished exchanges go.
//!
//! Takes: the pack stage's [`FinishedExchange`]s through a [`SinkSender`]. Gives: each to every
//! configured [`Sink`] (NDJSON on stdout or to a rotating file, the `pretty` console, OTLP, the
//! Prometheus exchange metrics), each sink on its own thread behind its own bounded queue. The
//! sender, on the pack worker's thread, hands every exchange (shared, not copied) to each sink's
//! queue: when a queue is full the exchange is dropped for that sink alone and counted
//! (`sink_<name>_dropped`), so a slow sink never stalls capture, the packs or the other sinks.
//! Replay waits instead.
//!
//! The export side (`serve.rs`: `/metrics`, `/healthz`, `/readyz`; `otlp/`) runs on a small
//! Tokio runtime of its own ([`ExportRuntime`]); nothing before this stage uses Tokio.

mod exchange;
mod export;
mod health;
mod highlights;
mod labels;
mod ndjson;
mod otlp;
mod pretty;
mod prometheus;
mod rotate;
mod runtime;
mod serve;

use std::{
    sync::{Arc, atomic::Ordering},
    thread::JoinHandle,
    time::{Duration, Instant},
};

use crossbeam_channel::{Receiver, RecvTimeoutError, Sender, TrySendError};

pub use exchange::ExchangeFacts;
pub use export::{Export, ExportError};
pub use health::Health;
pub use labels::LabelLimiter;
pub use ndjson::{NdjsonSink, to_line};
pub use otlp::{OtlpError, OtlpSink};
pub use pretty::PrettySink;
pub use prometheus::{AgentGauges, MetricsSink, Telemetry};
pub use rotate::RotatingFile;
pub use runtime::ExportRuntime;
pub use serve::{ServeError, Server};

use crate::{
    config::{Output, OutputConfig},
    packs::{Backpressure, FinishedExchange},
    stats::Counters,
};

/// How often an idle sink is given a [`Sink::tick`].
const TICK: Duration = Duration::from_millis(250);

/// Somewhere finished exchanges go. Each sink runs on its own thread.
pub trait Sink: Send {
    /// A short name for logs and counters (`sink_<name>_...`).
    fn name(&self) -> &'static str;
    /// Writes one exchange.
    ///
    /// # Errors
    /// When the destination is gone; the sink is then dropped (and the loss logged).
    fn write(&mut self, exchange: &FinishedExchange) -> std::io::Result<()>;
    /// Makes what was written visible; called whenever the sink's queue is empty.
    ///
    /// # Errors
    /// As [`Sink::write`].
    fn flush(&mut self) -> std::io::Result<()>;
    /// Called a few times a second, for periodic output (the pretty summary).
    ///
    /// # Errors
    /// As [`Sink::write`].
    fn tick(&mut self, _now: Instant) -> std::io::Result<()> {
        Ok(())
    }
    /// Counters of the sink's own (OTLP's export results), reported after the stage's.
    fn counters(&self) -> Option<Arc<dyn Counters + Send + Sync>> {
        None
    }
    /// The last call: every exchange has been written. Flush and shut down.
    fn finish(&mut self) {
        let _ = self.flush();
    }
}

crate::stats::counters! {
    /// What happened to the exchanges handed to one sink.
    pub struct SinkStats {
        /// Exchanges the sink wrote.
        written,
        /// Exchanges dropped because the sink's queue was full.
        dropped,
        /// Exchanges lost because the sink failed (its output closed).
        failed,
    }
}

struct Entry {
    name: &'static str,
    stats: Arc<SinkStats>,
    extra: Option<Arc<dyn Counters + Send + Sync>>,
}

/// The running sinks: one thread per sink, and the sender that feeds them.
pub struct SinkSet {
    sender: SinkSender,
    threads: Vec<JoinHandle<()>>,
    entries: Vec<Entry>,
    limiter: Arc<LabelLimiter>,
}

/// Why the sinks could not start.
#[derive(Debug, thiserror::Error)]
pub enum SinkError {
    /// A thread could not be started.
    #[error("starting an output thread: {0}")]
    Thread(std::io::Error),
    /// An output file could not be opened.
    #[error("output file {path}: {source}")]
    File {
        /// The file.
        path: std::path::PathBuf,
        /// The cause.
        source: std::io::Error,
    },
    /// Two outputs would both write to stdout.
    #[error(
        "only one output can write to stdout (pretty or ndjson); give the other a file: ndjson=FILE"
    )]
    TwoOnStdout,
    /// The OTLP output could not be set up.
    #[error(transparent)]
    Otlp(#[from] OtlpError),
}

/// What the sinks share with the rest of the export side.
pub struct ExportContext<'a> {
    /// The export runtime, for OTLP.
    pub runtime: Option<&'a ExportRuntime>,
    /// The Prometheus side, when `/metrics` is served: exchange metrics are then recorded.
    pub telemetry: Option<&'a Arc<Telemetry>>,
}

/// Builds the sinks `config` asks for.
fn build(
    config: &OutputConfig,
    context: &ExportContext<'_>,
    limiter: &Arc<LabelLimiter>,
) -> Result<Vec<Box<dyn Sink>>, SinkError> {
    let on_stdout = config
        .outputs
        .iter()
        .filter(|o| matches!(o, Output::Pretty | Output::Ndjson(None)))
        .count();
    if on_stdout > 1 {
        return Err(SinkError::TwoOnStdout);
    }
    let mut sinks: Vec<Box<dyn Sink>> = Vec::new();
    for output in &config.outputs {
        match output {
            Output::Ndjson(None) => sinks.push(Box::new(NdjsonSink::new(std::io::stdout()))),
            Output::Ndjson(Some(path)) => {
                let file = RotatingFile::open(path, config.file_max_bytes, config.file_keep)
                    .map_err(|source| SinkError::File {
                        path: path.clone(),
                        source,
                    })?;
                sinks.push(Box::new(NdjsonSink::to_file(file)));
            }
            Output::Pretty => sinks.push(Box::new(PrettySink::stdout(config.summary_interval))),
            Output::Otlp => {
                let runtime = context.runtime.ok_or(OtlpError::NoRuntime)?;
                sinks.push(Box::new(OtlpSink::start(
                    &config.otlp,
                    runtime,
                    Arc::clone(limiter),
                )?));
            }
        }
    }
    if let Some(telemetry) = context.telemetry {
        sinks.push(Box::new(MetricsSink::new(
            Arc::clone(telemetry),
            Arc::clone(limiter),
        )));
    }
    Ok(sinks)
}

impl SinkSet {
    /// Builds the sinks `config` asks for and starts a thread per sink.
    /// With [`Backpressure::Drop`] a full sink queue drops (and counts) the exchange for that
    /// sink; with [`Backpressure::Wait`] the sender waits for room (replay: nothing is lost).
    ///
    /// # Errors
    /// When an output file cannot be opened, two outputs claim stdout, OTLP cannot be set up,
    /// or a thread cannot be started.
    pub fn start(
        config: &OutputConfig,
        context: &ExportContext<'_>,
        backpressure: Backpressure,
    ) -> Result<Self, SinkError> {
        let limiter = Arc::new(LabelLimiter::new(config.max_label_values));
        let sinks = build(config, context, &limiter)?;
        Self::start_sinks(sinks, limiter, config.queue, backpressure)
    }

    /// Starts the given sinks (tests, benchmarks).
    ///
    /// # Errors
    /// When a thread cannot be started.
    pub fn start_sinks(
        sinks: Vec<Box<dyn Sink>>,
        limiter: Arc<LabelLimiter>,
        queue: usize,
        backpressure: Backpressure,
    ) -> Result<Self, SinkError> {
        let mut entries = Vec::new();
        let mut queues = Vec::new();
        let mut threads = Vec::new();
        for sink in sinks {
            let stats = Arc::new(SinkStats::default());
            let (tx, rx) = crossbeam_channel::bounded::<Arc<FinishedExchange>>(queue.max(1));
            entries.push(Entry {
                name: sink.name(),
                stats: Arc::clone(&stats),
                extra: sink.counters(),
            });
            let thread_stats = Arc::clone(&stats);
            threads.push(
                std::thread::Builder::new()
                    .name(format!("sink-{}", sink.name()))
                    .spawn(move || run_sink(sink, &rx, &thread_stats))
                    .map_err(SinkError::Thread)?,
            );
            queues.push((tx, stats));
        }
        Ok(Self {
            sender: SinkSender {
                queues: Arc::new(queues),
                backpressure,
            },
            threads,
            entries,
            limiter,
        })
    }

    /// Where the pack stage sends finished exchanges.
    #[must_use]
    pub fn sender(&self) -> &SinkSender {
        &self.sender
    }

    /// Names of the running sinks, in order.
    #[must_use]
    pub fn names(&self) -> Vec<&'static str> {
        self.entries.iter().map(|e| e.name).collect()
    }

    /// Waits until every exchange already sent has been written and every sink has finished.
    /// Other senders (the pack workers) must be gone first.
    pub fn finish(self) -> SinkCounters {
        let Self {
            sender,
            threads,
            entries,
            limiter,
        } = self;
        drop(sender);
        for t in threads {
            let _ = t.join();
        }
        SinkCounters(entries, limiter)
    }

    /// The counters of every sink, readable while they run.
    #[must_use]
    pub fn counters(&self) -> SinkCountersRef<'_> {
        SinkCountersRef(&self.entries, &self.limiter)
    }
}

/// The counters of finished sinks.
pub struct SinkCounters(Vec<Entry>, Arc<LabelLimiter>);

/// The counters of running sinks.
pub struct SinkCountersRef<'a>(&'a [Entry], &'a LabelLimiter);

fn report_entries(entries: &[Entry], limiter: &LabelLimiter, out: &mut Vec<(String, u64)>) {
    for e in entries {
        let mut own = Vec::new();
        e.stats.report(&mut own);
        out.extend(
            own.into_iter()
                .map(|(n, v)| (format!("sink_{}_{n}", e.name), v)),
        );
        if let Some(extra) = &e.extra {
            extra.report(out);
        }
    }
    if entries
        .iter()
        .any(|e| e.name == "otlp" || e.name == "metrics")
    {
        limiter.report(out);
    }
}

impl Counters for SinkCounters {
    fn report(&self, out: &mut Vec<(String, u64)>) {
        report_entries(&self.0, &self.1, out);
    }
}

impl Counters for SinkCountersRef<'_> {
    fn report(&self, out: &mut Vec<(String, u64)>) {
        report_entries(self.0, self.1, out);
    }
}

/// One sink's queue and its counters.
type SinkQueue = (Sender<Arc<FinishedExchange>>, Arc<SinkStats>);

/// Hands finished exchanges to every sink's queue, on the sending thread (a pack worker): no
/// thread in between to wake for each exchange. Clones share the queues; the sinks finish once
/// every clone is gone.
#[derive(Clone)]
pub struct SinkSender {
    queues: Arc<Vec<SinkQueue>>,
    backpressure: Backpressure,
}

impl SinkSender {
    /// Hands `exchange` (shared, not copied) to each sink's queue. A full queue drops it for
    /// that sink and counts it (`dropped`), or waits for room in replay; a sink whose thread
    /// has failed counts it as `failed`.
    pub fn send(&self, exchange: FinishedExchange) {
        let exchange = Arc::new(exchange);
        for (tx, stats) in self.queues.iter() {
            let sent = match self.backpressure {
                Backpressure::Drop => match tx.try_send(Arc::clone(&exchange)) {
                    Ok(()) => Ok(()),
                    Err(TrySendError::Full(_)) => {
                        stats.dropped.fetch_add(1, Ordering::Relaxed);
                        Ok(())
                    }
                    Err(TrySendError::Disconnected(_)) => Err(()),
                },
                Backpressure::Wait => tx.send(Arc::clone(&exchange)).map_err(|_| ()),
            };
            if sent.is_err() {
                // The sink failed and its thread is gone.
                stats.failed.fetch_add(1, Ordering::Relaxed);
            }
        }
    }
}

fn run_sink(mut sink: Box<dyn Sink>, rx: &Receiver<Arc<FinishedExchange>>, stats: &SinkStats) {
    let name = sink.name();
    let fail = |e: &std::io::Error| {
        tracing::error!(sink = name, error = %e, "output failed; its exchanges are being lost");
    };
    let mut last_tick = Instant::now();
    loop {
        match rx.recv_timeout(TICK) {
            Ok(exchange) => {
                let result = sink
                    .write(&exchange)
                    .and_then(|()| if rx.is_empty() { sink.flush() } else { Ok(()) });
                if let Err(e) = result {
                    stats.failed.fetch_add(1, Ordering::Relaxed);
                    fail(&e);
                    return;
                }
                stats.written.fetch_add(1, Ordering::Relaxed);
            }
            Err(RecvTimeoutError::Timeout) => {}
            Err(RecvTimeoutError::Disconnected) => break,
        }
        // Periodic work happens under load too, not only when the queue is idle.
        if last_tick.elapsed() >= TICK {
            last_tick = Instant::now();
            if let Err(e) = sink.tick(last_tick) {
                fail(&e);
                return;
            }
        }
    }
    sink.finish();
}

#[cfg(test)]
mod tests;
