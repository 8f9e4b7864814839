//! HAR 1.2 documents (browser and proxy exports) turned into [`Exchange`]s, so recorded traffic
//! can be run through the same pack stage as captured traffic.
//!
//! Response bodies in a HAR file are already decoded, so, as for captured bodies,
//! `content-encoding` and `content-length` are removed from the response headers.
//!
//! A HAR file holds each response body whole, where a live capture hands it to packs piece by
//! piece as it arrives. [`HarEntry::response_pieces`] rebuilds the pieces a live run would give
//! a pack's `chunk` hook: one per server-sent event for a `text/event-stream` body, else the
//! body as one piece.

use std::sync::Arc;

use base64::Engine as _;
use bytes::Bytes;
use serde_json::Value;
use thiserror::Error;

use crate::assembler::{Body, Exchange, Request, Response};
use crate::headers::Headers;
use crate::text::{Text, well_known_method};
use crate::types::{RequestHead, ResponseHead, Version};

/// Why a HAR document could not be read.
#[derive(Debug, Error)]
pub enum HarError {
    /// The text is not JSON.
    #[error("HAR is not valid JSON: {0}")]
    Json(#[from] serde_json::Error),
    /// A required field is missing or has the wrong type.
    #[error("HAR entry {entry}: missing or invalid `{field}`")]
    Field {
        /// Index of the entry in `log.entries` (`usize::MAX` for the document itself).
        entry: usize,
        /// The field's path.
        field: &'static str,
    },
    /// A body marked base64 is not valid base64.
    #[error("HAR entry {entry}: body is not valid base64")]
    Base64 {
        /// Index of the entry.
        entry: usize,
    },
}

/// One HAR entry: the exchange, and its response body in the pieces a live capture would
/// have delivered.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HarEntry {
    /// The exchange (bodies kept up to `max_body`, like captured ones).
    pub exchange: Exchange,
    /// The whole decoded response body, in the pieces packs' `chunk` hook gets live: one per
    /// server-sent event (up to and including the blank line that ends it) for a
    /// `text/event-stream` body, else one piece; none for an empty body. Like live pieces,
    /// they are not cut at `max_body`.
    pub response_pieces: Vec<Vec<u8>>,
}

/// Parses a HAR 1.2 document given as text. See [`exchanges_from_har`].
///
/// # Errors
/// [`HarError`] when the text is not a HAR document.
pub fn exchanges_from_har_str(text: &str, max_body: usize) -> Result<Vec<Exchange>, HarError> {
    let doc: Value = serde_json::from_str(text)?;
    exchanges_from_har(&doc, max_body)
}

/// Turns every entry of a HAR 1.2 document into an [`Exchange`] with ids in entry order and
/// timestamps in Unix nanoseconds derived from `startedDateTime` and `timings`. Bodies keep at
/// most `max_body` bytes.
///
/// # Errors
/// [`HarError`] when a required field is missing or malformed.
pub fn exchanges_from_har(doc: &Value, max_body: usize) -> Result<Vec<Exchange>, HarError> {
    Ok(entries_from_har(doc, max_body)?
        .into_iter()
        .map(|e| e.exchange)
        .collect())
}

/// Parses a HAR 1.2 document given as text. See [`entries_from_har`].
///
/// # Errors
/// [`HarError`] when the text is not a HAR document.
pub fn entries_from_har_str(text: &str, max_body: usize) -> Result<Vec<HarEntry>, HarError> {
    let doc: Value = serde_json::from_str(text)?;
    entries_from_har(&doc, max_body)
}

/// Like [`exchanges_from_har`], with each response body also split into the pieces a live
/// capture would have delivered ([`HarEntry::response_pieces`]).
///
/// # Errors
/// [`HarError`] when a required field is missing or malformed.
pub fn entries_from_har(doc: &Value, max_body: usize) -> Result<Vec<HarEntry>, HarError> {
    let entries = doc
        .pointer("/log/entries")
        .and_then(Value::as_array)
        .ok_or(HarError::Field {
            entry: usize::MAX,
            field: "log.entries",
        })?;
    entries
        .iter()
        .enumerate()
        .map(|(i, e)| entry(i, e, max_body))
        .collect()
}

