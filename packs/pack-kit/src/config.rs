//! Typed access to a pack's settings (`configuration`).

use serde_json::{Map, Value};

/// The pack's settings as delivered in the input. Every getter falls back to `None` when the
/// setting is absent or of another type, so packs apply their documented defaults.
#[derive(Debug, Clone, Copy)]
pub struct Config<'a> {
    values: &'a Map<String, Value>,
}

impl<'a> Config<'a> {
    /// Wraps a `configuration` object.
    pub fn new(values: &'a Map<String, Value>) -> Self {
        Self { values }
    }

    /// A boolean setting, or `default`.
    pub fn bool(&self, name: &str, default: bool) -> bool {
        self.values
            .get(name)
            .and_then(Value::as_bool)
            .unwrap_or(default)
    }

    /// A number setting.
    pub fn number(&self, name: &str) -> Option<f64> {
        self.values.get(name).and_then(Value::as_f64)
    }

    /// A string setting.
    pub fn string(&self, name: &str) -> Option<&'a str> {
        self.values.get(name).and_then(Value::as_str)
    }

    /// A `string[]` setting. Non-string entries are skipped; a single string counts as a list of
    /// one.
    pub fn strings(&self, name: &str) -> Option<Vec<&'a str>> {
        match self.values.get(name)? {
            Value::Array(items) => Some(items.iter().filter_map(Value::as_str).collect()),
            Value::String(s) => Some(vec![s.as_str()]),
            _ => None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn getters_fall_back_when_absent_or_mistyped() {
        let map = json!({"on": true, "n": 3, "s": "x", "list": ["a", 1, "b"], "one": "c"});
        let Value::Object(map) = map else {
            unreachable!()
        };
        let c = Config::new(&map);
        assert!(c.bool("on", false));
        assert!(!c.bool("missing", false));
        assert!(
            c.bool("n", true),
            "a number is not a boolean: default applies"
        );
        assert_eq!(c.number("n"), Some(3.0));
        assert_eq!(c.string("s"), Some("x"));
        assert_eq!(c.strings("list"), Some(vec!["a", "b"]));
        assert_eq!(c.strings("one"), Some(vec!["c"]));
        assert_eq!(c.strings("n"), None);
    }
}
