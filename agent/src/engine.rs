//! The stages after capture, wired together for watching and `replay` alike: the flows stage,
//! the pack workers and the sinks.

use std::{sync::Arc, thread::JoinHandle};

use crate::{
    capture::Record,
    clock::Clock,
    config::{FlowConfig, OutputConfig, PackConfig},
    flows::{FlowStats, Flows, Moment},
    packs::{
        self, Backpressure, Dispatcher, LivePacks, PackStageError, PackStageStats, StageOptions,
    },
    sinks::{ExportContext, SinkError, SinkSet},
    stats::{Counters, Snapshot},
};

/// Why the stages after capture could not start.
#[derive(Debug, thiserror::Error)]
pub enum EngineError {
    /// The pack stage could not start.
    #[error(transparent)]
    Packs(#[from] PackStageError),
    /// The sinks could not start.
    #[error(transparent)]
    Sinks(#[from] SinkError),
}

/// Flows, pack workers and sinks, running.
pub struct Engine {
    flows: Flows,
    dispatcher: Dispatcher,
    workers: Vec<JoinHandle<()>>,
    sinks: SinkSet,
    /// Counters of the flows stage.
    pub flow_stats: Arc<FlowStats>,
    /// Counters of the pack stage.
    pub pack_stats: Arc<PackStageStats>,
}

impl Engine {
    /// Starts the sinks `output` asks for and the pack workers; `clock` turns exchange
    /// timestamps into Unix time.
    ///
    /// # Errors
    /// When a sink, a thread or the packs' instances cannot be started.
    pub fn start(
        packs: &Arc<LivePacks>,
        flows: FlowConfig,
        config: &PackConfig,
        output: &OutputConfig,
        export: &ExportContext<'_>,
        clock: Clock,
        backpressure: Backpressure,
    ) -> Result<Self, EngineError> {
        let flow_stats = Arc::new(FlowStats::default());
        let pack_stats = Arc::new(PackStageStats::default());
        let sinks = SinkSet::start(output, export, backpressure)?;
        tracing::debug!(outputs = ?sinks.names(), "outputs");
        let (dispatcher, workers) = packs::start(
            packs,
            &StageOptions {
                workers: config.workers,
                nice: config.nice,
                queue: config.queue,
                backpressure,
                cpu_budget: config.cpu_budget,
                clock,
            },
            sinks.sender(),
            &pack_stats,
        )?;
        let http_config = taskless_http::Config {
            max_body: config.max_body,
            ..taskless_http::Config::default()
        };
        Ok(Self {
            flows: Flows::new(http_config, flows.server_side, Arc::clone(&flow_stats)),
            dispatcher,
            workers,
            sinks,
            flow_stats,
            pack_stats,
        })
    }

    /// The flows stage (e.g. to name processes known from a recording).
    pub fn flows_mut(&mut self) -> &mut Flows {
        &mut self.flows
    }

    /// The flows stage, read only.
    #[must_use]
    pub fn flows(&self) -> &Flows {
        &self.flows
    }

    /// Hands a moment to the pack stage (exchanges that did not come from bytes).
    pub fn dispatch(&mut self, moment: Moment) {
        self.dispatcher.dispatch(moment);
    }

    /// Feeds one captured record through the flows stage to the packs.
    pub fn handle(&mut self, record: Record) {
        let dispatcher = &mut self.dispatcher;
        self.flows
            .handle(record, &mut |moment| dispatcher.dispatch(moment));
    }

    /// Hands the moments held since the last flush to the pack workers: call it whenever the
    /// input pauses (the capture loop does after each drain of the ring buffer).
    pub fn flush(&mut self) {
        self.dispatcher.flush();
    }

    /// Closes idle connections and those of exited processes; quiet ones give back their
    /// parsers' buffers. Says how many did.
    pub fn evict_idle(&mut self, now_ns: u64) -> usize {
        let dispatcher = &mut self.dispatcher;
        self.flows
            .evict_idle(now_ns, &mut |moment| dispatcher.dispatch(moment));
        self.flows.release_quiet(now_ns)
    }

    /// Closes every connection at `now_ns`, lets the workers finish and the sinks write out.
    /// Gives the final counters.
    pub fn finish(self, now_ns: u64) -> Snapshot {
        let Self {
            mut flows,
            mut dispatcher,
            workers,
            sinks,
            flow_stats,
            pack_stats,
        } = self;
        flows.close_all(now_ns, &mut |moment| dispatcher.dispatch(moment));
        // Dropping it hands on what it still holds.
        drop(dispatcher);
        for w in workers {
            let _ = w.join();
        }
        let sinks = sinks.finish();
        let mut values = Vec::new();
        report(&flow_stats, &flows, &pack_stats, &mut values);
        sinks.report(&mut values);
        Snapshot(values)
    }
}

/// The counters of the flows stage (and its `live_connections` gauge), the HTTP parsers
/// (`http_`), the pack stage and the sinks (`sink_`, `otlp_`).
impl Counters for Engine {
    fn report(&self, out: &mut Vec<(String, u64)>) {
        report(&self.flow_stats, &self.flows, &self.pack_stats, out);
        self.sinks.counters().report(out);
    }
}

fn report(
    flow_stats: &FlowStats,
    flows: &Flows,
    pack_stats: &PackStageStats,
    out: &mut Vec<(String, u64)>,
) {
    flow_stats.report(out);
    // A gauge, not a counter: the connections the flows stage holds state for right now.
    out.push(("live_connections".to_owned(), flows.len() as u64));
    // With `--kubelet`: how often the pods were asked for, and how often that failed (lines
    // then carry pod UIDs and container ids without names).
    if let Some(pods) = flows.pods() {
        for (name, v) in [
            ("kubelet_fetches", &pods.fetches),
            ("kubelet_failures", &pods.failures),
        ] {
            out.push((
                name.to_owned(),
                v.load(std::sync::atomic::Ordering::Relaxed),
            ));
        }
    }
    // The flows stage reports `resyncs` and `bytes_skipped` itself, as `resyncs` and
    // `skipped_bytes`.
    out.extend(
        flows
            .http_stats()
            .fields()
            .into_iter()
            .filter(|(name, _)| !matches!(name.as_str(), "resyncs" | "bytes_skipped"))
            .map(|(name, v)| (format!("http_{name}"), v)),
    );
    pack_stats.report(out);
}

#[cfg(test)]
mod tests {
    use std::sync::{Arc, atomic::Ordering};

    use super::*;
    use crate::flows::pods::Pods;

    #[test]
    fn the_kubelets_fetches_and_failures_are_in_the_stats_only_with_a_kubelet() {
        let flow_stats = FlowStats::default();
        let mut flows = Flows::new(
            taskless_http::Config::default(),
            false,
            Arc::new(FlowStats::default()),
        );
        let names = |flows: &Flows| {
            let mut out = Vec::new();
            report(&flow_stats, flows, &PackStageStats::default(), &mut out);
            out
        };
        assert!(!names(&flows).iter().any(|(n, _)| n.starts_with("kubelet_")));
        let pods = Arc::new(Pods::default());
        pods.fetches.store(3, Ordering::Relaxed);
        pods.failures.store(2, Ordering::Relaxed);
        flows.set_pods(pods);
        let out = names(&flows);
        assert!(out.contains(&("kubelet_fetches".to_owned(), 3)), "{out:?}");
        assert!(out.contains(&("kubelet_failures".to_owned(), 2)), "{out:?}");
    }
}
