//! Capture in depth, end to end as root: Node.js (OpenSSL linked into the executable), whole
//! 1 MiB bodies both ways, and one process with 50 kept-alive connections interleaving requests.
//! Each checks the agent's own loss counters too: what it reports must be complete.

use std::{
    io::{BufRead as _, Write as _},
    process::{Command, Stdio},
    time::Duration,
};

use taskless_e2e::harness::{
    Agent, AgentOutput, KillOnDrop, TempDir, TestApi, dimensions, matching, packs_dir, require_root,
};

/// Starts a client script that prints `ready` once its TLS library is loaded and then waits for a
/// line on stdin; attaches the agent; releases the client; returns the agent's output once the
/// client has exited and `expect` lines have arrived.
fn watch(mut client: Command, expect: usize) -> AgentOutput {
    let mut child = KillOnDrop(
        client
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .spawn()
            .expect("client"),
    );
    let mut out = std::io::BufReader::new(child.0.stdout.take().expect("stdout"));
    let mut line = String::new();
    out.read_line(&mut line).expect("client ready");
    assert_eq!(line.trim(), "ready", "client failed to start");

    let packs = packs_dir().display().to_string();
    let pid = child.0.id().to_string();
    let mut agent = Agent::start(&["--pid", &pid, "--packs", &packs]).expect("agent");
    agent
        .wait_for_log("ready", Duration::from_secs(60))
        .expect("agent ready");
    child
        .0
        .stdin
        .as_mut()
        .expect("stdin")
        .write_all(b"go\n")
        .expect("release client");
    let status = child.0.wait().expect("client exits");
    let mut rest = String::new();
    let _ = std::io::Read::read_to_string(&mut out, &mut rest);
    assert!(status.success(), "client failed ({status}): {rest}");
    let mut seen = Vec::new();
    agent
        .wait_for_lines(expect, Duration::from_secs(60), &mut seen)
        .expect("all exchanges");
    agent.stop(seen).expect("agent stops")
}

fn assert_nothing_lost(out: &AgentOutput) {
    for c in [
        "lost_bytes",
        "resyncs",
        "dropped_jobs",
        "undecodable",
        "kernel_ringbuf_full",
        "kernel_read_failed",
        "kernel_truncated_calls",
    ] {
        assert_eq!(out.counter(c), 0, "{c} must be 0; stderr:\n{}", out.stderr);
    }
}

#[test]
fn node_fetch_through_openssl_inside_the_executable_is_captured() {
    require_root();
    let api = TestApi::start().expect("test API");
    let dir = TempDir::new("node").expect("tempdir");
    let script = dir.path().join("client.js");
    std::fs::write(
        &script,
        r#"
const base = process.argv[2];
const rl = require("readline").createInterface({ input: process.stdin });
(async () => {
  await (await fetch(base + "/v1/customers/cus_warm")).text();   // loads and starts TLS
  console.log("ready");
  await new Promise(r => rl.once("line", r));
  for (let i = 0; i < 3; i++) {
    const r = await fetch(base + "/v1/charges", { method: "POST", body: "amount=1&source=tok_chargeDeclined",
      headers: { "content-type": "application/x-www-form-urlencoded" } });
    await r.text();
  }
  rl.close();
})();
"#,
    )
    .expect("script");
    let mut cmd = Command::new("node");
    cmd.arg(&script)
        .arg(api.server.base_url())
        .env("NODE_EXTRA_CA_CERTS", &api.server.ca_file);
    let out = watch(cmd, 3);
    let declined = matching(
        &out.lines,
        &[
            ("core/path", "/v1/charges"),
            ("core/status", "402"),
            ("core/error", "card_error"),
        ],
    );
    assert_eq!(declined.len(), 3, "{:#?}", out.lines);
    // Memory BIOs: Node's TLS calls rarely make a socket syscall, so the fd and addresses are
    // mostly unknown (and counted); when one is seen it must be this connection's socket. The
    // server name comes from SNI or the Host header either way.
    let api_address = format!("127.0.0.1:{}", api.server.addr.port());
    for line in &declined {
        let source = &line["source"];
        assert_eq!(source["process"], "node", "{source}");
        assert!(source["pid"].as_u64().is_some_and(|p| p > 0), "{source}");
        assert_eq!(source["serverName"], "localhost", "{source}");
        if source.get("fd").is_none() {
            assert!(source.get("remoteAddress").is_none(), "{source}");
        } else if source.get("remoteAddress").is_some() {
            assert_eq!(source["remoteAddress"], api_address.as_str(), "{source}");
        } else {
            // The fd was learnt after the socket was gone (node exits right after its last
            // call): the addresses could not be read, and that is counted.
            assert!(out.counter("addresses_unresolved") > 0, "{source}");
        }
    }
    let _ = out.counter("connections_without_fd");
    assert!(
        out.stderr.contains("library=/usr/bin/node") || out.stderr.contains("flavour=Executable"),
        "{}",
        out.stderr
    );
    assert_nothing_lost(&out);
}

