//! Real HTTP/2 connections (curl and node clients, `tests/data/h2`), fed whole, byte by byte and
//! in random slices, then joined in the middle: at every chunk and at offsets inside chunks.
//! A joined connection must report every exchange that starts after the join, with exactly the
//! fields it could decode (a head that lost fields is marked partial), never a wrong value, and
//! count the streams it could not follow.

mod common;

use std::sync::Arc;

use common::{Step, run_all};
use taskless_http::{Assembled, Assembler, Config, Event, Exchange, Flow};

fn capture(name: &str) -> Vec<Step> {
    let path = format!("{}/tests/data/h2/{name}", env!("CARGO_MANIFEST_DIR"));
    let text = std::fs::read_to_string(&path).expect("capture file");
    text.lines()
        .map(|line| {
            let (dir, hex) = line.split_once(' ').expect("`> hex` or `< hex`");
            let flow = if dir == ">" {
                Flow::Egress
            } else {
                Flow::Ingress
            };
            let bytes = (0..hex.len())
                .step_by(2)
                .map(|i| u8::from_str_radix(&hex[i..i + 2], 16).expect("hex"))
                .collect();
            Step::Write(flow, bytes)
        })
        .collect()
}

/// The complete exchanges of `events`.
fn exchanges(events: &[Event]) -> Vec<Exchange> {
    let mut asm = Assembler::new(1 << 20);
    let mut ready = Vec::new();
    for e in events {
        asm.push(e.clone(), &mut ready);
    }
    ready
        .into_iter()
        .filter_map(|a| match a {
            Assembled::Complete { exchange, .. } => Some(*exchange),
            _ => None,
        })
        .collect()
}

fn pairs(h: &taskless_http::Headers) -> Vec<(String, String)> {
    h.iter()
        .map(|(n, v)| (n.to_owned(), v.to_owned()))
        .collect()
}

/// Whether `part` is `whole` with some elements left out.
fn is_subsequence<T: PartialEq>(part: &[T], whole: &[T]) -> bool {
    let mut it = whole.iter();
    part.iter().all(|p| it.any(|w| w == p))
}

#[test]
fn captured_connections_decode_every_exchange_exactly() {
    let config = Config::default();
    for (name, statuses) in [
        ("curl.txt", vec![200, 200, 200, 429, 429, 200, 201]),
        ("node.txt", vec![200, 201, 200, 201, 429, 429, 200]),
    ] {
        let (events, stats) = run_all(&config, &capture(name));
        let done = exchanges(&events);
        assert_eq!(
            done.iter()
                .map(|e| e.response.head.status)
                .collect::<Vec<_>>(),
            statuses,
            "{name}"
        );
        for e in &done {
            let (req, resp) = (&e.request.head, &e.response.head);
            assert!(!req.partial && !resp.partial, "{name}: {req:?} {resp:?}");
            assert_eq!(
                req.header("authorization"),
                Some("Bearer sk-test-0123456789"),
                "{name}"
            );
            assert!(
                resp.header("x-request-id")
                    .is_some_and(|v| v.starts_with("req_")),
                "{name}"
            );
            assert!(e.response.body.data.starts_with(b"{"), "{name}");
        }
        assert_eq!(stats.hpack_errors.total(), 0, "{name}");
        assert_eq!(stats.h2_skipped_streams.total(), 0, "{name}");
        assert_eq!((stats.h2_partial_heads, stats.resyncs), (0, 0), "{name}");
    }
}

/// What one join gave, for the totals.
#[derive(Default, Debug)]
struct Tally {
    joins: usize,
    exchanges: usize,
    partial: usize,
    unknown_fields: u64,
}

