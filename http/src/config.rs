//! Limits of one connection's parser and the counters it keeps.

/// Limits of a [`crate::Connection`]. Every buffer the parser keeps is bounded by one of these.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Config {
    /// Per-message bytes of body the [`crate::Assembler`] keeps for packs; the true length and a
    /// `truncated` flag tell what was cut. Default 1 MiB.
    pub max_body: usize,
    /// Largest HTTP/1 message head, or HTTP/2 header block, that is parsed. Default 64 KiB.
    pub max_header_bytes: usize,
    /// Largest number of header fields in one head. Default 128.
    pub max_headers: usize,
    /// Decompression-bomb bound: at most this many decoded bytes per message; decoding stops
    /// there and the rest of the body is counted, not emitted. Default 64 MiB.
    pub max_decoded_body: u64,
    /// Largest HTTP/2 dynamic table a peer may ask for. Default 64 KiB.
    pub max_hpack_table: usize,
    /// Most HTTP/2 streams tracked at once; newer ones are skipped and counted. Default 1024.
    pub max_h2_streams: usize,
    /// Most HTTP/1 requests waiting for their response (pipelining); older ones are answered
    /// as aborted past this. Default 256.
    pub max_pipelined: usize,
}

impl Default for Config {
    fn default() -> Self {
        Config {
            max_body: 1 << 20,
            max_header_bytes: 64 << 10,
            max_headers: 128,
            max_decoded_body: 64 << 20,
            max_hpack_table: 64 << 10,
            max_h2_streams: 1024,
            max_pipelined: 256,
        }
    }
}

/// Counters of one connection: everything the parser skipped, lost or could not decode.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ConnectionStats {
    /// Times a flow had to find the next message boundary.
    pub resyncs: u64,
    /// Bytes skipped while resynchronising (lost bytes included).
    pub bytes_skipped: u64,
    /// Bodies whose `Content-Encoding` could not be decoded (unknown coding or corrupt data).
    pub decode_errors: u64,
    /// Bodies whose decoded size reached [`Config::max_decoded_body`].
    pub decode_limited: u64,
    /// HTTP/2 header blocks that could not be decoded, by reason; their streams are skipped.
    pub hpack_errors: BlockErrors,
    /// HTTP/2 heads (and trailer sections) emitted with fields left out: fields that refer to
    /// HPACK table entries inserted before the connection was joined or while bytes were lost,
    /// or fields past the configured limits. The head's `partial` flag is set.
    pub h2_partial_heads: u64,
    /// Fields left out of HTTP/2 heads because they refer to unknown table entries.
    pub h2_unknown_fields: u64,
    /// Exchanges whose request head was parsed.
    pub exchanges: u64,
    /// 1xx interim responses seen (100-continue, 103 Early Hints).
    pub interim_responses: u64,
    /// Responses that matched no known request (the connection was joined mid-stream).
    pub orphan_responses: u64,
    /// HTTP/2 streams that were skipped, by reason; each stream is counted once.
    pub h2_skipped_streams: StreamSkips,
    /// gRPC length-prefixed messages seen in HTTP/2 bodies.
    pub grpc_messages: u64,
}

/// HTTP/2 header blocks that could not be decoded, by [`crate::BlockError`].
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct BlockErrors {
    /// [`crate::BlockError::IndexOutOfRange`].
    pub index_out_of_range: u64,
    /// [`crate::BlockError::IntegerOverflow`].
    pub integer_overflow: u64,
    /// [`crate::BlockError::Truncated`].
    pub truncated: u64,
    /// [`crate::BlockError::Huffman`].
    pub huffman: u64,
    /// [`crate::BlockError::SizeUpdate`].
    pub size_update: u64,
    /// [`crate::BlockError::TooLarge`].
    pub too_large: u64,
    /// [`crate::BlockError::Sequence`].
    pub sequence: u64,
    /// [`crate::BlockError::Padding`].
    pub padding: u64,
}

impl BlockErrors {
    /// Counts one block.
    pub(crate) fn count(&mut self, e: crate::BlockError) {
        use crate::BlockError as E;
        *match e {
            E::IndexOutOfRange => &mut self.index_out_of_range,
            E::IntegerOverflow => &mut self.integer_overflow,
            E::Truncated => &mut self.truncated,
            E::Huffman => &mut self.huffman,
            E::SizeUpdate => &mut self.size_update,
            E::TooLarge => &mut self.too_large,
            E::Sequence => &mut self.sequence,
            E::Padding => &mut self.padding,
        } += 1;
    }

    /// Blocks not decoded, whatever the reason.
    #[must_use]
    pub fn total(&self) -> u64 {
        self.index_out_of_range
            + self.integer_overflow
            + self.truncated
            + self.huffman
            + self.size_update
            + self.too_large
            + self.sequence
            + self.padding
    }
}

/// Why an HTTP/2 stream was not followed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum StreamSkip {
    /// Its request head was sent before the connection was joined (or before lost bytes):
    /// its later frames, or its response, arrived without it.
    StartedUnseen,
    /// Its request head could not be decoded (see [`ConnectionStats::hpack_errors`]), or
    /// too little of it was known to tell a request head from trailers.
    UndecodableHead,
    /// More than [`Config::max_h2_streams`] streams were open.
    TooManyStreams,
    /// A server push (`PUSH_PROMISE`): its block keeps the HPACK state, the stream is not
    /// an exchange of the client's.
    Pushed,
    /// A request head on a stream already open, or from the side that sends responses.
    Invalid,
}

/// HTTP/2 streams skipped, by [`StreamSkip`].
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct StreamSkips {
    /// [`StreamSkip::StartedUnseen`].
    pub started_unseen: u64,
    /// [`StreamSkip::UndecodableHead`].
    pub undecodable_head: u64,
    /// [`StreamSkip::TooManyStreams`].
    pub too_many_streams: u64,
    /// [`StreamSkip::Pushed`].
    pub pushed: u64,
    /// [`StreamSkip::Invalid`].
    pub invalid: u64,
}

impl StreamSkips {
    pub(crate) fn count(&mut self, reason: StreamSkip) {
        *match reason {
            StreamSkip::StartedUnseen => &mut self.started_unseen,
            StreamSkip::UndecodableHead => &mut self.undecodable_head,
            StreamSkip::TooManyStreams => &mut self.too_many_streams,
            StreamSkip::Pushed => &mut self.pushed,
            StreamSkip::Invalid => &mut self.invalid,
        } += 1;
    }

    /// Streams skipped, whatever the reason.
    #[must_use]
    pub fn total(&self) -> u64 {
        self.started_unseen
            + self.undecodable_head
            + self.too_many_streams
            + self.pushed
            + self.invalid
    }
}
