//! Turns fuzz input into a script of feeds, gaps and a close, runs it through a connection and
//! an assembler, and checks the invariants that must hold for any input.

use taskless_http::{Assembler, Config, Connection, Flow};

/// Runs `data` as a script after feeding `prefix` on the egress flow.
pub fn run(prefix: &[u8], data: &[u8]) {
    let config = Config {
        max_header_bytes: 8 << 10,
        max_decoded_body: 1 << 20,
        ..Config::default()
    };
    let bound = 4 * (config.max_header_bytes.max(16 << 10) + 64);
    let mut conn = Connection::new(config);
    let mut asm = Assembler::new(64 << 10);
    let mut events = Vec::new();
    let mut ready = Vec::new();
    conn.feed(Flow::Egress, prefix, 0, &mut events);
    let mut rest = data;
    let mut ts = 1;
    while let [op, len, tail @ ..] = rest {
        let n = usize::from(*len).min(tail.len());
        let (chunk, next) = tail.split_at(n);
        match op % 8 {
            0..=2 => conn.feed(Flow::Egress, chunk, ts, &mut events),
            3..=5 => conn.feed(Flow::Ingress, chunk, ts, &mut events),
            6 => conn.gap(
                if op & 8 == 0 {
                    Flow::Egress
                } else {
                    Flow::Ingress
                },
                u64::from(*len) * 37,
                ts,
                &mut events,
            ),
            _ => conn.close(ts, &mut events),
        }
        assert!(
            conn.buffered_bytes() <= bound,
            "buffered {} > {bound}",
            conn.buffered_bytes()
        );
        for e in events.drain(..) {
            asm.push(e, &mut ready);
        }
        ready.clear();
        rest = next;
        ts += 1;
    }
    conn.close(ts, &mut events);
    for e in events.drain(..) {
        asm.push(e, &mut ready);
    }
    assert_eq!(asm.open_exchanges(), 0, "every exchange ends after close");
}
