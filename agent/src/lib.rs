//! taskless-agent: sees the plaintext of a program's TLS calls through eBPF, rebuilds the HTTP
//! exchanges and runs Taskless packs over them.
//!
//! The data path, one stage per folder, each importing only from the stages before it:
//! [`capture`] (kernel records) → [`flows`] (connections, identity, HTTP parsing) → [`packs`]
//! (pack hooks per exchange) → [`sinks`] (console, NDJSON, OTLP, Prometheus). [`record`] writes
//! and reads recordings;
//! [`engine`] wires the stages after capture for [`run`] (watching) and [`replay`]; `main.rs`
//! only turns the command line ([`cli`]) into a [`config`] and calls them. See
//! docs/ARCHITECTURE.md.

pub mod capture;
pub mod check;
pub mod cli;
pub mod clock;
pub mod config;
pub mod engine;
pub mod flows;
pub mod pack_cmd;
pub mod packs;
pub mod privileges;
pub mod procfs;
pub mod record;
pub mod replay;
pub mod run;
pub mod settings;
pub mod sinks;
pub mod stats;
