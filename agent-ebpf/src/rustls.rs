//! rustls: plaintext at the functions that survive in optimised binaries (found by their
//! demangled names in the symbol table; see `agent/src/capture/rustls.rs`).
//!
//! rustls does no I/O inside its plaintext calls: `Writer::write` only encrypts into a buffer and
//! the reader only copies out of one; the socket is read and written by `read_tls`/`write_tls`,
//! which callers make separately. So the connection and its socket are tied together here:
//!
//! - writes: `<ConnectionCommon<T> as PlaintextSink>::write` and `::write_vectored`, whose `self`
//!   is the connection (`ConnectionCommon`, the key of every record of this stack). The bytes
//!   taken are in the `io::Result<usize>` returned in two registers (0 and the count when `Ok`).
//! - socket: the deframer's `read` (inside `read_tls`) makes the socket read syscalls, so the
//!   `sys_enter` program sees the fd (as inside any TLS call); `ConnectionCore::process_new_packets`,
//!   which follows on the same thread, binds that fd to its connection ([`CONN_FD`]). The
//!   handshake goes through both, so a connection's fd is known before its first plaintext.
//! - reads: `Reader::read` (copies into the caller's buffer) or `Reader::into_first_chunk` then
//!   `<Reader as BufRead>::consume` (tokio-rustls 0.26 lends out the first buffered chunk and then
//!   consumes what it took). A `Reader` points at the connection's received-plaintext buffer,
//!   somewhere inside the connection: [`resolve`] finds the connection from the last
//!   `process_new_packets` of the thread (new plaintext is always processed on the thread that
//!   then reads it first) and remembers it ([`INNER_CONN`]).
//! - moved connections: tokio-rustls handshakes a connection inside its `Accept`/`Connect` future
//!   and then moves it (a bitwise copy to another address) into the stream it returns. When
//!   application data came with the handshake's last flight, that `process_new_packets` decrypted
//!   it at the old address and the first read finds the buffer at the new one, inside no
//!   connection seen. [`resolve`] takes such a read, made soon after on the thread that processed
//!   a connection not read since, as that connection's: keyed by the buffer's address (unique
//!   while the moved connection lives) with the fd the old address had. The first write whose
//!   connection holds that buffer just past its start names the new address ([`CONN_ALIAS`]), so
//!   the whole connection keeps one key.
//!
//! `process_new_packets` takes the connection core and the connection's other fields
//! (`deframer_buffer` since 0.22, `sendable_plaintext` since 0.23): the connection starts at the
//! lowest of them (in 0.21 the core is the connection's only field). User space attaches the
//! program for the version it found.

use agent_common::{Counter, Direction, SslArgs};
use aya_ebpf::{
    EbpfContext as _,
    helpers::{
        bpf_get_current_pid_tgid, bpf_ktime_get_ns, bpf_probe_read_kernel, bpf_probe_read_user,
    },
    macros::{map, uprobe, uretprobe},
    maps::LruHashMap,
    programs::{ProbeContext, RetProbeContext},
};

use crate::{
    emit::{HEADER_SIZE, emit, save, send, send_in, wakeup_flags},
    maps::{READ_ARGS, WRITE_ARGS, count, current},
};

/// Set by the agent at load time: the offset in `struct pt_regs` of the second return register
/// (`rdx` on x86_64), where a Rust `io::Result<usize>` keeps the count.
#[unsafe(no_mangle)]
static RET2_OFFSET: u64 = 12 * 8;

/// How far past the start of a connection's core its received-plaintext buffer may lie, when the
/// core's end is not known.
const CORE_SPAN: u64 = 16 * 1024;

/// Most 16 KiB records one `Reader::read` is sent as (it may copy several TLS records'
/// plaintext into a large buffer).
const READ_CHUNKS: u32 = 4;

/// Most `IoSlice`s of one vectored write that are copied.
const MAX_SLICES: u32 = 8;

/// Most 16 KiB records one slice of a vectored write is sent as.
const SLICE_CHUNKS: u32 = 4;

/// How soon after a connection's `process_new_packets` a read outside it may be taken as the
/// connection's, moved (see the module's documentation).
const MOVE_WINDOW_NS: u64 = 100_000_000;

/// How soon after such a read the moved connection's first write must come to be tied to it.
const MOVE_CLAIM_NS: u64 = 2_000_000_000;

