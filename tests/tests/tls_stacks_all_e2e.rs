//! `--all` finds every TLS stack, end to end as root: with one agent watching the whole host,
//! clients on GnuTLS (libcurl-gnutls), NSS, a stripped static OpenSSL and rustls (reqwest), each
//! started after the agent, have every exchange reported once, by their own pid.

use std::{
    process::Command,
    time::{Duration, Instant},
};

use taskless_e2e::{
    clients::{ReadyClient, assert_script, assert_source, gcc, nss_flags, rustls_client},
    harness::{Agent, TempDir, TestApi, matching, packs_dir, require_root},
};

#[test]
fn all_finds_gnutls_nss_static_openssl_and_rustls_programs() {
    require_root();
    let api = TestApi::start().expect("test API");
    let dir = TempDir::new("all-stacks").expect("tempdir");
    let nss = nss_flags().expect("nss flags");
    let nss: Vec<&str> = nss.iter().map(String::as_str).collect();
    let curl_gnutls = gcc(
        "curl_client",
        "curl_client",
        dir.path(),
        &["/usr/lib/x86_64-linux-gnu/libcurl-gnutls.so.4"],
    )
    .expect("gnutls client");
    let nss_client = gcc("nss_client", "nss_client", dir.path(), &nss).expect("nss client");
    let openssl_client = gcc(
        "openssl_client",
        "openssl_client",
        dir.path(),
        &[
            "/usr/lib/x86_64-linux-gnu/libssl.a",
            "/usr/lib/x86_64-linux-gnu/libcrypto.a",
            "-lpthread",
        ],
    )
    .expect("static openssl client");
    assert!(
        Command::new("strip")
            .arg(&openssl_client)
            .status()
            .expect("strip")
            .success()
    );

    let rustls = rustls_client("0.23").expect("rustls client");

    let mut agent = Agent::start(&[
        "--all".to_owned(),
        "--packs".to_owned(),
        packs_dir().display().to_string(),
    ])
    .expect("agent");
    agent
        .wait_for_log("ready", Duration::from_secs(60))
        .expect("agent ready");

    let base = api.server.base_url();
    let port = api.server.addr.port();
    let mut clients = Vec::new();
    for (name, mut cmd, own_file) in [
        ("gnutls", Command::new(&curl_gnutls), false),
        ("nss", Command::new(&nss_client), false),
        ("static-openssl", Command::new(&openssl_client), true),
        ("rustls", Command::new(&rustls), true),
    ] {
        match name {
            "gnutls" | "rustls" => cmd.arg(&base).arg(&api.server.ca_file),
            "nss" => cmd.arg(port.to_string()),
            _ => cmd.arg(port.to_string()).arg(&api.server.ca_file),
        };
        let client = ReadyClient::start(cmd).expect(name);
        if own_file {
            // Its TLS lives in its own executable: attached when the agent examines it.
            agent
                .wait_for_log_with(
                    &[&format!("pid={}", client.pid()), "attached"],
                    Duration::from_secs(10),
                )
                .expect(name);
        }
        clients.push((name, client));
    }
    let mut pids = Vec::new();
    for (name, client) in &mut clients {
        pids.push((*name, client.pid()));
        client.release().expect(name);
    }
    // Each client's last call is its 404; other processes on the host may print lines too.
    let last_seen = |seen: &[String]| {
        pids.iter().all(|(_, pid)| {
            seen.iter().any(|l| {
                serde_json::from_str::<serde_json::Value>(l).is_ok_and(|v| {
                    v["source"]["pid"].as_u64() == Some(u64::from(*pid))
                        && l.contains("/v1/missing")
                })
            })
        })
    };
    let mut seen = Vec::new();
    let deadline = Instant::now() + Duration::from_secs(30);
    while !last_seen(&seen) && Instant::now() < deadline {
        let _ = agent.wait_for_lines(seen.len() + 1, Duration::from_millis(500), &mut seen);
    }
    let out = agent.stop(seen).expect("agent stops");
    for (name, client) in clients {
        client.finish().expect(name);
    }
    for (name, pid) in pids {
        let mine: Vec<serde_json::Value> = out
            .lines
            .iter()
            .filter(|l| l["source"]["pid"].as_u64() == Some(u64::from(pid)))
            // The warm-up call, made before `ready`, is seen when the stack's library was
            // attached up front (a host library): not part of the script.
            .filter(|l| {
                matching(
                    std::slice::from_ref(*l),
                    &[("core/path", "/v1/customers/cus_warmup")],
                )
                .is_empty()
            })
            .cloned()
            .collect();
        assert_eq!(mine.len(), 3, "{name}: {mine:#?}");
        for line in assert_script(&mine, port) {
            assert_source(line, pid, None, port);
        }
    }
}
