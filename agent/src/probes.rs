//! Loading the eBPF object and attaching its programs, driven by a declarative table.
//!
//! Probes are attached per process (`perf_event_open` with the pid): the breakpoint is installed
//! only in the target, so other processes that map the same library pay nothing. The in-kernel
//! `TARGETS` filter is a second line of defence and keeps the agent's own process out.

use std::{collections::HashMap, num::NonZeroU32};

use agent_common::Counter;
use aya::{
    Ebpf, EbpfLoader,
    maps::{HashMap as BpfHashMap, MapData, PerCpuArray, RingBuf},
    programs::{
        ProgramError, RawTracePoint, UProbe,
        uprobe::{UProbeLinkId, UProbeScope},
    },
};

use crate::discovery::TlsLibrary;

/// One row of the attach table: a library symbol, the program to put on it, entry or return.
#[derive(Clone, Copy, Debug)]
pub struct ProbeSpec {
    /// The exported function.
    pub symbol: &'static str,
    /// The program's name in the eBPF object.
    pub program: &'static str,
    /// A return probe rather than an entry probe.
    pub ret: bool,
    /// Attaching fails when a required symbol is missing; optional ones are skipped (the `_ex`
    /// variants do not exist before OpenSSL 1.1.1).
    pub required: bool,
}

const fn spec(symbol: &'static str, program: &'static str, ret: bool, required: bool) -> ProbeSpec {
    ProbeSpec {
        symbol,
        program,
        ret,
        required,
    }
}

/// The OpenSSL / BoringSSL attach table.
pub const OPENSSL: &[ProbeSpec] = &[
    spec("SSL_write", "ssl_write", false, true),
    spec("SSL_write", "ssl_write_ret", true, true),
    spec("SSL_read", "ssl_read", false, true),
    spec("SSL_read", "ssl_read_ret", true, true),
    spec("SSL_write_ex", "ssl_write_ex", false, false),
    spec("SSL_write_ex", "ssl_write_ex_ret", true, false),
    spec("SSL_read_ex", "ssl_read_ex", false, false),
    spec("SSL_read_ex", "ssl_read_ex_ret", true, false),
    spec("SSL_free", "ssl_free", false, false),
    spec("SSL_ctrl", "ssl_ctrl", false, false),
];

/// The same attach points with programs that do nothing, for measuring the probes' own cost
/// against the floor of an empty uprobe and uretprobe (`--probe-set empty`, benchmarks only).
pub const EMPTY: &[ProbeSpec] = &[
    spec("SSL_write", "probe_empty", false, true),
    spec("SSL_write", "probe_empty_ret", true, true),
    spec("SSL_read", "probe_empty", false, true),
    spec("SSL_read", "probe_empty_ret", true, true),
    spec("SSL_write_ex", "probe_empty", false, false),
    spec("SSL_write_ex", "probe_empty_ret", true, false),
    spec("SSL_read_ex", "probe_empty", false, false),
    spec("SSL_read_ex", "probe_empty_ret", true, false),
    spec("SSL_free", "probe_empty", false, false),
    spec("SSL_ctrl", "probe_empty", false, false),
];

/// The program that records the socket fd of the syscalls made inside a TLS call.
pub const FD_PROGRAM: &str = "sys_enter_fd";

/// The syscalls [`FD_PROGRAM`] takes the fd from (their first argument): every socket read and
/// write a TLS library's socket BIO makes.
pub const FD_SYSCALLS: [libc::c_long; 8] = [
    libc::SYS_read,
    libc::SYS_write,
    libc::SYS_recvfrom,
    libc::SYS_sendto,
    libc::SYS_recvmsg,
    libc::SYS_sendmsg,
    libc::SYS_readv,
    libc::SYS_writev,
];

/// The program that reports new process images (`sched_process_exec`).
pub const EXEC_PROGRAM: &str = "proc_exec";

/// Offset of the first syscall argument in the kernel's `struct pt_regs`.
#[cfg(target_arch = "x86_64")]
const FD_ARG_OFFSET: u64 = 14 * 8; // di
#[cfg(target_arch = "aarch64")]
const FD_ARG_OFFSET: u64 = 0; // regs[0]

/// Offsets of `mmap`'s `prot` and `fd` arguments in the kernel's `struct pt_regs`.
#[cfg(target_arch = "x86_64")]
const MMAP_ARG_OFFSETS: [u64; 2] = [12 * 8, 9 * 8]; // dx, r8
#[cfg(target_arch = "aarch64")]
const MMAP_ARG_OFFSETS: [u64; 2] = [2 * 8, 4 * 8]; // regs[2], regs[4]

