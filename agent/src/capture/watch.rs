//! Which processes are watched, kept current once a second: watched processes that exit are
//! detached and forgotten; with `--follow` their children are found and attached; with `--all`
//! every new process is examined and each new TLS library file is attached once for all
//! processes (so a process that maps an already attached file is traced from its first call).
//!
//! Between scans, the kernel reports processes whose code changes (`execve`, or a file mapped
//! executable: a library being loaded). Such a process is examined at once and a few more
//! times within half a second, since the dynamic loader maps an executable's libraries only
//! after `execve` returns. Watched processes without TLS yet (a `--pid` that has not loaded its
//! TLS library, `--follow`'s family) are also examined again at every scan, and are given
//! probes ahead on the TLS libraries their root file system holds, so a library loaded later
//! (`import ssl`, `dlopen`) is traced from its first call.
//!
//! A process whose TLS stack is recognised but not supported (Java, a Go program built by a
//! toolchain the agent cannot read, a stripped static OpenSSL of an unknown build, ...) is logged
//! once per program (its executable's device and inode) and counted (`unsupported_programs`).

use std::{
    collections::{BTreeSet, HashMap, HashSet},
    sync::{Arc, atomic::Ordering},
    time::{Duration, Instant},
};

use super::{
    discovery::{self, DiscoveryError, FileCache},
    probes::{ProbeError, Probes},
};
use crate::procfs::{self, all_pids, is_process, parent_of};

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

/// When a process reported by the kernel is examined, counted from the report.
const EXAMINE_AFTER: [Duration; 5] = [
    Duration::ZERO,
    Duration::from_millis(25),
    Duration::from_millis(100),
    Duration::from_millis(250),
    Duration::from_millis(500),
];

/// Reported processes waiting to be examined are forgotten past this many (the scan remains).
const MAX_PENDING: usize = 4_096;

crate::stats::counters! {
    /// Counters of the process watcher.
    pub struct WatchStats {
        /// Programs (distinct executables) whose TLS stack was recognised but is not supported.
        unsupported_programs,
    }
}

/// How a process came to be examined (logged with each attach).
#[derive(Clone, Copy, Debug)]
enum Found {
    /// The once-a-second scan.
    Scan,
    /// The kernel reported an `execve` or a library being loaded.
    Event,
    /// Before the process mapped the library: probes on the library files of its root.
    Ahead,
}

