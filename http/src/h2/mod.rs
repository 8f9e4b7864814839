//! HTTP/2: frames, HPACK header blocks, interleaved streams, each stream its own exchange.
//!
//! Each flow has its own HPACK decoder. A flow joined mid-stream, or after lost bytes, starts with
//! an unknown dynamic table: the entries it sees inserted from then on are exactly the newest
//! entries of the peer's table and are decoded; a field that refers to an older entry is left out
//! and its head marked partial (see [`crate::hpack`]). A block that cannot be decoded at all is
//! dropped (its stream skipped, the reason counted) and the table forgotten, so wrong headers are
//! never emitted. Streams whose frames arrive without their request head are skipped and counted
//! once each.

mod block;
pub(crate) mod frame;
mod handle;
mod stream;

use std::collections::{BTreeMap, BTreeSet};

use crate::body::Ctx;
use crate::config::StreamSkip;
use crate::hpack::Decoder;
use crate::types::{Flow, ResyncReason};
use frame::{FrameHeader, FrameSeek, HEADER_LEN, PREFACE};
use stream::Stream;

/// A header block being collected (HEADERS or PUSH_PROMISE, then CONTINUATION frames).
#[derive(Debug)]
struct Block {
    stream: u32,
    end_stream: bool,
    /// PUSH_PROMISE blocks are decoded only to keep the HPACK state.
    push: bool,
    /// The block was refused (too large): its remaining CONTINUATION frames are dropped.
    discard: bool,
    buf: Vec<u8>,
}

/// Where a flow is in its frame sequence.
#[derive(Debug, Clone, Copy)]
enum FrameState {
    /// Expecting the client preface from this offset in it (not 0 when the connection was
    /// joined inside the preface).
    Preface(usize),
    /// Looking for a frame boundary.
    Seek { reason: ResyncReason, skipped: u64 },
    /// Expecting a frame header.
    Header,
    /// A DATA frame whose pad-length byte comes next.
    DataPadLen(FrameHeader),
    /// Inside a DATA frame: `left` data bytes, then `pad` padding bytes.
    Data {
        hdr: FrameHeader,
        left: u32,
        pad: u32,
    },
    /// A frame whose whole payload is needed.
    Payload(FrameHeader),
    /// Bytes to ignore.
    Skip(u32),
}

struct H2Flow {
    buf: Vec<u8>,
    /// `(timestamp, end offset)` of each run of `buf`'s bytes fed with one timestamp.
    runs: Vec<(u64, usize)>,
    /// Seeking may take a frame that ends exactly where the bytes end as a boundary: the
    /// other flow has spoken, so this one's bytes are all in for now.
    settle: bool,
    state: FrameState,
    hpack: Decoder,
    block: Option<Block>,
    /// Frame headers still to check after a boundary was found by seeking: an implausible one
    /// means the boundary was wrong, and the flow seeks again.
    probation: u8,
}

impl std::fmt::Debug for H2Flow {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("H2Flow")
            .field("buffered", &self.buf.len())
            .field("state", &self.state)
            .finish_non_exhaustive()
    }
}

impl H2Flow {
    fn new(state: FrameState, max_table: usize, joined: bool) -> Self {
        // Never less than the protocol's initial size, so a conforming peer's table fits.
        let cap = max_table.max(crate::hpack::INITIAL_MAX_SIZE);
        H2Flow {
            buf: Vec::new(),
            runs: Vec::new(),
            settle: false,
            state,
            hpack: if joined {
                Decoder::joined(cap)
            } else {
                Decoder::new(cap)
            },
            block: None,
            probation: 0,
        }
    }
}

/// Most timestamp runs kept for a flow's buffered bytes (later ones merge into the last).
const MAX_RUNS: usize = 16;

/// Frame headers checked after a boundary found by seeking.
const PROBATION: u8 = 8;

/// HTTP/2 state of one connection.
#[derive(Debug)]
pub(crate) struct Http2 {
    flows: [H2Flow; 2],
    streams: BTreeMap<u32, Stream>,
    /// Which flow carries requests, once known.
    request_flow: Option<Flow>,
    /// Streams whose frames are ignored (skipped, reset or pushed), so that each is counted
    /// once; the oldest are forgotten past a bound.
    ignored: BTreeSet<u32>,
}

/// Outcome of one parsing step: bytes consumed, and whether to go on.
struct Step {
    used: usize,
    more: bool,
}

const fn go(used: usize) -> Step {
    Step { used, more: true }
}

const fn wait(used: usize) -> Step {
    Step { used, more: false }
}