/// A connection as `process_new_packets` saw it: its address (the key of its records), the
/// range its core spans, when, and whether a read was tied to it since.
#[repr(C)]
#[derive(Clone, Copy)]
struct ConnSpan {
    conn: u64,
    lo: u64,
    hi: u64,
    timestamp_ns: u64,
    read: u64,
}

/// A moved connection's received-plaintext buffer (its key), until its new address is seen.
#[repr(C)]
#[derive(Clone, Copy)]
struct Moved {
    inner: u64,
    timestamp_ns: u64,
}

/// The first chunk `into_first_chunk` lent out, until `consume` says how much was taken.
#[repr(C)]
#[derive(Clone, Copy)]
struct Chunk {
    /// The received-plaintext buffer it came from.
    inner: u64,
    ptr: u64,
    len: u64,
}

/// Arguments of an `into_first_chunk` call: where its result goes, and the reader's buffer.
#[repr(C)]
#[derive(Clone, Copy)]
struct ChunkCall {
    ret_slot: u64,
    inner: u64,
}

/// The fd of the deframer read just made by each thread (pid_tgid → fd), taken by the next
/// `process_new_packets` of the thread.
#[map]
static THREAD_IO_FD: LruHashMap<u64, i32> = LruHashMap::with_max_entries(16_384, 0);

/// Each connection's socket fd: `[tgid, ConnectionCommon *]` → fd.
#[map]
static CONN_FD: LruHashMap<[u64; 2], i32> = LruHashMap::with_max_entries(65_536, 0);

/// The connection each thread last processed packets of.
#[map]
static THREAD_CONN: LruHashMap<u64, ConnSpan> = LruHashMap::with_max_entries(16_384, 0);

/// Received-plaintext buffers and their connection: `[tgid, buffer]` → `ConnectionCommon *`.
#[map]
static INNER_CONN: LruHashMap<[u64; 2], u64> = LruHashMap::with_max_entries(65_536, 0);

/// Moved connections' new addresses and their key: `[tgid, ConnectionCommon *]` → key.
#[map]
static CONN_ALIAS: LruHashMap<[u64; 2], u64> = LruHashMap::with_max_entries(16_384, 0);

/// Moved connections' keys by socket: `[tgid, fd]` → key, forgotten (with what the key named)
/// when the socket is closed, so a later connection moved to the same address starts afresh.
#[map]
static MOVED_FD: LruHashMap<[u64; 2], u64> = LruHashMap::with_max_entries(16_384, 0);

/// The last moved connection of each process whose new address is not known yet (tgid → it).
#[map]
static MOVED: LruHashMap<u64, Moved> = LruHashMap::with_max_entries(4_096, 0);

/// `into_first_chunk` calls in flight, by thread.
#[map]
static CHUNK_CALLS: LruHashMap<u64, ChunkCall> = LruHashMap::with_max_entries(16_384, 0);

/// The chunk each thread was last lent.
#[map]
static CHUNKS: LruHashMap<u64, Chunk> = LruHashMap::with_max_entries(16_384, 0);

/// The second return register of a return probe.
#[inline(always)]
fn ret2(ctx: &RetProbeContext) -> u64 {
    // SAFETY: a global set at load time; the volatile read keeps it from being folded.
    let offset = unsafe { core::ptr::read_volatile(&RET2_OFFSET) };
    let regs = ctx.as_ptr() as u64;
    // SAFETY: a read of the probed thread's saved registers through the checked helper.
    unsafe { bpf_probe_read_kernel((regs + offset) as *const u64) }.unwrap_or(0)
}

/// The connection's socket fd, or -1.
#[inline(always)]
fn conn_fd(tgid: u64, conn: u64) -> i32 {
    // SAFETY: plain data, read once.
    unsafe { CONN_FD.get(&[tgid, conn]) }.copied().unwrap_or(-1)
}

/// The deframer's `read` (inside `read_tls`): the socket read syscalls in it name the fd.
#[uprobe]
pub fn rustls_deframer_read(ctx: ProbeContext) -> u32 {
    let (pid_tgid, traced) = current();
    if traced && let Some(deframer) = ctx.arg::<u64>(0) {
        save(&READ_ARGS, pid_tgid, deframer, 0, 0, false);
    }
    0
}

