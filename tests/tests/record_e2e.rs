//! End to end, as root, with the real eBPF programs: curl calls the local HTTPS test API while
//! the agent watches it with `--record DIR`; `taskless-agent replay DIR` must then print the
//! same lines as the live run (only requestIds differ), without root or eBPF.

use std::{
    collections::BTreeMap,
    process::Command,
    time::{Duration, Instant},
};

use taskless_e2e::harness::{
    Agent, KillOnDrop, TempDir, TestApi, agent_bin, dimensions, matching, packs_dir, require_root,
};

fn sorted_dimensions(lines: &[serde_json::Value]) -> Vec<BTreeMap<String, String>> {
    let mut v: Vec<_> = lines.iter().map(dimensions).collect();
    v.sort();
    v
}

#[test]
fn a_recorded_curl_session_replays_to_the_same_lines() {
    require_root();
    let packs = packs_dir();
    assert!(
        packs.join("core@0.1.0/manifest.json").exists(),
        "packs not built in {}: run `cargo xtask test`",
        packs.display()
    );
    let api = TestApi::start().expect("test API");
    let base = api.server.base_url();
    let ca = api.server.ca_file.display().to_string();
    let rec = TempDir::new("recording").expect("tempdir");
    let rec_dir = rec.path().join("rec");

    let mut curl = KillOnDrop(
        Command::new("curl")
            .args(["-sS", "-o", "/dev/null", "--http1.1", "--cacert", &ca])
            .arg(format!("{base}/v1/gate"))
            .args([
                "--next",
                "-sS",
                "-o",
                "/dev/null",
                "--http1.1",
                "--cacert",
                &ca,
            ])
            .args(["-d", "amount=2000&source=tok_visa"])
            .arg(format!("{base}/v1/charges?delay_ms=50"))
            .args([
                "--next",
                "-sS",
                "-o",
                "/dev/null",
                "--http1.1",
                "--cacert",
                &ca,
            ])
            .args(["-d", "amount=500&source=tok_chargeDeclined"])
            .arg(format!("{base}/v1/charges"))
            .args([
                "--next",
                "-sS",
                "-o",
                "/dev/null",
                "--http1.1",
                "--cacert",
                &ca,
            ])
            .arg(format!("{base}/v1/customers/cus_42"))
            .spawn()
            .expect("curl"),
    );
    api.wait_gate_waiters(1, Duration::from_secs(20))
        .expect("curl at the gate");

    let mut agent = Agent::start(&[
        "--pid".to_owned(),
        curl.0.id().to_string(),
        "--packs".to_owned(),
        packs.display().to_string(),
        "--record".to_owned(),
        rec_dir.display().to_string(),
    ])
    .expect("start agent");
    agent
        .wait_for_log("ready", Duration::from_secs(60))
        .expect("agent ready");
    api.server.open_gate();
    let deadline = Instant::now() + Duration::from_secs(30);
    while curl.0.try_wait().expect("curl status").is_none() {
        assert!(Instant::now() < deadline, "curl did not finish");
        std::thread::sleep(Duration::from_millis(20));
    }
    let mut seen = Vec::new();
    agent
        .wait_for_lines(3, Duration::from_secs(30), &mut seen)
        .expect("three exchanges");
    let live = agent.stop(seen).expect("agent stops");
    assert_eq!(live.code, Some(0), "stderr:\n{}", live.stderr);
    assert!(
        live.stderr.contains("recording closed") && live.stderr.contains("dropped=0"),
        "the recorder reports nothing dropped:\n{}",
        live.stderr
    );
    let declined = matching(
        &live.lines,
        &[
            ("core/path", "/v1/charges"),
            ("core/status", "402"),
            ("core/error", "card_error"),
        ],
    );
    assert_eq!(declined.len(), 1, "{:#?}", live.lines);

    let files = std::fs::read_dir(&rec_dir)
        .expect("recording directory")
        .filter_map(Result::ok)
        .filter(|e| e.path().extension().is_some_and(|x| x == "jsonl"))
        .count();
    assert!(files >= 1, "one file per connection");

    let out = Command::new(agent_bin())
        .arg("replay")
        .arg(&rec_dir)
        .arg("--packs")
        .arg(&packs)
        .output()
        .expect("replay");
    assert!(
        out.status.success(),
        "replay failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let replayed: Vec<serde_json::Value> = String::from_utf8_lossy(&out.stdout)
        .lines()
        .map(|l| serde_json::from_str(l).expect("NDJSON line"))
        .collect();
    // Same dimensions, durationMs included: the recording keeps the kernel timestamps and the
    // clock offset of the live run.
    assert_eq!(
        sorted_dimensions(&replayed),
        sorted_dimensions(&live.lines),
        "replay of {}",
        rec_dir.display()
    );
    let live_ids: Vec<_> = live.lines.iter().map(|l| l["requestId"].clone()).collect();
    for line in &replayed {
        assert!(!live_ids.contains(&line["requestId"]), "fresh requestIds");
    }
}
