//! End to end, as root: a real Python client calls the local test API, which answers like
//! Stripe and OpenAI (including a streamed completion); the agent's output carries the shipped
//! stripe and openai packs' captures. The packs are pointed at `localhost` through their
//! `config.json` configuration, as a user would install them for another host.
//!
//! The pack stage under load: a deliberately slow test pack next to `core` is shed (skipped
//! for the exchanges its worker cannot keep up with) while every exchange keeps its line and
//! its `core` dimensions.

#[path = "../../pack-runtime/tests/support/mod.rs"]
mod support;

use std::{
    io::{BufRead as _, Read as _, Write as _},
    net::{SocketAddr, TcpStream},
    process::{Command, Stdio},
    time::{Duration, Instant},
};

use taskless_e2e::harness::{
    Agent, KillOnDrop, TempDir, TestApi, dimensions, matching, packs_dir, packs_for_localhost,
    require_root,
};

const CLIENT: &str = r#"
import http.client, json, ssl, sys
port, ca = int(sys.argv[1]), sys.argv[2]
conn = http.client.HTTPSConnection("localhost", port, context=ssl.create_default_context(cafile=ca))
conn.request("GET", "/v1/customers/cus_warm"); conn.getresponse().read()
print("ready", flush=True); sys.stdin.readline()
form = {"Content-Type": "application/x-www-form-urlencoded"}
def call(method, path, body=None, headers={}):
    conn.request(method, path, body=body, headers=headers)
    r = conn.getresponse(); r.read(); return r.status
assert call("POST", "/v1/charges", "amount=100&source=tok_chargeDeclined", dict(form, **{"Idempotency-Key": "idem-402"})) == 402
chat = {"model": "gpt-4o-mini", "messages": [{"role": "user", "content": "hi"}]}
assert call("POST", "/v1/chat/completions", json.dumps(chat), {"Content-Type": "application/json"}) == 200
assert call("POST", "/v1/chat/completions", json.dumps(dict(chat, stream=True, model="gpt-4o-stream")), {"Content-Type": "application/json"}) == 200
"#;

#[test]
fn stripe_and_openai_packs_capture_from_a_real_client() {
    require_root();
    let api = TestApi::start().expect("test API");
    let dir = TempDir::new("packs-e2e").expect("tempdir");
    let packs = dir.path().join("packs");
    packs_for_localhost(&packs);
    let script = dir.path().join("client.py");
    std::fs::write(&script, CLIENT).expect("script");

    let mut py = KillOnDrop(
        Command::new("python3")
            .arg(&script)
            .arg(api.server.addr.port().to_string())
            .arg(&api.server.ca_file)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .spawn()
            .expect("python3"),
    );
    let mut line = String::new();
    std::io::BufReader::new(py.0.stdout.take().expect("stdout"))
        .read_line(&mut line)
        .expect("ready");
    assert_eq!(line.trim(), "ready");
    let pid = py.0.id().to_string();
    let packs_arg = packs.display().to_string();
    let mut agent = Agent::start(&["--pid", &pid, "--packs", &packs_arg]).expect("agent");
    agent
        .wait_for_log("ready", Duration::from_secs(60))
        .expect("agent ready");
    py.0.stdin
        .as_mut()
        .expect("stdin")
        .write_all(b"go\n")
        .expect("release");
    assert!(
        py.0.wait().expect("python exits").success(),
        "client failed"
    );
    let mut seen = Vec::new();
    agent
        .wait_for_lines(3, Duration::from_secs(30), &mut seen)
        .expect("three exchanges");
    let out = agent.stop(seen).expect("agent stops");

    let stripe = matching(
        &out.lines,
        &[
            ("stripe/idempotencyKey", "idem-402"),
            ("stripe/status", "402"),
            ("stripe/errorType", "card_error"),
            ("stripe/errorCode", "card_declined"),
            ("stripe/declineCode", "generic_decline"),
            ("stripe/requestId", "req_test402"),
            (
                "stripe/requestLogUrl",
                "https://dashboard.stripe.com/test/logs/req_test402",
            ),
        ],
    );
    assert_eq!(stripe.len(), 1, "stripe captures in {:#?}", out.lines);

    let chat = matching(
        &out.lines,
        &[
            ("openai/model", "gpt-4o-mini"),
            ("openai/endpoint", "/v1/chat/completions"),
            ("openai/promptTokens", "12"),
            ("openai/completionTokens", "3"),
            ("openai/totalTokens", "15"),
            ("openai/cachedTokens", "4"),
            ("openai/requestId", "req_chat_test"),
            ("openai/processingMs", "42"),
        ],
    );
    assert_eq!(chat.len(), 1, "openai captures in {:#?}", out.lines);

    // The streamed completion: usage comes from the last server-sent event, through `chunk`.
    let streamed = matching(
        &out.lines,
        &[("openai/model", "gpt-4o-stream"), ("openai/stream", "1")],
    );
    assert_eq!(streamed.len(), 1, "streamed completion in {:#?}", out.lines);
    let d = dimensions(streamed[0]);
    assert_eq!(
        d.get("openai/totalTokens").map(String::as_str),
        Some("15"),
        "{d:?}"
    );
    assert_eq!(
        d.get("openai/requestId").map(String::as_str),
        Some("req_chat_stream"),
        "{d:?}"
    );
    // Packs configured for another host never ran here.
    assert!(
        out.lines
            .iter()
            .all(|l| !dimensions(l).keys().any(|k| k.starts_with("anthropic/")))
    );
}

