//! Finding the next HTTP/1 message boundary in bytes of unknown position (after a gap, when a
//! connection is joined mid-stream, or after malformed input).

use super::head::{Parsed, probe_request, probe_response};
use crate::body::Side;

/// Words a message can start with: the status line's version, or a method and a space.
pub(crate) const STARTS: &[&[u8]] = &[
    b"HTTP/1.",
    b"GET ",
    b"POST ",
    b"PUT ",
    b"DELETE ",
    b"HEAD ",
    b"OPTIONS ",
    b"PATCH ",
    b"CONNECT ",
    b"TRACE ",
];
/// Longest entry of [`STARTS`] minus one: bytes kept at the end of a buffer in case a start word
/// is split across feeds.
const KEEP_TAIL: usize = 7;

/// What [`seek`] found.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum Seek {
    /// A message of this kind starts at `at`.
    Found { at: usize, side: Side },
    /// No message starts before `skip`; keep the bytes from there and wait for more.
    NeedMore { skip: usize },
}

/// Whether a message of the wanted kind starts at the beginning of `buf`.
enum Check {
    Yes(Side),
    Maybe,
    No,
}

fn check(buf: &[u8], want: Option<Side>, max_headers: usize, max_head: usize) -> Check {
    let mut maybe = false;
    let is_response = buf.starts_with(b"HTTP/1.") || (buf.len() < 7 && b"HTTP/1.".starts_with(buf));
    let sides: &[Side] = match want {
        Some(Side::Request) => &[Side::Request],
        Some(Side::Response) => &[Side::Response],
        None if is_response => &[Side::Response],
        None => &[Side::Request],
    };
    for &side in sides {
        let partial = match side {
            Side::Request => match probe_request(buf, max_headers) {
                Parsed::Complete(..) => return Check::Yes(side),
                Parsed::Partial { first_line } => first_line,
                Parsed::Invalid => continue,
            },
            Side::Response => match probe_response(buf, max_headers) {
                Parsed::Complete(..) => return Check::Yes(side),
                Parsed::Partial { first_line } => first_line,
                Parsed::Invalid => continue,
            },
        };
        if partial {
            return Check::Yes(side);
        }
        if buf.len() <= max_head {
            maybe = true;
        }
    }
    if maybe { Check::Maybe } else { Check::No }
}

/// Longest method accepted where the bytes start (the registered ones are at most 17 bytes).
const MAX_METHOD: usize = 24;

/// Whether `buf` can start with a method of any name: a non-empty word of at most
/// [`MAX_METHOD`] bytes followed by a space (or the start of one). Anything else would make the
/// head parser wait for a request line that never comes, re-reading the growing buffer at
/// every feed.
fn could_be_method(buf: &[u8]) -> bool {
    match buf.iter().take(MAX_METHOD + 1).position(|&b| b == b' ') {
        Some(n) => n > 0,
        None => buf.len() <= MAX_METHOD,
    }
}

pub(crate) fn could_start(buf: &[u8]) -> bool {
    STARTS
        .iter()
        .any(|s| buf.starts_with(s) || (buf.len() < s.len() && s.starts_with(buf)))
}

/// Looks for the first message start of kind `want` (either kind when `None`) in `buf`.
pub(crate) fn seek(buf: &[u8], want: Option<Side>, max_headers: usize, max_head: usize) -> Seek {
    for at in 0..buf.len() {
        let rest = &buf[at..];
        // Any method is accepted where the bytes start; further in, only the common ones are
        // looked for, so that body text is not mistaken for a request line.
        if at > 0
            && (!matches!(buf[at], b'H' | b'G' | b'P' | b'D' | b'O' | b'C' | b'T')
                || !could_start(rest))
        {
            continue;
        }
        if at == 0 && !could_start(rest) && !could_be_method(rest) {
            continue;
        }
        match check(rest, want, max_headers, max_head) {
            Check::Yes(side) => return Seek::Found { at, side },
            Check::Maybe => return Seek::NeedMore { skip: at },
            Check::No => {}
        }
    }
    Seek::NeedMore {
        skip: buf.len().saturating_sub(KEEP_TAIL),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn finds_a_response_after_body_bytes_without_newline() {
        let buf = b"\"}]}HTTP/1.1 200 OK\r\ncontent-length: 0\r\n\r\n";
        assert_eq!(
            seek(buf, None, 16, 1024),
            Seek::Found {
                at: 4,
                side: Side::Response
            }
        );
    }

    #[test]
    fn ignores_method_words_that_do_not_start_a_request() {
        let buf = b"\x01 GET of POST data\r\nPUT /x HTTP/1.1\r\n";
        assert_eq!(
            seek(buf, Some(Side::Request), 16, 1024),
            Seek::Found {
                at: 20,
                side: Side::Request
            }
        );
    }

    #[test]
    fn a_long_word_without_a_space_is_not_waited_on_as_a_method() {
        let mut buf = vec![b'x'; 1024];
        assert_eq!(
            seek(&buf, None, 16, 64 << 10),
            Seek::NeedMore { skip: 1024 - 7 }
        );
        // An unusual method is still accepted where the bytes start.
        buf = b"PROPFIND /a HTTP/1.1\r\n".to_vec();
        assert_eq!(
            seek(&buf, None, 16, 64 << 10),
            Seek::Found {
                at: 0,
                side: Side::Request
            }
        );
    }

    #[test]
    fn waits_when_a_start_may_be_split() {
        assert_eq!(
            seek(b"\x01xxxxxxxGE", None, 16, 1024),
            Seek::NeedMore { skip: 8 }
        );
        assert_eq!(
            seek(b"\x01zzzzzzzzzzzzzzzzzzz", None, 16, 1024),
            Seek::NeedMore { skip: 13 }
        );
        assert_eq!(
            seek(b"\x01arbage POST /a HT", None, 16, 1024),
            Seek::NeedMore { skip: 8 }
        );
    }
}
