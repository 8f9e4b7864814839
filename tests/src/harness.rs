//! Running the agent and real clients from tests.

use std::{
    collections::BTreeMap,
    io::{BufRead as _, BufReader},
    path::{Path, PathBuf},
    process::{Child, Command, Stdio},
    sync::{Arc, Mutex, mpsc},
    time::{Duration, Instant},
};

use anyhow::{Context as _, bail};

use crate::server::{self, Server};

/// The directory holding the workspace's built binaries (`target/debug`), found from the test
/// executable's own location (`target/debug/deps/<test>`).
#[must_use]
pub fn build_dir() -> PathBuf {
    let exe = std::env::current_exe().unwrap_or_default();
    let mut dir = exe.parent().map(Path::to_path_buf).unwrap_or_default();
    if dir.ends_with("deps") {
        dir.pop();
    }
    dir
}

/// The agent binary: `TASKLESS_AGENT_BIN`, or the one built beside the tests, or (for
/// benchmarks, built in `target/release`) the development build.
#[must_use]
pub fn agent_bin() -> PathBuf {
    if let Some(p) = std::env::var_os("TASKLESS_AGENT_BIN") {
        return PathBuf::from(p);
    }
    let beside = build_dir().join("taskless-agent");
    if beside.exists() {
        return beside;
    }
    build_dir()
        .parent()
        .map_or(beside, |t| t.join("debug/taskless-agent"))
}

/// Whether `line` of the agent's log is a periodic stats line (not one of the `pack stats`
/// lines that follow it).
#[must_use]
pub fn is_stats_line(line: &str) -> bool {
    line.contains(" stats ") && !line.contains(" pack stats ")
}

/// The packs directory: `TASKLESS_TEST_PACKS`, or `target/packs` (what `cargo xtask build-packs`
/// writes).
#[must_use]
pub fn packs_dir() -> PathBuf {
    std::env::var_os("TASKLESS_TEST_PACKS").map_or_else(
        || {
            build_dir()
                .parent()
                .map(|t| t.join("packs"))
                .unwrap_or_default()
        },
        PathBuf::from,
    )
}

/// wrk's own count of completed requests, from its report (`N requests in ...`).
#[must_use]
pub fn wrk_requests(report: &str) -> Option<u64> {
    report.lines().find_map(|l| {
        l.trim()
            .split_once(" requests in ")
            .and_then(|(n, _)| n.trim().parse().ok())
    })
}

/// The OpenSSL 1.1.1 shared libraries `cargo xtask setup` fetches: `TASKLESS_OPENSSL11_DIR`, or
/// `taskless-agent-tools/openssl-1.1.1` under `CARGO_HOME` (default `~/.cargo`).
///
/// # Panics
/// When the directory is missing: the test says to run setup rather than skip.
#[must_use]
pub fn openssl11_dir() -> PathBuf {
    let dir = std::env::var_os("TASKLESS_OPENSSL11_DIR").map_or_else(
        || {
            std::env::var_os("CARGO_HOME")
                .map(PathBuf::from)
                .or_else(|| std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".cargo")))
                .unwrap_or_default()
                .join("taskless-agent-tools/openssl-1.1.1")
        },
        PathBuf::from,
    );
    assert!(
        dir.is_dir(),
        "{} is missing: run `cargo xtask setup` (it fetches OpenSSL 1.1.1 for this test)",
        dir.display()
    );
    dir
}

/// Fails the test, saying why, unless it runs as root (end-to-end tests load eBPF programs).
///
/// # Panics
/// Without root. End-to-end tests are never skipped silently.
pub fn require_root() {
    // SAFETY: geteuid has no preconditions.
    let euid = unsafe { libc::geteuid() };
    assert!(
        euid == 0,
        "end-to-end tests load eBPF programs and attach uprobes, which needs root (euid is {euid}); run them with `cargo xtask test` as root"
    );
    assert!(
        Path::new("/sys/kernel/btf/vmlinux").exists(),
        "end-to-end tests need a kernel with BTF (/sys/kernel/btf/vmlinux is missing)"
    );
    assert!(
        agent_bin().exists(),
        "agent binary {} not built: run `cargo xtask test`",
        agent_bin().display()
    );
}

/// The local test API running on its own Tokio runtime.
pub struct TestApi {
    /// The server's address and controls.
    pub server: Server,
    runtime: tokio::runtime::Runtime,
    _dir: TempDir,
}

