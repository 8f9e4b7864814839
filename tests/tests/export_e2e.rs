//! End to end, as root: exchanges captured live from real clients (curl and Python, the stripe
//! and openai packs pointed at the local API) reach an OTLP receiver built from the official
//! protocol definitions (gRPC and HTTP/protobuf) and a real Prometheus (Debian's) scraping the
//! agent's `/metrics`; a collector that goes away costs counted records, never capture.

use std::{
    io::{BufRead as _, BufReader, Read as _, Write as _},
    net::{SocketAddr, TcpStream},
    path::Path,
    process::{ChildStdin, ChildStdout, Command, Stdio},
    time::{Duration, Instant},
};

use taskless_e2e::{
    harness::{
        Agent, KillOnDrop, TempDir, TestApi, is_stats_line, packs_for_localhost, require_root,
    },
    otlp::{AttrValue, OtlpReceiver, Point, ReceivedLog},
};

/// Credentials the clients send; none may appear in what the agent exports itself.
const QUERY_SECRET: &str = "sk-live-query-0123456789";
const HEADER_SECRET: &str = "sk-live-header-0123456789";
const COOKIE_SECRET: &str = "cookie-secret-0123456789";

/// A Python client on one keep-alive connection: a warm-up call, `ready`, then for each line
/// `N` on stdin a round of N calls (cycling through a declined charge with credentials in the
/// query and headers, a chat completion, a streamed one, a customer), printing `done N`.
const CLIENT: &str = r#"
import http.client, json, ssl, sys
port, ca, secret_q, secret_h, secret_c = int(sys.argv[1]), sys.argv[2], sys.argv[3], sys.argv[4], sys.argv[5]
conn = http.client.HTTPSConnection("localhost", port, context=ssl.create_default_context(cafile=ca))
conn.request("GET", "/v1/customers/cus_warm"); conn.getresponse().read()
print("ready", flush=True)
form = {"Content-Type": "application/x-www-form-urlencoded"}
auth = {"Authorization": "Bearer " + secret_h, "Cookie": "session=" + secret_c}
chat = {"model": "gpt-4o-mini", "messages": [{"role": "user", "content": "hi"}]}
calls = [
    ("POST", "/v1/charges?api_key=" + secret_q + "&limit=3", "amount=100&source=tok_chargeDeclined", dict(form, **auth, **{"Idempotency-Key": "idem-402"}), 402),
    ("POST", "/v1/chat/completions", json.dumps(chat), dict(auth, **{"Content-Type": "application/json"}), 200),
    ("POST", "/v1/chat/completions", json.dumps(dict(chat, stream=True, model="gpt-4o-stream")), {"Content-Type": "application/json"}, 200),
    ("GET", "/v1/customers/cus_1", None, {}, 200),
]
i = 0
for line in sys.stdin:
    n = int(line)
    for _ in range(n):
        method, path, body, headers, want = calls[i % len(calls)]
        i += 1
        conn.request(method, path, body=body, headers=headers)
        r = conn.getresponse(); r.read()
        assert r.status == want, (path, r.status)
    print("done", n, flush=True)
"#;

struct Client {
    child: KillOnDrop,
    stdin: ChildStdin,
    stdout: BufReader<ChildStdout>,
}

impl Client {
    fn start(api: &TestApi, dir: &Path) -> Self {
        let script = dir.join("client.py");
        std::fs::write(&script, CLIENT).expect("script");
        let mut child = Command::new("python3")
            .arg(&script)
            .arg(api.server.addr.port().to_string())
            .arg(&api.server.ca_file)
            .args([QUERY_SECRET, HEADER_SECRET, COOKIE_SECRET])
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .spawn()
            .expect("python3");
        let stdin = child.stdin.take().expect("stdin");
        let mut stdout = BufReader::new(child.stdout.take().expect("stdout"));
        let mut line = String::new();
        stdout.read_line(&mut line).expect("ready");
        assert_eq!(line.trim(), "ready");
        Self {
            child: KillOnDrop(child),
            stdin,
            stdout,
        }
    }

    fn pid(&self) -> String {
        self.child.0.id().to_string()
    }

    /// Makes `n` calls and waits until they are done.
    fn calls(&mut self, n: usize) {
        writeln!(self.stdin, "{n}").expect("to client");
        let mut line = String::new();
        self.stdout.read_line(&mut line).expect("client answers");
        assert_eq!(line.trim(), format!("done {n}"), "client failed");
    }
}

