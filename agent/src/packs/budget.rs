//! The pack workers' CPU budget (`--pack-cpu`): a token bucket of CPU time that the workers
//! share. It fills at the budget's rate (0.5: half a second of CPU per second of wall time), up
//! to one second's worth; each worker takes out the CPU time its own thread spent running packs
//! (`CLOCK_THREAD_CPUTIME_ID`, split by the share of the wall time the packs took: the work
//! around them, which shedding cannot save, is not charged). While the bucket is in debt, the
//! workers skip their costliest
//! packs for the exchanges they take, the more the deeper the debt ([`CpuBudget::keep_share`]),
//! just as a worker behind on its queue does: a pack is shed, never an exchange.
//!
//! Nice values only order threads that compete for one CPU, and only within one cgroup: a
//! worker at nice 10 still takes every idle cycle of the machine, and in a Kubernetes pod it
//! competes with other pods by the pod's CPU weight, not by nice. The budget bounds what the
//! packs cost whatever else runs: pii reading every 64 KiB response at a few thousand a
//! second would otherwise take most of a CPU.

use std::{
    sync::{
        Mutex,
        atomic::{AtomicI64, Ordering},
    },
    time::{Duration, Instant},
};

/// Wall time whose budget the bucket holds when full: a burst of costly exchanges after a
/// quiet second runs every pack.
const BURST: Duration = Duration::from_secs(1);

/// The shared bucket.
#[derive(Debug)]
pub struct CpuBudget {
    /// CPU nanoseconds per wall nanosecond.
    cpus: f64,
    /// Most the bucket holds, in CPU nanoseconds: one [`BURST`] of budget.
    full: i64,
    /// The level at the last update, in CPU nanoseconds (negative: in debt), read without the
    /// lock by every moment's decision.
    level: AtomicI64,
    /// When the level was last filled up.
    filled: Mutex<Instant>,
}

impl CpuBudget {
    /// A budget of `cpus` CPUs (0.5: half of one), full at `now`; `None` for no budget (0, or
    /// not a positive number).
    #[must_use]
    pub fn new(cpus: f64, now: Instant) -> Option<Self> {
        if !(cpus.is_finite() && cpus > 0.0) {
            return None;
        }
        let full = duration_ns(BURST.mul_f64(cpus)).max(1);
        Some(Self {
            cpus,
            full,
            level: AtomicI64::new(full),
            filled: Mutex::new(now),
        })
    }

    /// Fills the bucket for the wall time since it was last filled, up to full, and takes out
    /// `spent` (CPU time a worker spent on moments); gives the new level in CPU nanoseconds.
    /// The debt is capped at twice a full bucket, so that after a long overload the packs come
    /// back within two seconds of it ending.
    pub fn charge(&self, spent: Duration, now: Instant) -> i64 {
        let mut filled = self
            .filled
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        let elapsed = now.saturating_duration_since(*filled);
        *filled = now.max(*filled);
        let earned = duration_ns(elapsed.mul_f64(self.cpus));
        let level = self
            .level
            .load(Ordering::Relaxed)
            .saturating_add(earned)
            .min(self.full)
            .saturating_sub(duration_ns(spent))
            .max(-2 * self.full);
        self.level.store(level, Ordering::Relaxed);
        level
    }

    /// The share of the packs' cost an exchange keeps now (as
    /// [`keep_share`](super::stage::keep_share) gives for a queue): everything while the bucket
    /// holds any budget; in debt, the costliest packs are skipped until the rest cost at most
    /// half (less than half a bucket of debt), a quarter (less than a bucket), or nothing.
    #[must_use]
    pub fn keep_share(&self) -> Option<f64> {
        let level = self.level.load(Ordering::Relaxed);
        if level > 0 {
            None
        } else if level > -self.full / 2 {
            Some(0.5)
        } else if level > -self.full {
            Some(0.25)
        } else {
            Some(0.0)
        }
    }
}

fn duration_ns(d: Duration) -> i64 {
    i64::try_from(d.as_nanos()).unwrap_or(i64::MAX)
}

