//! Ring-buffer records: one header for every kind, then the kind's payload (for data records,
//! a slice of plaintext seen in one TLS read or write call).

/// Largest payload one record carries. A call that moved more bytes is sent as several records
/// with increasing `offset`; one TLS record is at most 16 KiB, so a read fits in one.
pub const MAX_CHUNK: usize = 16 * 1024;

/// Most records a single call is split into (so at most `MAX_CHUNK * MAX_CHUNKS_PER_CALL` bytes,
/// 1 MiB, are copied from one call). Bytes past that are not copied; the last record of such a
/// call has [`flags::TRUNCATED`] set and `total_len` says how many bytes the call really moved.
pub const MAX_CHUNKS_PER_CALL: u32 = 64;

/// Stable record kinds (the first `u32` of every ring-buffer record).
pub mod record_kind {
    /// Plaintext from one TLS call: a [`super::RecordHeader`] then `len` payload bytes.
    pub const DATA: u32 = 1;
    /// The TLS connection was freed (`SSL_free`): only the header is sent, `len` is 0.
    pub const CONN_CLOSE: u32 = 2;
    /// The client set the TLS server name (SNI) on the connection (`SSL_ctrl` with
    /// [`super::SSL_CTRL_SET_TLSEXT_HOSTNAME`]): the payload is the name, `len` bytes, no NUL.
    pub const SERVER_NAME: u32 = 3;
    /// The process closed a socket fd that TLS calls were seen using (`close`): only the
    /// header is sent, with `fd` set and `conn` 0.
    pub const FD_CLOSE: u32 = 4;
    /// A process has new code: it called `execve` ([`super::flags::EXEC`] set), or mapped a
    /// file executable (a library being loaded; `fd` is the mapped file's). A
    /// [`super::ProcessRecord`]: the header, then the process name as the kernel has it after the
    /// change (`len` 16). Sent only when the agent asked for them.
    pub const CODE_CHANGED: u32 = 5;
    /// A socket fd was first seen inside a TLS call: a [`super::SocketRecord`] with both ends of
    /// the connection as the kernel had them then (`fd` set, `conn` 0), so a process that exits
    /// before the agent can look in `/proc` keeps its addresses.
    pub const SOCKET: u32 = 6;
}

/// `SSL_ctrl` command behind `SSL_set_tlsext_host_name`.
pub const SSL_CTRL_SET_TLSEXT_HOSTNAME: i32 = 55;

/// Longest server name copied (a DNS name is at most 253 bytes).
pub const MAX_SERVER_NAME: usize = 256;

/// Bits of [`RecordHeader::flags`].
pub mod flags {
    /// Bytes of this call beyond `offset + len` were not copied (the per-call limit).
    pub const TRUNCATED: u32 = 1;
    /// Copying from the target's memory failed; the payload is missing (`len` is 0).
    pub const READ_FAILED: u32 = 2;
    /// The call made no socket syscall of its own: `fd` is the one the thread last saw inside a
    /// call on the same connection object.
    pub const FD_FALLBACK: u32 = 4;
    /// On a `CODE_CHANGED` record: the process started a new program (`execve`).
    pub const EXEC: u32 = 8;
    /// Records of this connection were lost since its last one (the ring buffer was full): its
    /// byte streams have a hole of unknown size and direction before this record.
    pub const LOST_BEFORE: u32 = 16;
}

/// Length of a process name (`comm`) as the kernel keeps it, NUL included.
pub const TASK_COMM_LEN: usize = 16;

/// Which way plaintext went, from the observed process's point of view.
#[repr(u32)]
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Direction {
    /// The process wrote it (`SSL_write`, `SSL_write_ex`): it leaves the process.
    Egress = 0,
    /// The process read it (`SSL_read`, `SSL_read_ex`): it entered the process.
    Ingress = 1,
}

