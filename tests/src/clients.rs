//! Real TLS clients for the end-to-end tests of each TLS stack: small C programs built with gcc
//! against the system's TLS libraries (`tests/c/`), and the checks every stack's test makes on
//! the agent's lines.
//!
//! The clients share one script: a warm-up call, then `ready` on stdout, then (once released by
//! a line on stdin, after the agent is attached) a charge that succeeds after 120 ms, a declined
//! charge and a missing resource, each on a kept-alive connection.

use std::{
    io::{BufRead as _, BufReader, Write as _},
    path::{Path, PathBuf},
    process::{Command, Stdio},
    time::Duration,
};

use anyhow::{Context as _, bail};

use crate::harness::{Agent, KillOnDrop, dimensions, matching, packs_dir};

/// The C sources of the clients.
#[must_use]
pub fn c_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("c")
}

/// Compiles `tests/c/<name>.c` into `out_dir/<output>` with `gcc`, then `extra` arguments
/// (libraries).
///
/// # Errors
/// When gcc fails (its output is in the error).
pub fn gcc(name: &str, output: &str, out_dir: &Path, extra: &[&str]) -> anyhow::Result<PathBuf> {
    let out = out_dir.join(output);
    let o = Command::new("gcc")
        .args(["-O2", "-Wall", "-Werror", "-o"])
        .arg(&out)
        .arg(c_dir().join(format!("{name}.c")))
        .args(extra)
        .output()
        .context("running gcc (`cargo xtask setup` installs it)")?;
    if !o.status.success() {
        bail!(
            "gcc {name}.c failed:\n{}",
            String::from_utf8_lossy(&o.stderr)
        );
    }
    Ok(out)
}

/// Flags for building against NSS (`pkg-config nss`).
///
/// # Errors
/// When pkg-config does not know NSS (`libnss3-dev` missing).
pub fn nss_flags() -> anyhow::Result<Vec<String>> {
    let o = Command::new("pkg-config")
        .args(["--cflags", "--libs", "nss"])
        .output()
        .context("running pkg-config")?;
    if !o.status.success() {
        bail!("pkg-config knows no nss: run `cargo xtask setup` (libnss3-dev)");
    }
    Ok(String::from_utf8_lossy(&o.stdout)
        .split_whitespace()
        .map(str::to_owned)
        .collect())
}

/// A client that made its warm-up call and waits for a line on stdin.
pub struct ReadyClient {
    child: KillOnDrop,
    stdout: BufReader<std::process::ChildStdout>,
}

impl ReadyClient {
    /// Starts `cmd` and waits for its `ready` line.
    ///
    /// # Errors
    /// When it cannot start or says something else first.
    pub fn start(mut cmd: Command) -> anyhow::Result<Self> {
        let mut child = cmd
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .spawn()
            .with_context(|| format!("starting {cmd:?}"))?;
        let mut stdout = BufReader::new(child.stdout.take().context("stdout")?);
        let mut line = String::new();
        stdout.read_line(&mut line)?;
        if line.trim() != "ready" {
            let status = child.wait()?;
            bail!("{cmd:?} did not get ready ({status}): {line:?}");
        }
        Ok(Self {
            child: KillOnDrop(child),
            stdout,
        })
    }

    /// Its process id.
    #[must_use]
    pub fn pid(&self) -> u32 {
        self.child.0.id()
    }

    /// Lets it make its calls; returns what it printed then, up to its `done` line (after which
    /// it keeps its connections open until [`ReadyClient::finish`]) or its exit.
    ///
    /// # Errors
    /// When its output cannot be read.
    pub fn release(&mut self) -> anyhow::Result<String> {
        self.child
            .0
            .stdin
            .as_mut()
            .context("stdin")?
            .write_all(b"go\n")?;
        let mut printed = String::new();
        loop {
            let mut line = String::new();
            if self.stdout.read_line(&mut line)? == 0 || line.trim() == "done" {
                return Ok(printed);
            }
            printed.push_str(&line);
        }
    }

    /// Lets it close its connections and exit; checks that it succeeded.
    ///
    /// # Errors
    /// When it fails.
    pub fn finish(mut self) -> anyhow::Result<()> {
        drop(self.child.0.stdin.take());
        let mut rest = String::new();
        std::io::Read::read_to_string(&mut self.stdout, &mut rest)?;
        let status = self.child.0.wait()?;
        if !status.success() {
            bail!("client failed ({status}), printed {rest:?}");
        }
        Ok(())
    }
}

/// The fds of `pid` that are TCP sockets connected to local port `port` (from
/// `/proc/PID/fd` and the process's `/proc/PID/net/tcp`, `tcp6`).
#[must_use]
pub fn socket_fds(pid: u32, port: u16) -> Vec<i32> {
    let mut inodes = Vec::new();
    for table in ["tcp", "tcp6"] {
        let text = std::fs::read_to_string(format!("/proc/{pid}/net/{table}")).unwrap_or_default();
        for line in text.lines().skip(1) {
            let f: Vec<&str> = line.split_whitespace().collect();
            // local_address rem_address st ... inode (the tenth field)
            let remote_port = f
                .get(2)
                .and_then(|a| a.rsplit(':').next())
                .and_then(|p| u16::from_str_radix(p, 16).ok());
            if remote_port == Some(port)
                && let Some(inode) = f.get(9)
            {
                inodes.push(format!("socket:[{inode}]"));
            }
        }
    }
    let mut fds: Vec<i32> = std::fs::read_dir(format!("/proc/{pid}/fd"))
        .map(|rd| {
            rd.filter_map(Result::ok)
                .filter(|e| {
                    std::fs::read_link(e.path())
                        .is_ok_and(|l| inodes.iter().any(|i| *i == l.to_string_lossy()))
                })
                .filter_map(|e| e.file_name().to_str()?.parse().ok())
                .collect()
        })
        .unwrap_or_default();
    fds.sort_unstable();
    fds
}

