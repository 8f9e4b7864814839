//! The exchange as the runtime receives it, and the JSON document each hook is called with.

use serde::ser::{SerializeMap, SerializeSeq};
use serde::{Serialize, Serializer};
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
    serde_json::to_writer(out, &BodyJson::new(body))
}

/// A body as it goes into a hook's input: the value [`body_value`] gives. A body that is valid
/// JSON (the common case) is checked by a validating scan and its own text copied into the
/// input, without the host parsing it into a tree and writing it out again; anything else goes
/// through [`body_value`].
pub(crate) enum BodyJson<'a> {
    Json(&'a RawValue),
    Value(Value),
}

impl<'a> BodyJson<'a> {
    /// Checks `body` once and keeps what to write.
    pub(crate) fn new(body: &'a [u8]) -> Self {
        // The raw scan alone accepts what a parse refuses (nesting past serde_json's limit, a
        // number out of an f64's range), which `body_value` turns into text or members: only
        // a body a parse accepts is copied as it is.
        match serde_json::from_slice::<&RawValue>(body) {
            Ok(raw) if serde_json::from_str::<Parses>(raw.get()).is_ok() => BodyJson::Json(raw),
            _ => BodyJson::Value(body_value(body)),
        }
    }
}

/// A JSON value a `serde_json::Value` parse accepts, checked without building it: every
/// number read as a number, nesting counted against the same recursion limit.
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
        while map.next_entry::<serde::de::IgnoredAny, Parses>()?.is_some() {}
        Ok(Parses)
    }
}

impl Serialize for BodyJson<'_> {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        match self {
            BodyJson::Json(raw) => raw.serialize(s),
            BodyJson::Value(value) => value.serialize(s),
        }
    }
}

/// Nanoseconds to milliseconds, keeping microseconds.
#[allow(clippy::cast_precision_loss)] // microseconds since 1970 fit an f64's 53 bits exactly
fn millis(ns: u64) -> f64 {
    (ns / 1_000) as f64 / 1_000.0
}

/// The `timing` object.
struct TimingJson(Timing);

impl Serialize for TimingJson {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        let t = &self.0;
        let mut m = s.serialize_map(None)?;
        m.serialize_entry("requestStartMs", &millis(t.request_start_unix_ns))?;
        m.serialize_entry("requestEndMs", &millis(t.request_end_unix_ns))?;
        if let Some(ns) = t.response_start_unix_ns {
            m.serialize_entry("responseStartMs", &millis(ns))?;
        }
        if let Some(ns) = t.response_end_unix_ns {
            m.serialize_entry("responseEndMs", &millis(ns))?;
        }
        m.end()
    }
}

/// Header pairs as `[[name, value], ...]`, optionally without the headers that describe the
/// encoded body (the body packs see is already decoded).
struct Headers<'a> {
    pairs: &'a [(String, String)],
    drop_body_framing: bool,
}

impl Serialize for Headers<'_> {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        let mut seq = s.serialize_seq(None)?;
        for (name, value) in self.pairs {
            if self.drop_body_framing
                && (name.eq_ignore_ascii_case("content-encoding")
                    || name.eq_ignore_ascii_case("content-length"))
            {
                continue;
            }
            seq.serialize_element(&[name.as_str(), value.as_str()])?;
        }
        seq.end()
    }
}

#[derive(Serialize)]
struct RequestJson<'a> {
    domain: &'a str,
    path: &'a str,
    url: &'a str,
    method: &'a str,
    headers: Headers<'a>,
    #[serde(skip_serializing_if = "Option::is_none")]
    body: Option<&'a BodyJson<'a>>,
}

#[derive(Serialize)]
struct ResponseJson<'a> {
    status: u16,
    headers: Headers<'a>,
    #[serde(skip_serializing_if = "Option::is_none")]
    body: Option<&'a BodyJson<'a>>,
    /// Only when false: the input of a whole response is as it always was.
    #[serde(skip_serializing_if = "is_true")]
    complete: bool,
}

#[allow(clippy::trivially_copy_pass_by_ref)] // serde's skip_serializing_if takes a reference
fn is_true(b: &bool) -> bool {
    *b
}

/// One piece of body as base64.
struct Base64<'a>(&'a [u8]);

impl Serialize for Base64<'_> {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(&base64::display::Base64Display::new(
            self.0,
            &base64::engine::general_purpose::STANDARD,
        ))
    }
}

#[derive(Serialize)]
struct HookInput<'a> {
    #[serde(rename = "requestId")]
    request_id: &'a str,
    request: RequestJson<'a>,
    #[serde(skip_serializing_if = "Option::is_none")]
    response: Option<ResponseJson<'a>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    chunk: Option<Base64<'a>>,
    context: &'a Value,
    #[serde(skip_serializing_if = "Option::is_none")]
    environment: Option<&'a RawValue>,
    configuration: &'a RawValue,
    timing: TimingJson,
    #[serde(skip_serializing_if = "Option::is_none")]
    role: Option<&'a str>,
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
    pub configuration: &'a RawValue,
}

/// Writes the input document into `buf` (cleared first).
pub(crate) fn write_input(buf: &mut Vec<u8>, parts: &InputParts<'_>) -> serde_json::Result<()> {
    buf.clear();
    let r = parts.request;
    let doc = HookInput {
        request_id: parts.request_id,
        request: RequestJson {
            domain: r.domain,
            path: r.path,
            url: r.url,
            method: r.method,
            headers: Headers {
                pairs: r.headers,
                drop_body_framing: false,
            },
            body: parts.request_body,
        },
        response: parts.response.map(|(resp, body)| ResponseJson {
            status: resp.status,
            headers: Headers {
                pairs: resp.headers,
                drop_body_framing: true,
            },
            body,
            complete: resp.complete,
        }),
        chunk: parts.chunk.map(Base64),
        context: parts.context,
        environment: parts.environment,
        configuration: parts.configuration,
        timing: TimingJson(r.timing),
        role: r.role,
    };
    serde_json::to_writer(buf, &doc)
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
        ] {
            let written = serde_json::to_string(&BodyJson::new(body)).expect("serializable");
            let read: Value = serde_json::from_str(&written).expect("valid JSON");
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
        let v = serde_json::to_value(TimingJson(t)).expect("serializable");
        assert_eq!(
            v,
            json!({"requestStartMs": 1_700_000_000_123.456, "requestEndMs": 1_700_000_000_124.0,
                   "responseEndMs": 1_700_000_000_200.0})
        );
    }
}
