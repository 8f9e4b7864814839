//! End to end, as root, with the real eBPF programs: Go programs (crypto/tls, net/http) built by
//! every toolchain `cargo xtask setup` installs, normal, stripped and position independent.
//!
//! - Every toolchain × variant: a short run of Go clients over HTTP/1.1 or HTTP/2, every request
//!   captured once with its exact core dimensions, fd and addresses, and the client's output
//!   byte-identical to a run without the agent.
//! - One toolchain per variant: the full scenario (50 goroutines sharing one `http.Client`, a
//!   402 card_error, 200s, a chunked upload, a streamed SSE completion, 1 MiB downloads), over
//!   HTTP/1.1 and over HTTP/2.
//! - A stress run: 50 goroutines for 20 s while the agent attaches and detaches five times.
//! - A Go server watched on the server side.

use base64::Engine as _;
use std::{
    collections::BTreeMap,
    io::{BufRead as _, BufReader, Read as _, Write as _},
    path::Path,
    process::{ChildStdout, Command, Stdio},
    sync::Mutex,
    time::Duration,
};

use taskless_e2e::{
    golang::{self, Toolchain, Variant},
    harness::{Agent, KillOnDrop, TempDir, TestApi, dimensions, packs_dir, require_root},
};

/// One capture test at a time: they share the machine's two cores with the clients, the test
/// API and the agent, and the figures (durations, ring-buffer load) stay meaningful.
static SERIAL: Mutex<()> = Mutex::new(());

const READY: Duration = Duration::from_secs(90);

/// A Go client started and waiting for the word to go.
struct GoClient {
    child: KillOnDrop,
    stdout: BufReader<ChildStdout>,
}

