//! `taskless-agent replay`: runs the packs offline over a recording made with `--record`, or
//! over a HAR file, through the same flows stage, pack workers and sink as watching. Needs
//! neither root nor eBPF. Nothing is dropped: the reader waits for the pack workers.

use std::{
    path::{Path, PathBuf},
    sync::Arc,
    time::Instant,
};

use taskless_http::har::{HarEntry, HarError};

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

/// Sends every exchange of a HAR file to the packs with the moments a live capture would have
/// given them: the request, the response head, each response body piece (one per server-sent
/// event for a `text/event-stream` body, else the whole body) and the complete exchange. HAR
/// timestamps are already Unix time, so the clock's offset is zero.
fn replay_har(path: &Path, args: &ReplayArgs) -> Result<(Engine, u64), ReplayError> {
    let text = std::fs::read_to_string(path).map_err(|source| ReplayError::HarRead {
        path: path.to_path_buf(),
        source,
    })?;
    let entries =
        taskless_http::har::entries_from_har_str(&text, args.pack.max_body).map_err(|source| {
            ReplayError::Har {
                path: path.to_path_buf(),
                source,
            }
        })?;
    let packs = run::load_packs(&args.pack)?;
    let engine = Engine::start(
        &packs,
        &args.pack,
        Clock::with_offset(0),
        Backpressure::Wait,
    )?;
    tracing::info!(file = %path.display(), exchanges = entries.len(), packs = packs.packs().len(), "replaying HAR");
    let meta = Arc::new(ConnMeta {
        pid: 0,
        comm: "har".into(),
        ..ConnMeta::default()
    });
    for (i, entry) in entries.into_iter().enumerate() {
        // Each entry is its own connection, so entries spread over the workers.
        let conn = i as u64 + 1;
        for job in har_jobs(entry, conn, &meta) {
            engine.dispatch(job);
        }
    }
    Ok((engine, 0))
}

/// The pack stage's jobs for one HAR entry on connection `conn`, in the order a live capture
/// makes them.
fn har_jobs(entry: HarEntry, conn: u64, meta: &Arc<ConnMeta>) -> Vec<Job> {
    let HarEntry {
        exchange,
        response_pieces,
    } = entry;
    let key = ExchangeKey {
        conn,
        id: exchange.id,
    };
    let head = &exchange.response.head;
    let mut jobs = Vec::with_capacity(response_pieces.len() + 3);
    jobs.push(Job::Request {
        key,
        request: Arc::clone(&exchange.request),
        meta: Arc::clone(meta),
    });
    jobs.push(Job::response_head(key, head));
    jobs.extend(response_pieces.into_iter().map(|data| Job::ResponseBody {
        key,
        data: data.into(),
    }));
    jobs.push(Job::Complete {
        key,
        exchange: Box::new(exchange),
        meta: Arc::clone(meta),
    });
    jobs
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use taskless_http::har::entries_from_har_str;

    use super::har_jobs;
    use crate::{flows::ConnMeta, pipeline::Job};

    /// What the pack stage is asked to do for one job, in short.
    fn moment(job: &Job) -> String {
        match job {
            Job::Request { request, .. } => format!("pre {}", request.head.target),
            Job::ResponseHead {
                status, headers, ..
            } => format!("head {status} {}", headers.len()),
            Job::ResponseBody { data, .. } => {
                format!("chunk {}", String::from_utf8_lossy(data))
            }
            Job::Complete { exchange, .. } => {
                format!("post {}", exchange.response.body.total_len)
            }
            Job::Incomplete { .. } => "incomplete".into(),
        }
    }

    #[test]
    fn a_streamed_har_response_reaches_the_packs_one_event_at_a_time() {
        let stream = "data: {\"n\":1}\n\ndata: {\"n\":2}\n\ndata: [DONE]\n\n";
        let har = serde_json::json!({"log": {"entries": [
            {"startedDateTime": "2026-01-15T10:00:00Z",
             "request": {"method": "POST", "url": "https://api.openai.com/v1/chat/completions", "headers": []},
             "response": {"status": 200,
                          "headers": [{"name": "Content-Type", "value": "text/event-stream"},
                                      {"name": "Content-Length", "value": "52"}],
                          "content": {"mimeType": "text/event-stream", "text": stream}}},
            {"startedDateTime": "2026-01-15T10:00:01Z",
             "request": {"method": "GET", "url": "https://api.openai.com/v1/models", "headers": []},
             "response": {"status": 200, "headers": [{"name": "Content-Type", "value": "application/json"}],
                          "content": {"mimeType": "application/json", "text": "{\"data\":[]}"}}}
        ]}})
        .to_string();
        let meta = Arc::new(ConnMeta::default());
        // A kept body shorter than the stream: the pieces still carry all of it.
        let entries = entries_from_har_str(&har, 8).unwrap();
        let jobs: Vec<Vec<String>> = entries
            .into_iter()
            .zip(1..)
            .map(|(e, conn)| har_jobs(e, conn, &meta).iter().map(moment).collect())
            .collect();
        assert_eq!(
            jobs,
            [
                vec![
                    "pre /v1/chat/completions".to_owned(),
                    // content-length is removed, as for a captured decoded body.
                    "head 200 1".into(),
                    "chunk data: {\"n\":1}\n\n".into(),
                    "chunk data: {\"n\":2}\n\n".into(),
                    "chunk data: [DONE]\n\n".into(),
                    format!("post {}", stream.len()),
                ],
                vec![
                    "pre /v1/models".to_owned(),
                    "head 200 1".into(),
                    "chunk {\"data\":[]}".into(),
                    "post 11".into(),
                ],
            ]
        );
    }
}
