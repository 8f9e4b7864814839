//! Support for the end-to-end tests and the demo: a local HTTPS API and helpers that run the
//! agent and real client programs.

pub mod clients;
pub mod containers;
pub mod goclient;
pub mod golang;
pub mod harness;
pub mod otlp;
pub mod server;
