//! CPU time of the pii pack's `pre` + `post` on realistic exchanges, natively (the logic the Wasm
//! pack runs, without the Wasm engine): a small Stripe-style customer exchange, the runtime
//! benchmark's typical exchange (1 KiB JSON request, 2 KiB JSON response), a 4 KiB JSON body of
//! contacts, and a plain-text body. Each exchange is timed twice: the hooks alone on an
//! already-parsed input, and with the input parsed from and the output written to JSON, as the
//! pack's exports do.
//!
//! Two more cases, 1 MiB of the same contacts and text, show the cost per megabyte, which is
//! what the default `maxScanBytes` allows.
//!
//! `cd packs && cargo bench -p taskless-pack-pii --bench scan` (optionally followed by a case
//! name to run only the cases containing it).

use std::hint::black_box;
use std::time::{Duration, Instant};

use serde_json::{Map, Value, json};
use taskless_pack_kit::{Input, Output};

/// Batches per case; the median batch is reported.
const BATCHES: usize = 15;
/// Least time one batch runs.
const BATCH_TIME: Duration = Duration::from_millis(200);

/// The configuration the agent delivers with no `config.json`: every field's default.
fn default_configuration() -> Map<String, Value> {
    let manifest: Value =
        serde_json::from_str(include_str!("../manifest.json")).expect("manifest is JSON");
    let mut config = Map::new();
    for field in manifest["fields"].as_array().into_iter().flatten() {
        if let Some(name) = field["name"].as_str() {
            config.insert(name.to_owned(), field["default"].clone());
        }
    }
    config
}

fn headers(pairs: &[(&str, &str)]) -> Value {
    Value::Array(pairs.iter().map(|(n, v)| json!([n, v])).collect())
}

/// A Stripe-style `POST /v1/customers`: a form body in, a JSON customer out.
fn stripe_customer() -> (Value, Value) {
    let request = json!({
        "domain": "api.stripe.com", "path": "/v1/customers", "method": "POST",
        "url": "https://api.stripe.com/v1/customers",
        "headers": headers(&[
            ("host", "api.stripe.com"),
            ("user-agent", "Stripe/v1 PythonBindings/7.4.0"),
            ("accept", "*/*"),
            ("authorization", "Bearer sk_test_4eC39HqLyjWDarjtT1zdp7dc"),
            ("content-type", "application/x-www-form-urlencoded"),
            ("idempotency-key", "2f0e3c1a-6b1e-4c4b-9d55-0f1e8e7d2a11"),
            ("stripe-version", "2024-06-20"),
            ("x-stripe-client-user-agent", "{\"bindings_version\": \"7.4.0\", \"lang\": \"python\"}"),
            ("content-length", "96"),
        ]),
        "body": "email=jenny.rosen%40example.com&name=Jenny+Rosen&phone=%2B14155550123&description=Gold+tier",
    });
    let response = json!({
        "status": 200,
        "headers": headers(&[
            ("server", "nginx"),
            ("date", "Tue, 24 Nov 2026 11:32:43 GMT"),
            ("content-type", "application/json"),
            ("content-length", "812"),
            ("connection", "keep-alive"),
            ("access-control-allow-credentials", "true"),
            ("cache-control", "no-cache, no-store"),
            ("idempotency-key", "2f0e3c1a-6b1e-4c4b-9d55-0f1e8e7d2a11"),
            ("request-id", "req_8Kd72hYq0sLmQe"),
            ("stripe-version", "2024-06-20"),
            ("strict-transport-security", "max-age=63072000; includeSubDomains; preload"),
        ]),
        "body": {
            "id": "cus_NffrFeUfNV2Hib", "object": "customer",
            "address": {"city": "San Francisco", "country": "US", "line1": "510 Townsend Street",
                        "line2": null, "postal_code": "94103", "state": "CA"},
            "balance": 0, "created": 1680893993, "currency": null, "default_source": null,
            "delinquent": false, "description": "Gold tier", "discount": null,
            "email": "jenny.rosen@example.com", "invoice_prefix": "0759376C",
            "invoice_settings": {"custom_fields": null, "default_payment_method": null,
                                 "footer": null, "rendering_options": null},
            "livemode": false, "metadata": {}, "name": "Jenny Rosen",
            "next_invoice_sequence": 1, "phone": "+14155550123",
            "preferred_locales": [], "shipping": null, "tax_exempt": "none",
            "test_clock": null,
        },
    });
    (request, response)
}