/// Every symbol the table attaches to, for discovery to resolve.
#[must_use]
pub fn symbols() -> Vec<&'static str> {
    let mut v: Vec<&'static str> = OPENSSL.iter().map(|s| s.symbol).collect();
    v.dedup();
    v
}

/// Failures while loading or attaching.
#[derive(Debug, thiserror::Error)]
pub enum ProbeError {
    /// The kernel refused the BPF object for lack of privileges.
    #[error(
        "loading eBPF programs was refused ({0}): run the agent as root, or with CAP_BPF, CAP_PERFMON and CAP_SYS_PTRACE (and CAP_SYS_RESOURCE on kernels before 5.11)"
    )]
    Privileges(String),
    /// Loading failed otherwise (an old kernel, the verifier).
    #[error("loading eBPF programs failed: {0}")]
    Load(String),
    /// A required symbol could not be attached.
    #[error("attaching {program} to {symbol} in {path} (pid {pid}) failed: {reason}")]
    Attach {
        /// Program name.
        program: &'static str,
        /// Symbol.
        symbol: &'static str,
        /// Library path.
        path: String,
        /// Target pid.
        pid: u32,
        /// Why.
        reason: String,
    },
    /// A map the object must have is missing or of the wrong type.
    #[error("eBPF object is missing map {0}")]
    Map(&'static str),
}

/// Load-time settings.
#[derive(Clone, Copy, Debug)]
pub struct LoadOptions {
    /// Trace every process (the per-process attach still decides where probes fire).
    pub trace_all: bool,
    /// Ring buffer size in bytes (a power of two, multiple of the page size).
    pub ringbuf_bytes: u32,
    /// The attach table: [`OPENSSL`], or [`EMPTY`] to measure the floor.
    pub table: &'static [ProbeSpec],
    /// Attach the syscall program that finds each TLS call's socket fd (part of the real probe
    /// set; off for the empty floor).
    pub socket_fds: bool,
    /// Report new process images (`exec`) and executable file mappings, for `--all` and
    /// `--follow`.
    pub report_exec: bool,
}

/// One library in one process: `(pid, device, inode)`.
type AttachKey = (u32, u64, u64);

/// The loaded eBPF object and what is attached.
pub struct Probes {
    ebpf: Ebpf,
    table: &'static [ProbeSpec],
    attached: HashMap<AttachKey, Vec<(&'static str, UProbeLinkId)>>,
}

static EBPF_OBJECT: &[u8] = aya::include_bytes_aligned!(concat!(env!("OUT_DIR"), "/agent-ebpf"));

fn is_permission_error(text: &str) -> bool {
    text.contains("Operation not permitted")
        || text.contains("Permission denied")
        || text.contains("EPERM")
}

impl Probes {
    /// Loads the object and every program in the attach table (not attached yet).
    ///
    /// # Errors
    /// [`ProbeError::Privileges`] without the needed capabilities, [`ProbeError::Load`] otherwise.
    pub fn load(options: LoadOptions) -> Result<Self, ProbeError> {
        let agent_tgid = std::process::id();
        let trace_all = u32::from(options.trace_all);
        // Records force a wakeup only when they take the waiting data past a quarter of the ring.
        let wakeup_bytes = u64::from(options.ringbuf_bytes / 4);
        let fd_syscalls: [u64; 8] = FD_SYSCALLS.map(|n| u64::try_from(n).unwrap_or(u64::MAX));
        let close_nr = u64::try_from(libc::SYS_close).unwrap_or(u64::MAX);
        let mmap_nr = u64::try_from(libc::SYS_mmap).unwrap_or(u64::MAX);
        let report_exec = u32::from(options.report_exec);
        let mut ebpf = EbpfLoader::new()
            .override_global("AGENT_TGID", &agent_tgid, true)
            .override_global("TRACE_ALL", &trace_all, true)
            .override_global("WAKEUP_BYTES", &wakeup_bytes, true)
            .override_global("FD_SYSCALL_NRS", &fd_syscalls, true)
            .override_global("FD_ARG_OFFSET", &FD_ARG_OFFSET, true)
            .override_global("CLOSE_NR", &close_nr, true)
            .override_global("MMAP_NR", &mmap_nr, true)
            .override_global("MMAP_ARG_OFFSETS", &MMAP_ARG_OFFSETS, true)
            .override_global("REPORT_EXEC", &report_exec, true)
            .map_max_entries("EVENTS", options.ringbuf_bytes)
            .load(EBPF_OBJECT)
            .map_err(|e| {
                let text = format!("{e:#}");
                let chain = error_chain(&e);
                if is_permission_error(&chain) {
                    ProbeError::Privileges(chain)
                } else {
                    ProbeError::Load(text + ": " + &chain)
                }
            })?;
        let mut loaded = std::collections::HashSet::new();
        for spec in options.table {
            if !loaded.insert(spec.program) {
                continue;
            }
            let program: &mut UProbe = ebpf
                .program_mut(spec.program)
                .ok_or_else(|| {
                    ProbeError::Load(format!("program {} missing from the object", spec.program))
                })?
                .try_into()
                .map_err(|e: ProgramError| ProbeError::Load(e.to_string()))?;
            program.load().map_err(|e| load_error(spec.program, &e))?;
        }
        if options.socket_fds {
            attach_raw_tracepoint(
                &mut ebpf,
                FD_PROGRAM,
                "sys_enter",
                "socket fds and addresses will be unknown, and closes unseen",
            )?;
        }
        if options.report_exec {
            attach_raw_tracepoint(
                &mut ebpf,
                EXEC_PROGRAM,
                "sched_process_exec",
                "new processes are found by the once-a-second scan only",
            )?;
        }
        Ok(Self {
            ebpf,
            table: options.table,
            attached: HashMap::new(),
        })
    }

