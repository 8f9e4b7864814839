//! [`Headers`]: the header (or trailer) fields of one message, kept in one shared buffer.

use std::fmt;

use bytes::Bytes;
use bytestring::ByteString;

use crate::text::Text;

/// Byte range of one piece of text inside a head's buffer.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub(crate) struct Span {
    start: u32,
    end: u32,
}

impl Span {
    /// The range `start..end`, if it fits the offsets kept (heads are far smaller than 4 GiB).
    pub fn new(start: usize, end: usize) -> Option<Span> {
        Some(Span {
            start: u32::try_from(start).ok()?,
            end: u32::try_from(end).ok()?,
        })
    }

    /// Where `part` lies inside `base`, when it is a sub-slice of it; an empty `part` from
    /// anywhere else is the empty span.
    pub fn within(base: &[u8], part: &[u8]) -> Option<Span> {
        if part.is_empty() {
            return Some(Span::default());
        }
        let start = (part.as_ptr() as usize).checked_sub(base.as_ptr() as usize)?;
        let end = start.checked_add(part.len())?;
        if end > base.len() {
            return None;
        }
        Span::new(start, end)
    }

    /// The span as an index range.
    pub fn range(self) -> std::ops::Range<usize> {
        self.start as usize..self.end as usize
    }

    /// Its length in bytes.
    pub fn len(self) -> usize {
        self.end.saturating_sub(self.start) as usize
    }
}

/// One field: where its (lower-case) name and its value lie in the buffer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Field {
    pub name: Span,
    pub value: Span,
}

impl Field {
    /// Bytes of one entry of a field table.
    pub const SIZE: usize = 16;

    /// The table entry of this field (four little-endian `u32`s).
    pub fn encode(self) -> [u8; Field::SIZE] {
        let mut out = [0u8; Field::SIZE];
        let words = [
            self.name.start,
            self.name.end,
            self.value.start,
            self.value.end,
        ];
        for (chunk, word) in out.chunks_exact_mut(4).zip(words) {
            chunk.copy_from_slice(&word.to_le_bytes());
        }
        out
    }

    /// The field of a table entry (`entry` holds [`Field::SIZE`] bytes).
    pub(crate) fn decode(entry: &[u8]) -> Field {
        let word = |i: usize| {
            entry
                .get(i * 4..i * 4 + 4)
                .and_then(|b| b.try_into().ok())
                .map_or(0, u32::from_le_bytes)
        };
        Field {
            name: Span {
                start: word(0),
                end: word(1),
            },
            value: Span {
                start: word(2),
                end: word(3),
            },
        }
    }
}

/// Header fields in the order sent, names lower-case, values as lossy UTF-8.
///
/// All fields share one buffer: building a head costs one copy of its bytes and of a small
/// table of where each field lies, whatever the number of fields, and cloning shares the buffer.
/// Look fields up with [`Headers::get`] and iterate them as `(&str, &str)` pairs.
///
/// ```
/// use taskless_http::Headers;
///
/// let headers: Headers = [("Content-Type", "application/json"), ("x-id", "1")]
///     .into_iter()
///     .collect();
/// assert_eq!(headers.get("content-type"), Some("application/json"));
/// let pairs: Vec<(&str, &str)> = headers.iter().collect();
/// assert_eq!(pairs, [("content-type", "application/json"), ("x-id", "1")]);
/// ```
#[derive(Clone, Default)]
pub struct Headers {
    /// The text the fields point into.
    buf: ByteString,
    /// One [`Field::SIZE`]-byte entry per field, in order (usually beside `buf` in one chunk).
    table: Bytes,
}

impl Headers {
    /// No fields.
    #[must_use]
    pub fn new() -> Self {
        Headers::default()
    }

    /// Fields whose entries in `table` point into `buf`.
    pub(crate) fn from_parts(buf: ByteString, table: Bytes) -> Self {
        Headers { buf, table }
    }

    /// Number of fields.
    #[must_use]
    pub fn len(&self) -> usize {
        self.table.len() / Field::SIZE
    }

