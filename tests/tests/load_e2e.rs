//! Under load, as root: wrk (OpenSSL, 4 kept-alive connections) hammers the local test API while
//! the agent watches it. Every request wrk reports must appear once in the output, with zero
//! loss counted anywhere. The packs directory is empty so this measures the capture path (the
//! pack stage has its own benchmark); the sustained rate is printed.

use std::{process::Command, time::Duration};

use taskless_e2e::harness::{Agent, TempDir, TestApi, require_root, wrk_requests};

#[test]
fn every_request_wrk_completes_appears_once_with_nothing_lost() {
    require_root();
    let api = TestApi::start().expect("test API");
    let dir = TempDir::new("load").expect("tempdir");
    // wrk connects (and completes the TLS handshakes) at once; every connection then holds its
    // first request until 12 s have passed, so every request is made after the agent is attached.
    let lua = dir.path().join("delay.lua");
    std::fs::write(
        &lua,
        "local start = os.time()\nfunction delay()\n  local left = start + 12 - os.time()\n  if left > 0 then return left * 1000 end\n  return 0\nend\n",
    )
    .expect("lua");
    let empty_packs = dir.path().join("packs");
    std::fs::create_dir(&empty_packs).expect("packs dir");
    let url = format!("{}/v1/customers/cus_load", api.server.base_url());
    let wrk = Command::new("wrk")
        .args(["-t1", "-c4", "-d16s", "--latency", "-s"])
        .arg(&lua)
        .arg(&url)
        .stdout(std::process::Stdio::piped())
        .spawn()
        .expect("wrk");
    std::thread::sleep(Duration::from_millis(300));
    let pid = wrk.id().to_string();
    let mut agent = Agent::start(&[
        "--pid",
        &pid,
        "--packs",
        &empty_packs.display().to_string(),
        "--stats-interval",
        "0",
    ])
    .expect("agent");
    agent
        .wait_for_log("ready", Duration::from_secs(11))
        .expect("agent ready before wrk starts sending");
    let wrk_out = wrk.wait_with_output().expect("wrk finishes");
    let wrk_text = String::from_utf8_lossy(&wrk_out.stdout).into_owned();
    assert!(wrk_out.status.success(), "{wrk_text}");
    let requests = wrk_requests(&wrk_text).expect("wrk request count");
    // wrk averages over its whole run; the load itself lasted the last 4 of its 16 seconds.
    #[allow(clippy::cast_precision_loss)]
    let rate = requests as f64 / 4.0;
    assert!(
        requests > 100,
        "wrk made too few requests to mean anything: {wrk_text}"
    );
    agent
        .wait_for_log("every watched process has exited", Duration::from_secs(30))
        .expect("agent stops");
    let out = agent.stop(Vec::new()).expect("agent output");

    let lines = out.lines.len() as u64;
    // Requests still in flight when wrk's clock stopped are not in its count but are real
    // exchanges the agent saw: at most one per connection.
    assert!(
        (requests..=requests + 4).contains(&lines),
        "wrk completed {requests} requests, the agent printed {lines} lines\n{wrk_text}\n{}",
        out.stderr
    );
    for c in [
        "lost_bytes",
        "resyncs",
        "dropped_jobs",
        "undecodable",
        "kernel_ringbuf_full",
        "kernel_read_failed",
        "kernel_unmatched_return",
    ] {
        assert_eq!(out.counter(c), 0, "{c}\n{}", out.stderr);
    }
    eprintln!(
        "load: {requests} requests at about {rate:.0}/s through the probes, {lines} lines, nothing lost"
    );
}
