//! Sending a TLS call's plaintext to user space, shared by every TLS provider: the bytes are
//! copied from the target's buffer into the per-CPU scratch record and sent to the ring buffer in
//! records of at most [`MAX_CHUNK`] bytes, without waking the reader (it polls; a wakeup per record
//! would triple the cost of every call).

use agent_common::{
    Counter, Direction, RecordBuffer, RecordHeader, SslArgs,
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
    let chunk = Chunk {
        pid_tgid,
        args,
        dir,
        total32,
        timestamp_ns,
        fd_flags,
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
