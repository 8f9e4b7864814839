//! Finds the TLS stacks a process uses, from its memory maps.
//!
//! Paths in `/proc/PID/maps` are as the process sees them; they are opened through
//! `/proc/PID/root` so a process in another mount namespace (a container) resolves to its own
//! copy of the file. Each mapped file is shown to every [`Provider`] in turn; a file where one
//! finds its stack is a TLS home, with the points its probes attach to. What each file turned
//! out to be is remembered by device and inode.

use std::{
    collections::{BTreeMap, HashMap},
    fs::File,
    io,
    os::unix::fs::MetadataExt as _,
    path::{Path, PathBuf},
};

use super::providers::{AttachPoint, Examined, PROVIDERS, Provider};
use crate::{
    privileges::{self, Capability, Otherwise},
    procfs,
};

/// Files that are never a TLS library; skipping them saves reading their symbol tables.
const NEVER_TLS: [&str; 8] = [
    "libc.so",
    "libm.so",
    "ld-linux",
    "libpthread",
    "libdl.so",
    "libz.so",
    "libcrypto.so",
    "libstdc++",
];

/// A TLS library mapped by a process.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TlsLibrary {
    /// The path as the process sees it (from its maps).
    pub path: PathBuf,
    /// The same file, reachable from the agent's mount namespace (`/proc/PID/root/...`).
    pub host_path: PathBuf,
    /// Device and inode: one file mapped by many processes is attached once per process.
    pub dev: u64,
    /// Inode number.
    pub inode: u64,
    /// What kind of file holds the stack.
    pub flavour: Flavour,
    /// The stack.
    pub provider: &'static Provider,
    /// Where its probes go.
    pub points: Vec<AttachPoint>,
}

/// Where the TLS functions live.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Flavour {
    /// A shared `libssl`.
    SharedLibrary,
    /// The program's executable (the stack linked in statically).
    Executable,
}

/// Why discovery failed for a process.
#[derive(Debug, thiserror::Error)]
pub enum DiscoveryError {
    /// There is no process with this pid.
    #[error("no process with pid {pid}")]
    NoSuchProcess {
        /// The pid asked for.
        pid: u32,
    },
    /// The agent may not read the process's maps or files.
    #[error("permission denied reading {path} of pid {pid}: {advice}")]
    PermissionDenied {
        /// The pid.
        pid: u32,
        /// The file that could not be read.
        path: PathBuf,
        /// Which capability is missing, or what else refused it.
        advice: String,
    },
    /// Nothing mapped by the process is a TLS stack the agent knows.
    #[error(
        "no TLS library found in pid {pid} ({comm}): searched {searched} mapped files ({names}) for OpenSSL/BoringSSL (exported, or linked in with a symbol table or a known build), GnuTLS, NSS, Go's crypto/tls and rustls (in binaries with a symbol table); the program may use a TLS stack that is not supported yet"
    )]
    NoTlsLibrary {
        /// The pid.
        pid: u32,
        /// The process name.
        comm: String,
        /// How many distinct files were looked at.
        searched: usize,
        /// Their names (file names only, comma separated, shortened).
        names: String,
    },
    /// The process uses a TLS stack the agent knows, in a form it cannot trace (a Go program
    /// built by Go before 1.17, for another architecture, or by gccgo), and no other.
    #[error("pid {pid} ({comm}) cannot be watched: {path} uses {stack}, but {reason}")]
    Unsupported {
        /// The pid.
        pid: u32,
        /// The process name.
        comm: String,
        /// The file.
        path: PathBuf,
        /// The stack, e.g. `Java (JSSE)`.
        stack: &'static str,
        /// What was found, and why it cannot be traced.
        reason: String,
        /// Device and inode of the process's executable, when known: the same program in many
        /// processes is reported once.
        exe: Option<(u64, u64)>,
    },
    /// Reading `/proc` failed otherwise.
    #[error("reading {path} of pid {pid}: {source}")]
    Io {
        /// The pid.
        pid: u32,
        /// The file.
        path: PathBuf,
        /// The cause.
        source: io::Error,
    },
}

fn proc_err(pid: u32, path: &Path, e: io::Error) -> DiscoveryError {
    match e.kind() {
        io::ErrorKind::NotFound => DiscoveryError::NoSuchProcess { pid },
        io::ErrorKind::PermissionDenied => DiscoveryError::PermissionDenied {
            pid,
            path: path.to_path_buf(),
            // /proc/PID/* of another process needs CAP_SYS_PTRACE; its files, through
            // /proc/PID/root, CAP_DAC_READ_SEARCH when their modes keep root out.
            advice: privileges::advice(
                &[Capability::SysPtrace, Capability::DacReadSearch],
                Otherwise::Ptrace,
            ),
        },
        _ => DiscoveryError::Io {
            pid,
            path: path.to_path_buf(),
            source: e,
        },
    }
}

