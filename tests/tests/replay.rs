//! `taskless-agent replay` over committed inputs, without root: a recording made with
//! `--record` in the first format (a Python client's three calls to the local test API) and
//! HAR files, one with an OpenAI streamed completion. The real binary runs the shipped packs;
//! the output lines must carry their exact dimensions.

use std::{collections::BTreeMap, path::PathBuf, process::Command};

use taskless_e2e::harness::{agent_bin, dimensions, packs_dir};

fn data(name: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("data")
        .join(name)
}

/// Runs `replay` with `args` and returns its output lines.
fn replay_lines(args: &[String]) -> Vec<serde_json::Value> {
    let packs = packs_dir();
    assert!(
        packs.join("core@0.1.0/manifest.json").exists(),
        "packs not built in {}: run `cargo xtask build-packs`",
        packs.display()
    );
    let out = Command::new(agent_bin())
        .arg("replay")
        .args(args)
        .arg("--packs")
        .arg(&packs)
        .output()
        .expect("run taskless-agent replay");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "replay failed: {stderr}");
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .map(|l| {
            let v: serde_json::Value = serde_json::from_str(l).expect("NDJSON line");
            let id = v["requestId"].as_str().expect("requestId");
            assert_eq!(id.len(), 32, "requestId {id}");
            v
        })
        .collect()
}

/// Runs `replay` with `args` and returns its output lines' dimensions, sorted.
fn replay(args: &[String]) -> Vec<BTreeMap<String, String>> {
    let mut lines: Vec<BTreeMap<String, String>> =
        replay_lines(args).iter().map(dimensions).collect();
    lines.sort();
    lines
}

fn dims(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
    pairs
        .iter()
        .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
        .collect()
}

/// The committed recording is in the first format, which kept no connection identity: it
/// still replays, its lines' `source` carrying the recorded process, the replay's connection
/// serial, the role the parser found (the process sent the requests: a client) and the server
/// name from the `Host` header.
#[test]
fn a_recording_replays_to_the_lines_of_the_live_run() {
    let args = [data("recording-charges").display().to_string()];
    for line in replay_lines(&args) {
        assert_eq!(
            line["source"],
            serde_json::json!({"pid": 24260, "process": "python3", "connection": 1, "role": "client", "serverName": "localhost"}),
            "{line}"
        );
    }
    let lines = replay(&args);
    let base = "https://localhost:41885";
    let mut want = vec![
        dims(&[
            ("core/domain", "localhost"),
            ("core/method", "POST"),
            ("core/path", "/v1/charges"),
            ("core/url", &format!("{base}/v1/charges")),
            ("core/durationMs", "1"),
            ("core/status", "200"),
        ]),
        dims(&[
            ("core/domain", "localhost"),
            ("core/method", "POST"),
            ("core/path", "/v1/charges"),
            ("core/url", &format!("{base}/v1/charges")),
            ("core/durationMs", "0"),
            ("core/error", "card_error"),
            ("core/status", "402"),
        ]),
        dims(&[
            ("core/domain", "localhost"),
            ("core/method", "GET"),
            ("core/path", "/v1/customers/cus_42"),
            ("core/url", &format!("{base}/v1/customers/cus_42")),
            ("core/durationMs", "0"),
            ("core/status", "200"),
            ("pii/email.receive.body.field", "1"),
            ("pii/email.receive.body.value", "1"),
        ]),
    ];
    want.sort();
    assert_eq!(lines, want);
}

#[test]
fn a_har_file_replays_through_the_packs() {
    let lines = replay(&["--har".to_owned(), data("stripe.har").display().to_string()]);
    let mut want = vec![
        dims(&[
            ("core/domain", "api.stripe.com"),
            ("core/method", "POST"),
            ("core/path", "/v1/charges"),
            ("core/url", "https://api.stripe.com/v1/charges"),
            ("core/durationMs", "250"),
            ("core/error", "card_error"),
            ("core/status", "402"),
            ("stripe/errorCode", "card_declined"),
            ("stripe/errorType", "card_error"),
            ("stripe/message", "Your card was declined."),
            ("stripe/status", "402"),
        ]),
        dims(&[
            ("core/domain", "api.stripe.com"),
            ("core/method", "GET"),
            ("core/path", "/v1/customers/cus_42"),
            ("core/url", "https://api.stripe.com/v1/customers/cus_42"),
            ("core/durationMs", "80"),
            ("core/status", "200"),
            ("stripe/status", "200"),
        ]),
    ];
    want.sort();
    assert_eq!(lines, want);
}

/// An OpenAI Chat Completions stream (`stream_options.include_usage`): the openai pack reads
/// it through `chunk`, one server-sent event per call as live, and takes the token usage from
/// the final usage event. With a kept body far shorter than the stream the captures are the
/// same: `post` only sees the first 512 bytes, which hold no usage, so they can only come from
/// the `chunk` calls.
#[test]
fn a_har_stream_reaches_the_openai_pack_event_by_event() {
    let har = data("openai-stream.har").display().to_string();
    let want = dims(&[
        ("core/domain", "api.openai.com"),
        ("core/method", "POST"),
        ("core/path", "/v1/chat/completions"),
        ("core/url", "https://api.openai.com/v1/chat/completions"),
        ("core/durationMs", "420"),
        ("core/status", "200"),
        ("openai/endpoint", "/v1/chat/completions"),
        ("openai/model", "gpt-4o-mini"),
        ("openai/stream", "1"),
        ("openai/status", "200"),
        ("openai/requestId", "req_8f3c2a9d0e1b4c5a"),
        ("openai/processingMs", "187"),
        ("openai/limitRequests", "10000"),
        ("openai/remainingRequests", "9999"),
        ("openai/limitTokens", "200000"),
        ("openai/remainingTokens", "199985"),
        ("openai/responseModel", "gpt-4o-mini-2024-07-18"),
        ("openai/finishReason", "stop"),
        ("openai/promptTokens", "19"),
        ("openai/completionTokens", "3"),
        ("openai/totalTokens", "22"),
        ("openai/cachedTokens", "0"),
        ("openai/reasoningTokens", "0"),
    ]);
    assert_eq!(
        replay(&["--har".to_owned(), har.clone()]),
        vec![want.clone()]
    );
    let cut = replay(&[
        "--har".to_owned(),
        har,
        "--max-body".to_owned(),
        "512".to_owned(),
    ]);
    assert_eq!(cut, vec![want]);
}

#[test]
fn replay_refuses_a_directory_that_is_not_a_recording() {
    let dir = taskless_e2e::harness::TempDir::new("not-a-recording").expect("tempdir");
    let out = Command::new(agent_bin())
        .args(["replay", &dir.path().display().to_string()])
        .output()
        .expect("run taskless-agent replay");
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("no recorded connections"), "{stderr}");
    assert!(out.stdout.is_empty());
}
