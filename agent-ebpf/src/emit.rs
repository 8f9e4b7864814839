//! Sending a TLS call's plaintext to user space, shared by every TLS provider: the bytes are
//! copied from the target's buffer into the per-CPU scratch record and sent to the ring buffer in
//! records of at most [`MAX_CHUNK`] bytes, without waking the reader (it polls; a wakeup per record
//! would triple the cost of every call).

use agent_common::{
    Counter, RecordHeader, RecordBuffer, Direction, SslArgs,
    data::{MAX_CHUNK, flags},
    record_kind,
};
use aya_ebpf::{
    bindings::{BPF_RB_AVAIL_DATA, BPF_RB_FORCE_WAKEUP, BPF_RB_NO_WAKEUP},
    helpers::bpf_probe_read_user_buf,
};

use crate::maps::{EVENTS, SCRATCH, count, wakeup_bytes};

/// Bytes of a record's header.
pub const HEADER_SIZE: u64 = core::mem::size_of::<RecordHeader>() as u64;

/// Sends the `total` bytes a call moved from `args.buf` (the connection `args.ssl`, on socket
/// `args.fd`) as records of at most [`MAX_CHUNK`] bytes, up to `CHUNKS` of them; the last one
/// says when the call moved more ([`flags::TRUNCATED`], counted).
///
/// `CHUNKS` is [`agent_common::data::MAX_CHUNKS_PER_CALL`] for calls that can move any amount, and
/// 1 for calls that return at most one TLS record's plaintext (16 KiB): every iteration of the
/// chunk loop is walked by the verifier (a 64-chunk copy costs about half of its budget of a
/// million instructions), so a program that needs no loop should not pay for one.
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
    let truncated = total > (MAX_CHUNK as u64) * (CHUNKS as u64);
    if truncated {
        count(Counter::TruncatedCalls);
    }
    // Each iteration's offset is derived from the index alone, so the verifier sees the same
    // state at the top of every iteration whatever path the previous one took, and prunes.
    let mut i: u32 = 0;
    while i < CHUNKS {
        let offset = (i as u64) * (MAX_CHUNK as u64);
        if offset >= total {
            break;
        }
        let last = i == CHUNKS - 1;
        emit_chunk(
            pid_tgid,
            args,
            dir,
            total,
            total32,
            offset,
            timestamp_ns,
            last && truncated,
            fd_flags,
            wake,
        );
        i += 1;
    }
}

#[inline(always)]
#[allow(clippy::too_many_arguments)]
fn emit_chunk(
    pid_tgid: u64,
    args: &SslArgs,
    dir: Direction,
    total: u64,
    total32: u32,
    offset: u64,
    timestamp_ns: u64,
    truncated: bool,
    fd_flags: u32,
    wake: u64,
) {
    let Some(record) = SCRATCH.get_ptr_mut(0) else {
        return;
    };
    // SAFETY: the per-CPU scratch slot belongs to this program until it returns.
    let record: &mut RecordBuffer = unsafe { &mut *record };
    let remaining = total - offset;
    let len = if remaining < MAX_CHUNK as u64 {
        remaining as usize
    } else {
        MAX_CHUNK
    };
    // The verifier needs the bound spelled out on the value it sees.
    let len = if len > MAX_CHUNK { MAX_CHUNK } else { len };
    let src = (args.buf + offset) as *const u8;
    // SAFETY: `len <= MAX_CHUNK`, the size of `data`.
    let copied =
        unsafe { bpf_probe_read_user_buf(src, record.data.get_unchecked_mut(..len)) }.is_ok();
    let mut f = fd_flags | if truncated { flags::TRUNCATED } else { 0 };
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
        tgid: (pid_tgid >> 32) as u32,
        tid: pid_tgid as u32,
        conn: args.ssl,
        timestamp_ns,
        fd: args.fd,
        direction: dir as u32,
        offset: offset as u32,
        len: out_len as u32,
        total_len: total32,
        reserved: 0,
    };
    let size = core::mem::size_of::<RecordHeader>() + out_len;
    let size = if size > core::mem::size_of::<RecordBuffer>() {
        core::mem::size_of::<RecordBuffer>()
    } else {
        size
    };
    // SAFETY: `size` never exceeds the record.
    let bytes =
        unsafe { core::slice::from_raw_parts((record as *const RecordBuffer).cast::<u8>(), size) };
    if EVENTS.output::<[u8]>(bytes, wake).is_err() {
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
