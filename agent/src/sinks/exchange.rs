//! What the telemetry sinks (OTLP, Prometheus) read from a finished exchange, worked out once
//! with OpenTelemetry's semantic conventions: the normalised method, the server, the status
//! and error type, the duration, the URL with its credentials taken out, the packs' numeric
//! dimensions, and the GenAI token usage the openai and anthropic packs captured.

use std::{borrow::Cow, time::Duration};

use taskless_url::redact_url;

use crate::packs::FinishedExchange;

/// HTTP methods OpenTelemetry knows; any other is reported as `_OTHER`.
const KNOWN_METHODS: &[&str] = &[
    "CONNECT", "DELETE", "GET", "HEAD", "OPTIONS", "PATCH", "POST", "PUT", "TRACE", "QUERY",
];

/// Which type of token a count is (`gen_ai.token.type`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum TokenType {
    /// Tokens sent to the model.
    Input,
    /// Tokens the model produced.
    Output,
}

impl TokenType {
    /// The attribute value.
    #[must_use]
    pub const fn as_str(self) -> &'static str {
        match self {
            Self::Input => "input",
            Self::Output => "output",
        }
    }
}

/// A GenAI call as the openai or anthropic pack saw it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct GenAi<'a> {
    /// `gen_ai.system` (and `gen_ai.provider.name`): `openai` or `anthropic`.
    pub system: &'static str,
    /// `gen_ai.operation.name`, when the endpoint is one the conventions name.
    pub operation: Option<&'static str>,
    /// `gen_ai.request.model`.
    pub request_model: Option<&'a str>,
    /// `gen_ai.response.model`.
    pub response_model: Option<&'a str>,
    /// Token counts by type.
    pub tokens: Vec<(TokenType, u64)>,
}

/// The packs whose token counts map onto `gen_ai.client.token.usage`: pack name, system, and
/// the capture keys of request model, response model, input and output tokens.
const GENAI_PACKS: &[(&str, &str, [&str; 4])] = &[
    (
        "openai",
        "openai",
        ["model", "responseModel", "promptTokens", "completionTokens"],
    ),
    (
        "anthropic",
        "anthropic",
        ["model", "responseModel", "inputTokens", "outputTokens"],
    ),
];

/// One exchange, read for telemetry.
#[derive(Clone, Debug)]
pub struct ExchangeFacts<'a> {
    /// The method as sent.
    pub method: &'a str,
    /// `http.request.method`: the method, or `_OTHER` when it is not a known one.
    pub method_label: &'a str,
    /// `server.address`: the TLS server name, else the request's host.
    pub server_address: Option<&'a str>,
    /// `server.port`: from the URL, else the scheme's default.
    pub server_port: Option<u16>,
    /// `url.full` with credentials redacted.
    pub url_full: Cow<'a, str>,
    /// `url.path`.
    pub path: &'a str,
    /// `http.response.status_code`.
    pub status: Option<u16>,
    /// `error.type`: the status for 4xx and 5xx, `incomplete` when no whole response came.
    pub error_type: Option<Cow<'a, str>>,
    /// First request byte written to last response byte read.
    pub duration: Option<Duration>,
    /// Pack dimensions whose value is a finite, non-negative number.
    pub numbers: Vec<(&'a str, f64)>,
    /// The GenAI call, when a GenAI pack captured one.
    pub gen_ai: Option<GenAi<'a>>,
}

impl<'a> ExchangeFacts<'a> {
    /// Reads `exchange`.
    #[must_use]
    pub fn of(exchange: &'a FinishedExchange) -> Self {
        let method = exchange.method.as_str();
        let method_label = if KNOWN_METHODS.contains(&method) {
            method
        } else {
            "_OTHER"
        };
        let parts = taskless_url::split(&exchange.url);
        let url_port = parts
            .authority
            .rsplit_once(':')
            .and_then(|(_, p)| p.parse::<u16>().ok());
        // A Host header leaves the port out only when it is the scheme's default.
        let server_port = url_port.or(match parts.scheme {
            Some("https") => Some(443),
            Some("http") => Some(80),
            _ => None,
        });
        let path = exchange.url.find("://").map_or(exchange.url.as_str(), |i| {
            let rest = &exchange.url[i + 3..];
            rest.find('/').map_or("/", |j| &rest[j..])
        });
        let path = path.split(['?', '#']).next().unwrap_or("/");
        let status = exchange.status;
        let error_type = match status {
            Some(s) if s >= 400 => Some(Cow::Owned(s.to_string())),
            _ if !exchange.complete => Some(Cow::Borrowed("incomplete")),
            _ => None,
        };
        let t = &exchange.timing;
        let duration = t
            .response_end_unix_ns
            .filter(|_| exchange.complete)
            .map(|end| Duration::from_nanos(end.saturating_sub(t.request_start_unix_ns)));
        let numbers = exchange
            .dimensions
            .iter()
            .filter_map(|d| {
                let v: f64 = d.value.trim().parse().ok()?;
                (v.is_finite() && v >= 0.0).then_some((d.name.as_str(), v))
            })
            .collect();
        Self {
            method,
            method_label,
            server_address: exchange.server_name(),
            server_port,
            url_full: redact_url(&exchange.url),
            path,
            status,
            error_type,
            duration,
            numbers,
            gen_ai: gen_ai(exchange),
        }
    }
}

