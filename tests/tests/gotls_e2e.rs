//! End to end, as root, with the real eBPF programs: Go clients (crypto/tls, net/http) built by
//! every toolchain `cargo xtask setup` installs, normal, stripped and position independent.
//!
//! - Every toolchain × variant: a short run of Go clients over HTTP/1.1 or HTTP/2, every request
//!   captured once with its exact core dimensions, fd and addresses, and the client's output
//!   byte-identical to a run without the agent.
//! - One toolchain per variant: the full scenario (50 goroutines sharing one `http.Client`, a
//!   402 card_error, 200s, a chunked upload, a streamed SSE completion, 1 MiB downloads), over
//!   HTTP/1.1 and over HTTP/2.
//! - A stress run: 50 goroutines for 20 s while the agent attaches and detaches five times.
//!
//! `gotls_watch_e2e.rs` has `--all`, `--follow`, a Go server and a refused Go program.

use std::{sync::Mutex, time::Duration};

use taskless_e2e::{
    goclient::{GoClient, Scenario, agent_for, check_capture, run_alone},
    golang::{self, Toolchain, Variant},
    harness::{TempDir, TestApi, require_root},
};

/// One capture test at a time: they share the machine's two cores with the clients, the test
/// API and the agent, and the figures (durations, ring-buffer load) stay meaningful.
static SERIAL: Mutex<()> = Mutex::new(());

fn client(tc: &Toolchain, variant: Variant) -> std::path::PathBuf {
    golang::build(tc, "client", variant).expect("go build")
}

/// Every toolchain × variant, a short run each (HTTP/2 and HTTP/1.1 in turn).
#[test]
fn go_clients_of_every_toolchain_and_variant_are_captured() {
    require_root();
    let toolchains = golang::toolchains();
    let builds: Vec<(String, std::path::PathBuf)> = toolchains
        .iter()
        .flat_map(|tc| {
            Variant::ALL
                .iter()
                .map(move |v| (format!("{} {}", tc.version, v.name()), client(tc, *v)))
        })
        .collect();
    let _serial = SERIAL
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner);
    for (i, (what, bin)) in builds.iter().enumerate() {
        let proto = if i % 2 == 0 { "h2" } else { "h1" };
        eprintln!("== {what} over {proto}");
        check_capture(
            bin,
            &format!("{what} {proto}"),
            &Scenario {
                proto,
                workers: 8,
                rounds: 1,
                kinds: &["declined", "customer", "chunked"],
                big: 0,
            },
        );
    }
}

const FULL: [&str; 5] = ["ok", "declined", "customer", "chunked", "sse"];

fn full_scenario(tc: &Toolchain, variant: Variant) {
    require_root();
    let bin = client(tc, variant);
    let _serial = SERIAL
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner);
    for proto in ["h1", "h2"] {
        let what = format!("{} {} {proto}", tc.version, variant.name());
        eprintln!("== full scenario: {what}");
        check_capture(
            &bin,
            &what,
            &Scenario {
                proto,
                workers: 50,
                rounds: 1,
                kinds: &FULL,
                big: 3,
            },
        );
    }
}

/// The oldest toolchain, normal build.
#[test]
fn full_scenario_normal_build_of_the_oldest_go() {
    full_scenario(&golang::toolchains()[0], Variant::Normal);
}

/// The newest toolchain, stripped: functions from the Go function table, offsets from the table.
#[test]
fn full_scenario_stripped_build_of_the_newest_go() {
    full_scenario(&golang::newest(), Variant::Stripped);
}

/// A toolchain in between, position independent.
#[test]
fn full_scenario_pie_build_of_a_middle_go() {
    let toolchains = golang::toolchains();
    full_scenario(&toolchains[toolchains.len() / 2], Variant::Pie);
}

/// 50 goroutines for about 20 s while the agent attaches and detaches five times: the client
/// never fails and prints exactly what it prints alone.
#[test]
fn attaching_and_detaching_under_load_never_harms_a_go_client() {
    require_root();
    let tc = golang::newest();
    let bin = client(&tc, Variant::Normal);
    let api = TestApi::start().expect("test API");
    // 50 goroutines × 100 requests, 200 ms apart: about 20 s.
    let args = [
        "-proto",
        "h1",
        "-workers",
        "50",
        "-rounds",
        "50",
        "-kinds",
        "ok,declined",
        "-pace",
        "200",
        "-summary",
    ];
    let alone = run_alone(&bin, &api, &args);
    let empty = TempDir::new("gotls-nopacks").expect("tempdir");

    let _serial = SERIAL
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner);
    let mut client = GoClient::start(&bin, &api, &args);
    let pid = client.pid();
    client.go();
    let started = std::time::Instant::now();
    let mut calls = Vec::new();
    for round in 0..5 {
        let agent = agent_for(pid, empty.path());
        std::thread::sleep(Duration::from_millis(1500));
        let out = agent.stop(Vec::new()).expect("agent stops");
        assert_eq!(out.code, Some(0), "round {round}: {}", out.stderr);
        calls.push(out.counter("kernel_calls"));
        std::thread::sleep(Duration::from_millis(300));
    }
    let attached_for = started.elapsed();
    let watched = client.finish();
    client.exit(&watched);
    assert_eq!(
        watched, alone,
        "the client's output changed under the agent"
    );
    assert!(
        calls.iter().all(|c| *c > 0),
        "every attachment saw calls: {calls:?}"
    );
    eprintln!(
        "5 attach/detach cycles in {:.1} s of a {:.1} s run; calls seen per cycle: {calls:?}",
        attached_for.as_secs_f64(),
        started.elapsed().as_secs_f64()
    );
    assert!(
        watched.lines().count() == 51 && watched.ends_with("done failed=0\n"),
        "{watched}"
    );
}
