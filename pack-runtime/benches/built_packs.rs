//! Time of one exchange's `pre` + `post` through the runtime with each real, built pack alone
//! (as `cargo xtask build-packs` lays them out), beside an empty pack (the runtime's floor) and an
//! empty pack with the body permission (the floor of packs that read bodies: the host puts the
//! bodies into their input), on four exchanges:
//!
//! - `stripe-customer`: a Stripe-style `POST /v1/customers`, a form body with an email, a name
//!   and a phone number in, a JSON customer out;
//! - `typical`: a 1 KiB JSON request and a 2 KiB JSON response (an order created);
//! - `json-4k-contacts`: 4 KiB of JSON contacts sent, a small JSON answer;
//! - `text-2k`: 2 KiB of plain text with dates, amounts and a phone number sent;
//! - `json-64k-response`: a `GET` answered with 64 KiB of JSON contacts, the size of the large
//!   responses in the load benchmarks, for a pack's cost per kilobyte.
//!
//! In the same run: the raw Extism floor (the empty module's `pre` and `post` called straight
//! through Extism with an empty input, instance reused), which every figure is also given as a
//! ratio of; and what the host does with each exchange's bodies for a pack with the body
//! permission, the old way (parse into a tree, write it out) and the present one (check, copy).
//!
//! The last two are the pii pack's own benchmark bodies (`packs/pii/benches/scan.rs`). The
//! first exchange of a new worker is reported apart: it instantiates the pack and pays for
//! whatever the pack sets up once.
//!
//! `cargo bench -p taskless-pack-runtime --bench built_packs [-- [--exchange NAME] DIR...]`:
//! each `DIR` is one built pack folder (holding `manifest.json`, `config.json` and `pack.wasm`;
//! a relative path is taken from `pack-runtime/`, where cargo runs benches); without any, the
//! `core` and `pii` packs under `target/packs` (or `$CARGO_TARGET_DIR/packs`). Two folders of
//! the same pack (say, before and after a change) are compared in one run this way.

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
    ex.url = "https://api.stripe.com/v1/customers".into();
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

/// A 1 KiB JSON request creating an order and its 2 KiB JSON answer.
fn typical() -> Exchange {
    let mut ex = Exchange::new("api.shop.example", "/v2/orders");
    ex.url = "https://api.shop.example/v2/orders?expand=items".into();
    ex.req_headers = pairs(&[
        ("host", "api.shop.example"),
        ("user-agent", "shop-sdk/4.2.0 python/3.12"),
        ("accept", "application/json"),
        ("authorization", "Bearer 9b2f1c7e4d8a6b3f0e5c9a7d1b4e8f2a"),
        ("content-type", "application/json"),
        ("idempotency-key", "7c1d8e2f-3a4b-4c5d-8e9f-0a1b2c3d4e5f"),
    ]);
    let items: Vec<_> = (0..6)
        .map(|i| {
            json!({"sku": format!("SKU-{:05}", 10_000 + i * 37), "name": format!("Widget model {i}"),
                   "quantity": i + 1, "unit_price": 1_999 + i * 250, "currency": "usd",
                   "tax_code": "txcd_99999999"})
        })
        .collect();
    let request = json!({
        "customer": "cus_NffrFeUfNV2Hib", "currency": "usd", "items": items,
        "shipping": {"name": "Jenny Rosen", "line1": "510 Townsend Street", "city": "San Francisco",
                     "postal_code": "94103", "country": "US"},
        "metadata": {"channel": "web", "campaign": "spring-sale", "cart_id": "cart_8c2e4f"},
    });
    ex.req_body = Some(request.to_string().into_bytes());
    ex.status = 200;
    ex.resp_headers = pairs(&[
        ("date", "Tue, 24 Nov 2026 11:32:43 GMT"),
        ("content-type", "application/json"),
        ("x-request-id", "req_5b9e0c7d2a"),
        ("x-ratelimit-remaining", "4999"),
    ]);
    let lines: Vec<_> = (0..6)
        .map(|i| {
            json!({"id": format!("li_{:010}", 4_000_000 + i * 7_919), "object": "line_item",
                   "sku": format!("SKU-{:05}", 10_000 + i * 37), "description": format!("Widget model {i}"),
                   "quantity": i + 1, "amount_subtotal": (1_999 + i * 250) * (i + 1),
                   "amount_tax": 160 * (i + 1), "amount_total": (2_159 + i * 250) * (i + 1),
                   "currency": "usd", "status": "reserved"})
        })
        .collect();
    let response = json!({
        "id": "ord_1MtwBwLkdIwHu7ix28a3tqPa", "object": "order", "created": 1_700_000_000u64,
        "status": "open", "currency": "usd", "customer": "cus_NffrFeUfNV2Hib", "line_items": lines,
        "amount_subtotal": 52_944, "amount_tax": 3_360, "amount_total": 56_304,
        "shipping_details": {"name": "Jenny Rosen", "address": {"line1": "510 Townsend Street",
            "city": "San Francisco", "postal_code": "94103", "state": "CA", "country": "US"}},
        "metadata": {"channel": "web", "campaign": "spring-sale", "cart_id": "cart_8c2e4f"},
        "livemode": false,
    });
    ex.resp_body = Some(response.to_string().into_bytes());
    ex
}

