//! Command-line interface.

use std::{path::PathBuf, time::Duration};

use clap::{Args, Parser, Subcommand};

use crate::config::{
    FlowConfig, KubeletConfig, OtlpConfig, OtlpProtocol, Output, OutputConfig, PackConfig,
    ProbeSet, ReplayConfig, ReplayInput, ServeConfig, WatchConfig,
};

/// Watches programs' HTTPS calls to third-party APIs through eBPF and runs Taskless packs over
/// every exchange. Each exchange goes to the outputs: one readable line on a terminal, NDJSON
/// when stdout is not a terminal, and/or OpenTelemetry (OTLP) and Prometheus. Logs go to
/// stderr.
#[derive(Debug, Parser)]
#[command(name = "taskless-agent", version, about, long_about = None)]
#[command(args_conflicts_with_subcommands = true)]
#[command(after_help = CONFIGURATION)]
pub struct Cli {
    /// What to do instead of watching processes.
    #[command(subcommand)]
    pub command: Option<Command>,

    /// Options for watching processes (the default mode).
    #[command(flatten)]
    pub run: RunArgs,

    /// Log filter for stderr (tracing's EnvFilter syntax, e.g. `info`, `taskless_agent=debug`).
    #[arg(long, global = true, default_value = "info")]
    pub log: String,

    /// Configuration file (TOML): any option of the command line, by its long name. Default:
    /// /etc/taskless-agent/config.toml when it exists.
    #[arg(long, global = true, value_name = "FILE")]
    pub config: Option<PathBuf>,
}

/// How options are also set from a file and the environment (`settings`).
const CONFIGURATION: &str = "\
Every option can also be set in the configuration file (--config FILE, default \
/etc/taskless-agent/config.toml if it exists), with its long name as the key (`state_dir = \"/x\"`, \
`all = true`, `pid = [1, 2]`), or in an environment variable TASKLESS_<NAME> (TASKLESS_STATE_DIR, \
TASKLESS_ALL=true, TASKLESS_PID=1,2; also TASKLESS_LOG_LEVEL for --log and TASKLESS_DIRECTORY \
for --packs). The command line wins over the environment, which wins over the file.";

/// Subcommands.
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Work with packs offline.
    #[command(subcommand)]
    Pack(PackCommand),
    /// Run the packs offline over a recording made with `--record DIR`, or over a HAR file,
    /// printing the same NDJSON lines as a live run. Needs neither root nor eBPF.
    Replay(ReplayArgs),
    /// Check, before anything is attached, that the agent can run here: kernel, BTF, ring
    /// buffer, uprobes, capabilities, packs. One line each; exits 1 when it could not run.
    Check(CheckArgs),
}

/// Options of `check`.
#[derive(Debug, Args)]
pub struct CheckArgs {
    /// The packs to load, as for watching.
    #[command(flatten)]
    pub pack: PackArgs,
}

/// Options of `replay`.
#[derive(Debug, Args)]
#[command(group(clap::ArgGroup::new("input").required(true).args(["dir", "har"])))]
pub struct ReplayArgs {
    /// A recording directory written by `--record DIR`.
    #[arg(value_name = "DIR")]
    pub dir: Option<PathBuf>,

    /// A HAR 1.2 file instead of a recording.
    #[arg(long, value_name = "FILE")]
    pub har: Option<PathBuf>,

    /// Pack and limit options, as for watching.
    #[command(flatten)]
    pub pack: PackArgs,

    /// Which exchanges to report, as for watching.
    #[command(flatten)]
    pub flows: FlowArgs,

    /// Output options, as for watching.
    #[command(flatten)]
    pub output: OutputArgs,
}

/// `pack` subcommands.
#[derive(Debug, Subcommand)]
pub enum PackCommand {
    /// Run a pack over a Taskless fixture and report each test (exit 1 if any fails).
    Check {
        /// The fixture: a request, a response and JSONPath tests over the NDJSON output.
        #[arg(long)]
        fixture: PathBuf,
        /// The pack's manifest.json.
        #[arg(long)]
        manifest: PathBuf,
        /// The pack's Wasm module.
        #[arg(long)]
        wasm: PathBuf,
    },
    /// List the packs in a directory and whether they load.
    List {
        /// The packs directory (`<dir>/**/manifest.json`).
        dir: PathBuf,
    },
}

