//! Running the Go test client (`tests/go/client`) against the local test API, with and without
//! the agent, and checking what the agent printed for it.

use std::{
    collections::BTreeMap,
    io::{BufRead as _, BufReader, Read as _, Write as _},
    path::Path,
    process::{ChildStdout, Command, Stdio},
    time::Duration,
};

use crate::harness::{Agent, KillOnDrop, TestApi, dimensions, packs_dir};

/// How long an agent may take to be ready (packs compile first).
pub const READY: Duration = Duration::from_secs(90);

/// A Go client started and waiting for the word to go.
pub struct GoClient {
    child: KillOnDrop,
    stdout: BufReader<ChildStdout>,
}

impl GoClient {
    pub fn start(bin: &Path, api: &TestApi, args: &[&str]) -> Self {
        let mut child = KillOnDrop(
            Command::new(bin)
                .args(["-base", &api.server.base_url(), "-ca"])
                .arg(&api.server.ca_file)
                .args(args)
                .stdin(Stdio::piped())
                .stdout(Stdio::piped())
                .spawn()
                .expect("go client"),
        );
        let mut stdout = BufReader::new(child.0.stdout.take().expect("stdout"));
        let mut line = String::new();
        stdout.read_line(&mut line).expect("client ready");
        assert_eq!(line.trim(), "ready", "client failed to start");
        Self { child, stdout }
    }

    pub fn pid(&self) -> u32 {
        self.child.0.id()
    }

    pub fn go(&mut self) {
        self.child
            .0
            .stdin
            .as_mut()
            .expect("stdin")
            .write_all(b"go\n")
            .expect("release client");
    }

    /// Waits until the client has made every request; returns what it printed after "ready".
    /// It keeps its connections open until [`Self::exit`].
    pub fn finish(&mut self) -> String {
        let mut out = String::new();
        loop {
            let mut line = String::new();
            if self.stdout.read_line(&mut line).expect("client output") == 0 {
                break;
            }
            out.push_str(&line);
            if line.starts_with("done ") {
                break;
            }
        }
        out
    }

    /// Lets the client exit, and checks that it did so successfully.
    pub fn exit(mut self, out: &str) {
        drop(self.child.0.stdin.take());
        let mut rest = String::new();
        let _ = self.stdout.read_to_string(&mut rest);
        let status = self.child.0.wait().expect("client exits");
        assert!(status.success(), "client failed ({status}):\n{out}{rest}");
        assert!(rest.is_empty(), "client printed after done: {rest}");
    }
}

/// The client's output without anything watching it.
pub fn run_alone(bin: &Path, api: &TestApi, args: &[&str]) -> String {
    let mut client = GoClient::start(bin, api, args);
    client.go();
    let out = client.finish();
    client.exit(&out);
    out
}

pub fn agent_for(pid: u32, packs: &Path) -> Agent {
    let mut agent = Agent::start(&[
        "--pid".to_owned(),
        pid.to_string(),
        "--packs".to_owned(),
        packs.display().to_string(),
        "--stats-interval".to_owned(),
        "0".to_owned(),
    ])
    .expect("start agent");
    agent.wait_for_log("ready", READY).expect("agent ready");
    agent
}

/// The core dimensions one request of `kind` made by goroutine `w` must have (durationMs
/// apart, checked on its own).
pub fn expected(kind: &str, w: usize, port: u16) -> BTreeMap<String, String> {
    let (method, path, query, status, error) = match kind {
        "ok" => ("POST", "/v1/charges".to_owned(), "", "200", None),
        "declined" => (
            "POST",
            "/v1/charges".to_owned(),
            "",
            "402",
            Some("card_error"),
        ),
        "customer" => ("GET", format!("/v1/customers/cus_{w:02}"), "", "200", None),
        "chunked" => ("POST", "/v1/upload".to_owned(), "", "200", None),
        "sse" => ("POST", "/v1/chat/completions".to_owned(), "", "200", None),
        "big" => ("GET", "/v1/bytes".to_owned(), "?n=1048576", "200", None),
        other => panic!("unknown kind {other}"),
    };
    let mut d: BTreeMap<String, String> = [
        ("core/domain", "localhost".to_owned()),
        ("core/url", format!("https://localhost:{port}{path}{query}")),
        ("core/path", path),
        ("core/method", method.to_owned()),
        ("core/status", status.to_owned()),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_owned(), v))
    .collect();
    if let Some(e) = error {
        d.insert("core/error".into(), e.into());
    }
    d
}