/// At least `size` bytes of JSON contacts (emails, phone numbers, addresses), as an array.
fn contacts(size: usize) -> Vec<serde_json::Value> {
    let mut contacts = Vec::new();
    let mut i = 0u32;
    while serde_json::to_string(&contacts).map_or(0, |s| s.len()) < size {
        contacts.push(json!({
            "id": format!("ct_{:08x}", 0x5eed_0000u32 + i * 7919),
            "email": format!("person{i}@mail{}.example.org", i % 7),
            "phone": format!("(415) 555-{:04}", 100 + i * 37),
            "company": "Acme Widgets Ltd",
            "street": format!("{} Market Street", 10 + i),
            "tags": ["lead", "newsletter"],
            "score": 0.5 + f64::from(i) / 100.0,
        }));
        i += 1;
    }
    contacts
}

/// The pii pack's 4 KiB body of contacts (emails, phone numbers, addresses) and a small answer.
fn contacts_4k() -> Exchange {
    let contacts = contacts(4096);
    let mut ex = Exchange::new("api.crm.example", "/v2/contacts/import");
    ex.url = "https://api.crm.example/v2/contacts/import".into();
    ex.req_headers = pairs(&[
        ("host", "api.crm.example"),
        ("user-agent", "crm-sdk/3.1.0 node/20.11.1"),
        (
            "authorization",
            "Bearer eyJhbGciOiJIUzI1NiJ9.eyJzdWIiOiIxMjMifQ.c2lnbmF0dXJl",
        ),
        ("content-type", "application/json"),
        ("accept", "application/json"),
    ]);
    let count = contacts.len();
    ex.req_body = Some(
        json!({"contacts": contacts, "source": "import", "dedupe": true})
            .to_string()
            .into_bytes(),
    );
    ex.status = 202;
    ex.resp_headers = pairs(&[
        ("content-type", "application/json"),
        ("date", "Tue, 24 Nov 2026 11:32:43 GMT"),
        ("x-request-id", "3c9d2a7e-0b5f-4f0e-8f7a-1b2c3d4e5f60"),
    ]);
    ex.resp_body = Some(
        json!({"job": "job_01HZX3K9Q2", "accepted": count, "status": "queued"})
            .to_string()
            .into_bytes(),
    );
    ex
}

/// A `GET` of contacts answered with 64 KiB of JSON.
fn json_64k_response() -> Exchange {
    let mut ex = Exchange::new("api.crm.example", "/v2/contacts");
    ex.method = "GET".into();
    ex.url = "https://api.crm.example/v2/contacts?limit=300".into();
    ex.req_headers = pairs(&[
        ("host", "api.crm.example"),
        ("user-agent", "crm-sdk/3.1.0 node/20.11.1"),
        ("authorization", "Bearer 9b2f1c7e4d8a6b3f0e5c9a7d1b4e8f2a"),
        ("accept", "application/json"),
    ]);
    ex.req_body = None;
    ex.status = 200;
    ex.resp_headers = pairs(&[
        ("content-type", "application/json"),
        ("date", "Tue, 24 Nov 2026 11:32:43 GMT"),
        ("x-request-id", "3c9d2a7e-0b5f-4f0e-8f7a-1b2c3d4e5f60"),
    ]);
    ex.resp_body = Some(
        json!({"data": contacts(64 * 1024), "has_more": true})
            .to_string()
            .into_bytes(),
    );
    ex
}