/// Calls `GET /v1/customers/cus_<i>` `n` times on one connection once told to go, says
/// "done", and exits on the next line (so the agent, which stops when its process exits, can
/// be asked for its metrics first).
const MANY: &str = r#"
import http.client, ssl, sys
port, ca, n = int(sys.argv[1]), sys.argv[2], int(sys.argv[3])
conn = http.client.HTTPSConnection("localhost", port, context=ssl.create_default_context(cafile=ca))
conn.request("GET", "/v1/customers/cus_warm"); conn.getresponse().read()
print("ready", flush=True); sys.stdin.readline()
for i in range(n):
    conn.request("GET", "/v1/customers/cus_%d" % i)
    r = conn.getresponse(); r.read(); assert r.status == 200
print("done", flush=True); sys.stdin.readline()
"#;

/// Copies the built `core` pack alone into `dir`.
fn core_pack_into(dir: &std::path::Path) {
    let core = std::fs::read_dir(packs_dir())
        .expect("built packs (cargo xtask build-packs)")
        .filter_map(Result::ok)
        .map(|e| e.path())
        .find(|p| {
            p.file_name()
                .and_then(|n| n.to_str())
                .is_some_and(|n| n.starts_with("core@"))
        })
        .expect("a built core pack");
    let to = dir.join(core.file_name().expect("name"));
    std::fs::create_dir_all(&to).expect("mkdir");
    for f in ["manifest.json", "config.json", "pack.wasm"] {
        std::fs::copy(core.join(f), to.join(f)).expect("copy pack file");
    }
}

/// Starts the Python client of `script` with `args` and waits for its "ready"; gives it with
/// the rest of its output.
fn ready_client(
    script: &std::path::Path,
    args: &[String],
) -> (KillOnDrop, std::io::BufReader<std::process::ChildStdout>) {
    let mut py = KillOnDrop(
        Command::new("python3")
            .arg(script)
            .args(args)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .spawn()
            .expect("python3"),
    );
    let mut out = std::io::BufReader::new(py.0.stdout.take().expect("stdout"));
    let mut line = String::new();
    out.read_line(&mut line).expect("ready");
    assert_eq!(line.trim(), "ready");
    (py, out)
}

/// The agent's `/metrics` text (it serves them with `--metrics-addr 127.0.0.1:0`).
/// The nice value of the thread of process `pid` named `name` (`/proc/PID/task/*/stat`).
fn thread_nice(pid: u32, name: &str) -> Option<i64> {
    std::fs::read_dir(format!("/proc/{pid}/task"))
        .ok()?
        .filter_map(Result::ok)
        .find_map(|task| {
            let stat = std::fs::read_to_string(task.path().join("stat")).ok()?;
            let (open, close) = (stat.find('(')?, stat.rfind(')')?);
            if &stat[open + 1..close] != name {
                return None;
            }
            // The nice value is field 19; after the name, field 3 (the state) comes first.
            stat[close + 1..].split_whitespace().nth(16)?.parse().ok()
        })
}

