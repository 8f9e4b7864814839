//! Misbehaving packs fail alone, are counted, and their instances are re-created.

mod support;

use std::net::TcpListener;
use std::time::{Duration, Instant};

use serde_json::json;
use support::{Behavior, Exchange, captures, config, manifest, module, write_pack};
use taskless_pack_runtime::{FailureKind, PackLimits, PackSet, RuntimeConfig, Session};

/// Loads a folder holding a well-behaved `good` pack and a pack `bad` whose `pre` misbehaves
/// for requests to `/bad` and captures `ok` otherwise.
fn with_bad_pack(
    bad: Behavior,
    config_fn: impl FnOnce(&mut RuntimeConfig),
) -> (tempfile::TempDir, PackSet) {
    let root = tempfile::tempdir().expect("tempdir");
    let good = module(&[("pre", captures(json!({"fine": "yes"})))]);
    write_pack(
        root.path(),
        "a-good",
        &manifest("good", Some(&["pre"])),
        &config(),
        &good,
    );
    let bad = module(&[(
        "pre",
        Behavior::IfInput(
            "/bad".into(),
            Box::new(bad),
            Box::new(captures(json!({"ok": "yes"}))),
        ),
    )]);
    write_pack(
        root.path(),
        "b-bad",
        &manifest("bad", Some(&["pre"])),
        &config(),
        &bad,
    );
    let mut rc = RuntimeConfig {
        timeout: Duration::from_millis(300),
        ..RuntimeConfig::default()
    };
    config_fn(&mut rc);
    let (set, refused) = PackSet::load_dir(root.path(), &rc).expect("dir usable");
    assert!(refused.is_empty(), "{refused:?}");
    (root, set)
}

/// Runs pre for `/bad` then `/fine` and checks the failure was contained and counted.
fn assert_contained(set: &PackSet, kind: FailureKind) {
    let mut worker = set.worker().expect("worker");
    let bad = Exchange::new("h.example", "/bad");
    let session = Session::start(&mut worker, &bad.request_before_response());
    let names: Vec<_> = session
        .dimensions()
        .iter()
        .map(|d| d.name.clone())
        .collect();
    assert_eq!(names, vec!["good/fine"], "only the good pack captured");
    let stats = set.stats();
    assert_eq!(stats[1].failures_of(kind), 1, "{:?}", stats[1]);
    assert_eq!(stats[1].failures_total(), 1, "{:?}", stats[1]);
    assert_eq!(stats[0].failures_total(), 0);

    // The same worker goes on: the next request to the bad pack works.
    let fine = Exchange::new("h.example", "/fine");
    let session = Session::start(&mut worker, &fine.request_before_response());
    let names: Vec<_> = session
        .dimensions()
        .iter()
        .map(|d| d.name.clone())
        .collect();
    assert_eq!(names, vec!["good/fine", "bad/ok"]);
    assert_eq!(set.stats()[1].calls, 2);
}

#[test]
fn an_infinite_loop_times_out_and_the_instance_is_recreated() {
    let (_root, set) = with_bad_pack(Behavior::Loop, |_| {});
    let started = Instant::now();
    assert_contained(&set, FailureKind::Timeout);
    assert!(started.elapsed() < Duration::from_secs(5));
    assert_eq!(set.stats()[1].instances_recreated, 1);
}

#[test]
fn fuel_stops_a_loop_before_the_timeout() {
    let (_root, set) = with_bad_pack(Behavior::Loop, |c| {
        c.timeout = Duration::from_secs(30);
        c.fuel = Some(5_000_000);
    });
    let started = Instant::now();
    assert_contained(&set, FailureKind::Fuel);
    assert!(started.elapsed() < Duration::from_secs(10));
}

#[test]
fn a_memory_bomb_hits_the_cap() {
    let (_root, set) = with_bad_pack(Behavior::MemoryBomb, |c| c.memory_max_pages = 64);
    assert_contained(&set, FailureKind::OutOfMemory);
}

#[test]
fn a_trap_fails_only_that_call() {
    let (_root, set) = with_bad_pack(Behavior::Trap, |_| {});
    assert_contained(&set, FailureKind::Trap);
}

#[test]
fn a_pack_error_is_counted_as_such() {
    let (_root, set) = with_bad_pack(Behavior::Error("nope".into()), |_| {});
    assert_contained(&set, FailureKind::PackError);
}

#[test]
fn huge_output_is_refused() {
    let (_root, set) = with_bad_pack(Behavior::HugeOutput(4 * 1024 * 1024), |_| {});
    assert_contained(&set, FailureKind::OutputTooLarge);
}

#[test]
fn invalid_json_output_is_refused() {
    let (_root, set) = with_bad_pack(Behavior::Output("this is not json".into()), |_| {});
    assert_contained(&set, FailureKind::InvalidOutput);
}

#[test]
fn network_requests_are_refused_and_never_leave_the_host() {
    let listener = TcpListener::bind("127.0.0.1:0").expect("bind");
    listener.set_nonblocking(true).expect("nonblocking");
    let url = format!(
        "http://127.0.0.1:{}/exfiltrate",
        listener.local_addr().expect("addr").port()
    );
    let (_root, set) = with_bad_pack(Behavior::Http(url), |_| {});
    assert_contained(&set, FailureKind::Trap);
    assert!(
        listener.accept().is_err(),
        "the pack must not have connected to the listener"
    );
}

#[test]
fn per_pack_limits_override_the_runtime_ones() {
    // The runtime-wide timeout is long; the bad pack's own is short.
    let (_root, set) = with_bad_pack(Behavior::Loop, |c| {
        c.timeout = Duration::from_secs(60);
        c.overrides.insert(
            "bad".into(),
            PackLimits {
                timeout: Some(Duration::from_millis(100)),
                ..PackLimits::default()
            },
        );
    });
    assert_eq!(set.packs()[1].limits.timeout, Duration::from_millis(100));
    assert_eq!(set.packs()[0].limits.timeout, Duration::from_secs(60));
    let started = Instant::now();
    assert_contained(&set, FailureKind::Timeout);
    assert!(started.elapsed() < Duration::from_secs(10));
}

