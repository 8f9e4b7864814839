//! Loading the eBPF object and attaching its programs where the providers' tables say.
//!
//! Probes are attached per process (`perf_event_open` with the pid): the breakpoint is installed
//! only in the target, so other processes that map the same library pay nothing. The in-kernel
//! `TARGETS` filter is a second line of defence and keeps the agent's own process out.

use std::{
    collections::HashMap,
    num::NonZeroU32,
    sync::{Arc, atomic::Ordering},
};

use agent_common::Counter;
use aya::{
    Ebpf, EbpfLoader,
    maps::{HashMap as BpfHashMap, MapData, PerCpuArray},
    programs::{
        ProgramError, RawTracePoint, UProbe,
        uprobe::{UProbeAttachLocation, UProbeAttachPoint, UProbeLinkId, UProbeScope},
    },
};

use super::{code, discovery::TlsLibrary, providers::PROVIDERS, ring::Ring};
use crate::privileges::{self, Capability, Otherwise};

/// The programs that do nothing, put on every attach point instead of the real ones to measure
/// the probes' own cost against the floor (`--probe-set empty`, benchmarks only).
const EMPTY_PROGRAMS: [&str; 2] = ["probe_empty", "probe_empty_ret"];

/// The function of the agent's own code [`Probes::attach_to_self`] puts a uprobe on.
const SELF_TEST_SYMBOL: &str = "taskless_agent_uprobe_self_test";

/// Does nothing, somewhere a uprobe can be put (`taskless-agent check`).
#[unsafe(no_mangle)]
#[inline(never)]
pub extern "C" fn taskless_agent_uprobe_self_test() {
    std::hint::black_box(());
}

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

/// Offset of the second return register in the kernel's `struct pt_regs` (where a Rust
/// `io::Result<usize>` returns its count).
#[cfg(target_arch = "x86_64")]
const RET2_OFFSET: u64 = 12 * 8; // dx
#[cfg(target_arch = "aarch64")]
const RET2_OFFSET: u64 = 8; // regs[1]

/// Offsets of `mmap`'s `prot` and `fd` arguments in the kernel's `struct pt_regs`.
#[cfg(target_arch = "x86_64")]
const MMAP_ARG_OFFSETS: [u64; 2] = [12 * 8, 9 * 8]; // dx, r8
#[cfg(target_arch = "aarch64")]
const MMAP_ARG_OFFSETS: [u64; 2] = [2 * 8, 4 * 8]; // regs[2], regs[4]

