//! GnuTLS: `gnutls_record_send2` (what `gnutls_record_send` jumps to since GnuTLS 3.6.3; the
//! older `gnutls_record_send` where there is no `send2`) and `gnutls_record_recv` entry and
//! return, `gnutls_deinit` for the end of a session and `gnutls_server_name_set` for the server
//! name a client sets.
//!
//! The connection object is the `gnutls_session_t`. The socket fd comes from the syscalls the
//! library's push and pull functions make inside the call (the default ones, `send`/`recv` on the
//! transport set with `gnutls_transport_set_int2`/`_ptr`, and callers' own, such as libcurl's,
//! that write to the socket before returning), as for OpenSSL.

use agent_common::Direction;
use aya_ebpf::{
    macros::{uprobe, uretprobe},
    programs::{ProbeContext, RetProbeContext},
};

use crate::{
    emit::{Returns, finish_call, save_args, send_close, send_server_name},
    maps::{READ_ARGS, WRITE_ARGS, current},
};

/// `GNUTLS_NAME_DNS`, the only name type GnuTLS defines.
const GNUTLS_NAME_DNS: u64 = 1;

/// `gnutls_record_send2(session, data, data_size, pad, flags)` and
/// `gnutls_record_send(session, data, data_size)`.
#[uprobe]
pub fn gnutls_send(ctx: ProbeContext) -> u32 {
    save_args(&ctx, &WRITE_ARGS, false, true);
    0
}

#[uretprobe]
pub fn gnutls_send_ret(ctx: RetProbeContext) -> u32 {
    finish_call(&ctx, &WRITE_ARGS, Direction::Egress, Returns::SSize);
    0
}

/// `gnutls_record_recv(session, data, data_size)`.
#[uprobe]
pub fn gnutls_recv(ctx: ProbeContext) -> u32 {
    save_args(&ctx, &READ_ARGS, false, false);
    0
}

#[uretprobe]
pub fn gnutls_recv_ret(ctx: RetProbeContext) -> u32 {
    finish_call(&ctx, &READ_ARGS, Direction::Ingress, Returns::SSize);
    0
}

/// `gnutls_deinit(session)`: the session is gone; user space closes the flow.
#[uprobe]
pub fn gnutls_deinit(ctx: ProbeContext) -> u32 {
    let (pid_tgid, traced) = current();
    if traced && let Some(session) = ctx.arg::<u64>(0) {
        send_close(pid_tgid, session);
    }
    0
}

/// `gnutls_server_name_set(session, type, name, name_length)`: the server name (SNI) a client
/// will send.
#[uprobe]
pub fn gnutls_server_name(ctx: ProbeContext) -> u32 {
    let (pid_tgid, traced) = current();
    if !traced {
        return 0;
    }
    let (Some(session), Some(kind), Some(name), Some(len)) = (
        ctx.arg::<u64>(0),
        ctx.arg::<u64>(1),
        ctx.arg::<u64>(2),
        ctx.arg::<u64>(3),
    ) else {
        return 0;
    };
    if kind as u32 as u64 == GNUTLS_NAME_DNS {
        send_server_name(pid_tgid, session, name, Some(len));
    }
    0
}
