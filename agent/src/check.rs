//! `taskless-agent check`: whether the agent can run here, found by trying what it needs before
//! anything is attached to another process: the kernel, its BTF, a ring buffer, the eBPF
//! programs, a uprobe on the agent's own code, each capability, the packs. One line each on
//! stdout (`ok`, `warn` or `FAIL`); exit 1 when any line failed.

use std::{fmt, process::ExitCode};

use crate::{
    capture::{
        btf,
        probes::{ExecReports, LoadOptions, Probes, error_chain},
    },
    config::PackConfig,
    packs, privileges,
};

/// How one check went.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Status {
    /// Works.
    Ok,
    /// The agent runs, with less.
    Warn,
    /// The agent cannot run (or misses what it is for).
    Fail,
}

impl fmt::Display for Status {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Self::Ok => "ok  ",
            Self::Warn => "warn",
            Self::Fail => "FAIL",
        })
    }
}

/// One line of the report.
#[derive(Clone, Debug)]
pub struct Line {
    /// How it went.
    pub status: Status,
    /// What was checked.
    pub what: String,
    /// What was found.
    pub detail: String,
}

impl fmt::Display for Line {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} {}: {}", self.status, self.what, self.detail)
    }
}

fn line(status: Status, what: impl Into<String>, detail: impl Into<String>) -> Line {
    Line {
        status,
        what: what.into(),
        detail: detail.into(),
    }
}

/// The ring buffer the check loads the programs with (the real size does not matter here).
const RING_BYTES: u32 = 1 << 20;

/// Runs every check, printing each line as it is known; exit 1 when one failed.
#[must_use]
pub fn check(packs: &PackConfig) -> ExitCode {
    let mut failed = false;
    let mut print = |l: Line| {
        failed |= l.status == Status::Fail;
        println!("{l}");
    };
    print(kernel());
    print(btf_line());
    for l in capabilities(privileges::effective()) {
        print(l);
    }
    print(ring_buffer());
    for l in programs() {
        print(l);
    }
    print(packs_line(packs));
    if failed {
        println!("the agent cannot run here as it is: see the FAIL lines");
        ExitCode::FAILURE
    } else {
        println!("the agent can run here");
        ExitCode::SUCCESS
    }
}

/// The kernel's release and machine.
fn kernel() -> Line {
    let read = |p: &str| std::fs::read_to_string(p).map(|s| s.trim().to_owned());
    match read("/proc/sys/kernel/osrelease") {
        Ok(release) => {
            let detail = match read("/proc/sys/kernel/arch") {
                Ok(arch) => format!("Linux {release} {arch}"),
                Err(_) => format!("Linux {release}"),
            };
            // Ring buffers (5.8) are the newest thing the programs need.
            let status = match kernel_version(&release) {
                Some(v) if v < (5, 8) => Status::Fail,
                _ => Status::Ok,
            };
            let detail = if status == Status::Fail {
                format!("{detail}: older than 5.8, which has the BPF ring buffer")
            } else {
                detail
            };
            line(status, "kernel", detail)
        }
        Err(e) => line(Status::Warn, "kernel", format!("release unknown: {e}")),
    }
}

/// `(major, minor)` of a kernel release string (`6.18.0-1-amd64`).
#[must_use]
pub fn kernel_version(release: &str) -> Option<(u32, u32)> {
    let mut parts = release.split(|c: char| !c.is_ascii_digit());
    let major = parts.next()?.parse().ok()?;
    let minor = parts.next()?.parse().ok()?;
    Some((major, minor))
}

/// The kernel's BTF, and the offsets the programs read from it.
fn btf_line() -> Line {
    match btf::Btf::from_sys_fs() {
        Ok(b) => match (btf::file_type_offsets(&b), btf::socket_offsets(&b)) {
            (Ok(_), Ok(_)) => line(
                Status::Ok,
                "BTF",
                "/sys/kernel/btf/vmlinux read, kernel struct offsets found",
            ),
            (Err(e), _) => line(
                Status::Warn,
                "BTF",
                format!("{e}: sockets cannot be told from other files inside TLS calls"),
            ),
            (_, Err(e)) => line(
                Status::Warn,
                "BTF",
                format!(
                    "{e}: connections' addresses are read from /proc, which a process that exits at once no longer has"
                ),
            ),
        },
        Err(e) => line(
            Status::Warn,
            "BTF",
            format!(
                "{e}: sockets cannot be told from other files inside TLS calls (mount /sys/kernel/btf into the container)"
            ),
        ),
    }
}

