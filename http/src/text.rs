//! [`Text`]: a cheap, shared, immutable string for the parts of a message head.

use std::borrow::Borrow;
use std::fmt;
use std::ops::Deref;

use bytestring::ByteString;

/// Valid UTF-8 text that shares the buffer of the head it came from: cloning it or taking it
/// out of a head copies no bytes. Derefs to `&str`; bytes that were not valid UTF-8 on the wire
/// are replaced (U+FFFD), as [`String::from_utf8_lossy`] does.
#[derive(Clone, Default, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Text(ByteString);

impl Text {
    /// Empty text.
    #[must_use]
    pub const fn new() -> Self {
        Text(ByteString::new())
    }

    /// Text of a `'static` string, without allocation.
    #[must_use]
    pub const fn from_static(s: &'static str) -> Self {
        Text(ByteString::from_static(s))
    }

    /// Text from bytes, invalid UTF-8 replaced.
    #[must_use]
    pub fn from_lossy(bytes: &[u8]) -> Self {
        match std::str::from_utf8(bytes) {
            Ok(s) => Text(ByteString::from(s)),
            Err(_) => Text(ByteString::from(
                String::from_utf8_lossy(bytes).into_owned(),
            )),
        }
    }

    /// The text as a `&str`.
    #[must_use]
    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// The part `sub` of `buf` (which must point into it), sharing the buffer.
    pub(crate) fn share(buf: &ByteString, sub: &str) -> Self {
        Text(buf.slice_ref(sub))
    }

    /// The part `sub` of this text (which must point into it), sharing the buffer.
    pub(crate) fn slice(&self, sub: &str) -> Self {
        Text(self.0.slice_ref(sub))
    }
}

impl Deref for Text {
    type Target = str;

    fn deref(&self) -> &str {
        &self.0
    }
}

impl AsRef<str> for Text {
    fn as_ref(&self) -> &str {
        &self.0
    }
}

impl AsRef<[u8]> for Text {
    fn as_ref(&self) -> &[u8] {
        self.0.as_bytes()
    }
}

impl Borrow<str> for Text {
    fn borrow(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for Text {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Debug::fmt(self.as_str(), f)
    }
}

impl fmt::Display for Text {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(self.as_str(), f)
    }
}

impl From<&str> for Text {
    fn from(s: &str) -> Self {
        Text(ByteString::from(s))
    }
}

impl From<String> for Text {
    fn from(s: String) -> Self {
        Text(ByteString::from(s))
    }
}

impl From<Text> for String {
    fn from(t: Text) -> Self {
        t.as_str().to_owned()
    }
}

impl PartialEq<str> for Text {
    fn eq(&self, other: &str) -> bool {
        self.as_str() == other
    }
}

impl PartialEq<&str> for Text {
    fn eq(&self, other: &&str) -> bool {
        self.as_str() == *other
    }
}

impl PartialEq<String> for Text {
    fn eq(&self, other: &String) -> bool {
        self.as_str() == other
    }
}

impl PartialEq<Text> for str {
    fn eq(&self, other: &Text) -> bool {
        self == other.as_str()
    }
}

impl PartialEq<Text> for &str {
    fn eq(&self, other: &Text) -> bool {
        *self == other.as_str()
    }
}

impl PartialEq<Text> for String {
    fn eq(&self, other: &Text) -> bool {
        self == other.as_str()
    }
}

/// Methods whose text is shared by every head that uses them.
pub(crate) fn well_known_method(method: &str) -> Option<Text> {
    Some(Text::from_static(match method {
        "GET" => "GET",
        "POST" => "POST",
        "PUT" => "PUT",
        "DELETE" => "DELETE",
        "HEAD" => "HEAD",
        "OPTIONS" => "OPTIONS",
        "PATCH" => "PATCH",
        "CONNECT" => "CONNECT",
        "TRACE" => "TRACE",
        _ => return None,
    }))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lossy_replaces_invalid_utf8() {
        assert_eq!(Text::from_lossy(b"caf\xc3\xa9"), "café");
        assert_eq!(Text::from_lossy(b"a\xffb"), "a\u{fffd}b");
    }

    #[test]
    fn shared_part_compares_and_prints_as_str() {
        let buf = ByteString::from("GET /v1/models");
        let target = Text::share(&buf, &buf[4..]);
        assert_eq!(target, "/v1/models");
        assert_eq!("/v1/models", target);
        assert_eq!(target.len(), 10);
        assert_eq!(format!("{target}|{target:?}"), "/v1/models|\"/v1/models\"");
        assert!(target.starts_with('/'));
    }
}
