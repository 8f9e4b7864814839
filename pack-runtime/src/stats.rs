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
    /// Exchanges on which the pack was skipped (shed) because its worker fell behind.
    pub skipped_shed: u64,
    /// Failed calls by kind, in the order of [`FailureKind::ALL`]; kinds with no failures are
    /// left out.
    pub failures: Vec<(FailureKind, u64)>,
    /// Instances dropped after a failure and created again.
    pub instances_recreated: u64,
    /// The time one call took on its worker thread (the Extism call: input copy, the pack's
    /// work, output), as percentiles of a histogram with four buckets per doubling (each
    /// figure is its bucket's upper bound, within 19 % above the true value); `None` before
    /// the first call.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub call_time: Option<CallTime>,
}

/// Percentiles of one pack's time per call (in JSON: microseconds, `p50_us`, ...).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct CallTime {
    /// Half of the calls took at most this.
    #[serde(rename = "p50_us", serialize_with = "micros")]
    pub p50: Duration,
    /// 99 % of the calls took at most this.
    #[serde(rename = "p99_us", serialize_with = "micros")]
    pub p99: Duration,
    /// The longest call's bucket.
    #[serde(rename = "max_us", serialize_with = "micros")]
    pub max: Duration,
}

#[allow(clippy::trivially_copy_pass_by_ref)] // serde's serialize_with takes a reference
fn micros<S: serde::Serializer>(d: &Duration, s: S) -> Result<S::Ok, S::Error> {
    s.serialize_f64(d.as_secs_f64() * 1e6)
}

/// Buckets of [`CallHistogram`]: bucket `i` holds calls of at most 2^(i/4) µs, so 84 buckets
/// reach about 2,000 s; the last one holds everything longer.
const BUCKETS: usize = 84;

/// Times per call in fixed, log-spaced buckets of atomics: shared by every worker, no locks.
#[derive(Debug)]
pub(crate) struct CallHistogram {
    buckets: [AtomicU64; BUCKETS],
}

impl CallHistogram {
    fn new() -> Self {
        Self {
            buckets: std::array::from_fn(|_| AtomicU64::new(0)),
        }
    }

    fn bucket(took: Duration) -> usize {
        let micros = took.as_secs_f64() * 1e6;
        if micros <= 1.0 {
            return 0;
        }
        // Four buckets per doubling; the float is small and positive here.
        #[allow(clippy::cast_possible_truncation, clippy::cast_sign_loss)]
        let i = (micros.log2() * 4.0).ceil() as usize;
        i.min(BUCKETS - 1)
    }

    /// The upper bound of bucket `i`.
    fn bound(i: usize) -> Duration {
        #[allow(clippy::cast_precision_loss)] // i < 84
        Duration::from_secs_f64((i as f64 / 4.0).exp2() / 1e6)
    }

    pub(crate) fn record(&self, took: Duration) {
        self.buckets[Self::bucket(took)].fetch_add(1, Ordering::Relaxed);
    }

    fn snapshot(&self) -> Option<CallTime> {
        let counts: Vec<u64> = self
            .buckets
            .iter()
            .map(|b| b.load(Ordering::Relaxed))
            .collect();
        let total: u64 = counts.iter().sum();
        if total == 0 {
            return None;
        }
        let at = |share: f64| {
            // The rank of the call at this share, 1-based; `total` is far below 2^53.
            #[allow(
                clippy::cast_precision_loss,
                clippy::cast_possible_truncation,
                clippy::cast_sign_loss
            )]
            let rank = ((total as f64 * share).ceil() as u64).max(1);
            let mut seen = 0;
            for (i, n) in counts.iter().enumerate() {
                seen += n;
                if seen >= rank {
                    return Self::bound(i);
                }
            }
            Self::bound(BUCKETS - 1)
        };
        Some(CallTime {
            p50: at(0.5),
            p99: at(0.99),
            max: at(1.0),
        })
    }
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
    pub skipped_shed: AtomicU64,
    failures: [AtomicU64; 8],
    pub instances_recreated: AtomicU64,
    pub call_time: CallHistogram,
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
            skipped_shed: AtomicU64::new(0),
            failures: Default::default(),
            instances_recreated: AtomicU64::new(0),
            call_time: CallHistogram::new(),
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
            skipped_shed: self.skipped_shed.load(Ordering::Relaxed),
            failures: FailureKind::ALL
                .iter()
                .filter_map(|k| {
                    let n = self.failures[k.index()].load(Ordering::Relaxed);
                    (n > 0).then_some((*k, n))
                })
                .collect(),
            instances_recreated: self.instances_recreated.load(Ordering::Relaxed),
            call_time: self.call_time.snapshot(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn call_time_percentiles_come_from_the_buckets_within_a_fifth() {
        let h = CallHistogram::new();
        assert_eq!(h.snapshot(), None);
        for _ in 0..98 {
            h.record(Duration::from_micros(10));
        }
        h.record(Duration::from_micros(1_000));
        h.record(Duration::from_millis(50));
        let t = h.snapshot().expect("calls recorded");
        let within = |got: Duration, want: Duration| {
            got >= want && got.as_secs_f64() <= want.as_secs_f64() * 1.19
        };
        assert!(within(t.p50, Duration::from_micros(10)), "{t:?}");
        assert!(within(t.p99, Duration::from_micros(1_000)), "{t:?}");
        assert!(within(t.max, Duration::from_millis(50)), "{t:?}");
        // Sub-microsecond calls land in the first bucket; hour-long ones in the last.
        h.record(Duration::from_nanos(10));
        h.record(Duration::from_secs(3_600));
        let t = h.snapshot().expect("calls recorded");
        assert_eq!(t.max, CallHistogram::bound(BUCKETS - 1));
    }

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
