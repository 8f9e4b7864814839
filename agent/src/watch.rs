//! Which processes are watched, kept current once a second: watched processes that exit are
//! detached and forgotten; with `--follow` their children are found and attached; with `--all`
//! every new process is examined and each new TLS library file is attached once for all
//! processes (so a process that maps an already attached file is traced from its first call).

use std::collections::{BTreeSet, HashSet};

use crate::{
    discovery::{self, DiscoveryError, SymbolCache},
    probes::{self, ProbeError, Probes},
};

/// What to watch.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Mode {
    /// The given pids, and with `follow` their descendants.
    Pids {
        /// Also watch descendants.
        follow: bool,
    },
    /// Every process that maps a TLS library.
    All,
}

/// The set of watched processes.
pub struct Watcher {
    mode: Mode,
    /// Processes attached (pid mode) or known to use an attached library (all mode).
    watched: BTreeSet<u32>,
    /// With `--follow`: every process of the watched families, TLS or not (a shell without TLS
    /// can start a child with it).
    family: BTreeSet<u32>,
    /// All mode: pids already examined.
    examined: HashSet<u32>,
    symbols: Vec<&'static str>,
    cache: SymbolCache,
}

/// All pids in `/proc`.
fn all_pids() -> Vec<u32> {
    std::fs::read_dir("/proc")
        .map(|rd| {
            rd.filter_map(Result::ok)
                .filter_map(|e| e.file_name().to_str().and_then(|n| n.parse().ok()))
                .collect()
        })
        .unwrap_or_default()
}

/// The parent pid from `/proc/PID/stat` (the field after the parenthesised name).
fn parent_of(pid: u32) -> Option<u32> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    let after = &stat[stat.rfind(')')? + 1..];
    after.split_whitespace().nth(1)?.parse().ok()
}

/// Whether a pid is a thread group leader (a process), not a thread listed by number.
fn is_process(pid: u32) -> bool {
    std::fs::read_to_string(format!("/proc/{pid}/status")).is_ok_and(|s| {
        s.lines()
            .find_map(|l| l.strip_prefix("Tgid:"))
            .and_then(|v| v.trim().parse::<u32>().ok())
            == Some(pid)
    })
}

impl Watcher {
    /// A watcher over `roots` (the pids asked for), of which `attached` are already attached by
    /// the caller.
    #[must_use]
    pub fn new(mode: Mode, roots: &[u32], attached: &[u32]) -> Self {
        let watched: BTreeSet<u32> = attached.iter().copied().collect();
        let mut family: BTreeSet<u32> = roots.iter().copied().collect();
        family.extend(&watched);
        Self {
            mode,
            family,
            watched,
            examined: HashSet::new(),
            symbols: probes::symbols(),
            cache: SymbolCache::default(),
        }
    }

    /// Whether nothing is left to watch (pid mode only; all mode always watches).
    #[must_use]
    pub fn is_done(&self) -> bool {
        self.mode != Mode::All && self.family.is_empty()
    }

    /// Processes currently watched.
    #[must_use]
    pub fn watched(&self) -> Vec<u32> {
        self.watched.iter().copied().collect()
    }

    /// Examines `pid` and attaches its TLS libraries: for that process alone, or with `all` for
    /// every process. Returns whether it uses TLS.
    fn attach(&mut self, probes: &mut Probes, pid: u32, all: bool) -> Result<bool, ProbeError> {
        let libs = match discovery::find_tls_libraries_cached(pid, &self.symbols, &mut self.cache) {
            Ok(libs) => libs,
            Err(DiscoveryError::NoTlsLibrary { .. } | DiscoveryError::NoSuchProcess { .. }) => {
                return Ok(false);
            }
            Err(e) => {
                tracing::debug!(pid, error = %e, "process not examined");
                return Ok(false);
            }
        };
        for lib in &libs {
            let n = probes.attach(if all { 0 } else { pid }, lib)?;
            if n > 0 {
                tracing::info!(
                    pid,
                    comm = %discovery::process_name(pid),
                    library = %lib.path.display(),
                    flavour = ?lib.flavour,
                    probes = n,
                    scope = if all { "all processes" } else { "this process" },
                    "attached"
                );
            }
        }
        Ok(true)
    }

    /// Examines every process (all mode) at start.
    ///
    /// # Errors
    /// When attaching a library fails.
    pub fn start_all(&mut self, probes: &mut Probes) -> Result<(), ProbeError> {
        for lib in discovery::host_tls_libraries(&self.symbols, &mut self.cache) {
            let n = probes.attach(0, &lib)?;
            if n > 0 {
                tracing::info!(library = %lib.path.display(), probes = n, scope = "all processes", "attached");
            }
        }
        self.tick(probes)
    }

    /// Brings the watched set up to date.
    ///
    /// # Errors
    /// When attaching a library fails for a reason other than the process being gone.
    pub fn tick(&mut self, probes: &mut Probes) -> Result<(), ProbeError> {
        let me = std::process::id();
        match self.mode {
            Mode::All => {
                let pids = all_pids();
                let live: HashSet<u32> = pids.iter().copied().collect();
                self.examined.retain(|p| live.contains(p));
                self.watched.retain(|p| live.contains(p));
                for pid in pids {
                    if pid == me || !self.examined.insert(pid) || !is_process(pid) {
                        continue;
                    }
                    if self.attach(probes, pid, true)? {
                        self.watched.insert(pid);
                    }
                }
            }
            Mode::Pids { follow } => {
                let gone: Vec<u32> = self
                    .family
                    .iter()
                    .copied()
                    .filter(|p| !discovery::process_exists(*p))
                    .collect();
                for pid in gone {
                    self.family.remove(&pid);
                    if self.watched.remove(&pid) {
                        tracing::info!(pid, "watched process exited");
                        probes.detach_pid(pid);
                    }
                }
                if follow {
                    self.follow_children(probes, me)?;
                }
            }
        }
        Ok(())
    }

    fn follow_children(&mut self, probes: &mut Probes, me: u32) -> Result<(), ProbeError> {
        // Repeat until no new descendant is found, so grandchildren started together count too.
        loop {
            let mut new = Vec::new();
            for pid in all_pids() {
                if pid == me || self.family.contains(&pid) || !is_process(pid) {
                    continue;
                }
                if parent_of(pid).is_some_and(|pp| self.family.contains(&pp)) {
                    new.push(pid);
                }
            }
            if new.is_empty() {
                return Ok(());
            }
            for pid in new {
                self.family.insert(pid);
                if self.attach(probes, pid, false)? {
                    self.watched.insert(pid);
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parent_of_reads_the_field_after_the_name() {
        let me = std::process::id();
        let parent = parent_of(me).expect("own stat");
        // SAFETY: no preconditions.
        let expected = unsafe { libc::getppid() };
        assert_eq!(i64::from(parent), i64::from(expected));
        assert!(is_process(me));
    }
}
