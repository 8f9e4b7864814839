//! Bounded label cardinality: each metric label (domain, method, status, model, dimension)
//! keeps at most N distinct values; later new values are reported as [`OTHER`] and counted, so
//! a client calling many hosts cannot grow the metrics without end. Paths are never labels.

use std::{
    borrow::Cow,
    collections::{HashMap, HashSet},
    sync::{
        Mutex,
        atomic::{AtomicU64, Ordering},
    },
};

use crate::stats::Counters;

/// The value a label takes once its distinct values are used up.
pub const OTHER: &str = "_other";

/// Distinct values per label, shared by the OTLP and Prometheus sinks so both report the same
/// values.
#[derive(Debug)]
pub struct LabelLimiter {
    cap: usize,
    seen: Mutex<HashMap<&'static str, HashSet<String>>>,
    overflowed: AtomicU64,
}

impl LabelLimiter {
    /// At most `cap` distinct values per label.
    #[must_use]
    pub fn new(cap: usize) -> Self {
        Self {
            cap,
            seen: Mutex::new(HashMap::new()),
            overflowed: AtomicU64::new(0),
        }
    }

    /// `value` if label `label` already has it or still has room for it, else [`OTHER`]
    /// (counted).
    pub fn admit<'a>(&self, label: &'static str, value: &'a str) -> Cow<'a, str> {
        let Ok(mut seen) = self.seen.lock() else {
            return Cow::Borrowed(OTHER);
        };
        let values = seen.entry(label).or_default();
        if values.contains(value) {
            return Cow::Borrowed(value);
        }
        if values.len() < self.cap {
            values.insert(value.to_owned());
            return Cow::Borrowed(value);
        }
        self.overflowed.fetch_add(1, Ordering::Relaxed);
        Cow::Borrowed(OTHER)
    }
}

impl Counters for LabelLimiter {
    fn report(&self, out: &mut Vec<(String, u64)>) {
        out.push((
            "label_values_overflowed".into(),
            self.overflowed.load(Ordering::Relaxed),
        ));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn values_past_the_cap_become_other_and_are_counted_per_label() {
        let l = LabelLimiter::new(2);
        assert_eq!(l.admit("domain", "a"), "a");
        assert_eq!(l.admit("domain", "b"), "b");
        assert_eq!(l.admit("domain", "a"), "a");
        assert_eq!(l.admit("domain", "c"), OTHER);
        assert_eq!(l.admit("domain", "d"), OTHER);
        // Another label has its own room.
        assert_eq!(l.admit("method", "c"), "c");
        let mut out = Vec::new();
        l.report(&mut out);
        assert_eq!(out, [("label_values_overflowed".to_owned(), 2)]);
    }
}
