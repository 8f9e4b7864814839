//! The `domains` setting: which hosts a pack is called for.

use serde_json::{Map, Value};

/// Host patterns from a pack's `domains` setting, matched by [`taskless_url::domain_matches`]
/// (`*` matches any run of characters).
/// A pack with no `domains` setting is called for every host.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct DomainFilter {
    /// `None` means every host.
    patterns: Option<Vec<String>>,
}

impl DomainFilter {
    /// Reads `configuration.domains` (a string array, or one string). Anything else, or no
    /// setting, means every host.
    #[must_use]
    pub fn from_configuration(configuration: &Map<String, Value>) -> Self {
        let patterns = match configuration.get("domains") {
            Some(Value::Array(items)) => Some(
                items
                    .iter()
                    .filter_map(Value::as_str)
                    .map(str::to_ascii_lowercase)
                    .collect(),
            ),
            Some(Value::String(one)) => Some(vec![one.to_ascii_lowercase()]),
            _ => None,
        };
        Self { patterns }
    }

    /// The patterns, `None` when the pack takes every host.
    #[must_use]
    pub fn patterns(&self) -> Option<&[String]> {
        self.patterns.as_deref()
    }

    /// Whether the pack should be called for `host` (compared without regard to case).
    #[must_use]
    pub fn matches(&self, host: &str) -> bool {
        match &self.patterns {
            None => true,
            Some(patterns) => taskless_url::any_domain_matches(patterns, host),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn filter(v: Value) -> DomainFilter {
        let Value::Object(m) = json!({ "domains": v }) else {
            unreachable!()
        };
        DomainFilter::from_configuration(&m)
    }

    #[test]
    fn filter_reads_arrays_strings_and_defaults_to_every_host() {
        let f = filter(json!(["api.stripe.com", "*.OpenAI.com"]));
        assert!(f.matches("API.stripe.com"));
        assert!(f.matches("chat.openai.com"));
        assert!(!f.matches("example.com"));
        assert!(filter(json!("*")).matches("anything.example"));
        assert!(filter(json!(42)).matches("anything.example"));
        assert!(DomainFilter::from_configuration(&Map::new()).matches("x"));
        assert!(!filter(json!([])).matches("x"));
    }
}
