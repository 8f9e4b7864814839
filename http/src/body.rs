//! What the HTTP/1 and HTTP/2 state machines share: the event context and a message body that
//! decodes and emits itself piece by piece.

use bytes::Bytes;

use crate::arena::Arena;
use crate::config::{Config, ConnectionStats};
use crate::decode::{BodyDecoder, Coding};
use crate::headers::Headers;
use crate::types::{Event, ExchangeId};

/// Everything a protocol state machine needs to emit events.
pub(crate) struct Ctx<'a> {
    pub config: &'a Config,
    pub stats: &'a mut ConnectionStats,
    pub next_id: &'a mut ExchangeId,
    pub out: &'a mut Vec<Event>,
    /// Where the bytes of emitted heads and body pieces are copied.
    pub arena: &'a mut Arena,
}

impl Ctx<'_> {
    /// Allocates the next exchange id.
    pub fn new_exchange(&mut self) -> ExchangeId {
        let id = *self.next_id;
        *self.next_id += 1;
        self.stats.exchanges += 1;
        id
    }
}

/// Request or response side of an exchange.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Side {
    Request,
    Response,
}

/// The decoder for a message whose head is `headers` (`None`: the body is passed through as
/// sent); removes `content-encoding` and `content-length` from `headers` when the body will be
/// decoded.
pub(crate) fn decoder_for(headers: &mut Headers, ctx: &mut Ctx<'_>) -> Option<Box<BodyDecoder>> {
    match Coding::from_header(headers.get("content-encoding")) {
        Ok(Coding::Identity) => None,
        Ok(coding) => {
            headers.retain(|name, _| name != "content-encoding" && name != "content-length");
            Some(Box::new(BodyDecoder::new(
                coding,
                ctx.config.max_decoded_body,
            )))
        }
        Err(e) => {
            tracing::debug!(error = %e, "body left encoded");
            ctx.stats.decode_errors += 1;
            // Unknown codings are passed through as sent, headers intact.
            None
        }
    }
}

/// A message body being received: decodes pieces and emits them for exchange `id` (or drops them
/// when the message belongs to no known exchange).
#[derive(Debug)]
pub(crate) struct MessageBody {
    pub id: Option<ExchangeId>,
    pub side: Side,
    /// `None` for a body passed through as sent (boxed: most bodies need none, and the state
    /// machines move this struct at every step).
    decoder: Option<Box<BodyDecoder>>,
    /// Set once a decoding failure has been counted.
    failed: bool,
}

impl MessageBody {
    pub fn new(id: Option<ExchangeId>, side: Side, decoder: Option<Box<BodyDecoder>>) -> Self {
        MessageBody {
            id,
            side,
            decoder,
            failed: false,
        }
    }

    /// Emits the decoded form of `data`.
    pub fn data(&mut self, data: &[u8], ts_ns: u64, ctx: &mut Ctx<'_>) {
        let Some(id) = self.id else { return };
        let Some(decoder) = &mut self.decoder else {
            if !data.is_empty() {
                let data = ctx.arena.copy(data);
                self.push_piece(id, data, ts_ns, ctx);
            }
            return;
        };
        let mut decoded = Vec::new();
        decoder.push(data, &mut decoded);
        self.emit(id, decoded, ts_ns, ctx);
    }

    /// Emits the trailer fields of this message (before its end).
    pub fn trailers(&self, trailers: Headers, ts_ns: u64, ctx: &mut Ctx<'_>) {
        let Some(id) = self.id else { return };
        ctx.out.push(match self.side {
            Side::Request => Event::RequestTrailers {
                id,
                trailers,
                ts_ns,
            },
            Side::Response => Event::ResponseTrailers {
                id,
                trailers,
                ts_ns,
            },
        });
    }

    /// Bytes of the body were lost: the decoded stream cannot go on for compressed bodies.
    pub fn lost(&mut self, ctx: &mut Ctx<'_>) {
        if let Some(decoder) = &mut self.decoder
            && decoder.is_transforming()
            && !self.failed
        {
            **decoder = BodyDecoder::failed(crate::decode::DecodeError::Corrupt {
                coding: decoder.coding(),
                message: "bytes lost".into(),
            });
            self.failed = true;
            ctx.stats.decode_errors += 1;
        }
    }

    /// The body is complete: emits the last decoded bytes and the end event.
    pub fn end(mut self, ts_ns: u64, ctx: &mut Ctx<'_>) {
        let Some(id) = self.id else { return };
        if let Some(decoder) = &mut self.decoder {
            let mut decoded = Vec::new();
            decoder.finish(&mut decoded);
            self.emit(id, decoded, ts_ns, ctx);
        }
        ctx.out.push(match self.side {
            Side::Request => Event::RequestEnd { id, ts_ns },
            Side::Response => Event::ResponseEnd { id, ts_ns },
        });
    }

    fn emit(&mut self, id: ExchangeId, data: Vec<u8>, ts_ns: u64, ctx: &mut Ctx<'_>) {
        if !self.failed
            && let Some(err) = self.decoder.as_ref().and_then(|d| d.error())
        {
            self.failed = true;
            match err {
                crate::decode::DecodeError::TooLarge { .. } => ctx.stats.decode_limited += 1,
                _ => ctx.stats.decode_errors += 1,
            }
        }
        if data.is_empty() {
            return;
        }
        self.push_piece(id, Bytes::from(data), ts_ns, ctx);
    }

    fn push_piece(&self, id: ExchangeId, data: Bytes, ts_ns: u64, ctx: &mut Ctx<'_>) {
        ctx.out.push(match self.side {
            Side::Request => Event::RequestBody { id, data, ts_ns },
            Side::Response => Event::ResponseBody { id, data, ts_ns },
        });
    }
}
