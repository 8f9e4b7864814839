//! `cargo xtask test`: formatting, lints, the Kubernetes manifests, unit tests, the packs' own
//! tests and fixtures, the end-to-end tests that load the real eBPF programs (as root), one of
//! them with the agent in a container built from the Containerfile, a short fuzz run, the
//! soak's short form and the benchmark's smoke run (`cargo xtask bench --quick`).

use std::path::Path;

use crate::{setup, util};

/// Seconds each fuzz target runs in `cargo xtask test` (`cargo xtask fuzz` runs longer).
const FUZZ_SECONDS: u64 = 30;

pub fn run(root: &Path, no_lint: bool, filter: Option<&str>) -> anyhow::Result<()> {
    setup::ensure()?;
    let packs = root.join("packs");
    if !no_lint {
        util::run(util::cargo().args(["fmt", "--all", "--", "--check"]))?;
        util::run(
            util::cargo()
                .current_dir(&packs)
                .args(["fmt", "--all", "--", "--check"]),
        )?;
        util::run(util::cargo().args(["clippy", "--all-targets", "--", "-D", "warnings"]))?;
    }
    crate::manifests::run_manifests(root, true)?;
    crate::build_packs(root)?;
    util::run(util::cargo().args(["build", "--bins"]))?;
    // The container test runs the image built from this build.
    let _ = crate::image::test_images(root)?;
    if !util::is_root() {
        eprintln!(
            "test: not running as root; the end-to-end tests will fail: they load eBPF programs and attach uprobes"
        );
    }
    let mut cmd = util::cargo();
    cmd.args(["test"]);
    if let Some(f) = filter {
        cmd.args(["--", f]);
    }
    util::run(&mut cmd)?;
    if filter.is_none() {
        util::run(
            util::cargo()
                .current_dir(&packs)
                .args(["test", "--target-dir"])
                .arg(packs.join("target")),
        )?;
        crate::fuzz::run(root, FUZZ_SECONDS, None)?;
        // The soak's short form, on the debug build the tests used (`cargo xtask soak` runs the
        // long one on a release build).
        crate::soak::run(
            root,
            &crate::soak::Options {
                requests: 5_000,
                connections: 4,
                held: 100,
                debug: true,
            },
        )?;
        // The benchmark's smoke run (about 20 s): wrk → nginx with no tracer, the floor and the
        // agent without packs; fails if the agent missed an exchange.
        crate::bench::run(
            root,
            crate::bench::Options {
                seconds: 2,
                rounds: 1,
                connections: 8,
                debug: true,
                quick: true,
                responses: vec![crate::bench::Response::Small],
            },
        )?;
    }
    Ok(())
}
