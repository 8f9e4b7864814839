//! `taskless-agent replay` over truncated, corrupted and adversarial recordings and HAR files
//! (no root needed): each gives a clear error, or replays what can be replayed with the rest
//! resynchronised, never a panic, and the replaying process stays within a memory bound (its
//! peak RSS, read from `wait4`, against that of replaying a small recording).

use std::{
    collections::BTreeMap,
    io::{Read as _, Write as _},
    path::Path,
    process::{Command, Stdio},
};

use base64::{Engine as _, engine::general_purpose::STANDARD as BASE64};
use taskless_e2e::harness::{TempDir, agent_bin, dimensions, packs_dir};

const MIB: usize = 1 << 20;

/// What one replay did.
struct Run {
    code: i32,
    stdout: String,
    stderr: String,
    /// Peak resident set of the replaying process, in KiB.
    max_rss_kib: i64,
}

impl Run {
    fn lines(&self) -> Vec<BTreeMap<String, String>> {
        self.stdout
            .lines()
            .map(|l| dimensions(&serde_json::from_str(l).expect("NDJSON line")))
            .collect()
    }
}

/// Runs `taskless-agent replay` with `args` and the built packs; waits with `wait4` to read
/// the child's own peak RSS.
#[allow(clippy::zombie_processes)] // reaped by the `wait4` below, which gives its rusage
fn replay(args: &[&str]) -> Run {
    let packs = packs_dir();
    assert!(
        packs.join("core@0.1.0/manifest.json").exists(),
        "packs not built in {}: run `cargo xtask build-packs`",
        packs.display()
    );
    let mut child = Command::new(agent_bin())
        .arg("replay")
        .args(args)
        .arg("--packs")
        .arg(&packs)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("run taskless-agent replay");
    let mut out = child.stdout.take().expect("piped");
    let mut err = child.stderr.take().expect("piped");
    let reader = std::thread::spawn(move || {
        let mut s = String::new();
        let _ = out.read_to_string(&mut s);
        s
    });
    let mut stderr = String::new();
    let _ = err.read_to_string(&mut stderr);
    let stdout = reader.join().expect("reader");
    let pid = libc::pid_t::try_from(child.id()).expect("pid");
    let mut status = 0;
    // SAFETY: an all-zero rusage is a valid value; wait4 fills it for our own child.
    let mut usage: libc::rusage = unsafe { std::mem::zeroed() };
    // SAFETY: `pid` is our child, not yet waited for; the pointers are to live locals.
    let waited = unsafe { libc::wait4(pid, &raw mut status, 0, &raw mut usage) };
    assert_eq!(waited, pid, "wait4: {}", std::io::Error::last_os_error());
    let code = if libc::WIFEXITED(status) {
        libc::WEXITSTATUS(status)
    } else {
        128 + libc::WTERMSIG(status)
    };
    Run {
        code,
        stdout,
        stderr,
        max_rss_kib: usage.ru_maxrss,
    }
}

/// Asserts a run failed with a clear message, not a crash.
fn assert_clear_error(run: &Run, needle: &str) {
    assert_eq!(run.code, 1, "exit {}: {}", run.code, run.stderr);
    assert!(!run.stderr.contains("panicked"), "{}", run.stderr);
    assert!(
        run.stderr.contains(needle),
        "wanted {needle:?} in: {}",
        run.stderr
    );
    assert!(run.stdout.is_empty());
}

/// One connection file of a recording.
struct Conn {
    lines: Vec<String>,
}

impl Conn {
    fn new(pid: u32, conn: u64) -> Self {
        let meta = serde_json::json!({
            "format": "taskless-agent-recording", "version": 2, "pid": pid, "comm": "client",
            "conn": format!("{conn:#x}"), "unix_offset_ns": 1_700_000_000_000_000_000i64,
        });
        Conn {
            lines: vec![meta.to_string()],
        }
    }

    fn data(&mut self, t: u64, egress: bool, bytes: &[u8]) -> &mut Self {
        let dir = if egress { "egress" } else { "ingress" };
        self.lines.push(format!(
            r#"{{"t":{t},"dir":"{dir}","data":"{}"}}"#,
            BASE64.encode(bytes)
        ));
        self
    }

