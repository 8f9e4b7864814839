use super::*;
use base64::Engine as _;
use serde_json::{Map, json};

fn input(value: Value) -> Input {
    Input::from_json(value.to_string().as_bytes()).expect("valid input")
}

fn request(body: Value) -> Value {
    json!({"domain": "api.openai.com", "path": "/v1/chat/completions",
           "url": "https://api.openai.com/v1/chat/completions", "method": "POST",
           "headers": [["content-type", "application/json"]], "body": body})
}

fn captures(out: &Output) -> Value {
    Value::Object(out.captures().clone())
}

/// Feeds `body` to `chunk` in pieces of `size`, then the last call; returns the last output.
fn stream(body: &str, size: usize, configuration: Value) -> Output {
    let mut context = Map::new();
    for piece in body.as_bytes().chunks(size) {
        let out = chunk(&input(
            json!({"request": request(json!({})), "context": context,
            "configuration": configuration,
            "chunk": base64::engine::general_purpose::STANDARD.encode(piece)}),
        ));
        assert!(out.captures().is_empty());
        context = out
            .context()
            .and_then(Value::as_object)
            .cloned()
            .unwrap_or_default();
    }
    chunk(&input(
        json!({"request": request(json!({})), "context": context, "configuration": configuration}),
    ))
}

const CHAT_STREAM: &str = "data: {\"id\":\"c1\",\"object\":\"chat.completion.chunk\",\"model\":\"gpt-4o-mini-2024-07-18\",\"choices\":[{\"index\":0,\"delta\":{\"role\":\"assistant\",\"content\":\"\"},\"finish_reason\":null}],\"usage\":null}\n\n\
data: {\"id\":\"c1\",\"object\":\"chat.completion.chunk\",\"model\":\"gpt-4o-mini-2024-07-18\",\"choices\":[{\"index\":0,\"delta\":{\"content\":\"Hi ☃\"},\"finish_reason\":null}],\"usage\":null}\n\n\
data: {\"id\":\"c1\",\"object\":\"chat.completion.chunk\",\"model\":\"gpt-4o-mini-2024-07-18\",\"choices\":[{\"index\":0,\"delta\":{},\"finish_reason\":\"stop\"}],\"usage\":null}\n\n\
data: {\"id\":\"c1\",\"object\":\"chat.completion.chunk\",\"model\":\"gpt-4o-mini-2024-07-18\",\"choices\":[],\"usage\":{\"prompt_tokens\":12,\"completion_tokens\":3,\"total_tokens\":15,\"prompt_tokens_details\":{\"cached_tokens\":0}}}\n\n\
data: [DONE]\n\n";

#[test]
fn pre_captures_endpoint_model_and_stream() {
    let out = pre(&input(
        json!({"request": request(json!({"model": "gpt-4o", "stream": true}))}),
    ));
    assert_eq!(
        captures(&out),
        json!({"endpoint": "/v1/chat/completions", "model": "gpt-4o", "stream": 1})
    );
    let out = pre(&input(
        json!({"request": request(json!({"model": "gpt-4o", "stream": false}))}),
    ));
    assert_eq!(
        captures(&out),
        json!({"endpoint": "/v1/chat/completions", "model": "gpt-4o"})
    );
}

#[test]
fn a_chat_completion_gives_usage_and_headers() {
    let body = json!({"id": "chatcmpl-1", "object": "chat.completion", "model": "gpt-4o-2024-08-06",
        "choices": [{"index": 0, "message": {"role": "assistant", "content": "hi"}, "finish_reason": "length"}],
        "usage": {"prompt_tokens": 19, "completion_tokens": 10, "total_tokens": 29,
                  "prompt_tokens_details": {"cached_tokens": 8},
                  "completion_tokens_details": {"reasoning_tokens": 0}}});
    let out = post(&input(json!({"request": request(json!({})),
        "response": {"status": 200, "headers": [["x-request-id", "req_abc"], ["openai-processing-ms", "412"],
            ["x-ratelimit-remaining-requests", "9999"], ["x-ratelimit-remaining-tokens", "149990"],
            ["x-ratelimit-limit-requests", "10000"], ["x-ratelimit-limit-tokens", "150000"]], "body": body}})));
    assert_eq!(
        captures(&out),
        json!({"status": 200, "requestId": "req_abc", "processingMs": 412, "remainingRequests": 9999,
               "remainingTokens": 149990, "limitRequests": 10000, "limitTokens": 150000,
               "responseModel": "gpt-4o-2024-08-06", "promptTokens": 19, "completionTokens": 10,
               "totalTokens": 29, "cachedTokens": 8, "reasoningTokens": 0, "finishReason": "length"})
    );
}

