//! Faults, end to end, as root, with the real eBPF programs and real clients: the agent killed
//! under load, the observed program killed in the middle of an exchange (many times), and a
//! recording directory on a full file system and a state
//! directory that is read-only. Each test asserts what must hold afterwards: the observed program
//! unharmed, nothing left attached, nothing reported that was not sent, and every loss counted.

use std::{
    collections::{BTreeMap, BTreeSet},
    io::{BufRead as _, BufReader, Write as _},
    path::{Path, PathBuf},
    process::{Command, Stdio},
    sync::mpsc,
    time::{Duration, Instant},
};

use taskless_e2e::harness::{
    Agent, KillOnDrop, TempDir, TestApi, dimensions, is_stats_line, packs_dir, require_root,
};

/// A Python client (OpenSSL's `SSL_read_ex`/`SSL_write_ex`) on `threads` kept-alive connections,
/// each thread calling in a loop once it reads `go`: even request numbers
/// `/v1/customers/cus_<i>[_<pad>]` (200, the id echoed in the body, so `pad` makes both request
/// and response longer), odd ones `/v1/unknown/<i>` (404). It checks every response and prints
/// `<i> <local port> <monotonic start time> <status> ok|BAD`. Commands on stdin: `pace S` (seconds
/// between a thread's calls), `pad N`, `stop` (finish, print `done`, then exit at the next line).
const LOAD_CLIENT: &str = r#"
import http.client, json, ssl, sys, threading, time
host, port, ca, threads = sys.argv[1], int(sys.argv[2]), sys.argv[3], int(sys.argv[4])
ctx = ssl.create_default_context(cafile=ca)
stop = threading.Event()
go = threading.Event()
lock = threading.Lock()
state = {"i": 0, "pace": float(sys.argv[5]), "pad": int(sys.argv[6])}
conns = []
for _ in range(threads):
    c = http.client.HTTPSConnection(host, port, context=ctx)
    c.connect()
    conns.append(c)
def worker(conn):
    lport = conn.sock.getsockname()[1]
    go.wait()
    while not stop.is_set():
        with lock:
            state["i"] += 1
            i, pace, pad = state["i"], state["pace"], state["pad"]
        if i % 2 == 0:
            ident = "cus_%d" % i + ("_" + "x" * pad if pad else "")
            path, want = "/v1/customers/" + ident, 200
        else:
            path, want = "/v1/unknown/%d" % i, 404
        t0 = time.monotonic()
        conn.request("GET", path)
        r = conn.getresponse()
        body = r.read()
        ok = r.status == want
        if ok and want == 200:
            ok = json.loads(body)["id"] == ident
        elif ok:
            ok = path.encode() in body
        with lock:
            print("%d %d %.6f %d %s" % (i, lport, t0, r.status, "ok" if ok else "BAD"), flush=True)
        if pace:
            time.sleep(pace)
workers = [threading.Thread(target=worker, args=(c,)) for c in conns]
for w in workers:
    w.start()
print("ready", flush=True)
for line in sys.stdin:
    cmd = line.split()
    if cmd == ["go"]:
        go.set()
    elif cmd and cmd[0] == "pace":
        with lock:
            state["pace"] = float(cmd[1])
    elif cmd and cmd[0] == "pad":
        with lock:
            state["pad"] = int(cmd[1])
    elif cmd == ["stop"]:
        go.set()
        stop.set()
        break
for w in workers:
    w.join()
print("done", flush=True)
sys.stdin.readline()
"#;

/// One call the load client made.
#[derive(Debug, Clone)]
struct Call {
    path: String,
    port: u16,
    started: f64,
    status: u16,
}

/// The load client, its output read on a thread.
struct LoadClient {
    child: KillOnDrop,
    lines: mpsc::Receiver<String>,
    calls: BTreeMap<u64, Call>,
    bad: Vec<String>,
    _dir: TempDir,
}

