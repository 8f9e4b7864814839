//! `cargo xtask soak`: many HTTPS calls from a real client through the release agent with the
//! shipped packs, checked against a run of the same client without the agent.
//!
//! The client (`soak_client.py`, Python's `http.client` over OpenSSL) keeps its connections
//! alive, records the SHA-256 of every response body and holds `held` further connections open,
//! idle, for the first half of the run. The soak fails unless: the client's results (status and
//! checksum of every call) are byte-identical with and without the agent, every call is one
//! output line, every loss counter of the agent's summary is 0, and the agent's resident memory
//! at the end is at most 10% above what it was after warm-up (the first tenth of the calls).

use std::{
    io::Write as _,
    path::{Path, PathBuf},
    process::{Command, Stdio},
    sync::mpsc,
    time::{Duration, Instant},
};

use anyhow::{Context as _, bail};

use crate::{
    procs::{Guard, counter, cpu_seconds, expect_line, lines_of, rss_kib, summary_line},
    util,
};

const CLIENT: &str = include_str!("soak_client.py");

/// Counters that must stay 0: anything lost, dropped, skipped or left unmatched.
const LOSS_COUNTERS: &[&str] = &[
    "undecodable",
    "resyncs",
    "desyncs",
    "skipped_bytes",
    "lost_bytes",
    "incomplete",
    "http_orphan_responses",
    "dropped_jobs",
    "orphan_jobs",
    "expired",
    "kernel_ringbuf_full",
    "kernel_read_failed",
    "kernel_unmatched_return",
    "kernel_truncated_calls",
];

/// Largest growth of the agent's RSS from warm-up to the end.
const MAX_GROWTH: f64 = 0.10;

/// What to run.
pub struct Options {
    /// Calls the workers make.
    pub requests: u64,
    /// Worker connections (one thread each).
    pub connections: u32,
    /// Connections held open, idle, for the first half of the run.
    pub held: u32,
    /// Use the development build instead of building a release agent.
    pub debug: bool,
}

/// Raises this process's open-file limit to its hard limit (children inherit it): the server
/// holds every connection open.
fn raise_nofile() {
    let mut lim = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: valid pointers to a local struct.
    unsafe {
        if libc::getrlimit(libc::RLIMIT_NOFILE, &raw mut lim) == 0 {
            lim.rlim_cur = lim.rlim_max;
            libc::setrlimit(libc::RLIMIT_NOFILE, &raw const lim);
        }
    }
}

/// The soak's figures.
struct Figures {
    calls: u64,
    seconds: f64,
    lines: u64,
    rss_start: u64,
    rss_peak: u64,
    rss_end: u64,
    /// Where the agent's resident memory was at its peak.
    at_peak: Option<crate::soak_memory::Breakdown>,
    agent_cpu: f64,
}

struct Ctx<'a> {
    dir: &'a Path,
    client: PathBuf,
    host_port: (String, String),
    ca: PathBuf,
    options: &'a Options,
}

impl Ctx<'_> {
    fn start_client(&self, out: &Path) -> anyhow::Result<(Guard, mpsc::Receiver<String>)> {
        let mut child = Guard(
            Command::new("python3")
                .arg(&self.client)
                .args([&self.host_port.0, &self.host_port.1])
                .arg(&self.ca)
                .args([
                    self.options.requests.to_string(),
                    self.options.connections.to_string(),
                    self.options.held.to_string(),
                ])
                .arg(out)
                .stdin(Stdio::piped())
                .stdout(Stdio::piped())
                .spawn()
                .context("python3")?,
        );
        let rx = lines_of(&mut child.0)?;
        expect_line(&rx, "ready", Duration::from_secs(300))?;
        Ok((child, rx))
    }
}

fn say(child: &mut Guard, what: &str) -> anyhow::Result<()> {
    let stdin = child.0.stdin.as_mut().context("no stdin")?;
    writeln!(stdin, "{what}")?;
    Ok(())
}

/// The client's run without the agent: its results file.
fn baseline(ctx: &Ctx<'_>) -> anyhow::Result<PathBuf> {
    let out = ctx.dir.join("without-agent.txt");
    let (mut client, rx) = ctx.start_client(&out)?;
    let started = Instant::now();
    say(&mut client, "go")?;
    let done = expect_line(&rx, "done", Duration::from_secs(3600))?;
    say(&mut client, "exit")?;
    eprintln!(
        "soak: without the agent: {done} in {:.1} s",
        started.elapsed().as_secs_f64()
    );
    Ok(out)
}

