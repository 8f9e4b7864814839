//! Streaming `Content-Encoding` decoding with a decompression-bomb bound.
//!
//! Each decoder writes into a sink that refuses bytes past the per-message bound, so one small
//! compressed piece can never expand into more memory than the bound, and window sizes are capped
//! (zstd) so a crafted frame header cannot make the decoder allocate gigabytes.

use std::io::{self, Write};

use flate2::write::{DeflateDecoder, GzDecoder, ZlibDecoder};
use thiserror::Error;

/// Largest zstd window accepted (8 MiB, what RFC 8878 asks HTTP clients to support).
const ZSTD_WINDOW_LOG_MAX: u32 = 23;
/// Brotli decoder buffer.
const BROTLI_BUFFER: usize = 16 << 10;

/// A `Content-Encoding` this crate decodes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Coding {
    /// No coding, or `identity`.
    Identity,
    /// `gzip` / `x-gzip`.
    Gzip,
    /// `deflate`: zlib, or raw deflate as some servers send it.
    Deflate,
    /// `br`.
    Brotli,
    /// `zstd`.
    Zstd,
}

/// Why a body could not be decoded.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum DecodeError {
    /// The `Content-Encoding` is not one this crate decodes (or several codings are stacked).
    #[error("unsupported content-encoding {0:?}")]
    Unsupported(String),
    /// The encoded data is corrupt.
    #[error("corrupt {coding:?} data: {message}")]
    Corrupt {
        /// The coding.
        coding: Coding,
        /// What the decoder said.
        message: String,
    },
    /// The decoded body reached the configured bound.
    #[error("decoded body exceeds {limit} bytes")]
    TooLarge {
        /// The bound.
        limit: u64,
    },
}

impl Coding {
    /// Parses a `Content-Encoding` header value. `None` (no header) is identity.
    ///
    /// # Errors
    /// [`DecodeError::Unsupported`] for unknown or stacked codings.
    pub fn from_header(value: Option<&str>) -> Result<Coding, DecodeError> {
        let Some(value) = value else {
            return Ok(Coding::Identity);
        };
        let mut found = Coding::Identity;
        for part in value.split(',').map(str::trim).filter(|p| !p.is_empty()) {
            let coding = match part.to_ascii_lowercase().as_str() {
                "identity" => continue,
                "gzip" | "x-gzip" => Coding::Gzip,
                "deflate" => Coding::Deflate,
                "br" => Coding::Brotli,
                "zstd" => Coding::Zstd,
                _ => return Err(DecodeError::Unsupported(value.to_owned())),
            };
            if found != Coding::Identity {
                return Err(DecodeError::Unsupported(value.to_owned()));
            }
            found = coding;
        }
        Ok(found)
    }
}

/// Output buffer that accepts at most `room` bytes in total.
#[derive(Debug)]
struct Sink {
    buf: Vec<u8>,
    room: u64,
    hit_limit: bool,
}

impl Write for Sink {
    fn write(&mut self, data: &[u8]) -> io::Result<usize> {
        if data.is_empty() {
            return Ok(0);
        }
        if self.room == 0 {
            self.hit_limit = true;
            return Err(io::Error::other("decoded body limit reached"));
        }
        let n = usize::try_from(self.room).map_or(data.len(), |room| room.min(data.len()));
        self.buf.extend_from_slice(&data[..n]);
        self.room -= n as u64;
        Ok(n)
    }

    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

enum Inner {
    Identity,
    /// `deflate` before its first two bytes tell zlib from raw deflate.
    DeflateSniff(Vec<u8>),
    Gzip(Box<GzDecoder<Sink>>),
    Zlib(Box<ZlibDecoder<Sink>>),
    RawDeflate(Box<DeflateDecoder<Sink>>),
    Brotli(Box<brotli::DecompressorWriter<Sink>>),
    Zstd(Box<zstd::stream::write::Decoder<'static, Sink>>),
    /// Decoding stopped (error or bound); the rest of the body is only counted.
    Stopped,
}

/// Decodes one message body piece by piece.
pub struct BodyDecoder {
    coding: Coding,
    inner: Inner,
    limit: u64,
    error: Option<DecodeError>,
}

impl std::fmt::Debug for BodyDecoder {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("BodyDecoder")
            .field("coding", &self.coding)
            .field("error", &self.error)
            .finish_non_exhaustive()
    }
}

fn sink(limit: u64) -> Sink {
    Sink {
        buf: Vec::new(),
        room: limit,
        hit_limit: false,
    }
}

impl BodyDecoder {
    /// A decoder for `coding` that emits at most `limit` decoded bytes.
    #[must_use]
    pub fn new(coding: Coding, limit: u64) -> Self {
        let mut error = None;
        let inner = match coding {
            Coding::Identity => Inner::Identity,
            Coding::Gzip => Inner::Gzip(Box::new(GzDecoder::new(sink(limit)))),
            Coding::Deflate => Inner::DeflateSniff(Vec::new()),
            Coding::Brotli => Inner::Brotli(Box::new(brotli::DecompressorWriter::new(
                sink(limit),
                BROTLI_BUFFER,
            ))),
            Coding::Zstd => match zstd::stream::write::Decoder::new(sink(limit)) {
                Ok(mut dec) => match dec.window_log_max(ZSTD_WINDOW_LOG_MAX) {
                    Ok(()) => Inner::Zstd(Box::new(dec)),
                    Err(e) => {
                        error = Some(corrupt(coding, &e));
                        Inner::Stopped
                    }
                },
                Err(e) => {
                    error = Some(corrupt(coding, &e));
                    Inner::Stopped
                }
            },
        };
        BodyDecoder {
            coding,
            inner,
            limit,
            error,
        }
    }

