//! Least privilege, end to end as root: the agent run (through `setpriv`) with exactly the
//! capabilities `deploy/kubernetes` grants, and nothing else, captures a root process and a
//! process of another user whose libssl sits in a directory only that user may enter; with any
//! one of them missing, it names the missing capability (and only it), and misses what that
//! capability is for. Together they show the set is the smallest that works on this kernel.

use std::{
    io::{BufRead as _, BufReader, Write as _},
    os::unix::fs::{PermissionsExt as _, chown},
    path::{Path, PathBuf},
    process::{ChildStdin, Command, Stdio},
    time::Duration,
};

use taskless_e2e::{
    containers::{capability_mask, effective_capabilities, manifest_capabilities},
    harness::{
        Agent, AgentOutput, KillOnDrop, TempDir, TestApi, agent_bin, matching, packs_dir,
        require_root,
    },
};

/// The uid and gid the other user's client runs as (`nobody`).
const NOBODY: u32 = 65534;
const LIBSSL: &str = "/lib/x86_64-linux-gnu/libssl.so.3";

const CLIENT: &str = r#"
import http.client, os, ssl, sys
port, ca = int(sys.argv[1]), sys.argv[2]
print("ready", os.getpid(), flush=True); sys.stdin.readline()
conn = http.client.HTTPSConnection("localhost", port, context=ssl.create_default_context(cafile=ca))
conn.request("GET", "/v1/customers/cus_other_user"); r = conn.getresponse(); r.read(); assert r.status == 200
"#;

/// A Python client running as `nobody`, with a private copy of libssl in a directory (mode
/// 0700) that only `nobody` may enter; waits for a line on stdin before its request.
struct OtherUserClient {
    child: KillOnDrop,
    stdin: ChildStdin,
    pid: u32,
    private_lib: PathBuf,
    _dir: TempDir,
}

impl OtherUserClient {
    fn start(api: &TestApi) -> Self {
        let dir = TempDir::new("privs").expect("tempdir");
        let private = dir.path().join("private");
        std::fs::create_dir(&private).expect("private dir");
        let lib = private.join("libssl.so.3");
        std::fs::copy(LIBSSL, &lib).expect("copy libssl");
        let script = private.join("client.py");
        std::fs::write(&script, CLIENT).expect("script");
        let ca = private.join("ca.pem");
        std::fs::copy(&api.server.ca_file, &ca).expect("CA file");
        for p in [&lib, &script, &ca, &private] {
            chown(p, Some(NOBODY), Some(NOBODY)).expect("chown");
        }
        std::fs::set_permissions(&private, std::fs::Permissions::from_mode(0o700))
            .expect("chmod 0700");
        let mut child = Command::new("setpriv")
            .args([
                &format!("--reuid={NOBODY}"),
                &format!("--regid={NOBODY}"),
                "--clear-groups",
                "--inh-caps=-all",
                "--",
                "/usr/bin/python3",
            ])
            .arg(&script)
            .arg(api.server.addr.port().to_string())
            .arg(&ca)
            .env("LD_LIBRARY_PATH", &private)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .spawn()
            .expect("setpriv python3");
        let stdin = child.stdin.take().expect("stdin");
        let mut line = String::new();
        BufReader::new(child.stdout.take().expect("stdout"))
            .read_line(&mut line)
            .expect("ready line");
        let pid: u32 = line
            .strip_prefix("ready ")
            .and_then(|p| p.trim().parse().ok())
            .unwrap_or_else(|| panic!("client failed to start: {line:?}"));
        let maps = std::fs::read_to_string(format!("/proc/{pid}/maps")).unwrap_or_default();
        assert!(
            maps.contains(lib.to_str().expect("utf-8 path")),
            "the client must map its private libssl"
        );
        Self {
            child: KillOnDrop(child),
            stdin,
            pid,
            private_lib: lib,
            _dir: dir,
        }
    }

    /// Lets the request go and waits for the client to finish it.
    fn release(mut self) -> u32 {
        self.stdin.write_all(b"go\n").expect("release");
        let status = self.child.0.wait().expect("client exit");
        assert!(status.success(), "the client's request failed");
        self.pid
    }
}

/// The agent with `--all`, started through setpriv with exactly `caps` (Kubernetes names):
/// as uid 0, a process gets its bounding set as its permitted and effective sets.
/// One `--all` agent at a time: each would see the other tests' clients (same paths) and
/// processes.
static SERIAL: std::sync::Mutex<()> = std::sync::Mutex::new(());

fn serial() -> std::sync::MutexGuard<'static, ()> {
    SERIAL
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
}