/// State after the data bytes of a DATA frame.
fn after_data(pad: u32) -> FrameState {
    if pad == 0 {
        FrameState::Header
    } else {
        FrameState::Skip(pad)
    }
}

impl Http2 {
    /// A connection whose client preface was seen on `preface_flow`, or (when `None`) one joined
    /// mid-stream.
    pub(crate) fn new(preface_flow: Option<Flow>, preface_from: usize, max_table: usize) -> Self {
        let mid = FrameState::Seek {
            reason: ResyncReason::MidStream,
            skipped: 0,
        };
        let (egress, ingress) = match preface_flow {
            Some(Flow::Egress) => (FrameState::Preface(preface_from), FrameState::Header),
            Some(Flow::Ingress) => (FrameState::Header, FrameState::Preface(preface_from)),
            None => (mid, mid),
        };
        let joined = preface_flow.is_none();
        Http2 {
            flows: [
                H2Flow::new(egress, max_table, joined),
                H2Flow::new(ingress, max_table, joined),
            ],
            streams: BTreeMap::new(),
            request_flow: preface_flow,
            ignored: BTreeSet::new(),
        }
    }

    pub(crate) fn feed(&mut self, flow: Flow, data: &[u8], ts_ns: u64, ctx: &mut Ctx<'_>) {
        // The other flow stopped: bytes it keeps while seeking a boundary are judged now, so
        // that its last frame (a request waiting for its response) is not held back behind
        // what this flow brings.
        let other = flow.opposite().index();
        if matches!(self.flows[other].state, FrameState::Seek { .. })
            && !self.flows[other].buf.is_empty()
        {
            self.flows[other].settle = true;
            self.feed_flow(flow.opposite(), &[], ts_ns, ctx);
            self.flows[other].settle = false;
        }
        self.feed_flow(flow, data, ts_ns, ctx);
    }

    fn feed_flow(&mut self, flow: Flow, data: &[u8], ts_ns: u64, ctx: &mut Ctx<'_>) {
        let fi = flow.index();
        let mut buf = std::mem::take(&mut self.flows[fi].buf);
        let mut runs = std::mem::take(&mut self.flows[fi].runs);
        if buf.is_empty() {
            let used = self.parse(flow, data, &[], ts_ns, ctx);
            buf.extend_from_slice(&data[used..]);
            runs.clear();
        } else {
            // What starts in bytes kept from earlier feeds keeps their timestamps.
            let used = {
                buf.extend_from_slice(data);
                self.parse(flow, &buf, &runs, ts_ns, ctx)
            };
            buf.drain(..used);
            runs.retain_mut(|(_, end)| {
                *end = end.saturating_sub(used);
                *end > 0
            });
        }
        if !buf.is_empty() {
            let full = runs.len() >= MAX_RUNS;
            match runs.last_mut() {
                Some((ts, end)) if *ts == ts_ns || full => *end = buf.len(),
                _ => runs.push((ts_ns, buf.len())),
            }
        }
        self.flows[fi].buf = buf;
        self.flows[fi].runs = runs;
    }

    /// Parses `input`, whose bytes up to the end of each of `runs` came with that run's
    /// timestamp and the rest with `ts_ns`; returns the bytes used.
    fn parse(
        &mut self,
        flow: Flow,
        input: &[u8],
        runs: &[(u64, usize)],
        ts_ns: u64,
        ctx: &mut Ctx<'_>,
    ) -> usize {
        let mut pos = 0;
        while pos < input.len() {
            let ts = runs
                .iter()
                .find(|(_, end)| pos < *end)
                .map_or(ts_ns, |(ts, _)| *ts);
            let step = self.step(flow, &input[pos..], ts, ctx);
            pos += step.used;
            if !step.more {
                break;
            }
        }
        pos
    }

