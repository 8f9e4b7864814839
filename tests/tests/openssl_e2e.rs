//! End to end, as root, with the real eBPF programs: real clients (curl, Python) call the local
//! HTTPS test API; the agent attached to them by pid must print one NDJSON line per exchange,
//! with the shipped packs' exact dimensions.

use std::{
    io::Write as _,
    process::{Command, Stdio},
    time::Duration,
};

use taskless_e2e::harness::{
    Agent, KillOnDrop, TestApi, dimensions, matching, packs_dir, require_root,
};

const READY: Duration = Duration::from_secs(60);

fn agent_for(pid: u32) -> Agent {
    let packs = packs_dir();
    assert!(
        packs.join("core@0.1.0/manifest.json").exists(),
        "packs not built in {}: run `cargo xtask test`",
        packs.display()
    );
    let mut agent = Agent::start(&[
        "--pid".to_owned(),
        pid.to_string(),
        "--packs".to_owned(),
        packs.display().to_string(),
    ])
    .expect("start agent");
    agent.wait_for_log("ready", READY).expect("agent ready");
    agent
}

/// curl over HTTP/1.1 on one kept-alive connection: a successful charge, a declined one (402 with
/// a Stripe-style card_error), a customer lookup. The first call waits at the server's gate
/// until the agent is attached.
#[test]
fn curl_http1_exchanges_are_captured_with_core_dimensions() {
    require_root();
    let api = TestApi::start().expect("test API");
    let base = api.server.base_url();
    let ca = api.server.ca_file.display().to_string();
    let curl = Command::new("curl")
        .args([
            "-sS",
            "-o",
            "/dev/null",
            "--http1.1",
            "--cacert",
            &ca,
            &format!("{base}/v1/gate"),
        ])
        .args([
            "--next",
            "-sS",
            "-o",
            "/dev/null",
            "--http1.1",
            "--cacert",
            &ca,
        ])
        .args([
            "-d",
            "amount=2000&source=tok_visa",
            &format!("{base}/v1/charges?delay_ms=120"),
        ])
        .args([
            "--next",
            "-sS",
            "-o",
            "/dev/null",
            "--http1.1",
            "--cacert",
            &ca,
        ])
        .args([
            "-d",
            "amount=500&source=tok_chargeDeclined",
            &format!("{base}/v1/charges"),
        ])
        .args([
            "--next",
            "-sS",
            "-o",
            "/dev/null",
            "--http1.1",
            "--cacert",
            &ca,
            &format!("{base}/v1/customers/cus_42"),
        ])
        .spawn()
        .expect("curl");
    let curl = KillOnDrop(curl);
    api.wait_gate_waiters(1, Duration::from_secs(20))
        .expect("curl at the gate");

    let mut agent = agent_for(curl.0.id());
    api.server.open_gate();
    let mut seen = Vec::new();
    agent
        .wait_for_lines(3, Duration::from_secs(30), &mut seen)
        .expect("three exchanges");
    let out = agent.stop(seen).expect("agent stops");
    assert_eq!(
        out.code,
        Some(0),
        "agent exit code; stderr:\n{}",
        out.stderr
    );

    let port = api.server.addr.port();
    let ok = matching(
        &out.lines,
        &[("core/path", "/v1/charges"), ("core/status", "200")],
    );
    assert_eq!(ok.len(), 1, "one successful charge in {:#?}", out.lines);
    let d = dimensions(ok[0]);
    assert_eq!(d.get("core/method").map(String::as_str), Some("POST"));
    assert_eq!(d.get("core/domain").map(String::as_str), Some("localhost"));
    assert_eq!(
        d.get("core/url"),
        Some(&format!("https://localhost:{port}/v1/charges?delay_ms=120"))
    );
    assert!(!d.contains_key("core/error"), "no error on a 200: {d:?}");
    let ms: f64 = d
        .get("core/durationMs")
        .expect("durationMs")
        .parse()
        .expect("numeric durationMs");
    assert!(
        (120.0..5_000.0).contains(&ms),
        "durationMs {ms} must include the API's 120 ms latency"
    );

    let declined = matching(
        &out.lines,
        &[("core/path", "/v1/charges"), ("core/status", "402")],
    );
    assert_eq!(declined.len(), 1, "one declined charge in {:#?}", out.lines);
    assert_eq!(
        dimensions(declined[0])
            .get("core/error")
            .map(String::as_str),
        Some("card_error")
    );

    let customer = matching(
        &out.lines,
        &[
            ("core/path", "/v1/customers/cus_42"),
            ("core/status", "200"),
            ("core/method", "GET"),
        ],
    );
    assert_eq!(customer.len(), 1, "the customer lookup in {:#?}", out.lines);

    // The gate call started before the agent attached: its request was never seen, so at most
    // its response could be, and it must not be reported twice.
    assert!(matching(&out.lines, &[("core/path", "/v1/gate")]).len() <= 1);
    for line in &out.lines {
        let id = line["requestId"].as_str().expect("requestId");
        assert_eq!(id.len(), 32, "requestId is 32 hex: {id}");
        assert!(
            id.chars()
                .all(|c| c.is_ascii_hexdigit() && !c.is_ascii_uppercase()),
            "{id}"
        );
    }
}

