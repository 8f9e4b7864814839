//! `cargo xtask manifests`: renders the Helm chart with Helm's own SDK, writes deploy/kubernetes
//! from it (or, with `--check`, fails when that is stale), lints the chart and validates every
//! rendered object offline against the Kubernetes schemas (deploy/manifests.py does the work, in
//! the Python environment setup makes).

use std::{path::Path, process::Command};

use crate::{setup, util::run};

pub fn run_manifests(root: &Path, check: bool) -> anyhow::Result<()> {
    let mut cmd = Command::new(setup::python_env_python()?);
    cmd.arg(root.join("deploy/manifests.py"));
    if check {
        cmd.arg("--check");
    }
    run(&mut cmd)
}
