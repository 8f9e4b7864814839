//! End to end, as root: Go programs found by `--all` and `--follow`, a Go server watched on the
//! server side, and a Go program that cannot be watched.

use std::{
    collections::BTreeMap,
    io::{BufRead as _, BufReader, Write as _},
    process::{Command, Stdio},
    sync::Mutex,
    time::Duration,
};

use base64::Engine as _;
use taskless_e2e::{
    goclient::{GoClient, READY, Scenario, check_lines},
    golang::{self, Toolchain, Variant},
    harness::{Agent, KillOnDrop, TempDir, TestApi, dimensions, packs_dir, require_root},
};

/// One test at a time: they share the machine's two cores with the clients and the agent.
static SERIAL: Mutex<()> = Mutex::new(());

fn client(tc: &Toolchain, variant: Variant) -> std::path::PathBuf {
    golang::build(tc, "client", variant).expect("go build")
}

/// With `--all`, a Go program started after the agent is attached as it starts (the exec event),
/// and its calls are captured like any other's.
#[test]
fn all_attaches_to_a_go_program_as_it_starts() {
    require_root();
    let bin = client(&golang::newest(), Variant::Stripped);
    let api = TestApi::start().expect("test API");
    let _serial = SERIAL
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner);
    let mut agent = Agent::start(&[
        "--all".to_owned(),
        "--packs".to_owned(),
        packs_dir().display().to_string(),
    ])
    .expect("agent");
    agent.wait_for_log("ready", READY).expect("agent ready");
    let scenario = Scenario {
        proto: "h2",
        workers: 4,
        rounds: 1,
        kinds: &["declined", "customer"],
        big: 0,
    };
    let args = scenario.args();
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    let mut client = GoClient::start(&bin, &api, &args);
    let pid = client.pid();
    agent
        .wait_for_log(&format!("pid={pid} "), Duration::from_secs(10))
        .expect("the new Go program is attached");
    client.go();
    let printed = client.finish();
    // Other processes on the machine may make TLS calls too: only this client's lines count.
    let mut seen = Vec::new();
    let want = scenario.expected(api.server.addr.port()).len();
    let deadline = std::time::Instant::now() + Duration::from_secs(60);
    while seen
        .iter()
        .filter(|l: &&String| l.contains(&format!("\"pid\":{pid},")))
        .count()
        < want
        && std::time::Instant::now() < deadline
    {
        let _ = agent.wait_for_lines(seen.len() + 1, Duration::from_millis(500), &mut seen);
    }
    let out = agent.stop(seen).expect("agent stops");
    let mine: Vec<&serde_json::Value> = out
        .lines
        .iter()
        .filter(|l| l["source"]["pid"].as_u64() == Some(u64::from(pid)))
        .collect();
    let mut got: Vec<BTreeMap<String, String>> = mine
        .iter()
        .map(|l| {
            dimensions(l)
                .into_iter()
                .filter(|(k, _)| k.starts_with("core/") && k != "core/durationMs")
                .collect()
        })
        .collect();
    got.sort();
    assert_eq!(
        got,
        scenario.expected(api.server.addr.port()),
        "{}",
        out.stderr
    );
    client.exit(&printed);
}

/// With `--follow`, a Go program a watched shell starts is attached, and its calls captured.
#[test]
fn follow_attaches_to_a_go_child() {
    require_root();
    let bin = client(&golang::toolchains()[0], Variant::Pie);
    let api = TestApi::start().expect("test API");
    let scenario = Scenario {
        proto: "h1",
        workers: 4,
        rounds: 1,
        kinds: &["declined", "customer"],
        big: 0,
    };
    let _serial = SERIAL
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner);
    let mut shell = KillOnDrop(
        Command::new("sh")
            .args(["-c", "read start; \"$0\" \"$@\""])
            .arg(&bin)
            .args(["-base", &api.server.base_url(), "-ca"])
            .arg(&api.server.ca_file)
            .args(scenario.args())
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .spawn()
            .expect("sh"),
    );
    let mut agent = Agent::start(&[
        "--pid".to_owned(),
        shell.0.id().to_string(),
        "--follow".to_owned(),
        "--packs".to_owned(),
        packs_dir().display().to_string(),
    ])
    .expect("agent");
    agent.wait_for_log("ready", READY).expect("agent ready");
    let mut stdin = shell.0.stdin.take().expect("stdin");
    let mut stdout = BufReader::new(shell.0.stdout.take().expect("stdout"));
    stdin.write_all(b"start\n").expect("start the client");
    let mut line = String::new();
    stdout.read_line(&mut line).expect("client ready");
    assert_eq!(line.trim(), "ready");
    agent
        .wait_for_log("stack=\"Go crypto/tls\" library=", Duration::from_secs(10))
        .expect("the Go child is attached");
    stdin.write_all(b"go\n").expect("release the client");
    let mut printed = String::new();
    while !printed.contains("done failed=0") {
        let mut line = String::new();
        let n = stdout.read_line(&mut line).expect("client output");
        assert!(n > 0, "the client ended early: {printed}");
        printed.push_str(&line);
    }
    let child = agent
        .stderr_snapshot()
        .lines()
        .find(|l| l.contains("stack=\"Go crypto/tls\" library="))
        .and_then(|l| l.split("pid=").nth(1))
        .and_then(|p| p.split(' ').next())
        .and_then(|p| p.parse().ok())
        .expect("the child's pid in the attach line");
    check_lines(agent, "follow", child, api.server.addr.port(), &scenario);
    drop(stdin);
    assert!(shell.0.wait().expect("exit").success(), "{printed}");
}

