//! `taskless-agent replay`: runs the packs offline over a recording made with `--record`, or
//! over a HAR file, through the same flows stage, pack workers and sink as watching. Needs
//! neither root nor eBPF. Nothing is dropped: the reader waits for the pack workers.

use std::{
    path::{Path, PathBuf},
    sync::Arc,
    time::Instant,
};

use taskless_http::har::HarError;

use crate::{
    cli::ReplayArgs,
    clock::Clock,
    engine::{Backpressure, Engine},
    flows::ConnMeta,
    pipeline::{ExchangeKey, Job},
    record::{Player, RecordError, Recording},
    run::{self, RunError},
};

/// Why a replay could not run.
#[derive(Debug, thiserror::Error)]
pub enum ReplayError {
    /// The recording could not be read.
    #[error(transparent)]
    Recording(#[from] RecordError),
    /// The HAR file could not be read.
    #[error("{path}: {source}")]
    HarRead {
        /// The file.
        path: PathBuf,
        /// The cause.
        source: std::io::Error,
    },
    /// The HAR file is not a HAR document.
    #[error("{path}: {source}")]
    Har {
        /// The file.
        path: PathBuf,
        /// The cause.
        source: HarError,
    },
    /// The packs or the pipeline could not start.
    #[error(transparent)]
    Run(#[from] RunError),
}

/// Runs `args`' recording or HAR file through the packs, printing one NDJSON line per exchange.
///
/// # Errors
/// A [`ReplayError`] when the input or the packs cannot be loaded.
pub fn replay(args: &ReplayArgs) -> Result<(), ReplayError> {
    use std::sync::atomic::Ordering::Relaxed;
    let started = Instant::now();
    let (engine, end_ns) = match (&args.har, &args.dir) {
        (Some(path), _) => replay_har(path, args)?,
        (None, Some(dir)) => replay_dir(dir, args)?,
        // clap requires one of the two.
        (None, None) => return Ok(()),
    };
    let flows = Arc::clone(&engine.flow_stats);
    let pipeline = Arc::clone(&engine.pipeline_stats);
    engine.finish(end_ns);
    tracing::info!(
        connections = flows.connections.load(Relaxed),
        exchanges = pipeline.exchanges.load(Relaxed),
        incomplete = flows.incomplete.load(Relaxed),
        resyncs = flows.resyncs.load(Relaxed),
        lost_bytes = flows.lost_bytes.load(Relaxed),
        orphan_jobs = pipeline.orphan_jobs.load(Relaxed),
        elapsed_ms = started.elapsed().as_millis(),
        "replay done"
    );
    Ok(())
}

/// Plays a recording, in timestamp order, through a fresh engine whose clock has the
/// recording's Unix offset; each exchange gets the identity (`source`) the recording holds for
/// its connection. Returns the engine and the last timestamp.
fn replay_dir(dir: &Path, args: &ReplayArgs) -> Result<(Engine, u64), ReplayError> {
    let recording = Recording::read_dir(dir)?;
    let packs = run::load_packs(&args.pack)?;
    let offset = recording.unix_offset_ns();
    let mut engine = Engine::start(
        &packs,
        &args.pack,
        Clock::with_offset(i128::from(offset)),
        Backpressure::Wait,
    )?;
    for c in &recording.connections {
        if c.meta.unix_offset_ns != offset {
            tracing::warn!(path = %c.path.display(), "file made by another run (different clock offset)");
        }
        engine
            .flows_mut()
            .set_process_name(c.meta.pid, c.meta.comm.clone());
    }
    tracing::info!(dir = %dir.display(), connections = recording.connections.len(), packs = packs.packs().len(), "replaying");
    let mut player = Player::new(&recording);
    let mut jobs = Vec::new();
    for moment in recording.moments() {
        player.step(moment, engine.flows_mut(), &mut |job| jobs.push(job));
        for job in jobs.drain(..) {
            engine.dispatch(job);
        }
    }
    player.finish(engine.flows_mut(), &mut |job| jobs.push(job));
    for job in jobs.drain(..) {
        engine.dispatch(job);
    }
    Ok((engine, player.end_ns()))
}

/// Sends every exchange of a HAR file to the packs as a request moment and then a complete
/// moment. HAR timestamps are already Unix time, so the clock's offset is zero.
fn replay_har(path: &Path, args: &ReplayArgs) -> Result<(Engine, u64), ReplayError> {
    let text = std::fs::read_to_string(path).map_err(|source| ReplayError::HarRead {
        path: path.to_path_buf(),
        source,
    })?;
    let exchanges = taskless_http::har::exchanges_from_har_str(&text, args.pack.max_body).map_err(
        |source| ReplayError::Har {
            path: path.to_path_buf(),
            source,
        },
    )?;
    let packs = run::load_packs(&args.pack)?;
    let engine = Engine::start(
        &packs,
        &args.pack,
        Clock::with_offset(0),
        Backpressure::Wait,
    )?;
    tracing::info!(file = %path.display(), exchanges = exchanges.len(), packs = packs.packs().len(), "replaying HAR");
    let meta = Arc::new(ConnMeta {
        pid: 0,
        comm: "har".into(),
        ..ConnMeta::default()
    });
    for (i, exchange) in exchanges.into_iter().enumerate() {
        // Each entry is its own connection, so entries spread over the workers.
        let key = ExchangeKey {
            conn: i as u64 + 1,
            id: exchange.id,
        };
        engine.dispatch(Job::Request {
            key,
            request: Arc::clone(&exchange.request),
            meta: Arc::clone(&meta),
        });
        engine.dispatch(Job::Complete {
            key,
            exchange: Box::new(exchange),
            meta: Arc::clone(&meta),
        });
    }
    Ok((engine, 0))
}
