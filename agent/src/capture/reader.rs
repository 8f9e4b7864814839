//! The ring-buffer reader: drains the kernel's records and hands them on, decoded.
//!
//! The eBPF programs submit without waking the reader (a wakeup per record would multiply the
//! cost of every TLS call), so this thread polls the ring on a timer (10 to 40 ms, longer the
//! fewer records come: [`next_wait`]) as well as on the kernel's occasional forced wakeups. It
//! never blocks on what comes after it: the consumer is a plain callback on this thread that
//! must itself be non-blocking.

use std::{
    os::fd::AsRawFd as _,
    sync::{
        Arc,
        atomic::{AtomicBool, Ordering},
    },
    time::{Duration, Instant},
};

use super::{
    record::{Record, decode},
    ring::Ring,
};

/// The shortest the reader sleeps in `poll` when nothing woke it: while records come at least
/// [`DRAIN_TARGET`] per this long.
pub const POLL_INTERVAL: Duration = Duration::from_millis(10);

/// The longest the reader sleeps when nothing wakes it. While the ring stays empty each poll
/// doubles the wait up to this; while records trickle in, the wait is what brings about
/// [`DRAIN_TARGET`] of them at their rate, within [`POLL_INTERVAL`] and this. Every wake-up of
/// an idle thread costs tens of microseconds of CPU in a virtual machine, and each drain wakes
/// a pack worker and an output after it; the ring still wakes the reader itself when it fills
/// past a quarter.
pub const POLL_IDLE_MAX: Duration = Duration::from_millis(40);

/// Records a drain aims to find: at low rates the reader waits longer between drains so each
/// one (and the worker and output woken after it) handles a batch, not an exchange or two.
pub const DRAIN_TARGET: u32 = 256;

/// How long to wait before the next poll, after a drain that found `records` in the `elapsed`
/// time since the one before, having waited `wait`.
#[must_use]
pub fn next_wait(wait: Duration, elapsed: Duration, records: u32) -> Duration {
    if records == 0 {
        return (wait * 2).clamp(POLL_INTERVAL, POLL_IDLE_MAX);
    }
    // The time that brings `DRAIN_TARGET` records at the rate just seen.
    (elapsed * DRAIN_TARGET / records).clamp(POLL_INTERVAL, POLL_IDLE_MAX)
}

crate::stats::counters! {
    /// Counters of the reader itself.
    pub struct CaptureStats {
        /// Records decoded.
        records,
        /// Payload bytes decoded.
        bytes,
        /// Records that could not be decoded (dropped).
        undecodable,
    }
}

/// What the reader hands its consumer.
#[derive(Debug)]
pub enum Delivery {
    /// A decoded record.
    Record(Record),
    /// The ring is drained for now: a moment for housekeeping.
    Idle,
}

/// Reads `ring` until `stop` is set, then drains what is left and returns.
pub fn run(
    mut ring: Ring,
    stop: &AtomicBool,
    stats: &Arc<CaptureStats>,
    mut deliver: impl FnMut(Delivery),
) {
    let fd = ring.as_raw_fd();
    let mut wait = POLL_INTERVAL;
    let mut last_drain = Instant::now();
    loop {
        let stopping = stop.load(Ordering::Acquire);
        let mut delivered = 0u32;
        while let Some(item) = ring.next_record() {
            delivered = delivered.saturating_add(1);
            match decode(item) {
                Ok(record) => {
                    stats.records.fetch_add(1, Ordering::Relaxed);
                    if let Record::Data(d) = &record {
                        stats
                            .bytes
                            .fetch_add(d.payload.len() as u64, Ordering::Relaxed);
                    }
                    tracing::trace!(?record, "record");
                    deliver(Delivery::Record(record));
                }
                Err(e) => {
                    stats.undecodable.fetch_add(1, Ordering::Relaxed);
                    tracing::debug!(error = %e, "undecodable record dropped");
                }
            }
        }
        if stopping {
            return;
        }
        deliver(Delivery::Idle);
        let mut pfd = libc::pollfd {
            fd,
            events: libc::POLLIN,
            revents: 0,
        };
        let now = Instant::now();
        wait = next_wait(wait, now - last_drain, delivered);
        last_drain = now;
        let timeout = i32::try_from(wait.as_millis()).unwrap_or(10);
        // SAFETY: one valid pollfd for the duration of the call.
        let _ = unsafe { libc::poll(&raw mut pfd, 1, timeout) };
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const MS: Duration = Duration::from_millis(1);

    #[test]
    fn an_empty_ring_doubles_the_wait_up_to_the_longest() {
        assert_eq!(next_wait(POLL_INTERVAL, 10 * MS, 0), 20 * MS);
        assert_eq!(next_wait(20 * MS, 20 * MS, 0), POLL_IDLE_MAX);
        assert_eq!(next_wait(POLL_IDLE_MAX, 40 * MS, 0), POLL_IDLE_MAX);
    }

    #[test]
    fn the_wait_is_what_brings_a_full_drain_at_the_rate_just_seen() {
        // 64 records in 10 ms: a drain of 256 takes 40 ms.
        assert_eq!(next_wait(POLL_INTERVAL, 10 * MS, 64), 40 * MS);
        // 128 records in 10 ms: 20 ms.
        assert_eq!(next_wait(POLL_INTERVAL, 10 * MS, 128), 20 * MS);
        // A trickle waits the longest, a flood the shortest.
        assert_eq!(next_wait(POLL_INTERVAL, 10 * MS, 1), POLL_IDLE_MAX);
        assert_eq!(next_wait(POLL_IDLE_MAX, 5 * MS, 100_000), POLL_INTERVAL);
        // The first record after a quiet spell does not bring back the shortest wait.
        assert_eq!(next_wait(POLL_IDLE_MAX, 40 * MS, 1), POLL_IDLE_MAX);
    }
}
