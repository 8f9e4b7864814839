//! Time of one exchange's `pre` + `post` through the runtime with each real, built pack alone
//! (as `cargo xtask build-packs` lays them out), beside an empty pack (the runtime's floor). The
//! exchange is a Stripe-style `POST /v1/customers`: a form body with an email, a name and a
//! phone number in, a JSON customer out. The first exchange of a new worker is reported apart:
//! it instantiates the pack and pays for whatever the pack sets up once.
//!
//! `cargo bench -p taskless-pack-runtime --bench built_packs [-- DIR...]`: each `DIR` is one
//! built pack folder (holding `manifest.json`, `config.json` and `pack.wasm`; a relative path is
//! taken from `pack-runtime/`, where cargo runs benches); without any, the
//! `core` and `pii` packs under `target/packs` (or `$CARGO_TARGET_DIR/packs`).

#[path = "../tests/support/mod.rs"]
mod support;

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use serde_json::json;
use support::{Behavior, Exchange, config, manifest, module, write_pack};
use taskless_pack_runtime::{PackSet, RuntimeConfig, Session, Worker};

/// Batches timed per pack; the median batch is reported.
const BATCHES: usize = 15;
/// Exchanges per batch.
const PER_BATCH: u32 = 400;

fn pairs(list: &[(&str, &str)]) -> Vec<(String, String)> {
    list.iter()
        .map(|(n, v)| ((*n).to_owned(), (*v).to_owned()))
        .collect()
}

fn stripe_customer() -> Exchange {
    let mut ex = Exchange::new("api.stripe.com", "/v1/customers");
    ex.req_headers = pairs(&[
        ("host", "api.stripe.com"),
        ("user-agent", "Stripe/v1 PythonBindings/7.4.0"),
        ("accept", "*/*"),
        ("authorization", "Bearer sk_test_4eC39HqLyjWDarjtT1zdp7dc"),
        ("content-type", "application/x-www-form-urlencoded"),
        ("idempotency-key", "2f0e3c1a-6b1e-4c4b-9d55-0f1e8e7d2a11"),
        ("stripe-version", "2024-06-20"),
        ("content-length", "96"),
    ]);
    ex.req_body = Some(
        b"email=jenny.rosen%40example.com&name=Jenny+Rosen&phone=%2B14155550123&description=Gold+tier"
            .to_vec(),
    );
    ex.status = 200;
    ex.resp_headers = pairs(&[
        ("server", "nginx"),
        ("date", "Tue, 24 Nov 2026 11:32:43 GMT"),
        ("content-type", "application/json"),
        ("connection", "keep-alive"),
        ("cache-control", "no-cache, no-store"),
        ("request-id", "req_8Kd72hYq0sLmQe"),
        ("stripe-version", "2024-06-20"),
    ]);
    let body = json!({
        "id": "cus_NffrFeUfNV2Hib", "object": "customer",
        "address": {"city": "San Francisco", "country": "US", "line1": "510 Townsend Street",
                    "line2": null, "postal_code": "94103", "state": "CA"},
        "balance": 0, "created": 1_680_893_993, "currency": null, "delinquent": false,
        "description": "Gold tier", "email": "jenny.rosen@example.com",
        "invoice_prefix": "0759376C", "livemode": false, "metadata": {}, "name": "Jenny Rosen",
        "next_invoice_sequence": 1, "phone": "+14155550123", "preferred_locales": [],
        "shipping": null, "tax_exempt": "none",
    });
    ex.resp_body = Some(body.to_string().into_bytes());
    ex
}

/// The time of the first exchange through a new `worker` (instantiation and the pack's own
/// set-up included), the median time of one exchange after it, and the dimensions produced.
fn time(worker: &mut Worker, ex: &Exchange) -> (Duration, Duration, usize) {
    let run = |worker: &mut Worker| {
        let session = Session::start(worker, &ex.request_before_response());
        session
            .finish(worker, &ex.request(), &ex.response())
            .dimensions
            .len()
    };
    let started = Instant::now();
    let dimensions = run(worker);
    let first = started.elapsed();
    let mut samples: Vec<Duration> = (0..BATCHES)
        .map(|_| {
            let started = Instant::now();
            for _ in 0..PER_BATCH {
                std::hint::black_box(run(worker));
            }
            started.elapsed() / PER_BATCH
        })
        .collect();
    samples.sort_unstable();
    (first, samples[BATCHES / 2], dimensions)
}

/// Copies the built pack folder `dir` alone into `root`, so a pack set loads only it.
fn copy_pack(dir: &Path, root: &Path) {
    let to = root.join(dir.file_name().expect("pack folder name"));
    std::fs::create_dir_all(&to).expect("pack folder");
    for file in ["manifest.json", "config.json", "pack.wasm"] {
        std::fs::copy(dir.join(file), to.join(file))
            .unwrap_or_else(|e| panic!("{}: {e}", dir.join(file).display()));
    }
}

fn default_dirs() -> Vec<PathBuf> {
    let target = std::env::var_os("CARGO_TARGET_DIR").map_or_else(
        || Path::new(env!("CARGO_MANIFEST_DIR")).join("../target"),
        PathBuf::from,
    );
    let packs = target.join("packs");
    let mut dirs: Vec<PathBuf> = std::fs::read_dir(&packs)
        .unwrap_or_else(|e| panic!("{}: {e} (run cargo xtask build-packs)", packs.display()))
        .filter_map(Result::ok)
        .map(|e| e.path())
        .filter(|p| {
            p.file_name()
                .and_then(|n| n.to_str())
                .is_some_and(|n| n.starts_with("core@") || n.starts_with("pii@"))
        })
        .collect();
    dirs.sort();
    dirs
}

fn main() {
    let args: Vec<PathBuf> = std::env::args()
        .skip(1)
        .filter(|a| !a.starts_with('-'))
        .map(PathBuf::from)
        .collect();
    let dirs = if args.is_empty() {
        default_dirs()
    } else {
        args
    };
    let ex = stripe_customer();

    let empty = tempfile::tempdir().expect("tempdir");
    let wasm = module(&[
        ("pre", Behavior::Output(String::new())),
        ("post", Behavior::Output(String::new())),
    ]);
    write_pack(
        empty.path(),
        "empty",
        &manifest("empty", None),
        &config(),
        &wasm,
    );
    let mut sets = vec![("empty pack (floor)".to_owned(), empty.path().to_owned())];
    let roots: Vec<_> = dirs
        .iter()
        .map(|dir| {
            let root = tempfile::tempdir().expect("tempdir");
            copy_pack(dir, root.path());
            sets.push((dir.display().to_string(), root.path().to_owned()));
            root
        })
        .collect();

    for (name, root) in &sets {
        let (set, refused) = PackSet::load_dir(root, &RuntimeConfig::default()).expect("pack dir");
        assert!(refused.is_empty(), "{name}: {refused:?}");
        let mut worker = set.worker().expect("worker");
        let (first, per_exchange, dimensions) = time(&mut worker, &ex);
        println!(
            "{:>9.1} µs per pre+post (first {:>9.1} µs), {dimensions:>2} dimensions: {name}",
            per_exchange.as_secs_f64() * 1e6,
            first.as_secs_f64() * 1e6
        );
    }
    drop(roots);
}
