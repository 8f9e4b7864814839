//! The socket fd of each TLS call, from the socket syscalls the library makes inside it.
//!
//! One program on the `sys_enter` raw tracepoint (no tracefs needed) looks at read, write,
//! recvfrom, sendto, recvmsg, sendmsg, readv and writev, whose first argument is the fd. While a
//! TLS call is in flight on the thread (its arguments are saved in `READ_ARGS` / `WRITE_ARGS`),
//! the fd is written into the saved arguments, and kept as the thread's last TLS fd (with the
//! call's `SSL *`) for later calls on that connection that make no syscall (a read served from
//! the library's buffer). Libraries driven through
//! memory BIOs (Node.js) make no syscall inside the call: their fd stays unknown.

use aya_ebpf::{
    helpers::bpf_probe_read_kernel, macros::raw_tracepoint, programs::RawTracePointContext,
};

use crate::maps::{LAST_FD, LastFd, READ_ARGS, WRITE_ARGS, current};

/// Set by the agent at load time: this architecture's numbers of the eight syscalls above
/// (`u64::MAX` never matches).
#[unsafe(no_mangle)]
static FD_SYSCALL_NRS: [u64; 8] = [u64::MAX; 8];

/// Set by the agent at load time: the offset of the first syscall argument in `struct pt_regs`
/// (`di` on x86_64).
#[unsafe(no_mangle)]
static FD_ARG_OFFSET: u64 = 112;

#[raw_tracepoint(tracepoint = "sys_enter")]
pub fn sys_enter_fd(ctx: RawTracePointContext) -> i32 {
    // sys_enter(struct pt_regs *regs, long id)
    let id: u64 = ctx.arg(1);
    if !is_fd_syscall(id) {
        return 0;
    }
    let (pid_tgid, traced) = current();
    if !traced {
        return 0;
    }
    let regs: u64 = ctx.arg(0);
    // SAFETY: a global set at load time, read once.
    let offset = unsafe { core::ptr::read_volatile(&FD_ARG_OFFSET) };
    // SAFETY: a read of the kernel's saved user registers through the checked helper.
    let Ok(raw) = (unsafe { bpf_probe_read_kernel((regs + offset) as *const u64) }) else {
        return 0;
    };
    let fd = raw as i64;
    if !(0..=i64::from(i32::MAX)).contains(&fd) {
        return 0;
    }
    let fd = fd as i32;
    // Two separate lookups: the verifier refuses arithmetic on two maybe-null pointers.
    if let Some(args) = WRITE_ARGS.get_ptr_mut(&pid_tgid) {
        // SAFETY: an entry of this thread, written only by this thread's programs.
        let ssl = unsafe {
            (*args).fd = fd;
            (*args).ssl
        };
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
    if let Some(args) = READ_ARGS.get_ptr_mut(&pid_tgid) {
        // SAFETY: as above.
        let ssl = unsafe {
            (*args).fd = fd;
            (*args).ssl
        };
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