#[uretprobe]
pub fn rustls_deframer_read_ret(_ctx: RetProbeContext) -> u32 {
    let pid_tgid = bpf_get_current_pid_tgid();
    // SAFETY: the value is copied out before the entry is removed.
    let Some(args) = (unsafe { READ_ARGS.get(&pid_tgid) }).copied() else {
        return 0;
    };
    let _ = READ_ARGS.remove(&pid_tgid);
    if args.fd >= 0 {
        let _ = THREAD_IO_FD.insert(&pid_tgid, &args.fd, 0);
    }
    0
}

/// `ConnectionCore::process_new_packets(&mut self, deframer_buffer, sendable_plaintext)`
/// (rustls 0.23): the connection is the lowest of the three. Its `Result<IoState, Error>` is
/// returned through a pointer passed first, so `self` is the second argument.
#[uprobe]
pub fn rustls_process(ctx: ProbeContext) -> u32 {
    let (Some(core), Some(deframer), Some(sendable)) =
        (ctx.arg::<u64>(1), ctx.arg::<u64>(2), ctx.arg::<u64>(3))
    else {
        return 0;
    };
    let mut conn = core;
    if deframer < conn {
        conn = deframer;
    }
    if sendable < conn {
        conn = sendable;
    }
    // The core ends where the next field starts (or, when it is the last one, within a span).
    let mut hi = core + CORE_SPAN;
    if deframer > core && deframer < hi {
        hi = deframer;
    }
    if sendable > core && sendable < hi {
        hi = sendable;
    }
    processing(conn, core, hi);
    0
}

/// `ConnectionCore::process_new_packets(&mut self, deframer_buffer)` (rustls 0.22): the
/// connection starts at the lower of the two (after the result's pointer, as above).
#[uprobe]
pub fn rustls_process2(ctx: ProbeContext) -> u32 {
    let (Some(core), Some(deframer)) = (ctx.arg::<u64>(1), ctx.arg::<u64>(2)) else {
        return 0;
    };
    let conn = if deframer < core { deframer } else { core };
    let hi = if deframer > core && deframer < core + CORE_SPAN {
        deframer
    } else {
        core + CORE_SPAN
    };
    processing(conn, core, hi);
    0
}

/// `ConnectionCore::process_new_packets(&mut self)` (rustls 0.21): the core is the connection's
/// only field (after the result's pointer, as above).
#[uprobe]
pub fn rustls_process_core(ctx: ProbeContext) -> u32 {
    if let Some(core) = ctx.arg::<u64>(1) {
        processing(core, core, core + CORE_SPAN);
    }
    0
}

#[inline(always)]
fn processing(conn: u64, lo: u64, hi: u64) {
    let (pid_tgid, traced) = current();
    if !traced || conn == 0 {
        return;
    }
    let tgid = pid_tgid >> 32;
    // A moved connection keeps the key it was given.
    // SAFETY: plain data, read once.
    let conn = unsafe { CONN_ALIAS.get(&[tgid, conn]) }
        .copied()
        .unwrap_or(conn);
    let span = ConnSpan {
        conn,
        lo,
        hi,
        // SAFETY: no preconditions.
        timestamp_ns: unsafe { bpf_ktime_get_ns() },
        read: 0,
    };
    let _ = THREAD_CONN.insert(&pid_tgid, &span, 0);
    // SAFETY: plain data copied out at once.
    if let Some(fd) = unsafe { THREAD_IO_FD.get(&pid_tgid) }.copied() {
        let _ = THREAD_IO_FD.remove(&pid_tgid);
        let _ = CONN_FD.insert(&[tgid, conn], &fd, 0);
    }
}

