//! Finds the TLS library a process uses, from its memory maps.
//!
//! Paths in `/proc/PID/maps` are as the process sees them; they are opened through
//! `/proc/PID/root` so a process in another mount namespace (a container) resolves to its own
//! copy of the file. A mapped file is a TLS home when it exports OpenSSL's `SSL_write` and
//! `SSL_read` in its dynamic symbol table: `libssl.so.*`, but also an executable that links
//! OpenSSL or BoringSSL statically and exports the symbols (Node.js).

use std::{
    collections::{BTreeMap, HashMap},
    fs::File,
    io,
    os::unix::fs::MetadataExt as _,
    path::{Path, PathBuf},
};

use object::{Object as _, ObjectSection as _, ObjectSymbol as _};

/// Symbols that make a mapped file an OpenSSL-compatible TLS library.
const REQUIRED_SYMBOLS: [&str; 2] = ["SSL_write", "SSL_read"];

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
    /// What kind of file exports the symbols.
    pub flavour: Flavour,
    /// File offsets of the exported functions probes attach to (those present).
    pub symbols: HashMap<&'static str, u64>,
}

/// Where the TLS functions live.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Flavour {
    /// A shared `libssl`.
    SharedLibrary,
    /// The program's executable exports them (OpenSSL or BoringSSL linked in statically).
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
    #[error(
        "permission denied reading {path} of pid {pid}: the agent needs root (CAP_SYS_PTRACE to read other processes' memory maps, CAP_BPF and CAP_PERFMON to load and attach eBPF)"
    )]
    PermissionDenied {
        /// The pid.
        pid: u32,
        /// The file that could not be read.
        path: PathBuf,
    },
    /// Nothing mapped by the process exports the OpenSSL functions.
    #[error(
        "no TLS library found in pid {pid} ({comm}): searched {searched} mapped files ({names}) for OpenSSL/BoringSSL's exported SSL_write and SSL_read; the program may link its TLS library statically without exporting symbols, or use a TLS stack that is not supported yet (Go crypto/tls, rustls, GnuTLS, NSS)"
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

/// One file-backed, executable mapping line of `/proc/PID/maps`.
#[derive(Debug, PartialEq, Eq)]
struct Mapping {
    inode: u64,
    path: PathBuf,
}

/// Parses the executable, file-backed mappings of a maps file.
fn parse_maps(maps: &str) -> Vec<Mapping> {
    let mut out = Vec::new();
    for line in maps.lines() {
        // address perms offset dev inode path
        let mut fields = line.splitn(6, ' ');
        let (Some(_addr), Some(perms), Some(_off), Some(_dev), Some(inode)) = (
            fields.next(),
            fields.next(),
            fields.next(),
            fields.next(),
            fields.next(),
        ) else {
            continue;
        };
        let path = fields.next().unwrap_or("").trim_start();
        if !perms.contains('x') || !path.starts_with('/') || path.ends_with(" (deleted)") {
            continue;
        }
        let Ok(inode) = inode.parse::<u64>() else {
            continue;
        };
        if inode == 0 {
            continue;
        }
        out.push(Mapping {
            inode,
            path: PathBuf::from(path),
        });
    }
    out
}

fn proc_err(pid: u32, path: &Path, e: io::Error) -> DiscoveryError {
    match e.kind() {
        io::ErrorKind::NotFound => DiscoveryError::NoSuchProcess { pid },
        io::ErrorKind::PermissionDenied => DiscoveryError::PermissionDenied {
            pid,
            path: path.to_path_buf(),
        },
        _ => DiscoveryError::Io {
            pid,
            path: path.to_path_buf(),
            source: e,
        },
    }
}

/// The process name (`/proc/PID/comm`), or an empty string.
#[must_use]
pub fn process_name(pid: u32) -> String {
    std::fs::read_to_string(format!("/proc/{pid}/comm"))
        .map(|s| s.trim_end().to_owned())
        .unwrap_or_default()
}

/// Whether a process exists (`/proc/PID` is there).
#[must_use]
pub fn process_exists(pid: u32) -> bool {
    Path::new(&format!("/proc/{pid}")).exists()
}

