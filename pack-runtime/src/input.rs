//! The exchange as the runtime receives it, and the JSON document each hook is called with.

use serde_json::Value;
use serde_json::value::RawValue;

/// Kernel timestamps of one exchange, in Unix epoch nanoseconds.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Timing {
    /// First request byte written.
    pub request_start_unix_ns: u64,
    /// Last request byte written.
    pub request_end_unix_ns: u64,
    /// First response byte read, once known.
    pub response_start_unix_ns: Option<u64>,
    /// Last response byte read, once known.
    pub response_end_unix_ns: Option<u64>,
}

/// The request side of an exchange.
#[derive(Debug, Clone, Copy)]
pub struct RequestView<'a> {
    /// Method, e.g. `POST`.
    pub method: &'a str,
    /// Full URL with scheme, host and query.
    pub url: &'a str,
    /// Host name only.
    pub domain: &'a str,
    /// Path without the query string.
    pub path: &'a str,
    /// Header pairs, names lower-case, in wire order.
    pub headers: &'a [(String, String)],
    /// Decoded body, if any was captured.
    pub body: Option<&'a [u8]>,
    /// Timestamps of the exchange.
    pub timing: Timing,
    /// Which side the observed process is: `client` (it made the request) or `server`; given
    /// to packs as the input's `role`.
    pub role: Option<&'a str>,
}

/// The response side of an exchange.
#[derive(Debug, Clone, Copy)]
pub struct ResponseView<'a> {
    /// Status code.
    pub status: u16,
    /// Header pairs, names lower-case, in wire order.
    pub headers: &'a [(String, String)],
    /// Decoded body, if any was captured.
    pub body: Option<&'a [u8]>,
    /// Whether the response arrived whole. False when the connection ended before its end (a
    /// client that stopped reading): packs then get the head and the body as far as it came,
    /// and the input says `"complete": false`.
    pub complete: bool,
}

/// A body as packs see it: parsed JSON when it is JSON, else its text (lossy UTF-8). A JSON
/// object or array cut short (a body kept only up to `--max-body`) gives its complete
/// top-level members (see [`crate::json_prefix::complete_members`]).
#[must_use]
pub fn body_value(body: &[u8]) -> Value {
    match serde_json::from_slice::<Value>(body) {
        Ok(v) => v,
        // Cut short: the bytes end inside the document (or nest past serde_json's limit
        // before they end).
        Err(e)
            if e.classify() == serde_json::error::Category::Eof
                || e.to_string().starts_with("recursion limit exceeded") =>
        {
            crate::json_prefix::complete_members(body)
                .unwrap_or_else(|| Value::String(String::from_utf8_lossy(body).into_owned()))
        }
        Err(_) => Value::String(String::from_utf8_lossy(body).into_owned()),
    }
}

/// Writes `body` to `out` as it goes into a hook's input: the value [`body_value`] gives, a
/// valid JSON body as its own text (checked, then copied).
///
/// # Errors
/// Never in practice: a [`Value`] from [`body_value`] has only string keys.
pub fn write_body(body: &[u8], out: &mut Vec<u8>) -> serde_json::Result<()> {
    BodyJson::new(body).write(out)
}

/// A body as it goes into a hook's input: the value [`body_value`] gives. A body that is valid
/// JSON (the common case) is checked by one validating pass and its own text copied into the
/// input, without the host parsing it into a tree and writing it out again; anything else goes
/// through [`body_value`].
pub(crate) enum BodyJson<'a> {
    /// The body's JSON text, without the white space around it.
    Json(&'a [u8]),
    Value(Value),
}

