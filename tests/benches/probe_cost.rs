//! The probes' cost per TLS call, as a ratio to empty probes at the same places, measured in the
//! same run (needs root; `cargo bench -p taskless-e2e --bench probe_cost`).
//!
//! - OpenSSL: a Python process runs a TLS client and server over memory BIOs (no sockets, no
//!   network) and times `SSL_write_ex` + `SSL_read_ex` pairs with 1 KiB payloads; the floor is an
//!   empty uprobe + uretprobe on each function.
//! - GnuTLS: a C program (`tests/c/gnutls_bench.c`) with a client and a server session joined by
//!   memory buffers, timing `gnutls_record_send` + `gnutls_record_recv` pairs; the floor is an
//!   empty uprobe + uretprobe on each.
//! - NSS: a C program (`tests/c/nss_bench.c`) with a client and a server descriptor made TLS over
//!   the two ends of a loopback TCP connection, timing `PR_Write` + `PR_Read` pairs (so each call
//!   makes a socket syscall, in every column); the floor is an empty uprobe + uretprobe on each.
//! - rustls: a Rust program (`tests/rustls-clients/bench.rs`, rustls 0.23, release build) with a
//!   client and a server connection joined by memory buffers, timing a 1 KiB plaintext write on
//!   the client and its read on the server (with the records carried between them); the floor is
//!   an empty probe at each place the real ones go.
//! - Go: a Go program (`tests/go/bench`, built by the newest Go toolchain setup installed) does
//!   the same with crypto/tls `(*Conn).Write` + `(*Conn).Read` over an in-memory connection; the
//!   floor is an empty uprobe at each place the real probes go (the entries, and every `RET` of
//!   `Read`).
//!
//! Each is timed with nothing attached, then with the agent's empty probes (`--probe-set
//! empty`), then with the real ones, in alternating rounds. Prints nanoseconds per call and the
//! ratios.
//!
//! With two or more CPUs, the Python process runs on the last one and the agent on the others, so
//! the agent's own work on the records (on a real host it has cores of its own) does not compete
//! with the calls being timed: what is left is the probes' cost inside the calls.

use std::{
    io::{BufRead as _, BufReader, Write as _},
    path::Path,
    process::{ChildStdin, ChildStdout, Command, Stdio},
    time::Duration,
};

use taskless_e2e::{
    clients,
    golang::{self, Variant},
    harness::{Agent, KillOnDrop, TempDir, agent_bin, require_root},
};

const CALLS: u64 = 20_000;
/// A ring buffer that holds a whole round's records (20,000 pairs of 1 KiB calls, about 43 MB),
/// so the figures never depend on how fast the agent drains it.
const RINGBUF: &str = "134217728";
const ROUNDS: usize = 5;

const CLIENT: &str = r#"
import ssl, sys, time
cert, key = sys.argv[1], sys.argv[2]
sctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER); sctx.load_cert_chain(cert, key)
cctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT); cctx.check_hostname = False; cctx.verify_mode = ssl.CERT_NONE
ci, co, si, so = ssl.MemoryBIO(), ssl.MemoryBIO(), ssl.MemoryBIO(), ssl.MemoryBIO()
c = cctx.wrap_bio(ci, co, server_hostname="bench"); s = sctx.wrap_bio(si, so, server_side=True)
done = [False, False]
while not all(done):
    for i, o in enumerate((c, s)):
        if not done[i]:
            try: o.do_handshake(); done[i] = True
            except ssl.SSLWantReadError: pass
    d = co.read(); d and si.write(d)
    d = so.read(); d and ci.write(d)
payload = b"x" * 1024
print("ready", flush=True)
for line in sys.stdin:
    n = int(line)
    t0 = time.perf_counter_ns()
    for _ in range(n):
        c.write(payload); si.write(co.read()); s.read(1024)
    print((time.perf_counter_ns() - t0) / (2 * n), flush=True)
"#;

struct Client {
    _child: KillOnDrop,
    pid: u32,
    stdin: ChildStdin,
    stdout: BufReader<ChildStdout>,
}

