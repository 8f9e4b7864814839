//! Prometheus metrics (`/metrics`, with `prometheus-client`): the agent's own counters (every
//! counter of the stats line, as the capture loop last published them), per-pack counters,
//! process gauges, and the exchange metrics this sink records: requests and their duration per
//! server, method and status, the packs' numeric dimensions summed, and GenAI token usage.
//! Label values go through the shared [`LabelLimiter`].

use std::{
    sync::{
        Arc, Mutex,
        atomic::{AtomicU64, Ordering},
    },
    time::Instant,
};

use prometheus_client::{
    collector::Collector,
    encoding::{DescriptorEncoder, EncodeLabelSet, EncodeMetric as _},
    metrics::{
        MetricType,
        counter::{ConstCounter, Counter},
        family::Family,
        gauge::ConstGauge,
        histogram::Histogram,
    },
    registry::{Registry, Unit},
};

use super::{ExchangeFacts, LabelLimiter, Sink};
use crate::{
    packs::{FinishedExchange, LivePacks},
    stats::{Counters, Snapshot},
};

/// `http.client.request.duration`'s bucket boundaries (seconds), from OpenTelemetry's HTTP
/// semantic conventions.
pub const DURATION_BUCKETS: [f64; 14] = [
    0.005, 0.01, 0.025, 0.05, 0.075, 0.1, 0.25, 0.5, 0.75, 1.0, 2.5, 5.0, 7.5, 10.0,
];

/// `gen_ai.client.token.usage`'s bucket boundaries, from OpenTelemetry's GenAI conventions.
pub const TOKEN_BUCKETS: [f64; 14] = [
    1.0,
    4.0,
    16.0,
    64.0,
    256.0,
    1024.0,
    4096.0,
    16384.0,
    65536.0,
    262_144.0,
    1_048_576.0,
    4_194_304.0,
    16_777_216.0,
    67_108_864.0,
];

/// A per-pack counter: name, help and how to read it.
type PerPack = (
    &'static str,
    &'static str,
    fn(&taskless_pack_runtime::PackStats) -> u64,
);