impl Found {
    fn as_str(self) -> &'static str {
        match self {
            Found::Scan => "scan",
            Found::Event => "exec-or-load",
            Found::Ahead => "ahead",
        }
    }
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
    cache: FileCache,
    /// Processes the kernel reported: when each was reported, and how many examinations it has
    /// had since.
    pending: HashMap<u32, (Instant, usize)>,
    /// Whether a refusal to read a process has been warned about.
    warned_refusal: bool,
    /// TLS processes found since [`Watcher::take_found`] was last called.
    found: Vec<u32>,
    /// Executables (device, inode) already reported as using an unsupported stack.
    unsupported: HashSet<(u64, u64)>,
    stats: Arc<WatchStats>,
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
            cache: FileCache::default(),
            pending: HashMap::new(),
            warned_refusal: false,
            found: Vec::new(),
            unsupported: HashSet::new(),
            stats: Arc::new(WatchStats::default()),
        }
    }

    /// The watcher's counters.
    #[must_use]
    pub fn stats(&self) -> Arc<WatchStats> {
        Arc::clone(&self.stats)
    }

    /// Reports a process whose TLS stack is not supported: logged and counted once per program.
    pub fn unsupported(&mut self, err: &DiscoveryError) {
        let DiscoveryError::Unsupported {
            pid,
            comm,
            stack,
            reason,
            path,
            exe,
        } = err
        else {
            return;
        };
        let key = exe.unwrap_or((u64::MAX, u64::from(*pid)));
        if !self.unsupported.insert(key) {
            return;
        }
        self.stats
            .unsupported_programs
            .fetch_add(1, Ordering::Relaxed);
        tracing::warn!(pid, %comm, stack, path = %path.display(), "TLS stack not supported, its calls are not seen: {reason}");
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
    fn attach(
        &mut self,
        probes: &mut Probes,
        pid: u32,
        all: bool,
        found_by: Found,
    ) -> Result<bool, ProbeError> {
        let libs = match discovery::find_tls_libraries_cached(pid, &mut self.cache) {
            Ok(libs) => libs,
            Err(DiscoveryError::NoTlsLibrary { .. } | DiscoveryError::NoSuchProcess { .. }) => {
                return Ok(false);
            }
            // The first refusal says why (a missing capability, a security module); the others
            // would only repeat it.
            Err(e @ DiscoveryError::PermissionDenied { .. }) if !self.warned_refusal => {
                self.warned_refusal = true;
                tracing::warn!(pid, error = %e, "process not examined (later refusals are logged at debug level)");
                return Ok(false);
            }
            Err(e @ DiscoveryError::Unsupported { .. }) => {
                self.unsupported(&e);
                return Ok(false);
            }
            Err(e) => {
                tracing::debug!(pid, error = %e, "process not examined");
                return Ok(false);
            }
        };
        for lib in &libs {
            let n = match probes.attach(if all { 0 } else { pid }, lib) {
                Ok(n) => n,
                // Gone before its probes were in: nothing left to watch.
                Err(ProbeError::ProcessExited { .. } | ProbeError::FileGone { .. }) => {
                    return Ok(false);
                }
                Err(e) => return Err(e),
            };
            if n > 0 {
                tracing::info!(
                    pid,
                    comm = %procfs::process_name(pid),
                    stack = lib.provider.name,
                    library = %lib.path.display(),
                    flavour = ?lib.flavour,
                    probes = n,
                    scope = if all { "all processes" } else { "this process" },
                    found_by = found_by.as_str(),
                    "attached"
                );
            }
        }
        self.found.push(pid);
        Ok(true)
    }

    /// The TLS processes examined since the last call: the flows stage takes their names and
    /// cgroups now, while they run (a short-lived one may be gone when its data is read).
    pub fn take_found(&mut self) -> Vec<u32> {
        std::mem::take(&mut self.found)
    }

    /// `pid` was asked for but has no TLS library yet: its library loads and `execve`s are
    /// reported from now on, and probes go ahead onto the TLS libraries of its root file
    /// system, so a library it loads later is traced from its first call. Examined again on
    /// each report and at every scan; it counts as watched once it maps a TLS library.
    ///
    /// # Errors
    /// When the process cannot be added to the traced set.
    pub fn wait_for(&mut self, probes: &mut Probes, pid: u32) -> Result<(), ProbeError> {
        self.family.insert(pid);
        probes.watch_pid(pid)?;
        for lib in discovery::tls_libraries_under(&procfs::root(pid), &mut self.cache) {
            let n = probes.attach(pid, &lib)?;
            if n > 0 {
                tracing::info!(pid, stack = lib.provider.name, library = %lib.path.display(), probes = n, found_by = Found::Ahead.as_str(), "attached");
            }
        }
        Ok(())
    }

    /// Examines every process (all mode) at start.
    ///
    /// # Errors
    /// When attaching a library fails.
    pub fn start_all(&mut self, probes: &mut Probes) -> Result<(), ProbeError> {
        for lib in discovery::tls_libraries_under(std::path::Path::new("/"), &mut self.cache) {
            let n = match probes.attach(0, &lib) {
                Ok(n) => n,
                Err(e @ ProbeError::FileGone { .. }) => {
                    tracing::debug!(error = %e, "library not attached");
                    continue;
                }
                Err(e) => return Err(e),
            };
            if n > 0 {
                tracing::info!(library = %lib.path.display(), probes = n, scope = "all processes", "attached");
            }
        }
        self.tick(probes)
    }

    /// The kernel reported that `pid` has new code (a new image or a library being mapped):
    /// examine it soon, if it is of interest.
    pub fn code_changed(&mut self, pid: u32, now: Instant) {
        if pid == std::process::id() {
            return;
        }
        match self.mode {
            Mode::All => {
                // A new image may map libraries this process was not examined with.
                self.examined.remove(&pid);
            }
            Mode::Pids { follow: true } => {
                let ours = self.family.contains(&pid)
                    || parent_of(pid).is_some_and(|pp| self.family.contains(&pp));
                if !ours {
                    return;
                }
                self.family.insert(pid);
            }
            // A process asked for, loading a (first, or another) library.
            Mode::Pids { follow: false } => {
                if !self.family.contains(&pid) {
                    return;
                }
            }
        }
        if self.pending.len() >= MAX_PENDING && !self.pending.contains_key(&pid) {
            return;
        }
        self.pending.insert(pid, (now, 0));
    }

    /// Examines the reported processes whose next examination is due.
    ///
    /// # Errors
    /// When attaching a library fails for a reason other than the process being gone.
    pub fn examine_due(&mut self, probes: &mut Probes, now: Instant) -> Result<(), ProbeError> {
        if self.pending.is_empty() {
            return Ok(());
        }
        let due: Vec<u32> = self
            .pending
            .iter()
            .filter(|(_, (since, done))| {
                EXAMINE_AFTER
                    .get(*done)
                    .is_none_or(|after| now.duration_since(*since) >= *after)
            })
            .map(|(pid, _)| *pid)
            .collect();
        for pid in due {
            let Some((since, done)) = self.pending.get(&pid).copied() else {
                continue;
            };
            let all = self.mode == Mode::All;
            let uses_tls = self.attach(probes, pid, all, Found::Event)?;
            if uses_tls {
                self.watched.insert(pid);
                if all {
                    self.examined.insert(pid);
                }
            } else if !all && procfs::process_exists(pid) {
                // A family member without TLS yet: its library loads are reported from now on.
                probes.watch_pid(pid)?;
            }
            if uses_tls || done + 1 >= EXAMINE_AFTER.len() || !procfs::process_exists(pid) {
                self.pending.remove(&pid);
            } else {
                self.pending.insert(pid, (since, done + 1));
            }
        }
        Ok(())
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
                    if self.attach(probes, pid, true, Found::Scan)? {
                        self.watched.insert(pid);
                    }
                }
            }
            Mode::Pids { follow } => {
                let gone: Vec<u32> = self
                    .family
                    .iter()
                    .copied()
                    .filter(|p| !procfs::process_exists(*p))
                    .collect();
                for pid in gone {
                    self.family.remove(&pid);
                    if self.watched.remove(&pid) {
                        tracing::info!(pid, "watched process exited");
                    }
                    probes.detach_pid(pid);
                }
                // Processes without TLS yet may have loaded it since (`dlopen`, or an `execve`
                // that was missed).
                let bare: Vec<u32> = self.family.difference(&self.watched).copied().collect();
                for pid in bare {
                    if self.attach(probes, pid, false, Found::Scan)? {
                        self.watched.insert(pid);
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
                if self.attach(probes, pid, false, Found::Scan)? {
                    self.watched.insert(pid);
                } else {
                    // Its library loads are reported from now on.
                    probes.watch_pid(pid)?;
                }
            }
        }
    }
}
