//! The stages after capture, shared by watching and `replay`: the flows stage (HTTP parser and
//! assembler per connection), the pack workers and the stdout sink.

use std::{sync::Arc, thread::JoinHandle};

use taskless_pack_runtime::PackSet;

use crate::{
    capture::Record,
    cli::PackArgs,
    clock::Clock,
    flows::{FlowStats, Flows},
    pipeline::{self, Dispatcher, Job, PipelineStats},
    run::RunError,
    sinks,
};

/// What to do with a job when its pack worker's queue is full.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Backpressure {
    /// Drop and count it: capture never waits (watching).
    Drop,
    /// Wait for room: nothing is lost (replay).
    Wait,
}

/// Flows, pack workers and sink, running.
pub struct Engine {
    flows: Flows,
    dispatcher: Dispatcher,
    workers: Vec<JoinHandle<()>>,
    sink: JoinHandle<()>,
    backpressure: Backpressure,
    /// Counters of the flows stage.
    pub flow_stats: Arc<FlowStats>,
    /// Counters of the pack stage.
    pub pipeline_stats: Arc<PipelineStats>,
}

impl Engine {
    /// Starts the sink and the pack workers; `clock` turns exchange timestamps into Unix time.
    ///
    /// # Errors
    /// When a thread or the packs' instances cannot be started.
    pub fn start(
        packs: &Arc<PackSet>,
        args: &PackArgs,
        clock: Clock,
        backpressure: Backpressure,
    ) -> Result<Self, RunError> {
        let flow_stats = Arc::new(FlowStats::default());
        let pipeline_stats = Arc::new(PipelineStats::default());
        let (out, sink) = sinks::stdout()
            .map_err(|e| RunError::Setup(format!("starting the output thread: {e}")))?;
        let (dispatcher, workers) = pipeline::start_with_clock(
            packs,
            args.workers,
            args.queue,
            &out,
            &pipeline_stats,
            clock,
        )?;
        drop(out);
        let http_config = taskless_http::Config {
            max_body: args.max_body,
            ..taskless_http::Config::default()
        };
        Ok(Self {
            flows: Flows::new(http_config, Arc::clone(&flow_stats)),
            dispatcher,
            workers,
            sink,
            backpressure,
            flow_stats,
            pipeline_stats,
        })
    }

    /// The flows stage (e.g. to name processes known from a recording).
    pub fn flows_mut(&mut self) -> &mut Flows {
        &mut self.flows
    }

    /// Hands a job straight to the pack stage (exchanges that did not come from bytes).
    pub fn dispatch(&self, job: Job) {
        send(&self.dispatcher, self.backpressure, job);
    }

    /// Feeds one captured record through the flows stage to the packs.
    pub fn handle(&mut self, record: Record) {
        let (dispatcher, bp) = (&self.dispatcher, self.backpressure);
        self.flows
            .handle(record, &mut |job| send(dispatcher, bp, job));
    }

    /// Closes idle connections and those of exited processes.
    pub fn evict_idle(&mut self, now_ns: u64) {
        let (dispatcher, bp) = (&self.dispatcher, self.backpressure);
        self.flows
            .evict_idle(now_ns, &mut |job| send(dispatcher, bp, job));
    }

    /// Closes every connection at `now_ns`, lets the workers finish and the sink write out.
    pub fn finish(mut self, now_ns: u64) {
        let (dispatcher, bp) = (&self.dispatcher, self.backpressure);
        self.flows
            .close_all(now_ns, &mut |job| send(dispatcher, bp, job));
        drop(self.dispatcher);
        for w in self.workers {
            let _ = w.join();
        }
        let _ = self.sink.join();
    }
}

fn send(dispatcher: &Dispatcher, backpressure: Backpressure, job: Job) {
    match backpressure {
        Backpressure::Drop => dispatcher.dispatch(job),
        Backpressure::Wait => dispatcher.dispatch_waiting(job),
    }
}