/// Extism's timeout bumps the epoch of the engine the instance was compiled in, which kills
/// every call running in that engine at that moment. Workers each have their own engine, so a
/// pack timing out in one worker leaves a long, legitimate call of the same pack in another
/// worker alone.
#[test]
fn a_timeout_in_one_worker_does_not_kill_a_concurrent_call_in_another() {
    let root = tempfile::tempdir().expect("tempdir");
    let pack = module(&[(
        "pre",
        Behavior::IfInput(
            "/loop".into(),
            Box::new(Behavior::Loop),
            Box::new(Behavior::SpinMs(
                800,
                json!({"capture": {"spun": "yes"}}).to_string(),
            )),
        ),
    )]);
    write_pack(
        root.path(),
        "p",
        &manifest("slow", Some(&["pre"])),
        &config(),
        &pack,
    );
    let rc = RuntimeConfig {
        timeout: Duration::from_millis(1000),
        ..RuntimeConfig::default()
    };
    let (set, refused) = PackSet::load_dir(root.path(), &rc).expect("dir usable");
    assert!(refused.is_empty(), "{refused:?}");
    let mut looping = set.worker().expect("worker 1");
    let mut spinning = set.worker().expect("worker 2");

    std::thread::scope(|s| {
        let a = s.spawn(move || {
            let ex = Exchange::new("h.example", "/loop");
            let session = Session::start(&mut looping, &ex.request_before_response());
            session.dimensions().len()
        });
        let b = s.spawn(move || {
            // Start while the loop runs, so the loop's timeout (at 1000 ms) falls inside
            // this 800 ms call (400..1200 ms), well before this call's own deadline.
            std::thread::sleep(Duration::from_millis(400));
            let ex = Exchange::new("h.example", "/spin");
            Session::start(&mut spinning, &ex.request_before_response()).into_line()
        });
        assert_eq!(a.join().expect("thread a"), 0);
        let line = b.join().expect("thread b");
        assert_eq!(
            line.dimensions.len(),
            1,
            "the spinning call survived: {line:?}"
        );
        assert_eq!(line.dimensions[0].name, "slow/spun");
    });
    let stats = set.stats();
    assert_eq!(stats[0].calls, 2);
    assert_eq!(
        stats[0].failures_of(FailureKind::Timeout),
        1,
        "{:?}",
        stats[0]
    );
    assert_eq!(stats[0].failures_total(), 1);
}

/// Each call has its own deadline: calls of 10 ms made back to back on one instance for five
/// times a 50 ms timeout are never stopped, and a call past its own deadline still is.
#[test]
fn every_call_gets_its_own_deadline() {
    let spin = Behavior::SpinMs(10, json!({"capture": {"spun": "yes"}}).to_string());
    let (_root, set) = with_bad_pack(spin, |c| {
        c.timeout = Duration::from_millis(50);
    });
    let mut worker = set.worker().expect("worker");
    let slow = Exchange::new("h.example", "/bad");
    let started = Instant::now();
    let mut calls = 0;
    while started.elapsed() < Duration::from_millis(250) {
        let session = Session::start(&mut worker, &slow.request_before_response());
        assert_eq!(
            session.dimensions().len(),
            2,
            "call {calls}: {:?}",
            set.stats()
        );
        calls += 1;
    }
    assert_eq!(set.stats()[1].failures_total(), 0, "{:?}", set.stats());
    assert!(calls >= 10, "{calls} calls");
    drop(worker);

    let (_root, set) = with_bad_pack(Behavior::SpinMs(200, "{}".into()), |c| {
        c.timeout = Duration::from_millis(50);
    });
    let mut worker = set.worker().expect("worker");
    let _ = Session::start(&mut worker, &slow.request_before_response());
    assert_eq!(set.stats()[1].failures_of(FailureKind::Timeout), 1);
}

/// Extism's timer thread is not told when a call starts: it sleeps until the earliest armed
/// deadline and never longer than the shortest timeout. A call that loops after each of several
/// quiet spells is still stopped at its timeout. A timer that slept until a message came (or
/// until an armed deadline only) would never stop it (the test gives up on it after 10 s).
#[test]
fn a_call_after_a_quiet_spell_is_still_stopped_at_its_timeout() {
    let (_root, set) = with_bad_pack(Behavior::Loop, |c| {
        c.timeout = Duration::from_millis(50);
    });
    let (tx, rx) = std::sync::mpsc::channel();
    let handle = std::thread::spawn(move || {
        let mut worker = set.worker().expect("worker");
        let fine = Exchange::new("h.example", "/fine");
        let bad = Exchange::new("h.example", "/bad");
        for _ in 0..3 {
            let _ = Session::start(&mut worker, &fine.request_before_response());
            std::thread::sleep(Duration::from_millis(400));
            let started = Instant::now();
            let _ = Session::start(&mut worker, &bad.request_before_response());
            tx.send(started.elapsed()).expect("send");
        }
        set.stats()[1].failures_of(FailureKind::Timeout)
    });
    for round in 0..3 {
        let took = rx
            .recv_timeout(Duration::from_secs(10))
            .unwrap_or_else(|_| panic!("round {round}: the looping call was never stopped"));
        assert!(took >= Duration::from_millis(50), "round {round}: {took:?}");
        assert!(took < Duration::from_secs(2), "round {round}: {took:?}");
    }
    assert_eq!(handle.join().expect("worker thread"), 3);
}