/// Labels of the HTTP exchange metrics (OpenTelemetry attribute names, dots as underscores).
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct HttpLabels {
    server_address: String,
    http_request_method: String,
    http_response_status_code: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct DimensionLabels {
    dimension: String,
    server_address: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct TokenLabels {
    gen_ai_system: String,
    gen_ai_operation_name: String,
    gen_ai_request_model: String,
    gen_ai_token_type: String,
    server_address: String,
}

fn duration_histogram() -> Histogram {
    Histogram::new(DURATION_BUCKETS)
}

fn token_histogram() -> Histogram {
    Histogram::new(TOKEN_BUCKETS)
}

/// Gauges the capture loop sets.
#[derive(Debug, Default)]
pub struct AgentGauges {
    /// Processes with probes attached.
    pub attached_processes: AtomicU64,
}

/// What the capture loop last published, read on each scrape.
#[derive(Debug)]
struct AgentState {
    counters: Mutex<Snapshot>,
    gauges: AgentGauges,
    packs: Mutex<Option<Arc<LivePacks>>>,
    started: Instant,
}

/// The Prometheus side: the registry `/metrics` encodes, and the families the metrics sink
/// records into.
#[derive(Debug)]
pub struct Telemetry {
    registry: Registry,
    requests: Family<HttpLabels, Counter>,
    durations: Family<HttpLabels, Histogram, fn() -> Histogram>,
    dimensions: Family<DimensionLabels, Counter<f64, AtomicU64>>,
    tokens: Family<TokenLabels, Histogram, fn() -> Histogram>,
    state: Arc<AgentState>,
}

/// The agent's counters, per-pack counters and gauges, encoded on each scrape.
#[derive(Debug)]
struct AgentCollector(Arc<AgentState>);

impl Default for Telemetry {
    fn default() -> Self {
        Self::new()
    }
}

impl Telemetry {
    /// An empty registry with every family registered (names prefixed `taskless_agent_`).
    #[must_use]
    pub fn new() -> Self {
        let mut registry = Registry::with_prefix("taskless_agent");
        let requests = Family::<HttpLabels, Counter>::default();
        registry.register(
            "http_client_requests",
            "Exchanges seen, by server, method and status (status empty: no response)",
            requests.clone(),
        );
        let durations: Family<HttpLabels, Histogram, fn() -> Histogram> =
            Family::new_with_constructor(duration_histogram);
        registry.register_with_unit(
            "http_client_request_duration",
            "First request byte written to last response byte read, of exchanges with a whole response",
            Unit::Seconds,
            durations.clone(),
        );
        let dimensions = Family::<DimensionLabels, Counter<f64, AtomicU64>>::default();
        registry.register(
            "pack_dimension",
            "Sum of the values of each numeric pack dimension (token counts, flags), by server",
            dimensions.clone(),
        );
        let tokens: Family<TokenLabels, Histogram, fn() -> Histogram> =
            Family::new_with_constructor(token_histogram);
        registry.register(
            "gen_ai_client_token_usage",
            "Tokens per GenAI call (OpenTelemetry gen_ai.client.token.usage), from the openai and anthropic packs",
            tokens.clone(),
        );
        let state = Arc::new(AgentState {
            counters: Mutex::new(Snapshot::default()),
            gauges: AgentGauges::default(),
            packs: Mutex::new(None),
            started: Instant::now(),
        });
        registry.register_collector(Box::new(AgentCollector(Arc::clone(&state))));
        Self {
            registry,
            requests,
            durations,
            dimensions,
            tokens,
            state,
        }
    }

    /// Publishes the agent's counters as they stand (the capture loop calls this about once a
    /// second; a scrape serves the latest).
    pub fn publish(&self, sets: &[&dyn Counters]) {
        let mut values = Vec::new();
        for set in sets {
            set.report(&mut values);
        }
        if let Ok(mut c) = self.state.counters.lock() {
            *c = Snapshot(values);
        }
    }

    /// The gauges the capture loop sets.
    #[must_use]
    pub fn gauges(&self) -> &AgentGauges {
        &self.state.gauges
    }

    /// The packs whose per-pack counters are served (those in force at each scrape).
    pub fn set_packs(&self, packs: Arc<LivePacks>) {
        if let Ok(mut p) = self.state.packs.lock() {
            *p = Some(packs);
        }
    }

    /// The registry in the OpenMetrics text format.
    ///
    /// # Errors
    /// Never in practice (writing to a `String`).
    pub fn encode(&self) -> Result<String, std::fmt::Error> {
        let mut out = String::new();
        prometheus_client::encoding::text::encode(&mut out, &self.registry)?;
        Ok(out)
    }

    fn record(&self, exchange: &FinishedExchange, limiter: &LabelLimiter) {
        let f = ExchangeFacts::of(exchange);
        let server = limiter
            .admit("server.address", f.server_address.unwrap_or(""))
            .into_owned();
        let labels = HttpLabels {
            server_address: server.clone(),
            http_request_method: f.method_label.to_owned(),
            http_response_status_code: f
                .status
                .map(|s| {
                    limiter
                        .admit("http.response.status_code", &s.to_string())
                        .into_owned()
                })
                .unwrap_or_default(),
        };
        self.requests.get_or_create(&labels).inc();
        if let Some(d) = f.duration {
            self.durations
                .get_or_create(&labels)
                .observe(d.as_secs_f64());
        }
        for (name, value) in &f.numbers {
            let labels = DimensionLabels {
                dimension: limiter.admit("dimension", name).into_owned(),
                server_address: server.clone(),
            };
            self.dimensions.get_or_create(&labels).inc_by(*value);
        }
        if let Some(g) = &f.gen_ai {
            for (kind, n) in &g.tokens {
                let labels = TokenLabels {
                    gen_ai_system: g.system.to_owned(),
                    gen_ai_operation_name: g.operation.unwrap_or_default().to_owned(),
                    gen_ai_request_model: g
                        .request_model
                        .map(|m| limiter.admit("gen_ai.request.model", m).into_owned())
                        .unwrap_or_default(),
                    gen_ai_token_type: kind.as_str().to_owned(),
                    server_address: server.clone(),
                };
                #[allow(clippy::cast_precision_loss)]
                self.tokens.get_or_create(&labels).observe(*n as f64);
            }
        }
    }
}

fn counter(
    encoder: &mut DescriptorEncoder<'_>,
    name: &str,
    help: &str,
    v: u64,
) -> std::fmt::Result {
    let c = ConstCounter::new(v);
    c.encode(encoder.encode_descriptor(name, help, None, MetricType::Counter)?)
}

impl Collector for AgentCollector {
    fn encode(&self, mut encoder: DescriptorEncoder<'_>) -> std::fmt::Result {
        let state = &self.0;
        let values = state
            .counters
            .lock()
            .map(|c| c.0.clone())
            .unwrap_or_default();
        for (name, v) in &values {
            counter(
                &mut encoder,
                name,
                "A counter of the agent's stats line (see docs/capture.md and docs/export.md)",
                *v,
            )?;
        }
        let g = &state.gauges;
        let gauge = ConstGauge::new(
            i64::try_from(g.attached_processes.load(Ordering::Relaxed)).unwrap_or(i64::MAX),
        );
        gauge.encode(encoder.encode_descriptor(
            "attached_processes",
            "Processes the probes are attached to",
            None,
            MetricType::Gauge,
        )?)?;
        let uptime = ConstGauge::new(state.started.elapsed().as_secs_f64());
        uptime.encode(encoder.encode_descriptor(
            "uptime_seconds",
            "Seconds since the agent started",
            None,
            MetricType::Gauge,
        )?)?;
        let packs = state.packs.lock().ok().and_then(|p| p.clone());
        let Some(packs) = packs else {
            return Ok(());
        };
        let stats = packs.current().stats();
        let loaded = ConstGauge::new(i64::try_from(stats.len()).unwrap_or(i64::MAX));
        loaded.encode(encoder.encode_descriptor(
            "packs_loaded",
            "Packs loaded",
            None,
            MetricType::Gauge,
        )?)?;
        let per_pack: [PerPack; 4] = [
            ("pack_calls", "Hook calls made, per pack", |p| p.calls),
            (
                "pack_skipped_domain",
                "Hook calls not made because the host is outside the pack's domains, per pack",
                |p| p.skipped_domain,
            ),
            (
                "pack_skipped_shed",
                "Exchanges the pack was skipped on because its worker fell behind, per pack",
                |p| p.skipped_shed,
            ),
            (
                "pack_instances_recreated",
                "Pack instances re-created after a failure, per pack",
                |p| p.instances_recreated,
            ),
        ];
        for (name, help, value) in per_pack {
            let mut family = encoder.encode_descriptor(name, help, None, MetricType::Counter)?;
            for p in &stats {
                let labels = [("pack", p.pack.as_str())];
                ConstCounter::new(value(p)).encode(family.encode_family(&labels)?)?;
            }
        }
        let mut family = encoder.encode_descriptor(
            "pack_failures",
            "Failed hook calls, per pack and kind (timeout, fuel, out_of_memory, trap, ...)",
            None,
            MetricType::Counter,
        )?;
        for p in &stats {
            for kind in taskless_pack_runtime::FailureKind::ALL {
                let labels = [("pack", p.pack.as_str()), ("kind", kind.as_str())];
                ConstCounter::new(p.failures_of(kind)).encode(family.encode_family(&labels)?)?;
            }
        }
        Ok(())
    }
}

/// Records each exchange into the Prometheus families (on when `/metrics` is served).
pub struct MetricsSink {
    telemetry: Arc<Telemetry>,
    limiter: Arc<LabelLimiter>,
}

impl MetricsSink {
    /// Records into `telemetry`.
    #[must_use]
    pub fn new(telemetry: Arc<Telemetry>, limiter: Arc<LabelLimiter>) -> Self {
        Self { telemetry, limiter }
    }
}

impl Sink for MetricsSink {
    fn name(&self) -> &'static str {
        "metrics"
    }

    fn write(&mut self, exchange: &FinishedExchange) -> std::io::Result<()> {
        self.telemetry.record(exchange, &self.limiter);
        Ok(())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::sinks::exchange::tests::exchange;

    #[test]
    fn exchanges_counters_and_packs_appear_in_the_text_format() {
        let t = Telemetry::new();
        let limiter = LabelLimiter::new(10);
        let ex = exchange(
            "https://api.openai.com/v1/chat/completions?key=sk-secret",
            &[
                ("openai/endpoint", "/v1/chat/completions"),
                ("openai/model", "gpt-4o-mini"),
                ("openai/promptTokens", "12"),
                ("openai/completionTokens", "3"),
            ],
        );
        t.record(&ex, &limiter);
        t.record(&ex, &limiter);
        let snapshot = Snapshot(vec![("exchanges".into(), 2), ("kernel_calls".into(), 9)]);
        t.publish(&[&snapshot]);
        t.gauges().attached_processes.store(3, Ordering::Relaxed);
        let text = t.encode().unwrap();
        for want in [
            "taskless_agent_exchanges_total 2",
            "taskless_agent_kernel_calls_total 9",
            "taskless_agent_attached_processes 3",
            r#"taskless_agent_http_client_requests_total{server_address="api.openai.com",http_request_method="POST",http_response_status_code="200"} 2"#,
            r#"taskless_agent_http_client_request_duration_seconds_count{server_address="api.openai.com",http_request_method="POST",http_response_status_code="200"} 2"#,
            r#"taskless_agent_pack_dimension_total{dimension="openai/promptTokens",server_address="api.openai.com"} 24.0"#,
            r#"taskless_agent_gen_ai_client_token_usage_sum{gen_ai_system="openai",gen_ai_operation_name="chat",gen_ai_request_model="gpt-4o-mini",gen_ai_token_type="input",server_address="api.openai.com"} 24.0"#,
        ] {
            assert!(text.contains(want), "{want} missing from\n{text}");
        }
        assert!(!text.contains("sk-secret"));
    }
}
