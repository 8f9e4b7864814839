//! The timer thread: stops calls that run past their plugin's timeout, and cancelled ones, by
//! bumping the epoch of the plugin's engine (every call runs with an epoch deadline of one).
//!
//! taskless-agent's copy (see VENDORED.md): a plugin arms and disarms its deadline in memory it
//! shares with the thread ([`Deadline`]), so a call sends no message and wakes no thread. The
//! thread looks at every armed deadline once per [`TICK`] while calls are being made, and
//! sleeps once [`IDLE_TICKS`] ticks in a row saw no call; the first call after that wakes it
//! with a message. Registering a plugin, cancelling a call and shutting down are messages too.

use crate::*;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, OnceLock, Weak};
use std::time::{Duration, Instant};

/// How often armed deadlines are looked at while calls are being made: a call that runs past
/// its timeout is stopped at most this much after it.
pub(crate) const TICK: Duration = Duration::from_millis(5);

/// Ticks in a row without a call (none running, none started) after which the thread sleeps
/// until the next call: 100 ms.
const IDLE_TICKS: u32 = 20;

/// True while the timer thread sleeps for lack of calls: the next call to start wakes it.
static ASLEEP: AtomicBool = AtomicBool::new(false);

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
    /// [`IDLE`], [`UNLIMITED`], or when the running call must stop ([`stamp`]).
    at: AtomicU64,
    /// Set by every call, cleared by the thread when it looks: a call was made since.
    called: AtomicBool,
    /// Wakes the timer thread when it sleeps.
    tx: std::sync::mpsc::Sender<TimerAction>,
}

impl Deadline {
    pub(crate) fn new(engine: Engine, tx: std::sync::mpsc::Sender<TimerAction>) -> Arc<Deadline> {
        Arc::new(Deadline {
            engine,
            at: AtomicU64::new(IDLE),
            called: AtomicBool::new(false),
            tx,
        })
    }

    /// A call starts, to be stopped after `timeout` (none: never).
    pub(crate) fn start(&self, timeout: Option<Duration>) {
        let at = match timeout {
            None => UNLIMITED,
            Some(t) => Instant::now()
                .checked_add(t)
                .map_or(UNLIMITED, stamp),
        };
        // Sequentially consistent with the thread's `ASLEEP` store and its look at `at`: either
        // the thread sees this call, or this call sees the thread asleep and wakes it.
        self.at.store(at, Ordering::SeqCst);
        if !self.called.load(Ordering::Relaxed) {
            self.called.store(true, Ordering::Relaxed);
        }
        if ASLEEP.load(Ordering::SeqCst) && ASLEEP.swap(false, Ordering::SeqCst) {
            let _ = self.tx.send(TimerAction::Wake);
        }
    }

    /// True when a call is running or one was made since the last look.
    fn busy(&self) -> bool {
        self.at.load(Ordering::SeqCst) != IDLE || self.called.swap(false, Ordering::Relaxed)
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

    /// Stops the running call if its deadline is past `now`.
    fn expire(&self, now: u64) {
        let at = self.at.load(Ordering::Acquire);
        if at != IDLE
            && at != UNLIMITED
            && at <= now
            && self
                .at
                .compare_exchange(at, IDLE, Ordering::AcqRel, Ordering::Acquire)
                .is_ok()
        {
            trace!("call timed out");
            self.engine.increment_epoch();
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
    /// A call started while the thread slept.
    Wake,
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
            let mut idle_ticks = 0;
            loop {
                let asleep = idle_ticks >= IDLE_TICKS;
                let action = if plugins.is_empty() || asleep {
                    match rx.recv() {
                        Ok(x) => Some(x),
                        Err(_) => return,
                    }
                } else {
                    match rx.recv_timeout(TICK) {
                        Ok(x) => Some(x),
                        Err(std::sync::mpsc::RecvTimeoutError::Timeout) => None,
                        Err(std::sync::mpsc::RecvTimeoutError::Disconnected) => return,
                    }
                };
                if asleep {
                    ASLEEP.store(false, Ordering::SeqCst);
                }
                let acted = action.is_some();
                match action {
                    Some(TimerAction::Register { id, deadline }) => {
                        trace!(plugin = id.to_string(), "register event");
                        plugins.insert(id, deadline);
                    }
                    Some(TimerAction::Wake) => {}
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
                let now = stamp(Instant::now());
                let mut busy = false;
                plugins.retain(|_, deadline| match deadline.upgrade() {
                    Some(deadline) => {
                        busy |= deadline.busy();
                        deadline.expire(now);
                        true
                    }
                    None => false,
                });
                idle_ticks = if busy || acted { 0 } else { idle_ticks + 1 };
                if idle_ticks >= IDLE_TICKS {
                    // About to sleep: say so first, then look once more, so that a call that
                    // started in between either is seen here or sees the flag and wakes us.
                    ASLEEP.store(true, Ordering::SeqCst);
                    if plugins
                        .values()
                        .filter_map(Weak::upgrade)
                        .any(|d| d.at.load(Ordering::SeqCst) != IDLE)
                    {
                        ASLEEP.store(false, Ordering::SeqCst);
                        idle_ticks = 0;
                    }
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
