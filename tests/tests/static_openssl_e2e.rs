//! End to end, as root, with the real eBPF programs: a C client linked against the static
//! `libssl.a` (Debian's libssl-dev), with its symbol table and stripped. Not stripped, its
//! `SSL_write`/`SSL_read` are found by name; stripped, by the byte signatures the agent took
//! from that same `libssl.a` when it was built. Both must report every exchange once with the
//! core pack's exact dimensions, the socket and its addresses.

use std::process::Command;

use taskless_e2e::{
    clients::{ReadyClient, agent_for, assert_script, assert_source, gcc, socket_fds},
    harness::{TempDir, TestApi, require_root},
};

const LIBSSL_A: &str = "/usr/lib/x86_64-linux-gnu/libssl.a";
const LIBCRYPTO_A: &str = "/usr/lib/x86_64-linux-gnu/libcrypto.a";

fn run(stripped: bool) {
    require_root();
    let api = TestApi::start().expect("test API");
    let dir = TempDir::new("static-openssl").expect("tempdir");
    let client = gcc(
        "openssl_client",
        "openssl_client",
        dir.path(),
        &[LIBSSL_A, LIBCRYPTO_A, "-lpthread"],
    )
    .expect("build the static OpenSSL client (`cargo xtask setup` installs libssl-dev)");
    if stripped {
        let s = Command::new("strip").arg(&client).status().expect("strip");
        assert!(s.success());
        let nm = Command::new("nm").arg(&client).output().expect("nm");
        assert!(
            String::from_utf8_lossy(&nm.stderr).contains("no symbols"),
            "stripped"
        );
    }
    let port = api.server.addr.port();
    let mut cmd = Command::new(&client);
    cmd.arg(port.to_string()).arg(&api.server.ca_file);
    let mut client = ReadyClient::start(cmd).expect("client ready");
    let pid = client.pid();
    let fds = socket_fds(pid, api.server.addr.port());
    assert_eq!(fds.len(), 1, "{fds:?}");

    let mut agent = agent_for(&[pid], &[]).expect("agent");
    let printed = client.release().expect("client runs");
    assert_eq!(printed.trim(), "200 402 404", "the client's own results");
    let mut seen = Vec::new();
    agent
        .wait_for_lines(3, std::time::Duration::from_secs(30), &mut seen)
        .expect("three exchanges");
    let out = agent.stop(seen).expect("agent stops");
    client.finish().expect("client exits");
    assert_eq!(out.lines.len(), 3, "{:#?}", out.lines);
    for line in assert_script(&out.lines, port) {
        assert_source(line, pid, Some(fds[0]), port);
        assert_eq!(line["source"]["serverName"], "localhost", "{line}");
    }
    let stack = if stripped {
        "stack=\"OpenSSL (static)\""
    } else {
        "stack=\"OpenSSL\""
    };
    assert!(out.stderr.contains(stack), "{}", out.stderr);
    assert!(out.stderr.contains("flavour=Executable"), "{}", out.stderr);
}

#[test]
fn static_openssl_with_symbols_is_found_by_name() {
    run(false);
}

#[test]
fn stripped_static_openssl_is_found_by_signature() {
    run(true);
}

/// A stripped executable whose OpenSSL build the agent has no signature for is refused with an
/// error that names what was found and why.
#[test]
fn stripped_static_openssl_of_an_unknown_build_is_named() {
    require_root();
    let api = TestApi::start().expect("test API");
    let dir = TempDir::new("static-openssl-unknown").expect("tempdir");
    let client = gcc(
        "openssl_client",
        "openssl_client",
        dir.path(),
        &[LIBSSL_A, LIBCRYPTO_A, "-lpthread"],
    )
    .expect("build");
    // Make SSL_write and SSL_read differ from every known build without changing what they do:
    // `xor %edx,%edx` has two encodings (31 d2 and 33 d2).
    let nm = Command::new("nm")
        .arg("-S")
        .arg(&client)
        .output()
        .expect("nm");
    let nm = String::from_utf8_lossy(&nm.stdout).into_owned();
    let mut bytes = std::fs::read(&client).expect("read");
    for name in ["SSL_write", "SSL_read"] {
        let (addr, size) = nm
            .lines()
            .find_map(|l| {
                let f: Vec<&str> = l.split_whitespace().collect();
                (f.len() == 4 && f[3] == name).then(|| {
                    (
                        usize::from_str_radix(f[0], 16).expect("address"),
                        usize::from_str_radix(f[1], 16).expect("size"),
                    )
                })
            })
            .expect("symbol");
        // gcc's PIE maps its code at the file offset it has in the file.
        let code = &mut bytes[addr..addr + size];
        let at = code
            .windows(4)
            .position(|w| w == [0x31, 0xd2, 0x31, 0xc9])
            .unwrap_or_else(|| panic!("{name}: xor %edx,%edx; xor %ecx,%ecx"));
        code[at] = 0x33;
    }
    std::fs::write(&client, &bytes).expect("write");
    let s = Command::new("strip").arg(&client).status().expect("strip");
    assert!(s.success());
    let port = api.server.addr.port();
    let mut cmd = Command::new(&client);
    cmd.arg(port.to_string()).arg(&api.server.ca_file);
    let mut client = ReadyClient::start(cmd).expect("the patched client still works");
    let o = Command::new(taskless_e2e::harness::agent_bin())
        .args(["--pid", &client.pid().to_string()])
        .output()
        .expect("agent");
    let e = String::from_utf8_lossy(&o.stderr);
    assert!(!o.status.success(), "{e}");
    assert!(e.contains("OpenSSL 3"), "names the stack: {e}");
    assert!(
        e.contains("linked in statically without symbols"),
        "says why: {e}"
    );
    assert!(e.contains("match none of the signatures"), "{e}");
    assert_eq!(client.release().expect("client").trim(), "200 402 404");
}