/// What a run must produce: `workers` goroutines each making `kinds` `rounds` times, the first
/// `big` of them a 1 MiB download too.
pub struct Scenario {
    /// `h1` or `h2`.
    pub proto: &'static str,
    /// Goroutines.
    pub workers: usize,
    /// Times each goroutine goes through `kinds`.
    pub rounds: usize,
    /// Requests (`ok`, `declined`, `customer`, `chunked`, `sse`).
    pub kinds: &'static [&'static str],
    /// Goroutines that also download 1 MiB.
    pub big: usize,
}

impl Scenario {
    /// The client's command line for this scenario.
    #[must_use]
    pub fn args(&self) -> Vec<String> {
        vec![
            "-proto".into(),
            self.proto.into(),
            "-workers".into(),
            self.workers.to_string(),
            "-rounds".into(),
            self.rounds.to_string(),
            "-kinds".into(),
            self.kinds.join(","),
            "-big".into(),
            self.big.to_string(),
        ]
    }

    pub fn expected(&self, port: u16) -> Vec<BTreeMap<String, String>> {
        let mut v = Vec::new();
        for w in 0..self.workers {
            for _ in 0..self.rounds {
                v.extend(self.kinds.iter().map(|k| expected(k, w, port)));
            }
            if w < self.big {
                v.push(expected("big", w, port));
            }
        }
        v.sort();
        v
    }
}

/// Runs `scenario` with `bin` alone and then watched, and checks everything the agent printed.
pub fn check_capture(bin: &Path, what: &str, scenario: &Scenario) {
    let api = TestApi::start().expect("test API");
    let args = scenario.args();
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    let alone = run_alone(bin, &api, &args);

    let mut client = GoClient::start(bin, &api, &args);
    let pid = client.pid();
    let agent = agent_for(pid, &packs_dir());
    client.go();
    let watched = client.finish();
    // The client keeps its connections open until it exits, as a service would: the agent reads
    // each connection's addresses from /proc when its first record comes.
    check_lines(agent, what, pid, api.server.addr.port(), scenario);
    client.exit(&watched);
    assert_eq!(
        watched, alone,
        "{what}: the client's output changed under the agent"
    );
}

/// Stops `agent` once it printed a line per request of `scenario` made by process `pid`, and
/// checks them: exact core dimensions, each request once, fd and addresses, nothing lost.
pub fn check_lines(mut agent: Agent, what: &str, pid: u32, port: u16, scenario: &Scenario) {
    let want = scenario.expected(port);
    let mut seen = Vec::new();
    let waited = agent.wait_for_lines(want.len(), Duration::from_secs(60), &mut seen);
    // Lines past the expected count would be duplicates: give them a moment to show.
    std::thread::sleep(Duration::from_millis(500));
    let out = agent.stop(seen).expect("agent stops");
    waited.unwrap_or_else(|e| panic!("{what}: {e}\n{}", out.stderr));
    assert_eq!(
        out.code,
        Some(0),
        "{what}: agent exit; stderr:\n{}",
        out.stderr
    );

    let mut got: Vec<BTreeMap<String, String>> = Vec::new();
    for line in &out.lines {
        let mut core: BTreeMap<String, String> = dimensions(line)
            .into_iter()
            .filter(|(k, _)| k.starts_with("core/"))
            .collect();
        let ms: f64 = core
            .remove("core/durationMs")
            .unwrap_or_else(|| panic!("{what}: no durationMs in {line}"))
            .parse()
            .expect("numeric durationMs");
        assert!((0.0..60_000.0).contains(&ms), "{what}: durationMs {ms}");
        let source = &line["source"];
        assert_eq!(source["pid"].as_u64(), Some(u64::from(pid)), "{what}");
        assert!(
            source["fd"].as_i64().is_some_and(|fd| fd >= 0),
            "{what}: fd in {line}"
        );
        assert_eq!(
            source["remoteAddress"].as_str(),
            Some(format!("127.0.0.1:{port}").as_str()),
            "{what}: remote address in {line}"
        );
        assert!(
            source["localAddress"]
                .as_str()
                .is_some_and(|a| a.starts_with("127.0.0.1:")),
            "{what}: local address in {line}"
        );
        got.push(core);
    }
    got.sort();
    assert_eq!(
        got.len(),
        want.len(),
        "{what}: one line per request; stderr:\n{}",
        out.stderr
    );
    assert_eq!(got, want, "{what}: core dimensions");
    for counter in [
        "kernel_ringbuf_full",
        "kernel_read_failed",
        "lost_bytes",
        "connections_without_fd",
        "addresses_unresolved",
        "dropped_jobs",
    ] {
        assert_eq!(out.counter(counter), 0, "{what}: {counter}\n{}", out.stderr);
    }
}
