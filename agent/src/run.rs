//! Watching processes: wires discovery, probes, capture, flows, the pack stage and the sink
//! together, and takes them down again in order on SIGINT/SIGTERM or when every watched process
//! has exited.

use std::{
    path::{Path, PathBuf},
    sync::{
        Arc,
        atomic::{AtomicBool, Ordering},
    },
    time::{Duration, Instant},
};

use agent_common::Counter;
use taskless_pack_runtime::{PackSet, RuntimeConfig, RuntimeError};

use crate::{
    capture::{self, CaptureStats, Delivery, Record},
    cli::{PackArgs, ProbeSet, RunArgs},
    clock::Clock,
    discovery::{self, DiscoveryError, TlsLibrary},
    engine::{Backpressure, Engine},
    flows::FlowStats,
    pipeline::{self, PipelineStats},
    probes::{KernelCounters, LoadOptions, ProbeError, Probes},
    record::Recorder,
    watch::{Mode, Watcher},
};

/// Why the agent could not start.
#[derive(Debug, thiserror::Error)]
pub enum RunError {
    /// Nothing to watch.
    #[error("no process to watch: pass --pid PID (repeat it for several processes) or --all")]
    NoTargets,
    /// Discovery failed for a process.
    #[error(transparent)]
    Discovery(#[from] DiscoveryError),
    /// The packs directory is missing or unusable.
    #[error("packs directory {path}: {reason}")]
    Packs {
        /// The directory.
        path: PathBuf,
        /// Why.
        reason: String,
    },
    /// No `--packs` and no shipped packs found.
    #[error(
        "no --packs given and no packs shipped beside the agent (looked in {looked}); pass --packs DIR"
    )]
    NoDefaultPacks {
        /// Where it looked.
        looked: String,
    },
    /// eBPF load or attach failed.
    #[error(transparent)]
    Probes(#[from] ProbeError),
    /// The pack stage could not start.
    #[error(transparent)]
    Pipeline(#[from] pipeline::PipelineError),
    /// The `--record` directory could not be set up.
    #[error("recording: {0}")]
    Record(#[from] crate::record::RecordError),
    /// A thread or signal handler could not be set up.
    #[error("{0}")]
    Setup(String),
}

/// Where the shipped packs are looked for when `--packs` is not given, relative to the
/// executable: beside it, one level up (`target/packs` for a development build), and the
/// conventional install location.
fn default_packs_candidates() -> Vec<PathBuf> {
    let mut v = Vec::new();
    if let Some(dir) = std::env::current_exe()
        .ok()
        .and_then(|e| e.parent().map(Path::to_path_buf))
    {
        v.push(dir.join("packs"));
        if let Some(up) = dir.parent() {
            v.push(up.join("packs"));
            v.push(up.join("share/taskless-agent/packs"));
        }
    }
    v.push(PathBuf::from("/usr/share/taskless-agent/packs"));
    v
}

fn resolve_packs_dir(given: Option<&Path>) -> Result<PathBuf, RunError> {
    if let Some(p) = given {
        if !p.is_dir() {
            return Err(RunError::Packs {
                path: p.to_path_buf(),
                reason: if p.exists() {
                    "not a directory".into()
                } else {
                    "does not exist".into()
                },
            });
        }
        return Ok(p.to_path_buf());
    }
    let candidates = default_packs_candidates();
    candidates
        .iter()
        .find(|p| p.is_dir())
        .cloned()
        .ok_or_else(|| RunError::NoDefaultPacks {
            looked: candidates
                .iter()
                .map(|p| p.display().to_string())
                .collect::<Vec<_>>()
                .join(", "),
        })
}

/// The runtime configuration from the command line.
#[must_use]
pub fn runtime_config(args: &PackArgs) -> RuntimeConfig {
    RuntimeConfig {
        timeout: Duration::from_millis(args.pack_timeout_ms),
        memory_max_pages: args.pack_memory_mib.saturating_mul(16),
        cache_dir: Some(args.state_dir.join("compile-cache")),
        ..RuntimeConfig::default()
    }
}

/// Loads the packs, logging each one and each refusal.
///
/// # Errors
/// When the directory is unusable.
pub fn load_packs(args: &PackArgs) -> Result<Arc<PackSet>, RunError> {
    let dir = resolve_packs_dir(args.packs.as_deref())?;
    let started = Instant::now();
    let mut config = runtime_config(args);
    let loaded = match PackSet::load_dir(&dir, &config) {
        Err(RuntimeError::Cache { path, reason }) => {
            tracing::warn!(path = %path.display(), %reason, "compile cache unusable; compiling packs in memory");
            config.cache_dir = None;
            PackSet::load_dir(&dir, &config)
        }
        other => other,
    };
    let (set, refused) = loaded.map_err(|e| RunError::Packs {
        path: dir.clone(),
        reason: e.to_string(),
    })?;
    for e in &refused {
        tracing::warn!(dir = %e.dir.display(), pack = e.pack.as_deref().unwrap_or("?"), reason = %e.reason, "pack refused");
    }
    if set.packs().is_empty() {
        tracing::warn!(dir = %dir.display(), "no packs loaded: output lines will carry no dimensions");
    }
    tracing::debug!(elapsed_ms = started.elapsed().as_millis(), "packs compiled");
    Ok(Arc::new(set))
}

struct Stats {
    capture: Arc<CaptureStats>,
    flows: Arc<FlowStats>,
    pipeline: Arc<PipelineStats>,
    kernel: KernelCounters,
    packs: Arc<PackSet>,
}

impl Stats {
    fn log(&self, what: &str) {
        use std::sync::atomic::Ordering::Relaxed;
        let k = self.kernel.read();
        let kv = |c: Counter| k[c as usize];
        tracing::info!(
            records = self.capture.records.load(Relaxed),
            bytes = self.capture.bytes.load(Relaxed),
            undecodable = self.capture.undecodable.load(Relaxed),
            connections = self.flows.connections.load(Relaxed),
            exchanges = self.pipeline.exchanges.load(Relaxed),
            incomplete = self.flows.incomplete.load(Relaxed),
            resyncs = self.flows.resyncs.load(Relaxed),
            skipped_bytes = self.flows.skipped_bytes.load(Relaxed),
            lost_bytes = self.flows.lost_bytes.load(Relaxed),
            connections_without_fd = self.flows.without_fd.load(Relaxed),
            addresses_unresolved = self.flows.unresolved.load(Relaxed),
            dropped_jobs = self.pipeline.dropped_jobs.load(Relaxed),
            orphan_jobs = self.pipeline.orphan_jobs.load(Relaxed),
            kernel_calls = kv(Counter::Calls),
            kernel_ringbuf_full = kv(Counter::RingbufFull),
            kernel_read_failed = kv(Counter::ReadFailed),
            kernel_unmatched_return = kv(Counter::UnmatchedReturn),
            kernel_truncated_calls = kv(Counter::TruncatedCalls),
            "{what}"
        );
        for p in self.packs.stats() {
            let failures = p.failures_total();
            if failures > 0 || what == "summary" {
                tracing::info!(pack = %p.pack, calls = p.calls, skipped_domain = p.skipped_domain, failures, "pack stats");
            }
        }
    }
}

/// Watches the processes of `args` until a signal arrives or they have all exited.
///
/// # Errors
/// A [`RunError`] when anything needed to start is missing; once running, problems are logged
/// and counted instead.
pub fn run(args: &RunArgs) -> Result<(), RunError> {
    if args.pids.is_empty() && !args.all {
        return Err(RunError::NoTargets);
    }
    // Cheap checks first, so a typo fails before anything is loaded.
    let mut targets: Vec<(u32, Vec<TlsLibrary>)> = Vec::new();
    for &pid in &args.pids {
        match discovery::find_tls_libraries(pid, &crate::probes::symbols()) {
            Ok(libs) => targets.push((pid, libs)),
            // A supervisor or shell without TLS is fine when its children are followed.
            Err(DiscoveryError::NoTlsLibrary { .. }) if args.follow => {
                tracing::info!(pid, comm = %discovery::process_name(pid), "no TLS library; watching its children");
            }
            Err(e) => return Err(e.into()),
        }
    }
    let packs = load_packs(&args.pack)?;
    let clock = Clock::new();
    let recorder = match &args.record {
        Some(dir) => Some(Recorder::start(
            dir,
            i64::try_from(clock.offset_ns()).unwrap_or(0),
        )?),
        None => None,
    };

    // The pack stage first, so its instances are ready before the probes fire.
    let mut engine = Engine::start(&packs, &args.pack, clock, Backpressure::Drop)?;
    let mut probes = Probes::load(LoadOptions {
        trace_all: args.all,
        ringbuf_bytes: args.ringbuf_size,
        table: match args.probe_set {
            ProbeSet::Openssl => crate::probes::OPENSSL,
            ProbeSet::Empty => crate::probes::EMPTY,
        },
        socket_fds: args.probe_set == ProbeSet::Openssl,
        report_exec: args.probe_set == ProbeSet::Openssl && (args.all || args.follow),
    })?;
    for (pid, libs) in &targets {
        for lib in libs {
            let n = probes.attach(*pid, lib)?;
            tracing::info!(pid, comm = %discovery::process_name(*pid), library = %lib.path.display(), flavour = ?lib.flavour, probes = n, "attached");
        }
    }
    let mode = if args.all {
        Mode::All
    } else {
        Mode::Pids {
            follow: args.follow,
        }
    };
    let mut watcher = Watcher::new(mode, &args.pids, &probes.attached_pids());
    if args.all {
        watcher.start_all(&mut probes)?;
    }
    let ring = probes.take_ring()?;
    let stats = Stats {
        capture: Arc::new(CaptureStats::default()),
        flows: Arc::clone(&engine.flow_stats),
        pipeline: Arc::clone(&engine.pipeline_stats),
        kernel: probes.take_counters()?,
        packs: Arc::clone(&packs),
    };

    let stop = Arc::new(AtomicBool::new(false));
    for sig in [signal_hook::consts::SIGINT, signal_hook::consts::SIGTERM] {
        signal_hook::flag::register(sig, Arc::clone(&stop))
            .map_err(|e| RunError::Setup(format!("installing a signal handler: {e}")))?;
    }

    tracing::info!(pids = ?watcher.watched(), all = args.all, follow = args.follow, packs = packs.packs().len(), workers = args.pack.workers.max(1), "ready");

    let mut last_check = Instant::now();
    let mut last_stats = Instant::now();
    let stats_every = Duration::from_secs(args.stats_interval);
    let stop_flag = Arc::clone(&stop);
    capture::run(
        ring,
        &stop_flag,
        &stats.capture,
        |delivery| match delivery {
            Delivery::Record(Record::CodeChanged { tgid }) => {
                watcher.code_changed(tgid, Instant::now());
            }
            Delivery::Record(record) => match &recorder {
                // The recorder gets the record with what the flows stage then knows about its
                // connection (fd, addresses, server name, cgroup).
                Some(recorder) => {
                    let copy = record.clone();
                    engine.handle(record);
                    recorder.record(copy, engine.flows_mut());
                }
                None => engine.handle(record),
            },
            Delivery::Idle => {
                if let Err(e) = watcher.examine_due(&mut probes, Instant::now()) {
                    tracing::warn!(error = %e, "attaching to a new process failed");
                }
                if last_check.elapsed() >= Duration::from_secs(1) {
                    last_check = Instant::now();
                    engine.evict_idle(Clock::monotonic_now());
                    if let Err(e) = watcher.tick(&mut probes) {
                        tracing::warn!(error = %e, "attaching to a new process failed");
                    }
                    if watcher.is_done() {
                        tracing::info!("every watched process has exited; stopping");
                        stop.store(true, Ordering::Release);
                    }
                }
                if !stats_every.is_zero() && last_stats.elapsed() >= stats_every {
                    last_stats = Instant::now();
                    stats.log("stats");
                }
            }
        },
    );
    engine.finish(Clock::monotonic_now());
    if let Some(recorder) = recorder {
        recorder.finish();
    }
    stats.log("summary");
    drop(probes);
    Ok(())
}