impl GoClient {
    fn start(bin: &Path, api: &TestApi, args: &[&str]) -> Self {
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

    fn pid(&self) -> u32 {
        self.child.0.id()
    }

    fn go(&mut self) {
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
    fn finish(&mut self) -> String {
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
    fn exit(mut self, out: &str) {
        drop(self.child.0.stdin.take());
        let mut rest = String::new();
        let _ = self.stdout.read_to_string(&mut rest);
        let status = self.child.0.wait().expect("client exits");
        assert!(status.success(), "client failed ({status}):\n{out}{rest}");
        assert!(rest.is_empty(), "client printed after done: {rest}");
    }
}

/// The client's output without anything watching it.
fn run_alone(bin: &Path, api: &TestApi, args: &[&str]) -> String {
    let mut client = GoClient::start(bin, api, args);
    client.go();
    let out = client.finish();
    client.exit(&out);
    out
}

fn agent_for(pid: u32, packs: &Path) -> Agent {
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
fn expected(kind: &str, w: usize, port: u16) -> BTreeMap<String, String> {
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
struct Scenario {
    proto: &'static str,
    workers: usize,
    rounds: usize,
    kinds: &'static [&'static str],
    big: usize,
}

impl Scenario {
    fn args(&self) -> Vec<String> {
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

    fn expected(&self, port: u16) -> Vec<BTreeMap<String, String>> {
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
fn check_capture(bin: &Path, what: &str, scenario: &Scenario) {
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
fn check_lines(mut agent: Agent, what: &str, pid: u32, port: u16, scenario: &Scenario) {
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

fn client(tc: &Toolchain, variant: Variant) -> std::path::PathBuf {
    golang::build(tc, "client", variant).expect("go build")
}

/// Every toolchain × variant, a short run each (HTTP/2 and HTTP/1.1 in turn).
#[test]
fn go_clients_of_every_toolchain_and_variant_are_captured() {
    require_root();
    let toolchains = golang::toolchains();
    let builds: Vec<(String, std::path::PathBuf)> = toolchains
        .iter()
        .flat_map(|tc| {
            Variant::ALL
                .iter()
                .map(move |v| (format!("{} {}", tc.version, v.name()), client(tc, *v)))
        })
        .collect();
    let _serial = SERIAL
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner);
    for (i, (what, bin)) in builds.iter().enumerate() {
        let proto = if i % 2 == 0 { "h2" } else { "h1" };
        eprintln!("== {what} over {proto}");
        check_capture(
            bin,
            &format!("{what} {proto}"),
            &Scenario {
                proto,
                workers: 8,
                rounds: 1,
                kinds: &["declined", "customer", "chunked"],
                big: 0,
            },
        );
    }
}

const FULL: [&str; 5] = ["ok", "declined", "customer", "chunked", "sse"];

fn full_scenario(tc: &Toolchain, variant: Variant) {
    require_root();
    let bin = client(tc, variant);
    let _serial = SERIAL
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner);
    for proto in ["h1", "h2"] {
        let what = format!("{} {} {proto}", tc.version, variant.name());
        eprintln!("== full scenario: {what}");
        check_capture(
            &bin,
            &what,
            &Scenario {
                proto,
                workers: 50,
                rounds: 1,
                kinds: &FULL,
                big: 3,
            },
        );
    }
}

/// The oldest toolchain, normal build.
#[test]
fn full_scenario_normal_build_of_the_oldest_go() {
    full_scenario(&golang::toolchains()[0], Variant::Normal);
}

/// The newest toolchain, stripped: functions from the Go function table, offsets from the table.
#[test]
fn full_scenario_stripped_build_of_the_newest_go() {
    full_scenario(&golang::newest(), Variant::Stripped);
}

/// A toolchain in between, position independent.
#[test]
fn full_scenario_pie_build_of_a_middle_go() {
    let toolchains = golang::toolchains();
    full_scenario(&toolchains[toolchains.len() / 2], Variant::Pie);
}

/// With `--all`, a Go program started after the agent is attached as it starts (the exec event),
/// and its calls are captured like any other's.
#[test]
fn all_attaches_to_a_go_program_as_it_starts() {
    require_root();
    let bin = client(&golang::newest(), Variant::Stripped);
    let api = TestApi::start().expect("test API");
    let _serial = SERIAL
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner);
    let mut agent = Agent::start(&[
        "--all".to_owned(),
        "--packs".to_owned(),
        packs_dir().display().to_string(),
    ])
    .expect("agent");
    agent.wait_for_log("ready", READY).expect("agent ready");
    let scenario = Scenario {
        proto: "h2",
        workers: 4,
        rounds: 1,
        kinds: &["declined", "customer"],
        big: 0,
    };
    let args = scenario.args();
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    let mut client = GoClient::start(&bin, &api, &args);
    let pid = client.pid();
    agent
        .wait_for_log(&format!("pid={pid} "), Duration::from_secs(10))
        .expect("the new Go program is attached");
    client.go();
    let printed = client.finish();
    // Other processes on the machine may make TLS calls too: only this client's lines count.
    let mut seen = Vec::new();
    let want = scenario.expected(api.server.addr.port()).len();
    let deadline = std::time::Instant::now() + Duration::from_secs(60);
    while seen
        .iter()
        .filter(|l: &&String| l.contains(&format!("\"pid\":{pid},")))
        .count()
        < want
        && std::time::Instant::now() < deadline
    {
        let _ = agent.wait_for_lines(seen.len() + 1, Duration::from_millis(500), &mut seen);
    }
    let out = agent.stop(seen).expect("agent stops");
    let mine: Vec<&serde_json::Value> = out
        .lines
        .iter()
        .filter(|l| l["source"]["pid"].as_u64() == Some(u64::from(pid)))
        .collect();
    let mut got: Vec<BTreeMap<String, String>> = mine
        .iter()
        .map(|l| {
            dimensions(l)
                .into_iter()
                .filter(|(k, _)| k.starts_with("core/") && k != "core/durationMs")
                .collect()
        })
        .collect();
    got.sort();
    assert_eq!(
        got,
        scenario.expected(api.server.addr.port()),
        "{}",
        out.stderr
    );
    client.exit(&printed);
}

/// With `--follow`, a Go program a watched shell starts is attached, and its calls captured.
#[test]
fn follow_attaches_to_a_go_child() {
    require_root();
    let bin = client(&golang::toolchains()[0], Variant::Pie);
    let api = TestApi::start().expect("test API");
    let scenario = Scenario {
        proto: "h1",
        workers: 4,
        rounds: 1,
        kinds: &["declined", "customer"],
        big: 0,
    };
    let _serial = SERIAL
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner);
    let mut shell = KillOnDrop(
        Command::new("sh")
            .args(["-c", "read start; \"$0\" \"$@\""])
            .arg(&bin)
            .args(["-base", &api.server.base_url(), "-ca"])
            .arg(&api.server.ca_file)
            .args(scenario.args())
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .spawn()
            .expect("sh"),
    );
    let mut agent = Agent::start(&[
        "--pid".to_owned(),
        shell.0.id().to_string(),
        "--follow".to_owned(),
        "--packs".to_owned(),
        packs_dir().display().to_string(),
    ])
    .expect("agent");
    agent.wait_for_log("ready", READY).expect("agent ready");
    let mut stdin = shell.0.stdin.take().expect("stdin");
    let mut stdout = BufReader::new(shell.0.stdout.take().expect("stdout"));
    stdin.write_all(b"start\n").expect("start the client");
    let mut line = String::new();
    stdout.read_line(&mut line).expect("client ready");
    assert_eq!(line.trim(), "ready");
    agent
        .wait_for_log("flavour=Go", Duration::from_secs(10))
        .expect("the Go child is attached");
    stdin.write_all(b"go\n").expect("release the client");
    let mut printed = String::new();
    while !printed.contains("done failed=0") {
        let mut line = String::new();
        let n = stdout.read_line(&mut line).expect("client output");
        assert!(n > 0, "the client ended early: {printed}");
        printed.push_str(&line);
    }
    let child = agent
        .stderr_snapshot()
        .lines()
        .find(|l| l.contains("flavour=Go"))
        .and_then(|l| l.split("pid=").nth(1))
        .and_then(|p| p.split(' ').next())
        .and_then(|p| p.parse().ok())
        .expect("the child's pid in the attach line");
    check_lines(agent, "follow", child, api.server.addr.port(), &scenario);
    drop(stdin);
    assert!(shell.0.wait().expect("exit").success(), "{printed}");
}

/// 50 goroutines for about 20 s while the agent attaches and detaches five times: the client
/// never fails and prints exactly what it prints alone.
#[test]
fn attaching_and_detaching_under_load_never_harms_a_go_client() {
    require_root();
    let tc = golang::newest();
    let bin = client(&tc, Variant::Normal);
    let api = TestApi::start().expect("test API");
    // 50 goroutines × 100 requests, 200 ms apart: about 20 s.
    let args = [
        "-proto",
        "h1",
        "-workers",
        "50",
        "-rounds",
        "50",
        "-kinds",
        "ok,declined",
        "-pace",
        "200",
        "-summary",
    ];
    let alone = run_alone(&bin, &api, &args);
    let empty = TempDir::new("gotls-nopacks").expect("tempdir");

    let _serial = SERIAL
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner);
    let mut client = GoClient::start(&bin, &api, &args);
    let pid = client.pid();
    client.go();
    let started = std::time::Instant::now();
    let mut calls = Vec::new();
    for round in 0..5 {
        let agent = agent_for(pid, empty.path());
        std::thread::sleep(Duration::from_millis(1500));
        let out = agent.stop(Vec::new()).expect("agent stops");
        assert_eq!(out.code, Some(0), "round {round}: {}", out.stderr);
        calls.push(out.counter("kernel_calls"));
        std::thread::sleep(Duration::from_millis(300));
    }
    let attached_for = started.elapsed();
    let watched = client.finish();
    client.exit(&watched);
    assert_eq!(
        watched, alone,
        "the client's output changed under the agent"
    );
    assert!(
        calls.iter().all(|c| *c > 0),
        "every attachment saw calls: {calls:?}"
    );
    eprintln!(
        "5 attach/detach cycles in {:.1} s of a {:.1} s run; calls seen per cycle: {calls:?}",
        attached_for.as_secs_f64(),
        started.elapsed().as_secs_f64()
    );
    assert!(
        watched.lines().count() == 51 && watched.ends_with("done failed=0\n"),
        "{watched}"
    );
}

/// A Go HTTPS server watched on the server side: Go clients' requests and the server's answers are
/// captured on the server's own connections (fd and addresses included).
#[test]
fn a_go_server_is_captured_on_the_server_side() {
    require_root();
    let tc = golang::newest();
    let bin = golang::build(&tc, "server", Variant::Stripped).expect("go build");
    let dir = TempDir::new("gotls-server").expect("tempdir");
    let ca = dir.path().join("ca.pem");
    let mut server = KillOnDrop(
        Command::new(&bin)
            .arg("-ca")
            .arg(&ca)
            .stdout(Stdio::piped())
            .spawn()
            .expect("go server"),
    );
    let mut line = String::new();
    BufReader::new(server.0.stdout.take().expect("stdout"))
        .read_line(&mut line)
        .expect("server listening");
    let port: u16 = line
        .trim()
        .strip_prefix("listening ")
        .and_then(|p| p.parse().ok())
        .unwrap_or_else(|| panic!("unexpected server line {line:?}"));

    let _serial = SERIAL
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner);
    let record = dir.path().join("record");
    let mut agent = Agent::start(&[
        "--pid".to_owned(),
        server.0.id().to_string(),
        "--packs".to_owned(),
        packs_dir().display().to_string(),
        "--record".to_owned(),
        record.display().to_string(),
    ])
    .expect("agent");
    agent.wait_for_log("ready", READY).expect("agent ready");
    // Go clients against the Go server, over HTTP/1.1 and HTTP/2, each keeping its connection
    // open until the agent has stopped (the agent reads addresses from /proc).
    let mut clients = Vec::new();
    let client_bin = client(&tc, Variant::Normal);
    for proto in ["h1", "h2"] {
        let mut c = KillOnDrop(
            Command::new(&client_bin)
                .args(["-base", &format!("https://localhost:{port}"), "-ca"])
                .arg(&ca)
                .args([
                    "-proto",
                    proto,
                    "-workers",
                    "1",
                    "-kinds",
                    "declined,customer",
                ])
                .stdin(Stdio::piped())
                .stdout(Stdio::piped())
                .spawn()
                .expect("go client"),
        );
        let mut out = BufReader::new(c.0.stdout.take().expect("stdout"));
        let mut line = String::new();
        out.read_line(&mut line).expect("client ready");
        c.0.stdin
            .as_mut()
            .expect("stdin")
            .write_all(b"go\n")
            .expect("release client");
        let mut printed = String::new();
        while !printed.contains("done ") {
            line.clear();
            assert!(
                out.read_line(&mut line).expect("client output") > 0,
                "{printed}"
            );
            printed.push_str(&line);
        }
        assert!(printed.contains("declined status=402"), "{printed}");
        clients.push(c);
    }
    std::thread::sleep(Duration::from_millis(500));
    let out = agent.stop(Vec::new()).expect("agent stops");
    assert_eq!(out.code, Some(0), "{}", out.stderr);
    drop(clients);

    // Each client has one connection: its file holds what the server read and wrote.
    let mut ingress = Vec::new();
    let mut egress = Vec::new();
    let mut sources = Vec::new();
    for entry in std::fs::read_dir(&record).expect("recording") {
        let text = std::fs::read_to_string(entry.expect("entry").path()).expect("file");
        let (mut i, mut e) = (Vec::new(), Vec::new());
        for l in text.lines().skip(1) {
            let v: serde_json::Value = serde_json::from_str(l).expect("json line");
            if let Some(data) = v["data"].as_str() {
                let bytes = base64::engine::general_purpose::STANDARD
                    .decode(data)
                    .expect("base64");
                match v["dir"].as_str() {
                    Some("ingress") => i.extend(bytes),
                    _ => e.extend(bytes),
                }
            }
            if v.get("source").is_some() {
                sources.push(v["source"].clone());
            }
        }
        ingress.push(String::from_utf8_lossy(&i).into_owned());
        egress.push(String::from_utf8_lossy(&e).into_owned());
    }
    let h1 = ingress
        .iter()
        .position(|i| i.starts_with("POST /v1/charges HTTP/1.1"))
        .unwrap_or_else(|| panic!("the HTTP/1.1 request as the server read it: {ingress:?}"));
    assert!(
        ingress[h1].contains("amount=500&source=tok_chargeDeclined"),
        "{}",
        ingress[h1]
    );
    assert!(ingress[h1].contains("GET /v1/customers/cus_00 HTTP/1.1"));
    assert!(
        egress[h1].starts_with("HTTP/1.1 402 Payment Required"),
        "{}",
        egress[h1]
    );
    assert!(egress[h1].contains("card_error"));
    assert!(
        ingress
            .iter()
            .any(|i| i.starts_with("PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n")),
        "the HTTP/2 preface as the server read it: {ingress:?}"
    );
    assert!(!sources.is_empty());
    for s in &sources {
        assert!(s["fd"].as_i64().is_some_and(|fd| fd >= 0), "{s}");
        assert_eq!(
            s["localAddress"].as_str(),
            Some(format!("127.0.0.1:{port}").as_str())
        );
        assert!(
            s["remoteAddress"]
                .as_str()
                .is_some_and(|a| a.starts_with("127.0.0.1:"))
        );
    }
}
