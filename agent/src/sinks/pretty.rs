//! `--output pretty`: a console a person reads. One aligned line per exchange — local time,
//! process, method, host and path, status, duration and what the packs found — and, every few
//! seconds, a summary of the last interval. Colour when stdout is a terminal (and `NO_COLOR` is
//! not set). The query string is never shown: it can carry credentials.

use std::{
    collections::BTreeMap,
    io::{BufWriter, Write as _},
    time::{Duration, Instant},
};

use anstyle::{AnsiColor, Style};

use super::{Sink, highlights::highlights};
use crate::packs::FinishedExchange;

const DIM: Style = Style::new().dimmed();
const BOLD: Style = Style::new().bold();
const HOST_PATH_WIDTH: usize = 44;
const PROCESS_WIDTH: usize = 18;

/// The console output.
pub struct PrettySink<W: std::io::Write + Send> {
    out: BufWriter<W>,
    colour: bool,
    interval: Duration,
    window: Window,
}

/// What the summary counts over one interval.
struct Window {
    since: Instant,
    exchanges: u64,
    failed: u64,
    incomplete: u64,
    durations_ms: Vec<u64>,
    by_pack: BTreeMap<String, u64>,
}

impl Window {
    fn new(now: Instant) -> Self {
        Self {
            since: now,
            exchanges: 0,
            failed: 0,
            incomplete: 0,
            durations_ms: Vec::new(),
            by_pack: BTreeMap::new(),
        }
    }
}

impl PrettySink<std::io::Stdout> {
    /// To stdout, coloured when it is a terminal.
    #[must_use]
    pub fn stdout(interval: Duration) -> Self {
        let colour =
            anstream::AutoStream::choice(&std::io::stdout()) != anstream::ColorChoice::Never;
        Self::new(std::io::stdout(), colour, interval)
    }
}

impl<W: std::io::Write + Send> PrettySink<W> {
    /// To `out`, with or without colour, a summary every `interval`.
    pub fn new(out: W, colour: bool, interval: Duration) -> Self {
        Self {
            out: BufWriter::new(out),
            colour,
            interval,
            window: Window::new(Instant::now()),
        }
    }

    fn paint(&self, style: Style, text: &str) -> String {
        if self.colour {
            format!("{style}{text}{style:#}")
        } else {
            text.to_owned()
        }
    }

    /// The line for one exchange, without a newline.
    fn line(&self, exchange: &FinishedExchange) -> String {
        let identity = &exchange.identity;
        let time = local_time(exchange.timing.request_start_unix_ns);
        let process = if identity.process.is_empty() {
            format!("[{}]", identity.pid)
        } else {
            format!("{}[{}]", identity.process, identity.pid)
        };
        let host = exchange.server_name().unwrap_or("?");
        let path = taskless_url::split(&exchange.url);
        let path = path
            .target
            .split(['?', '#'])
            .next()
            .unwrap_or("/")
            .to_owned();
        let host_path = truncate(&format!("{host}{path}"), HOST_PATH_WIDTH);
        let status = match exchange.status {
            Some(s) => {
                let colour = match s {
                    200..=299 => AnsiColor::Green,
                    300..=399 => AnsiColor::Cyan,
                    400..=499 => AnsiColor::Yellow,
                    _ => AnsiColor::Red,
                };
                self.paint(
                    Style::new().fg_color(Some(colour.into())).bold(),
                    &s.to_string(),
                )
            }
            None => self.paint(DIM, "---"),
        };
        let duration = duration_of(exchange).map_or_else(|| "-".to_owned(), format_duration);
        let mut found = highlights(&exchange.dimensions, exchange.status);
        if exchange.partial {
            found.insert(0, "partial".into());
        }
        if !exchange.complete {
            found.insert(0, "incomplete".into());
        }
        let found = found
            .iter()
            .map(|h| match h.split_once(' ') {
                Some((pack, rest)) => format!("{} {rest}", self.paint(BOLD, pack)),
                None => h.clone(),
            })
            .collect::<Vec<_>>()
            .join(&self.paint(DIM, " · "));
        format!(
            "{} {} {} {} {} {:>7}  {found}",
            self.paint(DIM, &time),
            pad(&truncate(&process, PROCESS_WIDTH), PROCESS_WIDTH),
            self.paint(BOLD, &pad(&exchange.method, 6)),
            pad(&host_path, HOST_PATH_WIDTH),
            status,
            duration,
        )
        .trim_end()
        .to_owned()
    }

