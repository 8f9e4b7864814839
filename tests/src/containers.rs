//! Containers and privileges for the tests: podman as this host needs it, the images
//! `cargo xtask test` builds, and the capabilities the project's DaemonSet grants.

use std::{
    path::{Path, PathBuf},
    process::{Command, Stdio},
};

use anyhow::{Context as _, bail};

use crate::harness::build_dir;

/// The repository's root.
#[must_use]
pub fn repo_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .map(Path::to_path_buf)
        .unwrap_or_default()
}

/// The podman command, with runc on hosts whose cgroups are v1 or hybrid (crun refuses those).
#[must_use]
pub fn podman() -> Command {
    let mut cmd = Command::new("podman");
    if !Path::new("/sys/fs/cgroup/cgroup.controllers").exists() {
        cmd.args(["--runtime", "runc"]);
    }
    cmd
}

/// `--ulimit` options with this process's hard limits: a container's default limits can exceed
/// what the host lets a process without CAP_SYS_RESOURCE set.
#[must_use]
pub fn ulimit_args() -> Vec<String> {
    let mut v = Vec::new();
    for (name, res) in [
        ("nofile", libc::RLIMIT_NOFILE),
        ("nproc", libc::RLIMIT_NPROC),
    ] {
        let mut lim = libc::rlimit {
            rlim_cur: 0,
            rlim_max: 0,
        };
        // SAFETY: getrlimit writes into the struct we own.
        if unsafe { libc::getrlimit(res, &raw mut lim) } != 0 {
            continue;
        }
        // podman runs the OCI runtime with at most 32768 processes, whatever its own limit.
        let max = match name {
            "nproc" => lim.rlim_max.min(32768),
            _ if lim.rlim_max == libc::RLIM_INFINITY => continue,
            _ => lim.rlim_max,
        };
        v.push("--ulimit".to_owned());
        v.push(format!("{name}={max}:{max}"));
    }
    v
}

/// The name of an image `cargo xtask test` built (`target/image/<which>-image`).
///
/// # Panics
/// When it was not built: the test says how to build it rather than skip.
#[must_use]
pub fn built_image(which: &str) -> String {
    let file = build_dir()
        .parent()
        .map(|t| t.join(format!("image/{which}-image")))
        .unwrap_or_default();
    let name = std::fs::read_to_string(&file).unwrap_or_default();
    let name = name.trim();
    assert!(
        !name.is_empty(),
        "{} is missing: run `cargo xtask test` (it builds the test images; `cargo xtask image --prebuilt` alone does too)",
        file.display()
    );
    assert!(
        Command::new("podman")
            .args(["image", "exists", name])
            .status()
            .is_ok_and(|s| s.success()),
        "image {name} is not in podman's store: run `cargo xtask test` again"
    );
    name.to_owned()
}

