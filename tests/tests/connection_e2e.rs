//! End to end, as root, with the real eBPF programs: every output line says where its exchange
//! came from (`source`): the client's pid and name, the socket's remote address as the kernel
//! saw it inside the TLS calls, and the server name. Two connections made one after the other on
//! the same fd number are two connections.

use std::{
    io::{BufRead as _, Write as _},
    process::{Command, Stdio},
    time::Duration,
};

use taskless_e2e::harness::{
    Agent, KillOnDrop, TempDir, TestApi, dimensions, matching, packs_dir, require_root,
};

/// Two connections in turn, each with one request; the first is closed before the second opens,
/// so the second gets the same fd number. The second sends a Host header that is not the TLS
/// server name: `serverName` must still be the name the client put in its handshake (SNI). Each stays open a moment after its response (the agent
/// reads the socket's addresses from `/proc` while it is open), and the process lives on until
/// told to exit.
const PYTHON_CLIENT: &str = r#"
import http.client, ssl, sys, time
host, port, ca = sys.argv[1], int(sys.argv[2]), sys.argv[3]
ctx = ssl.create_default_context(cafile=ca)
print("ready", flush=True)
sys.stdin.readline()
for path, headers in (("/v1/customers/cus_first", {}), ("/v1/customers/cus_second", {"Host": "elsewhere.test"})):
    conn = http.client.HTTPSConnection(host, port, context=ctx)
    conn.request("GET", path, headers=headers)
    r = conn.getresponse(); r.read()
    print(r.status, conn.sock.fileno(), "%s:%d" % conn.sock.getsockname()[:2], flush=True)
    time.sleep(0.3)
    conn.close()
print("done", flush=True)
sys.stdin.readline()
"#;

/// A Python client waiting for `go` on stdin, and an agent attached to it.
struct Started {
    _dir: TempDir,
    py: KillOnDrop,
    pid: u32,
    stdout: std::io::BufReader<std::process::ChildStdout>,
    agent: Agent,
}

/// Runs `script` with the test API's host, port and CA file, waits for its `ready`, then starts
/// the agent on it with the shipped packs and waits for the agent's `ready`.
fn start(api: &TestApi, name: &str, script: &str) -> Started {
    let dir = TempDir::new(name).expect("tempdir");
    let path = dir.path().join("client.py");
    std::fs::write(&path, script).expect("write script");
    let mut py = KillOnDrop(
        Command::new("python3")
            .arg(&path)
            .args([
                "localhost",
                &api.server.addr.port().to_string(),
                &api.server.ca_file.display().to_string(),
            ])
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .spawn()
            .expect("python3"),
    );
    let pid = py.0.id();
    let mut stdout = std::io::BufReader::new(py.0.stdout.take().expect("stdout"));
    let mut line = String::new();
    stdout.read_line(&mut line).expect("python ready");
    assert_eq!(line.trim(), "ready", "python client failed to start");
    let mut agent = Agent::start(&[
        "--pid".to_owned(),
        pid.to_string(),
        "--packs".to_owned(),
        packs_dir().display().to_string(),
    ])
    .expect("start agent");
    agent
        .wait_for_log("ready", Duration::from_secs(60))
        .expect("agent ready");
    Started {
        _dir: dir,
        py,
        pid,
        stdout,
        agent,
    }
}