impl LoadClient {
    fn start(api: &TestApi, threads: u32, pace: f64, pad: usize) -> Self {
        let dir = TempDir::new("faults-client").expect("tempdir");
        let script = dir.path().join("client.py");
        std::fs::write(&script, LOAD_CLIENT).expect("script");
        let mut child = KillOnDrop(
            Command::new("python3")
                .arg(&script)
                .args([
                    "localhost".to_owned(),
                    api.server.addr.port().to_string(),
                    api.server.ca_file.display().to_string(),
                    threads.to_string(),
                    pace.to_string(),
                    pad.to_string(),
                ])
                .stdin(Stdio::piped())
                .stdout(Stdio::piped())
                .spawn()
                .expect("python3"),
        );
        let out = child.0.stdout.take().expect("stdout");
        let (tx, lines) = mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(out).lines().map_while(Result::ok) {
                if tx.send(line).is_err() {
                    break;
                }
            }
        });
        let first = lines
            .recv_timeout(Duration::from_secs(30))
            .expect("client ready");
        assert_eq!(first, "ready", "the client did not start");
        Self {
            child,
            lines,
            calls: BTreeMap::new(),
            bad: Vec::new(),
            _dir: dir,
        }
    }

    fn pid(&self) -> u32 {
        self.child.0.id()
    }

    fn send(&mut self, command: &str) {
        let stdin = self.child.0.stdin.as_mut().expect("stdin");
        writeln!(stdin, "{command}").expect("client stdin");
    }

    /// Reads what the client printed so far (waiting up to `wait` for more); true on `done`.
    fn drain(&mut self, wait: Duration) -> bool {
        let deadline = Instant::now() + wait;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            let Ok(line) = self.lines.recv_timeout(left.max(Duration::from_millis(1))) else {
                return false;
            };
            if line == "done" {
                return true;
            }
            let f: Vec<&str> = line.split(' ').collect();
            let parsed = (|| {
                let i: u64 = f.first()?.parse().ok()?;
                let call = Call {
                    path: String::new(),
                    port: f.get(1)?.parse().ok()?,
                    started: f.get(2)?.parse().ok()?,
                    status: f.get(3)?.parse().ok()?,
                };
                Some((i, call, *f.get(4)? == "ok"))
            })();
            match parsed {
                Some((i, mut call, ok)) => {
                    if !ok {
                        self.bad.push(line.clone());
                    }
                    call.path = if i % 2 == 0 {
                        format!("/v1/customers/cus_{i}")
                    } else {
                        format!("/v1/unknown/{i}")
                    };
                    self.calls.insert(i, call);
                }
                None => self.bad.push(line),
            }
        }
    }

    /// Stops the calls and reads everything the client printed.
    fn finish(&mut self) {
        self.send("stop");
        assert!(
            self.drain(Duration::from_secs(30)),
            "the client did not finish"
        );
    }

    /// Lets the client exit.
    fn exit(&mut self) {
        self.send("exit");
    }
}

/// `CLOCK_MONOTONIC` in seconds, the clock of Python's `time.monotonic()`.
fn monotonic() -> f64 {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: a valid out pointer.
    unsafe { libc::clock_gettime(libc::CLOCK_MONOTONIC, &raw mut ts) };
    #[allow(clippy::cast_precision_loss)]
    let secs = ts.tv_sec as f64 + ts.tv_nsec as f64 / 1e9;
    secs
}

/// A packs directory holding only the shipped `core` pack (path, method and status of every
/// exchange, nothing else to slow the agent down).
fn core_only(dir: &Path) -> PathBuf {
    let src = packs_dir().join("core@0.1.0");
    assert!(
        src.join("manifest.json").exists(),
        "packs not built in {}: run `cargo xtask test`",
        packs_dir().display()
    );
    let dst = dir.join("packs/core@0.1.0");
    std::fs::create_dir_all(&dst).expect("mkdir");
    for f in ["manifest.json", "config.json", "pack.wasm"] {
        std::fs::copy(src.join(f), dst.join(f)).expect("copy pack file");
    }
    dir.join("packs")
}

