//! The Anthropic pack: which model each call used, its input, output and cache token counts
//! (also for streamed responses, read through `chunk`), why it stopped or failed, and how much
//! rate-limit headroom is left.
//!
//! Messages API bodies carry `model`, `stop_reason` and `usage` (`input_tokens`,
//! `output_tokens`, `cache_creation_input_tokens`, `cache_read_input_tokens`). Streams send
//! `message_start` (the message with its initial usage), content events, `message_delta` (the
//! stop reason and the cumulative output tokens) and `message_stop`; an `error` event can arrive
//! mid-stream. Errors are `{"type": "error", "error": {"type", "message"}}`.

use serde_json::Value;
use taskless_pack_kit::{
    Input, Output, SseEvent, Summary, model_request, stream_chunk, stream_was_read,
    summarize_stream_text,
};

taskless_pack_kit::export_hooks!(pre = pre, chunk = chunk, post = post);

/// Hosts handled when the `domains` setting is absent.
const DEFAULT_DOMAINS: &[&str] = &["api.anthropic.com"];

/// Fields of a message object (a response body, or `message` in `message_start`).
const MESSAGE: &[(&str, &[&str])] = &[
    ("responseModel", &["model"]),
    ("stopReason", &["stop_reason"]),
    ("inputTokens", &["usage", "input_tokens"]),
    ("outputTokens", &["usage", "output_tokens"]),
    (
        "cacheCreationInputTokens",
        &["usage", "cache_creation_input_tokens"],
    ),
    (
        "cacheReadInputTokens",
        &["usage", "cache_read_input_tokens"],
    ),
    // The count_tokens endpoint answers `{"input_tokens": n}`.
    ("inputTokens", &["input_tokens"]),
];

/// Fields of a `message_delta` event; its usage counts are cumulative, so they replace earlier ones.
const DELTA: &[(&str, &[&str])] = &[
    ("stopReason", &["delta", "stop_reason"]),
    ("inputTokens", &["usage", "input_tokens"]),
    ("outputTokens", &["usage", "output_tokens"]),
    (
        "cacheCreationInputTokens",
        &["usage", "cache_creation_input_tokens"],
    ),
    (
        "cacheReadInputTokens",
        &["usage", "cache_read_input_tokens"],
    ),
];

/// Fields of an error body or `error` event.
const ERROR: &[(&str, &[&str])] = &[
    ("errorType", &["error", "type"]),
    ("errorMessage", &["error", "message"]),
];

/// Rate-limit response headers, as `(capture key, header)`.
const RATE_LIMITS: &[(&str, &str)] = &[
    (
        "requestsRemaining",
        "anthropic-ratelimit-requests-remaining",
    ),
    ("tokensRemaining", "anthropic-ratelimit-tokens-remaining"),
    (
        "inputTokensRemaining",
        "anthropic-ratelimit-input-tokens-remaining",
    ),
    (
        "outputTokensRemaining",
        "anthropic-ratelimit-output-tokens-remaining",
    ),
    ("retryAfter", "retry-after"),
];

/// Captures `endpoint`, `model` and `stream` from the request.
pub fn pre(input: &Input) -> Output {
    if !input.in_domains(DEFAULT_DOMAINS) {
        return Output::new();
    }
    model_request(input)
}

/// Reads a streamed response's events; captures the usage summary once, at the end.
pub fn chunk(input: &Input) -> Output {
    if !input.in_domains(DEFAULT_DOMAINS) {
        return Output::new();
    }
    let mut out = stream_chunk(input, fold_event);
    keep_enabled(&mut out, input);
    out
}

/// Captures `status`, `requestId`, the rate-limit headers and, for a body not read as a stream,
/// usage and error fields.
pub fn post(input: &Input) -> Output {
    let mut out = Output::new();
    let Some(response) = input
        .response
        .as_ref()
        .filter(|_| input.in_domains(DEFAULT_DOMAINS))
    else {
        return out;
    };
    out.capture("status", response.status);
    out.capture_opt("requestId", response.headers.get("request-id"));
    if input.config().bool("captureRateLimits", true) {
        for (key, header) in RATE_LIMITS {
            out.capture_opt(key, response.headers.get_i64(header));
        }
    }
    if stream_was_read(input) {
        return out;
    }
    let summary = match response.body_json() {
        // A stream that no `chunk` call read.
        Some(Value::String(text)) => summarize_stream_text(text, fold_event),
        Some(body @ Value::Object(_)) => {
            let mut summary = Summary::default();
            if body.get("type").and_then(Value::as_str) == Some("error") {
                summary.set_paths(body, ERROR);
            } else {
                summary.set_paths(body, MESSAGE);
            }
            Some(summary)
        }
        _ => None,
    };
    if let Some(summary) = summary {
        let mut body = Output::new();
        summary.capture_into(&mut body);
        keep_enabled(&mut body, input);
        out.extend(body);
    }
    out
}

/// Folds one streamed event into the summary.
fn fold_event(event: &SseEvent, summary: &mut Summary) {
    let Some(data) = event.json() else {
        return;
    };
    let kind = data
        .get("type")
        .and_then(Value::as_str)
        .unwrap_or(event.event.as_str());
    match kind {
        "message_start" => {
            if let Some(message) = data.get("message") {
                summary.set_paths(message, MESSAGE);
            }
        }
        "message_delta" => summary.set_paths(&data, DELTA),
        "error" => summary.set_paths(&data, ERROR),
        _ => {}
    }
}

/// Drops the usage or error captures that the settings switch off.
fn keep_enabled(out: &mut Output, input: &Input) {
    let config = input.config();
    let usage = config.bool("captureUsage", true);
    let errors = config.bool("captureErrors", true);
    out.retain_captures(|key| {
        if key.starts_with("error") {
            errors
        } else {
            usage
        }
    });
}

#[cfg(test)]
mod tests;
