//! Turns parser events into the three moments packs care about: request complete, response body
//! piece, exchange complete (or incomplete).

use std::collections::HashMap;
use std::sync::Arc;

use bytes::{Bytes, BytesMut};

use crate::headers::Headers;
use crate::types::{AbortReason, Event, ExchangeId, RequestHead, ResponseHead};

/// A message body as kept for packs.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Body {
    /// Decoded bytes, at most the assembler's `max_body`.
    pub data: Bytes,
    /// True decoded length.
    pub total_len: u64,
    /// Whether `data` holds less than `total_len`.
    pub truncated: bool,
}

/// A body being received: one piece is kept as is (shared, not copied); more are joined.
#[derive(Debug, Default)]
struct BodyBuf {
    first: Bytes,
    joined: Option<BytesMut>,
    total_len: u64,
    truncated: bool,
}

impl BodyBuf {
    fn push(&mut self, piece: &Bytes, max: usize) {
        self.total_len += piece.len() as u64;
        let kept = self.joined.as_ref().map_or(self.first.len(), BytesMut::len);
        let room = max.saturating_sub(kept);
        if piece.len() > room {
            self.truncated = true;
        }
        let piece = &piece[..piece.len().min(room)];
        if piece.is_empty() {
            return;
        }
        match &mut self.joined {
            Some(joined) => joined.extend_from_slice(piece),
            None if self.first.is_empty() => self.first = Bytes::copy_from_slice(piece),
            None => {
                let mut joined = BytesMut::with_capacity(kept + piece.len());
                joined.extend_from_slice(&self.first);
                joined.extend_from_slice(piece);
                self.joined = Some(joined);
            }
        }
    }

    /// `push` for the first piece, without copying it.
    fn push_shared(&mut self, piece: Bytes, max: usize) {
        if self.first.is_empty() && self.joined.is_none() && piece.len() <= max {
            self.total_len += piece.len() as u64;
            self.first = piece;
        } else {
            self.push(&piece, max);
        }
    }

    fn finish(self) -> Body {
        Body {
            data: self.joined.map_or(self.first, BytesMut::freeze),
            total_len: self.total_len,
            truncated: self.truncated,
        }
    }
}

/// A complete request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Request {
    /// The head.
    pub head: RequestHead,
    /// The decoded body.
    pub body: Body,
    /// Trailer fields (empty when none were sent).
    pub trailers: Headers,
    /// Timestamp of the first byte of the message.
    pub start_ns: u64,
    /// Timestamp of the bytes that completed the request.
    pub end_ns: u64,
}

/// A complete response.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Response {
    /// The head.
    pub head: ResponseHead,
    /// The decoded body.
    pub body: Body,
    /// Trailer fields, such as gRPC's `grpc-status` (empty when none were sent).
    pub trailers: Headers,
    /// Timestamp of the first byte of the message.
    pub start_ns: u64,
    /// Timestamp of the bytes that completed the response.
    pub end_ns: u64,
}

/// A request and its response.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Exchange {
    /// Exchange id.
    pub id: ExchangeId,
    /// The request (shared with the earlier [`Assembled::Request`]).
    pub request: Arc<Request>,
    /// The response.
    pub response: Response,
}

/// What the assembler hands to the pack stage.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Assembled {
    /// The request is complete (head and body): the moment to call `pre`.
    Request {
        /// Exchange id.
        id: ExchangeId,
        /// The request.
        request: Arc<Request>,
    },
    /// A decoded response body piece as it arrived: the moment to call `chunk`.
    ResponseBody {
        /// Exchange id.
        id: ExchangeId,
        /// Decoded bytes.
        data: Bytes,
        /// Timestamp of the bytes that carried it.
        ts_ns: u64,
    },
    /// The response is complete: the final `chunk` and `post`.
    Complete {
        /// Exchange id.
        id: ExchangeId,
        /// The exchange.
        exchange: Box<Exchange>,
    },
    /// The exchange will not complete (connection closed, aborted, upgrade).
    Incomplete {
        /// Exchange id.
        id: ExchangeId,
        /// The request, if it was complete.
        request: Option<Arc<Request>>,
        /// The response as far as it came, when its head had arrived: the body seen so far (its
        /// `total_len` what arrived, not what was announced), `end_ns` the last piece's time.
        response: Option<Box<Response>>,
        /// Why.
        reason: AbortReason,
    },
}

#[derive(Debug, Default)]
struct Partial {
    request_head: Option<RequestHead>,
    request_body: BodyBuf,
    request_trailers: Headers,
    request_start: u64,
    request: Option<Arc<Request>>,
    response_head: Option<ResponseHead>,
    response_body: BodyBuf,
    response_trailers: Headers,
    response_start: u64,
    /// Timestamp of the last response bytes seen (head or body piece).
    response_last: u64,
    response_end: Option<u64>,
}

