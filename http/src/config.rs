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

/// Declares a struct of `u64` counters: each counter once, with its name in `fields()`, its sum
/// in `add()` and the sum of all of them in `total()`.
macro_rules! counters {
    ($(#[$m:meta])* $name:ident { $( $(#[$doc:meta])* $field:ident ),* $(,)? }) => {
        $(#[$m])*
        #[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
        pub struct $name {
            $( $(#[$doc])* pub $field: u64, )*
        }

        impl $name {
            /// Every counter with its name, in declaration order.
            #[must_use]
            pub fn fields(&self) -> Vec<(&'static str, u64)> {
                vec![$( (stringify!($field), self.$field), )*]
            }

            /// Adds `other`'s counts to these (totals over many connections).
            pub fn add(&mut self, other: &Self) {
                $( self.$field += other.$field; )*
            }

            /// All counts together.
            #[must_use]
            pub fn total(&self) -> u64 {
                0 $( + self.$field )*
            }
        }
    };
}

/// Counters of one connection: everything the parser skipped, lost or could not decode.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct ConnectionStats {
    /// The plain counters.
    pub counts: Counts,
    /// HTTP/2 header blocks that could not be decoded, by reason; their streams are skipped.
    pub hpack_errors: BlockErrors,
    /// HTTP/2 streams that were skipped, by reason; each stream is counted once.
    pub h2_skipped_streams: StreamSkips,
}

impl ConnectionStats {
    /// Every counter with its name: the plain ones, then each group's total under the group's
    /// name and, when the group counted anything, its reasons as `group_reason`.
    #[must_use]
    pub fn fields(&self) -> Vec<(String, u64)> {
        let mut out: Vec<(String, u64)> = self
            .counts
            .fields()
            .into_iter()
            .map(|(name, v)| (name.to_owned(), v))
            .collect();
        for (group, fields, total) in [
            (
                "hpack_errors",
                self.hpack_errors.fields(),
                self.hpack_errors.total(),
            ),
            (
                "h2_skipped_streams",
                self.h2_skipped_streams.fields(),
                self.h2_skipped_streams.total(),
            ),
        ] {
            out.push((group.to_owned(), total));
            if total > 0 {
                out.extend(
                    fields
                        .into_iter()
                        .filter(|(_, v)| *v > 0)
                        .map(|(reason, v)| (format!("{group}_{reason}"), v)),
                );
            }
        }
        out
    }

    /// Adds `other`'s counts to these (totals over many connections).
    pub fn add(&mut self, other: &Self) {
        self.counts.add(&other.counts);
        self.hpack_errors.add(&other.hpack_errors);
        self.h2_skipped_streams.add(&other.h2_skipped_streams);
    }
}

impl std::ops::Deref for ConnectionStats {
    type Target = Counts;
    fn deref(&self) -> &Counts {
        &self.counts
    }
}

impl std::ops::DerefMut for ConnectionStats {
    fn deref_mut(&mut self) -> &mut Counts {
        &mut self.counts
    }
}

counters! {
    /// The plain counters of [`ConnectionStats`].
    Counts {
        /// Times a flow had to find the next message boundary.
        resyncs,
        /// Bytes skipped while resynchronising (lost bytes included).
        bytes_skipped,
        /// Bodies whose `Content-Encoding` could not be decoded (unknown coding or corrupt data).
        decode_errors,
        /// Bodies whose decoded size reached [`Config::max_decoded_body`].
        decode_limited,
        /// HTTP/2 heads (and trailer sections) emitted with fields left out: fields that refer to
        /// HPACK table entries inserted before the connection was joined or while bytes were lost,
        /// or fields past the configured limits. The head's `partial` flag is set.
        h2_partial_heads,
        /// Fields left out of HTTP/2 heads because they refer to unknown table entries.
        h2_unknown_fields,
        /// Exchanges whose request head was parsed.
        exchanges,
        /// 1xx interim responses seen (100-continue, 103 Early Hints).
        interim_responses,
        /// Responses that matched no known request (the connection was joined mid-stream).
        orphan_responses,
        /// gRPC length-prefixed messages seen in HTTP/2 bodies.
        grpc_messages,
    }
}

counters! {
    /// HTTP/2 header blocks that could not be decoded, by [`crate::BlockError`].
    BlockErrors {
        /// [`crate::BlockError::IndexOutOfRange`].
        index_out_of_range,
        /// [`crate::BlockError::IntegerOverflow`].
        integer_overflow,
        /// [`crate::BlockError::Truncated`].
        truncated,
        /// [`crate::BlockError::Huffman`].
        huffman,
        /// [`crate::BlockError::SizeUpdate`].
        size_update,
        /// [`crate::BlockError::TooLarge`].
        too_large,
        /// [`crate::BlockError::Sequence`].
        sequence,
        /// [`crate::BlockError::Padding`].
        padding,
    }
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

counters! {
    /// HTTP/2 streams skipped, by [`StreamSkip`].
    StreamSkips {
        /// [`StreamSkip::StartedUnseen`].
        started_unseen,
        /// [`StreamSkip::UndecodableHead`].
        undecodable_head,
        /// [`StreamSkip::TooManyStreams`].
        too_many_streams,
        /// [`StreamSkip::Pushed`].
        pushed,
        /// [`StreamSkip::Invalid`].
        invalid,
    }
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
}
