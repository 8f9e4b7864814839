//! End to end, as root: the agent beside other tracers on the same TLS functions.
//!
//! - bpftrace (plain uprobes on `SSL_write` and `SSL_read`) and the agent watch the same curl:
//!   both see the calls, the agent reports the exchanges whole.
//! - A uprobe registered on `SSL_write` with a reference counter (as bcc's tools register theirs),
//!   which makes the kernel refuse any other uprobe at that offset: the agent still starts,
//!   keeps its other probes, names the function and the conflict, counts it, and curl is
//!   unharmed.

use std::{
    ffi::CString,
    io::{BufRead as _, BufReader},
    path::PathBuf,
    process::{Command, Stdio},
    sync::mpsc,
    time::Duration,
};

use taskless_e2e::harness::{
    Agent, KillOnDrop, TempDir, TestApi, matching, packs_dir, require_root,
};

/// curl held at the test API's gate, then making `then` calls on the same connection.
fn gated_curl(api: &TestApi, then: &[&str]) -> KillOnDrop {
    gated_curl_with(api, then, None)
}

/// [`gated_curl`], with libraries looked up first in `libs`.
fn gated_curl_with(api: &TestApi, then: &[&str], libs: Option<&std::path::Path>) -> KillOnDrop {
    let base = api.server.base_url();
    let ca = api.server.ca_file.display().to_string();
    let opts = [
        "-sS",
        "-o",
        "/dev/null",
        "--http1.1",
        "--cacert",
        ca.as_str(),
    ];
    let mut cmd = Command::new("curl");
    if let Some(libs) = libs {
        cmd.env("LD_LIBRARY_PATH", libs);
    }
    cmd.args(opts).arg(format!("{base}/v1/gate"));
    for path in then {
        cmd.arg("--next").args(opts).arg(format!("{base}{path}"));
    }
    let curl = KillOnDrop(cmd.spawn().expect("curl"));
    api.wait_gate_waiters(1, Duration::from_secs(20))
        .expect("curl at the gate");
    curl
}

/// The libssl `pid` has mapped.
fn libssl_of(pid: u32) -> PathBuf {
    let maps = std::fs::read_to_string(format!("/proc/{pid}/maps")).expect("maps");
    maps.lines()
        .filter_map(|l| l.split_whitespace().nth(5))
        .find(|p| p.contains("/libssl.so"))
        .map(PathBuf::from)
        .expect("curl maps a libssl")
}

/// bpftrace registers its uprobes through tracefs: mount it where the machine has not (a node
/// with bpftrace has it; a minimal test machine may not).
fn ensure_tracefs() {
    if std::path::Path::new("/sys/kernel/tracing/uprobe_events").exists() {
        return;
    }
    let status = Command::new("mount")
        .args(["-t", "tracefs", "nodev", "/sys/kernel/tracing"])
        .status()
        .expect("mount");
    assert!(status.success(), "mounting tracefs for bpftrace: {status}");
}

