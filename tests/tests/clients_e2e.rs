//! What real clients do that simple ones do not, end to end as root: a streaming client that
//! stops reading at `data: [DONE]`, a client that reads only a response's head, a TLS library
//! that reads a file in the middle of a call, a local TLS server beside its client, and a
//! program that loads OpenSSL only when it first needs it.

use std::{
    io::{BufRead as _, BufReader, Write as _},
    process::{Child, ChildStdout, Command, Stdio},
    time::Duration,
};

use taskless_e2e::harness::{
    Agent, AgentOutput, KillOnDrop, TempDir, TestApi, dimensions, matching, packs_dir,
    packs_for_localhost, require_root,
};

/// A Python script started with `args`, its stdout read line by line.
struct Script {
    child: KillOnDrop,
    out: BufReader<ChildStdout>,
}

impl Script {
    fn start(dir: &TempDir, name: &str, source: &str, args: &[String]) -> Self {
        let path = dir.path().join(name);
        std::fs::write(&path, source).expect("script");
        let mut child: Child = Command::new("python3")
            .arg(&path)
            .args(args)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .spawn()
            .expect("python3");
        let out = BufReader::new(child.stdout.take().expect("stdout"));
        Self {
            child: KillOnDrop(child),
            out,
        }
    }

    fn pid(&self) -> String {
        self.child.0.id().to_string()
    }

    fn line(&mut self) -> String {
        let mut line = String::new();
        self.out
            .read_line(&mut line)
            .expect("a line from the script");
        line.trim().to_owned()
    }

    fn go(&mut self) {
        self.child
            .0
            .stdin
            .as_mut()
            .expect("stdin")
            .write_all(b"go\n")
            .expect("release the script");
    }

    fn finish(mut self) -> Vec<String> {
        let mut rest = Vec::new();
        loop {
            let line = self.line();
            if line.is_empty() {
                break;
            }
            rest.push(line);
        }
        assert!(
            self.child.0.wait().expect("exits").success(),
            "client failed"
        );
        rest
    }
}

/// Starts the agent with `args`, waits until it is ready.
fn agent(args: &[&str]) -> Agent {
    let mut agent = Agent::start(args).expect("agent");
    agent
        .wait_for_log("ready", Duration::from_secs(60))
        .expect("agent ready");
    agent
}

fn stop_after(mut agent: Agent, lines: usize) -> AgentOutput {
    let mut seen = Vec::new();
    let _ = agent.wait_for_lines(lines, Duration::from_secs(30), &mut seen);
    agent.stop(seen).expect("agent stops")
}

const STREAM_CLIENT: &str = r#"
import http.client, json, ssl, sys
port, ca = int(sys.argv[1]), sys.argv[2]
ctx = ssl.create_default_context(cafile=ca)
print("ready", flush=True); sys.stdin.readline()
chat = {"model": "gpt-4o-stopped", "stream": True, "messages": [{"role": "user", "content": "hi"}]}
# Reads server-sent events up to [DONE] and closes, as an SDK does: the end of the body (held
# back by the server) is never read.
conn = http.client.HTTPSConnection("localhost", port, context=ctx)
conn.request("POST", "/v1/chat/completions?hold_end_ms=3000", json.dumps(chat), {"Content-Type": "application/json"})
r = conn.getresponse()
assert r.status == 200
for line in r:
    if line.startswith(b"data: [DONE]"):
        break
conn.close()
# Reads the head only, and closes.
conn = http.client.HTTPSConnection("localhost", port, context=ctx)
conn.request("POST", "/v1/chat/completions?hold_end_ms=3000", json.dumps(dict(chat, model="gpt-4o-head")), {"Content-Type": "application/json"})
r = conn.getresponse()
assert r.status == 200
conn.close()
print("done", flush=True)
"#;

