//! Recording a TLS call and sending its plaintext to user space, shared by every TLS provider.
//!
//! Entry probes save the call's arguments ([`save_args`]); return probes take them back and copy
//! the bytes the call really moved ([`finish_call`]) into the per-CPU scratch record, sent to the
//! ring buffer in records of at most [`MAX_CHUNK`] bytes, without waking the reader (it polls; a
//! wakeup per record would triple the cost of every call). Connection ends and server names are
//! header-only or short records ([`send_close`], [`send_server_name`]).

use agent_common::{
    Counter, Direction, RecordBuffer, RecordHeader, SslArgs,
    data::{MAX_CHUNK, MAX_CHUNKS_PER_CALL, MAX_SERVER_NAME, flags},
    record_kind,
};
use aya_ebpf::{
    bindings::{BPF_RB_AVAIL_DATA, BPF_RB_FORCE_WAKEUP, BPF_RB_NO_WAKEUP},
    helpers::{
        bpf_get_current_pid_tgid, bpf_ktime_get_ns, bpf_probe_read_user, bpf_probe_read_user_buf,
        bpf_probe_read_user_str_bytes,
    },
    maps::LruHashMap,
    programs::{ProbeContext, RetProbeContext},
};

use crate::maps::{
    ConnKey, EVENTS, LAST_FD, LOSSY, SCRATCH, count, current, is_target, ringbuf_full_count,
    wakeup_bytes,
};

/// Bytes of a record's header.
pub const HEADER_SIZE: u64 = core::mem::size_of::<RecordHeader>() as u64;

/// How a TLS function says how many bytes it moved.
#[derive(Clone, Copy, PartialEq, Eq)]
pub enum Returns {
    /// A C `int` count; 0 or less moved nothing (`SSL_read`, `SSL_write`, `PR_Read`, ...).
    Int,
    /// A C `int` that is 1 on success, the count stored through the pointer saved as
    /// `len_out` (`SSL_read_ex`, `SSL_write_ex`).
    IntAndCount,
    /// A `ssize_t` count; 0 or less moved nothing (`gnutls_record_send`, `gnutls_record_recv`).
    SSize,
}

/// Saves a call's arguments for its return probe: the connection object (first argument), the
/// buffer (second) and, with `ex`, the count pointer (fourth).
#[inline(always)]
pub fn save_args(ctx: &ProbeContext, map: &LruHashMap<u64, SslArgs>, ex: bool, stamp: bool) {
    let (pid_tgid, traced) = current();
    if !traced {
        return;
    }
    let (Some(conn), Some(buf)) = (ctx.arg::<u64>(0), ctx.arg::<u64>(1)) else {
        return;
    };
    let len_out = if ex {
        ctx.arg::<u64>(3).unwrap_or(0)
    } else {
        0
    };
    save(map, pid_tgid, conn, buf, len_out, stamp);
}

/// Saves the arguments of a call of the calling thread.
#[inline(always)]
pub fn save(
    map: &LruHashMap<u64, SslArgs>,
    pid_tgid: u64,
    conn: u64,
    buf: u64,
    len_out: u64,
    stamp: bool,
) {
    let args = SslArgs {
        ssl: conn,
        buf,
        len_out,
        // Writes are stamped when the bytes are handed over; reads when they arrive (at return).
        // SAFETY: no preconditions.
        timestamp_ns: if stamp {
            unsafe { bpf_ktime_get_ns() }
        } else {
            0
        },
        fd: -1,
        reserved: 0,
    };
    let _ = map.insert(&pid_tgid, &args, 0);
}

/// The arguments the entry probe saved for this thread's call, removed from `map`, with the fd
/// flags: a call that made no socket syscall takes the fd the thread last saw inside a call on
/// the same connection object ([`flags::FD_FALLBACK`]). A traced process's call with nothing
/// saved is counted, unless `filtered` (the entry probe skips some calls on purpose: NSPR calls
/// on sockets that are not TLS).
#[inline(always)]
pub fn take_args(
    map: &LruHashMap<u64, SslArgs>,
    pid_tgid: u64,
    filtered: bool,
) -> Option<(SslArgs, u32)> {
    // The entry probe saved arguments only for traced processes: finding them is the filter.
    // SAFETY: the value is copied out before the entry is removed.
    let Some(mut args) = (unsafe { map.get(&pid_tgid) }).copied() else {
        if !filtered && is_target((pid_tgid >> 32) as u32) {
            count(Counter::UnmatchedReturn);
        }
        return None;
    };
    let _ = map.remove(&pid_tgid);
    let mut fd_flags = 0;
    if args.fd < 0 {
        // SAFETY: plain data copied out at once.
        if let Some(last) = unsafe { LAST_FD.get(&pid_tgid) }.copied()
            && last.ssl == args.ssl
        {
            args.fd = last.fd;
            fd_flags = flags::FD_FALLBACK;
        }
    }
    Some((args, fd_flags))
}