/// Splits a complete `text/event-stream` body into its events, each with the line ends that
/// follow it up to and including the blank line that dispatches it (lines end with CRLF, LF
/// or CR). Blank lines before an event's first line stay with that event; what follows the
/// last blank line is the last piece. The pieces put together are the body.
#[must_use]
pub fn split_events(body: &[u8]) -> Vec<&[u8]> {
    let mut pieces = Vec::new();
    let mut start = 0;
    let mut line_start = 0;
    // Whether the current piece has a line that is not blank.
    let mut has_line = false;
    let mut i = 0;
    while i < body.len() {
        let end_len = match body[i] {
            b'\n' => 1,
            b'\r' if body.get(i + 1) == Some(&b'\n') => 2,
            b'\r' => 1,
            _ => {
                i += 1;
                continue;
            }
        };
        let blank = i == line_start;
        i += end_len;
        line_start = i;
        if !blank {
            has_line = true;
        } else if has_line {
            pieces.push(&body[start..i]);
            start = i;
            has_line = false;
        }
    }
    if start < body.len() {
        pieces.push(&body[start..]);
    }
    pieces
}

/// Whether a content type (header value or HAR `mimeType`) is `text/event-stream`.
fn is_event_stream(content_type: Option<&str>) -> bool {
    content_type.is_some_and(|t| {
        t.split(';')
            .next()
            .unwrap_or_default()
            .trim()
            .eq_ignore_ascii_case("text/event-stream")
    })
}

fn field<'a>(
    entry: usize,
    v: &'a Value,
    pointer: &str,
    name: &'static str,
) -> Result<&'a Value, HarError> {
    v.pointer(pointer)
        .ok_or(HarError::Field { entry, field: name })
}

fn str_field<'a>(
    entry: usize,
    v: &'a Value,
    pointer: &str,
    name: &'static str,
) -> Result<&'a str, HarError> {
    field(entry, v, pointer, name)?
        .as_str()
        .ok_or(HarError::Field { entry, field: name })
}

fn headers(v: Option<&Value>) -> Headers {
    v.and_then(Value::as_array)
        .map(|list| {
            list.iter()
                .filter_map(|h| Some((h.get("name")?.as_str()?, h.get("value")?.as_str()?)))
                .filter(|(name, _)| !name.starts_with(':'))
                .collect()
        })
        .unwrap_or_default()
}

fn version(v: Option<&str>) -> Version {
    match v.map(str::to_ascii_lowercase).as_deref() {
        Some("http/1.0") => Version::Http10,
        Some("h2" | "http/2" | "http/2.0" | "h3" | "http/3" | "http/3.0") => Version::Http2,
        _ => Version::Http11,
    }
}

/// The whole decoded text of a HAR `content` or `postData` object.
fn body_bytes(entry: usize, content: Option<&Value>) -> Result<Vec<u8>, HarError> {
    let Some(text) = content.and_then(|c| c.get("text")).and_then(Value::as_str) else {
        return Ok(Vec::new());
    };
    let base64 = content
        .and_then(|c| c.get("encoding"))
        .and_then(Value::as_str)
        .is_some_and(|e| e.eq_ignore_ascii_case("base64"));
    if base64 {
        base64::engine::general_purpose::STANDARD
            .decode(text.trim())
            .map_err(|_| HarError::Base64 { entry })
    } else {
        Ok(text.as_bytes().to_vec())
    }
}

/// `data` as kept for packs: at most `max_body` bytes, with its true length.
fn kept(data: &[u8], max_body: usize) -> Body {
    Body {
        data: Bytes::copy_from_slice(&data[..data.len().min(max_body)]),
        total_len: data.len() as u64,
        truncated: data.len() > max_body,
    }
}

fn ms(v: &Value, key: &str) -> f64 {
    v.get(key)
        .and_then(Value::as_f64)
        .filter(|x| *x > 0.0)
        .unwrap_or(0.0)
}

#[allow(clippy::cast_possible_truncation, clippy::cast_sign_loss)]
fn ms_to_ns(ms: f64) -> u64 {
    (ms * 1_000_000.0) as u64
}