impl Partial {
    /// Ends an exchange that will not complete.
    fn abandon(self, id: ExchangeId, reason: AbortReason) -> Assembled {
        let response = self.response_head.map(|head| {
            Box::new(Response {
                head,
                body: self.response_body.finish(),
                trailers: self.response_trailers,
                start_ns: self.response_start,
                end_ns: self.response_last,
            })
        });
        Assembled::Incomplete {
            id,
            request: self.request,
            response,
            reason,
        }
    }
}

/// Streaming assembly of one connection's events.
#[derive(Debug)]
pub struct Assembler {
    max_body: usize,
    open: HashMap<ExchangeId, Partial>,
}

impl Assembler {
    /// An assembler keeping at most `max_body` bytes of each body.
    #[must_use]
    pub fn new(max_body: usize) -> Self {
        Assembler {
            max_body,
            open: HashMap::new(),
        }
    }

    /// Gives back the room of exchanges that have finished (a connection gone quiet).
    pub fn release_buffers(&mut self) {
        self.open.shrink_to_fit();
    }

    /// Exchanges started but not finished.
    #[must_use]
    pub fn open_exchanges(&self) -> usize {
        self.open.len()
    }

    /// Takes one event; appends what became ready to `out`.
    pub fn push(&mut self, event: Event, out: &mut Vec<Assembled>) {
        match event {
            Event::RequestHead { id, head, ts_ns } => {
                self.open.insert(
                    id,
                    Partial {
                        request_head: Some(head),
                        request_start: ts_ns,
                        ..Partial::default()
                    },
                );
            }
            Event::RequestBody { id, data, .. } => {
                if let Some(p) = self.open.get_mut(&id) {
                    p.request_body.push_shared(data, self.max_body);
                }
            }
            Event::RequestTrailers { id, trailers, .. } => {
                if let Some(p) = self.open.get_mut(&id) {
                    p.request_trailers = trailers;
                }
            }
            Event::ResponseTrailers { id, trailers, .. } => {
                if let Some(p) = self.open.get_mut(&id) {
                    p.response_trailers = trailers;
                }
            }
            Event::RequestEnd { id, ts_ns } => {
                let Some(p) = self.open.get_mut(&id) else {
                    return;
                };
                let Some(head) = p.request_head.take() else {
                    return;
                };
                let request = Arc::new(Request {
                    head,
                    body: std::mem::take(&mut p.request_body).finish(),
                    trailers: std::mem::take(&mut p.request_trailers),
                    start_ns: p.request_start,
                    end_ns: ts_ns,
                });
                p.request = Some(Arc::clone(&request));
                out.push(Assembled::Request { id, request });
                if p.response_end.is_some() {
                    self.complete(id, out);
                }
            }
            Event::ResponseHead { id, head, ts_ns } => {
                if let Some(p) = self.open.get_mut(&id) {
                    p.response_head = Some(head);
                    p.response_start = ts_ns;
                    p.response_last = ts_ns;
                }
            }
            Event::ResponseBody { id, data, ts_ns } => {
                if let Some(p) = self.open.get_mut(&id) {
                    p.response_body.push(&data, self.max_body);
                    p.response_last = ts_ns;
                    out.push(Assembled::ResponseBody { id, data, ts_ns });
                }
            }
            Event::ResponseEnd { id, ts_ns } => {
                let Some(p) = self.open.get_mut(&id) else {
                    return;
                };
                p.response_end = Some(ts_ns);
                if p.request.is_some() {
                    self.complete(id, out);
                }
            }
            Event::Upgrade { id, .. } => {
                if let Some(p) = self.open.remove(&id) {
                    out.push(p.abandon(id, AbortReason::Upgraded));
                }
            }
            Event::Aborted { id, reason } => {
                if let Some(p) = self.open.remove(&id) {
                    out.push(p.abandon(id, reason));
                }
            }
            Event::Resync { .. } => {}
        }
    }

    fn complete(&mut self, id: ExchangeId, out: &mut Vec<Assembled>) {
        let Some(p) = self.open.remove(&id) else {
            return;
        };
        let (Some(request), Some(head), Some(end_ns)) =
            (p.request, p.response_head, p.response_end)
        else {
            return;
        };
        out.push(Assembled::Complete {
            id,
            exchange: Box::new(Exchange {
                id,
                request,
                response: Response {
                    head,
                    body: p.response_body.finish(),
                    trailers: p.response_trailers,
                    start_ns: p.response_start,
                    end_ns,
                },
            }),
        });
    }
}
