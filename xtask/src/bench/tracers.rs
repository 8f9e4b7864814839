//! The tracers `cargo xtask bench` puts on wrk: the agent (empty probes, no packs, core, every
//! shipped pack), bpftrace and bcc's sslsniff. Each is started on wrk's pid, waited for until its
//! probes are attached, and stopped after wrk has exited; what it saw is counted from its output.

use std::{
    path::{Path, PathBuf},
    process::{Command, Stdio},
    time::{Duration, Instant},
};

use anyhow::{Context as _, bail};

use crate::procs::{Guard, counter, summary_line};

/// Which pack directory the agent gets.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub enum Packs {
    /// An empty directory.
    None,
    /// Only the `core` pack.
    Core,
    /// Every shipped pack (`cargo xtask build-packs`).
    All,
}

/// One configuration of the benchmark.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub enum Tracer {
    /// Nothing attached.
    None,
    /// The agent's `--probe-set empty`: uprobes that do nothing, on the agent's functions.
    Floor,
    /// bcc's sslsniff (Python, perf buffer, up to 8 KiB copied per call).
    Sslsniff,
    /// A bpftrace script: uprobe + uretprobe on `SSL_write`/`SSL_read`, 64 bytes printed.
    Bpftrace,
    /// The agent with `--pid` on wrk.
    Agent(Packs),
}

impl Tracer {
    /// The row's name in the table.
    pub fn label(self) -> &'static str {
        match self {
            Self::None => "no tracer",
            Self::Floor => "empty uprobes (floor)",
            Self::Sslsniff => "bcc sslsniff",
            Self::Bpftrace => "bpftrace, 64 B per call",
            Self::Agent(Packs::None) => "taskless-agent, no packs",
            Self::Agent(Packs::Core) => "taskless-agent, core pack",
            Self::Agent(Packs::All) => "taskless-agent, shipped packs",
        }
    }
}

/// What the run's tracers need.
pub struct Setup {
    pub dir: PathBuf,
    pub agent: PathBuf,
    /// Pack directories by `Packs`: empty, core only, all.
    pub packs: [PathBuf; 3],
    /// The agent's state directory (compiled packs), kept for the run.
    pub state: PathBuf,
    /// The libssl file wrk loads.
    pub libssl: PathBuf,
    /// sslsniff's program, when it is installed and ran in the preflight.
    pub sslsniff: Option<PathBuf>,
}

/// A tracer attached to wrk.
pub struct Running {
    kind: Tracer,
    process: Guard,
    out: PathBuf,
    err: PathBuf,
    /// CPU seconds the tracer had used when the load started (its start-up is not counted).
    cpu_at_start: f64,
}

/// What a tracer reported after wrk exited.
pub struct Seen {
    /// User + system CPU seconds while the load ran (and while it drained afterwards).
    pub cpu: f64,
    /// Exchanges (the agent: complete lines) or `SSL_write` calls (the peers) it reported.
    pub events: u64,
    /// Events the tracer itself counted as lost or dropped.
    pub counted_lost: u64,
    /// The agent: exchanges reported with some of their packs skipped (`shed`), because the
    /// pack workers were behind.
    pub shed: Option<u64>,
}

/// The agent's counters of anything lost, dropped, skipped or unmatched (an exchange still in
/// flight when wrk stopped is `incomplete`, not lost, and is left out of `events`).
const AGENT_LOSS_COUNTERS: &[&str] = &[
    "undecodable",
    "resyncs",
    "skipped_bytes",
    "lost_bytes",
    "http_orphan_responses",
    "dropped_jobs",
    "orphan_jobs",
    "expired",
    "sink_ndjson_dropped",
    "kernel_ringbuf_full",
    "kernel_read_failed",
    "kernel_unmatched_return",
    "kernel_truncated_calls",
];

/// How many uprobes and uretprobes `pid` holds (`bpftool perf show`).
fn uprobes_of(pid: u32) -> usize {
    let Ok(out) = Command::new("bpftool")
        .args(["perf", "show", "--json"])
        .stderr(Stdio::null())
        .output()
    else {
        return 0;
    };
    let Ok(serde_json::Value::Array(items)) = serde_json::from_slice(&out.stdout) else {
        return 0;
    };
    items
        .iter()
        .filter(|i| {
            i["pid"].as_u64() == Some(u64::from(pid))
                && matches!(i["fd_type"].as_str(), Some("uprobe" | "uretprobe"))
        })
        .count()
}

