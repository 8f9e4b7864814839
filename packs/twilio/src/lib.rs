//! The Twilio pack: Twilio's numeric error code, message and documentation link for failed
//! calls, the request id, and for messages and calls the resource's own status and error code.
//!
//! Twilio errors are `{"code": 21211, "message": "...", "more_info":
//! "https://www.twilio.com/docs/errors/21211", "status": 400}`. A message or call resource
//! (status 200 or 201) has a `status` such as `queued` or `failed` and, once delivery failed, an
//! `error_code` and `error_message`.

use serde_json::Value;
use taskless_pack_kit::{Input, Output};

taskless_pack_kit::export_hooks!(post = post);

/// Hosts handled when the `domains` setting is absent.
const DEFAULT_DOMAINS: &[&str] = &["api.twilio.com", "*.twilio.com"];

/// Error body fields, as `(capture key, path)`.
const ERROR: &[(&str, &[&str])] = &[
    ("errorCode", &["code"]),
    ("message", &["message"]),
    ("moreInfo", &["more_info"]),
];

/// Message and call resource fields, as `(capture key, path)`.
const RESOURCE: &[(&str, &[&str])] = &[
    ("resourceStatus", &["status"]),
    ("errorCode", &["error_code"]),
    ("message", &["error_message"]),
];

/// Captures `status`, `requestId` and the error or resource fields.
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
    out.capture_opt("requestId", response.headers.get("twilio-request-id"));
    let Some(body @ Value::Object(_)) = response.body_json() else {
        return out;
    };
    if response.status >= 400 {
        out.capture_paths(body, ERROR);
    } else if input.config().bool("captureResourceStatus", true)
        && body.get("status").is_some_and(Value::is_string)
    {
        out.capture_paths(body, RESOURCE);
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

    fn request(domain: &str) -> Value {
        json!({"domain": domain, "path": "/2010-04-01/Accounts/AC1/Messages.json",
               "url": format!("https://{domain}/2010-04-01/Accounts/AC1/Messages.json"), "method": "POST", "headers": []})
    }

    #[test]
    fn an_error_gives_code_message_and_link() {
        let body = json!({"code": 21211, "message": "The 'To' number 5551234 is not a valid phone number.",
                          "more_info": "https://www.twilio.com/docs/errors/21211", "status": 400});
        let out = post(&input(json!({"request": request("api.twilio.com"),
            "response": {"status": 400, "headers": [["twilio-request-id", "RQ1"]], "body": body}})));
        assert_eq!(
            Value::Object(out.captures().clone()),
            json!({"status": 400, "requestId": "RQ1", "errorCode": 21211,
                   "message": "The 'To' number 5551234 is not a valid phone number.",
                   "moreInfo": "https://www.twilio.com/docs/errors/21211"})
        );
    }

    #[test]
    fn a_failed_message_resource_gives_its_status_and_error() {
        let body = json!({"sid": "SM1", "status": "failed", "error_code": 30008, "error_message": "Unknown error"});
        let out = post(&input(json!({"request": request("api.twilio.com"),
            "response": {"status": 200, "headers": [], "body": body}})));
        assert_eq!(
            Value::Object(out.captures().clone()),
            json!({"status": 200, "resourceStatus": "failed", "errorCode": 30008, "message": "Unknown error"})
        );
        let off = post(&input(
            json!({"request": request("api.twilio.com"), "configuration": {"captureResourceStatus": false},
            "response": {"status": 200, "headers": [], "body": body}}),
        ));
        assert_eq!(
            Value::Object(off.captures().clone()),
            json!({"status": 200})
        );
    }

    #[test]
    fn other_twilio_hosts_match_and_foreign_hosts_do_not() {
        let out = post(&input(
            json!({"request": request("verify.twilio.com"), "response": {"status": 204, "headers": []}}),
        ));
        assert_eq!(
            Value::Object(out.captures().clone()),
            json!({"status": 204})
        );
        let out = post(&input(
            json!({"request": request("api.twilio.com.example.org"),
            "response": {"status": 204, "headers": []}}),
        ));
        assert!(out.is_empty());
    }
}
