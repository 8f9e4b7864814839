//! What a socket fd of the calling task is, read from the kernel's own structures at offsets
//! the agent takes from the running kernel's BTF: whether an fd is a socket (its file table),
//! and both ends of its TCP connection (its `struct sock`), sent once per TLS socket as a
//! `SOCKET` record so a process that is gone before the agent can look in `/proc` keeps its
//! addresses.

use agent_common::{Counter, RecordHeader, SocketRecord, record_kind};
use aya_ebpf::{
    bindings::BPF_RB_NO_WAKEUP,
    helpers::{bpf_get_current_task, bpf_ktime_get_ns, bpf_probe_read_kernel},
};

use crate::maps::{EVENTS, count};

/// Set by the agent at load time from the kernel's BTF: the offsets of `task_struct.files`,
/// `files_struct.fdt`, `fdtable.max_fds`, `fdtable.fd`, `file.f_inode` and `inode.i_mode`. All
/// zero when they could not be read: fds are then taken without the check.
#[unsafe(no_mangle)]
static FILE_TYPE_OFFSETS: [u64; 6] = [0; 6];

/// Set by the agent at load time from the kernel's BTF: the offsets of `file.private_data`,
/// `socket.sk`, and in `struct sock` of `skc_family`, `skc_daddr`, `skc_rcv_saddr`,
/// `skc_dport`, `skc_num`, `skc_v6_daddr` and `skc_v6_rcv_saddr` (the last two `u64::MAX` on a
/// kernel without IPv6). All zero when they could not be read: no `SOCKET` records are sent.
#[unsafe(no_mangle)]
static SOCKET_OFFSETS: [u64; 9] = [0; 9];

/// Address families of `skc_family`.
const AF_INET: u16 = 2;
const AF_INET6: u16 = 10;

/// `S_IFMT` and `S_IFSOCK` of an inode's mode.
const S_IFMT: u16 = 0o170_000;
const S_IFSOCK: u16 = 0o140_000;

/// What an fd of the calling task is, from its file table.
pub enum FdKind {
    /// The offsets are unknown or a read failed.
    Unknown,
    /// Not a socket (or no file at all).
    Other,
    /// A socket; its `struct file *`.
    Socket(u64),
}

/// What `fd` of the calling task is, read from its file table.
#[inline(always)]
pub fn fd_kind(fd: i32) -> FdKind {
    // SAFETY: a global set at load time; the volatile reads keep it from being folded.
    let at = |i: usize| unsafe { core::ptr::read_volatile(&FILE_TYPE_OFFSETS[i]) };
    let files_at = at(0);
    if files_at == 0 {
        return FdKind::Unknown;
    }
    // SAFETY: reads of kernel memory through the checked helper; a wrong address fails the
    // read, it does not fault.
    let read = |addr: u64| unsafe { bpf_probe_read_kernel(addr as *const u64) }.ok();
    let Some(fdt) =
        read(unsafe { bpf_get_current_task() } + files_at).and_then(|files| read(files + at(1)))
    else {
        return FdKind::Unknown;
    };
    // SAFETY: as above.
    let Ok(max_fds) = (unsafe { bpf_probe_read_kernel((fdt + at(2)) as *const u32) }) else {
        return FdKind::Unknown;
    };
    if fd as u32 >= max_fds {
        return FdKind::Other;
    }
    let Some(file) = read(fdt + at(3)).and_then(|table| read(table + 8 * u64::from(fd as u32)))
    else {
        return FdKind::Unknown;
    };
    if file == 0 {
        return FdKind::Other;
    }
    let Some(inode) = read(file + at(4)) else {
        return FdKind::Unknown;
    };
    // SAFETY: as above.
    match unsafe { bpf_probe_read_kernel((inode + at(5)) as *const u16) } {
        Ok(mode) if mode & S_IFMT == S_IFSOCK => FdKind::Socket(file),
        Ok(_) => FdKind::Other,
        Err(_) => FdKind::Unknown,
    }
}

/// Sends a `SOCKET` record with both ends of the TCP connection behind the socket `file`, read
/// from its `struct sock` (nothing when the offsets are unknown, a read fails, or the socket is
/// not IPv4 or IPv6).
#[inline(always)]
pub fn report(pid_tgid: u64, fd: i32, file: u64) {
    // SAFETY: a global set at load time; the volatile reads keep it from being folded.
    let at = |i: usize| unsafe { core::ptr::read_volatile(&SOCKET_OFFSETS[i]) };
    if at(0) == 0 {
        return;
    }
    // SAFETY: reads of kernel memory through the checked helper.
    let read = |addr: u64| unsafe { bpf_probe_read_kernel(addr as *const u64) }.ok();
    let Some(sk) = read(file + at(0)).and_then(|socket| read(socket + at(1))) else {
        return;
    };
    let mut record = SocketRecord {
        header: RecordHeader {
            kind: record_kind::SOCKET,
            tgid: (pid_tgid >> 32) as u32,
            tid: pid_tgid as u32,
            // SAFETY: no preconditions.
            timestamp_ns: unsafe { bpf_ktime_get_ns() },
            fd,
            ..RecordHeader::default()
        },
        ..SocketRecord::default()
    };
    // SAFETY: reads of kernel memory through the checked helper.
    unsafe {
        let (Ok(family), Ok(dport), Ok(num)) = (
            bpf_probe_read_kernel((sk + at(2)) as *const u16),
            bpf_probe_read_kernel((sk + at(5)) as *const u16),
            bpf_probe_read_kernel((sk + at(6)) as *const u16),
        ) else {
            return;
        };
        record.family = family;
        record.remote_port = u16::from_be(dport);
        record.local_port = num;
        if family == AF_INET {
            let (Ok(remote), Ok(local)) = (
                bpf_probe_read_kernel((sk + at(3)) as *const [u8; 4]),
                bpf_probe_read_kernel((sk + at(4)) as *const [u8; 4]),
            ) else {
                return;
            };
            record.remote[..4].copy_from_slice(&remote);
            record.local[..4].copy_from_slice(&local);
        } else if family == AF_INET6 && at(7) != u64::MAX {
            let (Ok(remote), Ok(local)) = (
                bpf_probe_read_kernel((sk + at(7)) as *const [u8; 16]),
                bpf_probe_read_kernel((sk + at(8)) as *const [u8; 16]),
            ) else {
                return;
            };
            record.remote = remote;
            record.local = local;
        } else {
            return;
        }
    }
    if EVENTS
        .output::<SocketRecord>(&record, BPF_RB_NO_WAKEUP as u64)
        .is_err()
    {
        count(Counter::RingbufFull);
    }
}