#[test]
fn a_response_the_client_stops_reading_keeps_its_status_and_usage() {
    require_root();
    let api = TestApi::start().expect("test API");
    let dir = TempDir::new("stopped").expect("tempdir");
    let packs = dir.path().join("packs");
    packs_for_localhost(&packs);
    let args = [
        api.server.addr.port().to_string(),
        api.server.ca_file.display().to_string(),
    ];
    let mut client = Script::start(&dir, "client.py", STREAM_CLIENT, &args);
    assert_eq!(client.line(), "ready");
    let packs = packs.display().to_string();
    let agent = agent(&["--pid", &client.pid(), "--packs", &packs]);
    client.go();
    assert_eq!(client.finish(), ["done"]);
    let out = stop_after(agent, 2);

    let streamed = matching(
        &out.lines,
        &[
            ("openai/model", "gpt-4o-stopped"),
            ("core/status", "200"),
            ("openai/totalTokens", "15"),
            ("openai/requestId", "req_chat_stream"),
        ],
    );
    assert_eq!(streamed.len(), 1, "{:#?}", out.lines);
    assert_eq!(streamed[0]["complete"], false, "{}", streamed[0]);
    let head_only = matching(
        &out.lines,
        &[("openai/model", "gpt-4o-head"), ("core/status", "200")],
    );
    assert_eq!(head_only.len(), 1, "{:#?}", out.lines);
    assert_eq!(head_only[0]["complete"], false, "{}", head_only[0]);
    assert_eq!(out.counter("partial_responses"), 2, "{}", out.stderr);
}

const FILE_IN_CALL_CLIENT: &str = r#"
import http.client, ssl, sys
port, ca, path = int(sys.argv[1]), sys.argv[2], sys.argv[3]
ctx = ssl.create_default_context(cafile=ca)
# OpenSSL calls the message callback from inside SSL_read and SSL_write; reading a file there
# is what a library looking up the time zone in the middle of a call does.
def on_message(conn, direction, version, content_type, msg_type, data):
    with open(path, "rb") as f:
        f.read()
ctx._msg_callback = on_message
conn = http.client.HTTPSConnection("localhost", port, context=ctx)
conn.connect()
print("ready", conn.sock.fileno(), flush=True); sys.stdin.readline()
for i in range(3):
    conn.request("GET", "/v1/customers/cus_file_%d" % i); r = conn.getresponse(); r.read(); assert r.status == 200
print("done", flush=True)
"#;

#[test]
fn a_file_read_inside_a_tls_call_is_not_taken_for_the_socket() {
    require_root();
    let api = TestApi::start().expect("test API");
    let dir = TempDir::new("file-in-call").expect("tempdir");
    let args = [
        api.server.addr.port().to_string(),
        api.server.ca_file.display().to_string(),
        "/etc/os-release".to_owned(),
    ];
    let mut client = Script::start(&dir, "client.py", FILE_IN_CALL_CLIENT, &args);
    let ready = client.line();
    let fd: i64 = ready
        .strip_prefix("ready ")
        .and_then(|f| f.parse().ok())
        .expect("the socket's fd");
    let packs = packs_dir().display().to_string();
    let agent = agent(&["--pid", &client.pid(), "--packs", &packs]);
    client.go();
    assert_eq!(client.finish(), ["done"]);
    let out = stop_after(agent, 3);
    let hits: Vec<_> = out
        .lines
        .iter()
        .filter(|l| {
            dimensions(l)
                .get("core/path")
                .is_some_and(|p| p.starts_with("/v1/customers/cus_file_"))
        })
        .collect();
    assert_eq!(hits.len(), 3, "{:#?}", out.lines);
    for l in hits {
        assert_eq!(l["source"]["fd"], fd, "{l}");
        assert_eq!(
            l["source"]["remoteAddress"],
            api.server.addr.to_string(),
            "{l}"
        );
    }
    assert!(out.counter("kernel_non_socket_fds") > 0, "{}", out.stderr);
}

const SERVER: &str = r#"
import http.server, ssl, sys, threading
cert, key = sys.argv[1], sys.argv[2]
class Handler(http.server.BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    def do_GET(self):
        body = b'{"ok":true}'
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)
    def log_message(self, *args):
        pass