/// The connection a received-plaintext buffer belongs to (see the module's documentation).
#[inline(always)]
fn resolve(pid_tgid: u64, inner: u64) -> Option<u64> {
    let tgid = pid_tgid >> 32;
    let span = THREAD_CONN.get_ptr_mut(&pid_tgid);
    // SAFETY: plain data, read once.
    if let Some(conn) = unsafe { INNER_CONN.get(&[tgid, inner]) }.copied() {
        if let Some(span) = span {
            // SAFETY: the thread's own entry, written only by this thread.
            unsafe {
                if (*span).conn == conn {
                    (*span).read = 1;
                }
            }
        }
        return Some(conn);
    }
    let span = span?;
    // SAFETY: the thread's own entry, written only by this thread.
    let seen = unsafe { *span };
    if inner >= seen.lo && inner < seen.hi {
        // SAFETY: as above.
        unsafe { (*span).read = 1 };
        let _ = INNER_CONN.insert(&[tgid, inner], &seen.conn, 0);
        return Some(seen.conn);
    }
    // Outside the connection this thread processed last: that connection, moved, when it was
    // processed just before and not read since and its socket is known; otherwise not told.
    // SAFETY: no preconditions.
    let now = unsafe { bpf_ktime_get_ns() };
    if seen.read != 0 || now.wrapping_sub(seen.timestamp_ns) > MOVE_WINDOW_NS {
        return None;
    }
    let fd = conn_fd(tgid, seen.conn);
    if fd < 0 {
        return None;
    }
    // SAFETY: as above.
    unsafe { (*span).read = 1 };
    let _ = CONN_FD.insert(&[tgid, inner], &fd, 0);
    let _ = INNER_CONN.insert(&[tgid, inner], &inner, 0);
    let _ = MOVED_FD.insert(&[tgid, fd as u64], &inner, 0);
    let moved = Moved {
        inner,
        timestamp_ns: now,
    };
    let _ = MOVED.insert(&tgid, &moved, 0);
    Some(inner)
}

/// The socket `fd` of process `tgid` was closed: a moved connection on it is over, and its key's
/// buffer and fd no longer name it (the next connection moved to the same address is found again).
#[inline(always)]
pub fn socket_closed(tgid: u64, fd: i32) {
    let at = [tgid, fd as u64];
    // SAFETY: plain data, read once.
    if let Some(key) = unsafe { MOVED_FD.get(&at) }.copied() {
        let _ = MOVED_FD.remove(&at);
        let _ = INNER_CONN.remove(&[tgid, key]);
        let _ = CONN_FD.remove(&[tgid, key]);
    }
}

/// A written connection's key and fd: its own address, or, for a moved connection, the key
/// its first read was given. Its first write after that read ties the new address to it.
#[inline(always)]
fn write_key(tgid: u64, conn: u64) -> (u64, i32) {
    // SAFETY: plain data, read once.
    if let Some(fd) = unsafe { CONN_FD.get(&[tgid, conn]) }.copied() {
        return (conn, fd);
    }
    // SAFETY: plain data, read once.
    if let Some(key) = unsafe { CONN_ALIAS.get(&[tgid, conn]) }.copied() {
        // A connection moved again to an address seen before: nothing left to claim.
        // SAFETY: plain data copied out at once.
        if unsafe { MOVED.get(&tgid) }.is_some_and(|m| m.inner == key) {
            let _ = MOVED.remove(&tgid);
        }
        return (key, conn_fd(tgid, key));
    }
    // SAFETY: plain data copied out at once.
    if let Some(moved) = unsafe { MOVED.get(&tgid) }.copied()
        && moved.inner > conn
        && moved.inner < conn + CORE_SPAN
        // SAFETY: no preconditions.
        && unsafe { bpf_ktime_get_ns() }.wrapping_sub(moved.timestamp_ns) < MOVE_CLAIM_NS
    {
        let _ = MOVED.remove(&tgid);
        let _ = CONN_ALIAS.insert(&[tgid, conn], &moved.inner, 0);
        return (moved.inner, conn_fd(tgid, moved.inner));
    }
    (conn, -1)
}

/// `<ConnectionCommon<T> as PlaintextSink>::write(&mut self, buf)`, and `write_vectored(&mut
/// self, bufs)` on entry: the connection and both words of the slice are saved as they are.
#[uprobe]
pub fn rustls_write(ctx: ProbeContext) -> u32 {
    let (pid_tgid, traced) = current();
    if !traced {
        return 0;
    }
    if let (Some(conn), Some(buf), Some(len)) =
        (ctx.arg::<u64>(0), ctx.arg::<u64>(1), ctx.arg::<u64>(2))
    {
        save(&WRITE_ARGS, pid_tgid, conn, buf, len, true);
    }
    0
}