impl Client {
    fn measure(&mut self, calls: u64) -> f64 {
        writeln!(self.stdin, "{calls}").expect("write");
        let mut line = String::new();
        self.stdout.read_line(&mut line).expect("read");
        line.trim().parse().expect("ns per call")
    }
}

/// Pins every thread of `pid` to `cpus` (a `taskset` list), where the machine has the CPUs.
fn pin(pid: u32, cpus: &str) {
    let ok = Command::new("taskset")
        .args(["-a", "-p", "-c", cpus, &pid.to_string()])
        .stdout(Stdio::null())
        .status()
        .is_ok_and(|s| s.success());
    assert!(ok, "taskset could not pin pid {pid} to CPUs {cpus}");
}

fn median(v: &mut [f64]) -> f64 {
    v.sort_by(f64::total_cmp);
    v[v.len() / 2]
}

fn main() {
    require_root();
    let dir = TempDir::new("probe-bench").expect("tempdir");
    let (cert, key) = (dir.path().join("cert.pem"), dir.path().join("key.pem"));
    let ok = Command::new("openssl")
        .args([
            "req",
            "-x509",
            "-newkey",
            "rsa:2048",
            "-nodes",
            "-subj",
            "/CN=bench",
            "-days",
            "1",
            "-keyout",
        ])
        .arg(&key)
        .arg("-out")
        .arg(&cert)
        .stderr(Stdio::null())
        .status()
        .expect("openssl");
    assert!(ok.success(), "openssl req failed");
    let script = dir.path().join("bench.py");
    std::fs::write(&script, CLIENT).expect("script");
    let mut python = Command::new("python3");
    python.arg(&script).arg(&cert).arg(&key);
    let packs = dir.path().join("packs");
    std::fs::create_dir(&packs).expect("packs");
    println!("agent: {}", agent_bin().display());
    measure(
        "1 KiB SSL_write_ex/SSL_read_ex calls (empty floor: uprobe + uretprobe)",
        python,
        &packs,
    );

    let gnutls = clients::gcc("gnutls_bench", "gnutls_bench", dir.path(), &["-lgnutls"])
        .expect("gnutls_bench (libgnutls28-dev)");
    let mut gnutls = Command::new(gnutls);
    gnutls.arg(&cert).arg(&key);
    measure(
        "1 KiB gnutls_record_send/gnutls_record_recv calls (empty floor: uprobe + uretprobe)",
        gnutls,
        &packs,
    );

    let nss_flags = clients::nss_flags().expect("nss flags (libnss3-dev)");
    let nss_flags: Vec<&str> = nss_flags.iter().map(String::as_str).collect();
    let nss = clients::gcc("nss_bench", "nss_bench", dir.path(), &nss_flags).expect("nss_bench");
    let mut nss = Command::new(nss);
    nss.arg(nss_database(dir.path(), &cert, &key));
    measure(
        "1 KiB PR_Write/PR_Read calls over loopback TCP (empty floor: uprobe + uretprobe)",
        nss,
        &packs,
    );

    let rustls = clients::rustls_bench().expect("rustls bench program");
    let mut rustls = Command::new(rustls);
    rustls.arg(&cert).arg(&key);
    measure(
        "1 KiB rustls 0.23 writer().write/reader().read calls (empty floor: a probe at each place)",
        rustls,
        &packs,
    );

    let tc = golang::newest();
    let go = golang::build(&tc, "bench", Variant::Normal).expect("go build");
    measure(
        &format!(
            "1 KiB crypto/tls Write/Read calls, {} (empty floor: uprobes at the entries and RETs)",
            tc.version
        ),
        Command::new(go),
        &packs,
    );
}

