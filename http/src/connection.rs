//! One observed connection: works out the protocol and the process's role from the first bytes,
//! then hands every byte to the HTTP/1 or HTTP/2 state machine.

use crate::arena::Arena;
use crate::body::Ctx;
use crate::config::{Config, ConnectionStats};
use crate::h1::Http1;
use crate::h2::Http2;
use crate::h2::frame::{self, FrameSeek, PREFACE};
use crate::types::{Event, ExchangeId, Flow, ResyncReason};

/// Most bytes buffered (both flows together) while working out the protocol (a few HTTP/2
/// frames).
const MAX_DETECT: usize = 2 * 16_384 + 18;
/// Text shorter than this, with no message start, may still be the end of a header block cut
/// by the join: it waits for the frames after it.
const SHORT: usize = 256;

#[derive(Debug)]
enum Proto {
    /// Not decided yet: bytes are buffered per flow.
    Detect(Box<Pending>),
    Http1(Box<Http1>),
    Http2(Box<Http2>),
    /// `close` was called: further bytes are ignored.
    Closed,
}

/// The parser of one connection, fed the two byte streams of one TLS session.
///
/// Feeding the same bytes in any slicing gives the same events (body pieces may be split
/// differently, never reordered or changed).
#[derive(Debug)]
pub struct Connection {
    config: Config,
    stats: ConnectionStats,
    next_id: ExchangeId,
    proto: Proto,
    last_activity_ns: u64,
    /// Buffer the bytes of emitted heads and body pieces are copied into.
    arena: Arena,
}

/// Bytes buffered while the protocol is not known, with the timestamps they came with.
#[derive(Debug, Default)]
struct Pending {
    bytes: [Vec<u8>; 2],
    /// Per flow, `(timestamp, end offset)` of each run of bytes fed with one timestamp.
    runs: [Vec<(u64, usize)>; 2],
}

impl Pending {
    fn push(&mut self, flow: Flow, data: &[u8], ts_ns: u64) {
        let fi = flow.index();
        self.bytes[fi].extend_from_slice(data);
        let end = self.bytes[fi].len();
        match self.runs[fi].last_mut() {
            Some((ts, e)) if *ts == ts_ns => *e = end,
            _ => self.runs[fi].push((ts_ns, end)),
        }
    }

    fn len(&self) -> usize {
        self.bytes.iter().map(Vec::len).sum()
    }

    /// Feeds what is buffered to the parser chosen, `first` flow first, each run with its
    /// own timestamp.
    fn replay(self, first: Flow, proto: &mut Proto, ctx: &mut Ctx<'_>) {
        for f in [first, first.opposite()] {
            let fi = f.index();
            let mut start = 0;
            for &(ts, end) in &self.runs[fi] {
                let bytes = &self.bytes[fi][start..end];
                start = end;
                match proto {
                    Proto::Http1(h1) => h1.feed(f, bytes, ts, ctx),
                    Proto::Http2(h2) => h2.feed(f, bytes, ts, ctx),
                    Proto::Detect(_) | Proto::Closed => {}
                }
            }
        }
    }
}

enum Detected {
    Wait,
    Http1,
    Http2 {
        preface_flow: Option<Flow>,
        /// Where in the preface the bytes start (a connection joined inside it).
        preface_from: usize,
    },
}

/// Whether an HTTP/1 message could start somewhere in `buf`.
fn has_http1_start(buf: &[u8]) -> bool {
    crate::h1::seek::STARTS
        .iter()
        .any(|w| buf.windows(w.len()).any(|b| b == *w))
}

/// Whether `buf` starts like an HTTP/1 message: a status line, or a request line's method (an
/// upper-case token) and a space. `None` while too few bytes are in to tell.
fn http1_at_start(buf: &[u8]) -> Option<bool> {
    if crate::h1::seek::could_start(buf) && buf.len() >= 8 {
        return Some(true);
    }
    let token = buf
        .iter()
        .take_while(|b| b.is_ascii_uppercase() || **b == b'-' || **b == b'_')
        .count();
    match buf.get(token) {
        Some(b' ') => Some(token > 0),
        Some(_) => Some(false),
        None if crate::h1::seek::could_start(buf) || token > 0 => None,
        None => Some(false),
    }
}

