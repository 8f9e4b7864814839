//! Exporters that count what they send: the OTLP exporters of `opentelemetry-otlp` (which
//! batch through the SDK's processors and retry with backoff) wrapped so the agent knows how
//! many log records were exported or lost, and how many metric exports failed.

use std::{
    sync::{
        Arc,
        atomic::{AtomicU64, Ordering},
    },
    time::{Duration, Instant},
};

use opentelemetry_sdk::{
    Resource,
    error::OTelSdkResult,
    logs::{LogBatch, LogExporter},
    metrics::{Temporality, data::ResourceMetrics, exporter::PushMetricExporter},
};

use super::OtlpStats;

/// Warnings about failed exports are logged at most this often.
const WARN_EVERY: Duration = Duration::from_secs(30);

/// Logs a failed export, at most once per [`WARN_EVERY`] (`last` holds when, as ms after
/// `epoch`, plus one).
fn warn_failed(what: &str, error: &dyn std::fmt::Display, epoch: Instant, last: &AtomicU64) {
    let now = u64::try_from(epoch.elapsed().as_millis()).unwrap_or(u64::MAX) + 1;
    let prev = last.load(Ordering::Relaxed);
    let due =
        prev == 0 || now.saturating_sub(prev) >= u64::try_from(WARN_EVERY.as_millis()).unwrap_or(0);
    if due
        && last
            .compare_exchange(prev, now, Ordering::Relaxed, Ordering::Relaxed)
            .is_ok()
    {
        tracing::warn!(error = %error, "OTLP {what} export failed (retried with backoff); counted, capture goes on");
    }
}

/// A log exporter that counts the records of each batch as exported or lost.
#[derive(Debug)]
pub struct CountingLogs<E> {
    pub inner: E,
    pub stats: Arc<OtlpStats>,
    pub epoch: Instant,
    pub last_warn: Arc<AtomicU64>,
}

impl<E: LogExporter> LogExporter for CountingLogs<E> {
    async fn export(&self, batch: LogBatch<'_>) -> OTelSdkResult {
        let n = batch.iter().count() as u64;
        let result = self.inner.export(batch).await;
        match &result {
            Ok(()) => {
                self.stats
                    .otlp_log_records_exported
                    .fetch_add(n, Ordering::Relaxed);
            }
            Err(e) => {
                self.stats
                    .otlp_log_records_lost
                    .fetch_add(n, Ordering::Relaxed);
                warn_failed("log", e, self.epoch, &self.last_warn);
            }
        }
        result
    }

    fn shutdown_with_timeout(&self, timeout: Duration) -> OTelSdkResult {
        self.inner.shutdown_with_timeout(timeout)
    }

    fn set_resource(&mut self, resource: &Resource) {
        self.inner.set_resource(resource);
    }
}

/// A metric exporter that counts exports and failed exports.
#[derive(Debug)]
pub struct CountingMetrics<E> {
    pub inner: E,
    pub stats: Arc<OtlpStats>,
    pub epoch: Instant,
    pub last_warn: Arc<AtomicU64>,
}

impl<E: PushMetricExporter> PushMetricExporter for CountingMetrics<E> {
    async fn export(&self, metrics: &ResourceMetrics) -> OTelSdkResult {
        let result = self.inner.export(metrics).await;
        match &result {
            Ok(()) => {
                self.stats
                    .otlp_metric_exports
                    .fetch_add(1, Ordering::Relaxed);
            }
            Err(e) => {
                self.stats
                    .otlp_metric_exports_failed
                    .fetch_add(1, Ordering::Relaxed);
                warn_failed("metric", e, self.epoch, &self.last_warn);
            }
        }
        result
    }

    fn force_flush(&self) -> OTelSdkResult {
        self.inner.force_flush()
    }

    fn shutdown_with_timeout(&self, timeout: Duration) -> OTelSdkResult {
        self.inner.shutdown_with_timeout(timeout)
    }

    fn temporality(&self) -> Temporality {
        self.inner.temporality()
    }
}
