//! One exchange as an OpenTelemetry log record: the exchange's attributes under the HTTP,
//! URL, server, network, process and container semantic conventions, and each pack dimension as
//! `taskless.pack.<pack>.<key>` (numbers as numbers). One agent reports many processes, so the
//! observed process is described on each record; the resource describes the agent.

use std::time::{Duration, SystemTime};

use opentelemetry::logs::{AnyValue, LogRecord as _, Severity};
use opentelemetry_sdk::logs::SdkLogRecord;

use crate::{packs::FinishedExchange, sinks::ExchangeFacts};

/// The record's event name.
pub const EVENT_NAME: &str = "taskless.exchange";

/// A dimension value as an attribute: an integer or a float when it is written as one, else
/// the text.
fn value_of(text: &str) -> AnyValue {
    if let Ok(i) = text.parse::<i64>()
        && i.to_string() == text
    {
        return AnyValue::Int(i);
    }
    if let Ok(f) = text.parse::<f64>()
        && f.is_finite()
        && text.contains('.')
        && !text.starts_with('.')
    {
        return AnyValue::Double(f);
    }
    AnyValue::String(text.to_owned().into())
}

/// Fills `log` from one exchange.
pub fn fill(log: &mut SdkLogRecord, exchange: &FinishedExchange, f: &ExchangeFacts<'_>) {
    let t = &exchange.timing;
    log.set_event_name(EVENT_NAME);
    log.set_timestamp(SystemTime::UNIX_EPOCH + Duration::from_nanos(t.request_start_unix_ns));
    log.set_observed_timestamp(SystemTime::now());
    let (severity, text) = match f.status {
        Some(500..) => (Severity::Error, "ERROR"),
        Some(400..) => (Severity::Warn, "WARN"),
        _ if !exchange.complete => (Severity::Warn, "WARN"),
        _ => (Severity::Info, "INFO"),
    };
    log.set_severity_number(severity);
    log.set_severity_text(text);
    let status = f.status.map_or_else(|| "-".to_owned(), |s| s.to_string());
    log.set_body(AnyValue::String(
        format!(
            "{} {}{} {status}",
            f.method,
            f.server_address.unwrap_or(""),
            f.path
        )
        .into(),
    ));

    log.add_attribute("taskless.request_id", exchange.request_id.clone());
    log.add_attribute("http.request.method", f.method_label.to_owned());
    if f.method_label != f.method {
        log.add_attribute("http.request.method_original", f.method.to_owned());
    }
    log.add_attribute("url.full", f.url_full.clone().into_owned());
    log.add_attribute("url.path", f.path.to_owned());
    if let Some(s) = f.status {
        log.add_attribute("http.response.status_code", i64::from(s));
    }
    if let Some(e) = &f.error_type {
        log.add_attribute("error.type", e.clone().into_owned());
    }
    if let Some(a) = f.server_address {
        log.add_attribute("server.address", a.to_owned());
    }
    if let Some(p) = f.server_port {
        log.add_attribute("server.port", i64::from(p));
    }
    if let Some(d) = f.duration {
        log.add_attribute("taskless.duration_ms", d.as_secs_f64() * 1000.0);
    }
    log.add_attribute("taskless.complete", exchange.complete);
    if exchange.partial {
        log.add_attribute("taskless.partial", true);
    }
    if !exchange.skipped.is_empty() {
        log.add_attribute(
            "taskless.skipped_packs",
            AnyValue::ListAny(Box::new(
                exchange
                    .skipped
                    .iter()
                    .map(|p| AnyValue::String(p.clone().into()))
                    .collect(),
            )),
        );
    }

    let id = &exchange.identity;
    log.add_attribute("process.pid", i64::from(id.pid));
    if !id.process.is_empty() {
        log.add_attribute("process.executable.name", id.process.clone());
    }
    log.add_attribute(
        "taskless.connection",
        i64::try_from(id.serial).unwrap_or(i64::MAX),
    );
    if let Some(sni) = &id.server_name {
        log.add_attribute("tls.client.server_name", sni.clone());
    }
    if let Some(a) = id.local_address {
        log.add_attribute("network.local.address", a.ip().to_canonical().to_string());
        log.add_attribute("network.local.port", i64::from(a.port()));
    }
    if let Some(a) = id.remote_address {
        log.add_attribute("network.peer.address", a.ip().to_canonical().to_string());
        log.add_attribute("network.peer.port", i64::from(a.port()));
    }
    if let Some(role) = id.role {
        log.add_attribute("taskless.role", role.as_str());
    }
    if let Some(c) = &id.container_id {
        log.add_attribute("container.id", c.clone());
    }
    if let Some(k) = &id.k8s {
        log.add_attribute("k8s.pod.uid", k.pod_uid.clone());
        if let Some(v) = &k.pod {
            log.add_attribute("k8s.pod.name", v.clone());
        }
        if let Some(v) = &k.namespace {
            log.add_attribute("k8s.namespace.name", v.clone());
        }
        if let Some(v) = &k.container {
            log.add_attribute("k8s.container.name", v.clone());
        }
        if id.container_id.is_none()
            && let Some(v) = &k.container_id
        {
            log.add_attribute("container.id", v.clone());
        }
        if let Some(v) = &k.runtime {
            log.add_attribute("container.runtime", v.clone());
        }
    }
    if let Some(c) = &id.cgroup {
        log.add_attribute("taskless.cgroup", c.clone());
    }

    for d in &exchange.dimensions {
        let key = match d.name.split_once('/') {
            Some((pack, key)) => format!("taskless.pack.{pack}.{key}"),
            None => format!("taskless.pack.{}", d.name),
        };
        log.add_attribute(key, value_of(&d.value));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn numbers_become_numbers_only_when_written_as_numbers() {
        assert_eq!(value_of("12"), AnyValue::Int(12));
        assert_eq!(value_of("-3"), AnyValue::Int(-3));
        assert_eq!(value_of("0.25"), AnyValue::Double(0.25));
        for text in ["007", "1e3", "card_error", "", ".5", "NaN", "inf"] {
            assert_eq!(
                value_of(text),
                AnyValue::String(text.to_owned().into()),
                "{text}"
            );
        }
    }

    #[test]
    fn packs_shed_for_the_exchange_are_listed_only_when_any_were() {
        use opentelemetry::Key;
        use opentelemetry::logs::{Logger as _, LoggerProvider as _};

        let provider = opentelemetry_sdk::logs::SdkLoggerProvider::builder().build();
        let logger = provider.logger("test");
        let mut ex = crate::sinks::exchange::tests::exchange(
            "https://api.stripe.com/v1/charges",
            &[("core/status", "200")],
        );
        let skipped = |ex: &FinishedExchange| {
            let mut log = logger.create_log_record();
            fill(&mut log, ex, &ExchangeFacts::of(ex));
            log.attributes_iter()
                .find(|(k, _)| *k == Key::from_static_str("taskless.skipped_packs"))
                .map(|(_, v)| v.clone())
        };
        assert_eq!(skipped(&ex), None);
        ex.skipped = vec!["pii".into(), "slow".into()];
        assert_eq!(
            skipped(&ex),
            Some(AnyValue::ListAny(Box::new(vec![
                AnyValue::String("pii".into()),
                AnyValue::String("slow".into()),
            ])))
        );
    }
}
