//! Handling complete HTTP/2 frames: header blocks, DATA, RST_STREAM and GOAWAY.

use super::block::Decoded;
use super::frame::{self, FrameHeader};
use super::stream::{Part, Stream};
use super::{Block, Http2};
use crate::body::{Ctx, MessageBody, Side, decoder_for};
use crate::config::StreamSkip;
use crate::grpc::{GrpcCounter, is_grpc};
use crate::hpack::BlockError;
use crate::text::Text;
use crate::types::{AbortReason, Event, Flow, RequestHead, ResponseHead, Version};

/// Strips padding (and, for HEADERS, priority fields) from a frame payload.
fn unpad<'a>(hdr: &FrameHeader, payload: &'a [u8], priority_len: usize) -> Option<&'a [u8]> {
    let (pad, start) = if hdr.has(frame::FLAG_PADDED) {
        (usize::from(*payload.first()?), 1)
    } else {
        (0, 0)
    };
    let start = start + priority_len;
    let end = payload.len().checked_sub(pad)?;
    payload.get(start..end)
}

impl Http2 {
    pub(super) fn on_frame(
        &mut self,
        flow: Flow,
        hdr: FrameHeader,
        payload: &[u8],
        ts_ns: u64,
        ctx: &mut Ctx<'_>,
    ) {
        match hdr.kind {
            frame::HEADERS => {
                let priority = if hdr.has(frame::FLAG_PRIORITY) { 5 } else { 0 };
                let Some(fragment) = unpad(&hdr, payload, priority) else {
                    self.hpack_failed(flow, BlockError::Padding, ctx);
                    self.skip_stream(hdr.stream, StreamSkip::UndecodableHead, ctx);
                    return;
                };
                let block = Block {
                    stream: hdr.stream,
                    end_stream: hdr.has(frame::FLAG_END_STREAM),
                    push: false,
                    discard: false,
                    buf: Vec::new(),
                };
                let end_headers = hdr.has(frame::FLAG_END_HEADERS);
                self.start_block(flow, block, fragment, end_headers, ts_ns, ctx);
            }
            frame::PUSH_PROMISE => {
                let Some(fragment) = unpad(&hdr, payload, 4) else {
                    self.hpack_failed(flow, BlockError::Padding, ctx);
                    return;
                };
                // The promised stream id precedes the fragment.
                let at = usize::from(hdr.has(frame::FLAG_PADDED));
                if let Some(b) = payload.get(at..at + 4) {
                    let promised = u32::from_be_bytes([b[0], b[1], b[2], b[3]]) & 0x7fff_ffff;
                    self.ignore(promised, Some(StreamSkip::Pushed), ctx);
                }
                let block = Block {
                    stream: hdr.stream,
                    end_stream: false,
                    push: true,
                    discard: false,
                    buf: Vec::new(),
                };
                let end_headers = hdr.has(frame::FLAG_END_HEADERS);
                self.start_block(flow, block, fragment, end_headers, ts_ns, ctx);
            }
            frame::CONTINUATION => {
                let fi = flow.index();
                let Some(block) = self.flows[fi].block.take() else {
                    // The start of this block was not seen: what it inserted is unknown.
                    self.hpack_failed(flow, BlockError::Sequence, ctx);
                    self.skip_stream(hdr.stream, StreamSkip::StartedUnseen, ctx);
                    return;
                };
                if block.stream != hdr.stream {
                    self.flows[fi].block = Some(block);
                    self.hpack_failed(flow, BlockError::Sequence, ctx);
                    return;
                }
                let end_headers = hdr.has(frame::FLAG_END_HEADERS);
                if block.discard {
                    if !end_headers {
                        self.flows[fi].block = Some(block);
                    }
                    return;
                }
                if block.buf.len() + payload.len() > ctx.config.max_header_bytes {
                    let (stream, push) = (block.stream, block.push);
                    self.flows[fi].block = Some(block);
                    self.hpack_failed(flow, BlockError::TooLarge, ctx);
                    if !end_headers {
                        // Its remaining fragments are dropped as they come, not held.
                        self.flows[fi].block = Some(Block {
                            stream,
                            end_stream: false,
                            push,
                            discard: true,
                            buf: Vec::new(),
                        });
                    }
                    return;
                }
                self.start_block(flow, block, payload, end_headers, ts_ns, ctx);
            }
            frame::RST_STREAM => {
                if let Some(stream) = self.streams.remove(&hdr.stream) {
                    stream.abort(AbortReason::StreamReset, ctx);
                    // Frames already in flight may follow.
                    self.ignore(hdr.stream, None, ctx);
                }
            }
            frame::GOAWAY if self.is_request_flow(flow) == Some(false) => {
                // The server will not process client streams above `last`.
                let last = payload.get(..4).map_or(u32::MAX, |b| {
                    u32::from_be_bytes([b[0], b[1], b[2], b[3]]) & 0x7fff_ffff
                });
                let refused: Vec<u32> = self
                    .streams
                    .range(last.saturating_add(1)..)
                    .map(|(k, _)| *k)
                    .collect();
                for key in refused {
                    if let Some(stream) = self.streams.remove(&key) {
                        stream.abort(AbortReason::StreamReset, ctx);
                    }
                }
            }
            _ => {}
        }
    }

