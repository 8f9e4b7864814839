//! HTTP/1 message heads through httparse, and the body framing they announce.

use std::mem::MaybeUninit;

use crate::types::{Header, RequestHead, ResponseHead, Version, header_value};

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

fn headers(raw: &[httparse::Header<'_>]) -> Vec<Header> {
    raw.iter().map(|h| Header::new(h.name, h.value)).collect()
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

/// Splits an absolute-form target (`http://host/path`) into scheme and authority.
fn absolute_form(target: &str) -> Option<(String, String)> {
    let (scheme, rest) = target.split_once("://")?;
    if scheme.is_empty()
        || !scheme
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"+-.".contains(&b))
    {
        return None;
    }
    let authority = rest.split(['/', '?']).next().unwrap_or_default();
    Some((scheme.to_ascii_lowercase(), authority.to_owned()))
}

/// Parses a request head at the start of `buf`.
pub(crate) fn parse_request(buf: &[u8], max_headers: usize) -> Parsed<RequestHead> {
    let mut storage = [const { MaybeUninit::<httparse::Header<'_>>::uninit() }; MAX_HEADERS_HARD];
    let n = max_headers.clamp(1, MAX_HEADERS_HARD);
    let mut req = httparse::Request::new(&mut []);
    match parser_config().parse_request_with_uninit_headers(&mut req, buf, &mut storage[..n]) {
        Ok(httparse::Status::Complete(len)) => {
            let (Some(method), Some(target)) = (req.method, req.path) else {
                return Parsed::Invalid;
            };
            let headers = headers(req.headers);
            let (scheme, mut authority) = match absolute_form(target) {
                Some((s, a)) => (Some(s), Some(a)),
                None => (None, None),
            };
            if let Some(host) = header_value(&headers, "host") {
                authority = Some(host.to_owned());
            }
            let head = RequestHead {
                method: method.to_owned(),
                target: target.to_owned(),
                authority,
                scheme,
                version: version(req.version),
                headers,
            };
            Parsed::Complete(head, len)
        }
        Ok(httparse::Status::Partial) => Parsed::Partial {
            first_line: has_line(buf),
        },
        Err(_) => Parsed::Invalid,
    }
}

/// Parses a response head at the start of `buf`.
pub(crate) fn parse_response(buf: &[u8], max_headers: usize) -> Parsed<ResponseHead> {
    let mut storage = [const { MaybeUninit::<httparse::Header<'_>>::uninit() }; MAX_HEADERS_HARD];
    let n = max_headers.clamp(1, MAX_HEADERS_HARD);
    let mut res = httparse::Response::new(&mut []);
    match parser_config().parse_response_with_uninit_headers(&mut res, buf, &mut storage[..n]) {
        Ok(httparse::Status::Complete(len)) => {
            let Some(status) = res.code else {
                return Parsed::Invalid;
            };
            let head = ResponseHead {
                status,
                reason: res.reason.unwrap_or_default().to_owned(),
                version: version(res.version),
                headers: headers(res.headers),
            };
            Parsed::Complete(head, len)
        }
        Ok(httparse::Status::Partial) => Parsed::Partial {
            first_line: has_line(buf),
        },
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

fn is_chunked(headers: &[Header]) -> Option<bool> {
    let te = headers
        .iter()
        .filter(|h| h.name == "transfer-encoding")
        .map(|h| h.value.as_str())
        .collect::<Vec<_>>();
    if te.is_empty() {
        return None;
    }
    let last = te
        .iter()
        .flat_map(|v| v.split(','))
        .map(str::trim)
        .rfind(|s| !s.is_empty())
        .unwrap_or_default();
    Some(last.eq_ignore_ascii_case("chunked"))
}

fn content_length(headers: &[Header]) -> Result<Option<u64>, BadFraming> {
    let mut found: Option<u64> = None;
    for h in headers.iter().filter(|h| h.name == "content-length") {
        for part in h.value.split(',') {
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
pub(crate) fn request_framing(headers: &[Header]) -> Result<Framing, BadFraming> {
    match is_chunked(headers) {
        Some(true) => Ok(Framing::Chunked),
        Some(false) => Err(BadFraming),
        None => Ok(Framing::Length(content_length(headers)?.unwrap_or(0))),
    }
}

/// Framing of a response body, given the request method and the status.
pub(crate) fn response_framing(
    headers: &[Header],
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

    #[test]
    fn absolute_form_target_gives_scheme_and_authority() {
        let Parsed::Complete(head, _) =
            parse_request(b"GET http://example.com:8080/a?b HTTP/1.1\r\n\r\n", 16)
        else {
            panic!("expected a head");
        };
        assert_eq!(head.scheme.as_deref(), Some("http"));
        assert_eq!(head.authority.as_deref(), Some("example.com:8080"));
        assert_eq!(head.target, "http://example.com:8080/a?b");
    }

    #[test]
    fn conflicting_content_lengths_are_rejected() {
        let h = vec![
            Header::new("content-length", "5"),
            Header::new("Content-Length", "6"),
        ];
        assert_eq!(request_framing(&h), Err(BadFraming));
        let h = vec![Header::new("content-length", "5, 5")];
        assert_eq!(request_framing(&h), Ok(Framing::Length(5)));
        let h = vec![Header::new("content-length", "-1")];
        assert_eq!(request_framing(&h), Err(BadFraming));
    }

    #[test]
    fn response_without_length_is_close_delimited() {
        assert_eq!(response_framing(&[], 200, false), Ok(Framing::Close));
        assert_eq!(response_framing(&[], 204, false), Ok(Framing::Length(0)));
        let h = vec![Header::new("content-length", "10")];
        assert_eq!(response_framing(&h, 200, true), Ok(Framing::Length(0)));
        let h = vec![Header::new("transfer-encoding", "gzip, chunked")];
        assert_eq!(response_framing(&h, 200, false), Ok(Framing::Chunked));
    }

    #[test]
    fn partial_head_reports_whether_start_line_is_complete() {
        assert!(matches!(
            parse_request(b"GET / HT", 16),
            Parsed::Partial { first_line: false }
        ));
        assert!(matches!(
            parse_request(b"GET / HTTP/1.1\r\nHost: a", 16),
            Parsed::Partial { first_line: true }
        ));
        assert!(matches!(
            parse_request(b"\x16\x03\x01garbage", 16),
            Parsed::Invalid
        ));
    }
}
