//! Adversarial input: giant heads, a million tiny chunks, HPACK bombs (huge table size updates,
//! endless CONTINUATION frames, header lists that expand a thousandfold), compression bombs in
//! gzip, brotli and zstd, and invalid UTF-8. Each must end in a clear outcome (an exchange, a
//! counted resync or error) with no panic, and the memory the parser holds while it runs must
//! stay under a bound that does not grow with the input.
//!
//! An allocator wrapper counts the bytes live on each test's own thread (a thread-local counter,
//! so that tests running in parallel do not see each other's allocations) and their peak.

use std::alloc::{GlobalAlloc, Layout, System};
use std::cell::Cell;
use std::io::Write as _;

use taskless_http::{Config, Connection, Event, Flow, ResyncReason};

struct Tracking;

thread_local! {
    static LIVE: Cell<isize> = const { Cell::new(0) };
    static PEAK: Cell<isize> = const { Cell::new(0) };
}

fn track(delta: isize) {
    let _ = LIVE.try_with(|live| {
        let now = live.get() + delta;
        live.set(now);
        let _ = PEAK.try_with(|peak| peak.set(peak.get().max(now)));
    });
}

// SAFETY: every call is forwarded unchanged to the system allocator; only counters are kept.
unsafe impl GlobalAlloc for Tracking {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        track(layout.size() as isize);
        // SAFETY: same contract as the caller's.
        unsafe { System.alloc(layout) }
    }

    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        track(-(layout.size() as isize));
        // SAFETY: same contract as the caller's.
        unsafe { System.dealloc(ptr, layout) }
    }

    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        track(new_size as isize - layout.size() as isize);
        // SAFETY: same contract as the caller's.
        unsafe { System.realloc(ptr, layout, new_size) }
    }
}

#[global_allocator]
static GLOBAL: Tracking = Tracking;

/// Runs `f` and returns its result and the peak of bytes live on this thread above what was
/// live when it started.
fn peak_during<T>(f: impl FnOnce() -> T) -> (T, usize) {
    let base = LIVE.with(Cell::get);
    PEAK.with(|p| p.set(base));
    let out = f();
    let peak = PEAK.with(Cell::get) - base;
    (out, usize::try_from(peak).unwrap_or(0))
}

/// What feeding produced, summarised as it went (events are dropped as they come, as the agent
/// does once it has handed them on).
#[derive(Debug, Default)]
struct Outcome {
    requests: Vec<String>,
    statuses: Vec<u16>,
    partial_heads: usize,
    body_bytes: u64,
    ends: usize,
    resyncs: Vec<ResyncReason>,
    aborts: usize,
}

impl Outcome {
    fn take(&mut self, events: &mut Vec<Event>) {
        for e in events.drain(..) {
            match e {
                Event::RequestHead { head, .. } => {
                    self.partial_heads += usize::from(head.partial);
                    self.requests
                        .push(format!("{} {}", head.method, head.target));
                }
                Event::ResponseHead { head, .. } => {
                    self.partial_heads += usize::from(head.partial);
                    self.statuses.push(head.status);
                }
                Event::ResponseBody { data, .. } => self.body_bytes += data.len() as u64,
                Event::ResponseEnd { .. } => self.ends += 1,
                Event::Resync { reason, .. } => self.resyncs.push(reason),
                Event::Aborted { .. } => self.aborts += 1,
                _ => {}
            }
        }
    }
}

/// Feeds `(flow, bytes)` writes in pieces of at most `piece` bytes, then closes; returns the
/// outcome and the connection (for its counters).
fn feed_all(
    config: &Config,
    writes: impl IntoIterator<Item = (Flow, Vec<u8>)>,
    piece: usize,
) -> (Outcome, Connection) {
    let mut conn = Connection::new(config.clone());
    let mut events = Vec::new();
    let mut outcome = Outcome::default();
    for (i, (flow, bytes)) in writes.into_iter().enumerate() {
        for chunk in bytes.chunks(piece) {
            conn.feed(flow, chunk, i as u64, &mut events);
            outcome.take(&mut events);
            assert!(conn.buffered_bytes() <= 4 * (config.max_header_bytes + (16 << 10)));
        }
    }
    conn.close(u64::MAX, &mut events);
    outcome.take(&mut events);
    (outcome, conn)
}

const MIB: usize = 1 << 20;

#[test]
fn a_giant_head_is_skipped_and_the_next_request_found() {
    let mut giant = b"POST /v1/a HTTP/1.1\r\nHost: a\r\nx-big: ".to_vec();
    giant.extend(std::iter::repeat_n(b'v', 16 * MIB));
    giant.extend_from_slice(b"\r\n\r\n");
    let writes = vec![
        (Flow::Egress, giant),
        (
            Flow::Egress,
            b"GET /after HTTP/1.1\r\nHost: a\r\n\r\n".to_vec(),
        ),
        (
            Flow::Ingress,
            b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok".to_vec(),
        ),
    ];
    let config = Config::default();
    let ((outcome, conn), peak) = peak_during(|| feed_all(&config, writes, 64 << 10));
    assert_eq!(outcome.requests, ["GET /after"]);
    assert_eq!(outcome.statuses, [200]);
    assert!(
        outcome.resyncs.contains(&ResyncReason::HeadTooLarge),
        "{outcome:?}"
    );
    assert!(conn.stats().bytes_skipped >= 16 * MIB as u64);
    // The 16 MiB head is never held: about the head limit and one piece.
    eprintln!("giant head: peak {peak} bytes live");
    assert!(peak < MIB, "peak {peak} bytes");
}