/// The return probe of a call whose entry was saved with [`save_args`]: sends the bytes it moved.
#[inline(always)]
pub fn finish_call(
    ctx: &RetProbeContext,
    map: &LruHashMap<u64, SslArgs>,
    dir: Direction,
    returns: Returns,
) {
    finish(ctx, map, dir, returns, false);
}

/// [`finish_call`] for functions whose entry probe saves only some calls (see [`take_args`]).
#[inline(always)]
pub fn finish_filtered_call(
    ctx: &RetProbeContext,
    map: &LruHashMap<u64, SslArgs>,
    dir: Direction,
    returns: Returns,
) {
    finish(ctx, map, dir, returns, true);
}

#[inline(always)]
fn finish(
    ctx: &RetProbeContext,
    map: &LruHashMap<u64, SslArgs>,
    dir: Direction,
    returns: Returns,
    filtered: bool,
) {
    let pid_tgid = bpf_get_current_pid_tgid();
    let Some((args, fd_flags)) = take_args(map, pid_tgid, filtered) else {
        return;
    };
    let total: u64 = match returns {
        Returns::Int | Returns::IntAndCount => {
            // A C `int`: read as 32 bits (`-1` in `eax` leaves the upper half of `rax` zero,
            // which as 64 bits would read as 4 GiB).
            let ret: i32 = ctx.ret::<i32>();
            if returns == Returns::Int {
                if ret <= 0 {
                    return;
                }
                ret as u64
            } else {
                if ret != 1 || args.len_out == 0 {
                    return;
                }
                // SAFETY: reading the caller's size_t through the checked helper.
                match unsafe { bpf_probe_read_user(args.len_out as *const u64) } {
                    Ok(n) => n,
                    Err(_) => {
                        count(Counter::ReadFailed);
                        return;
                    }
                }
            }
        }
        Returns::SSize => {
            let ret: i64 = ctx.ret::<i64>();
            if ret <= 0 {
                return;
            }
            ret as u64
        }
    };
    send(pid_tgid, &args, dir, total, fd_flags);
}

/// Sends the `total` bytes a call moved from `args.buf`, stamped now for reads (the bytes had
/// arrived when the call returned) and at entry for writes (they were handed over then), in up
/// to [`MAX_CHUNKS_PER_CALL`] records.
#[inline(always)]
pub fn send(pid_tgid: u64, args: &SslArgs, dir: Direction, total: u64, fd_flags: u32) {
    send_in::<MAX_CHUNKS_PER_CALL>(pid_tgid, args, dir, total, fd_flags);
}

/// [`send`] in up to `CHUNKS` records (see [`emit`]), for programs whose other work leaves the
/// verifier less room for the chunk loop.
#[inline(always)]
pub fn send_in<const CHUNKS: u32>(
    pid_tgid: u64,
    args: &SslArgs,
    dir: Direction,
    total: u64,
    fd_flags: u32,
) {
    if total == 0 {
        return;
    }
    count(Counter::Calls);
    let timestamp_ns = match dir {
        // SAFETY: no preconditions.
        Direction::Ingress => unsafe { bpf_ktime_get_ns() },
        Direction::Egress => args.timestamp_ns,
    };
    // One wakeup decision for all of the call's records: deciding per record inside the chunk
    // loop multiplies the states the verifier walks.
    let wake = wakeup_flags(total + HEADER_SIZE);
    emit::<CHUNKS>(pid_tgid, args, dir, total, timestamp_ns, fd_flags, wake);
}

