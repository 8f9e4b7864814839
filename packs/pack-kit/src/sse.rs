//! Server-sent events (`text/event-stream`) split into events across `chunk` calls.

use serde_json::{Map, Value};

use crate::ChunkDecoder;

/// Most text an unfinished event may hold before it is dropped (bounds the context's size).
const MAX_PENDING: usize = 1 << 20;

/// One dispatched event.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SseEvent {
    /// The `event:` field, or `message` when absent.
    pub event: String,
    /// The `data:` lines joined with `\n`.
    pub data: String,
}

impl SseEvent {
    /// The data parsed as JSON, when it is JSON (`[DONE]` and the like are not).
    pub fn json(&self) -> Option<Value> {
        serde_json::from_str(&self.data).ok()
    }
}

/// An incremental event-stream parser following the WHATWG rules: lines end in CR, LF or CRLF
/// (also when the pair is split between pieces), a blank line dispatches the event, `:` starts a
/// comment, one space after the field's colon is dropped, `data` lines are joined with `\n`.
///
/// The decoder is plain data: keep it in the pack's context between `chunk` calls
/// ([`SseDecoder::from_context`] / [`SseDecoder::to_value`]). A body that starts like JSON (`{` or
/// `[`) is not an event stream; the decoder then ignores the rest of it ([`SseDecoder::is_sse`]).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct SseDecoder {
    utf8: ChunkDecoder,
    line: String,
    after_cr: bool,
    event: Option<String>,
    data: Option<String>,
    /// Whether the stream's first non-blank character was seen, and what it said.
    sse: Option<bool>,
    dropped: u32,
}

impl SseDecoder {
    /// A fresh decoder.
    pub fn new() -> Self {
        Self::default()
    }

    /// The decoder saved under `key` in a context, or a fresh one.
    pub fn from_context(context: &Map<String, Value>, key: &str) -> Self {
        let Some(Value::Object(saved)) = context.get(key) else {
            return Self::default();
        };
        let text = |k: &str| saved.get(k).and_then(Value::as_str).map(str::to_owned);
        Self {
            utf8: saved
                .get("utf8")
                .map(ChunkDecoder::from_value)
                .unwrap_or_default(),
            line: text("line").unwrap_or_default(),
            after_cr: saved.get("cr").and_then(Value::as_bool).unwrap_or(false),
            event: text("event"),
            data: text("data"),
            sse: saved.get("sse").and_then(Value::as_bool),
            dropped: saved
                .get("dropped")
                .and_then(Value::as_u64)
                .map_or(0, |n| u32::try_from(n).unwrap_or(u32::MAX)),
        }
    }

    /// The decoder as JSON, to store in the context (only the parts in use).
    pub fn to_value(&self) -> Value {
        let mut saved = Map::new();
        if !self.utf8.is_idle() {
            saved.insert("utf8".into(), self.utf8.to_value());
        }
        if !self.line.is_empty() {
            saved.insert("line".into(), Value::from(self.line.as_str()));
        }
        if self.after_cr {
            saved.insert("cr".into(), Value::Bool(true));
        }
        if let Some(event) = &self.event {
            saved.insert("event".into(), Value::from(event.as_str()));
        }
        if let Some(data) = &self.data {
            saved.insert("data".into(), Value::from(data.as_str()));
        }
        if let Some(sse) = self.sse {
            saved.insert("sse".into(), Value::Bool(sse));
        }
        if self.dropped > 0 {
            saved.insert("dropped".into(), Value::from(self.dropped));
        }
        Value::Object(saved)
    }

    /// `Some(false)` once the body turned out not to be an event stream, `Some(true)` once it
    /// started like one, `None` before any non-blank byte.
    pub fn is_sse(&self) -> Option<bool> {
        self.sse
    }

    /// Events dropped because they grew past the size bound.
    pub fn dropped(&self) -> u32 {
        self.dropped
    }

    /// Feeds raw body bytes and returns the events they complete.
    pub fn feed_bytes(&mut self, bytes: &[u8]) -> Vec<SseEvent> {
        let text = self.utf8.push(bytes);
        self.feed_str(&text)
    }

    /// Feeds body text and returns the events it completes.
    pub fn feed_str(&mut self, text: &str) -> Vec<SseEvent> {
        let mut events = Vec::new();
        if self.sse == Some(false) {
            return events;
        }
        for c in text.chars() {
            if self.sse.is_none() {
                if c.is_whitespace() || c == '\u{feff}' {
                    continue;
                }
                self.sse = Some(c != '{' && c != '[');
                if self.sse == Some(false) {
                    return events;
                }
            }
            match c {
                '\n' if self.after_cr => self.after_cr = false,
                '\r' | '\n' => {
                    self.after_cr = c == '\r';
                    self.end_line(&mut events);
                }
                _ => {
                    self.after_cr = false;
                    if self.pending_len() < MAX_PENDING {
                        self.line.push(c);
                    } else {
                        self.drop_event();
                    }
                }
            }
        }
        events
    }

