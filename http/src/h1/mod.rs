//! HTTP/1.0 and HTTP/1.1: persistent connections, pipelining, every body framing, interim
//! responses, upgrades, and resynchronisation after gaps or garbage.

mod flow;
pub(crate) mod head;
pub(crate) mod seek;

use std::collections::VecDeque;

use crate::body::{Ctx, Side};
use crate::types::{AbortReason, Event, ExchangeId, Flow, ResyncReason};
use flow::{FlowParser, FlowState};

/// A request waiting for its response.
#[derive(Debug, Clone)]
struct Pending {
    id: ExchangeId,
    head_request: bool,
    connect: bool,
    start_ns: u64,
    /// The exchange was already reported aborted: its response is consumed silently.
    aborted: bool,
}

/// HTTP/1 state of one connection.
#[derive(Debug)]
pub(crate) struct Http1 {
    flows: [FlowParser; 2],
    /// Which flow carries requests, once known.
    request_flow: Option<Flow>,
    queue: VecDeque<Pending>,
    upgraded: bool,
}

impl Http1 {
    /// A connection whose role is known (`request_flow`) or not yet.
    pub(crate) fn new(request_flow: Option<Flow>) -> Self {
        Http1 {
            flows: [FlowParser::new(), FlowParser::new()],
            request_flow,
            queue: VecDeque::new(),
            upgraded: false,
        }
    }

    /// Which flow carries requests, once known.
    pub(crate) fn request_flow(&self) -> Option<Flow> {
        self.request_flow
    }

    /// Whether the connection switched protocols.
    pub(crate) fn is_upgraded(&self) -> bool {
        self.upgraded
    }

    pub(crate) fn buffered_bytes(&self) -> usize {
        self.flows.iter().map(|f| f.buf.len()).sum()
    }

    /// Gives back the spare room of the flows' buffers and of the queue of requests.
    pub(crate) fn release_buffers(&mut self) {
        for f in &mut self.flows {
            f.buf.shrink_to_fit();
        }
        self.queue.shrink_to_fit();
    }

    fn side_of(&self, flow: Flow) -> Option<Side> {
        self.request_flow.map(|rf| {
            if rf == flow {
                Side::Request
            } else {
                Side::Response
            }
        })
    }

    pub(crate) fn feed(&mut self, flow: Flow, data: &[u8], ts_ns: u64, ctx: &mut Ctx<'_>) {
        if self.upgraded {
            return;
        }
        let fi = flow.index();
        let mut buf = std::mem::take(&mut self.flows[fi].buf);
        if buf.is_empty() {
            let used = self.parse(flow, data, ts_ns, ts_ns, ctx);
            buf.extend_from_slice(&data[used..]);
            self.flows[fi].buf_start_ns = ts_ns;
        } else {
            buf.extend_from_slice(data);
            let used = self.parse(flow, &buf, self.flows[fi].buf_start_ns, ts_ns, ctx);
            buf.drain(..used);
            if used > 0 {
                self.flows[fi].buf_start_ns = ts_ns;
            }
        }
        if self.upgraded {
            buf = Vec::new();
        }
        self.flows[fi].buf = buf;
    }

    /// Parses as much of `input` as possible; returns the bytes consumed. `first_ns` is the
    /// timestamp of the first byte of `input` (earlier than `ts_ns` when it starts with bytes
    /// kept from an earlier feed).
    fn parse(
        &mut self,
        flow: Flow,
        input: &[u8],
        first_ns: u64,
        ts_ns: u64,
        ctx: &mut Ctx<'_>,
    ) -> usize {
        let mut pos = 0;
        while !self.upgraded && pos < input.len() {
            let state = std::mem::take(&mut self.flows[flow.index()].state);
            let start_ns = if pos == 0 { first_ns } else { ts_ns };
            let step = self.step(flow, state, &input[pos..], start_ns, ts_ns, ctx);
            pos += step.used;
            self.flows[flow.index()].state = step.next;
            if !step.more {
                break;
            }
        }
        pos
    }

