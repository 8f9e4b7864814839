//! Kernel timestamps (`CLOCK_MONOTONIC`, what `bpf_ktime_get_ns` returns) to Unix time.

/// Converts monotonic nanoseconds to Unix nanoseconds with one offset measured at creation.
#[derive(Clone, Copy, Debug)]
pub struct Clock {
    offset_ns: i128,
}

fn now_ns(clock: libc::clockid_t) -> i128 {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: a valid out pointer; both clocks always exist on Linux.
    unsafe { libc::clock_gettime(clock, &raw mut ts) };
    i128::from(ts.tv_sec) * 1_000_000_000 + i128::from(ts.tv_nsec)
}

impl Clock {
    /// Measures the offset between the two clocks now.
    #[must_use]
    pub fn new() -> Self {
        let mono = now_ns(libc::CLOCK_MONOTONIC);
        let real = now_ns(libc::CLOCK_REALTIME);
        Self {
            offset_ns: real - mono,
        }
    }

    /// A clock with a known offset (Unix ns minus monotonic ns), e.g. one stored in a
    /// recording, so replayed timestamps convert exactly as they did live.
    #[must_use]
    pub const fn with_offset(offset_ns: i128) -> Self {
        Self { offset_ns }
    }

    /// Unix nanoseconds minus monotonic nanoseconds.
    #[must_use]
    pub const fn offset_ns(&self) -> i128 {
        self.offset_ns
    }

    /// The current monotonic time in nanoseconds.
    #[must_use]
    pub fn monotonic_now() -> u64 {
        u64::try_from(now_ns(libc::CLOCK_MONOTONIC)).unwrap_or(0)
    }

    /// A kernel timestamp as Unix nanoseconds.
    #[must_use]
    pub fn to_unix_ns(&self, monotonic_ns: u64) -> u64 {
        u64::try_from(i128::from(monotonic_ns) + self.offset_ns).unwrap_or(0)
    }
}

impl Default for Clock {
    fn default() -> Self {
        Self::new()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn converts_now_to_within_a_second_of_system_time() {
        let clock = Clock::new();
        let unix = clock.to_unix_ns(Clock::monotonic_now());
        let sys = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_nanos();
        let diff = (i128::try_from(sys).unwrap() - i128::from(unix)).abs();
        assert!(diff < 1_000_000_000, "diff {diff} ns");
    }
}
