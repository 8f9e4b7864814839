//! Records shared by the eBPF programs (`agent-ebpf`) and the agent.
//!
//! Every struct here crosses the kernel/user boundary as raw bytes, so each is `#[repr(C)]`, has
//! explicit padding and a compile-time size check. Numeric kinds are stable: a number, once given
//! a meaning, is never reused.
#![no_std]

pub mod counters;
pub mod data;
pub mod gotls;

pub use counters::Counter;
pub use data::{
    Direction, ProcessRecord, RecordBuffer, RecordHeader, SocketRecord, SslArgs, record_kind,
};
pub use gotls::{GoConnOffsets, GoroutineKey};
