//! Whether the agent is alive and ready, for `/healthz` and `/readyz` (Kubernetes liveness and
//! readiness probes). The capture loop beats on every pass; start-up marks each step done.

use std::{
    sync::atomic::{AtomicBool, AtomicU64, Ordering},
    time::{Duration, Instant},
};

/// A capture loop that has not beaten for this long is reported dead.
pub const STALE: Duration = Duration::from_secs(10);

/// The agent's health, shared by the capture loop and the health endpoints.
#[derive(Debug)]
pub struct Health {
    started: Instant,
    /// Milliseconds after `started` of the last beat, plus one (0: never).
    beat_ms: AtomicU64,
    packs: AtomicBool,
    probes: AtomicBool,
    capturing: AtomicBool,
    stopping: AtomicBool,
}

impl Default for Health {
    fn default() -> Self {
        Self::new()
    }
}

impl Health {
    /// Nothing loaded yet.
    #[must_use]
    pub fn new() -> Self {
        Self {
            started: Instant::now(),
            beat_ms: AtomicU64::new(0),
            packs: AtomicBool::new(false),
            probes: AtomicBool::new(false),
            capturing: AtomicBool::new(false),
            stopping: AtomicBool::new(false),
        }
    }

    /// The packs are loaded.
    pub fn packs_loaded(&self) {
        self.packs.store(true, Ordering::Release);
    }

    /// The probes are loaded and attached.
    pub fn probes_loaded(&self) {
        self.probes.store(true, Ordering::Release);
    }

    /// The capture loop runs.
    pub fn capturing(&self) {
        self.capturing.store(true, Ordering::Release);
        self.beat();
    }

    /// The capture loop is alive (called on every pass).
    pub fn beat(&self) {
        let ms = u64::try_from(self.started.elapsed().as_millis()).unwrap_or(u64::MAX);
        self.beat_ms.store(ms.saturating_add(1), Ordering::Relaxed);
    }

    /// The agent is shutting down.
    pub fn stopping(&self) {
        self.stopping.store(true, Ordering::Release);
    }

    fn since_beat(&self) -> Option<Duration> {
        let beat = self.beat_ms.load(Ordering::Relaxed);
        (beat > 0).then(|| {
            self.started
                .elapsed()
                .saturating_sub(Duration::from_millis(beat - 1))
        })
    }

    /// `/healthz`: `Ok` while the capture loop beats; otherwise why not.
    ///
    /// # Errors
    /// A sentence saying what is wrong.
    pub fn live(&self) -> Result<(), String> {
        match self.since_beat() {
            None => Err("starting: the capture loop has not started yet".into()),
            Some(d) if d > STALE => Err(format!(
                "the capture loop has not run for {} s",
                d.as_secs()
            )),
            Some(_) => Ok(()),
        }
    }

    /// `/readyz`: `Ok` once packs and probes are loaded and the capture loop runs, until
    /// shutdown; otherwise what is missing.
    ///
    /// # Errors
    /// A sentence naming what is not ready.
    pub fn ready(&self) -> Result<(), String> {
        let mut missing = Vec::new();
        if self.stopping.load(Ordering::Acquire) {
            return Err("stopping".into());
        }
        if !self.packs.load(Ordering::Acquire) {
            missing.push("packs not loaded");
        }
        if !self.probes.load(Ordering::Acquire) {
            missing.push("probes not loaded");
        }
        if !self.capturing.load(Ordering::Acquire) {
            missing.push("capture not started");
        }
        if missing.is_empty() {
            self.live()
        } else {
            Err(missing.join(", "))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ready_only_once_every_step_is_done_and_not_while_stopping() {
        let h = Health::new();
        assert!(h.live().unwrap_err().starts_with("starting"));
        assert_eq!(
            h.ready().unwrap_err(),
            "packs not loaded, probes not loaded, capture not started"
        );
        h.packs_loaded();
        h.probes_loaded();
        assert_eq!(h.ready().unwrap_err(), "capture not started");
        h.capturing();
        assert_eq!(h.live(), Ok(()));
        assert_eq!(h.ready(), Ok(()));
        h.stopping();
        assert_eq!(h.ready().unwrap_err(), "stopping");
        assert_eq!(h.live(), Ok(()), "alive while draining");
    }
}
