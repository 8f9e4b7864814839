//! Process coverage, end to end as root: `--all` picks up a process started after the agent and
//! a process in its own mount namespace using a copy of libssl at a path that exists only there;
//! `--follow` picks up a child started after the agent by a parent without TLS, and examines a
//! child again when it becomes another program through `exec`.

use std::{
    io::{BufRead as _, Write as _},
    process::{Command, Stdio},
    time::Duration,
};

use taskless_e2e::harness::{
    Agent, KillOnDrop, TempDir, TestApi, matching, packs_dir, require_root,
};

fn packs() -> String {
    packs_dir().display().to_string()
}

#[test]
fn all_picks_up_a_process_started_after_the_agent() {
    require_root();
    let api = TestApi::start().expect("test API");
    let mut agent = Agent::start(&["--all", "--packs", &packs()]).expect("agent");
    agent
        .wait_for_log("ready", Duration::from_secs(60))
        .expect("agent ready");

    // Started after the agent, and gone well within a second.
    let status = Command::new("curl")
        .args(["-sS", "-o", "/dev/null", "--http1.1", "--cacert"])
        .arg(&api.server.ca_file)
        .arg(format!(
            "{}/v1/customers/cus_late_starter",
            api.server.base_url()
        ))
        .status()
        .expect("curl");
    assert!(status.success());
    let mut seen = Vec::new();
    // Checked through the output below, which names what did arrive.
    let _ = agent.wait_for_line_containing("cus_late_starter", Duration::from_secs(30), &mut seen);
    let out = agent.stop(seen).expect("agent stops");
    let hits = matching(
        &out.lines,
        &[
            ("core/path", "/v1/customers/cus_late_starter"),
            ("core/status", "200"),
        ],
    );
    assert_eq!(hits.len(), 1, "{:#?}", out.lines);
    // Gone before its line was written: the name and cgroup come from its `execve`.
    assert_eq!(hits[0]["source"]["process"], "curl", "{}", hits[0]);
    assert!(hits[0]["source"]["cgroup"].is_string(), "{}", hits[0]);
}

const PY: &str = r#"
import http.client, ssl, sys
port, ca = int(sys.argv[1]), sys.argv[2]
print("ready " + ssl._ssl.__file__, flush=True); sys.stdin.readline()
conn = http.client.HTTPSConnection("localhost", port, context=ssl.create_default_context(cafile=ca))
conn.request("GET", "/v1/customers/cus_in_namespace"); r = conn.getresponse(); r.read(); assert r.status == 200
"#;

#[test]
fn all_covers_a_process_in_its_own_mount_namespace_with_its_own_libssl() {
    require_root();
    let api = TestApi::start().expect("test API");
    let dir = TempDir::new("mntns").expect("tempdir");
    let script = dir.path().join("client.py");
    std::fs::write(&script, PY).expect("script");
    let libssl = "/lib/x86_64-linux-gnu/libssl.so.3";
    assert!(std::path::Path::new(libssl).exists(), "{libssl} missing");
    // A private mount namespace with a tmpfs over /mnt holding a copy of libssl: that path
    // exists only inside the namespace, and the copy is another file (another inode).
    let inner = format!(
        "mount -t tmpfs tmpfs /mnt && cp {libssl} /mnt/libssl.so.3 && LD_LIBRARY_PATH=/mnt exec /usr/bin/python3 {} {} {}",
        script.display(),
        api.server.addr.port(),
        api.server.ca_file.display()
    );
    let mut py = KillOnDrop(
        Command::new("unshare")
            .args(["--mount", "--propagation", "private", "sh", "-c", &inner])
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .spawn()
            .expect("unshare"),
    );
    let mut line = String::new();
    std::io::BufReader::new(py.0.stdout.take().expect("stdout"))
        .read_line(&mut line)
        .expect("ready");
    assert!(line.starts_with("ready"), "client failed to start: {line}");
    let status = std::fs::read_to_string(format!("/proc/{}/maps", py.0.id())).unwrap_or_default();
    assert!(
        status.contains("/mnt/libssl.so.3"),
        "the client must map the copy"
    );

    let mut agent = Agent::start(&["--all", "--packs", &packs()]).expect("agent");
    agent
        .wait_for_log("ready", Duration::from_secs(60))
        .expect("agent ready");
    agent
        .wait_for_log("library=/mnt/libssl.so.3", Duration::from_secs(10))
        .expect("the copy is attached");
    py.0.stdin
        .as_mut()
        .expect("stdin")
        .write_all(b"go\n")
        .expect("release");
    assert!(py.0.wait().expect("exit").success(), "client failed");
    let mut seen = Vec::new();
    // Checked through the output below, which names what did arrive.
    let _ = agent.wait_for_line_containing("cus_in_namespace", Duration::from_secs(30), &mut seen);
    let out = agent.stop(seen).expect("agent stops");
    let hits = matching(
        &out.lines,
        &[
            ("core/path", "/v1/customers/cus_in_namespace"),
            ("core/status", "200"),
        ],
    );
    assert_eq!(hits.len(), 1, "{:#?}", out.lines);
}