/// curl, held at the test API's gate until the agent is attached, then a customer lookup with a
/// token in the query and credentials in headers, and a declined charge.
fn curl_at_gate(api: &TestApi) -> KillOnDrop {
    let base = api.server.base_url();
    let ca = api.server.ca_file.display().to_string();
    let common = ["-sS", "-o", "/dev/null", "--http1.1", "--cacert", &ca];
    let curl = Command::new("curl")
        .args(common)
        .arg(format!("{base}/v1/gate"))
        .arg("--next")
        .args(common)
        .args(["-H", &format!("Authorization: Bearer {HEADER_SECRET}")])
        .args(["-b", &format!("session={COOKIE_SECRET}")])
        .arg(format!("{base}/v1/customers/cus_curl?token={QUERY_SECRET}"))
        .arg("--next")
        .args(common)
        .args(["-d", "amount=5&source=tok_chargeDeclined"])
        .arg(format!("{base}/v1/charges"))
        .spawn()
        .expect("curl");
    let curl = KillOnDrop(curl);
    api.wait_gate_waiters(1, Duration::from_secs(20))
        .expect("curl at the gate");
    curl
}

fn attr<'a>(log: &'a ReceivedLog, key: &str) -> Option<&'a AttrValue> {
    log.attributes.get(key)
}

fn s(v: &str) -> AttrValue {
    AttrValue::Str(v.to_owned())
}

fn find<'a>(logs: &'a [ReceivedLog], key: &str, value: &AttrValue) -> Vec<&'a ReceivedLog> {
    logs.iter()
        .filter(|l| attr(l, key) == Some(value))
        .collect()
}

/// The data point of `metric` whose attributes include every `(key, value)` of `want`.
fn point<'a>(points: &'a [Point], metric: &str, want: &[(&str, AttrValue)]) -> Option<&'a Point> {
    points
        .iter()
        .find(|p| p.metric == metric && want.iter().all(|(k, v)| p.attributes.get(*k) == Some(v)))
}

/// Every attribute the agent produces itself (not the packs' `taskless.pack.*`), as text.
fn own_attributes(logs: &[ReceivedLog]) -> String {
    let mut text = String::new();
    for l in logs {
        for (k, v) in &l.attributes {
            if !k.starts_with("taskless.pack.") {
                text.push_str(&format!("{k}={} ", v.text()));
            }
        }
        text.push_str(&l.body);
        for (k, v) in &l.resource {
            text.push_str(&format!("{k}={v} "));
        }
    }
    text
}

