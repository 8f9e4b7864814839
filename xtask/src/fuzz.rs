//! `cargo xtask fuzz`: runs each cargo-fuzz target of `http/fuzz` for a bounded time on the seed
//! corpus kept in the repository (`http/fuzz/seeds/<target>`), and prints what each run did.
//!
//! The seeds are copied into a working corpus under the target directory first, so a run never
//! writes into the repository. A crash fails the command and names the input libFuzzer saved;
//! add that input to the seeds and a regression test next to the fix.

use std::{path::Path, process::Command, time::Instant};

use anyhow::{Context as _, bail};

use crate::{setup, util};

/// The fuzz targets, in the order they run.
pub const TARGETS: &[&str] = &["http1", "http2", "h2_joined", "har"];

/// Runs every target (or only `only`) for `seconds` each.
pub fn run(root: &Path, seconds: u64, only: Option<&str>) -> anyhow::Result<()> {
    setup::cargo_fuzz()?;
    let fuzz_dir = root.join("http").join("fuzz");
    let work = util::target_dir(root).join("fuzz-corpus");
    let targets: Vec<&str> = TARGETS
        .iter()
        .copied()
        .filter(|t| only.is_none_or(|o| o == *t))
        .collect();
    if targets.is_empty() {
        bail!(
            "no fuzz target {only:?}; the targets are {}",
            TARGETS.join(", ")
        );
    }
    util::run(
        Command::new("cargo")
            .current_dir(&fuzz_dir)
            .args(["+nightly", "fuzz", "build", "-O"])
            .env_remove("RUSTUP_TOOLCHAIN")
            .env_remove("CARGO_TARGET_DIR"),
    )?;
    let mut summary = Vec::new();
    for target in targets {
        let corpus = work.join(target);
        std::fs::create_dir_all(&corpus)?;
        let seeds = fuzz_dir.join("seeds").join(target);
        let mut copied = 0;
        for entry in
            std::fs::read_dir(&seeds).with_context(|| format!("reading {}", seeds.display()))?
        {
            let path = entry?.path();
            if let Some(name) = path.file_name() {
                std::fs::copy(&path, corpus.join(name))?;
                copied += 1;
            }
        }
        let started = Instant::now();
        let mut cmd = Command::new("cargo");
        cmd.current_dir(&fuzz_dir)
            .args(["+nightly", "fuzz", "run", "-O", target])
            .arg(&corpus)
            .arg("--")
            .arg(format!("-max_total_time={seconds}"))
            .args(["-rss_limit_mb=1024", "-timeout=10", "-print_final_stats=1"])
            .env_remove("RUSTUP_TOOLCHAIN")
            .env_remove("CARGO_TARGET_DIR");
        eprintln!("+ {}", util::display(&cmd));
        let out = cmd
            .output()
            .with_context(|| format!("running cargo fuzz {target}"))?;
        let log = String::from_utf8_lossy(&out.stderr);
        if !out.status.success() {
            let tail: Vec<&str> = log.lines().rev().take(40).collect();
            let tail: Vec<&str> = tail.into_iter().rev().collect();
            bail!(
                "fuzz target {target} failed ({}); the crashing input is under {}:\n{}",
                out.status,
                fuzz_dir.join("artifacts").join(target).display(),
                tail.join("\n")
            );
        }
        let runs = stat(&log, "stat::number_of_executed_units").unwrap_or(0);
        let peak_mb = stat(&log, "stat::peak_rss_mb").unwrap_or(0);
        let secs = started.elapsed().as_secs_f64();
        let line = format!(
            "{target}: {runs} runs in {secs:.0} s ({:.0} runs/s), peak RSS {peak_mb} MB, {copied} seeds",
            runs as f64 / secs.max(1.0)
        );
        eprintln!("fuzz: {line}");
        summary.push(line);
    }
    eprintln!("fuzz: done\n  {}", summary.join("\n  "));
    Ok(())
}

/// A `stat::name: value` line of libFuzzer's final statistics.
fn stat(log: &str, name: &str) -> Option<u64> {
    log.lines().find_map(|l| {
        l.strip_prefix(name)?
            .trim_start_matches(':')
            .trim()
            .parse()
            .ok()
    })
}
