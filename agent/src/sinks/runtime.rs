//! The export side's own Tokio runtime: one worker thread (`export`) that runs the HTTP
//! endpoints and the OTLP transport. Capture, flows and packs never touch it.

/// A small multi-thread runtime with one worker, so it drives itself.
pub struct ExportRuntime {
    runtime: tokio::runtime::Runtime,
}

impl ExportRuntime {
    /// Starts the runtime.
    ///
    /// # Errors
    /// When its thread cannot be started.
    pub fn start() -> std::io::Result<Self> {
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .thread_name("export")
            .enable_all()
            .build()?;
        Ok(Self { runtime })
    }

    /// A handle to spawn on.
    #[must_use]
    pub fn handle(&self) -> &tokio::runtime::Handle {
        self.runtime.handle()
    }

    /// Enters the runtime's context (clients that spawn tasks when built need it).
    pub fn enter(&self) -> tokio::runtime::EnterGuard<'_> {
        self.runtime.enter()
    }

    /// Stops the runtime, giving its tasks a moment to finish.
    pub fn shutdown(self) {
        self.runtime
            .shutdown_timeout(std::time::Duration::from_secs(1));
    }
}