    /// Attaches the table's probes to `lib` for process `pid` only, and adds `pid` to the
    /// in-kernel target set. Returns how many probes were attached. Attaching the same library
    /// to the same process twice does nothing. Pid 0 attaches once for every process that maps
    /// the file (`--all`, where the in-kernel filter lets every process but the agent through).
    ///
    /// # Errors
    /// [`ProbeError::Attach`] when a required symbol cannot be attached; whatever was attached for
    /// this library is detached again.
    pub fn attach(&mut self, pid: u32, lib: &TlsLibrary) -> Result<usize, ProbeError> {
        let key = (pid, lib.dev, lib.inode);
        if self.attached.contains_key(&key) {
            return Ok(0);
        }
        if pid != 0 {
            self.add_target(pid)?;
        }
        let scope = NonZeroU32::new(pid).map_or(UProbeScope::AllProcesses, UProbeScope::OneProcess);
        let mut links = Vec::new();
        for spec in self.table {
            let Some(&offset) = lib.symbols.get(spec.symbol) else {
                if spec.required {
                    return Err(ProbeError::Attach {
                        program: spec.program,
                        symbol: spec.symbol,
                        path: lib.path.display().to_string(),
                        pid,
                        reason: "symbol not found".into(),
                    });
                }
                continue;
            };
            let program = self.uprobe(spec.program)?;
            match program.attach(offset, &lib.host_path, scope) {
                Ok(id) => links.push((spec.program, id)),
                Err(e) if !spec.required => {
                    tracing::debug!(pid, symbol = spec.symbol, error = %error_chain(&e), "optional probe not attached");
                }
                Err(e) => {
                    let reason = error_chain(&e);
                    for (name, id) in links {
                        if let Ok(p) = self.uprobe(name) {
                            let _ = p.detach(id);
                        }
                    }
                    return Err(ProbeError::Attach {
                        program: spec.program,
                        symbol: spec.symbol,
                        path: lib.path.display().to_string(),
                        pid,
                        reason,
                    });
                }
            }
        }
        let n = links.len();
        self.attached.insert(key, links);
        Ok(n)
    }

    /// Detaches everything attached for `pid` and removes it from the target set.
    pub fn detach_pid(&mut self, pid: u32) {
        let keys: Vec<_> = self
            .attached
            .keys()
            .filter(|k| k.0 == pid)
            .copied()
            .collect();
        for key in keys {
            if let Some(links) = self.attached.remove(&key) {
                for (name, id) in links {
                    if let Ok(p) = self.uprobe(name) {
                        let _ = p.detach(id);
                    }
                }
            }
        }
        if let Some(map) = self.ebpf.map_mut("TARGETS")
            && let Ok(mut targets) = BpfHashMap::<&mut MapData, u32, u8>::try_from(map)
        {
            let _ = targets.remove(&pid);
        }
    }