    fn step(&mut self, flow: Flow, rest: &[u8], ts_ns: u64, ctx: &mut Ctx<'_>) -> Step {
        let fi = flow.index();
        match self.flows[fi].state {
            FrameState::Preface(from) => {
                let expected = &PREFACE[from.min(PREFACE.len())..];
                let n = rest.len().min(expected.len());
                if rest[..n] != expected[..n] {
                    self.lose_sync(flow, ResyncReason::Malformed, 0, ctx);
                    return go(0);
                }
                if n < expected.len() {
                    return wait(0);
                }
                self.flows[fi].state = FrameState::Header;
                go(n)
            }
            FrameState::Seek { reason, skipped } => {
                match frame::find_frame(rest, self.flows[fi].settle) {
                    FrameSeek::Found(at) => {
                        let skipped = skipped + at as u64;
                        ctx.stats.bytes_skipped += at as u64;
                        if reason == ResyncReason::MidStream {
                            ctx.stats.resyncs += 1;
                        }
                        ctx.out.push(crate::types::Event::Resync {
                            flow,
                            skipped,
                            reason,
                        });
                        self.flows[fi].state = FrameState::Header;
                        self.flows[fi].probation = PROBATION;
                        go(at)
                    }
                    FrameSeek::NeedMore { skip } => {
                        ctx.stats.bytes_skipped += skip as u64;
                        self.flows[fi].state = FrameState::Seek {
                            reason,
                            skipped: skipped + skip as u64,
                        };
                        // Never keep more than a frame's worth while confirming a boundary.
                        wait(skip)
                    }
                }
            }
            FrameState::Header => {
                let Some(hdr) = FrameHeader::parse(rest) else {
                    return wait(0);
                };
                if self.flows[fi].probation > 0 {
                    if !hdr.plausible() {
                        // The boundary found by seeking was not one.
                        self.lose_sync(flow, ResyncReason::Malformed, 0, ctx);
                        return go(0);
                    }
                    self.flows[fi].probation -= 1;
                }
                self.on_frame_header(flow, hdr, ts_ns, ctx);
                if let FrameState::Payload(hdr) = self.flows[fi].state
                    && hdr.len == 0
                {
                    // Nothing more to wait for, even when these are the last bytes fed.
                    self.flows[fi].state = FrameState::Header;
                    self.on_frame(flow, hdr, &[], ts_ns, ctx);
                }
                go(HEADER_LEN)
            }
            FrameState::DataPadLen(hdr) => {
                let pad = u32::from(rest[0]);
                if pad + 1 > hdr.len {
                    self.lose_sync(flow, ResyncReason::Malformed, 1, ctx);
                    return go(1);
                }
                let left = hdr.len - 1 - pad;
                if left == 0 {
                    self.flows[fi].state = after_data(pad);
                    self.data(flow, hdr, &[], true, ts_ns, ctx);
                } else {
                    self.flows[fi].state = FrameState::Data { hdr, left, pad };
                }
                go(1)
            }
            FrameState::Data { hdr, left, pad } => {
                let n = rest.len().min(left as usize);
                let left = left - n as u32;
                self.flows[fi].state = if left == 0 {
                    after_data(pad)
                } else {
                    FrameState::Data { hdr, left, pad }
                };
                self.data(flow, hdr, &rest[..n], left == 0, ts_ns, ctx);
                go(n)
            }
            FrameState::Payload(hdr) => {
                let len = hdr.len as usize;
                if rest.len() < len {
                    return wait(0);
                }
                self.flows[fi].state = FrameState::Header;
                self.on_frame(flow, hdr, &rest[..len], ts_ns, ctx);
                go(len)
            }
            FrameState::Skip(left) => {
                let n = rest.len().min(left as usize);
                let left = left - n as u32;
                self.flows[fi].state = if left == 0 {
                    FrameState::Header
                } else {
                    FrameState::Skip(left)
                };
                go(n)
            }
        }
    }

    fn on_frame_header(&mut self, flow: Flow, hdr: FrameHeader, ts_ns: u64, ctx: &mut Ctx<'_>) {
        let fi = flow.index();
        let max_payload = ctx.config.max_header_bytes.max(16_384);
        if self.flows[fi].block.is_some() && hdr.kind != frame::CONTINUATION {
            // A header block must be followed by its CONTINUATION frames.
            self.hpack_failed(flow, crate::BlockError::Sequence, ctx);
        }
        self.flows[fi].state = match hdr.kind {
            frame::DATA if hdr.stream == 0 => {
                self.lose_sync(flow, ResyncReason::Malformed, 0, ctx);
                return;
            }
            frame::DATA if hdr.has(frame::FLAG_PADDED) => {
                if hdr.len == 0 {
                    self.lose_sync(flow, ResyncReason::Malformed, 0, ctx);
                    return;
                }
                FrameState::DataPadLen(hdr)
            }
            frame::DATA => {
                if hdr.len == 0 {
                    self.flows[fi].state = FrameState::Header;
                    self.data(flow, hdr, &[], true, ts_ns, ctx);
                    return;
                }
                FrameState::Data {
                    hdr,
                    left: hdr.len,
                    pad: 0,
                }
            }
            frame::HEADERS | frame::CONTINUATION | frame::PUSH_PROMISE
                if hdr.len as usize > max_payload =>
            {
                self.hpack_failed(flow, crate::BlockError::TooLarge, ctx);
                if hdr.kind == frame::HEADERS {
                    self.skip_stream(hdr.stream, StreamSkip::UndecodableHead, ctx);
                }
                FrameState::Skip(hdr.len)
            }
            frame::HEADERS
            | frame::CONTINUATION
            | frame::PUSH_PROMISE
            | frame::RST_STREAM
            | frame::GOAWAY
            | frame::SETTINGS
            | frame::PING
            | frame::WINDOW_UPDATE
            | frame::PRIORITY
                if (hdr.len as usize) <= max_payload =>
            {
                FrameState::Payload(hdr)
            }
            _ => FrameState::Skip(hdr.len),
        };
        if let FrameState::Skip(0) = self.flows[fi].state {
            self.flows[fi].state = FrameState::Header;
        }
    }

