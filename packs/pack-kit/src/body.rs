//! Message bodies as hooks receive them, and reading values out of a parsed JSON body.

use std::cell::OnceCell;

use serde_json::Value;

use crate::Capture;

/// A request or response body as the host delivered it: JSON text, parsed only when a pack asks
/// for it. The host gives a body that is valid JSON as that JSON and any other body as a JSON
/// string holding its text, so a pack that reads bodies only on errors pays nothing on the rest.
#[derive(Debug, Clone)]
pub struct Body {
    /// The body's JSON text, checked when the input was read.
    raw: Box<str>,
    parsed: OnceCell<Option<Value>>,
}

impl Body {
    /// A body from its JSON text as it appeared in the input (already checked as JSON).
    pub(crate) fn from_json_text(raw: &str) -> Self {
        Self {
            raw: raw.into(),
            parsed: OnceCell::new(),
        }
    }

    /// A body holding `value` (tests, and packs that build inputs).
    pub fn from_value(value: Value) -> Self {
        Self {
            raw: value.to_string().into(),
            parsed: OnceCell::from(Some(value)),
        }
    }

    /// The body as JSON text, exactly as the host sent it (a text body is a JSON string).
    pub fn raw_json(&self) -> &str {
        &self.raw
    }

    /// The body parsed, on first use. `None` only when it cannot be parsed into a value (JSON
    /// nested deeper than `serde_json` allows).
    pub fn json(&self) -> Option<&Value> {
        self.parsed
            .get_or_init(|| serde_json::from_slice(self.raw.as_bytes()).ok())
            .as_ref()
    }

    /// The text of a body that is not JSON (a JSON string), without parsing anything else.
    pub fn text(&self) -> Option<&str> {
        if !self.raw.starts_with('"') {
            return None;
        }
        self.json().and_then(Value::as_str)
    }
}

/// The value at `path` (object keys, or array indexes written as numbers) inside `value`.
///
/// ```
/// # use serde_json::json;
/// let body = json!({"error": {"type": "card_error"}, "choices": [{"finish_reason": "stop"}]});
/// assert_eq!(taskless_pack_kit::get_path(&body, &["error", "type"]), Some(&json!("card_error")));
/// assert_eq!(taskless_pack_kit::get_path(&body, &["choices", "0", "finish_reason"]), Some(&json!("stop")));
/// ```
pub fn get_path<'a>(value: &'a Value, path: &[&str]) -> Option<&'a Value> {
    path.iter().try_fold(value, |current, key| match current {
        Value::Object(map) => map.get(*key),
        Value::Array(items) => key.parse::<usize>().ok().and_then(|i| items.get(i)),
        _ => None,
    })
}

/// A string or number JSON value as a capture; `None` for null, booleans, arrays and objects
/// (and for empty strings, which carry nothing worth a dimension).
pub fn scalar(value: &Value) -> Option<Capture> {
    match value {
        Value::String(s) if !s.is_empty() => Some(Capture::Text(s.clone())),
        Value::Number(n) => Some(Capture::Number(n.clone())),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn paths_walk_objects_and_arrays() {
        let v = json!({"a": {"b": [10, {"c": "x"}]}});
        assert_eq!(get_path(&v, &["a", "b", "1", "c"]), Some(&json!("x")));
        assert_eq!(get_path(&v, &["a", "b", "0"]), Some(&json!(10)));
        assert_eq!(get_path(&v, &["a", "b", "2"]), None);
        assert_eq!(get_path(&v, &["a", "x"]), None);
        assert_eq!(get_path(&v, &["a", "b", "c"]), None);
        assert_eq!(get_path(&v, &[]), Some(&v));
    }

    #[test]
    fn scalars_are_strings_and_numbers_only() {
        assert_eq!(scalar(&json!("x")), Some(Capture::Text("x".into())));
        assert!(matches!(scalar(&json!(3)), Some(Capture::Number(_))));
        assert_eq!(scalar(&json!("")), None);
        assert_eq!(scalar(&json!(null)), None);
        assert_eq!(scalar(&json!(true)), None);
        assert_eq!(scalar(&json!({"a": 1})), None);
    }

    #[test]
    fn a_body_is_parsed_on_first_use_only() {
        let body = Body::from_json_text(r#"{"a": [1, 2]}"#);
        assert!(body.parsed.get().is_none(), "nothing parsed before use");
        assert_eq!(body.raw_json(), r#"{"a": [1, 2]}"#);
        assert_eq!(body.json(), Some(&json!({"a": [1, 2]})));
        assert!(body.parsed.get().is_some());
        assert_eq!(body.text(), None);
        let text = Body::from_value(json!("a=1&b=2"));
        assert_eq!(text.text(), Some("a=1&b=2"));
        assert_eq!(text.raw_json(), r#""a=1&b=2""#);
    }

    #[test]
    fn a_body_too_deep_to_parse_reads_as_absent() {
        let deep = format!("{}{}", "[".repeat(200), "]".repeat(200));
        let body = Body::from_json_text(&deep);
        assert_eq!(body.json(), None);
    }
}
