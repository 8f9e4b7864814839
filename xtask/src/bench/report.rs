//! The figures of `cargo xtask bench`: medians over the rounds, the table, the machine, and
//! docs/BENCHMARKS.md.

use std::{path::Path, process::Command};

use super::{Options, Response, Sample, tracers::Tracer};

/// One configuration's figures over the rounds.
pub struct Row {
    pub kind: Tracer,
    pub rounds: usize,
    /// Median requests/s.
    rate: f64,
    /// Medians of the per-round ratios to no tracer and to the floor.
    vs_none: Option<f64>,
    vs_floor: Option<f64>,
    /// Median p99 latency, µs.
    p99_us: f64,
    /// Median wrk CPU per request, µs.
    wrk_cpu_us: f64,
    /// Median tracer CPU per request, µs.
    tracer_cpu_us: Option<f64>,
    /// Events the tracer reported, summed over the rounds (`None`: nothing to report).
    seen: Option<u64>,
    /// wrk's requests, summed over the rounds.
    truth: u64,
    /// Requests wrk completed that the tracer did not report, summed.
    pub missing: u64,
    /// What the tracer counted as lost itself, summed.
    pub counted_lost: u64,
    /// The agent with packs: exchanges reported with some packs shed, summed.
    shed: Option<u64>,
    /// wrk's socket errors and error responses, summed.
    errors: u64,
}

fn median(mut v: Vec<f64>) -> Option<f64> {
    if v.is_empty() {
        return None;
    }
    v.sort_by(f64::total_cmp);
    let m = v.len() / 2;
    Some(if v.len() % 2 == 1 {
        v[m]
    } else {
        f64::midpoint(v[m - 1], v[m])
    })
}

#[allow(clippy::cast_precision_loss)]
fn per_request_us(cpu: f64, requests: u64) -> f64 {
    cpu * 1e6 / requests.max(1) as f64
}

/// The rows: `samples[i]` are the steps of `configs[i]`, one per round in order.
pub fn rows(configs: &[Tracer], samples: &[Vec<Sample>]) -> Vec<Row> {
    let find = |k: Tracer| configs.iter().position(|c| *c == k).map(|i| &samples[i]);
    let (none, floor) = (find(Tracer::None), find(Tracer::Floor));
    let ratio = |base: Option<&Vec<Sample>>, mine: &[Sample]| {
        let base = base?;
        median(
            mine.iter()
                .zip(base)
                .map(|(m, b)| m.rate / b.rate.max(1e-9))
                .collect(),
        )
    };
    configs
        .iter()
        .zip(samples)
        .filter(|(_, s)| !s.is_empty())
        .map(|(&kind, s)| {
            let truth: u64 = s.iter().map(|x| x.requests).sum();
            let traced = s.iter().all(|x| x.seen.is_some()) && kind != Tracer::Floor;
            Row {
                kind,
                rounds: s.len(),
                rate: median(s.iter().map(|x| x.rate).collect()).unwrap_or(0.0),
                vs_none: ratio(none, s),
                vs_floor: ratio(floor, s),
                p99_us: median(s.iter().map(|x| x.p99_us).collect()).unwrap_or(0.0),
                wrk_cpu_us: median(
                    s.iter()
                        .map(|x| per_request_us(x.wrk_cpu, x.requests))
                        .collect(),
                )
                .unwrap_or(0.0),
                tracer_cpu_us: median(
                    s.iter()
                        .filter_map(|x| Some(per_request_us(x.seen.as_ref()?.cpu, x.requests)))
                        .collect(),
                ),
                seen: traced.then(|| {
                    s.iter()
                        .filter_map(|x| x.seen.as_ref())
                        .map(|t| t.events)
                        .sum()
                }),
                truth,
                missing: if traced {
                    s.iter()
                        .map(|x| {
                            x.requests
                                .saturating_sub(x.seen.as_ref().map_or(0, |t| t.events))
                        })
                        .sum()
                } else {
                    0
                },
                counted_lost: s
                    .iter()
                    .filter_map(|x| x.seen.as_ref())
                    .map(|t| t.counted_lost)
                    .sum(),
                shed: matches!(kind, Tracer::Agent(_))
                    .then(|| {
                        s.iter()
                            .map(|x| x.seen.as_ref().and_then(|t| t.shed))
                            .sum::<Option<u64>>()
                    })
                    .flatten(),
                errors: s.iter().map(|x| x.errors).sum(),
            }
        })
        .collect()
}