    /// This flow's position is lost: drop what is buffered, forget its HPACK state and abort the
    /// exchanges it was carrying, then look for the next frame.
    fn lose_sync(&mut self, flow: Flow, reason: ResyncReason, skipped: u64, ctx: &mut Ctx<'_>) {
        tracing::debug!(?flow, ?reason, "http/2 flow lost sync");
        ctx.stats.resyncs += 1;
        let fi = flow.index();
        self.flows[fi].block = None;
        self.flows[fi].hpack.forget();
        self.flows[fi].state = FrameState::Seek { reason, skipped };
        self.abort_open_on(flow, crate::types::AbortReason::Resync, ctx);
    }

    pub(crate) fn gap(&mut self, flow: Flow, lost: u64, _ts_ns: u64, ctx: &mut Ctx<'_>) {
        if lost == 0 {
            return;
        }
        let fi = flow.index();
        let buffered = self.flows[fi].buf.len() as u64;
        self.flows[fi].buf.clear();
        self.flows[fi].runs.clear();
        ctx.stats.bytes_skipped += lost + buffered;
        match self.flows[fi].state {
            FrameState::Seek { reason, skipped } => {
                self.flows[fi].state = FrameState::Seek {
                    reason,
                    skipped: skipped + lost + buffered,
                };
            }
            _ => self.lose_sync(flow, ResyncReason::Gap, lost + buffered, ctx),
        }
    }

    pub(crate) fn close(&mut self, ts_ns: u64, ctx: &mut Ctx<'_>) {
        // No more bytes: what a flow keeps while seeking a boundary is judged as it is.
        for flow in [Flow::Egress, Flow::Ingress] {
            let fi = flow.index();
            if matches!(self.flows[fi].state, FrameState::Seek { .. })
                && !self.flows[fi].buf.is_empty()
            {
                self.flows[fi].settle = true;
                self.feed_flow(flow, &[], ts_ns, ctx);
                self.flows[fi].settle = false;
            }
        }
        for flow in [Flow::Egress, Flow::Ingress] {
            let fi = flow.index();
            self.flows[fi].buf.clear();
            self.flows[fi].runs.clear();
            self.flows[fi].block = None;
            if let FrameState::Seek { reason, skipped } = self.flows[fi].state
                && skipped > 0
            {
                if reason == ResyncReason::MidStream {
                    ctx.stats.resyncs += 1;
                }
                ctx.out.push(crate::types::Event::Resync {
                    flow,
                    skipped,
                    reason,
                });
            }
        }
        for (_, stream) in std::mem::take(&mut self.streams) {
            stream.abort(crate::types::AbortReason::ConnectionClosed, ctx);
        }
    }

    pub(crate) fn buffered_bytes(&self) -> usize {
        self.flows
            .iter()
            .map(|f| f.buf.len() + f.block.as_ref().map_or(0, |b| b.buf.len()))
            .sum()
    }

    /// Which flow carries requests, once known.
    pub(crate) fn request_flow(&self) -> Option<Flow> {
        self.request_flow
    }

    fn is_request_flow(&self, flow: Flow) -> Option<bool> {
        self.request_flow.map(|rf| rf == flow)
    }

    /// Ignores the frames of `stream` from now on; counts it under `reason` (once).
    fn ignore(&mut self, stream: u32, reason: Option<StreamSkip>, ctx: &mut Ctx<'_>) {
        if self.ignored.insert(stream) {
            if let Some(reason) = reason {
                ctx.stats.h2_skipped_streams.count(reason);
            }
            if self.ignored.len() > ctx.config.max_h2_streams.max(1) {
                self.ignored.pop_first();
            }
        }
    }
}
