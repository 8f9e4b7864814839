//! HTTP/2 behaviour, table-driven: every case is fed whole, byte by byte and in random slices.

mod common;

use std::io::Write as _;

use common::{Step, inp, out, run_all, summary};
use loona_hpack::Encoder;
use taskless_http::{Config, Event, Flow, Version};

const PREFACE: &[u8] = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n";
const DATA: u8 = 0;
const HEADERS: u8 = 1;
const RST_STREAM: u8 = 3;
const SETTINGS: u8 = 4;
const PUSH_PROMISE: u8 = 5;
const PING: u8 = 6;
const GOAWAY: u8 = 7;
const WINDOW_UPDATE: u8 = 8;
const CONTINUATION: u8 = 9;
const END_STREAM: u8 = 0x1;
const END_HEADERS: u8 = 0x4;
const PADDED: u8 = 0x8;
const PRIORITY: u8 = 0x20;

fn frame(kind: u8, flags: u8, stream: u32, payload: &[u8]) -> Vec<u8> {
    let len = u32::try_from(payload.len()).expect("small frame");
    let mut f = len.to_be_bytes()[1..].to_vec();
    f.push(kind);
    f.push(flags);
    f.extend_from_slice(&stream.to_be_bytes());
    f.extend_from_slice(payload);
    f
}

fn block(enc: &mut Encoder<'_>, fields: &[(&str, &str)]) -> Vec<u8> {
    enc.encode(fields.iter().map(|(n, v)| (n.as_bytes(), v.as_bytes())))
}

fn get(enc: &mut Encoder<'_>, stream: u32, path: &str, end_stream: bool) -> Vec<u8> {
    let b = block(
        enc,
        &[
            (":method", if end_stream { "GET" } else { "POST" }),
            (":scheme", "https"),
            (":authority", "api.example.com"),
            (":path", path),
            ("user-agent", "test/1.0"),
        ],
    );
    let flags = END_HEADERS | if end_stream { END_STREAM } else { 0 };
    frame(HEADERS, flags, stream, &b)
}

fn status(
    enc: &mut Encoder<'_>,
    stream: u32,
    code: &str,
    extra: &[(&str, &str)],
    end_stream: bool,
) -> Vec<u8> {
    let mut fields = vec![(":status", code)];
    fields.extend_from_slice(extra);
    let b = block(enc, &fields);
    frame(
        HEADERS,
        END_HEADERS | if end_stream { END_STREAM } else { 0 },
        stream,
        &b,
    )
}

fn cat(parts: &[Vec<u8>]) -> Vec<u8> {
    parts.concat()
}

fn client_start() -> Vec<u8> {
    cat(&[
        PREFACE.to_vec(),
        frame(SETTINGS, 0, 0, &[0, 3, 0, 0, 0, 100]),
    ])
}

fn server_start() -> Vec<u8> {
    cat(&[
        frame(SETTINGS, 0, 0, &[]),
        frame(SETTINGS, 1, 0, &[]),
        frame(WINDOW_UPDATE, 0, 0, &[0, 1, 0, 0]),
    ])
}

fn grpc_message(payload: &[u8]) -> Vec<u8> {
    let mut v = vec![0];
    v.extend_from_slice(&u32::try_from(payload.len()).expect("small").to_be_bytes());
    v.extend_from_slice(payload);
    v
}

struct Case {
    name: &'static str,
    steps: Vec<Step>,
    expect: Vec<&'static str>,
}