impl<'a> BodyJson<'a> {
    /// Checks `body` once and keeps what to write.
    pub(crate) fn new(body: &'a [u8]) -> Self {
        // One pass that accepts exactly what a parse into a `Value` accepts (every string,
        // keys included, decoded and checked; every number read; nesting counted against the
        // same limit), without building anything. A body a parse refuses although it is
        // well-formed (too deep, a number out of an f64's range) goes through `body_value`,
        // which turns it into text or its complete members. The body is checked as UTF-8 in
        // one pass first (which a parse from bytes does string by string, slower); a body that
        // is not UTF-8 is no JSON a parse accepts either.
        if std::str::from_utf8(body).is_ok_and(|text| serde_json::from_str::<Parses>(text).is_ok())
        {
            BodyJson::Json(body.trim_ascii())
        } else {
            BodyJson::Value(body_value(body))
        }
    }

    /// Writes the body's JSON.
    fn write(&self, out: &mut Vec<u8>) -> serde_json::Result<()> {
        match self {
            BodyJson::Json(text) => {
                out.extend_from_slice(text);
                Ok(())
            }
            BodyJson::Value(value) => serde_json::to_writer(out, value),
        }
    }
}

/// A JSON value a `serde_json::Value` parse accepts, checked without building it: every
/// string read (keys too), every number read as a number, nesting counted against the same
/// recursion limit.
struct Parses;

impl<'de> serde::Deserialize<'de> for Parses {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        d.deserialize_any(ParsesVisitor)
    }
}

struct ParsesVisitor;

impl<'de> serde::de::Visitor<'de> for ParsesVisitor {
    type Value = Parses;

    fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("a JSON value")
    }

    fn visit_bool<E>(self, _: bool) -> Result<Parses, E> {
        Ok(Parses)
    }

    fn visit_i64<E>(self, _: i64) -> Result<Parses, E> {
        Ok(Parses)
    }

    fn visit_u64<E>(self, _: u64) -> Result<Parses, E> {
        Ok(Parses)
    }

    fn visit_f64<E>(self, _: f64) -> Result<Parses, E> {
        Ok(Parses)
    }

    fn visit_str<E>(self, _: &str) -> Result<Parses, E> {
        Ok(Parses)
    }

    fn visit_unit<E>(self) -> Result<Parses, E> {
        Ok(Parses)
    }

    fn visit_seq<A: serde::de::SeqAccess<'de>>(self, mut seq: A) -> Result<Parses, A::Error> {
        while seq.next_element::<Parses>()?.is_some() {}
        Ok(Parses)
    }

    fn visit_map<A: serde::de::MapAccess<'de>>(self, mut map: A) -> Result<Parses, A::Error> {
        while map.next_entry::<Parses, Parses>()?.is_some() {}
        Ok(Parses)
    }
}

/// Nanoseconds to milliseconds, keeping microseconds.
#[allow(clippy::cast_precision_loss)] // microseconds since 1970 fit an f64's 53 bits exactly
fn millis(ns: u64) -> f64 {
    (ns / 1_000) as f64 / 1_000.0
}

/// Everything one hook call's input is made of.
pub(crate) struct InputParts<'a> {
    pub request_id: &'a str,
    pub request: &'a RequestView<'a>,
    /// The request body, given only to packs with the body permission.
    pub request_body: Option<&'a BodyJson<'a>>,
    pub response: Option<(&'a ResponseView<'a>, Option<&'a BodyJson<'a>>)>,
    pub chunk: Option<&'a [u8]>,
    pub context: &'a Value,
    /// Serialized once per pack, at load.
    pub environment: Option<&'a RawValue>,
    /// `None` for a pack with `configurationOnce` whose instance already has it.
    pub configuration: Option<&'a RawValue>,
}

/// A JSON string.
fn string(buf: &mut Vec<u8>, s: &str) -> serde_json::Result<()> {
    serde_json::to_writer(buf, s)
}

/// `,"name":` (the comma only when `comma`).
fn key(buf: &mut Vec<u8>, comma: bool, name: &str) {
    if comma {
        buf.push(b',');
    }
    buf.push(b'"');
    buf.extend_from_slice(name.as_bytes());
    buf.extend_from_slice(b"\":");
}

