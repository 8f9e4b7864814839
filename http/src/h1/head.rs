//! HTTP/1 message heads through httparse, and the body framing they announce.

use std::mem::MaybeUninit;

use crate::arena::Arena;
use crate::arena::finish_head;
use crate::headers::{Builder, Field, Headers, Span, copy_lowercase};
use crate::text::{Text, well_known_method};
use crate::types::{RequestHead, ResponseHead, Version};

/// Most header fields parsed in one head, whatever the configuration says.
pub(crate) const MAX_HEADERS_HARD: usize = 256;

/// Result of parsing a head from the start of a buffer.
#[derive(Debug)]
pub(crate) enum Parsed<T> {
    /// The head, and how many bytes it took.
    Complete(T, usize),
    /// More bytes are needed; `first_line` says whether the start line is already complete.
    Partial { first_line: bool },
    /// Not an HTTP/1 head.
    Invalid,
}

fn version(v: Option<u8>) -> Version {
    match v {
        Some(0) => Version::Http10,
        _ => Version::Http11,
    }
}

fn has_line(buf: &[u8]) -> bool {
    buf.contains(&b'\n')
}

fn parser_config() -> httparse::ParserConfig {
    let mut config = httparse::ParserConfig::default();
    config
        .allow_spaces_after_header_name_in_responses(true)
        .allow_obsolete_multiline_headers_in_responses(true)
        .allow_multiple_spaces_in_request_line_delimiters(true)
        .allow_multiple_spaces_in_response_status_delimiters(true);
    config
}

/// Splits an absolute-form target (`http://host/path`) into scheme (lower-case) and authority.
fn absolute_form(target: &Text) -> Option<(Text, Text)> {
    if target.starts_with('/') {
        // Origin form, the usual case.
        return None;
    }
    let (scheme, rest) = target.split_once("://")?;
    if scheme.is_empty()
        || !scheme
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"+-.".contains(&b))
    {
        return None;
    }
    let authority = rest.split(['/', '?']).next().unwrap_or_default();
    let scheme = if scheme.bytes().any(|b| b.is_ascii_uppercase()) {
        Text::from(scheme.to_ascii_lowercase())
    } else {
        target.slice(scheme)
    };
    Some((scheme, target.slice(authority)))
}