/// A line's `core/path`, `core/status` and local port.
fn exchange(line: &serde_json::Value) -> (Option<String>, Option<String>, Option<u16>) {
    let d = dimensions(line);
    let port = line["source"]["localAddress"]
        .as_str()
        .and_then(|a| a.rsplit_once(':'))
        .and_then(|(_, p)| p.parse().ok());
    (
        d.get("core/path").cloned(),
        d.get("core/status").cloned(),
        port,
    )
}

/// Every line is an exchange the client made: its path one the client asked for, its status the
/// one the client got for that path, on the connection the client used. Returns the lines by path.
fn check_no_garbage<'a>(
    lines: &'a [serde_json::Value],
    calls: &BTreeMap<u64, Call>,
) -> BTreeMap<String, &'a serde_json::Value> {
    let by_path: BTreeMap<&str, &Call> = calls.values().map(|c| (c.path.as_str(), c)).collect();
    let mut seen = BTreeMap::new();
    for line in lines {
        let (path, status, port) = exchange(line);
        let path = path.unwrap_or_else(|| panic!("a line without a path: {line}"));
        // Padded ids are reported with their padding; the client's record keeps the bare id.
        let bare = match path.split_once("_x") {
            Some((head, tail)) if tail.bytes().all(|b| b == b'x') => head.to_owned(),
            _ => path.clone(),
        };
        let call = by_path
            .get(bare.as_str())
            .unwrap_or_else(|| panic!("a line for a path the client never asked for: {line}"));
        if line["complete"] != serde_json::Value::Bool(false) {
            assert_eq!(
                status.as_deref(),
                Some(call.status.to_string().as_str()),
                "an exchange paired with another's response: {line}"
            );
        }
        assert_eq!(
            port,
            Some(call.port),
            "an exchange reported on another connection: {line}"
        );
        assert!(
            seen.insert(bare, line).is_none(),
            "an exchange reported twice: {line}"
        );
    }
    seen
}

/// Program ids and link ids the process `pid` holds open (its `/proc/PID/fdinfo`).
fn bpf_objects(pid: u32) -> (BTreeSet<u64>, BTreeSet<u64>) {
    let mut progs = BTreeSet::new();
    let mut links = BTreeSet::new();
    let Ok(entries) = std::fs::read_dir(format!("/proc/{pid}/fdinfo")) else {
        return (progs, links);
    };
    for entry in entries.flatten() {
        let text = std::fs::read_to_string(entry.path()).unwrap_or_default();
        for line in text.lines() {
            let mut kv = line.splitn(2, ':').map(str::trim);
            match (kv.next(), kv.next().and_then(|v| v.parse().ok())) {
                (Some("prog_id"), Some(id)) => {
                    progs.insert(id);
                }
                (Some("link_id"), Some(id)) => {
                    links.insert(id);
                }
                _ => {}
            }
        }
    }
    (progs, links)
}

