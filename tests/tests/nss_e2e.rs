//! End to end, as root, with the real eBPF programs: NSS clients call the local HTTPS test API.
//! A small C client on libnss3 (PR_Write/PR_Send and PR_Read/PR_Recv) uses one connection made
//! before the agent attached and one made after; NSS's own `tstclnt` is followed from a shell.
//! Every exchange must be reported once, with the core pack's exact dimensions, the socket and
//! its addresses; plain NSPR I/O (files, stdout) is never taken for TLS.

use std::{
    io::Write as _,
    process::{Command, Stdio},
    time::Duration,
};

use taskless_e2e::{
    clients::{ReadyClient, agent_for, assert_script, assert_source, gcc, nss_flags, socket_fds},
    harness::{KillOnDrop, TempDir, TestApi, matching, require_root},
};

#[test]
fn nss_client_exchanges_are_captured_on_connections_made_before_and_after_attach() {
    require_root();
    let api = TestApi::start().expect("test API");
    let dir = TempDir::new("nss").expect("tempdir");
    let flags = nss_flags().expect("nss flags");
    let flags: Vec<&str> = flags.iter().map(String::as_str).collect();
    let client = gcc("nss_client", "nss_client", dir.path(), &flags).expect("build the NSS client");
    let port = api.server.addr.port();
    let mut cmd = Command::new(client);
    cmd.arg(port.to_string());
    let mut client = ReadyClient::start(cmd).expect("client ready");
    let pid = client.pid();
    // Connection A, made TLS before the agent is there.
    let before = socket_fds(pid, api.server.addr.port());
    assert_eq!(before.len(), 1, "{before:?}");

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
    let [ok, declined, missing] = assert_script(&out.lines, port);
    // The charge went over connection B (made after attach), the others over A.
    assert_source(declined, pid, Some(before[0]), port);
    assert_source(missing, pid, Some(before[0]), port);
    assert_source(ok, pid, None, port);
    assert_ne!(
        ok["source"]["fd"], declined["source"]["fd"],
        "two connections"
    );
    assert_ne!(ok["source"]["connection"], declined["source"]["connection"]);
    assert_eq!(ok["source"]["serverName"], "localhost", "SSL_SetURL: {ok}");
    assert!(out.stderr.contains("stack=\"NSS\""), "{}", out.stderr);
    // The client's stdout writes (PR_Write on a plain NSPR descriptor? no: stdio) and the
    // warm-up made before attach are not reported.
    assert!(matching(&out.lines, &[("core/path", "/v1/customers/cus_warmup")]).is_empty());
}

/// NSS's own test client, `tstclnt`, started by a shell the agent follows: attached when it
/// starts, before it makes its socket TLS. It sends what it reads on stdin: two pipelined
/// requests, the second closing the connection.
#[test]
fn tstclnt_followed_from_its_shell_is_captured() {
    require_root();
    let api = TestApi::start().expect("test API");
    let port = api.server.addr.port();
    let mut shell = KillOnDrop(
        Command::new("sh")
            .args([
                "-c",
                // No certificate database (-D), the test CA's certificate accepted (-o); the
                // address given as such (`localhost` may name ::1 first), the server name as -a.
                &format!(
                    "read go; exec tstclnt -h 127.0.0.1 -a localhost -p {port} -D -o -V tls1.2:tls1.3"
                ),
            ])
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .expect("sh"),
    );
    let mut agent = agent_for(&[shell.0.id()], &["--follow"]).expect("agent");
    let stdin = shell.0.stdin.as_mut().expect("stdin");
    stdin.write_all(b"go\n").expect("release the shell");
    // tstclnt is attached at its start; give the agent the moment it needs.
    agent
        .wait_for_log("stack=\"NSS\"", Duration::from_secs(10))
        .expect("tstclnt attached");
    let requests = "GET /v1/customers/cus_7 HTTP/1.1\r\nHost: localhost\r\n\r\n\
                    POST /v1/charges HTTP/1.1\r\nHost: localhost\r\nContent-Type: application/x-www-form-urlencoded\r\nContent-Length: 36\r\nConnection: close\r\n\r\namount=100&source=tok_chargeDeclined";
    stdin.write_all(requests.as_bytes()).expect("requests");
    // tstclnt spins on a closed stdin once the server has closed: stdin stays open, and
    // tstclnt is ended once both exchanges are reported.
    let stdout = shell.0.stdout.take().expect("stdout");
    let reader = std::thread::spawn(move || std::io::read_to_string(stdout));
    let mut seen = Vec::new();
    agent
        .wait_for_lines(2, Duration::from_secs(30), &mut seen)
        .expect("two exchanges");
    shell.0.kill().expect("end tstclnt");
    let _ = shell.0.wait();
    let output = reader.join().expect("reader").expect("output");
    assert!(
        output.contains(r#""id":"cus_7""#),
        "tstclnt printed {output:?}"
    );
    assert!(
        output.contains("card_declined"),
        "tstclnt printed {output:?}"
    );
    let out = agent.stop(seen).expect("agent stops");
    assert_eq!(out.lines.len(), 2, "{:#?}", out.lines);
    assert_eq!(
        matching(
            &out.lines,
            &[("core/path", "/v1/customers/cus_7"), ("core/status", "200")]
        )
        .len(),
        1
    );
    let declined = matching(
        &out.lines,
        &[("core/status", "402"), ("core/error", "card_error")],
    );
    assert_eq!(declined.len(), 1, "{:#?}", out.lines);
    assert_eq!(
        declined[0]["source"]["remoteAddress"],
        format!("127.0.0.1:{port}")
    );
}
