//! One HTTP/2 stream: one exchange.

use crate::body::{Ctx, MessageBody};
use crate::grpc::GrpcCounter;
use crate::headers::Headers;
use crate::types::{AbortReason, Event, ExchangeId};

/// One side (request or response) of a stream.
#[derive(Debug, Default)]
pub(super) enum Part {
    /// The head has not been seen yet.
    #[default]
    Pending,
    /// Head seen, body open.
    Open {
        body: MessageBody,
        grpc: Option<GrpcCounter>,
    },
    /// This side ended.
    Done,
}

impl Part {
    pub fn is_done(&self) -> bool {
        matches!(self, Part::Done)
    }

    /// Emits a body piece, counting gRPC messages.
    pub fn data(&mut self, data: &[u8], ts_ns: u64, ctx: &mut Ctx<'_>) {
        if let Part::Open { body, grpc } = self {
            if let Some(counter) = grpc {
                let before = counter.messages();
                counter.push(data);
                ctx.stats.grpc_messages += counter.messages() - before;
            }
            body.data(data, ts_ns, ctx);
        }
    }

    /// Emits this side's trailer fields (if it is open and there are any).
    pub fn trailers(&self, trailers: Headers, ts_ns: u64, ctx: &mut Ctx<'_>) {
        if let Part::Open { body, .. } = self
            && !trailers.is_empty()
        {
            body.trailers(trailers, ts_ns, ctx);
        }
    }

    /// Ends this side (emits the end event if it was open).
    pub fn end(&mut self, ts_ns: u64, ctx: &mut Ctx<'_>) {
        if let Part::Open { body, .. } = std::mem::replace(self, Part::Done) {
            body.end(ts_ns, ctx);
        }
    }
}

/// A stream whose request head was seen.
#[derive(Debug)]
pub(super) struct Stream {
    pub id: ExchangeId,
    pub request: Part,
    pub response: Part,
}

impl Stream {
    pub fn new(id: ExchangeId) -> Self {
        Stream {
            id,
            request: Part::Pending,
            response: Part::Pending,
        }
    }

    pub fn is_complete(&self) -> bool {
        self.request.is_done() && self.response.is_done()
    }

    /// The stream will not complete: reports it (unless it already did).
    pub fn abort(self, reason: AbortReason, ctx: &mut Ctx<'_>) {
        if !self.is_complete() {
            ctx.out.push(Event::Aborted {
                id: self.id,
                reason,
            });
        }
    }
}
