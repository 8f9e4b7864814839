//! The JSON document every hook receives.

use std::rc::Rc;

use serde_json::{Map, Value};

use crate::{Body, Config, Headers};

/// Why a hook's input could not be read.
#[derive(Debug, thiserror::Error)]
pub enum InputError {
    /// The input is not JSON.
    #[error("hook input is not JSON: {0}")]
    Json(#[from] serde_json::Error),
    /// The input is JSON but not an object.
    #[error("hook input is not a JSON object")]
    NotAnObject,
    /// The input object is cut short or broken where the kit reads its members.
    #[error("hook input is not valid JSON: {0}")]
    Malformed(String),
}

/// One hook call's input: the exchange as far as it is known, plus the pack's own state.
#[derive(Debug, Clone, Default)]
pub struct Input {
    /// 32 lowercase hex characters identifying the exchange.
    pub request_id: String,
    /// The request, always present.
    pub request: Request,
    /// The response head and body; given to `post` (and to `chunk` when the host has it).
    pub response: Option<Response>,
    /// Base64 of one piece of the response body (`chunk` only); absent on the last chunk call.
    pub chunk: Option<String>,
    /// What this pack returned as context earlier for this exchange; `{}` at first.
    pub context: Map<String, Value>,
    /// The host environment variables the manifest asked for.
    pub environment: Map<String, Value>,
    /// The pack's settings: `config.json`'s configuration over the fields' defaults. Shared
    /// between calls with the same settings, which are parsed once per instance.
    pub configuration: Rc<Map<String, Value>>,
    /// When the exchange's bytes went by, as Unix epoch milliseconds.
    pub timing: Option<Timing>,
}

/// The request side of the exchange.
#[derive(Debug, Clone, Default)]
pub struct Request {
    /// Host name only, e.g. `api.stripe.com`.
    pub domain: String,
    /// The path, without the query string.
    pub path: String,
    /// The full URL, with the query string.
    pub url: String,
    /// The method, e.g. `POST`.
    pub method: String,
    /// Header pairs, names in lower case, in the order sent.
    pub headers: Headers,
    /// The body: JSON when it was valid JSON, else its text as a JSON string, parsed on first
    /// use ([`Request::body_json`]). Only with `permissions.body`.
    pub body: Option<Body>,
}

/// The response side of the exchange.
#[derive(Debug, Clone, Default)]
pub struct Response {
    /// The HTTP status code.
    pub status: u16,
    /// Header pairs, names in lower case (without content-encoding and content-length).
    pub headers: Headers,
    /// The decoded body: JSON when it was valid JSON, else its text as a JSON string, parsed on
    /// first use ([`Response::body_json`]). Only with `permissions.body`.
    pub body: Option<Body>,
}

/// The exchange's timestamps, Unix epoch milliseconds with a fraction.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct Timing {
    /// The first request byte was written.
    pub request_start_ms: Option<f64>,
    /// The last request byte was written.
    pub request_end_ms: Option<f64>,
    /// The first response byte was read (`chunk` and `post` only).
    pub response_start_ms: Option<f64>,
    /// The last response byte was read (`chunk` and `post` only).
    pub response_end_ms: Option<f64>,
}

impl Request {
    /// The body parsed as JSON (on first use), when there is one.
    pub fn body_json(&self) -> Option<&Value> {
        self.body.as_ref().and_then(Body::json)
    }
}

impl Response {
    /// The body parsed as JSON (on first use), when there is one.
    pub fn body_json(&self) -> Option<&Value> {
        self.body.as_ref().and_then(Body::json)
    }
}

impl Timing {
    /// The API's latency: last response byte minus first request byte, in whole milliseconds.
    ///
    /// `None` when either end is missing or the difference is not a sane duration.
    pub fn duration_ms(&self) -> Option<u64> {
        let start = self.request_start_ms?;
        let end = self.response_end_ms?;
        let duration = (end - start).round();
        if duration.is_finite() && duration >= 0.0 && duration < u64::MAX as f64 {
            // The range was checked just above, so the cast cannot truncate.
            #[allow(clippy::cast_possible_truncation, clippy::cast_sign_loss)]
            Some(duration as u64)
        } else {
            None
        }
    }
}

impl Input {
    /// Parses a hook's JSON input.
    ///
    /// Reading is lenient past the top level: a missing or mistyped field reads as absent (or
    /// empty), so a host that adds fields or omits optional ones does not break packs. Bodies
    /// stay JSON text until a pack reads them ([`Body`]), and the settings are parsed once per
    /// instance. The input is read by hand rather than through derived deserializers, which
    /// keeps every pack's Wasm tens of kilobytes smaller and reads only what packs use.
    pub fn from_json(bytes: &[u8]) -> Result<Self, InputError> {
        crate::input_json::read_input(bytes, false)
    }

    /// Parses the input of a hook call made by a host into this instance: as
    /// [`Input::from_json`], except that an input without `configuration` carries the settings
    /// of the last input that had them. A host gives the configuration only in an instance's
    /// first call to a pack whose manifest says `"configurationOnce": true`.
    pub fn from_hook_call(bytes: &[u8]) -> Result<Self, InputError> {
        crate::input_json::read_input(bytes, true)
    }

