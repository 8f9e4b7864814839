//! End to end, as root: a real Python client calls the local test API, which answers like
//! Stripe and OpenAI (including a streamed completion); the agent's output carries the shipped
//! stripe and openai packs' captures. The packs are pointed at `localhost` through their
//! `config.json` configuration, as a user would install them for another host.

use std::{
    io::{BufRead as _, Write as _},
    process::{Command, Stdio},
    time::Duration,
};

use taskless_e2e::harness::{
    Agent, KillOnDrop, TempDir, TestApi, dimensions, matching, packs_for_localhost, require_root,
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
