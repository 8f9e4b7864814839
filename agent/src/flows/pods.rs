//! Pod names, namespaces, labels and container names from the node's kubelet (`GET /pods`, the
//! pods of this node), kept in a cache a thread refreshes: every `--kubelet-refresh` seconds,
//! and sooner (at most every [`MIN_REFRESH`]) when a process of an unknown pod shows up. The
//! flows stage only reads the cache: it never waits for the network, so the first connections of
//! a pod younger than the cache carry its UID and container id without its name.

use std::{
    collections::{BTreeMap, HashMap},
    path::PathBuf,
    sync::{
        Arc, RwLock,
        atomic::{AtomicBool, AtomicU64, Ordering},
    },
    time::{Duration, Instant},
};

use serde::Deserialize;

use super::{identity::K8s, k8s::PodCgroup};
pub use crate::config::KubeletConfig;

/// The shortest time between two fetches asked for by unknown pods.
pub const MIN_REFRESH: Duration = Duration::from_secs(2);

/// Why a fetch failed.
#[derive(Debug, thiserror::Error)]
pub enum KubeletError {
    /// A file (CA, token) could not be read.
    #[error("reading {}: {reason}", path.display())]
    File {
        /// The file.
        path: PathBuf,
        /// Why.
        reason: String,
    },
    /// The request failed (connection, TLS, HTTP status).
    #[error("GET {url}: {reason}")]
    Http {
        /// The URL.
        url: String,
        /// Why.
        reason: String,
    },
    /// The answer is not a pod list.
    #[error("GET {url}: not a pod list: {reason}")]
    Body {
        /// The URL.
        url: String,
        /// Why.
        reason: String,
    },
}

/// What the cache knows of one pod.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct PodMeta {
    /// The pod's name.
    pub name: String,
    /// Its namespace.
    pub namespace: String,
    /// Its labels.
    pub labels: BTreeMap<String, String>,
    /// Container id (without the `runtime://` scheme) → container name.
    pub containers: HashMap<String, String>,
}

#[derive(Deserialize)]
struct PodList {
    #[serde(default)]
    items: Vec<Pod>,
}

#[derive(Deserialize)]
struct Pod {
    metadata: Metadata,
    #[serde(default)]
    status: Status,
}

#[derive(Deserialize)]
struct Metadata {
    #[serde(default)]
    name: String,
    #[serde(default)]
    namespace: String,
    uid: String,
    #[serde(default)]
    labels: BTreeMap<String, String>,
}

#[derive(Default, Deserialize)]
#[serde(rename_all = "camelCase")]
struct Status {
    #[serde(default)]
    container_statuses: Vec<ContainerStatus>,
    #[serde(default)]
    init_container_statuses: Vec<ContainerStatus>,
    #[serde(default)]
    ephemeral_container_statuses: Vec<ContainerStatus>,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct ContainerStatus {
    name: String,
    #[serde(default, rename = "containerID")]
    container_id: Option<String>,
}

/// The pods of a `/pods` document (a `v1` `PodList`), by UID.
///
/// # Errors
/// When it is not a pod list.
pub fn parse_pods(body: &[u8]) -> Result<HashMap<String, PodMeta>, serde_json::Error> {
    let list: PodList = serde_json::from_slice(body)?;
    Ok(list
        .items
        .into_iter()
        .map(|pod| {
            let containers = pod
                .status
                .container_statuses
                .into_iter()
                .chain(pod.status.init_container_statuses)
                .chain(pod.status.ephemeral_container_statuses)
                .filter_map(|c| {
                    let id = c.container_id?;
                    // `containerd://<id>`, `cri-o://<id>`.
                    let id = id.rsplit_once("://").map_or(id.as_str(), |(_, id)| id);
                    Some((id.to_ascii_lowercase(), c.name))
                })
                .collect();
            (
                pod.metadata.uid.to_ascii_lowercase(),
                PodMeta {
                    name: pod.metadata.name,
                    namespace: pod.metadata.namespace,
                    labels: pod.metadata.labels,
                    containers,
                },
            )
        })
        .collect())
}

/// A client of one kubelet.
pub struct Kubelet {
    config: KubeletConfig,
    agent: ureq::Agent,
}

impl Kubelet {
    /// A client for `config` (reads the CA file now).
    ///
    /// # Errors
    /// When the CA file cannot be read or holds no certificate.
    pub fn new(config: KubeletConfig) -> Result<Self, KubeletError> {
        let mut tls = ureq::tls::TlsConfig::builder().disable_verification(config.insecure);
        if let Some(path) = &config.ca {
            let file_error = |reason: String| KubeletError::File {
                path: path.clone(),
                reason,
            };
            let pem = std::fs::read(path).map_err(|e| file_error(e.to_string()))?;
            let certs: Vec<ureq::tls::Certificate<'static>> = ureq::tls::parse_pem(&pem)
                .filter_map(|item| match item {
                    Ok(ureq::tls::PemItem::Certificate(c)) => Some(c),
                    _ => None,
                })
                .collect();
            if certs.is_empty() {
                return Err(file_error("no PEM certificate in it".into()));
            }
            tls = tls.root_certs(ureq::tls::RootCerts::new_with_certs(&certs));
        }
        let agent = ureq::Agent::config_builder()
            .tls_config(tls.build())
            .timeout_global(Some(Duration::from_secs(10)))
            .http_status_as_error(true)
            .build()
            .new_agent();
        Ok(Self { config, agent })
    }

