//! Decoding one HPACK header block into the shared buffer of a head: pseudo-header fields and
//! regular fields are copied once, next to each other, and the head's texts are views into it.

use crate::arena::Arena;
use crate::arena::finish_head;
use crate::headers::{Field, Headers, Span};
use crate::hpack::{BlockError, Decoder, Field as HpackField};
use crate::text::{Text, well_known_method};

/// The pseudo-header fields kept, in the order of [`Decoded::pseudo`].
const PSEUDO: [&[u8]; 5] = [b":method", b":path", b":authority", b":scheme", b":status"];
const METHOD: usize = 0;
const PATH: usize = 1;
const AUTHORITY: usize = 2;
const SCHEME: usize = 3;
const STATUS: usize = 4;

/// A decoded header block.
#[derive(Debug)]
pub(super) struct Decoded {
    /// Regular fields (pseudo-header fields left out), at most the configured number.
    pub headers: Headers,
    /// Where each pseudo-header field of [`PSEUDO`] lies in the buffer, if present.
    spans: [Span; 5],
    seen: [bool; 5],
    /// Fields left out because they refer to table entries the observer never saw.
    pub unknown_fields: u32,
    /// Fields left out because the head had more than the configured number of fields or
    /// decoded to more than the configured bytes.
    pub limited: bool,
}

impl Decoded {
    fn pseudo(&self, which: usize) -> Option<Text> {
        self.seen[which].then(|| self.headers.share(self.spans[which]))
    }

    /// `:method`.
    pub fn method(&self) -> Option<Text> {
        if !self.seen[METHOD] {
            return None;
        }
        let method = self.headers.text(self.spans[METHOD]);
        Some(well_known_method(method).unwrap_or_else(|| self.headers.share(self.spans[METHOD])))
    }

    /// `:path`.
    pub fn path(&self) -> Option<Text> {
        self.pseudo(PATH)
    }

    /// `:authority`.
    pub fn authority(&self) -> Option<Text> {
        self.pseudo(AUTHORITY)
    }

    /// `:scheme`.
    pub fn scheme(&self) -> Option<Text> {
        self.pseudo(SCHEME)
    }

    /// `:status`, as sent.
    pub fn status(&self) -> Option<&str> {
        self.seen[STATUS].then(|| self.headers.text(self.spans[STATUS]))
    }

    /// Whether any field was left out.
    pub fn partial(&self) -> bool {
        self.unknown_fields > 0 || self.limited
    }

    /// Whether any request pseudo-header field (`:path`, `:authority`, `:scheme`) was
    /// decoded: the block is a request head even if its `:method` is unknown.
    pub fn has_request_pseudo(&self) -> bool {
        self.seen[PATH] || self.seen[AUTHORITY] || self.seen[SCHEME]
    }
}

/// Appends `bytes` to the value being built in `arena`; its span.
fn append(arena: &mut Arena, bytes: &[u8]) -> Option<Span> {
    let start = arena.building().len();
    arena.reserve(bytes.len());
    arena.building().extend_from_slice(bytes);
    Span::new(start, arena.building().len())
}