fn bpftool(args: &[&str]) -> serde_json::Value {
    let out = Command::new("bpftool")
        .args(args)
        .arg("-j")
        .output()
        .expect("bpftool (installed by `cargo xtask setup`)");
    assert!(
        out.status.success(),
        "bpftool {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).unwrap_or(serde_json::Value::Array(Vec::new()))
}

/// What the kernel still has of the agent `pid` whose programs and links were `progs` and
/// `links`: uprobes held by `pid` or running one of `progs` (`bpftool perf`), loaded programs
/// among `progs` (`bpftool prog`), links among `links` (`bpftool link`), and uprobe events made
/// through tracefs on its behalf (aya names them `aya_<pid>_...`).
fn left_attached(pid: u32, progs: &BTreeSet<u64>, links: &BTreeSet<u64>) -> Vec<String> {
    let mut left = Vec::new();
    let ids = |v: &serde_json::Value, key: &str| -> Vec<u64> {
        v.as_array()
            .map(|a| a.iter().filter_map(|e| e[key].as_u64()).collect())
            .unwrap_or_default()
    };
    let perf = bpftool(&["perf"]);
    for e in perf.as_array().into_iter().flatten() {
        let held = e["pid"].as_u64() == Some(u64::from(pid));
        let runs = e["prog_id"].as_u64().is_some_and(|id| progs.contains(&id));
        if held || runs {
            left.push(format!("perf event {e}"));
        }
    }
    for id in ids(&bpftool(&["prog", "show"]), "id") {
        if progs.contains(&id) {
            left.push(format!("program {id}"));
        }
    }
    for id in ids(&bpftool(&["link", "show"]), "id") {
        if links.contains(&id) {
            left.push(format!("link {id}"));
        }
    }
    let alias = format!("aya_{pid}_");
    for dir in ["/sys/kernel/tracing", "/sys/kernel/debug/tracing"] {
        let events = std::fs::read_to_string(format!("{dir}/uprobe_events")).unwrap_or_default();
        left.extend(
            events
                .lines()
                .filter(|l| l.contains(&alias))
                .map(|l| format!("{dir}/uprobe_events: {l}")),
        );
    }
    left
}

#[test]
fn a_killed_agent_leaves_the_program_unharmed_and_nothing_attached_and_a_new_one_picks_the_connections_up()
 {
    require_root();
    let api = TestApi::start().expect("test API");
    let dir = TempDir::new("faults-kill").expect("tempdir");
    let packs = core_only(dir.path());
    let mut client = LoadClient::start(&api, 3, 0.0, 0);
    let pid = client.pid().to_string();
    // The client calls as fast as it can, and a debug agent's nice-10 pack worker can fall
    // behind it for a moment and shed core on a few exchanges (their lines say so, without
    // core's status). This test checks pairing after a kill, not shedding (packs_e2e does), so
    // the worker's queue is made large enough never to reach a quarter full here.
    let args = [
        "--pid",
        &pid,
        "--packs",
        &packs.display().to_string(),
        "--stats-interval",
        "0",
        "--queue",
        "65536",
    ];
    client.send("go");
    client.drain(Duration::from_millis(500));

    let mut first = Agent::start(&args).expect("agent");
    first
        .wait_for_log("ready", Duration::from_secs(60))
        .expect("first agent ready");
    let mut seen = Vec::new();
    first
        .wait_for_lines(50, Duration::from_secs(30), &mut seen)
        .expect("the first agent reports the load");
    let first_pid = first.pid();
    let (progs, links) = bpf_objects(first_pid);
    let attached = left_attached(first_pid, &progs, &links);
    assert!(
        attached.iter().any(|l| l.starts_with("perf event")) && !progs.is_empty(),
        "the running agent's uprobes and programs must be visible to bpftool: {attached:?}, programs {progs:?}"
    );
    let before_kill = client.calls.len();
    first.kill().expect("SIGKILL the agent");
    let killed_at = monotonic();

    // The kernel frees what the agent held once its file descriptors are gone.
    let deadline = Instant::now() + Duration::from_secs(10);
    let mut left = left_attached(first_pid, &progs, &links);
    while !left.is_empty() && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(200));
        left = left_attached(first_pid, &progs, &links);
    }
    assert!(left.is_empty(), "left attached after SIGKILL: {left:#?}");

    // The client keeps calling, unharmed.
    client.drain(Duration::from_secs(1));
    let after_kill = client
        .calls
        .values()
        .filter(|c| c.started > killed_at)
        .count();
    assert!(
        after_kill > 10,
        "the client stopped calling after the agent was killed ({before_kill} calls before, {after_kill} after)"
    );
    assert!(client.bad.is_empty(), "wrong responses: {:?}", client.bad);

    // A new agent on the same process and the same kept-alive connections.
    let mut second = Agent::start(&args).expect("agent");
    second
        .wait_for_log("ready", Duration::from_secs(60))
        .expect("second agent ready");
    let ready_at = monotonic();
    client.drain(Duration::from_secs(3));
    client.finish();
    let mut seen = Vec::new();
    let calls_after: Vec<Call> = client
        .calls
        .values()
        .filter(|c| c.started > ready_at)
        .cloned()
        .collect();
    assert!(
        calls_after.len() > 20,
        "too few calls after the restart to mean anything"
    );
    let _ = second.wait_for_lines(calls_after.len(), Duration::from_secs(30), &mut seen);
    let out = second.stop(seen).expect("second agent output");
    client.exit();
    assert!(client.bad.is_empty(), "wrong responses: {:?}", client.bad);
    let ports: BTreeSet<u16> = client.calls.values().map(|c| c.port).collect();
    assert_eq!(
        ports.len(),
        3,
        "the client kept its 3 connections: {ports:?}"
    );

    let reported = check_no_garbage(&out.lines, &client.calls);
    let missing: Vec<_> = calls_after
        .iter()
        .filter(|c| !reported.contains_key(&c.path))
        .collect();
    assert!(
        missing.is_empty(),
        "calls made after the new agent was ready but not reported: {missing:#?}\n{}",
        out.stderr
    );
    for c in ["lost_bytes", "dropped_jobs", "kernel_ringbuf_full"] {
        assert_eq!(out.counter(c), 0, "{c}\n{}", out.stderr);
    }
    eprintln!(
        "kill: {before_kill} calls before the SIGKILL, {after_kill} after it while the kernel was checked, {} after the new agent was ready, all reported",
        calls_after.len()
    );
}