#[test]
fn bpftrace_and_the_agent_both_see_the_same_calls() {
    require_root();
    ensure_tracefs();
    let api = TestApi::start().expect("test API");
    // The gate's request was sent before the agent attached: only the next call is reported.
    let mut curl = gated_curl(&api, &["/v1/customers/cus_coexist"]);
    let pid = curl.0.id();
    let libssl = libssl_of(pid);

    let script = format!(
        "uprobe:{lib}:SSL_write /pid == {pid}/ {{ @writes = count(); }} \
         uprobe:{lib}:SSL_read /pid == {pid}/ {{ @reads = count(); }}",
        lib = libssl.display()
    );
    let mut bpftrace = Command::new("bpftrace")
        .args(["-e", &script])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("bpftrace (installed by cargo xtask setup)");
    // bpftrace prints "Attaching N probes..." once its probes are in.
    let (tx, rx) = mpsc::channel();
    let out = bpftrace.stdout.take().expect("stdout");
    std::thread::spawn(move || {
        for line in BufReader::new(out).lines().map_while(Result::ok) {
            if tx.send(line).is_err() {
                break;
            }
        }
    });
    let attached = rx
        .recv_timeout(Duration::from_secs(60))
        .expect("bpftrace attached");
    assert!(attached.contains("Attaching"), "bpftrace said {attached}");

    let packs = packs_dir().display().to_string();
    let mut agent =
        Agent::start(&["--pid", &pid.to_string(), "--packs", &packs]).expect("agent starts");
    agent
        .wait_for_log("ready", Duration::from_secs(60))
        .expect("agent ready beside bpftrace");
    api.server.open_gate();
    let status = curl.0.wait().expect("curl");
    assert!(status.success(), "curl beside both tracers: {status}");
    let mut seen = Vec::new();
    agent
        .wait_for_lines(1, Duration::from_secs(30), &mut seen)
        .expect("the exchange after the attach");
    let out = agent.stop(seen).expect("agent stops");

    // SIGINT makes bpftrace print its maps and exit.
    // SAFETY: kill has no memory-safety preconditions.
    unsafe { libc::kill(bpftrace.id() as i32, libc::SIGINT) };
    let mut printed = String::new();
    while let Ok(line) = rx.recv_timeout(Duration::from_secs(20)) {
        printed.push_str(&line);
        printed.push('\n');
    }
    let _ = bpftrace.wait();
    let mut errors = String::new();
    if let Some(mut e) = bpftrace.stderr.take() {
        let _ = std::io::Read::read_to_string(&mut e, &mut errors);
    }
    printed.push_str(&errors);

    assert_eq!(
        matching(
            &out.lines,
            &[
                ("core/path", "/v1/customers/cus_coexist"),
                ("core/status", "200")
            ]
        )
        .len(),
        1,
        "{:#?}",
        out.lines
    );
    assert_eq!(out.counter("probes_not_attached"), 0, "{}", out.stderr);
    assert_eq!(out.counter("kernel_ringbuf_full"), 0, "{}", out.stderr);
    let count = |name: &str| -> u64 {
        printed
            .lines()
            .find_map(|l| l.strip_prefix(&format!("@{name}: ")))
            .and_then(|v| v.trim().parse().ok())
            .unwrap_or(0)
    };
    assert!(count("writes") >= 1, "bpftrace saw the writes:\n{printed}");
    assert!(count("reads") >= 1, "bpftrace saw the reads:\n{printed}");
}

/// A uprobe on `offset` of `path` registered through the kernel's uprobe PMU with a reference
/// counter at `ref_ctr_offset`, scoped to process `pid`; removed when dropped.
struct RefCountedUprobe(i32);

impl RefCountedUprobe {
    fn open(path: &std::path::Path, offset: u64, ref_ctr_offset: u64, pid: u32) -> Self {
        let pmu: u32 = std::fs::read_to_string("/sys/bus/event_source/devices/uprobe/type")
            .expect("uprobe PMU")
            .trim()
            .parse()
            .expect("PMU type");
        let path = CString::new(path.as_os_str().as_encoded_bytes()).expect("path");
        // struct perf_event_attr up to config2 (PERF_ATTR_SIZE_VER1, 72 bytes): type, size,
        // config (the reference counter's offset in bits 32-63), ..., config1 (the path),
        // config2 (the probe's offset).
        let mut attr = [0u8; 72];
        attr[0..4].copy_from_slice(&pmu.to_ne_bytes());
        attr[4..8].copy_from_slice(&72u32.to_ne_bytes());
        attr[8..16].copy_from_slice(&(ref_ctr_offset << 32).to_ne_bytes());
        attr[56..64].copy_from_slice(&(path.as_ptr() as u64).to_ne_bytes());
        attr[64..72].copy_from_slice(&offset.to_ne_bytes());
        // SAFETY: attr is a valid perf_event_attr of the size it declares; path outlives the
        // call.
        let fd = unsafe {
            libc::syscall(
                libc::SYS_perf_event_open,
                attr.as_ptr(),
                pid as libc::pid_t,
                -1i32,
                -1i32,
                8u64, // PERF_FLAG_FD_CLOEXEC
            )
        };
        assert!(
            fd >= 0,
            "perf_event_open of a reference-counted uprobe: {}",
            std::io::Error::last_os_error()
        );
        Self(fd as i32)
    }
}

impl Drop for RefCountedUprobe {
    fn drop(&mut self) {
        // SAFETY: the fd is ours.
        unsafe { libc::close(self.0) };
    }
}