/// What a file turned out to be.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum FileKind {
    /// A TLS stack, with its attach points.
    Tls(&'static Provider, Vec<AttachPoint>),
    /// A part of a stack, attached where the stack is found too ([`Examined::Part`]).
    Part(&'static Provider, Vec<AttachPoint>),
    /// A stack the agent cannot trace, and why.
    Unsupported(&'static Provider, String),
    /// Nothing the agent traces.
    Plain,
}

/// Shows the file at `path` to every provider: the first that finds its stack (or a part of it)
/// wins; a stack found but not supported is kept only when no provider finds one.
fn examine_file(path: &Path) -> io::Result<FileKind> {
    let file = File::open(path)?;
    // SAFETY: the map is read-only and only parsed; a file truncated underneath us could fault,
    // which is the documented risk of reading a mapped file and acceptable for library files.
    let map = unsafe { memmap2::Mmap::map(&file)? };
    let Ok(obj) = object::File::parse(&*map) else {
        return Ok(FileKind::Plain);
    };
    let mut unsupported = None;
    for provider in PROVIDERS {
        match (provider.examine)(&obj) {
            Examined::Found(points) => {
                tracing::debug!(path = %path.display(), stack = provider.name, points = points.len(), "TLS stack found");
                return Ok(FileKind::Tls(provider, points));
            }
            Examined::Part(points) => return Ok(FileKind::Part(provider, points)),
            Examined::Unsupported(reason) => {
                // Once per file (the answer is cached): worth a line even with --all.
                tracing::info!(path = %path.display(), stack = provider.name, %reason, "TLS stack found but not supported");
                unsupported.get_or_insert(FileKind::Unsupported(provider, reason));
            }
            Examined::NotThis => {}
        }
    }
    Ok(unsupported.unwrap_or(FileKind::Plain))
}

/// [`examine_file`], remembered in `cache` by `key`.
fn examine_cached(path: &Path, key: (u64, u64), cache: &mut FileCache) -> io::Result<FileKind> {
    if let Some(known) = cache.get(&key) {
        return Ok(known.clone());
    }
    let found = examine_file(path)?;
    cache.insert(key, found.clone());
    Ok(found)
}

/// Finds every TLS library mapped by `pid`.
///
/// # Errors
/// [`DiscoveryError::Unsupported`] when the only stack found cannot be traced,
/// [`DiscoveryError::NoTlsLibrary`] when none is mapped, and the other variants when the process
/// is gone or cannot be read.
pub fn find_tls_libraries(pid: u32) -> Result<Vec<TlsLibrary>, DiscoveryError> {
    find_tls_libraries_cached(pid, &mut FileCache::default())
}

/// What is known of files already examined, by `(device, inode)`. Examining a process whose
/// files are all known costs one read of its maps.
pub type FileCache = HashMap<(u64, u64), FileKind>;

/// [`find_tls_libraries`], remembering in `cache` what each file turned out to be.
///
/// # Errors
/// As [`find_tls_libraries`].
pub fn find_tls_libraries_cached(
    pid: u32,
    cache: &mut FileCache,
) -> Result<Vec<TlsLibrary>, DiscoveryError> {
    let maps_path = procfs::maps_path(pid);
    let maps = std::fs::read_to_string(&maps_path).map_err(|e| proc_err(pid, &maps_path, e))?;
    let exe = procfs::exe(pid);
    let root = procfs::root(pid);

    // One entry per distinct file, in the order first seen.
    let mut files: BTreeMap<(u64, PathBuf), ()> = BTreeMap::new();
    let mut order = Vec::new();
    for m in procfs::parse_maps(&maps) {
        let key = (m.inode, m.path.clone());
        if files.insert(key, ()).is_none() {
            order.push(m);
        }
    }

    let mut found = Vec::new();
    let mut parts = Vec::new();
    let mut unsupported = None;
    let mut names = Vec::new();
    for m in &order {
        let name = m
            .path
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_default();
        names.push(name.clone());
        if NEVER_TLS.iter().any(|n| name.starts_with(n)) {
            continue;
        }
        let rel = m.path.strip_prefix("/").unwrap_or(&m.path);
        let host_path = root.join(rel);
        let meta = match std::fs::metadata(&host_path) {
            Ok(meta) => meta,
            Err(e) if e.kind() == io::ErrorKind::PermissionDenied => {
                return Err(proc_err(pid, &host_path, e));
            }
            Err(e) => {
                tracing::debug!(pid, path = %host_path.display(), error = %e, "mapped file not reachable");
                continue;
            }
        };
        let key = (meta.dev(), meta.ino());
        let library = |provider, points| TlsLibrary {
            path: m.path.clone(),
            host_path: host_path.clone(),
            dev: meta.dev(),
            inode: meta.ino(),
            flavour: if exe.as_deref() == Some(m.path.as_path()) {
                Flavour::Executable
            } else {
                Flavour::SharedLibrary
            },
            provider,
            points,
        };
        match examine_cached(&host_path, key, cache) {
            Ok(FileKind::Tls(provider, points)) => found.push(library(provider, points)),
            Ok(FileKind::Part(provider, points)) => parts.push(library(provider, points)),
            Ok(FileKind::Unsupported(provider, reason)) => {
                unsupported.get_or_insert((provider, reason, m.path.clone()));
            }
            Ok(FileKind::Plain) => {}
            Err(e) => {
                tracing::debug!(pid, path = %host_path.display(), error = %e, "could not read symbols");
            }
        }
    }
    // A part counts only beside its stack (NSPR beside NSS's libssl3).
    let stacks: Vec<&'static str> = found.iter().map(|l| l.provider.name).collect();
    found.extend(
        parts
            .into_iter()
            .filter(|p| stacks.contains(&p.provider.name)),
    );
    if found.is_empty() {
        if let Some((provider, reason, path)) = unsupported {
            return Err(DiscoveryError::Unsupported {
                pid,
                comm: procfs::process_name(pid),
                path,
                stack: provider.name,
                reason,
                exe: procfs::exe_id(pid),
            });
        }
        let mut shown: Vec<String> = names.iter().take(12).cloned().collect();
        if names.len() > shown.len() {
            shown.push(format!("and {} more", names.len() - shown.len()));
        }
        return Err(DiscoveryError::NoTlsLibrary {
            pid,
            comm: procfs::process_name(pid),
            searched: names.len(),
            names: shown.join(", "),
        });
    }
    Ok(found)
}

/// Directories where shared TLS libraries conventionally live.
const LIBRARY_DIRS: [&str; 8] = [
    "/lib",
    "/lib64",
    "/usr/lib",
    "/usr/lib64",
    "/usr/local/lib",
    "/lib/x86_64-linux-gnu",
    "/usr/lib/x86_64-linux-gnu",
    "/usr/lib/aarch64-linux-gnu",
];

/// The shared TLS libraries (each provider's `host_libraries`) in the conventional library
/// directories of the file system at `root` (`/` for the host's, `/proc/PID/root` for a
/// process's), whether or not a process maps them yet: with probes on them, a process that
/// loads one later is traced from its first call. A part of a stack is attached when the stack
/// itself is there too.
#[must_use]
pub fn tls_libraries_under(root: &Path, cache: &mut FileCache) -> Vec<TlsLibrary> {
    let mut out: Vec<TlsLibrary> = Vec::new();
    let mut parts: Vec<TlsLibrary> = Vec::new();
    for dir in LIBRARY_DIRS {
        let seen_dir = Path::new(dir);
        let Ok(entries) =
            std::fs::read_dir(root.join(seen_dir.strip_prefix("/").unwrap_or(seen_dir)))
        else {
            continue;
        };
        for entry in entries.filter_map(Result::ok) {
            let name = entry.file_name();
            let name_str = name.to_string_lossy();
            if !PROVIDERS
                .iter()
                .any(|p| p.host_libraries.iter().any(|l| name_str.starts_with(l)))
            {
                continue;
            }
            let host_path = entry.path();
            let Ok(meta) = std::fs::metadata(&host_path) else {
                continue;
            };
            let key = (meta.dev(), meta.ino());
            if out.iter().chain(&parts).any(|l| (l.dev, l.inode) == key) {
                continue;
            }
            let library = |provider, points| TlsLibrary {
                path: seen_dir.join(&name),
                host_path: host_path.clone(),
                dev: key.0,
                inode: key.1,
                flavour: Flavour::SharedLibrary,
                provider,
                points,
            };
            match examine_cached(&host_path, key, cache) {
                Ok(FileKind::Tls(provider, points)) => out.push(library(provider, points)),
                Ok(FileKind::Part(provider, points)) => parts.push(library(provider, points)),
                _ => {}
            }
        }
    }
    let stacks: Vec<&'static str> = out.iter().map(|l| l.provider.name).collect();
    out.extend(
        parts
            .into_iter()
            .filter(|p| stacks.contains(&p.provider.name)),
    );
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_missing_process_is_reported_as_such() {
        // pid_max is at most 2^22, so this pid cannot exist.
        let err = find_tls_libraries(4_194_305).unwrap_err();
        assert!(
            matches!(err, DiscoveryError::NoSuchProcess { pid: 4_194_305 }),
            "{err}"
        );
    }

    #[test]
    fn a_process_without_tls_is_reported_with_what_was_searched() {
        // `sleep` maps libc and nothing of TLS (the test binary itself links rustls).
        let mut child = std::process::Command::new("sleep")
            .arg("30")
            .spawn()
            .expect("sleep");
        let pid = child.id();
        // Until the loader has mapped libc, only the executable would be searched.
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
        while !std::fs::read_to_string(format!("/proc/{pid}/maps"))
            .is_ok_and(|m| m.contains("libc.so.6"))
            && std::time::Instant::now() < deadline
        {
            std::thread::sleep(std::time::Duration::from_millis(10));
        }
        let result = find_tls_libraries(pid);
        let _ = child.kill();
        let _ = child.wait();
        let err = result.unwrap_err();
        let msg = err.to_string();
        assert!(matches!(err, DiscoveryError::NoTlsLibrary { .. }), "{msg}");
        assert!(
            msg.contains("GnuTLS") && msg.contains("rustls") && msg.contains("libc.so.6"),
            "{msg}"
        );
    }
}