/// Works out the protocol from the first bytes of `flow`; `other_seen` tells whether the other
/// flow has had bytes, `closing` that no more will come.
///
/// HTTP/2 frames (at the start of the bytes, or after a frame cut by the join) make the
/// connection HTTP/2, but only once the other flow has spoken or enough bytes are in: a
/// server's SETTINGS can be read before the client's preface is written, and the preface
/// tells that the connection was followed from its start. Binary bytes with neither frames
/// nor the start of an HTTP/1 message (a connection joined inside a frame) wait for more, or
/// for the other flow; `held` bytes of both flows are buffered at most [`MAX_DETECT`].
fn detect(flow: Flow, buf: &[u8], held: usize, other_seen: bool, closing: bool) -> Detected {
    // The preface, or the end of it (at least `SM\r\n\r\n`) when the join cut it: nothing
    // before it was missed.
    for from in 0..=PREFACE.len() - 6 {
        let rest = &PREFACE[from..];
        let n = buf.len().min(rest.len());
        if buf[..n] == rest[..n] {
            return if n == rest.len() {
                Detected::Http2 {
                    preface_flow: Some(flow),
                    preface_from: from,
                }
            } else {
                Detected::Wait
            };
        }
    }
    let small = held < MAX_DETECT;
    match http1_at_start(buf) {
        Some(true) => return Detected::Http1,
        None if small => return Detected::Wait,
        _ => {}
    }
    match frame::find_frame(buf, closing) {
        FrameSeek::Found(at) if at == 0 || !has_http1_start(buf) => {
            if !other_seen && small {
                Detected::Wait
            } else {
                Detected::Http2 {
                    preface_flow: None,
                    preface_from: 0,
                }
            }
        }
        // Binary bytes (every frame header has a zero byte), or a few bytes of a header block
        // fragment cut by the join, may be HTTP/2 still; longer text is not.
        FrameSeek::NeedMore { .. }
            if small && (buf.contains(&0) || buf.len() < SHORT) && !has_http1_start(buf) =>
        {
            Detected::Wait
        }
        _ => Detected::Http1,
    }
}

impl Connection {
    /// A connection parser with these limits.
    #[must_use]
    pub fn new(config: Config) -> Self {
        Connection {
            config,
            stats: ConnectionStats::default(),
            next_id: 0,
            proto: Proto::Detect(Box::default()),
            last_activity_ns: 0,
            arena: Arena::new(),
        }
    }

    /// The limits this connection was built with.
    #[must_use]
    pub fn config(&self) -> &Config {
        &self.config
    }

    /// Counters of what was skipped, lost or could not be decoded.
    #[must_use]
    pub fn stats(&self) -> &ConnectionStats {
        &self.stats
    }

    /// Timestamp of the last bytes, gap or close seen: the caller evicts idle connections.
    #[must_use]
    pub fn last_activity_ns(&self) -> u64 {
        self.last_activity_ns
    }

    /// The protocol in use, once known: `Some(true)` for HTTP/2, `Some(false)` for HTTP/1.
    #[must_use]
    pub fn is_http2(&self) -> Option<bool> {
        match self.proto {
            Proto::Http1(_) => Some(false),
            Proto::Http2(_) => Some(true),
            Proto::Detect(_) | Proto::Closed => None,
        }
    }

    /// Which flow carries the requests, once known: `Egress` when the observed process is the
    /// client, `Ingress` when it is the server.
    #[must_use]
    pub fn request_flow(&self) -> Option<Flow> {
        match &self.proto {
            Proto::Http1(h1) => h1.request_flow(),
            Proto::Http2(h2) => h2.request_flow(),
            Proto::Detect(_) | Proto::Closed => None,
        }
    }