    fn count(&mut self, exchange: &FinishedExchange) {
        let w = &mut self.window;
        w.exchanges += 1;
        if exchange.status.is_some_and(|s| s >= 400) {
            w.failed += 1;
        }
        if !exchange.complete {
            w.incomplete += 1;
        }
        if let Some(d) = duration_of(exchange) {
            w.durations_ms
                .push(u64::try_from(d.as_millis()).unwrap_or(u64::MAX));
        }
        let mut packs: Vec<&str> = exchange
            .dimensions
            .iter()
            .filter_map(|d| d.name.split_once('/').map(|(p, _)| p))
            .filter(|p| *p != "core")
            .collect();
        packs.dedup();
        for p in packs {
            *w.by_pack.entry(p.to_owned()).or_default() += 1;
        }
    }

    /// The summary of the window, or `None` when nothing happened in it.
    fn summary(&mut self, now: Instant) -> Option<String> {
        let w = std::mem::replace(&mut self.window, Window::new(now));
        if w.exchanges == 0 {
            return None;
        }
        let secs = now.duration_since(w.since).as_secs_f64().round();
        let mut parts = vec![format!(
            "{} exchange{} in {secs:.0} s",
            w.exchanges,
            if w.exchanges == 1 { "" } else { "s" }
        )];
        if w.failed > 0 {
            parts.push(format!("{} failed", w.failed));
        }
        if w.incomplete > 0 {
            parts.push(format!("{} incomplete", w.incomplete));
        }
        let mut d = w.durations_ms;
        if !d.is_empty() {
            d.sort_unstable();
            let at = |q: f64| {
                let i = ((d.len() - 1) as f64 * q).round() as usize;
                d[i.min(d.len() - 1)]
            };
            parts.push(format!("p50 {} ms, p95 {} ms", at(0.5), at(0.95)));
        }
        if !w.by_pack.is_empty() {
            parts.push(
                w.by_pack
                    .iter()
                    .map(|(p, n)| format!("{p} {n}"))
                    .collect::<Vec<_>>()
                    .join(", "),
            );
        }
        Some(self.paint(DIM, &format!("── {}", parts.join(" · "))))
    }
}

impl<W: std::io::Write + Send> Sink for PrettySink<W> {
    fn name(&self) -> &'static str {
        "pretty"
    }

    fn write(&mut self, exchange: &FinishedExchange) -> std::io::Result<()> {
        let line = self.line(exchange);
        self.count(exchange);
        writeln!(self.out, "{line}")
    }

    fn flush(&mut self) -> std::io::Result<()> {
        self.out.flush()
    }

    fn tick(&mut self, now: Instant) -> std::io::Result<()> {
        if now.duration_since(self.window.since) < self.interval {
            return Ok(());
        }
        if let Some(summary) = self.summary(now) {
            writeln!(self.out, "{summary}")?;
            self.out.flush()?;
        }
        Ok(())
    }

    fn finish(&mut self) {
        if let Some(summary) = self.summary(Instant::now()) {
            let _ = writeln!(self.out, "{summary}");
        }
        let _ = self.out.flush();
    }
}

fn duration_of(exchange: &FinishedExchange) -> Option<Duration> {
    let t = &exchange.timing;
    t.response_end_unix_ns
        .map(|end| Duration::from_nanos(end.saturating_sub(t.request_start_unix_ns)))
}

fn format_duration(d: Duration) -> String {
    let ms = d.as_secs_f64() * 1000.0;
    if ms < 10.0 {
        format!("{ms:.1}ms")
    } else if ms < 10_000.0 {
        format!("{ms:.0}ms")
    } else {
        format!("{:.1}s", d.as_secs_f64())
    }
}

