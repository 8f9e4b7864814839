//! The ring-buffer reader: drains the kernel's records and hands them on, decoded.
//!
//! The eBPF programs submit without waking the reader (a wakeup per record would multiply the
//! cost of every TLS call), so this thread polls the ring on a short timer as well as on the
//! kernel's occasional forced wakeups. It never blocks on what comes after it: the consumer is
//! a plain callback on this thread that must itself be non-blocking.

use std::{
    os::fd::AsRawFd as _,
    sync::{
        Arc,
        atomic::{AtomicBool, Ordering},
    },
    time::Duration,
};

use super::{
    record::{Record, decode},
    ring::Ring,
};

/// How long the reader sleeps in `poll` when nothing woke it, while records are coming.
pub const POLL_INTERVAL: Duration = Duration::from_millis(10);

/// The longest the reader sleeps once the ring has stayed empty: each empty poll doubles the
/// wait up to this, the first record brings it back to [`POLL_INTERVAL`]. Every wake-up of an
/// idle thread costs tens of microseconds of CPU in a virtual machine; the ring still wakes the
/// reader itself when it fills past a quarter.
pub const POLL_IDLE_MAX: Duration = Duration::from_millis(40);

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
    loop {
        let stopping = stop.load(Ordering::Acquire);
        let mut delivered = false;
        while let Some(item) = ring.next_record() {
            delivered = true;
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
        wait = if delivered {
            POLL_INTERVAL
        } else {
            (wait * 2).min(POLL_IDLE_MAX)
        };
        let timeout = i32::try_from(wait.as_millis()).unwrap_or(10);
        // SAFETY: one valid pollfd for the duration of the call.
        let _ = unsafe { libc::poll(&raw mut pfd, 1, timeout) };
    }
}