/// `12345` as `12,345`.
fn thousands(n: u64) -> String {
    let s = n.to_string();
    let mut out = String::new();
    for (i, c) in s.chars().enumerate() {
        if i > 0 && (s.len() - i).is_multiple_of(3) {
            out.push(',');
        }
        out.push(c);
    }
    out
}

#[allow(clippy::cast_possible_truncation, clippy::cast_sign_loss)]
fn round(v: f64) -> u64 {
    v.max(0.0).round() as u64
}

fn latency(us: f64) -> String {
    if us >= 1000.0 {
        format!("{:.2} ms", us / 1000.0)
    } else {
        format!("{us:.0} µs")
    }
}

fn ratio(r: Option<f64>) -> String {
    r.map_or_else(|| "–".to_owned(), |r| format!("{r:.2}"))
}

/// The table (Markdown).
pub fn table(rows: &[Row]) -> String {
    let mut t = String::from(
        "| configuration | requests/s | × no tracer | × floor | p99 latency | wrk CPU per request | tracer CPU per request | reported / wrk's requests | missing | lost (tracer's own count) | packs shed on | wrk errors |\n|---|---|---|---|---|---|---|---|---|---|---|---|\n",
    );
    for r in rows {
        #[allow(clippy::cast_precision_loss)]
        let seen = r.seen.map_or_else(
            || "–".to_owned(),
            |s| {
                format!(
                    "{} / {} ({:.2} %)",
                    thousands(s),
                    thousands(r.truth),
                    s as f64 * 100.0 / r.truth.max(1) as f64
                )
            },
        );
        #[allow(clippy::cast_precision_loss)]
        let missing = if r.seen.is_some() {
            format!(
                "{} ({:.2} %)",
                thousands(r.missing),
                r.missing as f64 * 100.0 / r.truth.max(1) as f64
            )
        } else {
            "–".to_owned()
        };
        #[allow(clippy::cast_precision_loss)]
        let shed = match (r.shed, r.seen) {
            (Some(shed), Some(seen)) => format!(
                "{} ({:.1} %)",
                thousands(shed),
                shed as f64 * 100.0 / seen.max(1) as f64
            ),
            _ => "–".to_owned(),
        };
        let lost = if r.kind == Tracer::None {
            "–".to_owned()
        } else {
            thousands(r.counted_lost)
        };
        t.push_str(&format!(
            "| {} | {} | {} | {} | {} | {:.1} µs | {} | {} | {} | {} | {} | {} |\n",
            r.kind.label(),
            thousands(round(r.rate)),
            ratio(r.vs_none),
            ratio(r.vs_floor),
            latency(r.p99_us),
            r.wrk_cpu_us,
            r.tracer_cpu_us
                .map_or_else(|| "–".to_owned(), |c| format!("{c:.1} µs")),
            seen,
            missing,
            lost,
            shed,
            thousands(r.errors),
        ));
    }
    let rounds: Vec<usize> = rows.iter().map(|r| r.rounds).collect();
    if rounds.windows(2).any(|w| w[0] != w[1]) {
        t.push_str("\nRounds per configuration differ: ");
        t.push_str(
            &rows
                .iter()
                .map(|r| format!("{} {}", r.kind.label(), r.rounds))
                .collect::<Vec<_>>()
                .join(", "),
        );
        t.push('\n');
    }
    t
}

/// A command's first line of output (stdout, else stderr), or `unknown`.
fn first_line(program: &str, args: &[&str]) -> String {
    Command::new(program).args(args).output().map_or_else(
        |_| "not installed".to_owned(),
        |o| {
            let text = if o.stdout.is_empty() {
                o.stderr
            } else {
                o.stdout
            };
            String::from_utf8_lossy(&text)
                .lines()
                .next()
                .unwrap_or("unknown")
                .trim()
                .to_owned()
        },
    )
}

/// The machine, at one moment.
pub struct Machine {
    when: String,
    load: String,
}

impl Machine {
    pub fn now() -> Self {
        Self {
            when: first_line("date", &["-u", "+%Y-%m-%d %H:%M UTC"]),
            load: std::fs::read_to_string("/proc/loadavg")
                .unwrap_or_default()
                .split_whitespace()
                .take(3)
                .collect::<Vec<_>>()
                .join(" "),
        }
    }
}

fn cpu_model() -> String {
    std::fs::read_to_string("/proc/cpuinfo")
        .unwrap_or_default()
        .lines()
        .find_map(|l| {
            let (k, v) = l.split_once(':')?;
            (k.trim() == "model name").then(|| v.trim().to_owned())
        })
        .unwrap_or_else(|| "unknown".to_owned())
}