    /// Whether there are no fields.
    #[must_use]
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    fn fields(&self) -> impl DoubleEndedIterator<Item = Field> + '_ {
        self.table.chunks_exact(Field::SIZE).map(Field::decode)
    }

    /// The text of a span of the buffer.
    pub(crate) fn text(&self, span: Span) -> &str {
        self.buf.get(span.range()).unwrap_or_default()
    }

    /// The text of a span of the buffer, sharing it.
    pub(crate) fn share(&self, span: Span) -> Text {
        Text::share(&self.buf, self.text(span))
    }

    fn pair(&self, field: Field) -> (&str, &str) {
        (self.text(field.name), self.text(field.value))
    }

    /// Whether `field` is called `name` (a cheap test: lengths first).
    fn is_named(&self, field: Field, name: &str) -> bool {
        field.name.len() == name.len()
            && self.buf.as_bytes().get(field.name.range()) == Some(name.as_bytes())
    }

    /// The value of the first field called `name` (lower-case).
    #[must_use]
    pub fn get(&self, name: &str) -> Option<&str> {
        self.fields()
            .find(|f| self.is_named(*f, name))
            .map(|f| self.text(f.value))
    }

    /// The value of the first field called `name` (lower-case), sharing the buffer.
    #[must_use]
    pub fn get_text(&self, name: &str) -> Option<Text> {
        self.get(name).map(|v| Text::share(&self.buf, v))
    }

    /// The values of every field called `name` (lower-case), in order.
    pub fn get_all<'a>(&'a self, name: &str) -> impl Iterator<Item = &'a str> {
        self.fields()
            .filter(move |f| self.is_named(*f, name))
            .map(|f| self.text(f.value))
    }

    /// Whether a field called `name` (lower-case) is present.
    #[must_use]
    pub fn contains(&self, name: &str) -> bool {
        self.get(name).is_some()
    }

    /// The fields as `(name, value)` pairs, in order.
    #[must_use]
    pub fn iter(&self) -> Iter<'_> {
        Iter {
            headers: self,
            inner: self.table.chunks_exact(Field::SIZE),
        }
    }

    /// Keeps only the fields for which `keep(name, value)` is true.
    pub fn retain(&mut self, mut keep: impl FnMut(&str, &str) -> bool) {
        let mut table = Vec::with_capacity(self.table.len());
        for f in self.fields() {
            if keep(self.text(f.name), self.text(f.value)) {
                table.extend_from_slice(&f.encode());
            }
        }
        self.table = Bytes::from(table);
    }
}

/// Iterator over the `(name, value)` pairs of [`Headers`].
#[derive(Debug, Clone)]
pub struct Iter<'a> {
    headers: &'a Headers,
    inner: std::slice::ChunksExact<'a, u8>,
}

impl<'a> Iterator for Iter<'a> {
    type Item = (&'a str, &'a str);

    fn next(&mut self) -> Option<Self::Item> {
        self.inner
            .next()
            .map(|entry| self.headers.pair(Field::decode(entry)))
    }

    fn size_hint(&self) -> (usize, Option<usize>) {
        self.inner.size_hint()
    }
}

impl ExactSizeIterator for Iter<'_> {}

impl DoubleEndedIterator for Iter<'_> {
    fn next_back(&mut self) -> Option<Self::Item> {
        self.inner
            .next_back()
            .map(|entry| self.headers.pair(Field::decode(entry)))
    }
}

impl<'a> IntoIterator for &'a Headers {
    type Item = (&'a str, &'a str);
    type IntoIter = Iter<'a>;

    fn into_iter(self) -> Iter<'a> {
        self.iter()
    }
}

impl PartialEq for Headers {
    fn eq(&self, other: &Self) -> bool {
        self.iter().eq(other.iter())
    }
}

impl Eq for Headers {}

impl fmt::Debug for Headers {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_list().entries(self.iter()).finish()
    }
}

impl<N: AsRef<[u8]>, V: AsRef<[u8]>> FromIterator<(N, V)> for Headers {
    /// Fields from `(name, value)` pairs: names lower-cased, invalid UTF-8 replaced.
    fn from_iter<I: IntoIterator<Item = (N, V)>>(pairs: I) -> Self {
        let mut builder = Builder::default();
        for (name, value) in pairs {
            builder.field(name.as_ref(), value.as_ref());
        }
        builder.finish()
    }
}

/// Builds [`Headers`] (and the other texts of a head) from pieces, lossy, in a fresh `String`.
#[derive(Debug, Default)]
pub(crate) struct Builder {
    buf: String,
    pub(crate) table: Vec<u8>,
}

impl Builder {
    /// Appends `bytes` (invalid UTF-8 replaced); its span, or `None` past 4 GiB.
    pub fn text(&mut self, bytes: &[u8]) -> Option<Span> {
        let start = self.buf.len();
        self.buf.push_str(&String::from_utf8_lossy(bytes));
        let span = Span::new(start, self.buf.len());
        if span.is_none() {
            self.buf.truncate(start);
        }
        span
    }