/// A Go HTTPS server watched on the server side: Go clients' requests and the server's answers are
/// captured on the server's own connections (fd and addresses included).
#[test]
fn a_go_server_is_captured_on_the_server_side() {
    require_root();
    let tc = golang::newest();
    let bin = golang::build(&tc, "server", Variant::Stripped).expect("go build");
    let dir = TempDir::new("gotls-server").expect("tempdir");
    let ca = dir.path().join("ca.pem");
    let mut server = KillOnDrop(
        Command::new(&bin)
            .arg("-ca")
            .arg(&ca)
            .stdout(Stdio::piped())
            .spawn()
            .expect("go server"),
    );
    let mut line = String::new();
    BufReader::new(server.0.stdout.take().expect("stdout"))
        .read_line(&mut line)
        .expect("server listening");
    let port: u16 = line
        .trim()
        .strip_prefix("listening ")
        .and_then(|p| p.parse().ok())
        .unwrap_or_else(|| panic!("unexpected server line {line:?}"));

    let _serial = SERIAL
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner);
    let record = dir.path().join("record");
    let mut agent = Agent::start(&[
        "--pid".to_owned(),
        server.0.id().to_string(),
        "--packs".to_owned(),
        packs_dir().display().to_string(),
        "--record".to_owned(),
        record.display().to_string(),
    ])
    .expect("agent");
    agent.wait_for_log("ready", READY).expect("agent ready");
    // Go clients against the Go server, over HTTP/1.1 and HTTP/2, each keeping its connection
    // open until the agent has stopped (the agent reads addresses from /proc).
    let mut clients = Vec::new();
    let client_bin = client(&tc, Variant::Normal);
    for proto in ["h1", "h2"] {
        let mut c = KillOnDrop(
            Command::new(&client_bin)
                .args(["-base", &format!("https://localhost:{port}"), "-ca"])
                .arg(&ca)
                .args([
                    "-proto",
                    proto,
                    "-workers",
                    "1",
                    "-kinds",
                    "declined,customer",
                ])
                .stdin(Stdio::piped())
                .stdout(Stdio::piped())
                .spawn()
                .expect("go client"),
        );
        let mut out = BufReader::new(c.0.stdout.take().expect("stdout"));
        let mut line = String::new();
        out.read_line(&mut line).expect("client ready");
        c.0.stdin
            .as_mut()
            .expect("stdin")
            .write_all(b"go\n")
            .expect("release client");
        let mut printed = String::new();
        while !printed.contains("done ") {
            line.clear();
            assert!(
                out.read_line(&mut line).expect("client output") > 0,
                "{printed}"
            );
            printed.push_str(&line);
        }
        assert!(printed.contains("declined status=402"), "{printed}");
        clients.push(c);
    }
    std::thread::sleep(Duration::from_millis(500));
    let out = agent.stop(Vec::new()).expect("agent stops");
    assert_eq!(out.code, Some(0), "{}", out.stderr);
    drop(clients);

    // Each client has one connection: its file holds what the server read and wrote.
    let mut ingress = Vec::new();
    let mut egress = Vec::new();
    let mut sources = Vec::new();
    for entry in std::fs::read_dir(&record).expect("recording") {
        let text = std::fs::read_to_string(entry.expect("entry").path()).expect("file");
        let (mut i, mut e) = (Vec::new(), Vec::new());
        for l in text.lines().skip(1) {
            let v: serde_json::Value = serde_json::from_str(l).expect("json line");
            if let Some(data) = v["data"].as_str() {
                let bytes = base64::engine::general_purpose::STANDARD
                    .decode(data)
                    .expect("base64");
                match v["dir"].as_str() {
                    Some("ingress") => i.extend(bytes),
                    _ => e.extend(bytes),
                }
            }
            if v.get("source").is_some() {
                sources.push(v["source"].clone());
            }
        }
        ingress.push(String::from_utf8_lossy(&i).into_owned());
        egress.push(String::from_utf8_lossy(&e).into_owned());
    }
    let h1 = ingress
        .iter()
        .position(|i| i.starts_with("POST /v1/charges HTTP/1.1"))
        .unwrap_or_else(|| panic!("the HTTP/1.1 request as the server read it: {ingress:?}"));
    assert!(
        ingress[h1].contains("amount=500&source=tok_chargeDeclined"),
        "{}",
        ingress[h1]
    );
    assert!(ingress[h1].contains("GET /v1/customers/cus_00 HTTP/1.1"));
    assert!(
        egress[h1].starts_with("HTTP/1.1 402 Payment Required"),
        "{}",
        egress[h1]
    );
    assert!(egress[h1].contains("card_error"));
    assert!(
        ingress
            .iter()
            .any(|i| i.starts_with("PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n")),
        "the HTTP/2 preface as the server read it: {ingress:?}"
    );
    assert!(!sources.is_empty());
    for s in &sources {
        assert!(s["fd"].as_i64().is_some_and(|fd| fd >= 0), "{s}");
        assert_eq!(
            s["localAddress"].as_str(),
            Some(format!("127.0.0.1:{port}").as_str())
        );
        assert!(
            s["remoteAddress"]
                .as_str()
                .is_some_and(|a| a.starts_with("127.0.0.1:"))
        );
    }
}