/// What the document is made of.
pub struct Document<'a> {
    /// A table per response, in the order they ran.
    pub tables: &'a [(Response, String)],
    pub skipped: &'a [(Tracer, String)],
    pub machine_start: &'a Machine,
    pub machine_end: &'a Machine,
    pub options: &'a Options,
    pub agent: &'a Path,
    pub wrk_pinned: Option<&'a str>,
    pub nginx_pinned: Option<&'a str>,
}

const TEMPLATE: &str = include_str!("BENCHMARKS.md.in");

/// docs/BENCHMARKS.md.
pub fn document(d: &Document<'_>) -> String {
    let cpus = std::thread::available_parallelism().map_or(1, std::num::NonZero::get);
    let pinning = match (d.wrk_pinned, d.nginx_pinned) {
        (Some(w), Some(n)) => format!(
            "wrk pinned to CPU {w} and nginx to CPU {n} (`taskset`); the tracers are not pinned and share the CPUs with them"
        ),
        _ => "nothing pinned (one CPU)".to_owned(),
    };
    let skipped = if d.skipped.is_empty() {
        String::new()
    } else {
        let mut s = String::from("\nLeft out of this run:\n\n");
        for (kind, why) in d.skipped {
            s.push_str(&format!("- {}: {why}\n", kind.label()));
        }
        s
    };
    let sslsniff = Command::new("dpkg-query")
        .args(["-W", "-f", "${Version}", "bpfcc-tools"])
        .output()
        .ok()
        .filter(|o| o.status.success())
        .map_or_else(
            || "not installed".to_owned(),
            |o| format!("bpfcc-tools {}", String::from_utf8_lossy(&o.stdout)),
        );
    let agent = d.agent.to_str().unwrap_or("taskless-agent");
    let profile = if d.options.debug { "debug" } else { "release" };
    let versions = [
        (
            "taskless-agent",
            format!("{} ({profile} build)", first_line(agent, &["--version"])),
        ),
        (
            "nginx",
            first_line("nginx", &["-v"]).replace("nginx version: ", ""),
        ),
        (
            "wrk",
            first_line("wrk", &["-v"])
                .split(" Copyright")
                .next()
                .unwrap_or_default()
                .to_owned(),
        ),
        ("OpenSSL", first_line("openssl", &["version"])),
        ("bpftrace", first_line("bpftrace", &["--version"])),
        ("bcc sslsniff", sslsniff),
    ]
    .iter()
    .map(|(k, v)| format!("| {k} | {v} |"))
    .collect::<Vec<_>>()
    .join("\n");
    let machine = [
        ("CPU", cpu_model()),
        ("CPUs", cpus.to_string()),
        ("kernel", first_line("uname", &["-r"])),
        (
            "load average (1, 5, 15 min) at start / end",
            format!("{} / {}", d.machine_start.load, d.machine_end.load),
        ),
        ("pinning", pinning),
    ]
    .iter()
    .map(|(k, v)| format!("| {k} | {v} |"))
    .collect::<Vec<_>>()
    .join("\n");
    let options = format!(
        "{} round{} of {} s per configuration, wrk with 1 thread and {} connections",
        d.options.rounds,
        if d.options.rounds == 1 { "" } else { "s" },
        d.options.seconds,
        d.options.connections
    );
    let table = |response: Response| {
        d.tables
            .iter()
            .find(|(r, _)| *r == response)
            .map_or("Not run.", |(_, t)| t.trim_end())
    };
    TEMPLATE
        .replace("{{when}}", &d.machine_start.when)
        .replace("{{options}}", &options)
        .replace("{{small}}", &Response::Small.label())
        .replace("{{large}}", &Response::Large.label())
        .replace("{{table}}", table(Response::Small))
        .replace("{{table_large}}", table(Response::Large))
        .replace("{{skipped}}", &skipped)
        .replace("{{machine}}", &machine)
        .replace("{{versions}}", &versions)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn medians_of_odd_and_even_counts() {
        assert_eq!(median(vec![3.0, 1.0, 2.0]), Some(2.0));
        assert_eq!(median(vec![4.0, 1.0, 2.0, 3.0]), Some(2.5));
        assert_eq!(median(Vec::new()), None);
    }

    #[test]
    fn thousands_are_separated() {
        assert_eq!(thousands(0), "0");
        assert_eq!(thousands(999), "999");
        assert_eq!(thousands(1_000), "1,000");
        assert_eq!(thousands(12_345_678), "12,345,678");
    }
}