/// Options for watching processes.
#[derive(Debug, Args)]
pub struct RunArgs {
    /// Process to watch; repeat for several.
    #[arg(long = "pid", value_name = "PID", conflicts_with = "all")]
    pub pids: Vec<u32>,

    /// Also watch the children of the watched processes, and theirs: found when they start a
    /// program (exec) or load a library, and by a scan every second.
    #[arg(long, requires = "pids")]
    pub follow: bool,

    /// Watch every process on the host that maps a TLS library, including processes in other
    /// mount namespaces (containers) and processes started later. Probes are attached once per
    /// library file, for every process that maps it.
    #[arg(long)]
    pub all: bool,

    /// Exit with an error when a process given with --pid has no TLS library loaded, instead of
    /// waiting for it to load one (Python loads OpenSSL at `import ssl`, other programs with
    /// `dlopen`).
    #[arg(long, requires = "pids")]
    pub require_tls: bool,

    /// Also write every connection's captured bytes to DIR (one JSON-lines file per
    /// connection, see docs/record-format.md) for `taskless-agent replay DIR`.
    #[arg(long, value_name = "DIR")]
    pub record: Option<PathBuf>,

    /// Pack and limit options.
    #[command(flatten)]
    pub pack: PackArgs,

    /// Which exchanges to report.
    #[command(flatten)]
    pub flows: FlowArgs,

    /// Kernel ring buffer size (a power of two, at least 4096).
    #[arg(long, value_name = "BYTES", default_value_t = 16 * 1024 * 1024)]
    pub ringbuf_size: u32,

    /// Which probes to attach: `capture` (the real ones) or `empty` (programs that do nothing,
    /// at the same places, only for measuring the probes' own cost).
    #[arg(long, value_name = "SET", default_value = "capture", hide = true)]
    pub probe_set: ProbeSet,

    /// Seconds between stats lines on stderr (0: only at exit).
    #[arg(long, value_name = "SECS", default_value_t = 60)]
    pub stats_interval: u64,

    /// Pod names, namespaces and labels from the node's kubelet.
    #[command(flatten)]
    pub kubelet: KubeletArgs,

    /// Output options.
    #[command(flatten)]
    pub output: OutputArgs,

    /// Serve Prometheus metrics (`/metrics`: every counter of the stats line, per-pack counters
    /// and exchange metrics) and the health endpoints (`/healthz`, `/readyz`) on ADDR, e.g.
    /// `0.0.0.0:9464`.
    #[arg(long, value_name = "ADDR", env = "TASKLESS_METRICS_ADDR")]
    pub metrics_addr: Option<std::net::SocketAddr>,

    /// Serve only the health endpoints on ADDR: `/healthz` (200 while the capture loop runs)
    /// and `/readyz` (200 once probes and packs are loaded and capture has started).
    #[arg(long, value_name = "ADDR", env = "TASKLESS_HEALTH_ADDR")]
    pub health_addr: Option<std::net::SocketAddr>,
}

/// Where exchanges go, shared by watching and `replay`.
#[derive(Debug, Args)]
pub struct OutputArgs {
    /// An output; repeat for several, each fed on its own thread through a bounded queue (a slow
    /// one drops and counts, never stalls capture): `pretty` (aligned, coloured lines and a
    /// summary every few seconds), `ndjson` (Taskless NDJSON on stdout), `ndjson=FILE` (to a
    /// file rotated by size), `otlp` (OpenTelemetry logs and metrics), `none`. Default: `pretty`
    /// when stdout is a terminal, else `ndjson`.
    #[arg(long = "output", value_name = "OUTPUT", value_parser = parse_output)]
    pub outputs: Vec<OutputChoice>,

    /// An NDJSON file is rotated (FILE.1, FILE.2, ...) when it reaches this size.
    #[arg(long, value_name = "BYTES", default_value_t = 100 * 1024 * 1024)]
    pub rotate_size: u64,

    /// Rotated NDJSON files kept beside the current one.
    #[arg(long, value_name = "N", default_value_t = 5)]
    pub rotate_count: usize,

    /// Exchanges queued for each output; beyond this they are dropped and counted.
    #[arg(long, value_name = "N", default_value_t = 8192)]
    pub output_queue: usize,