/// The value of dimension `pack/key`.
fn dimension<'a>(exchange: &'a FinishedExchange, pack: &str, key: &str) -> Option<&'a str> {
    exchange.dimensions.iter().find_map(|d| {
        d.name
            .strip_prefix(pack)
            .and_then(|rest| rest.strip_prefix('/'))
            .filter(|k| *k == key)
            .map(|_| d.value.as_str())
    })
}

fn gen_ai(exchange: &FinishedExchange) -> Option<GenAi<'_>> {
    for (pack, system, [request_model, response_model, input, output]) in GENAI_PACKS {
        let count =
            |key: &str| dimension(exchange, pack, key).and_then(|v| v.trim().parse::<u64>().ok());
        let tokens: Vec<(TokenType, u64)> =
            [(TokenType::Input, input), (TokenType::Output, output)]
                .into_iter()
                .filter_map(|(t, key)| count(key).map(|n| (t, n)))
                .collect();
        if tokens.is_empty() {
            continue;
        }
        return Some(GenAi {
            system,
            operation: dimension(exchange, pack, "endpoint").and_then(operation_of),
            request_model: dimension(exchange, pack, request_model),
            response_model: dimension(exchange, pack, response_model),
            tokens,
        });
    }
    None
}

/// `gen_ai.operation.name` for an API path.
fn operation_of(endpoint: &str) -> Option<&'static str> {
    let e = endpoint.trim_end_matches('/');
    if e.ends_with("/chat/completions") || e.ends_with("/responses") || e.ends_with("/messages") {
        Some("chat")
    } else if e.ends_with("/completions") {
        Some("text_completion")
    } else if e.ends_with("/embeddings") {
        Some("embeddings")
    } else {
        None
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use std::sync::Arc;

    use taskless_pack_runtime::{Dimension, Timing};

    use super::*;
    use crate::flows::Identity;

    pub(crate) fn exchange(url: &str, dims: &[(&str, &str)]) -> FinishedExchange {
        FinishedExchange {
            request_id: "0".repeat(32),
            dimensions: dims
                .iter()
                .map(|(n, v)| Dimension {
                    name: (*n).into(),
                    value: (*v).into(),
                })
                .collect(),
            skipped: Vec::new(),
            identity: Arc::new(Identity {
                pid: 7,
                process: "python3".into(),
                serial: 1,
                remote_address: Some("127.0.0.1:8443".parse().unwrap()),
                ..Identity::default()
            }),
            method: "POST".into(),
            url: url.into(),
            domain: taskless_url::RequestUrl::parse(url).domain,
            status: Some(200),
            timing: Timing {
                request_start_unix_ns: 1_000_000_000,
                request_end_unix_ns: 1_001_000_000,
                response_start_unix_ns: Some(1_040_000_000),
                response_end_unix_ns: Some(1_042_000_000),
            },
            complete: true,
            partial: false,
        }
    }

    #[test]
    fn an_openai_call_gives_genai_usage_and_a_redacted_url() {
        let ex = exchange(
            "https://localhost:8443/v1/chat/completions?api_key=sk-1&x=2",
            &[
                ("openai/endpoint", "/v1/chat/completions"),
                ("openai/model", "gpt-4o-mini"),
                ("openai/responseModel", "gpt-4o-mini-2024-07-18"),
                ("openai/promptTokens", "12"),
                ("openai/completionTokens", "3"),
                ("openai/finishReason", "stop"),
            ],
        );
        let f = ExchangeFacts::of(&ex);
        assert_eq!(
            f.url_full,
            "https://localhost:8443/v1/chat/completions?api_key=REDACTED&x=REDACTED"
        );
        assert_eq!(f.path, "/v1/chat/completions");
        assert_eq!(
            (f.method_label, f.server_address, f.server_port),
            ("POST", Some("localhost"), Some(8443))
        );
        assert_eq!(f.duration, Some(Duration::from_millis(42)));
        assert_eq!(f.error_type, None);
        assert_eq!(
            f.gen_ai,
            Some(GenAi {
                system: "openai",
                operation: Some("chat"),
                request_model: Some("gpt-4o-mini"),
                response_model: Some("gpt-4o-mini-2024-07-18"),
                tokens: vec![(TokenType::Input, 12), (TokenType::Output, 3)],
            })
        );
        let names: Vec<&str> = f.numbers.iter().map(|(n, _)| *n).collect();
        assert_eq!(names, ["openai/promptTokens", "openai/completionTokens"]);
    }

    #[test]
    fn errors_odd_methods_and_incomplete_exchanges() {
        let mut ex = exchange("https://api.stripe.com/v1/charges", &[]);
        ex.status = Some(402);
        ex.method = "BREW".into();
        let f = ExchangeFacts::of(&ex);
        assert_eq!(f.method_label, "_OTHER");
        assert_eq!(f.error_type.as_deref(), Some("402"));
        assert_eq!(f.server_port, Some(443), "the scheme's default");
        assert!(f.gen_ai.is_none());
        ex.complete = false;
        ex.status = None;
        let f = ExchangeFacts::of(&ex);
        assert_eq!(f.error_type.as_deref(), Some("incomplete"));
        assert_eq!(f.duration, None);
    }
}
