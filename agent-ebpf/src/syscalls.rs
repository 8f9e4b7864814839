//! The socket fd of each TLS call, from the socket syscalls the library makes inside it.
//!
//! One program on the `sys_enter` raw tracepoint (no tracefs needed) looks at read, write,
//! recvfrom, sendto, recvmsg, sendmsg, readv and writev, whose first argument is the fd. While a
//! TLS call is in flight on the thread (its arguments are saved in `READ_ARGS` / `WRITE_ARGS`),
//! the fd is written into the saved arguments, and kept as the thread's last TLS fd (with the
//! call's `SSL *`) for later calls on that connection that make no syscall (a read served from
//! the library's buffer). Libraries driven through
//! memory BIOs (Node.js) make no syscall inside the call: their fd stays unknown.
//!
//! Only a socket may name a connection: a TLS call can also read a file (Node.js reads the time
//! zone in the middle of one). The fd's file type is read from the calling task's file table,
//! at offsets the agent takes from the running kernel's BTF; fds already known as TLS sockets
//! skip the check.
//!
//! The first time a socket fd is seen so, both ends of its TCP connection are read from the
//! kernel's `struct sock` (offsets from BTF again) and sent as a `SOCKET` record: a process that
//! is gone before the agent can look in `/proc` keeps its addresses.
//!
//! Each fd found that way is remembered in `TLS_FDS`; a later `close` of it by a traced process
//! sends an `FD_CLOSE` record, so the connection ends when its socket does (and a reused fd
//! number starts a new one). When the agent asks for them, a second program on
//! `sched_process_exec` reports new process images, and this one reports executable file
//! mappings (libraries being loaded) by traced processes, so they are examined at once instead
//! of at the next scan. Both carry the process name the kernel has, so a process that is gone
//! before the agent reads `/proc` still has its name, and both wake the reader: a library being
//! loaded is attached to before the program's first call through it, in the common case.

use agent_common::{
    Counter, ProcessRecord, RecordHeader, SslArgs,
    data::{TASK_COMM_LEN, flags},
    record_kind,
};
use aya_ebpf::{
    bindings::{BPF_RB_FORCE_WAKEUP, BPF_RB_NO_WAKEUP},
    helpers::{bpf_get_current_comm, bpf_ktime_get_ns, bpf_probe_read_kernel},
    macros::raw_tracepoint,
    programs::RawTracePointContext,
};

use crate::{
    maps::{EVENTS, LAST_FD, LastFd, READ_ARGS, TLS_FDS, WRITE_ARGS, count, current},
    sockets,
};

/// Set by the agent at load time: this architecture's numbers of the eight syscalls above
/// (`u64::MAX` never matches).
#[unsafe(no_mangle)]
static FD_SYSCALL_NRS: [u64; 8] = [u64::MAX; 8];

/// Set by the agent at load time: the offset of the first syscall argument in `struct pt_regs`
/// (`di` on x86_64).
#[unsafe(no_mangle)]
static FD_ARG_OFFSET: u64 = 112;

/// Set by the agent at load time: this architecture's number of `close`.
#[unsafe(no_mangle)]
static CLOSE_NR: u64 = u64::MAX;

/// Set by the agent at load time: whether new process images and executable file mappings are
/// reported: 0 never, 1 for every process (`execve`) and traced ones (mappings), 2 for traced
/// processes only.
#[unsafe(no_mangle)]
static REPORT_EXEC: u32 = 0;

/// Set by the agent at load time: this architecture's number of `mmap`.
#[unsafe(no_mangle)]
static MMAP_NR: u64 = u64::MAX;

/// Set by the agent at load time: offsets in `struct pt_regs` of `mmap`'s `prot` and `fd`
/// arguments (`dx` and `r8` on x86_64).
#[unsafe(no_mangle)]
static MMAP_ARG_OFFSETS: [u64; 2] = [96, 72];

/// `PROT_EXEC`.
const PROT_EXEC: u64 = 4;