fn start_agent(caps: &[String]) -> Agent {
    let bounding: Vec<String> = caps
        .iter()
        .map(|c| format!("+{}", c.to_lowercase()))
        .collect();
    let mut cmd = Command::new("setpriv");
    cmd.arg(format!("--bounding-set=-all,{}", bounding.join(",")))
        .args(["--inh-caps=-all", "--"])
        .arg(agent_bin())
        .args(["--all", "--stats-interval", "0", "--packs"])
        .arg(packs_dir())
        .env("TASKLESS_LOG", "info,taskless_agent=debug");
    Agent::start_command(cmd).expect("setpriv agent")
}

fn curl(api: &TestApi, path: &str) {
    let status = Command::new("curl")
        .args(["-sS", "-o", "/dev/null", "--http1.1", "--cacert"])
        .arg(&api.server.ca_file)
        .arg(format!("{}{path}", api.server.base_url()))
        .status()
        .expect("curl");
    assert!(status.success());
}

fn hits(out: &AgentOutput, path: &str) -> usize {
    matching(&out.lines, &[("core/path", path), ("core/status", "200")]).len()
}

#[test]
fn exactly_the_manifest_capabilities_are_enough() {
    require_root();
    let _serial = serial();
    let caps = manifest_capabilities();
    let api = TestApi::start().expect("test API");
    let other = OtherUserClient::start(&api);
    let private_lib = other.private_lib.display().to_string();
    let mut agent = start_agent(&caps);
    agent
        .wait_for_log("ready", Duration::from_secs(60))
        .expect("agent ready");
    assert_eq!(
        effective_capabilities(agent.pid()),
        Some(capability_mask(&caps)),
        "the agent must run with exactly {caps:?}"
    );
    agent
        .wait_for_log(&format!("library={private_lib}"), Duration::from_secs(10))
        .expect("the other user's private libssl is attached");
    // A root process started now, and the other user's.
    curl(&api, "/v1/customers/cus_root_curl");
    let other_pid = other.release();
    let mut seen = Vec::new();
    let _ = agent.wait_for_line_containing("cus_root_curl", Duration::from_secs(20), &mut seen);
    let _ = agent.wait_for_line_containing("cus_other_user", Duration::from_secs(20), &mut seen);
    let out = agent.stop(seen).expect("agent stops");
    assert_eq!(
        hits(&out, "/v1/customers/cus_root_curl"),
        1,
        "{:#?}",
        out.lines
    );
    let other_lines = matching(&out.lines, &[("core/path", "/v1/customers/cus_other_user")]);
    assert_eq!(other_lines.len(), 1, "{:#?}\n{}", out.lines, out.stderr);
    assert_eq!(other_lines[0]["source"]["pid"], other_pid);
    assert_eq!(other_lines[0]["source"]["process"], "python3");
    // Nothing to complain about (a process protected otherwise may still be refused: this
    // sandbox's init is, even to root).
    assert!(!out.stderr.contains("missing capability"), "{}", out.stderr);
}

/// Runs the agent without `missing`, has both clients call, and returns what it printed and
/// whether each client's exchange was captured (root curl, other user).
fn without(missing: &str) -> (String, Option<(usize, usize)>) {
    let caps: Vec<String> = manifest_capabilities()
        .into_iter()
        .filter(|c| c != missing)
        .collect();
    let api = TestApi::start().expect("test API");
    let other = OtherUserClient::start(&api);
    let mut agent = start_agent(&caps);
    if agent
        .wait_for_log("ready", Duration::from_secs(60))
        .is_err()
    {
        // It refused to start: what it said is the result.
        let out = agent.stop(Vec::new()).expect("agent output");
        assert_ne!(out.code, Some(0), "an agent that could not start must fail");
        return (out.stderr, None);
    }
    curl(&api, "/v1/customers/cus_root_curl");
    other.release();
    let mut seen = Vec::new();
    let _ = agent.wait_for_line_containing("cus_root_curl", Duration::from_secs(15), &mut seen);
    // The other user's exchange, if it was captured at all, comes within moments.
    let _ = agent.wait_for_line_containing("cus_other_user", Duration::from_secs(3), &mut seen);
    let out = agent.stop(seen).expect("agent stops");
    let counts = (
        hits(&out, "/v1/customers/cus_root_curl"),
        hits(&out, "/v1/customers/cus_other_user"),
    );
    (out.stderr, Some(counts))
}

/// The agent's output names `cap` and none of the others it has.
fn names_only(stderr: &str, cap: &str) {
    let name = format!("CAP_{cap}");
    assert!(stderr.contains(&name), "{name} not named:\n{stderr}");
    for other in manifest_capabilities().iter().filter(|c| *c != cap) {
        assert!(
            !stderr.contains(&format!("CAP_{other}")),
            "CAP_{other} is present but named:\n{stderr}"
        );
    }
}

