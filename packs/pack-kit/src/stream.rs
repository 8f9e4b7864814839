//! Turning `chunk` hook inputs (base64 pieces of the response body) back into text.

use base64::Engine as _;
use serde_json::Value;

/// Decodes a `chunk` field. `None` when it is not valid base64.
pub fn decode_chunk(chunk: &str) -> Option<Vec<u8>> {
    base64::engine::general_purpose::STANDARD
        .decode(chunk.trim())
        .ok()
}

/// Joins body pieces into UTF-8 text across piece boundaries.
///
/// A multi-byte character split between two pieces is held back (at most 3 bytes) until the next
/// piece completes it; bytes that can never be valid UTF-8 become U+FFFD. The decoder is plain
/// data so a pack can keep it in its context between `chunk` calls.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ChunkDecoder {
    pending: Vec<u8>,
}

impl ChunkDecoder {
    /// The decoder's state as JSON (the held-back bytes as an array of numbers).
    pub fn to_value(&self) -> Value {
        Value::Array(self.pending.iter().map(|b| Value::from(*b)).collect())
    }

    /// A decoder from [`ChunkDecoder::to_value`]'s JSON; anything else gives a fresh one.
    pub fn from_value(value: &Value) -> Self {
        let pending = value
            .as_array()
            .map(|items| {
                items
                    .iter()
                    .filter_map(|b| b.as_u64().and_then(|b| u8::try_from(b).ok()))
                    .collect()
            })
            .unwrap_or_default();
        Self { pending }
    }

    /// True when no bytes are held back.
    pub fn is_idle(&self) -> bool {
        self.pending.is_empty()
    }

    /// Adds a piece and returns the text it completes.
    pub fn push(&mut self, bytes: &[u8]) -> String {
        let mut buf = std::mem::take(&mut self.pending);
        buf.extend_from_slice(bytes);
        let mut text = String::with_capacity(buf.len());
        let mut rest = buf.as_slice();
        loop {
            match std::str::from_utf8(rest) {
                Ok(valid) => {
                    text.push_str(valid);
                    break;
                }
                Err(err) => {
                    let (valid, after) = rest.split_at(err.valid_up_to());
                    // `valid` was just checked by `from_utf8`.
                    text.push_str(std::str::from_utf8(valid).unwrap_or_default());
                    match err.error_len() {
                        Some(bad) => {
                            text.push(char::REPLACEMENT_CHARACTER);
                            rest = &after[bad..];
                        }
                        None => {
                            // An incomplete character at the end: wait for the next piece.
                            self.pending = after.to_vec();
                            break;
                        }
                    }
                }
            }
        }
        text
    }

    /// Ends the stream: bytes still held back were an incomplete character.
    pub fn finish(&mut self) -> String {
        if self.pending.is_empty() {
            String::new()
        } else {
            self.pending.clear();
            char::REPLACEMENT_CHARACTER.to_string()
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn decodes_base64_pieces() {
        assert_eq!(decode_chunk("aGVsbG8="), Some(b"hello".to_vec()));
        assert_eq!(decode_chunk("not base64!"), None);
    }

    #[test]
    fn characters_split_across_pieces_are_rejoined() {
        let text = "héllo → wörld";
        let bytes = text.as_bytes();
        for split in 1..bytes.len() {
            let mut d = ChunkDecoder::default();
            let mut out = d.push(&bytes[..split]);
            out.push_str(&d.push(&bytes[split..]));
            out.push_str(&d.finish());
            assert_eq!(out, text, "split at {split}");
        }
    }

    #[test]
    fn invalid_bytes_become_replacement_characters() {
        let mut d = ChunkDecoder::default();
        assert_eq!(d.push(b"a\xffb"), "a\u{fffd}b");
        assert_eq!(d.push(b"c\xe2\x82"), "c");
        assert_eq!(d.finish(), "\u{fffd}");
    }

    #[test]
    fn survives_a_round_trip_through_json() {
        let mut d = ChunkDecoder::default();
        d.push(b"\xe2\x82");
        let saved = serde_json::from_str(&d.to_value().to_string()).expect("json");
        let mut d = ChunkDecoder::from_value(&saved);
        assert_eq!(d.push(b"\xac"), "€");
    }
}