fn scrape(agent: &Agent) -> String {
    let addr: SocketAddr = agent
        .log_field("metrics=true", "addr")
        .and_then(|a| a.parse().ok())
        .expect("metrics address in the log");
    let mut stream = TcpStream::connect_timeout(&addr, Duration::from_secs(5)).expect("connect");
    stream
        .set_read_timeout(Some(Duration::from_secs(10)))
        .expect("timeout");
    write!(stream, "GET /metrics HTTP/1.0\r\nHost: {addr}\r\n\r\n").expect("request");
    let mut response = String::new();
    stream.read_to_string(&mut response).expect("response");
    assert!(response.starts_with("HTTP/1.0 200 "), "{response}");
    response
}

/// The value of the sample `series` (name and labels, as written) in `/metrics` text.
fn sample(metrics: &str, series: &str) -> Option<f64> {
    metrics
        .lines()
        .find_map(|l| l.strip_prefix(series)?.strip_prefix(' '))
        .and_then(|v| v.trim().parse().ok())
}

/// The built `core` pack and `slow@1.0.0`, a test pack that spends 10 ms of busy work in each
/// of its `pre` and `post` (capturing `pre` and `post`), into `packs`.
fn core_and_slow_packs_into(packs: &std::path::Path) {
    core_pack_into(packs);
    let slow = support::module(&[
        (
            "pre",
            support::Behavior::SpinMs(10, r#"{"capture":{"pre":1}}"#.into()),
        ),
        (
            "post",
            support::Behavior::SpinMs(10, r#"{"capture":{"post":1}}"#.into()),
        ),
    ]);
    support::write_pack(
        packs,
        "slow@1.0.0",
        &support::manifest("slow", None),
        &support::config(),
        &slow,
    );
}

/// Every line has `core`'s status (200) and path, and names no skipped pack but `slow`.
fn each_keeps_core_and_sheds_only_slow(lines: &[serde_json::Value]) {
    for line in lines {
        let d = dimensions(line);
        assert_eq!(
            d.get("core/status").map(String::as_str),
            Some("200"),
            "{line}"
        );
        assert!(d.contains_key("core/path"), "{line}");
        let skipped = line["skipped"].as_array().cloned().unwrap_or_default();
        assert!(
            skipped.iter().all(|p| p == "slow"),
            "only the slow pack is shed: {line}"
        );
    }
}

#[test]
fn a_slow_pack_is_shed_and_every_exchange_keeps_its_core_dimensions() {
    require_root();
    const EXCHANGES: usize = 300;
    let api = TestApi::start().expect("test API");
    let dir = TempDir::new("packs-shed").expect("tempdir");
    let packs = dir.path().join("packs");
    // 20 ms an exchange, far slower than the client's pace.
    core_and_slow_packs_into(&packs);
    let script = dir.path().join("client.py");
    std::fs::write(&script, MANY).expect("script");
    let (mut py, mut py_out) = ready_client(
        &script,
        &[
            api.server.addr.port().to_string(),
            api.server.ca_file.display().to_string(),
            EXCHANGES.to_string(),
        ],
    );
    let pid = py.0.id().to_string();
    let packs_arg = packs.display().to_string();
    let mut agent = Agent::start(&[
        "--pid",
        &pid,
        "--packs",
        &packs_arg,
        "--workers",
        "1",
        // Four moments an exchange (request, response head, body, end): at most 1,200 queued,
        // so the queue passes a quarter (shedding the slow pack) but never three quarters
        // full, where every pack, core too, would be shed.
        "--queue",
        "2048",
        // No CPU budget: this test is about the queue (the next one is about the budget).
        "--pack-cpu",
        "0",
        "--metrics-addr",
        "127.0.0.1:0",
    ])
    .expect("agent");
    agent
        .wait_for_log("ready", Duration::from_secs(60))
        .expect("agent ready");
    // The pack worker runs after the watched program (`--pack-nice`, 10 by default); capture
    // keeps the agent's priority.
    assert_eq!(thread_nice(agent.pid(), "packs-0"), Some(10));
    assert_eq!(thread_nice(agent.pid(), "taskless-agent"), Some(0));
    py.0.stdin
        .as_mut()
        .expect("stdin")
        .write_all(b"go\n")
        .expect("release");
    let mut done = String::new();
    py_out.read_line(&mut done).expect("client output");
    assert_eq!(done.trim(), "done", "client failed");
    let mut seen = Vec::new();
    agent
        .wait_for_lines(EXCHANGES, Duration::from_secs(60), &mut seen)
        .expect("a line for every exchange");
    // Every exchange's line is out, so every shed is counted: /metrics has them per pack.
    let metrics = scrape(&agent);
    py.0.stdin
        .as_mut()
        .expect("stdin")
        .write_all(b"exit\n")
        .expect("let the client exit");
    assert!(
        py.0.wait().expect("python exits").success(),
        "client failed"
    );
    let out = agent.stop(seen).expect("agent stops");

    assert_eq!(out.lines.len(), EXCHANGES, "{:#?}", out.lines);
    each_keeps_core_and_sheds_only_slow(&out.lines);
    let shed = out
        .lines
        .iter()
        .filter(|l| l["skipped"] == serde_json::json!(["slow"]))
        .count();
    let ran = out
        .lines
        .iter()
        .filter(|l| dimensions(l).get("slow/post").map(String::as_str) == Some("1"))
        .count();
    assert!(shed > 0, "no exchange shed the slow pack");
    assert!(ran > 0, "the slow pack never ran");
    assert_eq!(out.counter("dropped_jobs"), 0, "{}", out.stderr);
    assert_eq!(out.counter("shed"), shed as u64, "{}", out.stderr);
    assert_eq!(out.counter("shed_budget"), 0, "{}", out.stderr);
    #[allow(clippy::cast_precision_loss)] // a few hundred
    let shed_f = shed as f64;
    assert_eq!(
        sample(
            &metrics,
            r#"taskless_agent_pack_skipped_shed_total{pack="slow@1.0.0"}"#
        ),
        Some(shed_f),
        "{metrics}"
    );
    assert_eq!(
        sample(
            &metrics,
            r#"taskless_agent_pack_skipped_shed_total{pack="core@0.1.0"}"#
        ),
        Some(0.0),
        "{metrics}"
    );
    assert!(
        out.stderr.lines().any(|l| l.contains("pack stats")
            && l.contains("slow@1.0.0")
            && !l.contains("skipped_shed=0")),
        "the slow pack's stats count its sheds:\n{}",
        out.stderr
    );
}

/// For each line read from stdin, as many `GET /v1/customers/cus_<i>` back to back as the line
/// says, then "done".
const ROUNDS: &str = r#"
import http.client, ssl, sys
port, ca = int(sys.argv[1]), sys.argv[2]
conn = http.client.HTTPSConnection("localhost", port, context=ssl.create_default_context(cafile=ca))
conn.request("GET", "/v1/customers/cus_warm"); conn.getresponse().read()
print("ready", flush=True)
i = 0
for line in sys.stdin:
    for _ in range(int(line)):
        conn.request("GET", "/v1/customers/cus_%d" % i); i += 1
        r = conn.getresponse(); r.read(); assert r.status == 200
    print("done", flush=True)
"#;

#[test]
fn a_spent_cpu_budget_sheds_the_costliest_pack_until_time_pays_it_back() {
    require_root();
    const BURST: usize = 100;
    let api = TestApi::start().expect("test API");
    let dir = TempDir::new("packs-budget").expect("tempdir");
    let packs = dir.path().join("packs");
    // 20 ms of busy work an exchange: the budget below pays for five of them a second.
    core_and_slow_packs_into(&packs);
    let script = dir.path().join("client.py");
    std::fs::write(&script, ROUNDS).expect("script");
    let (mut py, mut py_out) = ready_client(
        &script,
        &[
            api.server.addr.port().to_string(),
            api.server.ca_file.display().to_string(),
        ],
    );
    let pid = py.0.id().to_string();
    let packs_arg = packs.display().to_string();
    let mut agent = Agent::start(&[
        "--pid",
        &pid,
        "--packs",
        &packs_arg,
        "--workers",
        "1",
        // A queue the burst never fills a quarter of: whatever is shed, the budget sheds.
        "--queue",
        "65536",
        // A tenth of a CPU: a full bucket holds 100 ms, five exchanges of the slow pack.
        "--pack-cpu",
        "0.1",
    ])
    .expect("agent");
    agent
        .wait_for_log("ready", Duration::from_secs(60))
        .expect("agent ready");
    let mut round = |n: usize| {
        writeln!(py.0.stdin.as_mut().expect("stdin"), "{n}").expect("go");
        let mut done = String::new();
        py_out.read_line(&mut done).expect("client output");
        assert_eq!(done.trim(), "done", "client failed");
    };
    let mut seen = Vec::new();
    round(BURST);
    agent
        .wait_for_lines(BURST, Duration::from_secs(60), &mut seen)
        .expect("a line for every exchange of the burst");
    // The debt is at most two full buckets (200 ms), paid back at 100 ms a second.
    std::thread::sleep(Duration::from_millis(3500));
    round(1);
    agent
        .wait_for_lines(BURST + 1, Duration::from_secs(60), &mut seen)
        .expect("a line for the exchange after the pause");
    drop(py);
    let out = agent.stop(seen).expect("agent stops");

    assert_eq!(out.lines.len(), BURST + 1, "{:#?}", out.lines);
    let ran_slow =
        |l: &serde_json::Value| dimensions(l).get("slow/post").map(String::as_str) == Some("1");
    each_keeps_core_and_sheds_only_slow(&out.lines);
    let (burst, after) = out.lines.split_at(BURST);
    let shed = burst
        .iter()
        .filter(|l| l["skipped"] == serde_json::json!(["slow"]))
        .count();
    let ran = burst.iter().filter(|l| ran_slow(l)).count();
    // Without a budget the slow pack runs on all of them (the queue stays short of a quarter).
    assert!(ran > 0, "the slow pack ran on none: the bucket starts full");
    assert!(
        ran < BURST / 2,
        "the slow pack ran on {ran} of {BURST}: 2 s of CPU against a budget of 0.1"
    );
    assert!(shed > BURST / 2, "shed on {shed} of {BURST}");
    assert!(
        ran_slow(&after[0]) && after[0].get("skipped").is_none(),
        "after the pause the slow pack runs again: {}",
        after[0]
    );
    assert_eq!(out.counter("dropped_jobs"), 0, "{}", out.stderr);
    assert_eq!(out.counter("shed"), shed as u64, "{}", out.stderr);
    assert_eq!(out.counter("shed_budget"), shed as u64, "{}", out.stderr);
}

/// Makes one `GET /v1/customers/cus_<i>` per line read from stdin, printing "done" after each.
const ON_DEMAND: &str = r#"
import http.client, ssl, sys
port, ca = int(sys.argv[1]), sys.argv[2]
conn = http.client.HTTPSConnection("localhost", port, context=ssl.create_default_context(cafile=ca))
conn.request("GET", "/v1/customers/cus_warm"); conn.getresponse().read()
print("ready", flush=True)
for i, _ in enumerate(sys.stdin):
    conn.request("GET", "/v1/customers/cus_%d" % i)
    r = conn.getresponse(); r.read(); assert r.status == 200
    print("done", flush=True)
"#;

/// A test pack whose `pre` captures `version`.
fn marker(version: u32) -> Vec<u8> {
    support::module(&[
        (
            "pre",
            support::Behavior::Output(format!(r#"{{"capture":{{"version":{version}}}}}"#)),
        ),
        ("post", support::Behavior::Output(String::new())),
    ])
}

/// Replaces `path` whole (written beside it, then renamed over it), as an installer would.
fn replace_file(path: &std::path::Path, bytes: &[u8]) {
    let aside = path.with_extension("new");
    std::fs::write(&aside, bytes).expect("write");
    std::fs::rename(&aside, path).expect("rename");
}

#[test]
fn a_pack_replaced_on_disk_takes_effect_and_a_broken_one_leaves_the_old_running() {
    require_root();
    let api = TestApi::start().expect("test API");
    let dir = TempDir::new("packs-reload").expect("tempdir");
    let packs = dir.path().join("packs");
    core_pack_into(&packs);
    let marker_dir = support::write_pack(
        &packs,
        "marker@1.0.0",
        &support::manifest("marker", None),
        &support::config(),
        &marker(1),
    );
    let script = dir.path().join("client.py");
    std::fs::write(&script, ON_DEMAND).expect("script");
    let (mut py, mut py_out) = ready_client(
        &script,
        &[
            api.server.addr.port().to_string(),
            api.server.ca_file.display().to_string(),
        ],
    );
    let pid = py.0.id().to_string();
    let packs_arg = packs.display().to_string();
    let state = dir.path().join("state");
    let state_arg = state.display().to_string();
    let mut agent = Agent::start(&[
        "--pid",
        &pid,
        "--packs",
        &packs_arg,
        "--state-dir",
        &state_arg,
        "--metrics-addr",
        "127.0.0.1:0",
    ])
    .expect("agent");
    agent
        .wait_for_log("watching the packs directory", Duration::from_secs(60))
        .expect("agent watches its packs");
    agent
        .wait_for_log("ready", Duration::from_secs(60))
        .expect("agent ready");
    let mut seen = Vec::new();
    let mut exchange = |agent: &mut Agent, seen: &mut Vec<String>| {
        let stdin = py.0.stdin.as_mut().expect("stdin");
        stdin.write_all(b"go\n").expect("ask");
        stdin.flush().expect("flush");
        let mut line = String::new();
        py_out.read_line(&mut line).expect("client answer");
        assert_eq!(line.trim(), "done");
        agent
            .wait_for_lines(seen.len() + 1, Duration::from_secs(30), seen)
            .expect("the exchange's line");
        let last: serde_json::Value =
            serde_json::from_str(seen.last().expect("a line")).expect("JSON line");
        dimensions(&last)
    };

    let d = exchange(&mut agent, &mut seen);
    assert_eq!(
        d.get("marker/version").map(String::as_str),
        Some("1"),
        "{d:?}"
    );
    assert!(d.contains_key("core/status"), "{d:?}");

    // A new version of the module, in place: new exchanges run it, without a restart.
    replace_file(&marker_dir.join("pack.wasm"), &marker(2));
    agent
        .wait_for_log("packs reloaded", Duration::from_secs(10))
        .expect("the change is picked up");
    let d = exchange(&mut agent, &mut seen);
    assert_eq!(
        d.get("marker/version").map(String::as_str),
        Some("2"),
        "{d:?}"
    );
    assert!(d.contains_key("core/status"), "{d:?}");

    // A broken replacement: refused with its reason, and version 2 keeps running.
    replace_file(&marker_dir.join("pack.wasm"), b"not a wasm module");
    agent
        .wait_for_log(
            "pack failed to load; its previous version keeps running",
            Duration::from_secs(10),
        )
        .expect("the broken pack is reported");
    let log = agent.stderr_snapshot();
    let warning = log
        .lines()
        .find(|l| l.contains("pack failed to load"))
        .expect("warning");
    assert!(warning.contains("marker"), "{warning}");
    let d = exchange(&mut agent, &mut seen);
    assert_eq!(
        d.get("marker/version").map(String::as_str),
        Some("2"),
        "{d:?}"
    );
    assert!(d.contains_key("core/status"), "{d:?}");

    // A pack added: it runs on the next exchange, and /metrics serves the packs now in force.
    let reloads = |agent: &Agent| agent.stderr_snapshot().matches("packs reloaded").count();
    let before = reloads(&agent);
    support::write_pack(
        &packs,
        "added@1.0.0",
        &support::manifest("added", None),
        &support::config(),
        &marker(7),
    );
    let deadline = Instant::now() + Duration::from_secs(10);
    while reloads(&agent) == before {
        assert!(
            Instant::now() < deadline,
            "the added pack was not picked up"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    let d = exchange(&mut agent, &mut seen);
    assert_eq!(
        d.get("added/version").map(String::as_str),
        Some("7"),
        "{d:?}"
    );
    assert_eq!(
        d.get("marker/version").map(String::as_str),
        Some("2"),
        "{d:?}"
    );
    let metrics = scrape(&agent);
    assert_eq!(
        sample(&metrics, "taskless_agent_packs_loaded"),
        Some(3.0),
        "{metrics}"
    );
    // Counters carry over a reload while name@version stays: the marker ran `pre` on all four
    // exchanges (`post` too), through three versions of its module.
    assert_eq!(
        sample(
            &metrics,
            r#"taskless_agent_pack_calls_total{pack="marker@1.0.0"}"#
        ),
        Some(8.0),
        "{metrics}"
    );
    assert_eq!(
        sample(
            &metrics,
            r#"taskless_agent_pack_calls_total{pack="added@1.0.0"}"#
        ),
        Some(2.0),
        "{metrics}"
    );
    drop(py);
    let out = agent.stop(seen).expect("agent stops");
    assert_eq!(out.lines.len(), 4, "{:#?}", out.lines);
}
