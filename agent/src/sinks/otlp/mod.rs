//! `--output otlp`: OpenTelemetry logs and metrics over OTLP (gRPC or HTTP/protobuf) through
//! the maintained `opentelemetry`, `opentelemetry_sdk` and `opentelemetry-otlp` crates.
//!
//! One log record per exchange (`record.rs`) and the exchange metrics (`instruments.rs`). The
//! SDK's batch log processor and periodic metric reader batch on threads of their own and the
//! exporters retry with backoff; gRPC runs on the export runtime. This sink never waits for the
//! collector: it keeps at most [`MAX_PENDING`] records handed to the SDK and not yet exported
//! or lost, and drops (and counts) beyond that, so a slow or absent collector costs memory up
//! to that bound and nothing else. Exported and lost records and failed metric exports are
//! counted (`otlp_*` in the stats line).

mod counting;
mod instruments;
mod record;

use std::{
    sync::{
        Arc,
        atomic::{AtomicU64, Ordering},
    },
    time::{Duration, Instant},
};

use opentelemetry::logs::{Logger as _, LoggerProvider as _};
use opentelemetry::metrics::MeterProvider as _;
use opentelemetry_otlp::WithExportConfig as _;
use opentelemetry_sdk::{
    Resource,
    logs::{BatchConfigBuilder, BatchLogProcessor, SdkLogger, SdkLoggerProvider},
    metrics::{PeriodicReader, SdkMeterProvider},
};

use self::{
    counting::{CountingLogs, CountingMetrics},
    instruments::Instruments,
};
use super::{ExportRuntime, LabelLimiter, Sink};
use crate::{
    config::{OtlpConfig, OtlpProtocol},
    packs::FinishedExchange,
    stats::Counters,
};

/// Log records handed to the SDK and not yet exported or lost, at most.
pub const MAX_PENDING: u64 = 8192;

crate::stats::counters! {
    /// What happened to what the OTLP sink sent.
    pub struct OtlpStats {
        /// Log records the collector accepted.
        otlp_log_records_exported,
        /// Log records in batches that failed after the exporter's retries.
        otlp_log_records_lost,
        /// Log records dropped because [`MAX_PENDING`] were already waiting for the collector.
        otlp_log_records_dropped,
        /// Metric exports the collector accepted.
        otlp_metric_exports,
        /// Metric exports that failed after the exporter's retries (the next export carries
        /// the totals again: metrics are cumulative).
        otlp_metric_exports_failed,
    }
}

/// Why OTLP could not be set up.
#[derive(Debug, thiserror::Error)]
pub enum OtlpError {
    /// The export runtime was not started (an internal error).
    #[error("the OTLP output needs the export runtime")]
    NoRuntime,
    /// An exporter could not be built (a bad endpoint, header or setting).
    #[error("OTLP {signal} exporter: {cause}")]
    Build {
        /// `logs` or `metrics`.
        signal: &'static str,
        /// The exporter's reason.
        cause: String,
    },
    /// An `https://` endpoint: not supported yet.
    #[error(
        "OTLP endpoint {0}: TLS is not supported yet; send to a collector on a plaintext http:// endpoint (e.g. one on the node)"
    )]
    Tls(String),
}

/// The OTLP output.
pub struct OtlpSink {
    logger: SdkLogger,
    logger_provider: SdkLoggerProvider,
    meter_provider: SdkMeterProvider,
    instruments: Instruments,
    limiter: Arc<LabelLimiter>,
    stats: Arc<OtlpStats>,
    emitted: u64,
}

/// The resource: the agent itself (`service.name` `taskless-agent` unless `OTEL_SERVICE_NAME`
/// or `OTEL_RESOURCE_ATTRIBUTES` says otherwise, its version, the host).
fn resource() -> Resource {
    let mut builder = Resource::builder();
    let named = std::env::var_os("OTEL_SERVICE_NAME").is_some()
        || std::env::var("OTEL_RESOURCE_ATTRIBUTES").is_ok_and(|a| a.contains("service.name="));
    if !named {
        builder = builder.with_service_name("taskless-agent");
    }
    builder = builder.with_attribute(opentelemetry::KeyValue::new(
        "service.version",
        env!("CARGO_PKG_VERSION"),
    ));
    if let Ok(host) = std::fs::read_to_string("/proc/sys/kernel/hostname") {
        builder = builder.with_attribute(opentelemetry::KeyValue::new(
            "host.name",
            host.trim().to_owned(),
        ));
    }
    builder.build()
}

fn endpoint_checked(config: &OtlpConfig) -> Result<Option<String>, OtlpError> {
    let endpoint = config
        .endpoint
        .clone()
        .or_else(|| std::env::var("OTEL_EXPORTER_OTLP_ENDPOINT").ok());
    if let Some(e) = &endpoint
        && e.starts_with("https://")
    {
        return Err(OtlpError::Tls(e.clone()));
    }
    Ok(config.endpoint.clone())
}

fn build_error(
    signal: &'static str,
) -> impl Fn(opentelemetry_otlp::ExporterBuildError) -> OtlpError {
    move |e| OtlpError::Build {
        signal,
        cause: e.to_string(),
    }
}

