//! The sink stage: a slow sink drops and counts without holding up the others; replay loses
//! nothing.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use super::*;
use crate::sinks::exchange::tests::exchange;

/// A sink that records what it got, sleeping `delay` per exchange.
struct Slow {
    name: &'static str,
    delay: Duration,
    got: Arc<Mutex<Vec<String>>>,
}

impl Sink for Slow {
    fn name(&self) -> &'static str {
        self.name
    }
    fn write(&mut self, exchange: &FinishedExchange) -> std::io::Result<()> {
        std::thread::sleep(self.delay);
        self.got
            .lock()
            .map_err(|_| std::io::Error::other("poisoned"))?
            .push(exchange.request_id.clone());
        Ok(())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

fn value(counters: &dyn Counters, name: &str) -> u64 {
    let mut out = Vec::new();
    counters.report(&mut out);
    out.into_iter()
        .find(|(n, _)| n == name)
        .map(|(_, v)| v)
        .unwrap_or_else(|| panic!("no counter {name}"))
}

fn run(backpressure: Backpressure, n: usize) -> (usize, usize, SinkCounters) {
    let slow_got = Arc::new(Mutex::new(Vec::new()));
    let fast_got = Arc::new(Mutex::new(Vec::new()));
    let sinks: Vec<Box<dyn Sink>> = vec![
        Box::new(Slow {
            name: "slow",
            delay: Duration::from_millis(5),
            got: Arc::clone(&slow_got),
        }),
        Box::new(Slow {
            name: "fast",
            delay: Duration::ZERO,
            got: Arc::clone(&fast_got),
        }),
    ];
    let set =
        SinkSet::start_sinks(sinks, Arc::new(LabelLimiter::new(10)), 64, backpressure).unwrap();
    for i in 0..n {
        let mut e = exchange("https://x.io/", &[]);
        e.request_id = format!("{i}");
        set.sender().send(e);
        // Paced, so the fast sink is never more than its queue behind.
        std::thread::sleep(Duration::from_micros(100));
    }
    let counters = set.finish();
    let slow = slow_got.lock().unwrap().len();
    let fast = fast_got.lock().unwrap().len();
    (slow, fast, counters)
}

#[test]
fn a_slow_sink_drops_and_counts_while_the_others_get_everything() {
    let (slow, fast, counters) = run(Backpressure::Drop, 200);
    assert_eq!(fast, 200, "the fast sink lost exchanges");
    assert!(slow < 200, "the slow sink kept up?");
    assert_eq!(value(&counters, "sink_slow_written"), slow as u64);
    assert_eq!(value(&counters, "sink_slow_dropped"), 200 - slow as u64);
    assert_eq!(value(&counters, "sink_fast_dropped"), 0);
    assert_eq!(value(&counters, "sink_fast_written"), 200);
}

#[test]
fn replay_waits_for_every_sink() {
    let (slow, fast, counters) = run(Backpressure::Wait, 50);
    assert_eq!((slow, fast), (50, 50));
    assert_eq!(value(&counters, "sink_slow_dropped"), 0);
}