    /// Send OpenTelemetry logs and metrics to this collector (adds the `otlp` output), e.g.
    /// `http://collector:4318` (HTTP/protobuf) or `http://collector:4317` with `--otlp-protocol
    /// grpc`. Without it, `--output otlp` reads the standard `OTEL_EXPORTER_OTLP_ENDPOINT`
    /// (and the per-signal `..._LOGS_ENDPOINT`, `..._METRICS_ENDPOINT`), then the OpenTelemetry
    /// default. Headers, timeouts and compression come from the standard
    /// `OTEL_EXPORTER_OTLP_*` variables, the metrics interval from `OTEL_METRIC_EXPORT_INTERVAL`.
    #[arg(long, value_name = "URL")]
    pub otlp_endpoint: Option<String>,

    /// OTLP transport: `grpc` or `http/protobuf` (the OpenTelemetry default).
    #[arg(long, value_name = "PROTOCOL", env = "OTEL_EXPORTER_OTLP_PROTOCOL", value_parser = parse_protocol)]
    pub otlp_protocol: Option<OtlpProtocol>,

    /// Distinct values kept per metric label (domain, method, status, model, dimension);
    /// further values are counted under `_other`, and the overflow is counted.
    #[arg(long, value_name = "N", default_value_t = 100)]
    pub max_label_values: usize,

    /// Seconds between the summary lines of the `pretty` output.
    #[arg(long, value_name = "SECS", default_value_t = 5)]
    pub summary_interval: u64,
}

/// One `--output` as written.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum OutputChoice {
    /// An output.
    Output(Output),
    /// `none`: no output of exchanges (metrics or health only).
    None,
}

fn parse_output(s: &str) -> Result<OutputChoice, String> {
    match s.split_once('=') {
        None => match s {
            "ndjson" => Ok(OutputChoice::Output(Output::Ndjson(None))),
            "pretty" => Ok(OutputChoice::Output(Output::Pretty)),
            "otlp" => Ok(OutputChoice::Output(Output::Otlp)),
            "none" => Ok(OutputChoice::None),
            _ => Err(format!(
                "unknown output {s:?}: expected pretty, ndjson, ndjson=FILE, otlp or none"
            )),
        },
        Some(("ndjson", "")) => Err("ndjson= needs a file path".into()),
        Some(("ndjson", path)) => Ok(OutputChoice::Output(Output::Ndjson(Some(path.into())))),
        Some((kind, _)) => Err(format!("{kind:?} takes no file: only ndjson=FILE does")),
    }
}

fn parse_protocol(s: &str) -> Result<OtlpProtocol, String> {
    match s {
        "grpc" => Ok(OtlpProtocol::Grpc),
        "http/protobuf" | "http" => Ok(OtlpProtocol::HttpProtobuf),
        "http/json" => Err("OTLP http/json is not supported: use grpc or http/protobuf".into()),
        _ => Err(format!(
            "unknown OTLP protocol {s:?}: expected grpc or http/protobuf"
        )),
    }
}

impl OutputArgs {
    /// The configuration these options ask for; `terminal` says whether stdout is one (it picks
    /// the default output).
    #[must_use]
    pub fn config(&self, terminal: bool) -> OutputConfig {
        let mut outputs: Vec<Output> = self
            .outputs
            .iter()
            .filter_map(|o| match o {
                OutputChoice::Output(o) => Some(o.clone()),
                OutputChoice::None => None,
            })
            .collect();
        if self.outputs.is_empty() {
            outputs.push(if terminal {
                Output::Pretty
            } else {
                Output::Ndjson(None)
            });
        }
        if self.otlp_endpoint.is_some() && !outputs.contains(&Output::Otlp) {
            outputs.push(Output::Otlp);
        }
        let mut seen = Vec::new();
        outputs.retain(|o| {
            let new = !seen.contains(o);
            if new {
                seen.push(o.clone());
            }
            new
        });
        OutputConfig {
            outputs,
            file_max_bytes: self.rotate_size,
            file_keep: self.rotate_count,
            queue: self.output_queue,
            otlp: OtlpConfig {
                endpoint: self.otlp_endpoint.clone(),
                protocol: self.otlp_protocol,
            },
            max_label_values: self.max_label_values,
            summary_interval: Duration::from_secs(self.summary_interval.max(1)),
        }
    }
}