#[test]
fn a_responses_api_body_maps_to_the_same_captures() {
    let body = json!({"id": "resp_1", "object": "response", "status": "completed", "model": "o4-mini-2025-04-16",
        "usage": {"input_tokens": 36, "input_tokens_details": {"cached_tokens": 0}, "output_tokens": 87,
                  "output_tokens_details": {"reasoning_tokens": 64}, "total_tokens": 123}});
    let out = post(&input(
        json!({"request": request(json!({})), "response": {"status": 200, "headers": [], "body": body}}),
    ));
    assert_eq!(
        captures(&out),
        json!({"status": 200, "responseModel": "o4-mini-2025-04-16", "promptTokens": 36, "completionTokens": 87,
               "totalTokens": 123, "cachedTokens": 0, "reasoningTokens": 64})
    );
}

#[test]
fn a_chat_stream_is_summarised_at_the_end_in_any_slicing() {
    let expected = json!({"responseModel": "gpt-4o-mini-2024-07-18", "finishReason": "stop", "promptTokens": 12,
                          "completionTokens": 3, "totalTokens": 15, "cachedTokens": 0});
    for size in [1, 3, 40, CHAT_STREAM.len()] {
        let out = stream(CHAT_STREAM, size, json!({}));
        assert_eq!(captures(&out), expected, "pieces of {size}");
        assert_eq!(out.context(), Some(&json!({"streamed": true})));
    }
}

#[test]
fn post_after_a_read_stream_captures_only_the_head() {
    let out = post(&input(
        json!({"request": request(json!({})), "context": {"streamed": true},
        "response": {"status": 200, "headers": [["x-request-id", "r"]], "body": CHAT_STREAM}}),
    ));
    assert_eq!(captures(&out), json!({"status": 200, "requestId": "r"}));
}

#[test]
fn post_reads_a_stream_no_chunk_call_read() {
    let out = post(&input(json!({"request": request(json!({})),
        "response": {"status": 200, "headers": [], "body": CHAT_STREAM}})));
    assert_eq!(out.captures()["totalTokens"], json!(15));
    assert_eq!(out.captures()["finishReason"], json!("stop"));
}

#[test]
fn errors_give_type_code_param_and_message() {
    let body = json!({"error": {"message": "This model's maximum context length is 128000 tokens.",
        "type": "invalid_request_error", "param": "messages", "code": "context_length_exceeded"}});
    let out = post(&input(
        json!({"request": request(json!({})), "response": {"status": 400, "headers": [], "body": body}}),
    ));
    assert_eq!(
        captures(&out),
        json!({"status": 400, "errorType": "invalid_request_error", "errorCode": "context_length_exceeded",
               "errorParam": "messages", "errorMessage": "This model's maximum context length is 128000 tokens."})
    );
}

#[test]
fn switches_drop_usage_errors_and_rate_limits() {
    let body = json!({"model": "m", "usage": {"total_tokens": 1}, "error": {"type": "t"}});
    let config = json!({"captureUsage": false, "captureRateLimits": false});
    let out = post(&input(
        json!({"request": request(json!({})), "configuration": config,
        "response": {"status": 500, "headers": [["x-ratelimit-remaining-requests", "1"]], "body": body}}),
    ));
    assert_eq!(captures(&out), json!({"status": 500, "errorType": "t"}));
    let out = stream(CHAT_STREAM, 50, json!({"captureUsage": false}));
    assert!(out.captures().is_empty());
}

#[test]
fn a_responses_stream_error_event_is_captured() {
    let body = "event: response.created\ndata: {\"type\":\"response.created\",\"response\":{\"model\":\"gpt-4.1\",\"usage\":null}}\n\n\
                event: error\ndata: {\"type\":\"error\",\"code\":\"server_error\",\"message\":\"The server had an error\",\"param\":null}\n\n";
    let out = stream(body, 17, json!({}));
    assert_eq!(
        captures(&out),
        json!({"responseModel": "gpt-4.1", "errorType": "error", "errorCode": "server_error",
               "errorMessage": "The server had an error"})
    );
}

#[test]
fn other_hosts_are_ignored() {
    let mut req = request(json!({"model": "x"}));
    req["domain"] = json!("api.example.com");
    assert!(pre(&input(json!({"request": req.clone()}))).is_empty());
    assert!(
        post(&input(
            json!({"request": req, "response": {"status": 200, "headers": []}})
        ))
        .is_empty()
    );
}