/// Failures while loading or attaching.
#[derive(Debug, thiserror::Error)]
pub enum ProbeError {
    /// The kernel refused the BPF object or a program for lack of privileges.
    #[error("loading eBPF programs was refused ({cause}): {advice}")]
    Privileges {
        /// The kernel's answer.
        cause: String,
        /// Which capability is missing, or what else refused it.
        advice: String,
    },
    /// The object could not be loaded (an old kernel, a missing BTF, a map the kernel refused).
    #[error("loading the eBPF object failed: {0}")]
    Object(String),
    /// The verifier or the kernel refused one program.
    #[error("loading eBPF program {program} failed: {cause}")]
    Program {
        /// The program.
        program: &'static str,
        /// The verifier's or kernel's reason.
        cause: String,
    },
    /// The object has no program of that name or type (a build mismatch).
    #[error("eBPF program {0} is missing from the object")]
    MissingProgram(&'static str),
    /// A map the object must have is missing or of the wrong type.
    #[error("eBPF object is missing map {0}")]
    Map(&'static str),
    /// A process could not be added to the in-kernel target set.
    #[error("adding pid {pid} to the target set failed: {cause}")]
    Target {
        /// The process.
        pid: u32,
        /// The map error.
        cause: String,
    },
    /// The process exited while being attached to.
    #[error("pid {pid} exited while its probes were being attached")]
    ProcessExited {
        /// The process.
        pid: u32,
    },
    /// The file went away while being attached to: deleted, or reached through the root of a
    /// process (`/proc/PID/root/...`) that has exited.
    #[error("{path} went away while its probes were being attached")]
    FileGone {
        /// The file, as the agent reached it.
        path: std::path::PathBuf,
    },
    /// A required attach point could not be attached.
    #[error("attaching {program} to {function} in {path} (pid {pid}) failed: {reason}")]
    Attach {
        /// Program name.
        program: &'static str,
        /// The function.
        function: &'static str,
        /// Library path.
        path: String,
        /// Target pid.
        pid: u32,
        /// Why.
        reason: String,
    },
}

/// Load-time settings.
#[derive(Clone, Copy, Debug)]
pub struct LoadOptions {
    /// Trace every process (the per-process attach still decides where probes fire).
    pub trace_all: bool,
    /// Ring buffer size in bytes (a power of two, multiple of the page size).
    pub ringbuf_bytes: u32,
    /// Attach programs that do nothing instead of the providers' (to measure the floor).
    pub empty: bool,
    /// Attach the syscall program that finds each TLS call's socket fd (part of the real probe
    /// set; off for the empty floor).
    pub socket_fds: bool,
    /// Which new process images (`exec`) and executable file mappings are reported.
    pub report_exec: ExecReports,
}

/// Which processes' new images (`execve`) and library loads the kernel reports.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ExecReports {
    /// None.
    Off,
    /// Those of traced processes (watched, or waiting for a TLS library).
    Traced,
    /// Every process's new image, and traced processes' library loads (`--all`, `--follow`).
    All,
}

/// One library in one process: `(pid, device, inode)`.
type AttachKey = (u32, u64, u64);

/// The loaded eBPF object and what is attached.
pub struct Probes {
    ebpf: Ebpf,
    empty: bool,
    stats: Arc<AttachStats>,
    attached: HashMap<AttachKey, Vec<(&'static str, UProbeLinkId)>>,
}

static EBPF_OBJECT: &[u8] = aya::include_bytes_aligned!(concat!(env!("OUT_DIR"), "/agent-ebpf"));

/// Whether a load failure means missing privileges. The verifier refuses a program with
/// `EACCES` too, but then says why in its log: that is a program error, not a privilege one.
fn is_permission_error(text: &str) -> bool {
    text.contains("Operation not permitted")
        || text.contains("EPERM")
        || (text.contains("Permission denied") && !text.contains("Verifier output"))
}

impl Probes {
    /// Loads the object and every provider's programs (not attached yet).
    ///
    /// # Errors
    /// [`ProbeError::Privileges`] without the needed capabilities; the other variants when the
    /// object, a program or a map is refused.
    pub fn load(options: LoadOptions) -> Result<Self, ProbeError> {
        let agent_tgid = std::process::id();
        let trace_all = u32::from(options.trace_all);
        // Records force a wakeup only when they take the waiting data past a quarter of the ring.
        let wakeup_bytes = u64::from(options.ringbuf_bytes / 4);
        let fd_syscalls: [u64; 8] = FD_SYSCALLS.map(|n| u64::try_from(n).unwrap_or(u64::MAX));
        let close_nr = u64::try_from(libc::SYS_close).unwrap_or(u64::MAX);
        let mmap_nr = u64::try_from(libc::SYS_mmap).unwrap_or(u64::MAX);
        let report_exec: u32 = match options.report_exec {
            ExecReports::Off => 0,
            ExecReports::All => 1,
            ExecReports::Traced => 2,
        };
        let btf = super::btf::Btf::from_sys_fs();
        let file_type_offsets = btf
            .as_ref()
            .map_err(ToString::to_string)
            .and_then(|b| super::btf::file_type_offsets(b).map_err(|e| e.to_string()))
            .unwrap_or_else(|e| {
                tracing::warn!(error = %e, "cannot tell sockets from other files inside TLS calls: a file read in the middle of a call may be taken for the connection's socket");
                [0; 6]
            });
        let socket_offsets = btf
            .as_ref()
            .map_err(ToString::to_string)
            .and_then(|b| super::btf::socket_offsets(b).map_err(|e| e.to_string()))
            .unwrap_or_else(|e| {
                tracing::warn!(error = %e, "cannot read connections' addresses in the kernel: they are taken from /proc, which a process that exits at once no longer has");
                [0; 9]
            });
        drop(btf);
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
            .override_global("FILE_TYPE_OFFSETS", &file_type_offsets, true)
            .override_global("SOCKET_OFFSETS", &socket_offsets, true)
            .override_global("RET2_OFFSET", &RET2_OFFSET, true)
            .map_max_entries("EVENTS", options.ringbuf_bytes)
            .load(EBPF_OBJECT)
            .map_err(|e| {
                let chain = error_chain(&e);
                if is_permission_error(&chain) {
                    privileges_error(chain)
                } else {
                    ProbeError::Object(chain)
                }
            })?;
        let mut programs: Vec<&'static str> = if options.empty {
            EMPTY_PROGRAMS.to_vec()
        } else {
            PROVIDERS.iter().flat_map(|p| p.programs).copied().collect()
        };
        // Providers may share programs (static OpenSSL uses OpenSSL's): each is loaded once.
        programs.sort_unstable();
        programs.dedup();
        for name in programs {
            uprobe(&mut ebpf, name)?
                .load()
                .map_err(|e| load_error(name, &e))?;
        }
        if options.socket_fds {
            attach_raw_tracepoint(
                &mut ebpf,
                FD_PROGRAM,
                "sys_enter",
                "socket fds and addresses will be unknown, and closes unseen",
            )?;
        }
        if options.report_exec != ExecReports::Off {
            attach_raw_tracepoint(
                &mut ebpf,
                EXEC_PROGRAM,
                "sched_process_exec",
                "new processes are found by the once-a-second scan only",
            )?;
        }
        Ok(Self {
            ebpf,
            empty: options.empty,
            stats: Arc::default(),
            attached: HashMap::new(),
        })
    }