/// Header pairs as `[[name, value], ...]`, optionally without the headers that describe the
/// encoded body (the body packs see is already decoded).
fn headers(
    buf: &mut Vec<u8>,
    pairs: &[(String, String)],
    drop_body_framing: bool,
) -> serde_json::Result<()> {
    buf.push(b'[');
    let mut first = true;
    for (name, value) in pairs {
        if drop_body_framing
            && (name.eq_ignore_ascii_case("content-encoding")
                || name.eq_ignore_ascii_case("content-length"))
        {
            continue;
        }
        if !first {
            buf.push(b',');
        }
        first = false;
        buf.push(b'[');
        string(buf, name)?;
        buf.push(b',');
        string(buf, value)?;
        buf.push(b']');
    }
    buf.push(b']');
    Ok(())
}

/// The `timing` object.
fn timing(buf: &mut Vec<u8>, t: &Timing) -> serde_json::Result<()> {
    let fields = [
        ("requestStartMs", Some(t.request_start_unix_ns)),
        ("requestEndMs", Some(t.request_end_unix_ns)),
        ("responseStartMs", t.response_start_unix_ns),
        ("responseEndMs", t.response_end_unix_ns),
    ];
    buf.push(b'{');
    let mut first = true;
    for (name, ns) in fields {
        if let Some(ns) = ns {
            key(buf, !first, name);
            first = false;
            serde_json::to_writer(&mut *buf, &millis(ns))?;
        }
    }
    buf.push(b'}');
    Ok(())
}