#[test]
fn python_one_mib_upload_and_download_arrive_whole() {
    require_root();
    let api = TestApi::start().expect("test API");
    let dir = TempDir::new("big").expect("tempdir");
    let script = dir.path().join("client.py");
    std::fs::write(
        &script,
        r#"
import http.client, ssl, sys
port, ca = int(sys.argv[1]), sys.argv[2]
conn = http.client.HTTPSConnection("localhost", port, context=ssl.create_default_context(cafile=ca))
conn.request("GET", "/v1/customers/cus_warm"); conn.getresponse().read()
print("ready", flush=True); sys.stdin.readline()
body = bytes(b"abcdefghij"[i % 10] for i in range(1 << 20))
conn.request("POST", "/v1/upload", body=body, headers={"Content-Type": "application/octet-stream"})
r = conn.getresponse(); assert r.read() == b'{"received":1048576}', "upload"
conn.request("GET", "/v1/bytes?n=1048576")
r = conn.getresponse(); data = r.read()
assert len(data) == 1 << 20 and data[:10] == b"0123456789", "download"
"#,
    )
    .expect("script");
    let mut cmd = Command::new("python3");
    cmd.arg(&script)
        .arg(api.server.addr.port().to_string())
        .arg(&api.server.ca_file);
    let out = watch(cmd, 2);
    assert_eq!(
        matching(
            &out.lines,
            &[("core/path", "/v1/upload"), ("core/status", "200")]
        )
        .len(),
        1,
        "{:#?}",
        out.lines
    );
    assert_eq!(
        matching(
            &out.lines,
            &[("core/path", "/v1/bytes"), ("core/status", "200")]
        )
        .len(),
        1,
        "{:#?}",
        out.lines
    );
    // Both megabytes crossed the probes: at least 2 MiB of payload was decoded.
    assert!(out.counter("bytes") >= 2 << 20, "{}", out.stderr);
    assert_nothing_lost(&out);
}

#[test]
fn fifty_concurrent_keep_alive_connections_in_one_process_are_kept_apart() {
    require_root();
    let api = TestApi::start().expect("test API");
    let dir = TempDir::new("many").expect("tempdir");
    let script = dir.path().join("client.py");
    std::fs::write(
        &script,
        r#"
import http.client, ssl, sys, threading
port, ca = int(sys.argv[1]), sys.argv[2]
ctx = ssl.create_default_context(cafile=ca)
conns = [http.client.HTTPSConnection("localhost", port, context=ctx) for _ in range(50)]
for c in conns:
    c.request("GET", "/v1/customers/warm"); c.getresponse().read()
print("ready", flush=True); sys.stdin.readline()
def work(i, c):
    for k in range(4):
        c.request("GET", f"/v1/customers/cus_{i}_{k}")
        r = c.getresponse(); r.read(); assert r.status == 200
threads = [threading.Thread(target=work, args=(i, c)) for i, c in enumerate(conns)]
for t in threads: t.start()
for t in threads: t.join()
"#,
    )
    .expect("script");
    let mut cmd = Command::new("python3");
    cmd.arg(&script)
        .arg(api.server.addr.port().to_string())
        .arg(&api.server.ca_file);
    let out = watch(cmd, 200);
    assert_eq!(out.lines.len(), 200, "exactly one line per request");
    for i in 0..50 {
        for k in 0..4 {
            let path = format!("/v1/customers/cus_{i}_{k}");
            assert_eq!(
                matching(
                    &out.lines,
                    &[("core/path", path.as_str()), ("core/status", "200")]
                )
                .len(),
                1,
                "{path} exactly once"
            );
        }
    }
    // Each connection's four exchanges carry its own fd, seen inside its own TLS calls.
    let mut fds = std::collections::BTreeSet::new();
    for i in 0..50 {
        let prefix = format!("/v1/customers/cus_{i}_");
        let mine: Vec<_> = out
            .lines
            .iter()
            .filter(|l| {
                dimensions(l)
                    .get("core/path")
                    .is_some_and(|p| p.starts_with(&prefix))
            })
            .collect();
        assert_eq!(mine.len(), 4, "{prefix}");
        let fd = mine[0]["source"]["fd"].as_i64().expect("fd known");
        let serial = &mine[0]["source"]["connection"];
        for l in &mine {
            assert_eq!(l["source"]["fd"].as_i64(), Some(fd), "{}", l["source"]);
            assert_eq!(&l["source"]["connection"], serial, "{}", l["source"]);
        }
        fds.insert(fd);
    }
    assert_eq!(fds.len(), 50, "fifty sockets, fifty fds: {fds:?}");
    assert_eq!(out.counter("connections"), 50, "{}", out.stderr);
    assert_nothing_lost(&out);
}