#[allow(clippy::too_many_lines)]
fn cases() -> Vec<Case> {
    let mut cases = Vec::new();

    let (mut c, mut s) = (Encoder::new(), Encoder::new());
    cases.push(Case {
        name: "GET with a response body in two DATA frames",
        steps: vec![
            out(cat(&[client_start(), get(&mut c, 1, "/v1/models", true)])),
            inp(cat(&[
                server_start(),
                status(
                    &mut s,
                    1,
                    "200",
                    &[("content-type", "application/json")],
                    false,
                ),
                frame(DATA, 0, 1, b"{\"a\""),
            ])),
            inp(frame(DATA, END_STREAM, 1, b":1}")),
        ],
        expect: vec![
            "req#0 GET /v1/models",
            "reqend#0",
            "resp#0 200",
            "body#0 {\"a\"",
            "body#0 :1}",
            "end#0",
        ],
    });

    let (mut c, mut s) = (Encoder::new(), Encoder::new());
    cases.push(Case {
        name: "interleaved streams are separate exchanges",
        steps: vec![
            out(cat(&[
                client_start(),
                get(&mut c, 1, "/one", false),
                get(&mut c, 3, "/three", false),
                frame(DATA, 0, 3, b"body3"),
                frame(DATA, END_STREAM, 1, b"body1"),
                frame(DATA, END_STREAM, 3, b""),
            ])),
            inp(cat(&[
                server_start(),
                status(&mut s, 3, "201", &[], false),
                status(&mut s, 1, "200", &[], false),
                frame(DATA, 0, 3, b"r3"),
                frame(DATA, END_STREAM, 1, b"r1"),
                frame(DATA, END_STREAM, 3, b"!"),
            ])),
        ],
        expect: vec![
            "req#0 POST /one",
            "req#1 POST /three",
            "reqbody#1 body3",
            "reqbody#0 body1",
            "reqend#0",
            "reqend#1",
            "resp#1 201",
            "resp#0 200",
            "body#1 r3",
            "body#0 r1",
            "end#0",
            "body#1 !",
            "end#1",
        ],
    });

    let (mut c, mut s) = (Encoder::new(), Encoder::new());
    let b = block(
        &mut c,
        &[
            (":method", "GET"),
            (":scheme", "https"),
            (":path", "/split"),
            (":authority", "a.example"),
        ],
    );
    let (first, second) = b.split_at(b.len() / 2);
    cases.push(Case {
        name: "header block continued in CONTINUATION frames",
        steps: vec![
            out(cat(&[
                client_start(),
                frame(HEADERS, END_STREAM, 1, first),
                frame(CONTINUATION, END_HEADERS, 1, second),
            ])),
            inp(cat(&[server_start(), status(&mut s, 1, "204", &[], true)])),
        ],
        expect: vec!["req#0 GET /split", "reqend#0", "resp#0 204", "end#0"],
    });

    let (mut c, mut s) = (Encoder::new(), Encoder::new());
    let b = block(
        &mut c,
        &[
            (":method", "GET"),
            (":scheme", "https"),
            (":path", "/padded"),
        ],
    );
    let mut padded_headers = vec![3, 0, 0, 0, 0, 16];
    padded_headers.extend(&b);
    padded_headers.extend([0, 0, 0]);
    let mut padded_data = vec![4];
    padded_data.extend(b"data");
    padded_data.extend([0; 4]);
    cases.push(Case {
        name: "padding and priority fields are stripped",
        steps: vec![
            out(cat(&[
                client_start(),
                frame(
                    HEADERS,
                    END_STREAM | END_HEADERS | PADDED | PRIORITY,
                    1,
                    &padded_headers,
                ),
            ])),
            inp(cat(&[
                server_start(),
                status(&mut s, 1, "200", &[], false),
                frame(DATA, PADDED | END_STREAM, 1, &padded_data),
            ])),
        ],
        expect: vec![
            "req#0 GET /padded",
            "reqend#0",
            "resp#0 200",
            "body#0 data",
            "end#0",
        ],
    });

    let mut c = Encoder::new();
    cases.push(Case {
        name: "RST_STREAM aborts the exchange",
        steps: vec![
            out(cat(&[client_start(), get(&mut c, 1, "/cancelled", true)])),
            out(frame(RST_STREAM, 0, 1, &[0, 0, 0, 8])),
        ],
        expect: vec!["req#0 GET /cancelled", "reqend#0", "abort#0 StreamReset"],
    });

    let (mut c, mut s) = (Encoder::new(), Encoder::new());
    cases.push(Case {
        name: "GOAWAY refuses streams above the last processed one",
        steps: vec![
            out(cat(&[
                client_start(),
                get(&mut c, 1, "/a", true),
                get(&mut c, 3, "/b", true),
            ])),
            inp(cat(&[
                server_start(),
                frame(GOAWAY, 0, 0, &[0, 0, 0, 1, 0, 0, 0, 0]),
                status(&mut s, 1, "200", &[], true),
            ])),
        ],
        expect: vec![
            "req#0 GET /a",
            "reqend#0",
            "req#1 GET /b",
            "reqend#1",
            "abort#1 StreamReset",
            "resp#0 200",
            "end#0",
        ],
    });

    let (mut c, mut s) = (Encoder::new(), Encoder::new());
    let mut grpc_req = grpc_message(b"first");
    grpc_req.extend(grpc_message(b"second"));
    cases.push(Case {
        name: "gRPC call with trailers",
        steps: vec![
            out(cat(&[
                client_start(),
                frame(
                    HEADERS,
                    END_HEADERS,
                    1,
                    &block(
                        &mut c,
                        &[
                            (":method", "POST"),
                            (":scheme", "https"),
                            (":path", "/pkg.Svc/Call"),
                            ("content-type", "application/grpc"),
                        ],
                    ),
                ),
                frame(DATA, END_STREAM, 1, &grpc_req),
            ])),
            inp(cat(&[
                server_start(),
                status(
                    &mut s,
                    1,
                    "200",
                    &[("content-type", "application/grpc")],
                    false,
                ),
                frame(DATA, 0, 1, &grpc_message(b"reply")),
                frame(
                    HEADERS,
                    END_HEADERS | END_STREAM,
                    1,
                    &block(&mut s, &[("grpc-status", "0")]),
                ),
            ])),
        ],
        expect: vec![
            "req#0 POST /pkg.Svc/Call",
            "reqbody#0 \0\0\0\0\u{5}first\0\0\0\0\u{6}second",
            "reqend#0",
            "resp#0 200",
            "body#0 \0\0\0\0\u{5}reply",
            "trailers#0 grpc-status=0",
            "end#0",
        ],
    });

    let (mut c, mut s) = (Encoder::new(), Encoder::new());
    cases.push(Case {
        name: "request and response trailers, interleaved streams",
        steps: vec![
            out(cat(&[
                client_start(),
                get(&mut c, 1, "/up", false),
                get(&mut c, 3, "/other", true),
                frame(DATA, 0, 1, b"part"),
                frame(
                    HEADERS,
                    END_HEADERS | END_STREAM,
                    1,
                    &block(&mut c, &[("x-checksum", "abc"), ("X-Count", "1")]),
                ),
            ])),
            inp(cat(&[
                server_start(),
                status(&mut s, 3, "200", &[], false),
                status(&mut s, 1, "200", &[], false),
                frame(DATA, 0, 3, b"three"),
                frame(
                    HEADERS,
                    END_HEADERS | END_STREAM,
                    3,
                    &block(&mut s, &[("grpc-status", "13"), ("grpc-message", "bad")]),
                ),
                // A trailing block without fields ends the stream without a trailers event.
                frame(HEADERS, END_HEADERS | END_STREAM, 1, &block(&mut s, &[])),
            ])),
        ],
        expect: vec![
            "req#0 POST /up",
            "req#1 GET /other",
            "reqend#1",
            "reqbody#0 part",
            "reqtrailers#0 x-checksum=abc&x-count=1",
            "reqend#0",
            "resp#1 200",
            "resp#0 200",
            "body#1 three",
            "trailers#1 grpc-status=13&grpc-message=bad",
            "end#1",
            "end#0",
        ],
    });

    let (mut c, mut s) = (Encoder::new(), Encoder::new());
    cases.push(Case {
        name: "process is the server: preface read, responses written",
        steps: vec![
            inp(cat(&[client_start(), get(&mut c, 1, "/in", true)])),
            out(cat(&[server_start(), status(&mut s, 1, "200", &[], false)])),
            out(frame(DATA, END_STREAM, 1, b"served")),
        ],
        expect: vec![
            "req#0 GET /in",
            "reqend#0",
            "resp#0 200",
            "body#0 served",
            "end#0",
        ],
    });

    let (mut c, mut s) = (Encoder::new(), Encoder::new());
    let promise = {
        let mut p = vec![0, 0, 0, 2];
        p.extend(block(
            &mut s,
            &[
                (":method", "GET"),
                (":scheme", "https"),
                (":path", "/pushed.css"),
            ],
        ));
        p
    };
    cases.push(Case {
        name: "pushed streams are skipped, HPACK state kept",
        steps: vec![
            out(cat(&[client_start(), get(&mut c, 1, "/page", true)])),
            inp(cat(&[
                server_start(),
                frame(PUSH_PROMISE, END_HEADERS, 1, &promise),
                status(&mut s, 2, "200", &[("content-type", "text/css")], false),
                frame(DATA, END_STREAM, 2, b"body{}"),
                status(&mut s, 1, "200", &[("content-type", "text/html")], false),
                frame(DATA, END_STREAM, 1, b"<html>"),
            ])),
        ],
        expect: vec![
            "req#0 GET /page",
            "reqend#0",
            "resp#0 200",
            "body#0 <html>",
            "end#0",
        ],
    });

    let (mut c, mut s) = (Encoder::new(), Encoder::new());
    let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
    gz.write_all(b"decoded over h2").expect("gzip");
    let gz = gz.finish().expect("gzip");
    cases.push(Case {
        name: "gzip body over HTTP/2 is decoded",
        steps: vec![
            out(cat(&[client_start(), get(&mut c, 1, "/gz", true)])),
            inp(cat(&[
                server_start(),
                status(&mut s, 1, "200", &[("content-encoding", "gzip")], false),
                frame(DATA, END_STREAM, 1, &gz),
            ])),
        ],
        expect: vec![
            "req#0 GET /gz",
            "reqend#0",
            "resp#0 200",
            "body#0 decoded over h2",
            "end#0",
        ],
    });

    let (mut c, mut s) = (Encoder::new(), Encoder::new());
    cases.push(Case {
        name: "gap on the response flow aborts open streams and resyncs",
        steps: vec![
            out(cat(&[client_start(), get(&mut c, 1, "/lost", true)])),
            inp(cat(&[server_start(), status(&mut s, 1, "200", &[], false)])),
            Step::Gap(Flow::Ingress, 5000),
            inp(cat(&[
                frame(DATA, END_STREAM, 1, b"tail"),
                frame(PING, 0, 0, &[0; 8]),
            ])),
            out(get(&mut c, 3, "/after", true)),
        ],
        expect: vec![
            "req#0 GET /lost",
            "reqend#0",
            "resp#0 200",
            "abort#0 Resync",
            "resync Ingress 5000 Gap",
            "req#1 GET /after",
            "reqend#1",
        ],
    });

    let mut c = Encoder::new();
    cases.push(Case {
        name: "close aborts open streams",
        steps: vec![
            out(cat(&[client_start(), get(&mut c, 1, "/open", false)])),
            Step::Close,
        ],
        expect: vec!["req#0 POST /open", "abort#0 ConnectionClosed"],
    });

    // Joined mid-stream: no preface, the peer's HPACK table holds entries never seen.
    let (mut c, mut s) = (Encoder::new(), Encoder::new());
    let with_custom = |c: &mut Encoder<'_>, stream: u32| {
        let b = block(
            c,
            &[(":method", "GET"), (":path", "/k"), ("x-api-key", "secret")],
        );
        frame(HEADERS, END_HEADERS | END_STREAM, stream, &b)
    };
    // Before the agent attached: these add `x-api-key` and `x-unseen` to the dynamic tables.
    let _unseen = with_custom(&mut c, 1);
    let _unseen_response = status(&mut s, 1, "200", &[("x-unseen", "1")], true);
    // After: the same fields are sent as references to those entries.
    let indexed_again = with_custom(&mut c, 3);
    cases.push(Case {
        name: "joined mid-stream: fields in unseen table entries are left out, not guessed",
        steps: vec![
            out(cat(&[
                frame(WINDOW_UPDATE, 0, 0, &[0, 0, 1, 0]),
                indexed_again,
            ])),
            inp(status(&mut s, 3, "200", &[("x-unseen", "1")], true)),
            Step::Close,
        ],
        expect: vec![
            "resync Egress 0 MidStream",
            "req#0 GET /k partial",
            "reqend#0",
            "resync Ingress 0 MidStream",
            "resp#0 200 partial",
            "end#0",
        ],
    });

    let (mut c, mut s) = (Encoder::new(), Encoder::new());
    cases.push(Case {
        name: "joined mid-stream: self-contained blocks are decoded",
        steps: vec![
            out(cat(&[
                frame(WINDOW_UPDATE, 0, 0, &[0, 0, 1, 0]),
                get(&mut c, 7, "/fresh", true),
            ])),
            inp(cat(&[
                status(&mut s, 7, "200", &[], false),
                frame(DATA, END_STREAM, 7, b"x"),
            ])),
        ],
        expect: vec![
            "resync Egress 0 MidStream",
            "req#0 GET /fresh",
            "reqend#0",
            "resync Ingress 0 MidStream",
            "resp#0 200",
            "body#0 x",
            "end#0",
        ],
    });

    cases
}