/// Sends the `total` bytes a call moved from `args.buf` (the connection `args.ssl`, on socket
/// `args.fd`) as records of at most [`MAX_CHUNK`] bytes, up to `CHUNKS` of them; the last one
/// says when the call moved more ([`flags::TRUNCATED`], counted).
///
/// `CHUNKS` is [`MAX_CHUNKS_PER_CALL`] for calls that can move any amount, and
/// 1 for calls that return at most one TLS record's plaintext (16 KiB).
///
/// The verifier walks every iteration of the loop, so the loop is written for it: full chunks
/// first, each a constant [`MAX_CHUNK`] bytes with an offset derived from the index alone (so the
/// paths through one iteration leave the same state at the top of the next, and are pruned),
/// then the remainder, once, after the loop. A copy length computed inside the loop from the
/// call's total would differ at every iteration and multiply the states to explore.
#[inline(always)]
#[allow(clippy::too_many_arguments)]
pub fn emit<const CHUNKS: u32>(
    pid_tgid: u64,
    args: &SslArgs,
    dir: Direction,
    total: u64,
    timestamp_ns: u64,
    fd_flags: u32,
    wake: u64,
) {
    let total32 = if total > u32::MAX as u64 {
        u32::MAX
    } else {
        total as u32
    };
    let max = (MAX_CHUNK as u64) * (CHUNKS as u64);
    let truncated = total > max;
    let copied = if truncated {
        count(Counter::TruncatedCalls);
        max
    } else {
        total
    };
    let full = (copied / MAX_CHUNK as u64) as u32;
    let tail = (copied % MAX_CHUNK as u64) as usize;
    // A record of this connection lost earlier: this call's records say so. The flag is data
    // the loop only stores, so it adds no state for the verifier to walk.
    let key = ConnKey {
        conn: args.ssl,
        tgid: (pid_tgid >> 32) as u32,
        reserved: 0,
    };
    // SAFETY: a plain byte, read once.
    let lost_before = if unsafe { LOSSY.get(&key) }.is_some() {
        let _ = LOSSY.remove(&key);
        flags::LOST_BEFORE
    } else {
        0
    };
    let full_before = ringbuf_full_count();
    let chunk = Chunk {
        pid_tgid,
        args,
        dir,
        total32,
        timestamp_ns,
        fd_flags: fd_flags | lost_before,
        wake,
    };
    let mut i: u32 = 0;
    while i < CHUNKS {
        if i >= full {
            break;
        }
        let offset = (i as u64) * (MAX_CHUNK as u64);
        chunk.send(offset, MAX_CHUNK, truncated && i == CHUNKS - 1);
        i += 1;
    }
    if tail > 0 {
        chunk.send((full as u64) * (MAX_CHUNK as u64), tail, false);
    }
    // Counted, not tracked inside the loop: a flag set per failed chunk would double the
    // states of every iteration.
    if ringbuf_full_count() != full_before {
        let _ = LOSSY.insert(&key, &1, 0);
    }
}

/// What every record of one call shares.
struct Chunk<'a> {
    pid_tgid: u64,
    args: &'a SslArgs,
    dir: Direction,
    total32: u32,
    timestamp_ns: u64,
    fd_flags: u32,
    wake: u64,
}

impl Chunk<'_> {
    /// Sends the `len` bytes at `offset` of the call's buffer as one record.
    #[inline(always)]
    fn send(&self, offset: u64, len: usize, truncated: bool) {
        let Some(record) = SCRATCH.get_ptr_mut(0) else {
            return;
        };
        // SAFETY: the per-CPU scratch slot belongs to this program until it returns.
        let record: &mut RecordBuffer = unsafe { &mut *record };
        // The verifier needs the bound spelled out on the value it sees.
        let len = if len > MAX_CHUNK { MAX_CHUNK } else { len };
        let src = (self.args.buf + offset) as *const u8;
        // SAFETY: `len <= MAX_CHUNK`, the size of `data`.
        let copied =
            unsafe { bpf_probe_read_user_buf(src, record.data.get_unchecked_mut(..len)) }.is_ok();
        let mut f = self.fd_flags | if truncated { flags::TRUNCATED } else { 0 };
        let out_len = if copied {
            len
        } else {
            count(Counter::ReadFailed);
            f |= flags::READ_FAILED;
            0
        };
        record.header = RecordHeader {
            kind: record_kind::DATA,
            flags: f,
            tgid: (self.pid_tgid >> 32) as u32,
            tid: self.pid_tgid as u32,
            conn: self.args.ssl,
            timestamp_ns: self.timestamp_ns,
            fd: self.args.fd,
            direction: self.dir as u32,
            offset: offset as u32,
            len: out_len as u32,
            total_len: self.total32,
            reserved: 0,
        };
        let size = core::mem::size_of::<RecordHeader>() + out_len;
        let size = if size > core::mem::size_of::<RecordBuffer>() {
            core::mem::size_of::<RecordBuffer>()
        } else {
            size
        };
        // SAFETY: `size` never exceeds the record.
        let bytes = unsafe {
            core::slice::from_raw_parts((record as *const RecordBuffer).cast::<u8>(), size)
        };
        if EVENTS.output::<[u8]>(bytes, self.wake).is_err() {
            count(Counter::RingbufFull);
        }
    }
}

