//! The agent under load, end to end (needs root; `cargo bench -p taskless-e2e --bench load`).
//!
//! wrk (OpenSSL, 8 kept-alive connections) calls the local test API at paced rates, rising step
//! by step, while a freshly started agent watches it: first with no packs (the capture path
//! alone), then with every shipped pack. For each step it prints the rate wrk achieved, whether
//! every request wrk completed came out as one line with every loss counter at zero, and the
//! agent's CPU time per exchange (user + system, from `/proc/PID/stat`, from just before wrk's
//! first request until the agent has written its last line), and how many exchanges had a pack
//! shed (`shed`: their line came out without that pack). The agent's CPU while it waits,
//! attached, for the first request is printed on its own ("idle"), as a share of a CPU: it is
//! what the agent costs a process that makes no calls, and it is not in the figure per exchange.
//! The highest step with nothing lost is the loss-free rate on this machine. Figures only: on a
//! shared machine they vary from run to run, so nothing here is asserted beyond the run working.

use std::{
    path::Path,
    process::Command,
    time::{Duration, Instant},
};

use taskless_e2e::harness::{Agent, TempDir, TestApi, packs_dir, require_root, wrk_requests};

const CONNECTIONS: u32 = 8;
/// wrk connects at once, then holds every first request this long, so every request is made
/// after the agent is attached.
const HOLD_S: u32 = 8;
const LOAD_S: u32 = 5;
/// Requests per second to aim for; 0 means as fast as wrk can. `TASKLESS_LOAD_RATES` (e.g.
/// `500,0`) runs other steps instead.
const RATES: [u32; 5] = [500, 1_000, 2_000, 4_000, 0];

fn rates() -> Vec<u32> {
    match std::env::var("TASKLESS_LOAD_RATES") {
        Ok(list) => list
            .split(',')
            .map(|r| {
                r.trim()
                    .parse()
                    .unwrap_or_else(|_| panic!("TASKLESS_LOAD_RATES: {r:?} is not a rate"))
            })
            .collect(),
        Err(_) => RATES.to_vec(),
    }
}

/// The agent's user + system CPU time so far, in seconds.
fn cpu_seconds(pid: u32) -> f64 {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
    let after = stat.rfind(')').map_or("", |i| &stat[i + 1..]);
    let fields: Vec<&str> = after.split_whitespace().collect();
    // utime and stime are fields 14 and 15 of stat, 12 and 13 after the name.
    let ticks: u64 = [11, 12]
        .iter()
        .filter_map(|&i| fields.get(i).and_then(|v| v.parse::<u64>().ok()))
        .sum();
    // SAFETY: no preconditions.
    let hz = unsafe { libc::sysconf(libc::_SC_CLK_TCK) }.max(1);
    #[allow(clippy::cast_precision_loss)]
    let secs = ticks as f64 / hz as f64;
    secs
}

struct Step {
    requests: u64,
    lines: u64,
    lost: u64,
    /// Exchanges on which a pack was shed (skipped because its worker was behind): not lost,
    /// but not every pack ran on them.
    shed: u64,
    cpu_s: f64,
    /// The agent's CPU, as a share of one, between ready and the window's start; `None` when
    /// the agent was ready too late to tell.
    idle: Option<f64>,
}

