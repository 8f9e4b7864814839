//! What a hook returns: captures and the context to keep for the exchange's next hook.

use serde_json::{Map, Number, Value};

/// A capture's value: the pre2 contract allows strings and numbers only.
#[derive(Debug, Clone, PartialEq)]
pub enum Capture {
    /// A string value.
    Text(String),
    /// A number value (integers stay exact).
    Number(Number),
}

impl From<&str> for Capture {
    fn from(v: &str) -> Self {
        Capture::Text(v.to_owned())
    }
}
impl From<String> for Capture {
    fn from(v: String) -> Self {
        Capture::Text(v)
    }
}
impl From<&String> for Capture {
    fn from(v: &String) -> Self {
        Capture::Text(v.clone())
    }
}
macro_rules! capture_from_int {
    ($($t:ty),*) => {$(
        impl From<$t> for Capture {
            fn from(v: $t) -> Self {
                Capture::Number(Number::from(v))
            }
        }
    )*};
}
capture_from_int!(u8, u16, u32, u64, i32, i64, usize);

impl From<f64> for Capture {
    /// A non-finite number has no JSON form and becomes the text `NaN`, `inf` or `-inf`.
    fn from(v: f64) -> Self {
        match Number::from_f64(v) {
            Some(n) => Capture::Number(n),
            // Spelled out rather than formatted: float formatting costs kilobytes of Wasm.
            None if v.is_nan() => Capture::Text("NaN".to_owned()),
            None if v > 0.0 => Capture::Text("inf".to_owned()),
            None => Capture::Text("-inf".to_owned()),
        }
    }
}

impl From<Capture> for Value {
    fn from(c: Capture) -> Self {
        match c {
            Capture::Text(s) => Value::String(s),
            Capture::Number(n) => Value::Number(n),
        }
    }
}

/// A hook's result. Empty output (no captures, no context) means "nothing".
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Output {
    capture: Map<String, Value>,
    context: Option<Value>,
}

impl Output {
    /// An empty output.
    pub fn new() -> Self {
        Self::default()
    }

    /// Records capture `key` (a later call with the same key replaces the value).
    pub fn capture(&mut self, key: &str, value: impl Into<Capture>) -> &mut Self {
        self.capture.insert(key.to_owned(), value.into().into());
        self
    }

    /// Records capture `key` when `value` is present.
    pub fn capture_opt<T: Into<Capture>>(&mut self, key: &str, value: Option<T>) -> &mut Self {
        if let Some(v) = value {
            self.capture(key, v);
        }
        self
    }

    /// Captures, for each `(key, path)`, the string or number found at `path` in `value`
    /// (see [`crate::get_path`] and [`crate::scalar`]); absent, null or other values are skipped.
    pub fn capture_paths(&mut self, value: &Value, fields: &[(&str, &[&str])]) -> &mut Self {
        for (key, path) in fields {
            let found = crate::get_path(value, path).and_then(crate::scalar);
            self.capture_opt(key, found);
        }
        self
    }

    /// Keeps only the captures whose key `keep` accepts.
    pub fn retain_captures(&mut self, mut keep: impl FnMut(&str) -> bool) -> &mut Self {
        self.capture.retain(|key, _| keep(key));
        self
    }

    /// Adds `other`'s captures (replacing same-named ones) and, when it has one, its context.
    pub fn extend(&mut self, other: Output) -> &mut Self {
        self.capture.extend(other.capture);
        if other.context.is_some() {
            self.context = other.context;
        }
        self
    }

    /// Redacts the credential-like query parameters `names` in every text capture (see
    /// [`crate::redact_query`]).
    pub fn redact_queries(&mut self, names: &[&str]) -> &mut Self {
        for value in self.capture.values_mut() {
            if let Value::String(text) = value
                && let std::borrow::Cow::Owned(redacted) = crate::redact_query(text, names)
            {
                *text = redacted;
            }
        }
        self
    }

    /// Replaces the context stored for this exchange (the host does not merge).
    pub fn set_context(&mut self, context: Value) -> &mut Self {
        self.context = Some(context);
        self
    }

    /// The captures recorded so far.
    pub fn captures(&self) -> &Map<String, Value> {
        &self.capture
    }

    /// The context to store, if one was set.
    pub fn context(&self) -> Option<&Value> {
        self.context.as_ref()
    }

    /// True when there is nothing to return.
    pub fn is_empty(&self) -> bool {
        self.capture.is_empty() && self.context.is_none()
    }

    /// The pre2 JSON document: `{"capture": {...}, "context": {...}}`, each part only when set.
    pub fn to_json(&self) -> Result<String, serde_json::Error> {
        // Written piece by piece rather than through a `Value`, which would copy every capture.
        let mut doc = Vec::with_capacity(64);
        doc.push(b'{');
        if !self.capture.is_empty() {
            doc.extend_from_slice(b"\"capture\":");
            serde_json::to_writer(&mut doc, &self.capture)?;
        }
        if let Some(context) = &self.context {
            if doc.len() > 1 {
                doc.push(b',');
            }
            doc.extend_from_slice(b"\"context\":");
            serde_json::to_writer(&mut doc, context)?;
        }
        doc.push(b'}');
        // serde_json writes UTF-8 only, so this never falls back.
        Ok(String::from_utf8(doc).unwrap_or_default())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn serializes_only_what_was_set() {
        assert_eq!(Output::new().to_json().expect("json"), "{}");
        let mut out = Output::new();
        out.capture("status", 402u16).capture("error", "card_error");
        assert_eq!(
            out.to_json().expect("json"),
            r#"{"capture":{"error":"card_error","status":402}}"#
        );
        out.set_context(json!({"seen": 1}));
        let v: Value = serde_json::from_str(&out.to_json().expect("json")).expect("valid");
        assert_eq!(v["context"], json!({"seen": 1}));
    }

    #[test]
    fn numbers_keep_their_kind() {
        let mut out = Output::new();
        out.capture("i", 7i64)
            .capture("f", 1.5)
            .capture("nan", f64::NAN);
        assert_eq!(out.captures()["i"], json!(7));
        assert_eq!(out.captures()["f"], json!(1.5));
        assert_eq!(out.captures()["nan"], json!("NaN"));
    }

    #[test]
    fn paths_capture_scalars_only() {
        let body =
            json!({"error": {"type": "card_error", "param": null, "code": 7, "x": {"y": 1}}});
        let mut out = Output::new();
        out.capture_paths(
            &body,
            &[
                ("type", &["error", "type"]),
                ("param", &["error", "param"]),
                ("code", &["error", "code"]),
                ("x", &["error", "x"]),
                ("missing", &["nope"]),
            ],
        );
        assert_eq!(
            Value::Object(out.captures().clone()),
            json!({"type": "card_error", "code": 7})
        );
    }

    #[test]
    fn retain_and_extend_combine_outputs() {
        let mut a = Output::new();
        a.capture("keep", 1u8).capture("drop", 2u8);
        a.retain_captures(|k| k != "drop");
        let mut b = Output::new();
        b.capture("keep", 3u8)
            .capture("new", "x")
            .set_context(json!({"c": 1}));
        a.extend(b);
        assert_eq!(
            Value::Object(a.captures().clone()),
            json!({"keep": 3, "new": "x"})
        );
        assert_eq!(a.context(), Some(&json!({"c": 1})));
    }

    #[test]
    fn optional_captures_are_skipped_when_absent() {
        let mut out = Output::new();
        out.capture_opt("a", None::<&str>)
            .capture_opt("b", Some("x"));
        assert_eq!(out.captures().len(), 1);
        assert!(!out.is_empty());
    }
}
