//! One buffer per connection that the bytes of emitted heads and body pieces are copied into.
//!
//! Each head or body piece is copied once into the arena and split off as a [`Bytes`]: a
//! reference-counted view into a shared chunk, not an allocation of its own. A chunk is freed when
//! the last view into it is dropped. When the current chunk is full, the arena takes the previous
//! one back if every view into it was dropped, else a new one. So a connection whose events are
//! consumed promptly allocates nothing per message, and one whose events are kept allocates once
//! per [`CHUNK`] bytes. An arena holds at most two chunks itself.

use bytes::{Bytes, BytesMut};

use bytestring::ByteString;

use crate::headers::{Builder, Field, Headers, Span};

/// Size of a fresh chunk. A retained view keeps at most one chunk alive, so this bounds what a
/// small kept head can pin.
pub(crate) const CHUNK: usize = 8 << 10;

/// Pieces larger than this get an allocation of their own instead of a chunk.
const OWN_ALLOCATION: usize = CHUNK / 2;

/// The copy-once buffer of one connection.
#[derive(Debug, Default)]
pub(crate) struct Arena {
    /// Bytes of the value being built (from `len()` back to the last split), then spare room.
    buf: BytesMut,
    /// The previous chunk, taken back once its views are all dropped.
    spare: BytesMut,
    /// Scratch list of a head's fields while its text is being built, reused from head to head.
    pub fields: Vec<Field>,
}

impl Arena {
    /// An arena that allocates on first use.
    pub fn new() -> Self {
        Arena::default()
    }

    /// Makes room for `additional` more bytes after the value being built.
    pub fn reserve(&mut self, additional: usize) {
        let len = self.buf.len();
        if self.buf.capacity() - len >= additional {
            return;
        }
        // Ask for a whole chunk: a buffer reclaimed for less would be full again at once.
        let want = additional.max(CHUNK.saturating_sub(len));
        if self.buf.try_reclaim(want) {
            return;
        }
        let mut next = std::mem::take(&mut self.spare);
        if !next.try_reclaim(len + want) {
            next = BytesMut::with_capacity(len + want);
        }
        next.extend_from_slice(&self.buf);
        let mut previous = std::mem::replace(&mut self.buf, next);
        previous.clear();
        self.spare = previous;
    }

    /// Lets go of the chunks when no value is being built, so a quiet connection holds none;
    /// the next copy allocates a fresh one. Views handed out keep their chunk alive themselves.
    pub fn release(&mut self) {
        if self.buf.is_empty() {
            self.buf = BytesMut::new();
            self.fields = Vec::new();
        }
        self.spare = BytesMut::new();
    }

    /// The value being built: append to it, then [`Arena::finish`] or [`Arena::discard`].
    pub fn building(&mut self) -> &mut BytesMut {
        &mut self.buf
    }

    /// Splits off the value built so far.
    pub fn finish(&mut self) -> Bytes {
        self.buf.split().freeze()
    }

    /// Drops the value being built.
    pub fn discard(&mut self) {
        self.buf.clear();
    }

    /// A shared copy of `data`.
    pub fn copy(&mut self, data: &[u8]) -> Bytes {
        if data.len() > OWN_ALLOCATION {
            return Bytes::copy_from_slice(data);
        }
        self.discard();
        self.reserve(data.len());
        self.buf.extend_from_slice(data);
        self.finish()
    }
}