/// The typical exchange of the runtime's `built_packs` benchmark: a 1 KiB JSON request creating
/// an order and its 2 KiB JSON answer.
fn typical() -> (Value, Value) {
    let items: Vec<Value> = (0..6)
        .map(|i| {
            json!({"sku": format!("SKU-{:05}", 10_000 + i * 37), "name": format!("Widget model {i}"),
                   "quantity": i + 1, "unit_price": 1_999 + i * 250, "currency": "usd",
                   "tax_code": "txcd_99999999"})
        })
        .collect();
    let request = json!({
        "domain": "api.shop.example", "path": "/v2/orders", "method": "POST",
        "url": "https://api.shop.example/v2/orders?expand=items",
        "headers": headers(&[
            ("host", "api.shop.example"),
            ("user-agent", "shop-sdk/4.2.0 python/3.12"),
            ("accept", "application/json"),
            ("authorization", "Bearer 9b2f1c7e4d8a6b3f0e5c9a7d1b4e8f2a"),
            ("content-type", "application/json"),
            ("idempotency-key", "7c1d8e2f-3a4b-4c5d-8e9f-0a1b2c3d4e5f"),
        ]),
        "body": {
            "customer": "cus_NffrFeUfNV2Hib", "currency": "usd", "items": items,
            "shipping": {"name": "Jenny Rosen", "line1": "510 Townsend Street", "city": "San Francisco",
                         "postal_code": "94103", "country": "US"},
            "metadata": {"channel": "web", "campaign": "spring-sale", "cart_id": "cart_8c2e4f"},
        },
    });
    let lines: Vec<Value> = (0..6)
        .map(|i| {
            json!({"id": format!("li_{:010}", 4_000_000 + i * 7_919), "object": "line_item",
                   "sku": format!("SKU-{:05}", 10_000 + i * 37), "description": format!("Widget model {i}"),
                   "quantity": i + 1, "amount_subtotal": (1_999 + i * 250) * (i + 1),
                   "amount_tax": 160 * (i + 1), "amount_total": (2_159 + i * 250) * (i + 1),
                   "currency": "usd", "status": "reserved"})
        })
        .collect();
    let response = json!({
        "status": 200,
        "headers": headers(&[
            ("date", "Tue, 24 Nov 2026 11:32:43 GMT"),
            ("content-type", "application/json"),
            ("x-request-id", "req_5b9e0c7d2a"),
            ("x-ratelimit-remaining", "4999"),
        ]),
        "body": {
            "id": "ord_1MtwBwLkdIwHu7ix28a3tqPa", "object": "order", "created": 1_700_000_000u64,
            "status": "open", "currency": "usd", "customer": "cus_NffrFeUfNV2Hib", "line_items": lines,
            "amount_subtotal": 52_944, "amount_tax": 3_360, "amount_total": 56_304,
            "shipping_details": {"name": "Jenny Rosen", "address": {"line1": "510 Townsend Street",
                "city": "San Francisco", "postal_code": "94103", "state": "CA", "country": "US"}},
            "metadata": {"channel": "web", "campaign": "spring-sale", "cart_id": "cart_8c2e4f"},
            "livemode": false,
        },
    });
    (request, response)
}

/// A JSON `POST` of 4 KiB of contacts (emails, phone numbers, addresses); a small JSON answer.
fn contacts_4k() -> (Value, Value) {
    contacts(4096)
}

/// The same contacts, 1 MiB of them: the worst a default `maxScanBytes` lets through.
fn contacts_1m() -> (Value, Value) {
    contacts(1 << 20)
}

/// A JSON `POST` of at least `size` bytes of contacts; a small JSON answer.
fn contacts(size: usize) -> (Value, Value) {
    let mut contacts = Vec::new();
    let mut i = 0u32;
    let mut len = 1; // the length of the array as JSON: brackets, elements and commas
    while len < size {
        contacts.push(json!({
            "id": format!("ct_{:08x}", 0x5eed_0000u32 + i * 7919),
            "email": format!("person{i}@mail{}.example.org", i % 7),
            "phone": format!("(415) 555-{:04}", 100 + i * 37),
            "company": "Acme Widgets Ltd",
            "street": format!("{} Market Street", 10 + i),
            "tags": ["lead", "newsletter"],
            "score": 0.5 + f64::from(i) / 100.0,
        }));
        len += contacts.last().map_or(0, |c| c.to_string().len() + 1);
        i += 1;
    }
    let request = json!({
        "domain": "api.crm.example", "path": "/v2/contacts/import", "method": "POST",
        "url": "https://api.crm.example/v2/contacts/import",
        "headers": headers(&[
            ("host", "api.crm.example"),
            ("user-agent", "crm-sdk/3.1.0 node/20.11.1"),
            ("authorization", "Bearer eyJhbGciOiJIUzI1NiJ9.eyJzdWIiOiIxMjMifQ.c2lnbmF0dXJl"),
            ("content-type", "application/json"),
            ("accept", "application/json"),
        ]),
        "body": {"contacts": contacts, "source": "import", "dedupe": true},
    });
    let response = json!({
        "status": 202,
        "headers": headers(&[
            ("content-type", "application/json"),
            ("date", "Tue, 24 Nov 2026 11:32:43 GMT"),
            ("x-request-id", "3c9d2a7e-0b5f-4f0e-8f7a-1b2c3d4e5f60"),
        ]),
        "body": {"job": "job_01HZX3K9Q2", "accepted": contacts.len(), "status": "queued"},
    });
    (request, response)
}

