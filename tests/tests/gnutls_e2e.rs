//! End to end, as root, with the real eBPF programs: GnuTLS clients (Debian's `wget`, and a
//! small C client on `libcurl-gnutls`) call the local HTTPS test API; the agent attached to them
//! by pid must print one line per exchange with the core pack's exact dimensions, the client's
//! socket and addresses, and leave the clients' own results unchanged.

use std::{process::Command, time::Duration};

use taskless_e2e::{
    clients::{ReadyClient, agent_for, assert_script, assert_source, gcc, socket_fds},
    harness::{KillOnDrop, TempDir, TestApi, dimensions, matching, require_root},
};

/// Two wget processes, each waiting at the API's gate with its first URL until the agent is
/// attached to both: one GETs a customer and a missing resource, the other POSTs a declined
/// charge (wget sends one method and body to every URL). Each ends with a slow call, so its
/// socket is still open when the agent reads the addresses (wget is quick to exit otherwise).
#[test]
fn wget_exchanges_are_captured_with_core_dimensions() {
    require_root();
    let api = TestApi::start().expect("test API");
    let base = api.server.base_url();
    let ca = api.server.ca_file.display().to_string();
    let dir = TempDir::new("wget").expect("tempdir");
    let wget = |out: &str, extra: &[&str], paths: &[&str]| {
        let mut cmd = Command::new("wget");
        cmd.args(["-q", "--ca-certificate", &ca, "-O"])
            .arg(dir.path().join(out))
            .args(extra)
            .args(paths.iter().map(|p| format!("{base}{p}")));
        KillOnDrop(cmd.spawn().expect("wget (`cargo xtask setup` installs it)"))
    };
    let mut getter = wget(
        "get.out",
        &[],
        &[
            "/v1/gate",
            "/v1/customers/cus_42",
            "/v1/missing",
            "/v1/customers/cus_slow?delay_ms=300",
        ],
    );
    let mut poster = wget(
        "post.out",
        &["--post-data", "amount=500&source=tok_chargeDeclined"],
        &["/v1/gate", "/v1/charges", "/v1/upload?delay_ms=300"],
    );
    api.wait_gate_waiters(2, Duration::from_secs(20))
        .expect("both wgets at the gate");
    let (get_pid, post_pid) = (getter.0.id(), poster.0.id());
    let get_fd = socket_fds(get_pid, api.server.addr.port());
    let post_fd = socket_fds(post_pid, api.server.addr.port());
    assert_eq!(get_fd.len(), 1, "wget's one connection: {get_fd:?}");
    assert_eq!(post_fd.len(), 1, "wget's one connection: {post_fd:?}");

    let mut agent = agent_for(&[get_pid, post_pid], &[]).expect("agent");
    api.server.open_gate();
    // wget exits non-zero when a URL fails (404, 402): only the output matters.
    let _ = getter.0.wait().expect("wget exits");
    let _ = poster.0.wait().expect("wget exits");
    let mut seen = Vec::new();
    agent
        .wait_for_lines(5, Duration::from_secs(30), &mut seen)
        .expect("five exchanges");
    let out = agent.stop(seen).expect("agent stops");
    assert_eq!(out.code, Some(0), "{}", out.stderr);

    let port = api.server.addr.port();
    let one = |want: &[(&str, &str)]| {
        let found = matching(&out.lines, want);
        assert_eq!(found.len(), 1, "one line with {want:?} in {:#?}", out.lines);
        found[0]
    };
    let customer = one(&[
        ("core/method", "GET"),
        ("core/path", "/v1/customers/cus_42"),
        ("core/status", "200"),
    ]);
    assert_eq!(
        dimensions(customer).get("core/url"),
        Some(&format!("https://localhost:{port}/v1/customers/cus_42"))
    );
    let missing = one(&[
        ("core/path", "/v1/missing"),
        ("core/status", "404"),
        ("core/error", "invalid_request_error"),
    ]);
    let declined = one(&[
        ("core/method", "POST"),
        ("core/path", "/v1/charges"),
        ("core/status", "402"),
        ("core/error", "card_error"),
    ]);
    assert_source(customer, get_pid, Some(get_fd[0]), port);
    assert_source(missing, get_pid, Some(get_fd[0]), port);
    assert_source(declined, post_pid, Some(post_fd[0]), port);
    // GnuTLS's server name reached the line too.
    assert_eq!(customer["source"]["serverName"], "localhost", "{customer}");
    // The gate calls began before the agent attached: at most their responses were seen, and
    // no call is reported twice.
    assert!(matching(&out.lines, &[("core/path", "/v1/gate")]).is_empty());
    let upload = one(&[("core/path", "/v1/upload"), ("core/status", "200")]);
    assert_source(upload, post_pid, Some(post_fd[0]), port);
    let slow = one(&[
        ("core/path", "/v1/customers/cus_slow"),
        ("core/status", "200"),
    ]);
    assert_source(slow, get_pid, Some(get_fd[0]), port);
    assert_eq!(out.lines.len(), 5, "{:#?}", out.lines);
    // What wget saved is what the API sent.
    let saved = std::fs::read_to_string(dir.path().join("get.out")).expect("wget output");
    assert!(saved.contains(r#""id":"cus_42""#), "{saved}");
}

/// A C client on libcurl-gnutls (the libcurl `git` uses for HTTPS), one kept-alive connection.
#[test]
fn libcurl_gnutls_exchanges_are_captured_with_core_dimensions() {
    require_root();
    let api = TestApi::start().expect("test API");
    let dir = TempDir::new("curl-gnutls").expect("tempdir");
    let client = gcc(
        "curl_client",
        "curl_client",
        dir.path(),
        &["/usr/lib/x86_64-linux-gnu/libcurl-gnutls.so.4"],
    )
    .expect("build the libcurl-gnutls client (`cargo xtask setup` installs libcurl4-gnutls-dev)");
    let mut cmd = Command::new(client);
    cmd.arg(api.server.base_url()).arg(&api.server.ca_file);
    let mut client = ReadyClient::start(cmd).expect("client ready");
    let pid = client.pid();
    let fds = socket_fds(pid, api.server.addr.port());
    assert_eq!(fds.len(), 1, "one kept-alive connection: {fds:?}");

    let mut agent = agent_for(&[pid], &[]).expect("agent");
    let printed = client.release().expect("client runs");
    assert_eq!(printed.trim(), "200 402 404", "the client's own results");
    let mut seen = Vec::new();
    agent
        .wait_for_lines(3, Duration::from_secs(30), &mut seen)
        .expect("three exchanges");
    let out = agent.stop(seen).expect("agent stops");
    client.finish().expect("client exits");
    assert_eq!(out.lines.len(), 3, "{:#?}", out.lines);
    let port = api.server.addr.port();
    for line in assert_script(&out.lines, port) {
        assert_source(line, pid, Some(fds[0]), port);
    }
    assert!(out.stderr.contains("stack=\"GnuTLS\""), "{}", out.stderr);
}