fn entry(i: usize, e: &Value, max_body: usize) -> Result<HarEntry, HarError> {
    let started = str_field(i, e, "/startedDateTime", "startedDateTime")?;
    let t0 = parse_rfc3339_ns(started).ok_or(HarError::Field {
        entry: i,
        field: "startedDateTime",
    })?;
    let method = str_field(i, e, "/request/method", "request.method")?;
    let url = str_field(i, e, "/request/url", "request.url")?;
    let status = field(i, e, "/response/status", "response.status")?
        .as_u64()
        .and_then(|s| u16::try_from(s).ok())
        .ok_or(HarError::Field {
            entry: i,
            field: "response.status",
        })?;
    let url = taskless_url::split(url);
    let req_headers = headers(e.pointer("/request/headers"));
    let authority = req_headers
        .get_text("host")
        .or_else(|| (!url.authority.is_empty()).then(|| Text::from(url.authority)));
    let timings = e.get("timings").cloned().unwrap_or(Value::Null);
    let send_end = t0
        + ms_to_ns(
            ms(&timings, "blocked")
                + ms(&timings, "dns")
                + ms(&timings, "connect")
                + ms(&timings, "send"),
        );
    let wait_end = send_end + ms_to_ns(ms(&timings, "wait"));
    let end = (t0 + ms_to_ns(ms(e, "time"))).max(wait_end);
    let request = Request {
        head: RequestHead {
            method: well_known_method(method).unwrap_or_else(|| Text::from(method)),
            target: Text::from(&*url.target),
            authority,
            scheme: url
                .scheme
                .map(|s| Text::from(s.to_ascii_lowercase().as_str())),
            version: version(e.pointer("/request/httpVersion").and_then(Value::as_str)),
            headers: req_headers,
            partial: false,
        },
        body: kept(&body_bytes(i, e.pointer("/request/postData"))?, max_body),
        trailers: Headers::new(),
        start_ns: t0,
        end_ns: send_end,
    };
    let mut resp_headers = headers(e.pointer("/response/headers"));
    resp_headers.retain(|name, _| name != "content-encoding" && name != "content-length");
    let content = e.pointer("/response/content");
    let response_body = body_bytes(i, content)?;
    let stream = is_event_stream(resp_headers.get("content-type"))
        || is_event_stream(
            content
                .and_then(|c| c.get("mimeType"))
                .and_then(Value::as_str),
        );
    let response_pieces = if stream {
        split_events(&response_body)
            .into_iter()
            .map(<[u8]>::to_vec)
            .collect()
    } else if response_body.is_empty() {
        Vec::new()
    } else {
        vec![response_body.clone()]
    };
    let response = Response {
        head: ResponseHead {
            status,
            reason: e
                .pointer("/response/statusText")
                .and_then(Value::as_str)
                .unwrap_or_default()
                .into(),
            version: version(e.pointer("/response/httpVersion").and_then(Value::as_str)),
            headers: resp_headers,
            partial: false,
        },
        body: kept(&response_body, max_body),
        trailers: Headers::new(),
        start_ns: wait_end,
        end_ns: end,
    };
    Ok(HarEntry {
        exchange: Exchange {
            id: i as u64,
            request: Arc::new(request),
            response,
        },
        response_pieces,
    })
}

/// Days from 1970-01-01 to the given civil date (proleptic Gregorian).
fn days_from_civil(y: i64, m: i64, d: i64) -> i64 {
    let y = if m <= 2 { y - 1 } else { y };
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let mp = (m + 9) % 12;
    let doy = (153 * mp + 2) / 5 + d - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146_097 + doe - 719_468
}