    pub(crate) fn gap(&mut self, flow: Flow, lost: u64, ts_ns: u64, ctx: &mut Ctx<'_>) {
        if self.upgraded || lost == 0 {
            return;
        }
        let fi = flow.index();
        let buffered = self.flows[fi].buf.len() as u64;
        ctx.stats.bytes_skipped += lost + buffered;
        self.flows[fi].buf.clear();
        let state = std::mem::take(&mut self.flows[fi].state);
        let next = match state {
            FlowState::Seek { reason, skipped } => FlowState::Seek {
                reason,
                skipped: skipped + lost + buffered,
            },
            FlowState::Body(mut body) => {
                if body.absorbs_gap(lost, buffered) {
                    ctx.stats.resyncs += 1;
                    ctx.out.push(Event::Resync {
                        flow,
                        skipped: lost,
                        reason: ResyncReason::Gap,
                    });
                    body.message.lost(ctx);
                    if body.is_done() {
                        body.message.end(ts_ns, ctx);
                        FlowState::Head
                    } else {
                        FlowState::Body(body)
                    }
                } else {
                    self.abort_message(
                        body.message.id,
                        body.message.side,
                        AbortReason::Resync,
                        ctx,
                    );
                    ctx.stats.resyncs += 1;
                    FlowState::Seek {
                        reason: ResyncReason::Gap,
                        skipped: lost + buffered,
                    }
                }
            }
            FlowState::Head => {
                ctx.stats.resyncs += 1;
                FlowState::Seek {
                    reason: ResyncReason::Gap,
                    skipped: lost + buffered,
                }
            }
        };
        self.flows[fi].state = next;
    }

    /// Bytes were lost somewhere on the connection, in an unknown amount and direction (records
    /// the capture could not hand over): neither flow's position nor the pairing of requests
    /// with responses can be trusted. Open messages and every request still waiting for its
    /// response are aborted, and both flows look for the next message; a response whose request
    /// was aborted so is then an orphan (counted), never paired with another request.
    pub(crate) fn desync(&mut self, ctx: &mut Ctx<'_>) {
        if self.upgraded {
            return;
        }
        for flow in [Flow::Egress, Flow::Ingress] {
            let fi = flow.index();
            let buffered = self.flows[fi].buf.len() as u64;
            self.flows[fi].buf.clear();
            ctx.stats.bytes_skipped += buffered;
            let skipped = match std::mem::take(&mut self.flows[fi].state) {
                FlowState::Seek { skipped, .. } => skipped + buffered,
                FlowState::Head => buffered,
                FlowState::Body(body) => {
                    self.abort_message(
                        body.message.id,
                        body.message.side,
                        AbortReason::Resync,
                        ctx,
                    );
                    buffered
                }
            };
            ctx.stats.resyncs += 1;
            self.flows[fi].state = FlowState::Seek {
                reason: ResyncReason::Gap,
                skipped,
            };
        }
        for p in self.queue.drain(..) {
            if !p.aborted {
                ctx.out.push(Event::Aborted {
                    id: p.id,
                    reason: AbortReason::Resync,
                });
            }
        }
    }

    pub(crate) fn close(&mut self, ts_ns: u64, ctx: &mut Ctx<'_>) {
        for flow in [Flow::Egress, Flow::Ingress] {
            let fi = flow.index();
            let state = std::mem::take(&mut self.flows[fi].state);
            self.flows[fi].buf.clear();
            match state {
                FlowState::Body(body) if body.is_close_delimited() => body.message.end(ts_ns, ctx),
                FlowState::Body(body) => {
                    self.abort_message(
                        body.message.id,
                        body.message.side,
                        AbortReason::ConnectionClosed,
                        ctx,
                    );
                }
                FlowState::Seek { reason, skipped } if skipped > 0 => {
                    if reason == ResyncReason::MidStream {
                        ctx.stats.resyncs += 1;
                    }
                    ctx.out.push(Event::Resync {
                        flow,
                        skipped,
                        reason,
                    });
                }
                _ => {}
            }
        }
        let reason = if self.upgraded {
            AbortReason::Upgraded
        } else {
            AbortReason::ConnectionClosed
        };
        for p in self.queue.drain(..) {
            if !p.aborted {
                ctx.out.push(Event::Aborted { id: p.id, reason });
            }
        }
    }

    /// Reports exchange `id` aborted (once): a request still waiting for its response is marked
    /// so its response is consumed silently.
    fn abort_message(
        &mut self,
        id: Option<ExchangeId>,
        side: Side,
        reason: AbortReason,
        ctx: &mut Ctx<'_>,
    ) {
        let Some(id) = id else { return };
        if side == Side::Request
            && let Some(p) = self.queue.iter_mut().find(|p| p.id == id)
        {
            if p.aborted {
                return;
            }
            p.aborted = true;
        }
        ctx.out.push(Event::Aborted { id, reason });
    }
}