fn otlp_live_capture(protocol: &str) {
    require_root();
    let api = TestApi::start().expect("test API");
    let receiver = OtlpReceiver::start().expect("receiver");
    let dir = TempDir::new("otlp-e2e").expect("tempdir");
    let packs = dir.path().join("packs");
    packs_for_localhost(&packs);
    let mut py = Client::start(&api, dir.path());
    let curl = curl_at_gate(&api);
    let endpoint = match protocol {
        "grpc" => format!("http://{}", receiver.grpc),
        _ => format!("http://{}", receiver.http),
    };
    let packs_arg = packs.display().to_string();
    let mut agent = Agent::start_with_env(
        &[
            "--pid",
            &py.pid(),
            "--pid",
            &curl.0.id().to_string(),
            "--packs",
            &packs_arg,
            "--output",
            "ndjson",
            "--otlp-endpoint",
            &endpoint,
            "--otlp-protocol",
            protocol,
        ],
        &[
            ("OTEL_METRIC_EXPORT_INTERVAL", "500"),
            ("OTEL_BLRP_SCHEDULE_DELAY", "200"),
            ("OTEL_SERVICE_NAME", "agent-under-test"),
        ],
    )
    .expect("agent");
    agent
        .wait_for_log("ready", Duration::from_secs(60))
        .expect("agent ready");
    api.server.open_gate();
    py.calls(3);
    let mut seen = Vec::new();
    agent
        .wait_for_lines(5, Duration::from_secs(30), &mut seen)
        .expect("python's and curl's exchanges");
    let port = i64::from(api.server.addr.port());
    let logs = receiver
        .wait_logs(
            Duration::from_secs(30),
            "the declined charge and the completions",
            |logs| {
                find(
                    logs,
                    "taskless.pack.stripe.declineCode",
                    &s("generic_decline"),
                )
                .len()
                    >= 2
                    && find(logs, "taskless.pack.openai.model", &s("gpt-4o-stream")).len() == 1
                    && find(logs, "url.path", &s("/v1/customers/cus_curl")).len() == 1
            },
        )
        .expect("log records");

    // Python's declined charge: the HTTP, URL, server, network and process attributes, the
    // credentials in its query redacted, the packs' captures as typed attributes.
    let pid = i64::from(py.child.0.id());
    let charge: Vec<&ReceivedLog> =
        find(&logs, "taskless.pack.stripe.idempotencyKey", &s("idem-402"));
    assert_eq!(charge.len(), 1, "{logs:#?}");
    let c = charge[0];
    let want = [
        ("http.request.method", s("POST")),
        (
            "url.full",
            s(&format!(
                "https://localhost:{port}/v1/charges?api_key=REDACTED&limit=REDACTED"
            )),
        ),
        ("url.path", s("/v1/charges")),
        ("server.address", s("localhost")),
        ("server.port", AttrValue::Int(port)),
        ("http.response.status_code", AttrValue::Int(402)),
        ("error.type", s("402")),
        ("process.pid", AttrValue::Int(pid)),
        ("process.executable.name", s("python3")),
        ("network.peer.address", s("127.0.0.1")),
        ("network.peer.port", AttrValue::Int(port)),
        ("taskless.complete", AttrValue::Bool(true)),
        ("taskless.role", s("client")),
        ("taskless.pack.stripe.errorType", s("card_error")),
        ("taskless.pack.stripe.status", AttrValue::Int(402)),
        ("taskless.pack.core.status", AttrValue::Int(402)),
    ];
    for (k, v) in &want {
        assert_eq!(attr(c, k), Some(v), "{k} in {c:#?}");
    }
    assert_eq!(c.event_name, "taskless.exchange");
    assert_eq!(c.severity, "WARN");
    assert_eq!(c.body, "POST localhost/v1/charges 402");
    assert_eq!(
        c.resource.get("service.name").map(String::as_str),
        Some("agent-under-test")
    );
    assert!(matches!(attr(c, "taskless.duration_ms"), Some(AttrValue::Double(d)) if *d > 0.0));
    assert!(matches!(attr(c, "taskless.request_id"), Some(AttrValue::Str(id)) if id.len() == 32));

    // curl's lookup: its token redacted too, and curl named as the process.
    let lookup = find(&logs, "url.path", &s("/v1/customers/cus_curl"));
    assert_eq!(lookup.len(), 1, "{logs:#?}");
    assert_eq!(
        attr(lookup[0], "url.full"),
        Some(&s(&format!(
            "https://localhost:{port}/v1/customers/cus_curl?token=REDACTED"
        )))
    );
    assert_eq!(attr(lookup[0], "process.executable.name"), Some(&s("curl")));

    // Nothing the agent writes itself carries a credential; no pack captures headers, so the
    // header and cookie values appear nowhere at all.
    let own = own_attributes(&logs);
    for secret in [QUERY_SECRET, HEADER_SECRET, COOKIE_SECRET] {
        assert!(!own.contains(secret), "{secret} leaked into {own}");
    }
    let raw = receiver.raw();
    for secret in [HEADER_SECRET, COOKIE_SECRET] {
        assert!(
            !raw.windows(secret.len()).any(|w| w == secret.as_bytes()),
            "{secret} was exported"
        );
    }

    // Metrics: GenAI token usage exactly as the test API reports it (12 in, 3 out), per model,
    // and the request counts per server, method and status.
    let deadline = Instant::now() + Duration::from_secs(30);
    let points = loop {
        let (points, _) = receiver.latest_metrics();
        let done = point(
            &points,
            "gen_ai.client.token.usage",
            &[
                ("gen_ai.request.model", s("gpt-4o-stream")),
                ("gen_ai.token.type", s("output")),
            ],
        )
        .is_some()
            && point(
                &points,
                "taskless.http.client.requests",
                &[("http.response.status_code", AttrValue::Int(402))],
            )
            .and_then(|p| p.value)
                == Some(2.0);
        if done {
            break points;
        }
        assert!(
            Instant::now() < deadline,
            "metrics not received: {points:#?}"
        );
        std::thread::sleep(Duration::from_millis(200));
    };
    for (model, kind, sum) in [
        ("gpt-4o-mini", "input", 12.0),
        ("gpt-4o-mini", "output", 3.0),
        ("gpt-4o-stream", "input", 12.0),
        ("gpt-4o-stream", "output", 3.0),
    ] {
        let p = point(
            &points,
            "gen_ai.client.token.usage",
            &[
                ("gen_ai.system", s("openai")),
                ("gen_ai.operation.name", s("chat")),
                ("gen_ai.request.model", s(model)),
                ("gen_ai.token.type", s(kind)),
                ("server.address", s("localhost")),
            ],
        )
        .unwrap_or_else(|| panic!("{model} {kind} in {points:#?}"));
        assert_eq!((p.count, p.sum), (Some(1), Some(sum)), "{model} {kind}");
    }
    let chats = point(
        &points,
        "http.client.request.duration",
        &[
            ("http.request.method", s("POST")),
            ("server.address", s("localhost")),
            ("http.response.status_code", AttrValue::Int(200)),
            ("server.port", AttrValue::Int(port)),
        ],
    )
    .expect("duration histogram");
    assert_eq!(chats.count, Some(2), "two completions: {chats:#?}");
    let prompt = point(
        &points,
        "taskless.pack.dimension",
        &[("taskless.dimension", s("openai/promptTokens"))],
    )
    .expect("numeric dimensions summed");
    assert_eq!(prompt.value, Some(24.0));

    let out = agent.stop(seen).expect("agent stops");
    assert_eq!(out.code, Some(0), "{}", out.stderr);
    // Every exchange the agent printed was exported, none lost or dropped.
    let lines = out.lines.len() as u64;
    assert_eq!(
        out.counter("otlp_log_records_exported"),
        lines,
        "{}",
        out.stderr
    );
    assert_eq!(out.counter("otlp_log_records_lost"), 0);
    assert_eq!(out.counter("otlp_log_records_dropped"), 0);
    assert_eq!(out.counter("sink_otlp_dropped"), 0);
    assert_eq!(receiver.logs().len() as u64, lines);
    // And the NDJSON `source` carries no credential either.
    for l in &out.lines {
        let source = l["source"].to_string();
        assert!(!source.contains(QUERY_SECRET), "{source}");
    }
}

