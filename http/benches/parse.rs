//! Parser throughput: small HTTP/1.1 and HTTP/2 exchanges per second, and MB/s on large bodies.
//!
//! `cargo bench -p taskless-http` (add `-- --quick` for a short run). Criterion prints
//! "thrpt" in elements/s (exchanges) or bytes/s.
//!
//! Times are wall-clock by default. With `BENCH_CLOCK=cpu` they are the CPU time of the
//! benchmark thread instead, which leaves out the time other processes held the core: the
//! figure to read on a shared, loaded machine. The work measured is the same either way.

use criterion::{Bencher, Criterion, Throughput, criterion_group, criterion_main};
use loona_hpack::Encoder;
use std::hint::black_box;
use std::time::Duration;
use taskless_http::{Assembler, Config, Connection, Event, Flow};

/// Exchanges per benchmark iteration (one keep-alive connection).
const BATCH: usize = 100;

fn request_h1() -> Vec<u8> {
    let body = br#"{"model":"gpt-4o-mini","messages":[{"role":"user","content":"hi"}]}"#;
    let mut r = format!(
        "POST /v1/chat/completions HTTP/1.1\r\nHost: api.openai.com\r\nUser-Agent: bench/1.0\r\n\
         Authorization: Bearer sk-0123456789abcdef0123456789\r\nContent-Type: application/json\r\n\
         Accept: */*\r\nContent-Length: {}\r\n\r\n",
        body.len()
    )
    .into_bytes();
    r.extend_from_slice(body);
    r
}

