//! OpenSSL 1.1.1 and OpenSSL 3 side by side in one process, end to end as root: Python makes one
//! call through its own `ssl` module (the system's libssl 3) and one through a libssl 1.1.1
//! loaded with ctypes (the copy bundled by a popular database driver's wheel, which `cargo xtask
//! setup` fetches), as a service using that driver does. The agent must attach both libraries
//! and report both exchanges.

use std::{
    io::{BufRead as _, Write as _},
    process::{Command, Stdio},
    time::Duration,
};

use taskless_e2e::harness::{
    Agent, KillOnDrop, TempDir, TestApi, matching, openssl11_dir, packs_dir, require_root,
};

/// Drives libssl 1.1.1 by hand (socket BIO, SNI, certificate check), then makes a call with the
/// `ssl` module.
const CLIENT: &str = r#"
import ctypes, glob, http.client, os, socket, ssl, sys
libdir, port, ca = sys.argv[1], int(sys.argv[2]), sys.argv[3]
one = lambda pattern: glob.glob(os.path.join(libdir, pattern))[0]
ctypes.CDLL(one("libcrypto-*.so.1.1"), mode=ctypes.RTLD_GLOBAL)
s11 = ctypes.CDLL(one("libssl-*.so.1.1"))
P = ctypes.c_void_p
s11.TLS_client_method.restype = P
s11.SSL_CTX_new.restype, s11.SSL_CTX_new.argtypes = P, [P]
s11.SSL_CTX_load_verify_locations.argtypes = [P, ctypes.c_char_p, ctypes.c_char_p]
s11.SSL_CTX_set_verify.argtypes = [P, ctypes.c_int, P]
s11.SSL_new.restype, s11.SSL_new.argtypes = P, [P]
s11.SSL_ctrl.restype, s11.SSL_ctrl.argtypes = ctypes.c_long, [P, ctypes.c_int, ctypes.c_long, ctypes.c_char_p]
s11.SSL_set_fd.argtypes = [P, ctypes.c_int]
s11.SSL_connect.argtypes = [P]
s11.SSL_write.argtypes = [P, ctypes.c_char_p, ctypes.c_int]
s11.SSL_read.argtypes = [P, ctypes.c_char_p, ctypes.c_int]
s11.SSL_free.argtypes = [P]
print("ready", flush=True)
sys.stdin.readline()

ctx = s11.SSL_CTX_new(s11.TLS_client_method())
assert s11.SSL_CTX_load_verify_locations(ctx, ca.encode(), None) == 1
s11.SSL_CTX_set_verify(ctx, 1, None)
conn = s11.SSL_new(ctx)
s11.SSL_ctrl(conn, 55, 0, b"localhost")  # SSL_set_tlsext_host_name
sock = socket.create_connection(("localhost", port))
s11.SSL_set_fd(conn, sock.fileno())
assert s11.SSL_connect(conn) == 1, "handshake with libssl 1.1.1 failed"
req = b"GET /v1/customers/cus_openssl11 HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n"
assert s11.SSL_write(conn, req, len(req)) == len(req)
buf, got = ctypes.create_string_buffer(65536), b""
while True:
    n = s11.SSL_read(conn, buf, len(buf))
    if n <= 0:
        break
    got += buf.raw[:n]
s11.SSL_free(conn)
sock.close()
print(got.split(b"\r\n")[0].decode(), flush=True)

c = http.client.HTTPSConnection("localhost", port, context=ssl.create_default_context(cafile=ca))
c.request("GET", "/v1/customers/cus_openssl3"); r = c.getresponse(); r.read(); c.close()
print(ssl.OPENSSL_VERSION, r.status, flush=True)
sys.stdin.readline()
"#;

#[test]
fn openssl_1_1_and_3_in_one_process_are_both_seen() {
    require_root();
    let libdir = openssl11_dir();
    let api = TestApi::start().expect("test API");
    let dir = TempDir::new("openssl11").expect("tempdir");
    let script = dir.path().join("client.py");
    std::fs::write(&script, CLIENT).expect("script");
    let mut py = KillOnDrop(
        Command::new("python3")
            .arg(&script)
            .arg(&libdir)
            .arg(api.server.addr.port().to_string())
            .arg(&api.server.ca_file)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .spawn()
            .expect("python3"),
    );
    let mut stdout = std::io::BufReader::new(py.0.stdout.take().expect("stdout"));
    let mut line = String::new();
    stdout.read_line(&mut line).expect("ready");
    assert_eq!(line.trim(), "ready", "client failed to start");

    let pid = py.0.id().to_string();
    let mut agent = Agent::start(&["--pid", &pid, "--packs", &packs_dir().display().to_string()])
        .expect("agent");
    agent
        .wait_for_log("ready", Duration::from_secs(60))
        .expect("agent ready");
    let attached = agent.stderr_snapshot();
    for lib in ["libssl.so.3", ".so.1.1"] {
        assert!(
            attached
                .lines()
                .any(|l| l.contains("attached") && l.contains(lib)),
            "{lib} attached:\n{attached}"
        );
    }
    py.0.stdin
        .as_mut()
        .expect("stdin")
        .write_all(b"go\n")
        .expect("release");
    let mut client = Vec::new();
    for _ in 0..2 {
        line.clear();
        stdout.read_line(&mut line).expect("client output");
        client.push(line.trim().to_owned());
    }
    assert_eq!(client[0], "HTTP/1.1 200 OK", "{client:?}");
    assert!(
        client[1].starts_with("OpenSSL 3") && client[1].ends_with(" 200"),
        "{client:?}"
    );

    let mut seen = Vec::new();
    agent
        .wait_for_lines(2, Duration::from_secs(30), &mut seen)
        .expect("two exchanges");
    let out = agent.stop(seen).expect("agent stops");
    py.0.stdin
        .as_mut()
        .expect("stdin")
        .write_all(b"exit\n")
        .expect("let python exit");
    for path in ["/v1/customers/cus_openssl11", "/v1/customers/cus_openssl3"] {
        let hits = matching(&out.lines, &[("core/path", path), ("core/status", "200")]);
        assert_eq!(hits.len(), 1, "{path}: {:#?}", out.lines);
        assert_eq!(hits[0]["source"]["serverName"], "localhost", "{}", hits[0]);
        assert!(hits[0]["source"]["fd"].is_number(), "{}", hits[0]);
    }
}