/// Whether stdout is a terminal (the default output is `pretty` then).
#[must_use]
pub fn stdout_is_terminal() -> bool {
    std::io::IsTerminal::is_terminal(&std::io::stdout())
}

/// Where the node's kubelet is, for `source.k8s`.
#[derive(Debug, Args)]
pub struct KubeletArgs {
    /// The node's kubelet (`https://NODE:10250`), asked for `/pods` to name the pod, namespace,
    /// labels and container of processes in pods. Default inside a pod: https://$NODE_NAME:10250
    /// with the service account's token and CA. Without it, `source.k8s` has the pod UID and
    /// container id from the cgroup only.
    #[arg(long, value_name = "URL")]
    pub kubelet: Option<String>,

    /// CA certificates (PEM) for the kubelet's serving certificate (default in a pod: the
    /// service account's ca.crt; else the usual web roots).
    #[arg(long, value_name = "FILE")]
    pub kubelet_ca: Option<PathBuf>,

    /// A bearer token file for the kubelet, read at every request (default in a pod: the
    /// service account's token).
    #[arg(long, value_name = "FILE")]
    pub kubelet_token: Option<PathBuf>,

    /// Accept the kubelet's certificate without verifying it (kubelets whose self-signed
    /// serving certificate no CA vouches for).
    #[arg(long)]
    pub kubelet_insecure: bool,

    /// Seconds between two fetches of the kubelet's pods (sooner when an unknown pod appears).
    #[arg(long, value_name = "SECS", default_value_t = 30)]
    pub kubelet_refresh: u64,
}

impl KubeletArgs {
    /// The kubelet to ask: `--kubelet`, else the in-cluster default inside a pod, else none.
    #[must_use]
    pub fn config(&self) -> Option<KubeletConfig> {
        let env = |name: &str| std::env::var(name).ok();
        let mut config = match &self.kubelet {
            Some(url) => KubeletConfig {
                url: url.clone(),
                ca: None,
                token: None,
                insecure: false,
                refresh: Duration::from_secs(30),
            },
            None => KubeletConfig::in_cluster(&env)?,
        };
        if let Some(ca) = &self.kubelet_ca {
            config.ca = Some(ca.clone());
        }
        if let Some(token) = &self.kubelet_token {
            config.token = Some(token.clone());
        }
        config.insecure = self.kubelet_insecure;
        config.refresh = Duration::from_secs(self.kubelet_refresh.max(1));
        Some(config)
    }
}

/// Which exchanges are reported, shared by watching and `replay`.
#[derive(Debug, Args)]
pub struct FlowArgs {
    /// Also report the exchanges of connections where the process is the server (a local
    /// TLS server answering requests). By default only the process's own calls, as a client,
    /// go to the packs and the output; the others are counted (`server_exchanges`).
    #[arg(long)]
    pub server_side: bool,
}

impl FlowArgs {
    /// The configuration these options ask for.
    #[must_use]
    pub fn config(&self) -> FlowConfig {
        FlowConfig {
            server_side: self.server_side,
        }
    }
}

/// Options for the packs and the limits around them, shared by watching and `replay`.
#[derive(Debug, Args)]
pub struct PackArgs {
    /// Directory of packs (Taskless pre2 layout: `<dir>/**/manifest.json` with `config.json` and
    /// `pack.wasm` beside it). Default: the packs shipped with the agent. While watching, a
    /// change in it is loaded without a restart.
    #[arg(long, value_name = "DIR")]
    pub packs: Option<PathBuf>,

    /// Largest body kept per message for packs; longer bodies are cut and flagged truncated.
    #[arg(long, value_name = "BYTES", default_value_t = 1024 * 1024)]
    pub max_body: usize,

    /// Pack worker threads (each has its own instance of every pack).
    #[arg(long, value_name = "N", default_value_t = default_workers())]
    pub workers: usize,

    /// Nice value of the pack worker threads, 0 to 19. When the watched programs and the packs
    /// both want a CPU, the programs come first: the workers fall behind and skip their
    /// costliest packs (named in each line's `skipped`) rather than slow the programs down.
    /// Capture and the outputs keep the agent's own priority, and a worker never gets a lower
    /// nice value than the agent has. 0 runs packs beside the programs.
    #[arg(long, value_name = "N", default_value_t = 10, value_parser = clap::value_parser!(u8).range(0..=19))]
    pub pack_nice: u8,

