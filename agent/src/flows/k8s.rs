//! Kubernetes identity from a cgroup path: which pod a process belongs to, and which of the pod's
//! containers, read from the names the kubelet and the container runtime give its cgroups.
//!
//! The kubelet puts every pod in a cgroup under `kubepods` named after the pod's UID, one level
//! below its QoS class (none for Guaranteed pods); the runtime puts each container in a child of
//! it named after the container id. The names depend on the kubelet's cgroup driver:
//!
//! | driver | pod cgroup | container cgroup |
//! |---|---|---|
//! | cgroupfs | `/kubepods/burstable/pod<uid>` | `<id>` (containerd, docker), `crio-<id>` (CRI-O) |
//! | systemd | `/kubepods.slice/kubepods-burstable.slice/kubepods-burstable-pod<uid_with_underscores>.slice` | `cri-containerd-<id>.scope`, `crio-<id>.scope`, `docker-<id>.scope` |
//!
//! The path is read as `/proc/PID/cgroup` shows it to the reader, which inside a cgroup namespace
//! (a containerised agent on cgroup v2) is relative to the reader's own cgroup and may start with
//! `/..` segments: so the pod is recognised by its own segment wherever it is, not by a prefix.
//! CRI-O's monitor (`crio-conmon-<id>.scope`) and anything else that is not a container process
//! belongs to the pod without naming a container. Kept free of the rest of the agent: it is a
//! pure function of the path.

use std::fmt;

/// A container runtime, as the kubelet's `containerID` (`<scheme>://<id>`) names it.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Runtime {
    /// containerd's CRI plugin (`cri-containerd-<id>.scope`).
    Containerd,
    /// CRI-O (`crio-<id>`, `crio-<id>.scope`).
    CriO,
    /// Docker through dockershim or cri-dockerd (`docker-<id>.scope`).
    Docker,
    /// Podman (`libpod-<id>`), which can place containers under a kubepods-style parent.
    Podman,
}

impl Runtime {
    /// The scheme of the kubelet's `containerID` for this runtime (`containerd://<id>`).
    #[must_use]
    pub fn scheme(self) -> &'static str {
        match self {
            Self::Containerd => "containerd",
            Self::CriO => "cri-o",
            Self::Docker => "docker",
            Self::Podman => "podman",
        }
    }
}

impl fmt::Display for Runtime {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.scheme())
    }
}

/// What a cgroup path says about a process in a Kubernetes pod.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PodCgroup {
    /// The pod's UID, in the API's form (lower-case, dashes: `0f2c…-…`; a static pod's UID is
    /// 32 hex digits without dashes).
    pub pod_uid: String,
    /// The container's id (64 lower-case hex digits), when the process is in a container's
    /// cgroup rather than the pod's own or a runtime helper's.
    pub container_id: Option<String>,
    /// The runtime that named the container's cgroup; `None` when the name is the bare id
    /// (cgroupfs driver with containerd or docker: the kubelet's `containerID` tells which).
    pub runtime: Option<Runtime>,
}

/// The pod and container a cgroup path names, or `None` when it is not a pod's cgroup.
#[must_use]
pub fn parse(path: &str) -> Option<PodCgroup> {
    let segments: Vec<&str> = path.split('/').filter(|s| !s.is_empty()).collect();
    let (at, pod_uid) = segments
        .iter()
        .enumerate()
        .rev()
        .find_map(|(i, s)| pod_segment(s).map(|uid| (i, uid)))?;
    let (container_id, runtime) = segments
        .get(at + 1)
        .and_then(|s| container_segment(s))
        .map_or((None, None), |(id, rt)| (Some(id), rt));
    Some(PodCgroup {
        pod_uid,
        container_id,
        runtime,
    })
}