    /// Attaches a program that does nothing to a function of the agent's own executable, for
    /// this process only, calls the function, and detaches again: proof that this kernel lets
    /// the agent create uprobes (`taskless-agent check`).
    ///
    /// # Errors
    /// [`ProbeError::Attach`] with the kernel's reason (naming a missing capability).
    pub fn attach_to_self(&mut self) -> Result<(), ProbeError> {
        let name = EMPTY_PROGRAMS[0];
        let program = uprobe(&mut self.ebpf, name)?;
        if program.fd().is_err() {
            program.load().map_err(|e| load_error(name, &e))?;
        }
        let exe = std::fs::read_link("/proc/self/exe").unwrap_or_else(|_| "/proc/self/exe".into());
        let pid = std::process::id();
        let point = UProbeAttachPoint {
            location: UProbeAttachLocation::Symbol(SELF_TEST_SYMBOL),
            cookie: None,
        };
        let scope = NonZeroU32::new(pid).map_or(UProbeScope::AllProcesses, UProbeScope::OneProcess);
        let id = program.attach(point, &exe, scope).map_err(|e| {
            let mut reason = error_chain(&e);
            if is_permission_error(&reason) {
                reason.push_str(": ");
                reason.push_str(&privileges::advice(
                    &[Capability::SysAdmin],
                    Otherwise::Seccomp,
                ));
            }
            ProbeError::Attach {
                program: name,
                function: SELF_TEST_SYMBOL,
                path: exe.display().to_string(),
                pid,
                reason,
            }
        })?;
        taskless_agent_uprobe_self_test();
        let _ = program.detach(id);
        Ok(())
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
        for point in &lib.points {
            let program = match (self.empty, point.ret) {
                (false, _) => point.program,
                (true, false) => EMPTY_PROGRAMS[0],
                (true, true) => EMPTY_PROGRAMS[1],
            };
            let at = |offset| UProbeAttachPoint {
                location: UProbeAttachLocation::AbsoluteOffset(offset),
                cookie: point.cookie,
            };
            let error = match uprobe(&mut self.ebpf, program)?.attach(
                at(point.offset),
                &lib.host_path,
                scope,
            ) {
                Ok(id) => {
                    links.push((program, id));
                    continue;
                }
                Err(e) => e,
            };
            let errno = os_error(&error);
            if errno == Some(libc::ESRCH) {
                self.detach_links(links);
                return Err(ProbeError::ProcessExited { pid });
            }
            if errno == Some(libc::ENOENT) && !lib.host_path.exists() {
                self.detach_links(links);
                return Err(ProbeError::FileGone {
                    path: lib.host_path.clone(),
                });
            }
            if errno == Some(libc::EINVAL) {
                // The kernel keeps one uprobe per file offset, and refuses a second one whose
                // reference counter differs (another tracer registered it so). An entry probe
                // can often step past that offset; a return probe cannot.
                if !point.ret
                    && let Some(next) =
                        code::entry_after_first_instruction(&lib.host_path, point.offset)
                    && let Ok(id) =
                        uprobe(&mut self.ebpf, program)?.attach(at(next), &lib.host_path, scope)
                {
                    links.push((program, id));
                    self.stats.probes_moved.fetch_add(1, Ordering::Relaxed);
                    tracing::info!(pid, function = point.function, library = %lib.path.display(), "another uprobe sits on this function's first instruction; attached on the second");
                    continue;
                }
                self.stats
                    .probes_not_attached
                    .fetch_add(1, Ordering::Relaxed);
                tracing::warn!(
                    pid,
                    program,
                    function = point.function,
                    library = %lib.path.display(),
                    other_tracers = %other_tracers(),
                    "the kernel refused this probe ({}): another tracer holds a uprobe on this function with a reference counter, and the kernel allows only one kind at one offset; the other probes stay attached, and what this one captures is missing",
                    error_chain(&error)
                );
                continue;
            }
            if point.required {
                self.detach_links(links);
                let mut reason = error_chain(&error);
                if is_permission_error(&reason) {
                    // Creating a uprobe needs CAP_SYS_ADMIN; one for another user's process,
                    // CAP_SYS_PTRACE too.
                    reason.push_str(": ");
                    reason.push_str(&privileges::advice(
                        &[Capability::SysAdmin, Capability::SysPtrace],
                        Otherwise::Seccomp,
                    ));
                }
                return Err(ProbeError::Attach {
                    program,
                    function: point.function,
                    path: lib.path.display().to_string(),
                    pid,
                    reason,
                });
            }
            tracing::debug!(pid, function = point.function, error = %error_chain(&error), "optional probe not attached");
        }
        let n = links.len();
        self.attached.insert(key, links);
        Ok(n)
    }