/// Writes the input document into `buf` (cleared first), straight into the buffer: strings
/// escaped as JSON, bodies, settings and environment copied as the JSON text they already are.
pub(crate) fn write_input(buf: &mut Vec<u8>, parts: &InputParts<'_>) -> serde_json::Result<()> {
    use std::io::Write as _;
    buf.clear();
    let r = parts.request;
    buf.push(b'{');
    key(buf, false, "requestId");
    string(buf, parts.request_id)?;
    key(buf, true, "request");
    buf.push(b'{');
    key(buf, false, "domain");
    string(buf, r.domain)?;
    key(buf, true, "path");
    string(buf, r.path)?;
    key(buf, true, "url");
    string(buf, r.url)?;
    key(buf, true, "method");
    string(buf, r.method)?;
    key(buf, true, "headers");
    headers(buf, r.headers, false)?;
    if let Some(body) = parts.request_body {
        key(buf, true, "body");
        body.write(buf)?;
    }
    buf.push(b'}');
    if let Some((resp, body)) = parts.response {
        key(buf, true, "response");
        buf.push(b'{');
        key(buf, false, "status");
        buf.extend_from_slice(resp.status.to_string().as_bytes());
        key(buf, true, "headers");
        headers(buf, resp.headers, true)?;
        if let Some(body) = body {
            key(buf, true, "body");
            body.write(buf)?;
        }
        // Only when false: the input of a whole response is as it always was.
        if !resp.complete {
            key(buf, true, "complete");
            buf.extend_from_slice(b"false");
        }
        buf.push(b'}');
    }
    if let Some(chunk) = parts.chunk {
        key(buf, true, "chunk");
        write!(
            buf,
            "\"{}\"",
            base64::display::Base64Display::new(chunk, &base64::engine::general_purpose::STANDARD)
        )
        .map_err(serde_json::Error::io)?;
    }
    key(buf, true, "context");
    serde_json::to_writer(&mut *buf, parts.context)?;
    if let Some(environment) = parts.environment {
        key(buf, true, "environment");
        buf.extend_from_slice(environment.get().as_bytes());
    }
    if let Some(configuration) = parts.configuration {
        key(buf, true, "configuration");
        buf.extend_from_slice(configuration.get().as_bytes());
    }
    key(buf, true, "timing");
    timing(buf, &r.timing)?;
    if let Some(role) = r.role {
        key(buf, true, "role");
        string(buf, role)?;
    }
    buf.push(b'}');
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn bodies_are_json_when_they_parse_and_text_otherwise() {
        assert_eq!(body_value(br#"{"a":[1,2]}"#), json!({"a": [1, 2]}));
        assert_eq!(body_value(b"a=1&b=2"), json!("a=1&b=2"));
        assert_eq!(body_value(b"caf\xc3\xa9 \xff"), json!("caf\u{e9} \u{fffd}"));
    }

    #[test]
    fn a_json_body_cut_short_gives_its_complete_members() {
        // An OpenAI request cut at --max-body inside its messages array.
        let mut body =
            br#"{"model":"gpt-4o-mini","stream":true,"messages":[{"role":"user","content":""#
                .to_vec();
        body.extend(std::iter::repeat_n(b'x', 1 << 20));
        assert_eq!(
            body_value(&body),
            json!({"model": "gpt-4o-mini", "stream": true})
        );
        // Malformed (not cut) JSON stays text.
        assert_eq!(body_value(br#"{"a":1,}"#), json!(r#"{"a":1,}"#));
        // Nesting past the limit is not parsed recursively: only the complete members.
        let deep = format!(r#"{{"model":"m","x":{}"#, "[".repeat(1 << 16));
        assert_eq!(body_value(deep.as_bytes()), json!({"model": "m"}));
    }

    #[test]
    fn a_body_goes_into_the_input_as_the_same_value_body_value_gives() {
        for body in [
            &br#" {"a": [1, 2], "b": {"c": "d\u00e9"}} "#[..],
            b"a=1&b=2",
            b"caf\xc3\xa9 \xff",
            b"12345678901234567890",
            b"\"text\"",
            b"{\"broken\": ",
            br#"{"model":"m","stream":true,"messages":[{"role":"user","content":"cut"#,
            format!(r#"{{"model":"m","x":{}"#, "[".repeat(1 << 12)).as_bytes(),
            // Whole, but nested past the parser's limit, or a number past an f64's range.
            format!(
                r#"{{"model":"m","x":{}{}}}"#,
                "[".repeat(200),
                "]".repeat(200)
            )
            .as_bytes(),
            format!("{}{}", "[".repeat(200), "]".repeat(200)).as_bytes(),
            b"[1e400]",
            br#"{"a": 1, "b": -1e999}"#,
            b"",
            // Well-formed but not text a parse accepts: bad UTF-8 or escapes, in a value or a
            // key, and a control character.
            b"{\"a\": \"\xff\"}",
            b"{\"\xff\": 1}",
            br#"{"a": "\ud800"}"#,
            br#"{"\ud800": 1}"#,
            br#"{"a": "\x"}"#,
            b"{\"a\": \"\x01\"}",
            b" \n[1, {\"k\": null}]\t\r\n",
        ] {
            let mut written = Vec::new();
            BodyJson::new(body)
                .write(&mut written)
                .expect("serializable");
            let read: Value = serde_json::from_slice(&written).expect("valid JSON");
            assert_eq!(read, body_value(body), "{}", String::from_utf8_lossy(body));
        }
    }

    #[test]
    fn timing_is_unix_milliseconds_with_microseconds() {
        let t = Timing {
            request_start_unix_ns: 1_700_000_000_123_456_789,
            request_end_unix_ns: 1_700_000_000_124_000_000,
            response_start_unix_ns: None,
            response_end_unix_ns: Some(1_700_000_000_200_000_999),
        };
        let mut buf = Vec::new();
        timing(&mut buf, &t).expect("serializable");
        let v: Value = serde_json::from_slice(&buf).expect("valid JSON");
        assert_eq!(
            v,
            json!({"requestStartMs": 1_700_000_000_123.456, "requestEndMs": 1_700_000_000_124.0,
                   "responseEndMs": 1_700_000_000_200.0})
        );
    }
}