/// The bpftrace program: the buffer's address at entry, up to 64 bytes of it printed at return
/// with the call's result, for wrk's calls only (`$1`).
fn bpftrace_script(libssl: &Path) -> String {
    let lib = libssl.display();
    let mut s = String::new();
    for (func, tag) in [("SSL_write", "W"), ("SSL_read", "R")] {
        s.push_str(&format!(
            "uprobe:{lib}:{func} /pid == $1/ {{ @{tag}[tid] = arg1; }}
uretprobe:{lib}:{func} /@{tag}[tid]/ {{
    $n = (int32)retval;
    if ($n > 0) {{
        if ($n > 64) {{ $n = 64; }}
        printf(\"{tag} %d %r\\n\", (int32)retval, buf(@{tag}[tid], $n));
    }}
    delete(@{tag}[tid]);
}}
"
        ));
    }
    s
}

fn spawn(cmd: &mut Command, out: &Path, err: &Path) -> anyhow::Result<Guard> {
    let child = cmd
        .stdin(Stdio::null())
        .stdout(std::fs::File::create(out)?)
        .stderr(std::fs::File::create(err)?)
        .spawn()
        .with_context(|| format!("starting {}", crate::util::display(cmd)))?;
    Ok(Guard(child))
}

/// Why a peer could not run: the first two and the last of the messages it printed (a Python
/// traceback's frames left out).
fn failure(out: &Path, err: &Path) -> String {
    let mut text = std::fs::read_to_string(err).unwrap_or_default();
    text.push_str(&std::fs::read_to_string(out).unwrap_or_default());
    let lines: Vec<&str> = text
        .lines()
        .filter(|l| {
            !l.trim().is_empty()
                && !l.starts_with(char::is_whitespace)
                && !l.starts_with("Traceback")
        })
        .collect();
    let mut picked: Vec<&str> = lines.iter().take(2).copied().collect();
    if let Some(last) = lines.last()
        && !picked.contains(last)
    {
        picked.push(last);
    }
    picked.join(" | ")
}

/// The result of starting a tracer.
pub enum Started {
    Running(Box<Running>),
    /// A peer that could not start here, with why.
    Failed(String),
}

/// Waits until `ready` holds, failing when the process exits first or `timeout` passes.
fn wait_ready(
    process: &mut Guard,
    timeout: Duration,
    mut ready: impl FnMut() -> bool,
) -> anyhow::Result<Result<(), String>> {
    let deadline = Instant::now() + timeout;
    loop {
        if ready() {
            return Ok(Ok(()));
        }
        if let Some(status) = process.0.try_wait()? {
            return Ok(Err(format!(
                "exited ({status}) before its probes were attached"
            )));
        }
        if Instant::now() > deadline {
            return Ok(Err(format!(
                "its probes were not attached after {} s",
                timeout.as_secs()
            )));
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

impl Setup {
    /// Starts `kind` on `wrk` and waits until its probes are attached. `None` for no tracer.
    pub fn start(&self, kind: Tracer, wrk: u32, step: usize) -> anyhow::Result<Option<Started>> {
        let out = self.dir.join(format!("tracer-{step}.out"));
        let err = self.dir.join(format!("tracer-{step}.err"));
        let (process, ready) = match kind {
            Tracer::None => return Ok(None),
            Tracer::Floor | Tracer::Agent(_) => {
                let packs = match kind {
                    Tracer::Agent(Packs::Core) => &self.packs[1],
                    Tracer::Agent(Packs::All) => &self.packs[2],
                    _ => &self.packs[0],
                };
                let mut cmd = Command::new(&self.agent);
                cmd.args(["--pid", &wrk.to_string(), "--packs"])
                    .arg(packs)
                    .arg("--state-dir")
                    .arg(&self.state)
                    .args(["--stats-interval", "0", "--output", "ndjson"])
                    .args(["--log", "info"]);
                if kind == Tracer::Floor {
                    cmd.args(["--probe-set", "empty"]);
                }
                let mut process = spawn(&mut cmd, &out, &err)?;
                // Compiling the packs the first time takes a while on a busy machine.
                let ready = wait_ready(&mut process, Duration::from_secs(600), || {
                    std::fs::read_to_string(&err).is_ok_and(|l| l.contains(" ready "))
                })?;
                if let Err(why) = ready {
                    bail!(
                        "the agent did not get ready: {why}\n{}",
                        std::fs::read_to_string(&err).unwrap_or_default()
                    );
                }
                (process, Ok(()))
            }
            Tracer::Bpftrace => {
                let script = self.dir.join("sslcopy.bt");
                std::fs::write(&script, bpftrace_script(&self.libssl))?;
                let mut process = spawn(
                    Command::new("bpftrace").arg(&script).arg(wrk.to_string()),
                    &out,
                    &err,
                )?;
                let pid = process.pid();
                let ready = wait_ready(&mut process, Duration::from_secs(120), || {
                    uprobes_of(pid) >= 4
                })?;
                (process, ready)
            }
            Tracer::Sslsniff => {
                let program = self
                    .sslsniff
                    .as_ref()
                    .context("sslsniff was not found runnable")?;
                let mut process = spawn(
                    Command::new(program)
                        .args(["-p", &wrk.to_string(), "--no-gnutls", "--no-nss"])
                        .env("PYTHONUNBUFFERED", "1"),
                    &out,
                    &err,
                )?;
                let pid = process.pid();
                let ready = wait_ready(&mut process, Duration::from_secs(120), || {
                    uprobes_of(pid) >= 4
                })?;
                (process, ready)
            }
        };
        if let Err(why) = ready {
            let printed = failure(&out, &err);
            drop(process);
            return Ok(Some(Started::Failed(format!("{why}: {printed}"))));
        }
        Ok(Some(Started::Running(Box::new(Running {
            kind,
            process,
            out,
            err,
            cpu_at_start: 0.0,
        }))))
    }

    /// Whether sslsniff runs here: started on this process, its probes attached within a minute.
    /// `Err` says why not and how to install what it needs.
    pub fn sslsniff_preflight(dir: &Path) -> Result<PathBuf, String> {
        const INSTALL: &str = "install it with `apt-get install bpfcc-tools linux-headers-$(uname -r)` (bcc compiles its probes at start with the running kernel's headers)";
        let Some(program) = ["sslsniff-bpfcc", "sslsniff"]
            .iter()
            .find_map(|p| super::nginx::which(p))
        else {
            return Err(format!("bcc's sslsniff is not installed; {INSTALL}"));
        };
        let (out, err) = (
            dir.join("sslsniff-check.out"),
            dir.join("sslsniff-check.err"),
        );
        let run = || -> anyhow::Result<Result<(), String>> {
            let mut process = spawn(
                Command::new(&program)
                    .args(["-p", &std::process::id().to_string()])
                    .args(["--no-gnutls", "--no-nss"])
                    .env("PYTHONUNBUFFERED", "1"),
                &out,
                &err,
            )?;
            let pid = process.pid();
            wait_ready(&mut process, Duration::from_secs(60), || {
                uprobes_of(pid) >= 4
            })
        };
        match run() {
            Ok(Ok(())) => Ok(program),
            Ok(Err(why)) => Err(format!(
                "{} could not run here: it {why} ({}); {INSTALL}",
                program.display(),
                failure(&out, &err)
            )),
            Err(e) => Err(format!(
                "{} could not start: {e:#}; {INSTALL}",
                program.display()
            )),
        }
    }
}

fn count_lines(path: &Path, keep: impl Fn(&str) -> bool) -> anyhow::Result<u64> {
    let text = std::fs::read(path).with_context(|| format!("reading {}", path.display()))?;
    Ok(String::from_utf8_lossy(&text)
        .lines()
        .filter(|l| keep(l))
        .count() as u64)
}

/// A number after `prefix` in one of `text`'s lines (`Lost 12 events`), summed over the lines.
fn sum_after(text: &str, prefix: &str) -> u64 {
    text.lines()
        .filter_map(|l| {
            let at = l.find(prefix)? + prefix.len();
            l[at..].split_whitespace().next()?.parse::<u64>().ok()
        })
        .sum()
}

impl Running {
    /// The tracer's pid.
    pub fn pid(&self) -> u32 {
        self.process.pid()
    }

    /// Marks the start of the load: the CPU the tracer used so far is not counted.
    pub fn load_starts(&mut self) {
        self.cpu_at_start = crate::procs::cpu_seconds(self.pid());
    }

    /// Stops the tracer once wrk has exited (the agent stops by itself when its process exits;
    /// the peers get SIGINT once they had a second to read what is left) and counts what it saw.
    pub fn finish(mut self) -> anyhow::Result<Seen> {
        let cpu_total = if let Tracer::Agent(_) | Tracer::Floor = self.kind {
            match self.process.wait_cpu(Duration::from_secs(300))? {
                Some(cpu) => cpu,
                None => {
                    self.process.interrupt();
                    self.process
                        .wait_cpu(Duration::from_secs(60))?
                        .context("the agent did not stop")?
                }
            }
        } else {
            std::thread::sleep(Duration::from_secs(1));
            self.process.interrupt();
            self.process
                .wait_cpu(Duration::from_secs(60))?
                .with_context(|| format!("{:?} did not stop after SIGINT", self.kind))?
        };
        let cpu = (cpu_total - self.cpu_at_start).max(0.0);
        let err = std::fs::read_to_string(&self.err).unwrap_or_default();
        let mut shed = None;
        let (events, counted_lost) = match self.kind {
            Tracer::None => (0, 0),
            Tracer::Floor | Tracer::Agent(_) => {
                let summary = summary_line(&err)
                    .with_context(|| format!("no summary line in the agent's log:\n{err}"))?;
                let lost = AGENT_LOSS_COUNTERS
                    .iter()
                    .map(|c| counter(summary, c).unwrap_or(0))
                    .sum();
                shed = counter(summary, "shed");
                let lines = count_lines(&self.out, |l| !l.contains("\"complete\":false"))?;
                (lines, lost)
            }
            Tracer::Bpftrace => {
                let out = std::fs::read_to_string(&self.out).unwrap_or_default();
                let writes = count_lines(&self.out, |l| l.starts_with("W "))?;
                (writes, sum_after(&out, "Lost ") + sum_after(&err, "Lost "))
            }
            Tracer::Sslsniff => {
                let out = std::fs::read_to_string(&self.out).unwrap_or_default();
                let writes = count_lines(&self.out, |l| l.starts_with("WRITE/SEND"))?;
                (
                    writes,
                    sum_after(&out, "Possibly lost ") + sum_after(&err, "Possibly lost "),
                )
            }
        };
        let _ = std::fs::remove_file(&self.out);
        let _ = std::fs::remove_file(&self.err);
        Ok(Seen {
            cpu,
            events,
            counted_lost,
            shed,
        })
    }
}