    fn detach_links(&mut self, links: Vec<(&'static str, UProbeLinkId)>) {
        for (name, id) in links {
            if let Ok(p) = uprobe(&mut self.ebpf, name) {
                let _ = p.detach(id);
            }
        }
    }

    /// The counters of attaching.
    #[must_use]
    pub fn stats(&self) -> &Arc<AttachStats> {
        &self.stats
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
                self.detach_links(links);
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

    /// Adds `pid` to the in-kernel target set without attaching anything: its library loads
    /// and `execve`s are reported (with [`ExecReports::Traced`] or more), and the syscalls of
    /// its TLS calls are followed once probes are attached.
    ///
    /// # Errors
    /// When the target set refuses it.
    pub fn watch_pid(&mut self, pid: u32) -> Result<(), ProbeError> {
        self.add_target(pid)
    }

    fn add_target(&mut self, pid: u32) -> Result<(), ProbeError> {
        let map = self
            .ebpf
            .map_mut("TARGETS")
            .ok_or(ProbeError::Map("TARGETS"))?;
        let mut targets = BpfHashMap::<&mut MapData, u32, u8>::try_from(map)
            .map_err(|_| ProbeError::Map("TARGETS"))?;
        targets.insert(pid, 1, 0).map_err(|e| ProbeError::Target {
            pid,
            cause: error_chain(&e),
        })
    }

    /// Takes the ring buffer out of the object, for the capture thread.
    ///
    /// # Errors
    /// [`ProbeError::Map`] when it is missing or was taken already, [`ProbeError::Object`] when
    /// it cannot be mapped.
    pub fn take_ring(&mut self) -> Result<Ring, ProbeError> {
        let Some(aya::maps::Map::RingBuf(map)) = self.ebpf.take_map("EVENTS") else {
            return Err(ProbeError::Map("EVENTS"));
        };
        Ring::new(map).map_err(|e| ProbeError::Object(e.to_string()))
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

/// The uprobe program `name` of the object.
fn uprobe<'a>(ebpf: &'a mut Ebpf, name: &'static str) -> Result<&'a mut UProbe, ProbeError> {
    ebpf.program_mut(name)
        .ok_or(ProbeError::MissingProgram(name))?
        .try_into()
        .map_err(|_: ProgramError| ProbeError::MissingProgram(name))
}

/// A refusal to load: names the capability this process lacks (`CAP_SYS_ADMIN`, which the
/// agent needs for its uprobes and which covers `CAP_BPF` and `CAP_PERFMON`), or says what else
/// may have refused it.
fn privileges_error(cause: String) -> ProbeError {
    ProbeError::Privileges {
        cause,
        advice: privileges::advice(&[Capability::SysAdmin], Otherwise::Seccomp),
    }
}

/// Why loading program `name` failed: missing privileges, or the verifier's or kernel's reason.
fn load_error(name: &'static str, e: &ProgramError) -> ProbeError {
    let cause = error_chain(e);
    if is_permission_error(&cause) {
        privileges_error(cause)
    } else {
        ProbeError::Program {
            program: name,
            cause,
        }
    }
}

/// Loads `name` and attaches it to the raw tracepoint `tracepoint` (for all processes: the
/// program filters itself). When it cannot be attached the agent runs on without it, and says
/// what that costs (`without`).
fn attach_raw_tracepoint(
    ebpf: &mut Ebpf,
    name: &'static str,
    tracepoint: &str,
    without: &str,
) -> Result<(), ProbeError> {
    let program: &mut RawTracePoint = ebpf
        .program_mut(name)
        .ok_or(ProbeError::MissingProgram(name))?
        .try_into()
        .map_err(|_: ProgramError| ProbeError::MissingProgram(name))?;
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

impl crate::stats::Counters for KernelCounters {
    fn report(&self, out: &mut Vec<(String, u64)>) {
        for (c, v) in Counter::ALL.iter().zip(self.read()) {
            out.push((format!("kernel_{}", c.name()), v));
        }
    }
}

crate::stats::counters! {
    /// Counters of attaching.
    pub struct AttachStats {
        /// Entry probes attached on a function's second instruction, because another tracer's
        /// uprobe sits on its first.
        probes_moved,
        /// Probes the kernel refused because another tracer's uprobe sits at the same place.
        probes_not_attached,
    }
}

/// The OS error at the root of `e`, if there is one.
fn os_error(e: &(dyn std::error::Error + 'static)) -> Option<i32> {
    let mut cur: Option<&(dyn std::error::Error + 'static)> = Some(e);
    while let Some(err) = cur {
        if let Some(io) = err.downcast_ref::<std::io::Error>()
            && let Some(code) = io.raw_os_error()
        {
            return Some(code);
        }
        cur = err.source();
    }
    None
}

/// Programs that attach uprobes to TLS libraries (by their process name), running now: named
/// when the kernel refuses a probe because of another tracer's.
fn other_tracers() -> String {
    const KNOWN: [&str; 9] = [
        "sslsniff",
        "bpftrace",
        "ecapture",
        "beyla",
        "obi",
        "tetragon",
        "kubeshark",
        "pem",
        "coroot",
    ];
    let mut found = Vec::new();
    for pid in crate::procfs::all_pids() {
        let name = crate::procfs::process_name(pid);
        let cmdline = std::fs::read(format!("/proc/{pid}/cmdline")).unwrap_or_default();
        let cmdline = String::from_utf8_lossy(&cmdline).replace('\0', " ");
        if KNOWN.iter().any(|k| {
            name.starts_with(k)
                || cmdline
                    .split(' ')
                    .take(2)
                    .any(|a| a.rsplit('/').next().is_some_and(|b| b.starts_with(k)))
        }) {
            found.push(format!("{name} (pid {pid})"));
        }
    }
    if found.is_empty() {
        "none recognised (bcc's sslsniff registers its uprobes this way)".into()
    } else {
        found.join(", ")
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
