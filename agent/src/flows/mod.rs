//! The flows stage: per-connection state.
//!
//! Takes: capture's [`Record`](crate::capture::Record)s. Keeps, per TLS connection, its
//! [`Identity`] (process, fd, addresses, server name, cgroup) and the two ordered byte streams fed
//! to the HTTP parser. Gives: the [`Moment`]s of each exchange (request complete, response head,
//! body pieces, complete or incomplete) to the pack stage, through a callback.

mod identity;
pub mod k8s;
mod moment;
pub mod pods;
mod state;

pub use identity::{Identity, K8s, Role};
pub use moment::{ExchangeKey, Moment};
pub use state::{FlowStats, Flows, IDLE_TIMEOUT_NS};