/// Finishes a head built in `arena`: its text (`text_len` bytes, field names already lower-case)
/// followed by its field table. When the text is valid UTF-8 (the usual case) both become one
/// shared chunk; otherwise every span is rebuilt from its lossy text, and `extra` (spans of other
/// texts of the head) is rewritten to match.
pub(crate) fn finish_head(arena: &mut Arena, text_len: usize, extra: &mut [Span]) -> Headers {
    let built = arena.building();
    let (text, table) = built.split_at(text_len.min(built.len()));
    if std::str::from_utf8(text).is_err() {
        let mut b = Builder::default();
        let relocate = |b: &mut Builder, span: Span| {
            text.get(span.range())
                .and_then(|bytes| b.text(bytes))
                .unwrap_or_default()
        };
        for span in extra.iter_mut() {
            *span = relocate(&mut b, *span);
        }
        for entry in table.chunks_exact(Field::SIZE) {
            let f = Field::decode(entry);
            let f = Field {
                name: relocate(&mut b, f.name),
                value: relocate(&mut b, f.value),
            };
            b.table.extend_from_slice(&f.encode());
        }
        arena.discard();
        return b.finish();
    }
    let mut text = arena.finish();
    let table = text.split_off(text_len);
    // Checked above; an empty head is the safe answer should the check ever disagree.
    let text = ByteString::try_from(text).unwrap_or_default();
    Headers::from_parts(text, table)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn copies_are_independent_views() {
        let mut arena = Arena::new();
        let a = arena.copy(b"first");
        let b = arena.copy(b"second");
        assert_eq!(&a[..], b"first");
        assert_eq!(&b[..], b"second");
        let big = vec![7u8; CHUNK * 2];
        assert_eq!(&arena.copy(&big)[..], &big[..]);
    }

    #[test]
    fn chunk_is_reused_once_its_views_are_dropped() {
        let mut arena = Arena::new();
        let first = arena.copy(&[1; OWN_ALLOCATION]);
        let second = arena.copy(&[2; OWN_ALLOCATION]);
        let chunk = first.as_ptr();
        assert_eq!(second.as_ptr(), chunk.wrapping_add(OWN_ALLOCATION));
        drop((first, second));
        // The chunk is full, but only the arena refers to it now: it is reused, not reallocated.
        let again = arena.copy(b"world");
        assert_eq!(again.as_ptr(), chunk);
        assert_eq!(&again[..], b"world");
    }

    #[test]
    fn full_chunk_gives_way_to_the_previous_one_once_free() {
        let mut arena = Arena::new();
        let a = arena.copy(&[1; OWN_ALLOCATION]);
        let a2 = arena.copy(&[1; OWN_ALLOCATION]);
        // Chunk A is full and still referenced: a second chunk B.
        let b = arena.copy(&[2; OWN_ALLOCATION]);
        assert_ne!(b.as_ptr(), a.as_ptr().wrapping_add(2 * OWN_ALLOCATION));
        let chunk_a = a.as_ptr();
        drop((a, a2));
        let _b2 = arena.copy(&[2; OWN_ALLOCATION]);
        // B is full and referenced; A is free again and taken back.
        let again = arena.copy(b"x");
        assert_eq!(again.as_ptr(), chunk_a);
        assert!(b.iter().all(|&x| x == 2));
    }

    #[test]
    fn a_kept_view_is_never_overwritten() {
        let mut arena = Arena::new();
        let kept = arena.copy(&[1u8; 100]);
        for i in 0..200u8 {
            let piece = arena.copy(&[i; 100]);
            assert!(piece.iter().all(|&b| b == i));
        }
        assert!(kept.iter().all(|&b| b == 1));
    }

    #[test]
    fn release_lets_go_of_the_chunks_but_not_of_views_or_what_is_being_built() {
        let mut arena = Arena::new();
        let kept = arena.copy(&[3u8; 100]);
        arena.release();
        assert_eq!(arena.buf.capacity(), 0, "no chunk is held");
        assert_eq!(arena.spare.capacity(), 0);
        assert!(kept.iter().all(|&b| b == 3), "a view keeps its bytes");
        let next = arena.copy(b"next");
        assert_eq!(&next[..], b"next");
        // A head half built survives.
        arena.reserve(4);
        arena.building().extend_from_slice(b"GET ");
        arena.release();
        arena.reserve(4);
        arena.building().extend_from_slice(b"/a\r\n");
        assert_eq!(&arena.finish()[..], b"GET /a\r\n");
    }

    #[test]
    fn building_survives_growth_past_a_chunk() {
        let mut arena = Arena::new();
        let _pin = arena.copy(b"pinned");
        arena.reserve(4);
        arena.building().extend_from_slice(b"head");
        let tail = vec![b'x'; CHUNK];
        arena.reserve(tail.len());
        arena.building().extend_from_slice(&tail);
        let built = arena.finish();
        assert_eq!(&built[..4], b"head");
        assert_eq!(built.len(), 4 + CHUNK);
    }

    #[test]
    fn finish_head_rebuilds_spans_of_invalid_input() {
        let mut arena = Arena::new();
        let raw = b"GET /\xff x-a: v\xfe\r\n";
        let field = Field {
            name: Span::new(7, 10).expect("span"),
            value: Span::new(12, 14).expect("span"),
        };
        arena.reserve(raw.len() + Field::SIZE);
        arena.building().extend_from_slice(raw);
        arena.building().extend_from_slice(&field.encode());
        let mut target = [Span::new(4, 6).expect("span")];
        let h = finish_head(&mut arena, raw.len(), &mut target);
        assert_eq!(h.iter().collect::<Vec<_>>(), [("x-a", "v\u{fffd}")]);
        assert_eq!(h.text(target[0]), "/\u{fffd}");
    }

    #[test]
    fn finish_head_shares_valid_text_with_its_table() {
        let mut arena = Arena::new();
        let raw = b"x-a: 1\r\ny: 22\r\n";
        arena.reserve(raw.len() + 2 * Field::SIZE);
        arena.building().extend_from_slice(raw);
        for (n, v) in [((0, 3), (5, 6)), ((8, 9), (11, 13))] {
            let f = Field {
                name: Span::new(n.0, n.1).expect("span"),
                value: Span::new(v.0, v.1).expect("span"),
            };
            arena.building().extend_from_slice(&f.encode());
        }
        let h = finish_head(&mut arena, raw.len(), &mut []);
        assert_eq!(h.iter().collect::<Vec<_>>(), [("x-a", "1"), ("y", "22")]);
        assert_eq!(h.iter().next_back(), Some(("y", "22")));
        assert_eq!(h.len(), 2);
    }
}