/// One line per needed capability.
#[must_use]
pub fn capabilities(mask: Option<u64>) -> Vec<Line> {
    let Some(mask) = mask else {
        return vec![line(
            Status::Warn,
            "capabilities",
            "/proc/self/status unreadable: unknown",
        )];
    };
    let missing = privileges::missing_at_start(mask);
    privileges::Capability::NEEDED
        .iter()
        .map(|cap| {
            if missing.contains(cap) {
                line(
                    Status::Fail,
                    cap.name(),
                    format!("missing, needed {}", cap.purpose()),
                )
            } else if privileges::missing_from(mask, &[*cap]).is_empty() {
                line(Status::Ok, cap.name(), "present")
            } else {
                line(
                    Status::Ok,
                    cap.name(),
                    "absent, but CAP_BPF and CAP_PERFMON are present (enough before the 2025 kernels; the uprobe line below tells)",
                )
            }
        })
        .collect()
}

/// A ring buffer map, created and closed again.
fn ring_buffer() -> Line {
    match aya::sys::is_map_supported(aya::maps::MapType::RingBuf) {
        Ok(true) => line(
            Status::Ok,
            "ring buffer",
            "a BPF ring buffer map was created",
        ),
        Ok(false) => line(
            Status::Fail,
            "ring buffer",
            "this kernel has no BPF ring buffer (5.8 and later do)",
        ),
        Err(e) => line(
            Status::Fail,
            "ring buffer",
            format!(
                "creating one failed: {}: {}",
                error_chain(&e),
                privileges::advice(
                    &[privileges::Capability::SysAdmin],
                    privileges::Otherwise::Seccomp
                )
            ),
        ),
    }
}

/// The agent's eBPF programs loaded (through the verifier), then a uprobe on the agent itself.
fn programs() -> Vec<Line> {
    let loaded = Probes::load(LoadOptions {
        trace_all: false,
        ringbuf_bytes: RING_BYTES,
        empty: false,
        socket_fds: false,
        report_exec: ExecReports::Off,
    });
    let mut probes = match loaded {
        Ok(p) => p,
        Err(e) => {
            return vec![
                line(Status::Fail, "eBPF programs", e.to_string()),
                line(
                    Status::Fail,
                    "uprobes",
                    "not tried: the programs did not load",
                ),
            ];
        }
    };
    let mut lines = vec![line(
        Status::Ok,
        "eBPF programs",
        "every capture program loaded (the verifier accepted them)",
    )];
    lines.push(match probes.attach_to_self() {
        Ok(()) => line(
            Status::Ok,
            "uprobes",
            "a uprobe was created on the agent's own code, for this process only",
        ),
        Err(e) => line(Status::Fail, "uprobes", e.to_string()),
    });
    lines
}

/// The packs, loaded as a run would (compiled, or read from the state directory).
fn packs_line(config: &PackConfig) -> Line {
    match packs::load_packs(config) {
        Ok(set) => {
            let names: Vec<String> = set.packs().iter().map(|p| p.id.clone()).collect();
            line(
                Status::Ok,
                "packs",
                format!("{} loaded: {}", names.len(), names.join(", ")),
            )
        }
        Err(e) => line(Status::Fail, "packs", e.to_string()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::privileges::Capability;

    #[test]
    fn kernel_versions() {
        assert_eq!(kernel_version("6.18.0-1-amd64"), Some((6, 18)));
        assert_eq!(kernel_version("5.4.0"), Some((5, 4)));
        assert_eq!(kernel_version("weird"), None);
    }

    #[test]
    fn one_line_per_capability_failing_only_the_missing_one() {
        let all: u64 = Capability::NEEDED
            .iter()
            .fold(0, |m, c| m | 1 << c.number());
        let lines = capabilities(Some(all));
        assert_eq!(lines.len(), Capability::NEEDED.len());
        assert!(lines.iter().all(|l| l.status == Status::Ok));
        let without = all & !(1 << Capability::SysPtrace.number());
        let lines = capabilities(Some(without));
        let failed: Vec<&Line> = lines.iter().filter(|l| l.status == Status::Fail).collect();
        assert_eq!(failed.len(), 1);
        assert_eq!(failed[0].what, "CAP_SYS_PTRACE");
        assert!(
            failed[0]
                .to_string()
                .starts_with("FAIL CAP_SYS_PTRACE: missing"),
            "{}",
            failed[0]
        );
    }
}
