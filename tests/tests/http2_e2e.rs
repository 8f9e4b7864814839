//! End to end, as root: curl speaking HTTP/2 (negotiated with ALPN); the agent rebuilds each
//! stream as its own exchange, HPACK and all. HTTP/2 needs the connection's start (preface,
//! settings, the HPACK history), so the calls that count go over a connection opened after the
//! agent attached: curl waits at the gate on `localhost`, then calls `127.0.0.1`.

use std::{process::Command, time::Duration};

use taskless_e2e::harness::{Agent, KillOnDrop, TestApi, matching, packs_dir, require_root};

#[test]
fn curl_http2_streams_are_exchanges_with_core_dimensions() {
    require_root();
    let api = TestApi::start().expect("test API");
    let base = api.server.base_url();
    let fresh = format!("https://127.0.0.1:{}", api.server.addr.port());
    let ca = api.server.ca_file.display().to_string();
    let h2 = ["-sS", "-o", "/dev/null", "--http2", "--cacert", ca.as_str()];
    let curl = Command::new("curl")
        .args(h2)
        .arg(format!("{base}/v1/gate"))
        .arg("--next")
        .args(h2)
        .args(["-d", "amount=500&source=tok_chargeDeclined"])
        .arg(format!("{fresh}/v1/charges"))
        .arg("--next")
        .args(h2)
        .arg(format!("{fresh}/v1/customers/cus_h2"))
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
        .expect("two exchanges");
    let out = agent.stop(seen).expect("agent stops");

    let declined = matching(
        &out.lines,
        &[
            ("core/path", "/v1/charges"),
            ("core/status", "402"),
            ("core/error", "card_error"),
            ("core/method", "POST"),
        ],
    );
    assert_eq!(declined.len(), 1, "{:#?}", out.lines);
    let customer = matching(
        &out.lines,
        &[
            ("core/path", "/v1/customers/cus_h2"),
            ("core/status", "200"),
            ("core/domain", "127.0.0.1"),
        ],
    );
    assert_eq!(customer.len(), 1, "{:#?}", out.lines);
}
