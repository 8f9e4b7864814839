//! Builds the eBPF programs (`agent-ebpf`) for the BPF target with the nightly toolchain and
//! bpf-linker (both installed by `cargo xtask setup`), and leaves the object in `OUT_DIR` for
//! `include_bytes_aligned!`.
use std::path::Path;

use anyhow::Context as _;
use aya_build::{Package, Toolchain};

fn main() -> anyhow::Result<()> {
    let manifest_dir = std::env::var("CARGO_MANIFEST_DIR").context("CARGO_MANIFEST_DIR")?;
    let root = Path::new(&manifest_dir)
        .parent()
        .context("agent crate has no parent directory")?;
    let ebpf_dir = root.join("agent-ebpf");
    // Editing only the shared records must rebuild the eBPF object too. Also given relative to
    // this package, so another checkout sharing the target directory is tracked as well.
    println!(
        "cargo:rerun-if-changed={}",
        root.join("agent-common/src").display()
    );
    println!("cargo:rerun-if-changed=../agent-common/src");
    println!("cargo:rerun-if-changed=../agent-ebpf/src");
    let ebpf_dir = ebpf_dir.to_str().context("non UTF-8 path")?;
    aya_build::build_ebpf(
        [Package {
            name: "agent-ebpf",
            root_dir: ebpf_dir,
            ..Package::default()
        }],
        Toolchain::default(),
    )
}