fn with_agent(ctx: &Ctx<'_>, agent_bin: &Path, packs: &Path) -> anyhow::Result<(PathBuf, Figures)> {
    let out = ctx.dir.join("with-agent.txt");
    let (mut client, rx) = ctx.start_client(&out)?;
    let agent_out = ctx.dir.join("agent.ndjson");
    let agent_err = ctx.dir.join("agent.log");
    let mut agent = Guard(
        Command::new(agent_bin)
            .args(["--pid", &client.0.id().to_string(), "--packs"])
            .arg(packs)
            .args(["--stats-interval", "10"])
            .env("TASKLESS_LOG", "info")
            .stdin(Stdio::null())
            .stdout(std::fs::File::create(&agent_out)?)
            .stderr(std::fs::File::create(&agent_err)?)
            .spawn()
            .with_context(|| format!("starting {}", agent_bin.display()))?,
    );
    let agent_pid = agent.0.id();
    let deadline = Instant::now() + Duration::from_secs(120);
    while !std::fs::read_to_string(&agent_err)?.contains(" ready ") {
        if Instant::now() > deadline || agent.0.try_wait()?.is_some() {
            bail!(
                "the agent did not get ready:\n{}",
                std::fs::read_to_string(&agent_err)?
            );
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    let started = Instant::now();
    let cpu_before = cpu_seconds(agent_pid);
    say(&mut client, "go")?;
    let warm_up = (ctx.options.requests / 10 / 1000).max(1) * 1000;
    let (mut rss_start, mut rss_peak, mut rss_end) = (None, 0, 0);
    let mut at_peak = None;
    let done = loop {
        match rx.recv_timeout(Duration::from_millis(500)) {
            Ok(line) if line.starts_with("done") => break line,
            Ok(line) => {
                if let Some(n) = line
                    .strip_prefix("progress ")
                    .and_then(|n| n.parse::<u64>().ok())
                    && n >= warm_up
                    && rss_start.is_none()
                {
                    rss_start = rss_kib(agent_pid);
                }
            }
            Err(mpsc::RecvTimeoutError::Timeout) => {}
            Err(mpsc::RecvTimeoutError::Disconnected) => bail!("the client exited early"),
        }
        if let Some(rss) = rss_kib(agent_pid) {
            rss_end = rss;
            if rss_start.is_some() && rss > rss_peak {
                rss_peak = rss;
                at_peak = crate::soak_memory::of(agent_pid).or(at_peak);
            }
        }
    };
    let seconds = started.elapsed().as_secs_f64();
    let agent_cpu = cpu_seconds(agent_pid) - cpu_before;
    eprintln!("soak: with the agent: {done} in {seconds:.1} s");
    say(&mut client, "exit")?;
    // The agent stops by itself once the client has exited.
    let deadline = Instant::now() + Duration::from_secs(300);
    while agent.0.try_wait()?.is_none() {
        if Instant::now() > deadline {
            bail!("the agent did not stop after the client exited");
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    let log = std::fs::read_to_string(&agent_err)?;
    let summary = summary_line(&log)
        .with_context(|| format!("no summary line in the agent's log:\n{log}"))?;
    let mut lost = Vec::new();
    for name in LOSS_COUNTERS {
        match counter(summary, name) {
            Some(0) => {}
            Some(v) => lost.push(format!("{name}={v}")),
            None => lost.push(format!("{name} missing")),
        }
    }
    if !lost.is_empty() {
        bail!("loss counters are not 0: {}\n{summary}", lost.join(" "));
    }
    let lines = std::fs::read_to_string(&agent_out)?.lines().count() as u64;
    let calls = ctx.options.requests + 2 * u64::from(ctx.options.held);
    Ok((
        out,
        Figures {
            calls,
            seconds,
            lines,
            rss_start: rss_start.unwrap_or(rss_end),
            rss_peak: rss_peak.max(rss_end),
            rss_end,
            at_peak,
            agent_cpu,
        },
    ))
}

/// Runs the soak (see the module documentation).
pub fn run(root: &Path, options: &Options) -> anyhow::Result<()> {
    raise_nofile();
    let profile = if options.debug { "debug" } else { "release" };
    let mut build = util::cargo();
    build.args([
        "build",
        "-p",
        "taskless-agent",
        "-p",
        "taskless-e2e",
        "--bin",
        "taskless-agent",
        "--bin",
        "taskless-testapi",
    ]);
    if !options.debug {
        build.arg("--release");
    }
    util::run(&mut build)?;
    crate::build_packs(root)?;
    let packs_dir = util::target_dir(root).join("packs");
    let bin = util::target_dir(root).join(profile);
    let dir = std::env::temp_dir().join(format!("taskless-soak-{}", std::process::id()));
    std::fs::create_dir_all(&dir)?;
    soak(&dir, &bin, &packs_dir, options)?;
    // Kept when the soak fails: the client's results and the agent's output and log are there.
    let _ = std::fs::remove_dir_all(&dir);
    Ok(())
}

fn soak(dir: &Path, bin: &Path, packs: &Path, options: &Options) -> anyhow::Result<()> {
    let ca = dir.join("ca.pem");
    let mut api = Guard(
        Command::new(bin.join("taskless-testapi"))
            .arg("--ca-file")
            .arg(&ca)
            .stdout(Stdio::piped())
            .spawn()
            .context("starting the test API")?,
    );
    let api_rx = lines_of(&mut api.0)?;
    let listening = expect_line(&api_rx, "listening", Duration::from_secs(30))?;
    let port = listening
        .rsplit(':')
        .next()
        .context("the test API's port")?
        .to_owned();
    let client = dir.join("soak_client.py");
    std::fs::write(&client, CLIENT)?;
    let ctx = Ctx {
        dir,
        client,
        host_port: ("localhost".to_owned(), port),
        ca,
        options,
    };
    eprintln!(
        "soak: {} calls on {} connections, {} more held open; agent {}, packs {}",
        options.requests,
        options.connections,
        options.held,
        bin.join("taskless-agent").display(),
        packs.display()
    );
    let without = baseline(&ctx)?;
    let (with, f) = with_agent(&ctx, &bin.join("taskless-agent"), packs)?;
    let same = std::fs::read(&without)? == std::fs::read(&with)?;
    #[allow(clippy::cast_precision_loss)]
    let growth = (f.rss_end as f64 - f.rss_start as f64) / f.rss_start.max(1) as f64;
    #[allow(clippy::cast_precision_loss)]
    let rate = f.calls as f64 / f.seconds.max(1e-9);
    #[allow(clippy::cast_precision_loss)]
    let cpu_per = f.agent_cpu * 1e6 / f.calls.max(1) as f64;
    println!();
    println!("| soak | value |");
    println!("|---|---|");
    println!(
        "| calls (workers + 2 per held connection) | {} ({} connections, {} held open) |",
        f.calls, options.connections, options.held
    );
    println!("| calls/s with the agent | {rate:.0} |");
    println!("| output lines | {} |", f.lines);
    println!(
        "| responses identical to the run without the agent | {} |",
        if same { "yes" } else { "NO" }
    );
    println!("| loss counters | all 0 |");
    println!(
        "| agent RSS after warm-up / peak / end | {:.1} / {:.1} / {:.1} MiB |",
        kib_to_mib(f.rss_start),
        kib_to_mib(f.rss_peak),
        kib_to_mib(f.rss_end)
    );
    println!("| RSS growth after warm-up | {:+.1}% |", growth * 100.0);
    println!("| agent CPU per call | {cpu_per:.0} µs |");
    if let Some(b) = &f.at_peak {
        println!();
        println!("| agent RSS at its peak, by mapping (`/proc/PID/smaps`) | MiB |");
        println!("|---|---|");
        for (label, kib) in b.rows() {
            println!("| {label} | {:.1} |", kib_to_mib(kib));
        }
    }
    if !same {
        bail!(
            "the client's results differ with the agent: compare {} and {}",
            without.display(),
            with.display()
        );
    }
    if f.lines != f.calls {
        bail!(
            "{} calls but {} output lines: every call must be one line",
            f.calls,
            f.lines
        );
    }
    if growth > MAX_GROWTH {
        bail!(
            "the agent's RSS grew {:.1}% after warm-up (limit {:.0}%)",
            growth * 100.0,
            MAX_GROWTH * 100.0
        );
    }
    Ok(())
}

#[allow(clippy::cast_precision_loss)]
fn kib_to_mib(k: u64) -> f64 {
    k as f64 / 1024.0
}
