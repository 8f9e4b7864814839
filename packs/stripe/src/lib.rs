//! The Stripe pack: ties each call to Stripe's own request id and idempotency key, records the
//! API version in use and, when a call fails, every field of Stripe's error object.
//!
//! Stripe's errors are `{"error": {"type", "code", "decline_code", "param", "message",
//! "doc_url", "request_log_url"}}` with status 400 (invalid request, idempotency), 401
//! (authentication), 402 (card), 403 (permission), 404, 409 (conflict), 429 (rate limit) or 5xx
//! (api_error).

use taskless_pack_kit::{Input, Output};

taskless_pack_kit::export_hooks!(pre = pre, post = post);

/// Hosts handled when the `domains` setting is absent.
const DEFAULT_DOMAINS: &[&str] = &["api.stripe.com"];

/// Error object fields captured for failed calls, as `(capture key, path in the body)`.
const ERROR_FIELDS: &[(&str, &[&str])] = &[
    ("errorType", &["error", "type"]),
    ("errorCode", &["error", "code"]),
    ("declineCode", &["error", "decline_code"]),
    ("param", &["error", "param"]),
    ("message", &["error", "message"]),
    ("docUrl", &["error", "doc_url"]),
    ("requestLogUrl", &["error", "request_log_url"]),
];

/// Captures `idempotencyKey` from the request.
pub fn pre(input: &Input) -> Output {
    let mut out = Output::new();
    if !input.in_domains(DEFAULT_DOMAINS) {
        return out;
    }
    if input.config().bool("captureIdempotencyKey", true) {
        out.capture_opt(
            "idempotencyKey",
            input.request.headers.get("idempotency-key"),
        );
    }
    out
}

/// Captures `status`, `requestId`, `stripeVersion`, `idempotentReplayed` and, for failed
/// calls, the error object's fields.
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
    // The response states the version the call was served with; the request header is the
    // version asked for, only present when the client pins one.
    let version = response
        .headers
        .get("stripe-version")
        .or_else(|| input.request.headers.get("stripe-version"));
    out.capture_opt("stripeVersion", version);
    if response
        .headers
        .get("idempotent-replayed")
        .is_some_and(|v| v.trim().eq_ignore_ascii_case("true"))
    {
        out.capture("idempotentReplayed", 1u8);
    }
    if response.status >= 400
        && input.config().bool("captureErrors", true)
        && let Some(body) = response.body_json()
    {
        out.capture_paths(body, ERROR_FIELDS);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::{Value, json};

    fn input(value: Value) -> Input {
        Input::from_json(value.to_string().as_bytes()).expect("valid input")
    }

    fn request(domain: &str) -> Value {
        json!({"domain": domain, "path": "/v1/charges", "url": format!("https://{domain}/v1/charges"),
               "method": "POST", "headers": [["idempotency-key", "key-1"], ["stripe-version", "2024-06-20"]]})
    }

    #[test]
    fn pre_captures_the_idempotency_key() {
        let out = pre(&input(json!({"request": request("api.stripe.com")})));
        assert_eq!(out.captures()["idempotencyKey"], json!("key-1"));
        let off = pre(&input(json!({"request": request("api.stripe.com"),
                                    "configuration": {"captureIdempotencyKey": false}})));
        assert!(off.is_empty());
    }

    #[test]
    fn other_hosts_are_ignored() {
        assert!(pre(&input(json!({"request": request("api.example.com")}))).is_empty());
        let out = post(&input(json!({"request": request("api.example.com"),
                                     "response": {"status": 402, "headers": []}})));
        assert!(out.is_empty());
    }

    #[test]
    fn a_card_error_gives_every_field() {
        let body = json!({"error": {"type": "card_error", "code": "card_declined", "decline_code": "insufficient_funds",
            "message": "Your card has insufficient funds.", "doc_url": "https://stripe.com/docs/error-codes/card-declined",
            "request_log_url": "https://dashboard.stripe.com/test/logs/req_1?t=1", "param": ""}});
        let out = post(&input(json!({"request": request("api.stripe.com"),
            "response": {"status": 402, "headers": [["request-id", "req_1"], ["stripe-version", "2023-10-16"]], "body": body}})));
        assert_eq!(
            Value::Object(out.captures().clone()),
            json!({"status": 402, "requestId": "req_1", "stripeVersion": "2023-10-16", "errorType": "card_error",
                   "errorCode": "card_declined", "declineCode": "insufficient_funds",
                   "message": "Your card has insufficient funds.",
                   "docUrl": "https://stripe.com/docs/error-codes/card-declined",
                   "requestLogUrl": "https://dashboard.stripe.com/test/logs/req_1?t=1"})
        );
    }

    #[test]
    fn success_has_no_error_fields_even_if_the_body_says_error() {
        let out = post(&input(json!({"request": request("api.stripe.com"),
            "response": {"status": 200, "headers": [["idempotent-replayed", "true"]], "body": {"error": {"type": "x"}}}})));
        assert_eq!(
            Value::Object(out.captures().clone()),
            json!({"status": 200, "stripeVersion": "2024-06-20", "idempotentReplayed": 1})
        );
    }

    #[test]
    fn error_capture_can_be_switched_off() {
        let out = post(&input(
            json!({"request": request("api.stripe.com"), "configuration": {"captureErrors": false},
            "response": {"status": 400, "headers": [], "body": {"error": {"type": "invalid_request_error"}}}}),
        ));
        assert!(!out.captures().contains_key("errorType"));
    }
}
