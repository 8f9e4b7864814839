//! `cargo xtask bench`: wrk → nginx over TLS on loopback with no tracer, with empty uprobes (the
//! floor), with peers (bcc's sslsniff when it runs here, a bpftrace script) and with the agent
//! (no packs, `core`, every shipped pack) attached to wrk, interleaved in rounds of one run. For
//! each: requests/s and the ratios to no tracer and to the floor, wrk's CPU per request, the
//! tracer's CPU per request, what it reported against wrk's count, and the 99th percentile of
//! latency. Prints the table and writes docs/BENCHMARKS.md.

mod nginx;
mod report;
mod tracers;
mod wrk;

use std::{
    path::{Path, PathBuf},
    process::{Command, Stdio},
    time::{Duration, Instant},
};

use anyhow::{Context as _, bail};

use crate::{
    procs::{Guard, cpu_seconds},
    util,
};
use tracers::{Packs, Seen, Setup, Started, Tracer};

/// What to run.
pub struct Options {
    /// Seconds of load per step.
    pub seconds: u64,
    /// Rounds: each configuration once per round.
    pub rounds: u32,
    /// wrk's connections (kept alive).
    pub connections: u32,
    /// Use the development build of the agent instead of building a release one.
    pub debug: bool,
    /// One round of 2 s steps, only no tracer, the floor and the agent without packs, small
    /// responses only; prints the table without writing docs/BENCHMARKS.md, and fails if the
    /// agent lost anything.
    pub quick: bool,
    /// The responses to run with, each as a phase of its own.
    pub responses: Vec<Response>,
}

/// What nginx answers with.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Response {
    /// A small JSON object (66 B).
    Small,
    /// 64 KiB of JSON contacts.
    Large,
}

impl Response {
    /// How the table's heading names it.
    pub fn label(self) -> String {
        match self {
            Response::Small => format!("a small JSON response ({} B)", nginx::BODY.len()),
            Response::Large => format!(
                "a 64 KiB JSON response ({} B of contacts)",
                nginx::large_body().len()
            ),
        }
    }
}

/// One step's figures.
struct Sample {
    rate: f64,
    requests: u64,
    p99_us: f64,
    /// wrk's CPU seconds while the load ran.
    wrk_cpu: f64,
    seen: Option<Seen>,
    errors: u64,
}

/// The run's environment.
struct Bench {
    dir: PathBuf,
    url: String,
    script: PathBuf,
    /// The CPU wrk is pinned to.
    wrk_cpu: Option<String>,
    options: Options,
    setup: Setup,
}

/// The pack directory with only the shipped `core` pack (a copy of its folder).
fn core_only(all: &Path, dest: &Path) -> anyhow::Result<()> {
    let core = std::fs::read_dir(all)
        .with_context(|| format!("reading {}", all.display()))?
        .filter_map(Result::ok)
        .find(|e| e.file_name().to_string_lossy().starts_with("core@"))
        .with_context(|| format!("no core@* pack in {}", all.display()))?;
    let to = dest.join(core.file_name());
    std::fs::create_dir_all(&to)?;
    for f in std::fs::read_dir(core.path())? {
        let f = f?;
        std::fs::copy(f.path(), to.join(f.file_name()))?;
    }
    Ok(())
}

/// Waits until `pid` has mapped `lib` (taskset has run wrk and its libraries are loaded).
fn wait_mapped(pid: u32, lib: &Path, process: &mut Guard) -> anyhow::Result<()> {
    let needle = lib.display().to_string();
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let maps = std::fs::read_to_string(format!("/proc/{pid}/maps")).unwrap_or_default();
        if maps.contains(&needle) {
            return Ok(());
        }
        if process.0.try_wait()?.is_some() || Instant::now() > deadline {
            bail!("wrk exited or did not load {needle}");
        }
        std::thread::sleep(Duration::from_millis(10));
    }
}

