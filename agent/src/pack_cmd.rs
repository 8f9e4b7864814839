//! `taskless-agent pack check` and `pack list`: thin wrappers over the pack runtime.

use std::{path::Path, process::ExitCode};

use taskless_pack_runtime::{RuntimeConfig, check_fixture, list_packs};

/// Runs a fixture and prints one line per test; exit 1 when any fails.
pub fn check(fixture: &Path, manifest: &Path, wasm: &Path) -> ExitCode {
    match check_fixture(fixture, manifest, wasm, &RuntimeConfig::default()) {
        Ok(report) => {
            for line in &report.lines {
                println!("{}", line.to_json());
            }
            for r in &report.results {
                let mark = if r.passed { "pass" } else { "FAIL" };
                match &r.error {
                    Some(e) => println!("{mark}  {}  ({e})", r.name),
                    None => println!("{mark}  {}", r.name),
                }
            }
            let failed = report.results.iter().filter(|r| !r.passed).count();
            let failures = report.stats.failures_total();
            println!(
                "{}: {} passed, {failed} failed{}",
                report.pack,
                report.results.len() - failed,
                if failures > 0 {
                    format!(" ({failures} failed pack calls)")
                } else {
                    String::new()
                }
            );
            if report.passed() {
                ExitCode::SUCCESS
            } else {
                ExitCode::FAILURE
            }
        }
        Err(e) => cannot_run(&e),
    }
}

/// Lists the packs of `dir`, loaded and refused.
pub fn list(dir: &Path) -> ExitCode {
    match list_packs(dir, &RuntimeConfig::default()) {
        Ok(listing) => {
            for p in &listing.packs {
                let methods: Vec<String> = p
                    .methods
                    .iter()
                    .map(|m| format!("{m:?}").to_lowercase())
                    .collect();
                let domains = p
                    .domains
                    .as_ref()
                    .map_or_else(|| "*".to_owned(), |d| d.join(","));
                println!(
                    "{}\t{}\tdomains={domains}\tmethods={}\t{}",
                    p.id,
                    p.dir.display(),
                    methods.join(","),
                    p.description
                );
            }
            for e in &listing.refused {
                println!(
                    "REFUSED\t{}\t{}\t{}",
                    e.pack.as_deref().unwrap_or("?"),
                    e.dir.display(),
                    e.reason
                );
            }
            if listing.refused.is_empty() {
                ExitCode::SUCCESS
            } else {
                ExitCode::FAILURE
            }
        }
        Err(e) => cannot_run(&e),
    }
}

/// The command could not run at all (exit 2, as for a usage error).
fn cannot_run(e: &dyn std::fmt::Display) -> ExitCode {
    eprintln!("error: {e}");
    ExitCode::from(2)
}
