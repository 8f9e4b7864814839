//! The socket fd of each TLS call, from the socket syscalls the library makes inside it.
//!
//! One program is attached to the `syscalls/sys_enter_*` tracepoints of read, write, recvfrom,
//! sendto, recvmsg, sendmsg, readv and writev; the fd is the first argument of each. While a TLS
//! call is in flight on the thread (its arguments are saved in `READ_ARGS` / `WRITE_ARGS`), the fd
//! is written into the saved arguments, and kept as the thread's last TLS fd for calls that make
//! no syscall (a read served from the library's buffer). Libraries driven through memory BIOs
//! (Node.js) make no syscall inside the call: their fd stays unknown.

use aya_ebpf::{macros::tracepoint, programs::TracePointContext};

use crate::maps::{LAST_FD, READ_ARGS, WRITE_ARGS, current};

/// Offset of the first syscall argument in a `sys_enter_*` tracepoint record: the 8-byte common
/// header and the `int __syscall_nr` padded to 8.
const ARG0_OFFSET: usize = 16;

#[tracepoint]
pub fn sys_enter_fd(ctx: TracePointContext) -> u32 {
    let (pid_tgid, traced) = current();
    if !traced {
        return 0;
    }
    if let Some(args) = WRITE_ARGS.get_ptr_mut(&pid_tgid) {
        if let Some(fd) = read_fd(&ctx) {
            // SAFETY: an entry of this thread, written only by this thread's programs.
            unsafe { (*args).fd = fd };
            let _ = LAST_FD.insert(&pid_tgid, &fd, 0);
        }
    }
    if let Some(args) = READ_ARGS.get_ptr_mut(&pid_tgid) {
        if let Some(fd) = read_fd(&ctx) {
            // SAFETY: as above.
            unsafe { (*args).fd = fd };
            let _ = LAST_FD.insert(&pid_tgid, &fd, 0);
        }
    }
    0
}

#[inline(always)]
fn read_fd(ctx: &TracePointContext) -> Option<i32> {
    // SAFETY: the tracepoint record holds six 8-byte arguments after the syscall number.
    let raw: u64 = unsafe { ctx.read_at::<u64>(ARG0_OFFSET) }.ok()?;
    let fd = raw as i64;
    if (0..=i64::from(i32::MAX)).contains(&fd) {
        Some(fd as i32)
    } else {
        None
    }
}