/// The connection object `conn` of the calling process is gone (`SSL_free`, `gnutls_deinit`,
/// `PR_Close`): user space closes its flow.
#[inline(always)]
pub fn send_close(pid_tgid: u64, conn: u64) {
    let header = RecordHeader {
        kind: record_kind::CONN_CLOSE,
        tgid: (pid_tgid >> 32) as u32,
        tid: pid_tgid as u32,
        conn,
        // SAFETY: no preconditions.
        timestamp_ns: unsafe { bpf_ktime_get_ns() },
        fd: -1,
        ..RecordHeader::default()
    };
    if EVENTS
        .output::<RecordHeader>(&header, wakeup_flags(HEADER_SIZE))
        .is_err()
    {
        count(Counter::RingbufFull);
    }
}

/// The client set the server name (SNI) of connection `conn`: the string at `name`, NUL
/// terminated, or with `len` its first `len` bytes; at most [`MAX_SERVER_NAME`] bytes are sent.
#[inline(always)]
pub fn send_server_name(pid_tgid: u64, conn: u64, name: u64, len: Option<u64>) {
    if name == 0 {
        return;
    }
    let Some(record) = SCRATCH.get_ptr_mut(0) else {
        return;
    };
    // SAFETY: the per-CPU scratch slot belongs to this program until it returns.
    let record: &mut RecordBuffer = unsafe { &mut *record };
    let len = match len {
        Some(n) => {
            let n = if n > MAX_SERVER_NAME as u64 {
                MAX_SERVER_NAME
            } else {
                n as usize
            };
            // The verifier needs the bound spelled out on the value it sees.
            let n = if n > MAX_SERVER_NAME {
                MAX_SERVER_NAME
            } else {
                n
            };
            // SAFETY: `n <= MAX_SERVER_NAME <= MAX_CHUNK`, within `data`.
            let dest = unsafe { record.data.get_unchecked_mut(..n) };
            // SAFETY: the checked helper copies exactly `dest.len()` bytes.
            if unsafe { bpf_probe_read_user_buf(name as *const u8, dest) }.is_err() {
                count(Counter::ReadFailed);
                return;
            }
            n
        }
        None => {
            // SAFETY: `MAX_SERVER_NAME <= MAX_CHUNK`, within `data`.
            let dest = unsafe { record.data.get_unchecked_mut(..MAX_SERVER_NAME) };
            // SAFETY: the checked helper copies at most `dest.len()` bytes.
            match unsafe { bpf_probe_read_user_str_bytes(name as *const u8, dest) } {
                Ok(bytes) => bytes.len(),
                Err(_) => {
                    count(Counter::ReadFailed);
                    return;
                }
            }
        }
    };
    let len = if len > MAX_SERVER_NAME {
        MAX_SERVER_NAME
    } else {
        len
    };
    record.header = RecordHeader {
        kind: record_kind::SERVER_NAME,
        tgid: (pid_tgid >> 32) as u32,
        tid: pid_tgid as u32,
        conn,
        // SAFETY: no preconditions.
        timestamp_ns: unsafe { bpf_ktime_get_ns() },
        fd: -1,
        len: len as u32,
        total_len: len as u32,
        ..RecordHeader::default()
    };
    let size = core::mem::size_of::<RecordHeader>() + len;
    let size = if size > core::mem::size_of::<RecordHeader>() + MAX_SERVER_NAME {
        core::mem::size_of::<RecordHeader>() + MAX_SERVER_NAME
    } else {
        size
    };
    // SAFETY: `size` never exceeds the record.
    let out =
        unsafe { core::slice::from_raw_parts((record as *const RecordBuffer).cast::<u8>(), size) };
    if EVENTS
        .output::<[u8]>(out, wakeup_flags(size as u64))
        .is_err()
    {
        count(Counter::RingbufFull);
    }
}

/// No wakeup unless this record is the one that takes the waiting data past the threshold.
///
/// The reader polls on a short timer, so most records need no wakeup at all; the one forced
/// wakeup on crossing the threshold gets a sleeping reader going before the ring fills. Once past
/// it the reader is awake and draining: waking it again for every record would only cost each
/// TLS call an inter-processor interrupt (an expensive MSR write in a virtual machine).
#[inline(always)]
pub fn wakeup_flags(size: u64) -> u64 {
    let threshold = wakeup_bytes();
    let waiting = EVENTS.query(BPF_RB_AVAIL_DATA as u64);
    // Each record also carries an 8-byte ring-buffer header.
    if waiting < threshold && waiting + size + 8 >= threshold {
        BPF_RB_FORCE_WAKEUP as u64
    } else {
        BPF_RB_NO_WAKEUP as u64
    }
}
