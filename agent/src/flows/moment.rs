//! The moments of an exchange the flows stage hands to the pack stage (the contract between
//! them). Every moment names its exchange; the request and complete moments also carry the
//! connection's identity as it then stood.

use std::sync::Arc;

use taskless_http::{Bytes, Exchange, Request, Response};

use super::Identity;

/// An exchange, named by its connection's serial and its id within the connection.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct ExchangeKey {
    /// Connection serial.
    pub conn: u64,
    /// Exchange id within the connection.
    pub id: u64,
}

/// One moment of an exchange.
#[derive(Debug)]
pub enum Moment {
    /// The request is complete: `pre`.
    Request {
        /// Which exchange.
        key: ExchangeKey,
        /// The request.
        request: Arc<Request>,
        /// Its connection.
        identity: Arc<Identity>,
    },
    /// The final response head arrived (kept for `chunk` calls).
    ResponseHead {
        /// Which exchange.
        key: ExchangeKey,
        /// Status.
        status: u16,
        /// Headers, names lower-case.
        headers: Vec<(String, String)>,
    },
    /// A decoded piece of the response body: `chunk`.
    ResponseBody {
        /// Which exchange.
        key: ExchangeKey,
        /// The bytes.
        data: Bytes,
    },
    /// The response is complete: the closing `chunk`, `post`, and the finished exchange.
    Complete {
        /// Which exchange.
        key: ExchangeKey,
        /// The whole exchange.
        exchange: Box<Exchange>,
        /// Its connection, as it stands now (an fd may have been learnt since the request).
        identity: Arc<Identity>,
    },
    /// The exchange will not complete (its connection ended, or switched protocols): the
    /// response as far as it came goes through the closing `chunk` and `post`, flagged
    /// incomplete; without one, what `pre` captured is handed on.
    Incomplete {
        /// Which exchange.
        key: ExchangeKey,
        /// Whether the request had been complete.
        had_request: bool,
        /// The response as far as it came, when its head had arrived.
        response: Option<Box<Response>>,
        /// Its connection, as it stands now.
        identity: Arc<Identity>,
        /// The connection switched protocols after this exchange (`101`, `CONNECT`): its
        /// response is whole, only nothing after it is parsed.
        upgraded: bool,
    },
}

impl Moment {
    /// The exchange this moment belongs to.
    #[must_use]
    pub const fn key(&self) -> ExchangeKey {
        match self {
            Self::Request { key, .. }
            | Self::ResponseHead { key, .. }
            | Self::ResponseBody { key, .. }
            | Self::Complete { key, .. }
            | Self::Incomplete { key, .. } => *key,
        }
    }

    /// The response-head moment of exchange `key`.
    #[must_use]
    pub fn response_head(key: ExchangeKey, head: &taskless_http::ResponseHead) -> Self {
        Self::ResponseHead {
            key,
            status: head.status,
            headers: head
                .headers
                .iter()
                .map(|(name, value)| (name.to_owned(), value.to_owned()))
                .collect(),
        }
    }
}
