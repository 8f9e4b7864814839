//! The GitHub pack: GitHub's request id, the rate-limit headroom of the resource a call counted
//! against, and for failed calls the message, documentation link and first validation error.
//!
//! REST errors are `{"message", "documentation_url", "status"?, "errors"?: [{"resource",
//! "field", "code"}]}`. The GraphQL endpoint answers 200 with `{"errors": [{"type",
//! "message"}]}` when a query fails; those are captured too.

use serde_json::Value;
use taskless_pack_kit::{Input, Output};

taskless_pack_kit::export_hooks!(post = post);

/// Hosts handled when the `domains` setting is absent.
const DEFAULT_DOMAINS: &[&str] = &["api.github.com"];

/// Numeric rate-limit headers, as `(capture key, header)`.
const RATE_LIMITS: &[(&str, &str)] = &[
    ("rateLimitLimit", "x-ratelimit-limit"),
    ("rateLimitRemaining", "x-ratelimit-remaining"),
    ("rateLimitUsed", "x-ratelimit-used"),
    ("rateLimitReset", "x-ratelimit-reset"),
    ("retryAfter", "retry-after"),
];

/// REST error fields, as `(capture key, path)`.
const REST_ERROR: &[(&str, &[&str])] = &[
    ("message", &["message"]),
    ("documentationUrl", &["documentation_url"]),
    ("errorResource", &["errors", "0", "resource"]),
    ("errorField", &["errors", "0", "field"]),
    ("errorCode", &["errors", "0", "code"]),
];

/// GraphQL error fields, as `(capture key, path)`.
const GRAPHQL_ERROR: &[(&str, &[&str])] = &[
    ("errorType", &["errors", "0", "type"]),
    ("message", &["errors", "0", "message"]),
];

/// Captures `status`, `requestId`, `apiVersion`, the rate-limit headers and error details.
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
    let headers = &response.headers;
    out.capture("status", response.status);
    out.capture_opt("requestId", headers.get("x-github-request-id"));
    out.capture_opt("apiVersion", headers.get("x-github-api-version-selected"));
    if config.bool("captureRateLimits", true) {
        out.capture_opt("rateLimitResource", headers.get("x-ratelimit-resource"));
        for (key, header) in RATE_LIMITS {
            out.capture_opt(key, headers.get_i64(header));
        }
    }
    if !config.bool("captureErrors", true) {
        return out;
    }
    let Some(body @ Value::Object(_)) = response.body_json() else {
        return out;
    };
    if response.status >= 400 {
        out.capture_paths(body, REST_ERROR);
    } else if input.request.path.ends_with("/graphql")
        && body.get("errors").is_some_and(Value::is_array)
    {
        out.capture_paths(body, GRAPHQL_ERROR);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn input(value: Value) -> Input {
        Input::from_json(value.to_string().as_bytes()).expect("valid input")
    }

    fn request(path: &str) -> Value {
        json!({"domain": "api.github.com", "path": path, "url": format!("https://api.github.com{path}"),
               "method": "GET", "headers": []})
    }

    fn headers() -> Value {
        json!([
            ["x-github-request-id", "C0DE:1A2B:3C4D:5E6F:6789ABCD"],
            ["x-ratelimit-limit", "5000"],
            ["x-ratelimit-remaining", "4987"],
            ["x-ratelimit-used", "13"],
            ["x-ratelimit-reset", "1717171717"],
            ["x-ratelimit-resource", "core"],
            ["x-github-api-version-selected", "2022-11-28"]
        ])
    }

    #[test]
    fn success_gives_request_id_and_rate_limits() {
        let out = post(&input(json!({"request": request("/repos/octo/hello"),
            "response": {"status": 200, "headers": headers(), "body": {"id": 1, "message": "not an error"}}})));
        assert_eq!(
            Value::Object(out.captures().clone()),
            json!({"status": 200, "requestId": "C0DE:1A2B:3C4D:5E6F:6789ABCD", "apiVersion": "2022-11-28",
                   "rateLimitResource": "core", "rateLimitLimit": 5000, "rateLimitRemaining": 4987,
                   "rateLimitUsed": 13, "rateLimitReset": 1717171717})
        );
    }

    #[test]
    fn a_validation_error_gives_message_link_and_first_error() {
        let body = json!({"message": "Validation Failed", "documentation_url": "https://docs.github.com/rest/issues/issues#create-an-issue",
            "errors": [{"resource": "Issue", "field": "title", "code": "missing_field"}], "status": "422"});
        let out = post(&input(json!({"request": request("/repos/o/r/issues"),
            "response": {"status": 422, "headers": [], "body": body}})));
        assert_eq!(
            Value::Object(out.captures().clone()),
            json!({"status": 422, "message": "Validation Failed",
                   "documentationUrl": "https://docs.github.com/rest/issues/issues#create-an-issue",
                   "errorResource": "Issue", "errorField": "title", "errorCode": "missing_field"})
        );
    }

    #[test]
    fn graphql_errors_are_captured_on_200_only_for_graphql() {
        let body = json!({"data": null, "errors": [{"type": "NOT_FOUND", "message": "Could not resolve to a Repository"}]});
        let out = post(&input(
            json!({"request": request("/graphql"), "response": {"status": 200, "headers": [], "body": body}}),
        ));
        assert_eq!(out.captures()["errorType"], json!("NOT_FOUND"));
        let out = post(&input(
            json!({"request": request("/repos/o/r"), "response": {"status": 200, "headers": [], "body": body}}),
        ));
        assert!(!out.captures().contains_key("errorType"));
    }

    #[test]
    fn switches_and_domains_apply() {
        let config = json!({"captureRateLimits": false, "captureErrors": false});
        let out = post(&input(
            json!({"request": request("/x"), "configuration": config,
            "response": {"status": 404, "headers": headers(), "body": {"message": "Not Found"}}}),
        ));
        assert_eq!(
            Value::Object(out.captures().clone()),
            json!({"status": 404, "requestId": "C0DE:1A2B:3C4D:5E6F:6789ABCD", "apiVersion": "2022-11-28"})
        );
        let mut req = request("/x");
        req["domain"] = json!("github.com");
        assert!(
            post(&input(
                json!({"request": req, "response": {"status": 200, "headers": headers()}})
            ))
            .is_empty()
        );
    }
}