#[test]
fn a_million_tiny_chunks_and_feeds_stay_small() {
    let mut response = b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n".to_vec();
    for _ in 0..1_000_000 {
        response.extend_from_slice(b"1\r\nx\r\n");
    }
    response.extend_from_slice(b"0\r\n\r\n");
    let writes = vec![
        (
            Flow::Egress,
            b"GET /stream HTTP/1.1\r\nHost: a\r\n\r\n".to_vec(),
        ),
        (Flow::Ingress, response),
    ];
    let config = Config::default();
    // A million one-byte chunks, fed 7 bytes at a time (a million feeds).
    let ((outcome, _), peak) = peak_during(|| feed_all(&config, writes, 7));
    assert_eq!(outcome.statuses, [200]);
    assert_eq!(outcome.body_bytes, 1_000_000);
    assert_eq!(outcome.ends, 1);
    eprintln!("a million chunks: peak {peak} bytes live");
    assert!(peak < 256 << 10, "peak {peak} bytes");
}

fn frame(kind: u8, flags: u8, stream: u32, payload: &[u8]) -> Vec<u8> {
    let len = u32::try_from(payload.len()).expect("small frame");
    let mut f = len.to_be_bytes()[1..].to_vec();
    f.push(kind);
    f.push(flags);
    f.extend_from_slice(&stream.to_be_bytes());
    f.extend_from_slice(payload);
    f
}

const PREFACE: &[u8] = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n";
const HEADERS: u8 = 1;
const CONTINUATION: u8 = 9;
const END_STREAM: u8 = 1;
const END_HEADERS: u8 = 4;

/// `GET /next` on `stream`, all static or literal fields.
fn plain_get(stream: u32, path: &str) -> Vec<u8> {
    let mut block = vec![0x82, 0x87, 0x04, u8::try_from(path.len()).expect("short")];
    block.extend_from_slice(path.as_bytes());
    frame(HEADERS, END_HEADERS | END_STREAM, stream, &block)
}

#[test]
fn hpack_bombs_are_bounded_and_counted() {
    let config = Config::default();
    let mut client = PREFACE.to_vec();
    client.extend(frame(4, 0, 0, &[]));

    // 1. A dynamic table size update to 2^28 - 1, then requests each inserting a 60 KiB
    // entry: the table is held at its cap, not at the size asked for.
    let value = vec![b'v'; 60 << 10];
    for (i, stream) in [1u32, 3, 5, 7].into_iter().enumerate() {
        let mut block = if i == 0 {
            vec![0x3f, 0xe0, 0xff, 0xff, 0x7f]
        } else {
            Vec::new()
        };
        block.extend_from_slice(&[0x82, 0x87, 0x84]);
        // Literal with incremental indexing, new name `x-big`, a 61,440-byte raw value.
        block.extend_from_slice(&[0x40, 0x05]);
        block.extend_from_slice(b"x-big");
        block.extend_from_slice(&[0x7f, 0x81, 0xdf, 0x03]);
        block.extend_from_slice(&value);
        let mut pieces = block.chunks(16 << 10);
        client.extend(frame(
            HEADERS,
            END_STREAM,
            stream,
            pieces.next().expect("piece"),
        ));
        for p in pieces {
            client.extend(frame(CONTINUATION, 0, stream, p));
        }
        client.extend(frame(CONTINUATION, END_HEADERS, stream, &[]));
    }

    // 2. Endless CONTINUATION frames: a 25 MiB header block in 16 KiB pieces.
    client.extend(frame(HEADERS, END_STREAM, 9, &[0x82]));
    let piece = vec![0x82; 16 << 10];
    for _ in 0..1600 {
        client.extend(frame(CONTINUATION, 0, 9, &piece));
    }
    client.extend(frame(CONTINUATION, END_HEADERS, 9, &[]));

    // 3. A header list bomb: a 4 KiB entry inserted, then referred to by 16,000 one-byte
    // indexes (64 MiB of fields from a 16 KiB block).
    let mut block = vec![0x82, 0x87, 0x84, 0x40, 0x01, b'b', 0x7f, 0x81, 0x1f];
    block.extend(std::iter::repeat_n(b'x', 4096));
    block.extend(std::iter::repeat_n(0xbe, 16_000));
    client.extend(frame(HEADERS, END_HEADERS | END_STREAM, 11, &block));

    // And a plain request after all of it.
    client.extend(plain_get(13, "/next"));

    let writes = vec![(Flow::Egress, client)];
    let ((outcome, conn), peak) = peak_during(|| feed_all(&config, writes, 16 << 10));
    let stats = conn.stats();
    // Bomb 1 decodes (four requests); bomb 2 is refused as too large, once; bomb 3 is a
    // partial head (fields past the limit left out); the plain request after them is decoded.
    assert_eq!(stats.hpack_errors.total(), 1, "{stats:?}");
    assert_eq!(stats.hpack_errors.too_large, 1, "{stats:?}");
    assert_eq!(
        outcome.requests,
        ["GET /"; 5]
            .iter()
            .copied()
            .chain(["GET /next"])
            .collect::<Vec<_>>()
    );
    assert_eq!(outcome.partial_heads, 1);
    assert_eq!(stats.h2_skipped_streams.undecodable_head, 1);
    // About the block limit, the table cap and a few frames, never the 25 MiB.
    eprintln!("hpack bombs: peak {peak} bytes live");
    assert!(peak < 2 * MIB, "peak {peak} bytes");
}