impl Direction {
    /// Decodes the wire value; anything unknown is `None`.
    #[must_use]
    pub const fn from_u32(v: u32) -> Option<Self> {
        match v {
            0 => Some(Self::Egress),
            1 => Some(Self::Ingress),
            _ => None,
        }
    }
}

/// The header every ring-buffer record starts with, whatever its kind.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct RecordHeader {
    /// One of [`record_kind`].
    pub kind: u32,
    /// Bits of [`flags`].
    pub flags: u32,
    /// Process id (thread group id) of the caller.
    pub tgid: u32,
    /// Thread id of the caller.
    pub tid: u32,
    /// Connection key inside the process: the address of the library's connection object
    /// (`SSL *`). With `tgid` it names the connection for as long as the object lives.
    pub conn: u64,
    /// `CLOCK_MONOTONIC` nanoseconds: the call's entry for writes (when the program sent the
    /// bytes), its return for reads (when the bytes had arrived).
    pub timestamp_ns: u64,
    /// Socket file descriptor of the read/write/send/recv syscalls made inside the call (see
    /// [`flags::FD_FALLBACK`] for calls that made none), or -1 when not known.
    pub fd: i32,
    /// A [`Direction`] as `u32`.
    pub direction: u32,
    /// Offset of this record's payload inside the call's data.
    pub offset: u32,
    /// Payload bytes that follow this header.
    pub len: u32,
    /// Bytes the call really transferred (the return value).
    pub total_len: u32,
    /// Zero; keeps the header a multiple of 8 bytes.
    pub reserved: u32,
}

/// A header and its payload buffer, as the eBPF side builds it in a per-CPU scratch slot. Only
/// `size_of::<RecordHeader>() + len` bytes of it are sent.
#[repr(C)]
pub struct RecordBuffer {
    /// The header.
    pub header: RecordHeader,
    /// The payload; the first `header.len` bytes are valid.
    pub data: [u8; MAX_CHUNK],
}

/// A `CODE_CHANGED` record: the header and the process's name.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default)]
pub struct ProcessRecord {
    /// The header (`len` is [`TASK_COMM_LEN`]).
    pub header: RecordHeader,
    /// The process name, NUL-padded.
    pub comm: [u8; TASK_COMM_LEN],
}

/// A `SOCKET` record: the header and both ends of a TCP connection, from the kernel's `struct
/// sock`. Addresses are in network byte order; an IPv4 address fills the first 4 bytes.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default)]
pub struct SocketRecord {
    /// The header (`len` is 0, `fd` the socket's).
    pub header: RecordHeader,
    /// `AF_INET` or `AF_INET6`.
    pub family: u16,
    /// This process's port, host byte order.
    pub local_port: u16,
    /// The peer's port, host byte order.
    pub remote_port: u16,
    /// Zero.
    pub reserved: u16,
    /// This process's address.
    pub local: [u8; 16],
    /// The peer's address.
    pub remote: [u8; 16],
}

/// Arguments of a TLS call, saved on entry for its return probe.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default)]
pub struct SslArgs {
    /// `SSL *`.
    pub ssl: u64,
    /// The caller's buffer.
    pub buf: u64,
    /// For the `_ex` variants, where the library writes the byte count; 0 otherwise.
    pub len_out: u64,
    /// `CLOCK_MONOTONIC` at entry.
    pub timestamp_ns: u64,
    /// Socket fd seen inside the call, -1 until one is seen.
    pub fd: i32,
    /// Zero.
    pub reserved: u32,
}

const _: () = assert!(core::mem::size_of::<RecordHeader>() == 56);
const _: () = assert!(core::mem::size_of::<RecordHeader>().is_multiple_of(8));
const _: () = assert!(core::mem::size_of::<RecordBuffer>() == 56 + MAX_CHUNK);
const _: () = assert!(core::mem::size_of::<SslArgs>() == 40);
const _: () = assert!(core::mem::size_of::<ProcessRecord>() == 72);
const _: () = assert!(core::mem::size_of::<SocketRecord>() == 96);
