//! Builds the eBPF programs (`agent-ebpf`) for the BPF target with the nightly toolchain and
//! bpf-linker (both installed by `cargo xtask setup`), and leaves the object in `OUT_DIR` for
//! `include_bytes_aligned!`. Also writes the byte signatures of OpenSSL's functions, taken from
//! the static `libssl.a` found on the build machine, for finding them in stripped executables
//! (`src/capture/static_openssl.rs`).
use std::path::{Path, PathBuf};

use anyhow::Context as _;
use aya_build::{Package, Toolchain};

#[path = "src/capture/signature.rs"]
mod signature;

/// Where static OpenSSL archives are looked for, unless `TASKLESS_STATIC_LIBSSL` names them
/// (colon separated).
const LIBSSL_A: [&str; 3] = [
    "/usr/lib/x86_64-linux-gnu/libssl.a",
    "/usr/lib64/libssl.a",
    "/usr/lib/libssl.a",
];

fn main() -> anyhow::Result<()> {
    let manifest_dir = std::env::var("CARGO_MANIFEST_DIR").context("CARGO_MANIFEST_DIR")?;
    let out_dir = PathBuf::from(std::env::var("OUT_DIR").context("OUT_DIR")?);
    openssl_signatures(&out_dir)?;
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

/// Writes `OUT_DIR/openssl_signatures.rs` from every static libssl found (none: an empty list,
/// and statically linked OpenSSL without symbols is then reported as not supported).
fn openssl_signatures(out_dir: &Path) -> anyhow::Result<()> {
    println!("cargo:rerun-if-env-changed=TASKLESS_STATIC_LIBSSL");
    println!("cargo:rerun-if-changed=src/capture/signature.rs");
    let archives: Vec<PathBuf> = match std::env::var_os("TASKLESS_STATIC_LIBSSL") {
        Some(list) => std::env::split_paths(&list).collect(),
        None => LIBSSL_A.iter().map(PathBuf::from).collect(),
    };
    let mut source = String::new();
    let mut all = Vec::new();
    for archive in &archives {
        println!("cargo:rerun-if-changed={}", archive.display());
        let Ok(data) = std::fs::read(archive) else {
            continue;
        };
        let signatures = signature::extract(&data)
            .with_context(|| format!("reading {} as a static library", archive.display()))?;
        // The version text lives in libcrypto, beside libssl.
        let build = std::fs::read(archive.with_file_name("libcrypto.a"))
            .ok()
            .and_then(|c| signature::version_text(&c))
            .unwrap_or_else(|| "OpenSSL".to_owned());
        let build = format!("{build}, {}", archive.display());
        all.push((signatures, build));
    }
    if all.is_empty() {
        println!(
            "cargo:warning=no static libssl.a found ({}): stripped executables with OpenSSL linked in will be reported as not supported",
            archives
                .iter()
                .map(|a| a.display().to_string())
                .collect::<Vec<_>>()
                .join(", ")
        );
    }
    source.push_str("pub static SIGNATURES: &[Signature] = &[\n");
    for (signatures, build) in &all {
        let list = signature::to_rust(signatures, build);
        // Only the entries: one list for every archive.
        for line in list.lines().filter(|l| l.starts_with("    Signature")) {
            source.push_str(line);
            source.push('\n');
        }
    }
    source.push_str("];\n");
    std::fs::write(out_dir.join("openssl_signatures.rs"), source)?;
    Ok(())
}
