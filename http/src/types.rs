//! The records the parser emits: flows, heads and events.

use bytes::Bytes;

use crate::headers::Headers;
use crate::text::Text;

/// Direction of bytes relative to the observed process (`egress`, `ingress` in JSON).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Flow {
    /// Bytes the process wrote (`SSL_write`).
    Egress,
    /// Bytes the process read (`SSL_read`).
    Ingress,
}

impl Flow {
    /// The other direction.
    #[must_use]
    pub fn opposite(self) -> Self {
        match self {
            Flow::Egress => Flow::Ingress,
            Flow::Ingress => Flow::Egress,
        }
    }

    pub(crate) fn index(self) -> usize {
        match self {
            Flow::Egress => 0,
            Flow::Ingress => 1,
        }
    }
}

/// Identifier of one exchange: unique within a [`crate::Connection`], increasing in request order.
pub type ExchangeId = u64;

/// HTTP version of a message.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Version {
    /// HTTP/1.0.
    Http10,
    /// HTTP/1.1.
    Http11,
    /// HTTP/2.
    Http2,
}

impl Version {
    /// The version as written on the wire, e.g. `HTTP/1.1`.
    #[must_use]
    pub fn as_str(self) -> &'static str {
        match self {
            Version::Http10 => "HTTP/1.0",
            Version::Http11 => "HTTP/1.1",
            Version::Http2 => "HTTP/2",
        }
    }
}

/// The head of a request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RequestHead {
    /// Method, e.g. `GET`.
    pub method: Text,
    /// Path and query as sent (HTTP/1 request target or HTTP/2 `:path`).
    pub target: Text,
    /// `Host` header or `:authority`.
    pub authority: Option<Text>,
    /// `:scheme` for HTTP/2, or the scheme of an absolute-form HTTP/1 target.
    pub scheme: Option<Text>,
    /// Protocol version.
    pub version: Version,
    /// Header fields in the order sent; HTTP/2 pseudo-headers are not included. When the parser
    /// decoded the body, `content-encoding` and `content-length` are removed.
    pub headers: Headers,
    /// Some fields were left out: an HTTP/2 head that refers to HPACK table entries the parser
    /// never saw (a connection joined in the middle, or bytes lost), or a head past the
    /// configured limits. What is present is exactly what was sent; a pseudo-header field
    /// left out leaves `method` or `target` empty.
    pub partial: bool,
}

impl RequestHead {
    /// The first header called `name` (lower-case).
    #[must_use]
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers.get(name)
    }
}

/// The head of a response.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ResponseHead {
    /// Status code.
    pub status: u16,
    /// Reason phrase (empty for HTTP/2).
    pub reason: Text,
    /// Protocol version.
    pub version: Version,
    /// Header fields in the order sent; HTTP/2 pseudo-headers are not included. When the parser
    /// decoded the body, `content-encoding` and `content-length` are removed.
    pub headers: Headers,
    /// Some fields were left out (see [`RequestHead::partial`]); `status` is 0 when the
    /// `:status` field itself is unknown.
    pub partial: bool,
}

impl ResponseHead {
    /// The first header called `name` (lower-case).
    #[must_use]
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers.get(name)
    }
}

/// Why the parser skipped bytes to find its way again.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ResyncReason {
    /// Bytes were lost before them (a capture gap).
    Gap,
    /// The connection was joined in the middle: the bytes before the first message were skipped.
    MidStream,
    /// The bytes could not be parsed as HTTP.
    Malformed,
    /// A message head was larger than [`crate::Config::max_header_bytes`].
    HeadTooLarge,
}

/// Why an exchange will not complete.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum AbortReason {
    /// The connection closed before the exchange completed.
    ConnectionClosed,
    /// Bytes of the exchange were lost or could not be parsed.
    Resync,
    /// The HTTP/2 stream was reset (`RST_STREAM`) or refused (`GOAWAY`).
    StreamReset,
    /// The connection switched protocols (101 or CONNECT); HTTP parsing stopped.
    Upgraded,
    /// A response arrived for this request only after a later one was answered, or never.
    Unanswered,
}

