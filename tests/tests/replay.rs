//! `taskless-agent replay` over committed inputs, without root: a recording made with
//! `--record` (a Python client's three calls to the local test API) and a HAR file. The real
//! binary runs the shipped packs; the output lines must carry their exact dimensions.

use std::{collections::BTreeMap, path::PathBuf, process::Command};

use taskless_e2e::harness::{agent_bin, dimensions, packs_dir};

fn data(name: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("data")
        .join(name)
}

/// Runs `replay` with `args` and returns its output lines' dimensions, sorted.
fn replay(args: &[String]) -> Vec<BTreeMap<String, String>> {
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
    let mut lines: Vec<BTreeMap<String, String>> = String::from_utf8_lossy(&out.stdout)
        .lines()
        .map(|l| {
            let v: serde_json::Value = serde_json::from_str(l).expect("NDJSON line");
            let id = v["requestId"].as_str().expect("requestId");
            assert_eq!(id.len(), 32, "requestId {id}");
            dimensions(&v)
        })
        .collect();
    lines.sort();
    lines
}

fn dims(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
    pairs
        .iter()
        .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
        .collect()
}

#[test]
fn a_recording_replays_to_the_lines_of_the_live_run() {
    let lines = replay(&[data("recording-charges").display().to_string()]);
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
