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

    pub fn range(self) -> std::ops::Range<usize> {
        self.start as usize..self.end as usize
    }
}

/// One field: where its (lower-case) name and its value lie in the buffer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Field {
    pub name: Span,
    pub value: Span,
}

/// Header fields in the order sent, names lower-case, values as lossy UTF-8.
///
/// All fields share one buffer: building a head costs one copy of its bytes and one small
/// index, whatever the number of fields, and cloning shares the buffer. Look fields up with
/// [`Headers::get`] and iterate them as `(&str, &str)` pairs.
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
    buf: ByteString,
    fields: Vec<Field>,
}

impl Headers {
    /// No fields.
    #[must_use]
    pub fn new() -> Self {
        Headers::default()
    }

    /// Fields whose spans lie in `buf`.
    pub(crate) fn from_parts(buf: ByteString, fields: Vec<Field>) -> Self {
        Headers { buf, fields }
    }

    /// Number of fields.
    #[must_use]
    pub fn len(&self) -> usize {
        self.fields.len()
    }

    /// Whether there are no fields.
    #[must_use]
    pub fn is_empty(&self) -> bool {
        self.fields.is_empty()
    }

    /// The text of a span of the buffer.
    pub(crate) fn text(&self, span: Span) -> &str {
        self.buf.get(span.range()).unwrap_or_default()
    }

    /// The text of a span of the buffer, sharing it.
    pub(crate) fn share(&self, span: Span) -> Text {
        Text::share(&self.buf, self.text(span))
    }

    fn pair(&self, field: &Field) -> (&str, &str) {
        (self.text(field.name), self.text(field.value))
    }

    /// The value of the first field called `name` (lower-case).
    #[must_use]
    pub fn get(&self, name: &str) -> Option<&str> {
        self.iter().find(|(n, _)| *n == name).map(|(_, v)| v)
    }

    /// The value of the first field called `name` (lower-case), sharing the buffer.
    #[must_use]
    pub fn get_text(&self, name: &str) -> Option<Text> {
        self.get(name).map(|v| Text::share(&self.buf, v))
    }

    /// The values of every field called `name` (lower-case), in order.
    pub fn get_all<'a>(&'a self, name: &str) -> impl Iterator<Item = &'a str> {
        self.iter().filter(move |(n, _)| *n == name).map(|(_, v)| v)
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
            inner: self.fields.iter(),
        }
    }

    /// Keeps only the fields for which `keep(name, value)` is true.
    pub fn retain(&mut self, mut keep: impl FnMut(&str, &str) -> bool) {
        let buf = &self.buf;
        let text = |span: Span| buf.get(span.range()).unwrap_or_default();
        self.fields.retain(|f| keep(text(f.name), text(f.value)));
    }
}

/// Iterator over the `(name, value)` pairs of [`Headers`].
#[derive(Debug, Clone)]
pub struct Iter<'a> {
    headers: &'a Headers,
    inner: std::slice::Iter<'a, Field>,
}

impl<'a> Iterator for Iter<'a> {
    type Item = (&'a str, &'a str);

    fn next(&mut self) -> Option<Self::Item> {
        self.inner.next().map(|f| self.headers.pair(f))
    }

    fn size_hint(&self) -> (usize, Option<usize>) {
        self.inner.size_hint()
    }
}

impl ExactSizeIterator for Iter<'_> {}

impl DoubleEndedIterator for Iter<'_> {
    fn next_back(&mut self) -> Option<Self::Item> {
        self.inner.next_back().map(|f| self.headers.pair(f))
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
    fields: Vec<Field>,
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
            Some(value) => self.fields.push(Field { name, value }),
            None => self.buf.truncate(mark),
        }
    }

    /// The fields built.
    pub fn finish(self) -> Headers {
        Headers::from_parts(ByteString::from(self.buf), self.fields)
    }
}

/// Turns bytes copied from the wire into a head's buffer. Field names must already be lower-case.
/// When `raw` is valid UTF-8 (the usual case) it is shared as is; otherwise every span is rebuilt
/// from its lossy text, and `fields` and `extra` are rewritten to match.
pub(crate) fn seal(raw: Bytes, fields: &mut [Field], extra: &mut [Span]) -> ByteString {
    // A clone shares the buffer: the bytes stay at hand when they turn out not to be UTF-8.
    if let Ok(text) = ByteString::try_from(raw.clone()) {
        return text;
    }
    let mut b = Builder::default();
    let mut relocate = |span: &mut Span| {
        *span = raw
            .get(span.range())
            .and_then(|bytes| b.text(bytes))
            .unwrap_or_default();
    };
    for f in fields.iter_mut() {
        relocate(&mut f.name);
        relocate(&mut f.value);
    }
    extra.iter_mut().for_each(relocate);
    ByteString::from(b.buf)
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
    fn seal_rebuilds_spans_of_invalid_input() {
        let raw = Bytes::from_static(b"GET /\xff x-a: v\xfe\r\n");
        let mut fields = [Field {
            name: Span::new(7, 10).expect("span"),
            value: Span::new(12, 14).expect("span"),
        }];
        let mut target = [Span::new(4, 6).expect("span")];
        let buf = seal(raw, &mut fields, &mut target);
        let h = Headers::from_parts(buf, fields.to_vec());
        assert_eq!(h.iter().collect::<Vec<_>>(), [("x-a", "v\u{fffd}")]);
        assert_eq!(h.text(target[0]), "/\u{fffd}");
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
