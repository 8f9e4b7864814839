//! The ring-buffer reader: drains the kernel's records and hands them on, decoded.
//!
//! The eBPF programs submit without waking the reader (a wakeup per record would multiply the
//! cost of every TLS call), so this thread polls the ring on a short timer as well as on the
//! kernel's occasional forced wakeups. It never blocks on what comes after it: the consumer is
//! a plain callback on this thread that must itself be non-blocking.

use std::{
    os::fd::AsRawFd as _,
    sync::{
        Arc,
        atomic::{AtomicBool, AtomicU64, Ordering},
    },
    time::Duration,
};

use agent_common::{DataHeader, Direction, data::flags, record_kind};
use aya::maps::{MapData, RingBuf};

/// How long the reader sleeps in `poll` when nothing woke it.
pub const POLL_INTERVAL: Duration = Duration::from_millis(10);

/// One decoded ring-buffer record.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Record {
    /// Plaintext from one TLS call (or a piece of one).
    Data(DataRecord),
    /// The connection object was freed.
    Close {
        /// Process.
        tgid: u32,
        /// Connection key.
        conn: u64,
        /// `CLOCK_MONOTONIC` ns.
        timestamp_ns: u64,
    },
    /// The process closed a socket fd that TLS calls were seen on.
    FdClose {
        /// Process.
        tgid: u32,
        /// The fd.
        fd: i32,
        /// `CLOCK_MONOTONIC` ns.
        timestamp_ns: u64,
    },
    /// A process has new code: a new image (`execve`) or a file mapped executable (a library
    /// being loaded). Only when the agent asked for these.
    CodeChanged {
        /// The process.
        tgid: u32,
    },
    /// The client set the TLS server name (SNI) on a connection, before its handshake.
    ServerName {
        /// Process.
        tgid: u32,
        /// Connection key.
        conn: u64,
        /// The name (lossy UTF-8).
        name: String,
    },
}

/// Plaintext from one TLS call, or one piece of a call larger than a record.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct DataRecord {
    /// Process.
    pub tgid: u32,
    /// Thread.
    pub tid: u32,
    /// Connection key (the `SSL *`).
    pub conn: u64,
    /// `CLOCK_MONOTONIC` ns.
    pub timestamp_ns: u64,
    /// Socket fd, or -1.
    pub fd: i32,
    /// `fd` was not seen inside this call but is the thread's last TLS fd (a guess).
    pub fd_fallback: bool,
    /// Which way the bytes went.
    pub direction: Direction,
    /// Offset of `payload` within the call.
    pub offset: u32,
    /// Bytes the whole call moved.
    pub total_len: u32,
    /// The bytes beyond this record's end that the call moved but were not copied.
    pub truncated: bool,
    /// Copying failed: the payload is missing though the call moved `total_len` bytes.
    pub read_failed: bool,
    /// The plaintext.
    pub payload: Vec<u8>,
}

/// Why a ring-buffer record could not be decoded.
#[derive(Debug, PartialEq, Eq, thiserror::Error)]
pub enum DecodeError {
    /// Shorter than a header.
    #[error("record of {0} bytes is shorter than its header")]
    Short(usize),
    /// The header claims more payload than the record holds.
    #[error("record claims {claimed} payload bytes but holds {held}")]
    Length {
        /// From the header.
        claimed: u32,
        /// Actually there.
        held: usize,
    },
    /// Unknown kind or direction.
    #[error("unknown record kind {kind} or direction {direction}")]
    Unknown {
        /// Kind.
        kind: u32,
        /// Direction.
        direction: u32,
    },
}

/// Decodes one record.
///
/// # Errors
/// A [`DecodeError`] for bytes that are not a record this agent's eBPF side writes.
pub fn decode(bytes: &[u8]) -> Result<Record, DecodeError> {
    const HEADER: usize = size_of::<DataHeader>();
    if bytes.len() < HEADER {
        return Err(DecodeError::Short(bytes.len()));
    }
    // SAFETY: `bytes` holds at least HEADER bytes and DataHeader is plain old data.
    let h: DataHeader = unsafe { std::ptr::read_unaligned(bytes.as_ptr().cast::<DataHeader>()) };
    match h.kind {
        record_kind::DATA => {
            let held = bytes.len() - HEADER;
            if h.len as usize > held {
                return Err(DecodeError::Length {
                    claimed: h.len,
                    held,
                });
            }
            let direction = Direction::from_u32(h.direction).ok_or(DecodeError::Unknown {
                kind: h.kind,
                direction: h.direction,
            })?;
            Ok(Record::Data(DataRecord {
                tgid: h.tgid,
                tid: h.tid,
                conn: h.conn,
                timestamp_ns: h.timestamp_ns,
                fd: h.fd,
                fd_fallback: h.flags & flags::FD_FALLBACK != 0,
                direction,
                offset: h.offset,
                total_len: h.total_len,
                truncated: h.flags & flags::TRUNCATED != 0,
                read_failed: h.flags & flags::READ_FAILED != 0,
                payload: bytes[HEADER..HEADER + h.len as usize].to_vec(),
            }))
        }
        record_kind::SERVER_NAME => {
            let held = bytes.len() - HEADER;
            if h.len as usize > held {
                return Err(DecodeError::Length {
                    claimed: h.len,
                    held,
                });
            }
            let name = &bytes[HEADER..HEADER + h.len as usize];
            // The kernel's copy may include the terminating NUL.
            let name = name.split(|&b| b == 0).next().unwrap_or_default();
            Ok(Record::ServerName {
                tgid: h.tgid,
                conn: h.conn,
                name: String::from_utf8_lossy(name).into_owned(),
            })
        }
        record_kind::CONN_CLOSE => Ok(Record::Close {
            tgid: h.tgid,
            conn: h.conn,
            timestamp_ns: h.timestamp_ns,
        }),
        record_kind::FD_CLOSE => Ok(Record::FdClose {
            tgid: h.tgid,
            fd: h.fd,
            timestamp_ns: h.timestamp_ns,
        }),
        record_kind::CODE_CHANGED => Ok(Record::CodeChanged { tgid: h.tgid }),
        kind => Err(DecodeError::Unknown {
            kind,
            direction: h.direction,
        }),
    }
}

