//! wrk, the client of `cargo xtask bench`: held before its first connection until the tracer is
//! attached, then its report parsed.

use anyhow::Context as _;

/// A wrk script whose `init` (run before wrk's thread connects) waits until the file named by
/// its first argument exists: the tracer attaches to the waiting wrk, and wrk's own clock, its
/// connections and every request start after that. Sleeping through LuaJIT's FFI costs nothing
/// while it waits.
pub const HOLD_SCRIPT: &str = r#"local ffi = require("ffi")
ffi.cdef("int usleep(unsigned int usec);")
function init(args)
  while true do
    local f = io.open(args[1], "r")
    if f then f:close(); return end
    ffi.C.usleep(20000)
  end
end
"#;

/// What wrk reported.
#[derive(Debug, PartialEq)]
pub struct Report {
    /// Requests completed (its `N requests in` line): the ground truth.
    pub requests: u64,
    /// Requests per second (its `Requests/sec:` line).
    pub rate: f64,
    /// The 99th percentile of latency, in microseconds (`--latency`).
    pub p99_us: f64,
    /// Socket errors and non-2xx/3xx responses, summed.
    pub errors: u64,
}

/// A wrk duration (`53.00us`, `6.50ms`, `1.20s`, `2.00m`) in microseconds.
fn micros(v: &str) -> Option<f64> {
    let split = v.find(|c: char| c.is_ascii_alphabetic())?;
    let (n, unit) = v.split_at(split);
    let n: f64 = n.parse().ok()?;
    let scale = match unit {
        "us" => 1.0,
        "ms" => 1e3,
        "s" => 1e6,
        "m" => 60e6,
        "h" => 3600e6,
        _ => return None,
    };
    Some(n * scale)
}

/// Parses wrk's report (run with `--latency`).
pub fn parse(text: &str) -> anyhow::Result<Report> {
    let requests = text
        .lines()
        .find_map(|l| l.trim().split_once(" requests in ")?.0.parse().ok())
        .with_context(|| format!("no request count in wrk's report:\n{text}"))?;
    let rate = text
        .lines()
        .find_map(|l| l.trim().strip_prefix("Requests/sec:")?.trim().parse().ok())
        .with_context(|| format!("no Requests/sec in wrk's report:\n{text}"))?;
    let p99_us = text
        .lines()
        .find_map(|l| micros(l.trim().strip_prefix("99%")?.trim()))
        .with_context(|| format!("no 99% latency in wrk's report:\n{text}"))?;
    let mut errors = 0;
    for l in text.lines().map(str::trim) {
        if let Some(rest) = l.strip_prefix("Socket errors:") {
            errors += rest
                .split(',')
                .filter_map(|kv| kv.split_whitespace().nth(1)?.parse::<u64>().ok())
                .sum::<u64>();
        } else if let Some(n) = l.strip_prefix("Non-2xx or 3xx responses:") {
            errors += n.trim().parse::<u64>().unwrap_or(0);
        }
    }
    Ok(Report {
        requests,
        rate,
        p99_us,
        errors,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    const REPORT: &str = "Running 4s test @ https://127.0.0.1:18444/v1/customers/cus_bench
  1 threads and 8 connections
  Thread Stats   Avg      Stdev     Max   +/- Stdev
    Latency     8.45ms    9.64ms  69.90ms   84.17%
    Req/Sec     1.34k   489.46     2.12k    57.50%
  Latency Distribution
     50%    5.65ms
     75%   13.37ms
     90%   21.85ms
     99%   39.76ms
  5416 requests in 4.07s, 0.99MB read
  Socket errors: connect 0, read 2, write 0, timeout 1
  Non-2xx or 3xx responses: 4
Requests/sec:   1329.95
Transfer/sec:    249.37KB
";

    #[test]
    fn a_report_gives_requests_rate_p99_and_errors() {
        let r = parse(REPORT).expect("parse");
        assert_eq!(r.requests, 5416);
        assert!((r.rate - 1329.95).abs() < 1e-9);
        assert!((r.p99_us - 39_760.0).abs() < 1e-6);
        assert_eq!(r.errors, 7);
    }

    #[test]
    fn durations_in_every_unit() {
        assert_eq!(micros("53.00us"), Some(53.0));
        assert_eq!(micros("1.50s"), Some(1_500_000.0));
        assert_eq!(micros("2.00m"), Some(120_000_000.0));
        assert_eq!(micros("3parsecs"), None);
    }

    #[test]
    fn a_report_without_figures_is_an_error() {
        assert!(parse("unable to connect to 127.0.0.1:1 Connection refused").is_err());
    }
}
