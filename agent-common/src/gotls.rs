//! Go `crypto/tls`: what the probes need to know about one Go binary, and the key of a call in
//! flight.
//!
//! The struct offsets of the chain from a `*tls.Conn` to its socket fd differ (in principle)
//! between Go versions, so they are worked out per binary by the agent and handed to the probes
//! of that binary in the BPF cookie of each attachment: no map lookup in the probe, and one file
//! attached for every process (`--all`) carries its own offsets.

/// Byte offsets along `tls.Conn.conn` (a `net.Conn` interface) → its data pointer (a
/// `*net.TCPConn`, whose embedded `net.conn` holds `fd *netFD`) → `netFD.pfd` (`poll.FD`) →
/// `FD.Sysfd` (an `int`).
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub struct GoConnOffsets {
    /// Offset of `conn` (the `net.Conn` interface) in `crypto/tls.Conn`.
    pub tls_conn_conn: u16,
    /// Offset of `fd` (`*netFD`) in `net.conn` (embedded at the start of `net.TCPConn`).
    pub net_conn_fd: u16,
    /// Offset of `pfd` (`internal/poll.FD`) in `net.netFD`.
    pub netfd_pfd: u16,
    /// Offset of `Sysfd` in `internal/poll.FD`.
    pub fd_sysfd: u16,
}

impl GoConnOffsets {
    /// Packs the four offsets into a BPF cookie, 16 bits each, `tls_conn_conn` lowest.
    #[must_use]
    pub const fn to_cookie(self) -> u64 {
        (self.tls_conn_conn as u64)
            | ((self.net_conn_fd as u64) << 16)
            | ((self.netfd_pfd as u64) << 32)
            | ((self.fd_sysfd as u64) << 48)
    }

    /// Unpacks [`Self::to_cookie`].
    #[must_use]
    pub const fn from_cookie(cookie: u64) -> Self {
        Self {
            tls_conn_conn: cookie as u16,
            net_conn_fd: (cookie >> 16) as u16,
            netfd_pfd: (cookie >> 32) as u16,
            fd_sysfd: (cookie >> 48) as u16,
        }
    }
}

/// The key of a Go call in flight: the goroutine (its `g` pointer, in `r14` under Go's register
/// ABI) in its process. A goroutine may move to another thread between a call's entry and its
/// return, so a thread id would not find the entry again.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub struct GoroutineKey {
    /// The `runtime.g` pointer.
    pub g: u64,
    /// The process.
    pub tgid: u32,
    /// Zero.
    pub reserved: u32,
}

const _: () = assert!(core::mem::size_of::<GoConnOffsets>() == 8);
const _: () = assert!(core::mem::size_of::<GoroutineKey>() == 16);

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn offsets_round_trip_through_the_cookie() {
        let o = GoConnOffsets {
            tls_conn_conn: 1,
            net_conn_fd: 0x0203,
            netfd_pfd: 0xfffe,
            fd_sysfd: 16,
        };
        assert_eq!(GoConnOffsets::from_cookie(o.to_cookie()), o);
        assert_eq!(o.to_cookie(), 0x0010_fffe_0203_0001);
    }
}