/// Checks the exchanges of a connection joined before step `k` (its first `cut` bytes lost)
/// against those of the whole connection.
fn check_join(name: &str, steps: &[Step], k: usize, cut: usize, tally: &mut Tally) {
    let config = Config::default();
    let mut steps = steps.to_vec();
    steps.push(Step::Close);
    let (whole_events, _) = run_all(&config, &steps);
    let whole = exchanges(&whole_events);
    let Step::Write(flow, first) = &steps[k] else {
        unreachable!("captures hold writes only")
    };
    let steps = &steps[..steps.len() - 1];
    let mut joined_steps = vec![Step::Write(*flow, first[cut.min(first.len())..].to_vec())];
    joined_steps.extend_from_slice(&steps[k + 1..]);
    joined_steps.push(Step::Close);
    let (events, stats) = run_all(&config, &joined_steps);
    let joined = exchanges(&events);
    let at = format!("{name} joined at chunk {k} + {cut} bytes");
    // Timestamps are per step: step i of the joined run is step k + i of the whole one.
    let shift = k as u64 * 1000;
    let by_start = |start: u64| -> Option<&Exchange> {
        whole.iter().find(|w| w.request.start_ns == start + shift)
    };
    for j in &joined {
        let w = by_start(j.request.start_ns)
            .unwrap_or_else(|| panic!("{at}: {j:?} not in the whole run"));
        let (jr, wr) = (&j.request.head, &w.request.head);
        assert!(
            jr.method.is_empty() || jr.method == wr.method,
            "{at}: {jr:?}"
        );
        assert!(
            jr.target.is_empty() || jr.target == wr.target,
            "{at}: {jr:?}"
        );
        assert!(
            jr.authority.is_none() || jr.authority == wr.authority,
            "{at}: {jr:?}"
        );
        assert!(
            is_subsequence(&pairs(&jr.headers), &pairs(&wr.headers)),
            "{at}: {jr:?} vs {wr:?}"
        );
        assert_eq!(
            jr.partial,
            jr != &with_partial(wr, jr.partial),
            "{at}: {jr:?}"
        );
        let (js, ws) = (&j.response.head, &w.response.head);
        assert!(
            js.status == ws.status || (js.status == 0 && js.partial),
            "{at}: {js:?}"
        );
        assert!(
            is_subsequence(&pairs(&js.headers), &pairs(&ws.headers)),
            "{at}: {js:?} vs {ws:?}"
        );
        if !js.partial {
            assert_eq!(pairs(&js.headers), pairs(&ws.headers), "{at}");
        }
        assert_eq!(j.request.body, w.request.body, "{at}");
        assert_eq!(j.response.body, w.response.body, "{at}");
        tally.partial += usize::from(jr.partial) + usize::from(js.partial);
    }
    // Every exchange that starts after the joined chunk is reported.
    let after: Vec<&Arc<_>> = whole
        .iter()
        .filter(|w| w.request.start_ns > shift + 1000)
        .map(|w| &w.request)
        .collect();
    for w in &after {
        assert!(
            joined
                .iter()
                .any(|j| j.request.start_ns + shift == w.start_ns),
            "{at}: exchange {} {} lost",
            w.head.method,
            w.head.target
        );
    }
    // Exchanges under way at the join are counted as skipped streams (when the join is at a
    // chunk boundary, every frame after it is seen).
    if cut == 0 {
        let under_way = whole
            .iter()
            .filter(|w| w.request.start_ns <= shift && w.response.end_ns > shift)
            .count() as u64;
        // (A stream whose first block seen names neither side, before the flows' roles are
        // known, counts as an undecodable head.)
        let skips = &stats.h2_skipped_streams;
        assert!(
            skips.started_unseen + skips.undecodable_head >= under_way,
            "{at}: {under_way} under way, {stats:?}"
        );
    }
    assert_eq!(stats.hpack_errors.index_out_of_range, 0, "{at}: {stats:?}");
    tally.joins += 1;
    tally.exchanges += joined.len();
    tally.unknown_fields += stats.h2_unknown_fields;
}

/// `head` with its `partial` flag set to `partial`, to compare the rest.
fn with_partial(head: &taskless_http::RequestHead, partial: bool) -> taskless_http::RequestHead {
    taskless_http::RequestHead {
        partial,
        ..head.clone()
    }
}

#[test]
fn joined_mid_connection_reports_later_exchanges_partial_never_wrong() {
    for name in ["curl.txt", "node.txt"] {
        let steps = capture(name);
        let mut tally = Tally::default();
        for k in 1..steps.len() {
            let Step::Write(_, first) = &steps[k] else {
                unreachable!()
            };
            for cut in [0, 1, 9, 13, first.len() / 2] {
                if cut < first.len() {
                    check_join(name, &steps, k, cut, &mut tally);
                }
            }
        }
        // The joins lose table entries (partial heads), yet most exchanges come through.
        assert!(
            tally.partial > 0 && tally.unknown_fields > 0,
            "{name}: {tally:?}"
        );
        assert!(tally.exchanges > 2 * tally.joins, "{name}: {tally:?}");
    }
}

/// Joined just after the first exchange: curl's later requests refer to the table entries of
/// `:authority`, `user-agent`, `accept` and `x-api-key` that the first one inserted; `:method`,
/// `:path` (which nghttp2 never indexes), `authorization` (never indexed, as a credential) and
/// `:status` (a static entry) are still known.
#[test]
fn curl_joined_after_its_first_exchange() {
    let steps = capture("curl.txt");
    // Chunks 0-4 carry the first exchange (preface, settings, request, response).
    let (events, stats) = run_all(&Config::default(), &steps[5..]);
    let done = exchanges(&events);
    assert_eq!(done.len(), 6);
    let first = &done[0];
    let req = &first.request.head;
    assert_eq!(
        (req.method.as_ref(), req.target.as_ref()),
        ("GET", "/v1/models?limit=2")
    );
    assert!(req.partial);
    assert_eq!(req.authority, None);
    assert_eq!(
        common::fields(&req.headers),
        "authorization=Bearer sk-test-0123456789"
    );
    assert_eq!(first.response.head.status, 200);
    // curl repeats the same fields, so the same ones stay unknown in every later request.
    assert!(done.iter().all(|e| e.request.head.partial));
    assert!(
        done.iter()
            .all(|e| e.request.head.header("x-api-key").is_none())
    );
    assert_eq!(
        done.iter()
            .map(|e| e.response.head.status)
            .collect::<Vec<_>>(),
        [200, 200, 429, 429, 200, 201]
    );
    // Four request fields (:authority, user-agent, accept, x-api-key) in each of six requests,
    // and the response fields indexed by the first response.
    assert!(stats.h2_unknown_fields >= 6 * 4, "{stats:?}");
    assert_eq!(stats.hpack_errors.total(), 0);
}
