//! `taskless-agent replay`: runs the packs offline over a recording made with `--record`, or
//! over a HAR file, through the same flows stage, pack workers and sink as watching. Needs
//! neither root nor eBPF. Nothing is dropped: the reader waits for the pack workers.

use std::{path::Path, sync::Arc, time::Instant};

use taskless_http::har::{HarEntry, HarError};

use crate::{
    clock::Clock,
    config::{ReplayConfig, ReplayInput, ServeConfig},
    engine::{Engine, EngineError},
    flows::{ExchangeKey, Identity, Moment},
    packs::{self, Backpressure},
    record::{Player, RecordError, Recording},
    sinks::{Export, ExportError},
    stats,
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
        path: std::path::PathBuf,
        /// The cause.
        source: std::io::Error,
    },
    /// The HAR file is not a HAR document.
    #[error("{path}: {source}")]
    Har {
        /// The file.
        path: std::path::PathBuf,
        /// The cause.
        source: HarError,
    },
    /// The packs could not be loaded.
    #[error(transparent)]
    Packs(#[from] packs::LoadError),
    /// The stages after capture could not start.
    #[error(transparent)]
    Engine(#[from] EngineError),
    /// The export runtime could not start.
    #[error(transparent)]
    Export(#[from] ExportError),
}

/// Runs the recording or HAR file of `config` through the packs, printing one NDJSON line per
/// exchange, then the summary of every counter.
///
/// # Errors
/// A [`ReplayError`] when the input or the packs cannot be loaded.
pub fn replay(config: &ReplayConfig) -> Result<(), ReplayError> {
    let started = Instant::now();
    let export = Export::start(&config.output, &ServeConfig::default())?;
    let (engine, end_ns) = match &config.input {
        ReplayInput::Har(path) => replay_har(path, config, &export)?,
        ReplayInput::Recording(dir) => replay_dir(dir, config, &export)?,
    };
    let counters = engine.finish(end_ns);
    stats::log("replay done", &[&counters]);
    export.shutdown();
    tracing::debug!(elapsed_ms = started.elapsed().as_millis(), "replay time");
    Ok(())
}

/// Plays a recording, in timestamp order, through a fresh engine whose clock has the
/// recording's Unix offset; each exchange gets the identity (`source`) the recording holds for
/// its connection. Returns the engine and the last timestamp.
fn replay_dir(
    dir: &Path,
    config: &ReplayConfig,
    export: &Export,
) -> Result<(Engine, u64), ReplayError> {
    let recording = Recording::read_dir(dir)?;
    let packs = packs::load_packs(&config.packs)?;
    let offset = recording.unix_offset_ns();
    let mut engine = Engine::start(
        &packs::LivePacks::new(Arc::clone(&packs)),
        config.flows,
        &config.packs,
        &config.output,
        &export.context(),
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
    let mut moments = Vec::new();
    for step in recording.moments() {
        player.step(step, engine.flows_mut(), &mut |m| moments.push(m));
        for m in moments.drain(..) {
            engine.dispatch(m);
        }
    }
    player.finish(engine.flows_mut(), &mut |m| moments.push(m));
    for m in moments.drain(..) {
        engine.dispatch(m);
    }
    Ok((engine, player.end_ns()))
}

/// Sends every exchange of a HAR file to the packs with the moments a live capture would have
/// given them: the request, the response head, each response body piece (one per server-sent
/// event for a `text/event-stream` body, else the whole body) and the complete exchange. HAR
/// timestamps are already Unix time, so the clock's offset is zero.
fn replay_har(
    path: &Path,
    config: &ReplayConfig,
    export: &Export,
) -> Result<(Engine, u64), ReplayError> {
    let text = std::fs::read_to_string(path).map_err(|source| ReplayError::HarRead {
        path: path.to_path_buf(),
        source,
    })?;
    let entries = taskless_http::har::entries_from_har_str(&text, config.packs.max_body).map_err(
        |source| ReplayError::Har {
            path: path.to_path_buf(),
            source,
        },
    )?;
    let packs = packs::load_packs(&config.packs)?;
    let mut engine = Engine::start(
        &packs::LivePacks::new(Arc::clone(&packs)),
        config.flows,
        &config.packs,
        &config.output,
        &export.context(),
        Clock::with_offset(0),
        Backpressure::Wait,
    )?;
    tracing::info!(file = %path.display(), exchanges = entries.len(), packs = packs.packs().len(), "replaying HAR");
    let identity = Arc::new(Identity {
        pid: 0,
        process: "har".into(),
        ..Identity::default()
    });
    for (i, entry) in entries.into_iter().enumerate() {
        // Each entry is its own connection, so entries spread over the workers.
        let conn = i as u64 + 1;
        for moment in har_moments(entry, conn, &identity) {
            engine.dispatch(moment);
        }
    }
    Ok((engine, 0))
}

/// The moments of one HAR entry on connection `conn`, in the order a live capture makes them.
fn har_moments(entry: HarEntry, conn: u64, identity: &Arc<Identity>) -> Vec<Moment> {
    let HarEntry {
        exchange,
        response_pieces,
    } = entry;
    let key = ExchangeKey {
        conn,
        id: exchange.id,
    };
    let head = &exchange.response.head;
    let mut moments = Vec::with_capacity(response_pieces.len() + 3);
    moments.push(Moment::Request {
        key,
        request: Arc::clone(&exchange.request),
        identity: Arc::clone(identity),
    });
    moments.push(Moment::response_head(key, head));
    moments.extend(
        response_pieces
            .into_iter()
            .map(|data| Moment::ResponseBody {
                key,
                data: data.into(),
            }),
    );
    moments.push(Moment::Complete {
        key,
        exchange: Box::new(exchange),
        identity: Arc::clone(identity),
    });
    moments
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use taskless_http::har::entries_from_har_str;

    use super::har_moments;
    use crate::flows::{Identity, Moment};

    /// What the pack stage is asked to do for one moment, in short.
    fn moment(m: &Moment) -> String {
        match m {
            Moment::Request { request, .. } => format!("pre {}", request.head.target),
            Moment::ResponseHead {
                status, headers, ..
            } => format!("head {status} {}", headers.len()),
            Moment::ResponseBody { data, .. } => {
                format!("chunk {}", String::from_utf8_lossy(data))
            }
            Moment::Complete { exchange, .. } => {
                format!("post {}", exchange.response.body.total_len)
            }
            Moment::Incomplete { .. } => "incomplete".into(),
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
        let identity = Arc::new(Identity::default());
        // A kept body shorter than the stream: the pieces still carry all of it.
        let entries = entries_from_har_str(&har, 8).unwrap();
        let jobs: Vec<Vec<String>> = entries
            .into_iter()
            .zip(1..)
            .map(|(e, conn)| har_moments(e, conn, &identity).iter().map(moment).collect())
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