#[test]
fn http2_cases_give_the_same_events_in_any_slicing() {
    let config = Config::default();
    for case in cases() {
        let (events, _) = run_all(&config, &case.steps);
        assert_eq!(summary(&events), case.expect, "case: {}", case.name);
    }
}

#[test]
fn request_head_has_pseudo_headers_split_out() {
    let mut c = Encoder::new();
    let (events, _) = run_all(
        &Config::default(),
        &[out(cat(&[client_start(), get(&mut c, 1, "/p?q=1", true)]))],
    );
    let Some(Event::RequestHead { head, .. }) = events.first() else {
        panic!("no head: {events:?}");
    };
    assert_eq!(head.version, Version::Http2);
    assert_eq!(head.target, "/p?q=1");
    assert_eq!(head.authority.as_deref(), Some("api.example.com"));
    assert_eq!(head.scheme.as_deref(), Some("https"));
    assert_eq!(head.headers.len(), 1);
    assert_eq!(head.header("user-agent"), Some("test/1.0"));
}

#[test]
fn dynamic_table_entries_are_reused_across_requests() {
    let mut c = Encoder::new();
    let mut steps = vec![out(client_start())];
    for i in 0..5u32 {
        // `x-api-key` is not in the static table: the first block adds it to the dynamic table,
        // the next ones refer to it by index.
        let b = block(
            &mut c,
            &[(":method", "GET"), (":path", "/same"), ("x-api-key", "k1")],
        );
        steps.push(out(frame(HEADERS, END_HEADERS | END_STREAM, 1 + 2 * i, &b)));
    }
    let (events, stats) = run_all(&Config::default(), &steps);
    let heads: Vec<_> = events
        .iter()
        .filter_map(|e| match e {
            Event::RequestHead { head, .. } => Some(head.clone()),
            _ => None,
        })
        .collect();
    assert_eq!(heads.len(), 5);
    assert!(heads.iter().all(|h| h == &heads[0]));
    assert_eq!(heads[4].header("x-api-key"), Some("k1"));
    assert_eq!(stats.hpack_errors.total(), 0);
}

