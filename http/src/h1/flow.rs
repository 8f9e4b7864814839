//! The per-flow HTTP/1 state machine: seek, head, body (length, chunked, close-delimited).

use super::head::{self, Framing, Parsed};
use super::seek::{Seek, seek};
use super::{Http1, Pending};
use crate::body::{Ctx, MessageBody, Side, decoder_for};
use crate::types::{AbortReason, Event, Flow, RequestHead, ResponseHead, ResyncReason};

/// Longest chunk-size line (with extensions) accepted.
const MAX_CHUNK_LINE: usize = 4096;

/// Parser of one direction of the connection.
#[derive(Debug)]
pub(super) struct FlowParser {
    /// Bytes received but not consumed yet (an incomplete head or chunk line, or the tail kept
    /// while seeking). Bounded by the head limit.
    pub buf: Vec<u8>,
    /// Timestamp of the first byte in `buf`.
    pub buf_start_ns: u64,
    pub state: FlowState,
}

impl FlowParser {
    pub fn new() -> Self {
        FlowParser {
            buf: Vec::new(),
            buf_start_ns: 0,
            state: FlowState::default(),
        }
    }
}

/// Where a flow is.
#[derive(Debug)]
pub(super) enum FlowState {
    /// Looking for the start of the next message; `skipped` bytes were skipped or lost so far.
    Seek { reason: ResyncReason, skipped: u64 },
    /// At a message boundary, expecting a head.
    Head,
    /// Inside a body.
    Body(BodyState),
}

