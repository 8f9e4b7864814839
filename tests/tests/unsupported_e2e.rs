//! TLS stacks the agent recognises but cannot trace are named: `--pid` on a JVM fails with an
//! error that says Java (JSSE) is not supported yet (and nothing about static linking), and
//! under `--follow` every such program is logged once per executable and counted.

use std::{
    io::Write as _,
    process::{Command, Stdio},
    time::{Duration, Instant},
};

use taskless_e2e::harness::{Agent, KillOnDrop, agent_bin, require_root};

/// A JVM that waits: `keytool -printcert` reads a certificate from stdin until it closes.
fn keytool() -> Command {
    let mut cmd = Command::new("keytool");
    cmd.arg("-printcert")
        .stdin(Stdio::piped())
        .stdout(Stdio::null())
        .stderr(Stdio::null());
    cmd
}

/// Waits until `pid` has mapped the JVM.
fn wait_for_jvm(pid: u32) {
    let deadline = Instant::now() + Duration::from_secs(20);
    while !std::fs::read_to_string(format!("/proc/{pid}/maps"))
        .is_ok_and(|m| m.contains("libjvm.so"))
    {
        assert!(
            Instant::now() < deadline,
            "pid {pid} never mapped libjvm.so"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}

#[test]
fn a_jvm_is_named_as_java_not_supported() {
    require_root();
    let jvm = KillOnDrop(
        keytool()
            .spawn()
            .expect("keytool (`cargo xtask setup` installs a JRE)"),
    );
    let pid = jvm.0.id();
    wait_for_jvm(pid);
    let o = Command::new(agent_bin())
        .args(["--pid", &pid.to_string()])
        .stdin(Stdio::null())
        .output()
        .expect("agent");
    let e = String::from_utf8_lossy(&o.stderr);
    assert!(!o.status.success(), "{e}");
    assert!(e.contains(&format!("pid {pid} (")), "{e}");
    assert!(e.contains("Java (JSSE) is not supported yet"), "{e}");
    assert!(e.contains("libjvm.so"), "says where: {e}");
    assert!(!e.contains("statically"), "the cause is known: {e}");
    assert!(
        std::path::Path::new(&format!("/proc/{pid}")).exists(),
        "the JVM is untouched"
    );
}

#[test]
fn unsupported_programs_are_logged_once_per_executable_and_counted() {
    require_root();
    // Two JVMs of one executable, started by a shell the agent follows.
    let mut shell = KillOnDrop(
        Command::new("sh")
            .args([
                "-c",
                "read go; keytool -printcert & keytool -printcert & wait",
            ])
            .stdin(Stdio::piped())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("sh"),
    );
    let sh = shell.0.id();
    let mut agent = Agent::start(&[
        "--pid".to_owned(),
        sh.to_string(),
        "--follow".to_owned(),
        "--stats-interval".to_owned(),
        "1".to_owned(),
    ])
    .expect("agent");
    agent
        .wait_for_log("ready", Duration::from_secs(60))
        .expect("ready");
    shell
        .0
        .stdin
        .as_mut()
        .expect("stdin")
        .write_all(b"go\n")
        .expect("release");
    agent
        .wait_for_log("TLS stack not supported", Duration::from_secs(20))
        .expect("the JVM is named");
    // Both JVMs are examined again at every scan: still one report.
    std::thread::sleep(Duration::from_millis(2_500));
    let out = agent.stop(Vec::new()).expect("agent stops");
    let reports: Vec<&str> = out
        .stderr
        .lines()
        .filter(|l| l.contains("TLS stack not supported"))
        .collect();
    assert_eq!(reports.len(), 1, "one report per executable: {reports:#?}");
    assert!(reports[0].contains("Java (JSSE)"), "{}", reports[0]);
    assert_eq!(out.counter("unsupported_programs"), 1, "{}", out.stderr);
    drop(shell.0.stdin.take());
}
