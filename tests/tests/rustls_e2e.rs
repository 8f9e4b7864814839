//! End to end, as root, with the real eBPF programs: rustls programs. reqwest clients built in the
//! test against pinned rustls versions (0.21 through tokio-rustls 0.24, 0.23 through
//! tokio-rustls 0.26: two different read paths) call the local HTTPS test API; the test API's own
//! server (tokio + rustls 0.23) is watched on the server side, including requests that arrive
//! with the handshake's last message (decrypted before the connection moves); a stripped rustls binary is
//! refused with the reason. Every exchange must be reported once with the core pack's exact
//! dimensions, the socket and its addresses.

use std::{
    io::BufRead as _,
    process::{Command, Stdio},
    time::Duration,
};

use taskless_e2e::{
    clients::{ReadyClient, agent_for, assert_script, assert_source, rustls_client, socket_fds},
    harness::{KillOnDrop, TempDir, TestApi, agent_bin, matching, require_root},
};

/// The client on rustls `version` runs the shared script with the agent attached. With `fresh`
/// its connection is opened after the agent attached (HTTP/2 where reqwest offers it, with the
/// whole HPACK history); otherwise it is the HTTP/1.1 connection its warm-up opened before.
fn client_is_captured(version: &str, fresh: bool) {
    require_root();
    let bin = rustls_client(version).expect("build the rustls client");
    let api = TestApi::start().expect("test API");
    let port = api.server.addr.port();
    let mut cmd = Command::new(&bin);
    cmd.arg(api.server.base_url()).arg(&api.server.ca_file);
    if fresh {
        cmd.arg("fresh");
    }
    let mut client = ReadyClient::start(cmd).expect("client ready");
    let pid = client.pid();
    let warm = socket_fds(pid, port);
    assert_eq!(
        warm.len(),
        usize::from(!fresh),
        "pooled connections: {warm:?}"
    );

    let mut agent = agent_for(&[pid], &[]).expect("agent");
    assert!(
        agent.stderr_snapshot().contains("stack=\"rustls\""),
        "{}",
        agent.stderr_snapshot()
    );
    let printed = client.release().expect("client runs");
    assert_eq!(
        printed.split_whitespace().collect::<Vec<_>>(),
        ["200", "402", "404"],
        "the client's own results"
    );
    let mut seen = Vec::new();
    agent
        .wait_for_lines(3, Duration::from_secs(30), &mut seen)
        .expect("three exchanges");
    // The client's sockets to the API, before and after: hyper may replace a pooled connection.
    let mut fds = warm;
    fds.extend(socket_fds(pid, port));
    let out = agent.stop(seen).expect("agent stops");
    client.finish().expect("client exits");
    assert_eq!(out.lines.len(), 3, "{:#?}", out.lines);
    for line in assert_script(&out.lines, port) {
        assert_source(line, pid, None, port);
        let fd = line["source"]["fd"].as_i64().expect("fd");
        assert!(
            fds.iter().any(|f| i64::from(*f) == fd),
            "fd {fd} is one of the client's sockets to the API {fds:?}: {line}"
        );
    }
    if fresh {
        assert!(
            out.lines.iter().all(|l| l.get("partial").is_none()),
            "every header decoded: {:#?}",
            out.lines
        );
        assert_eq!(out.counter("http_h2_skipped_streams"), 0, "{}", out.stderr);
    }
    assert_eq!(out.counter("kernel_unattributed"), 0, "{}", out.stderr);
}

/// reqwest 0.11 offers HTTP/2 by ALPN.
#[test]
fn reqwest_on_rustls_0_21_over_http2_is_captured() {
    client_is_captured("0.21", true);
}

#[test]
fn reqwest_on_rustls_0_21_is_captured() {
    client_is_captured("0.21", false);
}

#[test]
fn reqwest_on_rustls_0_23_is_captured() {
    client_is_captured("0.23", false);
}

/// The project's test API server (tokio-rustls over rustls 0.23, hyper), started with its CA
/// file in `dir`: the server, its base URL and its port.
fn start_test_api_server(dir: &TempDir) -> (KillOnDrop, String, u16) {
    let ca = dir.path().join("ca.pem");
    let mut server = KillOnDrop(
        Command::new(env!("CARGO_BIN_EXE_taskless-testapi"))
            .arg("--ca-file")
            .arg(&ca)
            .stdout(Stdio::piped())
            .spawn()
            .expect("taskless-testapi (built by `cargo xtask test`)"),
    );
    let mut line = String::new();
    std::io::BufReader::new(server.0.stdout.take().expect("stdout"))
        .read_line(&mut line)
        .expect("listening line");
    let base = line
        .trim()
        .strip_prefix("listening ")
        .expect("listening https://localhost:PORT")
        .to_owned();
    let port: u16 = base
        .rsplit(':')
        .next()
        .and_then(|p| p.parse().ok())
        .expect("port");
    (server, base, port)
}

/// Checks that `line` was seen by the server `pid` on its side of a socket on `port`; returns
/// the socket's fd.
fn assert_server_source(line: &serde_json::Value, pid: u32, port: u16) -> i64 {
    let source = &line["source"];
    assert_eq!(source["pid"].as_u64(), Some(u64::from(pid)), "{line}");
    assert_eq!(
        source["localAddress"].as_str(),
        Some(format!("127.0.0.1:{port}").as_str()),
        "the server's side of the socket: {line}"
    );
    source["fd"].as_i64().expect("an fd")
}

