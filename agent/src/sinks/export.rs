//! The export side as the wiring sees it: the export runtime (started only when OTLP or an
//! HTTP endpoint needs it), the Prometheus telemetry, the health state and the servers.

use std::sync::Arc;

use super::{ExportContext, ExportRuntime, Health, ServeError, Server, Telemetry};
use crate::{
    config::{Output, OutputConfig, ServeConfig},
    packs::LivePacks,
    stats::Counters,
};

/// Why the export side could not start.
#[derive(Debug, thiserror::Error)]
pub enum ExportError {
    /// The export runtime's thread could not start.
    #[error("starting the export runtime: {0}")]
    Runtime(std::io::Error),
    /// An endpoint could not be served.
    #[error(transparent)]
    Serve(#[from] ServeError),
}

/// The running export side.
pub struct Export {
    runtime: Option<ExportRuntime>,
    telemetry: Option<Arc<Telemetry>>,
    health: Arc<Health>,
    servers: Vec<Server>,
}

impl Export {
    /// Starts what `output` and `serve` need and binds the endpoints (before anything else
    /// loads, so a port in use fails at once and the health endpoints answer during start-up).
    ///
    /// # Errors
    /// When the runtime cannot start or an address cannot be bound.
    pub fn start(output: &OutputConfig, serve: &ServeConfig) -> Result<Self, ExportError> {
        let needs_runtime = output.outputs.contains(&Output::Otlp)
            || serve.metrics_addr.is_some()
            || serve.health_addr.is_some();
        let runtime = needs_runtime
            .then(ExportRuntime::start)
            .transpose()
            .map_err(ExportError::Runtime)?;
        let telemetry = serve.metrics_addr.map(|_| Arc::new(Telemetry::new()));
        let health = Arc::new(Health::new());
        let mut servers = Vec::new();
        if let Some(rt) = &runtime {
            if let Some(addr) = serve.metrics_addr {
                servers.push(Server::start(
                    rt,
                    addr,
                    Arc::clone(&health),
                    telemetry.clone(),
                )?);
            }
            // The same fixed address as `/metrics` already serves health; port 0 is a new one.
            let separate =
                |a: &std::net::SocketAddr| a.port() == 0 || Some(*a) != serve.metrics_addr;
            if let Some(addr) = serve.health_addr.filter(separate) {
                servers.push(Server::start(rt, addr, Arc::clone(&health), None)?);
            }
        }
        Ok(Self {
            runtime,
            telemetry,
            health,
            servers,
        })
    }

    /// What the sinks need of the export side.
    #[must_use]
    pub fn context(&self) -> ExportContext<'_> {
        ExportContext {
            runtime: self.runtime.as_ref(),
            telemetry: self.telemetry.as_ref(),
        }
    }

    /// The health state.
    #[must_use]
    pub fn health(&self) -> &Health {
        &self.health
    }

    /// The addresses served.
    #[must_use]
    pub fn addresses(&self) -> Vec<std::net::SocketAddr> {
        self.servers.iter().map(Server::addr).collect()
    }

    /// The packs are loaded: ready for `/readyz`, their counters for `/metrics` (whichever
    /// packs are in force when scraped: they reload without a restart).
    pub fn packs_loaded(&self, packs: &Arc<LivePacks>) {
        self.health.packs_loaded();
        if let Some(t) = &self.telemetry {
            t.set_packs(Arc::clone(packs));
        }
    }

    /// Publishes the agent's counters and gauges for `/metrics` (about once a second).
    pub fn publish(&self, sets: &[&dyn Counters], attached_processes: usize) {
        if let Some(t) = &self.telemetry {
            t.publish(sets);
            t.gauges().attached_processes.store(
                attached_processes as u64,
                std::sync::atomic::Ordering::Relaxed,
            );
        }
    }

    /// Stops the endpoints and the runtime (after the sinks have finished).
    pub fn shutdown(self) {
        self.health.stopping();
        if let Some(rt) = self.runtime {
            rt.shutdown();
        }
    }
}
