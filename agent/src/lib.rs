//! taskless-agent: sees the plaintext of a program's TLS calls through eBPF, rebuilds the HTTP
//! exchanges and runs Taskless packs over them. `main.rs` only wires these stages together; see
//! docs/ARCHITECTURE.md for the path the data takes.

pub mod capture;
pub mod cli;
pub mod clock;
pub mod discovery;
pub mod probes;