/// An NSS database in `dir` holding `cert` and its `key` as `bench` (made with NSS's own
/// `certutil` and `pk12util` from a PKCS#12 file `openssl` writes).
fn nss_database(dir: &Path, cert: &Path, key: &Path) -> std::path::PathBuf {
    let db = dir.join("nssdb");
    std::fs::create_dir_all(&db).expect("nss db dir");
    let p12 = dir.join("bench.p12");
    let run = |cmd: &mut Command| {
        let o = cmd.output().expect("run");
        assert!(
            o.status.success(),
            "{cmd:?}: {}",
            String::from_utf8_lossy(&o.stderr)
        );
    };
    run(Command::new("openssl")
        .args([
            "pkcs12", "-export", "-name", "bench", "-passout", "pass:", "-in",
        ])
        .arg(cert)
        .arg("-inkey")
        .arg(key)
        .arg("-out")
        .arg(&p12));
    let sql = format!("sql:{}", db.display());
    run(Command::new("certutil").args(["-N", "--empty-password", "-d", &sql]));
    run(Command::new("pk12util")
        .args(["-W", "", "-d", &sql, "-i"])
        .arg(&p12));
    db
}

/// Times `program` (which speaks the bench protocol) with no probes, empty ones and the real
/// ones, and prints the figures.
fn measure(what: &str, mut program: Command, packs: &Path) {
    let mut child = program
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .expect("bench client");
    let stdin = child.stdin.take().expect("stdin");
    let mut stdout = BufReader::new(child.stdout.take().expect("stdout"));
    let mut line = String::new();
    stdout.read_line(&mut line).expect("ready");
    assert_eq!(line.trim(), "ready");
    let mut client = Client {
        pid: child.id(),
        _child: KillOnDrop(child),
        stdin,
        stdout,
    };
    let cpus = std::thread::available_parallelism().map_or(1, std::num::NonZero::get);
    let (bench_cpu, agent_cpus) = if cpus >= 2 {
        (
            Some((cpus - 1).to_string()),
            Some(format!("0-{}", cpus - 2)),
        )
    } else {
        (None, None)
    };
    if let Some(cpu) = &bench_cpu {
        pin(client.pid, cpu);
    }
    let packs = packs.display().to_string();
    let pid = client.pid.to_string();
    client.measure(CALLS / 4); // warm up

    let (mut none, mut empty, mut real) = (Vec::new(), Vec::new(), Vec::new());
    for _ in 0..ROUNDS {
        none.push(client.measure(CALLS));
        for (set, out) in [("empty", &mut empty), ("capture", &mut real)] {
            let mut agent = Agent::start(&[
                "--pid",
                &pid,
                "--packs",
                &packs,
                "--probe-set",
                set,
                "--ringbuf-size",
                RINGBUF,
                "--stats-interval",
                "0",
            ])
            .expect("agent");
            agent
                .wait_for_log("ready", Duration::from_secs(60))
                .expect("agent ready");
            if let Some(cpus) = &agent_cpus {
                pin(agent.pid(), cpus);
            }
            out.push(client.measure(CALLS));
            let stopped = agent.stop(Vec::new()).expect("agent stops");
            if set == "capture" {
                // The figure is only the probes' cost if every call was recorded in full.
                assert_eq!(
                    stopped.counter("kernel_ringbuf_full"),
                    0,
                    "the ring buffer overflowed: {}",
                    stopped.stderr
                );
                assert!(
                    stopped.counter("kernel_calls") >= 2 * CALLS,
                    "the probes did not see the calls: {}",
                    stopped.stderr
                );
            }
        }
    }
    let (n, e, r) = (median(&mut none), median(&mut empty), median(&mut real));
    println!(
        "probe_cost: {what}, median of {ROUNDS} rounds of {CALLS} pairs{}",
        bench_cpu.as_deref().map_or(String::new(), |c| format!(
            " (calls on CPU {c}, agent on the others)"
        ))
    );
    println!("  no probes          {n:8.0} ns/call");
    println!("  empty probes       {e:8.0} ns/call  (+{:.0} ns)", e - n);
    println!("  taskless probes    {r:8.0} ns/call  (+{:.0} ns)", r - n);
    println!(
        "  ratio to the empty probes: {:.2}x per call, {:.2}x of the added cost",
        r / e,
        (r - n) / (e - n)
    );
}
