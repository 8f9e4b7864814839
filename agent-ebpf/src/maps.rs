//! Maps and globals shared by every probe family.

use agent_common::{Counter, GoroutineKey, RecordBuffer, SslArgs};
use aya_ebpf::{
    helpers::bpf_get_current_pid_tgid,
    macros::map,
    maps::{HashMap, LruHashMap, PerCpuArray, RingBuf},
};

/// Set by the agent at load time: its own tgid, never traced.
#[unsafe(no_mangle)]
static AGENT_TGID: u32 = 0;

/// Set by the agent at load time: 1 when every process may be traced (`--all`), 0 when only the
/// tgids in [`TARGETS`] are.
#[unsafe(no_mangle)]
static TRACE_ALL: u32 = 0;

/// Set by the agent at load time: how many bytes may wait in [`EVENTS`] before a record forces
/// a wakeup of the reader (a quarter of the ring).
#[unsafe(no_mangle)]
static WAKEUP_BYTES: u64 = 4 * 1024 * 1024;

/// The [`WAKEUP_BYTES`] threshold.
#[inline(always)]
pub fn wakeup_bytes() -> u64 {
    // SAFETY: a global set at load time; the volatile read keeps the compiler from folding it.
    unsafe { core::ptr::read_volatile(&WAKEUP_BYTES) }
}

/// Processes to trace (tgid → 1), maintained by the agent.
#[map]
pub static TARGETS: HashMap<u32, u8> = HashMap::with_max_entries(16_384, 0);

/// Plaintext records to user space. The size is set by the agent at load time.
#[map]
pub static EVENTS: RingBuf = RingBuf::with_byte_size(16 * 1024 * 1024, 0);

/// Arguments of in-flight write calls, keyed by pid_tgid (LRU: a thread that dies mid-call
/// cannot leak an entry).
#[map]
pub static WRITE_ARGS: LruHashMap<u64, SslArgs> = LruHashMap::with_max_entries(65_536, 0);

/// Arguments of in-flight read calls, keyed by pid_tgid.
#[map]
pub static READ_ARGS: LruHashMap<u64, SslArgs> = LruHashMap::with_max_entries(65_536, 0);

/// Arguments of in-flight Go `(*tls.Conn).Read` calls, keyed by goroutine (a goroutine can move
/// to another thread between entry and return). LRU: a goroutine that panics out of the call
/// leaves no entry behind for good.
#[map]
pub static GO_READ_ARGS: LruHashMap<GoroutineKey, SslArgs> =
    LruHashMap::with_max_entries(65_536, 0);

/// The last socket fd seen inside a TLS call of a thread, and that call's connection object.
#[repr(C)]
#[derive(Clone, Copy)]
pub struct LastFd {
    /// `SSL *` of the call.
    pub ssl: u64,
    /// The fd.
    pub fd: i32,
    /// Zero.
    pub reserved: u32,
}

/// The last socket fd seen inside a TLS call of each thread (pid_tgid → [`LastFd`]): the
/// fallback for later calls on the same connection object that make no syscall of their own
/// (a read served from the library's buffer). Keyed by the object too, so a thread serving many
/// connections never lends one connection's fd to another.
#[map]
pub static LAST_FD: LruHashMap<u64, LastFd> = LruHashMap::with_max_entries(65_536, 0);

/// Socket fds seen inside TLS calls, keyed `tgid << 32 | fd`: a `close` of one of them ends
/// its connection. LRU: fds closed while the agent was not looking age out.
#[map]
pub static TLS_FDS: LruHashMap<u64, u8> = LruHashMap::with_max_entries(65_536, 0);

/// Remembers `fd` of the calling process as a TLS socket, so its `close` ends the connection
/// (see `syscalls`), and sends its addresses the first time (see `sockets`). A lookup first:
/// cheaper than an update of an LRU map.
#[inline(always)]
pub fn note_tls_fd(pid_tgid: u64, fd: i32) {
    let key = (pid_tgid & 0xffff_ffff_0000_0000) | u64::from(fd as u32);
    // SAFETY: a plain byte, read once.
    if unsafe { TLS_FDS.get(&key) }.is_none() {
        let _ = TLS_FDS.insert(&key, &1, 0);
        if let crate::sockets::FdKind::Socket(file) = crate::sockets::fd_kind(fd) {
            crate::sockets::report(pid_tgid, fd, file);
        }
    }
}

/// A connection of a process: its tgid and connection object.
#[repr(C)]
#[derive(Clone, Copy)]
pub struct ConnKey {
    /// The connection object.
    pub conn: u64,
    /// The process.
    pub tgid: u32,
    /// Zero.
    pub reserved: u32,
}

/// Connections that lost a record to a full ring buffer since their last record was sent: the
/// next record sent for one carries `LOST_BEFORE`, so user space resynchronises its parser.
/// LRU: marks of connections that never move again age out.
#[map]
pub static LOSSY: LruHashMap<ConnKey, u8> = LruHashMap::with_max_entries(16_384, 0);

/// This CPU's count of records the ring buffer had no room for. A program runs to completion
/// on one CPU, so the count before and after a call's records tells whether one was lost.
#[inline(always)]
pub fn ringbuf_full_count() -> u64 {
    match COUNTERS.get_ptr(Counter::RingbufFull as u32) {
        // SAFETY: per-CPU slot, read on this CPU.
        Some(slot) => unsafe { *slot },
        None => 0,
    }
}

/// One scratch record per CPU: records do not fit on the 512-byte stack.
#[map]
pub static SCRATCH: PerCpuArray<RecordBuffer> = PerCpuArray::with_max_entries(1, 0);

/// Counters indexed by [`Counter`].
#[map]
pub static COUNTERS: PerCpuArray<u64> = PerCpuArray::with_max_entries(Counter::COUNT, 0);

#[inline(always)]
fn read_global(v: &u32) -> u32 {
    // SAFETY: a global set at load time; the volatile read keeps the compiler from folding it.
    unsafe { core::ptr::read_volatile(v) }
}

/// Whether the calling process is to be traced.
#[inline(always)]
pub fn is_target(tgid: u32) -> bool {
    if tgid == read_global(&AGENT_TGID) {
        return false;
    }
    if read_global(&TRACE_ALL) != 0 {
        return true;
    }
    // SAFETY: the value is a plain byte, read once.
    unsafe { TARGETS.get(&tgid).is_some() }
}

/// The caller's pid_tgid, and whether it is to be traced.
#[inline(always)]
pub fn current() -> (u64, bool) {
    let pid_tgid = bpf_get_current_pid_tgid();
    (pid_tgid, is_target((pid_tgid >> 32) as u32))
}

/// Adds one to a counter.
#[inline(always)]
pub fn count(counter: Counter) {
    if let Some(slot) = COUNTERS.get_ptr_mut(counter as u32) {
        // SAFETY: per-CPU slot, this program runs to completion on this CPU.
        unsafe { *slot += 1 };
    }
}
