//! Reading a hook's input document in one pass, without building values a pack may not need.
//!
//! The two object levels the kit knows (the input and its `request` / `response`) are walked
//! here; every value in them is read by `serde_json`, so the whole document is checked as JSON.
//! Bodies are kept as JSON text ([`Body`]) and parsed only when a pack asks, the configuration
//! is parsed once per instance, and fields the kit does not know are skipped without building
//! them. Reading is lenient past the top level: a missing or mistyped field reads as absent (or
//! empty), so a host that adds fields or omits optional ones does not break packs.

use std::borrow::Cow;
use std::cell::RefCell;
use std::rc::Rc;

use serde::de::IgnoredAny;
use serde_json::{Map, Value};

use crate::input::{Input, InputError, Request, Response, Timing};
use crate::{Body, Headers};

/// Reads `bytes` as a hook input.
pub(crate) fn read_input(bytes: &[u8]) -> Result<Input, InputError> {
    let mut reader = Reader { bytes, at: 0 };
    reader.skip_ws();
    if reader.peek() != Some(b'{') {
        // Valid JSON that is not an object, or not JSON at all.
        serde_json::from_slice::<IgnoredAny>(bytes)?;
        return Err(InputError::NotAnObject);
    }
    let mut input = Input::default();
    reader.object(|reader, key| {
        match key {
            "requestId" => input.request_id = string(reader.value()?),
            "request" => input.request = reader.request()?.unwrap_or_default(),
            "response" => input.response = reader.response()?,
            "chunk" => {
                input.chunk = match reader.value()? {
                    Value::String(s) => Some(s),
                    _ => None,
                };
            }
            "context" => input.context = object(reader.value()?).unwrap_or_default(),
            "environment" => input.environment = object(reader.value()?).unwrap_or_default(),
            "configuration" => input.configuration = settings(reader.raw()?),
            "timing" => input.timing = object(reader.value()?).map(|t| Timing::from_map(&t)),
            _ => {
                reader.raw()?;
            }
        }
        Ok(())
    })?;
    reader.skip_ws();
    if reader.at != bytes.len() {
        return Err(reader.error("trailing characters after the input object"));
    }
    Ok(input)
}

/// The string a value holds, or empty.
fn string(value: Value) -> String {
    match value {
        Value::String(s) => s,
        _ => String::new(),
    }
}

/// The object a value holds.
fn object(value: Value) -> Option<Map<String, Value>> {
    match value {
        Value::Object(map) => Some(map),
        _ => None,
    }
}

/// Settings as parsed, shared between the inputs that carry the same ones.
type Settings = Rc<Map<String, Value>>;

thread_local! {
    /// The last configuration read, by its JSON text: an instance serves one pack, whose
    /// settings are the same on every call, so they are parsed once.
    static SETTINGS: RefCell<Option<(Box<[u8]>, Settings)>> = const { RefCell::new(None) };
}

/// The settings in the JSON text `raw`, parsed unless they are the same text as last time;
/// anything but an object reads as no settings.
fn settings(raw: &[u8]) -> Settings {
    SETTINGS.with(|cache| {
        let mut cache = cache.borrow_mut();
        if let Some((text, parsed)) = cache.as_ref()
            && **text == *raw
        {
            return parsed.clone();
        }
        let parsed = Rc::new(
            serde_json::from_slice::<Value>(raw)
                .ok()
                .and_then(object)
                .unwrap_or_default(),
        );
        *cache = Some((raw.into(), parsed.clone()));
        parsed
    })
}

/// A position in the input document.
struct Reader<'a> {
    bytes: &'a [u8],
    at: usize,
}

impl<'a> Reader<'a> {
    fn peek(&self) -> Option<u8> {
        self.bytes.get(self.at).copied()
    }

    fn skip_ws(&mut self) {
        while matches!(self.peek(), Some(b' ' | b'\n' | b'\r' | b'\t')) {
            self.at += 1;
        }
    }

    fn error(&self, what: &str) -> InputError {
        InputError::Malformed(format!("{what} at byte {}", self.at))
    }

    /// Steps over `byte` after white space; `what` says what was expected otherwise.
    fn expect(&mut self, byte: u8, what: &str) -> Result<(), InputError> {
        self.skip_ws();
        if self.peek() == Some(byte) {
            self.at += 1;
            Ok(())
        } else {
            Err(self.error(what))
        }
    }

