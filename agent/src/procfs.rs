//! Everything the agent reads from `/proc`, in one place: processes (name, parent, whether they
//! exist, their memory maps), the socket behind a file descriptor (`/proc/PID/fd/N` →
//! `socket:[INODE]`) and its local and remote address from the process's own network namespace
//! (`/proc/PID/net/tcp` and `tcp6`), and the process's cgroup (`/proc/PID/cgroup`), with the
//! container id found in it.

use std::{
    fs,
    net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr},
    path::PathBuf,
};

/// The process name (`/proc/PID/comm`), or an empty string.
#[must_use]
pub fn process_name(pid: u32) -> String {
    fs::read_to_string(format!("/proc/{pid}/comm"))
        .map(|s| s.trim_end().to_owned())
        .unwrap_or_default()
}

/// Whether a process is alive: `/proc/PID` is there and the process is not a zombie (it has
/// exited; only its parent has not collected its status yet).
#[must_use]
pub fn process_exists(pid: u32) -> bool {
    match fs::read_to_string(format!("/proc/{pid}/stat")) {
        Ok(stat) => !matches!(process_state(&stat), Some('Z' | 'X')),
        Err(_) => false,
    }
}

/// The state letter of a `/proc/PID/stat` line (the field after the parenthesised name).
fn process_state(stat: &str) -> Option<char> {
    stat[stat.rfind(')')? + 1..]
        .split_whitespace()
        .next()?
        .chars()
        .next()
}

/// All pids in `/proc` (threads listed by number too: see [`is_process`]).
#[must_use]
pub fn all_pids() -> Vec<u32> {
    fs::read_dir("/proc")
        .map(|rd| {
            rd.filter_map(Result::ok)
                .filter_map(|e| e.file_name().to_str().and_then(|n| n.parse().ok()))
                .collect()
        })
        .unwrap_or_default()
}

/// The parent pid from `/proc/PID/stat` (the field after the parenthesised name).
#[must_use]
pub fn parent_of(pid: u32) -> Option<u32> {
    let stat = fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    let after = &stat[stat.rfind(')')? + 1..];
    after.split_whitespace().nth(1)?.parse().ok()
}

/// Whether a pid is a thread group leader (a process), not a thread listed by number.
#[must_use]
pub fn is_process(pid: u32) -> bool {
    fs::read_to_string(format!("/proc/{pid}/status")).is_ok_and(|s| {
        s.lines()
            .find_map(|l| l.strip_prefix("Tgid:"))
            .and_then(|v| v.trim().parse::<u32>().ok())
            == Some(pid)
    })
}

/// The path of `/proc/PID/maps`.
#[must_use]
pub fn maps_path(pid: u32) -> PathBuf {
    PathBuf::from(format!("/proc/{pid}/maps"))
}

/// The executable of `pid` as the process sees it (`/proc/PID/exe`).
#[must_use]
pub fn exe(pid: u32) -> Option<PathBuf> {
    fs::read_link(format!("/proc/{pid}/exe")).ok()
}

/// Device and inode of the executable of `pid` (through `/proc/PID/exe`, which reaches the file
/// in the process's own mount namespace).
#[must_use]
pub fn exe_id(pid: u32) -> Option<(u64, u64)> {
    use std::os::unix::fs::MetadataExt as _;
    fs::metadata(format!("/proc/{pid}/exe"))
        .ok()
        .map(|m| (m.dev(), m.ino()))
}

/// The root directory of `pid` (`/proc/PID/root`): paths the process sees, reachable from the
/// agent's mount namespace.
#[must_use]
pub fn root(pid: u32) -> PathBuf {
    PathBuf::from(format!("/proc/{pid}/root"))
}

/// One file-backed, executable mapping line of `/proc/PID/maps`.
#[derive(Debug, PartialEq, Eq)]
pub struct Mapping {
    /// The file's inode.
    pub inode: u64,
    /// The path as the process sees it.
    pub path: PathBuf,
}