    /// Bytes the process wrote (`Egress`) or read (`Ingress`), with a `CLOCK_MONOTONIC`
    /// timestamp. Events are appended to `out`.
    pub fn feed(&mut self, flow: Flow, data: &[u8], ts_ns: u64, out: &mut Vec<Event>) {
        self.last_activity_ns = self.last_activity_ns.max(ts_ns);
        if data.is_empty() {
            return;
        }
        let mut ctx = Ctx {
            config: &self.config,
            stats: &mut self.stats,
            next_id: &mut self.next_id,
            out,
            arena: &mut self.arena,
        };
        match &mut self.proto {
            Proto::Http1(h1) => {
                h1.feed(flow, data, ts_ns, &mut ctx);
            }
            Proto::Http2(h2) => {
                h2.feed(flow, data, ts_ns, &mut ctx);
            }
            Proto::Closed => (),
            Proto::Detect(pending) => {
                // The other flow stopped: its bytes are all in for now, judge them as such
                // (unless this one starts with the preface, which decides).
                let other = flow.opposite();
                let other_bytes = &pending.bytes[other.index()];
                let n = data.len().min(PREFACE.len());
                let preface = data[..n] == PREFACE[..n];
                if !other_bytes.is_empty() && pending.bytes[flow.index()].is_empty() && !preface {
                    let decided = detect(other, other_bytes, pending.len(), true, true);
                    if !matches!(decided, Detected::Wait)
                        && let Some(mut proto) = self.start(decided, other, out)
                    {
                        let mut ctx = Ctx {
                            config: &self.config,
                            stats: &mut self.stats,
                            next_id: &mut self.next_id,
                            out,
                            arena: &mut self.arena,
                        };
                        match &mut proto {
                            Proto::Http1(h1) => h1.feed(flow, data, ts_ns, &mut ctx),
                            Proto::Http2(h2) => h2.feed(flow, data, ts_ns, &mut ctx),
                            Proto::Detect(_) | Proto::Closed => {}
                        }
                        self.proto = proto;
                        return;
                    }
                }
                let Proto::Detect(pending) = &mut self.proto else {
                    return;
                };
                pending.push(flow, data, ts_ns);
                let other_seen = !pending.bytes[flow.opposite().index()].is_empty();
                let decided = detect(
                    flow,
                    &pending.bytes[flow.index()],
                    pending.len(),
                    other_seen,
                    false,
                );
                if let Some(proto) = self.start(decided, flow.opposite(), out) {
                    self.proto = proto;
                }
            }
        }
    }

    /// Builds the parser `decided` on and replays the buffered bytes to it (`first` flow
    /// first: its bytes arrived earlier); `None` to wait.
    fn start(&mut self, decided: Detected, first: Flow, out: &mut Vec<Event>) -> Option<Proto> {
        let mut proto = match decided {
            Detected::Wait => return None,
            Detected::Http1 => Proto::Http1(Box::new(Http1::new(None))),
            Detected::Http2 {
                preface_flow,
                preface_from,
            } => {
                tracing::trace!(?preface_flow, "http/2 connection");
                Proto::Http2(Box::new(Http2::new(
                    preface_flow,
                    preface_from,
                    self.config.max_hpack_table,
                )))
            }
        };
        let Proto::Detect(pending) = std::mem::replace(&mut self.proto, Proto::Closed) else {
            return Some(proto);
        };
        let mut ctx = Ctx {
            config: &self.config,
            stats: &mut self.stats,
            next_id: &mut self.next_id,
            out,
            arena: &mut self.arena,
        };
        pending.replay(first, &mut proto, &mut ctx);
        Some(proto)
    }

    /// `lost` bytes of this flow were not captured: the parser resynchronises on what follows.
    pub fn gap(&mut self, flow: Flow, lost: u64, ts_ns: u64, out: &mut Vec<Event>) {
        self.last_activity_ns = self.last_activity_ns.max(ts_ns);
        let mut ctx = Ctx {
            config: &self.config,
            stats: &mut self.stats,
            next_id: &mut self.next_id,
            out,
            arena: &mut self.arena,
        };
        match &mut self.proto {
            Proto::Http1(h1) => h1.gap(flow, lost, ts_ns, &mut ctx),
            Proto::Http2(h2) => h2.gap(flow, lost, ts_ns, &mut ctx),
            Proto::Closed => {}
            Proto::Detect(pending) => {
                let fi = flow.index();
                let buffered = std::mem::take(&mut pending.bytes[fi]).len() as u64;
                pending.runs[fi].clear();
                let skipped = lost + buffered;
                if skipped > 0 {
                    ctx.stats.resyncs += 1;
                    ctx.stats.bytes_skipped += skipped;
                    ctx.out.push(Event::Resync {
                        flow,
                        skipped,
                        reason: ResyncReason::Gap,
                    });
                }
            }
        }
    }