/// Parses an RFC 3339 timestamp (`2024-05-01T12:00:00.123+02:00`) into Unix nanoseconds.
#[must_use]
pub fn parse_rfc3339_ns(s: &str) -> Option<u64> {
    let b = s.as_bytes();
    let num = |r: std::ops::Range<usize>| -> Option<i64> {
        let part = s.get(r)?;
        if !part.bytes().all(|c| c.is_ascii_digit()) {
            return None;
        }
        part.parse().ok()
    };
    if b.len() < 19 || b[4] != b'-' || b[7] != b'-' || !matches!(b[10], b'T' | b't' | b' ') {
        return None;
    }
    let (year, month, day) = (num(0..4)?, num(5..7)?, num(8..10)?);
    let (hour, min, sec) = (num(11..13)?, num(14..16)?, num(17..19)?);
    if !(1..=12).contains(&month) || !(1..=31).contains(&day) || hour > 23 || min > 59 || sec > 60 {
        return None;
    }
    let mut pos = 19;
    let mut nanos: i64 = 0;
    if b.get(pos) == Some(&b'.') {
        pos += 1;
        let start = pos;
        while b.get(pos).is_some_and(u8::is_ascii_digit) {
            pos += 1;
        }
        let digits = s.get(start..pos)?;
        let digits = &digits[..digits.len().min(9)];
        nanos = format!("{digits:0<9}").parse().ok()?;
    }
    let offset_s = match b.get(pos) {
        Some(b'Z' | b'z') => 0,
        Some(sign @ (b'+' | b'-')) => {
            let h = num(pos + 1..pos + 3)?;
            let m = num(pos + 4..pos + 6)?;
            let o = h * 3600 + m * 60;
            if *sign == b'+' { o } else { -o }
        }
        _ => return None,
    };
    let secs = days_from_civil(year, month, day) * 86_400 + hour * 3600 + min * 60 + sec - offset_s;
    u64::try_from(secs.checked_mul(1_000_000_000)?.checked_add(nanos)?).ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rfc3339_timestamps() {
        assert_eq!(parse_rfc3339_ns("1970-01-01T00:00:00Z"), Some(0));
        assert_eq!(
            parse_rfc3339_ns("2024-02-29T12:00:00.5+01:00"),
            Some(1_709_204_400_500_000_000)
        );
        assert_eq!(parse_rfc3339_ns("2024-02-29"), None);
        assert_eq!(parse_rfc3339_ns("2024-13-01T00:00:00Z"), None);
    }

    #[test]
    fn event_streams_split_after_each_blank_line_whatever_the_line_ends() {
        let body: &[u8] =
            b"data: a\n\ndata: b\r\n\r\nevent: x\rdata: c\r\r\r\ndata: d\ndata: e\n\ndata: tail";
        let pieces = split_events(body);
        assert_eq!(
            pieces,
            [
                &b"data: a\n\n"[..],
                b"data: b\r\n\r\n",
                b"event: x\rdata: c\r\r",
                // The blank lines before an event stay with it.
                b"\r\ndata: d\ndata: e\n\n",
                b"data: tail",
            ]
        );
        assert_eq!(pieces.concat(), body);
        assert!(split_events(b"").is_empty());
        assert_eq!(split_events(b"\n\n"), [&b"\n\n"[..]]);
    }

    fn har(content_type: &str, mime: &str, text: &str) -> String {
        serde_json::json!({"log": {"entries": [{
            "startedDateTime": "2026-01-15T10:00:00Z",
            "request": {"method": "POST", "url": "https://api.example.com/v1/x", "headers": []},
            "response": {"status": 200, "headers": [{"name": "Content-Type", "value": content_type}],
                         "content": {"mimeType": mime, "text": text}}
        }]}})
        .to_string()
    }

    #[test]
    fn har_response_pieces_are_events_for_a_stream_and_the_whole_body_otherwise() {
        let text = "data: {\"n\":1}\n\ndata: {\"n\":2}\n\ndata: [DONE]\n\n";
        let entries =
            entries_from_har_str(&har("text/event-stream; charset=utf-8", "", text), 10).unwrap();
        let e = &entries[0];
        assert_eq!(
            e.response_pieces,
            [
                b"data: {\"n\":1}\n\n".to_vec(),
                b"data: {\"n\":2}\n\n".to_vec(),
                b"data: [DONE]\n\n".to_vec()
            ]
        );
        // The kept body is cut at max_body; the pieces, as live, are not.
        assert_eq!(
            e.exchange.response.body.data,
            text.as_bytes()[..10].to_vec()
        );
        assert!(e.exchange.response.body.truncated);
        assert_eq!(e.exchange.response.body.total_len, text.len() as u64);

        // The HAR mimeType alone is enough.
        let entries = entries_from_har_str(&har("", "text/event-stream", text), 1 << 20).unwrap();
        assert_eq!(entries[0].response_pieces.len(), 3);

        let json = "{\"a\":1}\n\n{\"b\":2}";
        let entries =
            entries_from_har_str(&har("application/json", "application/json", json), 1 << 20)
                .unwrap();
        assert_eq!(entries[0].response_pieces, [json.as_bytes().to_vec()]);
        let entries = entries_from_har_str(&har("application/json", "", ""), 1 << 20).unwrap();
        assert!(entries[0].response_pieces.is_empty());
    }
}
