//! Who a connection belongs to and whom it talks to: the one identity type that travels with a
//! connection's exchanges to the packs, the sinks and recordings.

use std::{collections::BTreeMap, net::SocketAddr};

use serde::{Deserialize, Serialize};

/// What is known about a connection and its process. Fields that are `None` (or empty) are
/// unknown and left out of the JSON, which is the output's `source` object and a recording's
/// identity line.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Identity {
    /// Process id. (Recordings of format version 2 leave it to their header line.)
    #[serde(default)]
    pub pid: u32,
    /// Process name.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub process: String,
    /// The connection's serial: unique within one agent run, so a reused connection object or
    /// fd is a new number.
    #[serde(rename = "connection")]
    pub serial: u64,
    /// Socket fd in the process (unknown when the library does its socket I/O outside the TLS
    /// calls, as Node.js does with memory BIOs).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub fd: Option<i32>,
    /// This process's end of the socket: `ip:port`, `[v6]:port`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub local_address: Option<SocketAddr>,
    /// The peer's end.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub remote_address: Option<SocketAddr>,
    /// The server name the client asked for (TLS SNI); never the `Host` header, which the
    /// output uses in its place when there is no SNI.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub server_name: Option<String>,
    /// The process's cgroup path.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cgroup: Option<String>,
    /// The container id found in the cgroup path.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub container_id: Option<String>,
    /// Which side of the exchanges the process is, once its first request was seen.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub role: Option<Role>,
    /// The Kubernetes pod and container, for a process in a pod's cgroup (boxed: most
    /// processes are in none).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub k8s: Option<Box<K8s>>,
}

/// A process's pod and container: from its cgroup path always, from the kubelet (`--kubelet`)
/// the names and labels.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct K8s {
    /// The pod's UID.
    pub pod_uid: String,
    /// The container's id, when the process is in a container's cgroup.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub container_id: Option<String>,
    /// The container runtime, when the cgroup's name tells (`containerd`, `cri-o`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub runtime: Option<String>,
    /// The pod's name.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pod: Option<String>,
    /// The pod's namespace.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub namespace: Option<String>,
    /// The container's name in the pod.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub container: Option<String>,
    /// The pod's labels.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub labels: BTreeMap<String, String>,
}

impl K8s {
    /// What the cgroup path alone says.
    #[must_use]
    pub fn from_cgroup(cgroup: &super::k8s::PodCgroup) -> Self {
        Self {
            pod_uid: cgroup.pod_uid.clone(),
            container_id: cgroup.container_id.clone(),
            runtime: cgroup.runtime.map(|r| r.scheme().to_owned()),
            ..Self::default()
        }
    }
}

/// Which side of a connection's exchanges the observed process is.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Role {
    /// It sends the requests: an API call.
    Client,
    /// It answers them: a local server.
    Server,
}

impl Role {
    /// The role of a process that writes its connection's requests on `request_flow`.
    #[must_use]
    pub fn from_request_flow(request_flow: taskless_http::Flow) -> Self {
        match request_flow {
            taskless_http::Flow::Egress => Self::Client,
            taskless_http::Flow::Ingress => Self::Server,
        }
    }

    /// `client` or `server`.
    #[must_use]
    pub const fn as_str(self) -> &'static str {
        match self {
            Self::Client => "client",
            Self::Server => "server",
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_json_names_each_known_field_and_leaves_out_the_unknown() {
        let id = Identity {
            pid: 42,
            process: "curl".into(),
            serial: 7,
            fd: Some(5),
            local_address: Some("127.0.0.1:40000".parse().unwrap()),
            remote_address: Some("[::1]:8443".parse().unwrap()),
            server_name: Some("api.example.com".into()),
            cgroup: Some("/user.slice".into()),
            container_id: None,
            role: Some(Role::Client),
            k8s: None,
        };
        let v = serde_json::to_value(&id).unwrap();
        assert_eq!(
            v,
            serde_json::json!({
                "pid": 42, "process": "curl", "connection": 7, "fd": 5,
                "localAddress": "127.0.0.1:40000", "remoteAddress": "[::1]:8443",
                "serverName": "api.example.com", "cgroup": "/user.slice", "role": "client"
            })
        );
        let back: Identity = serde_json::from_value(v).unwrap();
        assert_eq!(back, id);
        // A recording's identity line of format version 2 has no pid or process.
        let old: Identity = serde_json::from_str(r#"{"connection":3,"fd":4}"#).unwrap();
        assert_eq!((old.pid, old.process.as_str(), old.serial), (0, "", 3));
    }
}