impl Default for FlowState {
    fn default() -> Self {
        // A fresh flow may have been joined mid-stream: the first message is looked for.
        FlowState::Seek {
            reason: ResyncReason::MidStream,
            skipped: 0,
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Chunk {
    /// Expecting a chunk-size line.
    Size,
    /// Inside chunk data.
    Data(u64),
    /// Expecting the CRLF after chunk data.
    DataEnd,
    /// After the last chunk: trailer fields until an empty line.
    Trailers,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum BodyFraming {
    Length(u64),
    Chunked(Chunk),
    Close,
}

#[derive(Debug)]
pub(super) struct BodyState {
    pub message: MessageBody,
    pub framing: BodyFraming,
}

impl BodyState {
    /// Whether `lost` bytes fall inside this body without breaking its framing; if so they are
    /// accounted for.
    pub fn absorbs_gap(&mut self, lost: u64, buffered: u64) -> bool {
        if buffered != 0 {
            return false;
        }
        match &mut self.framing {
            BodyFraming::Length(rem) if lost <= *rem => {
                *rem -= lost;
                true
            }
            BodyFraming::Close => true,
            _ => false,
        }
    }

    pub fn is_done(&self) -> bool {
        self.framing == BodyFraming::Length(0)
    }

    pub fn is_close_delimited(&self) -> bool {
        self.framing == BodyFraming::Close
    }
}

/// Outcome of one parsing step.
pub(super) struct Step {
    pub used: usize,
    pub next: FlowState,
    /// Whether another step may make progress with the remaining bytes.
    pub more: bool,
}

fn go(used: usize, next: FlowState) -> Step {
    Step {
        used,
        next,
        more: true,
    }
}

fn wait(used: usize, next: FlowState) -> Step {
    Step {
        used,
        next,
        more: false,
    }
}

impl Http1 {
    pub(super) fn step(
        &mut self,
        flow: Flow,
        state: FlowState,
        rest: &[u8],
        start_ns: u64,
        ts_ns: u64,
        ctx: &mut Ctx<'_>,
    ) -> Step {
        match state {
            FlowState::Seek { reason, skipped } => self.step_seek(flow, reason, skipped, rest, ctx),
            FlowState::Head => self.step_head(flow, rest, start_ns, ts_ns, ctx),
            FlowState::Body(body) => self.step_body(body, rest, ts_ns, ctx),
        }
    }

    fn step_seek(
        &mut self,
        flow: Flow,
        reason: ResyncReason,
        skipped: u64,
        rest: &[u8],
        ctx: &mut Ctx<'_>,
    ) -> Step {
        let want = self.side_of(flow);
        match seek(
            rest,
            want,
            ctx.config.max_headers,
            ctx.config.max_header_bytes,
        ) {
            Seek::Found { at, side } => {
                let skipped = skipped + at as u64;
                ctx.stats.bytes_skipped += at as u64;
                if skipped > 0 || reason != ResyncReason::MidStream {
                    if reason == ResyncReason::MidStream {
                        // Other reasons were counted when the flow lost its place.
                        ctx.stats.resyncs += 1;
                    }
                    ctx.out.push(Event::Resync {
                        flow,
                        skipped,
                        reason,
                    });
                }
                if self.request_flow.is_none() {
                    self.request_flow = Some(match side {
                        Side::Request => flow,
                        Side::Response => flow.opposite(),
                    });
                }
                go(at, FlowState::Head)
            }
            Seek::NeedMore { skip } => {
                ctx.stats.bytes_skipped += skip as u64;
                wait(
                    skip,
                    FlowState::Seek {
                        reason,
                        skipped: skipped + skip as u64,
                    },
                )
            }
        }
    }

    /// `start_ns` is the timestamp of the head's first byte, `ts_ns` of the bytes at hand.
    fn step_head(
        &mut self,
        flow: Flow,
        rest: &[u8],
        start_ns: u64,
        ts_ns: u64,
        ctx: &mut Ctx<'_>,
    ) -> Step {
        let side = self.side_of(flow).unwrap_or(Side::Request);
        let max_headers = ctx.config.max_headers;
        let outcome = match side {
            Side::Request => match head::parse_request(rest, max_headers, ctx.arena) {
                Parsed::Complete(h, n) => Ok((self.on_request(flow, h, start_ns, ts_ns, ctx), n)),
                Parsed::Partial { .. } => Err(false),
                Parsed::Invalid => Err(true),
            },
            Side::Response => match head::parse_response(rest, max_headers, ctx.arena) {
                Parsed::Complete(h, n) => Ok((self.on_response(flow, h, start_ns, ts_ns, ctx), n)),
                Parsed::Partial { .. } => Err(false),
                Parsed::Invalid => Err(true),
            },
        };
        match outcome {
            Ok((next, used)) => go(used, next),
            Err(false) if rest.len() <= ctx.config.max_header_bytes => wait(0, FlowState::Head),
            Err(invalid) => {
                let reason = if invalid {
                    ResyncReason::Malformed
                } else {
                    ResyncReason::HeadTooLarge
                };
                tracing::debug!(?flow, ?reason, "http/1 head rejected, resynchronising");
                ctx.stats.resyncs += 1;
                ctx.stats.bytes_skipped += 1;
                go(1, FlowState::Seek { reason, skipped: 1 })
            }
        }
    }

    fn on_request(
        &mut self,
        flow: Flow,
        mut head: RequestHead,
        start_ns: u64,
        ts_ns: u64,
        ctx: &mut Ctx<'_>,
    ) -> FlowState {
        let Ok(framing) = head::request_framing(&head.headers) else {
            ctx.stats.resyncs += 1;
            return FlowState::Seek {
                reason: ResyncReason::Malformed,
                skipped: 0,
            };
        };
        let id = ctx.new_exchange();
        let decoder = decoder_for(&mut head.headers, ctx);
        self.queue.push_back(Pending {
            id,
            head_request: head.method.eq_ignore_ascii_case("HEAD"),
            connect: head.method.eq_ignore_ascii_case("CONNECT"),
            start_ns,
            aborted: false,
        });
        if self.queue.len() > ctx.config.max_pipelined
            && let Some(old) = self.queue.pop_front()
            && !old.aborted
        {
            ctx.out.push(Event::Aborted {
                id: old.id,
                reason: AbortReason::Unanswered,
            });
        }
        tracing::trace!(?flow, id, method = %head.method, "http/1 request head");
        ctx.out.push(Event::RequestHead {
            id,
            head,
            ts_ns: start_ns,
        });
        let message = MessageBody::new(Some(id), Side::Request, decoder);
        self.body_state(message, framing, ts_ns, ctx)
    }

    fn on_response(
        &mut self,
        flow: Flow,
        mut head: ResponseHead,
        start_ns: u64,
        ts_ns: u64,
        ctx: &mut Ctx<'_>,
    ) -> FlowState {
        let status = head.status;
        if (100..200).contains(&status) && status != 101 {
            ctx.stats.interim_responses += 1;
            return FlowState::Head;
        }
        // A response cannot start before its request: one that does answers a request this
        // parser never saw (joined mid-stream, or lost in a gap) and is consumed silently.
        let pending = match self.queue.front() {
            Some(p) if p.start_ns <= start_ns => self.queue.pop_front(),
            _ => None,
        };
        let id = match &pending {
            Some(p) if !p.aborted => Some(p.id),
            Some(_) => None,
            None => {
                ctx.stats.orphan_responses += 1;
                None
            }
        };
        let connect = pending.as_ref().is_some_and(|p| p.connect);
        let upgrade = if status == 101 {
            Some(head.header("upgrade").unwrap_or("unknown").to_owned())
        } else if connect && (200..300).contains(&status) {
            Some("CONNECT".to_owned())
        } else {
            None
        };
        let head_request = pending.as_ref().is_some_and(|p| p.head_request);
        let framing = match upgrade {
            Some(_) => Framing::Length(0),
            None => match head::response_framing(&head.headers, status, head_request) {
                Ok(f) => f,
                Err(_) => {
                    if let Some(id) = id {
                        ctx.out.push(Event::Aborted {
                            id,
                            reason: AbortReason::Resync,
                        });
                    }
                    ctx.stats.resyncs += 1;
                    return FlowState::Seek {
                        reason: ResyncReason::Malformed,
                        skipped: 0,
                    };
                }
            },
        };
        let decoder = decoder_for(&mut head.headers, ctx);
        if let Some(id) = id {
            tracing::trace!(?flow, id, status, "http/1 response head");
            ctx.out.push(Event::ResponseHead {
                id,
                head,
                ts_ns: start_ns,
            });
        }
        let message = MessageBody::new(id, Side::Response, decoder);
        let next = self.body_state(message, framing, ts_ns, ctx);
        if let Some(protocol) = upgrade {
            if let Some(id) = id {
                ctx.out.push(Event::Upgrade { id, protocol });
            }
            self.upgraded = true;
            for p in self.queue.drain(..) {
                if !p.aborted {
                    ctx.out.push(Event::Aborted {
                        id: p.id,
                        reason: AbortReason::Upgraded,
                    });
                }
            }
        }
        next
    }

    fn body_state(
        &mut self,
        message: MessageBody,
        framing: Framing,
        ts_ns: u64,
        ctx: &mut Ctx<'_>,
    ) -> FlowState {
        let framing = match framing {
            Framing::Length(0) => {
                message.end(ts_ns, ctx);
                return FlowState::Head;
            }
            Framing::Length(n) => BodyFraming::Length(n),
            Framing::Chunked => BodyFraming::Chunked(Chunk::Size),
            Framing::Close => BodyFraming::Close,
        };
        FlowState::Body(BodyState { message, framing })
    }

    fn step_body(
        &mut self,
        mut body: BodyState,
        rest: &[u8],
        ts_ns: u64,
        ctx: &mut Ctx<'_>,
    ) -> Step {
        match body.framing {
            BodyFraming::Close => {
                body.message.data(rest, ts_ns, ctx);
                wait(rest.len(), FlowState::Body(body))
            }
            BodyFraming::Length(rem) => {
                let n = usize::try_from(rem).map_or(rest.len(), |r| r.min(rest.len()));
                body.message.data(&rest[..n], ts_ns, ctx);
                let rem = rem - n as u64;
                if rem == 0 {
                    body.message.end(ts_ns, ctx);
                    go(n, FlowState::Head)
                } else {
                    body.framing = BodyFraming::Length(rem);
                    wait(n, FlowState::Body(body))
                }
            }
            BodyFraming::Chunked(chunk) => self.step_chunk(body, chunk, rest, ts_ns, ctx),
        }
    }

    fn step_chunk(
        &mut self,
        mut body: BodyState,
        chunk: Chunk,
        rest: &[u8],
        ts_ns: u64,
        ctx: &mut Ctx<'_>,
    ) -> Step {
        let (used, next) = match chunk {
            Chunk::Size => match httparse::parse_chunk_size(rest) {
                Ok(httparse::Status::Complete((n, 0))) => (n, Chunk::Trailers),
                Ok(httparse::Status::Complete((n, size))) => (n, Chunk::Data(size)),
                Ok(httparse::Status::Partial) if rest.len() <= MAX_CHUNK_LINE => {
                    return wait(0, FlowState::Body(body));
                }
                _ => return self.chunk_error(body, ctx),
            },
            Chunk::Data(rem) => {
                let n = usize::try_from(rem).map_or(rest.len(), |r| r.min(rest.len()));
                body.message.data(&rest[..n], ts_ns, ctx);
                let rem = rem - n as u64;
                (
                    n,
                    if rem == 0 {
                        Chunk::DataEnd
                    } else {
                        Chunk::Data(rem)
                    },
                )
            }
            Chunk::DataEnd => {
                if rest.starts_with(b"\r\n") {
                    (2, Chunk::Size)
                } else if rest.starts_with(b"\n") {
                    (1, Chunk::Size)
                } else if rest == b"\r" {
                    return wait(0, FlowState::Body(body));
                } else {
                    return self.chunk_error(body, ctx);
                }
            }
            Chunk::Trailers => {
                return match head::parse_trailers(rest, ctx.config.max_headers, ctx.arena) {
                    Parsed::Complete(trailers, n) => {
                        if !trailers.is_empty() {
                            body.message.trailers(trailers, ts_ns, ctx);
                        }
                        body.message.end(ts_ns, ctx);
                        go(n, FlowState::Head)
                    }
                    // Fields httparse rejects are skipped up to the empty line, not passed on.
                    Parsed::Invalid | Parsed::Partial { .. } => match find_blank_line(rest) {
                        Some(n) => {
                            tracing::debug!(id = ?body.message.id, "unparsable trailer fields skipped");
                            body.message.end(ts_ns, ctx);
                            go(n, FlowState::Head)
                        }
                        None if rest.len() <= ctx.config.max_header_bytes => {
                            wait(0, FlowState::Body(body))
                        }
                        None => self.chunk_error(body, ctx),
                    },
                };
            }
        };
        body.framing = BodyFraming::Chunked(next);
        go(used, FlowState::Body(body))
    }

    fn chunk_error(&mut self, body: BodyState, ctx: &mut Ctx<'_>) -> Step {
        tracing::debug!(id = ?body.message.id, "malformed chunked body, resynchronising");
        self.abort_message(body.message.id, body.message.side, AbortReason::Resync, ctx);
        ctx.stats.resyncs += 1;
        go(
            0,
            FlowState::Seek {
                reason: ResyncReason::Malformed,
                skipped: 0,
            },
        )
    }
}

/// Index just past the first empty line (`\r\n\r\n` or `\n\n`) in `buf`.
fn find_blank_line(buf: &[u8]) -> Option<usize> {
    let crlf = buf.windows(4).position(|w| w == b"\r\n\r\n").map(|i| i + 4);
    let lf = buf.windows(2).position(|w| w == b"\n\n").map(|i| i + 2);
    match (crlf, lf) {
        (Some(a), Some(b)) => Some(a.min(b)),
        (a, b) => a.or(b),
    }
}
