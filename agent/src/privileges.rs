//! The Linux capabilities the agent needs, and which of them this process lacks, so a refusal
//! from the kernel names the missing one instead of saying "run as root".
//!
//! [`Capability::NEEDED`] is the set `deploy/kubernetes/40-daemonset.yaml` grants, found by
//! experiment (docs/deploy.md): the agent runs with exactly these and nothing else.
//! `CAP_SYS_ADMIN` is among them because kernels since 2025 ask for it to create uprobes (commit
//! ba677dbe77af, "perf: Revert to requiring CAP_SYS_ADMIN for uprobes"); before that change
//! `CAP_BPF` and `CAP_PERFMON` were enough, and `CAP_SYS_ADMIN` covers both. The effective set is
//! read from `/proc/self/status` (`CapEff`), which is what the kernel checks.

use std::fmt;

/// A capability the agent uses.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Capability {
    /// Create uprobes (kernels since 2025); also stands in for `CAP_BPF` and `CAP_PERFMON`.
    SysAdmin,
    /// Load eBPF programs, create maps and BTF.
    Bpf,
    /// Load tracing programs; create uprobes on kernels before 2025.
    Perfmon,
    /// Read other processes' `/proc/PID/maps`, `fd/` and `root/`, and attach probes to a pid
    /// whose owner or capabilities differ from the agent's.
    SysPtrace,
    /// Open library files, through `/proc/PID/root`, that the agent's user may not read or whose
    /// directories it may not search (another user's files, private directories).
    DacReadSearch,
}

impl Capability {
    /// What the agent needs: the DaemonSet's capabilities.
    pub const NEEDED: [Self; 3] = [Self::SysAdmin, Self::SysPtrace, Self::DacReadSearch];

    /// The capability's number (`linux/capability.h`).
    #[must_use]
    pub fn number(self) -> u32 {
        match self {
            Self::DacReadSearch => 2,
            Self::SysPtrace => 19,
            Self::SysAdmin => 21,
            Self::Perfmon => 38,
            Self::Bpf => 39,
        }
    }

    /// Its name, `CAP_SYS_ADMIN`.
    #[must_use]
    pub fn name(self) -> &'static str {
        match self {
            Self::SysAdmin => "CAP_SYS_ADMIN",
            Self::Bpf => "CAP_BPF",
            Self::Perfmon => "CAP_PERFMON",
            Self::SysPtrace => "CAP_SYS_PTRACE",
            Self::DacReadSearch => "CAP_DAC_READ_SEARCH",
        }
    }

    /// What the agent does with it.
    #[must_use]
    pub fn purpose(self) -> &'static str {
        match self {
            Self::SysAdmin => {
                "to load the eBPF programs and create uprobes; kernels since 2025 ask for it for uprobes, before them CAP_BPF with CAP_PERFMON were enough"
            }
            Self::Bpf => "to load eBPF programs and maps",
            Self::Perfmon => "to load tracing programs",
            Self::SysPtrace => "to read other processes' memory maps and attach probes to them",
            Self::DacReadSearch => "to open TLS libraries in other users' files and containers",
        }
    }

    /// A broader capability the kernel accepts in its place.
    fn stand_in(self) -> Option<Self> {
        match self {
            Self::Bpf | Self::Perfmon => Some(Self::SysAdmin),
            Self::SysAdmin | Self::SysPtrace | Self::DacReadSearch => None,
        }
    }
}

impl fmt::Display for Capability {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// `CAP_DAC_OVERRIDE`: every file permission check, reading and searching included.
const DAC_OVERRIDE: u32 = 1;

/// What else can refuse the agent when it has the capabilities.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Otherwise {
    /// eBPF and perf events: a seccomp filter or a security module.
    Seccomp,
    /// Another process's `/proc` files: a security module or the process's own protection.
    Ptrace,
}

/// This process's effective capability set (`CapEff` of `/proc/self/status`), or `None` when it
/// cannot be read.
#[must_use]
pub fn effective() -> Option<u64> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    parse_cap_eff(&status)
}

/// The `CapEff` mask in the text of a `/proc/PID/status` file.
#[must_use]
pub fn parse_cap_eff(status: &str) -> Option<u64> {
    status
        .lines()
        .find_map(|l| l.strip_prefix("CapEff:"))
        .and_then(|hex| u64::from_str_radix(hex.trim(), 16).ok())
}

/// Which of `wanted` the mask lacks (one the kernel takes a broader capability for counts as
/// present when that one is: `CAP_SYS_ADMIN` for `CAP_BPF` and `CAP_PERFMON`,
/// `CAP_DAC_OVERRIDE` for `CAP_DAC_READ_SEARCH`).
#[must_use]
pub fn missing_from(mask: u64, wanted: &[Capability]) -> Vec<Capability> {
    let has = |n: u32| mask & (1u64 << n) != 0;
    wanted
        .iter()
        .copied()
        .filter(|c| {
            let broader = match c {
                Capability::DacReadSearch => Some(DAC_OVERRIDE),
                _ => c.stand_in().map(Capability::number),
            };
            !has(c.number()) && !broader.is_some_and(has)
        })
        .collect()
}

