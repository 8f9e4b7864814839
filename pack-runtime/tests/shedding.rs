//! Shedding: a worker that falls behind skips its costliest packs for an exchange, names them
//! in the line and counts them; and each pack's time per call.

mod support;

use std::time::Duration;

use serde_json::json;
use support::{Behavior, Exchange, captures, config, manifest, module, write_pack};
use taskless_pack_runtime::{PackSet, RuntimeConfig, Session, Worker};

/// `cheap` captures at once, `slow` spends 5 ms in each hook first, `elsewhere` only runs on
/// another host.
fn packs(root: &std::path::Path) -> PackSet {
    let cheap = module(&[
        ("pre", captures(json!({"pre": 1}))),
        ("post", captures(json!({"post": 1}))),
    ]);
    write_pack(
        root,
        "cheap@1.0.0",
        &manifest("cheap", None),
        &config(),
        &cheap,
    );
    let slow = module(&[
        (
            "pre",
            Behavior::SpinMs(5, json!({"capture": {"pre": 1}}).to_string()),
        ),
        (
            "post",
            Behavior::SpinMs(5, json!({"capture": {"post": 1}}).to_string()),
        ),
    ]);
    write_pack(
        root,
        "slow@1.0.0",
        &manifest("slow", None),
        &config(),
        &slow,
    );
    let mut elsewhere = config();
    elsewhere["configuration"] = json!({"domains": ["api.other.example"]});
    write_pack(
        root,
        "elsewhere@1.0.0",
        &manifest("elsewhere", None),
        &elsewhere,
        &cheap,
    );
    let (set, refused) = PackSet::load_dir(root, &RuntimeConfig::default()).expect("dir usable");
    assert!(refused.is_empty(), "{refused:?}");
    set
}

fn index(set: &PackSet, name: &str) -> usize {
    set.packs()
        .iter()
        .position(|p| p.name == name)
        .expect("pack loaded")
}

fn exchange(
    worker: &mut Worker,
    ex: &Exchange,
    keep: Option<f64>,
) -> taskless_pack_runtime::OutputLine {
    let mut session = Session::start_shedding(worker, &ex.request_before_response(), keep);
    if let Some(keep) = keep {
        session.shed(worker, &ex.request(), keep);
    }
    session.finish(worker, &ex.request(), &ex.response())
}

#[test]
fn a_worker_behind_skips_the_costliest_pack_and_the_line_names_it() {
    let root = tempfile::tempdir().expect("tempdir");
    let set = packs(root.path());
    let (cheap, slow) = (index(&set, "cheap"), index(&set, "slow"));
    let mut worker = set.worker().expect("worker");
    let ex = Exchange::new("api.stripe.com", "/v1/charges");

    // Not behind: every pack runs, and the worker learns what each costs.
    let line = exchange(&mut worker, &ex, None);
    assert!(line.skipped.is_empty(), "{line:?}");
    assert!(line.dimensions.iter().any(|d| d.name == "slow/post"));
    assert!(worker.cost(slow).expect("slow measured") >= Duration::from_millis(4));
    assert!(worker.cost(cheap).expect("cheap measured") < worker.cost(slow).expect("slow"));

    // Behind: keep at most half the cost. The slow pack goes, the cheap one stays.
    let line = exchange(&mut worker, &ex, Some(0.5));
    assert_eq!(line.skipped, vec!["slow".to_owned()], "{line:?}");
    let names: Vec<_> = line.dimensions.iter().map(|d| d.name.as_str()).collect();
    assert_eq!(names, vec!["cheap/pre", "cheap/post"]);
    assert!(
        line.to_json().ends_with(r#","skipped":["slow"]}"#),
        "{}",
        line.to_json()
    );

    // Far behind: nothing kept, the exchange still gets its line. The pack for another host
    // is never named: it would not have run anyway.
    let line = exchange(&mut worker, &ex, Some(0.0));
    assert!(line.dimensions.is_empty(), "{line:?}");
    let mut skipped = line.skipped.clone();
    skipped.sort();
    assert_eq!(skipped, vec!["cheap".to_owned(), "slow".to_owned()]);

    let stats = set.stats();
    assert_eq!(stats[slow].skipped_shed, 2, "{stats:?}");
    assert_eq!(stats[cheap].skipped_shed, 1, "{stats:?}");
    assert_eq!(stats[index(&set, "elsewhere")].skipped_shed, 0);
    // Shed packs were not called: slow ran pre and post once.
    assert_eq!(stats[slow].calls, 2, "{stats:?}");
}

#[test]
fn a_pack_shed_after_pre_gets_no_post_and_keeps_its_pre_captures() {
    let root = tempfile::tempdir().expect("tempdir");
    let set = packs(root.path());
    let mut worker = set.worker().expect("worker");
    let ex = Exchange::new("api.stripe.com", "/v1/charges");
    exchange(&mut worker, &ex, None);
    let mut session = Session::start(&mut worker, &ex.request_before_response());
    assert_eq!(session.shed(&worker, &ex.request(), 0.5), 1);
    // Shedding again sheds nothing new.
    assert_eq!(session.shed(&worker, &ex.request(), 0.5), 0);
    assert_eq!(session.skipped(), ["slow".to_owned()]);
    let line = session.finish(&mut worker, &ex.request(), &ex.response());
    let names: Vec<_> = line.dimensions.iter().map(|d| d.name.as_str()).collect();
    assert_eq!(names, vec!["cheap/pre", "slow/pre", "cheap/post"]);
}

#[test]
fn each_pack_reports_its_time_per_call() {
    let root = tempfile::tempdir().expect("tempdir");
    let set = packs(root.path());
    let slow = index(&set, "slow");
    let mut worker = set.worker().expect("worker");
    let ex = Exchange::new("api.stripe.com", "/v1/charges");
    for _ in 0..3 {
        exchange(&mut worker, &ex, None);
    }
    let stats = set.stats();
    let t = stats[slow].call_time.expect("slow was called");
    assert!(t.p50 >= Duration::from_millis(5), "{t:?}");
    assert!(t.p99 >= t.p50 && t.max >= t.p99, "{t:?}");
    let cheap = stats[index(&set, "cheap")]
        .call_time
        .expect("cheap was called");
    assert!(cheap.p50 < t.p50, "{cheap:?} vs {t:?}");
    assert_eq!(stats[index(&set, "elsewhere")].call_time, None);
}

#[test]
fn a_worker_counts_the_time_its_packs_take_and_none_for_packs_it_skips() {
    let root = tempfile::tempdir().expect("tempdir");
    let set = packs(root.path());
    let mut worker = set.worker().expect("worker");
    let ex = Exchange::new("api.stripe.com", "/v1/charges");
    // Instances are made on first use: warm them, then start counting.
    exchange(&mut worker, &ex, None);
    worker.take_busy();
    exchange(&mut worker, &ex, None);
    let busy = worker.take_busy();
    // `slow` spins 5 ms in each of its two hooks.
    assert!(busy >= Duration::from_millis(10), "{busy:?}");
    assert_eq!(worker.take_busy(), Duration::ZERO, "taken");
    // Every pack skipped: nothing is run, so next to nothing is counted.
    exchange(&mut worker, &ex, Some(0.0));
    let busy = worker.take_busy();
    assert!(busy < Duration::from_millis(5), "{busy:?}");
}