    /// A decoder that decodes nothing and reports `error` (for unsupported codings).
    #[must_use]
    pub fn failed(error: DecodeError) -> Self {
        BodyDecoder {
            coding: Coding::Identity,
            inner: Inner::Stopped,
            limit: 0,
            error: Some(error),
        }
    }

    /// The coding being decoded.
    #[must_use]
    pub fn coding(&self) -> Coding {
        self.coding
    }

    /// Whether the decoder transforms the bytes (anything but identity).
    #[must_use]
    pub fn is_transforming(&self) -> bool {
        self.coding != Coding::Identity
    }

    /// Why decoding stopped, if it did.
    #[must_use]
    pub fn error(&self) -> Option<&DecodeError> {
        self.error.as_ref()
    }

    /// Feeds encoded bytes; appends the decoded bytes produced so far to `out`.
    /// Returns `true` when decoding stopped during this call (error or bound).
    pub fn push(&mut self, input: &[u8], out: &mut Vec<u8>) -> bool {
        if input.is_empty() {
            return false;
        }
        if let Inner::DeflateSniff(pending) = &mut self.inner {
            pending.extend_from_slice(input);
            if pending.len() < 2 {
                return false;
            }
            let head = std::mem::take(pending);
            let is_zlib =
                head[0] & 0x0f == 8 && (u16::from(head[0]) << 8 | u16::from(head[1])) % 31 == 0;
            self.inner = if is_zlib {
                Inner::Zlib(Box::new(ZlibDecoder::new(sink(self.limit))))
            } else {
                Inner::RawDeflate(Box::new(DeflateDecoder::new(sink(self.limit))))
            };
            return self.push(&head, out);
        }
        let result = match &mut self.inner {
            Inner::Identity => {
                out.extend_from_slice(input);
                return false;
            }
            Inner::Stopped | Inner::DeflateSniff(_) => return false,
            Inner::Gzip(d) => d.write_all(input).and_then(|()| d.flush()),
            Inner::Zlib(d) => d.write_all(input).and_then(|()| d.flush()),
            Inner::RawDeflate(d) => d.write_all(input).and_then(|()| d.flush()),
            Inner::Brotli(d) => d.write_all(input).and_then(|()| d.flush()),
            Inner::Zstd(d) => d.write_all(input).and_then(|()| d.flush()),
        };
        self.drain(out);
        self.settle(result)
    }

    /// The body ended: appends the last decoded bytes to `out`. Returns `true` when the encoded
    /// data turned out incomplete or corrupt.
    pub fn finish(&mut self, out: &mut Vec<u8>) -> bool {
        let result = match &mut self.inner {
            Inner::Identity | Inner::Stopped => return false,
            Inner::DeflateSniff(pending) => {
                if pending.is_empty() {
                    return false;
                }
                let head = std::mem::take(pending);
                self.inner = Inner::RawDeflate(Box::new(DeflateDecoder::new(sink(self.limit))));
                if self.push(&head, out) {
                    return true;
                }
                return self.finish(out);
            }
            Inner::Gzip(d) => d.try_finish(),
            Inner::Zlib(d) => d.try_finish(),
            Inner::RawDeflate(d) => d.try_finish(),
            Inner::Brotli(d) => d.flush().and_then(|()| {
                d.close()
                    .map_err(|e| io::Error::new(io::ErrorKind::InvalidData, format!("{e:?}")))
            }),
            Inner::Zstd(d) => d.flush(),
        };
        self.drain(out);
        let stopped = self.settle(result);
        if !stopped {
            self.inner = Inner::Stopped;
        }
        stopped
    }

    fn sink_mut(&mut self) -> Option<&mut Sink> {
        match &mut self.inner {
            Inner::Gzip(d) => Some(d.get_mut()),
            Inner::Zlib(d) => Some(d.get_mut()),
            Inner::RawDeflate(d) => Some(d.get_mut()),
            Inner::Brotli(d) => Some(d.get_mut()),
            Inner::Zstd(d) => Some(d.get_mut()),
            Inner::Identity | Inner::Stopped | Inner::DeflateSniff(_) => None,
        }
    }