fn json_body() -> Vec<u8> {
    let mut b = br#"{"id":"chatcmpl-0123456789","object":"chat.completion","model":"gpt-4o-mini","choices":[{"index":0,"message":{"role":"assistant","content":""#.to_vec();
    b.extend(std::iter::repeat_n(b'x', 250));
    b.extend(br#""},"finish_reason":"stop"}],"usage":{"prompt_tokens":9,"completion_tokens":12,"total_tokens":21}}"#);
    b
}

fn response_h1() -> Vec<u8> {
    let body = json_body();
    let mut r = format!(
        "HTTP/1.1 200 OK\r\nDate: Tue, 24 Nov 2026 12:00:00 GMT\r\nContent-Type: application/json\r\n\
         Content-Length: {}\r\nConnection: keep-alive\r\nx-request-id: req_0123456789\r\n\r\n",
        body.len()
    )
    .into_bytes();
    r.extend(body);
    r
}

fn frame(kind: u8, flags: u8, stream: u32, payload: &[u8]) -> Vec<u8> {
    let len = u32::try_from(payload.len()).expect("small frame");
    let mut f = len.to_be_bytes()[1..].to_vec();
    f.extend([kind, flags]);
    f.extend(stream.to_be_bytes());
    f.extend(payload);
    f
}

/// The two flows of one HTTP/2 connection carrying `BATCH` small exchanges, as (flow, bytes)
/// writes in order.
fn h2_script() -> Vec<(Flow, Vec<u8>)> {
    let (mut c, mut s) = (Encoder::new(), Encoder::new());
    let body = br#"{"model":"gpt-4o-mini","messages":[{"role":"user","content":"hi"}]}"#;
    let json = json_body();
    let mut script = vec![
        (
            Flow::Egress,
            [
                b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n".to_vec(),
                frame(4, 0, 0, &[]),
            ]
            .concat(),
        ),
        (
            Flow::Ingress,
            [frame(4, 0, 0, &[]), frame(4, 1, 0, &[])].concat(),
        ),
    ];
    for i in 0..BATCH {
        let stream = 2 * u32::try_from(i).expect("small") + 1;
        let req: &[(&[u8], &[u8])] = &[
            (b":method", b"POST"),
            (b":scheme", b"https"),
            (b":authority", b"api.openai.com"),
            (b":path", b"/v1/chat/completions"),
            (b"user-agent", b"bench/1.0"),
            (b"authorization", b"Bearer sk-0123456789abcdef0123456789"),
            (b"content-type", b"application/json"),
        ];
        let block = c.encode(req.iter().copied());
        script.push((
            Flow::Egress,
            [frame(1, 0x4, stream, &block), frame(0, 0x1, stream, body)].concat(),
        ));
        let resp: &[(&[u8], &[u8])] = &[
            (b":status", b"200"),
            (b"date", b"Tue, 24 Nov 2026 12:00:00 GMT"),
            (b"content-type", b"application/json"),
            (b"x-request-id", b"req_0123456789"),
        ];
        let block = s.encode(resp.iter().copied());
        script.push((
            Flow::Ingress,
            [frame(1, 0x4, stream, &block), frame(0, 0x1, stream, &json)].concat(),
        ));
    }
    script
}

/// Whether `BENCH_CLOCK=cpu` asks for the thread's CPU time instead of wall time.
fn cpu_clock() -> bool {
    std::env::var("BENCH_CLOCK").is_ok_and(|v| v == "cpu")
}

/// CPU time consumed by the calling thread.
fn thread_cpu_time() -> Duration {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: `ts` is a valid, writable timespec; the clock id is a constant Linux supports.
    let rc = unsafe { libc::clock_gettime(libc::CLOCK_THREAD_CPUTIME_ID, &raw mut ts) };
    assert_eq!(rc, 0, "clock_gettime(CLOCK_THREAD_CPUTIME_ID)");
    Duration::new(
        u64::try_from(ts.tv_sec).unwrap_or_default(),
        u32::try_from(ts.tv_nsec).unwrap_or_default(),
    )
}

/// Times `routine` with the clock chosen by `BENCH_CLOCK`.
fn measure(b: &mut Bencher<'_>, mut routine: impl FnMut()) {
    if cpu_clock() {
        b.iter_custom(|iters| {
            let start = thread_cpu_time();
            for _ in 0..iters {
                routine();
            }
            thread_cpu_time().saturating_sub(start)
        });
    } else {
        b.iter(routine);
    }
}

fn count_ends(events: &[Event]) -> usize {
    events
        .iter()
        .filter(|e| matches!(e, Event::ResponseEnd { .. }))
        .count()
}

fn small_exchanges(c: &mut Criterion) {
    let req = request_h1();
    let resp = response_h1();
    let mut group = c.benchmark_group("small_exchanges");
    group.throughput(Throughput::Elements(BATCH as u64));
    group.bench_function("http1_parse", |b| {
        let mut events = Vec::with_capacity(8 * BATCH);
        measure(b, || {
            let mut conn = Connection::new(Config::default());
            events.clear();
            for i in 0..BATCH as u64 {
                conn.feed(Flow::Egress, &req, 2 * i, &mut events);
                conn.feed(Flow::Ingress, &resp, 2 * i + 1, &mut events);
            }
            assert_eq!(count_ends(&events), BATCH);
            black_box(&events);
        });
    });
    group.bench_function("http1_parse_and_assemble", |b| {
        let mut events = Vec::with_capacity(8 * BATCH);
        let mut ready = Vec::with_capacity(4 * BATCH);
        measure(b, || {
            let mut conn = Connection::new(Config::default());
            let mut asm = Assembler::new(1 << 20);
            events.clear();
            ready.clear();
            for i in 0..BATCH as u64 {
                conn.feed(Flow::Egress, &req, 2 * i, &mut events);
                conn.feed(Flow::Ingress, &resp, 2 * i + 1, &mut events);
                for e in events.drain(..) {
                    asm.push(e, &mut ready);
                }
            }
            black_box(&ready);
        });
    });
    let script = h2_script();
    group.bench_function("http2_parse", |b| {
        let mut events = Vec::with_capacity(8 * BATCH);
        measure(b, || {
            let mut conn = Connection::new(Config::default());
            events.clear();
            for (i, (flow, bytes)) in script.iter().enumerate() {
                conn.feed(*flow, bytes, i as u64, &mut events);
            }
            assert_eq!(count_ends(&events), BATCH);
            black_box(&events);
        });
    });
    group.finish();
}

fn large_bodies(c: &mut Criterion) {
    const BODY: usize = 16 << 20;
    const PIECE: usize = 16 << 10;
    let body: Vec<u8> = (0..BODY).map(|i| (i % 251) as u8).collect();
    let head = format!("HTTP/1.1 200 OK\r\nContent-Length: {BODY}\r\n\r\n").into_bytes();
    let mut group = c.benchmark_group("large_bodies");
    group.throughput(Throughput::Bytes(BODY as u64));
    group.sample_size(10);
    group.bench_function("http1_content_length_16k_reads", |b| {
        let mut events = Vec::new();
        measure(b, || {
            let mut conn = Connection::new(Config::default());
            events.clear();
            conn.feed(Flow::Egress, b"GET /big HTTP/1.1\r\n\r\n", 0, &mut events);
            conn.feed(Flow::Ingress, &head, 1, &mut events);
            for piece in body.chunks(PIECE) {
                conn.feed(Flow::Ingress, piece, 2, &mut events);
            }
            assert!(matches!(events.last(), Some(Event::ResponseEnd { .. })));
            black_box(&events);
        });
    });
    let mut chunked = Vec::new();
    for piece in body.chunks(PIECE) {
        chunked.extend(format!("{:x}\r\n", piece.len()).into_bytes());
        chunked.extend(piece);
        chunked.extend(b"\r\n");
    }
    chunked.extend(b"0\r\n\r\n");
    let chunked_head = b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n";
    group.bench_function("http1_chunked_16k_reads", |b| {
        let mut events = Vec::new();
        measure(b, || {
            let mut conn = Connection::new(Config::default());
            events.clear();
            conn.feed(Flow::Egress, b"GET /big HTTP/1.1\r\n\r\n", 0, &mut events);
            conn.feed(Flow::Ingress, chunked_head, 1, &mut events);
            for piece in chunked.chunks(PIECE) {
                conn.feed(Flow::Ingress, piece, 2, &mut events);
            }
            assert!(matches!(events.last(), Some(Event::ResponseEnd { .. })));
            black_box(&events);
        });
    });
    let mut h2 = Vec::new();
    for (i, piece) in body.chunks(PIECE).enumerate() {
        let last = (i + 1) * PIECE >= BODY;
        h2.push(frame(0, u8::from(last), 1, piece));
    }
    let mut enc = Encoder::new();
    let req_block = enc.encode([
        (&b":method"[..], &b"GET"[..]),
        (b":path", b"/big"),
        (b":scheme", b"https"),
    ]);
    let mut resp_enc = Encoder::new();
    let resp_block = resp_enc.encode([(&b":status"[..], &b"200"[..])]);
    group.bench_function("http2_data_frames_16k", |b| {
        let mut events = Vec::new();
        measure(b, || {
            let mut conn = Connection::new(Config::default());
            events.clear();
            conn.feed(
                Flow::Egress,
                &[
                    b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n".to_vec(),
                    frame(1, 0x5, 1, &req_block),
                ]
                .concat(),
                0,
                &mut events,
            );
            conn.feed(
                Flow::Ingress,
                &frame(1, 0x4, 1, &resp_block),
                1,
                &mut events,
            );
            for f in &h2 {
                conn.feed(Flow::Ingress, f, 2, &mut events);
            }
            assert!(matches!(events.last(), Some(Event::ResponseEnd { .. })));
            black_box(&events);
        });
    });
    group.finish();
}

criterion_group!(benches, small_exchanges, large_bodies);
criterion_main!(benches);
