//! OpenSSL (and BoringSSL, which exports the same names): `SSL_write`, `SSL_read`,
//! `SSL_write_ex`, `SSL_read_ex` entry and return, `SSL_free` for the end of a connection and
//! `SSL_ctrl` for the server name a client sets (SNI).
//!
//! Entry probes save the arguments; return probes copy the bytes the call really moved (the return
//! value, or `*written` / `*readbytes` for the `_ex` variants) into the ring buffer
//! ([`crate::emit`]).

use agent_common::{Direction, data::SSL_CTRL_SET_TLSEXT_HOSTNAME};
use aya_ebpf::{
    macros::{uprobe, uretprobe},
    programs::{ProbeContext, RetProbeContext},
};

use crate::{
    emit::{Returns, finish_call, save_args, send_close, send_server_name},
    maps::{READ_ARGS, WRITE_ARGS, current},
};

#[uprobe]
pub fn ssl_write(ctx: ProbeContext) -> u32 {
    save_args(&ctx, &WRITE_ARGS, false, true);
    0
}

#[uretprobe]
pub fn ssl_write_ret(ctx: RetProbeContext) -> u32 {
    finish_call(&ctx, &WRITE_ARGS, Direction::Egress, Returns::Int);
    0
}

#[uprobe]
pub fn ssl_write_ex(ctx: ProbeContext) -> u32 {
    save_args(&ctx, &WRITE_ARGS, true, true);
    0
}

#[uretprobe]
pub fn ssl_write_ex_ret(ctx: RetProbeContext) -> u32 {
    finish_call(&ctx, &WRITE_ARGS, Direction::Egress, Returns::IntAndCount);
    0
}

#[uprobe]
pub fn ssl_read(ctx: ProbeContext) -> u32 {
    save_args(&ctx, &READ_ARGS, false, false);
    0
}

#[uretprobe]
pub fn ssl_read_ret(ctx: RetProbeContext) -> u32 {
    finish_call(&ctx, &READ_ARGS, Direction::Ingress, Returns::Int);
    0
}

#[uprobe]
pub fn ssl_read_ex(ctx: ProbeContext) -> u32 {
    save_args(&ctx, &READ_ARGS, true, false);
    0
}

#[uretprobe]
pub fn ssl_read_ex_ret(ctx: RetProbeContext) -> u32 {
    finish_call(&ctx, &READ_ARGS, Direction::Ingress, Returns::IntAndCount);
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
    send_close(pid_tgid, ssl);
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
    send_server_name(pid_tgid, ssl, name, None);
    Ok(())
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