/// The pod UID in a pod cgroup's name: `pod<uid>` (cgroupfs) or `kubepods[-<qos>]-pod<uid>.slice`
/// (systemd, dashes of the UID written as underscores, possibly under a
/// kubelet's own prefix: `kubelet-kubepods-…`).
fn pod_segment(segment: &str) -> Option<String> {
    let raw = match segment.strip_suffix(".slice") {
        // `kubepods-…` or, under a kubelet with its own cgroup root (kind), `kubelet-kubepods-…`.
        Some(unit) if unit.split('-').any(|part| part == "kubepods") => unit.rsplit_once("-pod")?.1,
        Some(_) => return None,
        None => segment.strip_prefix("pod")?,
    };
    let uid = raw.replace('_', "-").to_ascii_lowercase();
    is_pod_uid(&uid).then_some(uid)
}

/// A UUID (8-4-4-4-12 hex digits) or a static pod's 32-hex-digit hash.
fn is_pod_uid(uid: &str) -> bool {
    let groups: Vec<&str> = uid.split('-').collect();
    let hex = |s: &str| s.bytes().all(|b| b.is_ascii_hexdigit());
    match groups.as_slice() {
        [one] => one.len() == 32 && hex(one),
        [a, b, c, d, e] => {
            [a.len(), b.len(), c.len(), d.len(), e.len()] == [8, 4, 4, 4, 12]
                && groups.iter().all(|g| hex(g))
        }
        _ => false,
    }
}

/// The container id and runtime in a container cgroup's name; `None` for the names of runtime
/// helpers (CRI-O's `crio-conmon-<id>.scope`) and anything unknown.
fn container_segment(segment: &str) -> Option<(String, Option<Runtime>)> {
    let unit = segment.strip_suffix(".scope").unwrap_or(segment);
    const PREFIXES: [(&str, Runtime); 4] = [
        ("cri-containerd-", Runtime::Containerd),
        ("crio-", Runtime::CriO),
        ("docker-", Runtime::Docker),
        ("libpod-", Runtime::Podman),
    ];
    let (id, runtime) = PREFIXES
        .iter()
        .find_map(|(prefix, rt)| unit.strip_prefix(prefix).map(|id| (id, Some(*rt))))
        .unwrap_or((unit, None));
    is_container_id(id).then(|| (id.to_ascii_lowercase(), runtime))
}

/// 64 hex digits.
fn is_container_id(id: &str) -> bool {
    id.len() == 64 && id.bytes().all(|b| b.is_ascii_hexdigit())
}

#[cfg(test)]
mod tests {
    use super::*;

    const UID: &str = "0f2c4e8a-1b3d-4c5e-9f70-8a9b0c1d2e3f";
    const ID: &str = "4f2a9c1e7b3d5a6f8e0c2b4d6f8a0c1e3b5d7f9a1c3e5b7d9f1a3c5e7b9d1f3a";

    fn underscored() -> String {
        UID.replace('-', "_")
    }

    fn want(runtime: Option<Runtime>) -> Option<PodCgroup> {
        Some(PodCgroup {
            pod_uid: UID.to_owned(),
            container_id: Some(ID.to_owned()),
            runtime,
        })
    }

    #[test]
    fn cgroupfs_driver_layouts() {
        for qos in ["", "/burstable", "/besteffort"] {
            // containerd and docker: the bare id.
            assert_eq!(
                parse(&format!("/kubepods{qos}/pod{UID}/{ID}")),
                want(None),
                "{qos}"
            );
            // CRI-O.
            assert_eq!(
                parse(&format!("/kubepods{qos}/pod{UID}/crio-{ID}")),
                want(Some(Runtime::CriO)),
                "{qos}"
            );
        }
    }

    #[test]
    fn systemd_driver_layouts() {
        let u = underscored();
        let cases = [
            (
                format!(
                    "/kubepods.slice/kubepods-burstable.slice/kubepods-burstable-pod{u}.slice/cri-containerd-{ID}.scope"
                ),
                Runtime::Containerd,
            ),
            (
                format!(
                    "/kubepods.slice/kubepods-besteffort.slice/kubepods-besteffort-pod{u}.slice/crio-{ID}.scope"
                ),
                Runtime::CriO,
            ),
            // Guaranteed pods sit directly under kubepods.slice.
            (
                format!("/kubepods.slice/kubepods-pod{u}.slice/docker-{ID}.scope"),
                Runtime::Docker,
            ),
        ];
        for (path, runtime) in cases {
            assert_eq!(parse(&path), want(Some(runtime)), "{path}");
        }
    }

