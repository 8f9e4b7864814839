//! HTTP/1.x behaviour, table-driven: every case is fed whole, byte by byte and in random slices.

mod common;

use std::io::Write as _;

use common::{Step, inp, out, run_all, summary};
use taskless_http::{Config, Event, Flow, Version};

struct Case {
    name: &'static str,
    steps: Vec<Step>,
    expect: Vec<&'static str>,
}

fn gzip(data: &[u8]) -> Vec<u8> {
    let mut e = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
    e.write_all(data).expect("write");
    e.finish().expect("finish")
}

fn gzip_response() -> Vec<u8> {
    let body = gzip(b"{\"ok\":true,\"n\":[1,2,3]}");
    let mut r = format!(
        "HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Encoding: gzip\r\nContent-Length: {}\r\n\r\n",
        body.len()
    )
    .into_bytes();
    r.extend(body);
    r
}

fn cases() -> Vec<Case> {
    vec![
        Case {
            name: "simple GET with content-length response",
            steps: vec![
                out("GET /v1/models HTTP/1.1\r\nHost: api.example.com\r\n\r\n"),
                inp("HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\nhello"),
            ],
            expect: vec!["req#0 GET /v1/models", "reqend#0", "resp#0 200", "body#0 hello", "end#0"],
        },
        Case {
            name: "keep-alive: two exchanges on one connection",
            steps: vec![
                out("POST /a HTTP/1.1\r\nContent-Length: 3\r\n\r\nabc"),
                inp("HTTP/1.1 201 Created\r\nContent-Length: 2\r\n\r\nok"),
                out("GET /b HTTP/1.1\r\n\r\n"),
                inp("HTTP/1.1 404 Not Found\r\nContent-Length: 0\r\n\r\n"),
            ],
            expect: vec![
                "req#0 POST /a",
                "reqbody#0 abc",
                "reqend#0",
                "resp#0 201",
                "body#0 ok",
                "end#0",
                "req#1 GET /b",
                "reqend#1",
                "resp#1 404",
                "end#1",
            ],
        },
        Case {
            name: "pipelining: responses matched in order",
            steps: vec![
                out("GET /1 HTTP/1.1\r\n\r\nGET /2 HTTP/1.1\r\n\r\nHEAD /3 HTTP/1.1\r\n\r\n"),
                inp("HTTP/1.1 200 OK\r\nContent-Length: 1\r\n\r\nAHTTP/1.1 200 OK\r\nContent-Length: 1\r\n\r\nB"),
                inp("HTTP/1.1 200 OK\r\nContent-Length: 100\r\n\r\n"),
            ],
            expect: vec![
                "req#0 GET /1",
                "reqend#0",
                "req#1 GET /2",
                "reqend#1",
                "req#2 HEAD /3",
                "reqend#2",
                "resp#0 200",
                "body#0 A",
                "end#0",
                "resp#1 200",
                "body#1 B",
                "end#1",
                "resp#2 200",
                "end#2",
            ],
        },
        Case {
            name: "chunked response with extensions and trailers",
            steps: vec![
                out("GET /stream HTTP/1.1\r\n\r\n"),
                inp("HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n5;name=value\r\nhello\r\n"),
                inp("6\r\n world\r\n0\r\nX-Trailer: yes\r\n\r\n"),
            ],
            expect: vec![
                "req#0 GET /stream",
                "reqend#0",
                "resp#0 200",
                "body#0 hello",
                "body#0  world",
                "trailers#0 x-trailer=yes",
                "end#0",
            ],
        },
        Case {
            name: "chunked trailers: several fields, bare LF, then the next pipelined response",
            steps: vec![
                out("GET /a HTTP/1.1\r\n\r\nGET /b HTTP/1.1\r\n\r\n"),
                inp("HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\nTrailer: Grpc-Status\r\n\r\n"),
                inp("2\r\nok\r\n0\r\nGrpc-Status: 0\r\nGrpc-Message: fine\n\n"),
                inp("HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n1\r\nb\r\n0\r\n\r\n"),
            ],
            expect: vec![
                "req#0 GET /a",
                "reqend#0",
                "req#1 GET /b",
                "reqend#1",
                "resp#0 200",
                "body#0 ok",
                "trailers#0 grpc-status=0&grpc-message=fine",
                "end#0",
                "resp#1 200",
                "body#1 b",
                "end#1",
            ],
        },
        Case {
            name: "chunked request with trailers",
            steps: vec![
                out("POST /up HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nabc\r\n0\r\nDigest: sha-256=x\r\n\r\n"),
                inp("HTTP/1.1 204 No Content\r\n\r\n"),
            ],
            expect: vec![
                "req#0 POST /up",
                "reqbody#0 abc",
                "reqtrailers#0 digest=sha-256=x",
                "reqend#0",
                "resp#0 204",
                "end#0",
            ],
        },
        Case {
            name: "unparsable trailer section is skipped to its empty line, not passed on",
            steps: vec![
                out("GET /t HTTP/1.1\r\n\r\n"),
                inp("HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n1\r\nx\r\n0\r\nno colon here\r\n\r\n"),
                out("GET /u HTTP/1.1\r\n\r\n"),
                inp("HTTP/1.1 200 OK\r\nContent-Length: 1\r\n\r\ny"),
            ],
            expect: vec![
                "req#0 GET /t",
                "reqend#0",
                "resp#0 200",
                "body#0 x",
                "end#0",
                "req#1 GET /u",
                "reqend#1",
                "resp#1 200",
                "body#1 y",
                "end#1",
            ],
        },
        Case {
            name: "chunked request body",
            steps: vec![
                out("POST /upload HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nabc\r\n0\r\n\r\n"),
                inp("HTTP/1.1 204 No Content\r\n\r\n"),
            ],
            expect: vec!["req#0 POST /upload", "reqbody#0 abc", "reqend#0", "resp#0 204", "end#0"],
        },
        Case {
            name: "HTTP/1.0 close-delimited response finishes on close",
            steps: vec![
                out("GET /old HTTP/1.0\r\n\r\n"),
                inp("HTTP/1.0 200 OK\r\nContent-Type: text/plain\r\n\r\nfirst "),
                inp("second"),
                Step::Close,
            ],
            expect: vec![
                "req#0 GET /old",
                "reqend#0",
                "resp#0 200",
                "body#0 first ",
                "body#0 second",
                "end#0",
            ],
        },
        Case {
            name: "100-continue then the final response",
            steps: vec![
                out("PUT /f HTTP/1.1\r\nExpect: 100-continue\r\nContent-Length: 4\r\n\r\n"),
                inp("HTTP/1.1 100 Continue\r\n\r\n"),
                out("data"),
                inp("HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n"),
            ],
            expect: vec!["req#0 PUT /f", "reqbody#0 data", "reqend#0", "resp#0 200", "end#0"],
        },
        Case {
            name: "103 early hints before the final response",
            steps: vec![
                out("GET / HTTP/1.1\r\n\r\n"),
                inp("HTTP/1.1 103 Early Hints\r\nLink: </s.css>; rel=preload\r\n\r\nHTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nhi"),
            ],
            expect: vec!["req#0 GET /", "reqend#0", "resp#0 200", "body#0 hi", "end#0"],
        },
        Case {
            name: "204 and 304 have no body even with content-length",
            steps: vec![
                out("GET /a HTTP/1.1\r\n\r\nGET /b HTTP/1.1\r\n\r\nGET /c HTTP/1.1\r\n\r\n"),
                inp("HTTP/1.1 204 No Content\r\n\r\nHTTP/1.1 304 Not Modified\r\nContent-Length: 10\r\n\r\nHTTP/1.1 200 OK\r\nContent-Length: 1\r\n\r\nz"),
            ],
            expect: vec![
                "req#0 GET /a",
                "reqend#0",
                "req#1 GET /b",
                "reqend#1",
                "req#2 GET /c",
                "reqend#2",
                "resp#0 204",
                "end#0",
                "resp#1 304",
                "end#1",
                "resp#2 200",
                "body#2 z",
                "end#2",
            ],
        },
        Case {
            name: "CONNECT tunnel: upgrade reported, tunnel bytes ignored",
            steps: vec![
                out("CONNECT db.internal:5432 HTTP/1.1\r\nHost: db.internal:5432\r\n\r\n"),
                inp("HTTP/1.1 200 Connection established\r\n\r\n"),
                out(b"\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03 not http at all GET / HTTP/1.1\r\n\r\n"),
                inp("\x16\x03\x03\x00\x7a"),
                Step::Close,
            ],
            expect: vec![
                "req#0 CONNECT db.internal:5432",
                "reqend#0",
                "resp#0 200",
                "end#0",
                "upgrade#0 CONNECT",
            ],
        },
        Case {
            name: "101 websocket upgrade stops HTTP parsing; pipelined request aborted",
            steps: vec![
                out("GET /ws HTTP/1.1\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\r\nGET /next HTTP/1.1\r\n\r\n"),
                inp(b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\r\n\x81\x05hello"),
                out(b"\x81\x85\x00\x00\x00\x00hello"),
            ],
            expect: vec![
                "req#0 GET /ws",
                "reqend#0",
                "req#1 GET /next",
                "reqend#1",
                "resp#0 101",
                "end#0",
                "upgrade#0 websocket",
                "abort#1 Upgraded",
            ],
        },
        Case {
            name: "process is the server: reads requests, writes responses",
            steps: vec![
                inp("POST /hook HTTP/1.1\r\nHost: me\r\nContent-Length: 2\r\n\r\n{}"),
                out("HTTP/1.1 202 Accepted\r\nContent-Length: 4\r\n\r\ndone"),
            ],
            expect: vec!["req#0 POST /hook", "reqbody#0 {}", "reqend#0", "resp#0 202", "body#0 done", "end#0"],
        },
        Case {
            name: "joined mid-stream: skip to the next message boundary",
            steps: vec![
                out("ng\":\"tail of an earlier body\"}"),
                inp("more of an old response body"),
                out("GET /fresh HTTP/1.1\r\n\r\n"),
                inp("HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok"),
            ],
            expect: vec![
                "resync Egress 30 MidStream",
                "req#0 GET /fresh",
                "reqend#0",
                "resync Ingress 28 MidStream",
                "resp#0 200",
                "body#0 ok",
                "end#0",
            ],
        },
        Case {
            name: "joined inside a request head and a chunked response body",
            steps: vec![
                out("ost: api.example.com\r\nContent-Length: 2\r\n\r\n{}"),
                inp("5\r\nhello\r\n0\r\n\r\n"),
                out("POST /v1/next HTTP/1.1\r\nContent-Length: 2\r\n\r\n{}"),
                inp("HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n2\r\nok\r\n0\r\n\r\n"),
            ],
            expect: vec![
                "resync Egress 45 MidStream",
                "req#0 POST /v1/next",
                "reqbody#0 {}",
                "reqend#0",
                "resync Ingress 15 MidStream",
                "resp#0 200",
                "body#0 ok",
                "end#0",
            ],
        },
        Case {
            name: "joined inside a server-sent event stream: the next exchange is found",
            steps: vec![
                inp("data: {\"choices\":[{\"delta\":{\"content\":\"GET \"}}]}\n\n"),
                inp("data: [DONE]\n\n"),
                out("GET /v1/models HTTP/1.1\r\nHost: a\r\n\r\n"),
                inp("HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\n{}"),
            ],
            expect: vec![
                "req#0 GET /v1/models",
                "reqend#0",
                "resync Ingress 64 MidStream",
                "resp#0 200",
                "body#0 {}",
                "end#0",
            ],
        },
        Case {
            name: "gap inside a content-length body keeps the exchange",
            steps: vec![
                out("GET /big HTTP/1.1\r\n\r\n"),
                inp("HTTP/1.1 200 OK\r\nContent-Length: 20\r\n\r\n01234"),
                Step::Gap(Flow::Ingress, 10),
                inp("ABCDE"),
            ],
            expect: vec![
                "req#0 GET /big",
                "reqend#0",
                "resp#0 200",
                "body#0 01234",
                "resync Ingress 10 Gap",
                "body#0 ABCDE",
                "end#0",
            ],
        },
        Case {
            name: "a loss of unknown size aborts the waiting request: the next response is not paired with it",
            steps: vec![
                out("GET /a HTTP/1.1\r\n\r\n"),
                Step::Desync,
                out("GET /b HTTP/1.1\r\n\r\n"),
                inp("HTTP/1.1 404 Not Found\r\nContent-Length: 1\r\n\r\nb"),
            ],
            expect: vec![
                "req#0 GET /a",
                "reqend#0",
                "abort#0 Resync",
                "resync Egress 0 Gap",
                "req#1 GET /b",
                "reqend#1",
                "resync Ingress 0 Gap",
                "resp#1 404",
                "body#1 b",
                "end#1",
            ],
        },
        Case {
            name: "a loss of unknown size inside a body aborts it; the next message is found",
            steps: vec![
                out("GET /a HTTP/1.1\r\n\r\n"),
                inp("HTTP/1.1 200 OK\r\nContent-Length: 20\r\n\r\n01234"),
                Step::Desync,
                inp("HTTP/1.1 200 OK\r\nContent-Length: 1\r\n\r\nb"),
                out("GET /c HTTP/1.1\r\n\r\n"),
                inp("HTTP/1.1 200 OK\r\nContent-Length: 1\r\n\r\nc"),
            ],
            expect: vec![
                "req#0 GET /a",
                "reqend#0",
                "resp#0 200",
                "body#0 01234",
                "abort#0 Resync",
                "resync Ingress 0 Gap",
                "resync Egress 0 Gap",
                "req#1 GET /c",
                "reqend#1",
                "resp#1 200",
                "body#1 c",
                "end#1",
            ],
        },
        Case {
            name: "gap in a chunked body aborts the exchange; the next one is found",
            steps: vec![
                out("GET /a HTTP/1.1\r\n\r\n"),
                inp("HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n4\r\nabcd\r\n"),
                Step::Gap(Flow::Ingress, 100),
                inp("ef\r\n0\r\n\r\n"),
                out("GET /b HTTP/1.1\r\n\r\n"),
                inp("HTTP/1.1 200 OK\r\nContent-Length: 1\r\n\r\nb"),
            ],
            expect: vec![
                "req#0 GET /a",
                "reqend#0",
                "resp#0 200",
                "body#0 abcd",
                "abort#0 Resync",
                "req#1 GET /b",
                "reqend#1",
                "resync Ingress 109 Gap",
                "resp#1 200",
                "body#1 b",
                "end#1",
            ],
        },
        Case {
            name: "close with an unanswered request aborts it",
            steps: vec![out("GET /slow HTTP/1.1\r\n\r\n"), Step::Close],
            expect: vec!["req#0 GET /slow", "reqend#0", "abort#0 ConnectionClosed"],
        },
        Case {
            name: "close in the middle of a content-length body aborts",
            steps: vec![
                out("GET /x HTTP/1.1\r\n\r\n"),
                inp("HTTP/1.1 200 OK\r\nContent-Length: 10\r\n\r\nabc"),
                Step::Close,
            ],
            expect: vec!["req#0 GET /x", "reqend#0", "resp#0 200", "body#0 abc", "abort#0 ConnectionClosed"],
        },
        Case {
            name: "gzip body is decoded for packs",
            steps: vec![out("GET /j HTTP/1.1\r\nAccept-Encoding: gzip\r\n\r\n"), inp(gzip_response())],
            expect: vec![
                "req#0 GET /j",
                "reqend#0",
                "resp#0 200",
                "body#0 {\"ok\":true,\"n\":[1,2,3]}",
                "end#0",
            ],
        },
        Case {
            name: "server-sent events arrive piece by piece",
            steps: vec![
                out("POST /v1/chat/completions HTTP/1.1\r\nContent-Length: 2\r\n\r\n{}"),
                inp("HTTP/1.1 200 OK\r\nContent-Type: text/event-stream\r\nTransfer-Encoding: chunked\r\n\r\n"),
                inp("e\r\ndata: {\"a\":1}\n\r\n"),
                inp("e\r\ndata: {\"a\":2}\n\r\n"),
                inp("0\r\n\r\n"),
            ],
            expect: vec![
                "req#0 POST /v1/chat/completions",
                "reqbody#0 {}",
                "reqend#0",
                "resp#0 200",
                "body#0 data: {\"a\":1}\n",
                "body#0 data: {\"a\":2}\n",
                "end#0",
            ],
        },
        Case {
            name: "malformed head resynchronises on the next request",
            steps: vec![
                out("GET /ok HTTP/1.1\r\n\r\n"),
                inp("HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n"),
                out("GET /bad\x01path HTTP/1.1\r\n\r\nGET /again HTTP/1.1\r\n\r\n"),
                inp("HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n"),
            ],
            expect: vec![
                "req#0 GET /ok",
                "reqend#0",
                "resp#0 200",
                "end#0",
                "resync Egress 26 Malformed",
                "req#1 GET /again",
                "reqend#1",
                "resp#1 200",
                "end#1",
            ],
        },
        Case {
            name: "response arriving without any request is skipped whole",
            steps: vec![
                inp("HTTP/1.1 200 OK\r\nContent-Length: 3\r\n\r\nold"),
                out("GET /n HTTP/1.1\r\n\r\n"),
                inp("HTTP/1.1 200 OK\r\nContent-Length: 3\r\n\r\nnew"),
            ],
            expect: vec!["req#0 GET /n", "reqend#0", "resp#0 200", "body#0 new", "end#0"],
        },
    ]
}

#[test]
fn http1_cases_give_the_same_events_in_any_slicing() {
    let config = Config::default();
    for case in cases() {
        let (events, _) = run_all(&config, &case.steps);
        assert_eq!(summary(&events), case.expect, "case: {}", case.name);
    }
}

#[test]
fn heads_carry_version_authority_and_decoded_headers() {
    let (events, _) = run_all(
        &Config::default(),
        &[
            out("GET /j HTTP/1.0\r\nHost: api.example.com\r\nX-Req: 1\r\n\r\n"),
            inp(gzip_response()),
        ],
    );
    let Some(Event::RequestHead { head, .. }) = events.first() else {
        panic!("no request head: {events:?}");
    };
    assert_eq!(head.version, Version::Http10);
    assert_eq!(head.authority.as_deref(), Some("api.example.com"));
    assert_eq!(head.header("x-req"), Some("1"));
    let response = events
        .iter()
        .find_map(|e| match e {
            Event::ResponseHead { head, .. } => Some(head),
            _ => None,
        })
        .expect("response head");
    assert_eq!(response.header("content-encoding"), None);
    assert_eq!(response.header("content-length"), None);
    assert_eq!(response.header("content-type"), Some("application/json"));
    assert_eq!(response.reason, "OK");
}

#[test]
fn stats_count_interim_orphans_and_resyncs() {
    let (_, stats) = run_all(
        &Config::default(),
        &[
            inp("HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n"),
            out("GET / HTTP/1.1\r\n\r\n"),
            inp("HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n"),
            Step::Gap(Flow::Egress, 7),
            out("GET / HTTP/1.1\r\n\r\n"),
        ],
    );
    assert_eq!(stats.orphan_responses, 1);
    assert_eq!(stats.interim_responses, 1);
    assert_eq!(stats.resyncs, 1);
    assert_eq!(stats.bytes_skipped, 7);
    assert_eq!(stats.exchanges, 2);
}

#[test]
fn decompression_bomb_is_cut_at_the_bound() {
    let bomb = gzip(&vec![b'a'; 8 << 20]);
    let mut response = format!(
        "HTTP/1.1 200 OK\r\nContent-Encoding: gzip\r\nContent-Length: {}\r\n\r\n",
        bomb.len()
    )
    .into_bytes();
    response.extend(&bomb);
    let config = Config {
        max_decoded_body: 1 << 20,
        ..Config::default()
    };
    let mut conn = taskless_http::Connection::new(config);
    let mut events = Vec::new();
    conn.feed(Flow::Egress, b"GET / HTTP/1.1\r\n\r\n", 1, &mut events);
    for piece in response.chunks(1000) {
        conn.feed(Flow::Ingress, piece, 2, &mut events);
    }
    let decoded: usize = events
        .iter()
        .map(|e| match e {
            Event::ResponseBody { data, .. } => data.len(),
            _ => 0,
        })
        .sum();
    assert_eq!(decoded, 1 << 20);
    assert!(matches!(events.last(), Some(Event::ResponseEnd { .. })));
    assert_eq!(conn.stats().decode_limited, 1);
}

#[test]
fn garbage_never_panics_and_buffers_stay_bounded() {
    use rand::{Rng, SeedableRng};
    let mut rng = rand::rngs::StdRng::seed_from_u64(7);
    let config = Config {
        max_header_bytes: 4096,
        ..Config::default()
    };
    for round in 0..50 {
        let mut conn = taskless_http::Connection::new(config.clone());
        let mut events = Vec::new();
        for i in 0..200u64 {
            let len = rng.random_range(0..600);
            let mut data: Vec<u8> = (0..len).map(|_| rng.random()).collect();
            if round % 2 == 0 {
                // Mostly printable, with HTTP words sprinkled in.
                for b in &mut data {
                    *b = b" GETPOSHT/1.\r\n:0123456789abcdef"[usize::from(*b) % 31];
                }
            }
            let flow = if rng.random_bool(0.5) {
                Flow::Egress
            } else {
                Flow::Ingress
            };
            conn.feed(flow, &data, i, &mut events);
            if rng.random_bool(0.05) {
                conn.gap(flow, rng.random_range(1..10_000), i, &mut events);
            }
            assert!(
                conn.buffered_bytes() <= 2 * (16_384 + 64),
                "buffers grew to {}",
                conn.buffered_bytes()
            );
        }
        conn.close(1_000, &mut events);
        assert_eq!(conn.buffered_bytes(), 0);
    }
}

/// Bytes that are not HTTP (a protocol the parser does not know, or a stream joined where no
/// message starts) must be skipped as they come, not held: holding them while waiting for a
/// request line makes every later feed re-read the whole buffer.
#[test]
fn a_stream_that_is_not_http_is_skipped_as_it_comes_and_a_later_request_is_found() {
    let mut conn = taskless_http::Connection::new(Config::default());
    let mut events = Vec::new();
    let piece = vec![b'x'; 1024];
    for i in 0..256u64 {
        conn.feed(Flow::Egress, &piece, i, &mut events);
        assert!(
            conn.buffered_bytes() <= 64,
            "after {} KiB of non-HTTP bytes, {} are held",
            i + 1,
            conn.buffered_bytes()
        );
    }
    conn.feed(
        Flow::Egress,
        b"\r\nGET /after HTTP/1.1\r\nHost: a.test\r\n\r\n",
        300,
        &mut events,
    );
    assert!(
        events.iter().any(|e| matches!(
            e,
            Event::RequestHead { head, .. } if head.target == "/after"
        )),
        "{events:?}"
    );
    assert!(
        conn.stats().bytes_skipped >= 256 * 1024,
        "{:?}",
        conn.stats()
    );
}
