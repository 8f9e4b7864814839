//! Go `crypto/tls`: `(*Conn).Write` at entry, `(*Conn).Read` at entry and at each of its `RET`
//! instructions.
//!
//! Go 1.17+ on x86-64 passes arguments and results in registers (`rax`, `rbx`, `rcx`, `rdi`,
//! ...) and keeps the current goroutine (`g`) in `r14`. Go code is never given a uretprobe: the
//! runtime copies goroutine stacks when they grow, and a return address rewritten by a uretprobe
//! would send the program into the kernel's trampoline from the wrong stack. Plain uprobes on the
//! `RET` instructions (found by user space) see the results instead.
//!
//! - `Write(b)`: the bytes are final at entry, so they are sent at entry, with the entry time. Sent
//!   before the call can put them on the wire, they always reach the ring ahead of the response
//!   they cause, which another goroutine may read on another CPU before this call returns. A
//!   failed write is not a concern: crypto/tls makes any write error permanent for the
//!   connection.
//! - `Read(b)`: the connection and buffer are saved at entry, keyed by goroutine (a goroutine may
//!   move to another thread before it returns), and the `n` bytes read are copied at `RET`
//!   (at most one TLS record's plaintext, 16 KiB: `Read` returns from one record at a time).
//!
//! The socket fd is read at entry through `tls.Conn.conn` (a `net.Conn` interface: type word,
//! then data pointer) → `*net.TCPConn` → `conn.fd` (`*netFD`) → `pfd.Sysfd`, with the offsets of
//! this binary in the attachment's BPF cookie (0: unknown, the fd stays -1). A connection whose
//! `net.Conn` is not a `*net.TCPConn` (a wrapper) yields a wrong or no fd; user space only
//! trusts an fd that is a socket of the process.

use agent_common::{
    Counter, Direction, GoConnOffsets, GoroutineKey, SslArgs, data::MAX_CHUNKS_PER_CALL,
};
use aya_ebpf::{
    EbpfContext as _,
    helpers::{bpf_get_attach_cookie, bpf_ktime_get_ns, bpf_probe_read_user},
    macros::uprobe,
    programs::ProbeContext,
};

use crate::{
    emit::{HEADER_SIZE, emit, wakeup_flags},
    maps::{GO_READ_ARGS, count, current, is_target, note_tls_fd},
};

/// `(*Conn).Write(b []byte) (int, error)`: the receiver in `rax`, `b` in `rbx` (pointer) and
/// `rcx` (length).
#[uprobe]
pub fn go_tls_write(ctx: ProbeContext) -> u32 {
    let _ = try_go_tls_write(&ctx);
    0
}

fn try_go_tls_write(ctx: &ProbeContext) -> Result<(), i64> {
    let (pid_tgid, traced) = current();
    if !traced {
        return Ok(());
    }
    // SAFETY: the context is the probed thread's saved registers.
    let (conn, buf, len) = unsafe { ((*ctx.regs).rax, (*ctx.regs).rbx, (*ctx.regs).rcx) };
    if conn == 0 || (len as i64) <= 0 {
        return Ok(());
    }
    let len = clamp(len);
    if len == 0 {
        return Ok(());
    }
    let fd = conn_fd(ctx, conn);
    // SAFETY: no preconditions.
    let now = unsafe { bpf_ktime_get_ns() };
    let args = SslArgs {
        ssl: conn,
        buf,
        len_out: 0,
        timestamp_ns: now,
        fd,
        reserved: 0,
    };
    count(Counter::Calls);
    emit::<MAX_CHUNKS_PER_CALL>(
        pid_tgid,
        &args,
        Direction::Egress,
        len,
        now,
        0,
        wakeup_flags(len + HEADER_SIZE),
    );
    // After the copy: a branch on the fd before the chunk loop would make the verifier walk the
    // loop once for a known fd and once for an unknown one.
    if fd >= 0 {
        note_tls_fd(pid_tgid, fd);
    }
    Ok(())
}

/// `(*Conn).Read(b []byte) (int, error)`: saves the receiver and `b`'s pointer for the `RET`
/// probes.
#[uprobe]
pub fn go_tls_read(ctx: ProbeContext) -> u32 {
    let _ = try_go_tls_read(&ctx);
    0
}