    /// Most CPU the pack workers take together, in CPUs, averaged over about a second (0.5:
    /// half of one CPU). While they spend more, they skip their costliest packs for the
    /// exchanges they take (named in each line's `skipped`; counted in `shed_budget`), the more
    /// the further over they are, until they are back under it. 0: no budget (the workers take
    /// any CPU the programs leave; `replay` has none). Default: 5% of the machine's CPUs, at
    /// least a quarter of one.
    #[arg(long, value_name = "CPUS", default_value_t = default_pack_cpu(), value_parser = parse_cpus)]
    pub pack_cpu: f64,

    /// Events queued for each pack worker. From a quarter full on, a worker skips its costliest
    /// packs for the exchanges it takes next (each line lists them in `skipped`); only a full
    /// queue drops events (counted), so a slow pack never stalls capture (`replay` waits
    /// instead and skips nothing).
    #[arg(long, value_name = "N", default_value_t = 4096)]
    pub queue: usize,

    /// Per-call time limit for a pack hook, in milliseconds.
    #[arg(long, value_name = "MS", default_value_t = 100)]
    pub pack_timeout_ms: u64,

    /// Memory limit per pack instance, in MiB.
    #[arg(long, value_name = "MIB", default_value_t = 32)]
    pub pack_memory_mib: u32,

    /// Where the agent keeps state: the packs' compiled code, so restarts and extra workers do
    /// not compile them again. Created if missing; when it cannot be used, packs are compiled
    /// in memory instead.
    #[arg(long, value_name = "DIR", default_value = "/var/lib/taskless-agent")]
    pub state_dir: PathBuf,
}

impl RunArgs {
    /// The configuration these options ask for.
    #[must_use]
    pub fn config(&self) -> WatchConfig {
        WatchConfig {
            pids: self.pids.clone(),
            follow: self.follow,
            all: self.all,
            require_tls: self.require_tls,
            record: self.record.clone(),
            flows: self.flows.config(),
            packs: self.pack.config(),
            ringbuf_size: self.ringbuf_size,
            probe_set: self.probe_set,
            stats_interval: Duration::from_secs(self.stats_interval),
            kubelet: self.kubelet.config(),
            output: self.output.config(stdout_is_terminal()),
            serve: ServeConfig {
                metrics_addr: self.metrics_addr,
                health_addr: self.health_addr,
            },
        }
    }
}

impl ReplayArgs {
    /// The configuration these options ask for.
    #[must_use]
    pub fn config(&self) -> ReplayConfig {
        ReplayConfig {
            // clap requires one of the two.
            input: match (&self.har, &self.dir) {
                (Some(har), _) => ReplayInput::Har(har.clone()),
                (None, dir) => ReplayInput::Recording(dir.clone().unwrap_or_default()),
            },
            flows: self.flows.config(),
            packs: self.pack.config(),
            output: self.output.config(stdout_is_terminal()),
        }
    }
}

impl PackArgs {
    /// The configuration these options ask for.
    #[must_use]
    pub fn config(&self) -> PackConfig {
        PackConfig {
            dir: self.packs.clone(),
            max_body: self.max_body,
            workers: self.workers,
            nice: self.pack_nice,
            cpu_budget: self.pack_cpu,
            queue: self.queue,
            timeout: Duration::from_millis(self.pack_timeout_ms),
            memory_mib: self.pack_memory_mib,
            state_dir: self.state_dir.clone(),
        }
    }
}

/// A CPU budget: a finite number of CPUs, 0 or more.
fn parse_cpus(s: &str) -> Result<f64, String> {
    match s.parse::<f64>() {
        Ok(v) if v.is_finite() && v >= 0.0 => Ok(v),
        _ => Err(format!(
            "`{s}` is not a number of CPUs (0 or more, e.g. 0.5)"
        )),
    }
}

/// 5% of the machine's CPUs, at least a quarter of one, in hundredths.
fn default_pack_cpu() -> f64 {
    let cpus = std::thread::available_parallelism().map_or(1, std::num::NonZero::get);
    // A machine's CPUs are far fewer than 2^52.
    #[allow(clippy::cast_precision_loss)]
    let share = (cpus as f64 * 5.0).round() / 100.0;
    share.max(0.25)
}

fn default_workers() -> usize {
    std::thread::available_parallelism().map_or(1, |n| n.get().min(4))
}
