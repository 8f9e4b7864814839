//! End to end, as root, with the real eBPF programs: curl calls the local HTTPS test API (Stripe
//! style calls and an OpenAI style streamed completion) while the agent watches it with
//! `--record DIR`; `taskless-agent replay DIR` must then print the same lines as the live run,
//! without root or eBPF: the same pack outputs (the openai pack's streamed token usage
//! included) and the same `source` (pid, process, connection, fd, addresses, server name,
//! cgroup). Only requestIds differ.

use std::{
    collections::BTreeMap,
    process::Command,
    time::{Duration, Instant},
};

use taskless_e2e::harness::{
    Agent, KillOnDrop, TempDir, TestApi, agent_bin, dimensions, matching, packs_dir,
    packs_for_localhost, require_root,
};

/// Each line's dimensions and `source`, sorted: what must be the same live and replayed.
fn comparable(lines: &[serde_json::Value]) -> Vec<(BTreeMap<String, String>, String)> {
    let mut v: Vec<_> = lines
        .iter()
        .map(|l| (dimensions(l), l["source"].to_string()))
        .collect();
    v.sort();
    v
}

#[test]
fn a_recorded_curl_session_replays_to_the_same_lines() {
    require_root();
    assert!(
        packs_dir().join("core@0.1.0/manifest.json").exists(),
        "packs not built in {}: run `cargo xtask test`",
        packs_dir().display()
    );
    let api = TestApi::start().expect("test API");
    let base = api.server.base_url();
    let ca = api.server.ca_file.display().to_string();
    let rec = TempDir::new("recording").expect("tempdir");
    let rec_dir = rec.path().join("rec");
    let packs = rec.path().join("packs");
    packs_for_localhost(&packs);

    let next = |args: &mut Command| {
        args.args([
            "--next",
            "-sS",
            "-o",
            "/dev/null",
            "--http1.1",
            "--cacert",
            ca.as_str(),
        ]);
    };
    let mut cmd = Command::new("curl");
    cmd.args(["-sS", "-o", "/dev/null", "--http1.1", "--cacert", &ca])
        .arg(format!("{base}/v1/gate"));
    next(&mut cmd);
    cmd.args(["-d", "amount=2000&source=tok_visa"])
        .arg(format!("{base}/v1/charges?delay_ms=50"));
    next(&mut cmd);
    cmd.args(["-d", "amount=500&source=tok_chargeDeclined"])
        .arg(format!("{base}/v1/charges"));
    next(&mut cmd);
    cmd.arg(format!("{base}/v1/customers/cus_42"));
    next(&mut cmd);
    cmd.args(["-H", "Content-Type: application/json", "-d"])
        .arg(r#"{"model":"gpt-4o-stream","stream":true,"stream_options":{"include_usage":true},"messages":[{"role":"user","content":"hi"}]}"#)
        .arg(format!("{base}/v1/chat/completions"));
    let mut curl = KillOnDrop(cmd.spawn().expect("curl"));
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
        .wait_for_lines(4, Duration::from_secs(30), &mut seen)
        .expect("four exchanges");
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
    // The streamed completion's usage comes from its last server-sent event, through `chunk`.
    let streamed = matching(
        &live.lines,
        &[
            ("openai/model", "gpt-4o-stream"),
            ("openai/stream", "1"),
            ("openai/totalTokens", "15"),
        ],
    );
    assert_eq!(streamed.len(), 1, "{:#?}", live.lines);
    // What the comparison below is about: the live run knew the connection's socket, server
    // name and cgroup.
    let curl_pid = curl.0.id();
    for line in &live.lines {
        let s = &line["source"];
        assert_eq!(s["pid"], curl_pid, "{line}");
        assert_eq!(s["process"], "curl", "{line}");
        assert!(s["fd"].is_i64(), "{line}");
        assert!(s["localAddress"].is_string(), "{line}");
        let port = format!(":{}", api.server.addr.port());
        assert!(
            s["remoteAddress"]
                .as_str()
                .is_some_and(|a| a.ends_with(&port)),
            "{line}"
        );
        assert_eq!(s["serverName"], "localhost", "{line}");
        assert!(s["cgroup"].is_string(), "{line}");
    }

    let files = std::fs::read_dir(&rec_dir)
        .expect("recording directory")
        .filter_map(Result::ok)
        .filter(|e| e.path().extension().is_some_and(|x| x == "jsonl"))
        .count();
    assert!(files >= 1, "one file per connection");

    // Replay needs neither root nor the watched process: curl has exited, and nothing of the
    // source may come from this machine's /proc now.
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
    // Same dimensions, durationMs included (the recording keeps the kernel timestamps and the
    // clock offset of the live run), and the same source, field for field.
    assert_eq!(
        comparable(&replayed),
        comparable(&live.lines),
        "replay of {}",
        rec_dir.display()
    );
    let live_ids: Vec<_> = live.lines.iter().map(|l| l["requestId"].clone()).collect();
    for line in &replayed {
        assert!(!live_ids.contains(&line["requestId"]), "fresh requestIds");
    }
}
