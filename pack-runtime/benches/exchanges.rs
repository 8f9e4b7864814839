//! Exchanges per second through the pack runtime: an empty pack (the Extism call floor), one
//! small capturing pack, and four of them; then the same on every core, with p99 latency.
//!
//! `cargo bench -p taskless-pack-runtime --bench exchanges`

#[path = "../tests/support/mod.rs"]
mod support;

use std::path::Path;
use std::time::{Duration, Instant};

use criterion::{Criterion, Throughput};
use serde_json::json;
use support::{Behavior, Exchange, captures, config, manifest, module, write_pack};
use taskless_pack_runtime::{PackSet, RuntimeConfig, Session, Worker};

fn small_pack() -> Vec<u8> {
    module(&[
        (
            "pre",
            captures(json!({"domain": "api.stripe.com", "path": "/v1/charges"})),
        ),
        ("post", captures(json!({"status": 402}))),
    ])
}

fn empty_pack() -> Vec<u8> {
    module(&[
        ("pre", Behavior::Output(String::new())),
        ("post", Behavior::Output(String::new())),
    ])
}

fn set_with(root: &Path, wasm: &[u8], n: usize) -> PackSet {
    for i in 0..n {
        let name = format!("p{i}");
        write_pack(root, &name, &manifest(&name, None), &config(), wasm);
    }
    let (set, refused) = PackSet::load_dir(root, &RuntimeConfig::default()).expect("pack dir");
    assert!(refused.is_empty(), "{refused:?}");
    set
}

fn exchange(worker: &mut Worker, ex: &Exchange) -> usize {
    let session = Session::start(worker, &ex.request_before_response());
    session
        .finish(worker, &ex.request(), &ex.response())
        .dimensions
        .len()
}

/// Runs exchanges on `threads` threads (one worker each) for `run`, returns exchanges/s and
/// the p99 of one exchange.
fn on_threads(set: &PackSet, threads: usize, run: Duration) -> (f64, Duration) {
    let mut workers: Vec<Worker> = (0..threads)
        .map(|_| set.worker().expect("worker"))
        .collect();
    let started = Instant::now();
    let mut all: Vec<Duration> = std::thread::scope(|s| {
        let handles: Vec<_> = workers
            .iter_mut()
            .map(|w| {
                s.spawn(move || {
                    let ex = Exchange::new("api.stripe.com", "/v1/charges");
                    let mut lat = Vec::new();
                    let end = Instant::now() + run;
                    while Instant::now() < end {
                        let t = Instant::now();
                        std::hint::black_box(exchange(w, &ex));
                        lat.push(t.elapsed());
                    }
                    lat
                })
            })
            .collect();
        handles
            .into_iter()
            .flat_map(|h| h.join().expect("bench thread"))
            .collect()
    });
    let secs = started.elapsed().as_secs_f64();
    all.sort_unstable();
    let p99 = all
        .get(all.len().saturating_mul(99) / 100)
        .copied()
        .unwrap_or_default();
    #[allow(clippy::cast_precision_loss)]
    let rate = all.len() as f64 / secs;
    (rate, p99)
}

fn main() {
    let mut c = Criterion::default()
        .configure_from_args()
        .warm_up_time(Duration::from_millis(500))
        .measurement_time(Duration::from_secs(2));
    let ex = Exchange::new("api.stripe.com", "/v1/charges");
    let dirs: Vec<_> = (0..3)
        .map(|_| tempfile::tempdir().expect("tempdir"))
        .collect();
    let sets = [
        (
            "empty pack (floor)",
            set_with(dirs[0].path(), &empty_pack(), 1),
        ),
        ("1 pack", set_with(dirs[1].path(), &small_pack(), 1)),
        ("4 packs", set_with(dirs[2].path(), &small_pack(), 4)),
    ];
    let mut group = c.benchmark_group("exchange_pre_post");
    group.throughput(Throughput::Elements(1));
    // Extism alone: the empty pack's pre and post called with an empty input, no runtime.
    let mut raw = extism::Plugin::new(empty_pack(), [], false).expect("plain extism plugin");
    group.bench_function("extism only, empty input (raw floor)", |b| {
        b.iter(|| {
            let pre: Vec<u8> = raw.call("pre", "").expect("pre");
            let post: Vec<u8> = raw.call("post", "").expect("post");
            pre.len() + post.len()
        });
    });
    // Extism alone with inputs the size of the runtime's (to tell copying from building).
    let pre_input = json!({
        "requestId": "0190f1a2b3c47d8e9f00112233445566",
        "request": {"domain": "api.stripe.com", "path": "/v1/charges",
                    "url": "https://api.stripe.com/v1/charges?q=1", "method": "POST",
                    "headers": [["content-type", "application/json"], ["idempotency-key", "abc"]]},
        "context": {}, "configuration": {},
        "timing": {"requestStartMs": 1_700_000_000_000.0, "requestEndMs": 1_700_000_000_001.5}
    })
    .to_string();
    let mut post_input: serde_json::Value = serde_json::from_str(&pre_input).expect("json");
    post_input["response"] = json!({"status": 402, "headers": [["content-type", "application/json"], ["x-request-id", "req_1"]]});
    let post_input = post_input.to_string();
    group.bench_function("extism only, runtime-sized input", |b| {
        b.iter(|| {
            let pre: Vec<u8> = raw.call("pre", pre_input.as_str()).expect("pre");
            let post: Vec<u8> = raw.call("post", post_input.as_str()).expect("post");
            pre.len() + post.len()
        });
    });
    for (name, set) in &sets {
        let mut worker = set.worker().expect("worker");
        group.bench_function(*name, |b| b.iter(|| exchange(&mut worker, &ex)));
    }
    group.finish();
    c.final_summary();

    let cores = std::thread::available_parallelism().map_or(1, std::num::NonZero::get);
    for (name, set) in &sets {
        for threads in [1, cores] {
            let (rate, p99) = on_threads(set, threads, Duration::from_secs(2));
            println!("threads={threads} {name}: {rate:.0} exchanges/s, p99 {p99:?} per exchange");
        }
    }
}