/// Starts the agent with the shipped packs on `pids` (and `extra` arguments) and waits until it
/// is ready.
///
/// # Errors
/// When it does not start.
pub fn agent_for(pids: &[u32], extra: &[&str]) -> anyhow::Result<Agent> {
    let packs = packs_dir();
    if !packs.join("core@0.1.0/manifest.json").exists() {
        bail!(
            "packs not built in {}: run `cargo xtask test`",
            packs.display()
        );
    }
    let mut args = Vec::new();
    for pid in pids {
        args.extend(["--pid".to_owned(), pid.to_string()]);
    }
    args.extend(["--packs".to_owned(), packs.display().to_string()]);
    args.extend(extra.iter().map(|s| (*s).to_owned()));
    let mut agent = Agent::start(&args)?;
    agent.wait_for_log("ready", Duration::from_secs(60))?;
    Ok(agent)
}

/// Checks the three exchanges of the shared script in `lines`, each exactly once, with the
/// core pack's exact dimensions; returns the line of each (charge, declined, missing).
///
/// # Panics
/// When a check fails.
#[must_use]
pub fn assert_script(lines: &[serde_json::Value], port: u16) -> [&serde_json::Value; 3] {
    let one = |want: &[(&str, &str)]| {
        let found = matching(lines, want);
        assert_eq!(
            found.len(),
            1,
            "exactly one line with {want:?} in {lines:#?}"
        );
        found[0]
    };
    let ok = one(&[
        ("core/method", "POST"),
        ("core/path", "/v1/charges"),
        ("core/status", "200"),
        ("core/domain", "localhost"),
    ]);
    let d = dimensions(ok);
    assert_eq!(
        d.get("core/url"),
        Some(&format!("https://localhost:{port}/v1/charges?delay_ms=120")),
        "{d:?}"
    );
    assert!(!d.contains_key("core/error"), "no error on a 200: {d:?}");
    let ms: f64 = d
        .get("core/durationMs")
        .and_then(|v| v.parse().ok())
        .expect("numeric durationMs");
    assert!(
        (120.0..5_000.0).contains(&ms),
        "durationMs {ms} must include the API's 120 ms latency"
    );
    let declined = one(&[
        ("core/method", "POST"),
        ("core/path", "/v1/charges"),
        ("core/status", "402"),
        ("core/error", "card_error"),
    ]);
    let missing = one(&[
        ("core/method", "GET"),
        ("core/path", "/v1/missing"),
        ("core/status", "404"),
        ("core/error", "invalid_request_error"),
    ]);
    [ok, declined, missing]
}

/// Checks that `line`'s source is process `pid` on socket `fd` (when given) connected to the
/// API on `port` over loopback.
///
/// # Panics
/// When it is not.
pub fn assert_source(line: &serde_json::Value, pid: u32, fd: Option<i32>, port: u16) {
    let source = &line["source"];
    assert_eq!(source["pid"].as_u64(), Some(u64::from(pid)), "{line}");
    let seen = source["fd"].as_i64().expect("an fd in source");
    if let Some(fd) = fd {
        assert_eq!(seen, i64::from(fd), "the client's socket: {line}");
    }
    assert_eq!(
        source["remoteAddress"].as_str(),
        Some(format!("127.0.0.1:{port}").as_str()),
        "{line}"
    );
    assert!(
        source["localAddress"]
            .as_str()
            .is_some_and(|a| a.starts_with("127.0.0.1:")),
        "{line}"
    );
}

/// Serialises the builds of the rustls clients within a test binary (cargo's own lock on the
/// target directory serialises them across binaries).
static RUSTLS_BUILDING: std::sync::Mutex<()> = std::sync::Mutex::new(());

/// The reqwest client on rustls `version` (`"0.21"` or `"0.23"`): `tests/rustls-clients/rustls-<version>`
/// built as a release build (optimised, with its symbol table, as `cargo build --release` leaves
/// a Rust program) into the target directory, at the versions its `Cargo.lock` pins. Cargo skips
/// the build when it is up to date.
///
/// # Errors
/// When cargo fails (its output is in the error).
pub fn rustls_client(version: &str) -> anyhow::Result<PathBuf> {
    let name = format!("rustls{}-client", version.replace('.', ""));
    Ok(rustls_build(version)?.join(name))
}

/// The probe-cost benchmark's rustls 0.23 program (`tests/rustls-clients/bench.rs`), built as
/// [`rustls_client`] is.
///
/// # Errors
/// When cargo fails (its output is in the error).
pub fn rustls_bench() -> anyhow::Result<PathBuf> {
    Ok(rustls_build("0.23")?.join("rustls023-bench"))
}

/// Builds the programs of `tests/rustls-clients/rustls-<version>`; returns where they are.
fn rustls_build(version: &str) -> anyhow::Result<PathBuf> {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("rustls-clients")
        .join(format!("rustls-{version}"));
    let target = crate::harness::build_dir()
        .parent()
        .map(|t| t.join("rustls-clients"))
        .context("the target directory")?;
    let _building = RUSTLS_BUILDING
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner);
    let cargo = std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into());
    let o = Command::new(cargo)
        .args([
            "build",
            "--release",
            "--locked",
            "--quiet",
            "--manifest-path",
        ])
        .arg(dir.join("Cargo.toml"))
        .arg("--target-dir")
        .arg(&target)
        .output()
        .context("running cargo")?;
    if !o.status.success() {
        bail!(
            "building the rustls {version} programs failed:\n{}",
            String::from_utf8_lossy(&o.stderr)
        );
    }
    Ok(target.join("release"))
}