/// The text of the DaemonSet (`deploy/kubernetes/40-daemonset.yaml`).
///
/// # Panics
/// When it cannot be read.
#[must_use]
pub fn manifest_text() -> String {
    let path = repo_root().join("deploy/kubernetes/40-daemonset.yaml");
    std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

/// The capabilities the DaemonSet adds, as Kubernetes names them (`SYS_ADMIN`, `SYS_PTRACE`).
///
/// # Panics
/// When the manifest cannot be read or lists none.
#[must_use]
pub fn manifest_capabilities() -> Vec<String> {
    let caps = capabilities_added(&manifest_text());
    assert!(!caps.is_empty(), "no capabilities found in the DaemonSet");
    caps
}

/// The items of the first `add:` list in a manifest's text (comments between items skipped).
#[must_use]
pub fn capabilities_added(manifest: &str) -> Vec<String> {
    let mut lines = manifest.lines().map(str::trim);
    if lines.by_ref().all(|l| l != "add:") {
        return Vec::new();
    }
    let mut caps = Vec::new();
    for line in lines {
        if line.starts_with('#') {
            continue;
        }
        match line.strip_prefix("- ") {
            Some(cap) => caps.push(cap.trim().to_owned()),
            None => break,
        }
    }
    caps
}

/// A capability's number, from its Kubernetes name (`BPF`) or kernel name (`CAP_BPF`).
#[must_use]
pub fn capability_number(name: &str) -> Option<u32> {
    let short = name.strip_prefix("CAP_").unwrap_or(name);
    const NAMES: [&str; 41] = [
        "CHOWN",
        "DAC_OVERRIDE",
        "DAC_READ_SEARCH",
        "FOWNER",
        "FSETID",
        "KILL",
        "SETGID",
        "SETUID",
        "SETPCAP",
        "LINUX_IMMUTABLE",
        "NET_BIND_SERVICE",
        "NET_BROADCAST",
        "NET_ADMIN",
        "NET_RAW",
        "IPC_LOCK",
        "IPC_OWNER",
        "SYS_MODULE",
        "SYS_RAWIO",
        "SYS_CHROOT",
        "SYS_PTRACE",
        "SYS_PACCT",
        "SYS_ADMIN",
        "SYS_BOOT",
        "SYS_NICE",
        "SYS_RESOURCE",
        "SYS_TIME",
        "SYS_TTY_CONFIG",
        "MKNOD",
        "LEASE",
        "AUDIT_WRITE",
        "AUDIT_CONTROL",
        "SETFCAP",
        "MAC_OVERRIDE",
        "MAC_ADMIN",
        "SYSLOG",
        "WAKE_ALARM",
        "BLOCK_SUSPEND",
        "AUDIT_READ",
        "PERFMON",
        "BPF",
        "CHECKPOINT_RESTORE",
    ];
    NAMES
        .iter()
        .position(|n| *n == short)
        .and_then(|i| u32::try_from(i).ok())
}

/// The capability mask of a list of names.
///
/// # Panics
/// On an unknown name.
#[must_use]
pub fn capability_mask(names: &[String]) -> u64 {
    names.iter().fold(0, |mask, n| {
        mask | 1u64 << capability_number(n).unwrap_or_else(|| panic!("unknown capability {n}"))
    })
}

/// The effective capability set of a running process (`CapEff`).
#[must_use]
pub fn effective_capabilities(pid: u32) -> Option<u64> {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .ok()?
        .lines()
        .find_map(|l| l.strip_prefix("CapEff:"))
        .and_then(|hex| u64::from_str_radix(hex.trim(), 16).ok())
}

/// A container removed (with `podman rm -f`) on drop, whatever the test did.
pub struct ContainerGuard(pub String);

impl Drop for ContainerGuard {
    fn drop(&mut self) {
        let _ = podman()
            .args(["rm", "-f", "-t", "0", &self.0])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status();
    }
}

/// A cgroup made for a test under every hierarchy (`/sys/fs/cgroup/*/<path>`), removed on drop
/// with whatever a runtime left inside it.
pub struct CgroupGuard(pub String);

impl Drop for CgroupGuard {
    fn drop(&mut self) {
        let Ok(hierarchies) = std::fs::read_dir("/sys/fs/cgroup") else {
            return;
        };
        let mut roots: Vec<PathBuf> = hierarchies
            .filter_map(Result::ok)
            .map(|e| e.path())
            .collect();
        roots.push(PathBuf::from("/sys/fs/cgroup"));
        for root in roots {
            let dir = root.join(self.0.trim_start_matches('/'));
            if let Ok(children) = std::fs::read_dir(&dir) {
                for child in children.filter_map(Result::ok) {
                    if child.path().is_dir() {
                        let _ = std::fs::remove_dir(child.path());
                    }
                }
            }
            let _ = std::fs::remove_dir(&dir);
        }
    }
}

/// The value of `{{.State.Pid}}` (or another Go template) for a container.
///
/// # Errors
/// When podman fails.
pub fn inspect(container: &str, format: &str) -> anyhow::Result<String> {
    let out = podman()
        .args(["inspect", "--format", format, container])
        .output()
        .context("podman inspect")?;
    if !out.status.success() {
        bail!(
            "podman inspect {container}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
    Ok(String::from_utf8_lossy(&out.stdout).trim().to_owned())
}

/// A fresh random UUID (the kernel's), as Kubernetes gives pods.
#[must_use]
pub fn random_uuid() -> String {
    std::fs::read_to_string("/proc/sys/kernel/random/uuid")
        .unwrap_or_default()
        .trim()
        .to_owned()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_the_added_capabilities_of_a_manifest() {
        let text = "securityContext:\n  capabilities:\n    drop:\n      - ALL\n    add:\n      # why\n      - BPF\n      # why not\n      - SYS_PTRACE\n  seccompProfile:\n    type: Unconfined\n";
        assert_eq!(capabilities_added(text), vec!["BPF", "SYS_PTRACE"]);
        assert!(capabilities_added("kind: Pod\n").is_empty());
        assert_eq!(
            capability_mask(&["BPF".into(), "CAP_PERFMON".into()]),
            0xC0_0000_0000
        );
        assert_eq!(capability_number("DAC_READ_SEARCH"), Some(2));
        assert_eq!(capability_number("NOPE"), None);
    }

    #[test]
    fn the_project_manifest_grants_capabilities() {
        let caps = manifest_capabilities();
        assert!(caps.iter().any(|c| c == "SYS_PTRACE"), "{caps:?}");
        assert!(
            caps.iter().all(|c| capability_number(c).is_some()),
            "{caps:?}"
        );
    }
}