/// Parses the executable, file-backed mappings of a maps file.
#[must_use]
pub fn parse_maps(maps: &str) -> Vec<Mapping> {
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

/// The two ends of a TCP socket, as the observed process sees them.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct SocketEnds {
    /// This process's end.
    pub local: SocketAddr,
    /// The peer.
    pub remote: SocketAddr,
}

/// Why a socket could not be resolved.
#[derive(Debug, thiserror::Error)]
pub enum SocketError {
    /// `/proc/PID/fd/N` or a `/proc/PID/net` table could not be read (the process or the fd is
    /// gone, or permissions).
    #[error("reading {path}: {source}")]
    Io {
        /// What was read.
        path: String,
        /// Why it failed.
        source: std::io::Error,
    },
    /// The fd is not a socket (`/proc/PID/fd/N` names something else).
    #[error("fd {fd} of pid {pid} is not a socket ({target})")]
    NotSocket {
        /// Process.
        pid: u32,
        /// Descriptor.
        fd: i32,
        /// What the descriptor is.
        target: String,
    },
    /// The socket is not in the TCP tables (closed already, or not TCP).
    #[error("socket inode {0} is not a TCP socket of the process's network namespace")]
    NotTcp(u64),
}

/// The inode of the socket behind `fd` in process `pid`.
///
/// # Errors
/// [`SocketError::Io`] when the link cannot be read, [`SocketError::NotSocket`] when it names
/// something other than a socket.
pub fn socket_inode(pid: u32, fd: i32) -> Result<u64, SocketError> {
    let path = format!("/proc/{pid}/fd/{fd}");
    let target = fs::read_link(&path).map_err(|source| SocketError::Io { path, source })?;
    let target = target.to_string_lossy();
    parse_socket_link(&target).ok_or_else(|| SocketError::NotSocket {
        pid,
        fd,
        target: target.into_owned(),
    })
}

/// The inode in a `socket:[INODE]` link target.
#[must_use]
pub fn parse_socket_link(target: &str) -> Option<u64> {
    target
        .strip_prefix("socket:[")?
        .strip_suffix(']')?
        .parse()
        .ok()
}

/// The ends of the TCP socket behind `fd` in process `pid`.
///
/// # Errors
/// A [`SocketError`] when the fd is not a TCP socket of the process (any more).
pub fn socket_ends(pid: u32, fd: i32) -> Result<SocketEnds, SocketError> {
    let inode = socket_inode(pid, fd)?;
    for table in ["tcp", "tcp6"] {
        let path = format!("/proc/{pid}/net/{table}");
        let text = match fs::read_to_string(&path) {
            Ok(t) => t,
            // A kernel without IPv6 has no tcp6 table.
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => continue,
            Err(source) => return Err(SocketError::Io { path, source }),
        };
        if let Some(ends) = find_inode(&text, inode) {
            return Ok(ends);
        }
    }
    Err(SocketError::NotTcp(inode))
}

/// Finds the socket with `inode` in the text of a `/proc/net/tcp` or `tcp6` table.
#[must_use]
pub fn find_inode(table: &str, inode: u64) -> Option<SocketEnds> {
    table.lines().skip(1).find_map(|line| {
        let fields: Vec<&str> = line.split_whitespace().collect();
        // sl local rem st tx:rx tr:when retrnsmt uid timeout inode ...
        let found: u64 = fields.get(9)?.parse().ok()?;
        if found != inode {
            return None;
        }
        Some(SocketEnds {
            local: parse_endpoint(fields.get(1)?)?,
            remote: parse_endpoint(fields.get(2)?)?,
        })
    })
}