#[test]
fn otlp_grpc_receives_every_exchange_with_its_attributes_and_genai_usage() {
    otlp_live_capture("grpc");
}

#[test]
fn otlp_http_receives_every_exchange_with_its_attributes_and_genai_usage() {
    otlp_live_capture("http/protobuf");
}

/// The latest periodic stats line's value of `name`.
fn stats_counter(agent: &Agent, name: &str) -> Option<u64> {
    let text = agent.stderr_snapshot();
    let line = text.lines().rev().find(|l| is_stats_line(l))?;
    let key = format!(" {name}=");
    let start = line.find(&key)? + key.len();
    line[start..].split(' ').next()?.parse().ok()
}

#[test]
fn capture_goes_on_while_the_collector_is_away_and_export_resumes() {
    require_root();
    let api = TestApi::start().expect("test API");
    let mut receiver = OtlpReceiver::start().expect("receiver");
    let dir = TempDir::new("otlp-outage").expect("tempdir");
    let packs = dir.path().join("packs");
    packs_for_localhost(&packs);
    let mut py = Client::start(&api, dir.path());
    let packs_arg = packs.display().to_string();
    let endpoint = format!("http://{}", receiver.http);
    let mut agent = Agent::start_with_env(
        &[
            "--pid",
            &py.pid(),
            "--packs",
            &packs_arg,
            "--output",
            "ndjson",
            "--otlp-endpoint",
            &endpoint,
            "--stats-interval",
            "1",
        ],
        &[
            ("OTEL_METRIC_EXPORT_INTERVAL", "300"),
            ("OTEL_BLRP_SCHEDULE_DELAY", "100"),
            ("OTEL_EXPORTER_OTLP_TIMEOUT", "1000"),
        ],
    )
    .expect("agent");
    agent
        .wait_for_log("ready", Duration::from_secs(60))
        .expect("agent ready");
    let mut seen = Vec::new();

    // Before: exported.
    py.calls(4);
    agent
        .wait_for_lines(4, Duration::from_secs(30), &mut seen)
        .expect("first round");
    receiver
        .wait_logs(Duration::from_secs(20), "first round", |l| l.len() == 4)
        .expect("first round exported");

    // The collector goes away: capture goes on, the records are counted as lost.
    receiver.stop();
    py.calls(6);
    agent
        .wait_for_lines(10, Duration::from_secs(30), &mut seen)
        .expect("capture went on without the collector");
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let lost = stats_counter(&agent, "otlp_log_records_lost").unwrap_or(0)
            + stats_counter(&agent, "otlp_log_records_dropped").unwrap_or(0);
        let failed = stats_counter(&agent, "otlp_metric_exports_failed").unwrap_or(0);
        if lost == 6 && failed > 0 {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "lost {lost} of 6, {failed} failed metric exports:\n{}",
            agent.stderr_snapshot()
        );
        std::thread::sleep(Duration::from_millis(200));
    }
    assert_eq!(
        receiver.logs().len(),
        4,
        "nothing can arrive while it is away"
    );

    // It comes back on the same port: export resumes.
    receiver.resume().expect("receiver back");
    py.calls(4);
    agent
        .wait_for_lines(14, Duration::from_secs(30), &mut seen)
        .expect("third round");
    receiver
        .wait_logs(Duration::from_secs(30), "third round", |l| l.len() == 8)
        .expect("export resumed");
    // Metrics are cumulative: the first export after the outage counts all 14 exchanges.
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let (points, _) = receiver.latest_metrics();
        let total: f64 = points
            .iter()
            .filter(|p| p.metric == "taskless.http.client.requests")
            .filter_map(|p| p.value)
            .sum();
        if (total - 14.0).abs() < f64::EPSILON {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "requests counted {total}, want 14"
        );
        std::thread::sleep(Duration::from_millis(200));
    }

    let out = agent.stop(seen).expect("agent stops");
    assert_eq!(out.code, Some(0), "{}", out.stderr);
    assert_eq!(out.lines.len(), 14, "every exchange printed");
    assert_eq!(out.counter("otlp_log_records_exported"), 8);
    assert_eq!(
        out.counter("otlp_log_records_lost") + out.counter("otlp_log_records_dropped"),
        6
    );
    assert_eq!(out.counter("dropped_jobs"), 0, "the packs never waited");
}

