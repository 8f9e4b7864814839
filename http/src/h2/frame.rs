//! HTTP/2 frame headers (RFC 9113 section 4.1) and finding a frame boundary in bytes of unknown
//! position.

/// The client connection preface.
pub(crate) const PREFACE: &[u8; 24] = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n";
/// Size of a frame header.
pub(crate) const HEADER_LEN: usize = 9;
/// Largest frame accepted as a resynchronisation point (the default `SETTINGS_MAX_FRAME_SIZE`).
const SEEK_MAX_LEN: u32 = 16_384;

pub(crate) const DATA: u8 = 0x0;
pub(crate) const HEADERS: u8 = 0x1;
pub(crate) const PRIORITY: u8 = 0x2;
pub(crate) const RST_STREAM: u8 = 0x3;
pub(crate) const SETTINGS: u8 = 0x4;
pub(crate) const PUSH_PROMISE: u8 = 0x5;
pub(crate) const PING: u8 = 0x6;
pub(crate) const GOAWAY: u8 = 0x7;
pub(crate) const WINDOW_UPDATE: u8 = 0x8;
pub(crate) const CONTINUATION: u8 = 0x9;

pub(crate) const FLAG_END_STREAM: u8 = 0x1;
pub(crate) const FLAG_END_HEADERS: u8 = 0x4;
pub(crate) const FLAG_PADDED: u8 = 0x8;
pub(crate) const FLAG_PRIORITY: u8 = 0x20;

/// A parsed frame header.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct FrameHeader {
    pub len: u32,
    pub kind: u8,
    pub flags: u8,
    pub stream: u32,
    /// The reserved bit was set.
    pub reserved: bool,
}

impl FrameHeader {
    /// Parses the 9 bytes at the start of `b` (which must hold at least 9).
    pub fn parse(b: &[u8]) -> Option<FrameHeader> {
        let b: &[u8; HEADER_LEN] = b.get(..HEADER_LEN)?.try_into().ok()?;
        let raw_stream = u32::from_be_bytes([b[5], b[6], b[7], b[8]]);
        Some(FrameHeader {
            len: u32::from_be_bytes([0, b[0], b[1], b[2]]),
            kind: b[3],
            flags: b[4],
            stream: raw_stream & 0x7fff_ffff,
            reserved: raw_stream & 0x8000_0000 != 0,
        })
    }

    pub fn has(&self, flag: u8) -> bool {
        self.flags & flag != 0
    }

    /// Whether this header looks like one a conforming peer would send; used to find frame
    /// boundaries when the position in the stream is unknown.
    pub fn plausible(&self) -> bool {
        if self.reserved || self.len > SEEK_MAX_LEN {
            return false;
        }
        let (allowed_flags, needs_stream, len_ok) = match self.kind {
            DATA => (FLAG_END_STREAM | FLAG_PADDED, Some(true), true),
            HEADERS => (
                FLAG_END_STREAM | FLAG_END_HEADERS | FLAG_PADDED | FLAG_PRIORITY,
                Some(true),
                self.len > 0,
            ),
            PRIORITY => (0, Some(true), self.len == 5),
            RST_STREAM => (0, Some(true), self.len == 4),
            SETTINGS => (
                0x1,
                Some(false),
                self.len.is_multiple_of(6) && (self.flags & 1 == 0 || self.len == 0),
            ),
            PUSH_PROMISE => (FLAG_END_HEADERS | FLAG_PADDED, Some(true), self.len >= 4),
            PING => (0x1, Some(false), self.len == 8),
            GOAWAY => (0, Some(false), self.len >= 8),
            WINDOW_UPDATE => (0, None, self.len == 4),
            _ => return false,
        };
        let stream_ok = match needs_stream {
            Some(true) => self.stream != 0,
            Some(false) => self.stream == 0,
            None => true,
        };
        self.flags & !allowed_flags == 0 && stream_ok && len_ok
    }
}

/// What [`find_frame`] found.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum FrameSeek {
    /// A frame starts at this offset.
    Found(usize),
    /// No frame starts before `skip`: drop those bytes and wait for more.
    NeedMore { skip: usize },
}

