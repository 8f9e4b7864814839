//! The timer thread: stops calls that run past their plugin's timeout, and cancelled ones, by
//! bumping the epoch of the plugin's engine (every call runs with an epoch deadline of one).
//!
//! taskless-agent's copy (see VENDORED.md): a plugin arms and disarms its deadline in memory it
//! shares with the thread ([`Deadline`]), so a call sends no message and wakes no thread. The
//! thread sleeps until the earliest armed deadline, and never longer than the shortest timeout
//! of the live plugins: a call that starts while it sleeps ends no sooner than that, and is
//! seen at the next wake-up. Registering a plugin, cancelling a call and shutting down are
//! messages.

use crate::*;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, OnceLock, Weak};
use std::time::{Duration, Instant};

/// `Deadline::at` of a plugin not running a call.
const IDLE: u64 = 0;

/// `Deadline::at` of a call without a timeout.
const UNLIMITED: u64 = u64::MAX;

/// Nanoseconds from the first use of the timer to `t`, plus one (never [`IDLE`]).
fn stamp(t: Instant) -> u64 {
    static BASE: OnceLock<Instant> = OnceLock::new();
    let base = *BASE.get_or_init(Instant::now);
    let nanos = t.saturating_duration_since(base).as_nanos();
    u64::try_from(nanos).unwrap_or(UNLIMITED - 2).min(UNLIMITED - 2) + 1
}

/// A plugin's call deadline, shared with the timer thread.
pub(crate) struct Deadline {
    engine: Engine,
    /// The plugin's timeout (`None`: its calls run until done or cancelled).
    timeout: Option<Duration>,
    /// [`IDLE`], [`UNLIMITED`], or when the running call must stop ([`stamp`]).
    at: AtomicU64,
}

impl Deadline {
    pub(crate) fn new(engine: Engine, timeout: Option<Duration>) -> Arc<Deadline> {
        Arc::new(Deadline {
            engine,
            timeout,
            at: AtomicU64::new(IDLE),
        })
    }

    /// A call starts, to be stopped after the plugin's timeout.
    pub(crate) fn start(&self) {
        let at = match self.timeout {
            None => UNLIMITED,
            Some(t) => Instant::now()
                .checked_add(t)
                .map_or(UNLIMITED, stamp),
        };
        self.at.store(at, Ordering::Release);
    }

    /// The call is over.
    pub(crate) fn stop(&self) {
        self.at.store(IDLE, Ordering::Release);
    }

    /// Stops the running call, if any.
    fn interrupt(&self) {
        if self.at.swap(IDLE, Ordering::AcqRel) != IDLE {
            self.engine.increment_epoch();
        }
    }

    /// Stops the running call if its deadline is past `now`; else says when the thread must
    /// look again for this plugin: at the running call's deadline, and no later than a call
    /// started now would end.
    fn expire(&self, now: Instant, now_stamp: u64) -> Option<u64> {
        let at = self.at.load(Ordering::Acquire);
        if at != IDLE
            && at != UNLIMITED
            && at <= now_stamp
            && self
                .at
                .compare_exchange(at, IDLE, Ordering::AcqRel, Ordering::Acquire)
                .is_ok()
        {
            trace!("call timed out");
            self.engine.increment_epoch();
        }
        let next_call = self
            .timeout
            .and_then(|t| now.checked_add(t))
            .map(stamp);
        let running = (at != IDLE && at != UNLIMITED && at > now_stamp).then_some(at);
        match (running, next_call) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        }
    }
}

pub(crate) enum TimerAction {
    Register {
        id: uuid::Uuid,
        deadline: Weak<Deadline>,
    },
    Cancel {
        id: uuid::Uuid,
    },
    Shutdown,
}

pub(crate) struct Timer {
    pub tx: std::sync::mpsc::Sender<TimerAction>,
    pub thread: Option<std::thread::JoinHandle<()>>,
}

#[cfg(not(target_family = "windows"))]
extern "C" fn cleanup_timer() {
    let mut timer = match TIMER.lock() {
        Ok(x) => x,
        Err(e) => e.into_inner(),
    };
    drop(timer.take());
}

static TIMER: std::sync::Mutex<Option<Timer>> = std::sync::Mutex::new(None);

impl Timer {
    pub(crate) fn tx() -> std::sync::mpsc::Sender<TimerAction> {
        let mut timer = match TIMER.lock() {
            Ok(x) => x,
            Err(e) => e.into_inner(),
        };

        let timer = &mut *timer;

        match timer {
            None => Timer::init(timer),
            Some(t) => t.tx.clone(),
        }
    }

    pub fn init(timer: &mut Option<Timer>) -> std::sync::mpsc::Sender<TimerAction> {
        let (tx, rx) = std::sync::mpsc::channel();
        let thread = std::thread::spawn(move || {
            let mut plugins: std::collections::BTreeMap<uuid::Uuid, Weak<Deadline>> =
                std::collections::BTreeMap::new();
            loop {
                let now = Instant::now();
                let now_stamp = stamp(now);
                let mut wake: Option<u64> = None;
                plugins.retain(|_, deadline| match deadline.upgrade() {
                    Some(deadline) => {
                        if let Some(at) = deadline.expire(now, now_stamp) {
                            wake = Some(wake.map_or(at, |w| w.min(at)));
                        }
                        true
                    }
                    None => false,
                });
                let action = match wake {
                    None => match rx.recv() {
                        Ok(x) => Some(x),
                        Err(_) => return,
                    },
                    Some(at) => {
                        let wait = Duration::from_nanos(at.saturating_sub(now_stamp));
                        match rx.recv_timeout(wait) {
                            Ok(x) => Some(x),
                            Err(std::sync::mpsc::RecvTimeoutError::Timeout) => None,
                            Err(std::sync::mpsc::RecvTimeoutError::Disconnected) => return,
                        }
                    }
                };
                match action {
                    Some(TimerAction::Register { id, deadline }) => {
                        trace!(plugin = id.to_string(), "register event");
                        plugins.insert(id, deadline);
                    }
                    Some(TimerAction::Cancel { id }) => {
                        trace!(plugin = id.to_string(), "handling cancel event");
                        if let Some(deadline) = plugins.get(&id).and_then(Weak::upgrade) {
                            deadline.interrupt();
                        }
                    }
                    Some(TimerAction::Shutdown) => {
                        trace!("Shutting down timer");
                        for deadline in plugins.values().filter_map(Weak::upgrade) {
                            deadline.interrupt();
                        }
                        return;
                    }
                    None => {}
                }
            }
        });
        *timer = Some(Timer {
            thread: Some(thread),
            tx: tx.clone(),
        });
        trace!("Extism timer created");

        #[cfg(not(target_family = "windows"))]
        unsafe {
            libc::atexit(cleanup_timer);
        }

        tx
    }
}

impl Drop for Timer {
    fn drop(&mut self) {
        let _ = self.tx.send(TimerAction::Shutdown);
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}
