//! Header pairs and lookup by name.

use std::cell::OnceCell;

use serde_json::Value;

/// Header pairs in the order they were sent. Names arrive in lower case; lookups ignore case
/// anyway so packs can spell names as the API's documentation does.
///
/// Read from a hook's input, the pairs are kept as the input's JSON text and read into strings
/// on first use: a pack that never looks at a header (core) does not pay for them.
#[derive(Clone, Default)]
pub struct Headers {
    /// `[[name, value], ...]` as the host wrote it, not yet read.
    raw: Option<Box<[u8]>>,
    pairs: OnceCell<Vec<(String, String)>>,
}

impl From<Vec<(String, String)>> for Headers {
    fn from(pairs: Vec<(String, String)>) -> Self {
        Self {
            raw: None,
            pairs: OnceCell::from(pairs),
        }
    }
}

impl PartialEq for Headers {
    fn eq(&self, other: &Self) -> bool {
        self.pairs() == other.pairs()
    }
}

impl Eq for Headers {}

impl std::fmt::Debug for Headers {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_tuple("Headers").field(&self.pairs()).finish()
    }
}

impl Headers {
    /// Headers from the JSON text of their array, read on first use (entries that are not two
    /// strings are skipped then; text that is not such an array reads as no headers).
    pub(crate) fn from_json_text(raw: &[u8]) -> Self {
        Self {
            raw: Some(raw.into()),
            pairs: OnceCell::new(),
        }
    }

    /// The `(name, value)` pairs, in order.
    pub fn pairs(&self) -> &[(String, String)] {
        self.pairs.get_or_init(|| {
            self.raw
                .as_deref()
                .map(crate::input_json::header_pairs)
                .unwrap_or_default()
        })
    }

    /// Reads `[[name, value], ...]`; entries that are not two strings are skipped.
    pub fn from_value(value: Option<Value>) -> Self {
        let Some(Value::Array(items)) = value else {
            return Self::default();
        };
        let pairs = items
            .into_iter()
            .filter_map(|item| match item {
                Value::Array(pair) => match <[Value; 2]>::try_from(pair) {
                    Ok([Value::String(n), Value::String(v)]) => Some((n, v)),
                    _ => None,
                },
                _ => None,
            })
            .collect::<Vec<_>>();
        Self::from(pairs)
    }

    /// The first value of header `name`.
    pub fn get(&self, name: &str) -> Option<&str> {
        self.pairs()
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }

    /// Every value of header `name`, in order.
    pub fn get_all<'a>(&'a self, name: &'a str) -> impl Iterator<Item = &'a str> + 'a {
        self.pairs()
            .iter()
            .filter(move |(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }

    /// The first value of header `name` read as an integer (surrounding spaces ignored).
    pub fn get_i64(&self, name: &str) -> Option<i64> {
        self.get(name)?.trim().parse().ok()
    }

    /// The first value of header `name` read as a number (surrounding spaces ignored).
    pub fn get_f64(&self, name: &str) -> Option<f64> {
        self.get(name)?
            .trim()
            .parse::<f64>()
            .ok()
            .filter(|v| v.is_finite())
    }

    /// The media type of `content-type`, lower case and without parameters.
    pub fn content_type(&self) -> Option<String> {
        let value = self.get("content-type")?;
        let media = value.split(';').next().unwrap_or(value).trim();
        Some(media.to_ascii_lowercase())
    }

    /// Iterates over `(name, value)` pairs.
    pub fn iter(&self) -> impl Iterator<Item = (&str, &str)> {
        self.pairs().iter().map(|(n, v)| (n.as_str(), v.as_str()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn headers(pairs: &[(&str, &str)]) -> Headers {
        Headers::from(
            pairs
                .iter()
                .map(|(n, v)| ((*n).to_owned(), (*v).to_owned()))
                .collect::<Vec<_>>(),
        )
    }

    #[test]
    fn lookup_ignores_case_and_returns_the_first_value() {
        let h = headers(&[("x-a", "1"), ("set-cookie", "a"), ("X-A", "2")]);
        assert_eq!(h.get("X-a"), Some("1"));
        assert_eq!(h.get_all("x-a").collect::<Vec<_>>(), ["1", "2"]);
        assert_eq!(h.get("missing"), None);
    }

    #[test]
    fn numeric_values_parse_or_are_absent() {
        let h = headers(&[("n", " 42 "), ("f", "1.5"), ("bad", "1s"), ("inf", "inf")]);
        assert_eq!(h.get_i64("n"), Some(42));
        assert_eq!(h.get_f64("f"), Some(1.5));
        assert_eq!(h.get_i64("bad"), None);
        assert_eq!(h.get_f64("inf"), None);
    }

    #[test]
    fn content_type_drops_parameters() {
        let h = headers(&[("content-type", "Text/Event-Stream; charset=utf-8")]);
        assert_eq!(h.content_type().as_deref(), Some("text/event-stream"));
    }

    #[test]
    fn deserializes_from_pairs() {
        let h = Headers::from_value(serde_json::from_str(r#"[["a","1"],["b","2"]]"#).ok());
        assert_eq!(h, headers(&[("a", "1"), ("b", "2")]));
    }
}
