//! What the runtime remembers about one request between its hooks.

use serde_json::Value;

use crate::output::{Dimension, OutputLine};

/// Per-request state: the request id, each pack's context and the captures so far (held by a
/// [`Session`](crate::Session)).
#[derive(Debug, Clone)]
pub(crate) struct RequestState {
    request_id: String,
    /// Indexed by the pack's position in the `PackSet`; `None` until the pack returns one.
    contexts: Vec<Option<Value>>,
    dimensions: Vec<Dimension>,
    /// Indexed like `contexts`: whether the pack is skipped for the rest of this request
    /// (shed because its worker fell behind).
    shed: Vec<bool>,
    /// The names of the shed packs, in the order they were shed.
    skipped: Vec<String>,
    /// Whether `pre` has been called.
    pub(crate) pre_done: bool,
    /// Whether the closing `chunk` call (the one without a piece) has been made.
    pub(crate) chunks_closed: bool,
    /// Whether `post` has been called.
    pub(crate) posted: bool,
}

impl Default for RequestState {
    fn default() -> Self {
        Self::new()
    }
}

impl RequestState {
    /// New state with a fresh request id: a UUIDv7 as 32 lower-case hex digits.
    #[must_use]
    pub fn new() -> Self {
        Self::with_request_id(uuid::Uuid::now_v7().simple().to_string())
    }

    /// New state with a given request id (replays and tests).
    #[must_use]
    pub fn with_request_id(request_id: String) -> Self {
        Self {
            request_id,
            contexts: Vec::new(),
            dimensions: Vec::new(),
            shed: Vec::new(),
            skipped: Vec::new(),
            pre_done: false,
            chunks_closed: false,
            posted: false,
        }
    }

    /// The id packs see as `requestId`.
    #[must_use]
    pub fn request_id(&self) -> &str {
        &self.request_id
    }

    /// The captures so far.
    #[must_use]
    pub fn dimensions(&self) -> &[Dimension] {
        &self.dimensions
    }

    /// The context pack number `index` (its position in [`PackSet::packs`](crate::PackSet::packs))
    /// returned last, if any.
    #[must_use]
    pub fn context(&self, index: usize) -> Option<&Value> {
        self.contexts.get(index).and_then(Option::as_ref)
    }

    /// The NDJSON line for this request.
    #[must_use]
    pub fn into_line(self) -> OutputLine {
        OutputLine {
            request_id: self.request_id,
            dimensions: self.dimensions,
            skipped: self.skipped,
        }
    }

    /// Whether pack number `index` is skipped for the rest of this request.
    pub(crate) fn is_shed(&self, index: usize) -> bool {
        self.shed.get(index).copied().unwrap_or(false)
    }

    /// Skips pack number `index` (named `name`) for the rest of this request; false when it
    /// already was.
    pub(crate) fn shed(&mut self, index: usize, name: &str) -> bool {
        if self.is_shed(index) {
            return false;
        }
        if self.shed.len() <= index {
            self.shed.resize(index + 1, false);
        }
        self.shed[index] = true;
        self.skipped.push(name.to_owned());
        true
    }

    /// The names of the packs shed so far.
    pub(crate) fn skipped(&self) -> &[String] {
        &self.skipped
    }

    pub(crate) fn set_context(&mut self, index: usize, context: Value) {
        if self.contexts.len() <= index {
            self.contexts.resize(index + 1, None);
        }
        self.contexts[index] = Some(context);
    }

    /// Adds a capture; a later value for the same name replaces the earlier one in place.
    pub(crate) fn capture(&mut self, name: String, value: String) {
        if let Some(d) = self.dimensions.iter_mut().find(|d| d.name == name) {
            d.value = value;
        } else {
            self.dimensions.push(Dimension { name, value });
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn request_ids_are_uuid_v7_in_32_lower_hex_and_unique() {
        let a = RequestState::new();
        let b = RequestState::new();
        assert_eq!(a.request_id().len(), 32);
        assert!(
            a.request_id()
                .chars()
                .all(|c| c.is_ascii_digit() || ('a'..='f').contains(&c))
        );
        // The version nibble of a UUIDv7 is 7.
        assert_eq!(&a.request_id()[12..13], "7");
        assert_ne!(a.request_id(), b.request_id());
    }

    #[test]
    fn later_captures_replace_earlier_ones_in_place() {
        let mut s = RequestState::with_request_id("r".into());
        s.capture("a/x".into(), "1".into());
        s.capture("a/y".into(), "2".into());
        s.capture("a/x".into(), "3".into());
        let line = s.into_line();
        assert_eq!(line.request_id, "r");
        let got: Vec<_> = line
            .dimensions
            .iter()
            .map(|d| (d.name.as_str(), d.value.as_str()))
            .collect();
        assert_eq!(got, vec![("a/x", "3"), ("a/y", "2")]);
    }
}
