//! The records capture hands on (the contract between capture and the stages after it), and
//! their decoding from the kernel's bytes: one [`RecordHeader`] for every kind, then the kind's
//! payload (see `agent-common`).

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};

use agent_common::{RecordHeader, SocketRecord, data::flags, record_kind};

use crate::procfs::SocketEnds;
use taskless_http::Flow;

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
        /// A new image (`execve`), rather than a file mapped executable.
        exec: bool,
        /// The process name the kernel had then (lossy UTF-8).
        comm: String,
    },
    /// A socket fd was first seen inside a TLS call: both ends of its TCP connection, as the
    /// kernel had them then.
    Socket {
        /// Process.
        tgid: u32,
        /// The fd.
        fd: i32,
        /// The ends.
        ends: SocketEnds,
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
    /// Which way the bytes went, relative to the observed process.
    pub direction: Flow,
    /// Offset of `payload` within the call.
    pub offset: u32,
    /// Bytes the whole call moved.
    pub total_len: u32,
    /// The bytes beyond this record's end that the call moved but were not copied.
    pub truncated: bool,
    /// Copying failed: the payload is missing though the call moved `total_len` bytes.
    pub read_failed: bool,
    /// Records of this connection were lost before this one (the ring buffer was full).
    pub lost_before: bool,
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
    /// A socket record of an address family other than IPv4 and IPv6.
    #[error("socket record of unknown address family {0}")]
    Family(u16),
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
    const HEADER: usize = size_of::<RecordHeader>();
    if bytes.len() < HEADER {
        return Err(DecodeError::Short(bytes.len()));
    }
    // SAFETY: `bytes` holds at least HEADER bytes and RecordHeader is plain old data.
    let h: RecordHeader =
        unsafe { std::ptr::read_unaligned(bytes.as_ptr().cast::<RecordHeader>()) };
    match h.kind {
        record_kind::DATA => {
            let held = bytes.len() - HEADER;
            if h.len as usize > held {
                return Err(DecodeError::Length {
                    claimed: h.len,
                    held,
                });
            }
            let direction = flow_of(h.direction).ok_or(DecodeError::Unknown {
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
                lost_before: h.flags & flags::LOST_BEFORE != 0,
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
        record_kind::CODE_CHANGED => {
            let held = bytes.len() - HEADER;
            if h.len as usize > held {
                return Err(DecodeError::Length {
                    claimed: h.len,
                    held,
                });
            }
            let comm = &bytes[HEADER..HEADER + h.len as usize];
            let comm = comm.split(|&b| b == 0).next().unwrap_or_default();
            Ok(Record::CodeChanged {
                tgid: h.tgid,
                exec: h.flags & flags::EXEC != 0,
                comm: String::from_utf8_lossy(comm).into_owned(),
            })
        }
        record_kind::SOCKET => {
            if bytes.len() < size_of::<SocketRecord>() {
                return Err(DecodeError::Length {
                    claimed: (size_of::<SocketRecord>() - HEADER) as u32,
                    held: bytes.len() - HEADER,
                });
            }
            // SAFETY: `bytes` holds a whole SocketRecord, which is plain old data.
            let r: SocketRecord =
                unsafe { std::ptr::read_unaligned(bytes.as_ptr().cast::<SocketRecord>()) };
            let ip = |a: [u8; 16]| match r.family {
                AF_INET => Some(IpAddr::V4(Ipv4Addr::new(a[0], a[1], a[2], a[3]))),
                // A v4 peer on a dual-stack socket is ::ffff:a.b.c.d; reported as v4, as
                // `/proc/net/tcp6` is read.
                AF_INET6 => {
                    let v6 = Ipv6Addr::from(a);
                    Some(v6.to_ipv4_mapped().map_or(IpAddr::V6(v6), IpAddr::V4))
                }
                _ => None,
            };
            let (Some(local), Some(remote)) = (ip(r.local), ip(r.remote)) else {
                return Err(DecodeError::Family(r.family));
            };
            Ok(Record::Socket {
                tgid: h.tgid,
                fd: h.fd,
                ends: SocketEnds {
                    local: SocketAddr::new(local, r.local_port),
                    remote: SocketAddr::new(remote, r.remote_port),
                },
            })
        }
        kind => Err(DecodeError::Unknown {
            kind,
            direction: h.direction,
        }),
    }
}

/// Address families of a `SOCKET` record.
const AF_INET: u16 = 2;
const AF_INET6: u16 = 10;

/// The user-side direction of the kernel's wire value.
fn flow_of(direction: u32) -> Option<Flow> {
    match agent_common::Direction::from_u32(direction)? {
        agent_common::Direction::Egress => Some(Flow::Egress),
        agent_common::Direction::Ingress => Some(Flow::Ingress),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn raw(header: RecordHeader, payload: &[u8]) -> Vec<u8> {
        let mut v = vec![0u8; size_of::<RecordHeader>()];
        // SAFETY: v is exactly one header long.
        unsafe { std::ptr::write_unaligned(v.as_mut_ptr().cast::<RecordHeader>(), header) };
        v.extend_from_slice(payload);
        v
    }

    fn socket(family: u16, local: [u8; 16], remote: [u8; 16]) -> Vec<u8> {
        let r = SocketRecord {
            header: RecordHeader {
                kind: record_kind::SOCKET,
                tgid: 9,
                fd: 5,
                ..RecordHeader::default()
            },
            family,
            local_port: 40_000,
            remote_port: 443,
            reserved: 0,
            local,
            remote,
        };
        let mut v = vec![0u8; size_of::<SocketRecord>()];
        // SAFETY: v is exactly one record long.
        unsafe { std::ptr::write_unaligned(v.as_mut_ptr().cast::<SocketRecord>(), r) };
        v
    }

    #[test]
    fn decodes_socket_records_of_both_families() {
        let mut local = [0u8; 16];
        local[..4].copy_from_slice(&[10, 0, 0, 7]);
        let mut remote = [0u8; 16];
        remote[..4].copy_from_slice(&[93, 184, 216, 34]);
        let Ok(Record::Socket { tgid, fd, ends }) = decode(&socket(AF_INET, local, remote)) else {
            panic!("a socket record");
        };
        assert_eq!((tgid, fd), (9, 5));
        assert_eq!(ends.local, "10.0.0.7:40000".parse().expect("addr"));
        assert_eq!(ends.remote, "93.184.216.34:443".parse().expect("addr"));
        // IPv6, and a v4 peer of a dual-stack socket, which is reported as v4.
        let v6: Ipv6Addr = "2001:db8::1".parse().expect("addr");
        let mapped = Ipv4Addr::new(127, 0, 0, 1).to_ipv6_mapped();
        let Ok(Record::Socket { ends, .. }) =
            decode(&socket(AF_INET6, v6.octets(), mapped.octets()))
        else {
            panic!("a socket record");
        };
        assert_eq!(ends.local, "[2001:db8::1]:40000".parse().expect("addr"));
        assert_eq!(ends.remote, "127.0.0.1:443".parse().expect("addr"));
        // Another family, and a short record, are errors.
        assert_eq!(
            decode(&socket(1, local, remote)),
            Err(DecodeError::Family(1))
        );
        let short = socket(AF_INET, local, remote);
        assert!(matches!(
            decode(&short[..60]),
            Err(DecodeError::Length { .. })
        ));
    }

    #[test]
    fn decodes_a_data_record_with_its_payload_and_flags() {
        let h = RecordHeader {
            kind: record_kind::DATA,
            flags: flags::TRUNCATED,
            tgid: 7,
            tid: 8,
            conn: 0xdead,
            timestamp_ns: 99,
            fd: 3,
            direction: agent_common::Direction::Ingress as u32,
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
        assert_eq!(d.direction, Flow::Ingress);
        assert!(d.truncated && !d.read_failed && !d.fd_fallback);
        let h = RecordHeader {
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
        let h = RecordHeader {
            kind: record_kind::SERVER_NAME,
            tgid: 5,
            conn: 0xbeef,
            len: 10,
            ..RecordHeader::default()
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
    fn decodes_a_process_event_with_its_name() {
        let h = RecordHeader {
            kind: record_kind::CODE_CHANGED,
            flags: flags::EXEC,
            tgid: 77,
            fd: -1,
            len: 16,
            ..RecordHeader::default()
        };
        assert_eq!(
            decode(&raw(h, b"python3\0\0\0\0\0\0\0\0\0")),
            Ok(Record::CodeChanged {
                tgid: 77,
                exec: true,
                comm: "python3".into()
            })
        );
        let h = RecordHeader { flags: 0, ..h };
        assert!(matches!(
            decode(&raw(h, b"curl\0\0\0\0\0\0\0\0\0\0\0\0")),
            Ok(Record::CodeChanged { exec: false, .. })
        ));
    }

    #[test]
    fn rejects_records_that_lie_about_their_length() {
        let h = RecordHeader {
            kind: record_kind::DATA,
            len: 10,
            ..RecordHeader::default()
        };
        assert_eq!(
            decode(&raw(h, b"abc")),
            Err(DecodeError::Length {
                claimed: 10,
                held: 3
            })
        );
        assert_eq!(decode(&[0u8; 3]), Err(DecodeError::Short(3)));
        let h = RecordHeader {
            kind: 77,
            ..RecordHeader::default()
        };
        assert!(matches!(
            decode(&raw(h, b"")),
            Err(DecodeError::Unknown { kind: 77, .. })
        ));
    }
}