/// A Python client that, on `go`, opens a connection and asks for `/v1/gate?k=<k>` (held by the
/// server until the gate opens), then waits.
const GATE_CLIENT: &str = r#"
import http.client, ssl, sys
host, port, ca, k = sys.argv[1], int(sys.argv[2]), sys.argv[3], sys.argv[4]
ctx = ssl.create_default_context(cafile=ca)
print("ready", flush=True)
sys.stdin.readline()
conn = http.client.HTTPSConnection(host, port, context=ctx)
conn.request("GET", "/v1/gate?k=" + k)
conn.getresponse().read()
"#;

#[test]
fn a_program_killed_mid_exchange_is_reported_incomplete_and_its_connection_state_freed() {
    const ROUNDS: usize = 4;
    const PER_ROUND: usize = 4;
    require_root();
    let api = TestApi::start().expect("test API");
    let dir = TempDir::new("faults-target").expect("tempdir");
    let packs = core_only(dir.path());
    let script = dir.path().join("gate.py");
    std::fs::write(&script, GATE_CLIENT).expect("script");
    // One more client than is killed, never sent `go`: it keeps the agent running.
    let mut clients: Vec<KillOnDrop> = (0..=ROUNDS * PER_ROUND)
        .map(|k| {
            let mut c = KillOnDrop(
                Command::new("python3")
                    .arg(&script)
                    .args([
                        "localhost".to_owned(),
                        api.server.addr.port().to_string(),
                        api.server.ca_file.display().to_string(),
                        k.to_string(),
                    ])
                    .stdin(Stdio::piped())
                    .stdout(Stdio::piped())
                    .spawn()
                    .expect("python3"),
            );
            let mut line = String::new();
            BufReader::new(c.0.stdout.as_mut().expect("stdout"))
                .read_line(&mut line)
                .expect("client output");
            assert_eq!(line.trim(), "ready");
            c
        })
        .collect();
    let mut args = vec![
        "--packs".to_owned(),
        packs.display().to_string(),
        "--stats-interval".to_owned(),
        "1".to_owned(),
    ];
    for c in &clients {
        args.extend(["--pid".to_owned(), c.0.id().to_string()]);
    }
    let mut agent = Agent::start(&args).expect("agent");
    agent
        .wait_for_log("ready", Duration::from_secs(60))
        .expect("agent ready");
    let mut seen = Vec::new();
    let mut live_after_round = Vec::new();
    for round in 0..ROUNDS {
        let batch = round * PER_ROUND..(round + 1) * PER_ROUND;
        for c in &mut clients[batch.clone()] {
            c.0.stdin
                .as_mut()
                .expect("stdin")
                .write_all(b"go\n")
                .expect("go");
        }
        api.wait_gate_waiters(batch.end, Duration::from_secs(30))
            .expect("requests at the gate");
        // Killed while their responses are held, a moment after the requests went out.
        std::thread::sleep(Duration::from_millis(300));
        for c in &mut clients[batch.clone()] {
            c.0.kill().expect("SIGKILL the client");
            c.0.wait().expect("reap");
        }
        for k in batch {
            assert!(
                agent.wait_for_line_containing(
                    &format!("/v1/gate?k={k}\""),
                    Duration::from_secs(30),
                    &mut seen
                ),
                "the exchange of the killed client {k} was not reported: {seen:#?}"
            );
        }
        // The next stats line after the lines came out.
        let deadline = Instant::now() + Duration::from_secs(10);
        let stats_lines = |agent: &Agent| {
            agent
                .stderr_snapshot()
                .lines()
                .filter(|l| is_stats_line(l))
                .count()
        };
        let stats_before = stats_lines(&agent);
        while stats_lines(&agent) < stats_before + 2 && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(100));
        }
        live_after_round.push(agent.latest_stat("live_connections"));
    }
    assert!(
        live_after_round.iter().all(|l| *l == Some(0)),
        "connections of killed programs still held after each round: {live_after_round:?}\n{}",
        agent.stderr_snapshot()
    );
    let out = agent.stop(seen).expect("agent output");
    let killed = ROUNDS * PER_ROUND;
    assert_eq!(out.lines.len(), killed, "{:#?}", out.lines);
    for line in &out.lines {
        assert_eq!(
            line["complete"],
            serde_json::Value::Bool(false),
            "an exchange whose client was killed before the response: {line}"
        );
        assert_eq!(
            dimensions(line).get("core/path").map(String::as_str),
            Some("/v1/gate")
        );
    }
    assert_eq!(out.counter("connections"), killed as u64, "{}", out.stderr);
    assert_eq!(out.counter("evicted"), killed as u64, "{}", out.stderr);
    assert_eq!(out.counter("incomplete"), killed as u64, "{}", out.stderr);
    api.server.open_gate();
    eprintln!(
        "target kills: {killed} clients killed at the gate, each reported incomplete, live connections after each round {live_after_round:?}"
    );
}