/// The test API server watched while curl calls it: the same exchanges, seen from the side that
/// answers them, on a connection opened after the agent attached.
#[test]
fn the_test_api_server_is_captured_on_the_server_side() {
    require_root();
    let dir = TempDir::new("rustls-server").expect("tempdir");
    let (server, base, port) = start_test_api_server(&dir);
    let mut agent = agent_for(&[server.0.id()], &["--server-side"]).expect("agent");
    let ca = dir.path().join("ca.pem").display().to_string();
    let next = [
        "--next",
        "-sS",
        "-o",
        "/dev/null",
        "--http1.1",
        "--cacert",
        &ca,
    ];
    let curl = Command::new("curl")
        .args(&next[1..])
        .args([
            "-H",
            "Idempotency-Key: c-1",
            "-d",
            "amount=100&source=tok_visa",
            &format!("{base}/v1/charges?delay_ms=120"),
        ])
        .args(next)
        .args([
            "-d",
            "amount=100&source=tok_chargeDeclined",
            &format!("{base}/v1/charges"),
        ])
        .args(next)
        .arg(format!("{base}/v1/missing"))
        .status()
        .expect("curl");
    assert!(curl.success());
    let mut seen = Vec::new();
    let _ = agent.wait_for_lines(3, Duration::from_secs(30), &mut seen);
    let out = agent.stop(seen).expect("agent stops");
    assert_eq!(out.lines.len(), 3, "{:#?}", out.lines);
    for line in assert_script(&out.lines, port) {
        assert_server_source(line, server.0.id(), port);
    }
    assert_eq!(out.counter("kernel_unattributed"), 0, "{}", out.stderr);
}

/// A request that reaches the server in the same segment as the client's Finished is decrypted
/// while tokio-rustls still handshakes, before it moves the connection into its stream: every
/// such request, and the one after it on the same connection, is reported once, on its socket.
#[test]
fn a_request_sent_with_the_handshake_is_captured_on_the_server_side() {
    require_root();
    const CONNECTIONS: usize = 6;
    let dir = TempDir::new("rustls-moved").expect("tempdir");
    let (server, _base, port) = start_test_api_server(&dir);
    let mut agent = agent_for(&[server.0.id()], &["--server-side"]).expect("agent");
    let script = concat!(env!("CARGO_MANIFEST_DIR"), "/data/request_with_finished.py");
    let ca = dir.path().join("ca.pem");
    let out = Command::new("python3")
        .arg(script)
        .args(["localhost", &port.to_string()])
        .arg(&ca)
        .arg(CONNECTIONS.to_string())
        .output()
        .expect("python3");
    assert!(out.status.success(), "{out:?}");
    let statuses = String::from_utf8_lossy(&out.stdout);
    assert_eq!(
        statuses.lines().filter(|l| *l == "HTTP/1.1 200 OK").count(),
        2 * CONNECTIONS,
        "{statuses}"
    );
    let mut seen = Vec::new();
    let _ = agent.wait_for_lines(2 * CONNECTIONS, Duration::from_secs(30), &mut seen);
    let out = agent.stop(seen).expect("agent stops");
    assert_eq!(
        out.lines.len(),
        2 * CONNECTIONS,
        "{:#?}\n{}",
        out.lines,
        out.stderr
    );
    for i in 0..CONNECTIONS {
        let fds: Vec<i64> = [
            format!("/v1/customers/cus_move{i}"),
            format!("/v1/customers/cus_next{i}"),
        ]
        .iter()
        .map(|path| {
            let found = matching(
                &out.lines,
                &[("core/path", path.as_str()), ("core/status", "200")],
            );
            assert_eq!(found.len(), 1, "one line for {path}: {:#?}", out.lines);
            assert_server_source(found[0], server.0.id(), port)
        })
        .collect();
        assert_eq!(
            fds[0], fds[1],
            "both requests of connection {i} on one socket"
        );
    }
    assert_eq!(out.counter("kernel_unattributed"), 0, "{}", out.stderr);
    assert_eq!(out.counter("http_orphan_responses"), 0, "{}", out.stderr);
    // Connections after the first are often moved to the address a closed one had, on another
    // fd: each is one connection with its own socket.
    assert_eq!(out.counter("fd_changes"), 0, "{}", out.stderr);
    assert_eq!(out.counter("addresses_unresolved"), 0, "{}", out.stderr);
}

/// A stripped rustls binary is named, with why it cannot be traced.
#[test]
fn a_stripped_rustls_binary_is_refused_with_the_reason() {
    require_root();
    let bin = rustls_client("0.23").expect("build the rustls client");
    let dir = TempDir::new("rustls-stripped").expect("tempdir");
    let stripped = dir.path().join("rustls-client");
    let s = Command::new("strip")
        .arg("-o")
        .arg(&stripped)
        .arg(&bin)
        .status()
        .expect("strip");
    assert!(s.success());
    let api = TestApi::start().expect("test API");
    let mut cmd = Command::new(&stripped);
    cmd.arg(api.server.base_url()).arg(&api.server.ca_file);
    let mut client = ReadyClient::start(cmd).expect("client ready");
    let o = Command::new(agent_bin())
        .args(["--pid", &client.pid().to_string()])
        .stdin(Stdio::null())
        .output()
        .expect("agent");
    let e = String::from_utf8_lossy(&o.stderr);
    assert!(!o.status.success(), "{e}");
    assert!(
        e.contains("rustls 0.23."),
        "names the stack and version: {e}"
    );
    assert!(e.contains("stripped"), "says why: {e}");
    assert!(!e.contains("statically"), "the cause is known: {e}");
    assert_eq!(
        client.release().expect("client").split_whitespace().count(),
        3,
        "the client is untouched"
    );
}