#[test]
fn follow_picks_up_a_child_started_after_the_agent() {
    require_root();
    let api = TestApi::start().expect("test API");
    let base = api.server.base_url();
    let ca = api.server.ca_file.display().to_string();
    // A shell (no TLS) that starts curl once released; curl waits at the gate until the agent
    // has attached to it.
    let script = format!(
        "read go; curl -sS -o /dev/null --http1.1 --cacert {ca} {base}/v1/gate --next -sS -o /dev/null --http1.1 --cacert {ca} -d amount=1 -d source=tok_chargeDeclined {base}/v1/charges"
    );
    let mut sh = KillOnDrop(
        Command::new("sh")
            .args(["-c", &script])
            .stdin(Stdio::piped())
            .spawn()
            .expect("sh"),
    );
    let pid = sh.0.id().to_string();
    let mut agent = Agent::start(&["--pid", &pid, "--follow", "--packs", &packs()]).expect("agent");
    agent
        .wait_for_log("ready", Duration::from_secs(60))
        .expect("agent ready");
    sh.0.stdin
        .as_mut()
        .expect("stdin")
        .write_all(b"go\n")
        .expect("release");
    api.wait_gate_waiters(1, Duration::from_secs(20))
        .expect("curl at the gate");
    agent
        .wait_for_log("comm=curl", Duration::from_secs(10))
        .expect("the child is attached");
    api.server.open_gate();
    assert!(sh.0.wait().expect("exit").success());
    let mut seen = Vec::new();
    agent
        .wait_for_lines(1, Duration::from_secs(30), &mut seen)
        .expect("the child's exchange");
    // The whole family has exited: the agent stops by itself.
    agent
        .wait_for_log("every watched process has exited", Duration::from_secs(10))
        .expect("agent notices");
    let out = agent.stop(seen).expect("agent stops");
    let hits = matching(
        &out.lines,
        &[
            ("core/path", "/v1/charges"),
            ("core/status", "402"),
            ("core/error", "card_error"),
        ],
    );
    assert_eq!(hits.len(), 1, "{:#?}", out.lines);
}

/// Once released, the followed shell forks a child that waits (so the scan sees it, without
/// TLS), then becomes Python through `exec` in the same pid: a new image, which must be examined
/// again and attached before its call, made soon after it loads its TLS library.
const EXEC_CLIENT: &str = r#"
import http.client, ssl, sys, time
port, ca = int(sys.argv[1]), sys.argv[2]
time.sleep(0.3)
conn = http.client.HTTPSConnection("localhost", port, context=ssl.create_default_context(cafile=ca))
conn.request("GET", "/v1/customers/cus_after_exec"); r = conn.getresponse(); r.read(); assert r.status == 200
"#;

#[test]
fn follow_examines_a_child_again_when_it_execs() {
    require_root();
    let api = TestApi::start().expect("test API");
    let dir = TempDir::new("exec").expect("tempdir");
    let client = dir.path().join("client.py");
    std::fs::write(&client, EXEC_CLIENT).expect("script");
    let script = format!(
        "read go; (sleep 1.5; exec python3 {} {} {}); echo done",
        client.display(),
        api.server.addr.port(),
        api.server.ca_file.display()
    );
    let mut sh = KillOnDrop(
        Command::new("sh")
            .args(["-c", &script])
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .spawn()
            .expect("sh"),
    );
    let pid = sh.0.id().to_string();
    let mut agent = Agent::start(&["--pid", &pid, "--follow", "--packs", &packs()]).expect("agent");
    agent
        .wait_for_log("ready", Duration::from_secs(60))
        .expect("agent ready");
    sh.0.stdin
        .as_mut()
        .expect("stdin")
        .write_all(b"go\n")
        .expect("release");
    let mut line = String::new();
    std::io::BufReader::new(sh.0.stdout.take().expect("stdout"))
        .read_line(&mut line)
        .expect("shell output");
    assert_eq!(line.trim(), "done");
    assert!(sh.0.wait().expect("exit").success(), "the client failed");
    let mut seen = Vec::new();
    let _ = agent.wait_for_lines(1, Duration::from_secs(10), &mut seen);
    let out = agent.stop(seen).expect("agent stops");
    let hits = matching(
        &out.lines,
        &[
            ("core/path", "/v1/customers/cus_after_exec"),
            ("core/status", "200"),
        ],
    );
    assert_eq!(hits.len(), 1, "{:#?}\n{}", out.lines, out.stderr);
    // Found through the kernel's report of the exec or of the library load, not the scan.
    assert!(
        out.stderr.lines().any(|l| l.contains("attached")
            && l.contains("comm=python3")
            && l.contains("found_by=\"exec-or-load\"")),
        "{}",
        out.stderr
    );
}