/// The needed capabilities the mask lacks, as far as can be told before anything is tried:
/// without `CAP_SYS_ADMIN` but with `CAP_BPF` and `CAP_PERFMON`, a kernel from before 2025 needs
/// nothing more (a newer one's refusal names `CAP_SYS_ADMIN` when the first probe is attached).
#[must_use]
pub fn missing_at_start(mask: u64) -> Vec<Capability> {
    let older_kernel_set = missing_from(mask, &[Capability::Bpf, Capability::Perfmon]).is_empty()
        && mask & (1u64 << Capability::Bpf.number()) != 0;
    missing_from(mask, &Capability::NEEDED)
        .into_iter()
        .filter(|c| !(*c == Capability::SysAdmin && older_kernel_set))
        .collect()
}

/// Advice after the kernel refused something needing `wanted`: the ones this process lacks, each
/// with what it is for; or, when it has them all, what else refuses such requests.
#[must_use]
pub fn advice(wanted: &[Capability], otherwise: Otherwise) -> String {
    advice_for(effective(), wanted, otherwise)
}

/// [`advice`] for a given effective set (`None`: unknown).
#[must_use]
pub fn advice_for(mask: Option<u64>, wanted: &[Capability], otherwise: Otherwise) -> String {
    let names: Vec<&str> = wanted.iter().map(|c| c.name()).collect();
    let Some(mask) = mask else {
        return format!(
            "the agent needs root or {} (its capabilities could not be read)",
            names.join(", ")
        );
    };
    let missing = missing_from(mask, wanted);
    if missing.is_empty() {
        let what = match otherwise {
            Otherwise::Seccomp => {
                "a seccomp profile or a security module (AppArmor, SELinux) denied it"
            }
            Otherwise::Ptrace => {
                "a security module (AppArmor, SELinux, Yama) or the process's own protection denied it"
            }
        };
        return format!(
            "the agent has {} but was refused anyway: {what}",
            names.join(", ")
        );
    }
    let parts: Vec<String> = missing
        .iter()
        .map(|c| format!("{} ({})", c.name(), c.purpose()))
        .collect();
    format!(
        "missing capability {}: run the agent as root or grant it",
        parts.join(", ")
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    fn mask(caps: &[Capability]) -> u64 {
        caps.iter().fold(0, |m, c| m | 1 << c.number())
    }

    #[test]
    fn reads_the_effective_set_from_a_status_file() {
        let status = "Name:\tx\nCapInh:\t0000000000000000\nCapPrm:\t000001fffeffffff\nCapEff:\t0000000000280004\nCapBnd:\t000001fffeffffff\n";
        let eff = parse_cap_eff(status).expect("CapEff");
        assert_eq!(eff, mask(&Capability::NEEDED));
        assert_eq!(parse_cap_eff("Name:\tx\n"), None);
        assert_eq!(parse_cap_eff("CapEff:\tzz\n"), None);
        // This process has some mask (root or not).
        assert!(effective().is_some());
    }

    #[test]
    fn names_exactly_the_missing_capability() {
        let all = Capability::NEEDED;
        for lacking in all {
            let have: Vec<Capability> = all.iter().copied().filter(|c| *c != lacking).collect();
            assert_eq!(missing_from(mask(&have), &all), vec![lacking]);
            assert_eq!(missing_at_start(mask(&have)), vec![lacking]);
            let text = advice_for(Some(mask(&have)), &all, Otherwise::Seccomp);
            assert!(text.contains(lacking.name()), "{text}");
            for other in &have {
                assert!(!text.contains(other.name()), "{text} names {other}");
            }
        }
        let text = advice_for(
            Some(0),
            &[Capability::SysPtrace, Capability::DacReadSearch],
            Otherwise::Ptrace,
        );
        assert!(
            text.contains("CAP_SYS_PTRACE (to read other processes' memory maps and attach probes to them), CAP_DAC_READ_SEARCH"),
            "{text}"
        );
    }

    #[test]
    fn broader_capabilities_stand_in() {
        let admin = mask(&[Capability::SysAdmin]);
        assert!(missing_from(admin, &[Capability::Bpf, Capability::Perfmon]).is_empty());
        let over = 1 << DAC_OVERRIDE | mask(&[Capability::SysAdmin]);
        assert_eq!(
            missing_from(over, &Capability::NEEDED),
            vec![Capability::SysPtrace]
        );
    }

    #[test]
    fn the_older_kernels_set_is_not_warned_about_at_start() {
        let older = mask(&[
            Capability::Bpf,
            Capability::Perfmon,
            Capability::SysPtrace,
            Capability::DacReadSearch,
        ]);
        assert!(missing_at_start(older).is_empty());
        // But a refusal to attach names CAP_SYS_ADMIN.
        let text = advice_for(Some(older), &[Capability::SysAdmin], Otherwise::Seccomp);
        assert!(
            text.starts_with("missing capability CAP_SYS_ADMIN"),
            "{text}"
        );
        // Without either, CAP_SYS_ADMIN is what is missing.
        let none = mask(&[Capability::SysPtrace, Capability::DacReadSearch]);
        assert_eq!(missing_at_start(none), vec![Capability::SysAdmin]);
    }

    #[test]
    fn having_them_all_says_what_else_refuses() {
        let text = advice_for(Some(u64::MAX), &Capability::NEEDED, Otherwise::Seccomp);
        assert!(text.contains("seccomp"), "{text}");
        assert!(!text.contains("missing"), "{text}");
        let text = advice_for(Some(u64::MAX), &[Capability::SysPtrace], Otherwise::Ptrace);
        assert!(text.contains("security module"), "{text}");
        assert!(!text.contains("seccomp"), "{text}");
        let unknown = advice_for(None, &[Capability::SysPtrace], Otherwise::Ptrace);
        assert!(unknown.contains("CAP_SYS_PTRACE"), "{unknown}");
    }
}