fn truncate(s: &str, width: usize) -> String {
    if s.chars().count() <= width {
        return s.to_owned();
    }
    let mut t: String = s.chars().take(width.saturating_sub(1)).collect();
    t.push('…');
    t
}

fn pad(s: &str, width: usize) -> String {
    format!("{s:<width$}")
}

/// `HH:MM:SS.mmm` in local time.
fn local_time(unix_ns: u64) -> String {
    let secs = i64::try_from(unix_ns / 1_000_000_000).unwrap_or(0);
    let ms = (unix_ns / 1_000_000) % 1000;
    // SAFETY: `tm` is plain data; localtime_r only writes into it.
    let mut tm: libc::tm = unsafe { std::mem::zeroed() };
    let t: libc::time_t = secs;
    // SAFETY: valid pointers to a time_t and a tm for the duration of the call.
    let ok = unsafe { !libc::localtime_r(&raw const t, &raw mut tm).is_null() };
    if !ok {
        return format!("{secs}.{ms:03}");
    }
    format!(
        "{:02}:{:02}:{:02}.{ms:03}",
        tm.tm_hour, tm.tm_min, tm.tm_sec
    )
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use taskless_pack_runtime::{Dimension, Timing};

    use super::*;
    use crate::flows::Identity;

    fn exchange(status: Option<u16>, dims: &[(&str, &str)]) -> FinishedExchange {
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
                pid: 4242,
                process: "python3".into(),
                serial: 1,
                server_name: Some("api.stripe.com".into()),
                ..Identity::default()
            }),
            method: "POST".into(),
            url: "https://api.stripe.com/v1/charges?key=secret".into(),
            domain: "api.stripe.com".into(),
            status,
            timing: Timing {
                request_start_unix_ns: 1_700_000_000_000_000_000,
                request_end_unix_ns: 1_700_000_000_001_000_000,
                response_start_unix_ns: Some(1_700_000_000_040_000_000),
                response_end_unix_ns: Some(1_700_000_000_044_000_000),
            },
            complete: status.is_some(),
            partial: false,
        }
    }

    #[test]
    fn a_line_has_the_columns_and_the_highlights_and_never_the_query() {
        let sink = PrettySink::new(Vec::new(), false, Duration::from_secs(5));
        let line = sink.line(&exchange(
            Some(402),
            &[
                ("stripe/errorType", "card_error"),
                ("stripe/declineCode", "insufficient_funds"),
            ],
        ));
        let columns: Vec<&str> = line.split_whitespace().collect();
        assert_eq!(
            &columns[1..],
            [
                "python3[4242]",
                "POST",
                "api.stripe.com/v1/charges",
                "402",
                "44ms",
                "stripe",
                "card_error/insufficient_funds"
            ],
            "{line}"
        );
        assert!(!line.contains("secret"));
        assert!(
            columns[0].len() == 12 && columns[0].as_bytes()[2] == b':',
            "{line}"
        );
        // Columns line up: the method starts at the same place for any process name.
        let other = {
            let mut e = exchange(Some(200), &[]);
            e.identity = Arc::new(Identity {
                pid: 1,
                process: "curl".into(),
                ..Identity::default()
            });
            sink.line(&e)
        };
        assert_eq!(line.find("POST"), other.find("POST"), "{line}\n{other}");
    }

    #[test]
    fn the_summary_counts_the_interval_and_then_starts_again() {
        let mut sink = PrettySink::new(Vec::new(), false, Duration::from_secs(5));
        let start = sink.window.since;
        sink.write(&exchange(
            Some(200),
            &[("openai/model", "m"), ("openai/totalTokens", "3")],
        ))
        .unwrap();
        sink.write(&exchange(Some(402), &[("stripe/errorType", "card_error")]))
            .unwrap();
        sink.write(&exchange(None, &[])).unwrap();
        let summary = sink.summary(start + Duration::from_secs(5)).unwrap();
        assert_eq!(
            summary,
            "── 3 exchanges in 5 s · 1 failed · 1 incomplete · p50 44 ms, p95 44 ms · openai 1, stripe 1"
        );
        assert_eq!(sink.summary(start + Duration::from_secs(10)), None);
    }
}
