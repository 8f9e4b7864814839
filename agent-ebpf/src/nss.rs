//! NSS: plaintext at NSPR's `PR_Write`, `PR_Send`, `PR_Read` and `PR_Recv` (entry and return),
//! only on the file descriptors NSS made TLS; `PR_Close` of one ends its connection, and
//! `SSL_SetURL` gives the server name a client checks and sends (SNI).
//!
//! The connection object is the `PRFileDesc *` the program reads and writes: `SSL_ImportFD`
//! pushes the SSL layer on top of a socket's stack in place, so it returns the pointer it was
//! given. NSPR's I/O functions are called for every file and socket of the program, so each call
//! is first checked: its descriptor is one `SSL_ImportFD` returned since the agent attached
//! ([`NSS_FDS`]), or its I/O method table is the SSL layer's (learned from any descriptor
//! `SSL_ImportFD` returned in that process, [`NSS_METHODS`]): descriptors made TLS before the
//! agent attached are then recognised too, as are those a TLS listening socket accepts. In a
//! process where no `SSL_ImportFD` was seen yet (all its descriptors were made TLS before the
//! agent attached), a layered descriptor directly over a TCP socket is taken as TLS.
//! Everything else is skipped at entry. The socket fd comes from the syscalls made inside the
//! call, as for OpenSSL.

use agent_common::Direction;
use aya_ebpf::{
    helpers::bpf_probe_read_user,
    macros::{map, uprobe, uretprobe},
    maps::LruHashMap,
    programs::{ProbeContext, RetProbeContext},
};

use crate::{
    emit::{Returns, finish_filtered_call, save, send_close, send_server_name},
    maps::{READ_ARGS, WRITE_ARGS, current},
};

/// Descriptors `SSL_ImportFD` returned: `[tgid, PRFileDesc *]` → 1. LRU: descriptors closed
/// while the agent was not looking age out.
#[map]
static NSS_FDS: LruHashMap<[u64; 2], u8> = LruHashMap::with_max_entries(65_536, 0);

/// The SSL layer's I/O method table (`PRFileDesc.methods`) in each process: tgid → address.
#[map]
static NSS_METHODS: LruHashMap<u32, u64> = LruHashMap::with_max_entries(16_384, 0);

/// `SSL_ImportFD(model, fd)` returned the descriptor now layered with TLS (or NULL).
#[uretprobe]
pub fn nss_import_fd_ret(ctx: RetProbeContext) -> u32 {
    let (pid_tgid, traced) = current();
    if !traced {
        return 0;
    }
    let fd: u64 = ctx.ret::<u64>();
    if fd == 0 {
        return 0;
    }
    let tgid = pid_tgid >> 32;
    let _ = NSS_FDS.insert(&[tgid, fd], &1, 0);
    // `PRFileDesc` starts with its `methods` pointer.
    // SAFETY: a read of the target's memory through the checked helper.
    if let Ok(methods) = unsafe { bpf_probe_read_user(fd as *const u64) }
        && methods != 0
    {
        let _ = NSS_METHODS.insert(&(tgid as u32), &methods, 0);
    }
    0
}

/// Whether `fd` of process `tgid` is a TLS descriptor (see the module's documentation).
#[inline(always)]
fn is_tls(tgid: u64, fd: u64) -> bool {
    if fd == 0 {
        return false;
    }
    // SAFETY: a plain byte, read once.
    if unsafe { NSS_FDS.get(&[tgid, fd]) }.is_some() {
        return true;
    }
    // SAFETY: a read of the target's memory through the checked helper.
    let Ok(methods) = (unsafe { bpf_probe_read_user(fd as *const u64) }) else {
        return false;
    };
    // SAFETY: plain data, read once.
    if let Some(ssl) = (unsafe { NSS_METHODS.get(&(tgid as u32)) }).copied() {
        return methods == ssl;
    }
    // No descriptor made TLS since the agent attached: a layer over a TCP socket is taken as
    // NSS's SSL layer, the only layer NSS pushes on a socket.
    layered_over_tcp(fd, methods)
}