impl Bench {
    /// One run of wrk with `kind` attached. `Ok(Err(why))` when a peer could not start.
    fn step(&self, kind: Tracer, n: usize) -> anyhow::Result<Result<Sample, String>> {
        let go = self.dir.join(format!("go-{n}"));
        let out = self.dir.join(format!("wrk-{n}.txt"));
        let mut cmd = match &self.wrk_cpu {
            Some(cpu) => {
                let mut c = Command::new("taskset");
                c.args(["-c", cpu, "wrk"]);
                c
            }
            None => Command::new("wrk"),
        };
        cmd.args([
            "-t1",
            &format!("-c{}", self.options.connections),
            &format!("-d{}s", self.options.seconds),
            "--latency",
            "-s",
        ])
        .arg(&self.script)
        .arg(&self.url)
        .arg("--")
        .arg(&go)
        .stdin(Stdio::null())
        .stdout(std::fs::File::create(&out)?)
        .stderr(Stdio::null());
        let mut wrk = Guard(cmd.spawn().context("starting wrk")?);
        let pid = wrk.pid();
        wait_mapped(pid, &self.setup.libssl, &mut wrk)?;
        let mut tracer = match self.setup.start(kind, pid, n)? {
            None => None,
            Some(Started::Running(t)) => Some(t),
            Some(Started::Failed(why)) => return Ok(Err(why)),
        };
        if wrk.0.try_wait()?.is_some() {
            bail!(
                "wrk exited before the load started:\n{}",
                std::fs::read_to_string(&out).unwrap_or_default()
            );
        }
        let wrk_cpu_before = cpu_seconds(pid);
        if let Some(t) = tracer.as_mut() {
            t.load_starts();
        }
        std::fs::write(&go, "")?;
        let wrk_cpu = wrk
            .wait_cpu(Duration::from_secs(self.options.seconds + 120))?
            .context("wrk did not finish")?
            - wrk_cpu_before;
        let seen = tracer.map(|t| t.finish()).transpose()?;
        let text = std::fs::read_to_string(&out)?;
        let report = wrk::parse(&text)?;
        let _ = std::fs::remove_file(&out);
        let _ = std::fs::remove_file(&go);
        Ok(Ok(Sample {
            rate: report.rate,
            requests: report.requests,
            p99_us: report.p99_us,
            wrk_cpu,
            seen,
            errors: report.errors,
        }))
    }
}

impl Bench {
    /// Every configuration in rounds against the current URL, after a short unmeasured run
    /// (nginx's and wrk's first connections, the page cache). A configuration that cannot
    /// start is added to `skipped` and left out from then on.
    fn phase(
        &self,
        configs: &[Tracer],
        skipped: &mut Vec<(Tracer, String)>,
    ) -> anyhow::Result<Vec<report::Row>> {
        let _ = self.step(Tracer::None, 0)?;
        let mut samples: Vec<Vec<Sample>> = configs.iter().map(|_| Vec::new()).collect();
        let mut n = 1;
        for round in 0..self.options.rounds as usize {
            // Each round starts one configuration further, so none always runs first or last.
            for i in 0..configs.len() {
                let at = (i + round) % configs.len();
                let kind = configs[at];
                if skipped.iter().any(|(k, _)| *k == kind) {
                    continue;
                }
                eprintln!(
                    "bench: round {} / {}: {}",
                    round + 1,
                    self.options.rounds,
                    kind.label()
                );
                match self.step(kind, n)? {
                    Ok(s) => {
                        eprintln!(
                            "bench:   {:.0} requests/s, p99 {:.0} µs, {}",
                            s.rate,
                            s.p99_us,
                            s.seen.as_ref().map_or("no tracer".to_owned(), |t| format!(
                                "{} events for {} requests, {} counted lost, {:.2} CPU s",
                                t.events, s.requests, t.counted_lost, t.cpu
                            ))
                        );
                        samples[at].push(s);
                    }
                    Err(why) => {
                        eprintln!("bench: skipping {}: {why}", kind.label());
                        skipped.push((kind, why));
                    }
                }
                n += 1;
            }
        }
        Ok(report::rows(configs, &samples))
    }
}

fn build(root: &Path, options: &Options) -> anyhow::Result<PathBuf> {
    let mut cmd = util::cargo();
    if options.debug {
        // The same build as the soak's (features unify the same way, so one does not rebuild
        // what the other built).
        cmd.args(["build", "-p", "taskless-agent", "-p", "taskless-e2e"])
            .args(["--bin", "taskless-agent", "--bin", "taskless-testapi"]);
    } else {
        cmd.args([
            "build",
            "--release",
            "-p",
            "taskless-agent",
            "--bin",
            "taskless-agent",
        ]);
    }
    util::run(&mut cmd)?;
    if !options.quick {
        crate::build_packs(root)?;
    }
    let profile = if options.debug { "debug" } else { "release" };
    Ok(util::target_dir(root).join(profile).join("taskless-agent"))
}

/// The configurations, in the table's order.
fn configurations(quick: bool) -> Vec<Tracer> {
    if quick {
        vec![Tracer::None, Tracer::Floor, Tracer::Agent(Packs::None)]
    } else {
        vec![
            Tracer::None,
            Tracer::Floor,
            Tracer::Sslsniff,
            Tracer::Bpftrace,
            Tracer::Agent(Packs::None),
            Tracer::Agent(Packs::Core),
            Tracer::Agent(Packs::All),
        ]
    }
}

/// Runs the benchmark (see the module documentation).
pub fn run(root: &Path, mut options: Options) -> anyhow::Result<()> {
    if !util::is_root() {
        bail!("cargo xtask bench needs root: it attaches uprobes to wrk");
    }
    if options.quick {
        options.rounds = 1;
        options.seconds = 2;
        options.responses = vec![Response::Small];
    }
    if options.responses.is_empty() {
        bail!("--response needs at least one of small, large");
    }
    if options.rounds == 0 || options.seconds == 0 {
        bail!("--rounds and --seconds must be at least 1");
    }
    let agent = build(root, &options)?;
    let dir = std::env::temp_dir().join(format!("taskless-bench-{}", std::process::id()));
    std::fs::create_dir_all(&dir)?;
    let result = bench(root, &dir, agent, options);
    let _ = std::fs::remove_dir_all(&dir);
    result
}