/// Copies the head `raw` (whose fields httparse found) into the arena once, header names
/// lower-cased in the copy: the fields and the `extra` texts become spans of that one buffer.
fn copy_head(
    arena: &mut Arena,
    raw: &[u8],
    parsed: &[httparse::Header<'_>],
    extra: &mut [Span],
) -> Headers {
    arena.discard();
    arena.reserve(raw.len() + parsed.len() * Field::SIZE);
    let buf = arena.building();
    buf.extend_from_slice(raw);
    for h in parsed {
        let (Some(name), Some(value)) = (
            Span::within(raw, h.name.as_bytes()),
            Span::within(raw, h.value),
        ) else {
            // Not a slice of the head (never with httparse): copy field by field instead.
            arena.discard();
            return copy_fields(raw, parsed, extra);
        };
        if let Some(dst) = buf.get_mut(name.range()) {
            copy_lowercase(dst, h.name.as_bytes());
        }
        buf.extend_from_slice(&Field { name, value }.encode());
    }
    finish_head(arena, raw.len(), extra)
}

/// The slow path of [`copy_head`]: each field and text copied on its own.
fn copy_fields(raw: &[u8], parsed: &[httparse::Header<'_>], extra: &mut [Span]) -> Headers {
    let mut b = Builder::default();
    for span in extra.iter_mut() {
        *span = raw
            .get(span.range())
            .and_then(|t| b.text(t))
            .unwrap_or_default();
    }
    for h in parsed {
        b.field(h.name.as_bytes(), h.value);
    }
    b.finish()
}

/// Runs httparse on a request head at the start of `buf`; `build` turns it into the result.
fn with_request<T>(
    buf: &[u8],
    max_headers: usize,
    build: impl FnOnce(&httparse::Request<'_, '_>, &[u8]) -> Option<T>,
) -> Parsed<T> {
    let mut storage = [const { MaybeUninit::<httparse::Header<'_>>::uninit() }; MAX_HEADERS_HARD];
    let n = max_headers.clamp(1, MAX_HEADERS_HARD);
    let mut req = httparse::Request::new(&mut []);
    match parser_config().parse_request_with_uninit_headers(&mut req, buf, &mut storage[..n]) {
        Ok(httparse::Status::Complete(len)) => match build(&req, &buf[..len]) {
            Some(head) => Parsed::Complete(head, len),
            None => Parsed::Invalid,
        },
        Ok(httparse::Status::Partial) => Parsed::Partial {
            first_line: has_line(buf),
        },
        Err(_) => Parsed::Invalid,
    }
}

/// Runs httparse on a response head at the start of `buf`; `build` turns it into the result.
fn with_response<T>(
    buf: &[u8],
    max_headers: usize,
    build: impl FnOnce(&httparse::Response<'_, '_>, &[u8]) -> Option<T>,
) -> Parsed<T> {
    let mut storage = [const { MaybeUninit::<httparse::Header<'_>>::uninit() }; MAX_HEADERS_HARD];
    let n = max_headers.clamp(1, MAX_HEADERS_HARD);
    let mut res = httparse::Response::new(&mut []);
    match parser_config().parse_response_with_uninit_headers(&mut res, buf, &mut storage[..n]) {
        Ok(httparse::Status::Complete(len)) => match build(&res, &buf[..len]) {
            Some(head) => Parsed::Complete(head, len),
            None => Parsed::Invalid,
        },
        Ok(httparse::Status::Partial) => Parsed::Partial {
            first_line: has_line(buf),
        },
        Err(_) => Parsed::Invalid,
    }
}

/// Whether a request head starts `buf` (nothing is built).
pub(crate) fn probe_request(buf: &[u8], max_headers: usize) -> Parsed<()> {
    with_request(buf, max_headers, |req, _| {
        (req.method.is_some() && req.path.is_some()).then_some(())
    })
}

/// Whether a response head starts `buf` (nothing is built).
pub(crate) fn probe_response(buf: &[u8], max_headers: usize) -> Parsed<()> {
    with_response(buf, max_headers, |res, _| res.code.map(|_| ()))
}

/// Parses a request head at the start of `buf`, copying it into `arena`.
pub(crate) fn parse_request(
    buf: &[u8],
    max_headers: usize,
    arena: &mut Arena,
) -> Parsed<RequestHead> {
    with_request(buf, max_headers, |req, raw| {
        let (method, target) = (req.method?, req.path?);
        let mut spans = [
            Span::within(raw, method.as_bytes())?,
            Span::within(raw, target.as_bytes())?,
        ];
        let headers = copy_head(arena, raw, req.headers, &mut spans);
        let method = well_known_method(method).unwrap_or_else(|| headers.share(spans[0]));
        let target = headers.share(spans[1]);
        let (scheme, mut authority) = match absolute_form(&target) {
            Some((s, a)) => (Some(s), Some(a)),
            None => (None, None),
        };
        if let Some(host) = headers.get_text("host") {
            authority = Some(host);
        }
        Some(RequestHead {
            method,
            target,
            authority,
            scheme,
            version: version(req.version),
            headers,
            partial: false,
        })
    })
}

/// Parses a response head at the start of `buf`, copying it into `arena`.
pub(crate) fn parse_response(
    buf: &[u8],
    max_headers: usize,
    arena: &mut Arena,
) -> Parsed<ResponseHead> {
    with_response(buf, max_headers, |res, raw| {
        let status = res.code?;
        let reason = res.reason.unwrap_or_default();
        let mut spans = [Span::within(raw, reason.as_bytes())?];
        let headers = copy_head(arena, raw, res.headers, &mut spans);
        let reason = match reason {
            "OK" => Text::from_static("OK"),
            _ => headers.share(spans[0]),
        };
        Some(ResponseHead {
            status,
            reason,
            version: version(res.version),
            headers,
            partial: false,
        })
    })
}

/// Parses a chunked body's trailer section (fields up to the empty line) at the start of `buf`.
pub(crate) fn parse_trailers(buf: &[u8], max_headers: usize, arena: &mut Arena) -> Parsed<Headers> {
    let mut storage = [httparse::EMPTY_HEADER; MAX_HEADERS_HARD];
    let n = max_headers.clamp(1, MAX_HEADERS_HARD);
    match httparse::parse_headers(buf, &mut storage[..n]) {
        Ok(httparse::Status::Complete((len, fields))) => {
            Parsed::Complete(copy_head(arena, &buf[..len], fields, &mut []), len)
        }
        Ok(httparse::Status::Partial) => Parsed::Partial { first_line: false },
        Err(_) => Parsed::Invalid,
    }
}

/// How a message body is delimited (RFC 9112 section 6).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Framing {
    /// Exactly this many bytes (0: no body).
    Length(u64),
    /// Chunked transfer coding.
    Chunked,
    /// Until the connection closes (responses only).
    Close,
}

/// The framing fields could not be trusted.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct BadFraming;

fn is_chunked(headers: &Headers) -> Option<bool> {
    let mut seen = false;
    let mut last = "";
    for value in headers.get_all("transfer-encoding") {
        seen = true;
        if let Some(coding) = value.split(',').map(str::trim).rfind(|s| !s.is_empty()) {
            last = coding;
        }
    }
    seen.then(|| last.eq_ignore_ascii_case("chunked"))
}

/// `value` as a number when it is only (at most 19) digits: the usual `Content-Length`.
fn plain_number(value: &str) -> Option<u64> {
    if value.is_empty() || value.len() > 19 {
        return None;
    }
    value.bytes().try_fold(0u64, |n, b| {
        b.is_ascii_digit().then(|| n * 10 + u64::from(b - b'0'))
    })
}

fn content_length(headers: &Headers) -> Result<Option<u64>, BadFraming> {
    let mut found: Option<u64> = None;
    for value in headers.get_all("content-length") {
        if let Some(n) = plain_number(value) {
            if found.is_some_and(|f| f != n) {
                return Err(BadFraming);
            }
            found = Some(n);
            continue;
        }
        for part in value.split(',') {
            let part = part.trim();
            if part.is_empty() || !part.bytes().all(|b| b.is_ascii_digit()) {
                return Err(BadFraming);
            }
            let n: u64 = part.parse().map_err(|_| BadFraming)?;
            if found.is_some_and(|f| f != n) {
                return Err(BadFraming);
            }
            found = Some(n);
        }
    }
    Ok(found)
}

/// Framing of a request body.
pub(crate) fn request_framing(headers: &Headers) -> Result<Framing, BadFraming> {
    match is_chunked(headers) {
        Some(true) => Ok(Framing::Chunked),
        Some(false) => Err(BadFraming),
        None => Ok(Framing::Length(content_length(headers)?.unwrap_or(0))),
    }
}

/// Framing of a response body, given the request method and the status.
pub(crate) fn response_framing(
    headers: &Headers,
    status: u16,
    head_request: bool,
) -> Result<Framing, BadFraming> {
    if head_request || (100..200).contains(&status) || status == 204 || status == 304 {
        return Ok(Framing::Length(0));
    }
    match is_chunked(headers) {
        Some(true) => Ok(Framing::Chunked),
        Some(false) => Ok(Framing::Close),
        None => Ok(content_length(headers)?.map_or(Framing::Close, Framing::Length)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn headers(pairs: &[(&str, &str)]) -> Headers {
        pairs.iter().copied().collect()
    }

    #[test]
    fn absolute_form_target_gives_scheme_and_authority() {
        let mut arena = Arena::new();
        let Parsed::Complete(head, _) = parse_request(
            b"GET HTTP://example.com:8080/a?b HTTP/1.1\r\n\r\n",
            16,
            &mut arena,
        ) else {
            panic!("expected a head");
        };
        assert_eq!(head.scheme.as_deref(), Some("http"));
        assert_eq!(head.authority.as_deref(), Some("example.com:8080"));
        assert_eq!(head.target, "HTTP://example.com:8080/a?b");
    }

    #[test]
    fn head_fields_are_lower_cased_views_of_one_copy() {
        let mut arena = Arena::new();
        // Not valid UTF-8: every field is rebuilt from its lossy text.
        let raw = b"PURGE /x HTTP/1.1\r\nHost: a.example\r\nX-Bin: caf\xc3\xa9 \xff\r\n\r\nbody";
        let Parsed::Complete(head, len) = parse_request(raw, 16, &mut arena) else {
            panic!("expected a head");
        };
        assert_eq!(len, raw.len() - 4);
        assert_eq!(head.method, "PURGE");
        assert_eq!(head.header("x-bin"), Some("caf\u{e9} \u{fffd}"));
        assert_eq!(head.authority.as_deref(), Some("a.example"));
        let Parsed::Complete(res, _) = parse_response(
            b"HTTP/1.1 404 Not Here\r\nContent-Type: text/plain\r\n\r\n",
            16,
            &mut arena,
        ) else {
            panic!("expected a head");
        };
        assert_eq!(res.reason, "Not Here");
        assert_eq!(
            res.headers.iter().collect::<Vec<_>>(),
            [("content-type", "text/plain")]
        );
        // The first head is intact after the arena was reused for the second.
        assert_eq!(head.target, "/x");
        assert_eq!(head.headers.get("host"), Some("a.example"));
    }

    #[test]
    fn trailers_parse_up_to_the_empty_line() {
        let mut arena = Arena::new();
        let Parsed::Complete(t, len) =
            parse_trailers(b"Grpc-Status: 0\r\nX-Sum: 1\r\n\r\nGET", 16, &mut arena)
        else {
            panic!("expected trailers");
        };
        assert_eq!(len, 28);
        assert_eq!(
            t.iter().collect::<Vec<_>>(),
            [("grpc-status", "0"), ("x-sum", "1")]
        );
        assert!(matches!(
            parse_trailers(b"\r\n", 16, &mut arena),
            Parsed::Complete(ref t, 2) if t.is_empty()
        ));
        assert!(matches!(
            parse_trailers(b"\nHTTP/1.1", 16, &mut arena),
            Parsed::Complete(ref t, 1) if t.is_empty()
        ));
        assert!(matches!(
            parse_trailers(b"X-Sum: 1\r\n", 16, &mut arena),
            Parsed::Partial { .. }
        ));
    }

    #[test]
    fn conflicting_content_lengths_are_rejected() {
        let h = headers(&[("content-length", "5"), ("Content-Length", "6")]);
        assert_eq!(request_framing(&h), Err(BadFraming));
        let h = headers(&[("content-length", "5, 5")]);
        assert_eq!(request_framing(&h), Ok(Framing::Length(5)));
        let h = headers(&[("content-length", "-1")]);
        assert_eq!(request_framing(&h), Err(BadFraming));
    }

    #[test]
    fn response_without_length_is_close_delimited() {
        let none = Headers::new();
        assert_eq!(response_framing(&none, 200, false), Ok(Framing::Close));
        assert_eq!(response_framing(&none, 204, false), Ok(Framing::Length(0)));
        let h = headers(&[("content-length", "10")]);
        assert_eq!(response_framing(&h, 200, true), Ok(Framing::Length(0)));
        let h = headers(&[("transfer-encoding", "gzip, chunked")]);
        assert_eq!(response_framing(&h, 200, false), Ok(Framing::Chunked));
        let h = headers(&[
            ("transfer-encoding", "chunked"),
            ("transfer-encoding", " , "),
        ]);
        assert_eq!(response_framing(&h, 200, false), Ok(Framing::Chunked));
        let h = headers(&[("transfer-encoding", "chunked, gzip")]);
        assert_eq!(response_framing(&h, 200, false), Ok(Framing::Close));
    }

    #[test]
    fn partial_head_reports_whether_start_line_is_complete() {
        assert!(matches!(
            probe_request(b"GET / HT", 16),
            Parsed::Partial { first_line: false }
        ));
        assert!(matches!(
            probe_request(b"GET / HTTP/1.1\r\nHost: a", 16),
            Parsed::Partial { first_line: true }
        ));
        assert!(matches!(
            probe_request(b"\x16\x03\x01garbage", 16),
            Parsed::Invalid
        ));
    }
}
