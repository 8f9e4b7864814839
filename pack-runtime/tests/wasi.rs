//! Packs that import WASI (as Extism's JS toolchain builds them) run with WASI on, but with no
//! files, a stdout that discards everything, and no way to sleep.

mod support;

use std::time::{Duration, Instant};

use support::{Behavior, Exchange, config, manifest, module, write_pack};
use taskless_pack_runtime::{PackSet, RuntimeConfig, Session};

#[test]
fn a_wasi_pack_gets_clocks_and_randomness_but_no_files_and_no_sleep() {
    let root = tempfile::tempdir().expect("tempdir");
    let wasm = module(&[("pre", Behavior::WasiProbe)]);
    write_pack(
        root.path(),
        "probe",
        &manifest("probe", Some(&["pre"])),
        &config(),
        &wasm,
    );
    let (set, refused) = PackSet::load_dir(root.path(), &RuntimeConfig::default()).expect("dir");
    assert!(refused.is_empty(), "{refused:?}");
    assert!(set.packs()[0].wasi, "WASI import detected");
    let mut worker = set.worker().expect("worker");
    let ex = Exchange::new("h.example", "/");
    let started = Instant::now();
    let session = Session::start(&mut worker, &ex.request_before_response());
    // poll_oneoff asked for a 5 s sleep; it is refused instead of honoured.
    assert!(started.elapsed() < Duration::from_secs(4));
    let got: Vec<_> = session
        .dimensions()
        .iter()
        .map(|d| (d.name.as_str(), d.value.as_str()))
        .collect();
    assert_eq!(
        got,
        vec![
            ("probe/clock", "00"),  // clock_time_get: success
            ("probe/open", "08"),   // path_open on fd 3: EBADF, nothing is preopened
            ("probe/poll", "58"),   // poll_oneoff: ENOTSUP
            ("probe/random", "00"), // random_get: success
            ("probe/timeok", "01"), // the realtime clock reads after 2020
            ("probe/write", "00"),  // fd_write to stdout: accepted into a sink, never printed
        ],
        "{:?}",
        set.stats()
    );
    assert_eq!(set.stats()[0].failures_total(), 0);
}

#[test]
fn a_pack_without_wasi_imports_runs_without_wasi() {
    let root = tempfile::tempdir().expect("tempdir");
    let wasm = module(&[("pre", support::captures(serde_json::json!({"k": "v"})))]);
    write_pack(
        root.path(),
        "plain",
        &manifest("plain", Some(&["pre"])),
        &config(),
        &wasm,
    );
    let (set, refused) = PackSet::load_dir(root.path(), &RuntimeConfig::default()).expect("dir");
    assert!(refused.is_empty(), "{refused:?}");
    assert!(!set.packs()[0].wasi);
    let mut worker = set.worker().expect("worker");
    let ex = Exchange::new("h.example", "/");
    let session = Session::start(&mut worker, &ex.request_before_response());
    assert_eq!(session.dimensions().len(), 1);
}