    /// The pack's settings.
    pub fn config(&self) -> Config<'_> {
        Config::new(&self.configuration)
    }

    /// True when the request's domain matches one of the `domains` setting's patterns
    /// (or `default` when the setting is absent).
    pub fn in_domains(&self, default: &[&str]) -> bool {
        let patterns = self.config().strings("domains");
        match patterns {
            Some(patterns) => crate::any_domain_matches(&patterns, &self.request.domain),
            None => crate::any_domain_matches(default, &self.request.domain),
        }
    }

    /// The status code, when the response is known.
    pub fn status(&self) -> Option<u16> {
        self.response.as_ref().map(|r| r.status)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_a_post_input_with_everything() {
        let input = Input::from_json(
            br#"{
              "requestId": "0190aa11bb22cc33dd44ee55ff667788",
              "request": {"domain": "api.stripe.com", "path": "/v1/charges",
                          "url": "https://api.stripe.com/v1/charges?x=1", "method": "POST",
                          "headers": [["content-type", "application/json"], ["x-a", "1"]],
                          "body": {"amount": 100}},
              "response": {"status": 402, "headers": [["request-id", "req_1"]], "body": "oops"},
              "context": {"n": 1},
              "configuration": {"domains": ["*"]},
              "timing": {"requestStartMs": 1000.25, "requestEndMs": 1001.0,
                         "responseStartMs": 1100.0, "responseEndMs": 1150.75}
            }"#,
        )
        .expect("valid input");
        assert_eq!(input.request.method, "POST");
        assert_eq!(input.request.headers.get("X-A"), Some("1"));
        assert_eq!(input.status(), Some(402));
        assert_eq!(
            input.response.as_ref().and_then(Response::body_json),
            Some(&Value::from("oops"))
        );
        assert_eq!(input.context.get("n"), Some(&Value::from(1)));
        assert_eq!(input.timing.and_then(|t| t.duration_ms()), Some(151));
    }

    #[test]
    fn a_minimal_pre_input_parses_with_defaults() {
        let input = Input::from_json(br#"{"request": {"domain": "x.io", "path": "/", "url": "https://x.io/", "method": "GET", "headers": []}}"#)
            .expect("valid input");
        assert!(input.response.is_none());
        assert!(input.timing.is_none());
        assert!(input.context.is_empty());
    }

    #[test]
    fn null_context_and_configuration_read_as_empty() {
        let input = Input::from_json(
            br#"{"request": {"domain": "x.io"}, "context": null, "configuration": null}"#,
        )
        .expect("valid input");
        assert!(input.context.is_empty());
        assert!(input.configuration.is_empty());
    }

    #[test]
    fn mistyped_fields_read_as_absent() {
        let input = Input::from_json(
            br#"{"request": {"domain": 7, "headers": {"a": "b"}, "body": null},
                 "response": {"status": 70000, "headers": [["a"], ["b", "c"], 5]},
                 "chunk": 12, "timing": {"requestStartMs": "1", "responseEndMs": 3}}"#,
        )
        .expect("lenient");
        assert_eq!(input.request.domain, "");
        assert!(input.request.headers.pairs().is_empty());
        assert!(input.request.body.is_none());
        let response = input.response.expect("response");
        assert_eq!(response.status, 0);
        assert_eq!(response.headers.pairs(), [("b".to_owned(), "c".to_owned())]);
        assert!(input.chunk.is_none());
        assert_eq!(input.timing.and_then(|t| t.request_start_ms), None);
        assert_eq!(input.timing.and_then(|t| t.response_end_ms), Some(3.0));
    }

    #[test]
    fn rejects_input_that_is_not_an_object() {
        assert!(Input::from_json(b"[1,2]").is_err());
        assert!(Input::from_json(b"not json").is_err());
    }

    #[test]
    fn duration_needs_both_ends() {
        let t = Timing {
            request_start_ms: Some(10.0),
            ..Timing::default()
        };
        assert_eq!(t.duration_ms(), None);
        let t = Timing {
            response_end_ms: Some(10.0),
            ..Timing::default()
        };
        assert_eq!(t.duration_ms(), None);
        let t = Timing {
            request_start_ms: Some(20.0),
            response_end_ms: Some(10.0),
            ..Timing::default()
        };
        assert_eq!(t.duration_ms(), None, "a negative duration is not reported");
        let t = Timing {
            request_start_ms: Some(10.0),
            response_end_ms: Some(12.5),
            ..Timing::default()
        };
        assert_eq!(t.duration_ms(), Some(3));
    }

    #[test]
    fn in_domains_uses_the_setting_over_the_default() {
        let mut input = Input::default();
        input.request.domain = "api.openai.com".into();
        assert!(input.in_domains(&["api.openai.com"]));
        assert!(!input.in_domains(&["api.stripe.com"]));
        Rc::make_mut(&mut input.configuration)
            .insert("domains".into(), serde_json::json!(["*.stripe.com"]));
        assert!(!input.in_domains(&["api.openai.com"]));
        input.request.domain = "api.stripe.com".into();
        assert!(input.in_domains(&["api.openai.com"]));
    }
}
