//! What packs return, and the NDJSON line built from it.

use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

/// One captured value: `<pack name>/<key>` and the value as a string.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Dimension {
    /// `<pack name>/<key with "/" removed>`.
    pub name: String,
    /// The captured value as a string.
    pub value: String,
}

/// One NDJSON line: everything the packs captured for one request.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct OutputLine {
    /// The request id packs saw (32 lower-case hex).
    #[serde(rename = "requestId")]
    pub request_id: String,
    /// Captures of every pack, in the order they were made.
    pub dimensions: Vec<Dimension>,
    /// Names of the packs skipped for this request because their worker fell behind
    /// ([`Session::shed`](crate::Session::shed)); absent from the JSON when none were.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub skipped: Vec<String>,
}

impl OutputLine {
    /// The line as JSON, without the trailing newline.
    #[must_use]
    pub fn to_json(&self) -> String {
        // Strings and a Vec of plain structs always serialize.
        serde_json::to_string(self).unwrap_or_default()
    }
}

/// A hook's parsed output.
#[derive(Debug, Default, PartialEq)]
pub(crate) struct HookOutput {
    pub captures: Vec<(String, String)>,
    /// `Some` when the pack returned a context (it replaces the stored one).
    pub context: Option<Value>,
}

/// Why a hook's output was rejected.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub(crate) enum OutputError {
    #[error("output is not JSON: {0}")]
    NotJson(String),
    #[error("output is not a JSON object")]
    NotObject,
    #[error("capture is not an object")]
    CaptureNotObject,
}

/// Parses `{"capture": {...}, "context": {...}}`; empty output (or only whitespace) means
/// nothing was returned. Capture values that are strings are kept as they are, numbers and
/// booleans become their JSON text, objects and arrays their compact JSON, and `null` is dropped.
pub(crate) fn parse_output(bytes: &[u8]) -> Result<HookOutput, OutputError> {
    if bytes.iter().all(u8::is_ascii_whitespace) {
        return Ok(HookOutput::default());
    }
    let value: Value =
        serde_json::from_slice(bytes).map_err(|e| OutputError::NotJson(e.to_string()))?;
    let Value::Object(mut map) = value else {
        return Err(OutputError::NotObject);
    };
    let captures = match map.remove("capture") {
        None | Some(Value::Null) => Vec::new(),
        Some(Value::Object(c)) => captures(c),
        Some(_) => return Err(OutputError::CaptureNotObject),
    };
    let context = match map.remove("context") {
        None | Some(Value::Null) => None,
        Some(v) => Some(v),
    };
    Ok(HookOutput { captures, context })
}

fn captures(map: Map<String, Value>) -> Vec<(String, String)> {
    map.into_iter()
        .filter_map(|(k, v)| {
            let value = match v {
                Value::Null => return None,
                Value::String(s) => s,
                other => other.to_string(),
            };
            Some((k.replace('/', ""), value))
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn captures_become_strings_with_slashes_removed() {
        let out = parse_output(
            br#"{"capture":{"status":200,"a/b":"x","ok":true,"n":null,"f":1.5},"context":{"k":1}}"#,
        )
        .expect("valid");
        assert_eq!(
            out.captures,
            // In key order (serde_json maps are sorted).
            vec![
                ("ab".to_string(), "x".to_string()),
                ("f".to_string(), "1.5".to_string()),
                ("ok".to_string(), "true".to_string()),
                ("status".to_string(), "200".to_string()),
            ]
        );
        assert_eq!(out.context, Some(json!({"k": 1})));
    }

    #[test]
    fn empty_output_is_nothing_and_garbage_is_an_error() {
        assert_eq!(parse_output(b"").expect("empty"), HookOutput::default());
        assert_eq!(parse_output(b" \n").expect("blank"), HookOutput::default());
        assert_eq!(
            parse_output(b"{}").expect("empty object"),
            HookOutput::default()
        );
        assert!(matches!(
            parse_output(b"{nope"),
            Err(OutputError::NotJson(_))
        ));
        assert_eq!(parse_output(b"[1]"), Err(OutputError::NotObject));
        assert_eq!(
            parse_output(br#"{"capture":[1]}"#),
            Err(OutputError::CaptureNotObject)
        );
    }

    #[test]
    fn output_line_serializes_as_the_taskless_ndjson_shape() {
        let line = OutputLine {
            request_id: "0190f1a2b3c47d8e9f00112233445566".into(),
            dimensions: vec![Dimension {
                name: "core/status".into(),
                value: "200".into(),
            }],
            skipped: Vec::new(),
        };
        assert_eq!(
            line.to_json(),
            r#"{"requestId":"0190f1a2b3c47d8e9f00112233445566","dimensions":[{"name":"core/status","value":"200"}]}"#
        );
        let shed = OutputLine {
            skipped: vec!["pii".into()],
            ..line
        };
        assert_eq!(
            shed.to_json(),
            r#"{"requestId":"0190f1a2b3c47d8e9f00112233445566","dimensions":[{"name":"core/status","value":"200"}],"skipped":["pii"]}"#
        );
    }
}