#[raw_tracepoint(tracepoint = "sys_enter")]
pub fn sys_enter_fd(ctx: RawTracePointContext) -> i32 {
    // sys_enter(struct pt_regs *regs, long id)
    let id: u64 = ctx.arg(1);
    // SAFETY: a global set at load time; the volatile read keeps it from being folded.
    let closing = id == unsafe { core::ptr::read_volatile(&CLOSE_NR) };
    // SAFETY: as above.
    let mapping = id == unsafe { core::ptr::read_volatile(&MMAP_NR) };
    if !closing && !mapping && !is_fd_syscall(id) {
        return 0;
    }
    let (pid_tgid, traced) = current();
    if !traced {
        return 0;
    }
    if mapping {
        on_mmap(&ctx, pid_tgid);
        return 0;
    }
    let Some(fd) = first_arg_fd(&ctx) else {
        return 0;
    };
    let fd_key = (pid_tgid & 0xffff_ffff_0000_0000) | u64::from(fd as u32);
    if closing {
        on_close(pid_tgid, fd, fd_key);
        return 0;
    }
    // SAFETY: a plain byte, read once.
    let known = unsafe { TLS_FDS.get(&fd_key) }.is_some();
    let mut kind = sockets::FdKind::Unknown;
    let mut checked = known;
    let mut found = false;
    // Two separate lookups, each pointer used before the next: the verifier refuses
    // arithmetic on two maybe-null pointers, which a joined null check becomes.
    if let Some(args) = WRITE_ARGS.get_ptr_mut(&pid_tgid) {
        found = true;
        if !checked {
            kind = sockets::fd_kind(fd);
            checked = true;
        }
        if !matches!(kind, sockets::FdKind::Other) {
            take_fd(pid_tgid, args, fd);
        }
    }
    if let Some(args) = READ_ARGS.get_ptr_mut(&pid_tgid) {
        found = true;
        if !checked {
            kind = sockets::fd_kind(fd);
        }
        if !matches!(kind, sockets::FdKind::Other) {
            take_fd(pid_tgid, args, fd);
        }
    }
    if !found {
        return 0;
    }
    if matches!(kind, sockets::FdKind::Other) {
        count(Counter::NonSocketFds);
        return 0;
    }
    if !known {
        let _ = TLS_FDS.insert(&fd_key, &1, 0);
        if let sockets::FdKind::Socket(file) = kind {
            sockets::report(pid_tgid, fd, file);
        }
    }
    0
}

/// Writes `fd` into the arguments saved by the thread's TLS call in flight.
#[inline(always)]
fn take_fd(pid_tgid: u64, args: *mut SslArgs, fd: i32) {
    // SAFETY: an entry of this thread, written only by this thread's programs.
    let ssl = unsafe {
        (*args).fd = fd;
        (*args).ssl
    };
    remember_fd(pid_tgid, ssl, fd);
}

/// Keeps `fd` as the thread's last TLS fd, writing only when it changed (a lookup is cheaper
/// than an update of an LRU map).
#[inline(always)]
fn remember_fd(pid_tgid: u64, ssl: u64, fd: i32) {
    // SAFETY: plain data, read once.
    if let Some(last) = unsafe { LAST_FD.get(&pid_tgid) }
        && last.ssl == ssl
        && last.fd == fd
    {
        return;
    }
    let _ = LAST_FD.insert(
        &pid_tgid,
        &LastFd {
            ssl,
            fd,
            reserved: 0,
        },
        0,
    );
}

/// The fd in the syscall's first argument, if it is one.
#[inline(always)]
fn first_arg_fd(ctx: &RawTracePointContext) -> Option<i32> {
    let regs: u64 = ctx.arg(0);
    // SAFETY: a global set at load time, read once.
    let offset = unsafe { core::ptr::read_volatile(&FD_ARG_OFFSET) };
    // SAFETY: a read of the kernel's saved user registers through the checked helper.
    let raw = unsafe { bpf_probe_read_kernel((regs + offset) as *const u64) }.ok()?;
    let fd = raw as i64;
    if !(0..=i64::from(i32::MAX)).contains(&fd) {
        return None;
    }
    Some(fd as i32)
}