/// An `ADDR:PORT` of `/proc/net/tcp{,6}`: the address as the kernel's 32-bit words printed in
/// native byte order (8 hex digits for IPv4, 32 for IPv6), the port in hex.
#[must_use]
pub fn parse_endpoint(s: &str) -> Option<SocketAddr> {
    let (addr, port) = s.split_once(':')?;
    let port = u16::from_str_radix(port, 16).ok()?;
    let ip = match addr.len() {
        8 => IpAddr::V4(Ipv4Addr::from(
            u32::from_str_radix(addr, 16).ok()?.to_ne_bytes(),
        )),
        32 => {
            let mut bytes = [0u8; 16];
            for (i, chunk) in bytes.chunks_exact_mut(4).enumerate() {
                let word = addr.get(i * 8..i * 8 + 8)?;
                chunk.copy_from_slice(&u32::from_str_radix(word, 16).ok()?.to_ne_bytes());
            }
            let v6 = Ipv6Addr::from(bytes);
            // A v4 peer on a dual-stack socket reads as ::ffff:a.b.c.d; report it as v4.
            v6.to_ipv4_mapped().map_or(IpAddr::V6(v6), IpAddr::V4)
        }
        _ => return None,
    };
    Some(SocketAddr::new(ip, port))
}

/// The process's cgroup and the container id in it, if any.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct CgroupInfo {
    /// The cgroup path (the unified hierarchy's, else the first listed).
    pub path: String,
    /// A container runtime's 64-hex-digit id found in the path.
    pub container_id: Option<String>,
}

/// Reads `/proc/PID/cgroup`; `None` when it cannot be read or lists nothing.
#[must_use]
pub fn cgroup(pid: u32) -> Option<CgroupInfo> {
    let text = fs::read_to_string(format!("/proc/{pid}/cgroup")).ok()?;
    parse_cgroup(&text)
}

/// Parses the text of `/proc/PID/cgroup` (`ID:CONTROLLERS:PATH` lines): the unified hierarchy's
/// path (`0::/…`) when there is one, else the first line's.
#[must_use]
pub fn parse_cgroup(text: &str) -> Option<CgroupInfo> {
    let paths: Vec<(&str, &str)> = text
        .lines()
        .filter_map(|l| {
            let mut parts = l.splitn(3, ':');
            let id = parts.next()?;
            let _controllers = parts.next()?;
            Some((id, parts.next()?))
        })
        .collect();
    let path = paths
        .iter()
        .find(|(id, _)| *id == "0")
        .or_else(|| paths.first())
        .map(|(_, p)| *p)?;
    Some(CgroupInfo {
        path: path.to_owned(),
        container_id: container_id(path),
    })
}

/// The last 64-hex-digit run in a cgroup path (`/docker/<id>`,
/// `/kubepods/…/cri-containerd-<id>.scope`, `/system.slice/docker-<id>.scope`).
#[must_use]
pub fn container_id(path: &str) -> Option<String> {
    path.rsplit(|c: char| !c.is_ascii_hexdigit())
        .find(|run| run.len() == 64)
        .map(str::to_owned)
}

#[cfg(test)]
mod tests {
    use super::*;

    // Real lines (x86_64, little-endian): curl to 127.0.0.1:8443 and a v6 socket to [::1]:443.
    const TCP: &str = "  sl  local_address rem_address   st tx_queue rx_queue tr tm->when retrnsmt   uid  timeout inode
   0: 0100007F:20FB 00000000:0000 0A 00000000:00000000 00:00000000 00000000     0        0 4242 1 0000000000000000 100 0 0 10 0
   1: 0100007F:B5A2 0100007F:20FB 01 00000000:00000000 00:00000000 00000000     0        0 98765 1 0000000000000000 20 4 30 10 -1
";
    const TCP6: &str = "  sl  local_address                         remote_address                        st tx_queue rx_queue tr tm->when retrnsmt   uid  timeout inode
   0: 00000000000000000000000001000000:D431 00000000000000000000000001000000:01BB 01 00000000:00000000 00:00000000 00000000     0        0 555 1 0000000000000000 20 4 0 10 -1
   1: 0000000000000000FFFF00000100007F:D432 0000000000000000FFFF00000100007F:20FB 01 00000000:00000000 00:00000000 00000000     0        0 556 1 0000000000000000 20 4 0 10 -1
";