/// `GET path` over HTTP/1.0: the status and the body.
fn http_get(addr: SocketAddr, path: &str) -> (u16, String) {
    let mut stream = TcpStream::connect_timeout(&addr, Duration::from_secs(5)).expect("connect");
    stream
        .set_read_timeout(Some(Duration::from_secs(10)))
        .expect("timeout");
    write!(stream, "GET {path} HTTP/1.0\r\nHost: {addr}\r\n\r\n").expect("request");
    let mut response = String::new();
    stream.read_to_string(&mut response).expect("response");
    let status = response
        .split(' ')
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or(0);
    let body = response
        .split_once("\r\n\r\n")
        .map(|(_, b)| b.to_owned())
        .unwrap_or_default();
    (status, body)
}

/// A query's single value from Prometheus's HTTP API.
fn prom_query(prometheus: SocketAddr, query: &str) -> Option<f64> {
    let encoded: String = query
        .bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' => {
                (b as char).to_string()
            }
            _ => format!("%{b:02X}"),
        })
        .collect();
    let (status, body) = http_get(prometheus, &format!("/api/v1/query?query={encoded}"));
    if status != 200 {
        return None;
    }
    let v: serde_json::Value = serde_json::from_str(&body).ok()?;
    v["data"]["result"][0]["value"][1].as_str()?.parse().ok()
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("a free port")
}

