//! Bad input gets a clear error and a non-zero exit, and harms nothing: a pid that does not
//! exist, a process with no TLS library, a packs directory that does not exist, no privileges.

use std::{
    io::BufRead as _,
    os::unix::fs::PermissionsExt as _,
    process::{Command, Output, Stdio},
};

use taskless_e2e::harness::{KillOnDrop, TempDir, agent_bin, require_root};

fn agent(args: &[&str]) -> Output {
    Command::new(agent_bin())
        .args(args)
        .stdin(Stdio::null())
        .output()
        .expect("run agent")
}

fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

/// A Python process that has loaded libssl and waits on stdin, optionally as another user.
fn python_with_ssl(prefix: &[&str]) -> KillOnDrop {
    let mut cmd = if prefix.is_empty() {
        Command::new("python3")
    } else {
        // Debian's python3: another user may not be able to reach a per-user install.
        let mut c = Command::new(prefix[0]);
        c.args(&prefix[1..]).arg("/usr/bin/python3");
        c
    };
    let mut child = cmd
        .args([
            "-c",
            "import ssl, sys; print('ready', flush=True); sys.stdin.readline()",
        ])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .expect("python3");
    let mut line = String::new();
    std::io::BufReader::new(child.stdout.take().expect("stdout"))
        .read_line(&mut line)
        .expect("ready");
    assert_eq!(line.trim(), "ready");
    KillOnDrop(child)
}

#[test]
fn no_pid_is_a_usage_error() {
    let o = agent(&[]);
    assert!(!o.status.success());
    assert!(
        stderr(&o).contains("no process to watch: pass --pid PID"),
        "{}",
        stderr(&o)
    );
}

#[test]
fn a_pid_that_does_not_exist_is_named() {
    // pid_max is at most 2^22, so this pid cannot exist.
    let o = agent(&["--pid", "4194305"]);
    assert!(!o.status.success());
    assert!(
        stderr(&o).contains("no process with pid 4194305"),
        "{}",
        stderr(&o)
    );
}

#[test]
fn a_process_without_tls_is_named_with_what_was_searched() {
    require_root();
    let sleeper = KillOnDrop(Command::new("sleep").arg("30").spawn().expect("sleep"));
    let pid = sleeper.0.id().to_string();
    // Wait for the exec and for the loader to map libc, so the process is `sleep` with its
    // libraries rather than a copy of the test or a program half loaded.
    for _ in 0..400 {
        let named =
            std::fs::read_to_string(format!("/proc/{pid}/comm")).is_ok_and(|c| c.trim() == "sleep");
        let loaded = std::fs::read_to_string(format!("/proc/{pid}/maps"))
            .is_ok_and(|m| m.contains("libc.so.6"));
        if named && loaded {
            break;
        }
        std::thread::sleep(std::time::Duration::from_millis(5));
    }
    let o = agent(&["--pid", &pid, "--require-tls"]);
    assert!(!o.status.success());
    let e = stderr(&o);
    assert!(
        e.contains(&format!("no TLS library found in pid {pid} (sleep)")),
        "{e}"
    );
    assert!(e.contains("libc.so.6") && e.contains("GnuTLS"), "{e}");
    // The target is untouched.
    assert!(
        std::path::Path::new(&format!("/proc/{pid}")).exists(),
        "the target must keep running"
    );
}

#[test]
fn a_missing_packs_directory_is_named() {
    require_root();
    let py = python_with_ssl(&[]);
    let pid = py.0.id().to_string();
    let o = agent(&["--pid", &pid, "--packs", "/nonexistent/packs"]);
    assert!(!o.status.success());
    assert!(
        stderr(&o).contains("packs directory /nonexistent/packs: does not exist"),
        "{}",
        stderr(&o)
    );
}

#[test]
fn missing_privileges_are_named() {
    require_root();
    // Both the agent and its target run as `nobody`: discovery works, loading eBPF must not.
    let drop_privs = [
        "setpriv",
        "--reuid=65534",
        "--regid=65534",
        "--clear-groups",
        "--inh-caps=-all",
    ];
    let py = python_with_ssl(&drop_privs);
    let pid = py.0.id().to_string();
    // The checkout may sit where `nobody` cannot reach: give it its own copy of the agent.
    let dir = TempDir::new("nobody").expect("tempdir");
    let bin = dir.path().join("taskless-agent");
    std::fs::copy(agent_bin(), &bin).expect("copy agent");
    let packs = dir.path().join("packs");
    std::fs::create_dir(&packs).expect("packs dir");
    for p in [dir.path(), &packs] {
        std::fs::set_permissions(p, std::fs::Permissions::from_mode(0o755)).expect("chmod");
    }
    let o = Command::new(drop_privs[0])
        .args(&drop_privs[1..])
        .arg(&bin)
        .args(["--pid", &pid, "--packs", &packs.display().to_string()])
        .output()
        .expect("run agent as nobody");
    assert!(!o.status.success());
    let e = stderr(&o);
    assert!(e.contains("loading eBPF programs was refused"), "{e}");
    assert!(e.contains("CAP_BPF"), "{e}");
}

#[test]
fn without_require_tls_a_process_without_tls_is_waited_for_until_it_exits() {
    require_root();
    let sleeper = KillOnDrop(Command::new("sleep").arg("3").spawn().expect("sleep"));
    let pid = sleeper.0.id().to_string();
    let o = agent(&["--pid", &pid]);
    assert!(o.status.success(), "{}", stderr(&o));
    let e = stderr(&o);
    assert!(
        e.contains("no TLS library loaded yet: waiting for one"),
        "{e}"
    );
    assert!(e.contains("every watched process has exited"), "{e}");
}