/// `close(fd)` of a socket TLS calls were seen on: tell user space, once.
#[inline(always)]
fn on_close(pid_tgid: u64, fd: i32, fd_key: u64) {
    // SAFETY: a plain byte, read once.
    if unsafe { TLS_FDS.get(&fd_key) }.is_none() {
        return;
    }
    let _ = TLS_FDS.remove(&fd_key);
    crate::rustls::socket_closed(pid_tgid >> 32, fd);
    let header = RecordHeader {
        kind: record_kind::FD_CLOSE,
        tgid: (pid_tgid >> 32) as u32,
        tid: pid_tgid as u32,
        // SAFETY: no preconditions.
        timestamp_ns: unsafe { bpf_ktime_get_ns() },
        fd,
        ..RecordHeader::default()
    };
    if EVENTS
        .output::<RecordHeader>(&header, BPF_RB_NO_WAKEUP as u64)
        .is_err()
    {
        count(Counter::RingbufFull);
    }
}

/// `mmap` of a file with `PROT_EXEC` (a library being loaded, e.g. by `dlopen`), when asked for:
/// reported like a new image, so the agent looks at the process's libraries again.
#[inline(always)]
fn on_mmap(ctx: &RawTracePointContext, pid_tgid: u64) {
    // SAFETY: a global set at load time; the volatile read keeps it from being folded.
    if unsafe { core::ptr::read_volatile(&REPORT_EXEC) } == 0 {
        return;
    }
    let regs: u64 = ctx.arg(0);
    // SAFETY: globals set at load time.
    let (prot_at, fd_at) = unsafe {
        (
            core::ptr::read_volatile(&MMAP_ARG_OFFSETS[0]),
            core::ptr::read_volatile(&MMAP_ARG_OFFSETS[1]),
        )
    };
    // SAFETY: reads of the kernel's saved user registers through the checked helper.
    let (Ok(prot), Ok(fd)) = (unsafe {
        (
            bpf_probe_read_kernel((regs + prot_at) as *const u64),
            bpf_probe_read_kernel((regs + fd_at) as *const u64),
        )
    }) else {
        return;
    };
    if prot & PROT_EXEC == 0 || (fd as i64) < 0 {
        return;
    }
    report_process(pid_tgid, fd as i32, 0);
}

/// Sends a `CODE_CHANGED` record for the calling process, with its name, waking the reader.
#[inline(always)]
fn report_process(pid_tgid: u64, fd: i32, flags: u32) {
    let record = ProcessRecord {
        header: RecordHeader {
            kind: record_kind::CODE_CHANGED,
            flags,
            tgid: (pid_tgid >> 32) as u32,
            tid: pid_tgid as u32,
            // SAFETY: no preconditions.
            timestamp_ns: unsafe { bpf_ktime_get_ns() },
            fd,
            len: TASK_COMM_LEN as u32,
            ..RecordHeader::default()
        },
        comm: bpf_get_current_comm().unwrap_or_default(),
    };
    if EVENTS
        .output::<ProcessRecord>(&record, BPF_RB_FORCE_WAKEUP as u64)
        .is_err()
    {
        count(Counter::RingbufFull);
    }
}

/// `sched_process_exec`: the calling process has a new image. Reported (when asked for) so the
/// agent examines it at once (and learns its new name).
#[raw_tracepoint(tracepoint = "sched_process_exec")]
pub fn proc_exec(_ctx: RawTracePointContext) -> i32 {
    // SAFETY: a global set at load time; the volatile read keeps it from being folded.
    let scope = unsafe { core::ptr::read_volatile(&REPORT_EXEC) };
    let (pid_tgid, traced) = current();
    if scope == 0 || (scope == 2 && !traced) {
        return 0;
    }
    report_process(pid_tgid, -1, flags::EXEC);
    0
}

#[inline(always)]
fn is_fd_syscall(id: u64) -> bool {
    let mut i = 0;
    while i < 8 {
        // SAFETY: a global set at load time; the volatile read keeps it from being folded.
        if unsafe { core::ptr::read_volatile(&FD_SYSCALL_NRS[i]) } == id {
            return true;
        }
        i += 1;
    }
    false
}