    fn close(&mut self, t: u64) -> &mut Self {
        self.lines.push(format!(r#"{{"t":{t},"close":true}}"#));
        self
    }

    fn write(&self, dir: &Path, name: &str) {
        let mut f = std::fs::File::create(dir.join(name)).expect("create");
        for l in &self.lines {
            writeln!(f, "{l}").expect("write");
        }
    }
}

fn get(path: &str) -> Vec<u8> {
    format!("GET {path} HTTP/1.1\r\nHost: api.example.com\r\n\r\n").into_bytes()
}

const OK: &[u8] =
    b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: 2\r\n\r\n{}";

/// A small, ordinary recording: the baseline for memory.
fn ordinary(dir: &Path) {
    let mut c = Conn::new(10, 0x1000);
    c.data(1_000, true, &get("/v1/one"))
        .data(2_000, false, OK)
        .close(3_000);
    c.write(dir, "ordinary.jsonl");
}

#[test]
fn truncated_and_corrupted_recordings_are_clear_errors() {
    let dir = TempDir::new("replay-truncated").expect("tempdir");
    let mut c = Conn::new(11, 0x2000);
    c.data(1_000, true, &get("/v1/one")).data(2_000, false, OK);
    c.write(dir.path(), "conn.jsonl");
    // Cut in the middle of its last line, as a crash while recording leaves it.
    let path = dir.path().join("conn.jsonl");
    let text = std::fs::read(&path).expect("read");
    std::fs::write(&path, &text[..text.len() - 20]).expect("write");
    let run = replay(&[&dir.path().display().to_string()]);
    assert_clear_error(&run, "conn.jsonl");
    assert!(run.stderr.contains("conn.jsonl:3:"), "{}", run.stderr);

    // Invalid base64, and bytes that are not UTF-8 at all.
    for (name, bad) in [
        (
            "base64",
            br#"{"t":5,"dir":"egress","data":"@@not base64@@"}"#.to_vec(),
        ),
        ("binary", b"\xff\xfe\x00garbage\x80".to_vec()),
        (
            "metadata",
            br#"{"format":"something else","version":99}"#.to_vec(),
        ),
    ] {
        let dir = TempDir::new("replay-corrupt").expect("tempdir");
        let mut c = Conn::new(12, 0x3000);
        c.data(1_000, true, &get("/v1/one"));
        let mut lines = c.lines.clone();
        if name == "metadata" {
            lines[0] = String::from_utf8(bad.clone()).expect("text");
        }
        let mut f = std::fs::File::create(dir.path().join("c.jsonl")).expect("create");
        for l in &lines {
            writeln!(f, "{l}").expect("write");
        }
        if name != "metadata" {
            f.write_all(&bad).expect("write");
            f.write_all(b"\n").expect("write");
        }
        drop(f);
        let run = replay(&[&dir.path().display().to_string()]);
        assert_clear_error(&run, "c.jsonl");
    }
}

#[test]
fn adversarial_connections_replay_with_bounded_memory() {
    let base_dir = TempDir::new("replay-ordinary").expect("tempdir");
    ordinary(base_dir.path());
    let base = replay(&[&base_dir.path().display().to_string()]);
    assert_eq!(base.code, 0, "{}", base.stderr);
    assert_eq!(base.lines().len(), 1);

    let dir = TempDir::new("replay-hostile").expect("tempdir");
    // A 16 MiB request head, then an ordinary exchange on the same connection.
    let mut giant = b"POST /v1/giant HTTP/1.1\r\nHost: api.example.com\r\nx-big: ".to_vec();
    giant.extend(std::iter::repeat_n(b'v', 16 * MIB));
    giant.extend_from_slice(b"\r\n\r\n");
    let mut c = Conn::new(20, 0x1);
    let mut t = 1_000;
    for piece in giant.chunks(16 << 10) {
        c.data(t, true, piece);
        t += 1;
    }
    c.data(t, true, &get("/v1/after-giant"))
        .data(t + 1, false, OK)
        .close(t + 2);
    c.write(dir.path(), "a-giant-head.jsonl");

    // 200,000 one-byte chunks, each read by its own call.
    let mut c = Conn::new(20, 0x2);
    c.data(1_000, true, &get("/v1/stream")).data(
        1_001,
        false,
        b"HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nTransfer-Encoding: chunked\r\n\r\n",
    );
    for i in 0..200_000u64 {
        c.data(2_000 + i, false, b"1\r\nx\r\n");
    }
    c.data(300_000, false, b"0\r\n\r\n").close(300_001);
    c.write(dir.path(), "b-tiny-chunks.jsonl");

    // A gzip bomb: 256 MiB of zeros in about 250 KiB.
    let mut enc = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::best());
    let zeros = vec![0u8; MIB];
    for _ in 0..256 {
        enc.write_all(&zeros).expect("in memory");
    }
    let bomb = enc.finish().expect("in memory");
    let mut resp = format!(
        "HTTP/1.1 200 OK\r\nContent-Encoding: gzip\r\nContent-Length: {}\r\n\r\n",
        bomb.len()
    )
    .into_bytes();
    resp.extend(&bomb);
    let mut c = Conn::new(20, 0x3);
    c.data(1_000, true, &get("/v1/bomb"));
    for (i, piece) in resp.chunks(16 << 10).enumerate() {
        c.data(2_000 + i as u64, false, piece);
    }
    c.close(900_000);
    c.write(dir.path(), "c-gzip-bomb.jsonl");

    // An HTTP/2 header list bomb (a 4 KB entry referred to 16,000 times: 64 MB of fields).
    let frame = |kind: u8, flags: u8, stream: u32, payload: &[u8]| {
        let len = u32::try_from(payload.len()).expect("small");
        let mut f = len.to_be_bytes()[1..].to_vec();
        f.extend([kind, flags]);
        f.extend(stream.to_be_bytes());
        f.extend_from_slice(payload);
        f
    };
    // A 4,000-byte value: the entry fits the initial 4 KiB table.
    let mut block = vec![0x82, 0x87, 0x84, 0x40, 0x01, b'b', 0x7f, 0xa1, 0x1e];
    block.extend(std::iter::repeat_n(b'x', 4000));
    block.extend(std::iter::repeat_n(0xbe, 16_000));
    let mut client = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n".to_vec();
    client.extend(frame(4, 0, 0, &[]));
    client.extend(frame(1, 0x5, 1, &block));
    let mut c = Conn::new(20, 0x4);
    c.data(1_000, true, &client)
        .data(2_000, false, &frame(4, 0, 0, &[]))
        .data(2_001, false, &frame(1, 0x5, 1, &[0x88]))
        .close(3_000);
    c.write(dir.path(), "d-hpack-bomb.jsonl");

    // Bodies kept for packs are cut at 64 KiB: a pack parsing a 1 MiB body of NUL bytes can
    // reach its time limit, which is not what this test is about.
    let run = replay(&[&dir.path().display().to_string(), "--max-body", "65536"]);
    assert_eq!(run.code, 0, "{}", run.stderr);
    assert!(!run.stderr.contains("panicked"), "{}", run.stderr);
    let mut paths: Vec<String> = run
        .lines()
        .iter()
        .map(|d| {
            format!(
                "{} {}",
                d.get("core/path").map_or("?", String::as_str),
                d.get("core/status").map_or("-", String::as_str)
            )
        })
        .collect();
    paths.sort();
    assert_eq!(
        paths,
        [
            "/ 200",
            "/v1/after-giant 200",
            "/v1/bomb 200",
            "/v1/stream 200"
        ],
        "{}",
        run.stderr
    );
    eprintln!(
        "peak RSS: ordinary recording {} KiB, adversarial recording {} KiB",
        base.max_rss_kib, run.max_rss_kib
    );
    // The adversarial inputs expand to hundreds of MiB; the replay holds a bounded amount more
    // than an ordinary one (the recording itself, about 60 MiB of lines, is read whole).
    assert!(
        run.max_rss_kib < base.max_rss_kib + 256 * 1024,
        "{} KiB against {} KiB",
        run.max_rss_kib,
        base.max_rss_kib
    );
}

#[test]
fn truncated_corrupted_and_adversarial_har_files() {
    let dir = TempDir::new("replay-har").expect("tempdir");
    let good = std::fs::read_to_string(
        std::path::PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("data/stripe.har"),
    )
    .expect("stripe.har");
    let cases: Vec<(&str, Vec<u8>, &str)> = vec![
        (
            "truncated",
            good.as_bytes()[..good.len() / 2].to_vec(),
            "truncated.har",
        ),
        (
            "not utf-8",
            b"{\"log\": \xff\xfe}".to_vec(),
            "not utf-8.har",
        ),
        (
            "deep",
            format!("{{\"log\":{}", "[".repeat(1_000_000)).into_bytes(),
            "deep.har",
        ),
        (
            "not a har",
            br#"{"log":{"entries":"no"}}"#.to_vec(),
            "not a har.har",
        ),
    ];
    for (name, bytes, needle) in cases {
        let path = dir.path().join(format!("{name}.har"));
        std::fs::write(&path, bytes).expect("write");
        let run = replay(&["--har", &path.display().to_string()]);
        assert_clear_error(&run, needle);
    }

    // A HAR whose request body is 20 MiB of nested brackets: replayed, the body given to
    // packs as text (too deep to be JSON), memory bounded.
    let mut har: serde_json::Value = serde_json::from_str(&good).expect("json");
    let deep = "[".repeat(20 * MIB);
    har["log"]["entries"][0]["request"]["postData"] =
        serde_json::json!({"mimeType": "application/json", "text": deep});
    let path = dir.path().join("deep-body.har");
    std::fs::write(&path, har.to_string()).expect("write");
    let run = replay(&["--har", &path.display().to_string()]);
    assert_eq!(run.code, 0, "{}", run.stderr);
    assert_eq!(run.lines().len(), 2, "{}", run.stdout);
    eprintln!("deep-body HAR: peak RSS {} KiB", run.max_rss_kib);
    assert!(run.max_rss_kib < 1024 * 1024, "{} KiB", run.max_rss_kib);
}