    /// Takes the next `fragment` of a header block: decodes the block once it is complete
    /// (straight from the frame when it fits in one), else keeps collecting.
    fn start_block(
        &mut self,
        flow: Flow,
        mut block: Block,
        fragment: &[u8],
        end_headers: bool,
        ts_ns: u64,
        ctx: &mut Ctx<'_>,
    ) {
        if end_headers && block.buf.is_empty() {
            self.finish_block(flow, &block, fragment, ts_ns, ctx);
            return;
        }
        block.buf.extend_from_slice(fragment);
        if end_headers {
            let buf = std::mem::take(&mut block.buf);
            self.finish_block(flow, &block, &buf, ts_ns, ctx);
        } else {
            self.flows[flow.index()].block = Some(block);
        }
    }

    /// A header block of `flow` could not be decoded: its table is forgotten (see the module
    /// docs) and the stream whose block was being collected is dropped.
    pub(super) fn hpack_failed(&mut self, flow: Flow, reason: BlockError, ctx: &mut Ctx<'_>) {
        tracing::debug!(?flow, %reason, "http/2 header block not decodable");
        ctx.stats.hpack_errors.count(reason);
        let fi = flow.index();
        self.flows[fi].hpack.forget();
        if let Some(block) = self.flows[fi].block.take()
            && !block.push
        {
            self.skip_stream(block.stream, StreamSkip::UndecodableHead, ctx);
        }
    }

    /// Stops following a stream (counted once, under `reason`).
    pub(super) fn skip_stream(&mut self, stream: u32, reason: StreamSkip, ctx: &mut Ctx<'_>) {
        if let Some(s) = self.streams.remove(&stream) {
            s.abort(AbortReason::Resync, ctx);
        }
        self.ignore(stream, Some(reason), ctx);
    }

    /// Aborts the streams that still expect bytes on `flow`.
    pub(super) fn abort_open_on(&mut self, flow: Flow, reason: AbortReason, ctx: &mut Ctx<'_>) {
        let is_request = self.is_request_flow(flow);
        let hit: Vec<u32> = self
            .streams
            .iter()
            .filter(|(_, s)| match is_request {
                Some(true) => !s.request.is_done(),
                Some(false) => !s.response.is_done(),
                None => true,
            })
            .map(|(k, _)| *k)
            .collect();
        for key in hit {
            if let Some(stream) = self.streams.remove(&key) {
                stream.abort(reason, ctx);
            }
        }
    }

