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
    /// HTTP/2 header blocks that could not be decoded (HPACK errors, unknown dynamic entries).
    pub hpack_errors: u64,
    /// Exchanges whose request head was parsed.
    pub exchanges: u64,
    /// 1xx interim responses seen (100-continue, 103 Early Hints).
    pub interim_responses: u64,
    /// Responses that matched no known request (the connection was joined mid-stream).
    pub orphan_responses: u64,
    /// HTTP/2 streams that were skipped (no request head seen, or too many streams).
    pub h2_streams_skipped: u64,
    /// gRPC length-prefixed messages seen in HTTP/2 bodies.
    pub grpc_messages: u64,
}
