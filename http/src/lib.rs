//! Sans-I/O reconstruction of HTTP exchanges from the two byte streams of one connection.
//!
//! A [`Connection`] is fed the bytes a process wrote ([`Flow::Egress`]) and read
//! ([`Flow::Ingress`]) in whatever slices the TLS calls delivered, each with a timestamp. It works
//! out whether the connection speaks HTTP/1.x or HTTP/2 and whether the process is the client or
//! the server, and emits [`Event`]s: request and response heads, decoded body pieces as they
//! arrive, trailers, ends, upgrades, resynchronisations and aborts. An [`Assembler`] turns those
//! events into whole [`Exchange`]s for the pack stage.
//!
//! Events own their data but cost few allocations: each message head is copied once into a
//! buffer shared by its [`Headers`] and [`Text`] fields, and body pieces are [`Bytes`] views
//! into a per-connection buffer that is reused once the pieces are dropped.
//!
//! ```
//! use taskless_http::{Assembled, Assembler, Config, Connection, Flow};
//!
//! let mut conn = Connection::new(Config::default());
//! let mut events = Vec::new();
//! conn.feed(Flow::Egress, b"GET /v1/models HTTP/1.1\r\nHost: api.example.com\r\n\r\n", 1, &mut events);
//! conn.feed(Flow::Ingress, b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\n{}", 2, &mut events);
//!
//! let mut assembler = Assembler::new(1 << 20);
//! let mut ready = Vec::new();
//! for event in events {
//!     assembler.push(event, &mut ready);
//! }
//! let Some(Assembled::Complete { exchange, .. }) = ready.last() else { panic!("no exchange") };
//! assert_eq!(exchange.request.head.target, "/v1/models");
//! assert_eq!(exchange.response.body.data, &b"{}"[..]);
//! ```
//!
//! Nothing here does I/O, and every buffer is bounded by [`Config`], whatever the input.

mod arena;
mod assembler;
mod body;
mod config;
mod connection;
pub mod decode;
pub mod grpc;
mod h1;
mod h2;
pub mod har;
mod headers;
mod hpack;
mod text;
mod types;

pub use assembler::{Assembled, Assembler, Body, Exchange, Request, Response};
pub use bytes::Bytes;
pub use config::{BlockErrors, Config, ConnectionStats, StreamSkip, StreamSkips};
pub use connection::Connection;
pub use headers::{Headers, Iter as HeadersIter};
pub use hpack::BlockError;
pub use text::Text;
pub use types::{
    AbortReason, Event, ExchangeId, Flow, RequestHead, ResponseHead, ResyncReason, Version,
};
