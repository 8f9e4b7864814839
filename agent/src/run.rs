//! Watching processes: wires discovery, probes, capture, the engine (flows, packs, sinks) and
//! the recorder together, and takes them down again in order on SIGINT/SIGTERM or when every
//! watched process has exited.

use std::{
    sync::{
        Arc,
        atomic::{AtomicBool, Ordering},
    },
    time::{Duration, Instant},
};

use crate::{
    capture::{
        Record,
        discovery::{self, DiscoveryError, TlsLibrary},
        probes::{ExecReports, LoadOptions, ProbeError, Probes},
        reader::{self, CaptureStats, Delivery},
        watch::{Mode, Watcher},
    },
    clock::Clock,
    config::{ProbeSet, WatchConfig},
    engine::{Engine, EngineError},
    flows::pods::{Kubelet, Pods},
    packs::{self, Backpressure},
    privileges, procfs,
    record::{RecordError, Recorder},
    sinks::{Export, ExportError},
    stats::{self, Counters},
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
    /// The packs could not be loaded.
    #[error(transparent)]
    Packs(#[from] packs::LoadError),
    /// eBPF load or attach failed.
    #[error(transparent)]
    Probes(#[from] ProbeError),
    /// The stages after capture could not start.
    #[error(transparent)]
    Engine(#[from] EngineError),
    /// The `--record` directory could not be set up.
    #[error("recording: {0}")]
    Record(#[from] RecordError),
    /// The signal handlers could not be installed.
    #[error("installing a signal handler: {0}")]
    Signals(std::io::Error),
    /// The metrics or health endpoints or the export runtime could not start.
    #[error(transparent)]
    Export(#[from] ExportError),
}

/// Says which of the capabilities the agent needs it lacks: it may still start (a process of
/// the same user, a library every process can read), but will miss what needs them.
fn warn_missing_capabilities() {
    let Some(mask) = privileges::effective() else {
        return;
    };
    for cap in privileges::missing_at_start(mask) {
        tracing::warn!(
            capability = cap.name(),
            "missing capability {cap}, needed {}: run the agent as root or grant it",
            cap.purpose()
        );
    }
}

/// Watches the processes of `config` until a signal arrives or they have all exited.
///
/// # Errors
/// A [`RunError`] when anything needed to start is missing; once running, problems are logged
/// and counted instead.
pub fn run(config: &WatchConfig) -> Result<(), RunError> {
    if config.pids.is_empty() && !config.all {
        return Err(RunError::NoTargets);
    }
    warn_missing_capabilities();
    // Cheap checks first, so a typo fails before anything is loaded.
    let mut targets: Vec<(u32, Vec<TlsLibrary>)> = Vec::new();
    let mut waiting = Vec::new();
    let mut unsupported_roots = Vec::new();
    for &pid in &config.pids {
        match discovery::find_tls_libraries(pid) {
            Ok(libs) => targets.push((pid, libs)),
            // A process that loads its TLS library later (`import ssl`, `dlopen`), or a
            // supervisor whose children are followed.
            Err(DiscoveryError::NoTlsLibrary { .. }) if !config.require_tls => {
                tracing::info!(pid, comm = %procfs::process_name(pid), follow = config.follow, "no TLS library loaded yet: waiting for one (--require-tls exits instead)");
                waiting.push(pid);
            }
            // Said (once per program) and counted by the watcher; its children are followed.
            Err(e @ DiscoveryError::Unsupported { .. }) if config.follow => {
                waiting.push(pid);
                unsupported_roots.push(e);
            }
            Err(e) => return Err(e.into()),
        }
    }
    // Endpoints first: a port in use fails now, and the health endpoints answer during start-up.
    let export = Export::start(&config.output, &config.serve)?;
    let packs = packs::LivePacks::new(packs::load_packs(&config.packs)?);
    export.packs_loaded(&packs);
    // Packs reload without a restart; without a watch (an unusual filesystem), they stay as
    // loaded.
    let _watch = packs::packs_dir(&config.packs)
        .ok()
        .and_then(|dir| {
            packs::watch(&dir, packs::runtime_config(&config.packs), Arc::clone(&packs))
                .map_err(|e| tracing::warn!(dir = %dir.display(), error = %e, "cannot watch the packs directory: packs will not reload"))
                .ok()
        });
    let clock = Clock::new();
    let recorder = match &config.record {
        Some(dir) => Some(Recorder::start(
            dir,
            i64::try_from(clock.offset_ns()).unwrap_or(0),
        )?),
        None => None,
    };

    // The pack stage first, so its instances are ready before the probes fire.
    let mut engine = Engine::start(
        &packs,
        config.flows,
        &config.packs,
        &config.output,
        &export.context(),
        clock,
        Backpressure::Drop,
    )?;
    if let Some(kubelet) = &config.kubelet {
        match Kubelet::new(kubelet.clone()) {
            Ok(client) => {
                tracing::info!(url = %kubelet.url, "naming pods from the kubelet");
                engine.flows_mut().set_pods(Pods::watch(client));
            }
            Err(e) => {
                tracing::warn!(error = %e, "kubelet client not started: lines carry pod UIDs and container ids without names")
            }
        }
    }
    let real = config.probe_set == ProbeSet::Capture;
    let mut probes = Probes::load(LoadOptions {
        trace_all: config.all,
        ringbuf_bytes: config.ringbuf_size,
        empty: !real,
        socket_fds: real,
        report_exec: match (real, config.all || config.follow) {
            (false, _) => ExecReports::Off,
            (true, true) => ExecReports::All,
            (true, false) => ExecReports::Traced,
        },
    })?;
    for (pid, libs) in &targets {
        for lib in libs {
            let n = probes.attach(*pid, lib)?;
            tracing::info!(pid, comm = %procfs::process_name(*pid), stack = lib.provider.name, library = %lib.path.display(), flavour = ?lib.flavour, probes = n, "attached");
        }
    }
    let mode = if config.all {
        Mode::All
    } else {
        Mode::Pids {
            follow: config.follow,
        }
    };
    let mut watcher = Watcher::new(mode, &config.pids, &probes.attached_pids());
    for e in &unsupported_roots {
        watcher.unsupported(e);
    }
    let watch_stats = watcher.stats();
    if config.all {
        watcher.start_all(&mut probes)?;
    }
    for pid in waiting {
        watcher.wait_for(&mut probes, pid)?;
    }
    for pid in watcher
        .take_found()
        .into_iter()
        .chain(targets.iter().map(|(pid, _)| *pid))
    {
        engine.flows_mut().note_process(pid);
    }
    export.health().probes_loaded();
    let ring = probes.take_ring()?;
    let kernel = probes.take_counters()?;
    let attach_stats = Arc::clone(probes.stats());
    let capture = Arc::new(CaptureStats::default());

    let stop = Arc::new(AtomicBool::new(false));
    for sig in [signal_hook::consts::SIGINT, signal_hook::consts::SIGTERM] {
        signal_hook::flag::register(sig, Arc::clone(&stop)).map_err(RunError::Signals)?;
    }

    tracing::info!(pids = ?watcher.watched(), all = config.all, follow = config.follow, packs = packs.current().packs().len(), workers = config.packs.workers.max(1), "ready");

    export.health().capturing();
    // What start-up parsed (ELF files, BTF, the eBPF object, pack modules) is freed by now.
    trim_heap();
    let mut last_check = Instant::now();
    let mut last_stats = Instant::now();
    let stop_flag = Arc::clone(&stop);
    reader::run(ring, &stop_flag, &capture, |delivery| match delivery {
        Delivery::Record(record @ Record::CodeChanged { tgid, .. }) => {
            watcher.code_changed(tgid, Instant::now());
            engine.handle(record);
        }
        Delivery::Record(record) => match &recorder {
            // The recorder gets the record with what the flows stage then knows about its
            // connection (fd, addresses, server name, cgroup).
            Some(recorder) => {
                let copy = record.clone();
                engine.handle(record);
                recorder.record(copy, engine.flows());
            }
            None => engine.handle(record),
        },
        Delivery::Idle => {
            // The ring is drained: what this drain made goes to the pack workers together.
            engine.flush();
            export.health().beat();
            if let Err(e) = watcher.examine_due(&mut probes, Instant::now()) {
                tracing::warn!(error = %e, "attaching to a new process failed");
            }
            for pid in watcher.take_found() {
                engine.flows_mut().note_process(pid);
            }
            if last_check.elapsed() >= Duration::from_secs(1) {
                last_check = Instant::now();
                if engine.evict_idle(Clock::monotonic_now()) > 0 {
                    trim_heap();
                }
                if let Err(e) = watcher.tick(&mut probes) {
                    tracing::warn!(error = %e, "attaching to a new process failed");
                }
                for pid in watcher.take_found() {
                    engine.flows_mut().note_process(pid);
                }
                if watcher.is_done() {
                    tracing::info!("every watched process has exited; stopping");
                    stop.store(true, Ordering::Release);
                }
                export.publish(
                    &[&*capture, &engine, &kernel, &*attach_stats],
                    probes.attached_pids().len(),
                );
            }
            if !config.stats_interval.is_zero() && last_stats.elapsed() >= config.stats_interval {
                last_stats = Instant::now();
                log_stats(
                    "stats",
                    &[&*capture, &*watch_stats, &engine, &kernel, &*attach_stats],
                    &packs.current(),
                    false,
                );
            }
        }
    });
    export.health().stopping();
    let engine_final = engine.finish(Clock::monotonic_now());
    if let Some(recorder) = recorder {
        recorder.finish();
    }
    log_stats(
        "summary",
        &[
            &*capture,
            &*watch_stats,
            &engine_final,
            &kernel,
            &*attach_stats,
        ],
        &packs.current(),
        true,
    );
    drop(probes);
    export.shutdown();
    Ok(())
}

/// Hands the allocator's free pages back to the kernel. glibc's `free` gives back only the top
/// of a heap, so the buffers of connections gone quiet, freed in the middle of it, would stay
/// resident; this walks the free lists once (well under a millisecond for the agent's heaps).
fn trim_heap() {
    #[cfg(target_env = "gnu")]
    // SAFETY: malloc_trim only walks and releases the allocator's own free memory.
    unsafe {
        libc::malloc_trim(0);
    }
}

/// The stats line, then a line per pack (every pack in the summary, only failing ones before).
fn log_stats(
    what: &str,
    sets: &[&dyn Counters],
    packs: &taskless_pack_runtime::PackSet,
    summary: bool,
) {
    stats::log(what, sets);
    packs::log_pack_stats(packs, summary);
}
