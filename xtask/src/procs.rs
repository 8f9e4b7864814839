//! Child processes for the commands that drive load (`soak`, `bench`): killed on drop, their
//! output read on a thread, their CPU time and memory read from `/proc`, and the agent's summary
//! line parsed.

use std::{
    io::{BufRead as _, BufReader},
    process::Child,
    sync::mpsc,
    time::{Duration, Instant},
};

use anyhow::Context as _;

/// A child process killed (and reaped) on drop, so no server, client or tracer outlives the
/// command, also when it fails half way.
pub struct Guard(pub Child);

impl Guard {
    /// The child's process id.
    pub fn pid(&self) -> u32 {
        self.0.id()
    }

    /// Waits up to `timeout` for the child to exit, and returns the user + system CPU seconds it
    /// used in all (read from `/proc` while it is a zombie, before it is reaped), or `None` when
    /// it is still running.
    pub fn wait_cpu(&mut self, timeout: Duration) -> anyhow::Result<Option<f64>> {
        let deadline = Instant::now() + timeout;
        loop {
            if exited_unreaped(self.pid())? {
                let cpu = cpu_seconds(self.pid());
                self.0.wait()?;
                return Ok(Some(cpu));
            }
            if Instant::now() >= deadline {
                return Ok(None);
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// Sends SIGINT (the child stops as on Ctrl-C).
    pub fn interrupt(&self) {
        let Ok(pid) = libc::pid_t::try_from(self.pid()) else {
            return;
        };
        // Only while it runs or is an unreaped zombie: the pid is still ours.
        // SAFETY: no memory is passed.
        unsafe {
            libc::kill(pid, libc::SIGINT);
        }
    }
}

impl Drop for Guard {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// Whether the child `pid` has exited; it is left unreaped, so its `/proc` entry stays.
fn exited_unreaped(pid: u32) -> anyhow::Result<bool> {
    let id = libc::id_t::from(pid);
    // SAFETY: `info` is a zeroed siginfo_t the kernel fills in.
    let (rc, info) = unsafe {
        let mut info: libc::siginfo_t = std::mem::zeroed();
        let rc = libc::waitid(
            libc::P_PID,
            id,
            &raw mut info,
            libc::WEXITED | libc::WNOWAIT | libc::WNOHANG,
        );
        (rc, info)
    };
    if rc != 0 {
        return Err(std::io::Error::last_os_error()).with_context(|| format!("waitid({pid})"));
    }
    // SAFETY: filled in by waitid (0 when no child has changed state).
    Ok(unsafe { info.si_pid() } != 0)
}

/// Lines a child prints on stdout, read on a thread.
pub fn lines_of(child: &mut Child) -> anyhow::Result<mpsc::Receiver<String>> {
    let out = child.stdout.take().context("no stdout")?;
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(out).lines().map_while(Result::ok) {
            if tx.send(line).is_err() {
                break;
            }
        }
    });
    Ok(rx)
}

/// The first line starting with `prefix` within `timeout`.
pub fn expect_line(
    rx: &mpsc::Receiver<String>,
    prefix: &str,
    timeout: Duration,
) -> anyhow::Result<String> {
    let deadline = Instant::now() + timeout;
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        let line = rx
            .recv_timeout(left)
            .with_context(|| format!("waiting for {prefix:?}"))?;
        if line.starts_with(prefix) {
            return Ok(line);
        }
    }
}

/// Resident memory of `pid` in KiB (`VmRSS`).
pub fn rss_kib(pid: u32) -> Option<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.split_whitespace().next()?.parse().ok())
}

/// User + system CPU seconds of `pid` so far, all its threads (`/proc/PID/stat`); 0 when it
/// cannot be read.
pub fn cpu_seconds(pid: u32) -> f64 {
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

/// The agent's `summary` line in its log (stderr), if it wrote one.
pub fn summary_line(log: &str) -> Option<&str> {
    log.lines().find(|l| l.contains(" summary "))
}

/// A counter of the agent's summary (or stats) line: `name=value`.
pub fn counter(summary: &str, name: &str) -> Option<u64> {
    let key = format!(" {name}=");
    let at = summary.find(&key)? + key.len();
    summary[at..].split(' ').next()?.parse().ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counters_are_read_by_their_whole_name() {
        let s = "INFO taskless_agent::stats: summary records=4 exchanges=2 http_exchanges=3";
        assert_eq!(counter(s, "exchanges"), Some(2));
        assert_eq!(counter(s, "http_exchanges"), Some(3));
        assert_eq!(counter(s, "missing"), None);
    }

    #[test]
    fn the_cpu_time_of_an_exited_child_is_read_before_it_is_reaped() {
        let child = std::process::Command::new("sh")
            .args(["-c", "i=0; while [ $i -lt 200000 ]; do i=$((i+1)); done"])
            .spawn()
            .expect("sh");
        let mut g = Guard(child);
        let cpu = g
            .wait_cpu(Duration::from_secs(60))
            .expect("wait")
            .expect("exited");
        assert!(cpu > 0.0, "a busy loop used no CPU: {cpu}");
    }
}