    fn finish_block(
        &mut self,
        flow: Flow,
        block: &Block,
        fragment: &[u8],
        ts_ns: u64,
        ctx: &mut Ctx<'_>,
    ) {
        let fi = flow.index();
        let decoded = super::block::decode(
            &mut self.flows[fi].hpack,
            fragment,
            !block.push,
            (ctx.config.max_headers, ctx.config.max_header_bytes),
            ctx.arena,
        );
        let decoded = match decoded {
            Ok(Some(decoded)) => decoded,
            Ok(None) => return,
            Err(e) => {
                tracing::debug!(?flow, stream = block.stream, error = %e, "hpack block not decodable");
                ctx.stats.hpack_errors.count(e);
                if !block.push {
                    self.skip_stream(block.stream, StreamSkip::UndecodableHead, ctx);
                }
                return;
            }
        };
        if decoded.partial() {
            ctx.stats.h2_partial_heads += 1;
            ctx.stats.h2_unknown_fields += u64::from(decoded.unknown_fields);
        }
        let side = self.is_request_flow(flow);
        let tracked = self.streams.get(&block.stream);
        if let Some(method) = decoded.method() {
            self.on_request_head(flow, block, method, decoded, ts_ns, ctx);
        } else if decoded.status().is_some() {
            self.on_response_head(flow, block, decoded, ts_ns, ctx);
        } else if decoded.partial()
            && side == Some(true)
            && tracked.is_none()
            && decoded.has_request_pseudo()
        {
            // A request head whose `:method` is unknown.
            self.on_request_head(flow, block, Text::new(), decoded, ts_ns, ctx);
        } else if decoded.partial()
            && side == Some(false)
            && tracked.is_some_and(|s| matches!(s.response, Part::Pending))
        {
            // A response head whose `:status` is unknown (trailers follow a head).
            self.on_response_head(flow, block, decoded, ts_ns, ctx);
        } else if tracked.is_none() {
            // Neither a head nor the trailers of a followed stream: too little is known of it.
            let reason = if self.ignored.contains(&block.stream)
                || !decoded.partial()
                || side == Some(false)
            {
                StreamSkip::StartedUnseen
            } else {
                StreamSkip::UndecodableHead
            };
            self.skip_stream(block.stream, reason, ctx);
        } else if block.end_stream {
            // Trailers end the side they follow.
            if let Some(stream) = self.streams.get_mut(&block.stream) {
                let part = match side {
                    Some(true) => &mut stream.request,
                    Some(false) => &mut stream.response,
                    None => return,
                };
                if matches!(part, Part::Pending) {
                    // Trailers of a side whose head was never seen: it cannot complete.
                    self.skip_stream(block.stream, StreamSkip::Invalid, ctx);
                    return;
                }
                part.trailers(decoded.headers, ts_ns, ctx);
                part.end(ts_ns, ctx);
            }
            self.remove_if_complete(block.stream);
        }
    }

    fn on_request_head(
        &mut self,
        flow: Flow,
        block: &Block,
        method: Text,
        decoded: Decoded,
        ts_ns: u64,
        ctx: &mut Ctx<'_>,
    ) {
        match self.request_flow {
            None => self.request_flow = Some(flow),
            Some(rf) if rf != flow => {
                self.skip_stream(block.stream, StreamSkip::Invalid, ctx);
                return;
            }
            Some(_) => {}
        }
        if self.streams.contains_key(&block.stream) {
            self.skip_stream(block.stream, StreamSkip::Invalid, ctx);
            return;
        }
        if self.streams.len() >= ctx.config.max_h2_streams {
            self.ignore(block.stream, Some(StreamSkip::TooManyStreams), ctx);
            return;
        }
        // A new stream id (one reused after a skip is a new stream to the parser too).
        self.ignored.remove(&block.stream);
        let partial = decoded.partial();
        let id = ctx.new_exchange();
        let target = decoded.path().unwrap_or_default();
        let authority = decoded.authority();
        let scheme = decoded.scheme();
        let mut headers = decoded.headers;
        let grpc = is_grpc(headers.get("content-type")).then(GrpcCounter::default);
        let decoder = decoder_for(&mut headers, ctx);
        let head = RequestHead {
            method,
            target,
            authority,
            scheme,
            version: Version::Http2,
            headers,
            partial,
        };
        tracing::trace!(
            ?flow,
            id,
            stream = block.stream,
            partial,
            "http/2 request head"
        );
        ctx.out.push(Event::RequestHead { id, head, ts_ns });
        let mut stream = Stream::new(id);
        stream.request = Part::Open {
            body: MessageBody::new(Some(id), Side::Request, decoder),
            grpc,
        };
        if block.end_stream {
            stream.request.end(ts_ns, ctx);
        }
        self.streams.insert(block.stream, stream);
    }

