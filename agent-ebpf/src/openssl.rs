//! OpenSSL (and BoringSSL, which exports the same names): `SSL_write`, `SSL_read`,
//! `SSL_write_ex`, `SSL_read_ex` entry and return, `SSL_free` for the end of a connection and
//! `SSL_ctrl` for the server name a client sets (SNI).
//!
//! Entry probes save the arguments; return probes copy the bytes the call really moved (the return
//! value, or `*written` / `*readbytes` for the `_ex` variants) into the ring buffer
//! ([`crate::emit`]).

use agent_common::{
    Counter, Direction, RecordBuffer, RecordHeader, SslArgs,
    data::{MAX_CHUNKS_PER_CALL, MAX_SERVER_NAME, SSL_CTRL_SET_TLSEXT_HOSTNAME, flags},
    record_kind,
};
use aya_ebpf::{
    helpers::{
        bpf_get_current_pid_tgid, bpf_ktime_get_ns, bpf_probe_read_user,
        bpf_probe_read_user_str_bytes,
    },
    macros::{uprobe, uretprobe},
    maps::LruHashMap,
    programs::{ProbeContext, RetProbeContext},
};

use crate::{
    emit::{HEADER_SIZE, emit, wakeup_flags},
    maps::{EVENTS, LAST_FD, READ_ARGS, SCRATCH, WRITE_ARGS, count, current, is_target},
};

#[uprobe]
pub fn ssl_write(ctx: ProbeContext) -> u32 {
    save_args(&ctx, &WRITE_ARGS, false, true);
    0
}

#[uretprobe]
pub fn ssl_write_ret(ctx: RetProbeContext) -> u32 {
    finish_call(&ctx, &WRITE_ARGS, Direction::Egress, false);
    0
}

#[uprobe]
pub fn ssl_write_ex(ctx: ProbeContext) -> u32 {
    save_args(&ctx, &WRITE_ARGS, true, true);
    0
}

#[uretprobe]
pub fn ssl_write_ex_ret(ctx: RetProbeContext) -> u32 {
    finish_call(&ctx, &WRITE_ARGS, Direction::Egress, true);
    0
}

#[uprobe]
pub fn ssl_read(ctx: ProbeContext) -> u32 {
    save_args(&ctx, &READ_ARGS, false, false);
    0
}

#[uretprobe]
pub fn ssl_read_ret(ctx: RetProbeContext) -> u32 {
    finish_call(&ctx, &READ_ARGS, Direction::Ingress, false);
    0
}

#[uprobe]
pub fn ssl_read_ex(ctx: ProbeContext) -> u32 {
    save_args(&ctx, &READ_ARGS, true, false);
    0
}

#[uretprobe]
pub fn ssl_read_ex_ret(ctx: RetProbeContext) -> u32 {
    finish_call(&ctx, &READ_ARGS, Direction::Ingress, true);
    0
}

/// `SSL_free(ssl)`: the connection object is gone; user space closes the flow.
#[uprobe]
pub fn ssl_free(ctx: ProbeContext) -> u32 {
    let _ = try_ssl_free(&ctx);
    0
}