/// A tmpfs mounted for one test, unmounted on drop.
struct Mount(PathBuf);

impl Mount {
    fn tmpfs(at: &Path, options: &str) -> Self {
        std::fs::create_dir_all(at).expect("mount point");
        let status = Command::new("mount")
            .args(["-t", "tmpfs", "-o", options, "taskless-test"])
            .arg(at)
            .status()
            .expect("mount");
        assert!(status.success(), "mount -t tmpfs -o {options} failed");
        Self(at.to_path_buf())
    }

    fn remount(&self, options: &str) {
        let status = Command::new("mount")
            .args(["-o", &format!("remount,{options}")])
            .arg(&self.0)
            .status()
            .expect("mount");
        assert!(status.success(), "remount {options} failed");
    }
}

impl Drop for Mount {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg("-l").arg(&self.0).status();
    }
}

/// Runs the load client (`threads` connections, `pad`) for a few seconds under an agent started
/// with `extra` arguments; gives the client's calls and the agent's output.
fn run_with(
    api: &TestApi,
    packs: &Path,
    extra: &[String],
    pad: usize,
) -> (BTreeMap<u64, Call>, taskless_e2e::harness::AgentOutput) {
    let mut client = LoadClient::start(api, 2, 0.02, pad);
    let mut args = vec![
        "--pid".to_owned(),
        client.pid().to_string(),
        "--packs".to_owned(),
        packs.display().to_string(),
        "--stats-interval".to_owned(),
        "0".to_owned(),
    ];
    args.extend_from_slice(extra);
    let mut agent = Agent::start(&args).expect("agent");
    agent
        .wait_for_log("ready", Duration::from_secs(60))
        .expect("agent ready");
    client.send("go");
    client.drain(Duration::from_secs(3));
    client.finish();
    let mut seen = Vec::new();
    let _ = agent.wait_for_lines(client.calls.len(), Duration::from_secs(20), &mut seen);
    let out = agent.stop(seen).expect("agent output");
    client.exit();
    assert!(client.bad.is_empty(), "wrong responses: {:?}", client.bad);
    (std::mem::take(&mut client.calls), out)
}