/// Decodes `block` with `hpack`, keeping at most `max_headers` regular fields and
/// `max_bytes` bytes of names and values; `keep` false only updates the HPACK state
/// (PUSH_PROMISE blocks) and returns `Ok(None)`.
///
/// A pseudo-header field sent twice (a malformed block) keeps its first value, so that a
/// block repeating one cannot grow the buffer beyond the limits. Fields that refer to unknown
/// table entries are left out and counted.
pub(super) fn decode(
    hpack: &mut Decoder,
    block: &[u8],
    keep: bool,
    limits: (usize, usize),
    arena: &mut Arena,
) -> Result<Option<Decoded>, BlockError> {
    let (max_headers, max_bytes) = limits;
    let mut fields = std::mem::take(&mut arena.fields);
    fields.clear();
    let mut spans = [Span::default(); 5];
    let mut seen = [false; 5];
    let mut unknown_fields = 0u32;
    let mut limited = false;
    arena.discard();
    let result = hpack.decode(block, |field| {
        if !keep {
            return;
        }
        let (name, value) = match field {
            HpackField::Known(n, v) => (n, v),
            HpackField::Unknown => {
                unknown_fields += 1;
                return;
            }
        };
        if arena.building().len() + name.len() + value.len() > max_bytes {
            limited = true;
            return;
        }
        if name.starts_with(b":") {
            if let Some(i) = PSEUDO.iter().position(|p| **p == *name)
                && !seen[i]
                && let Some(span) = append(arena, value)
            {
                spans[i] = span;
                seen[i] = true;
            }
            return;
        }
        if fields.len() >= max_headers {
            limited = true;
            return;
        }
        let mark = arena.building().len();
        let Some(name_span) = append(arena, name) else {
            return;
        };
        if let Some(n) = arena.building().get_mut(name_span.range()) {
            n.make_ascii_lowercase();
        }
        match append(arena, value) {
            Some(value) => fields.push(Field {
                name: name_span,
                value,
            }),
            None => arena.building().truncate(mark),
        }
    });
    if let Err(e) = result {
        arena.discard();
        arena.fields = fields;
        return Err(e);
    }
    if !keep {
        arena.fields = fields;
        return Ok(None);
    }
    let text_len = arena.building().len();
    arena.reserve(fields.len() * Field::SIZE);
    for f in &fields {
        arena.building().extend_from_slice(&f.encode());
    }
    arena.fields = fields;
    let headers = finish_head(arena, text_len, &mut spans);
    Ok(Some(Decoded {
        headers,
        spans,
        seen,
        unknown_fields,
        limited,
    }))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn encode(fields: &[(&[u8], &[u8])]) -> Vec<u8> {
        loona_hpack::Encoder::new().encode(fields.iter().copied())
    }

    fn decoder() -> Decoder {
        Decoder::new(4096)
    }

    #[test]
    fn pseudo_and_regular_fields_share_one_buffer() {
        let mut arena = Arena::new();
        let mut hpack = decoder();
        let block = encode(&[
            (b":method", b"POST"),
            (b":path", b"/v1/x"),
            (b":authority", b"api.example.com"),
            (b"Content-Type", b"application/json"),
            (b"x-bin", b"a\xffb"),
        ]);
        let d = decode(&mut hpack, &block, true, (16, 1 << 16), &mut arena)
            .expect("decodes")
            .expect("kept");
        assert_eq!(d.method().as_deref(), Some("POST"));
        assert_eq!(d.path().as_deref(), Some("/v1/x"));
        assert_eq!(d.authority().as_deref(), Some("api.example.com"));
        assert_eq!(d.scheme(), None);
        assert_eq!(d.status(), None);
        assert_eq!(
            d.headers.iter().collect::<Vec<_>>(),
            [
                ("content-type", "application/json"),
                ("x-bin", "a\u{fffd}b")
            ]
        );
    }

    #[test]
    fn field_limit_and_repeated_pseudo_fields_are_bounded() {
        let mut arena = Arena::new();
        let mut hpack = decoder();
        let block = encode(&[
            (b":status", b"200"),
            (b":status", b"500"),
            (b"a", b"1"),
            (b"b", b"2"),
            (b"c", b"3"),
        ]);
        let d = decode(&mut hpack, &block, true, (2, 1 << 16), &mut arena)
            .expect("decodes")
            .expect("kept");
        assert_eq!(d.status(), Some("200"));
        assert_eq!(
            d.headers.iter().collect::<Vec<_>>(),
            [("a", "1"), ("b", "2")]
        );
        assert!(d.limited && d.partial());
    }

    #[test]
    fn decoded_bytes_are_bounded_and_the_head_marked_partial() {
        let mut arena = Arena::new();
        let mut hpack = decoder();
        let big = [b'v'; 3000];
        // The first field inserts a 3 KB entry; the next ones repeat it by index.
        let mut fields: Vec<(&[u8], &[u8])> = vec![(b":status", b"200")];
        fields.extend(std::iter::repeat_n((&b"x-big"[..], &big[..]), 20));
        let block = encode(&fields);
        assert!(block.len() < 3100, "the repeats are one byte each");
        let d = decode(&mut hpack, &block, true, (128, 8192), &mut arena)
            .expect("decodes")
            .expect("kept");
        assert_eq!(d.headers.len(), 2);
        assert!(d.limited);
        assert_eq!(d.status(), Some("200"));
    }
}