/// A plain-text request (a support message, 2 KiB with dates, amounts and a phone number) and
/// a plain-text answer.
fn text_body() -> (Value, Value) {
    text(2048)
}

/// The same text, 1 MiB of it.
fn text_1m() -> (Value, Value) {
    text(1 << 20)
}

/// A plain-text request of at least `size` bytes and a plain-text answer.
fn text(size: usize) -> (Value, Value) {
    let paragraph = "Hello team, order 48213 shipped on 2026-11-20 for $129.99 and arrived \
        damaged. Version 4.2.1 of the app shows error E1042 when I retry. ";
    let mut text = String::new();
    while text.len() < size {
        text.push_str(paragraph);
    }
    text.push_str("Please call me back on 415-555-0199.");
    let request = json!({
        "domain": "support.example.com", "path": "/tickets", "method": "POST",
        "url": "https://support.example.com/tickets",
        "headers": headers(&[
            ("host", "support.example.com"),
            ("content-type", "text/plain; charset=utf-8"),
            ("user-agent", "curl/8.5.0"),
        ]),
        "body": text,
    });
    let response = json!({
        "status": 201,
        "headers": headers(&[("content-type", "text/plain"), ("location", "/tickets/88311")]),
        "body": "Ticket 88311 created. We answer within 2 business days.",
    });
    (request, response)
}

struct Case {
    name: &'static str,
    pre: Input,
    post: Input,
    pre_json: Vec<u8>,
    post_json: Vec<u8>,
}

fn case(name: &'static str, (request, response): (Value, Value)) -> Case {
    let configuration = Value::Object(default_configuration());
    let pre = json!({"request": request, "configuration": configuration});
    let post = json!({"request": request, "response": response, "configuration": configuration});
    let pre_json = pre.to_string().into_bytes();
    let post_json = post.to_string().into_bytes();
    Case {
        name,
        pre: Input::from_json(&pre_json).expect("pre input"),
        post: Input::from_json(&post_json).expect("post input"),
        pre_json,
        post_json,
    }
}

/// CPU time used by this thread so far: on a busy machine, what a call costs without the time
/// other work takes the core away.
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

/// Median CPU time of one call of `f`, over [`BATCHES`] batches.
fn time(mut f: impl FnMut()) -> Duration {
    let mut per_batch = 1u32;
    loop {
        let started = Instant::now();
        for _ in 0..per_batch {
            f();
        }
        if started.elapsed() >= BATCH_TIME / 4 {
            break;
        }
        per_batch *= 2;
    }
    per_batch *= 4;
    let mut samples: Vec<Duration> = (0..BATCHES)
        .map(|_| {
            let started = thread_cpu();
            for _ in 0..per_batch {
                f();
            }
            (thread_cpu() - started) / per_batch
        })
        .collect();
    samples.sort();
    samples[BATCHES / 2]
}

fn hooks(c: &Case) -> (Output, Output) {
    (pack_pii::pre(&c.pre), pack_pii::post(&c.post))
}

fn with_json(c: &Case) -> usize {
    let pre = Input::from_json(&c.pre_json).expect("pre input");
    let post = Input::from_json(&c.post_json).expect("post input");
    let a = pack_pii::pre(&pre).to_json().expect("pre output");
    let b = pack_pii::post(&post).to_json().expect("post output");
    a.len() + b.len()
}

fn main() {
    let filter = std::env::args()
        .skip(1)
        .find(|a| !a.starts_with('-'))
        .unwrap_or_default();
    let cases = [
        case("stripe-customer", stripe_customer()),
        case("typical", typical()),
        case("json-4k-contacts", contacts_4k()),
        case("text-2k", text_body()),
        case("json-1m-contacts", contacts_1m()),
        case("text-1m", text_1m()),
    ];
    println!(
        "{:<18} {:>8} {:>8} {:>10} {:>12} {:>14}  captures",
        "case", "pre B", "post B", "parse µs", "hooks µs", "with JSON µs"
    );
    for c in cases.iter().filter(|c| c.name.contains(&filter)) {
        let (pre, post) = hooks(c);
        let mut captures: Vec<&str> = pre
            .captures()
            .keys()
            .chain(post.captures().keys())
            .map(String::as_str)
            .collect();
        captures.sort_unstable();
        let hooks_time = time(|| {
            black_box(hooks(black_box(c)));
        });
        let json_time = time(|| {
            black_box(with_json(black_box(c)));
        });
        let parse_time = time(|| {
            black_box(Input::from_json(black_box(&c.pre_json)).expect("pre input"));
            black_box(Input::from_json(black_box(&c.post_json)).expect("post input"));
        });
        println!(
            "{:<18} {:>8} {:>8} {:>10.1} {:>12.1} {:>14.1}  {} {}",
            c.name,
            c.pre_json.len(),
            c.post_json.len(),
            parse_time.as_secs_f64() * 1e6,
            hooks_time.as_secs_f64() * 1e6,
            json_time.as_secs_f64() * 1e6,
            captures.len(),
            captures.join(",")
        );
    }
}
