//! Reading a hook's input document in one pass, without building values a pack may not need.
//!
//! The two object levels the kit knows (the input and its `request` / `response`) are walked
//! here; strings are read directly and other values by `serde_json`. Bodies are kept as JSON text
//! ([`Body`]) and parsed only when a pack asks, the configuration is parsed once per instance,
//! and members the kit does not know are stepped over by their structure alone, without building
//! or checking them: a host's input is JSON it wrote, and what a pack reads is checked as it is
//! parsed. Reading is lenient past the top level: a missing or mistyped field reads as absent (or
//! empty), so a host that adds fields or omits optional ones does not break packs.

use std::borrow::Cow;
use std::cell::RefCell;
use std::rc::Rc;

use serde::de::IgnoredAny;
use serde_json::{Map, Value};

use crate::input::{Input, InputError, Request, Response, Timing};
use crate::{Body, Headers};

/// Reads `bytes` as a hook input; without a `configuration`, with the settings last read when
/// `remembered` (see [`Input::from_hook_call`]), else with none.
pub(crate) fn read_input(bytes: &[u8], remembered: bool) -> Result<Input, InputError> {
    let mut reader = Reader { bytes, at: 0 };
    reader.skip_ws();
    if reader.peek() != Some(b'{') {
        // Valid JSON that is not an object, or not JSON at all.
        serde_json::from_slice::<IgnoredAny>(bytes)?;
        return Err(InputError::NotAnObject);
    }
    let mut input = Input::default();
    let mut configured = false;
    reader.object(|reader, key| {
        match key {
            "requestId" => input.request_id = reader.string()?.unwrap_or_default(),
            "request" => input.request = reader.request()?.unwrap_or_default(),
            "response" => input.response = reader.response()?,
            "chunk" => input.chunk = reader.string()?,
            "context" => input.context = reader.map()?,
            "environment" => input.environment = object(reader.value()?).unwrap_or_default(),
            "configuration" => {
                input.configuration = reader.settings()?;
                configured = true;
            }
            "timing" => input.timing = reader.timing()?,
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
    if remembered
        && !configured
        && let Some(settings) = SETTINGS.with(|cache| {
            cache
                .borrow()
                .as_ref()
                .map(|cached| cached.settings.clone())
        })
    {
        input.configuration = settings;
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

/// The configuration last read: its JSON text's length and hash, and the settings parsed from it.
struct CachedSettings {
    len: usize,
    hash: u64,
    settings: Settings,
}

thread_local! {
    /// An instance serves one pack, whose settings are the same on every call: they are parsed
    /// once, and later inputs are only checked to carry the same text.
    static SETTINGS: RefCell<Option<CachedSettings>> = const { RefCell::new(None) };
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

    /// The next value's JSON text, stepped over by its structure alone: strings (with their
    /// escapes), brackets and the bytes between. What a pack reads of it is checked when it is
    /// parsed; what it never reads (an unknown member, a body a pack does not open) is not.
    /// Stepping over text this way is several times faster than parsing it.
    fn raw(&mut self) -> Result<&'a [u8], InputError> {
        self.skip_ws();
        let bytes = self.bytes;
        let start = self.at;
        let end = match bytes.get(start) {
            None => return Err(self.error("unterminated value")),
            Some(b'{' | b'[') => crate::skip::container_end(bytes, start)
                .ok_or_else(|| self.error("unterminated value"))?,
            Some(b'"') => {
                string_end(bytes, start + 1).ok_or_else(|| self.error("unterminated string"))?
            }
            // A number, `true`, `false` or `null`: up to the next delimiter.
            Some(_) => bytes[start..]
                .iter()
                .position(|c| matches!(c, b',' | b':' | b'}' | b']' | b' ' | b'\n' | b'\r' | b'\t'))
                .map_or(bytes.len(), |n| start + n),
        };
        if end == start {
            return Err(self.error("expected a value"));
        }
        self.at = end;
        Ok(&bytes[start..end])
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

    /// The next value when it is a string, read without building a `Value` (most strings have no
    /// escapes); `None`, the value skipped, when it is not a string.
    fn string(&mut self) -> Result<Option<String>, InputError> {
        self.skip_ws();
        if self.peek() != Some(b'"') {
            // Parsed, not stepped over: a value the kit reads is checked.
            self.value()?;
            return Ok(None);
        }
        Ok(Some(self.key()?.into_owned()))
    }

    /// A string (the reader is on its opening quote): borrowed from the input when it has no
    /// escapes, else decoded by `serde_json`. Control characters, which JSON forbids in strings,
    /// are refused.
    fn key(&mut self) -> Result<Cow<'a, str>, InputError> {
        let start = self.at;
        let mut i = start + 1;
        let mut escaped = false;
        let mut ascii = true;
        loop {
            // Eight bytes a step while none of them ends the string or needs a closer look.
            while let Some(word) = self.bytes.get(i..i + 8) {
                let Ok(word) = <[u8; 8]>::try_from(word) else {
                    break;
                };
                if !plain_ascii(u64::from_le_bytes(word)) {
                    break;
                }
                i += 8;
            }
            match self.bytes.get(i) {
                Some(b'"') => break,
                Some(b'\\') => {
                    escaped = true;
                    i += 2;
                }
                Some(0..0x20) => {
                    self.at = i;
                    return Err(self.error("control character in a string"));
                }
                Some(&b) => {
                    ascii &= b.is_ascii();
                    i += 1;
                }
                None => return Err(self.error("unterminated string")),
            }
        }
        let quoted = &self.bytes[start..=i];
        self.at = i + 1;
        let text = &quoted[1..quoted.len() - 1];
        if escaped {
            // Read as a `Value`: a `String` target would pull in `serde`'s type-error messages.
            Ok(Cow::Owned(string(serde_json::from_slice::<Value>(quoted)?)))
        } else if ascii {
            // SAFETY: every byte is ASCII (checked above, or in `plain_ascii`'s words), which is
            // UTF-8.
            Ok(Cow::Borrowed(unsafe {
                std::str::from_utf8_unchecked(text)
            }))
        } else {
            std::str::from_utf8(text)
                .map(Cow::Borrowed)
                .map_err(|_| self.error("string is not UTF-8"))
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

    /// The `configuration` value. When the text ahead is the configuration last read (same
    /// length and hash, followed by the end of the member), it is stepped over without being
    /// parsed again; otherwise it is read, parsed and remembered. Anything but an object reads
    /// as no settings.
    fn settings(&mut self) -> Result<Settings, InputError> {
        self.skip_ws();
        let rest = &self.bytes[self.at..];
        let known = SETTINGS.with(|cache| {
            let cache = cache.borrow();
            let cached = cache.as_ref()?;
            let text = rest.get(..cached.len)?;
            let ends = rest[cached.len..]
                .iter()
                .find(|b| !b.is_ascii_whitespace())
                .is_some_and(|b| matches!(b, b',' | b'}'));
            // The same bytes as a complete JSON value read before: the same settings. Hashing
            // reads eight bytes a step, several times faster in Wasm than parsing them again.
            (ends && crate::hash::hash(text) == cached.hash)
                .then(|| (cached.len, cached.settings.clone()))
        });
        if let Some((len, settings)) = known {
            self.at += len;
            return Ok(settings);
        }
        let raw = self.raw()?;
        let settings = Rc::new(
            serde_json::from_slice::<Value>(raw)
                .ok()
                .and_then(object)
                .unwrap_or_default(),
        );
        SETTINGS.with(|cache| {
            *cache.borrow_mut() = Some(CachedSettings {
                len: raw.len(),
                hash: crate::hash::hash(raw),
                settings: settings.clone(),
            });
        });
        Ok(settings)
    }

    /// Header pairs, `[[name, value], ...]`, read straight into strings; entries that are not
    /// two strings are skipped, anything but an array reads as no headers.
    fn headers(&mut self) -> Result<Vec<(String, String)>, InputError> {
        self.skip_ws();
        if self.peek() != Some(b'[') {
            self.raw()?;
            return Ok(Vec::new());
        }
        let mut pairs = Vec::new();
        self.list(|reader| {
            reader.skip_ws();
            if reader.peek() != Some(b'[') {
                reader.raw()?;
                return Ok(());
            }
            let mut pair: [Option<String>; 2] = [None, None];
            let mut n = 0usize;
            reader.list(|reader| {
                match reader.string()? {
                    Some(s) if n < 2 => pair[n] = Some(s),
                    _ => pair[0] = None,
                }
                n += 1;
                Ok(())
            })?;
            if let (2, [Some(name), Some(value)]) = (n, pair) {
                pairs.push((name, value));
            }
            Ok(())
        })?;
        Ok(pairs)
    }

    /// Reads an array, calling `element` with the reader on each element, which it must read.
    fn list(
        &mut self,
        mut element: impl FnMut(&mut Self) -> Result<(), InputError>,
    ) -> Result<(), InputError> {
        self.expect(b'[', "expected `[`")?;
        self.skip_ws();
        if self.peek() == Some(b']') {
            self.at += 1;
            return Ok(());
        }
        loop {
            element(self)?;
            self.skip_ws();
            match self.peek() {
                Some(b',') => self.at += 1,
                Some(b']') => {
                    self.at += 1;
                    return Ok(());
                }
                _ => return Err(self.error("expected `,` or `]`")),
            }
        }
    }

    /// An object value as a map (`{}`, the usual context, without parsing); anything else reads
    /// as an empty map.
    fn map(&mut self) -> Result<Map<String, Value>, InputError> {
        self.skip_ws();
        if self.bytes[self.at..].starts_with(b"{}") {
            self.at += 2;
            return Ok(Map::new());
        }
        Ok(object(self.value()?).unwrap_or_default())
    }

    /// The `timing` object, its four numbers read without building a map; `None` when it is not
    /// an object. A member that is not a finite number reads as absent.
    fn timing(&mut self) -> Result<Option<Timing>, InputError> {
        if !self.is_object()? {
            return Ok(None);
        }
        let mut timing = Timing::default();
        self.object(|reader, key| {
            let slot = match key {
                "requestStartMs" => &mut timing.request_start_ms,
                "requestEndMs" => &mut timing.request_end_ms,
                "responseStartMs" => &mut timing.response_start_ms,
                "responseEndMs" => &mut timing.response_end_ms,
                _ => {
                    reader.raw()?;
                    return Ok(());
                }
            };
            *slot = reader.number()?;
            Ok(())
        })?;
        Ok(Some(timing))
    }

    /// A finite number; `None` when the value is anything else (checked and stepped over).
    /// Parsed by `serde_json`, whose float reading every pack links already.
    fn number(&mut self) -> Result<Option<f64>, InputError> {
        Ok(self.value()?.as_f64().filter(|n| n.is_finite()))
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
                "domain" => request.domain = reader.string()?.unwrap_or_default(),
                "path" => request.path = reader.string()?.unwrap_or_default(),
                "url" => request.url = reader.string()?.unwrap_or_default(),
                "method" => request.method = reader.string()?.unwrap_or_default(),
                "headers" => request.headers = Headers::from_json_text(reader.raw()?),
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
                "headers" => response.headers = Headers::from_json_text(reader.raw()?),
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

/// Eight bytes at a time: `0x01` in every byte, and every byte's high bit.
const ONES: u64 = 0x0101_0101_0101_0101;
const HIGH: u64 = 0x8080_8080_8080_8080;

/// The high bit set in (at least) the lowest byte of `word` equal to `byte`, and none when no
/// byte is: a byte equal to `byte` becomes zero, and the lowest zero byte of `x` sets its high
/// bit in `(x - ONES) & !x`.
fn bytes_equal(word: u64, byte: u8) -> u64 {
    let x = word ^ (ONES * u64::from(byte));
    x.wrapping_sub(ONES) & !x & HIGH
}

/// True when one of the eight bytes of `word` may be a quote or a backslash (never false when
/// one is).
fn quote_or_backslash(word: u64) -> bool {
    bytes_equal(word, b'"') | bytes_equal(word, b'\\') != 0
}

/// True when none of the eight bytes of `word` is a quote, a backslash, a control character or
/// outside ASCII: string text a reader steps over without looking at each byte. (A word it
/// says no to may be plain after all: the byte-wise look that follows decides.)
fn plain_ascii(word: u64) -> bool {
    // The lowest byte under 0x20 (with only ASCII below it) borrows and sets its high bit.
    let control = word.wrapping_sub(ONES * 0x20);
    !quote_or_backslash(word) && (control | word) & HIGH == 0
}

/// The index just past the closing quote of the string whose text starts at `from`.
fn string_end(bytes: &[u8], mut from: usize) -> Option<usize> {
    loop {
        // Eight bytes a step while none of them is a quote or a backslash.
        while let Some(word) = bytes.get(from..from + 8) {
            let Ok(word) = <[u8; 8]>::try_from(word) else {
                break;
            };
            if quote_or_backslash(u64::from_le_bytes(word)) {
                break;
            }
            from += 8;
        }
        match bytes.get(from)? {
            b'"' => return Some(from + 1),
            b'\\' => from += 2,
            _ => from += 1,
        }
    }
}

/// The header pairs in the JSON text of a header array (see [`Headers`]): what [`read_input`]
/// would have read there. Text that is not well-formed reads as no headers, with a warning in
/// the host's log: the host writes well-formed JSON, and a pack reading headers gets no error to
/// act on.
pub(crate) fn header_pairs(raw: &[u8]) -> Vec<(String, String)> {
    let mut reader = Reader { bytes: raw, at: 0 };
    reader.headers().unwrap_or_else(|e| {
        crate::warn(&format!("header pairs read as none: {e}"));
        Vec::new()
    })
}

/// A body from its JSON text, unless it is `null`.
fn body(raw: &[u8]) -> Option<Body> {
    if raw == b"null" {
        return None;
    }
    // Text that is not UTF-8 is no JSON a host sends: read as no body.
    std::str::from_utf8(raw).ok().map(Body::from_json_text)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn read_input_test(bytes: &[u8]) -> Result<Input, InputError> {
        read_input(bytes, false)
    }

    #[test]
    fn a_hook_call_without_configuration_keeps_the_settings_last_given() {
        let first =
            read_input(br#"{"configuration": {"x": 1}, "requestId": "a"}"#, true).expect("valid");
        let later = read_input(br#"{"requestId": "b"}"#, true).expect("valid");
        assert!(Rc::ptr_eq(&first.configuration, &later.configuration));
        assert_eq!(later.configuration.get("x"), Some(&Value::from(1)));
        // Read as a plain document (tests, fixtures), no configuration means none.
        let plain = read_input(br#"{"requestId": "c"}"#, false).expect("valid");
        assert!(plain.configuration.is_empty());
    }

    #[test]
    fn broken_structure_is_refused_even_where_skipped() {
        assert!(read_input_test(br#"{"unknown": "unterminated}"#).is_err());
        assert!(read_input_test(br#"{"unknown": [1, {"a": "b"}"#).is_err());
        assert!(read_input_test(br#"{"request": {"domain": "a"} "x": 1}"#).is_err());
        assert!(read_input_test(br#"{"request": {}} x"#).is_err());
        assert!(
            read_input_test(br#"{"request": {"domain": tru}}"#).is_err(),
            "read values are parsed"
        );
        assert!(read_input_test(br#"{"unknown": }"#).is_err());
    }

    #[test]
    fn skipped_values_end_where_they_should() {
        let input = read_input_test(
            br#"{"x": "a\"}b", "y": [1, "]", {"z": "}"}], "w": -1.5e3 , "requestId": "r", "v": true}"#,
        )
        .expect("valid");
        assert_eq!(input.request_id, "r");
        let input =
            read_input_test(br#"{"request": {"body": "a \"quoted\" text"}}"#).expect("valid");
        assert_eq!(
            input.request.body.as_ref().and_then(Body::text),
            Some("a \"quoted\" text")
        );
    }

    #[test]
    fn escaped_keys_and_strings_are_read() {
        let input =
            read_input_test(br#"{"re\u0071uest": {"dom\u0061in": "a\u002eio", "path": 7}}"#)
                .expect("valid");
        assert_eq!(input.request.domain, "a.io");
        assert_eq!(input.request.path, "", "a mistyped string reads as empty");
        assert!(read_input_test(b"{\"requestId\": \"a\x01b\"}").is_err());
        assert!(read_input_test(b"{\"requestId\": \"a\xffb\"}").is_err());
    }

    #[test]
    fn bodies_are_kept_as_text_and_settings_shared() {
        let text = br#"{"request": {"body": {"a" : [1, 2]}}, "configuration": {"x": 1}}"#;
        let a = read_input_test(text).expect("valid");
        let b = read_input_test(text).expect("valid");
        assert_eq!(
            a.request.body.as_ref().map(Body::raw_json),
            Some(r#"{"a" : [1, 2]}"#)
        );
        assert!(Rc::ptr_eq(&a.configuration, &b.configuration));
        let c = read_input_test(br#"{"configuration": {"x": 2}}"#).expect("valid");
        assert_eq!(c.configuration.get("x"), Some(&Value::from(2)));
        // The same text as a prefix of a longer value is not taken for it.
        let d =
            read_input_test(br#"{"configuration": {"x": 2}  , "requestId": "r"}"#).expect("valid");
        assert!(Rc::ptr_eq(&c.configuration, &d.configuration));
        let e = read_input_test(br#"{"configuration": {"x": 2}}}"#);
        assert!(e.is_err(), "trailing characters are still refused");
        let f = read_input_test(br#"{"configuration": {"x": 22}}"#).expect("valid");
        assert_eq!(f.configuration.get("x"), Some(&Value::from(22)));
    }

    #[test]
    fn strings_read_eight_bytes_at_a_time_end_where_serde_says() {
        // Every special byte at every position of strings up to three words long: what is
        // read (or refused) is what serde_json reads (or refuses).
        for special in ["\"", "\\\"", "\\n", "é", "\u{1}", "\u{7f}", "€x"] {
            for len in 0..24 {
                for at in 0..=len {
                    let mut text: String = "abcdefghijklmnopqrstuvwx"[..len].to_owned();
                    text.insert_str(at, special);
                    let doc = format!("{{\"requestId\": \"{text}\", \"x\": 1}}");
                    let ours = read_input_test(doc.as_bytes()).map(|i| i.request_id);
                    let theirs = serde_json::from_str::<Value>(&doc)
                        .map(|v| v["requestId"].as_str().unwrap_or_default().to_owned());
                    match (&ours, &theirs) {
                        (Ok(a), Ok(b)) => assert_eq!(a, b, "{doc:?}"),
                        (Err(_), Err(_)) => {}
                        _ => panic!("{doc:?}: ours {ours:?}, serde {theirs:?}"),
                    }
                    // Stepped over as an unknown member's value, it ends where serde says.
                    let doc = format!("{{\"x\": [\"{text}\"], \"requestId\": \"r\"}}");
                    if serde_json::from_str::<Value>(&doc).is_ok() {
                        let input = read_input_test(doc.as_bytes());
                        assert_eq!(input.expect(&doc).request_id, "r", "{doc:?}");
                    }
                }
            }
        }
        assert!(plain_ascii(u64::from_le_bytes(*b"abcdefgh")));
        for bad in [
            *b"abc\"efgh",
            *b"abcdefg\\",
            *b"\x1fbcdefgh",
            *b"abcdef\xc3\xa9",
        ] {
            assert!(!plain_ascii(u64::from_le_bytes(bad)), "{bad:?}");
        }
    }

    #[test]
    fn timing_numbers_and_an_empty_context_are_read_without_a_parse() {
        let input = read_input_test(
            br#"{"timing": {"requestStartMs": 1700000000000.25, "responseEndMs": -1e3, "requestEndMs": "x", "other": [1]}, "context": {}}"#,
        )
        .expect("valid");
        let timing = input.timing.expect("timing");
        assert_eq!(timing.request_start_ms, Some(1_700_000_000_000.25));
        assert_eq!(timing.response_end_ms, Some(-1000.0));
        assert_eq!(timing.request_end_ms, None, "a string is no time");
        assert!(input.context.is_empty());
        let input = read_input_test(br#"{"timing": 5, "context": {"a": 1}}"#).expect("valid");
        assert_eq!(input.timing, None);
        assert_eq!(input.context.get("a"), Some(&Value::from(1)));
        assert!(read_input_test(br#"{"timing": {"requestStartMs": 1.2.3}}"#).is_err());
    }

    #[test]
    fn headers_are_pairs_of_strings_and_the_rest_is_skipped() {
        let input = read_input_test(
            br#"{"request": {"headers": [["a", "1"], ["b"], ["c", 2], ["d", "4", "x"], 7, {"e": "5"}, ["f", "6"]]}}"#,
        )
        .expect("valid");
        assert_eq!(
            input.request.headers.pairs(),
            [("a".into(), "1".into()), ("f".into(), "6".into())]
        );
        let input = read_input_test(br#"{"request": {"headers": {"a": "b"}}}"#).expect("valid");
        assert!(input.request.headers.pairs().is_empty());
        // Read on first use: a broken header string leaves the rest of the input readable and
        // reads as no headers.
        let input = read_input_test(
            b"{\"request\": {\"headers\": [[\"a\", \"b\x01\"]], \"path\": \"/p\"}}",
        )
        .expect("valid around the headers");
        assert_eq!(input.request.path, "/p");
        assert!(input.request.headers.pairs().is_empty());
    }
}