fn step(api: &TestApi, dir: &Path, packs: &Path, rate: u32) -> Step {
    // Each connection waits `CONNECTIONS * 1000 / rate` ms between requests.
    let delay_ms = (CONNECTIONS * 1000)
        .checked_div(rate)
        .map_or(0, |d| d.max(1));
    let lua = dir.join(format!("pace-{rate}.lua"));
    std::fs::write(
        &lua,
        format!(
            "local start = os.time()\nfunction delay()\n  local left = start + {HOLD_S} - os.time()\n  if left > 0 then return left * 1000 end\n  return {delay_ms}\nend\n"
        ),
    )
    .expect("lua");
    let url = format!("{}/v1/customers/cus_load", api.server.base_url());
    let wrk = Command::new("wrk")
        .args([
            "-t1",
            &format!("-c{CONNECTIONS}"),
            &format!("-d{}s", HOLD_S + LOAD_S),
            "-s",
        ])
        .arg(&lua)
        .arg(&url)
        .stdout(std::process::Stdio::piped())
        .spawn()
        .expect("wrk");
    let spawned = Instant::now();
    std::thread::sleep(Duration::from_millis(300));
    let pid = wrk.id().to_string();
    let mut agent = Agent::start(&[
        "--pid",
        &pid,
        "--packs",
        &packs.display().to_string(),
        "--stats-interval",
        "0",
    ])
    .expect("agent");
    agent
        .wait_for_log("ready", Duration::from_secs(u64::from(HOLD_S) - 1))
        .expect("agent ready before wrk starts sending");
    let (ready_at, cpu_ready) = (Instant::now(), cpu_seconds(agent.pid()));
    // wrk's script counts its hold from a whole second (`os.time`), so the first request comes
    // between HOLD_S - 1 and HOLD_S seconds after it started: the window opens just before.
    let opens = spawned + Duration::from_secs(u64::from(HOLD_S) - 1) - Duration::from_millis(200);
    std::thread::sleep(opens.saturating_duration_since(Instant::now()));
    let cpu_before = cpu_seconds(agent.pid());
    let waited = ready_at.elapsed().as_secs_f64();
    let idle = (waited > 0.5).then(|| (cpu_before - cpu_ready) / waited);
    let wrk_out = wrk.wait_with_output().expect("wrk finishes");
    let text = String::from_utf8_lossy(&wrk_out.stdout).into_owned();
    agent
        .wait_for_log("every watched process has exited", Duration::from_secs(60))
        .expect("agent drains and stops");
    let cpu_s = cpu_seconds(agent.pid()) - cpu_before;
    let out = agent.stop(Vec::new()).expect("agent output");
    let requests = wrk_requests(&text).unwrap_or(0);
    let lines = out.lines.len() as u64;
    let counted: u64 = [
        "lost_bytes",
        "resyncs",
        "dropped_jobs",
        "undecodable",
        "kernel_ringbuf_full",
        "kernel_read_failed",
        "kernel_unmatched_return",
    ]
    .iter()
    .map(|c| out.counter(c))
    .sum();
    // Requests in flight when wrk's clock stopped are real exchanges beyond its count: at most
    // one per connection.
    let missing = requests.saturating_sub(lines);
    Step {
        requests,
        lines,
        lost: missing + counted,
        shed: out.counter("shed"),
        cpu_s,
        idle,
    }
}

fn main() {
    require_root();
    let api = TestApi::start().expect("test API");
    let dir = TempDir::new("load-bench").expect("tempdir");
    let none = dir.path().join("no-packs");
    std::fs::create_dir(&none).expect("packs dir");
    let all = packs_dir();
    let rates = rates();
    println!(
        "load: wrk, {CONNECTIONS} kept-alive connections, {LOAD_S} s per step, agent: {}",
        taskless_e2e::harness::agent_bin().display()
    );
    for (name, packs) in [("no packs", none.as_path()), ("all packs", all.as_path())] {
        println!("\n{name} ({})", packs.display());
        println!(
            "  {:>10} {:>10} {:>10} {:>8} {:>8} {:>12} {:>14} {:>8}",
            "aimed/s", "achieved/s", "lines", "lost", "shed", "agent CPU", "CPU/exchange", "idle"
        );
        let mut best = 0.0f64;
        for &rate in &rates {
            let s = step(&api, dir.path(), packs, rate);
            #[allow(clippy::cast_precision_loss)]
            let achieved = s.requests as f64 / f64::from(LOAD_S);
            #[allow(clippy::cast_precision_loss)]
            let per = if s.lines == 0 {
                0.0
            } else {
                s.cpu_s * 1e6 / s.lines as f64
            };
            let aimed = if rate == 0 {
                "max".to_owned()
            } else {
                rate.to_string()
            };
            println!(
                "  {aimed:>10} {achieved:>10.0} {:>10} {:>8} {:>8} {:>11.0}% {:>11.1} µs {:>8}",
                s.lines,
                s.lost,
                s.shed,
                s.cpu_s * 100.0 / f64::from(LOAD_S),
                per,
                s.idle
                    .map_or_else(|| "-".to_owned(), |i| format!("{:.2}%", i * 100.0))
            );
            if s.lost == 0 {
                best = best.max(achieved);
            }
        }
        println!("  highest loss-free rate: {best:.0} requests/s");
    }
}