    /// Pids with at least one library attached.
    #[must_use]
    pub fn attached_pids(&self) -> Vec<u32> {
        let mut pids: Vec<u32> = self
            .attached
            .keys()
            .map(|k| k.0)
            .filter(|p| *p != 0)
            .collect();
        pids.sort_unstable();
        pids.dedup();
        pids
    }

    fn add_target(&mut self, pid: u32) -> Result<(), ProbeError> {
        let map = self
            .ebpf
            .map_mut("TARGETS")
            .ok_or(ProbeError::Map("TARGETS"))?;
        let mut targets = BpfHashMap::<&mut MapData, u32, u8>::try_from(map)
            .map_err(|_| ProbeError::Map("TARGETS"))?;
        targets
            .insert(pid, 1, 0)
            .map_err(|e| ProbeError::Load(format!("adding pid {pid} to TARGETS: {e}")))
    }

    fn uprobe(&mut self, name: &'static str) -> Result<&mut UProbe, ProbeError> {
        self.ebpf
            .program_mut(name)
            .ok_or_else(|| ProbeError::Load(format!("program {name} missing")))?
            .try_into()
            .map_err(|e: ProgramError| ProbeError::Load(e.to_string()))
    }

    /// Takes the ring buffer out of the object, for the capture thread.
    ///
    /// # Errors
    /// [`ProbeError::Map`] when it is missing or was taken already.
    pub fn take_ring(&mut self) -> Result<RingBuf<MapData>, ProbeError> {
        let map = self
            .ebpf
            .take_map("EVENTS")
            .ok_or(ProbeError::Map("EVENTS"))?;
        RingBuf::try_from(map).map_err(|_| ProbeError::Map("EVENTS"))
    }

    /// Takes the kernel counters map out of the object.
    ///
    /// # Errors
    /// [`ProbeError::Map`] when it is missing or was taken already.
    pub fn take_counters(&mut self) -> Result<KernelCounters, ProbeError> {
        let map = self
            .ebpf
            .take_map("COUNTERS")
            .ok_or(ProbeError::Map("COUNTERS"))?;
        let array = PerCpuArray::try_from(map).map_err(|_| ProbeError::Map("COUNTERS"))?;
        Ok(KernelCounters { array })
    }
}

/// Why loading program `name` failed: missing privileges, or the verifier's or kernel's reason.
fn load_error(name: &str, e: &ProgramError) -> ProbeError {
    let chain = error_chain(e);
    if is_permission_error(&chain) {
        ProbeError::Privileges(chain)
    } else {
        ProbeError::Load(format!("{name}: {chain}"))
    }
}

/// Loads `name` and attaches it to the raw tracepoint `tracepoint` (for all processes: the
/// program filters itself). When it cannot be attached the agent runs on without it, and says
/// what that costs (`without`).
fn attach_raw_tracepoint(
    ebpf: &mut Ebpf,
    name: &str,
    tracepoint: &str,
    without: &str,
) -> Result<(), ProbeError> {
    let program: &mut RawTracePoint = ebpf
        .program_mut(name)
        .ok_or_else(|| ProbeError::Load(format!("program {name} missing from the object")))?
        .try_into()
        .map_err(|e: ProgramError| ProbeError::Load(e.to_string()))?;
    program.load().map_err(|e| load_error(name, &e))?;
    // The link lives as long as the program, that is as long as the agent.
    if let Err(e) = program.attach(tracepoint) {
        tracing::warn!(error = %error_chain(&e), "{tracepoint} not attached: {without}");
    }
    Ok(())
}

/// The per-CPU kernel counters, summed on read.
pub struct KernelCounters {
    array: PerCpuArray<MapData, u64>,
}

impl KernelCounters {
    /// Current totals, in [`Counter::ALL`] order.
    #[must_use]
    pub fn read(&self) -> [u64; Counter::COUNT as usize] {
        let mut out = [0u64; Counter::COUNT as usize];
        for (i, c) in Counter::ALL.iter().enumerate() {
            if let Ok(values) = self.array.get(&(*c as u32), 0) {
                out[i] = values.iter().sum();
            }
        }
        out
    }
}

/// The whole `source()` chain of an error, joined.
pub fn error_chain(e: &dyn std::error::Error) -> String {
    let mut s = e.to_string();
    let mut cur = e.source();
    while let Some(inner) = cur {
        s.push_str(": ");
        s.push_str(&inner.to_string());
        cur = inner.source();
    }
    s
}
