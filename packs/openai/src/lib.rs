//! The OpenAI pack: which endpoint and model each call used, how many tokens it cost (also for
//! streamed responses, read through `chunk`), why it failed, and how much rate-limit headroom is
//! left.
//!
//! Bodies handled: Chat Completions (`usage.prompt_tokens` ...), the Responses API
//! (`usage.input_tokens` ...), embeddings and completions; streams in both the Chat Completions
//! form (`data: {chunk}` ... a usage chunk when `stream_options.include_usage` ... `data: [DONE]`)
//! and the Responses form (`event: response.completed` carrying the whole response). Errors are
//! `{"error": {"message", "type", "param", "code"}}`.

use serde_json::Value;
use taskless_pack_kit::{
    Input, Output, SseEvent, Summary, model_request, stream_chunk, stream_was_read,
    summarize_stream_text,
};

taskless_pack_kit::export_hooks!(pre = pre, chunk = chunk, post = post);

/// Hosts handled when the `domains` setting is absent.
const DEFAULT_DOMAINS: &[&str] = &["api.openai.com"];

/// Usage fields of a response object, as `(capture key, path)`. Chat Completions and Responses
/// API names both map to the same captures; at most one of each pair is present.
const USAGE: &[(&str, &[&str])] = &[
    ("responseModel", &["model"]),
    ("promptTokens", &["usage", "prompt_tokens"]),
    ("promptTokens", &["usage", "input_tokens"]),
    ("completionTokens", &["usage", "completion_tokens"]),
    ("completionTokens", &["usage", "output_tokens"]),
    ("totalTokens", &["usage", "total_tokens"]),
    (
        "cachedTokens",
        &["usage", "prompt_tokens_details", "cached_tokens"],
    ),
    (
        "cachedTokens",
        &["usage", "input_tokens_details", "cached_tokens"],
    ),
    (
        "reasoningTokens",
        &["usage", "completion_tokens_details", "reasoning_tokens"],
    ),
    (
        "reasoningTokens",
        &["usage", "output_tokens_details", "reasoning_tokens"],
    ),
    ("finishReason", &["choices", "0", "finish_reason"]),
    ("finishReason", &["incomplete_details", "reason"]),
];

/// Error object fields, as `(capture key, path)`.
const ERROR: &[(&str, &[&str])] = &[
    ("errorType", &["error", "type"]),
    ("errorCode", &["error", "code"]),
    ("errorParam", &["error", "param"]),
    ("errorMessage", &["error", "message"]),
];

/// Response headers, as `(capture key, header)`; all numbers except the request id.
const HEADERS: &[(&str, &str)] = &[
    ("processingMs", "openai-processing-ms"),
    ("limitRequests", "x-ratelimit-limit-requests"),
    ("limitTokens", "x-ratelimit-limit-tokens"),
    ("remainingRequests", "x-ratelimit-remaining-requests"),
    ("remainingTokens", "x-ratelimit-remaining-tokens"),
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
    let config = input.config();
    out.capture("status", response.status);
    out.capture_opt("requestId", response.headers.get("x-request-id"));
    for (key, header) in HEADERS {
        if !header.starts_with("x-ratelimit") || config.bool("captureRateLimits", true) {
            out.capture_opt(key, response.headers.get_i64(header));
        }
    }
    if stream_was_read(input) {
        return out;
    }
    let summary = match response.body_json() {
        // A stream that no `chunk` call read (the host does not call `chunk`, say).
        Some(Value::String(text)) => summarize_stream_text(text, fold_event),
        Some(body @ Value::Object(_)) => {
            let mut summary = Summary::default();
            fold_object(body, &mut summary);
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
        return; // `[DONE]` and keep-alives
    };
    match data.get("type").and_then(Value::as_str) {
        // Responses API: lifecycle events carry the whole response object.
        Some(
            "response.created" | "response.completed" | "response.incomplete" | "response.failed",
        ) => {
            if let Some(response) = data.get("response") {
                fold_object(response, summary);
            }
        }
        // Responses API: a stream-level error event.
        Some("error") => {
            summary.set("errorType", "error");
            summary.set_paths(
                &data,
                &[("errorCode", &["code"]), ("errorMessage", &["message"])],
            );
        }
        _ => fold_object(&data, summary),
    }
}

/// Folds a response object (or a Chat Completions chunk) into the summary.
fn fold_object(object: &Value, summary: &mut Summary) {
    summary.set_paths(object, USAGE);
    if object.get("error").is_some_and(Value::is_object) {
        summary.set_paths(object, ERROR);
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
