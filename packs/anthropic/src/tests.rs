use super::*;
use base64::Engine as _;
use serde_json::{Map, json};

fn input(value: Value) -> Input {
    Input::from_json(value.to_string().as_bytes()).expect("valid input")
}

fn request(body: Value) -> Value {
    json!({"domain": "api.anthropic.com", "path": "/v1/messages", "url": "https://api.anthropic.com/v1/messages",
           "method": "POST", "headers": [["anthropic-version", "2023-06-01"]], "body": body})
}

fn captures(out: &Output) -> Value {
    Value::Object(out.captures().clone())
}

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

const STREAM: &str = "event: message_start\n\
data: {\"type\":\"message_start\",\"message\":{\"id\":\"msg_1\",\"type\":\"message\",\"role\":\"assistant\",\"content\":[],\"model\":\"claude-sonnet-4-20250514\",\"stop_reason\":null,\"stop_sequence\":null,\"usage\":{\"input_tokens\":472,\"cache_creation_input_tokens\":0,\"cache_read_input_tokens\":2048,\"output_tokens\":2}}}\n\n\
event: content_block_start\n\
data: {\"type\":\"content_block_start\",\"index\":0,\"content_block\":{\"type\":\"text\",\"text\":\"\"}}\n\n\
event: ping\n\
data: {\"type\": \"ping\"}\n\n\
event: content_block_delta\n\
data: {\"type\":\"content_block_delta\",\"index\":0,\"delta\":{\"type\":\"text_delta\",\"text\":\"Héllo\"}}\n\n\
event: content_block_stop\n\
data: {\"type\":\"content_block_stop\",\"index\":0}\n\n\
event: message_delta\n\
data: {\"type\":\"message_delta\",\"delta\":{\"stop_reason\":\"end_turn\",\"stop_sequence\":null},\"usage\":{\"output_tokens\":15}}\n\n\
event: message_stop\n\
data: {\"type\":\"message_stop\"}\n\n";

#[test]
fn pre_captures_endpoint_model_and_stream() {
    let out = pre(&input(
        json!({"request": request(json!({"model": "claude-opus-4-1", "stream": true}))}),
    ));
    assert_eq!(
        captures(&out),
        json!({"endpoint": "/v1/messages", "model": "claude-opus-4-1", "stream": 1})
    );
}

#[test]
fn a_message_gives_usage_stop_reason_and_headers() {
    let body = json!({"id": "msg_01", "type": "message", "role": "assistant", "model": "claude-3-5-haiku-20241022",
        "content": [{"type": "text", "text": "Hi"}], "stop_reason": "max_tokens", "stop_sequence": null,
        "usage": {"input_tokens": 25, "output_tokens": 1024, "cache_creation_input_tokens": 100, "cache_read_input_tokens": 0}});
    let out = post(&input(json!({"request": request(json!({})),
        "response": {"status": 200, "headers": [["request-id", "req_011"], ["anthropic-ratelimit-requests-remaining", "49"],
            ["anthropic-ratelimit-tokens-remaining", "79000"], ["anthropic-ratelimit-input-tokens-remaining", "39000"],
            ["anthropic-ratelimit-output-tokens-remaining", "8000"]], "body": body}})));
    assert_eq!(
        captures(&out),
        json!({"status": 200, "requestId": "req_011", "requestsRemaining": 49, "tokensRemaining": 79000,
               "inputTokensRemaining": 39000, "outputTokensRemaining": 8000,
               "responseModel": "claude-3-5-haiku-20241022", "stopReason": "max_tokens", "inputTokens": 25,
               "outputTokens": 1024, "cacheCreationInputTokens": 100, "cacheReadInputTokens": 0})
    );
}

#[test]
fn a_stream_is_summarised_with_the_final_output_count() {
    let expected = json!({"responseModel": "claude-sonnet-4-20250514", "stopReason": "end_turn", "inputTokens": 472,
        "outputTokens": 15, "cacheCreationInputTokens": 0, "cacheReadInputTokens": 2048});
    for size in [1, 13, STREAM.len()] {
        assert_eq!(
            captures(&stream(STREAM, size, json!({}))),
            expected,
            "pieces of {size}"
        );
    }
}

#[test]
fn an_error_event_mid_stream_is_captured() {
    let body = format!(
        "{}event: error\ndata: {{\"type\": \"error\", \"error\": {{\"type\": \"overloaded_error\", \"message\": \"Overloaded\"}}}}\n\n",
        &STREAM[..STREAM.find("event: content_block_start").unwrap_or(0)]
    );
    let out = stream(&body, 9, json!({}));
    assert_eq!(out.captures()["errorType"], json!("overloaded_error"));
    assert_eq!(out.captures()["errorMessage"], json!("Overloaded"));
    assert_eq!(out.captures()["inputTokens"], json!(472));
}

#[test]
fn an_error_body_gives_type_and_message() {
    let body = json!({"type": "error", "error": {"type": "rate_limit_error",
        "message": "Number of request tokens has exceeded your per-minute rate limit"}, "request_id": "req_9"});
    let out = post(&input(json!({"request": request(json!({})),
        "response": {"status": 429, "headers": [["retry-after", "17"]], "body": body}})));
    assert_eq!(
        captures(&out),
        json!({"status": 429, "retryAfter": 17, "errorType": "rate_limit_error",
               "errorMessage": "Number of request tokens has exceeded your per-minute rate limit"})
    );
}

#[test]
fn post_after_a_read_stream_captures_only_the_head() {
    let out = post(&input(
        json!({"request": request(json!({})), "context": {"streamed": true},
        "response": {"status": 200, "headers": [], "body": STREAM}}),
    ));
    assert_eq!(captures(&out), json!({"status": 200}));
    let out = post(&input(
        json!({"request": request(json!({})), "response": {"status": 200, "headers": [], "body": STREAM}}),
    ));
    assert_eq!(
        out.captures()["outputTokens"],
        json!(15),
        "without chunk calls post reads the stream"
    );
}

#[test]
fn switches_and_domains_apply() {
    let out = stream(STREAM, 100, json!({"captureUsage": false}));
    assert!(out.captures().is_empty());
    let mut req = request(json!({}));
    req["domain"] = json!("api.openai.com");
    assert!(pre(&input(json!({"request": req.clone()}))).is_empty());
    assert!(
        post(&input(
            json!({"request": req, "response": {"status": 200, "headers": []}})
        ))
        .is_empty()
    );
}