#[test]
fn stats_count_grpc_messages_and_hpack_errors() {
    let cases = cases();
    let grpc = cases
        .iter()
        .find(|c| c.name == "gRPC call with trailers")
        .expect("case");
    let (_, stats) = run_all(&Config::default(), &grpc.steps);
    assert_eq!(stats.grpc_messages, 3);
    let mid = cases
        .iter()
        .find(|c| c.name.starts_with("joined mid-stream: fields in unseen"))
        .expect("case");
    let (events, stats) = run_all(&Config::default(), &mid.steps);
    assert_eq!(stats.hpack_errors.total(), 0, "{stats:?}");
    assert_eq!(
        (
            stats.exchanges,
            stats.h2_partial_heads,
            stats.h2_unknown_fields
        ),
        (1, 2, 2)
    );
    // The request's `x-api-key` and the response's `x-unseen` were indexed before the join.
    let heads: Vec<String> = events
        .iter()
        .filter_map(|e| match e {
            Event::RequestHead { head, .. } => Some(common::fields(&head.headers)),
            Event::ResponseHead { head, .. } => Some(common::fields(&head.headers)),
            _ => None,
        })
        .collect();
    assert_eq!(heads, ["", ""]);
}

#[test]
fn random_frames_never_panic_and_buffers_stay_bounded() {
    use rand::{Rng, SeedableRng};
    let mut rng = rand::rngs::StdRng::seed_from_u64(11);
    let config = Config::default();
    for _ in 0..30 {
        let mut conn = taskless_http::Connection::new(config.clone());
        let mut events = Vec::new();
        conn.feed(Flow::Egress, PREFACE, 0, &mut events);
        for i in 0..300u64 {
            // Plausible frame headers with random payloads, so the state machine goes deep.
            let kind = rng.random_range(0..11u8);
            let flags: u8 = rng.random();
            let stream = rng.random_range(0..8u32);
            let len = rng.random_range(0..200usize);
            let payload: Vec<u8> = (0..len).map(|_| rng.random()).collect();
            let flow = if rng.random_bool(0.5) {
                Flow::Egress
            } else {
                Flow::Ingress
            };
            conn.feed(flow, &frame(kind, flags, stream, &payload), i, &mut events);
            if rng.random_bool(0.02) {
                conn.gap(flow, rng.random_range(1..5000), i, &mut events);
            }
            assert!(
                conn.buffered_bytes() <= 4 * (64 << 10),
                "buffers: {}",
                conn.buffered_bytes()
            );
        }
        conn.close(10_000, &mut events);
    }
}
