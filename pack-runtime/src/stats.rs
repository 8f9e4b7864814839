//! Per-pack counters and warnings that do not flood the log.

use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use serde::Serialize;

/// The ways one hook call of one pack can fail.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum FailureKind {
    /// The call ran longer than the pack's timeout.
    Timeout,
    /// The call used up its fuel.
    Fuel,
    /// The instance tried to grow memory past its cap.
    OutOfMemory,
    /// The module trapped (unreachable, bad memory access, ...) or a host call refused it
    /// (a network request, for instance).
    Trap,
    /// The pack reported an error itself (Extism `error_set` or a non-zero return code).
    PackError,
    /// The output was not a JSON object of the expected shape.
    InvalidOutput,
    /// The output was larger than the pack's output cap.
    OutputTooLarge,
    /// A new instance could not be created.
    Instantiate,
}

impl FailureKind {
    /// Every kind, in a fixed order (the order of [`PackStats::failures`]).
    pub const ALL: [FailureKind; 8] = [
        FailureKind::Timeout,
        FailureKind::Fuel,
        FailureKind::OutOfMemory,
        FailureKind::Trap,
        FailureKind::PackError,
        FailureKind::InvalidOutput,
        FailureKind::OutputTooLarge,
        FailureKind::Instantiate,
    ];

    /// A short name for logs and metrics.
    #[must_use]
    pub fn as_str(self) -> &'static str {
        match self {
            FailureKind::Timeout => "timeout",
            FailureKind::Fuel => "fuel",
            FailureKind::OutOfMemory => "out_of_memory",
            FailureKind::Trap => "trap",
            FailureKind::PackError => "pack_error",
            FailureKind::InvalidOutput => "invalid_output",
            FailureKind::OutputTooLarge => "output_too_large",
            FailureKind::Instantiate => "instantiate",
        }
    }

    fn index(self) -> usize {
        match self {
            FailureKind::Timeout => 0,
            FailureKind::Fuel => 1,
            FailureKind::OutOfMemory => 2,
            FailureKind::Trap => 3,
            FailureKind::PackError => 4,
            FailureKind::InvalidOutput => 5,
            FailureKind::OutputTooLarge => 6,
            FailureKind::Instantiate => 7,
        }
    }
}

/// A snapshot of one pack's counters, summed over all workers.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct PackStats {
    /// `name@version`.
    pub pack: String,
    /// Hook calls made (successful or not).
    pub calls: u64,
    /// Hook calls not made because the request's host is outside the pack's `domains`.
    pub skipped_domain: u64,
    /// Failed calls by kind, in the order of [`FailureKind::ALL`]; kinds with no failures are
    /// left out.
    pub failures: Vec<(FailureKind, u64)>,
    /// Instances dropped after a failure and created again.
    pub instances_recreated: u64,
}

impl PackStats {
    /// Failed calls of one kind.
    #[must_use]
    pub fn failures_of(&self, kind: FailureKind) -> u64 {
        self.failures
            .iter()
            .find(|(k, _)| *k == kind)
            .map_or(0, |(_, n)| *n)
    }

    /// Failed calls of every kind.
    #[must_use]
    pub fn failures_total(&self) -> u64 {
        self.failures.iter().map(|(_, n)| n).sum()
    }
}

/// The live counters of one pack, shared by all workers.
#[derive(Debug)]
pub(crate) struct Counters {
    pub calls: AtomicU64,
    pub skipped_domain: AtomicU64,
    failures: [AtomicU64; 8],
    pub instances_recreated: AtomicU64,
    warn: Mutex<WarnGate>,
    warn_interval: Duration,
}

#[derive(Debug, Default)]
struct WarnGate {
    last: Option<Instant>,
    suppressed: u64,
}

impl Counters {
    pub fn new(warn_interval: Duration) -> Self {
        Self {
            calls: AtomicU64::new(0),
            skipped_domain: AtomicU64::new(0),
            failures: Default::default(),
            instances_recreated: AtomicU64::new(0),
            warn: Mutex::new(WarnGate::default()),
            warn_interval,
        }
    }

    /// Counts a failure and logs it, at most once per interval per pack; the warning says how
    /// many were left unlogged since the last one.
    pub fn fail(&self, pack: &str, hook: &str, kind: FailureKind, message: &str) {
        self.failures[kind.index()].fetch_add(1, Ordering::Relaxed);
        let suppressed = {
            let Ok(mut gate) = self.warn.lock() else {
                return;
            };
            let now = Instant::now();
            match gate.last {
                Some(last) if now.duration_since(last) < self.warn_interval => {
                    gate.suppressed += 1;
                    return;
                }
                _ => {
                    gate.last = Some(now);
                    std::mem::take(&mut gate.suppressed)
                }
            }
        };
        tracing::warn!(
            pack,
            hook,
            kind = kind.as_str(),
            error = message,
            suppressed,
            "pack call failed"
        );
    }

    pub fn snapshot(&self, pack: &str) -> PackStats {
        PackStats {
            pack: pack.to_string(),
            calls: self.calls.load(Ordering::Relaxed),
            skipped_domain: self.skipped_domain.load(Ordering::Relaxed),
            failures: FailureKind::ALL
                .iter()
                .filter_map(|k| {
                    let n = self.failures[k.index()].load(Ordering::Relaxed);
                    (n > 0).then_some((*k, n))
                })
                .collect(),
            instances_recreated: self.instances_recreated.load(Ordering::Relaxed),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn failures_are_counted_by_kind_even_when_not_logged() {
        let c = Counters::new(Duration::from_secs(3600));
        for _ in 0..5 {
            c.fail("p@1", "pre", FailureKind::Timeout, "timeout");
        }
        c.fail("p@1", "post", FailureKind::Trap, "unreachable");
        let s = c.snapshot("p@1");
        assert_eq!(s.failures_of(FailureKind::Timeout), 5);
        assert_eq!(s.failures_of(FailureKind::Trap), 1);
        assert_eq!(s.failures_of(FailureKind::Fuel), 0);
        assert_eq!(s.failures_total(), 6);
        let gate = c.warn.lock().expect("not poisoned");
        assert_eq!(gate.suppressed, 5, "only the first failure is logged");
    }
}