fn bench(root: &Path, dir: &Path, agent: PathBuf, options: Options) -> anyhow::Result<()> {
    let wrk_bin = nginx::which("wrk").context("wrk is not installed (cargo xtask setup)")?;
    let libssl = nginx::linked_library(&wrk_bin, "libssl.so.3")?.with_context(|| {
        format!(
            "{} does not link OpenSSL 3's libssl.so.3 dynamically",
            wrk_bin.display()
        )
    })?;
    let cpus = std::thread::available_parallelism().map_or(1, std::num::NonZero::get);
    let (wrk_cpu, nginx_cpu) = if cpus >= 2 {
        (Some("0".to_owned()), Some("1".to_owned()))
    } else {
        eprintln!("bench: one CPU: wrk and nginx are not pinned");
        (None, None)
    };
    let machine_start = report::Machine::now();
    let packs = [dir.join("packs-none"), dir.join("packs-core"), {
        util::target_dir(root).join("packs")
    }];
    std::fs::create_dir_all(&packs[0])?;
    std::fs::create_dir_all(&packs[1])?;
    if !options.quick {
        core_only(&packs[2], &packs[1])?;
    }
    let mut skipped: Vec<(Tracer, String)> = Vec::new();
    let sslsniff = if options.quick {
        None
    } else {
        match Setup::sslsniff_preflight(dir) {
            Ok(p) => Some(p),
            Err(why) => {
                eprintln!("bench: skipping bcc sslsniff: {why}");
                skipped.push((Tracer::Sslsniff, why));
                None
            }
        }
    };
    let nginx_dir = dir.join("nginx");
    std::fs::create_dir_all(&nginx_dir)?;
    let server = nginx::Nginx::start(&nginx_dir, nginx_cpu.as_deref())?;
    let script = dir.join("hold.lua");
    std::fs::write(&script, wrk::HOLD_SCRIPT)?;
    let state = dir.join("state");
    std::fs::create_dir_all(&state)?;
    let mut bench = Bench {
        dir: dir.to_path_buf(),
        url: server.url.clone(),
        script,
        wrk_cpu,
        setup: Setup {
            dir: dir.to_path_buf(),
            agent: agent.clone(),
            packs,
            state,
            libssl,
            sslsniff,
        },
        options,
    };
    let configs = configurations(bench.options.quick);
    eprintln!(
        "bench: {} round(s) of {} s steps, wrk ({} connections{}) → {} (nginx{}), agent {}",
        bench.options.rounds,
        bench.options.seconds,
        bench.options.connections,
        bench
            .wrk_cpu
            .as_deref()
            .map_or(String::new(), |c| format!(", CPU {c}")),
        bench.url,
        nginx_cpu
            .as_deref()
            .map_or(String::new(), |c| format!(", CPU {c}")),
        agent.display()
    );
    let mut tables: Vec<(Response, String)> = Vec::new();
    let mut lost = Vec::new();
    for response in bench.options.responses.clone() {
        bench.url = match response {
            Response::Small => server.url.clone(),
            Response::Large => server.large_url.clone(),
        };
        eprintln!("bench: {}, {}", response.label(), bench.url);
        let rows = bench.phase(&configs, &mut skipped)?;
        let table = report::table(&rows);
        println!("\n{}\n\n{table}", response.label());
        tables.push((response, table));
        if let Some(r) = rows
            .iter()
            .find(|r| r.kind == Tracer::Agent(Packs::None))
            .filter(|r| r.missing > 0 || r.counted_lost > 0)
        {
            lost.push(format!(
                "{}: {} missing, {} counted lost",
                response.label(),
                r.missing,
                r.counted_lost
            ));
        }
    }
    drop(server);
    let machine_end = report::Machine::now();
    for (kind, why) in &skipped {
        println!("{}: skipped: {why}", kind.label());
    }
    if bench.options.quick {
        if !lost.is_empty() {
            bail!(
                "the agent without packs lost exchanges: {}",
                lost.join("; ")
            );
        }
        return Ok(());
    }
    if tables.len() < 2 {
        eprintln!("bench: docs/BENCHMARKS.md is written only by a run with both responses");
        return Ok(());
    }
    let doc = report::document(&report::Document {
        tables: &tables,
        skipped: &skipped,
        machine_start: &machine_start,
        machine_end: &machine_end,
        options: &bench.options,
        agent: &agent,
        wrk_pinned: bench.wrk_cpu.as_deref(),
        nginx_pinned: nginx_cpu.as_deref(),
    });
    let path = root.join("docs").join("BENCHMARKS.md");
    std::fs::write(&path, doc).with_context(|| format!("writing {}", path.display()))?;
    eprintln!("bench: wrote {}", path.display());
    Ok(())
}