#[uretprobe]
pub fn rustls_write_ret(ctx: RetProbeContext) -> u32 {
    let Some((pid_tgid, mut args)) = take_write() else {
        return 0;
    };
    // `Ok(n)`: 0 in the first register, `n` in the second.
    if ctx.ret::<u64>() != 0 {
        return 0;
    }
    let n = ret2(&ctx);
    let total = if n < args.len_out { n } else { args.len_out };
    (args.ssl, args.fd) = write_key(pid_tgid >> 32, args.ssl);
    send(pid_tgid, &args, Direction::Egress, total, 0);
    0
}

/// `<ConnectionCommon<T> as PlaintextSink>::write_vectored(&mut self, bufs)`, entered through
/// [`rustls_write`] (the same three arguments): `buf` and `len_out` of the saved arguments are
/// the slices and their number.
#[uretprobe]
pub fn rustls_writev_ret(ctx: RetProbeContext) -> u32 {
    let Some((pid_tgid, mut args)) = take_write() else {
        return 0;
    };
    if ctx.ret::<u64>() != 0 {
        return 0;
    }
    let mut left = ret2(&ctx);
    if left == 0 {
        return 0;
    }
    count(Counter::Calls);
    let fd;
    (args.ssl, fd) = write_key(pid_tgid >> 32, args.ssl);
    // One record run per slice, in order, each as the piece of the call it is.
    let mut i: u32 = 0;
    while i < MAX_SLICES {
        if (i as u64) >= args.len_out || left == 0 {
            break;
        }
        // `IoSlice` is `struct iovec`: base, then length.
        let at = args.buf + (i as u64) * 16;
        // SAFETY: reads of the caller's slice list through the checked helper.
        let (Ok(base), Ok(len)) = (unsafe {
            (
                bpf_probe_read_user(at as *const u64),
                bpf_probe_read_user((at + 8) as *const u64),
            )
        }) else {
            count(Counter::ReadFailed);
            return 0;
        };
        let take = if len < left { len } else { left };
        if take > 0 {
            let slice = SslArgs {
                buf: base,
                fd,
                ..args
            };
            let wake = wakeup_flags(take + HEADER_SIZE);
            emit::<SLICE_CHUNKS>(
                pid_tgid,
                &slice,
                Direction::Egress,
                take,
                args.timestamp_ns,
                0,
                wake,
            );
        }
        left -= take;
        i += 1;
    }
    if left > 0 {
        // More slices than copied: what they held is lost, and said so.
        count(Counter::TruncatedCalls);
    }
    0
}

/// This thread's saved write, removed.
#[inline(always)]
fn take_write() -> Option<(u64, SslArgs)> {
    let pid_tgid = bpf_get_current_pid_tgid();
    // SAFETY: the value is copied out before the entry is removed.
    let args = (unsafe { WRITE_ARGS.get(&pid_tgid) }).copied()?;
    let _ = WRITE_ARGS.remove(&pid_tgid);
    Some((pid_tgid, args))
}

/// `<Reader as io::Read>::read(&mut self, buf)`: the reader's first field is the connection's
/// received-plaintext buffer.
#[uprobe]
pub fn rustls_read(ctx: ProbeContext) -> u32 {
    let (pid_tgid, traced) = current();
    if !traced {
        return 0;
    }
    let (Some(reader), Some(buf)) = (ctx.arg::<u64>(0), ctx.arg::<u64>(1)) else {
        return 0;
    };
    // SAFETY: a read of the caller's `Reader` through the checked helper.
    let Ok(inner) = (unsafe { bpf_probe_read_user(reader as *const u64) }) else {
        count(Counter::ReadFailed);
        return 0;
    };
    save(&READ_ARGS, pid_tgid, inner, buf, 0, false);
    0
}

#[uretprobe]
pub fn rustls_read_ret(ctx: RetProbeContext) -> u32 {
    let pid_tgid = bpf_get_current_pid_tgid();
    // SAFETY: the value is copied out before the entry is removed.
    let Some(mut args) = (unsafe { READ_ARGS.get(&pid_tgid) }).copied() else {
        return 0;
    };
    let _ = READ_ARGS.remove(&pid_tgid);
    if ctx.ret::<u64>() != 0 {
        return 0;
    }
    let n = ret2(&ctx);
    if n == 0 {
        return 0;
    }
    let Some(conn) = resolve(pid_tgid, args.ssl) else {
        count(Counter::Unattributed);
        return 0;
    };
    args.ssl = conn;
    args.fd = conn_fd(pid_tgid >> 32, conn);
    send_in::<READ_CHUNKS>(pid_tgid, &args, Direction::Ingress, n, 0);
    0
}