/// `PRDescType` values (`prio.h`): the first field of a `PRIOMethods` table.
const PR_DESC_SOCKET_TCP: u32 = 2;
const PR_DESC_LAYERED: u32 = 4;
/// Offset of `PRFileDesc.lower` (after `methods` and `secret`).
const LOWER_OFFSET: u64 = 16;

/// Whether descriptor `fd`, whose method table is at `methods`, is a layer whose next layer down
/// is a TCP socket.
#[inline(always)]
fn layered_over_tcp(fd: u64, methods: u64) -> bool {
    let file_type = |methods: u64| {
        // SAFETY: a read of the target's memory through the checked helper.
        unsafe { bpf_probe_read_user(methods as *const u32) }.unwrap_or(0)
    };
    if methods == 0 || file_type(methods) != PR_DESC_LAYERED {
        return false;
    }
    // SAFETY: a read of the target's memory through the checked helper.
    let Ok(lower) = (unsafe { bpf_probe_read_user((fd + LOWER_OFFSET) as *const u64) }) else {
        return false;
    };
    if lower == 0 {
        return false;
    }
    // SAFETY: a read of the target's memory through the checked helper.
    let lower_methods = unsafe { bpf_probe_read_user(lower as *const u64) }.unwrap_or(0);
    lower_methods != 0 && file_type(lower_methods) == PR_DESC_SOCKET_TCP
}

/// Saves the call's arguments when its descriptor is TLS.
#[inline(always)]
fn save_if_tls(ctx: &ProbeContext, write: bool) {
    let (pid_tgid, traced) = current();
    if !traced {
        return;
    }
    let (Some(fd), Some(buf)) = (ctx.arg::<u64>(0), ctx.arg::<u64>(1)) else {
        return;
    };
    if !is_tls(pid_tgid >> 32, fd) {
        return;
    }
    if write {
        save(&WRITE_ARGS, pid_tgid, fd, buf, 0, true);
    } else {
        save(&READ_ARGS, pid_tgid, fd, buf, 0, false);
    }
}

/// `PR_Write(fd, buf, amount)` and `PR_Send(fd, buf, amount, flags, timeout)`.
#[uprobe]
pub fn nss_write(ctx: ProbeContext) -> u32 {
    save_if_tls(&ctx, true);
    0
}

#[uretprobe]
pub fn nss_write_ret(ctx: RetProbeContext) -> u32 {
    finish_filtered_call(&ctx, &WRITE_ARGS, Direction::Egress, Returns::Int);
    0
}

/// `PR_Read(fd, buf, amount)` and `PR_Recv(fd, buf, amount, flags, timeout)`.
#[uprobe]
pub fn nss_read(ctx: ProbeContext) -> u32 {
    save_if_tls(&ctx, false);
    0
}

#[uretprobe]
pub fn nss_read_ret(ctx: RetProbeContext) -> u32 {
    finish_filtered_call(&ctx, &READ_ARGS, Direction::Ingress, Returns::Int);
    0
}

/// `PR_Close(fd)`: a TLS descriptor is closed; user space closes its flow.
#[uprobe]
pub fn nss_close(ctx: ProbeContext) -> u32 {
    let (pid_tgid, traced) = current();
    if !traced {
        return 0;
    }
    let Some(fd) = ctx.arg::<u64>(0) else {
        return 0;
    };
    let tgid = pid_tgid >> 32;
    if is_tls(tgid, fd) {
        let _ = NSS_FDS.remove(&[tgid, fd]);
        send_close(pid_tgid, fd);
    }
    0
}

/// `SSL_SetURL(fd, url)`: the host name the client checks the certificate against and sends as
/// its server name.
#[uprobe]
pub fn nss_set_url(ctx: ProbeContext) -> u32 {
    let (pid_tgid, traced) = current();
    if !traced {
        return 0;
    }
    if let (Some(fd), Some(url)) = (ctx.arg::<u64>(0), ctx.arg::<u64>(1)) {
        send_server_name(pid_tgid, fd, url, None);
    }
    0
}