/// Looks for a frame boundary: a plausible frame header followed, where that frame ends, by
/// another plausible header. Of the candidates, the one confirmed by the fewest bytes wins (the
/// first of them on a tie): a false candidate with a long length cannot hold up the real
/// boundary after it, and the answer depends on the bytes only, never on where the bytes seen
/// so far end, so that any slicing of the same bytes finds the same boundary.
///
/// With `at_end`, the caller knows no more bytes are coming for now (the other flow has
/// spoken): a frame that ends exactly where the bytes end confirms its candidate too.
pub(crate) fn find_frame(buf: &[u8], at_end: bool) -> FrameSeek {
    // (bytes needed to confirm, offset) of the best confirmed candidate.
    let mut best: Option<(usize, usize)> = None;
    // The first candidate that more bytes may still confirm.
    let mut pending: Option<usize> = None;
    for off in 0..buf.len() {
        let Some(h) = FrameHeader::parse(&buf[off..]) else {
            pending.get_or_insert(off);
            break;
        };
        // An empty DATA frame that does not end its stream says nothing: not an anchor.
        let empty_data = h.kind == DATA && h.len == 0 && !h.has(FLAG_END_STREAM);
        if !h.plausible() || empty_data {
            continue;
        }
        let next = off + HEADER_LEN + h.len as usize;
        let needed = next + HEADER_LEN;
        if best.is_some_and(|(b, _)| needed >= b) {
            continue;
        }
        if at_end && next == buf.len() {
            best = Some((next, off));
            continue;
        }
        match buf.get(next..needed) {
            Some(n) => {
                if FrameHeader::parse(n).is_some_and(|n| n.plausible()) {
                    best = Some((needed, off));
                }
            }
            None => {
                pending.get_or_insert(off);
            }
        }
    }
    match best {
        Some((_, off)) => FrameSeek::Found(off),
        None => FrameSeek::NeedMore {
            skip: pending.unwrap_or(buf.len()),
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn header(len: u32, kind: u8, flags: u8, stream: u32) -> Vec<u8> {
        let mut v = len.to_be_bytes()[1..].to_vec();
        v.push(kind);
        v.push(flags);
        v.extend_from_slice(&stream.to_be_bytes());
        v
    }

    #[test]
    fn finds_frames_after_garbage() {
        let mut buf = b"\x00\xffgarbage bytes".to_vec();
        let start = buf.len();
        buf.extend(header(4, WINDOW_UPDATE, 0, 0));
        buf.extend([0, 0, 1, 0]);
        buf.extend(header(8, PING, 0, 0));
        buf.extend([0; 8]);
        assert_eq!(find_frame(&buf, false), FrameSeek::Found(start));
    }

    #[test]
    fn implausible_headers_are_rejected() {
        let parse = |v: Vec<u8>| FrameHeader::parse(&v).expect("9 bytes");
        assert!(!parse(header(8, PING, 0, 3)).plausible());
        assert!(!parse(header(5, SETTINGS, 0, 0)).plausible());
        assert!(!parse(header(10, DATA, 0, 0)).plausible());
        assert!(!parse(header(10, 0x20, 0, 1)).plausible());
        assert!(parse(header(10, DATA, FLAG_END_STREAM, 1)).plausible());
    }

    #[test]
    fn a_long_false_candidate_does_not_hold_up_a_real_boundary() {
        // A plausible DATA header claiming 1000 bytes, then real frames within them.
        let mut buf = header(1000, DATA, 0, 0x0102_0304);
        let start = buf.len();
        buf.extend(header(4, WINDOW_UPDATE, 0, 0));
        buf.extend([0, 0, 1, 0]);
        buf.extend(header(8, PING, 0, 0));
        buf.extend([0; 8]);
        assert_eq!(find_frame(&buf, false), FrameSeek::Found(start));
        // The same answer whatever the bytes seen so far, once it is known.
        for end in 0..buf.len() {
            match find_frame(&buf[..end], false) {
                FrameSeek::Found(at) => assert_eq!(at, start),
                FrameSeek::NeedMore { skip } => assert!(skip <= start),
            }
        }
    }

    #[test]
    fn waits_for_a_partial_frame() {
        let mut buf = header(100, DATA, 0, 1);
        buf.extend([0; 50]);
        assert_eq!(find_frame(&buf, false), FrameSeek::NeedMore { skip: 0 });
    }
}