/// The file offsets of the `wanted` functions `path` defines (dynamic or static symbol table),
/// or `None` when it does not define every one of [`REQUIRED_SYMBOLS`].
///
/// Uprobes are placed at file offsets: `offset = address - section address + section offset`.
fn tls_symbol_offsets(
    path: &Path,
    wanted: &[&'static str],
) -> io::Result<Option<HashMap<&'static str, u64>>> {
    let file = File::open(path)?;
    // SAFETY: the map is read-only and only parsed; a file truncated underneath us could fault,
    // which is the documented risk of reading a mapped file and acceptable for library files.
    let map = unsafe { memmap2::Mmap::map(&file)? };
    let Ok(obj) = object::File::parse(&*map) else {
        return Ok(None);
    };
    let mut found = HashMap::new();
    for sym in obj.dynamic_symbols().chain(obj.symbols()) {
        if sym.is_undefined() || sym.address() == 0 {
            continue;
        }
        let Ok(name) = sym.name() else { continue };
        let Some(want) = wanted.iter().find(|w| **w == name) else {
            continue;
        };
        if found.contains_key(want) {
            continue;
        }
        let Some(section) = sym
            .section_index()
            .and_then(|i| obj.section_by_index(i).ok())
        else {
            continue;
        };
        let Some((file_off, _)) = section.file_range() else {
            continue;
        };
        if let Some(off) = sym
            .address()
            .checked_sub(section.address())
            .and_then(|d| d.checked_add(file_off))
        {
            found.insert(*want, off);
        }
    }
    Ok(REQUIRED_SYMBOLS
        .iter()
        .all(|r| found.contains_key(r))
        .then_some(found))
}