    /// Ends the stream: a last event not followed by a blank line is still dispatched (servers
    /// that close right after their last `data:` line are common).
    pub fn finish(&mut self) -> Vec<SseEvent> {
        let tail = self.utf8.finish();
        let mut events = self.feed_str(&tail);
        if self.sse == Some(true) {
            if !self.line.is_empty() {
                self.end_line(&mut events);
            }
            self.dispatch(&mut events);
        }
        events
    }

    fn pending_len(&self) -> usize {
        self.line.len() + self.data.as_ref().map_or(0, String::len)
    }

    fn drop_event(&mut self) {
        self.line.clear();
        self.data = None;
        self.event = None;
        self.dropped = self.dropped.saturating_add(1);
    }

    fn end_line(&mut self, events: &mut Vec<SseEvent>) {
        let line = std::mem::take(&mut self.line);
        if line.is_empty() {
            self.dispatch(events);
            return;
        }
        if line.starts_with(':') {
            return;
        }
        let (field, value) = match line.split_once(':') {
            Some((f, v)) => (f, v.strip_prefix(' ').unwrap_or(v)),
            None => (line.as_str(), ""),
        };
        match field {
            "event" => self.event = Some(value.to_owned()),
            "data" => {
                let data = self.data.get_or_insert_with(String::new);
                data.push_str(value);
                data.push('\n');
            }
            _ => {}
        }
    }

    fn dispatch(&mut self, events: &mut Vec<SseEvent>) {
        let event = self.event.take();
        if let Some(mut data) = self.data.take() {
            if data.ends_with('\n') {
                data.pop();
            }
            events.push(SseEvent {
                event: event
                    .filter(|e| !e.is_empty())
                    .unwrap_or_else(|| "message".to_owned()),
                data,
            });
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const STREAM: &str = ": keep-alive\r\n\
        event: message_start\r\ndata: {\"a\":1}\r\n\r\n\
        data: first\ndata:second\n\n\
        data: [DONE]\r\r";

    fn expected() -> Vec<SseEvent> {
        vec![
            SseEvent {
                event: "message_start".into(),
                data: "{\"a\":1}".into(),
            },
            SseEvent {
                event: "message".into(),
                data: "first\nsecond".into(),
            },
            SseEvent {
                event: "message".into(),
                data: "[DONE]".into(),
            },
        ]
    }

    #[test]
    fn splits_a_whole_stream_into_events() {
        let mut d = SseDecoder::new();
        let mut events = d.feed_str(STREAM);
        events.extend(d.finish());
        assert_eq!(events, expected());
        assert_eq!(events[0].json(), Some(serde_json::json!({"a": 1})));
        assert_eq!(events[2].json(), None);
    }

    #[test]
    fn any_slicing_gives_the_same_events_even_through_the_context() {
        let bytes = STREAM.as_bytes();
        for size in 1..=bytes.len() {
            let mut context = Map::new();
            let mut events = Vec::new();
            for piece in bytes.chunks(size) {
                let mut d = SseDecoder::from_context(&context, "sse");
                events.extend(d.feed_bytes(piece));
                context.insert("sse".into(), d.to_value());
            }
            let mut d = SseDecoder::from_context(&context, "sse");
            events.extend(d.finish());
            assert_eq!(events, expected(), "pieces of {size} bytes");
        }
    }

    #[test]
    fn a_last_event_without_blank_line_is_dispatched_at_the_end() {
        let mut d = SseDecoder::new();
        assert!(d.feed_str("data: x").is_empty());
        assert_eq!(
            d.finish(),
            vec![SseEvent {
                event: "message".into(),
                data: "x".into()
            }]
        );
    }

    #[test]
    fn events_without_data_are_not_dispatched() {
        let mut d = SseDecoder::new();
        assert!(d.feed_str("event: ping\n\n").is_empty());
        assert!(d.finish().is_empty());
    }

    #[test]
    fn a_json_body_is_recognised_as_not_a_stream() {
        let mut d = SseDecoder::new();
        assert!(d.feed_str("  {\"data\": 1}\n\ndata: x\n\n").is_empty());
        assert_eq!(d.is_sse(), Some(false));
        assert!(d.feed_str("data: y\n\n").is_empty());
        assert!(d.finish().is_empty());
    }

    #[test]
    fn an_oversized_event_is_dropped_and_counted() {
        let mut d = SseDecoder::new();
        let big = "x".repeat(MAX_PENDING + 10);
        let mut events = d.feed_str(&format!("data: {big}\n\ndata: ok\n\n"));
        events.extend(d.finish());
        assert_eq!(d.dropped(), 1);
        assert_eq!(events.last().map(|e| e.data.as_str()), Some("ok"));
    }
}