fn capability_is_in_the_manifest(cap: &str) -> bool {
    manifest_capabilities().iter().any(|c| c == cap)
}

#[test]
fn without_cap_sys_admin_it_refuses_to_start_and_says_so() {
    require_root();
    let _serial = serial();
    assert!(capability_is_in_the_manifest("SYS_ADMIN"));
    let (stderr, ran) = without("SYS_ADMIN");
    assert!(ran.is_none(), "started without CAP_SYS_ADMIN:\n{stderr}");
    assert!(
        stderr.contains("loading eBPF programs was refused"),
        "{stderr}"
    );
    names_only(&stderr, "SYS_ADMIN");
}

/// `CAP_BPF` and `CAP_PERFMON` instead of `CAP_SYS_ADMIN`: enough on kernels before the 2025
/// change, refused at the first uprobe since, with `CAP_SYS_ADMIN` named.
#[test]
fn the_older_kernels_capabilities_need_cap_sys_admin_for_uprobes_on_newer_kernels() {
    require_root();
    let _serial = serial();
    let caps: Vec<String> = ["BPF", "PERFMON", "SYS_PTRACE", "DAC_READ_SEARCH"]
        .map(str::to_owned)
        .to_vec();
    let api = TestApi::start().expect("test API");
    let mut agent = start_agent(&caps);
    if agent.wait_for_log("ready", Duration::from_secs(60)).is_ok() {
        // A kernel from before the change: the set works.
        curl(&api, "/v1/customers/cus_older_kernel");
        let mut seen = Vec::new();
        let _ =
            agent.wait_for_line_containing("cus_older_kernel", Duration::from_secs(20), &mut seen);
        let out = agent.stop(seen).expect("agent stops");
        assert_eq!(
            hits(&out, "/v1/customers/cus_older_kernel"),
            1,
            "{}",
            out.stderr
        );
        return;
    }
    let out = agent.stop(Vec::new()).expect("agent output");
    assert_ne!(out.code, Some(0));
    assert!(
        out.stderr.contains("perf_event_open")
            && out.stderr.contains("missing capability CAP_SYS_ADMIN"),
        "{}",
        out.stderr
    );
    // Loading worked with CAP_BPF and CAP_PERFMON: nothing else is named missing.
    assert!(
        !out.stderr.contains("missing capability CAP_BPF"),
        "{}",
        out.stderr
    );
    assert!(!out.stderr.contains("CAP_SYS_PTRACE ("), "{}", out.stderr);
}

#[test]
fn without_cap_sys_ptrace_it_misses_other_users_processes_and_says_why() {
    require_root();
    let _serial = serial();
    assert!(capability_is_in_the_manifest("SYS_PTRACE"));
    let (stderr, ran) = without("SYS_PTRACE");
    let (_, other) = ran.unwrap_or_else(|| panic!("did not start:\n{stderr}"));
    assert_eq!(
        other, 0,
        "the other user's process cannot be examined without it"
    );
    assert!(stderr.contains("process not examined"), "{stderr}");
    names_only(&stderr, "SYS_PTRACE");
}

#[test]
fn without_cap_dac_read_search_it_misses_private_libraries_and_says_why() {
    require_root();
    let _serial = serial();
    assert!(capability_is_in_the_manifest("DAC_READ_SEARCH"));
    let (stderr, ran) = without("DAC_READ_SEARCH");
    let (root, other) = ran.unwrap_or_else(|| panic!("did not start:\n{stderr}"));
    assert_eq!(root, 1, "root's curl is still captured:\n{stderr}");
    assert_eq!(
        other, 0,
        "a library in a private directory cannot be opened without it"
    );
    assert!(stderr.contains("process not examined"), "{stderr}");
    names_only(&stderr, "DAC_READ_SEARCH");
}

#[test]
fn private_library_directory_really_is_private() {
    // The control for the test above: without CAP_DAC_READ_SEARCH root may not enter it.
    require_root();
    let api = TestApi::start().expect("test API");
    let other = OtherUserClient::start(&api);
    let dir = other
        .private_lib
        .parent()
        .map(Path::to_path_buf)
        .expect("dir");
    let out = Command::new("setpriv")
        .args([
            "--bounding-set=-all,+bpf,+perfmon,+sys_ptrace",
            "--inh-caps=-all",
            "--",
            "ls",
        ])
        .arg(&dir)
        .output()
        .expect("setpriv ls");
    assert!(
        !out.status.success(),
        "root without DAC capabilities listed {}",
        dir.display()
    );
}
