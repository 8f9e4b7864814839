//! Test helpers: feed a scripted connection whole, byte by byte and in random slices, and check
//! that every slicing gives the same events.
#![allow(dead_code)]

use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use taskless_http::{Config, Connection, ConnectionStats, Event, Flow, Headers};

/// One thing that happens on a connection. Each write has its own timestamp (its index).
#[derive(Debug, Clone)]
pub enum Step {
    /// One TLS call's bytes.
    Write(Flow, Vec<u8>),
    /// Bytes lost on a flow.
    Gap(Flow, u64),
    /// Bytes lost somewhere on the connection, amount and direction unknown.
    Desync,
    /// The connection ends.
    Close,
}

/// Bytes the process wrote.
pub fn out(b: impl AsRef<[u8]>) -> Step {
    Step::Write(Flow::Egress, b.as_ref().to_vec())
}

/// Bytes the process read.
pub fn inp(b: impl AsRef<[u8]>) -> Step {
    Step::Write(Flow::Ingress, b.as_ref().to_vec())
}

/// How each write is cut into feeds.
#[derive(Debug, Clone, Copy)]
pub enum Slicing {
    Whole,
    Bytes,
    Random(u64),
}

/// Runs `steps` through a fresh connection, cutting each write per `slicing`.
pub fn run_with(
    config: &Config,
    steps: &[Step],
    slicing: Slicing,
) -> (Vec<Event>, ConnectionStats) {
    let mut conn = Connection::new(config.clone());
    let mut events = Vec::new();
    let mut rng = StdRng::seed_from_u64(match slicing {
        Slicing::Random(seed) => seed,
        _ => 0,
    });
    for (i, step) in steps.iter().enumerate() {
        let ts = (i as u64 + 1) * 1000;
        match step {
            Step::Write(flow, data) => {
                let mut rest = &data[..];
                while !rest.is_empty() {
                    let n = match slicing {
                        Slicing::Whole => rest.len(),
                        Slicing::Bytes => 1,
                        Slicing::Random(_) => rng.random_range(1..=rest.len().min(64)),
                    };
                    conn.feed(*flow, &rest[..n], ts, &mut events);
                    rest = &rest[n..];
                }
            }
            Step::Gap(flow, lost) => conn.gap(*flow, *lost, ts, &mut events),
            Step::Desync => conn.desync(ts, &mut events),
            Step::Close => conn.close(ts, &mut events),
        }
    }
    (events, *conn.stats())
}

/// Merges adjacent body pieces of the same exchange carried by the same write.
pub fn normalize(events: Vec<Event>) -> Vec<Event> {
    let mut out: Vec<Event> = Vec::new();
    for e in events {
        match (out.last_mut(), e) {
            (
                Some(Event::RequestBody { id, data, ts_ns }),
                Event::RequestBody {
                    id: id2,
                    data: more,
                    ts_ns: ts2,
                },
            ) if *id == id2 && *ts_ns == ts2 => *data = [&data[..], &more[..]].concat().into(),
            (
                Some(Event::ResponseBody { id, data, ts_ns }),
                Event::ResponseBody {
                    id: id2,
                    data: more,
                    ts_ns: ts2,
                },
            ) if *id == id2 && *ts_ns == ts2 => *data = [&data[..], &more[..]].concat().into(),
            (_, e) => out.push(e),
        }
    }
    out
}

/// Runs `steps` whole, byte by byte and in 12 random slicings; asserts they all give the same
/// (normalised) events and counters, and returns them.
pub fn run_all(config: &Config, steps: &[Step]) -> (Vec<Event>, ConnectionStats) {
    let (whole, stats) = run_with(config, steps, Slicing::Whole);
    let whole = normalize(whole);
    let mut slicings = vec![Slicing::Bytes];
    slicings.extend((1..=12).map(Slicing::Random));
    for slicing in slicings {
        let (events, other_stats) = run_with(config, steps, slicing);
        let events = normalize(events);
        assert_eq!(
            summary(&events),
            summary(&whole),
            "events differ with {slicing:?}"
        );
        assert_eq!(events, whole, "event details differ with {slicing:?}");
        assert_eq!(other_stats, stats, "counters differ with {slicing:?}");
    }
    (whole, stats)
}

/// A one-line description of each event, for readable expectations.
pub fn summary(events: &[Event]) -> Vec<String> {
    events
        .iter()
        .map(|e| match e {
            Event::RequestHead { id, head, .. } => {
                let partial = if head.partial { " partial" } else { "" };
                format!("req#{id} {} {}{partial}", head.method, head.target)
            }
            Event::RequestBody { id, data, .. } => {
                format!("reqbody#{id} {}", String::from_utf8_lossy(data))
            }
            Event::RequestTrailers { id, trailers, .. } => {
                format!("reqtrailers#{id} {}", fields(trailers))
            }
            Event::RequestEnd { id, .. } => format!("reqend#{id}"),
            Event::ResponseHead { id, head, .. } => {
                let partial = if head.partial { " partial" } else { "" };
                format!("resp#{id} {}{partial}", head.status)
            }
            Event::ResponseBody { id, data, .. } => {
                format!("body#{id} {}", String::from_utf8_lossy(data))
            }
            Event::ResponseTrailers { id, trailers, .. } => {
                format!("trailers#{id} {}", fields(trailers))
            }
            Event::ResponseEnd { id, .. } => format!("end#{id}"),
            Event::Upgrade { id, protocol } => format!("upgrade#{id} {protocol}"),
            Event::Resync {
                flow,
                skipped,
                reason,
            } => format!("resync {flow:?} {skipped} {reason:?}"),
            Event::Aborted { id, reason } => format!("abort#{id} {reason:?}"),
        })
        .collect()
}

/// Fields as `name=value` joined by `&`, for readable expectations.
pub fn fields(headers: &Headers) -> String {
    headers
        .iter()
        .map(|(name, value)| format!("{name}={value}"))
        .collect::<Vec<_>>()
        .join("&")
}