httpd = http.server.HTTPServer(("127.0.0.1", 0), Handler)
ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
ctx.load_cert_chain(cert, key)
httpd.socket = ctx.wrap_socket(httpd.socket, server_side=True)
print("ready", httpd.server_address[1], flush=True)
httpd.serve_forever()
"#;

const LOCAL_CLIENT: &str = r#"
import http.client, ssl, sys
port, ca = int(sys.argv[1]), sys.argv[2]
ctx = ssl.create_default_context(cafile=ca)
print("ready", flush=True); sys.stdin.readline()
conn = http.client.HTTPSConnection("localhost", port, context=ctx)
conn.request("GET", "/local/items"); r = conn.getresponse(); r.read(); assert r.status == 200
print("done", flush=True)
"#;

/// Runs a local Python TLS server and a client calling it, both watched; returns the output.
fn local_server_and_client(extra: &[&str]) -> AgentOutput {
    let api = TestApi::start().expect("test API (for its certificate)");
    let dir = TempDir::new("roles").expect("tempdir");
    let mut server = Script::start(
        &dir,
        "server.py",
        SERVER,
        &[
            api.server.cert_file.display().to_string(),
            api.server.key_file.display().to_string(),
        ],
    );
    let port = server
        .line()
        .strip_prefix("ready ")
        .expect("server port")
        .to_owned();
    let mut client = Script::start(
        &dir,
        "client.py",
        LOCAL_CLIENT,
        &[port, api.server.ca_file.display().to_string()],
    );
    assert_eq!(client.line(), "ready");
    let packs = packs_dir().display().to_string();
    let (sp, cp) = (server.pid(), client.pid());
    let mut args = vec!["--pid", &sp, "--pid", &cp, "--packs", &packs];
    args.extend_from_slice(extra);
    let agent = agent(&args);
    client.go();
    assert_eq!(client.finish(), ["done"]);
    let want = if extra.contains(&"--server-side") {
        2
    } else {
        1
    };
    let out = stop_after(agent, want);
    drop(server);
    out
}

#[test]
fn a_local_server_is_left_out_unless_asked_for_and_every_line_says_its_role() {
    require_root();
    let out = local_server_and_client(&[]);
    let hits = matching(&out.lines, &[("core/path", "/local/items")]);
    assert_eq!(hits.len(), 1, "only the client's call: {:#?}", out.lines);
    assert_eq!(hits[0]["source"]["role"], "client", "{}", hits[0]);
    assert_eq!(hits[0]["source"]["process"], "python3", "{}", hits[0]);
    assert_eq!(out.counter("server_exchanges"), 1, "{}", out.stderr);

    let out = local_server_and_client(&["--server-side"]);
    let mut roles: Vec<String> = matching(&out.lines, &[("core/path", "/local/items")])
        .iter()
        .map(|l| l["source"]["role"].as_str().unwrap_or_default().to_owned())
        .collect();
    roles.sort();
    assert_eq!(roles, ["client", "server"], "{:#?}", out.lines);
    assert_eq!(out.counter("server_exchanges"), 0, "{}", out.stderr);
}

const LAZY_CLIENT: &str = r#"
import sys
print("ready", flush=True); sys.stdin.readline()
# OpenSSL is loaded here, after the agent attached to this process.
import http.client, ssl
port, ca = int(sys.argv[1]), sys.argv[2]
conn = http.client.HTTPSConnection("localhost", port, context=ssl.create_default_context(cafile=ca))
conn.request("GET", "/v1/customers/cus_lazy"); r = conn.getresponse(); r.read(); assert r.status == 200
print("done", flush=True)
"#;