impl TestApi {
    /// Starts the API on a free loopback port.
    ///
    /// # Errors
    /// When it cannot start.
    pub fn start() -> anyhow::Result<Self> {
        let dir = TempDir::new("testapi")?;
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_all()
            .build()?;
        let ca = dir.path().join("ca.pem");
        let server = runtime.block_on(server::start("127.0.0.1:0".parse()?, &ca))?;
        Ok(Self {
            server,
            runtime,
            _dir: dir,
        })
    }

    /// Waits (up to `timeout`) until `n` requests are held at `/v1/gate`.
    ///
    /// # Errors
    /// On timeout.
    pub fn wait_gate_waiters(&self, n: usize, timeout: Duration) -> anyhow::Result<()> {
        self.runtime
            .block_on(async {
                tokio::time::timeout(timeout, self.server.wait_gate_waiters(n)).await
            })
            .context("timed out waiting for clients to reach the gate")
    }
}

/// A temporary directory removed on drop.
pub struct TempDir(PathBuf);

impl TempDir {
    /// Creates a fresh directory under the system temp dir.
    ///
    /// # Errors
    /// When it cannot be created.
    pub fn new(prefix: &str) -> anyhow::Result<Self> {
        let nanos = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.subsec_nanos());
        let p =
            std::env::temp_dir().join(format!("taskless-{prefix}-{}-{nanos}", std::process::id()));
        std::fs::create_dir_all(&p)?;
        Ok(Self(p))
    }

    /// Its path.
    #[must_use]
    pub fn path(&self) -> &Path {
        &self.0
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// A running agent with its output collected.
pub struct Agent {
    child: Child,
    stdout: mpsc::Receiver<String>,
    stderr: Arc<Mutex<Vec<String>>>,
}

/// What an agent printed by the time it stopped.
#[derive(Debug)]
pub struct AgentOutput {
    /// Each stdout line, parsed as JSON.
    pub lines: Vec<serde_json::Value>,
    /// All of stderr.
    pub stderr: String,
    /// The exit code.
    pub code: Option<i32>,
}

impl AgentOutput {
    /// The value of counter `name` in the agent's exit `summary` line.
    ///
    /// # Panics
    /// When there is no summary line or no such counter in it.
    #[must_use]
    pub fn counter(&self, name: &str) -> u64 {
        let line = self
            .stderr
            .lines()
            .find(|l| l.contains(" summary "))
            .expect("summary line");
        counter_in(line, name).expect("numeric counter in summary")
    }
}

/// The value of ` name=` in a stats or summary line.
fn counter_in(line: &str, name: &str) -> Option<u64> {
    let key = format!(" {name}=");
    let start = line.find(&key)? + key.len();
    line[start..].split(' ').next()?.parse().ok()
}

impl Agent {
    /// Starts the agent with `args`.
    ///
    /// # Errors
    /// When it cannot be spawned.
    pub fn start<S: AsRef<std::ffi::OsStr>>(args: &[S]) -> anyhow::Result<Self> {
        Self::start_with_env(args, &[])
    }

    /// Starts the agent with `args` and extra environment variables.
    ///
    /// # Errors
    /// When it cannot be spawned.
    pub fn start_with_env<S: AsRef<std::ffi::OsStr>>(
        args: &[S],
        env: &[(&str, &str)],
    ) -> anyhow::Result<Self> {
        // These tests check what the agent reports, not how fast packs run on a loaded test
        // machine: a capture run gets a generous per-call pack limit and no CPU budget for its
        // packs (the development build's host work is several times the release build's, and
        // the tests' clients run flat out) unless the test sets them.
        let capture_run = args
            .first()
            .is_some_and(|a| a.as_ref().to_string_lossy().starts_with("--"));
        let set = |name: &str| args.iter().any(|a| a.as_ref() == name);
        let mut cmd = Command::new(agent_bin());
        cmd.args(args).envs(env.iter().copied());
        if capture_run && !set("--pack-timeout-ms") {
            cmd.args(["--pack-timeout-ms", "2000"]);
        }
        if capture_run && !set("--pack-cpu") {
            cmd.args(["--pack-cpu", "0"]);
        }
        cmd.env("TASKLESS_LOG", "info,taskless_agent=debug");
        Self::start_command(cmd)
    }

    /// Starts the agent through `cmd` (a wrapper such as `setpriv` or `podman run` that ends
    /// up running it, passing SIGINT on), with its stdout and stderr collected.
    ///
    /// # Errors
    /// When it cannot be spawned.
    pub fn start_command(mut cmd: Command) -> anyhow::Result<Self> {
        let mut child = cmd
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .with_context(|| format!("spawning {}", cmd.get_program().to_string_lossy()))?;
        let (tx, rx) = mpsc::channel();
        let out = child.stdout.take().context("no stdout")?;
        std::thread::spawn(move || {
            for line in BufReader::new(out).lines().map_while(Result::ok) {
                if tx.send(line).is_err() {
                    break;
                }
            }
        });
        let stderr = Arc::new(Mutex::new(Vec::new()));
        let err = child.stderr.take().context("no stderr")?;
        let sink = Arc::clone(&stderr);
        std::thread::spawn(move || {
            for line in BufReader::new(err).lines().map_while(Result::ok) {
                eprintln!("[agent] {line}");
                if let Ok(mut v) = sink.lock() {
                    v.push(line);
                }
            }
        });
        Ok(Self {
            child,
            stdout: rx,
            stderr,
        })
    }

    /// The agent's process id.
    #[must_use]
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Waits until a stderr line contains `needle`, failing early if the agent exits.
    ///
    /// # Errors
    /// On timeout or when the agent exits first.
    pub fn wait_for_log(&mut self, needle: &str, timeout: Duration) -> anyhow::Result<()> {
        self.wait_for_log_with(&[needle], timeout)
    }

    /// Waits until one stderr line contains every one of `needles`, failing early if the agent
    /// exits.
    ///
    /// # Errors
    /// On timeout or when the agent exits first.
    pub fn wait_for_log_with(&mut self, needles: &[&str], timeout: Duration) -> anyhow::Result<()> {
        let deadline = Instant::now() + timeout;
        let needle = needles.join(" … ");
        loop {
            if self
                .stderr
                .lock()
                .is_ok_and(|v| v.iter().any(|l| needles.iter().all(|n| l.contains(n))))
            {
                return Ok(());
            }
            if let Some(status) = self.child.try_wait()? {
                std::thread::sleep(Duration::from_millis(100));
                bail!(
                    "agent exited ({status}) before logging {needle:?}:\n{}",
                    self.stderr_text()
                );
            }
            if Instant::now() > deadline {
                bail!(
                    "agent did not log {needle:?} within {timeout:?}:\n{}",
                    self.stderr_text()
                );
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// Waits until at least `n` stdout lines have arrived (they stay queued for `stop`).
    ///
    /// # Errors
    /// On timeout.
    pub fn wait_for_lines(
        &mut self,
        n: usize,
        timeout: Duration,
        seen: &mut Vec<String>,
    ) -> anyhow::Result<()> {
        let deadline = Instant::now() + timeout;
        while seen.len() < n {
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                bail!(
                    "only {} of {n} output lines within {timeout:?}: {seen:#?}",
                    seen.len()
                );
            }
            if let Ok(line) = self
                .stdout
                .recv_timeout(left.min(Duration::from_millis(100)))
            {
                seen.push(line);
            }
        }
        Ok(())
    }

    /// Everything the agent has printed on stderr so far.
    #[must_use]
    pub fn stderr_snapshot(&self) -> String {
        self.stderr_text()
    }

    /// Waits until a stdout line contains `needle`, keeping every line seen in `seen` (they
    /// stay for `stop`); returns whether it came within `timeout`.
    pub fn wait_for_line_containing(
        &mut self,
        needle: &str,
        timeout: Duration,
        seen: &mut Vec<String>,
    ) -> bool {
        let deadline = Instant::now() + timeout;
        while !seen.iter().any(|l| l.contains(needle)) {
            if Instant::now() >= deadline {
                return false;
            }
            let _ = self.wait_for_lines(seen.len() + 1, Duration::from_millis(500), seen);
        }
        true
    }

    /// The value of `field=` in the first stderr line containing `needle` (e.g. the address
    /// an endpoint was bound to).
    #[must_use]
    pub fn log_field(&self, needle: &str, field: &str) -> Option<String> {
        let key = format!("{field}=");
        let lines = self.stderr.lock().ok()?;
        let line = lines.iter().find(|l| l.contains(needle))?;
        let start = line.find(&key)? + key.len();
        line[start..].split(' ').next().map(str::to_owned)
    }

    fn stderr_text(&self) -> String {
        self.stderr.lock().map(|v| v.join("\n")).unwrap_or_default()
    }

    /// The value of counter `name` in the latest periodic `stats` line (`--stats-interval`).
    #[must_use]
    pub fn latest_stat(&self, name: &str) -> Option<u64> {
        let lines = self.stderr.lock().ok()?;
        let line = lines.iter().rev().find(|l| is_stats_line(l))?;
        counter_in(line, name)
    }

    /// Kills the agent with SIGKILL (no chance to clean up) and waits for it to be gone.
    ///
    /// # Errors
    /// When it cannot be killed or waited for.
    pub fn kill(mut self) -> anyhow::Result<()> {
        self.child.kill()?;
        self.child.wait()?;
        Ok(())
    }

    /// Sends SIGINT, waits for the exit, and returns everything printed.
    ///
    /// # Errors
    /// When it does not exit in time or prints a stdout line that is not JSON.
    pub fn stop(mut self, mut seen: Vec<String>) -> anyhow::Result<AgentOutput> {
        let pid = i32::try_from(self.child.id())?;
        // SAFETY: signalling our own child.
        unsafe { libc::kill(pid, libc::SIGINT) };
        let deadline = Instant::now() + Duration::from_secs(15);
        let status = loop {
            if let Some(s) = self.child.try_wait()? {
                break s;
            }
            if Instant::now() > deadline {
                let _ = self.child.kill();
                bail!(
                    "agent did not exit within 15 s of SIGINT:\n{}",
                    self.stderr_text()
                );
            }
            std::thread::sleep(Duration::from_millis(20));
        };
        while let Ok(line) = self.stdout.recv_timeout(Duration::from_millis(500)) {
            seen.push(line);
        }
        std::thread::sleep(Duration::from_millis(100));
        let lines = seen
            .iter()
            .map(|l| {
                serde_json::from_str(l).with_context(|| format!("stdout line is not JSON: {l}"))
            })
            .collect::<anyhow::Result<Vec<_>>>()?;
        Ok(AgentOutput {
            lines,
            stderr: self.stderr_text(),
            code: status.code(),
        })
    }
}

impl Drop for Agent {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// The dimensions of one output line as a name → value map.
#[must_use]
pub fn dimensions(line: &serde_json::Value) -> BTreeMap<String, String> {
    line["dimensions"]
        .as_array()
        .map(|dims| {
            dims.iter()
                .filter_map(|d| {
                    Some((
                        d["name"].as_str()?.to_owned(),
                        d["value"].as_str()?.to_owned(),
                    ))
                })
                .collect()
        })
        .unwrap_or_default()
}

/// The lines whose dimensions include every `(name, value)` of `want`.
#[must_use]
pub fn matching<'a>(
    lines: &'a [serde_json::Value],
    want: &[(&str, &str)],
) -> Vec<&'a serde_json::Value> {
    lines
        .iter()
        .filter(|l| {
            let d = dimensions(l);
            want.iter()
                .all(|(k, v)| d.get(*k).map(String::as_str) == Some(*v))
        })
        .collect()
}

/// Copies the built packs to `dir`, configuring `stripe` and `openai` for `localhost` through
/// their `config.json` (as a user would point them at another host).
///
/// # Panics
/// When the packs are not built or cannot be copied.
pub fn packs_for_localhost(dir: &Path) {
    for entry in std::fs::read_dir(packs_dir()).expect("built packs") {
        let src = entry.expect("entry").path();
        if !src.join("manifest.json").exists() {
            continue;
        }
        let dst = dir.join(src.file_name().expect("name"));
        std::fs::create_dir_all(&dst).expect("mkdir");
        for f in ["manifest.json", "config.json", "pack.wasm"] {
            std::fs::copy(src.join(f), dst.join(f)).expect("copy pack file");
        }
        let name = dst
            .file_name()
            .and_then(|n| n.to_str())
            .unwrap_or_default()
            .to_owned();
        if name.starts_with("stripe@") || name.starts_with("openai@") {
            let path = dst.join("config.json");
            let mut config: serde_json::Value =
                serde_json::from_slice(&std::fs::read(&path).expect("config")).expect("json");
            config["configuration"]["domains"] = serde_json::json!(["localhost"]);
            std::fs::write(&path, config.to_string()).expect("write config");
        }
    }
}

/// Kills a child process on drop.
pub struct KillOnDrop(pub Child);

impl Drop for KillOnDrop {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}