/// What the parser reports, in the order it happened.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Event {
    /// A request head was parsed.
    RequestHead {
        /// Exchange id.
        id: ExchangeId,
        /// The head.
        head: RequestHead,
        /// Timestamp of the first byte of the message (HTTP/1) or of its HEADERS frame (HTTP/2).
        ts_ns: u64,
    },
    /// A decoded piece of a request body.
    RequestBody {
        /// Exchange id.
        id: ExchangeId,
        /// Decoded bytes.
        data: Bytes,
        /// Timestamp of the bytes that carried it.
        ts_ns: u64,
    },
    /// The trailer fields of a request (HTTP/1 chunked trailer section, HTTP/2 trailing
    /// HEADERS), just before its [`Event::RequestEnd`].
    RequestTrailers {
        /// Exchange id.
        id: ExchangeId,
        /// The trailer fields, in the order sent (names lower-case).
        trailers: Headers,
        /// Timestamp of the bytes that carried them.
        ts_ns: u64,
    },
    /// The request is complete.
    RequestEnd {
        /// Exchange id.
        id: ExchangeId,
        /// Timestamp of the bytes that completed it.
        ts_ns: u64,
    },
    /// The final (non-1xx) response head was parsed.
    ResponseHead {
        /// Exchange id.
        id: ExchangeId,
        /// The head.
        head: ResponseHead,
        /// Timestamp of the first byte of the message (HTTP/1) or of its HEADERS frame (HTTP/2).
        ts_ns: u64,
    },
    /// A decoded piece of a response body, emitted as it arrives.
    ResponseBody {
        /// Exchange id.
        id: ExchangeId,
        /// Decoded bytes.
        data: Bytes,
        /// Timestamp of the bytes that carried it.
        ts_ns: u64,
    },
    /// The trailer fields of a response (HTTP/1 chunked trailer section, HTTP/2 trailing HEADERS
    /// such as gRPC's `grpc-status`), just before its [`Event::ResponseEnd`].
    ResponseTrailers {
        /// Exchange id.
        id: ExchangeId,
        /// The trailer fields, in the order sent (names lower-case).
        trailers: Headers,
        /// Timestamp of the bytes that carried them.
        ts_ns: u64,
    },
    /// The response is complete.
    ResponseEnd {
        /// Exchange id.
        id: ExchangeId,
        /// Timestamp of the bytes that completed it.
        ts_ns: u64,
    },
    /// The connection switched protocols (101 Switching Protocols or a successful CONNECT): HTTP
    /// parsing stops on this connection.
    Upgrade {
        /// Exchange id of the request that asked for it.
        id: ExchangeId,
        /// The new protocol (`Upgrade` header, or `CONNECT`).
        protocol: String,
    },
    /// The parser skipped bytes of a flow to find the next message boundary.
    Resync {
        /// Which flow.
        flow: Flow,
        /// How many bytes were skipped or lost.
        skipped: u64,
        /// Why.
        reason: ResyncReason,
    },
    /// The exchange will not complete.
    Aborted {
        /// Exchange id.
        id: ExchangeId,
        /// Why.
        reason: AbortReason,
    },
}

impl Event {
    /// The exchange this event belongs to, if any.
    #[must_use]
    pub fn exchange_id(&self) -> Option<ExchangeId> {
        match self {
            Event::RequestHead { id, .. }
            | Event::RequestBody { id, .. }
            | Event::RequestTrailers { id, .. }
            | Event::RequestEnd { id, .. }
            | Event::ResponseHead { id, .. }
            | Event::ResponseBody { id, .. }
            | Event::ResponseTrailers { id, .. }
            | Event::ResponseEnd { id, .. }
            | Event::Upgrade { id, .. }
            | Event::Aborted { id, .. } => Some(*id),
            Event::Resync { .. } => None,
        }
    }
}