fn try_ssl_free(ctx: &ProbeContext) -> Result<(), i64> {
    let (pid_tgid, traced) = current();
    if !traced {
        return Ok(());
    }
    let ssl: u64 = ctx.arg(0).ok_or(0i64)?;
    let header = RecordHeader {
        kind: record_kind::CONN_CLOSE,
        tgid: (pid_tgid >> 32) as u32,
        tid: pid_tgid as u32,
        conn: ssl,
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
    Ok(())
}

/// `SSL_ctrl(ssl, cmd, larg, parg)`: with `SSL_CTRL_SET_TLSEXT_HOSTNAME`, `parg` is the server
/// name the client will send (`SSL_set_tlsext_host_name` is a macro over this call).
#[uprobe]
pub fn ssl_ctrl(ctx: ProbeContext) -> u32 {
    let _ = try_ssl_ctrl(&ctx);
    0
}

fn try_ssl_ctrl(ctx: &ProbeContext) -> Result<(), i64> {
    let cmd: u64 = ctx.arg(1).ok_or(0i64)?;
    if cmd as i32 != SSL_CTRL_SET_TLSEXT_HOSTNAME {
        return Ok(());
    }
    let (pid_tgid, traced) = current();
    if !traced {
        return Ok(());
    }
    let ssl: u64 = ctx.arg(0).ok_or(0i64)?;
    let name: u64 = ctx.arg(3).ok_or(0i64)?;
    if name == 0 {
        return Ok(());
    }
    let record = SCRATCH.get_ptr_mut(0).ok_or(0i64)?;
    // SAFETY: the per-CPU scratch slot belongs to this program until it returns.
    let record: &mut RecordBuffer = unsafe { &mut *record };
    // SAFETY: `MAX_SERVER_NAME <= MAX_CHUNK`, within `data`.
    let dest = unsafe { record.data.get_unchecked_mut(..MAX_SERVER_NAME) };
    // SAFETY: the checked helper copies at most `dest.len()` bytes.
    let Ok(bytes) = (unsafe { bpf_probe_read_user_str_bytes(name as *const u8, dest) }) else {
        count(Counter::ReadFailed);
        return Ok(());
    };
    let len = bytes.len();
    let len = if len > MAX_SERVER_NAME {
        MAX_SERVER_NAME
    } else {
        len
    };
    record.header = RecordHeader {
        kind: record_kind::SERVER_NAME,
        tgid: (pid_tgid >> 32) as u32,
        tid: pid_tgid as u32,
        conn: ssl,
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
    Ok(())
}

#[inline(always)]
fn save_args(ctx: &ProbeContext, map: &LruHashMap<u64, SslArgs>, ex: bool, stamp: bool) {
    let (pid_tgid, traced) = current();
    if !traced {
        return;
    }
    let (Some(ssl), Some(buf)) = (ctx.arg::<u64>(0), ctx.arg::<u64>(1)) else {
        return;
    };
    let len_out = if ex {
        ctx.arg::<u64>(3).unwrap_or(0)
    } else {
        0
    };
    let args = SslArgs {
        ssl,
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

#[inline(always)]
fn finish_call(ctx: &RetProbeContext, map: &LruHashMap<u64, SslArgs>, dir: Direction, ex: bool) {
    // The entry probe saved arguments only for traced processes: finding them is the filter.
    let pid_tgid = bpf_get_current_pid_tgid();
    // SAFETY: the value is copied out before the entry is removed.
    let Some(mut args) = (unsafe { map.get(&pid_tgid) }).copied() else {
        if is_target((pid_tgid >> 32) as u32) {
            count(Counter::UnmatchedReturn);
        }
        return;
    };
    let _ = map.remove(&pid_tgid);
    // No socket syscall inside this call: fall back to the fd this thread last saw inside a
    // call on the same connection object.
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

    // Every one of these functions returns a C `int`: read it as 32 bits (`-1` in `eax` leaves the
    // upper half of `rax` zero, which as 64 bits would read as 4 GiB).
    let ret: i32 = ctx.ret::<i32>();
    let total: u64 = if ex {
        // SSL_write_ex / SSL_read_ex return 1 on success and store the count through a pointer.
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
    } else {
        if ret <= 0 {
            return;
        }
        ret as u64
    };
    if total == 0 {
        return;
    }
    count(Counter::Calls);

    // For reads the bytes had arrived when the call returned; for writes they were handed over
    // at entry.
    let timestamp_ns = match dir {
        // SAFETY: no preconditions.
        Direction::Ingress => unsafe { bpf_ktime_get_ns() },
        Direction::Egress => args.timestamp_ns,
    };
    // One wakeup decision for all of the call's records: deciding per record inside the chunk
    // loop multiplies the states the verifier walks.
    let wake = wakeup_flags(total + HEADER_SIZE);
    emit::<MAX_CHUNKS_PER_CALL>(pid_tgid, &args, dir, total, timestamp_ns, fd_flags, wake);
}

/// An entry probe that does nothing: the floor the probes' cost is measured against.
#[uprobe]
pub fn probe_empty(_ctx: ProbeContext) -> u32 {
    0
}

/// A return probe that does nothing: the floor the probes' cost is measured against.
#[uretprobe]
pub fn probe_empty_ret(_ctx: RetProbeContext) -> u32 {
    0
}
