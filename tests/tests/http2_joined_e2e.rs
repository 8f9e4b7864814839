//! End to end, as root: an HTTP/2 connection the agent joins in the middle. curl opens one
//! connection and sends its first request (held at `/v1/gate`) before the agent attaches; once it
//! is attached the gate opens and curl sends two more requests on the same connection. Their
//! header blocks refer to HPACK table entries inserted before the agent was there (`:authority`,
//! `user-agent`, `accept`): the agent still reports both exchanges, with what the static table
//! and the literals give (`:method`, `:path`, `:status`), instead of losing them, marked
//! `"partial": true`, and the stats count the partial heads and the skipped stream.

use std::{process::Command, time::Duration};

use taskless_e2e::harness::{Agent, KillOnDrop, TestApi, matching, packs_dir, require_root};

#[test]
fn http2_joined_mid_connection_reports_later_exchanges() {
    require_root();
    let api = TestApi::start().expect("test API");
    let base = api.server.base_url();
    let ca = api.server.ca_file.display().to_string();
    let h2 = ["-sS", "-o", "/dev/null", "--http2", "--cacert", ca.as_str()];
    // Every call goes to the same origin, so curl keeps the one connection.
    let curl = Command::new("curl")
        .args(h2)
        .arg(format!("{base}/v1/gate"))
        .arg("--next")
        .args(h2)
        .args(["-d", "amount=500&source=tok_chargeDeclined"])
        .arg(format!("{base}/v1/charges"))
        .arg("--next")
        .args(h2)
        .arg(format!("{base}/v1/customers/cus_joined"))
        .spawn()
        .expect("curl");
    let curl = KillOnDrop(curl);
    api.wait_gate_waiters(1, Duration::from_secs(20))
        .expect("curl at the gate");

    let pid = curl.0.id().to_string();
    let packs = packs_dir().display().to_string();
    let mut agent = Agent::start(&["--pid", &pid, "--packs", &packs]).expect("agent");
    agent
        .wait_for_log("ready", Duration::from_secs(60))
        .expect("agent ready");
    api.server.open_gate();
    let mut seen = Vec::new();
    agent
        .wait_for_lines(2, Duration::from_secs(30), &mut seen)
        .expect("the two exchanges after the join");
    let out = agent.stop(seen).expect("agent stops");

    let declined = matching(
        &out.lines,
        &[
            ("core/method", "POST"),
            ("core/path", "/v1/charges"),
            ("core/status", "402"),
        ],
    );
    assert_eq!(declined.len(), 1, "{:#?}", out.lines);
    let customer = matching(
        &out.lines,
        &[
            ("core/method", "GET"),
            ("core/path", "/v1/customers/cus_joined"),
            ("core/status", "200"),
        ],
    );
    assert_eq!(customer.len(), 1, "{:#?}", out.lines);
    // Both are marked partial: fields from before the join are unknown.
    for line in declined.iter().chain(&customer) {
        assert_eq!(line["partial"], true, "{line}");
    }
    // The gate's exchange began before the join: it is skipped, not reported half-known.
    assert!(
        matching(&out.lines, &[("core/path", "/v1/gate")]).is_empty(),
        "{:#?}",
        out.lines
    );
    // And the stats say so: heads with unknown fields, the stream skipped and why.
    assert!(out.counter("http_h2_partial_heads") >= 2, "{}", out.stderr);
    assert!(
        out.counter("http_h2_skipped_streams") >= 1,
        "{}",
        out.stderr
    );
    assert!(
        out.counter("http_h2_skipped_streams_started_unseen") >= 1,
        "{}",
        out.stderr
    );
}