fn try_go_tls_read(ctx: &ProbeContext) -> Result<(), i64> {
    let (pid_tgid, traced) = current();
    if !traced {
        return Ok(());
    }
    // SAFETY: the context is the probed thread's saved registers.
    let (conn, buf, g) = unsafe { ((*ctx.regs).rax, (*ctx.regs).rbx, (*ctx.regs).r14) };
    if conn == 0 {
        return Ok(());
    }
    let fd = conn_fd(ctx, conn);
    if fd >= 0 {
        note_tls_fd(pid_tgid, fd);
    }
    let key = GoroutineKey {
        g,
        tgid: (pid_tgid >> 32) as u32,
        reserved: 0,
    };
    let args = SslArgs {
        ssl: conn,
        buf,
        len_out: 0,
        timestamp_ns: 0,
        fd,
        reserved: 0,
    };
    // A call restarted after its stack grew passes here twice with the same values.
    let _ = GO_READ_ARGS.insert(&key, &args, 0);
    Ok(())
}

/// A `RET` of `(*Conn).Read`: `n` in `rax`. Copies the `n` bytes read into the saved buffer.
#[uprobe]
pub fn go_tls_read_ret(ctx: ProbeContext) -> u32 {
    let _ = try_go_tls_read_ret(&ctx);
    0
}

fn try_go_tls_read_ret(ctx: &ProbeContext) -> Result<(), i64> {
    let (pid_tgid, _) = current();
    // SAFETY: the context is the probed thread's saved registers.
    let (n, g) = unsafe { ((*ctx.regs).rax, (*ctx.regs).r14) };
    let key = GoroutineKey {
        g,
        tgid: (pid_tgid >> 32) as u32,
        reserved: 0,
    };
    // The entry probe saved arguments only for traced processes: finding them is the filter.
    // SAFETY: the value is copied out before the entry is removed.
    let Some(args) = (unsafe { GO_READ_ARGS.get(&key) }).copied() else {
        if is_target((pid_tgid >> 32) as u32) {
            count(Counter::UnmatchedReturn);
        }
        return Ok(());
    };
    let _ = GO_READ_ARGS.remove(&key);
    if (n as i64) <= 0 {
        return Ok(());
    }
    let total = clamp(n);
    if total == 0 {
        return Ok(());
    }
    count(Counter::Calls);
    // SAFETY: no preconditions.
    let now = unsafe { bpf_ktime_get_ns() };
    // `Read` returns the plaintext of at most one TLS record (16 KiB): one chunk, no loop. Were
    // it ever more, the record says so (`TRUNCATED`, counted).
    emit::<1>(
        pid_tgid,
        &args,
        Direction::Ingress,
        total,
        now,
        0,
        wakeup_flags(total + HEADER_SIZE),
    );
    Ok(())
}

/// A positive Go `int` length, bounded as OpenSSL's `int` results are (by a mask, not a branch:
/// every extra path into the chunk loop is another 64 iterations for the verifier to walk). No
/// single call moves 2 GiB, and only its first 1 MiB is copied in any case.
#[inline(always)]
fn clamp(len: u64) -> u64 {
    len & (i32::MAX as u64)
}

/// The socket fd behind a `*tls.Conn`, or -1.
#[inline(always)]
fn conn_fd(ctx: &ProbeContext, conn: u64) -> i32 {
    // SAFETY: the helper reads this attachment's cookie.
    let cookie = unsafe { bpf_get_attach_cookie(ctx.as_ptr()) };
    if cookie == 0 {
        return -1;
    }
    let o = GoConnOffsets::from_cookie(cookie);
    read_fd(conn, &o).unwrap_or(-1)
}

#[inline(always)]
fn read_fd(conn: u64, o: &GoConnOffsets) -> Option<i32> {
    // The interface's data pointer is its second word.
    let iface_data = conn + u64::from(o.tls_conn_conn) + 8;
    // SAFETY: reads of the target's memory through the checked helper; a bad pointer fails.
    let tcp_conn: u64 = unsafe { bpf_probe_read_user(iface_data as *const u64) }.ok()?;
    if tcp_conn == 0 {
        return None;
    }
    // SAFETY: as above.
    let net_fd: u64 =
        unsafe { bpf_probe_read_user((tcp_conn + u64::from(o.net_conn_fd)) as *const u64) }.ok()?;
    if net_fd == 0 {
        return None;
    }
    let sysfd_at = net_fd + u64::from(o.netfd_pfd) + u64::from(o.fd_sysfd);
    // SAFETY: as above.
    let sysfd: i64 = unsafe { bpf_probe_read_user(sysfd_at as *const i64) }.ok()?;
    if !(0..=i64::from(i32::MAX)).contains(&sysfd) {
        return None;
    }
    Some(sysfd as i32)
}
