use which::which;

/// The BPF target links with bpf-linker; fail early with a clear message when it is missing.
fn main() {
    let bpf_linker = which("bpf-linker").expect(
        "bpf-linker not found on PATH: run `cargo xtask setup` (it builds bpf-linker against the nightly toolchain's LLVM)",
    );
    println!("cargo:rerun-if-changed={}", bpf_linker.to_string_lossy());
}