const PYTHON_CLIENT: &str = r#"
import http.client, ssl, sys
host, port, ca = sys.argv[1], int(sys.argv[2]), sys.argv[3]
ctx = ssl.create_default_context(cafile=ca)
conn = http.client.HTTPSConnection(host, port, context=ctx)
conn.request("GET", "/v1/customers/cus_warmup"); conn.getresponse().read()
print("ready", flush=True)
sys.stdin.readline()
form = {"Content-Type": "application/x-www-form-urlencoded"}
conn.request("POST", "/v1/charges", body="amount=100&source=tok_visa", headers=dict(form, **{"Idempotency-Key": "py-1"}))
r = conn.getresponse(); r.read(); print(r.status, flush=True)
conn.request("POST", "/v1/charges", body="amount=100&source=tok_chargeDeclined", headers=form)
r = conn.getresponse(); r.read(); print(r.status, flush=True)
conn.request("GET", "/v1/missing")
r = conn.getresponse(); r.read(); print(r.status, flush=True)
"#;

/// Python's ssl module (SSL_read_ex / SSL_write_ex in the system libssl) on one kept-alive
/// connection, started before the agent and released once it is attached.
#[test]
fn python_ssl_exchanges_are_captured_with_core_dimensions() {
    require_root();
    let api = TestApi::start().expect("test API");
    let dir = taskless_e2e::harness::TempDir::new("py").expect("tempdir");
    let script = dir.path().join("client.py");
    std::fs::write(&script, PYTHON_CLIENT).expect("write script");
    let mut py = KillOnDrop(
        Command::new("python3")
            .arg(&script)
            .args([
                "localhost",
                &api.server.addr.port().to_string(),
                &api.server.ca_file.display().to_string(),
            ])
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .spawn()
            .expect("python3"),
    );
    let mut stdout = std::io::BufReader::new(py.0.stdout.take().expect("stdout"));
    let mut line = String::new();
    std::io::BufRead::read_line(&mut stdout, &mut line).expect("python ready");
    assert_eq!(line.trim(), "ready", "python client failed to start");

    let mut agent = agent_for(py.0.id());
    py.0.stdin
        .as_mut()
        .expect("stdin")
        .write_all(b"go\n")
        .expect("release python");
    let status = py.0.wait().expect("python exits");
    assert!(status.success(), "python client failed: {status}");

    let mut seen = Vec::new();
    agent
        .wait_for_lines(3, Duration::from_secs(30), &mut seen)
        .expect("three exchanges");
    let out = agent.stop(seen).expect("agent stops");
    assert_eq!(
        out.lines.len(),
        3,
        "exactly the three calls made after attaching: {:#?}",
        out.lines
    );

    let ok = matching(
        &out.lines,
        &[
            ("core/path", "/v1/charges"),
            ("core/status", "200"),
            ("core/method", "POST"),
        ],
    );
    assert_eq!(ok.len(), 1, "{:#?}", out.lines);
    let declined = matching(
        &out.lines,
        &[
            ("core/path", "/v1/charges"),
            ("core/status", "402"),
            ("core/error", "card_error"),
        ],
    );
    assert_eq!(declined.len(), 1, "{:#?}", out.lines);
    let missing = matching(
        &out.lines,
        &[
            ("core/path", "/v1/missing"),
            ("core/status", "404"),
            ("core/error", "invalid_request_error"),
        ],
    );
    assert_eq!(missing.len(), 1, "{:#?}", out.lines);
    let stripe = matching(&out.lines, &[("stripe/idempotencyKey", "py-1")]);
    assert!(
        stripe.is_empty(),
        "the stripe pack only runs for api.stripe.com, not localhost: {:#?}",
        out.lines
    );
}
