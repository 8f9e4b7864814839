//! The `h2_joined` target's logic, shared with the regression tests of `http/tests`.

use taskless_http::{Config, Connection, Event, Flow};

fn frame(kind: u8, flags: u8, stream: u32, payload: &[u8]) -> Vec<u8> {
    let len = u32::try_from(payload.len()).unwrap_or(0);
    let mut f = len.to_be_bytes()[1..].to_vec();
    f.push(kind);
    f.push(flags);
    f.extend_from_slice(&stream.to_be_bytes());
    f.extend_from_slice(payload);
    f
}

/// The writes an input stands for: `[op, len, bytes...]` records.
fn writes(data: &[u8]) -> Vec<(Flow, Vec<u8>)> {
    let ping = frame(6, 0, 0, &[0; 8]);
    let mut out = vec![(Flow::Egress, ping.clone()), (Flow::Ingress, ping)];
    let mut rest = data;
    while let [op, len, tail @ ..] = rest {
        let n = usize::from(*len).min(tail.len());
        let (body, next) = tail.split_at(n);
        let flow = if op & 1 == 0 {
            Flow::Egress
        } else {
            Flow::Ingress
        };
        let stream = u32::from((op >> 1) & 7) * 2 + 1;
        let bytes = match op >> 4 {
            0..=9 => frame(1, 0x4 | (op >> 6 & 1), stream, body),
            10..=13 => frame(0, (op >> 2) & 1, stream, body),
            14 => frame(9, 0x4, stream, body),
            _ => frame(3, 0, stream, &[0, 0, 0, 8]),
        };
        out.push((flow, bytes));
        rest = next;
    }
    out
}

fn feed(
    writes: &[(Flow, Vec<u8>)],
    bytewise: bool,
) -> (Vec<Event>, taskless_http::ConnectionStats) {
    let mut conn = Connection::new(Config {
        max_header_bytes: 8 << 10,
        ..Config::default()
    });
    let mut events = Vec::new();
    for (i, (flow, bytes)) in writes.iter().enumerate() {
        if bytewise {
            for b in bytes.chunks(1) {
                conn.feed(*flow, b, i as u64, &mut events);
            }
        } else {
            conn.feed(*flow, bytes, i as u64, &mut events);
        }
        assert!(conn.buffered_bytes() <= 4 * (24 << 10));
    }
    conn.close(u64::MAX, &mut events);
    (normalize(events), *conn.stats())
}

/// Joins adjacent body pieces of one exchange carried by the same write.
fn normalize(events: Vec<Event>) -> Vec<Event> {
    let mut out: Vec<Event> = Vec::new();
    for e in events {
        match (out.last_mut(), e) {
            (
                Some(Event::RequestBody { id, data, ts_ns }),
                Event::RequestBody {
                    id: i2,
                    data: more,
                    ts_ns: t2,
                },
            ) if *id == i2 && *ts_ns == t2 => *data = [&data[..], &more[..]].concat().into(),
            (
                Some(Event::ResponseBody { id, data, ts_ns }),
                Event::ResponseBody {
                    id: i2,
                    data: more,
                    ts_ns: t2,
                },
            ) if *id == i2 && *ts_ns == t2 => *data = [&data[..], &more[..]].concat().into(),
            (_, e) => out.push(e),
        }
    }
    out
}

/// Runs one input: its writes fed whole and byte by byte must give the same events.
pub fn run(data: &[u8]) {
    let writes = writes(data);
    let mut whole = feed(&writes, false);
    let mut bytewise = feed(&writes, true);
    if whole.1.decode_errors > 0 {
        // A corrupt compressed body is found corrupt where the decoder meets the damage: what
        // was decoded before it depends on the slicing. Everything else must not.
        let no_body =
            |e: &Event| !matches!(e, Event::RequestBody { .. } | Event::ResponseBody { .. });
        whole.0.retain(no_body);
        bytewise.0.retain(no_body);
    }
    assert_eq!(
        whole, bytewise,
        "the same bytes in another slicing gave other events"
    );
}