/// The signal's URL for HTTP: `--otlp-endpoint` is a base URL, as `OTEL_EXPORTER_OTLP_ENDPOINT`
/// is, so `/v1/logs` or `/v1/metrics` goes after it.
fn http_url(base: &str, path: &str) -> String {
    format!("{}/{path}", base.trim_end_matches('/'))
}

impl OtlpSink {
    /// Builds the exporters (inside the export runtime for gRPC), the batch log processor and
    /// the periodic metric reader.
    ///
    /// # Errors
    /// When an exporter cannot be built.
    pub fn start(
        config: &OtlpConfig,
        runtime: &ExportRuntime,
        limiter: Arc<LabelLimiter>,
    ) -> Result<Self, OtlpError> {
        let endpoint = endpoint_checked(config)?;
        let protocol = config.protocol.unwrap_or(OtlpProtocol::HttpProtobuf);
        let stats = Arc::new(OtlpStats::default());
        let epoch = Instant::now();
        let _guard = runtime.enter();
        let logs = match protocol {
            OtlpProtocol::Grpc => {
                let mut b = opentelemetry_otlp::LogExporter::builder().with_tonic();
                if let Some(e) = &endpoint {
                    b = b.with_endpoint(e.clone());
                }
                b.build()
            }
            OtlpProtocol::HttpProtobuf => {
                let mut b = opentelemetry_otlp::LogExporter::builder()
                    .with_http()
                    .with_protocol(opentelemetry_otlp::Protocol::HttpBinary);
                if let Some(e) = &endpoint {
                    b = b.with_endpoint(http_url(e, "v1/logs"));
                }
                b.build()
            }
        }
        .map_err(build_error("logs"))?;
        let metrics = match protocol {
            OtlpProtocol::Grpc => {
                let mut b = opentelemetry_otlp::MetricExporter::builder().with_tonic();
                if let Some(e) = &endpoint {
                    b = b.with_endpoint(e.clone());
                }
                b.build()
            }
            OtlpProtocol::HttpProtobuf => {
                let mut b = opentelemetry_otlp::MetricExporter::builder()
                    .with_http()
                    .with_protocol(opentelemetry_otlp::Protocol::HttpBinary);
                if let Some(e) = &endpoint {
                    b = b.with_endpoint(http_url(e, "v1/metrics"));
                }
                b.build()
            }
        }
        .map_err(build_error("metrics"))?;
        let resource = resource();
        let processor = BatchLogProcessor::builder(CountingLogs {
            inner: logs,
            stats: Arc::clone(&stats),
            epoch,
            last_warn: Arc::new(AtomicU64::new(0)),
        })
        .with_batch_config(
            BatchConfigBuilder::default()
                .with_max_queue_size(usize::try_from(MAX_PENDING).unwrap_or(8192))
                .build(),
        )
        .build();
        let logger_provider = SdkLoggerProvider::builder()
            .with_resource(resource.clone())
            .with_log_processor(processor)
            .build();
        let reader = PeriodicReader::builder(CountingMetrics {
            inner: metrics,
            stats: Arc::clone(&stats),
            epoch,
            last_warn: Arc::new(AtomicU64::new(0)),
        })
        .build();
        let meter_provider = SdkMeterProvider::builder()
            .with_resource(resource)
            .with_reader(reader)
            .build();
        let meter = meter_provider.meter("taskless-agent");
        let instruments = Instruments::new(&meter);
        let logger = logger_provider.logger("taskless-agent");
        tracing::info!(
            protocol = ?protocol,
            endpoint = endpoint.as_deref().unwrap_or("(OTEL_EXPORTER_OTLP_* or default)"),
            "OTLP output"
        );
        Ok(Self {
            logger,
            logger_provider,
            meter_provider,
            instruments,
            limiter,
            stats,
            emitted: 0,
        })
    }

    /// Records handed to the SDK and neither exported nor lost yet.
    fn pending(&self) -> u64 {
        let done = self.stats.otlp_log_records_exported.load(Ordering::Relaxed)
            + self.stats.otlp_log_records_lost.load(Ordering::Relaxed);
        self.emitted.saturating_sub(done)
    }
}

impl Sink for OtlpSink {
    fn name(&self) -> &'static str {
        "otlp"
    }

    fn write(&mut self, exchange: &FinishedExchange) -> std::io::Result<()> {
        let facts = super::ExchangeFacts::of(exchange);
        self.instruments.record(&facts, &self.limiter);
        if self.pending() >= MAX_PENDING {
            self.stats
                .otlp_log_records_dropped
                .fetch_add(1, Ordering::Relaxed);
            return Ok(());
        }
        let mut log = self.logger.create_log_record();
        record::fill(&mut log, exchange, &facts);
        self.logger.emit(log);
        self.emitted += 1;
        Ok(())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }

    fn counters(&self) -> Option<Arc<dyn Counters + Send + Sync>> {
        Some(Arc::clone(&self.stats) as Arc<dyn Counters + Send + Sync>)
    }

    fn finish(&mut self) {
        // Export what is batched; a collector that is away costs at most the exporters'
        // timeouts here.
        let deadline = Duration::from_secs(5);
        if let Err(e) = self.logger_provider.shutdown_with_timeout(deadline) {
            tracing::debug!(error = %e, "OTLP logs shutdown");
        }
        if let Err(e) = self.meter_provider.shutdown_with_timeout(deadline) {
            tracing::debug!(error = %e, "OTLP metrics shutdown");
        }
    }
}