    /// `GET /pods`.
    ///
    /// # Errors
    /// A [`KubeletError`].
    pub fn fetch(&self) -> Result<HashMap<String, PodMeta>, KubeletError> {
        let url = format!("{}/pods", self.config.url.trim_end_matches('/'));
        let mut request = self.agent.get(&url);
        if let Some(path) = &self.config.token {
            let token = std::fs::read_to_string(path).map_err(|e| KubeletError::File {
                path: path.clone(),
                reason: e.to_string(),
            })?;
            request = request.header("Authorization", format!("Bearer {}", token.trim()));
        }
        let http = |e: ureq::Error| KubeletError::Http {
            url: url.clone(),
            reason: e.to_string(),
        };
        let body = request
            .call()
            .map_err(http)?
            .body_mut()
            .with_config()
            .limit(64 * 1024 * 1024)
            .read_to_vec()
            .map_err(http)?;
        parse_pods(&body).map_err(|e| KubeletError::Body {
            url: url.clone(),
            reason: e.to_string(),
        })
    }
}

/// The cache of this node's pods, shared by the refresh thread and the flows stage.
#[derive(Default)]
pub struct Pods {
    pods: RwLock<HashMap<String, PodMeta>>,
    wanted: AtomicBool,
    /// Fetches made, failed ones included.
    pub fetches: AtomicU64,
    /// Fetches that failed.
    pub failures: AtomicU64,
}

impl Pods {
    /// A cache holding `pods` (tests; the agent starts with [`Pods::watch`]).
    #[must_use]
    pub fn with(pods: HashMap<String, PodMeta>) -> Self {
        Self {
            pods: RwLock::new(pods),
            ..Self::default()
        }
    }

    /// Starts the refresh thread; the first fetch happens before it returns, so the pods
    /// already running are known from the first connection on (a failure is logged, and the
    /// thread tries again).
    #[must_use]
    pub fn watch(kubelet: Kubelet) -> Arc<Self> {
        let pods = Arc::new(Self::default());
        pods.refresh(&kubelet);
        let shared = Arc::clone(&pods);
        let spawned = std::thread::Builder::new()
            .name("kubelet".into())
            .spawn(move || {
                let mut last = Instant::now();
                loop {
                    std::thread::sleep(Duration::from_millis(250));
                    let since = last.elapsed();
                    let due = since >= kubelet.config.refresh
                        || (since >= MIN_REFRESH && shared.wanted.swap(false, Ordering::AcqRel));
                    if due {
                        shared.refresh(&kubelet);
                        last = Instant::now();
                    }
                }
            });
        if let Err(e) = spawned {
            tracing::warn!(error = %e, "kubelet refresh thread not started: pod names stay as first fetched");
        }
        pods
    }

    fn refresh(&self, kubelet: &Kubelet) {
        self.fetches.fetch_add(1, Ordering::Relaxed);
        match kubelet.fetch() {
            Ok(pods) => {
                tracing::debug!(pods = pods.len(), "kubelet pods fetched");
                if let Ok(mut map) = self.pods.write() {
                    *map = pods;
                }
            }
            Err(e) => {
                let n = self.failures.fetch_add(1, Ordering::Relaxed) + 1;
                tracing::warn!(error = %e, failures = n, "fetching pods from the kubelet failed: lines carry pod UIDs and container ids without names");
            }
        }
    }

    /// The Kubernetes part of a connection's identity for a process in `cgroup`'s pod: UID and
    /// container id always, names and labels when the pod is known (else a refresh is asked
    /// for).
    #[must_use]
    pub fn lookup(&self, cgroup: &PodCgroup) -> K8s {
        let mut k8s = K8s::from_cgroup(cgroup);
        self.name(&mut k8s);
        k8s
    }

    /// Fills in the pod's name, namespace, labels and the container's name from the cache;
    /// `false` (and a refresh asked for) when the pod is not in it yet.
    pub fn name(&self, k8s: &mut K8s) -> bool {
        let known = self.pods.read().ok().and_then(|map| {
            let pod = map.get(&k8s.pod_uid)?;
            k8s.pod = Some(pod.name.clone());
            k8s.namespace = Some(pod.namespace.clone());
            k8s.labels.clone_from(&pod.labels);
            k8s.container = k8s
                .container_id
                .as_ref()
                .and_then(|id| pod.containers.get(id).cloned());
            Some(())
        });
        if known.is_none() {
            self.wanted.store(true, Ordering::Release);
        }
        known.is_some()
    }
}

#[cfg(test)]
#[path = "pods_tests.rs"]
mod tests;
