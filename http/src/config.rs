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

/// Declares [`ConnectionStats`]: each counter once, with its name in [`ConnectionStats::fields`]
/// and its sum in [`ConnectionStats::add`].
macro_rules! connection_stats {
    ($( $(#[$doc:meta])* $field:ident ),* $(,)?) => {
        /// Counters of one connection: everything the parser skipped, lost or could not decode.
        #[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
        pub struct ConnectionStats {
            $( $(#[$doc])* pub $field: u64, )*
        }

        impl ConnectionStats {
            /// Every counter with its name, in declaration order.
            #[must_use]
            pub fn fields(&self) -> Vec<(&'static str, u64)> {
                vec![$( (stringify!($field), self.$field), )*]
            }

            /// Adds `other`'s counts to these (totals over many connections).
            pub fn add(&mut self, other: &Self) {
                $( self.$field += other.$field; )*
            }
        }
    };
}

connection_stats! {
    /// Times a flow had to find the next message boundary.
    resyncs,
    /// Bytes skipped while resynchronising (lost bytes included).
    bytes_skipped,
    /// Bodies whose `Content-Encoding` could not be decoded (unknown coding or corrupt data).
    decode_errors,
    /// Bodies whose decoded size reached [`Config::max_decoded_body`].
    decode_limited,
    /// HTTP/2 header blocks that could not be decoded (HPACK errors, unknown dynamic entries).
    hpack_errors,
    /// Exchanges whose request head was parsed.
    exchanges,
    /// 1xx interim responses seen (100-continue, 103 Early Hints).
    interim_responses,
    /// Responses that matched no known request (the connection was joined mid-stream).
    orphan_responses,
    /// HTTP/2 streams that were skipped (no request head seen, or too many streams).
    h2_streams_skipped,
    /// gRPC length-prefixed messages seen in HTTP/2 bodies.
    grpc_messages,
}