#[test]
fn a_process_that_loads_openssl_later_is_waited_for_and_captured_from_its_first_call() {
    require_root();
    let api = TestApi::start().expect("test API");
    let dir = TempDir::new("lazy").expect("tempdir");
    let args = [
        api.server.addr.port().to_string(),
        api.server.ca_file.display().to_string(),
    ];
    let mut client = Script::start(&dir, "client.py", LAZY_CLIENT, &args);
    assert_eq!(client.line(), "ready");
    let maps = std::fs::read_to_string(format!("/proc/{}/maps", client.pid())).expect("maps");
    assert!(!maps.contains("libssl"), "OpenSSL must not be loaded yet");
    let packs = packs_dir().display().to_string();
    let agent = agent(&["--pid", &client.pid(), "--packs", &packs]);
    client.go();
    assert_eq!(client.finish(), ["done"]);
    let out = stop_after(agent, 1);
    let hits = matching(
        &out.lines,
        &[
            ("core/path", "/v1/customers/cus_lazy"),
            ("core/status", "200"),
        ],
    );
    assert_eq!(hits.len(), 1, "{:#?}", out.lines);
    assert!(
        out.stderr
            .contains("no TLS library loaded yet: waiting for one"),
        "{}",
        out.stderr
    );
    // The first call was seen whole: no bytes skipped to find a message start.
    assert_eq!(out.counter("resyncs"), 0, "{}", out.stderr);
    assert_eq!(out.counter("http_orphan_responses"), 0, "{}", out.stderr);
}

const GONE_CLIENT: &str = r#"
import http.client, ssl, sys
port, ca = int(sys.argv[1]), sys.argv[2]
ctx = ssl.create_default_context(cafile=ca)
conn = http.client.HTTPSConnection("localhost", port, context=ctx)
conn.connect()
print("ready", conn.sock.getsockname()[1], flush=True); sys.stdin.readline()
for i in range(2):
    conn.request("GET", "/v1/customers/cus_gone_%d" % i); r = conn.getresponse(); r.read(); assert r.status == 200
print("done", flush=True)
"#;

/// A client that has exited before the agent reads its records has no `/proc` entry left:
/// its connection's addresses come from the kernel, which sent them when it first saw the
/// socket inside a TLS call. The agent is stopped (SIGSTOP) while the client runs and exits;
/// the kernel side keeps filling the ring buffer.
#[test]
fn a_client_gone_before_its_records_are_read_keeps_its_addresses() {
    require_root();
    let api = TestApi::start().expect("test API");
    let dir = TempDir::new("gone-client").expect("tempdir");
    let args = [
        api.server.addr.port().to_string(),
        api.server.ca_file.display().to_string(),
    ];
    let mut client = Script::start(&dir, "client.py", GONE_CLIENT, &args);
    let local_port = client.line();
    let local_port = local_port
        .strip_prefix("ready ")
        .expect("the client's port")
        .to_owned();
    let packs = packs_dir().display().to_string();
    let agent = agent(&["--pid", &client.pid(), "--packs", &packs]);
    let agent_pid = libc::pid_t::try_from(agent.pid()).expect("pid");
    // SAFETY: signals to the agent this test started.
    assert_eq!(unsafe { libc::kill(agent_pid, libc::SIGSTOP) }, 0);
    client.go();
    let client_pid = client.pid();
    assert_eq!(client.finish(), ["done"]);
    assert!(
        !std::path::Path::new(&format!("/proc/{client_pid}")).exists(),
        "the client is gone"
    );
    // SAFETY: as above.
    assert_eq!(unsafe { libc::kill(agent_pid, libc::SIGCONT) }, 0);
    let out = stop_after(agent, 2);
    let hits = matching(&out.lines, &[("core/status", "200")]);
    assert_eq!(hits.len(), 2, "{:#?}", out.lines);
    for l in hits {
        assert_eq!(
            l["source"]["remoteAddress"],
            api.server.addr.to_string(),
            "{l}"
        );
        assert_eq!(
            l["source"]["localAddress"],
            format!("127.0.0.1:{local_port}"),
            "{l}"
        );
        assert_eq!(l["source"]["process"], "python3", "{l}");
    }
    assert_eq!(out.counter("addresses_unresolved"), 0, "{}", out.stderr);
}