/// Every call the client made is a line, whole.
fn all_reported(calls: &BTreeMap<u64, Call>, out: &taskless_e2e::harness::AgentOutput) {
    let reported = check_no_garbage(&out.lines, calls);
    assert_eq!(
        reported.len(),
        calls.len(),
        "every call must be reported\n{}",
        out.stderr
    );
    assert!(
        out.lines
            .iter()
            .all(|l| l["complete"] != serde_json::Value::Bool(false)),
        "{:#?}",
        out.lines
    );
}

#[test]
fn a_full_disk_for_the_recording_is_said_once_with_its_path_and_capture_goes_on() {
    require_root();
    let api = TestApi::start().expect("test API");
    let dir = TempDir::new("faults-disk").expect("tempdir");
    let packs = core_only(dir.path());
    let disk = dir.path().join("disk");
    let _mount = Mount::tmpfs(&disk, "size=64k");
    let rec = disk.join("rec");
    // About 100 calls of 2 KiB each way: far more than 64 KiB.
    let (calls, out) = run_with(
        &api,
        &packs,
        &["--record".to_owned(), rec.display().to_string()],
        2000,
    );
    assert!(calls.len() > 40, "too few calls: {}", calls.len());
    all_reported(&calls, &out);
    let said: Vec<&str> = out
        .stderr
        .lines()
        .filter(|l| l.contains("cannot write the recording"))
        .collect();
    assert_eq!(said.len(), 1, "said once:\n{}", out.stderr);
    assert!(
        said[0].contains(&rec.display().to_string()) && said[0].contains("No space left"),
        "the error names the file and the cause: {}",
        said[0]
    );
    let closed = out
        .stderr
        .lines()
        .find(|l| l.contains("recording closed"))
        .expect("recording closed line");
    let failed: u64 = closed
        .split(" failed=")
        .nth(1)
        .and_then(|v| v.split(' ').next())
        .and_then(|v| v.parse().ok())
        .expect("failed counter");
    assert!(failed > 0, "failures counted: {closed}");
    eprintln!(
        "full disk: {} calls reported, recording failures counted {failed}, said once",
        calls.len()
    );
}

#[test]
fn a_read_only_state_directory_is_said_with_its_path_and_capture_goes_on() {
    require_root();
    let api = TestApi::start().expect("test API");
    let dir = TempDir::new("faults-state").expect("tempdir");
    let packs = core_only(dir.path());

    // Empty and read-only: no compile cache can be made.
    let empty = dir.path().join("empty-state");
    let _empty = Mount::tmpfs(&empty, "ro,size=1m");
    let (calls, out) = run_with(
        &api,
        &packs,
        &["--state-dir".to_owned(), empty.display().to_string()],
        0,
    );
    all_reported(&calls, &out);
    let without_cache = calls.len();
    let said: Vec<&str> = out
        .stderr
        .lines()
        .filter(|l| l.contains(&empty.display().to_string()))
        .collect();
    assert!(
        said.len() == 1 && said[0].contains("Read-only file system"),
        "one line names the read-only state directory and the cause:\n{}",
        out.stderr
    );

    // A cache made earlier, then the directory turned read-only: it is used as it is.
    let filled = dir.path().join("filled-state");
    let mount = Mount::tmpfs(&filled, "size=64m");
    let state_args = ["--state-dir".to_owned(), filled.display().to_string()];
    let _ = run_with(&api, &packs, &state_args, 0);
    mount.remount("ro");
    let (calls, out) = run_with(&api, &packs, &state_args, 0);
    all_reported(&calls, &out);
    let complaints: Vec<&str> = out
        .stderr
        .lines()
        .filter(|l| l.contains(" WARN ") || l.contains(" ERROR "))
        .collect();
    assert!(
        complaints.len() <= 1,
        "a read-only cache that is already filled is at most said once:\n{}",
        out.stderr
    );
    eprintln!(
        "read-only state: {without_cache} calls reported with the cache unusable; {} with a filled read-only cache",
        calls.len()
    );
}