/// The CPU time the calling thread has used.
#[must_use]
pub fn thread_cpu() -> Duration {
    let mut t = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: `t` is a valid timespec for the call to write; the clock exists on every Linux
    // the agent supports, and on an error `t` stays zero (the budget then sees no spending).
    unsafe { libc::clock_gettime(libc::CLOCK_THREAD_CPUTIME_ID, &raw mut t) };
    Duration::new(
        u64::try_from(t.tv_sec).unwrap_or(0),
        u32::try_from(t.tv_nsec).unwrap_or(0),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    const MS: Duration = Duration::from_millis(1);

    #[test]
    fn no_budget_for_zero_or_nonsense() {
        let now = Instant::now();
        assert!(CpuBudget::new(0.0, now).is_none());
        assert!(CpuBudget::new(-1.0, now).is_none());
        assert!(CpuBudget::new(f64::NAN, now).is_none());
        assert!(CpuBudget::new(f64::INFINITY, now).is_none());
    }

    #[test]
    fn spending_past_the_budget_sheds_more_the_deeper_the_debt_and_time_pays_it_back() {
        let t0 = Instant::now();
        // Half a CPU: a full bucket holds 500 ms of CPU.
        let b = CpuBudget::new(0.5, t0).expect("budget");
        assert_eq!(b.keep_share(), None, "starts full");
        b.charge(400 * MS, t0);
        assert_eq!(b.keep_share(), None, "100 ms left");
        b.charge(200 * MS, t0);
        assert_eq!(b.keep_share(), Some(0.5), "100 ms in debt");
        b.charge(200 * MS, t0);
        assert_eq!(b.keep_share(), Some(0.25), "300 ms in debt");
        b.charge(300 * MS, t0);
        assert_eq!(b.keep_share(), Some(0.0), "600 ms in debt");
        // The debt stops at two full buckets, 1 s: a long overload is forgotten in 2 s.
        assert_eq!(b.charge(Duration::from_secs(60), t0), -1_000_000_000);
        // Half a CPU pays back 500 ms of debt a second.
        assert_eq!(b.charge(Duration::ZERO, t0 + 1002 * MS), -499_000_000);
        assert_eq!(b.keep_share(), Some(0.25));
        assert_eq!(b.charge(Duration::ZERO, t0 + 2002 * MS), 1_000_000);
        assert_eq!(b.keep_share(), None);
        // It fills up to a full bucket only.
        assert_eq!(b.charge(Duration::ZERO, t0 + 60_000 * MS), 500_000_000);
    }

    #[test]
    fn a_worker_that_charges_late_cannot_turn_time_back() {
        let t0 = Instant::now();
        let b = CpuBudget::new(1.0, t0).expect("budget");
        b.charge(Duration::from_secs(2), t0 + 1000 * MS);
        // Another worker charges with an instant taken before the last fill: nothing is
        // earned twice and nothing goes backwards.
        assert_eq!(b.charge(Duration::ZERO, t0 + 500 * MS), -1_000_000_000);
        assert_eq!(
            b.charge(Duration::ZERO, t0 + 1500 * MS),
            -500_000_000,
            "earned from the latest fill on"
        );
    }

    #[test]
    fn the_thread_clock_counts_this_threads_work_only() {
        let before = thread_cpu();
        let start = Instant::now();
        let mut x = 0u64;
        while thread_cpu() - before < 5 * MS {
            assert!(
                start.elapsed() < Duration::from_secs(10),
                "the clock never moved"
            );
            x = std::hint::black_box(x.wrapping_add(1));
        }
        // Another thread's work and this one's sleep do not count.
        let spinning = Instant::now();
        let other = std::thread::spawn(move || {
            while spinning.elapsed() < 50 * MS {
                std::hint::black_box(0u64);
            }
        });
        let before = thread_cpu();
        std::thread::sleep(50 * MS);
        other.join().expect("spinner");
        assert!(thread_cpu() - before < 5 * MS);
    }
}
