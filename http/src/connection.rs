//! One observed connection: works out the protocol and the process's role from the first bytes,
//! then hands every byte to the HTTP/1 or HTTP/2 state machine.

use crate::arena::Arena;
use crate::body::Ctx;
use crate::config::{Config, ConnectionStats};
use crate::h1::Http1;
use crate::h2::Http2;
use crate::h2::frame::{self, PREFACE};
use crate::types::{Event, ExchangeId, Flow, ResyncReason};

/// Most bytes buffered while working out the protocol (a few HTTP/2 frames).
const MAX_DETECT: usize = 2 * 16_384 + 18;

#[derive(Debug)]
enum Proto {
    /// Not decided yet: bytes are buffered per flow.
    Detect([Vec<u8>; 2]),
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

enum Detected {
    Wait,
    Http1,
    Http2 { preface_flow: Option<Flow> },
}

fn detect(flow: Flow, buf: &[u8]) -> Detected {
    let n = buf.len().min(PREFACE.len());
    if buf[..n] == PREFACE[..n] {
        return if n == PREFACE.len() {
            Detected::Http2 {
                preface_flow: Some(flow),
            }
        } else {
            Detected::Wait
        };
    }
    if buf[0].is_ascii_uppercase() {
        return Detected::Http1;
    }
    match frame::looks_like_frames(buf) {
        Some(true) => Detected::Http2 { preface_flow: None },
        None if buf.len() < MAX_DETECT => Detected::Wait,
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
            proto: Proto::Detect([Vec::new(), Vec::new()]),
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
            Proto::Detect(bufs) => {
                let fi = flow.index();
                bufs[fi].extend_from_slice(data);
                let decided = detect(flow, &bufs[fi]);
                let mut proto = match decided {
                    Detected::Wait => return,
                    Detected::Http1 => Proto::Http1(Box::new(Http1::new(None))),
                    Detected::Http2 { preface_flow } => {
                        tracing::trace!(?preface_flow, "http/2 connection");
                        Proto::Http2(Box::new(Http2::new(
                            preface_flow,
                            self.config.max_hpack_table,
                        )))
                    }
                };
                let mut bufs = std::mem::take(bufs);
                // The other flow's bytes arrived first.
                let order = [flow.opposite(), flow];
                for f in order {
                    let bytes = std::mem::take(&mut bufs[f.index()]);
                    if bytes.is_empty() {
                        continue;
                    }
                    match &mut proto {
                        Proto::Http1(h1) => h1.feed(f, &bytes, ts_ns, &mut ctx),
                        Proto::Http2(h2) => h2.feed(f, &bytes, ts_ns, &mut ctx),
                        Proto::Detect(_) | Proto::Closed => {}
                    }
                }
                self.proto = proto;
            }
        }
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
            Proto::Detect(bufs) => {
                let buffered = std::mem::take(&mut bufs[flow.index()]).len() as u64;
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

    /// The connection ended: close-delimited bodies finish, open exchanges are aborted.
    pub fn close(&mut self, ts_ns: u64, out: &mut Vec<Event>) {
        self.last_activity_ns = self.last_activity_ns.max(ts_ns);
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
            Proto::Detect(bufs) => {
                let buffered: u64 = bufs.iter().map(|b| b.len() as u64).sum();
                ctx.stats.bytes_skipped += buffered;
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
            Proto::Detect(bufs) => bufs.iter().map(Vec::len).sum(),
            Proto::Http1(h1) => h1.buffered_bytes(),
            Proto::Http2(h2) => h2.buffered_bytes(),
            Proto::Closed => 0,
        }
    }

    /// Whether HTTP parsing stopped because the connection switched protocols.
    #[must_use]
    pub fn is_upgraded(&self) -> bool {
        matches!(&self.proto, Proto::Http1(h1) if h1.is_upgraded())
    }
}
