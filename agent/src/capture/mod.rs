//! The capture stage: what the kernel saw, as [`Record`]s.
//!
//! Takes: the eBPF programs' ring buffer (plaintext of TLS calls, connection and socket ends,
//! server names, processes with new code). Gives: decoded [`Record`]s to the flows stage, one at
//! a time on the reader's thread, and processes with new code to the [`watch::Watcher`].
//!
//! Which processes are traced is decided here too: [`discovery`] finds the TLS stacks a process
//! uses through the [`providers`] table (one module per stack: [`openssl`], [`gotls`],
//! [`gnutls`], [`nss`], [`static_openssl`]; and those recognised but not supported,
//! [`unsupported`]), [`probes`] loads the eBPF object and attaches each provider's programs, and
//! [`watch`] keeps the set of traced processes current.

pub mod btf;
pub mod code;
pub mod discovery;
pub mod gnutls;
pub mod gotls;
pub mod nss;
pub mod openssl;
pub mod probes;
pub mod providers;
pub mod reader;
pub mod record;
pub mod ring;
pub mod rustls;
pub mod signature;
pub mod static_openssl;
pub mod unsupported;
pub mod watch;

pub use record::{DataRecord, DecodeError, Record};
