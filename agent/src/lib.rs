//! taskless-agent: sees the plaintext of a program's TLS calls through eBPF, rebuilds the HTTP
//! exchanges and runs Taskless packs over them. `main.rs` only wires the command line to these
//! modules; see docs/ARCHITECTURE.md for the path the data takes.

pub mod capture;
pub mod cli;
pub mod clock;
pub mod discovery;
pub mod engine;
pub mod flows;
pub mod pack_cmd;
pub mod pipeline;
pub mod probes;
pub mod record;
pub mod replay;
pub mod run;
pub mod sinks;
pub mod sockets;
pub mod watch;