#[test]
fn prometheus_scrapes_the_agents_counters_and_the_exchange_count() {
    require_root();
    let prometheus_bin = Path::new("/usr/bin/prometheus");
    assert!(
        prometheus_bin.exists(),
        "Debian's prometheus is missing: run `cargo xtask setup`"
    );
    let api = TestApi::start().expect("test API");
    let dir = TempDir::new("prometheus-e2e").expect("tempdir");
    let packs = dir.path().join("packs");
    packs_for_localhost(&packs);
    let mut py = Client::start(&api, dir.path());
    let packs_arg = packs.display().to_string();
    let mut agent = Agent::start(&[
        "--pid",
        &py.pid(),
        "--packs",
        &packs_arg,
        "--output",
        "ndjson",
        "--metrics-addr",
        "127.0.0.1:0",
        "--health-addr",
        "127.0.0.1:0",
    ])
    .expect("agent");
    agent
        .wait_for_log("ready", Duration::from_secs(60))
        .expect("agent ready");
    let metrics: SocketAddr = agent
        .log_field("metrics=true", "addr")
        .and_then(|a| a.parse().ok())
        .expect("metrics address in the log");
    let health: SocketAddr = agent
        .log_field("metrics=false", "addr")
        .and_then(|a| a.parse().ok())
        .expect("health address in the log");

    // Health: alive and ready on both addresses, no metrics on the health-only one.
    let deadline = Instant::now() + Duration::from_secs(10);
    while http_get(health, "/readyz").0 != 200 {
        assert!(Instant::now() < deadline, "never ready");
        std::thread::sleep(Duration::from_millis(100));
    }
    for addr in [metrics, health] {
        assert_eq!(http_get(addr, "/healthz"), (200, "ok\n".into()));
        assert_eq!(http_get(addr, "/readyz"), (200, "ready\n".into()));
    }
    assert_eq!(http_get(health, "/metrics").0, 404);

    // Prometheus scrapes the agent every second.
    let prom_port = free_port();
    let prom_addr: SocketAddr = format!("127.0.0.1:{prom_port}").parse().expect("addr");
    let config = dir.path().join("prometheus.yml");
    std::fs::write(
        &config,
        format!(
            "global:\n  scrape_interval: 1s\nscrape_configs:\n  - job_name: taskless-agent\n    static_configs:\n      - targets: ['{metrics}']\n"
        ),
    )
    .expect("config");
    let prometheus = KillOnDrop(
        Command::new(prometheus_bin)
            .arg(format!("--config.file={}", config.display()))
            .arg(format!(
                "--storage.tsdb.path={}",
                dir.path().join("tsdb").display()
            ))
            .arg(format!("--web.listen-address={prom_addr}"))
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("prometheus"),
    );

    // The client makes 8 calls: 2 declined charges, 4 completions, 2 lookups.
    py.calls(8);
    let mut seen = Vec::new();
    agent
        .wait_for_lines(8, Duration::from_secs(30), &mut seen)
        .expect("eight exchanges");
    let wait_for = |query: &str, want: f64| {
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            let got = prom_query(prom_addr, query);
            if got == Some(want) {
                return;
            }
            assert!(Instant::now() < deadline, "{query} = {got:?}, want {want}");
            std::thread::sleep(Duration::from_millis(300));
        }
    };
    wait_for(r#"up{job="taskless-agent"}"#, 1.0);
    wait_for("sum(taskless_agent_http_client_requests_total)", 8.0);
    wait_for("taskless_agent_exchanges_total", 8.0);
    wait_for(
        r#"sum(taskless_agent_http_client_requests_total{server_address="localhost",http_request_method="POST",http_response_status_code="402"})"#,
        2.0,
    );
    wait_for(
        r#"sum(taskless_agent_gen_ai_client_token_usage_sum{gen_ai_request_model="gpt-4o-mini",gen_ai_token_type="input"})"#,
        24.0,
    );
    wait_for("taskless_agent_attached_processes", 1.0);
    for query in [
        "taskless_agent_kernel_calls_total",
        "taskless_agent_records_total",
        r#"sum(taskless_agent_pack_calls_total{pack=~"core@.*"})"#,
        "sum(taskless_agent_http_client_request_duration_seconds_count)",
    ] {
        let v = prom_query(prom_addr, query);
        assert!(v.is_some_and(|v| v > 0.0), "{query} = {v:?}");
    }
    let (_, text) = http_get(metrics, "/metrics");
    for secret in [QUERY_SECRET, HEADER_SECRET, COOKIE_SECRET] {
        assert!(!text.contains(secret), "{secret} in /metrics");
    }
    drop(prometheus);
    let out = agent.stop(seen).expect("agent stops");
    assert_eq!(out.code, Some(0), "{}", out.stderr);
    assert_eq!(out.lines.len(), 8);
}