    #[test]
    fn finds_a_v4_socket_by_inode() {
        let ends = find_inode(TCP, 98765).expect("inode present");
        assert_eq!(ends.local, "127.0.0.1:46498".parse().unwrap());
        assert_eq!(ends.remote, "127.0.0.1:8443".parse().unwrap());
        assert_eq!(find_inode(TCP, 1), None);
        // The header line's "inode" column never matches.
        assert_eq!(find_inode(TCP, 0), None);
    }

    #[test]
    fn finds_v6_and_v4_mapped_sockets() {
        let ends = find_inode(TCP6, 555).expect("v6 inode");
        assert_eq!(ends.remote, "[::1]:443".parse().unwrap());
        assert_eq!(ends.local, "[::1]:54321".parse().unwrap());
        let mapped = find_inode(TCP6, 556).expect("mapped inode");
        assert_eq!(mapped.remote, "127.0.0.1:8443".parse().unwrap());
    }

    #[test]
    fn rejects_malformed_endpoints() {
        assert_eq!(parse_endpoint("0100007F"), None);
        assert_eq!(parse_endpoint("0100007:20FB"), None);
        assert_eq!(parse_endpoint("0100007F:XYZ"), None);
        assert_eq!(parse_endpoint("zz00007F:20FB"), None);
    }

    #[test]
    fn parses_socket_links() {
        assert_eq!(parse_socket_link("socket:[98765]"), Some(98765));
        assert_eq!(parse_socket_link("/dev/null"), None);
        assert_eq!(parse_socket_link("socket:[x]"), None);
        assert_eq!(parse_socket_link("pipe:[12]"), None);
    }

    #[test]
    fn prefers_the_unified_cgroup_and_finds_container_ids() {
        let id = "4f2a".repeat(16);
        let text = format!(
            "12:cpu,cpuacct:/docker/{id}\n0::/system.slice/docker-{id}.scope\n1:name=systemd:/x\n"
        );
        let info = parse_cgroup(&text).expect("cgroup");
        assert_eq!(info.path, format!("/system.slice/docker-{id}.scope"));
        assert_eq!(info.container_id.as_deref(), Some(id.as_str()));

        let v1 = parse_cgroup("4:memory:/user.slice\n").expect("v1");
        assert_eq!(v1.path, "/user.slice");
        assert_eq!(v1.container_id, None);
        assert_eq!(parse_cgroup(""), None);
        // 63 hex digits is not an id.
        assert_eq!(container_id(&format!("/docker/{}", &id[1..])), None);
    }

    #[test]
    fn resolves_a_real_socket_of_this_process() {
        use std::os::fd::AsRawFd as _;
        let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
        let client = std::net::TcpStream::connect(listener.local_addr().unwrap()).expect("connect");
        let ends = socket_ends(std::process::id(), client.as_raw_fd()).expect("resolve");
        assert_eq!(ends.remote, listener.local_addr().unwrap());
        assert_eq!(ends.local, client.local_addr().unwrap());
        let file = std::fs::File::open("/proc/self/status").expect("open");
        assert!(matches!(
            socket_ends(std::process::id(), file.as_raw_fd()),
            Err(SocketError::NotSocket { .. })
        ));
    }

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
    fn a_zombie_is_not_alive() {
        assert_eq!(process_state("42 (a (weird) name) Z 1 2 3"), Some('Z'));
        assert_eq!(process_state("42 (sleep) S 1"), Some('S'));
        assert!(process_exists(std::process::id()));
        let mut child = std::process::Command::new("true").spawn().expect("true");
        let pid = child.id();
        // Not reaped yet: a zombie once it has exited.
        std::thread::sleep(std::time::Duration::from_millis(300));
        assert!(!process_exists(pid));
        child.wait().expect("reaped");
        assert!(!process_exists(pid));
    }

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