#[test]
fn each_line_names_its_process_remote_address_and_server_and_a_reused_fd_is_a_new_connection() {
    require_root();
    let api = TestApi::start().expect("test API");
    let port = api.server.addr.port();
    let Started {
        _dir,
        mut py,
        pid,
        mut stdout,
        mut agent,
    } = start(&api, "connid", PYTHON_CLIENT);
    let mut line = String::new();
    let stdin = py.0.stdin.as_mut().expect("stdin");
    stdin.write_all(b"go\n").expect("release python");

    // What the client itself saw: status, fd and local address of each connection.
    let mut client = Vec::new();
    loop {
        line.clear();
        stdout.read_line(&mut line).expect("python output");
        let t = line.trim().to_owned();
        if t == "done" || t.is_empty() {
            break;
        }
        client.push(t);
    }
    assert_eq!(client.len(), 2, "two calls: {client:?}");
    let seen_by_client: Vec<(String, String)> = client
        .iter()
        .map(|l| {
            let f: Vec<&str> = l.split(' ').collect();
            assert_eq!(f[0], "200", "{l}");
            (f[1].to_owned(), f[2].to_owned())
        })
        .collect();

    let mut seen = Vec::new();
    agent
        .wait_for_lines(2, Duration::from_secs(30), &mut seen)
        .expect("two exchanges");
    let out = agent.stop(seen).expect("agent stops");
    stdin.write_all(b"exit\n").expect("let python exit");
    assert_eq!(out.lines.len(), 2, "{:#?}", out.lines);

    let mut connections = Vec::new();
    for (path, (fd, local)) in ["/v1/customers/cus_first", "/v1/customers/cus_second"]
        .iter()
        .zip(&seen_by_client)
    {
        let lines = matching(&out.lines, &[("core/path", path)]);
        assert_eq!(lines.len(), 1, "{path} in {:#?}", out.lines);
        let source = &lines[0]["source"];
        assert_eq!(source["pid"], pid, "{source}");
        assert_eq!(source["process"], "python3", "{source}");
        assert_eq!(
            source["remoteAddress"],
            format!("127.0.0.1:{port}"),
            "{source}"
        );
        assert_eq!(source["serverName"], "localhost", "{source}");
        assert_eq!(
            source["fd"].to_string(),
            *fd,
            "the fd the client used: {source}"
        );
        assert_eq!(source["localAddress"], local.as_str(), "{source}");
        assert!(source["cgroup"].is_string(), "{source}");
        connections.push(source["connection"].as_u64().expect("connection serial"));
    }
    assert_eq!(
        seen_by_client[0].0, seen_by_client[1].0,
        "the second connection reused the first one's fd: {client:?}"
    );
    assert_ne!(
        connections[0], connections[1],
        "a reused fd is a new connection: {:#?}",
        out.lines
    );
    for counter in ["connections_without_fd", "addresses_unresolved"] {
        assert_eq!(out.counter(counter), 0, "{counter}\n{}", out.stderr);
    }
}

/// Sends a request to a slow endpoint, then closes the socket's fd before the response while
/// keeping the TLS object alive (no `SSL_free`), and lives on.
const PYTHON_CLOSER: &str = r#"
import os, socket, ssl, sys
host, port, ca = sys.argv[1], int(sys.argv[2]), sys.argv[3]
ctx = ssl.create_default_context(cafile=ca)
print("ready", flush=True)
sys.stdin.readline()
s = ctx.wrap_socket(socket.create_connection((host, port)), server_hostname=host)
s.sendall(b"GET /v1/customers/cus_abandoned?delay_ms=8000 HTTP/1.1\r\nHost: localhost\r\n\r\n")
keep = s._sslobj
fd = s.detach()
os.close(fd)
print("closed", fd, flush=True)
sys.stdin.readline()
"#;

#[test]
fn closing_the_socket_ends_the_connection_even_while_the_tls_object_lives() {
    require_root();
    let api = TestApi::start().expect("test API");
    let Started {
        _dir,
        mut py,
        mut stdout,
        mut agent,
        ..
    } = start(&api, "fdclose", PYTHON_CLOSER);
    let mut line = String::new();
    let stdin = py.0.stdin.as_mut().expect("stdin");
    stdin.write_all(b"go\n").expect("release python");
    line.clear();
    stdout.read_line(&mut line).expect("python output");
    assert!(line.starts_with("closed "), "python: {line}");

    // The response would take 8 s and never comes; the process and its TLS object live on.
    // Only the close can end the exchange, so its line must come well before either.
    let mut seen = Vec::new();
    agent
        .wait_for_lines(1, Duration::from_secs(4), &mut seen)
        .expect("the close ends the connection and its unanswered exchange");
    let out = agent.stop(seen).expect("agent stops");
    stdin.write_all(b"exit\n").expect("let python exit");
    assert_eq!(out.lines.len(), 1, "{:#?}", out.lines);
    let l = &out.lines[0];
    assert_eq!(
        matching(&out.lines, &[("core/path", "/v1/customers/cus_abandoned")]).len(),
        1,
        "{l}"
    );
    assert!(
        !dimensions(l).contains_key("core/status"),
        "no response, so no status: {l}"
    );
    assert_eq!(
        l["source"]["fd"].to_string(),
        line.trim()["closed ".len()..]
    );
    assert_eq!(out.counter("incomplete"), 1, "{}", out.stderr);
}
