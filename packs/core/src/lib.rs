//! The core pack: what every API call is (domain, URL, path, method), how it went (status,
//! error) and how long the API took (`durationMs`, from the exchange's real timestamps).
//!
//! `pre` captures what the request says; `post` what the response says. Each capture can be
//! switched off with its boolean setting; `domains` limits the hosts reported on.

use serde_json::Value;
use taskless_pack_kit::{Input, Output, get_path};

taskless_pack_kit::export_hooks!(pre = pre, post = post);

/// Host patterns reported on when the `domains` setting is absent.
const DEFAULT_DOMAINS: &[&str] = &["*"];

/// Captures `domain`, `url`, `path` and `method` from the request.
pub fn pre(input: &Input) -> Output {
    let mut out = Output::new();
    if !input.in_domains(DEFAULT_DOMAINS) {
        return out;
    }
    let config = input.config();
    let request = &input.request;
    let nonempty = |s: &str| (!s.is_empty()).then(|| s.to_owned());
    if config.bool("captureDomain", true) {
        out.capture_opt("domain", nonempty(&request.domain));
    }
    if config.bool("captureUrl", true) {
        out.capture_opt("url", nonempty(&request.url));
    }
    if config.bool("capturePath", true) {
        out.capture_opt("path", nonempty(&request.path));
    }
    if config.bool("captureMethod", true) {
        out.capture_opt("method", nonempty(&request.method));
    }
    out
}

/// Captures `status`, `durationMs` and, for status >= 400, `error`.
pub fn post(input: &Input) -> Output {
    let mut out = Output::new();
    if !input.in_domains(DEFAULT_DOMAINS) {
        return out;
    }
    let config = input.config();
    let Some(response) = &input.response else {
        return out;
    };
    if config.bool("captureStatus", true) {
        out.capture("status", response.status);
    }
    if config.bool("captureDuration", true) {
        out.capture_opt("durationMs", input.timing.and_then(|t| t.duration_ms()));
    }
    if response.status >= 400 && config.bool("captureError", true) {
        out.capture_opt("error", response.body_json().and_then(error_of));
    }
    out
}

/// The error a JSON error body names: `error` when it is a string, `error.type` when it is an
/// object, else `message`, else `err.type`.
pub fn error_of(body: &Value) -> Option<String> {
    let text = |path: &[&str]| {
        get_path(body, path)
            .and_then(Value::as_str)
            .filter(|s| !s.is_empty())
            .map(str::to_owned)
    };
    text(&["error"])
        .or_else(|| text(&["error", "type"]))
        .or_else(|| text(&["message"]))
        .or_else(|| text(&["err", "type"]))
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn input(value: Value) -> Input {
        Input::from_json(value.to_string().as_bytes()).expect("valid input")
    }

    fn request() -> Value {
        json!({"domain": "api.example.com", "path": "/v1/things", "url": "https://api.example.com/v1/things?limit=2",
               "method": "GET", "headers": []})
    }

    #[test]
    fn pre_captures_what_the_request_says() {
        let out = pre(&input(json!({"request": request()})));
        assert_eq!(
            Value::Object(out.captures().clone()),
            json!({"domain": "api.example.com", "url": "https://api.example.com/v1/things?limit=2",
                   "path": "/v1/things", "method": "GET"})
        );
    }

    #[test]
    fn switches_turn_captures_off() {
        let off = json!({"captureDomain": false, "captureUrl": false, "capturePath": true, "captureMethod": false});
        let out = pre(&input(json!({"request": request(), "configuration": off})));
        assert_eq!(
            Value::Object(out.captures().clone()),
            json!({"path": "/v1/things"})
        );

        let off = json!({"captureStatus": false, "captureDuration": false, "captureError": false});
        let out = post(&input(json!({"request": request(), "configuration": off,
            "response": {"status": 500, "headers": [], "body": {"error": "boom"}},
            "timing": {"requestStartMs": 1.0, "responseEndMs": 5.0}})));
        assert!(out.is_empty());
    }

    #[test]
    fn credential_query_parameters_are_redacted_as_configured() {
        let url = "https://api.example.com/v1/things?Access_Token=abc&limit=2&sig=zz";
        let mut request = request();
        request["url"] = json!(url);
        let url_of = |configuration: Value| {
            let input = input(json!({"request": request, "configuration": configuration}));
            taskless_pack_kit::call_hook(pre, &input).captures()["url"].clone()
        };
        assert_eq!(
            url_of(json!({})),
            json!("https://api.example.com/v1/things?Access_Token=REDACTED&limit=2&sig=REDACTED")
        );
        assert_eq!(
            url_of(json!({"redactQueryParameters": ["LIMIT"]})),
            json!("https://api.example.com/v1/things?Access_Token=abc&limit=REDACTED&sig=zz")
        );
        assert_eq!(url_of(json!({"redactQueryParameters": []})), json!(url));
    }

    #[test]
    fn other_domains_are_left_alone() {
        let config = json!({"domains": ["*.stripe.com"]});
        assert!(
            pre(&input(
                json!({"request": request(), "configuration": config})
            ))
            .is_empty()
        );
        let out = post(&input(
            json!({"request": request(), "configuration": config,
            "response": {"status": 200, "headers": []}}),
        ));
        assert!(out.is_empty());
    }

    #[test]
    fn duration_comes_from_the_exchange_timing_rounded() {
        let out = post(&input(json!({"request": request(),
            "response": {"status": 200, "headers": []},
            "timing": {"requestStartMs": 1700000000000.25, "requestEndMs": 1700000000001.0,
                       "responseStartMs": 1700000000120.0, "responseEndMs": 1700000000142.8}})));
        assert_eq!(out.captures()["durationMs"], json!(143));
        assert_eq!(out.captures()["status"], json!(200));
    }

    #[test]
    fn no_timing_means_no_duration() {
        let out = post(&input(
            json!({"request": request(), "response": {"status": 200, "headers": []}}),
        ));
        assert!(!out.captures().contains_key("durationMs"));
    }

    #[test]
    fn errors_only_for_failed_calls() {
        let ok = post(&input(json!({"request": request(),
            "response": {"status": 200, "headers": [], "body": {"error": "not really"}}})));
        assert!(!ok.captures().contains_key("error"));
    }

    #[test]
    fn error_follows_the_documented_order() {
        assert_eq!(
            error_of(&json!({"error": "invalid_grant", "message": "m"})).as_deref(),
            Some("invalid_grant")
        );
        assert_eq!(
            error_of(&json!({"error": {"type": "card_error"}, "message": "m"})).as_deref(),
            Some("card_error")
        );
        assert_eq!(
            error_of(&json!({"error": {"code": 1}, "message": "Not Found"})).as_deref(),
            Some("Not Found")
        );
        assert_eq!(
            error_of(&json!({"err": {"type": "E_LIMIT"}})).as_deref(),
            Some("E_LIMIT")
        );
        assert_eq!(error_of(&json!({"detail": "x"})), None);
        assert_eq!(error_of(&json!("plain text")), None);
    }
}
