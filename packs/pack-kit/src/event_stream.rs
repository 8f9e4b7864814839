//! The `chunk` hook of a pack that reads a server-sent event stream.
//!
//! Captures from several `chunk` calls would repeat keys (a running token count, say), so
//! stream packs fold every event into one summary kept in the context and capture it once, on the
//! last `chunk` call. `post` then knows from the context whether the body was already read.

use serde_json::{Map, Value, json};

use crate::{Capture, Input, Output, SseDecoder, SseEvent, decode_chunk, get_path};

/// The `pre` captures every model API shares: `endpoint` (the request path), `model` (the body's
/// `model`) and `stream` (1 when the body asks for a streamed response).
#[must_use]
pub fn model_request(input: &Input) -> Output {
    let mut out = Output::new();
    out.capture("endpoint", input.request.path.as_str());
    if let Some(body) = input.request.body_json() {
        out.capture_opt("model", get_path(body, &["model"]).and_then(Value::as_str));
        if get_path(body, &["stream"]).and_then(Value::as_bool) == Some(true) {
            out.capture("stream", 1u8);
        }
    }
    out
}

/// Context key of the event decoder's state.
const DECODER: &str = "sse";
/// Context key of the summary folded so far.
const SUMMARY: &str = "summary";
/// Context key set on the last `chunk` call: true when the body was an event stream.
const STREAMED: &str = "streamed";

/// Captures folded from a stream's events; a later event's value for a key replaces an earlier one.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Summary(Map<String, Value>);

impl Summary {
    /// Sets `key` (replacing an earlier value).
    pub fn set(&mut self, key: &str, value: impl Into<Capture>) {
        self.0.insert(key.to_owned(), value.into().into());
    }

    /// Sets `key` when `value` is present.
    pub fn set_opt<T: Into<Capture>>(&mut self, key: &str, value: Option<T>) {
        if let Some(v) = value {
            self.set(key, v);
        }
    }

    /// For each `(key, path)`, sets the string or number found at `path` in `value`.
    pub fn set_paths(&mut self, value: &Value, fields: &[(&str, &[&str])]) {
        for (key, path) in fields {
            self.set_opt(key, crate::get_path(value, path).and_then(crate::scalar));
        }
    }

    /// The value of `key`.
    pub fn get(&self, key: &str) -> Option<&Value> {
        self.0.get(key)
    }

    /// Adds every key to `out` as a capture.
    pub fn capture_into(&self, out: &mut Output) {
        for (key, value) in &self.0 {
            let capture = match value {
                Value::String(s) => Capture::Text(s.clone()),
                Value::Number(n) => Capture::Number(n.clone()),
                _ => continue,
            };
            out.capture(key, capture);
        }
    }
}

/// Runs a stream pack's `chunk` hook: decodes the piece, splits events across calls, folds each
/// into the summary with `fold`, and on the last call (no `chunk` field) captures the summary when
/// the body was an event stream. A body that is not an event stream (plain JSON) is left to `post`.
pub fn stream_chunk(input: &Input, fold: fn(&SseEvent, &mut Summary)) -> Output {
    let mut decoder = SseDecoder::from_context(&input.context, DECODER);
    let mut summary = Summary(
        input
            .context
            .get(SUMMARY)
            .and_then(Value::as_object)
            .cloned()
            .unwrap_or_default(),
    );
    let mut out = Output::new();
    match &input.chunk {
        Some(piece) => {
            let Some(bytes) = decode_chunk(piece) else {
                crate::warn("chunk is not valid base64; piece skipped");
                return out;
            };
            for event in decoder.feed_bytes(&bytes) {
                fold(&event, &mut summary);
            }
            let mut context = Map::new();
            context.insert(DECODER.to_owned(), decoder.to_value());
            if !summary.0.is_empty() {
                context.insert(SUMMARY.to_owned(), Value::Object(summary.0));
            }
            out.set_context(Value::Object(context));
        }
        None => {
            for event in decoder.finish() {
                fold(&event, &mut summary);
            }
            let streamed = decoder.is_sse() == Some(true);
            if streamed {
                summary.capture_into(&mut out);
            }
            out.set_context(json!({ STREAMED: streamed }));
        }
    }
    out
}

/// True when `chunk` already read the body as an event stream (so `post` must not read it again).
pub fn stream_was_read(input: &Input) -> bool {
    input.context.get(STREAMED).and_then(Value::as_bool) == Some(true)
}

/// Reads a whole event-stream body (for `post`, when no `chunk` call read it) into a summary.
/// `None` when the text is not an event stream.
pub fn summarize_stream_text(text: &str, fold: fn(&SseEvent, &mut Summary)) -> Option<Summary> {
    let mut decoder = SseDecoder::new();
    let mut summary = Summary::default();
    let mut events = decoder.feed_str(text);
    events.extend(decoder.finish());
    if decoder.is_sse() != Some(true) {
        return None;
    }
    for event in &events {
        fold(event, &mut summary);
    }
    Some(summary)
}

#[cfg(test)]
mod tests {
    use super::*;
    use base64::Engine as _;

    fn fold(event: &SseEvent, summary: &mut Summary) {
        if let Some(json) = event.json() {
            summary.set_paths(&json, &[("n", &["n"])]);
        }
    }

    fn chunk_input(context: &Map<String, Value>, piece: Option<&[u8]>) -> Input {
        let mut input = Input {
            context: context.clone(),
            ..Input::default()
        };
        input.chunk = piece.map(|p| base64::engine::general_purpose::STANDARD.encode(p));
        input
    }

    fn run(body: &[u8], size: usize) -> Output {
        let mut context = Map::new();
        for piece in body.chunks(size) {
            let out = stream_chunk(&chunk_input(&context, Some(piece)), fold);
            assert!(
                out.captures().is_empty(),
                "nothing is captured before the end"
            );
            context = out
                .context()
                .and_then(Value::as_object)
                .cloned()
                .unwrap_or_default();
        }
        stream_chunk(&chunk_input(&context, None), fold)
    }

    #[test]
    fn the_summary_is_captured_once_at_the_end() {
        let body = b"data: {\"n\": 1}\n\ndata: {\"n\": 2}\n\ndata: [DONE]\n\n";
        for size in [1, 5, body.len()] {
            let out = run(body, size);
            assert_eq!(out.captures().get("n"), Some(&json!(2)), "pieces of {size}");
            assert_eq!(out.context(), Some(&json!({"streamed": true})));
        }
    }

    #[test]
    fn a_json_body_is_left_to_post() {
        let out = run(b"{\"n\": 1}", 3);
        assert!(out.captures().is_empty());
        let input = Input {
            context: out
                .context()
                .and_then(Value::as_object)
                .cloned()
                .unwrap_or_default(),
            ..Input::default()
        };
        assert!(!stream_was_read(&input));
    }

    #[test]
    fn whole_text_reads_the_same_as_pieces() {
        let summary = summarize_stream_text("data: {\"n\": 5}\n\n", fold).expect("a stream");
        assert_eq!(summary.get("n"), Some(&json!(5)));
        assert!(summarize_stream_text("{\"n\": 5}", fold).is_none());
    }
}