/// Starts `bin` (a test program that prints a line and waits for stdin), then runs `--pid` on it;
/// returns the agent's stderr, checking that it failed and left the program running.
fn refused(bin: &std::path::Path) -> (u32, String) {
    let mut target = KillOnDrop(
        Command::new(bin)
            .args(["-base", "https://localhost:1", "-ca", "/dev/null"])
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .spawn()
            .expect("target"),
    );
    let mut line = String::new();
    BufReader::new(target.0.stdout.take().expect("stdout"))
        .read_line(&mut line)
        .expect("target ready");
    let pid = target.0.id();
    let out = Command::new(taskless_e2e::harness::agent_bin())
        .args(["--require-tls", "--pid", &pid.to_string(), "--packs"])
        .arg(packs_dir())
        .output()
        .expect("agent");
    assert!(!out.status.success());
    assert!(
        target.0.try_wait().expect("status").is_none(),
        "the target must keep running"
    );
    (pid, String::from_utf8_lossy(&out.stderr).into_owned())
}

/// A Go program without crypto/tls is a program without TLS: `--pid` says what was searched.
#[test]
fn a_go_program_without_crypto_tls_is_not_a_tls_program() {
    require_root();
    let bin = golang::build(&golang::newest(), "hello", Variant::Stripped).expect("go build");
    let (pid, e) = refused(&bin);
    assert!(
        e.contains(&format!("no TLS library found in pid {pid} ("))
            && e.contains("Go's crypto/tls"),
        "{e}"
    );
}

/// A Go program whose build info names Go 1.16 (a real client whose version string was changed:
/// no Go 1.16 toolchain is at hand) is refused with what was found, and left alone.
#[test]
fn a_go_program_built_before_go_1_17_is_refused_saying_so() {
    require_root();
    let tc = golang::newest();
    let mut data = std::fs::read(client(&tc, Variant::Normal)).expect("client");
    let magic = b"\xff Go buildinf:";
    let info = data
        .windows(magic.len())
        .position(|w| w == magic)
        .expect("build info");
    let release = format!("go1.{}", tc.minor());
    let at = data[info..info + 64]
        .windows(release.len())
        .position(|w| w == release.as_bytes())
        .expect("version in the build info")
        + info;
    data[at..at + release.len()].copy_from_slice(b"go1.16");
    let dir = TempDir::new("gotls-old").expect("tempdir");
    let bin = dir.path().join("old-client");
    std::fs::write(&bin, &data).expect("write");
    std::fs::set_permissions(&bin, std::os::unix::fs::PermissionsExt::from_mode(0o755))
        .expect("chmod");
    let (pid, e) = refused(&bin);
    assert!(
        e.contains(&format!("pid {pid} (old-client) cannot be watched"))
            && e.contains("Go crypto/tls")
            && e.contains("go1.16")
            && e.contains("supported from Go 1.17"),
        "{e}"
    );
}
