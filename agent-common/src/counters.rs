//! Kernel-side counters: a per-CPU array indexed by [`Counter`], summed by the agent.

/// Stable counter indexes in the `COUNTERS` per-CPU array.
#[repr(u32)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Counter {
    /// TLS read/write calls that returned data and were recorded.
    Calls = 0,
    /// Records that did not fit in the ring buffer (lost).
    RingbufFull = 1,
    /// Copies from the target's memory that failed.
    ReadFailed = 2,
    /// Return probes with no saved entry (the entry was missed or evicted).
    UnmatchedReturn = 3,
    /// Calls larger than the per-call copy limit (their tail was not copied).
    TruncatedCalls = 4,
    /// Syscalls inside a TLS call on a file that is not a socket (a time zone file read in the
    /// middle of a call): never taken as the connection's fd.
    NonSocketFds = 5,
    /// Reads whose connection could not be told (rustls: a received-plaintext buffer no
    /// connection seen holds, or bytes taken of a chunk not seen lent out): dropped.
    Unattributed = 6,
}

impl Counter {
    /// Number of counters; the size of the `COUNTERS` map.
    pub const COUNT: u32 = 7;
    /// Every counter, in index order.
    pub const ALL: [Self; Self::COUNT as usize] = [
        Self::Calls,
        Self::RingbufFull,
        Self::ReadFailed,
        Self::UnmatchedReturn,
        Self::TruncatedCalls,
        Self::NonSocketFds,
        Self::Unattributed,
    ];

    /// A short stable name for logs and stats.
    #[must_use]
    pub const fn name(self) -> &'static str {
        match self {
            Self::Calls => "calls",
            Self::RingbufFull => "ringbuf_full",
            Self::ReadFailed => "read_failed",
            Self::UnmatchedReturn => "unmatched_return",
            Self::TruncatedCalls => "truncated_calls",
            Self::NonSocketFds => "non_socket_fds",
            Self::Unattributed => "unattributed",
        }
    }
}