/// `Reader::into_first_chunk(self) -> io::Result<&[u8]>`: the result is written to the slot
/// the first argument points at, the reader is passed by reference in the second.
#[uprobe]
pub fn rustls_first_chunk(ctx: ProbeContext) -> u32 {
    let (pid_tgid, traced) = current();
    if !traced {
        return 0;
    }
    let (Some(ret_slot), Some(reader)) = (ctx.arg::<u64>(0), ctx.arg::<u64>(1)) else {
        return 0;
    };
    // SAFETY: a read of the caller's `Reader` through the checked helper.
    let Ok(inner) = (unsafe { bpf_probe_read_user(reader as *const u64) }) else {
        count(Counter::ReadFailed);
        return 0;
    };
    let _ = CHUNK_CALLS.insert(&pid_tgid, &ChunkCall { ret_slot, inner }, 0);
    0
}

#[uretprobe]
pub fn rustls_first_chunk_ret(ctx: RetProbeContext) -> u32 {
    let pid_tgid = bpf_get_current_pid_tgid();
    // SAFETY: the value is copied out before the entry is removed.
    let Some(call) = (unsafe { CHUNK_CALLS.get(&pid_tgid) }).copied() else {
        return 0;
    };
    let _ = CHUNK_CALLS.remove(&pid_tgid);
    // The function hands back the address of the result it wrote; anything else is a result
    // this program cannot read, and the bytes the caller then consumes are lost (counted).
    if ctx.ret::<u64>() != call.ret_slot {
        count(Counter::ReadFailed);
        return 0;
    }
    // SAFETY: reads of the result through the checked helper.
    let (Ok(ptr), Ok(len)) = (unsafe {
        (
            bpf_probe_read_user(call.ret_slot as *const u64),
            bpf_probe_read_user((call.ret_slot + 8) as *const u64),
        )
    }) else {
        count(Counter::ReadFailed);
        return 0;
    };
    // `Err` has a null pointer; an empty chunk a dangling one.
    if ptr <= 1 || len == 0 {
        return 0;
    }
    let _ = CHUNKS.insert(
        &pid_tgid,
        &Chunk {
            inner: call.inner,
            ptr,
            len,
        },
        0,
    );
    0
}

/// `<Reader as BufRead>::consume(&mut self, amt)`: `amt` bytes of the lent chunk were taken.
#[uprobe]
pub fn rustls_consume(ctx: ProbeContext) -> u32 {
    let (pid_tgid, traced) = current();
    if !traced {
        return 0;
    }
    let (Some(reader), Some(amt)) = (ctx.arg::<u64>(0), ctx.arg::<u64>(1)) else {
        return 0;
    };
    if amt == 0 {
        return 0;
    }
    // Bytes taken of a chunk this program did not see lent out (the agent attached in between)
    // or of another buffer's: their connection cannot be told (counted).
    // SAFETY: plain data copied out at once.
    let Some(chunk) = (unsafe { CHUNKS.get(&pid_tgid) }).copied() else {
        count(Counter::Unattributed);
        return 0;
    };
    let _ = CHUNKS.remove(&pid_tgid);
    // SAFETY: a read of the caller's `Reader` through the checked helper.
    let Ok(inner) = (unsafe { bpf_probe_read_user(reader as *const u64) }) else {
        count(Counter::ReadFailed);
        return 0;
    };
    if inner != chunk.inner {
        count(Counter::Unattributed);
        return 0;
    }
    let Some(conn) = resolve(pid_tgid, inner) else {
        count(Counter::Unattributed);
        return 0;
    };
    let total = if amt < chunk.len { amt } else { chunk.len };
    let args = SslArgs {
        ssl: conn,
        buf: chunk.ptr,
        len_out: 0,
        // SAFETY: no preconditions.
        timestamp_ns: unsafe { bpf_ktime_get_ns() },
        fd: conn_fd(pid_tgid >> 32, conn),
        reserved: 0,
    };
    // A chunk holds one TLS record's plaintext, at most 16 KiB: one record.
    send_in::<1>(pid_tgid, &args, Direction::Ingress, total, 0);
    0
}