    fn on_response_head(
        &mut self,
        flow: Flow,
        block: &Block,
        decoded: Decoded,
        ts_ns: u64,
        ctx: &mut Ctx<'_>,
    ) {
        if self.request_flow.is_none() {
            self.request_flow = Some(flow.opposite());
        }
        if self.request_flow == Some(flow) {
            return;
        }
        if !self.streams.contains_key(&block.stream) {
            if !self.ignored.contains(&block.stream) {
                ctx.stats.orphan_responses += 1;
            }
            self.ignore(block.stream, Some(StreamSkip::StartedUnseen), ctx);
            return;
        }
        let status = match decoded.status().map(str::parse::<u16>) {
            Some(Ok(status)) => status,
            // Left out of a partial head: unknown, not guessed.
            None if decoded.partial() => 0,
            _ => {
                self.skip_stream(block.stream, StreamSkip::UndecodableHead, ctx);
                return;
            }
        };
        let Some(stream) = self.streams.get_mut(&block.stream) else {
            return;
        };
        if (100..200).contains(&status) {
            ctx.stats.interim_responses += 1;
            return;
        }
        if !matches!(stream.response, Part::Pending) {
            return;
        }
        let id = stream.id;
        let partial = decoded.partial();
        let mut headers = decoded.headers;
        let grpc = is_grpc(headers.get("content-type")).then(GrpcCounter::default);
        let decoder = decoder_for(&mut headers, ctx);
        let head = ResponseHead {
            status,
            reason: Text::new(),
            version: Version::Http2,
            headers,
            partial,
        };
        ctx.out.push(Event::ResponseHead { id, head, ts_ns });
        stream.response = Part::Open {
            body: MessageBody::new(Some(id), Side::Response, decoder),
            grpc,
        };
        if block.end_stream {
            stream.response.end(ts_ns, ctx);
        }
        self.remove_if_complete(block.stream);
    }

    /// Bytes of a DATA frame; `last` is set with the frame's last data bytes.
    pub(super) fn data(
        &mut self,
        flow: Flow,
        hdr: FrameHeader,
        bytes: &[u8],
        last: bool,
        ts_ns: u64,
        ctx: &mut Ctx<'_>,
    ) {
        let stream = match self.is_request_flow(flow) {
            Some(is_request) => self.streams.get_mut(&hdr.stream).map(|s| (is_request, s)),
            None => None,
        };
        let Some((is_request, stream)) = stream else {
            // Its head was not seen (or it was skipped already).
            self.ignore(hdr.stream, Some(StreamSkip::StartedUnseen), ctx);
            return;
        };
        let part = if is_request {
            &mut stream.request
        } else {
            &mut stream.response
        };
        if matches!(part, Part::Pending) {
            // Body before its head: the side cannot complete.
            if last && hdr.has(frame::FLAG_END_STREAM) {
                self.skip_stream(hdr.stream, StreamSkip::Invalid, ctx);
            }
            return;
        }
        if !bytes.is_empty() {
            part.data(bytes, ts_ns, ctx);
        }
        if last && hdr.has(frame::FLAG_END_STREAM) {
            part.end(ts_ns, ctx);
            self.remove_if_complete(hdr.stream);
        }
    }

    fn remove_if_complete(&mut self, stream: u32) {
        if self.streams.get(&stream).is_some_and(Stream::is_complete) {
            self.streams.remove(&stream);
        }
    }
}