fn gzip(data_len: usize) -> Vec<u8> {
    let mut enc = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
    let zeros = vec![0u8; MIB];
    for _ in 0..data_len / MIB {
        enc.write_all(&zeros).expect("in memory");
    }
    enc.finish().expect("in memory")
}

fn brotli(data_len: usize) -> Vec<u8> {
    let mut out = Vec::new();
    {
        let mut enc = brotli::CompressorWriter::new(&mut out, 4096, 1, 22);
        let zeros = vec![0u8; MIB];
        for _ in 0..data_len / MIB {
            enc.write_all(&zeros).expect("in memory");
        }
    }
    out
}

fn zstd(data_len: usize) -> Vec<u8> {
    let mut enc = zstd::stream::write::Encoder::new(Vec::new(), 1).expect("encoder");
    let zeros = vec![0u8; MIB];
    for _ in 0..data_len / MIB {
        enc.write_all(&zeros).expect("in memory");
    }
    enc.finish().expect("in memory")
}

#[test]
fn compression_bombs_stop_at_the_decoded_bound_in_every_coding() {
    let config = Config {
        max_decoded_body: 8 << 20,
        ..Config::default()
    };
    for (coding, bomb) in [
        ("gzip", gzip(512 * MIB)),
        ("br", brotli(512 * MIB)),
        ("zstd", zstd(512 * MIB)),
    ] {
        let mut response = format!(
            "HTTP/1.1 200 OK\r\nContent-Encoding: {coding}\r\nContent-Length: {}\r\n\r\n",
            bomb.len()
        )
        .into_bytes();
        response.extend(&bomb);
        let writes = vec![
            (
                Flow::Egress,
                b"GET /bomb HTTP/1.1\r\nHost: a\r\n\r\n".to_vec(),
            ),
            (Flow::Ingress, response),
        ];
        let ((outcome, conn), peak) = peak_during(|| feed_all(&config, writes, 16 << 10));
        assert_eq!(outcome.body_bytes, 8 << 20, "{coding}");
        assert_eq!(outcome.ends, 1, "{coding}");
        assert_eq!(conn.stats().decode_limited, 1, "{coding}");
        // 512 MiB expand from each bomb; the parser holds a window and a piece or two.
        assert!(peak < 24 * MIB, "{coding}: peak {peak} bytes");
        eprintln!(
            "{coding}: bomb of {} bytes, peak {peak} bytes live",
            bomb.len()
        );
    }
}

#[test]
fn invalid_utf8_in_heads_is_replaced_never_a_panic() {
    // Bytes past ASCII in header values and the reason phrase are kept, invalid UTF-8 replaced.
    let writes = vec![
        (
            Flow::Egress,
            b"GET /caf\xc3\xa9 HTTP/1.1\r\nHost: a\xffb\r\nx-bin: \x80\x81\r\n\r\n".to_vec(),
        ),
        (
            Flow::Ingress,
            b"HTTP/1.1 200 \xffK\r\nContent-Length: 2\r\nx-v: \xc3\x28\r\n\r\nok".to_vec(),
        ),
    ];
    for piece in [1, 5, usize::MAX] {
        let (outcome, conn) = feed_all(&Config::default(), writes.clone(), piece);
        assert_eq!(outcome.requests, ["GET /caf\u{e9}"], "{outcome:?}");
        assert_eq!(outcome.statuses, [200], "{outcome:?}");
        assert_eq!(outcome.body_bytes, 2);
        assert_eq!(conn.stats().resyncs, 0);
    }
    // A request target with bytes httparse refuses is skipped with a counted resync, and the
    // next request is found.
    let writes = vec![
        (
            Flow::Egress,
            b"GET /\xff\xfe\x00 HTTP/1.1\r\n\r\nGET /ok HTTP/1.1\r\n\r\n".to_vec(),
        ),
        (Flow::Ingress, b"HTTP/1.1 204 No Content\r\n\r\n".to_vec()),
    ];
    let (outcome, conn) = feed_all(&Config::default(), writes, 1);
    assert_eq!(outcome.requests, ["GET /ok"], "{outcome:?}");
    assert_eq!(outcome.statuses, [204]);
    assert_eq!(conn.stats().resyncs, 1);
}