/// Counters of the reader itself.
#[derive(Debug, Default)]
pub struct CaptureStats {
    /// Records decoded.
    pub records: AtomicU64,
    /// Payload bytes decoded.
    pub bytes: AtomicU64,
    /// Records that could not be decoded (dropped).
    pub undecodable: AtomicU64,
}

/// What the reader hands its consumer.
#[derive(Debug)]
pub enum Delivery {
    /// A decoded record.
    Record(Record),
    /// The ring is drained for now: a moment for housekeeping.
    Idle,
}

/// Reads `ring` until `stop` is set, then drains what is left and returns.
pub fn run(
    mut ring: RingBuf<MapData>,
    stop: &AtomicBool,
    stats: &Arc<CaptureStats>,
    mut deliver: impl FnMut(Delivery),
) {
    let fd = ring.as_raw_fd();
    loop {
        let stopping = stop.load(Ordering::Acquire);
        while let Some(item) = ring.next() {
            match decode(&item) {
                Ok(record) => {
                    stats.records.fetch_add(1, Ordering::Relaxed);
                    if let Record::Data(d) = &record {
                        stats
                            .bytes
                            .fetch_add(d.payload.len() as u64, Ordering::Relaxed);
                    }
                    tracing::trace!(?record, "record");
                    deliver(Delivery::Record(record));
                }
                Err(e) => {
                    stats.undecodable.fetch_add(1, Ordering::Relaxed);
                    tracing::debug!(error = %e, "undecodable record dropped");
                }
            }
        }
        if stopping {
            return;
        }
        deliver(Delivery::Idle);
        let mut pfd = libc::pollfd {
            fd,
            events: libc::POLLIN,
            revents: 0,
        };
        let timeout = i32::try_from(POLL_INTERVAL.as_millis()).unwrap_or(10);
        // SAFETY: one valid pollfd for the duration of the call.
        let _ = unsafe { libc::poll(&raw mut pfd, 1, timeout) };
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn raw(header: DataHeader, payload: &[u8]) -> Vec<u8> {
        let mut v = vec![0u8; size_of::<DataHeader>()];
        // SAFETY: v is exactly one header long.
        unsafe { std::ptr::write_unaligned(v.as_mut_ptr().cast::<DataHeader>(), header) };
        v.extend_from_slice(payload);
        v
    }

    #[test]
    fn decodes_a_data_record_with_its_payload_and_flags() {
        let h = DataHeader {
            kind: record_kind::DATA,
            flags: flags::TRUNCATED,
            tgid: 7,
            tid: 8,
            conn: 0xdead,
            timestamp_ns: 99,
            fd: 3,
            direction: Direction::Ingress as u32,
            offset: 16384,
            len: 5,
            total_len: 20000,
            reserved: 0,
        };
        let rec = decode(&raw(h, b"hello")).unwrap();
        let Record::Data(d) = rec else {
            panic!("not data")
        };
        assert_eq!(d.payload, b"hello");
        assert_eq!(
            (d.tgid, d.conn, d.offset, d.total_len, d.fd),
            (7, 0xdead, 16384, 20000, 3)
        );
        assert_eq!(d.direction, Direction::Ingress);
        assert!(d.truncated && !d.read_failed && !d.fd_fallback);
        let h = DataHeader {
            flags: flags::FD_FALLBACK,
            len: 0,
            ..h
        };
        let Record::Data(d) = decode(&raw(h, b"")).unwrap() else {
            panic!("not data")
        };
        assert!(d.fd_fallback && !d.truncated);
    }

    #[test]
    fn decodes_a_server_name_without_its_nul() {
        let h = DataHeader {
            kind: record_kind::SERVER_NAME,
            tgid: 5,
            conn: 0xbeef,
            len: 10,
            ..DataHeader::default()
        };
        assert_eq!(
            decode(&raw(h, b"localhost\0")),
            Ok(Record::ServerName {
                tgid: 5,
                conn: 0xbeef,
                name: "localhost".into()
            })
        );
        assert!(matches!(
            decode(&raw(h, b"short")),
            Err(DecodeError::Length { .. })
        ));
    }

    #[test]
    fn rejects_records_that_lie_about_their_length() {
        let h = DataHeader {
            kind: record_kind::DATA,
            len: 10,
            ..DataHeader::default()
        };
        assert_eq!(
            decode(&raw(h, b"abc")),
            Err(DecodeError::Length {
                claimed: 10,
                held: 3
            })
        );
        assert_eq!(decode(&[0u8; 3]), Err(DecodeError::Short(3)));
        let h = DataHeader {
            kind: 77,
            ..DataHeader::default()
        };
        assert!(matches!(
            decode(&raw(h, b"")),
            Err(DecodeError::Unknown { kind: 77, .. })
        ));
    }
}