/// The pii pack's 2 KiB plain-text support message, with dates, amounts and a phone number.
fn text_2k() -> Exchange {
    let paragraph = "Hello team, order 48213 shipped on 2026-11-20 for $129.99 and arrived \
        damaged. Version 4.2.1 of the app shows error E1042 when I retry. ";
    let mut text = String::new();
    while text.len() < 2048 {
        text.push_str(paragraph);
    }
    text.push_str("Please call me back on 415-555-0199.");
    let mut ex = Exchange::new("support.example.com", "/tickets");
    ex.url = "https://support.example.com/tickets".into();
    ex.req_headers = pairs(&[
        ("host", "support.example.com"),
        ("content-type", "text/plain; charset=utf-8"),
        ("user-agent", "curl/8.5.0"),
    ]);
    ex.req_body = Some(text.into_bytes());
    ex.status = 201;
    ex.resp_headers = pairs(&[
        ("content-type", "text/plain"),
        ("location", "/tickets/88311"),
    ]);
    ex.resp_body = Some(b"Ticket 88311 created. We answer within 2 business days.".to_vec());
    ex
}

/// CPU time used by this thread so far: what a call costs, without the time other work on a
/// busy machine takes the core away.
fn thread_cpu() -> Duration {
    let mut t = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: `t` is a valid timespec for the call to write.
    let rc = unsafe { libc::clock_gettime(libc::CLOCK_THREAD_CPUTIME_ID, &raw mut t) };
    assert_eq!(rc, 0, "clock_gettime(CLOCK_THREAD_CPUTIME_ID)");
    Duration::new(
        u64::try_from(t.tv_sec).unwrap_or_default(),
        u32::try_from(t.tv_nsec).unwrap_or_default(),
    )
}

/// What [`time`] measures.
struct Timed {
    /// The first exchange through a new worker (instantiation and the pack's own set-up).
    first: Duration,
    /// The median wall time of one exchange after it, over batches.
    median: Duration,
    /// The median CPU time of this thread per exchange, over batches: the figure to compare on
    /// a busy machine.
    cpu: Duration,
    /// Dimensions produced.
    dimensions: usize,
}

/// Times exchanges through a new `worker`.
fn time(worker: &mut Worker, ex: &Exchange) -> Timed {
    time_with(worker, |worker| {
        let session = Session::start(worker, &ex.request_before_response());
        session
            .finish(worker, &ex.request(), &ex.response())
            .dimensions
            .len()
    })
}