    /// Bytes of this connection were lost in an unknown amount and direction (the capture could
    /// not hand them over): HTTP/1 aborts every open exchange and looks for the next message on
    /// both flows, so no request is paired with another's response; HTTP/2 resynchronises both
    /// flows as after a gap.
    pub fn desync(&mut self, ts_ns: u64, out: &mut Vec<Event>) {
        match &mut self.proto {
            Proto::Http1(_) | Proto::Closed => {}
            Proto::Http2(_) | Proto::Detect(_) => {
                // At least one byte is missing on each flow.
                self.gap(Flow::Egress, 1, ts_ns, out);
                self.gap(Flow::Ingress, 1, ts_ns, out);
                return;
            }
        }
        self.last_activity_ns = self.last_activity_ns.max(ts_ns);
        let mut ctx = Ctx {
            config: &self.config,
            stats: &mut self.stats,
            next_id: &mut self.next_id,
            out,
            arena: &mut self.arena,
        };
        if let Proto::Http1(h1) = &mut self.proto {
            h1.desync(&mut ctx);
        }
    }

    /// The connection ended: close-delimited bodies finish, open exchanges are aborted.
    pub fn close(&mut self, ts_ns: u64, out: &mut Vec<Event>) {
        self.last_activity_ns = self.last_activity_ns.max(ts_ns);
        if let Proto::Detect(pending) = &self.proto {
            // No more bytes will come: decide on those there are (HTTP/2 frames read while the
            // other flow stayed silent, for instance), so that what they hold is reported.
            let decided = [Flow::Egress, Flow::Ingress].into_iter().find_map(|f| {
                let bytes = &pending.bytes[f.index()];
                match detect(f, bytes, pending.len(), true, true) {
                    _ if bytes.is_empty() => None,
                    Detected::Wait => None,
                    d => Some((f, d)),
                }
            });
            if let Some((flow, decided)) = decided
                && let Some(proto) = self.start(decided, flow.opposite(), out)
            {
                self.proto = proto;
            }
        }
        let mut ctx = Ctx {
            config: &self.config,
            stats: &mut self.stats,
            next_id: &mut self.next_id,
            out,
            arena: &mut self.arena,
        };
        match std::mem::replace(&mut self.proto, Proto::Closed) {
            Proto::Http1(mut h1) => h1.close(ts_ns, &mut ctx),
            Proto::Http2(mut h2) => h2.close(ts_ns, &mut ctx),
            Proto::Closed => {}
            Proto::Detect(pending) => {
                ctx.stats.bytes_skipped += pending.len() as u64;
            }
        }
        // Nothing more is parsed: the arena lets its chunks go (views handed out stay valid).
        self.arena = Arena::new();
    }

    /// Bytes held in parser buffers (incomplete heads, frames, header blocks): bounded by the
    /// configured limits whatever the input.
    #[must_use]
    pub fn buffered_bytes(&self) -> usize {
        match &self.proto {
            Proto::Detect(pending) => pending.len(),
            Proto::Http1(h1) => h1.buffered_bytes(),
            Proto::Http2(h2) => h2.buffered_bytes(),
            Proto::Closed => 0,
        }
    }

    /// Frees the buffers a quiet connection holds for the bytes to come (the copy-once chunks,
    /// an empty HTTP/1 head buffer); they are allocated again when bytes come. What is being
    /// parsed is kept, and events already handed out keep their own bytes.
    pub fn release_buffers(&mut self) {
        self.arena.release();
        if let Proto::Http1(h1) = &mut self.proto {
            h1.release_buffers();
        }
    }

    /// Whether HTTP parsing stopped because the connection switched protocols.
    #[must_use]
    pub fn is_upgraded(&self) -> bool {
        matches!(&self.proto, Proto::Http1(h1) if h1.is_upgraded())
    }
}