/// One kept-alive connection: a small call, downloads larger than the ring buffer can take in
/// one record, then small calls again.
const OVERFLOW_CLIENT: &str = r#"
import http.client, ssl, sys
port, ca = int(sys.argv[1]), sys.argv[2]
ctx = ssl.create_default_context(cafile=ca)
conn = http.client.HTTPSConnection("localhost", port, context=ctx)
conn.connect()
print("ready", flush=True); sys.stdin.readline()
def get(path):
    conn.request("GET", path); r = conn.getresponse(); body = r.read()
    assert r.status == 200, (path, r.status)
    return body
get("/v1/customers/cus_before")
for i in range(3):
    assert get("/v1/bytes?n=200000") == b"0123456789" * 20000
for i in range(5):
    get("/v1/customers/cus_after_%d" % i)
print("done", flush=True)
"#;

/// A ring buffer too small for a whole TLS record (16 KiB of plaintext cannot fit in a 16 KiB
/// ring): each such read is lost, counted (`kernel_ringbuf_full`), and the connection's next
/// record says records were lost before it, so the parser starts over at the next message
/// (`desyncs`): the calls after are reported whole and right, the downloads incomplete if at
/// all, and nothing is paired with another call's response.
#[test]
fn a_tiny_ring_buffer_drops_are_counted_and_the_parser_starts_over() {
    require_root();
    let api = TestApi::start().expect("test API");
    let dir = TempDir::new("faults-ring").expect("tempdir");
    let script = dir.path().join("client.py");
    std::fs::write(&script, OVERFLOW_CLIENT).expect("script");
    let mut client = KillOnDrop(
        Command::new("python3")
            .arg(&script)
            .args([
                api.server.addr.port().to_string(),
                api.server.ca_file.display().to_string(),
            ])
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .spawn()
            .expect("python3"),
    );
    let mut out = BufReader::new(client.0.stdout.take().expect("stdout"));
    let mut line = String::new();
    out.read_line(&mut line).expect("ready");
    assert_eq!(line.trim(), "ready");
    let packs = core_only(dir.path());
    let mut agent = Agent::start(&[
        "--pid",
        &client.0.id().to_string(),
        "--packs",
        &packs.display().to_string(),
        "--ringbuf-size",
        "16384",
        "--stats-interval",
        "0",
    ])
    .expect("agent");
    agent
        .wait_for_log("ready", Duration::from_secs(60))
        .expect("agent ready");
    client
        .0
        .stdin
        .as_mut()
        .expect("stdin")
        .write_all(b"go\n")
        .expect("go");
    line.clear();
    out.read_line(&mut line).expect("done");
    assert_eq!(line.trim(), "done", "the client's calls all succeeded");
    let mut seen = Vec::new();
    let _ = agent.wait_for_lines(6, Duration::from_secs(20), &mut seen);
    let out = agent.stop(seen).expect("agent output");
    drop(client);

    let mut small = BTreeSet::new();
    for l in &out.lines {
        let (path, status, _) = exchange(l);
        let path = path.unwrap_or_else(|| panic!("a line without a path: {l}"));
        if path == "/v1/bytes" {
            assert_eq!(l["complete"], false, "a download missing records: {l}");
            continue;
        }
        assert!(
            path == "/v1/customers/cus_before" || path.starts_with("/v1/customers/cus_after_"),
            "a line for a path the client never asked for: {l}"
        );
        assert_eq!(status.as_deref(), Some("200"), "{l}");
        assert_ne!(l["complete"], false, "{l}");
        assert!(small.insert(path), "an exchange reported twice: {l}");
    }
    assert_eq!(
        small.len(),
        6,
        "every small call is reported: {:#?}",
        out.lines
    );
    assert!(
        out.counter("kernel_ringbuf_full") >= 3,
        "the downloads' records were dropped and counted\n{}",
        out.stderr
    );
    assert!(out.counter("desyncs") >= 3, "{}", out.stderr);
}