    /// The next value's JSON text, checked by `serde_json`.
    fn raw(&mut self) -> Result<&'a [u8], InputError> {
        self.skip_ws();
        let rest = &self.bytes[self.at..];
        let mut values = serde_json::Deserializer::from_slice(rest).into_iter::<IgnoredAny>();
        match values.next() {
            Some(Ok(_)) => {
                let raw = &rest[..values.byte_offset()];
                self.at += raw.len();
                Ok(raw)
            }
            Some(Err(err)) => Err(err.into()),
            None => Err(self.error("expected a value")),
        }
    }

    /// The next value, parsed.
    fn value(&mut self) -> Result<Value, InputError> {
        self.skip_ws();
        let rest = &self.bytes[self.at..];
        let mut values = serde_json::Deserializer::from_slice(rest).into_iter::<Value>();
        match values.next() {
            Some(Ok(value)) => {
                self.at += values.byte_offset();
                Ok(value)
            }
            Some(Err(err)) => Err(err.into()),
            None => Err(self.error("expected a value")),
        }
    }

    /// An object key (the reader is on its opening quote).
    fn key(&mut self) -> Result<Cow<'a, str>, InputError> {
        let start = self.at;
        let mut i = start + 1;
        let mut escaped = false;
        loop {
            match self.bytes.get(i) {
                Some(b'"') => break,
                Some(b'\\') => {
                    escaped = true;
                    i += 2;
                }
                Some(_) => i += 1,
                None => return Err(self.error("unterminated key")),
            }
        }
        let quoted = &self.bytes[start..=i];
        self.at = i + 1;
        if escaped {
            // Read as a `Value`: a `String` target would pull in `serde`'s type-error messages.
            Ok(Cow::Owned(string(serde_json::from_slice::<Value>(quoted)?)))
        } else {
            std::str::from_utf8(&quoted[1..quoted.len() - 1])
                .map(Cow::Borrowed)
                .map_err(|_| self.error("key is not UTF-8"))
        }
    }

    /// Reads an object, calling `member` with the reader on each member's value, which it
    /// must read.
    fn object(
        &mut self,
        mut member: impl FnMut(&mut Self, &str) -> Result<(), InputError>,
    ) -> Result<(), InputError> {
        self.expect(b'{', "expected `{`")?;
        self.skip_ws();
        if self.peek() == Some(b'}') {
            self.at += 1;
            return Ok(());
        }
        loop {
            self.skip_ws();
            if self.peek() != Some(b'"') {
                return Err(self.error("expected a key"));
            }
            let key = self.key()?;
            self.expect(b':', "expected `:`")?;
            member(self, &key)?;
            self.skip_ws();
            match self.peek() {
                Some(b',') => self.at += 1,
                Some(b'}') => {
                    self.at += 1;
                    return Ok(());
                }
                _ => return Err(self.error("expected `,` or `}`")),
            }
        }
    }

    /// Skips a value that is not an object and returns `false`; leaves an object to be read.
    fn is_object(&mut self) -> Result<bool, InputError> {
        self.skip_ws();
        if self.peek() == Some(b'{') {
            return Ok(true);
        }
        self.raw()?;
        Ok(false)
    }

    fn request(&mut self) -> Result<Option<Request>, InputError> {
        if !self.is_object()? {
            return Ok(None);
        }
        let mut request = Request::default();
        self.object(|reader, key| {
            match key {
                "domain" => request.domain = string(reader.value()?),
                "path" => request.path = string(reader.value()?),
                "url" => request.url = string(reader.value()?),
                "method" => request.method = string(reader.value()?),
                "headers" => request.headers = Headers::from_value(Some(reader.value()?)),
                "body" => request.body = body(reader.raw()?),
                _ => {
                    reader.raw()?;
                }
            }
            Ok(())
        })?;
        Ok(Some(request))
    }

    fn response(&mut self) -> Result<Option<Response>, InputError> {
        if !self.is_object()? {
            return Ok(None);
        }
        let mut response = Response::default();
        self.object(|reader, key| {
            match key {
                "status" => {
                    response.status = reader
                        .value()?
                        .as_u64()
                        .and_then(|s| u16::try_from(s).ok())
                        .unwrap_or_default();
                }
                "headers" => response.headers = Headers::from_value(Some(reader.value()?)),
                "body" => response.body = body(reader.raw()?),
                _ => {
                    reader.raw()?;
                }
            }
            Ok(())
        })?;
        Ok(Some(response))
    }
}

/// A body from its JSON text, unless it is `null`.
fn body(raw: &[u8]) -> Option<Body> {
    if raw == b"null" {
        return None;
    }
    // `serde_json` checked the text, and JSON text from a `&[u8]` it accepted is UTF-8.
    std::str::from_utf8(raw).ok().map(Body::from_json_text)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_value_is_checked_even_when_skipped() {
        assert!(read_input(br#"{"request": {"x": [1, tru]}}"#).is_err());
        assert!(read_input(br#"{"unknown": "unterminated}"#).is_err());
        assert!(read_input(br#"{"request": {"domain": "a"} "x": 1}"#).is_err());
        assert!(read_input(br#"{"request": {}} x"#).is_err());
    }

    #[test]
    fn escaped_keys_are_read() {
        let input = read_input(br#"{"re\u0071uest": {"dom\u0061in": "a.io"}}"#).expect("valid");
        assert_eq!(input.request.domain, "a.io");
    }

    #[test]
    fn bodies_are_kept_as_text_and_settings_shared() {
        let text = br#"{"request": {"body": {"a" : [1, 2]}}, "configuration": {"x": 1}}"#;
        let a = read_input(text).expect("valid");
        let b = read_input(text).expect("valid");
        assert_eq!(
            a.request.body.as_ref().map(Body::raw_json),
            Some(r#"{"a" : [1, 2]}"#)
        );
        assert!(Rc::ptr_eq(&a.configuration, &b.configuration));
        let c = read_input(br#"{"configuration": {"x": 2}}"#).expect("valid");
        assert_eq!(c.configuration.get("x"), Some(&Value::from(2)));
    }
}