    fn drain(&mut self, out: &mut Vec<u8>) {
        if let Some(sink) = self.sink_mut() {
            if out.is_empty() {
                std::mem::swap(out, &mut sink.buf);
            } else {
                out.append(&mut sink.buf);
            }
        }
    }

    fn settle(&mut self, result: io::Result<()>) -> bool {
        let Err(e) = result else {
            return false;
        };
        let hit_limit = self.sink_mut().is_some_and(|s| s.hit_limit);
        self.error = Some(if hit_limit {
            DecodeError::TooLarge { limit: self.limit }
        } else {
            corrupt(self.coding, &e)
        });
        tracing::trace!(coding = ?self.coding, error = %e, "body decoding stopped");
        self.inner = Inner::Stopped;
        true
    }
}

fn corrupt(coding: Coding, e: &io::Error) -> DecodeError {
    DecodeError::Corrupt {
        coding,
        message: e.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use flate2::Compression;
    use flate2::write::{GzEncoder, ZlibEncoder};

    fn gzip(data: &[u8]) -> Vec<u8> {
        let mut e = GzEncoder::new(Vec::new(), Compression::default());
        e.write_all(data).expect("write");
        e.finish().expect("finish")
    }

    fn decode_pieces(
        coding: Coding,
        limit: u64,
        data: &[u8],
        piece: usize,
    ) -> (Vec<u8>, BodyDecoder) {
        let mut dec = BodyDecoder::new(coding, limit);
        let mut out = Vec::new();
        for chunk in data.chunks(piece) {
            dec.push(chunk, &mut out);
        }
        dec.finish(&mut out);
        (out, dec)
    }

    #[test]
    fn parses_content_encoding_header() {
        assert_eq!(Coding::from_header(None), Ok(Coding::Identity));
        assert_eq!(Coding::from_header(Some("GZIP")), Ok(Coding::Gzip));
        assert_eq!(
            Coding::from_header(Some("identity, br")),
            Ok(Coding::Brotli)
        );
        assert!(Coding::from_header(Some("gzip, br")).is_err());
        assert!(Coding::from_header(Some("compress")).is_err());
    }

    #[test]
    fn gzip_decodes_in_any_slicing() {
        let body: Vec<u8> = (0..50_000u32).flat_map(|i| i.to_le_bytes()).collect();
        let enc = gzip(&body);
        for piece in [1, 7, 100, enc.len()] {
            let (out, dec) = decode_pieces(Coding::Gzip, u64::MAX, &enc, piece);
            assert_eq!(out, body, "piece size {piece}");
            assert!(dec.error().is_none());
        }
    }

    #[test]
    fn deflate_accepts_zlib_and_raw() {
        let body = b"hello hello hello deflate".repeat(20);
        let mut z = ZlibEncoder::new(Vec::new(), Compression::default());
        z.write_all(&body).expect("write");
        let zlib = z.finish().expect("finish");
        let mut r = flate2::write::DeflateEncoder::new(Vec::new(), Compression::default());
        r.write_all(&body).expect("write");
        let raw = r.finish().expect("finish");
        assert_eq!(decode_pieces(Coding::Deflate, u64::MAX, &zlib, 1).0, body);
        assert_eq!(decode_pieces(Coding::Deflate, u64::MAX, &raw, 3).0, body);
    }

    #[test]
    fn brotli_and_zstd_decode() {
        let body = b"{\"choices\":[{\"delta\":\"streaming\"}]}\n".repeat(100);
        let mut br = Vec::new();
        {
            let mut w = brotli::CompressorWriter::new(&mut br, 4096, 5, 22);
            w.write_all(&body).expect("write");
        }
        let zs = zstd::encode_all(&body[..], 3).expect("zstd");
        assert_eq!(decode_pieces(Coding::Brotli, u64::MAX, &br, 5).0, body);
        assert_eq!(decode_pieces(Coding::Zstd, u64::MAX, &zs, 5).0, body);
    }

    #[test]
    fn bomb_is_cut_at_the_limit() {
        let bomb = gzip(&vec![0u8; 50 << 20]);
        assert!(bomb.len() < 100 << 10);
        let (out, dec) = decode_pieces(Coding::Gzip, 1 << 20, &bomb, 4096);
        assert_eq!(out.len(), 1 << 20);
        assert_eq!(dec.error(), Some(&DecodeError::TooLarge { limit: 1 << 20 }));
    }

    #[test]
    fn corrupt_data_is_reported_not_emitted_as_garbage() {
        let (out, dec) = decode_pieces(Coding::Gzip, u64::MAX, b"this is not gzip at all", 4);
        assert!(out.is_empty());
        assert!(matches!(dec.error(), Some(DecodeError::Corrupt { .. })));
    }

    #[test]
    fn truncated_gzip_is_an_error_at_finish() {
        let enc = gzip(&b"abc".repeat(1000));
        let (_, dec) = decode_pieces(Coding::Gzip, u64::MAX, &enc[..enc.len() - 4], 64);
        assert!(dec.error().is_some());
    }
}