/// Finds every TLS library mapped by `pid`.
///
/// # Errors
/// [`DiscoveryError::NoTlsLibrary`] when none is mapped, and the other variants when the process
/// is gone or cannot be read.
pub fn find_tls_libraries(
    pid: u32,
    wanted: &[&'static str],
) -> Result<Vec<TlsLibrary>, DiscoveryError> {
    find_tls_libraries_cached(pid, wanted, &mut SymbolCache::default())
}

/// What is known of files already examined, by `(device, inode)`: their probe offsets when they
/// are a TLS library, `None` when they are not. Examining a process whose files are all known
/// costs one read of its maps.
pub type SymbolCache = HashMap<(u64, u64), Option<HashMap<&'static str, u64>>>;

/// [`find_tls_libraries`], remembering in `cache` what each file turned out to be.
///
/// # Errors
/// As [`find_tls_libraries`].
pub fn find_tls_libraries_cached(
    pid: u32,
    wanted: &[&'static str],
    cache: &mut SymbolCache,
) -> Result<Vec<TlsLibrary>, DiscoveryError> {
    let maps_path = PathBuf::from(format!("/proc/{pid}/maps"));
    let maps = std::fs::read_to_string(&maps_path).map_err(|e| proc_err(pid, &maps_path, e))?;
    let exe = std::fs::read_link(format!("/proc/{pid}/exe")).ok();
    let root = PathBuf::from(format!("/proc/{pid}/root"));

    // One entry per distinct file, in the order first seen.
    let mut files: BTreeMap<(u64, PathBuf), ()> = BTreeMap::new();
    let mut order = Vec::new();
    for m in parse_maps(&maps) {
        let key = (m.inode, m.path.clone());
        if files.insert(key, ()).is_none() {
            order.push(m);
        }
    }

    let mut found = Vec::new();
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
        let offsets = match cache.get(&key) {
            Some(known) => Ok(known.clone()),
            None => tls_symbol_offsets(&host_path, wanted).inspect(|r| {
                cache.insert(key, r.clone());
            }),
        };
        match offsets {
            Ok(Some(symbols)) => {
                let flavour = if exe.as_deref() == Some(m.path.as_path()) {
                    Flavour::Executable
                } else {
                    Flavour::SharedLibrary
                };
                found.push(TlsLibrary {
                    path: m.path.clone(),
                    host_path,
                    dev: meta.dev(),
                    inode: meta.ino(),
                    flavour,
                    symbols,
                });
            }
            Ok(None) => {}
            Err(e) => {
                tracing::debug!(pid, path = %host_path.display(), error = %e, "could not read symbols");
            }
        }
    }
    if found.is_empty() {
        let mut shown: Vec<String> = names.iter().take(12).cloned().collect();
        if names.len() > shown.len() {
            shown.push(format!("and {} more", names.len() - shown.len()));
        }
        return Err(DiscoveryError::NoTlsLibrary {
            pid,
            comm: process_name(pid),
            searched: names.len(),
            names: shown.join(", "),
        });
    }
    Ok(found)
}

/// Directories where the host's shared TLS libraries conventionally live.
const HOST_LIBRARY_DIRS: [&str; 7] = [
    "/lib",
    "/lib64",
    "/usr/lib",
    "/usr/lib64",
    "/usr/local/lib",
    "/lib/x86_64-linux-gnu",
    "/usr/lib/x86_64-linux-gnu",
];

/// The host's own `libssl` files that export the TLS functions, whether or not a process maps
/// them yet: attached up front with `--all`, a process started later is traced from its first
/// call.
#[must_use]
pub fn host_tls_libraries(wanted: &[&'static str], cache: &mut SymbolCache) -> Vec<TlsLibrary> {
    let mut out: Vec<TlsLibrary> = Vec::new();
    for dir in HOST_LIBRARY_DIRS {
        let Ok(entries) = std::fs::read_dir(dir) else {
            continue;
        };
        for entry in entries.filter_map(Result::ok) {
            let name = entry.file_name();
            if !name.to_string_lossy().starts_with("libssl.so") {
                continue;
            }
            let path = entry.path();
            let Ok(meta) = std::fs::metadata(&path) else {
                continue;
            };
            let key = (meta.dev(), meta.ino());
            if out.iter().any(|l| (l.dev, l.inode) == key) {
                continue;
            }
            let offsets = match cache.get(&key) {
                Some(known) => known.clone(),
                None => {
                    let found = tls_symbol_offsets(&path, wanted).ok().flatten();
                    cache.insert(key, found.clone());
                    found
                }
            };
            if let Some(symbols) = offsets {
                out.push(TlsLibrary {
                    path: path.clone(),
                    host_path: path,
                    dev: key.0,
                    inode: key.1,
                    flavour: Flavour::SharedLibrary,
                    symbols,
                });
            }
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parse_maps_keeps_only_executable_file_mappings() {
        let maps = "\
55d0c0a00000-55d0c0a28000 r--p 00000000 08:01 1311 /usr/bin/curl
55d0c0a28000-55d0c0a50000 r-xp 00028000 08:01 1311 /usr/bin/curl
7f00a0000000-7f00a0021000 rw-p 00000000 00:00 0 
7f00a1000000-7f00a1060000 r-xp 00020000 08:01 2222 /usr/lib/x86_64-linux-gnu/libssl.so.3
7f00a2000000-7f00a2001000 r-xp 00000000 08:01 3333 /tmp/gone.so (deleted)
7ffd00000000-7ffd00021000 r-xp 00000000 00:00 0                          [vdso]
";
        let got = parse_maps(maps);
        assert_eq!(
            got,
            vec![
                Mapping {
                    inode: 1311,
                    path: "/usr/bin/curl".into()
                },
                Mapping {
                    inode: 2222,
                    path: "/usr/lib/x86_64-linux-gnu/libssl.so.3".into()
                },
            ]
        );
    }

    #[test]
    fn a_missing_process_is_reported_as_such() {
        // pid_max is at most 2^22, so this pid cannot exist.
        let err = find_tls_libraries(4_194_305, &REQUIRED_SYMBOLS).unwrap_err();
        assert!(
            matches!(err, DiscoveryError::NoSuchProcess { pid: 4_194_305 }),
            "{err}"
        );
    }

    #[test]
    fn the_agents_own_process_without_libssl_is_reported_with_what_was_searched() {
        // The test binary links no OpenSSL.
        let err = find_tls_libraries(std::process::id(), &REQUIRED_SYMBOLS).unwrap_err();
        let msg = err.to_string();
        assert!(matches!(err, DiscoveryError::NoTlsLibrary { .. }), "{msg}");
        assert!(msg.contains("statically"), "{msg}");
    }
}