    /// Appends a field, lower-casing its name.
    pub fn field(&mut self, name: &[u8], value: &[u8]) {
        let mark = self.buf.len();
        let Some(name) = self.text(name) else { return };
        if let Some(name) = self.buf.get_mut(name.range()) {
            name.make_ascii_lowercase();
        }
        match self.text(value) {
            Some(value) => self
                .table
                .extend_from_slice(&Field { name, value }.encode()),
            None => self.buf.truncate(mark),
        }
    }

    /// The fields built.
    pub fn finish(self) -> Headers {
        Headers::from_parts(ByteString::from(self.buf), Bytes::from(self.table))
    }
}

/// Writes `src` lower-cased (ASCII) into `dst` (of the same length), a word at a time: header
/// names are short and many. Reading the source rather than bytes just copied into `dst` keeps
/// loads from waiting on those stores.
pub(crate) fn copy_lowercase(dst: &mut [u8], src: &[u8]) {
    let len = src.len().min(dst.len());
    let (dst, src) = (&mut dst[..len], &src[..len]);
    if len < 4 {
        for (d, s) in dst.iter_mut().zip(src) {
            *d = s.to_ascii_lowercase();
        }
    } else if len < 8 {
        // Two overlapping words: the bytes they share get the same value twice.
        lowercase_word::<4>(&mut dst[..4], &src[..4]);
        lowercase_word::<4>(&mut dst[len - 4..], &src[len - 4..]);
    } else {
        let mut at = 0;
        while at + 8 <= len {
            lowercase_word::<8>(&mut dst[at..at + 8], &src[at..at + 8]);
            at += 8;
        }
        if at < len {
            lowercase_word::<8>(&mut dst[len - 8..], &src[len - 8..]);
        }
    }
}

/// Writes the `N` (4 or 8) bytes of `src` lower-cased into `dst`, at once.
fn lowercase_word<const N: usize>(dst: &mut [u8], src: &[u8]) {
    const LOW7: u64 = 0x7f7f_7f7f_7f7f_7f7f;
    const HIGH: u64 = 0x8080_8080_8080_8080;
    let mut word = [0u8; 8];
    word[..N].copy_from_slice(src);
    let x = u64::from_le_bytes(word);
    // Per byte, the high bit of `ge_a` is set from 'A' up and that of `gt_z` past 'Z' (7-bit
    // sums, no carry between bytes); bytes from 0x80 up are never upper case.
    let ge_a = (x & LOW7) + 0x3f3f_3f3f_3f3f_3f3f;
    let gt_z = (x & LOW7) + 0x2525_2525_2525_2525;
    let upper = ge_a & !gt_z & !x & HIGH;
    dst.copy_from_slice(&(x | (upper >> 2)).to_le_bytes()[..N]);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lookups_iterate_and_compare_by_field() {
        let h: Headers = [("A", "1"), ("b", "2"), ("a", "3")].into_iter().collect();
        assert_eq!(h.len(), 3);
        assert_eq!(h.get("a"), Some("1"));
        assert_eq!(h.get_all("a").collect::<Vec<_>>(), ["1", "3"]);
        assert_eq!(h.get("c"), None);
        let same: Headers = [("a", "1"), ("b", "2"), ("a", "3")].into_iter().collect();
        assert_eq!(h, same);
        let mut fewer = h.clone();
        fewer.retain(|n, _| n != "a");
        assert_eq!(fewer.iter().collect::<Vec<_>>(), [("b", "2")]);
        assert_ne!(fewer, h);
        assert_eq!(format!("{fewer:?}"), r#"[("b", "2")]"#);
    }

    #[test]
    fn invalid_utf8_is_replaced() {
        let h: Headers = [(&b"X-Bin"[..], &b"a\xffb"[..])].into_iter().collect();
        assert_eq!(h.get("x-bin"), Some("a\u{fffd}b"));
    }

    #[test]
    fn lowercase_matches_std_for_every_byte() {
        let all: Vec<u8> = (0..=255u8)
            .chain(b"Content-TYPE:X".iter().copied())
            .collect();
        for start in 0..all.len() {
            for end in start..all.len().min(start + 20) {
                let mut ours = vec![0u8; end - start];
                copy_lowercase(&mut ours, &all[start..end]);
                assert_eq!(ours, all[start..end].to_ascii_lowercase());
            }
        }
    }

    #[test]
    fn span_within_rejects_foreign_slices() {
        let base = b"hello world";
        assert_eq!(Span::within(base, &base[6..]), Span::new(6, 11));
        let elsewhere = b"elsewhere".to_vec();
        assert_eq!(Span::within(base, &elsewhere), None);
        assert_eq!(Span::within(base, b""), Some(Span::default()));
    }
}
