//! Packs reload without a restart: the packs directory is watched (`notify`), and an added,
//! changed or removed pack takes effect for new exchanges within a second. A pack that fails to
//! load leaves its previous version running, and the warning says why; exchanges already in
//! flight finish on the packs they started with (each worker keeps the old instances until
//! they have).

use std::{
    path::{Path, PathBuf},
    sync::{
        Arc, Mutex,
        atomic::{AtomicBool, AtomicU64, Ordering},
    },
    thread::JoinHandle,
    time::Duration,
};

use notify::{RecursiveMode, Watcher as _};
use taskless_pack_runtime::{PackSet, RuntimeConfig};

/// The packs in force, replaced whole on reload. Workers look at the generation before each
/// moment (one atomic load) and take the new set when it moved.
pub struct LivePacks {
    current: Mutex<Arc<PackSet>>,
    generation: AtomicU64,
}

impl std::fmt::Debug for LivePacks {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LivePacks")
            .field("generation", &self.generation())
            .finish_non_exhaustive()
    }
}

impl LivePacks {
    /// Starts with `set` as generation 0.
    #[must_use]
    pub fn new(set: Arc<PackSet>) -> Arc<Self> {
        Arc::new(Self {
            current: Mutex::new(set),
            generation: AtomicU64::new(0),
        })
    }

    /// The packs in force.
    #[must_use]
    pub fn current(&self) -> Arc<PackSet> {
        match self.current.lock() {
            Ok(c) => Arc::clone(&c),
            Err(poisoned) => Arc::clone(&poisoned.into_inner()),
        }
    }

    /// How many times the packs were replaced.
    #[must_use]
    pub fn generation(&self) -> u64 {
        self.generation.load(Ordering::Acquire)
    }

    /// The packs in force and their generation, read together.
    #[must_use]
    pub fn snapshot(&self) -> (u64, Arc<PackSet>) {
        let guard = match self.current.lock() {
            Ok(c) => c,
            Err(poisoned) => poisoned.into_inner(),
        };
        (self.generation.load(Ordering::Acquire), Arc::clone(&guard))
    }

    fn replace(&self, set: Arc<PackSet>) {
        let mut guard = match self.current.lock() {
            Ok(c) => c,
            Err(poisoned) => poisoned.into_inner(),
        };
        *guard = set;
        self.generation.fetch_add(1, Ordering::AcqRel);
    }
}

/// File events closer together than this are taken as one change (a pack copied in file by
/// file), so a reload sees whole packs.
const SETTLE: Duration = Duration::from_millis(200);

/// The watch on the packs directory; stops when dropped.
pub struct PackWatch {
    _watcher: notify::RecommendedWatcher,
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<()>>,
}

impl Drop for PackWatch {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Release);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

/// Watches `dir` and reloads `live` from it after each change.
///
/// # Errors
/// When the directory cannot be watched (the packs keep running as loaded).
pub fn watch(
    dir: &Path,
    runtime: RuntimeConfig,
    live: Arc<LivePacks>,
) -> Result<PackWatch, notify::Error> {
    let (tx, rx) = crossbeam_channel::unbounded();
    let mut watcher = notify::recommended_watcher(move |event: notify::Result<notify::Event>| {
        let _ = tx.send(event);
    })?;
    watcher.watch(dir, RecursiveMode::Recursive)?;
    let stop = Arc::new(AtomicBool::new(false));
    let stopped = Arc::clone(&stop);
    let shown = dir.display().to_string();
    let dir: PathBuf = dir.to_path_buf();
    let thread = std::thread::Builder::new()
        .name("pack-reload".into())
        .spawn(move || {
            while !stopped.load(Ordering::Acquire) {
                match rx.recv_timeout(Duration::from_millis(250)) {
                    Ok(Ok(event)) if matters(&event) => {}
                    Ok(Err(e)) => {
                        tracing::warn!(dir = %dir.display(), error = %e, "watching the packs directory");
                        continue;
                    }
                    Ok(Ok(_)) | Err(crossbeam_channel::RecvTimeoutError::Timeout) => continue,
                    Err(crossbeam_channel::RecvTimeoutError::Disconnected) => return,
                }
                // Let the change settle.
                while rx.recv_timeout(SETTLE).is_ok() {}
                reload(&dir, &runtime, &live);
            }
        })
        .map_err(notify::Error::io)?;
    tracing::info!(dir = %shown, "watching the packs directory for changes");
    Ok(PackWatch {
        _watcher: watcher,
        stop,
        thread: Some(thread),
    })
}

/// Whether an event can change what loads (reads and metadata changes cannot).
fn matters(event: &notify::Event) -> bool {
    !matches!(event.kind, notify::EventKind::Access(_))
}

/// Loads the directory again and puts the result in force when anything changed.
fn reload(dir: &Path, runtime: &RuntimeConfig, live: &LivePacks) {
    let current = live.current();
    let report = match current.reload(dir, runtime) {
        Ok(r) => r,
        Err(e) => {
            tracing::warn!(dir = %dir.display(), error = %e, "packs not reloaded; the loaded packs keep running");
            return;
        }
    };
    for (e, kept) in &report.refused {
        match kept {
            Some(previous) => tracing::warn!(
                pack = e.pack.as_deref().unwrap_or(previous),
                dir = %e.dir.display(),
                reason = %e.reason,
                running = %previous,
                "pack failed to load; its previous version keeps running"
            ),
            None => tracing::warn!(
                pack = ?e.pack,
                dir = %e.dir.display(),
                reason = %e.reason,
                "pack failed to load"
            ),
        }
    }
    let Some(set) = report.set else {
        return;
    };
    tracing::info!(
        added = ?report.added,
        changed = ?report.changed,
        removed = ?report.removed,
        packs = set.packs().len(),
        "packs reloaded; new exchanges use them"
    );
    live.replace(Arc::new(set));
}
