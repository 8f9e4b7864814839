//! The OTLP metrics, under OpenTelemetry's semantic conventions where they define one:
//!
//! | instrument | kind | attributes |
//! |---|---|---|
//! | `http.client.request.duration` (s) | histogram | `http.request.method`, `server.address`, `server.port`, `http.response.status_code`, `error.type` |
//! | `taskless.http.client.requests` | counter | the same: every exchange, with or without a whole response |
//! | `taskless.pack.dimension` | counter | `taskless.dimension`, `server.address`: the sum of each numeric pack dimension |
//! | `gen_ai.client.token.usage` ({token}) | histogram | `gen_ai.system`, `gen_ai.provider.name`, `gen_ai.operation.name`, `gen_ai.request.model`, `gen_ai.response.model`, `gen_ai.token.type`, `server.address`, `server.port` |
//!
//! Every attribute value that can grow (server, status, model, dimension name) goes through the
//! shared [`LabelLimiter`].

use opentelemetry::{
    KeyValue,
    metrics::{Counter, Histogram, Meter},
};

use crate::sinks::{
    ExchangeFacts, LabelLimiter,
    prometheus::{DURATION_BUCKETS, TOKEN_BUCKETS},
};

/// The instruments the sink records into.
pub struct Instruments {
    duration: Histogram<f64>,
    requests: Counter<u64>,
    dimension: Counter<f64>,
    tokens: Histogram<u64>,
}

impl Instruments {
    /// Creates the instruments on `meter`.
    pub fn new(meter: &Meter) -> Self {
        Self {
            duration: meter
                .f64_histogram("http.client.request.duration")
                .with_unit("s")
                .with_description("Duration of HTTP client requests (first request byte written to last response byte read)")
                .with_boundaries(DURATION_BUCKETS.to_vec())
                .build(),
            requests: meter
                .u64_counter("taskless.http.client.requests")
                .with_unit("{request}")
                .with_description("HTTP client exchanges seen, with or without a whole response")
                .build(),
            dimension: meter
                .f64_counter("taskless.pack.dimension")
                .with_description("Sum of the values of each numeric pack dimension (token counts, flags)")
                .build(),
            tokens: meter
                .u64_histogram("gen_ai.client.token.usage")
                .with_unit("{token}")
                .with_description("Number of input and output tokens used")
                .with_boundaries(TOKEN_BUCKETS.to_vec())
                .build(),
        }
    }

    /// Records one exchange.
    pub fn record(&self, f: &ExchangeFacts<'_>, limiter: &LabelLimiter) {
        let server = f
            .server_address
            .map(|s| limiter.admit("server.address", s).into_owned());
        let mut http = vec![KeyValue::new(
            "http.request.method",
            f.method_label.to_owned(),
        )];
        if let Some(s) = &server {
            http.push(KeyValue::new("server.address", s.clone()));
        }
        if let Some(p) = f.server_port {
            http.push(KeyValue::new("server.port", i64::from(p)));
        }
        if let Some(s) = f.status {
            let s = limiter
                .admit("http.response.status_code", &s.to_string())
                .into_owned();
            http.push(KeyValue::new(
                "http.response.status_code",
                s.parse::<i64>().map_or_else(
                    |_| opentelemetry::Value::from(s),
                    opentelemetry::Value::from,
                ),
            ));
        }
        if let Some(e) = &f.error_type {
            http.push(KeyValue::new(
                "error.type",
                limiter.admit("error.type", e).into_owned(),
            ));
        }
        self.requests.add(1, &http);
        if let Some(d) = f.duration {
            self.duration.record(d.as_secs_f64(), &http);
        }
        for (name, value) in &f.numbers {
            let mut attrs = vec![KeyValue::new(
                "taskless.dimension",
                limiter.admit("dimension", name).into_owned(),
            )];
            if let Some(s) = &server {
                attrs.push(KeyValue::new("server.address", s.clone()));
            }
            self.dimension.add(*value, &attrs);
        }
        if let Some(g) = &f.gen_ai {
            let mut attrs = vec![
                KeyValue::new("gen_ai.system", g.system),
                KeyValue::new("gen_ai.provider.name", g.system),
            ];
            if let Some(op) = g.operation {
                attrs.push(KeyValue::new("gen_ai.operation.name", op));
            }
            if let Some(m) = g.request_model {
                attrs.push(KeyValue::new(
                    "gen_ai.request.model",
                    limiter.admit("gen_ai.request.model", m).into_owned(),
                ));
            }
            if let Some(m) = g.response_model {
                attrs.push(KeyValue::new(
                    "gen_ai.response.model",
                    limiter.admit("gen_ai.response.model", m).into_owned(),
                ));
            }
            if let Some(s) = &server {
                attrs.push(KeyValue::new("server.address", s.clone()));
            }
            if let Some(p) = f.server_port {
                attrs.push(KeyValue::new("server.port", i64::from(p)));
            }
            for (kind, n) in &g.tokens {
                let mut a = attrs.clone();
                a.push(KeyValue::new("gen_ai.token.type", kind.as_str()));
                self.tokens.record(*n, &a);
            }
        }
    }
}