/// Times `run` (one exchange) over batches, the first call apart.
fn time_with<T>(target: &mut T, mut run: impl FnMut(&mut T) -> usize) -> Timed {
    let worker = target;
    let started = Instant::now();
    let dimensions = run(worker);
    let first = started.elapsed();
    let (mut wall, mut cpu): (Vec<Duration>, Vec<Duration>) = (0..BATCHES)
        .map(|_| {
            let started = Instant::now();
            let cpu_started = thread_cpu();
            for _ in 0..PER_BATCH {
                std::hint::black_box(run(worker));
            }
            (
                started.elapsed() / PER_BATCH,
                (thread_cpu() - cpu_started) / PER_BATCH,
            )
        })
        .unzip();
    wall.sort_unstable();
    cpu.sort_unstable();
    Timed {
        first,
        median: wall[BATCHES / 2],
        cpu: cpu[BATCHES / 2],
        dimensions,
    }
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
    // As the agent does (agent/src/main.rs): no backtrace in the error Extism makes on every
    // call, unless asked for with RUST_LIB_BACKTRACE.
    if std::env::var_os("RUST_LIB_BACKTRACE").is_none() {
        // SAFETY: no other thread exists yet.
        unsafe { std::env::set_var("RUST_LIB_BACKTRACE", "0") };
    }
    println!(
        "library backtraces: RUST_LIB_BACKTRACE={:?}, RUST_BACKTRACE={:?}",
        std::env::var_os("RUST_LIB_BACKTRACE"),
        std::env::var_os("RUST_BACKTRACE")
    );
    let mut args = std::env::args().skip(1);
    let mut only: Option<String> = None;
    let mut dirs = Vec::new();
    while let Some(arg) = args.next() {
        if arg == "--exchange" {
            only = args.next();
        } else if !arg.starts_with('-') {
            dirs.push(PathBuf::from(arg));
        }
    }
    if dirs.is_empty() {
        dirs = default_dirs();
    }
    let exchanges: Vec<(&str, Exchange)> = [
        ("stripe-customer", stripe_customer()),
        ("typical", typical()),
        ("json-4k-contacts", contacts_4k()),
        ("text-2k", text_2k()),
        ("json-64k-response", json_64k_response()),
    ]
    .into_iter()
    .filter(|(name, _)| only.as_deref().is_none_or(|o| o == *name))
    .collect();
    for (name, ex) in &exchanges {
        println!(
            "exchange {name}: request body {} B, response body {} B",
            ex.req_body.as_ref().map_or(0, Vec::len),
            ex.resp_body.as_ref().map_or(0, Vec::len)
        );
    }

    // Two floors: an empty pack, and one with the body permission, which packs that read
    // bodies (core, pii) are to be compared with: the host builds the bodies into its input.
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
    let empty_bodies = tempfile::tempdir().expect("tempdir");
    let mut with_bodies = manifest("empty-bodies", None);
    with_bodies["permissions"] = json!({"body": true});
    write_pack(
        empty_bodies.path(),
        "empty-bodies",
        &with_bodies,
        &config(),
        &wasm,
    );
    let mut sets = vec![
        ("empty pack (floor)".to_owned(), empty.path().to_owned()),
        (
            "empty pack given bodies (floor of core, pii)".to_owned(),
            empty_bodies.path().to_owned(),
        ),
    ];
    let roots: Vec<_> = dirs
        .iter()
        .map(|dir| {
            let root = tempfile::tempdir().expect("tempdir");
            copy_pack(dir, root.path());
            sets.push((dir.display().to_string(), root.path().to_owned()));
            root
        })
        .collect();

    // What the host does with the bodies of one exchange for a pack with the body permission
    // (the request body into `pre` and `post`, the response body into `post`): parse each into
    // a tree and write it out (as before), or check it and copy its text (as now).
    for (name, ex) in &exchanges {
        let bodies: Vec<&[u8]> = [&ex.req_body, &ex.req_body, &ex.resp_body]
            .into_iter()
            .filter_map(|b| b.as_deref())
            .collect();
        let mut out = Vec::with_capacity(1 << 17);
        let tree = |out: &mut Vec<u8>| {
            for b in &bodies {
                let v = taskless_pack_runtime::body_value(b);
                serde_json::to_writer(&mut *out, &v).expect("serializable");
            }
            out.len()
        };
        let parsed = time_with(&mut out, |out| {
            out.clear();
            tree(out)
        });
        let mut out = Vec::with_capacity(1 << 17);
        let copied = time_with(&mut out, |out| {
            out.clear();
            for b in &bodies {
                taskless_pack_runtime::write_body(b, out).expect("serializable");
            }
            out.len()
        });
        println!(
            "host body work per exchange ({name}): parse and write out {:.1} µs CPU, check and copy {:.1} µs CPU",
            parsed.cpu.as_secs_f64() * 1e6,
            copied.cpu.as_secs_f64() * 1e6
        );
    }

    // The raw Extism floor: the empty module's `pre` and `post` called straight through Extism
    // (instance reused, empty input, the runtime's default timeout), no runtime at all.
    let manifest = extism::Manifest::new([extism::Wasm::data(wasm.clone())])
        .with_timeout(RuntimeConfig::default().timeout);
    let mut raw = extism::Plugin::new(manifest, [], false).expect("plain extism plugin");
    let floor = time_with(&mut raw, |raw| {
        let pre: &[u8] = raw.call("pre", "").expect("pre");
        let n = pre.len();
        let post: &[u8] = raw.call("post", "").expect("post");
        n + post.len()
    });
    println!(
        "{:>8.1} µs per pre+post ({:>8.1} µs CPU, first {:>9.1} µs), raw Extism floor (empty module, empty input)",
        floor.median.as_secs_f64() * 1e6,
        floor.cpu.as_secs_f64() * 1e6,
        floor.first.as_secs_f64() * 1e6,
    );
    for (name, root) in &sets {
        let (set, refused) = PackSet::load_dir(root, &RuntimeConfig::default()).expect("pack dir");
        assert!(refused.is_empty(), "{name}: {refused:?}");
        for (exchange, ex) in &exchanges {
            let mut worker = set.worker().expect("worker");
            let t = time(&mut worker, ex);
            println!(
                "{:>8.1} µs per pre+post ({:>8.1} µs CPU, first {:>9.1} µs, {:>5.2}× the raw floor's CPU), {:>2} dimensions: {exchange:<16} {name}",
                t.median.as_secs_f64() * 1e6,
                t.cpu.as_secs_f64() * 1e6,
                t.first.as_secs_f64() * 1e6,
                t.cpu.as_secs_f64() / floor.cpu.as_secs_f64(),
                t.dimensions
            );
        }
    }
    drop(roots);
}
