//! What the pack stage hands the sinks (the contract between them): one finished exchange, as
//! structured data. Each sink formats it for itself.

use std::sync::Arc;

use taskless_pack_runtime::{Dimension, Timing};

use crate::flows::Identity;

/// One exchange that went through the packs.
#[derive(Debug, Clone)]
pub struct FinishedExchange {
    /// The id packs saw (32 lower-case hex).
    pub request_id: String,
    /// What the packs captured, in the order they captured it.
    pub dimensions: Vec<Dimension>,
    /// Names of the packs skipped for this exchange because their worker was behind (shed);
    /// empty when every pack that could run on it ran.
    pub skipped: Vec<String>,
    /// The connection it was made on.
    pub identity: Arc<Identity>,
    /// The request method.
    pub method: String,
    /// The request's URL as packs saw it (`scheme://authority/target`), query included: a sink
    /// that writes it redacts it first (`taskless_url::redact_url`).
    pub url: String,
    /// The request's domain (the host packs saw).
    pub domain: String,
    /// The response status, when a response head was seen.
    pub status: Option<u16>,
    /// Kernel timestamps of the exchange, as Unix time.
    pub timing: Timing,
    /// Whether the response was complete (false: the exchange ended without one).
    pub complete: bool,
    /// Whether a head had fields left out (an HTTP/2 connection joined mid-way, whose HPACK
    /// table entries from before the join are unknown): what is present is what was sent.
    pub partial: bool,
}

impl FinishedExchange {
    /// The server the exchange was addressed to: the TLS server name, else the request's host.
    #[must_use]
    pub fn server_name(&self) -> Option<&str> {
        self.identity
            .server_name
            .as_deref()
            .or_else(|| (!self.domain.is_empty()).then_some(self.domain.as_str()))
    }
}