    #[test]
    fn podman_under_a_kubepods_parent() {
        assert_eq!(
            parse(&format!("/kubepods/burstable/pod{UID}/libpod-{ID}")),
            want(Some(Runtime::Podman))
        );
    }

    #[test]
    fn paths_relative_to_a_cgroup_namespace_and_nested_kubelets() {
        let u = underscored();
        // Seen from inside another pod's cgroup namespace (cgroup v2): relative, with `..`.
        assert_eq!(
            parse(&format!(
                "/../../kubepods-besteffort-pod{u}.slice/cri-containerd-{ID}.scope"
            )),
            want(Some(Runtime::Containerd))
        );
        assert_eq!(parse(&format!("/../pod{UID}/{ID}")), want(None));
        // A kubelet inside a container (kind): kubepods below the node container's cgroup.
        assert_eq!(
            parse(&format!(
                "/system.slice/docker-{ID}.scope/kubelet.slice/kubelet-kubepods.slice/kubelet-kubepods-besteffort.slice/kubelet-kubepods-besteffort-pod{u}.slice/cri-containerd-{ID}.scope"
            )),
            want(Some(Runtime::Containerd))
        );
        assert_eq!(
            parse(&format!("/docker/{ID}/kubepods/besteffort/pod{UID}/{ID}")),
            want(None)
        );
    }

    #[test]
    fn processes_in_a_pod_but_not_in_a_container() {
        let u = underscored();
        let pod_only = Some(PodCgroup {
            pod_uid: UID.to_owned(),
            container_id: None,
            runtime: None,
        });
        // CRI-O's monitor process.
        assert_eq!(
            parse(&format!(
                "/kubepods.slice/kubepods-burstable.slice/kubepods-burstable-pod{u}.slice/crio-conmon-{ID}.scope"
            )),
            pod_only
        );
        assert_eq!(parse(&format!("/kubepods/pod{UID}")), pod_only);
        assert_eq!(parse(&format!("/kubepods/pod{UID}/not-an-id")), pod_only);
        // A sub-cgroup inside the container keeps the container.
        assert_eq!(
            parse(&format!("/kubepods/burstable/pod{UID}/crio-{ID}/container")),
            want(Some(Runtime::CriO))
        );
    }

    #[test]
    fn static_pod_uids_and_case() {
        let hash = "8f3e0a1b2c3d4e5f60718293a4b5c6d7";
        let got = parse(&format!("/kubepods/burstable/pod{hash}/{ID}")).expect("static pod");
        assert_eq!(got.pod_uid, hash);
        let upper = parse(&format!(
            "/kubepods/pod{}/{}",
            UID.to_uppercase(),
            ID.to_uppercase()
        ))
        .expect("upper case");
        assert_eq!(upper.pod_uid, UID);
        assert_eq!(upper.container_id.as_deref(), Some(ID));
    }

    #[test]
    fn not_pods() {
        for path in [
            "/".to_owned(),
            String::new(),
            "/user.slice/user-0.slice/session-1.scope".to_owned(),
            format!("/system.slice/docker-{ID}.scope"),
            format!("/docker/{ID}"),
            format!("/machine.slice/libpod-{ID}.scope"),
            // Not a UID: wrong group lengths, not hex, too short.
            "/kubepods/burstable/pod0f2c4e8a-1b3d-4c5e-9f70-8a9b0c1d2e3/x".to_owned(),
            "/kubepods/burstable/podzf2c4e8a-1b3d-4c5e-9f70-8a9b0c1d2e3f".to_owned(),
            "/kubepods/burstable/pod1234".to_owned(),
            // A slice that only ends like a pod's.
            format!("/system.slice/foo-pod{}.slice", underscored()),
        ] {
            assert_eq!(parse(&path), None, "{path}");
        }
    }

    #[test]
    fn runtime_schemes_match_the_kubelets_container_ids() {
        assert_eq!(Runtime::Containerd.scheme(), "containerd");
        assert_eq!(Runtime::CriO.to_string(), "cri-o");
        assert_eq!(Runtime::Docker.scheme(), "docker");
    }
}