/// The file offset of the dynamic symbol `name` in the shared library `path`.
fn symbol_offset(path: &std::path::Path, name: &str) -> u64 {
    let out = Command::new("readelf")
        .args(["-W", "--dyn-syms", "-l"])
        .arg(path)
        .output()
        .expect("readelf");
    let text = String::from_utf8_lossy(&out.stdout);
    let vaddr = text
        .lines()
        .find(|l| {
            l.split_whitespace()
                .nth(7)
                .is_some_and(|n| n.split('@').next() == Some(name))
        })
        .and_then(|l| l.split_whitespace().nth(1))
        .and_then(|v| u64::from_str_radix(v, 16).ok())
        .unwrap_or_else(|| panic!("{name} in {}", path.display()));
    // LOAD segments: Offset VirtAddr PhysAddr FileSiz MemSiz ...
    text.lines()
        .filter(|l| l.trim_start().starts_with("LOAD"))
        .filter_map(|l| {
            let f: Vec<u64> = l
                .split_whitespace()
                .skip(1)
                .take(5)
                .filter_map(|v| u64::from_str_radix(v.trim_start_matches("0x"), 16).ok())
                .collect();
            (f.len() == 5).then(|| (f[0], f[1], f[3]))
        })
        .find(|&(_, va, size)| (va..va + size).contains(&vaddr))
        .map(|(off, va, _)| vaddr - va + off)
        .expect("the symbol's segment")
}

#[test]
fn a_reference_counted_uprobe_of_another_tool_never_stops_the_agent() {
    require_root();
    let api = TestApi::start().expect("test API");
    // curl on a private copy of libssl: other agents' probes on the system's copy cannot
    // interfere with the conflict this test sets up.
    let private = TempDir::new("coexist").expect("temp dir");
    let ldd = Command::new("ldd")
        .arg("/usr/bin/curl")
        .output()
        .expect("ldd");
    let system = String::from_utf8_lossy(&ldd.stdout)
        .lines()
        .filter_map(|l| l.split("=>").nth(1))
        .filter_map(|l| l.split_whitespace().next())
        .find(|p| p.contains("/libssl.so"))
        .map(PathBuf::from)
        .expect("curl's libssl");
    let libssl = private.path().join(system.file_name().expect("file name"));
    std::fs::copy(&system, &libssl).expect("copy libssl");
    let mut curl = gated_curl_with(&api, &["/v1/customers/cus_refctr"], Some(private.path()));
    let pid = curl.0.id();
    assert_eq!(libssl_of(pid), libssl, "curl runs on the private libssl");
    // The other tool's probe, scoped to a process that does not map libssl: it changes no
    // process's memory, yet the kernel holds it at SSL_write's offset with its counter.
    let bystander = KillOnDrop(Command::new("sleep").arg("300").spawn().expect("sleep"));
    let holders: Vec<RefCountedUprobe> = ["SSL_write", "SSL_write_ex"]
        .iter()
        .map(|f| RefCountedUprobe::open(&libssl, symbol_offset(&libssl, f), 2, bystander.0.id()))
        .collect();

    let packs = packs_dir().display().to_string();
    let mut agent =
        Agent::start(&["--pid", &pid.to_string(), "--packs", &packs]).expect("agent starts");
    agent
        .wait_for_log("ready", Duration::from_secs(60))
        .expect("agent ready beside the other tool's probe");
    api.server.open_gate();
    let status = curl.0.wait().expect("curl");
    assert!(
        status.success(),
        "curl beside the conflicting probe: {status}"
    );
    std::thread::sleep(Duration::from_secs(2));
    let out = agent.stop(Vec::new()).expect("agent stops");
    drop(holders);

    assert_eq!(out.code, Some(0), "agent exit\n{}", out.stderr);
    assert!(
        out.counter("probes_not_attached") + out.counter("probes_moved") >= 2,
        "the conflict is counted\n{}",
        out.stderr
    );
    assert!(
        out.stderr.contains("function=\"SSL_write\"") && out.stderr.contains("reference counter"),
        "the conflict is named with its function\n{}",
        out.stderr
    );
    // The other probes stayed in: the responses' reads were captured.
    assert!(out.counter("kernel_calls") > 0, "{}", out.stderr);
}
