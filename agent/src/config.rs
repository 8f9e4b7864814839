//! The agent's configuration: built once (from the command line today) and handed to the
//! stages, which never see the command line's own types.

use std::{path::PathBuf, time::Duration};

/// Which probe programs to attach.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum ProbeSet {
    /// Capture plaintext (the default), with every provider's programs.
    #[value(alias = "openssl")]
    Capture,
    /// Attach programs that do nothing: the floor for the probe-cost benchmark.
    Empty,
}

/// The pack stage and the limits around it (watching and `replay` alike).
#[derive(Clone, Debug)]
pub struct PackConfig {
    /// Directory of packs; `None`: the packs shipped with the agent.
    pub dir: Option<PathBuf>,
    /// Largest body kept per message for packs.
    pub max_body: usize,
    /// Pack worker threads.
    pub workers: usize,
    /// The pack workers' nice value (0 to 19): how far behind the watched programs they come
    /// when both want a CPU.
    pub nice: u8,
    /// The CPU the pack workers may take together, in CPUs (0: no budget).
    pub cpu_budget: f64,
    /// Moments queued for each pack worker.
    pub queue: usize,
    /// Time limit of one hook call.
    pub timeout: Duration,
    /// Memory limit of one pack instance, in MiB.
    pub memory_mib: u32,
    /// Where compiled packs are cached.
    pub state_dir: PathBuf,
}

/// The flows stage.
#[derive(Clone, Copy, Debug, Default)]
pub struct FlowConfig {
    /// Also hand on exchanges where the observed process is the server (by default only its
    /// calls as a client go to the packs and the output).
    pub server_side: bool,
}

/// Watching processes.
#[derive(Clone, Debug)]
pub struct WatchConfig {
    /// Processes asked for.
    pub pids: Vec<u32>,
    /// Also their descendants.
    pub follow: bool,
    /// Every process that maps a TLS library.
    pub all: bool,
    /// Exit when a process asked for has no TLS library, rather than wait for it to load one.
    pub require_tls: bool,
    /// Where to record every connection's bytes.
    pub record: Option<PathBuf>,
    /// The flows stage.
    pub flows: FlowConfig,
    /// The pack stage.
    pub packs: PackConfig,
    /// Kernel ring buffer size in bytes.
    pub ringbuf_size: u32,
    /// Real probes or the empty floor.
    pub probe_set: ProbeSet,
    /// Time between stats lines (zero: only the summary at exit).
    pub stats_interval: Duration,
    /// The node's kubelet, for pod names (`None`: pod UIDs and container ids only).
    pub kubelet: Option<KubeletConfig>,
    /// Where exchanges go.
    pub output: OutputConfig,
    /// The metrics and health endpoints.
    pub serve: ServeConfig,
}

/// What `replay` reads.
#[derive(Clone, Debug)]
pub enum ReplayInput {
    /// A recording directory.
    Recording(PathBuf),
    /// A HAR 1.2 file.
    Har(PathBuf),
}

/// Running packs offline.
#[derive(Clone, Debug)]
pub struct ReplayConfig {
    /// The input.
    pub input: ReplayInput,
    /// The flows stage.
    pub flows: FlowConfig,
    /// The pack stage.
    pub packs: PackConfig,
    /// Where exchanges go.
    pub output: OutputConfig,
}

/// One place finished exchanges go (`--output`).
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Output {
    /// Taskless NDJSON lines: on stdout, or to a file that rotates by size.
    Ndjson(Option<PathBuf>),
    /// One aligned, coloured line per exchange and a periodic summary, for a person.
    Pretty,
    /// OpenTelemetry logs and metrics over OTLP.
    Otlp,
}

/// OTLP transport.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum OtlpProtocol {
    /// gRPC (port 4317 by convention).
    Grpc,
    /// Protobuf over HTTP (port 4318 by convention).
    HttpProtobuf,
}

/// Where and how OTLP is sent; what is not set here comes from the standard
/// `OTEL_EXPORTER_OTLP_*` environment variables, then from the OpenTelemetry defaults.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct OtlpConfig {
    /// The collector's base URL (`--otlp-endpoint`).
    pub endpoint: Option<String>,
    /// The transport (`--otlp-protocol`, else `OTEL_EXPORTER_OTLP_PROTOCOL`).
    pub protocol: Option<OtlpProtocol>,
}

/// The sink stage: where exchanges go and the limits around it (watching and `replay`).
#[derive(Clone, Debug)]
pub struct OutputConfig {
    /// Every output, each fed on its own thread.
    pub outputs: Vec<Output>,
    /// A rotating NDJSON file grows to this many bytes before it is rotated.
    pub file_max_bytes: u64,
    /// Rotated NDJSON files kept beside the current one.
    pub file_keep: usize,
    /// Exchanges queued for each output; beyond it they are dropped and counted.
    pub queue: usize,
    /// OTLP settings (used when `outputs` holds `Otlp`).
    pub otlp: OtlpConfig,
    /// Distinct values kept per metric label (domain, method, status, ...); the rest are
    /// counted under one overflow value.
    pub max_label_values: usize,
    /// Time between the pretty output's summary lines.
    pub summary_interval: Duration,
}

/// The agent's own HTTP endpoints: Prometheus metrics and health.
#[derive(Clone, Debug, Default)]
pub struct ServeConfig {
    /// `/metrics`, `/healthz` and `/readyz` (`--metrics-addr`).
    pub metrics_addr: Option<std::net::SocketAddr>,
    /// `/healthz` and `/readyz` only (`--health-addr`).
    pub health_addr: Option<std::net::SocketAddr>,
}

/// Where the service account's files are mounted in a pod.
const SERVICE_ACCOUNT: &str = "/var/run/secrets/kubernetes.io/serviceaccount";

/// How to reach the kubelet.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct KubeletConfig {
    /// The kubelet's base URL (`https://node:10250`).
    pub url: String,
    /// CA certificates (PEM) the kubelet's serving certificate must chain to; `None`: the
    /// system's web roots.
    pub ca: Option<PathBuf>,
    /// A bearer token file, read again at every fetch (tokens are rotated).
    pub token: Option<PathBuf>,
    /// Accept any serving certificate.
    pub insecure: bool,
    /// Time between fetches.
    pub refresh: Duration,
}

impl KubeletConfig {
    /// The in-cluster default: inside a pod (`KUBERNETES_SERVICE_HOST` set) whose `NODE_NAME`
    /// is set (the DaemonSet sets it from `spec.nodeName`), `https://$NODE_NAME:10250` with the
    /// service account's token and CA.
    #[must_use]
    pub fn in_cluster(env: &dyn Fn(&str) -> Option<String>) -> Option<Self> {
        env("KUBERNETES_SERVICE_HOST")?;
        let node = env("NODE_NAME").filter(|n| !n.is_empty())?;
        Some(Self {
            url: format!("https://{node}:10250"),
            ca: Some(PathBuf::from(format!("{SERVICE_ACCOUNT}/ca.crt"))),
            token: Some(PathBuf::from(format!("{SERVICE_ACCOUNT}/token"))),
            insecure: false,
            refresh: Duration::from_secs(30),
        })
    }
}
